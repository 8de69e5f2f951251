//! `mirror verify`: is the backup whole, and if not, what exactly is lost?
//!
//! Every object is read back and re-hashed, never trusted because it exists: a flipped byte in
//! a loose object or a pack is a hash mismatch, a truncated one an inflate error, a deleted one
//! missing. Each problem is reported with what depends on it — the tiers, the snapshots and
//! the file paths — found by a second pass over the history that only runs when something
//! is wrong.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Result;
use gix::bstr::{BString, ByteSlice};
use gix::objs::Kind;
use gix::ObjectId;

use crate::history;
use crate::progress::Progress;
use crate::project::Project;
use crate::store::Shadow;

const SHA1: gix::hash::Kind = gix::hash::Kind::Sha1;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these tiers (all when empty).
    pub tiers: Vec<String>,
    /// Read and re-hash every reachable blob, not only those of each tier's newest snapshot.
    pub full: bool,
    /// Decrypt every encrypted blob in scope with the identity.
    pub decrypt: bool,
    /// Compare the working tree with the latest snapshots.
    pub worktree: bool,
    /// Compare every remote's refs with the shadow's.
    pub remotes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    Missing,
    Corrupt,
    Ref,
    Audit,
    Decrypt,
    Worktree,
    Remote,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Affected {
    pub tier: String,
    #[serde(serialize_with = "ser_oid")]
    pub snapshot: ObjectId,
    /// Tier-relative; `None` when the whole snapshot is affected (its commit or root tree).
    pub path: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    #[serde(serialize_with = "ser_opt_oid")]
    pub object: Option<ObjectId>,
    pub message: String,
    pub affected: Vec<Affected>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub problems: Vec<Problem>,
    /// Informational lines (e.g. files changed in the working tree since the last snapshot).
    pub notes: Vec<String>,
}

fn ser_oid<S: serde::Serializer>(id: &ObjectId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_string())
}

fn ser_opt_oid<S: serde::Serializer>(
    id: &Option<ObjectId>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.serialize_str(&id.to_string()),
        None => s.serialize_none(),
    }
}

struct Checker<'a> {
    shadow: &'a Shadow,
    progress: &'a dyn Progress,
    /// Objects read and found sound.
    good: HashSet<ObjectId>,
    /// Objects found missing or corrupt, with why.
    bad: HashMap<ObjectId, (ProblemKind, Kind, String)>,
    /// Trees whose blobs have all been read too.
    full_trees: HashSet<ObjectId>,
    /// Sound objects found where another kind was expected: a problem of whatever points
    /// at them, not of the objects.
    mismatches: Vec<String>,
    objects: u64,
    bytes: u64,
}

impl Checker<'_> {
    fn is_bad(&self, id: &ObjectId) -> bool {
        self.bad.contains_key(id)
    }

    fn fail(&mut self, id: ObjectId, object: Kind, kind: ProblemKind, why: String) {
        self.bad.entry(id).or_insert((kind, object, why));
    }

    /// Read a non-blob object, check its hash and that it parses as `kind`.
    fn object(&mut self, id: ObjectId, kind: Kind) -> Option<Vec<u8>> {
        let (actual, data) = self.any(id, kind)?;
        if actual != kind {
            self.mismatches
                .push(format!("{id} is a {actual} where a {kind} was expected"));
            return None;
        }
        Some(data)
    }

    /// Read any object, check its hash (as the kind it says it is) and that it parses.
    /// `expected` only names what a missing object was supposed to be.
    fn any(&mut self, id: ObjectId, expected: Kind) -> Option<(Kind, Vec<u8>)> {
        let kind = expected;
        if self.is_bad(&id) {
            return None;
        }
        let mut buf = Vec::new();
        let found = gix::objs::Find::try_find(&self.shadow.repo.objects, &id, &mut buf);
        self.objects += 1;
        self.progress.advance(1);
        let data = match found {
            Ok(Some(data)) => data,
            Ok(None) => {
                self.fail(id, kind, ProblemKind::Missing, "missing".into());
                return None;
            }
            Err(err) => {
                self.fail(
                    id,
                    kind,
                    ProblemKind::Corrupt,
                    format!("unreadable: {}", err_chain(&err)),
                );
                return None;
            }
        };
        self.bytes += data.data.len() as u64;
        let kind = data.kind;
        let actual = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data.data);
        if actual.ok() != Some(id) {
            self.fail(
                id,
                kind,
                ProblemKind::Corrupt,
                "content does not hash to its id".into(),
            );
            return None;
        }
        let parses = match kind {
            Kind::Tree => gix::objs::TreeRef::from_bytes(data.data, SHA1).is_ok(),
            Kind::Commit => gix::objs::CommitRef::from_bytes(data.data, SHA1).is_ok(),
            Kind::Tag => gix::objs::TagRef::from_bytes(data.data, SHA1).is_ok(),
            Kind::Blob => true,
        };
        if !parses {
            self.fail(
                id,
                kind,
                ProblemKind::Corrupt,
                format!("does not parse as a {kind}"),
            );
            return None;
        }
        let out = data.data.to_vec();
        self.good.insert(id);
        Some((kind, out))
    }

    /// Read a blob completely, streaming, and check its hash.
    fn blob(&mut self, id: ObjectId) {
        if self.good.contains(&id) || self.is_bad(&id) {
            return;
        }
        self.objects += 1;
        self.progress.advance(1);
        if !gix::objs::Exists::exists(&self.shadow.repo.objects, &id) {
            self.fail(id, Kind::Blob, ProblemKind::Missing, "missing".into());
            return;
        }
        let result = self.shadow.open_blob(&id).and_then(|(_, mut reader)| {
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0u64;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return Ok(n),
                    Ok(k) => n += k as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(anyhow::Error::new(e)),
                }
            }
        });
        match result {
            Ok(n) => {
                self.bytes += n;
                self.good.insert(id);
            }
            Err(err) => self.fail(id, Kind::Blob, ProblemKind::Corrupt, format!("{err:#}")),
        }
    }

    /// Check a tree and everything below it; blobs only when `blobs` is set.
    fn tree(&mut self, id: ObjectId, blobs: bool) {
        let done = if blobs {
            self.full_trees.contains(&id)
        } else {
            self.good.contains(&id)
        };
        if self.is_bad(&id) || done {
            return;
        }
        if blobs {
            self.full_trees.insert(id);
        }
        let Some(data) = self.object(id, Kind::Tree) else {
            return;
        };
        let entries: Vec<(gix::objs::tree::EntryKind, ObjectId)> =
            match gix::objs::TreeRef::from_bytes(&data, SHA1) {
                Ok(tree) => tree
                    .entries
                    .iter()
                    .map(|e| (e.mode.kind(), e.oid.to_owned()))
                    .collect(),
                Err(_) => return,
            };
        for (kind, oid) in entries {
            use gix::objs::tree::EntryKind;
            match kind {
                EntryKind::Tree => self.tree(oid, blobs),
                EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link if blobs => {
                    self.blob(oid)
                }
                _ => {}
            }
        }
    }

    /// A commit and its tree; returns its parents.
    fn commit(&mut self, id: ObjectId, blobs: bool) -> Vec<ObjectId> {
        let Some(data) = self.object(id, Kind::Commit) else {
            return Vec::new();
        };
        let Ok(commit) = gix::objs::CommitRef::from_bytes(&data, SHA1) else {
            return Vec::new();
        };
        let parents: Vec<ObjectId> = commit.parents().collect();
        self.tree(commit.tree(), blobs);
        parents
    }

    /// Every commit reachable from `tip` (all parents), with trees; blobs as asked.
    fn history(&mut self, tip: ObjectId, blobs_of_tip: bool, blobs: bool) {
        let mut todo = vec![(tip, blobs_of_tip)];
        let mut seen = HashSet::new();
        while let Some((id, with_blobs)) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            for parent in self.commit(id, with_blobs || blobs) {
                todo.push((parent, blobs));
            }
        }
    }
}

fn err_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub fn verify(
    project: &Project,
    shadow: &Shadow,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Report> {
    let started = Instant::now();
    let tiers = project.config.select_tiers(&options.tiers)?;
    let mut report = Report::default();
    let mut checker = Checker {
        shadow,
        progress,
        good: HashSet::new(),
        bad: HashMap::new(),
        full_trees: HashSet::new(),
        mismatches: Vec::new(),
        objects: 0,
        bytes: 0,
    };
    progress.begin("verifying", 0);

    // 1. Every ref resolves to an object that is there.
    let refs = crate::remote::mirror_refs(shadow)?;
    for (name, target) in &refs {
        match target {
            None => report.problems.push(Problem {
                kind: ProblemKind::Ref,
                object: None,
                message: format!("{name} does not resolve to an object"),
                affected: Vec::new(),
            }),
            Some(id) if !gix::objs::Exists::exists(&shadow.repo.objects, id) => {
                report.problems.push(Problem {
                    kind: ProblemKind::Ref,
                    object: Some(*id),
                    message: format!("{name} points at {id}, which is missing"),
                    affected: Vec::new(),
                })
            }
            Some(_) => {}
        }
    }

    // 2. Tier histories: commits and trees always; blobs of the newest snapshot (all with
    // --full).
    let selected: BTreeSet<String> = tiers
        .iter()
        .map(|t| crate::store::tier_ref(&t.name))
        .collect();
    for (name, target) in &refs {
        let Some(id) = target else { continue };
        if name.starts_with("refs/heads/tiers/") {
            if selected.contains(name) {
                checker.history(*id, true, options.full);
            }
        } else if name.starts_with("refs/tags/") {
            // mirror's tags are annotated, on a milestone commit whose parents are tier
            // snapshots; a lightweight tag a user made on a commit is fine too.
            match checker.any(*id, Kind::Tag) {
                Some((Kind::Tag, data)) => {
                    if let Ok(tag) = gix::objs::TagRef::from_bytes(&data, SHA1) {
                        checker.history(tag.target(), options.full, options.full);
                    }
                }
                Some((Kind::Commit, _)) => checker.history(*id, options.full, options.full),
                Some((other, _)) => report.problems.push(Problem {
                    kind: ProblemKind::Ref,
                    object: Some(*id),
                    message: format!("{name} points at a {other}, not a tag or commit"),
                    affected: Vec::new(),
                }),
                None => {}
            }
        } else {
            // The notes, the mirror.yaml history, the audit trail: small, read whole.
            checker.history(*id, true, true);
        }
    }
    progress.end();

    for m in std::mem::take(&mut checker.mismatches) {
        report.problems.push(Problem {
            kind: ProblemKind::Ref,
            object: None,
            message: format!("wrong object type: {m}"),
            affected: Vec::new(),
        });
    }

    // 3. The audit chain (a broken one is a finding, not a reason to stop).
    let audit = crate::audit::verify(shadow).unwrap_or_else(|err| crate::audit::Verification {
        entries: 0,
        problems: vec![format!("{err:#}")],
    });
    for p in audit.problems {
        report.problems.push(Problem {
            kind: ProblemKind::Audit,
            object: None,
            message: format!("audit trail: {p}"),
            affected: Vec::new(),
        });
    }

    // 4. What the bad objects take with them.
    if !checker.bad.is_empty() {
        let tips: Vec<(String, ObjectId)> = refs
            .iter()
            .filter_map(|(name, id)| {
                let tier = name.strip_prefix("refs/heads/tiers/")?;
                Some((tier.to_owned(), (*id)?))
            })
            .collect();
        let mut affected = affected_by(shadow, &tips, &checker.bad);
        for (id, found) in notes_affected(shadow, &checker.bad) {
            affected.entry(id).or_default().extend(found);
        }
        let mut bad: Vec<(&ObjectId, &(ProblemKind, Kind, String))> = checker.bad.iter().collect();
        bad.sort_by_key(|(id, _)| **id);
        for (id, (kind, object_kind, why)) in bad {
            report.problems.push(Problem {
                kind: *kind,
                object: Some(*id),
                message: format!("{object_kind} {id} is {}", describe(*kind, why)),
                affected: affected.get(id).cloned().unwrap_or_default(),
            });
        }
    }

    // 5. Decryption of the encrypted blobs in scope.
    if options.decrypt {
        decrypt_check(
            project,
            shadow,
            &tiers,
            options.full,
            &checker.bad,
            &mut report,
        )?;
    }
    if options.worktree {
        worktree_check(project, shadow, &options.tiers, &mut report)?;
    }
    if options.remotes {
        remotes_check(project, shadow, &refs, &mut report);
    }
    report.objects = checker.objects;
    report.bytes = checker.bytes;
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = report.problems.is_empty();
    Ok(report)
}

fn describe(kind: ProblemKind, why: &str) -> String {
    match kind {
        ProblemKind::Missing => "missing".into(),
        _ => format!("corrupt ({why})"),
    }
}

/// For each bad object: every (tier, snapshot, path) whose tree reaches it. Trees are
/// examined once each (their findings are relative to themselves), so this costs about one
/// pass over the distinct trees of the history.
fn affected_by(
    shadow: &Shadow,
    tips: &[(String, ObjectId)],
    bad: &HashMap<ObjectId, (ProblemKind, Kind, String)>,
) -> HashMap<ObjectId, Vec<Affected>> {
    let mut out: HashMap<ObjectId, Vec<Affected>> = HashMap::new();
    let mut memo: HashMap<ObjectId, Rc<Vec<(BString, ObjectId)>>> = HashMap::new();
    for (tier, tip) in tips {
        let mut next = Some(*tip);
        let mut seen = HashSet::new();
        while let Some(id) = next {
            if !seen.insert(id) {
                break;
            }
            let mut whole = |oid: ObjectId| {
                out.entry(oid).or_default().push(Affected {
                    tier: tier.clone(),
                    snapshot: id,
                    path: None,
                })
            };
            if bad.contains_key(&id) {
                whole(id);
                break;
            }
            let Ok(commit) = shadow.repo.find_commit(id) else {
                break;
            };
            let Ok(tree) = commit.tree_id() else { break };
            let tree = tree.detach();
            if bad.contains_key(&tree) {
                whole(tree);
            } else {
                for (path, oid) in bad_under(shadow, tree, bad, &mut memo).iter() {
                    out.entry(*oid).or_default().push(Affected {
                        tier: tier.clone(),
                        snapshot: id,
                        path: Some(path.to_str_lossy().into_owned()),
                    });
                }
            }
            next = commit.parent_ids().next().map(|p| p.detach());
        }
    }
    out
}

/// A damaged metadata note takes its snapshot's times, permissions and encryption records
/// with it: name that snapshot (one entry per tier commit, flat or fanned out by its first
/// two hex digits; the entry is a blob in format version 1, a tree of per-directory records
/// blobs since version 2, whose unchanged parts later snapshots share).
fn notes_affected(
    shadow: &Shadow,
    bad: &HashMap<ObjectId, (ProblemKind, Kind, String)>,
) -> HashMap<ObjectId, Vec<Affected>> {
    let mut out: HashMap<ObjectId, Vec<Affected>> = HashMap::new();
    let Ok(Some(notes)) = shadow.ref_target(crate::store::NOTES_REF) else {
        return out;
    };
    let Ok(tree) = shadow.repo.find_commit(notes).and_then(|c| c.tree_id()) else {
        return out;
    };
    let Ok(tree) = shadow.repo.find_tree(tree) else {
        return out;
    };
    let Ok(decoded) = tree.decode() else {
        return out;
    };
    let mut memo = HashMap::new();
    // Notes flat (`<40 hex>`) or fanned out (`<2 hex>/<38 hex>`).
    let mut notes: Vec<(Vec<u8>, bool, ObjectId)> = Vec::new();
    for entry in &decoded.entries {
        let name: &[u8] = entry.filename;
        if name.len() == 2 && entry.mode.is_tree() {
            let Ok(fan) = shadow.repo.find_tree(entry.oid.to_owned()) else {
                continue;
            };
            let Ok(fan) = fan.decode().map(|d| {
                d.entries
                    .iter()
                    .map(|e| {
                        let mut full = name.to_vec();
                        full.extend_from_slice(e.filename);
                        (full, e.mode.is_tree(), e.oid.to_owned())
                    })
                    .collect::<Vec<_>>()
            }) else {
                continue;
            };
            notes.extend(fan);
        } else {
            notes.push((name.to_vec(), entry.mode.is_tree(), entry.oid.to_owned()));
        }
    }
    for (name, is_tree, note) in notes {
        let Ok(commit) = ObjectId::from_hex(&name) else {
            continue;
        };
        let found: Vec<ObjectId> = if bad.contains_key(&note) {
            vec![note]
        } else if is_tree {
            bad_under(shadow, note, bad, &mut memo)
                .iter()
                .map(|(_, id)| *id)
                .collect()
        } else {
            Vec::new()
        };
        if found.is_empty() {
            continue;
        }
        let tier = history::decode(shadow, commit)
            .map(|s| s.tier)
            .unwrap_or_else(|_| "?".into());
        for id in found {
            out.entry(id).or_default().push(Affected {
                tier: tier.clone(),
                snapshot: commit,
                path: Some("(metadata note: times, permissions, encryption records)".into()),
            });
        }
    }
    out
}

/// (path relative to `tree`, bad object) for every bad entry below a sound tree.
fn bad_under(
    shadow: &Shadow,
    tree: ObjectId,
    bad: &HashMap<ObjectId, (ProblemKind, Kind, String)>,
    memo: &mut HashMap<ObjectId, Rc<Vec<(BString, ObjectId)>>>,
) -> Rc<Vec<(BString, ObjectId)>> {
    if let Some(found) = memo.get(&tree) {
        return found.clone();
    }
    let mut out = Vec::new();
    if let Ok(object) = shadow.repo.find_tree(tree) {
        if let Ok(decoded) = object.decode() {
            let entries: Vec<(BString, bool, ObjectId)> = decoded
                .entries
                .iter()
                .map(|e| (e.filename.to_owned(), e.mode.is_tree(), e.oid.to_owned()))
                .collect();
            for (name, is_tree, oid) in entries {
                if bad.contains_key(&oid) {
                    out.push((name.clone(), oid));
                } else if is_tree {
                    for (sub, o) in bad_under(shadow, oid, bad, memo).iter() {
                        let mut path = name.clone();
                        path.push(b'/');
                        path.extend_from_slice(sub);
                        out.push((path, *o));
                    }
                }
            }
        }
    }
    let out = Rc::new(out);
    memo.insert(tree, out.clone());
    out
}

fn decrypt_check(
    project: &Project,
    shadow: &Shadow,
    tiers: &[crate::config::Tier],
    full: bool,
    bad: &HashMap<ObjectId, (ProblemKind, Kind, String)>,
    report: &mut Report,
) -> Result<()> {
    let mut done = HashSet::new();
    for tier in tiers {
        let commits = match shadow.tier_tip(&tier.name)? {
            Some(_) if full => history::tier_history(shadow, &tier.name, usize::MAX)?,
            Some(tip) => vec![tip],
            None => Vec::new(),
        };
        for commit in commits {
            let Some(meta) = crate::meta::read_note(shadow, commit)? else {
                continue;
            };
            // An unreadable commit or tree is already a problem of the object check above.
            let Ok(listing) = crate::status::commit_listing(shadow, commit) else {
                continue;
            };
            for (path, item) in &listing {
                let Some(size) = meta.get(path).and_then(|m| m.encrypted) else {
                    continue;
                };
                if bad.contains_key(&item.oid) || !done.insert(item.oid) {
                    continue;
                }
                let result = shadow.open_blob(&item.oid).and_then(|(_, blob)| {
                    let mut plain = project.keys.decrypt(crate::crypt::buffered(blob))?;
                    let n = std::io::copy(&mut plain, &mut std::io::sink())?;
                    if n != size {
                        anyhow::bail!("decrypts to {n} bytes, the note says {size}");
                    }
                    Ok(())
                });
                if let Err(err) = result {
                    report.problems.push(Problem {
                        kind: ProblemKind::Decrypt,
                        object: Some(item.oid),
                        message: format!("encrypted blob {} does not decrypt: {err:#}", item.oid),
                        affected: vec![Affected {
                            tier: tier.name.clone(),
                            snapshot: commit,
                            path: Some(path.to_str_lossy().into_owned()),
                        }],
                    });
                }
            }
        }
    }
    Ok(())
}

fn worktree_check(
    project: &Project,
    shadow: &Shadow,
    tiers: &[String],
    report: &mut Report,
) -> Result<()> {
    for status in crate::status::status(project, shadow, tiers)? {
        let Some(last) = &status.last else { continue };
        let tier_path = project
            .config
            .tiers
            .iter()
            .find(|t| t.name == status.tier)
            .map(|t| t.path.clone())
            .unwrap_or_else(|| ".".into());
        for path in &status.critical_missing {
            // Status speaks in project paths; problems in tier paths, like every other kind.
            let in_tier = match tier_path.as_str() {
                "." => path.clone(),
                dir => path
                    .strip_prefix(&format!("{dir}/"))
                    .unwrap_or(path)
                    .to_owned(),
            };
            report.problems.push(Problem {
                kind: ProblemKind::Worktree,
                object: None,
                message: format!(
                    "critical file {path} is missing from the working tree (recorded in {}); `mirror restore --missing` brings it back",
                    last.id.to_hex_with_len(7)
                ),
                affected: vec![Affected {
                    tier: status.tier.clone(),
                    snapshot: last.id,
                    path: Some(in_tier),
                }],
            });
        }
        if !status.changes.is_empty() {
            report.notes.push(format!(
                "{}: {} since the last snapshot",
                status.tier, status.counts
            ));
        }
    }
    Ok(())
}

fn remotes_check(
    project: &Project,
    shadow: &Shadow,
    refs: &[(String, Option<ObjectId>)],
    report: &mut Report,
) {
    for remote in &project.config.remotes {
        let theirs = match crate::remote::ls_remote(shadow, remote, &project.root) {
            Ok(t) => t,
            Err(err) => {
                report.problems.push(Problem {
                    kind: ProblemKind::Remote,
                    object: None,
                    message: format!("remote {}: unreachable: {err:#}", remote.name),
                    affected: Vec::new(),
                });
                continue;
            }
        };
        for (name, ours) in refs {
            let Some(ours) = ours else { continue };
            let matches = match theirs.get(name) {
                Some(t) if t == ours => true,
                // Every operation appends to the audit trail, the push itself included.
                Some(t) if name == crate::audit::AUDIT_REF => {
                    crate::remote::is_ancestor(shadow, *t, *ours)
                }
                _ => false,
            };
            if !matches {
                report.problems.push(Problem {
                    kind: ProblemKind::Remote,
                    object: Some(*ours),
                    message: format!(
                        "remote {}: {name} is {} here but {} there (run `mirror push {}` or `mirror fetch {}`)",
                        remote.name,
                        ours.to_hex_with_len(7),
                        theirs
                            .get(name)
                            .map(|t| t.to_hex_with_len(7).to_string())
                            .unwrap_or_else(|| "missing".into()),
                        remote.name,
                        remote.name
                    ),
                    affected: Vec::new(),
                });
            }
        }
    }
}
