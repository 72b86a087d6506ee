//! Schema migrations: Ferry's own compiled in, the app's read from the folder the operator
//! names; idempotent, locked, checksummed, and `--baseline` for existing app tables.

use std::path::{Path, PathBuf};

use ferry_server::db::schema_migrations::{
    SCHEMA_MIGRATIONS, SchemaMigration, SchemaMigrationError, SchemaMigrationGroup,
    SchemaMigrationMode, applied_schema_migrations, load_app_migrations, migrate_schema,
    run_schema_migrations,
};
use ferry_server::startup::{Application, Database, StartupError, migrate_database_schema};
use uuid::Uuid;

use crate::helpers::{demo_app_migrations, demo_migrations_dir, fresh_database, test_settings};

fn demo_tables() -> Vec<ferry_server::db::schema_check::ExpectedTable> {
    ferry_server::db::schema_check::expected_tables(crate::helpers::demo_spec())
}

async fn table_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn table_exists(client: &tokio_postgres::Client, table: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

fn app_migration() -> SchemaMigration {
    demo_app_migrations().remove(0)
}

/// A folder of its own under /tmp holding `files` (name, SQL); removed when dropped.
struct MigrationsDir(PathBuf);

impl MigrationsDir {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = PathBuf::from(format!("/tmp/ferry-test-app-migrations-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = Self(dir);
        for (name, sql) in files {
            made.write(name, sql);
        }
        made
    }

    fn write(&self, name: &str, sql: &str) {
        std::fs::write(self.0.join(name), sql).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for MigrationsDir {
    fn drop(&mut self) {
        let _ignored = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn migrating_twice_changes_nothing_the_second_time() {
    let mut database = fresh_database().await;
    let app = demo_app_migrations();
    let all = SCHEMA_MIGRATIONS.len() + app.len();
    let first = migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    assert_eq!(first.applied.len(), all);
    let tables = table_count(&database.client).await;

    let second = migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.already_applied.len(), all);
    assert_eq!(table_count(&database.client).await, tables);
    assert_eq!(
        applied_schema_migrations(&database.client)
            .await
            .unwrap()
            .len(),
        all
    );
}

#[tokio::test]
async fn concurrent_migrations_apply_each_migration_once() {
    let database = fresh_database().await;
    let config = database.config.clone();
    let app = demo_app_migrations();
    let all = SCHEMA_MIGRATIONS.len() + app.len();
    let runs = (0..4).map(|_| {
        let config = config.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let mut client = ferry_server::db::connect(&config).await.unwrap();
            migrate_schema(&mut client, &app, SchemaMigrationMode::Apply).await
        })
    });
    let mut applied_total = 0;
    for run in runs {
        let report = run.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        applied_total += report.applied.len();
    }
    assert_eq!(applied_total, all, "each migration applied exactly once");
}

#[tokio::test]
async fn without_an_app_folder_no_app_table_is_created() {
    let mut database = fresh_database().await;
    let report = migrate_schema(&mut database.client, &[], SchemaMigrationMode::Apply)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), SCHEMA_MIGRATIONS.len());
    assert!(
        report.applied.iter().all(|m| m.starts_with("ferry/")),
        "{report:?}"
    );
    for table in demo_tables() {
        assert!(
            !table_exists(&database.client, &table.name).await,
            "the app table {} was created without an app folder",
            table.name
        );
    }
}

#[tokio::test]
async fn a_server_without_an_app_folder_names_the_missing_tables_and_how_to_create_them() {
    let database = fresh_database().await;
    let mut settings = test_settings();
    settings.app_migrations = None;
    let error = Application::build_with_database(&settings, Database::external(database.config))
        .await
        .unwrap_err();
    assert!(matches!(error, StartupError::SchemaMismatch(_)), "{error}");
    let message = error.to_string();
    for needed in [
        "table tasks: does not exist",
        "ferry-server spec ddl",
        "--app-migrations",
        "FERRY_APP_MIGRATIONS",
    ] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    assert!(!table_exists(&database.client, "tasks").await);
}

#[tokio::test]
async fn app_migrations_run_in_order_each_once_and_later_files_are_applied_later() {
    let mut database = fresh_database().await;
    let folder = MigrationsDir::new(&[
        (
            "0001_notes.sql",
            "CREATE TABLE notes (id int PRIMARY KEY, body text);",
        ),
        // Needs 0001 to have run first.
        (
            "0002_notes_index.sql",
            "CREATE INDEX notes_body ON notes (body);",
        ),
        ("README.md", "Our app's tables."),
    ]);
    let app = load_app_migrations(folder.path()).unwrap_or_else(|e| panic!("{e}"));
    let first = migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let app_applied: Vec<&String> = first
        .applied
        .iter()
        .filter(|m| m.starts_with("app/"))
        .collect();
    assert_eq!(app_applied, ["app/0001_notes", "app/0002_notes_index"]);

    folder.write("0003_notes_title.sql", "ALTER TABLE notes ADD title text;");
    let app = load_app_migrations(folder.path()).unwrap_or_else(|e| panic!("{e}"));
    let second = migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.applied, ["app/0003_notes_title"]);
    let rows = applied_schema_migrations(&database.client).await.unwrap();
    let app_rows: Vec<(i32, &str)> = rows
        .iter()
        .filter(|r| r.group == "app")
        .map(|r| (r.version, r.name.as_str()))
        .collect();
    assert_eq!(
        app_rows,
        [
            (1, "0001_notes"),
            (2, "0002_notes_index"),
            (3, "0003_notes_title")
        ]
    );
}

#[tokio::test]
async fn an_app_migration_file_edited_after_it_was_applied_refuses_the_start_naming_it() {
    let mut database = fresh_database().await;
    let folder = MigrationsDir::new(&[("0001_notes.sql", "CREATE TABLE notes (id int);")]);
    let app = load_app_migrations(folder.path()).unwrap();
    migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    folder.write("0001_notes.sql", "CREATE TABLE notes (id bigint);");
    let app = load_app_migrations(folder.path()).unwrap();
    let error = migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SchemaMigrationError::ChecksumMismatch { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("app/0001_notes"), "{message}");
    assert!(
        message.contains(&folder.path().join("0001_notes.sql").display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn an_applied_app_migration_missing_from_the_folder_is_refused_and_ignored_without_a_folder()
{
    let mut database = fresh_database().await;
    let folder = MigrationsDir::new(&[
        ("0001_notes.sql", "CREATE TABLE notes (id int);"),
        ("0002_more.sql", "ALTER TABLE notes ADD body text;"),
    ]);
    let app = load_app_migrations(folder.path()).unwrap();
    migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    std::fs::remove_file(folder.path().join("0002_more.sql")).unwrap();
    let app = load_app_migrations(folder.path()).unwrap();
    let error = migrate_schema(&mut database.client, &app, SchemaMigrationMode::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SchemaMigrationError::UnknownAppApplied { version: 2, .. }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("app/0002_more"), "{error}");
    // Without a folder, the app's tables and their record are left alone.
    let report = migrate_schema(&mut database.client, &[], SchemaMigrationMode::Apply)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.applied.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_bad_app_folder_lists_every_problem_and_nothing_is_written() {
    let database = fresh_database().await;
    let folder = MigrationsDir::new(&[
        ("0001_notes.sql", "CREATE TABLE notes (id int);"),
        ("0002_a.sql", "CREATE TABLE a (id int);"),
        ("0002_b.sql", "CREATE TABLE b (id int);"),
        ("0004_d.sql", "CREATE TABLE d (id int);"),
        ("5_short.sql", "CREATE TABLE e (id int);"),
        ("0005_empty.sql", "  \n"),
        ("notes.txt", "not SQL"),
    ]);
    let mut settings = test_settings();
    settings.app_migrations = Some(folder.path().to_path_buf());
    let error =
        Application::build_with_database(&settings, Database::external(database.config.clone()))
            .await
            .unwrap_err();
    let StartupError::AppMigrations(refused) = &error else {
        panic!("expected the folder to be refused: {error}");
    };
    assert_eq!(refused.problems.len(), 5, "{error}");
    let message = error.to_string();
    for needed in [
        &folder.path().display().to_string(),
        "\"5_short.sql\": not a schema migration file name",
        "\"notes.txt\": not a schema migration file name",
        "\"0005_empty.sql\": the file is empty",
        "version 0002 is used by more than one file: 0002_a.sql, 0002_b.sql",
        "version 0003 is missing",
        "nothing was written",
    ] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    assert_eq!(
        table_count(&database.client).await,
        0,
        "nothing may be written, not even Ferry's tables"
    );
}

#[test]
fn a_missing_or_empty_app_folder_is_refused() {
    let missing = PathBuf::from(format!("/tmp/ferry-test-no-such-folder-{}", Uuid::new_v4()));
    let error = load_app_migrations(&missing).unwrap_err();
    assert!(
        error.problems[0].contains("cannot be read"),
        "{:?}",
        error.problems
    );
    let empty = MigrationsDir::new(&[(".keep", "")]);
    let error = load_app_migrations(empty.path()).unwrap_err();
    assert!(
        error.problems[0].contains("holds no schema migration"),
        "{:?}",
        error.problems
    );
}

#[test]
fn the_demo_ships_its_tables_as_an_app_migrations_folder() {
    let app = demo_app_migrations();
    assert_eq!(app[0].to_string(), "app/0001_demo_app_tables");
    assert!(app[0].sql.contains("CREATE TABLE tasks"), "{}", app[0].sql);
    assert!(demo_migrations_dir().ends_with("examples/taskboard/migrations"));
}

#[tokio::test]
async fn baseline_records_existing_app_tables_without_running_them() {
    let database = fresh_database().await;
    // The app's tables exist already, made by hand (here: with the same SQL).
    database
        .client
        .batch_execute(&app_migration().sql)
        .await
        .unwrap();
    database
        .client
        .execute(
            "INSERT INTO custom_data (user_id, id, key, value, updated_at) VALUES (gen_random_uuid(), gen_random_uuid(), 'k', '1', now())",
            &[],
        )
        .await
        .unwrap();

    let app = demo_app_migrations();
    let report = migrate_database_schema(&database.config, true, &app, &demo_tables())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.baselined, [app_migration().to_string()]);
    assert!(
        report.applied.iter().all(|m| m.starts_with("ferry/")),
        "{report:?}"
    );

    let rows = applied_schema_migrations(&database.client).await.unwrap();
    let app_row = rows.iter().find(|r| r.group == "app").unwrap();
    assert!(app_row.baselined);
    assert!(
        rows.iter()
            .filter(|r| r.group == "ferry")
            .all(|r| !r.baselined)
    );
    // The existing data was not touched.
    let count: i64 = database
        .client
        .query_one("SELECT count(*) FROM custom_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);

    // And the server now starts on it.
    let report = ferry_server::startup::prepare_schema(&database.config, &app, &demo_tables())
        .await
        .unwrap();
    assert!(report.applied.is_empty());
}

#[tokio::test]
async fn baseline_is_refused_when_the_app_tables_are_missing() {
    let database = fresh_database().await;
    let error = migrate_database_schema(
        &database.config,
        true,
        &demo_app_migrations(),
        &demo_tables(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StartupError::BaselineRefused(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("table tasks: does not exist"), "{message}");
    // Nothing was recorded.
    assert!(
        applied_schema_migrations(&database.client)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn existing_app_tables_without_baseline_point_at_baseline() {
    let mut database = fresh_database().await;
    database
        .client
        .batch_execute(&app_migration().sql)
        .await
        .unwrap();
    let error = migrate_schema(
        &mut database.client,
        &demo_app_migrations(),
        SchemaMigrationMode::Apply,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, SchemaMigrationError::AppTablesExist { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("migrate --baseline"), "{error}");
    // The ferry migration before it was applied; the failed app migration left no record.
    let rows = applied_schema_migrations(&database.client).await.unwrap();
    assert!(rows.iter().all(|r| r.group == "ferry"), "{rows:?}");
}

#[tokio::test]
async fn an_applied_migration_that_was_edited_is_detected() {
    let mut database = fresh_database().await;
    migrate_schema(&mut database.client, &[], SchemaMigrationMode::Apply)
        .await
        .unwrap();
    let mut edited: Vec<SchemaMigration> = SCHEMA_MIGRATIONS.to_vec();
    edited[0].sql = "SELECT 1; -- edited after it was applied".into();
    let error = run_schema_migrations(&mut database.client, &edited, SchemaMigrationMode::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SchemaMigrationError::ChecksumMismatch { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains(&edited[0].to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_whole() {
    let mut database = fresh_database().await;
    let broken = [SchemaMigration {
        group: SchemaMigrationGroup::Ferry,
        version: 1,
        name: "0001_broken".into(),
        sql: "CREATE TABLE half_done (id int); SELECT no_such_function();".into(),
        file: None,
    }];
    let error = run_schema_migrations(&mut database.client, &broken, SchemaMigrationMode::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SchemaMigrationError::Failed { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("no_such_function"), "{error}");
    assert!(
        !table_exists(&database.client, "half_done").await,
        "the first statement of the failed migration must be rolled back"
    );
}

#[tokio::test]
async fn a_database_ahead_of_this_build_is_refused() {
    let mut database = fresh_database().await;
    migrate_schema(&mut database.client, &[], SchemaMigrationMode::Apply)
        .await
        .unwrap();
    database
        .client
        .execute(
            "INSERT INTO ferry_schema_migrations (migration_group, version, name, checksum) VALUES ('ferry', 99, '0099_future', 'x')",
            &[],
        )
        .await
        .unwrap();
    let error = migrate_schema(&mut database.client, &[], SchemaMigrationMode::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SchemaMigrationError::UnknownApplied { version: 99, .. }
        ),
        "{error}"
    );
}

#[test]
fn every_migration_file_is_registered_and_none_is_the_apps() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema_migrations");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("ferry")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        files.push(format!("ferry/{}", name.trim_end_matches(".sql")));
    }
    files.sort();
    let mut registered: Vec<String> = SCHEMA_MIGRATIONS.iter().map(ToString::to_string).collect();
    registered.sort();
    assert_eq!(
        files, registered,
        "server/schema_migrations/ferry and SCHEMA_MIGRATIONS disagree"
    );
    assert!(
        !root.join("app").exists(),
        "no app's tables are compiled into ferry-server"
    );
}

/// A fresh database with Ferry's schema migrations before `version` applied: the state a
/// server that upgrades to `version` finds.
async fn database_before(version: i32) -> crate::helpers::TestDatabase {
    let mut database = fresh_database().await;
    let before: Vec<SchemaMigration> = SCHEMA_MIGRATIONS
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    run_schema_migrations(&mut database.client, &before, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    database
}

/// Schema migration 0013 moves the per-record `ferry_received` rows into one row per run and
/// time of arrival: read through the `ferry_received` view, every record, outcome and time is
/// the same as before the upgrade, and so is what the verification report computes from them.
#[tokio::test]
async fn received_hashes_stored_before_0013_read_the_same_after_it() {
    let mut database = database_before(13).await;
    // Two users, three runs, two times of arrival in one run, three outcomes.
    database
        .client
        .batch_execute(
            "INSERT INTO ferry_received (user_id, migration_id, kind, hash, outcome, received_at)
             SELECT ('00000000-0000-0000-0000-00000000000' || (i % 2))::uuid,
                    ('00000000-0000-0000-0000-0000000000a' || (i % 3))::uuid,
                    CASE WHEN i % 4 = 0 THEN 'environments' ELSE 'tasks' END,
                    substring(sha256(i::text::bytea) from 1 for 16),
                    (ARRAY['inserted', 'quarantined', 'unchanged'])[1 + i % 3],
                    '2026-12-01T10:00:00Z'::timestamptz + (i % 5 / 4) * interval '2 hours'
               FROM generate_series(1, 500) i",
        )
        .await
        .unwrap();
    let all = "SELECT string_agg(concat_ws(' ', user_id, migration_id, kind, encode(hash, 'hex'), outcome, received_at), '|'
                                 ORDER BY user_id, migration_id, kind, hash)
                 FROM ferry_received";
    let report = "SELECT string_agg(concat_ws(' ', user_id, migration_id, kind, outcome, n, hi, lo), '|'
                                    ORDER BY user_id, migration_id, kind, outcome)
                    FROM (SELECT user_id, migration_id, kind, outcome, count(*) AS n,
                                 bit_xor(('x' || encode(substr(hash, 1, 8), 'hex'))::bit(64)::bigint) AS hi,
                                 bit_xor(('x' || encode(substr(hash, 9, 8), 'hex'))::bit(64)::bigint) AS lo
                            FROM ferry_received GROUP BY 1, 2, 3, 4) r";
    async fn read(client: &tokio_postgres::Client, sql: &str) -> String {
        client.query_one(sql, &[]).await.unwrap().get(0)
    }
    let records = read(&database.client, all).await;
    let counts = read(&database.client, report).await;
    assert_eq!(records.matches('|').count(), 499);
    migrate_schema(&mut database.client, &[], SchemaMigrationMode::Apply)
        .await
        .unwrap();
    assert_eq!(read(&database.client, all).await, records);
    assert_eq!(read(&database.client, report).await, counts);
    let batches = database
        .client
        .query_one("SELECT count(*) FROM ferry_received_batches", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(batches, 12, "one row per user, run and time of arrival");
}

/// Schema migration 0014 keeps the before-images stored one row per image (renamed
/// `ferry_before_image_rows`) and reads them, with the statements' arrays, through the view
/// `ferry_before_images`: every image stored before the upgrade reads the same after it.
#[tokio::test]
async fn before_images_stored_before_0014_read_the_same_after_it() {
    let mut database = database_before(14).await;
    database
        .client
        .batch_execute(
            "INSERT INTO ferry_before_images (user_id, migration_id, table_name, row_id, before, captured_at, ord)
             SELECT '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-0000000000a1', 'tasks',
                    gen_random_uuid(), CASE WHEN i % 3 = 0 THEN NULL ELSE jsonb_build_object('title', 'row ' || i) END,
                    '2026-12-01T10:00:00Z', CASE WHEN i % 2 = 0 THEN i END
               FROM generate_series(1, 40) i",
        )
        .await
        .unwrap();
    let all = "SELECT string_agg(concat_ws(' ', user_id, migration_id, table_name, row_id, before, captured_at, ord), '|'
                                 ORDER BY row_id)
                 FROM ferry_before_images";
    let images: String = database.client.query_one(all, &[]).await.unwrap().get(0);
    assert_eq!(images.matches('|').count(), 39);
    migrate_schema(&mut database.client, &[], SchemaMigrationMode::Apply)
        .await
        .unwrap();
    let after: String = database.client.query_one(all, &[]).await.unwrap().get(0);
    assert_eq!(after, images);
}
