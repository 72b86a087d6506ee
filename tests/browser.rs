//! Browser tests of the `ferry` crate's edge, in headless Chromium (wasm-bindgen-test): the
//! lossless localStorage binding, backups in IndexedDB under a non-extractable WebCrypto key,
//! the quota path, the cross-tab lock, resuming after a "reload", and retry/split against a
//! real HTTP server (`tests/support/ferry-test-server.mjs`, whose URL comes from the
//! `FERRY_TEST_SERVER` variable at compile time; the script sets it when it runs the tests).
#![cfg(target_arch = "wasm32")]
// A test fails by panicking: unwrap is how it says "this must hold".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::rc::Rc;

use ferry::Error;
use ferry::browser::crypto::{DEVICE_CRYPTO_KEY, decrypt, subtle};
use ferry::browser::idb::IdbStore;
use ferry::browser::local::LocalStorage;
use ferry::browser::{self, LockKind, storage_error};
use ferry::ports::{
    AppStorage, HttpRequest, LocalFuture, Ports, Store, StoreOp, Transport, TransportError,
};
use ferry::retry::RetryPolicy;
use ferry::runner::{Config, Migrator, Mode, RunOptions, RunStatus};
use ferry_core::backup;
use ferry_core::lossless::LosslessString;
use ferry_core::wire::BatchLimits;
use js_sys::{Function, JsString, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const SPEC: &str = include_str!("../specs/taskboard.json");
const SERVER: &str = match option_env!("FERRY_TEST_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:8787",
};

fn storage() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
}

/// `localStorage.setItem` with a key and value built from raw code units in JavaScript.
fn set_units(key: &[u16], value: &[u16]) {
    let set: Function = Reflect::get(&storage(), &"setItem".into())
        .unwrap()
        .unchecked_into();
    set.call2(
        &storage(),
        &JsString::from_char_code(key),
        &JsString::from_char_code(value),
    )
    .unwrap();
}

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

fn seed_tasks(n: u32) {
    let items: Vec<String> = (1..=n)
        .map(|i| format!(r#"{{"id":"00000000-0000-4000-8000-{i:012}","title":"task {i}","status":"todo","createdAt":"2024-01-01T10:00:00Z"}}"#))
        .collect();
    storage()
        .set_item("tasks", &format!("[{}]", items.join(",")))
        .unwrap();
}

fn token() -> Function {
    Function::new_with_args("refresh", "return Promise.resolve('test-token')")
}

async fn fresh_ports(db: &str) -> Ports {
    IdbStore::new(db).delete_database().await.unwrap();
    browser::ports(db, token(), LockKind::Best).unwrap()
}

fn migrator(ports: Ports, run: &str, mode: &str) -> Migrator {
    migrator_with_attempts(ports, run, mode, 3)
}

fn migrator_with_attempts(ports: Ports, run: &str, mode: &str, attempts: u32) -> Migrator {
    let config = Config {
        limits: BatchLimits {
            max_records: 2,
            max_bytes: 1 << 20,
        },
        retry: RetryPolicy {
            base_ms: 10,
            max_delay_ms: 50,
            max_attempts: attempts,
            timeout_ms: 5_000,
        },
        origin: "http://test".to_owned(),
        parallel_uploads: ferry::runner::PARALLEL_UPLOADS,
    };
    Migrator::new(SPEC, &format!("{SERVER}/t/{run}/{mode}"), ports, config).unwrap()
}

async fn server_log(run: &str) -> Vec<serde_json::Value> {
    let r = browser::net::HttpTransport::new()
        .send(HttpRequest {
            method: "GET",
            url: format!("{SERVER}/t/{run}/log"),
            token: "x".to_owned(),
            body: None,
            headers: vec![],
            timeout_ms: 5_000,
        })
        .await
        .unwrap_or_else(|e| panic!("the test server at {SERVER} is not reachable ({e:?}): start tests/support/ferry-test-server.mjs"));
    serde_json::from_slice(&r.body).unwrap()
}

fn posted(log: &[serde_json::Value]) -> Vec<(u64, u64)> {
    log.iter()
        .filter(|e| e["path"] == "/v1/batches")
        .map(|e| {
            (
                e["sequence"].as_u64().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[wasm_bindgen_test]
fn hostile_strings_are_read_and_written_back_code_unit_for_code_unit() {
    storage().clear().unwrap();
    let cases: Vec<(Vec<u16>, Vec<u16>)> = vec![
        (units("lone-high"), vec![0x61, 0xD800, 0x62]),
        (units("lone-low"), vec![0xDC00]),
        (units("nul"), vec![0x61, 0x0000, 0x62]),
        (units("ffff"), vec![0xFFFF, 0x30, 0x30]),
        (units("emoji"), units("ok 😀 🌍")),
        (vec![0xDBFF, 0x6B], units("hostile key")),
        (units("plain"), units("[1,2,3]")),
    ];
    for (k, v) in &cases {
        set_units(k, v);
    }
    let local = LocalStorage::new().unwrap();
    let mut read = local.read_all().unwrap();
    read.sort();
    let mut expected: Vec<_> = cases
        .iter()
        .map(|(k, v)| (LosslessString::from_utf16(k), LosslessString::from_utf16(v)))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
    // Written back through the binding, JavaScript sees the very same code units.
    storage().clear().unwrap();
    for (k, v) in &expected {
        local.write(k, v).unwrap();
    }
    for (k, v) in &cases {
        let get: Function = Reflect::get(&storage(), &"getItem".into())
            .unwrap()
            .unchecked_into();
        let got: JsString = get
            .call1(&storage(), &JsString::from_char_code(k))
            .unwrap()
            .unchecked_into();
        assert_eq!(got.iter().collect::<Vec<u16>>(), *v);
    }
    storage().clear().unwrap();
}

/// Regression: `String.fromCharCode` with megabytes of arguments overflowed the JavaScript
/// stack, so restoring (or generating) a large value holding one lone surrogate failed.
#[wasm_bindgen_test]
fn a_multi_megabyte_value_with_a_lone_surrogate_converts_exactly() {
    let mut value: Vec<u16> = units(&"task ".repeat(600_000));
    value.insert(1_000_000, 0xD800);
    let lossless = LosslessString::from_utf16(&value);
    let js = browser::local::to_js(&lossless);
    assert_eq!(js.length() as usize, value.len());
    assert_eq!(js.iter().collect::<Vec<u16>>(), value);
}

#[wasm_bindgen_test]
fn big_values_are_escaped_exactly_across_every_chunk_boundary() {
    // The JavaScript side escapes big values in chunks of 65,536 code units: put pairs, lone
    // halves, NUL and U+FFFF on and around each boundary.
    const CHUNK: usize = 65_536;
    let mut value: Vec<u16> = units(&"abc ".repeat(3 * CHUNK / 4 + 100));
    let specials: [(usize, &[u16]); 7] = [
        (CHUNK - 1, &[0xD83D, 0xDE00]), // a pair across the first boundary
        (2 * CHUNK - 1, &[0xD800]),     // a lone high half ending a chunk
        (2 * CHUNK, &[0xDC00]),         // a lone low half starting the next
        (100, &[0x0000]),
        (CHUNK + 5, &[0xFFFF]),
        (CHUNK / 2, &[0xDBFF, 0xDFFF]), // a pair inside a chunk
        (5, &[0xDFFF, 0xD800]),         // two lone halves, low then high
    ];
    for (at, units) in specials {
        value.splice(at..at + units.len(), units.iter().copied());
    }
    let expected = LosslessString::from_utf16(&value);
    let js = browser::local::to_js(&expected);
    assert_eq!(js.iter().collect::<Vec<u16>>(), value);
    assert_eq!(browser::local::lossless(&js), expected);
}

#[wasm_bindgen_test]
fn the_javascript_fingerprint_is_the_rust_one() {
    let samples: [&[u16]; 5] = [
        &[],
        &[0x61, 0x62],
        &[0xD800, 0x0000, 0xFFFF, 0xDC00],
        &[0xD83D, 0xDE00, 0x20, 0xFFFE],
        &[0x7FFF; 1000],
    ];
    for units in samples {
        let js = browser::local::to_js(&LosslessString::from_utf16(units));
        assert_eq!(
            browser::local::fingerprint(&js),
            ferry::checkpoint::Fingerprint::of_utf16(units.iter().copied()),
            "{units:?}"
        );
    }
}

#[wasm_bindgen_test]
async fn backups_live_in_indexeddb_under_a_non_extractable_key_and_restore_exactly() {
    storage().clear().unwrap();
    seed_tasks(3);
    set_units(
        &units("taskboard:weird"),
        &[0xD800, 0x0000, 0xFFFF, 0xD83D, 0xDE00],
    );
    let db = unique("ferry-backup");
    let ports = fresh_ports(&db).await;
    let app = ports.app.clone();
    let before = app.read_all().unwrap();
    let run = unique("backup");
    let m = migrator(ports, &run, "ok");
    let report = m.run(&RunOptions::default(), &|_| {}).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    let id = report.backup_id.clone().unwrap();
    assert_eq!(m.backups().await.unwrap()[0].id, id);

    // Decrypt with WebCrypto and decode with ferry_core: the shared format, byte for byte.
    let store = IdbStore::new(&db);
    let file = store.get(&format!("backup/{id}")).await.unwrap().unwrap();
    let key: web_sys::CryptoKey = store
        .get_value(DEVICE_CRYPTO_KEY)
        .await
        .unwrap()
        .unchecked_into();
    assert!(
        !key.extractable(),
        "the device key must never leave WebCrypto"
    );
    let export = subtle().unwrap().export_key("raw", &key).unwrap();
    assert!(
        JsFuture::from(export).await.is_err(),
        "exporting the device key must fail"
    );
    let parsed = backup::parse(&file).unwrap();
    let plaintext = decrypt(&key, &parsed.header.nonce, parsed.aad, parsed.ciphertext)
        .await
        .unwrap();
    let mut pairs = backup::decode_plaintext(&parsed.header, &plaintext).unwrap();
    pairs.sort();
    let mut before_sorted = before.clone();
    before_sorted.sort();
    assert_eq!(pairs, before_sorted);

    // Restore after the data is gone.
    storage().clear().unwrap();
    assert_eq!(m.restore(&id).await.unwrap(), before.len());
    let mut after = app.read_all().unwrap();
    after.sort();
    assert_eq!(after, before_sorted);

    // The passphrase export opens natively with ferry_core.
    let exported = m.export_backup(&id, "pass phrase").await.unwrap();
    let opened = backup::open(&exported, &backup::OpeningKey::Passphrase("pass phrase")).unwrap();
    assert_eq!(opened.pairs.len(), before.len());
    storage().clear().unwrap();
}

/// IndexedDB that fails backup writes with a real `QuotaExceededError` DOMException, passed
/// through the same conversion the IndexedDB store applies to its transaction errors.
struct FullDisk(Rc<IdbStore>);

impl Store for FullDisk {
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<Vec<u8>>, Error>> {
        self.0.get(key)
    }
    fn keys<'a>(&'a self, prefix: &'a str) -> LocalFuture<'a, Result<Vec<String>, Error>> {
        self.0.keys(prefix)
    }
    fn commit(&self, ops: Vec<StoreOp>) -> LocalFuture<'_, Result<(), Error>> {
        let full = ops
            .iter()
            .any(|op| matches!(op, StoreOp::Put(k, _) if k.starts_with("backup/")));
        if full {
            let e = web_sys::DomException::new_with_message_and_name(
                "The quota has been exceeded.",
                "QuotaExceededError",
            )
            .unwrap();
            return Box::pin(async move { Err(storage_error("writing IndexedDB", &e.into())) });
        }
        self.0.commit(ops)
    }
}

#[wasm_bindgen_test]
async fn a_full_disk_stops_the_run_before_any_request_and_says_so() {
    storage().clear().unwrap();
    seed_tasks(2);
    let db = unique("ferry-quota");
    let mut ports = fresh_ports(&db).await;
    ports.store = Rc::new(FullDisk(Rc::new(IdbStore::new(&db))));
    let before = ports.app.read_all().unwrap();
    let app = ports.app.clone();
    let run = unique("quota");
    let m = migrator(ports, &run, "ok");
    let e = m.run(&RunOptions::default(), &|_| {}).await.unwrap_err();
    assert_eq!(e.code(), "quota_exceeded", "{e}");
    assert!(e.to_string().contains("QuotaExceededError"), "{e}");
    assert_eq!(app.read_all().unwrap(), before, "the source is intact");
    assert!(server_log(&run).await.is_empty(), "nothing was sent");
    // The JavaScript error carries the message and the code.
    let js: js_sys::Error = ferry::facade::js_error(e).unchecked_into();
    assert_eq!(js.name(), "FerryError");
    assert_eq!(Reflect::get(&js, &"code".into()).unwrap(), "quota_exceeded");
    storage().clear().unwrap();
}

#[wasm_bindgen_test]
async fn an_auto_run_skips_while_another_tab_holds_the_lock() {
    for kind in [LockKind::Best, LockKind::Lease] {
        storage().clear().unwrap();
        seed_tasks(1);
        let db = unique("ferry-lock");
        IdbStore::new(&db).delete_database().await.unwrap();
        let ports = browser::ports(&db, token(), kind).unwrap();
        let other_tab = ports.locks.clone();
        let held = other_tab.acquire("ferry:taskboard", false).await.unwrap();
        assert!(held.is_some(), "{kind:?}: the first holder gets the lock");
        let run = unique("lock");
        let m = migrator(ports, &run, "ok");
        let r = m.run(&RunOptions::default(), &|_| {}).await.unwrap();
        assert_eq!(r.status, RunStatus::Skipped, "{kind:?}");
        drop(held);
        let r = m
            .run(
                &RunOptions {
                    mode: Mode::Manual,
                    ..RunOptions::default()
                },
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!(
            r.status,
            RunStatus::Completed,
            "{kind:?}: the lock was released"
        );
    }
    storage().clear().unwrap();
}

#[wasm_bindgen_test]
async fn the_checkpoint_survives_a_reload_and_acknowledged_batches_are_not_resent() {
    storage().clear().unwrap();
    seed_tasks(5); // three batches of at most two records
    let db = unique("ferry-resume");
    let run = unique("resume");
    let m = migrator(fresh_ports(&db).await, &run, "down");
    let e = m.run(&RunOptions::default(), &|_| {}).await.unwrap_err();
    assert_eq!(e.code(), "unavailable", "{e}");
    drop(m);

    // "Reload": a new migrator over the same IndexedDB; the server is back.
    let ports = browser::ports(&db, token(), LockKind::Best).unwrap();
    let m = migrator(ports, &run, "ok");
    assert_eq!(
        serde_json::to_value(m.inspect().await.unwrap()).unwrap()["state"],
        "in_progress"
    );
    let r = m.run(&RunOptions::default(), &|_| {}).await.unwrap();
    assert!(r.resumed && r.status == RunStatus::Completed, "{r:?}");
    let mut ok: Vec<u64> = posted(&server_log(&run).await)
        .into_iter()
        .filter(|(_, s)| *s == 200)
        .map(|(q, _)| q)
        .collect();
    // Batches travel in parallel, so they may be answered in any order.
    ok.sort_unstable();
    assert_eq!(
        ok,
        vec![0, 1, 2],
        "each batch accepted once, batch 0 never re-sent"
    );
    storage().clear().unwrap();
}

#[wasm_bindgen_test]
async fn server_errors_are_retried_and_large_batches_split() {
    storage().clear().unwrap();
    seed_tasks(5);
    let db = unique("ferry-split");
    let run = unique("split");
    let m = migrator(fresh_ports(&db).await, &run, "flaky-split");
    let stages = std::cell::RefCell::new(Vec::new());
    let r = m
        .run(&RunOptions::default(), &|p| {
            stages.borrow_mut().push(p.stage)
        })
        .await
        .unwrap();
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "verified after splits and retries: {r:?}"
    );
    assert_eq!(r.records_sent, 5);
    assert_eq!(r.splits, 2, "{r:?}");
    assert!(
        r.retries >= 5,
        "every single-record batch met one 503: {r:?}"
    );
    let log = posted(&server_log(&run).await);
    assert!(
        log.contains(&(0, 413)) && log.contains(&(3, 503)) && log.contains(&(3, 200)),
        "{log:?}"
    );
    let s = stages.borrow();
    assert_eq!(s.first(), Some(&ferry::progress::Stage::Inspect));
    assert_eq!(s.last(), Some(&ferry::progress::Stage::Done));
    storage().clear().unwrap();
}

#[wasm_bindgen_test]
async fn the_javascript_facade_inspects_and_reports_errors_as_error_objects() {
    storage().clear().unwrap();
    seed_tasks(2);
    let db = unique("ferry-facade");
    IdbStore::new(&db).delete_database().await.unwrap();
    let options = js_sys::JSON::parse(&format!(r#"{{"storageName":"{db}"}}"#)).unwrap();
    let m = ferry::facade::Migrator::new(SPEC, SERVER, token(), options).unwrap();
    let inspection = JsFuture::from(m.inspect()).await.unwrap();
    let kinds = Reflect::get(&inspection, &"kinds".into()).unwrap();
    let first = Reflect::get(&kinds, &0.into()).unwrap();
    assert_eq!(Reflect::get(&first, &"toSend".into()).unwrap(), 2);
    assert_eq!(
        Reflect::get(&inspection, &"state".into()).unwrap(),
        "not_started"
    );
    let bad = ferry::facade::Migrator::new("{}", SERVER, token(), JsValue::UNDEFINED)
        .err()
        .unwrap();
    let bad: js_sys::Error = bad.unchecked_into();
    assert_eq!(Reflect::get(&bad, &"code".into()).unwrap(), "spec_invalid");
    assert!(String::from(bad.message()).contains("spec"));
    let e = JsFuture::from(m.restore("nope".to_owned()))
        .await
        .unwrap_err();
    assert_eq!(
        Reflect::get(&e, &"code".into()).unwrap(),
        "backup_not_found"
    );
    storage().clear().unwrap();
}

/// Issue 12 §2, over real fetch: the same 500 for the same batch five times is a server fault,
/// not an outage; the run stops (not after the whole budget) with the checkpoint kept, and
/// the next run finishes.
#[wasm_bindgen_test]
async fn the_same_server_fault_five_times_stops_the_run_with_the_checkpoint_kept() {
    storage().clear().unwrap();
    seed_tasks(5);
    let db = unique("ferry-poison");
    let run = unique("poison");
    let m = migrator_with_attempts(fresh_ports(&db).await, &run, "poison", 8);
    let e = m.run(&RunOptions::default(), &|_| {}).await.unwrap_err();
    assert_eq!(e.code(), "server_fault", "{e}");
    assert_eq!(e.failure(), ferry::error::Failure::ServerFault);
    let faults: Vec<u64> = posted(&server_log(&run).await)
        .into_iter()
        .filter(|(_, s)| *s == 500)
        .map(|(q, _)| q)
        .collect();
    // Batches 1 and 2 travel together; each stops after its fifth identical answer.
    assert_eq!(faults.len(), 10, "{faults:?}");
    assert_eq!(
        serde_json::to_value(m.inspect().await.unwrap()).unwrap()["state"],
        "in_progress"
    );
    let m = migrator(fresh_ports_kept(&db), &run, "ok");
    let r = m.run(&RunOptions::default(), &|_| {}).await.unwrap();
    assert!(r.resumed && r.status == RunStatus::Completed, "{r:?}");
    storage().clear().unwrap();
}

/// Issue 12 §3: the migration in flight was rolled back on the server; its re-sent batches
/// get 409 `migration_rolled_back`. The next run migrates the records again under a new id.
#[wasm_bindgen_test]
async fn a_migration_rolled_back_in_flight_is_sent_again_under_a_new_id() {
    storage().clear().unwrap();
    seed_tasks(5);
    let db = unique("ferry-rolled-back");
    let run = unique("rolled-back");
    let m = migrator(fresh_ports(&db).await, &run, "down");
    m.run(&RunOptions::default(), &|_| {}).await.unwrap_err();
    let first =
        serde_json::to_value(m.inspect().await.unwrap()).unwrap()["inFlight"]["migrationId"]
            .as_str()
            .unwrap()
            .to_owned();
    m.client()
        .json_call("POST", &format!("/v1/migrations/{first}/rollback"), None)
        .await
        .unwrap();

    let m = migrator(fresh_ports_kept(&db), &run, "ok");
    let r = m.run(&RunOptions::default(), &|_| {}).await.unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(
        r.rolled_back_migration.map(|u| u.to_string()),
        Some(first.clone())
    );
    assert_ne!(r.migration_id.map(|u| u.to_string()), Some(first));
    assert_eq!(r.records_sent, 5, "every record sent again");
    let log = posted(&server_log(&run).await);
    assert!(log.iter().any(|(_, s)| *s == 409), "{log:?}");
    assert_eq!(
        serde_json::to_value(m.inspect().await.unwrap()).unwrap()["state"],
        "done"
    );
    storage().clear().unwrap();
}

/// The ports of a "reloaded" page: the same IndexedDB, kept.
fn fresh_ports_kept(db: &str) -> Ports {
    browser::ports(db, token(), LockKind::Best).unwrap()
}

/// reqwest's timeout aborts a request whose answer is late and, since its abort timer lives as
/// long as the response, one whose body trickles in; the transport reports both as a timeout.
#[wasm_bindgen_test]
async fn the_transport_timeout_bounds_a_late_answer_and_a_trickling_body() {
    for mode in ["stall", "trickle"] {
        let started = js_sys::Date::now();
        let r = browser::net::HttpTransport::new()
            .send(HttpRequest {
                method: "GET",
                url: format!("{SERVER}/t/timeouts/{mode}/v1/conflicts"),
                token: "x".to_owned(),
                body: None,
                headers: vec![],
                timeout_ms: 500,
            })
            .await;
        let took = js_sys::Date::now() - started;
        assert_eq!(r, Err(TransportError::Timeout), "{mode}");
        assert!(
            took < 2_000.0,
            "{mode}: gave up only after {took} ms (the server takes 3 s)"
        );
    }
    // The same request with time enough gets the whole body.
    let r = browser::net::HttpTransport::new()
        .send(HttpRequest {
            method: "GET",
            url: format!("{SERVER}/t/timeouts/trickle/v1/conflicts"),
            token: "x".to_owned(),
            body: None,
            headers: vec![],
            timeout_ms: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        serde_json::json!([])
    );
}
