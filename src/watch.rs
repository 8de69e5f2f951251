//! Watching the tiers for changes (`mirror watch`): filesystem events (inotify through the
//! `notify` crate) are turned into the paths to re-examine, collected until the tree has been
//! quiet for a while, and handed to a focused snapshot (`snapshot::focused`).
//!
//! Events are hints, never the truth: a snapshot still compares with the stat cache, a lost
//! event is caught by the periodic full snapshot, and an overflowed event queue or a deleted and
//! recreated tier root makes the next snapshot scan whole tiers. When the kernel's watch limit
//! is reached, the watcher says so ([`Watcher::degraded`]) and the caller scans on a timer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::Result;
use gix::bstr::{BString, ByteSlice};
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::Watcher as _;

use crate::project::Project;

/// More distinct changed paths than this in one tier: re-examine their parent directories
/// instead (and the whole tier if even those are too many), so a burst costs one walk.
pub const FOCUS_MAX: usize = 1024;

/// What wakes the watch loop.
#[derive(Debug)]
pub enum Msg {
    Fs(notify::Result<notify::Event>),
    /// SIGINT or SIGTERM: stop after the current snapshot.
    Stop(i32),
}

/// One filesystem event, as the watch loop needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// These paths (absolute) may have changed; `removed`: they were deleted or renamed away
    /// (for a watched root, its watch went with it whatever is at that path now).
    Paths { paths: Vec<PathBuf>, removed: bool },
    /// Events were lost (queue overflow): everything must be looked at.
    Rescan,
    /// Nothing that changes content (a file opened or read).
    Nothing,
    /// The kernel's limit of watches was reached.
    LimitReached(String),
    /// Any other watcher error.
    Error(String),
}

pub fn classify(event: notify::Result<notify::Event>) -> Seen {
    let event = match event {
        Ok(e) => e,
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
            return Seen::LimitReached(e.to_string())
        }
        Err(e) => return Seen::Error(e.to_string()),
    };
    if event.need_rescan() {
        return Seen::Rescan;
    }
    let removed = matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
    );
    match event.kind {
        // Our own reads (and everyone else's) open files; only a closed writer is a change.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Seen::Paths {
            paths: event.paths,
            removed,
        },
        EventKind::Access(_) => Seen::Nothing,
        _ => Seen::Paths {
            paths: event.paths,
            removed,
        },
    }
}

/// The inotify watches over the tier roots.
pub struct Watcher {
    inner: Option<notify::RecommendedWatcher>,
    /// The outermost tier roots (nested tiers are covered by their parent's watch), with the
    /// identity (device, inode) of the directory last seen there, `None` while it is missing.
    roots: Vec<(PathBuf, Option<(u64, u64)>)>,
    /// Why events are not being received (the caller falls back to scanning on a timer).
    degraded: Option<String>,
}

impl Watcher {
    /// Watch every tier root of `project` (those that exist now; [`Watcher::check_roots`]
    /// picks up the others when they appear).
    pub fn start(project: &Project, tx: Sender<Msg>) -> Result<Watcher> {
        let mut roots: Vec<PathBuf> = project
            .config
            .tiers
            .iter()
            .map(|t| project.tier_root(t))
            .collect();
        roots.sort();
        // A root inside another is watched through the outer one.
        let mut outer: Vec<PathBuf> = Vec::new();
        for r in roots {
            if !outer.iter().any(|o| r.starts_with(o)) {
                outer.push(r);
            }
        }
        let mut watcher = Watcher {
            inner: None,
            roots: outer.into_iter().map(|r| (r, None)).collect(),
            degraded: None,
        };
        let sender = tx;
        let inner = notify::RecommendedWatcher::new(
            move |event| {
                // The loop may have ended; then nobody needs the event.
                let _ = sender.send(Msg::Fs(event));
            },
            // A symlinked directory is recorded as a link, never followed; so is its watch.
            notify::Config::default().with_follow_symlinks(false),
        );
        match inner {
            Ok(w) => watcher.inner = Some(w),
            Err(e) => watcher.degraded = Some(format!("filesystem events are unavailable: {e}")),
        }
        watcher.check_roots();
        Ok(watcher)
    }

    /// Why events are not available, if they are not.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// Stop using events (the watch limit was reached): every watch is dropped, which also
    /// gives the watches back to the rest of the system.
    pub fn degrade(&mut self, reason: String) {
        self.inner = None;
        self.degraded = Some(reason);
    }

    /// An event named `path`: if it is a watched root (deleted, moved away), its watch is
    /// gone with it, so the next [`Watcher::check_roots`] watches whatever is there then,
    /// even a new directory that reused the old one's inode number.
    pub fn forget_if_root(&mut self, path: &Path, removed: bool) -> bool {
        // Removed or renamed away, even if a new directory (maybe with the old inode number)
        // is already there.
        let gone = removed || path.symlink_metadata().map_or(true, |m| !m.is_dir());
        match self.roots.iter_mut().find(|(r, _)| r == path) {
            Some(root) if gone => {
                root.1 = None;
                true
            }
            _ => false,
        }
    }

    /// Re-watch roots that appeared or were replaced (deleted and recreated, moved) since
    /// they were watched. Returns the roots whose watch changed: everything below them may
    /// have changed unseen.
    pub fn check_roots(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for i in 0..self.roots.len() {
            // Without events the periodic full scans cover everything; nothing to re-watch.
            let Some(inner) = self.inner.as_mut() else {
                break;
            };
            let (root, seen) = self.roots[i].clone();
            let now = std::fs::metadata(&root)
                .ok()
                .filter(|m| m.is_dir())
                .map(|m| (m.dev(), m.ino()));
            if now == seen {
                continue;
            }
            changed.push(root.clone());
            self.roots[i].1 = now;
            // The old watch went with the old directory; a failure to remove it is expected.
            let _ = inner.unwatch(&root);
            if now.is_none() {
                continue;
            }
            match inner.watch(&root, notify::RecursiveMode::Recursive) {
                Ok(()) => {}
                // Vanished again while being watched: the next check sees it missing.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {
                    self.roots[i].1 = None;
                }
                Err(e) => {
                    let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
                    self.degrade(if limit {
                        format!(
                            "the kernel's limit of inotify watches was reached while watching {} ({e}); raise fs.inotify.max_user_watches",
                            root.display()
                        )
                    } else {
                        format!("could not watch {} ({e})", root.display())
                    });
                    break;
                }
            }
        }
        changed
    }
}

/// The tier an absolute path belongs to, and the path relative to that tier's root; `None`
/// for paths mirror never records (inside `.git`, the shadow repository, checkout's
/// temporary files) or outside every tier.
pub fn locate(project: &Project, shadow: &Path, path: &Path) -> Option<(String, BString)> {
    if path.starts_with(shadow) {
        return None;
    }
    let rel = path.strip_prefix(&project.root).ok()?;
    let in_git = rel
        .components()
        .any(|c| c.as_os_str().as_bytes() == b".git");
    // Checkout's temporary files are skipped by the walk, but a directory of that name is
    // not (nor anything below it): only the file itself is noise, as in the walk.
    let checkout_temp = rel.file_name().is_some_and(|n| {
        n.as_bytes()
            .starts_with(crate::walk::TEMP_PREFIX.as_bytes())
    }) && !path.symlink_metadata().is_ok_and(|m| m.is_dir());
    if in_git || checkout_temp {
        return None;
    }
    let (tier, in_tier) = project.tier_of(rel)?;
    Some((tier.name, BString::from(in_tier.as_os_str().as_bytes())))
}

/// What changed since the last snapshot, per tier.
#[derive(Debug, Default)]
pub struct Pending {
    tiers: BTreeMap<String, Focus>,
    first: Option<Instant>,
    last: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Focus {
    /// Scan the whole tier.
    Whole,
    /// Only these paths (relative to the tier root).
    Paths(BTreeSet<BString>),
}

impl Pending {
    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// `rel` in `tier` may have changed (an empty `rel` is the tier root: the whole tier).
    pub fn path(&mut self, tier: &str, rel: BString, now: Instant) {
        self.touch(now);
        let slot = self
            .tiers
            .entry(tier.to_owned())
            .or_insert_with(|| Focus::Paths(BTreeSet::new()));
        if rel.is_empty() {
            *slot = Focus::Whole;
        }
        if let Focus::Paths(paths) = slot {
            paths.insert(rel);
            if paths.len() > FOCUS_MAX * 4 {
                // Bound the memory of a long burst; `take` narrows it anyway.
                *slot = Focus::Whole;
            }
        }
    }

    /// Everything in `tier` may have changed.
    pub fn whole(&mut self, tier: &str, now: Instant) {
        self.touch(now);
        self.tiers.insert(tier.to_owned(), Focus::Whole);
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// When to snapshot: once nothing happened for `debounce`, but no later than `max_wait`
    /// after the first change (a tree that never goes quiet is still recorded).
    pub fn due(&self, debounce: Duration, max_wait: Duration) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + debounce).min(first + max_wait))
    }

    /// The tiers to snapshot and, per tier, the paths to re-examine (tiers scanned whole have
    /// no entry), minimal (no path inside another) and at most [`FOCUS_MAX`].
    pub fn take(&mut self) -> (Vec<String>, HashMap<String, Vec<BString>>) {
        self.first = None;
        self.last = None;
        let mut tiers = Vec::new();
        let mut focus = HashMap::new();
        for (tier, f) in std::mem::take(&mut self.tiers) {
            if let Focus::Paths(paths) = f {
                if let Some(paths) = narrow(paths) {
                    focus.insert(tier.clone(), paths);
                }
            }
            tiers.push(tier);
        }
        (tiers, focus)
    }
}

/// Minimal focus paths (none inside another), at most [`FOCUS_MAX`]: too many become their
/// parent directories. `None`: the whole tier.
fn narrow(paths: BTreeSet<BString>) -> Option<Vec<BString>> {
    // A changed `.mirrorignore` changes what its whole directory records.
    let mut paths: BTreeSet<BString> = paths
        .into_iter()
        .map(|p| {
            let name = p.rsplit_str("/").next().unwrap_or(&p[..]);
            if name == b".mirrorignore" {
                parent(&p)
            } else {
                p
            }
        })
        .collect();
    loop {
        if paths.iter().any(|p| p.is_empty()) {
            return None;
        }
        // Sorted, a path's descendants follow it, possibly after siblings like `a.txt` (which
        // sorts between `a` and `a/b`): compare with every kept ancestor candidate.
        let mut minimal: Vec<BString> = Vec::new();
        for p in paths.iter() {
            if !minimal.iter().any(|m| crate::listing::in_scope(p, m)) {
                minimal.push(p.clone());
            }
        }
        if minimal.len() <= FOCUS_MAX {
            return Some(minimal);
        }
        paths = minimal.iter().map(|p| parent(p)).collect();
    }
}

/// The directory holding `path` (the empty path: the tier root).
fn parent(path: &[u8]) -> BString {
    match path.rfind_byte(b'/') {
        Some(slash) => BString::from(&path[..slash]),
        None => BString::default(),
    }
}

/// How long to wait between full snapshots when events are not available.
pub fn fallback_period(interval: Duration) -> Duration {
    interval.min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> BString {
        BString::from(s)
    }

    #[test]
    fn focus_is_minimal_and_a_root_event_means_the_whole_tier() {
        let now = Instant::now();
        let mut p = Pending::default();
        for path in ["a/b/c.txt", "a/b", "a.txt", "a/bc", "z"] {
            p.path("t", b(path), now);
        }
        p.path("u", b("x"), now);
        p.path("u", b(""), now);
        let (tiers, focus) = p.take();
        assert_eq!(tiers, vec!["t".to_owned(), "u".to_owned()]);
        assert_eq!(focus["t"], vec![b("a.txt"), b("a/b"), b("a/bc"), b("z")]);
        assert!(!focus.contains_key("u"), "the tier root itself: whole tier");
        assert!(p.is_empty());
    }

    #[test]
    fn a_changed_mirrorignore_refocuses_on_its_directory() {
        let now = Instant::now();
        let mut p = Pending::default();
        p.path("t", b("d/.mirrorignore"), now);
        p.path("t", b("d/sub/x"), now);
        let (_, focus) = p.take();
        assert_eq!(focus["t"], vec![b("d")]);
        let mut p = Pending::default();
        p.path("t", b(".mirrorignore"), now);
        let (tiers, focus) = p.take();
        assert_eq!(tiers, vec!["t".to_owned()]);
        assert!(focus.is_empty(), "the root's .mirrorignore: the whole tier");
    }

    #[test]
    fn a_burst_narrows_to_parent_directories_then_the_whole_tier() {
        let now = Instant::now();
        let mut p = Pending::default();
        for i in 0..3000 {
            p.path("t", b(&format!("dir{}/file{i}", i % 3)), now);
        }
        let (_, focus) = p.take();
        assert_eq!(focus["t"], vec![b("dir0"), b("dir1"), b("dir2")]);
        let mut p = Pending::default();
        for i in 0..3000 {
            p.path("t", b(&format!("file{i}")), now);
        }
        let (tiers, focus) = p.take();
        assert_eq!(tiers, vec!["t".to_owned()]);
        assert!(focus.is_empty(), "3000 files at the root: the whole tier");
    }

    #[test]
    fn due_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        assert_eq!(p.due(Duration::from_secs(2), Duration::from_secs(60)), None);
        p.path("t", b("f"), t0);
        p.path("t", b("g"), t0 + Duration::from_secs(1));
        assert_eq!(
            p.due(Duration::from_secs(2), Duration::from_secs(60)),
            Some(t0 + Duration::from_secs(3))
        );
        p.path("t", b("h"), t0 + Duration::from_secs(59));
        assert_eq!(
            p.due(Duration::from_secs(2), Duration::from_secs(60)),
            Some(t0 + Duration::from_secs(60))
        );
    }

    #[test]
    fn reads_are_not_changes_but_finished_writes_are() {
        use notify::event::{AccessKind, AccessMode, CreateKind, Event, Flag};
        let open = Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)));
        assert_eq!(classify(Ok(open)), Seen::Nothing);
        let closed = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
            .add_path(PathBuf::from("/p/f"));
        assert_eq!(
            classify(Ok(closed)),
            Seen::Paths {
                paths: vec![PathBuf::from("/p/f")],
                removed: false
            }
        );
        let created = Event::new(EventKind::Create(CreateKind::File)).add_path("/p/g".into());
        assert_eq!(
            classify(Ok(created)),
            Seen::Paths {
                paths: vec![PathBuf::from("/p/g")],
                removed: false
            }
        );
        let gone = Event::new(EventKind::Remove(notify::event::RemoveKind::Folder))
            .add_path("/p/t".into());
        assert!(matches!(
            classify(Ok(gone)),
            Seen::Paths { removed: true, .. }
        ));
        let lost = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(classify(Ok(lost)), Seen::Rescan);
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert!(matches!(classify(Err(limit)), Seen::LimitReached(_)));
    }
}
