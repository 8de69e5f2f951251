//! `mirror key`

use std::path::PathBuf;

use anyhow::Context as _;

use super::output::short;
use super::{open_project, Context, Exit};

/// Manage the age identity that decrypts treasure files.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Create a new age X25519 identity (mode 0600, never overwriting a file) and print its
    /// recipient, to put under `encryption: recipients:` in mirror.yaml.
    Generate {
        /// Where to write it (default: $XDG_CONFIG_HOME/mirror/identity.txt).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the recipient (public key) of the configured identity.
    Show,
    /// Re-encrypt the treasure files of each tier's latest snapshot to the recipients now in
    /// mirror.yaml, as a new snapshot. Older snapshots keep their old encryption.
    Rotate {
        /// Only this tier (repeatable).
        #[arg(long = "tier", value_name = "NAME")]
        tiers: Vec<String>,
    },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    match args.command {
        Sub::Generate { out } => {
            let path = match out {
                Some(p) if p.is_absolute() => p,
                Some(p) => ctx.cwd.join(p),
                None => mirror::crypt::default_identity_path()?,
            };
            let recipient = mirror::crypt::generate_identity(&path)?;
            eprintln!(
                "wrote identity {} (keep a copy somewhere safe: without any identity, encrypted files are unrecoverable)",
                path.display()
            );
            println!("{recipient}");
            Ok(Exit::Ok)
        }
        Sub::Show => {
            // Outside a project, the identity is the flag, MIRROR_IDENTITY or the default.
            let keys = match mirror::project::Project::discover(&ctx.cwd) {
                Ok(project) => super::keys(ctx, project.config.identity_path(), &project.root),
                Err(_) => super::keys(ctx, None, &ctx.cwd),
            };
            let recipients = keys.recipients()?;
            if recipients.is_empty() {
                anyhow::bail!(
                    "{} holds no identity whose recipient can be derived",
                    keys.source()
                        .map(|s| s.path.display().to_string())
                        .unwrap_or_default()
                );
            }
            for r in recipients {
                println!("{r}");
            }
            Ok(Exit::Ok)
        }
        Sub::Rotate { tiers } => {
            let (project, shadow) = open_project(ctx)?;
            ctx.audit_into(&shadow);
            let _lock = super::lock_shadow(&shadow, "key rotate")?;
            let bar = super::progress::Bar::new(ctx.quiet);
            let results =
                mirror::rotate::rotate(&project, &shadow, &tiers, &bar).context("key rotation")?;
            let mut exit = Exit::Ok;
            let mut details = Vec::new();
            for (tier, result) in results {
                match result {
                    Ok(r) => {
                        for w in &r.warnings {
                            eprintln!("warning: {tier}: {w}");
                        }
                        match r.commit {
                            Some(id) if !ctx.quiet => println!(
                                "{tier}: re-encrypted {} files to {} recipients as {}",
                                r.files,
                                project.config.recipients().len(),
                                short(&id)
                            ),
                            None if !ctx.quiet => {
                                println!("{tier}: no encrypted files in the latest snapshot")
                            }
                            _ => {}
                        }
                        details.push(serde_json::json!({
                            "tier": tier,
                            "commit": r.commit.map(|c| c.to_string()),
                            "files": r.files,
                        }));
                    }
                    Err(err) => {
                        exit = Exit::Error;
                        eprintln!("error: {err:#}");
                        ctx.audit_error(format!("{err:#}"));
                        details
                            .push(serde_json::json!({ "tier": tier, "error": format!("{err:#}") }));
                    }
                }
            }
            ctx.audit_details(serde_json::json!({ "rotated": details }));
            Ok(exit)
        }
    }
}
