//! Per-snapshot metadata git trees cannot hold: modification times.
//!
//! Stored as a git note (ref `refs/notes/mirror`) on each tier commit, so the tier tree stays
//! exactly the tier's files and `git notes --ref=mirror show <commit>` recovers it with plain
//! git. The blob is a sequence of NUL-terminated records (NUL because file names may contain
//! newlines): first `mirror-meta 1`, then `m <seconds> <nanoseconds> <path>` per file and link,
//! followed by `p <octal permissions> <path>` when the permissions are not 0644/0755, and
//! `e <plaintext size> <path>` when the blob is the file's age ciphertext (a treasure).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use gix::bstr::{BString, ByteSlice};
use gix::ObjectId;

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

pub fn encode(mtimes: &Mtimes) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + mtimes.len() * 48);
    out.extend_from_slice(HEADER);
    out.push(0);
    // `write!` into the Vec itself: no string per record (a note has one per file).
    use std::io::Write;
    for (path, meta) in mtimes {
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

pub fn decode(data: &[u8]) -> Result<Mtimes> {
    let mut records = data.split(|b| *b == 0);
    if records.next() != Some(HEADER) {
        bail!("metadata note does not start with '{}'", HEADER.as_bstr());
    }
    let mut mtimes = Mtimes::new();
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
                            p.into(),
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
                match (perm, parts.next().and_then(|p| mtimes.get_mut(p))) {
                    // Never more than rwx bits, whatever the note says.
                    (Some(perm), Some(meta)) => meta.perm = Some(perm & 0o777),
                    _ => bail!("malformed metadata record {:?}", record.as_bstr()),
                }
            }
            Some(b"e") => {
                let mut parts = record.splitn(3, |b| *b == b' ').skip(1);
                let size = parse(parts.next()).and_then(|n| u64::try_from(n).ok());
                match (size, parts.next().and_then(|p| mtimes.get_mut(p))) {
                    (Some(size), Some(meta)) => meta.encrypted = Some(size),
                    _ => bail!("malformed metadata record {:?}", record.as_bstr()),
                }
            }
            // Unknown record kinds come from newer versions; skipping them keeps old
            // readers working, as docs/format.md promises.
            _ => continue,
        }
    }
    Ok(mtimes)
}

/// The metadata blob attached to `commit`, if any.
pub fn read_note(shadow: &Shadow, commit: ObjectId) -> Result<Option<Mtimes>> {
    let Some(notes) = shadow.ref_target(NOTES_REF)? else {
        return Ok(None);
    };
    let tree = shadow
        .repo
        .find_commit(notes)
        .context("notes ref does not point to a commit")?
        .tree()?;
    let name = commit.to_hex().to_string();
    let Some(entry) = tree.find_entry(name.as_str()) else {
        return Ok(None);
    };
    let data = shadow.read_blob(entry.oid())?;
    Ok(Some(
        decode(&data).with_context(|| format!("metadata note of {commit}"))?,
    ))
}

/// Attach `blob` as the note of `commit` (one commit on `refs/notes/mirror`, compare-and-swap).
pub fn write_note(
    shadow: &Shadow,
    commit: ObjectId,
    blob: ObjectId,
    signature: &gix::actor::Signature,
) -> Result<()> {
    let previous = shadow.ref_target(NOTES_REF)?;
    let base_tree = match previous {
        Some(c) => shadow.repo.find_commit(c)?.tree_id()?.detach(),
        None => ObjectId::empty_tree(gix::hash::Kind::Sha1),
    };
    let mut editor = shadow.repo.edit_tree(base_tree)?;
    editor.upsert(
        commit.to_hex().to_string(),
        gix::objs::tree::EntryKind::Blob,
        blob,
    )?;
    let tree = editor.write()?.detach();
    shadow.track(tree);
    shadow.append_commit(
        NOTES_REF,
        previous,
        tree,
        format!("Notes added by 'mirror snapshot' for {commit}\n"),
        signature,
    )?;
    Ok(())
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
}
