//! `mirror checkout`

use std::path::PathBuf;

use mirror::checkout::{Request, Target};
use mirror::error::Error;
use mirror::snapshot::Outcome;

use super::output::short;
use super::{open_project, Context, Exit};

/// Restore files from a snapshot, byte for byte.
///
/// REV is `latest` (each tier's newest snapshot) or a revision naming a tier commit
/// (`tiers/tier-0~2`, a commit id). Before anything is changed, the current state is recorded
/// as a `pre-checkout` snapshot and the command to undo the checkout is printed.
#[derive(clap::Args)]
pub struct Args {
    /// `latest` or a revision; omit when using --at.
    #[arg(required_unless_present = "at")]
    rev: Option<String>,

    /// For each tier, the newest snapshot at or before this time
    /// ("2025-06-16 14:00", RFC 3339, or "2 hours ago").
    #[arg(long, conflicts_with = "rev")]
    at: Option<String>,

    /// Only this tier (repeatable).
    #[arg(long = "tier", value_name = "NAME")]
    tiers: Vec<String>,

    /// Write into DIR (empty or new) instead of the tiers; the tiers are not touched.
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,

    /// Overwrite even if the pre-checkout snapshot could not read some files.
    #[arg(long)]
    force: bool,

    /// Restore everything else when some encrypted files cannot be decrypted (no or wrong
    /// identity); those are left as they are, listed, and the exit status is 3.
    #[arg(long)]
    skip_encrypted: bool,

    /// Only these paths (files or directories, relative to the project root).
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let target = match (&args.rev, &args.at) {
        (_, Some(at)) => {
            Target::At(mirror::history::parse_time(at, chrono::Local::now()).map_err(Error::Usage)?)
        }
        (Some(rev), None) if rev == "latest" => Target::Latest,
        (Some(rev), None) => Target::Rev(rev.clone()),
        (None, None) => {
            return Err(Error::Usage("give a revision (e.g. `latest`) or --at TIME".into()).into())
        }
    };
    let _lock = super::lock_shadow(&shadow, "checkout")?;
    // Paths are relative to the project root (as the issue specifies), whatever the cwd.
    let paths = args.paths.clone();
    let to = args
        .to
        .map(|d| if d.is_absolute() { d } else { ctx.cwd.join(d) });
    let request = Request {
        target,
        tiers: args.tiers,
        to: to.clone(),
        paths,
        force: args.force,
        missing_only: false,
        skip_encrypted: args.skip_encrypted,
    };
    let bar = super::progress::Bar::new(ctx.quiet);
    let report = mirror::checkout::checkout(&project, &shadow, &request, &bar)?;

    let mut exit = Exit::Ok;
    print_warnings(&report);
    if report.config_restored {
        eprintln!(
            "note: restored {} from the shadow repository",
            project.config_path().display()
        );
    }
    for (tier, why) in &report.skipped {
        eprintln!("note: {tier}: not restored: {why}");
    }
    if !ctx.quiet {
        for pre in &report.pre {
            if let (Some(id), Outcome::Recorded) = (&pre.commit, &pre.outcome) {
                println!(
                    "recorded current state of {} as {} (pre-checkout)",
                    pre.tier,
                    short(id)
                );
            }
        }
    }
    for r in &report.restored {
        if !ctx.quiet {
            let place = to
                .as_ref()
                .map(|d| format!(" into {}", d.display()))
                .unwrap_or_default();
            println!(
                "restored {}{place} to {}: {} written, {} deleted, {} unchanged",
                r.tier,
                short(&r.commit),
                r.written,
                r.deleted,
                r.unchanged
            );
        }
        exit = exit.worst(report_problems(r));
    }
    if to.is_none() {
        let suffix = if request.paths.is_empty() {
            String::new()
        } else {
            format!(
                " -- {}",
                args.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        for pre in &report.pre {
            match (&pre.commit, &pre.outcome) {
                (Some(id), Outcome::Recorded | Outcome::Unchanged) => {
                    eprintln!("undo with: mirror checkout {}{suffix}", id.to_hex_with_len(12))
                }
                _ => eprintln!(
                    "note: {}: the tier directory was missing or empty before the checkout; nothing else to undo",
                    pre.tier
                ),
            }
        }
    }
    ctx.audit_details(serde_json::json!({
        "restored": report.restored,
        "pre_checkout": report.pre.iter().map(|p| serde_json::json!({
            "tier": p.tier,
            "commit": p.commit.map(|c| c.to_string()),
            "outcome": p.outcome,
        })).collect::<Vec<_>>(),
        "config_restored": report.config_restored,
    }));
    Ok(exit)
}

/// Print what a tier's restore could not do; `Partial` when there was anything.
pub fn report_problems(r: &mirror::checkout::TierRestore) -> Exit {
    let mut exit = Exit::Ok;
    for (path, why) in &r.failed {
        eprintln!("error: {}: could not restore {path}: {why}", r.tier);
        exit = Exit::Partial;
    }
    for path in &r.skipped_encrypted {
        eprintln!(
            "warning: {}: skipped encrypted {path} (it could not be decrypted)",
            r.tier
        );
        exit = Exit::Partial;
    }
    exit
}

/// What a checkout worked around without failing (a missing note, leftover temporary files).
pub fn print_warnings(report: &mirror::checkout::Report) {
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
}
