//! `POST /v1/batches` against real PostgreSQL: conflict policies, exactly-once, isolation
//! between users, statement count, quarantine, encryption at rest, lossless strings.
//! Batches are built with ferry-core's pipeline and batcher, as the browser builds them.

use std::time::Instant;

use ferry_server::ingest::RecordOutcome as O;
use ferry_server::ingest::field_crypto::{CellContext, FieldCipher};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Run, TEST_FIELD_KEY, expect_error, outcome_of, pairs, spawn_app, target_id};

/// A task as the legacy app stored it.
fn task(id: Uuid, title: &str, updated: &str) -> Value {
    json!({"id": id, "title": title, "status": "todo", "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated})
}

fn tasks(list: &[Value]) -> String {
    Value::Array(list.to_vec()).to_string()
}

#[tokio::test]
async fn newest_policy_newer_wins_older_and_ties_keep_the_stored_row_every_time() {
    let app = spawn_app().await;
    let user = app.user();
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let first = Run::new();
    let result = app
        .send(
            &user.token,
            first.batch(&[(
                "tasks",
                &tasks(&[
                    task(a, "a1", "2024-02-01T00:00:00Z"),
                    task(b, "b1", "2024-02-01T00:00:00Z"),
                    task(c, "c1", "2024-02-01T00:00:00Z"),
                ]),
            )]),
        )
        .await;
    assert!(
        result.outcomes.iter().all(|o| o.outcome == O::Inserted),
        "{result:?}"
    );

    // Another browser: a newer a, an older b, a tie on c, and a new d — one mixed batch.
    let d = Uuid::new_v4();
    for round in 0..2 {
        let second = Run::new();
        let result = app
            .send(
                &user.token,
                second.batch(&[(
                    "tasks",
                    &tasks(&[
                        task(
                            a,
                            &format!("a2-{round}"),
                            &format!("2024-03-0{}T00:00:00Z", round + 1),
                        ),
                        task(b, "b0", "2024-01-15T00:00:00Z"),
                        task(c, "c-tie", "2024-02-01T00:00:00Z"),
                        task(d, "d", "2024-02-01T00:00:00Z"),
                    ]),
                )]),
            )
            .await;
        assert_eq!(outcome_of(&result, a), O::Updated, "round {round}");
        assert_eq!(outcome_of(&result, b), O::KeptStored, "round {round}");
        assert_eq!(
            outcome_of(&result, c),
            O::KeptStored,
            "a tie keeps the stored row, round {round}"
        );
        let expected_d = if round == 0 {
            O::Inserted
        } else {
            O::Unchanged
        };
        assert_eq!(outcome_of(&result, d), expected_d, "round {round}");
        assert_eq!(result.counts["tasks"].values().sum::<u64>(), 4);
    }
    let titles: Vec<(Uuid, String)> = app
        .db
        .query(
            "SELECT id, title FROM tasks WHERE user_id = $1 ORDER BY title",
            &[&user.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        titles,
        [
            (a, "a2-1".to_owned()),
            (b, "b1".to_owned()),
            (c, "c1".to_owned()),
            (d, "d".to_owned())
        ]
    );
    // The status legacy value was mapped, and the same row was never duplicated.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND status = 'pending'",
            &[&user.id]
        )
        .await,
        4
    );
}

fn cipher() -> FieldCipher {
    let key = ferry_server::ingest::field_crypto::parse_hex_key("test", TEST_FIELD_KEY).unwrap();
    FieldCipher::new("k1", key)
}

#[tokio::test]
async fn merge_policy_merges_config_keys_newer_wins_and_the_token_stays_ciphertext() {
    let app = spawn_app().await;
    let user = app.user();
    let env = |config: Value, updated: &str| {
        json!([{"id": "prod", "name": "Production", "config": config, "updatedAt": updated}])
            .to_string()
    };
    let r1 = app
        .send(
            &user.token,
            Run::new().batch(&[(
                "environments",
                &env(
                    json!({"a": 1, "region": "eu", "githubToken": "ghp_FIRSTsecret"}),
                    "2024-02-01T00:00:00Z",
                ),
            )]),
        )
        .await;
    let id = target_id("environments", "prod");
    assert_eq!(outcome_of(&r1, id), O::Inserted);
    // Newer: its values win on shared keys; keys only the stored row has are kept.
    let r2 = app
        .send(
            &user.token,
            Run::new().batch(&[(
                "environments",
                &env(
                    json!({"a": 2, "b": 3, "githubToken": "ghp_SECONDsecret"}),
                    "2024-03-01T00:00:00Z",
                ),
            )]),
        )
        .await;
    assert_eq!(outcome_of(&r2, id), O::Merged);
    // Older: only its new keys are added.
    let r3 = app
        .send(
            &user.token,
            Run::new().batch(&[(
                "environments",
                &env(
                    json!({"a": 9, "c": 4, "githubToken": "ghp_OLDsecret"}),
                    "2024-01-01T00:00:00Z",
                ),
            )]),
        )
        .await;
    assert_eq!(outcome_of(&r3, id), O::Merged);
    let config: Value = app
        .db
        .query_one(
            "SELECT config FROM environments WHERE user_id = $1 AND id = $2",
            &[&user.id, &id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(config["a"], 2);
    assert_eq!(config["b"], 3);
    assert_eq!(config["c"], 4);
    assert_eq!(config["region"], "eu");
    let token = config["githubToken"].as_str().unwrap();
    assert!(token.starts_with("ferry:enc:v2:k1:"), "{token}");
    let ctx = CellContext {
        user_id: user.id,
        table: "environments",
        row_id: id,
        column: "config.githubToken",
    };
    assert_eq!(
        cipher().decrypt(&ctx, token).as_deref(),
        Ok("ghp_SECONDsecret")
    );
    let updated: String = app
        .text("SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM environments WHERE user_id = $1", &[&user.id])
        .await;
    assert_eq!(updated, "2024-03-01", "updated_at keeps the newer time");
    // No plaintext secret anywhere: the rows, the before-images, the conflicts.
    for sql in [
        "SELECT coalesce(string_agg(t::text, ''), '') FROM environments t",
        "SELECT coalesce(string_agg(t::text, ''), '') FROM ferry_before_images t",
        "SELECT coalesce(string_agg(t::text, ''), '') FROM ferry_conflicts t",
        "SELECT coalesce(string_agg(t::text, ''), '') FROM ferry_ingest_ledger t",
    ] {
        let text = app.text(sql, &[]).await;
        assert!(!text.contains("secret"), "plaintext in {sql}: {text}");
    }
}

#[tokio::test]
async fn overwrite_policy_replaces_preferences_and_skip_policy_keeps_custom_data() {
    let app = spawn_app().await;
    let user = app.user();
    let first = app
        .send(
            &user.token,
            Run::new().batch(&[
                ("userPreferences", r#"{"theme":"dark","language":"fr"}"#),
                ("taskboard:layout", r#"{"columns":3}"#),
            ]),
        )
        .await;
    assert!(
        first.outcomes.iter().all(|o| o.outcome == O::Inserted),
        "{first:?}"
    );
    let mut second_run = Run::new();
    second_run.migrated_at_ms += 60_000;
    let second = app
        .send(
            &user.token,
            second_run.batch(&[
                ("userPreferences", r#"{"theme":"auto"}"#),
                ("taskboard:layout", r#"{"columns":5}"#),
            ]),
        )
        .await;
    assert_eq!(second.counts["preferences"][&O::Updated], 1, "{second:?}");
    assert_eq!(second.counts["custom"][&O::KeptStored], 1, "{second:?}");
    let prefs = app
        .text("SELECT theme || ' ' || language || ' ' || preferences::text FROM user_preferences WHERE user_id = $1", &[&user.id])
        .await;
    assert_eq!(
        prefs, r#"system en {"theme": "auto"}"#,
        "the legacy `auto` maps to system; missing language takes its default"
    );
    let custom = app
        .text(
            "SELECT key || ' ' || value::text FROM custom_data WHERE user_id = $1",
            &[&user.id],
        )
        .await;
    assert_eq!(custom, r#"taskboard:layout {"columns": 3}"#);
}

#[tokio::test]
async fn manual_policy_queues_conflicts_and_each_resolution_writes_what_was_chosen() {
    let app = spawn_app().await;
    let user = app.user();
    let forms = |v: &str| {
        vec![
            (
                "formData:contact".to_owned(),
                format!(r#"{{"name":"{v}","savedAt":1700000000000}}"#),
            ),
            (
                "formData:signup".to_owned(),
                format!(r#"{{"email":"{v}@x","savedAt":1700000000000}}"#),
            ),
            (
                "formData:feedback".to_owned(),
                format!(r#"{{"text":"{v}","savedAt":1700000000000}}"#),
            ),
        ]
    };
    let send_forms = |v: &'static str| {
        let list = forms(v);
        let borrowed: Vec<(&str, &str)> =
            list.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Run::new().batch(&borrowed)
    };
    let first = app.send(&user.token, send_forms("stored")).await;
    assert_eq!(first.counts["form_drafts"][&O::Inserted], 3);
    let before = app
        .text(
            "SELECT string_agg(t::text, '|' ORDER BY id) FROM form_drafts t WHERE user_id = $1",
            &[&user.id],
        )
        .await;
    let second = app.send(&user.token, send_forms("incoming")).await;
    assert_eq!(
        second.counts["form_drafts"][&O::ConflictQueued],
        3,
        "{second:?}"
    );
    let after = app
        .text(
            "SELECT string_agg(t::text, '|' ORDER BY id) FROM form_drafts t WHERE user_id = $1",
            &[&user.id],
        )
        .await;
    assert_eq!(before, after, "manual: the stored rows are untouched");
    // The same incoming versions again do not ask twice.
    let third = app.send(&user.token, send_forms("incoming")).await;
    assert_eq!(third.counts["form_drafts"][&O::ConflictQueued], 3);

    let listed: Vec<Value> = app.get_json("/v1/conflicts", &user.token).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let conflict_for = |form: &str| {
        let id = target_id("form_drafts", form);
        listed
            .iter()
            .find(|c| c["row_id"] == json!(id))
            .unwrap_or_else(|| panic!("no conflict for {form}: {listed:?}"))
            .clone()
    };
    let contact = conflict_for("contact");
    assert_eq!(contact["kind"], "form_drafts");
    assert_eq!(contact["stored"]["data"]["name"], "stored");
    assert_eq!(contact["incoming"]["data"]["name"], "incoming");

    let resolve = |id: &Value, body: Value| {
        let path = format!("/v1/conflicts/{id}/resolve");
        let token = user.token.clone();
        let app = &app;
        async move { app.post_json_authed(&path, &token, &body).await }
    };
    let data_of = |form: &'static str| {
        let app = &app;
        let user_id = user.id;
        async move {
            app.text(
                "SELECT data::text FROM form_drafts WHERE user_id = $1 AND id = $2",
                &[&user_id, &target_id("form_drafts", form)],
            )
            .await
        }
    };
    let r = resolve(&contact["id"], json!({"choice": "stored"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        data_of("contact").await,
        r#"{"name": "stored", "savedAt": 1700000000000}"#
    );

    let r = resolve(&conflict_for("signup")["id"], json!({"choice": "incoming"})).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    assert_eq!(
        data_of("signup").await,
        r#"{"email": "incoming@x", "savedAt": 1700000000000}"#
    );

    let feedback = conflict_for("feedback");
    let bad = resolve(
        &feedback["id"],
        json!({"choice": "edited", "value": {"updated_at": "yesterday"}}),
    )
    .await;
    let body = expect_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert_eq!(body["error"]["details"]["column"], "updated_at", "{body}");
    // The engine's own rule and wording (ferry_core::pipeline::check_stored_value).
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the edited value: field `savedAt` is not a valid timestamp"),
        "{body}"
    );
    let unknown = resolve(
        &feedback["id"],
        json!({"choice": "edited", "value": {"user_id": "x"}}),
    )
    .await;
    expect_error(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = resolve(
        &feedback["id"],
        json!({"choice": "edited", "value": {"data": {"text": "merged by hand"}, "updated_at": "2024-05-01T10:00:00Z"}}),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    assert_eq!(data_of("feedback").await, r#"{"text": "merged by hand"}"#);

    // Resolved once only; nothing open remains; the choices are auditable.
    let again = resolve(&contact["id"], json!({"choice": "incoming"})).await;
    expect_error(again, StatusCode::CONFLICT, "already_resolved").await;
    let listed: Vec<Value> = app.get_json("/v1/conflicts", &user.token).await;
    assert!(listed.is_empty(), "{listed:?}");
    let statuses = app
        .text("SELECT string_agg(status, ',' ORDER BY status) FROM ferry_conflicts WHERE user_id = $1", &[&user.id])
        .await;
    assert_eq!(statuses, "edited,kept_stored,took_incoming");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_before_images WHERE user_id = $1 AND before IS NOT NULL",
            &[&user.id]
        )
        .await,
        2,
        "incoming and edited kept the row's before-image"
    );
}

#[tokio::test]
async fn the_same_batch_three_times_and_ten_concurrent_copies_apply_once() {
    let app = spawn_app().await;
    let user = app.user();
    let run = Run::new();
    let list: Vec<Value> = (0..50)
        .map(|i| task(Uuid::new_v4(), &format!("t{i}"), "2024-02-01T00:00:00Z"))
        .collect();
    let body = run.batch(&[("tasks", &tasks(&list)), ("environments", "not json")]);
    let first = app.send(&user.token, body.clone()).await;
    assert!(!first.replay);
    for _ in 0..2 {
        let again = app.send(&user.token, body.clone()).await;
        assert!(again.replay);
        assert_eq!(again.outcomes, first.outcomes);
        assert_eq!(again.counts, first.counts);
    }
    // The ledger keeps only the lines that were not inserted (the quarantined one); an answer
    // stored whole, as older servers did, is replayed as it was.
    let stored: Value = serde_json::from_str(
        &app.text(
            "SELECT response::text FROM ferry_ingest_ledger WHERE migration_id = $1",
            &[&run.migration_id],
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        stored["others"].as_array().map(Vec::len),
        Some(1),
        "{stored}"
    );
    assert_eq!(stored["others"][0]["outcome"], "quarantined", "{stored}");
    let whole = serde_json::to_value(&first).unwrap();
    app.db
        .execute(
            "UPDATE ferry_ingest_ledger SET response = $2 WHERE migration_id = $1",
            &[&run.migration_id, &whole],
        )
        .await
        .unwrap();
    let again = app.send(&user.token, body.clone()).await;
    assert!(again.replay);
    assert_eq!(again.outcomes, first.outcomes);
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        50
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_quarantine WHERE user_id = $1",
            &[&user.id]
        )
        .await,
        1
    );

    // Ten copies of another batch at once.
    let concurrent = Run::new();
    let list: Vec<Value> = (0..50)
        .map(|i| task(Uuid::new_v4(), &format!("c{i}"), "2024-02-01T00:00:00Z"))
        .collect();
    let body = concurrent.batch(&[("tasks", &tasks(&list))]);
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/v1/batches");
            let token = user.token.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response
                    .json::<ferry_server::ingest::BatchResult>()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    assert_eq!(
        results.iter().filter(|r| !r.replay).count(),
        1,
        "exactly one application"
    );
    for r in &results {
        assert_eq!(r.outcomes, results[0].outcomes);
        assert!(r.outcomes.iter().all(|o| o.outcome == O::Inserted));
    }
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        100
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1",
            &[&user.id]
        )
        .await,
        2
    );

    // The same key with different content is refused, and changes nothing.
    let changed = concurrent.batch(&[("tasks", &tasks(&list[..49]))]);
    let refused = app.post_batch(&user.token, changed).await;
    expect_error(refused, StatusCode::CONFLICT, "idempotency_conflict").await;
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        100
    );
}

#[tokio::test]
async fn a_user_cannot_touch_another_users_rows_whatever_the_batch_says() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user(), app.user());
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let bob_run = Run::new();
    let bob_tasks: Vec<Value> = ids
        .iter()
        .map(|id| task(*id, "bob's", "2024-02-01T00:00:00Z"))
        .collect();
    app.send(&bob.token, bob_run.batch(&[("tasks", &tasks(&bob_tasks))]))
        .await;
    let bob_rows = app
        .text(
            "SELECT string_agg(t::text, '|' ORDER BY id) FROM tasks t WHERE user_id = $1",
            &[&bob.id],
        )
        .await;

    // Alice sends Bob's ids, a forged user_id in every record, and a newer version; she even
    // reuses Bob's migration id.
    let forged: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut t = task(*id, "alice's", "2025-01-01T00:00:00Z");
            t["user_id"] = json!(bob.id);
            t["userId"] = json!(bob.id);
            t
        })
        .collect();
    let mut alice_run = Run::new();
    alice_run.migration_id = bob_run.migration_id;
    let result = app
        .send(&alice.token, alice_run.batch(&[("tasks", &tasks(&forged))]))
        .await;
    assert!(
        result.outcomes.iter().all(|o| o.outcome == O::Inserted),
        "alice gets her own rows: {result:?}"
    );
    assert_eq!(
        app.text(
            "SELECT string_agg(t::text, '|' ORDER BY id) FROM tasks t WHERE user_id = $1",
            &[&bob.id]
        )
        .await,
        bob_rows,
        "Bob's rows are unchanged"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND title = 'alice''s'",
            &[&alice.id]
        )
        .await,
        3
    );

    // Bob's migration, conflicts and backups are invisible to Alice: 404, like nothing.
    let other_run = Run::new();
    app.send(&bob.token, other_run.batch(&[("formData:x", r#"{"a":1}"#)]))
        .await;
    app.send(
        &bob.token,
        Run::new().batch(&[("formData:x", r#"{"a":2}"#)]),
    )
    .await;
    let bob_conflicts: Vec<Value> = app.get_json("/v1/conflicts", &bob.token).await;
    assert_eq!(bob_conflicts.len(), 1);
    let conflict_id = &bob_conflicts[0]["id"];
    let alice_conflicts: Vec<Value> = app.get_json("/v1/conflicts", &alice.token).await;
    assert!(alice_conflicts.is_empty());
    let r = app
        .post_json_authed(
            &format!("/v1/conflicts/{conflict_id}/resolve"),
            &alice.token,
            &json!({"choice": "incoming"}),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .get_authed(
            &format!("/v1/migrations/{}", other_run.migration_id),
            &alice.token,
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let before = app
        .text(
            "SELECT string_agg(t::text, '|' ORDER BY id) FROM form_drafts t",
            &[],
        )
        .await;
    let r = app.rollback(&alice.token, other_run.migration_id).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        app.text(
            "SELECT string_agg(t::text, '|' ORDER BY id) FROM form_drafts t",
            &[]
        )
        .await,
        before
    );
    assert_eq!(
        app.text(
            "SELECT status FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
            &[&bob.id, &other_run.migration_id]
        )
        .await,
        "running"
    );
    // The shared migration id: Alice's rollback restores only her rows.
    let r = app.rollback(&alice.token, bob_run.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1",
            &[&alice.id]
        )
        .await,
        0
    );
    assert_eq!(
        app.text(
            "SELECT string_agg(t::text, '|' ORDER BY id) FROM tasks t WHERE user_id = $1",
            &[&bob.id]
        )
        .await,
        bob_rows
    );
    assert_eq!(
        app.text(
            "SELECT status FROM ferry_conflicts WHERE id = $1",
            &[&conflict_id.as_i64().unwrap()]
        )
        .await,
        "open"
    );
}

/// Statements executed in the test's database, from pg_stat_statements (minus our own reads).
async fn statements(app: &crate::helpers::TestApp) -> i64 {
    app.executed_statements().await.values().sum()
}

#[tokio::test]
async fn a_batch_runs_the_same_number_of_statements_for_20_and_2000_records() {
    let app = spawn_app().await;
    let user = app.user();
    let mut measured = Vec::new();
    for n in [20usize, 2000] {
        // Valid tasks, a rejected one, an environment and a draft: n records in all.
        let run = Run::new();
        let list: Vec<Value> = (0..n - 3)
            .map(|i| task(Uuid::new_v4(), &format!("t{i}"), "2024-02-01T00:00:00Z"))
            .collect();
        let mut with_bad = list.clone();
        with_bad.push(json!({"id": Uuid::new_v4(), "status": "todo"}));
        let body = run.batch(&[
            ("tasks", &tasks(&with_bad)),
            ("environments", r#"[{"id":"prod","name":"P","config":{}}]"#),
            ("formData:f", r#"{"a":1}"#),
        ]);
        let before = statements(&app).await;
        let started = Instant::now();
        let result = app.send(&user.token, body).await;
        let elapsed = started.elapsed();
        let after = statements(&app).await;
        assert_eq!(result.outcomes.len(), n);
        assert_eq!(result.counts["tasks"][&O::Inserted], n as u64 - 3);
        assert_eq!(result.counts["tasks"][&O::Quarantined], 1);
        println!(
            "{n} records: {} statements, {:.0} ms, {:.0} records/s",
            after - before,
            elapsed.as_secs_f64() * 1000.0,
            n as f64 / elapsed.as_secs_f64()
        );
        measured.push(after - before);
    }
    assert_eq!(
        measured[0], measured[1],
        "statements for 20 vs 2000 records: {measured:?}"
    );
    assert!(measured[0] > 0 && measured[0] < 20, "{measured:?}");
}

#[tokio::test]
async fn rejected_records_are_quarantined_with_their_raw_value_and_reasons() {
    let app = spawn_app().await;
    let user = app.user();
    let run = Run::new();
    let good = Uuid::new_v4();
    let raw_bad = r#"{"id":"4f8d1c9e-0000-4000-8000-000000000001","status":"todo","createdAt":"2024-01-01T00:00:00Z"}"#;
    let (records, batches) = run.batches(&pairs(&[
        (
            "tasks",
            &format!("[{},{raw_bad}]", task(good, "ok", "2024-02-01T00:00:00Z")),
        ),
        ("userPreferences", "{not json"),
    ]));
    // As an older browser sent it (`ferry-batch/1`, a hash per record), and one record whose
    // raw value the client altered after hashing: the server's own check rejects that one.
    let body = crate::helpers::as_v1(&batches[0].body, &records);
    let mut tampered: Value = serde_json::from_slice(&body).unwrap();
    let tampered_id = Uuid::new_v4();
    let mut extra = tampered["records"][0].clone();
    extra["raw"]["json"] = json!(task(tampered_id, "tampered", "2024-02-01T00:00:00Z").to_string());
    extra["id"] = json!(tampered_id);
    tampered["records"].as_array_mut().unwrap().push(extra);
    let result = app
        .send(&user.token, serde_json::to_vec(&tampered).unwrap())
        .await;
    assert_eq!(outcome_of(&result, good), O::Inserted);
    let quarantined: Vec<_> = result
        .outcomes
        .iter()
        .filter(|o| o.outcome == O::Quarantined)
        .collect();
    assert_eq!(quarantined.len(), 3, "{result:?}");
    assert!(quarantined.iter().all(|o| !o.reasons.is_empty()));
    let rows = app
        .db
        .query("SELECT kind, key, raw_value, reasons::text FROM ferry_quarantine WHERE user_id = $1 ORDER BY id", &[&user.id])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let find = |kind: &str| {
        rows.iter()
            .filter(|r| r.get::<_, String>(0) == kind)
            .collect::<Vec<_>>()
    };
    let bad_task = find("tasks")
        .into_iter()
        .find(|r| r.get::<_, String>(2).contains("4f8d1c9e"))
        .unwrap();
    assert!(
        bad_task.get::<_, String>(3).contains("title"),
        "{}",
        bad_task.get::<_, String>(3)
    );
    let prefs = &find("preferences")[0];
    assert_eq!(prefs.get::<_, String>(1), "userPreferences");
    assert_eq!(
        prefs.get::<_, String>(2),
        "{not json",
        "the raw value, exactly"
    );
    let tampered_row = find("tasks")
        .into_iter()
        .find(|r| r.get::<_, String>(2).contains("tampered"))
        .unwrap();
    assert!(
        tampered_row.get::<_, String>(3).contains("altered client"),
        "{}",
        tampered_row.get::<_, String>(3)
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        1
    );
}

/// `ferry-batch/2` carries one digest of the records' hashes: a record altered after hashing
/// makes the server's digest differ, and every record of the list goes to the quarantine with
/// the reason (none is written; the browser's own rejected records are quarantined as usual).
/// The same records as `ferry-batch/1` and as `/2` give the same outcomes and report.
#[tokio::test]
async fn a_batch_whose_records_do_not_match_its_digest_is_quarantined_not_written() {
    let app = spawn_app().await;
    let user = app.user();
    let run = Run::new();
    let good = Uuid::new_v4();
    let body = run.batch(&[(
        "tasks",
        &format!(
            "[{},{}]",
            task(good, "ok", "2024-02-01T00:00:00Z"),
            json!({"id": Uuid::new_v4(), "status": "todo"})
        ),
    )]);
    let mut tampered: Value = serde_json::from_slice(&body).unwrap();
    assert!(tampered["records"][0].get("hash").is_none(), "{tampered}");
    let raw = tampered["records"][0]["raw"]["json"]
        .as_str()
        .unwrap()
        .to_owned();
    tampered["records"][0]["raw"]["json"] = json!(raw.replace("\"ok\"", "\"changed\""));
    let result = app
        .send(&user.token, serde_json::to_vec(&tampered).unwrap())
        .await;
    assert_eq!(outcome_of(&result, good), O::Quarantined, "{result:?}");
    assert_eq!(result.counts["tasks"][&O::Quarantined], 2, "{result:?}");
    let reasons = app
        .texts(
            "SELECT reasons::text FROM ferry_quarantine WHERE user_id = $1 ORDER BY id",
            &[&user.id],
        )
        .await;
    assert!(reasons[0].contains("digest"), "{reasons:?}");
    assert!(reasons[1].contains("title"), "{reasons:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        0
    );

    // The untouched records, once as /1 (another user) and once as /2: the same answer.
    let tasks_json = tasks(&[
        task(Uuid::new_v4(), "a", "2024-02-01T00:00:00Z"),
        task(Uuid::new_v4(), "b", "2024-02-01T00:00:00Z"),
    ]);
    let (records, batches) = run.batches(&pairs(&[("tasks", &tasks_json)]));
    let (older, newer) = (app.user(), app.user());
    let v1 = app
        .send(
            &older.token,
            crate::helpers::as_v1(&batches[0].body, &records),
        )
        .await;
    let v2 = app.send(&newer.token, batches[0].body.clone()).await;
    assert_eq!(v1.counts, v2.counts);
    assert_eq!(
        v1.outcomes.iter().map(|o| &o.hash).collect::<Vec<_>>(),
        v2.outcomes.iter().map(|o| &o.hash).collect::<Vec<_>>()
    );
    assert_eq!(v2.counts["tasks"][&O::Inserted], 2);
}

#[tokio::test]
async fn strings_with_lone_surrogates_nul_and_emoji_round_trip_exactly() {
    let app = spawn_app().await;
    let user = app.user();
    let id = Uuid::new_v4();
    // What JSON.stringify writes for a title holding a lone surrogate, a NUL and an emoji.
    let stored = format!(
        r#"[{{"id":"{id}","title":"a\ud800b\u0000c😀\uffff","status":"done","createdAt":"2024-01-01T00:00:00Z"}}]"#
    );
    let result = app
        .send(&user.token, Run::new().batch(&[("tasks", &stored)]))
        .await;
    assert_eq!(outcome_of(&result, id), O::Inserted, "{result:?}");
    let title = app
        .text(
            "SELECT title FROM tasks WHERE user_id = $1 AND id = $2",
            &[&user.id, &id],
        )
        .await;
    let mut units: Vec<u16> = "a".encode_utf16().collect();
    units.push(0xD800);
    units.extend("b".encode_utf16());
    units.push(0);
    units.extend("c😀".encode_utf16());
    units.push(0xFFFF);
    let expected = ferry_core::lossless::LosslessString::from_utf16(&units);
    assert_eq!(title, expected.as_escaped());
    assert_eq!(
        ferry_core::lossless::LosslessString::from_escaped(title)
            .unwrap()
            .to_utf16(),
        units
    );
}

#[tokio::test]
async fn the_report_matches_what_the_client_shipped_even_after_replays() {
    let app = spawn_app().await;
    let user = app.user();
    let run = Run::new();
    let list: Vec<Value> = (0..30)
        .map(|i| task(Uuid::new_v4(), &format!("t{i}"), "2024-02-01T00:00:00Z"))
        .collect();
    let kv = pairs(&[
        (
            "tasks",
            &format!("{},{{\"id\":1}}]", &tasks(&list)[..tasks(&list).len() - 1]),
        ),
        (
            "environments",
            r#"[{"id":"a","name":"A","config":{}},{"id":"b","config":{}}]"#,
        ),
        ("formData:x", r#"{"q":1}"#),
    ]);
    let (records, _) = run.batches(&kv);
    // Several batches: split them small.
    let batches = ferry_core::wire::build_batches(
        crate::helpers::demo_spec(),
        &run.header(),
        &records,
        0..records.len(),
        0,
        ferry_core::wire::BatchLimits {
            max_records: 7,
            max_bytes: 1 << 20,
        },
    );
    assert!(batches.len() > 3);
    for b in &batches {
        app.send(&user.token, b.body.clone()).await;
    }
    app.send(&user.token, batches[1].body.clone()).await; // a replay
    let report: Value = app
        .get_json(&format!("/v1/migrations/{}", run.migration_id), &user.token)
        .await;
    assert_eq!(report["batches"], batches.len());
    for kind in ["tasks", "environments", "form_drafts"] {
        let shipped: Vec<String> = batches
            .iter()
            .flat_map(|b| b.members.iter())
            .map(|&i| &records[i])
            .filter(|r| crate::helpers::demo_spec().kinds[r.kind].name == kind)
            .map(|r| r.hash.to_hex())
            .collect();
        let checksum =
            ferry_server::operator::report::xor_checksum(shipped.iter().map(String::as_str))
                .unwrap();
        assert_eq!(
            report["kinds"][kind]["received"],
            shipped.len(),
            "{kind}: {report}"
        );
        assert_eq!(
            report["kinds"][kind]["checksum"], checksum,
            "{kind}: {report}"
        );
    }
    assert_eq!(report["kinds"]["tasks"]["outcomes"]["inserted"], 30);
    assert_eq!(report["kinds"]["tasks"]["outcomes"]["quarantined"], 1);
    assert_eq!(
        report["kinds"]["environments"]["outcomes"]["quarantined"], 1,
        "{report}"
    );
}

#[tokio::test]
async fn bad_batches_are_refused_in_the_error_shape() {
    let app = spawn_app().await;
    let user = app.user();
    let r = app
        .post_batch(&user.token, br#"{"hello":"world"}"#.to_vec())
        .await;
    let body = expect_error(r, StatusCode::BAD_REQUEST, "invalid_batch").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ferry-batch/2"),
        "{body}"
    );
    // The hashes where the format does not put them: refused with what is wrong.
    let (records, batches) = Run::new().batches(&pairs(&[(
        "tasks",
        &tasks(&[task(Uuid::new_v4(), "a", "2024-02-01T00:00:00Z")]),
    )]));
    let v2: Value = serde_json::from_slice(&batches[0].body).unwrap();
    let v1: Value =
        serde_json::from_slice(&crate::helpers::as_v1(&batches[0].body, &records)).unwrap();
    let mut digest_in_v1 = v1.clone();
    digest_in_v1["header"]["digest"] = v2["header"]["digest"].clone();
    let mut hash_in_v2 = v2.clone();
    hash_in_v2["records"][0]["hash"] = v1["records"][0]["hash"].clone();
    let mut no_hash_in_v1 = v1.clone();
    no_hash_in_v1["records"][0]
        .as_object_mut()
        .unwrap()
        .remove("hash");
    for (batch, says) in [
        (digest_in_v1, "has a digest in its header"),
        (hash_in_v2, "carries a hash in record 0"),
        (no_hash_in_v1, "has no hash in record 0"),
    ] {
        let r = app
            .post_batch(&user.token, serde_json::to_vec(&batch).unwrap())
            .await;
        let body = expect_error(r, StatusCode::BAD_REQUEST, "invalid_batch").await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let r = app
        .post_batch(&user.token, b"not json at all".to_vec())
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_batch").await;

    let mut batch: Value =
        serde_json::from_slice(&Run::new().batch(&[("formData:x", "{}")])).unwrap();
    batch["header"]["spec_version"] = json!("1999.01");
    let r = app
        .post_batch(&user.token, serde_json::to_vec(&batch).unwrap())
        .await;
    let body = expect_error(r, StatusCode::BAD_REQUEST, "spec_mismatch").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1999.01"),
        "{body}"
    );

    let r = app
        .post_batch(
            &app.expired_token(user.id),
            Run::new().batch(&[("formData:x", "{}")]),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "token_expired").await;
    let big = vec![b' '; app.settings.body_limit_bytes + 1];
    let r = app.post_batch(&user.token, big).await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        app.count("SELECT count(*) FROM ferry_ingest_ledger", &[])
            .await,
        0
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        // The refusals above that reach the ingest: three before, three with hashes out of place.
        metrics.contains(r#"ferry_batches_total{outcome="refused"} 6"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_spec_endpoint_serves_the_spec_the_server_runs() {
    let app = spawn_app().await;
    let user = app.user();
    let r = app.get_authed("/v1/spec", &user.token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert_eq!(text, include_str!("../../../specs/taskboard.json"));
    let r = app.get("/v1/spec").await;
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_token").await;
}

/// A record sent again under another sequence (a resumed run planned anew) is received once:
/// one hash per migration and kind in `ferry_received`, with the outcome it had when it first
/// arrived, and the report counts it once. A batch that holds nothing new adds no row.
#[tokio::test]
async fn a_record_sent_again_in_a_later_batch_is_received_once_with_its_first_outcome() {
    let app = spawn_app().await;
    let user = app.user();
    let spec = crate::helpers::demo_spec();
    let run = Run::new();
    let a_legacy = Uuid::new_v4();
    let (a, b, c) = (
        task(a_legacy, "sent twice", "2024-02-01T00:00:00Z"),
        task(Uuid::new_v4(), "sent once", "2024-02-01T00:00:00Z"),
        task(Uuid::new_v4(), "sent later", "2024-02-01T00:00:00Z"),
    );
    let sent = [
        tasks(&[a.clone(), b]),
        tasks(&[a.clone(), c]),
        tasks(std::slice::from_ref(&a)),
    ];
    let mut outcomes = Vec::new();
    for (sequence, list) in (0..).zip(&sent) {
        let body = crate::helpers::batch_under(spec, &run, &[("tasks", list)], sequence);
        outcomes.push(app.send(&user.token, body).await);
    }
    let a_id = target_id("tasks", &a_legacy.to_string());
    assert_eq!(outcome_of(&outcomes[0], a_id), O::Inserted);
    assert_eq!(
        outcome_of(&outcomes[1], a_id),
        O::Unchanged,
        "the second copy changed nothing"
    );

    let received = app
        .texts(
            "SELECT outcome || ' ' || count(*) FROM ferry_received WHERE user_id = $1
              GROUP BY outcome ORDER BY 1",
            &[&user.id],
        )
        .await;
    assert_eq!(
        received,
        ["inserted 3"],
        "each record once, with its first outcome"
    );
    let rows = "SELECT count(*) FROM ferry_received_batches WHERE user_id = $1";
    assert_eq!(
        app.count(rows, &[&user.id]).await,
        2,
        "the third batch held nothing new"
    );
    let report: Value = app
        .get_json(&format!("/v1/migrations/{}", run.migration_id), &user.token)
        .await;
    assert_eq!(report["kinds"]["tasks"]["received"], 3, "{report}");
    assert_eq!(
        report["kinds"]["tasks"]["outcomes"]["inserted"], 3,
        "{report}"
    );
    assert_eq!(report["batches"], 3, "{report}");
}

/// A batch that lists one record twice (only a broken or hostile client sends that; its digest
/// then differs, so its records are quarantined) is received once per record all the same.
#[tokio::test]
async fn a_record_listed_twice_in_one_batch_is_received_once() {
    let app = spawn_app().await;
    let user = app.user();
    let spec = crate::helpers::demo_spec();
    let run = Run::new();
    let list = tasks(&[
        task(Uuid::new_v4(), "listed twice", "2024-02-01T00:00:00Z"),
        task(Uuid::new_v4(), "listed once", "2024-02-01T00:00:00Z"),
    ]);
    let body = crate::helpers::batch_under(spec, &run, &[("tasks", &list)], 0);
    let mut batch: Value = serde_json::from_slice(&body).unwrap();
    let first = batch["records"][0].clone();
    batch["records"].as_array_mut().unwrap().push(first);
    let result = app
        .send(&user.token, serde_json::to_vec(&batch).unwrap())
        .await;
    assert_eq!(result.outcomes.len(), 3, "{result:?}");
    let received = app
        .texts(
            "SELECT outcome || ' ' || count(*) || ' ' || count(DISTINCT hash) FROM ferry_received
              WHERE user_id = $1 GROUP BY outcome",
            &[&user.id],
        )
        .await;
    assert_eq!(received, ["quarantined 2 2"], "{result:?}");
}
