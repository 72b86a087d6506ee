//! The HTTP edge answers every refusal in the JSON error shape, quoting nothing in full: heads
//! too large (431) and targets too long (414) within hyper's raised ceilings, a body sent as
//! anything but JSON (415), callers' ids and choices cut in refusals, and NUL or extreme
//! numbers in any field of a batch (400, never 5xx). What hyper refuses before any service
//! runs (a request it cannot parse) is pinned as it is: a bare status, then the connection
//! closed (see RELIABILITY.md, "protocol errors").

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Run, TestApp, expect_error, spawn_app, spawn_app_with};

fn host_of(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Sends `request` as raw bytes and reads until the server closes the connection (or 5 s).
async fn raw_exchange(app: &TestApp, request: &[u8]) -> (String, bool) {
    let mut stream = tokio::net::TcpStream::connect(host_of(app)).await.unwrap();
    // The server may answer and close before it has read everything: a write error is fine.
    let _ = stream.write_all(request).await;
    let mut got = Vec::new();
    let mut buffer = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test]
async fn a_head_over_ferrys_limits_is_431_or_414_in_our_shape() {
    let app = spawn_app().await;
    let user = app.user();

    // Hyper's own default is 100 headers: 150 got its bare 431 before.
    let mut request = app.client.get(app.url("/v1/me")).bearer_auth(&user.token);
    for i in 0..150 {
        request = request.header(format!("x-filler-{i}"), "1");
    }
    let body = expect_error(
        request.send().await.unwrap(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    )
    .await;
    assert_eq!(
        body["error"]["details"]["limit_headers"],
        ferry_server::http::MAX_REQUEST_HEADERS
    );

    // Few headers, but too many bytes of them.
    let big = "a".repeat(ferry_server::http::MAX_REQUEST_HEADER_BYTES + 1);
    let response = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth(&user.token)
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    let body = expect_error(
        response,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    )
    .await;
    assert_eq!(
        body["error"]["details"]["limit_bytes"],
        ferry_server::http::MAX_REQUEST_HEADER_BYTES
    );

    // A target over Ferry's limit (and under hyper's 64 KiB) is 414.
    let long = format!(
        "/v1/me?q={}",
        "b".repeat(ferry_server::http::MAX_REQUEST_TARGET_BYTES)
    );
    let response = app
        .client
        .get(app.url(&long))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::URI_TOO_LONG, "uri_too_long").await;

    // Just under the limits is served.
    let mut request = app.client.get(app.url("/v1/me")).bearer_auth(&user.token);
    for i in 0..ferry_server::http::MAX_REQUEST_HEADERS - 10 {
        request = request.header(format!("x-filler-{i}"), "1");
    }
    assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
}

/// The status line and the `content-length` of a raw answer.
fn status_and_length(answer: &str) -> (String, Option<String>) {
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let length = answer.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_owned())
    });
    (status, length)
}

#[tokio::test]
async fn what_hyper_refuses_before_any_service_runs_is_a_bare_status_and_a_closed_connection() {
    // These never reach the router: hyper parses the head, fails, writes a status line with
    // `content-length: 0` and closes. hyper 1.x has no hook for that answer's body
    // (`proto::h1::role::Server::on_error` builds a head only). This test pins the behaviour,
    // so that a hyper that grows such a hook (or stops closing) is noticed.
    let app = spawn_app().await;
    let many_headers: String = (0..ferry_server::startup::HYPER_MAX_HEADERS + 1)
        .map(|i| format!("x-{i}: 1\r\n"))
        .collect();
    // (request, status line, why)
    let cases = [
        (
            "GET /healthz HTTP/1.1\r\nhost: x\r\nthis is not a header\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
            "a header line without a colon",
        ),
        (
            "GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
            "an unknown HTTP version",
        ),
        (
            "G\u{1}T /healthz HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
            "a control byte in the method",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "more headers than hyper's raised ceiling",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "c".repeat(70_000)),
            "HTTP/1.1 414 URI Too Long",
            "a target over hyper's fixed 64 KiB",
        ),
    ];
    for (request, want, why) in cases {
        let (answer, closed) = raw_exchange(&app, request.as_bytes()).await;
        let (status, length) = status_and_length(&answer);
        assert_eq!(status, want, "{why}: {answer}");
        assert_eq!(length.as_deref(), Some("0"), "{why}: {answer}");
        assert!(closed, "{why}: the connection stays open");
    }
    // A well-formed request on a fresh connection is still served.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_endpoints_refuse_another_content_type_with_415_and_change_nothing() {
    let app = spawn_app().await;
    let user = app.user();
    let body = Run::new().batch(&[(
        "tasks",
        r#"[{"id":"ct-1","title":"t","status":"todo","createdAt":"2024-01-01T00:00:00Z"}]"#,
    )]);
    let batches = "SELECT count(*) FROM ferry_ingest_ledger";
    // (content type, why)
    let refused = [
        (Some("text/plain"), "text"),
        (Some("application/x-www-form-urlencoded"), "a form"),
        (Some("application/octet-stream"), "bytes"),
        (Some("application/jsonx"), "not json"),
        (Some("multipart/form-data; boundary=x"), "multipart"),
        (None, "no content type"),
    ];
    for (content_type, why) in refused {
        for path in ["/v1/batches", "/v1/conflicts/1/resolve"] {
            let mut request = app
                .client
                .post(app.url(path))
                .bearer_auth(&user.token)
                .body(if path == "/v1/batches" {
                    body.clone()
                } else {
                    br#"{"choice":"stored"}"#.to_vec()
                });
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            let answer = expect_error(
                request.send().await.unwrap(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .await;
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("application/json"),
                "{path}, {why}: {answer}"
            );
        }
    }
    assert_eq!(
        app.count(batches, &[]).await,
        0,
        "a refused batch was applied"
    );

    // JSON with parameters, or a `+json` type, is JSON.
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let r = app
            .client
            .post(app.url("/v1/batches"))
            .bearer_auth(&user.token)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{content_type}");
    }
    assert_eq!(app.count(batches, &[]).await, 1);
}

#[tokio::test]
async fn refusals_cut_the_callers_input_like_the_batch_decoder() {
    const SECRET: &str = "ghp_ECHOMARKER0123456789abcdef";
    let app = spawn_app_with(|s| s.dev = true).await;
    let user = app.user();
    let assert_cut = |answer: &Value, what: &str| {
        let text = answer.to_string();
        assert!(!text.contains("ECHOMARKER"), "{what} echoes: {text}");
        assert!(
            text.contains("ghp_…"),
            "{what} no longer quotes the start: {text}"
        );
    };

    // resolve: serde names an unknown choice in full.
    let r = app
        .post_json_authed(
            "/v1/conflicts/1/resolve",
            &user.token,
            &json!({ "choice": SECRET }),
        )
        .await;
    let answer = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert_cut(&answer, "an unknown choice");
    assert!(answer.to_string().contains("unknown variant"), "{answer}");

    // Backups: a bad id, an id that differs from the file's, an id already stored.
    let upload = |id: String, bytes: Vec<u8>| {
        app.client
            .post(app.url("/v1/backups"))
            .bearer_auth(&user.token)
            .header("content-type", "application/octet-stream")
            .header("x-ferry-backup-id", id)
            .body(bytes)
            .send()
    };
    let long_id = format!("{SECRET}{}", "x".repeat(300));
    let r = upload(long_id, b"not a backup".to_vec()).await.unwrap();
    let answer = expect_error(r, StatusCode::BAD_REQUEST, "invalid_backup").await;
    assert_cut(&answer, "a bad backup id");

    let file = sealed_backup(SECRET);
    let r = upload("b-other".to_owned(), file.clone()).await.unwrap();
    let answer = expect_error(r, StatusCode::BAD_REQUEST, "invalid_backup").await;
    assert_cut(&answer, "an id mismatch");

    let r = upload(SECRET.to_owned(), file.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = upload(SECRET.to_owned(), sealed_backup_with(SECRET, 3))
        .await
        .unwrap();
    let answer = expect_error(r, StatusCode::CONFLICT, "backup_exists").await;
    assert_cut(&answer, "an existing id");

    // Our Json extractor: serde's unknown field and wrong-type string.
    let r = app
        .post_json_authed(
            "/dev/token",
            &user.token,
            &json!({ "user": "a", SECRET: 1 }),
        )
        .await;
    let answer = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert_cut(&answer, "an unknown field");

    // The dev sample's query: the whole query and serde's unknown field.
    let r = app.get(&format!("/dev/sample?{SECRET}=1")).await;
    let answer = expect_error(r, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert_cut(&answer, "an unknown query field");
}

fn sealed_backup(id: &str) -> Vec<u8> {
    sealed_backup_with(id, 9)
}

fn sealed_backup_with(id: &str, nonce: u8) -> Vec<u8> {
    use ferry_core::backup::{BackupMetadata, SealingKey};
    ferry_core::backup::seal(
        &crate::helpers::pairs(&[("tasks", "[]")]),
        BackupMetadata {
            backup_id: id.to_owned(),
            created_at_ms: 1_750_000_000_000,
            origin: "http://localhost:8080".to_owned(),
            spec_app: "taskboard".to_owned(),
            spec_version: "2026.11".to_owned(),
        },
        &SealingKey::DeviceKey {
            key_id: "k",
            key: &[5; 32],
        },
        [nonce; 12],
    )
    .unwrap()
}

/// Every leaf of `value` (and every object key, as `(path, None)`), as JSON pointers.
fn leaves(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                leaves(v, &format!("{path}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, &format!("{path}/{i}"), out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

/// The hostile values put in each field: NUL in strings, numbers at and past every bound.
fn hostile_values(original: &Value) -> Vec<Value> {
    let mut values = vec![
        json!("\u{0}"),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1),
        json!(u64::from(u32::MAX) + 1),
        json!(1e308),
        json!(-1e308),
        json!(0.5),
        json!(ferry_core::timestamp::MIN_MS - 1),
        json!(ferry_core::timestamp::MAX_MS + 1),
    ];
    if let Value::String(s) = original {
        values.push(json!(format!("{s}\u{0}")));
        values.push(json!(format!("\u{0}{s}")));
    }
    values
}

#[tokio::test]
async fn nul_and_extreme_numbers_in_every_field_of_a_batch_are_refused_400_never_5xx() {
    // Some 300 requests from one user: no rate limit.
    let app = spawn_app_with(|s| s.rate_limit_per_second = 0.0).await;
    let user = app.user();
    // One accepted and one rejected record, so that every part of the batch has fields.
    let body = Run::new().batch(&[(
        "tasks",
        r#"[{"id":"f-1","title":"t","status":"todo","createdAt":"2024-01-01T00:00:00Z"},{"id":"f-2","status":"nope"}]"#,
    )]);
    let batch: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(batch["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(batch["rejected"].as_array().map(Vec::len), Some(1));
    let mut paths = Vec::new();
    leaves(&batch, "", &mut paths);
    let mut cases = 0;
    let mut accepted = 0;
    for path in &paths {
        let original = batch.pointer(path).unwrap().clone();
        for hostile in hostile_values(&original) {
            let mut edited = batch.clone();
            *edited.pointer_mut(path).unwrap() = hostile.clone();
            // A fresh migration each time, so no answer is an idempotency replay.
            if path != "/header/migration_id" {
                edited["header"]["migration_id"] = json!(uuid::Uuid::new_v4());
            }
            let r = app
                .post_batch(&user.token, edited.to_string().into_bytes())
                .await;
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            cases += 1;
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{path} = {hostile}: {status} {text}"
            );
            if status == StatusCode::OK {
                accepted += 1;
                // Accepted: the edit was a value the decoder takes (a reason's message, a number
                // the spec re-derives); it must then never be a NUL or out of range.
                assert!(
                    !hostile.as_str().is_some_and(|s| s.contains('\0')),
                    "{path}: a NUL was accepted: {text}"
                );
            } else {
                let answer: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    ["invalid_batch", "spec_mismatch"]
                        .contains(&answer["error"]["code"].as_str().unwrap_or_default()),
                    "{path} = {hostile}: {answer}"
                );
                // A message may name the one bad character, never the caller's whole string.
                // (The server's own expected values, such as the format, may appear.)
                if let Some(original) = original.as_str().filter(|o| o.chars().count() > 4) {
                    for nul in ["\\u0000", "\\\\0", "\\\\u{0}"] {
                        for echo in [format!("{original}{nul}"), format!("{nul}{original}")] {
                            assert!(
                                !text.contains(&echo),
                                "{path}: the answer quotes the hostile value in full: {text}"
                            );
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{cases} hostile batches ({} fields), {accepted} accepted",
        paths.len()
    );
    assert!(cases > 200, "only {cases} cases");
}

#[tokio::test]
async fn an_unknown_resolve_column_is_quoted_cut_not_whole() {
    // The resolve room words its own messages with ferry-core's `pipeline::quote` (60
    // characters): a key of `value` longer than that does not come back whole.
    let app = spawn_app().await;
    let user = app.user();
    let form = |v: &str| {
        Run::new().batch(&[(
            "formData:contact",
            &format!(r#"{{"name":"{v}","savedAt":1700000000000}}"#),
        )])
    };
    app.send(&user.token, form("stored")).await;
    app.send(&user.token, form("incoming")).await;
    let listed: Vec<Value> = app.get_json("/v1/conflicts", &user.token).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let key = format!("ghp_{}_TAILMARKER", "k".repeat(80));
    let r = app
        .post_json_authed(
            &format!("/v1/conflicts/{}/resolve", listed[0]["id"]),
            &user.token,
            &json!({ "choice": "edited", "value": { key.as_str(): 1 } }),
        )
        .await;
    let answer = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let text = answer.to_string();
    assert!(
        !text.contains("TAILMARKER"),
        "the column comes back whole: {text}"
    );
    assert!(text.contains("ghp_kkkk"), "the column is not named: {text}");
    assert!(text.contains("cannot be edited"), "{text}");
}
