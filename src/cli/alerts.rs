//! Raising alerts (`alerts:` in mirror.yaml) and reporting how their delivery went.
//!
//! A command raises an alert with [`raise`] (delivered when it ends) or, in a long-running
//! `mirror watch`, with [`send_now`]. A failed or partial snapshot (also from a hook), a
//! failed push and a verify with problems are turned into alerts here, from the audit entry
//! of the operation, so no command can forget them. Every delivery is audited as an `alert`
//! entry; a failing alert command is reported on stderr.

use std::path::PathBuf;

use mirror::alert::{Alert, Delivery};
use mirror::audit::{Entry, Outcome};
use mirror::config::Alerts;

use super::Context;

/// Where this run's alerts go.
pub struct Target {
    pub settings: Alerts,
    pub root: PathBuf,
    pub shadow: PathBuf,
}

/// Remember the project just opened as the destination of alerts.
pub fn target(ctx: &Context, project: &mirror::project::Project, shadow: &mirror::store::Shadow) {
    *ctx.alerting.borrow_mut() = Some(Target {
        settings: project.config.alerts.clone(),
        root: project.root.clone(),
        shadow: shadow.path.clone(),
    });
}

/// An alert to deliver when the command ends.
pub fn raise(ctx: &Context, event: &str, message: String, tier: Option<&str>, paths: Vec<String>) {
    let Some(target) = ctx.alerting.borrow().as_ref().map(|t| t.root.clone()) else {
        return;
    };
    let alert = Alert::new(event, "", &target, message).about(tier, paths);
    ctx.alerts.borrow_mut().push(alert);
}

/// Deliver `alert` now (for `mirror watch`, which does not end).
pub fn send_now(ctx: &Context, alert: Alert) {
    let target = ctx.alerting.borrow();
    if let Some(target) = target.as_ref() {
        deliver(target, alert);
    }
}

/// At the end of a command: the alerts it raised, and the one its outcome calls for.
pub fn after_command(ctx: &Context, command: &str, entry: Option<&Entry>) {
    let target = ctx.alerting.borrow();
    let Some(target) = target.as_ref() else {
        return;
    };
    let mut alerts: Vec<Alert> = ctx.alerts.borrow_mut().drain(..).collect();
    if let Some(alert) = entry.and_then(|e| from_outcome(command, e, target)) {
        alerts.push(alert);
    }
    for mut alert in alerts {
        if alert.source.is_empty() {
            alert.source = command.to_owned();
        }
        deliver(target, alert);
    }
}

/// The alert an operation's outcome calls for, if any.
/// The alert the audited operation `entry` calls for, if any (and if a project is open).
pub fn for_entry(ctx: &Context, command: &str, entry: &Entry) -> Option<Alert> {
    let target = ctx.alerting.borrow();
    from_outcome(command, entry, target.as_ref()?)
}

fn from_outcome(command: &str, entry: &Entry, target: &Target) -> Option<Alert> {
    let error = entry.error.as_deref().unwrap_or("");
    let first = error.lines().next().unwrap_or("");
    let (event, message) = match (command, entry.result) {
        ("snapshot" | "hook", Outcome::Failed) => {
            ("snapshot-failed", format!("snapshot failed: {first}"))
        }
        ("snapshot", Outcome::Partial) => (
            "snapshot-partial",
            "snapshot is partial: some files could not be read (see `mirror log`)".to_owned(),
        ),
        ("push", Outcome::Failed) => ("push-failed", format!("push failed: {first}")),
        ("verify", Outcome::Failed) => ("verify-failed", format!("verify found problems: {first}")),
        _ => return None,
    };
    Some(Alert::new(event, command, &target.root, message))
}

fn deliver(target: &Target, alert: Alert) {
    let Some(delivery) = mirror::alert::deliver(&target.settings, &target.root, &alert) else {
        return;
    };
    if !delivery.ok {
        eprintln!(
            "error: the alert command for {} failed ({}){}",
            alert.event,
            delivery.error.as_deref().unwrap_or("unknown error"),
            if delivery.output.is_empty() {
                String::new()
            } else {
                format!(":\n{}", delivery.output)
            }
        );
    }
    if let Err(err) = audit(target, &alert, &delivery) {
        eprintln!("error: could not audit the {} alert: {err:#}", alert.event);
    }
}

fn audit(target: &Target, alert: &Alert, delivery: &Delivery) -> anyhow::Result<()> {
    let outcome = if delivery.ok {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    let shadow = mirror::store::Shadow::open(&target.shadow)?;
    super::append_audit(
        &shadow,
        "alert",
        vec![alert.event.clone()],
        outcome,
        serde_json::json!({ "alert": alert, "delivery": delivery }),
        delivery.error.as_slice(),
    )?;
    Ok(())
}
