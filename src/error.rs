//! Typed errors for the conditions a user can act on.
//!
//! Engine functions return `anyhow::Result` so that I/O and git failures carry a chain of
//! context (which path, which tier, which object). The conditions below are the ones the CLI,
//! tests and users must tell apart, so they are a real enum; each message says what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no mirror.yaml in {} or any parent — run `mirror init`", dir.display())]
    NoProject { dir: PathBuf },

    #[error("{}:{line}:{column}: {message}", path.display())]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("invalid mirror.yaml {}: {message}", path.display())]
    ConfigInvalid { path: PathBuf, message: String },

    #[error("unknown tier '{name}'; valid tiers: {}", valid.join(", "))]
    UnknownTier { name: String, valid: Vec<String> },

    #[error("unknown revision '{rev}': {reason} — see `mirror log` for snapshots")]
    UnknownRevision { rev: String, reason: String },

    #[error("shadow repository {} is locked by {holder}; waited {waited_secs}s — retry when it finishes (or raise MIRROR_LOCK_TIMEOUT)", shadow.display())]
    Locked {
        shadow: PathBuf,
        holder: String,
        waited_secs: u64,
    },

    #[error("shadow repository {} belongs to project root {}, not {} — if this is a copy, run `mirror init --shadow NEW_PATH` here to give it its own shadow repository; otherwise run mirror in the recorded root", shadow.display(), recorded.display(), actual.display())]
    ForeignRoot {
        shadow: PathBuf,
        recorded: PathBuf,
        actual: PathBuf,
    },

    #[error("{0}")]
    Usage(String),
}
