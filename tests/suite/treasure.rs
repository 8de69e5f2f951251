//! Treasure files (issue 3): which paths are treasures (point 1), their blobs are age
//! ciphertext and no trace of their plaintext reaches the shadow repository (point 3), no
//! churn (point 4), checkout decrypts — and refuses cleanly without the right key (point 5),
//! and late treasures (point 6). Together these are point 9's list: round trip, marker scan,
//! no-churn, wrong and missing key.

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gix::bstr::ByteSlice;

/// Every binary age file starts with this line.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

const REFUSAL: &str = "treasures found but no encryption recipients; run `mirror init --encrypt` or set `treasures: []`";

// ---------------------------------------------------------------------------------------------
// helpers

fn shadow_git_ok(env: &Env, args: &[&str]) -> String {
    let out = env.shadow_git(args);
    assert_exit(&out, 0, &format!("git --git-dir=SHADOW {}", args.join(" ")));
    stdout(&out).trim().to_owned()
}

fn commit_count(env: &Env, tier: &str) -> usize {
    match tip(env, tier) {
        None => 0,
        Some(_) => shadow_git_ok(env, &["rev-list", "--count", &tier_ref(tier)])
            .parse()
            .unwrap(),
    }
}

/// Tier-relative path → blob id of every file in a commit.
fn blobs_of(env: &Env, rev: &str) -> BTreeMap<String, String> {
    let out = env.shadow_git(&["ls-tree", "-r", "-z", "--full-tree", rev]);
    assert_exit(&out, 0, &format!("git ls-tree {rev}"));
    let mut map = BTreeMap::new();
    for rec in out.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rec = String::from_utf8(rec.to_vec()).unwrap();
        let (head, path) = rec.split_once('\t').unwrap();
        let oid = head.split(' ').nth(2).unwrap().to_owned();
        map.insert(path.to_owned(), oid);
    }
    map
}

fn blob_id(env: &Env, rev: &str, path: &str) -> String {
    blobs_of(env, rev)
        .remove(path)
        .unwrap_or_else(|| panic!("{path} is not recorded in {rev}"))
}

fn blob(env: &Env, oid: &str) -> Vec<u8> {
    let out = env.shadow_git(&["cat-file", "blob", oid]);
    assert_exit(&out, 0, &format!("git cat-file blob {oid}"));
    out.stdout
}

/// The content stored for `path` in commit `rev`.
fn stored(env: &Env, rev: &str, path: &str) -> Vec<u8> {
    blob(env, &blob_id(env, rev, path))
}

/// Every object of the shadow repository, decompressed: (id, type, content).
fn all_objects(env: &Env) -> Vec<(String, String, Vec<u8>)> {
    let out = env.shadow_git(&["cat-file", "--batch-all-objects", "--batch"]);
    assert_exit(&out, 0, "git cat-file --batch-all-objects --batch");
    let data = out.stdout;
    let mut objects = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let nl = pos + data[pos..].iter().position(|b| *b == b'\n').unwrap();
        let header = std::str::from_utf8(&data[pos..nl]).unwrap().to_owned();
        let mut parts = header.split(' ');
        let (id, kind, size) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().parse::<usize>().unwrap(),
        );
        let start = nl + 1;
        objects.push((id, kind, data[start..start + size].to_vec()));
        pos = start + size + 1;
    }
    objects
}

/// Ids of the blobs that are age ciphertext.
fn age_blobs(env: &Env) -> BTreeSet<String> {
    all_objects(env)
        .into_iter()
        .filter(|(_, kind, content)| kind == "blob" && content.starts_with(AGE_MAGIC))
        .map(|(id, _, _)| id)
        .collect()
}

/// Replace the `treasures:` section of mirror.yaml (written by init) with `patterns`.
fn set_treasures(env: &Env, patterns: &[&str]) {
    let text = String::from_utf8(env.read("mirror.yaml")).unwrap();
    let mut kept = Vec::new();
    let mut in_section = false;
    for line in text.lines() {
        if line.starts_with("treasures:") {
            in_section = true;
            continue;
        }
        if in_section && (line.starts_with('-') || line.starts_with(' ')) {
            continue;
        }
        in_section = false;
        kept.push(line.to_owned());
    }
    let list: Vec<String> = patterns
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    kept.push(format!("treasures: [{}]", list.join(", ")));
    let new = kept.join("\n") + "\n";
    env.write("mirror.yaml", &new);
    // mirror.yaml must still be valid: status reads it.
    let out = env.mirror(&["status"]);
    assert_exit(&out, 0, &format!("mirror status with mirror.yaml\n{new}"));
}

/// A project without any `encryption:` section (`mirror init` without `--encrypt`).
fn init_without_encryption(env: &Env) {
    let shadow = env.shadow.to_str().unwrap().to_owned();
    env.ok(&["init", "--shadow", &shadow, "--tier", "t=tier-0"]);
    let yaml = String::from_utf8(env.read("mirror.yaml")).unwrap();
    assert!(
        !yaml.contains("encryption"),
        "init without --encrypt wrote an encryption section:\n{yaml}"
    );
}

fn identity_file(env: &Env) -> PathBuf {
    env.home.join("config/mirror/identity.txt")
}

/// 32 random hex characters.
fn random_marker() -> String {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Run a program; require exit 0; return its trimmed stdout.
fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_exit(&out, 0, what);
    stdout(&out).trim().to_owned()
}

/// The unkeyed hashes of a file's plaintext that must appear nowhere in the shadow: SHA-1,
/// SHA-256 and git's blob id, each as hex and raw bytes. (label, needle)
fn plaintext_hashes(env: &Env, path: &Path) -> Vec<(String, Vec<u8>)> {
    let first_word = |s: String| s.split_whitespace().next().unwrap().to_owned();
    let sha1 = first_word(run_ok(Command::new("sha1sum").arg(path), "sha1sum"));
    let sha256 = first_word(run_ok(Command::new("sha256sum").arg(path), "sha256sum"));
    let git_blob = {
        let mut cmd = Command::new("git");
        env.isolate(&mut cmd);
        cmd.current_dir(env.root())
            .args(["hash-object", "--no-filters"])
            .arg(path);
        run_ok(&mut cmd, "git hash-object")
    };
    let name = path.display();
    let mut out = Vec::new();
    for (kind, h) in [
        ("sha1", sha1),
        ("sha256", sha256),
        ("git blob id", git_blob),
    ] {
        assert!(h.len() == 40 || h.len() == 64, "{kind} of {name}: {h}");
        out.push((format!("hex {kind} of {name}"), h.as_bytes().to_vec()));
        out.push((format!("raw {kind} of {name}"), unhex(&h)));
    }
    out
}

/// Every file under `dir`, recursively (not following symlinks).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// `mirror status --json`, the entry of tier `t`.
fn status_json(env: &Env) -> serde_json::Value {
    let text = env.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{text}"));
    v.as_array()
        .expect("an array of tiers")
        .iter()
        .find(|t| t["tier"] == "t")
        .unwrap_or_else(|| panic!("no tier t in status --json:\n{text}"))
        .clone()
}

fn string_set(v: &serde_json::Value, what: &str) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what}: {s}"))
                .to_owned()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A deterministic, incompressible-looking generator (xorshift64*).
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

/// A `mib` MiB file of noise, with `marker` written at each of `marker_at` offsets.
fn write_big_file(path: &Path, mib: usize, marker: &[u8], marker_at: &[usize]) {
    let mut data = vec![0u8; mib << 20];
    Noise(0x9e37_79b9_7f4a_7c15).fill(&mut data);
    for &at in marker_at {
        data[at..at + marker.len()].copy_from_slice(marker);
    }
    write(path, &data);
}

/// `mirror ARGS` with extra environment variables.
fn mirror_with_env(env: &Env, vars: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = env.cmd();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run mirror")
}

/// The records of the metadata note of `commit`, each as `<kind> <values> <full path>`.
fn note_lines(env: &Env, commit: &str) -> Vec<String> {
    note_records(env, commit)
        .expect("a metadata note")
        .into_iter()
        .map(|(kind, values, path)| format!("{kind} {values} {}", String::from_utf8_lossy(&path)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// point 1: treasure patterns

/// Files for the default patterns: (tier-relative path, content, treasure?).
const DEFAULT_CASES: &[(&str, &str, bool)] = &[
    (".hidden/deep/x.rs", "fn hidden() {}\n", true),
    ("notes.hidden.md", "hidden notes\n", true),
    ("src/the-impossible-one.rs", "fn impossible() {}\n", true),
    ("btfo", "btfo plan\n", true),
    ("self-destruction/a/b.txt", "boom\n", true),
    ("src/main.rs", "fn main() {}\n", false),
    ("hidden/x", "not hidden: no dot\n", false),
    ("possible.txt", "possible\n", false),
    ("btf.txt", "close, but no\n", false),
];

#[test]
fn default_patterns_mark_components_and_everything_below_a_matched_directory() {
    let env = Env::new();
    for (path, content, _) in DEFAULT_CASES {
        env.write(&format!("tier-0/{path}"), content);
    }
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let head = must_tip(&env, "t");

    let treasures: Vec<_> = DEFAULT_CASES.iter().filter(|c| c.2).collect();
    let expected: BTreeSet<String> = treasures
        .iter()
        .map(|(p, _, _)| format!("tier-0/{p}"))
        .collect();

    // status --json lists exactly the treasure files, project-relative.
    let st = status_json(&env);
    assert_eq!(string_set(&st["critical"], "critical"), expected);
    assert_eq!(
        string_set(&st["critical_missing"], "critical_missing"),
        set(&[])
    );

    // status and log text show the count; log --json and the commit trailer carry it.
    let text = env.ok(&["status"]);
    let line = text.lines().find(|l| l.starts_with("t ")).unwrap_or(&text);
    assert!(
        line.contains("5 critical"),
        "status line lacks '5 critical':\n{text}"
    );
    let log = env.ok(&["log"]);
    assert!(log.contains("5 critical"), "log lacks '5 critical':\n{log}");
    let log_json: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    assert_eq!(log_json[0]["critical"], 5, "log --json: {log_json}");
    let message = shadow_git_ok(&env, &["log", "-1", "--format=%B", &head]);
    assert!(
        message.lines().any(|l| l == "Mirror-Critical: 5"),
        "no 'Mirror-Critical: 5' trailer:\n{message}"
    );

    // Treasure blobs are age ciphertext (decryptable with the identity); the others are
    // plaintext; the note names each encrypted file with its plaintext size.
    let records = note_lines(&env, &head);
    for (path, content, treasure) in DEFAULT_CASES {
        let data = stored(&env, &head, path);
        if *treasure {
            assert!(
                data.starts_with(AGE_MAGIC),
                "{path}: blob is not age ciphertext: {:?}",
                String::from_utf8_lossy(&data[..data.len().min(60)])
            );
            assert!(
                data.find(content.as_bytes()).is_none(),
                "{path}: plaintext inside the ciphertext blob"
            );
            assert_eq!(
                age_decrypt_with(&identity_file(&env), &data),
                content.as_bytes()
            );
            let record = format!("e {} {path}", content.len());
            assert!(
                records.contains(&record),
                "note lacks {record:?}: {records:?}"
            );
        } else {
            assert_eq!(data, content.as_bytes(), "{path}: not stored as plaintext");
            assert!(
                !records
                    .iter()
                    .any(|r| r.starts_with("e ") && r.ends_with(path)),
                "{path} marked encrypted in the note: {records:?}"
            );
        }
    }

    // A treasure gone from disk is reported as a missing critical file.
    std::fs::remove_file(env.path("tier-0/btfo")).unwrap();
    let st = status_json(&env);
    assert_eq!(
        string_set(&st["critical_missing"], "critical_missing"),
        set(&["tier-0/btfo"])
    );
    assert!(!string_set(&st["critical"], "critical").contains("tier-0/btfo"));
    let text = env.ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l == "  ! tier-0/btfo (critical file missing)"),
        "status does not list the missing critical file:\n{text}"
    );
    assert!(
        text.contains("4 critical"),
        "status after the loss:\n{text}"
    );
}

#[test]
fn custom_patterns_with_negation_replace_the_defaults() {
    let env = Env::new();
    let cases: &[(&str, bool)] = &[
        ("secrets/a.txt", true),
        ("nested/secrets/deeper/b.txt", true),
        ("x.key", true),
        ("sub/y.key", true),
        ("public.key", false),
        ("sub/public.key", false),
        ("top-only.txt", true),
        ("sub/top-only.txt", false),
        (".hidden/z", false),
        ("impossible.rs", false),
        ("plain.txt", false),
    ];
    for (path, _) in cases {
        env.write(&format!("tier-0/{path}"), format!("content of {path}\n"));
    }
    env.init(&["t=tier-0"]);
    set_treasures(
        &env,
        &["secrets/", "*.key", "!public.key", "/tier-0/top-only.txt"],
    );
    env.ok(&["snapshot"]);
    let head = must_tip(&env, "t");

    let expected: BTreeSet<String> = cases
        .iter()
        .filter(|c| c.1)
        .map(|(p, _)| format!("tier-0/{p}"))
        .collect();
    assert_eq!(
        string_set(&status_json(&env)["critical"], "critical"),
        expected
    );
    for (path, treasure) in cases {
        let data = stored(&env, &head, path);
        assert_eq!(
            data.starts_with(AGE_MAGIC),
            *treasure,
            "{path}: encrypted = {}, expected {treasure}",
            data.starts_with(AGE_MAGIC)
        );
        if !treasure {
            assert_eq!(data, format!("content of {path}\n").as_bytes());
        }
    }
    let message = shadow_git_ok(&env, &["log", "-1", "--format=%B", &head]);
    assert!(
        message.lines().any(|l| l == "Mirror-Critical: 5"),
        "no 'Mirror-Critical: 5' trailer:\n{message}"
    );
}

#[test]
fn empty_treasure_list_disables_treasures_and_encryption() {
    let env = Env::new();
    env.write("tier-0/.hidden/x", "hidden but not a treasure now\n");
    env.write("tier-0/impossible.rs", "fn f() {}\n");
    env.init(&["t=tier-0"]);
    set_treasures(&env, &[]);
    env.ok(&["snapshot"]);
    let head = must_tip(&env, "t");
    assert_eq!(
        stored(&env, &head, ".hidden/x"),
        b"hidden but not a treasure now\n"
    );
    assert_eq!(stored(&env, &head, "impossible.rs"), b"fn f() {}\n");
    assert!(age_blobs(&env).is_empty(), "age blobs with treasures: []");

    let st = status_json(&env);
    assert_eq!(string_set(&st["critical"], "critical"), set(&[]));
    assert_eq!(st["plaintext_history"], serde_json::json!([]));
    let log_json: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    let critical = &log_json[0]["critical"];
    assert!(
        critical.is_null() || *critical == 0,
        "log --json critical with treasures: [] is {critical}"
    );
    let log = env.ok(&["log"]);
    assert!(
        !log.contains("critical"),
        "log shows critical files:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// point 3: refusal without recipients

#[test]
fn snapshot_without_recipients_refuses_treasures_and_never_falls_back_to_plaintext() {
    let env = Env::new();
    let marker = random_marker();
    env.write("tier-0/plain.txt", "plain\n");
    init_without_encryption(&env);

    // No treasure file: nothing to encrypt, the snapshot is fine.
    env.ok(&["snapshot"]);
    let first = must_tip(&env, "t");

    env.write("tier-0/.hidden/secret.txt", format!("{marker}\n"));
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 1, "snapshot with a treasure and no recipients");
    assert!(
        stderr(&out).contains(REFUSAL),
        "stderr lacks the refusal message:\n{}",
        stderr(&out)
    );
    assert_eq!(
        tip(&env, "t").as_deref(),
        Some(first.as_str()),
        "a commit was made"
    );
    for (id, kind, content) in all_objects(&env) {
        assert!(
            content.find(marker.as_bytes()).is_none(),
            "{kind} {id} holds the treasure's plaintext"
        );
    }
    // status still works and lists it as critical.
    assert_eq!(
        string_set(&status_json(&env)["critical"], "critical"),
        set(&["tier-0/.hidden/secret.txt"])
    );

    // `treasures: []` is the documented way out: then it is recorded as a plain file.
    set_treasures(&env, &[]);
    env.ok(&["snapshot"]);
    let head = must_tip(&env, "t");
    assert_ne!(head, first);
    assert_eq!(
        stored(&env, &head, ".hidden/secret.txt"),
        format!("{marker}\n").as_bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// point 3: no plaintext, nor an unkeyed hash of it, anywhere in the shadow

#[test]
fn no_trace_of_treasure_plaintext_or_its_hashes_anywhere_in_the_shadow() {
    let env = Env::new();
    let marker = random_marker();
    let m = marker.as_bytes();
    env.write(
        "tier-0/.hidden/notes.txt",
        format!("secret notes\n{marker}\nmore\n"),
    );
    env.write("tier-0/src/impossible.rs", &marker); // nothing but the marker
    env.write("tier-0/btfo", format!("{marker}\n"));
    // > 8 MiB: the streaming path. Markers at the start, across the 8 MiB boundary, at the end.
    let big = env.path("tier-0/destruction/big.bin");
    let size = 9 << 20;
    write_big_file(&big, 9, m, &[0, (8 << 20) - 16, 5_000_000, size - m.len()]);
    env.write("tier-0/plain.txt", "nothing secret here\n");
    env.init(&["t=tier-0"]);

    let treasure_paths = [
        "tier-0/.hidden/notes.txt",
        "tier-0/src/impossible.rs",
        "tier-0/btfo",
        "tier-0/destruction/big.bin",
    ];
    let mut needles: Vec<(String, Vec<u8>)> = vec![("the marker".into(), m.to_vec())];
    for p in treasure_paths {
        needles.extend(plaintext_hashes(&env, &env.path(p)));
    }

    env.ok(&["snapshot"]);
    let first = must_tip(&env, "t");
    // Change one treasure file; its new plaintext must not leak either.
    env.write(
        "tier-0/.hidden/notes.txt",
        format!("changed notes\n{marker}\n{marker}\n"),
    );
    needles.extend(plaintext_hashes(
        &env,
        &env.path("tier-0/.hidden/notes.txt"),
    ));
    env.ok(&["snapshot", "-m", "second"]);
    assert_eq!(commit_count(&env, "t"), 2);

    // Checkout the first snapshot in place, and the latest into a directory.
    env.ok(&["checkout", &first]);
    assert_eq!(
        env.read("tier-0/.hidden/notes.txt"),
        format!("secret notes\n{marker}\nmore\n").as_bytes()
    );
    let out_dir = env.root().join("restored");
    env.ok(&["checkout", "latest", "--to", out_dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out_dir.join("tier-0/.hidden/notes.txt")).unwrap(),
        format!("changed notes\n{marker}\n{marker}\n").as_bytes()
    );
    // Tag (which snapshots the checked-out state first), status, log, diff.
    env.ok(&["tag", "milestone-1", "-m", "a milestone"]);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["log"],
        &["log", "--json"],
        &["log", "--audit"],
        &["diff"],
    ] {
        let out = env.ok(args);
        assert!(
            !out.contains(&marker),
            "`mirror {}` printed the marker",
            args.join(" ")
        );
    }

    // Every object, decompressed.
    let objects = all_objects(&env);
    assert!(
        objects
            .iter()
            .any(|(_, kind, c)| kind == "blob" && c.starts_with(AGE_MAGIC) && c.len() > size),
        "no age blob of the big file"
    );
    // Controls: the scan does find what is there — the plain file's content and its git blob
    // id (inside a tree object), and file names in the stat cache.
    let plain_hashes = plaintext_hashes(&env, &env.path("tier-0/plain.txt"));
    let plain_raw_id = &plain_hashes
        .iter()
        .find(|(w, _)| w.starts_with("raw git blob id"))
        .unwrap()
        .1;
    assert!(objects
        .iter()
        .any(|(_, k, c)| k == "blob" && c.as_slice() == b"nothing secret here\n"));
    assert!(objects
        .iter()
        .any(|(_, k, c)| k == "tree" && c.find(plain_raw_id).is_some()));
    for (id, kind, content) in &objects {
        for (what, needle) in &needles {
            assert!(
                content.find(needle).is_none(),
                "{kind} {id} contains the {what}"
            );
        }
    }
    // Every file under the shadow directory, raw: stat caches, audit-seen, packs, logs, ...
    let files = files_under(&env.shadow);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(env.shadow.join("mirror/cache"))),
        "no stat cache under {}: {files:?}",
        env.shadow.display()
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(env.shadow.join("mirror/cache"))
                && std::fs::read(f).unwrap().find(b"big.bin").is_some()),
        "no stat cache naming big.bin"
    );
    for file in &files {
        let data = std::fs::read(file).unwrap();
        for (what, needle) in &needles {
            assert!(
                data.find(needle).is_none(),
                "{} contains the {what}",
                file.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// point 4: no churn

fn churn_project(env: &Env) {
    env.write("tier-0/.hidden/a.txt", "treasure a\n");
    env.write("tier-0/.hidden/b.txt", "treasure b\n");
    env.write("tier-0/impossible/c.txt", "treasure c\n");
    env.write("tier-0/.hidden/empty", "");
    env.write("tier-0/plain.txt", "plain\n");
    env.init(&["t=tier-0"]);
}

fn clear_stat_caches(env: &Env) {
    let dir = env.shadow.join("mirror/cache");
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
        removed += 1;
    }
    assert!(removed > 0, "no stat cache in {}", dir.display());
}

/// Snapshot, and require it recorded nothing new.
fn snapshot_unchanged(env: &Env, head: &str, ages: &BTreeSet<String>, when: &str) {
    let out = env.mirror(&["snapshot", "--json"]);
    assert_exit(&out, 0, &format!("snapshot ({when})"));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["outcome"], "unchanged", "{when}: {v}");
    assert_eq!(must_tip(env, "t"), head, "{when}: a new commit was made");
    assert_eq!(&age_blobs(env), ages, "{when}: new age blobs were written");
}

#[test]
fn unchanged_tree_with_treasures_makes_no_new_commit() {
    let env = Env::new();
    churn_project(&env);
    env.ok(&["snapshot"]);
    let head = must_tip(&env, "t");
    let ages = age_blobs(&env);
    assert!(ages.len() >= 3, "treasures not encrypted: {ages:?}");

    // At once: the files were written within the same second (racy stat cache entries).
    snapshot_unchanged(&env, &head, &ages, "right after");
    // Past the racy window, the entries are re-checked and trusted.
    std::thread::sleep(Duration::from_millis(1100));
    snapshot_unchanged(&env, &head, &ages, "after a second");
    // Without the stat cache, content has to be compared another way.
    clear_stat_caches(&env);
    snapshot_unchanged(&env, &head, &ages, "without the stat cache");
    clear_stat_caches(&env);
    let st = status_json(&env);
    assert_eq!(
        st["changes"],
        serde_json::json!([]),
        "status without cache: {st}"
    );
    snapshot_unchanged(&env, &head, &ages, "after status without the stat cache");
    assert_eq!(commit_count(&env, "t"), 1);
}

#[test]
fn changing_one_treasure_adds_exactly_one_age_blob() {
    let env = Env::new();
    churn_project(&env);
    env.ok(&["snapshot"]);
    let first = must_tip(&env, "t");
    let ages0 = age_blobs(&env);
    let blobs0 = blobs_of(&env, &first);

    env.write("tier-0/.hidden/b.txt", "treasure b, changed\n");
    env.ok(&["snapshot"]);
    let second = must_tip(&env, "t");
    assert_eq!(commit_count(&env, "t"), 2);
    let ages1 = age_blobs(&env);
    let new: Vec<_> = ages1.difference(&ages0).cloned().collect();
    assert_eq!(new.len(), 1, "one treasure changed, new age blobs: {new:?}");
    assert!(ages0.is_subset(&ages1));
    let blobs1 = blobs_of(&env, &second);
    assert_eq!(blobs1[".hidden/b.txt"], new[0]);
    for path in [
        ".hidden/a.txt",
        "impossible/c.txt",
        ".hidden/empty",
        "plain.txt",
    ] {
        assert_eq!(blobs1[path], blobs0[path], "{path} was stored anew");
    }

    // Again without the stat cache: the unchanged treasures must still not be re-encrypted.
    clear_stat_caches(&env);
    env.write("tier-0/impossible/c.txt", "treasure c, changed too\n");
    env.ok(&["snapshot"]);
    let third = must_tip(&env, "t");
    assert_eq!(commit_count(&env, "t"), 3);
    let ages2 = age_blobs(&env);
    let new: Vec<_> = ages2.difference(&ages1).cloned().collect();
    assert_eq!(
        new.len(),
        1,
        "one treasure changed (no cache), new age blobs: {new:?}"
    );
    let blobs2 = blobs_of(&env, &third);
    assert_eq!(blobs2["impossible/c.txt"], new[0]);
    for path in [
        ".hidden/a.txt",
        ".hidden/b.txt",
        ".hidden/empty",
        "plain.txt",
    ] {
        assert_eq!(
            blobs2[path], blobs1[path],
            "{path} was stored anew (no cache)"
        );
    }
}

#[test]
fn without_identity_an_undecidable_treasure_is_encrypted_again_never_stored_plain() {
    let env = Env::new();
    churn_project(&env);
    env.ok(&["snapshot"]);
    let first = must_tip(&env, "t");
    let ages = age_blobs(&env);
    // No stat cache and no identity: mirror cannot tell whether the treasures changed.
    clear_stat_caches(&env);
    let nowhere = env.root().join("no-such-identity.txt");
    let out = mirror_with_env(&env, &[("MIRROR_IDENTITY", &nowhere)], &["snapshot"]);
    assert_exit(&out, 0, "snapshot without identity or stat cache");
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains(".hidden/a.txt"),
        "no warning naming the re-encrypted treasure:\n{err}"
    );
    let head = must_tip(&env, "t");
    let blobs = blobs_of(&env, &head);
    assert_eq!(blobs["plain.txt"], blobs_of(&env, &first)["plain.txt"]);
    for (path, content) in [
        (".hidden/a.txt", "treasure a\n"),
        (".hidden/b.txt", "treasure b\n"),
        ("impossible/c.txt", "treasure c\n"),
    ] {
        let data = blob(&env, &blobs[path]);
        assert!(
            data.starts_with(AGE_MAGIC),
            "{path} stored without encryption"
        );
        assert_eq!(
            age_decrypt_with(&identity_file(&env), &data),
            content.as_bytes()
        );
    }
    assert!(ages.is_subset(&age_blobs(&env)));
    // With the identity back (and the cache rebuilt), nothing churns.
    snapshot_unchanged(&env, &head, &age_blobs(&env), "identity back");
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    filetime::set_file_mtime(path, filetime::FileTime::from_unix_time(secs, nanos)).unwrap();
}

#[test]
fn mtime_only_change_of_a_treasure_records_a_commit_but_no_new_ciphertext() {
    let env = Env::new();
    churn_project(&env);
    env.ok(&["snapshot"]);
    let first = must_tip(&env, "t");
    let ages = age_blobs(&env);
    set_mtime(&env.path("tier-0/.hidden/a.txt"), 1_600_000_000, 0);
    clear_stat_caches(&env);
    env.ok(&["snapshot"]);
    let second = must_tip(&env, "t");
    assert_ne!(second, first, "an mtime change is recorded (in the note)");
    assert_eq!(
        age_blobs(&env),
        ages,
        "an mtime change re-encrypted a treasure"
    );
    assert_eq!(blobs_of(&env, &second), blobs_of(&env, &first));
    let records = note_lines(&env, &second);
    assert!(
        records.contains(&"m 1600000000 0 .hidden/a.txt".to_owned()),
        "new mtime not in the note: {records:?}"
    );
}

#[test]
fn same_size_rewrite_of_a_treasure_with_restored_mtime_is_detected() {
    let env = Env::new();
    env.write("tier-0/.hidden/racy.txt", "AAAAAAAA");
    env.write("tier-0/plain.txt", "plain\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let first = must_tip(&env, "t");
    let ages = age_blobs(&env);
    let path = env.path("tier-0/.hidden/racy.txt");
    let md = path.metadata().unwrap();
    // Immediately: same size, different content, mtime put back.
    std::fs::write(&path, "BBBBBBBB").unwrap();
    filetime::set_file_mtime(&path, filetime::FileTime::from_last_modification_time(&md)).unwrap();

    let st = status_json(&env);
    assert_eq!(
        st["changes"],
        serde_json::json!([{"status": "M", "path": "tier-0/.hidden/racy.txt"}]),
        "status missed the racy rewrite: {st}"
    );
    env.ok(&["snapshot"]);
    let second = must_tip(&env, "t");
    assert_ne!(second, first, "racy rewrite of a treasure not recorded");
    let new: Vec<_> = age_blobs(&env).difference(&ages).cloned().collect();
    assert_eq!(new.len(), 1, "new age blobs: {new:?}");
    assert_eq!(blob_id(&env, &second, ".hidden/racy.txt"), new[0]);
    assert_eq!(
        age_decrypt_with(&identity_file(&env), &blob(&env, &new[0])),
        b"BBBBBBBB"
    );
}

// ---------------------------------------------------------------------------------------------
// point 5: checkout decrypts

#[test]
fn checkout_restores_treasures_byte_identical_with_modes_in_place_and_to_dir() {
    let env = Env::new();
    env.write("tier-0/.hidden/empty", "");
    env.write("tier-0/.hidden/small.txt", "a small secret\n");
    chmod(&env.path("tier-0/.hidden/small.txt"), 0o600);
    let big = env.path("tier-0/impossible/big.bin");
    write_big_file(&big, 20, b"", &[]);
    chmod(&big, 0o755);
    env.write("tier-0/plain.txt", "plain\n");
    env.init(&["t=tier-0"]);
    let before = tree(&env.path("tier-0"), &[]);
    env.ok(&["snapshot"]);
    let head = must_tip(&env, "t");
    for path in [".hidden/small.txt", "impossible/big.bin"] {
        assert!(
            stored(&env, &head, path).starts_with(AGE_MAGIC),
            "{path} not encrypted"
        );
    }

    std::fs::remove_dir_all(env.path("tier-0")).unwrap();
    env.ok(&["checkout", "latest"]);
    let after = tree(&env.path("tier-0"), &[]);
    for (path, node) in &before {
        assert_eq!(
            after.get(path),
            Some(node),
            "{} differs after checkout",
            String::from_utf8_lossy(path)
        );
    }
    assert_eq!(after, before);

    let out_dir = env.root().join("restored");
    env.ok(&["checkout", "latest", "--to", out_dir.to_str().unwrap()]);
    assert_eq!(tree(&out_dir.join("tier-0"), &[]), before);
}

/// A snapshot with three treasure files, then all three changed or deleted on disk (so the
/// checkout must decrypt each), a plain file changed and a new file added. Returns the
/// snapshot's id.
fn diverged_project(env: &Env) -> String {
    env.write("tier-0/.hidden/a.txt", "treasure a\n");
    env.write("tier-0/impossible.txt", "treasure i\n");
    env.write("tier-0/deep/btfo/x.txt", "treasure x\n");
    env.write("tier-0/plain.txt", "plain\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let first = must_tip(env, "t");
    env.write("tier-0/.hidden/a.txt", "treasure a, longer now\n");
    std::fs::remove_file(env.path("tier-0/impossible.txt")).unwrap();
    env.write("tier-0/deep/btfo/x.txt", "treasure x, longer now\n");
    env.write("tier-0/plain.txt", "plain, changed\n");
    env.write("tier-0/new.txt", "new\n");
    first
}

const ENCRYPTED: [&str; 3] = [".hidden/a.txt", "impossible.txt", "btfo/x.txt"];

fn assert_refused_untouched(env: &Env, out: &Output, before: &BTreeMap<Vec<u8>, Node>, what: &str) {
    assert_exit(out, 1, what);
    let err = stderr(out);
    for path in ENCRYPTED {
        assert!(
            err.contains(path),
            "{what}: stderr does not name {path}:\n{err}"
        );
    }
    assert_eq!(
        &tree(&env.project, &[]),
        before,
        "{what}: the work tree was changed"
    );
}

#[test]
fn checkout_without_identity_fails_naming_encrypted_paths_and_changes_nothing() {
    let env = Env::new();
    let first = diverged_project(&env);
    let before = tree(&env.project, &[]);

    let nowhere = env.root().join("no-such-identity.txt");
    let out = mirror_with_env(
        &env,
        &[("MIRROR_IDENTITY", &nowhere)],
        &["checkout", &first],
    );
    assert_refused_untouched(&env, &out, &before, "checkout with MIRROR_IDENTITY missing");

    // The default identity deleted (moved away).
    let id = identity_file(&env);
    std::fs::rename(&id, env.root().join("identity.bak")).unwrap();
    let out = env.mirror(&["checkout", &first]);
    assert_refused_untouched(&env, &out, &before, "checkout without the default identity");

    // Paths that hold no encrypted file need no identity.
    let out = env.mirror(&["checkout", &first, "--", "tier-0/plain.txt"]);
    assert_exit(&out, 0, "checkout of a plain path without identity");
    assert_eq!(env.read("tier-0/plain.txt"), b"plain\n");
    assert_eq!(
        env.read("tier-0/.hidden/a.txt"),
        b"treasure a, longer now\n"
    );
    let before = tree(&env.project, &[]);

    // Also into a directory: nothing is written there either.
    let out_dir = env.root().join("restored");
    let out = env.mirror(&["checkout", &first, "--to", out_dir.to_str().unwrap()]);
    assert_exit(&out, 1, "checkout --to without identity");
    assert_eq!(
        tree(&env.project, &[]),
        before,
        "checkout --to changed the project"
    );
    assert!(
        !out_dir.join("tier-0/.hidden/a.txt").exists()
            && !out_dir.join("tier-0/plain.txt").exists(),
        "checkout --to wrote files without an identity"
    );
}

#[test]
fn checkout_with_wrong_identity_fails_naming_encrypted_paths_and_changes_nothing() {
    let env = Env::new();
    let first = diverged_project(&env);
    let other = env.root().join("other.txt");
    let recipient = env.ok(&["key", "generate", "--out", other.to_str().unwrap()]);
    assert!(
        recipient.trim().starts_with("age1"),
        "key generate: {recipient}"
    );
    let before = tree(&env.project, &[]);

    let out = env.mirror(&["--identity", other.to_str().unwrap(), "checkout", &first]);
    assert_refused_untouched(&env, &out, &before, "checkout --identity other.txt");

    let out = mirror_with_env(&env, &[("MIRROR_IDENTITY", &other)], &["checkout", &first]);
    assert_refused_untouched(
        &env,
        &out,
        &before,
        "checkout with MIRROR_IDENTITY=other.txt",
    );

    // The right identity still works afterwards and restores everything.
    env.ok(&["checkout", &first]);
    assert_eq!(env.read("tier-0/.hidden/a.txt"), b"treasure a\n");
    assert_eq!(env.read("tier-0/impossible.txt"), b"treasure i\n");
    assert_eq!(env.read("tier-0/deep/btfo/x.txt"), b"treasure x\n");
    assert_eq!(env.read("tier-0/plain.txt"), b"plain\n");
    assert!(!env.path("tier-0/new.txt").exists());
}

#[test]
fn skip_encrypted_restores_everything_else_lists_the_skipped_and_exits_3() {
    let env = Env::new();
    let first = diverged_project(&env);
    let treasures_before: Vec<_> = ["tier-0/.hidden/a.txt", "tier-0/deep/btfo/x.txt"]
        .iter()
        .map(|p| (p.to_string(), env.read(p)))
        .collect();
    let nowhere = env.root().join("no-such-identity.txt");
    let out = mirror_with_env(
        &env,
        &[("MIRROR_IDENTITY", &nowhere)],
        &["checkout", &first, "--skip-encrypted"],
    );
    assert_exit(&out, 3, "checkout --skip-encrypted without identity");
    let err = stderr(&out);
    for path in ENCRYPTED {
        assert!(
            err.contains(path),
            "stderr does not list skipped {path}:\n{err}"
        );
    }
    // Everything else is restored.
    assert_eq!(env.read("tier-0/plain.txt"), b"plain\n");
    assert!(!env.path("tier-0/new.txt").exists(), "new file not removed");
    // The treasures are left as they were.
    for (path, content) in treasures_before {
        assert_eq!(env.read(&path), content, "{path} was touched");
    }
    assert!(!env.path("tier-0/impossible.txt").exists());
}

// ---------------------------------------------------------------------------------------------
// point 6: late treasures

#[test]
fn late_treasure_is_encrypted_from_the_next_snapshot_and_status_names_plaintext_history() {
    let env = Env::new();
    let marker = random_marker();
    env.write("tier-0/creds.txt", format!("{marker}\n"));
    env.write("tier-0/plain.txt", "one\n");
    env.init(&["t=tier-0"]);
    set_treasures(&env, &[]);
    env.ok(&["snapshot"]);
    let a = must_tip(&env, "t");
    env.write("tier-0/plain.txt", "two\n");
    env.ok(&["snapshot"]);
    let b = must_tip(&env, "t");
    assert_eq!(
        stored(&env, &b, "creds.txt"),
        format!("{marker}\n").as_bytes()
    );

    set_treasures(&env, &["creds.txt"]);
    env.ok(&["snapshot"]);
    let c = must_tip(&env, "t");
    assert_ne!(c, b, "no new snapshot after creds.txt became a treasure");
    assert!(
        stored(&env, &c, "creds.txt").starts_with(AGE_MAGIC),
        "creds.txt still plaintext in the snapshot after it became a treasure"
    );
    assert!(stored(&env, &c, "creds.txt")
        .find(marker.as_bytes())
        .is_none());
    assert_eq!(
        blob_id(&env, &c, "plain.txt"),
        blob_id(&env, &b, "plain.txt")
    );
    // And it is not re-encrypted on the next run.
    env.ok(&["snapshot"]);
    assert_eq!(must_tip(&env, "t"), c, "churn after the late treasure");

    let out = env.mirror(&["status"]);
    assert_exit(&out, 0, "status");
    let err = stderr(&out);
    assert!(
        err.contains("creds.txt"),
        "no warning about creds.txt:\n{err}"
    );
    for id in [&a, &b] {
        assert!(
            err.contains(&id[..7]),
            "warning does not name {}:\n{err}",
            &id[..7]
        );
    }
    assert!(
        !err.contains(&c[..7]),
        "warning names the encrypted snapshot:\n{err}"
    );

    let st = status_json(&env);
    assert!(string_set(&st["critical"], "critical").contains("tier-0/creds.txt"));
    let history = st["plaintext_history"]
        .as_array()
        .expect("plaintext_history");
    assert_eq!(history.len(), 1, "plaintext_history: {history:?}");
    assert_eq!(history[0]["path"], "tier-0/creds.txt");
    assert_eq!(
        string_set(&history[0]["snapshots"], "snapshots"),
        set(&[&a, &b])
    );
}

/// Run git with `input` on stdin; require exit 0; return trimmed stdout.
fn shadow_git_stdin(env: &Env, args: &[&str], input: &[u8]) -> String {
    let mut cmd = Command::new("git");
    env.isolate(&mut cmd);
    cmd.current_dir(env.root())
        .arg(format!("--git-dir={}", env.shadow.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn git");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_exit(&out, 0, &format!("git {}", args.join(" ")));
    stdout(&out).trim().to_owned()
}

#[test]
fn corrupt_ciphertext_never_leaves_a_half_written_file_under_its_real_name() {
    let env = Env::new();
    let big = env.path("tier-0/impossible.bin");
    write_big_file(&big, 9, b"", &[]);
    env.write("tier-0/plain.txt", "plain\n");
    env.init(&["t=tier-0"]);
    env.ok(&["snapshot"]);
    let good = must_tip(&env, "t");

    // A copy of that snapshot whose treasure blob has one byte flipped near its end: the
    // header still decrypts, the damage shows only after megabytes were decrypted.
    let mut cipher = stored(&env, &good, "impossible.bin");
    assert!(cipher.starts_with(AGE_MAGIC));
    let at = cipher.len() - 100;
    cipher[at] ^= 0x55;
    let bad_blob = shadow_git_stdin(&env, &["hash-object", "-w", "--stdin"], &cipher);
    let listing = env.shadow_git(&["ls-tree", "-z", &good]);
    assert_exit(&listing, 0, "ls-tree");
    let good_blob = blob_id(&env, &good, "impossible.bin");
    let mut new_listing = Vec::new();
    for rec in listing.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rec = String::from_utf8(rec.to_vec()).unwrap();
        new_listing.extend_from_slice(rec.replace(&good_blob, &bad_blob).as_bytes());
        new_listing.push(0);
    }
    let bad_tree = shadow_git_stdin(&env, &["mktree", "-z"], &new_listing);
    let message = shadow_git_ok(&env, &["log", "-1", "--format=%B", &good]);
    let bad = shadow_git_ok(
        &env,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit-tree",
            &bad_tree,
            "-p",
            &good,
            "-m",
            &message,
        ],
    );
    copy_note(&env, &good, &bad);

    // On disk: another version of the treasure, and a changed plain file.
    write(&big, "the current version\n");
    env.write("tier-0/plain.txt", "plain, changed\n");
    let out = env.mirror(&["checkout", &bad]);
    assert!(
        out.status.code() == Some(1) || out.status.code() == Some(3),
        "checkout of a corrupt blob must fail for it (exit 1 or 3):\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("impossible.bin"),
        "stderr does not name the corrupt file:\n{}",
        stderr(&out)
    );
    assert_eq!(
        env.read("tier-0/impossible.bin"),
        b"the current version\n",
        "the treasure's real name holds something else than before"
    );
    let names: BTreeSet<String> = std::fs::read_dir(env.path("tier-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        set(&["impossible.bin", "plain.txt"]),
        "leftovers in the tier"
    );
    assert_eq!(
        env.read("tier-0/plain.txt"),
        b"plain\n",
        "the rest was not restored"
    );
}

/// A copy of the shadow without `refs/notes/mirror` (e.g. `git clone --bare`, which does not
/// copy notes) must not restore ciphertext as if it were the file: treasures are recognised by
/// their age header, decrypted, and the missing note is reported.
#[test]
fn checkout_of_a_snapshot_without_its_note_still_decrypts_treasures_and_says_so() {
    let env = Env::new();
    env.write("tier-0/.hidden/key.txt", "the key\n");
    env.write("tier-0/plain.txt", "plain\n");
    // A plain file that happens to be an age file stays as it is: it is no treasure.
    let mut own_age = AGE_MAGIC.to_vec();
    own_age.extend_from_slice(b"-> not really\n");
    env.write("tier-0/mine.age", &own_age);
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let out = env.shadow_git(&["update-ref", "-d", "refs/notes/mirror"]);
    assert_exit(&out, 0, "delete the notes ref");

    let dest = env.root().join("out");
    let out = env.mirror(&["checkout", "latest", "--to", dest.to_str().unwrap()]);
    assert_exit(&out, 0, "checkout without a note");
    assert!(
        stderr(&out).contains("no metadata note"),
        "the missing note must be reported: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(dest.join("tier-0/.hidden/key.txt")).unwrap(),
        b"the key\n"
    );
    assert_eq!(
        std::fs::read(dest.join("tier-0/plain.txt")).unwrap(),
        b"plain\n"
    );
    assert_eq!(
        std::fs::read(dest.join("tier-0/mine.age")).unwrap(),
        own_age
    );
}

/// A treasure that cannot be read is carried forward with its recorded size, snapshot after
/// snapshot: its `e` record stays right, it restores, and once readable again it is not
/// re-encrypted.
#[test]
fn unreadable_treasure_keeps_its_recorded_size_across_snapshots() {
    let env = Env::new();
    env.write("tier-0/.hidden/secret", "ten bytes\n");
    env.write("tier-0/a.txt", "1\n");
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let first_blob = blob_id(&env, &tier_ref("tier-0"), ".hidden/secret");
    open_up_for_nobody(&env);
    chmod(&env.path("tier-0/.hidden/secret"), 0o000);
    for round in ["2\n", "3\n"] {
        env.write("tier-0/a.txt", round);
        let out = mirror_unprivileged(&env, &["snapshot"]);
        assert_exit(&out, 3, "snapshot with an unreadable treasure");
        let tip = must_tip(&env, "tier-0");
        assert!(
            note_lines(&env, &tip).contains(&"e 10 .hidden/secret".to_owned()),
            "the carried-forward treasure keeps its plaintext size: {:?}",
            note_lines(&env, &tip)
        );
        assert_eq!(blob_id(&env, &tip, ".hidden/secret"), first_blob);
    }
    chmod(&env.path("tier-0/.hidden/secret"), 0o644);
    env.ok(&["snapshot"]);
    assert_eq!(
        blob_id(&env, &tier_ref("tier-0"), ".hidden/secret"),
        first_blob,
        "readable again and unchanged: the recorded ciphertext is kept"
    );
    let dest = env.root().join("out");
    env.ok(&["checkout", "latest", "--to", dest.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(dest.join("tier-0/.hidden/secret")).unwrap(),
        b"ten bytes\n"
    );
}

/// When the recorded ciphertext cannot be decrypted to compare (here: corrupted), the file is
/// still read whole from its start and stored encrypted again, with a warning.
#[test]
fn failed_comparison_still_stores_the_whole_file_encrypted() {
    let env = Env::new();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    env.write("tier-0/.hidden/big", &content);
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let id = blob_id(&env, &tier_ref("tier-0"), ".hidden/big");
    // Rewrite the loose object with one ciphertext byte flipped (valid zlib, wrong content).
    let mut cipher = blob(&env, &id);
    cipher[200_000] ^= 0xff;
    let loose = env.shadow.join("objects").join(&id[..2]).join(&id[2..]);
    let mut raw = format!("blob {}\0", cipher.len()).into_bytes();
    raw.extend_from_slice(&cipher);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&raw).unwrap();
    chmod(&loose, 0o644);
    std::fs::write(&loose, z.finish().unwrap()).unwrap();
    clear_stat_caches(&env);
    set_mtime(&env.path("tier-0/.hidden/big"), 1_600_000_000, 0);

    let out = env.mirror(&["snapshot"]);
    assert_exit(
        &out,
        0,
        "snapshot comparing against a corrupt recorded version",
    );
    assert!(
        stderr(&out).contains("could not compare"),
        "the failed comparison is reported: {}",
        stderr(&out)
    );
    let new_id = blob_id(&env, &tier_ref("tier-0"), ".hidden/big");
    assert_ne!(new_id, id);
    assert_eq!(
        age_decrypt_with(&identity_file(&env), &blob(&env, &new_id)),
        content
    );
}

/// A shadow whose notes ref is gone (as in a `git clone --bare` copy) still recognises its
/// ciphertext by the age header: no treasure is re-encrypted.
#[test]
fn missing_notes_do_not_make_treasures_churn() {
    let env = Env::new();
    env.write("tier-0/.hidden/a", "alpha\n");
    env.write("tier-0/.hidden/b", "beta\n");
    env.init(&["tier-0=tier-0"]);
    env.ok(&["snapshot"]);
    let before = age_blobs(&env);
    assert_eq!(before.len(), 2);
    let out = env.shadow_git(&["update-ref", "-d", "refs/notes/mirror"]);
    assert_exit(&out, 0, "delete the notes ref");
    clear_stat_caches(&env);
    env.ok(&["snapshot"]);
    assert_eq!(age_blobs(&env), before, "no treasure was encrypted again");
}

/// `init --encrypt` on a project whose mirror.yaml already has `encryption:` changes nothing
/// and makes no identity that nothing would be encrypted to.
#[test]
fn init_encrypt_again_leaves_existing_encryption_and_keys_alone() {
    let env = Env::new();
    env.write("tier-0/a.txt", "a\n");
    env.init(&["tier-0=tier-0"]);
    let yaml = env.read("mirror.yaml");
    std::fs::rename(identity_file(&env), env.root().join("moved-identity.txt")).unwrap();
    let out = env.mirror(&["init", "--encrypt"]);
    assert_exit(&out, 0, "init --encrypt again");
    assert!(
        stderr(&out).contains("already has an `encryption:` section"),
        "{}",
        stderr(&out)
    );
    assert!(!identity_file(&env).exists(), "no new identity was made");
    assert_eq!(env.read("mirror.yaml"), yaml);
}
