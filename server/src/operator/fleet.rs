//! The fleet summary: where every user's migration stands, what arrived per kind, and the
//! trend per hour. `ferry-server status` prints it first (and as JSON with `--json`); it is the
//! head of the admin dashboard.
//!
//! Aggregates only, a handful of statements whatever the number of users: no per-user or
//! per-run loop in Rust. Unnamed, typed statements, as everywhere (they work behind PgBouncer). A user's state is the state of their latest run (by start time), a
//! running run with no batch for the threshold being stalled.
//!
//! Records, quarantined records and quarantine reasons are counted from the per-user counts
//! that ingest keeps with the rows (`ferry_received_counts`, `ferry_quarantine_counts`,
//! `ferry_rejection_counts`, schema migration 0012), never from the records themselves: a few
//! rows per user, so the summary reads the same amount at 100 M records as at 1 M, and it is
//! the same before and after `ferry-server purge` (which leaves the counts). A run's latest
//! batch time is on the run (`last_batch_at`). The trend covers the last [`TREND_HOURS`] whole
//! hours (UTC), the current one included.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::db::{DbError, query_error};

/// A running migration with no batch for this long is stalled, unless asked otherwise (the
/// default of `ferry-server status --abandoned-after`).
pub const DEFAULT_STALLED_AFTER_SECS: u64 = 86_400;

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
    /// Users per spec app and version of their latest migration, most users first.
    pub spec_versions: Vec<SpecVersionUsers>,
    /// Why records were quarantined: by kind and field, most frequent first, the first
    /// [`TOP_REJECTIONS`].
    pub rejections: Vec<RejectionReason>,
}

/// How many rejection groups the summary lists.
pub const TOP_REJECTIONS: i64 = 20;

/// One group of quarantine reasons: a kind and the field the reasons name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectionReason {
    /// The kind.
    pub kind: String,
    /// The field the reasons name (`None`: the record as a whole, e.g. not an object).
    pub field: Option<String>,
    /// Reasons in the group (a record may give several).
    pub count: u64,
    /// Records in the group.
    pub records: u64,
    /// One reason, as the pipeline wrote it: values of sensitive fields are already redacted
    /// there (ferry-core never quotes them).
    pub example: String,
}

/// How many users' latest migration was made with one spec version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecVersionUsers {
    /// The spec's app (`None`: runs recorded before runs had a version).
    pub app: Option<String>,
    /// The spec's version.
    pub version: Option<String>,
    /// Users whose latest migration used it.
    pub users: u64,
    /// Of those, users whose latest migration is still running.
    pub running: u64,
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
    /// Users who sent a batch in it.
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

/// SQL telling whether run `run` (an alias of `ferry_migration_runs`) is stalled: running, with
/// no batch (nor start) for longer than the seconds in parameter `secs`.
pub(crate) fn stalled_sql(run: &str, secs: &str) -> String {
    format!(
        "({run}.status = 'running' \
          AND coalesce({run}.last_batch_at, {run}.started_at) < now() - make_interval(secs => {secs}))"
    )
}

/// Reads the fleet summary.
pub async fn summary(
    client: &impl GenericClient,
    stalled_after: std::time::Duration,
) -> Result<FleetSummary, DbError> {
    let row = client
        .query_typed_one(
            &format!(
                "WITH placed AS (
                     SELECT DISTINCT ON (r.user_id) r.status, {stalled} AS stalled
                       FROM ferry_migration_runs r
                      ORDER BY r.user_id, r.started_at DESC, r.migration_id DESC
                 )
                 SELECT count(*),
                        count(*) FILTER (WHERE status = 'verified'),
                        count(*) FILTER (WHERE status = 'running' AND NOT stalled),
                        count(*) FILTER (WHERE stalled),
                        count(*) FILTER (WHERE status = 'rolled_back')
                   FROM placed",
                stalled = stalled_sql("r", "$1")
            ),
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
            "SELECT kind, outcome, sum(records)::bigint FROM ferry_received_counts GROUP BY kind, outcome",
            &[],
        )
        .await
        .map_err(query_error("count the records received per kind"))?;
    let quarantined = client
        .query_typed(
            "SELECT kind, sum(records)::bigint FROM ferry_quarantine_counts GROUP BY kind",
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

    // Records and users per hour.
    let hours = client
        .query_typed(
            "SELECT to_char(hour_utc, 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"'), sum(records)::bigint, count(DISTINCT user_id)
               FROM ferry_received_counts
              WHERE hour_utc >= date_trunc('hour', now() AT TIME ZONE 'UTC') - make_interval(hours => $1 - 1)
              GROUP BY hour_utc ORDER BY hour_utc",
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

    let spec_versions = client
        .query_typed(
            "WITH latest AS (
                 SELECT DISTINCT ON (r.user_id) r.spec_app, r.spec_version, r.status
                   FROM ferry_migration_runs r
                  ORDER BY r.user_id, r.started_at DESC, r.migration_id DESC
             )
             SELECT spec_app, spec_version, count(*), count(*) FILTER (WHERE status = 'running')
               FROM latest GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            &[],
        )
        .await
        .map_err(query_error("count the users per spec version"))?
        .into_iter()
        .map(|row| SpecVersionUsers {
            app: row.get(0),
            version: row.get(1),
            users: count(row.get(2)),
            running: count(row.get(3)),
        })
        .collect();

    let rejections = client
        .query_typed(
            "SELECT kind, field, sum(reasons)::bigint, sum(records)::bigint, min(example)
               FROM ferry_rejection_counts
              GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT $1",
            &[(&TOP_REJECTIONS, Type::INT8)],
        )
        .await
        .map_err(query_error("group the quarantine reasons"))?
        .into_iter()
        .map(|row| RejectionReason {
            kind: row.get(0),
            field: row.get(1),
            count: count(row.get(2)),
            records: count(row.get(3)),
            example: row.get(4),
        })
        .collect();

    Ok(FleetSummary {
        stalled_after_secs: stalled_after.as_secs(),
        users,
        kinds: kinds.into_values().collect(),
        hours,
        spec_versions,
        rejections,
    })
}

/// Longest example of a rejection reason in [`render`]'s text, in characters.
const EXAMPLE_CHARS: usize = 200;

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
    for v in &summary.spec_versions {
        let _ = writeln!(
            text,
            "spec {} version {}: {} users ({} running)",
            v.app.as_deref().unwrap_or("(unrecorded)"),
            v.version.as_deref().unwrap_or("-"),
            v.users,
            v.running
        );
    }
    for r in &summary.rejections {
        let _ = writeln!(
            text,
            "rejected {} field {}: {} records, e.g. {}",
            r.kind,
            r.field.as_deref().unwrap_or("(record)"),
            r.records,
            // Control characters escaped: a record's text must not drive the terminal. The
            // sentence is the pipeline's, values in it already shortened and sensitive ones
            // redacted: cut only so that one line stays one line's worth.
            crate::http::error::cut_chars(
                &r.example
                    .chars()
                    .map(|c| if c.is_control() {
                        c.escape_debug().to_string()
                    } else {
                        c.to_string()
                    })
                    .collect::<String>(),
                EXAMPLE_CHARS
            )
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

/// The state of a user's latest migration, as the dashboard filters users by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// Verified by the browser.
    Verified,
    /// Running, a batch within the threshold.
    InProgress,
    /// Running, no batch for longer than the threshold.
    Stalled,
    /// Rolled back.
    RolledBack,
}

impl UserState {
    /// Every state, in the order the dashboard lists them.
    pub const ALL: [Self; 4] = [
        Self::Verified,
        Self::InProgress,
        Self::Stalled,
        Self::RolledBack,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::InProgress => "in_progress",
            Self::Stalled => "stalled",
            Self::RolledBack => "rolled_back",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One user in the dashboard's list: their latest migration and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRow {
    /// The user.
    pub user_id: uuid::Uuid,
    /// The state of their latest migration.
    pub state: UserState,
    /// Their latest migration.
    pub migration_id: uuid::Uuid,
    /// Its spec app and version, when recorded.
    pub spec_app: Option<String>,
    /// Its spec version, when recorded.
    pub spec_version: Option<String>,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When its last batch arrived (RFC 3339, UTC), if any.
    pub last_batch_at: Option<String>,
    /// Migration runs of the user, every one.
    pub runs: u64,
    /// Records received in the latest migration.
    pub received: u64,
    /// Records of the user in the quarantine (every migration).
    pub quarantined: u64,
    /// Conflicts of the user waiting for them.
    pub conflicts_open: u64,
}

/// Most users one page of [`users`] holds.
pub const MAX_USERS_PAGE: i64 = 200;

/// One page of users by id, after `after` (keyset: the last id of the previous page), of
/// `state` only when given, at most `limit` (capped at [`MAX_USERS_PAGE`]). The scan walks
/// the runs' primary key in user order and stops at the page's end; the counts are read for
/// the page's users only, each through an index keyed by the user.
pub async fn users(
    client: &impl GenericClient,
    stalled_after: std::time::Duration,
    state: Option<UserState>,
    after: Option<uuid::Uuid>,
    limit: i64,
) -> Result<Vec<UserRow>, DbError> {
    let rows = client
        .query_typed(
            &format!(
                "WITH latest AS (
                     SELECT DISTINCT ON (r.user_id) r.user_id, r.migration_id, r.status, r.started_at,
                            r.spec_app, r.spec_version, r.last_batch_at,
                            CASE WHEN r.status = 'verified' THEN 'verified'
                                 WHEN r.status = 'rolled_back' THEN 'rolled_back'
                                 WHEN {stalled} THEN 'stalled'
                                 ELSE 'in_progress' END AS state
                       FROM ferry_migration_runs r
                      WHERE $2::uuid IS NULL OR r.user_id > $2
                      ORDER BY r.user_id, r.started_at DESC, r.migration_id DESC
                 ), page AS (
                     SELECT * FROM latest WHERE $3::text IS NULL OR state = $3
                      ORDER BY user_id LIMIT $4
                 )
                 SELECT p.user_id, p.state, p.migration_id, p.spec_app, p.spec_version, {started},
                        {last_batch},
                        (SELECT count(*) FROM ferry_migration_runs r WHERE r.user_id = p.user_id),
                        (SELECT coalesce(sum(v.records), 0)::bigint FROM ferry_received_counts v
                          WHERE v.user_id = p.user_id AND v.migration_id = p.migration_id),
                        (SELECT count(*) FROM ferry_quarantine q WHERE q.user_id = p.user_id),
                        (SELECT count(*) FROM ferry_conflicts c
                          WHERE c.user_id = p.user_id AND c.status = 'open')
                   FROM page p ORDER BY p.user_id",
                started = crate::db::sql::rfc3339_sql("p.started_at"),
                last_batch = crate::db::sql::rfc3339_sql("p.last_batch_at"),
                stalled = stalled_sql("r", "$1"),
            ),
            &[
                (&stalled_after.as_secs_f64(), Type::FLOAT8),
                (&after, Type::UUID),
                (&state.map(UserState::as_str), Type::TEXT),
                (&limit.clamp(1, MAX_USERS_PAGE), Type::INT8),
            ],
        )
        .await
        .map_err(query_error("list the users"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok((
                row.try_get::<_, uuid::Uuid>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, uuid::Uuid>(2)?,
                row.try_get::<_, Option<String>>(3)?,
                row.try_get::<_, Option<String>>(4)?,
                row.try_get::<_, String>(5)?,
                row.try_get::<_, Option<String>>(6)?,
                [
                    row.try_get::<_, i64>(7)?,
                    row.try_get::<_, i64>(8)?,
                    row.try_get::<_, i64>(9)?,
                    row.try_get::<_, i64>(10)?,
                ],
            ))
        };
        let (user_id, state, migration_id, spec_app, spec_version, started_at, last_batch_at, n) =
            read(&row).map_err(query_error("read a user"))?;
        let state = UserState::from_name(&state).ok_or_else(|| DbError::Query {
            context: "read a user".to_owned(),
            reason: format!("user {user_id} has the unknown state {state:?}"),
            code: None,
        })?;
        out.push(UserRow {
            user_id,
            state,
            migration_id,
            spec_app,
            spec_version,
            started_at,
            last_batch_at,
            runs: count(n[0]),
            received: count(n[1]),
            quarantined: count(n[2]),
            conflicts_open: count(n[3]),
        });
    }
    Ok(out)
}
