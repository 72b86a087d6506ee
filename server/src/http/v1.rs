//! The `/v1` endpoints of `docs/http-api.md`, behind authentication and the rate limit.
//!
//! Handlers are thin: they take the user from the token (never from a path or body), get a
//! pooled connection, call the module that does the work ([`ingest`], [`report`],
//! [`rollback`], [`conflicts`], [`backups`]) and map its errors to [`ApiError`]s. An id that
//! belongs to another user is answered exactly like an id that does not exist: 404.
//!
//! A batch that is not valid `ferry-batch/2` (or `/1`) JSON is answered 400 `invalid_batch`
//! with the decoder's position and expectation, but with every string taken from the body cut
//! short ([`invalid_batch_message`]), so a secret pasted into the wrong field does not come
//! back.
//! The other refusals quote the caller's input the same way (a backup id, a resolve choice):
//! through the cutting helpers of [`crate::http::error`].
//!
//! The endpoints that read a JSON body (`POST /v1/batches`, `POST /v1/conflicts/{id}/resolve`)
//! take it as [`JsonBytes`]: any other `Content-Type` is 415 before the body is looked at.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_core::contract::{ErrorCode, ResolveAnswer, RollbackAnswer};
use ferry_core::wire::{WireError, read_formats_said};
use serde_json::json;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::DbError;
use crate::error_chain;
use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, cut_chars, quote_input, shorten_body_strings, shorten_chars};
use crate::http::extract::{Json, JsonBytes};
use crate::http::metrics::UNKNOWN_KIND;
use crate::http::state::{AppState, Engine, SpecLookupError};
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
        .route(
            "/v1/migrations/{migration_id}/verify",
            post(verify_migration),
        )
        .route("/v1/conflicts", get(list_conflicts))
        .route("/v1/conflicts/{id}/resolve", post(resolve_conflict))
        .route("/v1/backups", get(list_backups).post(upload_backup))
        .route("/v1/backups/{id}", get(download_backup))
}

pub(crate) async fn connection(state: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    state
        .pool()
        .get()
        .await
        .map_err(|e| ApiError::from(DbError::Pool(error_chain(&e))))
}

/// The query of `GET /v1/spec`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecQuery {
    /// Which app (needed when the server serves several).
    app: Option<String>,
    /// Which version (default: the newest).
    version: Option<String>,
}

/// `GET /v1/spec[?app=A][&version=V]`: a spec file the server serves, as it is: the newest
/// version unless one is asked for. An unknown app or version is 404 naming what is served.
async fn spec(State(state): State<AppState>, uri: axum::http::Uri) -> Result<Response, ApiError> {
    let raw = uri.query().unwrap_or_default();
    let query: SpecQuery = serde_urlencoded::from_str(raw).map_err(|e| {
        ApiError::refused(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            format!(
                "the query {} does not fit (app=…&version=…): {}",
                quote_input(raw),
                shorten_body_strings(&e.to_string())
            ),
        )
    })?;
    let engine = state
        .engines()
        .find(query.app.as_deref(), query.version.as_deref())
        .map_err(|e| match e {
            SpecLookupError::AppRequired { .. } => ApiError::refused(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidQuery,
                e.to_string(),
            ),
            SpecLookupError::Unknown { .. } => {
                ApiError::refused(StatusCode::NOT_FOUND, ErrorCode::NotFound, e.to_string())
            }
        })?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        engine.spec_text.clone(),
    )
        .into_response())
}

/// The engine of the spec a batch names; a spec the server does not serve is the 400
/// `spec_mismatch` naming what it serves.
fn batch_engine<'a>(state: &'a AppState, body: &[u8]) -> Result<&'a Engine, IngestError> {
    let (app, version) = ferry_core::wire::batch_spec(body)?;
    let engines = state.engines();
    engines
        .all()
        .iter()
        .find(|e| e.spec().app == app && e.spec().version == version)
        .ok_or_else(|| {
            IngestError::Wire(WireError::SpecMismatch {
                app,
                version,
                served: engines.served(),
            })
        })
}

/// `POST /v1/batches`: one `ferry-batch/2` (or `/1`) batch, applied exactly once.
async fn post_batch(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBytes(body): JsonBytes,
) -> Result<Json<BatchResult>, ApiError> {
    let metrics = state.metrics();
    let engine = match batch_engine(&state, &body) {
        Ok(engine) => engine,
        Err(error) => {
            metrics.count_batch("refused");
            return Err(ingest_error(error));
        }
    };
    let mut client = connection(&state).await?;
    let mut times = ingest::WriteTimes::default();
    let mut ingest_once = async |client: &mut deadpool_postgres::Object| {
        ingest::ingest(
            client,
            &engine.plan,
            &engine.cipher,
            user.user_id,
            &body,
            state.http().db_statement_timeout,
            &mut times,
        )
        .await
    };
    let mut result = ingest_once(&mut client).await;
    if let Err(error) = &result
        && error.is_retryable()
    {
        // A serialization failure or deadlock against a concurrent batch: the transaction was
        // rolled back whole, so running it again is safe, and usually succeeds.
        tracing::info!(error = %error_chain(error), "retrying a batch once");
        result = ingest_once(&mut client).await;
    }
    let spec = engine.plan.spec();
    for (kind_index, time) in &times.0 {
        let kind = spec
            .kinds
            .get(*kind_index)
            .map_or(UNKNOWN_KIND, |k| k.name.as_str());
        metrics.observe_kind_write(kind, *time);
    }
    match result {
        Ok(answer) => {
            if answer.replay {
                metrics.count_batch("replay");
            } else {
                metrics.count_batch("applied");
                for (kind, counts) in &answer.counts {
                    // The kind is the batch's word: counted under its name only when the spec
                    // has it, so that a client cannot add series.
                    let kind = match spec.kind_index(kind) {
                        Some(_) => kind.as_str(),
                        None => UNKNOWN_KIND,
                    };
                    for (outcome, n) in counts {
                        metrics.count_records(kind, outcome.as_str(), *n);
                    }
                }
            }
            Ok(Json(answer))
        }
        Err(error) => {
            let api = match error {
                e @ IngestError::RetiredSpec { .. } => ApiError::refused(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::SpecMismatch,
                    format!("{e}; this server serves {}", state.engines().served()),
                ),
                other => ingest_error(other),
            };
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
    match error {
        IngestError::Wire(
            e @ (WireError::Decode(_)
            | WireError::Format { .. }
            | WireError::Nul { .. }
            | WireError::Hashes { .. }
            | WireError::MigratedAtOutOfRange { .. }),
        ) => ApiError::refused(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBatch,
            invalid_batch_message(&e),
        ),
        IngestError::Wire(WireError::SpecMismatch {
            app,
            version,
            served,
        }) => {
            // The batch's app and version are the caller's input: cut, but to a length that
            // still shows a real version (they are short; a secret pasted there is not).
            let cut = |s: &str| cut_chars(&s.escape_debug().to_string(), SPEC_NAME_CHARS);
            let e = WireError::SpecMismatch {
                app: cut(&app),
                version: cut(&version),
                served,
            };
            ApiError::refused(
                StatusCode::BAD_REQUEST,
                ErrorCode::SpecMismatch,
                e.to_string(),
            )
        }
        // The version came from the batch but matched a served spec: it is the server's word.
        e @ IngestError::RetiredSpec { .. } => ApiError::refused(
            StatusCode::BAD_REQUEST,
            ErrorCode::SpecMismatch,
            e.to_string(),
        ),
        e @ IngestError::IdempotencyConflict { .. } => ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::IdempotencyConflict,
            e.to_string(),
        ),
        e @ IngestError::RolledBack { .. } => ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::MigrationRolledBack,
            e.to_string(),
        ),
        e @ IngestError::Purged { .. } => ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::MigrationPurged,
            e.to_string(),
        ),
        IngestError::Db { context, source } => ApiError::from_postgres(context, &source),
    }
}

/// How many characters of the batch's app and version a `spec_mismatch` message keeps.
pub const SPEC_NAME_CHARS: usize = 32;

/// The message of a 400 `invalid_batch` answer: the decoder's position (line, column) and
/// expectation, with every string taken from the body cut to
/// [`QUOTED_VALUE_CHARS`](crate::http::error::QUOTED_VALUE_CHARS) characters and `…`, so a
/// secret pasted into the wrong field does not come back in the answer.
pub fn invalid_batch_message(error: &WireError) -> String {
    match error {
        WireError::Format { found } => format!(
            "the batch format is \"{}\"; this server reads {}",
            shorten_chars(&found.escape_debug().to_string()),
            read_formats_said()
        ),
        other => shorten_body_strings(&other.to_string()),
    }
}

pub(crate) fn parse_uuid(what: &str, text: &str) -> Result<Uuid, ApiError> {
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

/// `POST /v1/migrations/{migration_id}/verify`: the browser's tallies; when they are the
/// server's, the run is marked verified (once) and the report comes back `verified`.
async fn verify_migration(
    State(state): State<AppState>,
    user: AuthUser,
    Path(migration_id): Path<String>,
    Json(sent): Json<report::VerifyRequest>,
) -> Result<Json<report::MigrationReport>, ApiError> {
    let migration_id = parse_uuid("migration id", &migration_id)?;
    if sent
        .kinds
        .values()
        .any(|t| ferry_core::pipeline::ContentHash::from_hex(&t.checksum).is_none())
    {
        return Err(ApiError::InvalidBody {
            message: "every kind's checksum is 32 hex digits (the XOR of its content hashes)"
                .to_owned(),
            details: None,
        });
    }
    let mut client = connection(&state).await?;
    match report::verify_migration(
        &mut client,
        user.user_id,
        migration_id,
        &sent,
        state.http().db_statement_timeout,
    )
    .await?
    {
        None => Err(ApiError::NotFound),
        Some(report::Verification::Verified(report)) => Ok(Json(report)),
        Some(report::Verification::RolledBack) => Err(ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::MigrationRolledBack,
            format!("migration {migration_id} was rolled back: it is not done"),
        )),
        // Kind names come from the caller: cut like every other echo of its input.
        Some(report::Verification::Mismatch(problems)) => Err(ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::VerificationMismatch,
            shorten_body_strings(&problems.join("; ")),
        )),
    }
}

/// `POST /v1/migrations/{migration_id}/rollback`: restores the rows as they were before it.
async fn rollback_migration(
    State(state): State<AppState>,
    user: AuthUser,
    Path(migration_id): Path<String>,
) -> Result<Json<RollbackAnswer>, ApiError> {
    let migration_id = parse_uuid("migration id", &migration_id)?;
    let mut client = connection(&state).await?;
    // The run's own spec version: its kinds are the tables it wrote.
    let spec = run_spec(
        &client,
        "SELECT spec_app, spec_version FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
        &[(&user.user_id, Type::UUID), (&migration_id, Type::UUID)],
    )
    .await?;
    let done = rollback::rollback(
        &mut client,
        state.engines().of_run(spec).spec(),
        user.user_id,
        migration_id,
        state.http().db_statement_timeout,
        |_, _, _| {},
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    if let Some(purged_at) = &done.purged_at {
        return Err(ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::MigrationPurged,
            rollback::purged_message(migration_id, purged_at),
        ));
    }
    Ok(Json(RollbackAnswer {
        restored: done.restored,
        already_rolled_back: done.already_rolled_back,
    }))
}

/// The spec app and version a migration run of `user` was made with (`None`: no such run, or
/// one recorded before runs had a version). `query` selects `spec_app, spec_version` with
/// `$1` the user and `$2` the run's or the conflict's id.
pub(crate) async fn run_spec(
    client: &deadpool_postgres::Object,
    query: &str,
    params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
) -> Result<Option<(String, String)>, ApiError> {
    let row = client
        .query_typed_opt(query, params)
        .await
        .map_err(|e| ApiError::from(DbError::query("read the run's spec version", &e)))?;
    Ok(row.and_then(|r| {
        let app: Option<String> = r.try_get(0).ok().flatten();
        let version: Option<String> = r.try_get(1).ok().flatten();
        app.zip(version)
    }))
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
    JsonBytes(body): JsonBytes,
) -> Result<Json<ResolveAnswer>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    // Parsed with the lossless rule, so edited strings keep lone surrogates and NUL.
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))?;
    let value = ferry_core::pipeline::parse_json(text)
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let resolution: Resolution =
        serde_json::from_value(value).map_err(|e| ApiError::InvalidBody {
            // serde names an unknown choice in full: cut like the batch decoder's messages.
            message: format!(
                "expected {{\"choice\": \"stored\" | \"incoming\" | \"edited\", \"value\": {{column: value}}}}: {}",
                shorten_body_strings(&e.to_string())
            ),
            details: None,
        })?;
    let mut client = connection(&state).await?;
    // The field rules of the spec version the conflict's migration was made with.
    let spec = run_spec(
        &client,
        "SELECT r.spec_app, r.spec_version FROM ferry_conflicts c \
         JOIN ferry_migration_runs r ON r.user_id = c.user_id AND r.migration_id = c.migration_id \
         WHERE c.user_id = $1 AND c.id = $2",
        &[(&user.user_id, Type::UUID), (&id, Type::INT8)],
    )
    .await?;
    let engine = state.engines().of_run(spec);
    match conflicts::resolve(
        &mut client,
        engine.spec(),
        &engine.cipher,
        user.user_id,
        id,
        resolution,
        state.http().db_statement_timeout,
    )
    .await
    {
        Ok(()) => Ok(Json(ResolveAnswer { resolved: true })),
        Err(ResolveError::NotFound(_)) => Err(ApiError::NotFound),
        Err(e @ ResolveError::AlreadyResolved { .. }) => Err(ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyResolved,
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
) -> Result<Json<backups::StoredBackup>, ApiError> {
    let id = headers
        .get(BACKUP_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::refused(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBackup,
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
            e => backup_refusal(&e),
        })
}

/// The answer to a refused upload. Every id in it (the header's, the file's) is the caller's
/// input, and so is anything the backup's own header says: each is cut to
/// [`QUOTED_VALUE_CHARS`](crate::http::error::QUOTED_VALUE_CHARS) characters.
fn backup_refusal(error: &BackupUploadError) -> ApiError {
    let bad_request = |message: String| {
        ApiError::refused(StatusCode::BAD_REQUEST, ErrorCode::InvalidBackup, message)
    };
    match error {
        BackupUploadError::BadId(id) => bad_request(format!(
            "the X-Ferry-Backup-Id header must be 1 to {} characters without control characters, found {}",
            backups::MAX_BACKUP_ID,
            quote_input(id)
        )),
        BackupUploadError::IdMismatch { inside, header } => bad_request(format!(
            "the backup's own id is {} but X-Ferry-Backup-Id says {}: send the id from the backup's metadata",
            quote_input(inside),
            quote_input(header)
        )),
        BackupUploadError::Exists(id) => ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::BackupExists,
            format!(
                "a different backup with id {} is already stored: backups are never replaced; use a new id",
                quote_input(id)
            ),
        ),
        other => bad_request(shorten_body_strings(&other.to_string())),
    }
}

/// `GET /v1/backups`: the caller's backups.
async fn list_backups(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<backups::StoredBackup>>, ApiError> {
    let client = connection(&state).await?;
    Ok(Json(backups::list(&client, user.user_id, None).await?))
}

/// `GET /v1/backups/{id}`: the bytes.
async fn download_backup(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.contains('\0') {
        // No stored id holds one (PostgreSQL text cannot), and sent to it, it fails as 500.
        return Err(ApiError::refused(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBackup,
            "the backup id holds a NUL character; no backup has such an id",
        ));
    }
    let client = connection(&state).await?;
    let bytes = backups::fetch(&client, user.user_id, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::wire::WIRE_FORMAT;

    #[test]
    fn every_decode_error_is_answered_400_in_our_shape() {
        // One of each `WireError`; the match below has no wildcard, so a new variant does not
        // compile until it is added here (and mapped in `ingest_error`).
        let errors = [
            WireError::Decode("expected value at line 1 column 1".to_owned()),
            WireError::Format {
                found: "ferry-batch/0".to_owned(),
            },
            WireError::Nul {
                field: "a record's key",
            },
            WireError::MigratedAtOutOfRange { ms: i64::MIN },
            WireError::Hashes {
                format: ferry_core::wire::WIRE_FORMAT_V1,
                problem: "has no hash in record 0".to_owned(),
            },
            WireError::SpecMismatch {
                app: "other".to_owned(),
                version: "1".to_owned(),
                served: "\"taskboard\" version \"2026.11\"".to_owned(),
            },
        ];
        for error in errors {
            let want = match &error {
                WireError::Decode(_)
                | WireError::Format { .. }
                | WireError::Nul { .. }
                | WireError::Hashes { .. }
                | WireError::MigratedAtOutOfRange { .. } => ErrorCode::InvalidBatch,
                WireError::SpecMismatch { .. } => ErrorCode::SpecMismatch,
            };
            let api = ingest_error(IngestError::Wire(error.clone()));
            assert_eq!(api.status(), StatusCode::BAD_REQUEST, "{error:?}");
            assert_eq!(api.code(), want, "{error:?}");
        }
    }

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
            "the batch format is \"ghp_…\"; this server reads \"ferry-batch/2\" or \"ferry-batch/1\""
        );
    }
}
