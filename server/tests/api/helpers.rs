//! The test harness: one PostgreSQL cluster per test binary, one fresh database per test, and
//! a real server on port 0 over it.
//!
//! - Without `DATABASE_URL`, the first test to need a database starts an embedded cluster in
//!   `/tmp/ferry-test-pg-<pid>` (socket only, no fsync). A watchdog process stops it and
//!   deletes the folder when this test binary exits, however it exits; clusters left by runs
//!   whose watchdog was killed too are swept away at the next start.
//! - With `DATABASE_URL`, that server is used instead (its user must be allowed to create
//!   databases); the `t_<uuid>` databases are left behind.
//! - Quiet unless `TEST_LOG` is set.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_server::db;
use ferry_server::db::embedded_pg::{EmbeddedPg, EmbeddedPgOptions, Listen};
use ferry_server::startup::config::Settings;
use ferry_server::startup::secret::Secret;
use ferry_server::startup::telemetry;
use ferry_server::startup::{Application, Database};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// The field encryption key of every test server (64 hex characters).
pub const TEST_FIELD_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// The signing secret of every test server.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// Prefix of the folders holding test clusters: `<prefix><pid>[-<name>]`.
pub const CLUSTER_DIR_PREFIX: &str = "/tmp/ferry-test-pg-";

struct TestCluster {
    admin: tokio_postgres::Config,
    // Kept alive for the whole test binary: its watchdog stops the cluster at exit.
    _embedded: Option<EmbeddedPg>,
}

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

fn cluster() -> &'static TestCluster {
    match CLUSTER.get_or_init(start_cluster) {
        Ok(cluster) => cluster,
        Err(error) => panic!("cannot start the test database: {error}"),
    }
}

fn start_cluster() -> Result<TestCluster, String> {
    telemetry::init_for_tests();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let admin = db::parse_database_url(&Secret::new(url)).map_err(|e| e.to_string())?;
        return Ok(TestCluster {
            admin,
            _embedded: None,
        });
    }
    sweep_abandoned_clusters();
    let root = PathBuf::from(format!("{CLUSTER_DIR_PREFIX}{}", std::process::id()));
    // pg_stat_statements lets the ingest tests count the statements a batch executes. Its
    // entries are per database and every test has its own: past the default 5,000 the least
    // used are evicted while a test is counting (a count then comes out short), so it keeps more.
    let mut cluster = start_embedded_with(
        &root,
        Listen::UnixSocket {
            dir: root.join("run"),
            port: 5432,
        },
        true,
        vec![
            (
                "shared_preload_libraries".to_owned(),
                "pg_stat_statements".to_owned(),
            ),
            ("pg_stat_statements.max".to_owned(), "50000".to_owned()),
        ],
    )?;
    cluster
        .stop_on_exit(Some(&root))
        .map_err(|e| e.to_string())?;
    Ok(TestCluster {
        admin: cluster.config("postgres"),
        _embedded: Some(cluster),
    })
}

/// Starts a cluster with its data in `<root>/data` (`root` is emptied first); `ephemeral`
/// trades durability for speed (see [`EmbeddedPgOptions::ephemeral`]).
pub fn start_embedded(root: &Path, listen: Listen, ephemeral: bool) -> Result<EmbeddedPg, String> {
    start_embedded_with(root, listen, ephemeral, Vec::new())
}

/// [`start_embedded`] with more server settings.
pub fn start_embedded_with(
    root: &Path,
    listen: Listen,
    ephemeral: bool,
    settings: Vec<(String, String)>,
) -> Result<EmbeddedPg, String> {
    let _ignored = fs::remove_dir_all(root);
    fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    EmbeddedPg::start(EmbeddedPgOptions {
        data_dir: root.join("data"),
        listen,
        bin_dir: std::env::var_os("FERRY_PG_BIN").map(PathBuf::from),
        ephemeral,
        settings,
    })
    .map_err(|e| e.to_string())
}

/// Stops and deletes the clusters of test binaries that are no longer running.
fn sweep_abandoned_clusters() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(rest) = path
            .to_str()
            .and_then(|p| p.strip_prefix(CLUSTER_DIR_PREFIX))
        else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if pid.is_empty() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let _ignored = EmbeddedPg::stop_abandoned(&path.join("data"), None);
        let _ignored = fs::remove_dir_all(&path);
    }
}

/// A fresh, empty database `t_<uuid>` with a connection to it.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// How to connect to it.
    pub config: tokio_postgres::Config,
    /// A connection for SQL assertions.
    pub client: tokio_postgres::Client,
    /// A `DATABASE_URL` for it, when the harness runs its own cluster.
    pub conninfo: Option<String>,
}

/// Creates a fresh database (no schema migrations applied).
pub async fn fresh_database() -> TestDatabase {
    let cluster = cluster();
    let name = format!("t_{}", Uuid::new_v4().simple());
    let created = db::create_database_if_missing(&cluster.admin, &name)
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    assert!(created, "{name} already existed");
    let mut config = cluster.admin.clone();
    config.dbname(&name);
    let client = db::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("connect to {name}: {e}"));
    let conninfo = cluster
        ._embedded
        .as_ref()
        .map(|c| c.connection_string(&name));
    TestDatabase {
        name,
        config,
        client,
        conninfo,
    }
}

/// A running server over a fresh database with its schema migrations applied.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// A connection to the server's database.
    pub db: tokio_postgres::Client,
    /// The database's name.
    pub db_name: String,
    /// How to open another connection to the server's database (a second session).
    pub db_config: tokio_postgres::Config,
    /// The settings the server was built with.
    pub settings: Settings,
    /// A `DATABASE_URL` for the server's database, when the harness runs its own cluster.
    pub conninfo: Option<String>,
}

/// The repository root: the test servers' project dir.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The demo's app schema migrations folder, which every demo server is started with.
pub fn demo_migrations_dir() -> PathBuf {
    repo_root().join("examples/taskboard/migrations")
}

/// The demo's app schema migrations, read from [`demo_migrations_dir`].
pub fn demo_app_migrations() -> Vec<ferry_server::db::schema_migrations::SchemaMigration> {
    ferry_server::db::schema_migrations::load_app_migrations(&demo_migrations_dir())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The settings of a test server: port 0, the test secret, a small pool, the repository as
/// project dir and the demo's app schema migrations.
pub fn test_settings() -> Settings {
    let mut settings = Settings::defaults();
    settings.project_dir = repo_root();
    settings.app_migrations = Some(demo_migrations_dir());
    settings.port = 0;
    settings.jwt_secret = Some(Secret::new(TEST_SECRET.to_owned()));
    settings.field_key = Some(Secret::new(TEST_FIELD_KEY.to_owned()));
    settings.db_pool_size = 4;
    settings.www_dir = Some(PathBuf::from("/nonexistent/ferry-www"));
    settings.pkg_dir = Some(PathBuf::from("/nonexistent/ferry-pkg"));
    settings
}

/// A server with the test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server with the test settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = fresh_database().await;
    let mut settings = test_settings();
    configure(&mut settings);
    let app =
        Application::build_with_database(&settings, Database::external(database.config.clone()))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the server does not start: {}",
                    ferry_server::error_chain(&e)
                )
            });
    let address = app.base_url();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        db: database.client,
        db_name: database.name,
        db_config: database.config,
        settings,
        conninfo: database.conninfo,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn sign(algorithm: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("sign: {e}"))
}

impl TestApp {
    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A valid token for `user`.
    pub fn token_for(&self, user: Uuid) -> String {
        sign(
            Algorithm::HS256,
            TEST_SECRET,
            &json!({ "sub": user, "exp": now() + 600, "iat": now() }),
        )
    }

    /// A token for `user` that expired an hour ago.
    pub fn expired_token(&self, user: Uuid) -> String {
        sign(
            Algorithm::HS256,
            TEST_SECRET,
            &json!({ "sub": user, "exp": now() - 3600, "iat": now() - 7200 }),
        )
    }

    /// A token for `user` signed with another secret.
    pub fn forged_token(&self, user: Uuid) -> String {
        sign(
            Algorithm::HS256,
            "not-the-server-secret-0123456789abcdef0123",
            &json!({ "sub": user, "exp": now() + 600 }),
        )
    }

    /// A token for `user` with the right secret but HS512.
    pub fn hs512_token(&self, user: Uuid) -> String {
        sign(
            Algorithm::HS512,
            TEST_SECRET,
            &json!({ "sub": user, "exp": now() + 600 }),
        )
    }

    /// An unsigned token (`alg: none`) for `user`.
    pub fn alg_none_token(&self, user: Uuid) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(json!({ "sub": user, "exp": now() + 600 }).to_string());
        format!("{header}.{claims}.")
    }

    /// A valid token whose `sub` is `subject` (any string an identity provider might issue).
    pub fn subject_token(&self, subject: &str) -> String {
        sign(
            Algorithm::HS256,
            TEST_SECRET,
            &json!({ "sub": subject, "exp": now() + 600 }),
        )
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with `Authorization: Bearer token`.
    pub async fn get_authed(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` as the token's user, with the body read as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, token: &str) -> T {
        self.get_authed(path, token)
            .await
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: the body is not the expected JSON: {e}"))
    }

    /// `POST path` with a raw JSON body.
    pub async fn post_raw_json(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

/// Reads an error response, checks it has our shape, `code` and the request id of its
/// `X-Request-Id` header, and returns its body.
pub async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let got_status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    assert_eq!(got_status, status, "body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}, body: {text}"
    );
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    let keys: Vec<&String> = body["error"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert!(
        keys.iter()
            .all(|k| ["code", "message", "details", "request_id"].contains(&k.as_str())),
        "unexpected keys in {body}"
    );
    // Every error body names its request, as the `X-Request-Id` header does.
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty() && Some(id) == request_id.as_deref()),
        "request id {request_id:?} (header) not in {body}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error` at the top: {body}"
    );
    body
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Batches, built the way the browser builds them: ferry-core's pipeline, then its batcher.
// ---------------------------------------------------------------------------------------------

/// The demo spec (`specs/taskboard.json`), parsed once.
pub fn demo_spec() -> &'static ferry_core::spec::Spec {
    static SPEC: OnceLock<ferry_core::spec::Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        ferry_core::spec::Spec::parse(include_str!("../../../specs/taskboard.json"))
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// localStorage pairs from plain text (JSON values written as a browser would store them).
pub fn pairs(
    list: &[(&str, &str)],
) -> Vec<(
    ferry_core::lossless::LosslessString,
    ferry_core::lossless::LosslessString,
)> {
    list.iter()
        .map(|(k, v)| {
            (
                ferry_core::lossless::LosslessString::from_unicode(k),
                ferry_core::lossless::LosslessString::from_unicode(v),
            )
        })
        .collect()
}

/// One browser's migration run: its id, device and start time.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// The migration id.
    pub migration_id: Uuid,
    /// The device id.
    pub device_id: Uuid,
    /// `$migrated_at`.
    pub migrated_at_ms: i64,
}

impl Run {
    /// A fresh run on a fresh device.
    pub fn new() -> Self {
        Self {
            migration_id: Uuid::new_v4(),
            device_id: Uuid::new_v4(),
            migrated_at_ms: 1_750_000_000_000,
        }
    }

    /// The header of this run's batches.
    pub fn header(&self) -> ferry_core::wire::BatchHeader {
        ferry_core::wire::BatchHeader::new(demo_spec(), self.migration_id, &self.context())
    }

    /// The pipeline context.
    pub fn context(&self) -> ferry_core::pipeline::Context {
        ferry_core::pipeline::Context {
            device_id: self.device_id,
            migrated_at_ms: self.migrated_at_ms,
        }
    }

    /// Runs the pipeline over `pairs` and builds the batches from sequence 0.
    pub fn batches(
        &self,
        pairs: &[(
            ferry_core::lossless::LosslessString,
            ferry_core::lossless::LosslessString,
        )],
    ) -> (
        Vec<ferry_core::pipeline::Record>,
        Vec<ferry_core::wire::EncodedBatch>,
    ) {
        self.batches_of(pairs, ferry_core::wire::BatchLimits::default().max_records)
    }

    /// [`Run::batches`] in batches of at most `max_records` records.
    pub fn batches_of(
        &self,
        pairs: &[(
            ferry_core::lossless::LosslessString,
            ferry_core::lossless::LosslessString,
        )],
        max_records: usize,
    ) -> (
        Vec<ferry_core::pipeline::Record>,
        Vec<ferry_core::wire::EncodedBatch>,
    ) {
        let records = ferry_core::pipeline::process(demo_spec(), pairs, &self.context());
        let batches = ferry_core::wire::build_batches(
            demo_spec(),
            &self.header(),
            &records,
            0..records.len(),
            0,
            ferry_core::wire::BatchLimits {
                max_records,
                ..ferry_core::wire::BatchLimits::default()
            },
        );
        (records, batches)
    }

    /// The single batch of `pairs` (panics when they need more than one).
    pub fn batch(&self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let (_, mut batches) = self.batches(&self::pairs(pairs));
        assert_eq!(batches.len(), 1, "expected one batch");
        batches.remove(0).body
    }
}

/// `body`, a `ferry-batch/2` batch made from `records`, as the `ferry-batch/1` batch an older
/// browser made of them: each record with its content hash, no digest in the header.
pub fn as_v1(body: &[u8], records: &[ferry_core::pipeline::Record]) -> Vec<u8> {
    let mut batch: Value = serde_json::from_slice(body).unwrap();
    batch["header"]["format"] = json!(ferry_core::wire::WIRE_FORMAT_V1);
    batch["header"].as_object_mut().unwrap().remove("digest");
    for item in batch["records"].as_array_mut().unwrap() {
        let id: Uuid = serde_json::from_value(item["id"].clone()).unwrap();
        let record = records
            .iter()
            .find(|r| r.id == Some(id) && r.outcome.is_accepted())
            .unwrap_or_else(|| panic!("no accepted record with id {id}"));
        item["hash"] = json!(record.hash.to_hex());
    }
    serde_json::to_vec(&batch).unwrap()
}

/// The batch of `pairs` under `spec` for `run`, numbered `sequence`.
pub fn batch_under(
    spec: &ferry_core::spec::Spec,
    run: &Run,
    pairs_: &[(&str, &str)],
    sequence: u32,
) -> Vec<u8> {
    let header = ferry_core::wire::BatchHeader::new(spec, run.migration_id, &run.context());
    let records = ferry_core::pipeline::process(spec, &pairs(pairs_), &run.context());
    let mut batches = ferry_core::wire::build_batches(
        spec,
        &header,
        &records,
        0..records.len(),
        sequence,
        ferry_core::wire::BatchLimits::default(),
    );
    assert_eq!(batches.len(), 1);
    batches.remove(0).body
}

/// A user id and its token.
pub struct User {
    /// The id.
    pub id: Uuid,
    /// A valid token.
    pub token: String,
}

impl TestApp {
    /// A new user with a valid token.
    pub fn user(&self) -> User {
        let id = Uuid::new_v4();
        User {
            id,
            token: self.token_for(id),
        }
    }

    /// The statements this test's database has run, with their calls, from
    /// `pg_stat_statements` (the test cluster preloads it; the extension is created here).
    pub async fn executed_statements(&self) -> std::collections::BTreeMap<String, i64> {
        self.db
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .unwrap();
        self.db
            .query(
                "SELECT s.query, sum(s.calls)::bigint FROM pg_stat_statements s
                   JOIN pg_database d ON d.oid = s.dbid
                  WHERE d.datname = current_database() AND s.query NOT ILIKE '%pg_stat_statements%'
                  GROUP BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// `POST /v1/batches` with `body`.
    pub async fn post_batch(&self, token: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url("/v1/batches"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/batches: {e}"))
    }

    /// Sends a batch and expects 200.
    pub async fn send(&self, token: &str, body: Vec<u8>) -> ferry_server::ingest::BatchResult {
        let response = self.post_batch(token, body).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// `POST /v1/migrations/{migration_id}/rollback` as the holder of `token`.
    pub async fn rollback(&self, token: &str, migration_id: Uuid) -> reqwest::Response {
        self.post_json_authed(
            &format!("/v1/migrations/{migration_id}/rollback"),
            token,
            &serde_json::json!({}),
        )
        .await
    }

    /// `POST path` with a JSON body and a token.
    pub async fn post_json_authed(
        &self,
        path: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// One text cell of `sql` (a single row and column).
    pub async fn text(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> String {
        self.db
            .query_one(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Moves migration `migration_id` `days` into the past, as if it had started and sent its
    /// batches then: the run's start and latest batch time, and its ledger rows.
    pub async fn age_run(&self, migration_id: Uuid, days: i32) {
        for sql in [
            "UPDATE ferry_ingest_ledger SET created_at = now() - make_interval(days => $2) WHERE migration_id = $1",
            "UPDATE ferry_migration_runs SET started_at = now() - make_interval(days => $2),
                    last_batch_at = now() - make_interval(days => $2)
              WHERE migration_id = $1",
        ] {
            self.db
                .execute(sql, &[&migration_id, &days])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    /// The first column of every row of `sql`, as text.
    pub async fn texts(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<String> {
        self.db
            .query(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// One bigint cell of `sql`.
    pub async fn count(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        self.db
            .query_one(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

/// The outcome of the record with target id `id` in `result`.
pub fn outcome_of(
    result: &ferry_server::ingest::BatchResult,
    id: Uuid,
) -> ferry_server::ingest::RecordOutcome {
    result
        .outcomes
        .iter()
        .find(|o| o.id == Some(id))
        .unwrap_or_else(|| panic!("no outcome for {id} in {result:?}"))
        .outcome
}

/// The target id of a record of `kind` with legacy id `legacy`, as the pipeline derives it.
pub fn target_id(kind: &str, legacy: &str) -> Uuid {
    let spec = demo_spec();
    let kind = spec.kind(kind).unwrap_or_else(|| panic!("no kind {kind}"));
    ferry_core::pipeline::target_id(
        spec,
        kind,
        &ferry_core::lossless::LosslessString::from_unicode(legacy),
        &Run::new().context(),
    )
}

// ---------------------------------------------------------------------------------------------
// The real binary as a child process (crash tests, log scans).
// ---------------------------------------------------------------------------------------------

/// A `ferry-server serve` child process over one database; SIGKILLed on drop. Everything it
/// prints (stdout and stderr) is kept, line by line.
pub struct ServerProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary in dev mode over `conninfo` with the test secrets, port 0, no rate
    /// limit and `RUST_LOG=info`; `env` adds or overrides variables. Waits (at most 60 s) for
    /// its "listening on" line.
    pub async fn start(conninfo: &str, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        let mut command = crate::binary::ferry_server(&["serve"]);
        command
            .env("DATABASE_URL", conninfo)
            .env("FERRY_DEV", "true")
            .env("FERRY_JWT_SECRET", TEST_SECRET)
            .env("FERRY_FIELD_KEY", TEST_FIELD_KEY)
            .env("FERRY_PORT", "0")
            .env("FERRY_RATE_LIMIT_PER_SECOND", "0")
            .env("FERRY_WWW_DIR", "/nonexistent/ferry-www")
            .env("FERRY_PKG_DIR", "/nonexistent/ferry-pkg")
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ferry-server: {e}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let mut server = Self {
            child,
            url: String::new(),
            log,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let found = server.log_lines().iter().find_map(|line| {
                let (_, rest) = line.split_once("listening on http://")?;
                Some(
                    rest.chars()
                        // A text line ends the address with a space, a JSON line with a quote.
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect::<String>(),
                )
            });
            if let Some(address) = found {
                server.url = format!("http://{address}");
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "ferry-server exited ({status}) before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ferry-server did not listen within 60 s:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The lines printed so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything printed so far, as one text.
    pub fn log(&self) -> String {
        self.log_lines().join("\n")
    }

    /// SIGKILL (no shutdown at all) and reap.
    pub fn kill(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
    }

    /// Waits at most `timeout` for the process to exit on its own.
    pub async fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A [`TestApp`] whose requests go to `url` (e.g. a [`ServerProcess`]) over `database`.
pub fn app_at(url: &str, database: TestDatabase) -> TestApp {
    TestApp {
        address: url.to_owned(),
        client: reqwest::Client::new(),
        db: database.client,
        db_name: database.name,
        db_config: database.config,
        settings: test_settings(),
        conninfo: database.conninfo,
    }
}
