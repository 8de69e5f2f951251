//! Crashes and write errors (issue 8, points 3 and 4): `mirror snapshot`, `checkout` and `tag`
//! killed with SIGKILL at many points of their work leave a sound shadow repository that the
//! next operation continues from; a stale writer lock of a killed process is taken over with a
//! note; a snapshot that cannot write (file size limit, full filesystem) fails cleanly.

use crate::common::*;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Deterministic incompressible bytes (xorshift64), so a loose object is as large as its file.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

const DIRS: usize = 30;
const FILES_PER_DIR: usize = 100;
const BIG: usize = 20 * 1024 * 1024;
/// Trees of a [`fill`]ed tier: one per small-file directory, `.hidden` and the root.
const TREES: usize = DIRS + 2;

fn small_rel(d: usize, f: usize) -> String {
    format!("t/d{d:02}/f{f:03}.txt")
}

fn small_content(d: usize, f: usize, generation: u64) -> String {
    format!("small file {d}/{f}, generation {generation}\n")
}

/// A tier `t` of 3,000 small files and one treasure file, all with content that depends on
/// `generation` (so every generation is 3,001 new objects), and one incompressible 20 MiB
/// file with content `big_seed`, rewritten only when that changes.
fn fill(env: &Env, generation: u64, big_seed: u64) {
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            env.write(&small_rel(d, f), small_content(d, f, generation));
        }
    }
    env.write("t/.hidden/key.txt", format!("secret {generation}\n"));
    let big = env.path("t/big-0.bin");
    let seed_file = env.root().join("big-seed");
    if std::fs::read_to_string(&seed_file).ok() != Some(big_seed.to_string()) || !big.exists() {
        write(&big, noise(BIG, big_seed));
        std::fs::write(&seed_file, big_seed.to_string()).unwrap();
    }
}

/// A mirror process whose output goes to files (nobody reads pipes while it runs).
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    what: String,
}

fn spawn(env: &Env, args: &[&str], what: &str) -> Running {
    let scratch = env.root().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let out = scratch.join(format!("{what}.stdout"));
    let err = scratch.join(format!("{what}.stderr"));
    let child = env
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("spawn mirror");
    Running {
        child,
        out,
        err,
        what: what.to_owned(),
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// SIGKILL it (if it still runs) and reap it. True when the kill interrupted it; a run
    /// that finished first must have succeeded.
    fn kill9(mut self) -> bool {
        // SAFETY: a signal to our own child, not reaped yet (its pid cannot have been reused).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let status = self.child.wait().unwrap();
        let killed = status.signal() == Some(libc::SIGKILL);
        if !killed {
            let out = Output {
                status,
                stdout: std::fs::read(&self.out).unwrap(),
                stderr: std::fs::read(&self.err).unwrap(),
            };
            assert_exit(
                &out,
                0,
                &format!("{} (finished before the kill)", self.what),
            );
        }
        killed
    }

    /// Kill it as soon as `ready()` holds (checked about every half millisecond); if it
    /// exits first, it was not interrupted.
    fn kill9_when(mut self, mut ready: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while !ready() && !self.exited() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{}: neither finished nor reached the kill point",
                self.what
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        self.kill9()
    }

    /// Kill it `delay` after `started`.
    fn kill9_after(self, started: Instant, delay: Duration) -> bool {
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        self.kill9()
    }
}

/// Every ref under SHADOW/refs (loose files and packed-refs; `*.lock` files are not refs):
/// name -> value as stored.
fn all_refs(env: &Env) -> BTreeMap<String, String> {
    let mut refs = BTreeMap::new();
    if let Ok(packed) = std::fs::read_to_string(env.shadow.join("packed-refs")) {
        for line in packed.lines() {
            if line.starts_with('#') || line.starts_with('^') {
                continue;
            }
            if let Some((oid, name)) = line.split_once(' ') {
                refs.insert(name.to_owned(), oid.to_owned());
            }
        }
    }
    let mut stack = vec![env.shadow.join("refs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_some_and(|x| x == "lock") {
                continue;
            }
            let name = path
                .strip_prefix(&env.shadow)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let value = std::fs::read_to_string(&path).unwrap();
            refs.insert(name, value.trim().to_owned());
        }
    }
    refs
}

/// Every ref points at an existing object of the right kind; every tier tip has its
/// metadata note.
fn assert_refs_resolve(env: &Env, round: &str) {
    let refs = all_refs(env);
    assert!(
        refs.contains_key("refs/heads/tiers/t"),
        "{round}: the tier ref is gone: {refs:?}"
    );
    for (name, value) in &refs {
        assert!(
            value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit()),
            "{round}: ref {name} holds {value:?}, not an object id"
        );
        let out = env.shadow_git(&["cat-file", "-t", value]);
        assert_exit(
            &out,
            0,
            &format!("{round}: ref {name} points at {value}, which must exist"),
        );
        let kind = stdout(&out).trim().to_owned();
        let expected = if name.starts_with("refs/tags/") {
            "tag"
        } else {
            "commit"
        };
        assert_eq!(kind, expected, "{round}: ref {name} points at a {kind}");
        if name.starts_with("refs/heads/tiers/") {
            assert!(
                note_records(env, value).is_some(),
                "{round}: the tip of {name} has no metadata note"
            );
        }
    }
}

/// Everything a crash must leave intact: `git fsck --strict` reports nothing (dangling
/// objects aside), every ref resolves, `mirror verify` is clean.
fn assert_shadow_sound(env: &Env, round: &str) {
    let out = env.shadow_git(&["fsck", "--strict", "--no-dangling", "--no-progress"]);
    assert_exit(&out, 0, &format!("{round}: git fsck --strict"));
    assert!(
        stdout(&out).trim().is_empty() && stderr(&out).trim().is_empty(),
        "{round}: git fsck --strict must report nothing:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_refs_resolve(env, round);
    let out = env.mirror(&["verify"]);
    assert_exit(&out, 0, &format!("{round}: mirror verify"));
    assert!(
        stdout(&out).starts_with("verify: OK"),
        "{round}: verify prints `verify: OK ...`:\n{}",
        stdout(&out)
    );
}

fn tip(env: &Env) -> Option<String> {
    all_refs(env).get("refs/heads/tiers/t").cloned()
}

fn notes_tip(env: &Env) -> Option<String> {
    all_refs(env).get("refs/notes/mirror").cloned()
}

fn show(env: &Env, spec: &str) -> Vec<u8> {
    let out = env.shadow_git(&["cat-file", "blob", spec]);
    assert_exit(&out, 0, &format!("git cat-file blob {spec}"));
    out.stdout
}

/// The tier tip records generation `generation` of [`fill`] with big file `big_seed`.
fn assert_records_generation(env: &Env, generation: u64, big_seed: u64, round: &str) {
    for (d, f) in [(0, 0), (17, 42), (29, 99)] {
        let rel = small_rel(d, f);
        let path = rel.trim_start_matches("t/");
        assert_eq!(
            String::from_utf8_lossy(&show(env, &format!("tiers/t:{path}"))),
            small_content(d, f, generation),
            "{round}: {rel} as recorded"
        );
    }
    assert!(
        show(env, "tiers/t:big-0.bin") == noise(BIG, big_seed),
        "{round}: big-0.bin as recorded is not the one on disk"
    );
    let out = env.shadow_git(&["ls-tree", "-r", "--name-only", "tiers/t"]);
    assert_exit(&out, 0, "ls-tree tiers/t");
    assert_eq!(
        stdout(&out).lines().count(),
        DIRS * FILES_PER_DIR + 2,
        "{round}: every file is recorded"
    );
}

/// Number of loose objects in the shadow (a measure of a writer's progress).
fn loose_count(shadow: &Path) -> usize {
    std::fs::read_dir(shadow.join("objects"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().len() == 2)
        .map(|e| std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0))
        .sum()
}

/// Objects stored, loose and in the packs published so far (a pack counts once its index
/// exists: the index is renamed into place last).
fn object_count(shadow: &Path) -> usize {
    let packed: usize = std::fs::read_dir(shadow.join("objects/pack"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
                .map(|e| {
                    // A v2 index: magic, version, then 256 fan-out counts; the last is the total.
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    bytes
                        .get(8 + 255 * 4..8 + 256 * 4)
                        .map_or(0, |n| u32::from_be_bytes(n.try_into().unwrap()) as usize)
                })
                .sum()
        })
        .unwrap_or(0);
    loose_count(shadow) + packed
}

/// A pack (or its index) being written: a temporary file in SHADOW/objects/pack.
fn pack_being_written(shadow: &Path) -> bool {
    std::fs::read_dir(shadow.join("objects/pack"))
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("tmp_"))
        })
        .unwrap_or(false)
}

/// A temporary object file (a big blob being streamed) in SHADOW/objects.
fn temp_object(shadow: &Path) -> bool {
    let loose = std::fs::read_dir(shadow.join("objects"))
        .unwrap()
        .flatten()
        .any(|e| e.file_type().is_ok_and(|t| t.is_file()));
    // A pack (or its index) being written when the space ran out.
    let pack = std::fs::read_dir(shadow.join("objects/pack"))
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("tmp_"))
        })
        .unwrap_or(false);
    loose || pack
}

/// Paths (relative to `dir`) of checkout temporary files anywhere below `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().as_bytes().starts_with(b".mirror-tmp-") {
                found.push(path.strip_prefix(dir).unwrap().to_owned());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

/// `text` holds `n` as a whole number (not as part of a longer one).
fn mentions_number(text: &str, n: u32) -> bool {
    let n = n.to_string();
    text.match_indices(&n).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + n.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

// ---------------------------------------------------------------------------------------------
// Point 3: crashes
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_killed_at_many_points_leaves_a_sound_shadow_and_the_next_snapshot_records_all() {
    let env = Env::new();
    fill(&env, 0, 1);
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let shadow = env.shadow.clone();
    let new_blobs = DIRS * FILES_PER_DIR + 1;

    // Each round writes a new generation of the tier (3,001 new objects), starts a snapshot,
    // kills it at one point of its work, checks the shadow, and takes the next snapshot, which
    // must record exactly what is on disk.
    type Kill<'a> = Box<dyn FnOnce(Running) -> bool + 'a>;
    let points: Vec<(&str, u64, Kill)> = vec![
        (
            "snapshot killed 15 ms after its start",
            1,
            Box::new(|r: Running| r.kill9_after(Instant::now(), Duration::from_millis(15))),
        ),
        (
            "snapshot killed while a pack is being written",
            1,
            Box::new(|r: Running| r.kill9_when(|| pack_being_written(&shadow))),
        ),
        (
            "snapshot killed after its first new object",
            1,
            Box::new(|r: Running| {
                let before = object_count(&shadow);
                r.kill9_when(|| object_count(&shadow) > before)
            }),
        ),
        (
            "snapshot killed after 1,000 new objects",
            1,
            Box::new(|r: Running| {
                let before = object_count(&shadow);
                r.kill9_when(|| object_count(&shadow) >= before + 1000)
            }),
        ),
        (
            "snapshot killed after 2,900 new objects",
            1,
            Box::new(|r: Running| {
                let before = object_count(&shadow);
                r.kill9_when(|| object_count(&shadow) >= before + 2900)
            }),
        ),
        (
            "snapshot killed once its blobs and trees were written",
            1,
            Box::new(|r: Running| {
                let before = object_count(&shadow);
                r.kill9_when(|| object_count(&shadow) >= before + new_blobs + TREES)
            }),
        ),
        (
            "snapshot killed while streaming a new big file",
            2,
            Box::new(|r: Running| r.kill9_when(|| temp_object(&shadow))),
        ),
        (
            "snapshot killed once its note was written",
            2,
            Box::new(|r: Running| {
                let before = notes_tip(&env);
                r.kill9_when(|| notes_tip(&env) != before)
            }),
        ),
        (
            "snapshot killed once its tier ref moved",
            2,
            Box::new(|r: Running| {
                let before = tip(&env);
                r.kill9_when(|| tip(&env) != before)
            }),
        ),
    ];
    let rounds = points.len();
    let mut interrupted = 0;
    for (i, (label, big_seed, kill)) in points.into_iter().enumerate() {
        let generation = i as u64 + 1;
        fill(&env, generation, big_seed);
        let running = spawn(&env, &["snapshot"], &format!("snapshot{generation}"));
        let killed = kill(running);
        interrupted += killed as usize;
        eprintln!("{label}: interrupted: {killed}");
        assert_shadow_sound(&env, label);
        let out = env.mirror(&["snapshot"]);
        assert_exit(&out, 0, &format!("{label}: the next snapshot"));
        assert_records_generation(&env, generation, big_seed, label);
    }
    assert!(
        // Kill points race the operation; at least half must land (on a quiet machine the
        // late ones can come too late), else the test proved too little.
        interrupted * 2 >= rounds,
        "only {interrupted} of {rounds} snapshots were interrupted: the test proves too little"
    );
    let out = env.ok(&["snapshot"]);
    assert!(out.contains("unchanged"), "{out}");
}

/// State "B" of a checkout round: nine in ten small files deleted, the tenth rewritten, the
/// big file deleted. Returns the files B holds, tier path -> content.
fn scramble(env: &Env, round: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut b = BTreeMap::new();
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            let rel = small_rel(d, f);
            if f % 10 == 0 {
                let content = format!("scrambled {d}/{f} in round {round}\n");
                env.write(&rel, &content);
                b.insert(rel.as_bytes()[2..].to_vec(), content.into_bytes());
            } else {
                std::fs::remove_file(env.path(&rel)).unwrap();
            }
        }
    }
    std::fs::remove_file(env.path("t/big-0.bin")).unwrap();
    b.insert(b".hidden/key.txt".to_vec(), env.read("t/.hidden/key.txt"));
    b
}

/// After a killed checkout, every file under its real name is whole: as in the snapshot being
/// restored, or as it was before.
fn assert_no_torn_files(
    env: &Env,
    expected: &BTreeMap<Vec<u8>, Node>,
    before: &BTreeMap<Vec<u8>, Vec<u8>>,
    round: &str,
) {
    for (path, node) in tree(&env.path("t"), &[]) {
        let name = path.rsplit(|b| *b == b'/').next().unwrap();
        if name.starts_with(b".mirror-tmp-") {
            continue;
        }
        let Node::File { content, .. } = node else {
            continue;
        };
        let as_target =
            matches!(expected.get(&path), Some(Node::File { content: c, .. }) if *c == content);
        let as_before = before.get(&path) == Some(&content);
        assert!(
            as_target || as_before,
            "{round}: {} is torn ({} bytes, neither the restored nor the old content)",
            String::from_utf8_lossy(&path),
            content.len()
        );
    }
}

#[test]
fn checkout_killed_at_many_points_is_completed_by_running_it_again() {
    let env = Env::new();
    fill(&env, 0, 1);
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let target = tip(&env).unwrap();
    let expected = tree(&env.path("t"), &[]);
    let tier = env.path("t");

    // Each round: scramble the tier, start a checkout of the snapshot, kill it at one point,
    // check the shadow, and run the same checkout again to the end: the tier is exactly the
    // snapshot again. With a commit id, the next operation (a snapshot of the half-restored
    // tier) comes before the rerun; with `latest`, after it (it would be the newest snapshot).
    let mut interrupted = 0;
    let mut rounds = 0;
    let mut saw_temp = false;
    for round_no in 1..=7u64 {
        let latest = round_no >= 6;
        let (rev, shown) = if latest {
            // The newest snapshot is the target state again (the tier holds it now).
            env.ok(&["snapshot"]);
            ("latest".to_owned(), "latest")
        } else {
            (target.clone(), "COMMIT")
        };
        let before = scramble(&env, round_no);
        let tip_before = tip(&env);
        let running = spawn(&env, &["checkout", &rev], &format!("checkout{round_no}"));
        let started = Instant::now();
        let (label, killed) = match round_no {
            1 => (
                "checkout killed during its pre-checkout snapshot".to_owned(),
                running.kill9_after(started, Duration::from_millis(30)),
            ),
            2 | 6 => (
                format!(
                    "checkout {shown} killed as soon as its pre-checkout snapshot was recorded"
                ),
                running.kill9_when(|| tip(&env) != tip_before),
            ),
            3 => {
                let mut seen = false;
                let killed = running.kill9_when(|| {
                    seen = !temp_files(&tier).is_empty();
                    seen
                });
                saw_temp |= seen && killed;
                (
                    "checkout killed while a temporary file was being written".to_owned(),
                    killed,
                )
            }
            _ => {
                let d = match round_no {
                    4 => 8,
                    5 => 24,
                    _ => 12,
                };
                let probe = env.path(&small_rel(d, 1));
                (
                    format!("checkout {shown} killed once d{d:02} was being restored"),
                    running.kill9_when(|| probe.exists()),
                )
            }
        };
        rounds += 1;
        interrupted += killed as usize;
        eprintln!("{label}: interrupted: {killed}");
        assert_no_torn_files(&env, &expected, &before, &label);
        assert_shadow_sound(&env, &label);
        if !latest {
            let out = env.mirror(&["snapshot"]);
            assert_exit(&out, 0, &format!("{label}: the next snapshot"));
        }

        let out = env.mirror(&["checkout", &rev]);
        assert_exit(&out, 0, &format!("{label}: the checkout run again"));
        let leftovers = temp_files(&tier);
        assert!(
            leftovers.is_empty(),
            "{label}: temporary files remain after the completing checkout: {leftovers:?}"
        );
        let got = tree(&tier, &[]);
        if got != expected {
            let differ: Vec<_> = expected
                .keys()
                .chain(got.keys())
                .filter(|k| expected.get(*k) != got.get(*k))
                .take(10)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            panic!("{label}: the completed checkout differs from the snapshot at: {differ:?}");
        }
        if latest {
            let out = env.mirror(&["snapshot"]);
            assert_exit(&out, 0, &format!("{label}: the next snapshot"));
        }
        assert_shadow_sound(&env, &format!("{label}, then completed"));
    }
    assert!(
        // Kill points race the operation; at least half must land (on a quiet machine the
        // late ones can come too late), else the test proved too little.
        interrupted * 2 >= rounds,
        "only {interrupted} of {rounds} checkouts were interrupted: the test proves too little"
    );
    assert!(
        saw_temp,
        "no checkout was killed with a temporary file in place"
    );
}

#[test]
fn tag_killed_at_many_points_leaves_a_sound_shadow_and_tagging_works_afterwards() {
    let env = Env::new();
    fill(&env, 0, 1);
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    let shadow = env.shadow.clone();

    // With changes pending, a tag first records a snapshot, then writes its tree, commit and
    // tag object, moves its ref, and appends to the audit trail.
    type Kill<'a> = Box<dyn FnOnce(Running, &str) -> bool + 'a>;
    let points: Vec<(&str, Kill)> = vec![
        (
            "tag killed 15 ms after its start",
            Box::new(|r: Running, _: &str| {
                r.kill9_after(Instant::now(), Duration::from_millis(15))
            }),
        ),
        (
            "tag killed while its snapshot writes objects",
            Box::new(|r: Running, _: &str| {
                let before = loose_count(&shadow);
                r.kill9_when(|| loose_count(&shadow) >= before + 1000)
            }),
        ),
        (
            "tag killed as soon as its snapshot was recorded",
            Box::new(|r: Running, _: &str| {
                let before = tip(&env);
                r.kill9_when(|| tip(&env) != before)
            }),
        ),
        (
            "tag killed after its milestone commit was written",
            Box::new(|r: Running, _: &str| {
                let before = tip(&env);
                let mut recorded = None;
                r.kill9_when(|| match recorded {
                    None => {
                        if tip(&env) != before {
                            recorded = Some(loose_count(&shadow));
                        }
                        false
                    }
                    Some(n) => loose_count(&shadow) >= n + 2,
                })
            }),
        ),
        (
            "tag killed once its ref was written (during its audit entry)",
            Box::new(|r: Running, name: &str| {
                let tag_file = shadow.join(format!("refs/tags/{name}"));
                r.kill9_when(|| tag_file.exists())
            }),
        ),
    ];
    let rounds = points.len();
    let mut interrupted = 0;
    for (i, (label, kill)) in points.into_iter().enumerate() {
        let generation = i as u64 + 1;
        fill(&env, generation, 1);
        let name = format!("m{generation}");
        let running = spawn(&env, &["tag", &name, "-m", "milestone"], &name);
        let killed = kill(running, &name);
        interrupted += killed as usize;
        eprintln!("{label}: interrupted: {killed}");
        assert_shadow_sound(&env, label);

        let tag_ref = format!("refs/tags/{name}");
        if all_refs(&env).contains_key(&tag_ref) {
            // The tag made it: it is complete, and it captures a recorded snapshot.
            let out = env.shadow_git(&["rev-parse", &format!("{tag_ref}^{{commit}}^{{tree}}")]);
            assert_exit(
                &out,
                0,
                &format!("{label}: the surviving tag peels to a tree"),
            );
        } else {
            let out = env.mirror(&["tag", &name, "-m", "milestone"]);
            assert_exit(&out, 0, &format!("{label}: the same tag again"));
        }
        // The tag captures exactly what is on disk now.
        let captured = env.shadow_git(&["rev-parse", &format!("{tag_ref}^{{commit}}:t")]);
        let recorded = env.shadow_git(&["rev-parse", "tiers/t^{tree}"]);
        assert_exit(&captured, 0, &format!("{label}: tag tree"));
        assert_eq!(
            stdout(&captured),
            stdout(&recorded),
            "{label}: the tag captures the tier's newest snapshot"
        );
        assert_records_generation(&env, generation, 1, label);
        let out = env.mirror(&["snapshot"]);
        assert_exit(&out, 0, &format!("{label}: the next snapshot"));
        assert_shadow_sound(&env, &format!("{label}, then tagged"));
    }
    // The last kill points race steps of a few milliseconds and are often too late on a
    // quiet machine; the first two (15 ms in, mid-snapshot) land reliably. Fewer than two
    // interruptions would mean the test proved nothing about crashes.
    assert!(
        interrupted >= 2,
        "only {interrupted} of {rounds} tags were interrupted: the test proves too little"
    );
    let out = env.ok(&["tags", "--json"]);
    for generation in 1..=rounds {
        assert!(
            out.contains(&format!("\"m{generation}\"")),
            "m{generation} is listed: {out}"
        );
    }
}

#[test]
fn stale_lock_of_a_killed_snapshot_is_taken_over_with_a_note_naming_the_dead_pid() {
    let env = Env::new();
    env.write("t/a", "1\n");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    // A new incompressible 20 MiB file keeps the snapshot busy well after it took the lock.
    let big = noise(BIG, 3);
    env.write("t/big.bin", &big);
    let lock = env.shadow.join("mirror/lock");
    let running = spawn(&env, &["snapshot"], "holder");
    let pid = running.pid();
    let killed = running
        .kill9_when(|| std::fs::read_to_string(&lock).is_ok_and(|s| mentions_number(&s, pid)));
    assert!(killed, "the snapshot finished before it could be killed");

    let started = Instant::now();
    let out = env
        .cmd()
        .arg("snapshot")
        .env("MIRROR_LOCK_TIMEOUT", "30")
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_exit(&out, 0, "snapshot after a killed lock holder");
    assert!(
        took < Duration::from_secs(20),
        "the snapshot waited for the lock timeout ({took:?})"
    );
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("note: ")
            && l.contains("pid ")
            && mentions_number(l, pid)
            && l.contains("is gone")),
        "a note names the dead holder (pid {pid}) and says it is gone:\n{err}"
    );
    assert!(
        show(&env, "tiers/t:big.bin") == big,
        "the snapshot after taking over the lock records big.bin"
    );
    assert_shadow_sound(&env, "after taking over the lock");
}

#[test]
fn a_writer_that_finished_normally_leaves_no_stale_lock_note() {
    let env = Env::new();
    env.write("t/a", "1\n");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    env.write("t/a", "2\n");
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "second snapshot");
    assert!(
        !stderr(&out).contains("is gone"),
        "no stale-lock note after a writer that finished normally:\n{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Point 4: write errors
// ---------------------------------------------------------------------------------------------

/// Refs other than the audit trail (every run, even a failed one, appends to it).
fn refs_but_audit(env: &Env) -> BTreeMap<String, String> {
    let mut refs = all_refs(env);
    refs.remove("refs/mirror/audit");
    refs
}

/// A snapshot that could not write: exit 1 (not killed by a signal), the shadow and the
/// problem named, no ref moved, the repository sound.
fn assert_clean_write_failure(
    env: &Env,
    out: &Output,
    before: &BTreeMap<String, String>,
    problem: &[&str],
    round: &str,
) {
    assert_eq!(
        out.status.signal(),
        None,
        "{round}: mirror was killed by a signal instead of failing with an error"
    );
    assert_exit(out, 1, round);
    let err = stderr(out);
    assert!(
        !temp_object(&env.shadow),
        "{round}: a temporary object file was left in the shadow (holding the space that ran out)"
    );
    let lower = err.to_lowercase();
    assert!(
        err.contains(&env.shadow.display().to_string()),
        "{round}: the message names the shadow repository {}:\n{err}",
        env.shadow.display()
    );
    assert!(
        problem.iter().any(|p| lower.contains(p)),
        "{round}: the message says what went wrong (one of {problem:?}):\n{err}"
    );
    assert_eq!(&refs_but_audit(env), before, "{round}: a ref moved");
    assert_shadow_sound(env, round);
}

#[test]
fn snapshot_over_the_file_size_limit_fails_cleanly_and_the_next_one_records_the_file() {
    let env = Env::new();
    env.write("t/small.txt", "small\n");
    env.write("t/.hidden/key.txt", "secret\n");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);
    // 3 MiB goes through memory, 12 MiB is streamed into the object store: both hit the limit.
    for (name, len) in [("mid.bin", 3usize << 20), ("large.bin", 12 << 20)] {
        let content = noise(len, len as u64);
        env.write(&format!("t/{name}"), &content);
        let round = format!("snapshot of {name} under a 1 MiB file size limit");
        let before = refs_but_audit(&env);
        let mut cmd = Command::new("prlimit");
        env.isolate(&mut cmd);
        let out = cmd
            .current_dir(&env.project)
            .arg("--fsize=1048576")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_mirror"))
            .arg("snapshot")
            .output()
            .expect("prlimit (util-linux)");
        assert_clean_write_failure(&env, &out, &before, &["too large", "write"], &round);

        let out = env.mirror(&["snapshot"]);
        assert_exit(
            &out,
            0,
            &format!("{round}: the next snapshot without the limit"),
        );
        assert!(
            show(&env, &format!("tiers/t:{name}")) == content,
            "{round}: {name} is recorded afterwards"
        );
        assert_shadow_sound(&env, &format!("{round}, then recorded"));
    }
}

/// A filesystem mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn snapshot_into_a_full_filesystem_fails_cleanly_and_succeeds_once_there_is_room() {
    if !is_root() {
        eprintln!("not root: no small tmpfs; the file size limit test covers write errors");
        return;
    }
    let env = Env::new();
    std::fs::create_dir_all(&env.shadow).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&env.shadow)
        .output()
        .expect("mount");
    if !out.status.success() {
        eprintln!(
            "cannot mount a tmpfs here ({}); the file size limit test covers write errors",
            stderr(&out).trim()
        );
        return;
    }
    // Declared after `env`, so dropped (unmounted) before the temporary directory goes.
    let _mount = Mount(env.shadow.clone());
    env.write("t/small.txt", "small\n");
    env.write("t/.hidden/key.txt", "secret\n");
    env.init(&["t=t"]);
    env.ok(&["snapshot"]);

    let content = noise(3 << 20, 7);
    env.write("t/big.bin", &content);
    let before = refs_but_audit(&env);
    let out = env.mirror(&["snapshot"]);
    assert_clean_write_failure(
        &env,
        &out,
        &before,
        &["no space", "write"],
        "snapshot into a full tmpfs",
    );

    let out = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&env.shadow)
        .output()
        .unwrap();
    assert_exit(&out, 0, "remount the tmpfs larger");
    let out = env.mirror(&["snapshot"]);
    assert_exit(&out, 0, "snapshot once there is room");
    assert!(
        show(&env, "tiers/t:big.bin") == content,
        "big.bin is recorded once there is room"
    );
    assert_shadow_sound(&env, "after the full filesystem");
}
