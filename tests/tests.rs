//! Integration tests: the real `mirror` binary against real temporary projects and a real git.
//! One test crate, one module per area.

mod common;

#[path = "suite/audit.rs"]
mod audit;
#[path = "suite/checkout.rs"]
mod checkout;
#[path = "suite/cli.rs"]
mod cli;
#[path = "suite/clone.rs"]
mod clone;
#[path = "suite/crash.rs"]
mod crash;
#[path = "suite/dashboard.rs"]
mod dashboard;
#[path = "suite/hooks.rs"]
mod hooks;
#[path = "suite/hostile.rs"]
mod hostile;
#[path = "suite/keys.rs"]
mod keys;
#[path = "suite/remotes.rs"]
mod remotes;
#[path = "suite/safety.rs"]
mod safety;
#[path = "suite/snapshot.rs"]
mod snapshot;
#[path = "suite/storage.rs"]
mod storage;
#[path = "suite/treasure.rs"]
mod treasure;
#[path = "suite/verify.rs"]
mod verify;
#[path = "suite/watch.rs"]
mod watch;
