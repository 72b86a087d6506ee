//! Security: every bad token on every write refused with nothing changed, another user's
//! migration id (even their exact batch) kept apart, a forged user in the batch header
//! ignored, secrets never in the logs or error bodies of the real binary, and slow or
//! oversized requests cut off within a bound.
//!
//! Covered elsewhere (see the audit in RELIABILITY.md): another user's row ids and a forged
//! `user_id` in records (`ingest.rs`), the error codes of each bad token (`auth.rs`), backup
//! byte flips and truncations (`ferry-core/tests/backup.rs`), CORS (`cors.rs`).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::helpers::{
    Run, ServerProcess, TEST_FIELD_KEY, TEST_SECRET, TestApp, app_at, expect_error, fresh_database,
    spawn_app, spawn_app_with,
};

/// Every table the server writes, each row as text, sorted: equal snapshots mean nothing changed.
async fn snapshot(app: &TestApp) -> String {
    let mut out = String::new();
    for table in [
        "tasks",
        "environments",
        "user_preferences",
        "form_drafts",
        "custom_data",
        "ferry_migration_runs",
        "ferry_ingest_ledger",
        "ferry_quarantine",
        "ferry_conflicts",
        "ferry_before_images",
        "ferry_created_rows",
        "ferry_backups",
        "ferry_received",
    ] {
        let rows = app
            .text(
                &format!(
                    "SELECT '{table}: ' || count(*) || ' ' || coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM {table} t"
                ),
                &[],
            )
            .await;
        out.push_str(&rows);
        out.push('\n');
    }
    out
}

fn tasks_of(ids: &[Uuid], title: &str, updated: &str) -> String {
    Value::Array(
        ids.iter()
            .map(|id| json!({"id": id, "title": title, "status": "todo", "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated}))
            .collect(),
    )
    .to_string()
}

#[tokio::test]
async fn bad_tokens_on_every_route_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let alice = app.user();
    let alice_run = Run::new();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    app.send(
        &alice.token,
        alice_run.batch(&[("tasks", &tasks_of(&ids, "alice's", "2024-02-01T00:00:00Z"))]),
    )
    .await;
    let before = snapshot(&app).await;

    // Tokens naming Alice, none of which may act for her; and no token at all.
    let tokens = [
        (
            Some(app.expired_token(alice.id)),
            "token_expired",
            "expired",
        ),
        (Some(app.forged_token(alice.id)), "invalid_token", "forged"),
        (
            Some(app.alg_none_token(alice.id)),
            "invalid_token",
            "alg: none",
        ),
        (Some(app.hs512_token(alice.id)), "invalid_token", "HS512"),
        (Some("garbage".to_owned()), "invalid_token", "not a JWT"),
        (None, "missing_token", "missing"),
    ];
    // Her own next batch, a newer version of her rows, a rollback of her migration, a report
    // read, a backup upload.
    let newer = {
        let mut run = alice_run;
        run.migration_id = Uuid::new_v4();
        run.batch(&[("tasks", &tasks_of(&ids, "forged", "2030-01-01T00:00:00Z"))])
    };
    for (token, code, why) in &tokens {
        let with = |request: reqwest::RequestBuilder| match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let requests = [
            with(app.client.post(app.url("/v1/batches")))
                .header("content-type", "application/json")
                .body(newer.clone()),
            with(app.client.post(app.url(&format!(
                "/v1/migrations/{}/rollback",
                alice_run.migration_id
            ))))
            .json(&json!({})),
            with(
                app.client
                    .get(app.url(&format!("/v1/migrations/{}", alice_run.migration_id))),
            ),
            with(app.client.get(app.url("/v1/conflicts"))),
            with(app.client.post(app.url("/v1/backups")))
                .header("content-type", "application/octet-stream")
                .header("x-ferry-backup-id", "b1")
                .body(vec![1_u8; 64]),
        ];
        for request in requests {
            let response = request.send().await.unwrap();
            let route = response.url().path().to_owned();
            let body = expect_error(response, StatusCode::UNAUTHORIZED, code).await;
            if let Some(t) = token {
                assert!(
                    !body.to_string().contains(t.as_str()),
                    "{why} {route}: {body}"
                );
            }
        }
        assert_eq!(snapshot(&app).await, before, "{why}: something changed");
    }
}

/// A user's rows, ledger and receipts, as text.
async fn user_state(app: &TestApp, user: Uuid) -> String {
    let sql = "SELECT (SELECT string_agg(t::text, '|' ORDER BY id) FROM tasks t WHERE user_id = $1) || \
               (SELECT string_agg(l::text, '|' ORDER BY sequence) FROM ferry_ingest_ledger l WHERE user_id = $1) || \
               (SELECT string_agg(r::text, '|' ORDER BY hash) FROM ferry_received r WHERE user_id = $1)";
    app.text(sql, &[&user]).await
}

#[tokio::test]
async fn another_users_migration_id_even_their_exact_batch_stays_the_senders_own() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user(), app.user());
    let run = Run::new();
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let body = run.batch(&[("tasks", &tasks_of(&ids, "alice's", "2024-02-01T00:00:00Z"))]);
    let first = app.send(&alice.token, body.clone()).await;
    assert!(!first.replay);
    let alice_before = user_state(&app, alice.id).await;
    let report_path = format!("/v1/migrations/{}", run.migration_id);
    let alice_report: Value = app.get_json(&report_path, &alice.token).await;

    // Bob cannot read Alice's migration by its id.
    let r = app.get_authed(&report_path, &bob.token).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // Bob replays Alice's exact bytes (her migration id, sequence and records). The ledger key
    // is (user, migration id, sequence): this is Bob's first batch, applied to Bob's rows; he
    // gets no replay of Alice's stored answer.
    let bobs = app.send(&bob.token, body.clone()).await;
    assert!(!bobs.replay, "Bob must not receive Alice's stored answer");
    assert_eq!(bobs.outcomes.len(), 4);
    assert!(
        bobs.outcomes
            .iter()
            .all(|o| o.outcome == ferry_server::ingest::RecordOutcome::Inserted),
        "Bob's own copies: {bobs:?}"
    );
    // And a different body under the same (migration id, sequence): Bob's key, not Alice's,
    // so it is an idempotency conflict with *his* first batch, never with hers.
    let other = run.batch(&[(
        "tasks",
        &tasks_of(&ids[..1], "bob's", "2024-03-01T00:00:00Z"),
    )]);
    let r = app.post_batch(&bob.token, other).await;
    expect_error(r, StatusCode::CONFLICT, "idempotency_conflict").await;
    // Bob's second copy is a replay of his own answer.
    assert!(app.send(&bob.token, body.clone()).await.replay);

    assert_eq!(
        user_state(&app, alice.id).await,
        alice_before,
        "Alice's rows, ledger and receipts"
    );
    let after: Value = app.get_json(&report_path, &alice.token).await;
    assert_eq!(after, alice_report, "Alice's report");
    let bob_report: Value = app.get_json(&report_path, &bob.token).await;
    assert_eq!(bob_report["batches"], 1, "{bob_report}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND id = ANY($2)",
            &[&bob.id, &ids]
        )
        .await,
        4
    );
    // Alice's replay still answers her stored result.
    assert!(app.send(&alice.token, body).await.replay);
}

#[tokio::test]
async fn a_user_forged_into_the_batch_header_is_ignored() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user(), app.user());
    let ids = [Uuid::new_v4()];
    app.send(
        &alice.token,
        Run::new().batch(&[("tasks", &tasks_of(&ids, "alice's", "2024-02-01T00:00:00Z"))]),
    )
    .await;
    let alice_rows = app
        .text(
            "SELECT string_agg(t::text, '|') FROM tasks t WHERE user_id = $1",
            &[&alice.id],
        )
        .await;
    // Bob names Alice in the header (and at the top of the batch): the header is not where
    // the user comes from, so the unknown top-level field is refused and the header one is
    // ignored; either way Bob only ever writes as Bob.
    let body = Run::new().batch(&[("tasks", &tasks_of(&ids, "bob's", "2030-01-01T00:00:00Z"))]);
    let mut batch: Value = serde_json::from_slice(&body).unwrap();
    batch["header"]["user_id"] = json!(alice.id);
    let result = app
        .send(&bob.token, serde_json::to_vec(&batch).unwrap())
        .await;
    assert_eq!(result.outcomes.len(), 1);
    batch["user_id"] = json!(alice.id);
    let r = app
        .post_batch(&bob.token, serde_json::to_vec(&batch).unwrap())
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_batch").await;
    assert_eq!(
        app.text(
            "SELECT string_agg(t::text, '|') FROM tasks t WHERE user_id = $1",
            &[&alice.id]
        )
        .await,
        alice_rows
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND title = 'bob''s'",
            &[&bob.id]
        )
        .await,
        1
    );
}

/// A backup sealed with `passphrase` (the server never sees one; `backup open` does).
fn sealed_backup(passphrase: &str) -> Vec<u8> {
    ferry_core::backup::seal(
        &[(
            ferry_core::lossless::LosslessString::from_unicode("k"),
            ferry_core::lossless::LosslessString::from_unicode("v"),
        )],
        ferry_core::backup::BackupMetadata {
            backup_id: "secrets".to_owned(),
            created_at_ms: 1_750_000_000_000,
            origin: "http://localhost:8080".to_owned(),
            spec_app: "taskboard".to_owned(),
            spec_version: "2026.11".to_owned(),
        },
        &ferry_core::backup::SealingKey::Passphrase {
            passphrase,
            salt: [7; 16],
            iterations: ferry_core::backup::MIN_PBKDF2_ITERATIONS,
        },
        [9; 12],
    )
    .unwrap()
}

#[tokio::test]
async fn secrets_never_reach_the_logs_or_error_bodies() {
    const MARKER: &str = "ghp_SECRETMARKER7f3a9c";
    const DB_PASSWORD: &str = "DBPASSWORDMARKER51e2";
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    // The local cluster trusts its socket, so a password is accepted and never checked: it
    // is there to be looked for in the logs.
    let conninfo = format!("{conninfo} password={DB_PASSWORD}");
    let server = ServerProcess::start(
        &conninfo,
        &[("RUST_LOG", "trace"), ("FERRY_BODY_LIMIT_BYTES", "4000")],
    )
    .await;
    let app = app_at(&server.url, database);
    let user = app.user();
    let mut secrets = vec![
        MARKER.to_owned(),
        DB_PASSWORD.to_owned(),
        TEST_SECRET.to_owned(),
        TEST_FIELD_KEY.to_owned(),
        user.token.clone(),
    ];
    let mut error_bodies = Vec::new();
    let environment = |name: Option<&str>, token: &str| {
        let mut env = json!({"id": "prod", "config": {"region": "eu", "githubToken": token}});
        if let Some(name) = name {
            env["name"] = json!(name);
        }
        Value::Array(vec![env]).to_string()
    };

    // Accepted: the token is stored sealed.
    let run = Run::new();
    let ok = app
        .send(
            &user.token,
            run.batch(&[("environments", &environment(Some("Prod"), MARKER))]),
        )
        .await;
    assert_eq!(ok.outcomes.len(), 1);
    // Rejected by the pipeline (no name): quarantined, the answer has reasons.
    let rejected = app
        .post_batch(
            &user.token,
            Run::new().batch(&[("environments", &environment(None, MARKER))]),
        )
        .await;
    let text = rejected.text().await.unwrap();
    assert!(
        !text.contains(MARKER),
        "the answer quotes the secret: {text}"
    );
    // The same batch key with another body: 409.
    let conflicting = run.batch(&[(
        "environments",
        &environment(Some("Prod"), &format!("{MARKER}x")),
    )]);
    let r = app.post_batch(&user.token, conflicting.clone()).await;
    error_bodies.push(expect_error(r, StatusCode::CONFLICT, "idempotency_conflict").await);
    // A record whose raw text no longer matches its hash: 400.
    let mut tampered: Value = serde_json::from_slice(
        &Run::new().batch(&[("environments", &environment(Some("Prod"), MARKER))]),
    )
    .unwrap();
    let raw = tampered["records"][0]["raw"]["json"]
        .as_str()
        .unwrap()
        .replace(MARKER, &format!("{MARKER}2"));
    tampered["records"][0]["raw"]["json"] = json!(raw);
    let r = app
        .post_batch(&user.token, serde_json::to_vec(&tampered).unwrap())
        .await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(
        status.is_client_error() || status == StatusCode::OK,
        "{status} {text}"
    );
    error_bodies.push(json!({ "status": status.as_u16(), "text": text }));
    // A record whose raw JSON is cut short inside the secret: quarantined, reasons given.
    let mut cut: Value = serde_json::from_slice(
        &Run::new().batch(&[("environments", &environment(Some("Prod"), MARKER))]),
    )
    .unwrap();
    let text = cut["records"][0]["raw"]["json"]
        .as_str()
        .unwrap()
        .to_owned();
    let end = text.find(MARKER).unwrap() + MARKER.len();
    cut["records"][0]["raw"]["json"] = json!(&text[..end]);
    let r = app
        .post_batch(&user.token, serde_json::to_vec(&cut).unwrap())
        .await;
    error_bodies.push(json!({ "status": r.status().as_u16(), "text": r.text().await.unwrap() }));
    // The batch itself cut short right after the secret: not JSON, 400.
    let whole = Run::new().batch(&[("environments", &environment(Some("Prod"), MARKER))]);
    let whole = String::from_utf8(whole).unwrap();
    let end = whole.find(MARKER).unwrap() + MARKER.len();
    let r = app
        .post_batch(&user.token, whole.as_bytes()[..end].to_vec())
        .await;
    error_bodies.push(expect_error(r, StatusCode::BAD_REQUEST, "invalid_batch").await);
    let r = app
        .client
        .post(app.url("/v1/batches"))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"sequence": "{MARKER}"}}"#))
        .send()
        .await
        .unwrap();
    error_bodies.push(json!({ "status": r.status().as_u16(), "text": r.text().await.unwrap() }));
    let big = format!(r#"{{"x":"{}"}}"#, MARKER.repeat(230));
    let r = app.post_batch(&user.token, big.into_bytes()).await;
    error_bodies.push(expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await);
    // Every bad token, on a batch carrying the secret.
    for token in [
        app.expired_token(user.id),
        app.forged_token(user.id),
        app.alg_none_token(user.id),
        format!("{MARKER}.{MARKER}.{MARKER}"),
    ] {
        let r = app.post_batch(&token, conflicting.clone()).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        error_bodies.push(json!({ "status": status.as_u16(), "text": text }));
        secrets.push(token);
    }
    // A backup upload, twice (the same bytes again are accepted as the same backup).
    let backup = sealed_backup("unused passphrase");
    for _ in 0..2 {
        let r = app
            .client
            .post(app.url("/v1/backups"))
            .bearer_auth(&user.token)
            .header("content-type", "application/octet-stream")
            .header("x-ferry-backup-id", "secrets")
            .body(backup.clone())
            .send()
            .await
            .unwrap();
        error_bodies
            .push(json!({ "status": r.status().as_u16(), "text": r.text().await.unwrap() }));
    }

    // The operator's `backup open` with a wrong passphrase names neither passphrase.
    let dir = std::env::temp_dir().join(format!("ferry-secrets-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("b.ferry");
    std::fs::write(&path, sealed_backup("PASSPHRASEMARKER-right")).unwrap();
    let output = crate::binary::ferry_server(&["backup", "open", path.to_str().unwrap()])
        .env("FERRY_BACKUP_PASSPHRASE", "PASSPHRASEMARKER-wrong")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let _ignored = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    let cli_output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!cli_output.contains("PASSPHRASEMARKER"), "{cli_output}");

    // Give the log a moment to be written, then scan it all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    assert!(
        log.contains(" TRACE ")
            && log.contains("request not authenticated")
            && log.contains("status=409"),
        "the log was not captured at trace level:\n{log}"
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log holds a secret ({}…):\n{log}",
            &secret[..secret.len().min(12)]
        );
        for body in &error_bodies {
            assert!(
                !body.to_string().contains(secret.as_str()),
                "an error body holds a secret ({}…): {body}",
                &secret[..secret.len().min(12)]
            );
        }
    }
    // Nor the marker's distinctive middle (a quoted or escaped copy).
    assert!(!log.contains("SECRETMARKER"), "{log}");
    // The stored token is ciphertext, and so is the quarantined record that holds it.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM environments WHERE config::text LIKE '%SECRETMARKER%'",
            &[]
        )
        .await,
        0
    );
    let quarantined = app
        .count(
            "SELECT count(*) FROM ferry_quarantine WHERE kind = 'environments'",
            &[],
        )
        .await;
    assert!(
        quarantined >= 1,
        "the rejected environments are quarantined"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_quarantine WHERE ferry_quarantine::text LIKE '%SECRETMARKER%'",
            &[]
        )
        .await,
        0,
        "the quarantine holds the secret in clear"
    );
}

#[tokio::test]
async fn a_quarantined_secret_is_sealed_at_rest_and_the_operator_gets_it_back() {
    const TOKEN: &str = "ghp_QUARANTINEMARKER42";
    let app = spawn_app().await;
    let Some(url) = app.conninfo.clone() else {
        return; // An external DATABASE_URL: no connection string for the binary.
    };
    let user = app.user();
    // No `name`: rejected, quarantined with its raw text, which holds the token.
    let record = json!({"id": "prod", "config": {"region": "eu", "githubToken": TOKEN}});
    let value = Value::Array(vec![record.clone()]).to_string();
    let result = app
        .send(&user.token, Run::new().batch(&[("environments", &value)]))
        .await;
    assert_eq!(result.outcomes.len(), 1, "{result:?}");
    let row = app
        .db
        .query_one(
            "SELECT raw_value, raw_key_id, ferry_quarantine::text FROM ferry_quarantine WHERE user_id = $1",
            &[&user.id],
        )
        .await
        .unwrap();
    let (stored, key_id, whole): (String, Option<String>, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(key_id.as_deref(), Some("k1"));
    assert!(!whole.contains("QUARANTINEMARKER"), "in clear: {whole}");

    // The operator's `quarantine` subcommand opens it with the field key: the exact input.
    let output = crate::binary::ferry_server(&["quarantine", "--user", &user.id.to_string()])
        .env("DATABASE_URL", &url)
        .env("FERRY_FIELD_KEY", TEST_FIELD_KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let records = listed.as_array().unwrap();
    assert_eq!(records.len(), 1, "{listed}");
    assert_eq!(
        records[0]["raw_value"],
        json!(record.to_string()),
        "{listed}"
    );
    assert_eq!(records[0]["sealed_with"], json!("k1"));
    assert_eq!(records[0]["kind"], json!("environments"));

    // Another key: the record is still listed, with its ciphertext and why it is unreadable.
    let output = crate::binary::ferry_server(&["quarantine", "--user", &user.id.to_string()])
        .env("DATABASE_URL", &url)
        .env("FERRY_FIELD_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed[0]["raw_value"], Value::Null, "{listed}");
    assert_eq!(listed[0]["sealed"], json!(stored));
    assert!(
        listed[0]["unreadable"]
            .as_str()
            .unwrap()
            .contains("does not verify")
    );
}

/// Reads from `stream` until it closes or `limit` passes; returns what came and whether it
/// closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn host_of(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_client_dribbling_its_body_is_cut_off_by_the_request_timeout() {
    let app = spawn_app_with(|s| s.request_timeout_ms = 500).await;
    let user = app.user();
    let before = snapshot(&app).await;
    let mut stream = tokio::net::TcpStream::connect(host_of(&app)).await.unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n",
        user.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 100 ms, while watching for the server's answer.
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        let mut sent = 0_usize;
        while writer.write_all(b"{").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sent > 100 {
                break;
            }
        }
        sent
    });
    let mut got = Vec::new();
    let mut buffer = [0_u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
            Err(_) => break false,
        }
    };
    let took = started.elapsed();
    dribble.abort();
    let answer = String::from_utf8_lossy(&got);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "expected a 503, got {answer:?} after {took:?}"
    );
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(closed, "the server kept the connection open: {answer}");
    assert!(
        took < Duration::from_secs(3),
        "cut off after {took:?} (timeout 500 ms)"
    );
    assert_eq!(snapshot(&app).await, before);
    eprintln!("a 1-byte-per-100-ms body was cut off after {took:?} (request timeout 500 ms)");
}

#[tokio::test]
async fn a_client_dribbling_its_headers_is_cut_off() {
    let app = spawn_app_with(|s| {
        s.header_read_timeout_ms = 500;
        s.request_timeout_ms = 500;
    })
    .await;
    let stream = tokio::net::TcpStream::connect(host_of(&app)).await.unwrap();
    let started = Instant::now();
    // A request line, then one header that never ends: one byte every 50 ms.
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        let mut sent = 0_usize;
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if writer.write_all(&[*byte]).await.is_err() || sent > 200 {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    });
    let mut got = Vec::new();
    let mut buffer = [0_u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(6), reader.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
            Err(_) => break false,
        }
    };
    let took = started.elapsed();
    dribble.abort();
    let answer = String::from_utf8_lossy(&got);
    assert!(
        closed,
        "the server kept a connection dribbling its headers open for {took:?}: {answer:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "cut off after {took:?} (header read timeout 500 ms)"
    );
    assert!(
        !answer.contains("200 OK"),
        "a request whose headers never ended was answered: {answer:?}"
    );
    eprintln!(
        "headers dribbled at 1 byte per 50 ms were cut off after {took:?} (header read timeout 500 ms)"
    );
}

#[tokio::test]
async fn a_malformed_batch_does_not_echo_the_strings_it_holds() {
    const SECRET: &str = "ghp_DECODEMARKER0123456789abcdef";
    let app = spawn_app().await;
    let user = app.user();
    let with_header = |field: &str, value: &str| {
        let mut batch: Value = serde_json::from_slice(&Run::new().batch(&[(
            "tasks",
            &tasks_of(&[Uuid::new_v4()], "t", "2024-01-01T00:00:00Z"),
        )]))
        .unwrap();
        batch["header"][field] = json!(value);
        batch.to_string()
    };
    // (body, what the message must still say)
    let cases = [
        (
            format!(r#"{{"header": "{SECRET}", "records": []}}"#),
            "expected struct BatchHeader at line 1 column",
        ),
        (
            with_header("sequence", SECRET),
            "expected u32 at line 1 column",
        ),
        (with_header("migration_id", SECRET), "line 1 column"),
        (format!(r#"{{"{SECRET}": 1}}"#), "unknown field"),
        (with_header("format", SECRET), "batch format"),
    ];
    for (body, says) in cases {
        let r = app.post_batch(&user.token, body.into_bytes()).await;
        let answer = expect_error(r, StatusCode::BAD_REQUEST, "invalid_batch").await;
        let text = answer.to_string();
        assert!(
            !text.contains(SECRET),
            "the answer echoes the secret: {text}"
        );
        assert!(
            !text.contains("DECODEMARKER"),
            "the answer echoes part of the secret: {text}"
        );
        assert!(
            text.contains(says),
            "the answer lost its position or expectation: {text}"
        );
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_being_read() {
    let app = spawn_app_with(|s| s.body_limit_bytes = 64 * 1024).await;
    let user = app.user();
    let before = snapshot(&app).await;

    // Announced too large: refused on the headers alone, before a byte of body.
    let mut stream = tokio::net::TcpStream::connect(host_of(&app)).await.unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        user.token,
        512 * 1024 * 1024
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Chunked, no length: read only until the limit is passed, then refused while the client
    // still has most of its 16 MiB to send.
    let mut stream = tokio::net::TcpStream::connect(host_of(&app)).await.unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        user.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b'x'; 16 * 1024];
        let mut sent = 0_usize;
        while sent < 16 * 1024 * 1024 {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if writer.write_all(&framed).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut got = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buffer[..n]),
            other => panic!("no answer: {other:?}"),
        }
    }
    let answer = String::from_utf8_lossy(&got).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    drop(reader);
    let sent = tokio::time::timeout(Duration::from_secs(5), sender)
        .await
        .expect("the sender is stopped by the closed connection")
        .unwrap();
    assert!(
        sent < 8 * 1024 * 1024,
        "the server read {sent} bytes of a body over a 64 KiB limit"
    );
    assert_eq!(snapshot(&app).await, before);
    eprintln!("chunked body over a 64 KiB limit: refused after the client sent {sent} bytes");
}

/// Issue 12, item 4: a raw value sealed at rest by a server before the key split (format
/// `v1`, one key encrypting and keying the nonce HMAC) is still opened for the operator after
/// the upgrade, with the same configured key; new values are sealed as `v2`.
#[tokio::test]
async fn a_quarantined_value_sealed_before_the_key_split_is_still_opened_for_the_operator() {
    use ferry_server::ingest::field_crypto::FieldCipher;
    use ferry_server::operator::quarantine::quarantined_records;
    // Sealed by the code before `v2` with key id `k1`, key `[7; 32]`, for user 1, migration
    // 2, kind `environments`, key `envs`.
    const V1_SEALED: &str =
        "ferry:enc:v1:k1:7U_pBL3t3Akw9jbC7jJoA3hsdCQEIYkqccSYDYqIBs79f29MffUpKi3vzj_NEuB7YmE";
    let mut database = fresh_database().await;
    ferry_server::db::schema_migrations::migrate_schema(
        &mut database.client,
        &crate::helpers::demo_app_migrations(),
        ferry_server::db::schema_migrations::SchemaMigrationMode::Apply,
    )
    .await
    .unwrap();
    let (user, migration) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let cipher = FieldCipher::new("k1", [7; 32]);
    let new_raw = r#"{"token":"ghp_new"}"#;
    let new_sealed = cipher.seal_quarantined(
        &ferry_server::ingest::field_crypto::QuarantineContext {
            user_id: user,
            migration_id: migration,
            kind: "environments",
            key: "envs2",
        },
        new_raw,
    );
    assert!(new_sealed.starts_with("ferry:enc:v2:k1:"), "{new_sealed}");
    for (key, sealed) in [("envs", V1_SEALED), ("envs2", new_sealed.as_str())] {
        database
            .client
            .execute(
                "INSERT INTO ferry_quarantine (user_id, migration_id, kind, key, raw_value, raw_key_id, reasons)
                 VALUES ($1, $2, 'environments', $3, $4, 'k1', '[]'::jsonb)",
                &[&user, &migration, &key, &sealed],
            )
            .await
            .unwrap();
    }
    let records = quarantined_records(&database.client, &cipher, Some(user), None)
        .await
        .unwrap();
    let opened: Vec<Option<&str>> = records.iter().map(|r| r.raw_value.as_deref()).collect();
    assert_eq!(
        opened,
        [Some(r#"{"token":"ghp_secret"}"#), Some(new_raw)],
        "{records:?}"
    );
}
