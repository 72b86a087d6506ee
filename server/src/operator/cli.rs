//! The operator's subcommands besides `serve` and `migrate`: `status`, `rollback`, `purge`,
//! `conflicts`, `quarantine` and `backup open`. Each opens the configured database (without
//! `DATABASE_URL`, the embedded cluster only if it exists: joined while a server runs on it,
//! else started and stopped; never created), runs the same code as the HTTP endpoints, and
//! prints for a person (or JSON where asked).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use tokio_postgres::types::Type;

use ferry_core::backup::{self, BackupError, KeySource, OpeningKey};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::{self, DbError};
use crate::operator::{conflicts, fleet, purge, quarantine, report, rollback};
use crate::startup::config::Settings;
use crate::startup::{Database, StartupError, load_field_cipher, open_existing_database};

/// The environment variable holding a backup's passphrase for `backup open`.
pub const PASSPHRASE_ENV: &str = "FERRY_BACKUP_PASSPHRASE";

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The database or the spec could not be opened.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A query failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// `rollback` named a migration the user does not have.
    #[error(
        "user {user} has no migration {migration}: list them with `ferry-server status --user {user}`"
    )]
    NoSuchMigration {
        /// The user.
        user: Uuid,
        /// The migration.
        migration: Uuid,
    },
    /// `rollback` of a migration whose before-images were purged.
    #[error("{0}")]
    Purged(String),
    /// `purge` without `--yes` (nor `--dry-run`): nothing was deleted.
    #[error(
        "nothing was purged: run again with --yes to delete this bookkeeping, or with --dry-run to only count it"
    )]
    PurgeNotConfirmed,
    /// The backup file could not be read.
    #[error("cannot read the backup {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backup could not be opened.
    #[error("cannot open the backup {path}: {source}")]
    Backup {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BackupError,
    },
    /// The backup is sealed with a device key.
    #[error(
        "the backup {path} is sealed with the browser's device key {key_id:?}: that key is non-extractable and never leaves the browser that made the backup, so the backup can only be opened there (the migrator's restore). Make passphrase backups to open them here."
    )]
    DeviceKey {
        /// The file.
        path: PathBuf,
        /// The key's id.
        key_id: String,
    },
    /// No passphrase could be read.
    #[error("cannot read the passphrase: {0}; set {PASSPHRASE_ENV} or run on a terminal")]
    Passphrase(String),
    /// Printing failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// `spec infer` could not read the export.
    #[error("cannot read the export {path}: {reason}")]
    Export {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `spec check` found problems (listed above the message).
    #[error("{refused} of {checked} spec file(s) refused: fix the problems listed above")]
    SpecsRefused {
        /// Files with problems.
        refused: usize,
        /// Files checked.
        checked: usize,
    },
}

async fn connect(settings: &Settings) -> Result<(Database, tokio_postgres::Client), CliError> {
    let database = open_existing_database(settings).await?;
    match db::connect(database.config()).await {
        Ok(client) => Ok((database, client)),
        Err(error) => {
            database.stop().await?;
            Err(error.into())
        }
    }
}

/// What `ferry-server status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    /// Only this user.
    pub user: Option<Uuid>,
    /// Only this migration.
    pub migration: Option<Uuid>,
    /// A running run with no batch for this long is abandoned.
    pub abandoned_after: std::time::Duration,
    /// Also count per user and state.
    pub by_user: bool,
    /// JSON instead of text.
    pub json: bool,
}

/// `ferry-server status [--user U] [--migration M] [--abandoned-after SECS] [--by-user]`.
pub async fn status(settings: &Settings, query: &StatusQuery) -> Result<(), CliError> {
    let (database, client) = connect(settings).await?;
    let fleet = fleet::summary(&client, query.abandoned_after).await;
    let summaries =
        report::run_summaries(&client, query.user, query.migration, query.abandoned_after).await;
    drop(client);
    database.stop().await?;
    let (fleet, summaries) = (fleet?, summaries?);
    let mut out = std::io::stdout().lock();
    if query.json {
        let doc = serde_json::json!({ "fleet": fleet, "runs": summaries });
        writeln!(out, "{doc:#}").map_err(CliError::Output)?;
    } else {
        write!(
            out,
            "{}{}",
            fleet::render(&fleet),
            render_status(&summaries, query)
        )
        .map_err(CliError::Output)?;
    }
    Ok(())
}

/// The text of `ferry-server status`: the count of runs per state, per user when asked, then
/// one block per run.
pub fn render_status(summaries: &[report::RunSummary], query: &StatusQuery) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let counts = |runs: &[&report::RunSummary]| -> String {
        report::count_by_state(runs.iter().copied())
            .into_iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<&report::RunSummary> = summaries.iter().collect();
    let _ = writeln!(
        text,
        "{} run(s): {} (abandoned: running, no batch for {} s)",
        summaries.len(),
        counts(&all),
        query.abandoned_after.as_secs()
    );
    if query.by_user {
        let mut users: Vec<Uuid> = summaries.iter().map(|r| r.user_id).collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            let runs: Vec<&report::RunSummary> =
                summaries.iter().filter(|r| r.user_id == user).collect();
            let _ = writeln!(text, "user {user}: {}", counts(&runs));
        }
    }
    for run in summaries {
        let r = &run.report;
        let _ = writeln!(
            text,
            "migration {}  user {}  status {}  batches {}  open conflicts {}  started {}  last batch {}  finished {}  device {}",
            r.migration_id,
            run.user_id,
            run.state,
            r.batches,
            run.open_conflicts,
            run.started_at,
            run.last_batch_at.as_deref().unwrap_or("-"),
            run.finished_at.as_deref().unwrap_or("-"),
            run.device_id.as_deref().unwrap_or("-")
        );
        if let Some(v) = &run.verified {
            let _ = writeln!(
                text,
                "  verified {}: {} records in {} batches",
                v.at, v.records, v.batches
            );
        }
        if let Some(at) = &run.purged_at {
            let _ = writeln!(
                text,
                "  purged {at}: bookkeeping removed, it can no longer be rolled back"
            );
        }
        for (kind, k) in &r.kinds {
            let outcomes: Vec<String> =
                k.outcomes.iter().map(|(o, n)| format!("{o}={n}")).collect();
            let _ = writeln!(
                text,
                "  {kind:<16} received {:>7}  checksum {}  {}",
                k.received,
                k.checksum,
                outcomes.join(" ")
            );
        }
    }
    text
}

/// `ferry-server spec retire APP VERSION [--yes]`: says how many users still have a migration
/// in flight on that version, then (with `yes`) records it as retired. Returns what it said.
pub async fn retire_spec(
    settings: &Settings,
    app: &str,
    version: &str,
    yes: bool,
) -> Result<(), CliError> {
    let (database, client) = connect(settings).await?;
    let result = retire_on(&client, app, version, yes).await;
    database.stop().await?;
    println!("{}", result?);
    Ok(())
}

/// [`retire_spec`] on an open connection: the text said to the operator.
pub async fn retire_on(
    client: &tokio_postgres::Client,
    app: &str,
    version: &str,
    yes: bool,
) -> Result<String, CliError> {
    let row = client
        .query_typed_one(
            "SELECT count(DISTINCT user_id), count(*) FROM ferry_migration_runs \
             WHERE spec_app = $1 AND spec_version = $2 AND status = 'running'",
            &[(&app, Type::TEXT), (&version, Type::TEXT)],
        )
        .await
        .map_err(|e| DbError::query("count the migrations in flight", &e))?;
    let users: i64 = row
        .try_get(0)
        .map_err(|e| DbError::query("count the migrations in flight", &e))?;
    let runs: i64 = row
        .try_get(1)
        .map_err(|e| DbError::query("count the migrations in flight", &e))?;
    let mut text = format!(
        "spec {app:?} version {version:?}: {users} user(s) with {runs} migration(s) in flight (they may finish after it is retired)"
    );
    if yes {
        let added = client
            .execute_typed(
                "INSERT INTO ferry_retired_specs (app, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[(&app, Type::TEXT), (&version, Type::TEXT)],
            )
            .await
            .map_err(|e| DbError::query("retire the spec version", &e))?;
        text.push_str(if added == 1 {
            "\nretired: no new migration starts under it"
        } else {
            "\nit was retired already"
        });
    } else {
        text.push_str("\nnothing changed: run again with --yes to retire it");
    }
    Ok(text)
}

/// `ferry-server rollback --migration M --user U`.
pub async fn rollback(settings: &Settings, user: Uuid, migration: Uuid) -> Result<(), CliError> {
    let specs = crate::startup::load_specs(settings)?;
    let (database, mut client) = connect(settings).await?;
    // The run's own spec version (its kinds are the tables it wrote); the newest one for a run
    // recorded before runs had a version.
    let recorded = client
        .query_typed_opt(
            "SELECT spec_app, spec_version FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
            &[(&user, Type::UUID), (&migration, Type::UUID)],
        )
        .await
        .map_err(|e| DbError::query("read the run's spec version", &e))?
        .and_then(|r| {
            let app: Option<String> = r.try_get(0).ok().flatten();
            let version: Option<String> = r.try_get(1).ok().flatten();
            app.zip(version)
        });
    let Some(spec) = recorded
        .and_then(|(app, version)| {
            specs
                .iter()
                .find(|l| l.spec.app == app && l.spec.version == version)
        })
        .or_else(|| specs.last())
        .map(|l| l.spec.clone())
    else {
        database.stop().await?;
        return Err(StartupError::Specs(Vec::new()).into());
    };
    println!("rolling back migration {migration} of user {user}");
    let done = rollback::rollback(
        &mut client,
        &spec,
        user,
        migration,
        // An operator's rollback may take as long as it needs, as before.
        None,
        |table, deleted, restored| {
            println!("  {table:<20} {deleted} added rows deleted, {restored} rows restored");
        },
    )
    .await;
    drop(client);
    database.stop().await?;
    match done? {
        None => Err(CliError::NoSuchMigration { user, migration }),
        Some(report) if report.purged_at.is_some() => Err(CliError::Purged(
            rollback::purged_message(migration, report.purged_at.as_deref().unwrap_or("-")),
        )),
        Some(report) if report.already_rolled_back => {
            println!("already rolled back: nothing to do");
            Ok(())
        }
        Some(report) => {
            println!(
                "done: {} rows restored, {} open conflicts dismissed; the run is marked rolled_back",
                report.restored, report.dismissed_conflicts
            );
            Ok(())
        }
    }
}

/// `ferry-server purge [--older-than 30d] [--dry-run | --yes]`: says what it would remove,
/// then (with `yes`) removes it, one user at a time.
pub async fn purge(
    settings: &Settings,
    retention: std::time::Duration,
    dry_run: bool,
    yes: bool,
) -> Result<(), CliError> {
    let (database, mut client) = connect(settings).await?;
    let done = purge_on(&mut client, retention, dry_run, yes, |line| {
        println!("{line}")
    })
    .await;
    drop(client);
    database.stop().await?;
    done
}

/// [`purge`] on an open connection, each line said through `say`.
pub async fn purge_on(
    client: &mut tokio_postgres::Client,
    retention: std::time::Duration,
    dry_run: bool,
    yes: bool,
    mut say: impl FnMut(&str),
) -> Result<(), CliError> {
    let plan = purge::plan(client, retention).await?;
    say(&purge::render(&plan, retention));
    if dry_run {
        say("dry run: nothing deleted");
        return Ok(());
    }
    if !yes {
        return Err(CliError::PurgeNotConfirmed);
    }
    let mut reported = 0;
    let done = purge::purge(client, retention, None, |so_far| {
        if so_far.users >= reported + 1000 {
            reported = so_far.users;
            say(&format!(
                "  {} user(s), {} migration(s) purged so far",
                so_far.users, so_far.migrations
            ));
        }
    })
    .await?;
    say(&format!(
        "purged: {} user(s), {} migration(s): {} ledger answer(s), {} received hash(es), {} before-image(s), {} created-row record(s) removed; these migrations can no longer be rolled back",
        done.users,
        done.migrations,
        done.ledger_answers,
        done.received_hashes,
        done.before_images,
        done.created_rows
    ));
    Ok(())
}

/// `ferry-server conflicts [--user U] [--json]`.
pub async fn conflicts(
    settings: &Settings,
    user: Option<Uuid>,
    as_json: bool,
) -> Result<(), CliError> {
    let (database, client) = connect(settings).await?;
    let listed = conflicts::open_conflicts(&client, user).await;
    drop(client);
    database.stop().await?;
    let mut listed = listed?;
    if user.is_some() {
        for c in &mut listed {
            c.user_id = user;
        }
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        let text = serde_json::to_string_pretty(&listed).unwrap_or_default();
        writeln!(out, "{text}").map_err(CliError::Output)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<36}  {:<14}  {:<36}  {:<36}  created_at",
        "id", "user", "kind", "row_id", "migration"
    )
    .map_err(CliError::Output)?;
    for c in &listed {
        writeln!(
            out,
            "{:>6}  {:<36}  {:<14}  {:<36}  {:<36}  {}",
            c.id,
            c.user_id.map(|u| u.to_string()).unwrap_or_default(),
            c.kind,
            c.row_id,
            c.migration_id,
            c.created_at
        )
        .map_err(CliError::Output)?;
    }
    writeln!(out, "{} open conflict(s)", listed.len()).map_err(CliError::Output)?;
    Ok(())
}

/// `ferry-server quarantine [--user U] [--migration M]`: the quarantined records as JSON, raw
/// values in clear (those sealed at rest opened with the field key).
pub async fn quarantine(
    settings: &Settings,
    user: Option<Uuid>,
    migration: Option<Uuid>,
) -> Result<(), CliError> {
    let (database, client) = connect(settings).await?;
    let dev_mode = settings.dev || database.on_embedded_cluster();
    let listed = match load_field_cipher(settings, dev_mode) {
        Ok(cipher) => quarantine::quarantined_records(&client, &cipher, user, migration)
            .await
            .map_err(CliError::from),
        Err(error) => Err(error.into()),
    };
    drop(client);
    database.stop().await?;
    let listed = listed?;
    let text = serde_json::to_string_pretty(&listed).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(CliError::Output)?;
    eprintln!("{} quarantined record(s)", listed.len());
    Ok(())
}

/// `ferry-server backup open FILE`: the pairs as JSON on stdout, the metadata on stderr.
pub fn backup_open(file: &Path) -> Result<(), CliError> {
    let bytes = std::fs::read(file).map_err(|source| CliError::Read {
        path: file.to_owned(),
        source,
    })?;
    let backup_error = |source| CliError::Backup {
        path: file.to_owned(),
        source,
    };
    let header = backup::read_header(&bytes).map_err(backup_error)?;
    if let KeySource::DeviceKey { key_id } = &header.key_source {
        return Err(CliError::DeviceKey {
            path: file.to_owned(),
            key_id: key_id.clone(),
        });
    }
    let passphrase = read_passphrase()?;
    let opened =
        backup::open(&bytes, &OpeningKey::Passphrase(&passphrase)).map_err(backup_error)?;
    let (text, metadata) = render_backup(&opened);
    eprintln!("{metadata}");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(CliError::Output)?;
    Ok(())
}

/// The pairs of an opened backup as JSON (`[{"key": …, "value": …}]`, strings in escaped form)
/// and a metadata summary for a person.
pub fn render_backup(opened: &backup::OpenedBackup) -> (String, String) {
    let pairs: Vec<Value> = opened
        .pairs
        .iter()
        .map(|(k, v)| json!({ "key": k.as_escaped(), "value": v.as_escaped() }))
        .collect();
    let text = serde_json::to_string_pretty(&pairs).unwrap_or_default();
    let m = &opened.header.metadata;
    let created = i64::try_from(m.created_at_ms)
        .map(ferry_core::timestamp::format)
        .unwrap_or_else(|_| m.created_at_ms.to_string());
    let metadata = format!(
        "backup {:?}: {} keys, {} bytes (UTF-16), made {created} on {}, spec {} version {}",
        m.backup_id,
        opened.header.key_count,
        opened.header.byte_size,
        m.origin,
        m.spec_app,
        m.spec_version
    );
    (text, metadata)
}

fn read_passphrase() -> Result<String, CliError> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_ENV) {
        return Ok(passphrase);
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        eprint!("backup passphrase: ");
        let _ignored = std::io::stderr().flush();
        let original = tcgetattr(&stdin).map_err(|e| CliError::Passphrase(e.to_string()))?;
        let mut silent = original.clone();
        silent.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &silent)
            .map_err(|e| CliError::Passphrase(e.to_string()))?;
        let read = stdin.lock().read_line(&mut line);
        let restored = tcsetattr(&stdin, SetArg::TCSANOW, &original);
        eprintln!();
        read.map_err(|e| CliError::Passphrase(e.to_string()))?;
        restored.map_err(|e| CliError::Passphrase(e.to_string()))?;
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Passphrase(e.to_string()))?;
    }
    let passphrase = line.trim_end_matches(['\n', '\r']).to_owned();
    if passphrase.is_empty() {
        return Err(CliError::Passphrase("it is empty".to_owned()));
    }
    Ok(passphrase)
}
