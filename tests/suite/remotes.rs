//! Issue 6: remote mirrors. `mirror remote add|remove|list|status`, `mirror push` to plain-path
//! and `file://` remotes (every mirror ref arrives, never forced, atomic per remote, one failing
//! remote does not stop the others), a clean git environment and a timeout, automatic push
//! after a snapshot, and `mirror fetch`.

use crate::common::*;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const AUDIT: &str = "refs/mirror/audit";

/// The refs the format defines and `mirror push` sends.
const PUSHED: [&str; 4] = [
    "refs/heads/tiers/",
    "refs/tags/",
    "refs/mirror/",
    "refs/notes/mirror",
];

// ---------------------------------------------------------------------------------------------
// helpers

/// `git --git-dir=DIR ARGS`, isolated like every other git in these tests.
fn git_at(env: &Env, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    cmd.current_dir(env.root())
        .arg(format!("--git-dir={}", dir.display()))
        .args(args);
    cmd.output().expect("run git")
}

/// Like [`git_at`], required to succeed; trimmed stdout.
fn git_at_ok(env: &Env, dir: &Path, args: &[&str]) -> String {
    let out = git_at(env, dir, args);
    assert_exit(
        &out,
        0,
        &format!("git --git-dir={} {}", dir.display(), args.join(" ")),
    );
    stdout(&out).trim().to_owned()
}

/// Every ref of the repository at `dir`: name -> object id.
fn all_refs(env: &Env, dir: &Path) -> BTreeMap<String, String> {
    git_at_ok(
        env,
        dir,
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    )
    .lines()
    .map(|l| {
        let (name, id) = l.split_once(' ').expect("refname objectname");
        (name.to_owned(), id.to_owned())
    })
    .collect()
}

/// The refs of `dir` that a push sends (tiers, tags, mirror's own refs, the notes).
fn mirror_refs(env: &Env, dir: &Path) -> BTreeMap<String, String> {
    all_refs(env, dir)
        .into_iter()
        .filter(|(name, _)| PUSHED.iter().any(|p| name.starts_with(p)))
        .collect()
}

fn rev(env: &Env, dir: &Path, spec: &str) -> String {
    git_at_ok(env, dir, &["rev-parse", "--verify", spec])
}

fn tier_tip(env: &Env, dir: &Path, tier: &str) -> String {
    rev(env, dir, &format!("refs/heads/tiers/{tier}"))
}

/// `git fsck --strict` of the repository at `dir` exits 0 and reports nothing.
fn fsck_clean_at(env: &Env, dir: &Path) {
    let out = git_at(
        env,
        dir,
        &["fsck", "--strict", "--no-dangling", "--no-progress"],
    );
    assert_exit(&out, 0, &format!("git fsck --strict {}", dir.display()));
    assert!(
        stdout(&out).trim().is_empty() && stderr(&out).trim().is_empty(),
        "git fsck --strict {} must report nothing:\n{}{}",
        dir.display(),
        stdout(&out),
        stderr(&out)
    );
}

/// Two tiers with hidden files and a treasure, initialised, snapshotted once and tagged, so
/// the shadow holds every kind of ref a push sends: tier branches, a tag, the audit trail,
/// the `mirror.yaml` history and the metadata notes.
fn project() -> Env {
    let env = Env::new();
    env.write("tier-a/a.txt", "a v1\n");
    env.write("tier-a/.hidden-key", "secret a\n");
    env.write("tier-a/sub/deep.txt", "deep v1\n");
    env.write("tier-b/b.txt", "b v1\n");
    env.write("tier-b/.env", "KEY=1\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    env.ok(&["tag", "v1"]);
    let refs = mirror_refs(&env, &env.shadow);
    for needed in [
        "refs/heads/tiers/a",
        "refs/heads/tiers/b",
        "refs/tags/v1",
        AUDIT,
        "refs/mirror/config",
        "refs/notes/mirror",
    ] {
        assert!(
            refs.contains_key(needed),
            "the shadow must hold {needed} for these tests: {refs:?}"
        );
    }
    env
}

/// `mirror remote add NAME URL`, required to succeed.
fn add_remote(env: &Env, name: &str, url: &str) {
    env.ok(&["remote", "add", name, url]);
}

/// Append `push: {after_snapshot: true}` to mirror.yaml.
fn enable_auto_push(env: &Env) {
    let mut text = String::from_utf8(env.read("mirror.yaml")).unwrap();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("push:\n  after_snapshot: true\n");
    env.write("mirror.yaml", text);
}

/// `file://` URL of an absolute path.
fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The exact state of `remote` right after a push from `env`'s shadow: it holds exactly the
/// shadow's mirror refs with the same values — except the audit trail, whose tip in the
/// shadow is this push's own entry (appended after the push), so the remote holds its parent.
fn assert_remote_got_everything(env: &Env, remote: &Path) {
    let local = mirror_refs(env, &env.shadow);
    let theirs = all_refs(env, remote);
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "remote {} must hold exactly the shadow's mirror refs",
        remote.display()
    );
    for (name, id) in &local {
        if name == AUDIT {
            continue;
        }
        assert_eq!(
            &theirs[name],
            id,
            "{name} on remote {} differs from the shadow",
            remote.display()
        );
    }
    let newest = &audit_log(env, &["-n", "1"])[0];
    assert_eq!(newest["command"], "push", "newest audit entry: {newest}");
    assert_eq!(
        theirs[AUDIT],
        rev(env, &env.shadow, &format!("{AUDIT}^")),
        "remote {} must hold the audit trail as it was just before the push's own entry",
        remote.display()
    );
}

/// The audit entries of command `push`, newest first.
fn push_entries(env: &Env) -> Vec<Value> {
    audit_log(env, &[])
        .into_iter()
        .filter(|e| e["command"] == "push")
        .collect()
}

/// The per-remote detail for `remote` in a push audit entry.
fn detail_for<'a>(entry: &'a Value, remote: &str) -> &'a Value {
    entry["details"]
        .as_array()
        .unwrap_or_else(|| panic!("push entry details must be a per-remote list: {entry}"))
        .iter()
        .find(|d| d["remote"] == remote)
        .unwrap_or_else(|| panic!("push entry has no details for {remote}: {entry}"))
}

/// A new commit on top of `parent` in the repository at `dir`, with `parent`'s tree.
fn commit_on_top(env: &Env, dir: &Path, parent: &str, message: &str) -> String {
    let tree = rev(env, dir, &format!("{parent}^{{tree}}"));
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    cmd.current_dir(env.root())
        .arg(format!("--git-dir={}", dir.display()))
        .args(["commit-tree", &tree, "-p", parent, "-m", message])
        .env("GIT_AUTHOR_NAME", "other machine")
        .env("GIT_AUTHOR_EMAIL", "other@example.org")
        .env("GIT_COMMITTER_NAME", "other machine")
        .env("GIT_COMMITTER_EMAIL", "other@example.org");
    let out = cmd.output().unwrap();
    assert_exit(&out, 0, "git commit-tree");
    stdout(&out).trim().to_owned()
}

/// `mirror remote status --json`, parsed, by remote name.
fn remote_status_json(env: &Env) -> BTreeMap<String, Value> {
    let out = env.mirror(&["remote", "status", "--json"]);
    let text = stdout(&out);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "remote status --json is not JSON ({e}):\n{text}\n--- stderr\n{}",
            stderr(&out)
        )
    });
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| (s["remote"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

/// The `remote NAME: ...` line of `mirror remote status` for `name`.
fn remote_status_line(env: &Env, name: &str) -> String {
    let out = env.mirror(&["remote", "status"]);
    let prefix = format!("remote {name}: ");
    stdout(&out)
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| {
            panic!(
                "no line for remote {name}:\n{}\n--- stderr\n{}",
                stdout(&out),
                stderr(&out)
            )
        })
        .to_owned()
}

/// Lines of a YAML text with the top-level `remotes:` block cut out.
fn without_remotes_block(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("remotes:") {
            inside = true;
            continue;
        }
        if inside && (line.starts_with(' ') || line.starts_with('-')) {
            continue;
        }
        inside = false;
        out.push_str(line);
    }
    out
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------------------------
// 1. configuration: remote add / remove / list

#[test]
fn remote_add_and_remove_keep_the_rest_of_mirror_yaml_byte_for_byte() {
    let env = project();
    let generated = String::from_utf8(env.read("mirror.yaml")).unwrap();
    let original = generated.replacen(
        "\ntiers:",
        "\n# the two tiers we care about (a comment mirror must keep)\ntiers:",
        1,
    );
    assert_ne!(original, generated, "the comment must have been added");
    let original = format!("{original}# trailing comment, also kept\n");
    env.write("mirror.yaml", &original);

    let usb = env.root().join("usb.git");
    let usb_url = usb.to_str().unwrap().to_owned();
    let nas_url = file_url(&env.root().join("nas.git"));
    assert_eq!(env.ok(&["remote", "list"]), "", "no remotes yet");
    add_remote(&env, "usb", &usb_url);
    add_remote(&env, "nas", &nas_url);

    let added = String::from_utf8(env.read("mirror.yaml")).unwrap();
    assert!(
        added.contains("remotes:"),
        "remotes block written:\n{added}"
    );
    assert_eq!(
        without_remotes_block(&added),
        original,
        "only the remotes: block may change"
    );
    assert_eq!(
        env.ok(&["remote", "list"]),
        format!("usb\t{usb_url}\nnas\t{nas_url}\n")
    );
    let listed: Value = serde_json::from_str(&env.ok(&["remote", "list", "--json"])).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([
            {"name": "usb", "url": usb_url},
            {"name": "nas", "url": nas_url},
        ])
    );
    // The file mirror wrote is a valid configuration for every command.
    env.ok(&["status"]);

    env.ok(&["remote", "remove", "usb"]);
    assert_eq!(env.ok(&["remote", "list"]), format!("nas\t{nas_url}\n"));
    assert_eq!(
        without_remotes_block(&String::from_utf8(env.read("mirror.yaml")).unwrap()),
        original
    );
    env.ok(&["remote", "remove", "nas"]);
    assert_eq!(env.ok(&["remote", "list"]), "");
    let listed: Value = serde_json::from_str(&env.ok(&["remote", "list", "--json"])).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    assert_eq!(
        String::from_utf8(env.read("mirror.yaml")).unwrap(),
        original,
        "after adding and removing every remote, mirror.yaml is byte-identical to before"
    );
}

#[test]
fn remote_add_and_remove_keep_mirror_yaml_permissions() {
    let env = project();
    let yaml = env.path("mirror.yaml");
    for mode in [0o644, 0o640] {
        std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(mode)).unwrap();
        add_remote(&env, "usb", "/media/usb/p.git");
        assert_eq!(
            mode_of(&yaml),
            mode,
            "remote add must keep mirror.yaml's permissions ({mode:o})"
        );
        env.ok(&["remote", "remove", "usb"]);
        assert_eq!(
            mode_of(&yaml),
            mode,
            "remote remove must keep mirror.yaml's permissions ({mode:o})"
        );
    }
}

#[test]
fn a_hand_written_remotes_block_in_the_middle_is_replaced_in_place() {
    let env = project();
    let generated = String::from_utf8(env.read("mirror.yaml")).unwrap();
    let (head, tail) = generated
        .split_once("treasures:")
        .expect("init writes treasures:");
    let before =
        format!("{head}# remotes, kept by hand\nremotes:\n- name: old\n  url: /srv/old.git\n");
    let after = format!("# the treasures\ntreasures:{tail}");
    env.write("mirror.yaml", format!("{before}{after}"));
    assert_eq!(env.ok(&["remote", "list"]), "old\t/srv/old.git\n");

    add_remote(&env, "new", "me@host:backup.git");
    let text = String::from_utf8(env.read("mirror.yaml")).unwrap();
    let head_part = before.trim_end_matches("remotes:\n- name: old\n  url: /srv/old.git\n");
    assert!(
        text.starts_with(head_part) && text.ends_with(&after),
        "everything outside the remotes: block stays in place:\n{text}"
    );
    assert_eq!(
        env.ok(&["remote", "list"]),
        "old\t/srv/old.git\nnew\tme@host:backup.git\n"
    );
    env.ok(&["remote", "remove", "old"]);
    env.ok(&["remote", "remove", "new"]);
    let text = String::from_utf8(env.read("mirror.yaml")).unwrap();
    assert_eq!(
        text,
        format!("{head_part}{after}"),
        "removing the last remote drops the block and nothing else"
    );
}

#[test]
fn remote_add_refuses_duplicate_and_invalid_names_and_remove_refuses_unknown_ones() {
    let env = project();
    add_remote(&env, "usb", "/media/usb/p.git");
    let before = env.read("mirror.yaml");

    let out = env.mirror(&["remote", "add", "usb", "/elsewhere.git"]);
    assert_exit(&out, 1, "remote add of an existing name");
    assert!(stderr(&out).contains("usb"), "{}", stderr(&out));

    for bad in [
        "a/b",
        "has space",
        "x..y",
        "tilde~1",
        "end.lock",
        "col:on",
        "star*",
        "",
    ] {
        let out = env.mirror(&["remote", "add", bad, "/x.git"]);
        // A bad argument is a usage error (README: exit 2).
        assert_exit(&out, 2, &format!("remote add {bad:?}"));
        assert!(
            stderr(&out).contains("not a valid"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }

    let out = env.mirror(&["remote", "remove", "nope"]);
    assert_exit(&out, 1, "remote remove of an unknown name");
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));

    assert_eq!(
        env.read("mirror.yaml"),
        before,
        "refused edits leave mirror.yaml alone"
    );
    assert_eq!(env.ok(&["remote", "list"]), "usb\t/media/usb/p.git\n");

    // A hand-written duplicate or invalid name is a configuration error for every command.
    let text = String::from_utf8(before.clone()).unwrap();
    env.write(
        "mirror.yaml",
        format!("{text}- name: usb\n  url: /other.git\n"),
    );
    let out = env.mirror(&["remote", "list"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "duplicate remote names are refused"
    );
    assert!(stderr(&out).contains("usb"), "{}", stderr(&out));
}

#[test]
fn push_without_remotes_or_to_an_unknown_remote_fails() {
    let env = project();
    let out = env.mirror(&["push"]);
    assert_exit(&out, 1, "push with no remotes configured");
    assert!(
        stderr(&out).contains("remote add"),
        "says how to add one: {}",
        stderr(&out)
    );

    let target = env.root().join("usb.git");
    add_remote(&env, "usb", target.to_str().unwrap());
    let out = env.mirror(&["push", "nope"]);
    assert_ne!(out.status.code(), Some(0), "push to an unknown remote");
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    assert!(
        !target.exists(),
        "nothing is pushed anywhere when a named remote is unknown"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. push

#[test]
fn push_to_a_path_and_a_file_url_sends_every_ref_and_a_second_push_is_up_to_date() {
    let env = project();
    let usb = env.root().join("backups/usb.git"); // parent does not exist either
    let nas = env.root().join("nas.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    add_remote(&env, "nas", &file_url(&nas));
    assert!(!usb.exists() && !nas.exists());

    let out = env.mirror(&["push"]);
    assert_exit(&out, 0, "first push");
    let text = stdout(&out);
    assert!(text.contains("usb: pushed ("), "{text}");
    assert!(text.contains("nas: pushed ("), "{text}");
    for remote in [&usb, &nas] {
        assert_eq!(
            git_at_ok(&env, remote, &["rev-parse", "--is-bare-repository"]),
            "true",
            "{} is created as a bare repository",
            remote.display()
        );
        assert_remote_got_everything(&env, remote);
        fsck_clean_at(&env, remote);
    }
    let first = push_entries(&env);
    assert_eq!(first.len(), 1, "one audit entry per push");
    for name in ["usb", "nas"] {
        let d = detail_for(&first[0], name);
        assert_eq!(d["result"], "pushed", "{d}");
    }
    assert_eq!(first[0]["result"], "ok");

    // Nothing new: both are up to date, and they get the previous push's audit entry.
    let tiers_before = [tier_tip(&env, &usb, "a"), tier_tip(&env, &usb, "b")];
    let out = env.mirror(&["push"]);
    assert_exit(&out, 0, "second push");
    assert_eq!(stdout(&out), "usb: up to date\nnas: up to date\n");
    for remote in [&usb, &nas] {
        assert_remote_got_everything(&env, remote);
        fsck_clean_at(&env, remote);
    }
    assert_eq!(
        tiers_before,
        [tier_tip(&env, &usb, "a"), tier_tip(&env, &usb, "b")]
    );
    let entries = push_entries(&env);
    assert_eq!(entries.len(), 2, "one audit entry per push");
    for name in ["usb", "nas"] {
        assert_eq!(detail_for(&entries[0], name)["result"], "up-to-date");
    }

    // A new snapshot and a new tag reach both; `--json` reports per remote.
    env.write("tier-b/b.txt", "b v2\n");
    env.ok(&["snapshot"]);
    env.ok(&["tag", "v2"]);
    let out = env.mirror(&["push", "--json"]);
    assert_exit(&out, 0, "push --json");
    let reports: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("push --json is not JSON ({e}):\n{}", stdout(&out)));
    let reports = reports.as_array().expect("an array");
    assert_eq!(reports.len(), 2);
    for r in reports {
        assert_eq!(r["result"], "pushed", "{r}");
        assert!(r["refs"].as_u64().unwrap() >= 2, "tier b and tag v2: {r}");
        assert_eq!(r["error"], Value::Null);
    }
    assert_eq!(reports[0]["remote"], "usb");
    assert_eq!(reports[1]["remote"], "nas");
    assert_eq!(reports[1]["url"], file_url(&nas));
    for remote in [&usb, &nas] {
        assert_remote_got_everything(&env, remote);
        fsck_clean_at(&env, remote);
    }
}

#[test]
fn push_to_named_remotes_only_touches_those() {
    let env = project();
    let usb = env.root().join("usb.git");
    let nas = env.root().join("nas.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    add_remote(&env, "nas", nas.to_str().unwrap());
    let out = env.mirror(&["push", "nas"]);
    assert_exit(&out, 0, "push nas");
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(!usb.exists(), "usb was not named");
    assert_remote_got_everything(&env, &nas);
}

#[test]
fn an_unwritable_remote_fails_while_the_other_gets_every_ref() {
    let env = project();
    let good = env.root().join("good.git");
    let locked = env.root().join("locked.git");
    add_remote(&env, "locked", locked.to_str().unwrap());
    add_remote(&env, "good", good.to_str().unwrap());
    // An existing bare repository mirror may not write to: every write bit removed; as root
    // it belongs to the unprivileged user mirror then runs as (so git's ownership check
    // passes and only the permissions stop the push).
    env.git_ok(&["init", "--quiet", "--bare", locked.to_str().unwrap()]);
    open_up_for_nobody(&env);
    if is_root() {
        let out = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&locked)
            .output()
            .unwrap();
        assert!(out.status.success(), "chown: {}", stderr(&out));
    }
    let out = Command::new("chmod")
        .args(["-R", "a-w"])
        .arg(&locked)
        .output()
        .unwrap();
    assert!(out.status.success(), "chmod: {}", stderr(&out));

    let out = mirror_unprivileged(&env, &["push"]);
    assert_exit(&out, 1, "push with one unwritable remote");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: locked: failed: ") && l.len() > 25),
        "stderr names the failed remote and git's reason:\n{err}"
    );
    assert!(
        !err.contains("good"),
        "the good remote is no failure:\n{err}"
    );
    assert!(stdout(&out).contains("good: pushed ("), "{}", stdout(&out));
    assert_remote_got_everything(&env, &good);
    fsck_clean_at(&env, &good);
    assert!(
        all_refs(&env, &locked).is_empty(),
        "the unwritable remote holds no ref"
    );

    let entry = &push_entries(&env)[0];
    assert_eq!(entry["result"], "failed", "{entry}");
    assert_eq!(detail_for(entry, "good")["result"], "pushed");
    let d = detail_for(entry, "locked");
    assert_eq!(d["result"], "failed", "{d}");
    assert!(d["error"].as_str().is_some_and(|e| !e.is_empty()), "{d}");
}

#[test]
fn a_remote_that_is_a_regular_file_fails_and_the_other_still_pushes() {
    let env = project();
    let file = env.root().join("not-a-repo.git");
    write(&file, "just a file\n");
    let good = env.root().join("good.git");
    add_remote(&env, "file", file.to_str().unwrap());
    add_remote(&env, "good", &file_url(&good));
    let out = env.mirror(&["push"]);
    assert_exit(&out, 1, "push with a broken remote");
    assert!(
        stderr(&out).contains("error: file: failed: "),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("good: pushed ("), "{}", stdout(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"just a file\n");
    assert_remote_got_everything(&env, &good);
}

#[test]
fn a_diverged_remote_is_not_overwritten_and_says_to_fetch() {
    let env = project();
    let usb = env.root().join("usb.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    env.write("tier-a/a.txt", "a v2\n");
    env.ok(&["snapshot"]);
    env.ok(&["push"]);
    assert_remote_got_everything(&env, &usb);

    // Rewind tier a locally and record something else: the remote's tier a is no longer an
    // ancestor of ours.
    let older = rev(&env, &env.shadow, "refs/heads/tiers/a^");
    git_at_ok(
        &env,
        &env.shadow,
        &["update-ref", "refs/heads/tiers/a", &older],
    );
    env.write("tier-a/a.txt", "a v2 (other line of history)\n");
    env.write("tier-b/b.txt", "b v2\n");
    env.ok(&["snapshot"]);
    let before = all_refs(&env, &usb);

    // A second, fresh remote still gets everything.
    let nas = env.root().join("nas.git");
    add_remote(&env, "nas", nas.to_str().unwrap());
    let out = env.mirror(&["push"]);
    assert_exit(&out, 1, "push to a diverged remote");
    let err = stderr(&out);
    assert!(
        err.contains("has snapshots this repo lacks") && err.contains("mirror fetch usb"),
        "{err}"
    );
    assert!(err.contains("usb"), "{err}");
    assert_eq!(
        all_refs(&env, &usb),
        before,
        "nothing on the diverged remote changes (not tier a, and atomically nothing else)"
    );
    assert!(stdout(&out).contains("nas: pushed ("), "{}", stdout(&out));
    assert_remote_got_everything(&env, &nas);
    fsck_clean_at(&env, &usb);

    let entry = &push_entries(&env)[0];
    assert_eq!(detail_for(entry, "usb")["result"], "diverged", "{entry}");
    assert_eq!(detail_for(entry, "nas")["result"], "pushed", "{entry}");

    let out = env.mirror(&["push", "usb", "--json"]);
    assert_exit(&out, 1, "push --json to a diverged remote");
    let reports: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(reports[0]["result"], "diverged", "{reports}");
    assert!(
        reports[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("mirror fetch usb")),
        "{reports}"
    );
    assert_eq!(all_refs(&env, &usb), before);
}

#[test]
fn another_projects_shadow_on_the_same_remote_is_not_overwritten() {
    let other = Env::new();
    other.write("tier-a/a.txt", "someone else's a\n");
    other.write("tier-b/b.txt", "someone else's b\n");
    other.init(&["a=tier-a", "b=tier-b"]);
    other.ok(&["snapshot"]);
    let env = project();
    let shared = env.root().join("shared.git");
    other.ok(&["remote", "add", "usb", shared.to_str().unwrap()]);
    other.ok(&["push"]);
    let before = all_refs(&env, &shared);
    assert!(before.contains_key("refs/heads/tiers/a"));

    add_remote(&env, "usb", shared.to_str().unwrap());
    let out = env.mirror(&["push"]);
    assert_exit(&out, 1, "push onto another project's remote");
    assert!(
        stderr(&out).contains("has snapshots this repo lacks")
            && stderr(&out).contains("mirror fetch usb"),
        "{}",
        stderr(&out)
    );
    assert_eq!(all_refs(&env, &shared), before, "the remote is untouched");
}

#[test]
fn push_ignores_git_variables_of_a_calling_hook() {
    let env = project();
    let usb = env.root().join("usb.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    // A different repository, as a git hook's environment would point at.
    let other = env.root().join("other");
    env.git_ok(&["init", "--quiet", other.to_str().unwrap()]);
    let other_git = other.join(".git");
    let vars = [
        ("GIT_DIR", other_git.clone()),
        ("GIT_INDEX_FILE", other_git.join("index")),
        ("GIT_WORK_TREE", other.clone()),
        ("GIT_OBJECT_DIRECTORY", other_git.join("objects")),
        ("GIT_PREFIX", PathBuf::from("sub/")),
    ];
    let run = |args: &[&str]| {
        let mut cmd = env.cmd();
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    };
    let out = run(&["push"]);
    assert_exit(&out, 0, "push with a hook's GIT_* variables");
    assert!(stdout(&out).contains("usb: pushed ("), "{}", stdout(&out));
    assert_remote_got_everything(&env, &usb);
    fsck_clean_at(&env, &usb);

    env.write("tier-a/a.txt", "a v2\n");
    env.ok(&["snapshot"]);
    let out = run(&["push"]);
    assert_exit(&out, 0, "second push with a hook's GIT_* variables");
    assert_remote_got_everything(&env, &usb);
    let out = run(&["fetch", "usb"]);
    assert_exit(&out, 0, "fetch with a hook's GIT_* variables");
    assert_eq!(
        rev(&env, &env.shadow, "refs/remotes/usb/heads/tiers/a"),
        tier_tip(&env, &env.shadow, "a")
    );
    let out = run(&["remote", "status"]);
    assert_eq!(stdout(&out), "remote usb: up to date\n", "{}", stderr(&out));

    assert!(
        all_refs(&env, &other_git).is_empty(),
        "the hook's repository got no refs"
    );
    let objects = git_at_ok(&env, &other_git, &["count-objects"]);
    assert!(
        objects.starts_with("0 objects"),
        "the hook's repository got no objects: {objects}"
    );
}

#[test]
fn an_unreachable_remote_fails_quickly_and_the_others_still_push() {
    let env = project();
    let good = env.root().join("good.git");
    add_remote(&env, "dead", "ssh://127.0.0.1:1/x.git");
    add_remote(&env, "good", good.to_str().unwrap());
    let started = Instant::now();
    let out = env
        .cmd()
        .env("MIRROR_REMOTE_TIMEOUT", "20")
        .args(["push"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_exit(&out, 1, "push to an unreachable remote");
    assert!(
        took < Duration::from_secs(10),
        "a refused connection must fail well within the timeout, took {took:?}"
    );
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: dead: failed: "))
        .unwrap_or_else(|| panic!("stderr names the unreachable remote:\n{err}"));
    assert!(
        line.len() > "error: dead: failed: ".len() + 5,
        "with a reason: {line}"
    );
    assert!(stdout(&out).contains("good: pushed ("), "{}", stdout(&out));
    assert_remote_got_everything(&env, &good);
    let entry = &push_entries(&env)[0];
    assert_eq!(detail_for(entry, "dead")["result"], "failed", "{entry}");
}

#[test]
fn a_remote_that_never_answers_is_abandoned_after_the_timeout() {
    let env = project();
    // A listener that accepts the connection and then says nothing: ssh waits for the
    // server's banner for ever, only mirror's timeout ends it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("ssh://mirror@127.0.0.1:{port}/x.git");
    add_remote(&env, "silent", &url);
    let started = Instant::now();
    let out = env
        .cmd()
        .env("MIRROR_REMOTE_TIMEOUT", "2")
        .args(["push"])
        .output()
        .unwrap();
    let took = started.elapsed();
    drop(listener);
    assert_exit(&out, 1, "push to a silent remote");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
        "the timeout (2 s) ends the push: took {took:?}"
    );
    assert!(
        stderr(&out).contains("error: silent: failed: "),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. automatic push

#[test]
fn auto_push_after_a_recorded_snapshot_only_and_a_failure_does_not_fail_the_snapshot() {
    let env = project();
    let usb = env.root().join("usb.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    enable_auto_push(&env);

    // A snapshot that records something pushes.
    env.write("tier-a/a.txt", "a v2\n");
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot with auto-push");
    assert!(stdout(&out).contains("usb: pushed ("), "{}", stdout(&out));
    for tier in ["a", "b"] {
        assert_eq!(
            tier_tip(&env, &usb, tier),
            tier_tip(&env, &env.shadow, tier),
            "tier {tier} reached the remote"
        );
    }
    assert_eq!(
        rev(&env, &usb, "refs/notes/mirror"),
        rev(&env, &env.shadow, "refs/notes/mirror")
    );
    let pushes = push_entries(&env);
    assert_eq!(pushes.len(), 1, "one push entry: {pushes:?}");
    assert_eq!(pushes[0]["result"], "ok");
    assert_eq!(detail_for(&pushes[0], "usb")["result"], "pushed");

    // Nothing changed: no snapshot commit, no push.
    let remote_before = all_refs(&env, &usb);
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "unchanged snapshot");
    assert!(!stdout(&out).contains("usb:"), "{}", stdout(&out));
    assert_eq!(push_entries(&env).len(), 1, "no new push entry");
    assert_eq!(
        all_refs(&env, &usb),
        remote_before,
        "the remote was not touched"
    );

    // A failing remote: reported on stderr and audited, but the snapshot succeeds and the
    // good remote still gets it. `--json` output stays one JSON document.
    let broken = env.root().join("broken.git");
    write(&broken, "a regular file, not a repository\n");
    add_remote(&env, "broken", broken.to_str().unwrap());
    env.write("tier-b/b.txt", "b v2\n");
    let out = env.mirror(&["snapshot", "--json"]);
    assert_exit(&out, 0, "snapshot whose auto-push partly fails");
    let _: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("snapshot --json stays JSON ({e}):\n{}", stdout(&out)));
    assert!(
        stderr(&out).contains("error: broken: failed: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        tier_tip(&env, &usb, "b"),
        tier_tip(&env, &env.shadow, "b"),
        "the good remote got the new snapshot"
    );
    let pushes = push_entries(&env);
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert_eq!(pushes[0]["result"], "failed", "{}", pushes[0]);
    assert_eq!(detail_for(&pushes[0], "broken")["result"], "failed");
    assert_eq!(detail_for(&pushes[0], "usb")["result"], "pushed");
    let snapshots: Vec<Value> = audit_log(&env, &[])
        .into_iter()
        .filter(|e| e["command"] == "snapshot")
        .collect();
    assert_eq!(
        snapshots[0]["result"], "ok",
        "the snapshot's own entry is a success: {}",
        snapshots[0]
    );
}

#[test]
fn without_after_snapshot_a_snapshot_does_not_push() {
    let env = project();
    let usb = env.root().join("usb.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    env.write("tier-a/a.txt", "a v2\n");
    env.ok(&["snapshot"]);
    assert!(!usb.exists(), "no push without push.after_snapshot");
    assert!(push_entries(&env).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. fetch and remote status

#[test]
fn fetch_and_remote_status_follow_the_remote_through_every_state() {
    let env = project();
    let usb = env.root().join("usb.git");
    let blank = env.root().join("blank.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    add_remote(&env, "blank", &file_url(&blank));
    add_remote(&env, "dead", "ssh://127.0.0.1:1/x.git");
    env.git_ok(&["init", "--quiet", "--bare", blank.to_str().unwrap()]);

    // Never pushed: a missing path and an empty repository are both empty.
    let s = remote_status_json(&env);
    assert_eq!(s["usb"]["state"], "empty", "{s:?}");
    assert_eq!(s["blank"]["state"], "empty", "{s:?}");
    assert_eq!(s["dead"]["state"], "unreachable", "{s:?}");
    assert!(
        s["dead"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{s:?}"
    );
    assert_eq!(s["usb"]["url"], usb.to_str().unwrap());
    assert_eq!(
        remote_status_line(&env, "usb"),
        "remote usb: empty (never pushed)"
    );
    assert!(
        remote_status_line(&env, "dead").starts_with("remote dead: unreachable: "),
        "{}",
        remote_status_line(&env, "dead")
    );
    assert!(!usb.exists(), "status does not create a remote");

    let out = env.mirror(&["push", "usb"]);
    assert_exit(&out, 0, "push usb");
    let s = remote_status_json(&env);
    assert_eq!(s["usb"]["state"], "up-to-date", "{s:?}");
    assert_eq!(s["usb"]["behind"], 0);
    assert_eq!(s["usb"]["ahead"], 0);
    assert_eq!(s["usb"]["error"], Value::Null);
    assert_eq!(remote_status_line(&env, "usb"), "remote usb: up to date");

    // Behind: two new snapshots of tier a, one of tier b.
    env.write("tier-a/a.txt", "a v2\n");
    env.ok(&["snapshot", "--tier", "a"]);
    env.write("tier-a/a.txt", "a v3\n");
    env.write("tier-b/b.txt", "b v2\n");
    env.ok(&["snapshot"]);
    let s = remote_status_json(&env);
    assert_eq!(s["usb"]["state"], "behind", "{s:?}");
    assert_eq!(s["usb"]["behind"], 3, "{s:?}");
    assert_eq!(s["usb"]["ahead"], 0, "{s:?}");
    assert!(
        remote_status_line(&env, "usb").starts_with("remote usb: behind by 3 snapshots"),
        "{}",
        remote_status_line(&env, "usb")
    );
    // Plain `mirror status` ends with the remote lines; its --json stays tiers only.
    let plain = env.ok(&["status"]);
    assert!(
        plain.contains("\nremote usb: behind by 3 snapshots"),
        "{plain}"
    );
    let tiers_json: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let tiers_json = tiers_json.as_array().unwrap();
    assert_eq!(tiers_json.len(), 2, "{tiers_json:?}");
    assert!(tiers_json
        .iter()
        .all(|t| t.get("tier").is_some() && t.get("remote").is_none()));

    env.ok(&["push", "usb"]);
    assert_eq!(remote_status_json(&env)["usb"]["state"], "up-to-date");

    // Ahead: another machine pushed a snapshot of tier a on top of ours.
    let ours = tier_tip(&env, &env.shadow, "a");
    let theirs = commit_on_top(&env, &usb, &ours, "snapshot from another machine");
    git_at_ok(
        &env,
        &usb,
        &["update-ref", "refs/heads/tiers/a", &theirs, &ours],
    );
    let s = remote_status_json(&env);
    assert_eq!(s["usb"]["state"], "ahead", "{s:?}");
    assert_eq!(s["usb"]["behind"], 0, "{s:?}");
    let line = remote_status_line(&env, "usb");
    assert!(
        line.starts_with("remote usb: ahead") && line.contains("mirror fetch usb"),
        "{line}"
    );
    // A push does not overwrite it.
    let out = env.mirror(&["push", "usb"]);
    assert_exit(&out, 1, "push to a remote that is ahead");
    assert!(
        stderr(&out).contains("has snapshots this repo lacks"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tier_tip(&env, &usb, "a"), theirs);

    // Fetch brings every remote ref under refs/remotes/usb/.
    let out = env.mirror(&["fetch", "usb"]);
    assert_exit(&out, 0, "fetch usb");
    let remote = all_refs(&env, &usb);
    let fetched: BTreeMap<String, String> = all_refs(&env, &env.shadow)
        .into_iter()
        .filter_map(|(name, id)| {
            name.strip_prefix("refs/remotes/usb/")
                .map(|rest| (format!("refs/{rest}"), id))
        })
        .collect();
    assert_eq!(
        fetched, remote,
        "refs/remotes/usb/* mirrors the remote exactly"
    );
    for name in [
        "refs/heads/tiers/a",
        "refs/heads/tiers/b",
        "refs/tags/v1",
        AUDIT,
        "refs/mirror/config",
        "refs/notes/mirror",
    ] {
        assert!(fetched.contains_key(name), "{name} fetched: {fetched:?}");
    }
    assert_eq!(
        tier_tip(&env, &env.shadow, "a"),
        ours,
        "fetch never moves the shadow's own tiers"
    );
    fsck_clean(&env);
    let s = remote_status_json(&env);
    assert_eq!(s["usb"]["state"], "ahead", "{s:?}");
    assert_eq!(s["usb"]["ahead"], 1, "{s:?}");
    assert_eq!(s["usb"]["behind"], 0, "{s:?}");
    let line = remote_status_line(&env, "usb");
    assert!(
        line.starts_with("remote usb: ahead by 1 snapshot") && line.contains("mirror fetch usb"),
        "{line}"
    );

    // Fetching every remote: the unreachable one fails, exit 1, the others are fetched.
    let out = env.mirror(&["fetch"]);
    assert_exit(&out, 1, "fetch with an unreachable remote");
    assert!(stderr(&out).contains("dead"), "{}", stderr(&out));
    assert!(stdout(&out).contains("usb"), "{}", stdout(&out));
}

#[test]
fn a_diverged_remote_is_reported_with_both_counts() {
    let env = project();
    let usb = env.root().join("usb.git");
    add_remote(&env, "usb", usb.to_str().unwrap());
    env.ok(&["push"]);
    let base = tier_tip(&env, &env.shadow, "a");
    // The remote gets a snapshot of tier a on top of `base` from elsewhere; we record our own.
    let theirs = commit_on_top(&env, &usb, &base, "snapshot from another machine");
    git_at_ok(
        &env,
        &usb,
        &["update-ref", "refs/heads/tiers/a", &theirs, &base],
    );
    env.write("tier-a/a.txt", "a v2\n");
    env.ok(&["snapshot"]);
    env.ok(&["fetch", "usb"]);

    let s = remote_status_json(&env);
    assert_eq!(s["usb"]["state"], "diverged", "{s:?}");
    let line = remote_status_line(&env, "usb");
    assert!(line.starts_with("remote usb: diverged"), "{line}");
    // The remote lacks our one new snapshot and has one we lack.
    assert_eq!(
        (s["usb"]["behind"].clone(), s["usb"]["ahead"].clone()),
        (Value::from(1), Value::from(1)),
        "a diverged remote's counts: {s:?} (text: {line})"
    );
    assert!(
        !line.contains("lacks 0"),
        "the text must not claim the remote lacks none of our snapshots: {line}"
    );
}

/// Without a `git` program on PATH, push fails with a message that says so (not a panic, not
/// a hang), and nothing else is harmed.
#[test]
fn push_without_git_on_path_says_git_is_missing() {
    let env = project();
    let remote = env.root().join("usb.git");
    add_remote(&env, "usb", remote.to_str().unwrap());
    let empty_bin = env.root().join("no-git-bin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let out = env
        .cmd()
        .env("PATH", &empty_bin)
        .args(["push"])
        .output()
        .unwrap();
    assert_exit(&out, 1, "push without git");
    assert!(
        stderr(&out).contains("`git` program was not found"),
        "{}",
        stderr(&out)
    );
    // With git back on PATH the same push works.
    env.ok(&["push"]);
    assert_remote_got_everything(&env, &remote);
}

/// A remote URL that git would read as an option (`--upload-pack=<command>`) is refused when
/// mirror.yaml is read: it can never reach git, whoever wrote the file (a clone writes it
/// from the backup).
#[test]
fn a_url_starting_with_a_dash_is_refused_and_runs_nothing() {
    let env = project();
    let marker = env.root().join("PWNED");
    let mut text = String::from_utf8(env.read("mirror.yaml")).unwrap();
    text.push_str(&format!(
        "remotes:\n- name: evil\n  url: '--upload-pack=touch {}'\n",
        marker.display()
    ));
    env.write("mirror.yaml", &text);
    for args in [
        &["push"][..],
        &["status"],
        &["remote", "status"],
        &["fetch"],
    ] {
        let out = env.mirror(args);
        assert_exit(&out, 1, &format!("mirror {args:?} with a dash URL"));
        assert!(stderr(&out).contains("starts with '-'"), "{}", stderr(&out));
    }
    assert!(!marker.exists(), "git ran the injected command");
}

/// A local remote inside the project would back itself up: refused, nothing created there.
#[test]
fn a_local_remote_inside_the_project_is_refused() {
    let env = project();
    add_remote(&env, "inside", "backup.git");
    let out = env.mirror(&["push"]);
    assert_exit(&out, 1, "push to a remote inside the project");
    assert!(
        stderr(&out).contains("inside the project"),
        "{}",
        stderr(&out)
    );
    assert!(!env.path("backup.git").exists());
}
