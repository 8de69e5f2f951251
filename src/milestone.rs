//! Milestones: `mirror tag` marks the state of all tiers at once.
//!
//! A milestone is a commit whose tree holds one subtree per tier (that tier's snapshot tree)
//! and whose parents are the tier commits it captures; an annotated tag `refs/tags/<name>`
//! points at it. Tags are created with compare-and-swap against "must not exist": a milestone
//! is never moved.

use anyhow::{bail, Context, Result};
use gix::ObjectId;

use crate::error::Error;
use crate::history;
use crate::progress::Progress;
use crate::project::Project;
use crate::snapshot::{self, EmptyPolicy, TierReport};
use crate::store::Shadow;

pub struct Request {
    pub name: String,
    pub message: Option<String>,
    /// A revision or a time; default: the latest snapshots (taken now if anything changed).
    pub at: Option<String>,
}

pub struct Report {
    pub name: String,
    pub tag: ObjectId,
    pub milestone: ObjectId,
    pub tiers: Vec<(String, ObjectId)>,
    /// The snapshots taken first (when capturing the current state).
    pub snapshots: Vec<TierReport>,
}

#[derive(Debug, serde::Serialize)]
pub struct TagInfo {
    pub name: String,
    /// Seconds since the epoch (tagger time).
    pub time: i64,
    pub message: String,
    /// (tier, snapshot commit) captured; empty for tags not made by mirror.
    pub tiers: Vec<(String, String)>,
}

pub fn validate_name(name: &str) -> Result<(), Error> {
    let full = format!("refs/tags/{name}");
    if name.is_empty() || gix::validate::reference::name(full.as_str().into()).is_err() {
        return Err(Error::Usage(format!(
            "'{name}' is not a valid tag name (git ref-name rules: no spaces, '..', '~', '^', ':', '?', '*', '[', '\\\\', no trailing '.lock' or '/')"
        )));
    }
    Ok(())
}

pub fn tag_ref(name: &str) -> String {
    format!("refs/tags/{name}")
}

/// A valid name that no tag has yet.
pub fn check_available(shadow: &Shadow, name: &str) -> Result<()> {
    validate_name(name)?;
    if shadow.ref_target(&tag_ref(name))?.is_some() {
        return Err(Error::Usage(format!(
            "tag '{name}' already exists; milestones are never moved — choose another name"
        ))
        .into());
    }
    Ok(())
}

pub fn create(
    project: &Project,
    shadow: &Shadow,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Report> {
    check_available(shadow, &request.name)?;
    let mut snapshots = Vec::new();
    let tiers: Vec<(String, ObjectId)> = match &request.at {
        None => {
            // Capture the current state: a tag never misses work that was not snapshotted.
            let options = snapshot::Options {
                trailers: Vec::new(),
                focus: Default::default(),
                tiers: Vec::new(),
                message: Some(format!("before tag {}", request.name)),
                trigger: "tag".into(),
                empty: EmptyPolicy::Refuse,
            };
            let mut captured = Vec::new();
            for (tier, result) in snapshot::snapshot(project, shadow, &options, progress)? {
                let report = result.with_context(|| {
                    format!(
                        "could not snapshot tier '{tier}' for tag '{}'; no tag was created",
                        request.name
                    )
                })?;
                if let Some(commit) = report.commit {
                    captured.push((tier, commit));
                }
                snapshots.push(report);
            }
            captured
        }
        Some(at) => at_state(project, shadow, at)?,
    };
    if tiers.is_empty() {
        bail!("no tier has a snapshot to tag — run `mirror snapshot` first");
    }
    let signature = snapshot::signature();
    let mut editor = shadow
        .repo
        .edit_tree(ObjectId::empty_tree(gix::hash::Kind::Sha1))?;
    let mut message = format!("milestone {}\n", request.name);
    if let Some(m) = &request.message {
        message.push('\n');
        message.push_str(m.trim_end());
        message.push('\n');
    }
    message.push('\n');
    message.push_str(&format!("Mirror-Milestone: {}\n", request.name));
    for (tier, commit) in &tiers {
        let tree = shadow.repo.find_commit(*commit)?.tree_id()?.detach();
        editor.upsert(tier.as_str(), gix::objs::tree::EntryKind::Tree, tree)?;
        message.push_str(&format!("Mirror-Captures: {tier} {commit}\n"));
    }
    let tree = editor.write()?.detach();
    shadow.track(tree);
    let milestone =
        shadow.write_commit(tree, tiers.iter().map(|(_, c)| *c), message, &signature)?;
    let tag = gix::objs::Tag {
        target: milestone,
        target_kind: gix::objs::Kind::Commit,
        name: request.name.as_str().into(),
        tagger: Some(signature),
        message: format!(
            "{}\n",
            request
                .message
                .as_deref()
                .unwrap_or(&format!("milestone {}", request.name))
                .trim_end()
        )
        .into(),
        signature: None,
    };
    let tag_id = shadow.write_object(&tag)?;
    shadow.sync()?;
    shadow.update_ref(&tag_ref(&request.name), tag_id, None, "mirror tag")?;
    Ok(Report {
        name: request.name.clone(),
        tag: tag_id,
        milestone,
        tiers,
        snapshots,
    })
}

/// `--at`: a time (each tier's newest snapshot then) or a revision (its tiers, and for the
/// other tiers their newest snapshot at or before that revision's time).
fn at_state(project: &Project, shadow: &Shadow, at: &str) -> Result<Vec<(String, ObjectId)>> {
    let (mut chosen, time) = match history::parse_time(at, chrono::Local::now()) {
        Ok(t) => (Vec::new(), t),
        Err(_) => {
            let resolved = history::resolve(shadow, &project.config, at)?;
            let newest = resolved
                .tiers
                .iter()
                .map(|(_, c)| {
                    shadow
                        .repo
                        .find_commit(*c)
                        .and_then(|c| c.time())
                        .map(|t| t.seconds)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into_iter()
                .max()
                .unwrap_or(0);
            (resolved.tiers, newest)
        }
    };
    for tier in &project.config.tiers {
        if chosen.iter().any(|(t, _)| t == &tier.name) {
            continue;
        }
        if let Some(commit) = history::at_time(shadow, &tier.name, time)? {
            chosen.push((tier.name.clone(), commit));
        }
    }
    // Configuration order, so milestones of the same state are identical.
    chosen.sort_by_key(|(t, _)| project.config.tiers.iter().position(|c| &c.name == t));
    Ok(chosen)
}

/// All tags, newest first.
pub fn list(shadow: &Shadow) -> Result<Vec<TagInfo>> {
    let mut out = Vec::new();
    for reference in shadow.repo.references()?.tags()?.flatten() {
        let name = reference.name().shorten().to_string();
        let Some(target) = reference.target().try_id().map(|id| id.to_owned()) else {
            continue;
        };
        let object = shadow.repo.find_object(target)?;
        let (time, message, commit) = match object.kind {
            gix::objs::Kind::Tag => {
                let tag = object.into_tag();
                let decoded = tag.decode()?;
                let time = decoded.tagger()?.map(|t| t.seconds()).unwrap_or(0);
                let message = String::from_utf8_lossy(decoded.message).trim().to_owned();
                (time, message, tag.target_id()?.detach())
            }
            _ => (0, String::new(), target),
        };
        let tiers = history::milestone_parts(shadow, commit)
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .map(|(t, c)| (t, c.to_string()))
            .collect();
        out.push(TagInfo {
            name,
            time,
            message,
            tiers,
        });
    }
    out.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}
