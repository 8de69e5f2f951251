//! The dashboard's HTTP server (axum on a two-thread tokio runtime). Read-only: only `GET`
//! (and `HEAD`) routes exist, none of them writes anything or serves file contents.
//!
//! Gathering scans every tier, so results are shared: the first request after the data went
//! stale gathers while concurrent ones wait for that result (one scan for a hundred clients).
//! Remotes are asked by a background thread, because a slow remote must not hold up the page.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::html::{self, Mode};
use super::{Dashboard, Local, RemoteCheck, TotalsMemo};
use crate::history::Snapshot;

/// After SIGINT/SIGTERM, open requests get this long before the server exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// `/api/remotes` waits at most this long for the first check of the remotes.
const REMOTES_WAIT: Duration = Duration::from_secs(30);
/// Remotes are asked only while someone looked at the page or the API this recently.
const REMOTES_WANTED_FOR: Duration = Duration::from_secs(300);

/// `mirror log --json` and `mirror log --audit --json` list this many by default.
const API_LIST: usize = 50;

pub struct Settings {
    /// The project root.
    pub root: PathBuf,
    /// The page refreshes itself this often.
    pub refresh_secs: u32,
    /// Local data is gathered again when older than this.
    pub stale_after: Duration,
    /// Remotes are asked again this often.
    pub remotes_every: Duration,
}

/// Everything the handlers share.
struct Shared {
    settings: Settings,
    addr: SocketAddr,
    local: Mutex<Option<(Instant, Gathered)>>,
    memo: Mutex<TotalsMemo>,
    remotes: Mutex<Option<Result<Arc<RemoteCheck>, String>>>,
    remotes_ready: Condvar,
    /// When the page or the remotes API was last requested.
    last_wanted: Mutex<Instant>,
}

/// One gathering: the page's data and the API's lists, or why it failed.
type Gathered = Result<Arc<Data>, Arc<String>>;

struct Data {
    local: Local,
    log: Vec<Snapshot>,
}

/// A mutex whose holder panicked still guards valid data here (every writer replaces the
/// whole value), so poisoning is not a reason to stop serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn gather(&self) -> Gathered {
        let run = || -> Result<Data> {
            let (project, shadow) = super::open(&self.settings.root)?;
            let local = super::gather_local(&project, &shadow, &mut lock(&self.memo))?;
            let tiers: Vec<String> = project.config.tier_names();
            let log = crate::history::log(&shadow, &tiers, API_LIST)?;
            Ok(Data { local, log })
        };
        run().map(Arc::new).map_err(|e| Arc::new(format!("{e:#}")))
    }

    /// The local data, gathered now if stale. Holding the lock while gathering makes
    /// concurrent requests wait for this one result instead of scanning again each.
    fn data(&self) -> Gathered {
        let mut slot = lock(&self.local);
        if let Some((at, data)) = slot.as_ref() {
            if at.elapsed() < self.settings.stale_after {
                return data.clone();
            }
        }
        let data = self.gather();
        *slot = Some((Instant::now(), data.clone()));
        data
    }

    fn remotes_now(&self) -> Option<Result<Arc<RemoteCheck>, String>> {
        lock(&self.remotes).clone()
    }

    /// The remotes' state, waiting for the first check if it has not finished yet (each
    /// remote is bounded by the git timeout, so this wait is too).
    fn remotes_wait(&self) -> Result<Arc<RemoteCheck>, String> {
        self.wanted();
        let guard = lock(&self.remotes);
        let (guard, _) = self
            .remotes_ready
            .wait_timeout_while(guard, REMOTES_WAIT, |r| r.is_none())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.clone().unwrap_or_else(|| {
            Err(format!(
                "the remotes have not answered yet (waited {} s); try again later",
                REMOTES_WAIT.as_secs()
            ))
        })
    }

    /// Someone looked: keep the remotes' state fresh for a while.
    fn wanted(&self) {
        *lock(&self.last_wanted) = Instant::now();
    }

    fn check_remotes_forever(self: Arc<Self>) {
        loop {
            if lock(&self.last_wanted).elapsed() > REMOTES_WANTED_FOR {
                // Nobody is looking: no logins on the remotes every minute for nothing.
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
            let check = super::open(&self.settings.root)
                .map(|(project, shadow)| Arc::new(super::check_remotes(&project, &shadow)))
                .map_err(|e| format!("{e:#}"));
            *lock(&self.remotes) = Some(check);
            self.remotes_ready.notify_all();
            std::thread::sleep(self.settings.remotes_every);
        }
    }

    fn render(&self, fragment: bool) -> Response {
        self.wanted();
        let data = match self.data() {
            Ok(d) => d,
            Err(e) => return failure_page(&e),
        };
        let remotes = self.remotes_now();
        let mut local_errors = Vec::new();
        let check = match &remotes {
            Some(Ok(c)) => Some(c.as_ref()),
            Some(Err(e)) => {
                local_errors.push(format!("remotes: {e}"));
                None
            }
            None => None,
        };
        let dashboard = Dashboard {
            local: &data.local,
            remotes: check,
            extra_errors: &local_errors,
        };
        let body = if fragment {
            html::fragment(&dashboard)
        } else {
            html::page(
                &dashboard,
                &Mode::Live {
                    refresh_secs: self.settings.refresh_secs,
                },
            )
        };
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
    }
}

fn failure_page(error: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><title>mirror dashboard</title><h1>mirror</h1>\
             <p>Could not read the project: {}</p>",
            html::escape(error)
        ),
    )
        .into_response()
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => json_error(&format!("could not encode the response: {e}")),
    }
}

fn json_error(message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

/// Run `work` (which may scan the disk or wait) off the async threads.
async fn blocking<F>(shared: Arc<Shared>, work: F) -> Response
where
    F: FnOnce(&Shared) -> Response + Send + 'static,
{
    match tokio::task::spawn_blocking(move || work(&shared)).await {
        Ok(response) => response,
        Err(e) => json_error(&format!("internal error: {e}")),
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/",
            get(|State(s): State<Arc<Shared>>| blocking(s, |s| s.render(false))),
        )
        .route(
            "/fragment",
            get(|State(s): State<Arc<Shared>>| blocking(s, |s| s.render(true))),
        )
        .route(
            "/dashboard.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    html::SCRIPT,
                )
            }),
        )
        .route(
            "/api/status",
            get(|State(s): State<Arc<Shared>>| {
                blocking(s, |s| match s.data() {
                    Ok(d) => {
                        let tiers: Vec<_> = d.local.tiers.iter().map(|t| &t.status).collect();
                        json_response(&tiers)
                    }
                    Err(e) => json_error(&e),
                })
            }),
        )
        .route(
            "/api/log",
            get(|State(s): State<Arc<Shared>>| {
                blocking(s, |s| match s.data() {
                    Ok(d) => json_response(&d.log),
                    Err(e) => json_error(&e),
                })
            }),
        )
        .route(
            "/api/audit",
            get(|State(s): State<Arc<Shared>>| {
                blocking(s, |s| match s.data() {
                    // The newest of the entries the page was gathered from.
                    Ok(d) => match &d.local.audit {
                        Some(entries) => json_response(&&entries[..API_LIST.min(entries.len())]),
                        None => json_error(&d.local.errors.join("; ")),
                    },
                    Err(e) => json_error(&e),
                })
            }),
        )
        .route(
            "/api/remotes",
            get(|State(s): State<Arc<Shared>>| {
                blocking(s, |s| match s.remotes_wait() {
                    Ok(check) => json_response(&check.statuses),
                    Err(e) => json_error(&e),
                })
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Refuse requests for other host names (DNS rebinding) and add headers that keep a browser
/// from running or framing anything the page did not come with.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let mut response = if !host_allowed(&request, shared.addr) {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only to requests naming it by IP address or localhost\n",
        )
            .into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A request is answered only when its `Host` names this server by an IP address or
/// `localhost`, with the port it listens on. A page that rebinds its own DNS name to this
/// machine sends that name, and is refused; naming the server by IP is what a person does.
fn host_allowed(request: &Request, addr: SocketAddr) -> bool {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let (name, port) = match host.rsplit_once(':') {
        // `[::1]:8080` or `127.0.0.1:8080`; a bare `[::1]` has its colons inside brackets.
        Some((name, port)) if !port.contains(']') => (name, port.parse::<u16>().ok()),
        _ => (host, None),
    };
    // Browsers leave the default port out.
    let port = port.or((addr.port() == 80).then_some(80));
    if port != Some(addr.port()) {
        return false;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok()
}

/// Serve on `listener` until SIGINT or SIGTERM.
pub fn serve(listener: std::net::TcpListener, settings: Settings) -> Result<()> {
    let addr = listener
        .local_addr()
        .context("could not read the listening address")?;
    listener
        .set_nonblocking(true)
        .context("could not set the listening socket non-blocking")?;
    let shared = Arc::new(Shared {
        settings,
        addr,
        local: Mutex::new(None),
        memo: Mutex::new(TotalsMemo::new()),
        remotes: Mutex::new(None),
        remotes_ready: Condvar::new(),
        // The first check runs at once: the page is usually opened right after starting.
        last_wanted: Mutex::new(Instant::now()),
    });
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("remote-check".into())
            .spawn(move || shared.check_remotes_forever())
            .context("could not start the remote-check thread")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the HTTP runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("could not hand the socket to the runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, router(shared)).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        tokio::select! {
            result = server => result.context("the dashboard server failed"),
            // Open requests get a moment to finish; a client that never finishes sending (or
            // a request waiting for a hung remote) must not keep the process alive.
            () = async {
                shutdown().await;
                let _ = stop.send(());
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => Ok(()),
        }
    });
    // A request still waiting for a slow remote must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler the default action still ends the process.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str) -> Request {
        axum::http::Request::builder()
            .uri("/")
            .header(header::HOST, host)
            .body(axum::body::Body::empty())
            .expect("a valid request")
    }

    #[test]
    fn only_ip_literals_and_localhost_with_the_bound_port_are_answered() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "192.168.1.5:8080",
        ] {
            assert!(host_allowed(&with_host(ok), addr), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost",
            "",
            "localhost.:8080",
            "127.0.0.1.evil:8080",
            "127.0.0.1:8080.evil",
        ] {
            assert!(!host_allowed(&with_host(bad), addr), "{bad}");
        }
        let no_host = axum::http::Request::builder()
            .uri("/")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(!host_allowed(&no_host, addr));
    }

    #[test]
    fn on_port_80_a_host_without_port_is_answered() {
        // Browsers leave the default port out of `Host`.
        let addr: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert!(host_allowed(&with_host("127.0.0.1"), addr));
        assert!(host_allowed(&with_host("localhost"), addr));
        assert!(host_allowed(&with_host("[::1]"), addr));
        assert!(!host_allowed(&with_host("evil.example"), addr));
    }
}
