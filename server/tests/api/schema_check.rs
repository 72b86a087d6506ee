//! The start-up schema check names every mismatch, and the server refuses to start on one.

use ferry_server::migrations::{MigrateMode, migrate};
use ferry_server::schema_check::{
    ExpectedTable, SchemaMismatch, TypeFamily, check_schema, demo_app_schema,
};
use ferry_server::startup::{Application, Database, StartupError};

use crate::helpers::{TestDatabase, fresh_database, test_settings};

async fn migrated() -> TestDatabase {
    let mut database = fresh_database().await;
    migrate(&mut database.client, MigrateMode::Apply)
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
            },
        ]
    );
}
