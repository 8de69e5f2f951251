//! `mirror init`

use std::path::PathBuf;

use anyhow::Context as _;

use mirror::error::Error;
use mirror::init::{InitOptions, InitOutcome};

use super::{Context, Exit};

/// Write mirror.yaml and create the shadow repository.
///
/// Tiers are detected (every top-level `tier-*` directory; else the root as tier `root`)
/// unless given with --tier. The shadow repository goes under $XDG_DATA_HOME/mirror/ unless
/// --shadow or MIRROR_SHADOW says otherwise. An existing mirror.yaml is left untouched.
#[derive(clap::Args)]
pub struct Args {
    /// A tier as NAME=PATH (repeatable); PATH is relative to the project root.
    #[arg(long = "tier", value_name = "NAME=PATH")]
    tiers: Vec<String>,

    /// Where to create the bare shadow repository.
    #[arg(long, env = "MIRROR_SHADOW", value_name = "PATH")]
    shadow: Option<PathBuf>,

    /// Encrypt treasure files: create an age identity if there is none (default
    /// $XDG_CONFIG_HOME/mirror/identity.txt) and write its recipient into mirror.yaml.
    /// On an existing project, adds the `encryption:` section if it has none.
    #[arg(long)]
    encrypt: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let mut tiers = Vec::new();
    for spec in &args.tiers {
        let (name, path) = spec.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "--tier '{spec}': expected NAME=PATH, e.g. --tier tier-0=tier-0"
            ))
        })?;
        tiers.push((name.to_owned(), path.to_owned()));
    }
    let recipients = if args.encrypt && !already_encrypted(ctx) {
        vec![identity_recipient(ctx)?]
    } else {
        Vec::new()
    };
    let outcome = mirror::init::init(
        &ctx.cwd,
        &InitOptions {
            tiers,
            shadow: args.shadow,
            recipients: recipients.clone(),
        },
    )?;
    // The new shadow's audit trail starts with its own creation; a re-run is recorded in the
    // project's shadow too, but only if that shadow is really this project's.
    match &outcome {
        InitOutcome::Created { shadow, .. } | InitOutcome::Retargeted { shadow, .. } => {
            ctx.audit_into(&mirror::store::Shadow::open(shadow)?);
            ctx.audit_details(
                serde_json::json!({ "root": ctx.cwd, "shadow": shadow, "created": true }),
            );
        }
        InitOutcome::Exists { .. } => {
            if let Ok(project) = mirror::project::Project::discover(&ctx.cwd) {
                if let Ok(shadow) = project.open_shadow() {
                    ctx.audit_into(&shadow);
                    ctx.audit_details(
                        serde_json::json!({ "root": project.root, "created": false }),
                    );
                }
            }
        }
    }
    match outcome {
        InitOutcome::Exists {
            config_path,
            encryption_added: true,
        } => {
            println!(
                "{}: added encryption to recipient {}",
                config_path.display(),
                recipients.join(", ")
            );
        }
        InitOutcome::Exists { config_path, .. } => {
            println!("{} already exists; nothing changed", config_path.display());
        }
        InitOutcome::Retargeted {
            config_path,
            shadow,
            old_shadow,
            ..
        } => {
            println!(
                "{}: its shadow {} belongs to another project root; this project now uses the new shadow repository {}",
                config_path.display(),
                old_shadow.display(),
                shadow.display()
            );
        }
        InitOutcome::Created {
            config,
            config_path,
            shadow,
        } => {
            if !ctx.quiet {
                println!("wrote {}", config_path.display());
                for tier in &config.tiers {
                    println!("  tier {:<16} {}", tier.name, tier.path);
                }
                println!("shadow repository: {}", shadow.display());
                if config.encryption.is_none() && !config.treasures.is_empty() {
                    println!("note: treasure files (treasures: in mirror.yaml) are only ever stored encrypted; `mirror init --encrypt` sets up a key, else snapshots of tiers holding one are refused");
                }
                println!("next: mirror snapshot");
            }
        }
    }
    Ok(Exit::Ok)
}

/// An existing mirror.yaml already has `encryption:`: `--encrypt` leaves it (and the keys)
/// alone rather than make an identity nobody encrypts to.
fn already_encrypted(ctx: &Context) -> bool {
    let Some(root) = mirror::config::find_root(&ctx.cwd) else {
        return false;
    };
    let has = mirror::config::Config::load(&root.join(mirror::config::CONFIG_FILE))
        .is_ok_and(|c| c.encryption.is_some());
    if has {
        eprintln!(
            "note: {} already has an `encryption:` section; it is left as it is (add recipients under encryption.recipients, then `mirror key rotate`)",
            root.join(mirror::config::CONFIG_FILE).display()
        );
    }
    has
}

/// The recipient of the identity `--encrypt` uses, creating the identity when it is missing.
fn identity_recipient(ctx: &Context) -> anyhow::Result<String> {
    let keys = super::keys(ctx, None, &ctx.cwd);
    let source = keys
        .source()
        .context("no identity path: set HOME, XDG_CONFIG_HOME or MIRROR_IDENTITY")?
        .clone();
    let recipient = if source.path.exists() {
        keys.recipients()?
            .first()
            .cloned()
            .with_context(|| format!("{} holds no age identity", source.path.display()))?
    } else {
        let recipient = mirror::crypt::generate_identity(&source.path)?;
        eprintln!("created identity {}", source.path.display());
        recipient
    };
    eprintln!(
        "warning: treasure files will be readable only with {} (or another identity listed in encryption.recipients); keep a copy somewhere safe — losing every identity makes encrypted files unrecoverable",
        source.path.display()
    );
    Ok(recipient)
}
