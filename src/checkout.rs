//! Restoring snapshots: plan against what is on disk, then write byte-exact files.
//!
//! Files are materialised by mirror itself, not by git's checkout machinery, so no
//! `.gitattributes` filter, eol conversion or user git configuration can alter content, and
//! legitimate Linux names (names with newlines or invalid UTF-8) restore as they
//! were. Every name read from the shadow repository is validated (no `..`, `/`, `.git`) and
//! no write ever goes through a symlink, so even a hostile shadow cannot write outside a tier.
//!
//! In place, the current state is first recorded as a `pre-checkout` snapshot, so a checkout
//! can always be undone.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SendError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use gix::bstr::{BString, ByteSlice};
use gix::ObjectId;

use crate::config::Tier;
use crate::error::Error;
use crate::history;
use crate::listing::{self, Listing, Mode};
use crate::meta::{self, Mtimes};
use crate::progress::Progress;
use crate::project::Project;
use crate::snapshot::{self, EmptyPolicy, TierReport};
use crate::store::Shadow;
use crate::walk::TEMP_PREFIX;

#[derive(Debug, Clone)]
pub enum Target {
    Latest,
    Rev(String),
    /// Seconds since the epoch.
    At(i64),
}

pub struct Request {
    pub target: Target,
    pub tiers: Vec<String>,
    /// Write into this directory instead of the tiers.
    pub to: Option<PathBuf>,
    /// Restrict to these paths (relative to the project root).
    pub paths: Vec<PathBuf>,
    /// Proceed even if the pre-checkout snapshot could not read some files.
    pub force: bool,
    /// Restore only what is missing on disk, touching nothing that exists (`mirror restore
    /// --missing`): nothing is overwritten, so no pre-checkout snapshot is needed.
    pub missing_only: bool,
    /// Leave encrypted files that cannot be decrypted (no or wrong identity) alone instead of
    /// refusing the whole checkout.
    pub skip_encrypted: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct TierRestore {
    pub tier: String,
    #[serde(serialize_with = "ser_oid")]
    pub commit: ObjectId,
    pub written: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Paths that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
    /// Encrypted files left alone under `--skip-encrypted` (paths inside the tier).
    pub skipped_encrypted: Vec<String>,
}

fn ser_oid<S: serde::Serializer>(id: &ObjectId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_string())
}

pub struct Report {
    pub restored: Vec<TierRestore>,
    /// The pre-checkout snapshots (empty with `--to`).
    pub pre: Vec<TierReport>,
    /// Tiers left alone: (tier, why).
    pub skipped: Vec<(String, String)>,
    /// mirror.yaml was missing and was written back from the shadow repository.
    pub config_restored: bool,
    /// Things to tell the user that did not stop the restore.
    pub warnings: Vec<String>,
}

struct Selection {
    tier: Tier,
    commit: ObjectId,
    /// Paths inside the tier; empty means the whole tier.
    scopes: Vec<BString>,
}

pub fn checkout(
    project: &Project,
    shadow: &Shadow,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Report> {
    let mut skipped = Vec::new();
    let mut selections = select(project, shadow, request, &mut skipped)?;
    apply_paths(project, request, &mut selections)?;

    // Resolve everything before touching anything: the pre-checkout snapshot below becomes the
    // new tip, and `latest` must mean the state before it.
    let mut targets = Vec::new();
    let mut warnings = Vec::new();
    for sel in &selections {
        let tree = shadow.repo.find_commit(sel.commit)?.tree_id()?.detach();
        let listing = listing::read_tree(shadow, tree)
            .with_context(|| format!("tier '{}', snapshot {}", sel.tier.name, sel.commit))?;
        let (mtimes, sniffed) = match meta::read_note(shadow, sel.commit)? {
            Some(mtimes) => (mtimes, BTreeSet::new()),
            None => {
                let sniffed = sniff_encrypted(project, shadow, &sel.tier, &listing)?;
                warnings.push(format!(
                    "tier '{}': snapshot {} has no metadata note (was refs/notes/mirror left out of a copy?): modification times and permissions are not restored, and {} treasure files are recognised as encrypted by their age header",
                    sel.tier.name,
                    sel.commit.to_hex_with_len(12),
                    sniffed.len()
                ));
                (Default::default(), sniffed)
            }
        };
        targets.push((listing, mtimes, sniffed));
    }

    // A path that matches nothing is almost always a typo (or a path relative to the wrong
    // directory); like `git checkout`, refuse it instead of "restoring" nothing.
    for (sel, (target, _, _)) in selections.iter().zip(&targets) {
        for scope in &sel.scopes {
            let in_target = target.keys().any(|p| listing::in_scope(p, scope));
            let on_disk = request.to.is_none()
                && project
                    .tier_root(&sel.tier)
                    .join(OsStr::from_bytes(scope))
                    .symlink_metadata()
                    .is_ok();
            if !in_target && !on_disk {
                return Err(Error::Usage(format!(
                    "path '{}' (in tier '{}') matches nothing in snapshot {} nor on disk — paths are relative to the project root {}",
                    scope,
                    sel.tier.name,
                    sel.commit.to_hex_with_len(7),
                    project.root.display()
                ))
                .into());
            }
        }
    }

    if request.missing_only {
        for (sel, (target, _, _)) in selections.iter_mut().zip(&targets) {
            let root = project.tier_dir_under(&project.root, &sel.tier, false)?;
            let wanted = sel.scopes.clone();
            sel.scopes = target
                .keys()
                .filter(|p| wanted.is_empty() || wanted.iter().any(|w| listing::in_scope(p, w)))
                .filter(|p| {
                    root.as_ref()
                        .is_none_or(|r| r.join(OsStr::from_bytes(p)).symlink_metadata().is_err())
                })
                .cloned()
                .collect();
        }
        let mut kept = Vec::new();
        for (sel, target) in selections.into_iter().zip(targets) {
            if sel.scopes.is_empty() {
                skipped.push((sel.tier.name.clone(), "nothing is missing".into()));
            } else {
                kept.push((sel, target));
            }
        }
        (selections, targets) = kept.into_iter().unzip();
    }

    // Encrypted files need the identity: find out now, before anything is written, whether
    // every one in scope decrypts (each header is unwrapped; no content is read yet).
    let mut undecryptable: Vec<BTreeSet<BString>> = Vec::new();
    let mut refused = Vec::new();
    for (sel, (target, target_mtimes, sniffed)) in selections.iter().zip(&targets) {
        let mut cannot = BTreeSet::new();
        for (path, item) in target.iter().filter(|(p, _)| {
            sel.scopes.is_empty() || sel.scopes.iter().any(|s| listing::in_scope(p, s))
        }) {
            let encrypted = target_mtimes
                .get(path)
                .is_some_and(|m| m.encrypted.is_some())
                || sniffed.contains(path);
            if !encrypted {
                continue;
            }
            if let Err(err) = can_decrypt(project, shadow, &item.oid) {
                if refused.is_empty() {
                    refused.push(err);
                }
                cannot.insert(path.clone());
            }
        }
        undecryptable.push(cannot);
    }
    if !request.skip_encrypted {
        // Every tier's undecryptable files are named, not only the first tier's.
        let names: Vec<String> = selections
            .iter()
            .zip(&undecryptable)
            .flat_map(|(sel, cannot)| cannot.iter().map(|p| format!("{}: {p}", sel.tier.name)))
            .collect();
        if !names.is_empty() {
            bail!(
                "{} encrypted files cannot be decrypted: {}; nothing was changed — pass --identity FILE or set MIRROR_IDENTITY (MIRROR_PASSPHRASE for a protected identity), or --skip-encrypted to restore everything else:\n  {}",
                names.len(),
                refused.first().map(String::as_str).unwrap_or("unknown reason"),
                names.join("\n  ")
            );
        }
    }

    let mut report = Report {
        restored: Vec::new(),
        pre: Vec::new(),
        skipped,
        config_restored: false,
        warnings,
    };
    let dest_base = match &request.to {
        Some(dir) => {
            prepare_empty_dir(dir, project)?;
            dir.canonicalize()?
        }
        None if request.missing_only => project.root.clone(),
        None => {
            let options = snapshot::Options {
                trailers: Vec::new(),
                focus: Default::default(),
                tiers: selections.iter().map(|s| s.tier.name.clone()).collect(),
                message: Some("state before checkout".into()),
                trigger: "pre-checkout".into(),
                empty: EmptyPolicy::Skip,
            };
            for (tier, result) in snapshot::snapshot(project, shadow, &options, progress)? {
                let pre = result.with_context(|| {
                    format!(
                        "could not record tier '{tier}' before the checkout; nothing was changed"
                    )
                })?;
                if !pre.unreadable.is_empty() && !request.force {
                    let list: Vec<String> = pre
                        .unreadable
                        .iter()
                        .map(|n| format!("{}: {}", n.path, n.reason))
                        .collect();
                    bail!(
                        "tier '{tier}': {} files could not be read before the checkout, so they could not be saved; nothing was changed — fix them, or pass --force to overwrite them anyway:\n  {}",
                        list.len(),
                        list.join("\n  ")
                    );
                }
                // A killed checkout's temporary files: partial copies of recorded content
                // (possibly of a decrypted treasure), never the user's. This checkout
                // finishes that one's work, so they go.
                let tier_config = project
                    .config
                    .select_tiers(std::slice::from_ref(&tier))?
                    .remove(0);
                if let Some(root) = project.tier_dir_under(&project.root, &tier_config, false)? {
                    for rel in &pre.leftovers {
                        let path = root.join(OsStr::from_bytes(rel));
                        match std::fs::remove_file(&path) {
                            Ok(()) => report.warnings.push(format!(
                                "removed {}, left by an interrupted checkout",
                                path.display()
                            )),
                            Err(e) => report.warnings.push(format!(
                                "could not remove {}, left by an interrupted checkout: {e}",
                                path.display()
                            )),
                        }
                    }
                }
                report.pre.push(pre);
            }
            if project.config_from_shadow && !project.config_path().exists() {
                if let Some((_, bytes)) = crate::project::recorded_config(shadow)? {
                    crate::store::write_atomically(&project.config_path(), &bytes)?;
                    report.config_restored = true;
                }
            }
            project.root.clone()
        }
    };

    let umask = crate::store::current_umask();
    // In place, the project's mirror.yaml is never rolled back with tier `.`: it has its own
    // history (refs/mirror/config), and an old one could drop tiers added since.
    let keep_config = request.to.is_none() && project.config_path().exists();
    if keep_config {
        for (sel, (target, _, _)) in selections.iter().zip(targets.iter_mut()) {
            if sel.tier.path == "." {
                target.remove(crate::config::CONFIG_FILE.as_bytes());
            }
        }
    }
    for ((sel, (target, target_mtimes, sniffed)), skip) in
        selections.iter().zip(&targets).zip(&undecryptable)
    {
        let dest = project
            .tier_dir_under(&dest_base, &sel.tier, true)?
            .context("tier directory could not be created")?;
        let (mut current, current_mtimes) =
            match report.pre.iter().find(|p| p.tier == sel.tier.name) {
                Some(pre) => (pre.listing.clone(), pre.mtimes.clone()),
                None => Default::default(),
            };
        if keep_config && sel.tier.path == "." {
            current.remove(crate::config::CONFIG_FILE.as_bytes());
        }
        let mut restore = TierRestore {
            tier: sel.tier.name.clone(),
            commit: sel.commit,
            written: 0,
            deleted: 0,
            unchanged: 0,
            failed: Vec::new(),
            skipped_encrypted: skip.iter().map(|p| p.to_string()).collect(),
        };
        let plan = Plan {
            shadow,
            keys: &project.keys,
            skip,
            sniffed,
            target,
            target_mtimes,
            scopes: &sel.scopes,
            place: Place {
                dest: &dest,
                current: &current,
                current_mtimes: &current_mtimes,
                umask,
                no_replace: request.missing_only,
            },
        };
        plan.run(&mut restore, progress).with_context(|| {
            format!(
                "tier '{}': restoring into {}",
                sel.tier.name,
                dest.display()
            )
        })?;
        report.restored.push(restore);
    }
    Ok(report)
}

fn select(
    project: &Project,
    shadow: &Shadow,
    request: &Request,
    skipped: &mut Vec<(String, String)>,
) -> Result<Vec<Selection>> {
    let tiers = project.config.select_tiers(&request.tiers)?;
    let explicit = !request.tiers.is_empty();
    let mut out = Vec::new();
    match &request.target {
        Target::Rev(rev) if rev != "latest" => {
            let resolved = history::resolve(shadow, &project.config, rev)?;
            for (tier_name, commit) in resolved.tiers {
                if explicit && !request.tiers.contains(&tier_name) {
                    continue;
                }
                let tier = project
                    .config
                    .select_tiers(std::slice::from_ref(&tier_name))?
                    .remove(0);
                out.push(Selection {
                    tier,
                    commit,
                    scopes: Vec::new(),
                });
            }
            if out.is_empty() {
                return Err(Error::Usage(format!(
                    "revision '{rev}' holds no snapshot of {}",
                    request.tiers.join(", ")
                ))
                .into());
            }
        }
        target => {
            for tier in tiers {
                let found = match target {
                    Target::At(t) => history::at_time(shadow, &tier.name, *t)?,
                    _ => history::latest(shadow, &tier.name)?,
                };
                match found {
                    Some(commit) => out.push(Selection {
                        tier,
                        commit,
                        scopes: Vec::new(),
                    }),
                    None if explicit => bail!(
                        "tier '{}' has no snapshot {} — see `mirror log`",
                        tier.name,
                        describe(target)
                    ),
                    None => skipped.push((
                        tier.name.clone(),
                        format!("no snapshot {}", describe(target)),
                    )),
                }
            }
            if out.is_empty() {
                bail!(
                    "no snapshot {} in any tier — run `mirror snapshot` first, or see `mirror log`",
                    describe(target)
                );
            }
        }
    }
    Ok(out)
}

fn describe(target: &Target) -> String {
    match target {
        Target::At(t) => format!("at or before {}", history::format_local(*t)),
        _ => "yet".into(),
    }
}

/// Turn `-- PATH...` into per-tier scopes, dropping tiers no path falls into.
fn apply_paths(
    project: &Project,
    request: &Request,
    selections: &mut Vec<Selection>,
) -> Result<()> {
    if request.paths.is_empty() {
        return Ok(());
    }
    for path in &request.paths {
        let rel = relative_to_root(project, path)?;
        let (tier, inside) = project
            .tier_of(&rel)
            .with_context(|| format!("{} is not inside any tier", path.display()))?;
        let sel = selections
            .iter_mut()
            .find(|s| s.tier.name == tier.name)
            .with_context(|| {
                format!(
                    "{} belongs to tier '{}', which this checkout does not restore",
                    path.display(),
                    tier.name
                )
            })?;
        let scope = BString::from(inside.as_os_str().as_bytes());
        if scope.is_empty() {
            sel.scopes.clear();
            sel.scopes.push(BString::default());
        } else {
            sel.scopes.push(scope);
        }
    }
    selections.retain(|s| !s.scopes.is_empty());
    for s in selections.iter_mut() {
        if s.scopes.iter().any(|p| p.is_empty()) {
            s.scopes.clear();
        }
    }
    Ok(())
}

fn relative_to_root(project: &Project, path: &Path) -> Result<PathBuf> {
    crate::config::lexically_inside(&project.root, path).with_context(|| {
        format!(
            "{} is outside the project {}",
            path.display(),
            project.root.display()
        )
    })
}

fn prepare_empty_dir(dir: &Path, project: &Project) -> Result<()> {
    if dir.exists() {
        if std::fs::read_dir(dir)
            .with_context(|| format!("could not read {}", dir.display()))?
            .next()
            .is_some()
        {
            bail!("--to {}: directory is not empty; choose an empty or new directory so nothing in it is overwritten", dir.display());
        }
    } else {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let canon = dir.canonicalize()?;
    for tier in &project.config.tiers {
        let root = project.tier_root(tier);
        if canon.starts_with(&root) {
            bail!("--to {}: inside tier '{}'; the restored copy would be recorded as part of it — choose a directory outside the tiers", dir.display(), tier.name);
        }
    }
    Ok(())
}

/// Whether a blob is to be decrypted on the way out.
#[derive(Clone, Copy)]
enum Encrypted {
    No,
    /// The note's `e` record: the plaintext size, checked.
    Size(u64),
    /// Recognised by its age header in a snapshot without a note.
    UnknownSize,
}

/// Treasure files (by the current patterns) of a snapshot without a metadata note whose blob
/// is an age file: a copy of the shadow that lost `refs/notes/mirror` must not restore
/// ciphertext as if it were the file.
fn sniff_encrypted(
    project: &Project,
    shadow: &Shadow,
    tier: &Tier,
    listing: &Listing,
) -> Result<BTreeSet<BString>> {
    let treasures = project.config.treasures()?;
    let mut out = BTreeSet::new();
    for (path, item) in listing {
        if !matches!(item.mode, Mode::File | Mode::Exec) || !treasures.in_tier(&tier.path, path) {
            continue;
        }
        if shadow.blob_starts_with(&item.oid, crate::crypt::MAGIC)? {
            out.insert(path.clone());
        }
    }
    Ok(out)
}

/// Can the identity open the age file in blob `oid`? Only the header is read. A blob that
/// is missing or damaged is not a key problem: it is left to fail alone when it is written
/// (named, exit 3), and everything else is restored.
fn can_decrypt(
    project: &Project,
    shadow: &Shadow,
    oid: &ObjectId,
) -> std::result::Result<(), String> {
    let Ok((_, blob)) = shadow.open_blob(oid) else {
        return Ok(());
    };
    match project.keys.open(crate::crypt::buffered(blob)) {
        Ok(_) | Err(crate::crypt::DecryptFailure::Content(_)) => Ok(()),
        Err(crate::crypt::DecryptFailure::Identity(why)) => Err(why),
    }
}

struct Plan<'a> {
    shadow: &'a Shadow,
    keys: &'a crate::crypt::Keys,
    /// Encrypted paths that cannot be decrypted: neither written nor removed.
    skip: &'a BTreeSet<BString>,
    /// Paths known encrypted by their age header only (the snapshot has no metadata note).
    sniffed: &'a BTreeSet<BString>,
    target: &'a Listing,
    target_mtimes: &'a Mtimes,
    scopes: &'a [BString],
    /// Where the tier is written and what was there: all that the writer threads share.
    place: Place<'a>,
}

/// The destination of one tier's restore. It is `Sync` (the shadow handle and the keys are
/// not): the writer threads share it, each with a shadow handle of its own.
struct Place<'a> {
    dest: &'a Path,
    current: &'a Listing,
    current_mtimes: &'a Mtimes,
    umask: u32,
    /// Never replace a file that appeared meanwhile (`--missing`: only what is missing is
    /// written, so a file recreated by someone else between the check and the write wins).
    no_replace: bool,
}

/// Below this many entries to write, the threads are not worth starting.
const PARALLEL_FROM: usize = 64;
/// At most this many writer threads (the work is small files: syscalls, inflating, hashing).
const MAX_WRITERS: usize = 4;
/// Jobs go to the writers in batches of this many (one hand-over each, not one per file)...
const BATCH: usize = 16;
/// ...and at most this many batches wait: that bounds memory and keeps the progress bar
/// close to the work done.
const QUEUE: usize = 4;
/// Content is copied in pieces of this size: a small file is one `write`.
const COPY_BUF: usize = 64 * 1024;

/// One file or symlink to write; its parent directory exists and is a real directory.
struct Job<'a> {
    /// Its position in the restore order: results are reported in that order.
    index: usize,
    rel: &'a BString,
    mode: Mode,
    oid: ObjectId,
    meta: Option<meta::FileMeta>,
    encrypted: Encrypted,
    parent: PathBuf,
}

/// What a writer did: files written, and failures with their position in the restore order.
#[derive(Default)]
struct Tally {
    written: u64,
    failed: Vec<(usize, String, String)>,
}

impl Tally {
    fn add(&mut self, index: usize, rel: &BString, mode: Mode, result: Result<()>) {
        match result {
            Ok(()) => self.written += mode.is_file() as u64,
            Err(e) => self.failed.push((index, rel.to_string(), format!("{e:#}"))),
        }
    }
}

/// Directories of this run checked to be real directories (or made), `None`, or why one
/// cannot be used, by path inside the tier: each is looked at once, not once per file.
type Dirs = HashMap<Vec<u8>, Option<String>>;

/// Move `tmp` to `dest` unless something is at `dest` by then: `renameat2(RENAME_NOREPLACE)`,
/// or where the filesystem lacks it (NFS, some FUSE), a hard link, which fails just as
/// atomically when `dest` exists, then removing `tmp`.
fn move_no_replace(tmp: &Path, dest: &Path) -> Result<()> {
    use rustix::fs::{linkat, renameat_with, AtFlags, RenameFlags, CWD};
    use rustix::io::Errno;
    let appeared = || {
        anyhow::anyhow!(
            "{} appeared while it was being restored; left as it is",
            dest.display()
        )
    };
    match renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(appeared()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            match linkat(CWD, tmp, CWD, dest, AtFlags::empty()) {
                Ok(()) => {
                    std::fs::remove_file(tmp)
                        .with_context(|| format!("could not remove {}", tmp.display()))?;
                    Ok(())
                }
                Err(Errno::EXIST) => Err(appeared()),
                Err(e) => Err(anyhow::anyhow!(
                    "could not move into place {} (this filesystem supports neither an exclusive rename nor hard links): {e}",
                    dest.display()
                )),
            }
        }
        Err(e) => Err(anyhow::anyhow!(
            "could not move into place {}: {e}",
            dest.display()
        )),
    }
}

fn kind(mode: Mode) -> u8 {
    match mode {
        Mode::File | Mode::Exec => 0,
        Mode::Link => 1,
        Mode::EmptyDir => 2,
    }
}

impl Plan<'_> {
    fn in_scope(&self, path: &[u8]) -> bool {
        (self.scopes.is_empty() || self.scopes.iter().any(|s| listing::in_scope(path, s)))
            && !self.skip.contains(path)
    }

    fn run(&self, out: &mut TierRestore, progress: &dyn Progress) -> Result<()> {
        let place = &self.place;
        // Validate every target name before changing anything.
        for path in self.target.keys().filter(|p| self.in_scope(p)) {
            for component in path.split_str("/") {
                listing::check_component(component.as_bstr(), path.as_bstr())?;
            }
        }
        let dest_md = place.dest.symlink_metadata();
        if dest_md
            .as_ref()
            .is_ok_and(|m| m.file_type().is_symlink() || !m.is_dir())
        {
            bail!(
                "{} is not a directory (or is a symlink); refusing to restore through it",
                place.dest.display()
            );
        }
        std::fs::create_dir_all(place.dest)
            .with_context(|| format!("could not create {}", place.dest.display()))?;

        // 1. Remove what the target does not have (or has as another kind of entry).
        let mut emptied: BTreeSet<BString> = BTreeSet::new();
        for (path, item) in place.current.iter().filter(|(p, _)| self.in_scope(p)) {
            let keep = self
                .target
                .get(path)
                .is_some_and(|t| kind(t.mode) == kind(item.mode));
            if keep {
                continue;
            }
            let abs = place.abs(path);
            if let Some(why) = place.changed_since_scan(path, &abs) {
                out.failed.push((path.to_string(), why));
                continue;
            }
            let result = if item.mode == Mode::EmptyDir {
                std::fs::remove_dir(&abs)
            } else {
                std::fs::remove_file(&abs)
            };
            match result {
                Ok(()) => {
                    if item.mode.is_file() {
                        out.deleted += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => out
                    .failed
                    .push((path.to_string(), format!("could not remove: {e}"))),
            }
            let mut p = path.as_slice();
            while let Some(slash) = p.rfind_byte(b'/') {
                p = &p[..slash];
                emptied.insert(p.into());
            }
        }
        // Directories left empty by the removals go too, unless the target needs them;
        // deepest first, and only if really empty (excluded or nested-tier files stay).
        let needed: BTreeSet<&[u8]> = self
            .target
            .keys()
            .flat_map(|p| {
                let mut v = Vec::new();
                let mut s = p.as_slice();
                while let Some(slash) = s.rfind_byte(b'/') {
                    s = &s[..slash];
                    v.push(s);
                }
                v
            })
            .collect();
        for dir in emptied.iter().rev() {
            let wanted_as_dir = self
                .target
                .get(dir)
                .is_some_and(|i| i.mode == Mode::EmptyDir);
            if needed.contains(dir.as_slice()) || wanted_as_dir {
                continue;
            }
            // Not empty (it holds excluded files, a nested tier, or new files): it stays, and
            // that is right, so the error is not a failure.
            let _ = std::fs::remove_dir(place.abs(dir));
        }

        // 2. Write what differs. Directories are made and checked on this thread, in order,
        // each once; files are written by writer threads, each with its own shadow handle.
        // Symlinks are written here, in order; encrypted files too (the keys stay on this
        // thread), after everything else was handed out.
        let todo: Vec<(&BString, &listing::Item)> = self
            .target
            .iter()
            .filter(|(p, _)| self.in_scope(p))
            .collect();
        progress.begin("restoring", todo.len() as u64);
        let to_write = todo
            .iter()
            .filter(|(p, i)| place.current.get(*p) != Some(*i))
            .count();
        let writers = self.writer_shadows(to_write);
        let mut tally = Tally::default();
        let mut dirs = Dirs::new();
        let mut buf = vec![0u8; COPY_BUF];
        std::thread::scope(|scope| {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Job>>(QUEUE);
            let receiver = Arc::new(Mutex::new(receiver));
            let handles: Vec<_> = writers
                .into_iter()
                .map(|shadow| {
                    let receiver = Arc::clone(&receiver);
                    scope.spawn(move || place.serve(&shadow, &receiver))
                })
                .collect();
            // The writers alone hold the receiving end: should they all be gone, sending
            // fails and this thread writes the batch itself.
            drop(receiver);
            let sender = (!handles.is_empty()).then_some(sender);
            let mut deferred = Vec::new();
            let mut batch = Vec::with_capacity(BATCH);
            for (index, (path, item)) in todo.into_iter().enumerate() {
                let meta = self.target_mtimes.get(path).copied();
                let encrypted = match meta.and_then(|m| m.encrypted) {
                    Some(size) => Encrypted::Size(size),
                    None if self.sniffed.contains(path) => Encrypted::UnknownSize,
                    None => Encrypted::No,
                };
                // Encrypted files wait until everything else is handed out (then this thread
                // writes them while the writers finish), and count as done only then.
                let defer = sender.is_some()
                    && item.mode != Mode::Link
                    && !matches!(encrypted, Encrypted::No);
                if place.current.get(path) == Some(item) {
                    progress.advance(1);
                    out.unchanged += item.mode.is_file() as u64;
                    let current = place.current_mtimes.get(path).copied();
                    if item.mode.is_file() && meta.is_some() && meta != current {
                        let abs = place.abs(path);
                        let result =
                            set_mtime(&abs, item.mode, meta.map(|m| m.mtime_ns)).and_then(|()| {
                                match (item.mode, meta.and_then(|m| m.perm)) {
                                    (Mode::Link, _) => Ok(()),
                                    (_, perm) => set_perm(&abs, item.mode, perm, place.umask),
                                }
                            });
                        if let Err(e) = result {
                            tally.failed.push((index, path.to_string(), e.to_string()));
                        }
                    }
                    continue;
                }
                if !defer {
                    progress.advance(1);
                }
                let parent = match place.ensure_parents(path, &mut dirs) {
                    Ok(parent) => parent,
                    Err(e) => {
                        if defer {
                            progress.advance(1);
                        }
                        tally.add(index, path, item.mode, Err(e));
                        continue;
                    }
                };
                if item.mode == Mode::EmptyDir {
                    tally.add(index, path, item.mode, place.make_empty_dir(path));
                    continue;
                }
                let job = Job {
                    index,
                    rel: path,
                    mode: item.mode,
                    oid: item.oid,
                    meta,
                    encrypted,
                    parent,
                };
                match &sender {
                    _ if defer => deferred.push(job),
                    Some(sender) if item.mode != Mode::Link => {
                        batch.push(job);
                        if batch.len() == BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            self.hand_over(sender, full, &mut buf, &mut tally);
                        }
                    }
                    _ => self.write_here(&job, &mut buf, &mut tally),
                }
            }
            if let Some(sender) = &sender {
                self.hand_over(sender, batch, &mut buf, &mut tally);
            }
            drop(sender);
            for job in deferred {
                progress.advance(1);
                self.write_here(&job, &mut buf, &mut tally);
            }
            for handle in handles {
                match handle.join() {
                    Ok(theirs) => {
                        tally.written += theirs.written;
                        tally.failed.extend(theirs.failed);
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        progress.end();
        out.written += tally.written;
        tally.failed.sort_by_key(|(index, _, _)| *index);
        out.failed
            .extend(tally.failed.into_iter().map(|(_, path, why)| (path, why)));
        Ok(())
    }

    /// A shadow handle for each writer thread worth starting for `files` entries to write
    /// (none: this thread writes everything). gix repositories are not `Sync`, so each
    /// thread opens its own; one that cannot be opened means one writer less.
    fn writer_shadows(&self, files: usize) -> Vec<Shadow> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if files < PARALLEL_FROM || cores < 2 {
            return Vec::new();
        }
        (0..cores.min(MAX_WRITERS))
            .map_while(|_| Shadow::open(&self.shadow.path).ok())
            .collect()
    }

    /// Give a batch to the writers, or, should they all be gone, write it on this thread.
    fn hand_over<'j>(
        &self,
        sender: &SyncSender<Vec<Job<'j>>>,
        batch: Vec<Job<'j>>,
        buf: &mut [u8],
        tally: &mut Tally,
    ) {
        if batch.is_empty() {
            return;
        }
        if let Err(SendError(batch)) = sender.send(batch) {
            for job in &batch {
                self.write_here(job, buf, tally);
            }
        }
    }

    /// Write `job` on this thread, which holds the keys.
    fn write_here(&self, job: &Job, buf: &mut [u8], tally: &mut Tally) {
        let result = self.place.write(job, self.shadow, Some(self.keys), buf);
        tally.add(job.index, job.rel, job.mode, result);
    }
}

impl Place<'_> {
    fn abs(&self, rel: &[u8]) -> PathBuf {
        self.dest.join(OsStr::from_bytes(rel))
    }

    /// A writer thread: write the jobs handed out until there are no more.
    fn serve(&self, shadow: &Shadow, jobs: &Mutex<Receiver<Vec<Job>>>) -> Tally {
        let mut tally = Tally::default();
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            // The lock is held only while waiting for the next batch.
            let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(batch) = next else { return tally };
            for job in &batch {
                let result = self.write(job, shadow, None, &mut buf);
                tally.add(job.index, job.rel, job.mode, result);
            }
        }
    }

    /// Is what is on disk at `rel` something other than what the pre-checkout snapshot
    /// recorded? Then it must not be replaced or removed: it is not in any snapshot (an
    /// excluded file, a nested tier's file) or it changed while the checkout was running.
    fn changed_since_scan(&self, rel: &[u8], abs: &Path) -> Option<String> {
        let md = abs.symlink_metadata().ok()?;
        self.differs_from_scan(rel, abs, &md)
    }

    /// [`Place::changed_since_scan`] for what `lstat` found at `abs`.
    fn differs_from_scan(&self, rel: &[u8], abs: &Path, md: &std::fs::Metadata) -> Option<String> {
        let on_disk = if md.file_type().is_symlink() {
            1
        } else if md.is_dir() {
            2
        } else {
            0
        };
        let Some(recorded) = self.current.get(rel) else {
            // A directory is handled by the caller (kept if it still has content).
            return (on_disk != 2).then(|| {
                format!(
                    "{} exists but is in no snapshot (excluded, in a nested tier, or created during the checkout); leaving it alone",
                    abs.display()
                )
            });
        };
        let mtime = {
            use std::os::unix::fs::MetadataExt;
            md.mtime() * 1_000_000_000 + md.mtime_nsec()
        };
        let same_kind = on_disk == kind(recorded.mode);
        let same_time = !recorded.mode.is_file()
            || self.current_mtimes.get(rel).map(|m| m.mtime_ns) == Some(mtime);
        (!same_kind || !same_time).then(|| {
            format!(
                "{} changed after the pre-checkout snapshot recorded it; leaving it alone (run the checkout again)",
                abs.display()
            )
        })
    }

    /// Create the parent directories of `rel`, refusing to go through anything but real
    /// directories (a symlink planted where a directory should be is never followed). Each
    /// directory is looked at once per run: `dirs` remembers the verdict. A directory
    /// checked or made here stays one: this restore never puts anything else in its place
    /// (a rename onto a directory fails, and a tree cannot name both `d` and `d/x`).
    fn ensure_parents(&self, rel: &[u8], dirs: &mut Dirs) -> Result<PathBuf> {
        let Some(last) = rel.rfind_byte(b'/') else {
            return Ok(self.dest.to_owned());
        };
        let known = |dirs: &Dirs, prefix: &[u8]| -> Result<bool> {
            match dirs.get(prefix) {
                Some(None) => Ok(true),
                Some(Some(why)) => bail!("{why}"),
                None => Ok(false),
            }
        };
        if !known(dirs, &rel[..last])? {
            let ends = rel[..last]
                .find_iter("/")
                .chain(std::iter::once(last))
                .collect::<Vec<_>>();
            for end in ends {
                let prefix = &rel[..end];
                if known(dirs, prefix)? {
                    continue;
                }
                let verdict = real_dir(&self.abs(prefix)).map_err(|e| format!("{e:#}"));
                dirs.insert(prefix.to_owned(), verdict.as_ref().err().cloned());
                if let Err(why) = verdict {
                    bail!("{why}");
                }
            }
        }
        Ok(self.abs(&rel[..last]))
    }

    fn make_empty_dir(&self, rel: &[u8]) -> Result<()> {
        let path = self.abs(rel);
        match path.symlink_metadata() {
            Ok(md) if md.is_dir() => Ok(()),
            Ok(_) => bail!("{} is in the way (not a directory)", path.display()),
            Err(_) => std::fs::create_dir(&path)
                .with_context(|| format!("could not create {}", path.display())),
        }
    }

    /// Write a file or symlink. `keys`: only the thread that has them gets encrypted jobs.
    fn write(
        &self,
        job: &Job,
        shadow: &Shadow,
        keys: Option<&crate::crypt::Keys>,
        buf: &mut [u8],
    ) -> Result<()> {
        let final_path = self.abs(job.rel);
        // Always a temporary file renamed into place, `--to` included: a killed restore never
        // leaves a partly written file under a real name (measured: writing straight to the
        // final name would save ~20 % of a large restore; not worth a torn file).
        if let Ok(md) = final_path.symlink_metadata() {
            if let Some(why) = self.differs_from_scan(job.rel, &final_path, &md) {
                bail!("{why}");
            }
            if md.is_dir() {
                bail!(
                    "{} is a directory that still has content; leaving it alone",
                    final_path.display()
                );
            }
        }
        let tmp = job
            .parent
            .join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        let result = self
            .write_temp(&tmp, job, shadow, keys, buf)
            .and_then(|()| {
                if self.no_replace {
                    return move_no_replace(&tmp, &final_path);
                }
                std::fs::rename(&tmp, &final_path)
                    .with_context(|| format!("could not move into place {}", final_path.display()))
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_temp(
        &self,
        tmp: &Path,
        job: &Job,
        shadow: &Shadow,
        keys: Option<&crate::crypt::Keys>,
        buf: &mut [u8],
    ) -> Result<()> {
        let (size, mut reader) = open_content(job, shadow, keys)?;
        if job.mode == Mode::Link {
            let mut target = Vec::with_capacity(size.unwrap_or(0).min(4096) as usize);
            reader.read_to_end(&mut target)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), tmp)
                .with_context(|| format!("could not create symlink {}", tmp.display()))?;
            return set_mtime(tmp, job.mode, job.meta.map(|m| m.mtime_ns));
        }
        let mut file =
            create_new(tmp).with_context(|| format!("could not create {}", tmp.display()))?;
        self.fill(&mut file, tmp, job, size, &mut reader, buf)
    }

    /// Copy the content into the new `file` (at `path`), then give it its recorded
    /// permissions and modification time, through the open file.
    fn fill(
        &self,
        file: &mut File,
        path: &Path,
        job: &Job,
        size: Option<u64>,
        reader: &mut dyn Read,
        buf: &mut [u8],
    ) -> Result<()> {
        let copied = copy_through(reader, file, buf)
            .with_context(|| format!("could not restore blob {}", job.oid))?;
        if let Some(size) = size.filter(|s| *s != copied) {
            bail!("blob {}: expected {size} bytes, got {copied}", job.oid);
        }
        let perm = permissions(job.mode, job.meta.and_then(|m| m.perm), self.umask);
        file.set_permissions(std::fs::Permissions::from_mode(perm))
            .with_context(|| format!("could not set the permissions of {}", path.display()))?;
        if let Some(ns) = job.meta.map(|m| m.mtime_ns) {
            filetime::set_file_handle_times(file, None, Some(file_time(ns))).with_context(
                || format!("could not set the modification time of {}", path.display()),
            )?;
        }
        Ok(())
    }
}

/// Is `dir` a real directory (not a symlink to one)? Created when missing.
fn real_dir(dir: &Path) -> Result<()> {
    match dir.symlink_metadata() {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => bail!(
            "{} is in the way (not a directory); leaving it alone",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(dir).with_context(|| format!("could not create {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("could not stat {}", dir.display())),
    }
}

/// The blob of `job`, decrypted when it is a treasure's ciphertext, and the size it must
/// have (the note records a treasure's plaintext size).
fn open_content<'s>(
    job: &Job,
    shadow: &'s Shadow,
    keys: Option<&'s crate::crypt::Keys>,
) -> Result<(Option<u64>, Box<dyn Read + 's>)> {
    let (blob_size, blob) = shadow.open_blob(&job.oid)?;
    let size = match job.encrypted {
        _ if job.mode == Mode::Link => return Ok((Some(blob_size), blob)),
        Encrypted::No => return Ok((Some(blob_size), blob)),
        Encrypted::Size(plain_size) => Some(plain_size),
        // age authenticates every chunk and the end, so no size is needed to trust it.
        Encrypted::UnknownSize => None,
    };
    let keys = keys.context("internal error: an encrypted file was handed to a writer thread")?;
    let plain = keys
        .decrypt(crate::crypt::buffered(blob))
        .with_context(|| format!("blob {}", job.oid))?;
    Ok((size, Box::new(plain)))
}

/// Create a new file, refusing to follow a link or to open anything already there. It is
/// created 0600 and given its recorded mode only once written, so content being written is
/// never readable by others.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Copy all of `reader` into `file` in pieces of `buf`'s size, each written whole.
fn copy_through(reader: &mut dyn Read, file: &mut File, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut total = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        file.write_all(&buf[..filled])?;
        total += filled as u64;
        if filled < buf.len() {
            return Ok(total);
        }
    }
}

/// Recorded permissions (rwx bits only) are restored as they were; without a record (0644 or
/// 0755 when snapshotted), git's convention applies: the executable bit, and the umask decides.
fn permissions(mode: Mode, recorded: Option<u32>, umask: u32) -> u32 {
    match recorded {
        Some(perm) => perm & 0o777,
        None => (if mode == Mode::Exec { 0o777 } else { 0o666 }) & !umask,
    }
}

fn set_perm(path: &Path, mode: Mode, recorded: Option<u32>, umask: u32) -> Result<()> {
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(permissions(mode, recorded, umask)),
    )
    .with_context(|| format!("could not set the permissions of {}", path.display()))
}

fn set_mtime(path: &Path, mode: Mode, mtime: Option<i64>) -> Result<()> {
    let Some(ns) = mtime else { return Ok(()) };
    let t = file_time(ns);
    let r = if mode == Mode::Link {
        filetime::set_symlink_file_times(path, t, t)
    } else {
        filetime::set_file_mtime(path, t)
    };
    r.with_context(|| format!("could not set the modification time of {}", path.display()))
}

fn file_time(ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        shadow: Shadow,
        dest: PathBuf,
        outside: PathBuf,
        oid: ObjectId,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let shadow = Shadow::create(&root.join("shadow"), &root.join("project"), "t").unwrap();
        let oid = shadow.write_blob(b"restored\n").unwrap();
        let dest = root.join("dest");
        let outside = root.join("outside");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        Fixture {
            _tmp: tmp,
            shadow,
            dest,
            outside,
            oid,
        }
    }

    fn place<'a>(dest: &'a Path, empty: &'a (Listing, Mtimes)) -> Place<'a> {
        Place {
            dest,
            current: &empty.0,
            current_mtimes: &empty.1,
            umask: 0o022,
            no_replace: false,
        }
    }

    fn job<'a>(f: &Fixture, rel: &'a BString, dirs: &mut Dirs, place: &Place) -> Result<Job<'a>> {
        Ok(Job {
            index: 0,
            rel,
            mode: Mode::File,
            oid: f.oid,
            meta: Some(meta::FileMeta {
                mtime_ns: 1_600_000_000_123_456_789,
                perm: Some(0o640),
                encrypted: None,
            }),
            encrypted: Encrypted::No,
            parent: place.ensure_parents(rel, dirs)?,
        })
    }

    fn write(f: &Fixture, place: &Place, rel: &str, dirs: &mut Dirs) -> Result<()> {
        let rel = BString::from(rel);
        let job = job(f, &rel, dirs, place)?;
        let mut buf = vec![0u8; 16];
        place.write(&job, &f.shadow, None, &mut buf)
    }

    #[test]
    fn a_written_file_gets_content_mode_and_mtime() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        let empty = Default::default();
        let place = place(&f.dest, &empty);
        write(&f, &place, "a/b/c.txt", &mut Dirs::new()).unwrap();
        let path = f.dest.join("a/b/c.txt");
        assert_eq!(std::fs::read(&path).unwrap(), b"restored\n");
        let md = path.symlink_metadata().unwrap();
        assert_eq!(md.mode() & 0o777, 0o640);
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));
    }

    #[test]
    fn a_file_in_no_snapshot_is_never_replaced_nor_followed() {
        let f = fixture();
        let empty = Default::default();
        let place = place(&f.dest, &empty);
        let mut dirs = Dirs::new();
        std::fs::write(f.dest.join("file"), "mine\n").unwrap();
        std::os::unix::fs::symlink(f.outside.join("target"), f.dest.join("link")).unwrap();
        std::fs::create_dir_all(f.dest.join("dir/inside")).unwrap();

        let err = write(&f, &place, "file", &mut dirs).unwrap_err();
        assert!(
            format!("{err:#}").contains("exists but is in no snapshot"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(f.dest.join("file")).unwrap(), b"mine\n");

        let err = write(&f, &place, "link", &mut dirs).unwrap_err();
        assert!(
            format!("{err:#}").contains("exists but is in no snapshot"),
            "{err:#}"
        );
        assert!(!f.outside.join("target").exists(), "the link was followed");

        let err = write(&f, &place, "dir", &mut dirs).unwrap_err();
        assert!(
            format!("{err:#}").contains("directory that still has content"),
            "{err:#}"
        );
    }

    #[test]
    fn a_parent_in_the_way_fails_every_file_below_it_and_is_looked_at_once() {
        let f = fixture();
        let empty = Default::default();
        let place = place(&f.dest, &empty);
        let mut dirs = Dirs::new();
        std::os::unix::fs::symlink(&f.outside, f.dest.join("planted")).unwrap();
        for rel in ["planted/x", "planted/deeper/y", "planted/x2"] {
            let err = write(&f, &place, rel, &mut dirs).unwrap_err();
            assert!(
                format!("{err:#}").contains("is in the way"),
                "{rel}: {err:#}"
            );
        }
        assert_eq!(std::fs::read_dir(&f.outside).unwrap().count(), 0);
        assert_eq!(
            dirs.get(b"planted".as_slice()).map(Option::is_some),
            Some(true),
            "the verdict is remembered"
        );
        // Made once, then known: siblings need no look at the disk.
        write(&f, &place, "ok/one", &mut dirs).unwrap();
        assert_eq!(dirs.get(b"ok".as_slice()), Some(&None));
        write(&f, &place, "ok/two", &mut dirs).unwrap();
        assert!(f.dest.join("ok/two").is_file());
    }
}
