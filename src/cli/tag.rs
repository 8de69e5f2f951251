//! `mirror tag` and `mirror tags`

use mirror::milestone::{self, Request};

use super::output::{json, short};
use super::{open_project, Context, Exit};

/// Mark the state of all tiers as a milestone: an annotated tag in the shadow repository.
///
/// Without --at, each tier's current state is captured (a snapshot is taken first when
/// anything changed). Tags are never moved: an existing name is an error.
#[derive(clap::Args)]
pub struct Args {
    /// The tag name (git ref-name rules).
    #[arg(required_unless_present = "list")]
    name: Option<String>,

    /// The tag message.
    #[arg(short, long)]
    message: Option<String>,

    /// Tag an earlier state: a revision (e.g. `tiers/tier-0~2`) or a time ("2 hours ago").
    #[arg(long, value_name = "REV|TIME")]
    at: Option<String>,

    /// List the tags instead (same as `mirror tags`).
    #[arg(long, conflicts_with_all = ["name", "message", "at"])]
    list: bool,

    /// With --list: print as JSON.
    #[arg(long, requires = "list")]
    json: bool,
}

/// List milestone tags: time, message and the tiers each captures.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let Some(name) = args.name.filter(|_| !args.list) else {
        return list(ctx, ListArgs { json: args.json });
    };
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let _lock = super::lock_shadow(&shadow, "tag")?;
    let request = Request {
        name,
        message: args.message,
        at: args.at,
    };
    let bar = super::progress::Bar::new(ctx.quiet);
    let (exit, details) = create(ctx, &project, &shadow, &request, &bar)?;
    ctx.audit_details(details);
    Ok(exit)
}

/// Create a tag and report it; shared with `mirror snapshot --tag`. Returns the exit status
/// and the audit details of the tag.
pub fn create(
    ctx: &Context,
    project: &mirror::project::Project,
    shadow: &mirror::store::Shadow,
    request: &Request,
    progress: &dyn mirror::progress::Progress,
) -> anyhow::Result<(Exit, serde_json::Value)> {
    let report = milestone::create(project, shadow, request, progress)?;
    let partial = report.snapshots.iter().any(|s| !s.unreadable.is_empty());
    for s in &report.snapshots {
        for n in &s.unreadable {
            eprintln!("error: {}: could not read {}: {}", s.tier, n.path, n.reason);
        }
        if let (Some(id), mirror::snapshot::Outcome::Recorded) = (&s.commit, &s.outcome) {
            if !ctx.quiet {
                println!("recorded {} as {} before tagging", s.tier, short(id));
            }
        }
    }
    if !ctx.quiet {
        let tiers: Vec<String> = report
            .tiers
            .iter()
            .map(|(t, c)| format!("{t} {}", short(c)))
            .collect();
        println!(
            "tagged {} ({}): {}",
            report.name,
            short(&report.milestone),
            tiers.join(", ")
        );
    }
    let details = serde_json::json!({
        "tag": report.name,
        "milestone": report.milestone.to_string(),
        "tiers": report.tiers.iter().map(|(t, c)| serde_json::json!({"tier": t, "commit": c.to_string()})).collect::<Vec<_>>(),
    });
    if partial {
        eprintln!("warning: the tagged snapshots are partial: some files could not be read (listed above)");
        return Ok((Exit::Partial, details));
    }
    Ok((Exit::Ok, details))
}

pub fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<Exit> {
    let (_, shadow) = open_project(ctx)?;
    let tags = milestone::list(&shadow)?;
    if args.json {
        json(&tags)?;
        return Ok(Exit::Ok);
    }
    if tags.is_empty() {
        println!("no tags yet — `mirror tag NAME` marks the current state");
    }
    for t in &tags {
        let tiers: Vec<String> = t
            .tiers
            .iter()
            .map(|(tier, c)| format!("{tier} {}", &c[..7.min(c.len())]))
            .collect();
        println!(
            "{:<20} {}  {}  [{}]",
            t.name,
            mirror::history::format_local(t.time),
            t.message.lines().next().unwrap_or(""),
            tiers.join(", ")
        );
    }
    Ok(Exit::Ok)
}
