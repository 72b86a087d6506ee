//! Ferry's shared record engine: what the browser migrator and the ingest server must agree on.
//!
//! Both sides build this crate: the browser (as `wasm32-unknown-unknown`) and the server
//! (natively). It does no I/O: no clock, no randomness, no storage, no network. Whatever it
//! needs from the outside world (the current time, random bytes, the localStorage pairs) is
//! passed in by the caller, so every function here is deterministic and tested with plain
//! `cargo test`.
//!
//! - [`lossless`]: how a JavaScript string (UTF-16, lone surrogates and NUL included) is carried
//!   exactly through Rust, JSON, the backup and PostgreSQL.
//! - [`spec`]: the declarative migration spec an app team writes, parsed into a checked [`spec::Spec`].
//! - [`pipeline`]: inventory, parse, validate and transform raw `(key, value)` pairs into
//!   record outcomes.
//! - [`timestamp`]: ISO 8601 and epoch timestamps.
//! - [`wire`]: the versioned batch format and the batch builder.
//! - [`contract`]: every other body of the HTTP API (answers, outcomes, conflict choices,
//!   the error body and its codes), shared by the browser and the server.
//! - [`backup`]: the versioned, encrypted backup envelope.

pub mod backup;
pub mod contract;
pub mod infer;
pub mod lossless;
pub mod pipeline;
pub mod spec;
pub mod timestamp;
pub mod wire;
