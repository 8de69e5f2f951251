//! A snapshot as a flat, sorted list of paths, and its conversion to and from git trees.
//!
//! Everything that compares snapshots (change counts, status, diff, checkout plans) works on
//! this flat form; git trees are only built when a commit is written and read back when a
//! commit is restored. Empty directories are tree entries pointing at the empty tree, which
//! git accepts and `git checkout` simply does not materialise.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use gix::bstr::{BStr, BString, ByteSlice};
use gix::objs::tree::{Entry, EntryKind, EntryMode};
use gix::ObjectId;

use crate::store::Shadow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    File,
    Exec,
    Link,
    EmptyDir,
}

impl Mode {
    pub fn code(self) -> u8 {
        match self {
            Mode::File => 0,
            Mode::Exec => 1,
            Mode::Link => 2,
            Mode::EmptyDir => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Mode> {
        Some(match code {
            0 => Mode::File,
            1 => Mode::Exec,
            2 => Mode::Link,
            3 => Mode::EmptyDir,
            _ => return None,
        })
    }

    fn entry_kind(self) -> EntryKind {
        match self {
            Mode::File => EntryKind::Blob,
            Mode::Exec => EntryKind::BlobExecutable,
            Mode::Link => EntryKind::Link,
            Mode::EmptyDir => EntryKind::Tree,
        }
    }

    /// Regular files and symlinks count as "files" in change counts; empty directories don't.
    pub fn is_file(self) -> bool {
        !matches!(self, Mode::EmptyDir)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub mode: Mode,
    pub oid: ObjectId,
}

/// Paths relative to the tier root, `/`-separated, raw bytes (names need not be UTF-8).
pub type Listing = BTreeMap<BString, Item>;

/// Write the trees for `listing` and return the root tree id.
pub fn write_tree(shadow: &Shadow, listing: &Listing) -> Result<ObjectId> {
    let entries: Vec<(&[u8], &Item)> = listing.iter().map(|(p, i)| (p.as_slice(), i)).collect();
    // An empty directory points at the empty tree, which must then exist as an object for
    // `git fsck` connectivity; written only when used, so it is never a dangling object.
    let empty = ObjectId::empty_tree(gix::hash::Kind::Sha1);
    if listing.values().any(|i| i.mode == Mode::EmptyDir) {
        shadow
            .write_object(&gix::objs::Tree::empty())
            .context("could not write the empty tree")?;
    }
    write_dir(shadow, &entries, empty)
}

fn write_dir(shadow: &Shadow, entries: &[(&[u8], &Item)], empty: ObjectId) -> Result<ObjectId> {
    let mut tree = gix::objs::Tree::empty();
    let mut i = 0;
    while i < entries.len() {
        let (path, item) = entries[i];
        match path.find_byte(b'/') {
            None => {
                let oid = if item.mode == Mode::EmptyDir {
                    empty
                } else {
                    item.oid
                };
                tree.entries.push(Entry {
                    mode: item.mode.entry_kind().into(),
                    filename: path.into(),
                    oid,
                });
                i += 1;
            }
            Some(slash) => {
                // All paths below this directory are contiguous in byte order, because
                // they share the prefix "name/".
                let name = &path[..slash];
                let mut j = i;
                let mut children = Vec::new();
                while j < entries.len() {
                    let (p, it) = entries[j];
                    if p.len() > slash && &p[..slash] == name && p[slash] == b'/' {
                        children.push((&p[slash + 1..], it));
                        j += 1;
                    } else {
                        break;
                    }
                }
                let oid = write_dir(shadow, &children, empty)?;
                tree.entries.push(Entry {
                    mode: EntryKind::Tree.into(),
                    filename: name.into(),
                    oid,
                });
                i = j;
            }
        }
    }
    // Git orders tree entries by name with directories compared as "name/".
    tree.entries.sort();
    shadow
        .write_object(&tree)
        .context("could not write a tree object")
}

/// Read a commit's tree back into a flat listing, refusing names that could escape a tier
/// (a hostile or corrupt shadow repository must not make checkout write outside it).
pub fn read_tree(shadow: &Shadow, tree: ObjectId) -> Result<Listing> {
    let mut listing = Listing::new();
    let mut prefix = BString::default();
    read_dir(shadow, tree, &mut prefix, &mut listing)?;
    Ok(listing)
}

fn read_dir(
    shadow: &Shadow,
    tree: ObjectId,
    prefix: &mut BString,
    out: &mut Listing,
) -> Result<()> {
    let tree_obj = shadow.repo.find_tree(tree).with_context(|| {
        format!(
            "tree {tree} is missing or corrupt in {}",
            shadow.path.display()
        )
    })?;
    let decoded = tree_obj
        .decode()
        .with_context(|| format!("tree {tree} is corrupt"))?;
    let mut names = std::collections::HashSet::new();
    for entry in &decoded.entries {
        check_component(entry.filename, prefix.as_bstr())?;
        // Two entries of one name (say a link `d` and a directory `d/`) can only come from a
        // damaged or crafted tree; which one wins would be an accident.
        if !names.insert(entry.filename) {
            bail!(
                "refusing tree {tree}: two entries named {:?} under '{}' (corrupt or hostile snapshot)",
                entry.filename,
                prefix
            );
        }
        let base_len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(entry.filename);
        let mode: EntryMode = entry.mode;
        let item = match mode.kind() {
            EntryKind::Blob => Some(Mode::File),
            EntryKind::BlobExecutable => Some(Mode::Exec),
            EntryKind::Link => Some(Mode::Link),
            EntryKind::Tree => None,
            EntryKind::Commit => bail!(
                "snapshot contains a submodule entry at {} — not written by mirror",
                prefix
            ),
        };
        match item {
            Some(mode) => {
                out.insert(
                    prefix.clone(),
                    Item {
                        mode,
                        oid: entry.oid.to_owned(),
                    },
                );
            }
            None => {
                let child = entry.oid.to_owned();
                let before = out.len();
                read_dir(shadow, child, prefix, out)?;
                if out.len() == before {
                    out.insert(
                        prefix.clone(),
                        Item {
                            mode: Mode::EmptyDir,
                            oid: child,
                        },
                    );
                }
            }
        }
        prefix.truncate(base_len);
    }
    Ok(())
}

/// A path component that is safe to create on disk inside a tier.
pub fn check_component(name: &BStr, parent: &BStr) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(&b'/')
        || name.contains(&0)
        || is_dotgit_lookalike(name);
    if bad {
        bail!(
            "refusing unsafe name {:?} under '{}' in the shadow repository (corrupt or hostile snapshot)",
            name,
            parent
        );
    }
    Ok(())
}

/// Is `name` `.git`, or a name some filesystem reads as `.git`: any letter case, the NTFS
/// 8.3 short name (`git~1`), trailing dots or spaces and alternate data streams (`.git.`,
/// `.git::$INDEX_ALLOCATION`), HFS+'s ignorable code points (`.g\u{200c}it`)? git refuses
/// all of them (`core.protectNTFS`, `core.protectHFS`); so does mirror, in both directions.
pub fn is_dotgit_lookalike(name: &[u8]) -> bool {
    // Cheap pre-check first: the walk asks this for every name.
    let maybe = name.len() >= 4
        && name.iter().any(|b| b | 0x20 == b'g')
        && name.iter().any(|b| b | 0x20 == b't');
    maybe
        && matches!(
            gix::validate::path::component(
                name.as_bstr(),
                None,
                gix::validate::path::component::Options {
                    protect_windows: false,
                    protect_hfs: true,
                    protect_ntfs: true,
                },
            ),
            Err(gix::validate::path::component::Error::DotGitDir)
        )
}

/// Does `path` equal `scope` or lie below it? An empty scope covers everything.
pub fn in_scope(path: &[u8], scope: &[u8]) -> bool {
    scope.is_empty()
        || path == scope
        || (path.len() > scope.len() && path.starts_with(scope) && path[scope.len()] == b'/')
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "+{} ~{} -{}", self.added, self.modified, self.deleted)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Modified => 'M',
            Change::Deleted => 'D',
        }
    }
}

/// What changed from `old` to `new`, path by path, in path order.
pub fn changes<'a>(old: &'a Listing, new: &'a Listing) -> Vec<(&'a BString, Change)> {
    let mut out = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some((pa, ia)), Some((pb, ib))) => match pa.cmp(pb) {
                std::cmp::Ordering::Less => {
                    out.push((*pa, Change::Deleted));
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push((*pb, Change::Added));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if ia != ib {
                        out.push((*pb, Change::Modified));
                    }
                    a.next();
                    b.next();
                }
            },
            (Some((pa, _)), None) => {
                out.push((*pa, Change::Deleted));
                a.next();
            }
            (None, Some((pb, _))) => {
                out.push((*pb, Change::Added));
                b.next();
            }
            (None, None) => break,
        }
    }
    out
}

/// Change counts over files and symlinks (empty directories are not counted).
pub fn count_changes(old: &Listing, new: &Listing) -> Counts {
    let mut counts = Counts::default();
    for (path, change) in changes(old, new) {
        let is_file = match change {
            Change::Deleted => old[path].mode.is_file(),
            _ => new[path].mode.is_file(),
        };
        if !is_file {
            continue;
        }
        match change {
            Change::Added => counts.added += 1,
            Change::Modified => counts.modified += 1,
            Change::Deleted => counts.deleted += 1,
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(mode: Mode, n: u8) -> Item {
        Item {
            mode,
            oid: ObjectId::from_bytes_or_panic(&[n; 20]),
        }
    }

    #[test]
    fn changes_are_classified() {
        let mut old = Listing::new();
        old.insert("a".into(), item(Mode::File, 1));
        old.insert("b".into(), item(Mode::File, 2));
        old.insert("d".into(), item(Mode::EmptyDir, 0));
        let mut new = Listing::new();
        new.insert("a".into(), item(Mode::Exec, 1));
        new.insert("c".into(), item(Mode::File, 3));
        let c = count_changes(&old, &new);
        assert_eq!(
            c,
            Counts {
                added: 1,
                modified: 1,
                deleted: 1
            }
        );
    }

    #[test]
    fn scope_matches_whole_components() {
        assert!(in_scope(b"a/b", b"a"));
        assert!(in_scope(b"a", b"a"));
        assert!(!in_scope(b"ab", b"a"));
        assert!(in_scope(b"x", b""));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in ["..", ".", "", ".GIT", "a/b"] {
            assert!(check_component(bad.into(), "".into()).is_err(), "{bad}");
        }
        for lookalike in [
            &b".git"[..],
            b".GIT",
            b".Git",
            b"git~1",
            b"GIT~1",
            b".git.",
            b".git ",
            b".git::$INDEX_ALLOCATION",
            ".g\u{200c}it".as_bytes(),
            ".gI\u{200c}T".as_bytes(),
        ] {
            assert!(is_dotgit_lookalike(lookalike), "{:?}", lookalike.as_bstr());
            assert!(check_component(lookalike.into(), "".into()).is_err());
        }
        for fine in [
            &b".gitignore"[..],
            b"git",
            b".github",
            b"digit",
            b"git~2x",
            b"target",
        ] {
            assert!(!is_dotgit_lookalike(fine), "{:?}", fine.as_bstr());
        }
    }
}
