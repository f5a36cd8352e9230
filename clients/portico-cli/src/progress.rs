//! A progress bar on stderr without a dependency: redrawn in place on a terminal,
//! one line per change (at most one a second) when stderr is a file or a pipe, so CI
//! logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// One bar.
pub struct Progress {
    label: String,
    tty: bool,
    quiet: bool,
    last: Option<(u64, u64, String)>,
    last_line: Instant,
}

impl Progress {
    /// A bar named `label`; `quiet` prints nothing (JSON output, `--quiet`).
    pub fn new(label: impl Into<String>, quiet: bool) -> Self {
        Progress {
            label: label.into(),
            tty: std::io::stderr().is_terminal(),
            quiet,
            last: None,
            last_line: Instant::now() - Duration::from_secs(10),
        }
    }

    /// Shows `done` of `total` with a note (e.g. failed counts).
    pub fn update(&mut self, done: u64, total: u64, note: &str) {
        if self.quiet {
            return;
        }
        let state = (done, total, note.to_owned());
        if self.last.as_ref() == Some(&state) {
            return;
        }
        if !self.tty && self.last_line.elapsed() < Duration::from_secs(1) && done < total {
            return;
        }
        self.last = Some(state);
        self.last_line = Instant::now();
        let line = render(&self.label, done, total, note);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if !self.quiet && self.tty && self.last.is_some() {
            eprintln!();
        }
    }
}

/// `label [#####.....] 50/100 50% note`.
pub fn render(label: &str, done: u64, total: u64, note: &str) -> String {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(0) as usize;
    let percent = (done.min(total) * 100).checked_div(total).unwrap_or(0);
    let bar = format!(
        "{}{}",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled)
    );
    let mut line = format!("{label} [{bar}] {done}/{total} {percent}%");
    if !note.is_empty() {
        line.push(' ');
        line.push_str(note);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bar fills proportionally and survives a zero total.
    #[test]
    fn renders() {
        assert_eq!(
            render("processing", 50, 100, "2 failed"),
            "processing [###############...............] 50/100 50% 2 failed"
        );
        assert_eq!(
            render("x", 0, 0, ""),
            "x [..............................] 0/0 0%"
        );
    }
}
