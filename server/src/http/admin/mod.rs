//! The operator's fleet dashboard (issue 16 §1): the page at `/admin` and its JSON endpoints
//! under `/admin/api/`.
//!
//! - **Credential**: the operator token (`FERRY_OPERATOR_TOKEN` or `--operator-token-file`),
//!   sent as `Authorization: Bearer <token>` and compared in constant time (SHA-256 of both
//!   sides, then [`subtle`]). A user's token is never accepted: a valid user JWT is 403
//!   `forbidden`, anything else 401, in the error shape. With no operator token configured
//!   the whole of `/admin` is 403 with a message saying how to turn it on.
//! - **The page** (`server/admin/`: HTML, CSS and ES modules, no build step) is compiled in
//!   with `include_str!`, so a copied binary serves it; it holds no data and asks for the
//!   token, which it keeps in `sessionStorage`. Every data endpoint needs the token.
//! - **Reads** reuse the operator room ([`crate::operator`]): `fleet` (summary, users),
//!   `report` (runs), `quarantine`, `conflicts`, `backups`; sensitive values are never sent
//!   in clear (quarantined raw values of kinds with secrets are masked, see [`masked_raw`]).
//! - **Actions** (a rollback; resolving a conflict on the user's behalf, keeping the stored or
//!   taking the incoming version) run the same code as the CLI and `/v1`
//!   ([`crate::operator::rollback`], [`crate::operator::conflicts::resolve`]) and write one
//!   [`crate::operator::audit`] row each, whatever the result.
//!
//! The room: this module (the credential, the routes, the shared helpers), `page` (the
//! compiled-in page), `reads` (the JSON reads), `actions` (the operator actions).

mod actions;
mod page;
mod reads;

pub use reads::{MASK, MAX_QUARANTINE_SHOWN, masked_raw};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::http::auth::bearer_token;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;
use crate::operator::fleet;

/// Shortest accepted operator token, in characters.
pub const MIN_OPERATOR_TOKEN_CHARS: usize = 32;

/// What `/admin` answers when no operator token is configured.
pub const DASHBOARD_OFF: &str = "the operator dashboard is off: start ferry-server with FERRY_OPERATOR_TOKEN (or --operator-token-file) set to a secret of at least 32 characters, then send it as `Authorization: Bearer <token>`";

/// The operator's credential, as the server keeps it: the SHA-256 of the token (never the
/// token) and a label for the audit log.
#[derive(Clone)]
pub struct OperatorToken {
    digest: [u8; 32],
    label: String,
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorToken")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl OperatorToken {
    /// The credential of `token` (trimmed); refused when shorter than
    /// [`MIN_OPERATOR_TOKEN_CHARS`].
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.chars().count() < MIN_OPERATOR_TOKEN_CHARS {
            return Err(format!(
                "the operator token has {} characters; use at least {MIN_OPERATOR_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)",
                token.chars().count()
            ));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let label = format!(
            "operator-token:{}",
            digest[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(Self { digest, label })
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.digest))
    }

    /// The label the audit log names this credential by: a short fingerprint of its hash.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// The operator behind a request, handed to the handlers by [`require_operator`].
#[derive(Debug, Clone)]
pub struct Operator {
    /// The credential's label.
    pub label: String,
}

/// The dashboard's routes; `/admin/api/*` behind [`require_operator`].
pub fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/admin/api/summary", get(reads::summary))
        .route("/admin/api/users", get(reads::users))
        .route("/admin/api/users/{user_id}", get(reads::user_detail))
        .route(
            "/admin/api/users/{user_id}/rollback",
            post(actions::rollback_user),
        )
        .route(
            "/admin/api/users/{user_id}/conflicts/{conflict_id}/resolve",
            post(actions::resolve_for_user),
        )
        .route("/admin/api/audit", get(actions::audit_log))
        .route_layer(from_fn_with_state(state.clone(), require_operator));
    let page = Router::new()
        .route("/admin", get(page::page_index))
        .route("/admin/", get(page::page_index))
        .route("/admin/{file}", get(page::page_file))
        .route_layer(from_fn_with_state(state, require_dashboard_on));
    api.merge(page)
}

fn dashboard_off() -> ApiError {
    ApiError::Forbidden(DASHBOARD_OFF.to_owned())
}

/// Middleware of the page: 403 when no operator token is configured.
async fn require_dashboard_on(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.http().operator_token.is_none() {
        return Err(dashboard_off());
    }
    Ok(next.run(request).await)
}

/// Middleware of `/admin/api/*`: the operator token, or 401 (none, or wrong), 403 (a user's
/// token, or the dashboard is off).
pub async fn require_operator(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = state.http().operator_token.clone() else {
        return Err(dashboard_off());
    };
    let presented = bearer_token(request.headers())?;
    if !expected.matches(presented) {
        if state.keys().verify(presented).await.is_ok() {
            tracing::warn!("a user's token was sent to the operator dashboard");
            return Err(ApiError::Forbidden(
                "a user's token cannot open the operator dashboard: send the operator token"
                    .to_owned(),
            ));
        }
        tracing::warn!("a wrong operator token was sent to the operator dashboard");
        return Err(ApiError::Unauthorized(
            crate::http::auth::AuthError::Invalid("not the operator token".to_owned()),
        ));
    }
    request.extensions_mut().insert(Operator {
        label: expected.label().to_owned(),
    });
    Ok(next.run(request).await)
}

fn invalid_query(message: String, field: Option<&str>) -> ApiError {
    ApiError::InvalidBody {
        message,
        details: field.map(|f| json!({ "field": f })),
    }
}

/// The query of `uri` as `T`; 422 naming what does not fit (the caller's text cut).
fn parse_query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    let raw = uri.query().unwrap_or_default();
    serde_urlencoded::from_str(raw).map_err(|e| {
        invalid_query(
            format!(
                "the query {} does not fit: {}",
                crate::http::error::quote_input(raw),
                crate::http::error::shorten_body_strings(&e.to_string())
            ),
            None,
        )
    })
}

/// Longest accepted `stalled_after_secs`: a year (PostgreSQL's intervals have limits too).
pub const MAX_STALLED_AFTER_SECS: u64 = 366 * 86_400;

/// The stalled threshold asked for (the default when not), capped at a year.
fn stalled_after(secs: Option<u64>) -> std::time::Duration {
    let secs = secs.unwrap_or(fleet::DEFAULT_STALLED_AFTER_SECS);
    std::time::Duration::from_secs(secs.min(MAX_STALLED_AFTER_SECS))
}

/// 404 in the error shape, saying what was not found.
fn not_found(message: String) -> ApiError {
    ApiError::Refused {
        status: StatusCode::NOT_FOUND,
        code: ErrorCode::NotFound,
        message,
        details: None,
    }
}

/// A user id from the path; 404 when it is not a UUID (it names no user).
fn user_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        not_found(format!(
            "there is no user {}: user ids are UUIDs",
            crate::http::error::quote_input(text)
        ))
    })
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
    fn the_operator_token_is_checked_whole_and_never_kept() {
        assert!(OperatorToken::new("short").is_err());
        let token = OperatorToken::new("0123456789abcdef0123456789abcdef").unwrap();
        assert!(token.matches("0123456789abcdef0123456789abcdef"));
        assert!(!token.matches("0123456789abcdef0123456789abcdeF"));
        assert!(!token.matches("0123456789abcdef0123456789abcde"));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("0123456789"));
        assert!(token.label().starts_with("operator-token:"));
    }
}
