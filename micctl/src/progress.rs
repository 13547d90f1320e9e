//! Per-card progress spinners on long waits: drawn on stderr only when it
//! is a terminal; nothing at all on a pipe.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The spinners of one command, or nothing.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

/// One card's spinner (a no-op when progress is off).
#[derive(Debug, Clone)]
pub struct CardProgress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Spinners if `enabled` (stderr is a terminal and the command waits).
    #[must_use]
    pub fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// A spinner for `card`, starting with `msg`.
    #[must_use]
    pub fn card(&self, card: &str, msg: &str) -> CardProgress {
        let bar = self.multi.as_ref().map(|m| {
            let style = ProgressStyle::with_template("{spinner} {prefix:<6} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bar = m.add(ProgressBar::new_spinner().with_style(style));
            bar.set_prefix(card.to_owned());
            bar.set_message(msg.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        CardProgress { bar }
    }
}

impl CardProgress {
    pub fn set(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_owned());
        }
    }

    /// Removes the spinner (the outcome is printed by the command).
    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
