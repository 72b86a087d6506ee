//! Ferry's browser migrator, compiled to WebAssembly: reads an app's localStorage losslessly,
//! backs it up, and ships it to the ingest server exactly once, resumably, one tab at a time.
//!
//! The crate is split so that nearly all of it runs under plain `cargo test`:
//!
//! - [`ports`]: the small traits behind which the browser sits (localStorage, IndexedDB, clock,
//!   randomness, WebCrypto, fetch, connectivity, locks, cross-tab announcements).
//! - `memory` (native only): an in-memory twin of every port, and a fake ingest server, for tests.
//! - [`runner`]: the orchestration: inspect, validate, back up, plan batches, upload with
//!   retries and 413 splits, checkpoint, verify, clean up. Plain Rust over the ports.
//! - [`client`]: the HTTP contract of `docs/http-api.md` and the retry policy that drives it.
//! - [`checkpoint`]: what is persisted between runs (checkpoint, outbox, migrated hashes).
//! - [`retry`] and [`progress`]: backoff with jitter, and progress with ETA; pure functions.
//! - [`error`]: one error enum whose messages say what to do.
//! - `browser` and `facade` (wasm32 only): the browser implementations of the ports and the
//!   `#[wasm_bindgen]` API JavaScript sees.

pub mod checkpoint;
pub mod client;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod memory;
pub mod ports;
pub mod progress;
pub mod retry;
pub mod runner;

#[cfg(target_arch = "wasm32")]
pub mod browser;
#[cfg(target_arch = "wasm32")]
pub mod facade;

pub use error::Error;
