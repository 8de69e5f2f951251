//! Waiting for a program mirror started (git for remotes, the user's alert command) without
//! letting it hang mirror: the child runs in its own process group, and when the time is up
//! the whole group is killed, so nothing it started lingers either.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Start `cmd` in a session of its own (so also a process group of its own): it has no
/// controlling terminal to prompt on, a signal to mirror's group does not reach it, and
/// [`wait_or_kill`] can end everything it started.
pub fn new_session(cmd: &mut std::process::Command) -> &mut std::process::Command {
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::setsid();
            Ok(())
        })
    }
}

/// Wait for `child` (started in its own process group) at most `timeout`. `None`: the time
/// ran out and its process group was killed and reaped.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= timeout {
            // SAFETY: kill(2) with a negative pid signals the process group the child leads;
            // no memory is touched.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
