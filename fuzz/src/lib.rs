//! Ferry's fuzz targets, as plain functions.
//!
//! Each libFuzzer binary in `fuzz_targets/` is one line calling a function here, so the same
//! checks also run under `cargo test` (every seed and every saved crash in `corpus/` goes
//! through its target, see the tests at the bottom) and a crash reproduces without nightly.
//!
//! - [`spec_parse`]: bytes → [`Spec::parse`]; never panics; a spec that parses can run the
//!   pipeline and the batch builder.
//! - [`pipeline`]: bytes → localStorage pairs → inventory, process, batches; every record is
//!   accounted for and every string survives the lossless rule.
//! - [`batch_decode`]: bytes → the server's decoding and re-validation of a `ferry-batch/1`
//!   body; and the round trip browser → batch → server gives the same ids, hashes and outcomes.
//! - [`batch_fields`]: a batch with NUL and numbers at and past every bound put into its
//!   fields → the server's decoding: refused with a 4xx error value, or accepted with nothing
//!   PostgreSQL would refuse.
//! - [`backup_open`]: bytes → backup header parse and opening; a sealed backup opens only
//!   when not one byte of it was changed.
//!
//! Inputs holding localStorage pairs use a small byte encoding ([`decode_pairs`]) that can
//! carry any UTF-16 string, lone surrogates and NUL included, and stays readable for the
//! JSON dictionary: strings are UTF-8, separated by `0xFF`; `0xFE` followed by two bytes is
//! one raw UTF-16 code unit (little-endian).

use std::collections::HashMap;
use std::sync::OnceLock;

use ferry_core::backup::{self, BackupError, BackupMetadata, OpeningKey, Pair, SealingKey};
use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, Cell, Context, Keep, Locator, Outcome, Raw, Record};
use ferry_core::spec::{Source, Spec};
use ferry_core::wire::{self, BatchHeader, BatchLimits, WireLocator};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The demo app's spec.
pub const TASKBOARD_SPEC: &str = include_str!("../../specs/taskboard.json");
/// The second example spec.
pub const JOTTER_SPEC: &str = include_str!("../../specs/jotter.json");

/// Separates the strings of an encoded pair list (never a byte of UTF-8).
pub const STRING_SEPARATOR: u8 = 0xFF;
/// Starts a raw UTF-16 code unit in an encoded pair list (never a byte of UTF-8).
pub const UNIT_ESCAPE: u8 = 0xFE;
/// At most this many pairs are read from one input.
pub const MAX_PAIRS: usize = 64;

/// The device id and migration start every target uses.
pub fn context() -> Context {
    Context {
        device_id: Uuid::from_u128(0x6a1c_03d1_77e4_4b7e_9f2b_5c8e_1d40_a9f3),
        migrated_at_ms: 1_764_000_000_000,
    }
}

/// The migration id of every batch built here.
pub fn migration_id() -> Uuid {
    Uuid::from_u128(0x0d3c_6f7e_2b11_4c55_8e0a_9b7d_35c2_e611)
}

/// The two example specs, parsed once: `[taskboard, jotter]`.
pub fn specs() -> &'static [Spec; 2] {
    static SPECS: OnceLock<[Spec; 2]> = OnceLock::new();
    SPECS.get_or_init(|| {
        let parse = |text: &str| match Spec::parse(text) {
            Ok(spec) => spec,
            Err(e) => panic!("an example spec does not parse: {e}"),
        };
        [parse(TASKBOARD_SPEC), parse(JOTTER_SPEC)]
    })
}

// ---------------------------------------------------------------------------------------------
// The pair encoding.
// ---------------------------------------------------------------------------------------------

/// Reads localStorage pairs (as UTF-16 code units) from fuzz bytes: strings alternate key,
/// value; a missing last value is empty; at most [`MAX_PAIRS`] pairs.
pub fn decode_pairs(data: &[u8]) -> Vec<(Vec<u16>, Vec<u16>)> {
    let mut strings: Vec<Vec<u16>> = Vec::new();
    let mut current: Vec<u16> = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let flush = |current: &mut Vec<u16>, bytes: &[u8]| {
        current.extend(String::from_utf8_lossy(bytes).encode_utf16());
    };
    while i < data.len() && strings.len() < 2 * MAX_PAIRS {
        match data[i] {
            UNIT_ESCAPE => {
                flush(&mut current, &data[text_start..i]);
                if let (Some(&lo), Some(&hi)) = (data.get(i + 1), data.get(i + 2)) {
                    current.push(u16::from_le_bytes([lo, hi]));
                }
                i = (i + 3).min(data.len());
                text_start = i;
            }
            STRING_SEPARATOR => {
                flush(&mut current, &data[text_start..i]);
                strings.push(std::mem::take(&mut current));
                i += 1;
                text_start = i;
            }
            _ => i += 1,
        }
    }
    if strings.len() < 2 * MAX_PAIRS && (text_start < data.len() || !current.is_empty()) {
        flush(&mut current, &data[text_start..i]);
        strings.push(current);
    }
    let mut pairs = Vec::with_capacity(strings.len().div_ceil(2));
    let mut it = strings.into_iter();
    while let Some(key) = it.next() {
        pairs.push((key, it.next().unwrap_or_default()));
    }
    pairs
}

/// Writes pairs in the encoding [`decode_pairs`] reads (for seeds).
pub fn encode_pairs(pairs: &[(Vec<u16>, Vec<u16>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, units) in pairs.iter().flat_map(|(k, v)| [k, v]).enumerate() {
        if i > 0 {
            out.push(STRING_SEPARATOR);
        }
        for decoded in char::decode_utf16(units.iter().copied()) {
            match decoded {
                Ok(c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                Err(lone) => {
                    out.push(UNIT_ESCAPE);
                    out.extend_from_slice(&lone.unpaired_surrogate().to_le_bytes());
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The lossless rule.
// ---------------------------------------------------------------------------------------------

/// Escapes `units` and checks that the escaped form gives them back exactly, by every road a
/// string takes: `to_utf16`, `from_escaped`, serde JSON (the wire), and `JSON.stringify` text
/// read by [`pipeline::parse_json`] (a legacy app's stored value).
pub fn lossless(units: &[u16]) -> LosslessString {
    let s = LosslessString::from_utf16(units);
    assert_eq!(
        s.to_utf16(),
        units,
        "to_utf16(from_utf16(u)) != u for {s:?}"
    );
    assert_eq!(s.utf16_len(), units.len(), "utf16_len of {s:?}");
    assert!(
        !s.as_escaped().contains('\0'),
        "raw NUL in escaped form {s:?}"
    );
    assert_eq!(
        LosslessString::from_escaped(s.as_escaped().to_owned()).as_ref(),
        Ok(&s),
        "the escaped form is refused by from_escaped"
    );
    let unicode = String::from_utf16(units).ok();
    assert_eq!(s.to_unicode(), unicode, "to_unicode of {s:?}");
    if let Some(text) = &unicode {
        assert_eq!(
            LosslessString::from_unicode(text),
            s,
            "from_unicode disagrees with from_utf16"
        );
    }
    let json = serde_json::to_string(&s).unwrap_or_else(|e| panic!("serialising {s:?}: {e}"));
    let back: Result<LosslessString, _> = serde_json::from_str(&json);
    assert_eq!(
        back.ok().as_ref(),
        Some(&s),
        "serde JSON round trip of {s:?} via {json}"
    );
    let stored = LosslessString::from_unicode(&js_stringify(units));
    let parsed = pipeline::parse_json(stored.as_escaped());
    assert_eq!(
        parsed.ok(),
        Some(Value::String(s.as_escaped().to_owned())),
        "JSON.stringify text {stored:?} does not parse to the escaped form {s:?}"
    );
    s
}

/// What JavaScript's `JSON.stringify` writes for a string of these code units (ES2019
/// well-formed stringify: lone surrogates as lowercase `\udxxx`).
pub fn js_stringify(units: &[u16]) -> String {
    let mut out = String::with_capacity(units.len() + 2);
    out.push('"');
    for decoded in char::decode_utf16(units.iter().copied()) {
        match decoded {
            Ok('"') => out.push_str("\\\""),
            Ok('\\') => out.push_str("\\\\"),
            Ok('\u{8}') => out.push_str("\\b"),
            Ok('\u{c}') => out.push_str("\\f"),
            Ok('\n') => out.push_str("\\n"),
            Ok('\r') => out.push_str("\\r"),
            Ok('\t') => out.push_str("\\t"),
            Ok(c) if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            Ok(c) => out.push(c),
            Err(lone) => out.push_str(&format!("\\u{:04x}", lone.unpaired_surrogate())),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Target: spec_parse.
// ---------------------------------------------------------------------------------------------

/// Values every kind of a fuzzed spec is run over when the spec parses.
const PROBE_VALUES: [&str; 5] = [
    "[]",
    "{}",
    r#"[{"id":1,"title":"t"},{"id":"a"}]"#,
    r#"{"a":{"id":"a","x":[1,"2",null,true]}}"#,
    "not json",
];

/// Spec text → [`Spec::parse`]. Refusals name at least one problem; a spec that parses expects
/// each table once (kinds may share one), finds each kind's own key, and runs the pipeline and
/// the batch builder.
pub fn spec_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let spec = match Spec::parse(&text) {
        Ok(spec) => spec,
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal without a problem");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let tables: std::collections::BTreeSet<&str> =
        spec.kinds.iter().map(|k| k.table.as_str()).collect();
    assert_eq!(spec.expected_tables().len(), tables.len());
    let mut pairs = Vec::new();
    for (i, kind) in spec.kinds.iter().enumerate() {
        let key = match &kind.source {
            // A key under the prefix that no kind names exactly (an exact key wins over a
            // prefix): each such kind rules out one of these, so one of them is free.
            Source::Prefix(p) => (1..=spec.kinds.len() + 1)
                .map(|n| format!("{p}{}", "x".repeat(n)))
                .find(|key| {
                    !spec
                        .kinds
                        .iter()
                        .any(|k| !matches!(k.source, Source::Prefix(_)) && k.source.key() == key)
                })
                .unwrap_or_default(),
            other => other.key().to_owned(),
        };
        assert!(
            spec.kinds_needing_key(&key).contains(&i),
            "kind {} does not claim its key {key:?}",
            i
        );
        for value in PROBE_VALUES {
            pairs.push((
                LosslessString::from_unicode(&key),
                LosslessString::from_unicode(value),
            ));
        }
    }
    let ctx = context();
    let records = pipeline::process(&spec, &pairs, &ctx);
    let header = BatchHeader::new(&spec, migration_id(), &ctx);
    for batch in wire::build_batches(
        &spec,
        &header,
        &records,
        0..records.len(),
        0,
        BatchLimits::default(),
    ) {
        let decoded = wire::decode_batch(&spec, &batch.body);
        assert!(
            decoded.is_ok(),
            "a built batch does not decode: {decoded:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Target: pipeline.
// ---------------------------------------------------------------------------------------------

/// The spec, batch limits and pairs an input of [`pipeline`] or [`batch_decode`] stands for:
/// byte 0 picks the spec, bytes 1–2 the limits, the rest are pairs.
struct PairsInput {
    spec: &'static Spec,
    limits: BatchLimits,
    pairs: Vec<(LosslessString, LosslessString)>,
}

fn pairs_input(data: &[u8]) -> Option<PairsInput> {
    let (&[which, records, bytes], rest) = data.split_first_chunk::<3>()?;
    let limits = BatchLimits {
        max_records: usize::from(records) + 1,
        max_bytes: if bytes == 0 {
            BatchLimits::default().max_bytes
        } else {
            usize::from(bytes) * 64
        },
    };
    let pairs = decode_pairs(rest)
        .iter()
        .map(|(k, v)| (lossless(k), lossless(v)))
        .collect();
    Some(PairsInput {
        spec: &specs()[usize::from(which & 1)],
        limits,
        pairs,
    })
}

/// An accepted record's cells by column name, sorted; `None` for one not accepted.
fn row_by_column(spec: &Spec, r: &Record) -> Option<Vec<(String, Cell)>> {
    let row = r.outcome.row()?;
    let mut cells: Vec<_> = spec.kinds[r.kind]
        .fields
        .iter()
        .map(|f| f.column.clone())
        .zip(row.cells.iter().cloned())
        .collect();
    cells.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Some(cells)
}

/// Whether `r` had `twin`'s row, column by column, before duplicates were settled: its key
/// processed again on its own (every pair with that key: the fuzzed pairs may repeat one).
fn had_row_before_settling(
    spec: &Spec,
    pairs: &[(LosslessString, LosslessString)],
    r: &Record,
    twin: &Record,
    ctx: &Context,
) -> bool {
    let twin_row = row_by_column(spec, twin);
    pairs
        .iter()
        .filter(|(k, _)| *k == r.key)
        .any(|(key, value)| {
            let mut alone = Vec::new();
            let mut out = pipeline::Out {
                records: &mut alone,
                keep: Keep::All,
            };
            pipeline::process_key(spec, r.kind, key, value, ctx, &mut out);
            alone
                .iter()
                .any(|a| a.locator == r.locator && row_by_column(spec, a) == twin_row)
        })
}

/// How many records a value holds, counted without the pipeline: the array's items or the
/// map's entries for a container of the right type, else one (the whole value).
fn records_found(spec: &Spec, kind: usize, value: &LosslessString) -> usize {
    match (
        &spec.kinds[kind].source,
        pipeline::parse_json(value.as_escaped()),
    ) {
        (Source::Array(_), Ok(Value::Array(items))) => items.len(),
        (Source::Map(_), Ok(Value::Object(map))) => map.len(),
        _ => 1,
    }
}

/// localStorage pairs → inventory → process → batches. Checks: the inventory places every key
/// once and adds its bytes up; every record found is accounted for (accepted + rejected +
/// duplicates = found, per kind); accepted records have ids and no two share one; duplicates
/// point at an accepted twin; the batches carry every shipped record exactly once, in order,
/// within their limits, and decode.
pub fn pipeline(data: &[u8]) {
    let Some(PairsInput {
        spec,
        limits,
        pairs,
    }) = pairs_input(data)
    else {
        return;
    };
    let ctx = context();

    let inventory = pipeline::inventory(spec, &pairs);
    assert_eq!(inventory.kinds.len(), spec.kinds.len());
    let placed: usize = inventory.kinds.iter().map(|k| k.keys.len()).sum();
    assert_eq!(
        placed + inventory.unknown.len(),
        pairs.len(),
        "inventory lost or added keys"
    );
    let mut known_bytes = 0;
    for kind in &inventory.kinds {
        let sum: u64 = kind.keys.iter().map(|k| k.bytes).sum();
        assert_eq!(kind.bytes, sum, "bytes of kind {}", kind.kind);
        known_bytes += sum;
    }
    assert_eq!(inventory.known_bytes, known_bytes);

    let records = pipeline::process(spec, &pairs, &ctx);
    // The browser's lean records (no rows, duplicates settled on rows derived again) have the
    // same outcomes.
    let mut trimmed = records.clone();
    trimmed.iter_mut().for_each(|r| Keep::Shipping.trim(r));
    assert!(
        pipeline::process_keeping(spec, &pairs, &ctx, Keep::Shipping) == trimmed,
        "Keep::Shipping changed an outcome"
    );
    let mut found = vec![0usize; spec.kinds.len()];
    for (key, value) in &pairs {
        if let Some(kind) = spec.kind_for_key(key.as_escaped()) {
            found[kind] += records_found(spec, kind, value);
        }
    }
    let summary = pipeline::summarize(spec, &records);
    for (kind, s) in summary.iter().enumerate() {
        let accounted = s.valid + s.repaired + s.rejected + s.duplicates;
        assert_eq!(
            accounted, found[kind] as u64,
            "kind {}: accepted + rejected + duplicates = {accounted}, found {}",
            s.kind, found[kind]
        );
    }
    assert_eq!(records.len(), found.iter().sum::<usize>());

    let mut accepted: HashMap<(usize, Uuid), usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        assert!(r.kind < spec.kinds.len());
        match &r.outcome {
            Outcome::Valid(row) | Outcome::Repaired(row, _) => {
                let Some(id) = r.id else {
                    panic!("accepted record {i} has no id: {r:?}");
                };
                assert_eq!(
                    row.cells.len(),
                    spec.kinds[r.kind].fields.len(),
                    "row width"
                );
                let twin = accepted.insert((r.kind, id), i);
                assert!(
                    twin.is_none(),
                    "records {twin:?} and {i} are both accepted with id {id}"
                );
            }
            Outcome::Rejected(notes) => {
                assert!(!notes.is_empty(), "record {i} rejected without a reason");
                assert!(notes.iter().all(|n| !n.message.is_empty()));
            }
            Outcome::Duplicate(_) => {}
        }
        if let Outcome::Repaired(_, notes) = &r.outcome {
            assert!(!notes.is_empty(), "record {i} repaired without a note");
        }
    }
    for (i, r) in records.iter().enumerate() {
        if let Outcome::Duplicate(at) = &r.outcome {
            let twin = r.id.and_then(|id| accepted.get(&(r.kind, id)));
            let Some(&twin) = twin else {
                panic!("duplicate record {i} has no accepted twin: {r:?}");
            };
            // The same raw record, or (a renamed copy in a kind sharing the table, or a copy
            // whose repairs give the same row) the same row column by column.
            assert!(
                records[twin].hash == r.hash
                    || had_row_before_settling(spec, &pairs, r, &records[twin], &ctx),
                "duplicate {i} differs from its twin: {:?} / {:?}",
                records[twin].outcome,
                r.outcome
            );
            assert_eq!(
                &records[twin].locator, at,
                "duplicate {i} names the wrong twin"
            );
        }
    }

    let first_sequence = 7;
    let header = BatchHeader::new(spec, migration_id(), &ctx);
    let batches = wire::build_batches(
        spec,
        &header,
        &records,
        0..records.len(),
        first_sequence,
        limits,
    );
    let shipped: Vec<usize> = (0..records.len())
        .filter(|&i| !matches!(records[i].outcome, Outcome::Duplicate(_)))
        .collect();
    let members: Vec<usize> = batches
        .iter()
        .flat_map(|b| b.members.iter().copied())
        .collect();
    assert_eq!(
        members, shipped,
        "batches do not carry every shipped record exactly once"
    );
    for (n, batch) in batches.iter().enumerate() {
        assert_eq!(batch.sequence, first_sequence + n as u32);
        assert!(!batch.members.is_empty(), "empty batch {n}");
        assert!(
            batch.members.len() <= limits.max_records,
            "batch {n} over the record limit"
        );
        assert!(
            batch.body.len() <= limits.max_bytes || batch.members.len() == 1,
            "batch {n} holds {} records in {} bytes, over the limit of {}",
            batch.members.len(),
            batch.body.len(),
            limits.max_bytes
        );
        let decoded = match wire::decode_batch(spec, &batch.body) {
            Ok(b) => b,
            Err(e) => panic!("batch {n} does not decode: {e}"),
        };
        assert_eq!(decoded.header.sequence, batch.sequence);
        assert_eq!(
            decoded.records.len() + decoded.rejected.len(),
            batch.members.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Target: batch_decode.
// ---------------------------------------------------------------------------------------------

/// Byte 0 even: the rest is a request body, decoded and re-validated as the server does
/// (`ingest::reprocess_batch`); a batch that decodes serialises back to itself, and every record
/// the server accepts carries the id and hash it computed. Byte 0 odd: the rest is a
/// [`pipeline`] input whose batches must come out of the server's decoding with the browser's
/// ids, hashes and outcomes.
pub fn batch_decode(data: &[u8]) {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 0 => {
            let spec = &specs()[usize::from(mode >> 1 & 1)];
            decode_as_server(spec, rest);
        }
        Some((_, rest)) => round_trip(rest),
        None => {}
    }
}

fn decode_as_server(spec: &Spec, body: &[u8]) {
    let Ok(batch) = wire::decode_batch(spec, body) else {
        return;
    };
    let again = serde_json::to_vec(&batch).unwrap_or_else(|e| panic!("re-encoding a batch: {e}"));
    match wire::decode_batch(spec, &again) {
        Ok(b) => assert_eq!(b, batch, "a decoded batch does not survive re-encoding"),
        Err(e) => panic!("a re-encoded batch does not decode: {e}"),
    }
    let records = wire::reprocess_records(spec, &batch);
    assert_eq!(records.len(), batch.records.len());
    // A ferry-batch/2 digest that matches lets every record be judged on its own; one that
    // does not rejects the whole list.
    let digest_holds = batch
        .header
        .digest
        .is_none_or(|d| d == wire::records_digest(records.iter().map(|r| &r.hash)));
    for (item, record) in batch.records.iter().zip(&records) {
        assert_eq!(record.key, item.key);
        assert_eq!(record.locator, Locator::from(item.at.clone()));
        assert!(digest_holds || !record.outcome.is_accepted());
        if record.outcome.is_accepted() {
            assert_eq!(record.id, Some(item.id), "accepted with another id");
            if let Some(hash) = item.hash {
                assert_eq!(record.hash, hash, "accepted with another hash");
            }
            assert_eq!(spec.kind_index(&item.kind), Some(record.kind));
        }
    }
    for item in &batch.rejected {
        let _ = spec.kind_index(&item.kind);
        let _ = Locator::from(item.at.clone());
        let _ = item.hash.to_hex();
    }
}

fn round_trip(data: &[u8]) {
    let Some(PairsInput {
        spec,
        limits,
        pairs,
    }) = pairs_input(data)
    else {
        return;
    };
    let ctx = context();
    let records = pipeline::process(spec, &pairs, &ctx);
    let header = BatchHeader::new(spec, migration_id(), &ctx);
    for batch in wire::build_batches(spec, &header, &records, 0..records.len(), 0, limits) {
        let decoded = match wire::decode_batch(spec, &batch.body) {
            Ok(b) => b,
            Err(e) => panic!("batch {} does not decode: {e}", batch.sequence),
        };
        let (sent, refused): (Vec<&Record>, Vec<&Record>) = batch
            .members
            .iter()
            .map(|&i| &records[i])
            .partition(|r| r.outcome.is_accepted() && r.id.is_some());
        assert_eq!(decoded.records.len(), sent.len());
        assert_eq!(decoded.rejected.len(), refused.len());
        assert!(
            decoded.header.digest.is_some(),
            "a ferry-batch/2 batch without digest"
        );
        let servers = wire::reprocess_records(spec, &decoded);
        for ((item, server), browser) in decoded.records.iter().zip(servers).zip(sent) {
            assert_eq!(item.hash, None, "a ferry-batch/2 record with a hash");
            assert_eq!(
                server.id, browser.id,
                "the server derives another id for {browser:?}"
            );
            assert_eq!(
                server.hash, browser.hash,
                "the server computes another hash for {browser:?}"
            );
            assert_eq!(server.key, browser.key);
            assert_eq!(server.locator, browser.locator);
            assert_eq!(server.raw, browser.raw);
            assert_eq!(
                server.outcome, browser.outcome,
                "the server's outcome differs from the browser's for {:?} at {:?}",
                browser.key, browser.locator
            );
        }
        for (item, browser) in decoded.rejected.iter().zip(refused) {
            assert_eq!(item.key, browser.key);
            assert_eq!(Locator::from(item.at.clone()), browser.locator);
            assert_eq!(item.at, WireLocator::from(&browser.locator));
            assert_eq!(item.hash, browser.hash);
            assert_eq!(&item.raw, &browser.raw);
            if let Outcome::Rejected(notes) = &browser.outcome {
                assert_eq!(&item.reasons, notes);
            }
            if let Raw::Text(t) = &item.raw {
                assert!(LosslessString::from_escaped(t.as_escaped().to_owned()).is_ok());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target: batch_fields.
// ---------------------------------------------------------------------------------------------

/// At most this many edits are read from one [`batch_fields`] input.
pub const MAX_FIELD_EDITS: usize = 8;

/// A string the edits put where a number too large for any JSON value type must go; the
/// serialised batch gets the literal instead (serde_json's `Value` cannot hold it).
const HUGE_PLACEHOLDER: &str = "\u{1}ferry-fuzz-huge\u{1}";

/// Number literals no `Value` holds: past `u64`, past `f64`.
const HUGE_LITERALS: [&str; 3] = ["123456789012345678901234567890", "-1e400", "1e400"];

/// Byte 0: the spec (bit 0) and which huge literal stands for [`HUGE_PLACEHOLDER`] (bits 1–2).
/// Byte 1: how many edits follow (at most [`MAX_FIELD_EDITS`]), 3 bytes each:
/// `[field, value, position]`. The rest is a request body (the seeds: real batches). When it
/// is JSON, each edit puts a hostile value — NUL in a string (whole, inserted at `position`,
/// or in an object key), or a number at or past a bound (`i64`, `u64`, `u32`, `f64`, the
/// timestamp range, and past them all) — into the `field`-th leaf; then the body goes through
/// the server's decoding ([`check_hostile_batch`]).
pub fn batch_fields(data: &[u8]) {
    let Some((&[mode, edits], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let spec = &specs()[usize::from(mode & 1)];
    let huge = HUGE_LITERALS[usize::from(mode >> 1) % HUGE_LITERALS.len()];
    let count = usize::from(edits) % (MAX_FIELD_EDITS + 1);
    let Some((edits, body)) = rest.split_at_checked(count * 3) else {
        return;
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        check_hostile_batch(spec, body);
        return;
    };
    for edit in edits.chunks_exact(3) {
        apply_hostile_edit(&mut value, edit[0], edit[1], edit[2]);
    }
    let text = serde_json::to_string(&value)
        .unwrap_or_else(|e| panic!("re-encoding an edited batch: {e}"))
        .replace(&Value::from(HUGE_PLACEHOLDER).to_string(), huge);
    check_hostile_batch(spec, text.as_bytes());
}

/// The status the server answers a refused batch with: every [`wire::WireError`] is the
/// caller's fault, so a 4xx. Exhaustive on purpose: a new error variant must be placed here
/// (and in the server's `ingest_error`, whose unit test checks the same table).
pub fn refusal_status(error: &wire::WireError) -> u16 {
    use wire::WireError as E;
    match error {
        E::Decode(_)
        | E::Format { .. }
        | E::Nul { .. }
        | E::Hashes { .. }
        | E::MigratedAtOutOfRange { .. }
        | E::SpecMismatch { .. } => 400,
    }
}

/// Decodes `body` as the server does. Refused: the error is a value with a 4xx status and a
/// message. Accepted: nothing in it can fail in PostgreSQL — no NUL in any string that is
/// stored as text (header, kind, key, raw value, reasons), `migrated_at_ms` inside the years
/// 0001–9999 — and it passes the [`batch_decode`] checks (re-encoding, re-validation).
fn check_hostile_batch(spec: &Spec, body: &[u8]) {
    let batch = match wire::decode_batch(spec, body) {
        Ok(batch) => batch,
        Err(error) => {
            assert!((400..500).contains(&refusal_status(&error)));
            assert!(!error.to_string().is_empty(), "a refusal without a message");
            return;
        }
    };
    let h = &batch.header;
    let no_nul = |what: &str, text: &str| assert!(!text.contains('\0'), "NUL accepted in {what}");
    for (what, text) in [
        ("format", h.format.as_str()),
        ("app", &h.app),
        ("spec_version", &h.spec_version),
    ] {
        no_nul(what, text);
    }
    assert!(
        (ferry_core::timestamp::MIN_MS..=ferry_core::timestamp::MAX_MS).contains(&h.migrated_at_ms),
        "migrated_at_ms {} accepted",
        h.migrated_at_ms
    );
    for r in &batch.records {
        no_nul("a record's kind", &r.kind);
        no_nul("a record's key", r.key.as_escaped());
        no_nul("a record's raw value", r.raw.text());
    }
    for r in &batch.rejected {
        no_nul("a rejected kind", &r.kind);
        no_nul("a rejected key", r.key.as_escaped());
        no_nul("a rejected raw value", r.raw.text());
        for note in &r.reasons {
            no_nul("a reason", &note.message);
            no_nul(
                "a reason's field",
                note.field.as_deref().unwrap_or_default(),
            );
        }
    }
    decode_as_server(spec, body);
}

/// One step of a path into a JSON value.
enum Step {
    Key(String),
    Index(usize),
}

/// Every object key of `value`, with the path of the object holding it, depth first.
fn key_paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, String)>) {
    let copy = |path: &[Step]| -> Vec<Step> {
        path.iter()
            .map(|s| match s {
                Step::Key(k) => Step::Key(k.clone()),
                Step::Index(i) => Step::Index(*i),
            })
            .collect()
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                out.push((copy(prefix), key.clone()));
                prefix.push(Step::Key(key.clone()));
                key_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                key_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The value at `path` inside `value`.
fn at_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// The hostile value number `which` for a leaf holding `original`.
fn hostile_value(original: &Value, which: u8, position: u8) -> Value {
    let with_nul = |text: &str| {
        let chars: Vec<char> = text.chars().collect();
        let at = usize::from(position) % (chars.len() + 1);
        let mut out: String = chars[..at].iter().collect();
        out.push('\0');
        out.extend(&chars[at..]);
        out
    };
    match which % 20 {
        0 => Value::from("\0"),
        1 => Value::from(with_nul(original.as_str().unwrap_or_default())),
        2 => Value::from(i64::MIN),
        3 => Value::from(i64::MAX),
        4 => Value::from(u64::MAX),
        5 => Value::from(-1),
        6 => Value::from(u64::from(u32::MAX) + 1),
        7 => Value::from(f64::MAX),
        8 => Value::from(f64::MIN),
        9 => Value::from(0.5),
        10 => Value::from(ferry_core::timestamp::MIN_MS - 1),
        11 => Value::from(ferry_core::timestamp::MAX_MS + 1),
        12 => Value::from(ferry_core::timestamp::MIN_MS),
        13 => Value::from(ferry_core::timestamp::MAX_MS),
        14 => Value::from(-0.0),
        15 => Value::from(9_007_199_254_740_993_u64),
        16 => Value::Null,
        17 => Value::from(""),
        18 => Value::from(HUGE_PLACEHOLDER),
        _ => Value::from(f64::from(u32::MAX) + 0.5),
    }
}

/// Puts hostile value `which` into the `field`-th leaf of `value` (depth first), or, when
/// `which` has its top bit set, a NUL into the `field`-th object key.
fn apply_hostile_edit(value: &mut Value, field: u8, which: u8, position: u8) {
    fn leaves<'a>(value: &'a mut Value, out: &mut Vec<&'a mut Value>) {
        match value {
            Value::Object(map) => map.values_mut().for_each(|v| leaves(v, out)),
            Value::Array(items) => items.iter_mut().for_each(|v| leaves(v, out)),
            leaf => out.push(leaf),
        }
    }
    if which & 0x80 != 0 {
        let mut keys = Vec::new();
        key_paths(value, &mut Vec::new(), &mut keys);
        let count = keys.len();
        if let Some((path, key)) = keys.into_iter().nth(usize::from(field) % count.max(1))
            && let Some(Value::Object(map)) = at_mut(value, &path)
            && let Some(v) = map.remove(&key)
        {
            map.insert(format!("{key}\0"), v);
        }
        return;
    }
    let mut found = Vec::new();
    leaves(value, &mut found);
    let count = found.len();
    if let Some(leaf) = found.into_iter().nth(usize::from(field) % count.max(1)) {
        *leaf = hostile_value(leaf, which, position);
    }
}

// ---------------------------------------------------------------------------------------------
// Target: backup_open.
// ---------------------------------------------------------------------------------------------

/// The device key the fixed backup is sealed with.
pub const DEVICE_KEY: [u8; backup::KEY_LEN] = *b"ferry-fuzz-device-key-32-bytes!!";
/// Its id.
pub const DEVICE_KEY_ID: &str = "fuzz-device";
/// The passphrase of the fixed passphrase backup.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// The snapshot both fixed backups hold: lone surrogates, NUL, U+FFFF, an astral character.
pub fn snapshot() -> Vec<Pair> {
    let pairs: [(&[u16], &[u16]); 4] = [
        (&[0x74, 0x61, 0x73, 0x6B, 0x73], &[0x5B, 0x5D]),
        (&[0x6B, 0xD800], &[0x00, 0xFFFF, 0xDC00, 0x41]),
        (&[0xD83D, 0xDE00], &[]),
        (&[], &[0x22, 0x78, 0x22]),
    ];
    pairs
        .iter()
        .map(|(k, v)| (LosslessString::from_utf16(k), LosslessString::from_utf16(v)))
        .collect()
}

fn metadata() -> BackupMetadata {
    BackupMetadata {
        backup_id: "0d3c6f7e-2b11-4c55-8e0a-9b7d35c2e611".to_owned(),
        created_at_ms: 1_764_000_000_000,
        origin: "https://tasks.example.com".to_owned(),
        spec_app: "taskboard".to_owned(),
        spec_version: "2026.11".to_owned(),
    }
}

/// The fixed backup sealed with [`DEVICE_KEY`], made once.
pub fn device_backup() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let key = SealingKey::DeviceKey {
            key_id: DEVICE_KEY_ID,
            key: &DEVICE_KEY,
        };
        backup::seal(&snapshot(), metadata(), &key, [7; backup::NONCE_LEN])
            .unwrap_or_else(|e| panic!("sealing the fixed device backup: {e}"))
    })
}

/// The fixed backup sealed with [`PASSPHRASE`] at the fewest iterations allowed, and its AES
/// key, derived once: every execution then opens it with the step API (as the browser does
/// with WebCrypto) instead of running PBKDF2 again.
pub fn passphrase_backup() -> &'static (Vec<u8>, [u8; backup::KEY_LEN]) {
    static FILE: OnceLock<(Vec<u8>, [u8; backup::KEY_LEN])> = OnceLock::new();
    FILE.get_or_init(|| {
        let salt = [0x5A; backup::SALT_LEN];
        let iterations = backup::MIN_PBKDF2_ITERATIONS;
        let key = SealingKey::Passphrase {
            passphrase: PASSPHRASE,
            salt,
            iterations,
        };
        let file = backup::seal(&snapshot(), metadata(), &key, [9; backup::NONCE_LEN])
            .unwrap_or_else(|e| panic!("sealing the fixed passphrase backup: {e}"));
        let key = backup::derive_passphrase_key(PASSPHRASE, &salt, iterations)
            .unwrap_or_else(|e| panic!("deriving the fixed key: {e}"));
        (file, key)
    })
}

fn device_opening_key() -> OpeningKey<'static> {
    OpeningKey::DeviceKey {
        key_id: DEVICE_KEY_ID,
        key: &DEVICE_KEY,
    }
}

/// Opens a passphrase backup with an AES key already derived.
fn open_with_key(file: &[u8], key: &[u8; backup::KEY_LEN]) -> Result<Vec<Pair>, BackupError> {
    backup::open_parsed(backup::parse(file)?, key).map(|opened| opened.pairs)
}

/// Checks the header parse of any bytes: `parse` and `read_header` agree, the parts tile the
/// file, and the header encodes back to exactly its bytes.
fn check_parse(file: &[u8]) {
    let parsed = backup::parse(file);
    let header = backup::read_header(file);
    match (&parsed, &header) {
        (Ok(p), Ok(h)) => {
            assert_eq!(&p.header, h);
            assert_eq!(p.aad.len() + p.ciphertext.len(), file.len());
            assert_eq!(p.ciphertext.len() as u64, h.ciphertext_len);
            assert_eq!(
                h.encode().as_deref(),
                Ok(p.aad),
                "the header does not re-encode to its bytes"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("parse and read_header disagree: {parsed:?} / {header:?}"),
    }
}

/// Opens `file` with the key of `original` and checks that it opens if and only if it is
/// byte-for-byte the original, and then to exactly the sealed snapshot.
fn check_open(file: &[u8], passphrase: bool) {
    check_parse(file);
    let (original, opened) = if passphrase {
        let (original, key) = passphrase_backup();
        (original.as_slice(), open_with_key(file, key))
    } else {
        let opened = backup::open(file, &device_opening_key()).map(|o| o.pairs);
        (device_backup(), opened)
    };
    if file == original {
        match opened {
            Ok(pairs) => assert_eq!(pairs, snapshot(), "the original opens to other pairs"),
            Err(e) => panic!("the unmodified backup does not open: {e}"),
        }
    } else if let Ok(pairs) = opened {
        panic!(
            "a modified backup ({} bytes, original {}) opened to {pairs:?}",
            file.len(),
            original.len()
        );
    }
}

/// Applies edits to `file`: each 4 bytes `[op, pos_lo, pos_hi, value]` flip bits, truncate,
/// insert or delete one byte.
fn mutate(file: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    for op in ops.chunks_exact(4).take(16) {
        let pos = usize::from(u16::from_le_bytes([op[1], op[2]])) % (out.len() + 1);
        match op[0] % 4 {
            0 => {
                if let Some(b) = out.get_mut(pos) {
                    *b ^= op[3];
                }
            }
            1 => out.truncate(pos),
            2 => out.insert(pos, op[3]),
            _ => {
                if pos < out.len() {
                    out.remove(pos);
                }
            }
        }
    }
    out
}

/// Byte 0 picks what the rest is: (0) a whole backup file, opened with the device key and with
/// the fixed passphrase key; (1, 2) edits to the fixed device / passphrase backup, which must
/// then not open; (3) a payload given to `decode_plaintext` (bytes 1–3: key count and byte size
/// of the header; byte 4 odd: the rest is the raw payload, even: a snapshot the target
/// compresses and checksums itself), which must decode only to pairs that seal back to it.
pub fn backup_open(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            check_open(rest, false);
            if matches!(
                backup::parse(rest).map(|p| p.header.key_source),
                Ok(backup::KeySource::Passphrase { .. })
            ) {
                check_open(rest, true);
            }
        }
        1 => check_open(&mutate(device_backup(), rest), false),
        2 => check_open(&mutate(&passphrase_backup().0, rest), true),
        _ => decode_payload(rest),
    }
}

fn decode_payload(data: &[u8]) {
    let Some((&[count, size_lo, size_hi, raw], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut header = match backup::read_header(device_backup()) {
        Ok(h) => h,
        Err(e) => panic!("the fixed backup's header: {e}"),
    };
    header.key_count = u32::from(count);
    header.byte_size = u64::from(u16::from_le_bytes([size_lo, size_hi]));
    let payload = if raw & 1 == 1 {
        rest.to_vec()
    } else {
        let mut payload = (rest.len() as u64).to_le_bytes().to_vec();
        payload.extend_from_slice(&Sha256::digest(rest));
        payload.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(rest, raw >> 1 & 7));
        payload
    };
    let Ok(pairs) = backup::decode_plaintext(&header, &payload) else {
        return;
    };
    assert_eq!(pairs.len(), usize::from(count));
    assert_eq!(backup::utf16_byte_size(&pairs), header.byte_size);
    let prepared = match backup::prepare(
        &pairs,
        header.metadata.clone(),
        header.key_source.clone(),
        header.nonce,
    ) {
        Ok(p) => p,
        Err(e) => panic!("decoded pairs do not seal again: {e}"),
    };
    // Length and checksum of the snapshot: the decoded pairs encode to the very same bytes.
    assert_eq!(
        prepared.plaintext.get(..40),
        payload.get(..40),
        "the snapshot is not canonical"
    );
}

// ---------------------------------------------------------------------------------------------
// Seeds, and the tests that replay them.
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
