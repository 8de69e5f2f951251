//! Small formatting helpers shared by the commands.

use gix::ObjectId;

pub fn short(id: &ObjectId) -> String {
    id.to_hex_with_len(7).to_string()
}

pub use mirror::units::bytes;

/// Print `value` as pretty JSON. A reader that went away (`| head`) is not an error.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value)?;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
