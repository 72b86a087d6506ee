//! The start-up schema check names every mismatch, and the server refuses to start on one.

use ferry_server::db::schema_check::{
    ExpectedTable, SchemaMismatch, TypeFamily, check_schema, expected_tables,
};
use ferry_server::db::schema_migrations::{SchemaMigrationMode, migrate_schema};
use ferry_server::startup::{Application, Database, StartupError};

use crate::helpers::{TestDatabase, fresh_database, test_settings};

/// The tables the demo spec writes.
fn demo_app_schema() -> Vec<ExpectedTable> {
    expected_tables(crate::helpers::demo_spec())
}

async fn migrated() -> TestDatabase {
    let mut database = fresh_database().await;
    migrate_schema(&mut database.client, SchemaMigrationMode::Apply)
        .await
        .unwrap();
    database
}

async fn start_error(database: &TestDatabase) -> StartupError {
    match Application::build_with_database(
        &test_settings(),
        Database::external(database.config.clone()),
    )
    .await
    {
        Ok(_) => panic!("the server started on a mismatched schema"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn the_migrated_schema_passes() {
    let database = migrated().await;
    let mismatches = check_schema(&database.client, &demo_app_schema())
        .await
        .unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

#[tokio::test]
async fn a_column_of_the_wrong_type_is_named_and_refuses_start() {
    let database = migrated().await;
    database
        .client
        .batch_execute("ALTER TABLE tasks ALTER COLUMN due_date TYPE text")
        .await
        .unwrap();
    let mismatches = check_schema(&database.client, &demo_app_schema())
        .await
        .unwrap();
    assert_eq!(
        mismatches
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["table tasks: column due_date is text, expected timestamp"]
    );
    let error = start_error(&database).await;
    assert!(matches!(error, StartupError::SchemaMismatch(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("table tasks: column due_date is text, expected timestamp"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_table_is_named_and_refuses_start() {
    let database = migrated().await;
    database
        .client
        .batch_execute("DROP TABLE custom_data")
        .await
        .unwrap();
    let error = start_error(&database).await;
    assert!(
        error
            .to_string()
            .contains("table custom_data: does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn every_mismatch_is_reported_at_once() {
    let database = migrated().await;
    database
        .client
        .batch_execute(
            "ALTER TABLE tasks ALTER COLUMN due_date TYPE text;
             ALTER TABLE environments DROP COLUMN config;
             ALTER TABLE form_drafts ALTER COLUMN data TYPE text;
             DROP TABLE user_preferences;
             ALTER TABLE custom_data DROP CONSTRAINT custom_data_pkey;
             ALTER TABLE custom_data ADD PRIMARY KEY (id);",
        )
        .await
        .unwrap();
    let found: Vec<String> = check_schema(&database.client, &demo_app_schema())
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected = [
        "table tasks: column due_date is text, expected timestamp",
        "table environments: column config is missing, expected json",
        "table user_preferences: does not exist",
        "table form_drafts: column data is text, expected json",
        "table custom_data: primary key is (id), expected (user_id, id)",
    ];
    assert_eq!(found, expected);
}

#[tokio::test]
async fn tables_without_the_user_key_are_refused() {
    let database = fresh_database().await;
    database
        .client
        .batch_execute("CREATE TABLE notes (id uuid PRIMARY KEY, body text)")
        .await
        .unwrap();
    let expected = [ExpectedTable::new("notes", &[("body", TypeFamily::Text)])];
    let mismatches = check_schema(&database.client, &expected).await.unwrap();
    assert_eq!(
        mismatches,
        [
            SchemaMismatch::MissingColumn {
                table: "notes".into(),
                column: "user_id".into(),
                expected: TypeFamily::Uuid,
            },
            SchemaMismatch::WrongPrimaryKey {
                table: "notes".into(),
                found: vec!["id".into()],
                key_column: "id".into(),
            },
        ]
    );
}

#[tokio::test]
async fn nullability_is_checked_both_ways() {
    let database = migrated().await;
    database
        .client
        .batch_execute(
            "ALTER TABLE tasks ALTER COLUMN description SET NOT NULL;
             ALTER TABLE custom_data ADD COLUMN owner text NOT NULL;",
        )
        .await
        .unwrap();
    let found: Vec<String> = check_schema(&database.client, &demo_app_schema())
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with(
            "table tasks: column description is NOT NULL, but the spec may leave it empty"
        ),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("table custom_data: column owner is NOT NULL without a default and the spec never writes it"),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_refused_spec_stops_the_start_with_every_problem_listed() {
    let database = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("ferry-bad-spec-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spec.json");
    let bad = include_str!("../../../specs/taskboard.json")
        .replacen(
            r#""updated_at": "updated_at","#,
            r#""updated_at": "nope","#,
            1,
        )
        .replace(r#""table": "custom_data""#, r#""table": "Custom Data""#);
    std::fs::write(&path, bad).unwrap();
    let mut settings = test_settings();
    settings.spec = Some(path.clone());
    let error = match Application::build_with_database(
        &settings,
        Database::external(database.config.clone()),
    )
    .await
    {
        Ok(_) => panic!("the server started with a refused spec"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("2 problem(s)"), "{error}");
    assert!(
        error.contains("kind `tasks`") && error.contains("nope"),
        "{error}"
    );
    assert!(
        error.contains("kind `custom`") && error.contains("Custom Data"),
        "{error}"
    );
    let _ignored = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn outside_dev_mode_the_field_key_is_required_and_checked() {
    let database = fresh_database().await;
    let mut settings = test_settings();
    settings.field_key = None;
    let error = match Application::build_with_database(
        &settings,
        Database::external(database.config.clone()),
    )
    .await
    {
        Ok(_) => panic!("the server started without a field key"),
        Err(error) => error,
    };
    assert!(matches!(error, StartupError::FieldKeyRequired), "{error}");
    settings.field_key = Some("abc123".to_owned().into());
    let error = match Application::build_with_database(
        &settings,
        Database::external(database.config.clone()),
    )
    .await
    {
        Ok(_) => panic!("the server started with a malformed field key"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("64 hex characters") && !error.contains("abc123"),
        "{error}"
    );
}

/// A `varchar(n)` shorter than the spec's longest value would refuse records the spec lets
/// through (issue 12, item 2): named at start with the fix. One as long as the spec's bound
/// passes.
#[tokio::test]
async fn a_varchar_shorter_than_the_spec_allows_is_named_with_the_fix_and_refuses_start() {
    let database = migrated().await;
    database
        .client
        .batch_execute(
            "ALTER TABLE tasks ALTER COLUMN title TYPE varchar(20);
             ALTER TABLE tasks ALTER COLUMN status TYPE varchar(5);
             ALTER TABLE tasks ALTER COLUMN priority TYPE varchar(6);
             ALTER TABLE environments ALTER COLUMN name TYPE varchar(200);
             ALTER TABLE custom_data ALTER COLUMN key TYPE varchar(100);",
        )
        .await
        .unwrap();
    let found: Vec<String> = check_schema(&database.client, &demo_app_schema())
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    for (column, accepts) in [
        (
            "tasks: column title holds at most 20",
            "up to 500 characters",
        ),
        (
            "tasks: column status holds at most 5",
            "up to 11 characters",
        ),
        (
            "custom_data: column key holds at most 100",
            "text of any length",
        ),
    ] {
        assert!(
            found
                .iter()
                .any(|m| m.contains(column) && m.contains(accepts) && m.contains("TYPE text")),
            "{column}: {found:#?}"
        );
    }
    let error = start_error(&database).await;
    assert!(matches!(error, StartupError::SchemaMismatch(_)), "{error}");
}
