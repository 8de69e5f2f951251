//! The snapshot after filesystem events (`mirror watch`): only the paths the events named are
//! looked at, plus the entries the stat cache cannot vouch for; everything else is the
//! previous snapshot as its stat cache holds it. The change is applied to that cache in
//! place, trees and metadata are rebuilt only above it, and the cache's journal gets one
//! record. Its cost follows the size of the change and the depth of its paths, not the size
//! of the tier: no whole walk, no whole listing, no whole cache written.
//!
//! It must record exactly what a full scan would (the watch tests compare the two with
//! `mirror status` after every kind of change): the rules for unreadable paths and empty
//! directories below are the full scan's, applied to the region the events cover.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;

use anyhow::{bail, Context, Result};
use gix::bstr::{BString, ByteSlice};

use super::{
    commit_tier, now_ns, placeholder_stat, read_walked, CommitContext, EmptyPolicy, Outcome,
    Previous, Store, TierReport,
};
use crate::config::Tier;
use crate::listing::{self, Counts, Item, Listing, Mode};
use crate::meta::{self, Mtimes};
use crate::progress::Progress;
use crate::project::Project;
use crate::statcache::{self, Cache, CacheEntry, Entries, Totals};
use crate::store::Shadow;
use crate::walk;

/// Can the snapshot of `tier` be taken from events alone? Only against a stat cache of the
/// tip, decided under the current treasure patterns, with the tier directory present (a
/// vanished tier is the full scan's to judge).
pub(super) fn applies(project: &Project, tier: &Tier, prev: &Previous) -> bool {
    let Some(cache) = prev.cache_of_tip() else {
        return false;
    };
    let Ok(treasures) = project.config.treasures() else {
        return false;
    };
    cache.treasures == treasures.fingerprint(&tier.path)
        && matches!(
            project.tier_dir_under(&project.root, tier, false),
            Ok(Some(_))
        )
}

/// Snapshot `tier` re-examining only `focus` (tier-relative paths: files or whole subtrees).
/// Returns the report, the stat cache of the tier's new tip, and the paths it could not read.
#[allow(clippy::too_many_arguments)]
pub(super) fn snapshot_tier(
    project: &Project,
    shadow: &Shadow,
    tier: &Tier,
    prev: Previous,
    focus: &[BString],
    empty: EmptyPolicy,
    context: &CommitContext,
    progress: &dyn Progress,
) -> Result<(TierReport, Cache, Vec<BString>)> {
    let scan_start_ns = now_ns();
    let root = project
        .tier_dir_under(&project.root, tier, false)?
        .with_context(|| {
            format!(
                "tier directory {} vanished",
                project.tier_root(tier).display()
            )
        })?;
    let filters = project.filters(tier)?;
    let mut prev = prev;
    let Some(cache) = prev.cache.as_mut() else {
        bail!("internal error: a focused snapshot needs the stat cache of the tip");
    };
    let scopes = scopes(focus, cache);
    let mut walked = walk::walk_focused(&root, &filters, Some(&scopes))
        .with_context(|| format!("tier '{}': could not walk {}", tier.name, root.display()))?;
    let dirs = std::mem::take(&mut walked.dirs);
    let (scan, unreadable) = read_walked(
        project,
        shadow,
        tier,
        &prev,
        Store::Write,
        &root,
        walked,
        scan_start_ns,
        progress,
    )?;
    let Previous { tip, cache, .. } = prev;
    let (Some(tip), Some(mut cache)) = (tip, cache) else {
        bail!("internal error: a focused snapshot needs a tip and its stat cache");
    };

    // The region the scan answers for: the scopes, and what could not be read (a directory
    // on the way to a scope, say), whose recorded entries are kept as they were.
    let regions = minimal(
        scopes
            .into_iter()
            .chain(unreadable.iter().map(|(p, _)| p.clone()))
            .collect(),
    );
    let regions = Regions::new(&regions);

    // What the region holds now: the files read, then what could not be read kept as
    // recorded (stat data unknown, so looked at again next time), then empty directories.
    let mut fresh: BTreeMap<BString, CacheEntry> = BTreeMap::new();
    let read = scan.listing.iter().zip(&scan.mtimes).zip(&scan.stats);
    for (((path, item), (_, meta)), (_, stat)) in read {
        let entry = CacheEntry {
            item: *item,
            stat: *stat,
            encrypted: meta.encrypted,
            racy: statcache::is_racy(stat, scan_start_ns),
        };
        fresh.insert(path.clone(), entry);
    }
    let mut busy: HashSet<&[u8]> = HashSet::new();
    for (path, _) in &unreadable {
        busy.insert(path.as_slice());
        super::mark_ancestors(path, &mut busy);
        for (p, e) in within(&cache.entries, path) {
            let meta = e.item.mode.is_file().then(|| e.file_meta());
            let stat = placeholder_stat(&e.item, meta.as_ref());
            let kept = CacheEntry {
                item: e.item,
                stat,
                encrypted: e.encrypted,
                racy: statcache::is_racy(&stat, scan_start_ns),
            };
            fresh.insert(p.clone(), kept);
        }
    }
    // A directory the walk entered is empty when nothing is recorded below it: nothing read
    // or kept in the region, no other directory entered, nothing recorded outside the region.
    let entered: BTreeSet<&[u8]> = dirs.iter().map(|d| d.as_slice()).collect();
    let mut empties = Vec::new();
    for dir in &dirs {
        if busy.contains(dir.as_slice()) {
            continue;
        }
        let mut below = dir.to_vec();
        below.push(b'/');
        let occupied = first_from(&fresh, &below).is_some_and(|p| p.starts_with(&below))
            || entered
                .range::<[u8], _>((Bound::Included(below.as_slice()), Bound::Unbounded))
                .next()
                .is_some_and(|p| p.starts_with(&below))
            || recorded_outside(&cache.entries, &below, &regions);
        if !occupied {
            empties.push(dir.clone());
        }
    }
    for dir in empties {
        let item = Item {
            mode: Mode::EmptyDir,
            oid: gix::ObjectId::empty_tree(gix::hash::Kind::Sha1),
        };
        let stat = placeholder_stat(&item, None);
        let entry = CacheEntry {
            item,
            stat,
            encrypted: None,
            racy: statcache::is_racy(&stat, scan_start_ns),
        };
        fresh.insert(dir, entry);
    }

    // What the region held: its recorded entries, and those at the directories entered (an
    // empty directory that is one no longer, say).
    let meta_of = |e: &CacheEntry| e.item.mode.is_file().then(|| e.file_meta());
    let (counts, committed, change) = {
        let mut old: BTreeMap<&BString, &CacheEntry> = BTreeMap::new();
        for region in regions.paths() {
            old.extend(within(&cache.entries, region));
        }
        for dir in &dirs {
            old.extend(cache.entries.get_key_value(dir.as_slice()));
        }
        diff(old, fresh, meta_of)
    };

    // The counts after the change, worked out before the cache is touched.
    let totals_before = *cache
        .totals
        .get_or_insert_with(|| Totals::of(&cache.entries));
    let mut totals = totals_before;
    for path in &change.removals {
        if let Some(e) = cache.entries.get(path) {
            totals.add(e, -1);
        }
    }
    for (path, e) in &change.upserts {
        if let Some(was) = cache.entries.get(path) {
            totals.add(was, -1);
        }
        totals.add(e, 1);
    }
    let unreadable_paths: Vec<BString> = unreadable.iter().map(|(p, _)| p.clone()).collect();
    let mut report = TierReport {
        tier: tier.name.clone(),
        outcome: Outcome::Unchanged,
        commit: Some(tip),
        counts,
        files: totals.scanned,
        bytes: totals.bytes,
        unreadable: super::notices(unreadable),
        skipped: scan.skipped,
        mass_delete: None,
        critical: totals.critical,
        warnings: scan.warnings,
        leftovers: scan.leftovers,
        // Not built here: that is what makes this snapshot cheap. Only checkout plans
        // against a snapshot's listing, and it takes full snapshots.
        listing: Listing::new(),
        mtimes: Mtimes::new(),
    };
    let prev_files = totals_before.recorded;
    if !committed.is_empty() && totals.recorded == 0 && prev_files > 0 {
        match empty {
            EmptyPolicy::Skip => {
                report.outcome = Outcome::Nothing;
                return Ok((report, cache, unreadable_paths));
            }
            EmptyPolicy::Refuse => bail!(
                "tier directory {} is empty but its last snapshot had {prev_files} files; not recording that as deleted — pass --allow-empty if the deletion is real",
                project.tier_root(tier).display()
            ),
            EmptyPolicy::Allow => {}
        }
    }
    report.mass_delete =
        (prev_files > 0 && counts.deleted * 2 > prev_files).then_some((counts.deleted, prev_files));

    // Apply the change to the cache: it is the new state of the whole tier.
    let mut unvouched = cache.unvouched.take().unwrap_or_default();
    for path in &change.removals {
        cache.entries.remove(path);
        unvouched.remove(path);
    }
    for (path, e) in &change.upserts {
        cache.entries.insert(path.clone(), e.clone());
        if e.unvouched() {
            unvouched.insert(path.clone());
        } else {
            unvouched.remove(path);
        }
    }
    cache.unvouched = Some(unvouched);
    cache.totals = Some(totals);
    cache.scan_start_ns = scan_start_ns;

    if !committed.is_empty() {
        let mut dirty = listing::Dirty::new();
        for path in &committed {
            listing::mark_dirty(path, &mut dirty);
        }
        let id = commit_tier(
            shadow,
            tier,
            Some(tip),
            &dirty,
            context,
            &report,
            |base, meta_base| {
                let tree =
                    listing::write_tree_from(shadow, &cache.entries, |e| Some(e.item), base)?.id;
                let meta_tree = meta::write_tree_from(shadow, &cache.entries, meta_of, meta_base)?;
                Ok((tree, meta_tree))
            },
        )?;
        report.outcome = Outcome::Recorded;
        report.commit = Some(id);
        cache.commit = Some(id);
    }
    if !change.upserts.is_empty() || !change.removals.is_empty() {
        // The snapshot is recorded; a cache that cannot be saved only costs re-reading files
        // (it no longer matches the tip), so it is reported, not fatal.
        let path = super::cache_path(shadow, &tier.name);
        if let Err(err) = cache.persist(&path, Some(tip), &change) {
            report
                .warnings
                .push(format!("could not save the stat cache: {err:#}"));
        }
    }
    Ok((report, cache, unreadable_paths))
}

/// The difference between what a region held and holds: change counts and the paths that
/// differ for the commit (content, mode, metadata), and everything that differs for the
/// cache (stat data included).
fn diff(
    old: BTreeMap<&BString, &CacheEntry>,
    fresh: BTreeMap<BString, CacheEntry>,
    meta_of: impl Fn(&CacheEntry) -> Option<meta::FileMeta>,
) -> (Counts, Vec<BString>, statcache::Change) {
    let mut counts = Counts::default();
    let mut committed: Vec<BString> = Vec::new();
    let mut change = statcache::Change::default();
    for (path, was, now) in listing::merge_sorted(old, &fresh) {
        let items_differ = counts.count(was.map(|e| &e.item), now.map(|e| &e.item));
        if items_differ || was.and_then(&meta_of) != now.and_then(&meta_of) {
            committed.push(path.clone());
        }
        match (was, now) {
            (Some(was), Some(now)) if was == now => {}
            (_, Some(now)) => change.upserts.push((path.clone(), now.clone())),
            (Some(_), None) => change.removals.push(path.clone()),
            (None, None) => {}
        }
    }
    (counts, committed, change)
}

/// The paths to look at: the events' `focus`, and the entries the cache cannot vouch for
/// (collected once per cache, then kept up to date).
fn scopes(focus: &[BString], cache: &mut Cache) -> Vec<BString> {
    let unvouched = cache.unvouched.get_or_insert_with(|| {
        cache
            .entries
            .iter()
            .filter(|(_, e)| e.unvouched())
            .map(|(p, _)| p.clone())
            .collect()
    });
    minimal(focus.iter().chain(unvouched.iter()).cloned().collect())
}

/// Sorted, without duplicates, and without paths inside another one of them.
fn minimal(mut paths: Vec<BString>) -> Vec<BString> {
    paths.sort_unstable();
    paths.dedup();
    let all: HashSet<&[u8]> = paths.iter().map(|p| p.as_slice()).collect();
    let covered =
        |p: &[u8]| all.contains(&b""[..]) && !p.is_empty() || ancestors(p).any(|a| all.contains(a));
    let keep: Vec<bool> = paths.iter().map(|p| !covered(p)).collect();
    paths
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

/// The directories above `path` (not the root), nearest first.
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut p = path;
    std::iter::from_fn(move || {
        let slash = p.rfind_byte(b'/')?;
        p = &p[..slash];
        Some(p)
    })
}

/// The paths a scan answered for: each covers itself and everything below it.
struct Regions<'a> {
    paths: &'a [BString],
    set: HashSet<&'a [u8]>,
}

impl<'a> Regions<'a> {
    fn new(paths: &'a [BString]) -> Self {
        Regions {
            paths,
            set: paths.iter().map(|p| p.as_slice()).collect(),
        }
    }

    fn paths(&self) -> &'a [BString] {
        self.paths
    }

    /// The region `path` lies in, if any.
    fn of<'p>(&self, path: &'p [u8]) -> Option<&'p [u8]> {
        if self.set.contains(&b""[..]) {
            return Some(&path[..0]);
        }
        std::iter::once(path)
            .chain(ancestors(path))
            .find(|p| self.set.contains(p))
    }
}

/// The entries at `scope` and below it (all of them for the empty scope, the tier root).
fn within<'e>(
    entries: &'e Entries,
    scope: &[u8],
) -> impl Iterator<Item = (&'e BString, &'e CacheEntry)> {
    let mut below = scope.to_vec();
    if !below.is_empty() {
        below.push(b'/');
    }
    let exact = (!scope.is_empty())
        .then(|| entries.get_key_value(scope))
        .flatten();
    let range = entries
        .range::<[u8], _>((Bound::Included(below.as_slice()), Bound::Unbounded))
        .take_while(move |(p, _)| p.starts_with(&below));
    exact.into_iter().chain(range)
}

/// The first key of `map` at or after `key`.
fn first_from<'m, V>(map: &'m BTreeMap<BString, V>, key: &[u8]) -> Option<&'m BString> {
    map.range::<[u8], _>((Bound::Included(key), Bound::Unbounded))
        .next()
        .map(|(p, _)| p)
}

/// Does the cache record anything below `prefix` (a directory and its `/`) outside the
/// regions? Whole regions are skipped by seeking past them, not visited entry by entry.
fn recorded_outside(entries: &Entries, prefix: &[u8], regions: &Regions) -> bool {
    let mut key = prefix.to_vec();
    loop {
        let Some(path) = first_from(entries, &key) else {
            return false;
        };
        if !path.starts_with(prefix) {
            return false;
        }
        let Some(region) = regions.of(path) else {
            return true;
        };
        if region.is_empty() {
            return false;
        }
        key.clear();
        key.extend_from_slice(region);
        if region.len() == path.len() {
            // The region is this very path: the next key after it.
            key.push(0);
        } else {
            // Past everything below "region/".
            key.push(b'/' + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<BString> {
        list.iter().map(|p| BString::from(*p)).collect()
    }

    #[test]
    fn minimal_drops_paths_inside_others() {
        assert_eq!(
            minimal(paths(&["a/b/c", "a-x", "a/b", "a/b", "a0", "z/y", "a/bc"])),
            paths(&["a-x", "a/b", "a/bc", "a0", "z/y"])
        );
        assert_eq!(minimal(paths(&["x", "", "y/z"])), paths(&[""]));
    }

    #[test]
    fn regions_skip_whole_subtrees_but_not_neighbours() {
        let entry = CacheEntry {
            item: Item {
                mode: Mode::File,
                oid: gix::ObjectId::empty_blob(gix::hash::Kind::Sha1),
            },
            stat: Default::default(),
            encrypted: None,
            racy: false,
        };
        let entries: Entries = ["d/a", "d/a/x", "d/a/y", "d/a-b", "e/f"]
            .into_iter()
            .map(|p| (BString::from(p), entry.clone()))
            .collect();
        let r = paths(&["d/a"]);
        let regions = Regions::new(&r);
        // "d/a-b" sorts between "d/a" and "d/a/x" and lies outside the region.
        assert!(recorded_outside(&entries, b"d/", &regions));
        let r = paths(&["d/a", "d/a-b"]);
        assert!(!recorded_outside(&entries, b"d/", &Regions::new(&r)));
        assert!(recorded_outside(&entries, b"e/", &Regions::new(&r)));
        let within_a: Vec<&BString> = within(&entries, b"d/a").map(|(p, _)| p).collect();
        assert_eq!(within_a, ["d/a", "d/a/x", "d/a/y"]);
        assert_eq!(within(&entries, b"").count(), 5);
    }
}
