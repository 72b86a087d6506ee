//! The hostile localStorage corpus (`tests/corpus/hostile.json`, issue 7) through the real
//! pipeline, exactly as the browser and the server run it.
//!
//! For every case: the pairs go through `inventory` and `process` (what the browser migrator
//! runs), then `wire::build_batches`; each batch is decoded with `wire::decode_batch` and every
//! record re-run with `wire::reprocess` (what the server runs), which must agree with the
//! browser on id, hash and outcome. Each record must have its expected outcome (migrated with
//! exactly the expected column values, or quarantined with the expected codes and reason); no
//! record may be missing or extra; no message may quote a secret; and nothing may be silently
//! changed: every migrated string, the legacy id and the raw record kept for the quarantine
//! must stand for exactly the input's UTF-16 code units (checked with this test's own JSON
//! parser and lossless rule, see the `ferry-corpus` crate in `tests/corpus/`).
//!
//! Every case runs in its own thread with a 2 MiB stack (a spawned thread's default, and more
//! than a browser gives wasm) under `catch_unwind` and a deadline, so a stack overflow, a panic
//! or a hang fails the case by name. The last line printed is the tally RELIABILITY.md quotes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, Cell, Code, Context, Locator, Outcome, Raw, Record};
use ferry_core::spec::{FieldSource, FieldType, IdSource, Source, Spec};
use ferry_core::wire::{self, BatchHeader, BatchLimits};
use ferry_corpus::{self as corpus, At, Case, Expected, J};
use uuid::Uuid;

/// Stack of every case's thread.
const STACK: usize = 2 * 1024 * 1024;
/// A case that has not finished by then is a hang.
const DEADLINE: Duration = Duration::from_secs(60);
/// Depth up to which this test's own parser reads inputs (beyond it, the field checks are
/// skipped: the pipeline refuses such values, and the raw text is compared whole).
const PARSE_DEPTH: usize = 300;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo_spec() -> Spec {
    let text = std::fs::read_to_string(root().join("specs/taskboard.json")).unwrap();
    Spec::parse(&text).unwrap()
}

/// What one case produced.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    cases: u64,
    records: u64,
    valid: u64,
    repaired: u64,
    quarantined: u64,
    whole_keys: u64,
    duplicates: u64,
    unknown_keys: u64,
    batches: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.cases += o.cases;
        self.records += o.records;
        self.valid += o.valid;
        self.repaired += o.repaired;
        self.quarantined += o.quarantined;
        self.whole_keys += o.whole_keys;
        self.duplicates += o.duplicates;
        self.unknown_keys += o.unknown_keys;
        self.batches += o.batches;
    }
}

#[test]
fn every_hostile_case_is_migrated_or_quarantined_with_its_reason_and_nothing_crashes() {
    let corpus = corpus::load();
    assert!(
        corpus.cases.len() >= 200,
        "the corpus has {} cases",
        corpus.cases.len()
    );
    let categories: BTreeSet<&str> = corpus.cases.iter().map(|c| c.category.as_str()).collect();
    for needed in [
        "invalid_json",
        "wrong_type",
        "deep_nesting",
        "big_string",
        "lone_surrogate_nul",
        "proto_keys",
        "big_numbers",
        "dates",
        "sql_html",
        "duplicates",
        "empty",
    ] {
        assert!(categories.contains(needed), "no case of category {needed}");
    }
    let spec = Arc::new(demo_spec());
    let ctx = Context {
        device_id: Uuid::from_u128(0x4f57_0000_0000_4000_8000_0000_0000_0007),
        migrated_at_ms: corpus.migrated_at_ms,
    };
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let started = Instant::now();
    for case in corpus.cases {
        let name = case.name.clone();
        let (tx, rx) = mpsc::channel();
        let spec = Arc::clone(&spec);
        let case_started = Instant::now();
        std::thread::Builder::new()
            .name(name.clone())
            .stack_size(STACK)
            .spawn(move || {
                let result = panic::catch_unwind(AssertUnwindSafe(|| run_case(&spec, &case, &ctx)));
                let _ = tx.send(result.map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "a panic without a message".to_owned())
                }));
            })
            .unwrap();
        match rx.recv_timeout(DEADLINE) {
            Ok(Ok(t)) => tally.add(t),
            Ok(Err(message)) => failures.push(format!("{name}: {message}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                failures.push(format!("{name}: no answer within {DEADLINE:?}: a hang"));
            }
            // The thread died without sending: a stack overflow aborts the process instead,
            // so this is a panic that escaped catch_unwind.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failures.push(format!("{name}: the case's thread died"));
            }
        }
        let took = case_started.elapsed();
        if took > slowest.0 {
            slowest = (took, name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        tally.cases as usize + failures.len(),
        failures.join("\n")
    );
    let elapsed = started.elapsed();
    println!(
        "slowest case: {} in {} ms; whole corpus {} ms",
        slowest.1,
        slowest.0.as_millis(),
        elapsed.as_millis()
    );
    println!(
        "hostile corpus: {} cases, {} records: {} migrated ({} valid, {} repaired), {} quarantined ({} of them whole keys), {} identical duplicates not shipped, {} keys left alone; {} batches re-run by the server side, all agreeing",
        tally.cases,
        tally.records,
        tally.valid + tally.repaired,
        tally.valid,
        tally.repaired,
        tally.quarantined,
        tally.whole_keys,
        tally.duplicates,
        tally.unknown_keys,
        tally.batches
    );
}

/// Runs one case; panics with a message naming the record on any failure.
fn run_case(spec: &Spec, case: &Case, ctx: &Context) -> Tally {
    let name = &case.name;
    let units = case.pairs();
    // The browser reads localStorage into lossless strings; check the rule independently.
    let pairs: Vec<(LosslessString, LosslessString)> = units
        .iter()
        .map(|(k, v)| {
            let (key, value) = (LosslessString::from_utf16(k), LosslessString::from_utf16(v));
            assert_eq!(
                key.as_escaped(),
                corpus::escape_units(k),
                "{name}: key escape"
            );
            assert!(
                value.as_escaped() == corpus::escape_units(v),
                "{name}: value escape differs from the lossless rule"
            );
            assert!(value.to_utf16() == *v, "{name}: value round trip");
            (key, value)
        })
        .collect();

    // Inventory: every key sorted, sizes in UTF-16 bytes, unknown keys reported, not dropped.
    let inventory = pipeline::inventory(spec, &pairs);
    let unknown: Vec<Vec<u16>> = inventory.unknown.iter().map(|s| s.key.to_utf16()).collect();
    assert_eq!(unknown, case.unknown, "{name}: keys left alone");
    let listed: usize =
        inventory.kinds.iter().map(|k| k.keys.len()).sum::<usize>() + inventory.unknown.len();
    assert_eq!(listed, pairs.len(), "{name}: every key is in the inventory");
    let mut sizes: Vec<(Vec<u16>, u64)> = inventory
        .kinds
        .iter()
        .flat_map(|k| &k.keys)
        .chain(&inventory.unknown)
        .map(|s| (s.key.to_utf16(), s.bytes))
        .collect();
    let mut want: Vec<(Vec<u16>, u64)> = units
        .iter()
        .map(|(k, v)| (k.clone(), 2 * (k.len() + v.len()) as u64))
        .collect();
    sizes.sort();
    want.sort();
    assert_eq!(sizes, want, "{name}: key sizes in UTF-16 bytes");

    // The pipeline, twice: deterministic.
    let records = pipeline::process(spec, &pairs, ctx);
    assert_eq!(
        records,
        pipeline::process(spec, &pairs, ctx),
        "{name}: not deterministic"
    );
    let expected = case.expectations();
    let listing = || {
        records
            .iter()
            .map(|r| format!("  {:?} {:?}: {:?}", r.key, r.locator, r.outcome))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        records.len(),
        expected.len(),
        "{name}: {} records, {} expected:\n{}",
        records.len(),
        expected.len(),
        listing()
    );
    let inputs = input_records(spec, &units);
    assert_eq!(inputs.len(), records.len(), "{name}: input record count");

    let mut tally = Tally {
        cases: 1,
        records: records.len() as u64,
        unknown_keys: case.unknown.len() as u64,
        ..Tally::default()
    };
    let mut groups: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for (i, ((record, exp), input)) in records.iter().zip(&expected).zip(&inputs).enumerate() {
        let place = format!("{name}: record {i} ({:?} {:?})", record.key, record.locator);
        assert!(record.key.to_utf16() == exp.key, "{place}: key");
        let at = match &record.locator {
            Locator::Whole => At::Whole,
            Locator::Index(n) => At::Index(*n),
            Locator::MapKey(_) => panic!("{place}: no map kinds in this spec"),
        };
        assert_eq!(at, exp.at, "{place}: position");
        check_outcome(&place, record, &exp.outcome);
        if let Expected::OneOf(g) = &exp.outcome {
            groups.entry(g).or_default().push(record);
        }
        match &record.outcome {
            Outcome::Valid(_) => tally.valid += 1,
            Outcome::Repaired(..) => tally.repaired += 1,
            Outcome::Rejected(_) => {
                tally.quarantined += 1;
                if record.locator == Locator::Whole {
                    tally.whole_keys += 1;
                }
            }
            Outcome::Duplicate(_) => tally.duplicates += 1,
        }
        let kind = &spec.kinds[record.kind];
        if let Some(row) = record.outcome.row() {
            if !exp.fields.is_empty() {
                assert_eq!(
                    exp.fields.len(),
                    kind.fields.len(),
                    "{place}: the corpus lists every column"
                );
                for (column, value) in &exp.fields {
                    let f = kind
                        .fields
                        .iter()
                        .position(|f| &f.column == column)
                        .unwrap_or_else(|| panic!("{place}: no column {column}"));
                    let want = corpus::expected_cell(&kind.fields[f], value, ctx.migrated_at_ms);
                    assert!(
                        row.cells[f] == want,
                        "{place}: column {column} is {}, expected {}",
                        shorten(&format!("{:?}", row.cells[f])),
                        shorten(&format!("{want:?}"))
                    );
                    // The stored (escaped) text un-escapes to the input's code units.
                    if let (Cell::Text(s), J::Str(u)) = (&row.cells[f], value) {
                        let back = LosslessString::from_escaped(s.clone()).unwrap();
                        assert!(back.to_utf16() == *u, "{place}: {column} round trip");
                    }
                }
            }
            if let Some(legacy) = &exp.legacy_id {
                assert_eq!(
                    record
                        .legacy_id
                        .as_ref()
                        .map(LosslessString::to_utf16)
                        .as_ref(),
                    Some(legacy),
                    "{place}: legacy id"
                );
            }
            check_unchanged(&place, spec, record, input);
        }
        check_raw(&place, record, input);
        for note in notes(record) {
            let message = corpus::unescape(&note.message);
            for secret in &case.secrets {
                assert!(
                    !corpus::contains_units(&message, secret),
                    "{place}: a message quotes the secret: {}",
                    note.message
                );
            }
        }
    }
    for (group, members) in groups {
        let kept = members.iter().filter(|r| r.outcome.is_accepted()).count();
        assert_eq!(kept, 1, "{name}: group {group}: exactly one record is kept");
        for r in members.iter().filter(|r| !r.outcome.is_accepted()) {
            assert!(
                matches!(&r.outcome, Outcome::Rejected(n) if n.iter().any(|n| n.code == Code::Duplicate)),
                "{name}: group {group}: {:?}",
                r.outcome
            );
        }
    }
    tally.batches = check_server_agrees(name, spec, &records, ctx);
    tally
}

fn notes(record: &Record) -> &[pipeline::Note] {
    match &record.outcome {
        Outcome::Repaired(_, n) | Outcome::Rejected(n) => n,
        _ => &[],
    }
}

fn code_set(notes: &[pipeline::Note]) -> BTreeSet<String> {
    notes.iter().map(|n| format!("{:?}", n.code)).collect()
}

fn check_outcome(place: &str, record: &Record, expected: &Expected) {
    let want =
        |codes: &[Code]| -> BTreeSet<String> { codes.iter().map(|c| format!("{c:?}")).collect() };
    match (expected, &record.outcome) {
        (Expected::Valid, Outcome::Valid(_)) | (Expected::OneOf(_), _) => {}
        (Expected::Repaired(codes), Outcome::Repaired(_, notes)) => {
            assert_eq!(code_set(notes), want(codes), "{place}: repairs {notes:?}");
        }
        (Expected::Rejected { codes, reason }, Outcome::Rejected(notes)) => {
            assert_eq!(code_set(notes), want(codes), "{place}: reasons {notes:?}");
            assert!(
                notes.iter().any(|n| n.message.contains(reason.as_str())),
                "{place}: no reason contains {reason:?}: {:?}",
                notes
                    .iter()
                    .map(|n| shorten(&n.message))
                    .collect::<Vec<_>>()
            );
        }
        (Expected::Duplicate(of), Outcome::Duplicate(locator)) => {
            let got = match locator {
                Locator::Index(n) => At::Index(*n),
                _ => At::Whole,
            };
            assert_eq!(&got, of, "{place}: duplicate of");
        }
        (want, got) => panic!(
            "{place}: expected {want:?}, got {}",
            shorten(&format!("{got:?}"))
        ),
    }
}

/// The input behind each record, in the pipeline's order: `(key units, value units, the
/// record's JSON as this test parses it, or None when not JSON / too deep)`.
type Input = (Vec<u16>, Vec<u16>, Option<J>);

fn input_records(spec: &Spec, units: &[(Vec<u16>, Vec<u16>)]) -> Vec<Input> {
    let mut out = Vec::new();
    for (k, v) in units {
        let Some(kind) = spec.kind_for_key(&corpus::escape_units(k)) else {
            continue;
        };
        let parsed = corpus::parse(v, PARSE_DEPTH);
        match (&spec.kinds[kind].source, parsed) {
            (Source::Array(_), Some(J::Arr(items))) => {
                out.extend(items.into_iter().map(|j| (k.clone(), v.clone(), Some(j))));
            }
            (_, parsed) => out.push((k.clone(), v.clone(), parsed)),
        }
    }
    out
}

/// The raw record kept for shipping and the quarantine stands for exactly the input.
fn check_raw(place: &str, record: &Record, (_, value, parsed): &Input) {
    match &record.raw {
        Raw::Text(t) => assert!(
            t.to_utf16() == *value,
            "{place}: raw text differs from the value"
        ),
        Raw::Json(text) => {
            let units = corpus::unescape(text);
            let raw = corpus::parse(&units, PARSE_DEPTH)
                .unwrap_or_else(|| panic!("{place}: the raw record is not JSON"));
            let input = parsed.as_ref().unwrap_or_else(|| {
                panic!("{place}: a JSON raw record from a value that is not JSON")
            });
            assert!(
                corpus::same_data(&raw, input),
                "{place}: the raw record is not the input record: {}",
                shorten(text)
            );
        }
    }
}

/// Every migrated value read from the input is the input's value, code unit for code unit.
fn check_unchanged(place: &str, spec: &Spec, record: &Record, (key, value, parsed): &Input) {
    let kind = &spec.kinds[record.kind];
    let row = record.outcome.row().unwrap();
    let legacy_enum: BTreeSet<&str> = notes(record)
        .iter()
        .filter(|n| n.code == Code::LegacyEnum)
        .filter_map(|n| n.field.as_deref())
        .collect();
    if let (IdSource::Field(p), Some(j)) = (&kind.id.from, parsed) {
        let legacy = record.legacy_id.as_ref().unwrap().to_utf16();
        match j.get(p) {
            Some(J::Str(u)) => assert!(legacy == *u, "{place}: legacy id changed"),
            Some(J::Num(n)) => assert_eq!(
                String::from_utf16(&legacy).unwrap(),
                *n,
                "{place}: legacy id"
            ),
            other => panic!("{place}: accepted with id {other:?}"),
        }
    }
    let prefix_len = match &kind.source {
        Source::Prefix(p) => p.encode_utf16().count(),
        _ => 0,
    };
    for (field, cell) in kind.fields.iter().zip(&row.cells) {
        let source: Option<J> = match &field.from {
            FieldSource::Field(p) => parsed.as_ref().and_then(|j| j.get(p)).cloned(),
            FieldSource::Key => Some(J::Str(key.clone())),
            FieldSource::KeySuffix => Some(J::Str(key[prefix_len..].to_vec())),
            FieldSource::Value => Some(match (&record.raw, parsed) {
                (Raw::Text(_), _) => J::Str(value.clone()),
                (_, Some(j)) => j.clone(),
                (_, None) => panic!("{place}: accepted from a value this test cannot parse"),
            }),
            FieldSource::MapKey | FieldSource::Constant => None,
        };
        let Some(source) = source.filter(|j| *j != J::Null) else {
            continue;
        };
        let column = &field.column;
        match (cell, &source) {
            (Cell::Text(_), _) if legacy_enum.contains(field.label()) => {}
            (Cell::Text(s), J::Str(u)) => {
                assert!(corpus::unescape(s) == *u, "{place}: {column} changed");
            }
            (Cell::TextArray(items), J::Arr(list)) => {
                assert_eq!(items.len(), list.len(), "{place}: {column} length");
                for (s, j) in items.iter().zip(list) {
                    assert!(
                        Some(corpus::unescape(s).as_slice()) == j.units(),
                        "{place}: {column} item changed"
                    );
                }
            }
            (Cell::Json(v), j) => {
                assert!(*v == corpus::to_value(j), "{place}: {column} changed");
                if let FieldType::Json { .. } = field.ty {
                    let back =
                        corpus::parse(&corpus::unescape(&pipeline::canonical(v)), PARSE_DEPTH)
                            .unwrap();
                    assert!(corpus::same_data(&back, j), "{place}: {column} changed");
                }
            }
            (Cell::Timestamp(_) | Cell::Bool(_) | Cell::Int(_) | Cell::Float(_), _) => {}
            (cell, j) => panic!("{place}: {column}: cell {cell:?} from {j:?}"),
        }
    }
}

/// Ships the records as the browser does and re-runs each on the "server" side: same id, same
/// hash, same outcome; the rejected ones travel with their raw value and reasons. Returns the
/// number of batches.
fn check_server_agrees(name: &str, spec: &Spec, records: &[Record], ctx: &Context) -> u64 {
    let migration = Uuid::from_u128(0x4f57_0000_0000_4000_8000_0000_0000_0008);
    let header = BatchHeader::new(spec, migration, ctx);
    let batches = wire::build_batches(
        spec,
        &header,
        records,
        0..records.len(),
        0,
        BatchLimits::default(),
    );
    let mut shipped = BTreeSet::new();
    for batch in &batches {
        let decoded = wire::decode_batch(spec, &batch.body)
            .unwrap_or_else(|e| panic!("{name}: batch {} does not decode: {e}", batch.sequence));
        let (accepted, rejected): (Vec<usize>, Vec<usize>) = batch
            .members
            .iter()
            .partition(|&&i| records[i].outcome.is_accepted());
        assert_eq!(
            decoded.records.len(),
            accepted.len(),
            "{name}: accepted in batch"
        );
        assert_eq!(
            decoded.rejected.len(),
            rejected.len(),
            "{name}: rejected in batch"
        );
        for (item, &i) in decoded.records.iter().zip(&accepted) {
            let browser = &records[i];
            assert!(
                item.key == browser.key && item.raw == browser.raw,
                "{name}: record {i} on the wire"
            );
            let server = wire::reprocess(spec, &decoded.header, item);
            assert_eq!(server.id, browser.id, "{name}: record {i}: id");
            assert_eq!(server.hash, browser.hash, "{name}: record {i}: hash");
            assert!(
                server.outcome == browser.outcome,
                "{name}: record {i}: the server's outcome {} differs from the browser's {}",
                shorten(&format!("{:?}", server.outcome)),
                shorten(&format!("{:?}", browser.outcome))
            );
            assert!(shipped.insert(i), "{name}: record {i} shipped twice");
        }
        for (item, &i) in decoded.rejected.iter().zip(&rejected) {
            let browser = &records[i];
            assert!(
                item.key == browser.key && item.raw == browser.raw,
                "{name}: rejected {i} on the wire"
            );
            assert_eq!(
                item.reasons.as_slice(),
                notes(browser),
                "{name}: reasons of {i}"
            );
            assert!(shipped.insert(i), "{name}: record {i} shipped twice");
        }
        if batch.body.len() > BatchLimits::default().max_bytes {
            assert_eq!(
                batch.members.len(),
                1,
                "{name}: an oversized batch holds one record"
            );
        }
    }
    for (i, r) in records.iter().enumerate() {
        let is_duplicate = matches!(r.outcome, Outcome::Duplicate(_));
        assert_eq!(
            shipped.contains(&i),
            !is_duplicate,
            "{name}: record {i} shipped once unless an identical duplicate"
        );
    }
    batches.len() as u64
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 300 {
        return text.to_owned();
    }
    let head: String = text.chars().take(300).collect();
    format!("{head}… ({} bytes)", text.len())
}
