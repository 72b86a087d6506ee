//! Gzip request bodies (`Content-Encoding: gzip`, what the browser's migrator sends): a
//! compressed batch is the same batch; a body that expands past the limit (a compression
//! bomb) is a 413 with nothing written; another encoding is a 415 naming it; a broken gzip
//! stream is a 400.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Run, TestApp, expect_error, spawn_app};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn post_encoded(
    app: &TestApp,
    token: &str,
    encoding: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url("/v1/batches"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn tasks(n: usize) -> String {
    let list: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": Uuid::new_v4().to_string(),
                "title": format!("task {i} ✓ naïve \u{1F600}"),
                "status": "todo",
                "createdAt": "2024-02-01T00:00:00Z",
                "updatedAt": "2024-02-01T00:00:00Z",
            })
        })
        .collect();
    Value::Array(list).to_string()
}

#[tokio::test]
async fn a_gzip_batch_is_ingested_like_the_plain_one_and_replays_as_the_same_batch() {
    let app = spawn_app().await;
    let user = app.user();
    let run = Run::new();
    let body = run.batch(&[("tasks", &tasks(200))]);
    let compressed = gzip(&body);
    assert!(
        compressed.len() * 3 < body.len(),
        "{} vs {}",
        compressed.len(),
        body.len()
    );

    let r = post_encoded(&app, &user.token, "gzip", compressed.clone()).await;
    let status = r.status();
    let first: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        200
    );
    // The same batch again, uncompressed: a replay with the same answer, nothing doubled.
    let again: Value = app
        .post_batch(&user.token, body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["outcomes"], first["outcomes"]);
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        200
    );
}

#[tokio::test]
async fn a_gzip_bomb_is_413_and_never_written() {
    let app = spawn_app().await;
    let user = app.user();
    // A valid batch padded with whitespace far past the limit: a few hundred KB on the wire.
    let mut body = Run::new().batch(&[("tasks", &tasks(1))]);
    body.extend(std::iter::repeat_n(b' ', app.settings.body_limit_bytes * 8));
    let compressed = gzip(&body);
    assert!(compressed.len() < app.settings.body_limit_bytes);
    let r = post_encoded(&app, &user.token, "gzip", compressed).await;
    let error = expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        error["error"]["details"]["limit_bytes"],
        json!(app.settings.body_limit_bytes)
    );
    assert_eq!(
        app.count("SELECT count(*) FROM ferry_ingest_ledger", &[])
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM tasks", &[]).await, 0);
}

#[tokio::test]
async fn another_encoding_is_415_naming_it_and_broken_gzip_is_400() {
    let app = spawn_app().await;
    let user = app.user();
    let body = Run::new().batch(&[("tasks", &tasks(3))]);

    let r = post_encoded(&app, &user.token, "br", body.clone()).await;
    let error = expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`br`") && message.contains("gzip"),
        "{message}"
    );

    let mut broken = gzip(&body);
    let middle = broken.len() / 2;
    broken.truncate(middle);
    let r = post_encoded(&app, &user.token, "gzip", broken).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let error: Value = r.json().await.unwrap();
    assert!(error["error"]["code"].is_string(), "{error}");

    // Identity is the same as no encoding.
    let r = post_encoded(&app, &user.token, "identity", body).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.count("SELECT count(*) FROM tasks", &[]).await, 3);
}
