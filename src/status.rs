//! What changed since the last snapshot, and between snapshots (`status`, `diff`).
//!
//! Both scan the working tree in hash-only mode: blob ids are computed (reusing the stat
//! cache), nothing is written to the shadow repository.

use anyhow::Result;
use gix::bstr::ByteSlice;
use gix::ObjectId;

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
    for tier in project.config.select_tiers(tiers)? {
        let (prev, scan) = working(project, shadow, &tier)?;
        let last = prev.tip.map(|id| history::decode(shadow, id)).transpose()?;
        let empty = Listing::new();
        let now = scan.as_ref().map(|s| &s.listing).unwrap_or(&empty);
        out.push(TierStatus {
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

/// Name-status lines from `old` to `new`, paths relative to the project root.
pub fn path_changes(tier: &Tier, old: &Listing, new: &Listing) -> Vec<PathChange> {
    listing::changes(old, new)
        .into_iter()
        .map(|(p, c): (_, Change)| PathChange {
            status: c.letter(),
            path: if tier.path == "." {
                p.to_str_lossy().into_owned()
            } else {
                format!("{}/{}", tier.path, p.to_str_lossy())
            },
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
