//! Reading history: resolving revisions and times to tier commits, and listing snapshots.

use std::collections::HashMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Local, TimeZone};
use gix::bstr::ByteSlice;
use gix::ObjectId;

use crate::config::Config;
use crate::error::Error;
use crate::listing::Counts;
use crate::store::Shadow;

/// One tier commit, decoded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    #[serde(serialize_with = "ser_oid")]
    pub id: ObjectId,
    pub tier: String,
    /// Seconds since the epoch (committer time).
    pub time: i64,
    pub trigger: String,
    pub stats: String,
    /// The user's `-m` message, if any.
    pub message: String,
    pub partial: bool,
    /// Treasure files in the snapshot (`Mirror-Critical`; absent in older snapshots).
    pub critical: Option<u64>,
    pub tags: Vec<String>,
}

fn ser_oid<S: serde::Serializer>(id: &ObjectId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_string())
}

/// `YYYY-MM-DD HH:MM:SS` in local time.
pub fn format_local(secs: i64) -> String {
    match Local.timestamp_opt(secs, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => format!("@{secs}"),
    }
}

pub fn trailer<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
}

pub fn decode(shadow: &Shadow, id: ObjectId) -> Result<Snapshot> {
    let commit = shadow
        .repo
        .find_commit(id)
        .with_context(|| format!("commit {id} is missing or corrupt"))?;
    let decoded = commit.decode()?;
    let message = decoded.message.to_str_lossy().into_owned();
    let time = decoded.committer()?.seconds();
    let tier = trailer(&message, "Mirror-Tier").unwrap_or("?").to_owned();
    // The user's message is the paragraph after the subject, when present.
    let mut paragraphs = message.split("\n\n");
    paragraphs.next();
    let user = paragraphs
        .next()
        .filter(|p| {
            !p.starts_with("Mirror-")
                && !p.starts_with("WARNING")
                && !p.starts_with("Unreadable")
                && !p.starts_with("Skipped")
        })
        .unwrap_or("")
        .trim()
        .to_owned();
    Ok(Snapshot {
        id,
        tier,
        time,
        trigger: trailer(&message, "Mirror-Trigger")
            .unwrap_or("?")
            .to_owned(),
        stats: trailer(&message, "Mirror-Stats").unwrap_or("").to_owned(),
        message: user,
        partial: trailer(&message, "Mirror-Partial").is_some(),
        critical: trailer(&message, "Mirror-Critical").and_then(|v| v.parse().ok()),
        tags: Vec::new(),
    })
}

/// First-parent history of a tier, newest first, at most `limit` commits.
pub fn tier_history(shadow: &Shadow, tier: &str, limit: usize) -> Result<Vec<ObjectId>> {
    let mut out = Vec::new();
    let mut next = shadow.tier_tip(tier)?;
    while let Some(id) = next {
        if out.len() >= limit {
            break;
        }
        out.push(id);
        let commit = shadow.repo.find_commit(id)?;
        next = commit.parent_ids().next().map(|p| p.detach());
    }
    Ok(out)
}

/// Tag names by the snapshot commits they capture: a milestone tag names every tier commit
/// of its milestone (and the milestone itself); any other tag names the commit it points at.
pub fn tags_by_commit(shadow: &Shadow) -> Result<HashMap<ObjectId, Vec<String>>> {
    let mut map: HashMap<ObjectId, Vec<String>> = HashMap::new();
    let refs = shadow.repo.references()?;
    for reference in refs.tags()?.flatten() {
        let name = reference.name().shorten().to_string();
        let mut reference = reference;
        let Ok(id) = reference.peel_to_id() else {
            continue;
        };
        let id = id.detach();
        if let Ok(parts) = milestone_parts(shadow, id) {
            for (_, commit) in parts.into_iter().flatten() {
                map.entry(commit).or_default().push(name.clone());
            }
        }
        map.entry(id).or_default().push(name);
    }
    Ok(map)
}

/// The tier commits a milestone captures, or `None` if `id` is not a milestone commit.
pub fn milestone_parts(shadow: &Shadow, id: ObjectId) -> Result<Option<Vec<(String, ObjectId)>>> {
    let commit = shadow.repo.find_commit(id)?;
    let message = commit.message_raw()?.to_str_lossy().into_owned();
    if trailer(&message, "Mirror-Milestone").is_none() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    for parent in commit.parent_ids() {
        let snap = decode(shadow, parent.detach())?;
        parts.push((snap.tier, parent.detach()));
    }
    Ok(Some(parts))
}

/// Snapshots of the given tiers, newest first, at most `limit` in all.
pub fn log(shadow: &Shadow, tiers: &[String], limit: usize) -> Result<Vec<Snapshot>> {
    let tags = tags_by_commit(shadow)?;
    let mut all = Vec::new();
    for tier in tiers {
        for id in tier_history(shadow, tier, limit)? {
            let mut snap = decode(shadow, id)?;
            snap.tags = tags.get(&id).cloned().unwrap_or_default();
            all.push(snap);
        }
    }
    all.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.tier.cmp(&b.tier)));
    all.truncate(limit);
    Ok(all)
}

/// What a revision names: one tier commit, or (a milestone tag) one commit per tier.
pub struct Resolved {
    /// Set when the revision names a milestone (`mirror tag`).
    pub milestone: Option<ObjectId>,
    /// (tier, snapshot commit), only tiers of the current configuration.
    pub tiers: Vec<(String, ObjectId)>,
}

/// Resolve a git revision (a tier commit, `tiers/<tier>~N`, a tag) to tier snapshots.
pub fn resolve(shadow: &Shadow, config: &Config, rev: &str) -> Result<Resolved> {
    let unknown = |reason: String| Error::UnknownRevision {
        rev: rev.to_owned(),
        reason,
    };
    let id = shadow
        .repo
        .rev_parse_single(rev)
        .map_err(|e| unknown(e.to_string()))?;
    let object = id.object().map_err(|e| unknown(e.to_string()))?;
    let commit = object
        .peel_to_commit()
        .map_err(|_| unknown("it does not name a snapshot commit".into()))?;
    let configured = |tier: &str| config.tiers.iter().any(|t| t.name == tier);
    if let Some(parts) = milestone_parts(shadow, commit.id)? {
        let tiers: Vec<_> = parts.into_iter().filter(|(t, _)| configured(t)).collect();
        if tiers.is_empty() {
            return Err(
                unknown("the milestone captures none of the configured tiers".into()).into(),
            );
        }
        return Ok(Resolved {
            milestone: Some(commit.id),
            tiers,
        });
    }
    let snap = decode(shadow, commit.id)?;
    if !configured(&snap.tier) {
        return Err(unknown(format!(
            "commit {} is not a snapshot of a configured tier (Mirror-Tier: {})",
            commit.id, snap.tier
        ))
        .into());
    }
    Ok(Resolved {
        milestone: None,
        tiers: vec![(snap.tier, commit.id)],
    })
}

/// What `checkout latest` restores: the newest snapshot that is not a `pre-checkout` safety
/// copy. A checkout records the state it replaces as the new tip (for undo); `latest` must
/// still mean the state that was being restored, so running the same checkout again (after
/// an interruption, or by habit) completes it instead of undoing it.
pub fn latest(shadow: &Shadow, tier: &str) -> Result<Option<ObjectId>> {
    let tip = shadow.tier_tip(tier)?;
    let mut next = tip;
    while let Some(id) = next {
        let commit = shadow.repo.find_commit(id)?;
        let message = commit.message_raw_sloppy().to_str_lossy().into_owned();
        if trailer(&message, "Mirror-Trigger") != Some("pre-checkout") {
            return Ok(Some(id));
        }
        next = commit.parent_ids().next().map(|p| p.detach());
    }
    // Nothing but safety copies: the newest of them is all there is.
    Ok(tip)
}

/// The newest snapshot of `tier` at or before `at` (seconds since the epoch).
pub fn at_time(shadow: &Shadow, tier: &str, at: i64) -> Result<Option<ObjectId>> {
    let mut next = shadow.tier_tip(tier)?;
    while let Some(id) = next {
        let commit = shadow.repo.find_commit(id)?;
        if commit.time()?.seconds <= at {
            return Ok(Some(id));
        }
        next = commit.parent_ids().next().map(|p| p.detach());
    }
    Ok(None)
}

/// Parse `--at`: RFC 3339, `YYYY-MM-DD[ HH:MM[:SS]]` (local time), `now`, or `N <unit>s ago`.
pub fn parse_time(text: &str, now: DateTime<Local>) -> Result<i64, String> {
    let t = text.trim();
    if t == "now" {
        return Ok(now.timestamp());
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return local(naive, t);
        }
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        // A bare date means the end of that day: "what did it look like on June 16".
        let naive = date.and_hms_opt(23, 59, 59).ok_or("invalid date")?;
        return local(naive, t);
    }
    let words: Vec<&str> = t.split_whitespace().collect();
    if let [n, unit, "ago"] = words.as_slice() {
        let n: i64 = n
            .parse()
            .map_err(|_| format!("'{t}': '{n}' is not a number"))?;
        let secs = match unit.trim_end_matches('s') {
            "second" | "sec" => 1,
            "minute" | "min" => 60,
            "hour" => 3600,
            "day" => 86_400,
            "week" => 604_800,
            other => {
                return Err(format!(
                    "'{t}': unknown unit '{other}' (use seconds, minutes, hours, days or weeks)"
                ))
            }
        };
        return Ok(now.timestamp() - n * secs);
    }
    Err(format!(
        "cannot read time '{t}'; use RFC 3339 (2025-06-16T14:00:00+02:00), '2025-06-16 14:00' or '2 hours ago'"
    ))
}

fn local(naive: chrono::NaiveDateTime, t: &str) -> Result<i64, String> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp())
        .ok_or_else(|| format!("'{t}' does not exist in the local time zone"))
}

/// Parse the `+a ~m -d` stats trailer.
pub fn parse_counts(s: &str) -> Option<Counts> {
    let mut it = s.split_whitespace();
    let a = it.next()?.strip_prefix('+')?.parse().ok()?;
    let m = it.next()?.strip_prefix('~')?.parse().ok()?;
    let d = it.next()?.strip_prefix('-')?.parse().ok()?;
    Some(Counts {
        added: a,
        modified: m,
        deleted: d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let now = Local.with_ymd_and_hms(2026, 1, 2, 12, 0, 0).unwrap();
        assert_eq!(
            parse_time("2 hours ago", now).unwrap(),
            now.timestamp() - 7200
        );
        assert_eq!(
            parse_time("1 day ago", now).unwrap(),
            now.timestamp() - 86400
        );
        assert_eq!(
            parse_time("2025-06-16T14:00:00Z", now).unwrap(),
            chrono::Utc
                .with_ymd_and_hms(2025, 6, 16, 14, 0, 0)
                .unwrap()
                .timestamp()
        );
        let local = Local
            .with_ymd_and_hms(2025, 6, 16, 14, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(parse_time("2025-06-16 14:00", now).unwrap(), local);
        assert!(parse_time("yesterday-ish", now).is_err());
        assert!(parse_time("3 fortnights ago", now).is_err());
    }

    #[test]
    fn trailers_and_counts() {
        let msg = "snapshot t: +1 ~2 -3\n\nMirror-Tier: t\nMirror-Stats: +1 ~2 -3\n";
        assert_eq!(trailer(msg, "Mirror-Tier"), Some("t"));
        assert_eq!(
            parse_counts(trailer(msg, "Mirror-Stats").unwrap()),
            Some(Counts {
                added: 1,
                modified: 2,
                deleted: 3
            })
        );
    }
}
