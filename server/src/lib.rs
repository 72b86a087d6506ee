//! Ferry's ingest server: the place where a user's records become rows in PostgreSQL.
//!
//! A library with a thin binary (`main.rs`), in five rooms, outside in:
//! - [`startup`]: from flags to a bound socket and back down: typed settings, secrets that
//!   never print, logging, signals, the serving loop, dev-only fault points.
//! - [`http`]: the HTTP edge: the router ([`http::app`]) and its layers, authentication, the
//!   rate limit, the one error shape, metrics, the OpenAPI document, the `/v1` handlers and
//!   the dev-only sample data.
//! - [`ingest`]: one batch in, exactly once: prepare (decode, re-validate, seal sensitive
//!   fields), the per-kind SQL statement, apply.
//! - [`operator`]: what comes after ingest: the migration report, rollback, conflicts,
//!   backups, the quarantine, and the operator's CLI subcommands.
//! - [`db`]: PostgreSQL: connections and the pool, the schema migrations, the schema check
//!   and the embedded cluster.

pub mod db;
pub mod http;
pub mod ingest;
pub mod operator;
pub mod startup;

/// An error and all its causes, joined with `: ` (what a log line or a CLI error should show).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source's text in their own; say it once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
