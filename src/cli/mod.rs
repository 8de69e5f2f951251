//! The command layer: one module per command, each with a clap `Args` struct (its doc comment
//! is the `--help` text) and one `run` function. Only this layer prints.

mod checkout;
mod diff;
mod init;
mod log;
mod output;
mod progress;
mod snapshot;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keep a whole project — hidden and gitignored files included — under git history in a
/// bare shadow repository outside the work tree.
#[derive(Parser)]
#[command(name = "mirror", version, about, long_about = None)]
pub struct Cli {
    /// Run as if mirror was started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Print only problems (no progress, no per-tier lines).
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(init::Args),
    Snapshot(snapshot::Args),
    Log(log::Args),
    Checkout(checkout::Args),
    Status(status::Args),
    Diff(diff::Args),
}

/// Exit statuses, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    /// Something was left out (unreadable files): the operation finished, but not fully.
    Partial = 3,
    Error = 1,
}

impl Exit {
    /// Combine outcomes of several tiers: an error outranks a partial result.
    pub fn worst(self, other: Exit) -> Exit {
        match (self, other) {
            (Exit::Error, _) | (_, Exit::Error) => Exit::Error,
            (Exit::Partial, _) | (_, Exit::Partial) => Exit::Partial,
            _ => Exit::Ok,
        }
    }
}

pub struct Context {
    pub cwd: PathBuf,
    pub quiet: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let cwd = match resolve_dir(cli.dir) {
        Ok(d) => d,
        Err(err) => return report_error(&err),
    };
    let ctx = Context {
        cwd,
        quiet: cli.quiet,
    };
    let result = match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Snapshot(args) => snapshot::run(&ctx, args),
        Command::Log(args) => log::run(&ctx, args),
        Command::Checkout(args) => checkout::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Diff(args) => diff::run(&ctx, args),
    };
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(err) => report_error(&err),
    }
}

fn resolve_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    Ok(match dir {
        Some(d) if d.is_absolute() => d,
        Some(d) => cwd.join(d),
        None => cwd,
    })
}

/// Print an error with its chain of causes; usage errors exit 2, everything else 1.
fn report_error(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    let usage = err.chain().any(|c| {
        matches!(
            c.downcast_ref::<mirror::Error>(),
            Some(mirror::Error::Usage(_))
        )
    });
    ExitCode::from(if usage { 2 } else { Exit::Error as u8 })
}

/// Open the project around `ctx.cwd`, saying so when its mirror.yaml came from the shadow.
pub fn open_project(
    ctx: &Context,
) -> anyhow::Result<(mirror::project::Project, mirror::store::Shadow)> {
    let project = mirror::project::Project::discover(&ctx.cwd)?;
    if project.config_from_shadow {
        eprintln!(
            "note: no mirror.yaml in {}; using shadow repository {}, which records this directory as its project root",
            project.root.display(),
            project.shadow_path().display()
        );
    }
    let shadow = project.open_shadow()?;
    Ok((project, shadow))
}

/// Take the shadow's writer lock, saying which stale ref locks of a killed process it removed.
pub fn lock_shadow(
    shadow: &mirror::store::Shadow,
    operation: &str,
) -> anyhow::Result<mirror::lock::ShadowLock> {
    let lock = mirror::lock::acquire(&shadow.path, operation)?;
    for path in &lock.removed_stale {
        eprintln!(
            "note: removed {}, left by a mirror process that was interrupted while updating it",
            path.display()
        );
    }
    Ok(lock)
}
