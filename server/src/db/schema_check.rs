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
//! `Spec::expected_tables`): every column a kind writes, its type family, and whether the spec
//! may leave it `NULL`. Two more mismatches are caught because they would fail every insert:
//! a column the spec may leave empty that is `NOT NULL` in the database, and a `NOT NULL`
//! column without a default that the spec never writes. And one that would refuse some
//! records the spec accepts: a `varchar(n)`/`char(n)` shorter than the longest value the spec
//! lets through (a string field's `length.max`, an enum's longest value; unbounded otherwise).
//! It is an error, not a warning: such records would be quarantined (ingest keeps the rest of
//! the batch), and the fix (`TYPE text`, or a spec bound) is one statement. CHECK constraints,
//! triggers and foreign keys are not compared: a record they refuse is quarantined with the
//! database's reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ferry_core::spec::{ColumnType, Spec};
use tokio_postgres::Client;

use crate::db::DbError;

/// A family of PostgreSQL types that can hold one kind of value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFamily {
    /// `text`, `varchar`, `char`, `citext`.
    Text,
    /// `uuid`.
    Uuid,
    /// `smallint`, `integer`, `bigint`.
    Integer,
    /// `bigint` or `numeric`: every JavaScript safe integer fits.
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
            Self::BigInt => matches!(data_type, "bigint" | "numeric"),
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
                .map(|(column, family)| ExpectedColumn {
                    name: (*column).to_owned(),
                    family: *family,
                    may_be_null: true,
                    max_chars: None,
                })
                .collect(),
        }
    }

    fn columns_with_keys(&self) -> Vec<ExpectedColumn> {
        let mut columns = self.columns.clone();
        for key in [self.key_column.as_str(), "user_id"] {
            if !columns.iter().any(|c| c.name == key) {
                columns.insert(
                    0,
                    ExpectedColumn {
                        name: key.to_owned(),
                        family: TypeFamily::Uuid,
                        may_be_null: false,
                        max_chars: None,
                    },
                );
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
                    .map(|c| ExpectedColumn {
                        max_chars: longest_text(kind, &c.name),
                        name: c.name,
                        family: c.ty.into(),
                        may_be_null: c.nullable,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The longest text the spec writes into `column` of `kind`, in characters: a string field's
/// `length.max` (not when sealed: ciphertext is longer), an enum's longest value; `None` when
/// unbounded. Values with lone surrogates or NUL travel escaped (5 characters for one), which
/// this bound does not count: such a value is quarantined with the database's reason.
fn longest_text(kind: &ferry_core::spec::Kind, column: &str) -> Option<u64> {
    use ferry_core::spec::FieldType;
    let field = kind.fields.iter().find(|f| f.column == column)?;
    match &field.ty {
        FieldType::String(rules) if !field.sensitive => rules.length.as_ref()?.max,
        FieldType::Enum { values, .. } => values
            .iter()
            .map(|v| u64::try_from(v.chars().count()).unwrap_or(u64::MAX))
            .max(),
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
    },
    /// A `varchar(n)`/`char(n)` column shorter than the longest value the spec accepts: the
    /// database would refuse (and quarantine) records the spec lets through.
    TooShort {
        /// Table.
        table: String,
        /// Column.
        column: String,
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
            Self::NotNullable { table, column } => write!(
                f,
                "table {table}: column {column} is NOT NULL, but the spec may leave it empty (drop NOT NULL, or make the field required or give it a default in the spec)"
            ),
            Self::TooShort {
                table,
                column,
                limit,
                spec_max,
            } => {
                let accepts = spec_max.map_or_else(
                    || "text of any length".to_owned(),
                    |max| format!("up to {max} characters"),
                );
                write!(
                    f,
                    "table {table}: column {column} holds at most {limit} characters, but the spec accepts {accepts}; records longer would be quarantined (ALTER TABLE {table} ALTER COLUMN {column} TYPE text, or set the field's length.max to {limit} in the spec)"
                )
            }
            Self::UnwrittenRequired { table, column } => write!(
                f,
                "table {table}: column {column} is NOT NULL without a default and the spec never writes it (give it a default, or write it from the spec)"
            ),
        }
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

/// Compares `expected` with the database and returns every mismatch (empty: all good).
pub async fn check_schema(
    client: &Client,
    expected: &[ExpectedTable],
) -> Result<Vec<SchemaMismatch>, DbError> {
    let names: Vec<&str> = expected.iter().map(|t| t.name.as_str()).collect();
    let found = FoundSchema {
        tables: existing_tables(client, &names).await?,
        columns: existing_columns(client, &names).await?,
        primary_keys: primary_keys(client, &names).await?,
    };
    Ok(expected
        .iter()
        .flat_map(|table| table_mismatches(table, &found))
        .collect())
}

/// A column as `information_schema` describes it: `data_type`, `udt_name`, whether it is
/// `NOT NULL`, and whether it has a default (identity and generated columns count).
/// The last: `varchar(n)`/`char(n)`'s `n`.
type FoundColumn = (String, String, bool, bool, Option<i32>);

/// What the database holds of the expected tables.
struct FoundSchema {
    /// The tables that exist.
    tables: BTreeSet<String>,
    /// `(table, column)` → the column.
    columns: BTreeMap<(String, String), FoundColumn>,
    /// Table → its primary key columns, in order.
    primary_keys: BTreeMap<String, Vec<String>>,
}

/// Which of the tables `names` exist in the connection's current schema.
async fn existing_tables(client: &Client, names: &[&str]) -> Result<BTreeSet<String>, DbError> {
    Ok(client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name::text = ANY($1)",
            &[&names],
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
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, udt_name::text,
                    is_nullable = 'NO', column_default IS NOT NULL OR is_identity = 'YES' OR is_generated = 'ALWAYS',
                    character_maximum_length::int
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name::text = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|e| DbError::query("list columns", &e))?
    {
        let read = |row: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok((
                (row.try_get(0)?, row.try_get(1)?),
                (
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                    row.try_get(5)?,
                    row.try_get(6)?,
                ),
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
        .query(
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
            &[&names],
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

/// Every way the database's `table` differs from the expected one: missing, then per column
/// (missing, wrong type, `NOT NULL` the spec may leave empty), then required columns the spec
/// never writes, then the primary key.
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
        let column = expected.name.clone();
        let family = expected.family;
        match found.columns.get(&(table.name.clone(), column.clone())) {
            None => mismatches.push(SchemaMismatch::MissingColumn {
                table: table.name.clone(),
                column,
                expected: family,
            }),
            Some((data_type, udt_name, _, _, _)) if !family.accepts(data_type, udt_name) => {
                mismatches.push(SchemaMismatch::WrongType {
                    table: table.name.clone(),
                    column,
                    found: display_type(data_type, udt_name),
                    expected: family,
                });
            }
            Some((_, _, true, _, _)) if expected.may_be_null => {
                mismatches.push(SchemaMismatch::NotNullable {
                    table: table.name.clone(),
                    column,
                });
            }
            Some((_, _, _, _, Some(limit)))
                if family == TypeFamily::Text
                    && expected
                        .max_chars
                        .is_none_or(|max| max > u64::try_from(*limit).unwrap_or(0)) =>
            {
                mismatches.push(SchemaMismatch::TooShort {
                    table: table.name.clone(),
                    column,
                    limit: *limit,
                    spec_max: expected.max_chars,
                });
            }
            Some(_) => {}
        }
    }
    for ((table_name, column), (_, _, not_null, has_default, _)) in &found.columns {
        if table_name == &table.name
            && *not_null
            && !*has_default
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
    }

    #[test]
    fn array_types_display_like_sql() {
        assert_eq!(display_type("ARRAY", "_int4"), "int4[]");
        assert_eq!(display_type("USER-DEFINED", "citext"), "citext");
    }
}
