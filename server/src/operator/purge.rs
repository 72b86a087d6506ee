//! `ferry-server purge`: bookkeeping does not grow forever (issue 16 §3).
//!
//! A migration run needs its ledger answers (`ferry_ingest_ledger`), received hashes
//! (`ferry_received_batches`, read through the view `ferry_received`), before-images
//! (`ferry_before_images`) and created-row records (`ferry_created_rows`) only to answer
//! replays, to verify and to roll back. Once a run is **verified** and its `verified_at` is
//! older than the retention, the purge removes them; runs that are running, stalled or rolled
//! back are never touched, nor is anything of the app's tables, the quarantine, the conflicts
//! or the backups.
//!
//! What stays true afterwards (nothing lost, nothing doubled):
//! - the run is marked (`purged_at`, and `purged_batches`: how many ledger answers it had);
//! - the received hashes are rolled up first, per run, kind, outcome and hour, into
//!   `ferry_received_rollup` (count and XOR of the hashes), so the run's report and the fleet
//!   summary give the same numbers before and after;
//! - a rollback of the run is refused (409 `migration_purged`, [`crate::operator::rollback`]),
//!   and so is any batch of it, a stale tab's late replay included (its ledger answer is gone,
//!   so the batch would otherwise be written again): [`crate::ingest::IngestError::Purged`].
//!
//! One transaction per user, under the user's advisory lock (the one every batch, rollback
//! and conflict resolution takes), so a purge never races them and a huge fleet never holds
//! one giant transaction. Each transaction re-reads the user's purgeable runs under the lock,
//! so a run rolled back or re-verified meanwhile is seen as it is now. Statements are
//! unnamed and typed, as everywhere (they work behind PgBouncer).

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::{DbError, query_error};

/// The retention when neither `--older-than` nor `FERRY_PURGE_AFTER` says otherwise.
pub const DEFAULT_RETENTION: &str = "30d";

/// Users whose purgeable runs are listed per round trip (each user is still its own
/// transaction).
const USERS_PER_PAGE: i64 = 500;

/// Parses a retention: a whole number and a unit, `s`, `m`, `h`, `d` or `w` (`30d`, `12h`).
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let digits = trimmed.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &trimmed[digits.len()..];
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "the retention {:?} needs a unit: s, m, h, d or w (e.g. 30d, 12h)",
                shorten(text)
            ));
        }
    };
    let amount: u64 = digits.parse().map_err(|_| {
        format!(
            "the retention {:?} is not a whole number and a unit (e.g. 30d, 12h)",
            shorten(text)
        )
    })?;
    let seconds = amount
        .checked_mul(seconds_per_unit)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("the retention {:?} is over 100 years", shorten(text)))?;
    Ok(Duration::from_secs(seconds))
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(32) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The retention as the operator writes it (`30d`, `12h`, `90m`, `45s`).
pub fn render_retention(retention: Duration) -> String {
    let s = retention.as_secs();
    match s {
        0 => "0s".to_owned(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// What a purge removes (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeCounts {
    /// Users with at least one purged run.
    pub users: u64,
    /// Verified runs purged: none of them can be rolled back any more.
    pub migrations: u64,
    /// Ledger answers removed (`ferry_ingest_ledger`).
    pub ledger_answers: u64,
    /// Received hashes removed (the records of `ferry_received`), their counts kept in the rollup.
    pub received_hashes: u64,
    /// Before-images removed (`ferry_before_images`).
    pub before_images: u64,
    /// Created rows whose record was removed (`ferry_created_rows`, counted by row: the
    /// table holds one array of ids per batch and table).
    pub created_rows: u64,
}

/// What a purge would do, counted without deleting anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgePlan {
    /// What would be removed.
    pub purgeable: PurgeCounts,
    /// Verified runs not purged yet, verified within the retention: kept.
    pub verified_recently: u64,
}

/// `status = 'verified'`, not purged, verified before the retention (`$1`, seconds).
const PURGEABLE: &str = "status = 'verified' AND purged_at IS NULL \
                         AND verified_at < now() - make_interval(secs => $1)";

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Counts what [`purge`] would remove with `retention`; deletes nothing.
pub async fn plan(client: &Client, retention: Duration) -> Result<PurgePlan, DbError> {
    let row = client
        .query_typed_one(
            &format!(
                "WITH c AS (SELECT user_id, migration_id FROM ferry_migration_runs WHERE {PURGEABLE})
                 SELECT (SELECT count(DISTINCT user_id) FROM c),
                        (SELECT count(*) FROM c),
                        (SELECT count(*) FROM ferry_ingest_ledger x JOIN c USING (user_id, migration_id)),
                        (SELECT count(*) FROM ferry_received x JOIN c USING (user_id, migration_id)),
                        (SELECT count(*) FROM ferry_before_images x JOIN c USING (user_id, migration_id)),
                        (SELECT coalesce(sum(cardinality(x.row_ids)), 0)::int8
                           FROM ferry_created_rows x JOIN c USING (user_id, migration_id)),
                        (SELECT count(*) FROM ferry_migration_runs
                          WHERE status = 'verified' AND purged_at IS NULL
                            AND verified_at >= now() - make_interval(secs => $1))"
            ),
            &[(&retention.as_secs_f64(), Type::FLOAT8)],
        )
        .await
        .map_err(query_error("count what a purge would remove"))?;
    let read = |i: usize| -> Result<u64, DbError> {
        row.try_get::<_, i64>(i)
            .map(count)
            .map_err(query_error("read what a purge would remove"))
    };
    Ok(PurgePlan {
        purgeable: PurgeCounts {
            users: read(0)?,
            migrations: read(1)?,
            ledger_answers: read(2)?,
            received_hashes: read(3)?,
            before_images: read(4)?,
            created_rows: read(5)?,
        },
        verified_recently: read(6)?,
    })
}

/// Purges every run verified longer than `retention` ago, one transaction per user (see the
/// module documentation). `progress` is called after each user with the totals so far.
pub async fn purge(
    client: &mut Client,
    retention: Duration,
    statement_timeout: Option<Duration>,
    mut progress: impl FnMut(&PurgeCounts),
) -> Result<PurgeCounts, DbError> {
    let mut totals = PurgeCounts::default();
    let mut after: Option<Uuid> = None;
    loop {
        let users: Vec<Uuid> = client
            .query_typed(
                &format!(
                    "SELECT DISTINCT user_id FROM ferry_migration_runs
                      WHERE {PURGEABLE} AND ($2::uuid IS NULL OR user_id > $2)
                      ORDER BY user_id LIMIT $3"
                ),
                &[
                    (&retention.as_secs_f64(), Type::FLOAT8),
                    (&after, Type::UUID),
                    (&USERS_PER_PAGE, Type::INT8),
                ],
            )
            .await
            .map_err(query_error("list the users with runs to purge"))?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(query_error("read the users with runs to purge"))?;
        let Some(last) = users.last().copied() else {
            return Ok(totals);
        };
        for user in users {
            let done = purge_user(client, user, retention, statement_timeout).await?;
            if done.migrations > 0 {
                totals.users += 1;
                totals.migrations += done.migrations;
                totals.ledger_answers += done.ledger_answers;
                totals.received_hashes += done.received_hashes;
                totals.before_images += done.before_images;
                totals.created_rows += done.created_rows;
                progress(&totals);
            }
        }
        after = Some(last);
    }
}

/// One user's purgeable runs purged in one transaction, under the user's lock.
async fn purge_user(
    client: &mut Client,
    user: Uuid,
    retention: Duration,
    statement_timeout: Option<Duration>,
) -> Result<PurgeCounts, DbError> {
    let tx = crate::db::begin(client, statement_timeout)
        .await
        .map_err(query_error("start a user's purge"))?;
    crate::db::lock_user(&tx, user)
        .await
        .map_err(query_error("wait for the user's other writes"))?;
    let runs: Vec<Uuid> = tx
        .query_typed(
            &format!(
                "SELECT migration_id FROM ferry_migration_runs
                  WHERE user_id = $2 AND {PURGEABLE} ORDER BY migration_id FOR UPDATE"
            ),
            &[
                (&retention.as_secs_f64(), Type::FLOAT8),
                (&user, Type::UUID),
            ],
        )
        .await
        .map_err(query_error("lock the user's runs to purge"))?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(query_error("read the user's runs to purge"))?;
    let mut done = PurgeCounts::default();
    if runs.is_empty() {
        tx.commit()
            .await
            .map_err(query_error("close a user's purge"))?;
        return Ok(done);
    }
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
        [(&user, Type::UUID), (&runs, Type::UUID_ARRAY)];
    // The counts first, then the rows: the rollup holds exactly what is deleted below, in the
    // same transaction.
    tx.execute_typed(
        "INSERT INTO ferry_received_rollup AS r
             (user_id, migration_id, kind, outcome, hour_utc, records, hash_xor_hi, hash_xor_lo)
         SELECT user_id, migration_id, kind, outcome, date_trunc('hour', received_at AT TIME ZONE 'UTC'),
                count(*),
                bit_xor(('x' || encode(substr(hash, 1, 8), 'hex'))::bit(64)::bigint),
                bit_xor(('x' || encode(substr(hash, 9, 8), 'hex'))::bit(64)::bigint)
           FROM ferry_received
          WHERE user_id = $1 AND migration_id = ANY($2)
          GROUP BY 1, 2, 3, 4, 5
         ON CONFLICT (user_id, migration_id, kind, outcome, hour_utc) DO UPDATE
            SET records = r.records + excluded.records,
                hash_xor_hi = r.hash_xor_hi # excluded.hash_xor_hi,
                hash_xor_lo = r.hash_xor_lo # excluded.hash_xor_lo",
        &params,
    )
    .await
    .map_err(query_error("roll up the received records"))?;
    done.migrations = tx
        .execute_typed(
            "UPDATE ferry_migration_runs r
                SET purged_at = now(),
                    purged_batches = (SELECT count(*) FROM ferry_ingest_ledger g
                                       WHERE g.user_id = r.user_id AND g.migration_id = r.migration_id)
              WHERE user_id = $1 AND migration_id = ANY($2)",
            &params,
        )
        .await
        .map_err(query_error("mark the runs purged"))?;
    done.received_hashes = tx
        .query_typed_one(
            "WITH d AS (DELETE FROM ferry_received_batches WHERE user_id = $1 AND migration_id = ANY($2)
                        RETURNING cardinality(hashes) AS n)
             SELECT coalesce(sum(n), 0)::int8 FROM d",
            &params,
        )
        .await
        .and_then(|row| row.try_get::<_, i64>(0))
        .map(count)
        .map_err(query_error("delete the received hashes"))?;
    done.ledger_answers = tx
        .execute_typed(
            "DELETE FROM ferry_ingest_ledger WHERE user_id = $1 AND migration_id = ANY($2)",
            &params,
        )
        .await
        .map_err(query_error("delete the ledger answers"))?;
    done.before_images = tx
        .query_typed_one(
            "WITH r AS (DELETE FROM ferry_before_image_rows WHERE user_id = $1 AND migration_id = ANY($2) RETURNING 1),
                  b AS (DELETE FROM ferry_before_image_batches WHERE user_id = $1 AND migration_id = ANY($2)
                        RETURNING cardinality(row_ids) AS n)
             SELECT ((SELECT count(*) FROM r) + (SELECT coalesce(sum(n), 0) FROM b))::int8",
            &params,
        )
        .await
        .and_then(|row| row.try_get::<_, i64>(0))
        .map(count)
        .map_err(query_error("delete the before-images"))?;
    let created: i64 = tx
        .query_typed_one(
            "WITH gone AS (DELETE FROM ferry_created_rows WHERE user_id = $1 AND migration_id = ANY($2)
                           RETURNING cardinality(row_ids) AS n)
             SELECT coalesce(sum(n), 0)::int8 FROM gone",
            &params,
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("delete the created-row records"))?;
    done.created_rows = count(created);
    tx.commit()
        .await
        .map_err(query_error("commit a user's purge"))?;
    done.users = 1;
    Ok(done)
}

/// The operator's text for `counts` (what was or would be removed) with `retention`.
pub fn render(plan: &PurgePlan, retention: Duration) -> String {
    let p = &plan.purgeable;
    let r = render_retention(retention);
    format!(
        "migrations verified more than {r} ago: {} user(s), {} migration(s): {} ledger answer(s), {} received hash(es), {} before-image(s), {} created-row record(s)\n\
         {} verified migration(s) verified within {r} are kept; running, stalled and rolled-back migrations are never touched\n\
         once purged, these {} migration(s) can no longer be rolled back (their batches are refused too; their reports and the fleet summary keep their counts); to keep rollback possible longer, use a longer retention (--older-than or FERRY_PURGE_AFTER)",
        p.users,
        p.migrations,
        p.ledger_answers,
        p.received_hashes,
        p.before_images,
        p.created_rows,
        plan.verified_recently,
        p.migrations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_parse_with_their_unit() {
        assert_eq!(parse_retention("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_retention("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_retention("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_retention("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_retention("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(render_retention(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(render_retention(Duration::from_secs(12 * 3_600)), "12h");
    }

    #[test]
    fn retentions_without_a_unit_or_number_are_refused_with_the_value() {
        for bad in ["30", "d", "-3d", "3.5d", "30y", "99999999999999w", ""] {
            let e = parse_retention(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
