//! The audit trail: one commit per mirror operation on `refs/mirror/audit`.
//!
//! Every operation — successful, partial or failed — appends one entry: a commit whose parent
//! is the previous entry, whose tree is the empty tree, and whose message is a subject line
//! followed by the entry as JSON (schema in docs/format.md). Appending writes one object and
//! moves the ref by compare-and-swap, retrying on a lost race, so concurrent processes never
//! lose an entry and a crash leaves the chain as it was. Entries are never rewritten: each
//! commit names its predecessor, so a rewritten history changes every later id, and
//! `SHADOW/mirror/audit-seen` keeps the last tip this machine appended for `verify` to find.

use anyhow::{bail, Context, Result};
use gix::bstr::ByteSlice;
use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::store::Shadow;

pub const AUDIT_REF: &str = "refs/mirror/audit";

/// How far an entry's time may lie before its predecessor's (clocks of different machines).
pub const CLOCK_SKEW_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Partial,
    Failed,
}

/// One audit entry, as stored (JSON) in the entry commit's message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Schema version of the entry.
    pub version: u32,
    /// RFC 3339 time of the operation's end.
    pub time: String,
    pub host: String,
    pub user: String,
    /// The operation (`snapshot`, `checkout`, `tag`, `init`, ...).
    pub command: String,
    /// The arguments as given.
    pub args: Vec<String>,
    pub result: Outcome,
    /// The error message, for a failed operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the operation did (per command: counts, commits, restored tiers, ...).
    #[serde(default)]
    pub details: serde_json::Value,
}

impl Entry {
    pub fn new(command: &str, args: Vec<String>, result: Outcome) -> Entry {
        Entry {
            version: 1,
            time: chrono::Local::now().to_rfc3339(),
            host: crate::host::hostname(),
            user: crate::host::user(),
            command: command.to_owned(),
            args,
            result,
            error: None,
            details: serde_json::Value::Null,
        }
    }
}

/// An entry as read back, with its commit id.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    #[serde(serialize_with = "ser_oid")]
    pub id: ObjectId,
    #[serde(flatten)]
    pub entry: Entry,
}

fn ser_oid<S: serde::Serializer>(id: &ObjectId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_string())
}

fn seen_path(shadow: &Shadow) -> std::path::PathBuf {
    shadow.mirror_dir().join("audit-seen")
}

/// Append `entry`; returns the new entry's commit id.
pub fn append(shadow: &Shadow, entry: &Entry) -> Result<ObjectId> {
    let json = serde_json::to_string_pretty(entry)?;
    let subject = match &entry.error {
        Some(e) => format!(
            "{} {}: {}",
            entry.command,
            outcome_word(entry.result),
            first_line(e)
        ),
        None => format!("{} {}", entry.command, outcome_word(entry.result)),
    };
    let message = format!("{subject}\n\n{json}\n");
    let empty = shadow.write_object(&gix::objs::Tree::empty())?;
    let signature = crate::snapshot::signature();
    // Appenders serialise on their own short lock (not the writer lock: an append must not
    // wait behind a long snapshot); the ref update is still compare-and-swap.
    let lock = crate::lock::acquire_audit(&shadow.path)?;
    let previous = shadow.ref_target(AUDIT_REF)?;
    let id = shadow.write_commit(empty, previous, message, &signature)?;
    shadow.sync()?;
    shadow
        .update_ref(AUDIT_REF, id, previous, "mirror: audit")
        .context("could not append to the audit trail")?;
    // Move the last-seen mark only along an intact chain: if the chain we extended no longer
    // holds the entry seen last, it was rewritten, and the old mark is the evidence `verify`
    // reports — later appends must not paper over it.
    if chain_contains(shadow, previous, last_seen(shadow))? {
        crate::store::write_cache_file(&seen_path(shadow), format!("{id}\n").as_bytes())?;
    }
    drop(lock);
    Ok(id)
}

fn last_seen(shadow: &Shadow) -> Option<ObjectId> {
    std::fs::read_to_string(seen_path(shadow))
        .ok()
        .and_then(|s| ObjectId::from_hex(s.trim().as_bytes()).ok())
}

/// Is `wanted` (if any) `tip` or one of its predecessors?
fn chain_contains(
    shadow: &Shadow,
    tip: Option<ObjectId>,
    wanted: Option<ObjectId>,
) -> Result<bool> {
    let Some(wanted) = wanted else {
        return Ok(true);
    };
    let mut next = tip;
    while let Some(id) = next {
        if id == wanted {
            return Ok(true);
        }
        next = match shadow.repo.find_commit(id) {
            Ok(c) => c.parent_ids().next().map(|p| p.detach()),
            Err(_) => None,
        };
    }
    Ok(false)
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Partial => "partial",
        Outcome::Failed => "FAILED",
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Decode one entry commit.
pub fn read_entry(shadow: &Shadow, id: ObjectId) -> Result<(Entry, Option<ObjectId>, i64)> {
    let commit = shadow
        .repo
        .find_commit(id)
        .with_context(|| format!("audit entry {id} is missing or not a commit"))?;
    let decoded = commit.decode()?;
    let parents: Vec<ObjectId> = decoded.parents().collect();
    if parents.len() > 1 {
        bail!(
            "audit entry {id} has {} parents; entries form a single chain",
            parents.len()
        );
    }
    let time = decoded.committer()?.seconds();
    let message = decoded.message.to_str_lossy();
    let json = message
        .split_once("\n\n")
        .map(|(_, body)| body)
        .with_context(|| format!("audit entry {id} has no JSON body"))?;
    let entry: Entry = serde_json::from_str(json.trim())
        .with_context(|| format!("audit entry {id} does not hold a valid entry"))?;
    Ok((entry, parents.first().copied(), time))
}

/// Entries newest first (at most `limit`; `failures_only` keeps failed and partial ones).
pub fn list(shadow: &Shadow, limit: usize, failures_only: bool) -> Result<Vec<Recorded>> {
    let mut out = Vec::new();
    let mut next = shadow.ref_target(AUDIT_REF)?;
    while let Some(id) = next {
        if out.len() >= limit {
            break;
        }
        let (entry, parent, _) = read_entry(shadow, id)?;
        next = parent;
        if failures_only && entry.result == Outcome::Ok {
            continue;
        }
        out.push(Recorded { id, entry });
    }
    Ok(out)
}

#[derive(Debug, Default, Serialize)]
pub struct Verification {
    pub entries: u64,
    pub problems: Vec<String>,
}

/// Check the chain: every entry decodes, has at most one parent, times never go backwards by
/// more than the skew tolerance, and the last tip this machine appended is still in the chain
/// (a rewritten or replaced ref loses it).
pub fn verify(shadow: &Shadow) -> Result<Verification> {
    let mut v = Verification::default();
    let seen = last_seen(shadow);
    let mut found_seen = seen.is_none();
    let mut next = shadow.ref_target(AUDIT_REF)?;
    if next.is_none() && seen.is_some() {
        v.problems.push(format!(
            "{AUDIT_REF} is missing, but this machine appended entries to it"
        ));
    }
    let mut newer_time: Option<(ObjectId, i64)> = None;
    while let Some(id) = next {
        if Some(id) == seen {
            found_seen = true;
        }
        match read_entry(shadow, id) {
            Ok((_, parent, time)) => {
                v.entries += 1;
                if let Some((newer, newer_t)) = newer_time {
                    if time > newer_t + CLOCK_SKEW_SECS {
                        v.problems.push(format!(
                            "entry {newer} is {} s older than its predecessor {id} (more than the {CLOCK_SKEW_SECS} s clock-skew tolerance)",
                            time - newer_t
                        ));
                    }
                }
                newer_time = Some((id, time));
                next = parent;
            }
            Err(err) => {
                v.problems.push(format!("{err:#}"));
                break;
            }
        }
    }
    if !found_seen {
        if let Some(seen) = seen {
            v.problems.push(format!(
                "the chain no longer contains entry {seen}, the last one appended on this machine: {AUDIT_REF} was rewritten or replaced"
            ));
        }
    }
    Ok(v)
}
