//! The `/v1` endpoints of `docs/http-api.md`, behind authentication and the rate limit.
//!
//! Handlers are thin: they take the user from the token (never from a path or body), get a
//! pooled connection, call the module that does the work ([`ingest`], [`report`],
//! [`rollback`], [`conflicts`], [`backups`]) and map its errors to [`ApiError`]s. An id that
//! belongs to another user is answered exactly like an id that does not exist: 404.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::DbError;
use crate::error_chain;
use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::state::AppState;
use crate::ingest::{self, BatchResult, IngestError};
use crate::operator::backups::{self, BackupUploadError};
use crate::operator::conflicts::{self, Resolution, ResolveError};
use crate::operator::{report, rollback};

/// The header naming an uploaded backup.
pub const BACKUP_ID_HEADER: &str = "x-ferry-backup-id";

/// The `/v1` routes (authentication is layered on by [`crate::http::app`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/spec", get(spec))
        .route("/v1/batches", post(post_batch))
        .route("/v1/migrations/{migration_id}", get(migration_report))
        .route(
            "/v1/migrations/{migration_id}/rollback",
            post(rollback_migration),
        )
        .route("/v1/conflicts", get(list_conflicts))
        .route("/v1/conflicts/{id}/resolve", post(resolve_conflict))
        .route("/v1/backups", get(list_backups).post(upload_backup))
        .route("/v1/backups/{id}", get(download_backup))
}

async fn connection(state: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    state
        .pool()
        .get()
        .await
        .map_err(|e| ApiError::from(DbError::Pool(error_chain(&e))))
}

/// `GET /v1/spec`: the spec file the server runs, as it is.
async fn spec(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.engine().spec_text.clone(),
    )
        .into_response()
}

/// `POST /v1/batches`: one `ferry-batch/1` batch, applied exactly once.
async fn post_batch(
    State(state): State<AppState>,
    user: AuthUser,
    body: Bytes,
) -> Result<Json<BatchResult>, ApiError> {
    let engine = state.engine();
    let metrics = state.metrics();
    let mut client = connection(&state).await?;
    let mut result = ingest::ingest(
        &mut client,
        &engine.plan,
        &engine.cipher,
        user.user_id,
        &body,
    )
    .await;
    if let Err(error) = &result
        && error.is_retryable()
    {
        // A serialization failure or deadlock against a concurrent batch: the transaction was
        // rolled back whole, so running it again is safe, and usually succeeds.
        tracing::info!(error = %error_chain(error), "retrying a batch once");
        result = ingest::ingest(
            &mut client,
            &engine.plan,
            &engine.cipher,
            user.user_id,
            &body,
        )
        .await;
    }
    match result {
        Ok(answer) => {
            if answer.replay {
                metrics.count_batch("replay");
            } else {
                metrics.count_batch("applied");
                let mut totals = std::collections::BTreeMap::<&str, u64>::new();
                for counts in answer.counts.values() {
                    for (outcome, n) in counts {
                        *totals.entry(outcome.as_str()).or_default() += n;
                    }
                }
                for (outcome, n) in totals {
                    metrics.count_records(outcome, n);
                }
            }
            Ok(Json(answer))
        }
        Err(error) => {
            let api = ingest_error(error);
            metrics.count_batch(if api.status().is_client_error() {
                "refused"
            } else {
                "failed"
            });
            Err(api)
        }
    }
}

fn ingest_error(error: IngestError) -> ApiError {
    use ferry_core::wire::WireError;
    match error {
        IngestError::Wire(e @ (WireError::Decode(_) | WireError::Format { .. })) => {
            ApiError::refused(
                StatusCode::BAD_REQUEST,
                "invalid_batch",
                crate::http::invalid_batch_message(&e),
            )
        }
        IngestError::Wire(e @ WireError::SpecMismatch { .. }) => {
            ApiError::refused(StatusCode::BAD_REQUEST, "spec_mismatch", e.to_string())
        }
        e @ IngestError::IdempotencyConflict { .. } => {
            ApiError::refused(StatusCode::CONFLICT, "idempotency_conflict", e.to_string())
        }
        e @ IngestError::RolledBack { .. } => {
            ApiError::refused(StatusCode::CONFLICT, "migration_rolled_back", e.to_string())
        }
        IngestError::Db { context, source } => ApiError::from_postgres(context, &source),
    }
}

fn parse_uuid(what: &str, text: &str) -> Result<Uuid, ApiError> {
    // Not a UUID: it cannot name anything of this user, so "not found" (same as another's id).
    Uuid::parse_str(text).map_err(|_| {
        tracing::debug!(what, text, "not a UUID in the path");
        ApiError::NotFound
    })
}

/// `GET /v1/migrations/{migration_id}`: what the server received in the migration.
async fn migration_report(
    State(state): State<AppState>,
    user: AuthUser,
    Path(migration_id): Path<String>,
) -> Result<Json<report::MigrationReport>, ApiError> {
    let migration_id = parse_uuid("migration id", &migration_id)?;
    let client = connection(&state).await?;
    report::migration_report(&client, user.user_id, migration_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /v1/migrations/{migration_id}/rollback`: restores the rows as they were before it.
async fn rollback_migration(
    State(state): State<AppState>,
    user: AuthUser,
    Path(migration_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let migration_id = parse_uuid("migration id", &migration_id)?;
    let mut client = connection(&state).await?;
    let done = rollback::rollback(
        &mut client,
        state.engine().spec(),
        user.user_id,
        migration_id,
        |_, _, _| {},
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({
        "restored": done.restored,
        "already_rolled_back": done.already_rolled_back,
    })))
}

/// `GET /v1/conflicts`: the caller's open conflicts.
async fn list_conflicts(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<conflicts::Conflict>>, ApiError> {
    let client = connection(&state).await?;
    Ok(Json(
        conflicts::open_conflicts(&client, Some(user.user_id)).await?,
    ))
}

/// `POST /v1/conflicts/{id}/resolve`.
async fn resolve_conflict(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    // Parsed with the lossless rule, so edited strings keep lone surrogates and NUL.
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))?;
    let value = ferry_core::pipeline::parse_json(text)
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let resolution: Resolution =
        serde_json::from_value(value).map_err(|e| ApiError::InvalidBody {
            message: format!(
                "expected {{\"choice\": \"stored\" | \"incoming\" | \"edited\", \"value\": {{column: value}}}}: {e}"
            ),
            details: None,
        })?;
    let mut client = connection(&state).await?;
    let engine = state.engine();
    match conflicts::resolve(
        &mut client,
        engine.spec(),
        &engine.cipher,
        user.user_id,
        id,
        resolution,
    )
    .await
    {
        Ok(()) => Ok(Json(json!({ "resolved": true }))),
        Err(ResolveError::NotFound(_)) => Err(ApiError::NotFound),
        Err(e @ ResolveError::AlreadyResolved { .. }) => Err(ApiError::refused(
            StatusCode::CONFLICT,
            "already_resolved",
            e.to_string(),
        )),
        Err(ResolveError::Invalid { message, column }) => Err(ApiError::InvalidBody {
            message,
            details: column.map(|c| json!({ "column": c })),
        }),
        Err(ResolveError::Db(e)) => Err(e.into()),
    }
}

/// `POST /v1/backups`: stores a sealed backup, opaque.
async fn upload_backup(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<backups::BackupInfo>, ApiError> {
    let id = headers
        .get(BACKUP_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::refused(
                StatusCode::BAD_REQUEST,
                "invalid_backup",
                "the X-Ferry-Backup-Id header is missing (or not ASCII): send the backup's id from its metadata",
            )
        })?
        .to_owned();
    let client = connection(&state).await?;
    backups::store(&client, user.user_id, &id, &body)
        .await
        .map(Json)
        .map_err(|e| match e {
            BackupUploadError::Db(e) => e.into(),
            e @ BackupUploadError::Exists(_) => {
                ApiError::refused(StatusCode::CONFLICT, "backup_exists", e.to_string())
            }
            e => ApiError::refused(StatusCode::BAD_REQUEST, "invalid_backup", e.to_string()),
        })
}

/// `GET /v1/backups`: the caller's backups.
async fn list_backups(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<backups::BackupInfo>>, ApiError> {
    let client = connection(&state).await?;
    Ok(Json(backups::list(&client, user.user_id, None).await?))
}

/// `GET /v1/backups/{id}`: the bytes.
async fn download_backup(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let client = connection(&state).await?;
    let bytes = backups::fetch(&client, user.user_id, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
