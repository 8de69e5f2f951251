//! Recording tiers as commits: scan, store changed files, write trees, commit, move the ref.
//!
//! Order matters for crash safety: blobs, trees, the commit and its metadata note are all
//! written before the tier ref moves (compare-and-swap against the value read at the start),
//! and the stat cache is saved last. A crash anywhere leaves unreferenced objects at worst.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use gix::bstr::{BString, ByteSlice};
use gix::ObjectId;

use crate::config::Tier;
use crate::crypt::{self, Encryptor, Keys};
use crate::ingest;
use crate::listing::{self, Counts, Item, Listing, Mode};
use crate::meta::{self, Mtimes};
use crate::progress::Progress;
use crate::project::Project;
use crate::statcache::{self, Cache, CacheEntry, Stat};
use crate::store::{hash_file, BlobWrite, Shadow};
use crate::walk::{self, Kind, Notice};

mod focused;

/// What to do when a tier directory is missing or has become empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyPolicy {
    /// Refuse: it is more likely an unmounted disk or a typo than a real deletion.
    Refuse,
    /// `--allow-empty`: record the empty state.
    Allow,
    /// Before a checkout: there is nothing on disk to protect, so record nothing.
    Skip,
}

pub struct Options {
    pub tiers: Vec<String>,
    pub message: Option<String>,
    pub trigger: String,
    pub empty: EmptyPolicy,
    /// More `Key: value` trailers for the commit message (e.g. `Mirror-Previous-Head`).
    pub trailers: Vec<(String, String)>,
    /// Per tier, the only paths to re-examine (from filesystem events, `mirror watch`);
    /// tiers not named are scanned whole.
    pub focus: std::collections::HashMap<String, Vec<BString>>,
}

/// The result of scanning a tier's directory against its previous state.
pub struct Scan {
    pub listing: Listing,
    pub mtimes: Mtimes,
    pub stats: Vec<(BString, Stat)>,
    pub files: u64,
    pub bytes: u64,
    pub unreadable: Vec<Notice>,
    /// The same paths as they are (a notice's path is for display).
    pub unreadable_paths: Vec<BString>,
    pub skipped: Vec<Notice>,
    pub scan_start_ns: i64,
    /// Every file's blob id came from the stat cache (no file was read).
    pub all_cached: bool,
    /// Things the scan worked around, e.g. a treasure it could not compare.
    pub warnings: Vec<String>,
    /// The treasure patterns' fingerprint, saved with the stat cache.
    pub treasures: u64,
    /// Temporary files of a killed checkout (tier-relative), for the next checkout to remove.
    pub leftovers: Vec<BString>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Recorded,
    Unchanged,
    /// Nothing recorded (missing or empty tier under [`EmptyPolicy::Skip`]).
    Nothing,
}

pub struct TierReport {
    pub tier: String,
    pub outcome: Outcome,
    /// The tier's commit after this operation (new, or the unchanged tip).
    pub commit: Option<ObjectId>,
    pub counts: Counts,
    pub files: u64,
    pub bytes: u64,
    pub unreadable: Vec<Notice>,
    pub skipped: Vec<Notice>,
    /// (deleted, previous file count) when more than half of the tier's files were deleted.
    pub mass_delete: Option<(u64, u64)>,
    /// Treasure files recorded (encrypted).
    pub critical: u64,
    pub warnings: Vec<String>,
    /// Temporary files of a killed checkout found in the tier (tier-relative).
    pub leftovers: Vec<BString>,
    /// What is on disk now (as scanned), for checkout to plan against.
    pub listing: Listing,
    pub mtimes: Mtimes,
}

/// The previous state of a tier: its tip and what it recorded.
pub struct Previous {
    pub tip: Option<ObjectId>,
    pub cache: Option<Cache>,
    /// The tip's listing and mtimes; built from the cache only when needed, because a
    /// no-change snapshot can be decided without it.
    state: std::cell::OnceCell<(Listing, Mtimes)>,
}

impl Previous {
    fn state(&self) -> &(Listing, Mtimes) {
        self.state.get_or_init(|| match &self.cache {
            Some(c) => (c.listing(), c.mtimes()),
            None => Default::default(),
        })
    }

    pub fn listing(&self) -> &Listing {
        &self.state().0
    }

    pub fn mtimes(&self) -> &Mtimes {
        &self.state().1
    }

    /// Every path recorded at the tip, in path order, with its item and (files and links)
    /// metadata: from the stat cache when it describes the tip, so no listing is built.
    fn recorded_entries(&self) -> Box<dyn Iterator<Item = Recorded<'_>> + '_> {
        if let Some(cache) = self.cache_of_tip() {
            return Box::new(cache.entries.iter().map(|(path, e)| Recorded {
                path,
                item: e.item,
                meta: e.item.mode.is_file().then(|| e.file_meta()),
            }));
        }
        let mut metas = self.mtimes().iter().peekable();
        Box::new(self.listing().iter().map(move |(path, item)| {
            // Metadata for paths not in the listing (a hand-made note) is skipped over.
            while metas.next_if(|(p, _)| *p < path).is_some() {}
            Recorded {
                path,
                item: *item,
                meta: metas.next_if(|(p, _)| *p == path).map(|(_, m)| *m),
            }
        }))
    }

    /// The recorded item and metadata of `rel` at the tip.
    fn recorded(&self, rel: &[u8]) -> Option<(Item, Option<meta::FileMeta>)> {
        match self.cache_of_tip() {
            Some(cache) => cache.entries.get(rel).map(|e| {
                let meta = e.item.mode.is_file().then(|| e.file_meta());
                (e.item, meta)
            }),
            None => self
                .listing()
                .get(rel)
                .map(|item| (*item, self.mtimes().get(rel).copied())),
        }
    }

    /// The stat cache, if it describes exactly the tip.
    fn cache_of_tip(&self) -> Option<&Cache> {
        self.cache
            .as_ref()
            .filter(|c| self.tip.is_some() && c.commit == self.tip)
    }
}

/// One path as the tip recorded it.
struct Recorded<'a> {
    path: &'a BString,
    item: Item,
    meta: Option<meta::FileMeta>,
}

/// What a scan changes against the tip.
struct Delta<'a> {
    /// Files and links added, modified, deleted (empty directories are not counted).
    counts: Counts,
    /// Directories whose trees and metadata must be rebuilt: above any path added, removed,
    /// or changed in content, mode or metadata.
    dirty: listing::Dirty<'a>,
    /// Nothing differs: no commit to write.
    same: bool,
}

/// Compare the scan with the tip in one pass over both, in path order.
fn delta<'a>(prev: &'a Previous, scan: &'a Scan) -> Delta<'a> {
    let mut out = Delta {
        counts: Counts::default(),
        dirty: listing::Dirty::new(),
        same: prev.tip.is_some(),
    };
    // The scan's metadata covers a subset of its listing's paths.
    let now = listing::merge_sorted(&scan.mtimes, &scan.listing)
        .filter_map(|(path, meta, item)| Some((path, (*item?, meta.copied()))));
    let before = prev.recorded_entries().map(|r| (r.path, (r.item, r.meta)));
    for (path, was, now) in listing::merge_sorted(before, now) {
        let items_differ = out.counts.count(
            was.as_ref().map(|(item, _)| item),
            now.as_ref().map(|(item, _)| item),
        );
        if items_differ || was.map(|(_, m)| m) != now.map(|(_, m)| m) {
            listing::mark_dirty(path, &mut out.dirty);
            out.same = false;
        }
    }
    out
}

pub fn cache_path(shadow: &Shadow, tier: &str) -> std::path::PathBuf {
    shadow.mirror_dir().join("cache").join(tier)
}

/// Load the tier's tip and listing, from the stat cache when it matches the tip.
pub fn previous(shadow: &Shadow, tier: &str) -> Result<Previous> {
    let tip = shadow.tier_tip(tier)?;
    // A corrupt cache only costs re-reading files, so it is dropped rather than fatal.
    let cache = Cache::load(&cache_path(shadow, tier))
        .ok()
        .flatten()
        .filter(|c| c.commit.is_some_and(|id| shadow.repo.has_object(id)));
    let state = std::cell::OnceCell::new();
    let cache_matches = cache
        .as_ref()
        .is_some_and(|c| tip.is_some() && c.commit == tip);
    match tip {
        Some(tip) if !cache_matches => {
            let tree = shadow.repo.find_commit(tip)?.tree_id()?.detach();
            let listing = listing::read_tree(shadow, tree)?;
            let mtimes = meta::read_note(shadow, tip)?.unwrap_or_default();
            let _ = state.set((listing, mtimes));
        }
        None => {
            let _ = state.set(Default::default());
        }
        Some(_) => {}
    }
    Ok(Previous { tip, cache, state })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Write new blobs into the shadow repository (snapshot).
    Write,
    /// Only compute blob ids (status, diff): the shadow repository is not modified.
    HashOnly,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Scan a tier directory; `None` when the directory does not exist.
pub fn scan(
    project: &Project,
    shadow: &Shadow,
    tier: &Tier,
    prev: &Previous,
    store: Store,
    progress: &dyn Progress,
) -> Result<Option<Scan>> {
    let scan_start_ns = now_ns();
    let Some(root) = project.tier_dir_under(&project.root, tier, false)? else {
        return Ok(None);
    };
    let filters = project.filters(tier)?;
    let mut walked = walk::walk(&root, &filters)
        .with_context(|| format!("tier '{}': could not walk {}", tier.name, root.display()))?;
    let dirs = std::mem::take(&mut walked.dirs);
    let (mut out, mut unreadable) = read_walked(
        project,
        shadow,
        tier,
        prev,
        store,
        &root,
        walked,
        scan_start_ns,
        progress,
    )?;

    // Unreadable paths keep their previously recorded version: a permission problem must not
    // look like a deletion in the history.
    for (path, _) in &unreadable {
        for (p, item) in prev.listing().range(path.clone()..) {
            // Everything below `path` starts with its bytes, so that range is contiguous.
            if !p.starts_with(path) {
                break;
            }
            if listing::in_scope(p, path) {
                out.listing.insert(p.clone(), *item);
                if let Some(m) = prev.mtimes().get(p) {
                    out.mtimes.insert(p.clone(), *m);
                }
            }
        }
    }

    // Empty directories: entered, but with nothing recorded below them.
    let mut occupied: HashSet<&[u8]> = HashSet::new();
    let mut busy: HashSet<&[u8]> = HashSet::new();
    for path in out.listing.keys() {
        mark_ancestors(path, &mut busy);
    }
    for (path, _) in &unreadable {
        busy.insert(path.as_slice());
        mark_ancestors(path, &mut busy);
    }
    let candidates: BTreeSet<&BString> = dirs
        .iter()
        .filter(|d| !busy.contains(d.as_slice()))
        .collect();
    for dir in &candidates {
        let mut p = dir.as_slice();
        while let Some(slash) = p.rfind_byte(b'/') {
            p = &p[..slash];
            occupied.insert(p);
        }
    }
    let empty_tree = ObjectId::empty_tree(gix::hash::Kind::Sha1);
    for dir in candidates {
        if !occupied.contains(dir.as_slice()) {
            out.listing.insert(
                dir.clone(),
                Item {
                    mode: Mode::EmptyDir,
                    oid: empty_tree,
                },
            );
        }
    }
    out.unreadable_paths = unreadable.iter().map(|(p, _)| p.clone()).collect();
    out.unreadable = notices(std::mem::take(&mut unreadable));
    Ok(Some(out))
}

/// Mark every directory above `path` in `set`: slices of the path itself, no allocation per
/// path (a tier has many files per directory, and most find their parent already marked).
fn mark_ancestors<'p>(path: &'p [u8], set: &mut HashSet<&'p [u8]>) {
    let mut p = path;
    while let Some(slash) = p.rfind_byte(b'/') {
        p = &p[..slash];
        if !set.insert(p) {
            break;
        }
    }
}

fn notices(unreadable: Vec<(BString, String)>) -> Vec<Notice> {
    unreadable
        .into_iter()
        .map(|(p, reason)| Notice {
            path: p.to_string(),
            reason,
        })
        .collect()
}

/// Read (or take from the stat cache) every file and link of `walked`, storing or hashing
/// them: the scan's listing and metadata of those files, and the paths that could not be
/// read (with why), which the caller settles. Directories are the caller's too.
#[allow(clippy::too_many_arguments)]
fn read_walked(
    project: &Project,
    shadow: &Shadow,
    tier: &Tier,
    prev: &Previous,
    store: Store,
    root: &Path,
    walked: walk::Walk,
    scan_start_ns: i64,
    progress: &dyn Progress,
) -> Result<(Scan, Vec<(BString, String)>)> {
    let treasures = project.config.treasures()?;
    let encryptor = project.config.encryptor();
    // A file the stat cache vouches for, under the same patterns, keeps its verdict: the
    // common no-change snapshot matches no pattern at all.
    let fingerprint = treasures.fingerprint(&tier.path);
    let verdicts_hold = prev
        .cache
        .as_ref()
        .is_some_and(|c| c.treasures == fingerprint);
    let treasure_walker = std::cell::RefCell::new(treasures.walker(&tier.path));
    let is_treasure = |e: &walk::WalkEntry, hit: Option<&CacheEntry>| {
        if e.kind == Kind::Link {
            return false;
        }
        match hit.filter(|_| verdicts_hold) {
            Some(hit) => hit.encrypted.is_some(),
            None => treasure_walker.borrow_mut().is_treasure(&e.rel),
        }
    };
    let hits = cache_hits(&walked.files, prev.cache.as_ref());
    if store == Store::Write && encryptor.is_none() {
        // Never a silent plaintext fallback: refuse before anything is written.
        let mut files = walked.files.iter().zip(&hits);
        if let Some((found, _)) = files.find(|(e, hit)| is_treasure(e, **hit)) {
            bail!(
                "treasures found but no encryption recipients; run `mirror init --encrypt` or set `treasures: []` in mirror.yaml (tier '{}': {} is a treasure)",
                tier.name,
                found.rel
            );
        }
    }
    let reader = EntryReader {
        shadow,
        root,
        store,
        encryptor: encryptor.as_ref(),
        keys: &project.keys,
        prev,
    };

    let mut out = Scan {
        listing: Listing::new(),
        mtimes: Mtimes::new(),
        stats: Vec::with_capacity(walked.files.len()),
        files: 0,
        bytes: 0,
        unreadable: Vec::new(),
        unreadable_paths: Vec::new(),
        skipped: walked.skipped,
        leftovers: walked.leftovers,
        scan_start_ns,
        all_cached: true,
        warnings: Vec::new(),
        treasures: fingerprint,
    };
    let mut unreadable: Vec<(BString, String)> = walked.unreadable;
    progress.begin(
        &format!("{}: reading", tier.name),
        walked.files.len() as u64,
    );
    // The walk is sorted by path, so the maps below are bulk-built from sorted vectors.
    let mut items = Vec::with_capacity(walked.files.len());
    let mut times = Vec::with_capacity(walked.files.len());
    let verdicts: Vec<(Option<&CacheEntry>, bool)> = walked
        .files
        .iter()
        .zip(&hits)
        .map(|(entry, &hit)| {
            let treasure = is_treasure(entry, hit);
            // A cached plaintext blob of a file that has since become a treasure (or the other
            // way round) does not count: it must be stored again, the right way.
            (hit.filter(|c| c.encrypted.is_some() == treasure), treasure)
        })
        .collect();
    // Many plain files to read (a first snapshot): on every core, into a pack, while this
    // thread reads the files that need the shadow itself (treasures, links).
    let mut stored: Vec<Option<ingest::Stored>> = Vec::new();
    let (plain, others): (Vec<usize>, Vec<usize>) = (0..walked.files.len())
        .filter(|&i| verdicts[i].0.is_none())
        .partition(|&i| !verdicts[i].1 && matches!(walked.files[i].kind, Kind::File { .. }));
    if store == Store::Write && plain.len() >= ingest::PARALLEL_MIN {
        shadow.begin_pack();
        let entries: Vec<&walk::WalkEntry> = plain.iter().map(|&i| &walked.files[i]).collect();
        let warnings = &mut out.warnings;
        let (theirs, mine) = ingest::store_files_while(shadow, root, &entries, progress, || {
            others
                .iter()
                .map(|&i| {
                    let read = reader.read(&walked.files[i], verdicts[i].1, warnings);
                    progress.advance(1);
                    read
                })
                .collect::<Result<Vec<_>>>()
        })?;
        stored.resize_with(walked.files.len(), || None);
        for (i, result) in plain
            .into_iter()
            .zip(theirs)
            .chain(others.into_iter().zip(mine))
        {
            stored[i] = Some(result);
        }
    }
    for (i, entry) in walked.files.into_iter().enumerate() {
        let (cached, treasure) = verdicts[i];
        let ready = stored.get_mut(i).and_then(Option::take);
        if ready.is_none() {
            progress.advance(1);
        }
        out.all_cached &= cached.is_some();
        let (item, stat) = match cached {
            Some(c) => (c.item, entry.stat),
            None => {
                match ready.map_or_else(|| reader.read(&entry, treasure, &mut out.warnings), Ok)? {
                    Ok(found) => found,
                    Err(problem) => {
                        unreadable.push((entry.rel, problem));
                        continue;
                    }
                }
            }
        };
        out.files += 1;
        out.bytes += stat.size;
        items.push((entry.rel.clone(), item));
        let mut file_meta = meta::FileMeta::from_stat(&stat);
        file_meta.encrypted = treasure.then_some(stat.size);
        times.push((entry.rel.clone(), file_meta));
        // The last use of the walk's path: moved, not copied.
        out.stats.push((entry.rel, stat));
    }
    out.listing = items.into_iter().collect();
    out.mtimes = times.into_iter().collect();
    progress.end();
    Ok((out, unreadable))
}

/// For each walked file (in path order), its stat cache entry if that proves it unchanged:
/// one merge of two sorted sequences, no hashing (or, for a few files against a large cache,
/// one lookup each).
fn cache_hits<'a>(
    files: &[walk::WalkEntry],
    cache: Option<&'a Cache>,
) -> Vec<Option<&'a CacheEntry>> {
    let Some(cache) = cache else {
        return vec![None; files.len()];
    };
    if files.len() < cache.entries.len() / 16 {
        return files
            .iter()
            .map(|f| cache.lookup(&f.rel, &f.stat))
            .collect();
    }
    let mut cached = cache.entries.iter().peekable();
    files
        .iter()
        .map(|file| {
            while cached
                .next_if(|(p, _)| p.as_slice() < file.rel.as_slice())
                .is_some()
            {}
            cached
                .next_if(|(p, _)| *p == &file.rel)
                .map(|(_, e)| e)
                .filter(|e| e.vouches_for(&file.stat))
        })
        .collect()
}

/// Reads files that the stat cache could not vouch for, and stores (or hashes) them.
struct EntryReader<'a> {
    shadow: &'a Shadow,
    /// The tier directory the walked paths are relative to.
    root: &'a Path,
    store: Store,
    encryptor: Option<&'a Encryptor>,
    keys: &'a Keys,
    prev: &'a Previous,
}

impl EntryReader<'_> {
    /// Read one file or link and store (or hash) it. The inner `Err` is a read problem to
    /// report. A treasure is stored as age ciphertext, unless its content is that of the
    /// recorded version, whose ciphertext is then kept (age output differs every time, so
    /// re-encrypting unchanged files would make a new snapshot out of nothing).
    fn read(
        &self,
        entry: &walk::WalkEntry,
        treasure: bool,
        warnings: &mut Vec<String>,
    ) -> Result<std::result::Result<(Item, Stat), String>> {
        let shadow = self.shadow;
        if entry.kind == Kind::Link {
            let target = match std::fs::read_link(entry.abs(self.root)) {
                Ok(t) => t,
                Err(e) => return Ok(Err(format!("could not read link: {e}"))),
            };
            let bytes = target.as_os_str().as_bytes();
            let oid = match self.store {
                Store::Write => shadow.write_blob(bytes)?,
                Store::HashOnly => {
                    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, bytes)?
                }
            };
            return Ok(Ok((
                Item {
                    mode: Mode::Link,
                    oid,
                },
                entry.stat,
            )));
        }
        let (mut file, stat, mode) = match ingest::open_regular(self.root, entry) {
            Ok(opened) => opened,
            Err(why) => return Ok(Err(why)),
        };
        let mut not_compared = None;
        // Only where timestamps have sub-second precision (a non-zero nanosecond part): with
        // whole seconds, a same-size edit in the snapshot's second leaves the stat identical.
        let fine_clock = stat.mtime_ns % 1_000_000_000 != 0;
        if treasure && self.store == Store::HashOnly && self.keys.is_withheld() && fine_clock {
            // A view that must not decrypt (the dashboard): stat data identical to the
            // snapshot's, nanoseconds included, counts as unchanged, even inside the racy
            // window where `status` decrypts to be sure. Otherwise a treasure saved just
            // before a snapshot would show as modified until the next one.
            let same = self
                .prev
                .cache
                .as_ref()
                .and_then(|c| c.same_stat(&entry.rel, &stat));
            if let Some(hit) = same {
                return Ok(Ok((hit.item, stat)));
            }
        }
        if treasure {
            let compared = self.same_as_recorded(&entry.rel, &mut file, stat.size);
            // Whatever the comparison read, the file is read again from its start.
            if let Err(e) = file.seek(std::io::SeekFrom::Start(0)) {
                return Ok(Err(format!("could not seek: {e}")));
            }
            match compared {
                Ok(Some(oid)) => return Ok(Ok((Item { mode, oid }, stat))),
                Ok(None) => {}
                Err(err) => not_compared = Some(err),
            }
        }
        let oid = match (self.store, treasure) {
            (Store::Write, _) => {
                let encrypt = if treasure {
                    // `scan` refuses treasures before reading anything when there are no
                    // recipients, so this is an invariant, reported rather than assumed.
                    Some(self.encryptor.context("no encryption recipients")?)
                } else {
                    None
                };
                match shadow.write_file_blob(file, stat.size, encrypt)? {
                    BlobWrite::Written { oid, .. } => oid,
                    BlobWrite::Unreadable(p) => return Ok(Err(p.0)),
                }
            }
            // No hash of a treasure's plaintext is ever computed for keeping: a changed
            // treasure is marked with the null id, which differs from every recorded blob.
            (Store::HashOnly, true) => ObjectId::null(gix::hash::Kind::Sha1),
            (Store::HashOnly, false) => match hash_file(file, stat.size)? {
                Ok(oid) => oid,
                Err(p) => return Ok(Err(p.0)),
            },
        };
        if let Some(err) = not_compared {
            warnings.push(format!(
                "{}: could not compare with the recorded version ({err:#}); {}",
                entry.rel,
                match self.store {
                    Store::Write => "stored a new encrypted copy",
                    Store::HashOnly => "counted as changed",
                }
            ));
        }
        Ok(Ok((Item { mode, oid }, stat)))
    }

    /// The recorded ciphertext blob of `rel`, if it decrypts to exactly the content of `file`.
    /// `None`: no comparable recorded version, or different. The caller rewinds `file`.
    fn same_as_recorded(&self, rel: &[u8], file: &mut File, size: u64) -> Result<Option<ObjectId>> {
        let Some((recorded, meta)) = self.prev.recorded(rel).filter(|(i, _)| i.mode.is_file())
        else {
            return Ok(None);
        };
        let comparable = match meta {
            Some(m) => m.encrypted == Some(size),
            // No metadata at all (a copy of the shadow without refs/notes/mirror): the age
            // header tells, as in checkout.
            None => self.shadow.blob_starts_with(&recorded.oid, crypt::MAGIC)?,
        };
        if !comparable {
            return Ok(None);
        }
        let (_, blob) = self.shadow.open_blob(&recorded.oid)?;
        let plain = self.keys.decrypt(crypt::buffered(blob))?;
        let same = crypt::same_stream(plain, (&*file).take(size + 1))
            .with_context(|| format!("blob {}", recorded.oid))?;
        Ok(same.then_some(recorded.oid))
    }
}

/// The committer and author of every mirror commit. Fixed, so no git identity is needed.
pub fn signature() -> gix::actor::Signature {
    let now = chrono::Local::now();
    gix::actor::Signature {
        name: "mirror".into(),
        email: format!("mirror@{}", crate::host::hostname()).into(),
        time: gix::date::Time {
            seconds: now.timestamp(),
            offset: now.offset().local_minus_utc(),
        },
    }
}

/// HEAD of the git repository containing the project root, if any.
fn source_head(root: &Path) -> Option<String> {
    let repo = gix::discover(root).ok()?;
    repo.workdir()?;
    repo.head_id().ok().map(|id| id.to_string())
}

/// Snapshot the selected tiers. One result per tier: a failing tier does not stop the others.
pub fn snapshot(
    project: &Project,
    shadow: &Shadow,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Vec<(String, Result<TierReport>)>> {
    snapshot_held(project, shadow, options, &mut Held::default(), progress)
}

/// Stat caches a long-running process (`mirror watch`) keeps between its snapshots: the
/// snapshot after an event then neither loads nor saves a whole cache. Each is used only
/// while it describes its tier's tip (another process may have taken a snapshot since).
#[derive(Default)]
pub struct Held {
    caches: std::collections::HashMap<String, Cache>,
    /// Per tier, the paths the last snapshot could not read: looked at again by every
    /// snapshot after events, so each one reports them (partial) until they are readable.
    unreadable: std::collections::HashMap<String, Vec<BString>>,
}

/// [`snapshot`], taking each tier's previous state from `held` when it is current, and
/// leaving there the state a focused snapshot ends with.
pub fn snapshot_held(
    project: &Project,
    shadow: &Shadow,
    options: &Options,
    held: &mut Held,
    progress: &dyn Progress,
) -> Result<Vec<(String, Result<TierReport>)>> {
    let tiers = project.config.select_tiers(&options.tiers)?;
    let sig = signature();
    let config_blob = match std::fs::read(project.config_path()) {
        Ok(bytes) => Some(crate::project::record_config(shadow, &bytes, &sig)?),
        Err(_) => None,
    };
    let context = CommitContext {
        trailers: options.trailers.clone(),
        trigger: options.trigger.clone(),
        message: options.message.clone(),
        host: crate::host::hostname(),
        source_head: source_head(&project.root),
        config_blob,
        signature: sig,
    };
    let mut results = Vec::new();
    for tier in &tiers {
        let focus = options.focus.get(&tier.name).map(Vec::as_slice);
        let result = snapshot_tier(
            project,
            shadow,
            tier,
            options.empty,
            focus,
            held,
            &context,
            progress,
        )
        .with_context(|| format!("tier '{}'", tier.name));
        // A tier that failed, or had nothing new, may have left packing started: its
        // buffered objects are unreferenced, and the next tier starts afresh.
        shadow.packer.abandon();
        results.push((tier.name.clone(), result));
    }
    Ok(results)
}

struct CommitContext {
    trailers: Vec<(String, String)>,
    trigger: String,
    message: Option<String>,
    host: String,
    source_head: Option<String>,
    config_blob: Option<ObjectId>,
    signature: gix::actor::Signature,
}

#[allow(clippy::too_many_arguments)]
fn snapshot_tier(
    project: &Project,
    shadow: &Shadow,
    tier: &Tier,
    empty: EmptyPolicy,
    focus: Option<&[BString]>,
    held: &mut Held,
    context: &CommitContext,
    progress: &dyn Progress,
) -> Result<TierReport> {
    let prev = match held.caches.remove(&tier.name) {
        Some(cache) => {
            let tip = shadow.tier_tip(&tier.name)?;
            if tip.is_some() && cache.commit == tip {
                Previous {
                    tip,
                    cache: Some(cache),
                    state: Default::default(),
                }
            } else {
                previous(shadow, &tier.name)?
            }
        }
        None => previous(shadow, &tier.name)?,
    };
    if let Some(focus) = focus.filter(|_| focused::applies(project, tier, &prev)) {
        let mut focus = focus.to_vec();
        focus.extend(held.unreadable.remove(&tier.name).unwrap_or_default());
        let (report, cache, unreadable) = focused::snapshot_tier(
            project, shadow, tier, prev, &focus, empty, context, progress,
        )?;
        held.caches.insert(tier.name.clone(), cache);
        held.unreadable.insert(tier.name.clone(), unreadable);
        return Ok(report);
    }
    let nothing = |commit| TierReport {
        tier: tier.name.clone(),
        outcome: Outcome::Nothing,
        commit,
        counts: Counts::default(),
        files: 0,
        bytes: 0,
        unreadable: Vec::new(),
        skipped: Vec::new(),
        mass_delete: None,
        critical: 0,
        warnings: Vec::new(),
        leftovers: Vec::new(),
        listing: Listing::new(),
        mtimes: Mtimes::new(),
    };
    let scan = match scan(project, shadow, tier, &prev, Store::Write, progress)? {
        Some(scan) => scan,
        None => match empty {
            EmptyPolicy::Skip => return Ok(nothing(prev.tip)),
            EmptyPolicy::Refuse => bail!(
                "tier directory {} is missing; not recording it as deleted (an unmounted disk or a typo?) — restore it, fix `path:` in mirror.yaml, or pass --allow-empty to record the deletion",
                project.tier_root(tier).display()
            ),
            EmptyPolicy::Allow => Scan {
                listing: Listing::new(),
                mtimes: Mtimes::new(),
                stats: Vec::new(),
                files: 0,
                bytes: 0,
                unreadable: Vec::new(),
                unreadable_paths: Vec::new(),
                skipped: Vec::new(),
                scan_start_ns: now_ns(),
                all_cached: false,
                warnings: Vec::new(),
                treasures: 0,
                leftovers: Vec::new(),
            },
        },
    };
    held.unreadable
        .insert(tier.name.clone(), scan.unreadable_paths.clone());
    if let Some(cache) = prev.cache_of_tip() {
        // Every file was a stat-cache hit and the paths are exactly the cached ones: nothing
        // changed, and the cache stays valid as it is. This is the common hook-driven case.
        // Every file's item came from its cache entry (`all_cached`), so only the empty
        // directories, found by the walk, need comparing.
        let same = scan.all_cached
            && scan.unreadable.is_empty()
            && scan.listing.len() == cache.entries.len()
            && scan
                .listing
                .iter()
                .filter(|(_, i)| i.mode == Mode::EmptyDir)
                .all(|(p, i)| cache.entries.get(p).is_some_and(|e| e.item == *i));
        if same {
            // Still the tip's: a long-running caller keeps it for its next snapshot.
            if let Some(cache) = prev.cache {
                held.caches.insert(tier.name.clone(), cache);
            }
            return Ok(TierReport {
                tier: tier.name.clone(),
                outcome: Outcome::Unchanged,
                commit: prev.tip,
                counts: Counts::default(),
                files: scan.files,
                bytes: scan.bytes,
                unreadable: Vec::new(),
                skipped: scan.skipped,
                mass_delete: None,
                critical: critical_count(&scan.mtimes),
                warnings: scan.warnings,
                leftovers: scan.leftovers,
                listing: scan.listing,
                mtimes: scan.mtimes,
            });
        }
    }
    let prev_files = prev
        .recorded_entries()
        .filter(|r| r.item.mode.is_file())
        .count() as u64;
    let has_files = scan.listing.values().any(|i| i.mode.is_file());
    if !has_files && prev_files > 0 {
        match empty {
            EmptyPolicy::Skip => return Ok(nothing(prev.tip)),
            EmptyPolicy::Refuse => bail!(
                "tier directory {} is empty but its last snapshot had {prev_files} files; not recording that as deleted — pass --allow-empty if the deletion is real",
                project.tier_root(tier).display()
            ),
            EmptyPolicy::Allow => {}
        }
    }
    let delta = delta(&prev, &scan);
    let counts = delta.counts;
    let mass_delete =
        (prev_files > 0 && counts.deleted * 2 > prev_files).then_some((counts.deleted, prev_files));

    let mut report = TierReport {
        tier: tier.name.clone(),
        outcome: Outcome::Unchanged,
        commit: prev.tip,
        counts,
        files: scan.files,
        bytes: scan.bytes,
        unreadable: scan.unreadable.clone(),
        skipped: scan.skipped.clone(),
        mass_delete,
        critical: critical_count(&scan.mtimes),
        warnings: scan.warnings.clone(),
        leftovers: scan.leftovers.clone(),
        listing: Listing::new(),
        mtimes: Mtimes::new(),
    };
    // With a stat cache of the tip, only what changed in it is saved (appended to its
    // journal). Without one, the whole cache is encoded on another core while the commit is
    // written (it is saved last, once the ref moved; only its commit id is filled in then).
    let journaled = prev.cache_of_tip().is_some();
    let (encoded, recorded) = std::thread::scope(|scope| {
        let encoding = (!journaled).then(|| scope.spawn(|| encode_cache(&scan)));
        let recorded = if delta.same {
            Ok(None)
        } else {
            record(shadow, tier, &prev, &scan, &delta.dirty, context, &report).map(Some)
        };
        (encoding.map(|e| e.join()), recorded)
    });
    if let Some(id) = recorded? {
        report.outcome = Outcome::Recorded;
        report.commit = Some(id);
    }
    match (encoded, prev.cache) {
        (Some(encoded), _) => {
            let encoded = encoded
                .map_err(|_| anyhow::anyhow!("internal error: encoding the stat cache failed"))?;
            save_cache(shadow, &tier.name, report.commit, encoded)?;
        }
        (None, Some(mut cache)) => {
            let change = cache_change(&cache, &scan);
            for path in &change.removals {
                cache.entries.remove(path);
            }
            for (path, entry) in &change.upserts {
                cache.entries.insert(path.clone(), entry.clone());
            }
            cache.commit = report.commit;
            cache.scan_start_ns = scan.scan_start_ns;
            cache.treasures = scan.treasures;
            cache.totals = None;
            cache.unvouched = None;
            cache.persist(&cache_path(shadow, &tier.name), prev.tip, &change)?;
            // A long-running caller keeps it for its next snapshot.
            held.caches.insert(tier.name.clone(), cache);
        }
        // `journaled` means there is a cache.
        (None, None) => {}
    }
    report.listing = scan.listing;
    report.mtimes = scan.mtimes;
    Ok(report)
}

fn critical_count(mtimes: &Mtimes) -> u64 {
    mtimes.values().filter(|m| m.encrypted.is_some()).count() as u64
}

/// Write the scan as the tier's next commit: trees (only above changes), the metadata blob,
/// the commit, flush, the note, then move the tier ref by compare-and-swap.
fn record(
    shadow: &Shadow,
    tier: &Tier,
    prev: &Previous,
    scan: &Scan,
    dirty: &listing::Dirty,
    context: &CommitContext,
    report: &TierReport,
) -> Result<ObjectId> {
    commit_tier(
        shadow,
        tier,
        prev.tip,
        dirty,
        context,
        report,
        |base, meta_base| {
            let tree = listing::write_tree_on(shadow, &scan.listing, base)?.id;
            let meta_tree = meta::write_tree(shadow, &scan.mtimes, meta_base)?;
            Ok((tree, meta_tree))
        },
    )
}

/// Write a tier's next commit on `tip`: `trees` writes the tier tree and the metadata tree
/// against the tip's (given as bases with the `dirty` directories), then the commit, flush,
/// the note, and the tier ref moves by compare-and-swap.
fn commit_tier(
    shadow: &Shadow,
    tier: &Tier,
    tip: Option<ObjectId>,
    dirty: &listing::Dirty,
    context: &CommitContext,
    report: &TierReport,
    trees: impl FnOnce(Option<listing::Base>, Option<listing::Base>) -> Result<(ObjectId, ObjectId)>,
) -> Result<ObjectId> {
    // Directories without a change keep the tip's trees, and their metadata: only the paths
    // that changed are rebuilt, whatever the size of the tier.
    let (base, meta_base) = match tip {
        Some(tip) => (
            Some(listing::Base {
                tree: shadow.repo.find_commit(tip)?.tree_id()?.detach(),
                dirty,
            }),
            meta::note_tree(shadow, tip)?.map(|tree| listing::Base { tree, dirty }),
        ),
        None => (None, None),
    };
    shadow.mark_format()?;
    // The trees, the commit and the note go into one small pack (if the files did not start
    // one already): three files to flush before the refs move, where as loose objects each
    // object and its directory would be flushed one by one (measured in docs/performance.md).
    if !shadow.packer.is_active() {
        shadow.begin_pack();
    }
    let (tree, meta_tree) = trees(base, meta_base)?;
    write_tier_commit(
        shadow,
        &tier.name,
        tip,
        (tree, meta_tree),
        commit_message(tier, context, report),
        &context.signature,
        &format!("mirror snapshot ({})", context.trigger),
    )
}

/// Write the commit of `trees` (the tier tree and its metadata tree) on `tip`, flush every
/// object, attach the metadata as the commit's note, then move the tier ref by
/// compare-and-swap (`reflog` says why).
pub(crate) fn write_tier_commit(
    shadow: &Shadow,
    tier: &str,
    tip: Option<ObjectId>,
    (tree, meta_tree): (ObjectId, ObjectId),
    message: String,
    signature: &gix::actor::Signature,
    reflog: &str,
) -> Result<ObjectId> {
    let id = shadow.write_commit(tree, tip, message, signature)?;
    let (note, notes_tip) = meta::stage_note(
        shadow,
        id,
        meta_tree,
        gix::objs::tree::EntryKind::Tree,
        signature,
    )?;
    // Every object durable before a ref moves.
    shadow.sync()?;
    // The note goes first: a crash before the tier ref moves leaves only a note on a
    // dangling commit, never a recorded commit without its metadata.
    shadow.update_ref(
        crate::store::NOTES_REF,
        note,
        notes_tip,
        &format!("mirror: {}", crate::store::NOTES_REF),
    )?;
    shadow.update_ref(&crate::store::tier_ref(tier), id, tip, reflog)?;
    Ok(id)
}

/// The stat cache of a scan (all but its commit, see [`statcache::seal`]).
fn encode_cache(scan: &Scan) -> Vec<u8> {
    statcache::encode_entries(
        scan.scan_start_ns,
        scan.treasures,
        scan.listing.len(),
        scan_entries(scan),
    )
}

/// What the stat cache of the tip must change to become the scan's: one pass over both.
fn cache_change(cache: &Cache, scan: &Scan) -> statcache::Change {
    let mut change = statcache::Change::default();
    for (path, was, now) in listing::merge_sorted(&cache.entries, scan_entries(scan)) {
        match (was, now) {
            (Some(was), Some(now)) if *was == now => {}
            (_, Some(now)) => change.upserts.push((path.clone(), now)),
            (Some(_), None) => change.removals.push(path.clone()),
            (None, None) => {}
        }
    }
    change
}

/// The scan as stat cache entries, in path order.
fn scan_entries(scan: &Scan) -> impl Iterator<Item = (&BString, CacheEntry)> {
    // The listing, the metadata and the stats are all sorted by path, and the latter two hold
    // subsets of the listing's paths: walk the three together instead of looking paths up.
    let mut metas = scan.mtimes.iter().peekable();
    let mut stats = scan.stats.iter().peekable();
    scan.listing.iter().map(move |(path, item)| {
        let meta = metas.next_if(|(p, _)| *p == path).map(|(_, m)| m);
        let stat = stats.next_if(|(p, _)| p == path).map(|(_, s)| *s);
        let stat = stat.unwrap_or_else(|| placeholder_stat(item, meta));
        let entry = CacheEntry {
            item: *item,
            stat,
            encrypted: meta.and_then(|m| m.encrypted),
            racy: statcache::is_racy(&stat, scan.scan_start_ns),
        };
        (path, entry)
    })
}

/// The stat cache's stand-in for the stat data of an entry that has none: carried forward
/// (the file could not be read) or an empty directory. It keeps the recorded metadata (mtime,
/// permissions); a zero size and inode never match a real file, so the path is looked at
/// again next time.
fn placeholder_stat(item: &Item, meta: Option<&meta::FileMeta>) -> Stat {
    let perm = meta
        .and_then(|m| m.perm)
        .unwrap_or(if item.mode == Mode::Exec {
            0o755
        } else {
            0o644
        });
    let kind = if item.mode == Mode::Link {
        0o120000
    } else {
        0o100000
    };
    Stat {
        mtime_ns: meta.map(|m| m.mtime_ns).unwrap_or_default(),
        mode: kind | perm,
        ..Stat::default()
    }
}

/// Save the stat cache `encoded` (by [`encode_cache`]) as describing `commit`.
fn save_cache(
    shadow: &Shadow,
    tier: &str,
    commit: Option<ObjectId>,
    mut encoded: Vec<u8>,
) -> Result<()> {
    statcache::seal(&mut encoded, commit);
    statcache::save_base(&cache_path(shadow, tier), &encoded).map(|_| ())
}

fn commit_message(tier: &Tier, context: &CommitContext, report: &TierReport) -> String {
    let mut msg = format!("snapshot {}: {}\n", tier.name, report.counts);
    if let Some(user) = &context.message {
        msg.push('\n');
        msg.push_str(user.trim_end());
        msg.push('\n');
    }
    if let Some((deleted, total)) = report.mass_delete {
        msg.push_str(&format!(
            "\nWARNING: this snapshot deletes {deleted} of {total} files (more than half).\n"
        ));
    }
    if !report.unreadable.is_empty() {
        msg.push_str("\nUnreadable (previous version kept where there was one):\n");
        for n in &report.unreadable {
            msg.push_str(&format!("  {}: {}\n", n.path.escape_debug(), n.reason));
        }
    }
    if !report.skipped.is_empty() {
        msg.push_str("\nSkipped:\n");
        for n in &report.skipped {
            msg.push_str(&format!("  {}: {}\n", n.path.escape_debug(), n.reason));
        }
    }
    msg.push('\n');
    msg.push_str(&format!("Mirror-Tier: {}\n", tier.name));
    msg.push_str(&format!("Mirror-Trigger: {}\n", context.trigger));
    msg.push_str(&format!("Mirror-Host: {}\n", context.host));
    msg.push_str(&format!("Mirror-Stats: {}\n", report.counts));
    msg.push_str(&format!("Mirror-Files: {}\n", report.files));
    msg.push_str(&format!("Mirror-Bytes: {}\n", report.bytes));
    if !report.unreadable.is_empty() {
        msg.push_str(&format!("Mirror-Partial: {}\n", report.unreadable.len()));
    }
    msg.push_str(&format!("Mirror-Critical: {}\n", report.critical));
    if let Some(head) = &context.source_head {
        msg.push_str(&format!("Mirror-Source-Head: {head}\n"));
    }
    if let Some(blob) = &context.config_blob {
        msg.push_str(&format!("Mirror-Config: {blob}\n"));
    }
    for (key, value) in &context.trailers {
        msg.push_str(&format!("{key}: {value}\n"));
    }
    msg.push_str(&format!(
        "Mirror-Format: {}\n",
        crate::store::FORMAT_VERSION
    ));
    msg
}
