//! A snapshot as a flat, sorted list of paths, and its conversion to and from git trees.
//!
//! Everything that compares snapshots (change counts, status, diff, checkout plans) works on
//! this flat form; git trees are only built when a commit is written and read back when a
//! commit is restored. Empty directories are tree entries pointing at the empty tree, which
//! git accepts and `git checkout` simply does not materialise.

use std::collections::{BTreeMap, HashMap, HashSet};

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
    Ok(write_tree_on(shadow, listing, None)?.id)
}

/// Directories (tier-relative, `""` for the root) with a change below them: the only ones
/// whose trees a new snapshot rebuilds.
pub type Dirty<'a> = HashSet<&'a [u8]>;

/// Mark every directory above `path` (its parent up to the root) as changed.
pub fn mark_dirty<'a>(path: &'a [u8], dirty: &mut Dirty<'a>) {
    let mut p = path;
    loop {
        let parent = p.rfind_byte(b'/').map_or(&p[..0], |slash| &p[..slash]);
        // Once a directory is marked, so are all of its ancestors.
        if !dirty.insert(parent) || parent.is_empty() {
            break;
        }
        p = parent;
    }
}

/// Every directory with an added, removed or changed path below it, from `old` to `new`.
pub fn changed_dirs<'a>(old: &'a Listing, new: &'a Listing) -> Dirty<'a> {
    let mut dirty = Dirty::new();
    for (path, _) in changes(old, new) {
        mark_dirty(path, &mut dirty);
    }
    dirty
}

/// The snapshot a new tree is written against: its tree, and the directories that changed
/// since (everything else is taken from `tree` as it is).
pub struct Base<'a> {
    pub tree: ObjectId,
    pub dirty: &'a Dirty<'a>,
}

pub struct Written {
    pub id: ObjectId,
    /// Trees built (hashed, and stored unless they existed): with a base, only the
    /// directories with a change below them; every directory without one.
    pub built: usize,
}

/// Write the trees for `listing`, reusing from `base` the tree of every directory with no
/// change below it: a one-file change builds only the trees on that file's path, however
/// large the tier (the old trees along that path are read to find their siblings' ids).
pub fn write_tree_on(shadow: &Shadow, listing: &Listing, base: Option<Base>) -> Result<Written> {
    write_tree_from(shadow, listing, |item| Some(*item), base)
}

/// [`write_tree_on`] for any map sorted by path, `item_of` giving each value's tree entry
/// (`None`: not part of the tree).
pub fn write_tree_from<V>(
    shadow: &Shadow,
    entries: &BTreeMap<BString, V>,
    item_of: impl Fn(&V) -> Option<Item>,
    base: Option<Base>,
) -> Result<Written> {
    // An empty directory points at the empty tree, which must then exist as an object for
    // `git fsck` connectivity; written only when used, so it is never a dangling object.
    let empty = ObjectId::empty_tree(gix::hash::Kind::Sha1);
    let mut empty_written = false;
    let leaves = |leaves: &[(&[u8], &V)]| -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(leaves.len());
        for (name, value) in leaves {
            let Some(item) = item_of(value) else {
                continue;
            };
            let oid = if item.mode == Mode::EmptyDir {
                if !std::mem::replace(&mut empty_written, true) {
                    shadow
                        .write_object(&gix::objs::Tree::empty())
                        .context("could not write the empty tree")?;
                }
                empty
            } else {
                item.oid
            };
            out.push(Entry {
                mode: item.mode.entry_kind().into(),
                filename: (*name).into(),
                oid,
            });
        }
        Ok(out)
    };
    let mut writer = DirWriter::new(shadow, base.as_ref().map(|b| b.dirty), b"", leaves);
    let id = writer.write(entries, base.map(|b| b.tree))?;
    Ok(Written {
        id,
        built: writer.built,
    })
}

/// Writes a directory hierarchy of git trees from a map sorted by path. Directories with a
/// change (or without a base) are built; the others keep their tree from the base. Only the
/// built directories' own entries are visited (whole subdirectories are skipped by seeking
/// past them), so the work follows the change, not the size of the map. What a directory's
/// own (non-directory) entries become is the caller's: one tree entry each for a tier's
/// files, one records blob for the metadata tree ([`crate::meta`]).
pub(crate) struct DirWriter<'a, F> {
    shadow: &'a Shadow,
    /// With a base: the directories that must be rebuilt.
    dirty: Option<&'a Dirty<'a>>,
    /// Prepended to each subdirectory's name in its parent's tree. With a prefix (the
    /// metadata tree), a subdirectory whose tree comes out empty is left out.
    subdir_prefix: &'static [u8],
    leaves: F,
    pub built: usize,
}

impl<'a, F> DirWriter<'a, F> {
    pub fn new(
        shadow: &'a Shadow,
        dirty: Option<&'a Dirty<'a>>,
        subdir_prefix: &'static [u8],
        leaves: F,
    ) -> Self {
        DirWriter {
            shadow,
            dirty,
            subdir_prefix,
            leaves,
            built: 0,
        }
    }

    /// Write the whole hierarchy of `entries`; `old` is the base's root tree, if any.
    pub fn write<V>(
        &mut self,
        entries: &BTreeMap<BString, V>,
        old: Option<ObjectId>,
    ) -> Result<ObjectId>
    where
        F: FnMut(&[(&[u8], &V)]) -> Result<Vec<Entry>>,
    {
        self.write_dir(entries, b"", old)
    }

    /// Write the directory `dir` (tier-relative, `""` for the root); `old` is its tree in the
    /// base, if it had one.
    fn write_dir<V>(
        &mut self,
        entries: &BTreeMap<BString, V>,
        dir: &[u8],
        old: Option<ObjectId>,
    ) -> Result<ObjectId>
    where
        F: FnMut(&[(&[u8], &V)]) -> Result<Vec<Entry>>,
    {
        // The old tree's subdirectories, to take unchanged ones from.
        let old_subtrees: HashMap<BString, ObjectId> = match old {
            Some(id) if self.dirty.is_some() => self.subtrees(id)?,
            _ => Default::default(),
        };
        let mut prefix = dir.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let mut tree = gix::objs::Tree::empty();
        let mut leaves = Vec::new();
        let mut key = prefix.clone();
        loop {
            let next = entries
                .range::<[u8], _>((
                    std::ops::Bound::Included(key.as_slice()),
                    std::ops::Bound::Unbounded,
                ))
                .next();
            let Some((path, value)) = next.filter(|(p, _)| p.starts_with(&prefix)) else {
                break;
            };
            let rest = &path[prefix.len()..];
            match rest.find_byte(b'/') {
                None => {
                    leaves.push((rest, value));
                    // The next key after this path.
                    key.clear();
                    key.extend_from_slice(path);
                    key.push(0);
                }
                Some(slash) => {
                    let name = &rest[..slash];
                    let full = &path[..prefix.len() + slash];
                    let mut stored = BString::from(self.subdir_prefix);
                    stored.extend_from_slice(name);
                    let old_child = old_subtrees.get(&stored).copied();
                    let unchanged = self.dirty.is_some_and(|d| !d.contains(full));
                    let oid = match old_child {
                        Some(id) if unchanged => id,
                        _ => self.write_dir(entries, full, old_child)?,
                    };
                    let skip = !self.subdir_prefix.is_empty()
                        && oid == ObjectId::empty_tree(gix::hash::Kind::Sha1);
                    if !skip {
                        tree.entries.push(Entry {
                            mode: EntryKind::Tree.into(),
                            filename: stored,
                            oid,
                        });
                    }
                    // Past everything below "name/": the next key after it is "name0".
                    key.clear();
                    key.extend_from_slice(full);
                    key.push(b'/' + 1);
                }
            }
        }
        tree.entries.extend((self.leaves)(&leaves)?);
        // Git orders tree entries by name with directories compared as "name/".
        tree.entries.sort();
        self.built += 1;
        self.shadow
            .write_object(&tree)
            .context("could not write a tree object")
    }

    fn subtrees(&self, id: ObjectId) -> Result<HashMap<BString, ObjectId>> {
        let tree = self
            .shadow
            .repo
            .find_tree(id)
            .with_context(|| format!("tree {id} of the previous snapshot is missing"))?;
        let decoded = tree
            .decode()
            .with_context(|| format!("tree {id} of the previous snapshot is corrupt"))?;
        Ok(decoded
            .entries
            .iter()
            .filter(|e| e.mode.is_tree())
            .map(|e| (e.filename.to_owned(), e.oid.to_owned()))
            .collect())
    }
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
    merge_sorted(old, new)
        .filter_map(|(path, a, b)| match (a, b) {
            (Some(_), None) => Some((path, Change::Deleted)),
            (None, Some(_)) => Some((path, Change::Added)),
            (Some(a), Some(b)) if a != b => Some((path, Change::Modified)),
            _ => None,
        })
        .collect()
}

/// Change counts over files and symlinks (empty directories are not counted).
pub fn count_changes(old: &Listing, new: &Listing) -> Counts {
    let mut counts = Counts::default();
    for (_, a, b) in merge_sorted(old, new) {
        counts.count(a, b);
    }
    counts
}

impl Counts {
    /// Count one path whose item went from `before` to `after` (`None`: absent) by the rule
    /// every count follows: files and links count, empty directories do not; a change counts
    /// by what the path holds after it, a deletion by what it held. Whether the items differ.
    pub fn count(&mut self, before: Option<&Item>, after: Option<&Item>) -> bool {
        let counter = match (before, after) {
            (Some(a), Some(b)) if a == b => return false,
            (None, None) => return false,
            (Some(_), Some(b)) => b.mode.is_file().then_some(&mut self.modified),
            (None, Some(b)) => b.mode.is_file().then_some(&mut self.added),
            (Some(a), None) => a.mode.is_file().then_some(&mut self.deleted),
        };
        if let Some(n) = counter {
            *n += 1;
        }
        true
    }
}

/// Two sequences sorted by key walked together: each key once, with what each side holds
/// for it (the key given is the second side's when both have it).
pub fn merge_sorted<K: Ord, A, B>(
    a: impl IntoIterator<Item = (K, A)>,
    b: impl IntoIterator<Item = (K, B)>,
) -> impl Iterator<Item = (K, Option<A>, Option<B>)> {
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.cmp(y),
        };
        Some(match order {
            std::cmp::Ordering::Less => a.next().map(|(k, v)| (k, Some(v), None))?,
            std::cmp::Ordering::Greater => b.next().map(|(k, w)| (k, None, Some(w)))?,
            std::cmp::Ordering::Equal => {
                let (_, v) = a.next()?;
                let (k, w) = b.next()?;
                (k, Some(v), Some(w))
            }
        })
    })
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

    fn blob(shadow: &Shadow, text: &str) -> Item {
        Item {
            mode: Mode::File,
            oid: shadow.write_blob(text.as_bytes()).unwrap(),
        }
    }

    /// Every tree id reachable from `root`, by path.
    fn trees(shadow: &Shadow, root: ObjectId) -> BTreeMap<BString, ObjectId> {
        let mut out = BTreeMap::new();
        let mut todo = vec![(BString::default(), root)];
        while let Some((path, id)) = todo.pop() {
            out.insert(path.clone(), id);
            let tree = shadow.repo.find_tree(id).unwrap();
            for e in tree.decode().unwrap().entries {
                if e.mode.is_tree() {
                    let mut child = path.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(e.filename);
                    todo.push((child, e.oid.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn a_deep_change_rebuilds_exactly_the_trees_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = Shadow::create(&dir.path().join("s"), dir.path(), "t").unwrap();
        let mut old = Listing::new();
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..4 {
                    let path = format!("a{a}/b{b}/c{c}/file");
                    old.insert(path.clone().into(), blob(&shadow, &path));
                }
            }
        }
        old.insert("a1/empty".into(), item(Mode::EmptyDir, 0));
        let first = write_tree_on(&shadow, &old, None).unwrap();
        // 1 root + 5 + 25 + 100 directories.
        assert_eq!(first.built, 131);

        let mut new = old.clone();
        new.insert("a3/b2/c1/file".into(), blob(&shadow, "changed"));
        let dirty = changed_dirs(&old, &new);
        let base = Base {
            tree: first.id,
            dirty: &dirty,
        };
        let second = write_tree_on(&shadow, &new, Some(base)).unwrap();
        assert_eq!(second.built, 4, "root, a3, a3/b2, a3/b2/c1");
        // The same trees as a build from scratch, and only the ones above the change differ.
        assert_eq!(second.id, write_tree(&shadow, &new).unwrap());
        let (before, after) = (trees(&shadow, first.id), trees(&shadow, second.id));
        let differ: Vec<&BString> = after
            .iter()
            .filter(|(p, id)| before.get(*p) != Some(id))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(differ, ["", "a3", "a3/b2", "a3/b2/c1"]);

        // Adding into an empty directory, and removing a whole directory.
        let mut third = new.clone();
        third.remove(BStr::new("a1/empty"));
        third.insert("a1/empty/now".into(), blob(&shadow, "x"));
        for c in 0..4 {
            third.remove(format!("a4/b4/c{c}/file").as_bytes().as_bstr());
        }
        let dirty = changed_dirs(&new, &third);
        let base = Base {
            tree: second.id,
            dirty: &dirty,
        };
        let written = write_tree_on(&shadow, &third, Some(base)).unwrap();
        assert_eq!(written.id, write_tree(&shadow, &third).unwrap());
        // a4/b4 is gone: nothing is left below it.
        assert_eq!(written.built, 4, "root, a1, a1/empty, a4");
        assert_eq!(read_tree(&shadow, written.id).unwrap(), third);
    }

    /// Review: tree reuse must give exactly the tree a full rebuild gives, whatever the
    /// change: names sorting around '/', files becoming directories and back, empty
    /// directories filled and emptied, whole subtrees deleted, everything deleted.
    #[test]
    fn reuse_equals_full_rebuild_in_edge_cases() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = Shadow::create(&dir.path().join("s"), dir.path(), "t").unwrap();
        let empty = Item {
            mode: Mode::EmptyDir,
            oid: ObjectId::empty_tree(gix::hash::Kind::Sha1),
        };
        let mk = |spec: &[(&str, Option<&str>)]| -> Listing {
            spec.iter()
                .map(|(p, c)| {
                    let it = match c {
                        Some(text) => blob(&shadow, text),
                        None => empty,
                    };
                    (BString::from(*p), it)
                })
                .collect()
        };
        let states = [
            mk(&[
                ("a-b", Some("1")),
                ("a/b", Some("2")),
                ("a/c/d", Some("3")),
                ("a0", Some("4")),
                ("a.b", Some("4b")),
                ("x/y/z", Some("5")),
                ("x/y/w", Some("5w")),
                ("e", None),
                ("d/e", None),
                ("k/l/m", Some("6")),
                ("k/l/n", Some("7")),
                ("k-l", Some("8")),
            ]),
            mk(&[
                ("a-b", Some("1 changed")),
                ("a/b/c", Some("2 as dir")),
                ("a/b-c", Some("2b")),
                ("a/b.c", Some("2c")),
                ("a/c/d", Some("3")),
                ("a0", Some("4")),
                ("a.b", Some("4b")),
                ("e/f", Some("9")),
                ("d", None),
                ("k/l/m", Some("6")),
                ("k/l/n", Some("7")),
                ("k-l", Some("8")),
            ]),
            mk(&[
                ("a-b", Some("1 changed")),
                ("a/b", Some("2 back")),
                ("a/c/d", Some("3")),
                ("a0/x", Some("4 as dir")),
                ("a.b", Some("4b")),
                ("e", None),
                ("d", None),
                ("k/l", Some("l is a file")),
                ("k-l", Some("8")),
                ("x/y", None),
            ]),
            mk(&[("a0/x", Some("4 as dir"))]),
            mk(&[]),
            mk(&[("new/deep/file", Some("n")), ("new/deep-er", None)]),
        ];
        let mut prev: Option<(ObjectId, &Listing)> = None;
        for (n, state) in states.iter().enumerate() {
            let dirty = prev.map(|(_, listing)| changed_dirs(listing, state));
            let base = prev
                .zip(dirty.as_ref())
                .map(|((tree, _), dirty)| Base { tree, dirty });
            let reused = write_tree_on(&shadow, state, base).unwrap().id;
            let full = write_tree(&shadow, state).unwrap();
            assert_eq!(reused, full, "state {n}: reuse differs from a full rebuild");
            assert_eq!(&read_tree(&shadow, reused).unwrap(), state, "state {n}");
            prev = Some((reused, state));
        }
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
