//! Walking a tier: every file, dotfile and gitignored file, minus what must never be recorded.
//!
//! `ignore` is configured with all standard filters off (hidden files and .gitignore'd files
//! are included); only `.mirrorignore` files and the `exclude:` patterns of mirror.yaml
//! remove files. `.git` (directory or file, at any depth), the shadow repository and the roots
//! of nested tiers are pruned. Symlinks are reported as links and never followed. Special files
//! (fifos, sockets, devices) are reported as skipped; they are never opened, so a fifo cannot
//! block the walk.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gix::bstr::BString;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::statcache::Stat;

/// Name prefix of the temporary files checkout writes before renaming them into place.
pub const TEMP_PREFIX: &str = ".mirror-tmp-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File { executable: bool },
    Link,
}

#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// Relative to the tier root.
    pub rel: BString,
    pub abs: PathBuf,
    pub kind: Kind,
    pub stat: Stat,
}

/// A path that was left out, and why; always reported to the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Notice {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<WalkEntry>,
    /// Every directory below the tier root that was entered.
    pub dirs: Vec<BString>,
    /// Not regular files or links (fifo, socket, device): skipped with a warning.
    pub skipped: Vec<Notice>,
    /// Could not be read (permission denied, vanished): the snapshot becomes partial.
    pub unreadable: Vec<(BString, String)>,
}

/// What to leave out of every tier of a project.
pub struct Filters {
    excludes: Gitignore,
    /// Absolute paths pruned wherever they appear: the shadow repo, nested tier roots.
    pruned: HashSet<PathBuf>,
}

impl Filters {
    pub fn new(root: &Path, exclude: &[String], pruned: HashSet<PathBuf>) -> Result<Filters> {
        let mut builder = GitignoreBuilder::new(root);
        for pattern in exclude {
            builder
                .add_line(None, pattern)
                .with_context(|| format!("invalid exclude pattern '{pattern}' in mirror.yaml"))?;
        }
        let excludes = builder
            .build()
            .context("invalid exclude patterns in mirror.yaml")?;
        Ok(Filters { excludes, pruned })
    }

    fn keep(&self, path: &Path, is_dir: bool) -> bool {
        if path.file_name().is_some_and(|n| n == ".git") {
            return false;
        }
        if self.pruned.contains(path) {
            return false;
        }
        !self.excludes.matched(path, is_dir).is_ignore()
    }
}

/// Walk the tier rooted at `tier_root`.
pub fn walk(tier_root: &Path, filters: &Filters) -> Result<Walk> {
    let mut out = Walk::default();
    let mut builder = ignore::WalkBuilder::new(tier_root);
    builder
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .follow_links(false)
        .add_custom_ignore_filename(".mirrorignore");
    // SAFETY of the borrow: the closure must be 'static, so it gets its own copy of the filters.
    let excludes = filters.excludes.clone();
    let pruned = filters.pruned.clone();
    let own = Filters { excludes, pruned };
    builder.filter_entry(move |entry| {
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        entry.depth() == 0 || own.keep(entry.path(), is_dir)
    });
    let mut pending: Vec<(BString, PathBuf, bool)> = Vec::new();
    for result in builder.build() {
        let entry = match result {
            Ok(entry) => entry,
            Err(err) => {
                let path = error_path(&err).unwrap_or_else(|| tier_root.to_owned());
                out.unreadable
                    .push((rel_path(tier_root, &path), io_message(&err)));
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let rel = rel_path(tier_root, entry.path());
        let Some(file_type) = entry.file_type() else {
            out.unreadable
                .push((rel, "could not determine the file type".into()));
            continue;
        };
        if file_type.is_dir() {
            out.dirs.push(rel);
            continue;
        }
        let special = if file_type.is_fifo() {
            Some("fifo")
        } else if file_type.is_socket() {
            Some("socket")
        } else if file_type.is_block_device() {
            Some("block device")
        } else if file_type.is_char_device() {
            Some("character device")
        } else {
            None
        };
        if let Some(what) = special {
            out.skipped.push(Notice {
                path: rel.to_string(),
                reason: format!("{what} (not a regular file), skipped"),
            });
            continue;
        }
        if entry
            .file_name()
            .as_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            out.skipped.push(Notice {
                path: rel.to_string(),
                reason: "leftover temporary file of an interrupted mirror checkout, skipped".into(),
            });
            continue;
        }
        pending.push((rel, entry.path().to_owned(), file_type.is_symlink()));
    }
    // lstat dominates a no-change snapshot (path lookups in the kernel, CPU-bound on a warm
    // cache), so it runs on all cores; the walk itself stays sequential.
    let stats = parallel_lstat(&pending);
    for ((rel, abs, is_link), md) in pending.into_iter().zip(stats) {
        let md = match md {
            Ok(md) => md,
            Err(err) => {
                out.unreadable.push((rel, format!("stat failed: {err}")));
                continue;
            }
        };
        let kind = if is_link {
            Kind::Link
        } else {
            use std::os::unix::fs::PermissionsExt;
            Kind::File {
                executable: md.permissions().mode() & 0o111 != 0,
            }
        };
        out.files.push(WalkEntry {
            rel,
            abs,
            kind,
            stat: Stat::from_metadata(&md),
        });
    }
    Ok(out)
}

fn parallel_lstat(paths: &[(BString, PathBuf, bool)]) -> Vec<std::io::Result<std::fs::Metadata>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || paths.len() < 2048 {
        return paths.iter().map(|(_, p, _)| p.symlink_metadata()).collect();
    }
    let chunk = paths.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, p, _)| p.symlink_metadata())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic in lstat would be a bug in std; propagate it rather than hide it.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

pub fn rel_path(root: &Path, path: &Path) -> BString {
    let rel = path.strip_prefix(root).unwrap_or(path);
    BString::from(rel.as_os_str().as_bytes())
}

fn error_path(err: &ignore::Error) -> Option<PathBuf> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => Some(child.clone()),
        ignore::Error::Partial(errs) => errs.iter().find_map(error_path),
        _ => None,
    }
}

fn io_message(err: &ignore::Error) -> String {
    match err {
        ignore::Error::WithPath { err, .. }
        | ignore::Error::WithDepth { err, .. }
        | ignore::Error::WithLineNumber { err, .. } => io_message(err),
        other => other.to_string(),
    }
}
