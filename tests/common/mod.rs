//! Test harness: each test gets a fresh temporary HOME, XDG dirs, git config and project,
//! and runs the real `mirror` binary and the real `git` binary against them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub project: PathBuf,
    pub shadow: PathBuf,
}

impl Env {
    /// A fresh environment with an empty project directory (`project/`) and a shadow path
    /// (`shadow.git`, not yet created) outside it.
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("mirror-test-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical tmp");
        let home = root.join("home");
        let project = root.join("project");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(home.join("gitconfig"), "").unwrap();
        Env {
            shadow: root.join("shadow.git"),
            tmp,
            home,
            project,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.project.parent().unwrap().to_owned()
    }

    /// Apply the isolated environment to any command.
    pub fn isolate(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("MIRROR_") || k.starts_with("GIT_") || k.starts_with("XDG_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join("data"))
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_CACHE_HOME", self.home.join("cache"))
            .env("XDG_STATE_HOME", self.home.join("state"))
            .env("GIT_CONFIG_GLOBAL", self.home.join("gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("MIRROR_LOCK_TIMEOUT", "10");
    }

    /// The `mirror` binary, isolated, started in the project directory.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirror"));
        self.isolate(&mut cmd);
        cmd.current_dir(&self.project);
        cmd
    }

    pub fn mirror(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run mirror")
    }

    pub fn mirror_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.cmd()
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run mirror")
    }

    /// Run mirror and require exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mirror(args);
        assert_exit(&out, 0, &format!("mirror {}", args.join(" ")));
        stdout(&out)
    }

    /// The real git, isolated from the user's configuration.
    pub fn git(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("git");
        self.isolate(&mut cmd);
        cmd.current_dir(&self.project)
            .args(args)
            .output()
            .expect("run git")
    }

    pub fn git_ok(&self, args: &[&str]) -> String {
        let out = self.git(args);
        assert_exit(&out, 0, &format!("git {}", args.join(" ")));
        stdout(&out)
    }

    /// `git --git-dir=SHADOW ...`
    pub fn shadow_git(&self, args: &[&str]) -> Output {
        let dir = format!("--git-dir={}", self.shadow.display());
        let mut all = vec![dir.as_str()];
        all.extend_from_slice(args);
        self.git(&all)
    }

    /// `mirror init --encrypt --shadow <outside path>` with the given `--tier NAME=PATH`
    /// specs: treasure files are encrypted to a fresh identity in this test's HOME.
    pub fn init(&self, tiers: &[&str]) {
        let shadow = self.shadow.to_str().unwrap().to_owned();
        let mut args = vec!["init", "--encrypt", "--shadow", &shadow];
        for t in tiers {
            args.push("--tier");
            args.push(t);
        }
        self.ok(&args);
    }

    /// The identity `init` (`--encrypt`) created for this test.
    pub fn identity(&self) -> PathBuf {
        self.home.join("config/mirror/identity.txt")
    }

    /// Decrypt age ciphertext with the real `age` binary and this test's identity.
    pub fn age_decrypt(&self, cipher: &[u8]) -> Vec<u8> {
        age_decrypt_with(&self.identity(), cipher)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.project.join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        write(&self.project.join(rel), content);
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.project.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }
}

pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// What a restored tree must reproduce, per path: kind, content (or link target), permission
/// bits and modification time (ns). Directories are listed without times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
        mtime_ns: i64,
    },
    Link {
        target: Vec<u8>,
        mtime_ns: i64,
    },
    Dir,
    Special,
}

/// Read a whole tree (not following symlinks), skipping `skip` names at any depth.
pub fn tree(dir: &Path, skip: &[&str]) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    read_tree(dir, dir, skip, &mut out);
    out
}

fn read_tree(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<Vec<u8>, Node>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| OsStr::new(s) == name) {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let md = path.symlink_metadata().unwrap();
        let mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        let node = if md.file_type().is_symlink() {
            Node::Link {
                target: std::fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
                mtime_ns,
            }
        } else if md.is_dir() {
            read_tree(root, &path, skip, out);
            Node::Dir
        } else if md.is_file() {
            Node::File {
                content: std::fs::read(&path).unwrap(),
                mode: md.permissions().mode() & 0o777,
                mtime_ns,
            }
        } else {
            Node::Special
        };
        out.insert(rel, node);
    }
}

/// Peak resident memory (KiB) of all waited-for children of this test process so far.
pub fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}

/// True when the tests run as root (then an unreadable file needs an unprivileged mirror).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Make the whole test environment usable by an unprivileged user (needed when running
/// mirror as `nobody` because the tests themselves run as root).
pub fn open_up_for_nobody(env: &Env) {
    if is_root() {
        let out = Command::new("chmod")
            .arg("-R")
            .arg("a+rwX")
            .arg(env.root())
            .output()
            .unwrap();
        assert!(out.status.success(), "chmod -R: {}", stderr(&out));
    }
}

/// `mirror ARGS` as an unprivileged user when running as root (root can read anything).
pub fn mirror_unprivileged(env: &Env, args: &[&str]) -> Output {
    unprivileged_cmd(env)
        .args(args)
        .output()
        .expect("run mirror unprivileged")
}

/// The mirror command, in the project, as an unprivileged user when running as root.
pub fn unprivileged_cmd(env: &Env) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_mirror"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_mirror"))
    };
    env.isolate(&mut cmd);
    cmd.current_dir(&env.project);
    cmd
}

/// `git fsck --strict` of the shadow exits 0 and reports nothing at all.
pub fn fsck_clean(env: &Env) {
    let out = env.shadow_git(&["fsck", "--strict", "--no-dangling", "--no-progress"]);
    assert_exit(&out, 0, "git fsck --strict");
    assert!(
        stdout(&out).trim().is_empty() && stderr(&out).trim().is_empty(),
        "git fsck --strict must report nothing:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// `mirror ARGS` run under the given umask (through `sh`, since a umask is per process).
pub fn mirror_with_umask(env: &Env, umask: u32, args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    env.isolate(&mut cmd);
    let script = format!("umask {umask:03o} && exec \"$0\" \"$@\"");
    cmd.current_dir(&env.project)
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_mirror"))
        .args(args)
        .output()
        .expect("run mirror under a umask")
}

/// `mirror log --audit --json EXTRA...`, parsed.
pub fn audit_log(env: &Env, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["log", "--audit", "--json"];
    args.extend_from_slice(extra);
    let text = env.ok(&args);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("log --audit --json is not JSON ({e}):\n{text}"));
    v.as_array().expect("a JSON array").clone()
}

/// `age -d -i identity` over `cipher`; panics (with age's message) if it does not decrypt.
pub fn age_decrypt_with(identity: &Path, cipher: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the age binary (Debian package `age`) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let data = cipher.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// Small helpers many test files use.

pub fn tier_ref(tier: &str) -> String {
    format!("refs/heads/tiers/{tier}")
}

pub fn tip(env: &Env, tier: &str) -> Option<String> {
    let out = env.shadow_git(&["rev-parse", "--verify", "-q", &tier_ref(tier)]);
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

pub fn must_tip(env: &Env, tier: &str) -> String {
    tip(env, tier).unwrap_or_else(|| panic!("tier {tier} has no commit"))
}

pub fn commit_count(env: &Env, tier: &str) -> usize {
    match tip(env, tier) {
        None => 0,
        Some(_) => {
            let out = env.shadow_git(&["rev-list", "--count", &tier_ref(tier)]);
            assert_exit(&out, 0, "rev-list --count");
            stdout(&out).trim().parse().unwrap()
        }
    }
}

/// Where the note of `commit` (full id) is, as a git revision: the notes tree's entry named
/// by the id, flat or fanned out (`ab/cdef…`); `None` without a note.
pub fn note_spec(env: &Env, commit: &str) -> Option<String> {
    [
        format!("refs/notes/mirror:{commit}"),
        format!("refs/notes/mirror:{}/{}", &commit[..2], &commit[2..]),
    ]
    .into_iter()
    .find(|spec| env.shadow_git(&["cat-file", "-e", spec]).status.success())
}

/// The metadata note of `rev` (a tier commit), read with plain git as docs/format.md says:
/// `(kind, values, full path)` per record in the order found, or `None` without a note. The
/// note is a tree of per-directory `files` blobs; subdirectories are named `+<name>`.
pub fn note_records(env: &Env, rev: &str) -> Option<Vec<(String, String, Vec<u8>)>> {
    let out = env.shadow_git(&["rev-parse", "--verify", rev]);
    assert_exit(&out, 0, "rev-parse");
    let commit = stdout(&out).trim().to_owned();
    let note = note_spec(env, &commit)?;
    let kind = env.shadow_git(&["cat-file", "-t", &note]);
    assert_exit(&kind, 0, "cat-file -t of the note");
    assert_eq!(stdout(&kind).trim(), "tree", "the note of {rev} is a tree");
    let out = env.shadow_git(&["ls-tree", "-r", "-z", &note]);
    assert_exit(&out, 0, "ls-tree of the note");
    let mut records = Vec::new();
    for line in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        // `<mode> blob <id>\t<name>`
        let tab = line.iter().position(|b| *b == b'\t').expect("a tab");
        let id = String::from_utf8(line[tab - 40..tab].to_vec()).unwrap();
        let name = &line[tab + 1..];
        let dir = name
            .strip_suffix(b"files")
            .unwrap_or_else(|| panic!("unexpected note entry {:?}", String::from_utf8_lossy(name)));
        let dir: Vec<u8> = dir
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .flat_map(|c| {
                let mut c = c
                    .strip_prefix(b"+")
                    .expect("subdirectories start with +")
                    .to_vec();
                c.push(b'/');
                c
            })
            .collect();
        let blob = env.shadow_git(&["cat-file", "blob", &id]);
        assert_exit(&blob, 0, "cat-file of a records blob");
        let mut recs = blob.stdout.split(|b| *b == 0);
        assert_eq!(recs.next(), Some(&b"mirror-meta 2"[..]), "records header");
        for rec in recs.filter(|r| !r.is_empty()) {
            let kind = String::from_utf8(rec[..1].to_vec()).unwrap();
            let fields = if kind == "m" { 3 } else { 2 };
            let mut parts = rec.splitn(fields + 1, |b| *b == b' ').skip(1);
            let values: Vec<String> = (1..fields)
                .map(|_| String::from_utf8(parts.next().unwrap().to_vec()).unwrap())
                .collect();
            let mut path = dir.clone();
            path.extend_from_slice(parts.next().expect("a name"));
            records.push((kind, values.join(" "), path));
        }
    }
    Some(records)
}

/// Run git on the shadow with `input` on stdin (and an identity for commits); its stdout.
pub fn shadow_git_with(env: &Env, args: &[&str], input: &[u8]) -> String {
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    let mut child = cmd
        .arg("--git-dir")
        .arg(&env.shadow)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0, &format!("git {args:?}"));
    stdout(&out).trim().to_owned()
}

/// Make object `note` (a metadata tree or a format 1 blob) the metadata note of commit `to`:
/// its entry in the notes tree replaced or added, in one more notes commit.
pub fn set_note(env: &Env, to: &str, note: &str) {
    let git = |args: &[&str], input: &[u8]| shadow_git_with(env, args, input);
    let to = git(&["rev-parse", "--verify", to], b"");
    let kind = git(&["cat-file", "-t", note], b"");
    let mode = if kind == "tree" { "040000" } else { "100644" };
    let mut entries: String = git(&["ls-tree", "refs/notes/mirror"], b"")
        .lines()
        .filter(|l| !l.ends_with(&format!("\t{to}")))
        .map(|l| format!("{l}\n"))
        .collect();
    entries.push_str(&format!("{mode} {kind} {note}\t{to}\n"));
    let tree = git(&["mktree"], entries.as_bytes());
    let commit = git(
        &[
            "commit-tree",
            &tree,
            "-p",
            "refs/notes/mirror",
            "-m",
            "note set by a test",
        ],
        b"",
    );
    git(&["update-ref", "refs/notes/mirror", &commit], b"");
}

/// Give commit `to` the metadata note of commit `from` (a crafted snapshot made with plain
/// git gets its metadata this way).
pub fn copy_note(env: &Env, from: &str, to: &str) {
    let from = shadow_git_with(env, &["rev-parse", "--verify", from], b"");
    let spec = note_spec(env, &from).expect("the commit has a note");
    let note = shadow_git_with(env, &["rev-parse", &spec], b"");
    set_note(env, to, &note);
}

pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` holds two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn symlink(target: impl AsRef<OsStr>, link: &Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::os::unix::fs::symlink(target.as_ref(), link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkdir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
}

/// A child process in its own process group, killed (group and all) and reaped when dropped,
/// so a failing assertion never leaves a server, watch or browser behind.
pub struct Proc {
    pub child: std::process::Child,
    pub done: bool,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let child = cmd.spawn().expect("spawn child process");
        Proc { child, done: false }
    }

    pub fn kill(&mut self) {
        if self.done {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory effects; -pid names the group this child leads.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }

    /// Wait for the process to exit by itself, at most `limit`; kills it and panics on timeout.
    pub fn wait_bounded(
        &mut self,
        limit: std::time::Duration,
        what: &str,
    ) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Anything the process left in its group goes too.
                self.kill();
                return status;
            }
            if std::time::Instant::now() >= deadline {
                self.kill();
                panic!("{what} did not finish within {limit:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Replace every pack of the shadow by its objects, loose (`git unpack-objects`).
pub fn unpack_all(env: &Env) {
    let pack_dir = env.shadow.join("objects/pack");
    let aside = env.root().join("packs-unpacked");
    std::fs::create_dir_all(&aside).unwrap();
    for entry in std::fs::read_dir(&pack_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            // Moved out first: unpack-objects writes only objects the repository lacks.
            let idx = path.with_extension("idx");
            let moved = aside.join(path.file_name().unwrap());
            std::fs::rename(&path, &moved).unwrap();
            std::fs::remove_file(&idx).unwrap();
            let mut git = std::process::Command::new("git");
            env.isolate(&mut git);
            let out = git
                .args(["unpack-objects", "-q"])
                .env("GIT_DIR", &env.shadow)
                .stdin(std::fs::File::open(&moved).unwrap())
                .output()
                .unwrap();
            assert_exit(&out, 0, "git unpack-objects");
        }
    }
}
