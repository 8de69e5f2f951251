//! Installing mirror's git hooks into the project's repository.
//!
//! The hook scripts are the files in `hooks/` of this repository, compiled in. They go into
//! the hooks directory git really uses: `core.hooksPath` if set, else the common git dir's
//! `hooks/` (shared by linked worktrees). A hook that is already there is kept, renamed to
//! `<name>.mirror-chained`, and run first by mirror's hook, its exit status respected;
//! `uninstall` puts it back byte for byte.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const HOOKS: &[(&str, &str)] = &[
    ("pre-commit", include_str!("../hooks/pre-commit")),
    ("post-checkout", include_str!("../hooks/post-checkout")),
];

/// First line after the shebang of every hook mirror installs.
const MARK: &str = "# installed by `mirror hooks install`";
const CHAINED_SUFFIX: &str = ".mirror-chained";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    NotInstalled,
    /// Installed, running this original hook first.
    Installed {
        chained: bool,
    },
    /// Someone else's hook is there (mirror's is not).
    Foreign,
}

#[derive(Debug, serde::Serialize)]
pub struct HookStatus {
    pub name: String,
    pub path: PathBuf,
    pub state: State,
}

/// The hooks directory git uses for the repository holding `start` (or `git_dir`).
pub fn hooks_dir(start: &Path, git_dir: Option<&Path>) -> Result<PathBuf> {
    let repo = match git_dir {
        Some(dir) => {
            gix::open(dir).with_context(|| format!("{} is not a git repository", dir.display()))?
        }
        None => gix::discover(start).with_context(|| {
            format!(
                "{} is not inside a git repository — pass --git-dir DIR",
                start.display()
            )
        })?,
    };
    let config = repo.config_snapshot();
    if let Some(path) = config.trusted_path("core.hooksPath")? {
        // A relative core.hooksPath is relative to where hooks run: the work tree's top.
        let base = repo
            .workdir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| repo.git_dir().to_owned());
        return Ok(if path.is_absolute() {
            path
        } else {
            base.join(path)
        });
    }
    Ok(repo.common_dir().join("hooks"))
}

fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.lines().nth(1) == Some(MARK))
}

fn chained_path(hook: &Path) -> PathBuf {
    let mut name = hook.as_os_str().to_owned();
    name.push(CHAINED_SUFFIX);
    PathBuf::from(name)
}

/// The installed script: mirror's marker, then the chained original (if any), then the hook.
fn script(name: &str, body: &str) -> String {
    let body = body.strip_prefix("#!/bin/sh\n").unwrap_or(body);
    format!(
        "#!/bin/sh\n{MARK}\n# The hook that was here before runs first; its failure stops here, as it would have.\n\
         chained=\"$0{CHAINED_SUFFIX}\"\n\
         if [ -x \"$chained\" ]; then \"$chained\" \"$@\" || exit $?; fi\n\
         # mirror's {name} hook (hooks/{name} in mirror's source):\n{body}"
    )
}

pub fn status(dir: &Path) -> Vec<HookStatus> {
    HOOKS
        .iter()
        .map(|(name, _)| {
            let path = dir.join(name);
            let state = if is_ours(&path) {
                State::Installed {
                    chained: chained_path(&path).exists(),
                }
            } else if path.exists() {
                State::Foreign
            } else {
                State::NotInstalled
            };
            HookStatus {
                name: (*name).to_owned(),
                path,
                state,
            }
        })
        .collect()
}

/// Install both hooks; returns what changed (empty when they were already installed).
pub fn install(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut changed = Vec::new();
    for (name, body) in HOOKS {
        let path = dir.join(name);
        let wanted = script(name, body);
        if is_ours(&path) {
            if std::fs::read_to_string(&path)? != wanted {
                crate::store::write_atomically(&path, wanted.as_bytes())?;
                set_executable(&path)?;
                changed.push(format!("updated {}", path.display()));
            }
            continue;
        }
        if path.exists() || path.symlink_metadata().is_ok() {
            let chained = chained_path(&path);
            if chained.symlink_metadata().is_ok() {
                bail!(
                    "{} exists already; refusing to overwrite it — move it away and run `mirror hooks install` again",
                    chained.display()
                );
            }
            std::fs::rename(&path, &chained).with_context(|| {
                format!("could not keep {} as {}", path.display(), chained.display())
            })?;
            changed.push(format!(
                "kept the existing {name} hook as {}",
                chained.display()
            ));
        }
        crate::store::write_atomically(&path, wanted.as_bytes())?;
        set_executable(&path)?;
        changed.push(format!("installed {}", path.display()));
    }
    Ok(changed)
}

/// Remove mirror's hooks and put back what was there before, exactly.
pub fn uninstall(dir: &Path) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for (name, _) in HOOKS {
        let path = dir.join(name);
        if !is_ours(&path) {
            continue;
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("could not remove {}", path.display()))?;
        changed.push(format!("removed {}", path.display()));
        let chained = chained_path(&path);
        if chained.symlink_metadata().is_ok() {
            std::fs::rename(&chained, &path)
                .with_context(|| format!("could not restore {}", path.display()))?;
            changed.push(format!("restored the original {}", path.display()));
        }
    }
    Ok(changed)
}

fn set_executable(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("could not make {} executable", path.display()))
}
