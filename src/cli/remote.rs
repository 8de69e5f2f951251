//! `mirror remote`

use mirror::remote::State;

use super::output::json;
use super::{open_project, Context, Exit};

/// Manage the remote mirrors in mirror.yaml, and compare them with this shadow repository.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Add a remote: URL is anything `git push` accepts (a path, file://, ssh://,
    /// user@host:path, https://). Only the `remotes:` block of mirror.yaml is rewritten.
    Add { name: String, url: String },
    /// Remove a remote from mirror.yaml (the remote repository itself is not touched).
    Remove { name: String },
    /// List the remotes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Per remote: up to date, behind (it lacks snapshots), ahead (it has snapshots this
    /// repository lacks), diverged, unreachable, or empty. Asks each remote now.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    match args.command {
        Sub::Add { name, url } => {
            mirror::config::validate_remote_name(&name).map_err(mirror::Error::Usage)?;
            let mut remotes = project.config.remotes.clone();
            if remotes.iter().any(|r| r.name == name) {
                anyhow::bail!("a remote named '{name}' already exists; remove it first or choose another name");
            }
            remotes.push(mirror::config::Remote {
                name: name.clone(),
                url: url.clone(),
            });
            mirror::config::write_remotes(&project, &remotes)?;
            if !ctx.quiet {
                println!("added remote {name} ({url})");
            }
        }
        Sub::Remove { name } => {
            let mut remotes = project.config.remotes.clone();
            let before = remotes.len();
            remotes.retain(|r| r.name != name);
            if remotes.len() == before {
                anyhow::bail!("no remote named '{name}' in mirror.yaml");
            }
            mirror::config::write_remotes(&project, &remotes)?;
            if !ctx.quiet {
                println!("removed remote {name}");
            }
        }
        Sub::List { json: as_json } => {
            if as_json {
                json(&project.config.remotes)?;
            } else {
                for r in &project.config.remotes {
                    println!("{}\t{}", r.name, r.url);
                }
            }
        }
        Sub::Status { json: as_json } => {
            let statuses = statuses(&project, &shadow);
            if as_json {
                json(&statuses)?;
            } else {
                print_statuses(&statuses);
            }
            if statuses.iter().any(|s| s.state == State::Unreachable) {
                return Ok(Exit::Error);
            }
        }
    }
    Ok(Exit::Ok)
}

pub fn statuses(
    project: &mirror::project::Project,
    shadow: &mirror::store::Shadow,
) -> Vec<mirror::remote::RemoteStatus> {
    mirror::remote::statuses(shadow, &project.config.remotes, &project.root)
}

pub fn print_statuses(statuses: &[mirror::remote::RemoteStatus]) {
    for s in statuses {
        let state = match s.state {
            State::UpToDate => "up to date".to_owned(),
            State::Behind => format!("behind by {} snapshots (run mirror push)", s.behind),
            State::Ahead if s.ahead > 0 => format!(
                "ahead by {} snapshots (has snapshots this repo lacks; run mirror fetch {})",
                s.ahead, s.remote
            ),
            State::Ahead => format!(
                "ahead (has snapshots this repo lacks; run mirror fetch {})",
                s.remote
            ),
            State::Diverged => format!(
                "diverged (it lacks {} of our snapshots and has others; run mirror fetch {})",
                s.behind, s.remote
            ),
            State::Unreachable => format!(
                "unreachable: {}",
                s.error.as_deref().unwrap_or("unknown error")
            ),
            State::Empty => "empty (never pushed)".to_owned(),
        };
        println!("remote {}: {state}", s.remote);
    }
}
