//! `mirror init`: write mirror.yaml, create the shadow repository, register the project.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{self, Config, Tier, CONFIG_FILE, CONFIG_VERSION};
use crate::error::Error;
use crate::store::Shadow;

pub struct InitOptions {
    /// `--tier NAME=PATH`, in order.
    pub tiers: Vec<(String, String)>,
    /// `--shadow PATH` or `MIRROR_SHADOW`.
    pub shadow: Option<PathBuf>,
    /// `--encrypt`: the recipients to write under `encryption:` (the CLI makes the identity).
    pub recipients: Vec<String>,
}

pub enum InitOutcome {
    /// mirror.yaml already existed; nothing was changed but, with `--encrypt`, an
    /// `encryption:` section where there was none.
    Exists {
        config_path: PathBuf,
        encryption_added: bool,
    },
    Created {
        config: Config,
        config_path: PathBuf,
        shadow: PathBuf,
    },
    /// mirror.yaml existed but its shadow belongs to another project root (this directory is
    /// a copy) or is gone; `--shadow` gave this project a new shadow of its own.
    Retargeted {
        config: Config,
        config_path: PathBuf,
        shadow: PathBuf,
        old_shadow: PathBuf,
    },
}

/// An existing mirror.yaml is left alone, except in one case: its shadow repository records
/// another project root (a copied project) or does not exist, and `--shadow` was given. Then
/// the copy gets its own new shadow, and only the `shadow:` line changes — which is what the
/// foreign-root error tells the user to do.
fn retarget(root: &Path, config_path: &Path, options: &InitOptions) -> Result<InitOutcome> {
    let exists = || {
        Ok(InitOutcome::Exists {
            config_path: config_path.to_owned(),
            encryption_added: add_encryption(config_path, &options.recipients)?,
        })
    };
    let Some(new_shadow) = &options.shadow else {
        return exists();
    };
    let config = Config::load(config_path)?;
    let old_shadow = if config.shadow.is_absolute() {
        config.shadow.clone()
    } else {
        root.join(&config.shadow)
    };
    let foreign = match Shadow::open(&old_shadow) {
        Ok(shadow) => shadow.recorded_root().as_deref() != Some(root),
        Err(_) => !old_shadow.exists(),
    };
    if !foreign {
        return exists();
    }
    let new_shadow = if new_shadow.is_absolute() {
        new_shadow.clone()
    } else {
        root.join(new_shadow)
    };
    Shadow::create(&new_shadow, root, &config.tiers[0].name)?;
    let shadow = new_shadow.canonicalize()?;
    let config = Config {
        shadow: shadow.clone(),
        ..config
    };
    crate::store::write_atomically(config_path, config.to_yaml().as_bytes())?;
    crate::registry::register(root, &shadow)?;
    Ok(InitOutcome::Retargeted {
        config,
        config_path: config_path.to_owned(),
        shadow,
        old_shadow,
    })
}

pub fn init(root: &Path, options: &InitOptions) -> Result<InitOutcome> {
    let root = root
        .canonicalize()
        .with_context(|| format!("could not resolve {}", root.display()))?;
    let config_path = root.join(CONFIG_FILE);
    if config_path.exists() {
        return retarget(&root, &config_path, options);
    }
    let tiers = if options.tiers.is_empty() {
        detect_tiers(&root)?
    } else {
        explicit_tiers(&root, &options.tiers)?
    };
    let shadow = match &options.shadow {
        Some(p) if p.is_absolute() => p.clone(),
        // Relative to the directory mirror runs in (after -C), as a user typing it expects.
        Some(p) => root.join(p),
        None => default_shadow(&root)?,
    };
    let config = Config {
        version: CONFIG_VERSION,
        shadow: shadow.clone(),
        tiers,
        exclude: Vec::new(),
        treasures: crate::treasure::default_patterns(),
        encryption: (!options.recipients.is_empty()).then(|| config::Encryption {
            recipients: options.recipients.clone(),
            identity: None,
        }),
        hooks: Default::default(),
        remotes: Vec::new(),
        push: Default::default(),
        schedule: Default::default(),
        watch: Default::default(),
        alerts: Default::default(),
    };
    // Validate exactly as a later load would, before creating anything.
    Config::parse(&config.to_yaml(), &config_path)?;
    Shadow::create(&shadow, &root, &config.tiers[0].name)?;
    let shadow = shadow.canonicalize()?;
    let config = Config {
        shadow: shadow.clone(),
        ..config
    };
    crate::store::write_atomically(&config_path, config.to_yaml().as_bytes())?;
    crate::registry::register(&root, &shadow)?;
    Ok(InitOutcome::Created {
        config,
        config_path,
        shadow,
    })
}

/// Append an `encryption:` section to an existing mirror.yaml that has none, as text, so the
/// user's comments and layout stay. `false`: nothing to add, or it already has one.
fn add_encryption(config_path: &Path, recipients: &[String]) -> Result<bool> {
    if recipients.is_empty() {
        return Ok(false);
    }
    let config = Config::load(config_path)?;
    if config.encryption.is_some() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("could not read {}", config_path.display()))?;
    let mut block = "encryption:\n  recipients:\n".to_owned();
    for r in recipients {
        block.push_str(&format!("    - {r}\n"));
    }
    let text = config::replace_top_level_block(&text, "encryption", &block);
    // Validate exactly as a later load would before replacing the file.
    Config::parse(&text, config_path)?;
    crate::store::write_atomically(config_path, text.as_bytes())?;
    Ok(true)
}

/// Every top-level `tier-*` directory is a tier; without any, the root itself is tier `root`.
fn detect_tiers(root: &Path) -> Result<Vec<Tier>> {
    let mut tiers = Vec::new();
    for entry in
        std::fs::read_dir(root).with_context(|| format!("could not read {}", root.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("tier-")
            && entry.file_type()?.is_dir()
            && config::validate_tier_name(name).is_ok()
        {
            tiers.push(Tier {
                name: name.to_owned(),
                path: name.to_owned(),
            });
        }
    }
    tiers.sort_by(|a, b| a.name.cmp(&b.name));
    if tiers.is_empty() {
        tiers.push(Tier {
            name: "root".into(),
            path: ".".into(),
        });
    }
    Ok(tiers)
}

fn explicit_tiers(root: &Path, specs: &[(String, String)]) -> Result<Vec<Tier>> {
    specs
        .iter()
        .map(|(name, path)| {
            config::validate_tier_name(name).map_err(Error::Usage)?;
            let path = config::tier_path_from_arg(root, path).map_err(Error::Usage)?;
            Ok(Tier {
                name: name.clone(),
                path,
            })
        })
        .collect()
}

/// The last component of `path` with anything but ASCII letters, digits, `-` and `_` made
/// `_`: safe in a file name or a systemd unit name (`default` for `/`).
pub fn name_slug(path: &Path, default: &str) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| default.to_owned());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn default_shadow(root: &Path) -> Result<PathBuf> {
    let base = crate::registry::data_dir()?;
    let clean = name_slug(root, "project");
    Ok(base.join(format!("{clean}-{:08x}.git", rand::random::<u32>())))
}
