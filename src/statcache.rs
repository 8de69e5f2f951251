//! The stat cache: lets an unchanged file reuse its recorded blob id without being read.
//!
//! One file per tier, `SHADOW/mirror/cache/<tier>`, holding the listing of the commit it was
//! saved after plus each file's `lstat` data. It is only a cache: a missing, corrupt or foreign
//! file just means every file is read again.
//!
//! `mirror watch` does not rewrite that file after each snapshot: it appends what changed to
//! `SHADOW/mirror/cache/<tier>.journal` (records chained commit to commit, each checksummed;
//! replayed on load up to the first torn or foreign one), and the next full save removes it.
//!
//! Racy files: a timestamp only proves a file unchanged if it is older than the scan that read
//! the file by more than the filesystem's timestamp granularity; otherwise a rewrite within
//! the same tick keeps size and mtime. Such entries are never trusted (see [`Cache::lookup`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use gix::bstr::BString;
use gix::ObjectId;

use crate::listing::{Item, Listing, Mode};
use crate::meta::Mtimes;

const MAGIC: &[u8] = b"MIRRORSTAT3\n";
const JOURNAL_MAGIC: &[u8] = b"MIRRORJRNL1\n";
/// A journal is folded into a whole save once it is a quarter of the cache file and at
/// least this long: replaying is cheap, rewriting a large cache is not.
const JOURNAL_MIN: u64 = 64 * 1024;

/// Path → entry, in path order: a scan (itself in path order) is matched against it in one
/// pass, the snapshot after filesystem events looks up the ranges below the paths named, and
/// a change is applied in place.
pub type Entries = std::collections::BTreeMap<BString, CacheEntry>;

/// Coarsest timestamp granularity we allow for (ext3, HFS+: 1 s).
const RACY_WINDOW_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
}

impl Stat {
    pub fn from_raw(st: &rustix::fs::Stat) -> Stat {
        Stat {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64,
            ino: st.st_ino,
            mode: st.st_mode,
        }
    }

    pub fn from_metadata(md: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
            mode: md.mode(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub item: Item,
    pub stat: Stat,
    /// `Some(plaintext size)` when the blob is the file's age ciphertext. Kept apart from the
    /// stat size: an entry carried forward for an unreadable file has a made-up stat.
    pub encrypted: Option<u64>,
    /// The stat data was taken too close to the file's last change to prove anything (see
    /// the module doc): decided against the start of the scan that took it, when the entry is
    /// loaded or recorded, and never saved.
    pub racy: bool,
}

/// Is `stat` too recent, for a scan started at `scan_start_ns`, to vouch for the content
/// that scan read?
pub fn is_racy(stat: &Stat, scan_start_ns: i64) -> bool {
    let trusted_before = scan_start_ns - RACY_WINDOW_NS;
    stat.mtime_ns > trusted_before || stat.ctime_ns > trusted_before
}

impl CacheEntry {
    /// Can this entry never prove its file unchanged: a file or link carried forward
    /// unread (its stat data is made up) or recorded too close to a change (racy)?
    pub fn unvouched(&self) -> bool {
        self.item.mode != Mode::EmptyDir && (self.stat.ino == 0 || self.racy)
    }

    /// Does this entry prove a file with `stat` unchanged (same stat data, not racy)?
    pub fn vouches_for(&self, stat: &Stat) -> bool {
        !self.racy && self.stat == *stat
    }

    /// The metadata recorded for this file or link.
    pub fn file_meta(&self) -> crate::meta::FileMeta {
        let mut meta = crate::meta::FileMeta::from_stat(&self.stat);
        meta.encrypted = self.encrypted;
        meta
    }
}

#[derive(Debug, Clone, Default)]
pub struct Cache {
    /// The tier commit whose listing this is.
    pub commit: Option<ObjectId>,
    /// Wall-clock time (ns) when the scan that produced these stats started.
    pub scan_start_ns: i64,
    /// Fingerprint of the treasure patterns the `encrypted` flags were decided under
    /// ([`crate::treasure::Treasures::fingerprint`]): while it matches, a cache hit's flag is
    /// the file's treasure verdict, and no pattern needs matching.
    pub treasures: u64,
    pub entries: Entries,
    /// The file this cache was loaded from or saved to, which a journal extends: its
    /// checksum and size (`None`: not on disk as it is in memory).
    pub base: Option<(u32, u64)>,
    /// Bytes in the journal after the base.
    pub journal_len: u64,
    /// Counts over the entries, once computed (kept up to date by the snapshot after events).
    pub totals: Option<Totals>,
    /// The paths of the entries that cannot vouch for their file, once collected (kept up to
    /// date by the snapshot after events, which looks at them every time).
    pub unvouched: Option<std::collections::BTreeSet<BString>>,
}

/// Counts over a cache's files and links.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Files and links recorded.
    pub recorded: u64,
    /// Of those, the ones with real stat data (not carried forward unread), and their bytes.
    pub scanned: u64,
    pub bytes: u64,
    /// Files stored encrypted.
    pub critical: u64,
}

impl Totals {
    pub fn of(entries: &Entries) -> Totals {
        let mut totals = Totals::default();
        for entry in entries.values() {
            totals.add(entry, 1);
        }
        totals
    }

    /// Count `entry` in (`sign` 1) or out (`sign` -1).
    pub fn add(&mut self, entry: &CacheEntry, sign: i64) {
        if !entry.item.mode.is_file() {
            return;
        }
        let apply = |n: &mut u64, by: u64| {
            *n = if sign > 0 {
                n.saturating_add(by)
            } else {
                n.saturating_sub(by)
            }
        };
        apply(&mut self.recorded, 1);
        if entry.stat.ino != 0 {
            apply(&mut self.scanned, 1);
            apply(&mut self.bytes, entry.stat.size);
        }
        if entry.encrypted.is_some() {
            apply(&mut self.critical, 1);
        }
    }
}

/// What one snapshot changed in a cache, as appended to its journal.
#[derive(Debug, Default)]
pub struct Change {
    pub upserts: Vec<(BString, CacheEntry)>,
    pub removals: Vec<BString>,
}

/// The journal that extends the cache file at `path`.
pub fn journal_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    name.into()
}

impl Cache {
    /// The recorded entry for `path`, if its stat data is unchanged and not racy.
    pub fn lookup(&self, path: &[u8], stat: &Stat) -> Option<&CacheEntry> {
        self.entries.get(path).filter(|e| e.vouches_for(stat))
    }

    /// The recorded entry for `path` if its stat data is identical, racy or not: for views
    /// that may not read a file's content to decide (an encrypted treasure without keys).
    pub fn same_stat(&self, path: &[u8], stat: &Stat) -> Option<&CacheEntry> {
        self.entries.get(path).filter(|e| e.stat == *stat)
    }

    pub fn listing(&self) -> Listing {
        self.entries
            .iter()
            .map(|(p, e)| (p.clone(), e.item))
            .collect()
    }

    pub fn mtimes(&self) -> Mtimes {
        self.entries
            .iter()
            .filter(|(_, e)| e.item.mode.is_file())
            .map(|(p, e)| (p.clone(), e.file_meta()))
            .collect()
    }

    /// Load the cache file at `path` and replay its journal.
    pub fn load(path: &Path) -> Result<Option<Cache>> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        let mut cache =
            decode(&data).with_context(|| format!("stat cache {} is corrupt", path.display()))?;
        cache.base = Some((checksum_of(&data), data.len() as u64));
        // A journal that cannot be read only costs re-reading files: what it would have
        // added is simply not trusted.
        if let Ok(journal) = std::fs::read(journal_path(path)) {
            if !cache.replay(&journal) {
                // Records appended after a torn or foreign one would never be replayed: the
                // next change is saved whole instead, which removes this journal.
                cache.base = None;
            }
        }
        Ok(Some(cache))
    }

    /// Save the whole cache at `path` (replacing any journal).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let data = self.encode();
        self.base = Some(save_base(path, &data)?);
        self.journal_len = 0;
        Ok(())
    }

    /// Record `change`, which moved this cache from commit `from` to its current commit and
    /// scan: appended to the journal, or the whole cache saved once the journal has grown to
    /// a quarter of it (and past [`JOURNAL_MIN`]). Without a file on disk to extend, saved
    /// whole.
    pub fn persist(&mut self, path: &Path, from: Option<ObjectId>, change: &Change) -> Result<()> {
        let Some((sum, base_len)) = self.base else {
            return self.save(path);
        };
        // Another process may have saved the cache whole since (a snapshot from a hook):
        // a journal must extend the file that is there.
        if self.journal_len > (base_len / 4).max(JOURNAL_MIN) || base_sum(path) != Some(sum) {
            return self.save(path);
        }
        let record = self.journal_record(from, change);
        let journal = journal_path(path);
        let appended = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&journal)?;
            let mut out = Vec::with_capacity(record.len() + 32);
            if file.metadata()?.len() == 0 {
                out.extend_from_slice(JOURNAL_MAGIC);
                out.extend_from_slice(&sum.to_le_bytes());
            }
            out.extend_from_slice(&record);
            file.write_all(&out)?;
            self.journal_len += out.len() as u64;
            Ok(())
        })();
        match appended {
            Ok(()) => Ok(()),
            // The journal's tail may now be torn; a whole save replaces it.
            Err(_) => self.save(path),
        }
    }

    /// One journal record: `u32` payload length, the payload, its CRC-32. The payload:
    /// the commit before and after, the scan start, the treasure fingerprint, the upserted
    /// entries (as in the cache file) and the removed paths.
    fn journal_record(&self, from: Option<ObjectId>, change: &Change) -> Vec<u8> {
        let mut payload = Vec::with_capacity(64 + change.upserts.len() * 96);
        let id = |c: Option<ObjectId>| c.map(|c| c.as_bytes().to_vec()).unwrap_or(vec![0; 20]);
        payload.extend_from_slice(&id(from));
        payload.extend_from_slice(&id(self.commit));
        payload.extend_from_slice(&self.scan_start_ns.to_le_bytes());
        payload.extend_from_slice(&self.treasures.to_le_bytes());
        payload.extend_from_slice(&(change.upserts.len() as u64).to_le_bytes());
        for (path, entry) in &change.upserts {
            encode_entry(&mut payload, path, entry);
        }
        payload.extend_from_slice(&(change.removals.len() as u64).to_le_bytes());
        for path in &change.removals {
            payload.extend_from_slice(&(path.len() as u32).to_le_bytes());
            payload.extend_from_slice(path);
        }
        let mut out = Vec::with_capacity(payload.len() + 8);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out
    }

    /// Apply the journal's records that extend this cache, in order, up to the first that is
    /// torn, corrupt, or does not start from the commit reached so far. Whether the whole
    /// journal was applied.
    fn replay(&mut self, journal: &[u8]) -> bool {
        let Some(rest) = journal.strip_prefix(JOURNAL_MAGIC) else {
            return false;
        };
        let Some((sum, mut rest)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        if Some(u32::from_le_bytes(*sum)) != self.base.map(|b| b.0) {
            return false;
        }
        let mut applied = JOURNAL_MAGIC.len() + 4;
        while let Some(len) = rest.first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            let Some(record) = rest.get(4..4 + len + 4) else {
                break;
            };
            let (payload, sum) = record.split_at(len);
            if crc32fast::hash(payload).to_le_bytes() != sum || self.apply(payload).is_err() {
                break;
            }
            applied += 4 + len + 4;
            rest = &rest[4 + len + 4..];
        }
        self.journal_len = applied as u64;
        rest.is_empty()
    }

    /// Apply one journal record, or nothing if it does not extend this cache.
    fn apply(&mut self, payload: &[u8]) -> Result<()> {
        let mut r = Reader {
            data: payload,
            pos: 0,
        };
        let from = read_commit(&mut r)?;
        if from != self.commit {
            bail!("journal record does not extend the cache");
        }
        let to = read_commit(&mut r)?;
        let scan_start_ns = r.i64()?;
        let treasures = r.u64()?;
        let upserts = r.u64()?;
        let mut change = Change::default();
        for _ in 0..upserts.min(payload.len() as u64) {
            change.upserts.push(decode_entry(&mut r, scan_start_ns)?);
        }
        let removals = r.u64()?;
        for _ in 0..removals.min(payload.len() as u64) {
            let len = r.u32()? as usize;
            change.removals.push(BString::from(r.take(len)?));
        }
        // Decoded whole before anything is applied: a bad record changes nothing.
        for path in change.removals {
            self.entries.remove(&path);
        }
        self.entries.extend(change.upserts);
        self.totals = None;
        self.unvouched = None;
        self.commit = to;
        self.scan_start_ns = scan_start_ns;
        self.treasures = treasures;
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = encode_entries(
            self.scan_start_ns,
            self.treasures,
            self.entries.len(),
            self.entries.iter().map(|(p, e)| (p, e.clone())),
        );
        seal(&mut out, self.commit);
        out
    }
}

/// The cache file for `count` entries given in path order, all but the commit it describes:
/// the snapshot encodes it on another thread while the commit is being written, and
/// [`seal`]s it once the commit id is known.
pub fn encode_entries<'a>(
    scan_start_ns: i64,
    treasures: u64,
    count: usize,
    entries: impl Iterator<Item = (&'a BString, CacheEntry)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + count * 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0u8; 20]);
    out.extend_from_slice(&scan_start_ns.to_le_bytes());
    out.extend_from_slice(&treasures.to_le_bytes());
    out.extend_from_slice(&(count as u64).to_le_bytes());
    let mut written = 0usize;
    for (path, e) in entries {
        written += 1;
        encode_entry(&mut out, path, &e);
    }
    // The count promised must be the count written, or the file decodes as corrupt.
    debug_assert_eq!(written, count);
    let count_at = MAGIC.len() + 20 + 16;
    out[count_at..count_at + 8].copy_from_slice(&(written as u64).to_le_bytes());
    out
}

fn encode_entry(out: &mut Vec<u8>, path: &[u8], e: &CacheEntry) {
    out.extend_from_slice(&(path.len() as u32).to_le_bytes());
    out.extend_from_slice(path);
    out.push(e.item.mode.code());
    match e.encrypted {
        None => out.push(0),
        Some(size) => {
            out.push(1);
            out.extend_from_slice(&size.to_le_bytes());
        }
    }
    out.extend_from_slice(e.item.oid.as_bytes());
    out.extend_from_slice(&e.stat.size.to_le_bytes());
    out.extend_from_slice(&e.stat.mtime_ns.to_le_bytes());
    out.extend_from_slice(&e.stat.ctime_ns.to_le_bytes());
    out.extend_from_slice(&e.stat.ino.to_le_bytes());
    out.extend_from_slice(&e.stat.mode.to_le_bytes());
}

/// One entry as [`encode_entry`] wrote it, racy or not against `scan_start_ns`.
fn decode_entry(r: &mut Reader, scan_start_ns: i64) -> Result<(BString, CacheEntry)> {
    let len = r.u32()? as usize;
    let path = BString::from(r.take(len)?);
    let mode = Mode::from_code(r.take(1)?[0]).context("bad mode")?;
    let encrypted = match r.take(1)?[0] {
        0 => None,
        1 => Some(r.u64()?),
        _ => bail!("bad flag"),
    };
    let oid = ObjectId::from_bytes_or_panic(r.take(20)?);
    let stat = Stat {
        size: r.u64()?,
        mtime_ns: r.i64()?,
        ctime_ns: r.i64()?,
        ino: r.u64()?,
        mode: r.u32()?,
    };
    let entry = CacheEntry {
        item: Item { mode, oid },
        stat,
        encrypted,
        racy: is_racy(&stat, scan_start_ns),
    };
    Ok((path, entry))
}

fn read_commit(r: &mut Reader) -> Result<Option<ObjectId>> {
    let bytes = r.take(20)?;
    Ok((bytes != [0u8; 20]).then(|| ObjectId::from_bytes_or_panic(bytes)))
}

/// Complete [`encode_entries`]'s output: the commit it describes, then the checksum.
pub fn seal(out: &mut Vec<u8>, commit: Option<ObjectId>) {
    let at = MAGIC.len();
    out[at..at + 20].copy_from_slice(commit.as_ref().map(|c| c.as_bytes()).unwrap_or(&[0u8; 20]));
    // A checksum against torn or corrupted files, not against tampering.
    let sum = crc32fast::hash(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// The checksum at the end of the cache file at `path`, read without reading the file.
fn base_sum(path: &Path) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut sum = [0u8; 4];
    file.read_exact_at(&mut sum, len.checked_sub(4)?).ok()?;
    Some(u32::from_le_bytes(sum))
}

/// The checksum a sealed cache file ends with.
fn checksum_of(data: &[u8]) -> u32 {
    data.last_chunk::<4>().map_or(0, |s| u32::from_le_bytes(*s))
}

/// Write a sealed cache file at `path` and remove the journal that extended the one it
/// replaces; its checksum and size, for a journal to extend it.
pub fn save_base(path: &Path, data: &[u8]) -> Result<(u32, u64)> {
    // The cache directory may be deleted at any time (docs/format.md says so).
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    crate::store::write_cache_file(path, data)?;
    // A journal left behind (a failed removal) names the old file's checksum, so it is never
    // replayed onto this one; removing it is tidiness, not safety.
    match std::fs::remove_file(journal_path(path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("could not remove {}", journal_path(path).display()))
        }
    }
    Ok((checksum_of(data), data.len() as u64))
}

/// The decoder, for the property tests of untrusted input.
#[cfg(test)]
pub(crate) fn decode_for_fuzzing(data: &[u8]) -> Result<Cache> {
    decode(data)
}

fn decode(data: &[u8]) -> Result<Cache> {
    if data.len() < MAGIC.len() + 20 + 16 + 4 || !data.starts_with(MAGIC) {
        bail!("bad header");
    }
    let (body, sum) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != sum {
        bail!("checksum mismatch");
    }
    let mut r = Reader {
        data: body,
        pos: MAGIC.len(),
    };
    let commit = read_commit(&mut r)?;
    let scan_start_ns = r.i64()?;
    let treasures = r.u64()?;
    let count = r.u64()?;
    // A damaged count must not reserve gigabytes: each entry takes at least 57 bytes.
    let mut entries = Vec::with_capacity(count.min(data.len() as u64 / 57) as usize);
    for _ in 0..count {
        entries.push(decode_entry(&mut r, scan_start_ns)?);
    }
    // Saved in path order, so the map is built without sorting.
    let entries = Entries::from_iter(entries);
    Ok(Cache {
        commit,
        scan_start_ns,
        treasures,
        entries,
        base: None,
        journal_len: 0,
        totals: None,
        unvouched: None,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .context("truncated")?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(stat: Stat, scan_start_ns: i64) -> Cache {
        let mut entries = Entries::default();
        entries.insert(
            BString::from("f"),
            CacheEntry {
                item: Item {
                    mode: Mode::File,
                    oid: ObjectId::from_bytes_or_panic(&[7; 20]),
                },
                stat,
                encrypted: Some(77),
                racy: is_racy(&stat, scan_start_ns),
            },
        );
        Cache {
            commit: None,
            scan_start_ns,
            treasures: 42,
            entries,
            base: None,
            journal_len: 0,
            totals: None,
            unvouched: None,
        }
    }

    #[test]
    fn racy_entries_are_not_trusted() {
        let scan = 1_700_000_000_000_000_000;
        let stat = Stat {
            size: 5,
            mtime_ns: scan - 100,
            ctime_ns: scan - 100,
            ino: 1,
            mode: 0o100644,
        };
        // Modified within the same second as the scan: must be re-read.
        assert!(cache_with(stat, scan).lookup(b"f", &stat).is_none());
        // Old enough: trusted.
        let old = Stat {
            mtime_ns: scan - 2 * RACY_WINDOW_NS,
            ctime_ns: scan - 2 * RACY_WINDOW_NS,
            ..stat
        };
        assert!(cache_with(old, scan).lookup(b"f", &old).is_some());
        // Any stat difference: not trusted.
        let touched = Stat { ino: 2, ..old };
        assert!(cache_with(old, scan).lookup(b"f", &touched).is_none());
    }

    #[test]
    fn encode_decode_round_trip_and_corruption_detected() {
        let stat = Stat {
            size: 5,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: 3,
            mode: 4,
        };
        let cache = cache_with(stat, 99);
        let bytes = cache.encode();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.scan_start_ns, 99);
        assert_eq!(back.treasures, 42);
        assert_eq!(back.entries[&BString::from("f")].encrypted, Some(77));
        assert_eq!(back.entries["f".as_bytes()].stat, stat);
        let mut broken = bytes.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 1;
        assert!(decode(&broken).is_err());
    }

    fn entry(n: u8, mtime_ns: i64) -> CacheEntry {
        let stat = Stat {
            size: n as u64,
            mtime_ns,
            ctime_ns: mtime_ns,
            ino: 100 + n as u64,
            mode: 0o100644,
        };
        CacheEntry {
            item: Item {
                mode: Mode::File,
                oid: ObjectId::from_bytes_or_panic(&[n; 20]),
            },
            stat,
            encrypted: None,
            racy: false,
        }
    }

    fn commit(n: u8) -> Option<ObjectId> {
        Some(ObjectId::from_bytes_or_panic(&[n; 20]))
    }

    const NOW: i64 = 1_700_000_000_000_000_000;
    const OLD: i64 = NOW - 10 * RACY_WINDOW_NS;

    /// A saved cache of three old files at commit 1, and where it lives.
    fn saved() -> (tempfile::TempDir, std::path::PathBuf, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut cache = Cache {
            commit: commit(1),
            scan_start_ns: NOW,
            treasures: 7,
            ..Cache::default()
        };
        for n in 1..=3 {
            cache.entries.insert(format!("f{n}").into(), entry(n, OLD));
        }
        cache.save(&path).unwrap();
        (dir, path, cache)
    }

    /// Move `cache` to `to`, changing f2 (recently) and removing f3, and persist that.
    fn step(cache: &mut Cache, path: &Path, to: u8) -> Change {
        let from = cache.commit;
        let mut change = Change::default();
        let mut new = entry(20 + to, NOW + to as i64);
        new.racy = is_racy(&new.stat, NOW + 1);
        change.upserts.push(("f2".into(), new.clone()));
        change.removals.push("f3".into());
        cache.entries.insert("f2".into(), new);
        cache.entries.remove(&BString::from("f3"));
        cache.commit = commit(to);
        cache.scan_start_ns = NOW + 1;
        cache.persist(path, from, &change).unwrap();
        change
    }

    fn encode_whole(cache: &Cache) -> Vec<u8> {
        cache.encode()
    }

    fn same(a: &Cache, b: &Cache) {
        assert_eq!(a.commit, b.commit);
        assert_eq!(a.scan_start_ns, b.scan_start_ns);
        assert_eq!(a.treasures, b.treasures);
        assert_eq!(a.entries, b.entries);
    }

    #[test]
    fn journal_replays_onto_its_base_and_keeps_racy_entries_untrusted() {
        let (_dir, path, mut cache) = saved();
        step(&mut cache, &path, 2);
        assert!(journal_path(&path).exists(), "appended, not saved whole");
        let loaded = Cache::load(&path).unwrap().unwrap();
        same(&loaded, &cache);
        // The entry the journal brought was taken right at its scan: racy, never trusted.
        let f2 = &loaded.entries[&BString::from("f2")];
        assert!(f2.racy);
        assert!(loaded.lookup(b"f2", &f2.stat).is_none());
        // The base's old entries are trusted.
        let f1 = &loaded.entries[&BString::from("f1")];
        assert!(loaded.lookup(b"f1", &f1.stat).is_some());
    }

    #[test]
    fn a_torn_or_broken_journal_tail_is_not_replayed() {
        let (_dir, path, mut cache) = saved();
        let first = cache.clone();
        step(&mut cache, &path, 2);
        let after_one = cache.clone();
        step(&mut cache, &path, 3);
        let journal = std::fs::read(journal_path(&path)).unwrap();
        // Torn in the middle of the second record: the state after the first.
        std::fs::write(journal_path(&path), &journal[..journal.len() - 5]).unwrap();
        same(&Cache::load(&path).unwrap().unwrap(), &after_one);
        // The next change after a torn tail is saved whole, not appended after the tear.
        let mut torn = Cache::load(&path).unwrap().unwrap();
        assert_eq!(torn.base, None);
        step(&mut torn, &path, 4);
        assert!(!journal_path(&path).exists());
        same(&Cache::load(&path).unwrap().unwrap(), &torn);
        std::fs::write(journal_path(&path), &journal).unwrap();
        std::fs::write(&path, encode_whole(&first)).unwrap();
        // A flipped byte in the first record: nothing of the journal.
        let mut bad = journal.clone();
        bad[JOURNAL_MAGIC.len() + 4 + 4 + 30] ^= 1;
        std::fs::write(journal_path(&path), &bad).unwrap();
        same(&Cache::load(&path).unwrap().unwrap(), &first);
    }

    #[test]
    fn a_journal_of_another_base_or_commit_is_ignored() {
        let (_dir, path, mut cache) = saved();
        let first = cache.clone();
        step(&mut cache, &path, 2);
        let journal = std::fs::read(journal_path(&path)).unwrap();
        // A new base (a full snapshot) with the journal of the old one put back.
        let mut other = first.clone();
        other.treasures = 8;
        other.save(&path).unwrap();
        assert!(
            !journal_path(&path).exists(),
            "a whole save removes the journal"
        );
        std::fs::write(journal_path(&path), &journal).unwrap();
        same(&Cache::load(&path).unwrap().unwrap(), &other);
        // A cache held in memory while another process saved the file whole is saved whole
        // too, not appended to a journal of the file it no longer matches.
        std::fs::remove_file(journal_path(&path)).unwrap();
        let mut held = Cache::load(&path).unwrap().unwrap();
        assert!(held.base.is_some());
        let mut theirs = held.clone();
        theirs.treasures = 99;
        theirs.save(&path).unwrap();
        step(&mut held, &path, 6);
        assert!(!journal_path(&path).exists());
        same(&Cache::load(&path).unwrap().unwrap(), &held);
        // A record that does not start from the commit reached is where replay stops.
        let (_dir2, path2, mut cache2) = saved();
        let start = cache2.clone();
        let change = step(&mut cache2, &path2, 2);
        cache2.commit = commit(9);
        cache2.persist(&path2, commit(5), &change).unwrap();
        let loaded = Cache::load(&path2).unwrap().unwrap();
        assert_eq!(loaded.commit, commit(2));
        assert_ne!(loaded.entries, start.entries);
    }

    #[test]
    fn a_cache_directory_deleted_meanwhile_is_made_again() {
        let (dir, path, mut cache) = saved();
        std::fs::remove_dir_all(dir.path()).unwrap();
        step(&mut cache, &path, 2);
        same(&Cache::load(&path).unwrap().unwrap(), &cache);
    }

    #[test]
    fn a_long_journal_is_folded_into_a_whole_save() {
        let (_dir, path, mut cache) = saved();
        let mut saves = 0;
        for to in 2..40u8 {
            // Each step rewrites 400 entries: about 40 KB of journal.
            let from = cache.commit;
            let mut change = Change::default();
            for n in 0..400u32 {
                let mut e = entry(to, OLD);
                e.stat.ino = u64::from(n) + 1;
                change.upserts.push((format!("many/{n}").into(), e.clone()));
                cache.entries.insert(format!("many/{n}").into(), e);
            }
            cache.commit = commit(to);
            let base = cache.base;
            cache.persist(&path, from, &change).unwrap();
            saves += usize::from(cache.base != base);
            let journal = std::fs::metadata(journal_path(&path)).map_or(0, |m| m.len());
            assert_eq!(journal, cache.journal_len);
            assert!(journal <= JOURNAL_MIN + 64 * 1024, "journal {journal}");
            same(&Cache::load(&path).unwrap().unwrap(), &cache);
        }
        assert!(saves >= 5, "the journal was folded in {saves} times");
    }
}
