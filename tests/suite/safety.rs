//! Regression tests from the review of the core issue: nothing unrecorded is overwritten,
//! nothing outside a tier is written, odd names never make a backup unusable.

use crate::common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn tip(env: &Env, tier: &str) -> String {
    let out = env.shadow_git(&["rev-parse", "--verify", &format!("refs/heads/tiers/{tier}")]);
    assert_exit(&out, 0, "rev-parse");
    stdout(&out).trim().to_owned()
}

#[test]
fn checkout_never_overwrites_an_excluded_file() {
    let env = Env::new();
    env.write("tier-0/notes.log", "v1\n");
    env.write("tier-0/keep.txt", "k\n");
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let old = tip(&env, "tier-0");
    // From now on *.log is excluded: its new content is in no snapshot.
    let yaml = String::from_utf8(env.read("mirror.yaml")).unwrap();
    env.write(
        "mirror.yaml",
        yaml.replace("tiers:", "exclude:\n- '*.log'\ntiers:"),
    );
    env.write("tier-0/notes.log", "v2 precious\n");
    let out = env.mirror(&["checkout", &old]);
    assert_exit(&out, 3, "checkout over an unrecorded file is partial");
    assert!(stderr(&out).contains("notes.log"), "{}", stderr(&out));
    assert_eq!(
        env.read("tier-0/notes.log"),
        b"v2 precious\n",
        "the unrecorded file must survive"
    );
}

#[test]
fn outer_tier_checkout_leaves_a_nested_tiers_file_and_mirror_yaml_alone() {
    let env = Env::new();
    env.write("top.txt", "top\n");
    env.write("sub/x", "old\n");
    env.init(&["root=."]);
    env.ok(&["snapshot"]);
    let old = tip(&env, "root");
    // Later, sub/ becomes a tier of its own.
    let yaml = String::from_utf8(env.read("mirror.yaml")).unwrap();
    let yaml = yaml.replace("tiers:\n", "tiers:\n- name: sub\n  path: sub\n");
    env.write("mirror.yaml", &yaml);
    env.write("sub/x", "new, only in tier sub's working tree\n");
    let out = env.mirror(&["checkout", &old]);
    assert_ne!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(env.read("sub/x"), b"new, only in tier sub's working tree\n");
    assert_eq!(
        env.read("mirror.yaml"),
        yaml.as_bytes(),
        "mirror.yaml is not rolled back by tier `.`"
    );
    env.ok(&["status", "--tier", "sub"]);
}

#[test]
fn a_directory_that_was_a_file_is_restored_as_the_file() {
    let env = Env::new();
    env.write("tier-0/x", "file\n");
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let old = tip(&env, "tier-0");
    std::fs::remove_file(env.path("tier-0/x")).unwrap();
    env.write("tier-0/x/f", "inside\n");
    env.ok(&["snapshot"]);
    let out = env.mirror(&["checkout", &old]);
    assert_exit(&out, 0, "checkout of the file version");
    assert_eq!(env.read("tier-0/x"), b"file\n");
}

#[test]
fn tier_path_through_a_symlink_is_refused_and_nothing_outside_is_written() {
    let env = Env::new();
    let outside = env.root().join("outside");
    write(&outside.join("sub/f"), "outside\n");
    std::os::unix::fs::symlink(&outside, env.path("link")).unwrap();
    env.init(&["x=link/sub"]);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot through a symlinked tier path");
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    let refs = env.shadow_git(&["for-each-ref", "refs/heads"]);
    assert!(
        stdout(&refs).is_empty(),
        "nothing recorded from outside: {}",
        stdout(&refs)
    );
}

#[test]
fn a_restored_symlink_cannot_redirect_another_tiers_writes() {
    let env = Env::new();
    env.write("top.txt", "top\n");
    env.write("a/b/f", "inner\n");
    env.init(&["root=.", "ab=a/b"]);
    env.ok(&["snapshot"]);
    // The root tier records `a` as a symlink pointing outside the project...
    let outside = env.root().join("outside");
    std::fs::create_dir_all(outside.join("b")).unwrap();
    std::fs::remove_dir_all(env.path("a")).unwrap();
    std::os::unix::fs::symlink(&outside, env.path("a")).unwrap();
    env.ok(&["snapshot", "--tier", "root"]);
    // ...and a checkout of everything restores that link before tier ab.
    std::fs::remove_file(env.path("a")).unwrap();
    let out = env.mirror(&["checkout", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert!(
        std::fs::read_dir(outside.join("b"))
            .unwrap()
            .next()
            .is_none(),
        "nothing may be written outside the project"
    );
}

#[test]
fn dotgit_case_variants_are_skipped_loudly_and_odd_names_keep_fsck_clean() {
    let env = Env::new();
    env.write("t/.GIT", "not a repository\n");
    // `git~1` is `.git` on NTFS (8.3 short name): skipped like `.GIT` (issue 8).
    env.write("t/git~1", "the NTFS short name of .git\n");
    env.write("t/git~2", "an ordinary name\n");
    env.write("t/real", "r\n");
    std::os::unix::fs::symlink("real", env.path("t/.gitmodules")).unwrap();
    std::os::unix::fs::symlink("real", env.path("t/.gitattributes")).unwrap();
    env.init(&["t=t"]);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot");
    assert!(
        stderr(&out).contains(".GIT") && stderr(&out).contains("git~1"),
        "the skipped .GIT and git~1 are named: {}",
        stderr(&out)
    );
    fsck_clean(&env);
    // The backup stays usable even once the stat cache is gone.
    std::fs::remove_dir_all(env.shadow.join("mirror/cache")).unwrap();
    env.ok(&["snapshot"]);
    env.ok(&["status"]);
    std::fs::remove_file(env.path("t/git~2")).unwrap();
    env.ok(&["checkout", "latest"]);
    assert_eq!(env.read("t/git~2"), b"an ordinary name\n");
    assert_eq!(
        env.read("t/git~1"),
        b"the NTFS short name of .git\n",
        "a skipped name is left alone by checkout"
    );
}

#[test]
fn a_stale_ref_lock_of_a_killed_process_does_not_wedge_snapshots() {
    let env = Env::new();
    env.write("tier-0/a", "1\n");
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let lock = env.shadow.join("refs/heads/tiers/tier-0.lock");
    std::fs::write(&lock, "").unwrap();
    env.write("tier-0/a", "2\n");
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot after a killed writer");
    assert!(
        stderr(&out).contains("tier-0.lock"),
        "the removal is reported: {}",
        stderr(&out)
    );
    assert!(!lock.exists());
    let out = env.shadow_git(&["show", "tiers/tier-0:a"]);
    assert_eq!(stdout(&out), "2\n");
}

#[test]
fn restored_permissions_follow_the_umask() {
    let env = Env::new();
    env.write("tier-0/secret.env", "KEY=1\n");
    env.write("tier-0/run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        env.path("tier-0/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let dest = env.root().join("restored");
    let out = mirror_with_umask(
        &env,
        0o077,
        &["checkout", "latest", "--to", dest.to_str().unwrap()],
    );
    assert_exit(&out, 0, "checkout under umask 077");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dest.join("tier-0/secret.env")), 0o600);
    assert_eq!(mode(&dest.join("tier-0/run.sh")), 0o700);
}

#[test]
fn an_unparsable_mirrorignore_pattern_is_reported_and_excludes_nothing() {
    let env = Env::new();
    env.write("t/.mirrorignore", "bar{x\n*.tmp\n");
    env.write("t/bar{x", "kept: the broken pattern excludes nothing\n");
    env.write("t/a.tmp", "excluded by the valid line\n");
    env.init(&["t=t"]);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot");
    assert!(
        stderr(&out).contains(".mirrorignore") && stderr(&out).contains("bar{x"),
        "the broken line is reported: {}",
        stderr(&out)
    );
    let files = stdout(&env.shadow_git(&["ls-tree", "-r", "--name-only", "tiers/t"]));
    assert!(files.contains("bar{x"), "{files}");
    assert!(!files.contains("a.tmp"), "{files}");
}

#[test]
fn permissions_are_recorded_and_restored_exactly_and_a_chmod_is_a_change() {
    let env = Env::new();
    env.write("t/secret.env", "KEY=1\n");
    env.write("t/group.txt", "shared\n");
    env.write("t/plain.txt", "plain\n");
    let set = |rel: &str, mode: u32| {
        std::fs::set_permissions(env.path(rel), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set("t/secret.env", 0o600);
    set("t/group.txt", 0o640);
    set("t/plain.txt", 0o644);
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let note = note_records(&env, "tiers/t").expect("a metadata note");
    let perm = |name: &[u8]| {
        note.iter()
            .find(|(k, _, p)| k == "p" && p == name)
            .map(|(_, v, _)| v.clone())
    };
    assert_eq!(perm(b"secret.env").as_deref(), Some("600"), "{note:?}");
    assert_eq!(
        perm(b"plain.txt"),
        None,
        "default permissions are not recorded: {note:?}"
    );

    // A chmod alone is recorded as a new snapshot.
    set("t/group.txt", 0o600);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot after chmod");
    assert!(!stdout(&out).contains("unchanged"), "{}", stdout(&out));
    set("t/group.txt", 0o640);
    env.ok(&["snapshot"]);

    // Restored as recorded, whatever the umask; setuid bits can never come back.
    let dest = env.root().join("restored");
    let out = mirror_with_umask(
        &env,
        0o000,
        &["checkout", "latest", "--to", dest.to_str().unwrap()],
    );
    assert_exit(&out, 0, "checkout under umask 000");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dest.join("t/secret.env")), 0o600);
    assert_eq!(mode(&dest.join("t/group.txt")), 0o640);
    assert_eq!(
        mode(&dest.join("t/plain.txt")),
        0o666,
        "default files follow the umask"
    );

    // In place: a file whose content is unchanged gets its recorded permissions back.
    set("t/secret.env", 0o644);
    let old = tip(&env, "t");
    env.ok(&["snapshot"]);
    env.ok(&["checkout", &old]);
    assert_eq!(mode(&env.path("t/secret.env")), 0o600);
}
