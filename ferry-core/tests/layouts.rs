//! The layouts real apps have (issue 11 §2): records nested at a `path` inside one key's JSON,
//! an `index` key listing the live ids of per-record keys, `legacy` maps for any scalar type, the
//! kind's `duplicates` rule, and two kinds writing one table (`shares_table`). Each rule on a
//! small inline spec, and the spec checker's refusals, every problem at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, Cell, Code, Context, Outcome, Record};
use ferry_core::spec::{DuplicateRule, Spec};
use serde_json::{Value, json};
use uuid::Uuid;

const CTX: Context = Context {
    device_id: Uuid::from_u128(0x0d0d_0d0d_1111_4111_8111_1111_1111_1111),
    migrated_at_ms: 1_780_000_000_000,
};

fn ls(text: &str) -> LosslessString {
    LosslessString::from_unicode(text)
}

fn spec_of(kinds: Value) -> Spec {
    let doc = json!({ "ferry_spec": 1, "app": "layouts", "version": "1", "kinds": kinds });
    Spec::parse(&doc.to_string()).unwrap_or_else(|e| panic!("test spec: {e}"))
}

fn problems_of(kinds: Value) -> Vec<String> {
    let doc = json!({ "ferry_spec": 1, "app": "layouts", "version": "1", "kinds": kinds });
    match Spec::parse(&doc.to_string()) {
        Ok(_) => panic!("spec accepted, expected problems"),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

fn run(spec: &Spec, pairs: &[(&str, Value)]) -> Vec<Record> {
    let pairs: Vec<(LosslessString, LosslessString)> = pairs
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (ls(k), ls(&text))
        })
        .collect();
    pipeline::process(spec, &pairs, &CTX)
}

fn codes(record: &Record) -> Vec<Code> {
    match &record.outcome {
        Outcome::Rejected(notes) | Outcome::Repaired(_, notes) => {
            notes.iter().map(|n| n.code).collect()
        }
        _ => Vec::new(),
    }
}

fn message(record: &Record) -> String {
    match &record.outcome {
        Outcome::Rejected(notes) | Outcome::Repaired(_, notes) => notes
            .iter()
            .map(|n| n.message.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        other => format!("{other:?}"),
    }
}

fn text_field(column: &str) -> Value {
    json!({ "from": column, "column": column, "type": "string" })
}

/// A zustand-style persisted store: `{"state": {"items": [...], "settings": {...}}, "version": 3}`.
fn pantry_spec() -> Spec {
    spec_of(json!([
        {
            "name": "items",
            "source": { "array": "pantry-store", "path": "/state/items" },
            "id": { "from": "id", "scope": "global" },
            "table": "items",
            "conflict": "overwrite",
            "fields": [text_field("name")]
        },
        {
            "name": "settings",
            "source": { "object": "pantry-store", "path": "/state/settings" },
            "id": { "from": "$singleton", "scope": "global" },
            "table": "settings",
            "conflict": "overwrite",
            "fields": [text_field("unit")]
        }
    ]))
}

#[test]
fn two_kinds_read_one_key_at_different_paths() {
    let spec = pantry_spec();
    let store = json!({
        "state": {
            "items": [{ "id": "a", "name": "rice" }, { "id": "b", "name": "salt" }],
            "settings": { "unit": "metric" }
        },
        "version": 3
    });
    assert_eq!(spec.kinds_for_key("pantry-store"), vec![0, 1]);
    let records = run(&spec, &[("pantry-store", store)]);
    let by_kind = |k: usize| records.iter().filter(move |r| r.kind == k);
    let names: Vec<_> = by_kind(0)
        .map(|r| r.outcome.row().unwrap().cells[0].clone())
        .collect();
    assert_eq!(
        names,
        vec![Cell::Text("rice".into()), Cell::Text("salt".into())]
    );
    let settings: Vec<_> = by_kind(1).collect();
    assert_eq!(settings.len(), 1);
    assert_eq!(
        settings[0].outcome.row().unwrap().cells,
        vec![Cell::Text("metric".into())]
    );
    let inventory = pipeline::inventory(
        &spec,
        &[(ls("pantry-store"), ls("{}")), (ls("other"), ls("1"))],
    );
    assert_eq!(inventory.kinds[0].keys.len(), 1);
    assert_eq!(inventory.kinds[1].keys.len(), 1);
    assert_eq!(inventory.unknown.len(), 1);
    assert_eq!(inventory.known_bytes, 2 * ("pantry-store".len() + 2) as u64);
}

#[test]
fn a_missing_path_holds_no_records_and_a_wrong_container_is_rejected_naming_the_path() {
    let spec = pantry_spec();
    let records = run(
        &spec,
        &[("pantry-store", json!({ "state": {}, "version": 1 }))],
    );
    assert!(records.is_empty(), "{records:?}");
    let records = run(
        &spec,
        &[("pantry-store", json!({ "state": { "items": { "a": 1 } } }))],
    );
    assert_eq!(records.len(), 1);
    assert_eq!(codes(&records[0]), vec![Code::Shape]);
    let m = message(&records[0]);
    assert!(
        m.contains("\"pantry-store\"") && m.contains("\"/state/items\""),
        "{m}"
    );
}

#[test]
fn a_path_escapes_slash_and_tilde_like_rfc_6901() {
    let spec = spec_of(json!([{
        "name": "items",
        "source": { "array": "k", "path": "/a~1b/c~0d" },
        "id": { "from": "id", "scope": "global" },
        "table": "items",
        "conflict": "overwrite",
        "fields": [text_field("name")]
    }]));
    let records = run(
        &spec,
        &[("k", json!({ "a/b": { "c~d": [{ "id": 1, "name": "x" }] } }))],
    );
    assert_eq!(records.len(), 1);
    assert!(records[0].outcome.is_accepted(), "{:?}", records[0].outcome);
}

fn recipes_spec(index_path: Option<&str>) -> Spec {
    let mut source = json!({ "prefix": "recipe:", "index": "recipe:index" });
    if let Some(p) = index_path {
        source["index_path"] = json!(p);
    }
    spec_of(json!([{
        "name": "recipes",
        "source": source,
        "id": { "from": "$key_suffix", "scope": "device" },
        "table": "recipes",
        "conflict": "overwrite",
        "fields": [text_field("title")]
    }]))
}

#[test]
fn only_keys_the_index_lists_are_migrated_and_the_others_are_quarantined_as_unlisted() {
    let spec = recipes_spec(None);
    let records = run(
        &spec,
        &[
            ("recipe:index", json!(["1", 2])),
            ("recipe:1", json!({ "title": "soup" })),
            ("recipe:2", json!({ "title": "bread" })),
            ("recipe:3", json!({ "title": "deleted long ago" })),
        ],
    );
    assert_eq!(records.len(), 3, "the index key is no record: {records:?}");
    let accepted: Vec<_> = records
        .iter()
        .filter(|r| r.outcome.is_accepted())
        .map(|r| r.key.as_escaped().to_owned())
        .collect();
    assert_eq!(accepted, vec!["recipe:1", "recipe:2"]);
    let unlisted = records
        .iter()
        .find(|r| r.key.as_escaped() == "recipe:3")
        .unwrap();
    assert_eq!(codes(unlisted), vec![Code::Unlisted]);
    let m = message(unlisted);
    assert!(
        m.contains("\"recipe:3\"") && m.contains("\"recipe:index\""),
        "{m}"
    );
    assert!(
        unlisted.raw.text().contains("deleted long ago"),
        "raw kept for the quarantine"
    );
    // The index key is needed (read, fingerprinted) but holds no records.
    assert_eq!(spec.kinds_for_key("recipe:index"), Vec::<usize>::new());
    assert_eq!(spec.kinds_needing_key("recipe:index"), vec![0]);
    let inventory = pipeline::inventory(&spec, &[(ls("recipe:index"), ls("[]"))]);
    assert_eq!(inventory.kinds[0].keys.len(), 1);
}

#[test]
fn an_index_path_finds_the_ids_and_listed_ids_without_a_key_are_reported() {
    let spec = recipes_spec(Some("/ids"));
    let pairs = [
        (ls("recipe:index"), ls(r#"{"ids":["1","9"],"rev":4}"#)),
        (ls("recipe:1"), ls(r#"{"title":"soup"}"#)),
    ];
    let records = pipeline::process(&spec, &pairs, &CTX);
    assert_eq!(records.len(), 1);
    assert!(records[0].outcome.is_accepted());
    assert_eq!(
        pipeline::listed_without_key(&spec, &pairs),
        vec![(0, "9".to_owned())]
    );
}

#[test]
fn without_a_usable_index_nothing_is_listed_and_a_broken_index_is_quarantined() {
    let spec = recipes_spec(None);
    let records = run(&spec, &[("recipe:1", json!({ "title": "soup" }))]);
    assert_eq!(codes(&records[0]), vec![Code::Unlisted]);
    let records = run(
        &spec,
        &[
            ("recipe:index", json!({ "not": "a list" })),
            ("recipe:1", json!({ "title": "soup" })),
        ],
    );
    assert_eq!(records.len(), 2);
    let index = records
        .iter()
        .find(|r| r.key.as_escaped() == "recipe:index")
        .unwrap();
    assert_eq!(codes(index), vec![Code::Shape]);
    assert!(
        message(index).contains("array of ids"),
        "{}",
        message(index)
    );
    let record = records
        .iter()
        .find(|r| r.key.as_escaped() == "recipe:1")
        .unwrap();
    assert_eq!(codes(record), vec![Code::Unlisted]);
}

fn flag_spec(field: Value) -> Spec {
    spec_of(json!([{
        "name": "flags",
        "source": { "array": "flags" },
        "id": { "from": "id", "scope": "global" },
        "table": "flags",
        "conflict": "overwrite",
        "fields": [field]
    }]))
}

#[test]
fn legacy_maps_repair_booleans_and_integers_from_strings_numbers_and_booleans() {
    let spec = flag_spec(json!({
        "from": "done", "column": "done", "type": "boolean",
        "legacy": { "yes": true, "no": false, "1": true, "0": false }
    }));
    let records = run(
        &spec,
        &[(
            "flags",
            json!([
                { "id": 1, "done": "yes" },
                { "id": 2, "done": 0 },
                { "id": 3, "done": true },
                { "id": 4, "done": "maybe" }
            ]),
        )],
    );
    let cells: Vec<_> = records
        .iter()
        .map(|r| r.outcome.row().map(|row| row.cells[0].clone()))
        .collect();
    assert_eq!(
        cells,
        vec![
            Some(Cell::Bool(true)),
            Some(Cell::Bool(false)),
            Some(Cell::Bool(true)),
            None
        ]
    );
    assert_eq!(codes(&records[0]), vec![Code::Legacy]);
    assert!(message(&records[0]).contains("legacy value \"yes\" became true"));
    assert_eq!(
        codes(&records[2]),
        Vec::<Code>::new(),
        "a valid value is no repair"
    );
    assert_eq!(codes(&records[3]), vec![Code::Type]);

    let spec = flag_spec(json!({
        "from": "n", "column": "n", "type": "integer", "range": { "min": 0 },
        "legacy": { "none": 0, "true": 1 }
    }));
    let records = run(
        &spec,
        &[(
            "flags",
            json!([{ "id": 1, "n": "none" }, { "id": 2, "n": true }]),
        )],
    );
    assert_eq!(records[0].outcome.row().unwrap().cells, vec![Cell::Int(0)]);
    assert_eq!(records[1].outcome.row().unwrap().cells, vec![Cell::Int(1)]);
}

#[test]
fn enum_legacy_maps_keep_their_code() {
    let spec = flag_spec(json!({
        "from": "s", "column": "s", "type": "enum", "values": ["open", "done"],
        "legacy": { "finished": "done" }
    }));
    let records = run(&spec, &[("flags", json!([{ "id": 1, "s": "finished" }]))]);
    assert_eq!(codes(&records[0]), vec![Code::LegacyEnum]);
    assert_eq!(
        records[0].outcome.row().unwrap().cells,
        vec![Cell::Text("done".into())]
    );
}

fn dup_spec(extra: Value) -> Spec {
    let mut kind = json!({
        "name": "notes",
        "source": { "array": "notes" },
        "id": { "from": "id", "scope": "global" },
        "table": "notes",
        "conflict": "overwrite",
        "fields": [
            text_field("text"),
            { "from": "at", "column": "at", "type": "timestamp", "formats": ["epoch_ms"], "required": true }
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        kind[k] = v.clone();
    }
    spec_of(json!([kind]))
}

/// The texts of the accepted records, and the codes of the others, for three copies of id 1.
fn settle(spec: &Spec) -> (Vec<String>, usize) {
    let records = run(
        spec,
        &[(
            "notes",
            json!([
                { "id": 1, "text": "old", "at": 5 },
                { "id": 1, "text": "newest", "at": 9 },
                { "id": 1, "text": "latest by position", "at": 9 }
            ]),
        )],
    );
    let kept = records
        .iter()
        .filter_map(|r| r.outcome.row())
        .map(|row| match &row.cells[0] {
            Cell::Text(t) => t.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    let rejected = records
        .iter()
        .filter(|r| codes(r) == vec![Code::Duplicate])
        .count();
    (kept, rejected)
}

#[test]
fn the_duplicates_rule_picks_the_kept_record_by_position_or_updated_at() {
    let cases = [
        (json!({ "duplicates": "first" }), vec!["old"], 2),
        (
            json!({ "duplicates": "last" }),
            vec!["latest by position"],
            2,
        ),
        // Ties on `updated_at` go to the later position, never to a hash.
        (
            json!({ "duplicates": "newest", "updated_at": "at" }),
            vec!["latest by position"],
            2,
        ),
        (json!({ "duplicates": "reject" }), vec![], 3),
        // Defaults: `last` without `updated_at`, `newest` with it.
        (json!({}), vec!["latest by position"], 2),
        (json!({ "updated_at": "at" }), vec!["latest by position"], 2),
    ];
    for (extra, kept, rejected) in cases {
        let spec = dup_spec(extra.clone());
        let (got_kept, got_rejected) = settle(&spec);
        assert_eq!(got_kept, kept, "{extra}");
        assert_eq!(got_rejected, rejected, "{extra}");
    }
    assert_eq!(dup_spec(json!({})).kinds[0].duplicates, DuplicateRule::Last);
    let spec = dup_spec(json!({ "updated_at": "at" }));
    assert_eq!(spec.kinds[0].duplicates, DuplicateRule::Newest);
    let records = run(
        &spec,
        &[(
            "notes",
            json!([{ "id": 1, "text": "new", "at": 9 }, { "id": 1, "text": "old", "at": 5 }]),
        )],
    );
    assert_eq!(
        records[0].outcome.row().unwrap().cells[0],
        Cell::Text("new".into())
    );
    assert!(
        message(&records[1]).contains("(newer)"),
        "{}",
        message(&records[1])
    );
}

fn shared_spec(second_extra: Value) -> Vec<Value> {
    let mut second = json!({
        "name": "notes_v2",
        "source": { "map": "notes-v2" },
        "id": { "from": "$map_key", "scope": "global" },
        "table": "notes",
        "shares_table": true,
        "conflict": "overwrite",
        "fields": [text_field("text")]
    });
    for (k, v) in second_extra.as_object().unwrap() {
        second[k] = v.clone();
    }
    vec![
        json!({
            "name": "notes_v1",
            "source": { "array": "notes" },
            "id": { "from": "id", "scope": "global" },
            "table": "notes",
            "shares_table": true,
            "conflict": "overwrite",
            "fields": [text_field("text")]
        }),
        second,
    ]
}

#[test]
fn two_kinds_sharing_a_table_derive_one_row_id_and_settle_duplicates_across_them() {
    let spec = spec_of(Value::Array(shared_spec(json!({}))));
    assert_eq!(spec.expected_tables().len(), 1);
    let records = run(
        &spec,
        &[
            (
                "notes",
                json!([{ "id": "7", "text": "old" }, { "id": "8", "text": "same" }]),
            ),
            (
                "notes-v2",
                json!({ "7": { "text": "renamed" }, "8": { "id": "8", "text": "same" } }),
            ),
        ],
    );
    let of = |kind: usize, legacy: &str| {
        records
            .iter()
            .find(|r| r.kind == kind && r.legacy_id.as_ref().unwrap().as_escaped() == legacy)
            .unwrap()
    };
    assert_eq!(of(0, "7").id, of(1, "7").id, "same legacy id, same row");
    // Default `last`: the later key wins across kinds.
    assert_eq!(codes(of(0, "7")), vec![Code::Duplicate]);
    assert!(of(1, "7").outcome.is_accepted());
    // Identical records across kinds are one record.
    assert!(of(0, "8").outcome.is_accepted());
    assert!(matches!(of(1, "8").outcome, Outcome::Duplicate(_)));
}

#[test]
fn bad_layout_specs_are_refused_with_every_problem_at_once() {
    let kind = |name: &str, source: Value| {
        json!({
            "name": name,
            "source": source,
            "id": { "from": "id", "scope": "global" },
            "table": name,
            "conflict": "overwrite",
            "fields": [text_field("text")]
        })
    };
    let problems = problems_of(json!([
        kind("two_layouts", json!({ "array": "a", "map": "b" })),
        kind("no_layout", json!({ "path": "/x" })),
        kind("relative_path", json!({ "array": "c", "path": "x/y" })),
        kind("bad_escape", json!({ "array": "d", "path": "/x~2" })),
        kind("index_on_array", json!({ "array": "e", "index": "e-index" })),
        kind("index_path_alone", json!({ "prefix": "f:", "index_path": "/ids" })),
        kind("same_path_a", json!({ "array": "g", "path": "/items" })),
        kind("same_path_b", json!({ "array": "g", "path": "/items" })),
        {
            "name": "legacy_bad",
            "source": { "array": "h" },
            "id": { "from": "id", "scope": "global" },
            "table": "legacy_bad",
            "conflict": "overwrite",
            "duplicates": "newest",
            "fields": [
                text_field("text"),
                { "from": "b", "column": "b", "type": "boolean", "legacy": { "yes": "true" } },
                { "from": "n", "column": "n", "type": "integer", "range": { "max": 5 }, "legacy": { "lots": 99 } },
                { "from": "j", "column": "j", "type": "json", "legacy": { "x": 1 } },
                { "from": "e", "column": "e", "type": "enum", "values": ["a"], "legacy": { "a": "a" } }
            ]
        }
    ]));
    let expected = [
        ("two_layouts", "more than one of"),
        ("no_layout", "needs one of"),
        ("relative_path", "must start with `/`"),
        ("bad_escape", "`~` must be followed"),
        ("index_on_array", "needs a `prefix` source"),
        ("index_path_alone", "`index_path` needs `index`"),
        ("same_path_b", "at the same `path`"),
        ("legacy_bad", "`duplicates: newest` needs `updated_at`"),
        (
            "field `b`",
            "maps `yes` to `true`, which is not a valid value",
        ),
        (
            "field `n`",
            "maps `lots` to `99`, which is not a valid value",
        ),
        (
            "field `j`",
            "rule `legacy` does not apply to a `json` field",
        ),
        ("field `e`", "already one of `values`"),
    ];
    for (place, text) in expected {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(place) && p.contains(text)),
            "no problem naming {place} with {text:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn kinds_sharing_a_table_must_agree_and_both_say_so() {
    let problems = problems_of(Value::Array(shared_spec(json!({
        "conflict": "skip",
        "fields": [{ "from": "text", "column": "text", "type": "string", "required": true }]
    }))));
    assert!(
        problems.iter().any(|p| p.contains("kind `notes_v2`")
            && p.contains("columns differ")
            && p.contains("notes_v1")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("conflict policy `skip`")),
        "{problems:#?}"
    );
    let problems = problems_of(Value::Array(shared_spec(json!({ "shares_table": false }))));
    assert!(
        problems.iter().any(|p| p.contains("already written by kind `notes_v1`") && p.contains("shares_table")),
        "{problems:#?}"
    );
}
