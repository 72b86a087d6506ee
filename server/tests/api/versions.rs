//! Several spec versions served at once (`FERRY_SPEC` with several files or a folder): the
//! spec endpoint serves the one asked for, a batch is checked against the version it names,
//! and a version the server does not serve is refused naming the ones it does.

use std::path::PathBuf;

use ferry_server::startup::{Application, Database};
use reqwest::StatusCode;

use crate::helpers::*;

const V1: &str = include_str!("../../../specs/taskboard.json");

/// The next version of the demo spec: a task's title is now at most 400 characters.
fn v2_text() -> String {
    V1.replacen(r#""version": "2026.11""#, r#""version": "2026.12""#, 1)
        .replacen(
            r#""length": { "min": 1, "max": 500 }"#,
            r#""length": { "min": 1, "max": 400 }"#,
            1,
        )
}

/// A fresh folder holding `files` (name, text).
fn spec_folder(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-versions-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

#[tokio::test]
async fn the_spec_endpoint_serves_the_newest_version_or_the_one_asked_for() {
    let v2 = v2_text();
    // Versions are ordered by number, not by file name: `a-new.json` is the newest.
    let dir = spec_folder(&[
        ("a-new.json", &v2),
        ("b-old.json", V1),
        ("README.md", "not a spec"),
        ("ferry-spec.schema.json", "{}"),
    ]);
    let app = spawn_app_with(|s| s.spec = vec![dir.clone()]).await;
    let user = app.user();

    let r = app.get_authed("/v1/spec", &user.token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), v2);
    let r = app
        .get_authed("/v1/spec?version=2026.11", &user.token)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), V1);
    let r = app
        .get_authed("/v1/spec?app=taskboard&version=2026.12", &user.token)
        .await;
    assert_eq!(r.text().await.unwrap(), v2);

    let r = app.get_authed("/v1/spec?version=2025.1", &user.token).await;
    let body = expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(r#""2025.1""#) && message.contains(r#""2026.11", "2026.12""#),
        "{message}"
    );
    let r = app.get_authed("/v1/spec?app=jotter", &user.token).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.get_authed("/v1/spec?versoin=1", &user.token).await;
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_query").await;
    let _ignored = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_batch_is_checked_against_the_version_it_names() {
    let v2 = v2_text();
    let dir = spec_folder(&[("v1.json", V1), ("v2.json", &v2)]);
    let app = spawn_app_with(|s| s.spec = vec![dir.join("v1.json"), dir.join("v2.json")]).await;
    let user = app.user();
    let title = "t".repeat(450);
    let task = format!(
        r#"[{{"id":"6f1c1a4e-0000-4000-8000-000000000001","title":"{title}","status":"todo","createdAt":"2026-01-01T00:00:00Z"}}]"#
    );

    // Under the old version a 450-character title is fine: the batch is checked against it.
    let run = Run::new();
    let answer = app.send(&user.token, run.batch(&[("tasks", &task)])).await;
    assert_eq!(
        answer.counts["tasks"][&ferry_core::contract::RecordOutcome::Inserted],
        1,
        "{answer:?}"
    );

    // Under the new one, the same title is quarantined (by the server's own check too).
    let spec2 = ferry_core::spec::Spec::parse(&v2).unwrap();
    let run2 = Run::new();
    let header = ferry_core::wire::BatchHeader::new(&spec2, run2.migration_id, &run2.context());
    let records =
        ferry_core::pipeline::process(&spec2, &pairs(&[("tasks", &task)]), &run2.context());
    let batches = ferry_core::wire::build_batches(
        &spec2,
        &header,
        &records,
        0..records.len(),
        0,
        ferry_core::wire::BatchLimits::default(),
    );
    let user2 = app.user();
    let answer = app.send(&user2.token, batches[0].body.clone()).await;
    assert_eq!(
        answer.counts["tasks"][&ferry_core::contract::RecordOutcome::Quarantined],
        1,
        "{answer:?}"
    );

    // A version the server does not serve: 400 naming the ones it does, nothing written.
    let old = String::from_utf8(run.batch(&[("tasks", &task)]))
        .unwrap()
        .replacen(
            r#""spec_version":"2026.11""#,
            r#""spec_version":"2025.1""#,
            1,
        );
    let user3 = app.user();
    let r = app.post_batch(&user3.token, old.into_bytes()).await;
    let body = expect_error(r, StatusCode::BAD_REQUEST, "spec_mismatch").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(r#"version "2025.1""#)
            && message.contains(r#""taskboard" versions "2026.11", "2026.12""#),
        "{message}"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1",
            &[&user3.id]
        )
        .await,
        0
    );
    let _ignored = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn every_problem_of_every_spec_file_is_listed_and_the_server_does_not_start() {
    let database = fresh_database().await;
    let broken = V1.replacen(
        r#""updated_at": "updated_at","#,
        r#""updated_at": "nope","#,
        1,
    );
    let dir = spec_folder(&[
        ("v1.json", V1),
        ("v1-again.json", V1),
        ("broken.json", &broken.replacen("2026.11", "2027.1", 1)),
    ]);
    let mut settings = test_settings();
    settings.spec = vec![dir.clone(), dir.join("missing.json")];
    let error = match Application::build_with_database(
        &settings,
        Database::external(database.config.clone()),
    )
    .await
    {
        Ok(_) => panic!("the server started with refused specs"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("3 problems"), "{error}");
    assert!(
        error.contains("broken.json") && error.contains("nope"),
        "{error}"
    );
    assert!(
        error.contains("v1-again.json") && error.contains(r#"version "2026.11""#),
        "{error}"
    );
    assert!(error.contains("missing.json"), "{error}");
    let _ignored = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_retired_version_lets_migrations_in_flight_finish_and_starts_no_new_one() {
    let v2 = v2_text();
    let dir = spec_folder(&[("v1.json", V1), ("v2.json", &v2)]);
    let app = spawn_app_with(|s| s.spec = vec![dir.clone()]).await;
    let spec1 = demo_spec();
    let spec2 = ferry_core::spec::Spec::parse(&v2).unwrap();
    let task = |n: u32| {
        format!(
            r#"[{{"id":"6f1c1a4e-0000-4000-8000-00000000000{n}","title":"t{n}","status":"todo","createdAt":"2026-01-01T00:00:00Z"}}]"#
        )
    };

    // A user with a migration in flight under the old version (a first batch of it is in).
    let early = app.user();
    let run = Run::new();
    app.send(
        &early.token,
        batch_under(spec1, &run, &[("tasks", &task(1))], 0),
    )
    .await;

    // The operator asks first: one user is still on it; nothing changes without --yes.
    let said = ferry_server::operator::cli::retire_on(&app.db, "taskboard", "2026.11", false)
        .await
        .unwrap();
    assert!(
        said.contains("1 user(s) with 1 migration(s) in flight") && said.contains("--yes"),
        "{said}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM ferry_retired_specs", &[])
            .await,
        0
    );
    let said = ferry_server::operator::cli::retire_on(&app.db, "taskboard", "2026.11", true)
        .await
        .unwrap();
    assert!(said.contains("retired:"), "{said}");

    // The migration in flight finishes under the retired version.
    app.send(
        &early.token,
        batch_under(spec1, &run, &[("tasks", &task(2))], 1),
    )
    .await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1",
            &[&early.id]
        )
        .await,
        2
    );

    // A new migration under it is refused, naming the versions served; nothing is written.
    let late = app.user();
    let r = app
        .post_batch(
            &late.token,
            batch_under(spec1, &Run::new(), &[("tasks", &task(3))], 0),
        )
        .await;
    let body = expect_error(r, StatusCode::BAD_REQUEST, "spec_mismatch").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("retired") && message.contains(r#""2026.12""#),
        "{message}"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_migration_runs WHERE user_id = $1",
            &[&late.id]
        )
        .await,
        0
    );
    // Under the newer version it is taken.
    app.send(
        &late.token,
        batch_under(&spec2, &Run::new(), &[("tasks", &task(3))], 0),
    )
    .await;
    let _ignored = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_rollback_undoes_a_migration_with_the_kinds_of_its_own_version() {
    // The newer version no longer has the `tasks` kind: rolling back a run made under the old
    // one must still restore the tasks table.
    let mut doc: serde_json::Value = serde_json::from_str(V1).unwrap();
    doc["version"] = "2027.1".into();
    doc["kinds"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["name"] != "tasks");
    let v2 = serde_json::to_string_pretty(&doc).unwrap();
    let dir = spec_folder(&[("v1.json", V1), ("v2.json", &v2)]);
    let app = spawn_app_with(|s| s.spec = vec![dir.clone()]).await;
    let user = app.user();
    let run = Run::new();
    let task = r#"[{"id":"6f1c1a4e-0000-4000-8000-000000000009","title":"t","status":"todo","createdAt":"2026-01-01T00:00:00Z"}]"#;
    app.send(&user.token, run.batch(&[("tasks", task)])).await;
    let tasks = "SELECT count(*) FROM tasks WHERE user_id = $1";
    assert_eq!(app.count(tasks, &[&user.id]).await, 1);
    let r = app.rollback(&user.token, run.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    assert_eq!(
        app.count(tasks, &[&user.id]).await,
        0,
        "the task the run added is gone"
    );
    let _ignored = std::fs::remove_dir_all(dir);
}
