//! Issue 8, points 1 and 2: `mirror verify` (its summary, its JSON, its audit entry and every
//! option) and corruption of the shadow repository — a flipped byte in a loose object or in a
//! pack, a truncated object, a deleted object, a corrupt tree or commit — found and named with
//! the tiers, snapshots and paths it affects, contained by `mirror checkout` (exit 3, nothing
//! corrupt or partial written) and repaired from a remote mirror by `mirror repair`.

use crate::common::*;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

const KEEP: &str = "keep.txt";
const KEEP_ORIGINAL_BLURB: &str = "the file nobody touches";
const CHANGING_V1: &str = "version one\n";
const CHANGING_V2: &str = "version two, a little longer\n";

// ---------------------------------------------------------------------------------------------
// helpers

/// Deterministic, poorly compressible text of `lines` lines (so a compressed object has a
/// body worth flipping a byte in).
fn noisy(lines: u32, salt: u32) -> String {
    let mut s = String::new();
    let mut x: u32 = 0x9e37_79b9 ^ salt.wrapping_mul(0x85eb_ca6b);
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.push_str(&format!("{i:05} {x:08x} {:08x}\n", x.rotate_left(11)));
    }
    s
}

/// `git rev-parse --verify SPEC` in the shadow.
fn rev(env: &Env, spec: &str) -> String {
    let out = env.shadow_git(&["rev-parse", "--verify", spec]);
    assert_exit(&out, 0, &format!("git rev-parse --verify {spec}"));
    stdout(&out).trim().to_owned()
}

fn short(id: &str) -> &str {
    &id[..7]
}

fn loose(env: &Env, id: &str) -> PathBuf {
    env.shadow.join("objects").join(&id[..2]).join(&id[2..])
}

/// The loose object file of `id` relative to `objects/`.
fn loose_rel(id: &str) -> String {
    format!("{}/{}", &id[..2], &id[2..])
}

fn writable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Flip every bit of the byte at `at` in `path`.
fn flip_byte_at(path: &Path, at: usize) {
    let mut data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        at < data.len(),
        "{} has only {} bytes",
        path.display(),
        data.len()
    );
    data[at] ^= 0xff;
    writable(path);
    std::fs::write(path, data).unwrap();
}

/// Flip one byte in the middle of a loose object's compressed file.
fn flip_compressed(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    assert!(
        len > 8,
        "{} is too small to damage in its middle",
        path.display()
    );
    flip_byte_at(path, len / 2);
}

/// Rewrite a loose object as a perfectly valid zlib stream whose content (after the
/// `TYPE SIZE\0` header) has one byte flipped: only re-hashing can notice.
fn flip_content(path: &Path) {
    let compressed = std::fs::read(path).unwrap();
    let mut plain = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_end(&mut plain)
        .unwrap_or_else(|e| panic!("{} must inflate before damage: {e}", path.display()));
    let body = plain.iter().position(|b| *b == 0).expect("object header") + 1;
    assert!(
        plain.len() > body,
        "object {} has an empty body",
        path.display()
    );
    let at = body + (plain.len() - body) / 2;
    plain[at] ^= 0x01;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&plain).unwrap();
    let damaged = enc.finish().unwrap();
    writable(path);
    std::fs::write(path, damaged).unwrap();
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    writable(path);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len / 2).unwrap();
}

/// `mirror verify --json ARGS`, parsed.
fn verify_json(env: &Env, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    json_of(env, &all)
}

/// `mirror ARGS` (with --json among them), parsed.
fn json_of(env: &Env, args: &[&str]) -> (Output, Value) {
    let out = env.mirror(args);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "mirror {} must print JSON ({e}):\n--- stdout\n{}\n--- stderr\n{}",
            args.join(" "),
            stdout(&out),
            stderr(&out)
        )
    });
    (out, v)
}

fn problems(report: &Value) -> &Vec<Value> {
    report["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("`problems` must be an array: {report:#}"))
}

fn problems_of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    problems(report)
        .iter()
        .filter(|p| p["kind"] == kind)
        .collect()
}

/// The one problem about object `id`.
fn problem_for<'a>(report: &'a Value, id: &str) -> &'a Value {
    let found: Vec<&Value> = problems(report)
        .iter()
        .filter(|p| p["object"] == id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one problem must name object {id}: {report:#}"
    );
    found[0]
}

type Affected = BTreeSet<(String, String, Option<String>)>;

fn affected(problem: &Value) -> Affected {
    problem["affected"]
        .as_array()
        .unwrap_or_else(|| panic!("`affected` must be an array: {problem:#}"))
        .iter()
        .map(|a| {
            (
                a["tier"].as_str().expect("affected.tier").to_owned(),
                a["snapshot"]
                    .as_str()
                    .expect("affected.snapshot")
                    .to_owned(),
                a["path"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn aff(tier: &str, snapshot: &str, path: Option<&str>) -> (String, String, Option<String>) {
    (tier.into(), snapshot.into(), path.map(str::to_owned))
}

/// Every file (recursively) under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.symlink_metadata().unwrap().is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The file under SHADOW/mirror/quarantine/ whose path ends with `objects/REL`, required to
/// exist; returns its content.
fn quarantined(env: &Env, rel: &str) -> Vec<u8> {
    let root = env.shadow.join("mirror/quarantine");
    let suffix = format!("objects/{rel}");
    let all = files_under(&root);
    let hit = all
        .iter()
        .find(|p| p.to_string_lossy().ends_with(&suffix))
        .unwrap_or_else(|| {
            panic!(
                "{} must hold the quarantined {suffix}; it holds {all:?}",
                root.display()
            )
        });
    std::fs::read(hit).unwrap()
}

/// A name left behind by an interrupted write (mirror's temp-file prefix).
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".mirror-tmp-"))
        })
        .collect()
}

/// `dir` holds tier-a and tier-b exactly as the project does (content, mode, mtime), except
/// that `missing` (a tier-a path) is absent.
fn assert_restored_except(env: &Env, dir: &Path, missing: Option<&str>) {
    let mut want_a = tree(&env.path("tier-a"), &[]);
    if let Some(m) = missing {
        assert!(want_a.remove(m.as_bytes()).is_some(), "{m} is in tier-a");
    }
    let got_a = tree(&dir.join("tier-a"), &[]);
    assert_eq!(
        got_a
            .keys()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        want_a
            .keys()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        "restored tier-a must hold every file but {missing:?}, and nothing else (no temp file)"
    );
    assert!(
        got_a == want_a,
        "restored tier-a files must be byte-identical"
    );
    assert!(
        tree(&dir.join("tier-b"), &[]) == tree(&env.path("tier-b"), &[]),
        "restored tier-b must be byte-identical"
    );
}

/// Two tiers; tier a has two snapshots that both hold `keep.txt` unchanged (one blob both
/// depend on), a file that changed between them, a subdirectory and a treasure; a tag; and
/// everything pushed to the bare path remote `usb`.
struct Fx {
    env: Env,
    /// Tier a's snapshots, oldest first.
    s1: String,
    s2: String,
    /// The blob of keep.txt in both.
    keep: String,
    keep_content: String,
}

fn fixture() -> Fx {
    let env = Env::new();
    let keep_content = format!("{KEEP_ORIGINAL_BLURB}\n{}", noisy(300, 1));
    env.write("tier-a/keep.txt", &keep_content);
    env.write("tier-a/changing.txt", CHANGING_V1);
    env.write("tier-a/sub/deep.txt", "deep\n");
    env.write("tier-a/.hidden-key", "secret one\n");
    env.write("tier-b/b.txt", "b\n");
    env.write("tier-b/.env", "KEY=1\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    let s1 = rev(&env, "refs/heads/tiers/a");
    env.write("tier-a/changing.txt", CHANGING_V2);
    env.write("tier-a/.hidden-key", "secret two, longer\n");
    env.ok(&["snapshot"]);
    let s2 = rev(&env, "refs/heads/tiers/a");
    assert_eq!(rev(&env, &format!("{s2}^")), s1, "two snapshots of tier a");
    env.ok(&["tag", "v1"]);
    let remote = env.root().join("usb.git");
    env.ok(&["remote", "add", "usb", remote.to_str().unwrap()]);
    env.ok(&["push"]);
    let keep = rev(&env, &format!("{s2}:{KEEP}"));
    assert_eq!(keep, rev(&env, &format!("{s1}:{KEEP}")));
    // Snapshots write their trees, commits and notes into small packs; these tests damage
    // single objects, so every object is made loose first, as git itself can leave them.
    unpack_all(&env);
    assert!(
        loose(&env, &keep).is_file(),
        "keep.txt's blob is a loose object"
    );
    Fx {
        env,
        s1,
        s2,
        keep,
        keep_content,
    }
}

// ---------------------------------------------------------------------------------------------
// point 1: verify

#[test]
fn a_clean_shadow_verifies_with_a_one_line_summary_json_and_an_audit_entry() {
    let fx = fixture();
    let env = &fx.env;

    let out = env.mirror(&["verify"]);
    assert_exit(&out, 0, "verify of a clean shadow");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line:\n{text}");
    let line = lines[0];
    assert!(line.starts_with("verify: OK"), "{line}");
    assert!(line.contains("objects checked"), "{line}");
    assert!(line.contains(" read in "), "bytes read: {line}");
    assert!(line.ends_with(" s"), "time taken: {line}");
    let first_number: u64 = line
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an object count in {line}"));
    assert!(first_number > 10, "objects checked: {line}");
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));

    let (out, v) = verify_json(env, &[]);
    assert_exit(&out, 0, "verify --json of a clean shadow");
    assert_eq!(v["ok"], true, "{v:#}");
    let objects = v["objects"].as_u64().expect("objects: a count");
    assert!(objects > 10, "{v:#}");
    let bytes = v["bytes"].as_u64().expect("bytes: a count");
    assert!(
        bytes >= fx.keep_content.len() as u64,
        "the newest snapshot's blobs are read whole: {v:#}"
    );
    assert!(v["seconds"].as_f64().expect("seconds: a number") >= 0.0);
    assert!(problems(&v).is_empty(), "{v:#}");

    let entry = &audit_log(env, &["-n", "1"])[0];
    assert_eq!(entry["command"], "verify", "{entry:#}");
    assert_eq!(entry["result"], "ok", "{entry:#}");
    assert_eq!(
        entry["details"]["objects"], objects,
        "the audit entry records what this verify checked: {entry:#}"
    );

    // Every option at once, on a clean shadow that was pushed: still clean.
    let out = env.mirror(&["verify", "--full", "--decrypt", "--worktree", "--remotes"]);
    assert_exit(
        &out,
        0,
        "verify with every option of a clean, pushed shadow",
    );
    assert!(stdout(&out).starts_with("verify: OK"), "{}", stdout(&out));
}

#[test]
fn full_reads_the_blobs_of_every_snapshot_so_more_objects_than_default() {
    let env = Env::new();
    for i in 0..20 {
        env.write(&format!("t/f{i:02}.txt"), noisy(20, i));
    }
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    for round in 1..3 {
        for i in 0..20 {
            env.write(
                &format!("t/f{i:02}.txt"),
                noisy(20 + round, 100 * round + i),
            );
        }
        env.ok(&["snapshot"]);
    }
    let (out, default) = verify_json(&env, &[]);
    assert_exit(&out, 0, "verify");
    let (out, full) = verify_json(&env, &["--full"]);
    assert_exit(&out, 0, "verify --full");
    let (d, f) = (
        default["objects"].as_u64().unwrap(),
        full["objects"].as_u64().unwrap(),
    );
    // 40 blobs exist only in the two older snapshots.
    assert!(
        f >= d + 40,
        "--full must read the 40 blobs of older snapshots too: default {d}, full {f}"
    );
    let (db, fb) = (
        default["bytes"].as_u64().unwrap(),
        full["bytes"].as_u64().unwrap(),
    );
    let older: u64 = (0..20u32)
        .map(|i| (noisy(20, i).len() + noisy(21, 100 + i).len()) as u64)
        .sum();
    assert!(
        fb >= db + older,
        "--full reads the older blobs' bytes ({older}) too: default {db}, full {fb}"
    );
}

#[test]
fn decrypt_opens_every_treasure_in_scope_and_a_wrong_identity_is_named_with_its_paths() {
    let fx = fixture();
    let env = &fx.env;
    let out = env.mirror(&["verify", "--decrypt"]);
    assert_exit(&out, 0, "verify --decrypt with the right identity");
    assert!(stdout(&out).starts_with("verify: OK"), "{}", stdout(&out));

    let other = env.root().join("other.txt");
    env.ok(&["key", "generate", "--out", other.to_str().unwrap()]);
    let other = other.to_str().unwrap();
    let out = env.mirror(&["--identity", other, "verify"]);
    assert_exit(&out, 0, "plain verify needs no identity");

    let out = env.mirror(&["--identity", other, "verify", "--decrypt"]);
    assert_exit(&out, 1, "verify --decrypt with a wrong identity");
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "an error line:\n{err}"
    );
    assert!(
        err.contains(".hidden-key"),
        "the undecryptable treasure is named:\n{err}"
    );
    assert!(err.contains(short(&fx.s2)), "{err}");

    let newest = rev(env, &format!("{}:.hidden-key", fx.s2));
    let oldest = rev(env, &format!("{}:.hidden-key", fx.s1));
    let (out, v) = json_of(env, &["--identity", other, "verify", "--decrypt", "--json"]);
    assert_exit(&out, 1, "verify --decrypt --json with a wrong identity");
    assert_eq!(v["ok"], false);
    let dec = problems_of_kind(&v, "decrypt");
    assert_eq!(dec.len(), 1, "only the newest snapshot is in scope: {v:#}");
    assert_eq!(dec[0]["object"], newest.as_str());
    assert_eq!(
        affected(dec[0]),
        [aff("a", &fx.s2, Some(".hidden-key"))].into()
    );
    assert_eq!(problems(&v).len(), 1, "nothing else is wrong: {v:#}");

    let (out, v) = json_of(
        env,
        &[
            "--identity",
            other,
            "verify",
            "--decrypt",
            "--full",
            "--json",
        ],
    );
    assert_exit(&out, 1, "verify --decrypt --full with a wrong identity");
    let dec = problems_of_kind(&v, "decrypt");
    let objects: BTreeSet<&str> = dec.iter().map(|p| p["object"].as_str().unwrap()).collect();
    assert_eq!(
        objects,
        [newest.as_str(), oldest.as_str()].into(),
        "with --full, the treasure of every snapshot is in scope: {v:#}"
    );
    let all: Affected = dec.iter().flat_map(|p| affected(p)).collect();
    assert_eq!(
        all,
        [
            aff("a", &fx.s1, Some(".hidden-key")),
            aff("a", &fx.s2, Some(".hidden-key"))
        ]
        .into()
    );
}

#[test]
fn worktree_reports_a_missing_treasure_as_a_problem_and_other_changes_as_notes() {
    let fx = fixture();
    let env = &fx.env;
    env.write("tier-a/changing.txt", "edited since the snapshot\n");
    std::fs::remove_file(env.path("tier-a/sub/deep.txt")).unwrap();
    let out = env.mirror(&["verify", "--worktree"]);
    assert_exit(&out, 0, "changed and deleted plain files are only notes");
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("note: a:")),
        "a note says tier a changed:\n{text}"
    );
    assert!(text.contains("verify: OK"), "{text}");

    std::fs::remove_file(env.path("tier-a/.hidden-key")).unwrap();
    let out = env.mirror(&["verify"]);
    assert_exit(
        &out,
        0,
        "without --worktree the working tree is not looked at",
    );
    let out = env.mirror(&["verify", "--worktree"]);
    assert_exit(&out, 1, "a missing treasure file");
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains(".hidden-key")),
        "{}",
        stderr(&out)
    );
    let (out, v) = verify_json(env, &["--worktree"]);
    assert_exit(&out, 1, "verify --worktree --json");
    let wt = problems_of_kind(&v, "worktree");
    assert_eq!(wt.len(), 1, "only the treasure is a problem: {v:#}");
    assert_eq!(
        affected(wt[0]),
        [aff("a", &fx.s2, Some(".hidden-key"))].into(),
        "{v:#}"
    );
    assert_eq!(problems(&v).len(), 1, "{v:#}");
}

#[test]
fn remotes_must_hold_the_shadows_refs_and_an_unreachable_remote_is_a_problem() {
    let fx = fixture();
    let env = &fx.env;
    let out = env.mirror(&["verify", "--remotes"]);
    assert_exit(&out, 0, "verify --remotes right after a push");

    env.write("tier-a/changing.txt", "not pushed yet\n");
    env.ok(&["snapshot"]);
    let tip = rev(env, "refs/heads/tiers/a");
    let out = env.mirror(&["verify", "--remotes"]);
    assert_exit(&out, 1, "a snapshot that was not pushed");
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("usb")),
        "{}",
        stderr(&out)
    );
    let (out, v) = verify_json(env, &["--remotes"]);
    assert_exit(&out, 1, "verify --remotes --json");
    let remote = problems_of_kind(&v, "remote");
    assert!(!remote.is_empty(), "{v:#}");
    assert!(
        remote.iter().any(|p| {
            let m = p["message"].as_str().unwrap();
            m.contains("usb") && m.contains("refs/heads/tiers/a") && p["object"] == tip.as_str()
        }),
        "the stale tier ref on usb is named: {v:#}"
    );
    assert_eq!(remote.len(), problems(&v).len(), "{v:#}");
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 0, "without --remotes the remotes are not asked");

    env.ok(&["push"]);
    let out = env.mirror(&["verify", "--remotes"]);
    assert_exit(&out, 0, "verify --remotes after pushing again");

    let broken = env.root().join("not-a-repository");
    write(&broken.join("some-file"), "not git\n");
    env.ok(&["remote", "add", "broken", broken.to_str().unwrap()]);
    let (out, v) = verify_json(env, &["--remotes"]);
    assert_exit(&out, 1, "an unreachable remote");
    assert!(
        problems_of_kind(&v, "remote")
            .iter()
            .any(|p| p["message"].as_str().unwrap().contains("broken")),
        "the unreachable remote is named: {v:#}"
    );
}

#[test]
fn tier_option_restricts_which_blobs_are_read() {
    let env = Env::new();
    env.write("tier-a/small.txt", "small\n");
    let big = noisy(12_000, 7); // ~ 280 KB
    env.write("tier-b/big.txt", &big);
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    let (out, only_a) = verify_json(&env, &["--tier", "a"]);
    assert_exit(&out, 0, "verify --tier a");
    let (out, only_b) = verify_json(&env, &["--tier", "b"]);
    assert_exit(&out, 0, "verify --tier b");
    let big_len = big.len() as u64;
    assert!(
        only_a["bytes"].as_u64().unwrap() < big_len,
        "tier b's big blob is not read for --tier a: {only_a:#}"
    );
    assert!(
        only_b["bytes"].as_u64().unwrap() >= big_len,
        "tier b's big blob is read for --tier b: {only_b:#}"
    );

    let snap_b = rev(&env, "refs/heads/tiers/b");
    let blob = rev(&env, &format!("{snap_b}:big.txt"));
    flip_compressed(&loose(&env, &blob));
    let out = env.mirror(&["verify", "--tier", "a"]);
    assert_exit(&out, 0, "verify --tier a does not read tier b's blobs");
    let (out, v) = verify_json(&env, &["--tier", "b"]);
    assert_exit(&out, 1, "verify --tier b finds tier b's damaged blob");
    assert_eq!(
        affected(problem_for(&v, &blob)),
        [aff("b", &snap_b, Some("big.txt"))].into()
    );
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 1, "verify of all tiers finds it too");
}

// ---------------------------------------------------------------------------------------------
// point 2: corruption is found and contained, and repaired from a remote

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One byte of a loose object's compressed file flipped.
    FlipCompressed,
    /// A loose object rewritten as valid zlib with one content byte flipped.
    FlipContent,
    /// One byte of the blob's entry in a pack flipped.
    Pack,
    /// A loose object cut to half its length.
    Truncate,
    /// A loose object deleted.
    Delete,
}

/// Damage keep.txt's blob; returns the damaged file (relative to objects/) and its bytes
/// after the damage (None when deleted).
fn damage(fx: &Fx, how: Damage) -> (String, Option<Vec<u8>>) {
    let env = &fx.env;
    let path = loose(env, &fx.keep);
    let rel = loose_rel(&fx.keep);
    match how {
        Damage::FlipCompressed => flip_compressed(&path),
        Damage::FlipContent => flip_content(&path),
        Damage::Truncate => truncate(&path),
        Damage::Delete => {
            std::fs::remove_file(&path).unwrap();
            return (rel, None);
        }
        Damage::Pack => {
            let out = env.shadow_git(&["repack", "-a", "-d", "-q"]);
            assert_exit(&out, 0, "git repack -a -d");
            assert!(
                !path.exists(),
                "after repack keep.txt's blob is only packed"
            );
            let packs: Vec<PathBuf> = files_under(&env.shadow.join("objects/pack"))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "idx"))
                .collect();
            assert_eq!(packs.len(), 1, "one pack: {packs:?}");
            let idx = &packs[0];
            let out = env.shadow_git(&["verify-pack", "-v", idx.to_str().unwrap()]);
            assert_exit(&out, 0, "git verify-pack -v");
            let listing = stdout(&out);
            let line = listing
                .lines()
                .find(|l| l.starts_with(&fx.keep))
                .unwrap_or_else(|| panic!("keep.txt's blob is in the pack:\n{listing}"));
            // SHA TYPE SIZE SIZE-IN-PACK OFFSET [DEPTH BASE]
            let cols: Vec<&str> = line.split_whitespace().collect();
            let in_pack: usize = cols[3].parse().unwrap();
            let offset: usize = cols[4].parse().unwrap();
            assert!(in_pack > 64, "the entry has a body to damage: {line}");
            let pack = idx.with_extension("pack");
            flip_byte_at(&pack, offset + in_pack / 2);
            let name = pack.file_name().unwrap().to_string_lossy().into_owned();
            return (format!("pack/{name}"), Some(std::fs::read(&pack).unwrap()));
        }
    }
    (rel, Some(std::fs::read(&path).unwrap()))
}

/// The whole story for one kind of damage to a blob both snapshots of tier a depend on.
fn damaged_blob_is_found_contained_and_repaired(how: Damage) {
    let fx = fixture();
    let env = &fx.env;
    let (damaged_rel, damaged_bytes) = damage(&fx, how);
    let kind = match how {
        Damage::Delete => "missing",
        _ => "corrupt",
    };

    // verify names the object, its tier, both snapshots and the path.
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 1, &format!("verify after {how:?}"));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains(&fx.keep)),
        "an error line names object {}:\n{err}",
        fx.keep
    );
    for needle in ["tier a", short(&fx.s1), short(&fx.s2), KEEP] {
        assert!(err.contains(needle), "stderr must name {needle}:\n{err}");
    }
    assert!(!stdout(&out).contains("verify: OK"), "{}", stdout(&out));
    let (out, v) = verify_json(env, &[]);
    assert_exit(&out, 1, &format!("verify --json after {how:?}"));
    assert_eq!(v["ok"], false, "{v:#}");
    let p = problem_for(&v, &fx.keep);
    assert_eq!(p["kind"], kind, "{p:#}");
    assert_eq!(
        affected(p),
        [aff("a", &fx.s1, Some(KEEP)), aff("a", &fx.s2, Some(KEEP))].into(),
        "{p:#}"
    );
    assert_eq!(problems(&v).len(), 1, "nothing else is wrong: {v:#}");
    let entry = &audit_log(env, &["-n", "1"])[0];
    assert_eq!(entry["command"], "verify", "{entry:#}");
    assert_eq!(entry["result"], "failed", "{entry:#}");

    // checkout --to restores everything else, names keep.txt, exits 3, writes nothing for it.
    let dir = env.root().join("restored");
    let out = env.mirror(&["checkout", "latest", "--to", dir.to_str().unwrap()]);
    assert_exit(&out, 3, &format!("checkout --to after {how:?}"));
    assert!(stderr(&out).contains(KEEP), "{}", stderr(&out));
    assert!(
        dir.join("tier-a").join(KEEP).symlink_metadata().is_err(),
        "no file may be written for the damaged blob"
    );
    assert_restored_except(env, &dir, Some(KEEP));

    // In place: the old file of that path stays as it was, everything else is restored.
    env.write("tier-a/keep.txt", "a local edit\n");
    env.write("tier-a/changing.txt", "scribbled over\n");
    std::fs::remove_file(env.path("tier-a/sub/deep.txt")).unwrap();
    let out = env.mirror(&["checkout", "latest"]);
    assert_exit(&out, 3, &format!("checkout in place after {how:?}"));
    assert!(stderr(&out).contains(KEEP), "{}", stderr(&out));
    assert_eq!(env.read("tier-a/keep.txt"), b"a local edit\n");
    assert_eq!(env.read("tier-a/changing.txt"), CHANGING_V2.as_bytes());
    assert_eq!(env.read("tier-a/sub/deep.txt"), b"deep\n");
    assert_eq!(env.read("tier-a/.hidden-key"), b"secret two, longer\n");
    assert!(
        temp_files(&env.project).is_empty(),
        "{:?}",
        temp_files(&env.project)
    );

    // repair from the remote the shadow was pushed to.
    let out = env.mirror(&["repair", "--from", "usb"]);
    assert_exit(&out, 0, &format!("repair after {how:?}"));
    assert!(stdout(&out).contains("repaired"), "{}", stdout(&out));
    if let Some(bytes) = &damaged_bytes {
        assert!(
            quarantined(env, &damaged_rel) == *bytes,
            "the damaged file is moved into quarantine unchanged"
        );
    }
    if matches!(how, Damage::Pack) {
        assert!(
            !stdout(&out).contains("(0 sound objects"),
            "the pack's sound objects are saved first: {}",
            stdout(&out)
        );
    }
    let out = env.mirror(&["verify", "--full"]);
    assert_exit(&out, 0, &format!("verify --full after repairing {how:?}"));
    assert!(stdout(&out).starts_with("verify: OK"), "{}", stdout(&out));
    fsck_clean(env);
    let entry = &audit_log(env, &["-n", "2"])[1];
    assert_eq!(entry["command"], "repair", "{entry:#}");
    assert_eq!(entry["result"], "ok", "{entry:#}");

    let again = env.root().join("restored-after-repair");
    let out = env.mirror(&["checkout", &fx.s2, "--to", again.to_str().unwrap()]);
    assert_exit(&out, 0, "checkout of the repaired snapshot");
    assert_eq!(
        std::fs::read(again.join("tier-a").join(KEEP)).unwrap(),
        fx.keep_content.as_bytes()
    );
}

#[test]
fn a_flipped_byte_in_a_loose_objects_compressed_file_is_found_contained_and_repaired() {
    damaged_blob_is_found_contained_and_repaired(Damage::FlipCompressed);
}

#[test]
fn a_loose_object_rewritten_as_valid_zlib_with_a_flipped_byte_is_found_contained_and_repaired() {
    damaged_blob_is_found_contained_and_repaired(Damage::FlipContent);
}

#[test]
fn a_flipped_byte_in_a_pack_entry_is_found_contained_and_repaired() {
    damaged_blob_is_found_contained_and_repaired(Damage::Pack);
}

#[test]
fn a_truncated_loose_object_is_found_contained_and_repaired() {
    damaged_blob_is_found_contained_and_repaired(Damage::Truncate);
}

#[test]
fn a_deleted_object_is_found_contained_and_repaired() {
    damaged_blob_is_found_contained_and_repaired(Damage::Delete);
}

#[test]
fn a_damaged_blob_only_in_an_older_snapshot_is_found_by_full_with_that_snapshot() {
    let fx = fixture();
    let env = &fx.env;
    let old = rev(env, &format!("{}:changing.txt", fx.s1));
    flip_content(&loose(env, &old));

    let (out, v) = verify_json(env, &["--full"]);
    assert_exit(
        &out,
        1,
        "verify --full with an older snapshot's blob damaged",
    );
    let p = problem_for(&v, &old);
    assert_eq!(p["kind"], "corrupt");
    assert_eq!(
        affected(p),
        [aff("a", &fx.s1, Some("changing.txt"))].into(),
        "only the older snapshot holds it: {p:#}"
    );
    let out = env.mirror(&["verify", "--full"]);
    assert_exit(&out, 1, "verify --full");
    let err = stderr(&out);
    let affects: Vec<&str> = err.lines().filter(|l| l.contains("affects")).collect();
    assert!(
        affects
            .iter()
            .any(|l| l.contains(short(&fx.s1)) && l.contains("changing.txt")),
        "{err}"
    );
    assert!(
        !affects.iter().any(|l| l.contains(short(&fx.s2))),
        "the newest snapshot is not affected:\n{err}"
    );

    let dir = env.root().join("old");
    let out = env.mirror(&["checkout", &fx.s1, "--to", dir.to_str().unwrap()]);
    assert_exit(&out, 3, "checkout of the older snapshot");
    assert!(stderr(&out).contains("changing.txt"), "{}", stderr(&out));
    assert!(dir.join("tier-a/changing.txt").symlink_metadata().is_err());
    assert_eq!(
        std::fs::read(dir.join("tier-a").join(KEEP)).unwrap(),
        fx.keep_content.as_bytes()
    );
    assert_eq!(
        std::fs::read(dir.join("tier-a/.hidden-key")).unwrap(),
        b"secret one\n"
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));

    let out = env.mirror(&["repair", "--from", "usb"]);
    assert_exit(&out, 0, "repair");
    let out = env.mirror(&["verify", "--full"]);
    assert_exit(&out, 0, "verify --full after the repair");
}

#[test]
fn repair_without_a_remote_holding_the_object_fails_and_says_what_is_still_broken() {
    let fx = fixture();
    let env = &fx.env;
    // Created after the last push: no remote has it.
    env.write("tier-a/new.txt", noisy(100, 3));
    env.ok(&["snapshot"]);
    let s3 = rev(env, "refs/heads/tiers/a");
    let new = rev(env, &format!("{s3}:new.txt"));
    let path = loose(env, &new);
    flip_compressed(&path);
    let damaged = std::fs::read(&path).unwrap();

    let out = env.mirror(&["repair", "--from", "usb"]);
    assert_exit(&out, 1, "repair of an object no remote has");
    let err = stderr(&out);
    assert!(err.contains("still broken"), "{err}");
    for needle in [new.as_str(), "new.txt", short(&s3), "tier a"] {
        assert!(err.contains(needle), "stderr must name {needle}:\n{err}");
    }
    assert!(!stdout(&out).contains("verifies clean"), "{}", stdout(&out));
    assert!(quarantined(env, &loose_rel(&new)) == damaged);
    let entry = &audit_log(env, &["-n", "1"])[0];
    assert_eq!(entry["command"], "repair", "{entry:#}");
    assert_eq!(entry["result"], "failed", "{entry:#}");

    let (out, v) = verify_json(env, &[]);
    assert_exit(&out, 1, "still broken after the failed repair");
    let p = problem_for(&v, &new);
    assert_eq!(p["kind"], "missing", "moved into quarantine: {p:#}");
    assert_eq!(affected(p), [aff("a", &s3, Some("new.txt"))].into());
}

/// Damage the loose object `id` (a tree or commit) of the fixture, check that verify reports
/// it with `expected`, then that repair from the remote makes the shadow whole again.
fn damaged_object_is_reported_and_repaired(fx: &Fx, id: &str, expected: Affected) {
    let env = &fx.env;
    flip_content(&loose(env, id));
    let (out, v) = verify_json(env, &[]);
    assert_exit(&out, 1, "verify with a damaged tree or commit");
    let p = problem_for(&v, id);
    assert_eq!(p["kind"], "corrupt", "{p:#}");
    assert_eq!(affected(p), expected, "{p:#}");
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 1, "verify");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains(id)),
        "{err}"
    );
    for (tier, snapshot, _) in &expected {
        let line = format!("tier {tier}");
        assert!(err.contains(&line), "{err}");
        assert!(err.contains(short(snapshot)), "{err}");
    }

    let out = env.mirror(&["repair", "--from", "usb"]);
    assert_exit(&out, 0, "repair of a damaged tree or commit");
    quarantined(env, &loose_rel(id));
    let out = env.mirror(&["verify", "--full"]);
    assert_exit(&out, 0, "verify --full after the repair");
    fsck_clean(env);
}

#[test]
fn a_corrupt_subtree_is_reported_with_every_snapshot_and_the_directory() {
    let fx = fixture();
    let sub = rev(&fx.env, &format!("{}:sub", fx.s2));
    assert_eq!(sub, rev(&fx.env, &format!("{}:sub", fx.s1)));
    let expected = [aff("a", &fx.s1, Some("sub")), aff("a", &fx.s2, Some("sub"))].into();
    damaged_object_is_reported_and_repaired(&fx, &sub, expected);
}

#[test]
fn a_corrupt_root_tree_is_reported_as_its_whole_snapshot() {
    let fx = fixture();
    let root = rev(&fx.env, &format!("{}^{{tree}}", fx.s2));
    let expected = [aff("a", &fx.s2, None)].into();
    damaged_object_is_reported_and_repaired(&fx, &root, expected);
}

#[test]
fn a_corrupt_commit_is_reported_with_its_snapshot() {
    let fx = fixture();
    let s1 = fx.s1.clone();
    let expected = [aff("a", &s1, None)].into();
    damaged_object_is_reported_and_repaired(&fx, &s1, expected);
}

#[test]
fn a_dangling_ref_and_a_rewritten_audit_trail_are_problems() {
    let fx = fixture();
    let env = &fx.env;
    let ghost = "0123456789abcdef0123456789abcdef01234567";
    write(&env.shadow.join("refs/tags/ghost"), format!("{ghost}\n"));
    let (out, v) = verify_json(env, &[]);
    assert_exit(&out, 1, "verify with a ref to a missing object");
    assert!(
        problems_of_kind(&v, "ref")
            .iter()
            .any(|p| p["message"].as_str().unwrap().contains("refs/tags/ghost")),
        "the dangling ref is named: {v:#}"
    );
    std::fs::remove_file(env.shadow.join("refs/tags/ghost")).unwrap();
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 0, "verify once the dangling ref is gone");

    // Rewind the audit trail past entries this machine appended.
    let older = rev(env, "refs/mirror/audit~3");
    let out = env.shadow_git(&["update-ref", "refs/mirror/audit", &older]);
    assert_exit(&out, 0, "git update-ref");
    let (out, v) = verify_json(env, &[]);
    assert_exit(&out, 1, "verify of a rewritten audit trail");
    assert!(!problems_of_kind(&v, "audit").is_empty(), "{v:#}");
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 1, "the next verify still reports it");
    assert!(stderr(&out).contains("audit"), "{}", stderr(&out));
}

#[test]
fn a_blob_shared_by_two_paths_and_two_tiers_is_reported_with_all_of_them() {
    let env = Env::new();
    let same = noisy(50, 9);
    env.write("tier-a/x.txt", &same);
    env.write("tier-a/dir/x-again.txt", &same);
    env.write("tier-b/y/x-copy.txt", &same);
    env.write("tier-b/other.txt", "other\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    let sa = rev(&env, "refs/heads/tiers/a");
    let sb = rev(&env, "refs/heads/tiers/b");
    let blob = rev(&env, &format!("{sa}:x.txt"));
    assert_eq!(blob, rev(&env, &format!("{sb}:y/x-copy.txt")));
    std::fs::remove_file(loose(&env, &blob)).unwrap();

    let (out, v) = verify_json(&env, &[]);
    assert_exit(&out, 1, "verify with a shared blob missing");
    assert_eq!(
        affected(problem_for(&v, &blob)),
        [
            aff("a", &sa, Some("dir/x-again.txt")),
            aff("a", &sa, Some("x.txt")),
            aff("b", &sb, Some("y/x-copy.txt")),
        ]
        .into()
    );
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 1, "verify");
    let err = stderr(&out);
    assert!(err.contains("tier a") && err.contains("tier b"), "{err}");
    for path in ["x.txt", "dir/x-again.txt", "y/x-copy.txt"] {
        assert!(err.contains(path), "{path} is named:\n{err}");
    }

    let dir = env.root().join("restored");
    let out = env.mirror(&["checkout", "latest", "--to", dir.to_str().unwrap()]);
    assert_exit(&out, 3, "checkout with a shared blob missing");
    let err = stderr(&out);
    for path in ["x.txt", "x-again.txt", "x-copy.txt"] {
        assert!(err.contains(path), "{path} is named:\n{err}");
    }
    assert_eq!(
        std::fs::read(dir.join("tier-b/other.txt")).unwrap(),
        b"other\n"
    );
    let left: Vec<PathBuf> = files_under(&dir);
    assert_eq!(
        left,
        vec![dir.join("tier-b/other.txt")],
        "nothing else is written"
    );
}

#[test]
fn checkout_with_a_missing_treasure_blob_restores_everything_else_and_exits_3() {
    let fx = fixture();
    let env = &fx.env;
    let secret = rev(env, &format!("{}:.hidden-key", fx.s2));
    std::fs::remove_file(loose(env, &secret)).unwrap();
    let (out, v) = verify_json(env, &[]);
    assert_exit(&out, 1, "verify with the treasure's blob missing");
    assert_eq!(
        affected(problem_for(&v, &secret)),
        [aff("a", &fx.s2, Some(".hidden-key"))].into()
    );

    let dir = env.root().join("restored");
    let out = env.mirror(&["checkout", "latest", "--to", dir.to_str().unwrap()]);
    assert_exit(&out, 3, "checkout with one (encrypted) blob missing");
    assert!(stderr(&out).contains(".hidden-key"), "{}", stderr(&out));
    assert_restored_except(env, &dir, Some(".hidden-key"));
}

#[test]
fn repair_of_a_sound_shadow_has_nothing_to_do() {
    let fx = fixture();
    let env = &fx.env;
    let out = env.mirror(&["repair", "--from", "usb"]);
    assert_exit(&out, 0, "repair of a sound shadow");
    assert!(
        stdout(&out).contains("nothing to repair"),
        "{}",
        stdout(&out)
    );
    assert!(
        !env.shadow.join("mirror/quarantine").exists()
            || files_under(&env.shadow.join("mirror/quarantine")).is_empty(),
        "nothing is quarantined"
    );
    let entry = &audit_log(env, &["-n", "1"])[0];
    assert_eq!(entry["command"], "repair", "{entry:#}");
}

#[test]
fn repairing_a_damaged_pack_keeps_its_sound_objects_that_no_remote_has() {
    let fx = fixture();
    let env = &fx.env;
    // A snapshot the remote never got, packed together with keep.txt's blob.
    let only_here = noisy(80, 4);
    env.write("tier-a/only-here.txt", &only_here);
    env.ok(&["snapshot"]);
    let s3 = rev(env, "refs/heads/tiers/a");
    let (pack_rel, bytes) = damage(&fx, Damage::Pack);
    let out = env.mirror(&["repair", "--from", "usb"]);
    assert_exit(&out, 0, "repair of a pack that also holds unpushed objects");
    assert!(quarantined(env, &pack_rel) == bytes.unwrap());
    let out = env.mirror(&["verify", "--full"]);
    assert_exit(&out, 0, "verify --full after the repair");
    fsck_clean(env);
    let dir = env.root().join("s3");
    let out = env.mirror(&["checkout", &s3, "--to", dir.to_str().unwrap()]);
    assert_exit(&out, 0, "the unpushed snapshot still restores");
    assert_eq!(
        std::fs::read(dir.join("tier-a/only-here.txt")).unwrap(),
        only_here.as_bytes()
    );
    assert_eq!(
        std::fs::read(dir.join("tier-a").join(KEEP)).unwrap(),
        fx.keep_content.as_bytes()
    );
}

/// A lightweight tag a user made on a snapshot is not damage: verify stays clean, and so
/// repair has nothing to move.
#[test]
fn a_lightweight_tag_on_a_snapshot_is_not_reported_as_corrupt() {
    let fx = fixture();
    let out = fx.env.shadow_git(&["tag", "lw", &fx.s2]);
    assert_exit(&out, 0, "git tag lw");
    let out = fx.env.mirror(&["verify", "--full"]);
    assert_exit(&out, 0, "verify with a lightweight tag");
    let out = fx.env.mirror(&["repair"]);
    assert!(
        !fx.env.shadow.join("mirror/quarantine").exists(),
        "nothing may be quarantined: {}",
        stderr(&out)
    );
}

/// A tier's tip commit gone: reported with the JSON report and the affected tier, not an
/// abort.
#[test]
fn a_missing_tip_commit_is_reported_not_fatal() {
    let fx = fixture();
    let loose = fx.env.shadow.join("objects").join(loose_rel(&fx.s2));
    assert!(loose.exists(), "the tip commit is a loose object");
    std::fs::remove_file(&loose).unwrap();
    let out = fx.env.mirror(&["verify", "--json"]);
    assert_exit(&out, 1, "verify with a missing tip commit");
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    let found = problems(&report)
        .iter()
        .any(|p| p["object"] == fx.s2.as_str() && p["kind"] == "missing");
    assert!(found, "the missing tip is reported: {report}");
}

/// A damaged metadata note is reported with the snapshot it belongs to.
#[test]
fn a_damaged_note_names_its_snapshot() {
    let fx = fixture();
    // The records blob of the tier root in the snapshot's metadata tree.
    let spec = format!("{}/files", note_spec(&fx.env, &fx.s2).expect("a note"));
    let out = fx.env.shadow_git(&["rev-parse", "--verify", &spec]);
    assert_exit(&out, 0, "git rev-parse of the note's records");
    let note = stdout(&out).trim().to_owned();
    let loose = fx.env.shadow.join("objects").join(loose_rel(&note));
    assert!(loose.exists(), "the records blob is a loose object");
    flip_content(&loose);
    let out = fx.env.mirror(&["verify", "--json"]);
    assert_exit(&out, 1, "verify with a damaged note");
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    let problem = problem_for(&report, &note);
    let names_snapshot = problem["affected"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["snapshot"] == fx.s2.as_str() && a["tier"] == "a");
    assert!(names_snapshot, "the note's snapshot is named: {problem}");
}
