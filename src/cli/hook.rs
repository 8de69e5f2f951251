//! `mirror hook` — what the installed git hooks run.

use mirror::snapshot::{EmptyPolicy, Options, Outcome};

use super::output::short;
use super::{open_project, Context, Exit};

/// Run by the git hooks (see `mirror hooks install`); not usually typed by hand.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Snapshot every tier (trigger pre-commit). Quiet on success; a failure is loud but lets
    /// the commit proceed unless `hooks: {strict: true}` in mirror.yaml.
    PreCommit,
    /// Snapshot every tier after a branch checkout (trigger post-checkout) and report the
    /// critical files the checkout removed (restoring them with `hooks: {auto_restore: true}`).
    PostCheckout {
        /// The previous HEAD.
        previous: String,
        /// The new HEAD.
        new: String,
        /// 1 for a branch checkout, 0 for a file checkout (then only critical files are checked).
        flag: String,
    },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = match open_project(ctx) {
        Ok(found) => found,
        Err(err) => {
            // e.g. a new linked worktree: not the mirrored project. Never block git for it.
            eprintln!("mirror: no snapshot: {err}");
            return Ok(Exit::Ok);
        }
    };
    ctx.audit_into(&shadow);
    let strict = project.config.hooks.strict;
    let result = match args.command {
        Sub::PreCommit => snapshot(ctx, &project, &shadow, "pre-commit", Vec::new()),
        Sub::PostCheckout {
            previous,
            new,
            flag,
        } => post_checkout(ctx, &project, &shadow, &previous, &new, &flag),
    };
    match result {
        Ok(exit) => Ok(exit),
        Err(err) if !strict => {
            eprintln!("mirror: ******** THE SNAPSHOT FAILED — your work is NOT backed up ********");
            eprintln!("mirror: {err:#}");
            eprintln!("mirror: git goes on (set `hooks: {{strict: true}}` in mirror.yaml to block instead)");
            ctx.audit_error(format!("{err:#}"));
            Ok(Exit::Ok)
        }
        Err(err) => Err(err.context("mirror hook failed (hooks.strict is set, so git stops here)")),
    }
}

fn snapshot(
    ctx: &Context,
    project: &mirror::project::Project,
    shadow: &mirror::store::Shadow,
    trigger: &str,
    trailers: Vec<(String, String)>,
) -> anyhow::Result<Exit> {
    let _lock = super::lock_shadow(shadow, trigger)?;
    let options = Options {
        trailers,
        focus: Default::default(),
        tiers: Vec::new(),
        message: None,
        trigger: trigger.into(),
        empty: EmptyPolicy::Refuse,
    };
    let results = mirror::snapshot::snapshot(project, shadow, &options, &mirror::progress::Silent)?;
    let mut recorded = Vec::new();
    let mut problems = Vec::new();
    // Per tier what happened, for the audit trail, as `mirror snapshot` records it: an
    // unchanged tier was still checked (the dashboard's "last checked" comes from these).
    let outcomes: Vec<super::snapshot::TierJson> = results
        .iter()
        .map(|(tier, result)| super::snapshot::TierJson::new(tier, result))
        .collect();
    ctx.audit_detail("snapshot", serde_json::to_value(&outcomes)?);
    for (tier, result) in results {
        match result {
            Ok(r) => {
                for n in &r.unreadable {
                    problems.push(format!("{tier}: could not read {}: {}", n.path, n.reason));
                }
                if let (Outcome::Recorded, Some(id)) = (&r.outcome, &r.commit) {
                    recorded.push(format!("{tier} {}", short(id)));
                }
            }
            Err(err) => problems.push(format!("{err:#}")),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("\n"));
    }
    if !recorded.is_empty() && !ctx.quiet {
        eprintln!("mirror: recorded {}", recorded.join(", "));
    }
    if !recorded.is_empty() {
        super::gc::start_auto(&project.root, shadow);
    }
    Ok(Exit::Ok)
}

fn post_checkout(
    ctx: &Context,
    project: &mirror::project::Project,
    shadow: &mirror::store::Shadow,
    previous: &str,
    new: &str,
    flag: &str,
) -> anyhow::Result<Exit> {
    // The latest snapshots before this checkout: what the critical files are compared with.
    let missing = mirror::status::missing_critical(project, shadow)?;
    let auto = project.config.hooks.auto_restore;
    if !missing.is_empty() {
        eprintln!(
            "mirror: the checkout removed {} critical files:",
            missing.iter().map(|(_, _, p)| p.len()).sum::<usize>()
        );
        for (tier, commit, paths) in &missing {
            for p in paths {
                eprintln!("  {tier}: {p}");
            }
            if !auto {
                super::alerts::raise(
                    ctx,
                    "critical-missing",
                    format!(
                        "a git checkout removed {} critical file(s) of tier {tier}",
                        paths.len()
                    ),
                    Some(tier),
                    paths.clone(),
                );
                eprintln!(
                    "  restore them with: mirror restore --missing --tier {tier} --from {} -- {}",
                    commit.to_hex_with_len(12),
                    paths
                        .iter()
                        .map(|p| shell_quote(p))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        if auto {
            let _lock = super::lock_shadow(shadow, "restore")?;
            // Only the critical files: the checkout removed the others on purpose.
            for (tier, commit, paths) in &missing {
                let paths = paths.iter().map(std::path::PathBuf::from).collect();
                super::restore::restore_missing(
                    ctx,
                    project,
                    shadow,
                    &mirror::checkout::Request {
                        target: super::restore::target(Some(commit.to_string())),
                        tiers: vec![tier.clone()],
                        to: None,
                        paths,
                        force: false,
                        missing_only: true,
                        skip_encrypted: false,
                    },
                )?;
            }
            eprintln!("mirror: restored them (hooks.auto_restore is on)");
        }
    }
    let details = serde_json::json!({
        "previous_head": previous,
        "new_head": new,
        "branch_checkout": flag == "1",
        "missing_critical": missing.iter().map(|(t, c, p)| serde_json::json!({"tier": t, "from": c.to_string(), "paths": p})).collect::<Vec<_>>(),
        "auto_restored": auto && !missing.is_empty(),
    });
    // Set first: the snapshot adds its per-tier outcomes, even when it fails.
    ctx.audit_details(details);
    if flag != "1" {
        return Ok(Exit::Ok);
    }
    snapshot(
        ctx,
        project,
        shadow,
        "post-checkout",
        vec![("Mirror-Previous-Head".into(), previous.into())],
    )
}

/// Quote a path for a shell command line the user can paste.
fn shell_quote(path: &str) -> String {
    if path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        path.to_owned()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}
