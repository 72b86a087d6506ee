//! Applying a prepared batch: one transaction, exactly once (the steps are in the
//! [ingest module's documentation](crate::ingest)).

use std::collections::BTreeMap;

use ferry_core::spec::{ConflictPolicy, Field};
use ferry_core::wire;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::ingest::answer::{BatchResult, RecordOutcome, RecordResult};
use crate::ingest::field_crypto::{FieldCipher, QuarantineContext};
use crate::ingest::prepare::{ColumnValues, KindRows, PreparedBatch, line_reasons};
use crate::ingest::statement::IngestPlan;
use crate::ingest::{IngestError, db};

/// Writes a [`prepare()`](crate::ingest::prepare())d batch in one transaction, exactly once. See the module documentation.
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
