//! Start-up and configuration: from flags and environment to a bound socket, and back down.
//!
//! [`Application::build`] does everything that can fail before the first request — opening
//! the database (starting the embedded cluster when there is no `DATABASE_URL`), applying the
//! schema migrations, checking the app schema, building the keys and the pool, binding the
//! socket — so a misconfigured server stops at once with a message instead of failing requests
//! later. [`Application::run_until_stopped`] serves until the shutdown future completes, lets
//! the requests in flight finish, then stops the embedded cluster.
//!
//! The room:
//! - [`config`]: the typed settings (flags and environment); [`secret`]: values that never print.
//! - `database`: the database the server runs on ([`Database`], [`open_database`]) and its
//!   schema made ready ([`prepare_schema`], [`run_migrate_command`]).
//! - `serving`: the HTTP/1 serving loop with its header read timeout and graceful shutdown.
//! - [`telemetry`]: logging; [`shutdown`]: SIGINT/SIGTERM; [`faults`]: dev-only fault points
//!   for the crash tests.

pub mod config;
mod database;
pub mod faults;
pub mod secret;
mod serving;
pub mod shutdown;
pub mod specs;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use database::{
    Database, EMBEDDED_DATABASE, app_migrations, migrate_database_schema, open_database,
    open_existing_database, prepare_schema, run_migrate_command,
};
pub use serving::{HYPER_MAX_HEADER_BYTES, HYPER_MAX_HEADERS};

use crate::db::embedded_pg::EmbeddedPgError;
use crate::db::schema_check::{SchemaMismatch, describe_mismatches, expected_tables};
use crate::db::schema_migrations::{AppMigrationsError, SchemaMigration, SchemaMigrationError};
use crate::db::{self, DbError, PoolSettings};
use crate::http::auth::jwks::{Jwks, JwksError};
use crate::http::auth::{Authenticator, JwtKeys, KeyError};
use crate::http::state::{AppState, Engines, HttpSettings};
use crate::http::{app, is_valid_origin};
use crate::ingest::field_crypto::{self, FieldCipher, FieldKeyError};
use crate::startup::config::Settings;
use ferry_core::spec::{Spec, SpecError};

/// Why the server could not start (or stop) cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The embedded cluster could not be started or stopped.
    #[error("embedded PostgreSQL: {0}")]
    EmbeddedPg(#[from] EmbeddedPgError),
    /// The database could not be reached or queried.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Applying the schema migrations failed.
    #[error(transparent)]
    SchemaMigration(#[from] SchemaMigrationError),
    /// An operator command found no database to work on (it creates none).
    #[error(
        "no database to work on: DATABASE_URL is not set and {reason}. Run `ferry-server serve` once in this project to create its embedded cluster (or pass the project's --project-dir / FERRY_PROJECT_DIR), or set DATABASE_URL to your database."
    )]
    NoDatabase {
        /// What is missing.
        reason: String,
    },
    /// The operator token could not be read or is too weak.
    #[error("the operator token (FERRY_OPERATOR_TOKEN / --operator-token-file): {0}")]
    OperatorToken(String),
    /// The app schema migrations folder was refused; every problem is listed.
    #[error(transparent)]
    AppMigrations(#[from] AppMigrationsError),
    /// The app's tables do not fit what the server writes.
    #[error("the database schema does not match what the server needs:\n{}\n{}", describe_mismatches(.0), schema_mismatch_advice(.0))]
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
    /// Two spec files name the same app and version.
    #[error(
        "the migration specs {first} and {second} (FERRY_SPEC) both are app {app:?} version {version:?}: each version is served from one file"
    )]
    SpecDuplicate {
        /// The app.
        app: String,
        /// The version.
        version: String,
        /// The first file.
        first: std::path::PathBuf,
        /// The second file.
        second: std::path::PathBuf,
    },
    /// Several spec files were refused: every problem of every file.
    #[error("{} problems with the migration specs (FERRY_SPEC):\n{}", .0.len(), .0.iter().map(|e| format!("- {e}")).collect::<Vec<_>>().join("\n"))]
    Specs(Vec<StartupError>),
    /// No field key outside dev mode.
    #[error(
        "FERRY_FIELD_KEY is required unless the server runs in dev mode (FERRY_DEV=true or no DATABASE_URL): set it to 64 hex characters, e.g. `openssl rand -hex 32`, and keep it: without it the encrypted fields cannot be read"
    )]
    FieldKeyRequired,
    /// The field key is unusable.
    #[error(transparent)]
    FieldKey(#[from] FieldKeyError),
    /// No way to verify tokens outside dev mode.
    #[error(
        "FERRY_JWT_SECRET (HS256) or FERRY_JWKS_URL / FERRY_JWKS_FILE (RS256/ES256) is required unless the server runs in dev mode (FERRY_DEV=true or no DATABASE_URL)"
    )]
    JwtSecretRequired,
    /// The JWKS could not be loaded.
    #[error(transparent)]
    Jwks(#[from] JwksError),
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

/// What to do about a refused schema: how to create missing tables, or to fix them.
fn schema_mismatch_advice(mismatches: &[SchemaMismatch]) -> &'static str {
    let missing = mismatches
        .iter()
        .any(|m| matches!(m, SchemaMismatch::MissingTable { .. }));
    if missing {
        "The app's tables are the app's own: Ferry creates none unless told. Create them with schema migrations: `ferry-server spec ddl SPEC > DIR/0001_app_tables.sql` writes tables that pass this check; then start with `--app-migrations DIR` (FERRY_APP_MIGRATIONS=DIR). Tables that exist already: fix them, then `ferry-server migrate --baseline --app-migrations DIR`."
    } else {
        "Fix the tables (or the expected schema) and start again."
    }
}

/// Reads and checks the specs named by the settings (every version of every app), and returns
/// the newest version (of the first app): the parsed spec and the file's text.
pub fn load_spec(settings: &Settings) -> Result<(Spec, String), StartupError> {
    let specs = load_specs(settings)?;
    let app = specs.first().map(|l| l.spec.app.clone());
    let newest = specs
        .into_iter()
        .rfind(|l| Some(&l.spec.app) == app.as_ref())
        .ok_or_else(|| StartupError::Specs(Vec::new()))?;
    Ok((newest.spec, newest.text))
}

/// Reads and checks every spec named by the settings, ordered by app, then oldest version to
/// newest ([`specs::read_specs`]).
pub fn load_specs(settings: &Settings) -> Result<Vec<specs::LoadedSpec>, StartupError> {
    specs::read_specs(&settings.spec_paths())
}

/// Reads and checks the spec in this file, refused with the messages the server gives at start.
pub fn read_spec(path: std::path::PathBuf) -> Result<(Spec, String), StartupError> {
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

/// How tokens are verified: the HS256 secret (generated in dev mode when unset), the JWKS
/// (loaded now: a URL that does not answer with a usable key set stops the start), and the
/// accepted issuers and audiences.
pub async fn build_authenticator(
    settings: &Settings,
    dev_mode: bool,
) -> Result<Authenticator, StartupError> {
    let jwks = match settings.jwks_source() {
        Some(source) => Some(
            Jwks::load(
                source,
                settings.jwks_refresh(),
                settings.jwks_refetch_cooldown(),
            )
            .await?,
        ),
        None => None,
    };
    let shared = match (&settings.jwt_secret, dev_mode) {
        (Some(secret), _) => Some(JwtKeys::from_secret(secret.expose().as_bytes())?),
        (None, true) => {
            tracing::info!(
                "FERRY_JWT_SECRET is not set: generated a random signing secret for this run (dev mode); tokens issued now stop working when the server restarts"
            );
            Some(JwtKeys::generate()?)
        }
        (None, false) if jwks.is_some() => None,
        (None, false) => return Err(StartupError::JwtSecretRequired),
    };
    Ok(Authenticator::new(
        shared,
        jwks,
        settings.jwt_issuer.clone(),
        settings.jwt_audience.clone(),
    )?)
}

/// A server ready to serve: everything checked, socket bound.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    database: Database,
    address: SocketAddr,
    dev_mode: bool,
    /// Which tokens are accepted, said at start.
    auth_note: String,
    /// The project dir in use, said at start.
    project_dir: std::path::PathBuf,
    header_read_timeout: Duration,
    /// Whether the start notes are also printed on stdout (not with JSON logs, where every
    /// line the process writes is meant to be JSON).
    stdout_notes: bool,
}

impl Application {
    /// Opens the database described by `settings` and builds the server over it.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        tracing::info!(project_dir = %settings.project_dir.display(), "project dir (--project-dir / FERRY_PROJECT_DIR)");
        // A refused spec or folder stops the start before any database is opened or written
        // (the spec is read again, with the rest, once the database is there).
        load_specs(settings)?;
        let app = app_migrations(settings)?;
        let database = open_database(settings).await?;
        Self::build_over(settings, database, app).await
    }

    /// Builds the server over `database` (applying its schema migrations and checking it). On
    /// failure the embedded cluster, if any, is stopped.
    pub async fn build_with_database(
        settings: &Settings,
        database: Database,
    ) -> Result<Self, StartupError> {
        match app_migrations(settings) {
            Ok(app) => Self::build_over(settings, database, app).await,
            Err(error) => {
                if let Err(stop_error) = database.stop().await {
                    tracing::error!(error = %stop_error, "could not stop the embedded cluster");
                }
                Err(error)
            }
        }
    }

    async fn build_over(
        settings: &Settings,
        database: Database,
        app: Vec<SchemaMigration>,
    ) -> Result<Self, StartupError> {
        match Self::prepare(settings, &database, &app).await {
            Ok((listener, router, address, dev_mode, auth_note)) => Ok(Self {
                listener,
                router,
                database,
                address,
                dev_mode,
                auth_note,
                project_dir: settings.project_dir.clone(),
                header_read_timeout: settings.header_read_timeout(),
                stdout_notes: settings.log_format == telemetry::LogFormat::Text,
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
        app_tables: &[SchemaMigration],
    ) -> Result<(TcpListener, Router, SocketAddr, bool, String), StartupError> {
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
        let keys = build_authenticator(settings, dev_mode).await?;
        let auth_note = keys.describe();

        let specs = load_specs(settings)?;
        let cipher = load_field_cipher(settings, dev_mode)?;
        if app_tables.is_empty() {
            tracing::info!(
                "no app schema migrations folder (--app-migrations): the app's tables are left as they are"
            );
        }
        // Every version's tables must pass: a batch of any served version is written.
        let expected: Vec<_> = specs
            .iter()
            .flat_map(|l| expected_tables(&l.spec))
            .collect();
        let report = prepare_schema(database.config(), app_tables, &expected).await?;
        tracing::info!(
            applied = report.applied.len(),
            already_applied = report.already_applied.len(),
            "schema ready"
        );

        let pool = db::build_pool(
            database.config().clone(),
            &PoolSettings {
                size: settings.db_pool_size,
                connect_timeout: settings.connect_timeout(),
            },
        )?;
        for l in &specs {
            tracing::info!(app = %l.spec.app, version = %l.spec.version, path = %l.path.display(), "serving spec");
        }
        let engine = Engines::new(specs, cipher);
        let mut http = HttpSettings::from_settings(settings, dev_mode);
        http.operator_token = operator_token(settings)?;
        if http.operator_token.is_none() {
            tracing::info!(
                "no operator token (FERRY_OPERATOR_TOKEN): the dashboard at /admin is off"
            );
        }
        let state = AppState::new(pool, keys, http, engine)?;
        let address = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| StartupError::Bind { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?;
        Ok((listener, app(state), address, dev_mode, auth_note))
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
        // Before the "listening" line, which is what tests and scripts wait for.
        tracing::info!("{}", self.auth_note);
        tracing::info!(
            url = %self.base_url(),
            database = %database_note,
            dev_mode = self.dev_mode,
            "ferry-server listening on {}",
            self.base_url()
        );
        // Said on stdout too, whatever RUST_LOG filters: the README's run command relies on it.
        // With JSON logs, the log lines are the only output (a pipeline reads every line).
        if self.stdout_notes {
            println!(
                "ferry-server: project dir {} (--project-dir / FERRY_PROJECT_DIR)",
                self.project_dir.display()
            );
            println!("ferry-server: listening on {}", self.base_url());
            println!("ferry-server: {}", self.auth_note);
        }
        if self.dev_mode && self.stdout_notes {
            println!(
                "ferry-server: dev mode; get a demo token with:\n  curl -X POST {}/dev/token -H 'content-type: application/json' -d '{{\"user\":\"alice\"}}'",
                self.base_url()
            );
        }
        serving::serve(
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

/// The operator's credential for `/admin`: `--operator-token` / `FERRY_OPERATOR_TOKEN`, or
/// the first line of `--operator-token-file`; `None` when neither is set.
pub fn operator_token(
    settings: &Settings,
) -> Result<Option<crate::http::admin::OperatorToken>, StartupError> {
    let text = match (&settings.operator_token, &settings.operator_token_file) {
        (Some(token), _) => token.expose().clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                StartupError::OperatorToken(format!("cannot read {}: {e}", path.display()))
            })?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    crate::http::admin::OperatorToken::new(&text)
        .map(Some)
        .map_err(StartupError::OperatorToken)
}
