//! The two example specs against generated legacy localStorage (5 MiB each, fixed seed):
//! the pipeline's outcome for every record must match the sample's ground truth, nothing may
//! be dropped, ids must be deterministic and unique, batches must respect their limits, and
//! the server's re-run of every shipped record must agree with the browser's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, Code, Context, Locator, Outcome, Record};
use ferry_core::spec::{IdScope, Spec};
use ferry_core::wire::{self, BatchHeader, BatchLimits};
use ferry_sample::{self as sample, Expected, FaultKind, LegacyApp, Sample, SampleOptions};
use uuid::Uuid;

const TASKBOARD: &str = include_str!("../../specs/taskboard.json");
const JOTTER: &str = include_str!("../../specs/jotter.json");

const SEED: u64 = 20_261_101;
const DEVICE: Uuid = Uuid::from_u128(0x0d0d_0d0d_1111_4111_8111_1111_1111_1111);
const OTHER_DEVICE: Uuid = Uuid::from_u128(0x0e0e_0e0e_2222_4222_8222_2222_2222_2222);
/// 2026-05-28T…Z: after every generated date, so `$migrated_at` defaults are the newest.
const MIGRATED_AT_MS: i64 = 1_780_000_000_000;
const MIGRATION: Uuid = Uuid::from_u128(0x4d49_4752_4154_4530_8000_0000_0000_0001);

fn ctx(device_id: Uuid) -> Context {
    Context {
        device_id,
        migrated_at_ms: MIGRATED_AT_MS,
    }
}

fn spec(app: LegacyApp) -> Spec {
    let text = match app {
        LegacyApp::Taskboard => TASKBOARD,
        LegacyApp::Jotter => JOTTER,
    };
    Spec::parse(text).unwrap_or_else(|e| panic!("{app:?} spec: {e}"))
}

/// Says something on the terminal even though the test harness captures `println!`.
fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "examples: {message}");
}

/// One 5 MiB run, shared by the tests of this file.
struct Run {
    spec: Spec,
    sample: Sample,
    records: Vec<Record>,
    generated_in: Duration,
    processed_in: Duration,
}

fn run(app: LegacyApp) -> &'static Run {
    static TASKBOARD_RUN: OnceLock<Run> = OnceLock::new();
    static JOTTER_RUN: OnceLock<Run> = OnceLock::new();
    let cell = match app {
        LegacyApp::Taskboard => &TASKBOARD_RUN,
        LegacyApp::Jotter => &JOTTER_RUN,
    };
    cell.get_or_init(|| {
        let spec = spec(app);
        let mut options = SampleOptions::new(app);
        options.seed = SEED;
        let started = Instant::now();
        let sample = sample::generate(&options);
        let generated_in = started.elapsed();
        let started = Instant::now();
        let records = pipeline::process(&spec, &sample.pairs, &ctx(DEVICE));
        let processed_in = started.elapsed();
        Run {
            spec,
            sample,
            records,
            generated_in,
            processed_in,
        }
    })
}

const APPS: [LegacyApp; 2] = [LegacyApp::Taskboard, LegacyApp::Jotter];

// ---------------------------------------------------------------------------------------------
// Comparing outcomes with the ground truth.
// ---------------------------------------------------------------------------------------------

/// How a message locates a record: `key "formData:x"`, `"tasks"[12]` or `"jotter.notes"["17…"]`.
fn place(key: &LosslessString, locator: &Locator) -> String {
    let key = pipeline::quote(key.as_escaped());
    match locator {
        Locator::Whole => format!("key {key}"),
        Locator::Index(i) => format!("{key}[{i}]"),
        Locator::MapKey(k) => format!("{key}[{}]", pipeline::quote(k.as_escaped())),
    }
}

fn codes(notes: &[pipeline::Note]) -> BTreeSet<String> {
    notes.iter().map(|n| format!("{:?}", n.code)).collect()
}

/// Whether an outcome is what the manifest expects (duplicates are checked by the caller).
fn matches(outcome: &Outcome, expected: &Expected) -> Result<(), String> {
    match (expected, outcome) {
        (Expected::Valid, Outcome::Valid(_)) => Ok(()),
        (Expected::Repaired(want), Outcome::Repaired(_, notes)) => {
            let want: BTreeSet<String> = want.iter().map(|c| format!("{c:?}")).collect();
            if want == codes(notes) {
                Ok(())
            } else {
                Err(format!(
                    "repaired with {:?}, expected {want:?}: {notes:#?}",
                    codes(notes)
                ))
            }
        }
        (Expected::Rejected(code), Outcome::Rejected(notes)) => {
            if notes.iter().any(|n| n.code == *code) {
                Ok(())
            } else {
                Err(format!("rejected without a {code:?} reason: {notes:#?}"))
            }
        }
        (Expected::Duplicate(of), Outcome::Duplicate(found)) if of == found => Ok(()),
        (want, got) => Err(format!("expected {want:?}, got {got:?}")),
    }
}

type Place<'a> = (usize, &'a str, &'a Locator);

/// Checks every record against the manifest, one by one, and every fault's reason.
fn check_against_manifest(spec: &Spec, sample: &Sample, records: &[Record]) {
    let manifest = &sample.manifest;
    assert_eq!(
        records.len(),
        manifest.records.len(),
        "the pipeline saw a different number of records than were generated"
    );
    let by_place: HashMap<Place<'_>, &Record> = records
        .iter()
        .map(|r| ((r.kind, r.key.as_escaped(), &r.locator), r))
        .collect();
    assert_eq!(by_place.len(), records.len(), "two records share a place");
    let find = |kind: &str, key: &LosslessString, locator: &Locator| -> &Record {
        let k = spec.kind_index(kind).unwrap();
        by_place
            .get(&(k, key.as_escaped(), locator))
            .copied()
            .unwrap_or_else(|| panic!("no record of kind {kind} at {}", place(key, locator)))
    };
    let expected_at: HashMap<Place<'_>, &Expected> = manifest
        .records
        .iter()
        .map(|e| {
            (
                (
                    spec.kind_index(e.kind).unwrap(),
                    e.key.as_escaped(),
                    &e.locator,
                ),
                &e.expected,
            )
        })
        .collect();
    // Identical copies: one of the pair must be `Duplicate` of the other, and the other must
    // have the original's expected outcome. Which one is marked is pinned in pipeline_cases.rs.
    let mut paired: HashSet<(usize, &str, &Locator)> = HashSet::new();
    for e in &manifest.records {
        let Expected::Duplicate(of) = &e.expected else {
            continue;
        };
        let k = spec.kind_index(e.kind).unwrap();
        let copy = find(e.kind, &e.key, &e.locator);
        let original = find(e.kind, &e.key, of);
        let original_expected = expected_at[&(k, e.key.as_escaped(), of)];
        let copy_marked = copy.outcome == Outcome::Duplicate(of.clone())
            && matches(&original.outcome, original_expected).is_ok();
        let original_marked = original.outcome == Outcome::Duplicate(e.locator.clone())
            && matches(&copy.outcome, original_expected).is_ok();
        assert!(
            copy_marked || original_marked,
            "{} and its copy {}: expected one to be the duplicate of the other, got {:?} and {:?}",
            place(&e.key, of),
            place(&e.key, &e.locator),
            original.outcome,
            copy.outcome
        );
        paired.insert((k, e.key.as_escaped(), &e.locator));
        paired.insert((k, e.key.as_escaped(), of));
    }
    let mut mismatches = Vec::new();
    for e in &manifest.records {
        let k = spec.kind_index(e.kind).unwrap();
        if paired.contains(&(k, e.key.as_escaped(), &e.locator)) {
            continue;
        }
        let r = find(e.kind, &e.key, &e.locator);
        if let Err(why) = matches(&r.outcome, &e.expected) {
            mismatches.push(format!("{} {}: {why}", e.kind, place(&e.key, &e.locator)));
        }
        if r.outcome.is_accepted() {
            assert_eq!(
                r.legacy_id,
                e.legacy_id,
                "legacy id of {}",
                place(&e.key, &e.locator)
            );
            assert!(
                r.id.is_some(),
                "accepted record without id at {}",
                place(&e.key, &e.locator)
            );
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} record(s) differ from the manifest:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    for f in &manifest.faults {
        if f.fault == FaultKind::IdenticalDuplicate {
            continue;
        }
        let r = find(f.kind, &f.key, &f.locator);
        let Outcome::Rejected(notes) = &r.outcome else {
            panic!("fault {f:?} was not rejected: {:?}", r.outcome)
        };
        let where_ = place(&f.key, &f.locator);
        let named = notes.iter().any(|n| {
            n.code == f.code
                && n.message.contains(&where_)
                && f.field.is_none_or(|field| {
                    // Array items are reported as `tags[3]`; the field name starts it.
                    n.field.as_deref().is_some_and(|nf| nf.starts_with(field))
                        && n.message.contains(field)
                })
        });
        assert!(
            named,
            "fault {:?} on field {:?} at {where_}: no {:?} reason naming the key, position and field: {notes:#?}",
            f.fault, f.field, f.code
        );
    }
    assert_eq!(
        pipeline::summarize(spec, records),
        manifest.summary,
        "per-kind counts differ from the manifest"
    );
}

// ---------------------------------------------------------------------------------------------
// The 5 MiB runs.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_record_matches_the_manifest() {
    for app in APPS {
        let r = run(app);
        check_against_manifest(&r.spec, &r.sample, &r.records);
    }
}

#[test]
fn samples_are_about_five_megabytes_with_about_two_percent_broken() {
    // Why: a sample that silently shrank, or lost its faults, would make every other test weak.
    for app in APPS {
        let r = run(app);
        let m = &r.sample.manifest;
        let target = sample::DEFAULT_TARGET_BYTES;
        assert!(
            m.bytes >= target && m.bytes < target + target / 20,
            "{app:?}: {} bytes",
            m.bytes
        );
        let rejected: u64 = m.summary.iter().map(|s| s.rejected).sum();
        let share = rejected as f64 / m.records.len() as f64;
        assert!(
            (0.01..0.05).contains(&share),
            "{app:?}: {share:.3} of records rejected"
        );
        note(&format!(
            "{app:?}: {} bytes, {} keys, {} records ({} rejected, {} faults) generated in {:?}, processed in {:?}",
            m.bytes,
            r.sample.pairs.len(),
            m.records.len(),
            rejected,
            m.faults.len(),
            r.generated_in,
            r.processed_in
        ));
    }
}

#[test]
fn unknown_keys_are_reported_and_left_alone() {
    for app in APPS {
        let r = run(app);
        let inventory = pipeline::inventory(&r.spec, &r.sample.pairs);
        let reported: HashSet<&LosslessString> = inventory.unknown.iter().map(|k| &k.key).collect();
        let expected: HashSet<&LosslessString> = r.sample.manifest.unknown_keys.iter().collect();
        assert_eq!(reported, expected, "{app:?}: unknown keys");
        assert!(
            r.records.iter().all(|rec| !expected.contains(&rec.key)),
            "{app:?}: a record came from an unknown key"
        );
        let unknown_bytes: u64 = inventory.unknown.iter().map(|k| k.bytes).sum();
        assert_eq!(
            inventory.known_bytes + unknown_bytes,
            r.sample.manifest.bytes
        );
        for kind in &inventory.kinds {
            let keys: HashSet<&LosslessString> = kind.keys.iter().map(|k| &k.key).collect();
            let processed: HashSet<&LosslessString> = r
                .records
                .iter()
                .filter(|rec| r.spec.kinds[rec.kind].name == kind.kind)
                .map(|rec| &rec.key)
                .collect();
            assert_eq!(keys, processed, "{app:?}: keys of kind {}", kind.kind);
        }
    }
}

#[test]
fn nothing_is_dropped() {
    for app in APPS {
        let r = run(app);
        let summary = pipeline::summarize(&r.spec, &r.records);
        let total: u64 = summary
            .iter()
            .map(|s| s.valid + s.repaired + s.rejected + s.duplicates)
            .sum();
        assert_eq!(total as usize, r.sample.manifest.records.len(), "{app:?}");
        assert_eq!(r.records.len(), r.sample.manifest.records.len(), "{app:?}");
    }
}

#[test]
fn processing_is_deterministic() {
    for app in APPS {
        let r = run(app);
        let again = pipeline::process(&r.spec, &r.sample.pairs, &ctx(DEVICE));
        assert!(
            again == r.records,
            "{app:?}: a second run gave other records"
        );
        let mut options = SampleOptions::new(app);
        options.seed = SEED;
        options.target_bytes = 300_000;
        let small = sample::generate(&options);
        assert_eq!(
            small.pairs,
            sample::generate(&options).pairs,
            "{app:?}: the generator is not deterministic"
        );
    }
}

#[test]
fn accepted_ids_are_unique_per_kind() {
    for app in APPS {
        let r = run(app);
        let mut seen = HashSet::new();
        for rec in r.records.iter().filter(|rec| rec.outcome.is_accepted()) {
            let id = rec.id.expect("accepted records have an id");
            assert!(
                seen.insert((rec.kind, id)),
                "{app:?}: id {id} twice in kind {}",
                r.spec.kinds[rec.kind].name
            );
        }
    }
}

#[test]
fn device_scoped_ids_change_with_the_device_global_ids_do_not() {
    for app in APPS {
        let r = run(app);
        let other = pipeline::process(&r.spec, &r.sample.pairs, &ctx(OTHER_DEVICE));
        assert_eq!(other.len(), r.records.len());
        let mut device_kinds_seen = 0;
        for (a, b) in r.records.iter().zip(&other) {
            assert_eq!((a.kind, &a.key, &a.locator), (b.kind, &b.key, &b.locator));
            let kind = &r.spec.kinds[a.kind];
            match (a.id, b.id, kind.id.scope) {
                (None, None, _) => {}
                (Some(x), Some(y), IdScope::Global) => {
                    assert_eq!(x, y, "global id of kind {}", kind.name)
                }
                (Some(x), Some(y), IdScope::Device) => {
                    device_kinds_seen += 1;
                    assert_ne!(x, y, "per-device id of kind {} did not change", kind.name);
                }
                (x, y, _) => panic!("id {x:?} on one device, {y:?} on the other"),
            }
            assert_eq!(
                std::mem::discriminant(&a.outcome),
                std::mem::discriminant(&b.outcome),
                "outcome class changed with the device"
            );
        }
        if app == LegacyApp::Jotter {
            assert!(device_kinds_seen > 1000, "jotter has per-device kinds");
        }
    }
}

/// Checks the batches built from `records` and returns how many batches held one oversize record.
fn check_batches(spec: &Spec, records: &[Record], limits: BatchLimits) -> usize {
    let header = BatchHeader::new(spec, MIGRATION, &ctx(DEVICE));
    let batches = wire::build_batches(spec, &header, records, 0..records.len(), 7, limits);
    let mut shipped = vec![0u32; records.len()];
    let mut oversize = 0;
    for (n, batch) in batches.iter().enumerate() {
        assert_eq!(
            batch.sequence,
            7 + n as u32,
            "sequence numbers are consecutive"
        );
        assert!(!batch.members.is_empty(), "empty batch");
        assert!(
            batch.members.len() <= limits.max_records.max(1),
            "batch {n}: {} records",
            batch.members.len()
        );
        if batch.body.len() > limits.max_bytes {
            assert_eq!(
                batch.members.len(),
                1,
                "batch {n}: {} bytes with several records",
                batch.body.len()
            );
            oversize += 1;
        }
        for &i in &batch.members {
            shipped[i] += 1;
        }
    }
    for (i, r) in records.iter().enumerate() {
        let want = u32::from(!matches!(r.outcome, Outcome::Duplicate(_)));
        assert_eq!(
            shipped[i], want,
            "record {i} ({:?}) shipped {} times",
            r.locator, shipped[i]
        );
    }
    oversize
}

#[test]
fn batches_respect_their_limits_and_carry_every_shipped_record_once() {
    for app in APPS {
        let r = run(app);
        check_batches(&r.spec, &r.records, BatchLimits::default());
        check_batches(
            &r.spec,
            &r.records,
            BatchLimits {
                max_records: 700,
                max_bytes: 256 * 1024,
            },
        );
        let oversize = check_batches(
            &r.spec,
            &r.records,
            BatchLimits {
                max_records: 50,
                max_bytes: 16 * 1024,
            },
        );
        if app == LegacyApp::Taskboard {
            assert!(
                oversize > 0,
                "the 20 kB descriptions travel alone in 16 kB batches"
            );
        }
    }
}

#[test]
fn the_server_agrees_with_the_browser_on_every_shipped_record() {
    for app in APPS {
        let r = run(app);
        let header = BatchHeader::new(&r.spec, MIGRATION, &ctx(DEVICE));
        let batches = wire::build_batches(
            &r.spec,
            &header,
            &r.records,
            0..r.records.len(),
            0,
            BatchLimits::default(),
        );
        let started = Instant::now();
        let mut checked = 0;
        for encoded in &batches {
            let batch = wire::decode_batch(&r.spec, &encoded.body).expect("decodes");
            assert_eq!(batch.header.sequence, encoded.sequence);
            assert_eq!(batch.header.context(), ctx(DEVICE));
            let mut accepted = batch.records.iter();
            let mut rejected = batch.rejected.iter();
            for &i in &encoded.members {
                let browser = &r.records[i];
                if browser.outcome.is_accepted() {
                    let item = accepted
                        .next()
                        .expect("an accepted item per accepted member");
                    let server = wire::reprocess(&r.spec, &batch.header, item);
                    assert_eq!(server.id, browser.id, "id of {:?}", browser.locator);
                    assert_eq!(server.hash, browser.hash, "hash of {:?}", browser.locator);
                    assert_eq!(server.legacy_id, browser.legacy_id);
                    assert_eq!(server.raw, browser.raw);
                    assert_eq!(
                        server.outcome, browser.outcome,
                        "outcome of {:?}",
                        browser.locator
                    );
                } else {
                    let item = rejected
                        .next()
                        .expect("a rejected item per rejected member");
                    let Outcome::Rejected(notes) = &browser.outcome else {
                        unreachable!()
                    };
                    assert_eq!(&item.reasons, notes);
                    assert_eq!(item.hash, browser.hash);
                    assert_eq!(item.raw, browser.raw);
                    assert_eq!(item.key, browser.key);
                    assert_eq!(Locator::from(item.at.clone()), browser.locator);
                }
                checked += 1;
            }
            assert!(
                accepted.next().is_none() && rejected.next().is_none(),
                "items without members"
            );
        }
        let shipped = r
            .records
            .iter()
            .filter(|rec| !matches!(rec.outcome, Outcome::Duplicate(_)))
            .count();
        assert_eq!(checked, shipped);
        note(&format!(
            "{app:?}: {} batches decoded and re-processed in {:?}",
            batches.len(),
            started.elapsed()
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Coverage of the fault catalogue, and small samples over many seeds.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_fault_kind_is_exercised_and_every_kind_gets_faults() {
    // Why: the comparison with the manifest only proves what the sample contains.
    use FaultKind as F;
    let all = [
        F::MissingRequired,
        F::NullRequired,
        F::WrongType,
        F::BadEnum,
        F::BadTimestamp,
        F::TooLong,
        F::Empty,
        F::OutOfRange,
        F::NotWholeNumber,
        F::UnsafeInteger,
        F::BadEmail,
        F::BadUrl,
        F::BadPattern,
        F::TooManyItems,
        F::ItemWrongType,
        F::IdMissing,
        F::IdWrongType,
        F::NotJson,
        F::NotAnObject,
        F::WrongContainer,
        F::ConflictingDuplicate,
        F::IdenticalDuplicate,
        F::UnknownField,
    ];
    let mut seen: HashSet<FaultKind> = HashSet::new();
    for app in APPS {
        let r = run(app);
        seen.extend(r.sample.manifest.faults.iter().map(|f| f.fault));
        // Every kind that can hold a broken record has several kinds of faults (singletons are
        // covered over many seeds below; `custom` accepts anything).
        for kind in [
            "tasks",
            "environments",
            "form_drafts",
            "notes",
            "attachments",
            "drafts",
        ] {
            if r.spec.kind(kind).is_none() {
                continue;
            }
            let kinds: HashSet<FaultKind> = r
                .sample
                .manifest
                .faults
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| f.fault)
                .collect();
            assert!(
                kinds.len() >= 4,
                "{app:?}: kind {kind} has only faults {kinds:?}"
            );
        }
        for code in [Code::LegacyEnum, Code::DefaultFrom, Code::Escaped] {
            assert!(
                r.sample
                    .manifest
                    .records
                    .iter()
                    .any(|e| matches!(&e.expected, Expected::Repaired(c) if c.contains(&code))),
                "{app:?}: no record repaired with {code:?}"
            );
        }
    }
    // Singletons (broken in one sample in four, with one of up to nine faults) and broken
    // containers: many small samples.
    for app in APPS {
        for seed in 0..200 {
            let mut options = SampleOptions::new(app);
            options.seed = seed;
            options.target_bytes = 5_000;
            options.broken_containers = seed % 2 == 0;
            seen.extend(
                sample::generate(&options)
                    .manifest
                    .faults
                    .iter()
                    .map(|f| f.fault),
            );
        }
    }
    let missing: Vec<_> = all.iter().filter(|f| !seen.contains(f)).collect();
    assert!(missing.is_empty(), "faults never generated: {missing:?}");
}

#[test]
fn small_samples_over_many_seeds_match_the_manifest() {
    // Why: singletons (preferences, account) are broken in one sample in four, and broken
    // containers are off by default; many small samples cover them, and other random shapes.
    for app in APPS {
        let spec = spec(app);
        for seed in 0..60 {
            let mut options = SampleOptions::new(app);
            options.seed = seed;
            options.target_bytes = 30_000 + seed * 1_000;
            options.broken_containers = seed % 3 == 0;
            options.hostile = seed % 5 != 0;
            options.invalid_fraction = [0.0, 0.02, 0.3][seed as usize % 3];
            let sample = sample::generate(&options);
            let records = pipeline::process(&spec, &sample.pairs, &ctx(DEVICE));
            check_against_manifest(&spec, &sample, &records);
            if options.invalid_fraction == 0.0 && !options.broken_containers {
                assert!(
                    sample.manifest.faults.is_empty(),
                    "{app:?} seed {seed}: faults in a clean sample"
                );
            }
        }
    }
}

#[test]
fn a_broken_container_is_one_rejected_record_for_the_whole_key() {
    for (app, key) in [
        (LegacyApp::Taskboard, "environments"),
        (LegacyApp::Jotter, "jotter.attachments"),
    ] {
        let spec = spec(app);
        let mut options = SampleOptions::new(app);
        options.target_bytes = 100_000;
        options.broken_containers = true;
        let sample = sample::generate(&options);
        let records = pipeline::process(&spec, &sample.pairs, &ctx(DEVICE));
        let of_key: Vec<&Record> = records
            .iter()
            .filter(|r| r.key.as_escaped() == key)
            .collect();
        assert_eq!(of_key.len(), 1, "{key}: one record for the whole key");
        let Outcome::Rejected(notes) = &of_key[0].outcome else {
            panic!("{key} accepted")
        };
        assert_eq!(notes[0].code, Code::Shape);
        assert!(
            notes[0].message.contains("should hold a JSON array"),
            "{}",
            notes[0].message
        );
        check_against_manifest(&spec, &sample, &records);
    }
}
