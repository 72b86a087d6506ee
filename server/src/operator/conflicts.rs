//! Conflicts of kinds with the `manual` policy: listing the open ones and resolving one.
//!
//! The ingest statement leaves the stored row untouched and queues both versions in
//! `ferry_conflicts` (`stored` without `user_id`, `incoming` as the row it would have written;
//! sensitive values are ciphertext in both, as in the tables).
//!
//! Resolving ([`resolve`]), in one transaction, each step a function:
//! 1. `lock_open_conflict`: the conflict, locked; another user's id is "not found", a
//!    resolved one is refused.
//! 2. `chosen_row`: what the choice writes:
//!    - `stored` keeps the row as it is;
//!    - `incoming` writes the incoming version into the app table (`jsonb_populate_record`);
//!    - `edited` (`edited_row`) writes the stored row with the columns the user edited, each
//!      checked against its field in the spec (type, required, length, enum values, regex,
//!      numeric range, item count; not `email`/`url` formats), sensitive values encrypted
//!      unless they are the ciphertext the list showed.
//! 3. `keep_before_image`: before writing, the row's before-image is stored under the
//!    conflict's migration (unless that migration already has one), so the choice is auditable
//!    and a rollback of the migration undoes it too; then `write_row`.
//! 4. `mark_resolved`: the conflict gets its status (`kept_stored`, `took_incoming`,
//!    `edited`), `resolved_at`, and the written row in `resolution`.
//!
//! Everything is scoped by the user: another user's conflict id is "not found".

use ferry_core::spec::{FieldType, Kind, Spec};
use serde_json::{Map, Value};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::db::sql::{quote_ident, rfc3339_sql};
use crate::db::{DbError, query_error};
use crate::ingest::field_crypto::{CellContext, FieldCipher, PREFIX};
use crate::operator::rollback::set_every_column;

pub use ferry_core::contract::{Choice, Conflict, Resolution};

/// Why a conflict could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No open or closed conflict with this id for this user.
    #[error("there is no conflict {0} for this user")]
    NotFound(i64),
    /// It was resolved before.
    #[error(
        "conflict {id} was already resolved ({status}); list the open ones with GET /v1/conflicts"
    )]
    AlreadyResolved {
        /// The conflict.
        id: i64,
        /// How.
        status: String,
    },
    /// The resolution does not fit the conflict's kind.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// The column at fault, if one.
        column: Option<String>,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn invalid(message: impl Into<String>, column: Option<&str>) -> ResolveError {
    ResolveError::Invalid {
        message: message.into(),
        column: column.map(str::to_owned),
    }
}

/// The open conflicts of `user` (every user's when `None`), oldest first.
pub async fn open_conflicts(client: &Client, user: Option<Uuid>) -> Result<Vec<Conflict>, DbError> {
    // One user's list pins `user_id` (a single-shard statement if the tables are distributed
    // by it, docs/scaling.md); the operator's fleet-wide one reads them all.
    let filter = if user.is_some() {
        "user_id = $1"
    } else {
        "$1::uuid IS NULL"
    };
    let rows = client
        .query_typed(
            &format!(
                "SELECT id, user_id, kind, row_id, migration_id, stored, incoming, {}
                 FROM ferry_conflicts WHERE status = 'open' AND {filter}
                 ORDER BY id",
                rfc3339_sql("created_at")
            ),
            &[(&user, Type::UUID)],
        )
        .await
        .map_err(|e| DbError::query("list the open conflicts", &e))?;
    let mut conflicts = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |row: &tokio_postgres::Row| -> Result<Conflict, tokio_postgres::Error> {
            Ok(Conflict {
                id: row.try_get(0)?,
                user_id: if user.is_some() {
                    None
                } else {
                    Some(row.try_get(1)?)
                },
                kind: row.try_get(2)?,
                row_id: row.try_get(3)?,
                migration_id: row.try_get(4)?,
                stored: row.try_get(5)?,
                incoming: row.try_get(6)?,
                created_at: row.try_get(7)?,
            })
        };
        conflicts.push(read(&row).map_err(|e| DbError::query("read a conflict", &e))?);
    }
    Ok(conflicts)
}

/// Resolves `user`'s conflict `id`, in one transaction. See the module documentation.
pub async fn resolve(
    client: &mut Client,
    spec: &Spec,
    cipher: &FieldCipher,
    user: Uuid,
    id: i64,
    resolution: Resolution,
    statement_timeout: Option<std::time::Duration>,
) -> Result<(), ResolveError> {
    let tx = crate::db::begin(client, statement_timeout)
        .await
        .map_err(query_error("start resolving"))?;
    // The user's lock first, as every batch takes it: the chosen row is written with no batch
    // of the same user in between.
    crate::db::lock_user(&tx, user)
        .await
        .map_err(query_error("wait for the user's other writes"))?;
    let conflict = lock_open_conflict(&tx, user, id).await?;
    let kind = spec.kind(&conflict.kind_name).ok_or_else(|| {
        invalid(
            format!(
                "conflict {id} is of kind {:?}, which the spec the server runs no longer has",
                conflict.kind_name
            ),
            None,
        )
    })?;
    if resolution.choice != Choice::Edited && resolution.value.is_some() {
        return Err(invalid("`value` is only for the choice `edited`", None));
    }
    let (new_status, written) = chosen_row(&tx, kind, cipher, user, &conflict, resolution).await?;
    if let Some(row) = written.clone() {
        keep_before_image(&tx, kind, user, &conflict).await?;
        write_row(&tx, kind, user, conflict.row_id, row).await?;
    }
    mark_resolved(&tx, user, id, new_status, written).await?;
    tx.commit()
        .await
        .map_err(query_error("commit the resolution"))?;
    Ok(())
}

/// A conflict being resolved, locked for the transaction.
struct LockedConflict {
    id: i64,
    kind_name: String,
    row_id: Uuid,
    migration_id: Uuid,
    incoming: Value,
}

/// Locks `user`'s conflict `id` (`FOR UPDATE`): not found for another user's id; refused when
/// it was resolved before.
async fn lock_open_conflict(
    tx: &Transaction<'_>,
    user: Uuid,
    id: i64,
) -> Result<LockedConflict, ResolveError> {
    let Some(row) = tx
        .query_typed_opt(
            "SELECT kind, row_id, migration_id, incoming, status FROM ferry_conflicts
             WHERE id = $1 AND user_id = $2 FOR UPDATE",
            &[(&id, Type::INT8), (&user, Type::UUID)],
        )
        .await
        .map_err(query_error("lock the conflict"))?
    else {
        return Err(ResolveError::NotFound(id));
    };
    let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
        Ok((
            row.try_get::<_, String>(0)?,
            row.try_get::<_, Uuid>(1)?,
            row.try_get::<_, Uuid>(2)?,
            row.try_get::<_, Value>(3)?,
            row.try_get::<_, String>(4)?,
        ))
    };
    let (kind_name, row_id, migration_id, incoming, status) =
        read(&row).map_err(query_error("read the conflict"))?;
    if status != "open" {
        return Err(ResolveError::AlreadyResolved { id, status });
    }
    Ok(LockedConflict {
        id,
        kind_name,
        row_id,
        migration_id,
        incoming,
    })
}

/// The conflict's new status and the row to write (`None`: the stored row stays).
async fn chosen_row(
    tx: &Transaction<'_>,
    kind: &Kind,
    cipher: &FieldCipher,
    user: Uuid,
    conflict: &LockedConflict,
    resolution: Resolution,
) -> Result<(&'static str, Option<Map<String, Value>>), ResolveError> {
    match resolution.choice {
        Choice::Stored => Ok(("kept_stored", None)),
        Choice::Incoming => {
            let Value::Object(row) = conflict.incoming.clone() else {
                return Err(invalid(
                    format!("conflict {} has no incoming row", conflict.id),
                    None,
                ));
            };
            Ok(("took_incoming", Some(row)))
        }
        Choice::Edited => {
            let edits = resolution.value.filter(|v| !v.is_empty()).ok_or_else(|| {
                invalid(
                    "the choice `edited` needs `value`: an object of column → value",
                    None,
                )
            })?;
            let row = edited_row(tx, kind, cipher, user, conflict, edits).await?;
            Ok(("edited", Some(row)))
        }
    }
}

/// The stored row (the incoming one, if the stored row is gone) with the user's edits, each
/// checked against its field.
async fn edited_row(
    tx: &Transaction<'_>,
    kind: &Kind,
    cipher: &FieldCipher,
    user: Uuid,
    conflict: &LockedConflict,
    edits: Map<String, Value>,
) -> Result<Map<String, Value>, ResolveError> {
    let table = quote_ident(&kind.table);
    let id_column = quote_ident(&kind.id.column);
    let current = tx
        .query_typed_opt(
            &format!(
                "SELECT to_jsonb(t) FROM {table} t WHERE t.user_id = $1 AND t.{id_column} = $2"
            ),
            &[(&user, Type::UUID), (&conflict.row_id, Type::UUID)],
        )
        .await
        .map_err(query_error("read the stored row"))?;
    let mut row = match current.map(|r| r.try_get::<_, Value>(0)) {
        Some(Ok(Value::Object(map))) => map,
        Some(Err(e)) => return Err(query_error("read the stored row")(e).into()),
        _ => match &conflict.incoming {
            // The stored row is gone: edit the incoming version instead.
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        },
    };
    for (column, value) in edits {
        let checked = check_edit(kind, cipher, user, conflict.row_id, &column, value)?;
        row.insert(column, checked);
    }
    Ok(row)
}

/// Stores the row's before-image under the conflict's migration (unless that migration has
/// one already), so a rollback of the migration undoes the choice too. Not for a migration
/// whose bookkeeping was purged: it cannot be rolled back, the image would never be read.
async fn keep_before_image(
    tx: &Transaction<'_>,
    kind: &Kind,
    user: Uuid,
    conflict: &LockedConflict,
) -> Result<(), ResolveError> {
    let table = quote_ident(&kind.table);
    let id_column = quote_ident(&kind.id.column);
    tx.execute_typed(
        &format!(
            "INSERT INTO ferry_before_image_rows (user_id, migration_id, table_name, row_id, before)
             SELECT $1, $2, $3, $4, (SELECT to_jsonb(t) FROM {table} t WHERE t.user_id = $1 AND t.{id_column} = $4)
              WHERE NOT EXISTS (SELECT 1 FROM ferry_migration_runs r
                                 WHERE r.user_id = $1 AND r.migration_id = $2 AND r.purged_at IS NOT NULL)
                AND NOT EXISTS (SELECT 1 FROM ferry_before_images x
                                 WHERE x.user_id = $1 AND x.migration_id = $2 AND x.table_name = $3 AND x.row_id = $4)
             ON CONFLICT DO NOTHING"
        ),
        &[
            (&user, Type::UUID),
            (&conflict.migration_id, Type::UUID),
            (&kind.table, Type::TEXT),
            (&conflict.row_id, Type::UUID),
        ],
    )
    .await
    .map_err(query_error("keep the row's before-image"))?;
    Ok(())
}

/// Writes the chosen `row` into the app table as `user`'s row `row_id`. A value PostgreSQL
/// refuses (a CHECK the spec does not know) is the user's to fix: refused as invalid.
async fn write_row(
    tx: &Transaction<'_>,
    kind: &Kind,
    user: Uuid,
    row_id: Uuid,
    mut row: Map<String, Value>,
) -> Result<(), ResolveError> {
    let table = quote_ident(&kind.table);
    let id_column = quote_ident(&kind.id.column);
    row.insert("user_id".to_owned(), Value::String(user.to_string()));
    row.insert(kind.id.column.clone(), Value::String(row_id.to_string()));
    let set_all = set_every_column(kind);
    tx.execute_typed(
        &format!(
            "INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, $1::jsonb)).*
             ON CONFLICT (user_id, {id_column}) DO UPDATE SET {set_all}"
        ),
        &[(&Value::Object(row), Type::JSONB)],
    )
    .await
    .map_err(|e| {
        if e.code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
        {
            invalid(
                format!(
                    "the database refused the row: {}",
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                ),
                None,
            )
        } else {
            query_error("write the chosen row")(e).into()
        }
    })?;
    Ok(())
}

/// The conflict's status, `resolved_at` and the written row in `resolution`.
async fn mark_resolved(
    tx: &Transaction<'_>,
    user: Uuid,
    id: i64,
    status: &str,
    written: Option<Map<String, Value>>,
) -> Result<(), ResolveError> {
    tx.execute_typed(
        "UPDATE ferry_conflicts SET status = $3, resolved_at = now(), resolution = $4
         WHERE id = $1 AND user_id = $2",
        &[
            (&id, Type::INT8),
            (&user, Type::UUID),
            (&status, Type::TEXT),
            (&written.map(Value::Object), Type::JSONB),
        ],
    )
    .await
    .map_err(query_error("mark the conflict resolved"))?;
    Ok(())
}

/// Checks one edited value against its field with the engine's rules
/// ([`ferry_core::pipeline::check_stored_value`]) and returns what goes into the row's JSON:
/// sensitive text encrypted, as the ingest stores it.
fn check_edit(
    kind: &Kind,
    cipher: &FieldCipher,
    user: Uuid,
    row_id: Uuid,
    column: &str,
    value: Value,
) -> Result<Value, ResolveError> {
    let Some(field) = kind.field_for_column(column) else {
        let known: Vec<&str> = kind.fields.iter().map(|f| f.column.as_str()).collect();
        // The name is the caller's (a key of `value`), not a column: quoted shortened.
        let quoted = ferry_core::pipeline::quote(column);
        return Err(invalid(
            format!(
                "column {quoted} cannot be edited in kind {:?}: editable columns are {}",
                kind.name,
                known.join(", ")
            ),
            Some(quoted.trim_matches('"')),
        ));
    };
    let fail = |why: String| invalid(format!("column {column:?}: {why}"), Some(column));
    if value.is_null() {
        return if field.may_be_null() {
            Ok(Value::Null)
        } else {
            Err(fail("may not be empty (null)".to_owned()))
        };
    }
    let ctx = CellContext {
        user_id: user,
        table: &kind.table,
        row_id,
        column,
    };
    // A sensitive value the user left as it was is already our ciphertext: kept as it is.
    if field.sensitive
        && let Value::String(text) = &value
        && is_our_ciphertext(cipher, &ctx, text)
    {
        return Ok(value);
    }
    let mut checked = ferry_core::pipeline::check_stored_value(field, value).map_err(fail)?;
    match (&field.ty, &mut checked) {
        (FieldType::String(_), Value::String(text)) if field.sensitive => {
            *text = cipher.encrypt(&ctx, text);
        }
        (FieldType::Json { sensitive_keys }, Value::Object(map)) => {
            for key in sensitive_keys {
                if let Some(Value::String(secret)) = map.get_mut(key) {
                    let inner_column = format!("{column}.{key}");
                    let inner = CellContext {
                        column: &inner_column,
                        ..ctx
                    };
                    if !is_our_ciphertext(cipher, &inner, secret) {
                        *secret = cipher.encrypt(&inner, secret);
                    }
                }
            }
        }
        _ => {}
    }
    Ok(checked)
}

fn is_our_ciphertext(cipher: &FieldCipher, ctx: &CellContext<'_>, text: &str) -> bool {
    text.starts_with(PREFIX) && cipher.decrypt(ctx, text).is_ok()
}
