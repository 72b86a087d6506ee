//! Two devices of one user migrating the same records at the same moment: regression tests
//! for the lost version and the wrong before-images of overlapping batch transactions
//! (issue 12, item 1). Every batch holds all five kinds, so every conflict policy (newest,
//! merge, overwrite, manual, skip) is raced at once; every check is made in SQL.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Run, TestApp, User, spawn_app};

/// One device's batch: the same five records as the other device's, each with the device's
/// `tag` in a column that shows which version is stored.
fn device_batch(run: &Run, task_id: Uuid, tag: &str, theme: &str, updated: &str) -> Vec<u8> {
    let tasks = json!([{"id": task_id, "title": tag, "status": "todo",
        "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated}])
    .to_string();
    let envs = json!([{"id": "prod", "name": tag, "config": {tag: 1},
        "updatedAt": updated}])
    .to_string();
    let prefs = json!({"theme": theme}).to_string();
    let form = json!({"v": tag, "savedAt": 1_700_000_000_000_i64}).to_string();
    let custom = json!({"v": tag}).to_string();
    run.batch(&[
        ("tasks", tasks.as_str()),
        ("environments", envs.as_str()),
        ("userPreferences", prefs.as_str()),
        ("formData:contact", form.as_str()),
        ("taskboard:layout", custom.as_str()),
    ])
}

/// Which version each table holds for `user`: `tasks`, `environments`, `user_preferences`,
/// `form_drafts`, `custom_data`, in that order, each the stored tag (or `-` for no row).
async fn stored_tags(app: &TestApp, user: Uuid) -> String {
    app.text(
        "SELECT concat_ws(',',
            coalesce((SELECT string_agg(title, '+') FROM tasks WHERE user_id = $1), '-'),
            coalesce((SELECT string_agg(name, '+') FROM environments WHERE user_id = $1), '-'),
            coalesce((SELECT string_agg(theme, '+') FROM user_preferences WHERE user_id = $1), '-'),
            coalesce((SELECT string_agg(data->>'v', '+') FROM form_drafts WHERE user_id = $1), '-'),
            coalesce((SELECT string_agg(value->>'v', '+') FROM custom_data WHERE user_id = $1), '-'))",
        &[&user],
    )
    .await
}

/// What the table should hold when only device `tag`'s migration (with `theme`) applied.
fn only(tag: &str, theme: &str) -> String {
    format!("{tag},{tag},{theme},{tag},{tag}")
}

/// Sends both devices' batches for `user` at once; returns each answer's JSON.
async fn send_both(app: &TestApp, user: &User, a: Vec<u8>, b: Vec<u8>) -> (Value, Value) {
    let send = |body: Vec<u8>| async move {
        let r = app.post_batch(&user.token, body).await;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    tokio::join!(send(a), send(b))
}

fn inserted(answer: &Value) -> usize {
    answer["outcomes"]
        .as_array()
        .map(|o| o.iter().filter(|r| r["outcome"] == "inserted").count())
        .unwrap_or(0)
}

async fn roll_back(app: &TestApp, user: &User, migration: Uuid) {
    let r = app.rollback(&user.token, migration).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
}

/// The checks every race must pass, once both batches answered. `first` is the migration that
/// committed first (the one whose answer says `inserted`).
async fn check_race(
    app: &TestApp,
    user: &User,
    (a, answer_a, tag_a, theme_a): (&Run, &Value, &str, &str),
    (b, answer_b, tag_b, theme_b): (&Run, &Value, &str, &str),
) {
    // Exactly one device inserted the five records; the other saw them stored.
    let (ia, ib) = (inserted(answer_a), inserted(answer_b));
    assert!(
        (ia, ib) == (5, 0) || (ia, ib) == (0, 5),
        "both devices answered `inserted` for the same records: {ia} and {ib}\n{answer_a}\n{answer_b}"
    );
    let (first, second, second_answer, first_only) = if ia == 5 {
        (a, b, answer_b, only(tag_a, theme_a))
    } else {
        (b, a, answer_a, only(tag_b, theme_b))
    };
    let second_tag = if ia == 5 { tag_b } else { tag_a };
    // The manual kind's second version is in `ferry_conflicts`, not lost.
    let queued = app
        .count(
            "SELECT count(*) FROM ferry_conflicts WHERE user_id = $1 AND migration_id = $2
             AND status = 'open' AND incoming->>'data' LIKE '%' || $3 || '%'",
            &[&user.id, &second.migration_id, &second_tag],
        )
        .await;
    assert_eq!(queued, 1, "the second draft is queued: {second_answer}");
    // Every before-image of the second migration is of a row that existed.
    let absent = app
        .count(
            "SELECT count(*) FROM ferry_before_images WHERE user_id = $1 AND migration_id = $2 AND before IS NULL",
            &[&user.id, &second.migration_id],
        )
        .await;
    assert_eq!(absent, 0, "the second migration found every row stored");
    // Rolling the second back restores the first's rows; rolling the first back, nothing.
    roll_back(app, user, second.migration_id).await;
    assert_eq!(stored_tags(app, user.id).await, first_only);
    roll_back(app, user, first.migration_id).await;
    assert_eq!(stored_tags(app, user.id).await, "-,-,-,-,-");
}

/// Two runs of one user on two devices, their batches, tags and themes.
fn two_devices() -> (Run, Run, Uuid) {
    let a = Run::new();
    let mut b = Run::new();
    b.migrated_at_ms += 1;
    (a, b, Uuid::new_v4())
}

/// Device 1's transaction is held after it wrote its rows (a second session locks
/// `ferry_received`, which it writes next); device 2's batch is sent meanwhile; then device 1
/// is released. Before the user lock, device 2's statement did not see device 1's rows: both
/// answered `inserted`, the manual draft was lost and the before-images said "absent".
#[tokio::test]
async fn two_devices_held_mid_transaction_neither_loses_a_version() {
    let app = spawn_app().await;
    let user = app.user();
    let (a, b, task) = two_devices();
    let body_a = device_batch(&a, task, "A", "light", "2024-02-01T00:00:00Z");
    let body_b = device_batch(&b, task, "B", "dark", "2024-03-01T00:00:00Z");

    let mut holder = ferry_server::db::connect(&app.db_config)
        .await
        .unwrap_or_else(|e| panic!("second session: {e}"));
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE ferry_received IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let waiting = || async {
        app.count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            &[&app.db_name],
        )
        .await
    };
    let device_1 = {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/batches"),
            user.token.clone(),
        );
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body_a)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    assert!(
        wait_for(&waiting, 1).await,
        "device 1 pauses after writing its rows"
    );
    let device_2 = {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/batches"),
            user.token.clone(),
        );
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body_b)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    assert!(wait_for(waiting, 2).await, "device 2 waits behind device 1");
    hold.commit().await.unwrap();
    let (status_a, answer_a) = device_1.await.unwrap();
    let (status_b, answer_b) = device_2.await.unwrap();
    assert_eq!(
        (status_a, status_b),
        (StatusCode::OK, StatusCode::OK),
        "{answer_a}\n{answer_b}"
    );
    assert_eq!(
        inserted(&answer_a),
        5,
        "device 1 committed first: {answer_a}"
    );
    check_race(
        &app,
        &user,
        (&a, &answer_a, "A", "light"),
        (&b, &answer_b, "B", "dark"),
    )
    .await;
}

/// Waits until `count()` reaches `at_least` (polled; a few seconds at most).
async fn wait_for<F, Fut>(count: F, at_least: i64) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    for _ in 0..400 {
        if count().await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Many same-instant pairs, each a user of its own with both devices' batches sent together,
/// each pair checked like the held one: one `inserted` each, the second draft queued, no
/// before-image of an absent row, and rollbacks that restore exactly the state before.
#[tokio::test]
async fn same_instant_pairs_of_devices_lose_no_version_under_any_policy() {
    let app = spawn_app().await;
    for pair in 0..12 {
        let user = app.user();
        let (a, b, task) = two_devices();
        // Alternate which device holds the newer task, so `newest` is raced both ways.
        let (ua, ub) = if pair % 2 == 0 {
            ("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")
        } else {
            ("2024-03-01T00:00:00Z", "2024-02-01T00:00:00Z")
        };
        let body_a = device_batch(&a, task, "A", "light", ua);
        let body_b = device_batch(&b, task, "B", "dark", ub);
        let (answer_a, answer_b) = send_both(&app, &user, body_a, body_b).await;
        check_race(
            &app,
            &user,
            (&a, &answer_a, "A", "light"),
            (&b, &answer_b, "B", "dark"),
        )
        .await;
    }
}
