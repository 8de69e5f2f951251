//! `mirror gc`

use super::output::json;
use super::{open_project, Context, Exit};

/// Gather loose objects and small packs into one pack (never deleting an object: unreachable
/// ones are packed too). Snapshots start `mirror gc --auto` in the background once there is
/// enough to gather, so a hook never waits for it.
#[derive(clap::Args)]
pub struct Args {
    /// Afterwards, let `git repack -a -d -k` store similar objects as deltas: a smaller
    /// repository for git's time and memory (see docs/performance.md).
    #[arg(long)]
    deltas: bool,

    /// Only if there is enough to gather, and only if no other mirror process holds the
    /// shadow (what snapshots start in the background).
    #[arg(long)]
    auto: bool,

    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (_project, shadow) = open_project(ctx)?;
    if args.auto && !mirror::gc::candidates(&shadow)?.worth_auto() {
        return Ok(Exit::Ok);
    }
    // Not the writer lock: snapshots go on while gc runs (see lock::acquire_gc).
    let Some(_lock) = mirror::lock::acquire_gc(&shadow.path, !args.auto)? else {
        // A background run gives way to the one already running.
        return Ok(Exit::Ok);
    };
    ctx.audit_into(&shadow);
    let bar = super::progress::Bar::new(ctx.quiet || args.json);
    let report = mirror::gc::gc(&shadow, args.deltas, &bar)?;
    ctx.audit_details(serde_json::to_value(&report)?);
    if args.json {
        json(&report)?;
    } else if !ctx.quiet {
        println!(
            "gc: packed {} objects ({} loose, {} small packs merged) into {} pack(s){}; objects {} -> {} in {:.1} s",
            report.objects_packed,
            report.loose_objects,
            report.packs_merged,
            report.packs_written,
            if report.repacked { ", then git repack with deltas" } else { "" },
            mirror::units::bytes(report.bytes_before),
            mirror::units::bytes(report.bytes_after),
            report.seconds,
        );
    }
    Ok(Exit::Ok)
}

/// After a snapshot: start `mirror gc --auto` in the background when there is enough to
/// gather, detached (its own session, nobody waits for it) so a hook never stalls. Its
/// output goes to `SHADOW/mirror/gc.log`; its result is in the audit trail.
pub fn start_auto(root: &std::path::Path, shadow: &mirror::store::Shadow) {
    if !mirror::gc::auto_wanted(shadow) {
        return;
    }
    if let Err(err) = spawn_auto(root, shadow) {
        eprintln!("warning: could not start `mirror gc --auto` in the background: {err:#}");
    }
}

fn spawn_auto(root: &std::path::Path, shadow: &mirror::store::Shadow) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let log_path = shadow.mirror_dir().join("gc.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("could not open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("could not find the mirror executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-C")
        .arg(root)
        .args(["--quiet", "gc", "--auto"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // Detached: nobody waits for it, and a Ctrl-C to the hook or watch does not stop it.
    mirror::child::new_session(&mut cmd);
    let mut child = cmd.spawn().context("could not start it")?;
    // Reaped by a thread, so a long-running `mirror watch` leaves no zombie behind.
    std::thread::spawn(move || child.wait());
    Ok(())
}
