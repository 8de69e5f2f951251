//! `mirror push`

use mirror::config::Remote;
use mirror::remote::{PushReport, PushResult};

use super::output::json;
use super::{open_project, Context, Exit};

/// Send every tier branch, milestone tag, the audit trail, the `mirror.yaml` history and the
/// metadata notes to the remote mirrors (all, or the named ones). Never forced: a remote
/// with snapshots this repository lacks is reported and left untouched.
#[derive(clap::Args)]
pub struct Args {
    /// Only these remotes (names from `mirror remote list`).
    #[arg(value_name = "NAME")]
    names: Vec<String>,

    /// Print the result per remote as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let remotes = select(&project.config.remotes, &args.names)?;
    let _lock = super::lock_shadow(&shadow, "push")?;
    let reports = push_all(&project, &shadow, &remotes)?;
    if args.json {
        json(&reports)?;
    }
    let exit = print_reports(ctx, &reports, args.json);
    ctx.audit_details(serde_json::to_value(&reports)?);
    for r in reports.iter().filter(|r| r.error.is_some()) {
        ctx.audit_error(format!(
            "{}: {}",
            r.remote,
            r.error.as_deref().unwrap_or_default()
        ));
    }
    Ok(exit)
}

/// The named remotes (all when none are named); an unknown name is a usage error.
pub fn select(all: &[Remote], names: &[String]) -> anyhow::Result<Vec<Remote>> {
    if all.is_empty() {
        anyhow::bail!("no remotes configured; add one with `mirror remote add NAME URL`");
    }
    for name in names {
        if !all.iter().any(|r| &r.name == name) {
            let known: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
            return Err(mirror::Error::Usage(format!(
                "no remote named '{name}' (configured: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    Ok(all
        .iter()
        .filter(|r| names.is_empty() || names.contains(&r.name))
        .cloned()
        .collect())
}

/// Push to each remote in turn; one failing does not stop the others. The current
/// mirror.yaml is recorded first (it may have changed since the last snapshot, e.g. by
/// `mirror remote add`), so a clone from the remote gets it back.
pub fn push_all(
    project: &mirror::project::Project,
    shadow: &mirror::store::Shadow,
    remotes: &[Remote],
) -> anyhow::Result<Vec<PushReport>> {
    if let Ok(bytes) = std::fs::read(project.config_path()) {
        mirror::project::record_config(shadow, &bytes, &mirror::snapshot::signature())?;
    }
    let first_tier = &project.config.tiers[0].name;
    Ok(remotes
        .iter()
        .map(|r| mirror::remote::push(shadow, r, &project.root, first_tier))
        .collect())
}

/// One line per remote (failures on stderr); `Error` if any failed.
pub fn print_reports(ctx: &Context, reports: &[PushReport], quiet_stdout: bool) -> Exit {
    let mut exit = Exit::Ok;
    for r in reports {
        let created = if r.created { ", created" } else { "" };
        match r.result {
            PushResult::Pushed if !ctx.quiet && !quiet_stdout => {
                println!("{}: pushed ({} refs{created})", r.remote, r.refs)
            }
            PushResult::UpToDate if !ctx.quiet && !quiet_stdout => {
                println!("{}: up to date{created}", r.remote)
            }
            PushResult::Pushed | PushResult::UpToDate => {}
            PushResult::Diverged => {
                exit = Exit::Error;
                eprintln!(
                    "error: {}: {}",
                    r.remote,
                    r.error.as_deref().unwrap_or("diverged")
                );
            }
            PushResult::Failed => {
                exit = Exit::Error;
                eprintln!(
                    "error: {}: failed: {}",
                    r.remote,
                    r.error.as_deref().unwrap_or("unknown error")
                );
            }
        }
    }
    exit
}
