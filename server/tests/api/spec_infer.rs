//! `ferry-server spec infer EXPORT`, run as the binary on exports of several layouts: the draft
//! it prints passes `ferry-server spec check`, and its notes go to stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferry_core::backup::{BackupMetadata, SealingKey};
use ferry_core::lossless::LosslessString;
use ferry_sample::{LegacyApp, SampleOptions};
use serde_json::{Value, json};
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_ferry-server");

/// A folder of the test's own under the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    let dir = std::env::temp_dir().join(format!("ferry-spec-infer-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    Scratch(dir)
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .env("FERRY_BACKUP_PASSPHRASE", "correct horse")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run ferry-server {args:?}: {e}"));
    let input = child.stdin.take();
    if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
        use std::io::Write as _;
        pipe.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

/// Infers a draft from `export` (written to a file), checks it with `spec check`, and returns
/// the draft and the notes.
fn infer_and_check(export: &str) -> (Value, String) {
    let dir = scratch();
    let file = dir.join("export.json");
    std::fs::write(&file, export).unwrap_or_else(|e| panic!("{e}"));
    let out = run(&["spec", "infer", file.to_str().unwrap_or_default()], None);
    let notes = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "spec infer failed: {notes}");
    let draft: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    checked(&dir, &out.stdout);
    (draft, notes)
}

fn checked(dir: &Path, draft: &[u8]) {
    let spec = dir.join("draft.json");
    std::fs::write(&spec, draft).unwrap_or_else(|e| panic!("{e}"));
    let check = run(&["spec", "check", spec.to_str().unwrap_or_default()], None);
    assert!(
        check.status.success(),
        "the draft fails spec check: {}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(draft)
    );
}

fn kind<'a>(draft: &'a Value, source: &Value) -> &'a Value {
    draft["kinds"]
        .as_array()
        .and_then(|kinds| kinds.iter().find(|k| &k["source"] == source))
        .unwrap_or_else(|| panic!("no kind with source {source}: {draft:#}"))
}

fn sample(app: LegacyApp) -> Vec<(LosslessString, LosslessString)> {
    let mut options = SampleOptions::new(app);
    options.target_bytes = 20_000;
    options.invalid_fraction = 0.0;
    options.hostile = false;
    ferry_sample::generate(&options).pairs
}

fn as_object(pairs: &[(LosslessString, LosslessString)]) -> String {
    let map: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.as_escaped().to_owned(), json!(v.as_escaped())))
        .collect();
    Value::Object(map).to_string()
}

#[test]
fn the_task_boards_sample_gives_a_draft_that_passes_spec_check() {
    let (draft, notes) = infer_and_check(&as_object(&sample(LegacyApp::Taskboard)));
    let tasks = kind(&draft, &json!({"array": "tasks"}));
    assert_eq!(tasks["id"]["from"], "id", "{tasks:#}");
    assert!(notes.contains("note: kind `tasks`"), "{notes}");
}

#[test]
fn the_jotter_sample_finds_its_map_object_array_and_prefix() {
    let (draft, notes) = infer_and_check(&as_object(&sample(LegacyApp::Jotter)));
    let notes_kind = kind(&draft, &json!({"map": "jotter.notes"}));
    assert_eq!(
        notes_kind["id"],
        json!({"from": "$map_key", "scope": "device", "legacy_column": "legacy_id"})
    );
    let fields = notes_kind["fields"].as_array().cloned().unwrap_or_default();
    let created = fields
        .iter()
        .find(|f| f["from"] == "created")
        .unwrap_or_else(|| panic!("{notes_kind:#}"));
    assert_eq!(created["formats"], json!(["epoch_ms"]), "{notes}");
    assert_eq!(
        kind(&draft, &json!({"object": "jotter.account"}))["id"]["from"],
        "$singleton"
    );
    assert_eq!(
        kind(&draft, &json!({"array": "jotter.attachments"}))["id"]["from"],
        "seq"
    );
    assert_eq!(
        kind(&draft, &json!({"prefix": "jotter.draft."}))["id"]["from"],
        "$key_suffix"
    );
}

#[test]
fn a_nested_zustand_blob_gets_paths_and_its_version_is_skipped() {
    let blob = json!({
        "state": {
            "items": [
                {"id": "0b7e0c4e-3b5e-4a55-9d7f-3e2d1a8e6c01", "name": "rice", "qty": 2, "addedAt": "2025-03-01T10:00:00Z"},
                {"id": "5f1d9a2c-7c1b-4f7e-8a3b-2c6d9e0f1a22", "name": "salt", "qty": 1, "addedAt": "2025-03-02T10:00:00Z"}
            ],
            "settings": {"units": "metric", "darkMode": true}
        },
        "version": 3
    });
    let export = json!({"pantry-store": blob.to_string(), "pantry-ui": "collapsed"}).to_string();
    let (draft, notes) = infer_and_check(&export);
    let items = kind(
        &draft,
        &json!({"array": "pantry-store", "path": "/state/items"}),
    );
    assert_eq!(items["id"], json!({"from": "id", "scope": "global"}));
    kind(
        &draft,
        &json!({"object": "pantry-store", "path": "/state/settings"}),
    );
    assert!(notes.contains("/version"), "{notes}");
    assert!(notes.contains("skipped `pantry-ui`"), "{notes}");
}

#[test]
fn the_output_of_backup_open_is_read_as_is_from_stdin() {
    let pairs = sample(LegacyApp::Jotter);
    let sealed = ferry_core::backup::seal(
        &pairs,
        BackupMetadata {
            backup_id: "infer".to_owned(),
            created_at_ms: 1_750_000_000_000,
            origin: "http://localhost:8080".to_owned(),
            spec_app: "jotter".to_owned(),
            spec_version: "5".to_owned(),
        },
        &SealingKey::Passphrase {
            passphrase: "correct horse",
            salt: [7; 16],
            iterations: ferry_core::backup::MIN_PBKDF2_ITERATIONS,
        },
        [9; 12],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch();
    let file = dir.join("b.ferry");
    std::fs::write(&file, sealed).unwrap_or_else(|e| panic!("{e}"));
    let opened = run(&["backup", "open", file.to_str().unwrap_or_default()], None);
    assert!(opened.status.success(), "{opened:?}");
    let out = run(&["spec", "infer", "-"], Some(&opened.stdout));
    assert!(out.status.success(), "{out:?}");
    let draft: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    kind(&draft, &json!({"map": "jotter.notes"}));
    checked(&dir, &out.stdout);
}

#[test]
fn an_export_that_is_not_one_is_refused_with_its_reason() {
    let out = run(&["spec", "infer", "-"], Some(b"[1, 2]"));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("element 0 without a string `key`"),
        "{stderr}"
    );
}
