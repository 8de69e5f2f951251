//! What changed since the last snapshot, and between snapshots (`status`, `diff`).
//!
//! Both scan the working tree in hash-only mode: blob ids are computed (reusing the stat
//! cache), nothing is written to the shadow repository.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use anyhow::Result;
use gix::bstr::{BString, ByteSlice};
use gix::ObjectId;

use crate::treasure::Treasures;

use crate::config::Tier;
use crate::history::{self, Snapshot};
use crate::listing::{self, Change, Counts, Listing};
use crate::progress::Silent;
use crate::project::Project;
use crate::snapshot::{self, Store};
use crate::store::Shadow;
use crate::walk::Notice;

#[derive(Debug, serde::Serialize)]
pub struct TierStatus {
    pub tier: String,
    pub path: String,
    pub last: Option<Snapshot>,
    pub missing: bool,
    pub counts: Counts,
    pub changes: Vec<PathChange>,
    pub unreadable: Vec<Notice>,
    pub skipped: Vec<Notice>,
    /// Treasure files on disk now (paths relative to the project root).
    pub critical: Vec<String>,
    /// Treasure files of the latest snapshot that are gone from disk.
    pub critical_missing: Vec<String>,
    /// Treasure paths whose plaintext older snapshots still hold (recorded before a pattern
    /// made them treasures).
    pub plaintext_history: Vec<PlaintextHistory>,
    /// Things the scan could not decide or had to work around.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlaintextHistory {
    pub path: String,
    /// Snapshot (commit) ids, newest first.
    pub snapshots: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PathChange {
    pub status: char,
    /// Relative to the project root.
    pub path: String,
}

/// The working tree of `tier` as it would be recorded now (None: the directory is missing).
pub fn working(
    project: &Project,
    shadow: &Shadow,
    tier: &Tier,
) -> Result<(snapshot::Previous, Option<snapshot::Scan>)> {
    let prev = snapshot::previous(shadow, &tier.name)?;
    let scan = snapshot::scan(project, shadow, tier, &prev, Store::HashOnly, &Silent)?;
    Ok((prev, scan))
}

pub fn status(project: &Project, shadow: &Shadow, tiers: &[String]) -> Result<Vec<TierStatus>> {
    let mut out = Vec::new();
    let treasures = project.config.treasures()?;
    for tier in project.config.select_tiers(tiers)? {
        let (prev, scan) = working(project, shadow, &tier)?;
        let last = prev.tip.map(|id| history::decode(shadow, id)).transpose()?;
        let empty = Listing::new();
        let now = scan.as_ref().map(|s| &s.listing).unwrap_or(&empty);
        let critical = now
            .iter()
            .filter(|(p, i)| i.mode.is_file() && treasures.in_tier(&tier.path, p))
            .map(|(p, _)| project_path(&tier, p))
            .collect();
        let critical_missing = prev
            .listing()
            .iter()
            .filter(|(p, i)| {
                i.mode.is_file()
                    && !now.contains_key(*p)
                    && (treasures.in_tier(&tier.path, p)
                        || prev.mtimes().get(*p).is_some_and(|m| m.encrypted.is_some()))
            })
            .map(|(p, _)| project_path(&tier, p))
            .collect();
        let plaintext_history = plaintext_history(shadow, &treasures, &tier)?;
        out.push(TierStatus {
            critical,
            critical_missing,
            plaintext_history,
            warnings: scan
                .as_ref()
                .map(|s| s.warnings.clone())
                .unwrap_or_default(),
            path: tier.path.clone(),
            last,
            missing: scan.is_none(),
            counts: listing::count_changes(prev.listing(), now),
            changes: path_changes(&tier, prev.listing(), now),
            unreadable: scan
                .as_ref()
                .map(|s| s.unreadable.clone())
                .unwrap_or_default(),
            skipped: scan.as_ref().map(|s| s.skipped.clone()).unwrap_or_default(),
            tier: tier.name,
        });
    }
    Ok(out)
}

/// A path inside `tier` as a path relative to the project root.
fn project_path(tier: &Tier, rel: &[u8]) -> String {
    if tier.path == "." {
        rel.to_str_lossy().into_owned()
    } else {
        format!("{}/{}", tier.path, rel.to_str_lossy())
    }
}

/// Critical files recorded in each tier's latest snapshot and missing from disk now:
/// (tier, snapshot, paths relative to the project root). Critical: a treasure by the current
/// patterns, or stored encrypted.
pub fn missing_critical(
    project: &Project,
    shadow: &Shadow,
) -> Result<Vec<(String, ObjectId, Vec<String>)>> {
    let treasures = project.config.treasures()?;
    let mut out = Vec::new();
    for tier in &project.config.tiers {
        let Some(tip) = shadow.tier_tip(&tier.name)? else {
            continue;
        };
        let listing = commit_listing(shadow, tip)?;
        let meta = crate::meta::read_note(shadow, tip)?.unwrap_or_default();
        let root = project.tier_dir_under(&project.root, tier, false)?;
        let missing: Vec<String> = listing
            .iter()
            .filter(|(p, i)| {
                i.mode.is_file()
                    && (treasures.in_tier(&tier.path, p)
                        || meta.get(*p).is_some_and(|m| m.encrypted.is_some()))
            })
            .filter(|(p, _)| {
                root.as_ref().is_none_or(|r| {
                    r.join(std::ffi::OsStr::from_bytes(p))
                        .symlink_metadata()
                        .is_err()
                })
            })
            .map(|(p, _)| project_path(tier, p))
            .collect();
        if !missing.is_empty() {
            out.push((tier.name.clone(), tip, missing));
        }
    }
    Ok(out)
}

/// Treasure paths (by the current patterns) stored as plaintext anywhere in the tier's
/// history. Each (tree, path) is examined once however many snapshots share it, and each
/// blob's first bytes once, so a long history of small changes costs little.
pub fn plaintext_history(
    shadow: &Shadow,
    treasures: &Treasures,
    tier: &Tier,
) -> Result<Vec<PlaintextHistory>> {
    if treasures.is_empty() {
        return Ok(Vec::new());
    }
    let mut walker = HistoryScan {
        shadow,
        treasures,
        tier,
        trees: HashMap::new(),
        blobs: HashMap::new(),
    };
    let mut found: BTreeMap<BString, Vec<String>> = BTreeMap::new();
    for commit in history::tier_history(shadow, &tier.name, usize::MAX)? {
        let tree = shadow.repo.find_commit(commit)?.tree_id()?.detach();
        for path in walker.tree(tree, &BString::default())?.iter() {
            found
                .entry(path.clone())
                .or_default()
                .push(commit.to_string());
        }
    }
    Ok(found
        .into_iter()
        .map(|(path, snapshots)| PlaintextHistory {
            path: project_path(tier, &path),
            snapshots,
        })
        .collect())
}

struct HistoryScan<'a> {
    shadow: &'a Shadow,
    treasures: &'a Treasures,
    tier: &'a Tier,
    trees: HashMap<(ObjectId, BString), Rc<Vec<BString>>>,
    blobs: HashMap<ObjectId, bool>,
}

impl HistoryScan<'_> {
    /// Plaintext treasure paths under `tree`, which sits at `prefix` in the tier.
    fn tree(&mut self, tree: ObjectId, prefix: &BString) -> Result<Rc<Vec<BString>>> {
        let key = (tree, prefix.clone());
        if let Some(found) = self.trees.get(&key) {
            return Ok(found.clone());
        }
        let object = self.shadow.repo.find_tree(tree)?;
        let decoded = object.decode()?;
        let entries: Vec<(BString, gix::objs::tree::EntryKind, ObjectId)> = decoded
            .entries
            .iter()
            .map(|e| (e.filename.to_owned(), e.mode.kind(), e.oid.to_owned()))
            .collect();
        let mut out = Vec::new();
        for (name, kind, oid) in entries {
            let mut path = prefix.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            use gix::objs::tree::EntryKind;
            match kind {
                EntryKind::Tree => out.extend(self.tree(oid, &path)?.iter().cloned()),
                EntryKind::Blob | EntryKind::BlobExecutable
                    if self.treasures.in_tier(&self.tier.path, &path)
                        && self.is_plaintext(oid)? =>
                {
                    out.push(path)
                }
                _ => {}
            }
        }
        let out = Rc::new(out);
        self.trees.insert(key, out.clone());
        Ok(out)
    }

    fn is_plaintext(&mut self, blob: ObjectId) -> Result<bool> {
        if let Some(known) = self.blobs.get(&blob) {
            return Ok(*known);
        }
        // An empty file reveals nothing, so it is not reported.
        let empty = blob == ObjectId::empty_blob(gix::hash::Kind::Sha1);
        let plain = !empty && !self.shadow.blob_starts_with(&blob, crate::crypt::MAGIC)?;
        self.blobs.insert(blob, plain);
        Ok(plain)
    }
}

/// Name-status lines from `old` to `new`, paths relative to the project root.
pub fn path_changes(tier: &Tier, old: &Listing, new: &Listing) -> Vec<PathChange> {
    listing::changes(old, new)
        .into_iter()
        .map(|(p, c): (_, Change)| PathChange {
            status: c.letter(),
            path: project_path(tier, p),
        })
        .collect()
}

pub fn commit_listing(shadow: &Shadow, commit: ObjectId) -> Result<Listing> {
    let tree = shadow.repo.find_commit(commit)?.tree_id()?.detach();
    listing::read_tree(shadow, tree)
}

/// `mirror diff`: between the working tree and a snapshot, or between two snapshots.
pub fn diff(
    project: &Project,
    shadow: &Shadow,
    tiers: &[String],
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<PathChange>> {
    let mut out = Vec::new();
    match (from, to) {
        (None, _) | (Some("latest"), None) => {
            for status in status(project, shadow, tiers)? {
                out.extend(status.changes);
            }
        }
        (Some(rev), None) => {
            for (tier, commit) in selected(project, shadow, rev, tiers)? {
                let old = commit_listing(shadow, commit)?;
                let (_, scan) = working(project, shadow, &tier)?;
                let now = scan.map(|s| s.listing).unwrap_or_default();
                out.extend(path_changes(&tier, &old, &now));
            }
        }
        (Some(a), Some(b)) => {
            let from = selected(project, shadow, a, tiers)?;
            let to = selected(project, shadow, b, tiers)?;
            let mut compared = 0;
            for (tier, ca) in &from {
                // Two milestones compare tier by tier; two snapshots must be of one tier.
                let Some((_, cb)) = to.iter().find(|(t, _)| t.name == tier.name) else {
                    continue;
                };
                compared += 1;
                out.extend(path_changes(
                    tier,
                    &commit_listing(shadow, *ca)?,
                    &commit_listing(shadow, *cb)?,
                ));
            }
            if compared == 0 {
                let names = |v: &[(crate::config::Tier, ObjectId)]| {
                    v.iter()
                        .map(|(t, _)| t.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(crate::error::Error::Usage(format!(
                    "'{a}' holds tier(s) {} and '{b}' tier(s) {}: nothing in common to compare",
                    names(&from),
                    names(&to)
                ))
                .into());
            }
        }
    }
    Ok(out)
}

/// The tier snapshots `rev` names, narrowed to `tiers` when given.
fn selected(
    project: &Project,
    shadow: &Shadow,
    rev: &str,
    tiers: &[String],
) -> Result<Vec<(crate::config::Tier, ObjectId)>> {
    let resolved = history::resolve(shadow, &project.config, rev)?;
    let mut out = Vec::new();
    for (name, commit) in resolved.tiers {
        if tiers.is_empty() || tiers.contains(&name) {
            out.push((project.config.select_tiers(&[name])?.remove(0), commit));
        }
    }
    Ok(out)
}
