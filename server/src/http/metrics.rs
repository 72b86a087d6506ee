//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! Each server state owns its [`Metrics`] (its own registry, not a process-global one), so
//! tests running many servers in one process do not share counters. Request latency is
//! labelled by the *route pattern* (`/v1/me`, not the raw path), which keeps the number of
//! series bounded whatever paths clients send.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::http::state::AppState;

/// Latency buckets, in seconds: fast reads up to slow batch ingests.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The server's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    request_duration: HistogramVec,
    batches: IntCounterVec,
    records: IntCounterVec,
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
            Opts::new("ferry_records_total", "Ingested records, by outcome."),
            &["outcome"],
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(records.clone()))?;
        Ok(Self {
            registry,
            request_duration,
            batches,
            records,
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

    /// Counts `n` records with `outcome` (e.g. `inserted`, `updated`, `conflict`, `quarantined`).
    pub fn count_records(&self, outcome: &str, n: u64) {
        if let Ok(counter) = self.records.get_metric_with_label_values(&[outcome]) {
            counter.inc_by(n);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Middleware: times every request and logs it at debug level (method, route, status, time;
/// never headers).
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
    tracing::debug!(method, route, status, ms = elapsed * 1000.0, "request");
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
        metrics.count_records("inserted", 250);
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
            text.contains(r#"ferry_records_total{outcome="inserted"} 250"#),
            "{text}"
        );
    }
}
