//! `mirror fetch`

use super::{open_project, Context, Exit};

/// Bring the remotes' refs (all remotes, or the named one) into the shadow repository under
/// `refs/remotes/<name>/...`, so `mirror remote status` can say how they differ.
#[derive(clap::Args)]
pub struct Args {
    /// Only this remote.
    #[arg(value_name = "NAME")]
    name: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let _lock = super::lock_shadow(&shadow, "fetch")?;
    let names: Vec<String> = args.name.into_iter().collect();
    let remotes = super::push::select(&project.config.remotes, &names)?;
    let mut exit = Exit::Ok;
    let mut details = Vec::new();
    for remote in &remotes {
        match mirror::remote::fetch(&shadow, remote, &project.root) {
            Ok(()) => {
                if !ctx.quiet {
                    println!(
                        "{}: fetched into refs/remotes/{}/",
                        remote.name, remote.name
                    );
                }
                details.push(serde_json::json!({"remote": remote.name, "result": "fetched"}));
            }
            Err(err) => {
                exit = Exit::Error;
                eprintln!("error: {}: fetch failed: {err:#}", remote.name);
                ctx.audit_error(format!("{}: {err:#}", remote.name));
                details.push(serde_json::json!({"remote": remote.name, "result": "failed", "error": format!("{err:#}")}));
            }
        }
    }
    ctx.audit_details(serde_json::json!({ "fetched": details }));
    Ok(exit)
}
