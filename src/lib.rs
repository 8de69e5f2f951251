//! mirror: keep a whole project — hidden and gitignored files included — under git history
//! in a bare shadow repository. This crate is the engine; `src/cli` is the thin command layer.
//! See docs/architecture.md for the data flow and docs/format.md for the on-disk format.

pub mod alert;
pub mod audit;
pub mod checkout;
pub mod child;
pub mod clone;
pub mod config;
pub mod crypt;
pub mod dashboard;
pub mod delta;
pub mod error;
pub mod gc;
pub mod history;
pub mod hooks;
pub mod host;
pub mod ingest;
pub mod init;
pub mod listing;
pub mod lock;
pub mod meta;
pub mod milestone;
pub mod pack;
pub mod progress;
pub mod project;
pub mod registry;
pub mod remote;
pub mod repair;
pub mod rotate;
pub mod schedule;
pub mod snapshot;
pub mod statcache;
pub mod status;
pub mod store;
pub mod treasure;
pub mod units;
pub mod verify;
pub mod walk;
pub mod watch;

#[cfg(test)]
mod fuzz;

pub use error::Error;
