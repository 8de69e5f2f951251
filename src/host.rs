//! Facts about the machine that go into commit trailers and lock files.

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The account running mirror, from the real uid (not from `$USER`, which anyone can set):
/// its name in /etc/passwd, or `uid N` when it has none.
pub fn user() -> String {
    let uid = rustix::process::getuid().as_raw();
    let from_passwd = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id: u32 = fields.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_owned())
            })
        });
    match from_passwd {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// A base directory of the XDG spec: `$VAR` when set and not empty, else `$HOME/under_home`
/// (`XDG_CONFIG_HOME` and `.config`, `XDG_DATA_HOME` and `.local/share`).
pub fn xdg_dir(var: &str, under_home: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(std::path::PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .with_context(|| format!("neither {var} nor HOME is set"))?;
    Ok(std::path::PathBuf::from(home).join(under_home))
}
