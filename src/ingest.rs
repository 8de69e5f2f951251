//! Storing many files at once: read, hashed and deflated on every core, written into packs.
//!
//! A first snapshot reads every file of the tier. One thread would leave the other cores idle
//! while it hashes (SHA-1 with collision detection) and deflates; here worker threads each
//! take the next file, prepare its object away from the [`Shadow`] (which is not `Sync`), and
//! append it to the shared pack buffer ([`Packer`]), which is written out whenever it is full;
//! meanwhile the calling thread stores what needs the shadow itself (treasures, links).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::Result;

use crate::listing::{Item, Mode};
use crate::pack::Packer;
use crate::progress::Progress;
use crate::statcache::Stat;
use crate::store::{prepare_file_blob, PreparedBlob, Shadow};
use crate::walk::WalkEntry;

/// Below this many files to read, one thread and loose blobs are cheaper than starting
/// workers (the snapshot's trees and commit still go into one small pack).
pub const PARALLEL_MIN: usize = 64;

/// A file read and stored, or why it could not be read (reported, not fatal).
pub type Stored = std::result::Result<(Item, Stat), String>;

/// Open a walked regular file for reading, without following a symlink or blocking on a fifo
/// that replaced it since the walk, and take its stat data from the open file.
pub fn open_regular(
    root: &Path,
    entry: &WalkEntry,
) -> std::result::Result<(File, Stat, Mode), String> {
    // O_NONBLOCK: if the file was replaced by a fifo after the walk, opening must not hang.
    // O_NOFOLLOW: likewise for a file replaced by a symlink.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(entry.abs(root))
        .map_err(|e| format!("could not open: {e}"))?;
    let md = file
        .metadata()
        .map_err(|e| format!("could not stat: {e}"))?;
    if !md.is_file() {
        return Err("is no longer a regular file".into());
    }
    let stat = Stat::from_metadata(&md);
    let mode = if stat.mode & 0o111 != 0 {
        Mode::Exec
    } else {
        Mode::File
    };
    Ok((file, stat, mode))
}

/// Store the plain (not encrypted) regular files `entries` on every core, while this thread
/// runs `alongside` (the files that need the shadow itself: treasures, links). The shadow must
/// be packing (see [`Shadow::begin_pack`]). Results come back in the order of `entries`.
pub fn store_files_while<T>(
    shadow: &Shadow,
    root: &Path,
    entries: &[&WalkEntry],
    progress: &dyn Progress,
    alongside: impl FnOnce() -> Result<T>,
) -> Result<(Vec<Stored>, T)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    // Set when a worker fails (a pack could not be written), so the others stop taking files.
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let results: Vec<OnceLock<Stored>> = (0..entries.len()).map(|_| OnceLock::new()).collect();
    let packer = &shadow.packer;
    let theirs = std::thread::scope(|scope| {
        for _ in 0..threads {
            // Each worker has its own handle: `gix::Repository` is `Send` but not `Sync`. Most
            // lookups miss (new files); by default every miss makes gix look for new packs on
            // disk, and this process's own packs are known to the packer anyway.
            let mut repo = shadow.repo.clone();
            repo.objects.refresh_never();
            let (next, done, stop, failure, results) = (&next, &done, &stop, &failure, &results);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= entries.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                // A panicking worker must stop the others and fail the snapshot, not leave
                // the progress loop below waiting for a file that is never counted.
                let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store(&repo, packer, root, entries[i])
                }))
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "internal error: a worker panicked while storing {}",
                        entries[i].rel
                    ))
                });
                match stored {
                    Ok(stored) => {
                        // Each index is handed out once, so the cell is empty.
                        let _ = results[i].set(stored);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        stop.store(true, Ordering::Relaxed);
                        let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert(err);
                        break;
                    }
                }
            });
        }
        let mine = alongside();
        if mine.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // The progress bar lives on this thread: follow the workers until they are done.
        let mut shown = 0;
        loop {
            let now = done.load(Ordering::Relaxed);
            progress.advance((now - shown) as u64);
            shown = now;
            if now == entries.len() || stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        mine
    });
    if let Some(err) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(err);
    }
    let theirs = theirs?;
    let stored = results
        .into_iter()
        .map(|cell| {
            cell.into_inner()
                .unwrap_or_else(|| Err("not read (the snapshot stopped)".into()))
        })
        .collect();
    Ok((stored, theirs))
}

/// Read, hash and deflate one file, and hand its object to the pack.
fn store(
    repo: &gix::Repository,
    packer: &Packer,
    root: &Path,
    entry: &WalkEntry,
) -> Result<Stored> {
    let (file, stat, mode) = match open_regular(root, entry) {
        Ok(opened) => opened,
        Err(why) => return Ok(Err(why)),
    };
    // rsplit always yields at least one piece.
    let name = entry
        .rel
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or(&entry.rel);
    let oid = match prepare_file_blob(repo, packer, name, file, stat.size)? {
        PreparedBlob::Object(object) => {
            let id = object.id;
            packer.add(object)?;
            id
        }
        PreparedBlob::Existing(id) => id,
        PreparedBlob::Packed(id) => {
            packer.note_packed(id);
            id
        }
        PreparedBlob::Unreadable(problem) => return Ok(Err(problem.0)),
    };
    Ok(Ok((Item { mode, oid }, stat)))
}
