//! `mirror schedule`

use std::process::Command;

use anyhow::Context as _;

use super::{open_project, Context, Exit};

/// Run mirror without being asked: a systemd user service running `mirror watch` for this
/// project, or (`--cron`) the crontab line of a periodic snapshot.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Write and enable `~/.config/systemd/user/mirror-watch-NAME-HASH.service` (runs
    /// `mirror watch`), or with --cron print the crontab line instead.
    Install {
        /// Print a crontab line (`crontab -e`, or `(crontab -l; mirror schedule install
        /// --cron) | crontab -`) instead of installing a systemd service.
        #[arg(long)]
        cron: bool,
        /// Full snapshot at least this often (default: `schedule.interval`, or 1h).
        #[arg(long, value_name = "DURATION", value_parser = mirror::config::parse_duration)]
        interval: Option<std::time::Duration>,
    },
    /// Stop, disable and delete the systemd service of this project.
    Remove,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let (project, _shadow) = open_project(ctx)?;
    let mirror = std::env::current_exe().context("could not find the mirror binary's path")?;
    match args.command {
        Sub::Install {
            cron: true,
            interval,
        } => {
            let interval = interval.unwrap_or_else(|| project.config.schedule.interval());
            let (line, period) = mirror::schedule::cron_line(&project.root, &mirror, interval);
            if period != interval {
                eprintln!(
                    "note: cron cannot run every {} evenly; the line runs every {}",
                    humantime::format_duration(interval),
                    humantime::format_duration(period)
                );
            }
            println!("{line}");
            Ok(Exit::Ok)
        }
        Sub::Install {
            cron: false,
            interval,
        } => {
            let unit = mirror::schedule::unit(&project.root)?;
            let interval_text = interval.map(|i| humantime::format_duration(i).to_string());
            let text =
                mirror::schedule::service_text(&project.root, &mirror, interval_text.as_deref())?;
            let dir = unit.path.parent().unwrap_or(&unit.path);
            std::fs::create_dir_all(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
            mirror::store::write_atomically(&unit.path, text.as_bytes())?;
            println!("wrote {}", unit.path.display());
            // `restart`: a reinstall (a new --interval) must replace a service already running.
            let steps: [&[&str]; 3] = [
                &["daemon-reload"],
                &["enable", &unit.name],
                &["restart", &unit.name],
            ];
            for step in steps {
                if let Err(e) = systemctl(step) {
                    eprintln!("error: {e:#}");
                    eprintln!(
                        "the service is written but not running; once a systemd user session is available run:\n  systemctl --user daemon-reload && systemctl --user enable --now {}",
                        unit.name
                    );
                    return Ok(Exit::Error);
                }
            }
            println!(
                "enabled {}: `mirror watch` runs whenever you are logged in (`systemctl --user status {}`; `loginctl enable-linger` keeps it running after logout)",
                unit.name, unit.name
            );
            Ok(Exit::Ok)
        }
        Sub::Remove => {
            let unit = mirror::schedule::unit(&project.root)?;
            if !unit.path.exists() {
                println!(
                    "no service installed for this project ({} does not exist)",
                    unit.path.display()
                );
                return Ok(Exit::Ok);
            }
            // Stopped and disabled before the file goes, so systemd still knows what it is
            // stopping; if that fails the file stays, or its `wants` link would dangle.
            if let Err(e) = systemctl(&["disable", "--now", &unit.name]) {
                eprintln!("error: {e:#}");
                eprintln!(
                    "{} is left in place; once systemd is reachable run `systemctl --user disable --now {}` and `mirror schedule remove` again",
                    unit.path.display(),
                    unit.name
                );
                return Ok(Exit::Error);
            }
            std::fs::remove_file(&unit.path)
                .with_context(|| format!("could not remove {}", unit.path.display()))?;
            println!("removed {}", unit.path.display());
            if let Err(e) = systemctl(&["daemon-reload"]) {
                eprintln!("error: {e:#}");
                return Ok(Exit::Error);
            }
            Ok(Exit::Ok)
        }
    }
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("could not run `systemctl --user {}`", args.join(" ")))?;
    if !out.status.success() {
        anyhow::bail!(
            "`systemctl --user {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
