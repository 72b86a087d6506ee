//! Inputs that used to turn into 500s on every retry (issue 12, item 3): NUL anywhere in a
//! batch and `migrated_at_ms` far out of range are refused as 400 `invalid_batch` in the error
//! shape, quoting nothing in full.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Run, expect_error, spawn_app};

/// A valid batch with one valid task and one rejected task, as JSON to tamper with.
fn batch() -> Value {
    let body = Run::new().batch(&[(
        "tasks",
        r#"[{"id":"4f8d1c9e-0000-4000-8000-000000000001","title":"t","status":"todo","createdAt":"2024-01-01T00:00:00Z"},
            {"id":"4f8d1c9e-0000-4000-8000-000000000002","status":"todo"}]"#,
    )]);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn nul_in_any_field_and_out_of_range_times_are_400_not_500() {
    let app = spawn_app().await;
    let user = app.user();
    let nul = "x\u{0}y".repeat(40);
    type Tamper = fn(&mut Value, &str);
    let cases: [(&str, Tamper); 8] = [
        ("kind of a record", |b, n| {
            b["records"][0]["kind"] = json!(n)
        }),
        ("kind of a rejected record", |b, n| {
            b["rejected"][0]["kind"] = json!(n)
        }),
        ("key of a record", |b, n| b["records"][0]["key"] = json!(n)),
        ("key of a rejected record", |b, n| {
            b["rejected"][0]["key"] = json!(n)
        }),
        ("raw JSON of a rejected record", |b, n| {
            b["rejected"][0]["raw"] = json!({ "json": format!("{{\"a\":\"{n}\"}}") });
        }),
        ("reason of a rejected record", |b, n| {
            b["rejected"][0]["reasons"][0]["message"] = json!(n)
        }),
        ("device of the header", |b, n| b["header"]["app"] = json!(n)),
        ("far future start", |b, _| {
            b["header"]["migrated_at_ms"] = json!(i64::MAX)
        }),
    ];
    for (what, tamper) in cases {
        let mut body = batch();
        tamper(&mut body, &nul);
        let response = app
            .post_batch(&user.token, serde_json::to_vec(&body).unwrap())
            .await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {text}");
        assert!(
            !text.contains(&nul.replace('\u{0}', "\\u0000")),
            "{what} quoted in full: {text}"
        );
    }
    // The far past too.
    let mut body = batch();
    body["header"]["migrated_at_ms"] = json!(i64::MIN);
    let response = app
        .post_batch(&user.token, serde_json::to_vec(&body).unwrap())
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_batch").await;

    // spec_mismatch quotes the caller's app and version cut, not in full.
    let mut body = batch();
    body["header"]["spec_version"] = json!("v".repeat(500));
    let response = app
        .post_batch(&user.token, serde_json::to_vec(&body).unwrap())
        .await;
    let error = expect_error(response, StatusCode::BAD_REQUEST, "spec_mismatch").await;
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains(&"v".repeat(33)), "{message}");
}

#[tokio::test]
async fn a_backup_id_with_nul_is_400_not_500() {
    let app = spawn_app().await;
    let user = app.user();
    let response = app.get_authed("/v1/backups/ab%00cd", &user.token).await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_backup").await;
}
