//! Does the database hold the tables and columns the server is about to write to?
//!
//! At start the server compares the expected app schema (plain data: tables, their columns
//! and a *type family* for each) with `information_schema`, and refuses to start with every
//! mismatch listed, each naming its table and column. A family is deliberately loose (`text`
//! accepts `varchar`, `timestamp` accepts both time-zone flavours, `json` accepts `jsonb`):
//! the check catches a column that cannot hold the data, not a style choice. Every app table
//! must also have the primary key `(user_id, id)`, which per-user upserts rely on.
//!
//! Today the expectations for the demo app are written out in [`demo_app_schema`]; they will
//! be derived from the migration spec.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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

/// A table the server writes to, with the columns it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTable {
    /// Table name (in the connection's current schema).
    pub name: String,
    /// `(column, family)` pairs. `user_id` (uuid) and `id` (uuid) are implied when absent.
    pub columns: Vec<(String, TypeFamily)>,
}

impl ExpectedTable {
    /// A table from string slices.
    pub fn new(name: &str, columns: &[(&str, TypeFamily)]) -> Self {
        Self {
            name: name.to_owned(),
            columns: columns
                .iter()
                .map(|(column, family)| ((*column).to_owned(), *family))
                .collect(),
        }
    }

    fn columns_with_keys(&self) -> Vec<(String, TypeFamily)> {
        let mut columns = self.columns.clone();
        for key in ["id", "user_id"] {
            if !columns.iter().any(|(name, _)| name == key) {
                columns.insert(0, (key.to_owned(), TypeFamily::Uuid));
            }
        }
        columns
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
    /// The primary key is not `(user_id, id)`.
    WrongPrimaryKey {
        /// Table.
        table: String,
        /// Its primary key columns (empty: none).
        found: Vec<String>,
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
            Self::WrongPrimaryKey { table, found } if found.is_empty() => {
                write!(
                    f,
                    "table {table}: has no primary key, expected (user_id, id)"
                )
            }
            Self::WrongPrimaryKey { table, found } => write!(
                f,
                "table {table}: primary key is ({}), expected (user_id, id)",
                found.join(", ")
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

    let existing: BTreeSet<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name::text = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|e| DbError::query("list tables", &e))?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let mut columns: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for row in client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, udt_name::text
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name::text = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|e| DbError::query("list columns", &e))?
    {
        columns.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
    }

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
        primary_keys.entry(row.get(0)).or_default().push(row.get(1));
    }

    let mut mismatches = Vec::new();
    for table in expected {
        if !existing.contains(&table.name) {
            mismatches.push(SchemaMismatch::MissingTable {
                table: table.name.clone(),
            });
            continue;
        }
        for (column, family) in table.columns_with_keys() {
            match columns.get(&(table.name.clone(), column.clone())) {
                None => mismatches.push(SchemaMismatch::MissingColumn {
                    table: table.name.clone(),
                    column,
                    expected: family,
                }),
                Some((data_type, udt_name)) if !family.accepts(data_type, udt_name) => {
                    mismatches.push(SchemaMismatch::WrongType {
                        table: table.name.clone(),
                        column,
                        found: display_type(data_type, udt_name),
                        expected: family,
                    });
                }
                Some(_) => {}
            }
        }
        let key = primary_keys.get(&table.name).cloned().unwrap_or_default();
        let key_set: BTreeSet<&str> = key.iter().map(String::as_str).collect();
        if key_set != BTreeSet::from(["user_id", "id"]) {
            mismatches.push(SchemaMismatch::WrongPrimaryKey {
                table: table.name.clone(),
                found: key,
            });
        }
    }
    Ok(mismatches)
}

/// A type as a person would write it: `text`, `timestamp with time zone`, `integer[]`.
fn display_type(data_type: &str, udt_name: &str) -> String {
    match data_type {
        "ARRAY" => format!("{}[]", udt_name.trim_start_matches('_')),
        "USER-DEFINED" => udt_name.to_owned(),
        other => other.to_owned(),
    }
}

/// The tables of the demo app (`server/migrations/app/0001_demo_app_tables.sql`).
pub fn demo_app_schema() -> Vec<ExpectedTable> {
    use TypeFamily::*;
    vec![
        ExpectedTable::new(
            "tasks",
            &[
                ("user_id", Uuid),
                ("id", Uuid),
                ("title", Text),
                ("status", Text),
                ("description", Text),
                ("priority", Text),
                ("tags", TextArray),
                ("due_date", Timestamp),
                ("created_at", Timestamp),
                ("updated_at", Timestamp),
                ("legacy_id", Text),
            ],
        ),
        ExpectedTable::new(
            "environments",
            &[
                ("user_id", Uuid),
                ("id", Uuid),
                ("name", Text),
                ("description", Text),
                ("config", Json),
                ("is_active", Boolean),
                ("created_at", Timestamp),
                ("updated_at", Timestamp),
                ("schema_version", Integer),
                ("legacy_id", Text),
            ],
        ),
        ExpectedTable::new(
            "user_preferences",
            &[
                ("user_id", Uuid),
                ("id", Uuid),
                ("preferences", Json),
                ("updated_at", Timestamp),
            ],
        ),
        ExpectedTable::new(
            "form_drafts",
            &[
                ("user_id", Uuid),
                ("id", Uuid),
                ("form_name", Text),
                ("data", Json),
                ("updated_at", Timestamp),
            ],
        ),
        ExpectedTable::new(
            "custom_data",
            &[
                ("user_id", Uuid),
                ("id", Uuid),
                ("key", Text),
                ("value", Json),
                ("updated_at", Timestamp),
            ],
        ),
    ]
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
        };
        assert_eq!(
            key.to_string(),
            "table tasks: primary key is (id), expected (user_id, id)"
        );
    }

    #[test]
    fn keys_are_implied() {
        let table = ExpectedTable::new("t", &[("title", TypeFamily::Text)]);
        let names: Vec<String> = table.columns_with_keys().into_iter().map(|c| c.0).collect();
        assert_eq!(names, ["user_id", "id", "title"]);
    }

    #[test]
    fn array_types_display_like_sql() {
        assert_eq!(display_type("ARRAY", "_int4"), "int4[]");
        assert_eq!(display_type("USER-DEFINED", "citext"), "citext");
    }
}
