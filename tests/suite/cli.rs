//! The command surface: `-C` and root discovery, `init`, `log`, `status`, `diff`, error
//! messages and exit codes, and the shadow repository as a plain git repository.
//! Issue 2, points 1, 2, 6, 8, 9, 10 and 12.

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// helpers

/// Full commit id of `refs/heads/tiers/<tier>` in the shadow repository.
fn tip(env: &Env, tier: &str) -> String {
    let out = env.shadow_git(&["rev-parse", "--verify", &format!("refs/heads/tiers/{tier}")]);
    assert_exit(&out, 0, &format!("rev-parse tiers/{tier}"));
    stdout(&out).trim().to_owned()
}

/// Every ref of the shadow repository with its value.
/// Every ref of the shadow except the audit trail (which records failures too, by design).
fn refs(env: &Env) -> String {
    let out = env.shadow_git(&["for-each-ref", "--format=%(refname) %(objectname)"]);
    assert_exit(&out, 0, "for-each-ref");
    stdout(&out)
        .lines()
        .filter(|l| !l.starts_with("refs/mirror/audit "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn set(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

fn strs(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Sleep until the wall clock has entered a new second, so the next commit gets a later
/// committer time than every commit made so far.
fn wait_next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    std::thread::sleep(
        Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()))
            + Duration::from_millis(20),
    );
}

fn load_yaml(path: &Path) -> serde_norway::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{text}", path.display()))
}

/// (name, path) of every tier in a parsed mirror.yaml.
fn yaml_tiers(yaml: &serde_norway::Value) -> Vec<(String, String)> {
    yaml["tiers"]
        .as_sequence()
        .expect("tiers is a list")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The first line of mirror.yaml that is not the (optional) leading comment.
fn first_content_line(text: &str) -> &str {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    if first.starts_with('#') {
        lines.next().unwrap_or("")
    } else {
        first
    }
}

fn is_bare_repo(env: &Env, path: &Path) -> bool {
    let out = env.git(&[
        &format!("--git-dir={}", path.display()),
        "rev-parse",
        "--is-bare-repository",
    ]);
    out.status.success() && stdout(&out).trim() == "true"
}

/// `mirror log --json`, parsed.
fn log_json(env: &Env, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["log", "--json"];
    args.extend_from_slice(extra);
    let out = env.ok(&args);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap_or_else(|e| panic!("log --json is not JSON: {e}\n{out}"))
        .as_array()
        .expect("log --json prints an array")
        .clone()
}

/// Assert that `needles` all occur in `line`, in this order.
fn assert_in_order(line: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match line[from..].find(needle) {
            Some(i) => from += i + needle.len(),
            None => panic!("expected {needle:?} after byte {from} in log line:\n{line}\n(all expected, in order: {needles:?})"),
        }
    }
}

/// The `A/M/D path` lines of `mirror status` output, as (letter, path).
fn status_changes(out: &str) -> BTreeSet<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(s @ ("A" | "M" | "D")), Some(p), None) => Some((s.to_owned(), p.to_owned())),
                _ => None,
            }
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// What plain git can give back of a tree: regular files (content, executable bit) and links.
#[derive(Debug, PartialEq, Eq)]
enum Plain {
    File(Vec<u8>, bool),
    Link(Vec<u8>),
}

fn plain_files(dir: &Path) -> BTreeMap<Vec<u8>, Plain> {
    tree(dir, &[".git"])
        .into_iter()
        .filter_map(|(path, node)| match node {
            Node::File { content, mode, .. } => {
                Some((path, Plain::File(content, mode & 0o100 != 0)))
            }
            Node::Link { target, .. } => Some((path, Plain::Link(target))),
            _ => None,
        })
        .collect()
}

/// A project with two tiers (`tier-0`, `tier-1`) and a few files, initialised with the
/// harness shadow path.
fn two_tier_env() -> Env {
    let env = Env::new();
    env.write("tier-0/a.txt", "alpha\n");
    env.write("tier-0/b.txt", "beta\n");
    env.write("tier-1/c.txt", "gamma\n");
    env.init(&["tier-0=tier-0", "tier-1=tier-1"]);
    env
}

// ---------------------------------------------------------------------------------------------
// point 1: -C and root discovery

#[test]
fn status_from_deep_subdirectory_finds_root_and_reports_root_relative_paths() {
    let env = two_tier_env();
    std::fs::create_dir_all(env.path("tier-0/deep/dir")).unwrap();
    env.ok(&["snapshot"]);
    env.write("tier-0/new.txt", "new\n");
    env.write("tier-1/c.txt", "gamma changed\n");

    let deep = env.path("tier-0/deep/dir");
    let out = env.mirror_in(&deep, &["status"]);
    assert_exit(&out, 0, "status from tier-0/deep/dir");
    assert_eq!(
        status_changes(&stdout(&out)),
        pairs(&[("A", "tier-0/new.txt"), ("M", "tier-1/c.txt")]),
        "status from a subdirectory must cover the whole project with root-relative paths:\n{}",
        stdout(&out)
    );
    // Same answer as from the root itself.
    assert_eq!(stdout(&out), env.ok(&["status"]));

    // A snapshot started deep inside records every tier, not just the subdirectory.
    let before = (tip(&env, "tier-0"), tip(&env, "tier-1"));
    assert_exit(
        &env.mirror_in(&deep, &["snapshot"]),
        0,
        "snapshot from tier-0/deep/dir",
    );
    assert_ne!(tip(&env, "tier-0"), before.0);
    assert_ne!(tip(&env, "tier-1"), before.1);
}

#[test]
fn nearest_mirror_yaml_wins_like_git_finds_dot_git() {
    let env = Env::new();
    env.write("tier-0/outer.txt", "outer\n");
    env.init(&["tier-0=tier-0"]);
    // A second project nested inside the first one, with its own shadow.
    let inner = env.path("tier-0/inner");
    write(&inner.join("tier-0/x.txt"), "inner\n");
    let inner_shadow = env.root().join("inner-shadow.git");
    assert_exit(
        &env.mirror_in(
            &inner,
            &[
                "init",
                "--shadow",
                inner_shadow.to_str().unwrap(),
                "--tier",
                "tier-0=tier-0",
            ],
        ),
        0,
        "init of the nested project",
    );
    std::fs::create_dir_all(inner.join("tier-0/sub")).unwrap();
    let out = env.mirror_in(&inner.join("tier-0/sub"), &["snapshot"]);
    assert_exit(&out, 0, "snapshot inside the nested project");
    let ok = env.git(&[
        &format!("--git-dir={}", inner_shadow.display()),
        "rev-parse",
        "--verify",
        "tiers/tier-0",
    ]);
    assert_exit(&ok, 0, "the nested project's shadow got the snapshot");
    let outer = env.shadow_git(&["rev-parse", "--verify", "-q", "refs/heads/tiers/tier-0"]);
    assert!(
        !outer.status.success(),
        "the outer project must not have been snapshotted"
    );
}

#[test]
fn c_flag_runs_as_if_started_in_dir() {
    let env = two_tier_env();
    std::fs::create_dir_all(env.path("tier-0/deep/dir")).unwrap();
    env.ok(&["snapshot"]);
    env.write("tier-0/new.txt", "new\n");
    let expected = env.ok(&["status"]);
    let outside = env.root();

    // Relative and absolute DIR, from a directory outside the project.
    let rel = env.mirror_in(&outside, &["-C", "project", "status"]);
    assert_exit(&rel, 0, "-C project status");
    assert_eq!(stdout(&rel), expected);
    let deep = env.path("tier-0/deep/dir");
    let abs = env.mirror_in(&outside, &["-C", deep.to_str().unwrap(), "status"]);
    assert_exit(&abs, 0, "-C <abs deep dir> status");
    assert_eq!(stdout(&abs), expected);

    // -C after the subcommand works too (global option).
    let after = env.mirror_in(&outside, &["status", "-C", "project"]);
    assert_exit(&after, 0, "status -C project");
    assert_eq!(stdout(&after), expected);

    // Commands that write do so in DIR's project.
    let old = tip(&env, "tier-0");
    assert_exit(
        &env.mirror_in(&outside, &["-C", "project", "snapshot"]),
        0,
        "-C project snapshot",
    );
    assert_ne!(tip(&env, "tier-0"), old);

    // A DIR outside any project names DIR, not the real cwd, in the error.
    std::fs::create_dir_all(outside.join("elsewhere")).unwrap();
    let err = env.mirror_in(
        &env.path("tier-0"),
        &["-C", outside.join("elsewhere").to_str().unwrap(), "status"],
    );
    assert_exit(&err, 1, "-C elsewhere status");
    assert!(
        stderr(&err).contains(&format!(
            "no mirror.yaml in {}",
            outside.join("elsewhere").display()
        )),
        "{}",
        stderr(&err)
    );
}

#[test]
fn c_flag_init_writes_config_in_dir() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    let shadow = env.shadow.to_str().unwrap().to_owned();
    let out = env.mirror_in(&env.root(), &["-C", "project", "init", "--shadow", &shadow]);
    assert_exit(&out, 0, "-C project init");
    assert!(
        env.path("mirror.yaml").is_file(),
        "mirror.yaml must be written in DIR"
    );
    assert!(
        !env.root().join("mirror.yaml").exists(),
        "nothing may be written in the real cwd"
    );
    assert_eq!(
        yaml_tiers(&load_yaml(&env.path("mirror.yaml"))),
        vec![("tier-0".to_owned(), "tier-0".to_owned())]
    );
}

#[test]
fn c_flag_makes_relative_shadow_path_relative_to_dir() {
    // "Run as if started in DIR": a relative --shadow given together with -C DIR names a path
    // relative to DIR, as `git -C DIR` treats relative paths.
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    let out = env.mirror_in(
        &env.root(),
        &["-C", "project", "init", "--shadow", "rel-shadow.git"],
    );
    assert_exit(&out, 0, "-C project init --shadow rel-shadow.git");
    let expected = env.path("rel-shadow.git");
    let wrong = env.root().join("rel-shadow.git");
    assert!(
        is_bare_repo(&env, &expected),
        "shadow should be at {} (relative to -C DIR); exists in the real cwd instead: {}\n{}",
        expected.display(),
        wrong.exists(),
        stdout(&out)
    );
    assert!(
        !wrong.exists(),
        "nothing may be created relative to the real cwd"
    );
}

// ---------------------------------------------------------------------------------------------
// point 2: init

#[test]
fn init_writes_version_1_config_with_detected_tier_dirs() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    std::fs::create_dir_all(env.path("tier-minus1")).unwrap();
    std::fs::create_dir_all(env.path("tier-minus10/platforms")).unwrap();
    std::fs::create_dir_all(env.path("src")).unwrap(); // not a tier
    std::fs::create_dir_all(env.path("other/tier-nested")).unwrap(); // not top-level
    env.write("tier-file", "a file, not a directory\n");
    let shadow = env.shadow.to_str().unwrap().to_owned();
    let out = env.ok(&["init", "--shadow", &shadow]);

    let text = String::from_utf8(env.read("mirror.yaml")).unwrap();
    assert_eq!(
        first_content_line(&text),
        "version: 1",
        "mirror.yaml must start with `version: 1`:\n{text}"
    );
    let yaml = load_yaml(&env.path("mirror.yaml"));
    assert_eq!(yaml["version"].as_u64(), Some(1));
    assert_eq!(yaml["shadow"].as_str(), Some(shadow.as_str()));
    let tiers: BTreeSet<(String, String)> = yaml_tiers(&yaml).into_iter().collect();
    assert_eq!(
        tiers,
        pairs(&[
            ("tier-0", "tier-0"),
            ("tier-minus1", "tier-minus1"),
            ("tier-minus10", "tier-minus10")
        ]),
        "{text}"
    );
    assert!(
        is_bare_repo(&env, &env.shadow),
        "init must create a bare shadow repository"
    );
    assert!(
        out.contains(&shadow),
        "init must print the shadow path:\n{out}"
    );
}

#[test]
fn init_without_tier_dirs_makes_one_root_tier() {
    let env = Env::new();
    env.write("src/main.c", "int main;\n");
    env.init(&[]);
    let yaml = load_yaml(&env.path("mirror.yaml"));
    assert_eq!(yaml_tiers(&yaml), vec![("root".to_owned(), ".".to_owned())]);
}

#[test]
fn init_tier_option_is_repeatable_and_overrides_detection() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    std::fs::create_dir_all(env.path("docs/book")).unwrap();
    std::fs::create_dir_all(env.path("src")).unwrap();
    env.init(&["code=src", "book=docs/book", "everything=."]);
    let yaml = load_yaml(&env.path("mirror.yaml"));
    let tiers: BTreeSet<(String, String)> = yaml_tiers(&yaml).into_iter().collect();
    assert_eq!(
        tiers,
        pairs(&[("code", "src"), ("book", "docs/book"), ("everything", ".")])
    );
}

#[test]
fn init_with_existing_config_changes_nothing() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    env.init(&[]);
    // The user edits the file; a second init must keep it byte for byte.
    let mut custom = env.read("mirror.yaml");
    custom.extend_from_slice(b"# my own comment\n");
    env.write("mirror.yaml", &custom);
    let other_shadow = env.root().join("second-shadow.git");
    let out = env.mirror(&[
        "init",
        "--shadow",
        other_shadow.to_str().unwrap(),
        "--tier",
        "x=tier-0",
    ]);
    assert_exit(&out, 0, "init over an existing mirror.yaml");
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("already exists"),
        "init must say mirror.yaml exists:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        env.read("mirror.yaml"),
        custom,
        "mirror.yaml must be unchanged"
    );
    assert!(
        !other_shadow.exists(),
        "no new shadow repository may be created"
    );
}

#[test]
fn init_refuses_invalid_tier_names() {
    for bad in ["a b", "x..y", "a/b", "t.lock", "a~1"] {
        let env = Env::new();
        std::fs::create_dir_all(env.path("dir")).unwrap();
        let spec = format!("{bad}=dir");
        let out = env.mirror(&[
            "init",
            "--shadow",
            env.shadow.to_str().unwrap(),
            "--tier",
            &spec,
        ]);
        assert!(
            !out.status.success(),
            "tier name {bad:?} must be refused:\n{}",
            stdout(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains(bad) && err.contains("ref"),
            "the error must name {bad:?} and say why:\n{err}"
        );
        assert!(
            !env.path("mirror.yaml").exists(),
            "no mirror.yaml may be written for {bad:?}"
        );
        assert!(!env.shadow.exists(), "no shadow may be created for {bad:?}");
    }
}

#[test]
fn init_refuses_tier_paths_outside_the_root() {
    for bad in ["../x", "/etc", "a/../../x", "./../project-sibling"] {
        let env = Env::new();
        std::fs::create_dir_all(env.root().join("x")).unwrap();
        let spec = format!("t={bad}");
        let out = env.mirror(&[
            "init",
            "--shadow",
            env.shadow.to_str().unwrap(),
            "--tier",
            &spec,
        ]);
        assert!(
            !out.status.success(),
            "tier path {bad:?} must be refused:\n{}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains(bad),
            "the error must name the path {bad:?}:\n{}",
            stderr(&out)
        );
        assert!(
            !env.path("mirror.yaml").exists(),
            "no mirror.yaml may be written for {bad:?}"
        );
        assert!(!env.shadow.exists(), "no shadow may be created for {bad:?}");
    }
    // An absolute path inside the root is fine.
    let env = Env::new();
    std::fs::create_dir_all(env.path("inside")).unwrap();
    let spec = format!("t={}", env.path("inside").display());
    env.init(&[&spec]);
    assert_eq!(
        yaml_tiers(&load_yaml(&env.path("mirror.yaml"))),
        vec![("t".to_owned(), "inside".to_owned())]
    );
}

#[test]
fn init_default_shadow_is_under_xdg_data_home_with_random_name() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    let out = env.ok(&["init"]);
    let yaml = load_yaml(&env.path("mirror.yaml"));
    let shadow = PathBuf::from(yaml["shadow"].as_str().expect("shadow: is written"));
    let base = env.home.join("data").join("mirror");
    assert_eq!(
        shadow.parent(),
        Some(base.as_path()),
        "default shadow must be in $XDG_DATA_HOME/mirror: {}",
        shadow.display()
    );
    let name = shadow.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("project"),
        "shadow name must start with the project dir name: {name}"
    );
    assert!(
        name.trim_end_matches(".git").len() > "project".len() + 1,
        "shadow name must carry a random id: {name}"
    );
    assert!(
        out.contains(shadow.to_str().unwrap()),
        "init must print the shadow path:\n{out}"
    );
    assert!(is_bare_repo(&env, &shadow));
    assert!(
        !shadow.starts_with(&env.project),
        "default shadow must be outside the project"
    );

    // Another directory with the same name gets a different shadow.
    let twin = env.root().join("elsewhere").join("project");
    std::fs::create_dir_all(twin.join("tier-0")).unwrap();
    assert_exit(
        &env.mirror_in(&twin, &["init"]),
        0,
        "init of the twin project",
    );
    let twin_shadow = PathBuf::from(
        load_yaml(&twin.join("mirror.yaml"))["shadow"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(twin_shadow.parent(), Some(base.as_path()));
    assert_ne!(
        twin_shadow, shadow,
        "two projects named alike must not share a shadow"
    );
    assert!(is_bare_repo(&env, &twin_shadow));
}

#[test]
fn init_default_shadow_without_xdg_data_home_is_under_local_share() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    let out = env
        .cmd()
        .env_remove("XDG_DATA_HOME")
        .arg("init")
        .output()
        .unwrap();
    assert_exit(&out, 0, "init without XDG_DATA_HOME");
    let shadow = PathBuf::from(
        load_yaml(&env.path("mirror.yaml"))["shadow"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        shadow.parent(),
        Some(env.home.join(".local/share/mirror").as_path()),
        "{}",
        shadow.display()
    );
    assert!(is_bare_repo(&env, &shadow));
}

#[test]
fn init_refuses_duplicate_tiers_and_an_occupied_shadow_path() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("x")).unwrap();
    std::fs::create_dir_all(env.path("y")).unwrap();
    let shadow = env.shadow.to_str().unwrap().to_owned();
    let out = env.mirror(&[
        "init", "--shadow", &shadow, "--tier", "a=x", "--tier", "a=y",
    ]);
    assert!(
        !out.status.success(),
        "a tier name used twice must be refused"
    );
    assert!(stderr(&out).contains("'a'"), "{}", stderr(&out));
    assert!(!env.path("mirror.yaml").exists());
    assert!(!env.shadow.exists());

    // A non-empty directory at the shadow path is not taken over.
    write(&env.shadow.join("precious.txt"), "keep me\n");
    let out = env.mirror(&["init", "--shadow", &shadow, "--tier", "a=x"]);
    assert!(
        !out.status.success(),
        "init into a non-empty shadow directory must be refused"
    );
    assert!(stderr(&out).contains(&shadow), "{}", stderr(&out));
    assert!(
        !env.path("mirror.yaml").exists(),
        "no mirror.yaml may be written when the shadow cannot be created"
    );
    assert_eq!(std::fs::read_dir(&env.shadow).unwrap().count(), 1);
}

#[test]
fn init_shadow_from_env_and_flag() {
    // MIRROR_SHADOW alone.
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    let from_env = env.root().join("env-shadow.git");
    let out = env
        .cmd()
        .env("MIRROR_SHADOW", &from_env)
        .arg("init")
        .output()
        .unwrap();
    assert_exit(&out, 0, "MIRROR_SHADOW=... init");
    assert_eq!(
        load_yaml(&env.path("mirror.yaml"))["shadow"].as_str(),
        Some(from_env.to_str().unwrap())
    );
    assert!(is_bare_repo(&env, &from_env));
    assert!(stdout(&out).contains(from_env.to_str().unwrap()));
    assert!(!env
        .home
        .join("data/mirror")
        .read_dir()
        .map(|d| d.flatten().any(|e| e.path().join("HEAD").exists()))
        .unwrap_or(false));

    // --shadow wins over MIRROR_SHADOW.
    let env = Env::new();
    std::fs::create_dir_all(env.path("tier-0")).unwrap();
    let from_env = env.root().join("env-shadow.git");
    let from_flag = env.root().join("flag-shadow.git");
    let out = env
        .cmd()
        .env("MIRROR_SHADOW", &from_env)
        .args(["init", "--shadow", from_flag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&out, 0, "MIRROR_SHADOW=... init --shadow ...");
    assert_eq!(
        load_yaml(&env.path("mirror.yaml"))["shadow"].as_str(),
        Some(from_flag.to_str().unwrap())
    );
    assert!(is_bare_repo(&env, &from_flag));
    assert!(!from_env.exists());
}

#[test]
fn shadow_records_its_project_root() {
    let env = two_tier_env();
    let out = env.shadow_git(&["config", "mirror.root"]);
    assert_exit(&out, 0, "git config mirror.root");
    assert_eq!(stdout(&out).trim(), env.project.to_str().unwrap());
}

#[test]
fn snapshot_from_a_copied_project_is_refused() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let copy = env.root().join("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&env.project)
        .arg(&copy)
        .output()
        .unwrap();
    assert_exit(&cp, 0, "cp -a");
    write(&copy.join("tier-0/only-in-copy.txt"), "x\n");
    let before = refs(&env);

    let out = env.mirror_in(&copy, &["snapshot"]);
    assert_exit(
        &out,
        1,
        "snapshot from a copy that points at the original's shadow",
    );
    let err = stderr(&out);
    assert!(
        err.contains(copy.to_str().unwrap()),
        "error must name this root:\n{err}"
    );
    assert!(
        err.contains(env.project.to_str().unwrap()),
        "error must name the recorded root:\n{err}"
    );
    assert!(
        err.contains("mirror init"),
        "error must say how to fix it:\n{err}"
    );
    assert_eq!(
        refs(&env),
        before,
        "nothing may be recorded from the foreign root"
    );

    // The original still works.
    env.write("tier-0/a.txt", "alpha 2\n");
    env.ok(&["snapshot"]);
}

#[test]
fn following_the_foreign_root_advice_fixes_it() {
    // The refusal says: run `mirror init --shadow NEW_PATH` here. Doing exactly that must
    // leave the copy able to snapshot into its own, new shadow repository.
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let copy = env.root().join("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&env.project)
        .arg(&copy)
        .output()
        .unwrap();
    assert_exit(&cp, 0, "cp -a");
    let refused = env.mirror_in(&copy, &["snapshot"]);
    assert_exit(&refused, 1, "snapshot from the copy");
    assert!(
        stderr(&refused).contains("mirror init --shadow"),
        "{}",
        stderr(&refused)
    );

    let new_shadow = env.root().join("copy-shadow.git");
    let init = env.mirror_in(&copy, &["init", "--shadow", new_shadow.to_str().unwrap()]);
    assert_exit(&init, 0, "mirror init --shadow NEW_PATH in the copy");
    let again = env.mirror_in(&copy, &["snapshot"]);
    assert_exit(
        &again,
        0,
        &format!(
            "snapshot in the copy after following the advice (init said: {})",
            stdout(&init).trim()
        ),
    );
    let recorded = env.git(&[
        &format!("--git-dir={}", new_shadow.display()),
        "rev-parse",
        "--verify",
        "tiers/tier-0",
    ]);
    assert_exit(&recorded, 0, "the copy's snapshot is in the new shadow");
}

#[test]
fn status_and_log_without_config_find_shadow_through_registry() {
    // A custom --shadow outside $XDG_DATA_HOME can only be found through the registry.
    let env = two_tier_env();
    env.ok(&["snapshot", "-m", "before the loss"]);
    let id = tip(&env, "tier-0");
    let registry = env.home.join("data/mirror/projects");
    let reg = std::fs::read_to_string(&registry)
        .unwrap_or_else(|e| panic!("registry {}: {e}", registry.display()));
    assert!(
        reg.contains(env.project.to_str().unwrap()) && reg.contains(env.shadow.to_str().unwrap()),
        "{reg}"
    );

    std::fs::remove_file(env.path("mirror.yaml")).unwrap();
    env.write("tier-0/new.txt", "new\n");

    let status = env.mirror(&["status"]);
    assert_exit(&status, 0, "status without mirror.yaml");
    assert!(
        stderr(&status).contains("no mirror.yaml")
            && stderr(&status).contains(env.shadow.to_str().unwrap()),
        "status must say where the config came from:\n{}",
        stderr(&status)
    );
    assert!(
        status_changes(&stdout(&status)).contains(&("A".to_owned(), "tier-0/new.txt".to_owned())),
        "{}",
        stdout(&status)
    );

    let log = env.mirror(&["log"]);
    assert_exit(&log, 0, "log without mirror.yaml");
    assert!(
        stderr(&log).contains("no mirror.yaml")
            && stderr(&log).contains(env.shadow.to_str().unwrap()),
        "{}",
        stderr(&log)
    );
    assert!(
        stdout(&log).contains(&id[..7]) && stdout(&log).contains("before the loss"),
        "{}",
        stdout(&log)
    );

    // From a subdirectory as well.
    let sub = env.mirror_in(&env.path("tier-1"), &["log"]);
    assert_exit(&sub, 0, "log from a subdirectory without mirror.yaml");
    assert!(stdout(&sub).contains(&id[..7]));
}

#[test]
fn status_without_config_finds_default_location_shadow() {
    let env = Env::new();
    env.write("tier-0/a.txt", "a\n");
    env.ok(&["init"]);
    let shadow = load_yaml(&env.path("mirror.yaml"))["shadow"]
        .as_str()
        .unwrap()
        .to_owned();
    env.ok(&["snapshot"]);
    std::fs::remove_file(env.path("mirror.yaml")).unwrap();
    env.write("tier-0/a.txt", "changed\n");
    let out = env.mirror(&["status"]);
    assert_exit(&out, 0, "status without mirror.yaml, default shadow");
    assert!(stderr(&out).contains(&shadow), "{}", stderr(&out));
    assert_eq!(
        status_changes(&stdout(&out)),
        pairs(&[("M", "tier-0/a.txt")])
    );
}

// ---------------------------------------------------------------------------------------------
// point 6: log

#[test]
fn log_is_newest_first_across_tiers() {
    let env = two_tier_env();
    env.ok(&["snapshot", "--tier", "tier-0", "-m", "one"]);
    let a1 = tip(&env, "tier-0");
    wait_next_second();
    env.ok(&["snapshot", "--tier", "tier-1", "-m", "two"]);
    let b1 = tip(&env, "tier-1");
    wait_next_second();
    env.write("tier-0/a.txt", "alpha 2\n");
    env.ok(&["snapshot", "--tier", "tier-0", "-m", "three"]);
    let a2 = tip(&env, "tier-0");

    let ids: Vec<String> = log_json(&env, &[])
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        vec![a2.clone(), b1.clone(), a1.clone()],
        "log --json must be newest first across tiers"
    );

    let text = env.ok(&["log"]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, (id, msg)) in lines
        .iter()
        .zip([(&a2, "three"), (&b1, "two"), (&a1, "one")])
    {
        assert!(
            line.contains(&id[..7]) && line.contains(msg),
            "expected {msg} ({}) here:\n{text}",
            &id[..7]
        );
    }
}

#[test]
fn log_line_shows_local_time_tier_id_stats_trigger_message_and_tags() {
    let env = two_tier_env();
    env.ok(&["snapshot", "--tier", "tier-0"]);
    env.write("tier-0/new.txt", "new\n");
    env.write("tier-0/a.txt", "alpha 2\n");
    std::fs::remove_file(env.path("tier-0/b.txt")).unwrap();
    env.ok(&[
        "snapshot",
        "--tier",
        "tier-0",
        "--trigger",
        "cron",
        "-m",
        "nightly run",
    ]);
    let id = tip(&env, "tier-0");
    let tag = env.shadow_git(&[
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@example.com",
        "tag",
        "-a",
        "v1",
        "-m",
        "release",
        "tiers/tier-0",
    ]);
    assert_exit(&tag, 0, "git tag -a");
    assert_exit(
        &env.shadow_git(&["tag", "light", "tiers/tier-0~1"]),
        0,
        "git tag",
    );

    let entries = log_json(&env, &[]);
    let time = entries[0]["time"]
        .as_i64()
        .expect("time is seconds since the epoch");
    for (tz, offset) in [("UTC0", 0), ("XYZ-05:30", 5 * 3600 + 1800)] {
        let out = env
            .cmd()
            .env("TZ", tz)
            .args(["log", "--tier", "tier-0"])
            .output()
            .unwrap();
        assert_exit(&out, 0, "log");
        let text = stdout(&out);
        let line = text.lines().next().unwrap_or("");
        let local = chrono::DateTime::from_timestamp(time + offset, 0)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M")
            .to_string();
        assert_in_order(
            line,
            &[
                &local,
                "tier-0",
                &id[..7],
                "+1 ~1 -1",
                "cron",
                "nightly run",
                "v1",
            ],
        );
        let older = text.lines().nth(1).unwrap_or("");
        assert_in_order(older, &["tier-0", "+2 ~0 -0", "manual", "light"]);
        assert!(
            !older.contains("v1"),
            "tag v1 points at the newest snapshot only:\n{text}"
        );
    }
}

#[test]
fn log_json_has_all_fields() {
    let env = two_tier_env();
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    env.ok(&["snapshot", "-m", "hello", "--trigger", "test"]);
    let tag = env.shadow_git(&[
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@example.com",
        "tag",
        "-a",
        "v1",
        "-m",
        "msg",
        "tiers/tier-1",
    ]);
    assert_exit(&tag, 0, "git tag -a");
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let entries = log_json(&env, &[]);
    assert_eq!(entries.len(), 2);
    let by_tier: BTreeMap<String, &serde_json::Value> = entries
        .iter()
        .map(|e| (e["tier"].as_str().unwrap().to_owned(), e))
        .collect();
    assert_eq!(
        by_tier.keys().cloned().collect::<BTreeSet<_>>(),
        strs(&["tier-0", "tier-1"])
    );
    for (tier, e) in &by_tier {
        assert_eq!(e["id"].as_str(), Some(tip(&env, tier).as_str()), "{e}");
        let time = e["time"].as_i64().expect("time");
        assert!(
            (start..=end).contains(&time),
            "time {time} not within [{start}, {end}]"
        );
        assert_eq!(e["trigger"].as_str(), Some("test"));
        assert_eq!(e["message"].as_str(), Some("hello"));
        let stats = e["stats"].as_str().expect("stats");
        let expected = if tier == "tier-0" {
            "+2 ~0 -0"
        } else {
            "+1 ~0 -0"
        };
        assert_eq!(stats, expected);
        let tags: Vec<&str> = e["tags"]
            .as_array()
            .expect("tags array")
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            tags,
            if tier == "tier-1" { vec!["v1"] } else { vec![] },
            "{e}"
        );
    }
}

#[test]
fn log_tier_filter_and_count_limit() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let a1 = tip(&env, "tier-0");
    wait_next_second();
    env.write("tier-0/a.txt", "2\n");
    env.write("tier-1/c.txt", "2\n");
    env.ok(&["snapshot", "--tier", "tier-1"]);
    wait_next_second();
    env.ok(&["snapshot", "--tier", "tier-0"]);
    let a2 = tip(&env, "tier-0");

    let only0 = log_json(&env, &["--tier", "tier-0"]);
    let ids: Vec<&str> = only0.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![a2.as_str(), a1.as_str()]);
    assert!(only0.iter().all(|e| e["tier"] == "tier-0"));
    let text = env.ok(&["log", "--tier", "tier-0"]);
    assert!(!text.contains("tier-1"), "{text}");
    assert_eq!(
        text.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "{text}"
    );

    let one = log_json(&env, &["-n", "1"]);
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0]["id"].as_str(),
        Some(a2.as_str()),
        "-n 1 keeps the newest across tiers"
    );
    assert_eq!(
        env.ok(&["log", "-n", "2"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count(),
        2
    );
    assert_eq!(log_json(&env, &["-n", "3"]).len(), 3);
    assert_eq!(log_json(&env, &[]).len(), 4);
    let last_of_0 = log_json(&env, &["--tier", "tier-0", "-n", "1"]);
    assert_eq!(last_of_0.len(), 1);
    assert_eq!(last_of_0[0]["id"].as_str(), Some(a2.as_str()));
}

// ---------------------------------------------------------------------------------------------
// point 8: status

#[test]
fn status_lists_added_modified_deleted_per_tier() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let t0 = tip(&env, "tier-0");
    let t1 = tip(&env, "tier-1");
    env.write("tier-0/sub/new.txt", "new\n");
    env.write("tier-0/a.txt", "alpha changed\n");
    std::fs::remove_file(env.path("tier-0/b.txt")).unwrap();

    let out = env.mirror(&["status"]);
    assert_exit(&out, 0, "status");
    let text = stdout(&out);
    assert_eq!(
        status_changes(&text),
        pairs(&[
            ("A", "tier-0/sub/new.txt"),
            ("M", "tier-0/a.txt"),
            ("D", "tier-0/b.txt")
        ]),
        "{text}"
    );
    let line0 = text
        .lines()
        .find(|l| l.starts_with("tier-0"))
        .unwrap_or_else(|| panic!("no tier-0 line:\n{text}"));
    assert!(
        line0.contains(&t0[..7]),
        "tier-0 line must show its last snapshot id:\n{text}"
    );
    let entries = log_json(&env, &["--tier", "tier-0"]);
    let local = local_minutes(entries[0]["time"].as_i64().unwrap());
    assert!(
        line0.contains(&local),
        "tier-0 line must show the last snapshot time {local}:\n{text}"
    );
    let line1 = text
        .lines()
        .find(|l| l.starts_with("tier-1"))
        .unwrap_or_else(|| panic!("no tier-1 line:\n{text}"));
    assert!(
        line1.contains(&t1[..7]) && line1.contains("clean"),
        "an unchanged tier says clean:\n{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let tiers = json.as_array().expect("status --json is an array");
    let s0 = tiers
        .iter()
        .find(|t| t["tier"] == "tier-0")
        .expect("tier-0 entry");
    assert_eq!(s0["last"]["id"].as_str(), Some(t0.as_str()));
    assert!(s0["last"]["time"].is_i64());
    let changes: BTreeSet<(String, String)> = s0["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        pairs(&[
            ("A", "tier-0/sub/new.txt"),
            ("M", "tier-0/a.txt"),
            ("D", "tier-0/b.txt")
        ])
    );
    let s1 = tiers
        .iter()
        .find(|t| t["tier"] == "tier-1")
        .expect("tier-1 entry");
    assert_eq!(s1["changes"].as_array().map(Vec::len), Some(0));

    // After a snapshot, everything is clean.
    env.ok(&["snapshot"]);
    let clean = env.ok(&["status"]);
    assert!(status_changes(&clean).is_empty(), "{clean}");
    assert_eq!(
        clean.lines().filter(|l| l.contains("clean")).count(),
        2,
        "{clean}"
    );
}

/// `secs` as local time `YYYY-MM-DD HH:MM` (mirror inherits the test's TZ).
fn local_minutes(secs: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(secs, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

#[test]
fn status_writes_nothing_to_the_shadow() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    env.write("tier-0/new.txt", "content never seen by the shadow\n");
    env.write("tier-1/c.txt", "also new content\n");
    std::fs::remove_file(env.path("tier-0/b.txt")).unwrap();
    let count = |env: &Env| {
        let out = env.shadow_git(&["count-objects", "-v"]);
        assert_exit(&out, 0, "count-objects");
        stdout(&out)
    };
    let (objects, refs_before) = (count(&env), refs(&env));
    env.ok(&["status"]);
    env.ok(&["status", "--json"]);
    env.ok(&["diff"]);
    assert_eq!(count(&env), objects, "status/diff must not write objects");
    assert_eq!(refs(&env), refs_before, "status/diff must not move refs");
    // The new content is really not in the shadow.
    let blob = env.git_ok(&["hash-object", "tier-0/new.txt"]);
    let missing = env.shadow_git(&["cat-file", "-e", blob.trim()]);
    assert!(
        !missing.status.success(),
        "status must not have stored the new blob"
    );
}

#[test]
fn status_before_any_snapshot_and_with_root_tier() {
    let env = Env::new();
    env.write("a.txt", "a\n");
    env.init(&[]);
    let out = env.mirror(&["status"]);
    assert_exit(&out, 0, "status before any snapshot");
    assert!(
        status_changes(&stdout(&out)).contains(&("A".to_owned(), "a.txt".to_owned())),
        "{}",
        stdout(&out)
    );
    env.ok(&["snapshot"]);
    env.write("dir/b.txt", "b\n");
    let text = env.ok(&["status"]);
    // Root tier paths have no "./" prefix.
    assert_eq!(
        status_changes(&text),
        pairs(&[("A", "dir/b.txt")]),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// point 9: diff

#[test]
fn diff_working_tree_against_latest() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    assert_eq!(env.ok(&["diff"]), "", "no changes, no output");
    env.write("tier-0/new.txt", "new\n");
    env.write("tier-0/a.txt", "alpha changed\n");
    std::fs::remove_file(env.path("tier-1/c.txt")).unwrap();
    assert_eq!(
        set(&env.ok(&["diff"])),
        strs(&["A\ttier-0/new.txt", "M\ttier-0/a.txt", "D\ttier-1/c.txt"])
    );
    assert_eq!(
        set(&env.ok(&["diff", "latest"])),
        strs(&["A\ttier-0/new.txt", "M\ttier-0/a.txt", "D\ttier-1/c.txt"])
    );
    assert_eq!(
        set(&env.ok(&["diff", "--tier", "tier-1"])),
        strs(&["D\ttier-1/c.txt"])
    );
}

#[test]
fn diff_working_tree_against_a_revision() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let s1 = tip(&env, "tier-0");
    env.write("tier-0/second.txt", "2\n");
    env.ok(&["snapshot"]);
    env.write("tier-0/a.txt", "alpha changed\n");
    std::fs::remove_file(env.path("tier-0/b.txt")).unwrap();

    let expected = strs(&["A\ttier-0/second.txt", "M\ttier-0/a.txt", "D\ttier-0/b.txt"]);
    assert_eq!(
        set(&env.ok(&["diff", &s1[..8]])),
        expected,
        "diff <short id>"
    );
    assert_eq!(set(&env.ok(&["diff", &s1])), expected, "diff <full id>");
    assert_eq!(
        set(&env.ok(&["diff", "tiers/tier-0~1"])),
        expected,
        "diff tiers/tier-0~1"
    );
    assert_eq!(
        set(&env.ok(&["diff", "tiers/tier-0"])),
        strs(&["M\ttier-0/a.txt", "D\ttier-0/b.txt"])
    );
}

#[test]
fn diff_between_two_snapshots() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let s1 = tip(&env, "tier-0");
    env.write("tier-0/new.txt", "new\n");
    env.write("tier-0/a.txt", "alpha changed\n");
    std::fs::remove_file(env.path("tier-0/b.txt")).unwrap();
    env.ok(&["snapshot"]);
    let s2 = tip(&env, "tier-0");
    // Later working-tree changes do not matter between two snapshots.
    env.write("tier-0/unrecorded.txt", "x\n");

    assert_eq!(
        set(&env.ok(&["diff", &s1, &s2])),
        strs(&["A\ttier-0/new.txt", "M\ttier-0/a.txt", "D\ttier-0/b.txt"])
    );
    assert_eq!(
        set(&env.ok(&["diff", &s2[..7], &s1[..7]])),
        strs(&["D\ttier-0/new.txt", "M\ttier-0/a.txt", "A\ttier-0/b.txt"])
    );
    assert_eq!(
        set(&env.ok(&["diff", "tiers/tier-0~1", "tiers/tier-0"])),
        strs(&["A\ttier-0/new.txt", "M\ttier-0/a.txt", "D\ttier-0/b.txt"])
    );
    assert_eq!(env.ok(&["diff", &s2, &s2]), "");
}

// ---------------------------------------------------------------------------------------------
// point 10: errors and exit codes

#[test]
fn outside_a_project_every_command_says_run_init() {
    let env = Env::new();
    let dir = env.root().join("nowhere");
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        &["status"][..],
        &["log"],
        &["snapshot"],
        &["diff"],
        &["checkout", "latest"],
    ] {
        let out = env.mirror_in(&dir, args);
        assert_exit(
            &out,
            1,
            &format!("mirror {} outside a project", args.join(" ")),
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!("no mirror.yaml in {}", dir.display())),
            "{err}"
        );
        assert!(err.contains("run `mirror init`"), "{err}");
    }
}

/// Write `mirror.yaml` and run `mirror status`; return stderr after checking exit 1.
fn config_error(env: &Env, yaml: &str) -> String {
    env.write("mirror.yaml", yaml);
    let out = env.mirror(&["status"]);
    assert_exit(&out, 1, &format!("status with mirror.yaml:\n{yaml}"));
    let err = stderr(&out);
    let path = env.path("mirror.yaml");
    assert!(
        err.contains(path.to_str().unwrap()),
        "the error must name the file:\n{err}"
    );
    err
}

#[test]
fn broken_yaml_error_names_file_line_and_column() {
    let env = Env::new();
    let shadow = env.shadow.display().to_string();
    // Line 3, the second `:` (column 9, 1-based) is the error.
    let err = config_error(
        &env,
        &format!("version: 1\nshadow: {shadow}\ntiers: x: y\n"),
    );
    let path = env.path("mirror.yaml").display().to_string();
    let loc = err
        .split(&format!("{path}:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no `{path}:LINE:COL` in:\n{err}"));
    let mut parts = loc.splitn(3, ':');
    let line: usize = parts
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no line in:\n{err}"));
    let column: usize = parts
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no column in:\n{err}"));
    assert_eq!(line, 3, "{err}");
    assert!((8..=9).contains(&column), "column {column}:\n{err}");
}

#[test]
fn unknown_field_and_unsupported_version_are_named() {
    let env = Env::new();
    let shadow = env.shadow.display().to_string();
    let err = config_error(
        &env,
        &format!("version: 1\nshadow: {shadow}\ntiers:\n- name: t\n  path: t\ncolour: blue\n"),
    );
    assert!(
        err.contains("colour"),
        "the unknown field must be named:\n{err}"
    );
    assert!(err.contains(":6:"), "and its line:\n{err}");

    let err = config_error(
        &env,
        &format!("version: 2\nshadow: {shadow}\ntiers:\n- name: t\n  path: t\n"),
    );
    assert!(
        err.contains("version") && err.contains('2'),
        "the unsupported version must be named:\n{err}"
    );

    let err = config_error(
        &env,
        &format!("version: 1\nshadow: {shadow}\ntiers:\n- name: a b\n  path: t\n"),
    );
    assert!(
        err.contains("a b"),
        "an invalid tier name in mirror.yaml is named:\n{err}"
    );

    let err = config_error(
        &env,
        &format!("version: 1\nshadow: {shadow}\ntiers:\n- name: t\n  path: ../out\n"),
    );
    assert!(
        err.contains("../out"),
        "an escaping tier path in mirror.yaml is named:\n{err}"
    );
}

#[test]
fn unknown_tier_lists_valid_tiers() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let before = refs(&env);
    for args in [
        &["snapshot", "--tier", "nope"][..],
        &["log", "--tier", "nope"],
        &["status", "--tier", "nope"],
        &["diff", "--tier", "nope"],
        &["checkout", "latest", "--tier", "nope"],
    ] {
        let out = env.mirror(args);
        assert_exit(&out, 1, &format!("mirror {}", args.join(" ")));
        let err = stderr(&out);
        assert!(
            err.contains("nope") && err.contains("tier-0") && err.contains("tier-1"),
            "{err}"
        );
    }
    assert_eq!(refs(&env), before);
}

#[test]
fn unknown_revision_points_to_mirror_log() {
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let before = std::fs::read(env.path("tier-0/a.txt")).unwrap();
    for args in [
        &["diff", "no-such-rev"][..],
        &["diff", "tiers/tier-0~5"],
        &["diff", "tiers/tier-0", "deadbeef"],
        &["checkout", "no-such-rev"],
    ] {
        let out = env.mirror(args);
        assert_exit(&out, 1, &format!("mirror {}", args.join(" ")));
        assert!(
            stderr(&out).contains("mirror log"),
            "the error must say how to see revisions:\n{}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read(env.path("tier-0/a.txt")).unwrap(), before);
}

#[test]
fn usage_errors_exit_2() {
    let env = two_tier_env();
    for args in [
        &["status", "--bogus"][..],
        &["--bogus", "log"],
        &["frobnicate"],
        &["log", "-n", "many"],
        &[],
    ] {
        let out = env.mirror(args);
        assert_exit(&out, 2, &format!("mirror {}", args.join(" ")));
    }
}

#[test]
fn malformed_tier_option_is_a_usage_error() {
    let env = Env::new();
    let out = env.mirror(&[
        "init",
        "--shadow",
        env.shadow.to_str().unwrap(),
        "--tier",
        "no-equals-sign",
    ]);
    assert_exit(&out, 2, "init --tier without NAME=PATH");
    assert!(!env.path("mirror.yaml").exists());
}

// ---------------------------------------------------------------------------------------------
// point 12: a plain git repository

/// A tier with everything odd: empty dirs, symlinks (one dangling), exec files, a non-UTF-8
/// name, dotfiles and gitignored files.
fn odd_env() -> Env {
    let env = Env::new();
    env.write("tier-0/plain.txt", "plain\n");
    env.write("tier-0/.hidden/secret", "s\n");
    env.write("tier-0/.gitignore", "*.log\n");
    env.write("tier-0/debug.log", "ignored but recorded\n");
    env.write("tier-0/bin/run.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        env.path("tier-0/bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(env.path("tier-0/empty")).unwrap();
    std::fs::create_dir_all(env.path("tier-0/nested/deeper/empty")).unwrap();
    std::os::unix::fs::symlink("plain.txt", env.path("tier-0/link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", env.path("tier-0/dangling")).unwrap();
    write(
        &env.path("tier-0")
            .join(OsStr::from_bytes(b"caf\xe9 latin1.txt")),
        "bytes\n",
    );
    write(
        &env.path("tier-0")
            .join(OsStr::from_bytes(b"dir\xff"))
            .join("inner"),
        "x\n",
    );
    env.write("tier-1/other.txt", "other\n");
    env.init(&["tier-0=tier-0", "tier-1=tier-1"]);
    env
}

#[test]
fn shadow_passes_git_fsck_strict() {
    let env = odd_env();
    env.ok(&["snapshot", "-m", "first"]);
    env.write("tier-0/plain.txt", "changed\n");
    std::fs::remove_dir(env.path("tier-0/empty")).unwrap();
    env.write("tier-1/more.txt", "more\n");
    env.ok(&["snapshot"]);
    let out = env.shadow_git(&["fsck", "--strict"]);
    assert_exit(&out, 0, "git fsck --strict");
    assert_eq!(stdout(&out), "", "fsck must report nothing");
    assert_eq!(stderr(&out), "", "fsck must report nothing");
}

#[test]
fn git_log_of_a_tier_branch_lists_its_snapshots() {
    let env = two_tier_env();
    env.ok(&["snapshot", "-m", "first"]);
    env.write("tier-0/a.txt", "changed\n");
    env.ok(&["snapshot", "-m", "second"]);
    let out = env.shadow_git(&["log", "--format=%H", "tiers/tier-0"]);
    assert_exit(&out, 0, "git log tiers/tier-0");
    let git_ids: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let mirror_ids: Vec<String> = log_json(&env, &["--tier", "tier-0"])
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(git_ids, mirror_ids);
    assert_eq!(git_ids.len(), 2);
    let full = env.shadow_git(&["log", "tiers/tier-1"]);
    assert_exit(&full, 0, "git log tiers/tier-1");
    assert!(stdout(&full).contains("first"), "{}", stdout(&full));
}

#[test]
fn format_md_recovery_recipe_restores_the_tier_with_plain_git() {
    // docs/format.md promises recovery with git alone; run its byte-exact recipe verbatim.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/format.md")).unwrap();
    let start = doc
        .find("mkdir restore && cd restore")
        .expect("recipe start in docs/format.md");
    let end = start + doc[start..].find("\ndone\n").expect("recipe end") + "\ndone\n".len();
    let recipe = &doc[start..end];
    let env = odd_env();
    env.ok(&["snapshot"]);
    let work = env.root().join("recovery");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = std::process::Command::new("bash");
    env.isolate(&mut cmd);
    let out = cmd
        .arg("-c")
        .arg(recipe)
        .env("S", &env.shadow)
        .current_dir(&work)
        .output()
        .unwrap();
    assert_exit(&out, 0, "the docs/format.md recipe");
    let got = plain_files(&work.join("restore"));
    let want = plain_files(&env.path("tier-0"));
    assert!(want.len() >= 9, "{want:?}");
    assert_eq!(
        got, want,
        "the recipe must give back every file and link byte for byte"
    );
    let dirs = |root: &Path| -> BTreeSet<Vec<u8>> {
        tree(root, &[".git"])
            .into_iter()
            .filter(|(_, n)| *n == Node::Dir)
            .map(|(p, _)| p)
            .collect()
    };
    assert_eq!(
        dirs(&work.join("restore")),
        dirs(&env.path("tier-0")),
        "empty directories too"
    );
}

#[test]
fn git_clone_and_checkout_yields_the_tier_files() {
    let env = odd_env();
    env.ok(&["snapshot"]);
    let clone = env.root().join("clone");
    let out = env.git(&[
        "clone",
        "-q",
        env.shadow.to_str().unwrap(),
        clone.to_str().unwrap(),
    ]);
    assert_exit(&out, 0, "git clone SHADOW");
    for tier in ["tier-1", "tier-0"] {
        let out = env.git(&[
            "-C",
            clone.to_str().unwrap(),
            "checkout",
            "-q",
            &format!("tiers/{tier}"),
        ]);
        assert_exit(&out, 0, &format!("git checkout tiers/{tier}"));
        let mut want = plain_files(&env.path(tier));
        let mut got = plain_files(&clone);
        assert!(
            want.len() >= if tier == "tier-0" { 9 } else { 1 },
            "{want:?}"
        );
        // A treasure comes out of plain git as its age ciphertext, never as plaintext.
        let secret = b".hidden/secret".to_vec();
        if tier == "tier-0" {
            match (got.remove(&secret), want.remove(&secret)) {
                (Some(Plain::File(cipher, _)), Some(Plain::File(plain, _))) => {
                    assert!(cipher.starts_with(b"age-encryption.org/v1\n"));
                    assert_eq!(env.age_decrypt(&cipher), plain);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got, want,
            "a plain git checkout of tiers/{tier} must give the tier's files"
        );
    }
}

#[test]
fn metadata_note_and_config_ref_are_readable_with_plain_git() {
    let env = odd_env();
    env.ok(&["snapshot"]);
    for tier in ["tier-0", "tier-1"] {
        let commit = tip(&env, tier);
        let records = note_records(&env, &commit).expect("a metadata note");
        let needle: &[u8] = if tier == "tier-0" {
            b"plain.txt"
        } else {
            b"other.txt"
        };
        assert!(
            records.iter().any(|(k, _, p)| k == "m" && p == needle),
            "note of {tier}: {records:?}"
        );
    }
    let show = |env: &Env| {
        let out = env.shadow_git(&["show", "refs/mirror/config:mirror.yaml"]);
        assert_exit(&out, 0, "git show refs/mirror/config:mirror.yaml");
        out.stdout
    };
    assert_eq!(show(&env), env.read("mirror.yaml"));

    // An edited mirror.yaml is recorded with the next snapshot.
    let mut yaml = env.read("mirror.yaml");
    yaml.extend_from_slice(b"exclude:\n- '*.tmp'\n");
    env.write("mirror.yaml", &yaml);
    env.write("tier-0/plain.txt", "again\n");
    env.ok(&["snapshot"]);
    assert_eq!(show(&env), yaml);
    assert!(
        note_records(&env, &tip(&env, "tier-0")).is_some(),
        "note of the second snapshot"
    );
}

#[test]
fn shadow_of_a_newer_format_is_refused_untouched() {
    // A later mirror may extend the format; this one must not write into what it cannot read.
    let env = two_tier_env();
    env.ok(&["snapshot"]);
    let out = env.shadow_git(&["config", "mirror.formatVersion", "3"]);
    assert_exit(&out, 0, "git config");
    let before = refs(&env);
    env.write("tier-0/new.txt", "new");
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot into a newer-format shadow");
    assert!(stderr(&out).contains("newer mirror"), "{}", stderr(&out));
    assert_eq!(refs(&env), before, "nothing may be written");
}
