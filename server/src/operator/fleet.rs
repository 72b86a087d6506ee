//! The fleet summary: where every user's migration stands, what arrived per kind, and the
//! trend per hour. `ferry-server status` prints it first (and as JSON with `--json`); it is the
//! head of the admin dashboard.
//!
//! Aggregates only, a handful of statements whatever the number of users: no per-user or
//! per-run loop in Rust. Unnamed, typed statements, as everywhere (they work behind PgBouncer). A user's state is the state of their latest run (by start time), a
//! running run with no batch for the threshold being stalled.
//!
//! Records are counted from `ferry_received` together with `ferry_received_rollup`, where
//! `ferry-server purge` leaves the counts of the rows it removes (per run, kind, outcome and
//! hour), so the summary is the same before and after a purge. The trend covers the last
//! [`TREND_HOURS`] whole hours (UTC), the current one included.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::db::{DbError, query_error};

/// How many hours the per-hour trend covers.
pub const TREND_HOURS: u32 = 48;

/// The whole fleet at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    /// A running migration with no batch for this long counts as stalled.
    pub stalled_after_secs: u64,
    /// Users by the state of their latest migration.
    pub users: UserStates,
    /// Per kind, every kind that has received records, quarantined or conflicted.
    pub kinds: Vec<KindTotals>,
    /// Records received and users sending them, per hour (UTC), the last [`TREND_HOURS`] hours
    /// (the current one included).
    pub hours: Vec<HourTotals>,
}

/// Users by the state of their latest migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UserStates {
    /// Users with at least one migration.
    pub started: u64,
    /// Latest migration verified by the browser: done.
    pub verified: u64,
    /// Latest migration running, a batch within the threshold.
    pub in_progress: u64,
    /// Latest migration running, no batch for longer than the threshold.
    pub stalled: u64,
    /// Latest migration rolled back (by the operator, or undone by the user).
    pub rolled_back: u64,
}

/// What one kind's records became, over every user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindTotals {
    /// The kind.
    pub kind: String,
    /// Distinct records received (each once, however often it was sent).
    pub received: u64,
    /// Received records by outcome (`inserted`, `updated`, `unchanged`, `kept_stored`, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Records in the quarantine.
    pub quarantined: u64,
    /// Conflicts waiting for their user.
    pub conflicts_open: u64,
}

/// One hour of the trend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourTotals {
    /// The hour's start, RFC 3339 UTC (`2026-12-03T06:00:00Z`).
    pub hour: String,
    /// Records received in it.
    pub records: u64,
    /// Users whose records arrived in it.
    pub users: u64,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The totals of kind `name`, made empty on first sight.
fn totals(kinds: &mut BTreeMap<String, KindTotals>, name: String) -> &mut KindTotals {
    kinds.entry(name.clone()).or_insert_with(|| KindTotals {
        kind: name,
        received: 0,
        outcomes: BTreeMap::new(),
        quarantined: 0,
        conflicts_open: 0,
    })
}

/// Reads the fleet summary.
pub async fn summary(
    client: &impl GenericClient,
    stalled_after: std::time::Duration,
) -> Result<FleetSummary, DbError> {
    let row = client
        .query_typed_one(
            "WITH latest AS (
                 SELECT DISTINCT ON (r.user_id) r.user_id, r.migration_id, r.status, r.started_at
                   FROM ferry_migration_runs r
                  ORDER BY r.user_id, r.started_at DESC, r.migration_id DESC
             ), placed AS (
                 SELECT latest.status,
                        latest.status = 'running'
                          AND coalesce(l.last_batch_at, latest.started_at) < now() - make_interval(secs => $1) AS stalled
                   FROM latest
                   LEFT JOIN LATERAL (SELECT max(created_at) AS last_batch_at FROM ferry_ingest_ledger g
                                       WHERE g.user_id = latest.user_id AND g.migration_id = latest.migration_id) l ON true
             )
             SELECT count(*),
                    count(*) FILTER (WHERE status = 'verified'),
                    count(*) FILTER (WHERE status = 'running' AND NOT stalled),
                    count(*) FILTER (WHERE status = 'running' AND stalled),
                    count(*) FILTER (WHERE status = 'rolled_back')
               FROM placed",
            &[(&stalled_after.as_secs_f64(), Type::FLOAT8)],
        )
        .await
        .map_err(query_error("count the users by migration state"))?;
    let users = UserStates {
        started: count(row.get(0)),
        verified: count(row.get(1)),
        in_progress: count(row.get(2)),
        stalled: count(row.get(3)),
        rolled_back: count(row.get(4)),
    };

    let mut kinds: BTreeMap<String, KindTotals> = BTreeMap::new();
    let received = client
        .query_typed(
            "SELECT kind, outcome, sum(n)::bigint FROM (
                 SELECT kind, outcome, count(*) AS n FROM ferry_received GROUP BY kind, outcome
                 UNION ALL
                 SELECT kind, outcome, sum(records) FROM ferry_received_rollup GROUP BY kind, outcome
             ) received GROUP BY kind, outcome",
            &[],
        )
        .await
        .map_err(query_error("count the records received per kind"))?;
    let quarantined = client
        .query_typed(
            "SELECT kind, count(*) FROM ferry_quarantine GROUP BY kind",
            &[],
        )
        .await
        .map_err(query_error("count the quarantined records per kind"))?;
    let conflicts = client
        .query_typed(
            "SELECT kind, count(*) FROM ferry_conflicts WHERE status = 'open' GROUP BY kind",
            &[],
        )
        .await
        .map_err(query_error("count the open conflicts per kind"))?;
    for row in received {
        let n = count(row.get(2));
        let t = totals(&mut kinds, row.get(0));
        t.received += n;
        *t.outcomes.entry(row.get(1)).or_default() += n;
    }
    for row in quarantined {
        totals(&mut kinds, row.get(0)).quarantined = count(row.get(1));
    }
    for row in conflicts {
        totals(&mut kinds, row.get(0)).conflicts_open = count(row.get(1));
    }

    let hours = client
        .query_typed(
            "WITH since AS (
                 SELECT date_trunc('hour', now() AT TIME ZONE 'UTC') - make_interval(hours => $1 - 1) AS hour
             ), received AS (
                 SELECT date_trunc('hour', received_at AT TIME ZONE 'UTC') AS hour, user_id, count(*) AS n
                   FROM ferry_received, since
                  WHERE received_at >= since.hour AT TIME ZONE 'UTC'
                  GROUP BY 1, 2
                 UNION ALL
                 SELECT hour_utc, user_id, sum(records)
                   FROM ferry_received_rollup, since
                  WHERE hour_utc >= since.hour
                  GROUP BY 1, 2
             )
             SELECT to_char(hour, 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"'), sum(n)::bigint, count(DISTINCT user_id)
               FROM received
              GROUP BY hour ORDER BY hour",
            &[(&i32::try_from(TREND_HOURS).unwrap_or(48), Type::INT4)],
        )
        .await
        .map_err(query_error("count the records received per hour"))?
        .into_iter()
        .map(|row| HourTotals {
            hour: row.get(0),
            records: count(row.get(1)),
            users: count(row.get(2)),
        })
        .collect();

    Ok(FleetSummary {
        stalled_after_secs: stalled_after.as_secs(),
        users,
        kinds: kinds.into_values().collect(),
        hours,
    })
}

/// The summary as the terminal shows it: users by state, one line per kind, the trend.
pub fn render(summary: &FleetSummary) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let u = &summary.users;
    let _ = writeln!(
        text,
        "users: {} started, {} verified, {} in progress, {} stalled (no batch for {} s), {} rolled back",
        u.started, u.verified, u.in_progress, u.stalled, summary.stalled_after_secs, u.rolled_back
    );
    for k in &summary.kinds {
        let outcomes: Vec<String> = k.outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        let _ = writeln!(
            text,
            "kind {}: {} received ({}), {} quarantined, {} conflicts open",
            k.kind,
            k.received,
            if outcomes.is_empty() {
                "-".to_owned()
            } else {
                outcomes.join(", ")
            },
            k.quarantined,
            k.conflicts_open
        );
    }
    if !summary.hours.is_empty() {
        let _ = writeln!(text, "per hour (UTC, last {TREND_HOURS} h):");
        for h in &summary.hours {
            let _ = writeln!(
                text,
                "  {}  {} records from {} users",
                h.hour, h.records, h.users
            );
        }
    }
    text
}
