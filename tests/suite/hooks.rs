//! Issue 5: git hooks. `mirror hooks install|uninstall|status`, the `hooks/pre-commit` and
//! `hooks/post-checkout` scripts run by a real git (`git commit`, `git commit -a`,
//! `git commit <path>`, `git checkout`, `git worktree add`), chaining of existing hooks,
//! `core.hooksPath`, `hooks: {strict, auto_restore}`, `mirror restore --missing` and the
//! `git clean -fdx` disaster drill.

use crate::common::*;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// ---------------------------------------------------------------------------------------------
// helpers

/// The directory holding the `mirror` binary under test.
fn mirror_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mirror"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `PATH` with the binary under test first.
fn path_with_mirror() -> OsString {
    let mut dirs = vec![mirror_bin_dir()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// `PATH` without any directory holding a `mirror` (git and sh stay reachable).
fn path_without_mirror() -> OsString {
    let dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .filter(|d| !d.join("mirror").exists() && *d != mirror_bin_dir())
        .collect();
    std::env::join_paths(dirs).unwrap()
}

/// The real git in `dir`, isolated, with `path` as PATH (which decides whether the hooks
/// find `mirror`), plus extra variables.
fn git_with(
    env: &Env,
    dir: &Path,
    path: &OsString,
    vars: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    cmd.current_dir(dir).env("PATH", path).args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run git")
}

/// git in the project with mirror on PATH: the installed hooks really run mirror.
fn hgit(env: &Env, args: &[&str]) -> Output {
    git_with(env, &env.project, &path_with_mirror(), &[], args)
}

fn hgit_ok(env: &Env, args: &[&str]) -> Output {
    let out = hgit(env, args);
    assert_exit(
        &out,
        0,
        &format!("git {} (hooks installed)", args.join(" ")),
    );
    out
}

fn git_text(env: &Env, args: &[&str]) -> String {
    env.git_ok(args).trim().to_owned()
}

fn head(env: &Env) -> String {
    git_text(env, &["rev-parse", "HEAD"])
}

/// The tip of tier `t` in the shadow, if any.
fn tip(env: &Env) -> Option<String> {
    tier_tip(env, "t")
}

fn tier_tip(env: &Env, tier: &str) -> Option<String> {
    let out = env.shadow_git(&[
        "rev-parse",
        "--verify",
        "-q",
        &format!("refs/heads/tiers/{tier}"),
    ]);
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

fn commit_message(env: &Env, rev: &str) -> String {
    let out = env.shadow_git(&["log", "-1", "--format=%B", rev]);
    assert_exit(&out, 0, "shadow git log");
    stdout(&out)
}

fn trailer(message: &str, key: &str) -> Option<String> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .map(str::to_owned)
}

/// A file's content as recorded in a shadow commit.
/// The tier moved past `before` to a `pre-commit` snapshot naming `parent` as the source
/// HEAD; returns the new snapshot.
fn assert_pre_commit_snapshot(env: &Env, before: &str, parent: &str, what: &str) -> String {
    let new = tip(env).unwrap();
    assert_ne!(new, before, "{what} took no snapshot");
    let message = commit_message(env, &new);
    assert_eq!(
        trailer(&message, "Mirror-Trigger").as_deref(),
        Some("pre-commit"),
        "{message}"
    );
    assert_eq!(
        trailer(&message, "Mirror-Source-Head").as_deref(),
        Some(parent),
        "the pre-commit snapshot must name the parent HEAD:\n{message}"
    );
    new
}

/// The recorded content of `path` at `rev`, decrypted (with the real `age`) if a treasure.
fn recorded(env: &Env, rev: &str, path: &str) -> Option<Vec<u8>> {
    let out = env.shadow_git(&["cat-file", "blob", &format!("{rev}:{path}")]);
    if !out.status.success() {
        return None;
    }
    Some(if out.stdout.starts_with(b"age-encryption.org/v1\n") {
        env.age_decrypt(&out.stdout)
    } else {
        out.stdout
    })
}

/// All output (stdout and stderr) of a command, as lines; git sends hooks' stdout to stderr.
fn output_lines(out: &Output) -> Vec<String> {
    let mut lines: Vec<String> = stdout(out).lines().map(str::to_owned).collect();
    lines.extend(stderr(out).lines().map(str::to_owned));
    lines.retain(|l| !l.trim().is_empty());
    lines
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn append_config(env: &Env, text: &str) {
    let mut config = String::from_utf8(env.read("mirror.yaml")).unwrap();
    config.push_str(text);
    env.write("mirror.yaml", config);
}

fn hooks_dir(env: &Env) -> PathBuf {
    env.project.join(".git/hooks")
}

/// A git project with tracked files, ignored files and one tier `t` covering the whole
/// project (its shadow outside). The first commit is made before mirror is set up; hooks are
/// not installed yet.
fn git_project(env: &Env) {
    env.git_ok(&["init", "-q", "-b", "main"]);
    env.git_ok(&["config", "user.name", "Hook Tester"]);
    env.git_ok(&["config", "user.email", "hooks@example.com"]);
    env.write(".gitignore", "target/\n.env\n*.log\nmirror.yaml\n");
    env.write("README.md", "readme v1\n");
    env.write("src/main.rs", "fn main() {}\n");
    env.write("target/debug/app", b"\x7fELF\x02\x01\x01 build output");
    set_mode(&env.path("target/debug/app"), 0o755);
    env.write(".env", "TOKEN=one\n");
    env.git_ok(&["add", "."]);
    env.git_ok(&["commit", "-q", "-m", "initial"]);
    env.init(&["t=."]);
}

/// [`git_project`] with mirror's hooks installed and a first snapshot.
fn hooked_project(env: &Env) {
    git_project(env);
    env.ok(&["hooks", "install"]);
    env.ok(&["snapshot"]);
}

/// Bytes, modes and mtimes of everything in a hooks directory.
fn hooks_state(dir: &Path) -> std::collections::BTreeMap<Vec<u8>, Node> {
    tree(dir, &[])
}

// ---------------------------------------------------------------------------------------------
// pre-commit through real git commits

#[test]
fn git_commit_takes_a_quiet_pre_commit_snapshot_naming_the_parent_head() {
    let env = Env::new();
    hooked_project(&env);
    let before = tip(&env).unwrap();
    let parent = head(&env);

    env.write(".env", "TOKEN=two\n");
    env.write("README.md", "readme v2\n");
    env.git_ok(&["add", "README.md"]);
    let out = hgit_ok(&env, &["commit", "-q", "-m", "second"]);

    // The commit is made, on top of the old HEAD.
    assert_eq!(git_text(&env, &["rev-parse", "HEAD~1"]), parent);
    assert_eq!(git_text(&env, &["log", "-1", "--format=%s"]), "second");

    // A new snapshot, trigger pre-commit, naming the HEAD before the commit.
    let new = assert_pre_commit_snapshot(&env, &before, &parent, "git commit");
    assert_eq!(
        recorded(&env, &new, ".env").as_deref(),
        Some(&b"TOKEN=two\n"[..])
    );
    assert_eq!(
        recorded(&env, &new, "README.md").as_deref(),
        Some(&b"readme v2\n"[..])
    );

    // Quiet: at most one line from mirror, and it is mirror's.
    let lines = output_lines(&out);
    assert!(
        lines.len() <= 1,
        "pre-commit must print at most one line:\n{lines:#?}"
    );
    for l in &lines {
        assert!(l.starts_with("mirror:"), "unexpected output: {l}");
    }

    // Nothing changed in the tier: no new snapshot, and nothing printed at all.
    let out = hgit_ok(&env, &["commit", "-q", "--allow-empty", "-m", "empty"]);
    assert_eq!(
        tip(&env).unwrap(),
        new,
        "an unchanged tier got a new snapshot"
    );
    assert!(output_lines(&out).is_empty(), "{:#?}", output_lines(&out));

    // The hook run is in the audit trail.
    let entries = audit_log(&env, &["-n", "1"]);
    assert_eq!(entries[0]["command"], "hook");
    assert_eq!(entries[0]["result"], "ok");
    assert_eq!(
        entries[0]["args"],
        serde_json::json!(["hook", "pre-commit"])
    );
}

#[test]
fn first_commit_of_a_new_repository_is_not_blocked_and_is_recorded() {
    let env = Env::new();
    env.git_ok(&["init", "-q", "-b", "main"]);
    env.git_ok(&["config", "user.name", "Hook Tester"]);
    env.git_ok(&["config", "user.email", "hooks@example.com"]);
    env.write(".gitignore", ".env\nmirror.yaml\n");
    env.write("README.md", "first\n");
    env.write(".env", "TOKEN=first\n");
    env.init(&["t=."]);
    env.ok(&["hooks", "install"]);
    env.git_ok(&["add", "."]);
    let out = hgit_ok(&env, &["commit", "-q", "-m", "root commit"]);
    assert!(output_lines(&out).len() <= 1, "{:#?}", output_lines(&out));
    assert_eq!(git_text(&env, &["rev-list", "--count", "HEAD"]), "1");
    let snap = tip(&env).expect("the first commit took a snapshot");
    let message = commit_message(&env, &snap);
    assert_eq!(
        trailer(&message, "Mirror-Trigger").as_deref(),
        Some("pre-commit")
    );
    assert_eq!(
        recorded(&env, &snap, ".env").as_deref(),
        Some(&b"TOKEN=first\n"[..])
    );
}

#[test]
fn git_commit_all_records_ignored_files_and_commits_exactly_what_git_would() {
    let env = Env::new();
    hooked_project(&env);
    let parent = head(&env);
    let before = tip(&env).unwrap();

    env.write("README.md", "readme v2\n");
    env.write("src/main.rs", "fn main() { println!(\"v2\"); }\n");
    env.write("notes.txt", "untracked, not ignored\n");
    env.write(".env", "TOKEN=all\n");
    env.write("build.log", "ignored log\n");
    let out = hgit_ok(&env, &["commit", "-q", "-a", "-m", "all"]);
    assert!(output_lines(&out).len() <= 1, "{:#?}", output_lines(&out));

    // Exactly the two modified tracked files, with their working-tree content.
    assert_eq!(git_text(&env, &["rev-parse", "HEAD~1"]), parent);
    assert_eq!(
        git_text(&env, &["show", "--format=", "--name-status", "HEAD"]),
        "M\tREADME.md\nM\tsrc/main.rs"
    );
    assert_eq!(git_text(&env, &["show", "HEAD:README.md"]), "readme v2");
    assert_eq!(
        git_text(&env, &["show", "HEAD:src/main.rs"]),
        "fn main() { println!(\"v2\"); }"
    );
    assert_eq!(
        git_text(&env, &["ls-files"]),
        ".gitignore\nREADME.md\nsrc/main.rs"
    );
    // The real index is what git left: equal to HEAD, the untracked file still untracked.
    assert_exit(
        &env.git(&["diff", "--cached", "--quiet"]),
        0,
        "index == HEAD",
    );
    assert_exit(&env.git(&["diff", "--quiet"]), 0, "work tree == index");
    assert_eq!(env.git_ok(&["status", "--porcelain"]), "?? notes.txt\n");

    // The snapshot recorded the ignored and untracked files, naming the parent.
    let new = assert_pre_commit_snapshot(&env, &before, &parent, "git commit -a");
    assert_eq!(
        recorded(&env, &new, ".env").as_deref(),
        Some(&b"TOKEN=all\n"[..])
    );
    assert_eq!(
        recorded(&env, &new, "build.log").as_deref(),
        Some(&b"ignored log\n"[..])
    );
    assert_eq!(
        recorded(&env, &new, "notes.txt").as_deref(),
        Some(&b"untracked, not ignored\n"[..])
    );
    assert_eq!(
        recorded(&env, &new, "target/debug/app").as_deref(),
        Some(&b"\x7fELF\x02\x01\x01 build output"[..])
    );
}

#[test]
fn git_commit_paths_from_a_subdirectory_commits_only_those_paths_and_keeps_the_index() {
    let env = Env::new();
    hooked_project(&env);
    let parent = head(&env);
    let before = tip(&env).unwrap();

    // A staged change that `git commit <path>` must leave staged, not commit.
    env.write("README.md", "readme staged\n");
    env.git_ok(&["add", "README.md"]);
    env.write("src/main.rs", "fn main() { /* only this */ }\n");
    env.write("src/lib.rs", "// untracked\n");
    env.write(".env", "TOKEN=paths\n");
    // From src/ (git sets GIT_PREFIX, and a temporary GIT_INDEX_FILE for `commit <paths>`).
    let out = git_with(
        &env,
        &env.path("src"),
        &path_with_mirror(),
        &[],
        &["commit", "-q", "-m", "only main.rs", "main.rs"],
    );
    assert_exit(&out, 0, "git commit main.rs");
    assert!(output_lines(&out).len() <= 1, "{:#?}", output_lines(&out));

    assert_eq!(git_text(&env, &["rev-parse", "HEAD~1"]), parent);
    assert_eq!(
        git_text(&env, &["show", "--format=", "--name-status", "HEAD"]),
        "M\tsrc/main.rs"
    );
    assert_eq!(
        git_text(&env, &["show", "HEAD:src/main.rs"]),
        "fn main() { /* only this */ }"
    );
    assert_eq!(git_text(&env, &["show", "HEAD:README.md"]), "readme v1");
    // README.md's change is still staged (and only it), the new file untracked.
    assert_eq!(
        git_text(&env, &["diff", "--cached", "--name-only"]),
        "README.md"
    );
    assert_eq!(git_text(&env, &["show", ":README.md"]), "readme staged");
    assert_eq!(
        env.git_ok(&["status", "--porcelain"]),
        "M  README.md\n?? src/lib.rs\n"
    );
    assert_eq!(
        git_text(&env, &["ls-files"]),
        ".gitignore\nREADME.md\nsrc/main.rs"
    );

    let new = assert_pre_commit_snapshot(&env, &before, &parent, "git commit <path>");
    assert_eq!(
        recorded(&env, &new, ".env").as_deref(),
        Some(&b"TOKEN=paths\n"[..])
    );
    assert_eq!(
        recorded(&env, &new, "src/lib.rs").as_deref(),
        Some(&b"// untracked\n"[..])
    );
    // mirror's own files never landed in the project's index or repository.
    assert!(!git_text(&env, &["ls-files", "--stage"]).contains("mirror"));
}

// ---------------------------------------------------------------------------------------------
// post-checkout

#[test]
fn checkout_new_branch_and_back_take_post_checkout_snapshots() {
    let env = Env::new();
    hooked_project(&env);
    let main_head = head(&env);
    let first = tip(&env).unwrap();

    // An ignored file edited, then a new branch.
    env.write(".env", "TOKEN=on-x\n");
    let out = hgit_ok(&env, &["checkout", "-q", "-b", "x"]);
    assert!(output_lines(&out).len() <= 1, "{:#?}", output_lines(&out));
    let on_x = tip(&env).unwrap();
    assert_ne!(on_x, first, "git checkout -b x took no snapshot");
    let message = commit_message(&env, &on_x);
    assert_eq!(
        trailer(&message, "Mirror-Trigger").as_deref(),
        Some("post-checkout"),
        "{message}"
    );
    assert_eq!(
        trailer(&message, "Mirror-Previous-Head").as_deref(),
        Some(main_head.as_str())
    );
    assert_eq!(
        trailer(&message, "Mirror-Source-Head").as_deref(),
        Some(main_head.as_str())
    );
    assert_eq!(
        recorded(&env, &on_x, ".env").as_deref(),
        Some(&b"TOKEN=on-x\n"[..])
    );

    // A commit on x, then back to main with `git checkout -`.
    env.write("README.md", "readme on x\n");
    hgit_ok(&env, &["commit", "-q", "-a", "-m", "on x"]);
    let x_head = head(&env);
    env.write(".env", "TOKEN=back\n");
    hgit_ok(&env, &["checkout", "-q", "-"]);
    assert_eq!(
        git_text(&env, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "main"
    );
    assert_eq!(env.read("README.md"), b"readme v1\n");
    let back = tip(&env).unwrap();
    let message = commit_message(&env, &back);
    assert_eq!(
        trailer(&message, "Mirror-Trigger").as_deref(),
        Some("post-checkout"),
        "{message}"
    );
    assert_eq!(
        trailer(&message, "Mirror-Previous-Head").as_deref(),
        Some(x_head.as_str())
    );
    assert_eq!(
        trailer(&message, "Mirror-Source-Head").as_deref(),
        Some(main_head.as_str())
    );
    assert_eq!(
        recorded(&env, &back, "README.md").as_deref(),
        Some(&b"readme v1\n"[..])
    );
    assert_eq!(
        recorded(&env, &back, ".env").as_deref(),
        Some(&b"TOKEN=back\n"[..])
    );
    // The checkout is audited with both heads.
    let entry = &audit_log(&env, &["-n", "1"])[0];
    assert_eq!(entry["command"], "hook");
    assert_eq!(entry["details"]["previous_head"], x_head.as_str());
    assert_eq!(entry["details"]["new_head"], main_head.as_str());
    assert_eq!(entry["details"]["branch_checkout"], true);

    // A file checkout (flag 0) takes no snapshot, even with changes on disk.
    env.write("README.md", "scribbled\n");
    env.write(".env", "TOKEN=file-checkout\n");
    hgit_ok(&env, &["checkout", "--", "README.md"]);
    assert_eq!(env.read("README.md"), b"readme v1\n");
    assert_eq!(
        tip(&env).unwrap(),
        back,
        "git checkout -- file took a snapshot"
    );
    let entry = &audit_log(&env, &["-n", "1"])[0];
    assert_eq!(entry["command"], "hook");
    assert_eq!(entry["args"][1], "post-checkout");
    assert_eq!(entry["args"][4], "0");
    assert_eq!(entry["details"]["branch_checkout"], false);
}

/// main has `.hidden/key.txt` (and a plain `docs/guide.md`); branch `old` does not.
fn project_with_hidden_file_on_main(env: &Env) {
    hooked_project(env);
    env.git_ok(&["branch", "old"]);
    env.write(".hidden/key.txt", "the only copy of the key\n");
    env.write("docs/guide.md", "plain docs\n");
    env.git_ok(&["add", ".hidden/key.txt", "docs/guide.md"]);
    hgit_ok(env, &["commit", "-q", "-m", "add key"]);
}

#[test]
fn branch_switch_deleting_a_hidden_file_prints_the_command_that_restores_it() {
    let env = Env::new();
    project_with_hidden_file_on_main(&env);
    let recorded_tip = tip(&env).unwrap();
    assert_eq!(
        recorded(&env, &recorded_tip, ".hidden/key.txt").as_deref(),
        Some(&b"the only copy of the key\n"[..]),
        "the pre-commit snapshot recorded the key"
    );

    let out = hgit_ok(&env, &["checkout", "-q", "old"]);
    assert!(!env.path(".hidden/key.txt").exists(), "git deleted it");
    assert!(!env.path("docs/guide.md").exists(), "git deleted it");
    let err = stderr(&out);
    assert!(
        err.contains("mirror: the checkout removed 1 critical files:"),
        "the deleted critical file is reported:\n{err}"
    );
    assert!(err.contains("  t: .hidden/key.txt\n"), "{err}");
    assert!(
        !err.contains("guide.md"),
        "a non-critical file is not listed:\n{err}"
    );
    // The command names exactly the critical files, so it does not bring back what the
    // checkout removed on purpose.
    let expected = format!(
        "mirror restore --missing --tier t --from {} -- .hidden/key.txt",
        &recorded_tip[..12]
    );
    let line = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("restore them with: "))
        .unwrap_or_else(|| panic!("no restore command printed:\n{err}"));
    assert_eq!(line, expected);
    // The post-checkout snapshot recorded the state after the switch.
    let after = tip(&env).unwrap();
    assert_ne!(after, recorded_tip);
    assert_eq!(recorded(&env, &after, ".hidden/key.txt"), None);

    // An existing, modified file must survive the restore untouched.
    env.write(".env", "TOKEN=modified after the switch\n");
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    env.ok(&args);
    assert_eq!(env.read(".hidden/key.txt"), b"the only copy of the key\n");
    assert_eq!(env.read(".env"), b"TOKEN=modified after the switch\n");
    assert!(
        !env.path("docs/guide.md").exists(),
        "only the critical file comes back"
    );
    // git's checkout is left as it was.
    assert_eq!(
        git_text(&env, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "old"
    );
    assert_eq!(env.read("README.md"), b"readme v1\n");
}

#[test]
fn auto_restore_brings_back_missing_critical_files_at_once_and_overwrites_nothing() {
    let env = Env::new();
    hooked_project(&env);
    append_config(&env, "hooks:\n  auto_restore: true\n");
    // `old` has .hidden/shared.txt v1; main changes it and adds .hidden/key.txt.
    env.write(".hidden/shared.txt", "shared v1\n");
    env.git_ok(&["add", ".hidden/shared.txt"]);
    hgit_ok(&env, &["commit", "-q", "-m", "shared v1"]);
    env.git_ok(&["branch", "old"]);
    env.write(".hidden/shared.txt", "shared v2\n");
    env.write(".hidden/key.txt", "key on main\n");
    env.write("docs/guide.md", "plain docs\n");
    env.git_ok(&["add", "."]);
    hgit_ok(&env, &["commit", "-q", "-m", "main"]);
    let before = tip(&env).unwrap();
    assert_eq!(
        recorded(&env, &before, ".hidden/key.txt").as_deref(),
        Some(&b"key on main\n"[..])
    );

    let out = hgit_ok(&env, &["checkout", "-q", "old"]);
    let err = stderr(&out);
    assert!(
        err.contains("mirror: the checkout removed 1 critical files:"),
        "{err}"
    );
    assert!(err.contains("  t: .hidden/key.txt\n"), "{err}");
    assert!(
        err.contains("mirror: restored them (hooks.auto_restore is on)"),
        "{err}"
    );
    assert!(!err.contains("restore them with"), "{err}");

    // Restored at once; the file git rewrote is left as git wrote it; nothing else written.
    assert_eq!(env.read(".hidden/key.txt"), b"key on main\n");
    assert_eq!(env.read(".hidden/shared.txt"), b"shared v1\n");
    // docs/guide.md is not critical: git removed it on purpose, and auto_restore (which the
    // issue limits to the critical files it lists) must not bring it back.
    assert!(
        !env.path("docs/guide.md").exists(),
        "auto_restore wrote the non-critical docs/guide.md, which the checkout removed on purpose \
         (only the listed critical files may be restored); git status now:\n{}",
        env.git_ok(&["status", "--porcelain"])
    );
    assert_eq!(
        git_text(&env, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "old"
    );
    assert_eq!(
        env.git_ok(&["status", "--porcelain"]),
        "?? .hidden/key.txt\n"
    );

    // Audited, and the snapshot after the checkout has the restored file.
    let entry = &audit_log(&env, &["-n", "1"])[0];
    assert_eq!(entry["command"], "hook");
    assert_eq!(entry["result"], "ok");
    assert_eq!(entry["details"]["auto_restored"], true);
    assert_eq!(
        entry["details"]["missing_critical"][0]["paths"],
        serde_json::json!([".hidden/key.txt"])
    );
    let after = tip(&env).unwrap();
    assert_eq!(
        recorded(&env, &after, ".hidden/key.txt").as_deref(),
        Some(&b"key on main\n"[..])
    );
    assert_eq!(
        recorded(&env, &after, ".hidden/shared.txt").as_deref(),
        Some(&b"shared v1\n"[..])
    );
}

#[test]
fn restore_missing_writes_only_missing_files_within_tier_and_paths() {
    let env = Env::new();
    hooked_project(&env);
    env.write("target/debug/other", "other build output\n");
    env.write("cache.log", "log v1\n");
    env.ok(&["snapshot"]);

    std::fs::remove_file(env.path("target/debug/app")).unwrap();
    std::fs::remove_file(env.path("target/debug/other")).unwrap();
    std::fs::remove_file(env.path("cache.log")).unwrap();
    env.write(".env", "TOKEN=local edit\n");

    // Only below the given path.
    env.ok(&[
        "restore",
        "--missing",
        "--tier",
        "t",
        "--",
        "target/debug/app",
    ]);
    assert_eq!(
        env.read("target/debug/app"),
        b"\x7fELF\x02\x01\x01 build output"
    );
    assert!(!env.path("target/debug/other").exists());
    assert!(!env.path("cache.log").exists());

    // Everything missing; the edited file is not touched.
    let out = env.ok(&["restore", "--missing"]);
    assert!(out.contains("t: restored 2 missing files from"), "{out}");
    assert_eq!(env.read("target/debug/other"), b"other build output\n");
    assert_eq!(env.read("cache.log"), b"log v1\n");
    assert_eq!(env.read(".env"), b"TOKEN=local edit\n");
    let mode = std::fs::metadata(env.path("target/debug/app"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "the mode is restored too");
}

#[test]
fn file_checkout_reports_missing_critical_files_but_takes_no_snapshot() {
    let env = Env::new();
    hooked_project(&env);
    env.write(".hidden/local.key", "untracked treasure\n");
    env.write("notes/plain.txt", "not critical\n");
    env.ok(&["snapshot"]);
    let recorded_tip = tip(&env).unwrap();
    std::fs::remove_file(env.path(".hidden/local.key")).unwrap();
    std::fs::remove_file(env.path("notes/plain.txt")).unwrap();

    env.write("README.md", "scribbled\n");
    let out = hgit_ok(&env, &["checkout", "--", "README.md"]);
    assert_eq!(env.read("README.md"), b"readme v1\n");
    let err = stderr(&out);
    assert!(
        err.contains("mirror: the checkout removed 1 critical files:"),
        "{err}"
    );
    assert!(err.contains("  t: .hidden/local.key\n"), "{err}");
    assert!(!err.contains("plain.txt"), "{err}");
    assert!(
        err.contains(&format!(
            "restore them with: mirror restore --missing --tier t --from {}",
            &recorded_tip[..12]
        )),
        "{err}"
    );
    assert_eq!(
        tip(&env).unwrap(),
        recorded_tip,
        "a file checkout took a snapshot"
    );
    assert!(
        !env.path(".hidden/local.key").exists(),
        "restored without auto_restore"
    );
}

// ---------------------------------------------------------------------------------------------
// chaining an existing hook

#[test]
fn existing_user_hooks_still_run_first_and_their_failure_blocks_the_commit() {
    let env = Env::new();
    git_project(&env);
    env.ok(&["snapshot"]);
    let log = env.root().join("user-hook.log");
    let block = env.root().join("block-commits");
    let pre_commit = format!(
        "#!/bin/sh\necho pre-commit >> '{}'\nif [ -e '{}' ]; then echo 'user hook: commit blocked' >&2; exit 1; fi\nexit 0\n",
        log.display(),
        block.display()
    );
    let post_checkout = format!(
        "#!/bin/sh\necho \"post-checkout $*\" >> '{}'\n",
        log.display()
    );
    std::fs::write(hooks_dir(&env).join("pre-commit"), &pre_commit).unwrap();
    std::fs::write(hooks_dir(&env).join("post-checkout"), &post_checkout).unwrap();
    set_mode(&hooks_dir(&env).join("pre-commit"), 0o755);
    set_mode(&hooks_dir(&env).join("post-checkout"), 0o755);

    let out = env.ok(&["hooks", "install"]);
    let chained = hooks_dir(&env).join("pre-commit.mirror-chained");
    assert!(
        out.contains(&format!(
            "kept the existing pre-commit hook as {}",
            chained.display()
        )),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&chained).unwrap(), pre_commit);

    // The user's hook runs, then mirror's: both effects.
    let before = tip(&env).unwrap();
    env.write(".env", "TOKEN=chained\n");
    hgit_ok(
        &env,
        &["commit", "-q", "--allow-empty", "-m", "with both hooks"],
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre-commit\n");
    let after = tip(&env).unwrap();
    assert_ne!(
        after, before,
        "mirror's snapshot did not run after the user's hook"
    );
    assert_eq!(
        trailer(&commit_message(&env, &after), "Mirror-Trigger").as_deref(),
        Some("pre-commit")
    );

    // The user's post-checkout gets git's arguments.
    let h = head(&env);
    hgit_ok(&env, &["checkout", "-q", "-b", "y"]);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("pre-commit\npost-checkout {h} {h} 1\n")
    );

    // The user's hook fails: no commit, and no snapshot either.
    std::fs::write(&block, "").unwrap();
    let head_before = head(&env);
    let tip_before = tip(&env).unwrap();
    env.write(".env", "TOKEN=blocked\n");
    env.write("README.md", "readme blocked\n");
    let out = hgit(&env, &["commit", "-q", "-a", "-m", "must be blocked"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the user's failing hook must block the commit"
    );
    assert!(
        stderr(&out).contains("user hook: commit blocked"),
        "{}",
        stderr(&out)
    );
    assert_eq!(head(&env), head_before, "a commit was made");
    assert_eq!(
        tip(&env).unwrap(),
        tip_before,
        "mirror's snapshot ran after the user's hook failed"
    );
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("pre-commit\n")
            .count(),
        2
    );
    assert_eq!(env.git_ok(&["status", "--porcelain"]), " M README.md\n");
}

// ---------------------------------------------------------------------------------------------
// where the hooks go

#[test]
fn install_honours_relative_and_absolute_core_hooks_path() {
    let env = Env::new();
    hooked_project(&env);
    env.ok(&["hooks", "uninstall"]);
    assert!(!hooks_dir(&env).join("pre-commit").exists());

    // Relative: relative to the work tree's top, even when installing from a subdirectory.
    env.git_ok(&["config", "core.hooksPath", ".githooks"]);
    let out = env.mirror_in(&env.path("src"), &["hooks", "install"]);
    assert_exit(&out, 0, "hooks install from src/");
    let rel = env.path(".githooks");
    assert!(rel.join("pre-commit").is_file() && rel.join("post-checkout").is_file());
    assert!(!env.path("src/.githooks").exists());
    assert!(
        !hooks_dir(&env).join("pre-commit").exists(),
        "installed where git does not look"
    );
    let before = tip(&env).unwrap();
    env.write(".env", "TOKEN=relative\n");
    hgit_ok(
        &env,
        &["commit", "-q", "--allow-empty", "-m", "relative hooksPath"],
    );
    let after = tip(&env).unwrap();
    assert_ne!(
        after, before,
        "the hook in the relative core.hooksPath did not run"
    );
    assert_eq!(
        recorded(&env, &after, ".env").as_deref(),
        Some(&b"TOKEN=relative\n"[..])
    );

    // Absolute, outside the project.
    let abs = env.root().join("shared-hooks");
    env.git_ok(&["config", "core.hooksPath", abs.to_str().unwrap()]);
    let out = env.ok(&["hooks", "install"]);
    assert!(
        out.contains(&format!("installed {}", abs.join("pre-commit").display())),
        "{out}"
    );
    let status = env.ok(&["hooks", "status"]);
    assert!(
        status.contains(&abs.join("pre-commit").display().to_string()),
        "{status}"
    );
    env.write(".env", "TOKEN=absolute\n");
    hgit_ok(
        &env,
        &["commit", "-q", "--allow-empty", "-m", "absolute hooksPath"],
    );
    let last = tip(&env).unwrap();
    assert_ne!(
        last, after,
        "the hook in the absolute core.hooksPath did not run"
    );
    assert_eq!(
        recorded(&env, &last, ".env").as_deref(),
        Some(&b"TOKEN=absolute\n"[..])
    );
}

#[test]
fn install_with_git_dir_option_or_variable_from_outside_the_repository() {
    let env = Env::new();
    git_project(&env);
    let git_dir = env.project.join(".git");
    let outside = env.root();

    let out = env.mirror_in(
        &outside,
        &["hooks", "install", "--git-dir", git_dir.to_str().unwrap()],
    );
    assert_exit(&out, 0, "hooks install --git-dir");
    assert!(hooks_dir(&env).join("pre-commit").is_file());
    assert!(hooks_dir(&env).join("post-checkout").is_file());

    // $GIT_DIR (as git sets it) is honoured the same way.
    let out = env
        .cmd()
        .current_dir(&outside)
        .env("GIT_DIR", &git_dir)
        .args(["hooks", "status"])
        .output()
        .unwrap();
    assert_exit(&out, 0, "GIT_DIR=... hooks status");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "pre-commit     installed  {}",
            hooks_dir(&env).join("pre-commit").display()
        )),
        "{text}"
    );

    // Outside any repository and without either, it says what to do.
    let out = env.mirror_in(&outside, &["hooks", "install"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--git-dir"), "{}", stderr(&out));
}

#[test]
fn git_worktree_add_succeeds_and_hooks_live_in_the_common_git_dir() {
    let env = Env::new();
    git_project(&env);
    env.ok(&["snapshot"]);
    let first = env.root().join("wt-first");
    env.git_ok(&[
        "worktree",
        "add",
        "-q",
        first.to_str().unwrap(),
        "-b",
        "first",
    ]);

    // Installing from the linked worktree installs where git looks: the common git dir.
    let out = env.mirror_in(&first, &["hooks", "install"]);
    assert_exit(&out, 0, "hooks install in a linked worktree");
    assert!(hooks_dir(&env).join("pre-commit").is_file());
    assert!(!env.project.join(".git/worktrees/wt-first/hooks").exists());

    // A new worktree without mirror.yaml: post-checkout runs there and must not fail git.
    let before = tip(&env).unwrap();
    let second = env.root().join("wt-second");
    let out = hgit(
        &env,
        &[
            "worktree",
            "add",
            "-q",
            second.to_str().unwrap(),
            "-b",
            "second",
        ],
    );
    assert_exit(&out, 0, "git worktree add with hooks installed");
    assert_eq!(
        std::fs::read(second.join("README.md")).unwrap(),
        b"readme v1\n"
    );
    assert!(
        stderr(&out).contains("mirror: no snapshot"),
        "{}",
        stderr(&out)
    );
    assert!(output_lines(&out).len() <= 1, "{:#?}", output_lines(&out));

    // A commit in the worktree works too.
    std::fs::write(second.join("README.md"), "readme in wt\n").unwrap();
    let out = git_with(
        &env,
        &second,
        &path_with_mirror(),
        &[],
        &["commit", "-q", "-a", "-m", "in wt"],
    );
    assert_exit(&out, 0, "git commit in the linked worktree");
    assert_eq!(
        git_text(&env, &["show", "second:README.md"]),
        "readme in wt"
    );
    assert_eq!(
        tip(&env).unwrap(),
        before,
        "the project's tier was not touched"
    );

    // And the hooks in the main work tree still snapshot the project.
    env.write(".env", "TOKEN=main again\n");
    hgit_ok(&env, &["commit", "-q", "--allow-empty", "-m", "main"]);
    assert_ne!(tip(&env).unwrap(), before);
}

// ---------------------------------------------------------------------------------------------
// install / uninstall / status

#[test]
fn installing_twice_changes_nothing() {
    let env = Env::new();
    git_project(&env);
    std::fs::write(hooks_dir(&env).join("pre-commit"), "#!/bin/sh\nexit 0\n").unwrap();
    set_mode(&hooks_dir(&env).join("pre-commit"), 0o755);
    env.ok(&["hooks", "install"]);
    let installed = hooks_state(&hooks_dir(&env));
    std::thread::sleep(std::time::Duration::from_millis(20));

    let out = env.ok(&["hooks", "install"]);
    assert_eq!(
        out,
        format!("nothing to do: {}\n", hooks_dir(&env).display())
    );
    assert_eq!(
        hooks_state(&hooks_dir(&env)),
        installed,
        "the second install changed the hooks"
    );
    assert!(!hooks_dir(&env)
        .join("pre-commit.mirror-chained.mirror-chained")
        .exists());
    let chained = std::fs::read(hooks_dir(&env).join("pre-commit.mirror-chained")).unwrap();
    assert_eq!(
        chained, b"#!/bin/sh\nexit 0\n",
        "the chained original was wrapped again"
    );
}

#[test]
fn uninstall_restores_the_original_hook_byte_for_byte() {
    let env = Env::new();
    git_project(&env);
    let original = b"#!/bin/sh\r\n# user's hook \xe2\x9c\x93, CRLF and no final newline\r\nexit 0";
    let hook = hooks_dir(&env).join("pre-commit");
    std::fs::write(&hook, original).unwrap();
    set_mode(&hook, 0o750);
    let before = hooks_state(&hooks_dir(&env));

    env.ok(&["hooks", "install"]);
    assert_ne!(std::fs::read(&hook).unwrap(), original);
    let out = env.ok(&["hooks", "uninstall"]);
    assert!(
        out.contains(&format!("restored the original {}", hook.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "removed {}",
            hooks_dir(&env).join("post-checkout").display()
        )),
        "{out}"
    );

    assert_eq!(std::fs::read(&hook).unwrap(), original);
    assert_eq!(
        std::fs::metadata(&hook).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    // Exactly what was there: same files, bytes, modes, times; nothing left behind.
    assert_eq!(hooks_state(&hooks_dir(&env)), before);

    let out = env.ok(&["hooks", "uninstall"]);
    assert_eq!(
        out,
        format!("nothing to do: {}\n", hooks_dir(&env).display())
    );
    assert_eq!(hooks_state(&hooks_dir(&env)), before);
}

#[test]
fn hooks_status_shows_what_is_installed() {
    let env = Env::new();
    git_project(&env);
    let dir = hooks_dir(&env);
    let line =
        |name: &str, state: &str| format!("{name:<14} {state}  {}", dir.join(name).display());

    let out = env.ok(&["hooks", "status"]);
    assert_eq!(
        out,
        format!(
            "{}\n{}\n",
            line("pre-commit", "not installed"),
            line("post-checkout", "not installed")
        )
    );

    std::fs::write(dir.join("post-checkout"), "#!/bin/sh\n").unwrap();
    set_mode(&dir.join("post-checkout"), 0o755);
    let out = env.ok(&["hooks", "status"]);
    assert_eq!(
        out,
        format!(
            "{}\n{}\n",
            line("pre-commit", "not installed"),
            line("post-checkout", "another hook is installed (not mirror's)")
        )
    );

    env.ok(&["hooks", "install"]);
    let out = env.ok(&["hooks", "status"]);
    assert_eq!(
        out,
        format!(
            "{}\n{}\n",
            line("pre-commit", "installed"),
            line("post-checkout", "installed (runs the previous hook first)")
        )
    );

    env.ok(&["hooks", "uninstall"]);
    let out = env.ok(&["hooks", "status"]);
    assert_eq!(
        out,
        format!(
            "{}\n{}\n",
            line("pre-commit", "not installed"),
            line("post-checkout", "another hook is installed (not mirror's)")
        )
    );
}

// ---------------------------------------------------------------------------------------------
// failures

/// Two tiers, `t` (the project) and `cache` (an ignored directory), whose directory then
/// disappears so the next snapshot fails.
fn project_with_vanished_tier(env: &Env, extra_config: &str) {
    git_project(env);
    env.write("target/cache/blob.bin", "cached\n");
    let config = String::from_utf8(env.read("mirror.yaml")).unwrap();
    let config = config.replace(
        "- name: t\n  path: .\n",
        "- name: t\n  path: .\n- name: cache\n  path: target/cache\n",
    );
    assert!(
        config.contains("name: cache"),
        "could not add a tier to:\n{config}"
    );
    env.write("mirror.yaml", config + extra_config);
    env.ok(&["snapshot"]);
    env.ok(&["hooks", "install"]);
    std::fs::remove_dir_all(env.path("target/cache")).unwrap();
}

#[test]
fn failing_snapshot_is_loud_lets_the_commit_proceed_and_is_audited() {
    let env = Env::new();
    project_with_vanished_tier(&env, "");
    let parent = head(&env);

    env.write("README.md", "readme v2\n");
    let out = hgit_ok(&env, &["commit", "-q", "-a", "-m", "despite the failure"]);
    let err = stderr(&out);
    assert!(
        err.contains("mirror: ******** THE SNAPSHOT FAILED — your work is NOT backed up ********"),
        "{err}"
    );
    assert!(
        err.contains("tier 'cache'") && err.contains("is missing"),
        "{err}"
    );
    assert!(
        err.contains("strict: true"),
        "says how to block instead:\n{err}"
    );
    assert_eq!(
        git_text(&env, &["rev-parse", "HEAD~1"]),
        parent,
        "the commit was not made"
    );
    assert_eq!(git_text(&env, &["show", "HEAD:README.md"]), "readme v2");

    let out = env.ok(&["log", "--audit", "--failures"]);
    let line = out
        .lines()
        .find(|l| l.contains("mirror hook pre-commit"))
        .unwrap_or_else(|| panic!("the failed hook is not in log --audit --failures:\n{out}"));
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("tier 'cache'"), "{line}");
    let entry = &audit_log(&env, &["--failures", "-n", "1"])[0];
    assert_eq!(entry["command"], "hook");
    assert_eq!(entry["result"], "failed");
    assert!(
        entry["error"].as_str().unwrap().contains("is missing"),
        "{entry}"
    );
}

#[test]
fn failing_snapshot_blocks_the_commit_with_hooks_strict() {
    let env = Env::new();
    project_with_vanished_tier(&env, "hooks:\n  strict: true\n");
    let parent = head(&env);

    env.write("README.md", "readme v2\n");
    let out = hgit(&env, &["commit", "-q", "-a", "-m", "must be blocked"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "hooks.strict must block the commit"
    );
    let err = stderr(&out);
    assert!(err.contains("hooks.strict is set"), "{err}");
    assert!(err.contains("is missing"), "{err}");
    assert_eq!(head(&env), parent, "a commit was made");
    assert_eq!(env.git_ok(&["status", "--porcelain"]), " M README.md\n");

    let entry = &audit_log(&env, &["--failures", "-n", "1"])[0];
    assert_eq!(entry["command"], "hook");
    assert_eq!(entry["result"], "failed");
}

#[test]
fn hook_without_mirror_on_path_prints_one_line_and_only_blocks_when_strict() {
    let env = Env::new();
    hooked_project(&env);
    let path = path_without_mirror();
    let which = git_with(&env, &env.project, &path, &[], &["var", "GIT_EDITOR"]);
    assert_exit(&which, 0, "git reachable without mirror on PATH");
    let probe = Command::new("sh")
        .args(["-c", "command -v mirror"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "mirror is still on the reduced PATH"
    );
    let before = tip(&env).unwrap();
    let parent = head(&env);

    env.write("README.md", "readme v2\n");
    let out = git_with(
        &env,
        &env.project,
        &path,
        &[],
        &["commit", "-q", "-a", "-m", "no mirror"],
    );
    assert_exit(&out, 0, "git commit without mirror on PATH");
    assert_eq!(
        output_lines(&out),
        vec![
            "mirror: 'mirror' is not on PATH; no snapshot was taken before this commit".to_owned()
        ]
    );
    assert_eq!(git_text(&env, &["rev-parse", "HEAD~1"]), parent);
    assert_eq!(tip(&env).unwrap(), before);

    let out = git_with(
        &env,
        &env.project,
        &path,
        &[],
        &["checkout", "-q", "-b", "z"],
    );
    assert_exit(&out, 0, "git checkout without mirror on PATH");
    assert_eq!(
        output_lines(&out),
        vec![
            "mirror: 'mirror' is not on PATH; no snapshot was taken after this checkout".to_owned()
        ]
    );

    let committed = head(&env);
    env.write("README.md", "readme v3\n");
    let out = git_with(
        &env,
        &env.project,
        &path,
        &[("MIRROR_HOOKS_STRICT", "1")],
        &["commit", "-q", "-a", "-m", "strict"],
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "MIRROR_HOOKS_STRICT=1 must block the commit"
    );
    assert!(
        stderr(&out).contains("'mirror' is not on PATH"),
        "{}",
        stderr(&out)
    );
    assert_eq!(head(&env), committed, "a commit was made");
}

// ---------------------------------------------------------------------------------------------
// the disaster drill

#[test]
fn disaster_drill_git_clean_then_checkout_latest_restores_every_ignored_file() {
    let env = Env::new();
    git_project(&env);
    env.ok(&["hooks", "install"]);
    // A realistic spread of ignored files: build outputs, secrets, logs, a link, odd modes.
    env.write(
        "target/debug/deps/libfoo.rlib",
        [0u8, 1, 2, 3, 255, 254].repeat(5000),
    );
    env.write("target/release/app", b"\x7fELF release");
    set_mode(&env.path("target/release/app"), 0o755);
    std::os::unix::fs::symlink("debug/app", env.path("target/current")).unwrap();
    env.write(".env", b"TOKEN=secret\nOTHER=\xc3\xa9\n");
    set_mode(&env.path(".env"), 0o644);
    env.write("logs/run.log", "line 1\nline 2\n");
    env.write("src/generated.log", "generated\n");
    env.write(".hidden/key.txt", "tracked treasure\n");
    env.git_ok(&["add", ".hidden/key.txt"]);
    // The user only commits; the hooks take the snapshots.
    let out = hgit_ok(&env, &["commit", "-q", "-m", "work"]);
    assert!(output_lines(&out).len() <= 1, "{:#?}", output_lines(&out));
    let snap = tip(&env).expect("the pre-commit hook took a snapshot");
    assert_eq!(
        trailer(&commit_message(&env, &snap), "Mirror-Trigger").as_deref(),
        Some("pre-commit")
    );

    let config = env.read("mirror.yaml");
    let ignored_before = env.git_ok(&["status", "--porcelain", "--ignored"]);
    let before = tree(&env.project, &[".git", "mirror.yaml"]);

    env.git_ok(&["clean", "-fdx", "-q"]);
    assert!(!env.path("target").exists() && !env.path(".env").exists());
    assert!(
        !env.path("mirror.yaml").exists(),
        "git clean removed mirror.yaml"
    );

    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 0, "mirror checkout latest");
    let after = tree(&env.project, &[".git", "mirror.yaml"]);
    for (path, node) in &before {
        assert_eq!(
            after.get(path),
            Some(node),
            "{} differs after the drill",
            String::from_utf8_lossy(path)
        );
    }
    assert_eq!(after, before);
    assert_eq!(
        env.read("mirror.yaml"),
        config,
        "mirror.yaml restored byte for byte"
    );
    assert_eq!(
        env.git_ok(&["status", "--porcelain", "--ignored"]),
        ignored_before
    );
}

// ---------------------------------------------------------------------------------------------
// the scripts and the pre-commit framework

#[test]
fn hook_scripts_are_posix_sh_and_installed_verbatim() {
    let env = Env::new();
    git_project(&env);
    env.ok(&["hooks", "install"]);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, call) in [
        ("pre-commit", "exec mirror hook pre-commit\n"),
        ("post-checkout", "exec mirror hook post-checkout \"$@\"\n"),
    ] {
        let script = std::fs::read_to_string(source.join("hooks").join(name)).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"), "{name}");
        assert!(
            script.contains(call),
            "{name} does not call `{call}`:\n{script}"
        );
        assert!(script.contains("MIRROR_HOOKS_STRICT"), "{name}");
        for shell in ["sh", "dash"] {
            let out = Command::new(shell)
                .arg("-n")
                .arg(source.join("hooks").join(name))
                .output();
            if let Ok(out) = out {
                assert_exit(&out, 0, &format!("{shell} -n hooks/{name}"));
            }
        }
        let installed = std::fs::read_to_string(hooks_dir(&env).join(name)).unwrap();
        let body = script.strip_prefix("#!/bin/sh\n").unwrap();
        assert!(installed.starts_with("#!/bin/sh\n"));
        assert!(
            installed.ends_with(body),
            "installed {name} does not carry hooks/{name}"
        );
        let mode = std::fs::metadata(hooks_dir(&env).join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is executable");
    }

    let framework = std::fs::read_to_string(source.join(".pre-commit-hooks.yaml")).unwrap();
    assert!(
        framework.contains("entry: mirror hook pre-commit"),
        "{framework}"
    );
    assert!(framework.contains("language: system") || framework.contains("language: rust"));
    let readme = std::fs::read_to_string(source.join("README.md")).unwrap();
    assert!(
        readme.contains(".pre-commit-hooks.yaml") || readme.contains("pre-commit-config"),
        "README documents the pre-commit framework"
    );
}
