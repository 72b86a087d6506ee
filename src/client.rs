//! The ingest server's HTTP contract (`docs/http-api.md`) over the [`Transport`] port, and the
//! retry loop that drives it: transient failures (network errors, timeouts, 5xx, 408, 429 with
//! `Retry-After`) are retried with backoff and jitter, an offline browser waits for the
//! `online` event without spending attempts, a 401 gets one fresh token, and everything else
//! becomes a typed [`Error`]. A 413 is returned to the caller, which splits the batch.
//!
//! Two kinds of failure are kept apart. A 4xx with a stable [`ErrorCode`] is the server
//! refusing *this request* and would refuse it again: it stops at once as an explained
//! [`Error::Refused`] (or a more specific variant). A network error, a timeout, a 408, a 429 or
//! a 5xx says "not now": it is retried. But the same 500 answer (same status, same body) for
//! the same request [`SAME_SERVER_FAULT_LIMIT`] times in a row is a server that fails on this
//! data, not one that is down: it stops with [`Error::ServerFault`] instead of spending the
//! rest of the retry budget (502, 503 and 504 mean "unavailable now" and are always retried).

use std::cell::{Cell, RefCell};

use ferry_core::contract::{ErrorBody, ErrorCode};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::Error;
use crate::ports::{HttpRequest, Ports, TransportError};
use crate::retry::{RetryPolicy, retry_after_ms};

pub use ferry_core::contract::{
    BatchResult, KindReport, KindTally, MigrationReport, RecordOutcome, RecordResult, VerifyRequest,
};

/// How many identical 5xx answers in a row make a request stop with [`Error::ServerFault`].
pub const SAME_SERVER_FAULT_LIMIT: u32 = 5;

/// Whether a 5xx status says the server failed on the request (rather than "unavailable
/// now", which gateways and an overloaded or database-less server answer).
fn is_server_fault(status: u16) -> bool {
    (500..=599).contains(&status) && !matches!(status, 502..=504)
}

/// The `code` and `message` of an error body (empty when the body is not our error shape).
fn error_of(body: &[u8]) -> (ErrorCode, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => (ErrorCode::Other(String::new()), String::new()),
    }
}

/// What a request came back with, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx, with the body.
    Ok(Vec<u8>),
    /// 413: the body is too large.
    TooLarge,
}

/// Statistics the run report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Times the run waited for the browser to come online.
    pub offline_waits: u64,
}

/// An HTTP client of the ingest server.
pub struct Client {
    base_url: String,
    ports: Ports,
    policy: RetryPolicy,
    token: RefCell<Option<String>>,
    stats: Cell<Stats>,
}

impl Client {
    /// A client of the server at `base_url` (no trailing slash needed).
    pub fn new(base_url: &str, ports: Ports, policy: RetryPolicy) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            ports,
            policy,
            token: RefCell::new(None),
            stats: Cell::new(Stats::default()),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    async fn token(&self, refresh: bool) -> Result<String, Error> {
        if !refresh && let Some(t) = self.token.borrow().clone() {
            return Ok(t);
        }
        let t = self.ports.tokens.token(refresh).await?;
        *self.token.borrow_mut() = Some(t.clone());
        Ok(t)
    }

    /// Sends one request with the retry policy.
    pub async fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
        headers: Vec<(String, String)>,
    ) -> Result<Answer, Error> {
        let mut attempts = 0u32;
        let mut refreshed = false;
        // The last server-fault answer (status, body) and how many times in a row it came.
        let mut same_fault: Option<((u16, Vec<u8>), u32)> = None;
        loop {
            if !self.ports.net.is_online() {
                self.bump(|s| s.offline_waits += 1);
                self.ports.net.until_online().await;
            }
            let token = self.token(false).await?;
            let request = HttpRequest {
                method,
                url: format!("{}{path}", self.base_url),
                token,
                body: body.clone(),
                headers: headers.clone(),
                timeout_ms: self.policy.timeout_ms,
            };
            self.bump(|s| s.requests += 1);
            attempts += 1;
            let (last, wait_hint) = match self.ports.transport.send(request).await {
                Err(TransportError::Network(e)) if !self.ports.net.is_online() => {
                    // Offline: not the server's fault, so it costs no attempt.
                    attempts -= 1;
                    self.bump(|s| s.offline_waits += 1);
                    self.ports.net.until_online().await;
                    let _ = e;
                    continue;
                }
                Err(TransportError::Network(e)) => (format!("network error: {e}"), None),
                Err(TransportError::Timeout) => (
                    format!("no answer within {} ms", self.policy.timeout_ms),
                    None,
                ),
                Ok(r) => match r.status {
                    200..=299 => return Ok(Answer::Ok(r.body)),
                    413 => return Ok(Answer::TooLarge),
                    401 if !refreshed => {
                        refreshed = true;
                        attempts -= 1;
                        self.token(true).await?;
                        continue;
                    }
                    429 => (
                        "429 too many requests".to_owned(),
                        r.retry_after.as_deref().and_then(retry_after_ms),
                    ),
                    status if is_server_fault(status) => {
                        let answer = (status, r.body);
                        let times = match same_fault.take() {
                            Some((last, n)) if last == answer => n + 1,
                            _ => 1,
                        };
                        if times >= SAME_SERVER_FAULT_LIMIT {
                            let (code, message) = error_of(&answer.1);
                            return Err(Error::ServerFault {
                                path: path.to_owned(),
                                status,
                                code,
                                message,
                                times,
                            });
                        }
                        same_fault = Some((answer, times));
                        (format!("HTTP {status}"), None)
                    }
                    408 | 500..=599 => (format!("HTTP {}", r.status), None),
                    status => return Err(refusal(path, status, &r.body)),
                },
            };
            if attempts >= self.policy.max_attempts {
                return Err(Error::Unavailable {
                    path: path.to_owned(),
                    attempts,
                    last,
                });
            }
            let delay = match wait_hint {
                Some(ms) => ms,
                None => {
                    let mut r = [0u8; 8];
                    self.ports.entropy.fill(&mut r)?;
                    self.policy.delay_ms(attempts, u64::from_le_bytes(r))
                }
            };
            self.bump(|s| s.retries += 1);
            self.ports.clock.sleep(delay).await;
        }
    }

    /// `POST /v1/migrations/{id}/verify`: asks the server to check `sent` against its own
    /// tallies and, when they match, to mark the migration verified (idempotent).
    pub async fn verify_migration(
        &self,
        id: Uuid,
        sent: &VerifyRequest,
    ) -> Result<MigrationReport, Error> {
        let path = format!("/v1/migrations/{id}/verify");
        let body = serde_json::to_vec(sent).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let a = self
            .request("POST", &path, Some((body, "application/json")), Vec::new())
            .await?;
        let b = self.expect_ok(&path, a)?;
        Self::json(&path, &b)
    }

    fn json<T: for<'de> Deserialize<'de>>(path: &str, body: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(body).map_err(|e| Error::Protocol {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// `POST /v1/batches`: `None` when the server answers 413.
    pub async fn send_batch(&self, body: Vec<u8>) -> Result<Option<BatchResult>, Error> {
        let path = "/v1/batches";
        match self
            .request("POST", path, Some((body, "application/json")), Vec::new())
            .await?
        {
            Answer::Ok(b) => Self::json(path, &b).map(Some),
            Answer::TooLarge => Ok(None),
        }
    }

    /// `GET /v1/migrations/{id}`.
    pub async fn migration_report(&self, id: Uuid) -> Result<MigrationReport, Error> {
        let path = format!("/v1/migrations/{id}");
        let b = self.expect_ok(&path, self.request("GET", &path, None, Vec::new()).await?)?;
        Self::json(&path, &b)
    }

    /// `POST /v1/backups` with a sealed backup file.
    pub async fn upload_backup(&self, id: &str, file: Vec<u8>) -> Result<(), Error> {
        let path = "/v1/backups";
        let headers = vec![("X-Ferry-Backup-Id".to_owned(), id.to_owned())];
        let a = self
            .request(
                "POST",
                path,
                Some((file, "application/octet-stream")),
                headers,
            )
            .await?;
        self.expect_ok(path, a).map(|_| ())
    }

    /// Any JSON endpoint (conflicts, resolve, rollback): the JSON answer, untyped.
    pub async fn json_call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let body = match body {
            Some(v) => Some((
                serde_json::to_vec(v).map_err(|e| Error::InvalidArgument(e.to_string()))?,
                "application/json",
            )),
            None => None,
        };
        let b = self.expect_ok(path, self.request(method, path, body, Vec::new()).await?)?;
        Self::json(path, &b)
    }

    fn expect_ok(&self, path: &str, a: Answer) -> Result<Vec<u8>, Error> {
        match a {
            Answer::Ok(b) => Ok(b),
            Answer::TooLarge => Err(Error::Refused {
                path: path.to_owned(),
                status: 413,
                code: ErrorCode::PayloadTooLarge,
                message: "the request body is larger than the server accepts".to_owned(),
            }),
        }
    }
}

/// The error a final (4xx) answer becomes: a specific variant where the runner reacts to it,
/// else [`Error::Refused`] with the server's code and message.
fn refusal(path: &str, status: u16, body: &[u8]) -> Error {
    let (code, message) = error_of(body);
    match (status, code) {
        (401, _) => Error::Unauthorized {
            path: path.to_owned(),
            message,
        },
        (409, ErrorCode::MigrationRolledBack) => Error::MigrationRolledBack {
            path: path.to_owned(),
            message,
        },
        (409, ErrorCode::IdempotencyConflict) => Error::IdempotencyConflict { message },
        (400, ErrorCode::SpecMismatch) => Error::SpecMismatch { message },
        (status, code) => Error::Refused {
            path: path.to_owned(),
            status,
            code,
            message,
        },
    }
}
