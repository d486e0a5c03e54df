//! The command's view of progress. The library and the scenario runner say when a phase of long
//! work starts, and what a finished scenario step came to, as events of target
//! [`mkh::PROGRESS_TARGET`] (a scenario step's carry `step = "running"` or `step = "done"`);
//! [`ProgressLayer`] renders them: on a terminal a spinner with the phase and its elapsed time,
//! each finished phase left as a line; otherwise plain timestamped lines; nothing with
//! `--quiet`. Progress goes to stderr only: stdout stays the command's output.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A spinner on a terminal, timestamped lines otherwise (chosen by stderr).
    Auto,
    /// Nothing.
    Quiet,
}

/// A line on stderr; a closed or broken stderr (`mkh up 2>&1 | head`) ends no work.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

struct View {
    spinner: bool,
    started: Instant,
    current: Mutex<Option<Current>>,
}

/// The phase the spinner shows.
struct Current {
    text: String,
    since: Instant,
    bar: ProgressBar,
    /// Whether its end is said as a line (a scenario's step says its own).
    say_done: bool,
}

static VIEW: OnceLock<View> = OnceLock::new();

/// Shows progress on stderr from now on (once per process; later calls change nothing).
pub fn show(mode: ProgressMode) {
    if mode == ProgressMode::Quiet {
        return;
    }
    let spinner = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
    let _ = VIEW.set(View {
        spinner,
        started: Instant::now(),
        current: Mutex::new(None),
    });
}

/// Renders progress events (see the module's documentation) through the view [`show`]
/// installed; without one it shows nothing.
pub struct ProgressLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ProgressLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != mkh::PROGRESS_TARGET {
            return;
        }
        let mut fields = ProgressFields::default();
        event.record(&mut fields);
        match fields.step.as_deref() {
            // A scenario step: a spinner on a terminal, its outcome said by its "done" line.
            Some("running") => start(fields.message, false),
            Some("done") => line(fields.message),
            _ => start(fields.message, true),
        }
    }
}

#[derive(Default)]
struct ProgressFields {
    message: String,
    step: Option<String>,
}

impl tracing::field::Visit for ProgressFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "step" => self.step = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "step" => self.step = Some(format!("{value:?}").trim_matches('"').to_owned()),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

fn start(text: String, say_done: bool) {
    let Some(view) = VIEW.get() else { return };
    let mut current = view.current.lock().unwrap_or_else(|e| e.into_inner());
    end(current.take());
    if view.spinner {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        bar.set_message(text.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        *current = Some(Current {
            text,
            since: Instant::now(),
            bar,
            say_done,
        });
    } else if say_done {
        say!("{}  {text}", stamp(view.started));
    }
}

/// The spinner's phase ends: the spinner goes, and its line stays where one is due.
fn end(current: Option<Current>) {
    if let Some(c) = current {
        c.bar.finish_and_clear();
        if c.say_done {
            say!("  {} ({})", c.text, seconds(c.since.elapsed()));
        }
    }
}

/// A finished step's line (a scenario's step and its outcome): kept above the spinner.
fn line(text: impl std::fmt::Display) {
    let Some(view) = VIEW.get() else { return };
    let mut current = view.current.lock().unwrap_or_else(|e| e.into_inner());
    // The work this line reports on is over, and any phase within it.
    end(current.take());
    let text = format!("{}  {text}", stamp(view.started));
    match current.as_ref() {
        Some(c) => c.bar.println(text),
        None => say!("{text}"),
    }
}

/// The work is over: the last phase ends; the spinner goes.
pub fn finish() {
    let Some(view) = VIEW.get() else { return };
    let mut current = view.current.lock().unwrap_or_else(|e| e.into_inner());
    end(current.take());
}

/// A writer for log lines that does not tear the spinner: each write is made while it is
/// hidden.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = VIEW.get().and_then(|v| {
            v.current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| c.bar.clone())
        });
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `HH:MM:SS` (UTC) and the seconds since the view was shown: `18:57:03 +12.4s`.
fn stamp(started: Instant) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = now % 86_400;
    format!(
        "{:02}:{:02}:{:02} +{:>5.1}s",
        day / 3600,
        day / 60 % 60,
        day % 60,
        started.elapsed().as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_has_the_wall_clock_and_the_elapsed_time() {
        let s = stamp(Instant::now());
        let (clock, elapsed) = s.split_once(' ').unwrap();
        assert_eq!(clock.len(), 8, "{s}");
        assert_eq!(clock.matches(':').count(), 2, "{s}");
        assert!(
            elapsed.trim().starts_with('+') && elapsed.ends_with('s'),
            "{s}"
        );
    }
}
