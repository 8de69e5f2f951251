//! `mirror snapshot`: what is recorded and how (issue 2, point 3), the stat cache and its racy
//! case (point 4), and the lock and crash safety (point 11).

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    mode: String,
    kind: String,
    oid: String,
}

/// `git ls-tree -r -t -z` of a commit-ish: every path (raw bytes) with mode, type and id.
fn ls_tree_rev(env: &Env, rev: &str) -> BTreeMap<Vec<u8>, Entry> {
    let out = env.shadow_git(&["ls-tree", "-r", "-t", "-z", "--full-tree", rev]);
    assert_exit(&out, 0, &format!("git ls-tree {rev}"));
    let mut map = BTreeMap::new();
    for rec in out.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let tab = rec
            .iter()
            .position(|b| *b == b'\t')
            .expect("tab in ls-tree output");
        let head = String::from_utf8(rec[..tab].to_vec()).unwrap();
        let mut parts = head.split(' ');
        let entry = Entry {
            mode: parts.next().unwrap().to_owned(),
            kind: parts.next().unwrap().to_owned(),
            oid: parts.next().unwrap().to_owned(),
        };
        map.insert(rec[tab + 1..].to_vec(), entry);
    }
    map
}

fn ls_tree(env: &Env, tier: &str) -> BTreeMap<Vec<u8>, Entry> {
    ls_tree_rev(env, &tier_ref(tier))
}

/// Blob and link paths (no trees) recorded in the tier's newest commit, as lossy strings.
fn recorded_files(env: &Env, tier: &str) -> BTreeSet<String> {
    ls_tree(env, tier)
        .into_iter()
        .filter(|(_, e)| e.kind == "blob")
        .map(|(p, _)| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

fn blob_at(env: &Env, tier: &str, path: &str) -> Option<String> {
    ls_tree(env, tier)
        .get(path.as_bytes())
        .map(|e| e.oid.clone())
}

fn cat_blob(env: &Env, oid: &str) -> Vec<u8> {
    let out = env.shadow_git(&["cat-file", "blob", oid]);
    assert_exit(&out, 0, "git cat-file blob");
    out.stdout
}

/// The blob id git computes for a file's content (without any filters).
fn hash_of(content: &[u8]) -> String {
    let mut child = Command::new("git")
        .args(["hash-object", "--no-filters", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(content).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    stdout(&out).trim().to_owned()
}

/// Full commit message of the tier's newest commit.
fn message(env: &Env, tier: &str) -> String {
    let out = env.shadow_git(&["log", "-1", "--format=%B", &tier_ref(tier)]);
    assert_exit(&out, 0, "git log");
    stdout(&out)
}

/// Values of trailer `key` in the tier's newest commit, as git itself parses trailers.
fn trailer(env: &Env, tier: &str, key: &str) -> Vec<String> {
    let fmt = format!("--format=%(trailers:key={key},valueonly)");
    let out = env.shadow_git(&["log", "-1", &fmt, &tier_ref(tier)]);
    assert_exit(&out, 0, "git log trailers");
    stdout(&out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The mtime note of the tier's newest commit: path -> ns.
fn note_mtimes(env: &Env, tier: &str) -> BTreeMap<Vec<u8>, i64> {
    let records = note_records(env, &tier_ref(tier)).expect("the tip has a metadata note");
    let mut map = BTreeMap::new();
    for (kind, values, path) in records.into_iter().filter(|(k, ..)| k == "m") {
        assert_eq!(kind, "m");
        let (secs, nanos) = values.split_once(' ').unwrap();
        let secs: i64 = secs.parse().unwrap();
        let nanos: i64 = nanos.parse().unwrap();
        map.insert(path, secs * 1_000_000_000 + nanos);
    }
    map
}

fn lines_of(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// The stdout line for `tier`.
fn tier_line<'a>(out: &'a str, tier: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(tier))
        .unwrap_or_else(|| panic!("no output line for tier {tier} in:\n{out}"))
}

fn mtime_ns(path: &Path) -> i64 {
    let md = path.symlink_metadata().unwrap();
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    filetime::set_symlink_file_times(
        path,
        filetime::FileTime::from_unix_time(secs, nanos),
        filetime::FileTime::from_unix_time(secs, nanos),
    )
    .unwrap();
}

fn git_commit_all(env: &Env, dir: &Path, msg: &str) {
    let d = dir.to_str().unwrap();
    env.git_ok(&["-C", d, "add", "-A"]);
    env.git_ok(&[
        "-C",
        d,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        msg,
    ]);
}

/// Run a command, failing the test (after killing it) if it takes longer than `secs`.
/// Output goes through files so a full pipe can never block the child.
fn run_with_timeout(mut cmd: Command, secs: u64, scratch: &Path, what: &str) -> Output {
    std::fs::create_dir_all(scratch).unwrap();
    let out_path = scratch.join(format!("{what}.stdout"));
    let err_path = scratch.join(format!("{what}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    let mut child = cmd.spawn().expect("spawn");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {secs}s (it hangs); stderr so far:\n{}",
                String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

fn spawn_mirror(env: &Env, args: &[&str], lock_timeout: &str, scratch: &Path, what: &str) -> Child {
    std::fs::create_dir_all(scratch).unwrap();
    let mut cmd = env.cmd();
    cmd.args(args)
        .env("MIRROR_LOCK_TIMEOUT", lock_timeout)
        .stdin(Stdio::null())
        .stdout(File::create(scratch.join(format!("{what}.stdout"))).unwrap())
        .stderr(File::create(scratch.join(format!("{what}.stderr"))).unwrap());
    cmd.spawn().expect("spawn mirror")
}

fn finish(mut child: Child, scratch: &Path, what: &str, secs: u64) -> Output {
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: std::fs::read(scratch.join(format!("{what}.stdout"))).unwrap(),
        stderr: std::fs::read(scratch.join(format!("{what}.stderr"))).unwrap(),
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Modification times of every directory below (and including) `dir`, plus `tree()` data
/// for every file: enough to see any write, rename or removal.
type Fingerprint = (BTreeMap<PathBuf, i64>, BTreeMap<Vec<u8>, Node>, Vec<u8>);

fn fingerprint(path: &Path) -> Fingerprint {
    let md = path.symlink_metadata().unwrap();
    if md.is_dir() {
        let mut dirs = BTreeMap::new();
        fn walk(d: &Path, out: &mut BTreeMap<PathBuf, i64>) {
            out.insert(d.to_owned(), mtime_ns(d));
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        walk(path, &mut dirs);
        (dirs, tree(path, &[]), Vec::new())
    } else {
        let mut one = BTreeMap::new();
        one.insert(path.to_owned(), mtime_ns(path));
        (one, BTreeMap::new(), std::fs::read(path).unwrap())
    }
}

/// An inotify watch on some files, to prove whether a process opened them.
struct OpenWatch {
    fd: libc::c_int,
    names: BTreeMap<libc::c_int, String>,
}

impl OpenWatch {
    fn new(paths: &[PathBuf]) -> OpenWatch {
        // SAFETY: plain syscalls on a descriptor we own; paths are valid C strings.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let mut names = BTreeMap::new();
        for p in paths {
            let c = CString::new(p.as_os_str().as_bytes()).unwrap();
            let wd =
                unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
            assert!(wd >= 0, "inotify_add_watch {}", p.display());
            names.insert(wd, p.display().to_string());
        }
        OpenWatch { fd, names }
    }

    /// The watched files opened or read since the last call.
    fn drain(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer we own, of the length we pass.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 16 <= n as usize {
                let wd = i32::from_ne_bytes(buf[off..off + 4].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
                if let Some(name) = self.names.get(&wd) {
                    seen.insert(name.clone());
                }
                off += 16 + len;
            }
        }
        seen
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(self.fd) };
    }
}

// ---------------------------------------------------------------------------------------------
// Point 3: what is recorded
// ---------------------------------------------------------------------------------------------

#[test]
fn gitignored_git_excluded_and_globally_excluded_files_are_recorded() {
    let env = Env::new();
    env.git_ok(&["init", "-q"]);
    env.write(".gitignore", "target/\n*.tmp\n.env\n");
    env.write(".git/info/exclude", "local-only.txt\n");
    let global = env.home.join("global-excludes");
    write(&global, "*.globalignored\n.idea/\n");
    write(
        &env.home.join("gitconfig"),
        format!("[core]\n\texcludesFile = {}\n", global.display()),
    );
    env.write("src/main.rs", "fn main() {}\n");
    env.write("target/debug/app", "binary");
    env.write("target/.rustc_info.json", "{}");
    env.write("notes.tmp", "scratch");
    env.write(".env", "SECRET=1\n");
    env.write("local-only.txt", "mine");
    env.write("report.globalignored", "global");
    env.write(".idea/workspace.xml", "<x/>");
    env.write(".hidden/deeper/.dotfile", "dot");
    git_commit_all(&env, &env.project, "base");

    // Sanity: git really ignores all of these, through each of the three mechanisms.
    let ignored = env.git_ok(&[
        "status",
        "--porcelain",
        "--ignored",
        "--untracked-files=all",
    ]);
    for p in [
        "target/",
        "notes.tmp",
        ".env",
        "local-only.txt",
        "report.globalignored",
        ".idea/",
    ] {
        assert!(
            ignored.contains(&format!("!! {p}")),
            "git should ignore {p}:\n{ignored}"
        );
    }

    env.init(&["root=."]);
    env.ok(&["snapshot"]);
    let files = recorded_files(&env, "root");
    for p in [
        ".gitignore",
        "src/main.rs",
        "target/debug/app",
        "target/.rustc_info.json",
        "notes.tmp",
        ".env",
        "local-only.txt",
        "report.globalignored",
        ".idea/workspace.xml",
        ".hidden/deeper/.dotfile",
        "mirror.yaml",
    ] {
        assert!(
            files.contains(p),
            "{p} is not recorded; recorded: {files:?}"
        );
    }
    assert_eq!(
        cat_blob(&env, &blob_at(&env, "root", "target/debug/app").unwrap()),
        b"binary"
    );
    fsck_clean(&env);
}

#[test]
fn git_dirs_and_git_files_are_skipped_at_any_depth_and_left_untouched() {
    let env = Env::new();
    env.git_ok(&["init", "-q"]);
    env.write("README", "top\n");
    git_commit_all(&env, &env.project, "base");
    // A worktree of the project repo inside the project: `wt/.git` is a file.
    env.git_ok(&["worktree", "add", "-q", "wt"]);
    // A nested repository with its own history: `vendor/lib/.git` is a directory.
    let nested = env.path("vendor/lib");
    std::fs::create_dir_all(&nested).unwrap();
    env.git_ok(&["-C", nested.to_str().unwrap(), "init", "-q"]);
    env.write("vendor/lib/lib.rs", "pub fn f() {}\n");
    git_commit_all(&env, &nested, "nested");
    // A submodule-style `.git` file deep down, and a `.git` directory deeper still.
    env.write("deep/a/b/.git", "gitdir: ../../../.git/modules/b\n");
    env.write("deep/a/b/keep.txt", "kept");
    env.write("deep/x/y/z/.git/HEAD", "ref: refs/heads/main\n");
    env.write("deep/x/y/z/.git/objects/info/packs", "");
    env.write("deep/x/y/z/file", "z");

    let git_paths: Vec<PathBuf> = [
        ".git",
        "wt/.git",
        "vendor/lib/.git",
        "deep/a/b/.git",
        "deep/x/y/z/.git",
    ]
    .iter()
    .map(|p| env.path(p))
    .collect();
    let before: Vec<_> = git_paths.iter().map(|p| fingerprint(p)).collect();

    env.init(&["root=."]);
    env.ok(&["snapshot"]);
    env.write("README", "changed\n");
    env.ok(&["snapshot"]);

    let after: Vec<_> = git_paths.iter().map(|p| fingerprint(p)).collect();
    for ((p, b), a) in git_paths.iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{} was modified by mirror snapshot", p.display());
    }

    let recorded = ls_tree(&env, "root");
    for path in recorded.keys() {
        assert!(
            !path.split(|b| *b == b'/').any(|c| c == b".git"),
            "a .git path was recorded: {}",
            String::from_utf8_lossy(path)
        );
    }
    let files = recorded_files(&env, "root");
    for p in [
        "README",
        "wt/README",
        "vendor/lib/lib.rs",
        "deep/a/b/keep.txt",
        "deep/x/y/z/file",
    ] {
        assert!(
            files.contains(p),
            "{p} is not recorded; recorded: {files:?}"
        );
    }
    fsck_clean(&env);
}

#[test]
fn shadow_repository_inside_the_tree_is_never_recorded() {
    let env = Env::new();
    env.write("a.txt", "a");
    env.write("sub/b.txt", "b");
    env.ok(&["init", "--shadow", ".shadow.git", "--tier", "root=."]);
    let env = Env {
        shadow: env.path(".shadow.git").canonicalize().unwrap(),
        ..env
    };
    env.ok(&["snapshot"]);
    let all = ls_tree(&env, "root");
    assert!(
        all.keys().all(|p| !p.starts_with(b".shadow.git")),
        "the shadow repository was recorded: {:?}",
        all.keys()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(recorded_files(&env, "root").contains("a.txt"));
    assert!(recorded_files(&env, "root").contains("sub/b.txt"));
    // The shadow changed (new objects, refs, cache) but that is not a change of the tier.
    let first = must_tip(&env, "root");
    let out = env.ok(&["snapshot"]);
    assert!(tier_line(&out, "root").contains("unchanged"), "{out}");
    assert_eq!(must_tip(&env, "root"), first);
    fsck_clean(&env);
}

#[test]
fn exclude_patterns_and_mirrorignore_files_are_honoured() {
    let env = Env::new();
    env.write("app.log", "log");
    env.write("logs/deep/x.log", "log");
    env.write("keep.txt", "keep");
    env.write("data/.mirrorignore", "cache/\n*.bin\n");
    env.write("data/cache/c1", "cached");
    env.write("data/big.bin", "bin");
    env.write("data/real.csv", "1,2");
    env.write("other/cache/c2", "not under data");
    env.init(&["root=."]);
    let config = String::from_utf8(env.read("mirror.yaml")).unwrap();
    env.write("mirror.yaml", format!("{config}exclude:\n- '*.log'\n"));
    env.ok(&["snapshot"]);
    let files = recorded_files(&env, "root");
    for p in [
        "keep.txt",
        "data/.mirrorignore",
        "data/real.csv",
        "other/cache/c2",
        "mirror.yaml",
    ] {
        assert!(
            files.contains(p),
            "{p} should be recorded; recorded: {files:?}"
        );
    }
    for p in [
        "app.log",
        "logs/deep/x.log",
        "data/cache/c1",
        "data/big.bin",
    ] {
        assert!(
            !files.contains(p),
            "{p} should be excluded; recorded: {files:?}"
        );
    }
    fsck_clean(&env);
}

#[test]
fn nested_tier_files_belong_only_to_the_deepest_tier() {
    let env = Env::new();
    env.write("top.txt", "top");
    env.write("sub/inner.txt", "inner");
    env.write("sub/deeper/x.txt", "x");
    env.write("subway/not-inner.txt", "prefix is not a parent");
    env.init(&["root=.", "inner=sub"]);
    env.ok(&["snapshot"]);
    let root = ls_tree(&env, "root");
    assert!(
        root.keys()
            .all(|p| !(p == b"sub" || p.starts_with(b"sub/"))),
        "tier root recorded files of tier inner: {:?}",
        root.keys()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(recorded_files(&env, "root").contains("top.txt"));
    assert!(recorded_files(&env, "root").contains("subway/not-inner.txt"));
    assert_eq!(
        recorded_files(&env, "inner"),
        ["deeper/x.txt", "inner.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    fsck_clean(&env);
}

#[test]
fn exec_bit_symlinks_empty_dirs_and_non_utf8_names_are_recorded_in_git_form() {
    let env = Env::new();
    let outside = env.root().join("outside");
    write(&outside.join("secret.txt"), "outside the project");
    env.write("t/plain.txt", "plain");
    env.write("t/run.sh", "#!/bin/sh\necho hi\n");
    chmod(&env.path("t/run.sh"), 0o755);
    std::os::unix::fs::symlink("plain.txt", env.path("t/link-to-file")).unwrap();
    std::os::unix::fs::symlink("b", env.path("t/a")).unwrap();
    std::os::unix::fs::symlink("a", env.path("t/b")).unwrap();
    std::os::unix::fs::symlink(&outside, env.path("t/outside-dir")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", env.path("t/dangling")).unwrap();
    std::fs::create_dir_all(env.path("t/empty")).unwrap();
    std::fs::create_dir_all(env.path("t/nest/empty-inner")).unwrap();
    let odd = OsStr::from_bytes(b"caf\xe9 \xff\xfe.txt");
    write(&env.path("t").join(odd), "latin-1 name");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);

    let tree = ls_tree(&env, "t");
    let get = |p: &[u8]| {
        tree.get(p)
            .unwrap_or_else(|| panic!("{} not recorded", String::from_utf8_lossy(p)))
            .clone()
    };
    assert_eq!(get(b"plain.txt").mode, "100644");
    assert_eq!(get(b"run.sh").mode, "100755");
    for (link, target) in [
        (&b"link-to-file"[..], &b"plain.txt"[..]),
        (b"a", b"b"),
        (b"b", b"a"),
        (b"outside-dir", outside.as_os_str().as_bytes()),
        (b"dangling", b"does/not/exist"),
    ] {
        let e = get(link);
        assert_eq!(
            e.mode,
            "120000",
            "{} is not stored as a symlink",
            String::from_utf8_lossy(link)
        );
        assert_eq!(
            cat_blob(&env, &e.oid),
            target,
            "link target of {}",
            String::from_utf8_lossy(link)
        );
    }
    assert!(
        tree.keys().all(|p| !p.starts_with(b"outside-dir/")),
        "the symlink to a directory was followed"
    );
    assert_eq!(
        get(b"empty"),
        Entry {
            mode: "040000".into(),
            kind: "tree".into(),
            oid: EMPTY_TREE.into()
        }
    );
    assert_eq!(get(b"nest/empty-inner").oid, EMPTY_TREE);
    let odd_entry = get(b"caf\xe9 \xff\xfe.txt");
    assert_eq!(cat_blob(&env, &odd_entry.oid), b"latin-1 name");
    assert_eq!(odd_entry.oid, hash_of(b"latin-1 name"));
    // Nothing else (no mirror.yaml: it is outside the tier).
    let blobs: BTreeSet<Vec<u8>> = tree
        .iter()
        .filter(|(_, e)| e.kind == "blob")
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(blobs.len(), 8, "{blobs:?}");
    fsck_clean(&env);
}

#[test]
fn mtimes_are_recorded_in_the_note_with_nanoseconds() {
    let env = Env::new();
    env.write("t/a.txt", "a");
    env.write("t/dir/b.txt", "b");
    std::os::unix::fs::symlink("a.txt", env.path("t/link")).unwrap();
    let odd = OsStr::from_bytes(b"n\xffl\nname");
    write(&env.path("t").join(odd), "odd");
    set_mtime(&env.path("t/a.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&env.path("t/dir/b.txt"), 946_684_800, 1);
    set_mtime(&env.path("t/link"), 1_234_567_890, 987_654_321);
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let notes = note_mtimes(&env, "t");
    assert_eq!(notes.get(&b"a.txt"[..]), Some(&1_600_000_000_123_456_789));
    assert_eq!(notes.get(&b"dir/b.txt"[..]), Some(&946_684_800_000_000_001));
    assert_eq!(
        notes.get(&b"link"[..]),
        Some(&1_234_567_890_987_654_321),
        "symlink mtime (lstat)"
    );
    assert_eq!(
        notes.get(&b"n\xffl\nname"[..]),
        Some(&mtime_ns(&env.path("t").join(odd)))
    );

    // An mtime-only change is a change: new commit, new note, same blobs.
    let before = must_tip(&env, "t");
    set_mtime(&env.path("t/a.txt"), 1_700_000_000, 5);
    env.ok(&["snapshot"]);
    assert_ne!(
        must_tip(&env, "t"),
        before,
        "an mtime change was not recorded"
    );
    assert_eq!(
        note_mtimes(&env, "t").get(&b"a.txt"[..]),
        Some(&1_700_000_000_000_000_005)
    );
    fsck_clean(&env);
}

#[test]
fn fifo_and_socket_are_skipped_with_a_warning_and_never_block() {
    let env = Env::new();
    env.write("t/regular.txt", "regular");
    let fifo = env.path("t/pipe");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    let _listener = std::os::unix::net::UnixListener::bind(env.path("t/sock")).unwrap();
    env.init(&["t=t"]);
    let mut cmd = env.cmd();
    cmd.args(["snapshot"]);
    let out = run_with_timeout(cmd, 20, &env.root().join("scratch"), "snapshot-fifo");
    assert_exit(&out, 0, "snapshot with fifo and socket");
    let err = stderr(&out);
    assert!(
        err.contains("pipe") && err.contains("fifo"),
        "fifo not named in a warning:\n{err}"
    );
    assert!(
        err.contains("sock") && err.contains("socket"),
        "socket not named in a warning:\n{err}"
    );
    assert_eq!(
        recorded_files(&env, "t"),
        ["regular.txt".to_string()].into_iter().collect()
    );
    assert!(
        message(&env, "t").contains("pipe"),
        "commit message does not mention the skipped fifo"
    );

    // A quiet run still reports the problem on stderr.
    let mut cmd = env.cmd();
    cmd.args(["--quiet", "snapshot"]);
    let out = run_with_timeout(cmd, 20, &env.root().join("scratch"), "snapshot-fifo-quiet");
    assert_exit(&out, 0, "quiet snapshot with fifo");
    assert!(
        stdout(&out).is_empty(),
        "--quiet printed on stdout: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("pipe"),
        "--quiet hid the skipped fifo warning"
    );
    fsck_clean(&env);
}

#[test]
fn unreadable_paths_give_a_partial_snapshot_with_exit_3() {
    let env = Env::new();
    env.write("t/ok.txt", "fine");
    env.write("t/dir/also-ok.txt", "fine too");
    env.write("t/secret.txt", "no access");
    env.write("t/locked/inside.txt", "no access either");
    env.init(&["t=t"]);
    open_up_for_nobody(&env);
    chmod(&env.path("t/secret.txt"), 0o000);
    chmod(&env.path("t/locked"), 0o000);

    let out = mirror_unprivileged(&env, &["snapshot"]);
    chmod(&env.path("t/locked"), 0o755);
    assert_exit(&out, 3, "snapshot with unreadable paths");
    let err = stderr(&out);
    assert!(
        err.contains("secret.txt"),
        "unreadable file not listed on stderr:\n{err}"
    );
    assert!(
        err.contains("locked"),
        "unreadable directory not listed on stderr:\n{err}"
    );
    let files = recorded_files(&env, "t");
    assert!(
        files.contains("ok.txt") && files.contains("dir/also-ok.txt"),
        "{files:?}"
    );
    assert!(
        !files.contains("secret.txt"),
        "an unreadable file cannot have content: {files:?}"
    );
    let msg = message(&env, "t");
    assert!(
        msg.contains("secret.txt"),
        "commit message does not list the unreadable file:\n{msg}"
    );
    assert!(
        msg.contains("locked"),
        "commit message does not list the unreadable directory:\n{msg}"
    );
    assert_eq!(trailer(&env, "t", "Mirror-Partial"), ["2"], "{msg}");
    fsck_clean(&env);
}

#[test]
fn unreadable_file_keeps_its_previously_recorded_blob() {
    let env = Env::new();
    env.write("t/ok.txt", "v1");
    env.write("t/secret.txt", "secret v1");
    env.write("t/locked/inside.txt", "inside v1");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let old_secret = blob_at(&env, "t", "secret.txt").unwrap();
    let old_inside = blob_at(&env, "t", "locked/inside.txt").unwrap();

    env.write("t/ok.txt", "v2");
    env.write("t/secret.txt", "secret v2");
    env.write("t/locked/inside.txt", "inside v2");
    open_up_for_nobody(&env);
    chmod(&env.path("t/secret.txt"), 0o000);
    chmod(&env.path("t/locked"), 0o000);
    let out = mirror_unprivileged(&env, &["snapshot"]);
    chmod(&env.path("t/locked"), 0o755);
    assert_exit(&out, 3, "snapshot with a file that became unreadable");
    assert!(stderr(&out).contains("secret.txt"), "{}", stderr(&out));
    assert_eq!(commit_count(&env, "t"), 2);
    assert_eq!(
        cat_blob(&env, &blob_at(&env, "t", "ok.txt").unwrap()),
        b"v2"
    );
    assert_eq!(
        blob_at(&env, "t", "secret.txt").as_deref(),
        Some(old_secret.as_str()),
        "unreadable file lost its previous version"
    );
    assert_eq!(
        blob_at(&env, "t", "locked/inside.txt").as_deref(),
        Some(old_inside.as_str()),
        "unreadable directory lost its previous content"
    );
    let msg = message(&env, "t");
    assert!(
        msg.contains("+0 ~1 -0"),
        "an unreadable file must not count as deleted:\n{msg}"
    );
    fsck_clean(&env);
}

#[test]
fn unchanged_tier_gets_no_new_commit() {
    let env = Env::new();
    env.write("t/a.txt", "a");
    env.write("t/.hidden/b", "b");
    env.init(&["t=t"]);
    let first = env.ok(&["snapshot"]);
    assert!(!tier_line(&first, "t").contains("unchanged"), "{first}");
    let tip1 = must_tip(&env, "t");
    for _ in 0..2 {
        let out = env.ok(&["snapshot"]);
        assert!(
            tier_line(&out, "t").contains("unchanged"),
            "expected `unchanged`:\n{out}"
        );
        assert!(
            tier_line(&out, "t").contains(&tip1[..7]),
            "unchanged line should show the tip id:\n{out}"
        );
    }
    assert_eq!(must_tip(&env, "t"), tip1);
    assert_eq!(commit_count(&env, "t"), 1);
    fsck_clean(&env);
}

#[test]
fn fsck_strict_reports_nothing_after_snapshots() {
    // Issue 2, point 12: `git --git-dir=SHADOW fsck --strict` reports nothing — no stray
    // (dangling) objects either, after ordinary, uninterrupted snapshots.
    let env = Env::new();
    env.write("t/a", "a");
    env.write("t/dir/b", "b");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    env.write("t/a", "a2");
    env.ok(&["snapshot"]);
    let out = env.shadow_git(&["fsck", "--strict", "--no-progress"]);
    assert_exit(&out, 0, "git fsck --strict");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "git fsck --strict reported something after plain snapshots:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn missing_tier_directory_fails_that_tier_only_unless_allow_empty() {
    let env = Env::new();
    env.write("a/file", "a");
    env.init(&["a=a", "b=b"]);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot with a missing tier directory");
    let err = stderr(&out);
    assert!(
        err.contains("error") && err.contains("missing") && err.contains("'b'"),
        "unclear error:\n{err}"
    );
    assert!(
        tip(&env, "a").is_some(),
        "tier a was not recorded although only b is missing"
    );
    assert!(
        tip(&env, "b").is_none(),
        "a missing tier was recorded without --allow-empty"
    );

    let out = env.mirror(&["snapshot", "--allow-empty"]);
    assert_exit(&out, 0, "snapshot --allow-empty");
    let b = must_tip(&env, "b");
    let tree = env.shadow_git(&["rev-parse", &format!("{b}^{{tree}}")]);
    assert_eq!(stdout(&tree).trim(), EMPTY_TREE);
    fsck_clean(&env);
}

#[test]
fn vanished_tier_with_history_is_not_recorded_as_deleted() {
    let env = Env::new();
    env.write("a/file", "a");
    env.write("b/one", "1");
    env.write("b/two", "2");
    env.init(&["a=a", "b=b"]);
    env.ok(&["snapshot"]);
    let b_before = must_tip(&env, "b");
    let a_before = must_tip(&env, "a");

    std::fs::rename(env.path("b"), env.root().join("b-unmounted")).unwrap();
    env.write("a/file", "a2");
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot with a vanished tier");
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    assert_eq!(
        must_tip(&env, "b"),
        b_before,
        "a vanished tier was recorded as deleted"
    );
    assert_ne!(
        must_tip(&env, "a"),
        a_before,
        "the other tier was not recorded"
    );
    fsck_clean(&env);
}

#[test]
fn emptied_tier_is_refused_unless_allow_empty() {
    let env = Env::new();
    env.write("a/file", "a");
    env.write("b/one", "1");
    env.write("b/sub/two", "2");
    env.init(&["a=a", "b=b"]);
    env.ok(&["snapshot"]);
    let b_before = must_tip(&env, "b");
    let a_before = must_tip(&env, "a");

    std::fs::remove_file(env.path("b/one")).unwrap();
    std::fs::remove_file(env.path("b/sub/two")).unwrap();
    env.write("a/file", "a2");
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot of an emptied tier");
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    assert_eq!(
        must_tip(&env, "b"),
        b_before,
        "an emptied tier was recorded without --allow-empty"
    );
    assert_ne!(
        must_tip(&env, "a"),
        a_before,
        "the other tier was not recorded"
    );

    let out = env.mirror(&["snapshot", "--allow-empty"]);
    assert_exit(&out, 0, "snapshot --allow-empty of an emptied tier");
    assert_ne!(must_tip(&env, "b"), b_before);
    assert!(recorded_files(&env, "b").is_empty());
    assert!(message(&env, "b").contains("-2"), "{}", message(&env, "b"));
    fsck_clean(&env);
}

#[test]
fn deleting_more_than_half_of_a_tier_warns_loudly() {
    let env = Env::new();
    for i in 0..6 {
        env.write(&format!("t/f{i}"), format!("{i}"));
    }
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);

    // Exactly half: not "more than half".
    for i in 0..3 {
        std::fs::remove_file(env.path(&format!("t/f{i}"))).unwrap();
    }
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot deleting half");
    assert!(
        !stderr(&out).contains("WARNING"),
        "half is not more than half:\n{}",
        stderr(&out)
    );
    assert!(!message(&env, "t").contains("WARNING"));

    // 2 of 3: more than half.
    for i in 3..5 {
        std::fs::remove_file(env.path(&format!("t/f{i}"))).unwrap();
    }
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot deleting more than half");
    assert!(
        stderr(&out).contains("WARNING"),
        "no loud warning:\n{}",
        stderr(&out)
    );
    let msg = message(&env, "t");
    assert!(
        msg.contains("WARNING"),
        "commit message does not warn:\n{msg}"
    );
    assert!(msg.contains("+0 ~0 -2"), "{msg}");
    assert_eq!(
        recorded_files(&env, "t"),
        ["f5".to_string()].into_iter().collect()
    );
    fsck_clean(&env);
}

#[test]
fn commit_message_has_counts_user_message_and_trailers() {
    let env = Env::new();
    env.write("t/a", "a");
    env.write("t/b", "b");
    env.write("t/c", "c");
    env.init(&["t=t"]);
    env.ok(&["snapshot", "-m", "before the big refactor"]);
    let msg = message(&env, "t");
    assert!(msg.contains("+3 ~0 -0"), "{msg}");
    assert!(
        msg.contains("before the big refactor"),
        "-m text missing:\n{msg}"
    );
    assert_eq!(trailer(&env, "t", "Mirror-Trigger"), ["manual"]);
    let host = gethostname();
    assert_eq!(
        trailer(&env, "t", "Mirror-Host"),
        std::slice::from_ref(&host)
    );
    assert!(
        trailer(&env, "t", "Mirror-Source-Head").is_empty(),
        "project is not in a git work tree, yet:\n{msg}"
    );

    env.write("t/a", "a2");
    env.write("t/d", "d");
    std::fs::remove_file(env.path("t/b")).unwrap();
    env.ok(&["snapshot", "--trigger", "hook"]);
    let msg = message(&env, "t");
    assert!(msg.contains("+1 ~1 -1"), "{msg}");
    assert!(
        !msg.contains("before the big refactor"),
        "-m leaked into the next snapshot:\n{msg}"
    );
    assert_eq!(trailer(&env, "t", "Mirror-Trigger"), ["hook"]);
    assert_eq!(trailer(&env, "t", "Mirror-Host"), [host]);
    assert_eq!(trailer(&env, "t", "Mirror-Tier"), ["t"]);
    assert_eq!(trailer(&env, "t", "Mirror-Files"), ["3"]);
    assert_eq!(trailer(&env, "t", "Mirror-Bytes"), ["4"]);
    fsck_clean(&env);
}

fn gethostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0);
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
fn source_head_trailer_is_the_enclosing_repository_head() {
    let env = Env::new();
    env.git_ok(&["init", "-q"]);
    env.write("tier-0/a", "a");
    git_commit_all(&env, &env.project, "first");
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let head1 = env.git_ok(&["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(
        trailer(&env, "tier-0", "Mirror-Source-Head"),
        std::slice::from_ref(&head1)
    );

    git_commit_all(&env, &env.project, "second");
    let head2 = env.git_ok(&["rev-parse", "HEAD"]).trim().to_owned();
    assert_ne!(head1, head2);
    env.write("tier-0/a", "a2");
    env.ok(&["snapshot"]);
    assert_eq!(
        trailer(&env, "tier-0", "Mirror-Source-Head"),
        std::slice::from_ref(&head2)
    );

    // A mirror project in a subdirectory of the work tree is inside it too.
    let app = env.path("app");
    write(&app.join("t/x"), "x");
    let shadow2 = env.root().join("shadow-app.git");
    let out = env.mirror_in(
        &app,
        &[
            "init",
            "--shadow",
            shadow2.to_str().unwrap(),
            "--tier",
            "t=t",
        ],
    );
    assert_exit(&out, 0, "init in subdirectory");
    let out = env.mirror_in(&app, &["snapshot"]);
    assert_exit(&out, 0, "snapshot in subdirectory");
    let env2 = Env {
        shadow: shadow2.canonicalize().unwrap(),
        ..env
    };
    assert_eq!(trailer(&env2, "t", "Mirror-Source-Head"), [head2]);
    fsck_clean(&env2);
}

#[test]
fn output_has_one_line_per_tier_with_id_counts_files_and_bytes() {
    let env = Env::new();
    env.write("a/hello", "hello\n");
    env.write("a/x", "x");
    env.write("b/one", "1234567890");
    env.init(&["a=a", "b=b"]);
    let out = env.ok(&["snapshot"]);
    assert_eq!(lines_of(&out).len(), 2, "one line per tier:\n{out}");
    let check = |out: &str, tier: &str, counts: [&str; 3], files: &str, bytes: &str| {
        let line = tier_line(out, tier);
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let id = tokens[1];
        assert!(
            id.len() >= 7 && must_tip(&env, tier).starts_with(id),
            "short id {id} in: {line}"
        );
        assert_eq!(&tokens[2..5], &counts, "counts in: {line}");
        assert_eq!(&tokens[5..7], &[files, "files"], "file count in: {line}");
        assert_eq!(tokens[7..].join(" "), bytes, "bytes in: {line}");
    };
    check(&out, "a", ["+2", "~0", "-0"], "2", "7 B");
    check(&out, "b", ["+1", "~0", "-0"], "1", "10 B");

    env.write("a/hello", "HELLO\n");
    env.write("a/new", "new!");
    std::fs::remove_file(env.path("a/x")).unwrap();
    let out = env.ok(&["snapshot"]);
    assert_eq!(lines_of(&out).len(), 2, "{out}");
    check(&out, "a", ["+1", "~1", "-1"], "2", "10 B");
    assert!(tier_line(&out, "b").contains("unchanged"), "{out}");

    // --tier limits the output (and the work) to that tier.
    env.write("b/one", "changed");
    let out = env.ok(&["snapshot", "--tier", "b"]);
    assert_eq!(lines_of(&out).len(), 1, "{out}");
    check(&out, "b", ["+0", "~1", "-0"], "1", "7 B");
}

#[test]
fn json_output_parses_with_the_documented_fields() {
    let env = Env::new();
    env.write("a/f", "12345");
    env.write("b/g", "1");
    env.init(&["a=a", "b=b"]);
    let out = env.ok(&["snapshot", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{out}"));
    let tiers = v.as_array().expect("a JSON array, one object per tier");
    assert_eq!(tiers.len(), 2);
    let a = tiers.iter().find(|t| t["tier"] == "a").expect("tier a");
    assert_eq!(a["outcome"], "recorded");
    assert_eq!(a["commit"], must_tip(&env, "a").as_str());
    assert_eq!(a["added"], 1);
    assert_eq!(a["modified"], 0);
    assert_eq!(a["deleted"], 0);
    assert_eq!(a["files"], 1);
    assert_eq!(a["bytes"], 5);
    assert!(
        a["unreadable"].as_array().is_some_and(|u| u.is_empty()),
        "{a}"
    );
    assert!(a["skipped"].as_array().is_some_and(|u| u.is_empty()), "{a}");

    env.write("a/f", "54321");
    let out = env.ok(&["snapshot", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "a")
        .unwrap()
        .clone();
    let b = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "b")
        .unwrap()
        .clone();
    assert_eq!(a["outcome"], "recorded");
    assert_eq!(a["modified"], 1);
    assert_eq!(b["outcome"], "unchanged");
    assert_eq!(b["commit"], must_tip(&env, "b").as_str());

    // A failing tier is still reported in the JSON, with its error.
    std::fs::remove_dir_all(env.path("b")).unwrap();
    let out = env.mirror(&["snapshot", "--json"]);
    assert_exit(&out, 1, "snapshot --json with a missing tier");
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let b = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "b")
        .unwrap()
        .clone();
    assert!(
        b["error"].as_str().is_some_and(|e| e.contains("missing")),
        "{b}"
    );
}

#[test]
fn quiet_prints_nothing_for_a_clean_run() {
    let env = Env::new();
    env.write("t/a", "a");
    env.init(&["t=t"]);
    for args in [&["--quiet", "snapshot"][..], &["snapshot", "-q"][..]] {
        env.write("t/a", format!("{args:?}"));
        let out = env.mirror(args);
        assert_exit(&out, 0, "quiet snapshot");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed on stdout:\n{}",
            stdout(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?} printed on stderr:\n{}",
            stderr(&out)
        );
    }
    assert_eq!(
        commit_count(&env, "t"),
        2,
        "quiet snapshots must still record"
    );
    let out = env.mirror(&["--quiet", "snapshot"]);
    assert_exit(&out, 0, "quiet unchanged snapshot");
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Point 4: stat cache
// ---------------------------------------------------------------------------------------------

#[test]
fn unchanged_files_are_not_read_again_but_a_same_size_rewrite_is_detected() {
    let env = Env::new();
    let names = ["t/a.txt", "t/dir/b.txt", "t/c.bin"];
    for n in names {
        env.write(n, format!("content of {n}"));
        set_mtime(&env.path(n), 1_600_000_000, 0);
    }
    env.init(&["t=t"]);
    // The cache only trusts files whose mtime and ctime are older than its scan by more than
    // the timestamp granularity (1 s): let the ctime of the files just written age.
    std::thread::sleep(Duration::from_millis(1100));
    let watch = OpenWatch::new(&names.iter().map(|n| env.path(n)).collect::<Vec<_>>());

    env.ok(&["snapshot"]);
    let opened = watch.drain();
    assert_eq!(
        opened.len(),
        names.len(),
        "the first snapshot must read every file (watch check): {opened:?}"
    );

    let out = env.ok(&["snapshot"]);
    assert!(tier_line(&out, "t").contains("unchanged"), "{out}");
    let opened = watch.drain();
    assert!(
        opened.is_empty(),
        "unchanged files were read again: {opened:?}"
    );

    // Same size, mtime restored: only ctime (and the content) tell.
    let path = env.path("t/a.txt");
    let old = std::fs::read(&path).unwrap();
    let new: Vec<u8> = old.iter().map(|b| b.to_ascii_uppercase()).collect();
    assert_ne!(old, new);
    std::fs::write(&path, &new).unwrap();
    set_mtime(&path, 1_600_000_000, 0);
    assert_eq!(path.metadata().unwrap().len(), old.len() as u64);
    let before = must_tip(&env, "t");
    let out = env.ok(&["snapshot"]);
    assert_ne!(
        must_tip(&env, "t"),
        before,
        "a same-size rewrite with restored mtime was missed:\n{out}"
    );
    assert_eq!(blob_at(&env, "t", "a.txt").unwrap(), hash_of(&new));
    let opened = watch.drain();
    assert_eq!(
        opened,
        [path.display().to_string()].into_iter().collect(),
        "only the changed file should be read"
    );
    fsck_clean(&env);
}

#[test]
fn same_size_rewrite_within_the_same_second_with_restored_mtime_is_detected() {
    let env = Env::new();
    env.write("t/racy.txt", "AAAAAAAA");
    env.write("t/other.txt", "other");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let first_blob = blob_at(&env, "t", "racy.txt").unwrap();
    let path = env.path("t/racy.txt");
    let md = path.metadata().unwrap();
    let (secs, nanos) = (md.mtime(), md.mtime_nsec() as u32);

    // Immediately: same size, different content, mtime put back to the recorded value.
    std::fs::write(&path, "BBBBBBBB").unwrap();
    set_mtime(&path, secs, nanos);
    assert_eq!(
        mtime_ns(&path),
        md.mtime() * 1_000_000_000 + md.mtime_nsec()
    );
    let out = env.ok(&["snapshot"]);
    assert!(
        tier_line(&out, "t").contains("+0 ~1 -0"),
        "racy change not detected:\n{out}"
    );
    let second_blob = blob_at(&env, "t", "racy.txt").unwrap();
    assert_ne!(first_blob, second_blob);
    assert_eq!(cat_blob(&env, &second_blob), b"BBBBBBBB");
    fsck_clean(&env);
}

#[test]
fn rapid_same_size_rewrites_are_each_detected() {
    let env = Env::new();
    env.write("t/counter", "00");
    env.write("t/still", "same");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    for i in 1..=20 {
        let content = format!("{i:02}");
        env.write("t/counter", &content);
        let out = env.ok(&["snapshot"]);
        assert!(
            tier_line(&out, "t").contains("+0 ~1 -0"),
            "rewrite {i} was missed:\n{out}"
        );
        assert_eq!(
            cat_blob(&env, &blob_at(&env, "t", "counter").unwrap()),
            content.as_bytes(),
            "iteration {i}"
        );
    }
    assert_eq!(commit_count(&env, "t"), 21);
    fsck_clean(&env);
}

// ---------------------------------------------------------------------------------------------
// Point 11: lock and crash safety
// ---------------------------------------------------------------------------------------------

#[test]
fn second_snapshot_waits_for_the_lock_and_then_succeeds() {
    let env = Env::new();
    env.write("t/a", "a");
    env.init(&["t=t"]);
    let lock_path = env.shadow.join("mirror").join("lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();

    let scratch = env.root().join("scratch");
    let child = spawn_mirror(&env, &["snapshot"], "30", &scratch, "waiter");
    std::thread::sleep(Duration::from_millis(600));
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the second snapshot did not wait for the lock"
    );
    assert!(
        tip(&env, "t").is_none(),
        "a snapshot wrote while the lock was held"
    );

    // Meanwhile a snapshot with a tiny timeout gives up and says so.
    let mut cmd = env.cmd();
    cmd.args(["snapshot"]).env("MIRROR_LOCK_TIMEOUT", "0.2");
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert_exit(&out, 1, "snapshot with a tiny lock timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "did not wait the timeout"
    );
    assert!(stderr(&out).contains("locked by"), "{}", stderr(&out));

    drop(lock);
    let out = finish(child, &scratch, "waiter", 30);
    assert_exit(&out, 0, "the waiting snapshot after the lock was released");
    assert_eq!(
        recorded_files(&env, "t"),
        ["a".to_string()].into_iter().collect()
    );
    fsck_clean(&env);
}

#[test]
fn lock_timeout_error_names_the_holding_process() {
    let env = Env::new();
    for d in 0..10 {
        for f in 0..200 {
            env.write(&format!("t/d{d}/f{f}"), format!("{d}/{f}"));
        }
    }
    env.init(&["t=t"]);
    let scratch = env.root().join("scratch");
    let lock_path = env.shadow.join("mirror").join("lock");

    // Catch a real snapshot while it holds the lock, and freeze it there.
    let mut holder = spawn_mirror(&env, &["snapshot"], "10", &scratch, "holder");
    let marker = format!("pid {}", holder.id());
    let started = Instant::now();
    loop {
        let content = std::fs::read_to_string(&lock_path).unwrap_or_default();
        if content.contains(&marker) {
            break;
        }
        assert!(
            holder.try_wait().unwrap().is_none(),
            "holder finished before it could be caught"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(&holder, libc::SIGSTOP);
    assert!(
        holder.try_wait().unwrap().is_none(),
        "holder exited before it was stopped"
    );

    let mut cmd = env.cmd();
    cmd.args(["snapshot"]).env("MIRROR_LOCK_TIMEOUT", "0.3");
    let out = cmd.output().unwrap();
    signal(&holder, libc::SIGCONT);
    assert_exit(&out, 1, "snapshot while another holds the lock");
    let err = stderr(&out);
    assert!(err.contains("locked by"), "{err}");
    assert!(
        err.contains(&marker),
        "the error does not name the holder ({marker}):\n{err}"
    );

    let out = finish(holder, &scratch, "holder", 60);
    assert_exit(&out, 0, "the holder after being continued");
    assert_eq!(recorded_files(&env, "t").len(), 2000);
    // And now the lock is free again.
    env.ok(&["snapshot"]);
    fsck_clean(&env);
}

fn loose_objects(shadow: &Path) -> (usize, bool) {
    let mut count = 0;
    let mut temp = false;
    let Ok(dir) = std::fs::read_dir(shadow.join("objects")) else {
        return (0, false);
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && name.len() == 2 {
            count += std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0);
        } else if !is_dir {
            temp = true;
        }
    }
    (count, temp)
}

/// A pack file being written (`objects/pack/tmp_pack_*` with content in it).
fn pack_in_progress(shadow: &Path) -> bool {
    std::fs::read_dir(shadow.join("objects/pack"))
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("tmp_pack_")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
        })
        .unwrap_or(false)
}

/// After a `kill -9`: the shadow is a valid repository and the tier ref is absent or a commit.
fn assert_valid_after_kill(env: &Env, round: &str) {
    let out = env.shadow_git(&["fsck", "--strict", "--no-progress", "--no-dangling"]);
    assert_exit(&out, 0, &format!("git fsck --strict after kill ({round})"));
    assert!(
        !stdout(&out).contains("error") && !stderr(&out).contains("error"),
        "{round}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    if let Some(id) = tip(env, "t") {
        let out = env.shadow_git(&["cat-file", "-t", &id]);
        assert_eq!(
            stdout(&out).trim(),
            "commit",
            "{round}: tier ref points at a non-commit"
        );
        let out = env.shadow_git(&["ls-tree", "-r", &id]);
        assert_exit(&out, 0, "ls-tree of the surviving tip");
        assert!(
            note_records(env, &id).is_some(),
            "{round}: the surviving tip has no metadata note"
        );
    }
}

#[test]
fn kill_9_mid_snapshot_leaves_a_valid_repository_and_the_next_snapshot_records_everything() {
    let env = Env::new();
    for d in 0..30 {
        for f in 0..100 {
            env.write(
                &format!("t/d{d:02}/f{f:03}.txt"),
                format!("small file {d}/{f}\n"),
            );
        }
    }
    // Incompressible content, streamed (above the in-memory threshold).
    let big_len = 24 * 1024 * 1024;
    let mut big = Vec::with_capacity(big_len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while big.len() < big_len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    env.write("t/big.bin", &big);
    env.init(&["t=t"]);
    let scratch = env.root().join("scratch");

    // Round 1: kill as soon as it is writing objects (a pack being written).
    let mut child = spawn_mirror(&env, &["snapshot"], "10", &scratch, "round1");
    let started = Instant::now();
    loop {
        if loose_objects(&env.shadow).0 >= 100 || pack_in_progress(&env.shadow) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "round 1 finished before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "round 1 wrote no objects"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_valid_after_kill(&env, "round 1");

    // Round 2: kill while the big file is being streamed into a temporary pack (or object).
    let mut child = spawn_mirror(&env, &["snapshot"], "10", &scratch, "round2");
    let started = Instant::now();
    loop {
        if loose_objects(&env.shadow).1 || pack_in_progress(&env.shadow) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "round 2 finished before the big file was caught"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "round 2 never streamed the big file"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_valid_after_kill(&env, "round 2");

    // The next snapshot succeeds and records everything.
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot after two kills");
    let tree = ls_tree(&env, "t");
    let blobs = tree.values().filter(|e| e.kind == "blob").count();
    assert_eq!(blobs, 3001, "not everything was recorded");
    let big_entry = tree.get(&b"big.bin"[..]).expect("big.bin recorded");
    let size = env.shadow_git(&["cat-file", "-s", &big_entry.oid]);
    assert_eq!(stdout(&size).trim(), big_len.to_string());
    assert_eq!(big_entry.oid, hash_of(&big));
    assert_eq!(
        cat_blob(&env, &tree[&b"d17/f042.txt"[..]].oid),
        b"small file 17/42\n"
    );
    assert_valid_after_kill(&env, "after recovery");
    let out = env.ok(&["snapshot"]);
    assert!(tier_line(&out, "t").contains("unchanged"), "{out}");
}

#[test]
fn a_format_1_repository_is_read_and_upgraded_by_its_next_snapshot() {
    let env = Env::new();
    env.write("t/a.txt", "a\n");
    env.write("t/d/b.txt", "b\n");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let old = must_tip(&env, "t");
    // Make it what a format 1 mirror wrote: the note one flat blob of full paths, the config
    // saying version 1, and no stat cache (so the next snapshot reads the note).
    let v1 = b"mirror-meta 1\0m 1600000000 5 a.txt\0p 600 a.txt\0m 1500000000 7 d/b.txt\0";
    let blob = shadow_git_with(&env, &["hash-object", "-w", "--stdin"], v1);
    set_note(&env, &old, &blob);
    shadow_git_with(&env, &["config", "mirror.formatVersion", "1"], b"");
    std::fs::remove_dir_all(env.shadow.join("mirror").join("cache")).unwrap();
    std::fs::create_dir(env.shadow.join("mirror").join("cache")).unwrap();

    // Read: a restore takes the times and permissions from the flat note.
    let out_dir = env.root().join("restored");
    let out = env.mirror(&["checkout", &old, "--to", out_dir.to_str().unwrap()]);
    assert_exit(&out, 0, "checkout --to of a format 1 snapshot");
    let md = std::fs::symlink_metadata(out_dir.join("t/a.txt")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 5));
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let md = std::fs::symlink_metadata(out_dir.join("t/d/b.txt")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 7));

    // Upgraded by the next snapshot: a metadata tree, and the config says version 2.
    env.write("t/c.txt", "c\n");
    env.ok(&["snapshot"]);
    let new = must_tip(&env, "t");
    assert_ne!(new, old);
    let records = note_records(&env, &new).expect("a metadata tree");
    for name in [&b"a.txt"[..], b"d/b.txt", b"c.txt"] {
        assert!(
            records.iter().any(|(k, _, p)| k == "m" && p == name),
            "{name:?} in {records:?}"
        );
    }
    let version = shadow_git_with(&env, &["config", "mirror.formatVersion"], b"");
    assert_eq!(version, "2");
    fsck_clean(&env);
}
