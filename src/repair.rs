//! `mirror repair`: replace missing or corrupt objects with good copies from a remote mirror.
//!
//! Nothing is deleted: a corrupt loose object, or a pack holding a corrupt entry, is moved into
//! `SHADOW/mirror/quarantine/<time>/`; every sound object of such a pack is first copied out as
//! a loose object, so objects the remote may not have are kept. Then every object of the
//! remote is fetched again (`git fetch --refetch`, into `refs/remotes/<name>/`: the shadow's
//! own refs never move), and the shadow is verified again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gix::ObjectId;

use crate::config::Remote;
use crate::progress::Progress;
use crate::project::Project;
use crate::store::Shadow;
use crate::verify::{self, ProblemKind};

pub struct RepairReport {
    /// Objects found missing or corrupt before the repair.
    pub bad_before: Vec<ObjectId>,
    /// Files moved into the quarantine directory.
    pub quarantined: Vec<PathBuf>,
    /// Sound objects copied out of a corrupt pack before it was moved away.
    pub salvaged: u64,
    /// (remote, error) for remotes that could not be fetched.
    pub fetch_errors: Vec<(String, String)>,
    /// The verification after the repair.
    pub after: verify::Report,
}

pub fn repair(
    project: &Project,
    shadow: &Shadow,
    remotes: &[Remote],
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let full = verify::Options {
        full: true,
        ..Default::default()
    };
    let before = verify::verify(project, shadow, &full, progress)?;
    let bad: BTreeSet<ObjectId> = before
        .problems
        .iter()
        .filter(|p| matches!(p.kind, ProblemKind::Missing | ProblemKind::Corrupt))
        .filter_map(|p| p.object)
        .collect();
    let mut report = RepairReport {
        bad_before: bad.iter().copied().collect(),
        quarantined: Vec::new(),
        salvaged: 0,
        fetch_errors: Vec::new(),
        after: before,
    };
    if bad.is_empty() {
        return Ok(report);
    }
    let quarantine = shadow
        .mirror_dir()
        .join("quarantine")
        .join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string());
    let objects = shadow.path.join("objects");
    // Loose copies first: with a damaged loose copy out of the way, a sound copy in a pack
    // may already be what is read, and then no pack needs touching.
    for id in &bad {
        let hex = id.to_hex().to_string();
        let loose = objects.join(&hex[..2]).join(&hex[2..]);
        if loose.exists() {
            report
                .quarantined
                .push(move_aside(&loose, &quarantine, &objects)?);
        }
    }
    let reopened = Shadow::open(&shadow.path)?;
    let still_bad: BTreeSet<ObjectId> = bad
        .iter()
        .copied()
        .filter(|id| !sound(&reopened, id))
        .collect();
    for id in &still_bad {
        for pack in packs_holding(&objects, id)? {
            report.salvaged += salvage(&reopened, &pack, &still_bad)?;
            for ext in ["pack", "idx", "rev", "keep", "bitmap"] {
                let file = pack.with_extension(ext);
                if file.exists() {
                    report
                        .quarantined
                        .push(move_aside(&file, &quarantine, &objects)?);
                }
            }
        }
    }
    for remote in remotes {
        if let Err(err) = crate::remote::fetch_all_objects(shadow, remote, &project.root) {
            report
                .fetch_errors
                .push((remote.name.clone(), format!("{err:#}")));
        }
    }
    // A fresh handle: packs were moved and written behind gix's back.
    let shadow = Shadow::open(&shadow.path)?;
    report.after =
        verify::verify(project, &shadow, &full, progress).unwrap_or_else(|err| verify::Report {
            problems: vec![verify::Problem {
                kind: ProblemKind::Ref,
                object: None,
                message: format!("the verification after the repair failed: {err:#}"),
                affected: Vec::new(),
            }],
            ..Default::default()
        });
    Ok(report)
}

/// Can `id` be read now, and does it hash to itself?
fn sound(shadow: &Shadow, id: &ObjectId) -> bool {
    let mut buf = Vec::new();
    match gix::objs::Find::try_find(&shadow.repo.objects, id, &mut buf) {
        Ok(Some(data)) => gix::objs::compute_hash(gix::hash::Kind::Sha1, data.kind, data.data)
            .is_ok_and(|h| h == *id),
        _ => false,
    }
}

/// Move `file` (under `objects`) to the same relative place under `quarantine`.
fn move_aside(file: &Path, quarantine: &Path, objects: &Path) -> Result<PathBuf> {
    let rel = file.strip_prefix(objects).unwrap_or(file);
    let dest = quarantine.join("objects").join(rel);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    std::fs::rename(file, &dest).with_context(|| {
        format!(
            "could not move {} into quarantine at {}",
            file.display(),
            dest.display()
        )
    })?;
    Ok(dest)
}

/// The `.idx` paths (without extension handling) of packs whose index lists `id`.
fn packs_holding(objects: &Path, id: &ObjectId) -> Result<Vec<PathBuf>> {
    let dir = objects.join("pack");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "idx") {
            continue;
        }
        let index = gix::odb::pack::index::File::at(&path, gix::hash::Kind::Sha1)
            .with_context(|| format!("could not read pack index {}", path.display()))?;
        if index.lookup(id).is_some() {
            out.push(path);
        }
    }
    Ok(out)
}

/// Copy every sound object of the pack indexed by `idx` (other than the bad ones) out as a
/// loose object, so moving the pack away loses nothing that was still good.
fn salvage(shadow: &Shadow, idx: &Path, bad: &BTreeSet<ObjectId>) -> Result<u64> {
    let index = gix::odb::pack::index::File::at(idx, gix::hash::Kind::Sha1)
        .with_context(|| format!("could not read pack index {}", idx.display()))?;
    let loose = gix::odb::loose::Store::at(shadow.path.join("objects"), gix::hash::Kind::Sha1);
    let mut saved = 0;
    let mut buf = Vec::new();
    for entry in index.iter() {
        let id = entry.oid;
        if bad.contains(&id) || loose.contains(&id) {
            continue;
        }
        let Ok(Some(data)) = gix::objs::Find::try_find(&shadow.repo.objects, &id, &mut buf) else {
            continue;
        };
        let sound = gix::objs::compute_hash(gix::hash::Kind::Sha1, data.kind, data.data)
            .is_ok_and(|h| h == id);
        if sound {
            gix::objs::Write::write_buf(&loose, data.kind, data.data)
                .with_context(|| format!("could not save object {id} from {}", idx.display()))?;
            saved += 1;
        }
    }
    Ok(saved)
}
