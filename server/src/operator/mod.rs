//! After ingest: what users and operators do with a migration once its batches are in.
//!
//! - [`report`]: what the server received in a migration (the browser's verification report
//!   and the operator's `status`).
//! - [`fleet`]: every user at a glance (users by state, totals per kind, the trend per hour).
//! - [`rollback`]: every row a migration touched put back as it was before.
//! - [`purge`]: the bookkeeping of migrations verified long ago removed (`ferry-server purge`).
//! - [`conflicts`]: the `manual` policy's queue, listed and resolved.
//! - [`backups`]: the browser's sealed backups, stored opaque per user.
//! - [`quarantine`]: the records that were not migrated, read back for the operator.
//! - [`audit`]: the operator dashboard's log of actions taken.
//! - [`cli`]: the operator's subcommands over the same code.
//! - [`spec_tools`]: `spec schema`, `spec check`, `spec ddl`: writing a spec, no database.

pub mod audit;
pub mod backups;
pub mod cli;
pub mod conflicts;
pub mod fleet;
pub mod purge;
pub mod quarantine;
pub mod report;
pub mod rollback;
pub mod spec_tools;
