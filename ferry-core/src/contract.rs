//! The HTTP contract of the ingest server (`docs/http-api.md`): every answer body, the conflict
//! resolution request, and the one error body with its codes.
//!
//! The request that carries records, the batch, is [`crate::wire`]; everything else the
//! browser and the server exchange is here, once. The server serializes these types and the
//! browser deserializes the same ones, so a field renamed on one side is a compile error on
//! the other, not a silent `null`. The JSON they produce is the wire format: field names and
//! values must not change without a new API version.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// What happened to one record of a batch on the server.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Every outcome, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::Inserted,
        Self::Updated,
        Self::Unchanged,
        Self::KeptStored,
        Self::Merged,
        Self::ConflictQueued,
        Self::Quarantined,
    ];

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

    /// The outcome named `name` (as [`Self::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl fmt::Display for RecordOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer for one record of a batch.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordResult {
    /// The server's target id, when one could be derived.
    #[serde(default)]
    #[cfg_attr(feature = "typescript", tsify(type = "string | null"))]
    pub id: Option<Uuid>,
    /// The content hash the browser sent (32 lowercase hex digits).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{32}$"))]
    pub hash: String,
    /// Kind name.
    pub kind: String,
    /// What happened.
    pub outcome: RecordOutcome,
    /// Reasons, for quarantined records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The answer to `POST /v1/batches` (stored in the server's ledger and returned again, with
/// `replay: true`, when the same batch comes back).
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The migration.
    #[cfg_attr(feature = "typescript", tsify(type = "string"))]
    pub migration_id: Uuid,
    /// The batch's sequence number.
    pub sequence: u32,
    /// Whether this answer is a stored one, for a batch already applied.
    #[serde(default)]
    pub replay: bool,
    /// One entry per record, `records` first then `rejected`, in batch order.
    #[serde(default)]
    pub outcomes: Vec<RecordResult>,
    /// Counts per kind and outcome.
    #[serde(default)]
    pub counts: BTreeMap<String, BTreeMap<RecordOutcome, u64>>,
}

/// Where a migration (the data move) stands on the server.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationStatus {
    /// Batches are accepted.
    #[default]
    Running,
    /// The browser compared its tallies with the server's and they matched
    /// (`POST /v1/migrations/{id}/verify`): the migration is done.
    Verified,
    /// Rolled back; later batches of it are refused, and a browser that has not verified it
    /// migrates its records again under a new migration id.
    RolledBack,
}

impl MigrationStatus {
    /// The snake_case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Verified => "verified",
            Self::RolledBack => "rolled_back",
        }
    }

    /// The status named `name` (as [`Self::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Running, Self::Verified, Self::RolledBack]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to `GET /v1/migrations/{id}`: what the server received in a migration, the
/// verification report the browser compares with what it shipped.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The migration.
    #[cfg_attr(feature = "typescript", tsify(type = "string"))]
    pub migration_id: Uuid,
    /// Whether the migration is running, verified or rolled back.
    #[serde(default)]
    pub status: MigrationStatus,
    /// Batches applied (replays not counted).
    #[serde(default)]
    pub batches: u64,
    /// Per kind name.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindReport>,
}

impl MigrationReport {
    /// How the server's per-kind tallies differ from what the browser `sent`, one sentence
    /// per kind that differs (empty when they match). The browser's verification and the
    /// server's `POST /v1/migrations/{id}/verify` both decide with this.
    pub fn differences(&self, sent: &BTreeMap<String, KindTally>) -> Vec<String> {
        let mut problems = Vec::new();
        for (kind, t) in sent {
            match self.kinds.get(kind) {
                None => problems.push(format!(
                    "kind {kind:?}: sent {} records, the server reports none",
                    t.received
                )),
                Some(k)
                    if k.received != t.received
                        || !k.checksum.eq_ignore_ascii_case(&t.checksum) =>
                {
                    problems.push(format!(
                        "kind {kind:?}: sent {} records with checksum {}, the server received {} with checksum {}",
                        t.received, t.checksum, k.received, k.checksum
                    ));
                }
                Some(_) => {}
            }
        }
        for (kind, k) in &self.kinds {
            if k.received > 0 && !sent.contains_key(kind) {
                problems.push(format!(
                    "kind {kind:?}: nothing sent, the server reports {} records",
                    k.received
                ));
            }
        }
        problems
    }
}

/// What the browser sent of one kind: the count and checksum the server must report.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindTally {
    /// Distinct records sent (valid and rejected).
    pub received: u64,
    /// XOR of their 16-byte content hashes, as 32 hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{32}$"))]
    pub checksum: String,
}

/// The body of `POST /v1/migrations/{id}/verify`: what the browser sent, per kind name. The
/// server marks the migration verified only when its own tallies are exactly these.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Per kind name.
    pub kinds: BTreeMap<String, KindTally>,
}

/// What one kind received in a migration.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindReport {
    /// Records received (valid and rejected), each once however often its batch was sent.
    pub received: u64,
    /// XOR of their 16-byte content hashes, as 32 lowercase hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{32}$"))]
    pub checksum: String,
    /// Records per outcome.
    #[serde(default)]
    pub outcomes: BTreeMap<RecordOutcome, u64>,
}

/// The answer to `POST /v1/migrations/{id}/rollback`.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackAnswer {
    /// Rows restored or deleted, over every table.
    pub restored: u64,
    /// Whether the migration had already been rolled back (then nothing was done).
    #[serde(default)]
    pub already_rolled_back: bool,
}

/// An open conflict (policy `manual`), as `GET /v1/conflicts` lists it.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Its id (for `POST /v1/conflicts/{id}/resolve`).
    pub id: i64,
    /// The user; only in operator listings (the API answers the caller's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(type = "string | null"))]
    pub user_id: Option<Uuid>,
    /// Kind name.
    pub kind: String,
    /// The row's id.
    #[cfg_attr(feature = "typescript", tsify(type = "string"))]
    pub row_id: Uuid,
    /// The migration that brought the incoming version.
    #[cfg_attr(feature = "typescript", tsify(type = "string"))]
    pub migration_id: Uuid,
    /// The stored row (column → value; sensitive values stay ciphertext).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[cfg_attr(feature = "typescript", tsify(type = "Record<string, unknown>"))]
    pub stored: Value,
    /// The incoming row (column → value; sensitive values stay ciphertext).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[cfg_attr(feature = "typescript", tsify(type = "Record<string, unknown>"))]
    pub incoming: Value,
    /// When it was queued (RFC 3339, UTC).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// Which version of a conflicting row wins.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Keep the stored row.
    Stored,
    /// Write the incoming row.
    Incoming,
    /// Write the stored row with the edited columns in `value`.
    Edited,
}

/// The body of `POST /v1/conflicts/{id}/resolve`.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// Which version wins.
    pub choice: Choice,
    /// For `edited` only: column → value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[cfg_attr(
        feature = "typescript",
        tsify(type = "Record<string, unknown>", optional)
    )]
    pub value: Option<Map<String, Value>>,
}

/// The answer to `POST /v1/conflicts/{id}/resolve`.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveAnswer {
    /// Always `true`: a refusal is an error body.
    pub resolved: bool,
}

/// A backup stored on the server, as `POST /v1/backups` and `GET /v1/backups` answer it.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBackup {
    /// The id the browser gave it (the `backup_id` in its metadata).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was uploaded (RFC 3339, UTC).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// The machine-readable `code` of an error body. Every code the server answers with has
        /// a variant; a status the server has no code for (from a layer) is
        /// [`ErrorCode::Other`], its reason phrase in snake_case.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// Any other code, kept as sent.
            #[serde(untagged)]
            Other(String),
        }

        /// The TypeScript declaration of [`ErrorCode`], from the same list: every named code,
        /// and any other string (a layer's status), without losing the names' completion.
        #[cfg(feature = "typescript")]
        #[wasm_bindgen::prelude::wasm_bindgen(typescript_custom_section)]
        const ERROR_CODE_TS: &'static str = concat!(
            "export type ErrorCode = ",
            $("\"", $name, "\" | ",)*
            "(string & {});"
        );

        impl ErrorCode {
            /// Every named code (not [`ErrorCode::Other`]).
            pub const NAMED: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it is on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(code) => code,
                }
            }
        }
    };
}

error_codes! {
    /// 400: the body is not JSON.
    MalformedJson = "malformed_json",
    /// 422: the body is JSON of the wrong shape (`details.column` names a resolve column).
    InvalidBody = "invalid_body",
    /// 415: a JSON endpoint got another content type.
    UnsupportedMediaType = "unsupported_media_type",
    /// 401: no bearer token.
    MissingToken = "missing_token",
    /// 401: the token is not valid.
    InvalidToken = "invalid_token",
    /// 401: the token has expired.
    TokenExpired = "token_expired",
    /// 400: the body is not a `ferry-batch/2` (or `/1`) batch.
    InvalidBatch = "invalid_batch",
    /// 400: the batch names another spec app or version than the server runs.
    SpecMismatch = "spec_mismatch",
    /// 400: the bytes are not a Ferry backup, or the id header differs from the id inside.
    InvalidBackup = "invalid_backup",
    /// 400: a dev-mode query (`GET /dev/sample`) the route cannot serve.
    InvalidQuery = "invalid_query",
    /// 409: the same `(migration_id, sequence)` was received before with another body.
    IdempotencyConflict = "idempotency_conflict",
    /// 409: a batch of a migration that was rolled back, or its verification.
    MigrationRolledBack = "migration_rolled_back",
    /// 409: a batch of a migration whose bookkeeping was purged after its verification
    /// (`ferry-server purge`), or its rollback, which is no longer possible.
    MigrationPurged = "migration_purged",
    /// 409: verifying a migration whose tallies on the server differ from the browser's.
    VerificationMismatch = "verification_mismatch",
    /// 409: resolving a conflict twice.
    AlreadyResolved = "already_resolved",
    /// 409: the same backup id with different bytes.
    BackupExists = "backup_exists",
    /// 403: authenticated, but not allowed.
    Forbidden = "forbidden",
    /// 404: nothing at this address.
    NotFound = "not_found",
    /// 405: the route exists, the method does not.
    MethodNotAllowed = "method_not_allowed",
    /// 413: the body is larger than the limit.
    PayloadTooLarge = "payload_too_large",
    /// 414: the request target (path and query) is longer than the server reads.
    UriTooLong = "uri_too_long",
    /// 431: too many request headers, or too many bytes of them.
    HeadersTooLarge = "headers_too_large",
    /// 429: too many requests; see `Retry-After`.
    RateLimited = "rate_limited",
    /// 503: the request did not finish in time; see `Retry-After`.
    RequestTimeout = "request_timeout",
    /// 503: the database cannot serve now; see `Retry-After`.
    Unavailable = "unavailable",
    /// 500: internal error; the cause is only in the server log.
    Internal = "internal",
}

impl ErrorCode {
    /// The code written `name` on the wire.
    pub fn from_name(name: &str) -> Self {
        Self::NAMED
            .iter()
            .find(|c| c.as_str() == name)
            .cloned()
            .unwrap_or_else(|| Self::Other(name.to_owned()))
    }
}

/// The schema of [`ErrorCode`]: one of the named codes, or (from a layer) another
/// snake_case string. Written by hand because the derive has no notion of a catch-all variant.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        let named = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Self::NAMED.iter().map(ErrorCode::as_str)));
        let other = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Any other 4xx/5xx: the status's reason phrase in snake_case",
            ));
        AnyOfBuilder::new()
            .item(named)
            .item(other)
            .description(Some("Stable, machine-readable code of an error"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer: `{"error": {"code", "message", "details"?, "request_id"?}}`.
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `error` in [`ErrorBody`].
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), tsify(hashmap_as_object))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable code.
    pub code: ErrorCode,
    /// What happened and what to do, for a person.
    pub message: String,
    /// More, machine-readable, when there is something to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[cfg_attr(feature = "typescript", tsify(type = "unknown", optional))]
    pub details: Option<Value>,
    /// The id of the request this answers (also in its `X-Request-Id` header), to quote to
    /// the operator, who finds it in every log line of that request. Absent from answers made
    /// outside a request (and from servers older than the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub request_id: Option<String>,
}

/// The header carrying a request's id, both ways: a client may send one, and every answer
/// has one (the client's, when it is a valid [`is_valid_request_id`], else a new one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id the server takes from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether `id`, sent by a client in [`REQUEST_ID_HEADER`], is kept as the request's id:
/// 1 to [`MAX_REQUEST_ID_LEN`] printable ASCII characters (no spaces, no control
/// characters), so that it is safe to log, to return in a header and to search for.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcome_names_are_their_wire_names() {
        for outcome in RecordOutcome::ALL {
            assert_eq!(json!(outcome), json!(outcome.as_str()));
            assert_eq!(RecordOutcome::from_name(outcome.as_str()), Some(outcome));
        }
        assert_eq!(RecordOutcome::from_name("lost"), None);
    }

    #[test]
    fn error_codes_are_their_wire_names_and_unknown_ones_are_kept() {
        for code in ErrorCode::NAMED {
            assert_eq!(json!(code), json!(code.as_str()));
            let back: ErrorCode = serde_json::from_value(json!(code.as_str())).unwrap();
            assert_eq!(&back, code);
            assert_eq!(&ErrorCode::from_name(code.as_str()), code);
        }
        let teapot: ErrorCode = serde_json::from_value(json!("im_a_teapot")).unwrap();
        assert_eq!(teapot, ErrorCode::Other("im_a_teapot".into()));
        assert_eq!(json!(teapot), json!("im_a_teapot"));
    }

    #[test]
    fn a_batch_result_reads_and_writes_the_documented_json() {
        let text = json!({"migration_id": "00000000-0000-4000-8000-000000000001", "sequence": 3,
            "replay": false,
            "outcomes": [{"id": null, "hash": "00112233445566778899aabbccddeeff", "kind": "tasks",
                          "outcome": "quarantined", "reasons": ["title: missing"]},
                         {"id": "00000000-0000-4000-8000-000000000002", "hash": "ff112233445566778899aabbccddeeff",
                          "kind": "tasks", "outcome": "kept_stored"}],
            "counts": {"tasks": {"kept_stored": 1, "quarantined": 1}}});
        let result: BatchResult = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(result.outcomes[0].outcome, RecordOutcome::Quarantined);
        assert_eq!(result.counts["tasks"][&RecordOutcome::KeptStored], 1);
        assert_eq!(serde_json::to_value(&result).unwrap(), text);
    }

    #[test]
    fn a_resolution_refuses_unknown_fields_and_choices() {
        let ok: Resolution =
            serde_json::from_value(json!({"choice": "edited", "value": {"a": 1}})).unwrap();
        assert_eq!(ok.choice, Choice::Edited);
        assert!(serde_json::from_value::<Resolution>(json!({"choice": "mine"})).is_err());
        assert!(
            serde_json::from_value::<Resolution>(json!({"choice": "stored", "extra": 1})).is_err()
        );
    }

    #[test]
    fn an_error_body_omits_absent_details() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::SpecMismatch,
                message: "m".into(),
                details: None,
                request_id: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": {"code": "spec_mismatch", "message": "m"}})
        );
    }

    #[test]
    fn an_error_body_carries_its_request_id_and_reads_bodies_without_one() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::NotFound,
                message: "m".into(),
                details: None,
                request_id: Some("req-1".into()),
            },
        };
        let wire = json!({"error": {"code": "not_found", "message": "m", "request_id": "req-1"}});
        assert_eq!(serde_json::to_value(&body).unwrap(), wire);
        assert_eq!(serde_json::from_value::<ErrorBody>(wire).unwrap(), body);
        let older: ErrorBody =
            serde_json::from_value(json!({"error": {"code": "not_found", "message": "m"}}))
                .unwrap();
        assert_eq!(older.error.request_id, None);
    }

    #[test]
    fn request_ids_from_clients_are_short_printable_ascii() {
        // (id, kept, why)
        let long = "a".repeat(MAX_REQUEST_ID_LEN);
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        let cases = [
            ("0f8fad5b-d9cb-469f-a165-70867728950e", true, "a UUID"),
            (
                "lb-7f3a/2026-12-02T16:40:00Z#12",
                true,
                "a proxy's own format",
            ),
            (long.as_str(), true, "exactly the longest"),
            (too_long.as_str(), false, "one character too long"),
            ("", false, "empty"),
            ("a b", false, "a space would split log searches"),
            ("a\\b", true, "a backslash is printable"),
            ("a\tb", false, "a tab is a control character"),
            ("a\u{7f}b", false, "DEL is a control character"),
            ("caf\u{e9}", false, "not ASCII"),
        ];
        for (id, kept, why) in cases {
            assert_eq!(is_valid_request_id(id), kept, "{id:?}: {why}");
        }
    }
}
