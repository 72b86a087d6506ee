//! The database the server runs on: the one `DATABASE_URL` names, or the embedded cluster's;
//! made ready at start (schema migrations applied, the app schema checked) and by
//! `ferry-server migrate` (which applies schema migrations, nothing else).

use crate::db;
use crate::db::embedded_pg::{
    EmbeddedPg, EmbeddedPgError, EmbeddedPgOptions, Listen, is_cluster, running_cluster_config,
};
use crate::db::schema_check::{ExpectedTable, SchemaMismatch, check_schema, expected_tables};
use crate::db::schema_migrations::{
    SchemaMigration, SchemaMigrationMode, SchemaMigrationReport, load_app_migrations,
    migrate_schema,
};
use crate::startup::config::{PgListen, Settings};
use crate::startup::{StartupError, load_specs};

/// The database the server creates and uses in the embedded cluster.
pub const EMBEDDED_DATABASE: &str = "ferry";

/// The database the server uses, and the embedded cluster behind it if there is one.
#[derive(Debug)]
pub struct Database {
    config: tokio_postgres::Config,
    embedded: Option<EmbeddedPg>,
    /// The embedded cluster of a running server, joined rather than driven.
    joined_embedded: bool,
}

impl Database {
    /// An existing server's database.
    pub fn external(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            embedded: None,
            joined_embedded: false,
        }
    }

    /// Whether this is the project's embedded cluster (driven here or by a running server):
    /// dev mode, as for `serve` without `DATABASE_URL`.
    pub fn on_embedded_cluster(&self) -> bool {
        self.embedded.is_some() || self.joined_embedded
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

/// The database named by `DATABASE_URL`, or the embedded cluster's `ferry` database (for
/// `serve`: the cluster and the database are created when missing).
pub async fn open_database(settings: &Settings) -> Result<Database, StartupError> {
    if let Some(url) = &settings.database_url {
        return Ok(Database::external(db::parse_database_url(url)?));
    }
    let database = start_embedded(settings).await?;
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

/// The database an operator command works on: the one `DATABASE_URL` names, else the embedded
/// cluster's `ferry` database, only if it exists: the cluster a running server drives is
/// joined, a stopped one is started (and stopped after the command). Nothing is created: no
/// `initdb`, no `CREATE DATABASE`; without a database the error says how to get one.
pub async fn open_existing_database(settings: &Settings) -> Result<Database, StartupError> {
    if let Some(url) = &settings.database_url {
        return Ok(Database::external(db::parse_database_url(url)?));
    }
    let data_dir = settings.pg_data_dir();
    if !is_cluster(&data_dir) {
        return Err(StartupError::NoDatabase {
            reason: format!(
                "there is no embedded cluster in {} (project dir {})",
                data_dir.display(),
                settings.project_dir.display()
            ),
        });
    }
    let database = match running_cluster_config(&data_dir, EMBEDDED_DATABASE) {
        Some(config) => {
            tracing::info!(data_dir = %data_dir.display(), "using the embedded cluster of the running server");
            Database {
                joined_embedded: true,
                ..Database::external(config)
            }
        }
        None => start_embedded(settings).await?,
    };
    let mut admin = database.config.clone();
    admin.dbname("postgres");
    match db::database_exists(&admin, EMBEDDED_DATABASE).await {
        Ok(true) => Ok(database),
        Ok(false) => {
            database.stop().await?;
            Err(StartupError::NoDatabase {
                reason: format!(
                    "the embedded cluster in {} has no `{EMBEDDED_DATABASE}` database yet",
                    data_dir.display()
                ),
            })
        }
        Err(error) => {
            database.stop().await?;
            Err(error.into())
        }
    }
}

/// Starts the embedded cluster the settings describe (`initdb` when its data directory is
/// empty); a watchdog stops it should this process die.
async fn start_embedded(settings: &Settings) -> Result<Database, StartupError> {
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
    Ok(Database {
        config: cluster.config(EMBEDDED_DATABASE),
        embedded: Some(cluster),
        joined_embedded: false,
    })
}

/// The app's schema migrations from the folder the settings name (`--app-migrations`), checked
/// whole; none without a folder.
pub fn app_migrations(settings: &Settings) -> Result<Vec<SchemaMigration>, StartupError> {
    match &settings.app_migrations {
        Some(dir) => Ok(load_app_migrations(dir)?),
        None => Ok(Vec::new()),
    }
}

/// Applies pending schema migrations (Ferry's, then the `app` ones) and checks the app schema
/// against `expected` (from the spec): what the server does at every start.
pub async fn prepare_schema(
    config: &tokio_postgres::Config,
    app: &[SchemaMigration],
    expected: &[ExpectedTable],
) -> Result<SchemaMigrationReport, StartupError> {
    let mut client = db::connect(config).await?;
    let report = migrate_schema(&mut client, app, SchemaMigrationMode::Apply).await?;
    let mismatches = refusing_mismatches(check_schema(&client, expected).await?);
    if !mismatches.is_empty() {
        return Err(StartupError::SchemaMismatch(mismatches));
    }
    Ok(report)
}

/// The mismatches that refuse the start; the warnings among `mismatches` (what Ferry cannot
/// prove either way, quarantined at run time) are logged here.
fn refusing_mismatches(mismatches: Vec<SchemaMismatch>) -> Vec<SchemaMismatch> {
    let (warnings, errors): (Vec<_>, Vec<_>) =
        mismatches.into_iter().partition(SchemaMismatch::is_warning);
    for warning in &warnings {
        tracing::warn!("schema check: {warning}");
    }
    errors
}

/// `ferry-server migrate [--baseline]` against `config`: applies the pending schema migrations.
/// With `baseline`, the app tables are checked against `expected` first and the app schema
/// migrations recorded without running.
pub async fn migrate_database_schema(
    config: &tokio_postgres::Config,
    baseline: bool,
    app: &[SchemaMigration],
    expected: &[ExpectedTable],
) -> Result<SchemaMigrationReport, StartupError> {
    let mut client = db::connect(config).await?;
    if !baseline {
        return Ok(migrate_schema(&mut client, app, SchemaMigrationMode::Apply).await?);
    }
    let mismatches = refusing_mismatches(check_schema(&client, expected).await?);
    if !mismatches.is_empty() {
        return Err(StartupError::BaselineRefused(mismatches));
    }
    Ok(migrate_schema(&mut client, app, SchemaMigrationMode::Baseline).await?)
}

/// `ferry-server migrate [--baseline]`: opens the existing database (see
/// [`open_existing_database`]) and applies its schema migrations.
pub async fn run_migrate_command(
    settings: &Settings,
    baseline: bool,
) -> Result<SchemaMigrationReport, StartupError> {
    let specs = load_specs(settings)?;
    let expected: Vec<_> = specs
        .iter()
        .flat_map(|l| expected_tables(&l.spec))
        .collect();
    let app = app_migrations(settings)?;
    let database = open_existing_database(settings).await?;
    let result = migrate_database_schema(database.config(), baseline, &app, &expected).await;
    database.stop().await?;
    result
}
