//! The answer to a batch: per record what happened, per kind the counts. Stored in the
//! ledger as JSON and returned again, marked `replay`, when the same batch comes back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOutcome {
    /// A new row.
    Inserted,
    /// The stored row was replaced.
    Updated,
    /// The stored row was already equal.
    Unchanged,
    /// The stored row won (policy `skip`, or `newest` with an older incoming row).
    KeptStored,
    /// Merged into the stored row (policy `merge`).
    Merged,
    /// Waiting for the user (policy `manual`).
    ConflictQueued,
    /// Not migrated; in the quarantine with its reasons.
    Quarantined,
}

impl RecordOutcome {
    /// The snake_case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inserted => "inserted",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::KeptStored => "kept_stored",
            Self::Merged => "merged",
            Self::ConflictQueued => "conflict_queued",
            Self::Quarantined => "quarantined",
        }
    }
}

/// The answer for one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordResult {
    /// The server's target id, when one could be derived.
    pub id: Option<Uuid>,
    /// The content hash the browser sent.
    pub hash: String,
    /// Kind name.
    pub kind: String,
    /// What happened.
    pub outcome: RecordOutcome,
    /// Reasons, for quarantined records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The answer to one batch (stored in the ledger and returned again on a replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The migration.
    pub migration_id: Uuid,
    /// The batch's sequence number.
    pub sequence: u32,
    /// Whether this answer is a stored one, for a batch already applied.
    pub replay: bool,
    /// One entry per record, `records` first then `rejected`, in batch order.
    pub outcomes: Vec<RecordResult>,
    /// Counts per kind and outcome.
    pub counts: BTreeMap<String, BTreeMap<RecordOutcome, u64>>,
}
