//! `mirror log`

use super::output::{json, short};
use super::{open_project, Context, Exit};

/// Show snapshots, newest first, across tiers (or for one tier).
#[derive(clap::Args)]
pub struct Args {
    /// Only this tier.
    #[arg(long = "tier", value_name = "NAME")]
    tier: Option<String>,

    /// At most N snapshots.
    #[arg(short = 'n', long = "max-count", default_value_t = 50)]
    n: usize,

    /// Print as JSON.
    #[arg(long)]
    json: bool,

    /// Show the audit trail (every operation and its result) instead of snapshots.
    #[arg(long, conflicts_with = "tier")]
    audit: bool,

    /// With --audit: only failed and partial operations.
    #[arg(long, requires = "audit")]
    failures: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    if args.audit {
        return audit_log(&shadow, args.n, args.failures, args.json);
    }
    let tiers: Vec<String> = project
        .config
        .select_tiers(&args.tier.into_iter().collect::<Vec<_>>())?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let snapshots = mirror::history::log(&shadow, &tiers, args.n)?;
    if args.json {
        json(&snapshots)?;
        return Ok(Exit::Ok);
    }
    if snapshots.is_empty() {
        println!("no snapshots yet — run `mirror snapshot`");
    }
    for s in &snapshots {
        let mut line = format!(
            "{}  {:<14} {}  {:<12} {:<12}",
            mirror::history::format_local(s.time),
            s.tier,
            short(&s.id),
            s.stats,
            s.trigger
        );
        if s.partial {
            line.push_str(" [partial]");
        }
        if let Some(n) = s.critical.filter(|n| *n > 0) {
            line.push_str(&format!(" [{n} critical]"));
        }
        if !s.message.is_empty() {
            line.push_str(&format!(" {}", s.message.lines().next().unwrap_or("")));
        }
        if !s.tags.is_empty() {
            line.push_str(&format!(" (tag: {})", s.tags.join(", ")));
        }
        println!("{}", line.trim_end());
    }
    Ok(Exit::Ok)
}

fn audit_log(
    shadow: &mirror::store::Shadow,
    n: usize,
    failures: bool,
    as_json: bool,
) -> anyhow::Result<Exit> {
    let entries = mirror::audit::list(shadow, n, failures)?;
    if as_json {
        json(&entries)?;
        return Ok(Exit::Ok);
    }
    for e in &entries {
        let result = match e.entry.result {
            mirror::audit::Outcome::Ok => "ok",
            mirror::audit::Outcome::Partial => "PARTIAL",
            mirror::audit::Outcome::Failed => "FAILED",
        };
        let mut line = format!(
            "{}  {}  {:<8} {:<8} {}@{}  mirror {}",
            e.entry
                .time
                .get(..19)
                .unwrap_or(&e.entry.time)
                .replace('T', " "),
            short(&e.id),
            e.entry.command,
            result,
            e.entry.user,
            e.entry.host,
            e.entry.args.join(" ")
        );
        if let Some(err) = &e.entry.error {
            line.push_str(&format!(" — {}", err.lines().next().unwrap_or("")));
        }
        println!("{line}");
    }
    Ok(Exit::Ok)
}
