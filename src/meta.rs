//! Per-snapshot metadata git trees cannot hold: modification times.
//!
//! Stored as a git note (ref `refs/notes/mirror`) on each tier commit, so the tier tree stays
//! exactly the tier's files and `git notes --ref=mirror show <commit>` recovers it with plain
//! git. The blob is a sequence of NUL-terminated records (NUL because file names may contain
//! newlines): first `mirror-meta 1`, then `m <seconds> <nanoseconds> <path>` per file and link.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use gix::bstr::{BString, ByteSlice};
use gix::ObjectId;

use crate::store::{Shadow, NOTES_REF};

/// Modification time in nanoseconds since the epoch, per path.
pub type Mtimes = BTreeMap<BString, i64>;

const HEADER: &[u8] = b"mirror-meta 1";

pub fn encode(mtimes: &Mtimes) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + mtimes.len() * 48);
    out.extend_from_slice(HEADER);
    out.push(0);
    for (path, ns) in mtimes {
        let secs = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000);
        out.extend_from_slice(format!("m {secs} {nanos} ").as_bytes());
        out.extend_from_slice(path);
        out.push(0);
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
        let mut parts = record.splitn(4, |b| *b == b' ');
        let (kind, secs, nanos, path) = (parts.next(), parts.next(), parts.next(), parts.next());
        let parse = |b: Option<&[u8]>| {
            b.and_then(|b| b.to_str().ok())
                .and_then(|s| s.parse::<i64>().ok())
        };
        match (kind, parse(secs), parse(nanos), path) {
            (Some(b"m"), Some(s), Some(n), Some(p)) => {
                mtimes.insert(p.into(), s * 1_000_000_000 + n);
            }
            // Unknown record kinds come from newer versions; skipping them keeps old
            // readers working, as docs/format.md promises.
            (Some(k), ..) if k != b"m" => continue,
            _ => bail!("malformed metadata record {:?}", record.as_bstr()),
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
            1_700_000_000_123_456_789,
        );
        m.insert("old".into(), -1_500_000_000);
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }
}
