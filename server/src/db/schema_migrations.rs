//! Schema migrations: versioned SQL that creates and changes tables, embedded in the binary
//! and applied in order.
//!
//! (Not to be confused with a *migration*, Ferry's data move: a browser's records shipped in
//! batches under a `migration_id`. A schema migration changes tables; it moves no data.)
//!
//! The SQL lives in `server/schema_migrations/<group>/NNNN_name.sql` and is compiled in with
//! `include_str!`, so a server binary always carries the schema it expects. Schema migrations
//! come in two groups, applied in this order:
//! - **ferry**: Ferry's own tables (idempotency ledger, quarantine, conflicts, before-images,
//!   backups, migration runs). Always applied.
//! - **app**: the app's tables, where migrated records land. An app whose tables already
//!   exist *baselines* them instead ([`SchemaMigrationMode::Baseline`]): they are recorded as applied
//!   without running.
//!
//! Each schema migration runs in its own transaction and is recorded in
//! `ferry_schema_migrations` with a checksum of its SQL, so an applied one that was edited
//! afterwards is detected rather than silently skipped. The whole run holds a PostgreSQL
//! advisory lock, so two server processes starting together apply each one once. A schema
//! migration may not use statements that refuse to run inside a transaction
//! (`CREATE INDEX CONCURRENTLY`).

use std::fmt;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::db::DbError;

/// Key of the advisory lock held while applying schema migrations ("ferry_mg" in ASCII).
pub const SCHEMA_MIGRATION_LOCK_KEY: i64 = 0x6665_7272_795f_6d67;

/// A group of schema migrations; groups are applied in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SchemaMigrationGroup {
    /// Ferry's own tables.
    Ferry,
    /// The app's tables.
    App,
}

impl SchemaMigrationGroup {
    /// The name stored in `ferry_schema_migrations` and used as the folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ferry => "ferry",
            Self::App => "app",
        }
    }
}

/// One schema migration: a group, a version (its file's number) and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct SchemaMigration {
    /// The group it belongs to.
    pub group: SchemaMigrationGroup,
    /// Its version within the group, from 1.
    pub version: i32,
    /// Its file name without `.sql`, e.g. `0001_ferry_tables`.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

impl SchemaMigration {
    /// Hex SHA-256 of the SQL.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Display for SchemaMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group.as_str(), self.name)
    }
}

macro_rules! schema_migration {
    ($group:ident, $version:literal, $name:literal) => {
        SchemaMigration {
            group: SchemaMigrationGroup::$group,
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../schema_migrations/", schema_migration!(@dir $group), "/", $name, ".sql")),
        }
    };
    (@dir Ferry) => { "ferry" };
    (@dir App) => { "app" };
}

/// Every schema migration, in the order they are applied. A test checks this list against the
/// files.
pub const SCHEMA_MIGRATIONS: &[SchemaMigration] = &[
    schema_migration!(Ferry, 1, "0001_ferry_tables"),
    schema_migration!(Ferry, 2, "0002_ingest_bookkeeping"),
    schema_migration!(Ferry, 3, "0003_resolutions_and_backups"),
    schema_migration!(Ferry, 4, "0004_sealed_quarantine"),
    schema_migration!(Ferry, 5, "0005_received_hash_bytes"),
    schema_migration!(Ferry, 6, "0006_migration_run_verification"),
    schema_migration!(App, 1, "0001_demo_app_tables"),
];

/// What to do with pending app-table schema migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMigrationMode {
    /// Run every pending schema migration.
    Apply,
    /// Run pending Ferry schema migrations; record pending app ones as applied without running
    /// them (the app's tables already exist).
    Baseline,
}

/// What a run of the schema migrations did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaMigrationReport {
    /// Schema migrations run now, as `group/name`.
    pub applied: Vec<String>,
    /// Schema migrations recorded as applied without running.
    pub baselined: Vec<String>,
    /// Schema migrations that were already applied.
    pub already_applied: Vec<String>,
}

/// A row of `ferry_schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedSchemaMigration {
    /// Group name.
    pub group: String,
    /// Version.
    pub version: i32,
    /// File name without `.sql`.
    pub name: String,
    /// Hex SHA-256 of the SQL when it was applied.
    pub checksum: String,
    /// Whether it was recorded by `--baseline` rather than run.
    pub baselined: bool,
}

/// Why applying the schema migrations failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaMigrationError {
    /// Talking to the database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// An applied schema migration's SQL differs from the embedded one.
    #[error(
        "schema migration {migration} was changed after it was applied (its checksum differs from the one recorded); add a new schema migration instead of editing an applied one"
    )]
    ChecksumMismatch {
        /// `group/name`.
        migration: String,
    },
    /// The database has a schema migration this build does not know.
    #[error(
        "the database records schema migration {group}/{name} (version {version}), which this build of ferry-server does not know; run a newer ferry-server"
    )]
    UnknownApplied {
        /// Group name.
        group: String,
        /// Version.
        version: i32,
        /// Name.
        name: String,
    },
    /// An app schema migration tried to create a table that exists.
    #[error(
        "schema migration {migration} failed because a table it creates already exists ({reason}); if the app's tables were created outside Ferry, run `ferry-server migrate --baseline` to check them and record the schema migration as applied"
    )]
    AppTablesExist {
        /// `group/name`.
        migration: String,
        /// PostgreSQL's message.
        reason: String,
    },
    /// A schema migration's SQL failed; nothing of it was applied.
    #[error("schema migration {migration} failed and was rolled back: {source}")]
    Failed {
        /// `group/name`.
        migration: String,
        /// The failure.
        #[source]
        source: DbError,
    },
}

/// Applies [`SCHEMA_MIGRATIONS`] through `client` (a connection of its own: the advisory lock is
/// held by the session).
pub async fn migrate_schema(
    client: &mut Client,
    mode: SchemaMigrationMode,
) -> Result<SchemaMigrationReport, SchemaMigrationError> {
    run_schema_migrations(client, SCHEMA_MIGRATIONS, mode).await
}

/// Applies `migrations` (in the given order) under the schema migration lock.
pub async fn run_schema_migrations(
    client: &mut Client,
    migrations: &[SchemaMigration],
    mode: SchemaMigrationMode,
) -> Result<SchemaMigrationReport, SchemaMigrationError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_MIGRATION_LOCK_KEY])
        .await
        .map_err(|e| DbError::query("take the schema migration lock", &e))?;
    let result = run_locked(client, migrations, mode).await;
    // The lock also ends with the session, so a failed unlock is only worth a log line.
    if let Err(error) = client
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&SCHEMA_MIGRATION_LOCK_KEY],
        )
        .await
    {
        tracing::warn!(error = %crate::error_chain(&error), "could not release the schema migration lock");
    }
    result
}

async fn run_locked(
    client: &mut Client,
    migrations: &[SchemaMigration],
    mode: SchemaMigrationMode,
) -> Result<SchemaMigrationReport, SchemaMigrationError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ferry_schema_migrations (
                 migration_group text        NOT NULL,
                 version         integer     NOT NULL,
                 name            text        NOT NULL,
                 checksum        text        NOT NULL,
                 baselined       boolean     NOT NULL DEFAULT false,
                 applied_at      timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (migration_group, version)
             )",
        )
        .await
        .map_err(|e| DbError::query("create ferry_schema_migrations", &e))?;

    let recorded = applied_schema_migrations(client).await?;
    for row in &recorded {
        let known = migrations
            .iter()
            .find(|m| m.group.as_str() == row.group && m.version == row.version);
        match known {
            None => {
                return Err(SchemaMigrationError::UnknownApplied {
                    group: row.group.clone(),
                    version: row.version,
                    name: row.name.clone(),
                });
            }
            Some(m) if m.checksum() != row.checksum => {
                return Err(SchemaMigrationError::ChecksumMismatch {
                    migration: m.to_string(),
                });
            }
            Some(_) => {}
        }
    }

    let mut report = SchemaMigrationReport::default();
    for migration in migrations {
        let done = recorded
            .iter()
            .any(|r| r.group == migration.group.as_str() && r.version == migration.version);
        if done {
            report.already_applied.push(migration.to_string());
            continue;
        }
        let baseline =
            mode == SchemaMigrationMode::Baseline && migration.group == SchemaMigrationGroup::App;
        apply_one(client, migration, baseline).await?;
        if baseline {
            tracing::info!(schema_migration = %migration, "schema migration recorded as applied (baseline)");
            report.baselined.push(migration.to_string());
        } else {
            tracing::info!(schema_migration = %migration, "schema migration applied");
            report.applied.push(migration.to_string());
        }
    }
    Ok(report)
}

async fn apply_one(
    client: &mut Client,
    migration: &SchemaMigration,
    baseline: bool,
) -> Result<(), SchemaMigrationError> {
    let failed = |source: DbError| {
        if migration.group == SchemaMigrationGroup::App
            && source.sqlstate() == Some(SqlState::DUPLICATE_TABLE.code())
        {
            SchemaMigrationError::AppTablesExist {
                migration: migration.to_string(),
                reason: source.to_string(),
            }
        } else {
            SchemaMigrationError::Failed {
                migration: migration.to_string(),
                source,
            }
        }
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| failed(DbError::query("begin", &e)))?;
    if !baseline {
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| failed(DbError::query("run the SQL", &e)))?;
    }
    tx.execute(
        "INSERT INTO ferry_schema_migrations (migration_group, version, name, checksum, baselined)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &migration.group.as_str(),
            &migration.version,
            &migration.name,
            &migration.checksum(),
            &baseline,
        ],
    )
    .await
    .map_err(|e| failed(DbError::query("record the schema migration", &e)))?;
    tx.commit()
        .await
        .map_err(|e| failed(DbError::query("commit", &e)))
}

/// The rows of `ferry_schema_migrations`, oldest first; empty when the table does not exist.
pub async fn applied_schema_migrations(
    client: &Client,
) -> Result<Vec<AppliedSchemaMigration>, DbError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('ferry_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| DbError::query("look for ferry_schema_migrations", &e))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT migration_group, version, name, checksum, baselined
             FROM ferry_schema_migrations ORDER BY applied_at, migration_group, version",
            &[],
        )
        .await
        .map_err(|e| DbError::query("read ferry_schema_migrations", &e))?;
    Ok(rows
        .iter()
        .map(|row| AppliedSchemaMigration {
            group: row.get(0),
            version: row.get(1),
            name: row.get(2),
            checksum: row.get(3),
            baselined: row.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_order_without_gaps() {
        for group in [SchemaMigrationGroup::Ferry, SchemaMigrationGroup::App] {
            let versions: Vec<i32> = SCHEMA_MIGRATIONS
                .iter()
                .filter(|m| m.group == group)
                .map(|m| m.version)
                .collect();
            let expected: Vec<i32> = (1..=versions.len() as i32).collect();
            assert_eq!(versions, expected, "group {}", group.as_str());
        }
        let groups: Vec<SchemaMigrationGroup> = SCHEMA_MIGRATIONS.iter().map(|m| m.group).collect();
        let mut sorted = groups.clone();
        sorted.sort();
        assert_eq!(
            groups, sorted,
            "ferry migrations come before app migrations"
        );
    }

    #[test]
    fn names_start_with_their_version() {
        for m in SCHEMA_MIGRATIONS {
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{m} should start with {:04}_",
                m.version
            );
        }
    }

    #[test]
    fn checksums_are_hex_sha256() {
        let checksum = SCHEMA_MIGRATIONS[0].checksum();
        assert_eq!(checksum.len(), 64);
        assert!(checksum.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
