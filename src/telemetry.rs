//! Logging set-up with `tracing`: human-readable by default, JSON on request.
//!
//! Owns only the subscriber; what is logged is decided where it happens. Nothing here ever
//! formats a secret: callers log errors with `Display` and never log tokens or keys.

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;
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

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation (tests call this more than once) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
            .is_ok(),
        LogFormat::Json => json_subscriber(filter, std::io::stderr).try_init().is_ok(),
    };
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
