//! The command layer: one module per command, each with a clap `Args` struct (its doc comment
//! is the `--help` text) and one `run` function. Only this layer prints.

mod alerts;
mod audit;
mod checkout;
mod clone;
mod dashboard;
mod diff;
mod fetch;
mod gc;
mod hook;
mod hooks;
mod init;
mod key;
mod log;
mod output;
mod progress;
mod push;
mod remote;
mod repair;
mod report;
mod restore;
mod schedule;
mod snapshot;
mod status;
mod tag;
mod verify;
mod watch;

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

    /// The age identity (or OpenSSH private key) that decrypts treasure files; overrides
    /// MIRROR_IDENTITY, `encryption.identity` in mirror.yaml and the default
    /// $XDG_CONFIG_HOME/mirror/identity.txt.
    #[arg(long, global = true, value_name = "FILE")]
    identity: Option<PathBuf>,

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
    Tag(tag::Args),
    /// List milestone tags (same as `mirror tag --list`).
    Tags(tag::ListArgs),
    Audit(audit::Args),
    Restore(restore::Args),
    Hooks(hooks::Args),
    Hook(hook::Args),
    Key(key::Args),
    Remote(remote::Args),
    Push(push::Args),
    Fetch(fetch::Args),
    Clone(clone::Args),
    Verify(verify::Args),
    Repair(repair::Args),
    Gc(gc::Args),
    Dashboard(dashboard::Args),
    Report(report::Args),
    Watch(watch::Args),
    Schedule(schedule::Args),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Snapshot(_) => "snapshot",
            Command::Log(_) => "log",
            Command::Checkout(_) => "checkout",
            Command::Status(_) => "status",
            Command::Diff(_) => "diff",
            Command::Tag(_) => "tag",
            Command::Tags(_) => "tags",
            Command::Audit(_) => "audit",
            Command::Restore(_) => "restore",
            Command::Hooks(_) => "hooks",
            Command::Hook(_) => "hook",
            Command::Key(_) => "key",
            Command::Remote(_) => "remote",
            Command::Push(_) => "push",
            Command::Fetch(_) => "fetch",
            Command::Clone(_) => "clone",
            Command::Verify(_) => "verify",
            Command::Repair(_) => "repair",
            Command::Gc(_) => "gc",
            Command::Dashboard(_) => "dashboard",
            Command::Report(_) => "report",
            Command::Watch(_) => "watch",
            Command::Schedule(_) => "schedule",
        }
    }
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
    /// The audit trail's word for this exit status.
    pub fn outcome(self) -> mirror::audit::Outcome {
        match self {
            Exit::Ok => mirror::audit::Outcome::Ok,
            Exit::Partial => mirror::audit::Outcome::Partial,
            Exit::Error => mirror::audit::Outcome::Failed,
        }
    }

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
    /// `$GIT_DIR` as mirror was started with (git sets it for hooks); see [`clear_git_env`].
    pub git_dir: Option<PathBuf>,
    pub quiet: bool,
    /// `--identity FILE`.
    pub identity: Option<PathBuf>,
    /// Set by operations that write the shadow repository: they are recorded in its audit
    /// trail, whatever their outcome (see [`record_audit`]).
    audit: std::cell::RefCell<Option<Audit>>,
    /// Where alerts of this run go (set when a project is opened; see `alerts.rs`).
    pub alerting: std::cell::RefCell<Option<alerts::Target>>,
    /// Alerts raised during the command, delivered when it ends.
    pub alerts: std::cell::RefCell<Vec<mirror::alert::Alert>>,
}

struct Audit {
    shadow: PathBuf,
    details: serde_json::Value,
    /// Errors a command reported without failing as a whole (one tier of several).
    errors: Vec<String>,
}

impl Context {
    /// Record this operation in the audit trail of `shadow` when it ends.
    pub fn audit_into(&self, shadow: &mirror::store::Shadow) {
        *self.audit.borrow_mut() = Some(Audit {
            shadow: shadow.path.clone(),
            details: serde_json::Value::Null,
            errors: Vec::new(),
        });
    }

    /// An error the command reported while going on (e.g. one failed tier).
    pub fn audit_error(&self, message: String) {
        if let Some(a) = self.audit.borrow_mut().as_mut() {
            a.errors.push(message);
        }
    }

    /// Add one field to the operation's audit details (an object; other fields stay).
    pub fn audit_detail(&self, key: &str, value: serde_json::Value) {
        if let Some(a) = self.audit.borrow_mut().as_mut() {
            if !a.details.is_object() {
                a.details = serde_json::Value::Object(Default::default());
            }
            a.details[key] = value;
        }
    }

    /// What the operation did, for its audit entry.
    pub fn audit_details(&self, details: serde_json::Value) {
        if let Some(a) = self.audit.borrow_mut().as_mut() {
            a.details = details;
        }
    }
}

pub fn main() -> ExitCode {
    // A file-size limit (RLIMIT_FSIZE) must make a write fail with EFBIG, reported like any
    // full disk, not kill mirror halfway through with SIGXFSZ.
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    let cwd = match resolve_dir(cli.dir) {
        Ok(d) => d,
        Err(err) => return report_error(&err),
    };
    let git_dir = clear_git_env();
    let ctx = Context {
        git_dir,
        cwd,
        quiet: cli.quiet,
        identity: cli.identity.map(|p| {
            if p.is_absolute() {
                p
            } else {
                cwd_for_identity(&p)
            }
        }),
        audit: Default::default(),
        alerting: Default::default(),
        alerts: Default::default(),
    };
    let command = cli.command.name();
    let result = match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Snapshot(args) => snapshot::run(&ctx, args),
        Command::Log(args) => log::run(&ctx, args),
        Command::Checkout(args) => checkout::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Diff(args) => diff::run(&ctx, args),
        Command::Tag(args) => tag::run(&ctx, args),
        Command::Tags(args) => tag::list(&ctx, args),
        Command::Audit(args) => audit::run(&ctx, args),
        Command::Restore(args) => restore::run(&ctx, args),
        Command::Hooks(args) => hooks::run(&ctx, args),
        Command::Hook(args) => hook::run(&ctx, args),
        Command::Key(args) => key::run(&ctx, args),
        Command::Remote(args) => remote::run(&ctx, args),
        Command::Push(args) => push::run(&ctx, args),
        Command::Fetch(args) => fetch::run(&ctx, args),
        Command::Clone(args) => clone::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::Gc(args) => gc::run(&ctx, args),
        Command::Repair(args) => repair::run(&ctx, args),
        Command::Dashboard(args) => dashboard::run(&ctx, args),
        Command::Report(args) => report::run(&ctx, args),
        Command::Watch(args) => watch::run(&ctx, args),
        Command::Schedule(args) => schedule::run(&ctx, args),
    };
    let code = match &result {
        Ok(exit) => ExitCode::from(*exit as u8),
        Err(err) => report_error(err),
    };
    let audited = record_audit(&ctx, command, &result);
    // After the audit entry, so an alert about this operation can point at it.
    alerts::after_command(
        &ctx,
        command,
        audited.as_ref().ok().and_then(Option::as_ref),
    );
    match audited {
        Ok(_) => code,
        Err(err) => {
            // An operation that cannot be audited is not silently "done".
            report_error(
                &err.context("the operation ran, but its audit entry could not be written"),
            )
        }
    }
}

/// Append the audit entry of the operation that just ended, if it wrote the shadow repository.
fn record_audit(
    ctx: &Context,
    command: &str,
    result: &anyhow::Result<Exit>,
) -> anyhow::Result<Option<mirror::audit::Entry>> {
    let Some(audit) = ctx.audit.borrow_mut().take() else {
        return Ok(None);
    };
    use mirror::audit::Outcome;
    let outcome = match result {
        // A hook reports a failed snapshot but lets git go on: still a failure to audit.
        Ok(Exit::Ok) if !audit.errors.is_empty() => Outcome::Failed,
        Ok(exit) => exit.outcome(),
        Err(_) => Outcome::Failed,
    };
    let mut errors = audit.errors;
    if let Err(err) = result {
        errors.push(format!("{err:#}"));
    }
    let shadow = mirror::store::Shadow::open(&audit.shadow)?;
    let entry = append_audit(
        &shadow,
        command,
        std::env::args().skip(1).collect(),
        outcome,
        audit.details,
        &errors,
    )?;
    Ok(Some(entry))
}

/// Append one audit entry now: for work that is an operation of its own inside a command
/// (an automatic push, each snapshot of a watch, an alert), and for the command itself.
pub fn append_audit(
    shadow: &mirror::store::Shadow,
    command: &str,
    args: Vec<String>,
    outcome: mirror::audit::Outcome,
    details: serde_json::Value,
    errors: &[String],
) -> anyhow::Result<mirror::audit::Entry> {
    let mut entry = mirror::audit::Entry::new(command, args, outcome);
    entry.details = details;
    if !errors.is_empty() {
        entry.error = Some(errors.join("\n"));
    }
    mirror::audit::append(shadow, &entry)?;
    Ok(entry)
}

/// Git runs hooks with `GIT_DIR`, `GIT_INDEX_FILE` (a temporary index during `commit -a`),
/// `GIT_WORK_TREE` and more set. None of them may steer mirror: its own repositories are always
/// addressed explicitly, and git programs it starts must not inherit them either. Returns
/// `$GIT_DIR`, which `mirror hooks install` honours.
fn clear_git_env() -> Option<PathBuf> {
    let git_dir = std::env::var_os("GIT_DIR").map(PathBuf::from);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let repository_local = matches!(
            k.as_ref(),
            "GIT_DIR"
                | "GIT_WORK_TREE"
                | "GIT_INDEX_FILE"
                | "GIT_PREFIX"
                | "GIT_COMMON_DIR"
                | "GIT_OBJECT_DIRECTORY"
                | "GIT_ALTERNATE_OBJECT_DIRECTORIES"
                | "GIT_NAMESPACE"
                | "GIT_QUARANTINE_PATH"
        );
        if repository_local {
            // Single-threaded here: nothing else reads the environment concurrently.
            std::env::remove_var(&key);
        }
    }
    git_dir
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
    open_project_at(ctx, &ctx.cwd)
}

/// [`open_project`] for the project around `dir`.
pub fn open_project_at(
    ctx: &Context,
    dir: &std::path::Path,
) -> anyhow::Result<(mirror::project::Project, mirror::store::Shadow)> {
    let project = mirror::project::Project::discover(dir)?;
    if project.config_from_shadow {
        eprintln!(
            "note: no mirror.yaml in {}; using shadow repository {}, which records this directory as its project root",
            project.root.display(),
            project.shadow_path().display()
        );
    }
    let mut project = project;
    project.keys = keys(ctx, project.config.identity_path(), &project.root);
    let shadow = project.open_shadow()?;
    alerts::target(ctx, &project, &shadow);
    Ok((project, shadow))
}

/// `--identity` relative to where mirror was started (before `-C`), as a shell user means it.
fn cwd_for_identity(path: &std::path::Path) -> PathBuf {
    std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_owned())
}

/// The identity lookup for this run: `--identity`, MIRROR_IDENTITY, mirror.yaml, default;
/// a passphrase-protected identity is unlocked once, asking on the terminal if need be.
pub fn keys(
    ctx: &Context,
    configured: Option<&std::path::Path>,
    root: &std::path::Path,
) -> mirror::crypt::Keys {
    mirror::crypt::Keys::resolve(ctx.identity.as_deref(), configured, root)
        .with_prompt(Box::new(|path| {
            use std::io::IsTerminal;
            if !std::io::stdin().is_terminal() && std::fs::File::open("/dev/tty").is_err() {
                anyhow::bail!(
                    "{} is passphrase-protected and there is no terminal to ask on: set MIRROR_PASSPHRASE",
                    path.display()
                );
            }
            let pass = rpassword::prompt_password(format!(
                "passphrase for the identity {}: ",
                path.display()
            ))
            .map_err(|e| anyhow::anyhow!("could not read the passphrase: {e}"))?;
            Ok(pass.into())
        }))
        .with_unlock_notice(Box::new(|path| {
            eprintln!("unlocking identity {}", path.display());
        }))
}

/// Take the shadow's writer lock, saying which stale ref locks of a killed process it removed.
pub fn lock_shadow(
    shadow: &mirror::store::Shadow,
    operation: &str,
) -> anyhow::Result<mirror::lock::ShadowLock> {
    let lock = mirror::lock::acquire(&shadow.path, operation)?;
    if let Some(holder) = &lock.previous_holder_gone {
        eprintln!(
            "note: took over the shadow lock; its last holder ({holder}) is gone without releasing it (killed?)"
        );
    }
    for path in &lock.removed_stale {
        eprintln!(
            "note: removed {}, left by a mirror process that was interrupted while updating it",
            path.display()
        );
    }
    Ok(lock)
}
