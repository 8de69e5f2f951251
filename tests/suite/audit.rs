//! Issue 4: milestone tags (`mirror tag`, `mirror tags`, `snapshot --tag`, checkout / diff /
//! log by tag) and the audit trail (`refs/mirror/audit`, `mirror log --audit`,
//! `mirror audit verify`), including concurrent appends and `git fsck --strict`.

use crate::common::*;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::sync::Barrier;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const AUDIT: &str = "refs/mirror/audit";
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const TIERS: [&str; 3] = ["a", "b", "c"];

// ---------------------------------------------------------------------------------------------
// helpers

/// `git --git-dir=SHADOW ARGS`, required to succeed; trimmed stdout.
fn sg(env: &Env, args: &[&str]) -> String {
    let out = env.shadow_git(args);
    assert_exit(&out, 0, &format!("git {}", args.join(" ")));
    stdout(&out).trim().to_owned()
}

fn tip(env: &Env, tier: &str) -> String {
    sg(
        env,
        &["rev-parse", "--verify", &format!("refs/heads/tiers/{tier}")],
    )
}

fn tips(env: &Env) -> Vec<String> {
    TIERS.iter().map(|t| tip(env, t)).collect()
}

fn audit_count(env: &Env) -> u64 {
    sg(env, &["rev-list", "--count", AUDIT]).parse().unwrap()
}

fn audit_tip(env: &Env) -> String {
    sg(env, &["rev-parse", "--verify", AUDIT])
}

/// The JSON of one audit entry, read straight from its commit message with git (subject line,
/// blank line, JSON).
fn entry_json(env: &Env, rev: &str) -> Value {
    let raw = sg(env, &["cat-file", "commit", rev]);
    let (_, message) = raw.split_once("\n\n").expect("commit has a message");
    let (_, body) = message
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("entry {rev} has no JSON body:\n{message}"));
    serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("entry {rev} does not hold JSON ({e}):\n{body}"))
}

fn trailer(message: &str, key: &str) -> Option<String> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .map(str::to_owned)
}

/// Three tiers with hidden files and subdirectories, initialised and snapshotted once.
fn three_tiers() -> Env {
    let env = Env::new();
    env.write("tier-a/a.txt", "a v1\n");
    env.write("tier-a/.hidden", "secret a\n");
    env.write("tier-a/sub/deep.txt", "deep v1\n");
    env.write("tier-b/b.txt", "b v1\n");
    env.write("tier-b/.env", "KEY=1\n");
    env.write("tier-c/c.bin", [0u8, 1, 2, 3, 255]);
    env.write("tier-c/notes/n.md", "# notes\n");
    env.init(&["a=tier-a", "b=tier-b", "c=tier-c"]);
    env.ok(&["snapshot"]);
    env
}

/// Change something in every tier (modify, add, delete).
fn change_every_tier(env: &Env, round: &str) {
    env.write("tier-a/a.txt", format!("a {round}\n"));
    env.write("tier-a/sub/added.txt", format!("added {round}\n"));
    std::fs::remove_file(env.path("tier-a/.hidden")).unwrap();
    env.write("tier-b/.env", format!("KEY={round}\n"));
    env.write("tier-b/b2.txt", "new in b\n");
    std::fs::remove_file(env.path("tier-c/c.bin")).unwrap();
    env.write("tier-c/notes/n.md", format!("# notes {round}\n"));
}

fn project_tree(env: &Env) -> std::collections::BTreeMap<Vec<u8>, Node> {
    tree(&env.project, &["mirror.yaml"])
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Wait until the wall clock has passed `secs` (commit times have one-second resolution).
fn wait_past(secs: i64) {
    while now_secs() <= secs {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git commit-tree` in the shadow with a fixed identity and optional committer date.
fn commit_tree(
    env: &Env,
    tree: &str,
    parents: &[&str],
    message: &str,
    date: Option<i64>,
) -> String {
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    cmd.current_dir(&env.project)
        .arg(format!("--git-dir={}", env.shadow.display()))
        .arg("commit-tree")
        .arg(tree);
    for p in parents {
        cmd.arg("-p").arg(p);
    }
    cmd.arg("-m").arg(message);
    cmd.env("GIT_AUTHOR_NAME", "forger")
        .env("GIT_AUTHOR_EMAIL", "forger@example.com")
        .env("GIT_COMMITTER_NAME", "forger")
        .env("GIT_COMMITTER_EMAIL", "forger@example.com");
    if let Some(d) = date {
        let d = format!("@{d} +0000");
        cmd.env("GIT_AUTHOR_DATE", &d).env("GIT_COMMITTER_DATE", &d);
    }
    let out = cmd.output().expect("git commit-tree");
    assert_exit(&out, 0, "git commit-tree");
    stdout(&out).trim().to_owned()
}

/// The message of a commit (everything after the header).
fn message_of(env: &Env, rev: &str) -> String {
    let raw = sg(env, &["cat-file", "commit", rev]);
    raw.split_once("\n\n").unwrap().1.to_owned()
}

fn assert_entry_shape(e: &Value, command: &str, result: &str) {
    for key in [
        "time", "host", "user", "command", "args", "result", "details",
    ] {
        assert!(e.get(key).is_some(), "entry lacks '{key}': {e:#}");
    }
    assert!(
        chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).is_ok(),
        "time is RFC 3339: {e:#}"
    );
    assert!(!e["host"].as_str().unwrap().is_empty(), "host: {e:#}");
    assert!(!e["user"].as_str().unwrap().is_empty(), "user: {e:#}");
    assert_eq!(e["command"], command, "{e:#}");
    assert_eq!(e["result"], result, "{e:#}");
    let args: Vec<&str> = e["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first().copied(), Some(command), "args as given: {e:#}");
}

/// Run `op` and check it appended exactly one entry, on top of the previous one, holding the
/// documented JSON; returns that JSON.
fn one_entry(env: &Env, op: impl FnOnce(), command: &str, result: &str) -> Value {
    let before_count = audit_count(env);
    let before_tip = audit_tip(env);
    op();
    assert_eq!(
        audit_count(env),
        before_count + 1,
        "`{command}` must append exactly one audit entry"
    );
    let tip = audit_tip(env);
    assert_eq!(
        sg(env, &["rev-parse", &format!("{tip}^")]),
        before_tip,
        "the new entry's parent is the previous entry"
    );
    assert_eq!(
        sg(env, &["rev-parse", &format!("{tip}^{{tree}}")]),
        EMPTY_TREE
    );
    let e = entry_json(env, &tip);
    assert_entry_shape(&e, command, result);
    e
}

// ---------------------------------------------------------------------------------------------
// 1. mirror tag

#[test]
fn tag_is_an_annotated_milestone_capturing_every_tier() {
    let env = three_tiers();
    let before = tips(&env);
    let out = env.ok(&["tag", "v1.0", "-m", "the day it worked"]);
    assert!(out.contains("tagged v1.0"), "{out}");
    assert_eq!(tips(&env), before, "nothing changed: no new snapshot");

    assert_eq!(sg(&env, &["cat-file", "-t", "refs/tags/v1.0"]), "tag");
    let tag = sg(&env, &["cat-file", "-p", "refs/tags/v1.0"]);
    assert!(tag.contains("\ntype commit\n"), "{tag}");
    assert!(tag.contains("\ntag v1.0\n"), "{tag}");
    assert!(
        tag.lines().any(|l| l.starts_with("tagger ")),
        "annotated tag has a tagger: {tag}"
    );
    let tagger_time: i64 = tag
        .lines()
        .find(|l| l.starts_with("tagger "))
        .unwrap()
        .split_whitespace()
        .rev()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((tagger_time - now_secs()).abs() < 120, "tagger time is now");
    assert!(tag.contains("the day it worked"), "{tag}");

    let milestone = sg(&env, &["rev-parse", "refs/tags/v1.0^{commit}"]);
    let commit = sg(&env, &["cat-file", "-p", &milestone]);
    let parents: Vec<&str> = commit
        .lines()
        .filter_map(|l| l.strip_prefix("parent "))
        .collect();
    assert_eq!(
        parents, before,
        "one parent per tier: each tier's tip, in order"
    );

    let ls = sg(&env, &["ls-tree", &milestone]);
    let entries: Vec<(String, String, String)> = ls
        .lines()
        .map(|l| {
            let (meta, name) = l.split_once('\t').unwrap();
            let mut m = meta.split_whitespace();
            let (_mode, kind, id) = (m.next(), m.next().unwrap(), m.next().unwrap());
            (name.to_owned(), kind.to_owned(), id.to_owned())
        })
        .collect();
    assert_eq!(entries.len(), 3, "one subtree per tier: {ls}");
    for tier in TIERS {
        let tier_tree = sg(
            &env,
            &["rev-parse", &format!("refs/heads/tiers/{tier}^{{tree}}")],
        );
        assert!(
            entries
                .iter()
                .any(|(n, k, id)| n == tier && k == "tree" && *id == tier_tree),
            "subtree {tier} = {tier_tree}: {ls}"
        );
    }
    fsck_clean(&env);
}

#[test]
fn tag_snapshots_changed_work_first_but_not_an_unchanged_tree() {
    let env = three_tiers();
    let before = tips(&env);
    env.write("tier-b/b.txt", "b not yet snapshotted\n");
    let out = env.ok(&["tag", "wip"]);
    assert!(out.contains("before tagging"), "{out}");
    let after = tips(&env);
    assert_eq!(after[0], before[0], "tier a unchanged: no new commit");
    assert_eq!(after[2], before[2], "tier c unchanged: no new commit");
    assert_ne!(
        after[1], before[1],
        "tier b changed: snapshotted before tagging"
    );
    assert_eq!(
        sg(&env, &["rev-parse", &format!("{}^", after[1])]),
        before[1],
        "the new snapshot follows the old tip"
    );
    let msg = message_of(&env, &after[1]);
    assert_eq!(
        trailer(&msg, "Mirror-Trigger").as_deref(),
        Some("tag"),
        "{msg}"
    );
    assert_eq!(
        sg(&env, &["cat-file", "-p", "refs/tags/wip^{commit}:b/b.txt"]),
        "b not yet snapshotted",
        "the tag holds the current work"
    );
    let parents = sg(
        &env,
        &["rev-list", "--parents", "-n1", "refs/tags/wip^{commit}"],
    );
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    assert_eq!(parents, after);

    // Nothing changed since: a second tag takes no snapshot, and captures the same commits.
    env.ok(&["tag", "again"]);
    assert_eq!(
        tips(&env),
        after,
        "unchanged tree: no snapshot before tagging"
    );
    assert_eq!(
        sg(&env, &["rev-parse", "refs/tags/again^{commit}^{tree}"]),
        sg(&env, &["rev-parse", "refs/tags/wip^{commit}^{tree}"])
    );
}

#[test]
fn tag_at_a_revision_or_a_time_captures_that_earlier_state() {
    let env = three_tiers();
    let first = tips(&env);
    // The tier whose first snapshot is the newest (the snapshot may cross a second boundary).
    let times: Vec<i64> = first
        .iter()
        .map(|c| sg(&env, &["log", "-1", "--format=%ct", c]).parse().unwrap())
        .collect();
    let newest = (0..3).max_by_key(|&i| times[i]).unwrap();
    let t1 = times[newest];
    wait_past(t1);
    env.write("tier-a/a.txt", "a v2\n");
    env.write("tier-b/b.txt", "b v2\n");
    env.write("tier-c/notes/n.md", "# v2\n");
    env.ok(&["snapshot"]);
    let second = tips(&env);
    assert!(first.iter().zip(&second).all(|(x, y)| x != y));

    // A revision of one tier: that commit, and the other tiers as they were then.
    env.write("tier-a/a.txt", "unsnapshotted\n");
    let rev = format!("tiers/{}~1", TIERS[newest]);
    env.ok(&["tag", "by-rev", "--at", &rev, "-m", "earlier"]);
    assert_eq!(tips(&env), second, "--at takes no snapshot");
    let parents = sg(
        &env,
        &["rev-list", "--parents", "-n1", "refs/tags/by-rev^{commit}"],
    );
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    assert_eq!(
        parents, first,
        "{rev} and the other tiers as they were at its time"
    );
    assert_eq!(
        sg(
            &env,
            &["cat-file", "-p", "refs/tags/by-rev^{commit}:a/a.txt"]
        ),
        "a v1"
    );

    // A time: each tier's newest snapshot at or before it.
    let at = sg(&env, &["log", "-1", "--format=%cI", &first[newest]]);
    env.ok(&["tag", "by-time", "--at", &at]);
    let parents = sg(
        &env,
        &["rev-list", "--parents", "-n1", "refs/tags/by-time^{commit}"],
    );
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    assert_eq!(parents, first, "--at {at}");
    assert_eq!(
        sg(
            &env,
            &["cat-file", "-p", "refs/tags/by-time^{commit}:b/b.txt"]
        ),
        "b v1"
    );
    assert_eq!(tips(&env), second, "--at takes no snapshot");
}

#[test]
fn snapshot_tag_records_and_tags_in_one_step() {
    let env = three_tiers();
    let before = tips(&env);
    env.write("tier-c/notes/n.md", "# release\n");
    let out = env.ok(&["snapshot", "--tag", "release-1"]);
    assert!(out.contains("tagged release-1"), "{out}");
    let after = tips(&env);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    assert_ne!(after[2], before[2], "tier c recorded");
    assert_eq!(
        trailer(&message_of(&env, &after[2]), "Mirror-Trigger").as_deref(),
        Some("manual"),
        "recorded by the snapshot itself"
    );
    assert_eq!(sg(&env, &["cat-file", "-t", "refs/tags/release-1"]), "tag");
    let parents = sg(
        &env,
        &[
            "rev-list",
            "--parents",
            "-n1",
            "refs/tags/release-1^{commit}",
        ],
    );
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    assert_eq!(
        parents, after,
        "the tag captures what the snapshot recorded"
    );
    assert_eq!(
        sg(&env, &["rev-list", "--count", "refs/heads/tiers/c"]),
        "2",
        "one snapshot, not a second one for the tag"
    );
}

#[test]
fn invalid_tag_names_are_refused_and_nothing_moves() {
    let env = three_tiers();
    env.write("tier-a/a.txt", "pending work\n");
    let before = tips(&env);
    for name in [
        "bad..name",
        "has space",
        "ends.lock",
        "tilde~1",
        "caret^",
        "colon:x",
        "star*",
        "trailing/",
        "back\\slash",
        "x@{y",
        ".hidden",
        "a/.b",
        "q?",
        "",
    ] {
        let out = env.mirror(&["tag", name]);
        assert_exit(&out, 2, &format!("mirror tag '{name}'"));
        assert!(
            stderr(&out).contains("not a valid tag name"),
            "'{name}': {}",
            stderr(&out)
        );
        if !name.is_empty() {
            let out = env.mirror(&["snapshot", "--tag", name]);
            assert_exit(&out, 2, &format!("mirror snapshot --tag '{name}'"));
        }
        assert_eq!(tips(&env), before, "'{name}': no snapshot taken");
    }
    assert_eq!(
        sg(&env, &["for-each-ref", "refs/tags"]),
        "",
        "no tag created"
    );
}

#[test]
fn an_existing_tag_name_is_refused_and_the_tag_never_moves() {
    let env = three_tiers();
    env.ok(&["tag", "v1", "-m", "first"]);
    let tag = sg(&env, &["rev-parse", "refs/tags/v1"]);
    change_every_tier(&env, "later");
    let before = tips(&env);
    let out = env.mirror(&["tag", "v1", "-m", "second"]);
    assert_exit(&out, 2, "duplicate tag");
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(
        sg(&env, &["rev-parse", "refs/tags/v1"]),
        tag,
        "the tag did not move"
    );
    assert_eq!(
        tips(&env),
        before,
        "no snapshot was taken for the refused tag"
    );
    let out = env.mirror(&["tag", "v1", "--at", "tiers/a"]);
    assert_exit(&out, 2, "duplicate tag with --at");
    assert_eq!(sg(&env, &["rev-parse", "refs/tags/v1"]), tag);
}

/// `snapshot --tag` with a taken name must refuse before recording anything (the command's
/// own comment says so), like `mirror tag` does.
#[test]
fn snapshot_tag_with_an_existing_name_records_nothing() {
    let env = three_tiers();
    env.ok(&["tag", "v1"]);
    let tag = sg(&env, &["rev-parse", "refs/tags/v1"]);
    env.write("tier-b/b.txt", "changed after v1\n");
    let before = tips(&env);
    let out = env.mirror(&["snapshot", "--tag", "v1"]);
    assert_exit(&out, 2, "snapshot --tag with a taken name");
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(
        sg(&env, &["rev-parse", "refs/tags/v1"]),
        tag,
        "the tag did not move"
    );
    assert_eq!(
        tips(&env),
        before,
        "a refused `snapshot --tag` must not record a snapshot (nothing moves)"
    );
}

#[test]
fn tag_list_and_tags_show_time_message_and_tiers() {
    let env = three_tiers();
    let empty = env.ok(&["tags"]);
    assert!(empty.contains("no tags"), "{empty}");
    env.ok(&["tag", "alpha", "-m", "first milestone"]);
    let alpha = tips(&env);
    env.write("tier-a/a.txt", "a beta\n");
    env.ok(&["tag", "beta", "-m", "second milestone\n\nwith a body"]);
    let beta = tips(&env);

    for args in [&["tags"][..], &["tag", "--list"][..]] {
        let text = env.ok(args);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{args:?} lists {name}:\n{text}"))
                .to_owned()
        };
        let (la, lb) = (line("alpha"), line("beta"));
        assert!(la.contains("first milestone"), "{la}");
        assert!(lb.contains("second milestone"), "{lb}");
        // The time, as YYYY-MM-DD HH:MM:SS.
        assert!(
            la.split_whitespace()
                .any(|w| w.len() == 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-'),
            "{la}"
        );
        for (i, tier) in TIERS.iter().enumerate() {
            assert!(la.contains(&format!("{tier} {}", &alpha[i][..7])), "{la}");
            assert!(lb.contains(&format!("{tier} {}", &beta[i][..7])), "{lb}");
        }
    }

    for args in [&["tags", "--json"][..], &["tag", "--list", "--json"][..]] {
        let text = env.ok(args);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 2, "{text}");
        for (name, msg, ids) in [
            ("alpha", "first milestone", &alpha),
            ("beta", "second milestone", &beta),
        ] {
            let t = list
                .iter()
                .find(|t| t["name"] == name)
                .unwrap_or_else(|| panic!("{name} in {text}"));
            assert!(t["message"].as_str().unwrap().starts_with(msg), "{t}");
            let time = t["time"].as_i64().unwrap();
            assert!((time - now_secs()).abs() < 120, "{t}");
            let tiers: Vec<(String, String)> = t["tiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            let expected: Vec<(String, String)> = TIERS
                .iter()
                .zip(ids.iter())
                .map(|(t, c)| (t.to_string(), c.clone()))
                .collect();
            assert_eq!(tiers, expected, "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. checkout, log and diff by tag

#[test]
fn checkout_tag_restores_every_tier_after_changes_in_every_tier() {
    let env = three_tiers();
    let state = project_tree(&env);
    env.ok(&["tag", "good"]);
    change_every_tier(&env, "broken");
    let changed = project_tree(&env);
    assert_ne!(changed, state);
    let before = tips(&env);

    let out = env.mirror(&["checkout", "good"]);
    assert_exit(&out, 0, "checkout good");
    assert_eq!(
        project_tree(&env),
        state,
        "every tier is back to the tag's state"
    );

    // The pre-checkout safety snapshot recorded the changed state of every tier.
    let after = tips(&env);
    for (i, tier) in TIERS.iter().enumerate() {
        assert_ne!(after[i], before[i], "{tier}: pre-checkout snapshot taken");
        let msg = message_of(&env, &after[i]);
        assert_eq!(
            trailer(&msg, "Mirror-Trigger").as_deref(),
            Some("pre-checkout"),
            "{tier}: {msg}"
        );
    }
    assert_eq!(
        sg(&env, &["cat-file", "-p", "refs/heads/tiers/b:.env"]),
        "KEY=broken",
        "the safety snapshot holds the overwritten work"
    );
    assert!(
        stderr(&out).contains("undo with: mirror checkout"),
        "{}",
        stderr(&out)
    );

    // And it can be undone from the safety snapshots.
    for id in &after {
        env.ok(&["checkout", id]);
    }
    let undone = project_tree(&env);
    let strip = |t: &std::collections::BTreeMap<Vec<u8>, Node>| {
        t.iter()
            .map(|(k, v)| {
                let v = match v {
                    Node::File { content, mode, .. } => format!("{content:?}{mode}"),
                    other => format!("{other:?}"),
                };
                (k.clone(), v)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&undone),
        strip(&changed),
        "undo brings the changes back"
    );
}

#[test]
fn checkout_tag_with_tier_restores_only_that_tier() {
    let env = three_tiers();
    let state = project_tree(&env);
    env.ok(&["tag", "good"]);
    change_every_tier(&env, "x");
    let before = tips(&env);
    env.ok(&["checkout", "good", "--tier", "b"]);
    let now = project_tree(&env);
    let part = |t: &std::collections::BTreeMap<Vec<u8>, Node>, prefix: &str| {
        t.iter()
            .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        part(&now, "tier-b"),
        part(&state, "tier-b"),
        "tier b restored"
    );
    assert_eq!(env.read("tier-a/a.txt"), b"a x\n", "tier a untouched");
    assert!(!env.path("tier-a/.hidden").exists(), "tier a untouched");
    assert!(!env.path("tier-c/c.bin").exists(), "tier c untouched");
    assert_eq!(env.read("tier-c/notes/n.md"), b"# notes x\n");
    let after = tips(&env);
    assert_eq!(after[0], before[0], "no pre-checkout snapshot of tier a");
    assert_eq!(after[2], before[2], "no pre-checkout snapshot of tier c");
    assert_ne!(after[1], before[1], "pre-checkout snapshot of tier b");
    assert_eq!(
        trailer(&message_of(&env, &after[1]), "Mirror-Trigger").as_deref(),
        Some("pre-checkout")
    );
}

#[test]
fn checkout_tag_with_a_path_restores_only_that_path() {
    let env = three_tiers();
    env.ok(&["tag", "good"]);
    env.write("tier-a/a.txt", "a changed\n");
    env.write("tier-a/sub/deep.txt", "deep changed\n");
    env.write("tier-b/b.txt", "b changed\n");
    let before = tips(&env);
    let out = env.mirror(&["checkout", "good", "--", "tier-a/sub/deep.txt"]);
    assert_exit(&out, 0, "checkout good -- tier-a/sub/deep.txt");
    assert_eq!(
        env.read("tier-a/sub/deep.txt"),
        b"deep v1\n",
        "the path is restored"
    );
    assert_eq!(
        env.read("tier-a/a.txt"),
        b"a changed\n",
        "other paths are not"
    );
    assert_eq!(
        env.read("tier-b/b.txt"),
        b"b changed\n",
        "other tiers are not"
    );
    let after = tips(&env);
    assert_ne!(after[0], before[0], "pre-checkout snapshot of tier a");
    assert_eq!(
        sg(&env, &["cat-file", "-p", "refs/heads/tiers/a:sub/deep.txt"]),
        "deep changed",
        "the safety snapshot holds the overwritten content"
    );
}

#[test]
fn log_shows_tag_names_beside_the_snapshots_they_capture() {
    let env = three_tiers();
    let first = tips(&env);
    env.ok(&["tag", "v1"]);
    env.write("tier-a/a.txt", "a v2\n");
    env.ok(&["snapshot"]);
    let a2 = tip(&env, "a");
    env.write("tier-a/a.txt", "a v3\n");
    env.ok(&["tag", "v2"]);
    let a3 = tip(&env, "a");

    let text = env.ok(&["log"]);
    let line = |id: &str| {
        text.lines()
            .find(|l| l.contains(&id[..7]))
            .unwrap_or_else(|| panic!("log shows {id}:\n{text}"))
            .to_owned()
    };
    let la1 = line(&first[0]);
    assert!(la1.contains("(tag: v1)"), "{la1}");
    let la2 = line(&a2);
    assert!(!la2.contains("tag:"), "a snapshot no tag captures: {la2}");
    let la3 = line(&a3);
    assert!(la3.contains("(tag: v2)"), "{la3}");
    for id in &first[1..] {
        let l = line(id);
        assert!(
            l.contains("v1") && l.contains("v2"),
            "captured by both: {l}"
        );
    }

    let json: Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    let tags_of = |id: &str| -> Vec<String> {
        let s = json
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} in log --json"));
        let mut v: Vec<String> = s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(tags_of(&first[0]), ["v1"]);
    assert!(tags_of(&a2).is_empty());
    assert_eq!(tags_of(&a3), ["v2"]);
    assert_eq!(tags_of(&first[2]), ["v1", "v2"]);
}

#[test]
fn diff_between_two_tags_lists_changes_in_every_tier() {
    let env = three_tiers();
    env.ok(&["tag", "before"]);
    change_every_tier(&env, "after");
    env.ok(&["tag", "after"]);
    let text = env.ok(&["diff", "before", "after"]);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut expected = vec![
        "D\ttier-a/.hidden",
        "M\ttier-a/a.txt",
        "A\ttier-a/sub/added.txt",
        "M\ttier-b/.env",
        "A\ttier-b/b2.txt",
        "D\ttier-c/c.bin",
        "M\ttier-c/notes/n.md",
    ];
    expected.sort();
    assert_eq!(lines, expected, "{text}");
    let same = env.ok(&["diff", "after", "after"]);
    assert_eq!(same.trim(), "", "a tag against itself: no changes");
    let narrowed = env.ok(&["diff", "--tier", "b", "before", "after"]);
    let mut n: Vec<&str> = narrowed.lines().collect();
    n.sort();
    assert_eq!(n, ["A\ttier-b/b2.txt", "M\ttier-b/.env"], "{narrowed}");
}

// ---------------------------------------------------------------------------------------------
// 3. the audit trail

#[test]
fn every_operation_appends_exactly_one_entry_with_its_details() {
    let env = Env::new();
    env.write("tier-a/a.txt", "a\n");
    env.write("tier-b/b.txt", "b\n");
    env.write("tier-c/c.txt", "c\n");
    env.init(&["a=tier-a", "b=tier-b", "c=tier-c"]);
    assert_eq!(audit_count(&env), 1, "init appends the first entry");
    let init = entry_json(&env, AUDIT);
    assert_entry_shape(&init, "init", "ok");
    assert_eq!(
        sg(&env, &["rev-list", "--parents", "-n1", AUDIT])
            .split_whitespace()
            .count(),
        1,
        "the first entry has no parent"
    );

    // A snapshot with counts.
    let e = one_entry(
        &env,
        || {
            env.ok(&["snapshot", "-m", "first"]);
        },
        "snapshot",
        "ok",
    );
    let tiers = e["details"].as_array().expect("per-tier details");
    assert_eq!(tiers.len(), 3, "{e:#}");
    for t in tiers {
        assert_eq!(t["outcome"], "recorded", "{t}");
        assert_eq!(t["added"], 1, "{t}");
        let tier = t["tier"].as_str().unwrap();
        assert_eq!(t["commit"].as_str().unwrap(), tip(&env, tier));
    }
    assert_eq!(e["args"], serde_json::json!(["snapshot", "-m", "first"]));

    // An unchanged snapshot says so.
    let e = one_entry(
        &env,
        || {
            env.ok(&["snapshot"]);
        },
        "snapshot",
        "ok",
    );
    for t in e["details"].as_array().unwrap() {
        assert_eq!(t["outcome"], "unchanged", "{t}");
    }

    // A snapshot of a changed tier: its counts.
    env.write("tier-a/a.txt", "a2\n");
    env.write("tier-a/new.txt", "n\n");
    let e = one_entry(
        &env,
        || {
            env.ok(&["snapshot", "--tier", "a"]);
        },
        "snapshot",
        "ok",
    );
    let t = &e["details"][0];
    assert_eq!(t["tier"], "a");
    assert_eq!(
        (t["added"].as_u64(), t["modified"].as_u64()),
        (Some(1), Some(1)),
        "{t}"
    );

    // A tag.
    let e = one_entry(
        &env,
        || {
            env.ok(&["tag", "m1", "-m", "msg"]);
        },
        "tag",
        "ok",
    );
    assert_eq!(e["details"]["tag"], "m1", "{e:#}");
    assert_eq!(
        e["details"]["milestone"].as_str().unwrap(),
        sg(&env, &["rev-parse", "refs/tags/m1^{commit}"])
    );
    assert_eq!(e["details"]["tiers"].as_array().unwrap().len(), 3);

    // A checkout: what was restored and the safety snapshot.
    env.write("tier-c/c.txt", "c changed\n");
    let e = one_entry(
        &env,
        || {
            env.ok(&["checkout", "m1"]);
        },
        "checkout",
        "ok",
    );
    let restored = e["details"]["restored"].as_array().expect("restored");
    let names: Vec<&str> = restored
        .iter()
        .map(|r| r["tier"].as_str().unwrap())
        .collect();
    assert_eq!(names, TIERS, "{e:#}");
    let pre = e["details"]["pre_checkout"]
        .as_array()
        .expect("pre_checkout");
    let c = pre.iter().find(|p| p["tier"] == "c").expect("tier c");
    assert_eq!(c["outcome"], "recorded", "{e:#}");
    let safety = c["commit"].as_str().unwrap();
    assert_eq!(safety, tip(&env, "c"), "the safety snapshot id");
    assert_eq!(
        trailer(&message_of(&env, safety), "Mirror-Trigger").as_deref(),
        Some("pre-checkout")
    );

    // `snapshot --tag`.
    env.write("tier-b/b.txt", "b2\n");
    let e = one_entry(
        &env,
        || {
            env.ok(&["snapshot", "--tag", "m2"]);
        },
        "snapshot",
        "ok",
    );
    assert!(e.to_string().contains("m2"), "{e:#}");

    // Verification is itself recorded.
    let e = one_entry(
        &env,
        || {
            env.ok(&["audit", "verify"]);
        },
        "audit",
        "ok",
    );
    assert_eq!(e["details"]["entries"], 7, "the entries before it: {e:#}");

    // Read-only commands append nothing.
    let count = audit_count(&env);
    for args in [
        &["status"][..],
        &["log"][..],
        &["log", "--audit"][..],
        &["diff"][..],
        &["diff", "m1", "m2"][..],
        &["tags"][..],
        &["tag", "--list", "--json"][..],
    ] {
        env.ok(args);
    }
    assert_eq!(
        audit_count(&env),
        count,
        "read-only commands are not audited"
    );

    // `mirror log --audit` shows them all, newest first.
    let all = audit_log(&env, &[]);
    let commands: Vec<&str> = all.iter().map(|e| e["command"].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        ["audit", "snapshot", "checkout", "tag", "snapshot", "snapshot", "snapshot", "init"]
    );
    assert_eq!(all[0]["id"].as_str().unwrap(), audit_tip(&env));
    fsck_clean(&env);
}

/// `init` is audited whatever its outcome: running it again in an initialised project (which
/// changes nothing) is still an operation on this shadow and leaves an entry.
#[test]
fn rerunning_init_in_an_initialised_project_is_audited() {
    let env = three_tiers();
    let before = audit_count(&env);
    let out = env.ok(&["init"]);
    assert!(out.contains("already exists"), "{out}");
    assert_eq!(
        audit_count(&env),
        before + 1,
        "a second `mirror init` must append one entry"
    );
    assert_entry_shape(&entry_json(&env, AUDIT), "init", "ok");
}

#[test]
fn log_audit_is_newest_first_and_n_limits_it() {
    let env = three_tiers();
    env.ok(&["tag", "x"]);
    env.ok(&["snapshot"]);
    let all = audit_log(&env, &[]);
    assert_eq!(all.len(), 4, "init, snapshot, tag, snapshot");
    let two = audit_log(&env, &["-n", "2"]);
    assert_eq!(two.len(), 2);
    assert_eq!(two[0]["command"], "snapshot");
    assert_eq!(two[1]["command"], "tag");
    assert_eq!(two[0]["id"], all[0]["id"]);
    assert_eq!(two[1]["id"], all[1]["id"]);
    let text = env.ok(&["log", "--audit", "-n", "3"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("snapshot"), "{text}");
    assert!(
        lines[1].contains("tag") && lines[1].contains("mirror tag x"),
        "{text}"
    );
    assert!(lines[2].contains("snapshot"), "{text}");
    let id = all[2]["id"].as_str().unwrap();
    assert!(lines[2].contains(&id[..7]), "entry ids are shown: {text}");
    let one = env.ok(&["log", "--audit", "-n", "1"]);
    assert_eq!(one.lines().count(), 1, "{one}");
}

#[test]
fn failed_operations_are_audited_with_their_error_and_listed_by_failures() {
    let env = three_tiers();
    env.ok(&["tag", "v1"]);

    // A tier directory disappeared: the snapshot fails (exit 1), the others are recorded.
    std::fs::rename(env.path("tier-b"), env.root().join("b-moved")).unwrap();
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot with a missing tier");
    let e = entry_json(&env, AUDIT);
    assert_entry_shape(&e, "snapshot", "failed");
    assert!(
        e.to_string().contains("is missing"),
        "the entry holds the error message: {e:#}"
    );

    // A refused tag, an unknown revision.
    let out = env.mirror(&["tag", "v1"]);
    assert_exit(&out, 2, "duplicate tag");
    let e = entry_json(&env, AUDIT);
    assert_entry_shape(&e, "tag", "failed");
    assert!(
        e["error"].as_str().unwrap().contains("already exists"),
        "{e:#}"
    );
    let out = env.mirror(&["checkout", "no-such-tag"]);
    assert_ne!(out.status.code(), Some(0));
    let e = entry_json(&env, AUDIT);
    assert_entry_shape(&e, "checkout", "failed");
    assert!(
        e["error"].as_str().unwrap().contains("no-such-tag"),
        "{e:#}"
    );

    std::fs::rename(env.root().join("b-moved"), env.path("tier-b")).unwrap();
    env.ok(&["snapshot"]);

    let failures = audit_log(&env, &["--failures"]);
    let summary: Vec<(&str, &str)> = failures
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("checkout", "failed"),
            ("tag", "failed"),
            ("snapshot", "failed")
        ],
        "only failed operations, newest first"
    );
    let text = env.ok(&["log", "--audit", "--failures"]);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().all(|l| l.contains("FAILED")), "{text}");
    assert!(text.contains("already exists"), "{text}");
    let limited = audit_log(&env, &["--failures", "-n", "1"]);
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["command"], "checkout");
}

/// A snapshot that fails (exit 1) must carry its error message like any failed operation:
/// `Entry.error` is "the error message, for a failed operation", and `log --audit --failures`
/// prints it.
#[test]
fn a_failed_snapshot_shows_its_error_message_in_failures() {
    let env = three_tiers();
    std::fs::rename(env.path("tier-c"), env.root().join("c-moved")).unwrap();
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot with a missing tier");
    let e = &audit_log(&env, &["--failures", "-n", "1"])[0];
    assert_eq!(e["result"], "failed");
    let text = env.ok(&["log", "--audit", "--failures"]);
    assert!(
        text.contains("is missing"),
        "`log --audit --failures` shows why the snapshot failed:\n{text}"
    );
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("is missing")),
        "a failed entry has its `error` message: {e:#}"
    );
}

#[test]
fn an_unreadable_file_makes_a_partial_entry_listed_by_failures() {
    let env = three_tiers();
    env.write("tier-a/private.key", "top secret\n");
    open_up_for_nobody(&env);
    std::fs::set_permissions(
        env.path("tier-a/private.key"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let before = audit_count(&env);
    let out = mirror_unprivileged(&env, &["snapshot"]);
    assert_exit(&out, 3, "snapshot with an unreadable file");
    assert_eq!(
        audit_count(&env),
        before + 1,
        "one entry for the partial snapshot"
    );

    let e = entry_json(&env, AUDIT);
    assert_entry_shape(&e, "snapshot", "partial");
    let a = e["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "a")
        .unwrap();
    let unreadable = a["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{e:#}");
    assert_eq!(unreadable[0]["path"], "private.key");
    assert!(
        unreadable[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{e:#}"
    );

    env.ok(&["snapshot", "--tier", "b"]);
    let failures = audit_log(&env, &["--failures"]);
    assert_eq!(failures.len(), 1, "only the partial one: {failures:#?}");
    assert_eq!(failures[0]["result"], "partial");
    assert_eq!(
        failures[0]["id"].as_str().unwrap(),
        sg(&env, &["rev-parse", &format!("{AUDIT}~1")])
    );
    let text = env.ok(&["log", "--audit", "--failures"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("PARTIAL") && text.contains("snapshot"),
        "{text}"
    );
    env.ok(&["audit", "verify"]);
    fsck_clean(&env);
}

/// The `user` of an entry is who ran the operation, not whatever $USER claims.
#[test]
fn audit_user_is_the_account_that_ran_the_operation() {
    let env = three_tiers();
    env.write("tier-a/a.txt", "by someone\n");
    let out = env
        .cmd()
        .args(["snapshot"])
        .env("USER", "impostor")
        .env("LOGNAME", "impostor")
        .output()
        .unwrap();
    assert_exit(&out, 0, "snapshot");
    let e = entry_json(&env, AUDIT);
    assert_ne!(
        e["user"], "impostor",
        "the audit user must come from the process's real identity, not from $USER: {e:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. mirror audit verify

#[test]
fn audit_verify_passes_on_an_intact_chain() {
    let env = three_tiers();
    env.ok(&["tag", "t"]);
    change_every_tier(&env, "2");
    env.ok(&["checkout", "t"]);
    let count = audit_count(&env);
    let out = env.ok(&["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");
    assert!(out.contains(&format!("{count} entries")), "{out}");
    let v: Value = serde_json::from_str(&env.ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(
        v["entries"],
        count + 1,
        "the first verify is counted too: {v}"
    );
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
}

#[test]
fn audit_verify_detects_the_ref_moved_to_an_unrelated_commit() {
    let env = three_tiers();
    env.ok(&["tag", "t"]);
    env.ok(&["audit", "verify"]);

    // To a tier commit.
    sg(&env, &["update-ref", AUDIT, "refs/heads/tiers/a"]);
    let out = env.mirror(&["audit", "verify"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "verify must fail: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("not intact"), "{err}");
    assert!(
        err.contains("rewritten or replaced") || err.contains("not hold a valid entry"),
        "{err}"
    );

    // To an unrelated commit made with git commit-tree.
    let unrelated = commit_tree(&env, EMPTY_TREE, &[], "just a commit", None);
    sg(&env, &["update-ref", AUDIT, &unrelated]);
    let out = env.mirror(&["audit", "verify", "--json"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "verify must fail: {}",
        stdout(&out)
    );
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert!(!problems.is_empty(), "{v}");
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains(&unrelated)),
        "the bad entry is named: {v}"
    );
}

#[test]
fn audit_verify_detects_a_chain_replaced_by_well_formed_forged_entries() {
    let env = three_tiers();
    env.ok(&["snapshot"]);
    // A forged chain: one entry holding a copy of a real entry's JSON, but without the history.
    let message = message_of(&env, AUDIT);
    let forged = commit_tree(&env, EMPTY_TREE, &[], message.trim(), None);
    sg(&env, &["update-ref", AUDIT, &forged]);
    let out = env.mirror(&["audit", "verify"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "verify must fail: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("rewritten or replaced"),
        "{}",
        stderr(&out)
    );
}

/// Once replaced, the chain stays untrustworthy: a later operation (an hourly snapshot, or the
/// failing `audit verify` itself) appending on top of the forged chain must not make it pass.
#[test]
fn audit_verify_keeps_reporting_a_replaced_chain_after_later_operations() {
    let env = three_tiers();
    env.ok(&["snapshot"]);
    let message = message_of(&env, AUDIT);
    let forged = commit_tree(&env, EMPTY_TREE, &[], message.trim(), None);
    sg(&env, &["update-ref", AUDIT, &forged]);
    // The next scheduled snapshot runs before anyone verifies.
    env.ok(&["snapshot"]);
    let out = env.mirror(&["audit", "verify"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a replaced chain must still be reported after another operation appended to it:\n{}",
        stdout(&out)
    );
    let out = env.mirror(&["audit", "verify"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a second verify must not accept the replaced chain:\n{}",
        stdout(&out)
    );
}

#[test]
fn audit_verify_reports_a_forged_entry_with_invalid_json() {
    let env = three_tiers();
    let real = audit_tip(&env);
    let forged = commit_tree(
        &env,
        EMPTY_TREE,
        &[&real],
        "snapshot ok\n\n{ this is not json",
        None,
    );
    sg(&env, &["update-ref", AUDIT, &forged]);
    let out = env.mirror(&["audit", "verify", "--json"]);
    assert_ne!(out.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&forged) && p.contains("valid entry")),
        "{problems:?}"
    );
    // Also from log --audit, which cannot read past it.
    let out = env.mirror(&["log", "--audit"]);
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains(&forged), "{}", stderr(&out));
}

#[test]
fn audit_verify_reports_a_broken_parent_chain() {
    // An entry whose parent is not an audit entry (a tier commit).
    let env = three_tiers();
    let message = message_of(&env, AUDIT);
    let tier = tip(&env, "a");
    let forged = commit_tree(&env, EMPTY_TREE, &[&tier], message.trim(), None);
    sg(&env, &["update-ref", AUDIT, &forged]);
    let out = env.mirror(&["audit", "verify"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains(&tier),
        "the non-entry is named: {}",
        stderr(&out)
    );

    // An entry with two parents: the real chain and a side branch.
    let env = three_tiers();
    let real = audit_tip(&env);
    let message = message_of(&env, AUDIT);
    let side = commit_tree(&env, EMPTY_TREE, &[], message.trim(), None);
    let forged = commit_tree(&env, EMPTY_TREE, &[&real, &side], message.trim(), None);
    sg(&env, &["update-ref", AUDIT, &forged]);
    let out = env.mirror(&["audit", "verify"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("2 parents"), "{}", stderr(&out));
}

#[test]
fn audit_verify_reports_time_going_backwards_beyond_the_skew_tolerance() {
    let env = three_tiers();
    let real = audit_tip(&env);
    let real_time: i64 = sg(&env, &["log", "-1", "--format=%ct", &real])
        .parse()
        .unwrap();
    let message = message_of(&env, AUDIT);

    // A minute earlier than its predecessor: within the clock-skew tolerance.
    let skewed = commit_tree(
        &env,
        EMPTY_TREE,
        &[&real],
        message.trim(),
        Some(real_time - 60),
    );
    sg(&env, &["update-ref", AUDIT, &skewed]);
    let v: Value = serde_json::from_str(&env.ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");

    // An hour earlier than its predecessor: reported.
    let tip = audit_tip(&env);
    let tip_time: i64 = sg(&env, &["log", "-1", "--format=%ct", &tip])
        .parse()
        .unwrap();
    let backdated = commit_tree(
        &env,
        EMPTY_TREE,
        &[&tip],
        message.trim(),
        Some(tip_time - 3600),
    );
    sg(&env, &["update-ref", AUDIT, &backdated]);
    let out = env.mirror(&["audit", "verify"]);
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("older than its predecessor"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(&backdated), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// 5. appending is cheap and safe

fn object_count(env: &Env) -> u64 {
    let text = sg(env, &["count-objects", "-v"]);
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("count: ")
                .or_else(|| l.strip_prefix("in-pack: "))
        })
        .map(|n| n.trim().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn an_append_adds_a_fixed_small_number_of_objects() {
    let env = three_tiers();
    for _ in 0..3 {
        env.ok(&["snapshot"]);
    }
    let mut deltas = Vec::new();
    for _ in 0..4 {
        let before = object_count(&env);
        env.ok(&["audit", "verify"]);
        deltas.push(object_count(&env) - before);
    }
    assert!(deltas.iter().all(|d| (1..=2).contains(d)), "{deltas:?}");
    assert!(deltas.windows(2).all(|w| w[0] == w[1]), "fixed: {deltas:?}");
}

#[test]
fn a_stale_audit_ref_lock_from_a_killed_process_does_not_break_the_chain() {
    let env = three_tiers();
    let count = audit_count(&env);
    // A process killed while moving the audit ref leaves its lock file behind.
    std::fs::write(env.shadow.join("refs/mirror/audit.lock"), b"0000\n").unwrap();
    env.write("tier-a/a.txt", "after the crash\n");
    env.ok(&["snapshot"]);
    assert_eq!(
        audit_count(&env),
        count + 1,
        "the next operation is still audited"
    );
    env.ok(&["audit", "verify"]);
    fsck_clean(&env);
}

#[test]
fn processes_killed_at_random_moments_leave_a_valid_chain() {
    let env = three_tiers();
    for i in 0..8u64 {
        let mut child = env
            .cmd()
            .args(["audit", "verify"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(3 * i));
        // SAFETY: SIGKILL to our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = child.wait();
    }
    // The next locking operation clears any ref lock a killed process left.
    env.ok(&["snapshot"]);
    let entries = audit_log(&env, &["-n", "1000"]);
    assert_eq!(entries.len() as u64, audit_count(&env));
    env.ok(&["audit", "verify"]);
    fsck_clean(&env);
}

fn run_in_parallel(env: &Env, argv: &[Vec<String>]) -> Vec<Output> {
    let barrier = Barrier::new(argv.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = argv
            .iter()
            .map(|args| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut cmd = env.cmd();
                    cmd.args(args).env("MIRROR_LOCK_TIMEOUT", "30");
                    barrier.wait();
                    cmd.output().expect("run mirror")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_tags_lose_no_audit_entry() {
    let env = three_tiers();
    let before = audit_count(&env);
    let argv: Vec<Vec<String>> = (0..6)
        .map(|i| {
            vec![
                "tag".into(),
                format!("t{i}"),
                "-m".into(),
                format!("tag {i}"),
            ]
        })
        .collect();
    for (i, out) in run_in_parallel(&env, &argv).iter().enumerate() {
        assert_exit(out, 0, &format!("mirror tag t{i}"));
    }
    assert_eq!(audit_count(&env), before + 6, "one entry per process");
    let entries = audit_log(&env, &["-n", "6"]);
    let mut names: Vec<String> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["command"], "tag", "{e:#}");
            assert_eq!(e["result"], "ok", "{e:#}");
            e["args"][1].as_str().unwrap().to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["t0", "t1", "t2", "t3", "t4", "t5"]);
    assert_eq!(
        sg(&env, &["for-each-ref", "--format=%(refname)", "refs/tags"])
            .lines()
            .count(),
        6
    );
    env.ok(&["audit", "verify"]);
    fsck_clean(&env);
}

#[test]
fn concurrent_snapshots_and_verifies_lose_no_audit_entry() {
    let env = three_tiers();
    let before = audit_count(&env);
    let tiers_before = tips(&env);
    let argv: Vec<Vec<String>> = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                vec!["snapshot".into(), "--trigger".into(), format!("p{i}")]
            } else {
                vec!["audit".into(), "verify".into()]
            }
        })
        .collect();
    for (i, out) in run_in_parallel(&env, &argv).iter().enumerate() {
        assert_exit(
            out,
            0,
            &format!("process {i}: mirror {}", argv[i].join(" ")),
        );
    }
    assert_eq!(audit_count(&env), before + 6, "one entry per process");
    assert_eq!(tips(&env), tiers_before, "unchanged tree: no new snapshot");
    let entries = audit_log(&env, &["-n", "6"]);
    let mut triggers: Vec<String> = entries
        .iter()
        .filter(|e| e["command"] == "snapshot")
        .map(|e| e["args"][2].as_str().unwrap().to_owned())
        .collect();
    triggers.sort();
    assert_eq!(triggers, ["p0", "p2", "p4"]);
    assert_eq!(
        entries.iter().filter(|e| e["command"] == "audit").count(),
        3
    );
    env.ok(&["audit", "verify"]);
}

// ---------------------------------------------------------------------------------------------
// 6. the shadow stays a valid git repository

#[test]
fn shadow_passes_git_fsck_strict_after_tags_and_audit_entries() {
    let env = three_tiers();
    env.ok(&["tag", "one", "-m", "first\n\nwith a body"]);
    change_every_tier(&env, "two");
    env.ok(&["snapshot", "--tag", "two"]);
    env.ok(&["tag", "back", "--at", "tiers/a~1"]);
    env.ok(&["checkout", "one"]);
    let out = env.mirror(&["tag", "one"]);
    assert_exit(&out, 2, "duplicate");
    env.ok(&["audit", "verify"]);
    assert_eq!(
        sg(&env, &["for-each-ref", "--format=%(refname)", "refs/tags"])
            .lines()
            .count(),
        3
    );
    fsck_clean(&env);
    // Every tag and every audit entry is reachable and well-formed for git itself.
    let out = env.shadow_git(&[
        "fsck",
        "--strict",
        "--connectivity-only",
        "refs/tags/one",
        AUDIT,
    ]);
    assert_exit(&out, 0, "fsck of the tag and the audit chain");
}
