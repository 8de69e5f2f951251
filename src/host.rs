//! Facts about the machine that go into commit trailers and lock files.

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
