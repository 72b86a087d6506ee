//! Migration runs tell the truth (issue 12 §5): the browser's verification marks its run
//! verified on the server, once; a rolled-back run cannot be verified; a run with no batch for
//! the threshold shows as abandoned; `ferry-server status` counts runs by state.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::contract::{KindTally, VerifyRequest};
use ferry_core::pipeline::{ContentHash, Record};
use ferry_server::operator::report::{self, RunState};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::binary::ferry_server;
use crate::helpers::{Run, TestApp, demo_spec, expect_error, pairs, spawn_app};

/// What a browser sent of `records`: per kind, the distinct hashes' count and XOR.
pub(crate) fn tallies(records: &[Record]) -> VerifyRequest {
    let mut seen = std::collections::BTreeSet::new();
    let mut kinds: BTreeMap<String, (u64, [u8; 16])> = BTreeMap::new();
    for r in records {
        if !seen.insert(r.hash) {
            continue;
        }
        let e = kinds
            .entry(demo_spec().kinds[r.kind].name.clone())
            .or_default();
        e.0 += 1;
        for (c, h) in e.1.iter_mut().zip(r.hash.0) {
            *c ^= h;
        }
    }
    VerifyRequest {
        kinds: kinds
            .into_iter()
            .map(|(k, (received, x))| {
                let checksum = ContentHash(x).to_hex();
                (k, KindTally { received, checksum })
            })
            .collect(),
    }
}

/// Sends a small migration (three tasks, one without a title, and preferences) and returns
/// its run, what the browser would verify, and its batch count.
async fn migrate(app: &TestApp, token: &str) -> (Run, VerifyRequest, usize) {
    let run = Run::new();
    let tasks = json!([
        {"id": Uuid::new_v4(), "title": "a", "status": "todo", "createdAt": "2024-01-01T00:00:00Z"},
        {"id": Uuid::new_v4(), "title": "b", "status": "todo", "createdAt": "2024-01-01T00:00:00Z"},
        {"id": Uuid::new_v4(), "status": "todo", "createdAt": "2024-01-01T00:00:00Z"},
    ]);
    let (records, batches) = run.batches(&pairs(&[
        ("tasks", &tasks.to_string()),
        ("userPreferences", r#"{"theme":"dark"}"#),
    ]));
    let n = batches.len();
    for b in batches {
        app.send(token, b.body).await;
    }
    (run, tallies(&records), n)
}

pub(crate) async fn verify(
    app: &TestApp,
    token: &str,
    run: &Run,
    sent: &VerifyRequest,
) -> reqwest::Response {
    let body = serde_json::to_value(sent).unwrap();
    app.post_json_authed(
        &format!("/v1/migrations/{}/verify", run.migration_id),
        token,
        &body,
    )
    .await
}

/// The run row: status, finished_at, verified_at (text), verified records and batches.
async fn run_row(
    app: &TestApp,
    user: Uuid,
    run: &Run,
) -> (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
) {
    let row = app
        .db
        .query_one(
            "SELECT status, finished_at::text, verified_at::text, verified_records, verified_batches
               FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
            &[&user, &run.migration_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

#[tokio::test]
async fn verification_marks_the_run_verified_once_with_its_time_and_counts() {
    let app = spawn_app().await;
    let user = app.user();
    let (run, sent, batches) = migrate(&app, &user.token).await;
    assert_eq!(run_row(&app, user.id, &run).await.0, "running");

    let r = verify(&app, &user.token, &run, &sent).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["status"], "verified", "{answer}");
    let (status, finished, verified_at, records, batch_count) = run_row(&app, user.id, &run).await;
    assert_eq!(status, "verified");
    assert!(finished.is_some() && verified_at.is_some());
    assert_eq!(records, Some(4), "three tasks and the preferences");
    assert_eq!(batch_count, Some(i64::try_from(batches).unwrap()));

    // Again (a browser that crashed before it noted the answer): the same answer, no change.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = verify(&app, &user.token, &run, &sent).await;
    assert_eq!(r.status(), StatusCode::OK);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again, answer);
    assert_eq!(
        run_row(&app, user.id, &run).await.2,
        verified_at,
        "verified once"
    );
    let report: Value = app
        .get_json(&format!("/v1/migrations/{}", run.migration_id), &user.token)
        .await;
    assert_eq!(report["status"], "verified");

    // Rolled back later: the run says so, and keeps what was verified.
    let r = app.rollback(&user.token, run.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _, kept_at, kept_records, _) = run_row(&app, user.id, &run).await;
    assert_eq!(status, "rolled_back");
    assert_eq!((kept_at, kept_records), (verified_at, Some(4)));
    expect_error(
        verify(&app, &user.token, &run, &sent).await,
        StatusCode::CONFLICT,
        "migration_rolled_back",
    )
    .await;
}

#[tokio::test]
async fn verification_with_other_tallies_is_refused_and_the_run_keeps_running() {
    let app = spawn_app().await;
    let user = app.user();
    let (run, sent, _) = migrate(&app, &user.token).await;
    let mut wrong = sent.clone();
    if let Some(t) = wrong.kinds.get_mut("tasks") {
        t.received += 1;
    }
    let mut missing = sent.clone();
    assert!(missing.kinds.remove("preferences").is_some());
    let mut altered = sent.clone();
    if let Some(t) = altered.kinds.get_mut("tasks") {
        t.checksum = "0".repeat(32);
    }
    // Each case with why it must not verify.
    for (case, why) in [
        (wrong, "one record more than the server received"),
        (
            missing,
            "a kind the server received is not in the browser's tallies",
        ),
        (altered, "same count, other content"),
    ] {
        let body = expect_error(
            verify(&app, &user.token, &run, &case).await,
            StatusCode::CONFLICT,
            "verification_mismatch",
        )
        .await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("kind"),
            "{why}: {body}"
        );
        assert_eq!(run_row(&app, user.id, &run).await.0, "running", "{why}");
    }
    let mut bad = sent.clone();
    if let Some(t) = bad.kinds.get_mut("tasks") {
        t.checksum = "not hex, and long enough to be a pasted secret".to_owned();
    }
    expect_error(
        verify(&app, &user.token, &run, &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn a_rolled_back_migration_cannot_be_verified_and_another_users_is_not_found() {
    let app = spawn_app().await;
    let user = app.user();
    let (run, sent, _) = migrate(&app, &user.token).await;
    let r = app.rollback(&user.token, run.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    expect_error(
        verify(&app, &user.token, &run, &sent).await,
        StatusCode::CONFLICT,
        "migration_rolled_back",
    )
    .await;
    assert_eq!(run_row(&app, user.id, &run).await.0, "rolled_back");

    let (other_run, other_sent, _) = migrate(&app, &user.token).await;
    let stranger = app.user();
    expect_error(
        verify(&app, &stranger.token, &other_run, &other_sent).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(run_row(&app, user.id, &other_run).await.0, "running");
    let forged = app.forged_token(user.id);
    let r = verify(&app, &forged, &other_run, &other_sent).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(run_row(&app, user.id, &other_run).await.0, "running");
}

/// Four runs of two users, one in each state; the quiet one is abandoned only past the
/// threshold, and comes back to running when a batch arrives.
#[tokio::test]
async fn status_counts_runs_by_state_with_abandonment_computed_at_read_time() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user(), app.user());
    let (verified, sent, _) = migrate(&app, &alice.token).await;
    assert_eq!(
        verify(&app, &alice.token, &verified, &sent).await.status(),
        StatusCode::OK
    );
    let (rolled, _, _) = migrate(&app, &alice.token).await;
    let r = app.rollback(&alice.token, rolled.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (quiet, _, _) = migrate(&app, &bob.token).await;
    let (_busy, _, _) = migrate(&app, &bob.token).await;
    app.age_run(quiet.migration_id, 2).await;

    let states = |runs: &[report::RunSummary]| {
        report::count_by_state(runs)
            .into_iter()
            .map(|(s, n)| (s.as_str(), n))
            .collect::<Vec<_>>()
    };
    let day = Duration::from_secs(86_400);
    let runs = report::run_summaries(&app.db, None, None, day)
        .await
        .unwrap();
    assert_eq!(
        states(&runs),
        vec![
            ("running", 1),
            ("abandoned", 1),
            ("verified", 1),
            ("rolled_back", 1)
        ]
    );
    let of = |id: Uuid| runs.iter().find(|r| r.report.migration_id == id).unwrap();
    assert_eq!(of(quiet.migration_id).state, RunState::Abandoned);
    let v = of(verified.migration_id);
    assert_eq!(v.verified.as_ref().map(|v| v.records), Some(4), "{v:?}");
    assert!(v.finished_at.is_some());
    let three_days = Duration::from_secs(3 * 86_400);
    let runs = report::run_summaries(&app.db, Some(bob.id), None, three_days)
        .await
        .unwrap();
    assert_eq!(
        states(&runs),
        vec![
            ("running", 2),
            ("abandoned", 0),
            ("verified", 0),
            ("rolled_back", 0)
        ]
    );

    // The browser comes back: a batch makes the run running again.
    let (_, batches) = quiet.batches(&pairs(&[("formData:x", r#"{"v":1}"#)]));
    for b in batches {
        let mut body: Value = serde_json::from_slice(&b.body).unwrap();
        body["header"]["sequence"] = json!(7);
        app.send(&bob.token, serde_json::to_vec(&body).unwrap())
            .await;
    }
    let runs = report::run_summaries(&app.db, Some(bob.id), None, day)
        .await
        .unwrap();
    assert_eq!(
        states(&runs),
        vec![
            ("running", 2),
            ("abandoned", 0),
            ("verified", 0),
            ("rolled_back", 0)
        ]
    );

    let Some(url) = app.conninfo.clone() else {
        return;
    };
    let output = ferry_server(&["status", "--by-user"])
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
        stdout.contains("4 run(s): running 2, abandoned 0, verified 1, rolled_back 1"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("user {}: ", alice.id)), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "migration {}  user {}  status verified",
            verified.migration_id, alice.id
        )),
        "{stdout}"
    );
    assert!(stdout.contains("  verified "), "{stdout}");
}

/// The fleet summary counts each user once, by their latest run: verified, in progress,
/// stalled past the threshold, rolled back; per kind what arrived, the quarantine and the open
/// conflicts; records per hour. `status` prints it first, `status --json` as JSON.
#[tokio::test]
async fn the_fleet_summary_counts_users_by_their_latest_run_and_records_per_kind() {
    use ferry_server::operator::fleet;
    let app = spawn_app().await;
    let (done, busy, quiet, undone) = (app.user(), app.user(), app.user(), app.user());
    // `done` migrated twice: only the latest (verified) run counts for the user.
    migrate(&app, &done.token).await;
    let (latest, sent, _) = migrate(&app, &done.token).await;
    app.db
        .execute(
            "UPDATE ferry_migration_runs SET started_at = now() - interval '1 hour' WHERE user_id = $1 AND migration_id <> $2",
            &[&done.id, &latest.migration_id],
        )
        .await
        .unwrap();
    assert_eq!(
        verify(&app, &done.token, &latest, &sent).await.status(),
        StatusCode::OK
    );
    migrate(&app, &busy.token).await;
    let (stalled, _, _) = migrate(&app, &quiet.token).await;
    app.age_run(stalled.migration_id, 2).await;
    let (rolled, _, _) = migrate(&app, &undone.token).await;
    let r = app.rollback(&undone.token, rolled.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK);

    let day = Duration::from_secs(86_400);
    let summary = fleet::summary(&app.db, day).await.unwrap();
    assert_eq!(
        summary.users,
        fleet::UserStates {
            started: 4,
            verified: 1,
            in_progress: 1,
            stalled: 1,
            rolled_back: 1
        }
    );
    let tasks = summary.kinds.iter().find(|k| k.kind == "tasks").unwrap();
    // Five migrations of two valid tasks each (the third, untitled, is quarantined): the
    // second run of `done` sent the same records again, received once per migration.
    let received: i64 = app
        .count(
            "SELECT count(*) FROM ferry_received WHERE kind = 'tasks'",
            &[],
        )
        .await;
    assert_eq!(tasks.received, u64::try_from(received).unwrap());
    assert_eq!(tasks.outcomes.values().sum::<u64>(), tasks.received);
    let quarantined = app
        .count(
            "SELECT count(*) FROM ferry_quarantine WHERE kind = 'tasks'",
            &[],
        )
        .await;
    assert!(quarantined > 0);
    assert_eq!(tasks.quarantined, u64::try_from(quarantined).unwrap());
    assert_eq!(summary.hours.iter().map(|h| h.records).sum::<u64>(), {
        let n = app
            .count("SELECT count(*) FROM ferry_received WHERE received_at >= now() - interval '48 hours'", &[])
            .await;
        u64::try_from(n).unwrap()
    });
    assert!(
        summary
            .hours
            .iter()
            .all(|h| h.hour.ends_with(":00:00Z") && h.users <= 4)
    );

    let text = fleet::render(&summary);
    assert!(
        text.starts_with("users: 4 started, 1 verified, 1 in progress, 1 stalled (no batch for 86400 s), 1 rolled back\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("kind tasks: {} received (", tasks.received)),
        "{text}"
    );
    // The example of each reason is the pipeline's sentence, readable (not cut to a few
    // characters like a value quoted in an HTTP error).
    let example = text
        .lines()
        .find(|l| l.starts_with("rejected tasks field "))
        .and_then(|l| l.split_once(" records, e.g. "))
        .map(|(_, e)| e.to_owned())
        .unwrap_or_default();
    assert!(
        example.starts_with("record ") && example.chars().count() > 30,
        "{text}"
    );

    let Some(url) = app.conninfo.clone() else {
        return;
    };
    let output = ferry_server(&["status", "--json"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["fleet"]["users"]["stalled"], 1, "{doc}");
    assert_eq!(doc["fleet"]["users"]["started"], 4);
    assert_eq!(doc["runs"].as_array().map(Vec::len), Some(5));
}
