//! Issue 10: the monitoring dashboard. `mirror dashboard` (a read-only page and JSON API on
//! 127.0.0.1) and `mirror report --html` (the same page as one static file): the API equals
//! the CLI's JSON, every name is HTML-escaped, nothing is written, served or decrypted, the
//! server survives malformed requests and 100 concurrent clients, and the page (checked in a
//! real headless chromium) shows tiers, staleness, remotes, verify results and a timeline.

use crate::common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Only to keep a broken server or browser from hanging the suite; never a speed assertion.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

const XSS_DIR: &str = "tier-a/<script>alert(1)<";
const XSS_FILE: &str = "tier-a/<script>alert(1)</script>.txt";
const XSS_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;.txt";

// ---------------------------------------------------------------------------------------------
// helpers: processes

/// Run `cmd` to completion, killed after `limit`; stdout and stderr go through files (no
/// pipe can fill up and block it).
fn run_bounded(cmd: &mut Command, dir: &Path, limit: Duration, what: &str) -> Output {
    let out_path = dir.join(format!("{what}.stdout"));
    let err_path = dir.join(format!("{what}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut proc = Proc::spawn(cmd);
    let status = proc.wait_bounded(limit, what);
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// `mirror ARGS` killed after a minute (for commands that must not start a server).
fn mirror_bounded(env: &Env, args: &[&str], what: &str) -> Output {
    run_bounded(env.cmd().args(args), &env.root(), IO_TIMEOUT, what)
}

/// A running `mirror dashboard`; killed when dropped.
struct Server {
    proc: Proc,
    port: u16,
    url: String,
    stderr_path: PathBuf,
}

impl Server {
    /// `mirror dashboard --port 0 EXTRA...`, once it printed its URL.
    fn start(env: &Env, extra: &[&str]) -> Server {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr_path = env.root().join(format!("dashboard-{n}.stderr"));
        let mut cmd = env.cmd();
        cmd.args(["dashboard", "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut proc = Proc::spawn(&mut cmd);
        let stdout = proc.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining until the server exits, so it never writes into a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(IO_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                proc.kill();
                panic!(
                    "mirror dashboard printed no URL ({e}); stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        let url = line
            .strip_prefix("mirror dashboard: ")
            .and_then(|rest| rest.split(' ').next())
            .filter(|u| u.starts_with("http://127.0.0.1:") && u.ends_with('/'))
            .unwrap_or_else(|| {
                panic!(
                    "first line must be `mirror dashboard: http://127.0.0.1:PORT/ ...`: {line:?}; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            })
            .to_owned();
        assert!(
            line.contains("(read-only; Ctrl-C stops it)"),
            "first line: {line:?}"
        );
        let port: u16 = url["http://127.0.0.1:".len()..url.len() - 1]
            .parse()
            .unwrap_or_else(|e| panic!("port in {url}: {e}"));
        assert_ne!(port, 0, "{url}");
        Server {
            proc,
            port,
            url,
            stderr_path,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> Response {
        self.request("GET", path)
    }

    fn request(&self, method: &str, path: &str) -> Response {
        http(self.port, method, path, &self.host())
    }

    /// GET `path`, required to answer 200; the body.
    fn page(&self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        r.body
    }

    /// GET an API path: 200, application/json, parsed.
    fn api(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "GET {path}: {r:?}"
        );
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {r:?}"))
    }

    /// Poll `path` until its body contains `needle` (the server re-reads stale data after a
    /// few seconds); bounded by a minute. Returns the body that matched.
    fn wait_for(&self, path: &str, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut last = String::new();
        for _ in 0..1000 {
            let r = self.get(path);
            if r.status == 200 && r.body.contains(needle) {
                return r.body;
            }
            last = r.body;
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("GET {path} never showed {needle:?}; last:\n{last}");
    }

    /// Kill the server and return what it wrote on stderr.
    fn stop(mut self) -> String {
        self.proc.kill();
        std::fs::read_to_string(&self.stderr_path).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// helpers: a tiny HTTP/1.1 client on TcpStream

#[derive(Debug)]
struct Response {
    status: u16,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the dashboard");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Send `raw` on a fresh connection and read until the server closes it.
fn exchange(port: u16, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = connect(port);
    stream.write_all(raw)?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(out)
}

fn http(port: u16, method: &str, path: &str, host: &str) -> Response {
    let body_len = if method == "GET" || method == "HEAD" {
        String::new()
    } else {
        "Content-Length: 0\r\n".to_owned()
    };
    let raw =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{body_len}\r\n");
    let bytes = exchange(port, raw.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path} (Host {host}): {e}"));
    parse_response(&bytes).unwrap_or_else(|| {
        panic!(
            "{method} {path}: not an HTTP response: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

fn parse_response(bytes: &[u8]) -> Option<Response> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------
// helpers: projects and inspection

/// Two tiers (`a` in tier-a with a treasure `.hidden-key`, `b` in tier-b), one snapshot taken
/// right after the files were written (so the treasure is in the stat cache's racy window,
/// where `status` decrypts to compare and the dashboard goes by its unchanged stat data).
fn project() -> Env {
    let env = Env::new();
    env.write("tier-a/a.txt", "a v1\n");
    env.write("tier-a/.hidden-key", "secret a\n");
    env.write("tier-a/sub/deep.txt", "deep\n");
    env.write("tier-b/b.txt", "b v1\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    env
}

/// `mirror ARGS` (with --json among them), exit 0 required, parsed.
fn cli_json(env: &Env, args: &[&str]) -> Value {
    let text = env.ok(args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("mirror {} is not JSON ({e}):\n{text}", args.join(" ")))
}

/// Every ref of the shadow: name -> object id.
fn shadow_refs(env: &Env) -> BTreeMap<String, String> {
    let out = env.shadow_git(&["for-each-ref", "--format=%(refname) %(objectname)"]);
    assert_exit(&out, 0, "git for-each-ref");
    stdout(&out)
        .lines()
        .map(|l| {
            let (n, id) = l.split_once(' ').expect("refname objectname");
            (n.to_owned(), id.to_owned())
        })
        .collect()
}

/// Every entry under `dir` (nothing excluded): relative path -> (is dir, size, mtime ns).
fn stat_tree(dir: &Path) -> BTreeMap<PathBuf, (bool, u64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let md = path.symlink_metadata().unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_owned();
            out.insert(
                rel,
                (
                    md.is_dir(),
                    md.len(),
                    md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                ),
            );
            if md.is_dir() {
                todo.push(path);
            }
        }
    }
    out
}

/// The `<tr class="remote">` row of remote `name` on a page.
fn remote_row<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page
        .find(&format!("<tr class=\"remote\"><td><b>{name}</b>"))
        .unwrap_or_else(|| panic!("no row for remote {name}:\n{page}"));
    let len = page[start..].find("</tr>").expect("row end");
    &page[start..start + len]
}

/// The cells' contents of a table row (each `<td ...>` up to the next one).
fn cells(row: &str) -> Vec<&str> {
    row.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').map_or(0, |i| i + 1)..];
            c.strip_suffix("</td>").unwrap_or(c)
        })
        .collect()
}

/// The `<tr class="tier">` row of tier `name` on a page.
fn tier_row<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page
        .find(&format!("<tr class=\"tier\" data-tier=\"{name}\">"))
        .unwrap_or_else(|| panic!("no row for tier {name}:\n{page}"));
    let len = page[start..].find("</tr>").expect("row end");
    &page[start..start + len]
}

/// The verdict `<div id="verdict" ...>...</div>` of a page.
fn verdict(page: &str) -> &str {
    let start = page.find("<div id=\"verdict\"").expect("a verdict");
    let len = page[start..].find("</div>").expect("verdict end");
    &page[start..start + len]
}

/// `chromium --headless` with the flags CI uses, isolated in the test's HOME/XDG, killed
/// after two minutes. Its background services are off, and anything but loopback goes to a
/// dead proxy: the browser talks to nothing but the dashboard.
fn chromium(env: &Env, args: &[&str], what: &str) -> Output {
    let mut cmd = Command::new("chromium");
    env.isolate(&mut cmd);
    cmd.current_dir(env.root())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--proxy-server=127.0.0.1:9",
        ])
        .arg(format!(
            "--user-data-dir={}",
            env.root().join("chromium-profile").display()
        ))
        .args(args);
    let out = run_bounded(&mut cmd, &env.root(), BROWSER_TIMEOUT, what);
    assert!(
        out.status.success(),
        "chromium {what} failed ({:?}); it must be installed (Debian package `chromium`):\n{}",
        out.status,
        stderr(&out)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// 1. the JSON API

// Proves: /api/{status,log,audit,remotes} equal `status|log|log --audit|remote status --json`.
#[test]
fn api_endpoints_equal_the_cli_json() {
    let env = Env::new();
    env.write("tier-a/a.txt", "a v1\n");
    env.write("tier-a/.hidden-key", "secret a\n");
    env.write("tier-b/b.txt", "b v1\n");
    env.write("tier-b/notes.hidden.txt", "secret b\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    env.write("tier-a/a.txt", "a v2, longer\n");
    env.ok(&["snapshot"]);
    env.ok(&["tag", "v1", "-m", "first milestone"]);
    env.write("tier-a/pending.txt", "not recorded yet\n");
    std::fs::remove_file(env.path("tier-b/notes.hidden.txt")).unwrap();
    let out = env.mirror(&["checkout", "nonexistent"]);
    assert_ne!(out.status.code(), Some(0), "checkout of nothing must fail");
    let usb = env.root().join("usb.git");
    env.ok(&["remote", "add", "usb", usb.to_str().unwrap()]);
    env.ok(&["push"]);

    let server = Server::start(&env, &[]);
    let api_status = server.api("/api/status");
    let api_log = server.api("/api/log");
    let api_audit = server.api("/api/audit");
    let api_remotes = server.api("/api/remotes");

    let cli_status = cli_json(&env, &["status", "--json"]);
    let cli_log = cli_json(&env, &["log", "--json"]);
    let cli_audit = cli_json(&env, &["log", "--audit", "--json"]);
    let cli_remotes = cli_json(&env, &["remote", "status", "--json"]);

    // The fixture really has what this test is about.
    let a = &cli_status[0];
    let b = &cli_status[1];
    assert_eq!(a["tier"], "a", "{cli_status:#}");
    assert!(
        a["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "tier-a/pending.txt"),
        "{a:#}"
    );
    assert_eq!(
        a["critical"],
        serde_json::json!(["tier-a/.hidden-key"]),
        "{a:#}"
    );
    assert_eq!(
        b["critical_missing"],
        serde_json::json!(["tier-b/notes.hidden.txt"]),
        "{b:#}"
    );
    assert_eq!(cli_log.as_array().unwrap().len(), 3, "{cli_log:#}");
    assert!(
        cli_log
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["tags"] == serde_json::json!(["v1"])),
        "{cli_log:#}"
    );
    assert!(
        cli_audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["command"] == "checkout" && e["result"] == "failed"),
        "{cli_audit:#}"
    );
    assert_eq!(cli_remotes[0]["remote"], "usb", "{cli_remotes:#}");

    assert_eq!(
        api_status, cli_status,
        "/api/status vs mirror status --json"
    );
    assert_eq!(api_log, cli_log, "/api/log vs mirror log --json");
    assert_eq!(
        api_audit, cli_audit,
        "/api/audit vs mirror log --audit --json"
    );
    assert_eq!(
        api_remotes, cli_remotes,
        "/api/remotes vs mirror remote status --json"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. escaping

// Proves: file, tier and remote names and messages are HTML-escaped on page, fragment, report.
#[test]
fn every_name_and_message_is_html_escaped_on_the_page_fragment_and_report() {
    let env = Env::new();
    env.write("tier-a/a.txt", "a\n");
    env.write("tier-c/c.txt", "c\n");
    env.init(&["a=tier-a", "t<i>\"&=tier-c"]);
    env.ok(&["snapshot"]);
    env.ok(&["tag", "v1", "-m", "<script>alert(1)</script> in a message"]);
    // Pending, never snapshotted: a directory `<script>alert(1)<` holding `script>.txt`.
    mkdir(&env.path(XSS_DIR));
    env.write(XSS_FILE, "x\n");
    env.write("tier-a/q\"a&b.txt", "q\n");
    let out = env.mirror(&["checkout", "<img src=x onerror=alert(2)>"]);
    assert_ne!(out.status.code(), Some(0), "checkout of nothing must fail");
    env.ok(&["remote", "add", "evil", "<svg onload=alert(3)>"]);

    let server = Server::start(&env, &[]);
    // The remote is checked in the background; wait so its state is on the page too.
    server.api("/api/remotes");
    let page = server.wait_for("/", "<p class=\"dim\">checked ");
    let fragment = server.page("/fragment");
    let report_path = env.root().join("report.html");
    env.ok(&["report", "--html", report_path.to_str().unwrap()]);
    let report = std::fs::read_to_string(&report_path).unwrap();

    for (what, html) in [
        ("page", &page),
        ("fragment", &fragment),
        ("report", &report),
    ] {
        for raw in ["<script>alert(1)", "<img", "<svg onload", "<i>", "q\"a&b"] {
            assert!(
                !html.contains(raw),
                "{what} holds unescaped {raw:?}:\n{html}"
            );
        }
        for escaped in [
            &format!("tier-a/{XSS_ESCAPED}") as &str,
            "tier-a/q&quot;a&amp;b.txt",
            "data-tier=\"t&lt;i&gt;&quot;&amp;\"",
            "&lt;script&gt;alert(1)&lt;/script&gt; in a message",
            "&lt;img src=x onerror=alert(2)&gt;",
            "&lt;svg onload=alert(3)&gt;",
        ] {
            assert!(html.contains(escaped), "{what} lacks {escaped:?}:\n{html}");
        }
    }
    assert_eq!(
        page.matches("<script").count(),
        1,
        "the live page loads exactly its own script:\n{page}"
    );
    assert!(
        page.contains("<script src=\"/dashboard.js\"></script>"),
        "{page}"
    );
    assert_eq!(fragment.matches("<script").count(), 0, "{fragment}");
    assert_eq!(report.matches("<script").count(), 0, "{report}");
}

// ---------------------------------------------------------------------------------------------
// 3. read-only, nothing leaked

// Proves: no writes, no file contents, 405 for non-GET, 404 for unknown paths, 421 foreign Host.
#[test]
fn the_server_is_read_only_serves_no_contents_and_refuses_other_methods_paths_and_hosts() {
    const MARKER: &str = "MARKER-dashboard-7c1e9a5b-never-served";
    let env = Env::new();
    env.write("tier-a/a.txt", "a\n");
    env.write("tier-a/secret.txt", MARKER);
    env.write("tier-a/.hidden-key", MARKER);
    env.write("tier-b/b.txt", "b\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);
    env.ok(&["tag", "v1"]);
    let usb = env.root().join("usb.git");
    env.ok(&["remote", "add", "usb", usb.to_str().unwrap()]);
    env.ok(&["push"]);
    env.write("tier-a/pending.txt", MARKER);

    let refs_before = shadow_refs(&env);
    let shadow_before = stat_tree(&env.shadow);
    let project_before = tree(&env.project, &[]);
    let home_before = stat_tree(&env.home);

    let server = Server::start(&env, &[]);
    let routes = [
        "/",
        "/fragment",
        "/dashboard.js",
        "/api/status",
        "/api/log",
        "/api/audit",
        "/api/remotes",
    ];
    let mut responses = Vec::new();
    for path in routes {
        let r = server.get(path);
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        responses.push((format!("GET {path}"), r));
        let r = server.request("HEAD", path);
        assert_eq!(r.status, 200, "HEAD {path}: {r:?}");
        responses.push((format!("HEAD {path}"), r));
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in routes {
            let r = server.request(method, path);
            assert_eq!(r.status, 405, "{method} {path} must be refused: {r:?}");
            responses.push((format!("{method} {path}"), r));
        }
    }
    for path in [
        "/nope",
        "/api/nope",
        "/../../etc/passwd",
        "/%2e%2e/mirror.yaml",
        "/mirror.yaml",
        "/tier-a/secret.txt",
        "/tier-a/a.txt",
        "/api/status/../../tier-a/secret.txt",
        "/api",
        "/api/",
        "/index.html",
        "/.git/config",
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 404, "GET {path}: {r:?}");
        responses.push((format!("GET {path}"), r));
    }
    for (what, r) in &responses {
        assert!(
            !r.body.contains(MARKER),
            "{what} served a file's contents:\n{}",
            r.body
        );
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy: {r:?}"));
        assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}: {r:?}"
        );
    }

    // A page elsewhere whose DNS name was rebound to 127.0.0.1 is refused.
    let r = http(
        server.port,
        "GET",
        "/api/status",
        &format!("evil.example:{}", server.port),
    );
    assert_eq!(r.status, 421, "{r:?}");
    assert!(!r.body.contains(MARKER), "{r:?}");
    assert!(
        r.header("content-security-policy").is_some(),
        "the refusal carries the security headers too: {r:?}"
    );
    let r = http(
        server.port,
        "GET",
        "/",
        &format!("localhost:{}", server.port),
    );
    assert_eq!(r.status, 200, "localhost:PORT is this dashboard: {r:?}");

    assert_eq!(shadow_refs(&env), refs_before, "the shadow's refs changed");
    assert_eq!(
        stat_tree(&env.shadow),
        shadow_before,
        "files under the shadow changed"
    );
    assert_eq!(
        tree(&env.project, &[]),
        project_before,
        "the project changed"
    );
    assert_eq!(stat_tree(&env.home), home_before, "HOME changed");
}

// ---------------------------------------------------------------------------------------------
// 4. never decrypts

// Proves: with the identity present the dashboard still never decrypts (status --json does).
#[test]
fn the_dashboard_never_decrypts_even_with_the_identity_present() {
    let env = project();
    assert!(env.identity().is_file(), "init --encrypt made an identity");
    let key = env.path("tier-a/.hidden-key");
    let md = std::fs::metadata(&key).unwrap();
    set_mtime(&key, md.mtime() - 1000, 0);

    let cli = cli_json(&env, &["status", "--json"]);
    assert_eq!(cli[0]["tier"], "a");
    assert_eq!(
        cli[0]["changes"],
        serde_json::json!([]),
        "status decrypts and finds the same content: {cli:#}"
    );
    assert_eq!(cli[0]["warnings"], serde_json::json!([]), "{cli:#}");

    let server = Server::start(&env, &[]);
    let api = server.api("/api/status");
    let a = &api[0];
    assert_eq!(a["tier"], "a");
    assert_eq!(
        a["changes"],
        serde_json::json!([{"status": "M", "path": "tier-a/.hidden-key"}]),
        "{a:#}"
    );
    assert_eq!(a["counts"]["modified"], 1, "{a:#}");
    let warnings = a["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains(".hidden-key") && w.contains("never decrypts")
        }),
        "{a:#}"
    );
    let page = server.page("/");
    assert!(page.contains("never decrypts"), "{page}");
}

// ---------------------------------------------------------------------------------------------
// 5. robustness

// Proves: malformed requests do not hurt the server; 100 concurrent clients get the same 200.
#[test]
fn the_server_survives_malformed_requests_and_answers_100_concurrent_clients() {
    let env = project();
    env.write("tier-a/pending.txt", "pending\n");
    let server = Server::start(&env, &[]);
    let port = server.port;
    let reference = server.page("/api/status");

    // Garbage: answered with a 4xx (or dropped), never a success.
    let reply = exchange(port, b"\x00\x01garbage\r\n\r\n").unwrap_or_default();
    if !reply.is_empty() {
        let r = parse_response(&reply)
            .unwrap_or_else(|| panic!("not HTTP: {:?}", String::from_utf8_lossy(&reply)));
        assert!((400..500).contains(&r.status), "{r:?}");
    }
    // An incomplete request, then the connection closed.
    {
        let mut s = connect(port);
        s.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1")
            .unwrap();
    }
    // A 1 MiB header line: refused (or the connection dropped), never served.
    let mut big = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: ").into_bytes();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    if let Ok(reply) = exchange(port, &big) {
        if !reply.is_empty() {
            let r = parse_response(&reply)
                .unwrap_or_else(|| panic!("not HTTP: {:?}", String::from_utf8_lossy(&reply)));
            assert!((400..500).contains(&r.status), "{r:?}");
        }
    }
    // Connections opened and closed without a byte.
    for _ in 0..20 {
        drop(connect(port));
    }

    let barrier = Arc::new(Barrier::new(100));
    let results: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let barrier = barrier.clone();
                let host = server.host();
                scope.spawn(move || {
                    barrier.wait();
                    http(port, "GET", "/api/status", &host)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.status, 200, "client {i}: {r:?}");
        assert_eq!(r.body, reference, "client {i} got a different body");
    }
    assert!(server.page("/").contains("<svg id=\"timeline\""));
}

// ---------------------------------------------------------------------------------------------
// 6. --bind

// Proves: --bind 0.0.0.0 warns that file names are exposed; the default bind prints no warning.
#[test]
fn bind_to_all_addresses_warns_that_names_are_exposed_and_the_default_does_not() {
    let env = project();

    let open = Server::start(&env, &["--bind", "0.0.0.0"]);
    assert!(open.url.starts_with("http://127.0.0.1:"), "{}", open.url);
    open.api("/api/status");
    // Bound to every address, a rebinding page (its own DNS name) is still refused.
    let r = http(
        open.port,
        "GET",
        "/api/status",
        &format!("attacker.example:{}", open.port),
    );
    assert_eq!(r.status, 421, "{r:?}");
    let err = open.stop();
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && l.contains("file names")),
        "a warning that file names are exposed:\n{err}"
    );

    let local = Server::start(&env, &[]);
    local.api("/api/status");
    local.page("/");
    let err = local.stop();
    assert!(
        !err.to_lowercase().contains("warning"),
        "no warning on the default bind:\n{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. staleness and the schedule

/// Append `schedule: interval: TEXT` to mirror.yaml.
fn set_interval(env: &Env, text: &str) {
    let mut yaml = String::from_utf8(env.read("mirror.yaml")).unwrap();
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml.push_str(&format!("schedule:\n  interval: {text}\n"));
    env.write("mirror.yaml", yaml);
}

// Proves: a snapshot older than schedule.interval is red in the verdict and the tier's row.
#[test]
fn a_snapshot_older_than_the_interval_is_flagged_in_the_verdict_and_the_tier_row() {
    let env = project();
    set_interval(&env, "1s");
    env.write("tier-a/a.txt", "a v2, longer\n");
    env.ok(&["snapshot"]);
    let taken = Instant::now();
    while taken.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = Server::start(&env, &[]);
    let page = server.page("/");
    let v = verdict(&page);
    assert!(v.contains("class=\"verdict bad\""), "{v}");
    for tier in ["a", "b"] {
        let line = v
            .split("<li>")
            .find(|l| l.starts_with(&format!("tier {tier}: last ")) && l.contains("snapshot"))
            .unwrap_or_else(|| panic!("tier {tier} is overdue in the verdict: {v}"));
        assert!(line.contains(" ago (expected every 1 s)"), "{line}");
        let row = tier_row(&page, tier);
        assert!(
            row.contains("<td class=\"bad\" title=\"expected every 1 s\">"),
            "tier {tier}'s last-snapshot cell is red: {row}"
        );
    }
}

// Proves: right after a snapshot (default 1 h interval) the verdict is green, pending or not.
#[test]
fn a_fresh_snapshot_with_the_default_interval_gives_a_green_verdict() {
    let env = project();
    env.write("tier-b/new.txt", "pending\n");
    let server = Server::start(&env, &[]);
    let page = server.page("/");
    let v = verdict(&page);
    assert!(v.contains("class=\"verdict ok\""), "{v}");
    assert!(v.contains("All 2 tier(s) protected"), "{v}");
    for tier in ["a", "b"] {
        let row = tier_row(&page, tier);
        assert!(
            row.contains("<td class=\"ok\" title=\"expected every 1 h\">"),
            "{row}"
        );
    }
    assert!(tier_row(&page, "b").contains("tier-b/new.txt"));
}

// Proves: a tier that a later snapshot run found unchanged counts as covered (from the audit
// trail: `mirror snapshot`'s per-tier details and the hook's `details.snapshot`), not overdue.
#[test]
fn a_tier_found_unchanged_by_a_later_run_is_not_overdue() {
    let env = project();
    set_interval(&env, "15s");
    let taken = Instant::now();
    while taken.elapsed() < Duration::from_secs(16) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Only tier a is checked: b stays overdue.
    assert!(env.ok(&["snapshot", "--tier", "a"]).contains("unchanged"));
    let server = Server::start(&env, &[]);
    let page = server.page("/");
    let v = verdict(&page);
    assert!(!v.contains("tier a:"), "a was just checked: {v}");
    assert!(v.contains("tier b: last covered by a snapshot"), "{v}");
    let row = tier_row(&page, "a");
    assert!(row.contains("<td class=\"ok\""), "{row}");
    assert!(row.contains("unchanged since; checked"), "{row}");
    assert!(tier_row(&page, "b").contains("<td class=\"bad\""));
    drop(server);

    // A pre-commit hook run covers both.
    assert_exit(
        &env.mirror(&["hook", "pre-commit"]),
        0,
        "mirror hook pre-commit",
    );
    let server = Server::start(&env, &[]);
    let page = server.page("/");
    let v = verdict(&page);
    assert!(v.contains("class=\"verdict ok\""), "{v}");
    assert!(tier_row(&page, "b").contains("unchanged since; checked"));
}

// Proves: an invalid schedule.interval makes every command fail, naming the setting.
#[test]
fn an_invalid_interval_fails_every_command_naming_schedule_interval() {
    let env = project();
    set_interval(&env, "soon");
    let report = env.root().join("r.html");
    for (what, args) in [
        ("status", vec!["status"]),
        ("snapshot", vec!["snapshot"]),
        ("log", vec!["log"]),
        ("dashboard", vec!["dashboard", "--port", "0"]),
        (
            "report",
            vec!["report", "--html", report.to_str().unwrap(), "--no-remotes"],
        ),
    ] {
        let out = mirror_bounded(&env, &args, what);
        assert_ne!(out.status.code(), Some(0), "{what} must fail");
        assert!(out.status.code().is_some(), "{what} exits, not killed");
        assert!(
            stderr(&out).contains("schedule.interval"),
            "{what} names the setting:\n{}",
            stderr(&out)
        );
        assert!(
            !stdout(&out).contains("http://"),
            "{what} never listens: {}",
            stdout(&out)
        );
    }
    assert!(!report.exists(), "no report written");
}

// ---------------------------------------------------------------------------------------------
// 8. remotes

// Proves: the remotes table shows unreachable, in sync (with last push) and behind by 1.
#[test]
fn remotes_show_unreachable_in_sync_and_behind_with_their_pushes() {
    let env = project();
    let usb = env.root().join("usb.git");
    let old = env.root().join("old.git");
    let file = env.root().join("not-a-repository");
    std::fs::write(&file, "just a file\n").unwrap();
    env.ok(&["remote", "add", "usb", usb.to_str().unwrap()]);
    env.ok(&["remote", "add", "old", old.to_str().unwrap()]);
    env.ok(&["push"]);
    env.ok(&["remote", "add", "gone", file.to_str().unwrap()]);
    env.write("tier-a/a.txt", "a v2, longer\n");
    env.ok(&["snapshot"]);
    env.ok(&["push", "usb"]);
    let out = env.mirror(&["push", "gone"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "pushing into a regular file fails"
    );

    let server = Server::start(&env, &[]);
    server.api("/api/remotes");
    let page = server.wait_for("/", "<p class=\"dim\">checked ");

    let usb_row = remote_row(&page, "usb");
    assert!(
        usb_row.contains("<td class=\"ok\">in sync</td>"),
        "{usb_row}"
    );
    let usb_cells = cells(usb_row);
    assert_eq!(
        usb_cells.len(),
        4,
        "name, state, last push, last attempt: {usb_row}"
    );
    assert!(
        usb_cells[2].contains(" ago)") && !usb_cells[2].contains("never"),
        "a last successful push time: {usb_row}"
    );
    assert!(usb_cells[3].contains("pushed"), "{usb_row}");

    let old_row = remote_row(&page, "old");
    assert!(old_row.contains("class=\"bad\">behind by 1"), "{old_row}");
    assert!(!old_row.contains("never"), "old was pushed once: {old_row}");

    let gone_row = remote_row(&page, "gone");
    assert!(gone_row.contains("class=\"bad\">unreachable"), "{gone_row}");
    let gone_cells = cells(gone_row);
    assert_eq!(gone_cells.len(), 4, "{gone_row}");
    assert_eq!(
        gone_cells[2], "never",
        "never pushed successfully: {gone_row}"
    );
    assert!(
        gone_cells[3].contains("failed"),
        "its last attempt failed: {gone_row}"
    );

    let v = verdict(&page);
    assert!(v.contains("remote old: behind by 1"), "{v}");
    assert!(v.contains("remote gone: unreachable"), "{v}");
    assert!(!v.contains("remote usb"), "{v}");
}

// ---------------------------------------------------------------------------------------------
// 9. verify

/// Flip a byte in the middle of the loose object file of `id`.
fn corrupt_loose(env: &Env, id: &str) {
    let path = env.shadow.join("objects").join(&id[..2]).join(&id[2..]);
    let mut data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = data.len() / 2;
    data[at] ^= 0xff;
    chmod(&path, 0o644);
    std::fs::write(&path, data).unwrap();
}

// Proves: Integrity shows never verified, then (live) a clean verify, then a failed one's problems.
#[test]
fn verify_results_appear_on_the_page() {
    let env = Env::new();
    let mut big = String::new();
    for i in 0..400u32 {
        big.push_str(&format!("{i:05} {:08x}\n", i.wrapping_mul(0x9e37_79b9)));
    }
    env.write("tier-a/big.txt", &big);
    env.write("tier-b/b.txt", "b\n");
    env.init(&["a=tier-a", "b=tier-b"]);
    env.ok(&["snapshot"]);

    let server = Server::start(&env, &[]);
    let page = server.page("/");
    assert!(page.contains("Never verified"), "{page}");

    env.ok(&["verify"]);
    let page = server.wait_for("/fragment", "no problems");
    assert!(page.contains("<p class=\"ok\">Last verify "), "{page}");
    assert!(!page.contains("Never verified"), "{page}");
    drop(server);

    let out = env.shadow_git(&["rev-parse", "refs/heads/tiers/a:big.txt"]);
    assert_exit(&out, 0, "rev-parse big.txt");
    corrupt_loose(&env, stdout(&out).trim());
    let out = env.mirror(&["verify", "--json"]);
    assert_exit(&out, 1, "verify of a damaged shadow");
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let found = report["problems"].as_array().expect("problems").len();
    assert!(found >= 1, "{report:#}");

    let server = Server::start(&env, &[]);
    let page = server.page("/");
    assert!(page.contains("<p class=\"bad\">Last verify "), "{page}");
    assert!(page.contains(&format!(": {found} problem(s): ")), "{page}");
    assert!(
        verdict(&page).contains("the last verify found problems"),
        "{}",
        verdict(&page)
    );
}

// ---------------------------------------------------------------------------------------------
// 10. the static report

/// What a static report page must (not) hold.
fn assert_static_report(html: &str, tiers: &[&str], what: &str) {
    assert!(html.starts_with("<!doctype html>"), "{what}:\n{html}");
    for tier in tiers {
        assert!(
            html.contains(&format!("data-tier=\"{tier}\"")),
            "{what} lacks tier {tier}:\n{html}"
        );
    }
    assert!(html.contains("<svg id=\"timeline\""), "{what}:\n{html}");
    assert!(html.contains("<circle class=\"mark"), "{what}:\n{html}");
    for banned in ["<script", "src=", "http://", "https://"] {
        assert!(!html.contains(banned), "{what} holds {banned:?}:\n{html}");
    }
    assert!(html.trim_end().ends_with("</html>"), "{what} is whole");
}

// Proves: report --html FILE|- is self-contained (tiers, chart, no script/URLs), writes no ref.
#[test]
fn report_html_writes_a_self_contained_page_to_a_file_or_stdout_and_changes_nothing() {
    let env = project();
    env.write("tier-a/a.txt", "a v2, longer\n");
    env.ok(&["snapshot"]);
    let refs = shadow_refs(&env);
    let shadow_files = stat_tree(&env.shadow);

    let file = env.root().join("out.html");
    let out = env.mirror(&["report", "--html", file.to_str().unwrap(), "--no-remotes"]);
    assert_exit(&out, 0, "report --html FILE");
    assert!(
        stdout(&out).contains(&file.display().to_string()),
        "{}",
        stdout(&out)
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert_static_report(&html, &["a", "b"], "report file");
    assert!(html.matches("<circle class=\"mark").count() >= 3, "{html}");

    let out = env.mirror(&["report", "--html", "-", "--no-remotes"]);
    assert_exit(&out, 0, "report --html -");
    assert_static_report(&stdout(&out), &["a", "b"], "report on stdout");

    assert_eq!(shadow_refs(&env), refs, "report changed the shadow's refs");
    assert_eq!(
        stat_tree(&env.shadow),
        shadow_files,
        "report wrote into the shadow"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. a real browser

// Proves: in headless chromium the script refreshes, every tier and the chart render, PNG shot.
#[test]
fn headless_chromium_renders_every_tier_and_the_chart_and_the_script_refreshes() {
    let env = project();
    env.write("tier-b/b.txt", "b v2, longer\n");
    env.ok(&["snapshot"]);
    let server = Server::start(&env, &[]);

    let out = chromium(&env, &["--dump-dom", &server.url], "chromium-dump-dom");
    let dom = stdout(&out);
    for tier in ["a", "b"] {
        assert!(dom.contains(&format!("data-tier=\"{tier}\"")), "{dom}");
    }
    let svg = dom
        .find("<svg id=\"timeline\"")
        .unwrap_or_else(|| panic!("{dom}"));
    assert!(dom[svg..].contains("<circle"), "{dom}");
    let at = dom
        .find("data-refreshed=\"")
        .unwrap_or_else(|| panic!("the script never refreshed the page:\n{dom}"));
    let count: String = dom[at + "data-refreshed=\"".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let count: u32 = count.parse().unwrap_or_else(|e| panic!("{e}: {dom}"));
    assert!(count >= 1, "{dom}");
    assert!(!dom.contains("cannot reach the dashboard server"), "{dom}");

    let png = env.root().join("dashboard.png");
    chromium(
        &env,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1200",
            &server.url,
        ],
        "chromium-screenshot",
    );
    let data = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(data.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(data.len() > 10 * 1024, "{} bytes", data.len());
}

// ---------------------------------------------------------------------------------------------
// review findings

// Proves: a password or token in a remote URL never reaches the page, the API, the report or
// `mirror remote status --json`.
#[test]
fn remote_url_secrets_are_hidden_everywhere_they_are_shown() {
    let env = project();
    env.ok(&[
        "remote",
        "add",
        "nas",
        "https://alice:s3cret-pw@127.0.0.1:9/backup.git",
    ]);
    env.ok(&[
        "remote",
        "add",
        "hub",
        "https://tok3n-value@127.0.0.1:9/b.git",
    ]);
    let cli = env.mirror(&["remote", "status", "--json"]);
    let server = Server::start(&env, &[]);
    let api = server.get("/api/remotes");
    let page = server.page("/");
    let report = env.root().join("r.html");
    env.ok(&["report", "--html", report.to_str().unwrap()]);
    let report = std::fs::read_to_string(report).unwrap();
    for (what, text) in [
        ("remote status --json", stdout(&cli)),
        ("/api/remotes", api.body.clone()),
        ("/", page.clone()),
        ("report", report),
    ] {
        assert!(
            !text.contains("s3cret-pw"),
            "{what} shows the password:\n{text}"
        );
        assert!(
            !text.contains("tok3n-value"),
            "{what} shows the token:\n{text}"
        );
        assert!(text.contains("alice:***@127.0.0.1:9"), "{what}:\n{text}");
    }
}

// Proves: `report --html` through a symlink writes the file it points to and keeps the link.
#[test]
fn report_through_a_symlink_keeps_the_link() {
    let env = project();
    let target = env.root().join("real.html");
    std::fs::write(&target, "old").unwrap();
    let link = env.root().join("link.html");
    symlink(&target, &link);
    env.ok(&["report", "--no-remotes", "--html", link.to_str().unwrap()]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is still a link"
    );
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(written.contains("<svg id=\"timeline\""), "{written}");
}

// Proves: SIGINT ends the server even while a client holds a half-sent request open.
#[test]
fn sigint_stops_the_server_despite_a_half_sent_request() {
    let env = project();
    let mut server = Server::start(&env, &[]);
    server.page("/");
    let mut stuck = connect(server.port);
    stuck
        .write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let pid = server.proc.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child; no memory is touched.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = server
        .proc
        .wait_bounded(Duration::from_secs(30), "dashboard after SIGINT");
    assert!(status.success(), "{status:?}");
    drop(stuck);
}
