//! The database room: everything that talks to PostgreSQL as such, whatever the data.
//!
//! This module: connection settings, the pool, one-off connections, readiness, and
//! [`DbError`]. The rest of the room:
//! - [`schema_migrations`]: the embedded, versioned SQL that creates Ferry's and the app's
//!   tables (schema migrations, not the data migrations the server ingests).
//! - [`schema_check`]: do the app's tables fit what the spec writes.
//! - [`embedded_pg`]: a private PostgreSQL cluster from the machine's binaries.
//! - [`ddl`]: `CREATE TABLE` statements for a spec (`ferry-server spec ddl`).
//! - [`sql`]: quoting identifiers and literals, rendering timestamps.
//!
//! The server talks to PostgreSQL through `tokio-postgres`, pooled by `deadpool-postgres`,
//! in a way that works the same directly and behind a transaction-pooling proxy (PgBouncer
//! `pool_mode = transaction`), where consecutive transactions of one client may run on
//! different server connections and nothing of a session survives a transaction:
//! - no startup `options` parameter (PgBouncer refuses it): `statement_timeout` is set with
//!   `SET LOCAL` as the first statement of every transaction the server opens ([`begin`]);
//! - no named prepared statements: every statement with parameters is sent unnamed, with
//!   its parameter types given (`query_typed` / `execute_typed`: Parse, Bind, Execute and Sync
//!   in one round trip), and is planned for its actual values every time;
//! - no session state: locks are transaction-scoped (`pg_advisory_xact_lock`).
//!
//! Connections carry an `application_name` and a connect timeout. TLS to the database is not
//! supported yet: use a local socket, a private network or a TLS sidecar.

pub mod ddl;
pub mod embedded_pg;
pub mod schema_check;
pub mod schema_migrations;
pub mod sql;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use tokio_postgres::types::Type;

use crate::db::sql::quote_ident;
use crate::error_chain;
use crate::startup::secret::Secret;

/// How long `GET /readyz` waits for the database.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Pool and connection settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Largest number of pooled connections.
    pub size: usize,
    /// Time allowed to open a connection (also the time a request waits for a free one).
    pub connect_timeout: Duration,
}

/// A database operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// `DATABASE_URL` does not parse. The URL itself is never quoted: it may hold a password.
    #[error("DATABASE_URL is not a valid PostgreSQL connection string: {0}")]
    InvalidUrl(String),
    /// Opening a connection failed.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// Host, port, database and user (never the password).
        target: String,
        /// The whole cause chain.
        reason: String,
    },
    /// A statement failed.
    #[error("{context}: {reason}")]
    Query {
        /// What we were doing.
        context: String,
        /// The whole cause chain (PostgreSQL's message, detail and hint included).
        reason: String,
        /// The SQLSTATE, when the server answered with an error.
        code: Option<String>,
    },
    /// The pool could not hand out a connection.
    #[error("no database connection available: {0}")]
    Pool(String),
}

impl DbError {
    /// Wraps a failed statement with what we were doing.
    pub fn query(context: impl Into<String>, error: &tokio_postgres::Error) -> Self {
        Self::Query {
            context: context.into(),
            reason: error_chain(error),
            code: error.code().map(|c| c.code().to_owned()),
        }
    }

    /// The SQLSTATE of a failed statement, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Query { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// `DbError::query` with `context`, for `map_err` on a failed statement.
pub fn query_error(context: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::query(context, &e)
}

/// Whether a SQLSTATE says "try again later": statement timeout or cancel (57014), server
/// shutting down (57P01-57P03), serialization failure (40001), deadlock (40P01), connection
/// exceptions (class 08), too many connections (53300).
pub fn is_transient_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "57014" | "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300"
    ) || code.starts_with("08")
}

/// Whether a failed statement may succeed if tried again: a transient SQLSTATE, or the
/// connection is gone.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        Some(code) => is_transient_sqlstate(code.code()),
        None => {
            error.is_closed()
                || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

/// Whether a transaction failed only because of concurrent ones (serialization failure or
/// deadlock): running it again as a whole is the prescribed fix.
pub fn is_retryable_transaction(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|c| matches!(c.code(), "40001" | "40P01"))
}

/// First half of the two-key advisory lock that serialises one user's writes ("FUSR" in
/// ASCII). The two-`int4` key space of PostgreSQL's advisory locks never overlaps the
/// one-`bigint` space the schema-migration lock uses.
pub const USER_LOCK_CLASS: i32 = 0x4655_5352;

/// The second half of `user`'s advisory lock key: the user id folded to 32 bits. Two users
/// that fold alike only wait for each other; they never share rows.
pub fn user_lock_key(user: uuid::Uuid) -> i32 {
    let folded = user
        .as_bytes()
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .fold(0u32, |acc, part| acc.rotate_left(5) ^ part);
    i32::from_ne_bytes(folded.to_ne_bytes())
}

/// Takes `user`'s transaction-scoped advisory lock. Every transaction that writes a user's
/// app rows or before-images (a batch, a rollback, a conflict resolution) takes it first, so
/// they run one after the other: a batch's `before` snapshot then always sees the rows an
/// earlier transaction of the same user wrote, whatever the timing of two devices.
pub async fn lock_user(
    tx: &tokio_postgres::Transaction<'_>,
    user: uuid::Uuid,
) -> Result<(), tokio_postgres::Error> {
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[
            (&USER_LOCK_CLASS, Type::INT4),
            (&user_lock_key(user), Type::INT4),
        ],
    )
    .await
    .map(drop)
}

/// Parses `DATABASE_URL` (`postgres://…` URL or `key=value` form).
pub fn parse_database_url(url: &Secret<String>) -> Result<tokio_postgres::Config, DbError> {
    url.expose()
        .parse::<tokio_postgres::Config>()
        .map_err(|e| DbError::InvalidUrl(error_chain(&e)))
}

/// Host, port, database and user of `config`, for messages (never the password).
pub fn describe_target(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "host={} port={} dbname={} user={}",
        if hosts.is_empty() {
            "localhost".to_owned()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".to_owned()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)"),
    )
}

/// Applies the per-connection settings: `application_name` and the connect timeout. The
/// `statement_timeout` is not a connection setting (PgBouncer refuses the startup `options`
/// parameter, and a session `SET` does not follow a client from one transaction to the
/// next behind it): [`begin`] sets it in every transaction.
pub fn tune(config: &mut tokio_postgres::Config, settings: &PoolSettings) {
    config.application_name("ferry-server");
    config.connect_timeout(settings.connect_timeout);
}

/// The statement that sets `timeout` as the `statement_timeout` of the current transaction.
pub fn set_local_statement_timeout(timeout: Duration) -> String {
    format!("SET LOCAL statement_timeout = {}", timeout.as_millis())
}

/// Opens a transaction on `client` with `statement_timeout` set to `timeout` for its
/// statements (`SET LOCAL`, so it ends with the transaction and never leaks to whatever uses
/// the server connection next, as it would behind PgBouncer). `None`: no timeout is set.
pub async fn begin(
    client: &mut tokio_postgres::Client,
    timeout: Option<Duration>,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if let Some(timeout) = timeout {
        tx.batch_execute(&set_local_statement_timeout(timeout))
            .await?;
    }
    Ok(tx)
}

/// A pool over `config` (tuned with `settings`). Connections open lazily, on first use.
pub fn build_pool(
    mut config: tokio_postgres::Config,
    settings: &PoolSettings,
) -> Result<Pool, DbError> {
    tune(&mut config, settings);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| DbError::Pool(error_chain(&e)))
}

/// Opens one connection outside the pool (schema migrations, schema checks, tests).
pub async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| DbError::Connect {
        target: describe_target(config),
        reason: error_chain(&e),
    })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error_chain(&error), "database connection ended with an error");
        }
    });
    Ok(client)
}

/// Checks that the database answers `SELECT 1` within [`READINESS_TIMEOUT`].
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let check = async {
        let client = pool
            .get()
            .await
            .map_err(|e| DbError::Pool(error_chain(&e)))?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| DbError::query("SELECT 1", &e))?;
        Ok(())
    };
    match tokio::time::timeout(READINESS_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_elapsed) => Err(DbError::Pool(format!(
            "the database did not answer within {} ms",
            READINESS_TIMEOUT.as_millis()
        ))),
    }
}

/// Whether database `name` exists, asked through the admin connection `admin`.
pub async fn database_exists(admin: &tokio_postgres::Config, name: &str) -> Result<bool, DbError> {
    let client = connect(admin).await?;
    Ok(client
        .query_typed_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[(&name, Type::TEXT)],
        )
        .await
        .map_err(|e| DbError::query("look up the database", &e))?
        .is_some())
}

/// Creates database `name` through the admin connection `admin` unless it exists. Returns
/// whether it was created.
pub async fn create_database_if_missing(
    admin: &tokio_postgres::Config,
    name: &str,
) -> Result<bool, DbError> {
    let client = connect(admin).await?;
    let exists = client
        .query_typed_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[(&name, Type::TEXT)],
        )
        .await
        .map_err(|e| DbError::query("look up the database", &e))?
        .is_some();
    if exists {
        return Ok(false);
    }
    match client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .await
    {
        Ok(()) => Ok(true),
        // Somebody else created it in the meantime: fine.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
            Ok(false)
        }
        Err(e) => Err(DbError::query(format!("create database {name}"), &e)),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    fn settings() -> PoolSettings {
        PoolSettings {
            size: 4,
            connect_timeout: Duration::from_secs(3),
        }
    }

    #[test]
    fn no_startup_options_are_added() {
        // PgBouncer refuses a startup `options` parameter: the timeout is set per transaction.
        let url = Secret::new("postgres://u:pw@db:5433/app".to_owned());
        let mut config = parse_database_url(&url).unwrap();
        tune(&mut config, &settings());
        assert_eq!(config.get_options(), None);
        assert_eq!(config.get_application_name(), Some("ferry-server"));
        assert_eq!(
            set_local_statement_timeout(Duration::from_millis(1500)),
            "SET LOCAL statement_timeout = 1500"
        );
    }

    #[test]
    fn a_bad_url_does_not_echo_the_password() {
        let url = Secret::new("postgres://user:s3cr3t@host:notaport/db".to_owned());
        let error = parse_database_url(&url).unwrap_err().to_string();
        assert!(!error.contains("s3cr3t"), "{error}");
    }

    #[test]
    fn targets_are_described_without_the_password() {
        let url = Secret::new("postgres://user:s3cr3t@db.internal:5433/app".to_owned());
        let config = parse_database_url(&url).unwrap();
        let described = describe_target(&config);
        assert_eq!(described, "host=db.internal port=5433 dbname=app user=user");
    }
}
