//! The migrator's one error type. Every variant's message names what failed and what a
//! developer (or the user) can do about it, because it reaches JavaScript as an `Error` message.

use ferry_core::backup::BackupError;
use ferry_core::contract::ErrorCode;
use serde::Serialize;

/// Why a migrator operation failed. Whenever a run stops with an error, the app's localStorage
/// and the checkpoint are left intact, so the next run resumes where this one stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec JSON given to the migrator was refused.
    #[error("the migration spec is invalid: {0}")]
    Spec(String),
    /// An argument from JavaScript is unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Browser storage (IndexedDB) is full.
    #[error(
        "the browser's storage is full, so {what} could not be saved ({detail}); nothing was sent and localStorage is untouched: free some disk space or site data and run the migration again"
    )]
    QuotaExceeded {
        /// What was being saved.
        what: String,
        /// The browser's own message.
        detail: String,
    },
    /// Browser storage failed for another reason.
    #[error("browser storage failed while {what}: {detail}")]
    Storage {
        /// What was being done.
        what: String,
        /// The browser's own message.
        detail: String,
    },
    /// WebCrypto (or the random source) failed.
    #[error("encryption failed while {what}: {detail}")]
    Crypto {
        /// What was being done.
        what: String,
        /// The browser's own message.
        detail: String,
    },
    /// A backup could not be sealed or opened.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// No backup with this id is stored in this browser.
    #[error("no backup {0:?} is stored in this browser: call backups() to list the ids")]
    BackupNotFound(String),
    /// The token provider failed or the server refused its token twice.
    #[error(
        "the server refused the access token for {path} even after asking the token provider for a fresh one ({message}): make the token provider return a valid token; the migration stopped with localStorage and its checkpoint intact"
    )]
    Unauthorized {
        /// The request path.
        path: String,
        /// The server's message.
        message: String,
    },
    /// The token provider callback failed.
    #[error("the token provider failed: {0}")]
    TokenProvider(String),
    /// `409 idempotency_conflict`: the same batch number was sent with a different body.
    #[error(
        "the server already holds a different batch under the same number ({message}): the checkpoint in this browser no longer matches the server; the migration stopped with localStorage and its checkpoint intact (report this)"
    )]
    IdempotencyConflict {
        /// The server's message.
        message: String,
    },
    /// `400 spec_mismatch`: the browser runs another spec than the server.
    #[error(
        "the server runs another migration spec ({message}): reload the app to get the current spec; localStorage and the checkpoint are intact"
    )]
    SpecMismatch {
        /// The server's message.
        message: String,
    },
    /// Another 4xx answer: the server refuses this request and would refuse it again.
    #[error(
        "the server refused {path} with {status} {code}: {message}; this is a permanent refusal, not an outage, so retrying will not help; localStorage and the checkpoint are intact (report the code {code} to the app's team)"
    )]
    Refused {
        /// The request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The machine-readable code of the error body.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The same 5xx answer came back for the same request several times in a row: the server
    /// fails on this data (a column stricter than the spec, a bug), it is not down.
    #[error(
        "the server failed on {path} {times} times in a row with the same answer ({status} {code}: {message}): this is a server fault with this data, not an outage, so the migration stopped instead of retrying; localStorage and the checkpoint are intact and a later run tries again (report it to the app's team)"
    )]
    ServerFault {
        /// The request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The machine-readable code of the error body.
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// Identical answers in a row.
        times: u32,
    },
    /// `409 migration_rolled_back`: the migration in flight was rolled back on the server, so
    /// it is not done; the runner plans a new migration from localStorage.
    #[error(
        "the server rolled back the migration behind {path} ({message}): it is not done; run again to migrate the records under a new migration (localStorage and the backups are intact)"
    )]
    MigrationRolledBack {
        /// The request path.
        path: String,
        /// The server's message.
        message: String,
    },
    /// Transient failures went on past the retry budget.
    #[error(
        "the server stayed unreachable for {path} after {attempts} attempts (last: {last}); nothing is lost: run again later and the migration resumes where it stopped"
    )]
    Unavailable {
        /// The request path.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A batch of one record is still too large for the server.
    #[error(
        "batch {sequence} holds a single record of {bytes} bytes and the server still answers 413: raise the server's body limit; the migration stopped with localStorage and its checkpoint intact"
    )]
    RecordTooLarge {
        /// The batch number.
        sequence: u32,
        /// Its size.
        bytes: usize,
    },
    /// The server's tallies differ from what was sent.
    #[error(
        "verification of migration {migration_id} failed: {details}; the migration is not marked done and localStorage is untouched"
    )]
    VerificationFailed {
        /// The migration.
        migration_id: String,
        /// Per kind, what differs.
        details: String,
    },
    /// The server's answer does not follow the HTTP contract.
    #[error("the server's answer to {path} does not follow the Ferry HTTP contract: {detail}")]
    Protocol {
        /// The request path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The browser lacks an API the migrator needs.
    #[error("this browser lacks {0}, which the migrator needs")]
    Unsupported(String),
}

impl Error {
    /// A short machine-readable code, set as `code` on the JavaScript `Error`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Spec(_) => "spec_invalid",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Storage { .. } => "storage",
            Self::Crypto { .. } => "crypto",
            Self::Backup(_) => "backup",
            Self::BackupNotFound(_) => "backup_not_found",
            Self::Unauthorized { .. } => "unauthorized",
            Self::TokenProvider(_) => "token_provider",
            Self::IdempotencyConflict { .. } => "idempotency_conflict",
            Self::SpecMismatch { .. } => "spec_mismatch",
            Self::Refused { .. } => "refused",
            Self::ServerFault { .. } => "server_fault",
            Self::MigrationRolledBack { .. } => "migration_rolled_back",
            Self::Unavailable { .. } => "unavailable",
            Self::RecordTooLarge { .. } => "record_too_large",
            Self::VerificationFailed { .. } => "verification_failed",
            Self::Protocol { .. } => "protocol",
            Self::Unsupported(_) => "unsupported",
        }
    }

    /// Which kind of failure this is, for the run report and the JavaScript `Error`.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Unauthorized { .. }
            | Self::IdempotencyConflict { .. }
            | Self::SpecMismatch { .. }
            | Self::Refused { .. }
            | Self::RecordTooLarge { .. }
            | Self::VerificationFailed { .. }
            | Self::MigrationRolledBack { .. }
            | Self::Protocol { .. } => Failure::Refused,
            Self::ServerFault { .. } => Failure::ServerFault,
            Self::Unavailable { .. } => Failure::Unreachable,
            _ => Failure::Browser,
        }
    }
}

/// The kind of a failure: what the user and the app's team can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The server answered and refused (4xx, or an answer that breaks the contract): it will
    /// refuse again until someone changes the app, the spec or the server.
    Refused,
    /// The server failed the same way several times on the same request (5xx): a server-side
    /// problem with this data; a later run tries again.
    ServerFault,
    /// The server could not be reached (network, timeouts, 502–504, 429) within the retry
    /// budget: run again later.
    Unreachable,
    /// Something in this browser failed (storage, crypto, arguments, the token provider).
    Browser,
}

impl Failure {
    /// The snake_case name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::ServerFault => "server_fault",
            Self::Unreachable => "unreachable",
            Self::Browser => "browser",
        }
    }
}
