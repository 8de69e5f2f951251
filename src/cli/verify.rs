//! `mirror verify`

use mirror::verify::{Options, Report};

use super::output::{bytes, json};
use super::{open_project, Context, Exit};

/// Check that the backup is whole: every ref resolves, every commit, tree and tag reachable
/// from mirror's refs is present, hashes to its id and parses, each tier's newest snapshot is
/// read completely, and the audit chain is intact. Any problem is named with the tiers,
/// snapshots and paths it affects, and the exit status is 1.
#[derive(clap::Args)]
pub struct Args {
    /// Only this tier (repeatable).
    #[arg(long = "tier", value_name = "NAME")]
    tiers: Vec<String>,

    /// Read and re-hash every reachable object, the blobs of every snapshot included.
    #[arg(long)]
    full: bool,

    /// Decrypt every encrypted blob in scope with the identity.
    #[arg(long)]
    decrypt: bool,

    /// Compare the working tree with the latest snapshots; missing critical files are problems.
    #[arg(long)]
    worktree: bool,

    /// Check that every remote holds the same refs as this shadow repository.
    #[arg(long)]
    remotes: bool,

    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let options = Options {
        tiers: args.tiers,
        full: args.full,
        decrypt: args.decrypt,
        worktree: args.worktree,
        remotes: args.remotes,
    };
    let bar = super::progress::Bar::new(ctx.quiet || args.json);
    let report = mirror::verify::verify(&project, &shadow, &options, &bar)?;
    if args.json {
        json(&report)?;
    } else {
        print(ctx, &report);
    }
    ctx.audit_details(serde_json::json!({
        "objects": report.objects,
        "bytes": report.bytes,
        "seconds": report.seconds,
        "problems": report.problems.len(),
        "full": options.full,
        "decrypt": options.decrypt,
        "worktree": options.worktree,
        "remotes": options.remotes,
    }));
    if report.ok {
        return Ok(Exit::Ok);
    }
    for p in &report.problems {
        ctx.audit_error(p.message.clone());
    }
    Ok(Exit::Error)
}

/// The human-readable report: one `error:` line per problem with what it affects.
pub fn print(ctx: &Context, report: &Report) {
    for note in &report.notes {
        if !ctx.quiet {
            println!("note: {note}");
        }
    }
    for p in &report.problems {
        eprintln!("error: {}", p.message);
        let mut by_tier: std::collections::BTreeMap<&str, (Vec<String>, Vec<String>)> =
            Default::default();
        for a in &p.affected {
            let (snaps, paths) = by_tier.entry(a.tier.as_str()).or_default();
            let snap = a.snapshot.to_hex_with_len(7).to_string();
            if !snaps.contains(&snap) {
                snaps.push(snap);
            }
            if let Some(path) = &a.path {
                if !paths.contains(path) {
                    paths.push(path.clone());
                }
            }
        }
        for (tier, (snaps, paths)) in by_tier {
            let shown: Vec<&String> = snaps.iter().take(5).collect();
            let more = snaps.len().saturating_sub(shown.len());
            let paths = if paths.is_empty() {
                "the whole snapshot".to_owned()
            } else {
                paths.join(", ")
            };
            eprintln!(
                "  affects tier {tier}, snapshots {}{}: {paths}",
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            );
        }
    }
    if report.ok && !ctx.quiet {
        println!(
            "verify: OK — {} objects checked, {} read in {:.2} s",
            report.objects,
            bytes(report.bytes),
            report.seconds
        );
    } else if !report.ok {
        eprintln!(
            "verify: {} problems ({} objects checked, {} read in {:.2} s)",
            report.problems.len(),
            report.objects,
            bytes(report.bytes),
            report.seconds
        );
    }
}
