//! Batch ingest: one batch in, exactly once, into PostgreSQL with the kinds' conflict policies.
//!
//! The room: [`prepare()`] (`prepare.rs`: CPU only, before a connection is taken), the
//! per-kind statement built once at start ([`IngestPlan`], `statement.rs`), [`apply()`]
//! (`apply.rs`: the transaction), the answer ([`BatchResult`], a type of the shared
//! contract, `ferry_core::contract`) and
//! [`field_crypto`] (sensitive fields sealed at rest).
//!
//! First, [`prepare()`] decodes the body, re-runs every record through the shared pipeline
//! (step 2 below) and builds every kind's column arrays, with sensitive fields sealed. Then
//! [`apply()`], for one batch of one user, in one transaction, each step a function:
//!
//! 0. **Take the user's lock** ([`crate::db::lock_user`]: `pg_advisory_xact_lock` keyed by
//!    the user id, held to the end of the transaction). Every transaction that writes a
//!    user's app rows or before-images takes it first: a batch, a rollback, a conflict
//!    resolution. So two devices of one user sending the same records at the same instant
//!    are applied one after the other, and the second statement's `before` snapshot sees the
//!    rows the first committed: its outcomes (`updated`, `conflict_queued`, …), its
//!    before-images and its manual conflicts are those of a batch sent later. Different
//!    users never wait for each other (two user ids that fold to the same 32-bit key only
//!    queue, they share no rows). Tested by `server/tests/api/races.rs`, with a transaction
//!    held mid-write and with same-instant pairs, for every policy.
//! 1. **Claim the idempotency key** (`claim_idempotency_key`) `(user, migration id,
//!    sequence)` in `ferry_ingest_ledger` with the SHA-256 of the body. A key already there
//!    with the same hash is a replay: its stored answer is returned, marked `replay`, and
//!    nothing else happens (`replay_answer`). A different hash is refused (409). Two
//!    concurrent copies: the second waits on the first's row lock, then finds the claim and
//!    replays its answer.
//!    Then the migration's run row is upserted and locked (`lock_migration_run`,
//!    `ferry_migration_runs`): a batch of a rolled-back migration is refused
//!    ([`IngestError::RolledBack`], 409), and so is a batch of a migration whose bookkeeping
//!    was purged (`ferry-server purge`; its ledger is gone, so even a replay claims its key
//!    anew and is refused here: [`IngestError::Purged`], 409); a rollback or a purge of the
//!    same migration waits for the batch (or the batch for them).
//! 2. **Re-run the shared pipeline** on every record ([`ferry_core::wire::reprocess`], in
//!    [`prepare()`]): the server trusts no id, hash or verdict from the browser. Records
//!    rejected by the browser or the server go to `ferry_quarantine` with their raw value and
//!    reasons (`quarantine_rejected`, after step 3: whatever no statement wrote).
//! 3. **One statement per kind** (`write_kinds`, [`KindPlan`]): the batch's rows travel as one
//!    array per column, `unnest`ed into an `incoming` set; the statement locks and snapshots
//!    the stored rows (`before`), upserts with `ON CONFLICT (user_id, id) DO UPDATE … WHERE
//!    <policy>`, writes the before-image of every stored row it changes (first image per
//!    migration wins, so a rollback restores the state before the migration) and the ids of
//!    the rows it creates as one array (`ferry_created_rows`: one row per statement, not one
//!    per record), queues manual conflicts,
//!    and returns one line per incoming row from which the per-record outcome is read
//!    (`row_outcome`).
//!    When the database refuses a kind's statement (a column, CHECK, trigger or foreign key
//!    of the adopter's stricter than the spec: SQLSTATE classes 22, 23, P0), the transaction
//!    is rolled back and run once more with each kind's rows written inside savepoints, split
//!    in halves down to the refused rows (`write_bisecting`); those are quarantined with the
//!    database's reason (message, table, column, constraint; never the row's values) and the
//!    rest lands. The normal case keeps one statement per kind.
//! 4. Record the hashes of the batch's records that are new to the migration, as one row
//!    (`record_received`: `ferry_received_batches`, three aligned arrays, read per record
//!    through the view `ferry_received`; for the verification report; a record sent again
//!    keeps its first outcome and counts once), and store the answer in the ledger
//!    (`save_answer`): only the lines whose outcome is not `inserted`, since a replay carries the same body and
//!    the rest of its answer is rebuilt from it.
//!
//! Every statement is sent unnamed with its parameter types (`execute_typed` / `query_typed`:
//! one round trip, no server-side prepared statement), so a batch works the same directly and
//! behind PgBouncer in transaction pooling mode; each is planned for its actual values (for
//! the per-kind statement a generic plan was measured up to 8 times slower). The transaction
//! starts with `SET LOCAL statement_timeout` ([`crate::db::begin`]).
//!
//! Conflict policies, per kind (`spec.conflict`), for a row that exists and differs:
//! - `skip`: the stored row stays (`kept_stored`).
//! - `overwrite`: the incoming row replaces it (`updated`).
//! - `newest`: the incoming row replaces it only when its `updated_at` is strictly larger;
//!   a tie keeps the stored row, the same way every time (`updated` / `kept_stored`).
//! - `merge`: JSON-object columns are merged key by key (`stored || incoming` when the incoming
//!   row is newer, `incoming || stored` otherwise: on a key both have, the newer row's value
//!   wins; keys only one side has are kept); every other column takes the newer row's value;
//!   ties count as stored-newer (`merged`).
//! - `manual`: the stored row stays and both versions go to `ferry_conflicts` (`conflict_queued`),
//!   once per distinct incoming version while the conflict is open.
//!
//! A row that exists and is equal is `unchanged` and is not written.
//!
//! A batch executes a fixed number of statements whatever its size: `BEGIN`, `SET LOCAL
//! statement_timeout` (when one is configured), the user's lock,
//! the ledger claim, the run row, one per kind present, the quarantine insert (when something
//! was rejected), the received hashes' insert, the answer, `COMMIT` — 12 for a batch of three
//! kinds with rejected records (measured with `pg_stat_statements` in the tests, for 20 and 2,000 records).
//! A transaction that loses a serialization failure or deadlock is rolled back whole; the
//! caller may run it again ([`IngestError::is_retryable`]; `POST /v1/batches` does, once).

mod apply;
pub mod field_crypto;
mod prepare;
mod statement;

use ferry_core::wire::WireError;
use uuid::Uuid;

pub use apply::{WriteTimes, apply};
pub use ferry_core::contract::{BatchResult, RecordOutcome, RecordResult};
pub use prepare::{PreparedBatch, prepare};
pub use statement::{IngestPlan, KindPlan};

use crate::ingest::field_crypto::FieldCipher;

/// Why a batch was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not a batch, or not for this spec.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The idempotency key was used before with a different body.
    #[error(
        "batch {sequence} of migration {migration_id} was already received with different content; a batch is never changed once sent: start a new migration"
    )]
    IdempotencyConflict {
        /// The migration.
        migration_id: Uuid,
        /// The sequence number.
        sequence: u32,
    },
    /// The migration was rolled back: its remaining batches must not apply.
    #[error(
        "migration {migration_id} was rolled back; its batches are no longer accepted: start a new migration"
    )]
    RolledBack {
        /// The migration.
        migration_id: Uuid,
    },
    /// The migration's bookkeeping was purged after its verification (`ferry-server purge`):
    /// a late batch (a stale tab re-sending) must not write its rows again.
    #[error(
        "migration {migration_id} was verified and its bookkeeping purged at {purged_at}; its batches are no longer accepted (its records are already in the database)"
    )]
    Purged {
        /// The migration.
        migration_id: Uuid,
        /// When it was purged (RFC 3339, UTC).
        purged_at: String,
    },
    /// A new migration under a spec version the operator retired.
    #[error(
        "spec {app:?} version {version:?} is retired on this server: a migration in flight under it may finish, but a new one must use a newer version"
    )]
    RetiredSpec {
        /// The app.
        app: String,
        /// The retired version.
        version: String,
    },
    /// The database failed.
    #[error("database error while {context}: {source}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl IngestError {
    /// Whether the whole batch should simply be tried again: the transaction lost a
    /// serialization failure or a deadlock against a concurrent one.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Db { source, .. } if crate::db::is_retryable_transaction(source))
    }
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> IngestError {
    move |source| IngestError::Db { context, source }
}

/// Applies one batch for `user`, each statement limited by `statement_timeout`. See the module
/// documentation.
pub async fn ingest(
    client: &mut deadpool_postgres::ClientWrapper,
    plan: &IngestPlan,
    cipher: &FieldCipher,
    user: Uuid,
    body: &[u8],
    statement_timeout: Option<std::time::Duration>,
    times: &mut WriteTimes,
) -> Result<BatchResult, IngestError> {
    let prepared = prepare(plan, cipher, user, body)?;
    apply(client, plan, cipher, &prepared, statement_timeout, times).await
}
