//! A spec with a mistake is refused, and the message names the kind and field and says what
//! is wrong. Each case starts from a valid spec and breaks one thing.

use ferry_core::spec::Spec;
use serde_json::{Value, json};

/// A small valid spec; each case edits a copy.
fn base() -> Value {
    json!({
        "ferry_spec": 1,
        "app": "demo",
        "version": "1",
        "kinds": [{
            "name": "tasks",
            "source": { "array": "tasks" },
            "id": { "from": "id", "scope": "global", "legacy_column": "legacy_id" },
            "table": "tasks",
            "conflict": "newest",
            "updated_at": "updated_at",
            "fields": [
                { "from": "title", "column": "title", "type": "string", "required": true, "length": { "min": 1, "max": 10 } },
                { "from": "status", "column": "status", "type": "enum", "values": ["a", "b"], "legacy": { "old": "a" } },
                { "from": "createdAt", "column": "created_at", "type": "timestamp", "required": true, "formats": ["iso8601"] },
                { "from": "updatedAt", "column": "updated_at", "type": "timestamp", "formats": ["iso8601"], "default_from": "createdAt" },
                { "from": "extra", "column": "extra", "type": "json" }
            ]
        }, {
            "name": "drafts",
            "source": { "prefix": "draft:" },
            "id": { "from": "$key_suffix", "scope": "device" },
            "table": "drafts",
            "conflict": "manual",
            "fields": [ { "from": "$value", "column": "data", "type": "json" } ]
        }]
    })
}

fn refused(edit: impl FnOnce(&mut Value)) -> String {
    let mut doc = base();
    edit(&mut doc);
    match Spec::parse(&doc.to_string()) {
        Ok(_) => panic!("the broken spec was accepted: {doc}"),
        Err(e) => e.to_string(),
    }
}

fn field(doc: &mut Value, kind: usize, field: usize) -> &mut Value {
    &mut doc["kinds"][kind]["fields"][field]
}

#[test]
fn the_base_spec_is_valid() {
    let spec = Spec::parse(&base().to_string()).expect("base spec parses");
    assert_eq!(spec.kinds.len(), 2);
}

#[test]
fn both_example_specs_are_valid() {
    for text in [
        include_str!("../../specs/taskboard.json"),
        include_str!("../../specs/jotter.json"),
    ] {
        if let Err(e) = Spec::parse(text) {
            panic!("an example spec is refused: {e}");
        }
    }
}

/// Each case: the edit, the words the message must contain, and why the spec is wrong.
#[test]
fn broken_specs_are_refused_with_a_message_naming_kind_and_field() {
    type Edit = fn(&mut Value);
    let cases: Vec<(Edit, &[&str], &str)> = vec![
        (
            |d| d["ferry_spec"] = json!(2),
            &["`ferry_spec` is 2"],
            "a future format this engine cannot read",
        ),
        (
            |d| d["app"] = json!(""),
            &["`app`"],
            "ids are derived from the app name",
        ),
        (
            |d| d["kinds"] = json!([]),
            &["`kinds` is empty"],
            "nothing to migrate",
        ),
        (
            |d| d["version"] = json!("20\u{0}26.11"),
            &["$.version holds a NUL character"],
            "no batch of it could be stored (found by fuzzing spec_parse)",
        ),
        (
            |d| d["app"] = json!("task\u{0}board"),
            &["$.app holds a NUL character"],
            "no batch of it could be stored",
        ),
        (
            |d| field(d, 0, 0)["from"] = json!("ti\u{0}tle"),
            &["$.kinds[0].fields[0].from holds a NUL character"],
            "a rejection reason would quote it (found by fuzzing spec_parse)",
        ),
        (
            |d| d["kinds"][1]["name"] = json!("tasks"),
            &["kind `tasks`", "same name"],
            "two kinds with one name",
        ),
        (
            |d| d["kinds"][1]["table"] = json!("tasks"),
            &[
                "kind `drafts`",
                "table `tasks` is already written by kind `tasks`",
            ],
            "two kinds writing one table",
        ),
        (
            |d| d["kinds"][0]["name"] = json!("My Tasks"),
            &["lowercase identifier"],
            "names become SQL and URLs",
        ),
        (
            |d| d["kinds"][0]["table"] = json!("tasks; drop"),
            &["kind `tasks`", "SQL identifier"],
            "the table name goes into SQL",
        ),
        (
            |d| d["kinds"][0]["conflict"] = json!("latest"),
            &["latest"],
            "unknown conflict policy",
        ),
        (
            |d| {
                d["kinds"][0]
                    .as_object_mut()
                    .map(|k| k.remove("updated_at"));
            },
            &["kind `tasks`", "needs `updated_at`"],
            "newest has nothing to compare",
        ),
        (
            |d| d["kinds"][0]["updated_at"] = json!("title"),
            &[
                "kind `tasks`",
                "`updated_at` column `title` must be a timestamp",
            ],
            "newest compares timestamps",
        ),
        (
            |d| d["kinds"][0]["updated_at"] = json!("nope"),
            &["no field writes"],
            "updated_at names a missing column",
        ),
        (
            |d| d["kinds"][1]["conflict"] = json!("merge"),
            &["kind `drafts`", "needs `updated_at`"],
            "merge needs a timestamp too",
        ),
        (
            |d| {
                *field(d, 0, 0) = json!({"from":"title","column":"title","type":"string","length":{"min":5,"max":2}})
            },
            &["kind `tasks`, field `title`", "min 5 is greater than max 2"],
            "empty length range",
        ),
        (
            |d| {
                *field(d, 0, 0) =
                    json!({"from":"title","column":"title","type":"string","range":{"min":1}})
            },
            &["field `title`", "`range` does not apply to a `string`"],
            "range is for numbers",
        ),
        (
            |d| {
                *field(d, 0, 0) =
                    json!({"from":"title","column":"title","type":"string","regex":"(unclosed"})
            },
            &["field `title`", "does not compile"],
            "a broken pattern",
        ),
        (
            |d| *field(d, 0, 0) = json!({"from":"title","column":"title","type":"strng"}),
            &["strng"],
            "unknown type",
        ),
        (
            |d| *field(d, 0, 0) = json!({"from":"title","column":"title","type":"string","required":true,"default":"x"}),
            &["field `title`", "required field cannot have a default"],
            "contradiction",
        ),
        (
            |d| {
                *field(d, 0, 0) =
                    json!({"from":"title","column":"title","type":"string","colour":"red"})
            },
            &["colour"],
            "typo in a rule name must not be ignored",
        ),
        (
            |d| *field(d, 0, 1) = json!({"from":"status","column":"status","type":"enum"}),
            &["field `status`", "must list its `values`"],
            "an enum without values",
        ),
        (
            |d| *field(d, 0, 1) = json!({"from":"status","column":"status","type":"enum","values":["a"],"legacy":{"old":"z"}}),
            &["field `status`", "maps `old` to `z`"],
            "legacy value maps outside the enum",
        ),
        (
            |d| *field(d, 0, 1) = json!({"from":"status","column":"status","type":"enum","values":["a"],"default":"q"}),
            &["field `status`", "`default` \"q\" is not a valid value"],
            "a default that would be rejected",
        ),
        (
            |d| *field(d, 0, 2) = json!({"from":"createdAt","column":"created_at","type":"timestamp","required":true}),
            &["field `created_at`", "must say its `formats`"],
            "the spec must say which timestamp encodings",
        ),
        (
            |d| *field(d, 0, 2) = json!({"from":"createdAt","column":"created_at","type":"timestamp","required":true,"formats":["epoch_ms","epoch_s"]}),
            &["field `created_at`", "ambiguous"],
            "a number cannot be both",
        ),
        (
            |d| *field(d, 0, 4) = json!({"from":"extra","column":"title","type":"json"}),
            &["field `title`", "already writes this column"],
            "two fields, one column",
        ),
        (
            |d| *field(d, 0, 4) = json!({"from":"title","column":"extra","type":"json"}),
            &["property `title` is read by two fields"],
            "one property read twice is a copy-paste slip",
        ),
        (
            |d| *field(d, 0, 4) = json!({"column":"extra","type":"json"}),
            &["field `extra`", "needs a `default`"],
            "a constant column with no value",
        ),
        (
            |d| {
                *field(d, 0, 4) =
                    json!({"from":"extra","column":"extra","type":"string","sensitive_keys":["k"]})
            },
            &["field `extra`", "`sensitive_keys` is for `json`"],
            "sensitive keys need an object",
        ),
        (
            |d| {
                *field(d, 0, 4) =
                    json!({"from":"extra","column":"extra","type":"integer","sensitive":true})
            },
            &["field `extra`", "only `string` fields"],
            "secrets are strings",
        ),
        (
            |d| *field(d, 0, 4) = json!({"from":"extra","column":"extra","type":"array"}),
            &["field `extra`", "`items`"],
            "array item type missing",
        ),
        (
            |d| *field(d, 0, 4) = json!({"from":"$value","column":"extra","type":"string"}),
            &["field `extra`", "`$value`"],
            "the whole record is JSON",
        ),
        (
            |d| *field(d, 0, 4) = json!({"from":"$map_key","column":"extra","type":"string"}),
            &["field `extra`", "`$map_key` does not fit a `array` source"],
            "no map key in an array",
        ),
        (
            |d| d["kinds"][0]["id"] = json!({"from":"$singleton","scope":"global"}),
            &[
                "kind `tasks`",
                "`$singleton` is only for an `object` source",
            ],
            "an array holds many records",
        ),
        (
            |d| d["kinds"][0]["id"] = json!({"from":"$key_suffix","scope":"global"}),
            &["kind `tasks`", "does not fit a `array` source"],
            "no key suffix without a prefix",
        ),
        (
            |d| d["kinds"][0]["id"] = json!({"from":"id","scope":"sometimes"}),
            &["sometimes"],
            "scope must be global or device",
        ),
        (
            |d| d["kinds"][1]["source"] = json!({"prefix":"draft:x"}),
            &["kind `drafts`"],
            "still valid alone; see the overlap case below",
        ),
        (
            |d| {
                d["kinds"][0]["source"] = json!({"prefix":"draft"});
            },
            &["overlaps prefix"],
            "a key would belong to two kinds",
        ),
        (
            |d| d["kinds"][1]["source"] = json!({"array":"tasks"}),
            &[
                "kind `drafts`",
                "key `tasks` is already read by kind `tasks`",
            ],
            "one key, two kinds",
        ),
        (
            |d| d["kinds"][0]["fields"] = json!([]),
            &["kind `tasks`", "`fields` is empty"],
            "nothing to write",
        ),
    ];
    for (edit, needles, why) in cases {
        let mut doc = base();
        edit(&mut doc);
        let outcome = Spec::parse(&doc.to_string());
        if why.starts_with("still valid") {
            assert!(outcome.is_ok(), "{why}: {:?}", outcome.err());
            continue;
        }
        let message = match outcome {
            Ok(_) => panic!("{why}: the broken spec was accepted"),
            Err(e) => e.to_string(),
        };
        for needle in needles {
            assert!(
                message.contains(needle),
                "{why}: message lacks {needle:?}:\n{message}"
            );
        }
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let message = refused(|d| {
        d["app"] = json!("");
        d["kinds"][1]["conflict"] = json!("merge");
        *field(d, 0, 0) = json!({"from":"title","column":"title","type":"string","regex":"("});
    });
    assert!(message.contains("3 problem(s)"), "{message}");
}

#[test]
fn not_json_at_all_is_refused_with_the_parser_position() {
    let err = Spec::parse("{\"ferry_spec\": 1,").expect_err("truncated spec");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn backup_prefixes_must_name_something() {
    let message = refused(|d| d["backup"] = json!({ "prefixes": [] }));
    assert!(message.contains("`backup.prefixes` is empty"), "{message}");
    let message = refused(|d| d["backup"] = json!({ "prefixes": ["demo.", ""] }));
    assert!(message.contains("empty prefix"), "{message}");
    let message = refused(|d| d["backup"] = json!({ "keys": ["demo."] }));
    assert!(message.contains("unknown field `keys`"), "{message}");
}

#[test]
fn a_backup_holds_the_whole_origin_or_the_app_prefixes_and_never_ferrys_own_keys() {
    use ferry_core::backup::in_scope;
    let whole = Spec::parse(&base().to_string()).unwrap();
    for key in ["tasks", "draft:1", "ui-state", "other-app:x", ""] {
        assert!(in_scope(&whole, key), "{key}");
    }
    assert!(!in_scope(&whole, "ferry-lease:run"));

    let mut doc = base();
    doc["backup"] = json!({ "prefixes": ["demo.", "ui-"] });
    let narrowed = Spec::parse(&doc.to_string()).unwrap();
    for key in ["tasks", "draft:1", "demo.index", "ui-state"] {
        assert!(in_scope(&narrowed, key), "{key}");
    }
    for key in ["other-app:x", "ferry-lease:run", "task"] {
        assert!(!in_scope(&narrowed, key), "{key}");
    }
}

#[test]
fn ignore_may_narrow_a_prefix_kind_never_take_a_key_a_kind_names() {
    let message = refused(|d| d["ignore"] = json!({ "keys": ["tasks"] }));
    assert!(
        message.contains("`ignore` key `tasks` takes away key `tasks`, which kind `tasks` reads"),
        "{message}"
    );
    let message = refused(|d| d["ignore"] = json!({ "prefixes": ["ta"] }));
    assert!(
        message.contains("prefix `ta` takes away key `tasks`"),
        "{message}"
    );
    let message = refused(|d| d["ignore"] = json!({}));
    assert!(message.contains("names no key and no prefix"), "{message}");
    let message = refused(|d| d["ignore"] = json!({ "prefixes": [""] }));
    assert!(message.contains("empty key or prefix"), "{message}");
    let message = refused(|d| d["ignore"] = json!({ "key": ["draft:ui"] }));
    assert!(message.contains("unknown field `key`"), "{message}");
}

#[test]
fn an_ignored_key_is_read_by_no_kind_but_stays_in_the_backup() {
    use ferry_core::backup::in_scope;
    let mut doc = base();
    doc["ignore"] = json!({ "keys": ["draft:last-route"], "prefixes": ["draft:ui."] });
    doc["backup"] = json!({ "prefixes": ["demo."] });
    let spec = Spec::parse(&doc.to_string()).unwrap();
    for key in ["draft:last-route", "draft:ui.scroll", "draft:ui."] {
        assert!(spec.ignores(key), "{key}");
        assert_eq!(spec.kinds_for_key(key), Vec::<usize>::new(), "{key}");
        assert!(spec.kinds_needing_key(key).is_empty(), "{key}");
        assert!(in_scope(&spec, key), "{key} is still backed up");
    }
    for key in ["draft:1", "draft:last-route2", "draft:ui"] {
        assert!(!spec.ignores(key), "{key}");
        assert_eq!(spec.kind_for_key(key), Some(1), "{key}");
    }
    assert_eq!(spec.kind_for_key("tasks"), Some(0));
}
