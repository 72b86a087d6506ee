//! Schema migrations: idempotent, locked, checksummed, and `--baseline` for existing app tables.

use ferry_server::db::schema_migrations::{
    SCHEMA_MIGRATIONS, SchemaMigration, SchemaMigrationError, SchemaMigrationGroup,
    SchemaMigrationMode, applied_schema_migrations, migrate_schema, run_schema_migrations,
};
use ferry_server::startup::{StartupError, migrate_database_schema};

use crate::helpers::fresh_database;

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

fn app_migration() -> &'static SchemaMigration {
    SCHEMA_MIGRATIONS
        .iter()
        .find(|m| m.group == SchemaMigrationGroup::App)
        .unwrap()
}

#[tokio::test]
async fn migrating_twice_changes_nothing_the_second_time() {
    let mut database = fresh_database().await;
    let first = migrate_schema(&mut database.client, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    assert_eq!(first.applied.len(), SCHEMA_MIGRATIONS.len());
    let tables = table_count(&database.client).await;

    let second = migrate_schema(&mut database.client, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.already_applied.len(), SCHEMA_MIGRATIONS.len());
    assert_eq!(table_count(&database.client).await, tables);
    assert_eq!(
        applied_schema_migrations(&database.client)
            .await
            .unwrap()
            .len(),
        SCHEMA_MIGRATIONS.len()
    );
}

#[tokio::test]
async fn concurrent_migrations_apply_each_migration_once() {
    let database = fresh_database().await;
    let config = database.config.clone();
    let runs = (0..4).map(|_| {
        let config = config.clone();
        tokio::spawn(async move {
            let mut client = ferry_server::db::connect(&config).await.unwrap();
            migrate_schema(&mut client, SchemaMigrationMode::Apply).await
        })
    });
    let mut applied_total = 0;
    for run in runs {
        let report = run.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        applied_total += report.applied.len();
    }
    assert_eq!(
        applied_total,
        SCHEMA_MIGRATIONS.len(),
        "each migration applied exactly once"
    );
}

#[tokio::test]
async fn baseline_records_existing_app_tables_without_running_them() {
    let database = fresh_database().await;
    // The app's tables exist already, made by hand (here: with the same SQL).
    database
        .client
        .batch_execute(app_migration().sql)
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

    let report = migrate_database_schema(&database.config, true, &demo_tables())
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
    let report = ferry_server::startup::prepare_schema(&database.config, &demo_tables())
        .await
        .unwrap();
    assert!(report.applied.is_empty());
}

#[tokio::test]
async fn baseline_is_refused_when_the_app_tables_are_missing() {
    let database = fresh_database().await;
    let error = migrate_database_schema(&database.config, true, &demo_tables())
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
        .batch_execute(app_migration().sql)
        .await
        .unwrap();
    let error = migrate_schema(&mut database.client, SchemaMigrationMode::Apply)
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
    migrate_schema(&mut database.client, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    let mut edited: Vec<SchemaMigration> = SCHEMA_MIGRATIONS.to_vec();
    edited[0].sql = "SELECT 1; -- edited after it was applied";
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
        name: "0001_broken",
        sql: "CREATE TABLE half_done (id int); SELECT no_such_function();",
    }];
    let error = run_schema_migrations(&mut database.client, &broken, SchemaMigrationMode::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SchemaMigrationError::Failed { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("no_such_function"), "{error}");
    let exists: bool = database
        .client
        .query_one("SELECT to_regclass('half_done') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !exists,
        "the first statement of the failed migration must be rolled back"
    );
}

#[tokio::test]
async fn a_database_ahead_of_this_build_is_refused() {
    let mut database = fresh_database().await;
    migrate_schema(&mut database.client, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    database
        .client
        .execute(
            "INSERT INTO ferry_schema_migrations (migration_group, version, name, checksum) VALUES ('app', 99, '0099_future', 'x')",
            &[],
        )
        .await
        .unwrap();
    let error = migrate_schema(&mut database.client, SchemaMigrationMode::Apply)
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
fn every_migration_file_is_registered() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema_migrations");
    let mut files = Vec::new();
    for group in ["ferry", "app"] {
        for entry in std::fs::read_dir(root.join(group)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            files.push(format!("{group}/{}", name.trim_end_matches(".sql")));
        }
    }
    files.sort();
    let mut registered: Vec<String> = SCHEMA_MIGRATIONS.iter().map(ToString::to_string).collect();
    registered.sort();
    assert_eq!(
        files, registered,
        "server/schema_migrations/ and SCHEMA_MIGRATIONS disagree"
    );
}
