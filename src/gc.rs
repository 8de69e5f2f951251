//! `mirror gc`: gather loose objects and small packs into one pack.
//!
//! Small snapshots write loose objects (a few files each, cheaper than a pack), and every
//! snapshot that wrote many objects leaves a pack. Over months that is thousands of files to
//! search. gc moves every loose object, and every pack under [`SMALL_PACK`], into new packs,
//! verifies that each object hashes to its id before it is packed and that the new packs hold
//! them all, and only then deletes the old copies. Nothing is pruned: unreachable objects are
//! packed too (a backup keeps everything; `git gc --prune` is the user's call). Packs marked
//! `.keep` are left alone, as git does.
//!
//! A blob that was a delta in a pack being merged stays one: it is encoded again against the
//! same base (its offset changes), which the merge writes first.
//!
//! With `deltas`, `git repack -a -d` then rewrites everything with deltas between similar
//! objects: a smaller repository, at the cost of git's time and memory (docs/performance.md).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use gix::ObjectId;

use crate::delta;
use crate::pack::{PackBuffer, Prepared, BUFFER_LIMIT};
use crate::progress::Progress;
use crate::store::Shadow;

/// Packs smaller than this are merged; larger ones (a first snapshot's, each at least
/// [`crate::pack::BUFFER_LIMIT`]) stay as they are.
pub const SMALL_PACK: u64 = 4 * 1024 * 1024;

/// `mirror gc --auto` (started in the background after a snapshot) works only past these.
pub const AUTO_LOOSE: usize = 2000;
pub const AUTO_PACKS: usize = 20;

/// Objects above this size are streamed from their loose file into a pack of their own.
const STREAM_ABOVE: u64 = 8 * 1024 * 1024;

/// git's default `pack.depth`: the longest delta chain a merged pack keeps.
const GIT_DEPTH: u8 = 50;

/// The memory gc gives the delta bases of the pack it is writing (content and index).
const BASES_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub loose_objects: usize,
    pub packs_merged: usize,
    pub objects_packed: usize,
    pub packs_written: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// `git repack` ran (with `deltas`).
    pub repacked: bool,
    /// Temporary pack files of writers that were killed (older than an hour), removed.
    pub stale_temporaries: Vec<PathBuf>,
    pub seconds: f64,
}

/// What gc would work on: loose object ids and small packs (their `.idx` paths).
pub struct Candidates {
    pub loose: Vec<ObjectId>,
    pub small_packs: Vec<PathBuf>,
}

impl Candidates {
    /// Enough to be worth a background run?
    pub fn worth_auto(&self) -> bool {
        self.loose.len() >= AUTO_LOOSE || self.small_packs.len() >= AUTO_PACKS
    }

    fn worth_any(&self) -> bool {
        !self.loose.is_empty() || self.small_packs.len() > 1
    }
}

pub fn candidates(shadow: &Shadow) -> Result<Candidates> {
    let objects = shadow.path.join("objects");
    let mut loose = Vec::new();
    for dir in read_dir_sorted(&objects)? {
        let Some(prefix) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for file in read_dir_sorted(&dir)? {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Anything else (a temporary file of a killed writer) is not an object.
            if let Ok(id) = ObjectId::from_hex(format!("{prefix}{name}").as_bytes()) {
                loose.push(id);
            }
        }
    }
    let mut small_packs = Vec::new();
    for idx in read_dir_sorted(&shadow.pack_dir())? {
        if idx.extension().is_none_or(|e| e != "idx") {
            continue;
        }
        let pack = idx.with_extension("pack");
        if idx.with_extension("keep").exists() {
            continue;
        }
        let size = std::fs::metadata(&pack)
            .with_context(|| format!("{} has no pack beside it", idx.display()))?
            .len();
        // A pack of one object is a large file streamed on its own: already as it should be.
        if size < SMALL_PACK && open_index(&idx)?.num_objects() > 1 {
            small_packs.push(idx);
        }
    }
    Ok(Candidates { loose, small_packs })
}

/// A cheap guess at [`Candidates::worth_auto`] for after every snapshot: git's own trick of
/// counting one fan-out directory of loose objects (1/256 of them), and the small packs.
pub fn auto_wanted(shadow: &Shadow) -> bool {
    let sample = std::fs::read_dir(shadow.path.join("objects").join("17"))
        .map(|d| d.count())
        .unwrap_or(0);
    if sample * 256 >= AUTO_LOOSE {
        return true;
    }
    // An index of one object is 1100 bytes (header, fan-out, one id, CRC and offset, two
    // checksums): such a pack is a large file on its own, not something to gather.
    const SINGLE_OBJECT_INDEX: u64 = 1100;
    let small = std::fs::read_dir(shadow.pack_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "idx"))
                .filter(|p| !p.with_extension("keep").exists())
                .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > SINGLE_OBJECT_INDEX))
                .filter(|p| {
                    std::fs::metadata(p.with_extension("pack")).is_ok_and(|m| m.len() < SMALL_PACK)
                })
                .count()
        })
        .unwrap_or(0);
    small >= AUTO_PACKS
}

/// The objects of a pack in the order they are written in it (a delta's base in the same
/// pack always comes first), each with the id of its delta base if it is a delta.
fn pack_order(idx: &Path) -> Result<Vec<(ObjectId, Option<ObjectId>)>> {
    use gix::odb::pack::data::entry::Header;
    let index = open_index(idx)?;
    let pack_path = idx.with_extension("pack");
    let data = gix::odb::pack::data::File::at(&pack_path, gix::hash::Kind::Sha1)
        .with_context(|| format!("could not read pack {}", pack_path.display()))?;
    let mut entries: Vec<(u64, ObjectId)> = index.iter().map(|e| (e.pack_offset, e.oid)).collect();
    entries.sort();
    let at_offset: HashMap<u64, ObjectId> = entries.iter().copied().collect();
    entries
        .iter()
        .map(|&(offset, id)| {
            let header = data
                .entry(offset)
                .with_context(|| format!("corrupt entry {id} in {}", pack_path.display()))?
                .header;
            let base = match header {
                Header::OfsDelta { base_distance } => offset
                    .checked_sub(base_distance)
                    .and_then(|at| at_offset.get(&at).copied()),
                Header::RefDelta { base_id } => Some(base_id),
                _ => None,
            };
            Ok((id, base))
        })
        .collect()
}

fn open_index(idx: &Path) -> Result<gix::odb::pack::index::File> {
    gix::odb::pack::index::File::at(idx, gix::hash::Kind::Sha1)
        .with_context(|| format!("could not read pack index {}", idx.display()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                out.push(
                    entry
                        .with_context(|| format!("could not list {}", dir.display()))?
                        .path(),
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("could not list {}", dir.display())),
    }
    out.sort();
    Ok(out)
}

/// Pack loose objects and small packs (the caller holds the writer lock).
pub fn gc(shadow: &Shadow, deltas: bool, progress: &dyn Progress) -> Result<Report> {
    let started = std::time::Instant::now();
    let objects_dir = shadow.path.join("objects");
    let mut report = Report {
        bytes_before: disk_usage(&objects_dir)?,
        ..Report::default()
    };
    report.stale_temporaries = remove_stale_temporaries(&shadow.pack_dir())?;
    let found = candidates(shadow)?;
    report.loose_objects = found.loose.len();
    if found.worth_any() {
        pack_candidates(shadow, &found, &mut report, progress)?;
    }
    if deltas {
        repack_with_git(&shadow.path)?;
        report.repacked = true;
    }
    report.bytes_after = disk_usage(&objects_dir)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn pack_candidates(
    shadow: &Shadow,
    found: &Candidates,
    report: &mut Report,
    progress: &dyn Progress,
) -> Result<()> {
    use gix::odb::pack;
    let merged: HashSet<&Path> = found.small_packs.iter().map(PathBuf::as_path).collect();
    // Objects already in a pack that stays need no new copy: their loose file just goes.
    let mut staying = Vec::new();
    for idx in read_dir_sorted(&shadow.pack_dir())? {
        if idx.extension().is_some_and(|e| e == "idx") && !merged.contains(idx.as_path()) {
            staying.push(open_index(&idx)?);
        }
    }
    let in_staying = |id: &gix::oid| staying.iter().any(|i| i.lookup(id).is_some());
    let mut ids: Vec<ObjectId> = found.loose.clone();
    // Deltas stay deltas against the same base (see the module's doc).
    let mut base_of: HashMap<ObjectId, ObjectId> = HashMap::new();
    for idx in &found.small_packs {
        for (id, base) in pack_order(idx)? {
            ids.push(id);
            if let Some(base) = base {
                base_of.insert(id, base);
            }
        }
    }
    let mut seen = HashSet::new();
    ids.retain(|id| seen.insert(*id) && !in_staying(id));
    // How many objects still to come are deltas against each base.
    let mut dependents: HashMap<ObjectId, usize> = HashMap::new();
    for id in &ids {
        if let Some(base) = base_of.get(id) {
            *dependents.entry(*base).or_default() += 1;
        }
    }
    // The content of bases in the pack being written, until their last dependent is packed
    // or the pack is written; at most BASES_BYTES of it (past that, objects are packed whole).
    let mut bases: HashMap<ObjectId, Arc<delta::Base>> = HashMap::new();
    let mut bases_bytes = 0;

    progress.begin("packing", ids.len() as u64);
    let pack_dir = shadow.pack_dir();
    // Chains as long as git's own (`pack.depth`): a merged pack keeps git's deltas.
    let mut buffer = PackBuffer::with_max_depth(GIT_DEPTH);
    let mut written = Vec::new();
    for id in &ids {
        progress.advance(1);
        let header = shadow
            .repo
            .find_header(*id)
            .with_context(|| format!("object {id} could not be read; run `mirror verify`"))?;
        if header.kind() == gix::objs::Kind::Blob && header.size() > STREAM_ABOVE {
            // Streamed (and its hash verified by the reader) so memory stays flat.
            let (size, mut reader) = shadow.open_blob(id)?;
            let (streamed, idx) = crate::pack::stream_single(
                &pack_dir,
                gix::objs::Kind::Blob,
                size,
                &mut reader,
                &|_| false,
            )
            .with_context(|| format!("could not pack object {id}"))?;
            if streamed != *id {
                bail!("object {id} is corrupt (its content hashes to {streamed}); run `mirror repair`");
            }
            written.extend(idx);
            continue;
        }
        let object = shadow
            .repo
            .find_object(*id)
            .with_context(|| format!("object {id} could not be read; run `mirror verify`"))?
            .detach();
        let mut prepared = Prepared::new(object.kind, &object.data)?;
        if prepared.id != *id {
            bail!(
                "object {id} is corrupt (its content hashes to {}); run `mirror repair`",
                prepared.id
            );
        }
        if let Some(base_id) = base_of.get(id) {
            if let Some(base) = bases.get(base_id).filter(|_| buffer.has_base(base_id)) {
                prepared.try_delta(&object.data, *base_id, base);
            }
            let left = dependents.get_mut(base_id).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                if let Some(done) = bases.remove(base_id) {
                    bases_bytes -= done.footprint();
                }
            }
        }
        let wanted = dependents.get(id).is_some_and(|&n| n > 0)
            && bases_bytes + object.data.len() * 2 <= BASES_BYTES;
        if buffer.push_best(&prepared, wanted) {
            let base = Arc::new(delta::Base::new(object.data));
            bases_bytes += base.footprint();
            bases.insert(*id, base);
        }
        if buffer.bytes() >= BUFFER_LIMIT {
            written.push(buffer.write(&pack_dir)?);
            bases.clear();
            bases_bytes = 0;
        }
    }
    if !buffer.is_empty() {
        written.push(buffer.write(&pack_dir)?);
    }
    progress.end();

    // Every object must be in a new pack (or a staying one) before any old copy goes.
    let new: Vec<pack::index::File> = written
        .iter()
        .map(|idx| open_index(idx))
        .collect::<Result<_>>()
        .context("could not read back a pack index just written")?;
    for id in found.loose.iter() {
        if !new.iter().any(|i| i.lookup(id).is_some()) && !in_staying(id) {
            bail!("internal error: object {id} missing from the new packs; nothing was deleted");
        }
    }
    for id in &ids {
        if !new.iter().any(|i| i.lookup(id).is_some()) {
            bail!("internal error: object {id} missing from the new packs; nothing was deleted");
        }
    }
    let objects_dir = shadow.path.join("objects");
    for id in &found.loose {
        let hex = id.to_hex().to_string();
        let path = objects_dir.join(&hex[..2]).join(&hex[2..]);
        std::fs::remove_file(&path)
            .with_context(|| format!("could not remove {}", path.display()))?;
        // Fan-out directories stay: a snapshot writing a loose object into one at this moment
        // must not find it gone between creating it and moving its object in.
    }
    let written_set: HashSet<&Path> = written.iter().map(PathBuf::as_path).collect();
    for idx in &found.small_packs {
        if written_set.contains(idx.as_path()) {
            // The same objects made the same pack again (same name): it is the new one.
            continue;
        }
        // The index first: without it no reader looks at the pack.
        for ext in ["idx", "pack", "rev", "bitmap"] {
            let path = idx.with_extension(ext);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("could not remove {}", path.display()))
                }
            }
        }
    }
    report.packs_merged = found.small_packs.len();
    report.objects_packed = ids.len();
    report.packs_written = written.len();
    Ok(())
}

/// `git repack -a -d -f -k`: every object into one pack, with deltas searched harder than
/// git's defaults (a wider window, zlib level 9): measured on the benchmark tree, that is
/// what brings the repository under restic's size (docs/performance.md, with its cost).
/// Large blobs stay whole (`core.bigFileThreshold`), so they still stream on restore.
fn repack_with_git(shadow: &Path) -> Result<()> {
    let args: Vec<String> = [
        "--git-dir",
        &shadow.to_string_lossy(),
        "-c",
        "pack.compression=9",
        "repack",
        "-a",
        "-d",
        "-f",
        // Unreachable objects are packed too, never dropped: a backup keeps everything.
        "-k",
        "-q",
        "--window=50",
        "--depth=50",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = crate::remote::run_git(&args, std::time::Duration::from_secs(24 * 3600))?;
    if !out.success {
        bail!(
            "git repack failed in {}: {}",
            shadow.display(),
            out.stderr.trim()
        );
    }
    Ok(())
}

/// A writer killed while writing a pack leaves `tmp_pack_*` / `tmp_idx_*` behind, or, killed
/// between its two renames, a `.pack` without its `.idx`; no ref can point into them (refs
/// move only once both are in place). One that old is no live writer's (a pack takes
/// seconds to write).
fn remove_stale_temporaries(pack_dir: &Path) -> Result<Vec<PathBuf>> {
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut removed = Vec::new();
    for path in read_dir_sorted(pack_dir)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let orphan_pack = path.extension().is_some_and(|e| e == "pack")
            && !path.with_extension("idx").exists()
            && !path.with_extension("keep").exists();
        if !(name.starts_with("tmp_pack_") || name.starts_with("tmp_idx_") || orphan_pack) {
            continue;
        }
        let old = std::fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
        if old {
            std::fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn disk_usage(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .build()
    {
        let entry = entry.with_context(|| format!("could not list {}", dir.display()))?;
        if entry.file_type().is_some_and(|t| t.is_file()) {
            total += entry
                .metadata()
                .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                .unwrap_or(0);
        }
    }
    Ok(total)
}
