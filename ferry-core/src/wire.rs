//! The wire format of a batch (`ferry-batch/2`, and `ferry-batch/1` read) and the batch builder.
//!
//! One HTTP request carries one batch: a header (migration id, sequence number, device id,
//! spec app and version, migration start time, and the digest of the records' content hashes)
//! and the records, each with its kind, key, position, target id and raw record. Records the
//! browser rejected travel too, in `rejected`, with their content hash, raw value and reasons,
//! so the server can quarantine them.
//!
//! The browser does not send transformed rows: the server re-runs
//! [`pipeline::process_record`] on every raw record with the same spec, so it trusts nothing
//! the browser computed, and the payload stays one copy of the data.
//!
//! ```json
//! {"header":{"format":"ferry-batch/2","migration_id":"…","sequence":0,"device_id":"…",
//!            "app":"taskboard","spec_version":"2026.11","migrated_at_ms":1700000000000,
//!            "digest":"…"},
//!  "records":[{"kind":"tasks","key":"tasks","at":12,"id":"…","raw":{"json":"{…}"}}],
//!  "rejected":[{"kind":"tasks","key":"tasks","at":13,"hash":"…","raw":{"json":"{…}"},
//!               "reasons":[{"code":"missing","field":"title","message":"…"}]}]}
//! ```
//!
//! `raw` holds the record's canonical JSON *as a string* (`{"json": "…"}`) or the text of a
//! value that is not JSON (`{"text": "…"}`): the hash is computed over exactly those bytes, so
//! both sides hash the same thing without re-serialising.
//!
//! The server computes every record's content hash itself. `ferry-batch/1` carried the
//! browser's hash with each record (32 hex digits that do not compress: a quarter of a gzipped
//! body); `ferry-batch/2` carries one [`records_digest`] of them in the header instead, which
//! the server compares with the digest of its own hashes, so an outdated or altered client is
//! still caught in the batch it sends. The server reads both formats (a browser updated in
//! the middle of a migration still holds `ferry-batch/1` batches in its outbox).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lossless::LosslessString;
use crate::pipeline::{self, ContentHash, Context, Locator, Note, Outcome, Raw, Record};
use crate::spec::Spec;

/// The format tag of the batches the browser makes.
pub const WIRE_FORMAT: &str = "ferry-batch/2";

/// The previous format: each record carries its content hash, the header no digest.
pub const WIRE_FORMAT_V1: &str = "ferry-batch/1";

/// Every format the server reads, newest first.
pub const READ_FORMATS: [&str; 2] = [WIRE_FORMAT, WIRE_FORMAT_V1];

/// [`READ_FORMATS`] said for a person: `"ferry-batch/2" or "ferry-batch/1"`.
pub fn read_formats_said() -> String {
    READ_FORMATS.map(|f| format!("{f:?}")).join(" or ")
}

/// What every batch of a migration carries.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchHeader {
    /// Always [`WIRE_FORMAT`].
    pub format: String,
    /// The migration this batch belongs to (a fresh UUID per migration run).
    pub migration_id: Uuid,
    /// Position of the batch in its migration, from 0; with the user and migration id, the
    /// idempotency key.
    pub sequence: u32,
    /// The stable id of the sending browser profile.
    pub device_id: Uuid,
    /// The spec's `app`.
    pub app: String,
    /// The spec's `version`.
    pub spec_version: String,
    /// When the migration started (the value of `$migrated_at` defaults).
    pub migrated_at_ms: i64,
    /// `ferry-batch/2`: the [`records_digest`] of the content hashes of `records`, in order
    /// (absent in `ferry-batch/1`, whose records carry their hashes, and in the halves of a
    /// batch the browser split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9a-f]{32}$"))]
    pub digest: Option<ContentHash>,
}

impl BatchHeader {
    /// A header for batch 0 of a migration.
    pub fn new(spec: &Spec, migration_id: Uuid, ctx: &Context) -> Self {
        Self {
            format: WIRE_FORMAT.to_owned(),
            migration_id,
            sequence: 0,
            device_id: ctx.device_id,
            app: spec.app.clone(),
            spec_version: spec.version.clone(),
            migrated_at_ms: ctx.migrated_at_ms,
            digest: None,
        }
    }

    /// The pipeline context this header implies.
    pub fn context(&self) -> Context {
        Context {
            device_id: self.device_id,
            migrated_at_ms: self.migrated_at_ms,
        }
    }
}

/// A decoded batch, as the server reads it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The header.
    pub header: BatchHeader,
    /// Records the browser found valid.
    pub records: Vec<WireRecord>,
    /// Records the browser rejected.
    #[serde(default)]
    pub rejected: Vec<WireRejected>,
}

/// A record the browser found valid.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRecord {
    /// Kind name.
    pub kind: String,
    /// localStorage key.
    pub key: LosslessString,
    /// Position in the key's value.
    pub at: WireLocator,
    /// Target id the browser derived.
    pub id: Uuid,
    /// `ferry-batch/1` only: the content hash the browser computed (`ferry-batch/2` covers the
    /// records' hashes with the header's digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9a-f]{32}$"))]
    pub hash: Option<ContentHash>,
    /// The raw record.
    pub raw: Raw,
}

/// A record the browser rejected, with its reasons.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRejected {
    /// Kind name.
    pub kind: String,
    /// localStorage key.
    pub key: LosslessString,
    /// Position in the key's value.
    pub at: WireLocator,
    /// Content hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{32}$"))]
    pub hash: ContentHash,
    /// The raw value, exactly.
    pub raw: Raw,
    /// Why the browser rejected it.
    pub reasons: Vec<Note>,
}

/// The schema of [`WireLocator`], written by hand: the derive cannot say "an integer, a
/// string or null" for an untagged enum with a unit-like variant.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for WireLocator {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        AnyOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some(
                "Where the record sits in its key's value: an array index, a map key, or null for the whole value",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for WireLocator {}

/// A [`Locator`] on the wire: `null` (the whole value), an array index, or a map key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireLocator {
    /// The n-th element of an array.
    Index(u32),
    /// The entry of a map.
    MapKey(LosslessString),
    /// The whole value.
    Whole(()),
}

impl From<&Locator> for WireLocator {
    fn from(l: &Locator) -> Self {
        match l {
            Locator::Whole => Self::Whole(()),
            Locator::Index(i) => Self::Index(*i),
            Locator::MapKey(k) => Self::MapKey(k.clone()),
        }
    }
}

impl From<WireLocator> for Locator {
    fn from(l: WireLocator) -> Self {
        match l {
            WireLocator::Whole(()) => Self::Whole,
            WireLocator::Index(i) => Self::Index(i),
            WireLocator::MapKey(k) => Self::MapKey(k),
        }
    }
}

/// Why a wire record does not match what the server computes from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The batch is not `ferry-batch/2` (or `/1`) JSON.
    #[error("the batch is not valid {WIRE_FORMAT} JSON: {0}")]
    Decode(String),
    /// The header names another format.
    #[error(
        "the batch format is {found:?}; this server reads {}",
        read_formats_said()
    )]
    Format {
        /// The format found.
        found: String,
    },
    /// The content hashes are not where the batch's format puts them: each record's in
    /// `ferry-batch/1`, the header's digest in `ferry-batch/2`.
    #[error("a {format} batch {problem}")]
    Hashes {
        /// The batch's format.
        format: &'static str,
        /// What is wrong, said for a person.
        problem: String,
    },
    /// A string of the batch holds a NUL character, which no string in the lossless escaped
    /// form holds (and PostgreSQL cannot store). The value is not quoted.
    #[error(
        "the batch holds a NUL character in {field}; every string travels in the lossless escaped form, which has none"
    )]
    Nul {
        /// Which field (header field, or `kind`, `key`, `raw`, `reasons` of a record).
        field: &'static str,
    },
    /// `migrated_at_ms` is outside the years 0001–9999 every timestamp of Ferry lies in.
    #[error("the batch's migrated_at_ms {ms} is outside the years 0001-9999")]
    MigratedAtOutOfRange {
        /// The value sent.
        ms: i64,
    },
    /// The batch was made with a spec the server does not serve.
    #[error(
        "the batch was made with spec {app:?} version {version:?}, which this server does not serve; it serves {served}: reload the app to get the current spec"
    )]
    SpecMismatch {
        /// App named in the batch.
        app: String,
        /// Version named in the batch.
        version: String,
        /// The apps and versions the server serves, said for a person
        /// (`"taskboard" versions "1", "2"`).
        served: String,
    },
}

/// Names the apps and versions of `specs` for a person: `"taskboard" versions "1", "2"`,
/// apps separated by `; `, in the order given.
pub fn describe_served<'a>(specs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut apps: Vec<(&str, Vec<&str>)> = Vec::new();
    for (app, version) in specs {
        match apps.iter_mut().find(|(a, _)| *a == app) {
            Some((_, versions)) => versions.push(version),
            None => apps.push((app, vec![version])),
        }
    }
    apps.iter()
        .map(|(app, versions)| {
            let list: Vec<String> = versions.iter().map(|v| format!("{v:?}")).collect();
            let word = if versions.len() == 1 {
                "version"
            } else {
                "versions"
            };
            format!("{app:?} {word} {}", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The app and spec version a batch names, read before the batch is decoded against a spec
/// (a server serving several versions picks the spec with them). A body that is not a batch
/// gets the error [`decode_batch`] would give.
pub fn batch_spec(bytes: &[u8]) -> Result<(String, String), WireError> {
    #[derive(Deserialize)]
    struct Peek {
        header: PeekHeader,
    }
    #[derive(Deserialize)]
    struct PeekHeader {
        format: String,
        app: String,
        spec_version: String,
    }
    let peek: Peek = match serde_json::from_slice(bytes) {
        Ok(peek) => peek,
        // Not a batch: the whole decoder's word on it (its position and expectation).
        Err(e) => {
            return Err(WireError::Decode(
                serde_json::from_slice::<Batch>(bytes)
                    .err()
                    .map_or_else(|| e.to_string(), |full| full.to_string()),
            ));
        }
    };
    read_format(&peek.header.format)?;
    if peek.header.app.contains('\0') {
        return Err(WireError::Nul {
            field: "the header's app",
        });
    }
    if peek.header.spec_version.contains('\0') {
        return Err(WireError::Nul {
            field: "the header's spec_version",
        });
    }
    Ok((peek.header.app, peek.header.spec_version))
}

/// Decodes a batch and checks its header against the spec.
pub fn decode_batch(spec: &Spec, bytes: &[u8]) -> Result<Batch, WireError> {
    let batch: Batch =
        serde_json::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    check_hashes(&batch)?;
    check_storable(&batch)?;
    if batch.header.app != spec.app || batch.header.spec_version != spec.version {
        return Err(WireError::SpecMismatch {
            app: batch.header.app,
            version: batch.header.spec_version,
            served: describe_served([(spec.app.as_str(), spec.version.as_str())]),
        });
    }
    Ok(batch)
}

/// Refuses a batch of another format, or whose content hashes are not where its format puts
/// them: every record's in `ferry-batch/1`; in `ferry-batch/2` none per record, and the
/// header's digest, which a batch the browser split after a 413 leaves out (it cannot hash
/// records made with another spec version; the verification at the end still compares every
/// hash).
fn check_hashes(batch: &Batch) -> Result<(), WireError> {
    let format = read_format(&batch.header.format)?;
    let v2 = format == WIRE_FORMAT;
    let problem = if !v2 && batch.header.digest.is_some() {
        Some("has a digest in its header (only ferry-batch/2 has one)".to_owned())
    } else {
        batch
            .records
            .iter()
            .position(|r| r.hash.is_some() == v2)
            .map(|i| {
                if v2 {
                    format!("carries a hash in record {i} (the header's digest covers them)")
                } else {
                    format!("has no hash in record {i}")
                }
            })
    };
    match problem {
        Some(problem) => Err(WireError::Hashes { format, problem }),
        None => Ok(()),
    }
}

/// The format a header names, if the server reads it ([`READ_FORMATS`]).
fn read_format(found: &str) -> Result<&'static str, WireError> {
    READ_FORMATS
        .into_iter()
        .find(|f| *f == found)
        .ok_or_else(|| WireError::Format {
            found: found.to_owned(),
        })
}

/// The digest of a `ferry-batch/2` batch's records: the first 16 bytes of the SHA-256 of
/// their content hashes, in the order of `records`.
pub fn records_digest<'a>(hashes: impl IntoIterator<Item = &'a ContentHash>) -> ContentHash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for hash in hashes {
        h.update(hash.0);
    }
    ContentHash::from_sha256(h)
}

/// Refuses a batch no database could store as sent: a NUL character in any string (the header,
/// a record's kind, key or raw value, a rejected record's reasons) or a `migrated_at_ms`
/// outside the years 0001–9999. Such input is a broken or hostile client, never a user's data:
/// the browser sends every string in the lossless escaped form.
fn check_storable(batch: &Batch) -> Result<(), WireError> {
    let nul = |field: &'static str, text: &str| {
        if text.contains('\0') {
            Err(WireError::Nul { field })
        } else {
            Ok(())
        }
    };
    let h = &batch.header;
    nul("the header's app", &h.app)?;
    nul("the header's spec_version", &h.spec_version)?;
    if !(crate::timestamp::MIN_MS..=crate::timestamp::MAX_MS).contains(&h.migrated_at_ms) {
        return Err(WireError::MigratedAtOutOfRange {
            ms: h.migrated_at_ms,
        });
    }
    for r in &batch.records {
        nul("a record's kind", &r.kind)?;
        nul("a record's key", r.key.as_escaped())?;
        nul("a record's raw value", r.raw.text())?;
    }
    for r in &batch.rejected {
        nul("a rejected record's kind", &r.kind)?;
        nul("a rejected record's key", r.key.as_escaped())?;
        nul("a rejected record's raw value", r.raw.text())?;
        for note in &r.reasons {
            nul("a rejected record's reasons", &note.message)?;
            nul(
                "a rejected record's reasons",
                note.field.as_deref().unwrap_or_default(),
            )?;
        }
    }
    Ok(())
}

/// Re-runs the pipeline on every record of `batch.records`, trusting nothing the browser
/// claimed ([`reprocess`]), and checks a `ferry-batch/2` header's digest against the server's
/// own hashes: when they differ, the browser hashed these records differently (an outdated or
/// altered client), and every record of the list is rejected with a reason that says so.
pub fn reprocess_records(spec: &Spec, batch: &Batch) -> Vec<Record> {
    let mut records: Vec<Record> = batch
        .records
        .iter()
        .map(|item| reprocess(spec, &batch.header, item))
        .collect();
    if let Some(sent) = batch.header.digest {
        let own = records_digest(records.iter().map(|r| &r.hash));
        if own != sent {
            for r in &mut records {
                r.outcome = Outcome::Rejected(vec![Note {
                    code: pipeline::Code::Id,
                    field: None,
                    message: format!(
                        "the browser's digest of this batch's {} record hashes is {sent:?}, but the records give {own:?}: an outdated or altered client",
                        batch.records.len()
                    ),
                }]);
            }
        }
    }
    records
}

/// Re-runs the pipeline on a record received from the browser, trusting nothing it claimed.
///
/// Returns the server's own [`Record`]. When the browser's id (or, in `ferry-batch/1`, its
/// hash) differs from the server's, or the kind is unknown, or the raw JSON does not parse,
/// the record is rejected with a reason that says so (it then goes to the quarantine like any
/// rejected record). A `ferry-batch/2` record's hash is checked with the whole list's digest
/// ([`reprocess_records`]).
pub fn reprocess(spec: &Spec, header: &BatchHeader, item: &WireRecord) -> Record {
    let ctx = header.context();
    let locator = Locator::from(item.at.clone());
    let Some(kind) = spec.kind_index(&item.kind) else {
        return foreign(
            item,
            format!("unknown kind {}", pipeline::quote(&item.kind)),
        );
    };
    let input = match item.raw.to_input() {
        Ok(input) => input,
        Err(e) => return foreign(item, format!("the raw record is not JSON: {e}")),
    };
    let mut record = pipeline::process_record(spec, kind, &item.key, locator, input, &ctx);
    if record.id != Some(item.id) || item.hash.is_some_and(|h| h != record.hash) {
        let hashes = match item.hash {
            Some(sent) => format!(" (hash {sent:?}, the record gives {:?})", record.hash),
            None => String::new(),
        };
        record.outcome = Outcome::Rejected(vec![Note {
            code: pipeline::Code::Id,
            field: None,
            message: format!(
                "the browser sent id {}{hashes}, but the record gives id {}: an outdated or altered client",
                item.id,
                record
                    .id
                    .map_or_else(|| "none".to_owned(), |u| u.to_string()),
            ),
        }]);
    }
    record
}

fn foreign(item: &WireRecord, why: String) -> Record {
    let locator = Locator::from(item.at.clone());
    // The browser's hash when it sent one; else the hash of what arrived, by the kind's name.
    let hash = item.hash.unwrap_or_else(|| {
        pipeline::hash_record(
            &item.kind,
            None,
            item.key.as_escaped(),
            &locator,
            item.raw.text(),
        )
    });
    Record {
        kind: usize::MAX,
        key: item.key.clone(),
        locator,
        legacy_id: None,
        id: None,
        raw: item.raw.clone(),
        hash,
        updated_at_ms: None,
        outcome: Outcome::Rejected(vec![Note {
            code: pipeline::Code::Shape,
            field: None,
            message: why,
        }]),
    }
}

/// Bounds of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchLimits {
    /// At most this many records (valid and rejected together).
    pub max_records: usize,
    /// At most this many encoded bytes, unless a single record is larger (it then travels alone).
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_records: 2_000,
            max_bytes: 1024 * 1024,
        }
    }
}

/// One encoded batch, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Its sequence number.
    pub sequence: u32,
    /// The request body.
    pub body: Vec<u8>,
    /// Indexes (into the records given to the builder) of the records it carries.
    pub members: Vec<usize>,
}

/// Encodes one record as a batch item: `Some((is_rejected, json))`, or `None` for records that
/// are not shipped (identical duplicates).
pub fn encode_item(spec: &Spec, record: &Record) -> Option<(bool, String)> {
    let kind = spec.kinds.get(record.kind)?.name.clone();
    let at = WireLocator::from(&record.locator);
    let text = match (&record.outcome, record.id) {
        (Outcome::Duplicate(_), _) => return None,
        (Outcome::Valid(_) | Outcome::Repaired(..), Some(id)) => {
            serde_json::to_string(&WireRecord {
                kind,
                key: record.key.clone(),
                at,
                id,
                hash: None,
                raw: record.raw.clone(),
            })
        }
        (outcome, _) => {
            let reasons = match outcome {
                Outcome::Rejected(r) => r.clone(),
                _ => Vec::new(),
            };
            return serde_json::to_string(&WireRejected {
                kind,
                key: record.key.clone(),
                at,
                hash: record.hash,
                raw: record.raw.clone(),
                reasons,
            })
            .ok()
            .map(|t| (true, t));
        }
    };
    text.ok().map(|t| (false, t))
}

/// Splits records into batches bounded by [`BatchLimits`], numbering them from `first_sequence`.
/// Records are taken in order; identical duplicates are left out.
pub fn build_batches(
    spec: &Spec,
    header: &BatchHeader,
    records: &[Record],
    indexes: impl IntoIterator<Item = usize>,
    first_sequence: u32,
    limits: BatchLimits,
) -> Vec<EncodedBatch> {
    batches(spec, header, records, indexes, first_sequence, limits).collect()
}

/// [`build_batches`] one batch at a time: each comes out as soon as it is full, so a caller
/// that stores it and lets it go never holds more than one encoded batch.
pub fn batches<'a, I: IntoIterator<Item = usize>>(
    spec: &'a Spec,
    header: &BatchHeader,
    records: &'a [Record],
    indexes: I,
    first_sequence: u32,
    limits: BatchLimits,
) -> Batches<'a, I::IntoIter> {
    Batches {
        spec,
        records,
        indexes: indexes.into_iter(),
        builder: Some(BatchBuilder::new(header.clone(), first_sequence, limits)),
    }
}

/// The iterator of [`batches`].
pub struct Batches<'a, I> {
    spec: &'a Spec,
    records: &'a [Record],
    indexes: I,
    /// `None` once the last batch is out.
    builder: Option<BatchBuilder>,
}

impl<I: Iterator<Item = usize>> Iterator for Batches<'_, I> {
    type Item = EncodedBatch;

    fn next(&mut self) -> Option<EncodedBatch> {
        let builder = self.builder.as_mut()?;
        for i in self.indexes.by_ref() {
            let Some(record) = self.records.get(i) else {
                continue;
            };
            let Some((rejected, item)) = encode_item(self.spec, record) else {
                continue;
            };
            if let Some(done) = builder.add(i, rejected, item, record.hash) {
                return Some(done);
            }
        }
        self.builder.take()?.flush()
    }
}

struct BatchBuilder {
    header: BatchHeader,
    limits: BatchLimits,
    next_sequence: u32,
    records: Vec<String>,
    /// The content hashes of `records`, for the header's digest.
    hashes: Vec<ContentHash>,
    rejected: Vec<String>,
    members: Vec<usize>,
    bytes: usize,
}

/// Bytes of `{"header":…,"records":[],"rejected":[]}` around the items, bar the header.
const ENVELOPE_BYTES: usize = 40;

impl BatchBuilder {
    fn new(header: BatchHeader, first_sequence: u32, limits: BatchLimits) -> Self {
        Self {
            header,
            limits,
            next_sequence: first_sequence,
            records: Vec::new(),
            hashes: Vec::new(),
            rejected: Vec::new(),
            members: Vec::new(),
            bytes: 0,
        }
    }

    fn header_bytes(&self) -> usize {
        // The header is small and of near-constant size (the digest included); a generous bound
        // keeps the sum honest.
        ENVELOPE_BYTES + 400 + self.header.app.len() + self.header.spec_version.len()
    }

    fn add(
        &mut self,
        index: usize,
        rejected: bool,
        item: String,
        hash: ContentHash,
    ) -> Option<EncodedBatch> {
        let added = item.len() + 1;
        let full = !self.members.is_empty()
            && (self.members.len() >= self.limits.max_records
                || self.header_bytes() + self.bytes + added > self.limits.max_bytes);
        let done = if full { self.flush() } else { None };
        self.bytes += added;
        self.members.push(index);
        if rejected {
            self.rejected.push(item);
        } else {
            self.records.push(item);
            self.hashes.push(hash);
        }
        done
    }

    fn flush(&mut self) -> Option<EncodedBatch> {
        if self.members.is_empty() {
            return None;
        }
        let mut header = self.header.clone();
        header.sequence = self.next_sequence;
        header.digest = Some(records_digest(&self.hashes));
        self.next_sequence += 1;
        let header_json = serde_json::to_string(&header).unwrap_or_default();
        let mut body = String::with_capacity(header_json.len() + self.bytes + ENVELOPE_BYTES);
        body.push_str("{\"header\":");
        body.push_str(&header_json);
        body.push_str(",\"records\":[");
        push_items(&mut body, &mut self.records);
        body.push_str("],\"rejected\":[");
        push_items(&mut body, &mut self.rejected);
        body.push_str("]}");
        self.hashes.clear();
        self.bytes = 0;
        Some(EncodedBatch {
            sequence: header.sequence,
            body: body.into_bytes(),
            members: std::mem::take(&mut self.members),
        })
    }
}

/// Appends `items` comma-separated, each let go once copied: no joined copy of a batch.
fn push_items(body: &mut String, items: &mut Vec<String>) {
    for (n, item) in items.drain(..).enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(&item);
    }
}
