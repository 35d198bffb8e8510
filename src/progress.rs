//! Progress of a long command (migrate, export, import, purge): a bar on stderr when it is
//! a terminal; otherwise a line every few seconds and one at the end, so that a log or a
//! CI transcript shows the counts without a bar's control characters.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a report line is written when stderr is not a terminal.
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Where the counts go when stderr is not a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// `tracing` at info level (server-side commands, whose logs are set up).
    Log,
    /// Plain lines on stderr (client commands, whose stdout holds their result).
    Stderr,
}

/// The progress of one command.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    unit: &'static str,
    fallback: Fallback,
    bar: Option<ProgressBar>,
    done: u64,
    total: Option<u64>,
    last_report: Instant,
}

impl Progress {
    /// Starts showing the progress of `label`, counted in `unit`s out of `total` (if known).
    pub fn start(label: &'static str, unit: &'static str, total: Option<u64>, fallback: Fallback) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = match total {
                Some(_) => "{msg} [{bar:40}] {pos}/{len} {prefix} ({percent}%, {eta} left)",
                None => "{msg} {spinner} {pos} {prefix}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label);
            bar.set_prefix(unit);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { label, unit, fallback, bar, done: 0, total, last_report: Instant::now() }
    }

    /// Sets the total once it is known.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Sets how many units are done.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_report.elapsed() >= REPORT_INTERVAL => self.report(),
            None => {}
        }
    }

    /// Counts `units` more as done.
    pub fn advance(&mut self, units: u64) {
        self.set(self.done + units);
    }

    /// Ends the display: the bar stays on screen at its final count, or a last line is written.
    pub fn finish(mut self) {
        match self.bar.take() {
            Some(bar) => bar.finish(),
            None => self.report(),
        }
    }

    fn report(&mut self) {
        self.last_report = Instant::now();
        let (label, unit, done) = (self.label, self.unit, self.done);
        match (self.fallback, self.total) {
            (Fallback::Log, Some(total)) => tracing::info!(done, total, unit, "{label}"),
            (Fallback::Log, None) => tracing::info!(done, unit, "{label}"),
            (Fallback::Stderr, Some(total)) => eprintln!("{label}: {done}/{total} {unit} ({}%)", percent(done, total)),
            (Fallback::Stderr, None) => eprintln!("{label}: {done} {unit}"),
        }
    }
}

fn percent(done: u64, total: u64) -> u64 {
    done.saturating_mul(100).checked_div(total).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_whole_and_total_zero_is_done() {
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(5, 5), 100);
    }
}
