//! The shadow repository: a bare git repository outside the work tree.
//!
//! Everything mirror keeps lives here (see docs/format.md): tier branches, the metadata notes,
//! the `mirror.yaml` history, and, under `mirror/`, the lock and the stat caches. Objects are
//! always written before the refs that make them reachable, and refs move only by
//! compare-and-swap, so a crash leaves at worst an unreferenced object behind.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gix::bstr::ByteSlice;
use gix::objs::Write as _;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::Target;
use gix::ObjectId;

use crate::error::Error;

/// Version of the on-disk layout described in docs/format.md. 2: metadata notes are trees
/// split by directory (version 1 wrote one flat blob, still read).
pub const FORMAT_VERSION: u32 = 2;

/// `mirror.formatVersion`: the version of what this mirror writes (older ones refuse it).
fn set_format_version(config: &mut gix::config::File) -> Result<()> {
    config.set_raw_value_by(
        "mirror",
        None,
        "formatVersion",
        FORMAT_VERSION.to_string().as_str(),
    )?;
    Ok(())
}

/// fsck message ids about file *content and names* that are legitimate in a backup.
const FSCK_CONTENT_CHECKS: &[&str] = &[
    "hasDotgit",
    "gitmodulesSymlink",
    "gitattributesSymlink",
    "gitignoreSymlink",
    "mailmapSymlink",
    "gitmodulesName",
    "gitmodulesPath",
    "gitmodulesUrl",
    "gitmodulesUpdate",
    "gitmodulesParse",
    "gitmodulesLarge",
    "gitmodulesBlob",
    "gitattributesLarge",
    "gitattributesLineLength",
    "gitattributesBlob",
];

/// Files up to this size are read into memory and hashed before writing (which lets
/// gix skip objects that already exist); larger ones are streamed so memory stays flat.
const STREAM_THRESHOLD: u64 = 8 * 1024 * 1024;

pub struct Shadow {
    pub path: PathBuf,
    pub repo: gix::Repository,
    /// The same object database for existence checks, which mostly miss (new content): by
    /// default gix answers each miss by looking for new packs on disk, which made a first
    /// snapshot spend half its time in the kernel. Packs this process writes are made known
    /// once, at [`Shadow::sync`].
    lookup: gix::Repository,
    /// Loose objects this process created and has not made durable yet (see [`Shadow::sync`]).
    unsynced: std::cell::RefCell<Vec<ObjectId>>,
    /// While started (see [`Shadow::begin_pack`]), new objects go into pack files, not loose.
    pub packer: crate::pack::Packer,
    /// The pack indexes, opened once, for streaming packed blobs (see [`Shadow::open_blob`]).
    packs: std::cell::RefCell<Vec<OpenPack>>,
    /// Delta bases rebuilt lately, by (pack inode, offset): a restore in tree order meets the
    /// same base for many blobs in a row (see [`Shadow::rebuild_packed`]).
    bases: std::cell::RefCell<std::collections::VecDeque<(BaseKey, std::sync::Arc<Vec<u8>>)>>,
}

/// A pack entry: the pack file's inode and the entry's offset.
type BaseKey = (u64, u64);

/// How many rebuilt delta bases a shadow keeps, and the largest it keeps.
const BASE_CACHE: usize = 16;
const BASE_CACHE_MAX: usize = 1024 * 1024;

struct OpenPack {
    index: gix::odb::pack::index::File,
    pack: File,
    pack_path: PathBuf,
}

/// Pack indexes one process can track at least (see [`Shadow::open`]); a slot is a few
/// hundred bytes.
const PACK_SLOTS: usize = 4096;

/// Above this many new objects one `syncfs` beats an `fsync` per object.
const FSYNC_EACH_LIMIT: usize = 128;

/// A file that could not be read completely; reported, never fatal for the snapshot.
#[derive(Debug, Clone)]
pub struct ReadProblem(pub String);

pub enum BlobWrite {
    Written { oid: ObjectId, size: u64 },
    Unreadable(ReadProblem),
}

pub fn tier_ref(tier: &str) -> String {
    format!("refs/heads/tiers/{tier}")
}

pub const NOTES_REF: &str = "refs/notes/mirror";
pub const CONFIG_REF: &str = "refs/mirror/config";

impl Shadow {
    /// Create a new bare shadow repository at `path` that belongs to project `root`.
    pub fn create(path: &Path, root: &Path, first_tier: &str) -> Result<Shadow> {
        if path.exists() && std::fs::read_dir(path)?.next().is_some() {
            bail!(
                "{} already exists and is not empty; choose another --shadow path",
                path.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("could not create shadow directory {}", path.display()))?;
        gix::init_bare(path)
            .with_context(|| format!("could not create bare repository at {}", path.display()))?;
        let config_path = path.join("config");
        let mut config = gix::config::File::from_path_no_includes(
            config_path.clone(),
            gix::config::Source::Local,
        )
        .with_context(|| format!("could not read {}", config_path.display()))?;
        let root_str = root
            .to_str()
            .with_context(|| format!("project root {} is not valid UTF-8", root.display()))?;
        config.set_raw_value_by("mirror", None, "root", root_str)?;
        set_format_version(&mut config)?;
        // `git fsck` judges trees by what a *checkout* of them could do to a git work tree:
        // names like `git~1`, or a symlinked `.gitmodules`, are flagged. In a backup they are just
        // the user's files, recorded faithfully (mirror restores them itself, safely), so these
        // checks are switched off here, and only here; all others stay on.
        for check in FSCK_CONTENT_CHECKS {
            config.set_raw_value_by("fsck", None, *check, "ignore")?;
        }
        let mut out = Vec::new();
        config.write_to(&mut out)?;
        write_atomically(&config_path, &out)?;
        std::fs::create_dir_all(path.join("mirror").join("cache"))?;
        let shadow = Shadow::open(path)?;
        point_head_at_tier(&shadow.repo, first_tier)?;
        Ok(shadow)
    }

    /// Record in the config that this repository holds format [`FORMAT_VERSION`] data, before
    /// the first such object is referenced: an older mirror then refuses it (and says to
    /// upgrade) instead of misreading it. A repository made by an older mirror is upgraded
    /// here, by its first new snapshot.
    pub fn mark_format(&self) -> Result<()> {
        let config_path = self.path.join("config");
        let recorded = |config: &gix::config::File| {
            config
                .integer("mirror.formatVersion")
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        // The snapshot taken when the repository was opened; the file is only read (and
        // written) when that is older, once per repository.
        let at_open = self.repo.config_snapshot().integer("mirror.formatVersion");
        if at_open.unwrap_or(0) >= i64::from(FORMAT_VERSION) {
            return Ok(());
        }
        let mut config = gix::config::File::from_path_no_includes(
            config_path.clone(),
            gix::config::Source::Local,
        )
        .with_context(|| format!("could not read {}", config_path.display()))?;
        if recorded(&config) >= i64::from(FORMAT_VERSION) {
            return Ok(());
        }
        set_format_version(&mut config)?;
        let mut out = Vec::new();
        config.write_to(&mut out)?;
        write_atomically(&config_path, &out)
            .with_context(|| format!("could not upgrade {}", config_path.display()))
    }

    pub fn open(path: &Path) -> Result<Shadow> {
        // gix tracks a fixed number of pack indexes per process, by default 1.1 times the
        // packs on disk at opening (at least 32). A long-running watch writes a small pack
        // per snapshot and many more per large one; past the slots every lookup would fail
        // until the process restarts.
        let slots = gix::odb::store::init::Slots::AsNeededByDiskState {
            multiplier: 2.0,
            minimum: PACK_SLOTS,
        };
        let options = gix::open::Options::isolated().object_store_slots(slots);
        let repo = gix::open_opts(path, options).with_context(|| {
            format!(
                "could not open shadow repository {} — check `shadow:` in mirror.yaml",
                path.display()
            )
        })?;
        if !repo.is_bare() {
            bail!(
                "{} is not a bare repository; mirror only writes to bare shadow repositories",
                path.display()
            );
        }
        let version = repo
            .config_snapshot()
            .integer("mirror.formatVersion")
            .unwrap_or(i64::from(FORMAT_VERSION));
        if version > i64::from(FORMAT_VERSION) {
            bail!(
                "{} uses shadow format version {version}, written by a newer mirror (this one knows version {FORMAT_VERSION}) — upgrade mirror",
                path.display()
            );
        }
        let mut lookup = repo.clone();
        lookup.objects.refresh_never();
        Ok(Shadow {
            path: path.to_owned(),
            repo,
            lookup,
            unsynced: Default::default(),
            packer: crate::pack::Packer::new(path.join("objects").join("pack")),
            packs: Default::default(),
            bases: Default::default(),
        })
    }

    /// The project root this shadow repository records (`mirror.root` in its config).
    pub fn recorded_root(&self) -> Option<PathBuf> {
        let config = self.repo.config_snapshot();
        config
            .string("mirror.root")
            .map(|s| PathBuf::from(s.to_str_lossy().into_owned()))
    }

    /// Refuse to work for a project root other than the one recorded at `init`.
    pub fn check_root(&self, root: &Path) -> Result<()> {
        match self.recorded_root() {
            Some(recorded) if recorded == root => Ok(()),
            Some(recorded) => Err(Error::ForeignRoot {
                shadow: self.path.clone(),
                recorded,
                actual: root.to_owned(),
            }
            .into()),
            None => bail!(
                "{} is not a mirror shadow repository (no mirror.root in its config)",
                self.path.display()
            ),
        }
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.path.join("mirror")
    }

    pub fn ref_target(&self, name: &str) -> Result<Option<ObjectId>> {
        let reference = self
            .repo
            .try_find_reference(name)
            .with_context(|| format!("could not read ref {name}"))?;
        Ok(match reference {
            Some(r) => Some(
                r.into_fully_peeled_id()
                    .with_context(|| format!("ref {name} does not point to an object"))?
                    .detach(),
            ),
            None => None,
        })
    }

    pub fn tier_tip(&self, tier: &str) -> Result<Option<ObjectId>> {
        self.ref_target(&tier_ref(tier))
    }

    /// Move `name` to `new`, only if it still points at `expected` (None: must not exist).
    pub fn update_ref(
        &self,
        name: &str,
        new: ObjectId,
        expected: Option<ObjectId>,
        why: &str,
    ) -> Result<()> {
        let expected = match expected {
            Some(old) => PreviousValue::MustExistAndMatch(Target::Object(old)),
            None => PreviousValue::MustNotExist,
        };
        self.repo
            .edit_reference(RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: why.into(),
                    },
                    expected,
                    new: Target::Object(new),
                },
                name: name.try_into()?,
                deref: false,
            })
            .with_context(|| {
                format!("could not update {name} (did another process change it meanwhile?)")
            })?;
        Ok(())
    }

    /// Make every object this process wrote durable before a ref points at it: gix, like git
    /// by default, does not fsync loose objects, and after a power loss a ref to an object that
    /// never reached the disk would be a corrupt repository. A few objects are fsynced one by one
    /// (with their directories); many at once, one `syncfs` is cheaper.
    pub fn sync(&self) -> Result<()> {
        use rustix::fs::{fsync, open, syncfs, Mode, OFlags};
        // Packs are flushed as they are written; the buffer is written (and packing ends) here.
        if let Some(packed) = self.packer.finish()? {
            // One lookup that may refresh: the shared store learns about the new packs.
            let _ = gix::objs::Exists::exists(&self.repo.objects, &packed);
        }
        let ids = std::mem::take(&mut *self.unsynced.borrow_mut());
        if ids.is_empty() {
            return Ok(());
        }
        let flush = |path: &Path, flags: OFlags| -> Result<()> {
            let fd = match open(path, flags | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                // Packed meanwhile by `mirror gc`, which flushed its pack before it removed
                // the loose copy: nothing left to flush here.
                Err(rustix::io::Errno::NOENT) => return Ok(()),
                Err(e) => {
                    return Err(e).with_context(|| format!("could not open {}", path.display()))
                }
            };
            if ids.len() > FSYNC_EACH_LIMIT {
                syncfs(&fd)
                    .with_context(|| format!("could not flush {} to disk", self.path.display()))?;
            } else {
                fsync(&fd)
                    .with_context(|| format!("could not flush {} to disk", path.display()))?;
            }
            Ok(())
        };
        if ids.len() > FSYNC_EACH_LIMIT {
            return flush(&self.path, OFlags::RDONLY | OFlags::DIRECTORY);
        }
        let mut dirs = std::collections::BTreeSet::new();
        for id in &ids {
            // Already packed, or the empty tree gix serves without a file: nothing to flush
            // (`flush` skips what is not there).
            let path = self.loose_path(id);
            flush(&path, OFlags::RDONLY)?;
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_owned());
            }
        }
        for dir in dirs {
            flush(&dir, OFlags::RDONLY | OFlags::DIRECTORY)?;
        }
        Ok(())
    }

    /// Note an object written through another gix API (the tree editor) for the next sync.
    pub fn track(&self, id: ObjectId) {
        self.unsynced.borrow_mut().push(id);
    }

    fn loose_path(&self, id: &gix::oid) -> PathBuf {
        let hex = id.to_hex().to_string();
        self.path.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// Write any object, skipping (and not tracking) one that already exists.
    pub fn write_object(&self, object: &impl gix::objs::WriteTo) -> Result<ObjectId> {
        let mut buf = Vec::with_capacity(object.size() as usize);
        object.write_to(&mut buf)?;
        self.write_buf(object.kind(), &buf)
    }

    fn write_buf(&self, kind: gix::objs::Kind, data: &[u8]) -> Result<ObjectId> {
        let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data)?;
        if self.has(&id) {
            return Ok(id);
        }
        if self.packer.is_active() {
            self.packer
                .add(crate::pack::Prepared::with_id(id, kind, data))?;
            return Ok(id);
        }
        self.repo
            .objects
            .write_buf(kind, data)
            .with_context(|| format!("could not write an object into {}", self.path.display()))?;
        self.unsynced.borrow_mut().push(id);
        Ok(id)
    }

    /// Does the repository (or the pack being written) have this object?
    pub fn has(&self, id: &gix::oid) -> bool {
        // `objects.exists`, not `repo.has_object`: the latter reports the empty tree as always
        // present, but `git fsck` needs it as a real object once a tree refers to it.
        self.packer.contains(id) || gix::objs::Exists::exists(&self.lookup.objects, id)
    }

    /// From now until the next [`Shadow::sync`], write new objects into pack files: for an
    /// operation that adds many objects at once (see `pack.rs` for why).
    pub fn begin_pack(&self) {
        self.packer.start();
    }

    pub fn pack_dir(&self) -> PathBuf {
        self.packer.dir().to_owned()
    }

    /// Write a commit of `tree` with `parents` (an `Option` for a chain, none for a first commit).
    pub fn write_commit(
        &self,
        tree: ObjectId,
        parents: impl IntoIterator<Item = ObjectId>,
        message: String,
        signature: &gix::actor::Signature,
    ) -> Result<ObjectId> {
        let commit = gix::objs::Commit {
            tree,
            parents: parents.into_iter().collect(),
            author: signature.clone(),
            committer: signature.clone(),
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        self.write_object(&commit)
            .with_context(|| format!("could not write a commit into {}", self.path.display()))
    }

    /// Append a commit of `tree` to the ref `name`, whose current value is `previous`.
    pub fn append_commit(
        &self,
        name: &str,
        previous: Option<ObjectId>,
        tree: ObjectId,
        message: String,
        signature: &gix::actor::Signature,
    ) -> Result<ObjectId> {
        let id = self.write_commit(tree, previous, message, signature)?;
        self.sync()?;
        self.update_ref(name, id, previous, &format!("mirror: {name}"))?;
        Ok(id)
    }

    /// Store the content of an open file as a blob, checking that exactly `size` bytes are
    /// read. With `encrypt`, the blob is the file's age ciphertext, streamed through: the
    /// plaintext never reaches an object, and a large file is never held whole in memory.
    pub fn write_file_blob(
        &self,
        file: File,
        size: u64,
        encrypt: Option<&crate::crypt::Encryptor>,
    ) -> Result<BlobWrite> {
        let written = read_exactly(file, size, |exact| match encrypt {
            None => self.write_stream(size, exact),
            Some(encryptor) => {
                let (total, mut reader) = encryptor.encrypting_reader(exact, size)?;
                self.write_stream(total, &mut reader)
            }
        })?;
        Ok(match written {
            Ok(oid) => BlobWrite::Written { oid, size },
            Err(problem) => BlobWrite::Unreadable(problem),
        })
    }

    /// Write a blob of exactly `size` bytes from `reader`: small ones through memory (hashed
    /// first, so an existing object is not rewritten), large ones streamed.
    pub fn write_stream(&self, size: u64, reader: &mut dyn Read) -> Result<ObjectId> {
        if size <= STREAM_THRESHOLD {
            return self.write_blob(&read_small(size, reader)?);
        }
        // Large objects go into a pack of their own, flushed as it is written: never held
        // whole in memory, and deflated only as hard as their content deserves.
        let (oid, packed) = crate::pack::stream_single(
            &self.pack_dir(),
            gix::objs::Kind::Blob,
            size,
            reader,
            &|id| self.has(id),
        )
        .with_context(|| format!("could not write an object into {}", self.path.display()))?;
        if packed.is_some() {
            self.packer.note_packed(oid);
        }
        Ok(oid)
    }

    pub fn write_blob(&self, data: &[u8]) -> Result<ObjectId> {
        self.write_buf(gix::objs::Kind::Blob, data)
    }

    /// Open a blob for streaming, its hash verified at the end. Loose objects and whole pack
    /// entries are inflated incrementally; a delta is rebuilt in memory from its chain
    /// (mirror's are small blobs), by gix when the chain leaves its pack.
    pub fn open_blob(&self, oid: &gix::oid) -> Result<(u64, Box<dyn Read + '_>)> {
        let hex = oid.to_hex().to_string();
        let loose = self.loose_path(oid);
        match File::open(&loose) {
            Ok(file) => {
                let mut inflate =
                    flate2::read::ZlibDecoder::new(BufReader::with_capacity(64 * 1024, file));
                let mut header = Vec::with_capacity(32);
                let mut byte = [0u8; 1];
                loop {
                    inflate
                        .read_exact(&mut byte)
                        .with_context(|| format!("corrupt loose object {}", loose.display()))?;
                    if byte[0] == 0 {
                        break;
                    }
                    header.push(byte[0]);
                    if header.len() > 64 {
                        bail!("corrupt loose object {}: header too long", loose.display());
                    }
                }
                let size = header
                    .strip_prefix(b"blob ")
                    .and_then(|s| s.to_str().ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .with_context(|| {
                        format!(
                            "object {hex} is not a blob (loose object {})",
                            loose.display()
                        )
                    })?;
                Ok((size, Box::new(VerifyingReader::new(inflate, oid, size))))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if let Some(found) = self.open_packed_blob(oid)? {
                    return Ok(found);
                }
                // A delta mirror does not rebuild itself (its base in another pack, a chain
                // deeper than MAX_CHAIN, an entry above REBUILT_MAX): gix does, in memory. Git
                // never deltifies blobs above core.bigFileThreshold (512 MiB).
                let blob = self.repo.find_blob(oid).with_context(|| {
                    format!("blob {hex} is missing from {}", self.path.display())
                })?;
                let data = blob.detach().data;
                // Rebuilt from its delta base in memory: checked here, as the streaming
                // readers check theirs.
                let actual =
                    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data)?;
                if actual.as_ref() != oid {
                    bail!("object {oid} is corrupt (content hashes to {actual})");
                }
                Ok((data.len() as u64, Box::new(io::Cursor::new(data))))
            }
            Err(err) => Err(err).with_context(|| format!("could not open {}", loose.display())),
        }
    }

    /// Stream a blob from a pack with positioned reads: stored whole (every blob above 1 MiB
    /// mirror writes, and large ones of `git gc`), the entry is a plain zlib stream inflated
    /// incrementally; a delta is rebuilt in memory from its chain in the same pack. `None`
    /// when no pack has it, or its chain leaves the pack (see [`Shadow::rebuild_packed`]).
    fn open_packed_blob(&self, oid: &gix::oid) -> Result<Option<(u64, Box<dyn Read + '_>)>> {
        let found = self.find_packed(oid)?;
        let found = match found {
            Some(found) => Some(found),
            // A pack written since the list was read (by this process or another): look again.
            None => {
                self.packs.borrow_mut().clear();
                // Cached bases are keyed by pack inode, which a removed pack frees for reuse.
                self.bases.borrow_mut().clear();
                self.find_packed(oid)?
            }
        };
        let Some((file, pack_path, offset)) = found else {
            return Ok(None);
        };
        let mut head = [0u8; 16];
        let n = read_at_most(&file, &mut head, offset)
            .with_context(|| format!("could not read {}", pack_path.display()))?;
        let (type_code, size, header_len) = parse_entry_header(&head[..n])
            .with_context(|| format!("corrupt entry for {oid} in {}", pack_path.display()))?;
        if type_code == OFS_DELTA || type_code == REF_DELTA {
            // Rebuilt in memory from its chain, read the same way (mapping the pack through
            // gix would count every page it touches as this process's memory).
            let rebuilt = self
                .rebuild_packed(&file, offset)
                .with_context(|| format!("corrupt entry for {oid} in {}", pack_path.display()))?;
            return Ok(rebuilt.map(|data| {
                let size = data.len() as u64;
                let reader: Box<dyn Read + '_> =
                    Box::new(VerifyingReader::new(io::Cursor::new(data), oid, size));
                (size, reader)
            }));
        }
        if type_code != 3 {
            // Any other type is not a blob.
            return Ok(None);
        }
        // Plain positioned reads, not a mapping: mapped pages of a 1 GiB pack would count as
        // resident memory of this process.
        let compressed = BufReader::with_capacity(
            64 * 1024,
            PositionedReader {
                file,
                offset: offset + header_len as u64,
            },
        );
        let inflate = flate2::read::ZlibDecoder::new(compressed);
        Ok(Some((
            size,
            Box::new(VerifyingReader::new(inflate, oid, size)),
        )))
    }

    /// The content of the pack entry at `offset` of `file`, following delta chains within
    /// the pack; `None` when a chain leaves the pack or is deeper than [`MAX_CHAIN`] (gix then
    /// rebuilds the object).
    fn rebuild_packed(&self, file: &File, offset: u64) -> Result<Option<Vec<u8>>> {
        let pack = PackFile {
            file,
            ino: std::os::unix::fs::MetadataExt::ino(&file.metadata()?),
        };
        Ok(self.rebuild_entry(&pack, offset, 0)?.map(|data| {
            std::sync::Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone())
        }))
    }

    /// [`Shadow::rebuild_packed`], sharing the bases it keeps.
    fn rebuild_entry(
        &self,
        pack: &PackFile,
        offset: u64,
        depth: usize,
    ) -> Result<Option<std::sync::Arc<Vec<u8>>>> {
        if depth > MAX_CHAIN {
            return Ok(None);
        }
        let key = (pack.ino, offset);
        if let Some((_, data)) = self.bases.borrow().iter().find(|(k, _)| *k == key) {
            return Ok(Some(data.clone()));
        }
        let Some(data) = self.rebuild_uncached(pack, offset, depth)? else {
            return Ok(None);
        };
        let data = std::sync::Arc::new(data);
        // Bases (depth > 0) are what is met again; the blob asked for is not kept.
        if depth > 0 && data.len() <= BASE_CACHE_MAX {
            let mut bases = self.bases.borrow_mut();
            if bases.len() == BASE_CACHE {
                bases.pop_front();
            }
            bases.push_back((key, data.clone()));
        }
        Ok(Some(data))
    }

    fn rebuild_uncached(
        &self,
        pack: &PackFile,
        offset: u64,
        depth: usize,
    ) -> Result<Option<Vec<u8>>> {
        let file = pack.file;
        let mut head = [0u8; 32];
        let n = read_at_most(file, &mut head, offset)?;
        let head = &head[..n];
        let (type_code, size, header_len) =
            parse_entry_header(head).context("unreadable entry header")?;
        let (base_offset, data_at) = match type_code {
            // A base larger than git ever deltifies is left to gix, which maps the pack.
            1..=4 if size > REBUILT_MAX => return Ok(None),
            1..=4 => return inflate_exactly(file, offset + header_len as u64, size).map(Some),
            OFS_DELTA => {
                let (distance, len) = parse_negative_offset(&head[header_len..])
                    .context("unreadable delta base offset")?;
                let base = offset
                    .checked_sub(distance)
                    // After the pack's 12-byte header, and strictly before the delta.
                    .filter(|&b| b >= 12 && b < offset)
                    .context("delta base offset out of the pack")?;
                (base, offset + (header_len + len) as u64)
            }
            REF_DELTA => {
                let base_id = head
                    .get(header_len..header_len + 20)
                    .and_then(|b| gix::oid::try_from_bytes(b).ok())
                    .context("truncated delta base id")?;
                // The base must be in the same pack as the delta (git's rule for packs on disk).
                let Some((base_file, _, base)) = self.find_packed(base_id)? else {
                    return Ok(None);
                };
                // Packs share their directory, so an inode names one.
                if std::os::unix::fs::MetadataExt::ino(&base_file.metadata()?) != pack.ino {
                    return Ok(None);
                }
                (base, offset + (header_len + 20) as u64)
            }
            other => bail!("entry of unknown type {other}"),
        };
        // The base first: a chain holds one delta in memory at a time.
        let Some(base) = self.rebuild_entry(pack, base_offset, depth + 1)? else {
            return Ok(None);
        };
        if size > REBUILT_MAX {
            return Ok(None);
        }
        let delta = inflate_exactly(file, data_at, size)?;
        Ok(Some(crate::delta::apply(
            &base,
            &delta,
            REBUILT_MAX as usize,
        )?))
    }

    /// The pack file and offset holding `oid`, from the indexes opened so far (opening them
    /// all when none is open yet).
    fn find_packed(&self, oid: &gix::oid) -> Result<Option<(File, PathBuf, u64)>> {
        use gix::odb::pack;
        let mut packs = self.packs.borrow_mut();
        if packs.is_empty() {
            let dir = self.pack_dir();
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Ok(None);
            };
            for entry in entries {
                let idx_path = entry?.path();
                if idx_path.extension().is_none_or(|e| e != "idx") {
                    continue;
                }
                // A pack `mirror gc` removed since the directory was listed (its objects are in
                // a newer pack) is skipped, not an error.
                let index = match pack::index::File::at(&idx_path, gix::hash::Kind::Sha1) {
                    Ok(index) => index,
                    Err(_) if !idx_path.exists() => continue,
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("could not read pack index {}", idx_path.display())
                        })
                    }
                };
                let pack_path = idx_path.with_extension("pack");
                let pack = match File::open(&pack_path) {
                    Ok(pack) => pack,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("could not open {}", pack_path.display()))
                    }
                };
                packs.push(OpenPack {
                    index,
                    pack,
                    pack_path,
                });
            }
        }
        for open in packs.iter() {
            if let Some(i) = open.index.lookup(oid) {
                let offset = open.index.pack_offset_at_index(i);
                return Ok(Some((
                    open.pack.try_clone()?,
                    open.pack_path.clone(),
                    offset,
                )));
            }
        }
        Ok(None)
    }

    /// Does blob `oid` start with `prefix`? Reads only that much of it.
    pub fn blob_starts_with(&self, oid: &gix::oid, prefix: &[u8]) -> Result<bool> {
        let (_, blob) = self.open_blob(oid)?;
        let mut head = Vec::with_capacity(prefix.len());
        blob.take(prefix.len() as u64)
            .read_to_end(&mut head)
            .with_context(|| format!("could not read blob {oid}"))?;
        Ok(head == prefix)
    }

    /// Read a whole (small) blob, e.g. a note or `mirror.yaml`.
    pub fn read_blob(&self, oid: &gix::oid) -> Result<Vec<u8>> {
        Ok(self
            .repo
            .find_blob(oid)
            .with_context(|| format!("blob {oid} is missing from {}", self.path.display()))?
            .detach()
            .data)
    }
}

/// Point HEAD of a (bare) repository at a tier's branch, so `git clone` of it checks that tier
/// out.
pub fn point_head_at_tier(repo: &gix::Repository, tier: &str) -> Result<()> {
    repo.edit_reference(RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: "mirror".into(),
            },
            expected: PreviousValue::Any,
            new: Target::Symbolic(tier_ref(tier).try_into()?),
        },
        name: "HEAD".try_into()?,
        deref: false,
    })
    .context("could not point HEAD at the first tier")?;
    Ok(())
}

/// Read all `size` bytes of a small object into memory.
fn read_small(size: u64, reader: &mut dyn Read) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size as usize);
    reader
        .take(size + 1)
        .read_to_end(&mut buf)
        .context("read failed")?;
    if buf.len() as u64 != size {
        bail!(
            "changed size while being read ({size} bytes expected, {} read)",
            buf.len()
        );
    }
    Ok(buf)
}

/// A plain file's blob, readied by a worker thread for the pack ([`crate::pack::Packer::add`]).
pub enum PreparedBlob {
    /// Hashed and deflated, for the writer to append to its pack.
    Object(crate::pack::Prepared),
    /// The repository already has it: nothing to write.
    Existing(ObjectId),
    /// Large: streamed into a pack of its own by the worker.
    Packed(ObjectId),
    Unreadable(ReadProblem),
}

/// The part of storing a plain file that can run on any thread (no [`Shadow`], which is not
/// `Sync`): read, hash, check for the object in `repo`, deflate; a large file is streamed into
/// a pack of its own in `pack_dir`.
pub fn prepare_file_blob(
    repo: &gix::Repository,
    packer: &crate::pack::Packer,
    name: &[u8],
    file: File,
    size: u64,
) -> Result<PreparedBlob> {
    let pack_dir = packer.dir();
    let exists = |id: &gix::oid| gix::objs::Exists::exists(&repo.objects, id);
    let prepared = read_exactly(file, size, |exact| {
        if size > STREAM_THRESHOLD {
            let (id, packed) =
                crate::pack::stream_single(pack_dir, gix::objs::Kind::Blob, size, exact, &exists)?;
            return Ok(match packed {
                Some(_) => PreparedBlob::Packed(id),
                None => PreparedBlob::Existing(id),
            });
        }
        read_small(size, exact).and_then(|data| {
            let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data)?;
            Ok(if exists(&id) {
                PreparedBlob::Existing(id)
            } else {
                PreparedBlob::Object(packer.prepare_blob(id, data, name))
            })
        })
    })?;
    Ok(prepared.unwrap_or_else(PreparedBlob::Unreadable))
}

/// Run `store` over exactly `size` bytes of `file`. A file that grew, shrank or failed while
/// being read is the inner `Err` (reported, never fatal), whatever `store` made of the
/// shortened stream; the outer `Err` is `store`'s own failure (a write into the shadow).
fn read_exactly<T>(
    file: File,
    size: u64,
    store: impl FnOnce(&mut ExactReader) -> Result<T>,
) -> Result<std::result::Result<T, ReadProblem>> {
    let mut exact = ExactReader::new(file, size);
    let result = store(&mut exact);
    match (result, exact.problem.take()) {
        (_, Some(problem)) => Ok(Err(problem)),
        (Ok(value), None) => Ok(Ok(value)),
        (Err(err), None) => Err(err),
    }
}

/// Compute a file's blob id without storing it (for `status` and `diff`).
pub fn hash_file(file: File, size: u64) -> Result<std::result::Result<ObjectId, ReadProblem>> {
    let mut reader = ExactReader::new(file, size);
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(&gix::objs::encode::loose_header(
        gix::objs::Kind::Blob,
        size,
    ));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => break,
        }
    }
    if let Some(problem) = reader.problem.take() {
        return Ok(Err(problem));
    }
    Ok(Ok(hasher.try_finalize()?))
}

/// A reader that yields exactly `size` bytes and records (rather than hides) a file that
/// grew, shrank or failed while being read.
struct ExactReader {
    file: File,
    remaining: u64,
    problem: Option<ReadProblem>,
    size: u64,
}

impl ExactReader {
    fn new(file: File, size: u64) -> Self {
        ExactReader {
            file,
            remaining: size,
            problem: None,
            size,
        }
    }

    fn fail(&mut self, message: String) -> io::Error {
        self.problem = Some(ReadProblem(message.clone()));
        io::Error::other(message)
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Probe one byte: a file that grew while being read is not what we stat'ed.
            let mut probe = [0u8; 1];
            return match self.file.read(&mut probe) {
                Ok(0) => Ok(0),
                Ok(_) => Err(self.fail(format!(
                    "grew while being read (expected {} bytes)",
                    self.size
                ))),
                Err(err) => Err(self.fail(format!("read failed: {err}"))),
            };
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        match self.file.read(&mut buf[..want]) {
            Ok(0) => Err(self.fail(format!(
                "shrank while being read (expected {} bytes, got {})",
                self.size,
                self.size - self.remaining
            ))),
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Err(err),
            Err(err) => Err(self.fail(format!("read failed: {err}"))),
        }
    }
}

/// Streams a loose object's content and fails at the end if it does not hash to its id,
/// so a corrupt object is reported instead of silently restored.
struct VerifyingReader<R> {
    inner: R,
    hasher: Option<gix::hash::Hasher>,
    expected: ObjectId,
    remaining: u64,
}

impl<R: Read> VerifyingReader<R> {
    /// `inner` yields the content of blob `oid`, `size` bytes.
    fn new(inner: R, oid: &gix::oid, size: u64) -> Self {
        let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
        hasher.update(&gix::objs::encode::loose_header(
            gix::objs::Kind::Blob,
            size,
        ));
        VerifyingReader {
            inner,
            hasher: Some(hasher),
            expected: oid.to_owned(),
            remaining: size,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            if let Some(hasher) = self.hasher.take() {
                let actual = hasher.try_finalize().map_err(io::Error::other)?;
                if actual != self.expected {
                    return Err(io::Error::other(format!(
                        "object {} is corrupt (content hashes to {actual})",
                        self.expected
                    )));
                }
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "object {} is truncated ({} bytes missing)",
                self.expected, self.remaining
            )));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Write `data` to `path` via a temporary file in the same directory and a rename, so a
/// crash leaves either the old or the new content, never a torn file; flushed to disk first.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    replace_file(path, data, true)
}

/// Like [`write_atomically`], without the flush: for caches and hints that may be lost in a
/// power cut but must never be torn (the stat cache, the audit's last-seen entry).
pub fn write_cache_file(path: &Path, data: &[u8]) -> Result<()> {
    replace_file(path, data, false)
}

/// The process umask (it can only be read by setting it, so it is set straight back).
pub fn current_umask() -> u32 {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.as_raw_mode()
}

fn replace_file(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().context("path has no parent directory")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("could not create a temporary file in {}", dir.display()))?;
    tmp.write_all(data)?;
    // The temporary file is 0600; the result keeps the mode of the file it replaces (a
    // mirror.yaml the user made group-readable stays so), or gets the umask's default.
    let mode = match std::fs::metadata(path) {
        Ok(md) => std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777,
        Err(_) => 0o666 & !current_umask(),
    };
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path)
        .with_context(|| format!("could not replace {}", path.display()))?;
    Ok(())
}

/// Read into `buf` from `offset`, stopping early only at the end of the file.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Pack entry types of deltas: against an entry at a distance back, or named by its id.
const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

/// The longest delta chain mirror rebuilds itself (git's `gc --aggressive` makes 50).
const MAX_CHAIN: usize = 64;

/// The largest entry or delta target mirror rebuilds itself: git's `core.bigFileThreshold`,
/// above which git never deltifies. Sizes in a pack are not trusted with more memory.
const REBUILT_MAX: u64 = 512 * 1024 * 1024;

/// An `OFS_DELTA`'s distance back to its base and the bytes it took (git's encoding: each
/// continued group of 7 bits stands for one more than its bits).
fn parse_negative_offset(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut byte = *bytes.first()?;
    let mut distance = u64::from(byte & 0x7f);
    let mut i = 0;
    while byte & 0x80 != 0 {
        i += 1;
        byte = *bytes.get(i)?;
        distance = distance.checked_add(1)?.checked_mul(128)? | u64::from(byte & 0x7f);
    }
    Some((distance, i + 1))
}

/// Exactly `size` bytes inflated from the zlib stream at `offset` of `file`.
fn inflate_exactly(file: &File, offset: u64, size: u64) -> Result<Vec<u8>> {
    let reader = PositionedReader {
        file: file.try_clone()?,
        offset,
    };
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(BufReader::with_capacity(64 * 1024, reader))
        .take(size.saturating_add(1))
        .read_to_end(&mut out)
        .context("could not inflate an entry")?;
    if out.len() as u64 != size {
        bail!(
            "an entry inflates to {} bytes, not the {size} it declares",
            out.len()
        );
    }
    Ok(out)
}

/// A pack file being read for a delta chain, with its inode (the chain's cache key).
struct PackFile<'a> {
    file: &'a File,
    ino: u64,
}

/// A pack entry's type code, inflated size and header length.
fn parse_entry_header(bytes: &[u8]) -> Option<(u8, u64, usize)> {
    let first = *bytes.first()?;
    let type_code = (first >> 4) & 7;
    let mut size = u64::from(first & 0x0f);
    let mut shift = 4;
    let mut i = 0;
    let mut byte = first;
    while byte & 0x80 != 0 {
        i += 1;
        byte = *bytes.get(i)?;
        if shift > 57 {
            return None;
        }
        size |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    Some((type_code, size, i + 1))
}

/// `Read` over a shared file handle with positioned reads, from `offset` on.
struct PositionedReader {
    file: File,
    offset: u64,
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review: gix tracks a fixed number of pack indexes per process; a long-running watch
    /// writes packs after opening the shadow and must still find objects in the newest.
    #[test]
    fn objects_in_many_packs_written_after_opening_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = Shadow::create(&dir.path().join("s.git"), dir.path(), "t").unwrap();
        let mut last = None;
        for i in 0..80u32 {
            let mut buffer = crate::pack::PackBuffer::default();
            for j in 0..2u32 {
                let data = format!("pack {i} object {j}");
                let object =
                    crate::pack::Prepared::new(gix::objs::Kind::Blob, data.as_bytes()).unwrap();
                last = Some((object.id, data));
                buffer.push(&object);
            }
            buffer.write(&shadow.pack_dir()).unwrap();
        }
        let (id, data) = last.unwrap();
        let found = shadow.repo.find_object(id).unwrap();
        assert_eq!(found.data, data.as_bytes());
    }
}
