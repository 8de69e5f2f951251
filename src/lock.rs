//! One writer at a time per shadow repository.
//!
//! An advisory `flock` on `SHADOW/mirror/lock`: the kernel drops it when the holder dies
//! (even by `kill -9`), so there is never a stale lock to clean up by hand. The holder writes
//! who it is into the file so that a waiting process can say who is in the way.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::error::Error;

pub struct ShadowLock {
    // Held for its Drop: closing the file releases the flock.
    file: File,
    /// Ref lock files left behind by a mirror process that died mid-update, removed now.
    pub removed_stale: Vec<std::path::PathBuf>,
    /// The holder named in the lock file when we took it: a holder that ended normally
    /// empties the file, so a name left there is a process that was killed.
    pub previous_holder_gone: Option<String>,
}

impl Drop for ShadowLock {
    fn drop(&mut self) {
        // Still locked here: say nobody holds it, then closing the file releases the flock.
        let _ = self.file.set_len(0);
    }
}

/// How long to wait for another mirror process: `MIRROR_LOCK_TIMEOUT` seconds, default 60.
fn timeout() -> Duration {
    std::env::var("MIRROR_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

/// The writer lock: held by every operation that writes snapshots, tags or refs other than
/// the audit trail. Ref lock files left by a killed writer are removed once it is held.
pub fn acquire(shadow: &Path, operation: &str) -> Result<ShadowLock> {
    let mut lock = acquire_file(shadow, "lock", operation, timeout())?;
    lock.removed_stale = remove_stale_ref_locks(shadow)?;
    Ok(lock)
}

/// The audit lock: held only for the milliseconds of an audit append, so appending never
/// waits behind a long snapshot. Once held, a lock file of the audit ref is stale.
pub fn acquire_audit(shadow: &Path) -> Result<ShadowLock> {
    let mut lock = acquire_file(shadow, "audit-lock", "audit append", timeout())?;
    let stale = shadow.join("refs/mirror/audit.lock");
    if stale.exists() {
        std::fs::remove_file(&stale)
            .with_context(|| format!("could not remove stale {}", stale.display()))?;
        lock.removed_stale.push(stale);
    }
    Ok(lock)
}

/// The gc lock: `mirror gc` never takes the writer lock (a snapshot in a hook must not wait
/// for it; gc only adds packs and removes copies of objects already packed), but two gcs must
/// not remove each other's files. `wait: false`: `None` at once when another gc runs.
pub fn acquire_gc(shadow: &Path, wait: bool) -> Result<Option<ShadowLock>> {
    let limit = if wait { timeout() } else { Duration::ZERO };
    match acquire_file(shadow, "gc-lock", "gc", limit) {
        Ok(lock) => Ok(Some(lock)),
        Err(err) if !wait && matches!(err.downcast_ref(), Some(Error::Locked { .. })) => Ok(None),
        Err(err) => Err(err),
    }
}

fn acquire_file(shadow: &Path, name: &str, operation: &str, limit: Duration) -> Result<ShadowLock> {
    let dir = shadow.join("mirror");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("could not open lock file {}", path.display()))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if started.elapsed() >= limit {
                    let mut holder = String::new();
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = file.read_to_string(&mut holder);
                    return Err(Error::Locked {
                        shadow: shadow.to_owned(),
                        holder: if holder.trim().is_empty() {
                            "another mirror process".into()
                        } else {
                            holder.trim().to_owned()
                        },
                        waited_secs: limit.as_secs(),
                    }
                    .into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("could not lock {}", path.display()))
            }
        }
    }
    let who = format!(
        "pid {} on {} running `mirror {operation}` since {}",
        std::process::id(),
        crate::host::hostname(),
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
    );
    let mut previous = String::new();
    file.seek(SeekFrom::Start(0))?;
    // Not UTF-8 or unreadable: treated as no name (the lock itself is what counts).
    let _ = file.read_to_string(&mut previous);
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(who.as_bytes())?;
    let previous = previous.trim();
    Ok(ShadowLock {
        file,
        removed_stale: Vec::new(),
        previous_holder_gone: (!previous.is_empty()).then(|| previous.to_owned()),
    })
}

/// Every writer of the shadow's refs holds the shadow lock, so once we hold it, any ref lock
/// file is a leftover of a writer that was killed mid-update; git (and gix) would refuse to
/// move that ref forever. Removing it loses nothing: the ref file itself was never replaced.
fn remove_stale_ref_locks(shadow: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut removed = Vec::new();
    let mut stack = vec![shadow.join("refs")];
    let packed = shadow.join("packed-refs.lock");
    if packed.exists() {
        std::fs::remove_file(&packed)
            .with_context(|| format!("could not remove stale {}", packed.display()))?;
        removed.push(packed);
    }
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "lock")
                && !path.ends_with("mirror/audit.lock")
            {
                // (The audit ref is appended to without the shadow lock; audit.rs itself
                // clears a stale lock of it.)
                std::fs::remove_file(&path)
                    .with_context(|| format!("could not remove stale {}", path.display()))?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}
