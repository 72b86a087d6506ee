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
    migrate_schema(
        &mut database.client,
        &crate::helpers::demo_app_migrations(),
        SchemaMigrationMode::Apply,
    )
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
    settings.spec = vec![path.clone()];
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
            "the spec's field `title` accepts up to 500 characters",
        ),
        (
            "tasks: column status holds at most 5",
            "the spec's field `status` accepts up to 11 characters",
        ),
        (
            "custom_data: column key holds at most 100",
            "the spec's field `key` accepts text of any length",
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

/// The mismatches of `expected` in `database`, as text.
async fn described(database: &TestDatabase, expected: &[ExpectedTable]) -> Vec<String> {
    check_schema(&database.client, expected)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A CHECK on an enum or boolean column that refuses a value the spec writes there (issue 12,
/// item 2) is named at start with the corrected constraint; so is one refusing `NULL` for a
/// field the spec may leave out. The migrated tables' own CHECKs (`status`, `priority`,
/// `theme`, the last one on a `varchar` column here) accept every spec value and pass.
#[tokio::test]
async fn a_check_refusing_a_spec_value_is_named_with_the_corrected_constraint_and_refuses_start() {
    let database = migrated().await;
    database
        .client
        .batch_execute(
            "ALTER TABLE tasks DROP CONSTRAINT tasks_status_check,
                 ADD CONSTRAINT tasks_status_check CHECK (status IN ('pending', 'completed'));
             ALTER TABLE tasks DROP CONSTRAINT tasks_priority_check,
                 ADD CONSTRAINT priority_known CHECK (priority IS NOT NULL AND priority <> 'urgent');
             ALTER TABLE environments ADD CONSTRAINT only_active CHECK (is_active);
             ALTER TABLE user_preferences ALTER COLUMN theme TYPE varchar(10);",
        )
        .await
        .unwrap();
    let found = described(&database, &demo_app_schema()).await;
    let expected = [
        "table tasks: CHECK priority_known on column priority refuses 'urgent', NULL, which the spec's field `priority` writes there; such records would be quarantined (ALTER TABLE tasks DROP CONSTRAINT \"priority_known\", ADD CONSTRAINT \"priority_known\" CHECK (priority IN ('low', 'medium', 'high', 'urgent')); or remove the refused values from the spec)",
        "table tasks: CHECK tasks_status_check on column status refuses 'in_progress', which the spec's field `status` writes there; such records would be quarantined (ALTER TABLE tasks DROP CONSTRAINT \"tasks_status_check\", ADD CONSTRAINT \"tasks_status_check\" CHECK (status IN ('pending', 'in_progress', 'completed')); or remove the refused values from the spec)",
        "table environments: CHECK only_active on column is_active refuses 'false', which the spec's field `isActive` writes there; such records would be quarantined (ALTER TABLE environments DROP CONSTRAINT \"only_active\"; or remove the refused values from the spec)",
    ];
    assert_eq!(found, expected);
    let error = start_error(&database).await;
    assert!(matches!(error, StartupError::SchemaMismatch(_)), "{error}");
    for mismatch in expected {
        assert!(error.to_string().contains(mismatch), "{error}");
    }
}

/// A CHECK Ferry cannot prove either way (another column involved, or values that are not a
/// finite set) is a warning naming it: the server starts, and the records it refuses are
/// quarantined at run time. A CHECK on a column the spec does not write is none of its
/// business.
#[tokio::test]
async fn a_check_ferry_cannot_prove_is_a_warning_and_the_server_starts() {
    let database = migrated().await;
    database
        .client
        .batch_execute(
            "ALTER TABLE tasks ADD CONSTRAINT title_not_blank CHECK (btrim(title) <> '');
             ALTER TABLE tasks ADD CONSTRAINT done_has_due_date
                 CHECK (status <> 'completed' OR due_date IS NOT NULL);
             ALTER TABLE tasks ADD COLUMN archived boolean NOT NULL DEFAULT false
                 CHECK (archived IS NOT NULL);",
        )
        .await
        .unwrap();
    let mismatches = check_schema(&database.client, &demo_app_schema())
        .await
        .unwrap();
    assert_eq!(mismatches.len(), 2, "{mismatches:#?}");
    assert!(mismatches.iter().all(SchemaMismatch::is_warning));
    let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    for (start, why) in [
        (
            "table tasks: CHECK done_has_due_date on column(s) status, due_date (CHECK",
            "(it involves more than one column)",
        ),
        (
            "table tasks: CHECK title_not_blank on column(s) title (CHECK",
            "(the values the spec writes into title are not a finite set)",
        ),
    ] {
        assert!(
            text.iter().any(|m| m.starts_with(start)
                && m.contains(why)
                && m.ends_with(
                    "records it refuses are quarantined at run time, named by the constraint"
                )),
            "{start}: {text:#?}"
        );
    }
    if let Err(error) = Application::build_with_database(
        &test_settings(),
        Database::external(database.config.clone()),
    )
    .await
    {
        panic!("a warning refused the start: {error}");
    }
}

/// `NOT NULL` on a column the spec may leave empty names the spec's field and the statement.
#[tokio::test]
async fn a_not_null_the_spec_may_leave_empty_names_the_field_and_the_alter_statement() {
    let database = migrated().await;
    database
        .client
        .batch_execute("ALTER TABLE tasks ALTER COLUMN due_date SET NOT NULL")
        .await
        .unwrap();
    let found = described(&database, &demo_app_schema()).await;
    assert_eq!(
        found,
        [
            "table tasks: column due_date is NOT NULL, but the spec may leave it empty (field `dueDate` is optional without a default); every record without it would be quarantined (ALTER TABLE tasks ALTER COLUMN due_date DROP NOT NULL, or make the field required or give it a default in the spec)"
        ]
    );
    let error = start_error(&database).await;
    assert!(error.to_string().contains("DROP NOT NULL"), "{error}");
}

/// An integer column narrower than the spec's integers (all safe integers when the field has
/// no range) is named at start with the field and the fix; one as wide as the range passes.
#[tokio::test]
async fn an_integer_column_narrower_than_the_spec_is_named_with_the_fix_and_refuses_start() {
    let database = migrated().await;
    database
        .client
        .batch_execute("ALTER TABLE environments ALTER COLUMN schema_version TYPE integer")
        .await
        .unwrap();
    let found = described(&database, &demo_app_schema()).await;
    assert_eq!(
        found,
        [
            "table environments: column schema_version is integer, which holds -2147483648 to 2147483647, but the spec's field `schema_version` accepts integers from -9007199254740991 to 9007199254740991; records outside would be quarantined (or narrow the field's range in the spec) (ALTER TABLE environments ALTER COLUMN schema_version TYPE bigint)"
        ]
    );
    let error = start_error(&database).await;
    assert!(matches!(error, StartupError::SchemaMismatch(_)), "{error}");
}

/// An app's numbers: integer ranges against `smallint`, `integer` and `numeric(p,s)`, doubles
/// against `real` and `numeric(p,s)`. Each column that would refuse or round a value the spec
/// accepts is named; those that hold every value pass.
#[tokio::test]
async fn numeric_columns_are_compared_with_the_spec_ranges_and_exactness() {
    let database = fresh_database().await;
    let spec = ferry_core::spec::Spec::parse(
        r#"{
          "ferry_spec": 1, "app": "meters", "version": "1",
          "kinds": [{
            "name": "readings", "source": { "array": "readings" },
            "id": { "from": "id", "scope": "global" },
            "table": "readings", "conflict": "overwrite",
            "fields": [
              { "from": "level", "column": "level", "type": "integer", "range": { "min": 0, "max": 100 } },
              { "from": "small", "column": "small", "type": "integer", "range": { "min": -5.5, "max": 9.5 } },
              { "from": "big", "column": "big", "type": "integer", "range": { "min": 0, "max": 999999 } },
              { "from": "count", "column": "count", "type": "integer" },
              { "from": "peak", "column": "peak", "type": "integer", "range": { "min": 0, "max": 40000 } },
              { "from": "weight", "column": "weight", "type": "number" },
              { "from": "amount", "column": "amount", "type": "number" },
              { "from": "price", "column": "price", "type": "number", "range": { "min": 0 } },
              { "from": "ratio", "column": "ratio", "type": "number" }
            ]
          }]
        }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    database
        .client
        .batch_execute(
            "CREATE TABLE readings (
                 user_id uuid NOT NULL, id uuid NOT NULL,
                 level smallint, small numeric(3,2), big numeric(6,0), count integer,
                 peak smallint, weight double precision, amount numeric, price numeric(10,2),
                 ratio real,
                 PRIMARY KEY (user_id, id))",
        )
        .await
        .unwrap();
    let found = described(&database, &expected_tables(&spec)).await;
    assert_eq!(
        found,
        [
            "table readings: column count is integer, which holds -2147483648 to 2147483647, but the spec's field `count` accepts integers from -9007199254740991 to 9007199254740991; records outside would be quarantined (or narrow the field's range in the spec) (ALTER TABLE readings ALTER COLUMN count TYPE bigint)",
            "table readings: column peak is smallint, which holds -32768 to 32767, but the spec's field `peak` accepts integers from 0 to 40000; records outside would be quarantined (or narrow the field's range in the spec) (ALTER TABLE readings ALTER COLUMN peak TYPE bigint)",
            "table readings: column price is numeric(10,2), which rounds to 2 decimals and refuses magnitudes from 10^8, but the spec's field `price` is a number (a double); its values would be rounded or quarantined (ALTER TABLE readings ALTER COLUMN price TYPE double precision)",
            "table readings: column ratio is real, which keeps about 6 significant digits, but the spec's field `ratio` is a number (a double); its values would be rounded (ALTER TABLE readings ALTER COLUMN ratio TYPE double precision)",
        ]
    );
}
