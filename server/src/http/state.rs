//! [`AppState`]: what every handler can reach — the pool, the keys, the metrics, the limits,
//! and the [`Engine`]: the spec, its ingest plan and the field cipher.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::http::auth::Authenticator;
use crate::http::metrics::Metrics;
use crate::http::rate_limit::Limiter;
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
    /// Buckets in PostgreSQL, shared by every process (`FERRY_RATE_LIMIT_SHARED`).
    pub rate_limit_shared: bool,
    /// `statement_timeout` of every transaction a request opens; `None` for none.
    pub db_statement_timeout: Option<Duration>,
    /// The operator's credential for `/admin`; `None`: the dashboard is off.
    pub operator_token: Option<crate::http::admin::OperatorToken>,
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
            rate_limit_shared: settings.rate_limit_shared,
            db_statement_timeout: settings.statement_timeout(),
            // Read (and checked) by the startup, which can fail: see `startup::operator_token`.
            operator_token: None,
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

/// Every spec the server serves, one [`Engine`] each: ordered by app (first configured
/// first), then oldest version to newest ([`crate::startup::specs::compare_versions`]).
#[derive(Debug)]
pub struct Engines {
    engines: Vec<Engine>,
}

/// Why [`Engines::find`] has no engine: the message names what the server serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecLookupError {
    /// Several apps are served and none was named.
    #[error("this server serves several apps; name one with ?app=: it serves {served}")]
    AppRequired {
        /// What the server serves.
        served: String,
    },
    /// No spec with that app (and version).
    #[error("this server does not serve {what}; it serves {served}")]
    Unknown {
        /// The app and version asked for, quoted (cut).
        what: String,
        /// What the server serves.
        served: String,
    },
}

impl Engines {
    /// The engines of `specs` (ordered as [`crate::startup::specs::read_specs`] returns them),
    /// all sharing `cipher`. `specs` must not be empty.
    pub fn new(specs: Vec<crate::startup::specs::LoadedSpec>, cipher: FieldCipher) -> Self {
        Self {
            engines: specs
                .into_iter()
                .map(|l| Engine::new(l.spec, l.text, cipher.clone()))
                .collect(),
        }
    }

    /// One engine (for tests and embedding).
    pub fn single(engine: Engine) -> Self {
        Self {
            engines: vec![engine],
        }
    }

    /// The apps and versions served, for a person (`"taskboard" versions "1", "2"`).
    pub fn served(&self) -> String {
        ferry_core::wire::describe_served(
            self.engines
                .iter()
                .map(|e| (e.spec().app.as_str(), e.spec().version.as_str())),
        )
    }

    /// Every engine, by app then oldest version to newest.
    pub fn all(&self) -> &[Engine] {
        &self.engines
    }

    /// The newest version of the first app: what the endpoints that name no spec use.
    pub fn default_engine(&self) -> &Engine {
        let app = &self.engines[0].spec().app;
        self.engines
            .iter()
            .rfind(|e| &e.spec().app == app)
            .unwrap_or(&self.engines[0])
    }

    /// The engine of exactly this app and version, if served; else the default engine (a run
    /// recorded before runs had a version, or a version no longer served).
    pub fn of_run(&self, spec: Option<(String, String)>) -> &Engine {
        spec.and_then(|(app, version)| {
            self.engines
                .iter()
                .find(|e| e.spec().app == app && e.spec().version == version)
        })
        .unwrap_or_else(|| self.default_engine())
    }

    /// The engine of `app` (needed when several apps are served) at `version` (the newest
    /// when `None`).
    pub fn find(
        &self,
        app: Option<&str>,
        version: Option<&str>,
    ) -> Result<&Engine, SpecLookupError> {
        let app = match app {
            Some(app) => app,
            None => {
                let first = &self.default_engine().spec().app;
                if self.engines.iter().any(|e| &e.spec().app != first) {
                    return Err(SpecLookupError::AppRequired {
                        served: self.served(),
                    });
                }
                first.as_str()
            }
        };
        let found = self
            .engines
            .iter()
            .filter(|e| e.spec().app == app)
            .rfind(|e| version.is_none_or(|v| e.spec().version == v));
        found.ok_or_else(|| {
            let cut = |s: &str| {
                crate::http::error::cut_chars(
                    &s.escape_debug().to_string(),
                    crate::http::v1::SPEC_NAME_CHARS,
                )
            };
            SpecLookupError::Unknown {
                what: match version {
                    Some(v) => format!("app \"{}\" version \"{}\"", cut(app), cut(v)),
                    None => format!("app \"{}\"", cut(app)),
                },
                served: self.served(),
            }
        })
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
    rate_limiter: Option<Limiter>,
    http: HttpSettings,
    engines: Engines,
}

impl AppState {
    /// State over `pool`, verifying tokens with `keys`, running `engine`.
    pub fn new(
        pool: Pool,
        keys: Authenticator,
        http: HttpSettings,
        engines: Engines,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self(Arc::new(Inner {
            pool,
            keys,
            metrics: Metrics::new()?,
            rate_limiter: Limiter::new(
                http.rate_limit_per_second,
                http.rate_limit_burst,
                http.rate_limit_shared,
            ),
            http,
            engines,
        })))
    }

    /// The newest spec of the first app, its ingest plan and the field cipher: what the
    /// endpoints use that are not tied to one batch's spec.
    pub fn engine(&self) -> &Engine {
        self.0.engines.default_engine()
    }

    /// Every spec served.
    pub fn engines(&self) -> &Engines {
        &self.0.engines
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
    pub fn rate_limiter(&self) -> Option<&Limiter> {
        self.0.rate_limiter.as_ref()
    }

    /// The HTTP settings.
    pub fn http(&self) -> &HttpSettings {
        &self.0.http
    }
}
