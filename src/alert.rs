//! Alerts: running the user's `alerts.command` when something needs attention (a failed or
//! partial snapshot, a missing critical file, a failed push, a verify that found problems).
//!
//! The command runs with `sh -c` in the project root, in its own process group, with the event
//! in `MIRROR_ALERT_*` variables and as one JSON object on standard input, and is killed after
//! [`TIMEOUT`]: an alert must never hang the snapshot (or the hook, or git) that raised it.
//! The result is returned as data; the caller reports a failure and audits every alert.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Alerts;

/// An alert command taking longer than this is killed (and reported as failed).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Output kept from the alert command (for the failure report).
const OUTPUT_KEPT: u64 = 16 * 1024;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    /// One of [`crate::config::ALERT_EVENTS`].
    pub event: String,
    /// One line for a person.
    pub message: String,
    pub project: String,
    pub host: String,
    /// RFC 3339.
    pub time: String,
    /// The mirror operation that raised it (`snapshot`, `hook`, `watch`, ...).
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Paths concerned (relative to the project root), e.g. the missing critical files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

impl Alert {
    pub fn new(event: &str, source: &str, project: &Path, message: String) -> Alert {
        Alert {
            event: event.to_owned(),
            message,
            project: project.display().to_string(),
            host: crate::host::hostname(),
            time: chrono::Local::now().to_rfc3339(),
            source: source.to_owned(),
            tier: None,
            paths: Vec::new(),
        }
    }
}

impl Alert {
    /// The tier and the paths (relative to the project root) the alert is about.
    pub fn about(mut self, tier: Option<&str>, paths: Vec<String>) -> Alert {
        self.tier = tier.map(str::to_owned);
        self.paths = paths;
        self
    }
}

/// What running the alert command gave.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    /// The command exited 0.
    pub ok: bool,
    /// Why not: exit status, signal, timeout, or could not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of what it printed (stdout and stderr).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// Run the configured command for `alert`; `None` when alerts are off for this event.
pub fn deliver(settings: &Alerts, root: &Path, alert: &Alert) -> Option<Delivery> {
    if !settings.wants(&alert.event) {
        return None;
    }
    let command = settings.command.as_deref()?;
    Some(match run(command, root, alert) {
        Ok(d) => d,
        Err(e) => Delivery {
            ok: false,
            error: Some(format!("{e:#}")),
            output: String::new(),
        },
    })
}

/// Paths in `MIRROR_ALERT_PATHS`, at most this many (one variable is limited to 128 KiB; the
/// JSON on stdin has them all).
const PATHS_IN_VARIABLE: usize = 100;

fn paths_variable(paths: &[String]) -> String {
    let mut text = paths
        .iter()
        .take(PATHS_IN_VARIABLE)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    if paths.len() > PATHS_IN_VARIABLE {
        text.push_str(&format!(
            "\n... and {} more (all of them are in the JSON on stdin)",
            paths.len() - PATHS_IN_VARIABLE
        ));
    }
    // A single path longer than the kernel allows for a variable is cut too.
    text.chars().take(64 * 1024).collect()
}

fn run(command: &str, root: &Path, alert: &Alert) -> Result<Delivery> {
    use std::os::unix::process::CommandExt;
    let json = serde_json::to_string(alert)?;
    let output = tempfile::tempfile().context("could not create a file for the alert's output")?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(root)
        .env("MIRROR_ALERT_EVENT", &alert.event)
        .env("MIRROR_ALERT_MESSAGE", &alert.message)
        .env("MIRROR_ALERT_PROJECT", &alert.project)
        .env("MIRROR_ALERT_HOST", &alert.host)
        .env("MIRROR_ALERT_TIME", &alert.time)
        .env("MIRROR_ALERT_SOURCE", &alert.source)
        .env("MIRROR_ALERT_TIER", alert.tier.as_deref().unwrap_or(""))
        .env("MIRROR_ALERT_PATHS", paths_variable(&alert.paths))
        // Secrets of this mirror process are not the alert command's business.
        .env_remove("MIRROR_PASSPHRASE")
        .env_remove("MIRROR_IDENTITY")
        .stdin(Stdio::piped())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?)
        // Its own group, so a timeout kills whatever it started too.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start the alert command `{command}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // From a thread: a command that never reads must not block us past the timeout. One
        // that does not read its input closes the pipe: not a failure.
        std::thread::spawn(move || {
            let _ = stdin.write_all(json.as_bytes());
        });
    }
    let status = crate::child::wait_or_kill(&mut child, TIMEOUT)?;
    let mut text = String::new();
    let mut output = output;
    use std::io::Seek;
    output.seek(std::io::SeekFrom::Start(0))?;
    output.take(OUTPUT_KEPT).read_to_string(&mut text).ok();
    let (ok, error) = match status {
        None => (false, Some(format!("killed after {} s", TIMEOUT.as_secs()))),
        Some(s) if s.success() => (true, None),
        Some(s) => (false, Some(format!("exited with {s}"))),
    };
    Ok(Delivery {
        ok,
        error,
        output: text.trim_end().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(command: &str) -> Alerts {
        Alerts {
            command: Some(command.into()),
            events: Vec::new(),
        }
    }

    #[test]
    fn the_command_gets_the_event_in_variables_and_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut alert = Alert::new("critical-missing", "watch", dir.path(), "gone".into());
        alert.paths = vec!["a/.hidden".into(), "b/.hidden".into()];
        let d = deliver(
            &settings(r#"printf '%s|%s|' "$MIRROR_ALERT_EVENT" "$MIRROR_ALERT_PATHS"; cat"#),
            dir.path(),
            &alert,
        )
        .expect("wanted");
        assert!(d.ok, "{d:?}");
        let (vars, json) = d.output.rsplit_once('|').unwrap();
        assert_eq!(vars, "critical-missing|a/.hidden\nb/.hidden");
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed["event"], "critical-missing");
        assert_eq!(parsed["paths"][1], "b/.hidden");
    }

    #[test]
    fn thousands_of_paths_still_start_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut alert = Alert::new("critical-missing", "watch", dir.path(), "gone".into());
        alert.paths = (0..6000)
            .map(|i| format!("tier/.hidden/{i:0>40}"))
            .collect();
        let d = deliver(
            &settings(r#"printf '%s' "$MIRROR_ALERT_PATHS" | tail -n 1; wc -c >&2"#),
            dir.path(),
            &alert,
        )
        .unwrap();
        assert!(d.ok, "{d:?}");
        assert!(d.output.contains("and 5900 more"), "{d:?}");
    }

    #[test]
    fn a_failing_command_is_reported_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let alert = Alert::new("push-failed", "push", dir.path(), "x".into());
        let d = deliver(&settings("echo no webhook >&2; exit 7"), dir.path(), &alert).unwrap();
        assert!(!d.ok);
        assert!(d.error.as_deref().unwrap().contains('7'), "{d:?}");
        assert_eq!(d.output, "no webhook");
    }

    #[test]
    fn unselected_events_and_no_command_raise_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let alert = Alert::new("push-failed", "push", dir.path(), "x".into());
        assert!(deliver(&Alerts::default(), dir.path(), &alert).is_none());
        let only_verify = Alerts {
            command: Some("true".into()),
            events: vec!["verify-failed".into()],
        };
        assert!(deliver(&only_verify, dir.path(), &alert).is_none());
    }
}
