//! The request id: one per request, in its answer, its error body and every log line of it.
//!
//! [`assign`] is the outermost layer. It takes the client's `X-Request-Id` when that is a
//! valid id ([`ferry_core::contract::is_valid_request_id`]: a proxy or load balancer in front
//! usually sets one), else makes a new one (a UUID v4), and then:
//! - handles the request inside a `request` span with a `request_id` field, so every event
//!   logged on its way carries the id (as text, `request{request_id=…}:`; as JSON, `span`);
//! - keeps the id in a task-local for the request's future, which [`current`] reads when an
//!   [`ApiError`](crate::http::error::ApiError) is turned into its body, so every error body
//!   has `error.request_id`, whichever layer or handler made it;
//! - sets `X-Request-Id` on the answer, whatever it is.
//!
//! The id is never trusted for anything but correlation: it is not a credential, and an
//! invalid one is replaced, not refused.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use ferry_core::contract::{REQUEST_ID_HEADER, is_valid_request_id};
use tracing::Instrument as _;
use uuid::Uuid;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, when called from within one.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The id a request is handled under: the client's, when valid, else a new UUID v4.
pub fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_valid_request_id(id))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned)
}

/// Middleware: see the module documentation.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = request_id_of(&request);
    // At error level so that it is enabled whatever the filter: a span that is filtered out
    // takes its fields with it, and a warning would be logged without its request id.
    let span = tracing::error_span!("request", request_id = %id);
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span)
        .await;
    // A valid client id, or a UUID: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
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
    use axum::body::Body;

    fn with_header(value: &[u8]) -> Request {
        Request::get("/")
            .header(REQUEST_ID_HEADER, HeaderValue::from_bytes(value).unwrap())
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn a_valid_client_id_is_kept_and_any_other_replaced_by_a_uuid() {
        assert_eq!(request_id_of(&with_header(b"lb-42/abc")), "lb-42/abc");
        let invalid: [&[u8]; 3] = [b"has space", &[b'a'; 129], b"caf\xc3\xa9"];
        for value in invalid {
            let id = request_id_of(&with_header(value));
            assert!(Uuid::parse_str(&id).is_ok(), "{value:?} gave {id:?}");
        }
        let none = Request::get("/").body(Body::empty()).unwrap();
        assert!(Uuid::parse_str(&request_id_of(&none)).is_ok());
    }

    #[tokio::test]
    async fn current_is_the_id_inside_the_scope_only() {
        assert_eq!(current(), None);
        let inside = REQUEST_ID
            .scope("r-1".to_owned(), async { current() })
            .await;
        assert_eq!(inside.as_deref(), Some("r-1"));
    }
}
