//! Records the database refuses although the spec accepts them (an adopter's column, CHECK or
//! trigger stricter than the spec): each is quarantined with the database's reason and the
//! rest of its batch lands, exactly once (issue 12, item 2). Before, the whole batch failed
//! with 500 on every retry.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Run, spawn_app};

#[tokio::test]
async fn rows_a_stricter_column_check_or_trigger_refuses_are_quarantined_and_the_rest_lands_once() {
    let app = spawn_app().await;
    app.db
        .batch_execute(
            "ALTER TABLE tasks ALTER COLUMN title TYPE varchar(20);
             ALTER TABLE custom_data ADD CONSTRAINT custom_value_not_banned CHECK (value->>'v' <> 'banned');
             CREATE FUNCTION refuse_forbidden() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.name = 'forbidden' THEN RAISE EXCEPTION 'environment name is reserved'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER environments_refuse BEFORE INSERT OR UPDATE ON environments
               FOR EACH ROW EXECUTE FUNCTION refuse_forbidden();",
        )
        .await
        .unwrap();
    let user = app.user();
    let long_title = "a title the spec allows but varchar(20) does not";
    let list: Vec<Value> = (0..40)
        .map(|i| {
            let title = if i == 17 {
                long_title.to_owned()
            } else {
                format!("task {i}")
            };
            json!({"id": Uuid::new_v4(), "title": title, "status": "todo",
                   "createdAt": "2024-01-01T00:00:00Z"})
        })
        .collect();
    let envs = json!([
        {"id": "prod", "name": "Production", "config": {}},
        {"id": "x", "name": "forbidden", "config": {}},
        {"id": "dev", "name": "Dev", "config": {}}
    ])
    .to_string();
    let body = Run::new().batch(&[
        ("tasks", &Value::Array(list).to_string()),
        ("environments", &envs),
        ("taskboard:a", r#"{"v":"fine"}"#),
        ("taskboard:b", r#"{"v":"banned"}"#),
    ]);

    let first = app.post_batch(&user.token, body.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let quarantined: Vec<&Value> = first["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "quarantined")
        .collect();
    assert_eq!(quarantined.len(), 3, "{first}");
    let reasons = |kind: &str| {
        quarantined
            .iter()
            .find(|o| o["kind"] == kind)
            .map(|o| o["reasons"].to_string())
            .unwrap_or_else(|| panic!("no {kind} quarantined: {first}"))
    };
    assert!(
        reasons("tasks").contains("character varying(20)"),
        "{}",
        reasons("tasks")
    );
    assert!(
        !reasons("tasks").contains(long_title),
        "the value is not quoted"
    );
    assert!(
        reasons("custom").contains("custom_value_not_banned"),
        "{}",
        reasons("custom")
    );
    assert!(
        reasons("environments").contains("environment name is reserved"),
        "{}",
        reasons("environments")
    );

    let rows = |table: &'static str| {
        let sql = format!("SELECT count(*) FROM {table} WHERE user_id = $1");
        let app = &app;
        let user = user.id;
        async move { app.count(&sql, &[&user]).await }
    };
    assert_eq!(rows("tasks").await, 39);
    assert_eq!(rows("environments").await, 2);
    assert_eq!(rows("custom_data").await, 1);
    let stored = app
        .count(
            "SELECT count(*) FROM ferry_quarantine WHERE user_id = $1 AND reasons::text LIKE '%the database refused%'",
            &[&user.id],
        )
        .await;
    assert_eq!(
        stored, 3,
        "each refused record is in the quarantine with the reason"
    );

    // The retry is a replay: nothing written twice.
    let again: Value = app
        .post_batch(&user.token, body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["replay"], true);
    assert_eq!(rows("tasks").await, 39);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_quarantine WHERE user_id = $1",
            &[&user.id]
        )
        .await,
        3
    );
}
