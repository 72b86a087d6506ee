//! Our [`Json`] extractor: a JSON body whose every refusal is answered in our error shape.
//!
//! axum's own `Json` answers a bad body with a plain-text response; ours maps each way a body
//! can be wrong to an [`ApiError`]: not JSON (400 `malformed_json`), JSON of the wrong shape
//! (422 `invalid_body`), not declared as JSON (415), too large (413, naming the limit).
//! serde's messages name what the caller sent (an unknown field, a string of the wrong type):
//! those names and strings are cut as in every other answer ([`shorten_body_strings`]).
//!
//! [`JsonBytes`] is for the endpoints that parse JSON themselves (the batch decoder keeps
//! strings lossless): the same 415 rule, the body left as bytes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::error::{ApiError, shorten_body_strings};

/// The request body limit in bytes, put in request extensions by the router so that the
/// extractor can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON request body (or response body) whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(request, state).await?;
        // serde_json itself rather than axum's `Json`: axum prefixes serde's message with the
        // path to the error, whose segments are the caller's keys, uncut.
        serde_json::from_slice(&bytes).map(Self).map_err(|e| {
            let message = shorten_body_strings(&e.to_string());
            match e.classify() {
                serde_json::error::Category::Data => ApiError::InvalidBody {
                    message,
                    details: None,
                },
                _ => ApiError::MalformedJson(message),
            }
        })
    }
}

/// A request body declared as JSON (`application/json` or `application/*+json`, as axum's
/// `Json` accepts), as bytes; any other or no `Content-Type` is 415 `unsupported_media_type`.
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl<S> FromRequest<S> for JsonBytes
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !declares_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = request.extensions().get::<BodyLimit>().map(|l| l.0);
        Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE || past_limit(&rejection) {
                    ApiError::PayloadTooLarge { limit_bytes: limit }
                } else {
                    ApiError::MalformedJson(format!(
                        "could not read the body: {}",
                        rejection.body_text()
                    ))
                }
            })
    }
}

/// Whether reading the body stopped at a length limit that axum did not recognise as such:
/// the wire limit's error reaches the extractor wrapped once more by the decompression layer.
fn past_limit(rejection: &axum::extract::rejection::BytesRejection) -> bool {
    let mut error: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = error {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        error = e.source();
    }
    false
}

/// Whether the `Content-Type` is JSON: `application/json` or `application/<anything>+json`,
/// parameters (`; charset=utf-8`) allowed, case-insensitive.
pub fn declares_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some(subtype) = essence.strip_prefix("application/") else {
        return false;
    };
    subtype == "json" || (subtype.len() > "+json".len() && subtype.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
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
    use axum::Router;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Named {
        #[allow(dead_code, reason = "only deserialized")]
        name: String,
    }

    async fn takes_json(Json(_): Json<Named>) -> &'static str {
        "ok"
    }

    async fn call(
        router: Router,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = axum::http::Request::post("/");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = router
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn router() -> Router {
        Router::new()
            .route("/", post(takes_json))
            .layer(DefaultBodyLimit::max(64))
            .layer(axum::Extension(BodyLimit(64)))
    }

    #[tokio::test]
    async fn each_bad_body_gets_its_code() {
        // (content type, body, status, code, why)
        struct Case {
            content_type: Option<&'static str>,
            body: &'static str,
            status: StatusCode,
            code: &'static str,
            why: &'static str,
        }
        let json = Some("application/json");
        let cases = [
            Case {
                content_type: json,
                body: r#"{"name":"#,
                status: StatusCode::BAD_REQUEST,
                code: "malformed_json",
                why: "truncated JSON",
            },
            Case {
                content_type: json,
                body: r#"{"nom":1}"#,
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_body",
                why: "JSON of the wrong shape",
            },
            Case {
                content_type: Some("text/plain"),
                body: r#"{"name":"a"}"#,
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                why: "not declared as JSON",
            },
            Case {
                content_type: None,
                body: r#"{"name":"a"}"#,
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                why: "no content type",
            },
        ];
        for case in cases {
            let (status, body) =
                call(router(), case.content_type, case.body.as_bytes().to_vec()).await;
            assert_eq!(status, case.status, "{}", case.why);
            assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.why);
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_without_content_length_names_the_limit() {
        // No Content-Length header: the limit is hit while reading, inside the extractor.
        let body = format!("{{\"name\":\"{}\"}}", "x".repeat(200)).into_bytes();
        let (status, body) = call(router(), Some("application/json"), body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("64 bytes"),
            "{body}"
        );
    }
}
