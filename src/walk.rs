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
    pub kind: Kind,
    pub stat: Stat,
}

impl WalkEntry {
    /// The entry's path, in the tier rooted at `root`. Built when a file is opened rather
    /// than kept for every entry: most are never opened (the stat cache vouches for them).
    pub fn abs(&self, root: &Path) -> PathBuf {
        root.join(std::ffi::OsStr::from_bytes(&self.rel))
    }
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
    /// Temporary files a killed `mirror checkout` left (also in `skipped`).
    pub leftovers: Vec<BString>,
}

/// Is `name` one of checkout's own temporary files (`.mirror-tmp-` and 16 hex digits)?
pub fn is_checkout_temp(name: &[u8]) -> bool {
    name.strip_prefix(TEMP_PREFIX.as_bytes())
        .is_some_and(|rest| rest.len() == 16 && rest.iter().all(u8::is_ascii_hexdigit))
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

    /// Is `path` (absolute, inside the tier rooted at `tier_root`) left out — by `exclude:`
    /// patterns, itself or through a directory between it and the tier root, or inside a
    /// `.git`? What the walk would prune, for the events of `mirror watch`; the tier root and
    /// the directories above it are never judged (the walk starts below them).
    pub fn excludes(&self, tier_root: &Path, path: &Path, is_dir: bool) -> bool {
        let Ok(rel) = path.strip_prefix(tier_root) else {
            return false;
        };
        let mut at = tier_root.to_path_buf();
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            at.push(part);
            let last = parts.peek().is_none();
            if !self.keep(&at, !last || is_dir) {
                return true;
            }
        }
        false
    }

    fn keep(&self, path: &Path, is_dir: bool) -> bool {
        if path.file_name().is_some_and(|n| n == ".git") {
            return false;
        }
        // Pruned paths (the shadow, nested tier roots) are directories; checking only
        // directories keeps a hash of every file path off the hot path.
        if is_dir && self.pruned.contains(path) {
            return false;
        }
        self.excludes.is_empty() || !self.excludes.matched(path, is_dir).is_ignore()
    }
}

/// Walk the tier rooted at `tier_root`, in parallel: directory reads and the `lstat` of every
/// entry (which dominate a no-change snapshot) run on all cores. The result is sorted by path,
/// so it does not depend on thread scheduling.
pub fn walk(tier_root: &Path, filters: &Filters) -> Result<Walk> {
    walk_focused(tier_root, filters, None)
}

/// Does `rel` (relative to the tier root) lie in a focus path, or is it a directory on the
/// way to one?
fn in_focus(focus: &[BString], rel: &[u8], is_dir: bool) -> bool {
    focus
        .iter()
        .any(|f| crate::listing::in_scope(rel, f) || (is_dir && crate::listing::in_scope(f, rel)))
}

/// [`walk`], visiting only the `focus` paths (relative to the tier root; files or whole
/// subtrees) and the directories leading to them, whose `.mirrorignore` files still apply.
/// The result holds the focus paths' entries only, plus those leading directories.
pub fn walk_focused(
    tier_root: &Path,
    filters: &Filters,
    focus: Option<&[BString]>,
) -> Result<Walk> {
    let focus: Option<Vec<BString>> = focus.map(<[BString]>::to_vec);
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
    // The filter closure must be 'static, so it gets its own copy of the filters.
    let own = Filters {
        excludes: filters.excludes.clone(),
        pruned: filters.pruned.clone(),
    };
    // `.GIT`, `git~1`, `.git.`...: on Linux these are ordinary names, but git refuses them
    // and on a case-insensitive, NTFS or HFS+ filesystem they *are* `.git`; never recorded
    // (checkout would refuse them), always reported.
    let root = tier_root.to_owned();
    let dotgit_variants = std::sync::Arc::new(std::sync::Mutex::new(Vec::<PathBuf>::new()));
    let seen = dotgit_variants.clone();
    builder.filter_entry(move |entry| {
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        let name = entry.file_name().as_bytes();
        if name != b".git" && crate::listing::is_dotgit_lookalike(name) {
            if let Ok(mut v) = seen.lock() {
                v.push(entry.path().to_owned());
            }
            return false;
        }
        if entry.depth() == 0 {
            return true;
        }
        if let Some(focus) = &focus {
            let rel = entry.path().strip_prefix(&root).unwrap_or(entry.path());
            if !in_focus(focus, rel.as_os_str().as_bytes(), is_dir) {
                return false;
            }
        }
        own.keep(entry.path(), is_dir)
    });
    let (tx, rx) = std::sync::mpsc::channel::<Walk>();
    builder.build_parallel().run(|| {
        let mut collector = Collector {
            root: tier_root,
            out: Walk::default(),
            tx: tx.clone(),
            dir: None,
        };
        Box::new(move |result| {
            collector.visit(result);
            ignore::WalkState::Continue
        })
    });
    drop(tx);
    let mut out = Walk::default();
    // A poisoned lock means a walker thread panicked; the panic itself is propagated by
    // `run`, so an empty list here can never hide anything.
    for path in dotgit_variants
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default()
    {
        out.skipped.push(Notice {
            path: rel_path(tier_root, &path).to_string(),
            reason: "a name some filesystems read as `.git` (git refuses such names), skipped"
                .into(),
        });
    }
    for part in rx {
        out.files.extend(part.files);
        out.dirs.extend(part.dirs);
        out.skipped.extend(part.skipped);
        out.leftovers.extend(part.leftovers);
        out.unreadable.extend(part.unreadable);
    }
    out.files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    out.dirs.sort_unstable();
    out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    out.unreadable.sort();
    Ok(out)
}

/// One walker thread's share of the results; sent back when the thread's visitor is dropped.
struct Collector<'a> {
    root: &'a Path,
    out: Walk,
    tx: std::sync::mpsc::Sender<Walk>,
    /// The directory of the previous entry, held open: `fstatat` relative to it spares the
    /// kernel the walk over every leading path component.
    dir: Option<(PathBuf, std::io::Result<std::os::fd::OwnedFd>)>,
}

impl Drop for Collector<'_> {
    fn drop(&mut self) {
        // The receiver lives until every visitor is gone, so this cannot fail.
        let _ = self.tx.send(std::mem::take(&mut self.out));
    }
}

impl Collector<'_> {
    fn visit(&mut self, result: Result<ignore::DirEntry, ignore::Error>) {
        let entry = match result {
            Ok(entry) => entry,
            Err(err) => {
                let path = error_path(&err).unwrap_or_else(|| self.root.to_owned());
                self.out
                    .unreadable
                    .push((rel_path(self.root, &path), io_message(&err)));
                return;
            }
        };
        if entry.depth() == 0 {
            return;
        }
        let rel = rel_path(self.root, entry.path());
        let Some(file_type) = entry.file_type() else {
            self.out
                .unreadable
                .push((rel, "could not determine the file type".into()));
            return;
        };
        if file_type.is_dir() {
            self.out.dirs.push(rel);
            return;
        }
        if entry.file_name() == ".mirrorignore" {
            self.check_ignore_file(entry.path(), &rel);
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
            self.out.skipped.push(Notice {
                path: rel.to_string(),
                reason: format!("{what} (not a regular file), skipped"),
            });
            return;
        }
        if entry
            .file_name()
            .as_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            self.out.skipped.push(Notice {
                path: rel.to_string(),
                reason: "leftover temporary file of an interrupted mirror checkout, skipped".into(),
            });
            if is_checkout_temp(entry.file_name().as_bytes())
                && entry.file_type().is_some_and(|t| t.is_file())
            {
                self.out.leftovers.push(rel.clone());
            }
            return;
        }
        let abs = entry.path();
        let stat = match self.lstat(abs) {
            Ok(stat) => stat,
            Err(err) => {
                self.out
                    .unreadable
                    .push((rel, format!("stat failed: {err}")));
                return;
            }
        };
        let kind = if file_type.is_symlink() {
            Kind::Link
        } else {
            Kind::File {
                executable: stat.mode & 0o111 != 0,
            }
        };
        self.out.files.push(WalkEntry { rel, kind, stat });
    }

    /// `ignore` drops a pattern it cannot parse without a word; say so, since the user
    /// expects that line to exclude something and it excludes nothing.
    fn check_ignore_file(&mut self, path: &Path, rel: &BString) {
        let dir = path.parent().unwrap_or(self.root);
        if let Some(err) = GitignoreBuilder::new(dir).add(path) {
            self.out.skipped.push(Notice {
                path: rel.to_string(),
                reason: format!("has a pattern that cannot be parsed and excludes nothing: {err}"),
            });
        }
    }

    fn lstat(&mut self, abs: &Path) -> std::io::Result<Stat> {
        use rustix::fs::{open, statat, AtFlags, Mode, OFlags};
        let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
            return abs.symlink_metadata().map(|m| Stat::from_metadata(&m));
        };
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            let fd = open(
                parent,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            );
            self.dir = Some((parent.to_owned(), fd.map_err(std::io::Error::from)));
        }
        match &self.dir {
            Some((_, Ok(fd))) => statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| Stat::from_raw(&st))
                .map_err(std::io::Error::from),
            _ => abs.symlink_metadata().map(|m| Stat::from_metadata(&m)),
        }
    }
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
