//! `mirror snapshot`

use mirror::snapshot::{EmptyPolicy, Options, Outcome};

use super::output::{bytes, json, short};
use super::{open_project, Context, Exit};

/// Record every tier (or the given ones) as a new commit in the shadow repository.
///
/// Exit status 3 when some files could not be read (everything else is recorded), 1 when a
/// tier failed (the other tiers are still recorded).
#[derive(clap::Args)]
pub struct Args {
    /// Only this tier (repeatable).
    #[arg(long = "tier", value_name = "NAME")]
    tiers: Vec<String>,

    /// A message stored with the snapshot.
    #[arg(short, long)]
    message: Option<String>,

    /// What started this snapshot (recorded as the Mirror-Trigger trailer).
    #[arg(long, default_value = "manual")]
    trigger: String,

    /// Record a missing or emptied tier directory as "everything deleted".
    #[arg(long)]
    allow_empty: bool,

    /// Print the result as JSON.
    #[arg(long)]
    json: bool,

    /// Also mark the result as a milestone tag NAME (as `mirror tag NAME`).
    #[arg(long, value_name = "NAME")]
    tag: Option<String>,
}

#[derive(serde::Serialize)]
pub struct TierJson {
    pub tier: String,
    pub outcome: Option<Outcome>,
    pub commit: Option<String>,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub files: u64,
    pub bytes: u64,
    pub unreadable: Vec<mirror::walk::Notice>,
    pub skipped: Vec<mirror::walk::Notice>,
    pub mass_delete: bool,
    /// Treasure files recorded (encrypted).
    pub critical: u64,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

impl TierJson {
    /// One tier's result as `mirror snapshot --json` prints it and the audit trail keeps it.
    pub fn new(tier: &str, result: &anyhow::Result<mirror::snapshot::TierReport>) -> TierJson {
        match result {
            Ok(r) => TierJson {
                tier: tier.to_owned(),
                outcome: Some(r.outcome.clone()),
                commit: r.commit.map(|c| c.to_string()),
                added: r.counts.added,
                modified: r.counts.modified,
                deleted: r.counts.deleted,
                files: r.files,
                bytes: r.bytes,
                unreadable: r.unreadable.clone(),
                skipped: r.skipped.clone(),
                mass_delete: r.mass_delete.is_some(),
                critical: r.critical,
                warnings: r.warnings.clone(),
                error: None,
            },
            Err(err) => TierJson {
                tier: tier.to_owned(),
                outcome: None,
                commit: None,
                added: 0,
                modified: 0,
                deleted: 0,
                files: 0,
                bytes: 0,
                unreadable: Vec::new(),
                skipped: Vec::new(),
                mass_delete: false,
                critical: 0,
                warnings: Vec::new(),
                error: Some(format!("{err:#}")),
            },
        }
    }
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    ctx.audit_into(&shadow);
    let _lock = super::lock_shadow(&shadow, "snapshot")?;
    if let Some(name) = &args.tag {
        // Refuse a bad or taken name before recording anything (under the lock, so no other
        // mirror can take the name in between).
        mirror::milestone::check_available(&shadow, name)?;
    }
    let options = Options {
        trailers: Vec::new(),
        focus: Default::default(),
        tiers: args.tiers,
        message: args.message,
        trigger: args.trigger,
        empty: if args.allow_empty {
            EmptyPolicy::Allow
        } else {
            EmptyPolicy::Refuse
        },
    };
    let bar = super::progress::Bar::new(ctx.quiet || args.json);
    let results = mirror::snapshot::snapshot(&project, &shadow, &options, &bar)?;
    let (mut exit, out) = report(ctx, results, !args.json && !ctx.quiet);
    if args.json {
        json(&out)?;
    }
    ctx.audit_details(serde_json::to_value(&out)?);
    let recorded = out.iter().any(|t| t.outcome == Some(Outcome::Recorded));
    if let (Some(name), Exit::Ok | Exit::Partial) = (args.tag, exit) {
        let request = mirror::milestone::Request {
            name,
            message: None,
            at: None,
        };
        let (tagged, tag_details) = super::tag::create(ctx, &project, &shadow, &request, &bar)?;
        ctx.audit_details(serde_json::json!({"snapshot": out, "tag": tag_details}));
        exit = exit.worst(tagged);
    }
    // After the tag, so the push carries it too; a push problem never fails the snapshot.
    if recorded && project.config.push.after_snapshot && !project.config.remotes.is_empty() {
        if let Err(err) = auto_push(ctx, &project, &shadow, args.json) {
            eprintln!("error: automatic push: {err:#}");
        }
    }
    if recorded {
        super::gc::start_auto(&project.root, &shadow);
    }
    Ok(exit)
}

/// `push: {after_snapshot: true}`: push to every remote. A failure is reported and audited (as
/// its own `push` entry) but does not fail the snapshot, which is recorded either way.
pub fn auto_push(
    ctx: &Context,
    project: &mirror::project::Project,
    shadow: &mirror::store::Shadow,
    quiet_stdout: bool,
) -> anyhow::Result<()> {
    let reports = super::push::push_all(project, shadow, &project.config.remotes)?;
    let exit = super::push::print_reports(ctx, &reports, quiet_stdout);
    let errors: Vec<String> = reports
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.remote)))
        .collect();
    if !errors.is_empty() {
        super::alerts::raise(
            ctx,
            "push-failed",
            format!("automatic push failed: {}", errors.join("; ")),
            None,
            Vec::new(),
        );
    }
    // A diverged remote fails the push too (exit 1) though it carries no error text.
    super::append_audit(
        shadow,
        "push",
        vec!["push".into(), "--after-snapshot".into()],
        exit.outcome(),
        serde_json::to_value(&reports)?,
        &errors,
    )?;
    Ok(())
}

/// Report each tier's result on stderr (warnings, errors) and, with `lines`, one stdout line
/// per tier; returns the overall exit status and the per-tier JSON (`--json`, audit details).
pub fn report(
    ctx: &Context,
    results: Vec<(String, anyhow::Result<mirror::snapshot::TierReport>)>,
    lines: bool,
) -> (Exit, Vec<TierJson>) {
    let mut exit = Exit::Ok;
    let mut out = Vec::new();
    for (tier, result) in results {
        match result {
            Ok(r) => {
                for n in &r.skipped {
                    eprintln!("warning: {tier}: {}: {}", n.path, n.reason);
                }
                for w in &r.warnings {
                    eprintln!("warning: {tier}: {w}");
                }
                for n in &r.unreadable {
                    eprintln!("error: {tier}: could not read {}: {}", n.path, n.reason);
                }
                if let Some((deleted, total)) = r.mass_delete {
                    eprintln!("WARNING: {tier}: this snapshot deletes {deleted} of {total} files (more than half); if that was a mistake, `mirror checkout tiers/{tier}~1` brings them back");
                }
                if !r.unreadable.is_empty() {
                    exit = exit.worst(Exit::Partial);
                    eprintln!("warning: {tier}: snapshot is partial: {} paths could not be read (listed above and in the commit message)", r.unreadable.len());
                }
                let id = r
                    .commit
                    .as_ref()
                    .map(short)
                    .unwrap_or_else(|| "-------".into());
                let critical = match r.critical {
                    0 => String::new(),
                    n => format!("  {n} critical"),
                };
                if lines {
                    match r.outcome {
                        Outcome::Recorded => println!(
                            "{tier:<16} {id}  {}  {} files  {}{critical}",
                            r.counts,
                            r.files,
                            bytes(r.bytes)
                        ),
                        Outcome::Unchanged => println!(
                            "{tier:<16} {id}  unchanged  {} files  {}{critical}",
                            r.files,
                            bytes(r.bytes)
                        ),
                        Outcome::Nothing => println!("{tier:<16} {id}  nothing to record"),
                    }
                }
                out.push(TierJson::new(&tier, &Ok(r)));
            }
            Err(err) => {
                exit = Exit::Error;
                eprintln!("error: {err:#}");
                ctx.audit_error(format!("{err:#}"));
                out.push(TierJson::new(&tier, &Err(err)));
            }
        }
    }
    (exit, out)
}
