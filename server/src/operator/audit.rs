//! The operator's audit log (`ferry_operator_audit`): one row per action an operator takes
//! through the dashboard (`/admin`), whatever its result: who (the credential's label, never
//! the secret), what, on which user and migration, when, and how it ended.

use serde::Serialize;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::sql::rfc3339_sql;
use crate::db::{DbError, query_error};

/// Most rows [`recent`] returns.
pub const MAX_AUDIT_ROWS: i64 = 200;

/// One action to record.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// The operator credential's label.
    pub operator: &'a str,
    /// What was done (`rollback`).
    pub action: &'a str,
    /// The user it was done to.
    pub user_id: Uuid,
    /// The migration, when the action names one.
    pub migration_id: Option<Uuid>,
    /// How it ended (`rolled_back`, `already_rolled_back`, `not_found`, `failed`).
    pub result: &'a str,
    /// What else is worth keeping (rows restored, the error).
    pub details: serde_json::Value,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// Row id (increasing).
    pub id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The operator credential's label.
    pub operator: String,
    /// What was done.
    pub action: String,
    /// The user.
    pub user_id: Uuid,
    /// The migration, if the action named one.
    pub migration_id: Option<Uuid>,
    /// How it ended.
    pub result: String,
    /// What else was kept.
    pub details: serde_json::Value,
}

/// Records `action`.
pub async fn record(client: &impl GenericClient, action: &Action<'_>) -> Result<i64, DbError> {
    let row = client
        .query_typed_one(
            "INSERT INTO ferry_operator_audit (operator, action, user_id, migration_id, result, details)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                (&action.operator, Type::TEXT),
                (&action.action, Type::TEXT),
                (&action.user_id, Type::UUID),
                (&action.migration_id, Type::UUID),
                (&action.result, Type::TEXT),
                (&action.details, Type::JSONB),
            ],
        )
        .await
        .map_err(query_error("record the operator action"))?;
    row.try_get(0)
        .map_err(query_error("read the audit row's id"))
}

/// The newest rows (of `user` only, when given), newest first, at most `limit`
/// (capped at [`MAX_AUDIT_ROWS`]).
pub async fn recent(
    client: &impl GenericClient,
    user: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuditRow>, DbError> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT id, {}, operator, action, user_id, migration_id, result, details
                   FROM ferry_operator_audit
                  WHERE ($1::uuid IS NULL OR user_id = $1)
                  ORDER BY id DESC LIMIT $2",
                rfc3339_sql("at")
            ),
            &[
                (&user, Type::UUID),
                (&limit.clamp(1, MAX_AUDIT_ROWS), Type::INT8),
            ],
        )
        .await
        .map_err(query_error("list the operator actions"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |row: &tokio_postgres::Row| -> Result<AuditRow, tokio_postgres::Error> {
            Ok(AuditRow {
                id: row.try_get(0)?,
                at: row.try_get(1)?,
                operator: row.try_get(2)?,
                action: row.try_get(3)?,
                user_id: row.try_get(4)?,
                migration_id: row.try_get(5)?,
                result: row.try_get(6)?,
                details: row.try_get(7)?,
            })
        };
        out.push(read(&row).map_err(query_error("read an operator action"))?);
    }
    Ok(out)
}
