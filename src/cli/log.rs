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
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
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
