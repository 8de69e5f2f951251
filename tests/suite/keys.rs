//! Keys and recipients (issue 3): `mirror key generate/show/rotate`, `mirror init --encrypt`, the
//! identity lookup order, ssh recipients, passphrase-protected identities (made with the real
//! `age -p` through a pseudo-terminal), and recovery of a treasure file with `git` and `age` alone.

use crate::common::*;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rand::RngCore;

// ---------------------------------------------------------------------------------------------
// helpers

const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

/// The default identity path of the isolated environment (`$XDG_CONFIG_HOME/mirror/identity.txt`).
fn default_identity(env: &Env) -> PathBuf {
    env.home.join("config").join("mirror").join("identity.txt")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// `mirror init --encrypt --shadow SHADOW --tier ...` (explicitly, whatever `Env::init` does).
fn init_encrypted(env: &Env, tiers: &[&str]) -> Output {
    let mut args = vec!["init", "--encrypt", "--shadow", s(&env.shadow)];
    for t in tiers {
        args.push("--tier");
        args.push(t);
    }
    let out = env.mirror(&args);
    assert_exit(&out, 0, "mirror init --encrypt");
    out
}

/// `mirror init` without encryption.
fn init_plain(env: &Env, tiers: &[&str]) {
    let mut args = vec!["init", "--shadow", s(&env.shadow)];
    for t in tiers {
        args.push("--tier");
        args.push(t);
    }
    env.ok(&args);
}

/// Run an external tool (isolated environment), require exit 0, return stdout.
fn tool_ok(env: &Env, program: &str, args: &[&OsStr]) -> Vec<u8> {
    let mut cmd = Command::new(program);
    env.isolate(&mut cmd);
    let out = cmd
        .args(args)
        .current_dir(env.root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert_exit(&out, 0, program);
    out.stdout
}

/// The recipient of an age identity file, as `age-keygen -y` prints it.
fn age_recipient_of(env: &Env, identity: &Path) -> String {
    let out = tool_ok(env, "age-keygen", &["-y".as_ref(), identity.as_os_str()]);
    let r = String::from_utf8(out).unwrap().trim().to_owned();
    assert!(r.starts_with("age1"), "age-keygen -y printed {r:?}");
    r
}

/// A new age identity at `path` (made by the real `age-keygen`); returns its recipient.
fn age_keygen(env: &Env, path: &Path) -> String {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    tool_ok(env, "age-keygen", &["-o".as_ref(), path.as_os_str()]);
    age_recipient_of(env, path)
}

/// A new unencrypted OpenSSH ed25519 key at `path`; returns its public key as a recipient
/// line (`ssh-ed25519 AAAA...`, without the comment).
fn ssh_keygen(env: &Env, path: &Path) -> String {
    tool_ok(
        env,
        "ssh-keygen",
        &[
            "-q".as_ref(),
            "-t".as_ref(),
            "ed25519".as_ref(),
            "-N".as_ref(),
            "".as_ref(),
            "-C".as_ref(),
            "mirror-test".as_ref(),
            "-f".as_ref(),
            path.as_os_str(),
        ],
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let fields: Vec<&str> = public.split_whitespace().collect();
    assert_eq!(fields[0], "ssh-ed25519");
    format!("{} {}", fields[0], fields[1])
}

/// `age -d -i IDENTITY` with `data` on stdin.
fn age_decrypt(env: &Env, identity: &Path, data: &[u8]) -> Output {
    let mut cmd = Command::new("age");
    env.isolate(&mut cmd);
    cmd.args(["-d", "-i"])
        .arg(identity)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    detach_from_terminal(&mut cmd);
    let mut child = cmd.spawn().expect("spawn age");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        // age may stop reading early on a wrong key; a broken pipe is then expected.
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// The parsed `mirror.yaml`.
fn load_config(env: &Env) -> serde_norway::Value {
    let text = std::fs::read_to_string(env.path("mirror.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("mirror.yaml: {e}\n{text}"))
}

/// `encryption.recipients` of mirror.yaml (empty when there is none).
fn config_recipients(env: &Env) -> Vec<String> {
    let config = load_config(env);
    config
        .get("encryption")
        .and_then(|e| e.get("recipients"))
        .and_then(|r| r.as_sequence())
        .map(|seq| {
            seq.iter()
                .map(|v| v.as_str().expect("recipient is a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Replace the `encryption:` section of mirror.yaml.
fn set_encryption(env: &Env, recipients: &[&str], identity: Option<&Path>) {
    let mut config = load_config(env);
    let mut section = serde_norway::Mapping::new();
    section.insert(
        "recipients".into(),
        serde_norway::Value::Sequence(recipients.iter().map(|r| (*r).into()).collect()),
    );
    if let Some(id) = identity {
        section.insert("identity".into(), s(id).into());
    }
    config
        .as_mapping_mut()
        .expect("mirror.yaml is a mapping")
        .insert("encryption".into(), serde_norway::Value::Mapping(section));
    std::fs::write(
        env.path("mirror.yaml"),
        serde_norway::to_string(&config).unwrap(),
    )
    .unwrap();
}

/// Detach a child from any controlling terminal (so a passphrase prompt can never block a test
/// run from a developer's terminal: /dev/tty is then unavailable to it).
fn detach_from_terminal(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// `mirror ARGS` with extra environment variables, without a controlling terminal, killed
/// (and the test failed) if it runs for more than a minute.
fn mirror_with(env: &Env, args: &[&str], vars: &[(&str, &OsStr)]) -> Output {
    let mut cmd = env.cmd();
    cmd.args(args)
        .envs(vars.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    detach_from_terminal(&mut cmd);
    wait_bounded(
        cmd.spawn().expect("spawn mirror"),
        &format!("mirror {}", args.join(" ")),
    )
}

fn wait_bounded(child: std::process::Child, what: &str) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait for child"),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the child is not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{what}: still running after 60 s (waiting for a passphrase?)");
        }
    }
}

/// The python3 to drive pseudo-terminals with (not a pyenv shim: HOME is isolated).
fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Runs ARGV with a fresh pseudo-terminal as its controlling terminal and stdin (stdout and
/// stderr stay the caller's), answers every prompt mentioning "passphrase" with
/// $PTY_PASSPHRASE, writes what the terminal showed to $PTY_TRANSCRIPT and exits with the
/// child's status (124 after $PTY_TIMEOUT seconds, the child killed).
const PTY_HELPER: &str = r#"
import os, sys, select, time, signal, fcntl, termios
pw = os.environ.pop("PTY_PASSPHRASE").encode()
limit = float(os.environ.pop("PTY_TIMEOUT", "30"))
transcript_path = os.environ.pop("PTY_TRANSCRIPT")
argv = sys.argv[1:]
master, slave = os.openpty()
pid = os.fork()
if pid == 0:
    try:
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        os.dup2(slave, 0)
        if slave > 2:
            os.close(slave)
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
os.close(slave)
deadline = time.monotonic() + limit
buf = b""
pos = 0
answers = 0
status = None

def write_transcript():
    open(transcript_path, "wb").write(buf)
    open(transcript_path + ".answers", "w").write(str(answers))

def give_up(why):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    write_transcript()
    sys.stderr.write("pty helper: %s; the terminal showed: %r\n" % (why, buf))
    sys.exit(124)

eof = False
while not eof or status is None:
    if time.monotonic() > deadline:
        give_up("timed out")
    if status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
    if eof:
        time.sleep(0.02)
        continue
    r, _, _ = select.select([master], [], [], 0.05)
    if not r:
        if status is not None:
            eof = True
        continue
    try:
        data = os.read(master, 4096)
    except OSError:
        data = b""
    if not data:
        eof = True
        continue
    buf += data
    # Answer each new prompt: "passphrase" in what was shown since the last answer, then a
    # colon. Wait (up to 2 s) until the program has switched the terminal's echo off.
    fresh = buf[pos:].lower()
    if b"passphrase" in fresh and b":" in fresh.split(b"passphrase")[-1]:
        wait_until = time.monotonic() + 2
        while time.monotonic() < wait_until and termios.tcgetattr(master)[3] & termios.ECHO:
            time.sleep(0.01)
        os.write(master, pw + b"\n")
        answers += 1
        pos = len(buf)
write_transcript()
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"#;

/// Run `argv` under a pseudo-terminal that types `passphrase` at each passphrase prompt.
/// Returns the output (stdout/stderr of the program), what the terminal showed and how many
/// times the passphrase was typed.
fn run_on_pty(env: &Env, argv: &[&OsStr], passphrase: &str) -> (Output, String, usize) {
    let script = env.root().join("pty_helper.py");
    if !script.exists() {
        std::fs::write(&script, PTY_HELPER).unwrap();
    }
    let transcript = env.root().join("pty_transcript");
    let _ = std::fs::remove_file(&transcript);
    let mut cmd = Command::new(python3());
    env.isolate(&mut cmd);
    cmd.arg(&script)
        .args(argv)
        .env("PTY_PASSPHRASE", passphrase)
        .env("PTY_TIMEOUT", "40")
        .env("PTY_TRANSCRIPT", &transcript)
        .current_dir(&env.project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    detach_from_terminal(&mut cmd);
    let out = wait_bounded(cmd.spawn().expect("spawn python3"), "pty helper");
    let shown = std::fs::read(&transcript)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut answers_file = transcript.into_os_string();
    answers_file.push(".answers");
    let answers = std::fs::read_to_string(&answers_file)
        .ok()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(0);
    (out, shown, answers)
}

/// Encrypt the identity file `plain` with a passphrase using the real `age -p` (which reads
/// the passphrase from /dev/tty only), writing `out`.
fn age_passphrase_encrypt(env: &Env, plain: &Path, out: &Path, passphrase: &str) {
    let (res, shown, answers) = run_on_pty(
        env,
        &[
            "age".as_ref(),
            "-p".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            plain.as_os_str(),
        ],
        passphrase,
    );
    assert_exit(&res, 0, &format!("age -p (terminal showed {shown:?})"));
    assert_eq!(
        answers, 2,
        "age -p asks twice; the terminal showed {shown:?}"
    );
    let data = std::fs::read(out).unwrap();
    assert!(data.starts_with(AGE_HEADER), "age -p output is not age");
    assert!(
        String::from_utf8_lossy(&data).contains("-> scrypt "),
        "age -p output has no scrypt stanza"
    );
}

fn shadow_ok(env: &Env, args: &[&str]) -> String {
    let out = env.shadow_git(args);
    assert_exit(&out, 0, &format!("git --git-dir=SHADOW {}", args.join(" ")));
    stdout(&out)
}

fn tip(env: &Env, tier: &str) -> String {
    shadow_ok(env, &["rev-parse", &format!("refs/heads/tiers/{tier}")])
        .trim()
        .to_owned()
}

fn commit_count(env: &Env, tier: &str) -> usize {
    shadow_ok(
        env,
        &["rev-list", "--count", &format!("refs/heads/tiers/{tier}")],
    )
    .trim()
    .parse()
    .unwrap()
}

/// path → (mode, blob id)
type Listing = BTreeMap<String, (String, String)>;

/// `git ls-tree -r REV`.
fn ls_tree(env: &Env, rev: &str) -> Listing {
    shadow_ok(env, &["ls-tree", "-r", rev])
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let f: Vec<&str> = meta.split_whitespace().collect();
            (path.to_owned(), (f[0].to_owned(), f[2].to_owned()))
        })
        .collect()
}

fn cat_blob(env: &Env, id: &str) -> Vec<u8> {
    let out = env.shadow_git(&["cat-file", "blob", id]);
    assert_exit(&out, 0, "git cat-file blob");
    out.stdout
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// Nothing (no file, no link) below `dir`, which may be missing or empty.
fn assert_nothing_written(dir: &Path, what: &str) {
    if dir.exists() {
        let t = tree(dir, &[]);
        assert!(
            t.values().all(|n| *n == Node::Dir),
            "{what}: files were written into {}: {:?}",
            dir.display(),
            t.keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        );
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------------------------
// key generate / key show / init --encrypt (point 2)

#[test]
fn key_generate_creates_0600_identity_at_default_path_and_prints_its_recipient() {
    let env = Env::new();
    let id = default_identity(&env);
    assert!(
        !id.parent().unwrap().exists(),
        "precondition: no config dir"
    );

    // Under umask 000 too, the secret must come out 0600.
    let out = mirror_with_umask(&env, 0o000, &["key", "generate"]);
    assert_exit(&out, 0, "mirror key generate");
    assert!(id.is_file(), "no identity at {}", id.display());
    assert_eq!(mode_of(&id), 0o600, "identity file mode");
    let printed = stdout(&out);
    assert_eq!(
        printed.lines().count(),
        1,
        "stdout must be exactly the recipient line: {printed:?}"
    );
    let recipient = printed.trim_end_matches('\n');
    assert!(recipient.starts_with("age1"), "stdout: {printed:?}");
    assert_eq!(recipient, age_recipient_of(&env, &id));

    // `key show` (no project here) prints the same recipient.
    let shown = env.ok(&["key", "show"]);
    assert_eq!(shown.trim(), recipient, "key show");

    // Never overwritten.
    let before = std::fs::read(&id).unwrap();
    let again = env.mirror(&["key", "generate"]);
    assert_exit(&again, 1, "second mirror key generate");
    assert!(
        !stdout(&again).contains("age1"),
        "a refused generate printed a recipient: {}",
        stdout(&again)
    );
    assert_eq!(
        std::fs::read(&id).unwrap(),
        before,
        "identity was overwritten"
    );
    assert_eq!(mode_of(&id), 0o600);
}

#[test]
fn key_generate_out_writes_the_given_file_and_never_overwrites_it() {
    let env = Env::new();
    let out_file = env.root().join("keys").join("deep").join("offline.txt");
    let out = env.mirror(&["key", "generate", "--out", s(&out_file)]);
    assert_exit(&out, 0, "mirror key generate --out");
    assert_eq!(mode_of(&out_file), 0o600);
    let recipient = stdout(&out).trim().to_owned();
    assert!(recipient.starts_with("age1"), "stdout: {recipient:?}");
    assert_eq!(recipient, age_recipient_of(&env, &out_file));
    assert!(
        !default_identity(&env).exists(),
        "--out also wrote the default identity"
    );
    // The identity it wrote decrypts what age encrypts to the printed recipient.
    let msg = b"round trip through the generated key\n";
    let mut enc = Command::new("age");
    env.isolate(&mut enc);
    let mut child = enc
        .args(["-r", &recipient])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let ct = child.wait_with_output().unwrap();
    assert!(ct.status.success());
    let pt = age_decrypt(&env, &out_file, &ct.stdout);
    assert_exit(&pt, 0, "age -d with the generated identity");
    assert_eq!(pt.stdout, msg);

    // An existing file (here one made by age-keygen) is refused and left alone.
    let existing = env.root().join("existing.txt");
    age_keygen(&env, &existing);
    let before = std::fs::read(&existing).unwrap();
    let again = env.mirror(&["key", "generate", "--out", s(&existing)]);
    assert_exit(&again, 1, "mirror key generate --out EXISTING");
    assert_eq!(std::fs::read(&existing).unwrap(), before);
}

#[test]
fn init_encrypt_generates_identity_writes_recipient_and_warns_unrecoverable() {
    let env = Env::new();
    env.write("tier-0/README.md", "hello\n");
    let out = init_encrypted(&env, &["t=tier-0"]);
    let err = stderr(&out);
    assert!(
        err.contains("unrecoverable"),
        "init --encrypt must warn that losing every identity makes files unrecoverable:\n{err}"
    );
    let id = default_identity(&env);
    assert!(
        id.is_file(),
        "init --encrypt did not create {}",
        id.display()
    );
    assert_eq!(mode_of(&id), 0o600);
    let recipient = age_recipient_of(&env, &id);
    assert_eq!(config_recipients(&env), vec![recipient.clone()]);
    assert_eq!(env.ok(&["key", "show"]).trim(), recipient);

    // A treasure file is then stored as age ciphertext to that recipient.
    env.write("tier-0/the-impossible.rs", "fn main() {}\n");
    env.ok(&["snapshot"]);
    let (_, blob) = ls_tree(&env, "refs/heads/tiers/t")["the-impossible.rs"].clone();
    let ct = cat_blob(&env, &blob);
    assert!(ct.starts_with(AGE_HEADER));
    let pt = age_decrypt(&env, &id, &ct);
    assert_exit(&pt, 0, "age -d with the generated identity");
    assert_eq!(pt.stdout, b"fn main() {}\n");
}

#[test]
fn init_encrypt_on_initialised_project_reuses_existing_identity_and_adds_the_section() {
    let env = Env::new();
    env.write("tier-0/README.md", "hello\n");
    let id = default_identity(&env);
    let generated = env.ok(&["key", "generate"]).trim().to_owned();
    let identity_before = std::fs::read(&id).unwrap();

    init_plain(&env, &["t=tier-0"]);
    assert!(
        load_config(&env).get("encryption").is_none(),
        "plain init wrote an encryption section"
    );
    let tiers_before = load_config(&env).get("tiers").cloned();

    init_encrypted(&env, &["t=tier-0"]);
    assert_eq!(
        config_recipients(&env),
        vec![generated],
        "the existing identity's recipient must be added"
    );
    assert_eq!(
        std::fs::read(&id).unwrap(),
        identity_before,
        "init --encrypt replaced an existing identity"
    );
    assert_eq!(load_config(&env).get("tiers").cloned(), tiers_before);
}

// ---------------------------------------------------------------------------------------------
// identity lookup order (point 2)

#[test]
fn key_show_follows_identity_precedence_flag_env_config_default() {
    let env = Env::new();
    env.write("tier-0/README.md", "hello\n");
    init_encrypted(&env, &["t=tier-0"]);
    let keys = env.root().join("keys");
    let r_default = age_recipient_of(&env, &default_identity(&env));
    let cfg = keys.join("config-id.txt");
    let envid = keys.join("env-id.txt");
    let flag = keys.join("flag-id.txt");
    let r_cfg = age_keygen(&env, &cfg);
    let r_env = age_keygen(&env, &envid);
    let r_flag = age_keygen(&env, &flag);
    let all = [
        r_default.as_str(),
        r_cfg.as_str(),
        r_env.as_str(),
        r_flag.as_str(),
    ];

    set_encryption(&env, &all, None);
    assert_eq!(env.ok(&["key", "show"]).trim(), r_default, "default path");

    set_encryption(&env, &all, Some(&cfg));
    assert_eq!(
        env.ok(&["key", "show"]).trim(),
        r_cfg,
        "encryption.identity over the default path"
    );

    let with_env = [("MIRROR_IDENTITY", envid.as_os_str())];
    let out = mirror_with(&env, &["key", "show"], &with_env);
    assert_exit(&out, 0, "key show with MIRROR_IDENTITY");
    assert_eq!(
        stdout(&out).trim(),
        r_env,
        "MIRROR_IDENTITY over encryption.identity"
    );

    let out = mirror_with(&env, &["--identity", s(&flag), "key", "show"], &with_env);
    assert_exit(&out, 0, "key show with --identity and MIRROR_IDENTITY");
    assert_eq!(
        stdout(&out).trim(),
        r_flag,
        "--identity over MIRROR_IDENTITY"
    );
}

#[test]
fn checkout_decrypts_with_the_identity_that_wins_the_lookup() {
    let env = Env::new();
    env.write("tier-0/README.md", "plain\n");
    init_encrypted(&env, &["t=tier-0"]);
    let keys = env.root().join("keys");
    let r_default = age_recipient_of(&env, &default_identity(&env));
    let cfg = keys.join("config-id.txt");
    let envid = keys.join("env-id.txt");
    let flag = keys.join("flag-id.txt");
    let r_cfg = age_keygen(&env, &cfg);
    let r_env = age_keygen(&env, &envid);
    age_keygen(&env, &flag);

    // Three snapshots, each treasure version encrypted to a single recipient.
    let versions: [(&str, &str); 3] = [
        (&r_default, "one\n"),
        (&r_cfg, "version two\n"),
        (&r_env, "the third version\n"),
    ];
    let mut commits = Vec::new();
    for (recipient, content) in versions {
        set_encryption(&env, &[recipient], None);
        env.write("tier-0/impossible.txt", content);
        env.ok(&["snapshot"]);
        commits.push(tip(&env, "t"));
    }
    assert_eq!(commit_count(&env, "t"), 3);
    // Lookups below are given through mirror.yaml, so leave the last recipient list in place.
    let mut n = 0;
    let mut checkout =
        |rev: &str, config_id: Option<&Path>, args: &[&str], vars: &[(&str, &OsStr)]| {
            set_encryption(&env, &[&r_env], config_id);
            n += 1;
            let dir = env.root().join(format!("out-{n}"));
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["checkout", rev, "--to", s(&dir)]);
            (mirror_with(&env, &all, vars), dir)
        };
    let read = |dir: &Path| std::fs::read_to_string(dir.join("tier-0/impossible.txt")).unwrap();

    // 1. Nothing configured: the default path decrypts version 1.
    let (out, dir) = checkout(&commits[0], None, &[], &[]);
    assert_exit(&out, 0, "checkout v1 with the default identity");
    assert_eq!(read(&dir), "one\n");

    // 2. encryption.identity wins over the default path (which could decrypt).
    let (out, dir) = checkout(&commits[0], Some(&cfg), &[], &[]);
    assert_exit(
        &out,
        1,
        "checkout v1 with encryption.identity set to another key",
    );
    assert!(
        stderr(&out).contains("impossible.txt"),
        "the error must name the encrypted path:\n{}",
        stderr(&out)
    );
    assert_nothing_written(&dir, "wrong identity from mirror.yaml");
    let (out, dir) = checkout(&commits[1], Some(&cfg), &[], &[]);
    assert_exit(&out, 0, "checkout v2 with encryption.identity");
    assert_eq!(read(&dir), "version two\n");

    // 3. MIRROR_IDENTITY wins over encryption.identity.
    let env_var = [("MIRROR_IDENTITY", envid.as_os_str())];
    let (out, dir) = checkout(&commits[1], Some(&cfg), &[], &env_var);
    assert_exit(
        &out,
        1,
        "checkout v2 with MIRROR_IDENTITY set to another key",
    );
    assert_nothing_written(&dir, "wrong identity from MIRROR_IDENTITY");
    let (out, dir) = checkout(&commits[2], Some(&cfg), &[], &env_var);
    assert_exit(&out, 0, "checkout v3 with MIRROR_IDENTITY");
    assert_eq!(read(&dir), "the third version\n");

    // 4. --identity wins over MIRROR_IDENTITY, both ways round.
    let (out, dir) = checkout(&commits[2], Some(&cfg), &["--identity", s(&flag)], &env_var);
    assert_exit(&out, 1, "checkout v3 with --identity set to another key");
    assert_nothing_written(&dir, "wrong identity from --identity");
    let flag_var = [("MIRROR_IDENTITY", flag.as_os_str())];
    let (out, dir) = checkout(
        &commits[2],
        Some(&cfg),
        &["--identity", s(&envid)],
        &flag_var,
    );
    assert_exit(
        &out,
        0,
        "checkout v3 with --identity (MIRROR_IDENTITY wrong)",
    );
    assert_eq!(read(&dir), "the third version\n");
}

// ---------------------------------------------------------------------------------------------
// ssh recipients (point 2)

#[test]
fn ssh_ed25519_recipient_decrypts_through_checkout_and_plain_age() {
    let env = Env::new();
    env.write("tier-0/README.md", "plain\n");
    let secret = random_bytes(100_000);
    env.write("tier-0/.hidden/vault.bin", &secret);
    env.write("tier-0/src/self-destruction.rs", "// boom\n");
    init_encrypted(&env, &["t=tier-0"]);
    let r_default = age_recipient_of(&env, &default_identity(&env));
    let ssh_key = env.root().join("keys").join("id_ed25519");
    std::fs::create_dir_all(ssh_key.parent().unwrap()).unwrap();
    let r_ssh = ssh_keygen(&env, &ssh_key);
    set_encryption(&env, &[&r_default, &r_ssh], None);
    env.ok(&["snapshot"]);

    // `key show` with the ssh key prints its public key.
    let shown = env.ok(&["--identity", s(&ssh_key), "key", "show"]);
    let fields: Vec<&str> = shown.split_whitespace().take(2).collect();
    assert_eq!(
        fields.join(" "),
        r_ssh,
        "key show --identity SSHKEY: {shown:?}"
    );

    // A checkout with only the ssh private key restores everything byte for byte.
    let dir = env.root().join("restored");
    let out = env.mirror(&[
        "--identity",
        s(&ssh_key),
        "checkout",
        "latest",
        "--to",
        s(&dir),
    ]);
    assert_exit(&out, 0, "checkout --identity SSHKEY");
    assert_eq!(
        tree(&dir.join("tier-0"), &[]),
        tree(&env.path("tier-0"), &[])
    );

    // Plain age decrypts the blob with the ssh key, and with the age identity.
    let entries = ls_tree(&env, "refs/heads/tiers/t");
    let ct = cat_blob(&env, &entries[".hidden/vault.bin"].1);
    assert!(
        ct.starts_with(AGE_HEADER),
        "treasure blob is not age ciphertext"
    );
    assert!(
        String::from_utf8_lossy(&ct).contains("-> ssh-ed25519 "),
        "no ssh-ed25519 stanza in the blob's header"
    );
    let pt = age_decrypt(&env, &ssh_key, &ct);
    assert_exit(&pt, 0, "age -d -i SSHKEY");
    assert_eq!(pt.stdout, secret);
    let pt = age_decrypt(&env, &default_identity(&env), &ct);
    assert_exit(&pt, 0, "age -d -i identity.txt");
    assert_eq!(pt.stdout, secret);
}

// ---------------------------------------------------------------------------------------------
// passphrase-protected identity (point 2)

const PASSPHRASE: &str = "correct horse battery 7!";

/// A project whose only identity is a passphrase-encrypted age file (made by `age -p`),
/// with ≥ 20 treasure files recorded in one snapshot. Returns the encrypted identity's path.
fn passphrase_project(env: &Env) -> PathBuf {
    env.write("tier-0/README.md", "plain\n");
    env.write("tier-0/src/lib.rs", "pub fn f() {}\n");
    for i in 0..24 {
        env.write(
            &format!("tier-0/impossible/part-{i:02}.rs"),
            format!("// impossible part {i}\n{}\n", "x".repeat(i * 37)),
        );
    }
    env.write("tier-0/notes.hidden.md", "secret notes\n");
    init_encrypted(env, &["t=tier-0"]);
    let keys = env.root().join("keys");
    let plain = keys.join("id.txt");
    let recipient = age_keygen(env, &plain);
    let locked = keys.join("id.age");
    age_passphrase_encrypt(env, &plain, &locked, PASSPHRASE);
    std::fs::remove_file(&plain).unwrap();
    // The default identity is removed too: the passphrase-protected one is the only key.
    std::fs::remove_file(default_identity(env)).unwrap();
    set_encryption(env, &[&recipient], Some(&locked));
    let out = mirror_with(
        env,
        &["snapshot"],
        &[("MIRROR_PASSPHRASE", PASSPHRASE.as_ref())],
    );
    assert_exit(&out, 0, "snapshot with a passphrase-protected identity");
    locked
}

#[test]
fn passphrase_identity_is_unlocked_once_for_many_treasure_files() {
    let env = Env::new();
    let locked = passphrase_project(&env);
    let recorded = ls_tree(&env, "refs/heads/tiers/t");
    let treasures: Vec<_> = recorded
        .iter()
        .filter(|(p, _)| p.contains("impossible") || p.contains(".hidden"))
        .collect();
    assert!(treasures.len() >= 20, "only {} treasures", treasures.len());
    for (path, (_, id)) in &treasures {
        assert!(
            cat_blob(&env, id).starts_with(AGE_HEADER),
            "{path} is not stored encrypted"
        );
    }

    let dir = env.root().join("restored");
    let out = mirror_with(
        &env,
        &["checkout", "latest", "--to", s(&dir)],
        &[("MIRROR_PASSPHRASE", PASSPHRASE.as_ref())],
    );
    assert_exit(&out, 0, "checkout with MIRROR_PASSPHRASE");
    assert_eq!(
        tree(&dir.join("tier-0"), &[]),
        tree(&env.path("tier-0"), &[])
    );
    let err = stderr(&out);
    assert_eq!(
        count(&err, "unlocking identity"),
        1,
        "the scrypt unlock must run exactly once per process:\n{err}"
    );
    assert!(
        err.contains(&format!("unlocking identity {}", locked.display())),
        "the unlock notice must name the identity:\n{err}"
    );
}

#[test]
fn wrong_passphrase_fails_clearly_and_writes_nothing() {
    let env = Env::new();
    passphrase_project(&env);
    let wrong = [("MIRROR_PASSPHRASE", OsStr::new("not the passphrase"))];

    let dir = env.root().join("restored");
    let out = mirror_with(&env, &["checkout", "latest", "--to", s(&dir)], &wrong);
    assert_exit(&out, 1, "checkout with a wrong MIRROR_PASSPHRASE");
    let err = stderr(&out);
    assert!(
        err.to_lowercase()
            .replace("mirror_passphrase", "")
            .contains("passphrase"),
        "the error must say the passphrase is wrong (not only hint at MIRROR_PASSPHRASE):\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_nothing_written(&dir, "checkout --to with a wrong passphrase");

    // restore --missing: neither the treasures nor the plain file come back.
    std::fs::remove_file(env.path("tier-0/README.md")).unwrap();
    std::fs::remove_file(env.path("tier-0/impossible/part-03.rs")).unwrap();
    let out = mirror_with(&env, &["restore", "--missing"], &wrong);
    assert_exit(&out, 1, "restore --missing with a wrong MIRROR_PASSPHRASE");
    assert!(
        stderr(&out)
            .to_lowercase()
            .replace("mirror_passphrase", "")
            .contains("passphrase"),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.path("tier-0/README.md").exists(),
        "restore wrote a file although it could not unlock the identity"
    );
    assert!(!env.path("tier-0/impossible/part-03.rs").exists());
}

#[test]
fn passphrase_without_env_or_terminal_fails_instead_of_hanging() {
    let env = Env::new();
    let locked = passphrase_project(&env);
    let dir = env.root().join("restored");
    // mirror_with runs it without a controlling terminal and without MIRROR_PASSPHRASE.
    let out = mirror_with(&env, &["checkout", "latest", "--to", s(&dir)], &[]);
    assert_exit(&out, 1, "checkout needing a passphrase, with no way to ask");
    let err = stderr(&out);
    assert!(
        err.contains("MIRROR_PASSPHRASE") || err.contains(s(&locked)),
        "the error must say how to give the passphrase (or name the identity):\n{err}"
    );
    assert_nothing_written(&dir, "checkout without a passphrase");
}

#[test]
fn passphrase_is_asked_once_on_the_terminal() {
    let env = Env::new();
    let locked = passphrase_project(&env);
    let dir = env.root().join("restored");
    let bin = env!("CARGO_BIN_EXE_mirror");
    let (out, shown, answers) = run_on_pty(
        &env,
        &[
            bin.as_ref(),
            "checkout".as_ref(),
            "latest".as_ref(),
            "--to".as_ref(),
            dir.as_os_str(),
        ],
        PASSPHRASE,
    );
    assert_exit(
        &out,
        0,
        &format!("checkout on a terminal (it showed {shown:?})"),
    );
    assert_eq!(
        answers, 1,
        "the passphrase must be asked exactly once; the terminal showed {shown:?}"
    );
    assert!(
        !shown.contains(PASSPHRASE),
        "the passphrase was echoed: {shown:?}"
    );
    let err = stderr(&out);
    assert_eq!(count(&err, "unlocking identity"), 1, "{err}");
    assert!(err.contains(s(&locked)), "{err}");
    assert_eq!(
        tree(&dir.join("tier-0"), &[]),
        tree(&env.path("tier-0"), &[])
    );
}

// ---------------------------------------------------------------------------------------------
// key rotate (point 7)

#[test]
fn key_rotate_reencrypts_latest_snapshot_to_current_recipients() {
    let env = Env::new();
    env.write("tier-0/README.md", "alpha plain\n");
    env.write("tier-0/the-impossible.rs", "fn alpha() {}\n");
    env.write("tier-0/.hidden/key.pem", random_bytes(5000));
    env.write("tier-0/empty-btfo", "");
    env.write("tier-1/notes.txt", "beta plain\n");
    env.write("tier-1/destruction/plan.md", "# plan\n");
    init_encrypted(&env, &["alpha=tier-0", "beta=tier-1"]);
    let old = default_identity(&env);
    let r_old = age_recipient_of(&env, &old);
    env.ok(&["snapshot"]);
    let treasure = |p: &str| {
        ["impossible", ".hidden", "btfo", "destruction"]
            .iter()
            .any(|m| p.contains(m))
    };
    let before: BTreeMap<&str, (String, Listing)> = ["alpha", "beta"]
        .into_iter()
        .map(|t| {
            (
                t,
                (
                    tip(&env, t),
                    ls_tree(&env, &format!("refs/heads/tiers/{t}")),
                ),
            )
        })
        .collect();

    let new = env.root().join("keys").join("new.txt");
    let r_new = age_keygen(&env, &new);
    set_encryption(&env, &[&r_old, &r_new], None);
    let out = env.mirror(&["key", "rotate"]);
    assert_exit(&out, 0, "mirror key rotate");
    let lines: Vec<_> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "one line per tier: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("alpha")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("beta")), "{lines:?}");

    for (tier, dir) in [("alpha", "tier-0"), ("beta", "tier-1")] {
        let (old_tip, old_tree) = &before[tier];
        let new_tip = tip(&env, tier);
        assert_ne!(&new_tip, old_tip, "{tier}: no new commit");
        assert_eq!(
            shadow_ok(&env, &["rev-parse", &format!("{new_tip}^")]).trim(),
            old_tip,
            "{tier}: the rotation commit must follow the previous snapshot"
        );
        let msg = shadow_ok(&env, &["log", "-1", "--format=%B", &new_tip]);
        assert!(
            msg.lines().any(|l| l == "Mirror-Trigger: key-rotate"),
            "{tier}: trailer missing:\n{msg}"
        );
        let new_tree = ls_tree(&env, &new_tip);
        assert_eq!(
            new_tree
                .iter()
                .map(|(p, (m, _))| (p, m))
                .collect::<Vec<_>>(),
            old_tree
                .iter()
                .map(|(p, (m, _))| (p, m))
                .collect::<Vec<_>>(),
            "{tier}: paths and modes must stay the same"
        );
        let mut treasures = 0;
        for (path, (_, id)) in &new_tree {
            let original = std::fs::read(env.path(&format!("{dir}/{path}"))).unwrap();
            let old_id = &old_tree[path].1;
            if !treasure(path) {
                assert_eq!(id, old_id, "{tier}: plain {path} must keep its blob");
                continue;
            }
            treasures += 1;
            assert_ne!(id, old_id, "{tier}: {path} was not re-encrypted");
            let pt = age_decrypt(&env, &new, &cat_blob(&env, id));
            assert_exit(
                &pt,
                0,
                &format!("{tier}: age -d -i new.txt of rotated {path}"),
            );
            assert_eq!(pt.stdout, original, "{tier}: {path}");
            // Older history is readable with the old key only.
            let old_ct = cat_blob(&env, old_id);
            let pt = age_decrypt(&env, &new, &old_ct);
            assert!(
                !pt.status.success(),
                "{tier}: the previous snapshot's {path} decrypts with the new key"
            );
            let pt = age_decrypt(&env, &old, &old_ct);
            assert_exit(&pt, 0, &format!("{tier}: old key on the previous {path}"));
            assert_eq!(pt.stdout, original);
        }
        assert!(treasures > 0, "{tier}: no treasure checked");
    }

    // A checkout with the new key alone reproduces both tiers byte for byte.
    let dir = env.root().join("restored");
    let out = env.mirror(&["--identity", s(&new), "checkout", "latest", "--to", s(&dir)]);
    assert_exit(&out, 0, "checkout with the new key after rotate");
    assert_eq!(
        tree(&dir.join("tier-0"), &[]),
        tree(&env.path("tier-0"), &[])
    );
    assert_eq!(
        tree(&dir.join("tier-1"), &[]),
        tree(&env.path("tier-1"), &[])
    );

    // Nothing changed on disk: the next snapshot records nothing new.
    let tips = (tip(&env, "alpha"), tip(&env, "beta"));
    env.ok(&["snapshot"]);
    assert_eq!(
        (tip(&env, "alpha"), tip(&env, "beta")),
        tips,
        "churn after rotate"
    );

    // Dropping the old recipient and rotating one tier: only that tier moves, and its
    // treasures no longer open with the old key.
    set_encryption(&env, &[&r_new], None);
    let out = env.mirror(&["key", "rotate", "--tier", "alpha"]);
    assert_exit(&out, 0, "mirror key rotate --tier alpha");
    assert_eq!(tip(&env, "beta"), tips.1, "--tier alpha rotated beta");
    assert_ne!(tip(&env, "alpha"), tips.0, "--tier alpha made no commit");
    let ct = cat_blob(
        &env,
        &ls_tree(&env, "refs/heads/tiers/alpha")["the-impossible.rs"].1,
    );
    assert!(
        !age_decrypt(&env, &old, &ct).status.success(),
        "a removed recipient can still decrypt the rotated snapshot"
    );
    let pt = age_decrypt(&env, &new, &ct);
    assert_exit(&pt, 0, "new key after the second rotation");
    assert_eq!(pt.stdout, b"fn alpha() {}\n");
}

// ---------------------------------------------------------------------------------------------
// plain-tools recovery (point 8)

#[test]
fn treasure_blob_comes_back_with_git_cat_file_piped_to_age() {
    let env = Env::new();
    let big = random_bytes(300_000); // several age chunks (64 KiB each)
    env.write("tier-0/README.md", "plain\n");
    env.write("tier-0/sub/the-impossible.bin", &big);
    env.write("tier-0/sub/empty.hidden", "");
    init_encrypted(&env, &["t=tier-0"]);
    env.ok(&["snapshot"]);
    let identity = default_identity(&env);

    let listing = shadow_ok(&env, &["ls-tree", "-r", "refs/heads/tiers/t"]);
    for (path, original) in [
        ("sub/the-impossible.bin", big.clone()),
        ("sub/empty.hidden", Vec::new()),
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("\t{path}")))
            .unwrap_or_else(|| panic!("{path} not in ls-tree:\n{listing}"));
        let id = line.split_whitespace().nth(2).unwrap();
        // Exactly the documented pipeline, through a shell.
        let mut sh = Command::new("sh");
        env.isolate(&mut sh);
        let out = sh
            .arg("-c")
            .arg("git --git-dir=\"$1\" cat-file blob \"$2\" | age -d -i \"$3\"")
            .arg("sh")
            .arg(&env.shadow)
            .arg(id)
            .arg(&identity)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_exit(&out, 0, &format!("git cat-file blob | age -d ({path})"));
        assert!(out.stdout == original, "{path}: decrypted content differs");
    }
    // And the plaintext is not what git stores.
    let id = listing
        .lines()
        .find(|l| l.ends_with("\tsub/the-impossible.bin"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap();
    assert!(cat_blob(&env, id).starts_with(AGE_HEADER));
}

/// The contents of the ```sh blocks of a markdown text.
fn sh_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```sh") => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Run `script` with bash in `dir`, with `$S` set to the shadow repository.
fn run_recipe(env: &Env, dir: &Path, script: &str, home: Option<&Path>) -> Output {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new("bash");
    env.isolate(&mut cmd);
    if let Some(h) = home {
        cmd.env("HOME", h);
    }
    cmd.arg("-c")
        .arg(script)
        .env("S", &env.shadow)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run bash")
}

#[test]
fn format_doc_recipes_recover_treasure_files_with_git_and_age() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/format.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let blocks = sh_blocks(&doc);

    let env = Env::new();
    let key = random_bytes(3000);
    env.write("tier-0/secrets/.hidden/key", &key);
    env.write("tier-0/README.md", "plain\n");
    env.write("tier-0/run.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(env.path("tier-0/run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("README.md", env.path("tier-0/link")).unwrap();
    std::fs::create_dir_all(env.path("tier-0/empty-dir")).unwrap();
    env.write("tier-0/btfo-empty", "");
    env.write("tier-0/deep/impossible/a.txt", "deep treasure\n");
    init_encrypted(&env, &["tier-0=tier-0"]);
    env.ok(&["snapshot"]);

    // 1. The one-line recipe of the encryption section, verbatim (its identity path is
    //    ~/.config/mirror/identity.txt, so HOME points at a copy there).
    let one_liner = blocks
        .iter()
        .flat_map(|b| b.lines())
        .find(|l| l.contains("cat-file blob") && l.contains("| age -d -i"))
        .unwrap_or_else(|| {
            panic!("docs/format.md has no `git cat-file blob ... | age -d -i ...` line")
        });
    let fake_home = env.root().join("recipe-home");
    let id_copy = fake_home.join(".config/mirror/identity.txt");
    std::fs::create_dir_all(id_copy.parent().unwrap()).unwrap();
    std::fs::copy(default_identity(&env), &id_copy).unwrap();
    let dir = env.root().join("one-liner");
    let out = run_recipe(&env, &dir, one_liner, Some(&fake_home));
    assert_exit(&out, 0, &format!("docs/format.md recipe: {one_liner}"));
    assert!(
        std::fs::read(dir.join("key")).unwrap() == key,
        "the one-line recipe did not give back secrets/.hidden/key"
    );

    // 2. The "Recovering without mirror" script, from `mkdir restore` to its `done`.
    let block = blocks
        .iter()
        .find(|b| b.contains("mkdir restore") && b.contains("age -d"))
        .expect("docs/format.md: no restore script that decrypts with age");
    let start = block.find("mkdir restore").unwrap();
    let end = block[start..]
        .find("\ndone\n")
        .map(|e| start + e + "\ndone\n".len())
        .expect("restore script ends with `done`");
    let script = &block[start..end];
    let work = env.root().join("recipe");
    let out = run_recipe(&env, &work, script, None);
    assert_exit(
        &out,
        0,
        &format!("docs/format.md restore script:\n{script}"),
    );
    let restored = tree(&work.join("restore"), &[]);
    let original = tree(&env.path("tier-0"), &[]);
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>(),
        "the recipe restored other paths"
    );
    for (path, node) in &original {
        let name = String::from_utf8_lossy(path);
        match (node, &restored[path]) {
            (
                Node::File { content, mode, .. },
                Node::File {
                    content: got,
                    mode: got_mode,
                    ..
                },
            ) => {
                assert!(content == got, "{name}: content differs after the recipe");
                assert_eq!(mode & 0o100, got_mode & 0o100, "{name}: executable bit");
            }
            (Node::Link { target, .. }, Node::Link { target: got, .. }) => {
                assert_eq!(target, got, "{name}: link target")
            }
            (Node::Dir, Node::Dir) => {}
            (want, got) => panic!("{name}: recorded {want:?}, the recipe made {got:?}"),
        }
    }
}
