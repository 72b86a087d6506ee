//! The migration runner: the whole orchestration, in plain Rust over the [`Ports`].
//!
//! A run, under the cross-tab lock:
//!
//! 1. finishes the migration in flight, if a checkpoint says there is one (after a reload, a
//!    crash or a night offline), re-sending the exact outbox bytes of unacknowledged batches;
//! 2. reads localStorage and compares a cheap fingerprint of every known key with the last
//!    verified migration: nothing changed means nothing to do (no parsing, no request);
//! 3. seals a backup of the whole origin's localStorage (the keys it read and every other key
//!    in the backup's scope, `ferry_core::backup::in_scope`) and stores it, *before any
//!    request* and before parsing (the backup's buffers and the records are never in memory
//!    together; its write runs during step 4 and is awaited right after it); a full disk stops
//!    the run with [`Error::QuotaExceeded`] and nothing sent;
//! 4. parses and validates with `ferry_core::pipeline` (keeping what the browser ships:
//!    `Keep::Shipping`), and keeps only records whose content hash the server has not
//!    confirmed yet (incremental runs); when none is left, the backup goes again;
//! 5. plans batches (`ferry_core::wire::batches`), storing each as it is encoded, then the
//!    checkpoint and the expected per-kind tallies in one commit (the checkpoint makes the
//!    stored batches its outbox; a plan interrupted before it leaves entries the next plan
//!    deletes);
//! 6. sends batches in order; each acknowledgement deletes its outbox entry and updates the
//!    checkpoint atomically; a 413 splits the batch into halves under new sequence numbers;
//! 7. asks the server to verify its per-kind count and XOR checksum against the plan's
//!    (`POST /v1/migrations/{id}/verify`, which marks the run verified on the server), checks
//!    the answer itself too, and only then marks the migration done (migrated hashes and
//!    fingerprints), optionally removing migrated keys.
//!
//! A migration the server rolled back before it was verified (`409 migration_rolled_back`, or
//! a report saying `rolled_back`) is not done: its checkpoint and outbox are dropped, and the
//! records, still in localStorage (and in the backup), are planned again under a new
//! migration id — once per run, so a run never loops.

use std::collections::{BTreeMap, BTreeSet};
use std::task::Poll;

use ferry_core::backup::{self, BackupMetadata, Pair};
use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::{self, ContentHash, Context, Keep, KindSummary, Outcome};
use ferry_core::spec::{Source, Spec};
use ferry_core::wire::{self, Batch, BatchHeader, BatchLimits};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::checkpoint::{
    self, BACKUP_INDEX_KEY, BackupInfo, BatchSize, Checkpoint, DEVICE_KEY, Fingerprint, Finished,
    History, Phase, Tally, load_hashes, load_json, put_json,
};
use crate::client::{
    BatchResult, Client, KindTally, MigrationReport, RecordOutcome, RecordResult, VerifyRequest,
};
use crate::error::Error;
use crate::ports::{LocalFuture, Ports, StoreOp, VaultKey};
use crate::progress::{Meter, Progress, Stage};
use crate::retry::RetryPolicy;
use ferry_core::contract::{Choice, ErrorCode, MigrationStatus};

/// How many backups are kept besides the oldest one (the original data, always kept).
pub const RECENT_BACKUPS_KEPT: usize = 3;

/// Batches in flight at once by default: the browser reads and encodes nothing while it
/// uploads, so a few requests keep the server busy without flooding it.
pub const PARALLEL_UPLOADS: usize = 3;

/// Settings of a migrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bounds of one batch.
    pub limits: BatchLimits,
    /// Retry policy of every request.
    pub retry: RetryPolicy,
    /// The web origin, written into backup headers.
    pub origin: String,
    /// Batches sent at once (each batch is its own transaction on the server, so they are
    /// independent); 0 counts as 1.
    pub parallel_uploads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: BatchLimits::default(),
            retry: RetryPolicy::default(),
            origin: String::new(),
            parallel_uploads: PARALLEL_UPLOADS,
        }
    }
}

/// Who asked for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Started by the app on load: skips quietly when another tab is running.
    #[default]
    Auto,
    /// Started by the user: waits for the other tab to finish.
    Manual,
}

/// Options of [`Migrator::run`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunOptions {
    /// Auto or manual.
    pub mode: Mode,
    /// Only validate and count: no backup, no request, no write.
    pub dry_run: bool,
    /// Only these kinds (all when absent).
    pub kinds: Option<Vec<String>>,
    /// After verification, remove migrated keys whose value has not changed since they were
    /// read (the backup is kept).
    pub cleanup: bool,
    /// Also upload the sealed backup to `POST /v1/backups` (best effort: a failure is a
    /// warning in the report).
    pub upload_backup: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub enum RunStatus {
    /// Another tab holds the lock (auto mode): nothing was done.
    Skipped,
    /// localStorage holds no key the spec reads.
    #[default]
    NothingToMigrate,
    /// Everything was already migrated.
    UpToDate,
    /// Dry run: counted only.
    DryRun,
    /// A migration was sent and verified.
    Completed,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct RunReport {
    /// How it ended.
    pub status: RunStatus,
    /// The migration sent (or resumed), if any.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "string | null"))]
    pub migration_id: Option<Uuid>,
    /// Whether a migration interrupted earlier was finished.
    pub resumed: bool,
    /// The backup taken before sending, if any.
    pub backup_id: Option<String>,
    /// Validation counts per kind (when records were parsed).
    pub kinds: Vec<KindSummary>,
    /// Records new or changed since the last verified migration.
    pub records_to_send: u64,
    /// Batches planned for them (a dry run encodes them too, then throws them away).
    pub batches_planned: u64,
    /// Bytes of those batches on the wire.
    pub bytes_planned: u64,
    /// Records acknowledged by the server in this run.
    pub records_sent: u64,
    /// Batches acknowledged in this run.
    pub batches_sent: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Batches split after a 413.
    pub splits: u64,
    /// Times the run waited for the browser to come back online.
    pub offline_waits: u64,
    /// Server outcomes, per kind and outcome.
    #[cfg_attr(
        target_arch = "wasm32",
        tsify(type = "Record<string, Partial<Record<RecordOutcome, number>>>")
    )]
    pub outcomes: BTreeMap<String, BTreeMap<RecordOutcome, u64>>,
    /// Records the server quarantined, with its reasons.
    pub quarantined: Vec<RecordResult>,
    /// Keys removed from localStorage (cleanup option).
    pub cleaned_keys: Vec<String>,
    /// A migration in flight that the server had rolled back: dropped, and its records
    /// planned again under `migration_id`.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "string | null"))]
    pub rolled_back_migration: Option<Uuid>,
    /// Things that went wrong without stopping the run.
    pub warnings: Vec<String>,
    /// Wall time of the run.
    pub duration_ms: u64,
}

/// One kind in an [`Inspection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct KindInspection {
    /// Kind name.
    pub kind: String,
    /// Its localStorage keys.
    pub keys: Vec<String>,
    /// UTF-16 bytes of those keys and values.
    pub bytes: u64,
    /// Valid, repaired, rejected and duplicate record counts.
    pub summary: KindSummary,
    /// Records not yet confirmed by the server.
    pub to_send: u64,
}

/// An unknown key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct UnknownKey {
    /// The key (escaped form).
    pub key: String,
    /// Its UTF-16 bytes.
    pub bytes: u64,
}

/// Where this browser stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub enum MigrationState {
    /// Never migrated.
    NotStarted,
    /// A migration was interrupted and will resume on the next run.
    InProgress,
    /// Migrated, and nothing changed since.
    Done,
    /// Migrated, but records were added or changed since.
    Changed,
}

/// What [`Migrator::inspect`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct Inspection {
    /// The spec's kinds, in order.
    pub kinds: Vec<KindInspection>,
    /// Keys no kind reads (left alone).
    pub unknown_keys: Vec<UnknownKey>,
    /// UTF-16 bytes of the keys the spec reads.
    pub known_bytes: u64,
    /// Where this browser stands.
    pub state: MigrationState,
    /// The interrupted migration, if any.
    pub in_flight: Option<InFlight>,
    /// The last verified migration, if any.
    pub last_finished: Option<Finished>,
}

/// A migration in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct InFlight {
    /// Its id.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "string"))]
    pub migration_id: Uuid,
    /// Batches left to send.
    pub pending_batches: usize,
    /// Batches acknowledged.
    pub acked_batches: usize,
}

/// What step 2 of a run read: the selected kinds' keys, some changed since the last verified
/// migration.
struct ChangedKeys {
    /// Fingerprints of those keys now.
    fingerprints: BTreeMap<String, Fingerprint>,
    /// Their fingerprints at the last verified migration.
    previous: BTreeMap<String, Fingerprint>,
    /// The migration history the previous fingerprints come from.
    history: History,
    /// The keys and values.
    pairs: Vec<Pair>,
}

/// The last verified state of the keys the spec watches ([`Migrator::verified_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedState {
    /// The exact keys kinds read.
    pub exact: Vec<LosslessString>,
    /// The prefixes kinds read (a key longer than the prefix and starting with it).
    pub prefixes: Vec<LosslessString>,
    /// Each watched key with its value's fingerprint, as last verified.
    pub fingerprints: Vec<(LosslessString, Fingerprint)>,
    /// Keys the spec ignores (`ignore.keys`): not watched, even under a prefix.
    pub ignored_exact: Vec<LosslessString>,
    /// Prefixes the spec ignores (`ignore.prefixes`): every key starting with one.
    pub ignored_prefixes: Vec<LosslessString>,
}

/// What step 3 made of them.
struct Validated {
    /// The pipeline's context (device id, start of the migration).
    ctx: Context,
    /// Every record, with its outcome.
    records: Vec<pipeline::Record>,
    /// Indexes of the records to send.
    to_ship: Vec<usize>,
}

/// The expectations of a migration's batches (see [`Migrator::tally_batch`]).
#[derive(Default)]
struct Plan {
    /// Per kind, the count and XOR checksum the server must report.
    expected: BTreeMap<String, Tally>,
    /// The distinct content hashes sent.
    hashes: BTreeSet<ContentHash>,
    /// Each batch's records and bytes, by sequence number.
    sizes: BTreeMap<u32, BatchSize>,
}

/// The browser migrator for one spec and one server.
pub struct Migrator {
    spec: Spec,
    ports: Ports,
    client: Client,
    config: Config,
}

impl Migrator {
    /// Parses the spec (JSON text) and binds the ports.
    pub fn new(
        spec_json: &str,
        server_url: &str,
        ports: Ports,
        config: Config,
    ) -> Result<Self, Error> {
        let spec = Spec::parse(spec_json).map_err(|e| Error::Spec(e.to_string()))?;
        let client = Client::new(server_url, ports.clone(), config.retry);
        Ok(Self {
            spec,
            ports,
            client,
            config,
        })
    }

    /// The checked spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The HTTP client (for the thin conflict and rollback calls).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn app(&self) -> &str {
        &self.spec.app
    }

    fn random_uuid(&self) -> Result<Uuid, Error> {
        let mut b = [0u8; 16];
        self.ports.entropy.fill(&mut b)?;
        Ok(uuid::Builder::from_random_bytes(b).into_uuid())
    }

    async fn stored_device_id(&self) -> Result<Option<Uuid>, Error> {
        Ok(self
            .ports
            .store
            .get(DEVICE_KEY)
            .await?
            .and_then(|b| Uuid::try_parse_ascii(&b).ok()))
    }

    /// This browser profile's id: generated once, then kept.
    pub async fn device_id(&self) -> Result<Uuid, Error> {
        if let Some(id) = self.stored_device_id().await? {
            return Ok(id);
        }
        let id = self.random_uuid()?;
        self.ports
            .store
            .commit(vec![StoreOp::Put(
                DEVICE_KEY.to_owned(),
                id.to_string().into_bytes(),
            )])
            .await
            .map_err(saving("the device id"))?;
        Ok(id)
    }

    /// The first selected kind that needs the key (its records are there, or it is the kind's
    /// `index` key), if any: such keys are read, fingerprinted and backed up.
    fn kind_of(&self, escaped_key: &str, kinds: Option<&[String]>) -> Option<usize> {
        self.spec
            .kinds_needing_key(escaped_key)
            .into_iter()
            .find(|&i| match kinds {
                Some(names) => names.iter().any(|n| *n == self.spec.kinds[i].name),
                None => true,
            })
    }

    fn check_kinds(&self, kinds: Option<&[String]>) -> Result<(), Error> {
        for name in kinds.unwrap_or_default() {
            if self.spec.kind(name).is_none() {
                let known: Vec<_> = self.spec.kinds.iter().map(|k| k.name.as_str()).collect();
                return Err(Error::InvalidArgument(format!(
                    "kind {name:?} is not in spec {:?}; its kinds are {known:?}",
                    self.spec.app
                )));
            }
        }
        Ok(())
    }

    /// What would be migrated, and where this browser stands. Reads only; sends nothing.
    pub async fn inspect(&self) -> Result<Inspection, Error> {
        let store = &*self.ports.store;
        let pairs = self.ports.app.read_all()?;
        let inv = pipeline::inventory(&self.spec, &pairs);
        let device_id = self.stored_device_id().await?.unwrap_or(Uuid::nil());
        let ctx = Context {
            device_id,
            migrated_at_ms: self.ports.clock.now_ms(),
        };
        let records = pipeline::process_keeping(&self.spec, &pairs, &ctx, Keep::Shipping);
        let summaries = pipeline::summarize(&self.spec, &records);
        let migrated = load_hashes(store, &checkpoint::migrated_hashes_key(self.app())).await?;
        let mut to_send = vec![0u64; self.spec.kinds.len()];
        for r in &records {
            if !matches!(r.outcome, Outcome::Duplicate(_)) && !migrated.contains(&r.hash) {
                to_send[r.kind] += 1;
            }
        }
        let cp: Option<Checkpoint> =
            load_json(store, &checkpoint::checkpoint_key(self.app())).await?;
        let history: History = load_json(store, &checkpoint::history_key(self.app()))
            .await?
            .unwrap_or_default();
        let pending: u64 = to_send.iter().sum();
        let state = match (&cp, history.finished.is_empty(), pending) {
            (Some(_), _, _) => MigrationState::InProgress,
            (None, true, _) => MigrationState::NotStarted,
            (None, false, 0) => MigrationState::Done,
            (None, false, _) => MigrationState::Changed,
        };
        Ok(Inspection {
            kinds: inv
                .kinds
                .into_iter()
                .zip(summaries)
                .zip(to_send)
                .map(|((k, summary), to_send)| KindInspection {
                    kind: k.kind,
                    keys: k.keys.into_iter().map(|s| s.key.into_escaped()).collect(),
                    bytes: k.bytes,
                    summary,
                    to_send,
                })
                .collect(),
            unknown_keys: inv
                .unknown
                .into_iter()
                .map(|s| UnknownKey {
                    key: s.key.into_escaped(),
                    bytes: s.bytes,
                })
                .collect(),
            known_bytes: inv.known_bytes,
            state,
            in_flight: cp.map(|c| InFlight {
                migration_id: c.migration_id,
                pending_batches: c.pending.len(),
                acked_batches: c.acked.len(),
            }),
            last_finished: history.finished.last().cloned(),
        })
    }

    /// Runs a migration (or finishes the one in flight). Auto mode returns
    /// [`RunStatus::Skipped`] at once when another tab runs; manual mode waits its turn.
    pub async fn run(
        &self,
        options: &RunOptions,
        on_progress: &dyn Fn(&Progress),
    ) -> Result<RunReport, Error> {
        self.check_kinds(options.kinds.as_deref())?;
        let started = self.ports.clock.now_ms();
        let mut report = RunReport::default();
        // The page-load path of a user with no app data: no lock, one IndexedDB read.
        if options.mode == Mode::Auto && !options.dry_run && self.nothing_here(options).await? {
            report.status = RunStatus::NothingToMigrate;
            report.duration_ms = u64::try_from(self.ports.clock.now_ms() - started).unwrap_or(0);
            return Ok(report);
        }
        let lock_name = format!("ferry:{}", self.app());
        let guard = if options.dry_run {
            None
        } else {
            match self
                .ports
                .locks
                .acquire(&lock_name, options.mode == Mode::Manual)
                .await?
            {
                Some(g) => Some(g),
                None => {
                    report.status = RunStatus::Skipped;
                    return Ok(report);
                }
            }
        };
        let before = self.client.stats();
        let result = self.run_locked(options, on_progress, &mut report).await;
        let after = self.client.stats();
        report.retries = after.retries - before.retries;
        report.offline_waits = after.offline_waits - before.offline_waits;
        report.duration_ms = u64::try_from(self.ports.clock.now_ms() - started).unwrap_or(0);
        drop(guard);
        if !options.dry_run {
            let message = match &result {
                Ok(()) => serde_json::to_string(&report).unwrap_or_default(),
                Err(e) => serde_json::json!({
                    "status": "failed",
                    "failure": e.failure(),
                    "code": e.code(),
                    "error": e.to_string(),
                })
                .to_string(),
            };
            self.ports.announcer.announce(&message);
        }
        result.map(|()| report)
    }

    /// The records to ship encoded into batches of migration `migration_id`, one at a time.
    fn plan_batches<'a>(
        &'a self,
        migration_id: Uuid,
        ctx: &Context,
        records: &'a [pipeline::Record],
        to_ship: Vec<usize>,
    ) -> impl Iterator<Item = wire::EncodedBatch> + 'a {
        let header = BatchHeader::new(&self.spec, migration_id, ctx);
        wire::batches(&self.spec, &header, records, to_ship, 0, self.config.limits)
    }

    /// Whether localStorage holds none of the spec's keys and no migration is in flight.
    async fn nothing_here(&self, options: &RunOptions) -> Result<bool, Error> {
        let kinds = options.kinds.as_deref();
        if self
            .ports
            .app
            .keys()?
            .iter()
            .any(|k| self.kind_of(k.as_escaped(), kinds).is_some())
        {
            return Ok(false);
        }
        let key = checkpoint::checkpoint_key(self.app());
        Ok(self.ports.store.get(&key).await?.is_none())
    }

    /// A run under the lock: the numbered steps of the module doc, each a method.
    async fn run_locked(
        &self,
        options: &RunOptions,
        on_progress: &dyn Fn(&Progress),
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let clock = &*self.ports.clock;
        let mut meter = Meter::new(0, 0);

        // 1. A migration in flight is finished first, from its outbox.
        if !options.dry_run {
            self.resume_in_flight(options, on_progress, report).await?;
        }

        // 2. Read, and skip everything when nothing changed.
        on_progress(&meter.at(Stage::Inspect, clock.now_ms(), 0, 0));
        let Some(mut changed) = self.read_changed(options, report).await? else {
            return Ok(());
        };

        // 3. Back up before anything is parsed, so that the backup's buffers and the records
        // are never in memory together, and before any request leaves: its write to the store
        // runs while the records are parsed and is awaited before anything else is stored or
        // sent. A dry run sends nothing and backs up nothing.
        let (backup_id, storing) = if options.dry_run {
            (None, None)
        } else {
            on_progress(&meter.at(Stage::Backup, clock.now_ms(), 0, 0));
            let read = changed.pairs.len();
            let mut pairs = self.with_rest_of_backup(std::mem::take(&mut changed.pairs))?;
            let (id, ops) = self.seal_backup(&pairs, Prune::WithThePlan).await?;
            let storing = Started::start(self.ports.store.commit(ops)).await;
            report.backup_id = Some(id.clone());
            // The rest of the backup's scope was appended after the keys read.
            pairs.truncate(read);
            changed.pairs = pairs;
            (Some(id), Some(storing))
        };

        // 4. Parse, validate, and keep what the server has not confirmed.
        on_progress(&meter.at(Stage::Validate, clock.now_ms(), 0, 0));
        let validated = self.validate(&changed.pairs, report).await?;
        changed.pairs = Vec::new();
        if let Some(storing) = storing {
            storing.finish().await.map_err(saving("the backup"))?;
        }
        let Some(backup_id) = backup_id else {
            // Encoded like a real run's batches, so the dry run says what would go on the wire.
            let Validated {
                ctx,
                records,
                to_ship,
            } = validated;
            for b in self.plan_batches(Uuid::nil(), &ctx, &records, to_ship) {
                report.batches_planned += 1;
                report.bytes_planned += b.body.len() as u64;
            }
            report.status = RunStatus::DryRun;
            return Ok(());
        };
        if validated.to_ship.is_empty() {
            // Nothing new after all: the backup just taken goes again.
            report.backup_id = None;
            let forget = self.forget_backup(&backup_id).await?;
            return self.remember_fingerprints(changed, forget, report).await;
        }

        // 5. Plan: the outbox batch by batch, then tallies and checkpoint in one commit.
        let cp = self
            .save_plan(validated, backup_id, changed.fingerprints, report)
            .await?;
        if options.upload_backup {
            let uploaded = match self.backup_file(&cp.backup_id).await {
                Ok(file) => self.client.upload_backup(&cp.backup_id, file).await,
                Err(e) => Err(e),
            };
            if let Err(e) = uploaded {
                report.warnings.push(format!(
                    "the backup was kept in this browser but not uploaded: {e}"
                ));
            }
        }

        // 6–7. Send, verify, finish. A rollback of this very migration while it ran is not
        // retried here: the next run plans again.
        let id = cp.migration_id;
        let outbox = cp.pending.clone();
        match self.finish(cp, options, on_progress, report).await {
            Err(e @ Error::MigrationRolledBack { .. }) => {
                self.drop_rolled_back(id, &outbox).await?;
                Err(e)
            }
            other => other,
        }?;
        report.status = RunStatus::Completed;
        Ok(())
    }

    /// Step 1: finishes the migration a checkpoint says is in flight, if any.
    async fn resume_in_flight(
        &self,
        options: &RunOptions,
        on_progress: &dyn Fn(&Progress),
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let key = checkpoint::checkpoint_key(self.app());
        let Some(cp) = load_json::<Checkpoint>(&*self.ports.store, &key).await? else {
            return Ok(());
        };
        report.resumed = true;
        report.migration_id = Some(cp.migration_id);
        report.backup_id = Some(cp.backup_id.clone());
        let id = cp.migration_id;
        let outbox = cp.pending.clone();
        let spec_version = cp.spec_version.clone();
        match self.finish(cp, options, on_progress, report).await {
            Ok(()) => {
                report.status = RunStatus::Completed;
                Ok(())
            }
            Err(Error::MigrationRolledBack { .. }) => {
                // Not done: forget it, and let steps 2–7 migrate the records again.
                self.drop_rolled_back(id, &outbox).await?;
                report.resumed = false;
                report.migration_id = None;
                report.backup_id = None;
                report.rolled_back_migration = Some(id);
                report.warnings.push(format!(
                    "migration {id} was rolled back on the server before it was verified; its records are sent again under a new migration"
                ));
                Ok(())
            }
            // Made under an older spec version the server no longer serves (the app shipped a
            // new one meanwhile): re-plan under this version rather than refuse forever. What
            // the server already took is written under the same deterministic ids, so sending
            // every record again doubles nothing.
            Err(Error::SpecMismatch { message }) if spec_version != self.spec.version => {
                self.drop_rolled_back(id, &outbox).await?;
                report.resumed = false;
                report.migration_id = None;
                report.backup_id = None;
                report.warnings.push(format!(
                    "migration {id} was made with spec version {spec_version:?}, which the server no longer serves ({message}); its records are sent again under version {:?}",
                    self.spec.version
                ));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets migration `id`, rolled back on the server: its checkpoint, its plan's hashes
    /// and what is left of its outbox (`outbox`: its pending batches), in one commit. Nothing
    /// is marked migrated, so its records count as new again; the backups stay.
    async fn drop_rolled_back(&self, id: Uuid, outbox: &[u32]) -> Result<(), Error> {
        let app = self.app();
        let mut ops: Vec<StoreOp> = outbox
            .iter()
            .map(|&seq| StoreOp::Delete(checkpoint::outbox_key(app, seq)))
            .collect();
        // Batches split after a 413 while this run sent them are in the stored checkpoint.
        if let Some(cp) =
            load_json::<Checkpoint>(&*self.ports.store, &checkpoint::checkpoint_key(app)).await?
            && cp.migration_id == id
        {
            ops.extend(
                cp.pending
                    .iter()
                    .map(|&seq| StoreOp::Delete(checkpoint::outbox_key(app, seq))),
            );
        }
        ops.push(StoreOp::Delete(checkpoint::plan_hashes_key(app)));
        ops.push(StoreOp::Delete(checkpoint::checkpoint_key(app)));
        self.ports
            .store
            .commit(ops)
            .await
            .map_err(saving("the checkpoint"))
    }

    /// Step 2: the selected kinds' keys, unless none changed since the last verified migration
    /// (then `None`, with the report's status said). Fingerprints come first: an unchanged
    /// value is never brought into wasm.
    async fn read_changed(
        &self,
        options: &RunOptions,
        report: &mut RunReport,
    ) -> Result<Option<ChangedKeys>, Error> {
        let kinds = options.kinds.as_deref();
        let fingerprints: BTreeMap<String, Fingerprint> = self
            .ports
            .app
            .fingerprints()?
            .into_iter()
            .filter(|(k, _)| self.kind_of(k.as_escaped(), kinds).is_some())
            .map(|(k, f)| (k.into_escaped(), f))
            .collect();
        let history: History = load_json(&*self.ports.store, &checkpoint::history_key(self.app()))
            .await?
            .unwrap_or_default();
        let previous: BTreeMap<String, Fingerprint> = history
            .fingerprints
            .iter()
            .filter(|(k, _)| self.kind_of(k, kinds).is_some())
            .map(|(k, f)| (k.clone(), *f))
            .collect();
        if fingerprints.is_empty() && previous.is_empty() {
            if !report.resumed {
                report.status = RunStatus::NothingToMigrate;
            }
            return Ok(None);
        }
        if !options.dry_run && previous == fingerprints {
            if !report.resumed {
                report.status = RunStatus::UpToDate;
            }
            return Ok(None);
        }
        // A value changed between the two reads (another tab) only makes the next run parse
        // again: its new fingerprint will not match the one recorded here.
        let pairs: Vec<Pair> = self
            .ports
            .app
            .read_all()?
            .into_iter()
            .filter(|(k, _)| self.kind_of(k.as_escaped(), kinds).is_some())
            .collect();
        Ok(Some(ChangedKeys {
            fingerprints,
            previous,
            history,
            pairs,
        }))
    }

    /// Step 4: runs the pipeline over the pairs and keeps the records to send: no duplicate,
    /// and none whose content hash the server confirmed in an earlier migration.
    async fn validate(&self, pairs: &[Pair], report: &mut RunReport) -> Result<Validated, Error> {
        let device_id = self.device_id().await?;
        let ctx = Context {
            device_id,
            migrated_at_ms: self.ports.clock.now_ms(),
        };
        let records = pipeline::process_keeping(&self.spec, pairs, &ctx, Keep::Shipping);
        report.kinds = pipeline::summarize(&self.spec, &records);
        for (kind, id) in pipeline::listed_without_key(&self.spec, pairs) {
            let kind = &self.spec.kinds[kind];
            let index = kind.index.as_ref().map_or("", |i| i.key.as_str());
            report.warnings.push(format!(
                "kind `{}`: index key {index:?} lists id {id:?}, but there is no key {:?}",
                kind.name,
                format!("{}{id}", kind.source.key())
            ));
        }
        let migrated = load_hashes(
            &*self.ports.store,
            &checkpoint::migrated_hashes_key(self.app()),
        )
        .await?;
        let to_ship: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                !matches!(r.outcome, Outcome::Duplicate(_)) && !migrated.contains(&r.hash)
            })
            .map(|(i, _)| i)
            .collect();
        report.records_to_send = to_ship.len() as u64;
        Ok(Validated {
            ctx,
            records,
            to_ship,
        })
    }

    /// Nothing new to send (step 3 found every record confirmed): the current fingerprints
    /// replace the selected kinds' old ones, so the next run stops at step 2.
    async fn remember_fingerprints(
        &self,
        changed: ChangedKeys,
        mut ops: Vec<StoreOp>,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let ChangedKeys {
            fingerprints,
            previous,
            mut history,
            ..
        } = changed;
        for k in previous.keys() {
            history.fingerprints.remove(k);
        }
        history.fingerprints.extend(fingerprints);
        ops.push(put_json(checkpoint::history_key(self.app()), &history)?);
        self.ports
            .store
            .commit(ops)
            .await
            .map_err(saving("the migration history"))?;
        if !report.resumed {
            report.status = RunStatus::UpToDate;
        }
        Ok(())
    }

    /// Step 5: encodes the batches of a new migration and saves them (the outbox), then the
    /// plan's hashes, the expected per-kind tallies and the checkpoint in one commit. Each batch
    /// is stored as soon as it is encoded and let go, so the browser never holds the whole
    /// outbox; until the checkpoint is stored no migration owns those entries, and a plan
    /// interrupted before it leaves only entries the next plan deletes first.
    async fn save_plan(
        &self,
        validated: Validated,
        backup_id: String,
        fingerprints: BTreeMap<String, Fingerprint>,
        report: &mut RunReport,
    ) -> Result<Checkpoint, Error> {
        let app = self.app();
        let store = &*self.ports.store;
        let Validated {
            ctx,
            records,
            to_ship,
        } = validated;
        let leftovers: Vec<StoreOp> = store
            .keys(&checkpoint::outbox_prefix(app))
            .await?
            .into_iter()
            .map(StoreOp::Delete)
            .collect();
        if !leftovers.is_empty() {
            store
                .commit(leftovers)
                .await
                .map_err(saving("the upload plan"))?;
        }
        let migration_id = self.random_uuid()?;
        let mut plan = Plan::default();
        let mut pending = Vec::new();
        // Each batch's write starts as soon as it is encoded and runs while the next one is
        // encoded; a write is awaited before the next starts.
        let mut writing: Option<Started<'_, Result<(), Error>>> = None;
        for b in self.plan_batches(migration_id, &ctx, &records, to_ship) {
            self.tally_batch(&mut plan, &b, &records);
            report.batches_planned += 1;
            report.bytes_planned += b.body.len() as u64;
            pending.push(b.sequence);
            if let Some(previous) = writing.take() {
                previous.finish().await.map_err(saving("the upload plan"))?;
            }
            let put = StoreOp::Put(checkpoint::outbox_key(app, b.sequence), b.body);
            writing = Some(Started::start(store.commit(vec![put])).await);
        }
        if let Some(last) = writing {
            last.finish().await.map_err(saving("the upload plan"))?;
        }
        drop(records);
        let cp = Checkpoint {
            migration_id,
            device_id: ctx.device_id,
            spec_version: self.spec.version.clone(),
            started_at_ms: ctx.migrated_at_ms,
            backup_id,
            phase: Phase::Uploading,
            next_sequence: u32::try_from(pending.len()).unwrap_or(u32::MAX),
            pending,
            acked: Vec::new(),
            sizes: plan.sizes,
            expected: plan.expected,
            fingerprints,
        };
        let mut ops = vec![
            StoreOp::Put(
                checkpoint::plan_hashes_key(app),
                checkpoint::encode_hashes(&plan.hashes),
            ),
            put_json(checkpoint::checkpoint_key(app), &cp)?,
        ];
        ops.extend(self.prune_backups().await?);
        store.commit(ops).await.map_err(saving("the upload plan"))?;
        report.migration_id = Some(migration_id);
        report.resumed = false;
        Ok(cp)
    }

    /// Adds one batch to what the server must report (per kind, the count and XOR checksum of
    /// the distinct hashes sent), the hashes, and the batch's size.
    fn tally_batch(&self, plan: &mut Plan, b: &wire::EncodedBatch, records: &[pipeline::Record]) {
        for &i in &b.members {
            let r = &records[i];
            // The server counts each distinct (kind, hash) once: two identical copies of
            // a rejected record must not be counted (or XORed away) twice here.
            if plan.hashes.insert(r.hash) {
                plan.expected
                    .entry(self.spec.kinds[r.kind].name.clone())
                    .or_default()
                    .add(&r.hash);
            }
        }
        plan.sizes.insert(
            b.sequence,
            BatchSize {
                records: b.members.len() as u64,
                bytes: b.body.len() as u64,
            },
        );
    }

    /// What a backup made now says about itself.
    fn backup_metadata(&self, backup_id: String) -> BackupMetadata {
        BackupMetadata {
            backup_id,
            created_at_ms: u64::try_from(self.ports.clock.now_ms()).unwrap_or(0),
            origin: self.config.origin.clone(),
            spec_app: self.spec.app.clone(),
            spec_version: self.spec.version.clone(),
        }
    }

    /// Seals the pairs with the device key and stores the file, pruning old backups in the
    /// same commit (a backup taken on request); returns its id.
    async fn take_backup(&self, pairs: &[Pair]) -> Result<String, Error> {
        let (id, ops) = self.seal_backup(pairs, Prune::Now).await?;
        let store = &*self.ports.store;
        store.commit(ops).await.map_err(saving("the backup"))?;
        Ok(id)
    }

    /// Seals the pairs with the device key: the backup's id and the store operations that
    /// keep it (the file and the index, pruned now or not).
    async fn seal_backup(
        &self,
        pairs: &[Pair],
        prune: Prune,
    ) -> Result<(String, Vec<StoreOp>), Error> {
        let id = self.random_uuid()?.to_string();
        let now = self.ports.clock.now_ms();
        let metadata = self.backup_metadata(id.clone());
        let file = self
            .ports
            .vault
            .seal(pairs, metadata, VaultKey::Device)
            .await?;
        let header = backup::read_header(&file)?;
        let mut index = self.backups().await?;
        index.push(BackupInfo {
            id: id.clone(),
            created_at_ms: now,
            key_count: header.key_count,
            byte_size: header.byte_size,
            file_size: file.len() as u64,
            app: self.spec.app.clone(),
        });
        let mut ops = vec![StoreOp::Put(checkpoint::backup_key(&id), file)];
        match prune {
            Prune::Now => ops.extend(pruned(index)?),
            Prune::WithThePlan => ops.push(put_json(BACKUP_INDEX_KEY.to_owned(), &index)?),
        }
        Ok((id, ops))
    }

    /// The store operations that drop old backups beyond the ones kept ([`pruned`]).
    async fn prune_backups(&self) -> Result<Vec<StoreOp>, Error> {
        pruned(self.backups().await?)
    }

    /// The store operations that drop backup `id` again (a run that found nothing to send).
    async fn forget_backup(&self, id: &str) -> Result<Vec<StoreOp>, Error> {
        let mut index = self.backups().await?;
        index.retain(|b| b.id != id);
        Ok(vec![
            StoreOp::Delete(checkpoint::backup_key(id)),
            put_json(BACKUP_INDEX_KEY.to_owned(), &index)?,
        ])
    }

    /// Steps 6 and 7: sends the outbox, verifies with the server and marks the migration done;
    /// then, with the cleanup option, removes the migrated keys.
    async fn finish(
        &self,
        mut cp: Checkpoint,
        options: &RunOptions,
        on_progress: &dyn Fn(&Progress),
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let (_, total) = cp.done_and_total();
        let mut meter = Meter::new(total.records, total.bytes);
        self.send_outbox(&mut cp, &mut meter, on_progress, report)
            .await?;
        self.verify_with_server(&mut cp, &mut meter, on_progress)
            .await?;
        self.mark_done(&cp, total.records).await?;
        let now = self.ports.clock.now_ms();
        on_progress(&meter.at(Stage::Done, now, total.records, total.bytes));
        if options.cleanup {
            self.remove_migrated_keys(&cp, report)?;
        }
        Ok(())
    }

    /// Step 6: sends the outbox, acknowledging each answer (or splitting a batch refused as
    /// too large) until nothing is pending.
    async fn send_outbox(
        &self,
        cp: &mut Checkpoint,
        meter: &mut Meter,
        on_progress: &dyn Fn(&Progress),
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let app = self.app();
        let store = &*self.ports.store;
        let clock = &*self.ports.clock;
        let parallel = self.config.parallel_uploads.max(1);
        while !cp.pending.is_empty() {
            let (done, _) = cp.done_and_total();
            on_progress(&meter.at(Stage::Upload, clock.now_ms(), done.records, done.bytes));
            // A wave of up to `parallel` batches from the head of the outbox, sent at once;
            // each answer is then recorded in order, so the checkpoint never skips one.
            let mut wave = Vec::with_capacity(parallel);
            for &seq in cp.pending.iter().take(parallel) {
                let key = checkpoint::outbox_key(app, seq);
                let body = store.get(&key).await?.ok_or_else(|| Error::Storage {
                    what: format!("reading batch {seq} of migration {}", cp.migration_id),
                    detail: "it is missing from the outbox: the site data was partly cleared"
                        .to_owned(),
                })?;
                wave.push((seq, key, body));
            }
            let answers = join_all(
                wave.iter()
                    .map(|(_, _, body)| self.client.send_batch(body.clone())),
            )
            .await;
            let mut failure = None;
            for ((seq, key, body), answer) in wave.into_iter().zip(answers) {
                match answer {
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                    Ok(Some(result)) => {
                        self.acknowledge(cp, seq, key, result, report).await?;
                        let (done, _) = cp.done_and_total();
                        on_progress(&meter.at(
                            Stage::Upload,
                            clock.now_ms(),
                            done.records,
                            done.bytes,
                        ));
                    }
                    Ok(None) => self.split(cp, seq, key, &body, report).await?,
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Step 7: the server's per-kind counts and checksums must be what was planned.
    async fn verify_with_server(
        &self,
        cp: &mut Checkpoint,
        meter: &mut Meter,
        on_progress: &dyn Fn(&Progress),
    ) -> Result<(), Error> {
        if cp.phase != Phase::Verifying {
            cp.phase = Phase::Verifying;
            self.ports
                .store
                .commit(vec![put_json(checkpoint::checkpoint_key(self.app()), cp)?])
                .await
                .map_err(saving("the checkpoint"))?;
        }
        let (done, _) = cp.done_and_total();
        let now = self.ports.clock.now_ms();
        on_progress(&meter.at(Stage::Verify, now, done.records, done.bytes));
        let server = match self
            .client
            .verify_migration(cp.migration_id, &sent_tallies(cp))
            .await
        {
            Err(Error::Refused {
                code: ErrorCode::VerificationMismatch,
                message,
                ..
            }) => {
                return Err(Error::VerificationFailed {
                    migration_id: cp.migration_id.to_string(),
                    details: message,
                });
            }
            other => other?,
        };
        verify(cp, &server)
    }

    /// Verified: folds the plan's hashes into the migrated set, adds the migration and its
    /// fingerprints to the history, and forgets the checkpoint, in one commit.
    async fn mark_done(&self, cp: &Checkpoint, records: u64) -> Result<(), Error> {
        let app = self.app();
        let store = &*self.ports.store;
        let mut migrated = load_hashes(store, &checkpoint::migrated_hashes_key(app)).await?;
        migrated.extend(load_hashes(store, &checkpoint::plan_hashes_key(app)).await?);
        let mut history: History = load_json(store, &checkpoint::history_key(app))
            .await?
            .unwrap_or_default();
        history.fingerprints.extend(cp.fingerprints.clone());
        history.finished.push(Finished {
            migration_id: cp.migration_id,
            finished_at_ms: self.ports.clock.now_ms(),
            records,
            backup_id: cp.backup_id.clone(),
        });
        store
            .commit(vec![
                StoreOp::Put(
                    checkpoint::migrated_hashes_key(app),
                    checkpoint::encode_hashes(&migrated),
                ),
                put_json(checkpoint::history_key(app), &history)?,
                StoreOp::Delete(checkpoint::plan_hashes_key(app)),
                StoreOp::Delete(checkpoint::checkpoint_key(app)),
            ])
            .await
            .map_err(saving("the migration history"))
    }

    /// The cleanup option: removes the keys still holding exactly what was migrated; a value
    /// the app changed meanwhile is left for the next incremental run.
    fn remove_migrated_keys(&self, cp: &Checkpoint, report: &mut RunReport) -> Result<(), Error> {
        for (k, f) in self.ports.app.fingerprints()? {
            if cp.fingerprints.get(k.as_escaped()) == Some(&f) {
                self.ports.app.remove(&k)?;
                report.cleaned_keys.push(k.into_escaped());
            }
        }
        Ok(())
    }

    /// Records the server's answer to batch `seq`: outcomes into the report, the batch out of
    /// the outbox and into the checkpoint's acknowledged list, in one commit.
    async fn acknowledge(
        &self,
        cp: &mut Checkpoint,
        seq: u32,
        key: String,
        result: BatchResult,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        if result.migration_id != cp.migration_id || result.sequence != seq {
            return Err(Error::Protocol {
                path: "/v1/batches".to_owned(),
                detail: format!(
                    "sent batch {seq} of migration {}, but the answer is for batch {} of {}",
                    cp.migration_id, result.sequence, result.migration_id
                ),
            });
        }
        for o in result.outcomes {
            *report
                .outcomes
                .entry(o.kind.clone())
                .or_default()
                .entry(o.outcome)
                .or_default() += 1;
            if o.outcome == RecordOutcome::Quarantined {
                report.quarantined.push(o);
            }
        }
        cp.pending.retain(|&s| s != seq);
        cp.acked.push(seq);
        report.batches_sent += 1;
        report.records_sent += cp.sizes.get(&seq).map_or(0, |s| s.records);
        self.ports
            .store
            .commit(vec![
                StoreOp::Delete(key),
                put_json(checkpoint::checkpoint_key(self.app()), cp)?,
            ])
            .await
            .map_err(saving("the checkpoint"))
    }

    /// Replaces batch `seq`, refused as too large, by its two halves under new numbers, in
    /// its place in the outbox.
    async fn split(
        &self,
        cp: &mut Checkpoint,
        seq: u32,
        key: String,
        body: &[u8],
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let Some(halves) = split_batch(body, cp.next_sequence)? else {
            return Err(Error::RecordTooLarge {
                sequence: seq,
                bytes: body.len(),
            });
        };
        cp.next_sequence += 2;
        let at = cp.pending.iter().position(|&s| s == seq).unwrap_or(0);
        cp.pending.retain(|&s| s != seq);
        let mut ops = vec![StoreOp::Delete(key)];
        for (i, (s, b, size)) in halves.into_iter().enumerate() {
            cp.pending.insert(at + i, s);
            cp.sizes.insert(s, size);
            ops.push(StoreOp::Put(checkpoint::outbox_key(self.app(), s), b));
        }
        cp.sizes.remove(&seq);
        ops.push(put_json(checkpoint::checkpoint_key(self.app()), cp)?);
        // The halves are stored before they are sent, so their numbers never carry another body.
        self.ports
            .store
            .commit(ops)
            .await
            .map_err(saving("the split batch"))?;
        report.splits += 1;
        Ok(())
    }

    /// What the light loader's stamp is made from (`src/js/stamp.js`): the keys the spec
    /// watches and each watched key's fingerprint at the last verified migration. `None` while
    /// a migration is in flight, so that no stamp can skip the run that finishes it.
    pub async fn verified_state(&self) -> Result<Option<VerifiedState>, Error> {
        let store = &*self.ports.store;
        if store
            .get(&checkpoint::checkpoint_key(self.app()))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let history: History = load_json(store, &checkpoint::history_key(self.app()))
            .await?
            .unwrap_or_default();
        let lossless = |what: &str, key: &str| {
            LosslessString::from_escaped(key.to_owned())
                .map_err(|e| Error::InvalidArgument(format!("{what} {key:?}: {e}")))
        };
        let ignored = |what: &str, keys: &[String]| -> Result<Vec<LosslessString>, Error> {
            keys.iter().map(|k| lossless(what, k)).collect()
        };
        let ignored_exact = ignored("ignored key", &self.spec.ignore_keys)?;
        let ignored_prefixes = ignored("ignored prefix", &self.spec.ignore_prefixes)?;
        let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
        for kind in &self.spec.kinds {
            let key = lossless("spec key", kind.source.key())?;
            match kind.source {
                Source::Prefix(_) => prefixes.push(key),
                _ => exact.push(key),
            }
            if let Some(index) = &kind.index {
                exact.push(lossless("index key", &index.key)?);
            }
        }
        let mut fingerprints = Vec::with_capacity(history.fingerprints.len());
        for (key, fp) in history.fingerprints {
            if self.kind_of(&key, None).is_some()
                && let Ok(key) = LosslessString::from_escaped(key)
            {
                fingerprints.push((key, fp));
            }
        }
        Ok(Some(VerifiedState {
            exact,
            prefixes,
            fingerprints,
            ignored_exact,
            ignored_prefixes,
        }))
    }

    /// The backups stored in this browser, oldest first.
    pub async fn backups(&self) -> Result<Vec<BackupInfo>, Error> {
        Ok(load_json(&*self.ports.store, BACKUP_INDEX_KEY)
            .await?
            .unwrap_or_default())
    }

    async fn backup_file(&self, id: &str) -> Result<Vec<u8>, Error> {
        self.ports
            .store
            .get(&checkpoint::backup_key(id))
            .await?
            .ok_or_else(|| Error::BackupNotFound(id.to_owned()))
    }

    /// Writes a backup's keys back into localStorage exactly; returns how many.
    pub async fn restore(&self, backup_id: &str) -> Result<usize, Error> {
        let file = self.backup_file(backup_id).await?;
        let pairs = self.ports.vault.open(&file, VaultKey::Device).await?;
        for (k, v) in &pairs {
            self.ports.app.write(k, v)?;
        }
        Ok(pairs.len())
    }

    /// Re-seals a stored backup under a passphrase: a file the user can keep.
    pub async fn export_backup(&self, backup_id: &str, passphrase: &str) -> Result<Vec<u8>, Error> {
        if passphrase.is_empty() {
            return Err(backup::BackupError::EmptyPassphrase.into());
        }
        let file = self.backup_file(backup_id).await?;
        let header = backup::read_header(&file)?;
        let pairs = self.ports.vault.open(&file, VaultKey::Device).await?;
        self.ports
            .vault
            .seal(&pairs, header.metadata, VaultKey::Passphrase(passphrase))
            .await
    }

    /// Backs up the app's localStorage keys now, sealed with the device key and kept with
    /// the other backups (the same backup a run takes before it sends anything).
    pub async fn backup_now(&self) -> Result<BackupInfo, Error> {
        let pairs = self.backup_pairs()?;
        let id = self.take_backup(&pairs).await?;
        self.backups()
            .await?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or(Error::BackupNotFound(id))
    }

    /// A passphrase-protected backup of the app's localStorage keys as they are now (the
    /// bytes of a `.ferry` file for the user to keep); nothing is stored in the browser.
    pub async fn export_now(&self, passphrase: &str) -> Result<Vec<u8>, Error> {
        if passphrase.is_empty() {
            return Err(backup::BackupError::EmptyPassphrase.into());
        }
        let pairs = self.backup_pairs()?;
        let metadata = self.backup_metadata(self.random_uuid()?.to_string());
        self.ports
            .vault
            .seal(&pairs, metadata, VaultKey::Passphrase(passphrase))
            .await
    }

    /// The localStorage pairs a backup holds ([`backup::in_scope`]): by default every key of
    /// the origin but Ferry's own, so that a restore gives back a working app.
    fn backup_pairs(&self) -> Result<Vec<Pair>, Error> {
        self.ports
            .app
            .read_where(&|k| backup::in_scope(&self.spec, k.as_escaped()))
    }

    /// `pairs` (the keys a run read) and the rest of the backup's scope, read now: what the
    /// backup taken before sending holds. The values already read are not read again.
    fn with_rest_of_backup(&self, mut pairs: Vec<Pair>) -> Result<Vec<Pair>, Error> {
        let read: std::collections::BTreeSet<&str> =
            pairs.iter().map(|(k, _)| k.as_escaped()).collect();
        let rest = self.ports.app.read_where(&|k| {
            !read.contains(k.as_escaped()) && backup::in_scope(&self.spec, k.as_escaped())
        })?;
        drop(read);
        pairs.extend(rest);
        Ok(pairs)
    }

    /// `GET /v1/conflicts`: the pending conflicts.
    pub async fn conflicts(&self) -> Result<Value, Error> {
        self.client.json_call("GET", "/v1/conflicts", None).await
    }

    /// `POST /v1/conflicts/{id}/resolve`.
    pub async fn resolve(
        &self,
        conflict_id: u64,
        choice: &str,
        value: Option<Value>,
    ) -> Result<Value, Error> {
        let Ok(choice) = serde_json::from_value::<Choice>(Value::String(choice.to_owned())) else {
            return Err(Error::InvalidArgument(format!(
                "choice {choice:?} is not one of \"stored\", \"incoming\", \"edited\""
            )));
        };
        if (choice == Choice::Edited) != value.is_some() {
            return Err(Error::InvalidArgument(
                "a value (column → value) is given with choice \"edited\", and only then"
                    .to_owned(),
            ));
        }
        let mut body = serde_json::json!({ "choice": choice });
        if let Some(v) = value {
            body["value"] = v;
        }
        let path = format!("/v1/conflicts/{conflict_id}/resolve");
        self.client.json_call("POST", &path, Some(&body)).await
    }

    /// `POST /v1/migrations/{id}/rollback` for the given migration, or the last verified one.
    /// Afterwards this browser forgets what was migrated, so a later run sends everything
    /// again (harmless: the server's upserts are idempotent).
    pub async fn rollback(&self, migration_id: Option<Uuid>) -> Result<Value, Error> {
        let app = self.app().to_owned();
        let store = &*self.ports.store;
        let mut history: History = load_json(store, &checkpoint::history_key(&app))
            .await?
            .unwrap_or_default();
        let id = match migration_id.or_else(|| history.finished.last().map(|f| f.migration_id)) {
            Some(id) => id,
            None => {
                return Err(Error::InvalidArgument(
                    "no migration id given and no verified migration to roll back".to_owned(),
                ));
            }
        };
        let answer = self
            .client
            .json_call("POST", &format!("/v1/migrations/{id}/rollback"), None)
            .await?;
        history.fingerprints.clear();
        store
            .commit(vec![
                put_json(checkpoint::history_key(&app), &history)?,
                StoreOp::Delete(checkpoint::migrated_hashes_key(&app)),
            ])
            .await
            .map_err(saving("the migration history"))?;
        Ok(answer)
    }
}

/// Labels a store error with what was being saved.
/// A future polled once, so that it has started its work (an IndexedDB write queues its puts,
/// handing the bytes over to the browser, on its first poll), and awaited later.
enum Started<'a, T> {
    /// Still running.
    Running(LocalFuture<'a, T>),
    /// Finished on its first poll.
    Done(T),
}

impl<'a, T> Started<'a, T> {
    async fn start(future: LocalFuture<'a, T>) -> Self {
        let mut future = Some(future);
        // Called once: it is ready on its first call, and a finished `poll_fn` is not polled.
        std::future::poll_fn(|cx| match future.take() {
            Some(mut f) => Poll::Ready(match f.as_mut().poll(cx) {
                Poll::Ready(out) => Self::Done(out),
                Poll::Pending => Self::Running(f),
            }),
            None => Poll::Pending,
        })
        .await
    }

    async fn finish(self) -> T {
        match self {
            Self::Running(future) => future.await,
            Self::Done(out) => out,
        }
    }
}

/// When [`Migrator::take_backup`] drops old backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prune {
    /// In the same commit (a backup taken on request).
    Now,
    /// In the commit of the run's plan: a run that turns out to have nothing to send drops
    /// its backup again, and must not have dropped an older one for it.
    WithThePlan,
}

/// Keeps the oldest backup (the data as it was before Ferry ever ran) and the newest few of
/// `index`: the operations that delete the others and store what is left of the index.
fn pruned(mut index: Vec<BackupInfo>) -> Result<Vec<StoreOp>, Error> {
    let mut ops = Vec::new();
    while index.len() > RECENT_BACKUPS_KEPT + 1 {
        let old = index.remove(1);
        ops.push(StoreOp::Delete(checkpoint::backup_key(&old.id)));
    }
    ops.push(put_json(BACKUP_INDEX_KEY.to_owned(), &index)?);
    Ok(ops)
}

fn saving(what: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::QuotaExceeded { detail, .. } => Error::QuotaExceeded {
            what: what.to_owned(),
            detail,
        },
        Error::Storage { detail, .. } => Error::Storage {
            what: format!("saving {what}"),
            detail,
        },
        other => other,
    }
}

/// One half of a split batch: its sequence number, body and size.
pub type SplitHalf = (u32, Vec<u8>, BatchSize);

/// Splits a batch body into two halves numbered `next` and `next + 1`; `None` when it holds a
/// single record.
pub fn split_batch(body: &[u8], next: u32) -> Result<Option<[SplitHalf; 2]>, Error> {
    let batch: Batch = serde_json::from_slice(body).map_err(|e| Error::Storage {
        what: "splitting a batch".to_owned(),
        detail: format!("the outbox entry is not a batch: {e}"),
    })?;
    let n = batch.records.len() + batch.rejected.len();
    if n < 2 {
        return Ok(None);
    }
    let half = n / 2;
    let mut records = batch.records;
    let mut rejected = batch.rejected;
    let (first_records, first_rejected) = if records.len() >= half {
        let rest = records.split_off(half);
        (std::mem::replace(&mut records, rest), Vec::new())
    } else {
        let rest = rejected.split_off(half - records.len());
        (
            std::mem::take(&mut records),
            std::mem::replace(&mut rejected, rest),
        )
    };
    let encode = |sequence: u32, records, rejected| -> Result<SplitHalf, Error> {
        let mut header = batch.header.clone();
        header.sequence = sequence;
        // The digest covered the whole list; the halves go without one (the server then takes
        // its own hashes, and the verification compares them with the plan's).
        header.digest = None;
        let b = Batch {
            header,
            records,
            rejected,
        };
        let count = (b.records.len() + b.rejected.len()) as u64;
        let bytes = serde_json::to_vec(&b).map_err(|e| Error::Storage {
            what: "splitting a batch".to_owned(),
            detail: e.to_string(),
        })?;
        let size = BatchSize {
            records: count,
            bytes: bytes.len() as u64,
        };
        Ok((sequence, bytes, size))
    };
    Ok(Some([
        encode(next, first_records, first_rejected)?,
        encode(next + 1, records, rejected)?,
    ]))
}

/// What the checkpoint's plan sent, per kind, as `POST /v1/migrations/{id}/verify` takes it.
pub fn sent_tallies(cp: &Checkpoint) -> VerifyRequest {
    VerifyRequest {
        kinds: cp
            .expected
            .iter()
            .map(|(kind, t)| {
                let tally = KindTally {
                    received: t.received,
                    checksum: ContentHash(t.checksum).to_hex(),
                };
                (kind.clone(), tally)
            })
            .collect(),
    }
}

/// Compares the server's report with what was sent: a rolled-back migration is not done, and
/// a running or verified one must hold exactly the plan's per-kind tallies.
pub fn verify(cp: &Checkpoint, server: &MigrationReport) -> Result<(), Error> {
    if server.status == MigrationStatus::RolledBack {
        return Err(Error::MigrationRolledBack {
            path: format!("/v1/migrations/{}", cp.migration_id),
            message: format!("migration {} was rolled back", cp.migration_id),
        });
    }
    let problems = server.differences(&sent_tallies(cp).kinds);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::VerificationFailed {
            migration_id: cp.migration_id.to_string(),
            details: problems.join("; "),
        })
    }
}

// Native only: the browser build has its own tests in `tests/browser.rs`.
#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests;
