//! The ports: small traits behind which the browser sits, so the orchestration in
//! [`runner`](crate::runner) is plain Rust. Each has a browser implementation (`browser`,
//! wasm32 only) and an in-memory twin ([`memory`](crate::memory)).
//!
//! Futures are boxed and not `Send`: the browser is single-threaded, and boxing keeps the
//! traits object-safe so [`Ports`] can hold `Rc<dyn …>`.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use ferry_core::backup::{BackupMetadata, Pair};
use ferry_core::lossless::LosslessString;

use crate::checkpoint::Fingerprint;
use crate::error::Error;

/// A boxed, non-`Send` future, as every async port returns.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The app's localStorage, read and written losslessly.
pub trait AppStorage {
    /// Every `(key, value)` pair, in storage order.
    fn read_all(&self) -> Result<Vec<Pair>, Error>;
    /// The pairs whose key passes `keep`, in storage order; the other values are not read.
    fn read_where(&self, keep: &dyn Fn(&LosslessString) -> bool) -> Result<Vec<Pair>, Error> {
        let mut pairs = self.read_all()?;
        pairs.retain(|(k, _)| keep(k));
        Ok(pairs)
    }
    /// Every key, without reading a value.
    fn keys(&self) -> Result<Vec<LosslessString>, Error>;
    /// Every key with the [`Fingerprint`] of its value, without bringing the value over.
    fn fingerprints(&self) -> Result<Vec<(LosslessString, Fingerprint)>, Error>;
    /// Writes one pair back, code unit for code unit.
    fn write(&self, key: &LosslessString, value: &LosslessString) -> Result<(), Error>;
    /// Removes one key.
    fn remove(&self, key: &LosslessString) -> Result<(), Error>;
}

/// One change in an atomic [`Store::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Sets a key to these bytes.
    Put(String, Vec<u8>),
    /// Removes a key (absent keys are fine).
    Delete(String),
}

/// The migrator's own durable storage (IndexedDB in the browser): checkpoint, outbox, backups.
pub trait Store {
    /// The bytes under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<Vec<u8>>, Error>>;
    /// Every key starting with `prefix`, sorted.
    fn keys<'a>(&'a self, prefix: &'a str) -> LocalFuture<'a, Result<Vec<String>, Error>>;
    /// Applies all `ops` or none of them. A full disk is [`Error::QuotaExceeded`].
    fn commit(&self, ops: Vec<StoreOp>) -> LocalFuture<'_, Result<(), Error>>;
}

/// Time.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Resolves after `ms` milliseconds.
    fn sleep(&self, ms: u64) -> LocalFuture<'_, ()>;
}

/// A secure random source.
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<(), Error>;
}

/// Which key a backup is sealed or opened with.
#[derive(Debug, Clone, Copy)]
pub enum VaultKey<'a> {
    /// The device key the vault keeps (never leaves it).
    Device,
    /// A passphrase (for exported backups).
    Passphrase(&'a str),
}

/// Seals and opens backups in the shared `ferry_core::backup` format.
pub trait Vault {
    /// Seals `pairs` into a backup file, drawing its own nonce (and salt).
    fn seal<'a>(
        &'a self,
        pairs: &'a [Pair],
        metadata: BackupMetadata,
        key: VaultKey<'a>,
    ) -> LocalFuture<'a, Result<Vec<u8>, Error>>;
    /// Opens a backup file and returns its exact pairs.
    fn open<'a>(
        &'a self,
        file: &'a [u8],
        key: VaultKey<'a>,
    ) -> LocalFuture<'a, Result<Vec<Pair>, Error>>;
}

/// One HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The absolute URL.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// The body and its content type.
    pub body: Option<(Vec<u8>, &'static str)>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Give up (and abort the request) after this many milliseconds.
    pub timeout_ms: u64,
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why no response arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The request failed on the network (or its response was lost).
    Network(String),
    /// No response within the timeout; the request was aborted.
    Timeout,
}

/// Sends HTTP requests (fetch in the browser).
pub trait Transport {
    /// Sends one request.
    fn send(&self, request: HttpRequest) -> LocalFuture<'_, Result<HttpResponse, TransportError>>;
}

/// Gives access tokens (the app's callback in the browser).
pub trait Tokens {
    /// A token; `refresh` asks for a new one because the last was refused.
    fn token(&self, refresh: bool) -> LocalFuture<'_, Result<String, Error>>;
}

/// Whether the browser is online.
pub trait Connectivity {
    /// `navigator.onLine`.
    fn is_online(&self) -> bool;
    /// Resolves when the browser comes back online.
    fn until_online(&self) -> LocalFuture<'_, ()>;
}

/// Held while a tab runs a migration; dropping it releases the lock.
pub struct LockGuard(pub Box<dyn Any>);

/// One runner across tabs.
pub trait Locks {
    /// Takes the lock `name`: waits for it when `wait`, else returns `None` at once if another
    /// holder has it.
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        wait: bool,
    ) -> LocalFuture<'a, Result<Option<LockGuard>, Error>>;
}

/// Tells other tabs how a run ended (BroadcastChannel in the browser).
pub trait Announcer {
    /// Publishes a run report (JSON).
    fn announce(&self, report_json: &str);
}

/// Every port the runner uses.
#[derive(Clone)]
pub struct Ports {
    /// The app's localStorage.
    pub app: Rc<dyn AppStorage>,
    /// The migrator's durable store.
    pub store: Rc<dyn Store>,
    /// Time.
    pub clock: Rc<dyn Clock>,
    /// Randomness.
    pub entropy: Rc<dyn Entropy>,
    /// Backup sealing.
    pub vault: Rc<dyn Vault>,
    /// HTTP.
    pub transport: Rc<dyn Transport>,
    /// Access tokens.
    pub tokens: Rc<dyn Tokens>,
    /// Online state.
    pub net: Rc<dyn Connectivity>,
    /// Cross-tab lock.
    pub locks: Rc<dyn Locks>,
    /// Cross-tab announcements.
    pub announcer: Rc<dyn Announcer>,
}
