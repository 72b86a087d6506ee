//! A newer app version that copied its records under renamed properties into a second kind of
//! the same table (`shares_table`) left the same records twice: the copies whose rows are
//! equal column by column are one record (a `Duplicate`, not a quarantined "different
//! content"), and only a copy edited since is settled by the `duplicates` rule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, Context, Keep, Outcome};
use ferry_core::spec::Spec;
use serde_json::json;
use uuid::Uuid;

const CTX: Context = Context {
    device_id: Uuid::from_u128(0x0d0d_0d0d_1111_4111_8111_1111_1111_1111),
    migrated_at_ms: 1_780_000_000_000,
};

#[test]
fn copies_under_renamed_properties_with_equal_rows_are_one_record() {
    let kind = |name: &str, key: &str, id: &str, text: &str, done: &str| {
        json!({
            "name": name, "source": { "array": key }, "id": { "from": id, "scope": "device" },
            "table": "notes", "shares_table": true, "conflict": "overwrite", "duplicates": "last",
            "fields": [
                { "from": text, "column": "text", "type": "string", "required": true },
                { "from": done, "column": "done", "type": "boolean", "legacy": { "1": true, "0": false }, "default": false }
            ]
        })
    };
    let doc = json!({ "ferry_spec": 1, "app": "copies", "version": "1", "kinds": [
        kind("v1", "notes", "n", "text", "done"),
        kind("v2", "shopping", "id", "note", "checked"),
    ]});
    let spec = Spec::parse(&doc.to_string()).unwrap();
    let ls = |t: &str| LosslessString::from_unicode(t);
    let pairs = vec![
        (
            ls("notes"),
            ls(r#"[{"n": 1, "text": "Milk", "done": 1}, {"n": 2, "text": "Eggs", "done": 0}]"#),
        ),
        (
            ls("shopping"),
            ls(
                r#"[{"id": 1, "note": "Milk", "checked": true}, {"id": 2, "note": "Eggs", "checked": true}]"#,
            ),
        ),
    ];
    let records = pipeline::process(&spec, &pairs, &CTX);
    // The browser keeps no rows: it derives these ones again to settle the copies, alike.
    let mut trimmed = records.clone();
    trimmed.iter_mut().for_each(|r| Keep::Shipping.trim(r));
    assert_eq!(
        pipeline::process_keeping(&spec, &pairs, &CTX, Keep::Shipping),
        trimmed
    );
    let of = |kind: usize, legacy: &str| {
        records
            .iter()
            .find(|r| r.kind == kind && r.legacy_id.as_ref().unwrap().as_escaped() == legacy)
            .unwrap()
    };
    // Note 1: the same row from both keys (`done: 1` repairs to true): one record, no rejection.
    assert!(of(0, "1").outcome.is_accepted(), "{:?}", of(0, "1").outcome);
    assert!(
        matches!(of(1, "1").outcome, Outcome::Duplicate(_)),
        "{:?}",
        of(1, "1").outcome
    );
    // Note 2: ticked since in version 2: different rows, `last` keeps version 2's.
    assert!(
        matches!(&of(0, "2").outcome, Outcome::Rejected(notes) if notes[0].message.contains("different content"))
    );
    assert!(of(1, "2").outcome.is_accepted());
}
