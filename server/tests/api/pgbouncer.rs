//! The server behind PgBouncer in transaction pooling mode (Debian's `pgbouncer`, installed by
//! `scripts/setup.sh`), the usual front of managed PostgreSQL: consecutive transactions of one
//! client run on whichever server connection is free, a startup `options` parameter is
//! refused, and nothing of a session survives a transaction. PgBouncer gets fewer server
//! connections than Ferry's pool has clients, so they are shared all the time. The server
//! starts (schema migrations, schema check) and serves through it; concurrent users, replays
//! and retries land every record exactly once, and `statement_timeout` still bites.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_server::startup::{Application, Database};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_postgres::config::Host;
use uuid::Uuid;

use crate::helpers::{
    Run, TestApp, TestDatabase, expect_error, fresh_database, pairs, test_settings,
};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer process in transaction pooling mode in front of one database; killed on drop.
pub(crate) struct Bouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Bouncer {
    /// Starts PgBouncer on a free loopback port in front of `database` with `server_conns`
    /// server connections, as the `postgres` system user when the tests run as root (PgBouncer
    /// refuses root).
    async fn start(database: &TestDatabase, server_conns: u32) -> Self {
        assert!(
            std::path::Path::new(PGBOUNCER).exists(),
            "{PGBOUNCER} is missing: run scripts/setup.sh (apt-get install pgbouncer)"
        );
        let host = match database.config.get_hosts().first() {
            Some(Host::Unix(dir)) => dir.display().to_string(),
            Some(Host::Tcp(name)) => name.clone(),
            None => "127.0.0.1".to_owned(),
        };
        let db_port = database.config.get_ports().first().copied().unwrap_or(5432);
        let db_user = database.config.get_user().unwrap_or("postgres").to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let dir = std::env::temp_dir().join(format!("ferry-pgbouncer-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 ferry = host={host} port={db_port} dbname={name} user={db_user}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = any\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_conns}\n\
                 max_client_conn = 200\n\
                 server_reset_query =\n",
                name = database.name,
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut command = Command::new(PGBOUNCER);
        if nix::unistd::geteuid().is_root() {
            command.args(["-u", "postgres"]);
        }
        let log = std::fs::File::create(dir.join("pgbouncer.log")).unwrap();
        let child = command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PGBOUNCER}: {e}"));
        let mut bouncer = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                panic!("pgbouncer exited ({status}):\n{}", bouncer.log());
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 10 s:\n{}",
                bouncer.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bouncer
    }

    /// How to reach the database through PgBouncer.
    pub(crate) fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("ferry");
        config
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server over a fresh database, reached only through PgBouncer (2 server connections for a
/// pool of 8), with `statement_timeout_ms`.
pub(crate) async fn app_behind_bouncer(statement_timeout_ms: u64) -> (TestApp, Bouncer) {
    let database = fresh_database().await;
    let bouncer = Bouncer::start(&database, 2).await;
    let mut settings = test_settings();
    settings.rate_limit_per_second = 0.0;
    settings.db_pool_size = 8;
    settings.db_statement_timeout_ms = statement_timeout_ms;
    let app = Application::build_with_database(&settings, Database::external(bouncer.config()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the server does not start behind pgbouncer: {}\n{}",
                ferry_server::error_chain(&e),
                bouncer.log()
            )
        });
    let address = app.base_url();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let app = TestApp {
        address,
        client: reqwest::Client::new(),
        db: database.client,
        db_name: database.name,
        db_config: database.config,
        settings,
        conninfo: database.conninfo,
    };
    (app, bouncer)
}

/// `n` tasks of a fresh run, in batches of at most `per_batch` records.
fn tasks(n: usize, per_batch: usize) -> (Run, Vec<Uuid>, Vec<Vec<u8>>) {
    let run = Run::new();
    let list: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": Uuid::new_v4(), "title": format!("task {i}"), "status": "todo",
                   "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-02-01T00:00:00Z"})
        })
        .collect();
    let (records, batches) = run.batches_of(
        &pairs(&[("tasks", &Value::Array(list).to_string())]),
        per_batch,
    );
    let ids = records.iter().filter_map(|r| r.id).collect();
    (run, ids, batches.into_iter().map(|b| b.body).collect())
}

#[tokio::test]
async fn concurrent_users_replays_and_retries_land_once_through_pgbouncer_transaction_pooling() {
    let started = Instant::now();
    let (app, _bouncer) = app_behind_bouncer(5_000).await;
    let users: Vec<_> = (0..5).map(|_| app.user()).collect();
    let runs: Vec<_> = users.iter().map(|_| tasks(60, 7)).collect();
    // Every batch of every user three times, all at once: the first copy applies, the others
    // replay its answer (or wait for it and then replay).
    let mut sends = tokio::task::JoinSet::new();
    for (user, (_, _, batches)) in users.iter().zip(&runs) {
        for body in batches {
            for _ in 0..3 {
                let (client, url) = (app.client.clone(), app.url("/v1/batches"));
                let (token, body) = (user.token.clone(), body.clone());
                sends.spawn(async move {
                    let response = client
                        .post(url)
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    (response.status(), response.text().await.unwrap_or_default())
                });
            }
        }
    }
    while let Some(sent) = sends.join_next().await {
        let (status, text) = sent.unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    for (user, (run, ids, batches)) in users.iter().zip(&runs) {
        assert_eq!(
            app.count(
                "SELECT count(*) FROM tasks WHERE user_id = $1 AND id = ANY($2)",
                &[&user.id, ids]
            )
            .await,
            i64::try_from(ids.len()).unwrap(),
            "every task of the user is stored"
        );
        assert_eq!(
            app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user.id])
                .await,
            i64::try_from(ids.len()).unwrap(),
            "and nothing else"
        );
        assert_eq!(
            app.count(
                "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND migration_id = $2 AND response <> 'null'::jsonb",
                &[&user.id, &run.migration_id]
            )
            .await,
            i64::try_from(batches.len()).unwrap(),
            "one stored answer per batch"
        );
        assert_eq!(
            app.count(
                "SELECT count(*) FROM ferry_received WHERE user_id = $1 AND migration_id = $2",
                &[&user.id, &run.migration_id]
            )
            .await,
            i64::try_from(ids.len()).unwrap(),
            "every record received once"
        );
        // The operator paths through PgBouncer too: the report, then rollback.
        let report: Value = app
            .get_json(&format!("/v1/migrations/{}", run.migration_id), &user.token)
            .await;
        assert_eq!(report["batches"], json!(batches.len()), "{report}");
    }
    let (first, (run, _, _)) = (&users[0], &runs[0]);
    let rolled = app.rollback(&first.token, run.migration_id).await;
    assert_eq!(rolled.status(), StatusCode::OK);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1",
            &[&first.id]
        )
        .await,
        0,
        "the rollback removed what the migration added"
    );
    eprintln!(
        "pgbouncer transaction pooling: {} users × {} batches × 3 copies in {:?}",
        users.len(),
        runs[0].2.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn statement_timeout_holds_through_pgbouncer_and_the_retry_lands_once() {
    let (app, _bouncer) = app_behind_bouncer(300).await;
    let user = app.user();
    let (_, ids, batches) = tasks(4, 2);
    app.send(&user.token, batches[0].clone()).await;
    // A second session (direct) holds the table: the next batch waits inside its transaction.
    let lock = ferry_server::db::connect(&app.db_config).await.unwrap();
    lock.batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let response = app.post_batch(&user.token, batches[1].clone()).await;
    let took = started.elapsed();
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    lock.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND sequence = 1",
            &[&user.id]
        )
        .await,
        0,
        "the timed-out batch left nothing"
    );
    let retried = app.send(&user.token, batches[1].clone()).await;
    assert!(!retried.replay);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND id = ANY($2)",
            &[&user.id, &ids]
        )
        .await,
        4
    );
    // `SET LOCAL`: the timeout did not stay on PgBouncer's server connections.
    let through = ferry_server::db::connect(&_bouncer.config()).await.unwrap();
    let after: String = through
        .query_typed_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, "0");
    eprintln!(
        "statement_timeout 300 ms through pgbouncer: the blocked batch failed after {took:?}"
    );
}
