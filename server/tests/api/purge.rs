//! `ferry-server purge` (issue 16 §3): the bookkeeping of migrations verified longer ago than
//! the retention goes; nothing else does, nothing is lost and nothing is doubled afterwards.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use ferry_server::operator::cli::{CliError, purge_on};
use ferry_server::operator::fleet;
use ferry_server::operator::purge;

use crate::binary::ferry_server;
use crate::helpers::{Run, TestApp, User, expect_error, pairs, spawn_app};
use crate::run_status::{tallies, verify};

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
const RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// A migration that was sent (every batch's body kept, for replays) and maybe verified.
struct Migrated {
    run: Run,
    batches: Vec<Vec<u8>>,
    records: usize,
}

/// Sends `tasks` tasks, one task without a title (quarantined) and the preferences of `user`;
/// verifies the migration when `verified`.
async fn migrate(app: &TestApp, user: &User, tasks: usize, verified: bool) -> Migrated {
    let run = Run::new();
    let mut list: Vec<Value> = (0..tasks)
        .map(|i| {
            json!({"id": Uuid::new_v4(), "title": format!("task {i} of a purge test"), "status": "todo",
                   "tags": ["a", "b"], "createdAt": "2024-01-01T00:00:00Z"})
        })
        .collect();
    list.push(json!({"id": Uuid::new_v4(), "status": "todo", "createdAt": "2024-01-01T00:00:00Z"}));
    let (records, batches) = run.batches(&pairs(&[
        ("tasks", &Value::from(list).to_string()),
        ("userPreferences", r#"{"theme":"dark"}"#),
    ]));
    let batches: Vec<Vec<u8>> = batches.into_iter().map(|b| b.body).collect();
    for body in &batches {
        app.send(&user.token, body.clone()).await;
    }
    if verified {
        let r = verify(app, &user.token, &run, &tallies(&records)).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }
    Migrated {
        run,
        batches,
        records: records.len(),
    }
}

/// Moves the run's verification `days` days into the past.
async fn verified_days_ago(app: &TestApp, run: &Run, days: i32) {
    let changed = app
        .db
        .execute(
            "UPDATE ferry_migration_runs
                SET verified_at = now() - make_interval(days => $2),
                    finished_at = now() - make_interval(days => $2)
              WHERE migration_id = $1 AND verified_at IS NOT NULL",
            &[&run.migration_id, &days],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1, "the run {} is verified", run.migration_id);
}

/// The user's rows in the ledger, `ferry_received` and `ferry_before_images`, and the rows
/// recorded as created in `ferry_created_rows` (one array per batch and table).
async fn bookkeeping(app: &TestApp, user: Uuid) -> [i64; 4] {
    let mut counts = [0; 4];
    for (n, sql) in counts.iter_mut().zip([
        "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1",
        "SELECT count(*) FROM ferry_received WHERE user_id = $1",
        "SELECT count(*) FROM ferry_before_images WHERE user_id = $1",
        "SELECT coalesce(sum(cardinality(row_ids)), 0)::int8 FROM ferry_created_rows WHERE user_id = $1",
    ]) {
        *n = app.count(sql, &[&user]).await;
    }
    counts
}

async fn tasks_of(app: &TestApp, user: Uuid) -> String {
    app.text(
        "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY id), '') FROM tasks t WHERE user_id = $1",
        &[&user],
    )
    .await
}

async fn report(app: &TestApp, user: &User, run: &Run) -> Value {
    app.get_json(&format!("/v1/migrations/{}", run.migration_id), &user.token)
        .await
}

async fn rollback(app: &TestApp, user: &User, run: &Run) -> reqwest::Response {
    app.rollback(&user.token, run.migration_id).await
}

#[tokio::test]
async fn a_purge_removes_only_old_verified_bookkeeping_and_keeps_every_count() {
    let mut app = spawn_app().await;
    let (old, recent, running, undone) = (app.user(), app.user(), app.user(), app.user());
    let old_run = migrate(&app, &old, 30, true).await;
    verified_days_ago(&app, &old_run.run, 40).await;
    let recent_run = migrate(&app, &recent, 5, true).await;
    verified_days_ago(&app, &recent_run.run, 29).await;
    let running_run = migrate(&app, &running, 5, false).await;
    app.db
        .execute(
            "UPDATE ferry_migration_runs SET started_at = now() - interval '60 days' WHERE migration_id = $1",
            &[&running_run.run.migration_id],
        )
        .await
        .unwrap();
    let undone_run = migrate(&app, &undone, 5, true).await;
    verified_days_ago(&app, &undone_run.run, 40).await;
    assert_eq!(
        rollback(&app, &undone, &undone_run.run).await.status(),
        StatusCode::OK
    );
    // Half of the old run's records arrived three hours earlier: the trend has two hours.
    // The counts ingest kept for the summary move with them.
    app.db
        .batch_execute(&format!(
            "WITH b AS (DELETE FROM ferry_received_batches WHERE user_id = '{user}' RETURNING *),
                  r AS (SELECT b.user_id, b.migration_id, b.sequence, b.received_at, u.k, u.h, u.o
                          FROM b, unnest(b.kinds, b.hashes, b.outcomes) AS u(k, h, o))
             INSERT INTO ferry_received_batches (user_id, migration_id, sequence, kinds, hashes, outcomes, received_at)
             SELECT user_id, migration_id, sequence, array_agg(k), array_agg(h), array_agg(o),
                    received_at - CASE WHEN get_byte(h, 0) < 128 THEN interval '3 hours' ELSE interval '0' END
               FROM r GROUP BY user_id, migration_id, sequence, received_at, get_byte(h, 0) < 128;
             DELETE FROM ferry_received_counts WHERE user_id = '{user}';
             INSERT INTO ferry_received_counts (user_id, migration_id, kind, outcome, hour_utc, records)
             SELECT user_id, migration_id, kind, outcome, date_trunc('hour', received_at AT TIME ZONE 'UTC'), count(*)
               FROM ferry_received WHERE user_id = '{user}' GROUP BY 1, 2, 3, 4, 5",
            user = old.id
        ))
        .await
        .unwrap();

    let kept_users = [recent.id, running.id, undone.id];
    let mut kept_before = Vec::new();
    for user in kept_users {
        kept_before.push(bookkeeping(&app, user).await);
    }
    let old_before = bookkeeping(&app, old.id).await;
    // Into an empty table: every row is recorded as created, none has a before-image.
    assert!(
        old_before[0] > 0 && old_before[1] > 0 && old_before[2] == 0 && old_before[3] > 0,
        "{old_before:?}"
    );
    let summary_before = fleet::summary(&app.db, DAY).await.unwrap();
    assert!(summary_before.hours.len() >= 2, "{summary_before:?}");
    let report_before = report(&app, &old, &old_run.run).await;
    let tasks_before = tasks_of(&app, old.id).await;
    let quarantine = "SELECT count(*) FROM ferry_quarantine WHERE user_id = $1";
    let quarantined_before = app.count(quarantine, &[&old.id]).await;
    assert_eq!(quarantined_before, 1);

    // The dry run counts exactly the old run's bookkeeping and deletes nothing.
    let plan = purge::plan(&app.db, RETENTION).await.unwrap();
    assert_eq!(
        plan.purgeable,
        purge::PurgeCounts {
            users: 1,
            migrations: 1,
            ledger_answers: u64::try_from(old_before[0]).unwrap(),
            received_hashes: u64::try_from(old_before[1]).unwrap(),
            before_images: u64::try_from(old_before[2]).unwrap(),
            created_rows: u64::try_from(old_before[3]).unwrap(),
        }
    );
    assert_eq!(plan.verified_recently, 1, "the run verified 29 days ago");
    let mut said = Vec::new();
    purge_on(&mut app.db, RETENTION, true, false, |l| {
        said.push(l.to_owned())
    })
    .await
    .unwrap();
    let said = said.join("\n");
    assert!(
        said.contains("1 user(s), 1 migration(s)")
            && said.contains("can no longer be rolled back")
            && said.contains("dry run: nothing deleted"),
        "{said}"
    );
    // Without --yes: refused, nothing deleted.
    let refused = purge_on(&mut app.db, RETENTION, false, false, |_| {}).await;
    assert!(
        matches!(refused, Err(CliError::PurgeNotConfirmed)),
        "{refused:?}"
    );
    assert_eq!(
        bookkeeping(&app, old.id).await,
        old_before,
        "nothing deleted"
    );

    let mut said = Vec::new();
    purge_on(&mut app.db, RETENTION, false, true, |l| {
        said.push(l.to_owned())
    })
    .await
    .unwrap();
    let said = said.join("\n");
    assert!(said.contains("purged: 1 user(s), 1 migration(s)"), "{said}");
    assert_eq!(bookkeeping(&app, old.id).await, [0, 0, 0, 0]);
    assert_eq!(
        app.count(quarantine, &[&old.id]).await,
        quarantined_before,
        "the quarantine is kept"
    );
    assert_eq!(
        tasks_of(&app, old.id).await,
        tasks_before,
        "the rows are kept"
    );
    for (user, before) in kept_users.iter().zip(&kept_before) {
        assert_eq!(
            &bookkeeping(&app, *user).await,
            before,
            "recent, running and rolled-back runs are kept"
        );
    }
    let purged_at = app
        .text(
            "SELECT coalesce(purged_at::text, '') || ' ' || status FROM ferry_migration_runs WHERE migration_id = $1",
            &[&old_run.run.migration_id],
        )
        .await;
    assert!(
        purged_at.ends_with(" verified") && purged_at.len() > 10,
        "{purged_at}"
    );

    // The numbers are the same: the fleet summary and the run's report.
    assert_eq!(fleet::summary(&app.db, DAY).await.unwrap(), summary_before);
    assert_eq!(report(&app, &old, &old_run.run).await, report_before);

    // Rollback is refused, and changes nothing.
    let refused = rollback(&app, &old, &old_run.run).await;
    let body = expect_error(refused, StatusCode::CONFLICT, "migration_purged").await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("purged at") && message.contains("cannot be rolled back"),
        "{body}"
    );
    // A stale tab's late replay (first and last batch) is refused and writes nothing.
    for body in [
        &old_run.batches[0],
        &old_run.batches[old_run.batches.len() - 1],
    ] {
        let replay = app.post_batch(&old.token, body.clone()).await;
        expect_error(replay, StatusCode::CONFLICT, "migration_purged").await;
    }
    assert_eq!(tasks_of(&app, old.id).await, tasks_before);
    assert_eq!(
        bookkeeping(&app, old.id).await,
        [0, 0, 0, 0],
        "no ledger claim left"
    );
    assert_eq!(fleet::summary(&app.db, DAY).await.unwrap(), summary_before);

    // The run verified within the retention can still be rolled back; a second purge finds
    // nothing.
    assert_eq!(
        rollback(&app, &recent, &recent_run.run).await.status(),
        StatusCode::OK
    );
    let again = purge::purge(&mut app.db, RETENTION, None, |_| {})
        .await
        .unwrap();
    assert_eq!(again, purge::PurgeCounts::default());
}

#[tokio::test]
async fn a_purged_migration_verifies_again_with_the_same_tallies() {
    let mut app = spawn_app().await;
    let user = app.user();
    let run = Run::new();
    let tasks: Vec<Value> = (0..12)
        .map(|i| json!({"id": Uuid::new_v4(), "title": format!("t{i}"), "status": "todo", "createdAt": "2024-01-01T00:00:00Z"}))
        .collect();
    let (records, batches) = run.batches(&pairs(&[("tasks", &Value::from(tasks).to_string())]));
    for b in batches {
        app.send(&user.token, b.body).await;
    }
    let sent = tallies(&records);
    assert_eq!(
        verify(&app, &user.token, &run, &sent).await.status(),
        StatusCode::OK
    );
    verified_days_ago(&app, &run, 31).await;
    let done = purge::purge(&mut app.db, RETENTION, None, |_| {})
        .await
        .unwrap();
    assert_eq!(done.migrations, 1);
    let again = verify(&app, &user.token, &run, &sent).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "{}",
        again.text().await.unwrap()
    );
}

/// Every bookkeeping table: what replays, rollback, the report and the fleet summary read.
const BOOKKEEPING: [&str; 9] = [
    "ferry_ingest_ledger",
    "ferry_received_batches",
    "ferry_before_image_rows",
    "ferry_before_image_batches",
    "ferry_created_rows",
    "ferry_received_rollup",
    "ferry_received_counts",
    "ferry_quarantine_counts",
    "ferry_rejection_counts",
];

/// `pg_total_relation_size` of every bookkeeping table: (table, bytes).
async fn bookkeeping_bytes(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut sizes = Vec::new();
    for table in BOOKKEEPING {
        let bytes = app
            .count(&format!("SELECT pg_total_relation_size('{table}')"), &[])
            .await;
        sizes.push((table, bytes));
    }
    sizes
}

fn per_record(sizes: &[(&str, i64)], records: usize) -> f64 {
    let total: i64 = sizes.iter().map(|(_, b)| b).sum();
    total as f64 / records as f64
}

#[tokio::test]
async fn bookkeeping_bytes_per_record_fall_after_a_purge() {
    let mut app = spawn_app().await;
    let mut records = 0;
    for _ in 0..4 {
        let user = app.user();
        let m = migrate(&app, &user, 800, true).await;
        verified_days_ago(&app, &m.run, 31).await;
        records += m.records;
    }
    let tables = BOOKKEEPING.join(", ");
    app.db
        .batch_execute(&format!("VACUUM {tables}"))
        .await
        .unwrap();
    let before = bookkeeping_bytes(&app).await;
    let done = purge::purge(&mut app.db, RETENTION, None, |_| {})
        .await
        .unwrap();
    assert_eq!(done.users, 4);
    // Space freed by a DELETE is reused by later rows; a plain VACUUM returns the heap's
    // empty tail to the system, VACUUM FULL rewrites tables and indexes.
    app.db
        .batch_execute(&format!("VACUUM {tables}"))
        .await
        .unwrap();
    let after = bookkeeping_bytes(&app).await;
    app.db
        .batch_execute(&format!("VACUUM FULL {tables}"))
        .await
        .unwrap();
    let after_full = bookkeeping_bytes(&app).await;
    println!("bookkeeping bytes for {records} migrated records (pg_total_relation_size):");
    for (label, sizes) in [
        ("before purge", &before),
        ("after purge + VACUUM", &after),
        ("after VACUUM FULL", &after_full),
    ] {
        println!(
            "  {label:<22} {:>9.1} bytes/record  {sizes:?}",
            per_record(sizes, records)
        );
    }
    assert!(records >= 3000, "{records}");
    assert!(
        per_record(&after, records) < per_record(&before, records),
        "{after:?} vs {before:?}"
    );
    assert!(
        per_record(&after_full, records) < per_record(&after, records),
        "{after_full:?} vs {after:?}"
    );
}

#[tokio::test]
async fn purge_and_a_refused_rollback_through_the_binary() {
    let app = spawn_app().await;
    let Some(url) = app.conninfo.clone() else {
        return;
    };
    let user = app.user();
    let m = migrate(&app, &user, 3, true).await;
    verified_days_ago(&app, &m.run, 40).await;
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = ferry_server(args);
        command.env("DATABASE_URL", &url);
        for (k, v) in env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let (ok, text) = run(&["purge", "--dry-run"], &[]);
    assert!(ok && text.contains("1 user(s), 1 migration(s)"), "{text}");
    // FERRY_PURGE_AFTER sets the retention: 60 days keeps the run.
    let (ok, text) = run(&["purge", "--dry-run"], &[("FERRY_PURGE_AFTER", "60d")]);
    assert!(ok && text.contains("0 user(s), 0 migration(s)"), "{text}");
    let (ok, text) = run(&["purge", "--older-than", "30x"], &[]);
    assert!(!ok && text.contains("\"30x\""), "{text}");
    let (ok, text) = run(&["purge"], &[]);
    assert!(!ok && text.contains("--yes"), "{text}");
    assert!(bookkeeping(&app, user.id).await[0] > 0, "nothing deleted");
    let (ok, text) = run(&["purge", "--yes"], &[]);
    assert!(ok && text.contains("purged: 1 user(s)"), "{text}");
    let (ok, text) = run(
        &[
            "rollback",
            "--migration",
            &m.run.migration_id.to_string(),
            "--user",
            &user.id.to_string(),
        ],
        &[],
    );
    assert!(!ok && text.contains("purged at"), "{text}");
    let (ok, text) = run(&["status", "--user", &user.id.to_string()], &[]);
    assert!(
        ok && text.contains("can no longer be rolled back") && text.contains("batches 1"),
        "the run says it was purged and keeps its batch count: {text}"
    );
}

#[tokio::test]
async fn a_conflict_of_a_purged_migration_is_still_resolved_and_leaves_no_before_image() {
    let mut app = spawn_app().await;
    let user = app.user();
    app.send(
        &user.token,
        Run::new().batch(&[("formData:f", r#"{"v":1}"#)]),
    )
    .await;
    // The second migration's draft differs from the stored one: a manual conflict, still open
    // when the migration is verified and, a month later, purged.
    let second = Run::new();
    let (records, batches) = second.batches(&pairs(&[("formData:f", r#"{"v":2}"#)]));
    for b in batches {
        app.send(&user.token, b.body).await;
    }
    let r = verify(&app, &user.token, &second, &tallies(&records)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let open: Vec<Value> = app.get_json("/v1/conflicts", &user.token).await;
    assert_eq!(open.len(), 1, "{open:?}");
    verified_days_ago(&app, &second, 40).await;
    let done = purge::purge(&mut app.db, RETENTION, None, |_| {})
        .await
        .unwrap();
    assert_eq!(done.migrations, 1);

    let r = app
        .post_json_authed(
            &format!("/v1/conflicts/{}/resolve", open[0]["id"]),
            &user.token,
            &json!({"choice": "incoming"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(
        app.text(
            "SELECT data::text FROM form_drafts WHERE user_id = $1",
            &[&user.id]
        )
        .await,
        r#"{"v": 2}"#,
        "the user's choice is written"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_before_images WHERE user_id = $1 AND migration_id = $2",
            &[&user.id, &second.migration_id],
        )
        .await,
        0,
        "no bookkeeping grows back for a purged migration"
    );
}

#[tokio::test]
async fn replays_racing_a_purge_are_answered_or_refused_and_nothing_is_written_twice() {
    let app = spawn_app().await;
    let user = app.user();
    let m = migrate(&app, &user, 200, true).await;
    verified_days_ago(&app, &m.run, 40).await;
    let summary_before = fleet::summary(&app.db, DAY).await.unwrap();
    let tasks_before = tasks_of(&app, user.id).await;
    let mut purger = ferry_server::db::connect(&app.db_config).await.unwrap();

    let replays = async {
        let mut answers = Vec::new();
        for _ in 0..6 {
            for body in &m.batches {
                let r = app.post_batch(&user.token, body.clone()).await;
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                answers.push((status, body));
            }
        }
        answers
    };
    let (purged, answers) =
        tokio::join!(purge::purge(&mut purger, RETENTION, None, |_| {}), replays);
    assert_eq!(purged.unwrap().migrations, 1);
    for (status, body) in &answers {
        let ok = (*status == StatusCode::OK && body["replay"] == true)
            || (*status == StatusCode::CONFLICT && body["error"]["code"] == "migration_purged");
        assert!(ok, "{status}: {body}");
    }
    assert_eq!(bookkeeping(&app, user.id).await, [0, 0, 0, 0]);
    assert_eq!(tasks_of(&app, user.id).await, tasks_before);
    assert_eq!(fleet::summary(&app.db, DAY).await.unwrap(), summary_before);
}

#[tokio::test]
async fn a_purge_works_through_pgbouncer_transaction_pooling() {
    let (app, bouncer) = crate::pgbouncer::app_behind_bouncer(5_000).await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let user = app.user();
        let m = migrate(&app, &user, 20, true).await;
        verified_days_ago(&app, &m.run, 40).await;
        runs.push((user, m));
    }
    let summary_before = fleet::summary(&app.db, DAY).await.unwrap();
    let mut through = ferry_server::db::connect(&bouncer.config()).await.unwrap();
    let plan = purge::plan(&through, RETENTION).await.unwrap();
    assert_eq!((plan.purgeable.users, plan.purgeable.migrations), (3, 3));
    let done = purge::purge(
        &mut through,
        RETENTION,
        Some(std::time::Duration::from_secs(5)),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(done, plan.purgeable);
    for (user, m) in &runs {
        assert_eq!(bookkeeping(&app, user.id).await, [0, 0, 0, 0]);
        let replay = app.post_batch(&user.token, m.batches[0].clone()).await;
        expect_error(replay, StatusCode::CONFLICT, "migration_purged").await;
    }
    assert_eq!(fleet::summary(&app.db, DAY).await.unwrap(), summary_before);
}
