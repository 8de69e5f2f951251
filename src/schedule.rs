//! Installing a schedule (`mirror schedule`): a systemd user service that runs `mirror watch`
//! for the project, or the crontab line of a periodic `mirror snapshot`.
//!
//! Only text and files are made here; the CLI runs `systemctl --user` and reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

/// The systemd unit of the project at `root`: its name and the file it lives in.
pub struct Unit {
    pub name: String,
    pub path: PathBuf,
}

/// `$XDG_CONFIG_HOME/systemd/user` (default `~/.config/systemd/user`), where systemd looks
/// for a user's units.
pub fn unit_dir() -> Result<PathBuf> {
    Ok(crate::host::xdg_dir("XDG_CONFIG_HOME", ".config")?
        .join("systemd")
        .join("user"))
}

/// One unit per project: the directory name (for people) and a hash of the full path (for
/// two projects of the same name).
pub fn unit(root: &Path) -> Result<Unit> {
    use std::os::unix::ffi::OsStrExt;
    let clean = crate::init::name_slug(root, "root");
    let hash = crc32fast::hash(root.as_os_str().as_bytes());
    let name = format!("mirror-watch-{clean}-{hash:08x}.service");
    Ok(Unit {
        path: unit_dir()?.join(&name),
        name,
    })
}

/// A value in a unit file's command line: quoted, with `%` (a specifier) doubled.
fn systemd_quote(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        // `$X` and `${X}` are environment variables to systemd.
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

/// The service text: `mirror -C ROOT watch`, restarted when it fails.
pub fn service_text(root: &Path, mirror: &Path, interval: Option<&str>) -> Result<String> {
    for p in [root, mirror] {
        if p.to_string_lossy().contains(['\n', '\r']) {
            anyhow::bail!(
                "{:?} contains a line break, which a systemd unit cannot hold; use --cron",
                p
            );
        }
    }
    let mut exec = format!(
        "{} -C {} watch",
        systemd_quote(&mirror.to_string_lossy()),
        systemd_quote(&root.to_string_lossy())
    );
    if let Some(i) = interval {
        exec.push_str(&format!(" --interval {}", systemd_quote(i)));
    }
    Ok(format!(
        "# Written by `mirror schedule install`; removed by `mirror schedule remove`.\n\
         [Unit]\n\
         Description=mirror: keep {} backed up\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=30\n\
         # SIGTERM stops the watch after the snapshot in progress, never mid-update.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=300\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        root.to_string_lossy().replace('%', "%%").replace('$', "$$")
    ))
}

/// A single-quoted word for `sh` (cron runs its lines with `sh`).
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The cron schedule for `interval`: the longest period cron can express evenly that is not
/// longer than `interval` (cron cannot say "every 7 minutes" evenly), and that period.
pub fn cron_spec(interval: Duration) -> (String, Duration) {
    const MINUTES: [u64; 11] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30];
    const HOURS: [u64; 7] = [1, 2, 3, 4, 6, 8, 12];
    let minutes = interval.as_secs() / 60;
    if minutes >= 24 * 60 {
        return ("17 3 * * *".into(), Duration::from_secs(86_400));
    }
    if minutes >= 60 {
        let h = HOURS
            .iter()
            .rev()
            .find(|&&h| h * 60 <= minutes)
            .copied()
            .unwrap_or(1);
        let spec = if h == 1 {
            "17 * * * *".to_owned()
        } else {
            format!("17 */{h} * * *")
        };
        return (spec, Duration::from_secs(h * 3600));
    }
    let m = MINUTES
        .iter()
        .rev()
        .find(|&&m| m <= minutes)
        .copied()
        .unwrap_or(1);
    let spec = if m == 1 {
        "* * * * *".to_owned()
    } else {
        format!("*/{m} * * * *")
    };
    (spec, Duration::from_secs(m * 60))
}

/// The crontab line: a quiet snapshot of the project at `root` every `interval` (rounded
/// down to what cron can express).
pub fn cron_line(root: &Path, mirror: &Path, interval: Duration) -> (String, Duration) {
    let (spec, period) = cron_spec(interval);
    let command = format!(
        "{} -q -C {} snapshot --trigger cron",
        sh_quote(&mirror.to_string_lossy()),
        sh_quote(&root.to_string_lossy())
    );
    // cron turns an unescaped `%` in the command into a newline.
    (format!("{spec} {}", command.replace('%', "\\%")), period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_rounds_down_to_an_even_period() {
        let m = |n: u64| Duration::from_secs(n * 60);
        assert_eq!(cron_spec(m(1)).0, "* * * * *");
        assert_eq!(cron_spec(m(7)), ("*/6 * * * *".into(), m(6)));
        assert_eq!(cron_spec(m(30)).0, "*/30 * * * *");
        assert_eq!(cron_spec(m(60)).0, "17 * * * *");
        assert_eq!(cron_spec(m(300)), ("17 */4 * * *".into(), m(240)));
        assert_eq!(cron_spec(m(24 * 60)).0, "17 3 * * *");
        assert_eq!(cron_spec(Duration::from_secs(10)).0, "* * * * *");
    }

    #[test]
    fn paths_are_quoted_for_their_reader() {
        let root = Path::new("/home/a b/it's 100%");
        let text = service_text(root, Path::new("/usr/bin/mirror"), Some("30m")).unwrap();
        assert!(
            text.contains(
                r#"ExecStart="/usr/bin/mirror" -C "/home/a b/it's 100%%" watch --interval "30m""#
            ),
            "{text}"
        );
        let text = service_text(Path::new("/p/${HOME}"), Path::new("/m"), None).unwrap();
        assert!(text.contains(r#"-C "/p/$${HOME}" watch"#), "{text}");
        assert!(service_text(Path::new("/p/a\nb"), Path::new("/m"), None).is_err());
        let (line, _) = cron_line(
            root,
            Path::new("/usr/bin/mirror"),
            Duration::from_secs(3600),
        );
        assert_eq!(
            line,
            r#"17 * * * * '/usr/bin/mirror' -q -C '/home/a b/it'\''s 100\%' snapshot --trigger cron"#
        );
    }
}
