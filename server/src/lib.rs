//! Ferry's ingest server: the place where a user's records become rows in PostgreSQL.
//!
//! A library with a thin binary (`main.rs`). The modules, outside in:
//! - [`config`]: typed settings from flags and environment; [`secret`]: values that never print.
//! - [`startup`]: open the database, migrate, check the schema, bind, serve, shut down.
//! - [`http`]: the router ([`http::app`]) and its layers; [`openapi`]: the API description.
//! - [`api`]: the `/v1` handlers over [`ingest`] (batches, exactly once), [`report`] (what a
//!   migration received), [`rollback`], [`conflicts`] and [`backups`]; [`field_crypto`]:
//!   sensitive fields encrypted at rest.
//! - [`auth`]: bearer tokens and the [`auth::AuthUser`] extractor; [`rate_limit`]: per-user limits.
//! - [`error`]: the one error type and JSON error shape; [`extract`]: our `Json` extractor.
//! - [`metrics`]: Prometheus metrics; [`state`]: what handlers share.
//! - [`db`]: connections and the pool; [`migrations`]: the embedded, versioned schema;
//!   [`schema_check`]: does the database fit; [`embedded_pg`]: a private PostgreSQL cluster.
//! - [`telemetry`]: logging; [`shutdown`]: SIGINT/SIGTERM; [`cli`]: the operator's subcommands.
//! - [`faults`]: dev-only fault injection for the crash tests; [`dev_sample`]: dev-only demo data.

pub mod api;
pub mod auth;
pub mod backups;
pub mod cli;
pub mod config;
pub mod conflicts;
pub mod db;
pub mod dev_sample;
pub mod embedded_pg;
pub mod error;
pub mod extract;
pub mod faults;
pub mod field_crypto;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod migrations;
pub mod openapi;
pub mod rate_limit;
pub mod report;
pub mod rollback;
pub mod schema_check;
pub mod secret;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod telemetry;

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
