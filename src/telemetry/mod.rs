//! Logging set-up with `tracing`: human-readable by default, JSON on request.
//!
//! Owns only the subscriber; what is logged is decided where it happens. Nothing here ever
//! formats a secret: callers log errors with `Display` and never log tokens or keys.
//!
//! Log lines carry values nobody here controls: tenant ids from request paths, Defender's and
//! Entra's error texts, file contents quoted by configuration errors. Both formats make such a
//! value unable to forge or colour a line: the JSON format escapes control characters as JSON
//! does, and the text format escapes them in every field and message ([`escaping_fields`]), so
//! that one event is always one line.

use clap::ValueEnum;
use std::fmt;
use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Keeps the log writer's thread running: dropping it writes out every queued line first.
/// Hold it until the process ends.
#[must_use = "dropping it stops the log writer"]
pub struct LogGuard {
    _writer: Option<writer::WriterGuard>,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
///
/// Lines are formatted on the thread that logs and written to standard error in batches by one
/// writer thread ([`writer`]): a line waits at most [`writer::FLUSH_EVERY`]. Never lossy. Colours
/// only when standard error is a terminal: a log file or a journal gets plain lines.
pub fn init(format: LogFormat) -> LogGuard {
    use std::io::IsTerminal;
    let filter = filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()));
    let ansi = std::io::stderr().is_terminal();
    let Ok((writer, guard)) = writer::BatchWriter::spawn(std::io::stderr(), "scoregate-log") else {
        // No thread for the writer: log straight to standard error, a write per line.
        let installed = match format {
            LogFormat::Text => text_subscriber(filter, std::io::stderr, ansi)
                .try_init()
                .is_ok(),
            LogFormat::Json => json_subscriber(filter, std::io::stderr).try_init().is_ok(),
        };
        let _ = installed;
        return LogGuard { _writer: None };
    };
    // A second initialisation is harmless: the first subscriber stays.
    let installed = match format {
        LogFormat::Text => text_subscriber(filter, writer, ansi).try_init().is_ok(),
        LogFormat::Json => json_subscriber(filter, writer).try_init().is_ok(),
    };
    LogGuard {
        _writer: installed.then_some(guard),
    }
}

/// The level filter of `spec` (`RUST_LOG`'s syntax; an invalid one falls back to `info`), with
/// actix-http's request-head decoder silenced unless `spec` names `actix_http` itself: it logs
/// every request head over its 128 KiB buffer at ERROR before any of our code runs, so that an
/// anonymous client could fill the log with errors. The client gets its 431 all the same.
pub fn filter(spec: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    if spec.contains("actix_http") {
        return filter;
    }
    match "actix_http::h1::decoder=off".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    }
}

pub mod writer;

/// The subscriber of the default text format: one human-readable line per event, fields escaped
/// by [`escaping_fields`]; `ansi` colours the level and timestamp (never a field's content).
/// Public so that tests can capture its output.
pub fn text_subscriber<W>(
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_timer(Rfc3339Micros)
        .fmt_fields(escaping_fields())
        .finish()
}

/// The text format's timestamp, as tracing's default writes it (`2026-12-05T05:50:45.801999Z`:
/// UTC, microseconds), by humantime's formatter: a quarter of the default's cost, on every
/// request's line.
struct Rfc3339Micros;

impl tracing_subscriber::fmt::time::FormatTime for Rfc3339Micros {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        if now < std::time::UNIX_EPOCH {
            // A clock set before 1970, which humantime cannot write: the default formatter.
            return tracing_subscriber::fmt::time::SystemTime.format_time(writer);
        }
        write!(writer, "{}", humantime::format_rfc3339_micros(now))
    }
}

/// Formats an event's fields like the default text format (`message key=value …`) with every
/// control character of every value escaped (`\n`, `\u{1b}`): a newline in a tenant id from a
/// path or in an upstream error text cannot start a forged line, nor an escape sequence drive
/// the operator's terminal.
pub fn escaping_fields() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    debug_fn(
        |writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
            use fmt::Write as _;
            if field.name() != "message" {
                writer.write_str(field.name())?;
                writer.write_char('=')?;
            }
            write!(Escaping(writer), "{value:?}")
        },
    )
    .delimited(" ")
}

/// Passes text through with control characters (C0, DEL, C1), Unicode line and paragraph
/// separators and bidirectional overrides escaped as Rust does (`\n`, `\u{1b}`), as the value
/// is formatted: no copy of it first.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Printable ASCII (nearly every value) needs no look at its characters.
        if text.bytes().all(|byte| matches!(byte, b' '..=b'~')) {
            return self.0.write_str(text);
        }
        let is_unsafe = |c: char| {
            c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        };
        let mut rest = text;
        while let Some(at) = rest.find(is_unsafe) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// The subscriber `--log-format json` installs: one JSON object per line, with the event's
/// fields at the top level (`{"timestamp", "level", "message", "request_id", "route", …}`) so
/// that log shippers index them without unnesting. Public so that tests can capture its output.
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .finish()
}

/// Formats an error and its `source()` chain on one line (`a: b: c`), with `Display` only:
/// `Debug` may carry backtraces when `RUST_BACKTRACE` is set, and URLs with tokens.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some libraries repeat their source's message in their own; print each message once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Repeated failures of one operation told in a few lines rather than one per failure: the
/// first at once, then at most one summary per period (how many more failed meanwhile), and one
/// line when it works again. Pure: the caller passes the time (tokio's, so a paused clock
/// drives it) and writes the lines.
#[derive(Debug)]
pub struct RepeatedFailures {
    /// Shortest time between two lines of one streak.
    period: std::time::Duration,
    /// The streak running now, if the operation is failing.
    streak: Option<Streak>,
}

/// A run of failures with no success between them.
#[derive(Debug, Clone, Copy)]
struct Streak {
    /// Failures in the streak.
    failures: u64,
    /// Failures since the last line written.
    untold: u64,
    /// When the last line was written.
    told_at: tokio::time::Instant,
}

/// What to log for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLine {
    /// The first failure of a streak: log it now.
    First,
    /// A summary is due: `failures` failed (this one included) in the `seconds` since the
    /// last line.
    Summary {
        /// Failures since the last line.
        failures: u64,
        /// Whole seconds since the last line.
        seconds: u64,
    },
    /// Counted into the next summary; nothing to log now.
    Quiet,
}

impl RepeatedFailures {
    /// At most one line per `period` while failing.
    pub fn new(period: std::time::Duration) -> Self {
        Self {
            period,
            streak: None,
        }
    }

    /// A failure at `now`: what to log.
    pub fn failed(&mut self, now: tokio::time::Instant) -> FailureLine {
        let Some(streak) = &mut self.streak else {
            self.streak = Some(Streak {
                failures: 1,
                untold: 0,
                told_at: now,
            });
            return FailureLine::First;
        };
        streak.failures = streak.failures.saturating_add(1);
        streak.untold = streak.untold.saturating_add(1);
        let since = now.saturating_duration_since(streak.told_at);
        if since < self.period {
            return FailureLine::Quiet;
        }
        let line = FailureLine::Summary {
            failures: streak.untold,
            seconds: since.as_secs(),
        };
        streak.untold = 0;
        streak.told_at = now;
        line
    }

    /// A success: the number of failures of the streak it ends (log that it works again), or
    /// `None` when nothing was failing.
    pub fn succeeded(&mut self) -> Option<u64> {
        self.streak.take().map(|streak| streak.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_log_the_first_then_one_summary_per_period_then_the_recovery() {
        let period = std::time::Duration::from_secs(30);
        let start = tokio::time::Instant::now();
        let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
        let mut failures = RepeatedFailures::new(period);
        assert_eq!(failures.succeeded(), None, "nothing was failing");
        // 339 failures in 30 s (20 tenants' readings) are two lines, not 339.
        let lines: Vec<FailureLine> = (0..339)
            .map(|index| failures.failed(at(index * 30 / 338)))
            .filter(|line| *line != FailureLine::Quiet)
            .collect();
        assert_eq!(
            lines,
            [
                FailureLine::First,
                FailureLine::Summary {
                    failures: 338,
                    seconds: 30
                }
            ]
        );
        // Quiet within the next period; the recovery line counts the whole streak.
        assert_eq!(failures.failed(at(45)), FailureLine::Quiet);
        assert_eq!(failures.succeeded(), Some(340));
        assert_eq!(failures.succeeded(), None);
        // A new streak starts with a line of its own.
        assert_eq!(failures.failed(at(46)), FailureLine::First);
    }

    #[test]
    fn escaping_keeps_text_and_neutralises_line_breaks_and_terminal_escapes() {
        let escaped = |text: &str| {
            use std::fmt::Write;
            let mut out = String::new();
            // In pieces, as a formatter hands them over: each is escaped on its own.
            for piece in text.split_inclusive(' ') {
                write!(Escaping(&mut out), "{piece}").expect("a String takes it");
            }
            out
        };
        let text = escaped("contoso\n2024 INFO forged \u{1b}[31mred\r\u{2028}\u{202e}ok");
        assert_eq!(
            text,
            "contoso\\n2024 INFO forged \\u{1b}[31mred\\r\\u{2028}\\u{202e}ok"
        );
        assert_eq!(escaped("plain – text"), "plain – text");
        assert_eq!(escaped("del\u{7f} c1\u{85}"), "del\\u{7f} c1\\u{85}");
    }

    #[test]
    fn the_text_timestamp_is_utc_to_the_microsecond() {
        use tracing_subscriber::fmt::time::FormatTime;
        let mut text = String::new();
        Rfc3339Micros
            .format_time(&mut Writer::new(&mut text))
            .unwrap();
        let bytes = text.as_bytes();
        assert_eq!(bytes.len(), "2026-12-05T05:50:45.801999Z".len(), "{text}");
        for (at, expected) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ] {
            assert_eq!(bytes[at], expected, "{text}");
        }
        assert!(text.starts_with("20"), "{text}");
    }
}
