//! `mirror clone`

use std::path::PathBuf;

use anyhow::Context as _;
use mirror::checkout::{Request, Target};

use super::output::short;
use super::{Context, Exit};

/// Rebuild a project from one of its remote mirrors (disaster recovery on a fresh machine):
/// a new shadow repository receives every snapshot, tag and the audit trail, mirror.yaml is
/// written back from the recorded configuration, and every tier's latest snapshot is
/// restored into DIR. Treasure files are decrypted with your identity, as in any checkout.
#[derive(clap::Args)]
pub struct Args {
    /// The remote: a path, file://, ssh://, user@host:path or https:// URL.
    url: String,

    /// The new project directory (new or empty); default: the URL's last component without
    /// `.git`, as `git clone` does.
    dir: Option<PathBuf>,

    /// Where to create the shadow repository (default: as `mirror init` chooses, under
    /// $XDG_DATA_HOME/mirror/).
    #[arg(long, env = "MIRROR_SHADOW", value_name = "PATH")]
    shadow: Option<PathBuf>,

    /// Create the shadow and mirror.yaml only; restore nothing.
    #[arg(long)]
    no_checkout: bool,

    /// Restore everything else when some encrypted files cannot be decrypted (exit 3).
    #[arg(long)]
    skip_encrypted: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let dir = match args.dir {
        Some(d) => d,
        None => mirror::clone::default_dir(&args.url).ok_or_else(|| {
            mirror::Error::Usage(format!(
                "cannot derive a directory name from '{}'; give DIR",
                args.url
            ))
        })?,
    };
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { ctx.cwd.join(p) };
    let dir = absolute(dir);
    let shadow = args.shadow.map(absolute);
    let cloned = mirror::clone::clone(&args.url, &dir, shadow.as_deref())?;
    let (project, shadow) = super::open_project_at(ctx, &cloned.root)?;
    ctx.audit_into(&shadow);
    if !ctx.quiet {
        println!(
            "cloned {} into {} (shadow repository: {})",
            args.url,
            cloned.root.display(),
            cloned.shadow.display()
        );
    }
    // The configuration came from the remote: say where this project will push its backups.
    for r in &project.config.remotes {
        eprintln!(
            "note: mirror.yaml (from the backup) lists remote {} at {}{}",
            r.name,
            r.url,
            if project.config.push.after_snapshot {
                " — every snapshot will be pushed there (push: after_snapshot)"
            } else {
                ""
            }
        );
    }
    let mut details = serde_json::json!({
        "url": args.url,
        "root": cloned.root,
        "shadow": cloned.shadow,
    });
    if args.no_checkout {
        ctx.audit_details(details);
        return Ok(Exit::Ok);
    }
    let _lock = super::lock_shadow(&shadow, "clone")?;
    let request = Request {
        target: Target::Latest,
        tiers: Vec::new(),
        to: None,
        paths: Vec::new(),
        force: false,
        missing_only: false,
        skip_encrypted: args.skip_encrypted,
    };
    let bar = super::progress::Bar::new(ctx.quiet);
    let report = mirror::checkout::checkout(&project, &shadow, &request, &bar).with_context(|| {
        format!(
            "the shadow repository and mirror.yaml are in place in {}; once the problem is fixed, restore the tiers there with `mirror checkout latest`",
            cloned.root.display()
        )
    })?;
    let mut exit = Exit::Ok;
    super::checkout::print_warnings(&report);
    for (tier, why) in &report.skipped {
        eprintln!("note: {tier}: not restored: {why}");
    }
    for r in &report.restored {
        if !ctx.quiet {
            println!(
                "restored {} from {}: {} files",
                r.tier,
                short(&r.commit),
                r.written + r.unchanged
            );
        }
        exit = exit.worst(super::checkout::report_problems(r));
    }
    details["restored"] = serde_json::to_value(&report.restored)?;
    ctx.audit_details(details);
    Ok(exit)
}
