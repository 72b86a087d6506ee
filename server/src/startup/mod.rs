//! Starting (and stopping) the server: database, migrations, schema check, state, socket.
//!
//! [`Application::build`] does everything that can fail before the first request — opening
//! the database (starting the embedded cluster when there is no `DATABASE_URL`), applying the
//! migrations, checking the app schema, building the keys and the pool, binding the socket —
//! so a misconfigured server stops at once with a message instead of failing requests later.
//! [`Application::run_until_stopped`] serves until the shutdown future completes, lets the
//! requests in flight finish, then stops the embedded cluster.
//!
//! Connections are served by hyper's HTTP/1 connection builder with a header read timeout
//! (`FERRY_HEADER_READ_TIMEOUT_MS`): a client that sends its request line and headers too
//! slowly is disconnected, since the request timeout only starts once the headers are in.

pub mod config;
pub mod faults;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::db::embedded_pg::{EmbeddedPg, EmbeddedPgError, EmbeddedPgOptions, Listen};
use crate::db::schema_check::{
    ExpectedTable, SchemaMismatch, check_schema, describe_mismatches, expected_tables,
};
use crate::db::schema_migrations::{MigrateMode, MigrationError, MigrationReport, migrate};
use crate::db::{self, DbError, PoolSettings};
use crate::http::auth::{JwtKeys, KeyError};
use crate::http::state::{AppState, Engine, HttpSettings};
use crate::http::{app, is_valid_origin};
use crate::ingest::field_crypto::{self, FieldCipher, FieldKeyError};
use crate::startup::config::{PgListen, Settings};
use ferry_core::spec::{Spec, SpecError};

/// The database the server creates and uses in the embedded cluster.
pub const EMBEDDED_DATABASE: &str = "ferry";

/// Why the server could not start (or stop) cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The embedded cluster could not be started or stopped.
    #[error("embedded PostgreSQL: {0}")]
    EmbeddedPg(#[from] EmbeddedPgError),
    /// The database could not be reached or queried.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Migrating failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The app's tables do not fit what the server writes.
    #[error("the database schema does not match what the server needs:\n{}\nFix the tables (or the expected schema) and start again.", describe_mismatches(.0))]
    SchemaMismatch(Vec<SchemaMismatch>),
    /// `migrate --baseline` found app tables that do not fit.
    #[error("refusing to baseline: the app's tables must exist and match first:\n{}", describe_mismatches(.0))]
    BaselineRefused(Vec<SchemaMismatch>),
    /// The spec file could not be read.
    #[error("cannot read the migration spec {path} (FERRY_SPEC): {source}")]
    SpecRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spec was refused; every problem is listed.
    #[error(
        "the migration spec {path} (FERRY_SPEC) was refused: {error}\nFix the spec and start again."
    )]
    Spec {
        /// The file.
        path: std::path::PathBuf,
        /// Every problem.
        error: SpecError,
    },
    /// No field key outside dev mode.
    #[error(
        "FERRY_FIELD_KEY is required unless the server runs in dev mode (FERRY_DEV=true or no DATABASE_URL): set it to 64 hex characters, e.g. `openssl rand -hex 32`, and keep it: without it the encrypted fields cannot be read"
    )]
    FieldKeyRequired,
    /// The field key is unusable.
    #[error(transparent)]
    FieldKey(#[from] FieldKeyError),
    /// No JWT secret outside dev mode.
    #[error(
        "FERRY_JWT_SECRET is required unless the server runs in dev mode (FERRY_DEV=true or no DATABASE_URL)"
    )]
    JwtSecretRequired,
    /// The JWT secret is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A CORS origin is not `scheme://host[:port]`.
    #[error(
        "FERRY_CORS_ORIGINS: {0:?} is not an origin like `https://app.example.com` or `http://localhost:5173` (no path, no trailing slash)"
    )]
    InvalidCorsOrigin(String),
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// A blocking task panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(String),
}

/// The database the server uses, and the embedded cluster behind it if there is one.
#[derive(Debug)]
pub struct Database {
    config: tokio_postgres::Config,
    embedded: Option<EmbeddedPg>,
}

impl Database {
    /// An existing server's database.
    pub fn external(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            embedded: None,
        }
    }

    /// Connection settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The embedded cluster, if the server runs one.
    pub fn embedded(&self) -> Option<&EmbeddedPg> {
        self.embedded.as_ref()
    }

    /// Stops the embedded cluster, if any (off the async threads: it waits for `pg_ctl`).
    pub async fn stop(self) -> Result<(), StartupError> {
        let Some(mut cluster) = self.embedded else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .map_err(|e| StartupError::Task(e.to_string()))??;
        Ok(())
    }
}

/// The database named by `DATABASE_URL`, or the embedded cluster's `ferry` database.
pub async fn open_database(settings: &Settings) -> Result<Database, StartupError> {
    if let Some(url) = &settings.database_url {
        return Ok(Database::external(db::parse_database_url(url)?));
    }
    let listen = match settings.pg_listen {
        PgListen::Socket => Listen::UnixSocket {
            dir: settings.pg_socket_dir(),
            port: settings.pg_port.unwrap_or(5432),
        },
        PgListen::Tcp => Listen::Loopback {
            port: settings.pg_port,
        },
    };
    let options = EmbeddedPgOptions {
        data_dir: settings.pg_data_dir(),
        listen,
        bin_dir: settings.pg_bin_dir.clone(),
        ephemeral: false,
        settings: Vec::new(),
    };
    let cluster = tokio::task::spawn_blocking(move || -> Result<EmbeddedPg, EmbeddedPgError> {
        let mut cluster = EmbeddedPg::start(options)?;
        // Should this process be killed outright, the watchdog still stops the cluster.
        cluster.stop_on_exit(None)?;
        Ok(cluster)
    })
    .await
    .map_err(|e| StartupError::Task(e.to_string()))??;
    let database = Database {
        config: cluster.config(EMBEDDED_DATABASE),
        embedded: Some(cluster),
    };
    let admin = database
        .embedded()
        .map(|c| c.config("postgres"))
        .unwrap_or_else(|| database.config.clone());
    if let Err(error) = db::create_database_if_missing(&admin, EMBEDDED_DATABASE).await {
        database.stop().await?;
        return Err(error.into());
    }
    Ok(database)
}

/// Reads and checks the spec named by the settings: the parsed spec and the file's text.
pub fn load_spec(settings: &Settings) -> Result<(Spec, String), StartupError> {
    let path = settings.spec_path();
    let text = std::fs::read_to_string(&path).map_err(|source| StartupError::SpecRead {
        path: path.clone(),
        source,
    })?;
    let spec = Spec::parse(&text).map_err(|error| StartupError::Spec { path, error })?;
    Ok((spec, text))
}

/// The field cipher: `FERRY_FIELD_KEY`, or in dev mode the key kept in
/// `<project>/.ferry/field.key` (generated the first time).
pub fn load_field_cipher(settings: &Settings, dev_mode: bool) -> Result<FieldCipher, StartupError> {
    field_crypto::check_key_id(&settings.field_key_id)?;
    let key = match (&settings.field_key, dev_mode) {
        (Some(hex), _) => field_crypto::parse_hex_key("FERRY_FIELD_KEY", hex.expose())?,
        (None, true) => {
            let path = settings.dev_field_key_path();
            tracing::info!(path = %path.display(), "FERRY_FIELD_KEY is not set: using the dev field key (dev mode)");
            field_crypto::load_or_create_dev_key(&path)?
        }
        (None, false) => return Err(StartupError::FieldKeyRequired),
    };
    Ok(FieldCipher::new(settings.field_key_id.clone(), key))
}

/// Applies pending migrations and checks the app schema against `expected` (from the spec):
/// what the server does at every start.
pub async fn prepare_schema(
    config: &tokio_postgres::Config,
    expected: &[ExpectedTable],
) -> Result<MigrationReport, StartupError> {
    let mut client = db::connect(config).await?;
    let report = migrate(&mut client, MigrateMode::Apply).await?;
    let mismatches = check_schema(&client, expected).await?;
    if !mismatches.is_empty() {
        return Err(StartupError::SchemaMismatch(mismatches));
    }
    Ok(report)
}

/// `ferry-server migrate [--baseline]` against `config`. With `baseline`, the app tables are
/// checked against `expected` first and the app migrations recorded without running.
pub async fn migrate_database(
    config: &tokio_postgres::Config,
    baseline: bool,
    expected: &[ExpectedTable],
) -> Result<MigrationReport, StartupError> {
    let mut client = db::connect(config).await?;
    if !baseline {
        return Ok(migrate(&mut client, MigrateMode::Apply).await?);
    }
    let mismatches = check_schema(&client, expected).await?;
    if !mismatches.is_empty() {
        return Err(StartupError::BaselineRefused(mismatches));
    }
    Ok(migrate(&mut client, MigrateMode::Baseline).await?)
}

/// `ferry-server migrate [--baseline]`: opens the database (starting and stopping the
/// embedded cluster if needed) and migrates it.
pub async fn run_migrate(
    settings: &Settings,
    baseline: bool,
) -> Result<MigrationReport, StartupError> {
    let (spec, _) = load_spec(settings)?;
    let database = open_database(settings).await?;
    let result = migrate_database(database.config(), baseline, &expected_tables(&spec)).await;
    database.stop().await?;
    result
}

/// A server ready to serve: everything checked, socket bound.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    database: Database,
    address: SocketAddr,
    dev_mode: bool,
    header_read_timeout: Duration,
}

impl Application {
    /// Opens the database described by `settings` and builds the server over it.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let database = open_database(settings).await?;
        Self::build_with_database(settings, database).await
    }

    /// Builds the server over `database` (migrating and checking it). On failure the embedded
    /// cluster, if any, is stopped.
    pub async fn build_with_database(
        settings: &Settings,
        database: Database,
    ) -> Result<Self, StartupError> {
        match Self::prepare(settings, &database).await {
            Ok((listener, router, address, dev_mode)) => Ok(Self {
                listener,
                router,
                database,
                address,
                dev_mode,
                header_read_timeout: settings.header_read_timeout(),
            }),
            Err(error) => {
                if let Err(stop_error) = database.stop().await {
                    tracing::error!(error = %stop_error, "could not stop the embedded cluster");
                }
                Err(error)
            }
        }
    }

    async fn prepare(
        settings: &Settings,
        database: &Database,
    ) -> Result<(TcpListener, Router, SocketAddr, bool), StartupError> {
        let dev_mode = settings.dev || database.embedded().is_some();
        if dev_mode && !settings.host.is_loopback() {
            tracing::warn!(
                host = %settings.host,
                "dev mode on a non-loopback address: anyone who can reach this server can get a token for any demo user from POST /dev/token"
            );
        }
        if let Some(bad) = settings.cors_origins.iter().find(|o| !is_valid_origin(o)) {
            return Err(StartupError::InvalidCorsOrigin(bad.clone()));
        }
        let keys = match (&settings.jwt_secret, dev_mode) {
            (Some(secret), _) => JwtKeys::from_secret(secret.expose().as_bytes())?,
            (None, true) => {
                tracing::info!(
                    "FERRY_JWT_SECRET is not set: generated a random signing secret for this run (dev mode); tokens issued now stop working when the server restarts"
                );
                JwtKeys::generate()?
            }
            (None, false) => return Err(StartupError::JwtSecretRequired),
        };

        let (spec, spec_text) = load_spec(settings)?;
        let cipher = load_field_cipher(settings, dev_mode)?;
        let report = prepare_schema(database.config(), &expected_tables(&spec)).await?;
        tracing::info!(
            applied = report.applied.len(),
            already_applied = report.already_applied.len(),
            "schema ready"
        );

        let pool = db::build_pool(
            database.config().clone(),
            &PoolSettings {
                size: settings.db_pool_size,
                statement_timeout: settings.statement_timeout(),
                connect_timeout: settings.connect_timeout(),
            },
        )?;
        let engine = Engine::new(spec, spec_text, cipher);
        let state = AppState::new(
            pool,
            keys,
            HttpSettings::from_settings(settings, dev_mode),
            engine,
        )?;
        let address = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| StartupError::Bind { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?;
        Ok((listener, app(state), address, dev_mode))
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Whether the dev endpoints are on.
    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    /// The database in use.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Serves until `shutdown` completes, lets requests in flight finish, then stops the
    /// embedded cluster.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let database_note = match self.database.embedded() {
            Some(cluster) => format!(
                "embedded PostgreSQL {} in {} ({})",
                cluster.binaries().major_version(),
                cluster.data_dir().display(),
                cluster.describe_listen()
            ),
            None => db::describe_target(self.database.config()),
        };
        tracing::info!(
            url = %self.base_url(),
            database = %database_note,
            dev_mode = self.dev_mode,
            "ferry-server listening on {}",
            self.base_url()
        );
        // Said on stdout too, whatever RUST_LOG filters: the README's run command relies on it.
        println!("ferry-server: listening on {}", self.base_url());
        if self.dev_mode {
            println!(
                "ferry-server: dev mode; get a demo token with:\n  curl -X POST {}/dev/token -H 'content-type: application/json' -d '{{\"user\":\"alice\"}}'",
                self.base_url()
            );
        }
        serve(
            self.listener,
            self.router,
            self.header_read_timeout,
            shutdown,
        )
        .await;
        // The router (and with it the pool) is gone: the cluster can stop without waiting on
        // our connections.
        self.database.stop().await?;
        tracing::info!("ferry-server stopped");
        Ok(())
    }
}

/// Serves `router` on `listener` over HTTP/1.1, each connection in its own task, until
/// `shutdown` completes; then stops accepting, lets every connection finish the request it is
/// in (idle ones close at once) and returns when all are closed.
///
/// A connection that has not sent a whole request head `header_read_timeout` after the server
/// started waiting for one (a new connection, or an idle keep-alive one) is closed.
async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::trace!(%peer, "connection accepted");
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tracing::debug!(
        connections = connections.count(),
        "no longer accepting; waiting for open connections"
    );
    connections.shutdown().await;
}

/// Whether an `accept` error concerns only the one connection (the next accept may succeed).
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
