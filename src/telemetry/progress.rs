//! Snapshot progress bars on a terminal: one bar per table with rows copied, the server's
//! estimate, the rate and the time left. Only when standard error is a terminal and the log
//! is text; the log lines go through [`TerminalProgress::log_writer`], which lifts the bars
//! while a line is written so that lines and bars do not overwrite each other.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct TerminalProgress {
    bars: MultiProgress,
    tables: Mutex<HashMap<(String, String), ProgressBar>>,
}

/// A bar of a table with a row estimate.
const ESTIMATED: &str = "{prefix} [{bar:30}] {human_pos}/{human_len} rows {per_sec} ETA {eta}";
/// A table the server has no estimate for.
const UNESTIMATED: &str = "{prefix} {spinner} {human_pos} rows {per_sec}";

impl TerminalProgress {
    /// Bars on standard error, if it is a terminal.
    pub fn on_stderr() -> Option<Self> {
        std::io::stderr()
            .is_terminal()
            .then(|| Self::drawing_to(ProgressDrawTarget::stderr()))
    }

    pub fn drawing_to(target: ProgressDrawTarget) -> Self {
        TerminalProgress {
            bars: MultiProgress::with_draw_target(target),
            tables: Mutex::default(),
        }
    }

    /// A bar for each table of a snapshot that begins.
    pub fn started(&self, pipeline: &str, tables: &[(String, Option<u64>)]) {
        let mut bars = self.tables.lock().expect("not poisoned");
        for (table, estimate) in tables {
            let bar = match estimate {
                Some(rows) => ProgressBar::new(*rows).with_style(style(ESTIMATED)),
                None => ProgressBar::no_length().with_style(style(UNESTIMATED)),
            };
            let bar = self
                .bars
                .add(bar.with_prefix(format!("{pipeline} {table}")));
            if let Some(old) = bars.insert((pipeline.to_owned(), table.clone()), bar) {
                old.finish_and_clear();
            }
        }
    }

    pub fn copied(&self, pipeline: &str, table: &str, rows: u64) {
        let bars = self.tables.lock().expect("not poisoned");
        if let Some(bar) = bars.get(&(pipeline.to_owned(), table.to_owned())) {
            // The estimate is the server's guess: a table that holds more grows its bar.
            if bar.length().is_some_and(|len| bar.position() + rows > len) {
                bar.set_length(bar.position() + rows);
            }
            bar.inc(rows);
        }
    }

    pub fn finished(&self, pipeline: &str, table: &str) {
        let mut bars = self.tables.lock().expect("not poisoned");
        if let Some(bar) = bars.remove(&(pipeline.to_owned(), table.to_owned())) {
            bar.set_length(bar.position());
            bar.finish();
        }
    }

    /// A writer for log lines that keeps the bars intact.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter(self.bars.clone())
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

/// Standard error, written with the bars lifted.
pub struct LogWriter(MultiProgress);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use indicatif::{InMemoryTerm, TermLike as _};

    use super::*;

    #[test]
    fn a_bar_per_table_shows_rows_of_the_estimate_then_completes() {
        let term = InMemoryTerm::new(10, 100);
        let progress =
            TerminalProgress::drawing_to(ProgressDrawTarget::term_like(Box::new(term.clone())));
        progress.started(
            "pg",
            &[
                ("app.orders".into(), Some(1000)),
                ("app.notes".into(), None),
            ],
        );
        progress.copied("pg", "app.orders", 250);
        progress.copied("pg", "app.notes", 42);
        progress.bars.clear().ok();
        for bar in progress.tables.lock().unwrap().values() {
            bar.tick();
        }
        let screen = term.contents();
        assert!(screen.contains("pg app.orders ["), "{screen}");
        assert!(screen.contains("250/1,000 rows"), "{screen}");
        assert!(screen.contains("pg app.notes"), "{screen}");
        assert!(screen.contains("42 rows"), "{screen}");
        // More rows than estimated: the bar grows instead of overflowing.
        progress.copied("pg", "app.orders", 900);
        progress.finished("pg", "app.orders");
        let screen = term.contents();
        assert!(screen.contains("1,150/1,150 rows"), "{screen}");
        assert_eq!(term.width(), 100);
    }
}
