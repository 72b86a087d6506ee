//! Does the database hold the tables and columns the server is about to write to?
//!
//! At start the server compares the expected app schema (plain data: tables, their columns
//! and a *type family* for each) with `information_schema`, and refuses to start with every
//! mismatch listed, each naming its table and column. A family is deliberately loose (`text`
//! accepts `varchar`, `timestamp` accepts both time-zone flavours, `json` accepts `jsonb`):
//! the check catches a column that cannot hold the data, not a style choice. Every app table
//! must also have the primary key `(user_id, <id column>)`, which per-user upserts rely on.
//!
//! The expectations are derived from the migration spec ([`expected_tables`], from
//! `Spec::expected_tables`): every column a kind writes, its type family, whether the spec
//! may leave it `NULL`, and what the spec knows of its values (longest text, integer range,
//! the finite set of an enum or boolean). Two more mismatches are caught because they would
//! fail every insert: a column the spec may leave empty that is `NOT NULL` in the database,
//! and a `NOT NULL` column without a default that the spec never writes. And those that would
//! refuse or change some records the spec accepts, each named with the spec's field and the
//! `ALTER TABLE` that fixes it:
//! - a `varchar(n)`/`char(n)` shorter than the longest value the spec lets through (a string
//!   field's `length.max`, an enum's longest value; unbounded otherwise);
//! - a numeric column narrower than the spec's numbers: `smallint`/`integer`/`numeric(p,s)`
//!   for an integer field whose range (every JavaScript safe integer when none is given) does
//!   not fit, `real` for any number, `numeric(p,s)` for a `number` field (it rounds);
//! - a `CHECK` on one column that refuses a value the spec writes there. PostgreSQL itself
//!   evaluates the constraint's expression (`refused_values`) on every value of a finite
//!   set (an enum's values, `true`/`false`) and on `NULL` when the spec may leave the column
//!   empty, so `status IN ('a', 'b')` missing a spec value is an error with the corrected
//!   constraint as the fix.
//!
//! They are errors, not warnings: such records would be quarantined (ingest keeps the rest of
//! the batch), and the fix is one statement. A `CHECK` Ferry cannot prove (it involves other
//! columns, or the column's values are not a finite set) is a *warning*
//! ([`SchemaMismatch::is_warning`]): the server starts, and names it in the log, since records
//! it refuses are quarantined at run time with its name. Triggers, foreign keys and domain
//! constraints are not compared: a record they refuse is quarantined with the database's
//! reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ferry_core::spec::{ColumnType, Spec};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::db::DbError;
use crate::db::sql::{quote_ident, quote_literal};

/// A family of PostgreSQL types that can hold one kind of value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFamily {
    /// `text`, `varchar`, `char`, `citext`.
    Text,
    /// `uuid`.
    Uuid,
    /// `smallint`, `integer`, `bigint`.
    Integer,
    /// An exact integer type: `smallint`, `integer`, `bigint` or `numeric`. Whether the spec's
    /// range fits the column's is checked on its own (by default every JavaScript safe integer
    /// must fit, which only `bigint` and `numeric` hold).
    BigInt,
    /// `numeric`, `real`, `double precision`.
    Number,
    /// `boolean`.
    Boolean,
    /// `timestamptz` or `timestamp`.
    Timestamp,
    /// `date`.
    Date,
    /// `jsonb` or `json`.
    Json,
    /// `bytea`.
    Bytes,
    /// An array of a text type.
    TextArray,
}

impl TypeFamily {
    /// Whether a column described by `information_schema` (`data_type`, `udt_name`) belongs here.
    pub fn accepts(self, data_type: &str, udt_name: &str) -> bool {
        match self {
            Self::Text => {
                matches!(data_type, "text" | "character varying" | "character")
                    || udt_name == "citext"
            }
            Self::Uuid => data_type == "uuid",
            Self::Integer => matches!(data_type, "smallint" | "integer" | "bigint"),
            Self::BigInt => matches!(data_type, "smallint" | "integer" | "bigint" | "numeric"),
            Self::Number => matches!(data_type, "numeric" | "real" | "double precision"),
            Self::Boolean => data_type == "boolean",
            Self::Timestamp => matches!(
                data_type,
                "timestamp with time zone" | "timestamp without time zone"
            ),
            Self::Date => data_type == "date",
            Self::Json => matches!(data_type, "jsonb" | "json"),
            Self::Bytes => data_type == "bytea",
            Self::TextArray => {
                data_type == "ARRAY"
                    && matches!(udt_name, "_text" | "_varchar" | "_bpchar" | "_citext")
            }
        }
    }
}

impl fmt::Display for TypeFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Uuid => "uuid",
            Self::Integer => "integer",
            Self::BigInt => "bigint",
            Self::Number => "numeric",
            Self::Boolean => "boolean",
            Self::Timestamp => "timestamp",
            Self::Date => "date",
            Self::Json => "json",
            Self::Bytes => "bytea",
            Self::TextArray => "text[]",
        })
    }
}

impl From<ColumnType> for TypeFamily {
    fn from(ty: ColumnType) -> Self {
        match ty {
            ColumnType::Uuid => Self::Uuid,
            ColumnType::Text => Self::Text,
            ColumnType::BigInt => Self::BigInt,
            ColumnType::Double => Self::Number,
            ColumnType::Boolean => Self::Boolean,
            ColumnType::Timestamptz => Self::Timestamp,
            ColumnType::Jsonb => Self::Json,
            ColumnType::TextArray => Self::TextArray,
        }
    }
}

/// A column the server writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedColumn {
    /// Column name.
    pub name: String,
    /// The types that can hold its values.
    pub family: TypeFamily,
    /// Whether the server may write `NULL` into it (then it must not be `NOT NULL`).
    pub may_be_null: bool,
    /// For a text column: the longest value the spec accepts, in characters; `None` when the
    /// spec sets no bound (then any `varchar(n)`/`char(n)` can refuse a value).
    pub max_chars: Option<u64>,
    /// The spec's field that writes the column (its label), for messages; `None` for the keys.
    pub field: Option<String>,
    /// For an integer column: the smallest and largest values the spec accepts; `None`: every
    /// JavaScript safe integer.
    pub integer_range: Option<(i64, i64)>,
    /// Every value the spec can write, as text, when they are a finite set (an enum's values,
    /// `true`/`false`): a `CHECK` on the column is evaluated on each.
    pub finite_values: Option<Vec<String>>,
    /// The `CHECK` expression `ferry-server spec ddl` writes for the column (lengths, ranges,
    /// items), which holds exactly the spec's rules: a check that is this one is proven.
    pub ferry_check: Option<String>,
}

impl ExpectedColumn {
    /// A column from its name and family, with nothing known of its values.
    pub fn plain(name: &str, family: TypeFamily, may_be_null: bool) -> Self {
        Self {
            name: name.to_owned(),
            family,
            may_be_null,
            max_chars: None,
            field: None,
            integer_range: None,
            finite_values: None,
            ferry_check: None,
        }
    }

    /// How messages name the spec's side: the field, or the column when no field writes it.
    fn field_label(&self) -> &str {
        self.field.as_deref().unwrap_or(&self.name)
    }

    /// The integer range the spec accepts.
    fn spec_integer_range(&self) -> (i64, i64) {
        self.integer_range
            .unwrap_or((-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER))
    }
}

/// A table the server writes to, with the columns it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTable {
    /// Table name (in the connection's current schema).
    pub name: String,
    /// The row id column; the primary key must be `(user_id, <key_column>)`.
    pub key_column: String,
    /// The columns. `user_id` and the key column (uuid) are implied when absent.
    pub columns: Vec<ExpectedColumn>,
}

impl ExpectedTable {
    /// A table from string slices, keyed by `id`, whose columns may all hold `NULL`.
    pub fn new(name: &str, columns: &[(&str, TypeFamily)]) -> Self {
        Self {
            name: name.to_owned(),
            key_column: "id".to_owned(),
            columns: columns
                .iter()
                .map(|(column, family)| ExpectedColumn::plain(column, *family, true))
                .collect(),
        }
    }

    fn columns_with_keys(&self) -> Vec<ExpectedColumn> {
        let mut columns = self.columns.clone();
        for key in [self.key_column.as_str(), "user_id"] {
            if !columns.iter().any(|c| c.name == key) {
                columns.insert(0, ExpectedColumn::plain(key, TypeFamily::Uuid, false));
            }
        }
        columns
    }
}

/// The tables the spec's kinds write, with every column's family and nullability.
pub fn expected_tables(spec: &Spec) -> Vec<ExpectedTable> {
    spec.kinds
        .iter()
        .map(|kind| {
            let table = kind.expected_table();
            ExpectedTable {
                name: table.table,
                key_column: kind.id.column.clone(),
                columns: table
                    .columns
                    .into_iter()
                    .map(|c| {
                        let field = kind.field_for_column(&c.name);
                        ExpectedColumn {
                            max_chars: field.and_then(longest_text),
                            field: field.map(|f| f.label().to_owned()),
                            integer_range: field.and_then(integer_range),
                            finite_values: field.and_then(finite_values),
                            ferry_check: field.and_then(crate::db::ddl::check_of),
                            name: c.name,
                            family: c.ty.into(),
                            may_be_null: c.nullable,
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The longest text the spec writes into the field's column, in characters: a string field's
/// `length.max` (not when sealed: ciphertext is longer), an enum's longest value; `None` when
/// unbounded. Values with lone surrogates or NUL travel escaped (5 characters for one), which
/// this bound does not count: such a value is quarantined with the database's reason.
fn longest_text(field: &ferry_core::spec::Field) -> Option<u64> {
    use ferry_core::spec::FieldType;
    match &field.ty {
        FieldType::String(rules) if !field.sensitive => rules.length.as_ref()?.max,
        FieldType::Enum { values, .. } => values
            .iter()
            .map(|v| u64::try_from(v.chars().count()).unwrap_or(u64::MAX))
            .max(),
        _ => None,
    }
}

/// The largest integer the spec's `integer` type accepts (JavaScript's safe range).
const MAX_SAFE_INTEGER: i64 = ferry_core::pipeline::MAX_SAFE_INTEGER;

/// The range of an `integer` field: its `range` rule rounded inward to whole numbers, within
/// the safe range; `None` for other types.
fn integer_range(field: &ferry_core::spec::Field) -> Option<(i64, i64)> {
    let ferry_core::spec::FieldType::Integer(bounds) = &field.ty else {
        return None;
    };
    let safe = MAX_SAFE_INTEGER as f64;
    let min = bounds
        .and_then(|b| b.min)
        .map_or(-safe, f64::ceil)
        .max(-safe);
    let max = bounds
        .and_then(|b| b.max)
        .map_or(safe, f64::floor)
        .min(safe);
    // Both are whole numbers within ±2^53, which convert to i64 exactly.
    Some((min as i64, max as i64))
}

/// Every value a field can write, as text, when they are a finite set: an enum's values,
/// `true`/`false`.
fn finite_values(field: &ferry_core::spec::Field) -> Option<Vec<String>> {
    match &field.ty {
        ferry_core::spec::FieldType::Enum { values, .. } => Some(values.clone()),
        ferry_core::spec::FieldType::Boolean => Some(vec!["true".to_owned(), "false".to_owned()]),
        _ => None,
    }
}

/// One way the database differs from what the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaMismatch {
    /// The table does not exist.
    MissingTable {
        /// Table.
        table: String,
    },
    /// The column does not exist.
    MissingColumn {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// What it should be.
        expected: TypeFamily,
    },
    /// The column's type cannot hold the values.
    WrongType {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Its type, as PostgreSQL names it.
        found: String,
        /// What it should be.
        expected: TypeFamily,
    },
    /// The primary key is not `(user_id, <id column>)`.
    WrongPrimaryKey {
        /// Table.
        table: String,
        /// Its primary key columns (empty: none).
        found: Vec<String>,
        /// The id column the spec names.
        key_column: String,
    },
    /// The column is `NOT NULL`, but the spec may leave it empty.
    NotNullable {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// The spec's field that may be absent.
        field: String,
    },
    /// A numeric column that would refuse or round numbers the spec accepts.
    NarrowNumber {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Its type, as PostgreSQL names it (`smallint`, `numeric(5,2)`, `real`).
        found: String,
        /// What the column does to some of the spec's numbers, and which field writes them.
        problem: String,
        /// The type to change it to.
        fix_type: &'static str,
    },
    /// A `CHECK` constraint on the column refuses values the spec writes there.
    CheckRefuses {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// The spec's field.
        field: String,
        /// The constraint's name.
        constraint: String,
        /// The refused values, quoted and shortened (`NULL` for an absent field).
        refused: Vec<String>,
        /// The statement that fixes it.
        fix: String,
    },
    /// A `CHECK` constraint on columns the spec writes that Ferry cannot compare with the
    /// spec. A warning: records it refuses are quarantined at run time.
    UnprovenCheck {
        /// Table.
        table: String,
        /// The constraint's name.
        constraint: String,
        /// The columns it involves.
        columns: Vec<String>,
        /// Its definition, shortened.
        definition: String,
        /// Why it cannot be compared.
        why: String,
    },
    /// A `varchar(n)`/`char(n)` column shorter than the longest value the spec accepts: the
    /// database would refuse (and quarantine) records the spec lets through.
    TooShort {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// The spec's field.
        field: String,
        /// Its length limit.
        limit: i32,
        /// The spec's longest value (`None`: unbounded).
        spec_max: Option<u64>,
    },
    /// A `NOT NULL` column without a default that the spec never writes: every insert fails.
    UnwrittenRequired {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
}

impl fmt::Display for SchemaMismatch {
    // Over 100 lines: one message per kind of mismatch, each with its fix; not steps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingTable { table } => write!(f, "table {table}: does not exist"),
            Self::MissingColumn {
                table,
                column,
                expected,
            } => write!(
                f,
                "table {table}: column {column} is missing, expected {expected}"
            ),
            Self::WrongType {
                table,
                column,
                found,
                expected,
            } => write!(
                f,
                "table {table}: column {column} is {found}, expected {expected}"
            ),
            Self::WrongPrimaryKey {
                table,
                found,
                key_column,
            } if found.is_empty() => {
                write!(
                    f,
                    "table {table}: has no primary key, expected (user_id, {key_column})"
                )
            }
            Self::WrongPrimaryKey {
                table,
                found,
                key_column,
            } => write!(
                f,
                "table {table}: primary key is ({}), expected (user_id, {key_column})",
                found.join(", ")
            ),
            Self::NotNullable {
                table,
                column,
                field,
            } => write!(
                f,
                "table {table}: column {column} is NOT NULL, but the spec may leave it empty (field `{field}` is optional without a default); every record without it would be quarantined (ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL, or make the field required or give it a default in the spec)"
            ),
            Self::NarrowNumber {
                table,
                column,
                found,
                problem,
                fix_type,
            } => write!(
                f,
                "table {table}: column {column} is {found}, which {problem} (ALTER TABLE {table} ALTER COLUMN {column} TYPE {fix_type})"
            ),
            Self::CheckRefuses {
                table,
                column,
                field,
                constraint,
                refused,
                fix,
            } => write!(
                f,
                "table {table}: CHECK {constraint} on column {column} refuses {}, which the spec's field `{field}` writes there; such records would be quarantined ({fix})",
                refused.join(", ")
            ),
            Self::UnprovenCheck {
                table,
                constraint,
                columns,
                definition,
                why,
            } => write!(
                f,
                "table {table}: CHECK {constraint} on column(s) {} ({definition}) cannot be compared with the spec ({why}); records it refuses are quarantined at run time, named by the constraint",
                columns.join(", ")
            ),
            Self::TooShort {
                table,
                column,
                field,
                limit,
                spec_max,
            } => {
                let accepts = spec_max.map_or_else(
                    || "text of any length".to_owned(),
                    |max| format!("up to {max} characters"),
                );
                write!(
                    f,
                    "table {table}: column {column} holds at most {limit} characters, but the spec's field `{field}` accepts {accepts}; records longer would be quarantined (ALTER TABLE {table} ALTER COLUMN {column} TYPE text, or set the field's length.max to {limit} in the spec)"
                )
            }
            Self::UnwrittenRequired { table, column } => write!(
                f,
                "table {table}: column {column} is NOT NULL without a default and the spec never writes it (give it a default, or write it from the spec)"
            ),
        }
    }
}

impl SchemaMismatch {
    /// Whether the server may start anyway: only for what Ferry cannot prove either way, whose
    /// refusals are quarantined at run time.
    pub fn is_warning(&self) -> bool {
        matches!(self, Self::UnprovenCheck { .. })
    }
}

/// All mismatches, one per line, for error messages.
pub fn describe_mismatches(mismatches: &[SchemaMismatch]) -> String {
    mismatches
        .iter()
        .map(|m| format!("  - {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compares `expected` with the database and returns every mismatch (empty: all good), per
/// table in order; [`SchemaMismatch::is_warning`] tells which ones may not stop the start.
pub async fn check_schema(
    client: &Client,
    expected: &[ExpectedTable],
) -> Result<Vec<SchemaMismatch>, DbError> {
    let names: Vec<&str> = expected.iter().map(|t| t.name.as_str()).collect();
    let found = FoundSchema {
        tables: existing_tables(client, &names).await?,
        columns: existing_columns(client, &names).await?,
        primary_keys: primary_keys(client, &names).await?,
        checks: check_constraints(client, &names).await?,
    };
    let mut mismatches = Vec::new();
    for table in expected {
        mismatches.extend(table_mismatches(table, &found));
        for check in found.checks.iter().filter(|c| c.table == table.name) {
            mismatches.extend(check_mismatch(client, table, &found, check).await);
        }
    }
    Ok(mismatches)
}

/// A column as `information_schema` describes it.
#[derive(Debug, Clone)]
struct FoundColumn {
    /// `data_type` (`character varying`, `numeric`, `ARRAY`, …).
    data_type: String,
    /// `udt_name` (`varchar`, `_text`, …).
    udt_name: String,
    /// Whether it is `NOT NULL`.
    not_null: bool,
    /// Whether it has a default (identity and generated columns count).
    has_default: bool,
    /// `varchar(n)`/`char(n)`'s `n`.
    char_limit: Option<i32>,
    /// `numeric(p,s)`'s `p` (and the bits of the integer types); `None` for a bare `numeric`.
    numeric_precision: Option<i32>,
    /// `numeric(p,s)`'s `s`.
    numeric_scale: Option<i32>,
}

/// A `CHECK` constraint of an expected table, as the catalog holds it.
#[derive(Debug, Clone)]
struct FoundCheck {
    /// Its table.
    table: String,
    /// Its name.
    name: String,
    /// The columns it involves.
    columns: Vec<String>,
    /// `pg_get_constraintdef`: `CHECK (…)`, for messages.
    definition: String,
    /// `pg_get_expr` of the expression alone, which PostgreSQL evaluates on the spec's values.
    expression: String,
    /// The type of its first column (`format_type`), which the values are cast to.
    column_type: String,
}

/// What the database holds of the expected tables.
struct FoundSchema {
    /// The tables that exist.
    tables: BTreeSet<String>,
    /// `(table, column)` → the column.
    columns: BTreeMap<(String, String), FoundColumn>,
    /// Table → its primary key columns, in order.
    primary_keys: BTreeMap<String, Vec<String>>,
    /// The `CHECK` constraints of the tables, by table and name.
    checks: Vec<FoundCheck>,
}

/// Which of the tables `names` exist in the connection's current schema.
async fn existing_tables(client: &Client, names: &[&str]) -> Result<BTreeSet<String>, DbError> {
    Ok(client
        .query_typed(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name::text = ANY($1)",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| DbError::query("list tables", &e))?
        .iter()
        .filter_map(|row| row.try_get(0).ok())
        .collect())
}

/// Every column of the tables `names`.
async fn existing_columns(
    client: &Client,
    names: &[&str],
) -> Result<BTreeMap<(String, String), FoundColumn>, DbError> {
    let mut columns = BTreeMap::new();
    for row in client
        .query_typed(
            "SELECT table_name::text, column_name::text, data_type::text, udt_name::text,
                    is_nullable = 'NO', column_default IS NOT NULL OR is_identity = 'YES' OR is_generated = 'ALWAYS',
                    character_maximum_length::int, numeric_precision::int, numeric_scale::int
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name::text = ANY($1)",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| DbError::query("list columns", &e))?
    {
        let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok((
                (row.try_get(0)?, row.try_get(1)?),
                FoundColumn {
                    data_type: row.try_get(2)?,
                    udt_name: row.try_get(3)?,
                    not_null: row.try_get(4)?,
                    has_default: row.try_get(5)?,
                    char_limit: row.try_get(6)?,
                    numeric_precision: row.try_get(7)?,
                    numeric_scale: row.try_get(8)?,
                },
            ))
        };
        let (key, value) = read(&row).map_err(|e| DbError::query("read a column", &e))?;
        columns.insert(key, value);
    }
    Ok(columns)
}

/// The primary key columns of the tables `names`, in key order.
async fn primary_keys(
    client: &Client,
    names: &[&str],
) -> Result<BTreeMap<String, Vec<String>>, DbError> {
    let mut primary_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in client
        .query_typed(
            "SELECT tc.table_name::text, kcu.column_name::text
             FROM information_schema.table_constraints tc
             JOIN information_schema.key_column_usage kcu
               ON kcu.constraint_schema = tc.constraint_schema
              AND kcu.constraint_name = tc.constraint_name
              AND kcu.table_name = tc.table_name
             WHERE tc.constraint_type = 'PRIMARY KEY'
               AND tc.table_schema = current_schema()
               AND tc.table_name::text = ANY($1)
             ORDER BY tc.table_name, kcu.ordinal_position",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| DbError::query("list primary keys", &e))?
    {
        if let (Ok(table), Ok(column)) = (row.try_get::<_, String>(0), row.try_get(1)) {
            primary_keys.entry(table).or_default().push(column);
        }
    }
    Ok(primary_keys)
}

/// The `CHECK` constraints of the tables `names` (on the tables themselves; domain constraints
/// are not read).
async fn check_constraints(client: &Client, names: &[&str]) -> Result<Vec<FoundCheck>, DbError> {
    let mut checks = Vec::new();
    for row in client
        .query_typed(
            "SELECT cl.relname::text, con.conname::text, pg_get_constraintdef(con.oid),
                    pg_get_expr(con.conbin, con.conrelid),
                    ARRAY(SELECT a.attname::text FROM unnest(con.conkey) AS k(n)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
                          ORDER BY k.n),
                    (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                     WHERE a.attrelid = con.conrelid AND a.attnum = con.conkey[1])
             FROM pg_constraint con
             JOIN pg_class cl ON cl.oid = con.conrelid
             JOIN pg_namespace ns ON ns.oid = cl.relnamespace
             WHERE con.contype = 'c' AND ns.nspname = current_schema()
               AND cl.relname::text = ANY($1)
             ORDER BY cl.relname, con.conname",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| DbError::query("list check constraints", &e))?
    {
        let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok(FoundCheck {
                table: row.try_get(0)?,
                name: row.try_get(1)?,
                definition: row.try_get(2)?,
                expression: row.try_get(3)?,
                columns: row.try_get(4)?,
                column_type: row.try_get::<_, Option<String>>(5)?.unwrap_or_default(),
            })
        };
        checks.push(read(&row).map_err(|e| DbError::query("read a check constraint", &e))?);
    }
    Ok(checks)
}

/// What a `CHECK` of `table` means for the spec: nothing (it involves no column the spec
/// writes, or it accepts every value the spec writes there), an error naming the values it
/// refuses, or a warning when that cannot be known. A single-column check is evaluated by
/// PostgreSQL on the spec's finite set of values (and on `NULL` when the spec may leave the
/// column empty); anything else cannot be proven.
async fn check_mismatch(
    client: &Client,
    table: &ExpectedTable,
    found: &FoundSchema,
    check: &FoundCheck,
) -> Option<SchemaMismatch> {
    let expected_columns = table.columns_with_keys();
    if !expected_columns
        .iter()
        .any(|c| check.columns.contains(&c.name))
    {
        return None;
    }
    let unproven = |why: &str| SchemaMismatch::UnprovenCheck {
        table: table.name.clone(),
        constraint: check.name.clone(),
        columns: check.columns.clone(),
        definition: shorten(&check.definition, 120),
        why: why.to_owned(),
    };
    let [only] = check.columns.as_slice() else {
        return Some(unproven("it involves more than one column"));
    };
    let column = expected_columns.iter().find(|c| &c.name == only)?;
    // A missing column or one of the wrong type is named already; its checks are compared
    // once that is fixed.
    let found_column = found
        .columns
        .get(&(table.name.clone(), column.name.clone()))
        .filter(|c| column.family.accepts(&c.data_type, &c.udt_name))?;
    if column.finite_values.is_none()
        && let Some(ours) = &column.ferry_check
        && normalized_check(client, &table.name, ours).await.as_ref() == Some(&check.expression)
    {
        return None;
    }
    let not_finite = || {
        column.finite_values.is_none().then(|| {
            unproven(&format!(
                "the values the spec writes into {} are not a finite set",
                column.name
            ))
        })
    };
    let values = probe_values(column, found_column);
    if values.is_empty() {
        return not_finite();
    }
    match refused_values(client, check, column, &values).await {
        Err(reason) => Some(unproven(&format!(
            "PostgreSQL could not evaluate it: {reason}"
        ))),
        Ok(refused) if refused.is_empty() => not_finite(),
        Ok(refused) => Some(SchemaMismatch::CheckRefuses {
            table: table.name.clone(),
            column: column.name.clone(),
            field: column.field_label().to_owned(),
            constraint: check.name.clone(),
            refused: refused.iter().map(|v| quote_value(v.as_deref())).collect(),
            fix: check_fix(&table.name, column, &check.name, &refused),
        }),
    }
}

/// `expression` as PostgreSQL prints a CHECK of `table` holding it (`pg_get_expr`), so that it
/// compares with the catalog's: added to an empty temporary copy of the table, read back, and
/// the copy dropped. `None` if PostgreSQL refuses it.
async fn normalized_check(client: &Client, table: &str, expression: &str) -> Option<String> {
    let probe = "ferry_check_probe";
    // One simple-protocol request, so one (implicit) transaction: the temporary table is
    // there for the `SELECT` even behind PgBouncer in transaction pooling mode, and is gone
    // with the transaction whatever happens.
    let messages = client
        .simple_query(&format!(
            "CREATE TEMPORARY TABLE {probe} (LIKE {table}) ON COMMIT DROP; \
             ALTER TABLE pg_temp.{probe} ADD CONSTRAINT {probe} CHECK ({expression}); \
             SELECT pg_get_expr(conbin, conrelid) FROM pg_constraint \
             WHERE conrelid = 'pg_temp.{probe}'::regclass AND conname = '{probe}'",
            table = quote_ident(table),
        ))
        .await
        .ok()?;
    messages.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    })
}

/// The values a check on `column` is evaluated on: the spec's finite set (without those
/// longer than a `varchar(n)`, named as too long already, which the cast would cut), and
/// `NULL` when the spec may leave the column empty.
fn probe_values(column: &ExpectedColumn, found: &FoundColumn) -> Vec<Option<String>> {
    let fits = |value: &&String| {
        found.char_limit.is_none_or(|limit| {
            value.chars().count() <= usize::try_from(limit).unwrap_or(usize::MAX)
        })
    };
    let mut values: Vec<Option<String>> = column
        .finite_values
        .iter()
        .flatten()
        .filter(fits)
        .cloned()
        .map(Some)
        .collect();
    if column.may_be_null {
        values.push(None);
    }
    values
}

/// A value for messages: an SQL literal, shortened, or `NULL`.
fn quote_value(value: Option<&str>) -> String {
    value.map_or_else(|| "NULL".to_owned(), |v| quote_literal(&shorten(v, 40)))
}

/// The values of `values` that `check` refuses, as PostgreSQL evaluates its expression on
/// each, cast to the column's type. A check passes when its expression is not false (`NULL`
/// passes, as in an insert). The expression comes from the database's own catalog, as
/// PostgreSQL prints it; it is what every insert into the table already runs.
async fn refused_values(
    client: &Client,
    check: &FoundCheck,
    column: &ExpectedColumn,
    values: &[Option<String>],
) -> Result<Vec<Option<String>>, String> {
    let sql = format!(
        "SELECT u.ferry_ord, ({expr}) IS NOT FALSE \
         FROM (SELECT v::{ty} AS {col}, o AS ferry_ord \
               FROM unnest($1::text[]) WITH ORDINALITY AS u0(v, o)) AS u",
        expr = check.expression,
        ty = check.column_type,
        col = quote_ident(&column.name),
    );
    let rows = client
        .query_typed(&sql, &[(&values, Type::TEXT_ARRAY)])
        .await
        .map_err(|e| {
            shorten(
                &e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
                160,
            )
        })?;
    let mut refused = Vec::new();
    for row in rows {
        let (ord, passes): (i64, bool) = (
            row.try_get(0).map_err(|e| e.to_string())?,
            row.try_get(1).map_err(|e| e.to_string())?,
        );
        let value = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| values.get(i))
            .ok_or_else(|| format!("row {ord} of {} values", values.len()))?;
        if !passes {
            refused.push(value.clone());
        }
    }
    Ok(refused)
}

/// The statement that fixes a check refusing `refused`: for an enum, the same constraint
/// with the spec's values; otherwise dropping it (or the spec changes).
fn check_fix(
    table: &str,
    column: &ExpectedColumn,
    constraint: &str,
    refused: &[Option<String>],
) -> String {
    let drop = format!(
        "ALTER TABLE {table} DROP CONSTRAINT {}",
        quote_ident(constraint)
    );
    let spec_side = if refused.iter().all(Option::is_none) {
        "or make the field required or give it a default in the spec"
    } else {
        "or remove the refused values from the spec"
    };
    match &column.finite_values {
        Some(values) if column.family == TypeFamily::Text => format!(
            "{drop}, ADD CONSTRAINT {} CHECK ({} IN ({})); {spec_side}",
            quote_ident(constraint),
            column.name,
            values
                .iter()
                .map(|v| quote_literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!("{drop}; {spec_side}"),
    }
}

/// `text` cut to `max` characters, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// Every way the database's `table` differs from the expected one: missing, then per column
/// (missing or of the wrong type; else `NOT NULL` the spec may leave empty, too short, too
/// narrow a number), then required columns the spec never writes, then the primary key.
fn table_mismatches(table: &ExpectedTable, found: &FoundSchema) -> Vec<SchemaMismatch> {
    let mut mismatches = Vec::new();
    if !found.tables.contains(&table.name) {
        mismatches.push(SchemaMismatch::MissingTable {
            table: table.name.clone(),
        });
        return mismatches;
    }
    let expected_columns = table.columns_with_keys();
    for expected in &expected_columns {
        match found
            .columns
            .get(&(table.name.clone(), expected.name.clone()))
        {
            None => mismatches.push(SchemaMismatch::MissingColumn {
                table: table.name.clone(),
                column: expected.name.clone(),
                expected: expected.family,
            }),
            Some(column) => mismatches.extend(column_mismatches(&table.name, expected, column)),
        }
    }
    for ((table_name, column), found_column) in &found.columns {
        if table_name == &table.name
            && found_column.not_null
            && !found_column.has_default
            && !expected_columns.iter().any(|c| &c.name == column)
        {
            mismatches.push(SchemaMismatch::UnwrittenRequired {
                table: table.name.clone(),
                column: column.clone(),
            });
        }
    }
    let key = found
        .primary_keys
        .get(&table.name)
        .cloned()
        .unwrap_or_default();
    let key_set: BTreeSet<&str> = key.iter().map(String::as_str).collect();
    if key_set != BTreeSet::from(["user_id", table.key_column.as_str()]) {
        mismatches.push(SchemaMismatch::WrongPrimaryKey {
            table: table.name.clone(),
            found: key,
            key_column: table.key_column.clone(),
        });
    }
    mismatches
}

/// How an existing column differs: of the wrong type (and nothing more), or any of `NOT NULL`
/// where the spec may leave it empty, shorter than the spec's text, narrower than its numbers.
fn column_mismatches(
    table: &str,
    expected: &ExpectedColumn,
    found: &FoundColumn,
) -> Vec<SchemaMismatch> {
    let column = expected.name.clone();
    let family = expected.family;
    if !family.accepts(&found.data_type, &found.udt_name) {
        return vec![SchemaMismatch::WrongType {
            table: table.to_owned(),
            column,
            found: display_type(&found.data_type, &found.udt_name),
            expected: family,
        }];
    }
    let mut mismatches = Vec::new();
    if found.not_null && expected.may_be_null {
        mismatches.push(SchemaMismatch::NotNullable {
            table: table.to_owned(),
            column: column.clone(),
            field: expected.field_label().to_owned(),
        });
    }
    if let Some(limit) = found.char_limit
        && family == TypeFamily::Text
        && expected
            .max_chars
            .is_none_or(|max| max > u64::try_from(limit).unwrap_or(0))
    {
        mismatches.push(SchemaMismatch::TooShort {
            table: table.to_owned(),
            column: column.clone(),
            field: expected.field_label().to_owned(),
            limit,
            spec_max: expected.max_chars,
        });
    }
    if let Some((problem, fix_type)) = number_problem(expected, found) {
        mismatches.push(SchemaMismatch::NarrowNumber {
            table: table.to_owned(),
            column,
            found: numeric_type_name(found),
            problem,
            fix_type,
        });
    }
    mismatches
}

/// What a numeric column would do to some of the spec's numbers, and the type that holds them
/// all: an integer field whose range does not fit (`smallint`, `integer`, `numeric(p,s)`), a
/// `number` field in `real` (rounds to about 6 digits) or `numeric(p,s)` (rounds, and refuses
/// large values).
fn number_problem(
    expected: &ExpectedColumn,
    found: &FoundColumn,
) -> Option<(String, &'static str)> {
    let field = expected.field_label();
    match (expected.family, found.data_type.as_str()) {
        (TypeFamily::BigInt, data_type) => {
            let (low, high) = expected.spec_integer_range();
            if let Some(scale) = found
                .numeric_scale
                .filter(|s| *s < 0 && data_type == "numeric")
            {
                return Some((
                    format!(
                        "rounds to multiples of 10^{}, but the spec's field `{field}` is an exact integer; its values would be changed",
                        -i64::from(scale)
                    ),
                    "bigint",
                ));
            }
            let (min, max) = integer_column_range(found)?;
            (low < min || high > max).then(|| {
                (
                    format!(
                        "holds {min} to {max}, but the spec's field `{field}` accepts integers from {low} to {high}; records outside would be quarantined (or narrow the field's range in the spec)"
                    ),
                    "bigint",
                )
            })
        }
        (TypeFamily::Number, "real") => Some((
            format!(
                "keeps about 6 significant digits, but the spec's field `{field}` is a number (a double); its values would be rounded"
            ),
            "double precision",
        )),
        (TypeFamily::Number, "numeric") => {
            let precision = found.numeric_precision?;
            let scale = found.numeric_scale.unwrap_or(0);
            Some((
                format!(
                    "rounds to {scale} decimals and refuses magnitudes from 10^{}, but the spec's field `{field}` is a number (a double); its values would be rounded or quarantined",
                    i64::from(precision) - i64::from(scale)
                ),
                "double precision",
            ))
        }
        _ => None,
    }
}

/// The smallest and largest integers an exact integer column holds; `None` when it holds every
/// safe integer (`bigint`, a bare `numeric`).
fn integer_column_range(found: &FoundColumn) -> Option<(i64, i64)> {
    match found.data_type.as_str() {
        "smallint" => Some((i64::from(i16::MIN), i64::from(i16::MAX))),
        "integer" => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
        "numeric" => {
            let digits = found.numeric_precision? - found.numeric_scale.unwrap_or(0);
            if digits >= 16 {
                // 10^16 - 1 is above every safe integer.
                return None;
            }
            let max = u32::try_from(digits).map_or(0, |d| 10_i64.pow(d) - 1);
            Some((-max, max))
        }
        _ => None,
    }
}

/// A numeric type as a person would write it: `numeric(5,2)`; other types as they are.
fn numeric_type_name(found: &FoundColumn) -> String {
    match (found.data_type.as_str(), found.numeric_precision) {
        ("numeric", Some(precision)) => {
            format!("numeric({precision},{})", found.numeric_scale.unwrap_or(0))
        }
        _ => display_type(&found.data_type, &found.udt_name),
    }
}

/// A type as a person would write it: `text`, `timestamp with time zone`, `integer[]`.
fn display_type(data_type: &str, udt_name: &str) -> String {
    match data_type {
        "ARRAY" => format!("{}[]", udt_name.trim_start_matches('_')),
        "USER-DEFINED" => udt_name.to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_accept_their_types_and_nothing_else() {
        // (family, data_type, udt_name, accepted, why)
        let cases = [
            (
                TypeFamily::Text,
                "character varying",
                "varchar",
                true,
                "varchar holds text",
            ),
            (
                TypeFamily::Text,
                "integer",
                "int4",
                false,
                "an integer column cannot hold text",
            ),
            (
                TypeFamily::Timestamp,
                "timestamp without time zone",
                "timestamp",
                true,
                "both timestamp flavours",
            ),
            (
                TypeFamily::Timestamp,
                "text",
                "text",
                false,
                "a text due date is the bug this check exists for",
            ),
            (TypeFamily::Json, "json", "json", true, "json and jsonb"),
            (
                TypeFamily::Integer,
                "numeric",
                "numeric",
                false,
                "numeric is not an integer type",
            ),
            (TypeFamily::TextArray, "ARRAY", "_text", true, "text[]"),
            (
                TypeFamily::TextArray,
                "ARRAY",
                "_int4",
                false,
                "integer[] cannot hold tags",
            ),
            (
                TypeFamily::TextArray,
                "text",
                "text",
                false,
                "a scalar is not an array",
            ),
        ];
        for (family, data_type, udt, accepted, why) in cases {
            assert_eq!(family.accepts(data_type, udt), accepted, "{why}");
        }
    }

    #[test]
    fn mismatches_name_their_table_and_column() {
        let wrong = SchemaMismatch::WrongType {
            table: "tasks".into(),
            column: "due_date".into(),
            found: "text".into(),
            expected: TypeFamily::Timestamp,
        };
        assert_eq!(
            wrong.to_string(),
            "table tasks: column due_date is text, expected timestamp"
        );
        let key = SchemaMismatch::WrongPrimaryKey {
            table: "tasks".into(),
            found: vec!["id".into()],
            key_column: "id".into(),
        };
        assert_eq!(
            key.to_string(),
            "table tasks: primary key is (id), expected (user_id, id)"
        );
    }

    #[test]
    fn keys_are_implied() {
        let table = ExpectedTable::new("t", &[("title", TypeFamily::Text)]);
        let names: Vec<String> = table
            .columns_with_keys()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["user_id", "id", "title"]);
    }

    #[test]
    fn the_demo_spec_maps_to_families_and_nullability() {
        let spec = Spec::parse(include_str!("../../../specs/taskboard.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        let tables = expected_tables(&spec);
        let envs = tables
            .iter()
            .find(|t| t.name == "environments")
            .unwrap_or_else(|| panic!("no environments in {tables:?}"));
        let column = |name: &str| {
            envs.columns
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .clone()
        };
        assert_eq!(column("config").family, TypeFamily::Json);
        assert_eq!(column("schema_version").family, TypeFamily::BigInt);
        assert!(!column("legacy_id").may_be_null);
        assert!(column("description").may_be_null);
        assert!(!column("is_active").may_be_null, "it has a default");
        assert_eq!(
            column("is_active").finite_values,
            Some(vec!["true".to_owned(), "false".to_owned()])
        );
        assert_eq!(
            column("schema_version").integer_range,
            Some((-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)),
            "no range: every safe integer"
        );
        assert_eq!(column("name").finite_values, None);
        assert_eq!(column("name").field.as_deref(), Some("name"));
    }

    #[test]
    fn integer_columns_hold_what_their_type_and_precision_allow() {
        let column = |data_type: &str, precision, scale| FoundColumn {
            data_type: data_type.to_owned(),
            udt_name: String::new(),
            not_null: false,
            has_default: false,
            char_limit: None,
            numeric_precision: precision,
            numeric_scale: scale,
        };
        // (column, range, why)
        let cases = [
            (
                column("smallint", Some(16), Some(0)),
                Some((-32_768, 32_767)),
                "16 bits",
            ),
            (
                column("bigint", Some(64), Some(0)),
                None,
                "every safe integer",
            ),
            (column("numeric", None, None), None, "a bare numeric"),
            (
                column("numeric", Some(6), Some(0)),
                Some((-999_999, 999_999)),
                "6 digits",
            ),
            (
                column("numeric", Some(5), Some(2)),
                Some((-999, 999)),
                "3 whole digits",
            ),
            (
                column("numeric", Some(2), Some(2)),
                Some((0, 0)),
                "no whole digit",
            ),
            (
                column("numeric", Some(16), Some(0)),
                None,
                "16 digits exceed 2^53",
            ),
        ];
        for (found, range, why) in cases {
            assert_eq!(integer_column_range(&found), range, "{why}");
        }
    }

    #[test]
    fn array_types_display_like_sql() {
        assert_eq!(display_type("ARRAY", "_int4"), "int4[]");
        assert_eq!(display_type("USER-DEFINED", "citext"), "citext");
    }
}
