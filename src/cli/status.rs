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
        let critical = match (s.critical.len(), s.critical_missing.len()) {
            (0, 0) => String::new(),
            (n, 0) => format!("; {n} critical"),
            (n, m) => format!("; {n} critical, {m} CRITICAL MISSING"),
        };
        println!("{} ({}): {last}; {state}{critical}", s.tier, s.path);
        for c in &s.changes {
            println!("  {} {}", c.status, c.path);
        }
        for path in &s.critical_missing {
            println!("  ! {path} (critical file missing)");
        }
        for w in &s.warnings {
            eprintln!("warning: {}: {w}", s.tier);
        }
        for h in &s.plaintext_history {
            let ids: Vec<String> = h
                .snapshots
                .iter()
                .map(|id| id[..7.min(id.len())].to_owned())
                .collect();
            eprintln!(
                "warning: {}: {} is a treasure, but {} older snapshot(s) hold it in plaintext: {} — they stay readable without a key until that history is rewritten (see docs/format.md)",
                s.tier,
                h.path,
                ids.len(),
                ids.join(", ")
            );
        }
        for n in &s.unreadable {
            eprintln!(
                "warning: {}: could not read {}: {}",
                s.tier, n.path, n.reason
            );
        }
    }
    super::remote::print_statuses(&super::remote::statuses(&project, &shadow));
    Ok(Exit::Ok)
}
