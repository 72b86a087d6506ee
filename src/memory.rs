//! In-memory twins of every [port](crate::ports), a fake ingest server that follows
//! `docs/http-api.md` (idempotent batches, tallies, scripted faults), and a tiny executor, so
//! the whole runner is tested with `cargo test -p ferry`, no browser and no network.
//!
//! Every future here completes without waiting: the clock's `sleep` just moves time forward
//! and records the delay, and going offline is "fixed" by the `online` event firing at once.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ferry_core::backup::{self, BackupMetadata, OpeningKey, Pair, SealingKey};
use ferry_core::contract::{
    BatchResult, Conflict, ErrorBody, ErrorCode, ErrorDetail, KindReport, MigrationReport,
    MigrationStatus, RecordOutcome, RecordResult, ResolveAnswer, RollbackAnswer, StoredBackup,
    VerifyRequest,
};
use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::ContentHash;
use ferry_core::wire::Batch;
use uuid::Uuid;

use crate::checkpoint::Fingerprint;
use crate::error::Error;
use crate::ports::{
    Announcer, AppStorage, Clock, Connectivity, Entropy, HttpRequest, HttpResponse, LocalFuture,
    LockGuard, Locks, Ports, Store, StoreOp, Tokens, Transport, TransportError, Vault, VaultKey,
};

/// Drives a future whose every await is ready at once (all twins here); panics otherwise.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!(
        "block_on: the future is still pending (a twin is waiting for something that never happens)"
    )
}

/// localStorage in memory: ordered pairs.
#[derive(Default)]
pub struct MemoryApp {
    pairs: RefCell<Vec<Pair>>,
}

impl MemoryApp {
    /// Sets a key from Rust strings.
    pub fn set(&self, key: &str, value: &str) {
        let _ = self.write(
            &LosslessString::from_unicode(key),
            &LosslessString::from_unicode(value),
        );
    }
    /// A value, if set.
    pub fn get(&self, key: &str) -> Option<LosslessString> {
        self.pairs
            .borrow()
            .iter()
            .find(|(k, _)| k.as_escaped() == key)
            .map(|(_, v)| v.clone())
    }
    /// Every pair.
    pub fn pairs(&self) -> Vec<Pair> {
        self.pairs.borrow().clone()
    }
}

impl AppStorage for MemoryApp {
    fn read_all(&self) -> Result<Vec<Pair>, Error> {
        Ok(self.pairs())
    }
    fn keys(&self) -> Result<Vec<LosslessString>, Error> {
        Ok(self.pairs().into_iter().map(|(k, _)| k).collect())
    }
    fn fingerprints(&self) -> Result<Vec<(LosslessString, Fingerprint)>, Error> {
        Ok(self
            .pairs()
            .into_iter()
            .map(|(k, v)| {
                let f = Fingerprint::of(&v);
                (k, f)
            })
            .collect())
    }
    fn write(&self, key: &LosslessString, value: &LosslessString) -> Result<(), Error> {
        let mut pairs = self.pairs.borrow_mut();
        match pairs.iter_mut().find(|(k, _)| k == key) {
            Some(p) => p.1 = value.clone(),
            None => pairs.push((key.clone(), value.clone())),
        }
        Ok(())
    }
    fn remove(&self, key: &LosslessString) -> Result<(), Error> {
        self.pairs.borrow_mut().retain(|(k, _)| k != key);
        Ok(())
    }
}

/// The durable store in memory, with an optional quota.
#[derive(Default)]
pub struct MemoryStore {
    map: RefCell<BTreeMap<String, Vec<u8>>>,
    /// Total bytes allowed; a commit beyond it fails like a full IndexedDB.
    pub quota: Cell<Option<usize>>,
}

impl MemoryStore {
    /// Keys present.
    pub fn keys_now(&self) -> Vec<String> {
        self.map.borrow().keys().cloned().collect()
    }
    /// A value.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.map.borrow().get(key).cloned()
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<Vec<u8>>, Error>> {
        Box::pin(async move { Ok(self.value(key)) })
    }
    fn keys<'a>(&'a self, prefix: &'a str) -> LocalFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async move {
            Ok(self
                .map
                .borrow()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        })
    }
    fn commit(&self, ops: Vec<StoreOp>) -> LocalFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut next = self.map.borrow().clone();
            for op in ops {
                match op {
                    StoreOp::Put(k, v) => {
                        next.insert(k, v);
                    }
                    StoreOp::Delete(k) => {
                        next.remove(&k);
                    }
                }
            }
            let used: usize = next.iter().map(|(k, v)| k.len() + v.len()).sum();
            if let Some(q) = self.quota.get()
                && used > q
            {
                return Err(Error::QuotaExceeded {
                    what: "data".to_owned(),
                    detail: format!("QuotaExceededError: {used} bytes needed, {q} allowed"),
                });
            }
            *self.map.borrow_mut() = next;
            Ok(())
        })
    }
}

/// A clock that only moves when slept on (or told to).
pub struct ManualClock {
    now: Cell<i64>,
    /// Every sleep, in milliseconds.
    pub sleeps: RefCell<Vec<u64>>,
}

impl ManualClock {
    /// A clock at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            now: Cell::new(now_ms),
            sleeps: RefCell::new(Vec::new()),
        }
    }
    /// Moves time forward.
    pub fn advance(&self, ms: i64) {
        self.now.set(self.now.get() + ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.get()
    }
    fn sleep(&self, ms: u64) -> LocalFuture<'_, ()> {
        self.sleeps.borrow_mut().push(ms);
        self.advance(i64::try_from(ms).unwrap_or(i64::MAX));
        Box::pin(async {})
    }
}

/// A deterministic xorshift generator (tests only: not secure).
pub struct SeededEntropy(Cell<u64>);

impl SeededEntropy {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(Cell::new(seed.max(1)))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), Error> {
        for b in buf {
            let mut x = self.0.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0.set(x);
            *b = (x >> 24) as u8;
        }
        Ok(())
    }
}

/// Seals with RustCrypto (`ferry_core::backup::seal`) under a device key held in memory.
pub struct MemoryVault {
    key: [u8; backup::KEY_LEN],
    entropy: Rc<dyn Entropy>,
}

/// The key id the memory vault writes into backup headers.
pub const MEMORY_KEY_ID: &str = "memory-device-key";

impl MemoryVault {
    /// A vault with a device key drawn from `entropy`.
    pub fn new(entropy: Rc<dyn Entropy>) -> Result<Self, Error> {
        let mut key = [0u8; backup::KEY_LEN];
        entropy.fill(&mut key)?;
        Ok(Self { key, entropy })
    }
}

impl Vault for MemoryVault {
    fn seal<'a>(
        &'a self,
        pairs: &'a [Pair],
        metadata: BackupMetadata,
        key: VaultKey<'a>,
    ) -> LocalFuture<'a, Result<Vec<u8>, Error>> {
        Box::pin(async move {
            let mut nonce = [0u8; backup::NONCE_LEN];
            self.entropy.fill(&mut nonce)?;
            let file = match key {
                VaultKey::Device => backup::seal(
                    pairs,
                    metadata,
                    &SealingKey::DeviceKey {
                        key_id: MEMORY_KEY_ID,
                        key: &self.key,
                    },
                    nonce,
                )?,
                VaultKey::Passphrase(passphrase) => {
                    let mut salt = [0u8; backup::SALT_LEN];
                    self.entropy.fill(&mut salt)?;
                    backup::seal(
                        pairs,
                        metadata,
                        &SealingKey::Passphrase {
                            passphrase,
                            salt,
                            iterations: backup::MIN_PBKDF2_ITERATIONS,
                        },
                        nonce,
                    )?
                }
            };
            Ok(file)
        })
    }
    fn open<'a>(
        &'a self,
        file: &'a [u8],
        key: VaultKey<'a>,
    ) -> LocalFuture<'a, Result<Vec<Pair>, Error>> {
        Box::pin(async move {
            let key = match key {
                VaultKey::Device => OpeningKey::DeviceKey {
                    key_id: MEMORY_KEY_ID,
                    key: &self.key,
                },
                VaultKey::Passphrase(p) => OpeningKey::Passphrase(p),
            };
            Ok(backup::open(file, &key)?.pairs)
        })
    }
}

/// Online state that comes back as soon as someone waits for it.
pub struct MemoryNet {
    online: Cell<bool>,
    /// How often `until_online` was awaited.
    pub waits: Cell<u32>,
}

impl Default for MemoryNet {
    fn default() -> Self {
        Self {
            online: Cell::new(true),
            waits: Cell::new(0),
        }
    }
}

impl MemoryNet {
    /// Sets the online state.
    pub fn set_online(&self, online: bool) {
        self.online.set(online);
    }
}

impl Connectivity for MemoryNet {
    fn is_online(&self) -> bool {
        self.online.get()
    }
    fn until_online(&self) -> LocalFuture<'_, ()> {
        self.waits.set(self.waits.get() + 1);
        self.online.set(true);
        Box::pin(async {})
    }
}

/// Tokens `token-1`, `token-2`, … : each refresh gives the next.
#[derive(Default)]
pub struct CountingTokens {
    /// Tokens handed out.
    pub issued: Cell<u32>,
}

impl Tokens for CountingTokens {
    fn token(&self, refresh: bool) -> LocalFuture<'_, Result<String, Error>> {
        if refresh || self.issued.get() == 0 {
            self.issued.set(self.issued.get() + 1);
        }
        let t = format!("token-{}", self.issued.get());
        Box::pin(async move { Ok(t) })
    }
}

/// Named locks in memory; waiting acquisitions complete when the holder drops its guard.
#[derive(Default)]
pub struct MemoryLocks {
    held: Rc<RefCell<HashSet<String>>>,
}

struct MemoryLockRelease {
    held: Rc<RefCell<HashSet<String>>>,
    name: String,
}

impl Drop for MemoryLockRelease {
    fn drop(&mut self) {
        self.held.borrow_mut().remove(&self.name);
    }
}

impl MemoryLocks {
    /// Takes a lock directly (simulating another tab), if free.
    pub fn hold(&self, name: &str) -> Option<LockGuard> {
        if !self.held.borrow_mut().insert(name.to_owned()) {
            return None;
        }
        Some(LockGuard(Box::new(MemoryLockRelease {
            held: self.held.clone(),
            name: name.to_owned(),
        })))
    }
}

impl Locks for MemoryLocks {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        wait: bool,
    ) -> LocalFuture<'a, Result<Option<LockGuard>, Error>> {
        Box::pin(std::future::poll_fn(move |_| match self.hold(name) {
            Some(g) => Poll::Ready(Ok(Some(g))),
            None if !wait => Poll::Ready(Ok(None)),
            // A waiting tab: block_on polls again; a real executor would need a waker.
            None => Poll::Pending,
        }))
    }
}

/// Records announcements.
#[derive(Default)]
pub struct MemoryAnnouncer {
    /// Every message.
    pub messages: RefCell<Vec<String>>,
}

impl Announcer for MemoryAnnouncer {
    fn announce(&self, report_json: &str) {
        self.messages.borrow_mut().push(report_json.to_owned());
    }
}

/// A fault the fake server injects into the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No fault: answer normally.
    Pass,
    /// Answer with this status (and an error body).
    Status(u16),
    /// Answer with this status and error code.
    Error(u16, String),
    /// Answer 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// Process the request, then lose the response (network error).
    LoseResponse,
    /// Time out without processing.
    Timeout,
    /// Fail with a network error and take the browser offline.
    GoOffline,
}

/// One request the fake server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Method.
    pub method: &'static str,
    /// Path.
    pub path: String,
    /// Batch sequence, for batches.
    pub sequence: Option<u32>,
    /// Records in the batch.
    pub records: usize,
    /// Status answered (`None` when the response was lost or timed out).
    pub status: Option<u16>,
    /// Token used.
    pub token: String,
}

/// An ingest server in memory, per `docs/http-api.md`.
pub struct FakeServer {
    /// Batches stored per (migration, sequence).
    pub batches: RefCell<BTreeMap<(Uuid, u32), Vec<u8>>>,
    /// Faults for the next requests, in order.
    pub faults: RefCell<VecDeque<Fault>>,
    /// Every request.
    pub seen: RefCell<Vec<Seen>>,
    /// Batches with more records than this are answered 413.
    pub max_records: Cell<Option<usize>>,
    /// Tokens refused with 401.
    pub refused_tokens: RefCell<HashSet<String>>,
    /// Backups uploaded (id, size).
    pub backups: RefCell<Vec<(String, usize)>>,
    /// Migrations rolled back (their batches are refused with 409 `migration_rolled_back`).
    pub rolled_back: RefCell<BTreeSet<Uuid>>,
    /// Migrations verified, with how many times the browser asked.
    pub verified: RefCell<BTreeMap<Uuid, u32>>,
    /// The specs the server re-runs records with, as the real one does to hash them
    /// (`ferry-batch/2` carries no hash per record): the one a batch names is used. Added by
    /// the test that makes a migrator.
    pub specs: RefCell<Vec<ferry_core::spec::Spec>>,
    net: Option<Rc<MemoryNet>>,
}

impl FakeServer {
    /// A server; `net` is taken offline by [`Fault::GoOffline`].
    pub fn new(net: Option<Rc<MemoryNet>>) -> Self {
        Self {
            batches: RefCell::default(),
            faults: RefCell::default(),
            seen: RefCell::default(),
            max_records: Cell::new(None),
            refused_tokens: RefCell::default(),
            backups: RefCell::default(),
            rolled_back: RefCell::default(),
            verified: RefCell::default(),
            specs: RefCell::default(),
            net,
        }
    }

    /// Every record of `batch` as (kind, content hash): the server's own hashes of `records`
    /// (re-run with the spec the batch names, the digest checked as the real server does: a
    /// mismatch panics, since the twins never alter a batch), the browser's of `rejected`.
    fn hashes(&self, batch: &Batch) -> Vec<(String, ContentHash)> {
        let specs = self.specs.borrow();
        let Some(spec) = specs
            .iter()
            .find(|s| s.version == batch.header.spec_version)
        else {
            panic!(
                "the fake server has no spec version {:?}: add it to FakeServer::specs",
                batch.header.spec_version
            )
        };
        let records = ferry_core::wire::reprocess_records(spec, batch);
        assert!(
            records.iter().all(|r| r.outcome.is_accepted()),
            "the fake server refused a record the browser sent: {records:?}"
        );
        let valid = batch
            .records
            .iter()
            .zip(records)
            .map(|(item, r)| (item.kind.clone(), r.hash));
        let rejected = batch.rejected.iter().map(|r| (r.kind.clone(), r.hash));
        valid.chain(rejected).collect()
    }

    /// Queues faults.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.faults.borrow_mut().extend(faults);
    }

    /// Sequences of the batches POSTed, in order, including retries.
    pub fn posted_sequences(&self) -> Vec<u32> {
        self.seen
            .borrow()
            .iter()
            .filter_map(|s| s.sequence)
            .collect()
    }

    // Over 100 lines on purpose: the fake server's router, one arm per route of
    // docs/http-api.md side by side; native-only test support, never in the bundle.
    fn answer(&self, request: &HttpRequest) -> (HttpResponse, Option<u32>, usize) {
        let path = request
            .url
            .split_once("/v1/")
            .map_or(String::new(), |(_, p)| format!("/v1/{p}"));
        let error = |status: u16, code: ErrorCode, message: &str| {
            let body = ErrorBody {
                error: ErrorDetail {
                    code,
                    message: message.to_owned(),
                    details: Some(serde_json::json!({})),
                    request_id: None,
                },
            };
            json_answer(status, &body)
        };
        if self.refused_tokens.borrow().contains(&request.token) {
            return (
                error(401, ErrorCode::TokenExpired, "token expired"),
                None,
                0,
            );
        }
        let body = request
            .body
            .as_ref()
            .map(|(b, _)| b.as_slice())
            .unwrap_or_default();
        match (request.method, path.as_str()) {
            ("POST", "/v1/batches") => {
                let batch: Batch = match serde_json::from_slice(body) {
                    Ok(b) => b,
                    Err(e) => {
                        return (error(400, ErrorCode::InvalidBatch, &e.to_string()), None, 0);
                    }
                };
                let seq = batch.header.sequence;
                let n = batch.records.len() + batch.rejected.len();
                if self.max_records.get().is_some_and(|m| n > m) {
                    return (
                        error(413, ErrorCode::PayloadTooLarge, "too large"),
                        Some(seq),
                        n,
                    );
                }
                if self
                    .rolled_back
                    .borrow()
                    .contains(&batch.header.migration_id)
                {
                    let message = "the migration was rolled back";
                    let answer = error(409, ErrorCode::MigrationRolledBack, message);
                    return (answer, Some(seq), n);
                }
                let key = (batch.header.migration_id, seq);
                let replay = match self.batches.borrow().get(&key) {
                    Some(stored) if stored.as_slice() != body => {
                        return (
                            error(409, ErrorCode::IdempotencyConflict, "different body"),
                            Some(seq),
                            n,
                        );
                    }
                    Some(_) => true,
                    None => false,
                };
                self.batches.borrow_mut().insert(key, body.to_vec());
                let valid = if replay {
                    RecordOutcome::Unchanged
                } else {
                    RecordOutcome::Inserted
                };
                let hashes = self.hashes(&batch);
                let mut outcomes: Vec<RecordResult> = batch
                    .records
                    .iter()
                    .zip(&hashes)
                    .map(|(r, (_, hash))| RecordResult {
                        id: Some(r.id),
                        hash: hash.to_hex(),
                        kind: r.kind.clone(),
                        outcome: valid,
                        reasons: Vec::new(),
                    })
                    .collect();
                outcomes.extend(batch.rejected.iter().map(|r| RecordResult {
                    id: None,
                    hash: r.hash.to_hex(),
                    kind: r.kind.clone(),
                    outcome: RecordOutcome::Quarantined,
                    reasons: r.reasons.iter().map(|n| n.message.clone()).collect(),
                }));
                let answer = BatchResult {
                    migration_id: batch.header.migration_id,
                    sequence: seq,
                    replay,
                    outcomes,
                    counts: BTreeMap::new(),
                };
                (json_answer(200, &answer), Some(seq), n)
            }
            ("POST", p) if p.starts_with("/v1/migrations/") && p.ends_with("/verify") => {
                let id = p
                    .trim_start_matches("/v1/migrations/")
                    .trim_end_matches("/verify");
                let Some(mut report) = self.report(id) else {
                    return (
                        error(404, ErrorCode::NotFound, "no such migration"),
                        None,
                        0,
                    );
                };
                let sent: VerifyRequest = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return (error(422, ErrorCode::InvalidBody, &e.to_string()), None, 0),
                };
                if report.status == MigrationStatus::RolledBack {
                    let answer = error(409, ErrorCode::MigrationRolledBack, "rolled back");
                    return (answer, None, 0);
                }
                let problems = report.differences(&sent.kinds);
                if !problems.is_empty() {
                    let answer = error(409, ErrorCode::VerificationMismatch, &problems.join("; "));
                    return (answer, None, 0);
                }
                *self
                    .verified
                    .borrow_mut()
                    .entry(report.migration_id)
                    .or_default() += 1;
                report.status = MigrationStatus::Verified;
                (json_answer(200, &report), None, 0)
            }
            ("GET", p) if p.starts_with("/v1/migrations/") => {
                let id = p.trim_start_matches("/v1/migrations/");
                match self.report(id) {
                    Some(report) => (json_answer(200, &report), None, 0),
                    None => (
                        error(404, ErrorCode::NotFound, "no such migration"),
                        None,
                        0,
                    ),
                }
            }
            ("POST", "/v1/backups") => {
                let id = request
                    .headers
                    .iter()
                    .find(|(h, _)| h == "X-Ferry-Backup-Id")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                self.backups.borrow_mut().push((id.clone(), body.len()));
                let stored = StoredBackup {
                    id,
                    size: body.len() as u64,
                    created_at: String::new(),
                };
                (json_answer(200, &stored), None, 0)
            }
            ("GET", "/v1/conflicts") => (json_answer(200, &Vec::<Conflict>::new()), None, 0),
            ("POST", p) if p.ends_with("/resolve") => {
                (json_answer(200, &ResolveAnswer { resolved: true }), None, 0)
            }
            ("POST", p) if p.ends_with("/rollback") => {
                let id = p
                    .trim_start_matches("/v1/migrations/")
                    .trim_end_matches("/rollback");
                if let Ok(id) = Uuid::parse_str(id) {
                    self.rolled_back.borrow_mut().insert(id);
                }
                let answer = RollbackAnswer {
                    restored: 0,
                    already_rolled_back: false,
                };
                (json_answer(200, &answer), None, 0)
            }
            _ => (error(404, ErrorCode::NotFound, "no such route"), None, 0),
        }
    }
}

impl FakeServer {
    /// What the server holds of migration `id` (`None` for an id that is not a uuid): each
    /// distinct (kind, hash) counted once, like the real server.
    fn report(&self, id: &str) -> Option<MigrationReport> {
        let migration_id = Uuid::parse_str(id).ok()?;
        let mut kinds: BTreeMap<String, (u64, [u8; 16])> = BTreeMap::new();
        let mut count = 0;
        let mut seen = BTreeSet::new();
        for ((m, _), b) in self.batches.borrow().iter() {
            if *m != migration_id {
                continue;
            }
            count += 1;
            let Ok(batch) = serde_json::from_slice::<Batch>(b) else {
                continue;
            };
            for (kind, ContentHash(h)) in self.hashes(&batch) {
                if !seen.insert((kind.clone(), h)) {
                    continue;
                }
                let e = kinds.entry(kind.clone()).or_default();
                e.0 += 1;
                for (c, x) in e.1.iter_mut().zip(h) {
                    *c ^= x;
                }
            }
        }
        let kinds = kinds
            .into_iter()
            .map(|(k, (n, x))| {
                let report = KindReport {
                    received: n,
                    checksum: ContentHash(x).to_hex(),
                    outcomes: BTreeMap::new(),
                };
                (k, report)
            })
            .collect();
        let status = if self.rolled_back.borrow().contains(&migration_id) {
            MigrationStatus::RolledBack
        } else if self.verified.borrow().contains_key(&migration_id) {
            MigrationStatus::Verified
        } else {
            MigrationStatus::Running
        };
        Some(MigrationReport {
            migration_id,
            status,
            batches: count,
            kinds,
        })
    }
}

impl Transport for FakeServer {
    fn send(&self, request: HttpRequest) -> LocalFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            let fault = self.faults.borrow_mut().pop_front();
            let path = request
                .url
                .split_once("/v1/")
                .map_or(String::new(), |(_, p)| format!("/v1/{p}"));
            let mut seen = Seen {
                method: request.method,
                path,
                sequence: None,
                records: 0,
                status: None,
                token: request.token.clone(),
            };
            let peek: Option<Batch> = request
                .body
                .as_ref()
                .and_then(|(b, _)| serde_json::from_slice(b).ok());
            if let Some(b) = &peek {
                seen.sequence = Some(b.header.sequence);
                seen.records = b.records.len() + b.rejected.len();
            }
            let result = match fault {
                Some(Fault::Error(s, code)) => {
                    seen.status = Some(s);
                    Ok(HttpResponse {
                        status: s,
                        retry_after: None,
                        body: serde_json::json!({"error": {"code": code, "message": "injected", "details": {}}})
                            .to_string()
                            .into_bytes(),
                    })
                }
                Some(Fault::Status(s)) => {
                    seen.status = Some(s);
                    Ok(HttpResponse {
                        status: s,
                        retry_after: None,
                        body: br#"{"error":{"code":"injected","message":"injected fault"}}"#
                            .to_vec(),
                    })
                }
                Some(Fault::RetryAfter(secs)) => {
                    seen.status = Some(429);
                    Ok(HttpResponse {
                        status: 429,
                        retry_after: Some(secs.to_string()),
                        body: Vec::new(),
                    })
                }
                Some(Fault::Timeout) => Err(TransportError::Timeout),
                Some(Fault::GoOffline) => {
                    if let Some(n) = &self.net {
                        n.set_online(false);
                    }
                    Err(TransportError::Network("Failed to fetch".to_owned()))
                }
                Some(Fault::LoseResponse) => {
                    let _ = self.answer(&request);
                    Err(TransportError::Network("connection reset".to_owned()))
                }
                None | Some(Fault::Pass) => {
                    let (r, _, _) = self.answer(&request);
                    seen.status = Some(r.status);
                    Ok(r)
                }
            };
            self.seen.borrow_mut().push(seen);
            result
        })
    }
}

/// Every twin, wired together.
pub struct Twins {
    /// localStorage.
    pub app: Rc<MemoryApp>,
    /// IndexedDB.
    pub store: Rc<MemoryStore>,
    /// Clock.
    pub clock: Rc<ManualClock>,
    /// Randomness.
    pub entropy: Rc<SeededEntropy>,
    /// Backup sealing.
    pub vault: Rc<MemoryVault>,
    /// The fake server.
    pub server: Rc<FakeServer>,
    /// Tokens.
    pub tokens: Rc<CountingTokens>,
    /// Online state.
    pub net: Rc<MemoryNet>,
    /// Locks.
    pub locks: Rc<MemoryLocks>,
    /// Announcements.
    pub announcer: Rc<MemoryAnnouncer>,
}

impl Twins {
    /// Fresh twins, deterministic for a seed.
    pub fn new(seed: u64) -> Result<Self, Error> {
        let entropy = Rc::new(SeededEntropy::new(seed));
        let net = Rc::new(MemoryNet::default());
        Ok(Self {
            app: Rc::default(),
            store: Rc::default(),
            clock: Rc::new(ManualClock::new(1_700_000_000_000)),
            vault: Rc::new(MemoryVault::new(entropy.clone())?),
            entropy,
            server: Rc::new(FakeServer::new(Some(net.clone()))),
            tokens: Rc::default(),
            net,
            locks: Rc::default(),
            announcer: Rc::default(),
        })
    }

    /// The ports, as the runner takes them.
    pub fn ports(&self) -> Ports {
        Ports {
            app: self.app.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            entropy: self.entropy.clone(),
            vault: self.vault.clone(),
            transport: self.server.clone(),
            tokens: self.tokens.clone(),
            net: self.net.clone(),
            locks: self.locks.clone(),
            announcer: self.announcer.clone(),
        }
    }
}

/// An answer of the fake server: `body` in the contract's JSON.
fn json_answer<T: serde::Serialize>(status: u16, body: &T) -> HttpResponse {
    HttpResponse {
        status,
        retry_after: None,
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}
