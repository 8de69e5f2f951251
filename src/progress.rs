//! Progress reporting without printing: the engine calls these hooks, the CLI decides whether
//! and how to draw them (an indicatif bar on a terminal, nothing otherwise).

pub trait Progress {
    /// A new phase with `total` units of work (files).
    fn begin(&self, label: &str, total: u64);
    fn advance(&self, n: u64);
    fn end(&self);
}

/// No progress output (library callers, `--quiet`, pipes).
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
