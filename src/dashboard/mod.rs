//! The monitoring view (`mirror dashboard`, `mirror report --html`): what a person checking
//! their backups wants at a glance, gathered from the shadow repository and the tiers.
//!
//! Gathering is read-only: it scans the tiers in hash-only mode like `mirror status`, reads
//! history, tags and the audit trail, and asks remotes with `ls-remote`. It never decrypts
//! (the project's keys are replaced by [`crate::crypt::Keys::withheld`]) and never writes.

pub mod html;
pub mod serve;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use gix::ObjectId;

use crate::audit::{self, Outcome, Recorded};
use crate::history;
use crate::milestone::{self, TagInfo};
use crate::project::Project;
use crate::remote::{self, RemoteStatus, State};
use crate::status::{self, TierStatus};
use crate::store::Shadow;

/// The timeline covers this many days back from now.
pub const TIMELINE_DAYS: i64 = 7;
/// At most this many snapshots per tier are drawn (a hook firing every few seconds for a week
/// would otherwise make the chart, and the page, unboundedly large).
pub const TIMELINE_MAX: usize = 2000;
/// The audit trail is read this far back for failures, pushes and verifies: enough for weeks
/// of hook-driven snapshots, bounded so a years-long trail never slows the page.
pub const AUDIT_SCAN: usize = 2000;
/// Failures and milestones listed on the page.
pub const LIST_MAX: usize = 20;
/// A time this far ahead of the clock is not believed (clock skew between machines).
pub const FUTURE_SLACK: i64 = 300;

/// Why a dashboard never decrypts; shown where a treasure could not be compared.
const NO_DECRYPT: &str = "the dashboard never decrypts";

/// Everything read from this machine: the tiers, their history and the audit trail.
pub struct Local {
    /// Seconds since the epoch when gathered.
    pub generated: i64,
    pub project: String,
    pub shadow: String,
    pub host: String,
    pub interval_secs: u64,
    pub tiers: Vec<TierView>,
    /// The newest failed and partial operations, newest first.
    pub failures: Vec<Recorded>,
    /// Failed and partial operations within the last `interval` (they make the page red).
    pub recent_failures: usize,
    /// Newest first.
    pub milestones: Vec<TagInfo>,
    pub milestone_count: usize,
    /// Per remote name: its newest push attempt and its newest successful push.
    pub pushes: BTreeMap<String, Pushes>,
    pub last_verify: Option<Recorded>,
    /// Parts that could not be read (each shown on the page, never skipped silently).
    pub errors: Vec<String>,
    /// The whole audit trail was read (else only the newest [`AUDIT_SCAN`] entries: "never"
    /// means "not among those").
    pub audit_complete: bool,
    /// The entries read, newest first; `None` when the trail could not be read (`errors`
    /// says why).
    pub audit: Option<Vec<Recorded>>,
    /// The configured remotes (name, url), in order.
    pub remotes: Vec<(String, String)>,
}

pub struct TierView {
    pub status: TierStatus,
    pub recorded: Option<Totals>,
    /// When a snapshot last covered the tier: its newest commit, or a later snapshot run that
    /// found it unchanged (from the audit trail), whichever is newer.
    pub checked: Option<i64>,
    /// Seconds since `checked`.
    pub age_secs: Option<i64>,
    /// Never covered, or not within the interval.
    pub overdue: bool,
    /// The last snapshot is dated ahead of this machine's clock (skew): not believed.
    pub future: bool,
    /// Snapshots of the last [`TIMELINE_DAYS`] days, newest first.
    pub timeline: Vec<history::Snapshot>,
}

/// What the latest snapshot of a tier holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    /// Plaintext bytes (a treasure counts with its recorded plaintext size).
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Pushes {
    pub last_attempt: Option<PushSeen>,
    pub last_ok: Option<PushSeen>,
}

#[derive(Debug, Clone)]
pub struct PushSeen {
    /// RFC 3339, as in the audit entry.
    pub time: String,
    pub result: String,
    pub error: Option<String>,
}

/// The remotes as asked over the network (slow, so gathered and cached apart).
pub struct RemoteCheck {
    pub checked: i64,
    pub statuses: Vec<RemoteStatus>,
}

/// What the page shows: local facts and, once asked, the remotes.
pub struct Dashboard<'a> {
    pub local: &'a Local,
    pub remotes: Option<&'a RemoteCheck>,
    /// Problems found after gathering (the remote check could not run).
    pub extra_errors: &'a [String],
}

/// Totals of snapshots already counted, by commit: snapshots never change, so a long-running
/// dashboard reads each tip's tree once.
pub type TotalsMemo = HashMap<ObjectId, Totals>;

/// Open the project around `root` for reading only: its keys withheld, so nothing decrypts.
pub fn open(root: &Path) -> Result<(Project, Shadow)> {
    let mut project = Project::discover(root)?;
    project.keys = crate::crypt::Keys::withheld(NO_DECRYPT);
    let shadow = project.open_shadow()?;
    Ok((project, shadow))
}

/// Gather everything but the remotes' state.
pub fn gather_local(project: &Project, shadow: &Shadow, memo: &mut TotalsMemo) -> Result<Local> {
    let now = chrono::Utc::now().timestamp();
    let interval = project.config.schedule.interval();
    let interval_secs = interval.as_secs();
    let mut errors = Vec::new();
    let statuses = status::status(project, shadow, &[])?;
    let audit_trail = match audit::list(shadow, AUDIT_SCAN, false) {
        Ok(e) => Some(e),
        Err(e) => {
            errors.push(format!("audit trail: {e:#}"));
            None
        }
    };
    let entries = audit_trail.as_deref().unwrap_or_default();
    let checked_by_audit = last_checked(entries, now + FUTURE_SLACK);
    let audit_complete = entries.len() < AUDIT_SCAN;
    let tags = history::tags_by_commit(shadow).unwrap_or_else(|e| {
        errors.push(format!("tags: {e:#}"));
        HashMap::new()
    });
    let mut tiers = Vec::new();
    for st in statuses {
        let tip = st.last.as_ref().map(|l| l.id);
        let recorded = match tip {
            Some(id) => match memo.get(&id) {
                Some(t) => Some(*t),
                None => match totals(shadow, id) {
                    Ok(t) => {
                        memo.insert(id, t);
                        Some(t)
                    }
                    Err(e) => {
                        errors.push(format!("tier {}: {e:#}", st.tier));
                        None
                    }
                },
            },
            None => None,
        };
        let future = st
            .last
            .as_ref()
            .is_some_and(|l| l.time > now + FUTURE_SLACK);
        let checked = st
            .last
            .as_ref()
            .map(|l| l.time)
            .filter(|_| !future)
            .max(checked_by_audit.get(&st.tier).copied());
        let age_secs = checked.map(|t| (now - t).max(0));
        let overdue = future || age_secs.is_none_or(|age| age as u64 > interval_secs);
        let timeline = match timeline(shadow, &st.tier, now - TIMELINE_DAYS * 86_400, &tags) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("tier {} history: {e:#}", st.tier));
                Vec::new()
            }
        };
        tiers.push(TierView {
            status: st,
            recorded,
            checked,
            age_secs,
            overdue,
            future,
            timeline,
        });
    }

    let since = now - interval_secs as i64;
    let failed = |e: &&Recorded| e.entry.result != Outcome::Ok;
    let recent_failures = entries
        .iter()
        .filter(failed)
        .filter(|e| rfc3339_secs(&e.entry.time).is_some_and(|t| t >= since))
        .count();
    let failures = entries
        .iter()
        .filter(failed)
        .take(LIST_MAX)
        .cloned()
        .collect();
    let last_verify = entries
        .iter()
        .find(|e| e.entry.command == "verify")
        .cloned();
    let pushes = pushes(entries);

    let mut milestones = match milestone::list(shadow) {
        Ok(m) => m,
        Err(e) => {
            errors.push(format!("milestone tags: {e:#}"));
            Vec::new()
        }
    };
    milestones.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
    let milestone_count = milestones.len();
    milestones.truncate(LIST_MAX);

    // Totals of tips no longer current are never asked for again.
    let tips: std::collections::HashSet<ObjectId> = tiers
        .iter()
        .filter_map(|t| t.status.last.as_ref().map(|l| l.id))
        .collect();
    memo.retain(|id, _| tips.contains(id));

    Ok(Local {
        generated: now,
        audit_complete,
        audit: audit_trail,
        project: project.root.display().to_string(),
        shadow: shadow.path.display().to_string(),
        host: crate::host::hostname(),
        interval_secs,
        tiers,
        failures,
        recent_failures,
        milestones,
        milestone_count,
        pushes,
        last_verify,
        errors,
        remotes: project
            .config
            .remotes
            .iter()
            .map(|r| (r.name.clone(), remote::redact_url(&r.url)))
            .collect(),
    })
}

/// Ask every configured remote for its state (as `mirror remote status`).
pub fn check_remotes(project: &Project, shadow: &Shadow) -> RemoteCheck {
    RemoteCheck {
        checked: chrono::Utc::now().timestamp(),
        statuses: remote::statuses(shadow, &project.config.remotes, &project.root),
    }
}

/// Files and plaintext bytes in snapshot `commit`.
pub fn totals(shadow: &Shadow, commit: ObjectId) -> Result<Totals> {
    let tree = shadow
        .repo
        .find_commit(commit)
        .with_context(|| format!("snapshot {commit} is missing or corrupt"))?
        .tree_id()?
        .detach();
    let listing = crate::listing::read_tree(shadow, tree)?;
    let meta = crate::meta::read_note(shadow, commit)?.unwrap_or_default();
    let mut out = Totals { files: 0, bytes: 0 };
    for (path, item) in &listing {
        if !item.mode.is_file() {
            continue;
        }
        out.files += 1;
        out.bytes += match meta.get(path).and_then(|m| m.encrypted) {
            Some(plain) => plain,
            None => shadow
                .repo
                .find_header(item.oid)
                .with_context(|| format!("blob {} of {path} in snapshot {commit}", item.oid))?
                .size(),
        };
    }
    Ok(out)
}

/// The tier's snapshots since `since` (seconds), newest first, at most [`TIMELINE_MAX`].
fn timeline(
    shadow: &Shadow,
    tier: &str,
    since: i64,
    tags: &HashMap<ObjectId, Vec<String>>,
) -> Result<Vec<history::Snapshot>> {
    let mut out = Vec::new();
    let mut next = shadow.tier_tip(tier)?;
    let mut visited = 0;
    // Not stopped at the first old snapshot: after a clock jump backwards, newer ones follow.
    while let Some(id) = next {
        if visited >= TIMELINE_MAX {
            break;
        }
        visited += 1;
        let mut snap = history::decode(shadow, id)?;
        if snap.time >= since {
            snap.tags = tags.get(&id).cloned().unwrap_or_default();
            out.push(snap);
        }
        next = shadow
            .repo
            .find_commit(id)?
            .parent_ids()
            .next()
            .map(|p| p.detach());
    }
    Ok(out)
}

/// Per remote, the newest push attempt and the newest that succeeded, from `push` entries
/// (their details list one report per remote; see `mirror push --json`).
fn pushes(entries: &[Recorded]) -> BTreeMap<String, Pushes> {
    let mut out: BTreeMap<String, Pushes> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.entry.command == "push") {
        let Some(reports) = e.entry.details.as_array() else {
            continue;
        };
        for r in reports {
            let (Some(name), Some(result)) = (
                r.get("remote").and_then(|v| v.as_str()),
                r.get("result").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            let seen = PushSeen {
                time: e.entry.time.clone(),
                result: result.to_owned(),
                error: r.get("error").and_then(|v| v.as_str()).map(str::to_owned),
            };
            let slot = out.entry(name.to_owned()).or_default();
            // Entries come newest first: the first seen is the newest.
            if slot.last_attempt.is_none() {
                slot.last_attempt = Some(seen.clone());
            }
            if slot.last_ok.is_none() && matches!(result, "pushed" | "up-to-date") {
                slot.last_ok = Some(seen);
            }
        }
    }
    out
}

/// Per tier, the time of the newest snapshot run that recorded it or found it unchanged.
/// Snapshot entries carry one `{tier, outcome, ...}` per tier in `details` (`mirror snapshot`),
/// `details.snapshot` (`snapshot --tag`, hooks).
fn last_checked(entries: &[Recorded], latest_believed: i64) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for e in entries {
        let details = &e.entry.details;
        let tiers = details
            .as_array()
            .or_else(|| details.get("snapshot").and_then(|s| s.as_array()));
        let Some(tiers) = tiers else {
            continue;
        };
        let Some(time) = rfc3339_secs(&e.entry.time).filter(|&t| t <= latest_believed) else {
            continue;
        };
        for t in tiers {
            let covered = matches!(
                t.get("outcome").and_then(|o| o.as_str()),
                Some("recorded" | "unchanged")
            );
            if let (true, Some(tier)) = (covered, t.get("tier").and_then(|n| n.as_str())) {
                // Entries come newest first: keep the first time seen.
                out.entry(tier.to_owned()).or_insert(time);
            }
        }
    }
    out
}

/// Seconds since the epoch of an RFC 3339 time (audit entries).
pub fn rfc3339_secs(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

impl Dashboard<'_> {
    /// What needs a person's attention, one line each; empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        let local = self.local;
        let mut out = Vec::new();
        for t in &local.tiers {
            let name = &t.status.tier;
            if t.status.missing {
                out.push(format!("tier {name}: its directory is missing"));
            }
            if t.future {
                out.push(format!(
                    "tier {name}: its last snapshot is dated in the future (a clock was wrong; check `mirror audit verify`)"
                ));
            }
            match t.age_secs {
                None if t.future => {}
                None => out.push(format!("tier {name}: no snapshot yet")),
                Some(age) if t.overdue => out.push(format!(
                    "tier {name}: last covered by a snapshot {} ago (expected every {})",
                    crate::units::age(age),
                    crate::units::age(local.interval_secs as i64)
                )),
                Some(_) => {}
            }
            if !t.status.critical_missing.is_empty() {
                out.push(format!(
                    "tier {name}: {} critical file(s) missing",
                    t.status.critical_missing.len()
                ));
            }
            if !t.status.unreadable.is_empty() {
                out.push(format!(
                    "tier {name}: {} file(s) could not be read",
                    t.status.unreadable.len()
                ));
            }
        }
        if local.recent_failures > 0 {
            out.push(format!(
                "{} failed or partial operation(s) in the last {}",
                local.recent_failures,
                crate::units::age(local.interval_secs as i64)
            ));
        }
        if let Some(v) = &local.last_verify {
            if v.entry.result != Outcome::Ok {
                out.push("the last verify found problems".to_owned());
            }
        }
        if let Some(check) = self.remotes {
            for s in &check.statuses {
                match s.state {
                    State::UpToDate | State::Ahead => {}
                    State::Behind => {
                        out.push(format!("remote {}: behind by {}", s.remote, s.behind))
                    }
                    State::Diverged => out.push(format!("remote {}: diverged", s.remote)),
                    State::Unreachable => out.push(format!("remote {}: unreachable", s.remote)),
                    State::Empty => out.push(format!("remote {}: never pushed", s.remote)),
                }
            }
        }
        out.extend(
            local
                .errors
                .iter()
                .chain(self.extra_errors)
                .map(|e| format!("could not read {e}")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_entry(time: &str, reports: serde_json::Value) -> Recorded {
        let mut entry = audit::Entry::new("push", vec![], Outcome::Ok);
        entry.time = time.to_owned();
        entry.details = reports;
        Recorded {
            id: ObjectId::null(gix::hash::Kind::Sha1),
            entry,
        }
    }

    #[test]
    fn a_tier_found_unchanged_counts_as_checked() {
        let mut newest = audit::Entry::new("hook", vec![], Outcome::Failed);
        newest.time = "2026-11-27T10:00:00+00:00".into();
        newest.details = serde_json::json!({"snapshot": [
            {"tier": "a", "outcome": "unchanged"},
            {"tier": "b", "outcome": null, "error": "disk full"}]});
        let mut older = audit::Entry::new("snapshot", vec![], Outcome::Ok);
        older.time = "2026-11-27T09:00:00+00:00".into();
        older.details = serde_json::json!([
            {"tier": "a", "outcome": "recorded"},
            {"tier": "b", "outcome": "recorded"},
            {"tier": "c", "outcome": "nothing"}]);
        let entries: Vec<Recorded> = [newest, older]
            .into_iter()
            .map(|entry| Recorded {
                id: ObjectId::null(gix::hash::Kind::Sha1),
                entry,
            })
            .collect();
        let checked = last_checked(&entries, i64::MAX);
        assert_eq!(
            checked.get("a"),
            rfc3339_secs("2026-11-27T10:00:00+00:00").as_ref()
        );
        assert_eq!(
            checked.get("b"),
            rfc3339_secs("2026-11-27T09:00:00+00:00").as_ref()
        );
        assert_eq!(checked.get("c"), None);
    }

    #[test]
    fn last_push_is_the_newest_success_and_attempt_the_newest_try() {
        // Newest first, as the audit trail lists them.
        let entries = vec![
            push_entry(
                "2026-11-27T10:00:00+00:00",
                serde_json::json!([{"remote": "usb", "result": "failed", "error": "gone"},
                                   {"remote": "nas", "result": "up-to-date"}]),
            ),
            push_entry(
                "2026-11-27T09:00:00+00:00",
                serde_json::json!([{"remote": "usb", "result": "pushed"}]),
            ),
            push_entry("2026-11-27T08:00:00+00:00", serde_json::json!(null)),
        ];
        let p = pushes(&entries);
        let usb = &p["usb"];
        assert_eq!(usb.last_attempt.as_ref().unwrap().result, "failed");
        assert_eq!(
            usb.last_attempt.as_ref().unwrap().error.as_deref(),
            Some("gone")
        );
        assert_eq!(
            usb.last_ok.as_ref().unwrap().time,
            "2026-11-27T09:00:00+00:00"
        );
        assert_eq!(
            p["nas"].last_ok.as_ref().unwrap().time,
            "2026-11-27T10:00:00+00:00"
        );
        assert_eq!(p.len(), 2);
    }
}
