//! The quarantine read back for the operator (`ferry-server quarantine`): every record that
//! was not migrated, with its reasons and its raw value exactly as received, opening the raw
//! values sealed at rest because their kind has sensitive fields.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::sql::rfc3339_sql;
use crate::db::{DbError, query_error};
use crate::ingest::field_crypto::{FieldCipher, QuarantineContext};

/// A quarantined record, its raw value in clear, for `ferry-server quarantine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// Row id in `ferry_quarantine`.
    pub id: i64,
    /// The user.
    pub user_id: Uuid,
    /// The migration it came in.
    pub migration_id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its localStorage key (escaped form).
    pub key: String,
    /// Its position in the key's value, as on the wire.
    pub locator: Option<String>,
    /// The raw text exactly as received: opened when it was stored sealed. `None` when it
    /// could not be opened (then `sealed` and `unreadable` say why).
    pub raw_value: Option<String>,
    /// The key id its raw value is sealed under at rest, if it is.
    pub sealed_with: Option<String>,
    /// The stored ciphertext, when it could not be opened with this server's key.
    pub sealed: Option<String>,
    /// Why it could not be opened.
    pub unreadable: Option<String>,
    /// Why it was rejected.
    pub reasons: serde_json::Value,
    /// When it was quarantined (RFC 3339, UTC).
    pub created_at: String,
}

/// The quarantined records (of `user`, and only `migration`, when given), oldest first, with
/// sealed raw values opened by `cipher`. A value it cannot open is listed with its ciphertext
/// and the reason, not dropped.
pub async fn quarantined_records(
    client: &Client,
    cipher: &FieldCipher,
    user: Option<Uuid>,
    migration: Option<Uuid>,
) -> Result<Vec<QuarantinedRecord>, DbError> {
    // One user's records pin `user_id` (single-shard if distributed by it, docs/scaling.md).
    let by_user = if user.is_some() {
        "user_id = $1"
    } else {
        "$1::uuid IS NULL"
    };
    let rows = client
        .query_typed(
            &format!(
                "SELECT id, user_id, migration_id, kind, key, locator, raw_value, raw_key_id, reasons, {}
                 FROM ferry_quarantine
                 WHERE {by_user} AND ($2::uuid IS NULL OR migration_id = $2)
                 ORDER BY id",
                rfc3339_sql("created_at")
            ),
            &[(&user, Type::UUID), (&migration, Type::UUID)],
        )
        .await
        .map_err(query_error("list the quarantined records"))?;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok(QuarantinedRecord {
                id: row.try_get(0)?,
                user_id: row.try_get(1)?,
                migration_id: row.try_get(2)?,
                kind: row.try_get(3)?,
                key: row.try_get(4)?,
                locator: row.try_get(5)?,
                raw_value: row.try_get(6)?,
                sealed_with: row.try_get(7)?,
                sealed: None,
                unreadable: None,
                reasons: row.try_get(8)?,
                created_at: row.try_get(9)?,
            })
        };
        let mut record = read(&row).map_err(query_error("read a quarantined record"))?;
        if record.sealed_with.is_some()
            && let Some(sealed) = record.raw_value.take()
        {
            let at = QuarantineContext {
                user_id: record.user_id,
                migration_id: record.migration_id,
                kind: &record.kind,
                key: &record.key,
            };
            match cipher.open_quarantined(&at, &sealed) {
                Ok(raw) => record.raw_value = Some(raw),
                Err(error) => {
                    record.unreadable = Some(error.to_string());
                    record.sealed = Some(sealed);
                }
            }
        }
        records.push(record);
    }
    Ok(records)
}
