//! What the server received in a migration: the verification report the browser compares
//! with what it shipped (`GET /v1/migrations/{id}`), and the operator's summary
//! (`ferry-server status`).
//!
//! Both are computed from `ferry_received` (one row per record and migration, however often
//! its batch was sent) and the idempotency ledger, never from the app tables: they describe
//! what arrived, whatever the conflict policies then did with it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::db::sql::rfc3339_sql;
use crate::db::{DbError, query_error};
use ferry_core::contract::RecordOutcome;

pub use ferry_core::contract::{KindReport, MigrationReport, MigrationStatus};

/// One migration run, for `ferry-server status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The user.
    pub user_id: Uuid,
    /// The device that started it.
    pub device_id: Option<String>,
    /// When its first batch arrived (RFC 3339, UTC).
    pub started_at: String,
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
    let Some(run) = client
        .query_opt(
            "SELECT status FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
            &[&user, &migration_id],
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
    let batches: i64 = client
        .query_one(
            "SELECT count(*) FROM ferry_ingest_ledger WHERE user_id = $1 AND migration_id = $2",
            &[&user, &migration_id],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("count the batches"))?;
    // The XOR of 128-bit hashes (16 bytes), as two 64-bit halves (bit_xor works on integers).
    let rows = client
        .query(
            "SELECT kind, outcome, count(*),
                    bit_xor(('x' || encode(substr(hash, 1, 8), 'hex'))::bit(64)::bigint),
                    bit_xor(('x' || encode(substr(hash, 9, 8), 'hex'))::bit(64)::bigint)
             FROM ferry_received WHERE user_id = $1 AND migration_id = $2
             GROUP BY kind, outcome ORDER BY kind, outcome",
            &[&user, &migration_id],
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
        batches: count(batches),
        kinds: kinds
            .into_iter()
            .map(|(kind, (mut report, hi, lo))| {
                report.checksum = format!("{hi:016x}{lo:016x}");
                (kind, report)
            })
            .collect(),
    }))
}

/// Every migration run (of `user`, and only `migration`, when given), oldest first.
pub async fn run_summaries(
    client: &Client,
    user: Option<Uuid>,
    migration: Option<Uuid>,
) -> Result<Vec<RunSummary>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT r.user_id, r.migration_id, r.device_id, {},
                        (SELECT count(*) FROM ferry_conflicts c
                          WHERE c.user_id = r.user_id AND c.migration_id = r.migration_id AND c.status = 'open')
                 FROM ferry_migration_runs r
                 WHERE ($1::uuid IS NULL OR r.user_id = $1) AND ($2::uuid IS NULL OR r.migration_id = $2)
                 ORDER BY r.started_at, r.user_id, r.migration_id",
                rfc3339_sql("r.started_at")
            ),
            &[&user, &migration],
        )
        .await
        .map_err(query_error("list the migration runs"))?;
    let mut summaries = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok((
                row.try_get::<_, Uuid>(0)?,
                row.try_get::<_, Uuid>(1)?,
                row.try_get::<_, Option<String>>(2)?,
                row.try_get::<_, String>(3)?,
                row.try_get::<_, i64>(4)?,
            ))
        };
        let (user_id, migration_id, device_id, started_at, open) =
            read(&row).map_err(query_error("read a migration run"))?;
        if let Some(report) = migration_report(client, user_id, migration_id).await? {
            summaries.push(RunSummary {
                user_id,
                device_id,
                started_at,
                open_conflicts: count(open),
                report,
            });
        }
    }
    Ok(summaries)
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
