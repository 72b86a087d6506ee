//! The seed corpora are generated here, and every file of `corpus/` is replayed through its
//! target. `FERRY_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml` rewrites the
//! seeds; without it the test checks that the committed ones are current.

use std::path::{Path, PathBuf};

use ferry_sample::{self as sample, LegacyApp, SampleOptions};

use super::*;

/// A fuzz target: takes any bytes, panics on a finding.
type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("spec_parse", spec_parse),
    ("pipeline", pipeline),
    ("batch_decode", batch_decode),
    ("batch_fields", batch_fields),
    ("backup_open", backup_open),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn units(pairs: &[(LosslessString, LosslessString)]) -> Vec<(Vec<u16>, Vec<u16>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_utf16(), v.to_utf16()))
        .collect()
}

/// A small sample of an app's legacy localStorage, with broken records and hostile strings.
fn sample_pairs(app: LegacyApp, seed: u64) -> Vec<(LosslessString, LosslessString)> {
    let options = SampleOptions {
        seed,
        target_bytes: 6_000,
        invalid_fraction: 0.2,
        ..SampleOptions::new(app)
    };
    sample::generate(&options).pairs
}

/// Hand-written pairs for the corners: lone surrogates (raw and as JSON escapes), NUL, U+FFFF,
/// a duplicate id, a wrong container, text that is not JSON.
fn corner_pairs() -> Vec<(Vec<u16>, Vec<u16>)> {
    let text = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
    let mut lone = text(r#"[{"id":"a","title":"x"#);
    lone.extend([0xD800, 0x00, 0xFFFF]);
    lone.extend(text(
        r#"","status":"todo","createdAt":"2024-01-01T00:00:00Z"}]"#,
    ));
    vec![
        (text("tasks"), lone),
        (
            text("environments"),
            text(
                r#"[{"id":"prod","name":"P\ud800","config":{}},{"id":"prod","name":"P\ud800","config":{}}]"#,
            ),
        ),
        (text("userPreferences"), text("[1,2]")),
        (text("taskboard:"), vec![0xDFFE, 0xDBFF]),
        (text("formData:signup"), text("{not json")),
    ]
}

fn with_prefix(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(rest);
    out
}

fn first_batch(spec: &Spec, pairs: &[(LosslessString, LosslessString)]) -> Vec<u8> {
    let ctx = context();
    let records = pipeline::process(spec, pairs, &ctx);
    let header = BatchHeader::new(spec, migration_id(), &ctx);
    let limits = BatchLimits {
        max_records: 40,
        max_bytes: 48 * 1024,
    };
    wire::build_batches(spec, &header, &records, 0..records.len(), 0, limits)
        .into_iter()
        .next()
        .map(|b| b.body)
        .unwrap_or_default()
}

/// The first batch of `pairs` as an older browser sent it (`ferry-batch/1`): each record with
/// its content hash, no digest.
fn first_batch_v1(spec: &Spec, pairs: &[(LosslessString, LosslessString)]) -> Vec<u8> {
    let ctx = context();
    let records = pipeline::process(spec, pairs, &ctx);
    let mut batch: Value = serde_json::from_slice(&first_batch(spec, pairs)).unwrap();
    batch["header"]["format"] = Value::from(wire::WIRE_FORMAT_V1);
    batch["header"].as_object_mut().unwrap().remove("digest");
    for item in batch["records"].as_array_mut().unwrap() {
        let id: uuid::Uuid = serde_json::from_value(item["id"].clone()).unwrap();
        let record = records
            .iter()
            .find(|r| r.id == Some(id) && r.outcome.is_accepted())
            .unwrap();
        item["hash"] = Value::from(record.hash.to_hex());
    }
    serde_json::to_vec(&batch).unwrap()
}

fn snapshot_bytes(pairs: &[Pair]) -> Vec<u8> {
    let mut out = Vec::new();
    for text in pairs
        .iter()
        .flat_map(|(k, v)| [k.as_escaped(), v.as_escaped()])
    {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// Every seed: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let [taskboard, jotter] = specs();
    let tb = sample_pairs(LegacyApp::Taskboard, 1);
    let jt = sample_pairs(LegacyApp::Jotter, 2);
    let tb_pairs = encode_pairs(&units(&tb));
    let jt_pairs = encode_pairs(&units(&jt));
    let corners = encode_pairs(&corner_pairs());

    let snapshot = snapshot();
    let size = backup::utf16_byte_size(&snapshot) as u16;
    let mut payload = vec![snapshot.len() as u8];
    payload.extend_from_slice(&size.to_le_bytes());
    payload.push(2);
    payload.extend_from_slice(&snapshot_bytes(&snapshot));

    vec![
        (
            "spec_parse",
            "taskboard.json",
            TASKBOARD_SPEC.as_bytes().to_vec(),
        ),
        ("spec_parse", "jotter.json", JOTTER_SPEC.as_bytes().to_vec()),
        (
            "pipeline",
            "taskboard-sample",
            with_prefix(&[0, 255, 0], &tb_pairs),
        ),
        (
            "pipeline",
            "jotter-sample-small-batches",
            with_prefix(&[1, 4, 16], &jt_pairs),
        ),
        ("pipeline", "corners", with_prefix(&[0, 2, 0], &corners)),
        (
            "batch_decode",
            "taskboard-body",
            with_prefix(&[0], &first_batch(taskboard, &tb)),
        ),
        (
            "batch_decode",
            "jotter-body",
            with_prefix(&[2], &first_batch(jotter, &jt)),
        ),
        (
            "batch_decode",
            "taskboard-body-v1",
            with_prefix(&[0], &first_batch_v1(taskboard, &tb)),
        ),
        (
            "batch_decode",
            "round-trip-corners",
            with_prefix(&[1, 0, 2, 0], &corners),
        ),
        (
            "batch_decode",
            "round-trip-jotter",
            with_prefix(&[1, 1, 8, 4], &jt_pairs),
        ),
        // No edit: the batch as it is; then NUL in a leaf, i64::MIN in a leaf, NUL in a key.
        (
            "batch_fields",
            "taskboard-as-is",
            with_prefix(&[0, 0], &first_batch(taskboard, &tb)),
        ),
        (
            "batch_fields",
            "jotter-edited",
            with_prefix(
                &[3, 3, 5, 1, 2, 9, 2, 0, 1, 0x80, 0],
                &first_batch(jotter, &jt),
            ),
        ),
        (
            "backup_open",
            "device-file",
            with_prefix(&[0], device_backup()),
        ),
        (
            "backup_open",
            "passphrase-file",
            with_prefix(&[0], &passphrase_backup().0),
        ),
        ("backup_open", "device-flip", vec![1, 0, 60, 0, 0x01]),
        ("backup_open", "passphrase-truncate", vec![2, 1, 40, 0, 0]),
        ("backup_open", "payload", with_prefix(&[3], &payload)),
    ]
}

/// Writes the seeds when `FERRY_FUZZ_WRITE_SEEDS` is set, once, before any test reads them.
fn write_seeds_if_asked() {
    static WRITTEN: std::sync::Once = std::sync::Once::new();
    WRITTEN.call_once(|| {
        if std::env::var_os("FERRY_FUZZ_WRITE_SEEDS").is_none() {
            return;
        }
        for (target, name, bytes) in seeds() {
            let dir = corpus_dir().join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), &bytes).unwrap();
        }
    });
}

#[test]
fn committed_seeds_are_current() {
    write_seeds_if_asked();
    let mut total = 0;
    for (target, name, bytes) in seeds() {
        let path = corpus_dir().join(target).join(name);
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (FERRY_FUZZ_WRITE_SEEDS=1 writes it)",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{} is stale (FERRY_FUZZ_WRITE_SEEDS=1 rewrites it)",
            path.display()
        );
        total += bytes.len();
    }
    assert!(total < 200 * 1024, "the seeds take {total} bytes");
}

#[test]
fn every_corpus_file_passes_its_target() {
    write_seeds_if_asked();
    for (target, run) in TARGETS {
        let dir = corpus_dir().join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 2,
            "{} holds {} seeds",
            dir.display(),
            files.len()
        );
        for file in files {
            eprintln!("{target}: {}", file.display());
            run(&std::fs::read(&file).unwrap());
        }
    }
}

#[test]
fn pair_encoding_round_trips_every_code_unit() {
    // Lone surrogates whose bytes are the separator and the escape, NUL, U+FFFF, a valid pair.
    let pairs = vec![
        (
            vec![0xDBFF, 0x00, 0xDFFE],
            vec![0xFFFF, 0xD83D, 0xDE00, 0x41],
        ),
        (vec![], vec![0xDCFF]),
        (vec![0x2F], vec![]),
    ];
    assert_eq!(decode_pairs(&encode_pairs(&pairs)), pairs);
}

#[test]
fn a_modified_backup_is_caught() {
    // The check itself must fail when a modified file opens: hand it a modified file that
    // was sealed properly (so it does open) and expect the assertion.
    let mut other = snapshot();
    other.pop();
    let key = SealingKey::DeviceKey {
        key_id: DEVICE_KEY_ID,
        key: &DEVICE_KEY,
    };
    let forged = backup::seal(&other, metadata(), &key, [7; backup::NONCE_LEN]).unwrap();
    let caught = std::panic::catch_unwind(|| check_open(&forged, false));
    assert!(
        caught.is_err(),
        "check_open accepted a file that is not the original"
    );
    check_open(device_backup(), false);
}

#[test]
fn js_stringify_matches_javascript() {
    // JSON.stringify("a\"\\\n\u0001\ud800\u{1F600}") in any current engine.
    let mut units: Vec<u16> = "a\"\\\n\u{1}".encode_utf16().collect();
    units.push(0xD800);
    units.extend("😀".encode_utf16());
    assert_eq!(js_stringify(&units), "\"a\\\"\\\\\\n\\u0001\\ud800😀\"");
}

/// Found by `spec_parse`: a kind whose exact key lies under another kind's prefix owns that
/// key, so the prefix kind's probe key must be another one.
#[test]
fn an_exact_key_under_a_prefix_is_not_the_prefix_kinds_probe() {
    let kind = |name: &str, source: &str, id: &str| {
        format!(
            r#"{{"name":"{name}","source":{source},"id":{{"from":"{id}","scope":"device"}},"table":"{name}","conflict":"skip","fields":[{{"from":"text","column":"text","type":"string"}}]}}"#
        )
    };
    let spec = format!(
        r#"{{"ferry_spec":1,"app":"a","version":"1","kinds":[{},{}]}}"#,
        kind("account", r#"{"object":"a.draft.x"}"#, "$singleton"),
        kind("drafts", r#"{"prefix":"a.draft."}"#, "$key_suffix"),
    );
    assert!(Spec::parse(&spec).is_ok(), "{spec}");
    spec_parse(spec.as_bytes());
}
