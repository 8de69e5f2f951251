//! `mirror clone`: the disaster drill (snapshot, push, lose the project, the shadow repository,
//! the registry and HOME, then clone back on a "new machine" from a path, a file:// and a real
//! ssh:// remote), `--no-checkout`, a clone without the identity, a non-empty DIR and the
//! default DIR name.

use crate::common::*;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// helpers

const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";
const AGE_ARMOR: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// The tiers of every project here.
const TIERS: &[&str] = &["code=tier-0", "data=tier-1"];
const TIER_NAMES: &[&str] = &["code", "data"];

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// Both output streams, for messages whose stream the spec leaves open.
fn all_output(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// Everything a tier can hold that a recovery must bring back: plain files in nested dirs, a
/// treasure (encrypted), an executable, a 0600 file, symlinks, empty directories, a non-UTF-8
/// name, gitignored files, explicit mtimes (nanoseconds included).
fn build_project(env: &Env) {
    let t0 = env.path("tier-0");
    env.write("tier-0/README.md", "# the project\n");
    env.write("tier-0/src/lib.rs", "pub fn f() -> u32 { 42 }\n");
    env.write("tier-0/src/deep/er/leaf.txt", "deep\n");
    env.write("tier-0/.hidden/token.txt", "the secret token 0xC0FFEE\n");
    env.write("tier-0/bin/run.sh", "#!/bin/sh\necho run\n");
    env.write("tier-0/private.key", "-----BEGIN PRIVATE KEY-----\nxyz\n");
    env.write("tier-0/.gitignore", "target/\n*.log\n");
    env.write("tier-0/build.log", "an ignored log\n");
    env.write(
        "tier-0/target/debug/app.bin",
        b"\x00\x01\xff\xfe binary\r\n".repeat(64),
    );
    write(
        &t0.join(OsStr::from_bytes(b"names/bad-\xff-name.txt")),
        "not a UTF-8 name\n",
    );
    env.write("tier-0/empty.txt", "");
    mkdir(&t0.join("empty-dir"));
    mkdir(&t0.join("nest/empty/deeper"));
    symlink("../README.md", &t0.join("links/readme"));
    symlink("does/not/exist", &t0.join("links/dangling"));
    symlink("../src", &t0.join("links/src-dir"));
    for p in [
        "README.md",
        "src/lib.rs",
        ".gitignore",
        "build.log",
        "empty.txt",
    ] {
        chmod(&t0.join(p), 0o644);
    }
    chmod(&t0.join("bin/run.sh"), 0o755);
    chmod(&t0.join("private.key"), 0o600);
    chmod(&t0.join(".hidden/token.txt"), 0o600);
    set_mtime(&t0.join("README.md"), 1_600_000_000, 123_456_789);
    set_mtime(&t0.join("bin/run.sh"), 1_500_000_000, 1);
    set_mtime(&t0.join(".hidden/token.txt"), 1_650_000_000, 987_654_321);
    set_mtime(&t0.join("links/readme"), 1_400_000_000, 500);

    let t1 = env.path("tier-1");
    env.write("tier-1/notes.txt", "notes\n");
    env.write("tier-1/docs/index.md", "# docs\n");
    env.write("tier-1/docs/.hidden/diary.md", "dear diary\n");
    env.write("tier-1/.env", "API_KEY=1\n");
    mkdir(&t1.join("cache"));
    chmod(&t1.join("notes.txt"), 0o640);
    set_mtime(&t1.join("notes.txt"), 1_234_567_890, 42);
}

/// The whole project as it must come back (mirror.yaml is compared separately).
fn project_tree(dir: &Path) -> BTreeMap<Vec<u8>, Node> {
    tree(dir, &["mirror.yaml"])
}

/// `got == want`, reporting only the paths that differ (trees print too long to read).
#[track_caller]
fn assert_same_tree(got: &BTreeMap<Vec<u8>, Node>, want: &BTreeMap<Vec<u8>, Node>, what: &str) {
    if got == want {
        return;
    }
    let brief = |n: Option<&Node>| match n {
        None => "absent".to_owned(),
        Some(Node::File {
            content,
            mode,
            mtime_ns,
        }) => format!(
            "file {} bytes mode {mode:o} mtime {mtime_ns} {:?}",
            content.len(),
            String::from_utf8_lossy(&content[..content.len().min(40)])
        ),
        Some(Node::Link { target, mtime_ns }) => format!(
            "link -> {} mtime {mtime_ns}",
            String::from_utf8_lossy(target)
        ),
        Some(other) => format!("{other:?}"),
    };
    let mut diffs = Vec::new();
    for path in got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (g, w) = (got.get(path), want.get(path));
        if g != w {
            diffs.push(format!(
                "  {}: got {}, want {}",
                String::from_utf8_lossy(path),
                brief(g),
                brief(w)
            ));
        }
    }
    panic!("{what}:\n{}", diffs.join("\n"));
}

/// Paths (relative to `dir`) of files holding age ciphertext.
fn ciphertext_files(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    tree(dir, &[])
        .into_iter()
        .filter_map(|(path, node)| match node {
            Node::File { content, .. }
                if content.starts_with(AGE_MAGIC) || content.starts_with(AGE_ARMOR) =>
            {
                Some(String::from_utf8_lossy(&path).into_owned())
            }
            _ => None,
        })
        .collect()
}

/// `git --git-dir=DIR for-each-ref` of the given prefixes: ref name -> object id.
fn refs(env: &Env, git_dir: &Path, prefixes: &[&str]) -> BTreeMap<String, String> {
    let dir = format!("--git-dir={}", git_dir.display());
    let mut args = vec![
        dir.as_str(),
        "for-each-ref",
        "--format=%(refname) %(objectname)",
    ];
    args.extend_from_slice(prefixes);
    env.git_ok(&args)
        .lines()
        .map(|l| {
            let (r, id) = l.split_once(' ').unwrap();
            (r.to_owned(), id.to_owned())
        })
        .collect()
}

/// What a clone must carry over: tiers, tags and the notes (mtimes, encryption).
const HISTORY_REFS: &[&str] = &["refs/heads/tiers/", "refs/tags/", "refs/notes/mirror"];

/// Snapshot ids `mirror log --json` lists in `dir`.
fn log_ids(env: &Env, dir: &Path) -> Vec<String> {
    let out = env.mirror_in(dir, &["log", "--json"]);
    assert_exit(&out, 0, "mirror log --json");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("log --json is not JSON ({e}):\n{}", stdout(&out)));
    let mut ids: Vec<String> = v
        .as_array()
        .expect("log --json: an array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn yaml(path: &Path) -> serde_norway::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML ({e}):\n{text}", path.display()))
}

/// The `shadow:` of DIR/mirror.yaml.
fn shadow_of(dir: &Path) -> PathBuf {
    let v = yaml(&dir.join("mirror.yaml"));
    let shadow = v["shadow"]
        .as_str()
        .unwrap_or_else(|| panic!("mirror.yaml in {} has no shadow:", dir.display()));
    let p = PathBuf::from(shadow);
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

/// Repositories (dirs holding HEAD) in the new machine's default shadow location.
fn default_shadows(env: &Env) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(env.home.join("data/mirror")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("HEAD").is_file())
        .collect()
}

/// A project that was snapshotted twice, tagged and pushed to `url`; returns what a clone
/// must reproduce.
struct Pushed {
    env: Env,
    tree: BTreeMap<Vec<u8>, Node>,
    yaml: serde_norway::Value,
    log: Vec<String>,
    refs: BTreeMap<String, String>,
    identity: Vec<u8>,
}

fn pushed_project(url_of: impl Fn(&Env) -> String) -> (Pushed, String) {
    let env = Env::new();
    build_project(&env);
    env.init(TIERS);
    let url = url_of(&env);
    env.ok(&["remote", "add", "usb", &url]);
    env.ok(&["snapshot", "-m", "first"]);
    env.write("tier-0/README.md", "# the project, second edition\n");
    set_mtime(&env.path("tier-0/README.md"), 1_700_000_000, 7);
    env.write("tier-1/added-later.txt", "later\n");
    env.ok(&["snapshot", "-m", "second"]);
    env.ok(&["tag", "before-disaster", "-m", "all good"]);
    let out = env.mirror(&["push"]);
    assert_exit(&out, 0, "mirror push");
    assert!(
        stdout(&out).contains("usb: pushed"),
        "push must say `usb: pushed (N refs)`:\n{}",
        all_output(&out)
    );
    let pushed = Pushed {
        tree: project_tree(&env.project),
        yaml: yaml(&env.path("mirror.yaml")),
        log: log_ids(&env, &env.project),
        refs: refs(&env, &env.shadow, HISTORY_REFS),
        identity: std::fs::read(env.identity()).unwrap(),
        env,
    };
    assert_eq!(pushed.log.len(), 4, "two snapshots of two tiers");
    // The drill is only as good as its tree: everything the issue names is in it.
    let t = &pushed.tree;
    let file_mode = |p: &[u8]| match t.get(p) {
        Some(Node::File { mode, .. }) => *mode,
        other => panic!("{}: {other:?}", String::from_utf8_lossy(p)),
    };
    assert_eq!(file_mode(b"tier-0/bin/run.sh"), 0o755);
    assert_eq!(file_mode(b"tier-0/private.key"), 0o600);
    assert_eq!(file_mode(b"tier-0/.hidden/token.txt"), 0o600);
    assert_eq!(file_mode(b"tier-0/target/debug/app.bin") & 0o600, 0o600);
    assert_eq!(file_mode(b"tier-0/names/bad-\xff-name.txt") & 0o600, 0o600);
    assert!(matches!(
        t.get(&b"tier-0/links/readme"[..]),
        Some(Node::Link { .. })
    ));
    assert_eq!(t.get(&b"tier-0/nest/empty/deeper"[..]), Some(&Node::Dir));
    assert_eq!(t.get(&b"tier-1/cache"[..]), Some(&Node::Dir));
    (pushed, url)
}

/// Lose everything but the remote: the project, the shadow repository, the registry (and
/// with it the whole old HOME, identity included).
fn disaster(p: &Pushed) {
    std::fs::remove_dir_all(&p.env.project).unwrap();
    std::fs::remove_dir_all(&p.env.shadow).unwrap();
    let registry = p.env.home.join("data/mirror");
    assert!(registry.join("projects").is_file(), "the registry existed");
    std::fs::remove_dir_all(&p.env.home).unwrap();
    assert!(!p.env.project.exists() && !p.env.shadow.exists() && !registry.exists());
}

/// A fresh machine: new HOME, XDG dirs and an empty `project/`; with the user's identity
/// copied to where mirror looks by default, if given.
fn new_machine(identity: Option<&[u8]>) -> Env {
    let m = Env::new();
    if let Some(id) = identity {
        write(&m.identity(), id);
        chmod(&m.identity(), 0o600);
    }
    m
}

/// `mirror ARGS` on the new machine, run in its root (the parent of `project/`).
fn in_root(m: &Env, args: &[&str]) -> Output {
    m.mirror_in(&m.root(), args)
}

/// Everything the drill asserts about a finished clone into `dir` on machine `m`.
fn assert_recovered(m: &Env, dir: &Path, p: &Pushed, clone_out: &Output, url: &str) {
    let dir = dir.canonicalize().unwrap();
    // The tree, byte for byte, with modes, link targets, empty dirs and mtimes.
    let restored = project_tree(&dir);
    assert_same_tree(
        &restored,
        &p.tree,
        "the cloned tree differs from the original",
    );
    assert!(
        ciphertext_files(&dir).is_empty(),
        "ciphertext on disk after the clone"
    );
    // mirror.yaml: the recorded configuration, with shadow: pointing at a new shadow in the
    // new HOME's data dir (outside DIR).
    let cfg = yaml(&dir.join("mirror.yaml"));
    for key in [
        "version",
        "tiers",
        "exclude",
        "treasures",
        "encryption",
        "hooks",
    ] {
        assert_eq!(
            cfg.get(key),
            p.yaml.get(key),
            "mirror.yaml `{key}:` must be the recorded one"
        );
    }
    let remotes = cfg["remotes"].as_sequence().expect("remotes: kept");
    assert!(
        remotes
            .iter()
            .any(|r| r["name"].as_str() == Some("usb") && r["url"].as_str() == Some(url)),
        "remote usb ({url}) must still be configured: {remotes:?}"
    );
    let shadow = shadow_of(&dir);
    let shadow = shadow
        .canonicalize()
        .unwrap_or_else(|e| panic!("new shadow {}: {e}", shadow.display()));
    let data = m.home.join("data/mirror").canonicalize().unwrap();
    assert!(
        shadow.starts_with(&data),
        "new shadow {} must be under the new HOME's {}",
        shadow.display(),
        data.display()
    );
    assert!(!shadow.starts_with(&dir), "the shadow must not be in DIR");
    assert_ne!(shadow, p.env.shadow);
    assert!(shadow.join("HEAD").is_file(), "a bare repository");
    assert!(
        all_output(clone_out).contains(s(&shadow)),
        "clone must say where the shadow is ({}):\n{}",
        shadow.display(),
        all_output(clone_out)
    );
    // Registered, so a lost mirror.yaml can be found again.
    let registry = std::fs::read_to_string(m.home.join("data/mirror/projects"))
        .expect("the registry of the new machine");
    assert!(
        registry
            .lines()
            .any(|l| l == format!("{}\t{}", dir.display(), shadow.display())),
        "registry must list {}<TAB>{}:\n{registry}",
        dir.display(),
        shadow.display()
    );
    // Every snapshot, tag and note came along.
    assert_eq!(refs(m, &shadow, HISTORY_REFS), p.refs);
    assert_eq!(
        log_ids(m, &dir),
        p.log,
        "mirror log must show the old snapshots"
    );
    let log = stdout(&m.mirror_in(&dir, &["log"]));
    assert!(log.contains("first") && log.contains("second"), "{log}");
    // Clean, and a new snapshot records nothing.
    let out = m.mirror_in(&dir, &["status"]);
    assert_exit(&out, 0, "mirror status in the clone");
    let status = stdout(&out);
    for tier in TIER_NAMES {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{tier} (")))
            .unwrap_or_else(|| panic!("no status line for {tier}:\n{status}"));
        assert!(
            line.split("; ").any(|part| part == "clean"),
            "{tier} not clean:\n{status}"
        );
    }
    assert!(
        status.lines().any(|l| l == "remote usb: up to date"),
        "a fresh clone is up to date with its remote:\n{status}"
    );
    let before = refs(m, &shadow, &["refs/heads/tiers/"]);
    let out = m.mirror_in(&dir, &["snapshot"]);
    assert_exit(&out, 0, "mirror snapshot in the clone");
    assert_eq!(
        refs(m, &shadow, &["refs/heads/tiers/"]),
        before,
        "a snapshot right after the clone must make no commit:\n{}",
        all_output(&out)
    );
    for tier in TIER_NAMES {
        assert!(
            stdout(&out)
                .lines()
                .any(|l| l.starts_with(tier) && l.contains("unchanged")),
            "{tier} must be unchanged:\n{}",
            stdout(&out)
        );
    }
    assert_same_tree(
        &project_tree(&dir),
        &p.tree,
        "the snapshot changed the tree",
    );
}

fn disaster_drill(url_of: impl Fn(&Env) -> String) {
    let (p, url) = pushed_project(url_of);
    // The treasure travels encrypted.
    let remote = p.env.root().join("backups/usb.git");
    let cipher = p.env.git_ok(&[
        &format!("--git-dir={}", remote.display()),
        "cat-file",
        "blob",
        "refs/heads/tiers/code:.hidden/token.txt",
    ]);
    assert!(
        cipher.as_bytes().starts_with(AGE_MAGIC),
        "the remote must hold the treasure encrypted"
    );
    assert_eq!(refs(&p.env, &remote, HISTORY_REFS), p.refs);
    disaster(&p);

    let m = new_machine(Some(&p.identity));
    let out = in_root(&m, &["clone", &url, s(&m.project)]);
    assert_exit(&out, 0, "mirror clone");
    assert_recovered(&m, &m.project, &p, &out, &url);
}

// ---------------------------------------------------------------------------------------------
// the drill

#[test]
fn disaster_drill_from_a_path_remote_restores_the_identical_project() {
    disaster_drill(|env| s(&env.root().join("backups/usb.git")).to_owned());
}

#[test]
fn disaster_drill_from_a_file_url_remote_restores_the_identical_project() {
    disaster_drill(|env| format!("file://{}", s(&env.root().join("backups/usb.git"))));
}

// ---------------------------------------------------------------------------------------------
// --no-checkout

#[test]
fn no_checkout_makes_shadow_and_config_and_checkout_latest_restores_later() {
    let (p, url) = pushed_project(|env| s(&env.root().join("backups/usb.git")).to_owned());
    disaster(&p);
    let m = new_machine(Some(&p.identity));
    let dir = m.root().join("restored");
    let out = in_root(&m, &["clone", "--no-checkout", &url, s(&dir)]);
    assert_exit(&out, 0, "mirror clone --no-checkout");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![OsStr::new("mirror.yaml").to_owned()],
        "--no-checkout: only mirror.yaml in DIR"
    );
    let shadow = shadow_of(&dir).canonicalize().unwrap();
    assert!(shadow.starts_with(m.home.join("data/mirror").canonicalize().unwrap()));
    assert_eq!(refs(&m, &shadow, HISTORY_REFS), p.refs);
    let status = stdout(&m.mirror_in(&dir, &["status"]));
    assert!(
        status.contains("tier directory is missing"),
        "tiers are not restored yet:\n{status}"
    );

    let out = m.mirror_in(&dir, &["checkout", "latest"]);
    assert_exit(&out, 0, "mirror checkout latest after clone --no-checkout");
    assert_same_tree(&project_tree(&dir), &p.tree, "restored tree");
    assert!(ciphertext_files(&dir).is_empty());
    assert_eq!(log_ids(&m, &dir), p.log);
}

// ---------------------------------------------------------------------------------------------
// without the identity

/// The user finds the key later: write it where mirror looks by default.
fn bring_identity(m: &Env, identity: &[u8]) {
    write(&m.identity(), identity);
    chmod(&m.identity(), 0o600);
}

fn without_treasures(t: &BTreeMap<Vec<u8>, Node>) -> BTreeMap<Vec<u8>, Node> {
    t.iter()
        .filter(|(path, _)| !path.windows(7).any(|w| w == b".hidden"))
        .map(|(p, n)| (p.clone(), n.clone()))
        .collect()
}

#[test]
fn clone_without_identity_fails_naming_the_treasure_and_writes_no_ciphertext() {
    let (p, url) = pushed_project(|env| s(&env.root().join("backups/usb.git")).to_owned());
    disaster(&p);
    let m = new_machine(None);
    let dir = m.root().join("restored");
    let out = in_root(&m, &["clone", &url, s(&dir)]);
    let err = stderr(&out);
    // As in any checkout: refused before anything is restored, never a success that hides
    // the missing treasures (--skip-encrypted is the explicit way to go on).
    assert_exit(&out, 1, "mirror clone without the identity");
    assert!(
        err.contains(".hidden/token.txt"),
        "the encrypted path must be named:\n{err}"
    );
    assert!(
        err.contains("mirror checkout latest"),
        "the message must say how to finish the recovery:\n{err}"
    );
    assert_eq!(
        ciphertext_files(&dir),
        Vec::<String>::new(),
        "nothing may be written as ciphertext"
    );
    assert!(
        !dir.join("tier-0").exists() && !dir.join("tier-1").exists(),
        "nothing is restored when a treasure cannot be decrypted"
    );
    // The shadow and mirror.yaml stay, so the recovery finishes once the key is found.
    let shadow = shadow_of(&dir);
    assert_eq!(refs(&m, &shadow, HISTORY_REFS), p.refs);
    bring_identity(&m, &p.identity);
    let out = m.mirror_in(&dir, &["checkout", "latest"]);
    assert_exit(&out, 0, "checkout latest once the identity is there");
    assert_same_tree(&project_tree(&dir), &p.tree, "restored tree");
    assert_eq!(
        log_ids(&m, &dir),
        p.log,
        "the recovery recorded no snapshot"
    );
}

#[test]
fn clone_skip_encrypted_restores_everything_else_and_exits_3() {
    let (p, url) = pushed_project(|env| s(&env.root().join("backups/usb.git")).to_owned());
    disaster(&p);
    let m = new_machine(None);
    let dir = m.root().join("restored");
    let out = in_root(&m, &["clone", "--skip-encrypted", &url, s(&dir)]);
    assert_exit(
        &out,
        3,
        "mirror clone --skip-encrypted without the identity",
    );
    let err = stderr(&out);
    for path in [".hidden/token.txt", ".hidden/diary.md"] {
        assert!(
            err.contains(path),
            "{path} must be listed as skipped:\n{err}"
        );
    }
    assert_eq!(ciphertext_files(&dir), Vec::<String>::new());
    assert!(!dir.join("tier-0/.hidden/token.txt").exists());
    assert!(!dir.join("tier-1/docs/.hidden/diary.md").exists());
    assert_same_tree(
        &without_treasures(&project_tree(&dir)),
        &without_treasures(&p.tree),
        "everything but the treasures is restored exactly",
    );
    bring_identity(&m, &p.identity);
    let out = m.mirror_in(&dir, &["checkout", "latest"]);
    assert_exit(&out, 0, "checkout latest once the identity is there");
    assert_same_tree(&project_tree(&dir), &p.tree, "restored tree");
}

// ---------------------------------------------------------------------------------------------
// DIR

#[test]
fn clone_into_a_non_empty_dir_is_refused_and_changes_nothing() {
    let (p, url) = pushed_project(|env| s(&env.root().join("backups/usb.git")).to_owned());
    let m = new_machine(Some(&p.identity));
    m.write("keep.txt", "mine\n");
    mkdir(&m.path("sub"));
    let before = tree(&m.project, &[]);
    let remote_before = refs(&m, &p.env.root().join("backups/usb.git"), &[]);
    let out = in_root(&m, &["clone", &url, s(&m.project)]);
    assert!(
        matches!(out.status.code(), Some(1) | Some(2)),
        "clone into a non-empty DIR must be refused\n{}",
        all_output(&out)
    );
    assert!(
        stderr(&out).contains("empty"),
        "the refusal must say DIR is not empty:\n{}",
        stderr(&out)
    );
    assert_same_tree(&tree(&m.project, &[]), &before, "DIR must be left alone");
    assert!(
        default_shadows(&m).is_empty(),
        "no shadow may be created: {:?}",
        default_shadows(&m)
    );
    assert!(
        !m.home.join("data/mirror/projects").exists(),
        "nothing registered"
    );
    assert_eq!(
        refs(&m, &p.env.root().join("backups/usb.git"), &[]),
        remote_before,
        "the remote is only read"
    );
}

#[test]
fn clone_from_a_missing_or_foreign_remote_fails_and_leaves_nothing_behind() {
    let m = new_machine(None);
    let missing = m.root().join("no/such/backup.git");
    let foreign = m.root().join("plain.git");
    m.git_ok(&["init", "--bare", "-q", s(&foreign)]);
    for (url, dir) in [
        (s(&missing).to_owned(), m.root().join("a")),
        (format!("file://{}", s(&missing)), m.root().join("b")),
        (s(&foreign).to_owned(), m.root().join("c")),
    ] {
        let out = in_root(&m, &["clone", &url, s(&dir)]);
        assert_exit(&out, 1, &format!("mirror clone {url}"));
        assert!(
            stderr(&out).contains(&url),
            "the error must name the remote:\n{}",
            stderr(&out)
        );
        assert!(
            !dir.join("mirror.yaml").exists(),
            "no mirror.yaml from {url}"
        );
        assert!(
            !dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
            "{} must be absent or empty after a failed clone",
            dir.display()
        );
        assert!(
            default_shadows(&m).is_empty(),
            "no shadow may stay behind: {:?}",
            default_shadows(&m)
        );
        assert!(
            !m.home.join("data/mirror/projects").exists(),
            "nothing registered"
        );
    }
    assert!(!missing.exists(), "clone never creates the remote");
}

#[test]
fn dir_defaults_to_the_url_basename_without_dot_git() {
    let (p, _) = pushed_project(|env| s(&env.root().join("backups/usb.git")).to_owned());
    // A second remote whose name has no .git, pushed to as a file:// URL.
    let archive = p.env.root().join("backups/archive");
    let archive_url = format!("file://{}", s(&archive));
    p.env.ok(&["remote", "add", "archive", &archive_url]);
    p.env.ok(&["push", "archive"]);
    assert!(
        archive.join("HEAD").is_file(),
        "pushing created the bare repo"
    );
    let path_url = s(&p.env.root().join("backups/usb.git")).to_owned();

    let m = new_machine(Some(&p.identity));
    let out = in_root(&m, &["clone", &path_url]);
    assert_exit(&out, 0, "mirror clone PATH/usb.git");
    let usb = m.root().join("usb");
    assert!(usb.join("mirror.yaml").is_file(), "DIR defaults to `usb`");
    assert!(!m.root().join("usb.git").exists());
    assert_same_tree(&project_tree(&usb), &p.tree, "clone into usb/");

    // --shadow puts the new shadow where it is told.
    let custom = m.root().join("elsewhere/custom.git");
    let out = in_root(&m, &["clone", "--shadow", s(&custom), &archive_url]);
    assert_exit(&out, 0, "mirror clone --shadow PATH file://.../archive");
    let dir = m.root().join("archive");
    assert!(
        dir.join("mirror.yaml").is_file(),
        "DIR defaults to `archive`"
    );
    assert_same_tree(&project_tree(&dir), &p.tree, "restored tree");
    assert_eq!(
        shadow_of(&dir).canonicalize().unwrap(),
        custom.canonicalize().unwrap(),
        "mirror.yaml points at the --shadow PATH"
    );
    assert_eq!(refs(&m, &custom, HISTORY_REFS), p.refs);
    // Two clones, two shadows of their own.
    assert_ne!(
        shadow_of(&usb).canonicalize().unwrap(),
        custom.canonicalize().unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// a real ssh:// remote

/// A throwaway sshd on a free loopback port; killed when dropped.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// `GIT_SSH_COMMAND` that logs in with the throwaway client key, without prompts.
    fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.dir.path().join("client").display(),
            self.port
        )
    }

    fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client) must be installed");
    assert_exit(&out, 0, "ssh-keygen");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start sshd, or say why it cannot be (`Err`: only when the binary is missing).
fn start_sshd() -> Result<Sshd, String> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.is_file() {
        return Err(format!(
            "{} not found (Debian package openssh-server)",
            sshd.display()
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("mirror-sshd-")
        .tempdir()
        .unwrap();
    let d = dir.path().canonicalize().unwrap();
    keygen(&d.join("host"));
    keygen(&d.join("client"));
    std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
    // Privilege separation wants its empty directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let port = free_port();
    let mut config = format!(
        "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nAuthorizedKeysFile {ak}\n\
         PidFile {pid}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n",
        host = d.join("host").display(),
        ak = d.join("authorized_keys").display(),
        pid = d.join("sshd.pid").display(),
    );
    if is_root() {
        config.push_str("PermitRootLogin yes\n");
    }
    std::fs::write(d.join("sshd_config"), config).unwrap();
    let log = std::fs::File::create(d.join("sshd.log")).unwrap();
    let child = Command::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", sshd.display()));
    let mut server = Sshd {
        child,
        dir,
        port,
        user,
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(server);
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("sshd exited ({status}) before listening:\n{}", server.log());
        }
        assert!(
            Instant::now() < deadline,
            "sshd did not listen on port {port} within 10 s:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `mirror ARGS` in `dir` with the ssh client settings of `sshd`.
fn mirror_ssh(env: &Env, sshd: &Sshd, dir: &Path, args: &[&str]) -> Output {
    env.cmd()
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", sshd.ssh_command())
        .args(args)
        .output()
        .expect("run mirror")
}

#[test]
fn push_to_and_clone_from_a_real_ssh_remote() {
    let sshd = match start_sshd() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("skipping the ssh:// test: {why}");
            return;
        }
    };
    let env = Env::new();
    build_project(&env);
    env.init(TIERS);
    let remote = env.root().join("remotes/over-ssh.git");
    env.git_ok(&["init", "--bare", "-q", s(&remote)]);
    let url = sshd.url(&remote);
    env.ok(&["remote", "add", "ssh", &url]);
    // The scp-like form too (its port comes from the ssh command).
    let scp_remote = env.root().join("remotes/scp-like.git");
    env.git_ok(&["init", "--bare", "-q", s(&scp_remote)]);
    let scp_url = format!("{}@127.0.0.1:{}", sshd.user, scp_remote.display());
    env.ok(&["remote", "add", "scp", &scp_url]);
    env.ok(&["snapshot", "-m", "over ssh"]);
    env.ok(&["tag", "v1", "-m", "tagged"]);
    let out = mirror_ssh(&env, &sshd, &env.project, &["push"]);
    assert_exit(&out, 0, "mirror push to ssh://");
    for name in ["ssh", "scp"] {
        assert!(
            stdout(&out).contains(&format!("{name}: pushed")),
            "{}\n--- sshd log\n{}",
            all_output(&out),
            sshd.log()
        );
    }
    let local = refs(&env, &env.shadow, HISTORY_REFS);
    assert!(local.contains_key("refs/heads/tiers/code") && local.contains_key("refs/tags/v1"));
    assert_eq!(refs(&env, &remote, HISTORY_REFS), local);
    assert_eq!(refs(&env, &scp_remote, HISTORY_REFS), local);
    let config_ref = refs(&env, &env.shadow, &["refs/mirror/"]);
    let remote_mirror = refs(&env, &remote, &["refs/mirror/"]);
    assert!(!remote_mirror.is_empty(), "refs/mirror/* must be pushed");
    for r in remote_mirror.keys() {
        assert!(config_ref.contains_key(r), "{r} only on the remote");
    }
    // A second push has nothing to send.
    let out = mirror_ssh(&env, &sshd, &env.project, &["push"]);
    assert_exit(&out, 0, "second mirror push to ssh://");
    for name in ["ssh", "scp"] {
        assert!(
            stdout(&out).contains(&format!("{name}: up to date")),
            "{}",
            all_output(&out)
        );
    }

    let original = project_tree(&env.project);
    let identity = std::fs::read(env.identity()).unwrap();
    let m = new_machine(Some(&identity));
    let dir = m.root().join("from-ssh");
    let out = mirror_ssh(&m, &sshd, &m.root(), &["clone", &url, s(&dir)]);
    assert_exit(&out, 0, "mirror clone ssh://");
    assert_same_tree(
        &project_tree(&dir),
        &original,
        "the tree cloned over ssh differs",
    );
    let shadow = shadow_of(&dir);
    assert_eq!(refs(&m, &shadow, HISTORY_REFS), local);
    assert!(ciphertext_files(&dir).is_empty());
    drop(sshd);
}
