//! Remote mirrors: pushing the shadow to other git repositories, fetching from them, and
//! comparing with them.
//!
//! gix has no push, so every network operation runs the `git` binary — with a clean
//! environment (nothing of a calling hook's `GIT_DIR` or `GIT_INDEX_FILE`), no way to prompt
//! (`GIT_TERMINAL_PROMPT=0`, no askpass, ssh in batch mode, stdin closed) and an overall
//! timeout, so an unreachable or password-protected remote fails with a message instead of
//! hanging a git hook. Pushes are never forced and are atomic per remote: a remote whose
//! history diverged is reported and left exactly as it was.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gix::ObjectId;

use crate::config::Remote;
use crate::store::Shadow;

/// What the format defines, pushed to every remote: tier branches, milestone tags, mirror's
/// own refs (the `mirror.yaml` history and the audit trail) and the metadata notes.
pub const PUSHED_PATTERNS: &[&str] = &[
    "refs/heads/tiers/",
    "refs/tags/",
    "refs/mirror/",
    "refs/notes/",
];

/// Default for `MIRROR_REMOTE_TIMEOUT`: long enough for a large first push, short enough
/// that a stuck transfer does not hold a git hook for ever.
const DEFAULT_TIMEOUT_SECS: u64 = 300;

pub fn timeout() -> Duration {
    let secs = std::env::var("MIRROR_REMOTE_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

/// Where a remote lives, as far as mirror needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine (a plain path or a `file://` URL).
    Local(PathBuf),
    /// Anything git reaches over the network (`ssh://`, `user@host:path`, `https://`, ...).
    Network(String),
}

impl Location {
    /// How git's own rules read `url`: `scheme://` is a URL (`file://` being local), a colon
    /// before the first slash is scp-like ssh, anything else a path (relative to `root`).
    pub fn parse(url: &str, root: &Path) -> Location {
        if let Some(path) = url.strip_prefix("file://") {
            return Location::Local(root.join(path));
        }
        if url.contains("://") {
            return Location::Network(url.to_owned());
        }
        let colon = url.find(':');
        let slash = url.find('/');
        match (colon, slash) {
            (Some(c), Some(s)) if c < s => Location::Network(url.to_owned()),
            (Some(_), None) => Location::Network(url.to_owned()),
            _ => Location::Local(root.join(url)),
        }
    }

    /// The argument to give git.
    pub fn git_url(&self) -> String {
        match self {
            Location::Local(p) => p.to_string_lossy().into_owned(),
            Location::Network(u) => u.clone(),
        }
    }
}

/// What one git run printed.
pub struct GitOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl GitOutput {
    /// git's own explanation (and ssh's, which comes first: "connection refused"): the
    /// last few lines of stderr, without git's hints.
    pub fn reason(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
            .collect();
        let chosen = &lines[lines.len().saturating_sub(4)..];
        if chosen.is_empty() {
            "git failed without a message".into()
        } else {
            chosen.join("; ")
        }
    }
}

/// Run `git ARGS` (in `dir` when given) cleanly, non-interactively, within `timeout`.
pub fn run_git(args: &[String], timeout: Duration) -> Result<GitOutput> {
    let mut cmd = Command::new("git");
    // Repository-local variables a hook may have set must not steer this git; the user's
    // transport settings (ssh command, proxies, CA files, config locations) still apply.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let keep = k.starts_with("GIT_SSH")
            || k.starts_with("GIT_SSL_")
            || k.starts_with("GIT_PROXY")
            || k.starts_with("GIT_HTTP_")
            || matches!(
                k.as_ref(),
                "GIT_CONFIG_GLOBAL" | "GIT_CONFIG_SYSTEM" | "GIT_CONFIG_NOSYSTEM" | "GIT_EXEC_PATH"
            );
        if k.starts_with("GIT_") && !keep {
            cmd.env_remove(&key);
        }
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env("SSH_ASKPASS_REQUIRE", "never")
        .env("GCM_INTERACTIVE", "never");
    // The user's own ssh command (environment or core.sshCommand) wins; it cannot prompt
    // anyway, since git runs without a terminal (setsid below).
    if std::env::var_os("GIT_SSH_COMMAND").is_none()
        && std::env::var_os("GIT_SSH").is_none()
        && !user_ssh_command_configured()
    {
        cmd.env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=15",
        );
    }
    // No askpass program, and a stalled HTTP transfer is abandoned.
    // No hooks of the user's (a global core.hooksPath pre-push hook) run on shadow pushes.
    cmd.args([
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.askPass=",
        "-c",
        "http.lowSpeedLimit=1",
        "-c",
        "http.lowSpeedTime=60",
    ]);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own session: ssh cannot reach a terminal to ask for a password, and a timeout ends
    // the ssh it started too.
    crate::child::new_session(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "the `git` program was not found on PATH; mirror needs it to push, fetch and clone (install git)"
        ),
        Err(e) => return Err(e).context("could not start git"),
    };
    let mut out_pipe = child.stdout.take().context("git stdout")?;
    let mut err_pipe = child.stderr.take().context("git stderr")?;
    // Readers hand their output over a channel: a process git left behind (a detached hook
    // child) may hold the pipes open for ever, and must not make mirror wait for it.
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        let _ = out_tx.send(s);
    });
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        let _ = err_tx.send(s);
    });
    let status = crate::child::wait_or_kill(&mut child, timeout).context("waiting for git")?;
    let grace = Duration::from_secs(2);
    let stdout =
        String::from_utf8_lossy(&out_rx.recv_timeout(grace).unwrap_or_default()).into_owned();
    let stderr =
        String::from_utf8_lossy(&err_rx.recv_timeout(grace).unwrap_or_default()).into_owned();
    match status {
        Some(status) => Ok(GitOutput {
            success: status.success(),
            stdout,
            stderr,
        }),
        None => bail!(
            "git did not finish within {} s (set MIRROR_REMOTE_TIMEOUT to allow longer){}",
            timeout.as_secs(),
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", stderr.trim())
            }
        ),
    }
}

/// Does the user's git configuration set `core.sshCommand`? Asked once per process.
fn user_ssh_command_configured() -> bool {
    static CONFIGURED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CONFIGURED.get_or_init(|| {
        Command::new("git")
            .args(["config", "--global", "--get", "core.sshCommand"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
    })
}

fn git_dir_arg(shadow: &Shadow) -> String {
    format!("--git-dir={}", shadow.path.display())
}

/// Every ref the format defines (under [`PUSHED_PATTERNS`]), with its target; `None` for a
/// ref that does not resolve to an object id (for `mirror verify` to report).
pub fn mirror_refs(shadow: &Shadow) -> Result<Vec<(String, Option<ObjectId>)>> {
    let mut out = Vec::new();
    for r in shadow.repo.references()?.all()? {
        let r = r.map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = r.name().as_bstr().to_string();
        if PUSHED_PATTERNS.iter().any(|p| name.starts_with(p)) {
            out.push((name, r.try_id().map(|id| id.detach())));
        }
    }
    Ok(out)
}

/// The refs a push sends: every mirror ref that resolves.
pub fn pushed_refs(shadow: &Shadow) -> Result<BTreeMap<String, ObjectId>> {
    Ok(mirror_refs(shadow)?
        .into_iter()
        .filter_map(|(name, id)| Some((name, id?)))
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushResult {
    Pushed,
    UpToDate,
    /// The remote has snapshots (or other history) this shadow lacks; nothing was changed.
    Diverged,
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    pub remote: String,
    pub url: String,
    pub result: PushResult,
    /// Refs created or moved.
    pub refs: usize,
    /// The local bare repository was created by this push.
    pub created: bool,
    pub error: Option<String>,
}

/// Push every mirror ref to `remote`, creating a missing local remote as a bare repository.
pub fn push(shadow: &Shadow, remote: &Remote, root: &Path, first_tier: &str) -> PushReport {
    let location = Location::parse(&remote.url, root);
    let mut report = PushReport {
        remote: remote.name.clone(),
        url: remote.url.clone(),
        result: PushResult::Failed,
        refs: 0,
        created: false,
        error: None,
    };
    match push_inner(shadow, remote, &location, first_tier, &mut report, root) {
        Ok(()) => {}
        Err(err) => {
            report.result = PushResult::Failed;
            report.error = Some(format!("{err:#}"));
        }
    }
    report
}

fn push_inner(
    shadow: &Shadow,
    remote: &Remote,
    location: &Location,
    first_tier: &str,
    report: &mut PushReport,
    project_root: &Path,
) -> Result<()> {
    if let Location::Local(path) = location {
        {
            let root = project_root;
            if crate::config::lexically_inside(root, path).is_some() {
                bail!(
                    "{} is inside the project {}: the backup would back itself up (and a checkout could roll it back); put it outside the project",
                    path.display(),
                    root.display()
                );
            }
        }
        // A new directory, or an empty one (a freshly mounted, empty backup disk folder).
        let empty_dir = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
        if !path.exists() || empty_dir {
            create_bare(path, first_tier)?;
            report.created = true;
        }
    }
    let refs = pushed_refs(shadow)?;
    if refs.is_empty() {
        report.result = PushResult::UpToDate;
        return Ok(());
    }
    let mut args = vec![
        git_dir_arg(shadow),
        "push".into(),
        "--porcelain".into(),
        "--atomic".into(),
        "--".into(),
        location.git_url(),
    ];
    // Exact refs, never forced (no `+`): git refuses anything but a fast-forward.
    args.extend(refs.keys().map(|r| format!("{r}:{r}")));
    let out = run_git(&args, timeout())?;
    let mut moved = 0;
    // The audit trail gains an entry with every operation, this push's own included (it is
    // appended after the push), so it alone moving does not make a remote "not up to date".
    let mut moved_besides_audit = 0;
    let mut rejected = Vec::new();
    for line in out.stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(refs), summary) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        match flag {
            "*" | " " | "+" => {
                moved += 1;
                if !refs.ends_with(crate::audit::AUDIT_REF) {
                    moved_besides_audit += 1;
                }
            }
            "!" => rejected.push(format!(
                "{} {}",
                refs.split(':').nth(1).unwrap_or(refs),
                summary.unwrap_or("").trim()
            )),
            _ => {}
        }
    }
    report.refs = moved;
    let diverged = rejected
        .iter()
        .any(|r| r.contains("fetch first") || r.contains("non-fast-forward"));
    if diverged {
        report.result = PushResult::Diverged;
        let own: Vec<&String> = rejected
            .iter()
            .filter(|r| !r.contains("atomic push failed"))
            .collect();
        report.error = Some(format!(
            "remote {} has snapshots this repo lacks; run `mirror fetch {}` to bring them in as refs/remotes/{}/ and `mirror remote status` to see how far the histories differ (nothing was pushed to it; mirror never overwrites a remote's snapshots; rejected: {})",
            remote.name,
            remote.name,
            remote.name,
            own.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
        return Ok(());
    }
    if !out.success || !rejected.is_empty() {
        let mut reason = out.reason();
        if !rejected.is_empty() {
            reason = format!("{reason} (rejected: {})", rejected.join(", "));
        }
        bail!("{reason}");
    }
    report.result = if moved_besides_audit == 0 {
        PushResult::UpToDate
    } else {
        PushResult::Pushed
    };
    Ok(())
}

/// A new bare repository for a local remote (parents included, as the issue asks), with
/// HEAD on the first tier.
fn create_bare(path: &Path, first_tier: &str) -> Result<()> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("could not create the remote directory {}", path.display()))?;
    let repo = gix::init_bare(path)
        .with_context(|| format!("could not create a bare repository at {}", path.display()))?;
    crate::store::point_head_at_tier(&repo, first_tier)
}

/// Fetch `remote`'s mirror refs into `refs/remotes/<name>/...` of the shadow.
pub fn fetch(shadow: &Shadow, remote: &Remote, root: &Path) -> Result<()> {
    fetch_refs(shadow, remote, root, false)
}

/// [`fetch`], but every object again, whatever the shadow believes it has (`--refetch`):
/// how `mirror repair` replaces missing and corrupt objects.
pub fn fetch_all_objects(shadow: &Shadow, remote: &Remote, root: &Path) -> Result<()> {
    fetch_refs(shadow, remote, root, true)
}

fn fetch_refs(shadow: &Shadow, remote: &Remote, root: &Path, refetch: bool) -> Result<()> {
    let location = Location::parse(&remote.url, root);
    let name = &remote.name;
    let mut args = vec![
        git_dir_arg(shadow),
        // No automatic gc or maintenance: it could repack a shadow that is being repaired.
        "-c".into(),
        "gc.auto=0".into(),
        "-c".into(),
        "maintenance.auto=false".into(),
        "fetch".into(),
        "--no-tags".into(),
        "--no-write-fetch-head".into(),
        "--prune".into(),
    ];
    if refetch {
        args.push("--refetch".into());
    }
    args.push("--".into());
    args.push(location.git_url());
    for pattern in PUSHED_PATTERNS {
        // refs/heads/tiers/ -> refs/remotes/<name>/heads/tiers/
        let inner = pattern.trim_start_matches("refs/");
        args.push(format!("+{pattern}*:refs/remotes/{name}/{inner}*"));
    }
    let out = run_git(&args, timeout())?;
    if !out.success {
        bail!("{}", out.reason());
    }
    Ok(())
}

/// The remote's refs right now (`git ls-remote`).
pub fn ls_remote(
    shadow: &Shadow,
    remote: &Remote,
    root: &Path,
) -> Result<BTreeMap<String, ObjectId>> {
    let location = Location::parse(&remote.url, root);
    if let Location::Local(path) = &location {
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
    }
    // With the shadow as the repository: the project's own git repository (and its remote
    // names) must not take part.
    let out = run_git(
        &[
            git_dir_arg(shadow),
            "ls-remote".into(),
            "--".into(),
            location.git_url(),
        ],
        timeout(),
    )?;
    if !out.success {
        bail!("{}", out.reason());
    }
    let mut refs = BTreeMap::new();
    for line in out.stdout.lines() {
        if let Some((id, name)) = line.split_once('\t') {
            if let Ok(id) = ObjectId::from_hex(id.trim().as_bytes()) {
                refs.insert(name.trim().to_owned(), id);
            }
        }
    }
    Ok(refs)
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    UpToDate,
    Behind,
    Ahead,
    Diverged,
    Unreachable,
    Empty,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteStatus {
    pub remote: String,
    pub url: String,
    pub state: State,
    /// Tier snapshots the remote lacks.
    pub behind: u64,
    /// Tier snapshots this shadow lacks (0 when unknown: not fetched yet).
    pub ahead: u64,
    pub error: Option<String>,
}

/// `url` with the password of a `scheme://user:password@host/...` URL (and the user name of an
/// `http(s)://TOKEN@host` one) replaced by `***`, for
/// showing (status output, the dashboard, a mailed report); git itself hides it likewise.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => {
                format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
            }
            // `https://TOKEN@host` is how access tokens are often given; an ssh user name
            // (`ssh://git@host`) is no secret.
            None if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") => {
                format!("{scheme}://***@{host}{}", &rest[authority_end..])
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// [`status`] of every remote, all asked at once: one slow remote must not add its timeout
/// to every other's. Each check opens the shadow for itself (a repository handle is not
/// shared between threads).
pub fn statuses(shadow: &Shadow, remotes: &[Remote], root: &Path) -> Vec<RemoteStatus> {
    let unreachable = |r: &Remote, why: String| RemoteStatus {
        remote: r.name.clone(),
        url: redact_url(&r.url),
        state: State::Unreachable,
        behind: 0,
        ahead: 0,
        error: Some(why),
    };
    let path = &shadow.path;
    std::thread::scope(|scope| {
        let checks: Vec<_> = remotes
            .iter()
            .map(|r| {
                scope.spawn(move || match Shadow::open(path) {
                    Ok(own) => status(&own, r, root),
                    Err(e) => {
                        unreachable(r, format!("could not open the shadow repository: {e:#}"))
                    }
                })
            })
            .collect();
        checks
            .into_iter()
            .zip(remotes)
            .map(|(check, r)| {
                check
                    .join()
                    .unwrap_or_else(|_| unreachable(r, "the check of this remote crashed".into()))
            })
            .collect()
    })
}

/// Compare the remote's tier branches (asked now) with the shadow's.
pub fn status(shadow: &Shadow, remote: &Remote, root: &Path) -> RemoteStatus {
    let mut status = RemoteStatus {
        remote: remote.name.clone(),
        url: redact_url(&remote.url),
        state: State::Unreachable,
        behind: 0,
        ahead: 0,
        error: None,
    };
    let theirs = match ls_remote(shadow, remote, root) {
        Ok(refs) => refs,
        Err(err) => {
            status.error = Some(format!("{err:#}"));
            return status;
        }
    };
    let ours = match pushed_refs(shadow) {
        Ok(refs) => refs,
        Err(err) => {
            status.error = Some(format!("{err:#}"));
            return status;
        }
    };
    let tier = |name: &String| name.starts_with("refs/heads/tiers/");
    if !theirs.keys().any(tier) {
        status.state = State::Empty;
        return status;
    }
    let mut diverged = false;
    let mut unknown_ahead = false;
    let names: std::collections::BTreeSet<&String> = ours
        .keys()
        .chain(theirs.keys())
        .filter(|n| tier(n))
        .collect();
    for name in names {
        match (ours.get(name), theirs.get(name)) {
            (Some(l), Some(r)) if l == r => {}
            (Some(l), None) => status.behind += steps_back(shadow, *l, None).unwrap_or(0),
            (None, Some(r)) => match shadow.repo.has_object(r) {
                true => status.ahead += steps_back(shadow, *r, None).unwrap_or(0),
                false => unknown_ahead = true,
            },
            (Some(l), Some(r)) => {
                if let Some(n) = steps_back(shadow, *l, Some(*r)) {
                    status.behind += n;
                } else if shadow.repo.has_object(r) {
                    // Both sides have snapshots the other lacks, counted back to where
                    // their chains meet.
                    let (behind, ahead) = fork_point_distances(shadow, *l, *r);
                    status.behind += behind;
                    status.ahead += ahead;
                    diverged |= behind > 0 && ahead > 0;
                } else {
                    unknown_ahead = true;
                }
            }
            (None, None) => {}
        }
    }
    let ahead = status.ahead > 0 || unknown_ahead;
    status.state = if diverged || (ahead && status.behind > 0) {
        State::Diverged
    } else if ahead {
        State::Ahead
    } else if status.behind > 0 {
        State::Behind
    } else {
        State::UpToDate
    };
    status
}

/// First-parent steps from `from` back to `ancestor` (not counting it); with `None`, the
/// length of the whole chain. `None` when `ancestor` is not on the chain.
fn steps_back(shadow: &Shadow, from: ObjectId, ancestor: Option<ObjectId>) -> Option<u64> {
    let chain = chain(shadow, from);
    match ancestor {
        None => Some(chain.len() as u64),
        Some(a) => chain.iter().position(|id| *id == a).map(|p| p as u64),
    }
}

/// Is `ancestor` on the first-parent chain of `descendant` (or the same commit)?
pub fn is_ancestor(shadow: &Shadow, ancestor: ObjectId, descendant: ObjectId) -> bool {
    steps_back(shadow, descendant, Some(ancestor)).is_some()
}

/// The first-parent chain of a commit, newest first.
fn chain(shadow: &Shadow, from: ObjectId) -> Vec<ObjectId> {
    let mut out = Vec::new();
    let mut next = Some(from);
    while let Some(id) = next {
        out.push(id);
        next = shadow
            .repo
            .find_commit(id)
            .ok()
            .and_then(|c| c.parent_ids().next().map(|p| p.detach()));
    }
    out
}

/// (commits only on `ours`' chain, commits only on `theirs`') back to the newest commit the
/// two first-parent chains share; whole chains when they share none.
fn fork_point_distances(shadow: &Shadow, ours: ObjectId, theirs: ObjectId) -> (u64, u64) {
    let mine = chain(shadow, ours);
    let index: std::collections::HashMap<ObjectId, usize> =
        mine.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut ahead = 0;
    for id in chain(shadow, theirs) {
        if let Some(&behind) = index.get(&id) {
            return (behind as u64, ahead);
        }
        ahead += 1;
    }
    (mine.len() as u64, ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_as_git_reads_them() {
        let root = Path::new("/p");
        assert_eq!(
            Location::parse("/media/usb/b.git", root),
            Location::Local("/media/usb/b.git".into())
        );
        assert_eq!(
            Location::parse("backup.git", root),
            Location::Local("/p/backup.git".into())
        );
        assert_eq!(
            Location::parse("file:///srv/b.git", root),
            Location::Local("/srv/b.git".into())
        );
        for net in [
            "ssh://me@host/b.git",
            "me@host:b.git",
            "host:/srv/b.git",
            "https://example.org/b.git",
        ] {
            assert_eq!(Location::parse(net, root), Location::Network(net.into()));
        }
        assert_eq!(
            Location::parse("./a:b", root),
            Location::Local("/p/./a:b".into())
        );
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn only_the_password_of_a_url_is_hidden() {
        assert_eq!(
            redact_url("https://alice:s3cret@example.com/repo.git"),
            "https://alice:***@example.com/repo.git"
        );
        assert_eq!(
            redact_url("https://token@example.com/r.git"),
            "https://***@example.com/r.git"
        );
        assert_eq!(redact_url("ssh://git@host/r.git"), "ssh://git@host/r.git");
        assert_eq!(redact_url("git@host:path/r.git"), "git@host:path/r.git");
        assert_eq!(redact_url("/srv/backup.git"), "/srv/backup.git");
        assert_eq!(redact_url("ssh://u:p@h:22/x@y"), "ssh://u:***@h:22/x@y");
    }
}
