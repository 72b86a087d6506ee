//! `ferry-server spec schema | check | ddl`: the tools an adopting team writes its spec with,
//! run as the binary, and the reference in specs/README.md kept complete.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_core::spec::Spec;
use ferry_server::db::ddl::create_tables;
use ferry_server::db::schema_check::{check_schema, expected_tables};
use serde_json::Value;

use crate::helpers::fresh_database;

const BINARY: &str = env!("CARGO_BIN_EXE_ferry-server");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ferry_server(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("run ferry-server {args:?}: {e}"))
}

fn spec(file: &str) -> Spec {
    let text = std::fs::read_to_string(repo().join("specs").join(file))
        .unwrap_or_else(|e| panic!("read {file}: {e}"));
    Spec::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn the_committed_json_schema_is_the_one_derived_from_the_parser_types() {
    let out = ferry_server(&["spec", "schema"]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(printed, ferry_core::spec::json_schema());
    let committed = std::fs::read_to_string(repo().join("specs/ferry-spec.schema.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let committed: Value = serde_json::from_str(&committed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        committed, printed,
        "specs/ferry-spec.schema.json is stale: run `ferry-server spec schema > specs/ferry-spec.schema.json`"
    );
}

/// Every object key of the format, from the derived schema (so a key added to the parser
/// without documentation fails here).
fn keys_of_the_format(schema: &Value, keys: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                keys.extend(properties.keys().cloned());
            }
            if let Some(Value::Array(required)) = map.get("required") {
                keys.extend(required.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            // Enum values are documented too (source layouts, types, policies, formats).
            if let Some(Value::String(constant)) = map.get("const") {
                keys.push(constant.clone());
            }
            map.values().for_each(|v| keys_of_the_format(v, keys));
        }
        Value::Array(items) => items.iter().for_each(|v| keys_of_the_format(v, keys)),
        _ => {}
    }
}

#[test]
fn every_key_and_value_the_parser_accepts_is_documented_in_the_reference() {
    let reference = std::fs::read_to_string(repo().join("specs/README.md"))
        .unwrap_or_else(|e| panic!("specs/README.md: {e}"));
    let mut keys = Vec::new();
    keys_of_the_format(&ferry_core::spec::json_schema(), &mut keys);
    keys.sort();
    keys.dedup();
    assert!(keys.len() > 40, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !reference.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "specs/README.md does not document {missing:?}"
    );
}

#[test]
fn spec_check_lists_every_problem_of_every_file_and_fails() {
    let dir = std::env::temp_dir().join(format!("ferry-spec-check-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let broken = dir.join("broken.json");
    std::fs::write(
        &broken,
        r#"{"ferry_spec": 2, "app": "", "version": "1", "kinds": [
            {"name": "Bad Name", "source": {"array": "x"}, "id": {"from": "id", "scope": "global"},
             "table": "x", "conflict": "skip", "fields": []}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let syntax = dir.join("syntax.json");
    std::fs::write(&syntax, "{\n  \"ferry_spec\": 1,\n  \"app\": \"a\",,\n}")
        .unwrap_or_else(|e| panic!("{e}"));
    let good = repo().join("specs/jotter.json");
    let out = Command::new(BINARY)
        .args(["spec", "check"])
        .args([&good, &broken, &syntax])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("jotter.json: ok"), "{stdout}");
    for says in [
        "`ferry_spec` is 2",
        "`app` must name the app",
        "kind `Bad Name`: the kind name must be a lowercase identifier",
        "line 3 column",
    ] {
        assert!(stdout.contains(says), "{says:?} missing from:\n{stdout}");
    }
    assert!(stderr.contains("2 of 3 spec file(s) refused"), "{stderr}");
    let ok = ferry_server(&["spec", "check", "specs/taskboard.json", "specs/jotter.json"]);
    assert!(ok.status.success(), "{ok:?}");
}

#[tokio::test]
async fn spec_ddl_tables_pass_the_start_up_check_for_every_example_spec() {
    for file in ["taskboard.json", "jotter.json"] {
        let spec = spec(file);
        let out = ferry_server(&["spec", "ddl", &format!("specs/{file}")]);
        assert!(out.status.success(), "{out:?}");
        let sql = String::from_utf8_lossy(&out.stdout);
        assert_eq!(sql.trim_end(), create_tables(&spec).trim_end());
        let database = fresh_database().await;
        database
            .client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{file}: the generated SQL does not run: {e}\n{sql}"));
        let mismatches = check_schema(&database.client, &expected_tables(&spec))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(mismatches.is_empty(), "{file}: {mismatches:?}\n{sql}");
        if file == "taskboard.json" {
            // The check knows Ferry's own CHECKs exactly: a stricter one is not taken for it.
            database
                .client
                .batch_execute(
                    "ALTER TABLE tasks DROP CONSTRAINT tasks_title_check, \
                     ADD CONSTRAINT tasks_title_check CHECK (char_length(title) <= 3)",
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mismatches = check_schema(&database.client, &expected_tables(&spec))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(mismatches.len(), 1, "{mismatches:?}");
            assert!(mismatches[0].is_warning(), "{mismatches:?}");
            assert!(
                mismatches[0].to_string().contains("tasks_title_check"),
                "{mismatches:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_length_check_counts_an_escape_as_the_one_character_it_stands_for() {
    let spec = Spec::parse(
        r#"{"ferry_spec": 1, "app": "a", "version": "1", "kinds": [{
            "name": "notes", "source": {"array": "notes"},
            "id": {"from": "id", "scope": "global"}, "table": "notes", "conflict": "skip",
            "fields": [
                {"from": "t", "column": "t", "type": "string", "length": {"min": 1, "max": 3}},
                {"from": "n", "column": "n", "type": "integer", "range": {"min": 0, "max": 9}},
                {"from": "s", "column": "s", "type": "enum", "values": ["a", "b"]}
            ]}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let database = fresh_database().await;
    database
        .client
        .batch_execute(&create_tables(&spec))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let insert = |t: &str, n: i64, s: &str| {
        let client = &database.client;
        let (t, s) = (t.to_owned(), s.to_owned());
        async move {
            client
                .execute(
                    "INSERT INTO notes (user_id, id, t, n, s) VALUES (gen_random_uuid(), gen_random_uuid(), $1, $2, $3)",
                    &[&t, &n, &s],
                )
                .await
        }
    };
    // "a", NUL (escaped: U+FFFF 0000), "b": three characters, seven in storage.
    assert!(insert("a\u{FFFF}0000b", 1, "a").await.is_ok());
    for (t, n, s) in [
        ("abcd", 1, "a"),
        ("", 1, "a"),
        ("ab", 10, "a"),
        ("ab", 1, "c"),
    ] {
        let refused = insert(t, n, s).await.expect_err("the CHECK refuses it");
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{t:?} {n} {s:?}: {refused}"
        );
    }
}
