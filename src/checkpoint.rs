//! What the migrator keeps between runs, in its [`Store`](crate::ports::Store) (IndexedDB):
//!
//! - the *checkpoint* of the migration in flight: its id, the device, the batches still to
//!   send (in order) and those acknowledged, the next free sequence number, and the per-kind
//!   tallies (count and XOR of content hashes) the server must confirm;
//! - the *outbox*: the exact body of every batch not yet acknowledged, written before the first
//!   request leaves. A resumed run re-sends those bytes, never a rebuilt batch, so a batch whose
//!   response was lost is a harmless replay for the server and never a 409;
//! - the *migrated set*: content hashes of every record the server confirmed, and a cheap
//!   fingerprint (length and FNV-1a hash) of every migrated key, for incremental runs;
//! - the device id, and the backups with their index.
//!
//! Everything a run changes is written with one atomic [`StoreOp`] list per step.

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::lossless::LosslessString;
use ferry_core::pipeline::ContentHash;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;
use crate::ports::{Store, StoreOp};

/// Key of the device id (shared by every app in the database).
pub const DEVICE_KEY: &str = "device-id";
/// Key of the backup index.
pub const BACKUP_INDEX_KEY: &str = "backups";

/// Key of a backup file.
pub fn backup_key(id: &str) -> String {
    format!("backup/{id}")
}
/// Key of an app's checkpoint.
pub fn checkpoint_key(app: &str) -> String {
    format!("{app}/checkpoint")
}
/// Key of an outbox entry; zero-padded so keys sort in sequence order.
pub fn outbox_key(app: &str, sequence: u32) -> String {
    format!("{}{sequence:010}", outbox_prefix(app))
}
/// What every outbox key of an app starts with.
pub fn outbox_prefix(app: &str) -> String {
    format!("{app}/outbox/")
}
/// Key of the hashes shipped by the migration in flight.
pub fn plan_hashes_key(app: &str) -> String {
    format!("{app}/plan-hashes")
}
/// Key of the hashes of every migrated record.
pub fn migrated_hashes_key(app: &str) -> String {
    format!("{app}/hashes")
}
/// Key of the history (fingerprints and finished migrations).
pub fn history_key(app: &str) -> String {
    format!("{app}/history")
}

/// Count and XOR of content hashes of one kind's records, as `GET /v1/migrations/{id}` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tally {
    /// Records.
    pub received: u64,
    /// XOR of their 16-byte content hashes.
    pub checksum: [u8; 16],
}

impl Tally {
    /// Adds one record.
    pub fn add(&mut self, hash: &ContentHash) {
        self.received += 1;
        for (c, h) in self.checksum.iter_mut().zip(hash.0) {
            *c ^= h;
        }
    }
}

/// Where the migration in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Batches remain in the outbox.
    Uploading,
    /// Every batch is acknowledged; the server's tallies are not confirmed yet.
    Verifying,
}

/// Records and encoded bytes of one batch, for progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchSize {
    /// Records in the batch.
    pub records: u64,
    /// Body bytes.
    pub bytes: u64,
}

/// The state of the migration in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The migration id (the server's idempotency key with the sequence).
    pub migration_id: Uuid,
    /// This browser profile.
    pub device_id: Uuid,
    /// The spec version the batches were built with.
    pub spec_version: String,
    /// When the migration started.
    pub started_at_ms: i64,
    /// The backup taken before it.
    pub backup_id: String,
    /// Where it is.
    pub phase: Phase,
    /// Sequences still to send, in sending order (their bodies are in the outbox).
    pub pending: Vec<u32>,
    /// Sequences the server acknowledged.
    pub acked: Vec<u32>,
    /// The next unused sequence number (for 413 splits).
    pub next_sequence: u32,
    /// Size of every batch, acknowledged or pending.
    pub sizes: BTreeMap<u32, BatchSize>,
    /// Per kind, what the server must report once every batch is in.
    pub expected: BTreeMap<String, Tally>,
    /// Fingerprints of the keys this migration read (escaped key → fingerprint).
    pub fingerprints: BTreeMap<String, Fingerprint>,
}

impl Checkpoint {
    /// Records and bytes acknowledged so far, and in total.
    pub fn done_and_total(&self) -> (BatchSize, BatchSize) {
        let mut done = BatchSize::default();
        let mut total = BatchSize::default();
        for (seq, size) in &self.sizes {
            if self.acked.contains(seq) {
                done.records += size.records;
                done.bytes += size.bytes;
            }
            if self.acked.contains(seq) || self.pending.contains(seq) {
                total.records += size.records;
                total.bytes += size.bytes;
            }
        }
        (done, total)
    }
}

/// A cheap fingerprint of one localStorage value, over its UTF-16 code units: their count and
/// two 32-bit multiplicative hashes (FNV-1a and a Murmur-style mix) side by side. The browser
/// computes it in JavaScript ([`crate::browser::local`]), so an unchanged value never crosses
/// into wasm; [`Fingerprint::of_utf16`] is the same function in Rust. Equal fingerprints let an
/// incremental run skip parsing; a collision would at worst delay shipping a change until the
/// value changes again, which 64 bits over the full value make negligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Length of the value in UTF-16 code units.
    pub len: u64,
    /// The FNV-1a hash (high 32 bits) and the mixed hash (low 32 bits).
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of a value's code units.
    pub fn of_utf16(units: impl IntoIterator<Item = u16>) -> Self {
        let (mut fnv, mut mix, mut len) = (0x811c_9dc5_u32, 0x9747_b28c_u32, 0_u64);
        for unit in units {
            let c = u32::from(unit);
            fnv = (fnv ^ c).wrapping_mul(0x0100_0193);
            mix = (mix ^ c).wrapping_mul(0x5bd1_e995);
            mix ^= mix >> 15;
            len += 1;
        }
        Self::from_parts(len, fnv, mix)
    }

    /// The fingerprint of a value.
    pub fn of(value: &LosslessString) -> Self {
        Self::of_utf16(value.to_utf16())
    }

    /// Assembles a fingerprint computed elsewhere (in JavaScript).
    pub fn from_parts(len: u64, fnv: u32, mix: u32) -> Self {
        Self {
            len,
            hash: (u64::from(fnv) << 32) | u64::from(mix),
        }
    }

    /// `(length, fnv, mix)`, as JavaScript computes them: the inverse of [`Self::from_parts`].
    pub fn parts(&self) -> (u64, u32, u32) {
        let fnv = u32::try_from(self.hash >> 32).unwrap_or(u32::MAX);
        (self.len, fnv, (self.hash & 0xFFFF_FFFF) as u32)
    }
}

/// One finished migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct Finished {
    /// Its id.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "string"))]
    pub migration_id: Uuid,
    /// When it was verified.
    pub finished_at_ms: i64,
    /// Records it shipped.
    pub records: u64,
    /// The backup taken before it.
    pub backup_id: String,
}

/// What earlier, verified migrations left.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// Fingerprints of the keys as last migrated.
    pub fingerprints: BTreeMap<String, Fingerprint>,
    /// Finished migrations, oldest first.
    pub finished: Vec<Finished>,
}

/// A stored backup, as `backups()` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct BackupInfo {
    /// Its id.
    pub id: String,
    /// When it was made.
    pub created_at_ms: i64,
    /// Keys it holds.
    pub key_count: u32,
    /// UTF-16 bytes of its keys and values.
    pub byte_size: u64,
    /// Size of the sealed file.
    pub file_size: u64,
    /// The spec app.
    pub app: String,
}

/// Encodes a hash set as concatenated 16-byte hashes.
pub fn encode_hashes(hashes: &BTreeSet<ContentHash>) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// Decodes [`encode_hashes`]; a length that is not a multiple of 16 is damage.
pub fn decode_hashes(bytes: &[u8]) -> Result<BTreeSet<ContentHash>, Error> {
    if !bytes.len().is_multiple_of(16) {
        return Err(damaged(
            "the migrated-record hashes",
            "length not a multiple of 16",
        ));
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|c| {
            let mut h = [0u8; 16];
            h.copy_from_slice(c);
            ContentHash(h)
        })
        .collect())
}

fn damaged(what: &str, detail: &str) -> Error {
    Error::Storage {
        what: format!("reading {what}"),
        detail: format!("the stored value is damaged ({detail})"),
    }
}

/// Reads a JSON value from the store.
pub async fn load_json<T: for<'de> Deserialize<'de>>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, Error> {
    match store.get(key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| damaged(key, &e.to_string())),
    }
}

/// A store op writing a JSON value.
pub fn put_json<T: Serialize>(key: String, value: &T) -> Result<StoreOp, Error> {
    serde_json::to_vec(value)
        .map(|bytes| StoreOp::Put(key, bytes))
        .map_err(|e| Error::Storage {
            what: "encoding the checkpoint".to_owned(),
            detail: e.to_string(),
        })
}

/// Reads a hash set (absent is empty).
pub async fn load_hashes(store: &dyn Store, key: &str) -> Result<BTreeSet<ContentHash>, Error> {
    match store.get(key).await? {
        None => Ok(BTreeSet::new()),
        Some(bytes) => decode_hashes(&bytes),
    }
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::*;

    #[test]
    fn hash_sets_round_trip_and_damage_is_refused() {
        let set: BTreeSet<_> = [ContentHash([1; 16]), ContentHash([2; 16])].into();
        assert_eq!(decode_hashes(&encode_hashes(&set)), Ok(set));
        assert!(decode_hashes(&[0; 17]).is_err());
    }

    #[test]
    fn fingerprints_count_code_units() {
        // The JavaScript twin in src/browser/local.rs must give the same numbers:
        // tests/browser.rs checks the two against each other in Chromium.
        let f = Fingerprint::of(&LosslessString::from_unicode("ab"));
        assert_eq!(f.len, 2);
        assert_eq!(f, Fingerprint::of_utf16([0x61, 0x62]));
        assert_eq!(
            Fingerprint::of(&LosslessString::from_utf16(&[0xD800, 0])).len,
            2
        );
    }

    #[test]
    fn fingerprints_see_any_change() {
        let a = Fingerprint::of(&LosslessString::from_unicode("[1,2,3]"));
        assert_eq!(a, Fingerprint::of(&LosslessString::from_unicode("[1,2,3]")));
        assert_ne!(a, Fingerprint::of(&LosslessString::from_unicode("[1,2,4]")));
        assert_ne!(
            Fingerprint::of(&LosslessString::from_utf16(&[0xD800])),
            Fingerprint::of(&LosslessString::from_utf16(&[0xDC00]))
        );
    }

    #[test]
    fn tallies_xor_hashes() {
        let mut t = Tally::default();
        t.add(&ContentHash([0b01; 16]));
        t.add(&ContentHash([0b11; 16]));
        assert_eq!(
            t,
            Tally {
                received: 2,
                checksum: [0b10; 16]
            }
        );
    }
}
