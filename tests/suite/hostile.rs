//! Hostile shadow repositories (issue 8, point 5). Trees are built with plain git plumbing
//! (`git hash-object -t tree --literally` on raw tree bytes, so names `git mktree` refuses can
//! be made), committed with `git commit-tree` and planted as `refs/heads/tiers/t` in the
//! shadow of an ordinary project. Then `mirror checkout latest` (in place and `--to`) and
//! `mirror clone` (from a bare remote the hostile refs were pushed to with plain `git push`)
//! must refuse the bad entries — exit 1, a message naming the entry — and write nothing
//! outside the tier: every test compares a listing of the whole temporary root (shadow and
//! tier excluded) before and after.

use crate::common::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------------------------
// Building hostile objects with plain git

/// `git --git-dir=GIT_DIR ARGS` with `input` on stdin; must succeed; trimmed stdout.
fn git_in(env: &Env, git_dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    cmd.current_dir(env.root())
        .arg(format!("--git-dir={}", git_dir.display()))
        .args(args)
        .env("GIT_AUTHOR_NAME", "Mallory")
        .env("GIT_AUTHOR_EMAIL", "mallory@example.invalid")
        .env("GIT_COMMITTER_NAME", "Mallory")
        .env("GIT_COMMITTER_EMAIL", "mallory@example.invalid")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run git");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0, &format!("git {}", args.join(" ")));
    stdout(&out).trim().to_owned()
}

fn sgit(env: &Env, args: &[&str], input: &[u8]) -> String {
    git_in(env, &env.shadow, args, input)
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// One raw tree entry: `<mode> <name>\0<20-byte id>`.
struct Ent {
    mode: &'static str,
    name: Vec<u8>,
    oid: String,
}

fn blob(env: &Env, content: &[u8]) -> String {
    sgit(env, &["hash-object", "-w", "--stdin"], content)
}

fn file(env: &Env, name: impl AsRef<[u8]>, content: &[u8]) -> Ent {
    Ent {
        mode: "100644",
        name: name.as_ref().to_vec(),
        oid: blob(env, content),
    }
}

fn exec(env: &Env, name: impl AsRef<[u8]>, content: &[u8]) -> Ent {
    Ent {
        mode: "100755",
        name: name.as_ref().to_vec(),
        oid: blob(env, content),
    }
}

fn link(env: &Env, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Ent {
    Ent {
        mode: "120000",
        name: name.as_ref().to_vec(),
        oid: blob(env, target.as_ref()),
    }
}

fn dir(env: &Env, name: impl AsRef<[u8]>, children: &[Ent]) -> Ent {
    Ent {
        mode: "40000",
        name: name.as_ref().to_vec(),
        oid: raw_tree(env, children),
    }
}

fn tree_bytes(entries: &[Ent]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for e in entries {
        bytes.extend_from_slice(e.mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(&e.name);
        bytes.push(0);
        bytes.extend_from_slice(&unhex(&e.oid));
    }
    bytes
}

/// The entries exactly as given (no sorting, no checks), stored as a tree object.
fn raw_tree(env: &Env, entries: &[Ent]) -> String {
    raw_tree_bytes(env, &tree_bytes(entries))
}

fn raw_tree_bytes(env: &Env, bytes: &[u8]) -> String {
    sgit(
        env,
        &["hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
        bytes,
    )
}

fn commit_tree(env: &Env, tree: &str, parent: Option<&str>) -> String {
    let mut args = vec!["commit-tree", tree];
    if let Some(p) = parent {
        args.extend(["-p", p]);
    }
    args.extend(["-m", "snapshot t\n\nMirror-Tier: t\n"]);
    sgit(env, &args, b"")
}

fn tip(env: &Env) -> String {
    sgit(env, &["rev-parse", "--verify", "refs/heads/tiers/t"], b"")
}

fn point_tier(env: &Env, commit: &str) {
    sgit(env, &["update-ref", "refs/heads/tiers/t", commit], b"");
}

/// Attach a metadata note (mirror's format: NUL-terminated records after a header) as is.
fn add_note(env: &Env, commit: &str, records: &[&[u8]]) {
    let mut data = b"mirror-meta 1\0".to_vec();
    for r in records {
        data.extend_from_slice(r);
        data.push(0);
    }
    let note = blob(env, &data);
    sgit(
        env,
        &["notes", "--ref=mirror", "add", "-f", "-C", &note, commit],
        b"",
    );
}

/// An ordinary project: tier `t` with `keep.txt`, one snapshot.
fn project(env: &Env) {
    env.write("t/keep.txt", "kept\n");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
}

/// Commit `entries` (plus `keep.txt`) as the new tip of tier `t`; with a note when given.
fn plant(env: &Env, mut entries: Vec<Ent>, note: Option<&[&[u8]]>) -> String {
    entries.insert(0, file(env, "keep.txt", b"kept\n"));
    let tree = raw_tree(env, &entries);
    let parent = tip(env);
    let commit = commit_tree(env, &tree, Some(&parent));
    if let Some(records) = note {
        add_note(env, &commit, records);
    }
    point_tier(env, &commit);
    commit
}

// ---------------------------------------------------------------------------------------------
// Watching the filesystem outside the tier

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Dir {
        mode: u32,
    },
    File {
        content: Vec<u8>,
        mode: u32,
        mtime_ns: i64,
    },
    Link(Vec<u8>),
    Other,
}

/// Everything below `root` (not following symlinks) except the `excluded` paths.
fn listing(root: &Path, excluded: &[PathBuf]) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    walk(root, excluded, &mut out);
    out
}

fn walk(dir: &Path, excluded: &[PathBuf], out: &mut BTreeMap<PathBuf, Seen>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if excluded.contains(&path) {
            continue;
        }
        let md = path.symlink_metadata().unwrap();
        let seen = if md.file_type().is_symlink() {
            Seen::Link(
                std::fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if md.is_dir() {
            walk(&path, excluded, out);
            Seen::Dir {
                mode: md.permissions().mode() & 0o7777,
            }
        } else if md.is_file() {
            Seen::File {
                content: std::fs::read(&path).unwrap(),
                mode: md.permissions().mode() & 0o7777,
                mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            }
        } else {
            Seen::Other
        };
        out.insert(path, seen);
    }
}

fn assert_same(
    before: &BTreeMap<PathBuf, Seen>,
    after: &BTreeMap<PathBuf, Seen>,
    what: &str,
    out: &std::process::Output,
) {
    if before == after {
        return;
    }
    let mut diff = Vec::new();
    for (p, s) in after {
        match before.get(p) {
            None => diff.push(format!("created  {}", p.display())),
            Some(b) if b != s => diff.push(format!("changed  {}", p.display())),
            _ => {}
        }
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        diff.push(format!("removed  {}", p.display()));
    }
    panic!(
        "{what}: the filesystem outside the tier changed:\n  {}\n--- stdout\n{}\n--- stderr\n{}",
        diff.join("\n  "),
        stdout(out),
        stderr(out)
    );
}

/// A bare repository at ROOT/remote.git holding the shadow's mirror refs, sent by plain
/// `git push` (no fsck on either side, as by default).
fn push_to_bare(env: &Env) -> PathBuf {
    let remote = env.root().join("remote.git");
    let out = env.git(&["init", "--quiet", "--bare", remote.to_str().unwrap()]);
    assert_exit(&out, 0, "git init --bare");
    sgit(
        env,
        &[
            "push",
            "--quiet",
            remote.to_str().unwrap(),
            "refs/heads/tiers/*:refs/heads/tiers/*",
            "refs/mirror/*:refs/mirror/*",
            "refs/notes/*:refs/notes/*",
        ],
        b"",
    );
    remote
}

/// The registry `mirror clone` adds the new project to (a legitimate write outside).
fn registry(env: &Env) -> PathBuf {
    env.home.join("data/mirror/projects")
}

fn no_panic(out: &std::process::Output, what: &str) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: mirror panicked:\n{err}"
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1 | 3)),
        "{what}: exit status {:?} (killed by a signal?)\n{err}",
        out.status
    );
}

fn names_any(out: &std::process::Output, needles: &[String], what: &str) {
    let err = stderr(out);
    assert!(
        needles.iter().any(|n| err.contains(n.as_str())),
        "{what}: the error must name the entry (one of {needles:?}):\n{err}"
    );
}

/// A directory that is absent, or present and empty.
fn absent_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(mut entries) => entries.next().is_none(),
    }
}

/// How an entry name may appear in an error message: as is, or Rust-debug-escaped.
fn spellings(name: &[u8]) -> Vec<String> {
    let lossy = String::from_utf8_lossy(name).into_owned();
    let debug = format!("{lossy:?}");
    let inner = debug[1..debug.len() - 1].to_owned();
    let mut v = vec![debug, format!("'{lossy}'"), format!("'{inner}'")];
    // Long or plain names are unambiguous without quotes.
    if name.len() > 3 && !lossy.contains('\u{fffd}') {
        v.push(lossy);
        v.push(inner);
    }
    v
}

/// Checkout in place, checkout `--to`, and clone of the planted tip: each exits 1, names the
/// entry (one of `needles`), writes nothing outside the tier and changes nothing inside it.
/// `clone`: false when git itself cannot transport the tree (it cannot parse it).
fn assert_refused_everywhere(env: &Env, needles: &[String], clone: bool) {
    let root = env.root();
    let tier = env.path("t");
    let planted = tip(env);

    // 1. In place.
    let excluded = vec![env.shadow.clone(), tier.clone()];
    let before = listing(&root, &excluded);
    let tier_before = tree(&tier, &[]);
    let out = env.mirror(&["checkout", "latest"]);
    no_panic(&out, "checkout in place");
    assert_same(
        &before,
        &listing(&root, &excluded),
        "checkout in place",
        &out,
    );
    assert_exit(&out, 1, "checkout of a hostile tree in place");
    names_any(&out, needles, "checkout in place");
    assert_eq!(
        tree(&tier, &[]),
        tier_before,
        "a refused checkout changes nothing inside the tier"
    );
    assert_eq!(
        tip(env),
        planted,
        "a refused checkout records no pre-checkout snapshot"
    );

    // 2. Into another directory.
    let to = root.join("restored");
    let excluded = vec![env.shadow.clone(), tier.clone(), to.clone()];
    let before = listing(&root, &excluded);
    let out = env.mirror(&["checkout", "latest", "--to", to.to_str().unwrap()]);
    no_panic(&out, "checkout --to");
    assert_same(&before, &listing(&root, &excluded), "checkout --to", &out);
    assert_exit(&out, 1, "checkout --to of a hostile tree");
    names_any(&out, needles, "checkout --to");
    assert!(absent_or_empty(&to), "nothing restored into --to");
    assert_eq!(tree(&tier, &[]), tier_before);

    // 3. Clone from a bare remote that received the hostile refs by plain `git push`.
    if !clone {
        return;
    }
    let remote = push_to_bare(env);
    let cloned = root.join("cloned");
    let cloned_shadow = root.join("cloned-shadow.git");
    let excluded = vec![
        env.shadow.clone(),
        tier.clone(),
        cloned.clone(),
        cloned_shadow.clone(),
        registry(env),
    ];
    let before = listing(&root, &excluded);
    let out = env.mirror_in(
        &root,
        &[
            "clone",
            remote.to_str().unwrap(),
            cloned.to_str().unwrap(),
            "--shadow",
            cloned_shadow.to_str().unwrap(),
        ],
    );
    no_panic(&out, "clone");
    assert_same(&before, &listing(&root, &excluded), "clone", &out);
    assert_exit(&out, 1, "clone of a hostile remote");
    names_any(&out, needles, "clone");
    assert!(
        absent_or_empty(&cloned.join("t")),
        "clone restored nothing of the refused tier"
    );
    if let Ok(entries) = std::fs::read_dir(&cloned) {
        for e in entries {
            let name = e.unwrap().file_name();
            assert!(
                name == "mirror.yaml" || name == "t",
                "clone left {name:?} in the new project"
            );
        }
    }
    assert_eq!(tree(&tier, &[]), tier_before);
}

/// One fresh project per name: the tip's tree holds `keep.txt` and `make(name)`.
fn refuse_each(names: &[&[u8]], make: impl Fn(&Env, &[u8]) -> Vec<Ent>, with_note: bool) {
    for name in names {
        let env = Env::new();
        project(&env);
        let entries = make(&env, name);
        let mut path = name.to_vec();
        path.extend_from_slice(b"/config");
        let records: Vec<Vec<u8>> = vec![
            b"m 1700000000 0 keep.txt".to_vec(),
            [b"m 1700000000 0 ".as_slice(), &path].concat(),
        ];
        let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
        plant(&env, entries, with_note.then_some(&refs[..]));
        assert_refused_everywhere(&env, &spellings(name), true);
    }
}

/// A directory `name` shaped like a git directory, with a hook that would run on checkout.
fn fake_git_dir(env: &Env, name: &[u8]) -> Vec<Ent> {
    vec![dir(
        env,
        name,
        &[
            file(env, "config", b"[core]\n\tfsmonitor = touch /tmp/pwned\n"),
            dir(
                env,
                "hooks",
                &[exec(env, "post-checkout", b"#!/bin/sh\ntouch pwned\n")],
            ),
        ],
    )]
}

// ---------------------------------------------------------------------------------------------
// Names that leave the tier

#[test]
fn dotdot_entries_cannot_climb_out_of_the_tier() {
    refuse_each(
        &[b".."],
        |env, name| {
            // t/../../pwned.txt is the temporary root itself.
            vec![dir(
                env,
                name,
                &[
                    dir(env, "..", &[file(env, "pwned.txt", b"escaped\n")]),
                    file(env, "escaped.txt", b"escaped\n"),
                ],
            )]
        },
        true,
    );
    // `..` as a file name of its own, nested below an ordinary directory, without a note.
    refuse_each(
        &[b".."],
        |env, name| vec![dir(env, "sub", &[file(env, name, b"over the tier root\n")])],
        false,
    );
}

#[test]
fn dot_and_empty_entries_are_refused() {
    refuse_each(
        &[b"."],
        |env, name| vec![dir(env, name, &[file(env, "keep.txt", b"replaced\n")])],
        true,
    );
    let env = Env::new();
    project(&env);
    plant(&env, vec![file(&env, "", b"nameless\n")], None);
    assert_refused_everywhere(
        &env,
        &["\"\"".into(), "empty".into()],
        // git's own pack-objects dies on it ("empty filename in tree entry").
        false,
    );
}

#[test]
fn names_containing_a_slash_are_refused() {
    refuse_each(
        &[b"a/b", b"../../pwned.txt", b"sub/../../../pwned.txt"],
        |env, name| vec![file(env, name, b"slash\n")],
        false,
    );
}

#[test]
fn absolute_looking_names_are_refused() {
    // Path::join with an absolute name would replace the whole destination; aim at this
    // test's own root so the listing would see the write.
    for which in ["root", "/", "//"] {
        let env = Env::new();
        project(&env);
        let name = match which {
            "root" => format!("{}/abs-pwned.txt", env.root().display()),
            other => other.to_owned(),
        };
        let mut record = b"m 1700000000 0 ".to_vec();
        record.extend_from_slice(name.as_bytes());
        plant(
            &env,
            vec![file(&env, &name, b"absolute\n")],
            Some(&[b"m 1700000000 0 keep.txt", &record]),
        );
        assert_refused_everywhere(&env, &spellings(name.as_bytes()), true);
        assert!(!env.root().join("abs-pwned.txt").exists());
    }
}

#[test]
fn a_name_containing_nul_is_refused() {
    // A NUL ends a name in git's tree format, so such a name makes the tree unparsable (the
    // rest of the name is read as the object id); either way nothing may be written.
    for name in [&b"a\0b"[..], b"keep.txt\0../../pwned.txt"] {
        let env = Env::new();
        project(&env);
        let keep = file(&env, "keep.txt", b"kept\n");
        let evil = file(&env, "x", b"nul\n");
        let mut bytes = tree_bytes(&[keep]);
        bytes.extend_from_slice(b"100644 ");
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(&unhex(&evil.oid));
        let tree = raw_tree_bytes(&env, &bytes);
        let parent = tip(&env);
        let commit = commit_tree(&env, &tree, Some(&parent));
        point_tier(&env, &commit);
        let mut needles = spellings(&name[..name.iter().position(|b| *b == 0).unwrap()]);
        needles.extend([tree.clone(), tree[..7].to_owned(), "corrupt".into()]);
        assert_refused_everywhere(&env, &needles, false);
    }
}

#[test]
fn submodule_entries_are_refused() {
    let env = Env::new();
    project(&env);
    let gitlink = Ent {
        mode: "160000",
        name: b"sub".to_vec(),
        oid: tip(&env),
    };
    plant(&env, vec![gitlink], None);
    assert_refused_everywhere(&env, &["sub".into(), "submodule".into()], true);
}

// ---------------------------------------------------------------------------------------------
// .git and its look-alikes (git's t1014-read-tree-confusing.sh)

#[test]
fn dotgit_in_any_case_is_refused() {
    refuse_each(&[b".git", b".GIT", b".Git", b".gIT"], fake_git_dir, true);
    // Also as a file, deeper down, without a note.
    refuse_each(
        &[b".git", b".GIT"],
        |env, name| {
            vec![dir(
                env,
                "sub",
                &[file(env, name, b"gitdir: /tmp/elsewhere\n")],
            )]
        },
        false,
    );
}

#[test]
fn ntfs_dotgit_lookalikes_are_refused() {
    refuse_each(
        &[
            b"git~1",
            b"GIT~1",
            b".git.",
            b".git ",
            b".git. . ",
            b".git::$INDEX_ALLOCATION",
            b".GIT::$index_allocation",
            b".git...:alternate-stream",
        ],
        fake_git_dir,
        true,
    );
}

#[test]
fn hfs_dotgit_lookalikes_with_ignorable_code_points_are_refused() {
    let names: Vec<Vec<u8>> = [
        ".g\u{200c}it",
        "\u{200c}.Git",
        ".gI\u{200c}T",
        ".GiT\u{200c}",
        ".\u{200d}git",
        ".git\u{feff}",
        ".g\u{202e}it",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let refs: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
    refuse_each(&refs, fake_git_dir, false);
}

/// U+200B (ZERO WIDTH SPACE) is not one of the code points HFS+ ignores (git's and gix's list:
/// U+200C-200F, 202A-202E, 206A-206F, FEFF), so `.gI\u200bT` is a different name even on a Mac.
/// Whether mirror refuses it too or restores it, it must stay inside the tier under exactly that
/// name.
#[test]
fn zero_width_space_lookalike_stays_inside_the_tier_either_way() {
    let env = Env::new();
    project(&env);
    let name = ".gI\u{200b}T";
    plant(&env, fake_git_dir(&env, name.as_bytes()), None);
    let root = env.root();
    let excluded = vec![env.shadow.clone(), env.path("t")];
    let before = listing(&root, &excluded);
    let out = env.mirror(&["checkout", "latest"]);
    no_panic(&out, "checkout");
    assert_same(&before, &listing(&root, &excluded), "checkout", &out);
    match out.status.code() {
        Some(0) => {
            assert_eq!(
                std::fs::read(env.path("t").join(name).join("config")).unwrap(),
                b"[core]\n\tfsmonitor = touch /tmp/pwned\n"
            );
            assert!(!env.path("t/.git").exists() && !env.path("t/.gIT").exists());
        }
        _ => names_any(&out, &spellings(name.as_bytes()), "checkout"),
    }
}

// ---------------------------------------------------------------------------------------------
// Symlinks

/// Tier `t`'s tip holds a symlink `d` to OUTSIDE and, under the same name, a directory `d`
/// with `file`: whatever mirror makes of it, `file` must never land in OUTSIDE.
#[test]
fn a_symlink_and_a_directory_of_the_same_name_never_write_through_the_link() {
    for outside_exists in [false, true] {
        let env = Env::new();
        project(&env);
        let root = env.root();
        let outside = root.join("outside");
        if outside_exists {
            std::fs::create_dir(&outside).unwrap();
        }
        let target = outside.to_str().unwrap().to_owned();
        let inner = dir(&env, "d", &[file(&env, "file", b"through the link\n")]);
        let records: &[&[u8]] = &[b"m 1700000000 0 d", b"m 1700000000 0 d/file"];
        // By id: an in-place checkout that restores part of it moves `latest`.
        let planted = plant(&env, vec![link(&env, "d", &target), inner], Some(records));

        let to = root.join("restored");
        let cloned = root.join("cloned");
        let remote = push_to_bare(&env);
        let runs: Vec<(&str, Vec<String>, PathBuf, PathBuf)> = vec![
            (
                "checkout in place",
                vec!["checkout".into(), planted.clone()],
                env.path("t"),
                env.path("t"),
            ),
            (
                "checkout --to",
                vec![
                    "checkout".into(),
                    planted.clone(),
                    "--to".into(),
                    to.to_str().unwrap().into(),
                ],
                to.join("t"),
                to.clone(),
            ),
            (
                "clone",
                vec![
                    "clone".into(),
                    remote.to_str().unwrap().into(),
                    cloned.to_str().unwrap().into(),
                    "--shadow".into(),
                    root.join("cloned-shadow.git").to_str().unwrap().into(),
                ],
                cloned.join("t"),
                cloned.clone(),
            ),
        ];
        for (what, args, tier_dir, own) in runs {
            let excluded = vec![
                env.shadow.clone(),
                env.path("t"),
                own,
                root.join("cloned-shadow.git"),
                registry(&env),
            ];
            let before = listing(&root, &excluded);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = env.mirror(&args);
            no_panic(&out, what);
            assert_ne!(
                out.status.code(),
                Some(0),
                "{what}: a tree holding `d` twice (link and directory) is not restored as if fine:\n{}",
                stderr(&out)
            );
            let mut needles = spellings(b"d/file");
            needles.extend(spellings(b"d"));
            names_any(&out, &needles, what);
            assert_same(&before, &listing(&root, &excluded), what, &out);
            assert_eq!(outside.exists(), outside_exists, "{what}");
            if outside_exists {
                assert!(
                    absent_or_empty(&outside),
                    "{what}: written through the link"
                );
            }
            // Whatever exists at d is the link itself or a real directory, never followed.
            if let Ok(md) = tier_dir.join("d").symlink_metadata() {
                if md.file_type().is_symlink() {
                    assert_eq!(std::fs::read_link(tier_dir.join("d")).unwrap(), outside);
                } else {
                    assert!(md.is_dir(), "{what}");
                }
            }
        }
    }
}

/// Snapshot 1 has `d -> OUTSIDE`; snapshot 2 (its child) has a directory `d` with `file`.
/// Checking out 1 then 2 in place restores the link as a link, then replaces it with a real
/// directory; a checkout of `d/file` alone (or `restore --missing`) while `d` is still the
/// link must not write through it.
#[test]
fn a_link_that_later_becomes_a_directory_is_replaced_never_followed() {
    let env = Env::new();
    project(&env);
    let root = env.root();
    let outside = root.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let keep = || file(&env, "keep.txt", b"kept\n");
    let t1 = raw_tree(&env, &[link(&env, "d", outside.to_str().unwrap()), keep()]);
    let base = tip(&env);
    let snap1 = commit_tree(&env, &t1, Some(&base));
    add_note(
        &env,
        &snap1,
        &[b"m 1700000000 0 d", b"m 1700000000 0 keep.txt"],
    );
    let t2 = raw_tree(
        &env,
        &[
            dir(&env, "d", &[file(&env, "file", b"inside the tier\n")]),
            keep(),
        ],
    );
    let snap2 = commit_tree(&env, &t2, Some(&snap1));
    // No note for snapshot 2: mirror must cope without one.
    point_tier(&env, &snap2);

    let excluded = vec![env.shadow.clone(), env.path("t")];
    let before = listing(&root, &excluded);
    let check_outside = |out: &std::process::Output, what: &str| {
        no_panic(out, what);
        assert_same(&before, &listing(&root, &excluded), what, out);
        assert!(
            absent_or_empty(&outside),
            "{what}: written through the link"
        );
    };

    let out = env.mirror(&["checkout", &snap1]);
    assert_exit(&out, 0, "checkout of snapshot 1");
    check_outside(&out, "checkout of snapshot 1");
    let d = env.path("t/d");
    assert!(d.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_link(&d).unwrap(), outside);

    // Only d/file, while d is still the link.
    let out = env.mirror(&["checkout", &snap2, "--", "t/d/file"]);
    check_outside(&out, "checkout of d/file through the link");
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    names_any(&out, &spellings(b"d/file"), "checkout of d/file");
    assert!(d.symlink_metadata().unwrap().file_type().is_symlink());

    let out = env.mirror(&["restore", "--missing", "--from", &snap2]);
    check_outside(&out, "restore --missing through the link");
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(d.symlink_metadata().unwrap().file_type().is_symlink());

    // The whole of snapshot 2: the link goes, a real directory takes its place.
    let out = env.mirror(&["checkout", &snap2]);
    assert_exit(&out, 0, "checkout of snapshot 2");
    check_outside(&out, "checkout of snapshot 2");
    let md = d.symlink_metadata().unwrap();
    assert!(md.is_dir() && !md.file_type().is_symlink());
    assert_eq!(env.read("t/d/file"), b"inside the tier\n");

    // And back: the directory becomes the link again, still not followed.
    let out = env.mirror(&["checkout", &snap1]);
    assert_exit(&out, 0, "checkout of snapshot 1 again");
    check_outside(&out, "checkout of snapshot 1 again");
    assert!(d.symlink_metadata().unwrap().file_type().is_symlink());

    // --to a fresh directory: snapshot 1 then (into another) snapshot 2.
    for (n, rev) in [(1, &snap1), (2, &snap2)] {
        let to = root.join(format!("restored-{n}"));
        let mut excluded = excluded.clone();
        excluded.push(to.clone());
        let before = listing(&root, &excluded);
        let out = env.mirror(&["checkout", rev, "--to", to.to_str().unwrap()]);
        assert_exit(&out, 0, "checkout --to");
        assert_same(&before, &listing(&root, &excluded), "checkout --to", &out);
        assert!(absent_or_empty(&outside));
    }
    assert!(root
        .join("restored-1/t/d")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(root.join("restored-2/t/d/file")).unwrap(),
        b"inside the tier\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Very deep and very long paths

/// A chain of `depth` directories named `name` ending in `leaf` (with `content`).
fn chain(env: &Env, name: &str, depth: usize, content: &[u8]) -> Ent {
    let mut ent = file(env, "leaf", content);
    for _ in 0..depth {
        ent = dir(env, name, &[ent]);
    }
    ent
}

#[test]
fn a_300_deep_path_restores_inside_the_tier() {
    let env = Env::new();
    project(&env);
    let planted = plant(&env, vec![chain(&env, "d", 300, b"deep\n")], None);
    let root = env.root();
    let rel: PathBuf = std::iter::repeat_n("d", 300).chain(["leaf"]).collect();

    let excluded = vec![env.shadow.clone(), env.path("t")];
    let before = listing(&root, &excluded);
    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 0, "checkout of a 300-deep path");
    assert_same(
        &before,
        &listing(&root, &excluded),
        "checkout in place",
        &out,
    );
    assert_eq!(std::fs::read(env.path("t").join(&rel)).unwrap(), b"deep\n");

    let to = root.join("restored");
    let excluded = vec![env.shadow.clone(), env.path("t"), to.clone()];
    let before = listing(&root, &excluded);
    // By id: the in-place checkout above made the pre-checkout snapshot `latest`.
    let out = env.mirror(&["checkout", &planted, "--to", to.to_str().unwrap()]);
    assert_exit(&out, 0, "checkout --to of a 300-deep path");
    assert_same(&before, &listing(&root, &excluded), "checkout --to", &out);
    assert_eq!(std::fs::read(to.join("t").join(&rel)).unwrap(), b"deep\n");
}

#[test]
fn a_path_longer_than_path_max_fails_cleanly_or_restores_inside() {
    let env = Env::new();
    project(&env);
    // 300 × 15 bytes: the absolute path is far beyond PATH_MAX (4096).
    let name = "ddddddddddddddd";
    let planted = plant(&env, vec![chain(&env, name, 300, b"too deep\n")], None);
    let root = env.root();
    for to in [None, Some(root.join("restored"))] {
        let mut excluded = vec![env.shadow.clone(), env.path("t")];
        let mut args = vec!["checkout", planted.as_str()];
        let to_s = to.as_ref().map(|p| p.to_str().unwrap().to_owned());
        if let (Some(p), Some(s)) = (&to, &to_s) {
            excluded.push(p.clone());
            args.extend(["--to", s.as_str()]);
        }
        let before = listing(&root, &excluded);
        let out = env.mirror(&args);
        no_panic(&out, "checkout beyond PATH_MAX");
        assert_same(
            &before,
            &listing(&root, &excluded),
            "checkout beyond PATH_MAX",
            &out,
        );
        if out.status.code() != Some(0) {
            assert!(
                stderr(&out).contains("error"),
                "a failure is explained: {}",
                stderr(&out)
            );
        }
        // keep.txt, an ordinary file next to it, is never lost (and restored unless refused).
        let keep = to.as_ref().unwrap_or(&env.project).join("t/keep.txt");
        if to.is_none() || out.status.code() != Some(1) {
            assert_eq!(
                std::fs::read(&keep).unwrap_or_default(),
                b"kept\n",
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn a_255_byte_name_round_trips_and_a_256_byte_name_fails_cleanly() {
    // 255 bytes is NAME_MAX: legitimate, from disk to snapshot to every kind of restore.
    let env = Env::new();
    let long = "n".repeat(251) + ".txt";
    assert_eq!(long.len(), 255);
    env.write(&format!("t/{long}"), "long name\n");
    env.write("t/keep.txt", "kept\n");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let recorded = tip(&env);
    std::fs::remove_file(env.path(&format!("t/{long}"))).unwrap();
    env.ok(&["checkout", &recorded]);
    assert_eq!(env.read(&format!("t/{long}")), b"long name\n");
    let to = env.root().join("restored");
    env.ok(&["checkout", &recorded, "--to", to.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(to.join("t").join(&long)).unwrap(),
        b"long name\n"
    );

    // 256 bytes cannot exist on Linux: a planted one fails cleanly, and nothing leaks out.
    let too_long = "n".repeat(252) + ".txt";
    assert_eq!(too_long.len(), 256);
    let base = tip(&env);
    let t = raw_tree(
        &env,
        &[
            file(&env, "keep.txt", b"kept\n"),
            file(&env, &too_long, b"too long\n"),
            file(&env, "zz.txt", b"after the long one\n"),
        ],
    );
    let c = commit_tree(&env, &t, Some(&base));
    point_tier(&env, &c);
    let root = env.root();
    for to in [None, Some(root.join("restored-256"))] {
        let mut excluded = vec![env.shadow.clone(), env.path("t")];
        let mut args = vec!["checkout", c.as_str()];
        let to_s = to.as_ref().map(|p| p.to_str().unwrap().to_owned());
        if let (Some(p), Some(s)) = (&to, &to_s) {
            excluded.push(p.clone());
            args.extend(["--to", s.as_str()]);
        }
        let before = listing(&root, &excluded);
        let out = env.mirror(&args);
        no_panic(&out, "checkout of a 256-byte name");
        assert_same(&before, &listing(&root, &excluded), "256-byte name", &out);
        assert!(
            matches!(out.status.code(), Some(1 | 3)),
            "a name the OS refuses is a failure: {:?}\n{}",
            out.status,
            stderr(&out)
        );
        names_any(&out, std::slice::from_ref(&too_long), "256-byte name");
        if out.status.code() == Some(3) {
            // Partial: everything else was restored.
            let dest = to.as_ref().unwrap_or(&env.project).join("t");
            assert_eq!(
                std::fs::read(dest.join("zz.txt")).unwrap(),
                b"after the long one\n"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot side: look-alikes on disk are never recorded

#[test]
fn snapshot_skips_dotgit_lookalikes_on_disk_with_a_warning() {
    let env = Env::new();
    let lookalikes = [
        "git~1",
        ".git ",
        ".git.",
        ".git::$INDEX_ALLOCATION",
        ".g\u{200c}it",
        ".gI\u{200c}T",
    ];
    for name in lookalikes {
        env.write(&format!("t/{name}/config"), "[core]\n");
        env.write(&format!("t/sub/{name}/hooks/x"), "#!/bin/sh\n");
    }
    env.write("t/GIT~1", "a file, not a directory\n");
    env.write("t/normal.txt", "n\n");
    env.write("t/sub/normal.txt", "n\n");
    env.init(&["t=t"]);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot with look-alikes on disk");
    let err = stderr(&out);
    for name in lookalikes.iter().chain(&["GIT~1"]) {
        let needles = spellings(name.as_bytes());
        assert!(
            err.lines().any(|l| l.starts_with("warning")
                && needles.iter().any(|n| l.contains(n.as_str()))),
            "the skipped {name:?} is named in a warning:\n{err}"
        );
    }
    let files = env.shadow_git(&["ls-tree", "-r", "-t", "-z", "--name-only", "tiers/t"]);
    assert_exit(&files, 0, "ls-tree");
    let recorded: Vec<String> = stdout(&files)
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        recorded,
        ["normal.txt", "sub", "sub/normal.txt"],
        "only the ordinary files are recorded"
    );
    fsck_clean(&env);
}

// ---------------------------------------------------------------------------------------------
// Hostile metadata notes and configuration

#[test]
fn a_hostile_note_cannot_grant_setuid_or_setgid() {
    let env = Env::new();
    project(&env);
    let records: &[&[u8]] = &[
        b"m 1700000000 0 keep.txt",
        b"m 1700000000 0 run.sh",
        b"p 6777 run.sh",
        b"m 1700000000 0 ../../escape.txt",
        b"p 4755 ../../escape.txt",
    ];
    plant(
        &env,
        vec![exec(&env, "run.sh", b"#!/bin/sh\n")],
        Some(records),
    );
    let root = env.root();
    let excluded = vec![env.shadow.clone(), env.path("t")];
    let before = listing(&root, &excluded);
    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 0, "checkout with a hostile note");
    assert_same(&before, &listing(&root, &excluded), "checkout", &out);
    let mode = std::fs::metadata(env.path("t/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7000, 0, "no setuid/setgid/sticky bit: {mode:o}");
}

#[test]
fn a_hostile_note_with_out_of_range_times_does_not_crash_checkout() {
    for record in [
        &b"m 9223372036854775807 999999999 keep.txt"[..],
        b"m -9223372036854775808 0 keep.txt",
        b"m 0 9223372036854775807 keep.txt",
    ] {
        let env = Env::new();
        project(&env);
        plant(&env, vec![file(&env, "x.txt", b"x\n")], Some(&[record]));
        let root = env.root();
        let excluded = vec![env.shadow.clone(), env.path("t")];
        let before = listing(&root, &excluded);
        let out = env.mirror(&["checkout", "latest"]);
        no_panic(&out, &String::from_utf8_lossy(record));
        assert_same(&before, &listing(&root, &excluded), "checkout", &out);
        if out.status.code() != Some(0) {
            assert!(stderr(&out).contains("error"), "{}", stderr(&out));
        }
    }
}

#[test]
fn clone_refuses_a_recorded_config_whose_tier_leaves_the_project() {
    for which in ["../escape", "absolute", "x/../../escape"] {
        let env = Env::new();
        project(&env);
        let root = env.root();
        let absolute = format!("{}/escape", root.display());
        let tier_path = if which == "absolute" {
            absolute.as_str()
        } else {
            which
        };
        let shadow_path = env.shadow.to_str().unwrap().to_owned();
        let yaml =
            format!("version: 1\nshadow: {shadow_path}\ntiers:\n- name: t\n  path: {tier_path}\n");
        let blob = blob(&env, yaml.as_bytes());
        let tree = raw_tree(
            &env,
            &[Ent {
                mode: "100644",
                name: b"mirror.yaml".to_vec(),
                oid: blob,
            }],
        );
        let parent = sgit(&env, &["rev-parse", "refs/mirror/config"], b"");
        let commit = commit_tree(&env, &tree, Some(&parent));
        sgit(&env, &["update-ref", "refs/mirror/config", &commit], b"");

        let remote = push_to_bare(&env);
        let cloned = root.join("cloned");
        let excluded = vec![
            env.shadow.clone(),
            cloned.clone(),
            root.join("cloned-shadow.git"),
            registry(&env),
        ];
        let before = listing(&root, &excluded);
        let out = env.mirror_in(
            &root,
            &[
                "clone",
                remote.to_str().unwrap(),
                cloned.to_str().unwrap(),
                "--shadow",
                root.join("cloned-shadow.git").to_str().unwrap(),
            ],
        );
        no_panic(&out, tier_path);
        assert_exit(&out, 1, &format!("clone with tier path {tier_path}"));
        assert!(stderr(&out).contains(tier_path), "{}", stderr(&out));
        assert_same(&before, &listing(&root, &excluded), tier_path, &out);
        assert!(!root.join("escape").exists());
        assert!(absent_or_empty(&cloned) || !cloned.join("t").exists());
    }
}
