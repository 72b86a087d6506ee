//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! Each server state owns its [`Metrics`] (its own registry, not a process-global one), so
//! tests running many servers in one process do not share counters. Request latency is
//! labelled by the *route pattern* (`/v1/me`, not the raw path), which keeps the number of
//! series bounded whatever paths clients send; record and write-time metrics are labelled by
//! the spec's kinds (a kind the spec does not have counts as `unknown`).
//!
//! Two kinds of metric:
//! - counted as things happen: requests, batches, records by kind and outcome, the time each
//!   kind's rows of a batch took to write;
//! - read at scrape time ([`Metrics::refresh`]): the connection pool's size, use and waiters
//!   (from the pool itself), the process's resident memory (from `/proc/self/status`, Linux),
//!   and the migration runs per status (one `GROUP BY` over `ferry_migration_runs`, bounded by
//!   [`SCRAPE_QUERY_TIMEOUT`]; the series are absent when the database does not answer).
//!
//! `docs/operations.md` lists them all, with the alerts worth setting.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::http::state::AppState;

/// Latency buckets, in seconds: fast reads up to slow batch ingests.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Longest a scrape waits for a pooled connection and the migration-runs query together.
pub const SCRAPE_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The statuses a migration run can have (`ferry_migration_runs.status`): always exported,
/// at 0 when no run has them, so that alert expressions find their series.
pub const RUN_STATUSES: [&str; 3] = ["running", "verified", "rolled_back"];

/// The label of records and writes of a kind the spec does not have.
pub const UNKNOWN_KIND: &str = "unknown";

/// The server's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    request_duration: HistogramVec,
    batches: IntCounterVec,
    records: IntCounterVec,
    kind_write: HistogramVec,
    pool: PoolGauges,
    migration_runs: IntGaugeVec,
    resident_memory: IntGauge,
}

/// The connection pool, as `deadpool` reports it.
#[derive(Debug, Clone)]
struct PoolGauges {
    max: IntGauge,
    open: IntGauge,
    in_use: IntGauge,
    waiting: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_http_request_duration_seconds",
                "Time to answer an HTTP request, by method, route pattern and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )?;
        let batches = IntCounterVec::new(
            Opts::new("ferry_batches_total", "Ingest batches, by outcome."),
            &["outcome"],
        )?;
        let records = IntCounterVec::new(
            Opts::new(
                "ferry_records_total",
                "Ingested records (replays not counted again), by kind and outcome.",
            ),
            &["kind", "outcome"],
        )?;
        let kind_write = HistogramVec::new(
            HistogramOpts::new(
                "ferry_batch_apply_seconds",
                "Time to write one kind's rows of a batch into its table, by kind (every attempt).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind"],
        )?;
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let pool = PoolGauges {
            max: gauge(
                "ferry_db_pool_max_connections",
                "Most connections the pool opens (FERRY_DB_POOL_SIZE).",
            )?,
            open: gauge(
                "ferry_db_pool_connections",
                "Connections the pool holds open.",
            )?,
            in_use: gauge(
                "ferry_db_pool_connections_in_use",
                "Pooled connections lent to a request.",
            )?,
            waiting: gauge(
                "ferry_db_pool_waiting",
                "Requests waiting for a pooled connection.",
            )?,
        };
        let migration_runs = IntGaugeVec::new(
            Opts::new(
                "ferry_migration_runs",
                "Migration runs (one per user and migration id), by status, read at scrape time.",
            ),
            &["status"],
        )?;
        let resident_memory = gauge(
            "process_resident_memory_bytes",
            "Resident memory of the server process, in bytes (Linux).",
        )?;
        let collectors: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(request_duration.clone()),
            Box::new(batches.clone()),
            Box::new(records.clone()),
            Box::new(kind_write.clone()),
            Box::new(pool.max.clone()),
            Box::new(pool.open.clone()),
            Box::new(pool.in_use.clone()),
            Box::new(pool.waiting.clone()),
            Box::new(migration_runs.clone()),
            Box::new(resident_memory.clone()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(Self {
            registry,
            request_duration,
            batches,
            records,
            kind_write,
            pool,
            migration_runs,
            resident_memory,
        })
    }

    /// Records one answered request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(histogram) = self.request_duration.get_metric_with_label_values(&[
            method,
            route,
            &status.to_string(),
        ]) {
            histogram.observe(seconds);
        }
    }

    /// Counts one batch with `outcome` (e.g. `accepted`, `replayed`, `rejected`).
    pub fn count_batch(&self, outcome: &str) {
        if let Ok(counter) = self.batches.get_metric_with_label_values(&[outcome]) {
            counter.inc();
        }
    }

    /// Counts `n` records of `kind` with `outcome` (e.g. `inserted`, `updated`, `conflict`,
    /// `quarantined`). `kind` must be one of the spec's kinds or [`UNKNOWN_KIND`].
    pub fn count_records(&self, kind: &str, outcome: &str, n: u64) {
        if let Ok(counter) = self.records.get_metric_with_label_values(&[kind, outcome]) {
            counter.inc_by(n);
        }
    }

    /// Records the time one kind's rows of a batch took to write.
    pub fn observe_kind_write(&self, kind: &str, time: Duration) {
        if let Ok(histogram) = self.kind_write.get_metric_with_label_values(&[kind]) {
            histogram.observe(time.as_secs_f64());
        }
    }

    /// Reads what is measured at scrape time: the pool, the process's memory and the
    /// migration runs per status.
    pub async fn refresh(&self, pool: &deadpool_postgres::Pool) {
        self.observe_pool(pool.status());
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        match tokio::time::timeout(SCRAPE_QUERY_TIMEOUT, migration_runs_by_status(pool)).await {
            Ok(Ok(counts)) => self.set_migration_runs(&counts),
            Ok(Err(error)) => {
                self.migration_runs.reset();
                tracing::warn!(%error, "metrics: cannot count the migration runs");
            }
            Err(_) => {
                self.migration_runs.reset();
                tracing::warn!(
                    timeout_ms = SCRAPE_QUERY_TIMEOUT.as_millis(),
                    "metrics: counting the migration runs took too long"
                );
            }
        }
    }

    fn observe_pool(&self, status: deadpool_postgres::Status) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.pool.max.set(gauge(status.max_size));
        self.pool.open.set(gauge(status.size));
        self.pool
            .in_use
            .set(gauge(status.size.saturating_sub(status.available)));
        self.pool.waiting.set(gauge(status.waiting));
    }

    fn set_migration_runs(&self, counts: &[(String, i64)]) {
        self.migration_runs.reset();
        for status in RUN_STATUSES {
            if let Ok(gauge) = self.migration_runs.get_metric_with_label_values(&[status]) {
                gauge.set(0);
            }
        }
        for (status, n) in counts {
            if let Ok(gauge) = self.migration_runs.get_metric_with_label_values(&[status]) {
                gauge.set(*n);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// `SELECT status, count(*) … GROUP BY status`, as a simple query (no prepared statement, so
/// it works the same through a transaction-pooling proxy).
async fn migration_runs_by_status(
    pool: &deadpool_postgres::Pool,
) -> Result<Vec<(String, i64)>, String> {
    let client = pool.get().await.map_err(|e| crate::error_chain(&e))?;
    let messages = client
        .simple_query("SELECT status, count(*) FROM ferry_migration_runs GROUP BY status")
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let mut counts = Vec::new();
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            let status = row.get(0).unwrap_or_default().to_owned();
            let n = row
                .get(1)
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| format!("the count of runs {status:?} is not a number"))?;
            counts.push((status, n));
        }
    }
    Ok(counts)
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status` (Linux; `None`
/// elsewhere or when it cannot be read).
pub fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:   123456 kB` → bytes.
fn parse_vm_rss(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: i64 = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib.checked_mul(1024)?)
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Middleware: times every request and logs it (method, route, status, time; never headers
/// nor the raw path): at info level when the answer is an error, so that the request id a
/// user quotes from an error body finds its line in the log, else at debug level.
pub async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state
        .metrics()
        .observe_request(method, &route, status, elapsed);
    let ms = elapsed * 1000.0;
    if status >= 400 {
        tracing::info!(method, route, status, ms, "request answered with an error");
    } else {
        tracing::debug!(method, route, status, ms, "request");
    }
    response
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_hold_what_was_recorded() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_request("GET", "/healthz", 200, 0.003);
        metrics.count_batch("accepted");
        metrics.count_records("tasks", "inserted", 250);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"ferry_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferry_batches_total{outcome="accepted"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferry_records_total{kind="tasks",outcome="inserted"} 250"#),
            "{text}"
        );
    }

    #[test]
    fn resident_memory_is_read_from_vm_rss_in_kib() {
        let status = "Name:\tferry-server\nVmPeak:\t  900 kB\nVmRSS:\t   20480 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(20 * 1024 * 1024));
        assert_eq!(parse_vm_rss("VmRSS:\tmany kB\n"), None, "not a number");
        assert_eq!(
            parse_vm_rss("VmRSS:\t12 MB\n"),
            None,
            "not the unit Linux writes"
        );
        assert_eq!(
            parse_vm_rss("Name:\tx\n"),
            None,
            "no VmRSS line (a kernel thread)"
        );
        #[cfg(target_os = "linux")]
        assert!(
            resident_memory_bytes().is_some_and(|b| b > 1024 * 1024),
            "this test process's own RSS"
        );
    }

    #[test]
    fn every_run_status_is_exported_even_at_zero() {
        let metrics = Metrics::new().unwrap();
        metrics.set_migration_runs(&[("verified".to_owned(), 3)]);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"ferry_migration_runs{status="running"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferry_migration_runs{status="verified"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferry_migration_runs{status="rolled_back"} 0"#),
            "{text}"
        );
    }
}
