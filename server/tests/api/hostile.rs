//! The hostile localStorage corpus (`tests/corpus/hostile.json`, issue 7) through the real
//! HTTP ingest into PostgreSQL.
//!
//! Every case is one user's migration: the browser's pipeline and batcher (ferry-core) build
//! the batches, `POST /v1/batches` ingests them, and then SQL checks the database: each
//! migrated record is in its table exactly once with exactly its value (text in the lossless
//! escaped form, un-escaping to the input's code units; the GitHub token sealed and decrypting
//! to the input), the tables hold nothing else, and each rejected record is in
//! `ferry_quarantine` once, with its key, position, raw value and the reasons the corpus
//! expects. The corpus's own expectations are checked again here against what PostgreSQL
//! holds, not only against the pipeline's rows.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, Cell, Outcome, Record};
use ferry_core::spec::{ColumnType, FieldType, Kind, Spec};
use ferry_core::wire::{self, BatchHeader, BatchLimits, WireLocator};
use ferry_server::ingest::RecordOutcome;
use ferry_server::ingest::field_crypto::{CellContext, FieldCipher, PREFIX, QuarantineContext};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TEST_FIELD_KEY, TestApp, demo_spec, spawn_app};

use ferry_corpus::{self as corpus, Expected, J};

fn cipher() -> FieldCipher {
    let key = ferry_server::ingest::field_crypto::parse_hex_key("test", TEST_FIELD_KEY).unwrap();
    FieldCipher::new("k1", key)
}

/// `SELECT <legacy id>, <every field column, as something comparable>` for one row of a kind.
fn row_sql(kind: &Kind) -> String {
    let mut columns = Vec::new();
    if let Some(legacy) = &kind.id.legacy_column {
        columns.push(format!("\"{legacy}\""));
    }
    for f in &kind.fields {
        let c = format!("\"{}\"", f.column);
        columns.push(match f.column_type() {
            ColumnType::Timestamptz => format!("(extract(epoch from {c}) * 1000)::int8"),
            ColumnType::TextArray => format!("to_jsonb({c})"),
            ColumnType::Uuid => format!("{c}::text"),
            _ => c,
        });
    }
    format!(
        "SELECT {} FROM \"{}\" WHERE user_id = $1 AND \"{}\" = $2",
        columns.join(", "),
        kind.table,
        kind.id.column
    )
}

/// The stored row as cells, aligned with the kind's fields, after the legacy id.
fn read_cells(kind: &Kind, row: &tokio_postgres::Row) -> (Option<String>, Vec<Cell>) {
    let mut i = 0;
    let legacy = kind.id.legacy_column.as_ref().map(|_| {
        i += 1;
        row.get::<_, String>(0)
    });
    let mut cells = Vec::new();
    for f in &kind.fields {
        let cell = match f.column_type() {
            ColumnType::Text | ColumnType::Uuid => row.get::<_, Option<String>>(i).map(Cell::Text),
            ColumnType::BigInt => row.get::<_, Option<i64>>(i).map(Cell::Int),
            ColumnType::Timestamptz => row.get::<_, Option<i64>>(i).map(Cell::Timestamp),
            ColumnType::Double => row.get::<_, Option<f64>>(i).map(Cell::Float),
            ColumnType::Boolean => row.get::<_, Option<bool>>(i).map(Cell::Bool),
            ColumnType::Jsonb => row.get::<_, Option<Value>>(i).map(Cell::Json),
            ColumnType::TextArray => row.get::<_, Option<Value>>(i).map(|v| {
                let Value::Array(items) = v else {
                    panic!("text[] as {v}")
                };
                Cell::TextArray(
                    items
                        .into_iter()
                        .map(|s| s.as_str().unwrap().to_owned())
                        .collect(),
                )
            }),
        };
        cells.push(cell.unwrap_or(Cell::Null));
        i += 1;
    }
    (legacy, cells)
}

/// Decrypts the sealed parts of a stored cell in place, checking they were sealed.
fn unseal(
    place: &str,
    user: Uuid,
    kind: &Kind,
    id: Uuid,
    field: &ferry_core::spec::Field,
    cell: &mut Cell,
) {
    let cipher = cipher();
    match (&field.ty, cell) {
        (FieldType::String(_), Cell::Text(s)) if field.sensitive => {
            let ctx = CellContext {
                user_id: user,
                table: &kind.table,
                row_id: id,
                column: &field.column,
            };
            assert!(
                s.starts_with(PREFIX),
                "{place}: {} stored in clear",
                field.column
            );
            *s = cipher.decrypt(&ctx, s).unwrap();
        }
        (FieldType::Json { sensitive_keys }, Cell::Json(Value::Object(map))) => {
            for key in sensitive_keys {
                if let Some(Value::String(secret)) = map.get_mut(key) {
                    let column = format!("{}.{key}", field.column);
                    let ctx = CellContext {
                        user_id: user,
                        table: &kind.table,
                        row_id: id,
                        column: &column,
                    };
                    assert!(
                        secret.starts_with(PREFIX),
                        "{place}: {column} stored in clear"
                    );
                    *secret = cipher.decrypt(&ctx, secret).unwrap();
                }
            }
        }
        _ => {}
    }
}

/// Counts of the user's rows in every table, in spec order, in one query.
fn counts_sql(spec: &Spec) -> String {
    let mut sql = String::from("SELECT ");
    for (i, k) in spec.kinds.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        write!(
            sql,
            "(SELECT count(*) FROM \"{}\" WHERE user_id = $1)",
            k.table
        )
        .unwrap();
    }
    sql
}

/// `(kind, key, locator, raw value, reasons)` of a quarantined record.
type Quarantined = (String, String, String, String, Vec<String>);

async fn run_case(
    app: &TestApp,
    spec: &Spec,
    case: &corpus::Case,
    migrated_at_ms: i64,
    counts_sql: &str,
) -> (usize, usize) {
    let name = &case.name;
    let user = app.user();
    let ctx = pipeline::Context {
        device_id: Uuid::new_v4(),
        migrated_at_ms,
    };
    let pairs: Vec<(LosslessString, LosslessString)> = case
        .pairs()
        .iter()
        .map(|(k, v)| (LosslessString::from_utf16(k), LosslessString::from_utf16(v)))
        .collect();
    let records = pipeline::process(spec, &pairs, &ctx);
    let expected = case.expectations();
    assert_eq!(records.len(), expected.len(), "{name}: records");
    let header = BatchHeader::new(spec, Uuid::new_v4(), &ctx);
    let batches = wire::build_batches(
        spec,
        &header,
        &records,
        0..records.len(),
        0,
        BatchLimits::default(),
    );
    for batch in batches {
        let result = app.send(&user.token, batch.body).await;
        assert!(!result.replay, "{name}: a first send is not a replay");
        let (accepted, rejected): (Vec<usize>, Vec<usize>) = batch
            .members
            .iter()
            .partition(|&&i| records[i].outcome.is_accepted());
        let order: Vec<usize> = accepted.iter().chain(&rejected).copied().collect();
        assert_eq!(result.outcomes.len(), order.len(), "{name}: answers");
        for (answer, &i) in result.outcomes.iter().zip(&order) {
            let want = if records[i].outcome.is_accepted() {
                RecordOutcome::Inserted
            } else {
                RecordOutcome::Quarantined
            };
            assert_eq!(
                answer.outcome, want,
                "{name}: record {i}: {:?}",
                answer.reasons
            );
            assert_eq!(
                answer.hash,
                records[i].hash.to_hex(),
                "{name}: record {i}: hash"
            );
        }
    }

    // The tables hold exactly the migrated records, once each.
    let counts = app.db.query_one(counts_sql, &[&user.id]).await.unwrap();
    for (k, kind) in spec.kinds.iter().enumerate() {
        let migrated = records
            .iter()
            .filter(|r| r.kind == k && r.outcome.is_accepted())
            .count();
        assert_eq!(
            counts.get::<_, i64>(k) as usize,
            migrated,
            "{name}: rows in {}",
            kind.table
        );
    }
    let mut rows = 0;
    for (i, (record, exp)) in records.iter().zip(&expected).enumerate() {
        let Some(row) = record.outcome.row() else {
            continue;
        };
        let place = format!("{name}: record {i} ({:?} {:?})", record.key, record.locator);
        let kind = &spec.kinds[record.kind];
        let id = record.id.unwrap();
        let found = app
            .db
            .query(&row_sql(kind), &[&user.id, &id])
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{place}: rows with its id");
        let (legacy, mut cells) = read_cells(kind, &found[0]);
        assert_eq!(
            legacy.as_deref(),
            record
                .legacy_id
                .as_ref()
                .map(LosslessString::as_escaped)
                .filter(|_| kind.id.legacy_column.is_some()),
            "{place}: legacy id"
        );
        for (field, cell) in kind.fields.iter().zip(cells.iter_mut()) {
            unseal(&place, user.id, kind, id, field, cell);
        }
        for (f, (stored, sent)) in cells.iter().zip(&row.cells).enumerate() {
            assert!(
                stored == sent,
                "{place}: column {} stored as {}, the pipeline gave {}",
                kind.fields[f].column,
                shorten(&format!("{stored:?}")),
                shorten(&format!("{sent:?}"))
            );
        }
        // And against the corpus itself: exact escaped text, un-escaping to the input's units.
        for (column, value) in &exp.fields {
            let f = kind
                .fields
                .iter()
                .position(|f| &f.column == column)
                .unwrap();
            let want = corpus::expected_cell(&kind.fields[f], value, migrated_at_ms);
            assert!(cells[f] == want, "{place}: column {column} in PostgreSQL");
            if let (Cell::Text(s), J::Str(u)) = (&cells[f], value) {
                assert!(corpus::unescape(s) == *u, "{place}: {column} code units");
            }
        }
        rows += 1;
    }

    // The quarantine holds exactly the rejected records, with their raw value and reasons.
    // The raw value of a kind with sensitive fields is sealed at rest: it is checked to hold
    // no secret of the case, then opened to compare with the input.
    let cipher = cipher();
    let mut stored: Vec<Quarantined> = app
        .db
        .query(
            "SELECT kind, key, locator, raw_value, reasons, raw_key_id, migration_id FROM ferry_quarantine WHERE user_id = $1",
            &[&user.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let reasons: Value = r.get(4);
            let (kind, key, raw): (String, String, String) = (r.get(0), r.get(1), r.get(3));
            let key_id: Option<String> = r.get(5);
            let has_secrets = spec
                .kinds
                .iter()
                .find(|k| k.name == kind)
                .is_some_and(|k| k.fields.iter().any(|f| f.has_secrets()));
            let raw = if has_secrets {
                assert_eq!(key_id.as_deref(), Some("k1"), "{name}: {kind} {key} raw value not sealed");
                assert!(raw.starts_with(PREFIX), "{name}: {kind} {key} raw value in clear: {raw}");
                for secret in &case.secrets {
                    assert!(
                        !corpus::contains_units(&corpus::unescape(&raw), secret),
                        "{name}: the quarantine holds a secret in clear: {raw}"
                    );
                }
                let at = QuarantineContext {
                    user_id: user.id,
                    migration_id: r.get(6),
                    kind: &kind,
                    key: &key,
                };
                cipher.open_quarantined(&at, &raw).unwrap()
            } else {
                assert_eq!(key_id, None, "{name}: {kind} has no secrets to seal");
                raw
            };
            (
                kind,
                key,
                r.get(2),
                raw,
                reasons
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let rejected: Vec<(&Record, &corpus::RecordExpectation)> = records
        .iter()
        .zip(&expected)
        .filter(|(r, _)| matches!(r.outcome, Outcome::Rejected(_)))
        .collect();
    let mut want: Vec<Quarantined> = rejected
        .iter()
        .map(|(r, _)| {
            let Outcome::Rejected(notes) = &r.outcome else {
                unreachable!()
            };
            (
                spec.kinds[r.kind].name.clone(),
                r.key.as_escaped().to_owned(),
                serde_json::to_string(&WireLocator::from(&r.locator)).unwrap(),
                r.raw.text().to_owned(),
                notes.iter().map(|n| n.message.clone()).collect(),
            )
        })
        .collect();
    stored.sort();
    want.sort();
    assert!(
        stored == want,
        "{name}: the quarantine holds {} records, expected {}: {}",
        stored.len(),
        want.len(),
        shorten(&format!("{stored:?}"))
    );
    for (r, exp) in &rejected {
        if let Expected::Rejected { reason, .. } = &exp.outcome {
            let q = stored
                .iter()
                .find(|q| q.1 == r.key.as_escaped() && q.3 == r.raw.text())
                .unwrap();
            assert!(
                q.4.iter().any(|m| m.contains(reason.as_str())),
                "{name}: quarantined without the reason {reason:?}: {:?}",
                q.4
            );
        }
    }
    for q in &stored {
        for secret in &case.secrets {
            for m in &q.4 {
                assert!(
                    !corpus::contains_units(&corpus::unescape(m), secret),
                    "{name}: a quarantine reason quotes the secret: {m}"
                );
            }
        }
    }
    (rows, stored.len())
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 300 {
        return text.to_owned();
    }
    let head: String = text.chars().take(300).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// Cases in flight at once (the server's test pool has 4 connections).
const CONCURRENT_CASES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_corpus_lands_once_in_postgres_or_in_the_quarantine_with_its_reason() {
    let started = Instant::now();
    let corpus = corpus::load();
    assert!(corpus.cases.len() >= 200, "{} cases", corpus.cases.len());
    let app = Arc::new(spawn_app().await);
    let ready_ms = started.elapsed().as_millis();
    let spec = demo_spec();
    let counts_sql: Arc<str> = counts_sql(spec).into();
    let migrated_at_ms = corpus.migrated_at_ms;
    let (mut cases, mut rows, mut quarantined) = (0, 0, 0);
    let mut running = tokio::task::JoinSet::new();
    let mut finish = |done: Option<Result<(usize, usize), tokio::task::JoinError>>| match done {
        Some(Ok((r, q))) => {
            cases += 1;
            rows += r;
            quarantined += q;
        }
        Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        None => {}
    };
    for case in corpus.cases {
        if running.len() >= CONCURRENT_CASES {
            finish(running.join_next().await);
        }
        let (app, counts_sql) = (Arc::clone(&app), Arc::clone(&counts_sql));
        running
            .spawn(async move { run_case(&app, spec, &case, migrated_at_ms, &counts_sql).await });
    }
    while !running.is_empty() {
        finish(running.join_next().await);
    }
    assert!(cases >= 200);
    // Quarantined environments (the kind with a GitHub token) were seen, all sealed.
    let sealed = app
        .count(
            "SELECT count(*) FROM ferry_quarantine WHERE kind = 'environments' AND raw_key_id IS NOT NULL",
            &[],
        )
        .await;
    assert!(
        sealed > 0,
        "no quarantined environment: the sealing went unchecked"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM ferry_quarantine WHERE raw_value LIKE '%TESTtoken%'",
            &[]
        )
        .await,
        0
    );
    println!(
        "hostile corpus over HTTP: {cases} cases, {rows} rows checked in PostgreSQL, {quarantined} quarantine rows checked, in {} ms (server ready after {ready_ms} ms)",
        started.elapsed().as_millis()
    );
}
