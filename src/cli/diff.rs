//! `mirror diff`

use super::{open_project, Context, Exit};

/// Name-status list of changes: working tree against the latest snapshot (no REV), against
/// REV, or between REV and REV2.
#[derive(clap::Args)]
pub struct Args {
    /// A snapshot: `latest`, `tiers/<tier>~N`, or a commit id.
    rev: Option<String>,
    /// A second snapshot to compare REV with.
    rev2: Option<String>,

    /// Only this tier (repeatable; used when no REV is given).
    #[arg(long = "tier", value_name = "NAME")]
    tiers: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    let changes = mirror::status::diff(
        &project,
        &shadow,
        &args.tiers,
        args.rev.as_deref(),
        args.rev2.as_deref(),
    )?;
    for c in changes {
        println!("{}\t{}", c.status, c.path);
    }
    Ok(Exit::Ok)
}
