//! Rollback, backups and the operator's subcommands (`status`, `rollback`, `backup open`),
//! against real PostgreSQL and the real binary.

use std::process::Stdio;

use ferry_core::backup::{BackupMetadata, SealingKey};
use ferry_core::lossless::LosslessString;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::binary::ferry_server;
use crate::helpers::{Run, TestApp, expect_error, spawn_app};

/// Every row of the app tables of `user`, as text, table by table.
async fn snapshot(app: &TestApp, user: Uuid) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "tasks",
        "environments",
        "user_preferences",
        "form_drafts",
        "custom_data",
    ] {
        out.push(
            app.text(
                &format!("SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY id), '') FROM {table} t WHERE user_id = $1"),
                &[&user],
            )
            .await,
        );
    }
    out
}

fn task(id: Uuid, title: &str, updated: &str) -> Value {
    json!({"id": id, "title": title, "status": "todo", "tags": ["x", "y"], "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated})
}

/// Migrates a first state, then a second migration with inserts and updates of every kind.
async fn two_migrations(app: &TestApp, token: &str) -> (Run, Vec<Vec<u8>>) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let first = Run::new();
    app.send(
        token,
        first.batch(&[
            ("tasks", &json!([task(a, "a1", "2024-02-01T00:00:00Z"), task(b, "b1", "2024-02-01T00:00:00Z")]).to_string()),
            ("environments", r#"[{"id":"prod","name":"P","config":{"x":1,"githubToken":"ghp_tok"},"updatedAt":1706745600000}]"#),
            ("userPreferences", r#"{"theme":"dark"}"#),
            ("formData:f", r#"{"v":1}"#),
            ("taskboard:k", r#"{"v":1}"#),
        ]),
    )
    .await;
    let mut second = Run::new();
    second.migrated_at_ms += 3_600_000;
    let (records, _) = second.batches(&crate::helpers::pairs(&[
        (
            "tasks",
            &json!([task(a, "a2", "2024-03-01T00:00:00Z"), task(Uuid::new_v4(), "new", "2024-03-01T00:00:00Z")]).to_string(),
        ),
        ("environments", r#"[{"id":"prod","name":"P2","config":{"y":2},"updatedAt":1709251200000},{"id":"dev","name":"D","config":{}}]"#),
        ("userPreferences", r#"{"theme":"light"}"#),
        ("formData:f", r#"{"v":2}"#),
        ("formData:g", r#"{"v":1}"#),
        ("taskboard:k", r#"{"v":2}"#),
        ("taskboard:new", r#"{"v":1}"#),
    ]));
    // Two batches, so that the second can be sent after the rollback.
    let batches = ferry_core::wire::build_batches(
        crate::helpers::demo_spec(),
        &second.header(),
        &records,
        0..records.len(),
        0,
        ferry_core::wire::BatchLimits {
            max_records: 7,
            max_bytes: 1 << 20,
        },
    );
    assert_eq!(batches.len(), 2);
    (second, batches.into_iter().map(|b| b.body).collect())
}

#[tokio::test]
async fn a_rollback_restores_exactly_the_rows_before_the_migration() {
    let app = spawn_app().await;
    let user = app.user();
    let other = app.user();
    let (run, batches) = two_migrations(&app, &user.token).await;
    let _ = two_migrations(&app, &other.token).await;
    let before = snapshot(&app, user.id).await;
    let others_before = snapshot(&app, other.id).await;
    let result = app.send(&user.token, batches[0].clone()).await;
    assert!(
        result
            .outcomes
            .iter()
            .any(|o| o.outcome == ferry_server::ingest::RecordOutcome::Updated),
        "{result:?}"
    );
    assert_ne!(
        snapshot(&app, user.id).await,
        before,
        "the migration changed something"
    );
    let open: Vec<Value> = app.get_json("/v1/conflicts", &user.token).await;
    assert_eq!(open.len(), 1, "the draft conflicts: {open:?}");

    let r = app.rollback(&user.token, run.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert!(body["restored"].as_u64().unwrap() >= 6, "{body}");
    assert_eq!(
        snapshot(&app, user.id).await,
        before,
        "exactly the rows before the migration"
    );
    assert_eq!(
        snapshot(&app, other.id).await,
        others_before,
        "another user's rows are untouched"
    );
    let open: Vec<Value> = app.get_json("/v1/conflicts", &user.token).await;
    assert!(open.is_empty(), "the migration's conflicts are dismissed");
    let report: Value = app
        .get_json(&format!("/v1/migrations/{}", run.migration_id), &user.token)
        .await;
    assert_eq!(report["status"], "rolled_back");

    // A replay of an applied batch is refused too (its stored answer promised rows the
    // rollback removed), like the rest of the migration; a second rollback is a no-op.
    let replay = app.post_batch(&user.token, batches[0].clone()).await;
    expect_error(replay, StatusCode::CONFLICT, "migration_rolled_back").await;
    let refused = app.post_batch(&user.token, batches[1].clone()).await;
    expect_error(refused, StatusCode::CONFLICT, "migration_rolled_back").await;
    let again: Value = app
        .rollback(&user.token, run.migration_id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["restored"], 0);
    assert_eq!(snapshot(&app, user.id).await, before);
}

/// Sends `run`'s batch number `sequence` holding `tasks` as the legacy `tasks` value; the
/// outcome of each record.
async fn send_tasks(
    app: &TestApp,
    token: &str,
    run: &Run,
    sequence: u32,
    tasks: Value,
) -> Vec<String> {
    let body = crate::helpers::batch_under(
        crate::helpers::demo_spec(),
        run,
        &[("tasks", &tasks.to_string())],
        sequence,
    );
    app.send(token, body)
        .await
        .outcomes
        .iter()
        .map(|o| o.outcome.as_str().to_owned())
        .collect()
}

/// Rows created by a batch are recorded once per batch, images only for rows that existed, and
/// rollback follows the first thing the migration did to each row, across its batches: a row it
/// created and a later batch changed is deleted; a stored row it changed, that the app then
/// deleted and a later batch created again, gets its first image back.
#[tokio::test]
async fn a_rollback_follows_the_first_change_of_each_row_across_batches() {
    let app = spawn_app().await;
    let user = app.user();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let both = |a_title: &str, b_title: &str, at: &str| {
        json!([task(a, a_title, at), task(b, b_title, at)])
    };
    let earlier = [task(b, "b0", "2024-01-01T00:00:00Z")];
    send_tasks(&app, &user.token, &Run::new(), 0, json!(earlier)).await;
    let before = snapshot(&app, user.id).await;

    let run = Run::new();
    let first = both("a1", "b1", "2024-02-01T00:00:00Z");
    assert_eq!(
        send_tasks(&app, &user.token, &run, 0, first).await,
        ["inserted", "updated"]
    );
    let deleted = app
        .db
        .execute(
            "DELETE FROM tasks WHERE user_id = $1 AND title = 'b1'",
            &[&user.id],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the app deletes b");
    let second = both("a2", "b2", "2024-03-01T00:00:00Z");
    assert_eq!(
        send_tasks(&app, &user.token, &run, 1, second).await,
        ["updated", "inserted"]
    );
    let bookkeeping = app
        .text(
            "SELECT (SELECT count(*) FROM ferry_created_rows WHERE migration_id = $1) || ' arrays, ' ||
                    (SELECT count(*) FROM ferry_before_images WHERE migration_id = $1) || ' images'",
            &[&run.migration_id],
        )
        .await;
    assert_eq!(bookkeeping, "2 arrays, 2 images", "one array per batch");

    let r = app.rollback(&user.token, run.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        snapshot(&app, user.id).await,
        before,
        "a is gone and b is back as b0"
    );
}

/// A stored row changed by two batches of one migration keeps one before-image, the first
/// (a later statement leaves out rows the migration has an image of), and a rollback puts the
/// row back as it was before the migration.
#[tokio::test]
async fn a_row_changed_by_two_batches_keeps_its_first_image() {
    let app = spawn_app().await;
    let user = app.user();
    let b = Uuid::new_v4();
    let at = |month: u32| format!("2024-{month:02}-01T00:00:00Z");
    send_tasks(
        &app,
        &user.token,
        &Run::new(),
        0,
        json!([task(b, "b0", &at(1))]),
    )
    .await;
    let before = snapshot(&app, user.id).await;
    let run = Run::new();
    for (sequence, title) in [(0, "b1"), (1, "b2")] {
        let sent = json!([task(b, title, &at(2 + sequence))]);
        assert_eq!(
            send_tasks(&app, &user.token, &run, sequence, sent).await,
            ["updated"]
        );
    }
    let images = app
        .texts(
            "SELECT before->>'title' FROM ferry_before_images WHERE migration_id = $1",
            &[&run.migration_id],
        )
        .await;
    assert_eq!(images, ["b0"], "one image, the first");
    let r = app.rollback(&user.token, run.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(snapshot(&app, user.id).await, before, "b is back as b0");
}

fn sealed(id: &str, pairs: &[(LosslessString, LosslessString)]) -> Vec<u8> {
    ferry_core::backup::seal(
        pairs,
        BackupMetadata {
            backup_id: id.to_owned(),
            created_at_ms: 1_750_000_000_000,
            origin: "http://localhost:8080".to_owned(),
            spec_app: "taskboard".to_owned(),
            spec_version: "2026.11".to_owned(),
        },
        &SealingKey::Passphrase {
            passphrase: "correct horse",
            salt: [7; 16],
            iterations: ferry_core::backup::MIN_PBKDF2_ITERATIONS,
        },
        [9; 12],
    )
    .unwrap()
}

async fn upload(app: &TestApp, token: &str, id: &str, bytes: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url("/v1/backups"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .header("x-ferry-backup-id", id)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn backups_are_stored_opaque_listed_and_read_back_by_their_owner_only() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user(), app.user());
    let file = sealed("b-1", &crate::helpers::pairs(&[("tasks", "[]")]));
    let r = upload(&app, &alice.token, "b-1", file.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], "b-1");
    assert_eq!(body["size"], file.len());
    // A retry is fine; other bytes under the same id are not; garbage and wrong ids are refused.
    assert_eq!(
        upload(&app, &alice.token, "b-1", file.clone())
            .await
            .status(),
        StatusCode::OK
    );
    let other = sealed("b-1", &crate::helpers::pairs(&[("tasks", "[1]")]));
    expect_error(
        upload(&app, &alice.token, "b-1", other).await,
        StatusCode::CONFLICT,
        "backup_exists",
    )
    .await;
    expect_error(
        upload(&app, &alice.token, "b-2", b"hello".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "invalid_backup",
    )
    .await;
    expect_error(
        upload(&app, &alice.token, "b-2", file.clone()).await,
        StatusCode::BAD_REQUEST,
        "invalid_backup",
    )
    .await;

    let listed: Vec<Value> = app.get_json("/v1/backups", &alice.token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], "b-1");
    assert!(listed[0]["created_at"].as_str().unwrap().ends_with('Z'));
    let r = app.get_authed("/v1/backups/b-1", &alice.token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), file);

    let bobs: Vec<Value> = app.get_json("/v1/backups", &bob.token).await;
    assert!(bobs.is_empty());
    expect_error(
        app.get_authed("/v1/backups/b-1", &bob.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Bob may use the same id for his own backup; Alice's stays hers.
    assert_eq!(
        upload(&app, &bob.token, "b-1", sealed("b-1", &[]))
            .await
            .status(),
        StatusCode::OK
    );
    let r = app.get_authed("/v1/backups/b-1", &alice.token).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), file);
}

#[tokio::test]
async fn backup_open_prints_the_exact_pairs() {
    let mut units: Vec<u16> = "v".encode_utf16().collect();
    units.push(0xDC00);
    units.push(0);
    let pairs = vec![
        (
            LosslessString::from_unicode("tasks"),
            LosslessString::from_unicode(r#"[{"t":"😀"}]"#),
        ),
        (
            LosslessString::from_unicode("odd"),
            LosslessString::from_utf16(&units),
        ),
    ];
    let dir = std::env::temp_dir().join(format!("ferry-backup-open-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("b.ferry");
    std::fs::write(&path, sealed("cli", &pairs)).unwrap();
    let output = ferry_server(&["backup", "open", path.to_str().unwrap()])
        .env("FERRY_BACKUP_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected: Vec<Value> = pairs
        .iter()
        .map(|(k, v)| json!({"key": k.as_escaped(), "value": v.as_escaped()}))
        .collect();
    assert_eq!(printed, Value::Array(expected));
    assert!(
        stderr.contains("\"cli\"") && stderr.contains("2 keys"),
        "{stderr}"
    );

    // The wrong passphrase, from stdin this time: refused, nothing printed.
    let mut child = ferry_server(&["backup", "open", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(b"wrong\n").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());

    // A device-key backup can only be opened in its browser.
    let device = ferry_core::backup::seal(
        &pairs,
        BackupMetadata {
            backup_id: "dev".to_owned(),
            created_at_ms: 1,
            origin: "o".to_owned(),
            spec_app: "taskboard".to_owned(),
            spec_version: "2026.11".to_owned(),
        },
        &SealingKey::DeviceKey {
            key_id: "device-1",
            key: &[5; 32],
        },
        [9; 12],
    )
    .unwrap();
    std::fs::write(&path, device).unwrap();
    let output = ferry_server(&["backup", "open", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("non-extractable") && stderr.contains("browser"),
        "{stderr}"
    );
    let _ignored = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn status_and_rollback_through_the_binary() {
    let app = spawn_app().await;
    let Some(url) = app.conninfo.clone() else {
        return;
    };
    let user = app.user();
    let (run, batches) = two_migrations(&app, &user.token).await;
    let before = snapshot(&app, user.id).await;
    app.send(&user.token, batches[0].clone()).await;

    let output = ferry_server(&["status", "--user", &user.id.to_string()])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("migration {}", run.migration_id)),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("migration ").count(),
        2,
        "two runs: {stdout}"
    );
    assert!(stdout.contains("open conflicts 1"), "{stdout}");

    let output = ferry_server(&["conflicts", "--user", &user.id.to_string(), "--json"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let output = ferry_server(&[
        "rollback",
        "--migration",
        &run.migration_id.to_string(),
        "--user",
        &user.id.to_string(),
    ])
    .env("DATABASE_URL", &url)
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("tasks") && stdout.contains("rows restored"),
        "{stdout}"
    );
    assert_eq!(snapshot(&app, user.id).await, before);

    let output = ferry_server(&[
        "rollback",
        "--migration",
        &Uuid::new_v4().to_string(),
        "--user",
        &user.id.to_string(),
    ])
    .env("DATABASE_URL", &url)
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no migration"));
}
