//! A project: its root, its mirror.yaml and its shadow repository.
//!
//! The root is the nearest directory holding mirror.yaml, as git finds `.git`. When no
//! mirror.yaml is found (e.g. `git clean -fdx` removed it), the registry is asked for a shadow
//! repository recording the directory as its root, and the configuration is read back from the
//! shadow's `refs/mirror/config` history.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gix::ObjectId;

use crate::config::{self, Config, Tier, CONFIG_FILE};
use crate::error::Error;
use crate::store::{Shadow, CONFIG_REF};
use crate::walk::Filters;

pub struct Project {
    pub root: PathBuf,
    pub config: Config,
    /// Set when mirror.yaml was missing and the configuration came from the shadow repo.
    pub config_from_shadow: bool,
    /// The identities that decrypt treasure files, loaded on first use.
    pub keys: crate::crypt::Keys,
}

impl Project {
    pub fn discover(start: &Path) -> Result<Project> {
        let start = start
            .canonicalize()
            .with_context(|| format!("could not resolve {}", start.display()))?;
        if let Some(root) = config::find_root(&start) {
            let config = Config::load(&root.join(CONFIG_FILE))?;
            return Ok(Project::new(root, config, false));
        }
        for dir in start.ancestors() {
            if let Some(shadow_path) = crate::registry::find_shadow_for(dir)? {
                let shadow = Shadow::open(&shadow_path)?;
                let (_, bytes) = recorded_config(&shadow)?.with_context(|| {
                    format!(
                        "shadow {} has no recorded mirror.yaml",
                        shadow_path.display()
                    )
                })?;
                let text = String::from_utf8(bytes).context("recorded mirror.yaml is not UTF-8")?;
                let mut config = Config::parse(&text, &shadow_path.join(CONFIG_REF))?;
                // The recorded shadow path may be relative; we know where it really is.
                config.shadow = shadow_path;
                return Ok(Project::new(dir.to_owned(), config, true));
            }
        }
        Err(Error::NoProject { dir: start }.into())
    }

    fn new(root: PathBuf, config: Config, config_from_shadow: bool) -> Project {
        let keys = crate::crypt::Keys::resolve(None, config.identity_path(), &root);
        Project {
            root,
            config,
            config_from_shadow,
            keys,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    pub fn shadow_path(&self) -> PathBuf {
        if self.config.shadow.is_absolute() {
            self.config.shadow.clone()
        } else {
            self.root.join(&self.config.shadow)
        }
    }

    /// Open the shadow repository and check it belongs to this project.
    pub fn open_shadow(&self) -> Result<Shadow> {
        let shadow = Shadow::open(&self.shadow_path())?;
        shadow.check_root(&self.root)?;
        Ok(shadow)
    }

    pub fn tier_root(&self, tier: &Tier) -> PathBuf {
        if tier.path == "." {
            self.root.clone()
        } else {
            self.root.join(&tier.path)
        }
    }

    /// The tier's directory under `base` (the project root, or a `--to` directory), reached
    /// one component at a time without following any symlink: a symlink anywhere on the way
    /// (planted in the tree, or restored from a snapshot of another tier) could otherwise lead
    /// reads and writes outside the project. `Ok(None)`: it does not exist (and `create` is off).
    pub fn tier_dir_under(
        &self,
        base: &Path,
        tier: &Tier,
        create: bool,
    ) -> Result<Option<PathBuf>> {
        let mut dir = base.to_owned();
        if tier.path == "." {
            return Ok(Some(dir));
        }
        for part in tier.path.split('/') {
            dir.push(part);
            match dir.symlink_metadata() {
                Ok(md) if md.file_type().is_symlink() => anyhow::bail!(
                    "tier '{}': {} is a symlink; tier paths must be real directories (refusing to follow it)",
                    tier.name,
                    dir.display()
                ),
                Ok(md) if !md.is_dir() => anyhow::bail!("tier '{}': {} is not a directory", tier.name, dir.display()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => std::fs::create_dir(&dir)
                    .with_context(|| format!("tier '{}': could not create {}", tier.name, dir.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("tier '{}': could not stat {}", tier.name, dir.display())),
            }
        }
        Ok(Some(dir))
    }

    /// Filters for walking `tier`: the shadow repo and the roots of deeper tiers are pruned,
    /// so a file belongs only to the deepest tier containing it.
    pub fn filters(&self, tier: &Tier) -> Result<Filters> {
        let own = self.tier_root(tier);
        let mut pruned: HashSet<PathBuf> = self
            .config
            .tiers
            .iter()
            .map(|t| self.tier_root(t))
            .filter(|p| p != &own && p.starts_with(&own))
            .collect();
        let shadow = self.shadow_path();
        pruned.insert(shadow.canonicalize().unwrap_or(shadow));
        Filters::new(&self.root, &self.config.exclude, pruned)
    }

    /// The deepest tier containing `path` (relative to the root), with the path inside it.
    pub fn tier_of(&self, rel: &Path) -> Option<(Tier, PathBuf)> {
        self.config
            .tiers
            .iter()
            .filter_map(|t| {
                let inside = if t.path == "." {
                    Some(rel.to_owned())
                } else {
                    rel.strip_prefix(&t.path).ok().map(Path::to_owned)
                };
                inside.map(|p| (t.clone(), p))
            })
            .max_by_key(|(t, _)| if t.path == "." { 0 } else { t.path.len() + 1 })
    }
}

/// The newest recorded mirror.yaml: (blob id, content).
pub fn recorded_config(shadow: &Shadow) -> Result<Option<(ObjectId, Vec<u8>)>> {
    let Some(tip) = shadow.ref_target(CONFIG_REF)? else {
        return Ok(None);
    };
    let tree = shadow.repo.find_commit(tip)?.tree()?;
    let Some(entry) = tree.find_entry(CONFIG_FILE) else {
        return Ok(None);
    };
    let oid = entry.oid().to_owned();
    Ok(Some((oid, shadow.read_blob(&oid)?)))
}

/// Record mirror.yaml's current content on `refs/mirror/config` when it changed.
pub fn record_config(
    shadow: &Shadow,
    bytes: &[u8],
    signature: &gix::actor::Signature,
) -> Result<ObjectId> {
    let blob = shadow.write_blob(bytes)?;
    let previous = shadow.ref_target(CONFIG_REF)?;
    if let Some((old, _)) = recorded_config(shadow)? {
        if old == blob {
            return Ok(blob);
        }
    }
    let mut editor = shadow
        .repo
        .edit_tree(ObjectId::empty_tree(gix::hash::Kind::Sha1))?;
    editor.upsert(CONFIG_FILE, gix::objs::tree::EntryKind::Blob, blob)?;
    let tree = editor.write()?.detach();
    shadow.track(tree);
    shadow.append_commit(
        CONFIG_REF,
        previous,
        tree,
        "mirror.yaml\n".into(),
        signature,
    )?;
    Ok(blob)
}
