//! `mirror checkout`: byte-exact round trips, restoring a lost mirror.yaml, the pre-checkout
//! snapshot and its undo, revision forms, `--tier`, `--to`, `-- PATH...`, streaming of large
//! files, silent progress when piped, and safety against hostile snapshots and planted links.

use crate::common::*;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// helpers

/// Run git (isolated like `Env::git`) with `input` on stdin; require exit 0; return stdout.
fn git_stdin(env: &Env, args: &[&str], input: &[u8]) -> String {
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    cmd.current_dir(&env.project)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn git");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0, &format!("git {}", args.join(" ")));
    stdout(&out)
}

fn shadow_git_ok(env: &Env, args: &[&str]) -> String {
    let out = env.shadow_git(args);
    assert_exit(&out, 0, &format!("git --git-dir=SHADOW {}", args.join(" ")));
    stdout(&out).trim().to_owned()
}

/// Full commit id of a revision in the shadow repository.
fn rev(env: &Env, rev: &str) -> String {
    shadow_git_ok(
        env,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )
}

fn commit_count(env: &Env, tier: &str) -> usize {
    shadow_git_ok(
        env,
        &["rev-list", "--count", &format!("refs/heads/tiers/{tier}")],
    )
    .parse()
    .unwrap()
}

fn commit_time(env: &Env, id: &str) -> i64 {
    shadow_git_ok(env, &["log", "-1", "--format=%ct", id])
        .parse()
        .unwrap()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sleep until the wall clock (whole seconds) has passed `t`, so the next commit gets a later
/// committer time than one made at `t`.
fn sleep_past(t: i64) {
    while now_secs() <= t {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The commit id in the "undo with: mirror checkout <id>" line of a checkout's stderr.
fn undo_id(err: &str) -> String {
    let line = err
        .lines()
        .find(|l| l.starts_with("undo with: mirror checkout "))
        .unwrap_or_else(|| panic!("no 'undo with: mirror checkout <id>' line in stderr:\n{err}"));
    line["undo with: mirror checkout ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn tree_of(env: &Env, rel: &str) -> BTreeMap<Vec<u8>, Node> {
    tree(&env.path(rel), &[])
}

/// The raw bytes of a git tree object: `<mode> <name>\0<20-byte id>` per entry.
fn raw_tree(entries: &[(&str, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, name, hex) in entries {
        out.extend_from_slice(mode.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(0);
        let id: Vec<u8> = (0..20)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        out.extend_from_slice(&id);
    }
    out
}

/// Write a tree object verbatim (no name checks) into the shadow repository.
fn hostile_tree(env: &Env, entries: &[(&str, &[u8], &str)]) -> String {
    let dir = format!("--git-dir={}", env.shadow.display());
    git_stdin(
        env,
        &[
            &dir,
            "hash-object",
            "-t",
            "tree",
            "--literally",
            "-w",
            "--stdin",
        ],
        &raw_tree(entries),
    )
    .trim()
    .to_owned()
}

fn shadow_blob(env: &Env, content: &[u8]) -> String {
    let dir = format!("--git-dir={}", env.shadow.display());
    git_stdin(env, &[&dir, "hash-object", "-w", "--stdin"], content)
        .trim()
        .to_owned()
}

/// A commit of `tree` on top of the tier's tip that looks like a mirror snapshot of `tier`.
fn hostile_commit(env: &Env, tier: &str, tree: &str) -> String {
    let parent = rev(env, &format!("refs/heads/tiers/{tier}"));
    let message = format!("snapshot {tier}: +1 ~0 -0\n\nMirror-Tier: {tier}\nMirror-Trigger: manual\nMirror-Format: 1\n");
    shadow_git_ok(
        env,
        &[
            "-c",
            "user.name=evil",
            "-c",
            "user.email=evil@example.com",
            "commit-tree",
            tree,
            "-p",
            &parent,
            "-m",
            &message,
        ],
    )
}

/// A deterministic, incompressible-looking block generator (xorshift64*).
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Write a `mib` MiB file chunk by chunk (never whole in memory): one 1 MiB random block,
/// each copy stamped with its index so no two chunks are equal.
fn write_big_file(path: &Path, mib: u64) {
    let mut block = vec![0u8; 1 << 20];
    Noise(0x9e37_79b9_7f4a_7c15).fill(&mut block);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..mib {
        block[..8].copy_from_slice(&i.to_le_bytes());
        block[4096..4104].copy_from_slice(&(!i).to_le_bytes());
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// Compare two files chunk by chunk.
fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// the rich tree of the round trip

const ATTRIBUTES: &str = "* text eol=crlf\n*.txt ident\n*.rs filter=upper\n";

/// Everything a tier can hold that must come back exactly: nested dirs, dotfiles, a gitignored
/// target/, an executable, symlinks of every sort, empty dirs, odd names, set mtimes, a
/// .gitattributes asking for conversions, LF and CRLF text, binary data, an empty file.
fn build_rich_tier(env: &Env, tier: &str) {
    let t = env.path(tier);
    env.write(&format!("{tier}/.gitattributes"), ATTRIBUTES);
    env.write(&format!("{tier}/.gitignore"), "target/\n*.log\n");
    env.write(&format!("{tier}/README.txt"), "hello\n$Id$\nline three\n");
    env.write(&format!("{tier}/crlf.txt"), "already\r\ncrlf\r\n");
    env.write(
        &format!("{tier}/src/main.rs"),
        "fn main() { println!(\"abc\"); }\n",
    );
    env.write(&format!("{tier}/src/deep/er/still/leaf.txt"), "deep\n");
    env.write(&format!("{tier}/.env"), "SECRET=1\n");
    env.write(&format!("{tier}/.hidden/dot.cfg"), "x = 1\n");
    env.write(&format!("{tier}/.hidden/.even-more/v"), "v\n");
    env.write(&format!("{tier}/debug.log"), "ignored log\n");
    env.write(
        &format!("{tier}/target/debug/app.bin"),
        b"\x00\x01\r\n\xff\xfe binary\n".repeat(100),
    );
    env.write(&format!("{tier}/target/debug/.fingerprint/x.json"), "{}\n");
    env.write(&format!("{tier}/bin/run.sh"), "#!/bin/sh\necho hi\n");
    env.write(&format!("{tier}/empty.txt"), "");
    mkdir(&t.join("empty-dir"));
    mkdir(&t.join("nest/empty/deeper"));
    mkdir(&t.join(".empty-hidden"));
    // Odd names.
    write(
        &t.join(OsStr::from_bytes(b"names/bad-\xff-name")),
        "not utf-8 name\n",
    );
    write(&t.join("names/new\nline"), "newline in name\n");
    write(&t.join("names/git~2"), "short name\n");
    write(&t.join("names/ spaces and\ttab "), "ws\n");
    // Modes.
    for p in [
        "README.txt",
        "crlf.txt",
        "src/main.rs",
        ".env",
        "empty.txt",
        "names/git~2",
    ] {
        chmod(&t.join(p), 0o644);
    }
    chmod(&t.join("bin/run.sh"), 0o755);
    // Symlinks: relative, absolute, dangling, loops, to a directory.
    symlink("../src/main.rs", &t.join("links/rel"));
    symlink(t.join("README.txt"), &t.join("links/abs"));
    symlink("does/not/exist", &t.join("links/dangling"));
    symlink("loop-b", &t.join("links/loop-a"));
    symlink("loop-a", &t.join("links/loop-b"));
    symlink("self", &t.join("links/self"));
    symlink("../src", &t.join("links/dir-link"));
    symlink(
        OsStr::from_bytes(b"../names/bad-\xff-name"),
        &t.join("links/to-bad-name"),
    );
    // Modification times, nanoseconds included (and one before the epoch).
    set_mtime(&t.join("README.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&t.join("bin/run.sh"), 1_234_567_890, 1);
    set_mtime(&t.join("empty.txt"), 1_000_000_000, 999_999_999);
    set_mtime(
        &t.join(OsStr::from_bytes(b"names/bad-\xff-name")),
        1_700_000_000,
        500_000_000,
    );
    set_mtime(&t.join("target/debug/app.bin"), 1_650_000_000, 42);
    set_mtime(&t.join("crlf.txt"), -86_400 * 365, 7);
    set_mtime(&t.join("links/rel"), 1_500_000_000, 987_654_321);
    set_mtime(&t.join("links/loop-a"), 1_400_000_000, 1);
}

fn build_small_tier(env: &Env, tier: &str) {
    env.write(&format!("{tier}/notes.md"), "# notes\n");
    env.write(&format!("{tier}/.cache/blob"), b"\x00\x00\x01");
    set_mtime(
        &env.path(&format!("{tier}/notes.md")),
        1_610_000_000,
        111_111_111,
    );
}

/// Snapshot a rich project, lose everything with `rm -rf` and `git clean -fdx`, check it out.
fn round_trip(env: &Env) {
    env.git_ok(&["init", "-q"]);
    build_rich_tier(env, "tier-0");
    build_small_tier(env, "tier-minus1");
    env.init(&["tier-0=tier-0", "tier-minus1=tier-minus1"]);
    let config = env.read("mirror.yaml");
    let before = tree(&env.project, &[".git", "mirror.yaml"]);
    env.ok(&["snapshot"]);

    std::fs::remove_dir_all(env.path("tier-0/.hidden")).unwrap();
    env.git_ok(&["clean", "-fdx", "-q"]);
    assert!(
        !env.path("tier-0").exists() && !env.path("tier-minus1").exists(),
        "git clean removed the tiers"
    );
    assert!(
        !env.path("mirror.yaml").exists(),
        "git clean removed the untracked mirror.yaml"
    );

    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 0, "mirror checkout latest");
    let after = tree(&env.project, &[".git", "mirror.yaml"]);
    assert_eq!(after.len(), before.len(), "same set of paths");
    for (path, node) in &before {
        assert_eq!(
            after.get(path),
            Some(node),
            "{:?} differs after the round trip",
            String::from_utf8_lossy(path)
        );
    }
    assert_eq!(after, before);
    assert_eq!(
        env.read("mirror.yaml"),
        config,
        "mirror.yaml restored byte for byte"
    );
    // Spelled out: no eol, ident or filter conversion.
    assert_eq!(env.read("tier-0/README.txt"), b"hello\n$Id$\nline three\n");
    assert_eq!(env.read("tier-0/crlf.txt"), b"already\r\ncrlf\r\n");
    assert_eq!(
        env.read("tier-0/src/main.rs"),
        b"fn main() { println!(\"abc\"); }\n"
    );
}

#[test]
fn round_trip_after_git_clean_is_byte_identical() {
    let env = Env::new();
    round_trip(&env);
}

#[test]
fn round_trip_ignores_users_autocrlf_and_filters() {
    let env = Env::new();
    std::fs::write(
        env.home.join("gitconfig"),
        "[core]\n\tautocrlf = true\n\teol = crlf\n\tsafecrlf = false\n\
         [filter \"upper\"]\n\tclean = tr a-z A-Z\n\tsmudge = tr a-z A-Z\n\trequired = true\n",
    )
    .unwrap();
    round_trip(&env);
}

#[test]
fn checkout_to_empty_dir_reproduces_rich_tree_and_leaves_tiers_alone() {
    let env = Env::new();
    build_rich_tier(&env, "tier-0");
    build_small_tier(&env, "tier-minus1");
    env.init(&["tier-0=tier-0", "tier-minus1=tier-minus1"]);
    env.ok(&["snapshot"]);
    let recorded0 = tree_of(&env, "tier-0");
    let recorded1 = tree_of(&env, "tier-minus1");
    // Change the tiers after the snapshot; --to must restore the snapshot, not the disk.
    env.write("tier-0/README.txt", "changed\n");
    env.write("tier-0/new-file", "new\n");
    std::fs::remove_file(env.path("tier-minus1/notes.md")).unwrap();
    let project_before = tree(&env.project, &[]);
    let commits_before = (
        commit_count(&env, "tier-0"),
        commit_count(&env, "tier-minus1"),
    );

    let out_dir = env.root().join("restored");
    let out = env.mirror(&["checkout", "latest", "--to", out_dir.to_str().unwrap()]);
    assert_exit(&out, 0, "checkout --to");
    assert_eq!(tree(&out_dir.join("tier-0"), &[]), recorded0);
    assert_eq!(tree(&out_dir.join("tier-minus1"), &[]), recorded1);
    let top: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top.len(), 2, "only the tier directories in DIR: {top:?}");

    assert_eq!(
        tree(&env.project, &[]),
        project_before,
        "--to touched the project"
    );
    assert_eq!(
        (
            commit_count(&env, "tier-0"),
            commit_count(&env, "tier-minus1")
        ),
        commits_before,
        "--to recorded a snapshot"
    );
    assert!(
        !stderr(&out).contains("undo with"),
        "nothing to undo with --to:\n{}",
        stderr(&out)
    );
}

/// A tier of 600 files: enough for the restore to be shared between writer threads.
/// Every file gets its own content (empty, small, larger than one 64 KiB copy piece), a mode
/// from 0600 to 0755 and a modification time with nanoseconds; plus empty directories,
/// symlinks, and a treasure (written by the thread that holds the keys).
fn build_many_files_tier(env: &Env, tier: &str) {
    let t = env.path(tier);
    let modes = [0o644, 0o600, 0o640, 0o755, 0o700];
    for i in 0..600usize {
        let rel = format!("{tier}/a{}/b{}/c{}/f{i:03}.txt", i % 3, i % 5, i % 7);
        let content = if i % 97 == 0 {
            vec![b'0' + (i % 10) as u8; 70_000 + i]
        } else {
            format!("file {i}\n").repeat(i % 40).into_bytes()
        };
        env.write(&rel, content);
        chmod(&env.path(&rel), modes[i % modes.len()]);
        set_mtime(
            &env.path(&rel),
            1_600_000_000 + i as i64 * 3_600,
            (i as i64 * 7_919_123) % 1_000_000_000,
        );
    }
    mkdir(&t.join("empty/one"));
    mkdir(&t.join("a0/b0/empty-too"));
    symlink("../a1", &t.join("a0/to-a1"));
    symlink("c0/f000.txt", &t.join("a0/b0/to-file"));
    set_mtime(&t.join("a0/b0/to-file"), 1_500_000_000, 5);
    env.write(&format!("{tier}/.hidden/key.txt"), "treasure\n");
    chmod(&t.join(".hidden/key.txt"), 0o600);
    set_mtime(&t.join(".hidden/key.txt"), 1_700_000_000, 123_456_789);
}

#[test]
fn many_files_restore_exactly_to_an_empty_dir_in_place_and_when_missing() {
    let env = Env::new();
    build_many_files_tier(&env, "tier-0");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let recorded = tree_of(&env, "tier-0");
    assert!(recorded.len() > 600, "{} entries", recorded.len());

    // Into an empty directory: files are created under their own names.
    let out_dir = env.root().join("restored");
    let out = env.mirror(&["checkout", "latest", "--to", out_dir.to_str().unwrap()]);
    assert_exit(&out, 0, "checkout --to");
    assert_eq!(tree(&out_dir.join("tier-0"), &[]), recorded, "--to");

    // In place, into a tier that is gone: through temporary files.
    std::fs::remove_dir_all(env.path("tier-0")).unwrap();
    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 0, "checkout in place");
    assert!(
        stdout(&out).contains("603 written"),
        "600 files, the treasure and 2 links:\n{}",
        stdout(&out)
    );
    assert_eq!(tree_of(&env, "tier-0"), recorded, "in place");

    // Only what is missing, never replacing what is there.
    for a in ["a1", "a2"] {
        std::fs::remove_dir_all(env.path(&format!("tier-0/{a}"))).unwrap();
    }
    env.ok(&["restore", "--missing"]);
    assert_eq!(tree_of(&env, "tier-0"), recorded, "restore --missing");
}

/// A file that is in the snapshot but now excluded, and so in no pre-checkout snapshot, is
/// left alone by a checkout; every other file is written, and the one failure is reported
/// by name (exit 3), also when writer threads do the writing.
#[test]
fn an_excluded_file_in_the_way_fails_alone_in_a_large_restore() {
    let env = Env::new();
    build_many_files_tier(&env, "tier-0");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let recorded = tree_of(&env, "tier-0");

    env.write("tier-0/.mirrorignore", "/a1/b1/c1/f001.txt\n");
    env.write("tier-0/a1/b1/c1/f001.txt", "mine, excluded\n");
    for a in ["a0", "a2"] {
        std::fs::remove_dir_all(env.path(&format!("tier-0/{a}"))).unwrap();
    }
    for entry in std::fs::read_dir(env.path("tier-0/a1")).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with("b1") {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 3, "checkout with an excluded file in the way");
    let err = stderr(&out);
    assert!(
        err.contains("f001.txt") && err.contains("in no snapshot"),
        "the excluded file is named:\n{err}"
    );
    assert_eq!(env.read("tier-0/a1/b1/c1/f001.txt"), b"mine, excluded\n");
    let mut got = tree_of(&env, "tier-0");
    let mut want = recorded;
    got.remove(b"a1/b1/c1/f001.txt".as_slice());
    want.remove(b"a1/b1/c1/f001.txt".as_slice());
    assert_eq!(got, want, "everything else restored");
}

#[test]
fn checkout_to_non_empty_dir_is_refused() {
    let env = Env::new();
    env.write("tier-0/a.txt", "a\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let out_dir = env.root().join("busy");
    write(&out_dir.join("precious.txt"), "keep me\n");
    let before = tree(&out_dir, &[]);
    let out = env.mirror(&["checkout", "latest", "--to", out_dir.to_str().unwrap()]);
    assert_exit(&out, 1, "checkout --to non-empty dir");
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(tree(&out_dir, &[]), before, "the non-empty DIR was changed");
}

// ---------------------------------------------------------------------------------------------
// mirror.yaml lost

fn git_project_with_tracked_and_ignored_files(env: &Env) {
    std::fs::write(
        env.home.join("gitconfig"),
        "[user]\n\tname = T\n\temail = t@example.com\n",
    )
    .unwrap();
    env.git_ok(&["init", "-q"]);
    env.write("tier-0/.gitignore", "target/\n");
    env.write("tier-0/src.rs", "fn f() {}\n");
    env.write("tier-0/target/out.bin", b"\x7fELF build output");
    env.write("tier-0/.env", "TOKEN=untracked\n");
    env.git_ok(&["add", "tier-0/.gitignore", "tier-0/src.rs"]);
    env.git_ok(&["commit", "-q", "-m", "tracked files"]);
}

fn lost_config_is_restored(env: &Env, shadow: &Path) {
    let config = env.read("mirror.yaml");
    let before = tree_of(env, "tier-0");
    env.ok(&["snapshot"]);
    env.git_ok(&["clean", "-fdx", "-q"]);
    assert!(
        !env.path("mirror.yaml").exists(),
        "git clean removed mirror.yaml"
    );
    assert!(!env.path("tier-0/target").exists() && !env.path("tier-0/.env").exists());

    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 0, "checkout latest without mirror.yaml");
    let err = stderr(&out);
    assert!(
        err.contains("no mirror.yaml"),
        "says mirror.yaml was missing:\n{err}"
    );
    assert!(
        err.contains(&shadow.display().to_string()),
        "names the shadow it found ({}):\n{err}",
        shadow.display()
    );
    assert!(
        err.contains("restored") && err.contains("mirror.yaml"),
        "says mirror.yaml was restored:\n{err}"
    );
    assert_eq!(
        env.read("mirror.yaml"),
        config,
        "mirror.yaml restored byte for byte"
    );
    assert_eq!(tree_of(env, "tier-0"), before, "everything else restored");

    // Afterwards the project works from its own mirror.yaml again.
    let out = env.mirror(&["log"]);
    assert_exit(&out, 0, "log");
    assert!(!stderr(&out).contains("no mirror.yaml"), "{}", stderr(&out));
}

#[test]
fn checkout_without_mirror_yaml_finds_custom_shadow_via_registry() {
    let env = Env::new();
    git_project_with_tracked_and_ignored_files(&env);
    env.init(&["tier-0=tier-0"]);
    lost_config_is_restored(&env, &env.shadow);
}

#[test]
fn checkout_without_mirror_yaml_finds_default_shadow() {
    let env = Env::new();
    git_project_with_tracked_and_ignored_files(&env);
    env.ok(&["init"]);
    let data = env.home.join("data/mirror");
    let shadows: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("HEAD").is_file())
        .collect();
    assert_eq!(
        shadows.len(),
        1,
        "one shadow under {}: {shadows:?}",
        data.display()
    );
    lost_config_is_restored(&env, &shadows[0]);
}

// ---------------------------------------------------------------------------------------------
// scope of a checkout

#[test]
fn files_new_since_snapshot_are_removed_only_inside_the_restored_scope() {
    let env = Env::new();
    env.write("tier-a/keep.txt", "a\n");
    env.write("tier-a/sub/x.txt", "x\n");
    env.write("tier-b/b.txt", "b\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);

    env.write("tier-a/new.txt", "new in a\n");
    env.write("tier-a/newdir/deep/n.txt", "new dir in a\n");
    env.write("tier-a/sub/new-in-sub.txt", "new in sub\n");
    symlink("keep.txt", &env.path("tier-a/new-link"));
    env.write("tier-b/new-b.txt", "new in b\n");
    env.write("outside.txt", "not in any tier\n");
    let b_before = tree_of(&env, "tier-b");

    let out = env.mirror(&["checkout", "latest", "--tier", "a"]);
    assert_exit(&out, 0, "checkout latest --tier a");
    for gone in [
        "tier-a/new.txt",
        "tier-a/newdir",
        "tier-a/sub/new-in-sub.txt",
        "tier-a/new-link",
    ] {
        assert!(
            env.path(gone).symlink_metadata().is_err(),
            "{gone} should have been removed"
        );
    }
    assert_eq!(env.read("tier-a/keep.txt"), b"a\n");
    assert_eq!(env.read("tier-a/sub/x.txt"), b"x\n");
    assert_eq!(
        tree_of(&env, "tier-b"),
        b_before,
        "another tier was touched"
    );
    assert_eq!(
        env.read("outside.txt"),
        b"not in any tier\n",
        "a file outside the tiers was touched"
    );
}

#[test]
fn tier_option_restores_only_that_tier() {
    let env = Env::new();
    env.write("tier-a/f.txt", "a1\n");
    env.write("tier-b/f.txt", "b1\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    env.write("tier-a/f.txt", "a2\n");
    env.write("tier-b/f.txt", "b2\n");
    let b_before = tree_of(&env, "tier-b");
    let b_commits = commit_count(&env, "b");

    let out = env.mirror(&["checkout", "latest", "--tier", "a"]);
    assert_exit(&out, 0, "checkout --tier a");
    assert_eq!(env.read("tier-a/f.txt"), b"a1\n");
    assert_eq!(tree_of(&env, "tier-b"), b_before);
    assert_eq!(env.read("tier-b/f.txt"), b"b2\n");
    assert_eq!(
        commit_count(&env, "b"),
        b_commits,
        "tier b was snapshotted by a checkout of tier a"
    );
}

fn paths_project(env: &Env) {
    env.write("tier-0/a.txt", "a1\n");
    env.write("tier-0/other.txt", "o1\n");
    env.write("tier-0/dir/x.txt", "x1\n");
    env.write("tier-0/dir/sub/y.txt", "y1\n");
    env.write("tier-0/dirx/z.txt", "z1\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    env.write("tier-0/a.txt", "a2\n");
    env.write("tier-0/other.txt", "o2\n");
    env.write("tier-0/dir/x.txt", "x2\n");
    std::fs::remove_file(env.path("tier-0/dir/sub/y.txt")).unwrap();
    env.write("tier-0/dir/new.txt", "new\n");
    env.write("tier-0/dirx/z.txt", "z2\n");
    env.write("tier-0/new-top.txt", "new top\n");
}

fn assert_paths_restored(env: &Env) {
    assert_eq!(env.read("tier-0/a.txt"), b"a1\n");
    assert_eq!(env.read("tier-0/dir/x.txt"), b"x1\n");
    assert_eq!(env.read("tier-0/dir/sub/y.txt"), b"y1\n");
    assert!(
        !env.path("tier-0/dir/new.txt").exists(),
        "new file inside a restored dir is removed"
    );
    // Not given: left alone (including a sibling whose name merely starts with "dir").
    assert_eq!(env.read("tier-0/other.txt"), b"o2\n");
    assert_eq!(env.read("tier-0/dirx/z.txt"), b"z2\n");
    assert_eq!(env.read("tier-0/new-top.txt"), b"new top\n");
}

#[test]
fn paths_restore_only_the_given_file_and_directory() {
    let env = Env::new();
    paths_project(&env);
    let out = env.mirror(&["checkout", "latest", "--", "tier-0/a.txt", "tier-0/dir"]);
    assert_exit(&out, 0, "checkout latest -- a.txt dir");
    assert_paths_restored(&env);
}

#[test]
fn paths_are_relative_to_the_project_root_even_from_a_subdirectory() {
    let env = Env::new();
    paths_project(&env);
    let cwd = env.path("tier-0/dirx");
    let out = env.mirror_in(
        &cwd,
        &["checkout", "latest", "--", "tier-0/a.txt", "tier-0/dir"],
    );
    assert_exit(&out, 0, "checkout latest -- PATH... from a subdirectory");
    assert_paths_restored(&env);
}

#[test]
fn path_matching_nothing_is_refused_and_changes_nothing() {
    let env = Env::new();
    paths_project(&env);
    let before = tree_of(&env, "tier-0");
    let tips = env.shadow_git(&["for-each-ref", "refs/heads"]);
    let out = env.mirror(&["checkout", "latest", "--", "tier-0/no-such-thing"]);
    assert_exit(&out, 2, "checkout of a path that matches nothing");
    assert!(stderr(&out).contains("matches nothing"), "{}", stderr(&out));
    assert_eq!(
        tree_of(&env, "tier-0"),
        before,
        "nothing on disk may change"
    );
    assert_eq!(
        env.shadow_git(&["for-each-ref", "refs/heads"]).stdout,
        tips.stdout,
        "no pre-checkout snapshot for a refused checkout"
    );
}

// ---------------------------------------------------------------------------------------------
// pre-checkout snapshot and undo

#[test]
fn pre_checkout_snapshot_is_recorded_and_undo_restores_it() {
    let env = Env::new();
    env.write("tier-0/f.txt", "v1\n");
    env.write("tier-0/stay.txt", "stay\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot", "-m", "first"]);
    let first = rev(&env, "refs/heads/tiers/t");

    env.write("tier-0/f.txt", "v2 unsaved work\n");
    env.write("tier-0/added.txt", "added after the snapshot\n");
    std::fs::remove_file(env.path("tier-0/stay.txt")).unwrap();
    set_mtime(&env.path("tier-0/f.txt"), 1_690_000_000, 12_345);
    let modified = tree_of(&env, "tier-0");

    let out = env.mirror(&["checkout", &first]);
    assert_exit(&out, 0, "checkout first");
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(env.read("tier-0/f.txt"), b"v1\n");
    assert!(!env.path("tier-0/added.txt").exists());
    assert_eq!(env.read("tier-0/stay.txt"), b"stay\n");

    let tip = rev(&env, "refs/heads/tiers/t");
    assert_ne!(tip, first, "a pre-checkout snapshot was committed");
    assert_eq!(rev(&env, "refs/heads/tiers/t~1"), first);
    assert!(
        o.contains("pre-checkout") && o.contains(&tip[..7]),
        "stdout names the pre-checkout snapshot:\n{o}"
    );
    let undo = undo_id(&e);
    assert!(
        tip.starts_with(&undo),
        "undo id {undo} is the pre-checkout commit {tip}"
    );

    let message = shadow_git_ok(&env, &["log", "-1", "--format=%B", "refs/heads/tiers/t"]);
    assert!(
        message.contains("Mirror-Trigger: pre-checkout"),
        "{message}"
    );
    let log = env.ok(&["log"]);
    let newest = log.lines().next().unwrap_or_default();
    assert!(
        newest.contains("pre-checkout") && newest.contains(&tip[..7]),
        "mirror log shows it first:\n{log}"
    );
    let git_log = shadow_git_ok(
        &env,
        &[
            "log",
            "--format=%H %(trailers:key=Mirror-Trigger,valueonly)",
            "tiers/t",
        ],
    );
    assert!(
        git_log.contains(&format!("{tip} pre-checkout")),
        "git log of the tier:\n{git_log}"
    );

    // The printed command really undoes the checkout.
    let out = env.mirror(&["checkout", &undo]);
    assert_exit(&out, 0, "the undo command");
    assert_eq!(
        tree_of(&env, "tier-0"),
        modified,
        "undo brings the pre-checkout state back exactly"
    );
}

#[test]
fn undo_line_of_a_path_checkout_restores_those_paths() {
    let env = Env::new();
    env.write("tier-0/f.txt", "v1\n");
    env.write("tier-0/g.txt", "g1\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    env.write("tier-0/f.txt", "v2\n");
    env.write("tier-0/g.txt", "g2\n");
    let modified = tree_of(&env, "tier-0");
    let out = env.mirror(&["checkout", "latest", "--", "tier-0/f.txt"]);
    assert_exit(&out, 0, "checkout -- f.txt");
    assert_eq!(env.read("tier-0/f.txt"), b"v1\n");
    assert_eq!(env.read("tier-0/g.txt"), b"g2\n");
    let line = stderr(&out)
        .lines()
        .find(|l| l.starts_with("undo with: "))
        .unwrap_or_default()
        .to_owned();
    let args: Vec<&str> = line["undo with: mirror ".len()..].split(' ').collect();
    let out = env.mirror(&args);
    assert_exit(&out, 0, &line);
    assert_eq!(tree_of(&env, "tier-0"), modified);
}

// ---------------------------------------------------------------------------------------------
// revisions

fn restore_to(env: &Env, args: &[&str], name: &str) -> Vec<u8> {
    let dir = env.root().join(name);
    let dir_s = dir.to_str().unwrap().to_owned();
    let mut all = vec!["checkout"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--to", &dir_s]);
    let out = env.mirror(&all);
    assert_exit(&out, 0, &format!("mirror {}", all.join(" ")));
    std::fs::read(dir.join("tier-0/f.txt")).unwrap()
}

fn local_time(secs: i64) -> String {
    let out = Command::new("date")
        .args(["-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .unwrap();
    assert!(out.status.success());
    stdout(&out).trim().to_owned()
}

#[test]
fn revision_forms_select_the_right_snapshot() {
    let env = Env::new();
    env.write("tier-0/f.txt", "v1\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let s1 = rev(&env, "tiers/t");
    let t1 = commit_time(&env, &s1);
    sleep_past(t1);
    env.write("tier-0/f.txt", "v2\n");
    env.ok(&["snapshot"]);
    let s2 = rev(&env, "tiers/t");
    let t2 = commit_time(&env, &s2);
    // Two whole seconds to the next snapshot, so "N seconds ago" can land in between.
    sleep_past(t2 + 1);
    env.write("tier-0/f.txt", "v3\n");
    env.ok(&["snapshot"]);
    let s3 = rev(&env, "tiers/t");
    let t3 = commit_time(&env, &s3);
    assert!(t1 < t2 && t2 + 2 <= t3, "commit times {t1} {t2} {t3}");

    assert_eq!(restore_to(&env, &["latest"], "latest"), b"v3\n");
    assert_eq!(restore_to(&env, &["tiers/t~1"], "tilde1"), b"v2\n");
    assert_eq!(restore_to(&env, &["tiers/t~2"], "tilde2"), b"v1\n");
    assert_eq!(restore_to(&env, &[&s1], "full"), b"v1\n");
    assert_eq!(restore_to(&env, &[&s2[..7]], "short"), b"v2\n");

    // RFC 3339 with an offset: exactly the time of s1, before s2.
    let rfc = chrono::DateTime::from_timestamp(t1, 0)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 30 * 60).unwrap())
        .to_rfc3339();
    assert_eq!(
        restore_to(&env, &["--at", &rfc], "rfc3339"),
        b"v1\n",
        "--at {rfc}"
    );
    let rfc_z = chrono::DateTime::from_timestamp(t2 + 1, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        restore_to(&env, &["--at", &rfc_z], "rfc3339z"),
        b"v2\n",
        "--at {rfc_z}"
    );
    // Local "YYYY-MM-DD HH:MM:SS" strictly between s2 and s3.
    let local = local_time(t2 + 1);
    assert_eq!(
        restore_to(&env, &["--at", &local], "local"),
        b"v2\n",
        "--at {local}"
    );
    // "N seconds ago" aimed at s2 (mirror's clock may be up to a second later than ours).
    let ago = format!("{} seconds ago", now_secs() - t2);
    assert_eq!(
        restore_to(&env, &["--at", &ago], "ago"),
        b"v2\n",
        "--at {ago}"
    );
    assert_eq!(commit_count(&env, "t"), 3, "--to never records a snapshot");
}

#[test]
fn in_place_checkout_of_an_older_revision_by_tilde() {
    let env = Env::new();
    env.write("tier-0/f.txt", "v1\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    env.write("tier-0/f.txt", "v2\n");
    env.write("tier-0/only-in-v2.txt", "x\n");
    env.ok(&["snapshot"]);
    let out = env.mirror(&["checkout", "tiers/t~1"]);
    assert_exit(&out, 0, "checkout tiers/t~1");
    assert_eq!(env.read("tier-0/f.txt"), b"v1\n");
    assert!(!env.path("tier-0/only-in-v2.txt").exists());
}

#[test]
fn unknown_revision_fails_pointing_at_mirror_log() {
    let env = Env::new();
    env.write("tier-0/f.txt", "v1\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    env.write("tier-0/f.txt", "v2\n");
    let commits = commit_count(&env, "t");
    for bad in [
        "no-such-revision",
        "tiers/t~5",
        "0123456789abcdef0123456789abcdef01234567",
    ] {
        let out = env.mirror(&["checkout", bad]);
        assert_exit(&out, 1, &format!("checkout {bad}"));
        assert!(
            stderr(&out).contains("mirror log"),
            "checkout {bad}: {}",
            stderr(&out)
        );
    }
    let out = env.mirror(&["checkout", "--at", "2001-01-01 00:00:00"]);
    assert_exit(&out, 1, "checkout --at before any snapshot");
    assert!(stderr(&out).contains("mirror log"), "{}", stderr(&out));
    assert_eq!(
        env.read("tier-0/f.txt"),
        b"v2\n",
        "a failed checkout changed files"
    );
    assert_eq!(
        commit_count(&env, "t"),
        commits,
        "a failed checkout recorded a snapshot"
    );
}

// ---------------------------------------------------------------------------------------------
// large files (point 5) and progress (point 13)

/// Size of the large file: big enough that holding it whole would blow the 100 MiB limit
/// three times over.
const BIG_MIB: u64 = 300;

/// Run one mirror command to completion; returns its exit code, stderr and its own peak
/// resident memory in KiB (from `wait4`, so other tests' processes running in parallel in
/// this test binary cannot distort it, unlike the process-wide `children_max_rss_kib`).
fn run_measuring_rss(env: &Env, args: &[&str]) -> (Option<i32>, String, i64) {
    let err_file = tempfile::tempfile().unwrap();
    let mut cmd = env.cmd();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_file.try_clone().unwrap()));
    let child = cmd.spawn().expect("spawn mirror");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 only writes into the two out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let mut err = String::new();
    let mut f = err_file;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut err).unwrap();
    (code, err, usage.ru_maxrss)
}

#[test]
fn large_file_streams_through_snapshot_and_restore() {
    large_file_streams("big.bin");
}

/// A treasure is encrypted and decrypted on the way, still streaming.
#[test]
fn large_treasure_streams_through_encryption_and_decryption() {
    let env = large_file_streams(".hidden/big.bin");
    let out = env.shadow_git(&["cat-file", "-s", "tiers/t:.hidden/big.bin"]);
    assert_exit(&out, 0, "cat-file -s");
    let stored: u64 = stdout(&out).trim().parse().unwrap();
    // age adds a header and 16 bytes per 64 KiB chunk: the blob is the ciphertext.
    assert!(
        stored > BIG_MIB << 20,
        "blob of {stored} bytes is not the ciphertext"
    );
    let head = env.shadow_git(&["cat-file", "blob", "tiers/t:.hidden/big.bin"]);
    assert!(head.stdout.starts_with(b"age-encryption.org/v1\n"));
}

/// Snapshot and restore a `BIG_MIB` file at `rel` in tier `t`, each under 100 MiB of memory.
fn large_file_streams(rel: &str) -> Env {
    const LIMIT_KIB: i64 = 100 * 1024;
    let env = Env::new();
    let big = env.path("tier-0").join(rel);
    mkdir(big.parent().unwrap());
    write_big_file(&big, BIG_MIB);
    env.write("tier-0/small.txt", "small\n");
    env.init(&["t=tier-0"]);

    let (code, err, snapshot_rss) = run_measuring_rss(&env, &["snapshot"]);
    assert_eq!(code, Some(0), "snapshot failed:\n{err}");
    let out_dir = env.root().join("out");
    let (code, err, restore_rss) = run_measuring_rss(
        &env,
        &["checkout", "latest", "--to", out_dir.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "checkout --to failed:\n{err}");

    assert!(
        same_content(&big, &out_dir.join("tier-0").join(rel)),
        "restored {BIG_MIB} MiB file differs"
    );
    assert_eq!(
        std::fs::read(out_dir.join("tier-0/small.txt")).unwrap(),
        b"small\n"
    );
    assert!(
        snapshot_rss > 0 && restore_rss > 0,
        "no resource usage recorded"
    );
    assert!(
        snapshot_rss < LIMIT_KIB,
        "snapshot of a {BIG_MIB} MiB file peaked at {snapshot_rss} KiB (limit 100 MiB)"
    );
    assert!(
        restore_rss < LIMIT_KIB,
        "restore of a {BIG_MIB} MiB file peaked at {restore_rss} KiB (limit 100 MiB)"
    );
    env
}

fn many_files(env: &Env, tier: &str, n: usize) {
    for i in 0..n {
        env.write(
            &format!("{tier}/d{:02}/f{i:05}.txt", i % 40),
            format!("file {i}\n"),
        );
    }
}

fn assert_no_progress_output(err: &str, what: &str) {
    assert!(
        !err.contains('\r'),
        "{what}: carriage return in stderr:\n{err:?}"
    );
    assert!(
        !err.contains('\x1b'),
        "{what}: terminal escape in stderr:\n{err:?}"
    );
    assert!(
        !err.contains('['),
        "{what}: progress bar characters in stderr:\n{err:?}"
    );
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain anything, so parse after the last ')'.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A child process of `parent`, if there is one.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| parent_of(*pid) == Some(parent))
}

/// Run a checkout that restores into `tier_dir`; as soon as the restore loop has written its
/// first entry, freeze the mirror process for 1.5 s, so that the work takes well over the
/// one second after which a progress bar may appear. `mirror_pid` maps the spawned child's
/// pid to the mirror process. Returns the output, and whether the pause happened.
fn checkout_with_pause(
    mut cmd: Command,
    tier_dir: &Path,
    mirror_pid: impl Fn(u32) -> Option<u32>,
) -> (std::process::Output, bool) {
    // Files, not pipes: nobody reads while the child runs.
    let out_file = tempfile::tempfile().unwrap();
    let err_file = tempfile::tempfile().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out_file.try_clone().unwrap()))
        .stderr(Stdio::from(err_file.try_clone().unwrap()));
    let mut child = cmd.spawn().expect("spawn");
    let signal = |pid: u32, sig: libc::c_int| {
        // SAFETY: a plain signal to a process this test started.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    };
    let mut paused = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkout did not finish"
        );
        if paused {
            // `script` stops itself when its child stops; keep it (and so its child) going.
            signal(child.id(), libc::SIGCONT);
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if !std::fs::read_dir(tier_dir).is_ok_and(|mut d| d.next().is_some()) {
            std::thread::yield_now();
            continue;
        }
        if let Some(pid) = mirror_pid(child.id()) {
            signal(pid, libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(1500));
            signal(pid, libc::SIGCONT);
            paused = true;
        }
    };
    let read = |mut f: std::fs::File| {
        use std::io::Seek;
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let output = std::process::Output {
        status,
        stdout: read(out_file),
        stderr: read(err_file),
    };
    (output, paused)
}

#[test]
fn no_progress_output_when_stderr_is_not_a_terminal() {
    let env = Env::new();
    many_files(&env, "tier-0", 2000);
    // Restored first (paths are restored in order), so the loop is still busy when paused.
    write_big_file(&env.path("tier-0/0-big.bin"), 32);
    env.init(&["t=tier-0"]);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot");
    assert_no_progress_output(&stderr(&out), "snapshot");

    std::fs::remove_dir_all(env.path("tier-0")).unwrap();
    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 0, "checkout");
    assert_no_progress_output(&stderr(&out), "checkout");
    assert_eq!(
        std::fs::read_dir(env.path("tier-0/d07")).unwrap().count(),
        50
    );

    // A checkout that takes more than a second, piped: still nothing.
    std::fs::remove_dir_all(env.path("tier-0")).unwrap();
    let mut cmd = env.cmd();
    cmd.args(["checkout", "latest"]);
    let (out, paused) = checkout_with_pause(cmd, &env.path("tier-0"), Some);
    assert!(paused, "could not pause the checkout mid-way");
    assert_exit(&out, 0, "slow checkout, piped");
    assert_no_progress_output(&stderr(&out), "slow checkout, piped");
    assert_eq!(
        std::fs::read_dir(env.path("tier-0/d07")).unwrap().count(),
        50
    );

    // The same slow checkout on a terminal does draw a bar, so the silence above is not
    // just speed.
    std::fs::remove_dir_all(env.path("tier-0")).unwrap();
    let mut cmd = Command::new("script");
    env.isolate(&mut cmd);
    let line = format!("exec {} checkout latest", env!("CARGO_BIN_EXE_mirror"));
    cmd.current_dir(&env.project)
        .args(["-qec", &line, "/dev/null"]);
    let (out, paused) = checkout_with_pause(cmd, &env.path("tier-0"), child_of);
    assert!(
        paused,
        "could not pause the checkout mid-way (on a terminal)"
    );
    assert_exit(&out, 0, "slow checkout on a terminal");
    let tty = stdout(&out);
    assert!(
        tty.contains("restoring") && tty.contains('['),
        "no progress bar on a terminal:\n{tty:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// safety

#[test]
fn hostile_tree_names_are_refused_and_nothing_is_written_outside() {
    let env = Env::new();
    env.write("tier-0/ok.txt", "ok\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let good = rev(&env, "tiers/t");
    let blob = shadow_blob(&env, b"pwned\n");
    let ok_blob = shadow_blob(&env, b"ok but changed\n");

    let escape = hostile_tree(&env, &[("100644", b"escaped.txt", &blob)]);
    let hook = hostile_tree(&env, &[("100755", b"post-checkout", &blob)]);
    let hooks = hostile_tree(
        &env,
        &[("40000", b"hooks", &hook), ("100644", b"config", &blob)],
    );
    let up2 = hostile_tree(&env, &[("40000", b"..", &escape)]);
    let up1 = hostile_tree(&env, &[("40000", b"..", &up2)]);
    let cases: Vec<(&str, String)> = vec![
        (
            "dotdot",
            hostile_tree(
                &env,
                &[("40000", b"..", &escape), ("100644", b"ok.txt", &ok_blob)],
            ),
        ),
        (
            "dotgit",
            hostile_tree(
                &env,
                &[("40000", b".git", &hooks), ("100644", b"ok.txt", &ok_blob)],
            ),
        ),
        (
            "nested-dotdot",
            hostile_tree(
                &env,
                &[("40000", b"a", &up1), ("100644", b"ok.txt", &ok_blob)],
            ),
        ),
        (
            "slash",
            hostile_tree(
                &env,
                &[
                    ("100644", b"../escaped.txt", &blob),
                    ("100644", b"ok.txt", &ok_blob),
                ],
            ),
        ),
        (
            "dot",
            hostile_tree(
                &env,
                &[("40000", b".", &escape), ("100644", b"ok.txt", &ok_blob)],
            ),
        ),
        (
            "empty-name",
            hostile_tree(
                &env,
                &[("40000", b"", &escape), ("100644", b"ok.txt", &ok_blob)],
            ),
        ),
        (
            "dotgit-blob",
            hostile_tree(
                &env,
                &[("100644", b".git", &blob), ("100644", b"ok.txt", &ok_blob)],
            ),
        ),
    ];
    let whole = tree(&env.root(), &["shadow.git", "home"]);
    for (name, tree_id) in &cases {
        let commit = hostile_commit(&env, "t", tree_id);
        let out = env.mirror(&["checkout", &commit]);
        assert_exit(&out, 1, &format!("checkout of hostile snapshot '{name}'"));
        assert!(
            !env.path("escaped.txt").exists(),
            "{name}: wrote outside the tier"
        );
        assert!(
            !env.root().join("escaped.txt").exists(),
            "{name}: wrote outside the project"
        );
        assert!(
            env.path("tier-0/.git").symlink_metadata().is_err(),
            "{name}: wrote a .git into the tier"
        );
        assert_eq!(
            tree(&env.root(), &["shadow.git", "home"]),
            whole,
            "{name}: something changed on disk"
        );
    }

    // The same when the hostile commit is the tier's tip and `latest` is asked for.
    let commit = hostile_commit(&env, "t", &cases[0].1);
    shadow_git_ok(&env, &["update-ref", "refs/heads/tiers/t", &commit]);
    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 1, "checkout latest with a hostile tip");
    assert!(
        !env.path("escaped.txt").exists(),
        "checkout latest wrote outside the tier"
    );
    assert_eq!(
        tree(&env.root(), &["shadow.git", "home"]),
        whole,
        "checkout latest changed something on disk"
    );

    // Control: a commit forged the same way but with harmless names is restored, so the
    // failures above come from the names.
    shadow_git_ok(&env, &["update-ref", "refs/heads/tiers/t", &good]);
    let benign = hostile_tree(
        &env,
        &[("40000", b"dir", &escape), ("100644", b"ok.txt", &ok_blob)],
    );
    let commit = hostile_commit(&env, "t", &benign);
    let out = env.mirror(&["checkout", &commit]);
    assert_exit(&out, 0, "checkout of a forged but harmless snapshot");
    assert_eq!(env.read("tier-0/ok.txt"), b"ok but changed\n");
    assert_eq!(env.read("tier-0/dir/escaped.txt"), b"pwned\n");
    assert!(!env.path("escaped.txt").exists());
}

#[test]
fn planted_symlink_in_place_of_a_directory_is_not_followed() {
    let env = Env::new();
    env.write("tier-0/dir/file.txt", "inside\n");
    env.write("tier-0/dir/sub/deeper.txt", "deeper\n");
    env.write("tier-0/other/x.txt", "x\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let recorded = tree_of(&env, "tier-0");
    // Every in-place checkout records a pre-checkout snapshot, so name the good one by id.
    let good = rev(&env, "tiers/t");

    let outside = env.root().join("outside");
    mkdir(&outside);
    std::fs::remove_dir_all(env.path("tier-0/dir")).unwrap();
    symlink(&outside, &env.path("tier-0/dir"));

    // Scoped to a path below the link: the link is not in scope, so it must be left in the
    // way (an error for that path), never followed.
    let out = env.mirror(&["checkout", &good, "--", "tier-0/dir/file.txt"]);
    assert!(
        out.status.code() != Some(0),
        "restoring through a planted link must not succeed silently"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote into the link's target (scoped checkout)"
    );

    // A whole-tier checkout replaces the link with the recorded directory.
    let out = env.mirror(&["checkout", &good]);
    assert_exit(&out, 0, "checkout of the good snapshot");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote into the link's target"
    );
    assert!(
        env.path("tier-0/dir").symlink_metadata().unwrap().is_dir(),
        "dir is a real directory again"
    );
    assert_eq!(tree_of(&env, "tier-0"), recorded);

    // A link planted deeper (tier-0/dir/sub -> outside), restored by a path checkout of dir.
    std::fs::remove_dir_all(env.path("tier-0/dir/sub")).unwrap();
    symlink(&outside, &env.path("tier-0/dir/sub"));
    let out = env.mirror(&["checkout", &good, "--", "tier-0/dir"]);
    assert_exit(&out, 0, "checkout GOOD -- tier-0/dir");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote into the link's target (nested)"
    );
    assert_eq!(tree_of(&env, "tier-0"), recorded);
}

/// `checkout latest` records what it replaces as a `pre-checkout` snapshot, which becomes the
/// tip; running the same command again (by habit, or to finish an interrupted run) must
/// restore the same snapshot, not the safety copy.
#[test]
fn checkout_latest_twice_restores_the_same_snapshot_not_the_safety_copy() {
    let env = Env::new();
    env.write("tier-0/a.txt", "a\n");
    env.write("tier-0/b.txt", "b\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let recorded = env.shadow_git(&["rev-parse", "refs/heads/tiers/t"]);
    let recorded = stdout(&recorded).trim().to_owned();
    std::fs::remove_file(env.path("tier-0/a.txt")).unwrap();
    env.ok(&["checkout", "latest"]);
    assert_eq!(env.read("tier-0/a.txt"), b"a\n");
    let out = env.ok(&["checkout", "latest"]);
    assert!(
        out.contains(&recorded[..7]),
        "the second run restores {} again: {out}",
        &recorded[..7]
    );
    assert_eq!(env.read("tier-0/a.txt"), b"a\n", "not undone by the rerun");
    assert_eq!(env.read("tier-0/b.txt"), b"b\n");
}
