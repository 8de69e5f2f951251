//! `mirror repair`

use super::{open_project, Context, Exit};

/// Replace missing or corrupt objects with good copies from a remote mirror: corrupt files are
/// moved into SHADOW/mirror/quarantine/ (never deleted; sound objects of a damaged pack are
/// saved first), every object of the remote is fetched again, and the shadow is verified.
#[derive(clap::Args)]
pub struct Args {
    /// The remote to repair from (default: every remote).
    #[arg(long = "from", value_name = "REMOTE")]
    from: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let _lock = super::lock_shadow(&shadow, "repair")?;
    // Repair moves packs into quarantine: never while gc is deciding which copies to delete.
    let _gc = mirror::lock::acquire_gc(&shadow.path, true)?;
    let names: Vec<String> = args.from.into_iter().collect();
    let remotes = super::push::select(&project.config.remotes, &names)?;
    let bar = super::progress::Bar::new(ctx.quiet);
    let report = mirror::repair::repair(&project, &shadow, &remotes, &bar)?;
    for (remote, err) in &report.fetch_errors {
        eprintln!("error: {remote}: could not fetch: {err}");
    }
    for path in &report.quarantined {
        eprintln!("note: moved {} into quarantine", path.display());
    }
    let fixed = report
        .bad_before
        .iter()
        .filter(|id| {
            !report
                .after
                .problems
                .iter()
                .any(|p| p.object.as_ref() == Some(*id))
        })
        .count();
    ctx.audit_details(serde_json::json!({
        "bad_before": report.bad_before.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "repaired": fixed,
        "salvaged": report.salvaged,
        "quarantined": report.quarantined,
        "problems_after": report.after.problems.len(),
    }));
    if report.bad_before.is_empty() && report.after.ok {
        if !ctx.quiet {
            println!("repair: nothing to repair — the shadow repository verifies clean");
        }
        return Ok(Exit::Ok);
    }
    if report.after.ok {
        if !ctx.quiet {
            println!(
                "repair: {fixed} objects repaired ({} sound objects saved from damaged packs); the shadow repository verifies clean",
                report.salvaged
            );
        }
        return Ok(Exit::Ok);
    }
    eprintln!(
        "repair: {fixed} of {} objects repaired; still broken:",
        report.bad_before.len()
    );
    super::verify::print(ctx, &report.after);
    for p in &report.after.problems {
        ctx.audit_error(p.message.clone());
    }
    Ok(Exit::Error)
}
