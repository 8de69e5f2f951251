//! `mirror watch`

use std::time::{Duration, Instant};

use mirror::audit::Outcome;
use mirror::snapshot::{EmptyPolicy, Options};
use mirror::watch::{classify, Msg, Pending, Seen, Watcher};

use super::{open_project, Context, Exit};

/// Keep the history current: snapshot when files change (after a quiet period) and in any
/// case every --interval, until SIGINT or SIGTERM.
///
/// A snapshot after filesystem events re-examines only the paths the events named; the
/// periodic one scans everything. A critical file that disappears is restored at once with
/// `watch: {auto_restore: true}`, or raises a `critical-missing` alert. With `push:
/// {after_snapshot: true}` it pushes after snapshots, at most once a minute.
#[derive(clap::Args)]
pub struct Args {
    /// Full snapshot at least this often (default: `schedule.interval` in mirror.yaml, or 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    interval: Option<Duration>,

    /// Snapshot once the tiers were quiet this long after a change.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    debounce: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    mirror::config::parse_duration(text)
}

/// A tree that never goes quiet is still recorded this long after its first change.
const MAX_WAIT_FACTOR: u32 = 30;
/// Tier roots are checked this often for having been deleted, recreated or replaced.
const ROOT_CHECK: Duration = Duration::from_secs(5);
/// At most one automatic push per this period.
const PUSH_EVERY: Duration = Duration::from_secs(60);

struct Loop<'a> {
    ctx: &'a Context,
    project: mirror::project::Project,
    shadow: mirror::store::Shadow,
    /// Per tier, to drop events for excluded paths.
    filters: TierFilters,
    /// mirror.yaml changed and was loaded again: the watcher must be rebuilt.
    config_changed: bool,
    /// The last error loading mirror.yaml (reported once).
    config_error: Option<String>,
    pending: Pending,
    /// An event named a path that no longer exists: check for missing critical files.
    vanished: bool,
    /// Missing critical paths already alerted about (not again until they come back).
    alerted: std::collections::BTreeSet<String>,
    last_push: Option<Instant>,
    push_due: Option<Instant>,
    exit: Exit,
    debounce: Duration,
    interval: Duration,
    /// Snapshots failed in a row, and when to try again.
    streak: u32,
    retry_at: Option<Instant>,
    /// The unreadable paths of the last snapshot (a partial alert only when they change).
    last_unreadable: std::collections::BTreeSet<String>,
    /// The tiers' stat caches, kept between snapshots (see `snapshot::Held`).
    held: mirror::snapshot::Held,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, shadow) = open_project(ctx)?;
    let interval = args
        .interval
        .unwrap_or_else(|| project.config.schedule.interval());
    let debounce = args.debounce;
    let max_wait = (debounce * MAX_WAIT_FACTOR).max(Duration::from_secs(60));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = Watcher::start(&project, tx.clone())?;
    let stop = tx.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if stop.send(Msg::Stop(signal)).is_err() {
                    break;
                }
            }
        })?;
    let tiers: Vec<String> = project.config.tier_names();
    match watcher.degraded() {
        None => println!(
            "watching {} tier(s): snapshot {} after a change, and every {}; Ctrl-C stops",
            tiers.len(),
            humantime::format_duration(debounce),
            humantime::format_duration(interval)
        ),
        Some(why) => warn_degraded(why, interval),
    }
    let filters = tier_filters(&project)?;
    let mut state = Loop {
        ctx,
        project,
        shadow,
        filters,
        config_changed: false,
        config_error: None,
        pending: Pending::default(),
        // Critical files deleted while nobody watched are found by the first snapshot.
        vanished: true,
        alerted: Default::default(),
        last_push: None,
        push_due: None,
        exit: Exit::Ok,
        debounce,
        interval,
        streak: 0,
        retry_at: None,
        last_unreadable: Default::default(),
        held: Default::default(),
    };
    // Whatever changed while nobody watched.
    state.snapshot(&tiers, Default::default(), "watch", false);
    let mut next_full = Instant::now() + full_period(&watcher, interval);
    let mut next_root_check = Instant::now() + ROOT_CHECK;
    loop {
        let mut deadline = next_full.min(next_root_check);
        if let Some(due) = state.due(max_wait) {
            deadline = deadline.min(due);
        }
        if let Some(due) = state.push_due {
            deadline = deadline.min(due);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        // `tx` lives here, so the channel never disconnects: an error is the deadline passing.
        match rx.recv_timeout(wait).ok() {
            Some(Msg::Stop(signal)) => {
                println!("stopping (signal {signal})");
                break;
            }
            Some(Msg::Fs(event)) => {
                match classify(event) {
                    Seen::Paths { paths, removed } => {
                        for p in &paths {
                            if watcher.forget_if_root(p, removed) {
                                // Looked at again right away, not at the next check only.
                                next_root_check = Instant::now();
                            }
                        }
                        state.changed(&paths)
                    }
                    Seen::Nothing => {}
                    Seen::Rescan => {
                        eprintln!("warning: filesystem events were lost; the next snapshot scans everything");
                        for t in state.project.config.tier_names() {
                            state.pending.whole(&t, Instant::now());
                        }
                        state.vanished = true;
                    }
                    Seen::LimitReached(e) => {
                        watcher.degrade(format!(
                        "the kernel's limit of inotify watches was reached ({e}); raise fs.inotify.max_user_watches"
                    ));
                        warn_degraded(watcher.degraded().unwrap_or_default(), interval);
                        next_full = next_full.min(Instant::now() + full_period(&watcher, interval));
                    }
                    Seen::Error(e) => {
                        eprintln!("warning: file watcher: {e}; the next snapshot scans everything");
                        for t in state.project.config.tier_names() {
                            state.pending.whole(&t, Instant::now());
                        }
                    }
                }
            }
            None => {}
        }
        let now = Instant::now();
        if now >= next_root_check {
            let was_degraded = watcher.degraded().is_some();
            for root in watcher.check_roots() {
                for t in tiers_under(&state.project, &root) {
                    state.pending.whole(&t, now);
                    state.vanished = true;
                }
            }
            if !was_degraded {
                if let Some(why) = watcher.degraded() {
                    warn_degraded(why, interval);
                    next_full = next_full.min(now + full_period(&watcher, interval));
                }
            }
            next_root_check = now + ROOT_CHECK;
        }
        if now >= next_full {
            state.pending = Pending::default();
            state.vanished = true;
            let all = state.project.config.tier_names();
            state.snapshot(&all, Default::default(), "watch-interval", false);
            next_full = Instant::now() + full_period(&watcher, interval);
        } else if state.due(max_wait).is_some_and(|d| now >= d) {
            let (dirty, focus) = state.pending.take();
            state.snapshot(&dirty, focus, "watch", true);
        }
        if state.push_due.is_some_and(|d| Instant::now() >= d) {
            state.push();
        }
        if std::mem::take(&mut state.config_changed) {
            // Tiers may have come or gone: watch what the new configuration names.
            watcher = Watcher::start(&state.project, tx.clone())?;
            if let Some(why) = watcher.degraded() {
                warn_degraded(why, interval);
            }
            next_full = Instant::now() + full_period(&watcher, interval);
        }
    }
    // Changes not recorded yet are recorded before leaving. A push that was held back is not
    // made: a remote that does not answer must not keep a stopped watch alive.
    if !state.pending.is_empty() {
        let (dirty, focus) = state.pending.take();
        state.snapshot(&dirty, focus, "watch", true);
    }
    if state.push_due.is_some() {
        eprintln!("note: a push was due; run `mirror push` to send the latest snapshots");
    }
    Ok(state.exit)
}

/// Each tier's root and filters, to drop events for excluded paths before they cost a
/// snapshot.
type TierFilters = std::collections::HashMap<String, (std::path::PathBuf, mirror::walk::Filters)>;

fn tier_filters(project: &mirror::project::Project) -> anyhow::Result<TierFilters> {
    project
        .config
        .tiers
        .iter()
        .map(|t| Ok((t.name.clone(), (project.tier_root(t), project.filters(t)?))))
        .collect()
}

fn full_period(watcher: &Watcher, interval: Duration) -> Duration {
    match watcher.degraded() {
        Some(_) => mirror::watch::fallback_period(interval),
        None => interval,
    }
}

fn warn_degraded(why: &str, interval: Duration) {
    eprintln!(
        "warning: {why}; falling back to scanning every {}",
        humantime::format_duration(mirror::watch::fallback_period(interval))
    );
}

/// Every tier at or below `root` (a watched root covers the tiers nested in it).
fn tiers_under(project: &mirror::project::Project, root: &std::path::Path) -> Vec<String> {
    project
        .config
        .tiers
        .iter()
        .filter(|t| project.tier_root(t).starts_with(root))
        .map(|t| t.name.clone())
        .collect()
}

impl Loop<'_> {
    /// When the pending changes are to be recorded: after the quiet period, and not before
    /// the retry time of a failed snapshot.
    fn due(&self, max_wait: Duration) -> Option<Instant> {
        let due = self.pending.due(self.debounce, max_wait)?;
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }

    fn changed(&mut self, paths: &[std::path::PathBuf]) {
        let now = Instant::now();
        for path in paths {
            let Some((tier, rel)) = mirror::watch::locate(&self.project, &self.shadow.path, path)
            else {
                continue;
            };
            let md = path.symlink_metadata();
            let is_dir = md.as_ref().is_ok_and(|m| m.is_dir());
            // What is at the path now may not be what the event was about (a recorded file
            // replaced by an excluded directory of the same name): an event is dropped only
            // when the path is excluded whatever it is.
            if self.filters.get(&tier).is_some_and(|(root, f)| {
                f.excludes(root, path, is_dir) && f.excludes(root, path, !is_dir)
            }) {
                continue;
            }
            if md.is_err() {
                self.vanished = true;
            }
            self.pending.path(&tier, rel, now);
        }
    }

    /// Restore or report missing critical files, then snapshot `tiers` (re-examining only the
    /// `focus` paths of the tiers it names) and log one line.
    fn snapshot(
        &mut self,
        tiers: &[String],
        focus: std::collections::HashMap<String, Vec<gix::bstr::BString>>,
        trigger: &str,
        event_driven: bool,
    ) {
        let (tiers, focus) = if self.reload_config() {
            // New patterns, excludes or tiers: every tier is looked at whole.
            let all: Vec<String> = self.project.config.tier_names();
            (all, Default::default())
        } else {
            (tiers.to_vec(), focus)
        };
        let tiers = &tiers[..];
        if std::mem::take(&mut self.vanished) {
            self.critical();
        }
        let started = Instant::now();
        let (outcome, mut alerts) = self.record(tiers, focus, trigger, event_driven);
        // Tiers not recorded keep their changes pending (scanned whole next time), retried
        // with a growing delay; a failure alerts once per streak, not at every retry.
        let failed: Vec<String> = match &outcome {
            Err(_) => tiers.to_vec(),
            Ok((_, out)) => out
                .iter()
                .filter(|t| t.error.is_some())
                .map(|t| t.tier.clone())
                .collect(),
        };
        if failed.is_empty() {
            self.streak = 0;
            self.retry_at = None;
        } else {
            if self.streak > 0 {
                alerts.retain(|a| a.event != "snapshot-failed");
            }
            self.streak += 1;
            let backoff =
                (self.debounce * 2u32.saturating_pow(self.streak.min(16))).min(self.interval);
            self.retry_at = Some(Instant::now() + backoff);
            for t in &failed {
                self.pending.whole(t, Instant::now());
            }
        }
        // A partial snapshot alerts when the set of unreadable files changes, not every time.
        if let Ok((_, out)) = &outcome {
            let unreadable: std::collections::BTreeSet<String> = out
                .iter()
                .flat_map(|t| t.unreadable.iter().map(|n| n.path.clone()))
                .collect();
            if unreadable == self.last_unreadable {
                alerts.retain(|a| a.event != "snapshot-partial");
            }
            self.last_unreadable = unreadable;
        }
        // Sent after the lock is released: a slow alert command must not hold up hooks.
        for alert in alerts {
            super::alerts::send_now(self.ctx, alert);
        }
        let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        match outcome {
            Ok((exit, out)) => {
                self.exit = self.exit.worst(exit);
                let parts: Vec<String> = out
                    .iter()
                    .map(|t| match (&t.outcome, &t.commit, &t.error) {
                        (_, _, Some(e)) => format!("{} FAILED: {e}", t.tier),
                        (Some(mirror::snapshot::Outcome::Recorded), Some(c), _) => format!(
                            "{} {} +{} ~{} -{}",
                            t.tier,
                            &c[..7.min(c.len())],
                            t.added,
                            t.modified,
                            t.deleted
                        ),
                        _ => format!("{} unchanged", t.tier),
                    })
                    .collect();
                let recorded = out
                    .iter()
                    .any(|t| t.outcome == Some(mirror::snapshot::Outcome::Recorded));
                if recorded || !self.ctx.quiet {
                    println!(
                        "{stamp} {trigger}: {} ({} ms)",
                        parts.join("; "),
                        started.elapsed().as_millis()
                    );
                }
                if recorded {
                    super::gc::start_auto(&self.project.root, &self.shadow);
                }
                if recorded
                    && self.project.config.push.after_snapshot
                    && !self.project.config.remotes.is_empty()
                {
                    let earliest = self.last_push.map(|t| t + PUSH_EVERY);
                    self.push_due = Some(match earliest {
                        Some(t) if t > Instant::now() => t,
                        _ => Instant::now(),
                    });
                }
            }
            Err(err) => {
                // Alerted by `record`.
                self.exit = Exit::Error;
                eprintln!("{stamp} error: snapshot failed: {err:#}");
            }
        }
    }

    /// Load mirror.yaml again if it changed on disk; true when it did (and was valid).
    fn reload_config(&mut self) -> bool {
        let path = self.project.config_path();
        let config = match mirror::config::Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                // Said once per broken version of the file; the watch goes on with the
                // configuration it has.
                let text = format!("{e:#}");
                if self.config_error.as_deref() != Some(text.as_str()) {
                    eprintln!("error: mirror.yaml could not be loaded again (the watch goes on with the previous configuration): {text}");
                    self.config_error = Some(text);
                }
                return false;
            }
        };
        self.config_error = None;
        if config == self.project.config {
            return false;
        }
        match open_project(self.ctx).and_then(|(project, shadow)| {
            let filters = tier_filters(&project)?;
            Ok((project, shadow, filters))
        }) {
            Ok((project, shadow, filters)) => {
                println!(
                    "{} mirror.yaml changed: loaded again",
                    chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
                );
                self.project = project;
                self.shadow = shadow;
                self.filters = filters;
                self.config_changed = true;
                self.vanished = true;
                true
            }
            Err(e) => {
                eprintln!("error: mirror.yaml changed but could not be loaded: {e:#}");
                false
            }
        }
    }

    /// Take the lock, snapshot, audit the run (success or not); returns the outcome and the
    /// alerts it calls for, to send once the lock is released.
    #[allow(clippy::type_complexity)]
    fn record(
        &mut self,
        tiers: &[String],
        focus: std::collections::HashMap<String, Vec<gix::bstr::BString>>,
        trigger: &str,
        event_driven: bool,
    ) -> (
        anyhow::Result<(Exit, Vec<super::snapshot::TierJson>)>,
        Vec<mirror::alert::Alert>,
    ) {
        let mut alerts = Vec::new();
        let result = self.record_locked(tiers, focus, trigger, event_driven, &mut alerts);
        if let Err(e) = &result {
            if alerts.is_empty() {
                alerts.push(self.make_alert(
                    "snapshot-failed",
                    format!("snapshot failed: {e:#}"),
                    None,
                    Vec::new(),
                ));
            }
        }
        (result, alerts)
    }

    fn record_locked(
        &mut self,
        tiers: &[String],
        focus: std::collections::HashMap<String, Vec<gix::bstr::BString>>,
        trigger: &str,
        event_driven: bool,
        alerts: &mut Vec<mirror::alert::Alert>,
    ) -> anyhow::Result<(Exit, Vec<super::snapshot::TierJson>)> {
        let _lock = super::lock_shadow(&self.shadow, trigger)?;
        let options = Options {
            tiers: tiers.to_vec(),
            message: None,
            trigger: trigger.to_owned(),
            empty: EmptyPolicy::Refuse,
            trailers: Vec::new(),
            focus,
        };
        let results = mirror::snapshot::snapshot_held(
            &self.project,
            &self.shadow,
            &options,
            &mut self.held,
            &mirror::progress::Silent,
        );
        let (exit, out, error) = match results {
            Ok(results) => {
                let (exit, out) = super::snapshot::report(self.ctx, results, false);
                (exit, out, None)
            }
            Err(e) => (Exit::Error, Vec::new(), Some(format!("{e:#}"))),
        };
        let outcome = exit.outcome();
        let errors: Vec<String> = out
            .iter()
            .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.tier)))
            .chain(error.clone())
            .collect();
        // An event-driven run that found nothing new is not worth an audit entry each time
        // (an editor saving every few seconds); the periodic full runs are always audited.
        let nothing_new = outcome == Outcome::Ok
            && event_driven
            && out
                .iter()
                .all(|t| t.outcome != Some(mirror::snapshot::Outcome::Recorded));
        if !nothing_new {
            let entry = super::append_audit(
                &self.shadow,
                "snapshot",
                vec!["watch".into(), "--trigger".into(), trigger.into()],
                outcome,
                serde_json::to_value(&out)?,
                &errors,
            )?;
            // The same alerts as for `mirror snapshot`.
            if let Some(mut alert) = super::alerts::for_entry(self.ctx, "snapshot", &entry) {
                alert.source = "watch".into();
                alerts.push(alert);
            }
        }
        if let Some(e) = error {
            anyhow::bail!(e);
        }
        Ok((exit, out))
    }

    /// Critical files of the latest snapshots that are gone: restored (`watch.auto_restore`)
    /// or alerted about, once until they are back.
    fn critical(&mut self) {
        let missing = match mirror::status::missing_critical(&self.project, &self.shadow) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: could not check for missing critical files: {e:#}");
                return;
            }
        };
        let now_missing: std::collections::BTreeSet<String> = missing
            .iter()
            .flat_map(|(_, _, p)| p.iter().cloned())
            .collect();
        self.alerted.retain(|p| now_missing.contains(p));
        for (tier, commit, paths) in missing {
            let tier_gone = self
                .project
                .config
                .tiers
                .iter()
                .find(|t| t.name == tier)
                .is_some_and(|t| !self.project.tier_root(t).is_dir());
            // A whole tier directory gone is not a lost file: restoring only its treasures
            // would make the snapshot record every other file as deleted. It is alerted, and
            // the snapshot refuses the missing tier.
            if self.project.config.watch.auto_restore && !tier_gone {
                self.restore(&tier, commit, paths);
                continue;
            }
            let new: Vec<String> = paths
                .into_iter()
                .filter(|p| !self.alerted.contains(p))
                .collect();
            if new.is_empty() {
                continue;
            }
            eprintln!(
                "{} CRITICAL: {} file(s) of tier {tier} are gone: {} (restore: mirror restore --missing --tier {tier} --from {})",
                chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
                new.len(),
                new.join(", "),
                commit.to_hex_with_len(12)
            );
            self.alerted.extend(new.iter().cloned());
            self.alert(
                "critical-missing",
                format!("{} critical file(s) of tier {tier} disappeared", new.len()),
                Some(&tier),
                new,
            );
        }
    }

    fn restore(&mut self, tier: &str, commit: gix::ObjectId, paths: Vec<String>) {
        let request = mirror::checkout::Request {
            target: super::restore::target(Some(commit.to_string())),
            tiers: vec![tier.to_owned()],
            to: None,
            paths: paths.iter().map(std::path::PathBuf::from).collect(),
            force: false,
            missing_only: true,
            skip_encrypted: false,
        };
        let result = super::lock_shadow(&self.shadow, "restore").and_then(|_lock| {
            mirror::checkout::checkout(
                &self.project,
                &self.shadow,
                &request,
                &mirror::progress::Silent,
            )
        });
        let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        let (mut outcome, details, errors) = match &result {
            Ok(report) => {
                let written: u64 = report.restored.iter().map(|r| r.written).sum();
                println!(
                    "{stamp} restored {written} critical file(s) of tier {tier} from {}: {}",
                    commit.to_hex_with_len(7),
                    paths.join(", ")
                );
                super::checkout::print_warnings(report);
                let problems = report
                    .restored
                    .iter()
                    .any(|r| super::checkout::report_problems(r) != Exit::Ok);
                let outcome = if problems {
                    Outcome::Partial
                } else {
                    Outcome::Ok
                };
                let details = serde_json::json!({ "restored": report.restored, "paths": paths });
                (outcome, details, Vec::new())
            }
            Err(e) => {
                self.exit = Exit::Error;
                (
                    Outcome::Failed,
                    serde_json::json!({ "paths": paths }),
                    vec![format!("{e:#}")],
                )
            }
        };
        // Whatever the report says, what counts is what is on disk now.
        let still_missing: Vec<String> = paths
            .iter()
            .filter(|p| self.project.root.join(p).symlink_metadata().is_err())
            .cloned()
            .collect();
        if !still_missing.is_empty() {
            outcome = Outcome::Failed;
            eprintln!(
                "{stamp} error: {} critical file(s) of tier {tier} could not be restored: {}{}",
                still_missing.len(),
                still_missing.join(", "),
                errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            // Once per file until it is back.
            let new: Vec<String> = still_missing
                .into_iter()
                .filter(|p| self.alerted.insert(p.clone()))
                .collect();
            if !new.is_empty() {
                self.alert(
                    "critical-missing",
                    format!(
                        "{} critical file(s) of tier {tier} disappeared and could not be restored",
                        new.len()
                    ),
                    Some(tier),
                    new,
                );
            }
        }
        let args = vec![
            "watch".into(),
            "--missing".into(),
            "--tier".into(),
            tier.into(),
        ];
        if let Err(e) =
            super::append_audit(&self.shadow, "restore", args, outcome, details, &errors)
        {
            eprintln!("error: could not audit the restore: {e:#}");
        }
    }

    fn push(&mut self) {
        self.push_due = None;
        self.last_push = Some(Instant::now());
        let _lock = match super::lock_shadow(&self.shadow, "push") {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: automatic push: {e:#}");
                return;
            }
        };
        // The same path as `mirror snapshot` with after_snapshot: reported, audited, alerted.
        if let Err(e) = super::snapshot::auto_push(self.ctx, &self.project, &self.shadow, false) {
            eprintln!("error: automatic push: {e:#}");
        }
        // auto_push raises its alert for delivery at the end of a command; a watch does not
        // end, so deliver now.
        let raised: Vec<_> = self.ctx.alerts.borrow_mut().drain(..).collect();
        for mut alert in raised {
            alert.source = "watch".into();
            super::alerts::send_now(self.ctx, alert);
        }
    }

    fn alert(&self, event: &str, message: String, tier: Option<&str>, paths: Vec<String>) {
        super::alerts::send_now(self.ctx, self.make_alert(event, message, tier, paths));
    }

    fn make_alert(
        &self,
        event: &str,
        message: String,
        tier: Option<&str>,
        paths: Vec<String>,
    ) -> mirror::alert::Alert {
        mirror::alert::Alert::new(event, "watch", &self.project.root, message).about(tier, paths)
    }
}
