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
//! - **Reads** reuse the operator room: [`fleet`] (summary, users), [`report`] (runs),
//!   [`quarantine`], [`conflicts`], [`backups`]; sensitive values are never sent in clear
//!   (quarantined raw values of kinds with secrets are masked, see [`masked_raw`]).
//! - **Actions** (a rollback; resolving a conflict on the user's behalf, keeping the stored or
//!   taking the incoming version) run the same code as the CLI and `/v1` ([`rollback`],
//!   [`conflicts::resolve`]) and write one [`audit`] row each, whatever the result.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::http::auth::bearer_token;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::Json;
use crate::http::state::AppState;
use crate::http::v1::{connection, run_spec};
use crate::operator::{audit, backups, conflicts, fleet, quarantine, report, rollback};

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
        .route("/admin/api/summary", get(summary))
        .route("/admin/api/users", get(users))
        .route("/admin/api/users/{user_id}", get(user_detail))
        .route("/admin/api/users/{user_id}/rollback", post(rollback_user))
        .route(
            "/admin/api/users/{user_id}/conflicts/{conflict_id}/resolve",
            post(resolve_for_user),
        )
        .route("/admin/api/audit", get(audit_log))
        .route_layer(from_fn_with_state(state.clone(), require_operator));
    let page = Router::new()
        .route("/admin", get(page_index))
        .route("/admin/", get(page_index))
        .route("/admin/{file}", get(page_file))
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

const INDEX_HTML: &str = include_str!("../../admin/index.html");
const FILES: &[(&str, &str, &str)] = &[
    (
        "admin.css",
        "text/css; charset=utf-8",
        include_str!("../../admin/admin.css"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../../admin/admin.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../../admin/chart.js"),
    ),
];

/// The page's policy: only its own files; no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /admin`: the page (no data in it).
async fn page_index() -> Response {
    static_file("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /admin/{file}`: the page's CSS and modules.
async fn page_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, ty, body)| static_file(ty, body))
        .ok_or(ApiError::NotFound)
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

fn stalled_after(secs: Option<u64>) -> std::time::Duration {
    std::time::Duration::from_secs(secs.unwrap_or(fleet::DEFAULT_STALLED_AFTER_SECS))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    stalled_after_secs: Option<u64>,
}

/// `GET /admin/api/summary[?stalled_after_secs=N]`: the fleet summary ([`fleet::summary`]).
async fn summary(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<fleet::FleetSummary>, ApiError> {
    let query: SummaryQuery = parse_query(&uri)?;
    let client = connection(&state).await?;
    Ok(Json(
        fleet::summary(&**client, stalled_after(query.stalled_after_secs)).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    state: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
    stalled_after_secs: Option<u64>,
}

/// One page of [`users`].
#[derive(Debug, Serialize)]
struct UsersPage {
    users: Vec<fleet::UserRow>,
    /// The `after` of the next page; `None` on the last.
    next_after: Option<Uuid>,
}

/// `GET /admin/api/users[?state=S][&after=ID][&limit=N]`: users by id, a page at a time.
async fn users(State(state): State<AppState>, uri: Uri) -> Result<Json<UsersPage>, ApiError> {
    let query: UsersQuery = parse_query(&uri)?;
    let wanted = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => Some(fleet::UserState::from_name(name).ok_or_else(|| {
            invalid_query(
                format!(
                    "`state` {} is not one of verified, in_progress, stalled, rolled_back",
                    crate::http::error::quote_input(name)
                ),
                Some("state"),
            )
        })?),
    };
    let after = match query.after.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(Uuid::parse_str(text).map_err(|_| {
            invalid_query(
                format!(
                    "`after` {} is not a user id (a UUID)",
                    crate::http::error::quote_input(text)
                ),
                Some("after"),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, fleet::MAX_USERS_PAGE);
    let client = connection(&state).await?;
    let users = fleet::users(
        &**client,
        stalled_after(query.stalled_after_secs),
        wanted,
        after,
        limit,
    )
    .await?;
    let next_after = if users.len() as i64 == limit {
        users.last().map(|u| u.user_id)
    } else {
        None
    };
    Ok(Json(UsersPage { users, next_after }))
}

/// A quarantined record as the dashboard shows it: sensitive values masked.
#[derive(Debug, Serialize)]
struct QuarantineView {
    id: i64,
    migration_id: Uuid,
    kind: String,
    key: String,
    locator: Option<String>,
    /// The raw value with the values of sensitive fields masked; `None` when withheld.
    raw_value: Option<String>,
    /// Why the raw value is not shown, when it is not.
    withheld: Option<String>,
    reasons: Value,
    created_at: String,
}

/// What stands for a masked value.
pub const MASK: &str = "•••";

/// The raw value of a quarantined record of kind `kind` as the dashboard may show it: as is
/// when no served version of the kind has secrets; else parsed, with every property read by a
/// field with secrets replaced by [`MASK`]. `Err` (why) when it cannot be shown safely: the
/// kind is unknown, a secret comes from somewhere else than a property, or the value is not a
/// JSON object.
pub fn masked_raw(kinds: &[&ferry_core::spec::Kind], raw: &str) -> Result<String, String> {
    use ferry_core::spec::FieldSource;
    if kinds.is_empty() {
        return Err("its kind is not in any spec the server serves".to_owned());
    }
    let mut secret_props = Vec::new();
    for field in kinds.iter().flat_map(|k| &k.fields) {
        if !field.has_secrets() {
            continue;
        }
        match &field.from {
            FieldSource::Field(p) => secret_props.push(p.as_str()),
            FieldSource::Constant => {}
            _ => return Err("the kind has a sensitive value outside its properties".to_owned()),
        }
    }
    if secret_props.is_empty() {
        return Ok(raw.to_owned());
    }
    let Ok(Value::Object(mut object)) =
        serde_json::from_str::<Value>(&ferry_core::lossless::prepare_json(raw))
    else {
        return Err("the kind has sensitive fields and the value is not a JSON object".to_owned());
    };
    for p in secret_props {
        if let Some(v) = object.get_mut(p)
            && !v.is_null()
        {
            *v = Value::String(MASK.to_owned());
        }
    }
    serde_json::to_string(&object).map_err(|e| e.to_string())
}

/// Most quarantined records one drill-down shows (`quarantine_total` says how many there are).
pub const MAX_QUARANTINE_SHOWN: usize = 200;

/// Everything about one user.
#[derive(Debug, Serialize)]
struct UserDetail {
    user_id: Uuid,
    runs: Vec<report::RunSummary>,
    /// The oldest [`MAX_QUARANTINE_SHOWN`] quarantined records.
    quarantine: Vec<QuarantineView>,
    /// Every quarantined record of the user.
    quarantine_total: usize,
    conflicts: Vec<conflicts::Conflict>,
    backups: Vec<backups::StoredBackup>,
    audit: Vec<audit::AuditRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailQuery {
    stalled_after_secs: Option<u64>,
}

/// `GET /admin/api/users/{user_id}`: the user's runs (with their reports), quarantine,
/// open conflicts, backups and the operator actions taken on them. 404 for a user with no
/// migration and no backup.
async fn user_detail(
    State(state): State<AppState>,
    Path(user): Path<String>,
    uri: Uri,
) -> Result<Json<UserDetail>, ApiError> {
    let user = user_id(&user)?;
    let query: DetailQuery = parse_query(&uri)?;
    let client = connection(&state).await?;
    let runs = report::run_summaries(
        &client,
        Some(user),
        None,
        stalled_after(query.stalled_after_secs),
    )
    .await?;
    let backups = backups::list(&client, user, None).await?;
    if runs.is_empty() && backups.is_empty() {
        return Err(not_found(format!(
            "there is no user {user}: no migration and no backup"
        )));
    }
    let cipher = &state.engine().cipher;
    let records = quarantine::quarantined_records(&client, cipher, Some(user), None).await?;
    let quarantine_total = records.len();
    let quarantine = records
        .into_iter()
        .take(MAX_QUARANTINE_SHOWN)
        .map(|r| {
            let kinds: Vec<&ferry_core::spec::Kind> = state
                .engines()
                .all()
                .iter()
                .filter_map(|e| e.spec().kind(&r.kind))
                .collect();
            let (raw_value, withheld) = match r.raw_value.as_deref() {
                None => (
                    None,
                    Some(
                        r.unreadable
                            .clone()
                            .unwrap_or_else(|| "sealed with another key".to_owned()),
                    ),
                ),
                Some(raw) => match masked_raw(&kinds, raw) {
                    Ok(shown) => (Some(shown), None),
                    Err(why) => (None, Some(why)),
                },
            };
            QuarantineView {
                id: r.id,
                migration_id: r.migration_id,
                kind: r.kind,
                key: r.key,
                locator: r.locator,
                raw_value,
                withheld,
                reasons: r.reasons,
                created_at: r.created_at,
            }
        })
        .collect();
    let conflicts = conflicts::open_conflicts(&client, Some(user)).await?;
    let audit = audit::recent(&**client, Some(user), audit::MAX_AUDIT_ROWS).await?;
    Ok(Json(UserDetail {
        user_id: user,
        runs,
        quarantine,
        quarantine_total,
        conflicts,
        backups,
        audit,
    }))
}

/// The body of a rollback: the migration, and the operator's confirmation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    migration_id: String,
    confirm: bool,
}

/// What a rollback answers.
#[derive(Debug, Serialize)]
struct RollbackDone {
    user_id: Uuid,
    migration_id: Uuid,
    rollback: rollback::RollbackReport,
    audit_id: i64,
}

/// `POST /admin/api/users/{user_id}/rollback {"migration_id": …, "confirm": true}`: rolls
/// the user's migration back with the CLI's code ([`rollback::rollback`]) and records the
/// action in the audit log, whatever its result. 404 for a user or migration that does not
/// exist; 422 without `confirm: true`.
async fn rollback_user(
    State(state): State<AppState>,
    Extension(operator): Extension<Operator>,
    Path(user): Path<String>,
    Json(body): Json<RollbackRequest>,
) -> Result<Json<RollbackDone>, ApiError> {
    let user = user_id(&user)?;
    let migration_id = Uuid::parse_str(&body.migration_id).map_err(|_| {
        invalid_query(
            format!(
                "`migration_id` {} is not a migration id (a UUID)",
                crate::http::error::quote_input(&body.migration_id)
            ),
            Some("migration_id"),
        )
    })?;
    if !body.confirm {
        return Err(invalid_query(
            "a rollback needs `\"confirm\": true`: it puts every row the migration touched back as it was, and later changes to those rows are lost".to_owned(),
            Some("confirm"),
        ));
    }
    let mut client = connection(&state).await?;
    let spec = run_spec(
        &client,
        "SELECT spec_app, spec_version FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
        &[
            (&user, tokio_postgres::types::Type::UUID),
            (&migration_id, tokio_postgres::types::Type::UUID),
        ],
    )
    .await?;
    let done = rollback::rollback(
        &mut client,
        state.engines().of_run(spec).spec(),
        user,
        migration_id,
        state.http().db_statement_timeout,
        |_, _, _| {},
    )
    .await;
    let (result, details) = match &done {
        Ok(Some(r)) if r.already_rolled_back => ("already_rolled_back", json!({})),
        Ok(Some(r)) => (
            "rolled_back",
            json!({ "restored": r.restored, "dismissed_conflicts": r.dismissed_conflicts }),
        ),
        Ok(None) => ("not_found", json!({})),
        Err(e) => ("failed", json!({ "error": e.to_string() })),
    };
    let audit_id = audit::record(
        &**client,
        &audit::Action {
            operator: &operator.label,
            action: "rollback",
            user_id: user,
            migration_id: Some(migration_id),
            result,
            details,
        },
    )
    .await?;
    tracing::info!(operator = %operator.label, %user, %migration_id, result, "operator rollback");
    match done? {
        Some(rollback) => Ok(Json(RollbackDone {
            user_id: user,
            migration_id,
            rollback,
            audit_id,
        })),
        None => Err(not_found(format!(
            "user {user} has no migration {migration_id}"
        ))),
    }
}

/// The body of a resolution on the user's behalf: the version to keep (`stored` or
/// `incoming`: an operator does not edit a user's data) and the operator's confirmation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    choice: String,
    confirm: bool,
}

/// What a resolution answers.
#[derive(Debug, Serialize)]
struct ResolveDone {
    user_id: Uuid,
    conflict_id: i64,
    choice: conflicts::Choice,
    audit_id: i64,
}

/// `POST /admin/api/users/{user_id}/conflicts/{conflict_id}/resolve {"choice": "stored" |
/// "incoming", "confirm": true}`: resolves the user's conflict as the user would
/// ([`conflicts::resolve`]), with one audit row whatever the result. 404 for a user or
/// conflict that does not exist (or is another user's), 409 when already resolved.
async fn resolve_for_user(
    State(state): State<AppState>,
    Extension(operator): Extension<Operator>,
    Path((user, conflict)): Path<(String, String)>,
    Json(body): Json<ResolveRequest>,
) -> Result<Json<ResolveDone>, ApiError> {
    let user = user_id(&user)?;
    let conflict_id: i64 = conflict.parse().map_err(|_| {
        not_found(format!(
            "there is no conflict {}: conflict ids are numbers",
            crate::http::error::quote_input(&conflict)
        ))
    })?;
    let choice = match body.choice.as_str() {
        "stored" => conflicts::Choice::Stored,
        "incoming" => conflicts::Choice::Incoming,
        other => {
            return Err(invalid_query(
                format!(
                    "`choice` {} is not `stored` or `incoming` (an operator keeps one version; editing is the user's)",
                    crate::http::error::quote_input(other)
                ),
                Some("choice"),
            ));
        }
    };
    if !body.confirm {
        return Err(invalid_query(
            "resolving on the user's behalf needs `\"confirm\": true`".to_owned(),
            Some("confirm"),
        ));
    }
    let mut client = connection(&state).await?;
    let run = client
        .query_typed_opt(
            "SELECT c.migration_id, r.spec_app, r.spec_version FROM ferry_conflicts c
               LEFT JOIN ferry_migration_runs r ON r.user_id = c.user_id AND r.migration_id = c.migration_id
              WHERE c.user_id = $1 AND c.id = $2",
            &[
                (&user, tokio_postgres::types::Type::UUID),
                (&conflict_id, tokio_postgres::types::Type::INT8),
            ],
        )
        .await
        .map_err(|e| ApiError::from(crate::db::DbError::query("read the conflict's run", &e)))?;
    let migration_id: Option<Uuid> = run.as_ref().and_then(|r| r.try_get(0).ok());
    let spec = run.as_ref().and_then(|r| {
        let app: Option<String> = r.try_get(1).ok().flatten();
        let version: Option<String> = r.try_get(2).ok().flatten();
        app.zip(version)
    });
    let engine = state.engines().of_run(spec);
    let done = conflicts::resolve(
        &mut client,
        engine.spec(),
        &engine.cipher,
        user,
        conflict_id,
        conflicts::Resolution {
            choice,
            value: None,
        },
        state.http().db_statement_timeout,
    )
    .await;
    let result = match &done {
        Ok(()) => "resolved",
        Err(conflicts::ResolveError::NotFound(_)) => "not_found",
        Err(conflicts::ResolveError::AlreadyResolved { .. }) => "already_resolved",
        Err(_) => "failed",
    };
    let details = match &done {
        Err(e @ (conflicts::ResolveError::Invalid { .. } | conflicts::ResolveError::Db(_))) => {
            json!({ "conflict_id": conflict_id, "choice": choice, "error": e.to_string() })
        }
        _ => json!({ "conflict_id": conflict_id, "choice": choice }),
    };
    let audit_id = audit::record(
        &**client,
        &audit::Action {
            operator: &operator.label,
            action: "resolve_conflict",
            user_id: user,
            migration_id,
            result,
            details,
        },
    )
    .await?;
    tracing::info!(operator = %operator.label, %user, conflict_id, result, "operator resolved a conflict");
    match done {
        Ok(()) => Ok(Json(ResolveDone {
            user_id: user,
            conflict_id,
            choice,
            audit_id,
        })),
        Err(conflicts::ResolveError::NotFound(_)) => Err(not_found(format!(
            "user {user} has no conflict {conflict_id}"
        ))),
        Err(e @ conflicts::ResolveError::AlreadyResolved { .. }) => Err(ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyResolved,
            e.to_string(),
        )),
        Err(conflicts::ResolveError::Invalid { message, column }) => Err(ApiError::InvalidBody {
            message,
            details: column.map(|c| json!({ "column": c })),
        }),
        Err(conflicts::ResolveError::Db(e)) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<i64>,
}

/// `GET /admin/api/audit[?limit=N]`: the newest operator actions.
async fn audit_log(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<Vec<audit::AuditRow>>, ApiError> {
    let query: AuditQuery = parse_query(&uri)?;
    let client = connection(&state).await?;
    Ok(Json(
        audit::recent(&**client, None, query.limit.unwrap_or(50)).await?,
    ))
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

    #[test]
    fn sensitive_values_of_quarantined_records_are_masked() {
        let spec =
            ferry_core::spec::Spec::parse(include_str!("../../../specs/taskboard.json")).unwrap();
        let environments = spec.kind("environments").unwrap();
        let raw = r#"{"id":"1","name":"<b>x</b>","config":{"githubToken":"ghp_secret"}}"#;
        let shown = masked_raw(&[environments], raw).unwrap();
        assert!(!shown.contains("ghp_secret"), "{shown}");
        assert!(
            shown.contains(MASK) && shown.contains("<b>x</b>"),
            "{shown}"
        );
        assert!(masked_raw(&[environments], "not json").is_err());
        assert!(masked_raw(&[], "{}").is_err());
        let tasks = spec.kind("tasks").unwrap();
        assert_eq!(masked_raw(&[tasks], "not json").unwrap(), "not json");
    }
}
