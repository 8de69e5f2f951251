//! `mirror status`

use super::output::{json, short};
use super::{open_project, Context, Exit};

/// Per tier: the last snapshot and what changed on disk since.
#[derive(clap::Args)]
pub struct Args {
    /// Only this tier (repeatable).
    #[arg(long = "tier", value_name = "NAME")]
    tiers: Vec<String>,

    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    let statuses = mirror::status::status(&project, &shadow, &args.tiers)?;
    if args.json {
        json(&statuses)?;
        return Ok(Exit::Ok);
    }
    for s in &statuses {
        let last = match &s.last {
            Some(l) => format!(
                "last snapshot {} {}",
                mirror::history::format_local(l.time),
                short(&l.id)
            ),
            None => "no snapshot yet".into(),
        };
        let state = if s.missing {
            "tier directory is missing".to_owned()
        } else if s.changes.is_empty() {
            "clean".to_owned()
        } else {
            format!("{} since", s.counts)
        };
        println!("{} ({}): {last}; {state}", s.tier, s.path);
        for c in &s.changes {
            println!("  {} {}", c.status, c.path);
        }
        for n in &s.unreadable {
            eprintln!(
                "warning: {}: could not read {}: {}",
                s.tier, n.path, n.reason
            );
        }
    }
    Ok(Exit::Ok)
}
