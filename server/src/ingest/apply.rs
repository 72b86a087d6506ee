//! Applying a prepared batch: one transaction, exactly once, in the steps the [ingest
//! module's documentation](crate::ingest) lists, each a function here:
//! 1. [`claim_idempotency_key`] (a replay is answered by [`replay_answer`]), then
//!    [`lock_migration_run`];
//! 2. the server's verdicts were reached by `prepare`; [`quarantine_rejected`] stores every
//!    record that is not written;
//! 3. [`write_kinds`]: one statement per kind, each row's outcome read by [`row_outcome`];
//! 4. [`record_received`], then [`save_answer`] (the answer built by [`batch_result`]).

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use ferry_core::spec::{ConflictPolicy, Field};
use ferry_core::wire;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::ingest::field_crypto::{FieldCipher, QuarantineContext};
use crate::ingest::prepare::{ColumnValues, KindRows, Line, PreparedBatch, line_reasons};
use crate::ingest::statement::IngestPlan;
use crate::ingest::{IngestError, db};
use ferry_core::contract::{BatchResult, RecordOutcome, RecordResult};

/// Writes a [`prepare()`](crate::ingest::prepare())d batch in one transaction, exactly once.
/// See the module documentation.
pub async fn apply(
    client: &mut deadpool_postgres::ClientWrapper,
    plan: &IngestPlan,
    cipher: &FieldCipher,
    prepared: &PreparedBatch,
) -> Result<BatchResult, IngestError> {
    let tx = client
        .transaction()
        .await
        .map_err(db("starting the batch transaction"))?;
    if let Claim::Replay(stored) = claim_idempotency_key(&tx, prepared).await? {
        tx.commit().await.map_err(db("closing a replay"))?;
        return replay_answer(prepared, stored);
    }
    lock_migration_run(&tx, prepared).await?;
    let mut outcomes = write_kinds(&tx, plan, prepared).await?;
    quarantine_rejected(&tx, plan, cipher, prepared, &mut outcomes).await?;
    let result = batch_result(prepared, &outcomes);
    record_received(&tx, prepared, &result).await?;
    save_answer(&tx, prepared, &result).await?;
    tx.commit().await.map_err(db("committing the batch"))?;
    crate::startup::faults::after_commit();
    Ok(result)
}

/// What claiming the idempotency key found.
enum Claim {
    /// The key was free and is ours now: apply the batch.
    New,
    /// The same batch (same body hash) was applied before: its stored answer.
    Replay(Value),
}

/// Step 1: claims `(user, migration id, sequence)` in the ledger with the body's hash. A key
/// already there with the same hash is a replay; with another hash, the batch is refused.
/// A concurrent copy of the batch waits here on the first one's row lock.
async fn claim_idempotency_key(
    tx: &Transaction<'_>,
    prepared: &PreparedBatch,
) -> Result<Claim, IngestError> {
    const CLAIM: &str = "INSERT INTO ferry_ingest_ledger (user_id, migration_id, sequence, request_hash, response) \
                         VALUES ($1, $2, $3, $4, 'null'::jsonb) ON CONFLICT DO NOTHING";
    let PreparedBatch {
        user,
        migration_id,
        sequence,
        ref request_hash,
        ..
    } = *prepared;
    let claimed = tx
        .execute(
            &cached(tx, CLAIM, "claiming the batch in the ledger").await?,
            &[&user, &migration_id, &i64::from(sequence), request_hash],
        )
        .await
        .map_err(db("claiming the batch in the ledger"))?;
    if claimed != 0 {
        return Ok(Claim::New);
    }
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
    Ok(Claim::Replay(stored))
}

/// The stored answer of a batch applied before, marked `replay`.
fn replay_answer(prepared: &PreparedBatch, stored: Value) -> Result<BatchResult, IngestError> {
    match serde_json::from_value::<BatchResult>(stored) {
        Ok(mut result) => {
            result.replay = true;
            Ok(result)
        }
        Err(_) => Err(IngestError::IdempotencyConflict {
            migration_id: prepared.migration_id,
            sequence: prepared.sequence,
        }),
    }
}

/// Step 1, continued: the migration's run row, upserted and locked. A rollback of this
/// migration waits for this batch, or this batch sees that the migration was rolled back and
/// is refused.
async fn lock_migration_run(
    tx: &Transaction<'_>,
    prepared: &PreparedBatch,
) -> Result<(), IngestError> {
    const RUN: &str = "INSERT INTO ferry_migration_runs AS r (user_id, migration_id, device_id) VALUES ($1, $2, $3) \
                       ON CONFLICT (user_id, migration_id) DO UPDATE SET device_id = r.device_id RETURNING r.status";
    let run_status: String = tx
        .query_one(
            &cached(tx, RUN, "recording the migration run").await?,
            &[&prepared.user, &prepared.migration_id, &prepared.device_id],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db("recording the migration run"))?;
    if run_status == "rolled_back" {
        return Err(IngestError::RolledBack {
            migration_id: prepared.migration_id,
        });
    }
    Ok(())
}

/// Step 3: one statement per kind present. Returns the outcome of every line of the batch,
/// `None` for the lines no statement wrote (those are quarantined).
async fn write_kinds(
    tx: &Transaction<'_>,
    plan: &IngestPlan,
    prepared: &PreparedBatch,
) -> Result<Vec<Option<RecordOutcome>>, IngestError> {
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; prepared.lines.len()];
    for rows_of_kind in &prepared.kinds {
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
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&prepared.user, &prepared.migration_id, ids];
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
            let outcome = row_outcome(existed, written, same, kind.conflict);
            let index = usize::try_from(ord - 1).ok().and_then(|o| members.get(o));
            if let Some(&line) = index {
                outcomes[line] = Some(outcome);
            }
        }
    }
    Ok(outcomes)
}

/// What happened to one incoming row, from the kind statement's answer line: whether the row
/// existed, whether the statement wrote it, and whether the stored row was already equal.
fn row_outcome(existed: bool, written: bool, same: bool, policy: ConflictPolicy) -> RecordOutcome {
    match (existed, written, same, policy) {
        (false, _, _, _) => RecordOutcome::Inserted,
        (true, _, true, _) => RecordOutcome::Unchanged,
        (true, true, false, ConflictPolicy::Merge) => RecordOutcome::Merged,
        (true, true, false, _) => RecordOutcome::Updated,
        (true, false, false, ConflictPolicy::Manual) => RecordOutcome::ConflictQueued,
        (true, false, false, _) => RecordOutcome::KeptStored,
    }
}

/// Step 2's verdicts stored: every line no statement wrote goes to `ferry_quarantine` with its
/// raw value and reasons, and its outcome becomes `quarantined`.
async fn quarantine_rejected(
    tx: &Transaction<'_>,
    plan: &IngestPlan,
    cipher: &FieldCipher,
    prepared: &PreparedBatch,
    outcomes: &mut [Option<RecordOutcome>],
) -> Result<(), IngestError> {
    let quarantined: Vec<usize> = (0..prepared.lines.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    if quarantined.is_empty() {
        return Ok(());
    }
    let mut kinds = Vec::with_capacity(quarantined.len());
    let mut keys = Vec::with_capacity(quarantined.len());
    let mut locators = Vec::with_capacity(quarantined.len());
    let mut raws = Vec::with_capacity(quarantined.len());
    let mut raw_key_ids: Vec<Option<&str>> = Vec::with_capacity(quarantined.len());
    let mut reasons = Vec::with_capacity(quarantined.len());
    for &i in &quarantined {
        let line = &prepared.lines[i];
        kinds.push(line.kind_name.clone());
        keys.push(line.record.key.as_escaped().to_owned());
        locators.push(
            serde_json::to_string(&wire::WireLocator::from(&line.record.locator))
                .unwrap_or_default(),
        );
        let (raw, raw_key_id) = quarantined_raw(plan, cipher, prepared, line);
        raws.push(raw);
        raw_key_ids.push(raw_key_id);
        reasons.push(Value::from(line_reasons(line)));
        outcomes[i] = Some(RecordOutcome::Quarantined);
    }
    tx.execute(
        "INSERT INTO ferry_quarantine (user_id, migration_id, kind, key, locator, raw_value, reasons, raw_key_id) \
         SELECT $1, $2, k, y, l, r, e, i FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[]) AS u(k, y, l, r, e, i)",
        &[&prepared.user, &prepared.migration_id, &kinds, &keys, &locators, &raws, &reasons, &raw_key_ids],
    )
    .await
    .map_err(db("quarantining rejected records"))?;
    Ok(())
}

/// The raw text a quarantined line is stored with, and the id of the key it is sealed under.
/// A kind with secrets: its whole raw text is sealed (a secret may be anywhere in it, even in
/// a record too broken to parse). By name: such records have no kind index.
fn quarantined_raw<'a>(
    plan: &IngestPlan,
    cipher: &'a FieldCipher,
    prepared: &PreparedBatch,
    line: &Line,
) -> (String, Option<&'a str>) {
    let raw = line.record.raw.text();
    let spec = plan.spec();
    let kind = spec
        .kind_index(&line.kind_name)
        .and_then(|k| spec.kinds.get(k));
    if kind.is_some_and(|k| k.fields.iter().any(Field::has_secrets)) {
        let at = QuarantineContext {
            user_id: prepared.user,
            migration_id: prepared.migration_id,
            kind: &line.kind_name,
            key: line.record.key.as_escaped(),
        };
        (cipher.seal_quarantined(&at, raw), Some(cipher.key_id()))
    } else {
        (raw.to_owned(), None)
    }
}

/// The answer: every line's outcome (reasons for the quarantined ones) and the counts per
/// kind and outcome.
fn batch_result(prepared: &PreparedBatch, outcomes: &[Option<RecordOutcome>]) -> BatchResult {
    let mut results = Vec::with_capacity(prepared.lines.len());
    let mut counts: BTreeMap<String, BTreeMap<RecordOutcome, u64>> = BTreeMap::new();
    for (line, outcome) in prepared.lines.iter().zip(outcomes) {
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
    BatchResult {
        migration_id: prepared.migration_id,
        sequence: prepared.sequence,
        replay: false,
        outcomes: results,
        counts,
    }
}

/// Step 4: each received record in `ferry_received`, once per migration however often it is
/// sent: what the verification report counts.
async fn record_received(
    tx: &Transaction<'_>,
    prepared: &PreparedBatch,
    result: &BatchResult,
) -> Result<(), IngestError> {
    let mut r_kinds = Vec::with_capacity(result.outcomes.len());
    let mut r_hashes: Vec<&[u8]> = Vec::with_capacity(result.outcomes.len());
    let mut r_outcomes = Vec::with_capacity(result.outcomes.len());
    for (r, line) in result.outcomes.iter().zip(&prepared.lines) {
        r_kinds.push(r.kind.as_str());
        r_hashes.push(&line.hash.0);
        r_outcomes.push(r.outcome.as_str());
    }
    const RECEIVED: &str = "INSERT INTO ferry_received (user_id, migration_id, kind, hash, outcome) \
                            SELECT $1, $2, k, h, o FROM unnest($3::text[], $4::bytea[], $5::text[]) AS u(k, h, o) \
                            ON CONFLICT DO NOTHING";
    tx.execute(
        &cached(tx, RECEIVED, "recording received records").await?,
        &[
            &prepared.user,
            &prepared.migration_id,
            &r_kinds,
            &r_hashes,
            &r_outcomes,
        ],
    )
    .await
    .map_err(db("recording received records"))?;
    Ok(())
}

/// Step 4, last: the answer stored in the ledger, for replays.
async fn save_answer(
    tx: &Transaction<'_>,
    prepared: &PreparedBatch,
    result: &BatchResult,
) -> Result<(), IngestError> {
    let stored = serde_json::to_value(result).unwrap_or(Value::Null);
    const ANSWER: &str = "UPDATE ferry_ingest_ledger SET response = $4 WHERE user_id = $1 AND migration_id = $2 AND sequence = $3";
    tx.execute(
        &cached(tx, ANSWER, "storing the batch's answer").await?,
        &[
            &prepared.user,
            &prepared.migration_id,
            &i64::from(prepared.sequence),
            &stored,
        ],
    )
    .await
    .map_err(db("storing the batch's answer"))?;
    Ok(())
}

/// The hot path's statements are prepared once per pooled connection, not parsed and planned
/// again for every batch.
async fn cached(
    tx: &Transaction<'_>,
    sql: &str,
    context: &'static str,
) -> Result<tokio_postgres::Statement, IngestError> {
    tx.prepare_cached(sql).await.map_err(db(context))
}
