//! The per-kind statement: built once from the spec at start ([`IngestPlan`]), one
//! set-based SQL statement per kind ([`KindPlan`]) carrying the kind's conflict policy.
//!
//! The batch's rows travel as one array per column, `unnest`ed into an `incoming` set; the
//! statement locks and snapshots the stored rows (`before`), upserts with `ON CONFLICT
//! (user_id, id) DO UPDATE … WHERE <policy>` (`written`), writes the before-image of every
//! stored row it changes (`images`) and the ids of the rows it creates as one array
//! (`created`), queues manual conflicts (`queued`), and returns one line per incoming row from
//! which the per-record outcome is read.

use std::fmt::Write as _;

use ferry_core::spec::{ColumnType, ConflictPolicy, Kind, Spec};

use crate::db::sql::{quote_ident, quote_literal};

/// The prepared SQL of every kind, built once from the spec at start.
#[derive(Debug, Clone)]
pub struct IngestPlan {
    spec: Spec,
    kinds: Vec<KindPlan>,
}

/// The upsert statement of one kind and how to fill its parameters.
#[derive(Debug, Clone)]
pub struct KindPlan {
    /// The SQL text: `$1` user id, `$2` migration id, then one array per column.
    pub sql: String,
    pub(super) columns: Vec<PlanColumn>,
}

#[derive(Debug, Clone)]
pub(super) struct PlanColumn {
    pub(super) name: String,
    pub(super) ty: ColumnType,
    /// Index of the field in the kind, or `None` for the legacy id column.
    pub(super) field: Option<usize>,
}

impl IngestPlan {
    /// Builds every kind's statement.
    pub fn new(spec: Spec) -> Self {
        let kinds = spec.kinds.iter().map(KindPlan::new).collect();
        Self { spec, kinds }
    }

    /// The spec the plan was built from.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The plan of the kind at `index`.
    pub fn kind(&self, index: usize) -> Option<&KindPlan> {
        self.kinds.get(index)
    }
}

/// The PostgreSQL array type a column's values travel in.
fn param_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Uuid => "uuid[]",
        ColumnType::Text => "text[]",
        ColumnType::BigInt | ColumnType::Timestamptz => "int8[]",
        ColumnType::Double => "float8[]",
        ColumnType::Boolean => "bool[]",
        // A text[] per row would make a ragged 2-D array, which PostgreSQL cannot hold:
        // string arrays travel as JSON arrays and are unpacked in SQL.
        ColumnType::Jsonb | ColumnType::TextArray => "jsonb[]",
    }
}

/// The SQL turning the raw unnested value `u.cN` into the column's value.
fn column_expr(ty: ColumnType, raw: &str) -> String {
    match ty {
        ColumnType::Timestamptz => {
            format!("(timestamptz 'epoch' + {raw} * interval '1 millisecond')")
        }
        ColumnType::TextArray => format!(
            "(CASE WHEN {raw} IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text({raw})) END)"
        ),
        _ => raw.to_owned(),
    }
}

impl KindPlan {
    fn new(kind: &Kind) -> Self {
        let mut columns = Vec::new();
        if let Some(legacy) = &kind.id.legacy_column {
            columns.push(PlanColumn {
                name: legacy.clone(),
                ty: ColumnType::Text,
                field: None,
            });
        }
        for (i, f) in kind.fields.iter().enumerate() {
            columns.push(PlanColumn {
                name: f.column.clone(),
                ty: f.column_type(),
                field: Some(i),
            });
        }
        let sql = build_sql(kind, &columns);
        Self { sql, columns }
    }
}

/// The statement of one kind, CTE by CTE: `incoming` (the batch's rows), `before` (the stored
/// rows it touches, locked), `written` (the upsert with the policy), `images` (before-images),
/// `created` (the ids of new rows), `queued` (manual conflicts, policy `manual` only), then one
/// answer line per incoming row.
fn build_sql(kind: &Kind, columns: &[PlanColumn]) -> String {
    let table = quote_ident(&kind.table);
    let id = quote_ident(&kind.id.column);
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let mut sql = incoming_cte(&id, columns, &names);
    // before: the stored rows this batch touches, locked, as they were.
    let _ = write!(
        sql,
        "before AS (SELECT t.* FROM {table} t WHERE t.user_id = $1 AND t.{id} IN (SELECT {id} FROM incoming) FOR UPDATE), "
    );
    sql.push_str(&written_cte(kind, columns, &table, &id, &names));
    // What a rollback needs: the rows that existed as they were (a before-image each, the
    // first per migration and row wins: rows the migration has an image of are left out), and
    // the ids of the rows created; each one row per statement (schema migrations 0011 and
    // 0014: a batch costs two bookkeeping rows, not one per record).
    let table_lit = quote_literal(&kind.table);
    let _ = write!(
        sql,
        "images AS (INSERT INTO ferry_before_image_batches (user_id, migration_id, table_name, row_ids, befores) \
         SELECT $1, $2, {table_lit}, array_agg(w.{id}), array_agg(to_jsonb(b)) FROM written w JOIN before b ON b.{id} = w.{id} \
         WHERE NOT EXISTS (SELECT 1 FROM ferry_before_images x WHERE x.user_id = $1 AND x.migration_id = $2 \
                           AND x.table_name = {table_lit} AND x.row_id = w.{id}) \
         HAVING count(*) > 0), \
         created AS (INSERT INTO ferry_created_rows (user_id, migration_id, table_name, row_ids) \
         SELECT $1, $2, {table_lit}, array_agg(w.{id}) FROM written w \
         WHERE NOT EXISTS (SELECT 1 FROM before b WHERE b.{id} = w.{id}) HAVING count(*) > 0), "
    );
    let differs_ib = format!(
        "({}) IS DISTINCT FROM ({})",
        qualified("i", &names),
        qualified("b", &names)
    );
    if kind.conflict == ConflictPolicy::Manual {
        let _ = write!(
            sql,
            "queued AS (INSERT INTO ferry_conflicts (user_id, migration_id, kind, row_id, stored, incoming, incoming_hash) \
             SELECT $1, $2, {kind_lit}, i.{id}, to_jsonb(b) - 'user_id', to_jsonb(i) - 'ord', md5((to_jsonb(i) - 'ord')::text) \
             FROM incoming i JOIN before b ON b.{id} = i.{id} WHERE {differs_ib} \
             ON CONFLICT (user_id, kind, row_id, incoming_hash) WHERE status = 'open' DO NOTHING), ",
            kind_lit = quote_literal(&kind.name)
        );
    }
    let _ = write!(
        sql,
        "done AS (SELECT 1) SELECT i.ord, (b.{id} IS NOT NULL) AS existed, (w.{id} IS NOT NULL) AS written, \
         (b.{id} IS NOT NULL AND NOT {differs_ib}) AS same \
         FROM incoming i LEFT JOIN before b ON b.{id} = i.{id} LEFT JOIN written w ON w.{id} = i.{id} ORDER BY i.ord"
    );
    sql
}

/// `WITH incoming AS (…), `: one line per row of the batch, with its position (`ord`), the
/// parameter arrays `unnest`ed and each raw value turned into its column's value.
fn incoming_cte(id: &str, columns: &[PlanColumn], names: &[String]) -> String {
    let mut unnest_args = vec!["$3::uuid[]".to_owned()];
    let mut raw_names = vec!["r_id".to_owned()];
    let mut select = vec![format!("u.r_id AS {id}")];
    for (i, c) in columns.iter().enumerate() {
        unnest_args.push(format!("${}::{}", i + 4, param_type(c.ty)));
        raw_names.push(format!("r{i}"));
        select.push(format!(
            "{} AS {}",
            column_expr(c.ty, &format!("u.r{i}")),
            names[i]
        ));
    }
    format!(
        "WITH incoming AS (SELECT u.ord, {} FROM unnest({}) WITH ORDINALITY AS u({}, ord)), ",
        select.join(", "),
        unnest_args.join(", "),
        raw_names.join(", ")
    )
}

/// `written AS (…), `: the upsert, with the kind's policy as its `ON CONFLICT` clause.
fn written_cte(
    kind: &Kind,
    columns: &[PlanColumn],
    table: &str,
    id: &str,
    names: &[String],
) -> String {
    let on_conflict = on_conflict_clause(kind, columns, names);
    // `before` must lock every stored row before `written` changes any: `FOR UPDATE` skips a
    // row the same statement already changed, which would report an update as `inserted` and
    // record "did not exist" as its before-image. The order of CTEs is the plan's choice, so
    // the upsert waits for `before` in full (an init plan runs before the first row).
    format!(
        "written AS (INSERT INTO {table} AS t (user_id, {id}, {}) SELECT $1, i.{id}, {} FROM incoming i \
         WHERE (SELECT count(*) FROM before) >= 0 \
         ON CONFLICT (user_id, {id}) {on_conflict} RETURNING t.{id}), ",
        names.join(", "),
        qualified("i", names)
    )
}

/// The `ON CONFLICT (user_id, id)` action of the kind's conflict policy (see the module
/// documentation of [`crate::ingest`]); a row is only written when it differs.
fn on_conflict_clause(kind: &Kind, columns: &[PlanColumn], names: &[String]) -> String {
    let cols_x = qualified("excluded", names);
    let differs_tx = format!("({}) IS DISTINCT FROM ({cols_x})", qualified("t", names));
    match kind.conflict {
        ConflictPolicy::Skip | ConflictPolicy::Manual => "DO NOTHING".to_owned(),
        ConflictPolicy::Overwrite => format!(
            "DO UPDATE SET ({}) = ROW({cols_x}) WHERE {differs_tx}",
            names.join(", ")
        ),
        ConflictPolicy::Newest => {
            let u = quote_ident(kind.updated_at.as_deref().unwrap_or("updated_at"));
            format!(
                "DO UPDATE SET ({}) = ROW({cols_x}) WHERE {differs_tx} AND (t.{u} IS NULL OR excluded.{u} > t.{u})",
                names.join(", ")
            )
        }
        ConflictPolicy::Merge => {
            let u = quote_ident(kind.updated_at.as_deref().unwrap_or("updated_at"));
            let newer = format!("(t.{u} IS NULL OR excluded.{u} > t.{u})");
            let sets: Vec<String> = columns
                .iter()
                .zip(names)
                .map(|(c, n)| {
                    if c.ty == ColumnType::Jsonb {
                        format!(
                            "{n} = CASE WHEN jsonb_typeof(t.{n}) = 'object' AND jsonb_typeof(excluded.{n}) = 'object' \
                             THEN (CASE WHEN {newer} THEN t.{n} || excluded.{n} ELSE excluded.{n} || t.{n} END) \
                             WHEN {newer} THEN excluded.{n} ELSE t.{n} END"
                        )
                    } else if n == &u {
                        format!("{n} = GREATEST(t.{n}, excluded.{n})")
                    } else {
                        format!("{n} = CASE WHEN {newer} THEN excluded.{n} ELSE t.{n} END")
                    }
                })
                .collect();
            format!("DO UPDATE SET {} WHERE {differs_tx}", sets.join(", "))
        }
    }
}

/// `names` each qualified by `alias` (`i.a, i.b`), as a column list.
fn qualified(alias: &str, names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{alias}.{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> IngestPlan {
        let spec = Spec::parse(include_str!("../../../specs/taskboard.json"))
            .unwrap_or_else(|e| panic!("demo spec: {e}"));
        IngestPlan::new(spec)
    }

    #[test]
    fn one_statement_per_kind_with_the_policy_clause() {
        let plan = demo();
        let tasks = plan.kind(0).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(tasks.contains("INSERT INTO \"tasks\""), "{tasks}");
        assert!(
            tasks.contains("excluded.\"updated_at\" > t.\"updated_at\""),
            "newest: {tasks}"
        );
        let envs = plan.kind(1).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(
            envs.contains("t.\"config\" || excluded.\"config\""),
            "merge: {envs}"
        );
        let drafts = plan.kind(3).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(drafts.contains("ferry_conflicts"), "manual: {drafts}");
        assert!(
            drafts.contains("DO NOTHING"),
            "manual leaves the row: {drafts}"
        );
        let custom = plan.kind(4).map(|k| k.sql.as_str()).unwrap_or("");
        assert!(
            !custom.contains("DO UPDATE"),
            "skip never updates: {custom}"
        );
    }
}
