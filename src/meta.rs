//! Per-snapshot metadata git trees cannot hold: modification times, permissions, encryption.
//!
//! Stored as a git note (ref `refs/notes/mirror`) on each tier commit, so the tier tree stays
//! exactly the tier's files and plain git recovers it. Records are NUL-terminated (file names
//! may contain newlines): `m <seconds> <nanoseconds> <name>` per file and link, followed by
//! `p <octal permissions> <name>` when the permissions are not 0644/0755, and
//! `e <plaintext size> <name>` when the blob is the file's age ciphertext (a treasure).
//!
//! Version 2 (written now): the note is a *tree* shaped like the tier, so a snapshot rewrites
//! only the metadata of the directories that changed (and the trees above them), never the
//! whole tier's. Each directory's tree has a blob `files` (header `mirror-meta 2`, records
//! naming the files directly in it) and one subtree `+<name>` per subdirectory holding files.
//! Version 1 (still read): one flat blob, header `mirror-meta 1`, records naming full paths.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use gix::bstr::{BString, ByteSlice};
use gix::objs::tree::{Entry, EntryKind};
use gix::ObjectId;

use crate::listing::{Base, DirWriter};
use crate::store::{Shadow, NOTES_REF};

/// What git's tree cannot hold about one file or link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Permission bits (0o777) when they are not what git's mode implies (0644 or 0755):
    /// a 0600 secret comes back 0600. `None`: the default, which follows the umask on restore.
    pub perm: Option<u32>,
    /// `Some(plaintext size)` when the blob is age ciphertext of the file (a treasure).
    pub encrypted: Option<u64>,
}

impl FileMeta {
    /// From `lstat` data; the special bits (setuid, setgid, sticky) are never recorded, so a
    /// snapshot cannot plant a setuid file.
    pub fn from_stat(stat: &crate::statcache::Stat) -> FileMeta {
        let is_link = stat.mode & 0o170000 == 0o120000;
        let perm = stat.mode & 0o777;
        FileMeta {
            mtime_ns: stat.mtime_ns,
            perm: (!is_link && perm != 0o644 && perm != 0o755).then_some(perm),
            encrypted: None,
        }
    }
}

/// Per path (files and links).
pub type Mtimes = BTreeMap<BString, FileMeta>;

const HEADER: &[u8] = b"mirror-meta 1";
const DIR_HEADER: &[u8] = b"mirror-meta 2";
/// The records blob of a directory in a version 2 metadata tree.
const FILES: &[u8] = b"files";
/// Prepended to subdirectory names in a version 2 metadata tree, so none can be `files`.
const SUBDIR_PREFIX: &[u8] = b"+";
/// Deeper than any path the kernel accepts (PATH_MAX 4096): a crafted metadata tree nested
/// deeper is refused before it can exhaust the stack.
const MAX_DEPTH: usize = 2048;

/// Version 1: one flat blob of full paths (kept for tests and for reading old notes).
pub fn encode(mtimes: &Mtimes) -> Vec<u8> {
    encode_records(HEADER, mtimes.iter().map(|(p, m)| (p.as_slice(), m)))
}

fn encode_records<'a>(
    header: &[u8],
    records: impl ExactSizeIterator<Item = (&'a [u8], &'a FileMeta)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + records.len() * 48);
    out.extend_from_slice(header);
    out.push(0);
    // `write!` into the Vec itself: no string per record (a note has one per file).
    use std::io::Write;
    for (path, meta) in records {
        let ns = meta.mtime_ns;
        let secs = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000);
        // Writing into a Vec cannot fail.
        let _ = write!(out, "m {secs} {nanos} ");
        out.extend_from_slice(path);
        out.push(0);
        if let Some(perm) = meta.perm {
            let _ = write!(out, "p {perm:o} ");
            out.extend_from_slice(path);
            out.push(0);
        }
        if let Some(size) = meta.encrypted {
            let _ = write!(out, "e {size} ");
            out.extend_from_slice(path);
            out.push(0);
        }
    }
    out
}

/// Version 1: a flat blob of full paths.
pub fn decode(data: &[u8]) -> Result<Mtimes> {
    let mut mtimes = Mtimes::new();
    decode_records(data, HEADER, &mut mtimes, |path| Ok(path.into()))?;
    Ok(mtimes)
}

/// Decode records into `mtimes`, each record's name turned into its path by `path_of`.
fn decode_records(
    data: &[u8],
    header: &[u8],
    mtimes: &mut Mtimes,
    path_of: impl Fn(&[u8]) -> Result<BString>,
) -> Result<()> {
    let mut records = data.split(|b| *b == 0);
    if records.next() != Some(header) {
        bail!("metadata note does not start with '{}'", header.as_bstr());
    }
    for record in records {
        if record.is_empty() {
            continue;
        }
        let parse = |b: Option<&[u8]>| {
            b.and_then(|b| b.to_str().ok())
                .and_then(|s| s.parse::<i64>().ok())
        };
        match record.split(|b| *b == b' ').next() {
            Some(b"m") => {
                let mut parts = record.splitn(4, |b| *b == b' ').skip(1);
                let (secs, nanos, path) = (parse(parts.next()), parse(parts.next()), parts.next());
                // Out of range (a damaged or crafted note) is malformed, never an overflow.
                let ns = match (secs, nanos) {
                    (Some(s), Some(n)) if (0..1_000_000_000).contains(&n) => {
                        s.checked_mul(1_000_000_000).and_then(|x| x.checked_add(n))
                    }
                    _ => None,
                };
                match (ns, path) {
                    (Some(ns), Some(p)) => {
                        mtimes.insert(
                            path_of(p)?,
                            FileMeta {
                                mtime_ns: ns,
                                perm: None,
                                encrypted: None,
                            },
                        );
                    }
                    _ => bail!("malformed metadata record {:?}", record.as_bstr()),
                }
            }
            Some(b"p") => {
                let mut parts = record.splitn(3, |b| *b == b' ').skip(1);
                let perm = parts
                    .next()
                    .and_then(|b| b.to_str().ok())
                    .and_then(|s| u32::from_str_radix(s, 8).ok());
                let target = parts.next().map(&path_of).transpose()?;
                match (perm, target.and_then(|p| mtimes.get_mut(&p))) {
                    // Never more than rwx bits, whatever the note says.
                    (Some(perm), Some(meta)) => meta.perm = Some(perm & 0o777),
                    _ => bail!("malformed metadata record {:?}", record.as_bstr()),
                }
            }
            Some(b"e") => {
                let mut parts = record.splitn(3, |b| *b == b' ').skip(1);
                let size = parse(parts.next()).and_then(|n| u64::try_from(n).ok());
                let target = parts.next().map(&path_of).transpose()?;
                match (size, target.and_then(|p| mtimes.get_mut(&p))) {
                    (Some(size), Some(meta)) => meta.encrypted = Some(size),
                    _ => bail!("malformed metadata record {:?}", record.as_bstr()),
                }
            }
            // Unknown record kinds come from newer versions; skipping them keeps old
            // readers working, as docs/format.md promises.
            _ => continue,
        }
    }
    Ok(())
}

/// The note entry of `commit`: its object id and whether it is a tree (version 2).
fn note_entry(shadow: &Shadow, commit: ObjectId) -> Result<Option<(ObjectId, bool)>> {
    let Some(notes) = shadow.ref_target(NOTES_REF)? else {
        return Ok(None);
    };
    let tree = shadow
        .repo
        .find_commit(notes)
        .context("notes ref does not point to a commit")?
        .tree()?;
    let hex = commit.to_hex().to_string();
    // Flat (format 1, and git's own notes while few), or fanned out by the first two hex
    // digits (what mirror writes now).
    let entry = match tree.find_entry(hex.as_str()) {
        Some(e) => Some((e.oid().to_owned(), e.mode().is_tree())),
        None => tree
            .lookup_entry_by_path(fanned_out(&hex))?
            .map(|e| (e.oid().to_owned(), e.mode().is_tree())),
    };
    Ok(entry)
}

/// Where a note is written in the notes tree: `ab/cdef…` for commit `abcdef…`, as git itself
/// fans notes out, so the tree each snapshot rewrites holds at most 256 entries plus the
/// notes sharing its commit's first byte, not one entry per snapshot ever taken.
fn fanned_out(hex: &str) -> String {
    format!("{}/{}", &hex[..2], &hex[2..])
}

/// The metadata recorded for `commit`, if any (either version).
pub fn read_note(shadow: &Shadow, commit: ObjectId) -> Result<Option<Mtimes>> {
    let Some((id, is_tree)) = note_entry(shadow, commit)? else {
        return Ok(None);
    };
    let mtimes = if is_tree {
        read_tree(shadow, id)
    } else {
        shadow.read_blob(&id).and_then(|data| decode(&data))
    }
    .with_context(|| format!("metadata note of {commit}"))?;
    Ok(Some(mtimes))
}

/// Read a version 2 metadata tree.
pub fn read_tree(shadow: &Shadow, tree: ObjectId) -> Result<Mtimes> {
    read_tree_within(shadow, tree, MAX_VISITS)
}

/// [`read_tree`] visiting at most `max_visits` directories.
fn read_tree_within(shadow: &Shadow, tree: ObjectId, max_visits: u64) -> Result<Mtimes> {
    let mut mtimes = Mtimes::new();
    // Counts down: each directory visited takes one.
    let mut budget = max_visits;
    let mut prefix = BString::default();
    read_dir(shadow, tree, &mut prefix, 0, &mut budget, &mut mtimes)?;
    Ok(mtimes)
}

/// More directories, and files, than any real tier has: a crafted metadata tree that names
/// one subtree under many names, level after level, would otherwise expand exponentially.
const MAX_VISITS: u64 = 5_000_000;
const MAX_RECORDS: usize = 50_000_000;

/// The version 2 metadata tree of `commit`, to write the next snapshot's against.
pub fn note_tree(shadow: &Shadow, commit: ObjectId) -> Result<Option<ObjectId>> {
    Ok(note_entry(shadow, commit)?.and_then(|(id, is_tree)| is_tree.then_some(id)))
}

/// Read one directory of a metadata tree. Names are checked like a tier tree's: a crafted
/// note must not name anything outside the tier (the paths are only ever looked up, but a
/// path that can never match is refused rather than kept).
fn read_dir(
    shadow: &Shadow,
    tree: ObjectId,
    prefix: &mut BString,
    depth: usize,
    budget: &mut u64,
    out: &mut Mtimes,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("metadata tree nested deeper than {MAX_DEPTH} directories");
    }
    if *budget == 0 || out.len() > MAX_RECORDS {
        bail!("metadata tree of more directories or files than any tier has (corrupt or hostile)");
    }
    *budget -= 1;
    let decoded = shadow
        .repo
        .find_tree(tree)
        .with_context(|| format!("metadata tree {tree} is missing"))?;
    let decoded = decoded
        .decode()
        .with_context(|| format!("metadata tree {tree} is corrupt"))?;
    for entry in &decoded.entries {
        let name: &[u8] = entry.filename;
        if name == FILES && !entry.mode.is_tree() {
            let data = shadow.read_blob(entry.oid)?;
            let dir = prefix.clone();
            decode_records(&data, DIR_HEADER, out, |file| {
                crate::listing::check_component(file.as_bstr(), dir.as_bstr())?;
                Ok(join(&dir, file))
            })
            .with_context(|| format!("metadata of directory '{dir}'"))?;
        } else if let Some(sub) = name
            .strip_prefix(SUBDIR_PREFIX)
            .filter(|_| entry.mode.is_tree())
        {
            crate::listing::check_component(sub.as_bstr(), prefix.as_bstr())?;
            let len = prefix.len();
            *prefix = join(prefix, sub);
            read_dir(shadow, entry.oid.to_owned(), prefix, depth + 1, budget, out)?;
            prefix.truncate(len);
        }
        // Anything else comes from a newer version: ignored, as docs/format.md promises.
    }
    Ok(())
}

fn join(dir: &[u8], name: &[u8]) -> BString {
    let mut path = BString::from(dir);
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Write the version 2 metadata tree of `mtimes` (sorted by path, as a map is). With a base
/// (the previous snapshot's metadata tree and the directories changed since), only the
/// changed directories' records and the trees above them are written.
pub fn write_tree(shadow: &Shadow, mtimes: &Mtimes, base: Option<Base>) -> Result<ObjectId> {
    write_tree_from(shadow, mtimes, |m| Some(*m), base)
}

/// [`write_tree`] for any map sorted by path, `meta_of` giving each value's metadata
/// (`None`: not a file or link).
pub fn write_tree_from<V>(
    shadow: &Shadow,
    entries: &std::collections::BTreeMap<BString, V>,
    meta_of: impl Fn(&V) -> Option<FileMeta>,
    base: Option<Base>,
) -> Result<ObjectId> {
    let leaves = |files: &[(&[u8], &V)]| -> Result<Vec<Entry>> {
        let metas: Vec<(&[u8], FileMeta)> = files
            .iter()
            .filter_map(|(name, v)| meta_of(v).map(|m| (*name, m)))
            .collect();
        if metas.is_empty() {
            return Ok(Vec::new());
        }
        let records = encode_records(DIR_HEADER, metas.iter().map(|(n, m)| (*n, m)));
        Ok(vec![Entry {
            mode: EntryKind::Blob.into(),
            filename: FILES.into(),
            oid: shadow.write_blob(&records)?,
        }])
    };
    let mut writer = DirWriter::new(
        shadow,
        base.as_ref().map(|b| b.dirty),
        SUBDIR_PREFIX,
        leaves,
    );
    writer.write(entries, base.map(|b| b.tree))
}

/// The commit on `refs/notes/mirror` that attaches `meta` (a version 2 metadata tree, or a
/// version 1 blob) as the note of `commit`, written with its trees but not yet flushed, and
/// the ref's current value: the caller flushes ([`Shadow::sync`]) and then moves the ref by
/// compare-and-swap, with [`NOTES_REF`] from that value to this commit.
pub fn stage_note(
    shadow: &Shadow,
    commit: ObjectId,
    meta: ObjectId,
    kind: EntryKind,
    signature: &gix::actor::Signature,
) -> Result<(ObjectId, Option<ObjectId>)> {
    let previous = shadow.ref_target(NOTES_REF)?;
    let base_tree = match previous {
        Some(c) => Some(shadow.repo.find_commit(c)?.tree_id()?.detach()),
        None => None,
    };
    let hex = commit.to_hex().to_string();
    let (fan, rest) = hex.split_at(2);
    let old_fan = match base_tree {
        Some(tree) => shadow
            .repo
            .find_tree(tree)?
            .find_entry(fan)
            .and_then(|e| e.mode().is_tree().then(|| e.oid().to_owned())),
        None => None,
    };
    // Trees written through the shadow, not gix's tree editor: they go where the snapshot's
    // other objects go (its pack, when it writes one).
    let sub = upsert(shadow, old_fan, rest, kind, meta)?;
    let tree = upsert(shadow, base_tree, fan, EntryKind::Tree, sub)?;
    let id = shadow.write_commit(
        tree,
        previous,
        format!("Notes added by 'mirror snapshot' for {commit}\n"),
        signature,
    )?;
    Ok((id, previous))
}

/// `tree` (none: empty) with the entry `name` set to `oid` of `kind`, written.
fn upsert(
    shadow: &Shadow,
    tree: Option<ObjectId>,
    name: &str,
    kind: EntryKind,
    oid: ObjectId,
) -> Result<ObjectId> {
    let mut entries: Vec<Entry> = match tree {
        Some(tree) => shadow
            .repo
            .find_tree(tree)?
            .decode()?
            .entries
            .iter()
            .filter(|e| e.filename != name.as_bytes())
            .map(|e| (*e).into())
            .collect(),
        None => Vec::new(),
    };
    entries.push(Entry {
        mode: kind.into(),
        filename: name.into(),
        oid,
    });
    // git's order (a tree's name compares as if it ended in '/').
    entries.sort();
    shadow.write_object(&gix::objs::Tree { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_including_odd_names_and_negative_times() {
        let mut m = Mtimes::new();
        m.insert(
            BString::from(&b"new\nline \xff"[..]),
            FileMeta {
                mtime_ns: 1_700_000_000_123_456_789,
                perm: Some(0o600),
                encrypted: Some(12_345),
            },
        );
        m.insert(
            "old".into(),
            FileMeta {
                mtime_ns: -1_500_000_000,
                perm: None,
                encrypted: None,
            },
        );
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }

    fn meta(mtime_ns: i64, perm: Option<u32>, encrypted: Option<u64>) -> FileMeta {
        FileMeta {
            mtime_ns,
            perm,
            encrypted,
        }
    }

    fn shadow() -> (tempfile::TempDir, Shadow) {
        let dir = tempfile::tempdir().unwrap();
        let shadow = Shadow::create(&dir.path().join("s"), dir.path(), "t").unwrap();
        (dir, shadow)
    }

    #[test]
    fn metadata_tree_round_trips_odd_names() {
        let (_dir, shadow) = shadow();
        let m: Mtimes = [
            ("files", meta(1, None, None)),
            ("files/files", meta(2, Some(0o600), None)),
            ("+plus/x", meta(3, None, Some(9))),
            (
                "a b/new\nline \u{e9}",
                meta(-1_500_000_000, Some(0o640), Some(0)),
            ),
            ("a-b", meta(5, None, None)),
            ("a/b/c/d", meta(1_700_000_000_123_456_789, None, None)),
            ("a0", meta(6, None, None)),
        ]
        .into_iter()
        .map(|(p, m)| (BString::from(p), m))
        .collect();
        let tree = write_tree(&shadow, &m, None).unwrap();
        assert_eq!(read_tree(&shadow, tree).unwrap(), m);
        // Nothing at all: the empty tree, read back as nothing.
        let none = write_tree(&shadow, &Mtimes::new(), None).unwrap();
        assert_eq!(none, ObjectId::empty_tree(gix::hash::Kind::Sha1));
        assert!(read_tree(&shadow, none).unwrap().is_empty());
    }

    /// Rewriting only the changed directories gives exactly the tree a full rebuild gives,
    /// and a deep change rebuilds only the directories above it.
    #[test]
    fn metadata_tree_reuse_equals_full_rebuild() {
        let (_dir, shadow) = shadow();
        let mk = |spec: &[(&str, i64)]| -> Mtimes {
            spec.iter()
                .map(|(p, t)| (BString::from(*p), meta(*t, None, None)))
                .collect()
        };
        let states = [
            mk(&[
                ("a-b", 1),
                ("a/b", 2),
                ("a/c/d", 3),
                ("a0", 4),
                ("k/l/m", 6),
                ("x", 7),
            ]),
            // A touch (metadata only), a file becoming a directory, a new deep file.
            mk(&[
                ("a-b", 10),
                ("a/b/c", 2),
                ("a/c/d", 3),
                ("a0", 4),
                ("k/l/m", 6),
                ("n/o/p", 8),
                ("x", 7),
            ]),
            // A whole directory gone, a directory becoming a file.
            mk(&[("a-b", 10), ("a/b", 2), ("a0/x", 4), ("k", 6), ("x", 7)]),
            mk(&[]),
            mk(&[("new/deep/file", 1)]),
        ];
        let mut prev: Option<(ObjectId, &Mtimes)> = None;
        for (n, state) in states.iter().enumerate() {
            let reused = match prev {
                Some((tree, old)) => {
                    let mut dirty = crate::listing::Dirty::new();
                    let paths: std::collections::BTreeSet<&BString> =
                        old.keys().chain(state.keys()).collect();
                    for p in paths {
                        if old.get(p) != state.get(p) {
                            crate::listing::mark_dirty(p, &mut dirty);
                        }
                    }
                    let base = Base {
                        tree,
                        dirty: &dirty,
                    };
                    write_tree(&shadow, state, Some(base)).unwrap()
                }
                None => write_tree(&shadow, state, None).unwrap(),
            };
            let full = write_tree(&shadow, state, None).unwrap();
            assert_eq!(reused, full, "state {n}: reuse differs from a full rebuild");
            assert_eq!(&read_tree(&shadow, reused).unwrap(), state, "state {n}");
            prev = Some((reused, state));
        }
    }

    /// A crafted metadata tree cannot name paths outside the tier.
    #[test]
    fn hostile_metadata_names_are_refused() {
        let (_dir, shadow) = shadow();
        let records = |name: &[u8]| {
            let mut data = b"mirror-meta 2\0m 1 0 ".to_vec();
            data.extend_from_slice(name);
            data.push(0);
            shadow.write_blob(&data).unwrap()
        };
        let tree = |entries: Vec<(&str, EntryKind, ObjectId)>| {
            let mut t = gix::objs::Tree::empty();
            for (name, kind, oid) in entries {
                t.entries.push(Entry {
                    mode: kind.into(),
                    filename: name.into(),
                    oid,
                });
            }
            t.entries.sort();
            shadow.write_object(&t).unwrap()
        };
        for bad in [&b".."[..], b"a/b", b".git", b"."] {
            let t = tree(vec![("files", EntryKind::Blob, records(bad))]);
            assert!(read_tree(&shadow, t).is_err(), "{:?}", bad.as_bstr());
        }
        let fine = tree(vec![("files", EntryKind::Blob, records(b"ok"))]);
        for bad in ["+..", "+.git", "+."] {
            let t = tree(vec![(bad, EntryKind::Tree, fine)]);
            assert!(read_tree(&shadow, t).is_err(), "{bad}");
        }
        // One subtree under many names, level after level: refused, not expanded.
        let mut level = tree(vec![("files", EntryKind::Blob, records(b"x"))]);
        for _ in 0..6 {
            let names: Vec<String> = (0..20).map(|n| format!("+d{n}")).collect();
            level = tree(
                names
                    .iter()
                    .map(|n| (n.as_str(), EntryKind::Tree, level))
                    .collect(),
            );
        }
        let err = read_tree_within(&shadow, level, 10_000).unwrap_err();
        assert!(format!("{err:#}").contains("hostile"), "{err:#}");
        // Entries of unknown kinds are skipped (a newer version's), not errors.
        let t = tree(vec![
            ("+sub", EntryKind::Tree, fine),
            ("hardlinks", EntryKind::Blob, records(b"x")),
        ]);
        let read = read_tree(&shadow, t).unwrap();
        assert_eq!(read.keys().collect::<Vec<_>>(), ["sub/ok"]);
    }
}
