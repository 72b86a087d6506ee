//! Batch ingest: one batch in, exactly once, into PostgreSQL with the kinds' conflict policies.
//!
//! First, before the transaction opens ([`prepare`], CPU only): the body is decoded, every record
//! re-run through the shared pipeline (step 2 below) and every kind's column arrays built, with
//! sensitive fields sealed. Then ([`apply`]), for one batch of one user, in one transaction:
//!
//! 1. **Claim the idempotency key** `(user, migration id, sequence)` in `ferry_ingest_ledger`
//!    with the SHA-256 of the body. A key already there with the same hash is a replay: its
//!    stored answer is returned, marked `replay`, and nothing else happens. A different hash is
//!    refused (409). Two concurrent copies: the second waits on the first's row lock, then
//!    finds the claim and replays its answer.
//!    Then the migration's run row is upserted and locked (`ferry_migration_runs`): a batch of
//!    a rolled-back migration is refused ([`IngestError::RolledBack`], 409), and a rollback of
//!    the same migration waits for the batch (or the batch for the rollback).
//! 2. **Re-run the shared pipeline** on every record ([`ferry_core::wire::reprocess`]): the
//!    server trusts no id, hash or verdict from the browser. Records rejected by the browser or
//!    the server go to `ferry_quarantine` with their raw value and reasons.
//! 3. **One statement per kind** ([`KindPlan`]): the batch's rows travel as one array per column,
//!    `unnest`ed into an `incoming` set; the statement locks and snapshots the stored rows
//!    (`before`), upserts with `ON CONFLICT (user_id, id) DO UPDATE … WHERE <policy>`, writes
//!    the before-image of every row it changes (first image per migration wins, so a rollback
//!    restores the state before the migration), queues manual conflicts, and returns one line
//!    per incoming row from which the per-record outcome is read.
//! 4. Record every received record's hash in `ferry_received` (its 16 bytes; for the
//!    verification report), and store the answer in the ledger.
//!
//! The small fixed statements (claim, run row, `ferry_received`, answer) are prepared once per
//! pooled connection (`prepare_cached`); the per-kind statement is planned on every run.
//!
//! Conflict policies, per kind (`spec.conflict`), for a row that exists and differs:
//! - `skip`: the stored row stays (`kept_stored`).
//! - `overwrite`: the incoming row replaces it (`updated`).
//! - `newest`: the incoming row replaces it only when its `updated_at` is strictly larger;
//!   a tie keeps the stored row, the same way every time (`updated` / `kept_stored`).
//! - `merge`: JSON-object columns are merged key by key (`stored || incoming` when the incoming
//!   row is newer, `incoming || stored` otherwise: on a key both have, the newer row's value
//!   wins; keys only one side has are kept); every other column takes the newer row's value;
//!   ties count as stored-newer (`merged`).
//! - `manual`: the stored row stays and both versions go to `ferry_conflicts` (`conflict_queued`),
//!   once per distinct incoming version while the conflict is open.
//!
//! A row that exists and is equal is `unchanged` and is not written.
//!
//! A batch executes a fixed number of statements whatever its size: `BEGIN`, the ledger claim,
//! the run row, one per kind present, the quarantine insert (when something was rejected), the
//! `ferry_received` insert, the answer, `COMMIT` — 10 for a batch of three kinds with rejected
//! records (measured with `pg_stat_statements` in the tests, for 20 and 2,000 records).
//! A transaction that loses a serialization failure or deadlock is rolled back whole; the
//! caller may run it again ([`IngestError::is_retryable`]; `POST /v1/batches` does, once).
//!
//! Known limit: a row inserted by a *concurrent* transaction after this statement's snapshot
//! is updated by `ON CONFLICT` but reported `inserted`, and its before-image says "did not
//! exist" (a rollback would delete it). Two browsers of one user migrating the same record at
//! the same instant is the only way to get there.

pub mod field_crypto;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use ferry_core::pipeline::{Cell, ContentHash, Outcome, Record};
use ferry_core::spec::{ColumnType, ConflictPolicy, Field, FieldType, Kind, Spec};
use ferry_core::wire::{self, Batch, WireError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::db::sql::{quote_ident, quote_literal};
use crate::ingest::field_crypto::{CellContext, FieldCipher, QuarantineContext};

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOutcome {
    /// A new row.
    Inserted,
    /// The stored row was replaced.
    Updated,
    /// The stored row was already equal.
    Unchanged,
    /// The stored row won (policy `skip`, or `newest` with an older incoming row).
    KeptStored,
    /// Merged into the stored row (policy `merge`).
    Merged,
    /// Waiting for the user (policy `manual`).
    ConflictQueued,
    /// Not migrated; in the quarantine with its reasons.
    Quarantined,
}

impl RecordOutcome {
    /// The snake_case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inserted => "inserted",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::KeptStored => "kept_stored",
            Self::Merged => "merged",
            Self::ConflictQueued => "conflict_queued",
            Self::Quarantined => "quarantined",
        }
    }
}

/// The answer for one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordResult {
    /// The server's target id, when one could be derived.
    pub id: Option<Uuid>,
    /// The content hash the browser sent.
    pub hash: String,
    /// Kind name.
    pub kind: String,
    /// What happened.
    pub outcome: RecordOutcome,
    /// Reasons, for quarantined records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The answer to one batch (stored in the ledger and returned again on a replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The migration.
    pub migration_id: Uuid,
    /// The batch's sequence number.
    pub sequence: u32,
    /// Whether this answer is a stored one, for a batch already applied.
    pub replay: bool,
    /// One entry per record, `records` first then `rejected`, in batch order.
    pub outcomes: Vec<RecordResult>,
    /// Counts per kind and outcome.
    pub counts: BTreeMap<String, BTreeMap<RecordOutcome, u64>>,
}

/// Why a batch was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not a batch, or not for this spec.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The idempotency key was used before with a different body.
    #[error(
        "batch {sequence} of migration {migration_id} was already received with different content; a batch is never changed once sent: start a new migration"
    )]
    IdempotencyConflict {
        /// The migration.
        migration_id: Uuid,
        /// The sequence number.
        sequence: u32,
    },
    /// The migration was rolled back: its remaining batches must not apply.
    #[error(
        "migration {migration_id} was rolled back; its batches are no longer accepted: start a new migration"
    )]
    RolledBack {
        /// The migration.
        migration_id: Uuid,
    },
    /// The database failed.
    #[error("database error while {context}: {source}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl IngestError {
    /// Whether the whole batch should simply be tried again: the transaction lost a
    /// serialization failure or a deadlock against a concurrent one.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Db { source, .. } if crate::db::is_retryable_transaction(source))
    }
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> IngestError {
    move |source| IngestError::Db { context, source }
}

/// The prepared SQL of every kind, built once from the spec at start.
#[derive(Debug, Clone)]
pub struct IngestPlan {
    spec: Spec,
    kinds: Vec<KindPlan>,
}

/// The upsert statement of one kind and how to fill its parameters.
#[derive(Debug, Clone)]
pub struct KindPlan {
    /// The SQL text: `$1` user id, `$2` migration id, then one array per column.
    pub sql: String,
    columns: Vec<PlanColumn>,
}

#[derive(Debug, Clone)]
struct PlanColumn {
    name: String,
    ty: ColumnType,
    /// Index of the field in the kind, or `None` for the legacy id column.
    field: Option<usize>,
}

impl IngestPlan {
    /// Builds every kind's statement.
    pub fn new(spec: Spec) -> Self {
        let kinds = spec.kinds.iter().map(KindPlan::new).collect();
        Self { spec, kinds }
    }

    /// The spec the plan was built from.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The plan of the kind at `index`.
    pub fn kind(&self, index: usize) -> Option<&KindPlan> {
        self.kinds.get(index)
    }
}

/// The PostgreSQL array type a column's values travel in.
fn param_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Uuid => "uuid[]",
        ColumnType::Text => "text[]",
        ColumnType::BigInt | ColumnType::Timestamptz => "int8[]",
        ColumnType::Double => "float8[]",
        ColumnType::Boolean => "bool[]",
        // A text[] per row would make a ragged 2-D array, which PostgreSQL cannot hold:
        // string arrays travel as JSON arrays and are unpacked in SQL.
        ColumnType::Jsonb | ColumnType::TextArray => "jsonb[]",
    }
}

/// The SQL turning the raw unnested value `u.cN` into the column's value.
fn column_expr(ty: ColumnType, raw: &str) -> String {
    match ty {
        ColumnType::Timestamptz => {
            format!("(timestamptz 'epoch' + {raw} * interval '1 millisecond')")
        }
        ColumnType::TextArray => format!(
            "(CASE WHEN {raw} IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text({raw})) END)"
        ),
        _ => raw.to_owned(),
    }
}

impl KindPlan {
    fn new(kind: &Kind) -> Self {
        let mut columns = Vec::new();
        if let Some(legacy) = &kind.id.legacy_column {
            columns.push(PlanColumn {
                name: legacy.clone(),
                ty: ColumnType::Text,
                field: None,
            });
        }
        for (i, f) in kind.fields.iter().enumerate() {
            columns.push(PlanColumn {
                name: f.column.clone(),
                ty: f.column_type(),
                field: Some(i),
            });
        }
        let sql = build_sql(kind, &columns);
        Self { sql, columns }
    }
}

fn build_sql(kind: &Kind, columns: &[PlanColumn]) -> String {
    let table = quote_ident(&kind.table);
    let id = quote_ident(&kind.id.column);
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let mut sql = String::new();
    // incoming: one line per row of the batch, with its position.
    let mut unnest_args = vec!["$3::uuid[]".to_owned()];
    let mut raw_names = vec!["r_id".to_owned()];
    let mut select = vec![format!("u.r_id AS {id}")];
    for (i, c) in columns.iter().enumerate() {
        unnest_args.push(format!("${}::{}", i + 4, param_type(c.ty)));
        raw_names.push(format!("r{i}"));
        select.push(format!(
            "{} AS {}",
            column_expr(c.ty, &format!("u.r{i}")),
            names[i]
        ));
    }
    let _ = write!(
        sql,
        "WITH incoming AS (SELECT u.ord, {} FROM unnest({}) WITH ORDINALITY AS u({}, ord)), ",
        select.join(", "),
        unnest_args.join(", "),
        raw_names.join(", ")
    );
    // before: the stored rows this batch touches, locked, as they were.
    let _ = write!(
        sql,
        "before AS (SELECT t.* FROM {table} t WHERE t.user_id = $1 AND t.{id} IN (SELECT {id} FROM incoming) FOR UPDATE), "
    );
    let cols_i = names
        .iter()
        .map(|n| format!("i.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cols_b = names
        .iter()
        .map(|n| format!("b.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cols_t = names
        .iter()
        .map(|n| format!("t.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cols_x = names
        .iter()
        .map(|n| format!("excluded.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let differs_tx = format!("({cols_t}) IS DISTINCT FROM ({cols_x})");
    let on_conflict = match kind.conflict {
        ConflictPolicy::Skip | ConflictPolicy::Manual => "DO NOTHING".to_owned(),
        ConflictPolicy::Overwrite => format!(
            "DO UPDATE SET ({}) = ROW({cols_x}) WHERE {differs_tx}",
            names.join(", ")
        ),
        ConflictPolicy::Newest => {
            let u = quote_ident(kind.updated_at.as_deref().unwrap_or("updated_at"));
            format!(
                "DO UPDATE SET ({}) = ROW({cols_x}) WHERE {differs_tx} AND (t.{u} IS NULL OR excluded.{u} > t.{u})",
                names.join(", ")
            )
        }
        ConflictPolicy::Merge => {
            let u = quote_ident(kind.updated_at.as_deref().unwrap_or("updated_at"));
            let newer = format!("(t.{u} IS NULL OR excluded.{u} > t.{u})");
            let sets: Vec<String> = columns
                .iter()
                .zip(&names)
                .map(|(c, n)| {
                    if c.ty == ColumnType::Jsonb {
                        format!(
                            "{n} = CASE WHEN jsonb_typeof(t.{n}) = 'object' AND jsonb_typeof(excluded.{n}) = 'object' \
                             THEN (CASE WHEN {newer} THEN t.{n} || excluded.{n} ELSE excluded.{n} || t.{n} END) \
                             WHEN {newer} THEN excluded.{n} ELSE t.{n} END"
                        )
                    } else if n == &u {
                        format!("{n} = GREATEST(t.{n}, excluded.{n})")
                    } else {
                        format!("{n} = CASE WHEN {newer} THEN excluded.{n} ELSE t.{n} END")
                    }
                })
                .collect();
            format!("DO UPDATE SET {} WHERE {differs_tx}", sets.join(", "))
        }
    };
    // `before` must lock every stored row before `written` changes any: `FOR UPDATE` skips a
    // row the same statement already changed, which would report an update as `inserted` and
    // record "did not exist" as its before-image. The order of CTEs is the plan's choice, so
    // the upsert waits for `before` in full (an init plan runs before the first row).
    let _ = write!(
        sql,
        "written AS (INSERT INTO {table} AS t (user_id, {id}, {}) SELECT $1, i.{id}, {cols_i} FROM incoming i \
         WHERE (SELECT count(*) FROM before) >= 0 \
         ON CONFLICT (user_id, {id}) {on_conflict} RETURNING t.{id}), ",
        names.join(", ")
    );
    let _ = write!(
        sql,
        "images AS (INSERT INTO ferry_before_images (user_id, migration_id, table_name, row_id, before) \
         SELECT $1, $2, {}, w.{id}, to_jsonb(b) FROM written w LEFT JOIN before b ON b.{id} = w.{id} \
         ON CONFLICT DO NOTHING), ",
        quote_literal(&kind.table)
    );
    let differs_ib = format!("({cols_i}) IS DISTINCT FROM ({cols_b})");
    if kind.conflict == ConflictPolicy::Manual {
        let _ = write!(
            sql,
            "queued AS (INSERT INTO ferry_conflicts (user_id, migration_id, kind, row_id, stored, incoming, incoming_hash) \
             SELECT $1, $2, {kind_lit}, i.{id}, to_jsonb(b) - 'user_id', to_jsonb(i) - 'ord', md5((to_jsonb(i) - 'ord')::text) \
             FROM incoming i JOIN before b ON b.{id} = i.{id} WHERE {differs_ib} \
             ON CONFLICT (user_id, kind, row_id, incoming_hash) WHERE status = 'open' DO NOTHING), ",
            kind_lit = quote_literal(&kind.name)
        );
    }
    let _ = write!(
        sql,
        "done AS (SELECT 1) SELECT i.ord, (b.{id} IS NOT NULL) AS existed, (w.{id} IS NOT NULL) AS written, \
         (b.{id} IS NOT NULL AND NOT {differs_ib}) AS same \
         FROM incoming i LEFT JOIN before b ON b.{id} = i.{id} LEFT JOIN written w ON w.{id} = i.{id} ORDER BY i.ord"
    );
    sql
}

/// Column values of one kind for one batch, one vector per column.
enum ColumnValues {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Json(Vec<Option<Value>>),
}

impl ColumnValues {
    fn for_type(ty: ColumnType, capacity: usize) -> Self {
        match ty {
            ColumnType::Uuid | ColumnType::Text => Self::Text(Vec::with_capacity(capacity)),
            ColumnType::BigInt | ColumnType::Timestamptz => Self::Int(Vec::with_capacity(capacity)),
            ColumnType::Double => Self::Float(Vec::with_capacity(capacity)),
            ColumnType::Boolean => Self::Bool(Vec::with_capacity(capacity)),
            ColumnType::Jsonb | ColumnType::TextArray => Self::Json(Vec::with_capacity(capacity)),
        }
    }

    fn push(&mut self, cell: Cell) {
        match (self, cell) {
            (Self::Text(v), Cell::Text(s)) => v.push(Some(s)),
            (Self::Int(v), Cell::Int(n) | Cell::Timestamp(n)) => v.push(Some(n)),
            (Self::Float(v), Cell::Float(n)) => v.push(Some(n)),
            (Self::Bool(v), Cell::Bool(b)) => v.push(Some(b)),
            (Self::Json(v), Cell::Json(j)) => v.push(Some(j)),
            (Self::Json(v), Cell::TextArray(items)) => {
                v.push(Some(Value::Array(
                    items.into_iter().map(Value::String).collect(),
                )));
            }
            (Self::Text(v), _) => v.push(None),
            (Self::Int(v), _) => v.push(None),
            (Self::Float(v), _) => v.push(None),
            (Self::Bool(v), _) => v.push(None),
            (Self::Json(v), _) => v.push(None),
        }
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(v) => v,
            Self::Int(v) => v,
            Self::Float(v) => v,
            Self::Bool(v) => v,
            Self::Json(v) => v,
        }
    }
}

/// Encrypts the secrets of a cell in place.
fn seal_secrets(cipher: &FieldCipher, field: &Field, ctx: CellContext<'_>, cell: &mut Cell) {
    match (&field.ty, cell) {
        (FieldType::String(_), Cell::Text(s)) if field.sensitive => {
            *s = cipher.encrypt(&ctx, s);
        }
        (FieldType::Json { sensitive_keys }, Cell::Json(Value::Object(map))) => {
            for key in sensitive_keys {
                if let Some(Value::String(secret)) = map.get_mut(key) {
                    let column = format!("{}.{key}", ctx.column);
                    let inner = CellContext {
                        column: &column,
                        ..ctx
                    };
                    *secret = cipher.encrypt(&inner, secret);
                }
            }
        }
        _ => {}
    }
}

/// One record of the batch, as the server sees it.
struct Line {
    record: Record,
    /// The content hash the browser sent.
    hash: ContentHash,
    kind_name: String,
    /// Reasons the browser gave, for records it rejected.
    client_reasons: Vec<String>,
}

/// A batch decoded, re-run through the pipeline and turned into every kind's statement
/// parameters (secrets sealed): the CPU part of [`ingest`], done by [`prepare`] before a
/// connection is taken, so no pooled connection or transaction is held while it runs.
pub struct PreparedBatch {
    user: Uuid,
    migration_id: Uuid,
    sequence: u32,
    device_id: String,
    /// SHA-256 of the body: the ledger's idempotency check.
    request_hash: Vec<u8>,
    lines: Vec<Line>,
    kinds: Vec<KindRows>,
}

/// One kind's rows of a batch, as the kind's statement takes them.
struct KindRows {
    kind_index: usize,
    /// Index in `lines` of each incoming row, in statement order (`ord` - 1).
    members: Vec<usize>,
    ids: Vec<Uuid>,
    values: Vec<ColumnValues>,
}

/// Decodes the batch `body` of `user` and prepares everything [`apply`] writes. Touches no
/// database: a body that is not a batch for this spec is refused here.
pub fn prepare(
    plan: &IngestPlan,
    cipher: &FieldCipher,
    user: Uuid,
    body: &[u8],
) -> Result<PreparedBatch, IngestError> {
    let batch = wire::decode_batch(plan.spec(), body)?;
    let request_hash = Sha256::digest(body).to_vec();
    let lines = reprocess_batch(plan, &batch);
    let mut kinds = Vec::new();
    for (kind_index, kind) in plan.spec().kinds.iter().enumerate() {
        let members: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.record.kind == kind_index && l.record.outcome.is_accepted())
            .map(|(i, _)| i)
            .collect();
        if members.is_empty() {
            continue;
        }
        let Some(kind_plan) = plan.kind(kind_index) else {
            continue;
        };
        let mut ids: Vec<Uuid> = Vec::with_capacity(members.len());
        let mut values: Vec<ColumnValues> = kind_plan
            .columns
            .iter()
            .map(|c| ColumnValues::for_type(c.ty, members.len()))
            .collect();
        for &m in &members {
            let record = &lines[m].record;
            let Some(id) = record.id else { continue };
            let Some(row) = record.outcome.row() else {
                continue;
            };
            ids.push(id);
            for (column, out) in kind_plan.columns.iter().zip(values.iter_mut()) {
                let cell = match column.field {
                    None => record
                        .legacy_id
                        .as_ref()
                        .map_or(Cell::Null, |l| Cell::Text(l.as_escaped().to_owned())),
                    Some(f) => {
                        let mut cell = row.cells.get(f).cloned().unwrap_or(Cell::Null);
                        if let Some(field) = kind.fields.get(f).filter(|f| f.has_secrets()) {
                            let ctx = CellContext {
                                user_id: user,
                                table: &kind.table,
                                row_id: id,
                                column: &field.column,
                            };
                            seal_secrets(cipher, field, ctx, &mut cell);
                        }
                        cell
                    }
                };
                out.push(cell);
            }
        }
        kinds.push(KindRows {
            kind_index,
            members,
            ids,
            values,
        });
    }
    Ok(PreparedBatch {
        user,
        migration_id: batch.header.migration_id,
        sequence: batch.header.sequence,
        device_id: batch.header.device_id.to_string(),
        request_hash,
        lines,
        kinds,
    })
}

/// Applies one batch for `user`. See the module documentation.
pub async fn ingest(
    client: &mut deadpool_postgres::ClientWrapper,
    plan: &IngestPlan,
    cipher: &FieldCipher,
    user: Uuid,
    body: &[u8],
) -> Result<BatchResult, IngestError> {
    let prepared = prepare(plan, cipher, user, body)?;
    apply(client, plan, cipher, &prepared).await
}

/// Writes a [`prepare`]d batch in one transaction, exactly once. See the module documentation.
pub async fn apply(
    client: &mut deadpool_postgres::ClientWrapper,
    plan: &IngestPlan,
    cipher: &FieldCipher,
    prepared: &PreparedBatch,
) -> Result<BatchResult, IngestError> {
    let PreparedBatch {
        user,
        migration_id,
        sequence,
        ref device_id,
        ref request_hash,
        ref lines,
        ref kinds,
    } = *prepared;

    let tx = client
        .transaction()
        .await
        .map_err(db("starting the batch transaction"))?;
    const CLAIM: &str = "INSERT INTO ferry_ingest_ledger (user_id, migration_id, sequence, request_hash, response) \
                         VALUES ($1, $2, $3, $4, 'null'::jsonb) ON CONFLICT DO NOTHING";
    let claimed = tx
        .execute(
            &cached(&tx, CLAIM, "claiming the batch in the ledger").await?,
            &[&user, &migration_id, &i64::from(sequence), request_hash],
        )
        .await
        .map_err(db("claiming the batch in the ledger"))?;
    if claimed == 0 {
        let row = tx
            .query_one(
                "SELECT request_hash, response FROM ferry_ingest_ledger \
                 WHERE user_id = $1 AND migration_id = $2 AND sequence = $3",
                &[&user, &migration_id, &i64::from(sequence)],
            )
            .await
            .map_err(db("reading the ledger"))?;
        let stored_hash: Vec<u8> = row.try_get(0).map_err(db("reading the ledger"))?;
        if &stored_hash != request_hash {
            return Err(IngestError::IdempotencyConflict {
                migration_id,
                sequence,
            });
        }
        let stored: Value = row.try_get(1).map_err(db("reading the ledger"))?;
        tx.commit().await.map_err(db("closing a replay"))?;
        return match serde_json::from_value::<BatchResult>(stored) {
            Ok(mut result) => {
                result.replay = true;
                Ok(result)
            }
            Err(_) => Err(IngestError::IdempotencyConflict {
                migration_id,
                sequence,
            }),
        };
    }

    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; lines.len()];

    // The run row, locked: a rollback of this migration waits for this batch, or this batch
    // sees that the migration was rolled back and is refused.
    const RUN: &str = "INSERT INTO ferry_migration_runs AS r (user_id, migration_id, device_id) VALUES ($1, $2, $3) \
                       ON CONFLICT (user_id, migration_id) DO UPDATE SET device_id = r.device_id RETURNING r.status";
    let run_status: String = tx
        .query_one(
            &cached(&tx, RUN, "recording the migration run").await?,
            &[&user, &migration_id, device_id],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db("recording the migration run"))?;
    if run_status == "rolled_back" {
        return Err(IngestError::RolledBack { migration_id });
    }

    // One statement per kind.
    for rows_of_kind in kinds {
        let KindRows {
            kind_index,
            ref members,
            ref ids,
            ref values,
        } = *rows_of_kind;
        let (Some(kind), Some(kind_plan)) =
            (plan.spec().kinds.get(kind_index), plan.kind(kind_index))
        else {
            continue;
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user, &migration_id, ids];
        params.extend(values.iter().map(ColumnValues::as_sql));
        let rows = tx
            // Not a cached prepared statement: after a few runs PostgreSQL may switch a prepared
            // statement to a generic plan, and for this one that was measured up to 8 times
            // slower. Sent unnamed, it is planned for its actual arrays every time.
            .query(kind_plan.sql.as_str(), &params)
            .await
            .map_err(db("writing a kind's rows"))?;
        for row in rows {
            let read = |row: &tokio_postgres::Row| -> Result<(i64, bool, bool, bool), tokio_postgres::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
            };
            let (ord, existed, written, same) =
                read(&row).map_err(db("reading a kind's outcomes"))?;
            let outcome = match (existed, written, same, kind.conflict) {
                (false, _, _, _) => RecordOutcome::Inserted,
                (true, _, true, _) => RecordOutcome::Unchanged,
                (true, true, false, ConflictPolicy::Merge) => RecordOutcome::Merged,
                (true, true, false, _) => RecordOutcome::Updated,
                (true, false, false, ConflictPolicy::Manual) => RecordOutcome::ConflictQueued,
                (true, false, false, _) => RecordOutcome::KeptStored,
            };
            let index = usize::try_from(ord - 1).ok().and_then(|o| members.get(o));
            if let Some(&line) = index {
                outcomes[line] = Some(outcome);
            }
        }
    }

    // Everything not written is quarantined, with its raw value and reasons.
    let quarantined: Vec<usize> = (0..lines.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    if !quarantined.is_empty() {
        let mut kinds = Vec::with_capacity(quarantined.len());
        let mut keys = Vec::with_capacity(quarantined.len());
        let mut locators = Vec::with_capacity(quarantined.len());
        let mut raws = Vec::with_capacity(quarantined.len());
        let mut raw_key_ids: Vec<Option<&str>> = Vec::with_capacity(quarantined.len());
        let mut reasons = Vec::with_capacity(quarantined.len());
        for &i in &quarantined {
            let line = &lines[i];
            kinds.push(line.kind_name.clone());
            keys.push(line.record.key.as_escaped().to_owned());
            locators.push(
                serde_json::to_string(&wire::WireLocator::from(&line.record.locator))
                    .unwrap_or_default(),
            );
            // A kind with secrets: its whole raw text is sealed (a secret may be anywhere in it,
            // even in a record too broken to parse). By name: such records have no kind index.
            let raw = line.record.raw.text();
            let spec = plan.spec();
            let kind = spec
                .kind_index(&line.kind_name)
                .and_then(|k| spec.kinds.get(k));
            if kind.is_some_and(|k| k.fields.iter().any(Field::has_secrets)) {
                let at = QuarantineContext {
                    user_id: user,
                    migration_id,
                    kind: &line.kind_name,
                    key: line.record.key.as_escaped(),
                };
                raws.push(cipher.seal_quarantined(&at, raw));
                raw_key_ids.push(Some(cipher.key_id()));
            } else {
                raws.push(raw.to_owned());
                raw_key_ids.push(None);
            }
            reasons.push(Value::from(line_reasons(line)));
            outcomes[i] = Some(RecordOutcome::Quarantined);
        }
        tx.execute(
            "INSERT INTO ferry_quarantine (user_id, migration_id, kind, key, locator, raw_value, reasons, raw_key_id) \
             SELECT $1, $2, k, y, l, r, e, i FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[]) AS u(k, y, l, r, e, i)",
            &[&user, &migration_id, &kinds, &keys, &locators, &raws, &reasons, &raw_key_ids],
        )
        .await
        .map_err(db("quarantining rejected records"))?;
    }

    let mut results = Vec::with_capacity(lines.len());
    let mut counts: BTreeMap<String, BTreeMap<RecordOutcome, u64>> = BTreeMap::new();
    for (line, outcome) in lines.iter().zip(&outcomes) {
        let outcome = outcome.unwrap_or(RecordOutcome::Quarantined);
        *counts
            .entry(line.kind_name.clone())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
        results.push(RecordResult {
            id: line.record.id,
            hash: line.hash.to_hex(),
            kind: line.kind_name.clone(),
            outcome,
            reasons: if outcome == RecordOutcome::Quarantined {
                line_reasons(line)
            } else {
                Vec::new()
            },
        });
    }

    // Each received record, once per migration however often it is sent: the verification report.
    let mut r_kinds = Vec::with_capacity(results.len());
    let mut r_hashes: Vec<&[u8]> = Vec::with_capacity(results.len());
    let mut r_outcomes = Vec::with_capacity(results.len());
    for (r, line) in results.iter().zip(lines) {
        r_kinds.push(r.kind.as_str());
        r_hashes.push(&line.hash.0);
        r_outcomes.push(r.outcome.as_str());
    }
    const RECEIVED: &str = "INSERT INTO ferry_received (user_id, migration_id, kind, hash, outcome) \
                            SELECT $1, $2, k, h, o FROM unnest($3::text[], $4::bytea[], $5::text[]) AS u(k, h, o) \
                            ON CONFLICT DO NOTHING";
    tx.execute(
        &cached(&tx, RECEIVED, "recording received records").await?,
        &[&user, &migration_id, &r_kinds, &r_hashes, &r_outcomes],
    )
    .await
    .map_err(db("recording received records"))?;

    let result = BatchResult {
        migration_id,
        sequence,
        replay: false,
        outcomes: results,
        counts,
    };
    let stored = serde_json::to_value(&result).unwrap_or(Value::Null);
    const ANSWER: &str = "UPDATE ferry_ingest_ledger SET response = $4 WHERE user_id = $1 AND migration_id = $2 AND sequence = $3";
    tx.execute(
        &cached(&tx, ANSWER, "storing the batch's answer").await?,
        &[&user, &migration_id, &i64::from(sequence), &stored],
    )
    .await
    .map_err(db("storing the batch's answer"))?;
    tx.commit().await.map_err(db("committing the batch"))?;
    crate::startup::faults::after_commit();
    Ok(result)
}

/// The hot path's statements are prepared once per pooled connection, not parsed and planned
/// again for every batch.
async fn cached(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    context: &'static str,
) -> Result<tokio_postgres::Statement, IngestError> {
    tx.prepare_cached(sql).await.map_err(db(context))
}

fn line_reasons(line: &Line) -> Vec<String> {
    match &line.record.outcome {
        Outcome::Rejected(notes) => notes.iter().map(|n| n.message.clone()).collect(),
        _ if !line.client_reasons.is_empty() => line.client_reasons.clone(),
        _ => vec!["not migrated".to_owned()],
    }
}

/// Re-runs the pipeline on every record of the batch and settles duplicate ids within it.
fn reprocess_batch(plan: &IngestPlan, batch: &Batch) -> Vec<Line> {
    let spec = plan.spec();
    let mut lines: Vec<Line> = Vec::with_capacity(batch.records.len() + batch.rejected.len());
    let mut seen: HashSet<(usize, Uuid)> = HashSet::new();
    for item in &batch.records {
        let mut record = wire::reprocess(spec, &batch.header, item);
        if let Some(id) = record.id.filter(|_| record.outcome.is_accepted())
            && !seen.insert((record.kind, id))
        {
            // The browser settles duplicates before batching; two rows with one id in one
            // statement would fail it, so a second copy here is quarantined, not written.
            record.outcome = Outcome::Rejected(vec![ferry_core::pipeline::Note {
                code: ferry_core::pipeline::Code::Duplicate,
                field: None,
                message: format!("a second record with id {id} in the same batch"),
            }]);
        }
        lines.push(Line {
            kind_name: item.kind.clone(),
            hash: item.hash,
            record,
            client_reasons: Vec::new(),
        });
    }
    for item in &batch.rejected {
        // The browser's verdict to reject is accepted as is: rejecting more is always safe,
        // and the record stays in the quarantine for a person to look at.
        let record = Record {
            kind: spec.kind_index(&item.kind).unwrap_or(usize::MAX),
            key: item.key.clone(),
            locator: item.at.clone().into(),
            legacy_id: None,
            id: None,
            raw: item.raw.clone(),
            hash: item.hash,
            updated_at_ms: None,
            outcome: Outcome::Rejected(item.reasons.clone()),
        };
        lines.push(Line {
            kind_name: item.kind.clone(),
            hash: item.hash,
            record,
            client_reasons: item.reasons.iter().map(|n| n.message.clone()).collect(),
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> IngestPlan {
        let spec = Spec::parse(include_str!("../../../specs/taskboard.json"))
            .unwrap_or_else(|e| panic!("demo spec: {e}"));
        IngestPlan::new(spec)
    }

    #[test]
    fn one_statement_per_kind_with_the_policy_clause() {
        let plan = demo();
        let tasks = plan.kind(0).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(tasks.contains("INSERT INTO \"tasks\""), "{tasks}");
        assert!(
            tasks.contains("excluded.\"updated_at\" > t.\"updated_at\""),
            "newest: {tasks}"
        );
        let envs = plan.kind(1).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(
            envs.contains("t.\"config\" || excluded.\"config\""),
            "merge: {envs}"
        );
        let drafts = plan.kind(3).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(drafts.contains("ferry_conflicts"), "manual: {drafts}");
        assert!(
            drafts.contains("DO NOTHING"),
            "manual leaves the row: {drafts}"
        );
        let custom = plan.kind(4).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(
            !custom.contains("DO UPDATE"),
            "skip never updates: {custom}"
        );
    }
}
