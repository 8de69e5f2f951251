//! An indicatif bar on stderr, shown only on a terminal, only when not `--quiet`, and only
//! once a phase has run for about a second (short operations stay silent).

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bar {
    enabled: bool,
    state: RefCell<Option<(ProgressBar, Instant, bool)>>,
}

const DELAY: Duration = Duration::from_secs(1);

impl Bar {
    pub fn new(quiet: bool) -> Bar {
        Bar {
            enabled: !quiet && std::io::stderr().is_terminal(),
            state: RefCell::new(None),
        }
    }
}

impl mirror::progress::Progress for Bar {
    fn begin(&self, label: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        *self.state.borrow_mut() = Some((bar, Instant::now(), false));
    }

    fn advance(&self, n: u64) {
        if let Some((bar, started, shown)) = self.state.borrow_mut().as_mut() {
            bar.inc(n);
            if !*shown && started.elapsed() > DELAY {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                *shown = true;
            }
        }
    }

    fn end(&self) {
        if let Some((bar, _, _)) = self.state.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}
