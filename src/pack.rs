//! Writing objects straight into git pack files, the way `git index-pack` would have left them.
//!
//! A snapshot that adds many objects (the first one above all) would otherwise create one loose
//! file per object: tens of thousands of `open`/`write`/`close` calls, each object deflated with
//! its header, and a repository git later wants to `gc`. Here objects are deflated by the
//! caller (on any thread), appended to an in-memory buffer, and written out as one pack (v2)
//! with its index (v2) when the buffer is full or the snapshot is about to move a ref. A large
//! object is streamed into a pack of its own, so it is never held whole in memory.
//!
//! Small blobs may be stored as deltas (`OFS_DELTA`, see [`crate::delta`]) against an earlier
//! blob of the same pack with the same extension (or, without one, the same name): rustdoc
//! pages, `node_modules` copies and build scripts are near-copies of each other. Chains are
//! at most [`MAX_DEPTH`] long, so a restore rebuilds any blob from at most that many deltas.
//! Large objects are always whole, one plain zlib stream that the restore path inflates
//! incrementally. `mirror gc --deltas` can still ask git for its thorough delta search later.
//! A pack and its index are written under temporary names, flushed, then renamed (pack first,
//! index last: git and gix only look at a pack through its `.idx`), and the directory is
//! flushed, so a crash leaves either a complete pack or an ignorable `tmp_pack_*` file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use gix::objs::Kind;
use gix::ObjectId;

use crate::delta;

/// Flush the buffer into a pack file once it holds this much compressed data. With one
/// buffer filling while at most one is being written, this bounds the pack writer's memory
/// to about twice this plus one object per worker (the first snapshot's peak memory target
/// is 100 MiB: 16 MiB buffers measured 108 MiB on the benchmark tree).
pub const BUFFER_LIMIT: usize = 8 * 1024 * 1024;

/// The largest object that goes through the buffer (larger ones are streamed into packs of
/// their own): the buffer is allocated once with room for one more, so it never reallocates.
const LARGEST_BUFFERED: usize = 8 * 1024 * 1024 + 64 * 1024;

/// How hard to deflate, decided per object from a sample of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Incompressible content (media, archives, age ciphertext): stored blocks, no search.
    Store,
    /// Everything else. Level 1 was measured against 6 on the benchmark tree (docs/performance.md).
    Fast,
}

impl Level {
    /// For objects streamed through zlib-rs (too large to hold whole for libdeflate).
    fn stream_compression(self) -> flate2::Compression {
        match self {
            Level::Store => flate2::Compression::none(),
            Level::Fast => flate2::Compression::new(STREAM_LEVEL),
        }
    }

    fn libdeflate_level(self) -> i32 {
        match self {
            Level::Store => 0,
            Level::Fast => FAST_LEVEL,
        }
    }
}

/// libdeflate's level for compressible objects held in memory (measured in
/// docs/performance.md: level 1 is as fast as zlib-rs's level 1 and 20 % smaller).
const FAST_LEVEL: i32 = 1;

/// zlib-rs's level for compressible objects streamed into packs of their own.
const STREAM_LEVEL: u32 = 3;

/// Bytes of content deflated to decide whether an object is worth compressing.
const SAMPLE: usize = 64 * 1024;

/// Deflating a sample saved less than this fraction: the content is stored, not compressed.
const WORTH_IT: f64 = 0.97;

/// Judge compressibility from (a prefix of) the content. Small samples are not judged: a few
/// bytes compress badly whatever they are, and cost nothing either way.
pub fn level_for(sample: &[u8]) -> Level {
    let sample = &sample[..sample.len().min(SAMPLE)];
    if sample.len() < 4096 || saves_enough(deflate(sample, Level::Fast).len(), sample.len()) {
        Level::Fast
    } else {
        Level::Store
    }
}

/// Did deflating `len` bytes into `deflated` save enough to be worth it?
fn saves_enough(deflated: usize, len: usize) -> bool {
    (deflated as f64) < len as f64 * WORTH_IT
}

thread_local! {
    /// One libdeflate compressor per thread and level: each holds a few hundred KiB of tables
    /// that would otherwise be allocated for every object.
    static COMPRESSORS: std::cell::RefCell<[Option<libdeflater::Compressor>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
}

/// `data` deflated as hard as it deserves, and the level that was: content no larger than the
/// sample is judged by deflating it whole, once.
pub fn deflate_judged(data: &[u8]) -> (Level, Vec<u8>) {
    if data.len() < 4096 || data.len() > SAMPLE {
        let level = level_for(data);
        return (level, deflate(data, level));
    }
    let deflated = deflate(data, Level::Fast);
    if saves_enough(deflated.len(), data.len()) {
        (Level::Fast, deflated)
    } else {
        (Level::Store, deflate(data, Level::Store))
    }
}

/// The zlib stream of `data` as a pack entry holds it (the content only, no object header).
pub fn deflate(data: &[u8], level: Level) -> Vec<u8> {
    COMPRESSORS.with_borrow_mut(|compressors| {
        let compressor = compressors[level as usize].get_or_insert_with(|| {
            // Levels 0 and FAST_LEVEL are within libdeflate's 0..=12.
            let level = libdeflater::CompressionLvl::new(level.libdeflate_level())
                .expect("a libdeflate level in 0..=12");
            libdeflater::Compressor::new(level)
        });
        let mut out = vec![0; compressor.zlib_compress_bound(data.len())];
        // The output has the bound libdeflate itself gives for this input, so it fits.
        let len = compressor
            .zlib_compress(data, &mut out)
            .expect("deflating into a buffer of libdeflate's bound");
        out.truncate(len);
        out
    })
}

/// A blob's id, its level and its deflated content, computed away from the writer (on a
/// worker thread) so that hashing and compression use every core.
pub struct Prepared {
    pub id: ObjectId,
    pub kind: Kind,
    pub size: u64,
    pub deflated: Vec<u8>,
    /// The same object as a smaller delta against a blob already added, when one was found.
    delta: Option<DeltaForm>,
    /// The content, to serve as a base for later blobs filed under the same key.
    base: Option<(Vec<u8>, Arc<delta::Base>)>,
}

/// An object as a delta: its base, and the delta's size and zlib stream.
struct DeltaForm {
    base: ObjectId,
    size: u64,
    deflated: Vec<u8>,
}

impl Prepared {
    pub fn new(kind: Kind, data: &[u8]) -> Result<Prepared> {
        let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data)?;
        Ok(Prepared::with_id(id, kind, data))
    }

    /// When the id is already known (the caller checked for it in the repository first).
    pub fn with_id(id: ObjectId, kind: Kind, data: &[u8]) -> Prepared {
        Prepared {
            id,
            kind,
            size: data.len() as u64,
            deflated: deflate_judged(data).1,
            delta: None,
            base: None,
        }
    }

    /// Offer the pack this object (content `data`) as a delta against `base`, kept when it
    /// is smaller than the object deflated whole.
    pub fn try_delta(&mut self, data: &[u8], base_id: ObjectId, base: &delta::Base) {
        if let Some(form) = deflated_delta(base_id, base, data) {
            self.take_delta(form, false);
        }
    }

    /// Keep `form` if it is smaller than the object deflated whole, or if `sure` (see
    /// [`SURE_DELTA`]: then the object was not deflated whole at all).
    fn take_delta(&mut self, form: DeltaForm, sure: bool) {
        // The delta's entry also names its base (a few bytes more).
        if sure || form.deflated.len() + 8 < self.deflated.len() {
            self.delta = Some(form);
        }
    }

    /// The object's whole zlib stream: deflated now if it was not (a sure delta, see
    /// `prepare_blob`, whose base went out with the last pack; its content is the base it
    /// offers, being compressible).
    fn whole(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.base {
            Some((_, base)) if self.deflated.is_empty() => {
                std::borrow::Cow::Owned(deflate(base.data(), Level::Fast))
            }
            _ => std::borrow::Cow::Borrowed(&self.deflated),
        }
    }
}

/// `data` as a deflated delta against `base` (`base_id`). git's rule: a delta must be under
/// half the object, else it is not worth a link in a chain.
fn deflated_delta(base_id: ObjectId, base: &delta::Base, data: &[u8]) -> Option<DeltaForm> {
    let raw = delta::encode(base, data, data.len() / 2)?;
    Some(DeltaForm {
        base: base_id,
        size: raw.len() as u64,
        deflated: deflate(&raw, Level::Fast),
    })
}

/// A delta of at most 1/`SURE_DELTA` of its object, deflating to at most 1/`SURE_DEFLATED`,
/// is taken without deflating the object whole to compare: text deflates to about 1/4, and
/// a blob that deflates better than 1/20 is rare and small once deflated anyway.
const SURE_DELTA: usize = 8;
const SURE_DEFLATED: usize = 20;

/// Blobs smaller than this are not worth a delta (the instructions' overhead is most of it).
const DELTA_MIN: usize = 64;

/// Blobs larger than this are neither deltified nor kept as bases: the bases a pack writer
/// holds must stay small next to the snapshot's memory target.
const DELTA_MAX: usize = 1024 * 1024;

/// The longest chain of deltas a pack writer makes: a restore applies at most this many to
/// rebuild a blob. (Chains of 2 kept 99 % of the saving of unbounded ones on the benchmark
/// tree.)
pub const MAX_DEPTH: u8 = 2;

/// The memory the bases waiting for a delta may hold, content and index; past it they are
/// dropped and gathered again.
const WINDOW_BYTES: usize = 16 * 1024 * 1024;

/// What a blob is filed under to find a base for it: its extension (rustdoc's `.html`,
/// `.js`), or its whole name when it has none (`build-script-build`, `LICENSE`).
fn delta_key(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => &name[dot..],
        _ => name,
    }
}

/// The latest blob added under each key, content at hand, for the next blob under that key.
#[derive(Default)]
struct DeltaWindow {
    bases: HashMap<Vec<u8>, (ObjectId, Arc<delta::Base>)>,
    bytes: usize,
}

impl DeltaWindow {
    fn offer(&mut self, key: Vec<u8>, id: ObjectId, base: Arc<delta::Base>) {
        self.bytes += base.footprint();
        if let Some((_, old)) = self.bases.insert(key, (id, base)) {
            self.bytes -= old.footprint();
        }
        if self.bytes > WINDOW_BYTES {
            // Bounded memory, simply: a project with that many kinds of file loses only the
            // deltas of the next blob of each kind.
            self.bases.clear();
            self.bytes = 0;
        }
    }
}

/// The pack entry type of a delta against an entry earlier in the same pack.
const OFS_DELTA: u8 = 6;

fn type_code(kind: Kind) -> u8 {
    match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    }
}

/// A pack entry's header: type and inflated size, the size in little-endian groups of 7 bits.
fn entry_header(kind: Kind, size: u64) -> Vec<u8> {
    entry_header_of(type_code(kind), size)
}

fn entry_header_of(type_code: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    let mut byte = (type_code << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

/// An `OFS_DELTA`'s distance back to its base, as git encodes it: big-endian groups of 7 bits,
/// each continued group standing for one more than its bits (so no number has two forms).
fn push_negative_offset(out: &mut Vec<u8>, mut distance: u64) {
    let mut groups = vec![(distance & 0x7f) as u8];
    distance >>= 7;
    while distance != 0 {
        distance -= 1;
        groups.push(0x80 | (distance & 0x7f) as u8);
        distance >>= 7;
    }
    out.extend(groups.iter().rev());
}

fn pack_header(count: u32) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[..4].copy_from_slice(b"PACK");
    header[4..8].copy_from_slice(&2u32.to_be_bytes());
    header[8..].copy_from_slice(&count.to_be_bytes());
    header
}

#[derive(Clone, Copy)]
struct IndexEntry {
    id: ObjectId,
    offset: u64,
    crc32: u32,
}

/// Objects waiting to be written as one pack.
pub struct PackBuffer {
    /// The entries, as they will follow the 12-byte pack header.
    data: Vec<u8>,
    entries: Vec<IndexEntry>,
    /// Offset and chain depth of the entries later ones may be deltas against.
    bases: HashMap<ObjectId, (u64, u8)>,
    max_depth: u8,
}

impl Default for PackBuffer {
    fn default() -> PackBuffer {
        PackBuffer::with_max_depth(MAX_DEPTH)
    }
}

impl PackBuffer {
    /// A buffer whose delta chains may be `max_depth` long.
    pub fn with_max_depth(max_depth: u8) -> PackBuffer {
        PackBuffer {
            data: Vec::new(),
            entries: Vec::new(),
            bases: HashMap::new(),
            max_depth,
        }
    }

    /// Append an object whole.
    pub fn push(&mut self, object: &Prepared) {
        self.push_entry(
            object.id,
            &entry_header(object.kind, object.size),
            &object.whole(),
        );
    }

    /// Append an object as its delta when its base is in this buffer, else whole; when
    /// `may_be_base`, remember it as a base for later deltas unless its chain is already as
    /// long as it may be. Returns whether it was remembered.
    pub fn push_best(&mut self, object: &Prepared, may_be_base: bool) -> bool {
        let (offset, depth) = self.push_choosing(object);
        let remembered = may_be_base && depth < self.max_depth;
        if remembered {
            self.bases.insert(object.id, (offset, depth));
        }
        remembered
    }

    /// Is this object in the buffer as a base for deltas?
    pub fn has_base(&self, id: &gix::oid) -> bool {
        self.bases.contains_key(id)
    }

    /// Returns the entry's offset and its depth in a chain of deltas (0 for a whole object).
    fn push_choosing(&mut self, object: &Prepared) -> (u64, u8) {
        let offset = 12 + self.data.len() as u64;
        if let Some(form) = &object.delta {
            if let Some(&(base_offset, depth)) = self.bases.get(&form.base) {
                let mut header = entry_header_of(OFS_DELTA, form.size);
                push_negative_offset(&mut header, offset - base_offset);
                self.push_entry(object.id, &header, &form.deflated);
                return (offset, depth + 1);
            }
        }
        self.push(object);
        (offset, 0)
    }

    fn push_entry(&mut self, id: ObjectId, header: &[u8], deflated: &[u8]) {
        if self.data.capacity() == 0 {
            // Untouched capacity costs no memory; a reallocation would copy the whole buffer.
            self.data.reserve(BUFFER_LIMIT + LARGEST_BUFFERED);
        }
        let offset = 12 + self.data.len() as u64;
        let start = self.data.len();
        self.data.extend_from_slice(header);
        self.data.extend_from_slice(deflated);
        self.entries.push(IndexEntry {
            id,
            offset,
            crc32: crc32fast::hash(&self.data[start..]),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Write the buffered objects as a pack and its index in `pack_dir`, durably, and empty
    /// the buffer. Returns the index's path.
    pub fn write(&mut self, pack_dir: &Path) -> Result<PathBuf> {
        self.write_out(pack_dir)
            .with_context(|| format!("could not write a pack into {}", pack_dir.display()))
    }

    fn write_out(&mut self, pack_dir: &Path) -> Result<PathBuf> {
        let count = u32::try_from(self.entries.len()).context("too many objects for one pack")?;
        let header = pack_header(count);
        let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
        hasher.update(&header);
        hasher.update(&self.data);
        let checksum = hasher.try_finalize()?;
        let mut tmp = TempPack::create(pack_dir)?;
        let file = tmp.pack_file()?;
        file.write_all(&header)?;
        file.write_all(&self.data)?;
        file.write_all(checksum.as_bytes())?;
        let entries = std::mem::take(&mut self.entries);
        self.data = Vec::new();
        self.bases.clear();
        tmp.finish(entries, checksum)
    }
}

/// The pack a snapshot is writing, shared by the threads that fill it: objects deflated
/// anywhere are appended under a lock, and a full buffer is written out after the lock is
/// released, so the other threads go on meanwhile.
pub struct Packer {
    dir: PathBuf,
    state: std::sync::Mutex<Option<Packing>>,
    /// Held while a full buffer is written: one write at a time, so a thread with a full
    /// buffer waits instead of a third buffer filling.
    writing: std::sync::Mutex<()>,
    /// Why packing ended early (a pack could not be written), for the threads still adding.
    failed: std::sync::Mutex<Option<String>>,
}

/// Objects bound for a pack, and every id packed since [`Packer::start`] (gix only sees a new
/// pack once it looks for an object it cannot find, so duplicates are caught here).
#[derive(Default)]
struct Packing {
    buffer: PackBuffer,
    written: std::collections::HashSet<ObjectId>,
    /// Bases for deltas, all in `buffer` (a delta's base must be in its pack).
    window: DeltaWindow,
}

impl Packer {
    pub fn new(dir: PathBuf) -> Packer {
        Packer {
            dir,
            state: Default::default(),
            writing: Default::default(),
            failed: Default::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<Packing>> {
        // A thread that panicked while holding the lock left a buffer that is still whole
        // (pushes are not interrupted halfway); its objects are written like any other.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From now until [`Packer::finish`], new objects go into packs. A pack left open by an
    /// operation that failed before finishing is dropped: nothing refers to its objects.
    pub fn start(&self) {
        *self.state() = Some(Packing::default());
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Drop what is buffered and stop packing, after an operation that failed or found
    /// nothing to record: no ref points at those objects, and the next objects written
    /// (an audit entry, another tier's) must not land in this pack.
    pub fn abandon(&self) {
        *self.state() = None;
    }

    pub fn is_active(&self) -> bool {
        self.state().is_some()
    }

    /// Packed (or waiting to be) since [`Packer::start`]?
    pub fn contains(&self, id: &gix::oid) -> bool {
        self.state()
            .as_ref()
            .is_some_and(|p| p.written.contains(id))
    }

    /// Deflate blob `data` (named `name` in its tier) for [`Packer::add`], and try it as a delta
    /// against the last blob added under the same key.
    pub fn prepare_blob(&self, id: ObjectId, data: Vec<u8>, name: &[u8]) -> Prepared {
        let mut object = Prepared {
            id,
            kind: Kind::Blob,
            size: data.len() as u64,
            deflated: Vec::new(),
            delta: None,
            base: None,
        };
        if !(DELTA_MIN..=DELTA_MAX).contains(&data.len()) {
            object.deflated = deflate_judged(&data).1;
            return object;
        }
        let key = delta_key(name);
        let candidate = self
            .state()
            .as_ref()
            .and_then(|p| p.window.bases.get(key).cloned());
        // `try_delta`, but for deflating the object whole only when needed.
        let delta = candidate.and_then(|(base_id, base)| deflated_delta(base_id, &base, &data));
        // A delta this small beats the whole object however well that deflates: the whole
        // object is only deflated if the delta cannot be used after all (`Prepared::whole`).
        // Its content is compressible: it is mostly its base's, and only compressible blobs
        // are bases.
        let sure = delta.as_ref().is_some_and(|form| {
            form.size as usize <= data.len() / SURE_DELTA
                && form.deflated.len() <= data.len() / SURE_DEFLATED
        });
        let level = if sure {
            Level::Fast
        } else {
            let (level, deflated) = deflate_judged(&data);
            object.deflated = deflated;
            level
        };
        if let Some(form) = delta {
            object.take_delta(form, sure);
        }
        // Incompressible content (ciphertext above all) has nothing to share.
        if level == Level::Fast {
            object.base = Some((key.to_vec(), Arc::new(delta::Base::new(data))));
        }
        object
    }

    /// Append a prepared object (once: duplicates are dropped); write the buffer out when full.
    pub fn add(&self, mut object: Prepared) -> Result<()> {
        if let (true, Some(form)) = (object.deflated.is_empty(), &object.delta) {
            let base_here = self
                .state()
                .as_ref()
                .is_some_and(|p| p.buffer.has_base(&form.base));
            if !base_here {
                // The base of a sure delta went out with the last pack: deflate the object
                // whole here, outside the lock (`push` covers the narrower race).
                object.deflated = object.whole().into_owned();
                object.delta = None;
            }
        }
        let full = {
            let mut guard = self.state();
            let Some(packing) = guard.as_mut() else {
                if let Some(why) = self
                    .failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                {
                    bail!("{why}");
                }
                bail!("internal error: an object for a pack while no pack is being written");
            };
            if !packing.written.insert(object.id) {
                return Ok(());
            }
            if packing.buffer.push_best(&object, object.base.is_some()) {
                if let Some((key, base)) = object.base {
                    packing.window.offer(key, object.id, base);
                }
            }
            if packing.buffer.bytes() < BUFFER_LIMIT {
                return Ok(());
            }
            // Bases must be in the delta's pack: the next buffer starts without any.
            packing.window = DeltaWindow::default();
            std::mem::take(&mut packing.buffer)
        };
        let mut full = full;
        let written = {
            let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            full.write(&self.dir)
        };
        if let Err(err) = written {
            // Those objects are lost, but their ids are in `written`: packing ends here, so
            // nothing (a later operation of a long-running watch above all) takes them for
            // stored. The operation fails with this error.
            *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{err:#}"));
            *self.state() = None;
            return Err(err);
        }
        Ok(())
    }

    /// An object another thread streamed into a pack of its own.
    pub fn note_packed(&self, id: ObjectId) {
        if let Some(p) = self.state().as_mut() {
            p.written.insert(id);
        }
    }

    /// Write what is buffered and stop packing. Returns one of the ids packed, if any (for
    /// the caller to make the new packs known to its object database).
    pub fn finish(&self) -> Result<Option<ObjectId>> {
        let packing = self.state().take();
        let Some(mut packing) = packing else {
            return Ok(None);
        };
        if !packing.buffer.is_empty() {
            packing.buffer.write(&self.dir)?;
        }
        Ok(packing.written.iter().next().copied())
    }
}

/// Stream one object of `size` bytes from `reader` into a pack of its own, deflated at a level
/// chosen from its first bytes. Returns its id and the index path, or `None` (and writes
/// nothing) when `exists` says the repository already has it.
pub fn stream_single(
    pack_dir: &Path,
    kind: Kind,
    size: u64,
    reader: &mut dyn Read,
    exists: &dyn Fn(&gix::oid) -> bool,
) -> Result<(ObjectId, Option<PathBuf>)> {
    let mut tmp = TempPack::create(pack_dir)?;
    let mut pack_hash = gix::hash::hasher(gix::hash::Kind::Sha1);
    let mut object_hash = gix::hash::hasher(gix::hash::Kind::Sha1);
    object_hash.update(&gix::objs::encode::loose_header(kind, size));
    let header = pack_header(1);
    let entry = entry_header(kind, size);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&entry);
    pack_hash.update(&header);
    pack_hash.update(&entry);
    {
        let file = tmp.pack_file()?;
        file.write_all(&header)?;
        file.write_all(&entry)?;
    }
    // The first chunk decides the level; it is read before the encoder exists.
    let mut first = vec![0u8; SAMPLE.min(size as usize)];
    reader
        .read_exact(&mut first)
        .context("read failed")
        .map_err(|e| e.context(format!("reading the first {} bytes", first.len())))?;
    let level = level_for(&first);
    let sink = HashingWriter {
        inner: tmp.pack_file()?,
        pack_hash: &mut pack_hash,
        crc: &mut crc,
    };
    let mut encoder = flate2::write::ZlibEncoder::new(sink, level.stream_compression());
    object_hash.update(&first);
    encoder.write_all(&first)?;
    let mut remaining = size - first.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    while remaining > 0 {
        let want = buf.len().min(remaining.min(usize::MAX as u64) as usize);
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => bail!("ended {remaining} bytes early"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("read failed"),
        };
        object_hash.update(&buf[..n]);
        encoder.write_all(&buf[..n])?;
        remaining -= n as u64;
    }
    // A reader that knows the exact size reports growth on this last read.
    if reader.read(&mut buf[..1])? != 0 {
        bail!("longer than the {size} bytes expected");
    }
    encoder.finish()?;
    let id = object_hash.try_finalize()?;
    if exists(&id) {
        tmp.discard();
        return Ok((id, None));
    }
    let checksum = pack_hash.try_finalize()?;
    tmp.pack_file()?.write_all(checksum.as_bytes())?;
    let entry = IndexEntry {
        id,
        offset: 12,
        crc32: crc.finalize(),
    };
    let idx = tmp.finish(vec![entry], checksum)?;
    Ok((id, Some(idx)))
}

struct HashingWriter<'a, W> {
    inner: W,
    pack_hash: &'a mut gix::hash::Hasher,
    crc: &'a mut crc32fast::Hasher,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pack_hash.update(&buf[..n]);
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A pack being written under a temporary name (`tmp_pack_*`, which git's own gc knows), and
/// removed unless [`TempPack::finish`] renamed it into place.
struct TempPack {
    dir: PathBuf,
    pack: Option<tempfile::NamedTempFile>,
    writer: Option<BufWriter<File>>,
}

impl TempPack {
    fn create(dir: &Path) -> Result<TempPack> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let pack = tempfile::Builder::new()
            .prefix("tmp_pack_")
            .tempfile_in(dir)
            .with_context(|| format!("could not create a pack file in {}", dir.display()))?;
        let writer = BufWriter::with_capacity(256 * 1024, pack.as_file().try_clone()?);
        Ok(TempPack {
            dir: dir.to_owned(),
            pack: Some(pack),
            writer: Some(writer),
        })
    }

    fn pack_file(&mut self) -> Result<&mut BufWriter<File>> {
        self.writer.as_mut().context("pack already finished")
    }

    fn discard(&mut self) {
        self.writer = None;
        self.pack = None;
    }

    /// Flush the pack, write its index, and move both into place, durably.
    fn finish(&mut self, mut entries: Vec<IndexEntry>, checksum: ObjectId) -> Result<PathBuf> {
        let writer = self.writer.take().context("pack already finished")?;
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .context("could not write a pack")?;
        file.sync_all().context("could not flush a pack to disk")?;
        let pack = self.pack.take().context("pack already finished")?;
        entries.sort_by_key(|e| e.id);
        if entries.windows(2).any(|w| w[0].id == w[1].id) {
            bail!("internal error: the same object twice in one pack");
        }
        let mut idx = tempfile::Builder::new()
            .prefix("tmp_idx_")
            .tempfile_in(&self.dir)?;
        {
            let mut out = BufWriter::new(idx.as_file_mut());
            write_index(&entries, checksum, &mut out)?;
            out.flush()?;
        }
        idx.as_file().sync_all()?;
        let name = format!("pack-{}", checksum.to_hex());
        let pack_path = self.dir.join(format!("{name}.pack"));
        let idx_path = self.dir.join(format!("{name}.idx"));
        // Packs are read-only, as git leaves them.
        for f in [pack.as_file(), idx.as_file()] {
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))?;
        }
        pack.persist(&pack_path)
            .with_context(|| format!("could not create {}", pack_path.display()))?;
        idx.persist(&idx_path)
            .with_context(|| format!("could not create {}", idx_path.display()))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("could not flush {} to disk", self.dir.display()))?;
        Ok(idx_path)
    }
}

/// A version-2 pack index: fan-out table, sorted ids, CRC-32s, offsets (large ones in a
/// table of their own), then the pack's checksum and the index's own.
fn write_index(entries: &[IndexEntry], pack: ObjectId, out: &mut dyn Write) -> Result<()> {
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    let mut put = |bytes: &[u8], out: &mut dyn Write| -> io::Result<()> {
        hasher.update(bytes);
        out.write_all(bytes)
    };
    put(b"\xfftOc", out)?;
    put(&2u32.to_be_bytes(), out)?;
    let mut fanout = [0u32; 256];
    for e in entries {
        fanout[e.id.as_bytes()[0] as usize] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        put(&total.to_be_bytes(), out)?;
    }
    for e in entries {
        put(e.id.as_bytes(), out)?;
    }
    for e in entries {
        put(&e.crc32.to_be_bytes(), out)?;
    }
    let mut large = Vec::new();
    for e in entries {
        let small = if e.offset < 0x8000_0000 {
            e.offset as u32
        } else {
            large.push(e.offset);
            0x8000_0000 | (large.len() as u32 - 1)
        };
        put(&small.to_be_bytes(), out)?;
    }
    for offset in large {
        put(&offset.to_be_bytes(), out)?;
    }
    put(pack.as_bytes(), out)?;
    let own = hasher.try_finalize()?;
    out.write_all(own.as_bytes())?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn abandon_drops_the_buffer_and_stops_packing() {
        let dir = tempfile::tempdir().unwrap();
        let packer = Packer::new(dir.path().join("pack"));
        packer.start();
        let object = Prepared::new(Kind::Blob, b"buffered, never referenced").unwrap();
        let id = object.id;
        packer.add(object).unwrap();
        assert!(packer.contains(&id));
        packer.abandon();
        assert!(!packer.is_active() && !packer.contains(&id));
        // Nothing was written, and finishing now writes nothing either.
        assert_eq!(packer.finish().unwrap(), None);
        assert!(!dir.path().join("pack").exists());
    }

    #[test]
    fn delta_offsets_are_encoded_as_git_reads_them() {
        // git's decoder: ofs = c & 0x7f; while c & 0x80 { ofs = ((ofs + 1) << 7) | next & 0x7f }.
        for (distance, bytes) in [
            (1u64, vec![0x01]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x00]),
            (16_511, vec![0xff, 0x7f]),
            (16_512, vec![0x80, 0x80, 0x00]),
        ] {
            let mut out = Vec::new();
            push_negative_offset(&mut out, distance);
            assert_eq!(out, bytes, "distance {distance}");
        }
    }

    /// Near-copies become deltas in chains of at most MAX_DEPTH, and a delta that was sure of
    /// its base when prepared but finds it gone with the last pack is stored whole: gix reads
    /// every object back.
    #[test]
    fn deltas_read_back_and_a_delta_without_its_base_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("r.git");
        gix::init_bare(&repo_dir).unwrap();
        let packer = Packer::new(repo_dir.join("objects/pack"));
        packer.start();
        let frame = "<nav>the same frame on every page</nav>\n".repeat(200);
        let pages: Vec<Vec<u8>> = (0..6)
            .map(|i| format!("{frame}<h1>page {i}</h1>{frame}").into_bytes())
            .collect();
        let mut ids = Vec::new();
        for page in &pages[..5] {
            let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, Kind::Blob, page).unwrap();
            packer
                .add(packer.prepare_blob(id, page.clone(), b"page.html"))
                .unwrap();
            ids.push(id);
        }
        let depths: Vec<u8> = {
            let state = packer.state();
            let buffer = &state.as_ref().unwrap().buffer;
            ids.iter()
                .filter_map(|id| buffer.bases.get(id).map(|b| b.1))
                .collect()
        };
        // Page 0 whole, page 1 a delta of it, pages 2-4 deltas of page 1 at the longest
        // chain: only pages 0 and 1 can be bases.
        assert_eq!(depths, [0, 1]);
        // The last page is prepared against a base in this buffer (a sure delta: nothing
        // deflated whole), then the buffer goes out before it is added.
        let last = &pages[5];
        let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, Kind::Blob, last).unwrap();
        let prepared = packer.prepare_blob(id, last.clone(), b"other.html");
        assert!(prepared.delta.is_some() && prepared.deflated.is_empty());
        {
            let mut state = packer.state();
            let packing = state.as_mut().unwrap();
            packing.window = DeltaWindow::default();
            std::mem::take(&mut packing.buffer)
                .write(packer.dir())
                .unwrap();
        }
        packer.add(prepared).unwrap();
        ids.push(id);
        packer.finish().unwrap();

        let repo = gix::open(&repo_dir).unwrap();
        for (id, page) in ids.iter().zip(&pages) {
            let object = repo.find_object(*id).unwrap();
            assert_eq!(&object.data, page, "{id}");
        }
    }

    /// Review: an index with offsets at and above 2^31 (the large-offset table) reads back
    /// through gix with the right offsets and CRCs, fan-out and checksum included.
    #[test]
    fn an_index_with_large_offsets_reads_back() {
        let offsets = [12u64, 0x7fff_ffff, 0x8000_0000, 5 << 32, 1000, 0xffff_ffff];
        let mut entries: Vec<IndexEntry> = offsets
            .iter()
            .enumerate()
            .map(|(i, &offset)| IndexEntry {
                id: gix::objs::compute_hash(
                    gix::hash::Kind::Sha1,
                    Kind::Blob,
                    format!("object {i}").as_bytes(),
                )
                .unwrap(),
                offset,
                crc32: 0x0101_0101 * (i as u32 + 1),
            })
            .collect();
        entries.sort_by_key(|e| e.id);
        let mut out = Vec::new();
        let pack = ObjectId::from_bytes_or_panic(&[7; 20]);
        write_index(&entries, pack, &mut out).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack-x.idx");
        std::fs::write(&path, &out).unwrap();
        let index = gix::odb::pack::index::File::at(&path, gix::hash::Kind::Sha1).unwrap();
        assert_eq!(index.num_objects(), offsets.len() as u32);
        assert_eq!(index.pack_checksum(), pack.as_ref());
        index
            .verify_checksum(
                &mut gix::progress::Discard,
                &std::sync::atomic::AtomicBool::new(false),
            )
            .unwrap();
        for e in &entries {
            let i = index
                .lookup(e.id)
                .expect("every id found through the fan-out");
            assert_eq!(index.pack_offset_at_index(i), e.offset);
            assert_eq!(index.crc32_at_index(i), Some(e.crc32));
        }
    }

    #[test]
    fn entry_headers_encode_type_and_size() {
        assert_eq!(entry_header(Kind::Blob, 0), vec![0x30]);
        assert_eq!(entry_header(Kind::Blob, 15), vec![0x3f]);
        assert_eq!(entry_header(Kind::Blob, 16), vec![0xb0, 0x01]);
        assert_eq!(entry_header(Kind::Commit, 0x1234), vec![0x94, 0xa3, 0x02]);
    }

    /// Incompressible bytes (xorshift), deterministic per (non-zero) seed.
    pub(crate) fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn a_pack_that_could_not_be_written_leaves_no_object_taken_for_stored() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the pack directory should be: every pack write fails.
        let not_a_dir = dir.path().join("pack");
        std::fs::write(&not_a_dir, "").unwrap();
        let packer = Packer::new(not_a_dir);
        packer.start();
        let mut ids = Vec::new();
        let failed = loop {
            let data = noise(1 << 20, ids.len() as u64 + 1);
            let object = Prepared::new(Kind::Blob, &data).unwrap();
            ids.push(object.id);
            if let Err(err) = packer.add(object) {
                break err;
            }
            assert!(
                ids.len() < 64,
                "8 MiB of objects never made the buffer write out"
            );
        };
        assert!(format!("{failed:#}").contains("pack"), "{failed:#}");
        assert!(!packer.is_active(), "packing ends with the failure");
        for id in &ids {
            assert!(
                !packer.contains(id),
                "{id} is taken for stored but was never written"
            );
        }
    }

    #[test]
    fn incompressible_content_is_stored() {
        let random: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 3) as u8)
            .collect();
        let text = b"fn main() { println!(\"hello\"); }\n".repeat(3000);
        assert_eq!(level_for(&text), Level::Fast);
        let noise = noise(100_000, 0x9e37_79b9_7f4a_7c15);
        assert_eq!(level_for(&noise), Level::Store);
        // Whatever the level, the stream inflates back to the content.
        for data in [&random[..], &text[..], &noise[..]] {
            let deflated = deflate(data, level_for(data));
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&deflated[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
