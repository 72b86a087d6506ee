//! The router: routes, handlers, static files and the layers every request goes through.
//!
//! [`app`] builds the whole HTTP application from an [`AppState`] without binding a socket, so
//! tests drive it with `tower::ServiceExt::oneshot` or serve it on port 0. From the outside
//! in, a request meets: CORS (when origins are configured) → the error-shape normalizer →
//! metrics → the request timeout → the body limit → routing → (for `/v1/*`) authentication
//! and the per-user rate limit → the handler.

use axum::extract::{DefaultBodyLimit, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

use crate::auth::{AuthUser, demo_user_id, require_user};
use crate::error::{ApiError, ErrorShapeSettings, TIMEOUT_LAYER_STATUS, normalize_error_responses};
use crate::extract::{BodyLimit, Json};
use crate::state::AppState;
use crate::{db, metrics, openapi};
use ferry_core::wire::{WIRE_FORMAT, WireError};

/// Longest demo user name accepted by `POST /dev/token`.
pub const MAX_DEMO_USER_NAME: usize = 64;

/// The whole HTTP application over `state`.
pub fn app(state: AppState) -> Router {
    let http = state.http().clone();

    let authenticated = Router::new()
        .route("/v1/me", get(me))
        .merge(crate::api::routes())
        .route_layer(from_fn_with_state(state.clone(), require_user));

    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .merge(authenticated);
    if http.dev_mode {
        router = router.route("/dev/token", post(dev_token));
        router = router.route("/dev/sample", get(crate::dev_sample::sample));
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
    match cors_layer(&http.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// The layers every route gets (CORS aside), innermost first.
fn with_common_layers(
    router: Router,
    state: &AppState,
    http: &crate::state::HttpSettings,
) -> Router {
    let limit = http.body_limit_bytes;
    let shape = ErrorShapeSettings {
        body_limit_bytes: limit,
        request_timeout_ms: u64::try_from(http.request_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(TimeoutLayer::with_status_code(
            TIMEOUT_LAYER_STATUS,
            http.request_timeout,
        ))
        .layer(from_fn_with_state(state.clone(), metrics::track_requests))
        .layer(from_fn_with_state(shape, normalize_error_responses))
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
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static(crate::api::BACKUP_ID_HEADER),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// How many characters of a string from a refused batch its `invalid_batch` message keeps.
pub const QUOTED_VALUE_CHARS: usize = 4;

/// The message of a 400 `invalid_batch` answer: the decoder's position (line, column) and
/// expectation, with every string taken from the body cut to [`QUOTED_VALUE_CHARS`] characters
/// and `…`, so a secret pasted into the wrong field does not come back in the answer.
pub fn invalid_batch_message(error: &WireError) -> String {
    match error {
        WireError::Format { found } => format!(
            "the batch format is \"{}\"; this server reads {WIRE_FORMAT:?}",
            shorten_chars(&found.escape_debug().to_string())
        ),
        other => shorten_body_strings(&other.to_string()),
    }
}

/// `text` cut to [`QUOTED_VALUE_CHARS`] characters (an escape sequence counting as one), with
/// `…` when something was cut.
fn shorten_chars(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut kept = 0;
    while let Some(c) = chars.next() {
        if kept == QUOTED_VALUE_CHARS {
            out.push('…');
            return out;
        }
        out.push(c);
        if c == '\\' {
            match chars.next() {
                Some('u') => {
                    out.push('u');
                    // `\u{…}`: up to and with its closing brace.
                    for c in chars.by_ref() {
                        out.push(c);
                        if c == '}' {
                            break;
                        }
                    }
                }
                Some(escaped) => out.push(escaped),
                None => {}
            }
        }
        kept += 1;
    }
    out
}

/// A serde error message with the body's strings shortened: every `"…"` string (serde writes
/// them escaped, so the closing quote is the first unescaped one) and the name after
/// ``unknown field `…` `` or ``unknown variant `…` ``. Names the decoder expects, in backticks,
/// are kept whole.
fn shorten_body_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let quote = rest.find('"');
        let unknown = ["unknown field `", "unknown variant `"]
            .iter()
            .filter_map(|p| rest.find(p).map(|at| at + p.len()))
            .min();
        match (quote, unknown) {
            (Some(start), unknown) if unknown.is_none_or(|u| start < u) => {
                out.push_str(&rest[..=start]);
                let value = &rest[start + 1..];
                let mut end = value.len();
                let mut escaped = false;
                for (i, c) in value.char_indices() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => {
                            end = i;
                            break;
                        }
                        _ => {}
                    }
                }
                out.push_str(&shorten_chars(&value[..end]));
                rest = &value[end..];
                if let Some(after) = rest.strip_prefix('"') {
                    out.push('"');
                    rest = after;
                }
            }
            (_, Some(start)) => {
                out.push_str(&rest[..start]);
                let name = &rest[start..];
                // The name is written unescaped: it ends where serde's own text resumes.
                let end = ["`, expected", "`, there are no", "` at line "]
                    .iter()
                    .filter_map(|m| name.find(m))
                    .min()
                    .unwrap_or(name.len());
                out.push_str(&shorten_chars(&name[..end]));
                rest = &name[end..];
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
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

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
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

    use crate::auth::JwtKeys;
    use crate::state::HttpSettings;

    #[test]
    fn invalid_batch_messages_keep_the_position_and_shorten_the_bodys_strings() {
        // (serde's message, what the answer says)
        for (message, want) in [
            (
                r#"invalid type: string "ghp_0123456789", expected struct BatchHeader at line 1 column 30"#,
                r#"invalid type: string "ghp_…", expected struct BatchHeader at line 1 column 30"#,
            ),
            (
                r#"invalid value: string "a\"b\u{1}cdef", expected x at line 2 column 3"#,
                r#"invalid value: string "a\"b\u{1}…", expected x at line 2 column 3"#,
            ),
            (
                r#"invalid type: string "abc", expected u32"#,
                r#"invalid type: string "abc", expected u32"#,
            ),
            (
                "unknown field `ghp_0123456789`, expected one of `header`, `records` at line 1 column 9",
                "unknown field `ghp_…`, expected one of `header`, `records` at line 1 column 9",
            ),
            (
                "missing field `header` at line 1 column 2",
                "missing field `header` at line 1 column 2",
            ),
        ] {
            let got = invalid_batch_message(&WireError::Decode(message.to_owned()));
            assert_eq!(
                got,
                format!("the batch is not valid {WIRE_FORMAT} JSON: {want}")
            );
        }
        let got = invalid_batch_message(&WireError::Format {
            found: "ghp_0123456789".to_owned(),
        });
        assert_eq!(
            got,
            format!("the batch format is \"ghp_…\"; this server reads {WIRE_FORMAT:?}")
        );
    }

    fn state(request_timeout: Duration) -> AppState {
        // A pool that never connects: these tests do not touch the database.
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(1).dbname("none").user("none");
        let pool = db::build_pool(
            config,
            &db::PoolSettings {
                size: 1,
                statement_timeout: None,
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
        };
        let spec_text = include_str!("../../specs/taskboard.json").to_owned();
        let spec = ferry_core::spec::Spec::parse(&spec_text).unwrap();
        let engine = crate::state::Engine::new(
            spec,
            spec_text,
            crate::field_crypto::FieldCipher::new("k1", [1; 32]),
        );
        AppState::new(pool, JwtKeys::generate().unwrap(), http, engine).unwrap()
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
