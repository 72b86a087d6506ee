//! The migration spec: one declarative JSON file in which an app team describes its
//! localStorage, read by both the browser migrator and the ingest server.
//!
//! The file is parsed in two steps, *parse, don't validate*: serde reads it into the raw
//! `*Doc` types (which mirror the JSON), then [`Spec::parse`] checks every rule and builds the
//! checked [`Spec`], which everything else takes. A spec with mistakes is refused with every
//! mistake listed, each naming the kind and field (see [`SpecError`]).
//!
//! The format is documented for app teams in `specs/README.md`; the two example specs in
//! `specs/` are the reference.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The spec format version this engine reads (`"ferry_spec": 1`).
pub const SPEC_FORMAT: u32 = 1;

/// Namespace under which Ferry derives deterministic UUIDs (v5) for app namespaces.
const FERRY_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_c3a2_5b7d_4e0f_9a84_1c2d_3e4f_5a6b);

// ---------------------------------------------------------------------------------------------
// The raw document, as written by an app team.
// ---------------------------------------------------------------------------------------------

// Every key an app team may write is one field below; its doc comment is the key's description
// in the JSON Schema (`json_schema`, for editors) and specs/README.md documents each key.

/// A Ferry migration spec: how one app's localStorage becomes rows of PostgreSQL tables.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "json-schema", schemars(title = "Ferry migration spec"))]
#[serde(deny_unknown_fields)]
struct SpecDoc {
    /// Where an editor finds this format's JSON Schema (`ferry-server spec schema` prints it).
    /// Ferry itself ignores it.
    #[serde(default, rename = "$schema")]
    #[allow(dead_code, reason = "for editors only; Ferry ignores it")]
    schema: Option<String>,
    /// The spec format version: always `1`.
    ferry_spec: u32,
    /// The app's name. It scopes every derived id: two apps never derive the same row id.
    app: String,
    /// This spec's version, chosen by the app team. It travels in every batch and backup; the
    /// server refuses a batch made under a version it does not have.
    version: String,
    /// Free text for people.
    #[serde(default)]
    description: Option<String>,
    /// The kinds of records: one per localStorage layout, each written into its own table.
    kinds: Vec<KindDoc>,
    /// What the backup taken before any byte leaves holds. Default: the whole origin's
    /// localStorage (Ferry's own keys aside), so a restore gives back the app as it was.
    #[serde(default)]
    backup: Option<BackupDoc>,
    /// Keys no run looks at: volatile UI state the app writes all the time (a last route, a
    /// scroll position) under a prefix a kind reads. They are never migrated, a change to them
    /// starts no run, and backups still hold them.
    #[serde(default)]
    ignore: Option<IgnoreDoc>,
}

/// Keys no run looks at (`ignore`).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct IgnoreDoc {
    /// Exact keys.
    #[serde(default)]
    keys: Vec<String>,
    /// Every key starting with one of these.
    #[serde(default)]
    prefixes: Vec<String>,
}

/// What a backup holds, when not the whole origin.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct BackupDoc {
    /// The backup holds only the keys starting with one of these prefixes (the app's own keys,
    /// when other apps share the origin), besides every key a kind reads.
    prefixes: Vec<String>,
}

/// One kind of record: where it lives in localStorage and which table it goes to.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct KindDoc {
    /// The kind's name: a lowercase identifier (a-z, 0-9, _), unique in the spec. Reports,
    /// batches and the quarantine name records by it.
    name: String,
    /// Free text for people.
    #[serde(default)]
    description: Option<String>,
    /// Which localStorage key(s) hold the records, and how.
    source: SourceDoc,
    /// How a record's id is found and turned into the row's UUID.
    id: IdDoc,
    /// The PostgreSQL table the records go to (a lowercase identifier; one kind per table
    /// unless every kind writing it says `shares_table`).
    table: String,
    /// `true` if another kind writes the same table (say it on each of them): their columns,
    /// `conflict`, `updated_at` and `duplicates` must agree, and the same legacy id from either
    /// kind is the same row. Default `false`.
    #[serde(default)]
    shares_table: bool,
    /// Which record is kept when two records of this kind (or of kinds sharing its table) have
    /// the same id and different content: `first` or `last` (by position in localStorage),
    /// `newest` (largest `updated_at`, ties by position: the later one), or `reject` (all of
    /// them go to the quarantine). Default: `newest` when `updated_at` is set, else `last`.
    #[serde(default)]
    duplicates: Option<DuplicateRule>,
    /// What happens when a row with the same `(user_id, id)` is already stored.
    conflict: ConflictPolicy,
    /// The column (a timestamp field of this kind) that says which version is newer, for the
    /// `newest` and `merge` policies.
    #[serde(default)]
    updated_at: Option<String>,
    /// What to do with record properties no field names: `ignore` (the default) or `reject`.
    #[serde(default)]
    unknown_fields: UnknownFields,
    /// The fields: each one column of the table.
    fields: Vec<FieldDoc>,
}

/// Where a kind's records are in localStorage: exactly one of the four layouts (`array`,
/// `object`, `prefix`, `map`), optionally with a `path` inside the value and, for `prefix`, an
/// `index` key listing the live ids.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct SourceDoc {
    /// One key holding a JSON array; each element is a record.
    #[serde(default)]
    array: Option<String>,
    /// One key holding one JSON value: a single record (settings, a profile).
    #[serde(default)]
    object: Option<String>,
    /// Every key starting with this prefix holds one record (`draft:1`, `draft:2`, …).
    #[serde(default)]
    prefix: Option<String>,
    /// One key holding a JSON object whose entries are the records, keyed by id.
    #[serde(default)]
    map: Option<String>,
    /// A JSON Pointer (RFC 6901, `~0` for `~`, `~1` for `/`) into the key's parsed value where
    /// the array, object or map is, e.g. `/state/items` for `{"state": {"items": [...]}}`. A
    /// value without that member holds no records of this kind.
    #[serde(default)]
    path: Option<String>,
    /// For a `prefix` source: the key holding a JSON array of the live ids (strings or
    /// numbers). Only keys `<prefix><id>` whose id is listed are migrated; the others go to the
    /// quarantine as `unlisted`.
    #[serde(default)]
    index: Option<String>,
    /// A JSON Pointer into the `index` key's value where the array of ids is (default: the
    /// whole value).
    #[serde(default)]
    index_path: Option<String>,
}

/// A record's id: where the legacy id comes from and how it becomes the row's UUID.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct IdDoc {
    /// The record property holding the legacy id, or `$key` / `$key_suffix` (prefix sources),
    /// `$map_key` (map sources), `$singleton` (object sources).
    from: String,
    /// `global` if the same legacy id on two browsers is the same record (UUIDs, names);
    /// `device` if ids are per browser (counters, `Date.now()`).
    scope: IdScope,
    /// The table's id column (type `uuid`). Default `id`.
    #[serde(default = "default_id_column")]
    column: String,
    /// A `text NOT NULL` column that keeps the legacy id as it was, if the app needs it.
    #[serde(default)]
    legacy_column: Option<String>,
}

fn default_id_column() -> String {
    "id".to_owned()
}

/// One field of a record: where its value comes from, its type and rules, and its column.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct FieldDoc {
    /// The record property the value comes from, or `$key`, `$key_suffix` (prefix sources),
    /// `$map_key` (map sources), `$value` (the whole record). Absent: the field always takes its
    /// `default` (a constant column).
    #[serde(default)]
    from: Option<String>,
    /// The table column the value goes to (a lowercase identifier).
    column: String,
    /// The value's type; it decides the column's PostgreSQL type.
    #[serde(rename = "type")]
    ty: FieldTypeDoc,
    /// A record without this field (or with `null`) is rejected. Default `false`.
    #[serde(default)]
    required: bool,
    /// The value used when the record has none; for a timestamp, `"$migrated_at"` is the
    /// moment of the migration.
    #[serde(default)]
    default: Option<Value>,
    /// When the record has no value, take the value of this other property (a repair).
    #[serde(default)]
    default_from: Option<String>,
    /// The value is a secret (a string field): encrypted at rest on the server, never quoted in
    /// a message.
    #[serde(default)]
    sensitive: bool,
    /// For a `json` field: the object keys whose string values are secrets, encrypted at rest.
    #[serde(default)]
    sensitive_keys: Vec<String>,
    /// Length in characters of a string (of each item of an array), inclusive bounds.
    #[serde(default)]
    length: Option<Bounds<u64>>,
    /// Range of an integer or number, inclusive bounds.
    #[serde(default)]
    range: Option<Bounds<f64>>,
    /// A string (each item of an array) must be an email address.
    #[serde(default)]
    email: bool,
    /// A string (each item of an array) must be a URL.
    #[serde(default)]
    url: bool,
    /// A string (each item of an array) must match this regular expression (Rust `regex`
    /// syntax; anchor it with `^…$` to match the whole value).
    #[serde(default)]
    regex: Option<String>,
    /// For an `enum` field: the allowed values.
    #[serde(default)]
    values: Vec<String>,
    /// Old values and what each becomes (a repair), for any type but `json` and `array`: each
    /// key is a legacy value's text (a string equal to it, or a number or boolean whose JSON
    /// text is it), each value a valid value of the field, e.g. `{"yes": true, "0": false}`.
    #[serde(default)]
    legacy: BTreeMap<String, Value>,
    /// For a `timestamp` field: the encodings accepted (`iso8601`, `epoch_ms`, `epoch_s`).
    #[serde(default)]
    formats: Vec<TimestampFormat>,
    /// For an `array` field: the items' type (`string`).
    #[serde(default)]
    items: Option<FieldTypeDoc>,
    /// For an `array` field: the most items allowed.
    #[serde(default)]
    max_items: Option<u64>,
}

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
enum FieldTypeDoc {
    /// Text (`text`).
    String,
    /// A whole number within ±(2^53−1) (`bigint`).
    Integer,
    /// Any finite number (`double precision`).
    Number,
    /// `true` or `false` (`boolean`).
    Boolean,
    /// A moment in time, in one of `formats` (`timestamptz`).
    Timestamp,
    /// One of `values` (`text`).
    Enum,
    /// Any JSON value, kept whole (`jsonb`).
    Json,
    /// An array of strings (`text[]`).
    Array,
}

/// Inclusive bounds of a `length` or `range` rule; either side may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "json-schema", schemars(rename = "Bounds_of_{T}"))]
#[serde(deny_unknown_fields)]
pub struct Bounds<T> {
    /// Smallest accepted value, inclusive.
    #[serde(default)]
    pub min: Option<T>,
    /// Largest accepted value, inclusive.
    #[serde(default)]
    pub max: Option<T>,
}

/// The JSON Schema of the spec format, derived from the types Ferry parses a spec into (what
/// `ferry-server spec schema` prints and `specs/ferry-spec.schema.json` holds).
#[cfg(feature = "json-schema")]
pub fn json_schema() -> Value {
    // A derived schema is plain JSON data: serialising it cannot fail.
    serde_json::to_value(schemars::schema_for!(SpecDoc)).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The checked spec.
// ---------------------------------------------------------------------------------------------

/// A checked migration spec. Built only by [`Spec::parse`], so every rule below holds.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The app's name (`"app"`).
    pub app: String,
    /// The app team's version of this spec (`"version"`); travels in every batch and backup.
    pub version: String,
    /// Free text for humans.
    pub description: Option<String>,
    /// Namespace for deterministic ids: UUID v5 of the app name under Ferry's namespace.
    pub namespace: Uuid,
    /// The record kinds, in file order.
    pub kinds: Vec<Kind>,
    /// When set, backups hold only the keys under these prefixes (and every key a kind reads);
    /// when not, the whole origin. See [`crate::backup::in_scope`].
    pub backup_prefixes: Option<Vec<String>>,
    /// Keys no run reads, fingerprints or migrates (`ignore.keys`), though backups hold them.
    pub ignore_keys: Vec<String>,
    /// Every key starting with one of these is ignored like [`Spec::ignore_keys`].
    pub ignore_prefixes: Vec<String>,
}

/// One kind of record: where it lives in localStorage, what it looks like, where it goes.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Unique name (`"tasks"`).
    pub name: String,
    /// Free text for humans.
    pub description: Option<String>,
    /// Where the records live in localStorage.
    pub source: Source,
    /// How the record's id is found and turned into the target id.
    pub id: IdRule,
    /// Target table.
    pub table: String,
    /// Another kind writes the same table (both said `shares_table`): ids are derived from the
    /// table, not the kind, and duplicates are settled across them.
    pub shares_table: bool,
    /// Where, inside each key's value, the kind's container is (a checked JSON Pointer).
    pub path: Option<String>,
    /// The key listing the live ids of a `prefix` kind, if any.
    pub index: Option<IndexKey>,
    /// Which record is kept among records with the same id and different content.
    pub duplicates: DuplicateRule,
    /// What happens when the row already exists on the server.
    pub conflict: ConflictPolicy,
    /// Column compared by the `newest` policy (a timestamp column of this kind).
    pub updated_at: Option<String>,
    /// What to do with fields the spec does not name.
    pub unknown_fields: UnknownFields,
    /// The fields, in file order.
    pub fields: Vec<Field>,
}

/// Where a kind's records live in localStorage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An exact key holding a JSON array of records.
    Array(String),
    /// An exact key holding one JSON object: one record.
    Object(String),
    /// Every key starting with this prefix holds one record; the rest of the key is `$key_suffix`.
    Prefix(String),
    /// An exact key holding a JSON object that maps id to record.
    Map(String),
}

impl Source {
    /// The exact key, or the prefix.
    pub fn key(&self) -> &str {
        match self {
            Self::Array(k) | Self::Object(k) | Self::Prefix(k) | Self::Map(k) => k,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Array(_) => "array",
            Self::Object(_) => "object",
            Self::Prefix(_) => "prefix",
            Self::Map(_) => "map",
        }
    }
}

/// The key listing the live ids of a `prefix` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKey {
    /// The localStorage key.
    pub key: String,
    /// Where in its value the array of ids is (a checked JSON Pointer), if not the whole value.
    pub path: Option<String>,
}

/// Which record is kept among records with the same id and different content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DuplicateRule {
    /// The first by position (key order, then array index or map order).
    First,
    /// The last by position.
    Last,
    /// The largest `updated_at`; among equal ones, the last by position.
    Newest,
    /// None: every one of them goes to the quarantine.
    Reject,
}

impl DuplicateRule {
    /// The rule as the spec writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Last => "last",
            Self::Newest => "newest",
            Self::Reject => "reject",
        }
    }
}

/// Where a record's legacy id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// A field of the record (string or safe integer).
    Field(String),
    /// The whole localStorage key.
    Key,
    /// The part of the key after the kind's prefix.
    KeySuffix,
    /// The key of the record in a `map` source.
    MapKey,
    /// There is one record of this kind per user (an `object` source).
    Singleton,
}

/// Whether the same legacy id on two browsers is the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum IdScope {
    /// Globally unique ids (UUIDs, ULIDs, names): the same record on two browsers meets in
    /// conflict resolution.
    Global,
    /// Per-browser ids (counters, `Date.now()`): the target id is scoped by the device id, so
    /// two different records from two browsers never collide.
    Device,
}

/// How a record's id is found and turned into the target id.
#[derive(Debug, Clone)]
pub struct IdRule {
    /// Where the legacy id comes from.
    pub from: IdSource,
    /// Global or per-device.
    pub scope: IdScope,
    /// Target column of the derived id (type `uuid`).
    pub column: String,
    /// Target column that keeps the legacy id as text, if any.
    pub legacy_column: Option<String>,
}

/// What happens when an incoming row meets a stored row with the same `(user_id, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The stored row wins.
    Skip,
    /// The incoming row wins.
    Overwrite,
    /// The row with the larger `updated_at` wins; ties go to the stored row.
    Newest,
    /// JSON object columns are merged key by key; other columns follow `newest`.
    Merge,
    /// The stored row is untouched; both versions wait in the conflicts table for the user.
    Manual,
}

impl ConflictPolicy {
    /// The policy as the spec writes it (`"newest"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Overwrite => "overwrite",
            Self::Newest => "newest",
            Self::Merge => "merge",
            Self::Manual => "manual",
        }
    }
}

/// What to do with record fields the spec does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// Ignore them (the backup still holds them); the inventory counts them.
    #[default]
    Ignore,
    /// Reject the record.
    Reject,
}

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    /// A property of the record object.
    Field(String),
    /// The whole localStorage key.
    Key,
    /// The part of the key after the kind's prefix.
    KeySuffix,
    /// The key of the record in a `map` source.
    MapKey,
    /// The whole record value, as JSON.
    Value,
    /// No source: the field always takes its default (a constant column).
    Constant,
}

/// Accepted encodings of a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// An ISO 8601 string: `2024-05-01`, `2024-05-01T10:30`, `2024-05-01T10:30:00.123Z`,
    /// `2024-05-01T10:30:00+02:00`. Without an offset the time is read as UTC.
    Iso8601,
    /// A number of milliseconds since 1970-01-01T00:00:00Z (what `Date.now()` gives).
    EpochMs,
    /// A number of seconds since 1970-01-01T00:00:00Z.
    EpochS,
}

/// A field's type and the rules checked on it.
#[derive(Debug, Clone)]
pub enum FieldType {
    /// Text (`text` column).
    String(StringRules),
    /// A whole number within JavaScript's safe range (`bigint` column).
    Integer(Option<Bounds<f64>>),
    /// A finite number (`double precision` column).
    Number(Option<Bounds<f64>>),
    /// `true` or `false` (`boolean` column).
    Boolean,
    /// A point in time (`timestamptz` column).
    Timestamp(Vec<TimestampFormat>),
    /// One of a fixed set of strings (`text` column).
    Enum {
        /// Accepted target values.
        values: Vec<String>,
    },
    /// Any JSON (`jsonb` column). `sensitive_keys` are top-level keys of an object value that
    /// hold secrets.
    Json {
        /// Top-level keys whose values are secrets.
        sensitive_keys: Vec<String>,
    },
    /// An array of strings (`text[]` column).
    StringArray {
        /// Rules checked on every item.
        items: StringRules,
        /// Largest accepted number of items.
        max_items: Option<u64>,
    },
}

/// Rules on a string value, checked with the `validator` crate.
#[derive(Debug, Clone, Default)]
pub struct StringRules {
    /// Length in Unicode characters of the original text.
    pub length: Option<Bounds<u64>>,
    /// Must be an email address.
    pub email: bool,
    /// Must be a URL.
    pub url: bool,
    /// Must match this pattern (anchor it with `^…$` to match the whole value).
    pub regex: Option<regex::Regex>,
}

/// The family of PostgreSQL types a column must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// `uuid`.
    Uuid,
    /// `text` or `varchar`.
    Text,
    /// `bigint` (or a wider integer type able to hold it).
    BigInt,
    /// `double precision`.
    Double,
    /// `boolean`.
    Boolean,
    /// `timestamptz`.
    Timestamptz,
    /// `jsonb`.
    Jsonb,
    /// `text[]`.
    TextArray,
}

/// One field of a kind: where it comes from, what it must be, where it goes.
#[derive(Debug, Clone)]
pub struct Field {
    /// Where the value comes from.
    pub from: FieldSource,
    /// Target column.
    pub column: String,
    /// Type and rules.
    pub ty: FieldType,
    /// A missing (or `null`) value rejects the record.
    pub required: bool,
    /// Value used when the field is missing or `null` (already checked against the type).
    pub default: Option<Value>,
    /// Another record property whose value is used when this one is missing (for example
    /// `updatedAt` defaulting to `createdAt`).
    pub default_from: Option<String>,
    /// The whole value is a secret: encrypted at rest, never logged or quoted.
    pub sensitive: bool,
    /// Legacy value text → the value it becomes (already checked against the type).
    pub legacy: BTreeMap<String, Value>,
}

impl Field {
    /// Whether the engine may write `NULL` into the field's column: an optional field with
    /// neither a `default` nor a `default_from`.
    pub fn may_be_null(&self) -> bool {
        !self.required && self.default.is_none() && self.default_from.is_none()
    }

    /// The target column's type family.
    pub fn column_type(&self) -> ColumnType {
        match self.ty {
            FieldType::String(_) | FieldType::Enum { .. } => ColumnType::Text,
            FieldType::Integer(_) => ColumnType::BigInt,
            FieldType::Number(_) => ColumnType::Double,
            FieldType::Boolean => ColumnType::Boolean,
            FieldType::Timestamp(_) => ColumnType::Timestamptz,
            FieldType::Json { .. } => ColumnType::Jsonb,
            FieldType::StringArray { .. } => ColumnType::TextArray,
        }
    }

    /// A short name for messages: the source property, or the column.
    pub fn label(&self) -> &str {
        match &self.from {
            FieldSource::Field(name) => name,
            _ => &self.column,
        }
    }

    /// Whether any part of the value is a secret.
    pub fn has_secrets(&self) -> bool {
        self.sensitive
            || matches!(&self.ty, FieldType::Json { sensitive_keys } if !sensitive_keys.is_empty())
    }
}

/// One expected column of a target table, for the server's schema check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedColumn {
    /// Column name.
    pub name: String,
    /// Type family.
    pub ty: ColumnType,
    /// Whether the column may hold `NULL` values from this spec.
    pub nullable: bool,
}

/// Every column a kind writes, for the server's schema check and its upsert statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedTable {
    /// Table name.
    pub table: String,
    /// The kind that writes it.
    pub kind: String,
    /// Columns, starting with `user_id` and the id column.
    pub columns: Vec<ExpectedColumn>,
}

impl Kind {
    /// The columns this kind writes, in order: `user_id`, the id column, the legacy id column
    /// (if any), then each field's column.
    pub fn expected_table(&self) -> ExpectedTable {
        let mut columns = vec![
            ExpectedColumn {
                name: "user_id".to_owned(),
                ty: ColumnType::Uuid,
                nullable: false,
            },
            ExpectedColumn {
                name: self.id.column.clone(),
                ty: ColumnType::Uuid,
                nullable: false,
            },
        ];
        if let Some(legacy) = &self.id.legacy_column {
            columns.push(ExpectedColumn {
                name: legacy.clone(),
                ty: ColumnType::Text,
                nullable: false,
            });
        }
        columns.extend(self.fields.iter().map(|f| ExpectedColumn {
            name: f.column.clone(),
            ty: f.column_type(),
            nullable: f.may_be_null(),
        }));
        ExpectedTable {
            table: self.table.clone(),
            kind: self.name.clone(),
            columns,
        }
    }

    /// The field writing `column`, if any.
    pub fn field_for_column(&self, column: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.column == column)
    }

    /// The name row ids and content hashes are derived under: the table for kinds sharing a
    /// table (so the same legacy id from either kind is the same row), else the kind's name.
    pub fn identity(&self) -> &str {
        if self.shares_table {
            &self.table
        } else {
            &self.name
        }
    }

    /// Whether `key` may hold records of this kind: the exact key, or (prefix sources) a longer
    /// key starting with the prefix that is not the kind's index key.
    pub fn reads_key(&self, key: &str) -> bool {
        match &self.source {
            Source::Prefix(p) => {
                key.len() > p.len()
                    && key.starts_with(p.as_str())
                    && self.index.as_ref().is_none_or(|i| i.key != key)
            }
            other => other.key() == key,
        }
    }
}

impl Spec {
    /// Reads and checks a spec from its JSON text. Every mistake is reported, not just the first.
    pub fn parse(json: &str) -> Result<Self, SpecError> {
        let refuse = |message: String| SpecError {
            problems: vec![SpecProblem {
                kind: None,
                field: None,
                message,
            }],
        };
        let doc: SpecDoc = serde_json::from_str(json)
            .map_err(|e| refuse(format!("not a valid spec document: {e}")))?;
        // No string of a spec may hold NUL: names, versions and properties travel in every
        // batch and in rejection reasons, and the server refuses NUL anywhere in a batch. JSON
        // text holds NUL only as the escape `\u0000`, so a spec without one (every spec in
        // practice) is not parsed a second time at the app's start-up.
        if json.contains("\\u0000")
            && let Ok(tree) = serde_json::from_str::<Value>(json)
            && let Some(at) = nul_at(&tree, "$")
        {
            return Err(refuse(format!(
                "{at} holds a NUL character, which no batch can carry: remove it"
            )));
        }
        Checker::default().check(doc)
    }

    /// The kind with this name.
    pub fn kind(&self, name: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    /// Index of the kind with this name.
    pub fn kind_index(&self, name: &str) -> Option<usize> {
        self.kinds.iter().position(|k| k.name == name)
    }

    /// The kinds whose records a localStorage key holds, in spec order: every kind naming the
    /// exact key (several may, at different `path`s), else the longest matching prefix.
    pub fn kinds_for_key(&self, key: &str) -> Vec<usize> {
        if self.ignores(key) {
            return Vec::new();
        }
        let exact: Vec<usize> = (0..self.kinds.len())
            .filter(|&i| {
                !matches!(self.kinds[i].source, Source::Prefix(_)) && self.kinds[i].reads_key(key)
            })
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        (0..self.kinds.len())
            .filter(|&i| {
                matches!(self.kinds[i].source, Source::Prefix(_)) && self.kinds[i].reads_key(key)
            })
            .max_by_key(|&i| self.kinds[i].source.key().len())
            .into_iter()
            .collect()
    }

    /// Whether the spec's `ignore` names `key`: no kind reads it, though backups hold it.
    pub fn ignores(&self, key: &str) -> bool {
        self.ignore_keys.iter().any(|k| k == key)
            || self
                .ignore_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str()))
    }

    /// The first kind whose records a key holds (see [`Spec::kinds_for_key`]).
    pub fn kind_for_key(&self, key: &str) -> Option<usize> {
        self.kinds_for_key(key).first().copied()
    }

    /// The kinds that need a key: those whose records it holds, and those whose `index` it is.
    /// The browser reads, fingerprints and backs up exactly these keys.
    pub fn kinds_needing_key(&self, key: &str) -> Vec<usize> {
        let mut kinds = self.kinds_for_key(key);
        for (i, k) in self.kinds.iter().enumerate() {
            if k.index.as_ref().is_some_and(|ix| ix.key == key) && !kinds.contains(&i) {
                kinds.push(i);
            }
        }
        kinds
    }

    /// Every table the spec writes, for the server's schema check: one per table (kinds sharing
    /// a table expect the same columns; the first of them names it).
    pub fn expected_tables(&self) -> Vec<ExpectedTable> {
        let mut tables: Vec<ExpectedTable> = Vec::new();
        for kind in &self.kinds {
            if !tables.iter().any(|t| t.table == kind.table) {
                tables.push(kind.expected_table());
            }
        }
        tables
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// A spec was refused. Lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The problems, in file order.
    pub problems: Vec<SpecProblem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the migration spec has {} problem(s):",
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// One mistake in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The kind it is in, if any.
    pub kind: Option<String>,
    /// The field (its column name) it is in, if any.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.field) {
            (Some(k), Some(c)) => write!(f, "kind `{k}`, field `{c}`: {}", self.message),
            (Some(k), None) => write!(f, "kind `{k}`: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Checker {
    problems: Vec<SpecProblem>,
    kind: Option<String>,
    field: Option<String>,
}

impl Checker {
    fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(SpecProblem {
            kind: self.kind.clone(),
            field: self.field.clone(),
            message: message.into(),
        });
    }

    fn check(mut self, doc: SpecDoc) -> Result<Spec, SpecError> {
        if doc.ferry_spec != SPEC_FORMAT {
            self.problem(format!(
                "`ferry_spec` is {}, but this version of Ferry reads format {SPEC_FORMAT}",
                doc.ferry_spec
            ));
        }
        if doc.app.trim().is_empty() {
            self.problem("`app` must name the app (it scopes every derived id)");
        }
        if doc.version.trim().is_empty() {
            self.problem("`version` must not be empty (it travels with every batch and backup)");
        }
        if doc.kinds.is_empty() {
            self.problem("`kinds` is empty: describe at least one kind of record");
        }
        let mut names = BTreeSet::new();
        let mut tables: BTreeMap<String, (String, bool)> = BTreeMap::new();
        let mut exact_keys: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut prefixes: Vec<(String, String)> = Vec::new();
        let mut kinds = Vec::with_capacity(doc.kinds.len());
        for kind_doc in doc.kinds {
            self.kind = Some(kind_doc.name.clone());
            self.field = None;
            if !is_identifier(&kind_doc.name) {
                self.problem("the kind name must be a lowercase identifier (a-z, 0-9, _)");
            }
            if !names.insert(kind_doc.name.clone()) {
                self.problem("another kind has the same name");
            }
            match tables.get(&kind_doc.table) {
                Some((other, shared)) if !(*shared && kind_doc.shares_table) => {
                    self.problem(format!(
                        "table `{}` is already written by kind `{other}`; two kinds may write one table only if both say `\"shares_table\": true`",
                        kind_doc.table
                    ));
                }
                Some(_) => {}
                None => {
                    tables.insert(
                        kind_doc.table.clone(),
                        (kind_doc.name.clone(), kind_doc.shares_table),
                    );
                }
            }
            let Some(source) = self.check_source(&kind_doc.source) else {
                continue;
            };
            let key = source.key().to_owned();
            if key.is_empty() {
                self.problem(format!(
                    "the {} source key must not be empty",
                    source.label()
                ));
            } else if let Source::Prefix(_) = source {
                for (other_kind, other) in &prefixes {
                    if other.starts_with(&key) || key.starts_with(other.as_str()) {
                        self.problem(format!(
                            "prefix `{key}` overlaps prefix `{other}` of kind `{other_kind}`: a key would belong to both"
                        ));
                    }
                }
                prefixes.push((kind_doc.name.clone(), key));
            } else if let Some(other) = exact_keys.insert(
                (
                    key.clone(),
                    kind_doc.source.path.clone().unwrap_or_default(),
                ),
                kind_doc.name.clone(),
            ) {
                self.problem(format!(
                    "key `{key}` is already read by kind `{other}` at the same `path`; kinds reading one key need different paths"
                ));
            }
            if let Some(kind) = self.check_kind(kind_doc, source) {
                kinds.push(kind);
            }
        }
        self.kind = None;
        self.field = None;
        self.check_shared_tables(&kinds);
        let backup_prefixes = doc.backup.map(|b| b.prefixes);
        if let Some(prefixes) = &backup_prefixes {
            if prefixes.is_empty() {
                self.problem(
                    "`backup.prefixes` is empty: leave `backup` out to back up the whole origin",
                );
            }
            if prefixes.iter().any(String::is_empty) {
                self.problem("`backup.prefixes` has an empty prefix, which would be the whole origin: leave `backup` out instead");
            }
        }
        let (ignore_keys, ignore_prefixes) = self.check_ignore(doc.ignore, &kinds);
        if self.problems.is_empty() {
            Ok(Spec {
                backup_prefixes,
                ignore_keys,
                ignore_prefixes,
                namespace: Uuid::new_v5(&FERRY_NAMESPACE, doc.app.as_bytes()),
                app: doc.app,
                version: doc.version,
                description: doc.description,
                kinds,
            })
        } else {
            Err(SpecError {
                problems: self.problems,
            })
        }
    }

    /// `ignore` may narrow what prefix kinds read, never take away a key a kind names exactly
    /// or an index key: those hold the records themselves or the list of live ids.
    fn check_ignore(
        &mut self,
        doc: Option<IgnoreDoc>,
        kinds: &[Kind],
    ) -> (Vec<String>, Vec<String>) {
        let Some(doc) = doc else {
            return (Vec::new(), Vec::new());
        };
        if doc.keys.is_empty() && doc.prefixes.is_empty() {
            self.problem("`ignore` names no key and no prefix: leave it out");
        }
        if doc.keys.iter().chain(&doc.prefixes).any(String::is_empty) {
            self.problem("`ignore` has an empty key or prefix, which would ignore the whole origin: remove it");
        }
        for kind in kinds {
            let named = match &kind.source {
                Source::Prefix(_) => None,
                other => Some(other.key()),
            };
            let index = kind.index.as_ref().map(|i| i.key.as_str());
            for (what, key) in [("reads", named), ("keeps its index in", index)] {
                let Some(key) = key else { continue };
                let by = doc
                    .keys
                    .iter()
                    .find(|k| k.as_str() == key)
                    .map(|k| format!("key `{k}`"))
                    .or_else(|| {
                        doc.prefixes
                            .iter()
                            .find(|p| key.starts_with(p.as_str()))
                            .map(|p| format!("prefix `{p}`"))
                    });
                if let Some(by) = by {
                    self.problem(format!(
                        "`ignore` {by} takes away key `{key}`, which kind `{}` {what}: ignore only keys no kind needs (volatile UI state under a kind's prefix)",
                        kind.name
                    ));
                }
            }
        }
        (doc.keys, doc.prefixes)
    }

    /// Exactly one layout key; `path` and `index_path` are JSON Pointers; `index` only with
    /// `prefix`. Returns the layout, with every problem noted.
    fn check_source(&mut self, doc: &SourceDoc) -> Option<Source> {
        let layouts: Vec<Source> = [
            doc.array.clone().map(Source::Array),
            doc.object.clone().map(Source::Object),
            doc.prefix.clone().map(Source::Prefix),
            doc.map.clone().map(Source::Map),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (name, pointer) in [("path", &doc.path), ("index_path", &doc.index_path)] {
            if let Some(p) = pointer
                && let Err(why) = check_pointer(p)
            {
                self.problem(format!(
                    "source `{name}` {p:?} is not a JSON Pointer: {why}"
                ));
            }
        }
        if doc.index_path.is_some() && doc.index.is_none() {
            self.problem("source `index_path` needs `index`");
        }
        if doc.index.as_deref() == Some("") {
            self.problem("source `index` must name a localStorage key");
        }
        let source = match layouts.len() {
            1 => layouts.into_iter().next(),
            0 => {
                self.problem("the source needs one of `array`, `object`, `prefix`, `map`");
                None
            }
            _ => {
                self.problem(
                    "the source has more than one of `array`, `object`, `prefix`, `map`: choose one",
                );
                None
            }
        }?;
        if doc.index.is_some() && !matches!(source, Source::Prefix(_)) {
            self.problem(format!(
                "source `index` lists the ids of per-record keys: it needs a `prefix` source, not `{}`",
                source.label()
            ));
        }
        if let (Source::Prefix(p), Some(index)) = (&source, &doc.index)
            && index == p
        {
            self.problem(format!("source `index` {index:?} is the prefix itself"));
        }
        Some(source)
    }

    /// Kinds writing one table expect the same columns, and settle rows the same way.
    fn check_shared_tables(&mut self, kinds: &[Kind]) {
        for (i, a) in kinds.iter().enumerate() {
            let Some(b) = kinds[..i].iter().find(|b| b.table == a.table) else {
                continue;
            };
            self.kind = Some(a.name.clone());
            let columns = |k: &Kind| {
                let mut c = k.expected_table().columns;
                c.sort_by(|x, y| x.name.cmp(&y.name));
                c
            };
            let (ca, cb) = (columns(a), columns(b));
            if ca != cb {
                let show = |c: &[ExpectedColumn]| {
                    c.iter()
                        .map(|c| {
                            format!(
                                "{} {:?}{}",
                                c.name,
                                c.ty,
                                if c.nullable { "" } else { " NOT NULL" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                self.problem(format!(
                    "shares table `{}` with kind `{}`, but their columns differ: ({}) vs ({})",
                    a.table,
                    b.name,
                    show(&ca),
                    show(&cb)
                ));
            }
            if a.conflict != b.conflict {
                self.problem(format!(
                    "shares table `{}` with kind `{}`, but its conflict policy `{}` is not theirs (`{}`)",
                    a.table,
                    b.name,
                    a.conflict.name(),
                    b.conflict.name()
                ));
            }
            if a.updated_at != b.updated_at {
                self.problem(format!(
                    "shares table `{}` with kind `{}`, but names another `updated_at` column",
                    a.table, b.name
                ));
            }
            if a.duplicates != b.duplicates {
                self.problem(format!(
                    "shares table `{}` with kind `{}`, but its `duplicates` rule `{}` is not theirs (`{}`)",
                    a.table,
                    b.name,
                    a.duplicates.name(),
                    b.duplicates.name()
                ));
            }
            if a.id.scope != b.id.scope {
                self.problem(format!(
                    "shares table `{}` with kind `{}`, but its id `scope` differs",
                    a.table, b.name
                ));
            }
        }
        self.kind = None;
    }

    fn check_kind(&mut self, doc: KindDoc, source: Source) -> Option<Kind> {
        let before = self.problems.len();
        if !is_identifier(&doc.table) {
            self.problem(format!(
                "table `{}` must be a lowercase SQL identifier (a-z, 0-9, _)",
                doc.table
            ));
        }
        let id = self.check_id(doc.id, &source);
        let mut columns = BTreeSet::from(["user_id".to_owned()]);
        if let Some(id) = &id {
            for c in std::iter::once(&id.column).chain(id.legacy_column.as_ref()) {
                if !is_identifier(c) {
                    self.problem(format!(
                        "id column `{c}` must be a lowercase SQL identifier"
                    ));
                }
                if !columns.insert(c.clone()) {
                    self.problem(format!("column `{c}` is written twice"));
                }
            }
        }
        let mut fields = Vec::with_capacity(doc.fields.len());
        let mut sources = BTreeSet::new();
        for field_doc in doc.fields {
            self.field = Some(field_doc.column.clone());
            if !columns.insert(field_doc.column.clone()) {
                self.problem("another field (or the id) already writes this column");
            }
            if let Some(from) = &field_doc.from
                && !from.starts_with('$')
                && !sources.insert(from.clone())
            {
                self.problem(format!("property `{from}` is read by two fields"));
            }
            if let Some(field) = self.check_field(field_doc, &source) {
                fields.push(field);
            }
        }
        self.field = None;
        let updated_at = doc.updated_at;
        match (&updated_at, doc.conflict) {
            (None, ConflictPolicy::Newest | ConflictPolicy::Merge) => self.problem(format!(
                "conflict policy `{}` needs `updated_at`: the timestamp column that says which version is newer",
                doc.conflict.name()
            )),
            (Some(col), _) => match fields.iter().find(|f| &f.column == col) {
                None => self.problem(format!("`updated_at` names column `{col}`, which no field writes")),
                Some(f) if !matches!(f.ty, FieldType::Timestamp(_)) => {
                    self.problem(format!("`updated_at` column `{col}` must be a timestamp field"))
                }
                Some(f) if f.may_be_null() => self.problem(format!(
                    "`updated_at` column `{col}` may be missing: make it required or give it a default (or `default_from`)"
                )),
                Some(_) => {}
            },
            (None, _) => {}
        }
        let duplicates = match (doc.duplicates, &updated_at) {
            (Some(DuplicateRule::Newest), None) => {
                self.problem("`duplicates: newest` needs `updated_at`: the timestamp column that says which copy is newer");
                DuplicateRule::Newest
            }
            (Some(rule), _) => rule,
            (None, Some(_)) => DuplicateRule::Newest,
            (None, None) => DuplicateRule::Last,
        };
        if doc.conflict == ConflictPolicy::Merge
            && !fields
                .iter()
                .any(|f| matches!(f.ty, FieldType::Json { .. }))
        {
            self.problem("conflict policy `merge` merges JSON object columns, but this kind has no `json` field");
        }
        if fields.is_empty() {
            self.problem("`fields` is empty: a kind must write at least one column besides its id");
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Kind {
            name: doc.name,
            description: doc.description,
            source,
            id: id?,
            table: doc.table,
            shares_table: doc.shares_table,
            path: doc.source.path,
            index: doc.source.index.map(|key| IndexKey {
                key,
                path: doc.source.index_path,
            }),
            duplicates,
            conflict: doc.conflict,
            updated_at,
            unknown_fields: doc.unknown_fields,
            fields,
        })
    }

    fn check_id(&mut self, doc: IdDoc, source: &Source) -> Option<IdRule> {
        let from = match (doc.from.as_str(), source) {
            ("$singleton", Source::Object(_)) => IdSource::Singleton,
            ("$singleton", _) => {
                self.problem(
                    "id `$singleton` is only for an `object` source (one record per user)",
                );
                return None;
            }
            (_, Source::Object(_)) => {
                self.problem(
                    "an `object` source holds one record per user: its id must be `$singleton`",
                );
                return None;
            }
            ("$key", Source::Prefix(_)) => IdSource::Key,
            ("$key_suffix", Source::Prefix(_)) => IdSource::KeySuffix,
            ("$map_key", Source::Map(_)) => IdSource::MapKey,
            (pseudo @ ("$key" | "$key_suffix" | "$map_key"), _) => {
                self.problem(format!(
                    "id `{pseudo}` does not fit a `{}` source (`$key`/`$key_suffix` need `prefix`, `$map_key` needs `map`)",
                    source.label()
                ));
                return None;
            }
            (other, _) if other.starts_with('$') || other.is_empty() => {
                self.problem(format!(
                    "id `from` is `{other}`: use a record property, `$key`, `$key_suffix`, `$map_key` or `$singleton`"
                ));
                return None;
            }
            (field, _) => IdSource::Field(field.to_owned()),
        };
        Some(IdRule {
            from,
            scope: doc.scope,
            column: doc.column,
            legacy_column: doc.legacy_column,
        })
    }

    fn check_field(&mut self, doc: FieldDoc, source: &Source) -> Option<Field> {
        let before = self.problems.len();
        if !is_identifier(&doc.column) {
            self.problem("the column must be a lowercase SQL identifier (a-z, 0-9, _)");
        }
        let from = match doc.from.as_deref() {
            None => FieldSource::Constant,
            Some("$key") => FieldSource::Key,
            Some("$key_suffix") if matches!(source, Source::Prefix(_)) => FieldSource::KeySuffix,
            Some("$map_key") if matches!(source, Source::Map(_)) => FieldSource::MapKey,
            Some("$value") => FieldSource::Value,
            Some(p @ ("$key_suffix" | "$map_key")) => {
                self.problem(format!("`{p}` does not fit a `{}` source", source.label()));
                FieldSource::Constant
            }
            Some(p) if p.starts_with('$') || p.is_empty() => {
                self.problem(format!(
                    "`from` is `{p}`: use a record property, `$key`, `$key_suffix`, `$map_key` or `$value`"
                ));
                FieldSource::Constant
            }
            Some(p) => FieldSource::Field(p.to_owned()),
        };
        if from == FieldSource::Constant && doc.default.is_none() {
            self.problem("a field without `from` is a constant column and needs a `default`");
        }
        if matches!(from, FieldSource::Value) && doc.ty != FieldTypeDoc::Json {
            self.problem("`$value` (the whole record) can only go into a `json` field");
        }
        let ty = self.check_type(&doc);
        if doc.required && (doc.default.is_some() || doc.default_from.is_some()) {
            self.problem("a required field cannot have a default: drop `required` or the default");
        }
        if doc.default.is_some() && doc.default_from.is_some() {
            self.problem("give either `default` or `default_from`, not both");
        }
        if doc
            .default_from
            .as_deref()
            .is_some_and(|p| p.starts_with('$') || p.is_empty())
        {
            self.problem("`default_from` must name a record property");
        }
        if !doc.sensitive_keys.is_empty() && doc.ty != FieldTypeDoc::Json {
            self.problem(
                "`sensitive_keys` is for `json` fields; mark other fields `sensitive: true`",
            );
        }
        if doc.sensitive && doc.ty != FieldTypeDoc::String {
            self.problem("only `string` fields can be `sensitive` (use `sensitive_keys` inside a `json` field)");
        }
        let ty = ty?;
        if let Some(default) = &doc.default {
            let probe = Field {
                from: FieldSource::Constant,
                column: doc.column.clone(),
                ty: ty.clone(),
                required: false,
                default: None,
                default_from: None,
                sensitive: false,
                legacy: BTreeMap::new(),
            };
            if let Err(reason) = crate::pipeline::check_default(&probe, default) {
                self.problem(format!(
                    "`default` {default} is not a valid value: {reason}"
                ));
            }
        }
        self.check_legacy(&doc, &ty);
        if self.problems.len() > before {
            return None;
        }
        Some(Field {
            from,
            column: doc.column,
            ty,
            required: doc.required,
            default: doc.default,
            default_from: doc.default_from,
            sensitive: doc.sensitive,
            legacy: doc.legacy,
        })
    }

    /// The field's type with its rules: rules that fit the type, bounds that make sense, and
    /// each type's own requirements.
    fn check_type(&mut self, doc: &FieldDoc) -> Option<FieldType> {
        use FieldTypeDoc as T;
        self.check_rules_fit(doc);
        let strings = self.string_rules(doc);
        Some(match doc.ty {
            T::String => FieldType::String(strings),
            T::Integer => FieldType::Integer(doc.range),
            T::Number => FieldType::Number(doc.range),
            T::Boolean => FieldType::Boolean,
            T::Timestamp => self.timestamp_type(doc),
            T::Enum => self.enum_type(doc),
            T::Json => FieldType::Json {
                sensitive_keys: doc.sensitive_keys.clone(),
            },
            T::Array => self.array_type(doc, strings),
        })
    }

    /// Every rule must apply to the field's type, and its bounds must make sense.
    fn check_rules_fit(&mut self, doc: &FieldDoc) {
        use FieldTypeDoc as T;
        let ty = doc.ty;
        let misplaced = |checker: &mut Self, present: bool, rule: &str, fits: &[FieldTypeDoc]| {
            if present && !fits.contains(&ty) {
                checker.problem(format!(
                    "rule `{rule}` does not apply to a `{}` field",
                    type_name(ty)
                ));
            }
        };
        misplaced(self, doc.length.is_some(), "length", &[T::String, T::Array]);
        misplaced(self, doc.range.is_some(), "range", &[T::Integer, T::Number]);
        misplaced(self, doc.email, "email", &[T::String, T::Array]);
        misplaced(self, doc.url, "url", &[T::String, T::Array]);
        misplaced(self, doc.regex.is_some(), "regex", &[T::String, T::Array]);
        misplaced(self, !doc.values.is_empty(), "values", &[T::Enum]);
        misplaced(
            self,
            !doc.legacy.is_empty(),
            "legacy",
            &[
                T::String,
                T::Integer,
                T::Number,
                T::Boolean,
                T::Timestamp,
                T::Enum,
            ],
        );
        misplaced(self, !doc.formats.is_empty(), "formats", &[T::Timestamp]);
        misplaced(self, doc.items.is_some(), "items", &[T::Array]);
        misplaced(self, doc.max_items.is_some(), "max_items", &[T::Array]);
        if let Some(Bounds {
            min: Some(lo),
            max: Some(hi),
        }) = doc.length
            && lo > hi
        {
            self.problem(format!("`length` min {lo} is greater than max {hi}"));
        }
        if let Some(Bounds { min, max }) = doc.range {
            if min.zip(max).is_some_and(|(lo, hi)| lo > hi) {
                self.problem("`range` min is greater than max");
            }
            if min.into_iter().chain(max).any(|v| !v.is_finite()) {
                self.problem("`range` bounds must be finite numbers");
            }
        }
    }

    /// The string rules (for a string field, or each item of an array); the regex must compile.
    fn string_rules(&mut self, doc: &FieldDoc) -> StringRules {
        let regex = match &doc.regex {
            Some(pattern) => match regex::Regex::new(pattern) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.problem(format!("`regex` {pattern:?} does not compile: {e}"));
                    None
                }
            },
            None => None,
        };
        StringRules {
            length: doc.length,
            email: doc.email,
            url: doc.url,
            regex,
        }
    }

    /// A timestamp field says its formats, and not both epoch units.
    fn timestamp_type(&mut self, doc: &FieldDoc) -> FieldType {
        if doc.formats.is_empty() && doc.from.is_some() {
            self.problem(
                "a timestamp field must say its `formats`: any of `iso8601`, `epoch_ms`, `epoch_s`",
            );
        }
        if doc.formats.contains(&TimestampFormat::EpochMs)
            && doc.formats.contains(&TimestampFormat::EpochS)
        {
            self.problem(
                "`epoch_ms` and `epoch_s` together are ambiguous for a number: choose one",
            );
        }
        FieldType::Timestamp(doc.formats.clone())
    }

    /// An enum field lists distinct values, and maps legacy values only to them.
    fn enum_type(&mut self, doc: &FieldDoc) -> FieldType {
        if doc.values.is_empty() {
            self.problem("an enum field must list its `values`");
        }
        let values: BTreeSet<&String> = doc.values.iter().collect();
        if values.len() != doc.values.len() {
            self.problem("`values` lists the same value twice");
        }
        for old in doc.legacy.keys() {
            if values.contains(old) {
                self.problem(format!(
                    "`legacy` maps `{old}`, which is already one of `values`"
                ));
            }
        }
        FieldType::Enum {
            values: doc.values.clone(),
        }
    }

    /// Every value a `legacy` map gives must be valid for the field (type and rules).
    fn check_legacy(&mut self, doc: &FieldDoc, ty: &FieldType) {
        let probe = Field {
            from: FieldSource::Constant,
            column: doc.column.clone(),
            ty: ty.clone(),
            required: false,
            default: None,
            default_from: None,
            sensitive: false,
            legacy: BTreeMap::new(),
        };
        for (old, new) in &doc.legacy {
            if let Err(reason) = crate::pipeline::check_given(&probe, new, "the value") {
                let shown = new.as_str().map_or_else(|| new.to_string(), str::to_owned);
                self.problem(format!(
                    "`legacy` maps `{old}` to `{shown}`, which is not a valid value: {reason}"
                ));
            }
        }
    }

    /// An array field holds strings, each checked with `items`' rules.
    fn array_type(&mut self, doc: &FieldDoc, items: StringRules) -> FieldType {
        match doc.items {
            Some(FieldTypeDoc::String) => {}
            None => self.problem("an array field must say its `items` type (`string`)"),
            Some(other) => self.problem(format!(
                "array items of type `{}` are not supported: use `string` items, or a `json` field",
                type_name(other)
            )),
        }
        FieldType::StringArray {
            items,
            max_items: doc.max_items,
        }
    }
}

/// A JSON Pointer (RFC 6901): empty, or `/`-separated tokens where `~` is followed by `0` or `1`.
fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Err("it is empty; leave `path` out to use the whole value".to_owned());
    }
    if !pointer.starts_with('/') {
        return Err("it must start with `/`".to_owned());
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("`~` must be followed by `0` (for `~`) or `1` (for `/`)".to_owned());
        }
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

fn type_name(ty: FieldTypeDoc) -> &'static str {
    match ty {
        FieldTypeDoc::String => "string",
        FieldTypeDoc::Integer => "integer",
        FieldTypeDoc::Number => "number",
        FieldTypeDoc::Boolean => "boolean",
        FieldTypeDoc::Timestamp => "timestamp",
        FieldTypeDoc::Enum => "enum",
        FieldTypeDoc::Json => "json",
        FieldTypeDoc::Array => "array",
    }
}

/// The JSON path (`$.kinds[0].fields[3].from`) of the first string or property name in `v`
/// that holds NUL.
fn nul_at(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(text) if text.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                Some(format!("a property name in {path}"))
            } else {
                nul_at(item, &format!("{path}.{k}"))
            }
        }),
        _ => None,
    }
}
