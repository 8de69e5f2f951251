//! `mirror clone`: rebuild a project on a fresh machine from one of its remote mirrors.
//!
//! A new shadow repository receives every mirror ref of the remote; the project's
//! `mirror.yaml` comes back from the shadow's own history (`refs/mirror/config`), with only its
//! `shadow:` line changed to the new shadow; the caller then restores the tiers with an
//! ordinary checkout (which decrypts treasures with the identity, like any checkout).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{self, Config, CONFIG_FILE};
use crate::remote::{self, Location};
use crate::store::Shadow;

pub struct Cloned {
    pub root: PathBuf,
    pub shadow: PathBuf,
    pub config: Config,
}

/// The directory `git clone URL` would choose: the last path component without `.git`.
pub fn default_dir(url: &str) -> Option<PathBuf> {
    let trimmed = url.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty() && name != "." && name != "..").then(|| PathBuf::from(name))
}

/// Create `dir` (empty or new), a shadow for it (at `shadow`, else where `init` would put it),
/// fetch every mirror ref of `url` into the shadow, and write `dir/mirror.yaml`.
pub fn clone(url: &str, dir: &Path, shadow: Option<&Path>) -> Result<Cloned> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("could not read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} exists and is not empty; clone into a new or empty directory so nothing in it is overwritten",
                dir.display()
            );
        }
    }
    let created_dir = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let root = dir.canonicalize()?;
    let shadow_path = match shadow {
        Some(p) => p.to_owned(),
        None => crate::init::default_shadow(&root)?,
    };
    // The tier for HEAD is only known once the configuration has arrived; any name will do
    // until then.
    let shadow = match Shadow::create(&shadow_path, &root, "root") {
        Ok(shadow) => shadow,
        Err(err) => {
            if created_dir {
                let _ = std::fs::remove_dir(&root);
            }
            return Err(err);
        }
    };
    match fill(url, &root, shadow) {
        Ok(cloned) => Ok(cloned),
        Err(err) => {
            // Nothing half-made stays behind: the shadow is ours, created just now.
            let _ = std::fs::remove_dir_all(&shadow_path);
            let _ = std::fs::remove_file(root.join(CONFIG_FILE));
            if created_dir {
                // Made by this clone and empty again: like `git clone`, leave no trace.
                let _ = std::fs::remove_dir(&root);
            }
            Err(err)
        }
    }
}

fn fill(url: &str, root: &Path, shadow: Shadow) -> Result<Cloned> {
    let location = Location::parse(url, &std::env::current_dir()?);
    let mut args = vec![
        format!("--git-dir={}", shadow.path.display()),
        "fetch".into(),
        "--no-tags".into(),
        "--no-write-fetch-head".into(),
        location.git_url(),
    ];
    for pattern in remote::PUSHED_PATTERNS {
        args.push(format!("{pattern}*:{pattern}*"));
    }
    let out = remote::run_git(&args, remote::timeout())
        .with_context(|| format!("could not fetch from {url}"))?;
    if !out.success {
        bail!("could not fetch from {url}: {}", out.reason());
    }
    // A fresh handle: the refs and packs were written by git behind gix's back.
    let shadow = Shadow::open(&shadow.path)?;
    let (_, bytes) = crate::project::recorded_config(&shadow)?.with_context(|| {
        format!("{url} holds no recorded mirror.yaml (refs/mirror/config): is it a mirror shadow or a mirror push target?")
    })?;
    let text = String::from_utf8(bytes).context("the recorded mirror.yaml is not UTF-8")?;
    let shadow_abs = shadow.path.canonicalize()?;
    let shadow_yaml = serde_norway::to_string(&shadow_abs)
        .context("the shadow path cannot be written as YAML")?;
    let text = config::replace_top_level_block(&text, "shadow", &format!("shadow: {shadow_yaml}"));
    let config_path = root.join(CONFIG_FILE);
    let config = Config::parse(&text, &config_path)?;
    // The text edit must have produced exactly the new shadow (a crafted file could hide a
    // `shadow:` line inside a multi-line string).
    if config.shadow != shadow_abs {
        bail!(
            "the recorded mirror.yaml could not be rewritten safely (its `shadow:` is {} after the edit, not {}); nothing was restored",
            config.shadow.display(),
            shadow_abs.display()
        );
    }
    crate::store::point_head_at_tier(&shadow.repo, &config.tiers[0].name)?;
    crate::store::write_atomically(&config_path, text.as_bytes())?;
    crate::registry::register(root, &shadow_abs)?;
    Ok(Cloned {
        root: root.to_owned(),
        shadow: shadow_abs,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::default_dir;
    use std::path::PathBuf;

    #[test]
    fn default_dir_follows_git_clone() {
        assert_eq!(default_dir("/srv/proj.git"), Some(PathBuf::from("proj")));
        assert_eq!(
            default_dir("ssh://h/x/proj.git/"),
            Some(PathBuf::from("proj"))
        );
        assert_eq!(default_dir("me@host:proj"), Some(PathBuf::from("proj")));
        assert_eq!(default_dir("file:///a/b"), Some(PathBuf::from("b")));
        assert_eq!(default_dir("/"), None);
    }
}
