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
