//! [`AppState`]: what every handler can reach — the pool, the keys, the metrics, the limits,
//! and the [`Engine`]: the spec, its ingest plan and the field cipher.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::http::auth::Authenticator;
use crate::http::metrics::Metrics;
use crate::http::rate_limit::RateLimiter;
use crate::ingest::IngestPlan;
use crate::ingest::field_crypto::FieldCipher;
use crate::startup::config::Settings;

/// The HTTP-facing settings, taken from [`Settings`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Whether the dev routes (`POST /dev/token`, `GET /dev/sample`) exist.
    pub dev_mode: bool,
    /// Lifetime of dev tokens.
    pub dev_token_ttl: Duration,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Time a request may take.
    pub request_timeout: Duration,
    /// Origins allowed by CORS (empty: no CORS headers).
    pub cors_origins: Vec<String>,
    /// Served at `/`.
    pub www_dir: PathBuf,
    /// Served at `/pkg`.
    pub pkg_dir: PathBuf,
    /// Sustained requests per second per user (0: no limit).
    pub rate_limit_per_second: f64,
    /// Burst per user.
    pub rate_limit_burst: u32,
    /// `statement_timeout` of every transaction a request opens; `None` for none.
    pub db_statement_timeout: Option<Duration>,
}

impl HttpSettings {
    /// The HTTP settings of `settings`; `dev_mode` is decided by the caller (embedded or `--dev`).
    pub fn from_settings(settings: &Settings, dev_mode: bool) -> Self {
        Self {
            dev_mode,
            dev_token_ttl: settings.dev_token_ttl(),
            body_limit_bytes: settings.body_limit_bytes,
            request_timeout: settings.request_timeout(),
            cors_origins: settings.cors_origins.clone(),
            www_dir: settings.www_dir(),
            pkg_dir: settings.pkg_dir(),
            rate_limit_per_second: settings.rate_limit_per_second,
            rate_limit_burst: settings.rate_limit_burst,
            db_statement_timeout: settings.statement_timeout(),
        }
    }
}

/// What the `/v1` endpoints run: the spec (parsed, and its text as served), the ingest plan
/// built from it, and the cipher of sensitive fields.
#[derive(Debug)]
pub struct Engine {
    /// The statements of every kind, and the spec they were built from.
    pub plan: IngestPlan,
    /// The spec file's text, served by `GET /v1/spec`.
    pub spec_text: String,
    /// Encrypts sensitive fields at rest.
    pub cipher: FieldCipher,
}

impl Engine {
    /// The engine for the spec `spec_text` (already parsed into `spec`).
    pub fn new(spec: ferry_core::spec::Spec, spec_text: String, cipher: FieldCipher) -> Self {
        Self {
            plan: IngestPlan::new(spec),
            spec_text,
            cipher,
        }
    }

    /// The spec.
    pub fn spec(&self) -> &ferry_core::spec::Spec {
        self.plan.spec()
    }
}

/// Shared, cheaply cloned state of the server.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    pool: Pool,
    keys: Authenticator,
    metrics: Metrics,
    rate_limiter: Option<RateLimiter>,
    http: HttpSettings,
    engine: Engine,
}

impl AppState {
    /// State over `pool`, verifying tokens with `keys`, running `engine`.
    pub fn new(
        pool: Pool,
        keys: Authenticator,
        http: HttpSettings,
        engine: Engine,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self(Arc::new(Inner {
            pool,
            keys,
            metrics: Metrics::new()?,
            rate_limiter: RateLimiter::new(http.rate_limit_per_second, http.rate_limit_burst),
            http,
            engine,
        })))
    }

    /// The spec, its ingest plan and the field cipher.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.0.pool
    }

    /// How tokens are verified (and dev tokens issued).
    pub fn keys(&self) -> &Authenticator {
        &self.0.keys
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The per-user rate limiter, if limiting is on.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.0.rate_limiter.as_ref()
    }

    /// The HTTP settings.
    pub fn http(&self) -> &HttpSettings {
        &self.0.http
    }
}
