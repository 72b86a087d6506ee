//! What the server received in a migration: the verification report the browser compares
//! with what it shipped (`GET /v1/migrations/{id}`), and the operator's summary
//! (`ferry-server status`).
//!
//! Both are computed from `ferry_received` (a view with one row per record and migration,
//! however often it was sent, over `ferry_received_batches`) and the idempotency ledger, never
//! from the app tables: they describe what arrived, whatever the conflict policies then did
//! with it. For a purged run
//! ([`crate::operator::purge`]) the same numbers come from `ferry_received_rollup` and the
//! run's `purged_batches`.
//!
//! A run's status is the truth about it: `running` until the browser's verification
//! ([`verify_migration`], `POST /v1/migrations/{id}/verify`) marks it `verified` (once, with
//! the time and the counts verified), or a rollback marks it `rolled_back`. A running run
//! whose last batch is older than the operator's threshold is shown as *abandoned*: computed
//! when the runs are read ([`RunState`]), not stored, so the threshold can change at any time
//! and a browser that comes back simply resumes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::db::sql::rfc3339_sql;
use crate::db::{DbError, query_error};
use ferry_core::contract::RecordOutcome;

pub use ferry_core::contract::{KindReport, MigrationReport, MigrationStatus, VerifyRequest};

/// Where a run stands, as the operator sees it: its stored status, with a running run that
/// has received no batch for the threshold shown as abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Batches are arriving (the last one within the threshold).
    Running,
    /// Running, but no batch for longer than the threshold: the browser went away. It
    /// resumes (and becomes running again) if it comes back.
    Abandoned,
    /// Verified by the browser: done.
    Verified,
    /// Rolled back.
    RolledBack,
}

impl RunState {
    /// Every state, in the order `ferry-server status` counts them.
    pub const ALL: [Self; 4] = [
        Self::Running,
        Self::Abandoned,
        Self::Verified,
        Self::RolledBack,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Abandoned => "abandoned",
            Self::Verified => "verified",
            Self::RolledBack => "rolled_back",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a verification recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedRun {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Records verified (every kind).
    pub records: u64,
    /// Batches applied when it was verified.
    pub batches: u64,
}

/// One migration run, for `ferry-server status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The user.
    pub user_id: Uuid,
    /// The device that started it.
    pub device_id: Option<String>,
    /// When its first batch arrived (RFC 3339, UTC).
    pub started_at: String,
    /// When its last batch was applied (RFC 3339, UTC), if any.
    pub last_batch_at: Option<String>,
    /// When it stopped running: verified or rolled back (RFC 3339, UTC).
    pub finished_at: Option<String>,
    /// Its state (with abandonment computed).
    pub state: RunState,
    /// What the browser's verification recorded, if it verified.
    pub verified: Option<VerifiedRun>,
    /// When its bookkeeping was purged (RFC 3339, UTC), if it was: it can no longer be rolled
    /// back (`ferry-server purge`).
    pub purged_at: Option<String>,
    /// Conflicts of this run still waiting for the user.
    pub open_conflicts: u64,
    /// The report.
    pub report: MigrationReport,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The report of `user`'s migration `migration_id`; `None` when the user has no such run.
pub async fn migration_report(
    client: &Client,
    user: Uuid,
    migration_id: Uuid,
) -> Result<Option<MigrationReport>, DbError> {
    report_of(client, user, migration_id).await
}

/// [`migration_report`] over a client or a transaction.
async fn report_of(
    client: &impl GenericClient,
    user: Uuid,
    migration_id: Uuid,
) -> Result<Option<MigrationReport>, DbError> {
    let Some(run) = client
        .query_typed_opt(
            "SELECT status, purged_batches FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
            &[(&user, Type::UUID), (&migration_id, Type::UUID)],
        )
        .await
        .map_err(query_error("read the migration run"))?
    else {
        return Ok(None);
    };
    let status: String = run.try_get(0).map_err(query_error("read the run status"))?;
    let status = MigrationStatus::from_name(&status).ok_or_else(|| DbError::Query {
        context: "read the run status".to_owned(),
        reason: format!("migration {migration_id} has the unknown status {status:?}"),
        code: None,
    })?;
    // A purged run's ledger is gone; the run kept how many batches it held.
    let purged_batches: Option<i64> = run
        .try_get(1)
        .map_err(query_error("read the run's purged batches"))?;
    let batches: i64 = client
        .query_typed_one(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND migration_id = $2",
            &[(&user, Type::UUID), (&migration_id, Type::UUID)],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("count the batches"))?;
    // The XOR of 128-bit hashes (16 bytes), as two 64-bit halves (bit_xor works on integers).
    // A purged run's records are counted in `ferry_received_rollup` (the purge wrote the same
    // counts and XORs there), read together with what is still in `ferry_received`.
    let rows = client
        .query_typed(
            "SELECT kind, outcome, sum(n)::bigint, bit_xor(hi), bit_xor(lo) FROM (
                 SELECT kind, outcome, count(*) AS n,
                        bit_xor(('x' || encode(substr(hash, 1, 8), 'hex'))::bit(64)::bigint) AS hi,
                        bit_xor(('x' || encode(substr(hash, 9, 8), 'hex'))::bit(64)::bigint) AS lo
                   FROM ferry_received WHERE user_id = $1 AND migration_id = $2
                  GROUP BY kind, outcome
                 UNION ALL
                 SELECT kind, outcome, records, hash_xor_hi, hash_xor_lo
                   FROM ferry_received_rollup WHERE user_id = $1 AND migration_id = $2
             ) received
             GROUP BY kind, outcome ORDER BY kind, outcome",
            &[(&user, Type::UUID), (&migration_id, Type::UUID)],
        )
        .await
        .map_err(query_error("summarise the received records"))?;
    let mut kinds: BTreeMap<String, (KindReport, u64, u64)> = BTreeMap::new();
    for row in rows {
        let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, i64>(2)?,
                row.try_get::<_, i64>(3)?,
                row.try_get::<_, i64>(4)?,
            ))
        };
        let (kind, outcome, n, hi, lo) = read(&row).map_err(query_error("read a kind's counts"))?;
        let outcome = RecordOutcome::from_name(&outcome).ok_or_else(|| DbError::Query {
            context: "read a kind's counts".to_owned(),
            reason: format!("a record of kind {kind:?} has the unknown outcome {outcome:?}"),
            code: None,
        })?;
        let entry = kinds.entry(kind).or_insert_with(|| {
            (
                KindReport {
                    received: 0,
                    checksum: String::new(),
                    outcomes: BTreeMap::new(),
                },
                0,
                0,
            )
        });
        entry.0.received += count(n);
        *entry.0.outcomes.entry(outcome).or_default() += count(n);
        // Reinterpreting the bits is the point: the halves are bit patterns, not numbers.
        entry.1 ^= hi.cast_unsigned();
        entry.2 ^= lo.cast_unsigned();
    }
    Ok(Some(MigrationReport {
        migration_id,
        status,
        batches: count(batches) + count(purged_batches.unwrap_or(0)),
        kinds: kinds
            .into_iter()
            .map(|(kind, (mut report, hi, lo))| {
                report.checksum = format!("{hi:016x}{lo:016x}");
                (kind, report)
            })
            .collect(),
    }))
}

/// What `POST /v1/migrations/{id}/verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The server's tallies are the browser's: the run is verified (now, or already before:
    /// then nothing changed). The report says `verified`.
    Verified(MigrationReport),
    /// The migration was rolled back: it is not done.
    RolledBack,
    /// The tallies differ, one sentence per kind; the run stays running.
    Mismatch(Vec<String>),
}

/// Checks what the browser `sent` against what `user`'s migration `migration_id` received
/// and, when they match, marks the run verified with the time and the counts, exactly once:
/// the run row is locked, so a batch still being applied is counted or waits, and a second
/// verification finds the run verified and changes nothing. `None` when the user has no
/// such run.
pub async fn verify_migration(
    client: &mut Client,
    user: Uuid,
    migration_id: Uuid,
    sent: &VerifyRequest,
    statement_timeout: Option<std::time::Duration>,
) -> Result<Option<Verification>, DbError> {
    let tx = crate::db::begin(client, statement_timeout)
        .await
        .map_err(query_error("begin a verification"))?;
    let locked = tx
        .query_typed_opt(
            "SELECT status FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2 FOR UPDATE",
            &[(&user, Type::UUID), (&migration_id, Type::UUID)],
        )
        .await
        .map_err(query_error("lock the migration run"))?;
    if locked.is_none() {
        return Ok(None);
    }
    let Some(mut report) = report_of(&tx, user, migration_id).await? else {
        return Ok(None);
    };
    let verdict = match report.status {
        MigrationStatus::RolledBack => Verification::RolledBack,
        _ => {
            let problems = report.differences(&sent.kinds);
            if !problems.is_empty() {
                Verification::Mismatch(problems)
            } else {
                if report.status == MigrationStatus::Running {
                    mark_verified(&tx, user, &report).await?;
                    report.status = MigrationStatus::Verified;
                }
                Verification::Verified(report)
            }
        }
    };
    tx.commit()
        .await
        .map_err(query_error("commit a verification"))?;
    Ok(Some(verdict))
}

/// Marks a running run verified, with what was verified.
async fn mark_verified(
    tx: &tokio_postgres::Transaction<'_>,
    user: Uuid,
    report: &MigrationReport,
) -> Result<(), DbError> {
    let records: u64 = report.kinds.values().map(|k| k.received).sum();
    let records = i64::try_from(records).unwrap_or(i64::MAX);
    let batches = i64::try_from(report.batches).unwrap_or(i64::MAX);
    tx.execute_typed(
        "UPDATE ferry_migration_runs
            SET status = 'verified', finished_at = now(), verified_at = now(),
                verified_records = $3, verified_batches = $4
          WHERE user_id = $1 AND migration_id = $2 AND status = 'running'",
        &[
            (&user, Type::UUID),
            (&report.migration_id, Type::UUID),
            (&records, Type::INT8),
            (&batches, Type::INT8),
        ],
    )
    .await
    .map_err(query_error("mark the migration run verified"))?;
    Ok(())
}

/// Every migration run (of `user`, and only `migration`, when given), oldest first. A running
/// run whose last batch (or start) is more than `abandoned_after` ago is
/// [`RunState::Abandoned`].
pub async fn run_summaries(
    client: &Client,
    user: Option<Uuid>,
    migration: Option<Uuid>,
    abandoned_after: std::time::Duration,
) -> Result<Vec<RunSummary>, DbError> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT r.user_id, r.migration_id, r.device_id, {started},
                        (SELECT count(*) FROM ferry_conflicts c
                          WHERE c.user_id = r.user_id AND c.migration_id = r.migration_id AND c.status = 'open'),
                        {last_batch}, {finished}, r.status,
                        {abandoned},
                        {verified}, r.verified_records, r.verified_batches, {purged}
                 FROM ferry_migration_runs r
                 WHERE ($1::uuid IS NULL OR r.user_id = $1) AND ($2::uuid IS NULL OR r.migration_id = $2)
                 ORDER BY r.started_at, r.user_id, r.migration_id",
                started = rfc3339_sql("r.started_at"),
                last_batch = rfc3339_sql("r.last_batch_at"),
                abandoned = crate::operator::fleet::stalled_sql("r", "$3"),
                finished = rfc3339_sql("r.finished_at"),
                verified = rfc3339_sql("r.verified_at"),
                purged = rfc3339_sql("r.purged_at"),
            ),
            &[
                (&user, Type::UUID),
                (&migration, Type::UUID),
                (&abandoned_after.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await
        .map_err(query_error("list the migration runs"))?;
    let mut summaries = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(run) = read_run(&row)? else { continue };
        if let Some(report) = migration_report(client, run.user_id, run.migration_id).await? {
            summaries.push(RunSummary {
                user_id: run.user_id,
                device_id: run.device_id,
                started_at: run.started_at,
                last_batch_at: run.last_batch_at,
                finished_at: run.finished_at,
                state: run.state,
                verified: run.verified,
                purged_at: run.purged_at,
                open_conflicts: count(run.open),
                report,
            });
        }
    }
    Ok(summaries)
}

/// One row of [`run_summaries`]' query, read.
struct RunRow {
    user_id: Uuid,
    migration_id: Uuid,
    device_id: Option<String>,
    started_at: String,
    open: i64,
    last_batch_at: Option<String>,
    finished_at: Option<String>,
    state: RunState,
    verified: Option<VerifiedRun>,
    purged_at: Option<String>,
}

fn read_run(row: &tokio_postgres::Row) -> Result<Option<RunRow>, DbError> {
    let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
        Ok((
            (
                row.try_get::<_, Uuid>(0)?,
                row.try_get::<_, Uuid>(1)?,
                row.try_get::<_, Option<String>>(2)?,
                row.try_get::<_, String>(3)?,
                row.try_get::<_, i64>(4)?,
            ),
            (
                row.try_get::<_, Option<String>>(5)?,
                row.try_get::<_, Option<String>>(6)?,
                row.try_get::<_, String>(7)?,
                row.try_get::<_, bool>(8)?,
            ),
            (
                row.try_get::<_, Option<String>>(9)?,
                row.try_get::<_, Option<i64>>(10)?,
                row.try_get::<_, Option<i64>>(11)?,
                row.try_get::<_, Option<String>>(12)?,
            ),
        ))
    };
    let (
        (user_id, migration_id, device_id, started_at, open),
        (last_batch_at, finished_at, status, abandoned),
        (verified_at, verified_records, verified_batches, purged_at),
    ) = read(row).map_err(query_error("read a migration run"))?;
    let state = match (MigrationStatus::from_name(&status), abandoned) {
        (Some(MigrationStatus::Running), true) => RunState::Abandoned,
        (Some(MigrationStatus::Running), false) => RunState::Running,
        (Some(MigrationStatus::Verified), _) => RunState::Verified,
        (Some(MigrationStatus::RolledBack), _) => RunState::RolledBack,
        (None, _) => {
            return Err(DbError::Query {
                context: "read a migration run".to_owned(),
                reason: format!("migration {migration_id} has the unknown status {status:?}"),
                code: None,
            });
        }
    };
    let verified = match (verified_at, verified_records, verified_batches) {
        (Some(at), Some(records), Some(batches)) => Some(VerifiedRun {
            at,
            records: count(records),
            batches: count(batches),
        }),
        _ => None,
    };
    Ok(Some(RunRow {
        user_id,
        migration_id,
        device_id,
        started_at,
        open,
        last_batch_at,
        finished_at,
        state,
        verified,
        purged_at,
    }))
}

/// How many runs are in each state (every state listed, zeros included).
pub fn count_by_state<'a>(
    runs: impl IntoIterator<Item = &'a RunSummary>,
) -> BTreeMap<RunState, u64> {
    let mut counts: BTreeMap<RunState, u64> = RunState::ALL.into_iter().map(|s| (s, 0)).collect();
    for run in runs {
        *counts.entry(run.state).or_default() += 1;
    }
    counts
}

/// The XOR of content hashes given as hex, as the browser computes it (for tests and tools).
pub fn xor_checksum<'a>(hashes: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut acc = [0u8; 16];
    for hex in hashes {
        let hash = ferry_core::pipeline::ContentHash::from_hex(hex)?;
        for (a, b) in acc.iter_mut().zip(hash.0) {
            *a ^= b;
        }
    }
    Some(acc.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_of_nothing_is_zero_and_a_hash_twice_cancels() {
        let a = "00112233445566778899aabbccddeeff";
        assert_eq!(
            xor_checksum([]).as_deref(),
            Some("00000000000000000000000000000000")
        );
        assert_eq!(xor_checksum([a]).as_deref(), Some(a));
        assert_eq!(
            xor_checksum([a, a]).as_deref(),
            Some("00000000000000000000000000000000")
        );
        assert_eq!(xor_checksum(["nothex"]), None);
    }
}
