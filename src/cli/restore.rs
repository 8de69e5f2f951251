//! `mirror restore`

use std::path::PathBuf;

use mirror::checkout::{Request, Target};

use super::output::short;
use super::{open_project, Context, Exit};

/// Bring back files that are missing from disk, touching nothing that exists.
///
/// Every file and link recorded in the snapshot (the latest, or --from) that is missing from
/// disk is written; existing files are never overwritten, so no safety snapshot is needed.
#[derive(clap::Args)]
pub struct Args {
    /// Restore missing files (the only mode for now; required so the intent is explicit).
    #[arg(long, required = true)]
    missing: bool,

    /// Only this tier (repeatable).
    #[arg(long = "tier", value_name = "NAME")]
    tiers: Vec<String>,

    /// The snapshot to restore from (default: the latest of each tier).
    #[arg(long, value_name = "REV")]
    from: Option<String>,

    /// Restore everything else when some encrypted files cannot be decrypted (no or wrong
    /// identity); those are listed and the exit status is 3.
    #[arg(long)]
    skip_encrypted: bool,

    /// Only below these paths (relative to the project root).
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let _lock = super::lock_shadow(&shadow, "restore")?;
    restore_missing(
        ctx,
        &project,
        &shadow,
        &Request {
            target: target(args.from),
            tiers: args.tiers,
            to: None,
            paths: args.paths,
            force: false,
            missing_only: true,
            skip_encrypted: args.skip_encrypted,
        },
    )
}

/// Shared with the post-checkout hook's `auto_restore`.
pub fn restore_missing(
    ctx: &Context,
    project: &mirror::project::Project,
    shadow: &mirror::store::Shadow,
    request: &Request,
) -> anyhow::Result<Exit> {
    let bar = super::progress::Bar::new(ctx.quiet);
    let report = mirror::checkout::checkout(project, shadow, request, &bar)?;
    let mut exit = Exit::Ok;
    super::checkout::print_warnings(&report);
    for (tier, why) in &report.skipped {
        if !ctx.quiet {
            println!("{tier}: {why}");
        }
    }
    for r in &report.restored {
        if !ctx.quiet {
            println!(
                "{}: restored {} missing files from {}",
                r.tier,
                r.written,
                short(&r.commit)
            );
        }
        exit = exit.worst(super::checkout::report_problems(r));
    }
    ctx.audit_details(serde_json::json!({ "restored": report.restored }));
    Ok(exit)
}

/// `--from REV` (default: the latest snapshot of each tier).
pub fn target(from: Option<String>) -> Target {
    match from {
        Some(rev) if rev != "latest" => Target::Rev(rev),
        _ => Target::Latest,
    }
}
