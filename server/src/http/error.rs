//! The HTTP layer's one error type, [`ApiError`], and its one JSON shape.
//!
//! Every error response, whoever produces it, has the body
//! `{"error": {"code": "machine_code", "message": "human message", "details": …, "request_id": "…"}}`
//! (`details` only when there is something to add; `request_id` is the request's id, see
//! [`crate::http::request_id`]). Handlers and extractors return
//! `ApiError`; responses made by layers that know nothing of it (404 and 405 from routing,
//! 413 from the body limit, the request timeout) are rewritten into the same shape by
//! [`normalize_error_responses`]. A 500 says only "internal error": the cause chain goes to
//! the log.
//!
//! The one kind of answer not in this shape is hyper's own, for a request it cannot parse
//! (a broken request line or header line, a head beyond its hard ceilings): hyper writes a
//! bare status line and closes the connection before any service runs, and offers no hook
//! for a body. Ferry's own limits on the head sit well below those ceilings
//! ([`crate::http::limit_request_head`]), so a request that is merely too big is answered
//! here, in our shape (RELIABILITY.md, "protocol errors").
//!
//! Messages never quote the caller's input in full: [`quote_input`] and
//! [`shorten_body_strings`] cut every string taken from a request.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::db::DbError;
use crate::http::auth::AuthError;

/// Everything an HTTP request can fail with; each variant names its status and `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_json`: the body is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// 422 `invalid_body`: the body is JSON but not what the endpoint expects.
    #[error("{message}")]
    InvalidBody {
        /// What is wrong, for a person.
        message: String,
        /// Machine-readable details (e.g. the offending field).
        details: Option<Value>,
    },
    /// 415 `unsupported_media_type`: a JSON endpoint got another content type.
    #[error("expected a JSON body with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// 401 `missing_token` / `invalid_token` / `token_expired`, with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    /// A refusal with its own status and code: 400 `invalid_batch`, `spec_mismatch`,
    /// `invalid_backup`; 409 `idempotency_conflict`, `already_resolved`, `backup_exists`.
    #[error("{message}")]
    Refused {
        /// 400 or 409.
        status: StatusCode,
        /// The machine-readable code.
        code: ErrorCode,
        /// What is wrong and what to do, for a person.
        message: String,
        /// Machine-readable details, when there is something to add.
        details: Option<Value>,
    },
    /// 403 `forbidden`: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`: no such route or file.
    #[error("there is nothing at this address")]
    NotFound,
    /// 405 `method_not_allowed`: the route exists, the method does not (`Allow` is kept).
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// 413 `payload_too_large`: the body exceeds the configured limit.
    #[error("{}", payload_too_large_message(*.limit_bytes))]
    PayloadTooLarge {
        /// The limit, in bytes, when known.
        limit_bytes: Option<usize>,
    },
    /// 414 `uri_too_long`: the request target is longer than Ferry reads.
    #[error("the request target (path and query) is longer than the limit of {max_bytes} bytes")]
    UriTooLong {
        /// The limit, in bytes.
        max_bytes: usize,
    },
    /// 431 `headers_too_large`: too many request headers, or too many bytes of them.
    #[error(
        "the request headers exceed the limit of {max_headers} headers and {max_bytes} bytes; send fewer or smaller headers"
    )]
    HeadersTooLarge {
        /// The most headers a request may have.
        max_headers: usize,
        /// The most bytes (names, values, `: ` and line ends) they may take.
        max_bytes: usize,
    },
    /// 429 `rate_limited`, with `Retry-After` in seconds.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after_secs: u64,
    },
    /// 503 `request_timeout`, with `Retry-After: 1`: the request took longer than allowed.
    #[error("{}", timeout_message(*.timeout_ms))]
    Timeout {
        /// The limit, in milliseconds, when known.
        timeout_ms: Option<u64>,
    },
    /// 503 `unavailable`: a dependency (the database) cannot serve now; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Any other 4xx/5xx made by a layer, with the status's own name as `code`.
    #[error("{}", .0.canonical_reason().unwrap_or("error"))]
    Status(StatusCode),
    /// 500 `internal`: the body says only "internal error"; the cause is logged.
    #[error("internal error: {0}")]
    Internal(String),
}

fn payload_too_large_message(limit: Option<usize>) -> String {
    match limit {
        Some(limit) => format!("the request body is larger than the limit of {limit} bytes"),
        None => "the request body is larger than the server accepts".to_owned(),
    }
}

fn timeout_message(timeout_ms: Option<u64>) -> String {
    match timeout_ms {
        Some(ms) => format!("the request did not finish within {ms} ms; retry later"),
        None => "the request took too long; retry later".to_owned(),
    }
}

pub use ferry_core::contract::{ErrorBody, ErrorCode, ErrorDetail};

/// Marks a response as already in our shape, so [`normalize_error_responses`] leaves it alone.
#[derive(Debug, Clone, Copy)]
struct Shaped;

impl ApiError {
    /// Wraps any error as a 500, keeping its cause chain for the log.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::Internal(crate::error_chain(error))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidBody { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Refused { status, .. } => *status,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout { .. } | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Status(status) => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedJson(_) => ErrorCode::MalformedJson,
            Self::InvalidBody { .. } => ErrorCode::InvalidBody,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::Unauthorized(reason) => reason.code(),
            Self::Refused { code, .. } => code.clone(),
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::UriTooLong { .. } => ErrorCode::UriTooLong,
            Self::HeadersTooLarge { .. } => ErrorCode::HeadersTooLarge,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Timeout { .. } => ErrorCode::RequestTimeout,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Status(status) => ErrorCode::from_name(
                &status
                    .canonical_reason()
                    .unwrap_or("error")
                    .chars()
                    .filter_map(|c| match c {
                        ' ' | '-' => Some('_'),
                        c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect::<String>(),
            ),
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn body(&self) -> ErrorBody {
        let (message, details) = match self {
            Self::Internal(_) => ("internal error".to_owned(), None),
            Self::InvalidBody { message, details }
            | Self::Refused {
                message, details, ..
            } => (message.clone(), details.clone()),
            Self::PayloadTooLarge {
                limit_bytes: Some(limit),
            } => (
                self.to_string(),
                Some(serde_json::json!({ "limit_bytes": limit })),
            ),
            Self::UriTooLong { max_bytes } => (
                self.to_string(),
                Some(serde_json::json!({ "limit_bytes": max_bytes })),
            ),
            Self::HeadersTooLarge {
                max_headers,
                max_bytes,
            } => (
                self.to_string(),
                Some(serde_json::json!({ "limit_headers": max_headers, "limit_bytes": max_bytes })),
            ),
            Self::RateLimited { retry_after_secs } => (
                self.to_string(),
                Some(serde_json::json!({ "retry_after_secs": retry_after_secs })),
            ),
            _ => (self.to_string(), None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                details,
                request_id: crate::http::request_id::current(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(chain) = &self {
            tracing::error!(error = %chain, "internal error");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Timeout { .. } | Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            Self::Unauthorized(reason) => {
                headers.insert(header::WWW_AUTHENTICATE, reason.www_authenticate());
            }
            _ => {}
        }
        response.extensions_mut().insert(Shaped);
        response
    }
}

impl ApiError {
    /// A refusal with `status` and `code`.
    pub fn refused(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// A failed statement: 503 `unavailable` when retrying may help (connection lost, statement
    /// timeout, serialization failure, deadlock, server shutting down), else 500.
    pub fn from_postgres(context: &str, error: &tokio_postgres::Error) -> Self {
        if crate::db::is_transient(error) {
            tracing::warn!(context, error = %crate::error_chain(error), "transient database failure");
            Self::Unavailable("the database is busy or unreachable; retry later".to_owned())
        } else {
            Self::Internal(format!("{context}: {}", crate::error_chain(error)))
        }
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Pool(reason) => {
                tracing::warn!(%reason, "no database connection available");
                Self::Unavailable("the database is busy or unreachable; retry later".to_owned())
            }
            DbError::Connect { .. } => {
                tracing::warn!(error = %error, "cannot connect to the database");
                Self::Unavailable("the database is busy or unreachable; retry later".to_owned())
            }
            other
                if other
                    .sqlstate()
                    .is_some_and(crate::db::is_transient_sqlstate) =>
            {
                tracing::warn!(error = %other, "transient database failure");
                Self::Unavailable("the database is busy or unreachable; retry later".to_owned())
            }
            other => Self::internal(&other),
        }
    }
}

/// What [`normalize_error_responses`] needs to word the errors made by layers.
#[derive(Debug, Clone, Copy)]
pub struct ErrorShapeSettings {
    /// The body limit, for 413s.
    pub body_limit_bytes: usize,
    /// The request timeout, for timeouts.
    pub request_timeout_ms: u64,
}

/// The status the request-timeout layer answers with; rewritten to a 503 `request_timeout`.
pub const TIMEOUT_LAYER_STATUS: StatusCode = StatusCode::REQUEST_TIMEOUT;

/// Middleware: rewrites every 4xx/5xx response not already in our shape into it.
pub async fn normalize_error_responses(
    State(settings): State<ErrorShapeSettings>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<Shaped>().is_some()
    {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit_bytes: Some(settings.body_limit_bytes),
        },
        TIMEOUT_LAYER_STATUS => ApiError::Timeout {
            timeout_ms: Some(settings.request_timeout_ms),
        },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::INTERNAL_SERVER_ERROR => {
            ApiError::Internal("a layer answered 500 without saying why".to_owned())
        }
        other => ApiError::Status(other),
    };
    let mut shaped = error.into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        shaped.headers_mut().insert(header::ALLOW, allow.clone());
    }
    shaped
}

/// How many characters of a string taken from a request an error message keeps.
pub const QUOTED_VALUE_CHARS: usize = 4;

/// A string taken from the request, for an error message: escaped, cut to
/// [`QUOTED_VALUE_CHARS`] characters and `…`, in double quotes, so that a secret pasted into
/// the wrong place does not come back in the answer.
pub fn quote_input(text: &str) -> String {
    format!("\"{}\"", shorten_chars(&text.escape_debug().to_string()))
}

/// `text` cut to [`QUOTED_VALUE_CHARS`] characters (an escape sequence counting as one), with
/// `…` when something was cut.
pub fn shorten_chars(text: &str) -> String {
    cut_chars(text, QUOTED_VALUE_CHARS)
}

/// `text` (escaped) cut to `max` characters, an escape sequence counting as one, with `…`
/// when something was cut.
pub fn cut_chars(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut kept = 0;
    while let Some(c) = chars.next() {
        if kept == max {
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
pub fn shorten_body_strings(message: &str) -> String {
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    async fn body_of(error: ApiError) -> (StatusCode, axum::http::HeaderMap, ErrorBody) {
        let response = error.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let (status, _, body) = body_of(ApiError::Internal(
            "password authentication failed for user ferry".into(),
        ))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body.error.code, "internal");
        assert_eq!(body.error.message, "internal error");
        assert_eq!(body.error.details, None);
    }

    #[tokio::test]
    async fn rate_limited_carries_retry_after() {
        let (status, headers, body) = body_of(ApiError::RateLimited {
            retry_after_secs: 7,
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "7");
        assert_eq!(body.error.code, "rate_limited");
    }

    #[tokio::test]
    async fn other_statuses_get_snake_case_codes() {
        let (status, _, body) = body_of(ApiError::Status(StatusCode::IM_A_TEAPOT)).await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        assert_eq!(body.error.code, "im_a_teapot");
    }
}
