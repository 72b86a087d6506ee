//! Logging: `tracing` events to stderr, filtered by `RUST_LOG` (default `info`), as text for a
//! person or as one JSON object per line for a log pipeline (`--log-format json`).
//!
//! Every event logged while a request is handled carries its request id: the HTTP edge wraps
//! each request in a `request` span with a `request_id` field (`crate::http::request_id`).
//! In text, it shows as the `request{request_id=…}:` prefix; in JSON, as the `span` object
//! (and in `spans`, the list of enclosing spans) of the line.
//!
//! Nothing in the server logs request headers, bodies, tokens or connection strings; secrets
//! are [`Secret`](crate::startup::secret::Secret)s, which print as `[redacted]` even by accident.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines are written (`--log-format`, `FERRY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for a person (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per event and line: `timestamp`, `level`, `fields` (with `message`),
    /// `target`, and the request's `span`/`spans`.
    Json,
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// For tests: logs only when `TEST_LOG` is set (then at `RUST_LOG` or `debug`), through the
/// test harness's capture.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
    let _already_installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
