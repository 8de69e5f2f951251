//! A small registry of project roots and their shadow repositories.
//!
//! `git clean -fdx` deletes an uncommitted mirror.yaml; without it a project would not know
//! where its backup is. `$XDG_DATA_HOME/mirror/projects` lists `root<TAB>shadow` lines so that
//! mirror can find the shadow of a directory that lost its mirror.yaml, custom `--shadow`
//! locations included. Shadows in the default location are also found by scanning it, so the
//! registry itself is not a single point of failure.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::store::Shadow;

/// `$XDG_DATA_HOME/mirror` (default `~/.local/share/mirror`).
pub fn data_dir() -> Result<PathBuf> {
    Ok(crate::host::xdg_dir("XDG_DATA_HOME", ".local/share")
        .context("no data directory for the shadow repository; use --shadow PATH")?
        .join("mirror"))
}

fn registry_file() -> Result<PathBuf> {
    Ok(data_dir()?.join("projects"))
}

fn read_entries() -> Result<Vec<(PathBuf, PathBuf)>> {
    let path = registry_file()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(r, s)| (PathBuf::from(r), PathBuf::from(s)))
        .collect())
}

/// Remember that `root`'s backup lives in `shadow`.
pub fn register(root: &Path, shadow: &Path) -> Result<()> {
    let path = registry_file()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let mut entries = read_entries()?;
    entries.retain(|(r, s)| !(r == root && s == shadow));
    entries.push((root.to_owned(), shadow.to_owned()));
    let mut text = String::new();
    for (r, s) in entries {
        text.push_str(&format!("{}\t{}\n", r.display(), s.display()));
    }
    crate::store::write_atomically(&path, text.as_bytes())
}

/// Find the shadow repository recording `root` as its project root: registry first,
/// then every repository in the default data directory. The newest registration wins.
pub fn find_shadow_for(root: &Path) -> Result<Option<PathBuf>> {
    let mut candidates: Vec<PathBuf> = read_entries()?
        .into_iter()
        .rev()
        .filter(|(r, _)| r == root)
        .map(|(_, s)| s)
        .collect();
    if let Ok(entries) = std::fs::read_dir(data_dir()?) {
        for entry in entries.flatten() {
            if entry.path().join("HEAD").is_file() {
                candidates.push(entry.path());
            }
        }
    }
    for candidate in candidates {
        if let Ok(shadow) = Shadow::open(&candidate) {
            if shadow.recorded_root().as_deref() == Some(root) {
                return Ok(Some(candidate));
            }
        }
    }
    Ok(None)
}
