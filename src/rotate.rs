//! `mirror key rotate`: re-encrypt each tier's newest snapshot to the current recipients.
//!
//! After a recipient is added (a second, offline key) or removed (a lost laptop), the treasure
//! blobs of the latest snapshot are decrypted with the identity and encrypted again to
//! `encryption.recipients`, and recorded as a new snapshot with the same files, times and
//! modes. Older snapshots are left as they were: history is never rewritten, so they stay
//! readable with the keys they were encrypted to.

use anyhow::{Context, Result};
use gix::ObjectId;

use crate::config::Tier;
use crate::crypt;
use crate::listing::{self, Counts};
use crate::meta;
use crate::progress::Progress;
use crate::project::Project;
use crate::snapshot;
use crate::statcache::Cache;
use crate::store::Shadow;

pub struct Rotated {
    pub tier: String,
    /// The new snapshot; `None` when the tier has no snapshot or no treasure in it.
    pub commit: Option<ObjectId>,
    /// Treasure files re-encrypted (or encrypted for the first time, if recorded in plaintext
    /// before a pattern made them treasures).
    pub files: u64,
    pub warnings: Vec<String>,
}

pub fn rotate(
    project: &Project,
    shadow: &Shadow,
    tiers: &[String],
    progress: &dyn Progress,
) -> Result<Vec<(String, Result<Rotated>)>> {
    let encryptor = project.config.encryptor().context(
        "no encryption recipients in mirror.yaml; add them under `encryption: recipients:` first",
    )?;
    let mut out = Vec::new();
    for tier in project.config.select_tiers(tiers)? {
        let result = rotate_tier(project, shadow, &tier, &encryptor, progress)
            .with_context(|| format!("tier '{}'", tier.name));
        out.push((tier.name.clone(), result));
    }
    Ok(out)
}

fn rotate_tier(
    project: &Project,
    shadow: &Shadow,
    tier: &Tier,
    encryptor: &crypt::Encryptor,
    progress: &dyn Progress,
) -> Result<Rotated> {
    let mut rotated = Rotated {
        tier: tier.name.clone(),
        commit: None,
        files: 0,
        warnings: Vec::new(),
    };
    let Some(tip) = shadow.tier_tip(&tier.name)? else {
        return Ok(rotated);
    };
    let treasures = project.config.treasures()?;
    let tree = shadow.repo.find_commit(tip)?.tree_id()?.detach();
    let mut files = listing::read_tree(shadow, tree)?;
    let mut mtimes = meta::read_note(shadow, tip)?.with_context(|| {
        format!(
            "snapshot {tip} has no metadata note (refs/notes/mirror), so which files are encrypted is not recorded; take a snapshot first (`mirror snapshot`), then rotate"
        )
    })?;
    let todo: Vec<_> = files
        .iter()
        .filter(|(p, i)| {
            i.mode.is_file()
                && i.mode != listing::Mode::Link
                && (mtimes.get(*p).is_some_and(|m| m.encrypted.is_some())
                    || treasures.in_tier(&tier.path, p))
        })
        .map(|(p, i)| (p.clone(), i.oid))
        .collect();
    if todo.is_empty() {
        return Ok(rotated);
    }
    progress.begin(&format!("{}: re-encrypting", tier.name), todo.len() as u64);
    let mut changed = Vec::new();
    for (path, oid) in todo {
        progress.advance(1);
        let (blob_size, blob) = shadow.open_blob(&oid)?;
        let file_meta = mtimes.entry(path.clone()).or_insert(meta::FileMeta {
            mtime_ns: 0,
            perm: None,
            encrypted: None,
        });
        let (plain_size, plain): (u64, Box<dyn std::io::Read>) = match file_meta.encrypted {
            Some(size) => (
                size,
                Box::new(
                    project
                        .keys
                        .decrypt(crypt::buffered(blob))
                        .with_context(|| format!("{path} (blob {oid})"))?,
                ),
            ),
            None => (blob_size, blob),
        };
        let (total, mut reader) = encryptor.encrypting_reader(plain, plain_size)?;
        let new = shadow
            .write_stream(total, &mut reader)
            .with_context(|| format!("re-encrypting {path}"))?;
        file_meta.encrypted = Some(plain_size);
        if let Some(item) = files.get_mut(&path) {
            item.oid = new;
        }
        changed.push((path, new));
        rotated.files += 1;
    }
    progress.end();

    let tree = listing::write_tree(shadow, &files)?;
    shadow.mark_format()?;
    let meta_tree = meta::write_tree(shadow, &mtimes, None)?;
    let sig = snapshot::signature();
    let counts = Counts {
        modified: rotated.files,
        ..Counts::default()
    };
    let critical = mtimes.values().filter(|m| m.encrypted.is_some()).count();
    let message = format!(
        "key rotation {}: {} files re-encrypted to {} recipients\n\nMirror-Tier: {}\nMirror-Trigger: key-rotate\nMirror-Host: {}\nMirror-Stats: {counts}\nMirror-Critical: {critical}\nMirror-Format: {}\n",
        tier.name,
        rotated.files,
        project.config.recipients().len(),
        tier.name,
        crate::host::hostname(),
        crate::store::FORMAT_VERSION
    );
    let id = snapshot::write_tier_commit(
        shadow,
        &tier.name,
        Some(tip),
        (tree, meta_tree),
        message,
        &sig,
        "mirror key rotate",
    )?;
    // The stat cache describes the old tip; carried over with the new blob ids, unchanged
    // files stay cache hits (a stale cache would only cost re-reading them).
    let cache_path = snapshot::cache_path(shadow, &tier.name);
    if let Ok(Some(mut cache)) = Cache::load(&cache_path) {
        if cache.commit == Some(tip) {
            cache.commit = Some(id);
            for (path, new) in &changed {
                if let Some(entry) = cache.entries.get_mut(path) {
                    entry.item.oid = *new;
                    entry.encrypted = mtimes.get(path).and_then(|m| m.encrypted);
                }
            }
            // The rotation is recorded; a cache that cannot be saved only costs re-reading
            // files (it no longer matches the tip), so it is reported, not fatal.
            if let Err(err) = cache.save(&cache_path) {
                rotated.warnings.push(format!("{err:#}"));
            }
        }
    }
    rotated.commit = Some(id);
    Ok(rotated)
}
