//! The stat cache: lets an unchanged file reuse its recorded blob id without being read.
//!
//! One file per tier, `SHADOW/mirror/cache/<tier>`, holding the listing of the commit it was
//! saved after plus each file's `lstat` data. It is only a cache: a missing, corrupt or foreign
//! file just means every file is read again.
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

/// Path → entry, in path order (as saved, so the listing of the tip is rebuilt without a
/// sort). foldhash rather than SipHash: the keys are our own file names, and this map is
/// probed once per file on every snapshot.
pub type Entries = indexmap::IndexMap<BString, CacheEntry, foldhash::fast::RandomState>;

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

#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub item: Item,
    pub stat: Stat,
    /// `Some(plaintext size)` when the blob is the file's age ciphertext. Kept apart from the
    /// stat size: an entry carried forward for an unreadable file has a made-up stat.
    pub encrypted: Option<u64>,
}

impl CacheEntry {
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
}

impl Cache {
    /// The recorded entry for `path`, if its stat data is unchanged and not racy.
    pub fn lookup(&self, path: &[u8], stat: &Stat) -> Option<&CacheEntry> {
        let entry = self.entries.get(path)?;
        let trusted_before = self.scan_start_ns - RACY_WINDOW_NS;
        let fresh = entry.stat == *stat
            && stat.mtime_ns <= trusted_before
            && stat.ctime_ns <= trusted_before;
        fresh.then_some(entry)
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

    pub fn load(path: &Path) -> Result<Option<Cache>> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        decode(&data)
            .map(Some)
            .with_context(|| format!("stat cache {} is corrupt", path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::store::write_cache_file(path, &self.encode())
    }

    fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<(&BString, &CacheEntry)> = self.entries.iter().collect();
        // Built in path order by the snapshot; sorted here should anyone have built it otherwise.
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        let mut out = encode_entries(
            self.scan_start_ns,
            self.treasures,
            entries.len(),
            entries.into_iter().map(|(p, e)| (p, e.clone())),
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
    // The count promised must be the count written, or the file decodes as corrupt.
    debug_assert_eq!(written, count);
    let count_at = MAGIC.len() + 20 + 16;
    out[count_at..count_at + 8].copy_from_slice(&(written as u64).to_le_bytes());
    out
}

/// Complete [`encode_entries`]'s output: the commit it describes, then the checksum.
pub fn seal(out: &mut Vec<u8>, commit: Option<ObjectId>) {
    let at = MAGIC.len();
    out[at..at + 20].copy_from_slice(commit.as_ref().map(|c| c.as_bytes()).unwrap_or(&[0u8; 20]));
    // A checksum against torn or corrupted files, not against tampering.
    let sum = crc32fast::hash(out);
    out.extend_from_slice(&sum.to_le_bytes());
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
    let commit_bytes = r.take(20)?;
    let commit = (commit_bytes != [0u8; 20]).then(|| ObjectId::from_bytes_or_panic(commit_bytes));
    let scan_start_ns = r.i64()?;
    let treasures = r.u64()?;
    let count = r.u64()?;
    let mut entries =
        // A damaged count must not reserve gigabytes: each entry takes at least 57 bytes.
        Entries::with_capacity_and_hasher(
            count.min(data.len() as u64 / 57) as usize,
            Default::default(),
        );
    for _ in 0..count {
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
        entries.insert(
            path,
            CacheEntry {
                item: Item { mode, oid },
                stat,
                encrypted,
            },
        );
    }
    // Saved in path order, and read as such (the snapshot compares it with a scan in one
    // pass): a file that is not, whoever wrote it, is put in order rather than trusted.
    if !entries.keys().is_sorted() {
        entries.sort_unstable_keys();
    }
    Ok(Cache {
        commit,
        scan_start_ns,
        treasures,
        entries,
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
            },
        );
        Cache {
            commit: None,
            scan_start_ns,
            treasures: 42,
            entries,
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
}
