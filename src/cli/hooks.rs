//! `mirror hooks`

use std::path::PathBuf;

use mirror::hooks::State;

use super::{Context, Exit};

/// Install, remove or show mirror's git hooks (pre-commit, post-checkout) in the project's
/// repository, in the hooks directory git uses (core.hooksPath, linked worktrees, $GIT_DIR).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,

    /// The repository's git dir (default: $GIT_DIR, else the repository around the project).
    #[arg(long, global = true, value_name = "DIR")]
    git_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Install both hooks; an existing hook is kept and runs first. Idempotent.
    Install,
    /// Remove mirror's hooks and put back exactly what was there before.
    Uninstall,
    /// Show what is installed.
    Status,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let git_dir = args.git_dir.or_else(|| ctx.git_dir.clone());
    let dir = mirror::hooks::hooks_dir(&ctx.cwd, git_dir.as_deref())?;
    let changes = match args.command {
        Sub::Install => mirror::hooks::install(&dir)?,
        Sub::Uninstall => mirror::hooks::uninstall(&dir)?,
        Sub::Status => {
            for hook in mirror::hooks::status(&dir) {
                let state = match hook.state {
                    State::NotInstalled => "not installed".to_owned(),
                    State::Installed { chained: true } => {
                        "installed (runs the previous hook first)".to_owned()
                    }
                    State::Installed { chained: false } => "installed".to_owned(),
                    State::Foreign => "another hook is installed (not mirror's)".to_owned(),
                };
                println!("{:<14} {state}  {}", hook.name, hook.path.display());
            }
            return Ok(Exit::Ok);
        }
    };
    if !ctx.quiet {
        if changes.is_empty() {
            println!("nothing to do: {}", dir.display());
        }
        for c in changes {
            println!("{c}");
        }
    }
    Ok(Exit::Ok)
}
