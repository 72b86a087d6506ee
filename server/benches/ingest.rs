//! Benchmarks of the ingest server (issue 6, items 3, 6 and the server-RSS part of 7).
//!
//! One embedded PostgreSQL cluster (default settings: durable, `fsync` on; the same cluster
//! and settings for every contender), the **release** `ferry-server` binary started as real
//! processes over it, and real HTTP on loopback:
//!
//! 1. **Ingest**: N task records (`specs/taskboard.json`, kind `tasks`, policy `newest`) from
//!    `ferry-sample`'s seeded generator (clean: no broken records, no hostile strings), made
//!    into batches by ferry-core's pipeline and batcher exactly as the browser makes them,
//!    posted by concurrent clients (one user and one migration each, batches in order) into an
//!    empty table; then the same ids again, edited, under a second migration, so every record
//!    takes the conflict path (`newest` → `updated`, with before-images). Against, in the same
//!    run on the same database: one binary `COPY` of the same rows into the same (emptied)
//!    table, and the naive migrator, one `INSERT` per record per transaction (timed on a
//!    subset, with one connection and with as many connections as the HTTP clients).
//! 2. **Load**: many simulated users (each its own token, migration and a few batches) at once
//!    against fresh server processes (1; 2 on the same database, users split between them; 3
//!    behind an nginx load balancer, round robin, with per-process then shared rate-limit
//!    buckets, as docs/scaling.md describes), the generator's requests in flight bounded, with a hard time limit: throughput,
//!    p50/p99/max batch latency, errors, SQL checks that every record is stored exactly once,
//!    and each server's peak RSS (`VmHWM`).
//!
//! Any broken step (an error response, a count that differs from what was sent, a duplicate)
//! makes the program exit non-zero, so the quick mode is a working check in CI.
//!
//! Run: `cargo build --release -p ferry-server && cargo bench -p ferry-server --bench ingest --
//! [--quick] [--json FILE] [--profile]`. Other options: `--records N`, `--clients N`,
//! `--runs N` (ingest), `--load-runs N`, `--users N`, `--per-user N`, `--load-batch N`,
//! `--inflight N`, `--naive N`. `FERRY_SERVER_BIN` names the server binary (default
//! `target/release/ferry-server`); `FERRY_PG_BIN` the PostgreSQL binaries.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{Cell, Context, Record};
use ferry_core::spec::{ColumnType, Spec};
use ferry_core::wire::{BatchHeader, BatchLimits, EncodedBatch, build_batches};
use ferry_sample::{LegacyApp, SampleOptions};
use ferry_server::db::embedded_pg::{EmbeddedPg, EmbeddedPgOptions, Listen};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

#[path = "../tests/support/balancer.rs"]
mod balancer;
use balancer::Balancer;

type Res<T> = Result<T, String>;

/// Adds what was being done to any error.
trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Res<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

const SPEC_TEXT: &str = include_str!("../../specs/taskboard.json");
const JWT_SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const FIELD_KEY: &str = "be7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7c";
/// Tables the server writes, emptied between runs.
const TABLES: &str = "tasks, ferry_ingest_ledger, ferry_migration_runs, ferry_before_image_rows, ferry_before_image_batches, \
                      ferry_created_rows, ferry_received_batches, ferry_quarantine, ferry_conflicts";
/// Rows a rollback knows how to undo: recorded as created (one array of ids per statement) and
/// before-images (one per stored row changed).
const ROLLBACK_ROWS: &str = "SELECT (SELECT coalesce(sum(cardinality(row_ids)), 0) FROM ferry_created_rows)::int8, \
                             (SELECT count(*) FROM ferry_before_images)";

#[derive(Debug, Clone)]
struct Params {
    quick: bool,
    json: Option<PathBuf>,
    profile: bool,
    records: usize,
    clients: usize,
    runs: usize,
    naive: usize,
    load_runs: usize,
    users: usize,
    per_user: usize,
    load_batch: usize,
    inflight: usize,
    load_limit_secs: u64,
}

impl Params {
    fn parse() -> Res<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut p = if quick {
            Self {
                quick,
                json: None,
                profile: false,
                records: 4_000,
                clients: 4,
                runs: 1,
                naive: 500,
                load_runs: 1,
                users: 20,
                per_user: 40,
                load_batch: 20,
                inflight: 8,
                load_limit_secs: 60,
            }
        } else {
            Self {
                quick,
                json: None,
                profile: false,
                records: 200_000,
                clients: 8,
                runs: 3,
                naive: 10_000,
                load_runs: 3,
                users: 1_000,
                per_user: 200,
                load_batch: 50,
                inflight: 64,
                load_limit_secs: 300,
            }
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut number = |name: &str| -> Res<usize> {
                let value = it.next().ok_or(format!("{name} needs a value"))?;
                value
                    .parse()
                    .ctx(format!("{name}: not a number: {value:?}"))
            };
            match arg.as_str() {
                "--quick" | "--bench" => {}
                "--profile" => p.profile = true,
                "--json" => {
                    p.json = Some(PathBuf::from(it.next().ok_or("--json needs a file name")?));
                }
                "--records" => p.records = number("--records")?,
                "--clients" => p.clients = number("--clients")?.max(1),
                "--runs" => p.runs = number("--runs")?.max(1),
                "--naive" => p.naive = number("--naive")?,
                "--load-runs" => p.load_runs = number("--load-runs")?,
                "--users" => p.users = number("--users")?.max(1),
                "--per-user" => p.per_user = number("--per-user")?.max(1),
                "--load-batch" => p.load_batch = number("--load-batch")?.max(1),
                "--inflight" => p.inflight = number("--inflight")?.max(1),
                "--load-limit" => p.load_limit_secs = number("--load-limit")? as u64,
                other if other.starts_with("--") => {
                    return Err(format!(
                        "unknown option {other:?} (see the top of benches/ingest.rs)"
                    ));
                }
                _ => {} // cargo's filter argument, if any
            }
        }
        p.naive = p.naive.min(p.records);
        Ok(p)
    }

    fn to_json(&self) -> Value {
        json!({
            "quick": self.quick, "records": self.records, "clients": self.clients,
            "ingest_runs": self.runs, "naive_subset": self.naive, "load_runs": self.load_runs,
            "users": self.users, "records_per_user": self.per_user,
            "load_batch_records": self.load_batch, "load_inflight": self.inflight,
            "load_time_limit_s": self.load_limit_secs,
        })
    }
}

fn main() -> ExitCode {
    let params = match Params::parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ingest bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ingest bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(params)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ningest bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Environment: the server binary, the cluster, server processes.
// ---------------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn server_binary() -> Res<PathBuf> {
    let path = std::env::var_os("FERRY_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/ferry-server"));
    let meta = std::fs::metadata(&path).map_err(|e| {
        format!(
            "the release server binary {} is missing ({e}): run `cargo build --release -p ferry-server` first (or set FERRY_SERVER_BIN)",
            path.display()
        )
    })?;
    // A binary older than the server's sources measures old code: say so loudly.
    if let Ok(built) = meta.modified() {
        let newest = newest_mtime(&repo_root().join("server/src"))
            .max(newest_mtime(&repo_root().join("ferry-core/src")));
        if newest.is_some_and(|n| n > built) {
            eprintln!(
                "WARNING: {} is older than the sources in server/src or ferry-core/src: run `cargo build --release -p ferry-server` to measure the current code",
                path.display()
            );
        }
    }
    Ok(path)
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// One `ferry-server serve` process; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

/// How the load run's server processes are deployed.
#[derive(Clone, Copy)]
struct Deployment {
    /// `ferry-server` processes on the one database.
    processes: usize,
    /// Clients talk to an nginx in front of them (round robin) rather than to each directly.
    nginx: bool,
    /// The processes share their per-user rate-limit buckets in PostgreSQL
    /// (`FERRY_RATE_LIMIT_SHARED=true`) instead of each holding its own.
    shared_limits: bool,
}

impl Deployment {
    fn describe(self) -> String {
        let mut d = format!("{} server process(es)", self.processes);
        if self.nginx {
            d.push_str(" behind nginx");
        }
        if self.shared_limits {
            d.push_str(", rate-limit buckets shared in PostgreSQL");
        }
        d
    }
}

impl Server {
    fn start(
        binary: &Path,
        database_url: &str,
        work: &Path,
        name: &str,
        shared_limits: bool,
    ) -> Res<Self> {
        let log_path = work.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).ctx(format!("create {}", log_path.display()))?;
        let mut child = Command::new(binary)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FERRY_RATE_LIMIT_SHARED", shared_limits.to_string())
            .env("DATABASE_URL", database_url)
            .env("FERRY_SPEC", repo_root().join("specs/taskboard.json"))
            .env(
                "FERRY_APP_MIGRATIONS",
                repo_root().join("examples/taskboard/migrations"),
            )
            .env("FERRY_PROJECT_DIR", work)
            .env("FERRY_HOST", "127.0.0.1")
            .env("FERRY_PORT", "0")
            .env("FERRY_JWT_SECRET", JWT_SECRET)
            .env("FERRY_FIELD_KEY", FIELD_KEY)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .ctx(format!("start {}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Drained to the end so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ignored = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, rest)) = line.split_once("listening on ") {
                        break rest.trim().to_owned();
                    }
                }
                Err(_) => {
                    let _ignored = child.kill();
                    let _ignored = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    return Err(format!(
                        "server {name} did not say where it listens within 60 s; its log:\n{log}"
                    ));
                }
            }
        };
        Ok(Self { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process with SIGTERM (SIGKILL after 10 s).
    fn stop(mut self) {
        let _ignored = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ignored = self.child.kill();
        }
        let _ignored = self.child.wait();
    }
}

/// `VmHWM` (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Res<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ctx(format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or(format!("no VmHWM in /proc/{pid}/status"))?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or(format!("unreadable {line:?}"))?;
    Ok(kib / 1024.0)
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32, ticks: f64) -> Option<(f64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid: u32 = fields.get(1)?.parse().ok()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(((utime + stime) / ticks, ppid))
}

/// CPU seconds of the postmaster and all its children (backends, checkpointer, WAL writer…).
fn postgres_cpu_secs(postmaster: u32, ticks: f64) -> f64 {
    let mut total = cpu_secs(postmaster, ticks).map_or(0.0, |c| c.0);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((cpu, ppid)) = cpu_secs(pid, ticks)
                && ppid == postmaster
            {
                total += cpu;
            }
        }
    }
    total
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds used by the server processes, PostgreSQL and this program.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSnapshot {
    server: f64,
    postgres: f64,
    client: f64,
}

struct CpuMeter {
    ticks: f64,
    postmaster: u32,
}

impl CpuMeter {
    fn snapshot(&self, servers: &[u32]) -> CpuSnapshot {
        CpuSnapshot {
            server: servers
                .iter()
                .filter_map(|&p| cpu_secs(p, self.ticks))
                .map(|c| c.0)
                .sum(),
            postgres: postgres_cpu_secs(self.postmaster, self.ticks),
            client: cpu_secs(std::process::id(), self.ticks).map_or(0.0, |c| c.0),
        }
    }

    fn since(&self, servers: &[u32], before: CpuSnapshot) -> Value {
        let now = self.snapshot(servers);
        json!({
            "server_cpu_s": round3(now.server - before.server),
            "postgres_cpu_s": round3(now.postgres - before.postgres),
            "client_cpu_s": round3(now.client - before.client),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Data: legacy tasks from ferry-sample (the generator of the tests and the demo), made into
// batches by ferry-core's pipeline and batcher exactly as the browser makes them.
// ---------------------------------------------------------------------------------------------

const DAY_MS: i64 = 86_400_000;

/// The `tasks` value of a user's legacy localStorage: `count` clean tasks from the seeded
/// generator (no broken records, no hostile strings: every record is stored), or, `edited`,
/// the same tasks edited a day later.
fn tasks_value(seed: u64, count: usize, edited: bool) -> Res<LosslessString> {
    let mut options = SampleOptions::new(LegacyApp::Taskboard);
    options.seed = seed;
    options.bulk_records = Some(u32::try_from(count).ctx("tasks per user")?);
    // Only the tasks are sent: the other kinds stay at their smallest.
    options.target_bytes = 0;
    options.invalid_fraction = 0.0;
    options.hostile = false;
    let tasks = ferry_sample::generate(&options)
        .pairs
        .into_iter()
        .find(|(key, _)| key.as_escaped() == "tasks")
        .map(|(_, value)| value)
        .ok_or("the sample has no `tasks` key")?;
    if edited {
        edit_tasks(&tasks)
    } else {
        Ok(tasks)
    }
}

/// The same tasks edited a day after their last change: the title gains " (edited)" (what
/// `check_stored` looks for) and `updatedAt` is newer, so the `newest` policy takes each one.
fn edit_tasks(tasks: &LosslessString) -> Res<LosslessString> {
    // Without hostile strings the value holds no lossless escape: it is plain JSON text.
    let text = tasks
        .to_unicode()
        .ok_or("a lone surrogate in a clean sample")?;
    let mut tasks: Vec<serde_json::Map<String, Value>> =
        serde_json::from_str(&text).ctx("read the sample's tasks")?;
    for task in &mut tasks {
        let last = ["updatedAt", "createdAt"]
            .iter()
            .find_map(|field| task.get(*field).and_then(Value::as_str))
            .ok_or("a sample task without createdAt")?;
        let ms = ferry_core::timestamp::parse_iso8601(last).ctx("a sample task's date")?;
        task.insert(
            "updatedAt".to_owned(),
            json!(ferry_core::timestamp::format(ms + DAY_MS)),
        );
        let title = task
            .get("title")
            .and_then(Value::as_str)
            .ok_or("a sample task without a title")?;
        task.insert("title".to_owned(), json!(format!("{title} (edited)")));
    }
    let text = serde_json::to_string(&tasks).ctx("write the edited tasks")?;
    Ok(LosslessString::from_unicode(&text))
}

/// One browser's migration: its user, token and batches, and the rows they should produce.
struct Migration {
    user: Uuid,
    token: String,
    ids: Vec<Uuid>,
    records: Vec<Record>,
    batches: Vec<EncodedBatch>,
}

impl Migration {
    fn records_sent(&self) -> usize {
        self.records.len()
    }

    fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.body.len()).sum()
    }
}

fn token(user: Uuid) -> Res<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": user, "iat": now, "exp": now + 3 * 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .ctx("sign a token")
}

/// `count` tasks of `user` (the sample of seed `seed`; `edited`: edited a day later), in
/// batches.
fn migration(
    spec: &Spec,
    user: Uuid,
    seed: u64,
    count: usize,
    edited: bool,
    limits: BatchLimits,
) -> Res<Migration> {
    let pairs = vec![(
        LosslessString::from_unicode("tasks"),
        tasks_value(seed, count, edited)?,
    )];
    let ctx = Context {
        device_id: Uuid::from_u64_pair(seed, 7),
        migrated_at_ms: 1_760_000_000_000,
    };
    let records = ferry_core::pipeline::process(spec, &pairs, &ctx);
    let accepted = records.iter().filter(|r| r.outcome.is_accepted()).count();
    if accepted != count || records.len() != count {
        return Err(format!(
            "the sample has {count} tasks but the pipeline accepted {accepted} of {} records: {:?}",
            records.len(),
            records
                .iter()
                .find(|r| !r.outcome.is_accepted())
                .map(|r| &r.outcome)
        ));
    }
    let migration_id = Uuid::new_v4();
    let header = BatchHeader::new(spec, migration_id, &ctx);
    let batches = build_batches(spec, &header, &records, 0..records.len(), 0, limits);
    let ids = records.iter().filter_map(|r| r.id).collect();
    Ok(Migration {
        user,
        token: token(user)?,
        ids,
        records,
        batches,
    })
}

/// `total` records split over the users, the sample of seed `first_seed + i` for user `i`.
fn migrations(
    spec: &Spec,
    users: &[Uuid],
    total: usize,
    first_seed: u64,
    edited: bool,
    limits: BatchLimits,
) -> Res<Vec<Migration>> {
    let parts = users.len();
    let mut out = Vec::with_capacity(parts);
    for (i, &user) in users.iter().enumerate() {
        let count = total / parts + usize::from(i < total % parts);
        out.push(migration(
            spec,
            user,
            first_seed + i as u64,
            count,
            edited,
            limits,
        )?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Statistics.
// ---------------------------------------------------------------------------------------------

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn summary(values: &[f64]) -> Value {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Value::Null;
    }
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    json!({ "median": round3(median), "min": round3(v[0]), "max": round3(v[v.len() - 1]), "runs": v.len() })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn med(value: &Value) -> f64 {
    value["median"].as_f64().unwrap_or(f64::NAN)
}

fn fmt_summary(value: &Value, unit: &str) -> String {
    format!(
        "{:>10.0} {unit} (min {:.0}, max {:.0}, n={})",
        med(value),
        value["min"].as_f64().unwrap_or(f64::NAN),
        value["max"].as_f64().unwrap_or(f64::NAN),
        value["runs"].as_u64().unwrap_or(0)
    )
}

// ---------------------------------------------------------------------------------------------
// HTTP: sending a migration's batches.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Answer {
    replay: bool,
    counts: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Posts one batch; checks 200, not a replay, and `expected` outcome for every record.
async fn post_batch(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    batch: &EncodedBatch,
    expected: &str,
) -> Res<()> {
    let response = http
        .post(format!("{url}/v1/batches"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(batch.body.clone())
        .send()
        .await
        .ctx(format!("POST /v1/batches (batch {})", batch.sequence))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .ctx(format!("read the answer to batch {}", batch.sequence))?;
    if !status.is_success() {
        return Err(format!(
            "batch {}: HTTP {status}: {}",
            batch.sequence,
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ));
    }
    let answer: Answer =
        serde_json::from_slice(&body).ctx(format!("batch {}: answer", batch.sequence))?;
    let got = answer
        .counts
        .get("tasks")
        .and_then(|c| c.get(expected))
        .copied()
        .unwrap_or(0);
    if answer.replay || got != batch.members.len() as u64 {
        return Err(format!(
            "batch {}: expected {} records {expected}, the server answered replay={} counts={:?}",
            batch.sequence,
            batch.members.len(),
            answer.replay,
            answer.counts
        ));
    }
    Ok(())
}

/// Sends every migration's batches in order, one client per migration, split over `urls`.
/// Returns the wall time and every batch latency (ms).
async fn send_all(
    http: &reqwest::Client,
    urls: &[String],
    migrations: &Arc<Vec<Migration>>,
    expected: &'static str,
) -> Res<(f64, Vec<f64>)> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for m in 0..migrations.len() {
        let http = http.clone();
        let url = urls[m % urls.len()].clone();
        let migrations = Arc::clone(migrations);
        tasks.spawn(async move {
            let migration = &migrations[m];
            let mut latencies = Vec::with_capacity(migration.batches.len());
            for batch in &migration.batches {
                let t = Instant::now();
                post_batch(&http, &url, &migration.token, batch, expected).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Res::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.ctx("a client task")??);
    }
    Ok((start.elapsed().as_secs_f64(), all))
}

// ---------------------------------------------------------------------------------------------
// SQL: the contenders and the checks.
// ---------------------------------------------------------------------------------------------

async fn connect(cluster: &EmbeddedPg, db: &str) -> Res<tokio_postgres::Client> {
    let (client, connection) = cluster
        .config(db)
        .connect(tokio_postgres::NoTls)
        .await
        .ctx(format!("connect to {db}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("ingest bench: database connection: {e}");
        }
    });
    Ok(client)
}

async fn reset(db: &tokio_postgres::Client) -> Res<()> {
    db.batch_execute(&format!("TRUNCATE {TABLES}; CHECKPOINT"))
        .await
        .ctx("truncate and checkpoint")
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> Res<i64> {
    db.query_one(sql, &[])
        .await
        .and_then(|r| r.try_get(0))
        .ctx(sql)
}

/// (rows recorded as created, before-images): [`ROLLBACK_ROWS`].
async fn rollback_rows(db: &tokio_postgres::Client) -> Res<(i64, i64)> {
    db.query_one(ROLLBACK_ROWS, &[])
        .await
        .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .ctx(ROLLBACK_ROWS)
}

/// Every sent (user, id) is in `tasks` exactly once, and nothing else is; `edited` checks
/// which version won; `ledger` is the number of answered batches the ledger must hold.
async fn check_stored(
    db: &tokio_postgres::Client,
    migrations: &[Migration],
    edited: Option<bool>,
    ledger: usize,
) -> Res<()> {
    let mut users = Vec::new();
    let mut ids = Vec::new();
    for m in migrations {
        for &id in &m.ids {
            users.push(m.user);
            ids.push(id);
        }
    }
    let sent = ids.len() as i64;
    let total = count(db, "SELECT count(*) FROM tasks").await?;
    let distinct = count(db, "SELECT count(DISTINCT (user_id, id)) FROM tasks").await?;
    let matched: i64 = db
        .query_one(
            "SELECT count(*) FROM tasks t JOIN unnest($1::uuid[], $2::uuid[]) AS e(u, i) \
             ON t.user_id = e.u AND t.id = e.i",
            &[&users, &ids],
        )
        .await
        .and_then(|r| r.try_get(0))
        .ctx("match the sent ids")?;
    if total != sent || distinct != sent || matched != sent {
        return Err(format!(
            "PostgreSQL holds {total} task rows ({distinct} distinct, {matched} of the sent ids) for {sent} records sent"
        ));
    }
    let per_user: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT e.u, count(t.id) AS n, max(e.n) AS want \
             FROM unnest($1::uuid[], $2::int8[]) AS e(u, n) LEFT JOIN tasks t ON t.user_id = e.u \
             GROUP BY e.u) x WHERE n <> want",
            &[
                &migrations.iter().map(|m| m.user).collect::<Vec<_>>(),
                &migrations
                    .iter()
                    .map(|m| m.records_sent() as i64)
                    .collect::<Vec<_>>(),
            ],
        )
        .await
        .and_then(|r| r.try_get(0))
        .ctx("count rows per user")?;
    if per_user != 0 {
        return Err(format!(
            "{per_user} users do not have exactly the rows they sent"
        ));
    }
    if let Some(edited) = edited {
        let wrong = count(
            db,
            &format!("SELECT count(*) FROM tasks WHERE (title LIKE '% (edited)') <> {edited}"),
        )
        .await?;
        if wrong != 0 {
            return Err(format!(
                "{wrong} rows do not hold the {} version",
                if edited { "newer" } else { "first" }
            ));
        }
    }
    let answered = count(
        db,
        "SELECT count(*) FROM ferry_ingest_ledger WHERE response <> 'null'::jsonb",
    )
    .await?;
    if answered != ledger as i64 {
        return Err(format!(
            "the ledger holds {answered} answered batches, expected {ledger}"
        ));
    }
    Ok(())
}

/// A task row as typed SQL values, in `COLUMNS` order.
type SqlRow = Vec<Box<dyn ToSql + Sync + Send>>;

fn sql_rows(spec: &Spec, migrations: &[Migration]) -> Res<(Vec<String>, Vec<Type>, Vec<SqlRow>)> {
    let kind = spec.kind("tasks").ok_or("no kind tasks in the spec")?;
    let mut columns = vec!["user_id".to_owned(), kind.id.column.clone()];
    let mut types = vec![Type::UUID, Type::UUID];
    if let Some(legacy) = &kind.id.legacy_column {
        columns.push(legacy.clone());
        types.push(Type::TEXT);
    }
    for f in &kind.fields {
        columns.push(f.column.clone());
        types.push(match f.column_type() {
            ColumnType::Text => Type::TEXT,
            ColumnType::Timestamptz => Type::TIMESTAMPTZ,
            ColumnType::TextArray => Type::TEXT_ARRAY,
            other => return Err(format!("the bench does not copy {other:?} columns")),
        });
    }
    let mut rows = Vec::new();
    for m in migrations {
        for r in &m.records {
            let row = r.outcome.row().ok_or("a rejected record")?;
            let mut out: SqlRow = vec![
                Box::new(m.user),
                Box::new(r.id.ok_or("a record without id")?),
            ];
            if kind.id.legacy_column.is_some() {
                out.push(Box::new(
                    r.legacy_id.as_ref().map(|l| l.as_escaped().to_owned()),
                ));
            }
            for (cell, ty) in row.cells.iter().zip(&types[out.len()..]) {
                out.push(match (cell, ty) {
                    (Cell::Text(s), _) => Box::new(Some(s.clone())),
                    (Cell::Timestamp(ms), _) => Box::new(Some(
                        UNIX_EPOCH
                            + Duration::from_millis(
                                u64::try_from(*ms).ctx("a timestamp before 1970")?,
                            ),
                    )),
                    (Cell::TextArray(items), _) => Box::new(Some(items.clone())),
                    (Cell::Null, t) if *t == Type::TEXT => Box::new(None::<String>),
                    (Cell::Null, t) if *t == Type::TIMESTAMPTZ => Box::new(None::<SystemTime>),
                    (Cell::Null, _) => Box::new(None::<Vec<String>>),
                    (other, _) => return Err(format!("unexpected cell {other:?}")),
                });
            }
            rows.push(out);
        }
    }
    Ok((columns, types, rows))
}

/// One binary `COPY` of every row; returns seconds.
async fn copy_rows(
    db: &tokio_postgres::Client,
    columns: &[String],
    types: &[Type],
    rows: &[SqlRow],
) -> Res<f64> {
    let start = Instant::now();
    let sink = db
        .copy_in(&format!(
            "COPY tasks ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        ))
        .await
        .ctx("start COPY")?;
    let writer = BinaryCopyInWriter::new(sink, types);
    let mut writer = std::pin::pin!(writer);
    for row in rows {
        let refs: Vec<&(dyn ToSql + Sync)> = row
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        writer.as_mut().write(&refs).await.ctx("COPY a row")?;
    }
    let n = writer.finish().await.ctx("finish COPY")?;
    if n != rows.len() as u64 {
        return Err(format!("COPY wrote {n} rows of {}", rows.len()));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// One `INSERT` per record per transaction over `connections` connections; returns seconds.
async fn naive_inserts(
    cluster: &EmbeddedPg,
    db_name: &str,
    columns: &[String],
    rows: &Arc<Vec<SqlRow>>,
    connections: usize,
) -> Res<f64> {
    let sql = format!(
        "INSERT INTO tasks ({}) VALUES ({})",
        columns.join(", "),
        (1..=columns.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect(cluster, db_name).await?);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let rows = Arc::clone(rows);
        let sql = sql.clone();
        tasks.spawn(async move {
            let statement = client.prepare(&sql).await.ctx("prepare INSERT")?;
            for row in rows.iter().skip(c).step_by(connections) {
                let refs: Vec<&(dyn ToSql + Sync)> = row
                    .iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let tx = client.transaction().await.ctx("BEGIN")?;
                tx.execute(&statement, &refs).await.ctx("INSERT")?;
                tx.commit().await.ctx("COMMIT")?;
            }
            Res::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.ctx("a naive client")??;
    }
    Ok(start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// The benchmark.
// ---------------------------------------------------------------------------------------------

async fn run(p: Params) -> Res<()> {
    let binary = server_binary()?;
    let spec = Spec::parse(SPEC_TEXT).ctx("specs/taskboard.json")?;
    let work = PathBuf::from(format!("/tmp/ferry-bench-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).ctx(format!("create {}", work.display()))?;
    let mut settings = Vec::new();
    if p.profile {
        // Statement counts and times, and the plans of statements slower than 200 ms (in
        // the cluster's log, printed at the end).
        for (name, value) in [
            (
                "shared_preload_libraries",
                "pg_stat_statements,auto_explain",
            ),
            ("auto_explain.log_min_duration", "200ms"),
            ("auto_explain.log_analyze", "on"),
        ] {
            settings.push((name.to_owned(), value.to_owned()));
        }
    }
    let mut cluster = EmbeddedPg::start(EmbeddedPgOptions {
        data_dir: work.join("data"),
        listen: Listen::UnixSocket {
            dir: work.join("run"),
            port: 5432,
        },
        bin_dir: std::env::var_os("FERRY_PG_BIN").map(PathBuf::from),
        ephemeral: false,
        settings,
    })
    .ctx("start PostgreSQL")?;
    cluster.stop_on_exit(Some(&work)).ctx("arm the watchdog")?;
    let result = bench(&p, &binary, &spec, &cluster, &work).await;
    if p.profile {
        let log = std::fs::read_to_string(cluster.log_file()).unwrap_or_default();
        let plans: Vec<&str> = log.split("LOG:  duration:").skip(1).take(4).collect();
        for plan in plans {
            println!("\n-- auto_explain (slow statement):\n duration:{plan}");
        }
    }
    let _ignored = cluster.stop();
    result
}

async fn bench(
    p: &Params,
    binary: &Path,
    spec: &Spec,
    cluster: &EmbeddedPg,
    work: &Path,
) -> Res<()> {
    let db_name = "ferry_bench";
    let admin = connect(cluster, "postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .ctx("create the database")?;
    let version: String = admin
        .query_one("SHOW server_version", &[])
        .await
        .and_then(|r| r.try_get(0))
        .ctx("server_version")?;
    let mut pg_settings = BTreeMap::new();
    for name in [
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "shared_buffers",
        "wal_level",
        "max_wal_size",
        "max_connections",
    ] {
        let value: String = admin
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .and_then(|r| r.try_get(0))
            .ctx(format!("SHOW {name}"))?;
        pg_settings.insert(name, value);
    }
    let database_url = cluster.connection_string(db_name);
    let meter = CpuMeter {
        ticks: clock_ticks(),
        postmaster: cluster.postmaster_pid().ok_or("no postmaster pid")?,
    };
    let machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "postgres": version,
        "postgres_settings": pg_settings,
        "server_binary": binary.display().to_string(),
    });
    println!(
        "ferry-server ingest benchmark{}",
        if p.quick { " (quick)" } else { "" }
    );
    println!(
        "  PostgreSQL {version}, default settings {pg_settings:?}; load average {}",
        machine["loadavg_at_start"].as_str().unwrap_or("?")
    );

    let env = BenchEnv {
        p,
        binary,
        spec,
        cluster,
        db_name,
        database_url: &database_url,
        work,
    };
    let ingest = ingest_bench(&env, &meter).await?;
    let mut loads = serde_json::Map::new();
    for (key, deployment) in [
        (
            "one_server",
            Deployment {
                processes: 1,
                nginx: false,
                shared_limits: false,
            },
        ),
        (
            "two_servers",
            Deployment {
                processes: 2,
                nginx: false,
                shared_limits: false,
            },
        ),
        (
            "three_behind_nginx",
            Deployment {
                processes: 3,
                nginx: true,
                shared_limits: false,
            },
        ),
        (
            "three_behind_nginx_shared_limits",
            Deployment {
                processes: 3,
                nginx: true,
                shared_limits: true,
            },
        ),
    ] {
        let out = load_bench(&env, deployment).await?;
        loads.insert(key.to_owned(), out);
    }

    let report = json!({
        "params": p.to_json(),
        "machine": machine,
        "ingest": ingest,
        "load": loads,
        "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    if let Some(path) = &p.json {
        let text = serde_json::to_string_pretty(&report).ctx("encode the report")?;
        std::fs::write(path, text + "\n").ctx(format!("write {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// What both parts of the benchmark run against: the parameters, the server binary and its
/// spec, the one PostgreSQL cluster and database, and the scratch folder.
#[derive(Clone, Copy)]
struct BenchEnv<'a> {
    p: &'a Params,
    binary: &'a Path,
    spec: &'a Spec,
    cluster: &'a EmbeddedPg,
    db_name: &'a str,
    database_url: &'a str,
    work: &'a Path,
}

async fn ingest_bench(env: &BenchEnv<'_>, meter: &CpuMeter) -> Res<Value> {
    let BenchEnv {
        p,
        binary,
        spec,
        cluster,
        db_name,
        database_url,
        work,
    } = *env;
    println!(
        "\n== Ingest: {} task records, {} concurrent clients (one user each), {} run(s) ==",
        p.records, p.clients, p.runs
    );
    let users: Vec<Uuid> = (0..p.clients).map(|_| Uuid::new_v4()).collect();
    let t = Instant::now();
    let first = Arc::new(migrations(
        spec,
        &users,
        p.records,
        1,
        false,
        BatchLimits::default(),
    )?);
    let second = Arc::new(migrations(
        spec,
        &users,
        p.records,
        1,
        true,
        BatchLimits::default(),
    )?);
    let bytes: usize = first.iter().map(Migration::bytes).sum();
    let bytes2: usize = second.iter().map(Migration::bytes).sum();
    let batches: usize = first.iter().map(|m| m.batches.len()).sum();
    println!(
        "  built {} batches ({:.1} MB of JSON) per pass in {:.1} s (not timed)",
        batches,
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let (columns, _types, rows) = sql_rows(spec, &first)?;
    let types = _types;
    let naive_rows: Arc<Vec<SqlRow>> = Arc::new({
        let (_, _, mut subset) = sql_rows(spec, &first)?;
        // An even spread over the users, so the subset looks like the whole.
        let step = (subset.len() / p.naive.max(1)).max(1);
        let mut kept = Vec::with_capacity(p.naive);
        for (i, row) in subset.drain(..).enumerate() {
            if i.is_multiple_of(step) && kept.len() < p.naive {
                kept.push(row);
            }
        }
        kept
    });

    let server = Server::start(binary, database_url, work, "ingest", false)?;
    let pids = [server.pid()];
    let urls = vec![server.url.clone()];
    let db = connect(cluster, db_name).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .ctx("HTTP client")?;

    let mut empty_rate = Vec::new();
    let mut empty_mbs = Vec::new();
    let mut conflict_rate = Vec::new();
    let mut conflict_mbs = Vec::new();
    let mut copy_rate = Vec::new();
    let mut naive1_rate = Vec::new();
    let mut naive_c_rate = Vec::new();
    let mut cpu = Vec::new();
    let mut empty_lat = Vec::new();
    let mut conflict_lat = Vec::new();
    for run in 1..=p.runs {
        // Server, empty table.
        reset(&db).await?;
        if p.profile {
            db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()")
                .await
                .ctx("reset pg_stat_statements")?;
        }
        let before = meter.snapshot(&pids);
        let (secs, lat) = send_all(&http, &urls, &first, "inserted").await?;
        let cpu_empty = meter.since(&pids, before);
        check_stored(&db, &first, Some(false), batches).await?;
        let undo = rollback_rows(&db).await?;
        if undo != (p.records as i64, 0) {
            return Err(format!(
                "{undo:?} (created, before-images) recorded for {} inserted rows",
                p.records
            ));
        }
        if p.profile && run == 1 {
            print_statements(&db, "empty table").await?;
        }
        empty_rate.push(p.records as f64 / secs);
        empty_mbs.push(bytes as f64 / 1e6 / secs);
        empty_lat.extend(lat);

        // Server, every record newer under a second migration: the `newest` conflict path.
        db.batch_execute("CHECKPOINT").await.ctx("CHECKPOINT")?;
        if p.profile {
            db.batch_execute("SELECT pg_stat_statements_reset()")
                .await
                .ctx("reset pg_stat_statements")?;
        }
        let before = meter.snapshot(&pids);
        let (secs2, lat) = send_all(&http, &urls, &second, "updated").await?;
        let cpu_conflict = meter.since(&pids, before);
        check_stored(&db, &second, Some(true), 2 * batches).await?;
        let undo = rollback_rows(&db).await?;
        if undo != (p.records as i64, p.records as i64) {
            return Err(format!(
                "{undo:?} (created, before-images) recorded after the conflicting pass, expected {} of each",
                p.records
            ));
        }
        if p.profile && run == 1 {
            print_statements(&db, "every record conflicting (newest)").await?;
        }
        conflict_rate.push(p.records as f64 / secs2);
        conflict_mbs.push(bytes2 as f64 / 1e6 / secs2);
        conflict_lat.extend(lat);

        // Raw binary COPY of the same rows into the same, emptied table.
        reset(&db).await?;
        let before = meter.snapshot(&[]);
        let copy_secs = copy_rows(&db, &columns, &types, &rows).await?;
        let cpu_copy = meter.since(&[], before);
        check_stored(&db, &first, Some(false), 0).await?;
        copy_rate.push(p.records as f64 / copy_secs);

        // The naive migrator on a subset: one connection, then as many as the HTTP clients.
        let mut naive = Vec::new();
        for conns in [1, p.clients] {
            reset(&db).await?;
            let secs = naive_inserts(cluster, db_name, &columns, &naive_rows, conns).await?;
            let n = count(&db, "SELECT count(*) FROM tasks").await?;
            if n != naive_rows.len() as i64 {
                return Err(format!(
                    "the naive inserts stored {n} rows of {}",
                    naive_rows.len()
                ));
            }
            naive.push(naive_rows.len() as f64 / secs);
        }
        naive1_rate.push(naive[0]);
        naive_c_rate.push(naive[1]);
        cpu.push(json!({ "run": run, "server_empty": cpu_empty, "server_conflict": cpu_conflict, "copy": cpu_copy }));
        println!(
            "  run {run}: server empty {:.0} rec/s ({:.1} s), conflicting {:.0} rec/s, COPY {:.0} rec/s, naive x1 {:.0} rec/s, naive x{} {:.0} rec/s",
            p.records as f64 / secs,
            secs,
            p.records as f64 / secs2,
            p.records as f64 / copy_secs,
            naive[0],
            p.clients,
            naive[1]
        );
        println!(
            "         CPU s (server / postgres / this program): empty {}, conflicting {}, COPY {}",
            cpu_line(&cpu_empty),
            cpu_line(&cpu_conflict),
            cpu_line(&cpu_copy)
        );
    }
    server.stop();
    reset(&db).await?;

    let lat_summary = |mut l: Vec<f64>| {
        l.sort_by(f64::total_cmp);
        json!({ "p50_ms": round3(percentile(&l, 50.0)), "p99_ms": round3(percentile(&l, 99.0)), "max_ms": round3(l.last().copied().unwrap_or(f64::NAN)), "batches": l.len() })
    };
    let out = json!({
        "records": p.records,
        "batches_per_pass": batches,
        "json_bytes_per_pass": bytes,
        "server_empty_records_per_s": summary(&empty_rate),
        "server_empty_mb_per_s": summary(&empty_mbs),
        "server_empty_batch_latency": lat_summary(empty_lat),
        "server_conflict_records_per_s": summary(&conflict_rate),
        "server_conflict_mb_per_s": summary(&conflict_mbs),
        "server_conflict_batch_latency": lat_summary(conflict_lat),
        "copy_records_per_s": summary(&copy_rate),
        "naive_subset": naive_rows.len(),
        "naive_1_connection_records_per_s": summary(&naive1_rate),
        "naive_concurrent_records_per_s": summary(&naive_c_rate),
        "naive_concurrent_connections": p.clients,
        "cpu": cpu,
    });
    let e = med(&out["server_empty_records_per_s"]);
    let c = med(&out["server_conflict_records_per_s"]);
    let copy = med(&out["copy_records_per_s"]);
    let n1 = med(&out["naive_1_connection_records_per_s"]);
    let nc = med(&out["naive_concurrent_records_per_s"]);
    println!("  summary (median, min, max over runs):");
    println!(
        "    server, empty table       {}",
        fmt_summary(&out["server_empty_records_per_s"], "rec/s")
    );
    println!(
        "    server, all conflicting   {}",
        fmt_summary(&out["server_conflict_records_per_s"], "rec/s")
    );
    println!(
        "    binary COPY               {}",
        fmt_summary(&out["copy_records_per_s"], "rec/s")
    );
    println!(
        "    naive, 1 connection       {}",
        fmt_summary(&out["naive_1_connection_records_per_s"], "rec/s")
    );
    println!(
        "    naive, {} connections      {}",
        p.clients,
        fmt_summary(&out["naive_concurrent_records_per_s"], "rec/s")
    );
    println!(
        "    server/COPY: empty {:.0}%, conflicting {:.0}% (target >= 50%); server/naive: {:.0}x vs 1 connection, {:.0}x vs {} connections (target >= 25x)",
        100.0 * e / copy,
        100.0 * c / copy,
        e / n1,
        e / nc,
        p.clients
    );
    let mut out = out;
    if let Some(o) = out.as_object_mut() {
        o.insert("server_empty_vs_copy".into(), json!(round3(e / copy)));
        o.insert("server_conflict_vs_copy".into(), json!(round3(c / copy)));
        o.insert("server_empty_vs_naive_1".into(), json!(round3(e / n1)));
        o.insert(
            "server_empty_vs_naive_concurrent".into(),
            json!(round3(e / nc)),
        );
    }
    Ok(out)
}

fn cpu_line(v: &Value) -> String {
    format!(
        "{:.1}/{:.1}/{:.1}",
        v["server_cpu_s"].as_f64().unwrap_or(f64::NAN),
        v["postgres_cpu_s"].as_f64().unwrap_or(f64::NAN),
        v["client_cpu_s"].as_f64().unwrap_or(f64::NAN)
    )
}

async fn print_statements(db: &tokio_postgres::Client, label: &str) -> Res<()> {
    let rows = db
        .query(
            "SELECT calls, total_exec_time, mean_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
             FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' \
             ORDER BY total_exec_time DESC LIMIT 8",
            &[],
        )
        .await
        .ctx("read pg_stat_statements")?;
    println!("  pg_stat_statements, {label}:");
    for r in rows {
        let calls: i64 = r.try_get(0).ctx("calls")?;
        let total: f64 = r.try_get(1).ctx("total")?;
        let mean: f64 = r.try_get(2).ctx("mean")?;
        let n: i64 = r.try_get(3).ctx("rows")?;
        let q: String = r.try_get(4).ctx("query")?;
        println!("    {calls:>6} calls {total:>9.0} ms total {mean:>8.2} ms mean {n:>8} rows  {q}");
    }
    Ok(())
}

async fn load_bench(env: &BenchEnv<'_>, deployment: Deployment) -> Res<Value> {
    let BenchEnv {
        p,
        binary,
        spec,
        cluster,
        db_name,
        database_url,
        work,
    } = *env;
    if p.load_runs == 0 {
        return Ok(Value::Null);
    }
    let processes = deployment.processes;
    println!(
        "\n== Load: {} users x {} records ({}-record batches), {}, at most {} requests in flight, limit {} s, {} run(s) ==",
        p.users,
        p.per_user,
        p.load_batch,
        deployment.describe(),
        p.inflight,
        p.load_limit_secs,
        p.load_runs
    );
    let limits = BatchLimits {
        max_records: p.load_batch,
        ..BatchLimits::default()
    };
    let db = connect(cluster, db_name).await?;
    let mut throughput = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut max = Vec::new();
    let mut user_p99 = Vec::new();
    let mut rss = Vec::new();
    let mut errors_total = 0u64;
    let mut error_samples: Vec<String> = Vec::new();
    for run in 1..=p.load_runs {
        let users: Vec<Uuid> = (0..p.users).map(|_| Uuid::new_v4()).collect();
        let seed = 10_000_000 * run as u64
            + 1_000_000_000 * processes as u64
            + 100_000_000 * u64::from(deployment.nginx)
            + 200_000_000 * u64::from(deployment.shared_limits);
        let migrations = Arc::new(migrations(
            spec,
            &users,
            p.users * p.per_user,
            seed,
            false,
            limits,
        )?);
        let total_batches: usize = migrations.iter().map(|m| m.batches.len()).sum();
        reset(&db).await?;
        let mut servers = Vec::new();
        for i in 0..processes {
            servers.push(Server::start(
                binary,
                database_url,
                work,
                &format!("load-{processes}-{i}"),
                deployment.shared_limits,
            )?);
        }
        let direct: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
        let nginx = if deployment.nginx {
            Some(Balancer::start(&direct)?)
        } else {
            None
        };
        let urls = match &nginx {
            Some(n) => vec![n.url.clone()],
            None => direct,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(p.inflight)
            .build()
            .ctx("HTTP client")?;
        let gate = Arc::new(tokio::sync::Semaphore::new(p.inflight));
        let errors = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for m in 0..migrations.len() {
            let (http, gate, errors, samples) = (
                http.clone(),
                Arc::clone(&gate),
                Arc::clone(&errors),
                Arc::clone(&samples),
            );
            let url = urls[m % urls.len()].clone();
            let migrations = Arc::clone(&migrations);
            tasks.spawn(async move {
                let migration = &migrations[m];
                let began = Instant::now();
                let mut latencies = Vec::new();
                for batch in &migration.batches {
                    let Ok(_permit) = gate.acquire().await else {
                        break;
                    };
                    let t = Instant::now();
                    match post_batch(&http, &url, &migration.token, batch, "inserted").await {
                        Ok(()) => latencies.push(t.elapsed().as_secs_f64() * 1000.0),
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut s) = samples.lock()
                                && s.len() < 5
                            {
                                s.push(e);
                            }
                            // A browser would retry; the bench counts and moves on.
                            break;
                        }
                    }
                }
                (latencies, began.elapsed().as_secs_f64() * 1000.0)
            });
        }
        let collect = async {
            let mut latencies = Vec::new();
            let mut per_user = Vec::new();
            while let Some(done) = tasks.join_next().await {
                let (l, u) = done.ctx("a user task")?;
                latencies.extend(l);
                per_user.push(u);
            }
            Res::Ok((latencies, per_user))
        };
        let (mut latencies, mut per_user) =
            tokio::time::timeout(Duration::from_secs(p.load_limit_secs), collect)
                .await
                .map_err(|_| {
                    format!(
                        "the load run did not finish within {} s (hard limit)",
                        p.load_limit_secs
                    )
                })??;
        let wall = start.elapsed().as_secs_f64();
        let mut peaks = Vec::new();
        for s in &servers {
            peaks.push(peak_rss_mib(s.pid())?);
        }
        let spread = nginx
            .as_ref()
            .map(|n| (n.requests_per_upstream(), n.errors()));
        drop(nginx);
        for s in servers {
            s.stop();
        }
        if let Some((per, nginx_errors)) = &spread {
            println!("  nginx passed {per:?} requests to the processes");
            if !nginx_errors.is_empty() {
                return Err(format!("nginx logged errors: {nginx_errors:#?}"));
            }
        }
        let errs = errors.load(Ordering::Relaxed);
        errors_total += errs;
        if let Ok(s) = samples.lock() {
            error_samples.extend(s.iter().cloned());
        }
        if errs == 0 {
            check_stored(&db, &migrations, Some(false), total_batches).await?;
        }
        latencies.sort_by(f64::total_cmp);
        per_user.sort_by(f64::total_cmp);
        let records = (p.users * p.per_user) as f64;
        throughput.push(records / wall);
        p50.push(percentile(&latencies, 50.0));
        p99.push(percentile(&latencies, 99.0));
        max.push(latencies.last().copied().unwrap_or(f64::NAN));
        user_p99.push(percentile(&per_user, 99.0));
        rss.push(peaks.iter().copied().fold(0.0, f64::max));
        println!(
            "  run {run}: {:.1} s, {:.0} rec/s, {} batches, batch latency p50 {:.0} ms p99 {:.0} ms max {:.0} ms, per-user migration p50 {:.0} ms p99 {:.0} ms, errors {errs}, peak RSS {} MiB",
            wall,
            records / wall,
            total_batches,
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            latencies.last().copied().unwrap_or(f64::NAN),
            percentile(&per_user, 50.0),
            percentile(&per_user, 99.0),
            peaks
                .iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(" + ")
        );
    }
    reset(&db).await?;
    let out = json!({
        "processes": processes,
        "behind_nginx": deployment.nginx,
        "shared_rate_limits": deployment.shared_limits,
        "records_per_s": summary(&throughput),
        "batch_latency_p50_ms": summary(&p50),
        "batch_latency_p99_ms": summary(&p99),
        "batch_latency_max_ms": summary(&max),
        "user_migration_p99_ms": summary(&user_p99),
        "errors": errors_total,
        "error_samples": error_samples,
        "peak_rss_mib_per_process": summary(&rss),
    });
    println!("  summary: {}", fmt_summary(&out["records_per_s"], "rec/s"));
    println!(
        "           batch p50 {:.0} ms, p99 {:.0} ms (target <= 1000), max {:.0} ms; errors {errors_total} (target 0); peak RSS per process {:.1} MiB (target <= 200)",
        med(&out["batch_latency_p50_ms"]),
        med(&out["batch_latency_p99_ms"]),
        med(&out["batch_latency_max_ms"]),
        med(&out["peak_rss_mib_per_process"])
    );
    if errors_total > 0 {
        return Err(format!(
            "{errors_total} batches failed under load; first errors: {error_samples:#?}"
        ));
    }
    Ok(out)
}
