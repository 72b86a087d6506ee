//! Native tests of the runner over the in-memory twins and the fake server: every failure
//! sequence the browser meets (5xx, 429, 413, lost responses, 401, offline, full disk,
//! reloads) replayed deterministically.

// clippy's `allow-unwrap-in-tests` does not see through the extra `not(wasm32)` cfg on this
// module; a test fails by panicking, so unwrap is how it says "this must hold".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::memory::{Fault, Twins, block_on};
use crate::ports::AppStorage;
use ferry_core::lossless::LosslessString;

const SPEC: &str = include_str!("../../specs/taskboard.json");

fn task(n: u32, title: &str) -> String {
    format!(
        r#"{{"id":"00000000-0000-4000-8000-{n:012}","title":"{title}","status":"todo","createdAt":"2024-01-0{}T10:00:00Z"}}"#,
        1 + n % 9
    )
}

fn tasks(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// Four valid tasks, one without a title (quarantined), a preference object, an unknown key.
fn seeded() -> Twins {
    let t = Twins::new(7).unwrap();
    let mut items: Vec<String> = (1..=4).map(|n| task(n, &format!("task {n}"))).collect();
    items.push(r#"{"id":"00000000-0000-4000-8000-000000000099","status":"done","createdAt":"2024-01-01T00:00:00Z"}"#.to_owned());
    t.app.set("tasks", &tasks(&items));
    t.app.set("unrelated", "left alone");
    t
}

fn migrator(t: &Twins, limits: BatchLimits) -> Migrator {
    migrator_with(t, limits, PARALLEL_UPLOADS)
}

/// A migrator sending `parallel` batches at once (1: one after another, in a fixed order).
fn migrator_with(t: &Twins, limits: BatchLimits, parallel: usize) -> Migrator {
    let config = Config {
        limits,
        retry: RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        },
        origin: "https://app.test".to_owned(),
        parallel_uploads: parallel,
    };
    new_migrator(t, SPEC, config)
}

/// A migrator of `spec` over the twins; the fake server learns the spec to hash its records.
fn new_migrator(t: &Twins, spec: &str, config: Config) -> Migrator {
    t.server
        .specs
        .borrow_mut()
        .push(ferry_core::spec::Spec::parse(spec).unwrap());
    Migrator::new(spec, "https://api.test/", t.ports(), config).unwrap()
}

fn run(m: &Migrator, options: RunOptions) -> Result<RunReport, Error> {
    block_on(m.run(&options, &|_| {}))
}

fn auto() -> RunOptions {
    RunOptions::default()
}

fn small_batches() -> BatchLimits {
    BatchLimits {
        max_records: 2,
        max_bytes: 1 << 20,
    }
}

/// Batch 0 goes through, then the server answers 503 past the retry budget (4 attempts).
fn down_after_first_batch(t: &Twins) {
    t.server.inject([
        Fault::Pass,
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
    ]);
}

fn checkpoint_of(t: &Twins) -> Option<Checkpoint> {
    t.store
        .value(&checkpoint::checkpoint_key("taskboard"))
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Regression: two identical copies of a rejected record share a hash; the server counts the
/// hash once, so the browser must too, or verification fails on every run.
#[test]
fn identical_rejected_records_do_not_break_verification() {
    let t = Twins::new(7).unwrap();
    let bad = r#"{"id":"00000000-0000-4000-8000-000000000099","status":"done","createdAt":"2024-01-01T00:00:00Z"}"#;
    t.app.set(
        "tasks",
        &tasks(&[task(1, "ok"), bad.to_owned(), bad.to_owned()]),
    );
    let m = migrator(&t, small_batches());
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
}

/// After a completed run, quarantined records are accounted for: the browser must not tell
/// the user that something is still unsaved (nor send those records again).
#[test]
fn a_completed_run_with_quarantined_records_inspects_as_done() {
    let t = seeded();
    t.app.set("formData:newTask", "{not json");
    t.app.set(
        "environments",
        r#"[{"id":"prod","name":"Prod","config":{"githubToken":"ghp_x"}},{"id":"bad"}]"#,
    );
    t.app.set("userPreferences", r#"{"theme":"dark"}"#);
    let m = migrator(&t, small_batches());
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert!(r.quarantined.len() >= 3, "{r:?}");
    let inspection = block_on(m.inspect()).unwrap();
    assert_eq!(inspection.state, MigrationState::Done, "{inspection:?}");
}

#[test]
fn first_run_backs_up_sends_verifies_and_reports_quarantine() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    let before = t.app.pairs();
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.records_to_send, 5);
    assert_eq!(r.records_sent, 5);
    assert_eq!(r.quarantined.len(), 1, "{r:?}");
    assert_eq!(
        r.outcomes["tasks"][&crate::client::RecordOutcome::Inserted],
        4
    );
    assert!(
        checkpoint_of(&t).is_none(),
        "done migrations leave no checkpoint"
    );
    assert!(t.store.keys_now().iter().all(|k| !k.contains("/outbox/")));
    assert_eq!(
        t.app.pairs(),
        before,
        "without cleanup localStorage is untouched"
    );
    // The backup holds the whole origin (the key no kind reads too, so a restore gives back
    // the app as it was) and opens.
    let backups = block_on(m.backups()).unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(Some(backups[0].id.clone()), r.backup_id);
    let file = t
        .store
        .value(&checkpoint::backup_key(&backups[0].id))
        .unwrap();
    let pairs = block_on(t.ports().vault.open(&file, VaultKey::Device)).unwrap();
    assert_eq!(pairs, before);
    assert!(t.announcer.messages.borrow()[0].contains("\"completed\""));
}

#[test]
fn a_full_disk_stops_before_any_request_with_the_source_intact() {
    let t = seeded();
    t.store.quota.set(Some(300));
    let m = migrator(&t, BatchLimits::default());
    let before = t.app.pairs();
    let e = run(&m, auto()).unwrap_err();
    assert!(
        matches!(&e, Error::QuotaExceeded { what, .. } if what == "the backup"),
        "{e}"
    );
    assert!(e.to_string().contains("storage is full"), "{e}");
    assert!(
        t.server.seen.borrow().is_empty(),
        "nothing may leave before the backup is stored"
    );
    assert_eq!(t.app.pairs(), before);
    assert!(checkpoint_of(&t).is_none());
}

#[test]
fn a_disk_full_while_the_outbox_is_stored_stops_before_any_request() {
    // Room for the backup (as big as one taken on demand on the same data) and no more.
    let probe = seeded();
    block_on(migrator(&probe, BatchLimits::default()).backup_now()).unwrap();
    let used: usize = probe
        .store
        .keys_now()
        .iter()
        .map(|k| k.len() + probe.store.value(k).map_or(0, |v| v.len()))
        .sum();
    let t = seeded();
    t.store.quota.set(Some(used + 64));
    let m = migrator(&t, BatchLimits::default());
    let e = run(&m, auto()).unwrap_err();
    assert!(
        matches!(&e, Error::QuotaExceeded { what, .. } if what == "the upload plan"),
        "{e}"
    );
    assert!(t.server.seen.borrow().is_empty(), "nothing sent");
    assert!(checkpoint_of(&t).is_none());
}

/// The outbox is stored batch by batch before the checkpoint: entries of a plan interrupted
/// in between belong to no migration, and the next plan deletes them before its own.
#[test]
fn outbox_entries_of_an_interrupted_plan_are_deleted_not_sent() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    let stale = checkpoint::outbox_key(&m.spec().app, 7);
    block_on(
        t.ports()
            .store
            .commit(vec![StoreOp::Put(stale.clone(), b"{}".to_vec())]),
    )
    .unwrap();
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(t.server.posted_sequences(), vec![0]);
    assert!(t.store.value(&stale).is_none());
    assert!(
        !t.store.keys_now().iter().any(|k| k.contains("/outbox/")),
        "{:?}",
        t.store.keys_now()
    );
}

/// The spec's `ignore` (the demo's `taskboard:lastRoute`, rewritten on every move between
/// views): a change to it starts no run, and the light loader's stamp does not watch it.
#[test]
fn a_change_to_an_ignored_key_starts_no_run() {
    let t = seeded();
    t.app.set("taskboard:lastRoute", "/tasks");
    let m = migrator(&t, BatchLimits::default());
    let first = run(&m, auto()).unwrap();
    assert_eq!(first.status, RunStatus::Completed);
    let requests = t.server.seen.borrow().len();
    t.app.set("taskboard:lastRoute", "/data");
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::UpToDate);
    assert_eq!(t.server.seen.borrow().len(), requests, "no request");
    t.app.set("taskboard:theme", "dark");
    let r = run(&m, auto()).unwrap();
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "a key the spec reads still migrates"
    );
    let state = block_on(m.verified_state()).unwrap().unwrap();
    let ignored: Vec<&str> = state.ignored_exact.iter().map(|k| k.as_escaped()).collect();
    assert_eq!(ignored, ["taskboard:lastRoute"]);
    assert!(
        state
            .fingerprints
            .iter()
            .all(|(k, _)| k.as_escaped() != "taskboard:lastRoute"),
        "the stamp's digest leaves it out"
    );
}

#[test]
fn nothing_changed_means_no_request_and_no_parsing() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    run(&m, auto()).unwrap();
    let requests = t.server.seen.borrow().len();
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::UpToDate);
    assert!(r.kinds.is_empty(), "the fingerprint check skips parsing");
    assert_eq!(t.server.seen.borrow().len(), requests);
}

#[test]
fn a_user_without_data_pays_nothing() {
    let t = Twins::new(1).unwrap();
    t.app.set("unrelated", "x");
    let m = migrator(&t, BatchLimits::default());
    assert_eq!(run(&m, auto()).unwrap().status, RunStatus::NothingToMigrate);
    assert!(
        t.store.keys_now().is_empty(),
        "not even a device id is written"
    );
    assert!(t.server.seen.borrow().is_empty());
}

#[test]
fn a_migration_in_flight_is_finished_even_after_the_app_data_is_gone() {
    let t = seeded();
    let m = migrator_with(&t, small_batches(), 1);
    down_after_first_batch(&t);
    assert!(run(&m, auto()).is_err());
    t.app
        .remove(&LosslessString::from_unicode("tasks"))
        .unwrap();
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert!(r.resumed);
    assert!(checkpoint_of(&t).is_none());
}

#[test]
fn later_runs_ship_only_added_or_changed_records() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    run(&m, auto()).unwrap();
    let items = vec![
        task(1, "task 1"),
        task(2, "task 2 renamed"),
        task(3, "task 3"),
        task(4, "task 4"),
        task(5, "new task"),
    ];
    t.app.set("tasks", &tasks(&items));
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.records_to_send, 2, "{r:?}");
    assert_eq!(
        block_on(m.backups()).unwrap().len(),
        2,
        "every migration is backed up first"
    );
}

#[test]
fn a_run_that_finds_nothing_new_to_send_leaves_the_backups_as_they_were() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    run(&m, auto()).unwrap();
    let before = block_on(m.backups()).unwrap();
    let keys = t.store.keys_now();
    // The same records in another order: the key changed, every record is confirmed already.
    let mut items: Vec<String> = (1..=4)
        .rev()
        .map(|n| task(n, &format!("task {n}")))
        .collect();
    items.push(r#"{"id":"00000000-0000-4000-8000-000000000099","status":"done","createdAt":"2024-01-01T00:00:00Z"}"#.to_owned());
    t.app.set("tasks", &tasks(&items));
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::UpToDate, "{r:?}");
    assert_eq!(r.backup_id, None);
    assert_eq!(block_on(m.backups()).unwrap(), before);
    assert_eq!(
        t.store.keys_now(),
        keys,
        "the backup taken first is gone again"
    );
}

#[test]
fn runs_keep_the_first_backup_and_the_newest_few() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    let mut ids = Vec::new();
    for n in 0..RECENT_BACKUPS_KEPT + 3 {
        t.app.set("tasks", &tasks(&[task(1, &format!("edit {n}"))]));
        ids.push(run(&m, auto()).unwrap().backup_id.unwrap());
    }
    let kept: Vec<String> = block_on(m.backups())
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    let mut expected = vec![ids[0].clone()];
    expected.extend_from_slice(&ids[ids.len() - RECENT_BACKUPS_KEPT..]);
    assert_eq!(kept, expected);
    let files = t
        .store
        .keys_now()
        .into_iter()
        .filter(|k| k.starts_with("backup/"))
        .count();
    assert_eq!(files, expected.len(), "{:?}", t.store.keys_now());
}

#[test]
fn dry_run_counts_and_touches_nothing() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    let r = run(
        &m,
        RunOptions {
            dry_run: true,
            ..auto()
        },
    )
    .unwrap();
    assert_eq!(r.status, RunStatus::DryRun);
    assert_eq!(r.records_to_send, 5);
    assert_eq!(r.kinds[0].rejected, 1);
    assert!(t.server.seen.borrow().is_empty());
    assert_eq!(t.store.keys_now(), vec![DEVICE_KEY.to_owned()]);
    assert_eq!(r.batches_planned, 1);

    // The dry run encodes what a real run sends: as many batches, as many bytes.
    let real = run(&m, auto()).unwrap();
    assert_eq!(real.batches_planned, r.batches_planned);
    assert_eq!(real.bytes_planned, r.bytes_planned);
    assert!(r.bytes_planned > 0);
}

#[test]
fn a_backup_on_demand_is_listed_and_a_passphrase_copy_is_made_from_local_storage() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    t.app.set("ferry-lease:migration", "someone|0");
    let info = block_on(m.backup_now()).unwrap();
    assert_eq!(
        info.key_count, 2,
        "the origin's keys but Ferry's own: {info:?}"
    );
    assert_eq!(block_on(m.backups()).unwrap(), vec![info.clone()]);
    assert!(t.server.seen.borrow().is_empty(), "a backup sends nothing");

    let file = block_on(m.export_now("correct horse")).unwrap();
    let opened = ferry_core::backup::open(
        &file,
        &ferry_core::backup::OpeningKey::Passphrase("correct horse"),
    )
    .unwrap();
    let mut origin = t.app.pairs();
    origin.retain(|(k, _)| !k.as_escaped().starts_with("ferry-lease:"));
    assert_eq!(opened.pairs, origin);
    assert_eq!(block_on(m.backups()).unwrap().len(), 1, "nothing kept");
    assert!(matches!(block_on(m.export_now("")), Err(Error::Backup(_))));
}

#[test]
fn transient_failures_are_retried_with_growing_jittered_delays() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    t.server
        .inject([Fault::Status(503), Fault::Status(500), Fault::Timeout]);
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.retries, 3);
    let sleeps = t.clock.sleeps.borrow().clone();
    assert_eq!(sleeps.len(), 3);
    for (i, d) in sleeps.iter().enumerate() {
        let step = 500u64 << i;
        assert!(*d >= step / 2 && *d <= step, "retry {i} waited {d}");
    }
}

#[test]
fn too_many_requests_waits_as_long_as_retry_after_says() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    t.server.inject([Fault::RetryAfter(7)]);
    run(&m, auto()).unwrap();
    assert_eq!(t.clock.sleeps.borrow().as_slice(), &[7000]);
}

#[test]
fn payload_too_large_splits_under_new_sequence_numbers() {
    let t = seeded();
    t.server.max_records.set(Some(1));
    let m = migrator_with(&t, small_batches(), 1);
    let r = run(&m, auto()).unwrap();
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "verification passed after splits"
    );
    assert_eq!(r.records_sent, 5);
    assert!(r.splits >= 2);
    let posted = t.server.posted_sequences();
    // Batches 0, 1, 2 (2 + 2 + 1 records): 0 → 413 → 3, 4; 1 → 413 → 5, 6; 2 goes through.
    assert_eq!(posted, vec![0, 3, 4, 1, 5, 6, 2]);
    let stored: Vec<u32> = t.server.batches.borrow().keys().map(|(_, s)| *s).collect();
    assert_eq!(
        stored,
        vec![2, 3, 4, 5, 6],
        "a refused number is never reused"
    );
}

#[test]
fn parallel_uploads_split_in_place_and_keep_every_number_unique() {
    let t = seeded();
    t.server.max_records.set(Some(1));
    let m = migrator(&t, small_batches());
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.records_sent, 5);
    // The first wave sends 0, 1, 2 at once; 0 and 1 are split into 3, 4 and 5, 6.
    let posted = t.server.posted_sequences();
    assert_eq!(&posted[..3], &[0, 1, 2]);
    let mut sorted = posted.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5, 6]);
    let stored: Vec<u32> = t.server.batches.borrow().keys().map(|(_, s)| *s).collect();
    assert_eq!(stored, vec![2, 3, 4, 5, 6]);
}

#[test]
fn a_batch_failing_in_a_wave_keeps_the_others_acknowledged() {
    let t = seeded();
    let m = migrator(&t, small_batches());
    // In parallel: batch 0 passes, batch 1 meets every 503 (its retries come first), batch 2
    // passes.
    down_after_first_batch(&t);
    let e = run(&m, auto()).unwrap_err();
    assert!(matches!(e, Error::Unavailable { attempts: 4, .. }), "{e}");
    let cp = checkpoint_of(&t).expect("the checkpoint survives the failure");
    assert_eq!(cp.acked, vec![0, 2]);
    assert_eq!(cp.pending, vec![1]);

    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert!(r.resumed);
    let posted = t.server.posted_sequences();
    assert_eq!(posted.iter().filter(|&&s| s == 0).count(), 1, "{posted:?}");
    assert_eq!(posted.iter().filter(|&&s| s == 2).count(), 1, "{posted:?}");
}

#[test]
fn a_single_record_still_too_large_stops_with_the_checkpoint_kept() {
    let t = seeded();
    t.server.max_records.set(Some(0));
    let m = migrator(&t, small_batches());
    let e = run(&m, auto()).unwrap_err();
    assert!(matches!(e, Error::RecordTooLarge { .. }), "{e}");
    assert!(checkpoint_of(&t).is_some());
}

#[test]
fn a_lost_response_is_resent_and_counted_once() {
    let t = seeded();
    let m = migrator(&t, small_batches());
    t.server.inject([Fault::LoseResponse]);
    let r = run(&m, auto()).unwrap();
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "the server's tallies count the replay once"
    );
    assert_eq!(t.server.posted_sequences(), vec![0, 0, 1, 2]);
}

#[test]
fn a_reload_resumes_without_resending_acknowledged_batches() {
    let t = seeded();
    let m_first = migrator_with(&t, small_batches(), 1);
    down_after_first_batch(&t);
    let e = run(&m_first, auto()).unwrap_err();
    assert!(matches!(e, Error::Unavailable { attempts: 4, .. }), "{e}");
    let cp = checkpoint_of(&t).expect("the checkpoint survives the failure");
    assert_eq!(cp.acked, vec![0]);
    assert_eq!(cp.pending, vec![1, 2]);
    drop(m_first);

    // "Reload": a new migrator over the same storage.
    let m = migrator(&t, small_batches());
    let inspection = block_on(m.inspect()).unwrap();
    assert_eq!(inspection.state, MigrationState::InProgress);
    let sent_before = t.server.posted_sequences().len();
    let r = run(&m, auto()).unwrap();
    assert!(r.resumed);
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(
        &t.server.posted_sequences()[sent_before..],
        &[1, 2],
        "batch 0 is not sent again"
    );
    assert_eq!(block_on(m.inspect()).unwrap().state, MigrationState::Done);
}

#[test]
fn an_expired_token_is_refreshed_once() {
    let t = seeded();
    t.server
        .refused_tokens
        .borrow_mut()
        .insert("token-1".to_owned());
    let m = migrator(&t, BatchLimits::default());
    assert_eq!(run(&m, auto()).unwrap().status, RunStatus::Completed);
    assert_eq!(t.tokens.issued.get(), 2);
}

#[test]
fn a_token_refused_twice_is_fatal_and_keeps_the_checkpoint() {
    let t = seeded();
    t.server
        .refused_tokens
        .borrow_mut()
        .extend(["token-1".to_owned(), "token-2".to_owned()]);
    let m = migrator(&t, BatchLimits::default());
    let e = run(&m, auto()).unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(checkpoint_of(&t).is_some());
    assert!(t.announcer.messages.borrow()[0].contains("failed"));
}

#[test]
fn spec_mismatch_and_idempotency_conflicts_are_fatal() {
    for (status, code) in [(400, "spec_mismatch"), (409, "idempotency_conflict")] {
        let t = seeded();
        let m = migrator(&t, BatchLimits::default());
        t.server.inject([Fault::Error(status, code.to_owned())]);
        let e = run(&m, auto()).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(
            checkpoint_of(&t).is_some(),
            "{code}: the checkpoint is kept"
        );
        assert_eq!(t.server.seen.borrow().len(), 1, "{code}: not retried");
    }
}

#[test]
fn offline_waits_for_the_online_event_without_spending_attempts() {
    let t = seeded();
    t.net.set_online(false);
    let m = migrator(&t, small_batches());
    t.server.inject([
        Fault::Pass,
        Fault::GoOffline,
        Fault::GoOffline,
        Fault::GoOffline,
        Fault::GoOffline,
        Fault::GoOffline,
    ]);
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.offline_waits, 6);
    assert_eq!(r.retries, 0, "offline is not the server's fault");
}

#[test]
fn auto_mode_skips_quietly_while_another_tab_runs() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    let other_tab = t.locks.hold("ferry:taskboard").unwrap();
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Skipped);
    assert!(t.server.seen.borrow().is_empty());
    drop(other_tab);
    assert_eq!(run(&m, auto()).unwrap().status, RunStatus::Completed);
}

#[test]
fn restore_writes_back_hostile_strings_exactly() {
    let t = Twins::new(3).unwrap();
    let hostile =
        LosslessString::from_utf16(&[0xD800, 0x61, 0x0000, 0xFFFF, 0xD83D, 0xDE00, 0xDC00]);
    let key = LosslessString::from_unicode("taskboard:weird");
    t.app.write(&key, &hostile).unwrap();
    let m = migrator(&t, BatchLimits::default());
    let r = run(
        &m,
        RunOptions {
            cleanup: true,
            ..auto()
        },
    )
    .unwrap();
    assert_eq!(r.cleaned_keys, vec!["taskboard:weird".to_owned()]);
    assert!(t.app.pairs().is_empty());
    assert_eq!(
        block_on(m.restore(r.backup_id.as_deref().unwrap())).unwrap(),
        1
    );
    assert_eq!(t.app.pairs(), vec![(key, hostile)]);
}

#[test]
fn cleanup_removes_migrated_keys_only() {
    let t = seeded();
    t.app.set("userPreferences", r#"{"theme":"dark"}"#);
    let m = migrator(&t, BatchLimits::default());
    let r = run(
        &m,
        RunOptions {
            cleanup: true,
            ..auto()
        },
    )
    .unwrap();
    let mut cleaned = r.cleaned_keys.clone();
    cleaned.sort();
    assert_eq!(
        cleaned,
        vec!["tasks".to_owned(), "userPreferences".to_owned()]
    );
    assert_eq!(
        t.app.get("unrelated").map(|v| v.into_escaped()),
        Some("left alone".to_owned())
    );
}

#[test]
fn exported_backups_open_with_the_passphrase_only() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    let r = run(&m, auto()).unwrap();
    let id = r.backup_id.unwrap();
    let file = block_on(m.export_backup(&id, "correct horse")).unwrap();
    let opened = ferry_core::backup::open(
        &file,
        &ferry_core::backup::OpeningKey::Passphrase("correct horse"),
    )
    .unwrap();
    assert_eq!(opened.pairs, t.app.pairs());
    assert!(
        ferry_core::backup::open(&file, &ferry_core::backup::OpeningKey::Passphrase("wrong"))
            .is_err()
    );
    assert!(matches!(
        block_on(m.export_backup(&id, "")),
        Err(Error::Backup(_))
    ));
    assert!(matches!(
        block_on(m.restore("nope")),
        Err(Error::BackupNotFound(_))
    ));
}

#[test]
fn verification_refuses_a_server_tally_that_differs() {
    let mut expected = BTreeMap::new();
    let mut tally = Tally::default();
    tally.add(&ContentHash([1; 16]));
    tally.add(&ContentHash([2; 16]));
    expected.insert("tasks".to_owned(), tally);
    let cp = Checkpoint {
        migration_id: Uuid::nil(),
        device_id: Uuid::nil(),
        spec_version: String::new(),
        started_at_ms: 0,
        backup_id: String::new(),
        phase: Phase::Verifying,
        pending: vec![],
        acked: vec![0],
        next_sequence: 1,
        sizes: BTreeMap::new(),
        expected,
        fingerprints: BTreeMap::new(),
    };
    let report = |received, checksum: [u8; 16], extra: bool| {
        let mut kinds = BTreeMap::new();
        kinds.insert(
            "tasks".to_owned(),
            crate::client::KindReport {
                received,
                checksum: ContentHash(checksum).to_hex(),
                outcomes: BTreeMap::new(),
            },
        );
        if extra {
            kinds.insert(
                "custom".to_owned(),
                crate::client::KindReport {
                    received: 1,
                    checksum: String::new(),
                    outcomes: BTreeMap::new(),
                },
            );
        }
        MigrationReport {
            migration_id: Uuid::nil(),
            status: ferry_core::contract::MigrationStatus::Running,
            batches: 1,
            kinds,
        }
    };
    assert!(verify(&cp, &report(2, [3; 16], false)).is_ok());
    // Each case with why it must fail.
    for (r, why) in [
        (report(1, [3; 16], false), "a record missing"),
        (report(2, [4; 16], false), "a record altered"),
        (report(2, [3; 16], true), "a kind never sent"),
    ] {
        assert!(verify(&cp, &r).is_err(), "{why}");
    }
}

#[test]
fn unknown_kinds_in_options_are_refused_with_the_known_ones_listed() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    let e = run(
        &m,
        RunOptions {
            kinds: Some(vec!["taks".to_owned()]),
            ..auto()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"tasks\""), "{e}");
}

#[test]
fn conflict_and_rollback_calls_follow_the_contract() {
    let t = seeded();
    let m = migrator(&t, BatchLimits::default());
    assert!(
        block_on(m.rollback(None)).is_err(),
        "nothing to roll back yet"
    );
    run(&m, auto()).unwrap();
    assert_eq!(block_on(m.conflicts()).unwrap(), serde_json::json!([]));
    assert!(block_on(m.resolve(1, "edited", None)).is_err());
    assert!(block_on(m.resolve(1, "mine", None)).is_err());
    assert_eq!(
        block_on(m.resolve(1, "stored", None)).unwrap()["resolved"],
        true
    );
    block_on(m.rollback(None)).unwrap();
    let last = t.server.seen.borrow().last().unwrap().path.clone();
    assert!(last.ends_with("/rollback"), "{last}");
    // After a rollback everything is sent again.
    assert_eq!(run(&m, auto()).unwrap().records_to_send, 5);
}

// ---- Server answers: permanent refusals, repeated server faults, rolled-back migrations ----

use ferry_core::contract::ErrorCode;

/// A migrator with the default retry budget (10 attempts), sending one batch at a time.
fn patient_migrator(t: &Twins) -> Migrator {
    let config = Config {
        limits: small_batches(),
        origin: "https://app.test".to_owned(),
        parallel_uploads: 1,
        ..Config::default()
    };
    new_migrator(t, SPEC, config)
}

fn fault(status: u16, code: ErrorCode) -> Fault {
    Fault::Error(status, code.as_str().to_owned())
}

fn last_announcement(t: &Twins) -> serde_json::Value {
    let messages = t.announcer.messages.borrow();
    serde_json::from_str(messages.last().expect("the run announced its end")).unwrap()
}

/// Issue 12 §2: a batch the database refuses answers the same 500 on every retry; the browser
/// used to spend its whole budget and then blame the network ("stayed unreachable").
#[test]
fn the_same_server_fault_five_times_stops_with_a_clear_error_and_the_checkpoint_kept() {
    let t = seeded();
    let m = patient_migrator(&t);
    t.server.inject([Fault::Pass]);
    t.server
        .inject(std::iter::repeat_n(fault(500, ErrorCode::Internal), 10));
    let e = run(&m, auto()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ServerFault {
                times: 5,
                status: 500,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.failure(), crate::error::Failure::ServerFault);
    assert!(e.to_string().contains("not an outage"), "{e}");
    assert_eq!(
        t.server.posted_sequences(),
        vec![0, 1, 1, 1, 1, 1],
        "batch 1 is tried 5 times, not 10"
    );
    let cp = checkpoint_of(&t).expect("the checkpoint is kept");
    assert_eq!(cp.pending, vec![1, 2]);
    let said = last_announcement(&t);
    assert_eq!(said["failure"], "server_fault", "{said}");
    assert_eq!(said["code"], "server_fault", "{said}");

    // The server is fixed: the next run resumes and finishes.
    t.server.faults.borrow_mut().clear();
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert!(r.resumed);
}

/// Different 5xx answers, or unavailability (503), are an outage: retried within the budget.
#[test]
fn changing_server_faults_and_unavailability_keep_being_retried() {
    let t = seeded();
    let m = patient_migrator(&t);
    t.server.inject([
        fault(500, ErrorCode::Internal),
        Fault::Status(500),
        fault(500, ErrorCode::Internal),
        Fault::Status(500),
        fault(503, ErrorCode::Unavailable),
        fault(503, ErrorCode::Unavailable),
        fault(503, ErrorCode::Unavailable),
        fault(503, ErrorCode::Unavailable),
        fault(503, ErrorCode::Unavailable),
    ]);
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(r.retries, 9);
}

/// A 4xx with a stable code is final: not retried, explained with its code, the checkpoint
/// kept, and the announcement says it was a refusal, not an outage.
#[test]
fn a_permanent_refusal_stops_at_once_with_its_code_and_the_checkpoint_kept() {
    let t = seeded();
    let m = patient_migrator(&t);
    t.server
        .inject([Fault::Pass, fault(422, ErrorCode::InvalidBody)]);
    let e = run(&m, auto()).unwrap_err();
    match &e {
        Error::Refused { status, code, .. } => {
            assert_eq!((*status, code), (422, &ErrorCode::InvalidBody), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(e.to_string().contains("permanent refusal"), "{e}");
    assert_eq!(t.server.posted_sequences(), vec![0, 1], "not retried");
    assert!(checkpoint_of(&t).is_some(), "the checkpoint is kept");
    let said = last_announcement(&t);
    assert_eq!(said["failure"], "refused", "{said}");
    assert_eq!(said["code"], "refused", "{said}");
}

/// Issue 12 §3: the operator rolled back a migration this browser had not finished; the
/// server refuses its batches with 409 `migration_rolled_back`. The browser used to stop on
/// every run with "idempotency conflict"; it must migrate the records again, once.
#[test]
fn a_rolled_back_migration_in_flight_is_migrated_again_under_a_new_id() {
    let t = seeded();
    let m = migrator_with(&t, small_batches(), 1);
    down_after_first_batch(&t);
    run(&m, auto()).unwrap_err();
    let first = checkpoint_of(&t).unwrap().migration_id;
    block_on(
        m.client()
            .json_call("POST", &format!("/v1/migrations/{first}/rollback"), None),
    )
    .unwrap();

    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(r.rolled_back_migration, Some(first));
    let second = r.migration_id.unwrap();
    assert_ne!(second, first);
    assert_eq!(r.records_sent, 5, "every record is sent again");
    assert!(!r.resumed);
    assert!(t.server.verified.borrow().contains_key(&second));
    assert!(!t.server.verified.borrow().contains_key(&first));
    assert!(checkpoint_of(&t).is_none());
    let leftovers: Vec<String> = t
        .store
        .keys_now()
        .into_iter()
        .filter(|k| k.contains(&first.to_string()) || k.contains("outbox"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(block_on(m.inspect()).unwrap().state, MigrationState::Done);
}

/// Every batch was acknowledged, then the run stopped before verifying; the migration was
/// rolled back meanwhile. Its tallies still match (the server keeps what it received), so the
/// browser used to call it done while its rows were gone.
#[test]
fn a_migration_rolled_back_before_verification_is_not_done() {
    let t = seeded();
    let m = migrator(&t, small_batches());
    t.server.inject([Fault::Pass, Fault::Pass, Fault::Pass]);
    t.server.inject(std::iter::repeat_n(Fault::Status(503), 4));
    let e = run(&m, auto()).unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    let cp = checkpoint_of(&t).unwrap();
    assert!(cp.pending.is_empty(), "{cp:?}");
    t.server.rolled_back.borrow_mut().insert(cp.migration_id);

    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(r.rolled_back_migration, Some(cp.migration_id));
    assert_ne!(r.migration_id, Some(cp.migration_id));
    assert_eq!(r.records_sent, 5);
    let history: History = t
        .store
        .value(&checkpoint::history_key("taskboard"))
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap();
    let done: Vec<Uuid> = history.finished.iter().map(|f| f.migration_id).collect();
    assert_eq!(
        done,
        vec![r.migration_id.unwrap()],
        "only the new one is done"
    );
}

/// A rollback that lands while this run sends its fresh migration stops the run (no loop);
/// the migration is dropped, nothing is marked done, and the next run sends it all again.
#[test]
fn a_rollback_during_a_run_stops_it_and_the_next_run_migrates_again() {
    let t = seeded();
    let m = migrator_with(&t, small_batches(), 1);
    t.server
        .inject([Fault::Pass, fault(409, ErrorCode::MigrationRolledBack)]);
    let e = run(&m, auto()).unwrap_err();
    assert!(matches!(e, Error::MigrationRolledBack { .. }), "{e}");
    assert!(
        checkpoint_of(&t).is_none(),
        "the dropped migration is forgotten"
    );
    assert_eq!(t.server.posted_sequences(), vec![0, 1], "not retried");
    let r = run(&m, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(r.records_sent, 5);
}

/// Issue 12 §5: verification marks the run verified on the server, once per migration.
#[test]
fn verification_marks_the_migration_verified_on_the_server() {
    let t = seeded();
    let m = migrator(&t, small_batches());
    let r = run(&m, auto()).unwrap();
    let id = r.migration_id.unwrap();
    assert_eq!(t.server.verified.borrow().get(&id), Some(&1));
    assert_eq!(run(&m, auto()).unwrap().status, RunStatus::UpToDate);
    assert_eq!(t.server.verified.borrow().get(&id), Some(&1));
}

/// The server's refusal to verify (its tallies differ) is a verification failure with the
/// server's reasons, and nothing is marked done.
#[test]
fn a_verification_the_server_refuses_is_not_done() {
    let t = seeded();
    let m = migrator(&t, small_batches());
    t.server.inject([Fault::Pass, Fault::Pass, Fault::Pass]);
    t.server
        .inject([fault(409, ErrorCode::VerificationMismatch)]);
    let e = run(&m, auto()).unwrap_err();
    assert!(matches!(e, Error::VerificationFailed { .. }), "{e}");
    assert!(checkpoint_of(&t).is_some());
}

/// The demo spec as the app's next version (issue 14 §5).
fn next_version_spec() -> String {
    SPEC.replacen(r#""version": "2026.11""#, r#""version": "2026.12""#, 1)
}

fn migrator_of(t: &Twins, spec: &str) -> Migrator {
    let config = Config {
        limits: small_batches(),
        retry: RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        },
        origin: "https://app.test".to_owned(),
        parallel_uploads: 1,
    };
    new_migrator(t, spec, config)
}

/// The spec version each batch the fake server stored was made with.
fn stored_versions(t: &Twins) -> Vec<String> {
    t.server
        .batches
        .borrow()
        .values()
        .map(|body| {
            let batch: ferry_core::wire::Batch = serde_json::from_slice(body).unwrap();
            batch.header.spec_version
        })
        .collect()
}

/// Issue 14 §5: the app ships version N+1 while a migration made under N is in flight, and
/// the server still serves N: the batches made under N are finished under N (the server
/// checks each against the version it names), none is sent twice, and no spec_mismatch.
#[test]
fn a_migration_in_flight_under_the_old_version_finishes_under_it() {
    let t = seeded();
    let old = migrator_of(&t, SPEC);
    down_after_first_batch(&t);
    run(&old, auto()).unwrap_err();
    let cp = checkpoint_of(&t).unwrap();
    assert_eq!(cp.spec_version, "2026.11");

    let new = migrator_of(&t, &next_version_spec());
    let r = run(&new, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert!(r.resumed, "{r:?}");
    assert_eq!(r.migration_id, Some(cp.migration_id));
    assert!(t.server.verified.borrow().contains_key(&cp.migration_id));
    let versions = stored_versions(&t);
    assert_eq!(versions.len(), 3, "three batches, each once: {versions:?}");
    assert!(versions.iter().all(|v| v == "2026.11"), "{versions:?}");
    assert!(checkpoint_of(&t).is_none());
}

/// Same, but the server no longer serves N (the version was retired): the browser re-plans
/// under N+1 at once, instead of meeting `spec_mismatch` on every run.
#[test]
fn a_migration_in_flight_under_a_version_the_server_dropped_is_planned_again() {
    let t = seeded();
    let old = migrator_of(&t, SPEC);
    down_after_first_batch(&t);
    run(&old, auto()).unwrap_err();
    let first = checkpoint_of(&t).unwrap().migration_id;

    let new = migrator_of(&t, &next_version_spec());
    t.server.inject([fault(400, ErrorCode::SpecMismatch)]);
    let r = run(&new, auto()).unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert!(!r.resumed, "{r:?}");
    let second = r.migration_id.unwrap();
    assert_ne!(second, first);
    assert_eq!(r.records_sent, 5, "every record is sent again: {r:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("2026.11") && w.contains("2026.12")),
        "{:?}",
        r.warnings
    );
    assert!(t.server.verified.borrow().contains_key(&second));
    assert!(checkpoint_of(&t).is_none());
    let leftovers: Vec<String> = t
        .store
        .keys_now()
        .into_iter()
        .filter(|k| k.contains("outbox"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A third run under the new version finds nothing to do: no loop.
    let seen = t.server.seen.borrow().len();
    let r = run(&new, auto()).unwrap();
    assert_ne!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(t.server.seen.borrow().len(), seen);
}
