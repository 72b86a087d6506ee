//! Rolling a migration back: every row the migration touched is put back exactly as it was
//! before the migration first touched it.
//!
//! The ingest statement stores a *before-image* of every stored row it changes
//! (the view `ferry_before_images`, the row as `to_jsonb`; one row of arrays per statement in
//! `ferry_before_image_batches`; the first image per migration and row wins)
//! and the ids of the rows it creates, one array per statement (`ferry_created_rows`). Resolving
//! a conflict (`incoming` or `edited`) stores an image too (`NULL` when the row did not exist),
//! under the conflict's migration. Both carry an `ord` from one sequence, so the first thing
//! the migration did to a row is known. Rolling back, in one transaction: rows the migration
//! first created are deleted, the others are restored from their image with
//! `jsonb_populate_record`, the migration's open conflicts are dismissed and the run is marked
//! `rolled_back`. Batches of a rolled-back migration are refused from then on (409 `migration_rolled_back`); a replay of a
//! batch applied before still gets its stored answer and changes nothing.
//!
//! **Later changes to the same rows are overwritten.** The image is the row as it was before
//! *this* migration; if a later migration (or the app) changed a row since, rolling this one
//! back puts the older version back and that later change is lost for the row (a later
//! migration's own before-image then holds this migration's version). Roll migrations back
//! newest first. The rollback is scoped to one user: rows of other users are never read.
//!
//! **A purged migration cannot be rolled back.** `ferry-server purge` removes a verified
//! migration's before-images once its retention has passed ([`crate::operator::purge`]); its
//! rollback is then refused (409 `migration_purged`, the CLI says when it was purged).

use ferry_core::spec::{Kind, Spec};
use tokio_postgres::Client;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::DbError;
use crate::db::sql::{quote_ident, rfc3339_sql};

/// What a rollback did, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RollbackReport {
    /// Rows restored or deleted, over every table.
    pub restored: u64,
    /// `(table, rows deleted, rows restored)`, in spec order.
    pub tables: Vec<(String, u64, u64)>,
    /// Whether the run had already been rolled back (then nothing was done).
    pub already_rolled_back: bool,
    /// Open conflicts of the migration that were dismissed.
    pub dismissed_conflicts: u64,
    /// When the migration's bookkeeping was purged (RFC 3339, UTC), if it was: its
    /// before-images are gone, so nothing was done (`ferry-server purge`).
    pub purged_at: Option<String>,
}

/// Rolls `user`'s migration `migration_id` back; `None` when the user has no such run.
/// `progress` is called once per table after it is done.
pub async fn rollback(
    client: &mut Client,
    spec: &Spec,
    user: Uuid,
    migration_id: Uuid,
    statement_timeout: Option<std::time::Duration>,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<Option<RollbackReport>, DbError> {
    let tx = crate::db::begin(client, statement_timeout)
        .await
        .map_err(|e| DbError::query("start the rollback", &e))?;
    // The user's lock first, as every batch takes it: the rollback sees every row a batch of
    // another migration of this user committed, and no batch writes while it restores.
    crate::db::lock_user(&tx, user)
        .await
        .map_err(|e| DbError::query("wait for the user's other writes", &e))?;
    // Locking the run serialises the rollback with batches of the same migration.
    let Some(run) = tx
        .query_typed_opt(
            &format!(
                "SELECT status, {} FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2 FOR UPDATE",
                rfc3339_sql("purged_at")
            ),
            &[(&user, Type::UUID), (&migration_id, Type::UUID)],
        )
        .await
        .map_err(|e| DbError::query("lock the migration run", &e))?
    else {
        return Ok(None);
    };
    let status: String = run
        .try_get(0)
        .map_err(|e| DbError::query("read the run status", &e))?;
    let mut report = RollbackReport::default();
    if status == "rolled_back" {
        report.already_rolled_back = true;
        return Ok(Some(report));
    }
    // Without its before-images, a rollback would delete the rows the migration added and
    // restore nothing it changed: refused as a whole.
    report.purged_at = run
        .try_get(1)
        .map_err(|e| DbError::query("read when the run was purged", &e))?;
    if report.purged_at.is_some() {
        return Ok(Some(report));
    }
    for kind in &spec.kinds {
        let table = quote_ident(&kind.table);
        let id = quote_ident(&kind.id.column);
        let first = first_change_sql();
        let deleted = tx
            .execute_typed(
                &format!(
                    "{first} DELETE FROM {table} t USING first f
                     WHERE f.before IS NULL AND t.user_id = $1 AND t.{id} = f.row_id"
                ),
                &[
                    (&user, Type::UUID),
                    (&migration_id, Type::UUID),
                    (&kind.table, Type::TEXT),
                ],
            )
            .await
            .map_err(|e| {
                DbError::query(
                    format!("delete the rows the migration added to {}", kind.table),
                    &e,
                )
            })?;
        let set_all = set_every_column(kind);
        // A row deleted since is inserted again; an existing one gets its columns back. The
        // image's user must be this user (it always is: images are taken per user).
        let restored = tx
            .execute_typed(
                &format!(
                    "{first} INSERT INTO {table}
                     SELECT (jsonb_populate_record(NULL::{table}, f.before)).*
                     FROM first f
                     WHERE f.before IS NOT NULL AND f.before->>'user_id' = $1::text
                     ON CONFLICT (user_id, {id}) DO UPDATE SET {set_all}"
                ),
                &[
                    (&user, Type::UUID),
                    (&migration_id, Type::UUID),
                    (&kind.table, Type::TEXT),
                ],
            )
            .await
            .map_err(|e| DbError::query(format!("restore the rows of {}", kind.table), &e))?;
        progress(&kind.table, deleted, restored);
        report.restored += deleted + restored;
        report.tables.push((kind.table.clone(), deleted, restored));
    }
    report.dismissed_conflicts = tx
        .execute_typed(
            "UPDATE ferry_conflicts SET status = 'dismissed', resolved_at = now()
             WHERE user_id = $1 AND migration_id = $2 AND status = 'open'",
            &[(&user, Type::UUID), (&migration_id, Type::UUID)],
        )
        .await
        .map_err(|e| DbError::query("dismiss the migration's conflicts", &e))?;
    tx.execute_typed(
        "UPDATE ferry_migration_runs SET status = 'rolled_back', finished_at = now()
         WHERE user_id = $1 AND migration_id = $2",
        &[(&user, Type::UUID), (&migration_id, Type::UUID)],
    )
    .await
    .map_err(|e| DbError::query("mark the run rolled back", &e))?;
    tx.commit()
        .await
        .map_err(|e| DbError::query("commit the rollback", &e))?;
    Ok(Some(report))
}

/// `WITH … first AS (row_id, before)`: for each row migration `$2` of user `$1` touched in
/// table `$3`, the first thing the migration did to it. A creation (`ferry_created_rows`) or a
/// `NULL` image gives `before` NULL: the row is deleted. An image of a stored row gives that
/// row: it is put back. Images older than the `ord` column count as first.
fn first_change_sql() -> &'static str {
    "WITH created AS (SELECT r.row_id, min(c.ord) AS ord
                        FROM ferry_created_rows c CROSS JOIN LATERAL unnest(c.row_ids) AS r(row_id)
                       WHERE c.user_id = $1 AND c.migration_id = $2 AND c.table_name = $3
                       GROUP BY r.row_id),
          images AS (SELECT DISTINCT ON (bi.row_id) bi.row_id, bi.before, coalesce(bi.ord, 0) AS ord
                       FROM ferry_before_images bi
                      WHERE bi.user_id = $1 AND bi.migration_id = $2 AND bi.table_name = $3
                      ORDER BY bi.row_id, coalesce(bi.ord, 0)),
          first AS (SELECT coalesce(i.row_id, c.row_id) AS row_id,
                           CASE WHEN i.row_id IS NOT NULL AND (c.row_id IS NULL OR i.ord < c.ord)
                                THEN i.before END AS before
                      FROM images i FULL JOIN created c ON c.row_id = i.row_id)"
}

/// Why a purged migration is not rolled back, said the same way by the HTTP answer and the CLI.
pub fn purged_message(migration_id: Uuid, purged_at: &str) -> String {
    format!(
        "migration {migration_id} cannot be rolled back: its before-images were purged at {purged_at}, after its verification (`ferry-server purge`; a longer --older-than or FERRY_PURGE_AFTER keeps migrations that can be rolled back longer); its rows stay as they are"
    )
}

/// `(a, b, …) = ROW(excluded.a, excluded.b, …)` over every column of the kind's table but
/// `user_id` and the id: the `DO UPDATE` of an upsert that puts a whole stored row back.
pub(crate) fn set_every_column(kind: &Kind) -> String {
    let columns: Vec<String> = kind
        .expected_table()
        .columns
        .into_iter()
        .map(|c| c.name)
        .filter(|c| c != "user_id" && c != &kind.id.column)
        .map(|c| quote_ident(&c))
        .collect();
    let excluded: Vec<String> = columns.iter().map(|c| format!("excluded.{c}")).collect();
    format!("({}) = ROW({})", columns.join(", "), excluded.join(", "))
}
