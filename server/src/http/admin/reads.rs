//! The dashboard's reads: the fleet summary, the user list and one user's drill-down, over
//! the operator room's queries; sensitive values are never sent in clear.

use axum::extract::{Path, State};
use axum::http::Uri;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{invalid_query, not_found, parse_query, stalled_after, user_id};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::state::AppState;
use crate::http::v1::connection;
use crate::operator::{audit, backups, conflicts, fleet, quarantine, report};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    stalled_after_secs: Option<u64>,
}

/// `GET /admin/api/summary[?stalled_after_secs=N]`: the fleet summary ([`fleet::summary`]).
pub(super) async fn summary(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<fleet::FleetSummary>, ApiError> {
    let query: SummaryQuery = parse_query(&uri)?;
    let client = connection(&state).await?;
    Ok(Json(
        fleet::summary(&**client, stalled_after(query.stalled_after_secs)).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    state: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
    stalled_after_secs: Option<u64>,
}

/// One page of [`users`].
#[derive(Debug, Serialize)]
pub(super) struct UsersPage {
    users: Vec<fleet::UserRow>,
    /// The `after` of the next page; `None` on the last.
    next_after: Option<Uuid>,
}

/// `GET /admin/api/users[?state=S][&after=ID][&limit=N]`: users by id, a page at a time.
pub(super) async fn users(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<UsersPage>, ApiError> {
    let query: UsersQuery = parse_query(&uri)?;
    let wanted = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => Some(fleet::UserState::from_name(name).ok_or_else(|| {
            invalid_query(
                format!(
                    "`state` {} is not one of verified, in_progress, stalled, rolled_back",
                    crate::http::error::quote_input(name)
                ),
                Some("state"),
            )
        })?),
    };
    let after = match query.after.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(Uuid::parse_str(text).map_err(|_| {
            invalid_query(
                format!(
                    "`after` {} is not a user id (a UUID)",
                    crate::http::error::quote_input(text)
                ),
                Some("after"),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, fleet::MAX_USERS_PAGE);
    let client = connection(&state).await?;
    let users = fleet::users(
        &**client,
        stalled_after(query.stalled_after_secs),
        wanted,
        after,
        limit,
    )
    .await?;
    let next_after = if users.len() as i64 == limit {
        users.last().map(|u| u.user_id)
    } else {
        None
    };
    Ok(Json(UsersPage { users, next_after }))
}

/// A quarantined record as the dashboard shows it: sensitive values masked.
#[derive(Debug, Serialize)]
pub(super) struct QuarantineView {
    id: i64,
    migration_id: Uuid,
    kind: String,
    key: String,
    locator: Option<String>,
    /// The raw value with the values of sensitive fields masked; `None` when withheld.
    raw_value: Option<String>,
    /// Why the raw value is not shown, when it is not.
    withheld: Option<String>,
    reasons: Value,
    created_at: String,
}

/// What stands for a masked value.
pub const MASK: &str = "•••";

/// The raw value of a quarantined record of kind `kind` as the dashboard may show it: as is
/// when no served version of the kind has secrets; else parsed, with every property read by a
/// field with secrets replaced by [`MASK`]. `Err` (why) when it cannot be shown safely: the
/// kind is unknown, a secret comes from somewhere else than a property, or the value is not a
/// JSON object.
pub fn masked_raw(kinds: &[&ferry_core::spec::Kind], raw: &str) -> Result<String, String> {
    use ferry_core::spec::FieldSource;
    if kinds.is_empty() {
        return Err("its kind is not in any spec the server serves".to_owned());
    }
    let mut secret_props = Vec::new();
    for field in kinds.iter().flat_map(|k| &k.fields) {
        if !field.has_secrets() {
            continue;
        }
        match &field.from {
            FieldSource::Field(p) => secret_props.push(p.as_str()),
            FieldSource::Constant => {}
            _ => return Err("the kind has a sensitive value outside its properties".to_owned()),
        }
    }
    if secret_props.is_empty() {
        return Ok(raw.to_owned());
    }
    let Ok(Value::Object(mut object)) =
        serde_json::from_str::<Value>(&ferry_core::lossless::prepare_json(raw))
    else {
        return Err("the kind has sensitive fields and the value is not a JSON object".to_owned());
    };
    for p in secret_props {
        if let Some(v) = object.get_mut(p)
            && !v.is_null()
        {
            *v = Value::String(MASK.to_owned());
        }
    }
    serde_json::to_string(&object).map_err(|e| e.to_string())
}

/// Most quarantined records one drill-down shows (`quarantine_total` says how many there are).
pub const MAX_QUARANTINE_SHOWN: usize = 200;

/// Everything about one user.
#[derive(Debug, Serialize)]
pub(super) struct UserDetail {
    user_id: Uuid,
    runs: Vec<report::RunSummary>,
    /// The oldest [`MAX_QUARANTINE_SHOWN`] quarantined records.
    quarantine: Vec<QuarantineView>,
    /// Every quarantined record of the user.
    quarantine_total: usize,
    conflicts: Vec<conflicts::Conflict>,
    backups: Vec<backups::StoredBackup>,
    audit: Vec<audit::AuditRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailQuery {
    stalled_after_secs: Option<u64>,
}

/// `GET /admin/api/users/{user_id}`: the user's runs (with their reports), quarantine,
/// open conflicts, backups and the operator actions taken on them. 404 for a user with no
/// migration and no backup.
pub(super) async fn user_detail(
    State(state): State<AppState>,
    Path(user): Path<String>,
    uri: Uri,
) -> Result<Json<UserDetail>, ApiError> {
    let user = user_id(&user)?;
    let query: DetailQuery = parse_query(&uri)?;
    let client = connection(&state).await?;
    let runs = report::run_summaries(
        &client,
        Some(user),
        None,
        stalled_after(query.stalled_after_secs),
    )
    .await?;
    let backups = backups::list(&client, user, None).await?;
    if runs.is_empty() && backups.is_empty() {
        return Err(not_found(format!(
            "there is no user {user}: no migration and no backup"
        )));
    }
    let cipher = &state.engine().cipher;
    let records = quarantine::quarantined_records(&client, cipher, Some(user), None).await?;
    let quarantine_total = records.len();
    let quarantine = records
        .into_iter()
        .take(MAX_QUARANTINE_SHOWN)
        .map(|r| {
            let kinds: Vec<&ferry_core::spec::Kind> = state
                .engines()
                .all()
                .iter()
                .filter_map(|e| e.spec().kind(&r.kind))
                .collect();
            let (raw_value, withheld) = match r.raw_value.as_deref() {
                None => (
                    None,
                    Some(
                        r.unreadable
                            .clone()
                            .unwrap_or_else(|| "sealed with another key".to_owned()),
                    ),
                ),
                Some(raw) => match masked_raw(&kinds, raw) {
                    Ok(shown) => (Some(shown), None),
                    Err(why) => (None, Some(why)),
                },
            };
            QuarantineView {
                id: r.id,
                migration_id: r.migration_id,
                kind: r.kind,
                key: r.key,
                locator: r.locator,
                raw_value,
                withheld,
                reasons: r.reasons,
                created_at: r.created_at,
            }
        })
        .collect();
    let conflicts = conflicts::open_conflicts(&client, Some(user)).await?;
    let audit = audit::recent(&**client, Some(user), audit::MAX_AUDIT_ROWS).await?;
    Ok(Json(UserDetail {
        user_id: user,
        runs,
        quarantine,
        quarantine_total,
        conflicts,
        backups,
        audit,
    }))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_of_quarantined_records_are_masked() {
        let spec = ferry_core::spec::Spec::parse(include_str!("../../../../specs/taskboard.json"))
            .unwrap();
        let environments = spec.kind("environments").unwrap();
        let raw = r#"{"id":"1","name":"<b>x</b>","config":{"githubToken":"ghp_secret"}}"#;
        let shown = masked_raw(&[environments], raw).unwrap();
        assert!(!shown.contains("ghp_secret"), "{shown}");
        assert!(
            shown.contains(MASK) && shown.contains("<b>x</b>"),
            "{shown}"
        );
        assert!(masked_raw(&[environments], "not json").is_err());
        assert!(masked_raw(&[], "{}").is_err());
        let tasks = spec.kind("tasks").unwrap();
        assert_eq!(masked_raw(&[tasks], "not json").unwrap(), "not json");
    }
}
