//! The operator's actions: rolling a user's migration back and resolving a conflict on the
//! user's behalf, each through the same code as the CLI and `/v1`, each with one audit row
//! whatever its result; and the audit log read back.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Operator, invalid_query, not_found, parse_query, user_id};
use crate::db::DbError;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::Json;
use crate::http::state::AppState;
use crate::http::v1::{connection, run_spec};
use crate::operator::{audit, conflicts, rollback};
use tokio_postgres::types::Type;

/// The body of a rollback: the migration, and the operator's confirmation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackRequest {
    migration_id: String,
    confirm: bool,
}

/// What a rollback answers.
#[derive(Debug, Serialize)]
pub(super) struct RollbackDone {
    user_id: Uuid,
    migration_id: Uuid,
    rollback: rollback::RollbackReport,
    audit_id: i64,
}

/// Records one action of `operator` on `(user, migration)` with its `(result, details)` in
/// the audit log; its row id.
async fn record_action(
    client: &deadpool_postgres::Object,
    operator: &Operator,
    action: &str,
    (user_id, migration_id): (Uuid, Option<Uuid>),
    (result, details): (&str, serde_json::Value),
) -> Result<i64, ApiError> {
    tracing::info!(operator = %operator.label, %user_id, ?migration_id, action, result, "operator action");
    let action = audit::Action {
        operator: &operator.label,
        action,
        user_id,
        migration_id,
        result,
        details,
    };
    Ok(audit::record(&***client, &action).await?)
}

/// `POST /admin/api/users/{user_id}/rollback {"migration_id": …, "confirm": true}`: rolls
/// the user's migration back with the CLI's code ([`rollback::rollback`]) and records the
/// action in the audit log, whatever its result. 404 for a user or migration that does not
/// exist; 422 without `confirm: true`.
pub(super) async fn rollback_user(
    State(state): State<AppState>,
    Extension(operator): Extension<Operator>,
    Path(user): Path<String>,
    Json(body): Json<RollbackRequest>,
) -> Result<Json<RollbackDone>, ApiError> {
    let (user, migration_id) = rollback_request(&user, &body)?;
    let mut client = connection(&state).await?;
    let done = roll_back(&state, &mut client, user, migration_id).await;
    let audit_id = record_action(
        &client,
        &operator,
        "rollback",
        (user, Some(migration_id)),
        rollback_outcome(&done),
    )
    .await?;
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

/// Step 1: the user and migration of a rollback request, confirmed.
fn rollback_request(user: &str, body: &RollbackRequest) -> Result<(Uuid, Uuid), ApiError> {
    let user = user_id(user)?;
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
    Ok((user, migration_id))
}

/// Step 2: the rollback, under the spec version the run was made with (its kinds are the
/// tables it wrote); `None` when the user has no such run.
async fn roll_back(
    state: &AppState,
    client: &mut deadpool_postgres::Object,
    user: Uuid,
    migration_id: Uuid,
) -> Result<Option<rollback::RollbackReport>, ApiError> {
    let spec = run_spec(
        client,
        "SELECT spec_app, spec_version FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
        &[(&user, Type::UUID), (&migration_id, Type::UUID)],
    )
    .await?;
    Ok(rollback::rollback(
        client,
        state.engines().of_run(spec).spec(),
        user,
        migration_id,
        state.http().db_statement_timeout,
        |_, _, _| {},
    )
    .await?)
}

/// Step 3: what the audit log keeps of a rollback: its result and details.
fn rollback_outcome(
    done: &Result<Option<rollback::RollbackReport>, ApiError>,
) -> (&'static str, serde_json::Value) {
    match done {
        Ok(Some(r)) if r.already_rolled_back => ("already_rolled_back", json!({})),
        Ok(Some(r)) => (
            "rolled_back",
            json!({ "restored": r.restored, "dismissed_conflicts": r.dismissed_conflicts }),
        ),
        Ok(None) => ("not_found", json!({})),
        Err(e) => ("failed", json!({ "error": e.to_string() })),
    }
}

/// The body of a resolution on the user's behalf: the version to keep (`stored` or
/// `incoming`: an operator does not edit a user's data) and the operator's confirmation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveRequest {
    choice: String,
    confirm: bool,
}

/// What a resolution answers.
#[derive(Debug, Serialize)]
pub(super) struct ResolveDone {
    user_id: Uuid,
    conflict_id: i64,
    choice: conflicts::Choice,
    audit_id: i64,
}

/// `POST /admin/api/users/{user_id}/conflicts/{conflict_id}/resolve {"choice": "stored" |
/// "incoming", "confirm": true}`: resolves the user's conflict as the user would
/// ([`conflicts::resolve`]), with one audit row whatever the result. 404 for a user or
/// conflict that does not exist (or is another user's), 409 when already resolved.
pub(super) async fn resolve_for_user(
    State(state): State<AppState>,
    Extension(operator): Extension<Operator>,
    Path((user, conflict)): Path<(String, String)>,
    Json(body): Json<ResolveRequest>,
) -> Result<Json<ResolveDone>, ApiError> {
    let (user, conflict_id, choice) = resolve_request(&user, &conflict, &body)?;
    let mut client = connection(&state).await?;
    let (migration_id, spec) = conflict_run(&client, user, conflict_id).await?;
    let engine = state.engines().of_run(spec);
    let resolution = conflicts::Resolution {
        choice,
        value: None,
    };
    let done = conflicts::resolve(
        &mut client,
        engine.spec(),
        &engine.cipher,
        user,
        conflict_id,
        resolution,
        state.http().db_statement_timeout,
    )
    .await;
    let audit_id = record_action(
        &client,
        &operator,
        "resolve_conflict",
        (user, migration_id),
        resolve_outcome(&done, conflict_id, choice),
    )
    .await?;
    resolve_answer(done, user, conflict_id)?;
    Ok(Json(ResolveDone {
        user_id: user,
        conflict_id,
        choice,
        audit_id,
    }))
}

/// Step 1: the user, conflict and choice of a resolution request, confirmed.
fn resolve_request(
    user: &str,
    conflict: &str,
    body: &ResolveRequest,
) -> Result<(Uuid, i64, conflicts::Choice), ApiError> {
    let user = user_id(user)?;
    let conflict_id: i64 = conflict.parse().map_err(|_| {
        not_found(format!(
            "there is no conflict {}: conflict ids are numbers",
            crate::http::error::quote_input(conflict)
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
    Ok((user, conflict_id, choice))
}

/// Step 2: the migration the conflict came in, and that run's spec app and version (`None`s
/// when the user has no such conflict: the resolution then says "not found").
async fn conflict_run(
    client: &deadpool_postgres::Object,
    user: Uuid,
    conflict_id: i64,
) -> Result<(Option<Uuid>, Option<(String, String)>), ApiError> {
    let row = client
        .query_typed_opt(
            "SELECT c.migration_id, r.spec_app, r.spec_version FROM ferry_conflicts c
               LEFT JOIN ferry_migration_runs r ON r.user_id = c.user_id AND r.migration_id = c.migration_id
              WHERE c.user_id = $1 AND c.id = $2",
            &[(&user, Type::UUID), (&conflict_id, Type::INT8)],
        )
        .await
        .map_err(|e| ApiError::from(DbError::query("read the conflict's run", &e)))?;
    let Some(row) = row else {
        return Ok((None, None));
    };
    let migration_id: Option<Uuid> = row.try_get(0).ok();
    let app: Option<String> = row.try_get(1).ok().flatten();
    let version: Option<String> = row.try_get(2).ok().flatten();
    Ok((migration_id, app.zip(version)))
}

/// Step 3: what the audit log keeps of a resolution: its result and details.
fn resolve_outcome(
    done: &Result<(), conflicts::ResolveError>,
    conflict_id: i64,
    choice: conflicts::Choice,
) -> (&'static str, serde_json::Value) {
    use conflicts::ResolveError as E;
    let mut details = json!({ "conflict_id": conflict_id, "choice": choice });
    let result = match done {
        Ok(()) => "resolved",
        Err(E::NotFound(_)) => "not_found",
        Err(E::AlreadyResolved { .. }) => "already_resolved",
        Err(e @ (E::Invalid { .. } | E::Db(_))) => {
            details["error"] = json!(e.to_string());
            "failed"
        }
    };
    (result, details)
}

/// Step 4: a failed resolution as the answer it gets.
fn resolve_answer(
    done: Result<(), conflicts::ResolveError>,
    user: Uuid,
    conflict_id: i64,
) -> Result<(), ApiError> {
    use conflicts::ResolveError as E;
    match done {
        Ok(()) => Ok(()),
        Err(E::NotFound(_)) => Err(not_found(format!(
            "user {user} has no conflict {conflict_id}"
        ))),
        Err(e @ E::AlreadyResolved { .. }) => Err(ApiError::refused(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyResolved,
            e.to_string(),
        )),
        Err(E::Invalid { message, column }) => Err(ApiError::InvalidBody {
            message,
            details: column.map(|c| json!({ "column": c })),
        }),
        Err(E::Db(e)) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<i64>,
}

/// `GET /admin/api/audit[?limit=N]`: the newest operator actions.
pub(super) async fn audit_log(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<Vec<audit::AuditRow>>, ApiError> {
    let query: AuditQuery = parse_query(&uri)?;
    let client = connection(&state).await?;
    Ok(Json(
        audit::recent(&**client, None, query.limit.unwrap_or(50)).await?,
    ))
}
