//! The record pipeline: raw localStorage `(key, value)` pairs in, one outcome per record out.
//!
//! Pure functions, run identically in the browser and on the server:
//!
//! 1. [`inventory`]: which keys belong to which kind, which keys are unknown, how many bytes.
//! 2. [`process`]: parse every known key (JSON, with the [lossless](crate::lossless) rule),
//!    split it into records per the kind's source, and give every record an [`Outcome`]:
//!    valid, repaired (with what was repaired), or rejected (with every reason). A value that
//!    is not even JSON is a rejected record too. Nothing is dropped: a rejected record keeps
//!    its raw value so the server can quarantine it. The steps are functions: [`process_key`]
//!    parses a key, `split_records` splits it, [`process_record`] reads a record's id and
//!    transforms its fields (`transform_fields`), each converted by the step named after its
//!    type (`convert_string`, `convert_timestamp`, …).
//! 3. Duplicates: two records of a kind with the same target id are settled deterministically
//!    (see [`settle_duplicates`]).
//!
//! The server calls [`process_record`] on each record of a batch: the same function the
//! browser used, so both sides agree on ids, hashes, and outcomes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use validator::{ValidateEmail, ValidateLength, ValidateRange, ValidateRegex, ValidateUrl};

use crate::lossless::{self, LosslessString};
use crate::spec::{
    DuplicateRule, Field, FieldSource, FieldType, IdScope, IdSource, Kind, Source, Spec,
    StringRules, TimestampFormat, UnknownFields,
};
use crate::timestamp;

/// Longest value quoted in a message, in characters; longer ones are shortened with `…`.
const QUOTE_MAX: usize = 60;

/// JavaScript's largest exactly representable integer, 2^53 − 1.
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// The special `default` value of a timestamp field meaning "when the migration started".
pub const MIGRATED_AT: &str = "$migrated_at";

/// What the pipeline needs from outside: passed in, so the pipeline stays pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The stable id of this browser profile; scopes per-device ids.
    pub device_id: Uuid,
    /// When the migration started (ms since the epoch); the value of `$migrated_at` defaults.
    pub migrated_at_ms: i64,
}

// ---------------------------------------------------------------------------------------------
// Inventory.
// ---------------------------------------------------------------------------------------------

/// One localStorage key and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyStat {
    /// The key.
    pub key: LosslessString,
    /// Size of key and value in UTF-16 bytes (what the browser's quota counts).
    pub bytes: u64,
}

/// The keys of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindInventory {
    /// Kind name.
    pub kind: String,
    /// Its keys, in input order.
    pub keys: Vec<KeyStat>,
    /// Total bytes of its keys.
    pub bytes: u64,
}

/// What is in localStorage, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// One entry per kind of the spec, in spec order (kinds without keys included).
    pub kinds: Vec<KindInventory>,
    /// Keys no kind reads; left alone.
    pub unknown: Vec<KeyStat>,
    /// Total bytes of the keys the spec reads.
    pub known_bytes: u64,
}

/// Sorts the pairs by kind. Cheap: looks at keys and lengths only.
pub fn inventory(spec: &Spec, pairs: &[(LosslessString, LosslessString)]) -> Inventory {
    let mut kinds: Vec<KindInventory> = spec
        .kinds
        .iter()
        .map(|k| KindInventory {
            kind: k.name.clone(),
            keys: Vec::new(),
            bytes: 0,
        })
        .collect();
    let mut unknown = Vec::new();
    let mut known_bytes = 0;
    for (key, value) in pairs {
        let bytes = 2 * (key.utf16_len() + value.utf16_len()) as u64;
        let stat = KeyStat {
            key: key.clone(),
            bytes,
        };
        let needing = spec.kinds_needing_key(key.as_escaped());
        if needing.is_empty() {
            unknown.push(stat);
            continue;
        }
        known_bytes += bytes;
        for i in needing {
            kinds[i].bytes += bytes;
            kinds[i].keys.push(stat.clone());
        }
    }
    Inventory {
        kinds,
        unknown,
        known_bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// Records and outcomes.
// ---------------------------------------------------------------------------------------------

/// Where a record sits inside its localStorage value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Locator {
    /// The whole value is the record (object and prefix sources, or a value that is not JSON).
    Whole,
    /// The n-th element of an array source.
    Index(u32),
    /// The entry with this key in a map source.
    MapKey(LosslessString),
}

impl Locator {
    fn write_after(&self, key: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Whole => write!(f, "key {}", quote(key)),
            Self::Index(i) => write!(f, "{}[{i}]", quote(key)),
            Self::MapKey(k) => write!(f, "{}[{}]", quote(key), quote(k.as_escaped())),
        }
    }
}

/// The raw form of a record, kept for hashing, shipping and quarantine.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Raw {
    /// Canonical JSON text of the record (object keys sorted, as `serde_json` writes a `Value`).
    Json(String),
    /// A value that is not JSON, in lossless escaped form.
    Text(LosslessString),
}

impl Raw {
    /// The record as [`process_record`] takes it: the JSON parsed (by [`parse_json`]), or the
    /// text that is not JSON.
    pub fn to_input(&self) -> Result<RecordInput, serde_json::Error> {
        Ok(match self {
            Self::Json(text) => RecordInput::Json(parse_json(text)?),
            Self::Text(text) => RecordInput::Text(text.clone()),
        })
    }

    /// The text carried on the wire and stored in the quarantine.
    pub fn text(&self) -> &str {
        match self {
            Self::Json(t) => t,
            Self::Text(t) => t.as_escaped(),
        }
    }
}

/// A content hash: the first 16 bytes of SHA-256 over kind, target id (or position) and the
/// canonical raw record. Equal hashes mean the same record with the same content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 16]);

impl ContentHash {
    /// Lowercase hex, 32 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().fold(String::with_capacity(32), |mut s, b| {
            use fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// The first 16 bytes of a finished SHA-256: what every content hash and digest keeps.
    pub(crate) fn from_sha256(h: Sha256) -> Self {
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }

    /// Parses 32 lowercase or uppercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 32 hex digits"))
    }
}

/// One transformed value, ready for its column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Cell {
    /// SQL `NULL`.
    Null,
    /// `text`, in lossless escaped form.
    Text(String),
    /// `bigint`.
    Int(i64),
    /// `double precision`.
    Float(f64),
    /// `boolean`.
    Bool(bool),
    /// `timestamptz`, as milliseconds since the epoch.
    Timestamp(i64),
    /// `jsonb`, strings in lossless escaped form.
    Json(Value),
    /// `text[]`, in lossless escaped form.
    TextArray(Vec<String>),
}

impl Cell {
    /// The cell as a stored row's JSON holds it (`to_jsonb` of the row): timestamps as ISO 8601
    /// text, a non-finite float (which the engine never produces) as `null`.
    pub fn into_stored_value(self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Text(s) => Value::String(s),
            Self::Int(n) => Value::from(n),
            Self::Float(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
            Self::Bool(b) => Value::Bool(b),
            Self::Timestamp(ms) => Value::String(timestamp::format(ms)),
            Self::Json(v) => v,
            Self::TextArray(items) => Value::Array(items.into_iter().map(Value::String).collect()),
        }
    }
}

/// A record transformed into the target shape: one cell per field of the kind, in field order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The cells, aligned with [`Kind::fields`].
    pub cells: Vec<Cell>,
}

/// A machine-readable class of repair or rejection.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The value is not JSON.
    NotJson,
    /// The value or record has the wrong JSON shape (array expected, object expected, …).
    Shape,
    /// The id is missing or unusable.
    Id,
    /// A required field is missing or `null`.
    Missing,
    /// The value has the wrong type.
    Type,
    /// A `length` rule failed.
    Length,
    /// A `range` rule failed.
    Range,
    /// An `email` rule failed.
    Email,
    /// A `url` rule failed.
    Url,
    /// A `regex` rule failed.
    Regex,
    /// The value is not one of the enum's values.
    Enum,
    /// The value is not an accepted timestamp.
    Timestamp,
    /// An array has too many items.
    Items,
    /// The record has a field the spec does not allow.
    Unknown,
    /// Another record with the same id and different content was kept (or, under
    /// `duplicates: reject`, none was).
    Duplicate,
    /// A per-record key whose id the kind's `index` key does not list.
    Unlisted,
    /// A legacy enum value was mapped to its new value.
    LegacyEnum,
    /// A legacy value of a non-enum field was mapped to its new value.
    Legacy,
    /// A missing value was filled from another field.
    DefaultFrom,
    /// The value held NUL, a lone surrogate or U+FFFF and travels escaped.
    Escaped,
}

/// Why a record was rejected, or what was repaired in it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The class of problem.
    pub code: Code,
    /// The field (source property, or column) concerned, if any.
    pub field: Option<String>,
    /// A complete sentence naming key, record, field and the (shortened) value.
    pub message: String,
}

/// What happens to a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Valid as it is.
    Valid(Row),
    /// Valid after the listed repairs.
    Repaired(Row, Vec<Note>),
    /// Not migrated: goes to the quarantine with these reasons.
    Rejected(Vec<Note>),
    /// An identical copy (same id, same content) of the record at this locator; nothing to do.
    Duplicate(Locator),
}

impl Outcome {
    /// The transformed row, for valid and repaired records.
    pub fn row(&self) -> Option<&Row> {
        match self {
            Self::Valid(row) | Self::Repaired(row, _) => Some(row),
            Self::Rejected(_) | Self::Duplicate(_) => None,
        }
    }

    /// Whether the record is migrated (valid or repaired).
    pub fn is_accepted(&self) -> bool {
        self.row().is_some()
    }
}

/// One record and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Index of its kind in [`Spec::kinds`].
    pub kind: usize,
    /// The localStorage key it came from.
    pub key: LosslessString,
    /// Where in the key's value.
    pub locator: Locator,
    /// The legacy id as found (text), if one could be read.
    pub legacy_id: Option<LosslessString>,
    /// The deterministic target id, if a legacy id could be read.
    pub id: Option<Uuid>,
    /// The raw record.
    pub raw: Raw,
    /// The content hash.
    pub hash: ContentHash,
    /// The `updated_at` value, when the kind has one and the record is accepted (used to settle
    /// duplicates and by the `newest` policy).
    pub updated_at_ms: Option<i64>,
    /// What happens to it.
    pub outcome: Outcome,
}

/// Counts of outcomes for one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
pub struct KindSummary {
    /// Kind name.
    pub kind: String,
    /// Valid records.
    pub valid: u64,
    /// Repaired records.
    pub repaired: u64,
    /// Rejected records.
    pub rejected: u64,
    /// Identical duplicates.
    pub duplicates: u64,
}

/// Counts outcomes per kind, in spec order.
pub fn summarize(spec: &Spec, records: &[Record]) -> Vec<KindSummary> {
    let mut out: Vec<KindSummary> = spec
        .kinds
        .iter()
        .map(|k| KindSummary {
            kind: k.name.clone(),
            ..KindSummary::default()
        })
        .collect();
    for r in records {
        let s = &mut out[r.kind];
        match r.outcome {
            Outcome::Valid(_) => s.valid += 1,
            Outcome::Repaired(..) => s.repaired += 1,
            Outcome::Rejected(_) => s.rejected += 1,
            Outcome::Duplicate(_) => s.duplicates += 1,
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Processing.
// ---------------------------------------------------------------------------------------------

/// Runs the whole pipeline over localStorage pairs: every record of every known key, with
/// duplicates settled. Unknown keys are skipped (see [`inventory`]).
pub fn process(
    spec: &Spec,
    pairs: &[(LosslessString, LosslessString)],
    ctx: &Context,
) -> Vec<Record> {
    process_keeping(spec, pairs, ctx, Keep::All)
}

/// What [`process_keeping`] keeps of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Everything, rows and repair notes included (the server writes rows; tests read them).
    All,
    /// What the browser ships: each record's raw form, id, hash, outcome and rejection
    /// reasons. An accepted record's [`Row`] is left empty and a repaired one's repair notes
    /// out, as each record is made, so a user's rows never pile up in memory (4 MB for the
    /// 5 MB sample). Duplicate ids are settled on rows derived again from the raw records.
    Shipping,
}

impl Keep {
    /// Trims one record to what this keeps.
    pub fn trim(self, record: &mut Record) {
        if self == Self::All {
            return;
        }
        match &mut record.outcome {
            Outcome::Valid(row) => row.cells = Vec::new(),
            Outcome::Repaired(row, notes) => {
                row.cells = Vec::new();
                *notes = Vec::new();
            }
            Outcome::Rejected(_) | Outcome::Duplicate(_) => {}
        }
    }
}

/// [`process`], keeping what `keep` says of each record.
pub fn process_keeping(
    spec: &Spec,
    pairs: &[(LosslessString, LosslessString)],
    ctx: &Context,
    keep: Keep,
) -> Vec<Record> {
    let mut records = Vec::new();
    let indexes = read_indexes(spec, pairs, &mut records);
    // Every (key, kind) to process, with an array's items found first (slices of the value,
    // not parsed yet), so that the records take one allocation of their exact number instead
    // of a vector that doubles (its old and new buffers alive at once) as they come.
    let mut work = Vec::new();
    let mut expected = 0;
    for (key, value) in pairs {
        for kind in spec.kinds_for_key(key.as_escaped()) {
            let listed = match indexes.get(&kind) {
                Some(listed) => is_listed(&spec.kinds[kind], key, listed),
                None => true,
            };
            let items = if listed {
                array_items(&spec.kinds[kind], value)
            } else {
                None
            };
            expected += items.as_ref().map_or(1, Vec::len);
            work.push((key, value, kind, listed, items));
        }
    }
    records.reserve_exact(expected);
    let mut out = Out {
        records: &mut records,
        keep,
    };
    for (key, value, kind, listed, items) in work {
        match items {
            _ if !listed => out.push(unlisted_key(spec, kind, key, value)),
            Some(items) => process_items(spec, kind, key, value, &items, ctx, &mut out),
            None => process_whole_value(spec, kind, key, value, ctx, &mut out),
        }
    }
    settle_duplicates(spec, ctx, &mut records);
    records
}

/// Where processed records go: each is trimmed to what [`Keep`] says as it arrives.
pub struct Out<'a> {
    /// The records so far.
    pub records: &'a mut Vec<Record>,
    /// What to keep of each.
    pub keep: Keep,
}

impl Out<'_> {
    fn push(&mut self, mut record: Record) {
        self.keep.trim(&mut record);
        self.records.push(record);
    }
}

/// The live ids each `index` kind's index key lists (kind index → ids as text). An index key
/// that is absent lists nothing; one that is not JSON or holds no array of ids at its path is
/// a rejected record (so it reaches the quarantine) and lists nothing.
fn read_indexes(
    spec: &Spec,
    pairs: &[(LosslessString, LosslessString)],
    out: &mut Vec<Record>,
) -> HashMap<usize, BTreeSet<String>> {
    let mut indexes = HashMap::new();
    for (i, kind) in spec.kinds.iter().enumerate() {
        let Some(index) = &kind.index else { continue };
        let mut listed = BTreeSet::new();
        if let Some((key, value)) = pairs.iter().find(|(k, _)| k.as_escaped() == index.key) {
            match index_ids(index, value) {
                Ok(ids) => listed = ids,
                Err(why) => {
                    let message = format!(
                        "index key {} of kind `{}` {why}: {}",
                        quote(&index.key),
                        kind.name,
                        quote(value.as_escaped())
                    );
                    let raw = match parse_json(value.as_escaped()) {
                        Ok(v) => Raw::Json(canonical(&v)),
                        Err(_) => Raw::Text(value.clone()),
                    };
                    out.push(rejected_key(spec, i, key, raw, Code::Shape, message));
                }
            }
        }
        indexes.insert(i, listed);
    }
    indexes
}

/// The ids an index key's value lists, as text (`7` → `"7"`), or why it lists none.
fn index_ids(
    index: &crate::spec::IndexKey,
    value: &LosslessString,
) -> Result<BTreeSet<String>, String> {
    let json = parse_json(value.as_escaped()).map_err(|e| format!("is not valid JSON ({e})"))?;
    let list = match &index.path {
        Some(p) => json.pointer(p),
        None => Some(&json),
    };
    let Some(Value::Array(items)) = list else {
        return Err(match &index.path {
            Some(p) => format!("should hold a JSON array of ids at path {}", quote(p)),
            None => "should hold a JSON array of ids".to_owned(),
        });
    };
    let mut ids = BTreeSet::new();
    for item in items {
        match item {
            Value::String(s) => ids.insert(s.clone()),
            Value::Number(n) => ids.insert(n.to_string()),
            other => return Err(format!("lists {} as an id", quote_json(other))),
        };
    }
    Ok(ids)
}

/// Whether a per-record key's suffix is one of the listed ids.
fn is_listed(kind: &Kind, key: &LosslessString, listed: &BTreeSet<String>) -> bool {
    let suffix = key
        .as_escaped()
        .get(kind.source.key().len()..)
        .unwrap_or("");
    listed.contains(suffix)
}

/// A per-record key its kind's index does not list: not migrated, kept whole in the quarantine.
fn unlisted_key(
    spec: &Spec,
    kind_index: usize,
    key: &LosslessString,
    value: &LosslessString,
) -> Record {
    let kind = &spec.kinds[kind_index];
    let index_key = kind.index.as_ref().map_or("", |i| i.key.as_str());
    let message = format!(
        "{} is not listed in index key {} of kind `{}`, so the app no longer uses it; kept in the quarantine, not migrated",
        Where::Record(key.as_escaped(), &Locator::Whole, None),
        quote(index_key),
        kind.name
    );
    let raw = match parse_json(value.as_escaped()) {
        Ok(v) => Raw::Json(canonical(&v)),
        Err(_) => Raw::Text(value.clone()),
    };
    rejected_key(spec, kind_index, key, raw, Code::Unlisted, message)
}

/// Ids an index key lists for which no per-record key exists: reported, not an error (the app
/// may list an id before writing its key). Kind index and id, in spec then id order.
pub fn listed_without_key(
    spec: &Spec,
    pairs: &[(LosslessString, LosslessString)],
) -> Vec<(usize, String)> {
    let mut scratch = Vec::new();
    let indexes = read_indexes(spec, pairs, &mut scratch);
    let mut out = Vec::new();
    for (i, kind) in spec.kinds.iter().enumerate() {
        let Some(listed) = indexes.get(&i) else {
            continue;
        };
        for id in listed {
            let key = format!("{}{id}", kind.source.key());
            if !pairs.iter().any(|(k, _)| k.as_escaped() == key) {
                out.push((i, id.clone()));
            }
        }
    }
    out
}

/// Splits one localStorage value of a kind into records and processes each: the value is
/// parsed, then split per the kind's source ([`split_records`]). A value that is not JSON is
/// one rejected record, or, for a free-form kind, one text record.
pub fn process_key(
    spec: &Spec,
    kind_index: usize,
    key: &LosslessString,
    value: &LosslessString,
    ctx: &Context,
    out: &mut Out<'_>,
) {
    match array_items(&spec.kinds[kind_index], value) {
        Some(items) => process_items(spec, kind_index, key, value, &items, ctx, out),
        None => process_whole_value(spec, kind_index, key, value, ctx, out),
    }
}

/// [`process_key`] over the parsed tree of the whole value.
fn process_whole_value(
    spec: &Spec,
    kind_index: usize,
    key: &LosslessString,
    value: &LosslessString,
    ctx: &Context,
    out: &mut Out<'_>,
) {
    let kind = &spec.kinds[kind_index];
    match parse_json(value.as_escaped()) {
        Ok(json) => split_records(spec, kind_index, key, value, json, ctx, out),
        Err(_) if accepts_any_value(kind) && matches!(kind.source, Source::Prefix(_)) => {
            // A free-form kind (custom keys): text that is not JSON is kept as a JSON string.
            out.push(process_record(
                spec,
                kind_index,
                key,
                Locator::Whole,
                RecordInput::Text(value.clone()),
                ctx,
            ));
        }
        Err(e) => {
            let message = format!(
                "{} is not valid JSON ({e}); value {}",
                Where::Record(key.as_escaped(), &Locator::Whole, None),
                quote_unless_secret(kind, value.as_escaped())
            );
            let raw = Raw::Text(value.clone());
            out.push(rejected_key(
                spec,
                kind_index,
                key,
                raw,
                Code::NotJson,
                message,
            ));
        }
    }
}

/// The items of an array-source key's value, as slices of its text: found without parsing
/// them into trees, so a key's records are made one at a time (a 2.6 MB array of tasks parsed
/// whole is a 10 MB tree, 16 MB while it grows) and counted before any is made. `None` for
/// other sources and for a value that is not a well-formed array: the whole-value path says
/// why.
fn array_items<'a>(kind: &Kind, value: &'a LosslessString) -> Option<Vec<&'a RawValue>> {
    if !matches!(kind.source, Source::Array(_)) {
        return None;
    }
    // Read from the text as it is: skipping over a string does not decode its escapes, so the
    // lone-surrogate escapes `prepare_json` rewrites are no obstacle here.
    let mut text = value.as_escaped();
    if let Some(path) = &kind.path {
        // An array inside an object (`{"state": {"todos": […]}}`, as state libraries persist
        // it), reached member by member like `Value::pointer` does (the last of two equal
        // member names, as a map keeps it). Anything else (an array index, an escaped `~` or a
        // member name that needs the lossless rule) takes the whole-value path.
        for name in path.strip_prefix('/')?.split('/') {
            if name.contains(['~', '\0', '\u{FFFF}']) {
                return None;
            }
            let members: BTreeMap<String, &RawValue> = from_whole_text(text)?;
            text = members.get(name)?.get();
        }
    }
    from_whole_text(text)
}

/// `text` read as one `T`, nothing after it.
fn from_whole_text<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let out = T::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(out)
}

/// Processes an array's items (from [`array_items`]): each is parsed by the same rule as
/// [`parse_json`] on its own and made a record, so only one item's tree is alive at a time. An
/// item that does not parse (which the whole value's parse would refuse too) drops what was
/// made and leaves the key to the whole-value path.
fn process_items(
    spec: &Spec,
    kind_index: usize,
    key: &LosslessString,
    value: &LosslessString,
    items: &[&RawValue],
    ctx: &Context,
    out: &mut Out<'_>,
) {
    let start = out.records.len();
    for (i, item) in items.iter().enumerate() {
        let Ok(item) = parse_json(item.get()) else {
            out.records.truncate(start);
            return process_whole_value(spec, kind_index, key, value, ctx, out);
        };
        let locator = Locator::Index(u32::try_from(i).unwrap_or(u32::MAX));
        out.push(process_record(
            spec,
            kind_index,
            key,
            locator,
            RecordInput::Json(item),
            ctx,
        ));
    }
}

/// Splits a key's parsed value into the kind's records (array items, map entries, or the
/// whole value) and processes each; a value that is not the kind's container is one rejected
/// record.
fn split_records(
    spec: &Spec,
    kind_index: usize,
    key: &LosslessString,
    value: &LosslessString,
    json: Value,
    ctx: &Context,
    out: &mut Out<'_>,
) {
    let kind = &spec.kinds[kind_index];
    let record = |locator: Locator, item: Value| {
        process_record(spec, kind_index, key, locator, RecordInput::Json(item), ctx)
    };
    let json = match &kind.path {
        None => json,
        // A value without the member holds no records of this kind.
        Some(path) => match json.pointer(path) {
            None => return,
            Some(inner) => inner.clone(),
        },
    };
    let at_path = kind
        .path
        .as_ref()
        .map(|p| format!(" at path {}", quote(p)))
        .unwrap_or_default();
    match (&kind.source, json) {
        (Source::Array(_), Value::Array(items)) => {
            out.records.reserve(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let locator = Locator::Index(u32::try_from(i).unwrap_or(u32::MAX));
                out.push(record(locator, item));
            }
        }
        (Source::Map(_), Value::Object(map)) => {
            out.records.reserve(map.len());
            for (map_key, item) in map {
                // Keys parsed by `parse_json` are in escaped form already.
                let map_key = LosslessString::from_escaped(map_key.clone())
                    .unwrap_or_else(|_| LosslessString::from_unicode(&map_key));
                out.push(record(Locator::MapKey(map_key), item));
            }
        }
        (Source::Object(_) | Source::Prefix(_), whole) => out.push(record(Locator::Whole, whole)),
        (source, other) => {
            let expected = match source {
                Source::Array(_) => "a JSON array of records",
                _ => "a JSON object mapping id to record",
            };
            let message = format!(
                "{}{at_path} should hold {expected}, but holds {}: {}",
                Where::Record(key.as_escaped(), &Locator::Whole, None),
                json_type(&other),
                quote_unless_secret(kind, value.as_escaped())
            );
            let raw = Raw::Json(canonical(&other));
            out.push(rejected_key(
                spec,
                kind_index,
                key,
                raw,
                Code::Shape,
                message,
            ));
        }
    }
}

/// A whole key rejected as one record, with no id: its value is not JSON, or not the kind's
/// container.
fn rejected_key(
    spec: &Spec,
    kind_index: usize,
    key: &LosslessString,
    raw: Raw,
    code: Code,
    message: String,
) -> Record {
    let kind = &spec.kinds[kind_index];
    Record {
        kind: kind_index,
        key: key.clone(),
        locator: Locator::Whole,
        legacy_id: None,
        id: None,
        hash: hash_record(
            &kind.name,
            None,
            key.as_escaped(),
            &Locator::Whole,
            raw.text(),
        ),
        raw,
        updated_at_ms: None,
        outcome: Outcome::Rejected(vec![Note {
            code,
            field: None,
            message,
        }]),
    }
}

/// A record as handed to [`process_record`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordInput {
    /// A parsed JSON record (strings in escaped form).
    Json(Value),
    /// Text that is not JSON (only free-form kinds accept it).
    Text(LosslessString),
}

/// Processes one record: reads its id, checks every field, transforms it. Collects every
/// problem rather than stopping at the first.
pub fn process_record(
    spec: &Spec,
    kind_index: usize,
    key: &LosslessString,
    locator: Locator,
    input: RecordInput,
    ctx: &Context,
) -> Record {
    let kind = &spec.kinds[kind_index];
    let key_text = key.as_escaped();
    let mut notes = Notes::default();
    let (value, raw) = match input {
        RecordInput::Json(v) => {
            // Kept until the record is shipped: without the spare capacity of a growing String.
            let mut text = canonical(&v);
            text.shrink_to_fit();
            (v, Raw::Json(text))
        }
        RecordInput::Text(t) => {
            notes.repair(
                Code::NotJson,
                None,
                format!(
                    "{} is not JSON; kept as a JSON string",
                    Where::Record(key_text, &locator, None)
                ),
            );
            (Value::String(t.as_escaped().to_owned()), Raw::Text(t))
        }
    };
    let legacy_id = read_legacy_id(kind, key_text, &locator, &value, &mut notes);
    let id = legacy_id
        .as_ref()
        .map(|legacy| target_id(spec, kind, legacy, ctx));
    let hash = hash_record(kind.identity(), id, key_text, &locator, raw.text());
    let place = Where::Record(
        key_text,
        &locator,
        legacy_id.as_ref().map(LosslessString::as_escaped),
    );
    let object = value.as_object();
    if object.is_none() && !accepts_any_value(kind) {
        notes.reject(
            Code::Shape,
            None,
            format!(
                "{place} should be a JSON object, but is {}: {}",
                json_type(&value),
                quote_unless_secret(kind, raw.text())
            ),
        );
    }
    if let Some(obj) = object.filter(|_| kind.unknown_fields == UnknownFields::Reject) {
        reject_unknown_fields(kind, obj, &place, &mut notes);
    }
    let (cells, updated_at_ms) = if object.is_some() || accepts_any_value(kind) {
        transform_fields(kind, key_text, &locator, &value, &place, ctx, &mut notes)
    } else {
        (Vec::new(), None)
    };
    let outcome = notes.into_outcome(Row { cells });
    Record {
        kind: kind_index,
        key: key.clone(),
        locator,
        legacy_id,
        id,
        raw,
        hash,
        updated_at_ms: updated_at_ms.filter(|_| outcome.is_accepted()),
        outcome,
    }
}

/// Rejects every property the spec does not know (`unknown_fields: reject`).
fn reject_unknown_fields(
    kind: &Kind,
    object: &Map<String, Value>,
    place: &Where<'_>,
    notes: &mut Notes,
) {
    for name in object.keys() {
        if !is_known_property(kind, name) {
            notes.reject(
                Code::Unknown,
                Some(name),
                format!(
                    "{place} has field {} that the spec does not allow",
                    quote(name)
                ),
            );
        }
    }
}

/// Reads and converts every field of the kind from the record (or its key, map key, or whole
/// value): the row's cells in spec order, and the `updated_at` value when it converted.
fn transform_fields(
    kind: &Kind,
    key_text: &str,
    locator: &Locator,
    value: &Value,
    place: &Where<'_>,
    ctx: &Context,
    notes: &mut Notes,
) -> (Vec<Cell>, Option<i64>) {
    let object = value.as_object();
    let suffix = match &kind.source {
        Source::Prefix(p) => key_text.get(p.len()..).unwrap_or(""),
        _ => "",
    };
    let mut cells = Vec::with_capacity(kind.fields.len());
    let mut updated_at_ms = None;
    for field in &kind.fields {
        let source_value = match &field.from {
            FieldSource::Field(p) => object
                .and_then(|o| o.get(p))
                .filter(|v| !v.is_null())
                .cloned(),
            FieldSource::Key => Some(Value::String(key_text.to_owned())),
            FieldSource::KeySuffix => Some(Value::String(suffix.to_owned())),
            FieldSource::MapKey => match locator {
                Locator::MapKey(k) => Some(Value::String(k.as_escaped().to_owned())),
                _ => None,
            },
            FieldSource::Value => Some(value.clone()),
            FieldSource::Constant => None,
        };
        let cell = field_cell(field, source_value, object, place, ctx, notes);
        if kind.updated_at.as_deref() == Some(field.column.as_str())
            && let Some(Cell::Timestamp(ms)) = &cell
        {
            updated_at_ms = Some(*ms);
        }
        cells.push(cell.unwrap_or(Cell::Null));
    }
    (cells, updated_at_ms)
}

/// Checks a spec `default` against its field's type (used by the spec checker).
pub(crate) fn check_default(field: &Field, default: &Value) -> Result<(), String> {
    if matches!(field.ty, FieldType::Timestamp(_)) && default.as_str() == Some(MIGRATED_AT) {
        return Ok(());
    }
    check_given(field, default, "the default")
}

/// Checks a value the spec gives (a `default`, a `legacy` map's value) against its field.
pub(crate) fn check_given(
    field: &Field,
    default: &Value,
    what: &'static str,
) -> Result<(), String> {
    let mut notes = Notes::default();
    let place = Where::Given(what);
    convert(field, default.clone(), &place, &mut notes);
    match notes.rejections.first() {
        Some(n) => Err(n.message.clone()),
        None => Ok(()),
    }
}

/// Checks one value of a stored row against its field with the engine's own rules, as when a
/// person edits a conflicting row by hand: `value` is in the row's shape (timestamps as ISO 8601
/// text, whatever formats the app's localStorage used) and not null. Returns the value to store
/// (a legacy enum value becomes its new value), or the first rule it breaks, quoted like every
/// engine message (`[redacted]` for sensitive fields).
pub fn check_stored_value(field: &Field, value: Value) -> Result<Value, String> {
    let mut notes = Notes::default();
    let place = Where::Given("the edited value");
    let cell = if let FieldType::Timestamp(_) = field.ty {
        convert_timestamp(
            field,
            &[TimestampFormat::Iso8601],
            value,
            &place,
            &mut notes,
        )
    } else {
        convert(field, value, &place, &mut notes)
    };
    match (notes.rejections.into_iter().next(), cell) {
        (Some(n), _) => Err(n.message),
        (None, Some(cell)) => Ok(cell.into_stored_value()),
        (None, None) => Err(format!("{place}: field `{}` has no value", field.label())),
    }
}

fn field_cell(
    field: &Field,
    source_value: Option<Value>,
    object: Option<&Map<String, Value>>,
    place: &Where<'_>,
    ctx: &Context,
    notes: &mut Notes,
) -> Option<Cell> {
    if let Some(v) = source_value {
        return convert(field, v, place, notes);
    }
    if let Some(other) = &field.default_from {
        if let Some(v) = object.and_then(|o| o.get(other)).filter(|v| !v.is_null()) {
            let before = notes.rejections.len();
            let cell = convert(field, v.clone(), place, notes);
            if notes.rejections.len() == before {
                notes.repair(
                    Code::DefaultFrom,
                    Some(field.label()),
                    format!(
                        "{place}: missing `{}` was set from `{other}`",
                        field.label()
                    ),
                );
            }
            return cell;
        }
        // Neither is there: an optional field stays NULL; the checker refused `required` here.
        return None;
    }
    if let Some(default) = &field.default {
        if default.as_str() == Some(MIGRATED_AT) {
            return Some(Cell::Timestamp(ctx.migrated_at_ms));
        }
        return convert(field, default.clone(), place, notes);
    }
    if field.required {
        notes.reject(
            Code::Missing,
            Some(field.label()),
            format!("{place}: required field `{}` is missing", field.label()),
        );
    }
    None
}

/// Converts one present, non-null value into its cell, checking every rule: one step per
/// field type, each named after it.
fn convert(field: &Field, value: Value, place: &Where<'_>, notes: &mut Notes) -> Option<Cell> {
    let value = apply_legacy(field, value, place, notes);
    match &field.ty {
        FieldType::String(rules) => convert_string(field, rules, value, place, notes),
        FieldType::Integer(range) => convert_integer(field, *range, value, place, notes),
        FieldType::Number(range) => convert_number(field, *range, value, place, notes),
        FieldType::Boolean => match value {
            Value::Bool(b) => Some(Cell::Bool(b)),
            other => wrong_type(field, "true or false", &other, place, notes),
        },
        FieldType::Timestamp(formats) => convert_timestamp(field, formats, value, place, notes),
        FieldType::Enum { values } => convert_enum(field, values, value, place, notes),
        FieldType::Json { .. } => Some(convert_json(field, value, place, notes)),
        FieldType::StringArray { items, max_items } => {
            convert_string_array(field, (items, *max_items), value, place, notes)
        }
    }
}

/// A field's value as a message quotes it: `[redacted]` when the field may hold secrets.
fn shown(field: &Field, value: &Value) -> String {
    if field.has_secrets() {
        "[redacted]".to_owned()
    } else {
        quote_json(value)
    }
}

/// Rejects a value of the wrong JSON type; `expected` says what the field takes.
fn wrong_type(
    field: &Field,
    expected: &str,
    value: &Value,
    place: &Where<'_>,
    notes: &mut Notes,
) -> Option<Cell> {
    let label = field.label();
    notes.reject(
        Code::Type,
        Some(label),
        format!(
            "{place}: field `{label}` should be {expected}, but is {}: {}",
            json_type(value),
            shown(field, value)
        ),
    );
    None
}

/// A string field: its length, email, URL and pattern rules; lossless escapes are a repair.
fn convert_string(
    field: &Field,
    rules: &StringRules,
    value: Value,
    place: &Where<'_>,
    notes: &mut Notes,
) -> Option<Cell> {
    let Value::String(s) = value else {
        return wrong_type(field, "a string", &value, place, notes);
    };
    let label = field.label();
    let ok = check_string(rules, &s, (label, label), place, field.sensitive, notes);
    note_escapes(&s, (label, label), place, notes);
    ok.then_some(Cell::Text(s))
}

/// An integer field: a whole number within JavaScript's safe range and the field's range.
fn convert_integer(
    field: &Field,
    range: Option<crate::spec::Bounds<f64>>,
    value: Value,
    place: &Where<'_>,
    notes: &mut Notes,
) -> Option<Cell> {
    let Some(n) = value.as_f64().filter(|_| value.is_number()) else {
        return wrong_type(field, "an integer", &value, place, notes);
    };
    let label = field.label();
    let int = value
        .as_i64()
        .or_else(|| (n.fract() == 0.0 && n.abs() < 9.3e18).then_some(n as i64));
    let Some(int) = int.filter(|i| i.abs() <= MAX_SAFE_INTEGER) else {
        let why = if n.fract() != 0.0 {
            "a whole number"
        } else {
            "within JavaScript's safe integer range (±2^53−1)"
        };
        notes.reject(
            Code::Type,
            Some(label),
            format!(
                "{place}: field `{label}` should be {why}, but is {}",
                shown(field, &value)
            ),
        );
        return None;
    };
    check_range(
        range,
        int as f64,
        label,
        place,
        &shown(field, &value),
        notes,
    )
    .then_some(Cell::Int(int))
}

/// A number field: any JSON number within the field's range.
fn convert_number(
    field: &Field,
    range: Option<crate::spec::Bounds<f64>>,
    value: Value,
    place: &Where<'_>,
    notes: &mut Notes,
) -> Option<Cell> {
    let Some(n) = value.as_f64().filter(|_| value.is_number()) else {
        return wrong_type(field, "a number", &value, place, notes);
    };
    check_range(range, n, field.label(), place, &shown(field, &value), notes)
        .then_some(Cell::Float(n))
}

/// A timestamp field: an ISO 8601 string or an epoch number, in one of the field's formats.
fn convert_timestamp(
    field: &Field,
    formats: &[TimestampFormat],
    value: Value,
    place: &Where<'_>,
    notes: &mut Notes,
) -> Option<Cell> {
    let parsed = match &value {
        Value::String(s) if formats.contains(&TimestampFormat::Iso8601) => {
            timestamp::parse_iso8601(s).map_err(|e| e.to_string())
        }
        Value::Number(n) if formats.contains(&TimestampFormat::EpochMs) => {
            timestamp::from_epoch(n.as_f64().unwrap_or(f64::NAN), false).map_err(|e| e.to_string())
        }
        Value::Number(n) if formats.contains(&TimestampFormat::EpochS) => {
            timestamp::from_epoch(n.as_f64().unwrap_or(f64::NAN), true).map_err(|e| e.to_string())
        }
        _ => Err(format!("expected {}", describe_formats(formats))),
    };
    match parsed {
        Ok(ms) => Some(Cell::Timestamp(ms)),
        Err(why) => {
            let label = field.label();
            notes.reject(
                Code::Timestamp,
                Some(label),
                format!(
                    "{place}: field `{label}` is not a valid timestamp ({why}): {}",
                    shown(field, &value)
                ),
            );
            None
        }
    }
}

/// A value the field's `legacy` map names becomes its new value (a repair): a string equal to
/// a key, or a number or boolean whose JSON text is the key.
fn apply_legacy(field: &Field, value: Value, place: &Where<'_>, notes: &mut Notes) -> Value {
    let text = match &value {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        _ => return value,
    };
    let Some(new) = field.legacy.get(&text) else {
        return value;
    };
    let label = field.label();
    let code = if matches!(field.ty, FieldType::Enum { .. }) {
        Code::LegacyEnum
    } else {
        Code::Legacy
    };
    notes.repair(
        code,
        Some(label),
        format!(
            "{place}: field `{label}` legacy value {} became {}",
            shown(field, &value),
            shown(field, new)
        ),
    );
    new.clone()
}

/// An enum field: one of its values (legacy values were mapped before).
fn convert_enum(
    field: &Field,
    values: &[String],
    value: Value,
    place: &Where<'_>,
    notes: &mut Notes,
) -> Option<Cell> {
    let Value::String(s) = value else {
        return wrong_type(field, "a string", &value, place, notes);
    };
    let label = field.label();
    if values.iter().any(|v| v == &s) {
        return Some(Cell::Text(s));
    }
    notes.reject(
        Code::Enum,
        Some(label),
        format!(
            "{place}: field `{label}` is {}, which is not one of {}",
            quote(&s),
            values
                .iter()
                .chain(field.legacy.keys())
                .map(|v| quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    None
}

/// A JSON field: any value, kept whole; lossless escapes inside it are a repair.
fn convert_json(field: &Field, value: Value, place: &Where<'_>, notes: &mut Notes) -> Cell {
    if contains_escapes(&value) {
        let label = field.label();
        notes.repair(
            Code::Escaped,
            Some(label),
            format!("{place}: field `{label}` holds NUL, a lone surrogate or U+FFFF; stored with the lossless escape"),
        );
    }
    Cell::Json(value)
}

/// An array-of-strings field: at most `max_items` items, each checked like a string field.
fn convert_string_array(
    field: &Field,
    (items, max_items): (&StringRules, Option<u64>),
    value: Value,
    place: &Where<'_>,
    notes: &mut Notes,
) -> Option<Cell> {
    let Value::Array(list) = value else {
        return wrong_type(field, "an array of strings", &value, place, notes);
    };
    let label = field.label();
    if let Some(max) = max_items
        && list.len() as u64 > max
    {
        notes.reject(
            Code::Items,
            Some(label),
            format!(
                "{place}: field `{label}` has {} items, more than the {max} allowed",
                list.len()
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, item) in list.into_iter().enumerate() {
        let item_label = format!("{label}[{i}]");
        match item {
            Value::String(s) => {
                ok &= check_string(items, &s, (label, &item_label), place, false, notes);
                note_escapes(&s, (label, &item_label), place, notes);
                out.push(s);
            }
            other => {
                ok = false;
                notes.reject(
                    Code::Type,
                    Some(label),
                    format!(
                        "{place}: field `{item_label}` should be a string, but is {}: {}",
                        json_type(&other),
                        quote_json(&other)
                    ),
                );
            }
        }
    }
    ok.then_some(Cell::TextArray(out))
}

/// Lets the `validator` crate count the characters of the original text (escapes excluded).
struct CharCount(u64);

impl ValidateLength<u64> for CharCount {
    fn length(&self) -> Option<u64> {
        Some(self.0)
    }
}

fn check_string(
    rules: &StringRules,
    s: &str,
    (field, label): (&str, &str),
    place: &Where<'_>,
    sensitive: bool,
    notes: &mut Notes,
) -> bool {
    let shown = || {
        if sensitive {
            "[redacted]".to_owned()
        } else {
            quote(s)
        }
    };
    let mut ok = true;
    if let Some(bounds) = rules.length {
        let escapes = s.matches(lossless::ESCAPE).count() as u64;
        let chars = s.chars().count() as u64 - 4 * escapes;
        if !CharCount(chars).validate_length(bounds.min, bounds.max, None) {
            ok = false;
            notes.reject(
                Code::Length,
                Some(field),
                format!(
                    "{place}: field `{label}` has {chars} characters, {}: {}",
                    describe_bounds(bounds.min, bounds.max, "characters"),
                    shown()
                ),
            );
        }
    }
    if rules.email && !s.validate_email() {
        ok = false;
        notes.reject(
            Code::Email,
            Some(field),
            format!(
                "{place}: field `{label}` is not an email address: {}",
                shown()
            ),
        );
    }
    if rules.url && !s.validate_url() {
        ok = false;
        notes.reject(
            Code::Url,
            Some(field),
            format!("{place}: field `{label}` is not a URL: {}", shown()),
        );
    }
    if let Some(re) = &rules.regex
        && !s.validate_regex(re)
    {
        ok = false;
        notes.reject(
            Code::Regex,
            Some(field),
            format!(
                "{place}: field `{label}` does not match the pattern {}: {}",
                quote(re.as_str()),
                shown()
            ),
        );
    }
    ok
}

fn check_range(
    range: Option<crate::spec::Bounds<f64>>,
    n: f64,
    label: &str,
    place: &Where<'_>,
    shown: &str,
    notes: &mut Notes,
) -> bool {
    let Some(bounds) = range else { return true };
    if n.validate_range(bounds.min, bounds.max, None, None) {
        return true;
    }
    notes.reject(
        Code::Range,
        Some(label),
        format!(
            "{place}: field `{label}` is {shown}, {}",
            describe_bounds(bounds.min, bounds.max, "")
        ),
    );
    false
}

fn note_escapes(s: &str, (field, label): (&str, &str), place: &Where<'_>, notes: &mut Notes) {
    if s.contains(lossless::ESCAPE) {
        notes.repair(
            Code::Escaped,
            Some(field),
            format!("{place}: field `{label}` holds NUL, a lone surrogate or U+FFFF; stored with the lossless escape"),
        );
    }
}

fn contains_escapes(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(lossless::ESCAPE),
        Value::Array(a) => a.iter().any(contains_escapes),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| k.contains(lossless::ESCAPE) || contains_escapes(v)),
        _ => false,
    }
}

fn describe_bounds<T: fmt::Display>(min: Option<T>, max: Option<T>, unit: &str) -> String {
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    match (min, max) {
        (Some(lo), Some(hi)) => format!("expected {lo} to {hi}{unit}"),
        (Some(lo), None) => format!("expected at least {lo}{unit}"),
        (None, Some(hi)) => format!("expected at most {hi}{unit}"),
        (None, None) => "expected any".to_owned(),
    }
}

fn describe_formats(formats: &[TimestampFormat]) -> String {
    formats
        .iter()
        .map(|f| match f {
            TimestampFormat::Iso8601 => "an ISO 8601 string",
            TimestampFormat::EpochMs => "epoch milliseconds",
            TimestampFormat::EpochS => "epoch seconds",
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn read_legacy_id(
    kind: &Kind,
    key: &str,
    locator: &Locator,
    value: &Value,
    notes: &mut Notes,
) -> Option<LosslessString> {
    let place = Where::Record(key, locator, None);
    let text = match &kind.id.from {
        IdSource::Field(name) => match value.get(name) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.as_i64().is_some_and(|i| i.abs() <= MAX_SAFE_INTEGER) => {
                n.to_string()
            }
            None | Some(Value::Null) => {
                notes.reject(
                    Code::Id,
                    Some(name),
                    format!("{place} has no id (field `{name}`)"),
                );
                return None;
            }
            Some(other) => {
                notes.reject(
                    Code::Id,
                    Some(name),
                    format!(
                        "{place}: id field `{name}` should be a non-empty string or a safe integer, but is {}",
                        quote_json(other)
                    ),
                );
                return None;
            }
        },
        IdSource::Key => key.to_owned(),
        IdSource::KeySuffix => key.get(kind.source.key().len()..).unwrap_or("").to_owned(),
        IdSource::MapKey => match locator {
            Locator::MapKey(k) => k.as_escaped().to_owned(),
            _ => return None,
        },
        IdSource::Singleton => kind.source.key().to_owned(),
    };
    // Strings parsed from JSON are in escaped form already.
    LosslessString::from_escaped(text).ok()
}

/// The deterministic target id of a record: the same input always gives the same id.
///
/// - singleton: UUID v5 of the kind name (one row per user);
/// - global: the legacy id itself when it is a UUID, else UUID v5 of kind and legacy id;
/// - per-device: UUID v5 of kind, device id and legacy id.
pub fn target_id(spec: &Spec, kind: &Kind, legacy: &LosslessString, ctx: &Context) -> Uuid {
    let legacy = legacy.as_escaped();
    let identity = kind.identity();
    let mut name = Vec::with_capacity(identity.len() + legacy.len() + 40);
    name.extend_from_slice(identity.as_bytes());
    name.push(0);
    match (&kind.id.from, kind.id.scope) {
        (IdSource::Singleton, _) => {}
        (_, IdScope::Global) => {
            if legacy.len() == 36
                && let Ok(u) = Uuid::try_parse(legacy)
            {
                return u;
            }
            name.extend_from_slice(legacy.as_bytes());
        }
        (_, IdScope::Device) => {
            name.extend_from_slice(ctx.device_id.as_hyphenated().to_string().as_bytes());
            name.push(0);
            name.extend_from_slice(legacy.as_bytes());
        }
    }
    Uuid::new_v5(&spec.namespace, &name)
}

pub(crate) fn hash_record(
    kind: &str,
    id: Option<Uuid>,
    key: &str,
    locator: &Locator,
    raw: &str,
) -> ContentHash {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    match id {
        // With an id, the position does not matter: a record moved within its array is unchanged.
        Some(id) => h.update(id.as_bytes()),
        None => {
            h.update(key.as_bytes());
            h.update([0]);
            match locator {
                Locator::Whole => h.update(b"$"),
                Locator::Index(i) => h.update(i.to_le_bytes()),
                Locator::MapKey(k) => h.update(k.as_escaped().as_bytes()),
            }
        }
    }
    h.update([0]);
    h.update(raw.as_bytes());
    ContentHash::from_sha256(h)
}

/// Settles records that share a target id (within a kind, or across kinds sharing a table),
/// deterministically, by the kind's `duplicates` rule: `first` / `last` keep the first / last
/// by position (the order of `records`: key order, then array index or map order), `newest`
/// the largest `updated_at` (ties: the last by position), `reject` none. Identical copies
/// (same hash) of the kept record become [`Outcome::Duplicate`] of it; the others are rejected
/// with a reason naming the kept one (or, under `reject`, every one is), so they reach the
/// quarantine.
pub fn settle_duplicates(spec: &Spec, ctx: &Context, records: &mut [Record]) {
    // Kinds writing the same rows share one identity: the first such kind's index.
    let identity: Vec<usize> = spec
        .kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let same = |o: &Kind| o.identity() == k.identity();
            spec.kinds.iter().position(same).unwrap_or(i)
        })
        .collect();
    // (identity, id, position), sorted: one flat vector, no allocation per record.
    let mut ids: Vec<(usize, Uuid, usize)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let id = r.id.filter(|_| r.outcome.is_accepted())?;
            Some((identity[r.kind], id, i))
        })
        .collect();
    ids.sort_unstable();
    let mut groups: Vec<Vec<usize>> = ids
        .chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
        .filter(|g| g.len() > 1)
        .map(|g| g.iter().map(|&(_, _, i)| i).collect())
        .collect();
    drop(ids);
    groups.sort_unstable();
    for group in groups {
        settle_group(spec, ctx, records, &group);
    }
}

/// One group of records with the same target id, in position order.
fn settle_group(spec: &Spec, ctx: &Context, records: &mut [Record], group: &[usize]) {
    let rule = spec.kinds[records[group[0]].kind].duplicates;
    let all_identical = group
        .iter()
        .all(|&i| same_content(spec, ctx, &records[group[0]], &records[i]));
    let winner = match rule {
        _ if all_identical => Some(group[0]),
        DuplicateRule::First => Some(group[0]),
        DuplicateRule::Last => group.last().copied(),
        DuplicateRule::Newest => group
            .iter()
            .copied()
            .max_by_key(|&i| (records[i].updated_at_ms, i)),
        DuplicateRule::Reject => None,
    };
    let Some(winner) = winner else {
        for &i in group {
            let r = &mut records[i];
            let place = Where::Record(
                r.key.as_escaped(),
                &r.locator,
                r.legacy_id.as_ref().map(LosslessString::as_escaped),
            );
            r.outcome = Outcome::Rejected(vec![Note {
                code: Code::Duplicate,
                field: None,
                message: format!(
                    "{place} has the same id as {} other record(s) with different content; none is migrated (`duplicates: reject`)",
                    group.len() - 1
                ),
            }]);
        }
        return;
    };
    let (w_key, w_loc) = {
        let w = &records[winner];
        (w.key.clone(), w.locator.clone())
    };
    let why = match rule {
        DuplicateRule::First => "first by position",
        DuplicateRule::Last => "last by position",
        DuplicateRule::Newest => "newer",
        DuplicateRule::Reject => "",
    };
    for &i in group {
        if i == winner {
            continue;
        }
        if same_content(spec, ctx, &records[winner], &records[i]) {
            records[i].outcome = Outcome::Duplicate(w_loc.clone());
            continue;
        }
        let r = &mut records[i];
        let place = Where::Record(
            r.key.as_escaped(),
            &r.locator,
            r.legacy_id.as_ref().map(LosslessString::as_escaped),
        );
        let winner_place = WherePlain(w_key.as_escaped(), &w_loc);
        r.outcome = Outcome::Rejected(vec![Note {
            code: Code::Duplicate,
            field: None,
            message: format!(
                "{place} has the same id as {winner_place} but different content; the other one was kept ({why})"
            ),
        }]);
    }
}

/// Whether two records with one target id carry the same content: the same raw record, or the
/// same row column by column (a record a newer app version copied under renamed properties into
/// a kind sharing the table, or one whose repairs give the same row, is the same record).
fn same_content(spec: &Spec, ctx: &Context, a: &Record, b: &Record) -> bool {
    if a.hash == b.hash {
        return true;
    }
    let (Some(x), Some(y)) = (full_row(spec, ctx, a), full_row(spec, ctx, b)) else {
        return false;
    };
    row_by_column(spec, a.kind, &x) == row_by_column(spec, b.kind, &y)
}

/// An accepted record's row: its own, or, when [`Keep::Shipping`] left it out, the row its raw
/// record gives again (the same function, so the same cells).
fn full_row<'a>(spec: &Spec, ctx: &Context, r: &'a Record) -> Option<Cow<'a, Row>> {
    let row = r.outcome.row()?;
    if row.cells.len() == spec.kinds[r.kind].fields.len() {
        return Some(Cow::Borrowed(row));
    }
    let input = r.raw.to_input().ok()?;
    let again = process_record(spec, r.kind, &r.key, r.locator.clone(), input, ctx);
    match again.outcome {
        Outcome::Valid(row) | Outcome::Repaired(row, _) => Some(Cow::Owned(row)),
        Outcome::Rejected(_) | Outcome::Duplicate(_) => None,
    }
}

/// A row's cells by column name, sorted.
fn row_by_column<'a>(spec: &'a Spec, kind: usize, row: &'a Row) -> Vec<(&'a str, &'a Cell)> {
    let mut cells: Vec<(&str, &Cell)> = spec.kinds[kind]
        .fields
        .iter()
        .map(|f| f.column.as_str())
        .zip(&row.cells)
        .collect();
    cells.sort_unstable_by_key(|&(column, _)| column);
    cells
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Notes {
    rejections: Vec<Note>,
    repairs: Vec<Note>,
}

impl Notes {
    fn reject(&mut self, code: Code, field: Option<&str>, message: String) {
        self.rejections.push(Note {
            code,
            field: field.map(str::to_owned),
            message,
        });
    }

    fn repair(&mut self, code: Code, field: Option<&str>, message: String) {
        self.repairs.push(Note {
            code,
            field: field.map(str::to_owned),
            message,
        });
    }

    fn into_outcome(self, row: Row) -> Outcome {
        if !self.rejections.is_empty() {
            Outcome::Rejected(self.rejections)
        } else if self.repairs.is_empty() {
            Outcome::Valid(row)
        } else {
            Outcome::Repaired(row, self.repairs)
        }
    }
}

/// "key "tasks"[12] (id "abc")": where a record is, for messages.
/// Where a checked value comes from, as messages name it.
enum Where<'a> {
    /// A record: its localStorage key, where in the key's value, and its id once read.
    Record(&'a str, &'a Locator, Option<&'a str>),
    /// A value given outside any record (a spec's default, a conflict's edited value).
    Given(&'static str),
}

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Record(key, locator, id) => {
                f.write_str("record ")?;
                locator.write_after(key, f)?;
                if let Some(id) = id {
                    write!(f, " (id {})", quote(id))?;
                }
                Ok(())
            }
            Self::Given(what) => f.write_str(what),
        }
    }
}

struct WherePlain<'a>(&'a str, &'a Locator);

impl fmt::Display for WherePlain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.1.write_after(self.0, f)
    }
}

/// Parses JSON text in escaped form so that every string stays in escaped form.
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&lossless::prepare_json(text))
}

/// The canonical JSON text of a value: object keys sorted, no spaces.
pub fn canonical(value: &Value) -> String {
    // Serialising a `Value` to a String cannot fail: keys are strings, numbers finite.
    serde_json::to_string(value).unwrap_or_default()
}

/// Quotes a value for a message, shortened to [`QUOTE_MAX`] characters.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(QUOTE_MAX * 4) + 2);
    out.push('"');
    let mut chars = text.chars();
    for c in chars.by_ref().take(QUOTE_MAX) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            lossless::ESCAPE => out.push_str("\\u{FFFF}"),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out.push('"');
    out
}

fn quote_json(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        other => {
            let text = canonical(other);
            let mut shortened: String = text.chars().take(QUOTE_MAX).collect();
            if shortened.len() < text.len() {
                shortened.push('…');
            }
            shortened
        }
    }
}

/// Quotes a whole raw value, unless the kind holds secrets somewhere in it: a message must
/// never carry a token, even a truncated one.
fn quote_unless_secret(kind: &Kind, text: &str) -> String {
    if kind.fields.iter().any(Field::has_secrets) {
        "[not shown: this kind holds secrets]".to_owned()
    } else {
        quote(text)
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A kind whose fields read only the key or the whole value accepts any JSON value (and text
/// that is not JSON, kept as a JSON string): free-form custom data.
fn accepts_any_value(kind: &Kind) -> bool {
    !matches!(kind.id.from, IdSource::Field(_))
        && kind
            .fields
            .iter()
            .all(|f| !matches!(f.from, FieldSource::Field(_)) && f.default_from.is_none())
}

fn is_known_property(kind: &Kind, name: &str) -> bool {
    matches!(&kind.id.from, IdSource::Field(p) if p == name)
        || kind.fields.iter().any(|f| {
            matches!(&f.from, FieldSource::Field(p) if p == name)
                || f.default_from.as_deref() == Some(name)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An array kind, at `path` when given.
    fn array_spec_at(path: Option<&str>) -> Spec {
        let mut kind = serde_json::json!({"name": "item", "source": {"array": "items"},
            "table": "items", "conflict": "skip", "id": {"from": "id", "scope": "global"},
            "fields": [{"from": "title", "column": "title", "type": "string", "length": {"max": 8}}]});
        if let Some(path) = path {
            kind["source"]["path"] = path.into();
        }
        let doc = serde_json::json!({"ferry_spec": 1, "app": "t", "version": "1", "kinds": [kind]});
        Spec::parse(&doc.to_string()).unwrap()
    }

    fn array_spec() -> Spec {
        array_spec_at(None)
    }

    fn both_paths(spec: &Spec, text: &str) -> (Vec<Record>, Vec<Record>) {
        let ctx = Context {
            device_id: Uuid::nil(),
            migrated_at_ms: 0,
        };
        let key = LosslessString::from_unicode("items");
        let value = LosslessString::from_unicode(text);
        let (mut items, mut whole) = (Vec::new(), Vec::new());
        let keep = Keep::All;
        let records = &mut items;
        process_key(spec, 0, &key, &value, &ctx, &mut Out { records, keep });
        let records = &mut whole;
        process_whole_value(spec, 0, &key, &value, &ctx, &mut Out { records, keep });
        (items, whole)
    }

    #[test]
    fn an_array_item_by_item_gives_the_records_of_the_whole_value() {
        let spec = array_spec();
        for text in [
            r#"[{"id":1,"title":"a"},{"id":"2","title":"far too long"},7,{"id":1,"title":"a"}]"#,
            r#" [ ] "#,
            r#"[{"id":1,"title":"a"},{"id":2"#,
            r#"[{"id":1,"title":"a"}] trailing"#,
            r#"{"id":1}"#,
            r#""text""#,
            r#"[{"id":1,"title":"\ud800 \u0000"}]"#,
            "not json",
        ] {
            let (items, whole) = both_paths(&spec, text);
            assert_eq!(items, whole, "{text}");
        }
        let (items, _) = both_paths(&spec, r#"[{"id":1,"title":"a"},{"id":2}]"#);
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn an_array_at_a_path_item_by_item_gives_the_records_of_the_whole_value() {
        let spec = array_spec_at(Some("/state/items"));
        let items = r#"[{"id":1,"title":"a"},{"id":2,"title":"far too long"}]"#;
        for text in [
            format!(r#"{{"state":{{"items":{items},"n":1}},"version":0}}"#),
            format!(r#"{{"state":{{"items":[]}},"state":{{"items":{items}}}}}"#),
            format!(r#"{{"state":{{"items":{items}}},"state":{{"other":1}}}}"#),
            format!(r#"{{"st\u0061te":{{"items":{items}}}}}"#),
            format!(r#"{{"state":{{"it\ud800ems":1,"items":{items}}}}}"#),
            format!(r#"{{"state":[{items}]}}"#),
            r#"{"state":{"items":{"id":1}}}"#.to_string(),
            r#"{"state":{}}"#.to_string(),
            format!(r#"{{"state":{{"items":{items}}}}} trailing"#),
            format!(r#"[{items}]"#),
        ] {
            let (items, whole) = both_paths(&spec, &text);
            assert_eq!(items, whole, "{text}");
        }
        let text = format!(r#"{{"state":{{"items":{items}}}}}"#);
        assert_eq!(both_paths(&spec, &text).0.len(), 2);
        // Paths the item-by-item reader leaves to the whole value: an index, an escaped `~`.
        for path in ["/state/0", "/st~0ate/items"] {
            let spec = array_spec_at(Some(path));
            let text = r#"{"state":[[{"id":1,"title":"a"}]],"st~ate":{"items":[{"id":2}]}}"#;
            let (items, whole) = both_paths(&spec, text);
            assert_eq!(items, whole, "{path}");
            assert_eq!(items.len(), 1, "{path}");
        }
    }

    proptest! {
        /// Any text cut or spliced from a valid array, escapes of lone surrogates and pairs
        /// included: both paths agree, broken or not.
        #[test]
        fn item_by_item_agrees_with_the_whole_value_for_any_text(
            titles in proptest::collection::vec("[a-z\\\\\"{}\\[\\],: \u{FFFF}]{0,10}", 0..6),
            edits in proptest::collection::vec((0usize..200, proptest::option::of(
                r#"[\[\]{},:"0-9a]|\\u(d800|dc00|d83d|de00|0000|ffff|00e9)|\\u[0-9a-fA-F]{4}"#
            )), 0..4),
        ) {
            let spec = array_spec();
            let items: Vec<Value> = titles
                .iter()
                .enumerate()
                .map(|(i, t)| serde_json::json!({"id": i, "title": t}))
                .collect();
            let mut text = serde_json::to_string(&items).unwrap();
            for (cut, splice) in &edits {
                let at = (*cut).min(text.len());
                if text.is_char_boundary(at) {
                    match splice {
                        Some(s) => text.insert_str(at, s),
                        None => text.truncate(at),
                    }
                }
            }
            let (items, whole) = both_paths(&spec, &text);
            prop_assert_eq!(items, whole);
            // The same text where a persisted store keeps it.
            let spec = array_spec_at(Some("/state/items"));
            let text = format!(r#"{{"version":0,"state":{{"items":{text}}}}}"#);
            let (items, whole) = both_paths(&spec, &text);
            prop_assert_eq!(items, whole);
        }
    }
}
