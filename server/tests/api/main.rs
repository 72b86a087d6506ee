//! Integration tests of the ingest server: each starts the real server (port 0) over a fresh
//! database in a per-binary PostgreSQL cluster; see `helpers.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking, with the value in the message"
)]

mod admin;
mod auth;
#[path = "../support/balancer.rs"]
mod balancer;
mod binary;
mod compression;
mod cors;
mod dev_sample;
mod embedded_pg;
mod errors;
mod faults;
mod health;
mod helpers;
mod hostile;
mod http_edge;
mod idp;
mod ingest;
mod inputs;
mod layouts;
mod observability;
mod operations;
mod pgbouncer;
mod purge;
mod races;
mod refusals;
mod run_status;
mod scaling;
mod schema_check;
mod schema_migrations;
mod security;
mod spec_infer;
mod spec_tools;
mod static_files;
mod versions;
