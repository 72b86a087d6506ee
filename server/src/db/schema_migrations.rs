//! Versioned schema migrations, embedded in the binary and applied in order.
//!
//! The SQL lives in `server/migrations/<group>/NNNN_name.sql` and is compiled in with
//! `include_str!`, so a server binary always carries the schema it expects. Migrations come in
//! two groups, applied in this order:
//! - **ferry**: Ferry's own tables (idempotency ledger, quarantine, conflicts, before-images,
//!   backups, migration runs). Always applied.
//! - **app**: the app's tables, where migrated records land. An app whose tables already
//!   exist *baselines* them instead ([`MigrateMode::Baseline`]): they are recorded as applied
//!   without running.
//!
//! Each migration runs in its own transaction and is recorded in `ferry_schema_migrations`
//! with a checksum of its SQL, so an applied migration that was edited afterwards is detected
//! rather than silently skipped. The whole run holds a PostgreSQL advisory lock, so two server
//! processes starting together apply each migration once. A migration may not use statements
//! that refuse to run inside a transaction (`CREATE INDEX CONCURRENTLY`).

use std::fmt;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::db::DbError;

/// Key of the advisory lock held while migrating ("ferry_mg" in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x6665_7272_795f_6d67;

/// A group of migrations; groups are applied in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigrationGroup {
    /// Ferry's own tables.
    Ferry,
    /// The app's tables.
    App,
}

impl MigrationGroup {
    /// The name stored in `ferry_schema_migrations` and used as the folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ferry => "ferry",
            Self::App => "app",
        }
    }
}

/// One migration: a group, a version (its file's number) and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The group it belongs to.
    pub group: MigrationGroup,
    /// Its version within the group, from 1.
    pub version: i32,
    /// Its file name without `.sql`, e.g. `0001_ferry_tables`.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the SQL.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Display for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group.as_str(), self.name)
    }
}

macro_rules! migration {
    ($group:ident, $version:literal, $name:literal) => {
        Migration {
            group: MigrationGroup::$group,
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", migration!(@dir $group), "/", $name, ".sql")),
        }
    };
    (@dir Ferry) => { "ferry" };
    (@dir App) => { "app" };
}

/// Every migration, in the order they are applied. A test checks this list against the files.
pub const MIGRATIONS: &[Migration] = &[
    migration!(Ferry, 1, "0001_ferry_tables"),
    migration!(Ferry, 2, "0002_ingest_bookkeeping"),
    migration!(Ferry, 3, "0003_resolutions_and_backups"),
    migration!(Ferry, 4, "0004_sealed_quarantine"),
    migration!(Ferry, 5, "0005_received_hash_bytes"),
    migration!(App, 1, "0001_demo_app_tables"),
];

/// What to do with pending app-table migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateMode {
    /// Run every pending migration.
    Apply,
    /// Run pending Ferry migrations; record pending app migrations as applied without running
    /// them (the app's tables already exist).
    Baseline,
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations run now, as `group/name`.
    pub applied: Vec<String>,
    /// Migrations recorded as applied without running.
    pub baselined: Vec<String>,
    /// Migrations that were already applied.
    pub already_applied: Vec<String>,
}

/// A row of `ferry_schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
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

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Talking to the database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// An applied migration's SQL differs from the embedded one.
    #[error(
        "migration {migration} was changed after it was applied (its checksum differs from the one recorded); add a new migration instead of editing an applied one"
    )]
    ChecksumMismatch {
        /// `group/name`.
        migration: String,
    },
    /// The database has a migration this build does not know.
    #[error(
        "the database records migration {group}/{name} (version {version}), which this build of ferry-server does not know; run a newer ferry-server"
    )]
    UnknownApplied {
        /// Group name.
        group: String,
        /// Version.
        version: i32,
        /// Name.
        name: String,
    },
    /// An app migration tried to create a table that exists.
    #[error(
        "migration {migration} failed because a table it creates already exists ({reason}); if the app's tables were created outside Ferry, run `ferry-server migrate --baseline` to check them and record the migration as applied"
    )]
    AppTablesExist {
        /// `group/name`.
        migration: String,
        /// PostgreSQL's message.
        reason: String,
    },
    /// A migration's SQL failed; nothing of it was applied.
    #[error("migration {migration} failed and was rolled back: {source}")]
    Failed {
        /// `group/name`.
        migration: String,
        /// The failure.
        #[source]
        source: DbError,
    },
}

/// Applies [`MIGRATIONS`] through `client` (a connection of its own: the advisory lock is
/// held by the session).
pub async fn migrate(
    client: &mut Client,
    mode: MigrateMode,
) -> Result<MigrationReport, MigrationError> {
    run_migrations(client, MIGRATIONS, mode).await
}

/// Applies `migrations` (in the given order) under the migration lock.
pub async fn run_migrations(
    client: &mut Client,
    migrations: &[Migration],
    mode: MigrateMode,
) -> Result<MigrationReport, MigrationError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|e| DbError::query("take the migration lock", &e))?;
    let result = run_locked(client, migrations, mode).await;
    // The lock also ends with the session, so a failed unlock is only worth a log line.
    if let Err(error) = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
    {
        tracing::warn!(error = %crate::error_chain(&error), "could not release the migration lock");
    }
    result
}

async fn run_locked(
    client: &mut Client,
    migrations: &[Migration],
    mode: MigrateMode,
) -> Result<MigrationReport, MigrationError> {
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

    let recorded = applied_migrations(client).await?;
    for row in &recorded {
        let known = migrations
            .iter()
            .find(|m| m.group.as_str() == row.group && m.version == row.version);
        match known {
            None => {
                return Err(MigrationError::UnknownApplied {
                    group: row.group.clone(),
                    version: row.version,
                    name: row.name.clone(),
                });
            }
            Some(m) if m.checksum() != row.checksum => {
                return Err(MigrationError::ChecksumMismatch {
                    migration: m.to_string(),
                });
            }
            Some(_) => {}
        }
    }

    let mut report = MigrationReport::default();
    for migration in migrations {
        let done = recorded
            .iter()
            .any(|r| r.group == migration.group.as_str() && r.version == migration.version);
        if done {
            report.already_applied.push(migration.to_string());
            continue;
        }
        let baseline = mode == MigrateMode::Baseline && migration.group == MigrationGroup::App;
        apply_one(client, migration, baseline).await?;
        if baseline {
            tracing::info!(%migration, "migration recorded as applied (baseline)");
            report.baselined.push(migration.to_string());
        } else {
            tracing::info!(%migration, "migration applied");
            report.applied.push(migration.to_string());
        }
    }
    Ok(report)
}

async fn apply_one(
    client: &mut Client,
    migration: &Migration,
    baseline: bool,
) -> Result<(), MigrationError> {
    let failed = |source: DbError| {
        if migration.group == MigrationGroup::App
            && source.sqlstate() == Some(SqlState::DUPLICATE_TABLE.code())
        {
            MigrationError::AppTablesExist {
                migration: migration.to_string(),
                reason: source.to_string(),
            }
        } else {
            MigrationError::Failed {
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
    .map_err(|e| failed(DbError::query("record the migration", &e)))?;
    tx.commit()
        .await
        .map_err(|e| failed(DbError::query("commit", &e)))
}

/// The rows of `ferry_schema_migrations`, oldest first; empty when the table does not exist.
pub async fn applied_migrations(client: &Client) -> Result<Vec<AppliedMigration>, DbError> {
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
        .map(|row| AppliedMigration {
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
        for group in [MigrationGroup::Ferry, MigrationGroup::App] {
            let versions: Vec<i32> = MIGRATIONS
                .iter()
                .filter(|m| m.group == group)
                .map(|m| m.version)
                .collect();
            let expected: Vec<i32> = (1..=versions.len() as i32).collect();
            assert_eq!(versions, expected, "group {}", group.as_str());
        }
        let groups: Vec<MigrationGroup> = MIGRATIONS.iter().map(|m| m.group).collect();
        let mut sorted = groups.clone();
        sorted.sort();
        assert_eq!(
            groups, sorted,
            "ferry migrations come before app migrations"
        );
    }

    #[test]
    fn names_start_with_their_version() {
        for m in MIGRATIONS {
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{m} should start with {:04}_",
                m.version
            );
        }
    }

    #[test]
    fn checksums_are_hex_sha256() {
        let checksum = MIGRATIONS[0].checksum();
        assert_eq!(checksum.len(), 64);
        assert!(checksum.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
