//! Schema migrations: versioned SQL that creates and changes tables, applied in order.
//!
//! (Not to be confused with a *migration*, Ferry's data move: a browser's records shipped in
//! batches under a `migration_id`. A schema migration changes tables; it moves no data.)
//!
//! Schema migrations come in two groups, applied in this order:
//! - **ferry**: Ferry's own tables (idempotency ledger, quarantine, conflicts, before-images,
//!   backups, migration runs), in `server/schema_migrations/ferry/NNNN_name.sql`, compiled in
//!   with `include_str!` so a server binary always carries the schema it needs. Always applied.
//! - **app**: the app's tables, where migrated records land. They belong to the app, not to
//!   Ferry: nothing of them is compiled in. The operator names a folder of `NNNN_name.sql`
//!   files (`--app-migrations DIR`, [`load_app_migrations`]); without one, no app table is
//!   ever created. An app whose tables already exist *baselines* them instead
//!   ([`SchemaMigrationMode::Baseline`]): they are recorded as applied without running.
//!
//! Each schema migration runs in its own transaction and is recorded in
//! `ferry_schema_migrations` with a checksum of its SQL, so an applied one that was edited
//! afterwards is detected rather than silently skipped. The whole run holds a PostgreSQL
//! advisory lock, so two server processes starting together apply each one once. A schema
//! migration may not use statements that refuse to run inside a transaction
//! (`CREATE INDEX CONCURRENTLY`).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

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
#[derive(Debug, Clone)]
pub struct SchemaMigration {
    /// The group it belongs to.
    pub group: SchemaMigrationGroup,
    /// Its version within the group, from 1.
    pub version: i32,
    /// Its file name without `.sql`, e.g. `0001_ferry_tables`.
    pub name: Cow<'static, str>,
    /// The SQL.
    pub sql: Cow<'static, str>,
    /// The file it was read from at start (app schema migrations); `None` when compiled in.
    pub file: Option<PathBuf>,
}

impl SchemaMigration {
    /// `group/name`, followed by the file it was read from, if any: how errors name it.
    pub fn describe(&self) -> String {
        match &self.file {
            Some(file) => format!("{self} ({})", file.display()),
            None => self.to_string(),
        }
    }

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
            name: Cow::Borrowed($name),
            sql: Cow::Borrowed(include_str!(concat!(
                "../../schema_migrations/ferry/",
                $name,
                ".sql"
            ))),
            file: None,
        }
    };
}

/// Ferry's own schema migrations, compiled in, in the order they are applied. A test checks
/// this list against the files. (The app's come from a folder: [`load_app_migrations`].)
pub const SCHEMA_MIGRATIONS: &[SchemaMigration] = &[
    schema_migration!(Ferry, 1, "0001_ferry_tables"),
    schema_migration!(Ferry, 2, "0002_ingest_bookkeeping"),
    schema_migration!(Ferry, 3, "0003_resolutions_and_backups"),
    schema_migration!(Ferry, 4, "0004_sealed_quarantine"),
    schema_migration!(Ferry, 5, "0005_received_hash_bytes"),
    schema_migration!(Ferry, 6, "0006_migration_run_verification"),
    schema_migration!(Ferry, 7, "0007_spec_versions"),
    schema_migration!(Ferry, 8, "0008_purge"),
    schema_migration!(Ferry, 9, "0009_shared_rate_buckets"),
    schema_migration!(Ferry, 10, "0010_operator_audit"),
    schema_migration!(Ferry, 11, "0011_created_rows_per_batch"),
    schema_migration!(Ferry, 12, "0012_fleet_rollups"),
    schema_migration!(Ferry, 13, "0013_received_per_batch"),
    schema_migration!(Ferry, 14, "0014_before_images_per_statement"),
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
    /// An applied schema migration's SQL differs from its file (or the compiled-in one).
    #[error(
        "schema migration {migration} was changed after it was applied (its checksum differs from the one recorded); add a new schema migration instead of editing an applied one"
    )]
    ChecksumMismatch {
        /// `group/name`.
        migration: String,
    },
    /// The database records an app schema migration the folder does not have.
    #[error(
        "the database records app schema migration app/{name} (version {version}), which the app schema migrations folder (--app-migrations / FERRY_APP_MIGRATIONS) does not have; put its file back: an applied schema migration is never removed"
    )]
    UnknownAppApplied {
        /// Version.
        version: i32,
        /// Name.
        name: String,
    },
    /// The database has a Ferry schema migration this build does not know.
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
        "schema migration {migration} failed because a table it creates already exists ({reason}); if the app's tables were created outside Ferry, run `ferry-server migrate --baseline --app-migrations DIR` (the same folder) to check them and record its schema migrations as applied"
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

/// Applies Ferry's [`SCHEMA_MIGRATIONS`], then the app's (from [`load_app_migrations`]; empty:
/// no app table is touched) through `client`.
pub async fn migrate_schema(
    client: &mut Client,
    app: &[SchemaMigration],
    mode: SchemaMigrationMode,
) -> Result<SchemaMigrationReport, SchemaMigrationError> {
    let mut migrations = SCHEMA_MIGRATIONS.to_vec();
    migrations.extend(app.iter().cloned());
    run_schema_migrations(client, &migrations, mode).await
}

/// Applies `migrations` (in the given order). Each transaction that writes takes the schema
/// migration lock first (`pg_advisory_xact_lock`, transaction-scoped so that it also holds
/// behind PgBouncer in transaction pooling mode, where a session lock would stay on whatever
/// server connection took it) and looks again at what is applied: two servers starting at once
/// apply each migration once.
pub async fn run_schema_migrations(
    client: &mut Client,
    migrations: &[SchemaMigration],
    mode: SchemaMigrationMode,
) -> Result<SchemaMigrationReport, SchemaMigrationError> {
    run_locked(client, migrations, mode).await
}

/// Takes the schema migration lock for the rest of `tx`.
async fn lock_schema_migrations(tx: &Transaction<'_>) -> Result<(), DbError> {
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&SCHEMA_MIGRATION_LOCK_KEY, Type::INT8)],
    )
    .await
    .map(drop)
    .map_err(|e| DbError::query("take the schema migration lock", &e))
}

async fn run_locked(
    client: &mut Client,
    migrations: &[SchemaMigration],
    mode: SchemaMigrationMode,
) -> Result<SchemaMigrationReport, SchemaMigrationError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| DbError::query("begin", &e))?;
    lock_schema_migrations(&tx).await?;
    tx.batch_execute(
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
    tx.commit()
        .await
        .map_err(|e| DbError::query("commit", &e))?;

    let recorded = applied_schema_migrations(client).await?;
    // Without an app folder the app's tables are not Ferry's business: what an earlier run
    // recorded for them stays as it is.
    let manages_app = migrations
        .iter()
        .any(|m| m.group == SchemaMigrationGroup::App);
    for row in &recorded {
        let known = migrations
            .iter()
            .find(|m| m.group.as_str() == row.group && m.version == row.version);
        let is_app = row.group == SchemaMigrationGroup::App.as_str();
        match known {
            None if is_app && !manages_app => {}
            None if is_app => {
                return Err(SchemaMigrationError::UnknownAppApplied {
                    version: row.version,
                    name: row.name.clone(),
                });
            }
            None => {
                return Err(SchemaMigrationError::UnknownApplied {
                    group: row.group.clone(),
                    version: row.version,
                    name: row.name.clone(),
                });
            }
            Some(m) if m.checksum() != row.checksum => {
                return Err(SchemaMigrationError::ChecksumMismatch {
                    migration: m.describe(),
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
        if !apply_one(client, migration, baseline).await? {
            // Another server applied it in the meantime.
            report.already_applied.push(migration.to_string());
            continue;
        }
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
) -> Result<bool, SchemaMigrationError> {
    let failed = |source: DbError| {
        if migration.group == SchemaMigrationGroup::App
            && source.sqlstate() == Some(SqlState::DUPLICATE_TABLE.code())
        {
            SchemaMigrationError::AppTablesExist {
                migration: migration.describe(),
                reason: source.to_string(),
            }
        } else {
            SchemaMigrationError::Failed {
                migration: migration.describe(),
                source,
            }
        }
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| failed(DbError::query("begin", &e)))?;
    lock_schema_migrations(&tx).await.map_err(failed)?;
    let recorded_meanwhile = tx
        .query_typed_opt(
            "SELECT 1 FROM ferry_schema_migrations WHERE migration_group = $1 AND version = $2",
            &[
                (&migration.group.as_str(), Type::TEXT),
                (&migration.version, Type::INT4),
            ],
        )
        .await
        .map_err(|e| failed(DbError::query("look at the applied schema migrations", &e)))?;
    if recorded_meanwhile.is_some() {
        return Ok(false);
    }
    if !baseline {
        tx.batch_execute(&migration.sql)
            .await
            .map_err(|e| failed(DbError::query("run the SQL", &e)))?;
    }
    tx.execute_typed(
        "INSERT INTO ferry_schema_migrations (migration_group, version, name, checksum, baselined)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            (&migration.group.as_str(), Type::TEXT),
            (&migration.version, Type::INT4),
            (&migration.name.as_ref(), Type::TEXT),
            (&migration.checksum(), Type::TEXT),
            (&baseline, Type::BOOL),
        ],
    )
    .await
    .map_err(|e| failed(DbError::query("record the schema migration", &e)))?;
    tx.commit()
        .await
        .map_err(|e| failed(DbError::query("commit", &e)))?;
    Ok(true)
}

/// The rows of `ferry_schema_migrations`, oldest first; empty when the table does not exist.
pub async fn applied_schema_migrations(
    client: &Client,
) -> Result<Vec<AppliedSchemaMigration>, DbError> {
    let exists: bool = client
        .query_typed_one(
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
        .query_typed(
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

/// Why the app schema migrations folder was refused: every problem, found before anything is
/// written.
#[derive(Debug, thiserror::Error)]
#[error(
    "the app schema migrations folder {dir} (--app-migrations / FERRY_APP_MIGRATIONS) was refused:\n{}\nFix the folder and start again; nothing was written.",
    describe_problems(problems)
)]
pub struct AppMigrationsError {
    /// The folder.
    pub dir: PathBuf,
    /// Every problem, one sentence each.
    pub problems: Vec<String>,
}

fn describe_problems(problems: &[String]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads the app's schema migrations from `dir`: every `NNNN_name.sql` file (four digits, an
/// underscore, a name of letters, digits, `_` or `-`), versions from 0001 without gaps or
/// duplicates, in version order. Dotfiles and `README*` are skipped; anything else is a
/// problem. Every problem is reported at once.
pub fn load_app_migrations(dir: &Path) -> Result<Vec<SchemaMigration>, AppMigrationsError> {
    let refuse = |problems| AppMigrationsError {
        dir: dir.to_path_buf(),
        problems,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => return Err(refuse(vec![format!("the folder cannot be read: {error}")])),
    };
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(error) => problems.push(format!("the folder cannot be listed: {error}")),
        }
    }
    names.sort();
    let mut migrations = Vec::new();
    for name in names {
        let shown = ferry_core::pipeline::quote(&name.to_string_lossy());
        let Some(name) = name.to_str() else {
            problems.push(format!("{shown}: the file name is not UTF-8"));
            continue;
        };
        if name.starts_with('.') || name.starts_with("README") {
            continue;
        }
        let Some(version) = parse_file_name(name) else {
            problems.push(format!(
                "{shown}: not a schema migration file name: expected NNNN_name.sql (four digits from 0001, an underscore, a name of letters, digits, _ or -), e.g. 0001_app_tables.sql"
            ));
            continue;
        };
        let path = dir.join(name);
        let sql = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(sql) => sql,
                Err(_) => {
                    problems.push(format!("{shown}: the file is not UTF-8 text"));
                    continue;
                }
            },
            Err(error) => {
                problems.push(format!("{shown}: cannot be read: {error}"));
                continue;
            }
        };
        if sql.trim().is_empty() {
            problems.push(format!("{shown}: the file is empty"));
            continue;
        }
        migrations.push(SchemaMigration {
            group: SchemaMigrationGroup::App,
            version,
            name: Cow::Owned(name.trim_end_matches(".sql").to_owned()),
            sql: Cow::Owned(sql),
            file: Some(path),
        });
    }
    problems.extend(version_problems(&migrations));
    if migrations.is_empty() && problems.is_empty() {
        problems.push(
            "it holds no schema migration (NNNN_name.sql files, e.g. 0001_app_tables.sql)"
                .to_owned(),
        );
    }
    if problems.is_empty() {
        Ok(migrations)
    } else {
        Err(refuse(problems))
    }
}

/// The version of `NNNN_name.sql`, if the name has that shape and the version is at least 1.
fn parse_file_name(name: &str) -> Option<i32> {
    let stem = name.strip_suffix(".sql")?;
    let (digits, rest) = stem.split_at_checked(4)?;
    let label = rest.strip_prefix('_')?;
    let well_formed = digits.chars().all(|c| c.is_ascii_digit())
        && !label.is_empty()
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let version: i32 = digits.parse().ok()?;
    (well_formed && version >= 1).then_some(version)
}

/// Duplicate and missing versions among `migrations` (sorted by file name, so by version).
fn version_problems(migrations: &[SchemaMigration]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(last) = migrations.iter().map(|m| m.version).max() else {
        return problems;
    };
    for version in 1..=last {
        let files: Vec<String> = migrations
            .iter()
            .filter(|m| m.version == version)
            .map(|m| format!("{}.sql", m.name))
            .collect();
        match files.len() {
            0 => problems.push(format!(
                "version {version:04} is missing: versions run 0001, 0002, … without gaps (the last is {last:04})"
            )),
            1 => {}
            _ => problems.push(format!(
                "version {version:04} is used by more than one file: {}",
                files.join(", ")
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ferrys_own_in_order_without_gaps() {
        assert!(
            SCHEMA_MIGRATIONS
                .iter()
                .all(|m| m.group == SchemaMigrationGroup::Ferry),
            "nothing of an app is compiled in"
        );
        let versions: Vec<i32> = SCHEMA_MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i32> = (1..=versions.len() as i32).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn file_names_of_app_migrations() {
        let cases = [
            ("0001_app_tables.sql", Some(1)),
            ("0012_add-index.sql", Some(12)),
            ("0000_zero.sql", None),
            ("1_short.sql", None),
            ("0001-dash.sql", None),
            ("0001_.sql", None),
            ("0001_tables.SQL", None),
            ("0001_tables.sql.bak", None),
            ("0001_with space.sql", None),
            ("00a1_x.sql", None),
            ("é001_x.sql", None),
        ];
        for (name, expected) in cases {
            assert_eq!(parse_file_name(name), expected, "{name}");
        }
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
