//! Issue 9: automatic backups. `mirror watch` (snapshots after filesystem events and on an
//! interval, incremental by the paths events name, surviving atomic renames, bursts and a tier
//! directory deleted and recreated, stopping cleanly on SIGINT/SIGTERM, falling back to scanning
//! when inotify watches run out, batching automatic pushes), critical files restored or alerted
//! about, the `alerts:` command for every event (also outside watch), and `mirror schedule`.
//!
//! Every wait is a poll with a generous deadline that only keeps a broken watch from hanging
//! the suite; nothing here measures speed. Every process started is killed (with its process
//! group) when its guard drops.

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long to wait for something the watch should do (a snapshot, a restore, an alert).
const POLL: Duration = Duration::from_secs(60);
/// How long a stopped watch may take to finish the snapshot in progress and exit.
const EXIT_LIMIT: Duration = Duration::from_secs(300);
/// Between two looks at the state polled for.
const POLL_STEP: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// helpers: processes

/// A running `mirror watch` whose stdout and stderr go to files (no pipe can fill up).
struct Watch {
    proc: Proc,
    out: PathBuf,
    err: PathBuf,
}

impl Watch {
    /// Start `cmd` (a watch, possibly wrapped) with its output going to files named `name.*`.
    fn spawn(env: &Env, mut cmd: Command, name: &str) -> Watch {
        let out = env.root().join(format!("{name}.stdout"));
        let err = env.root().join(format!("{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        Watch {
            proc: Proc::spawn(&mut cmd),
            out,
            err,
        }
    }

    /// `mirror watch --debounce 1s EXTRA...`, once it printed its first line and the line of
    /// the snapshot it takes at start.
    fn start(env: &Env, extra: &[&str]) -> Watch {
        let mut cmd = env.cmd();
        cmd.args(["watch", "--debounce", "1s"]).args(extra);
        let mut w = Watch::spawn(env, cmd, "watch");
        w.until("the snapshot taken at start", |w| {
            (!snapshot_lines(&w.stdout(), "watch").is_empty()).then_some(())
        });
        let out = w.stdout();
        let first = out.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "watching {} tier(s): snapshot 1s after a change, and every ",
                tiers_of(env)
            )) && first.ends_with("; Ctrl-C stops"),
            "first line of mirror watch: {first:?}"
        );
        w
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn pid(&self) -> libc::pid_t {
        self.proc.child.id() as libc::pid_t
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our own unreaped child.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Panics (with the watch's output) if the watch is no longer running.
    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.proc.child.try_wait().expect("try_wait") {
            self.proc.done = true;
            panic!(
                "mirror watch exited ({status}) while waiting for {what}\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// Poll `check` until it gives a value, at most [`POLL`]; panics with the watch's output
    /// when the deadline passes or the watch exits.
    fn until<T>(&mut self, what: &str, mut check: impl FnMut(&Watch) -> Option<T>) -> T {
        self.until_within(POLL, what, &mut check)
    }

    fn until_within<T>(
        &mut self,
        limit: Duration,
        what: &str,
        check: &mut dyn FnMut(&Watch) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            self.assert_running(what);
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(POLL_STEP);
        }
    }

    /// Send `signal` and wait (bounded) for the watch to exit; its status, stdout and stderr.
    fn stop_with(mut self, signal: libc::c_int) -> Output {
        self.signal(signal);
        let status = self
            .proc
            .wait_bounded(EXIT_LIMIT, "mirror watch after a signal");
        Output {
            status,
            stdout: std::fs::read(&self.out).unwrap_or_default(),
            stderr: std::fs::read(&self.err).unwrap_or_default(),
        }
    }

    /// SIGTERM after a snapshot failed during the session: the watch exits 1.
    fn stop_after_a_failure(self) -> Output {
        let out = self.stop_with(libc::SIGTERM);
        assert_exit(&out, 1, "a watch that saw a snapshot fail");
        out
    }

    /// SIGTERM, then the watch must exit 0 and say it stops.
    fn stop(self) -> Output {
        let out = self.stop_with(libc::SIGTERM);
        assert_exit(&out, 0, "mirror watch stopped by SIGTERM");
        assert!(
            stdout(&out).contains("stopping (signal 15)"),
            "{}",
            stdout(&out)
        );
        out
    }
}

/// `YYYY-MM-DD HH:MM:SS ` at the start of a line.
fn is_stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && b[..20].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 | 19 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// The lines a watch printed for its snapshots with `trigger` (`watch`, `watch-interval`),
/// without the time stamp: `TIER ID +a ~m -d (N ms)`, `TIER unchanged (N ms)`, ...
fn snapshot_lines(stdout: &str, trigger: &str) -> Vec<String> {
    let prefix = format!("{trigger}: ");
    stdout
        .lines()
        .filter(|l| is_stamped(l))
        .filter_map(|l| l[20..].strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// `a 1234abc +1 ~0 -0 (7 ms)`: the tier, short id and stats of a one-tier recorded line.
fn recorded_line(line: &str) -> Option<(String, String, String)> {
    let (body, ms) = line.rsplit_once(" (")?;
    let ms = ms.strip_suffix(" ms)")?;
    ms.parse::<u64>().ok()?;
    let mut words = body.split(' ');
    let tier = words.next()?.to_owned();
    let id = words.next()?.to_owned();
    let stats: Vec<&str> = words.collect();
    let stats_ok = stats.len() == 3
        && ["+", "~", "-"]
            .iter()
            .zip(&stats)
            .all(|(p, s)| s.strip_prefix(p).is_some_and(|n| n.parse::<u64>().is_ok()));
    (id.len() == 7 && id.bytes().all(|c| c.is_ascii_hexdigit()) && stats_ok)
        .then(|| (tier, id, stats.join(" ")))
}

// ---------------------------------------------------------------------------------------------
// helpers: the project and the shadow

/// The number of tiers in mirror.yaml (the `- name:` items of its top-level `tiers:` list).
fn tiers_of(env: &Env) -> usize {
    let config = String::from_utf8(env.read("mirror.yaml")).unwrap();
    config
        .lines()
        .skip_while(|l| *l != "tiers:")
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.starts_with('-'))
        .filter(|l| l.starts_with("- name: "))
        .count()
}

fn append_config(env: &Env, text: &str) {
    let mut config = String::from_utf8(env.read("mirror.yaml")).unwrap();
    if !config.ends_with('\n') {
        config.push('\n');
    }
    config.push_str(text);
    env.write("mirror.yaml", config);
}

/// One tier `a` (`tier-a/`) with a few files, initialised with encryption (an identity in
/// this test's HOME), no snapshot yet.
fn project() -> Env {
    let env = Env::new();
    env.write("tier-a/a.txt", "a v1\n");
    env.write("tier-a/dir/b.txt", "b v1\n");
    env.init(&["a=tier-a"]);
    env
}

/// Every path recorded in the tip of `tier`.
fn files(env: &Env, tier: &str) -> BTreeSet<String> {
    if tip(env, tier).is_none() {
        return BTreeSet::new();
    }
    let out = env.shadow_git(&["ls-tree", "-r", "-z", "--name-only", &tier_ref(tier)]);
    assert_exit(&out, 0, "git ls-tree");
    stdout(&out)
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The content recorded for `path` in the tip of `tier`.
fn recorded(env: &Env, tier: &str, path: &str) -> Option<Vec<u8>> {
    let out = env.shadow_git(&["cat-file", "blob", &format!("{}:{path}", tier_ref(tier))]);
    out.status.success().then_some(out.stdout)
}

/// `mirror status --json`, parsed.
fn status(env: &Env) -> Vec<Value> {
    let out = env.mirror(&["status", "--json"]);
    assert_exit(&out, 0, "mirror status --json");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", stdout(&out)));
    v.as_array().expect("status --json: an array").clone()
}

/// Whether every tier's last snapshot equals a full scan of its directory.
fn unclean(env: &Env) -> Vec<Value> {
    status(env)
        .into_iter()
        .filter(|t| {
            t["counts"] != serde_json::json!({"added": 0, "modified": 0, "deleted": 0})
                || t["changes"].as_array().is_none_or(|c| !c.is_empty())
                || t["critical_missing"]
                    .as_array()
                    .is_none_or(|c| !c.is_empty())
                || t["last"].is_null()
        })
        .collect()
}

/// The incremental snapshot must equal a full scan: `mirror status` (a full scan) finds no
/// difference with what the watch recorded.
fn assert_clean(env: &Env, what: &str) {
    let dirty = unclean(env);
    assert!(
        dirty.is_empty(),
        "{what}: the watch's snapshot differs from a full scan:\n{dirty:#?}"
    );
}

/// `mirror log --json`, parsed (newest first).
/// The watch's snapshots after events kept the stat cache by journal (never rewritten whole),
/// and recorded exactly what a full scan records, metadata and empty directories included: a
/// snapshot from scratch, without any cache, finds nothing new to record.
fn assert_full_scan_agrees(env: &Env, tier: &str) {
    let cache = env.shadow.join("mirror").join("cache").join(tier);
    let journal = env
        .shadow
        .join("mirror")
        .join("cache")
        .join(format!("{tier}.journal"));
    assert!(
        journal.exists(),
        "the snapshots after events appended to {}",
        journal.display()
    );
    std::fs::remove_file(&cache).unwrap();
    std::fs::remove_file(&journal).unwrap();
    let before = tip(env, tier);
    let out = env.mirror(&["snapshot", "--json"]);
    assert_exit(&out, 0, "a snapshot without a stat cache");
    assert_eq!(
        tip(env, tier),
        before,
        "a full scan recorded something the watch did not: {}",
        stdout(&out)
    );
}

fn log(env: &Env) -> Vec<Value> {
    let text = env.ok(&["log", "--json"]);
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("log --json is not JSON ({e}):\n{text}"));
    v.as_array().expect("log --json: an array").clone()
}

/// Audit entries of `command` (newest first).
fn audited(env: &Env, command: &str) -> Vec<Value> {
    audit_log(env, &[])
        .into_iter()
        .filter(|e| e["command"] == command)
        .collect()
}

/// The audit entries of the watch's snapshots with `trigger`.
fn watch_snapshots(env: &Env, trigger: &str) -> Vec<Value> {
    audited(env, "snapshot")
        .into_iter()
        .filter(|e| e["args"] == serde_json::json!(["watch", "--trigger", trigger]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// helpers: alerts

/// `alerts:` writing each event's JSON (stdin) and `MIRROR_ALERT_*` variables into files of
/// a directory outside the project; `extra` is appended inside `alerts:`. The directory.
fn configure_alerts(env: &Env, extra: &str) -> PathBuf {
    let dir = env.root().join("alerts");
    mkdir(&dir);
    append_config(
        env,
        &format!(
            "alerts:\n  command: \"cat > {d}/$MIRROR_ALERT_EVENT.json; env | grep ^MIRROR_ALERT_ > {d}/$MIRROR_ALERT_EVENT.env\"\n{extra}",
            d = dir.display()
        ),
    );
    dir
}

const ALERT_VARIABLES: [&str; 8] = [
    "MIRROR_ALERT_EVENT",
    "MIRROR_ALERT_MESSAGE",
    "MIRROR_ALERT_PROJECT",
    "MIRROR_ALERT_HOST",
    "MIRROR_ALERT_TIME",
    "MIRROR_ALERT_SOURCE",
    "MIRROR_ALERT_TIER",
    "MIRROR_ALERT_PATHS",
];

/// The alert `event` as the command received it (its JSON and its variables); `None` until
/// both files are complete.
fn delivered(dir: &Path, event: &str) -> Option<(Value, BTreeMap<String, String>)> {
    let json = std::fs::read_to_string(dir.join(format!("{event}.json"))).ok()?;
    let alert: Value = serde_json::from_str(&json).ok()?;
    let text = std::fs::read_to_string(dir.join(format!("{event}.env"))).ok()?;
    let mut vars = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some((k, v)) if k.starts_with("MIRROR_ALERT_") => {
                vars.insert(k.to_owned(), v.to_owned());
                last = Some(k.to_owned());
            }
            // A value with a newline (several paths) continues on the next line.
            _ => {
                let k = last.clone()?;
                let v: &mut String = vars.get_mut(&k)?;
                v.push('\n');
                v.push_str(line);
            }
        }
    }
    ALERT_VARIABLES
        .iter()
        .all(|k| vars.contains_key(*k))
        .then_some((alert, vars))
}

fn must_be_delivered(dir: &Path, event: &str) -> (Value, BTreeMap<String, String>) {
    delivered(dir, event).unwrap_or_else(|| {
        let names: Vec<_> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        panic!("the alert command did not receive {event} (files: {names:?})")
    })
}

/// The JSON and the variables of a delivered alert say the same, and name this project.
fn check_alert(
    env: &Env,
    alert: &Value,
    vars: &BTreeMap<String, String>,
    event: &str,
    source: &str,
) {
    assert_eq!(alert["event"], event, "{alert:#}");
    assert_eq!(alert["source"], source, "{alert:#}");
    assert_eq!(
        alert["project"],
        env.project.display().to_string(),
        "{alert:#}"
    );
    assert!(
        alert["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{alert:#}"
    );
    assert!(
        alert["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{alert:#}"
    );
    assert!(
        chrono_like(alert["time"].as_str().unwrap_or_default()),
        "{alert:#}"
    );
    assert_eq!(vars["MIRROR_ALERT_EVENT"], event, "{vars:#?}");
    assert_eq!(vars["MIRROR_ALERT_SOURCE"], source, "{vars:#?}");
    assert_eq!(
        vars["MIRROR_ALERT_PROJECT"],
        env.project.display().to_string()
    );
    assert_eq!(
        vars["MIRROR_ALERT_MESSAGE"],
        alert["message"].as_str().unwrap()
    );
    assert_eq!(vars["MIRROR_ALERT_HOST"], alert["host"].as_str().unwrap());
    assert_eq!(vars["MIRROR_ALERT_TIME"], alert["time"].as_str().unwrap());
    assert_eq!(
        vars["MIRROR_ALERT_TIER"],
        alert["tier"].as_str().unwrap_or("")
    );
    let paths: Vec<&str> = alert["paths"]
        .as_array()
        .map(|p| p.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default();
    assert_eq!(vars["MIRROR_ALERT_PATHS"], paths.join("\n"), "{vars:#?}");
}

/// RFC 3339: `2026-01-02T03:04:05...`.
fn chrono_like(time: &str) -> bool {
    let b = time.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':'
}

/// The audit entries of delivered alerts for `event` (newest first).
/// The one audit entry of an `event` alert, with the delivery's `result`.
fn one_alert_entry(env: &Env, event: &str, result: &str) -> Value {
    let entries = alert_entries(env, event);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["result"], result, "{:#}", entries[0]);
    entries[0].clone()
}

fn alert_entries(env: &Env, event: &str) -> Vec<Value> {
    audited(env, "alert")
        .into_iter()
        .filter(|e| e["args"] == serde_json::json!([event]))
        .collect()
}

/// A remote that cannot work: its URL is a regular file.
fn add_broken_remote(env: &Env) {
    let file = env.root().join("not-a-repository");
    write(&file, "just a file\n");
    env.ok(&["remote", "add", "bad", file.to_str().unwrap()]);
}

/// Flip one byte in the middle of the loose object of `path` in the tip of `tier`.
fn corrupt_blob_of(env: &Env, tier: &str, path: &str) {
    let out = env.shadow_git(&["rev-parse", &format!("{}:{path}", tier_ref(tier))]);
    assert_exit(&out, 0, "rev-parse of a recorded blob");
    let id = stdout(&out).trim().to_owned();
    let loose = env.shadow.join("objects").join(&id[..2]).join(&id[2..]);
    let mut data = std::fs::read(&loose)
        .unwrap_or_else(|e| panic!("{path}'s blob must be a loose object: {e}"));
    let at = data.len() / 2;
    data[at] ^= 0xff;
    chmod(&loose, 0o644);
    std::fs::write(&loose, data).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 1. a change is picked up after the debounce

#[test]
fn a_change_is_recorded_after_the_debounce_with_one_line_and_an_audit_entry() {
    let env = project();
    let mut w = Watch::start(&env, &[]);
    let start = snapshot_lines(&w.stdout(), "watch");
    assert_eq!(start.len(), 1, "{start:?}");
    let (tier, id, stats) = recorded_line(&start[0])
        .unwrap_or_else(|| panic!("the start snapshot records the tier: {:?}", start[0]));
    assert_eq!(
        (tier.as_str(), stats.as_str()),
        ("a", "+2 ~0 -0"),
        "{start:?}"
    );
    assert!(must_tip(&env, "a").starts_with(&id), "{start:?}");
    let first = must_tip(&env, "a");

    env.write("tier-a/new.txt", "new content\n");
    let tip_now = w.until("a snapshot holding new.txt in mirror log", |_| {
        log(&env)
            .into_iter()
            .find(|s| s["tier"] == "a" && s["id"] != first.as_str())
            .filter(|_| recorded(&env, "a", "new.txt").is_some())
    });
    assert_eq!(tip_now["trigger"], "watch", "{tip_now:#}");
    assert_eq!(tip_now["stats"], "+1 ~0 -0", "{tip_now:#}");
    assert_eq!(
        recorded(&env, "a", "new.txt").unwrap(),
        b"new content\n".to_vec()
    );
    assert_eq!(commit_count(&env, "a"), 2);
    assert_clean(&env, "after one new file");

    // One stdout line per snapshot: the start one, then this one.
    let lines = w.until("the line of the second snapshot", |w| {
        let l = snapshot_lines(&w.stdout(), "watch");
        (l.len() >= 2).then_some(l)
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (tier, id, stats) =
        recorded_line(&lines[1]).unwrap_or_else(|| panic!("recorded line: {:?}", lines[1]));
    assert_eq!(tier, "a");
    assert_eq!(stats, "+1 ~0 -0");
    assert!(must_tip(&env, "a").starts_with(&id), "{lines:?}");

    let entries = watch_snapshots(&env, "watch");
    assert_eq!(
        entries.len(),
        2,
        "start and change are audited: {entries:#?}"
    );
    assert_eq!(entries[0]["result"], "ok", "{:#}", entries[0]);

    // SIGINT stops it as cleanly as SIGTERM.
    let out = w.stop_with(libc::SIGINT);
    assert_exit(&out, 0, "mirror watch stopped by SIGINT");
    assert_eq!(
        stdout(&out).lines().last(),
        Some("stopping (signal 2)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(commit_count(&env, "a"), 2, "nothing left to record");
    fsck_clean(&env);
}

// ---------------------------------------------------------------------------------------------
// 2. editors' renames, new trees, deletions, ignored paths: the focused snapshot equals a
//    full scan

#[test]
fn atomic_renames_new_nested_directories_and_deletions_equal_a_full_scan() {
    let env = Env::new();
    env.write("tier-a/f.txt", "f v1\n");
    env.write("tier-a/keep/k.txt", "k\n");
    env.write("tier-a/gone.txt", "to be deleted\n");
    env.write("tier-a/.mirrorignore", "*.log\nbuild/\n");
    env.write("tier-a/build/out.o", "ignored from the start\n");
    env.init(&["a=tier-a"]);
    let mut w = Watch::start(&env, &[]);
    assert_clean(&env, "after the start snapshot");
    assert!(
        !files(&env, "a").contains("build/out.o"),
        "{:?}",
        files(&env, "a")
    );

    // An editor's save: write a temporary file, rename it over the original.
    env.write("tier-a/f.txt.tmp", "f v2, saved atomically\n");
    std::fs::rename(env.path("tier-a/f.txt.tmp"), env.path("tier-a/f.txt")).unwrap();
    w.until("the atomic rename to be recorded", |_| {
        (recorded(&env, "a", "f.txt").as_deref() == Some(b"f v2, saved atomically\n".as_slice()))
            .then_some(())
    });
    assert!(
        !files(&env, "a").contains("f.txt.tmp"),
        "{:?}",
        files(&env, "a")
    );
    assert_clean(&env, "after an atomic rename");

    // A new nested directory with a file, made at once.
    mkdir(&env.path("tier-a/n1/n2/n3"));
    write(&env.path("tier-a/n1/n2/n3/x.txt"), "deep\n");
    w.until("the new nested file to be recorded", |_| {
        recorded(&env, "a", "n1/n2/n3/x.txt").map(|_| ())
    });
    assert_clean(&env, "after a new nested directory");

    // A deletion.
    std::fs::remove_file(env.path("tier-a/gone.txt")).unwrap();
    w.until("the deletion to be recorded", |_| {
        (!files(&env, "a").contains("gone.txt")).then_some(())
    });
    assert!(files(&env, "a").contains("keep/k.txt"));
    assert_clean(&env, "after a deletion");

    // Changes only under ignored paths: the watch looks, and records nothing.
    let commits = commit_count(&env, "a");
    let seen = snapshot_lines(&w.stdout(), "watch").len();
    env.write("tier-a/debug.log", "ignored\n");
    env.write("tier-a/build/more.o", "ignored too\n");
    env.write("tier-a/build/out.o", "ignored, changed\n");
    let line = w.until("the snapshot after changes to ignored paths", |w| {
        snapshot_lines(&w.stdout(), "watch").get(seen).cloned()
    });
    assert!(line.starts_with("a unchanged ("), "{line}");
    assert_eq!(commit_count(&env, "a"), commits);
    let recorded_files = files(&env, "a");
    assert!(
        !recorded_files
            .iter()
            .any(|f| f.ends_with(".log") || f.starts_with("build/")),
        "{recorded_files:?}"
    );
    assert_clean(&env, "after changes to ignored paths");
    w.stop();
    assert_full_scan_agrees(&env, "a");
    fsck_clean(&env);
}

#[test]
fn moved_directories_modes_links_and_empty_directories_equal_a_full_scan() {
    let env = Env::new();
    env.write("tier-a/a.txt", "a\n");
    env.write("tier-a/f", "a file that becomes a directory\n");
    env.write("tier-a/d1/sub/x.txt", "x\n");
    env.write("tier-a/d2/y.txt", "y\n");
    env.init(&["a=tier-a"]);
    let mut w = Watch::start(&env, &[]);

    type Step<'a> = (
        &'a str,
        Box<dyn Fn(&Env) + 'a>,
        Box<dyn Fn(&Env) -> bool + 'a>,
    );
    let steps: Vec<Step> = vec![
        (
            "an empty directory made",
            Box::new(|e| mkdir(&e.path("tier-a/empty"))),
            Box::new(|e| {
                let out = e.shadow_git(&["ls-tree", &tier_ref("a"), "empty"]);
                stdout(&out).contains("\tempty")
            }),
        ),
        (
            "a file made executable",
            Box::new(|e| chmod(&e.path("tier-a/a.txt"), 0o755)),
            Box::new(|e| {
                let out = e.shadow_git(&["ls-tree", &tier_ref("a"), "a.txt"]);
                stdout(&out).starts_with("100755 ")
            }),
        ),
        (
            "a symlink made",
            Box::new(|e| symlink("a.txt", &e.path("tier-a/link"))),
            Box::new(|e| recorded(e, "a", "link").as_deref() == Some(b"a.txt".as_slice())),
        ),
        (
            "a file replaced by a directory",
            Box::new(|e| {
                std::fs::remove_file(e.path("tier-a/f")).unwrap();
                e.write("tier-a/f/inside.txt", "now a directory\n");
            }),
            Box::new(|e| recorded(e, "a", "f/inside.txt").is_some()),
        ),
        (
            "a directory moved into another",
            Box::new(|e| std::fs::rename(e.path("tier-a/d1"), e.path("tier-a/d2/d1")).unwrap()),
            Box::new(|e| {
                let f = files(e, "a");
                f.contains("d2/d1/sub/x.txt") && !f.contains("d1/sub/x.txt")
            }),
        ),
        (
            "the empty directory removed",
            Box::new(|e| std::fs::remove_dir(e.path("tier-a/empty")).unwrap()),
            Box::new(|e| {
                let out = e.shadow_git(&["ls-tree", &tier_ref("a"), "empty"]);
                stdout(&out).trim().is_empty()
            }),
        ),
        (
            "a whole subtree removed",
            Box::new(|e| std::fs::remove_dir_all(e.path("tier-a/d2")).unwrap()),
            Box::new(|e| !files(e, "a").iter().any(|f| f.starts_with("d2/"))),
        ),
    ];
    for (what, change, done) in steps {
        change(&env);
        w.until(what, |_| done(&env).then_some(()));
        assert_clean(&env, what);
    }
    w.stop();
    assert_full_scan_agrees(&env, "a");
    fsck_clean(&env);
}

// ---------------------------------------------------------------------------------------------
// 3. a burst

#[test]
fn a_burst_of_5000_writes_makes_one_or_two_snapshots_holding_every_file() {
    const N: usize = 5000;
    let env = Env::new();
    env.write("tier-a/burst/placeholder", "here before the burst\n");
    env.init(&["a=tier-a"]);
    let mut w = Watch::start(&env, &[]);
    let before = commit_count(&env, "a");
    assert_eq!(before, 1);

    let dir = env.path("tier-a/burst");
    for i in 0..N {
        std::fs::write(dir.join(format!("f{i:04}")), format!("file {i}\n")).unwrap();
    }
    let in_burst = |env: &Env| {
        files(env, "a")
            .iter()
            .filter(|f| f.starts_with("burst/f"))
            .count()
    };
    w.until("every file of the burst to be recorded", |_| {
        (in_burst(&env) == N).then_some(())
    });
    let after_burst = commit_count(&env, "a");
    assert_clean(&env, "after the burst");
    assert_eq!(
        recorded(&env, "a", "burst/f4999").as_deref(),
        Some(b"file 4999\n".as_slice())
    );

    // A marker change after the burst: its snapshot comes after every snapshot the burst
    // caused, so the commits before it are the burst's.
    env.write("tier-a/marker.txt", "after the burst\n");
    w.until("the marker after the burst", |_| {
        recorded(&env, "a", "marker.txt").map(|_| ())
    });
    let total = commit_count(&env, "a");
    let burst_commits = total - before - 1;
    assert!(
        (1..=2).contains(&burst_commits),
        "5000 writes made {burst_commits} snapshots (commits: {before} before, {after_burst} when all were in, {total} with the marker)\n{}",
        w.stdout()
    );
    assert_eq!(in_burst(&env), N, "the last snapshot holds all 5000");
    assert_clean(&env, "after the marker");
    w.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. the tier directory deleted and recreated

#[test]
fn a_tier_directory_deleted_and_recreated_is_watched_again_and_its_failure_alerted() {
    let env = project();
    let alerts = configure_alerts(&env, "");
    let mut w = Watch::start(&env, &[]);

    std::fs::remove_dir_all(env.path("tier-a")).unwrap();
    let (alert, vars) = w.until("a snapshot-failed alert for the missing tier", |_| {
        delivered(&alerts, "snapshot-failed")
    });
    check_alert(&env, &alert, &vars, "snapshot-failed", "watch");
    assert!(
        alert["message"].as_str().unwrap().contains("is missing"),
        "{alert:#}"
    );
    assert!(w.stderr().contains("is missing"), "{}", w.stderr());
    assert_eq!(
        commit_count(&env, "a"),
        1,
        "a missing tier is not recorded as deleted"
    );
    // Let the watch's root check (every 5 s) see the directory gone before it comes back.
    std::thread::sleep(Duration::from_secs(11));

    env.write("tier-a/fresh/one.txt", "one\n");
    env.write("tier-a/two.txt", "two\n");
    w.until("the files of the recreated tier to be recorded", |_| {
        let f = files(&env, "a");
        (f.contains("fresh/one.txt") && f.contains("two.txt")).then_some(())
    });
    assert_eq!(
        files(&env, "a"),
        BTreeSet::from(["fresh/one.txt".to_owned(), "two.txt".to_owned()])
    );
    assert_clean(&env, "after the tier came back");

    // Events flow again from the new directory (the interval is an hour).
    env.write("tier-a/fresh/three.txt", "three\n");
    w.until("a change inside the recreated tier", |_| {
        recorded(&env, "a", "fresh/three.txt").map(|_| ())
    });
    assert_clean(&env, "after a change in the recreated tier");
    assert!(
        !alert_entries(&env, "snapshot-failed").is_empty(),
        "the alert is audited"
    );
    let out = w.stop_with(libc::SIGTERM);
    assert!(out.status.code().is_some(), "{:?}", out.status);
    assert!(
        stdout(&out).contains("stopping (signal 15)"),
        "{}",
        stdout(&out)
    );
    fsck_clean(&env);
}

// ---------------------------------------------------------------------------------------------
// 5. a deleted treasure

const KEY: &str = "tier-a/.hidden/key";
const KEY_CONTENT: &str = "-----BEGIN PRETEND KEY-----\nsecret bytes\n-----END PRETEND KEY-----\n";

fn treasure_project() -> Env {
    let env = Env::new();
    env.write("tier-a/a.txt", "a\n");
    env.write(KEY, KEY_CONTENT);
    env.init(&["a=tier-a"]);
    env
}

#[test]
fn with_auto_restore_a_deleted_treasure_is_restored_reported_and_audited() {
    let env = treasure_project();
    append_config(&env, "watch:\n  auto_restore: true\n");
    let alerts = configure_alerts(&env, "");
    let mut w = Watch::start(&env, &[]);
    let recorded_files = files(&env, "a");
    assert!(recorded_files.contains(".hidden/key"), "{recorded_files:?}");

    std::fs::remove_file(env.path(KEY)).unwrap();
    w.until("the treasure to be back on disk", |_| {
        std::fs::read(env.path(KEY))
            .ok()
            .filter(|c| c == KEY_CONTENT.as_bytes())
    });
    let line = w.until("the watch to report the restore", |w| {
        w.stdout()
            .lines()
            .find(|l| is_stamped(l) && l[20..].starts_with("restored "))
            .map(str::to_owned)
    });
    assert!(
        line.contains("restored 1 critical file(s) of tier a") && line.contains(KEY),
        "{line}"
    );
    let entry = w.until("the audit entry of the restore", |_| {
        audited(&env, "restore").into_iter().next()
    });
    assert_eq!(entry["result"], "ok", "{entry:#}");
    assert_eq!(entry["args"][0], "watch", "{entry:#}");
    assert!(
        delivered(&alerts, "critical-missing").is_none(),
        "a restored treasure raises no alert"
    );
    w.until("the tier to be clean again", |_| {
        unclean(&env).is_empty().then_some(())
    });
    assert!(files(&env, "a").contains(".hidden/key"));
    w.stop();
    assert_eq!(env.read(KEY), KEY_CONTENT.as_bytes());
    fsck_clean(&env);
}

#[test]
fn without_auto_restore_a_deleted_treasure_raises_critical_missing_and_stays_gone() {
    let env = treasure_project();
    let alerts = configure_alerts(&env, "");
    let mut w = Watch::start(&env, &[]);
    let seen = snapshot_lines(&w.stdout(), "watch").len();

    std::fs::remove_file(env.path(KEY)).unwrap();
    let (alert, vars) = w.until("the critical-missing alert", |_| {
        delivered(&alerts, "critical-missing")
    });
    check_alert(&env, &alert, &vars, "critical-missing", "watch");
    assert_eq!(alert["tier"], "a", "{alert:#}");
    assert_eq!(alert["paths"], serde_json::json!([KEY]), "{alert:#}");
    assert_eq!(vars["MIRROR_ALERT_PATHS"], KEY);
    assert!(
        w.stderr()
            .contains("CRITICAL: 1 file(s) of tier a are gone"),
        "{}",
        w.stderr()
    );
    // The snapshot after the deletion ran: nothing brought the file back.
    w.until("the snapshot after the deletion", |w| {
        snapshot_lines(&w.stdout(), "watch").get(seen).cloned()
    });
    assert!(
        !env.path(KEY).exists(),
        "no auto_restore: the file stays gone"
    );
    assert!(audited(&env, "restore").is_empty());
    one_alert_entry(&env, "critical-missing", "ok");
    w.stop();
    assert!(!env.path(KEY).exists());
}

// ---------------------------------------------------------------------------------------------
// 6. alerts outside watch

#[test]
fn a_failed_push_runs_the_alert_command_with_json_and_variables_and_is_audited() {
    let env = project();
    let alerts = configure_alerts(&env, "");
    env.ok(&["snapshot"]);
    add_broken_remote(&env);
    let out = env.mirror(&["push"]);
    assert_exit(&out, 1, "push to a broken remote");
    let (alert, vars) = must_be_delivered(&alerts, "push-failed");
    check_alert(&env, &alert, &vars, "push-failed", "push");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .starts_with("push failed: "),
        "{alert:#}"
    );
    assert!(
        alert["message"].as_str().unwrap().contains("bad"),
        "{alert:#}"
    );
    let entry = one_alert_entry(&env, "push-failed", "ok");
    assert_eq!(entry["details"]["alert"]["event"], "push-failed");
    assert_eq!(entry["details"]["delivery"]["ok"], true);
    // Nothing else raised an alert.
    let names: BTreeSet<String> = std::fs::read_dir(&alerts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["push-failed.env".to_owned(), "push-failed.json".to_owned()])
    );
}

#[test]
fn verify_problems_a_failed_snapshot_and_a_failed_hook_snapshot_raise_alerts() {
    let env = Env::new();
    env.write("tier-a/a.txt", "a\n");
    env.write("tier-b/b.txt", "b\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    let alerts = configure_alerts(&env, "");
    env.ok(&["snapshot"]);

    // A snapshot that fails: a tier directory is missing.
    std::fs::remove_dir_all(env.path("tier-b")).unwrap();
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot with a missing tier");
    let (alert, vars) = must_be_delivered(&alerts, "snapshot-failed");
    check_alert(&env, &alert, &vars, "snapshot-failed", "snapshot");
    assert!(
        alert["message"].as_str().unwrap().contains("tier 'b'"),
        "{alert:#}"
    );
    std::fs::remove_file(alerts.join("snapshot-failed.json")).unwrap();
    std::fs::remove_file(alerts.join("snapshot-failed.env")).unwrap();

    // The same from the git hook, which lets git go on.
    let out = env.mirror(&["hook", "pre-commit"]);
    assert_exit(&out, 0, "a failing pre-commit hook snapshot lets git go on");
    let (alert, vars) = must_be_delivered(&alerts, "snapshot-failed");
    check_alert(&env, &alert, &vars, "snapshot-failed", "hook");
    let entries = alert_entries(&env, "snapshot-failed");
    assert_eq!(entries.len(), 2, "{entries:#?}");

    // A verify that finds a corrupt object.
    write(&env.path("tier-b/b.txt"), "b\n");
    corrupt_blob_of(&env, "a", "a.txt");
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 1, "verify of a corrupt shadow");
    let (alert, vars) = must_be_delivered(&alerts, "verify-failed");
    check_alert(&env, &alert, &vars, "verify-failed", "verify");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .starts_with("verify found problems: "),
        "{alert:#}"
    );
    one_alert_entry(&env, "verify-failed", "ok");
}

#[test]
fn a_partial_snapshot_raises_snapshot_partial() {
    let env = project();
    env.write("tier-a/secret.txt", "no access\n");
    let alerts = configure_alerts(&env, "");
    env.ok(&["snapshot"]);
    env.write("tier-a/secret.txt", "no access, changed\n");
    open_up_for_nobody(&env);
    chmod(&env.path("tier-a/secret.txt"), 0o000);
    let out = mirror_unprivileged(&env, &["snapshot"]);
    chmod(&env.path("tier-a/secret.txt"), 0o644);
    assert_exit(&out, 3, "snapshot with an unreadable file");
    let (alert, vars) = must_be_delivered(&alerts, "snapshot-partial");
    check_alert(&env, &alert, &vars, "snapshot-partial", "snapshot");
    assert!(
        alert["message"].as_str().unwrap().contains("partial"),
        "{alert:#}"
    );
    one_alert_entry(&env, "snapshot-partial", "ok");
}

#[test]
fn a_failing_alert_command_is_reported_on_stderr_and_audited_as_failed() {
    let env = project();
    append_config(
        &env,
        "alerts:\n  command: \"echo webhook down >&2; exit 3\"\n",
    );
    env.ok(&["snapshot"]);
    add_broken_remote(&env);
    let out = env.mirror(&["push"]);
    assert_exit(&out, 1, "push to a broken remote");
    let err = stderr(&out);
    assert!(
        err.contains("the alert command for push-failed failed"),
        "{err}"
    );
    assert!(err.contains("webhook down"), "its output is shown:\n{err}");
    let entry = one_alert_entry(&env, "push-failed", "failed");
    assert!(
        entry["error"].as_str().is_some_and(|e| e.contains('3')),
        "{:#}",
        entry
    );
    assert_eq!(entry["details"]["delivery"]["ok"], false);
}

#[test]
fn alerts_events_selects_which_events_run_the_command() {
    let env = project();
    let alerts = configure_alerts(&env, "  events: [verify-failed]\n");
    env.ok(&["snapshot"]);
    add_broken_remote(&env);
    assert_exit(&env.mirror(&["push"]), 1, "push to a broken remote");
    assert!(
        delivered(&alerts, "push-failed").is_none(),
        "push-failed is not selected"
    );
    assert!(alert_entries(&env, "push-failed").is_empty());
    env.ok(&["remote", "remove", "bad"]);

    corrupt_blob_of(&env, "a", "a.txt");
    assert_exit(&env.mirror(&["verify"]), 1, "verify of a corrupt shadow");
    let (alert, vars) = must_be_delivered(&alerts, "verify-failed");
    check_alert(&env, &alert, &vars, "verify-failed", "verify");
    assert_eq!(audited(&env, "alert").len(), 1);
}

#[test]
fn an_unknown_alert_event_is_a_config_error() {
    let env = project();
    append_config(
        &env,
        "alerts:\n  command: \"true\"\n  events: [verify-failed, disk-on-fire]\n",
    );
    for (i, args) in [
        &["status"][..],
        &["snapshot"],
        &["watch", "--debounce", "1s"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = mirror_bounded(&env, args, &format!("config-error-{i}"));
        assert_exit(
            &out,
            1,
            &format!("mirror {} with a bad alerts.events", args.join(" ")),
        );
        let err = stderr(&out);
        assert!(
            err.contains("alerts.events: unknown event 'disk-on-fire'"),
            "{err}"
        );
        assert!(
            err.contains("verify-failed"),
            "lists the known events:\n{err}"
        );
    }
    assert!(tip(&env, "a").is_none());
}

/// `mirror ARGS` run to completion, killed after [`EXIT_LIMIT`] (a watch that should fail at
/// once must not hang the suite).
fn mirror_bounded(env: &Env, args: &[&str], name: &str) -> Output {
    let mut cmd = env.cmd();
    cmd.args(args);
    let Watch { mut proc, out, err } = Watch::spawn(env, cmd, name);
    let status = proc.wait_bounded(EXIT_LIMIT, name);
    Output {
        status,
        stdout: std::fs::read(out).unwrap_or_default(),
        stderr: std::fs::read(err).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// 7. SIGTERM during a snapshot

#[test]
fn sigterm_during_a_snapshot_finishes_it_exits_0_and_leaves_a_valid_repository() {
    const MIB: usize = 100;
    let env = Env::new();
    env.write("tier-a/small.txt", "small\n");
    {
        use std::io::{Read, Write};
        let mut random = std::fs::File::open("/dev/urandom").unwrap();
        let mut big = std::fs::File::create(env.path("tier-a/big.bin")).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..MIB {
            random.read_exact(&mut buf).unwrap();
            big.write_all(&buf).unwrap();
        }
    }
    env.init(&["a=tier-a"]);

    let mut cmd = env.cmd();
    cmd.args(["watch", "--debounce", "1s"]);
    let mut w = Watch::spawn(&env, cmd, "watch");
    // The first line comes once the signal handlers are installed, just before the start
    // snapshot of 100 MiB begins.
    w.until("the first line", |w| {
        w.stdout().starts_with("watching ").then_some(())
    });
    let out = w.stop_with(libc::SIGTERM);
    assert_exit(
        &out,
        0,
        "mirror watch stopped by SIGTERM during its snapshot",
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"stopping (signal 15)"), "{text}");
    // The snapshot in progress was finished, not abandoned.
    let snaps = snapshot_lines(&text, "watch");
    assert_eq!(snaps.len(), 1, "{text}");
    assert!(recorded_line(&snaps[0]).is_some(), "{text}");
    let out = env.shadow_git(&["cat-file", "-s", &format!("{}:big.bin", tier_ref("a"))]);
    assert_exit(&out, 0, "big.bin is recorded");
    assert_eq!(stdout(&out).trim(), (MIB << 20).to_string());
    fsck_clean(&env);
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 0, "mirror verify after SIGTERM");
    assert!(stdout(&out).starts_with("verify: OK"), "{}", stdout(&out));
    assert_clean(&env, "after SIGTERM");
    let entries = watch_snapshots(&env, "watch");
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["result"], "ok");
}

// ---------------------------------------------------------------------------------------------
// 8. out of inotify watches

#[test]
fn when_inotify_watches_run_out_it_says_so_and_falls_back_to_scanning() {
    let env = Env::new();
    let mut deep = String::from("tier-a");
    for i in 0..12 {
        deep.push_str(&format!("/d{i}"));
        env.write(&format!("{deep}/f.txt"), format!("level {i}\n"));
    }
    env.init(&["a=tier-a"]);

    // A user namespace of our own has its own inotify watch limit.
    let mut probe = Command::new("unshare");
    probe
        .args([
            "-Ur",
            "sh",
            "-c",
            "echo 3 > /proc/sys/user/max_inotify_watches",
        ])
        .stdin(Stdio::null());
    let probed = probe.output();
    let usable = matches!(&probed, Ok(o) if o.status.success());
    assert!(
        usable,
        "this test needs `unshare -Ur` (a user namespace) to lower the inotify watch limit: {}",
        match &probed {
            Ok(o) => format!("{} {}", o.status, stderr(o)),
            Err(e) => e.to_string(),
        }
    );

    let mut cmd = Command::new("unshare");
    env.isolate(&mut cmd);
    cmd.current_dir(&env.project).args([
        "-Ur",
        "sh",
        "-c",
        "echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" watch --debounce 1s --interval 5s",
        env!("CARGO_BIN_EXE_mirror"),
    ]);
    let mut w = Watch::spawn(&env, cmd, "watch-limited");
    let err = w.until("the warning that the watch limit was reached", |w| {
        let e = w.stderr();
        e.contains("falling back to scanning every 5s").then_some(e)
    });
    assert!(
        err.contains("the kernel's limit of inotify watches was reached"),
        "{err}"
    );
    assert!(
        err.contains("max_user_watches"),
        "says what to raise:\n{err}"
    );
    w.until("the snapshot taken at start", |w| {
        (!snapshot_lines(&w.stdout(), "watch").is_empty()).then_some(())
    });

    // A change deep down, where no watch reaches: found by the fallback scan.
    let path = format!("{deep}/new.txt");
    env.write(&path, "found by scanning\n");
    let rel = path.strip_prefix("tier-a/").unwrap().to_owned();
    w.until("the change to be recorded by the fallback scan", |w| {
        let reported = snapshot_lines(&w.stdout(), "watch-interval")
            .iter()
            .any(|l| recorded_line(l).is_some());
        (reported && recorded(&env, "a", &rel).is_some()).then_some(())
    });
    w.assert_running("the fallback");
    assert_clean(&env, "after the fallback scan");
    w.stop();
}

// ---------------------------------------------------------------------------------------------
// 9. pushes after snapshots, batched

#[test]
fn pushes_after_snapshots_are_batched_and_the_remote_gets_the_latest_tip() {
    let env = project();
    let usb = env.root().join("usb.git");
    let mut git = Command::new("git");
    env.isolate(&mut git);
    let out = git
        .args(["init", "-q", "--bare"])
        .arg(&usb)
        .output()
        .unwrap();
    assert!(out.status.success(), "git init --bare: {}", stderr(&out));
    env.ok(&["remote", "add", "usb", usb.to_str().unwrap()]);
    append_config(&env, "push:\n  after_snapshot: true\n");
    let remote_tip = |env: &Env| {
        let mut cmd = Command::new("git");
        env.isolate(&mut cmd);
        let out = cmd
            .arg(format!("--git-dir={}", usb.display()))
            .args(["rev-parse", "--verify", "-q", &tier_ref("a")])
            .output()
            .unwrap();
        out.status.success().then(|| stdout(&out).trim().to_owned())
    };

    let mut w = Watch::start(&env, &[]);
    for i in 1..=3 {
        let before = commit_count(&env, "a");
        env.write(&format!("tier-a/change{i}.txt"), format!("change {i}\n"));
        w.until(&format!("the snapshot of change {i}"), |_| {
            (commit_count(&env, "a") > before).then_some(())
        });
    }
    let latest = must_tip(&env, "a");
    let recording = commit_count(&env, "a");
    assert_eq!(recording, 4, "start snapshot and three changes");
    w.until_within(
        Duration::from_secs(90),
        "the remote to get the latest tip",
        &mut |_| (remote_tip(&env).as_deref() == Some(latest.as_str())).then_some(()),
    );
    let pushes: Vec<Value> = audited(&env, "push");
    assert!(
        !pushes.is_empty() && pushes.len() <= 2 && pushes.len() < recording,
        "{} pushes for {recording} recording snapshots: {pushes:#?}",
        pushes.len()
    );
    for p in &pushes {
        assert_eq!(p["result"], "ok", "{p:#}");
        assert_eq!(p["args"], serde_json::json!(["push", "--after-snapshot"]));
    }
    w.stop();
    assert_eq!(remote_tip(&env).as_deref(), Some(latest.as_str()));
}

// ---------------------------------------------------------------------------------------------
// 10. mirror schedule

#[test]
fn schedule_install_cron_prints_the_crontab_line_and_notes_rounding() {
    let env = project();
    let bin = env!("CARGO_BIN_EXE_mirror");
    let project = env.project.display().to_string();

    let out = env.mirror(&["schedule", "install", "--cron"]);
    assert_exit(&out, 0, "schedule install --cron");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    assert!(line.contains("snapshot --trigger cron"), "{line}");
    assert!(line.contains(&format!("'{project}'")), "{line}");
    assert!(line.contains(&format!("'{bin}'")), "{line}");
    assert!(line.starts_with("17 * * * * "), "hourly by default: {line}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));

    let out = env.mirror(&["schedule", "install", "--cron", "--interval", "7m"]);
    assert_exit(&out, 0, "schedule install --cron --interval 7m");
    let line = stdout(&out);
    assert!(line.starts_with("*/6 * * * * "), "{line}");
    assert!(line.contains("snapshot --trigger cron"), "{line}");
    let err = stderr(&out);
    assert!(
        err.contains("cron cannot run every 7m evenly; the line runs every 6m"),
        "{err}"
    );
    // Nothing is installed by --cron.
    assert!(!env.home.join("config/systemd").exists());
}

/// A directory holding a fake `systemctl` that appends its arguments to `log` and exits
/// with `code` (printing `message` on stderr).
fn fake_systemctl(env: &Env, log: &Path, code: i32, message: &str) -> PathBuf {
    let dir = env.root().join(format!("fake-bin-{code}"));
    mkdir(&dir);
    let script = dir.join("systemctl");
    write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\necho '{message}' >&2\nexit {code}\n",
            log.display()
        ),
    );
    chmod(&script, 0o755);
    dir
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_owned()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// The one unit file in `$XDG_CONFIG_HOME/systemd/user/`.
fn unit_file(env: &Env) -> PathBuf {
    let dir = env.home.join("config/systemd/user");
    let units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(units.len(), 1, "{units:?}");
    let unit = units[0].clone();
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("mirror-watch-project-") && name.ends_with(".service"),
        "{name}"
    );
    unit
}

#[test]
fn schedule_install_without_a_systemd_session_writes_the_unit_and_says_how_to_enable_it() {
    let env = project();
    let calls = env.root().join("systemctl.calls");
    let no_session = fake_systemctl(&env, &calls, 1, "Failed to connect to bus: No medium found");

    let out = env
        .cmd()
        .env("PATH", path_with(&no_session))
        .args(["schedule", "install", "--interval", "30m"])
        .output()
        .unwrap();
    assert_exit(&out, 1, "schedule install without a user session");
    let unit = unit_file(&env);
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stdout(&out).contains(&format!("wrote {}", unit.display())),
        "{}",
        stdout(&out)
    );
    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in:\n{text}"));
    assert_eq!(
        exec,
        format!(
            "ExecStart=\"{}\" -C \"{}\" watch --interval \"30m\"",
            env!("CARGO_BIN_EXE_mirror"),
            env.project.display()
        ),
        "{text}"
    );
    assert!(
        text.contains("[Install]\nWantedBy=default.target"),
        "{text}"
    );
    let err = stderr(&out);
    assert!(err.contains("Failed to connect to bus"), "{err}");
    assert!(
        err.contains(&format!(
            "systemctl --user daemon-reload && systemctl --user enable --now {name}"
        )),
        "says how to enable it:\n{err}"
    );

    // Remove, with no systemctl at all: the service cannot be disabled, so the file stays
    // (its `wants` link would dangle otherwise) and the message says what to do.
    let empty = env.root().join("empty-bin");
    mkdir(&empty);
    let out = env
        .cmd()
        .env("PATH", &empty)
        .args(["schedule", "remove"])
        .output()
        .unwrap();
    assert_exit(&out, 1, "schedule remove without systemctl");
    assert!(
        unit.exists(),
        "the unit file stays while the service may still run"
    );
    assert!(
        stderr(&out).contains(&format!("systemctl --user disable --now {name}")),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("is left in place"),
        "{}",
        stderr(&out)
    );
    // With systemd reachable (a fake that succeeds) it goes; then nothing is left to remove.
    let calls = env.root().join("remove.calls");
    let fake = fake_systemctl(&env, &calls, 0, "");
    let out = env
        .cmd()
        .env("PATH", path_with(&fake))
        .args(["schedule", "remove"])
        .output()
        .unwrap();
    assert_exit(&out, 0, "schedule remove");
    assert!(!unit.exists(), "the unit file is removed");
    assert!(
        stdout(&out).contains(&format!("removed {}", unit.display())),
        "{}",
        stdout(&out)
    );
    let out = env
        .cmd()
        .env("PATH", &empty)
        .args(["schedule", "remove"])
        .output()
        .unwrap();
    assert_exit(&out, 0, "schedule remove with nothing installed");
    assert!(
        stdout(&out).contains("no service installed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn schedule_install_and_remove_run_systemctl_user() {
    let env = project();
    let calls = env.root().join("systemctl.calls");
    let fake = fake_systemctl(&env, &calls, 0, "");

    let out = env
        .cmd()
        .env("PATH", path_with(&fake))
        .args(["schedule", "install"])
        .output()
        .unwrap();
    assert_exit(&out, 0, "schedule install with systemctl");
    let unit = unit_file(&env);
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart=\"{}\" -C \"{}\" watch\n",
            env!("CARGO_BIN_EXE_mirror"),
            env.project.display()
        )),
        "{text}"
    );
    assert!(
        stdout(&out).contains(&format!("enabled {name}")),
        "{}",
        stdout(&out)
    );
    let seen = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        vec![
            "--user daemon-reload".to_owned(),
            format!("--user enable {name}"),
            // A reinstall (say, a new --interval) must replace a running service.
            format!("--user restart {name}")
        ],
        "{seen}"
    );

    std::fs::remove_file(&calls).unwrap();
    let out = env
        .cmd()
        .env("PATH", path_with(&fake))
        .args(["schedule", "remove"])
        .output()
        .unwrap();
    assert_exit(&out, 0, "schedule remove with systemctl");
    assert!(!unit.exists());
    let seen = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        vec![
            format!("--user disable --now {name}"),
            "--user daemon-reload".to_owned()
        ],
        "{seen}"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. interval snapshots

#[test]
fn interval_snapshots_run_without_changes_and_record_nothing_new() {
    let env = project();
    let mut w = Watch::start(&env, &["--interval", "3s"]);
    let first = w.stdout();
    assert!(
        first.lines().next().unwrap().contains("and every 3s"),
        "{first}"
    );
    let commits = commit_count(&env, "a");
    assert_eq!(commits, 1);
    let entries = w.until("two interval snapshots in the audit trail", |_| {
        let e = watch_snapshots(&env, "watch-interval");
        (e.len() >= 2).then_some(e)
    });
    for e in &entries {
        assert_eq!(e["result"], "ok", "{e:#}");
        assert_eq!(e["details"][0]["outcome"], "unchanged", "{e:#}");
    }
    assert_eq!(
        commit_count(&env, "a"),
        commits,
        "nothing changed, nothing recorded"
    );
    assert!(
        log(&env).iter().all(|s| s["trigger"] != "watch-interval"),
        "{:#?}",
        log(&env)
    );
    let lines = snapshot_lines(&w.stdout(), "watch-interval");
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("a unchanged (")),
        "{lines:?}"
    );
    w.stop();
}

// ---------------------------------------------------------------------------------------------
// review findings

/// Wait until the watch recorded a new snapshot of `tier` (its tip moved from `before`).
fn until_new_tip(w: &mut Watch, env: &Env, tier: &str, before: &Option<String>, what: &str) {
    w.until(what, |_| (tip(env, tier) != *before).then_some(()));
}

// Proves: editing `.mirrorignore` while watching gives the same tree as a full scan, both
// when it starts and when it stops leaving files out.
#[test]
fn an_edited_mirrorignore_gives_the_tree_a_full_scan_would() {
    let env = project();
    env.write("tier-a/d/secret.log", "log\n");
    env.write("tier-a/d/keep.txt", "keep\n");
    let mut w = Watch::start(&env, &[]);
    let before = tip(&env, "a");
    env.write("tier-a/d/.mirrorignore", "*.log\n");
    until_new_tip(
        &mut w,
        &env,
        "a",
        &before,
        "the snapshot after adding *.log",
    );
    assert_clean(&env, "after .mirrorignore started excluding *.log");
    assert!(!files(&env, "a").contains("d/secret.log"));
    let before = tip(&env, "a");
    env.write("tier-a/d/.mirrorignore", "# nothing\n");
    until_new_tip(&mut w, &env, "a", &before, "the snapshot after emptying it");
    assert_clean(&env, "after .mirrorignore stopped excluding *.log");
    assert!(files(&env, "a").contains("d/secret.log"));
    w.stop();
}

// Proves: a treasure pattern added to mirror.yaml while watching applies to the next
// snapshot: the new treasure is never stored in plaintext.
#[test]
fn a_treasure_pattern_added_while_watching_is_encrypted_at_once() {
    let env = project();
    let mut w = Watch::start(&env, &[]);
    let yaml = String::from_utf8(env.read("mirror.yaml")).unwrap();
    assert!(yaml.contains("treasures:\n"), "{yaml}");
    env.write(
        "mirror.yaml",
        yaml.replacen("treasures:\n", "treasures:\n- '*.secret'\n", 1),
    );
    let before = tip(&env, "a");
    env.write("tier-a/db.secret", "password=hunter2\n");
    until_new_tip(&mut w, &env, "a", &before, "the snapshot of db.secret");
    let blob = recorded(&env, "a", "db.secret").expect("db.secret recorded");
    assert!(
        blob.starts_with(b"age-encryption.org/v1"),
        "stored encrypted, not as {:?}",
        String::from_utf8_lossy(&blob)
    );
    assert_eq!(env.age_decrypt(&blob), b"password=hunter2\n");
    assert!(
        w.stdout().contains("mirror.yaml changed: loaded again"),
        "{}",
        w.stdout()
    );
    w.stop();
}

// Proves: a treasure deleted while no watch ran is restored by the first snapshot of the next
// watch (auto_restore), not recorded as deleted.
#[test]
fn a_treasure_deleted_before_the_watch_started_is_restored_at_start() {
    let env = project();
    env.write("tier-a/.hidden/key", "the key\n");
    env.ok(&["snapshot"]);
    append_config(&env, "watch:\n  auto_restore: true\n");
    std::fs::remove_file(env.path("tier-a/.hidden/key")).unwrap();
    let w = Watch::start(&env, &[]);
    assert_eq!(env.read("tier-a/.hidden/key"), b"the key\n");
    assert!(files(&env, "a").contains(".hidden/key"), "still recorded");
    let out = w.stop();
    assert!(
        stdout(&out).contains("restored 1 critical file(s)"),
        "{}",
        stdout(&out)
    );
}

// Proves: with auto_restore, a whole tier directory gone is not "restored" file by file (which
// would record every other file as deleted): the treasure stays in the history, nothing is
// recorded as deleted, and the alert names it.
#[test]
fn auto_restore_does_not_rebuild_a_vanished_tier_from_its_treasures() {
    let env = project();
    env.write("tier-a/.hidden/key", "k\n");
    env.write("tier-a/src/f1", "1\n");
    env.ok(&["snapshot"]);
    let alerts = env.root().join("alerts");
    mkdir(&alerts);
    append_config(
        &env,
        &format!(
            "watch:\n  auto_restore: true\nalerts:\n  command: \"cat > {}/$MIRROR_ALERT_EVENT.json\"\n",
            alerts.display()
        ),
    );
    let mut w = Watch::start(&env, &[]);
    let recorded_before = files(&env, "a");
    std::fs::remove_dir_all(env.path("tier-a")).unwrap();
    w.until("the critical-missing alert", |_| {
        alerts.join("critical-missing.json").exists().then_some(())
    });
    assert!(!env.path("tier-a").exists(), "nothing was recreated");
    assert_eq!(files(&env, "a"), recorded_before, "no deletion recorded");
    // A snapshot failed during the session (the missing tier, the lock): exit 1.
    w.stop_after_a_failure();
}

// Proves: a nested tier is looked at again when the directory of the tier around it is
// replaced (deleted and recreated) while watching.
#[test]
fn a_nested_tier_is_rescanned_when_its_outer_root_is_replaced() {
    let env = Env::new();
    env.write("outer/o1", "o\n");
    env.write("outer/inner/i1", "i\n");
    env.init(&["o=outer", "i=outer/inner"]);
    env.ok(&["snapshot"]);
    let mut w = Watch::start(&env, &[]);
    std::fs::remove_dir_all(env.path("outer")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    env.write("outer/o2", "o2\n");
    env.write("outer/inner/i2", "i2\n");
    w.until("both tiers recorded again", |_| {
        (files(&env, "o").contains("o2") && files(&env, "i").contains("i2")).then_some(())
    });
    assert_clean(&env, "after the outer root was replaced");
    // A snapshot failed during the session (the missing tier, the lock): exit 1.
    w.stop_after_a_failure();
}

// Proves: a snapshot that fails (the lock is held past MIRROR_LOCK_TIMEOUT) keeps its changes
// pending: they are recorded once the lock is free, without waiting for the interval.
#[test]
fn changes_survive_a_snapshot_that_could_not_take_the_lock() {
    let env = project();
    let mut cmd = env.cmd();
    cmd.env("MIRROR_LOCK_TIMEOUT", "2")
        .args(["watch", "--debounce", "1s"]);
    let mut w = Watch::spawn(&env, cmd, "watch");
    w.until("the snapshot taken at start", |w| {
        (!snapshot_lines(&w.stdout(), "watch").is_empty()).then_some(())
    });
    let lock = env.shadow.join("mirror/lock");
    let mut holder = Proc::spawn(
        Command::new("flock")
            .arg(&lock)
            .args(["sleep", "6"])
            .stdin(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(300));
    env.write("tier-a/late.txt", "late\n");
    w.until("the failed snapshot", |w| {
        w.stderr().contains("snapshot failed").then_some(())
    });
    holder.wait_bounded(Duration::from_secs(30), "flock");
    w.until("late.txt recorded after the lock was free", |_| {
        files(&env, "a").contains("late.txt").then_some(())
    });
    // A snapshot failed during the session (the missing tier, the lock): exit 1.
    w.stop_after_a_failure();
}

// Proves: an `exclude:` pattern matching a directory *above* a tier root (here `build/`, with
// the tier at `build/release`) does not drop that tier's events: the walk never judges the
// tier root or what lies above it, and neither does the watch.
#[test]
fn an_exclude_above_a_tier_root_does_not_hide_that_tiers_changes() {
    let env = Env::new();
    env.write("src/main.rs", "fn main() {}\n");
    env.write("build/release/r1.txt", "r1\n");
    env.init(&["src=src", "rel=build/release"]);
    append_config(&env, "exclude:\n- build/\n");
    env.ok(&["snapshot"]);
    assert!(
        files(&env, "rel").contains("r1.txt"),
        "the tier itself is recorded"
    );
    let mut w = Watch::start(&env, &[]);
    env.write("build/release/r2.txt", "r2\n");
    w.until("r2.txt recorded", |_| {
        files(&env, "rel").contains("r2.txt").then_some(())
    });
    assert_clean(&env, "after a change in a tier below an excluded directory");
    w.stop();
}

// Review: a file `build` (recorded: the exclude `build/` only matches directories) replaced
// by an excluded directory `build`. The events are judged by what is at the path when they
// are handled (a directory), so they are dropped, and the watch never records the deletion
// that a full scan records.
#[test]
fn a_file_replaced_by_an_excluded_directory_is_recorded_as_deleted() {
    let env = Env::new();
    env.write("tier-a/build", "a file named build\n");
    env.write("tier-a/k.txt", "k\n");
    env.init(&["a=tier-a"]);
    append_config(&env, "exclude:\n- build/\n");
    env.ok(&["snapshot"]);
    assert!(files(&env, "a").contains("build"));
    std::thread::sleep(Duration::from_millis(1500));
    let mut w = Watch::start(&env, &[]);
    // Hold the watch so that it handles the events only once `build` is a directory.
    w.signal(libc::SIGSTOP);
    std::fs::remove_file(env.path("tier-a/build")).unwrap();
    env.write("tier-a/build/x.o", "ignored\n");
    let before = tip(&env, "a");
    env.write("tier-a/k.txt", "k2\n");
    w.signal(libc::SIGCONT);
    until_new_tip(&mut w, &env, "a", &before, "the snapshot after the change");
    w.stop();
    assert_clean(&env, "after a file was replaced by an excluded directory");
}

// Review: the walk records directories whose names start with `.mirror-tmp-` (only checkout's
// temporary *files* are skipped), but `watch::locate` drops every event below such a
// component, so the watch never records what a full scan records there.
#[test]
fn files_below_a_directory_named_like_a_checkout_temp_are_recorded() {
    let env = project();
    std::thread::sleep(Duration::from_millis(1500));
    let mut w = Watch::start(&env, &[]);
    env.write("tier-a/.mirror-tmp-work/data.txt", "precious\n");
    let before = tip(&env, "a");
    env.write("tier-a/a.txt", "a v2\n");
    until_new_tip(&mut w, &env, "a", &before, "the snapshot after the change");
    w.stop();
    assert_clean(&env, "after a file was written below .mirror-tmp-work/");
}

// Review: a file that could never be read has no stat-cache entry, so nothing made the
// snapshots after events look at it again: their commits claimed a complete backup (no
// `Mirror-Partial`) while a full scan's says partial. The unreadable paths of each snapshot
// are now looked at again by the next one.
#[test]
fn a_file_that_cannot_be_read_keeps_every_snapshot_after_events_partial() {
    let env = project();
    env.write("tier-a/locked.txt", "no access\n");
    open_up_for_nobody(&env);
    chmod(&env.path("tier-a/locked.txt"), 0o000);
    let mut cmd = unprivileged_cmd(&env);
    cmd.args(["watch", "--debounce", "1s"]);
    let mut w = Watch::spawn(&env, cmd, "watch-unprivileged");
    w.until("the snapshot taken at start", |w| {
        (!snapshot_lines(&w.stdout(), "watch").is_empty()).then_some(())
    });
    for round in 1..=2 {
        let before = tip(&env, "a");
        env.write("tier-a/a.txt", format!("a v{}\n", round + 1));
        until_new_tip(&mut w, &env, "a", &before, "the snapshot after a change");
        let out = env.shadow_git(&["log", "-1", "--format=%B", &tier_ref("a")]);
        let message = stdout(&out);
        assert!(
            message.lines().any(|l| l == "Mirror-Partial: 1") && message.contains("locked.txt"),
            "round {round}: the snapshot after events must say what it could not read:\n{message}"
        );
    }
    let out = w.stop_with(libc::SIGTERM);
    chmod(&env.path("tier-a/locked.txt"), 0o644);
    assert_exit(&out, 3, "a watch whose snapshots were partial");
    let partial = stderr(&out).matches("snapshot is partial").count();
    assert_eq!(partial, 3, "every snapshot says so: {}", stderr(&out));
}
