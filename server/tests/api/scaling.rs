//! The claim of docs/scaling.md that matters for distributing by `user_id` (Citus): every
//! statement the ingest path runs on Ferry's per-user tables and on the app's tables names
//! `user_id`, so each one can be routed to the one shard holding that user. Checked from
//! `pg_stat_statements` after a real migration through the HTTP API (batches, a replay,
//! conflicts of every policy, a resolution, the report, verification, a rollback), not by
//! reading the code. And several processes over one database apply one per-user rate limit
//! when their buckets are shared (`FERRY_RATE_LIMIT_SHARED`).

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::balancer::Balancer;
use crate::helpers::{Run, ServerProcess, TestDatabase, app_at, fresh_database, pairs, spawn_app};
use crate::run_status::{tallies, verify};

/// Ferry's tables holding one row per user's something: distributed by `user_id`.
const FERRY_PER_USER: [&str; 11] = [
    "ferry_migration_runs",
    "ferry_ingest_ledger",
    "ferry_received_batches",
    "ferry_received",
    "ferry_quarantine",
    "ferry_conflicts",
    "ferry_before_images",
    "ferry_before_image_rows",
    "ferry_before_image_batches",
    "ferry_created_rows",
    "ferry_backups",
];
/// The demo app's tables (specs/taskboard.json): distributed by `user_id` too.
const APP_TABLES: [&str; 5] = [
    "tasks",
    "environments",
    "user_preferences",
    "form_drafts",
    "custom_data",
];

fn legacy(title: &str, updated: &str) -> (String, String, String) {
    let tasks = json!([
        {"id": "6f1c1d7e-0000-4000-8000-000000000001", "title": title, "status": "todo", "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated},
        {"id": "6f1c1d7e-0000-4000-8000-000000000002", "title": "stays", "status": "todo", "createdAt": "2024-01-01T00:00:00Z"},
        {"id": "6f1c1d7e-0000-4000-8000-000000000003", "status": "todo", "createdAt": "2024-01-01T00:00:00Z"},
    ]);
    let envs = json!([{"id": "prod", "name": title, "config": {"region": "eu"}, "createdAt": 1, "updatedAt": 2}]);
    let draft = json!({"fields": {"title": title}, "savedAt": 1_700_000_000_000_u64});
    (tasks.to_string(), envs.to_string(), draft.to_string())
}

#[tokio::test]
async fn every_ingest_statement_on_per_user_tables_is_keyed_by_user_id() {
    let app = spawn_app().await;
    let user = app.user();
    // What start-up ran (Ferry's and the app's schema migrations) is not the ingest path.
    let at_start = app.executed_statements().await;

    // A first migration: inserts of every kind, one record quarantined; its first batch replayed.
    let (tasks, envs, draft) = legacy("first", "2024-02-01T00:00:00Z");
    let first = Run::new();
    let (records, batches) = first.batches(&pairs(&[
        ("tasks", &tasks),
        ("environments", &envs),
        ("formData:newTask", &draft),
        ("userPreferences", r#"{"theme":"dark"}"#),
        ("taskboard:selectedTask", "/tasks"),
    ]));
    let replay = batches[0].body.clone();
    for b in batches {
        app.send(&user.token, b.body).await;
    }
    app.send(&user.token, replay).await;
    let r = verify(&app, &user.token, &first, &tallies(&records)).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);

    // A second migration from another device: every conflict policy meets a stored row.
    let (tasks, envs, draft) = legacy("second", "2024-03-01T00:00:00Z");
    let second = Run::new();
    for b in second
        .batches(&pairs(&[
            ("tasks", &tasks),
            ("environments", &envs),
            ("formData:newTask", &draft),
            ("userPreferences", r#"{"theme":"light"}"#),
            ("taskboard:selectedTask", "/data"),
        ]))
        .1
    {
        app.send(&user.token, b.body).await;
    }
    let conflicts: Vec<Value> = app.get_json("/v1/conflicts", &user.token).await;
    assert!(!conflicts.is_empty(), "the manual kind queued a conflict");
    let r = app
        .post_json_authed(
            &format!("/v1/conflicts/{}/resolve", conflicts[0]["id"]),
            &user.token,
            &json!({"choice": "incoming"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let _: Value = app
        .get_json(
            &format!("/v1/migrations/{}", second.migration_id),
            &user.token,
        )
        .await;
    let _: Value = app.get_json("/v1/backups", &user.token).await;
    let r = app.rollback(&user.token, second.migration_id).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);

    // Every statement the scenario ran (more calls than at start) that touches a per-user table.
    let ran: Vec<String> = app
        .executed_statements()
        .await
        .into_iter()
        .filter(|(query, calls)| at_start.get(query).is_none_or(|before| calls > before))
        .map(|(query, _)| query)
        .collect();
    let per_user: Vec<String> = FERRY_PER_USER
        .iter()
        .chain(APP_TABLES.iter())
        .map(|t| t.to_string())
        .collect();
    let touches = |q: &str| {
        let words: Vec<&str> = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        per_user.iter().any(|t| words.contains(&t.as_str()))
    };
    let mut checked = 0;
    let mut unkeyed = Vec::new();
    for query in ran {
        // The statement's first word, after the comments a migration file starts with.
        let head = query
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("--"))
            .unwrap_or("")
            .to_ascii_uppercase();
        // Schema changes (Ferry's and the app's migrations at start-up) are not the ingest path.
        if ["CREATE", "ALTER", "COMMENT", "DROP", "GRANT"]
            .iter()
            .any(|k| head.starts_with(k))
            || !touches(&query)
        {
            continue;
        }
        checked += 1;
        // Named, and pinned: `$1 IS NULL OR user_id = $1` names it but reads every shard.
        if !query.contains("user_id") || query.contains("IS NULL OR user_id") {
            unkeyed.push(query);
        }
    }
    println!("{checked} distinct statements on per-user tables, all naming user_id");
    assert!(
        checked >= 15,
        "the scenario ran the ingest path's statements ({checked})"
    );
    assert!(
        unkeyed.is_empty(),
        "statements not keyed by user_id:\n{}",
        unkeyed.join("\n---\n")
    );
}

/// A fresh database and three server processes over it, with their URLs; `None` when the tests
/// use an external `DATABASE_URL` (no connection string to hand the processes).
async fn three_servers() -> Option<(TestDatabase, Vec<ServerProcess>, Vec<String>)> {
    let database = fresh_database().await;
    let conninfo = database.conninfo.clone()?;
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(ServerProcess::start(&conninfo, &[]).await);
    }
    let urls = servers.iter().map(|s| s.url.clone()).collect();
    Some((database, servers, urls))
}

/// User `u`'s legacy `tasks` value: `n` tasks with fresh ids.
fn tasks_of(u: usize, n: usize) -> String {
    let list: Vec<Value> = (0..n)
        .map(|i| json!({"id": Uuid::new_v4(), "title": format!("u{u} t{i}"), "status": "todo", "createdAt": "2024-01-01T00:00:00Z"}))
        .collect();
    Value::Array(list).to_string()
}

/// The users' tasks number `expected` in PostgreSQL, none of them twice.
async fn assert_stored_once(app: &crate::helpers::TestApp, ids: &[Uuid], expected: usize) {
    let ids = ids.to_vec();
    let rows = app
        .count(
            "SELECT count(*) FROM tasks WHERE user_id = ANY($1)",
            &[&ids],
        )
        .await;
    let distinct = app
        .count(
            "SELECT count(DISTINCT (user_id, legacy_id)) FROM tasks WHERE user_id = ANY($1)",
            &[&ids],
        )
        .await;
    assert_eq!(rows, expected as i64, "every record once");
    assert_eq!(distinct, rows, "no record twice");
}

/// `/v1/me` as `token` on each server in turn, `n` times: the status codes.
async fn statuses(servers: &[&str], token: &str, n: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for i in 0..n {
        let r = client
            .get(format!("{}/v1/me", servers[i % servers.len()]))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        out.push(r.status().as_u16());
    }
    out
}

#[tokio::test]
async fn with_shared_buckets_two_processes_apply_one_rate_limit_per_user() {
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    // A burst of 4, then one request per 100 s: the test never sees a refill.
    let limit = [
        ("FERRY_RATE_LIMIT_PER_SECOND", "0.01"),
        ("FERRY_RATE_LIMIT_BURST", "4"),
    ];
    let shared: Vec<(&str, &str)> = limit
        .iter()
        .copied()
        .chain([("FERRY_RATE_LIMIT_SHARED", "true")])
        .collect();
    let a = ServerProcess::start(&conninfo, &shared).await;
    let b = ServerProcess::start(&conninfo, &shared).await;
    let app = app_at(&a.url, database);
    let user = app.user();
    let seen = statuses(&[&a.url, &b.url], &user.token, 8).await;
    assert_eq!(
        seen,
        [200, 200, 200, 200, 429, 429, 429, 429],
        "one bucket for both processes"
    );
    // The refusal is the error shape, with when to try again.
    let refused = reqwest::Client::new()
        .get(format!("{}/v1/me", b.url))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    crate::helpers::expect_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another user has a bucket of their own.
    let other = app.user();
    assert_eq!(statuses(&[&b.url], &other.token, 1).await, [200]);

    // What the default (per-process buckets) allows the same user behind the same two
    // processes: the limit times the number of processes.
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return;
    };
    let c = ServerProcess::start(&conninfo, &limit).await;
    let d = ServerProcess::start(&conninfo, &limit).await;
    let seen = statuses(&[&c.url, &d.url], &user.token, 10).await;
    let allowed = seen.iter().filter(|s| **s == 200).count();
    println!(
        "per-process buckets: {allowed} of 10 allowed behind 2 processes (burst 4); shared: 4"
    );
    assert_eq!(allowed, 8, "{seen:?}");
}

#[tokio::test]
async fn three_processes_behind_a_round_robin_apply_every_record_exactly_once() {
    let Some((database, _servers, urls)) = three_servers().await else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    let app = app_at(&urls[0], database);
    const USERS: usize = 60;
    const TASKS: usize = 30;
    // Each user's migration in small batches; every batch goes to two processes at once (a
    // balancer's retry of a request it thought lost), and the users run concurrently.
    let client = reqwest::Client::new();
    let mut work = Vec::new();
    for u in 0..USERS {
        let user = app.user();
        let (_, batches) = Run::new().batches_of(&pairs(&[("tasks", &tasks_of(u, TASKS))]), 8);
        let (client, urls) = (client.clone(), urls.clone());
        work.push(tokio::spawn(async move {
            for (i, b) in batches.into_iter().enumerate() {
                let send = |url: String| {
                    let client = client.clone();
                    let (token, body) = (user.token.clone(), b.body.clone());
                    async move {
                        client
                            .post(format!("{url}/v1/batches"))
                            .bearer_auth(token)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                    }
                };
                let (x, y) = tokio::join!(
                    send(urls[(u + i) % 3].clone()),
                    send(urls[(u + i + 1) % 3].clone())
                );
                // Each copy is applied or answered from the ledger (200), or told the other
                // copy holds the user's lock right now (409, retried by a browser): never lost.
                for s in [x, y] {
                    let s = s.unwrap();
                    assert!(s == 200 || s == 409, "status {s}");
                }
            }
            user.id
        }));
    }
    let mut ids = Vec::new();
    for w in work {
        ids.push(w.await.unwrap());
    }
    assert_stored_once(&app, &ids, USERS * TASKS).await;
}

#[tokio::test]
async fn three_processes_behind_nginx_store_every_record_once_and_share_the_load() {
    let Some((database, _servers, urls)) = three_servers().await else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    let nginx = Balancer::start(&urls).unwrap_or_else(|e| panic!("{e}"));
    // Every request of the test goes through nginx, as a browser's would.
    let app = std::sync::Arc::new(app_at(&nginx.url, database));
    const USERS: usize = 40;
    const TASKS: usize = 24;
    let mut work = Vec::new();
    for u in 0..USERS {
        let app = std::sync::Arc::clone(&app);
        work.push(tokio::spawn(async move {
            let user = app.user();
            let (_, batches) = Run::new().batches_of(&pairs(&[("tasks", &tasks_of(u, TASKS))]), 6);
            let first = batches[0].body.clone();
            for b in batches {
                let answer = app.send(&user.token, b.body).await;
                assert!(!answer.replay, "a first delivery is applied");
            }
            // The first batch again (a retry the balancer sends to another process): answered
            // from the ledger, nothing applied twice.
            let again = app.send(&user.token, first).await;
            assert!(again.replay, "a replay through another process is a replay");
            user.id
        }));
    }
    let mut ids = Vec::new();
    for w in work {
        ids.push(w.await.unwrap());
    }
    assert_stored_once(&app, &ids, USERS * TASKS).await;
    // The balancer spread the requests: each process served at least a sixth of them.
    let per = nginx.requests_per_upstream();
    let total: usize = per.iter().sum();
    println!("requests per process behind nginx: {per:?}");
    assert!(total >= USERS * (TASKS / 6 + 1), "{per:?}");
    assert!(per.iter().all(|n| n * 6 >= total), "{per:?}");
    assert!(nginx.errors().is_empty(), "{:?}", nginx.errors());
}
