//! Fault injection on loopback: the server killed before and after a commit, an answer lost
//! on the way back, PostgreSQL restarted mid-migration, an exhausted pool, a statement
//! timeout. Each ends with every valid record in PostgreSQL exactly once, and the migration
//! report (`GET /v1/migrations/{id}`) counting every shipped record once with the checksum the
//! client computes. The client's part is played as the browser's outbox plays it: the same
//! bytes again until an answer arrives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_server::db::embedded_pg::{EmbeddedPg, EmbeddedPgOptions, Listen};
use ferry_server::ingest::{BatchResult, RecordOutcome};
use ferry_server::startup::{Application, Database};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use uuid::Uuid;

use crate::helpers::{
    CLUSTER_DIR_PREFIX, Run, ServerProcess, TestApp, app_at, demo_spec, expect_error,
    fresh_database, pairs, spawn_app_with, test_settings,
};

/// A migration of `n` tasks in batches of at most `per_batch` records.
struct Migration {
    run: Run,
    records: Vec<ferry_core::pipeline::Record>,
    batches: Vec<ferry_core::wire::EncodedBatch>,
}

fn migration(n: usize, per_batch: usize) -> Migration {
    let run = Run::new();
    let list: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": Uuid::new_v4(), "title": format!("task {i}"), "status": "todo",
                   "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-02-01T00:00:00Z"})
        })
        .collect();
    let (records, _) = run.batches(&pairs(&[("tasks", &Value::Array(list).to_string())]));
    let batches = ferry_core::wire::build_batches(
        demo_spec(),
        &run.header(),
        &records,
        0..records.len(),
        0,
        ferry_core::wire::BatchLimits {
            max_records: per_batch,
            max_bytes: 1 << 20,
        },
    );
    assert_eq!(batches.len(), n.div_ceil(per_batch));
    Migration {
        run,
        records,
        batches,
    }
}

/// Every task of `m` is in `tasks` exactly once, the ledger holds one answer per batch, and
/// the report counts every shipped record once with the client's checksum.
async fn assert_exactly_once(app: &TestApp, token: &str, user: Uuid, m: &Migration) {
    let ids: Vec<Uuid> = m.records.iter().filter_map(|r| r.id).collect();
    assert_eq!(ids.len(), m.records.len());
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND id = ANY($2)",
            &[&user, &ids]
        )
        .await,
        i64::try_from(ids.len()).unwrap(),
        "every task is stored"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user])
            .await,
        i64::try_from(ids.len()).unwrap(),
        "and nothing else"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND migration_id = $2 AND response <> 'null'::jsonb",
            &[&user, &m.run.migration_id]
        )
        .await,
        i64::try_from(m.batches.len()).unwrap(),
        "one stored answer per batch"
    );
    let report: Value = app
        .get_json(&format!("/v1/migrations/{}", m.run.migration_id), token)
        .await;
    let hashes: Vec<String> = m.records.iter().map(|r| r.hash.to_hex()).collect();
    let checksum =
        ferry_server::operator::report::xor_checksum(hashes.iter().map(String::as_str)).unwrap();
    assert_eq!(report["batches"], m.batches.len(), "{report}");
    assert_eq!(
        report["kinds"]["tasks"]["received"],
        m.records.len(),
        "{report}"
    );
    assert_eq!(report["kinds"]["tasks"]["checksum"], checksum, "{report}");
    assert_eq!(
        report["kinds"]["tasks"]["outcomes"]["inserted"],
        m.records.len(),
        "{report}"
    );
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{url}/v1/batches"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
}

async fn answer(response: reqwest::Response) -> BatchResult {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// How to connect to `app`'s database (a throwaway database of the same cluster, renamed).
async fn config_of(app: &TestApp) -> tokio_postgres::Config {
    let mut config = fresh_database().await.config;
    config.dbname(&app.db_name);
    config
}

/// Sessions waiting on a lock in the test's database (the blocked batch).
async fn lock_waiters(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        &[],
    )
    .await
}

/// A second session holding `ACCESS EXCLUSIVE` on `tasks` until it is dropped or released:
/// a batch with tasks blocks inside its transaction, after its ledger claim, before commit.
struct TableLock {
    client: tokio_postgres::Client,
}

impl TableLock {
    async fn take(config: &tokio_postgres::Config) -> Self {
        let client = ferry_server::db::connect(config).await.unwrap();
        client
            .batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Self { client }
    }

    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.unwrap();
    }
}

async fn wait_for_lock_waiter(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock_waiters(app).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the batch never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigkill_before_commit_then_the_resent_batch_lands_once() {
    let started = Instant::now();
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    let config = database.config.clone();
    let mut server = ServerProcess::start(&conninfo, &[]).await;
    let app = app_at(&server.url, database);
    let user = app.user();
    let m = migration(12, 4);
    app.send(&user.token, m.batches[0].body.clone()).await;

    // Batch 1 blocks on the table lock inside its transaction (ledger claimed, not committed).
    let lock = TableLock::take(&config).await;
    let in_flight = tokio::spawn({
        let (client, url, token, body) = (
            app.client.clone(),
            server.url.clone(),
            user.token.clone(),
            m.batches[1].body.clone(),
        );
        async move { post(&client, &url, &token, body).await }
    });
    wait_for_lock_waiter(&app).await;
    server.kill();
    let lost = in_flight.await.unwrap();
    assert!(lost.is_err(), "the killed server answered: {lost:?}");
    lock.release().await;

    // Nothing of batch 1 survived the kill: no claim, no rows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock_waiters(&app).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the dead server's session lingers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND sequence = 1",
            &[&user.id]
        )
        .await,
        0,
        "the claim of the uncommitted batch was rolled back"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        4
    );

    // Restarted, the outbox sends batch 1 again, then the rest.
    let server = ServerProcess::start(&conninfo, &[]).await;
    let mut app = app;
    app.address.clone_from(&server.url);
    let again = app.send(&user.token, m.batches[1].body.clone()).await;
    assert!(
        !again.replay,
        "batch 1 never committed, so this is its first application"
    );
    app.send(&user.token, m.batches[2].body.clone()).await;
    assert_exactly_once(&app, &user.token, user.id, &m).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigkill_after_commit_before_the_answer_then_the_resend_gets_the_stored_answer() {
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return;
    };
    let mut server = ServerProcess::start(&conninfo, &[("FERRY_FAULT", "exit_after_commit")]).await;
    assert!(
        crate::helpers::eventually(Duration::from_secs(10), || server
            .log()
            .contains("fault injection armed"))
        .await,
        "{}",
        server.log()
    );
    let app = app_at(&server.url, database);
    let user = app.user();
    let m = migration(6, 3);

    let lost = post(
        &app.client,
        &server.url,
        &user.token,
        m.batches[0].body.clone(),
    )
    .await;
    assert!(lost.is_err(), "the answer was sent: {lost:?}");
    let status = server.exited_within(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(9)),
        "killed by SIGKILL: {status:?}\n{}",
        server.log()
    );
    // It did commit: the batch's rows and its stored answer are there.
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        3
    );

    let server = ServerProcess::start(&conninfo, &[]).await;
    let mut app = app;
    app.address.clone_from(&server.url);
    let replayed = app.send(&user.token, m.batches[0].body.clone()).await;
    assert!(replayed.replay, "the ledger answers the stored result");
    assert_eq!(replayed.sequence, 0);
    assert!(
        replayed
            .outcomes
            .iter()
            .all(|o| o.outcome == RecordOutcome::Inserted),
        "the stored answer is the first application's: {replayed:?}"
    );
    app.send(&user.token, m.batches[1].body.clone()).await;
    assert_exactly_once(&app, &user.token, user.id, &m).await;
}

#[tokio::test]
async fn the_fault_variable_is_ignored_outside_dev_mode() {
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return;
    };
    let server = ServerProcess::start(
        &conninfo,
        &[("FERRY_FAULT", "exit_after_commit"), ("FERRY_DEV", "false")],
    )
    .await;
    // The warning and the "listening" line come on two streams, read by two threads: wait
    // for the warning rather than expect it first.
    assert!(
        crate::helpers::eventually(Duration::from_secs(10), || server
            .log()
            .contains("ignored outside dev mode"))
        .await,
        "{}",
        server.log()
    );
    let app = app_at(&server.url, database);
    let user = app.user();
    let m = migration(2, 2);
    app.send(&user.token, m.batches[0].body.clone()).await;
    assert_exactly_once(&app, &user.token, user.id, &m).await;
}

/// A proxy that forwards one request to `upstream`, waits for the first bytes of the answer,
/// and then drops both connections: the client never sees the answer.
async fn answer_dropping_proxy(upstream: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut client_read, _client_write) = client.split();
            let (mut server_read, mut server_write) = server.split();
            let forward = tokio::io::copy(&mut client_read, &mut server_write);
            let mut first = [0_u8; 1];
            tokio::select! {
                _ = forward => {}
                read = server_read.read(&mut first) => { let _ignored = read; }
            }
            // Both sockets drop here, the answer unread and unsent.
        }
    });
    (address, task)
}

#[tokio::test]
async fn an_answer_lost_after_commit_is_recovered_by_resending() {
    let app = spawn_app_with(|s| s.rate_limit_per_second = 0.0).await;
    let upstream = app.address.trim_start_matches("http://").to_owned();
    let (proxy, proxy_task) = answer_dropping_proxy(upstream).await;
    let user = app.user();
    let m = migration(9, 3);
    for batch in &m.batches {
        let lost = post(&app.client, &proxy, &user.token, batch.body.clone()).await;
        assert!(lost.is_err(), "the proxy let the answer through: {lost:?}");
    }
    proxy_task.abort();
    // Every batch committed although no answer arrived; the outbox sends them all again.
    let before = app
        .count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
        .await;
    assert_eq!(before, 9);
    for batch in &m.batches {
        let again = app.send(&user.token, batch.body.clone()).await;
        assert!(again.replay, "stored answer");
    }
    assert_exactly_once(&app, &user.token, user.id, &m).await;
}

/// An embedded cluster of this test alone (so it can be restarted), on a Unix socket.
struct OwnCluster {
    options: EmbeddedPgOptions,
    root: PathBuf,
    cluster: Option<EmbeddedPg>,
}

impl OwnCluster {
    fn start() -> Self {
        // Named like the harness's clusters, so a run killed before its drop is swept later.
        let root = PathBuf::from(format!(
            "{CLUSTER_DIR_PREFIX}{}-restart",
            std::process::id()
        ));
        let _ignored = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let options = EmbeddedPgOptions {
            data_dir: root.join("data"),
            listen: Listen::UnixSocket {
                dir: root.join("run"),
                port: 5432,
            },
            bin_dir: std::env::var_os("FERRY_PG_BIN").map(PathBuf::from),
            // Durable, with a fast (clean) stop: a restart, not a crash that loses commits.
            ephemeral: false,
            settings: Vec::new(),
        };
        let cluster = EmbeddedPg::start(options.clone()).unwrap();
        Self {
            options,
            root,
            cluster: Some(cluster),
        }
    }

    fn cluster(&self) -> &EmbeddedPg {
        self.cluster.as_ref().unwrap()
    }

    /// Stops the cluster (immediate: connections are cut), then starts it on the same data.
    fn restart(&mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop().unwrap();
        }
        self.cluster = Some(EmbeddedPg::start(self.options.clone()).unwrap());
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        drop(self.cluster.take());
        let _ignored = std::fs::remove_dir_all(&self.root);
    }
}

/// Sends `body` until it is answered 200 (at most `tries` times, 200 ms apart); returns the
/// answer and the statuses of the failed tries.
async fn send_until_answered(
    app: &TestApp,
    token: &str,
    body: &[u8],
    tries: usize,
) -> (BatchResult, Vec<String>) {
    let mut failures = Vec::new();
    for _ in 0..tries {
        match post(&app.client, &app.address, token, body.to_vec()).await {
            Ok(response) if response.status() == StatusCode::OK => {
                return (answer(response).await, failures);
            }
            Ok(response) => {
                let status = response.status();
                let retry_after = response.headers().get("retry-after").cloned();
                let text = response.text().await.unwrap_or_default();
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
                assert!(retry_after.is_some(), "503 without Retry-After: {text}");
                failures.push(format!("{status} {text}"));
            }
            Err(error) => failures.push(format!("transport: {error}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no answer after {tries} tries: {failures:?}");
}

#[tokio::test]
async fn postgres_restarted_mid_migration_the_pool_recovers_and_each_batch_lands_once() {
    ferry_server::startup::telemetry::init_for_tests();
    let mut own = OwnCluster::start();
    let admin = own.cluster().config("postgres");
    assert!(
        ferry_server::db::create_database_if_missing(&admin, "ferry_restart")
            .await
            .unwrap()
    );
    let config = own.cluster().config("ferry_restart");
    let mut settings = test_settings();
    settings.rate_limit_per_second = 0.0;
    settings.db_pool_size = 2;
    settings.db_connect_timeout_ms = 1_000;
    let server = Application::build_with_database(&settings, Database::external(config.clone()))
        .await
        .unwrap();
    let address = server.base_url();
    let serving = tokio::spawn(server.run_until_stopped(std::future::pending()));
    let client = ferry_server::db::connect(&config).await.unwrap();
    let app = TestApp {
        address,
        client: reqwest::Client::new(),
        db: client,
        db_name: "ferry_restart".to_owned(),
        db_config: config.clone(),
        settings,
        conninfo: None,
    };
    let user = app.user();
    let m = migration(12, 3);
    let first = app.send(&user.token, m.batches[0].body.clone()).await;
    assert!(!first.replay);

    // Batch 1 is inside its transaction (blocked on a lock) when PostgreSQL goes down.
    let lock = TableLock::take(&config).await;
    let app = Arc::new(app);
    let in_flight = tokio::spawn({
        let (app, token, body) = (app.clone(), user.token.clone(), m.batches[1].body.clone());
        async move { post(&app.client, &app.address, &token, body).await }
    });
    wait_for_lock_waiter(&app).await;
    let restart_started = Instant::now();
    own.restart();
    let restart_took = restart_started.elapsed();
    drop(lock); // Its session died with the old postmaster.
    let cut = in_flight.await.unwrap().unwrap();
    let retry_after = cut.headers().get("retry-after").cloned();
    let body = expect_error(cut, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_eq!(retry_after.unwrap(), "1", "{body}");
    let mut app = Arc::into_inner(app).unwrap();
    // The pool's connections died with the old postmaster; the server was not restarted.
    app.db = ferry_server::db::connect(&config).await.unwrap();
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND sequence = 1",
            &[&user.id]
        )
        .await,
        0,
        "the interrupted batch left no claim"
    );
    let recovered_started = Instant::now();
    let (second, failures) = send_until_answered(&app, &user.token, &m.batches[1].body, 25).await;
    let recovered_after = recovered_started.elapsed();
    assert!(!second.replay);
    for batch in &m.batches[2..] {
        let (result, _) = send_until_answered(&app, &user.token, &batch.body, 25).await;
        assert!(!result.replay);
    }
    // And the first batch, sent again, is a replay from the ledger that survived the restart.
    assert!(
        app.send(&user.token, m.batches[0].body.clone())
            .await
            .replay
    );
    assert_exactly_once(&app, &user.token, user.id, &m).await;
    assert!(
        recovered_after < Duration::from_secs(5),
        "recovered after {recovered_after:?}: {failures:?}"
    );
    eprintln!(
        "postgres restart took {restart_took:?} (the batch in flight: 503); its resend answered {recovered_after:?} later after {} failed tries: {failures:?}",
        failures.len()
    );
    serving.abort();
    let _ignored = serving.await;
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_quickly_and_the_retries_land_once() {
    let app = spawn_app_with(|s| {
        s.rate_limit_per_second = 0.0;
        s.db_pool_size = 1;
        s.db_connect_timeout_ms = 300;
    })
    .await;
    let database_config = config_of(&app).await;
    let user = app.user();
    let m = migration(16, 2);
    // Batch 0 takes the only connection and keeps it, blocked on the table lock.
    let lock = TableLock::take(&database_config).await;
    let app = Arc::new(app);
    let holder = tokio::spawn({
        let (app, token, body) = (app.clone(), user.token.clone(), m.batches[0].body.clone());
        async move { post(&app.client, &app.address, &token, body).await }
    });
    wait_for_lock_waiter(&app).await;
    // The seven others find no connection: each is answered 503 + Retry-After, quickly.
    let started = Instant::now();
    let others: Vec<_> = m.batches[1..]
        .iter()
        .map(|batch| {
            let (app, token, body) = (app.clone(), user.token.clone(), batch.body.clone());
            tokio::spawn(async move {
                let response = post(&app.client, &app.address, &token, body).await.unwrap();
                let retry_after = response.headers().get("retry-after").cloned();
                let body =
                    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
                (retry_after, body, Instant::now())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for other in others {
        let (retry_after, body, at) = other.await.unwrap();
        assert_eq!(retry_after.unwrap(), "1", "{body}");
        slowest = slowest.max(at - started);
    }
    assert!(
        slowest < Duration::from_secs(3),
        "the 503s took {slowest:?} (pool wait timeout 300 ms)"
    );
    lock.release().await;
    let held = holder.await.unwrap().unwrap();
    assert!(!answer(held).await.replay);
    // Nothing of the refused batches was written; the outbox retries them.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1",
            &[&user.id]
        )
        .await,
        1
    );
    for batch in &m.batches[1..] {
        let (result, _) = send_until_answered(&app, &user.token, &batch.body, 10).await;
        assert!(!result.replay);
    }
    assert_exactly_once(&app, &user.token, user.id, &m).await;
    eprintln!("pool of 1, 7 waiting batches: all 503 within {slowest:?}");
}

#[tokio::test]
async fn a_statement_timeout_fails_the_batch_whole_and_the_retry_lands_once() {
    let app = spawn_app_with(|s| {
        s.rate_limit_per_second = 0.0;
        s.db_statement_timeout_ms = 300;
    })
    .await;
    let config = config_of(&app).await;
    let user = app.user();
    let m = migration(4, 2);
    app.send(&user.token, m.batches[0].body.clone()).await;

    let lock = TableLock::take(&config).await;
    let started = Instant::now();
    let response = app.post_batch(&user.token, m.batches[1].body.clone()).await;
    let took = started.elapsed();
    let retry_after = response.headers().get("retry-after").cloned();
    let body = expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_eq!(retry_after.unwrap(), "1", "{body}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    lock.release().await;
    // Rolled back whole: no claim, no rows, nothing received for batch 1.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND sequence = 1",
            &[&user.id]
        )
        .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
            .await,
        2
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_received WHERE user_id = $1",
            &[&user.id]
        )
        .await,
        2
    );
    let retried = app.send(&user.token, m.batches[1].body.clone()).await;
    assert!(!retried.replay);
    assert_exactly_once(&app, &user.token, user.id, &m).await;
    eprintln!("statement_timeout 300 ms: the blocked batch failed after {took:?}");
}
