//! `mirror dashboard`

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context as _;

use super::{Context, Exit};

/// Serve a read-only monitoring page (and a JSON API) on 127.0.0.1 until Ctrl-C.
///
/// The page shows each tier's last snapshot, pending changes and critical files, a timeline
/// of snapshots, recent failures, milestones, the remotes' state and the last verify. The
/// API: /api/status, /api/log, /api/audit and /api/remotes, the same JSON as `mirror status
/// --json`, `mirror log --json`, `mirror log --audit --json` and `mirror remote status
/// --json`.
#[derive(clap::Args)]
pub struct Args {
    /// Port to listen on (default: a free one, printed).
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Address to listen on. Anything but a loopback address exposes file names to the
    /// network, without a login.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,

    /// Seconds between the page's refreshes.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    refresh: u32,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    // Opened once here so a missing project fails at once, before anything listens.
    let (project, _shadow) = mirror::dashboard::open(&ctx.cwd)?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("could not listen on {addr} (try another --port)"))?;
    let bound = listener.local_addr()?;
    if !args.bind.is_loopback() {
        eprintln!(
            "warning: listening on {bound}: anyone who can reach this address sees the project's file names, tier paths and remote URLs (there is no login; requests must name the server by IP address); the default --bind 127.0.0.1 keeps it to this machine"
        );
    }
    let url = match bound.ip() {
        ip if ip.is_unspecified() => format!("http://127.0.0.1:{}/", bound.port()),
        _ => format!("http://{bound}/"),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "mirror dashboard: {url} (read-only; Ctrl-C stops it)")?;
    // Scripts wait for this line to learn the port.
    out.flush()?;
    drop(out);
    mirror::dashboard::serve::serve(
        listener,
        mirror::dashboard::serve::Settings {
            root: project.root,
            refresh_secs: args.refresh,
            stale_after: std::time::Duration::from_secs(5),
            remotes_every: std::time::Duration::from_secs(60),
        },
    )?;
    Ok(Exit::Ok)
}
