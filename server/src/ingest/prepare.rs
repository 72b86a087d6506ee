//! Preparing a batch, before any connection is taken (CPU only): the body decoded, every
//! record re-run through the shared pipeline, duplicates within the batch settled, and every
//! kind's column arrays built, with sensitive fields sealed.

use std::collections::HashSet;

use ferry_core::pipeline::{Cell, ContentHash, Outcome, Record};
use ferry_core::spec::{ColumnType, Field, FieldType};
use ferry_core::wire::{self, Batch};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::ingest::IngestError;
use crate::ingest::field_crypto::{CellContext, FieldCipher};
use crate::ingest::statement::IngestPlan;

/// Column values of one kind for one batch, one vector per column.
pub(super) enum ColumnValues {
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

    /// The values at `positions`, in that order: a part of the kind's rows, written on its own
    /// when the whole statement was refused.
    pub(super) fn select(&self, positions: &[usize]) -> Self {
        fn pick<T: Clone>(v: &[Option<T>], positions: &[usize]) -> Vec<Option<T>> {
            positions
                .iter()
                .map(|&p| v.get(p).cloned().flatten())
                .collect()
        }
        match self {
            Self::Text(v) => Self::Text(pick(v, positions)),
            Self::Int(v) => Self::Int(pick(v, positions)),
            Self::Float(v) => Self::Float(pick(v, positions)),
            Self::Bool(v) => Self::Bool(pick(v, positions)),
            Self::Json(v) => Self::Json(pick(v, positions)),
        }
    }

    /// The column's array as a statement parameter, with its type (statements are sent
    /// unnamed, with their parameter types: see [`crate::db`]).
    pub(super) fn as_typed_sql(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Self::Text(v) => (v, Type::TEXT_ARRAY),
            Self::Int(v) => (v, Type::INT8_ARRAY),
            Self::Float(v) => (v, Type::FLOAT8_ARRAY),
            Self::Bool(v) => (v, Type::BOOL_ARRAY),
            Self::Json(v) => (v, Type::JSONB_ARRAY),
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
pub(super) struct Line {
    pub(super) record: Record,
    /// The content hash the browser sent.
    pub(super) hash: ContentHash,
    pub(super) kind_name: String,
    /// Reasons the browser gave, for records it rejected.
    pub(super) client_reasons: Vec<String>,
}

/// A batch decoded, re-run through the pipeline and turned into every kind's statement
/// parameters (secrets sealed): the CPU part of [`ingest`](crate::ingest::ingest()), done by [`prepare()`] before a
/// connection is taken, so no pooled connection or transaction is held while it runs.
pub struct PreparedBatch {
    pub(super) user: Uuid,
    pub(super) migration_id: Uuid,
    pub(super) sequence: u32,
    pub(super) device_id: String,
    /// SHA-256 of the body: the ledger's idempotency check.
    pub(super) request_hash: Vec<u8>,
    pub(super) lines: Vec<Line>,
    pub(super) kinds: Vec<KindRows>,
}

/// One kind's rows of a batch, as the kind's statement takes them.
pub(super) struct KindRows {
    pub(super) kind_index: usize,
    /// Index in `lines` of each incoming row, in statement order (`ord` - 1).
    pub(super) members: Vec<usize>,
    pub(super) ids: Vec<Uuid>,
    pub(super) values: Vec<ColumnValues>,
}

/// Decodes the batch `body` of `user` and prepares everything [`apply()`](crate::ingest::apply()) writes. Touches no
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

pub(super) fn line_reasons(line: &Line) -> Vec<String> {
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
    // Keyed by the kind's identity: kinds sharing a table (`shares_table`) share their row ids.
    let mut seen: HashSet<(&str, Uuid)> = HashSet::new();
    for (item, mut record) in batch
        .records
        .iter()
        .zip(wire::reprocess_records(spec, batch))
    {
        if let Some(id) = record.id.filter(|_| record.outcome.is_accepted())
            && let Some(kind) = spec.kinds.get(record.kind)
            && !seen.insert((kind.identity(), id))
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
            hash: record.hash,
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
