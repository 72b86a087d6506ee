//! A value of a stored row, as a person edits it when resolving a conflict by hand, is checked
//! by the engine's own rules (`check_stored_value`): the same email, URL, length, pattern,
//! range, enum and timestamp rules a migrated record meets, with timestamps in the row's shape.

use ferry_core::lossless::ESCAPE;
use ferry_core::pipeline::check_stored_value;
use ferry_core::spec::{Field, Spec};
use serde_json::{Value, json};

fn spec() -> Spec {
    let spec = json!({
        "ferry_spec": 1,
        "app": "edits",
        "version": "1",
        "kinds": [{
            "name": "people",
            "source": { "array": "people" },
            "id": { "from": "id", "scope": "global", "legacy_column": "legacy_id" },
            "table": "people",
            "conflict": "manual",
            "fields": [
                { "from": "email", "column": "email", "type": "string", "email": true },
                { "from": "site", "column": "site", "type": "string", "url": true },
                { "from": "code", "column": "code", "type": "string", "regex": "^[A-Z]{3}$" },
                { "from": "name", "column": "name", "type": "string", "length": { "min": 1, "max": 5 } },
                { "from": "pin", "column": "pin", "type": "string", "sensitive": true, "length": { "max": 4 } },
                { "from": "age", "column": "age", "type": "integer", "range": { "min": 0, "max": 150 } },
                { "from": "score", "column": "score", "type": "number", "range": { "max": 1 } },
                { "from": "state", "column": "state", "type": "enum", "values": ["open", "done"], "legacy": { "closed": "done" } },
                { "from": "seen", "column": "seen_at", "type": "timestamp", "formats": ["epoch_ms"] },
                { "from": "tags", "column": "tags", "type": "array", "items": "string", "max_items": 2, "length": { "max": 3 } },
                { "from": "on", "column": "enabled", "type": "boolean" }
            ]
        }]
    });
    match Spec::parse(&spec.to_string()) {
        Ok(spec) => spec,
        Err(e) => panic!("the test spec is valid: {e}"),
    }
}

fn check(column: &str, value: Value) -> Result<Value, String> {
    let spec = spec();
    let kind = &spec.kinds[0];
    let field: &Field = kind
        .field_for_column(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    check_stored_value(field, value)
}

fn refused(column: &str, value: Value, says: &str) {
    match check(column, value.clone()) {
        Ok(v) => panic!("{column} = {value} was accepted as {v}"),
        Err(message) => assert!(
            message.contains(says) && message.contains("the edited value"),
            "{column} = {value}: {message:?} should say {says:?}"
        ),
    }
}

#[test]
fn email_and_url_rules_hold_for_edits() {
    refused("email", json!("not an address"), "is not an email address");
    assert_eq!(
        check("email", json!("a@example.org")),
        Ok(json!("a@example.org"))
    );
    refused("site", json!("example dot org"), "is not a URL");
    assert_eq!(
        check("site", json!("https://example.org/x")),
        Ok(json!("https://example.org/x"))
    );
}

#[test]
fn length_pattern_and_range_rules_hold_for_edits() {
    refused("code", json!("abc"), "does not match the pattern");
    refused("name", json!("too long"), "has 8 characters");
    refused("name", json!(""), "has 0 characters");
    refused("age", json!(151), "expected 0 to 150");
    refused("age", json!(1.5), "a whole number");
    refused("score", json!(2.5), "expected at most 1");
    refused("enabled", json!("yes"), "should be true or false");
    refused("tags", json!(["a", "b", "c"]), "more than the 2 allowed");
    refused("tags", json!(["toolong"]), "has 7 characters");
    assert_eq!(check("age", json!(42)), Ok(json!(42)));
    assert_eq!(check("tags", json!(["ab"])), Ok(json!(["ab"])));
}

#[test]
fn an_escape_counts_as_the_one_character_it_stands_for() {
    // NUL travels as the lossless escape: U+FFFF and four hex digits, one character long.
    let five = format!("ab{ESCAPE}0000de");
    assert_eq!(check("name", json!(five)), Ok(json!(five)));
    refused(
        "name",
        json!(format!("abc{ESCAPE}0000de")),
        "has 6 characters",
    );
}

#[test]
fn enums_map_legacy_values_and_refuse_others() {
    assert_eq!(check("state", json!("closed")), Ok(json!("done")));
    refused("state", json!("lost"), "is not one of");
}

#[test]
fn timestamps_are_iso_text_in_a_row_whatever_the_app_stored() {
    // The field's localStorage format is epoch milliseconds; the row holds ISO 8601 text.
    assert_eq!(
        check("seen_at", json!("2024-05-01T10:00:00+02:00")),
        Ok(json!("2024-05-01T08:00:00.000Z"))
    );
    refused(
        "seen_at",
        json!(1_700_000_000_000_i64),
        "not a valid timestamp",
    );
    refused("seen_at", json!("yesterday"), "not a valid timestamp");
}

#[test]
fn a_sensitive_value_is_never_quoted() {
    let message = check("pin", json!("123456789")).expect_err("too long");
    assert!(message.contains("[redacted]"), "{message}");
    assert!(!message.contains("123456789"), "{message}");
}
