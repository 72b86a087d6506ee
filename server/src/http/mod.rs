//! The HTTP edge: the router, its layers, and everything a request meets before the work.
//!
//! [`app`] builds the whole HTTP application from an [`AppState`] without binding a socket, so
//! tests drive it with `tower::ServiceExt::oneshot` or serve it on port 0 (binding and serving
//! are the startup room's). From the outside in, a request meets: the request id
//! ([`request_id::assign`]: header, log span, error bodies) → CORS (when origins are
//! configured) → the error-shape normalizer → metrics → the head limit
//! ([`limit_request_head`]) → the request timeout → the body limit on the wire → gzip
//! decompression (`Content-Encoding: gzip`) → the body limit after it → routing → (for `/v1/*`)
//! authentication and the per-user rate limit → the handler.
//!
//! The room:
//! - this module: the router, its layers, CORS, and the routes outside `/v1` (health,
//!   readiness, metrics, the OpenAPI document, `/v1/me`, dev tokens, static files).
//! - [`v1`]: the `/v1` handlers over the ingest and operator rooms.
//! - [`admin`]: the operator's dashboard at `/admin`, behind the operator token.
//! - [`auth`]: bearer tokens and the [`auth::AuthUser`] extractor; [`rate_limit`]: per-user
//!   limits.
//! - [`error`]: the one error type and JSON error shape; [`extract`]: our `Json` extractor.
//! - [`state`]: what handlers share; [`metrics`]: Prometheus; [`openapi`]: the API description;
//!   [`request_id`]: the id of each request, in its answer, error body and log lines.

pub mod admin;
pub mod auth;
pub mod dev_sample;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod request_id;
pub mod state;
pub mod v1;

use axum::extract::{DefaultBodyLimit, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

use crate::db;
use crate::http::auth::{AuthUser, demo_user_id, require_user};
use crate::http::error::{
    ApiError, ErrorShapeSettings, TIMEOUT_LAYER_STATUS, normalize_error_responses,
};
use crate::http::extract::{BodyLimit, Json};
use crate::http::state::AppState;

/// Longest demo user name accepted by `POST /dev/token`.
pub const MAX_DEMO_USER_NAME: usize = 64;

/// The most request headers Ferry reads (hyper's own default); more is 431 `headers_too_large`.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// The most bytes the request headers may take (each `name: value` line with its line end);
/// more is 431 `headers_too_large`.
pub const MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;

/// The longest request target (path and query) Ferry reads; longer is 414 `uri_too_long`.
pub const MAX_REQUEST_TARGET_BYTES: usize = 8 * 1024;

/// The whole HTTP application over `state`.
pub fn app(state: AppState) -> Router {
    let http = state.http().clone();

    let authenticated = Router::new()
        .route("/v1/me", get(me))
        .merge(crate::http::v1::routes())
        .route_layer(from_fn_with_state(state.clone(), require_user));

    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .merge(authenticated)
        .merge(crate::http::admin::routes(state.clone()));
    if http.dev_mode {
        router = router.route("/dev/token", post(dev_token));
        router = router.route("/dev/sample", get(crate::http::dev_sample::sample));
    }
    let pkg = ServeDir::new(&http.pkg_dir)
        .call_fallback_on_method_not_allowed(true)
        .not_found_service(not_found.into_service());
    let www = ServeDir::new(&http.www_dir)
        .call_fallback_on_method_not_allowed(true)
        .not_found_service(not_found.into_service());
    let router = router
        .nest_service("/pkg", pkg)
        .fallback_service(www)
        .with_state(state.clone());

    let router = with_common_layers(router, &state, &http);
    let router = match cors_layer(&http.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(axum::middleware::from_fn(request_id::assign))
}

/// The layers every route gets (CORS aside), innermost first.
fn with_common_layers(
    router: Router,
    state: &AppState,
    http: &crate::http::state::HttpSettings,
) -> Router {
    let limit = http.body_limit_bytes;
    let shape = ErrorShapeSettings {
        body_limit_bytes: limit,
        request_timeout_ms: u64::try_from(http.request_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    router
        // The extractors' limit applies to the body as the handler sees it, after
        // decompression: a gzip bomb stops at `limit` bytes and is a 413, never expanded
        // further; the outer limit bounds the bytes on the wire.
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestDecompressionLayer::new())
        .layer(axum::middleware::from_fn(accept_content_encoding))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(TimeoutLayer::with_status_code(
            TIMEOUT_LAYER_STATUS,
            http.request_timeout,
        ))
        .layer(axum::middleware::from_fn(limit_request_head))
        .layer(from_fn_with_state(state.clone(), metrics::track_requests))
        .layer(from_fn_with_state(shape, normalize_error_responses))
}

/// Middleware: refuses a request whose head exceeds Ferry's limits ([`MAX_REQUEST_HEADERS`],
/// [`MAX_REQUEST_HEADER_BYTES`], [`MAX_REQUEST_TARGET_BYTES`]) in our error shape.
///
/// hyper enforces limits of its own while parsing, and answers them with a bare 431 or 414
/// and no body; the serving loop raises those ceilings far above these
/// (`startup::serving`), so that a head that is merely too big reaches this layer instead.
pub async fn limit_request_head(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_REQUEST_TARGET_BYTES {
        return ApiError::UriTooLong {
            max_bytes: MAX_REQUEST_TARGET_BYTES,
        }
        .into_response();
    }
    let headers = request.headers();
    // `name: value\r\n` per header line, as it came on the wire.
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_REQUEST_HEADERS || bytes > MAX_REQUEST_HEADER_BYTES {
        return ApiError::HeadersTooLarge {
            max_headers: MAX_REQUEST_HEADERS,
            max_bytes: MAX_REQUEST_HEADER_BYTES,
        }
        .into_response();
    }
    next.run(request).await
}

/// Middleware: lets through a body sent as is or gzip-compressed (`Content-Encoding: gzip`,
/// which the browser's migrator uses for batches), and refuses any other encoding with a 415
/// in our error shape that names it, rather than the decompression layer's bare 415.
pub async fn accept_content_encoding(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(value) = request.headers().get(header::CONTENT_ENCODING) {
        let encoding = String::from_utf8_lossy(value.as_bytes());
        let encoding = encoding.trim();
        if !encoding.eq_ignore_ascii_case("gzip") && !encoding.eq_ignore_ascii_case("identity") {
            return ApiError::Refused {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: ferry_core::contract::ErrorCode::UnsupportedMediaType,
                message: format!(
                    "the body's Content-Encoding `{}` is not accepted: send it uncompressed or as `gzip`",
                    crate::http::error::shorten_chars(encoding)
                ),
                details: None,
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether `origin` is a valid CORS origin: `scheme://host[:port]`, no path, no trailing slash.
pub fn is_valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
        && HeaderValue::from_str(origin).is_ok()
}

/// CORS for exactly `origins`; `None` (no CORS headers at all) when there are none.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| is_valid_origin(o))
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static(crate::http::v1::BACKUP_ID_HEADER),
                HeaderName::from_static(ferry_core::contract::REQUEST_ID_HEADER),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static(ferry_core::contract::REQUEST_ID_HEADER),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// `GET /healthz`: the process is up (says nothing about the database).
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers; 503 `unavailable` otherwise.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match db::ping(state.pool()).await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            Err(ApiError::Unavailable(
                "the database is not reachable".to_owned(),
            ))
        }
    }
}

/// `GET /metrics`: Prometheus text format, with the gauges read at scrape time refreshed.
async fn metrics_text(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.metrics().refresh(state.pool()).await;
    let text = state
        .metrics()
        .render()
        .map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text))
}

/// `GET /openapi.json`.
async fn openapi_json(State(state): State<AppState>) -> Json<Value> {
    Json(openapi::document(state.http().dev_mode))
}

/// `GET /v1/me`: the user of the bearer token.
async fn me(user: AuthUser) -> Json<Value> {
    Json(json!({ "user_id": user.user_id }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    user: String,
}

/// `POST /dev/token {"user": "alice"}` (dev mode only): a token for a named demo user.
async fn dev_token(
    State(state): State<AppState>,
    Json(request): Json<DevTokenRequest>,
) -> Result<Json<Value>, ApiError> {
    let name = request.user.trim();
    if name.is_empty()
        || name.chars().count() > MAX_DEMO_USER_NAME
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::InvalidBody {
            message: format!(
                "`user` must be 1 to {MAX_DEMO_USER_NAME} characters, without control characters"
            ),
            details: Some(json!({ "field": "user" })),
        });
    }
    let user_id = demo_user_id(name);
    let issued = state
        .keys()
        .issue(user_id, state.http().dev_token_ttl)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "token": issued.token,
        "token_type": "Bearer",
        "user": name,
        "user_id": user_id,
        "expires_at": issued.expires_at,
    })))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::http::auth::JwtKeys;
    use crate::http::state::HttpSettings;

    fn state(request_timeout: Duration) -> AppState {
        // A pool that never connects: these tests do not touch the database.
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(1).dbname("none").user("none");
        let pool = db::build_pool(
            config,
            &db::PoolSettings {
                size: 1,
                connect_timeout: Duration::from_millis(200),
            },
        )
        .unwrap();
        let http = HttpSettings {
            dev_mode: false,
            dev_token_ttl: Duration::from_secs(60),
            body_limit_bytes: 1024,
            request_timeout,
            cors_origins: Vec::new(),
            www_dir: "/nonexistent/www".into(),
            pkg_dir: "/nonexistent/pkg".into(),
            rate_limit_per_second: 0.0,
            rate_limit_burst: 1,
            rate_limit_shared: false,
            db_statement_timeout: None,
            operator_token: None,
        };
        let spec_text = include_str!("../../../specs/taskboard.json").to_owned();
        let spec = ferry_core::spec::Spec::parse(&spec_text).unwrap();
        let engine = crate::http::state::Engine::new(
            spec,
            spec_text,
            crate::ingest::field_crypto::FieldCipher::new("k1", [1; 32]),
        );
        let engines = crate::http::state::Engines::single(engine);
        AppState::new(pool, JwtKeys::generate().unwrap().into(), http, engines).unwrap()
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "too late"
    }

    #[tokio::test]
    async fn a_slow_request_times_out_in_our_shape() {
        let state = state(Duration::from_millis(50));
        let http = state.http().clone();
        let router = with_common_layers(
            Router::new()
                .route("/slow", get(slow))
                .with_state(state.clone()),
            &state,
            &http,
        );
        let response = router
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "request_timeout");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("50 ms"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_wrong_method_is_405_in_our_shape_and_keeps_allow() {
        let response = app(state(Duration::from_secs(5)))
            .oneshot(Request::post("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.headers().get(header::ALLOW).is_some());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }

    #[test]
    fn origins_must_be_bare_scheme_host_port() {
        // (origin, valid, why)
        let cases = [
            ("http://localhost:5173", true, "the usual dev server"),
            ("https://app.example.com", true, "https, no port"),
            (
                "https://app.example.com/",
                false,
                "a trailing slash never matches an Origin header",
            ),
            ("app.example.com", false, "no scheme"),
            ("ftp://example.com", false, "not a web origin"),
            (
                "*",
                false,
                "wildcards are not allowed: the list is explicit",
            ),
        ];
        for (origin, valid, why) in cases {
            assert_eq!(is_valid_origin(origin), valid, "{origin}: {why}");
        }
    }
}
