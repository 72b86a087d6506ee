//! Applying a prepared batch: one transaction, exactly once, in the steps the [ingest
//! module's documentation](crate::ingest) lists, each a function here:
//! 1. [`claim_idempotency_key`] (a replay is answered by [`replay_answer`]), then
//!    [`lock_migration_run`];
//! 2. the server's verdicts were reached by `prepare`; [`quarantine_rejected`] stores every
//!    record that is not written;
//! 3. [`write_kinds`]: one statement per kind, each row's outcome read by [`row_outcome`];
//! 4. [`record_received`], then [`save_answer`] (the answer built by [`batch_result`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ferry_core::spec::{ConflictPolicy, Field};
use ferry_core::wire;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Transaction;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::db::sql::rfc3339_sql;
use crate::ingest::field_crypto::{FieldCipher, QuarantineContext};
use crate::ingest::prepare::{ColumnValues, KindRows, Line, PreparedBatch, line_reasons};
use crate::ingest::statement::IngestPlan;
use crate::ingest::{IngestError, db};
use ferry_core::contract::{BatchResult, RecordOutcome, RecordResult};

/// Writes a [`prepare()`](crate::ingest::prepare())d batch in one transaction, exactly once.
/// See the module documentation.
///
/// The normal case writes each kind with one statement. When the database refuses one of
/// them (a column, CHECK, trigger or foreign key stricter than the spec: SQLSTATE classes 22,
/// 23 and P0), the whole transaction is rolled back and run once more with each kind's rows
/// written inside savepoints, split in halves down to the rows the database refuses; those are
/// quarantined with the database's reason and the rest lands, still exactly once.
///
/// The time each kind's rows took to write, in every attempt, is added to `times` (for the
/// metrics).
pub async fn apply(
    client: &mut deadpool_postgres::ClientWrapper,
    plan: &IngestPlan,
    cipher: &FieldCipher,
    prepared: &PreparedBatch,
    statement_timeout: Option<Duration>,
    times: &mut WriteTimes,
) -> Result<BatchResult, IngestError> {
    let first = Attempt {
        writing: Writing::SetBased,
        statement_timeout,
    };
    match apply_once(client, plan, cipher, prepared, first, times).await {
        Err(IngestError::Db { source, .. }) if refusal_reason(&source).is_some() => {
            let again = Attempt {
                writing: Writing::Bisecting,
                ..first
            };
            apply_once(client, plan, cipher, prepared, again, times).await
        }
        other => other,
    }
}

/// How long each kind's rows of a batch took to write: (index of the kind in the spec, time),
/// one entry per kind and attempt.
#[derive(Debug, Clone, Default)]
pub struct WriteTimes(pub Vec<(usize, Duration)>);

/// How [`write_kinds`] writes a kind's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// One statement per kind; a refused row fails the transaction.
    SetBased,
    /// Each statement inside a savepoint; a refused statement is split in halves down to the
    /// rows the database refuses.
    Bisecting,
}

/// How one attempt at a batch runs.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    writing: Writing,
    statement_timeout: Option<Duration>,
}

/// Lines the database refused to store: index in `lines` → the database's reason.
type Refusals = BTreeMap<usize, String>;

async fn apply_once(
    client: &mut deadpool_postgres::ClientWrapper,
    plan: &IngestPlan,
    cipher: &FieldCipher,
    prepared: &PreparedBatch,
    attempt: Attempt,
    times: &mut WriteTimes,
) -> Result<BatchResult, IngestError> {
    let Attempt {
        writing,
        statement_timeout,
    } = attempt;
    let tx = crate::db::begin(client, statement_timeout)
        .await
        .map_err(db("starting the batch transaction"))?;
    crate::db::lock_user(&tx, prepared.user)
        .await
        .map_err(db("waiting for the user's other writes"))?;
    if let Claim::Replay(stored) = claim_idempotency_key(&tx, prepared).await? {
        refuse_if_rolled_back(&tx, prepared).await?;
        tx.commit().await.map_err(db("closing a replay"))?;
        return replay_answer(prepared, stored);
    }
    lock_migration_run(&tx, plan.spec(), prepared).await?;
    let mut refusals = Refusals::new();
    let mut outcomes = write_kinds(&tx, plan, prepared, writing, &mut refusals, times).await?;
    quarantine_rejected(&tx, plan, cipher, prepared, &refusals, &mut outcomes).await?;
    let result = batch_result(prepared, |i, line| {
        let outcome = outcomes[i].unwrap_or(RecordOutcome::Quarantined);
        let reasons = if outcome == RecordOutcome::Quarantined {
            reasons_of(&refusals, i, line)
        } else {
            Vec::new()
        };
        (outcome, reasons)
    });
    record_received(&tx, prepared, &result).await?;
    save_answer(&tx, prepared, &result).await?;
    tx.commit().await.map_err(db("committing the batch"))?;
    crate::startup::faults::after_commit();
    Ok(result)
}

/// The database's reason for refusing a row, when `error` is such a refusal: a data exception
/// (class 22: a value too long, out of range), an integrity constraint (class 23: NOT NULL,
/// foreign key, unique, CHECK) or an exception raised by a trigger (class P0). Names the
/// constraint, table and column when PostgreSQL reports them; the message is shortened and
/// the row's values (PostgreSQL's `DETAIL`) are never quoted.
fn refusal_reason(error: &tokio_postgres::Error) -> Option<String> {
    let db = error.as_db_error()?;
    let code = db.code().code();
    if !["22", "23", "P0"]
        .iter()
        .any(|class| code.starts_with(class))
    {
        return None;
    }
    let mut reason = format!(
        "the database refused this record ({code}): {}",
        shorten(db.message())
    );
    let named = [
        ("table", db.table()),
        ("column", db.column()),
        ("constraint", db.constraint()),
    ];
    for (what, name) in named {
        if let Some(name) = name {
            reason.push_str(&format!("; {what} {}", shorten(name)));
        }
    }
    Some(reason)
}

/// `text` cut to 160 characters, with `…` when something was cut.
fn shorten(text: &str) -> String {
    const KEEP: usize = 160;
    match text.char_indices().nth(KEEP) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
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
        .execute_typed(
            CLAIM,
            &[
                (&user, Type::UUID),
                (&migration_id, Type::UUID),
                (&i64::from(sequence), Type::INT8),
                (request_hash, Type::BYTEA),
            ],
        )
        .await
        .map_err(db("claiming the batch in the ledger"))?;
    if claimed != 0 {
        return Ok(Claim::New);
    }
    let row = tx
        .query_typed_one(
            "SELECT request_hash, response FROM ferry_ingest_ledger \
             WHERE user_id = $1 AND migration_id = $2 AND sequence = $3",
            &[
                (&user, Type::UUID),
                (&migration_id, Type::UUID),
                (&i64::from(sequence), Type::INT8),
            ],
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

/// A replay of a rolled-back migration's batch is refused: its stored answer says `inserted`
/// for rows the rollback removed, and a browser that believed it would verify a migration
/// that is not there.
async fn refuse_if_rolled_back(
    tx: &Transaction<'_>,
    prepared: &PreparedBatch,
) -> Result<(), IngestError> {
    let status: Option<String> = tx
        .query_typed_opt(
            "SELECT status FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
            &[
                (&prepared.user, Type::UUID),
                (&prepared.migration_id, Type::UUID),
            ],
        )
        .await
        .and_then(|row| row.map(|r| r.try_get(0)).transpose())
        .map_err(db("reading the migration run"))?;
    if status.as_deref() == Some("rolled_back") {
        return Err(IngestError::RolledBack {
            migration_id: prepared.migration_id,
        });
    }
    Ok(())
}

/// What the ledger keeps of a batch's answer, for replays: the lines whose outcome is not
/// `inserted`, by position, with their reasons. The rest of the answer (ids, hashes, kinds,
/// counts) is rebuilt from the replayed batch itself, which is the same body (its hash was
/// checked against the claim): an answer of 2,000 inserted records is a few bytes, not 300 KB
/// of JSON written in the hot path.
#[derive(Debug, Serialize, Deserialize)]
struct StoredAnswer {
    /// The non-`inserted` lines.
    others: Vec<StoredLine>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredLine {
    line: usize,
    outcome: RecordOutcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
}

impl StoredAnswer {
    fn of(result: &BatchResult) -> Self {
        let others = result
            .outcomes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.outcome != RecordOutcome::Inserted)
            .map(|(line, r)| StoredLine {
                line,
                outcome: r.outcome,
                reasons: r.reasons.clone(),
            })
            .collect();
        Self { others }
    }
}

/// The stored answer of a batch applied before, marked `replay`. Answers stored whole (before
/// [`StoredAnswer`]) are read as they are.
fn replay_answer(prepared: &PreparedBatch, stored: Value) -> Result<BatchResult, IngestError> {
    let refused = || IngestError::IdempotencyConflict {
        migration_id: prepared.migration_id,
        sequence: prepared.sequence,
    };
    let mut result = match StoredAnswer::deserialize(&stored) {
        Ok(answer) => {
            let mut others: BTreeMap<usize, StoredLine> =
                answer.others.into_iter().map(|l| (l.line, l)).collect();
            if others.keys().any(|&line| line >= prepared.lines.len()) {
                return Err(refused());
            }
            batch_result(prepared, |i, _| match others.remove(&i) {
                Some(l) => (l.outcome, l.reasons),
                None => (RecordOutcome::Inserted, Vec::new()),
            })
        }
        Err(_) => BatchResult::deserialize(&stored).map_err(|_| refused())?,
    };
    result.replay = true;
    Ok(result)
}

/// Step 1, continued: the migration's run row, upserted and locked, with the spec version its
/// batches are made with and the time of its latest batch (`last_batch_at`). A rollback of
/// this migration waits for this batch, or this batch sees that the migration was rolled back
/// and is refused. A migration of a retired spec version may finish, but none starts under
/// one.
async fn lock_migration_run(
    tx: &Transaction<'_>,
    spec: &ferry_core::spec::Spec,
    prepared: &PreparedBatch,
) -> Result<(), IngestError> {
    // No row is inserted for a retired version; the conflict arm then does not run either, so
    // nothing comes back and the run is updated on its own.
    static RUN: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO ferry_migration_runs AS r (user_id, migration_id, device_id, spec_app, spec_version, last_batch_at) \
             SELECT $1, $2, $3, $4, $5, now() WHERE NOT EXISTS \
               (SELECT 1 FROM ferry_retired_specs WHERE app = $4 AND version = $5) \
             ON CONFLICT (user_id, migration_id) DO UPDATE SET last_batch_at = now() \
             RETURNING r.status, {}",
            rfc3339_sql("r.purged_at")
        )
    });
    static IN_FLIGHT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE ferry_migration_runs r SET last_batch_at = now() \
             WHERE user_id = $1 AND migration_id = $2 \
             RETURNING r.status, {}",
            rfc3339_sql("r.purged_at")
        )
    });
    let row = tx
        .query_typed_opt(
            &RUN,
            &[
                (&prepared.user, Type::UUID),
                (&prepared.migration_id, Type::UUID),
                (&prepared.device_id, Type::TEXT),
                (&spec.app, Type::TEXT),
                (&spec.version, Type::TEXT),
            ],
        )
        .await
        .map_err(db("recording the migration run"))?;
    let row = match row {
        Some(row) => row,
        None => tx
            .query_typed_opt(
                &IN_FLIGHT,
                &[
                    (&prepared.user, Type::UUID),
                    (&prepared.migration_id, Type::UUID),
                ],
            )
            .await
            .map_err(db("reading the migration run"))?
            .ok_or_else(|| IngestError::RetiredSpec {
                app: spec.app.clone(),
                version: spec.version.clone(),
            })?,
    };
    let run_status: String = row.try_get(0).map_err(db("recording the migration run"))?;
    if run_status == "rolled_back" {
        return Err(IngestError::RolledBack {
            migration_id: prepared.migration_id,
        });
    }
    // A purged run's ledger is gone, so a late copy of one of its batches claimed its key as
    // new: refused here, the transaction (and the claim) is rolled back.
    let purged_at: Option<String> = row.try_get(1).map_err(db("recording the migration run"))?;
    if let Some(purged_at) = purged_at {
        return Err(IngestError::Purged {
            migration_id: prepared.migration_id,
            purged_at,
        });
    }
    Ok(())
}

/// Step 3: one statement per kind present. Returns the outcome of every line of the batch,
/// `None` for the lines no statement wrote (those are quarantined). When `writing` is
/// [`Writing::Bisecting`], the rows the database refuses are put in `refusals`.
async fn write_kinds(
    tx: &Transaction<'_>,
    plan: &IngestPlan,
    prepared: &PreparedBatch,
    writing: Writing,
    refusals: &mut Refusals,
    times: &mut WriteTimes,
) -> Result<Vec<Option<RecordOutcome>>, IngestError> {
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; prepared.lines.len()];
    for rows_of_kind in &prepared.kinds {
        let (Some(kind), Some(kind_plan)) = (
            plan.spec().kinds.get(rows_of_kind.kind_index),
            plan.kind(rows_of_kind.kind_index),
        ) else {
            continue;
        };
        let started = Instant::now();
        let written = match writing {
            Writing::SetBased => {
                let all: Vec<usize> = (0..rows_of_kind.members.len()).collect();
                write_part(tx, &kind_plan.sql, prepared, rows_of_kind, &all, &all).await
            }
            Writing::Bisecting => {
                write_bisecting(tx, &kind_plan.sql, prepared, rows_of_kind, refusals).await
            }
        };
        // Timed whether or not the database took it: a refused statement took time too.
        times.0.push((rows_of_kind.kind_index, started.elapsed()));
        for (line, existed, was_written, same) in written? {
            outcomes[line] = Some(row_outcome(existed, was_written, same, kind.conflict));
        }
    }
    Ok(outcomes)
}

/// One answer line of a kind's statement: the batch line, and whether the row existed, was
/// written, and was already equal.
type WrittenRow = (usize, bool, bool, bool);

/// Runs a kind's statement for the rows at `positions` (indexes into the kind's rows) and
/// returns its answer lines. `all` is `0..n` when every row is written, to skip copying.
async fn write_part(
    tx: &Transaction<'_>,
    sql: &str,
    prepared: &PreparedBatch,
    rows_of_kind: &KindRows,
    positions: &[usize],
    all: &[usize],
) -> Result<Vec<WrittenRow>, IngestError> {
    let KindRows {
        ref members,
        ref ids,
        ref values,
        ..
    } = *rows_of_kind;
    let whole = positions.len() == members.len() && positions == all;
    let part_ids: Vec<Uuid>;
    let part_values: Vec<ColumnValues>;
    let (ids, values): (&Vec<Uuid>, &[ColumnValues]) = if whole {
        (ids, values)
    } else {
        part_ids = positions
            .iter()
            .filter_map(|&p| ids.get(p).copied())
            .collect();
        part_values = values.iter().map(|v| v.select(positions)).collect();
        (&part_ids, &part_values)
    };
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&prepared.user, Type::UUID),
        (&prepared.migration_id, Type::UUID),
        (ids, Type::UUID_ARRAY),
    ];
    params.extend(values.iter().map(ColumnValues::as_typed_sql));
    let rows = tx
        // Unnamed: planned for its actual arrays every time (after a few runs PostgreSQL may
        // switch a named prepared statement to a generic plan, measured up to 8 times slower
        // for this one), and nothing is left on the server connection.
        .query_typed(sql, &params)
        .await
        .map_err(db("writing a kind's rows"))?;
    let mut written = Vec::with_capacity(rows.len());
    for row in rows {
        let read =
            |row: &tokio_postgres::Row| -> Result<(i64, bool, bool, bool), tokio_postgres::Error> {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ))
            };
        let (ord, existed, was_written, same) =
            read(&row).map_err(db("reading a kind's outcomes"))?;
        let line = usize::try_from(ord - 1)
            .ok()
            .and_then(|o| positions.get(o))
            .and_then(|&p| members.get(p));
        if let Some(&line) = line {
            written.push((line, existed, was_written, same));
        }
    }
    Ok(written)
}

/// Writes a kind's rows inside savepoints: a part the database refuses is rolled back to its
/// savepoint and split in halves, down to single rows, which go to `refusals` with the
/// database's reason. A batch with one refused row among `n` runs about `2·log2(n)` statements.
async fn write_bisecting(
    tx: &Transaction<'_>,
    sql: &str,
    prepared: &PreparedBatch,
    rows_of_kind: &KindRows,
    refusals: &mut Refusals,
) -> Result<Vec<WrittenRow>, IngestError> {
    let all: Vec<usize> = (0..rows_of_kind.members.len()).collect();
    let mut pending = vec![all.clone()];
    let mut written = Vec::new();
    while let Some(positions) = pending.pop() {
        if positions.is_empty() {
            continue;
        }
        tx.batch_execute("SAVEPOINT ferry_part")
            .await
            .map_err(db("marking a savepoint"))?;
        match write_part(tx, sql, prepared, rows_of_kind, &positions, &all).await {
            Ok(part) => {
                tx.batch_execute("RELEASE SAVEPOINT ferry_part")
                    .await
                    .map_err(db("releasing a savepoint"))?;
                written.extend(part);
            }
            Err(IngestError::Db { source, context }) => {
                let Some(reason) = refusal_reason(&source) else {
                    return Err(IngestError::Db { source, context });
                };
                tx.batch_execute("ROLLBACK TO SAVEPOINT ferry_part; RELEASE SAVEPOINT ferry_part")
                    .await
                    .map_err(db("rolling back to a savepoint"))?;
                if let [single] = positions[..] {
                    if let Some(&line) = rows_of_kind.members.get(single) {
                        refusals.insert(line, reason);
                    }
                } else {
                    let (front, back) = positions.split_at(positions.len() / 2);
                    pending.push(back.to_vec());
                    pending.push(front.to_vec());
                }
            }
            Err(other) => return Err(other),
        }
    }
    Ok(written)
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
    refusals: &Refusals,
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
        reasons.push(Value::from(reasons_of(refusals, i, line)));
        outcomes[i] = Some(RecordOutcome::Quarantined);
    }
    // With the rows, the fleet summary's counts of them (schema migration 0012): per kind, and
    // per kind and the field each reason names (the same grouping as that migration's backfill).
    tx.execute_typed(
        "WITH q AS ( \
           INSERT INTO ferry_quarantine (user_id, migration_id, kind, key, locator, raw_value, reasons, raw_key_id) \
           SELECT $1, $2, k, y, l, r, e, i FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[]) AS u(k, y, l, r, e, i) \
           RETURNING id, kind, reasons \
         ), per_kind AS ( \
           INSERT INTO ferry_quarantine_counts AS c (user_id, kind, records) \
           SELECT $1, kind, count(*) FROM q GROUP BY kind \
           ON CONFLICT (user_id, kind) DO UPDATE SET records = c.records + excluded.records \
         ) \
         INSERT INTO ferry_rejection_counts AS c (user_id, kind, field, reasons, records, example) \
         SELECT $1, q.kind, substring(r.reason from 'field `([^`]*)`'), count(*), count(DISTINCT q.id), coalesce(min(r.reason), '') \
           FROM q, LATERAL jsonb_array_elements_text(q.reasons) AS r(reason) \
          GROUP BY 2, 3 \
         ON CONFLICT (user_id, kind, field) DO UPDATE \
            SET reasons = c.reasons + excluded.reasons, records = c.records + excluded.records, \
                example = least(c.example, excluded.example)",
        &[
            (&prepared.user, Type::UUID),
            (&prepared.migration_id, Type::UUID),
            (&kinds, Type::TEXT_ARRAY),
            (&keys, Type::TEXT_ARRAY),
            (&locators, Type::TEXT_ARRAY),
            (&raws, Type::TEXT_ARRAY),
            (&reasons, Type::JSONB_ARRAY),
            (&raw_key_ids, Type::TEXT_ARRAY),
        ],
    )
    .await
    .map_err(db("quarantining rejected records"))?;
    Ok(())
}

/// Why line `i` is quarantined: the database's reason when it refused the row, else the
/// pipeline's (or the browser's) reasons.
fn reasons_of(refusals: &Refusals, i: usize, line: &Line) -> Vec<String> {
    match refusals.get(&i) {
        Some(reason) => vec![reason.clone()],
        None => line_reasons(line),
    }
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

/// The answer: every line's outcome and reasons, as `outcome_of(index, line)` says, and the
/// counts per kind and outcome.
fn batch_result(
    prepared: &PreparedBatch,
    mut outcome_of: impl FnMut(usize, &Line) -> (RecordOutcome, Vec<String>),
) -> BatchResult {
    let mut results = Vec::with_capacity(prepared.lines.len());
    let mut counts: BTreeMap<String, BTreeMap<RecordOutcome, u64>> = BTreeMap::new();
    for (i, line) in prepared.lines.iter().enumerate() {
        let (outcome, reasons) = outcome_of(i, line);
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
            reasons,
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

/// Step 4: the hashes of the batch's records that are new to the migration, as one row
/// (`ferry_received_batches`, schema migration 0013; read per record through the
/// `ferry_received` view): what the verification report counts. A record sent again, in an
/// earlier batch of the migration or twice in this one, keeps the outcome it first had and is
/// counted once. Under the user's lock, so no other batch of the migration writes meanwhile.
async fn record_received(
    tx: &Transaction<'_>,
    prepared: &PreparedBatch,
    result: &BatchResult,
) -> Result<(), IngestError> {
    let mut r_kinds = Vec::with_capacity(result.outcomes.len());
    let mut r_hashes: Vec<&[u8]> = Vec::with_capacity(result.outcomes.len());
    let mut r_outcomes = Vec::with_capacity(result.outcomes.len());
    // A record twice in this batch (only a client listing a key twice sends that): its first line.
    let mut seen = HashSet::with_capacity(result.outcomes.len());
    for (r, line) in result.outcomes.iter().zip(&prepared.lines) {
        if seen.insert((r.kind.as_str(), line.hash)) {
            r_kinds.push(r.kind.as_str());
            r_hashes.push(&line.hash.0);
            r_outcomes.push(r.outcome.as_str());
        }
    }
    // With the row, the fleet summary's counts of the new records (schema migration 0012), in
    // the hour `received_at` takes (the transaction's time, as `now()`). `stored` runs though
    // nothing reads it, as every data-modifying CTE does.
    const RECEIVED: &str = "WITH fresh AS ( \
                              SELECT k, h, o FROM unnest($3::text[], $4::bytea[], $5::text[]) AS n(k, h, o) \
                               WHERE NOT EXISTS ( \
                                SELECT 1 FROM ferry_received r \
                                 WHERE r.user_id = $1 AND r.migration_id = $2 AND r.kind = n.k AND r.hash = n.h) \
                            ), stored AS ( \
                              INSERT INTO ferry_received_batches (user_id, migration_id, sequence, kinds, hashes, outcomes) \
                              SELECT $1, $2, $6, array_agg(k), array_agg(h), array_agg(o) FROM fresh HAVING count(*) > 0 \
                            ) \
                            INSERT INTO ferry_received_counts AS c (user_id, migration_id, kind, outcome, hour_utc, records) \
                            SELECT $1, $2, k, o, date_trunc('hour', now() AT TIME ZONE 'UTC'), count(*) \
                              FROM fresh GROUP BY 3, 4, 5 \
                            ON CONFLICT (user_id, migration_id, kind, outcome, hour_utc) \
                            DO UPDATE SET records = c.records + excluded.records";
    tx.execute_typed(
        RECEIVED,
        &[
            (&prepared.user, Type::UUID),
            (&prepared.migration_id, Type::UUID),
            (&r_kinds, Type::TEXT_ARRAY),
            (&r_hashes, Type::BYTEA_ARRAY),
            (&r_outcomes, Type::TEXT_ARRAY),
            (&i64::from(prepared.sequence), Type::INT8),
        ],
    )
    .await
    .map_err(db("recording received records"))?;
    Ok(())
}

/// Step 4, last: the answer stored in the ledger, for replays ([`StoredAnswer`]).
async fn save_answer(
    tx: &Transaction<'_>,
    prepared: &PreparedBatch,
    result: &BatchResult,
) -> Result<(), IngestError> {
    let stored = serde_json::to_value(StoredAnswer::of(result)).unwrap_or(Value::Null);
    const ANSWER: &str = "UPDATE ferry_ingest_ledger SET response = $4 WHERE user_id = $1 AND migration_id = $2 AND sequence = $3";
    tx.execute_typed(
        ANSWER,
        &[
            (&prepared.user, Type::UUID),
            (&prepared.migration_id, Type::UUID),
            (&i64::from(prepared.sequence), Type::INT8),
            (&stored, Type::JSONB),
        ],
    )
    .await
    .map_err(db("storing the batch's answer"))?;
    Ok(())
}
