//! The versioned, encrypted backup envelope: the exact localStorage snapshot Ferry takes before
//! it migrates anything, so the user can always go back.
//!
//! A backup holds the migrated `(key, value)` pairs, in order, as [`LosslessString`]s (so lone
//! surrogates, NUL and U+FFFF survive), compressed with raw DEFLATE, checksummed with SHA-256
//! and sealed with AES-256-GCM. Its header (dates, sizes, key count, how the key is made) stays
//! readable without the key, so a backup list can show it, and is authenticated as the GCM
//! additional data, so nobody can change it unnoticed.
//!
//! The key is either derived from a passphrase (PBKDF2-HMAC-SHA256, at least
//! [`MIN_PBKDF2_ITERATIONS`], random 16-byte salt) or a random 256-bit device key named by a key
//! id. Like the rest of this crate, the module draws no random bytes and reads no clock: the
//! nonce, the salt, the device key and the creation time come from the caller.
//!
//! # Two ways to use it
//!
//! [`seal`] and [`open`] do everything with RustCrypto (a native restore tool uses these). The
//! browser may prefer WebCrypto for PBKDF2 and AES-GCM, so the steps are exposed too:
//!
//! - sealing: [`prepare`] gives the header bytes (the GCM additional data) and the plaintext;
//!   the caller encrypts the plaintext (AES-256-GCM, the header's nonce, the header bytes as
//!   additional data, 128-bit tag appended as WebCrypto does) and [`assemble`]s the file;
//! - opening: [`parse`] splits a file into header, additional data and ciphertext; the caller
//!   derives the key (from [`KeySource`]), decrypts, and [`decode_plaintext`] checks the
//!   checksum and returns the pairs. [`read_header`] lists a backup without any key.
//!
//! # Byte layout (format version 1)
//!
//! All integers are little-endian; a *string* is a `u16` byte length then that many UTF-8 bytes.
//!
//! | Offset | Size | Field |
//! |-------:|-----:|-------|
//! | 0      | 8    | magic, ASCII `FERRYBAK` ([`MAGIC`]) |
//! | 8      | 2    | format version, `u16` = 1 ([`FORMAT_VERSION`]) |
//! | 10     | 8    | created at, `u64` milliseconds since the Unix epoch (caller's clock) |
//! | 18     | 4    | key count, `u32`: number of pairs |
//! | 22     | 8    | byte size, `u64`: UTF-16 bytes of all keys and values (see [`utf16_byte_size`]) |
//! | 30     | 12   | AES-GCM nonce |
//! | 42     | 8    | ciphertext length `C`, `u64`, GCM tag included |
//! | 50     | 1    | key source: `1` passphrase, `2` device key |
//! | 51     | 20   | if passphrase: PBKDF2 iterations `u32`, then the 16-byte salt |
//! | 51     | 2+n  | if device key: key id, string |
//! | …      | 2+n  | backup id, string |
//! | …      | 2+n  | origin, string |
//! | …      | 2+n  | spec app, string |
//! | …      | 2+n  | spec version, string |
//! | `H`    | `C`  | AES-256-GCM ciphertext of the payload, then the 16-byte tag |
//!
//! Bytes `0..H` are the *header*, and exactly the GCM additional data. The file ends at `H + C`:
//! shorter is truncated, longer has trailing bytes, both refused before any decryption.
//!
//! The *payload* (the GCM plaintext):
//!
//! | Offset | Size | Field |
//! |-------:|-----:|-------|
//! | 0      | 8    | snapshot length `S`, `u64` |
//! | 8      | 32   | SHA-256 of the snapshot |
//! | 40     | …    | the snapshot, as one raw DEFLATE stream (RFC 1951, no zlib wrapper) |
//!
//! The *snapshot* is the pairs in order, each as key then value, each as a `u32` byte length then
//! the escaped form (UTF-8) of the [`LosslessString`]; there are exactly *key count* pairs and
//! nothing after them. `S` may not exceed what the header's key count and byte size allow (7
//! UTF-8 bytes per UTF-16 code unit at most, plus 8 bytes of lengths per pair), nor
//! [`MAX_SNAPSHOT_LEN`], so a hostile or broken file cannot make the reader allocate without
//! bound.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use sha2::{Digest, Sha256};

use crate::lossless::LosslessString;

/// The first eight bytes of every backup file.
pub const MAGIC: [u8; 8] = *b"FERRYBAK";

/// The format version this module writes and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;

/// The fewest PBKDF2-HMAC-SHA256 iterations accepted when sealing or opening (OWASP's 2023
/// recommendation for this hash).
pub const MIN_PBKDF2_ITERATIONS: u32 = 600_000;

/// The most PBKDF2 iterations accepted: a header claiming more is refused rather than keeping
/// the opener busy for minutes (the header is only authenticated *after* the key is derived).
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Length of an AES-256 key, derived or device, in bytes.
pub const KEY_LEN: usize = 32;

/// Length of the AES-GCM nonce, in bytes (96 bits, the size GCM is designed for).
pub const NONCE_LEN: usize = 12;

/// Length of the PBKDF2 salt, in bytes.
pub const SALT_LEN: usize = 16;

/// Length of the AES-GCM authentication tag appended to the ciphertext, in bytes.
pub const TAG_LEN: usize = 16;

/// The largest snapshot (uncompressed) this module writes or reads: 1 GiB, far beyond any
/// browser's localStorage quota.
pub const MAX_SNAPSHOT_LEN: u64 = 1 << 30;

/// The DEFLATE level used when sealing. Level 1 (the fastest) because the backup is made in the
/// browser right before the migration, where time is what the user sees: on JSON-like
/// localStorage data it is about eight times faster than the default level 6 and still shrinks
/// the snapshot about fivefold (level 6: sevenfold). Readers accept any level.
pub const COMPRESSION_LEVEL: u8 = 1;

/// The longest header string (ids, origin, spec names), in UTF-8 bytes.
pub const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// The prefixes of the localStorage keys Ferry itself writes (the cross-tab lease of browsers
/// without Web Locks, the light loader's stamp): never part of a backup, never restored.
pub const OWN_KEY_PREFIXES: &[&str] = &[LEASE_KEY_PREFIX, "ferry-stamp:"];

/// The prefix of the lease keys (`ferry-lease:<name>`) that stand in for Web Locks.
pub const LEASE_KEY_PREFIX: &str = "ferry-lease:";

/// Whether a localStorage key belongs in a backup of `spec`'s app: every key of the origin
/// but Ferry's own ([`OWN_KEY_PREFIXES`]), so that a restore gives back the app as it was,
/// keys no kind reads included; or, when the spec narrows it (`backup.prefixes`), the keys
/// under those prefixes, every key a kind reads (index keys included) and the keys it ignores
/// (the app's volatile UI state is still the app's).
pub fn in_scope(spec: &crate::spec::Spec, key: &str) -> bool {
    if OWN_KEY_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return false;
    }
    match &spec.backup_prefixes {
        None => true,
        Some(prefixes) => {
            prefixes.iter().any(|p| key.starts_with(p.as_str()))
                || !spec.kinds_needing_key(key).is_empty()
                || spec.ignores(key)
        }
    }
}

const KEY_SOURCE_PASSPHRASE: u8 = 1;
const KEY_SOURCE_DEVICE: u8 = 2;
const CHECKSUM_LEN: usize = 32;
/// Snapshot length and checksum, in front of the DEFLATE stream.
const PAYLOAD_PREFIX_LEN: usize = 8 + CHECKSUM_LEN;
/// The shortest possible ciphertext: a payload prefix and a one-byte DEFLATE stream, plus the tag.
const MIN_CIPHERTEXT_LEN: u64 = (PAYLOAD_PREFIX_LEN + 1 + TAG_LEN) as u64;
/// Worst case of UTF-8 bytes in the escaped form per UTF-16 code unit: U+FFFF (3) + 4 digits.
const MAX_ESCAPED_BYTES_PER_UNIT: u64 = 7;
/// The two `u32` lengths in front of each pair in the snapshot.
const PAIR_OVERHEAD: u64 = 8;

/// One localStorage entry: key and value, in escaped form.
pub type Pair = (LosslessString, LosslessString);

/// What the caller says about a backup; stored in the clear (but authenticated) in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupMetadata {
    /// An identifier chosen by the caller (for example a UUID), shown when listing backups.
    pub backup_id: String,
    /// When the backup was made, in milliseconds since the Unix epoch (`Date.now()`).
    pub created_at_ms: u64,
    /// The web origin whose localStorage was backed up, e.g. `https://app.example.com`.
    pub origin: String,
    /// The `app` of the migration spec the backup was taken for.
    pub spec_app: String,
    /// The version of that migration spec.
    pub spec_version: String,
}

/// How the AES key of a backup is obtained; stored in the header, holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// PBKDF2-HMAC-SHA256 of the passphrase's UTF-8 bytes (see [`derive_passphrase_key`]).
    Passphrase {
        /// The random salt, fresh for every backup.
        salt: [u8; SALT_LEN],
        /// PBKDF2 iterations, between [`MIN_PBKDF2_ITERATIONS`] and [`MAX_PBKDF2_ITERATIONS`].
        iterations: u32,
    },
    /// A random 256-bit key kept on the device, used directly as the AES key.
    DeviceKey {
        /// Names the key so the opener can find it; not secret.
        key_id: String,
    },
}

/// The clear, authenticated header of a backup: everything but the snapshot itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHeader {
    /// What the caller said about the backup.
    pub metadata: BackupMetadata,
    /// Number of `(key, value)` pairs in the snapshot.
    pub key_count: u32,
    /// UTF-16 bytes of all keys and values (see [`utf16_byte_size`]).
    pub byte_size: u64,
    /// The AES-GCM nonce of this backup.
    pub nonce: [u8; NONCE_LEN],
    /// Length of the ciphertext that follows the header, GCM tag included.
    pub ciphertext_len: u64,
    /// How the AES key is obtained.
    pub key_source: KeySource,
}

/// The secret a backup is sealed with, and the random bytes that go with it.
pub enum SealingKey<'a> {
    /// Derive the key from a passphrase.
    Passphrase {
        /// The user's passphrase; must not be empty.
        passphrase: &'a str,
        /// A fresh random salt (for example from `crypto.getRandomValues`).
        salt: [u8; SALT_LEN],
        /// PBKDF2 iterations; at least [`MIN_PBKDF2_ITERATIONS`].
        iterations: u32,
    },
    /// Use a random 256-bit key kept on the device.
    DeviceKey {
        /// Names the key in the header, so it can be found again when opening.
        key_id: &'a str,
        /// The key itself.
        key: &'a [u8; KEY_LEN],
    },
}

/// The secret a backup is opened with; the salt and iterations come from the header.
pub enum OpeningKey<'a> {
    /// The passphrase the backup was sealed with.
    Passphrase(&'a str),
    /// The device key the backup was sealed with, and its id (checked against the header).
    DeviceKey {
        /// The id the key is known by; must match the header's.
        key_id: &'a str,
        /// The key itself.
        key: &'a [u8; KEY_LEN],
    },
}

/// A backup ready to be encrypted by the caller: the first half of sealing (see [`prepare`]).
#[must_use]
pub struct PreparedBackup {
    /// The header as it will be written.
    pub header: BackupHeader,
    /// The encoded header: the start of the file and the GCM additional data.
    pub aad: Vec<u8>,
    /// The payload to encrypt (compressed snapshot with its length and checksum). Secret.
    pub plaintext: Vec<u8>,
}

/// A backup file split into its parts, before decryption (see [`parse`]).
#[derive(Debug)]
pub struct ParsedBackup<'a> {
    /// The decoded header.
    pub header: BackupHeader,
    /// The header bytes: the GCM additional data.
    pub aad: &'a [u8],
    /// The ciphertext with the 16-byte GCM tag at its end.
    pub ciphertext: &'a [u8],
}

/// A backup that was opened and fully checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct OpenedBackup {
    /// The header.
    pub header: BackupHeader,
    /// The snapshot: exactly the pairs that were sealed, in order.
    pub pairs: Vec<Pair>,
}

/// Why a backup could not be sealed or opened. Opening never returns partial data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file does not start with [`MAGIC`].
    #[error(
        "this file is not a Ferry backup (it does not start with the Ferry backup signature): choose the .ferry backup file itself"
    )]
    NotABackup,
    /// The file is a Ferry backup of a format version this code does not read.
    #[error(
        "this backup uses format version {found}, but this version of Ferry reads only version {FORMAT_VERSION}: update Ferry to restore it"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
    },
    /// The file ends before the length its header declares.
    #[error(
        "the backup file is cut short ({len} bytes, but at least {needed} are needed): it was probably not completely downloaded or copied; use a complete copy"
    )]
    Truncated {
        /// Length of the file.
        len: u64,
        /// Length it needs at least.
        needed: u64,
    },
    /// The file goes on after the length its header declares.
    #[error(
        "the backup file has {extra} unexpected bytes after its end (it should be {expected} bytes long): it was altered or joined with other data; use an unaltered copy"
    )]
    TrailingBytes {
        /// The length the header declares.
        expected: u64,
        /// How many bytes follow it.
        extra: u64,
    },
    /// The header cannot be decoded (or, when sealing, encoded).
    #[error("the backup header is damaged ({reason}): use an unaltered copy of the backup")]
    MalformedHeader {
        /// What is wrong with it.
        reason: String,
    },
    /// Fewer PBKDF2 iterations than [`MIN_PBKDF2_ITERATIONS`].
    #[error(
        "the passphrase key would use only {iterations} PBKDF2 iterations, fewer than the required {MIN_PBKDF2_ITERATIONS}: refusing such an easily guessed key (the backup was not made by Ferry, or was altered)"
    )]
    TooFewIterations {
        /// The iterations asked for.
        iterations: u32,
    },
    /// More PBKDF2 iterations than [`MAX_PBKDF2_ITERATIONS`].
    #[error(
        "the passphrase key would use {iterations} PBKDF2 iterations, more than the {MAX_PBKDF2_ITERATIONS} Ferry allows: refusing to spend that long (the backup was not made by Ferry, or was altered)"
    )]
    TooManyIterations {
        /// The iterations asked for.
        iterations: u32,
    },
    /// Sealing with an empty passphrase.
    #[error("the passphrase is empty: choose a passphrase to protect the backup")]
    EmptyPassphrase,
    /// A random input (nonce, salt or device key) is all zero bytes: the caller forgot to fill it.
    #[error(
        "the {what} is all zero bytes, so it was not drawn at random: this is a bug in the caller, which must fill it from a secure random source"
    )]
    NotRandom {
        /// Which input: "nonce", "salt" or "device key".
        what: &'static str,
    },
    /// A header string is longer than [`MAX_FIELD_LEN`] bytes.
    #[error(
        "the backup's {field} is {len} bytes long, more than the {MAX_FIELD_LEN} allowed: shorten it"
    )]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in UTF-8 bytes.
        len: usize,
    },
    /// The snapshot to seal is larger than [`MAX_SNAPSHOT_LEN`].
    #[error(
        "the data to back up takes {len} bytes, more than the {MAX_SNAPSHOT_LEN} a backup may hold: no browser's localStorage holds that much, so check what is being backed up"
    )]
    SnapshotTooLarge {
        /// Its encoded length (or a lower bound of it).
        len: u64,
    },
    /// The kind of key given does not match how the backup was sealed.
    #[error(
        "this backup is protected by a {sealed_with}, but a {given} was given: open it with its {sealed_with}"
    )]
    WrongKeyKind {
        /// "passphrase" or "device key".
        sealed_with: &'static str,
        /// "passphrase" or "device key".
        given: &'static str,
    },
    /// The device key given is not the one the backup names.
    #[error(
        "this backup was sealed with device key {sealed_with:?}, but key {given:?} was given: open it on the device (or with the key) it was made with"
    )]
    WrongDeviceKey {
        /// The key id in the header.
        sealed_with: String,
        /// The key id given.
        given: String,
    },
    /// AES-GCM authentication failed.
    #[error(
        "wrong passphrase or key, or the backup was modified: check the passphrase and try again; if it is right, this copy of the backup is damaged, so use another copy"
    )]
    WrongKeyOrModified,
    /// The decrypted snapshot does not match its SHA-256 checksum.
    #[error(
        "the backup's contents do not match their checksum although the encryption seal is intact: the tool that wrote or decrypted it is faulty; please report this"
    )]
    ChecksumMismatch,
    /// The snapshot would decompress to more than the header allows.
    #[error(
        "the backup's contents would decompress to more than the {limit} bytes its header allows: refusing it (it was made by a faulty or hostile tool)"
    )]
    OversizedContents {
        /// The most bytes allowed.
        limit: u64,
    },
    /// The decrypted payload is not what the format says it must be.
    #[error(
        "the backup's contents are inconsistent ({reason}) although the encryption seal is intact: the tool that wrote or decrypted it is faulty; please report this"
    )]
    CorruptContents {
        /// What is wrong.
        reason: String,
    },
    /// In the step-by-step API, the ciphertext handed to [`assemble`] has the wrong length.
    #[error(
        "the ciphertext is {actual} bytes but the header declares {declared}: it must be the AES-GCM output for this header's plaintext, with the 16-byte tag appended"
    )]
    CiphertextLengthMismatch {
        /// What the header declares.
        declared: u64,
        /// What was given.
        actual: u64,
    },
}

impl fmt::Debug for SealingKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase {
                salt, iterations, ..
            } => f
                .debug_struct("Passphrase")
                .field("passphrase", &"<redacted>")
                .field("salt", salt)
                .field("iterations", iterations)
                .finish(),
            Self::DeviceKey { key_id, .. } => f
                .debug_struct("DeviceKey")
                .field("key_id", key_id)
                .field("key", &"<redacted>")
                .finish(),
        }
    }
}

impl fmt::Debug for OpeningKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase(_) => f.debug_tuple("Passphrase").field(&"<redacted>").finish(),
            Self::DeviceKey { key_id, .. } => f
                .debug_struct("DeviceKey")
                .field("key_id", key_id)
                .field("key", &"<redacted>")
                .finish(),
        }
    }
}

impl fmt::Debug for PreparedBackup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedBackup")
            .field("header", &self.header)
            .field("aad_len", &self.aad.len())
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

impl KeySource {
    fn kind(&self) -> &'static str {
        match self {
            Self::Passphrase { .. } => "passphrase",
            Self::DeviceKey { .. } => "device key",
        }
    }
}

impl OpeningKey<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Passphrase(_) => "passphrase",
            Self::DeviceKey { .. } => "device key",
        }
    }
}

impl BackupHeader {
    /// Encodes the header as it starts the file (and as the GCM additional data). Fails when a
    /// string is too long or the key source is out of bounds.
    pub fn encode(&self) -> Result<Vec<u8>, BackupError> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.metadata.created_at_ms.to_le_bytes());
        out.extend_from_slice(&self.key_count.to_le_bytes());
        out.extend_from_slice(&self.byte_size.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext_len.to_le_bytes());
        match &self.key_source {
            KeySource::Passphrase { salt, iterations } => {
                check_iterations(*iterations)?;
                out.push(KEY_SOURCE_PASSPHRASE);
                out.extend_from_slice(&iterations.to_le_bytes());
                out.extend_from_slice(salt);
            }
            KeySource::DeviceKey { key_id } => {
                out.push(KEY_SOURCE_DEVICE);
                put_string(&mut out, "key id", key_id)?;
            }
        }
        let m = &self.metadata;
        put_string(&mut out, "backup id", &m.backup_id)?;
        put_string(&mut out, "origin", &m.origin)?;
        put_string(&mut out, "spec app", &m.spec_app)?;
        put_string(&mut out, "spec version", &m.spec_version)?;
        Ok(out)
    }
}

/// The byte size recorded in a backup header: the UTF-16 bytes of all keys and values, i.e.
/// twice the sum of their JavaScript `length`s (the measure localStorage quotas are stated in).
#[must_use]
pub fn utf16_byte_size(pairs: &[Pair]) -> u64 {
    pairs
        .iter()
        .map(|(k, v)| 2 * (k.utf16_len() as u64 + v.utf16_len() as u64))
        .fold(0, u64::saturating_add)
}

/// Derives the AES-256 key from a passphrase: PBKDF2-HMAC-SHA256 over the passphrase's UTF-8
/// bytes, giving 32 bytes (WebCrypto: `deriveBits({name: "PBKDF2", hash: "SHA-256", salt,
/// iterations}, key, 256)`). Refuses iterations outside
/// [`MIN_PBKDF2_ITERATIONS`]..=[`MAX_PBKDF2_ITERATIONS`].
pub fn derive_passphrase_key(
    passphrase: &str,
    salt: &[u8; SALT_LEN],
    iterations: u32,
) -> Result<[u8; KEY_LEN], BackupError> {
    check_iterations(iterations)?;
    let mut key = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(passphrase.as_bytes(), salt, iterations, &mut key);
    Ok(key)
}

/// First step of sealing: encodes, checksums and compresses the snapshot and builds the header
/// for it. The caller then encrypts [`PreparedBackup::plaintext`] with AES-256-GCM under the
/// key of `key_source`, `nonce` and [`PreparedBackup::aad`] as additional data, and passes the
/// result (tag appended) to [`assemble`].
pub fn prepare(
    pairs: &[Pair],
    metadata: BackupMetadata,
    key_source: KeySource,
    nonce: [u8; NONCE_LEN],
) -> Result<PreparedBackup, BackupError> {
    check_random("nonce", &nonce)?;
    if let KeySource::Passphrase { salt, .. } = &key_source {
        check_random("salt", salt)?;
    }
    let plaintext = compress_snapshot(pairs)?;
    let key_count = u32::try_from(pairs.len()).map_err(|_| BackupError::SnapshotTooLarge {
        len: pairs.len() as u64,
    })?;
    let header = BackupHeader {
        metadata,
        key_count,
        byte_size: utf16_byte_size(pairs),
        nonce,
        ciphertext_len: (plaintext.len() + TAG_LEN) as u64,
        key_source,
    };
    let aad = header.encode()?;
    Ok(PreparedBackup {
        header,
        aad,
        plaintext,
    })
}

/// Last step of sealing: the file is the header bytes followed by the ciphertext (with its
/// 16-byte tag appended, as WebCrypto returns it). Checks that the header decodes and that the
/// ciphertext has the length it declares.
pub fn assemble(aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, BackupError> {
    assemble_with(aad, ciphertext.len(), |out| out.copy_from_slice(ciphertext))
}

/// [`assemble`] for a ciphertext held elsewhere (the browser's, in JavaScript): `write` fills
/// the file's last `ciphertext_len` bytes with it, so it is copied once, into the file.
pub fn assemble_with(
    aad: &[u8],
    ciphertext_len: usize,
    write: impl FnOnce(&mut [u8]),
) -> Result<Vec<u8>, BackupError> {
    let (header, header_len) = decode_header(aad)?;
    if header_len != aad.len() {
        return Err(BackupError::MalformedHeader {
            reason: format!(
                "{} bytes after the header's end",
                aad.len().saturating_sub(header_len)
            ),
        });
    }
    let actual = ciphertext_len as u64;
    if actual != header.ciphertext_len {
        return Err(BackupError::CiphertextLengthMismatch {
            declared: header.ciphertext_len,
            actual,
        });
    }
    let mut file = vec![0; aad.len() + ciphertext_len];
    file[..aad.len()].copy_from_slice(aad);
    write(&mut file[aad.len()..]);
    Ok(file)
}

/// First step of opening: checks the magic, version, header and exact file length, and splits
/// the file into header, additional data and ciphertext. Needs no key.
pub fn parse(file: &[u8]) -> Result<ParsedBackup<'_>, BackupError> {
    let (header, header_len) = decode_header(file)?;
    let expected = (header_len as u64)
        .checked_add(header.ciphertext_len)
        .ok_or_else(|| BackupError::MalformedHeader {
            reason: format!("impossible ciphertext length {}", header.ciphertext_len),
        })?;
    let len = file.len() as u64;
    if len < expected {
        return Err(BackupError::Truncated {
            len,
            needed: expected,
        });
    }
    if len > expected {
        return Err(BackupError::TrailingBytes {
            expected,
            extra: len - expected,
        });
    }
    let (aad, ciphertext) = file.split_at(header_len);
    Ok(ParsedBackup {
        header,
        aad,
        ciphertext,
    })
}

/// Reads a backup's header without any key, for listing backups (date, size, key count). The
/// whole file is checked as by [`parse`]; the header is authenticated only when opening.
pub fn read_header(file: &[u8]) -> Result<BackupHeader, BackupError> {
    parse(file).map(|parsed| parsed.header)
}

/// Last step of opening: checks a decrypted payload against its header (length bound,
/// decompression, checksum, key count, byte size) and returns the pairs.
pub fn decode_plaintext(header: &BackupHeader, plaintext: &[u8]) -> Result<Vec<Pair>, BackupError> {
    let mut reader = Reader::new(plaintext);
    let (Some(snapshot_len), Some(checksum)) = (reader.u64(), reader.array::<CHECKSUM_LEN>())
    else {
        return Err(corrupt(format!(
            "the payload is {} bytes, shorter than its {PAYLOAD_PREFIX_LEN}-byte prefix",
            plaintext.len()
        )));
    };
    let limit = snapshot_limit(header.key_count, header.byte_size);
    if snapshot_len > limit {
        return Err(BackupError::OversizedContents { limit });
    }
    let snapshot = inflate_exact(reader.rest(), snapshot_len)?;
    if Sha256::digest(&snapshot).as_slice() != checksum.as_slice() {
        return Err(BackupError::ChecksumMismatch);
    }
    let pairs = decode_snapshot(&snapshot, header.key_count)?;
    let byte_size = utf16_byte_size(&pairs);
    if byte_size != header.byte_size {
        return Err(corrupt(format!(
            "the pairs hold {byte_size} UTF-16 bytes but the header says {}",
            header.byte_size
        )));
    }
    Ok(pairs)
}

/// The AES key for opening a backup with `key`: derives it for a passphrase (with the header's
/// salt and iterations), or checks the device key's id. For callers doing their own decryption.
pub fn opening_key_bytes(
    header: &BackupHeader,
    key: &OpeningKey<'_>,
) -> Result<[u8; KEY_LEN], BackupError> {
    match (&header.key_source, key) {
        (KeySource::Passphrase { salt, iterations }, OpeningKey::Passphrase(passphrase)) => {
            derive_passphrase_key(passphrase, salt, *iterations)
        }
        (KeySource::DeviceKey { key_id }, OpeningKey::DeviceKey { key_id: given, key }) => {
            if key_id != given {
                return Err(BackupError::WrongDeviceKey {
                    sealed_with: key_id.clone(),
                    given: (*given).to_owned(),
                });
            }
            Ok(**key)
        }
        (source, key) => Err(BackupError::WrongKeyKind {
            sealed_with: source.kind(),
            given: key.kind(),
        }),
    }
}

/// Seals a snapshot into a backup file with RustCrypto: [`prepare`], AES-256-GCM, [`assemble`].
/// `nonce` (and the salt, for a passphrase) must be fresh random bytes for every backup.
pub fn seal(
    pairs: &[Pair],
    metadata: BackupMetadata,
    key: &SealingKey<'_>,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, BackupError> {
    let (key_source, key_bytes) = match key {
        SealingKey::Passphrase {
            passphrase,
            salt,
            iterations,
        } => {
            if passphrase.is_empty() {
                return Err(BackupError::EmptyPassphrase);
            }
            // Check the cheap things before spending the key derivation.
            check_iterations(*iterations)?;
            check_random("salt", salt)?;
            let key_bytes = derive_passphrase_key(passphrase, salt, *iterations)?;
            let source = KeySource::Passphrase {
                salt: *salt,
                iterations: *iterations,
            };
            (source, key_bytes)
        }
        SealingKey::DeviceKey { key_id, key } => {
            check_random("device key", *key)?;
            let source = KeySource::DeviceKey {
                key_id: (*key_id).to_owned(),
            };
            (source, **key)
        }
    };
    let prepared = prepare(pairs, metadata, key_source, nonce)?;
    let ciphertext = Aes256Gcm::new((&key_bytes).into())
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: &prepared.plaintext,
                aad: &prepared.aad,
            },
        )
        // AES-GCM only refuses plaintexts beyond 64 GiB, which `prepare` already refused.
        .map_err(|_| BackupError::SnapshotTooLarge {
            len: prepared.plaintext.len() as u64,
        })?;
    let mut file = prepared.aad;
    file.extend_from_slice(&ciphertext);
    Ok(file)
}

/// Opens a backup file with RustCrypto: [`parse`], key derivation, AES-256-GCM, and
/// [`decode_plaintext`]. Returns the exact pairs that were sealed, or an error; never part of
/// them.
pub fn open(file: &[u8], key: &OpeningKey<'_>) -> Result<OpenedBackup, BackupError> {
    let parsed = parse(file)?;
    let key_bytes = opening_key_bytes(&parsed.header, key)?;
    open_parsed(parsed, &key_bytes)
}

/// The second half of [`open`]: a parsed backup opened with its AES key already derived
/// (AES-256-GCM, then [`decode_plaintext`]).
pub fn open_parsed(
    parsed: ParsedBackup<'_>,
    key_bytes: &[u8; KEY_LEN],
) -> Result<OpenedBackup, BackupError> {
    let plaintext = Aes256Gcm::new(key_bytes.into())
        .decrypt(
            (&parsed.header.nonce).into(),
            Payload {
                msg: parsed.ciphertext,
                aad: parsed.aad,
            },
        )
        .map_err(|_| BackupError::WrongKeyOrModified)?;
    let pairs = decode_plaintext(&parsed.header, &plaintext)?;
    Ok(OpenedBackup {
        header: parsed.header,
        pairs,
    })
}

fn check_iterations(iterations: u32) -> Result<(), BackupError> {
    if iterations < MIN_PBKDF2_ITERATIONS {
        return Err(BackupError::TooFewIterations { iterations });
    }
    if iterations > MAX_PBKDF2_ITERATIONS {
        return Err(BackupError::TooManyIterations { iterations });
    }
    Ok(())
}

fn check_random(what: &'static str, bytes: &[u8]) -> Result<(), BackupError> {
    if bytes.iter().all(|&b| b == 0) {
        return Err(BackupError::NotRandom { what });
    }
    Ok(())
}

fn corrupt(reason: String) -> BackupError {
    BackupError::CorruptContents { reason }
}

fn put_string(out: &mut Vec<u8>, field: &'static str, text: &str) -> Result<(), BackupError> {
    let len = u16::try_from(text.len()).map_err(|_| BackupError::FieldTooLong {
        field,
        len: text.len(),
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// The most bytes a snapshot with this header may take: each UTF-16 code unit is at most 7
/// bytes of escaped form, each pair has 8 bytes of lengths; capped at [`MAX_SNAPSHOT_LEN`].
fn snapshot_limit(key_count: u32, byte_size: u64) -> u64 {
    let text = (byte_size / 2).saturating_mul(MAX_ESCAPED_BYTES_PER_UNIT);
    let lengths = u64::from(key_count).saturating_mul(PAIR_OVERHEAD);
    text.saturating_add(lengths).min(MAX_SNAPSHOT_LEN)
}

/// The payload of a backup of `pairs`: the snapshot's length, its SHA-256 and the snapshot
/// compressed (raw deflate). The snapshot (each key and value as a little-endian `u32` length
/// and its bytes) is never held whole: its pieces go to the checksum and the compressor as they
/// are encoded, so sealing a user's 2.7 MB takes the compressed size, not the snapshot's too.
fn compress_snapshot(pairs: &[Pair]) -> Result<Vec<u8>, BackupError> {
    use miniz_oxide::deflate::core::{
        CompressorOxide, TDEFLFlush, TDEFLStatus, compress_to_output,
        create_comp_flags_from_zip_params,
    };
    // Measure first, so an oversized snapshot is refused before anything is allocated.
    let len = pairs
        .iter()
        .map(|(k, v)| PAIR_OVERHEAD + k.as_escaped().len() as u64 + v.as_escaped().len() as u64)
        .fold(0, u64::saturating_add);
    if len > MAX_SNAPSHOT_LEN {
        return Err(BackupError::SnapshotTooLarge { len });
    }
    let mut out = Vec::with_capacity(PAYLOAD_PREFIX_LEN + (len / 2) as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; CHECKSUM_LEN]); // the checksum, once known
    let mut checksum = Sha256::new();
    let flags = create_comp_flags_from_zip_params(COMPRESSION_LEVEL.into(), 0, 0);
    let mut compressor = CompressorOxide::new(flags);
    let mut feed = |mut input: &[u8], flush: TDEFLFlush| -> Result<(), BackupError> {
        loop {
            let (status, used) = compress_to_output(&mut compressor, input, flush, |bytes| {
                out.extend_from_slice(bytes);
                true
            });
            input = input.get(used..).unwrap_or_default();
            match status {
                TDEFLStatus::Done => return Ok(()),
                TDEFLStatus::Okay if input.is_empty() && flush == TDEFLFlush::None => {
                    return Ok(());
                }
                TDEFLStatus::Okay => {}
                other => return Err(corrupt(format!("compressing the snapshot: {other:?}"))),
            }
        }
    };
    for (key, value) in pairs {
        for text in [key.as_escaped(), value.as_escaped()] {
            // Cannot fail: every string is shorter than MAX_SNAPSHOT_LEN, which fits in u32.
            let text_len =
                u32::try_from(text.len()).map_err(|_| BackupError::SnapshotTooLarge { len })?;
            for piece in [&text_len.to_le_bytes()[..], text.as_bytes()] {
                checksum.update(piece);
                feed(piece, TDEFLFlush::None)?;
            }
        }
    }
    feed(&[], TDEFLFlush::Finish)?;
    out[8..PAYLOAD_PREFIX_LEN].copy_from_slice(&checksum.finalize());
    out.shrink_to_fit();
    Ok(out)
}

fn decode_snapshot(snapshot: &[u8], key_count: u32) -> Result<Vec<Pair>, BackupError> {
    let mut reader = Reader::new(snapshot);
    // Each pair takes at least 8 bytes, which bounds the allocation by the snapshot's length.
    let capacity = (key_count as usize).min(snapshot.len() / PAIR_OVERHEAD as usize);
    let mut pairs = Vec::with_capacity(capacity);
    for index in 0..key_count {
        let key = read_lossless(&mut reader, index, "key")?;
        let value = read_lossless(&mut reader, index, "value")?;
        pairs.push((key, value));
    }
    if !reader.rest().is_empty() {
        return Err(corrupt(format!(
            "{} bytes after the last of the {key_count} pairs",
            reader.rest().len()
        )));
    }
    Ok(pairs)
}

fn read_lossless(
    reader: &mut Reader<'_>,
    index: u32,
    what: &str,
) -> Result<LosslessString, BackupError> {
    let bytes = reader
        .u32()
        .and_then(|len| reader.take(len as usize))
        .ok_or_else(|| {
            corrupt(format!(
                "the snapshot ends inside the {what} of pair {index}"
            ))
        })?;
    let text = std::str::from_utf8(bytes)
        .map_err(|e| corrupt(format!("the {what} of pair {index} is not UTF-8: {e}")))?;
    LosslessString::from_escaped(text.to_owned()).map_err(|e| {
        corrupt(format!(
            "the {what} of pair {index} is not in escaped form: {e}"
        ))
    })
}

/// Inflates one raw DEFLATE stream that must produce exactly `len` bytes and end exactly at the
/// end of `compressed`; output beyond `len` is refused without being produced.
fn inflate_exact(compressed: &[u8], len: u64) -> Result<Vec<u8>, BackupError> {
    let len_usize = usize::try_from(len).map_err(|_| BackupError::OversizedContents {
        limit: usize::MAX as u64,
    })?;
    let mut out = vec![0u8; len_usize];
    let mut state = Box::<DecompressorOxide>::default();
    // No TINFL_FLAG_HAS_MORE_INPUT: the whole stream is here, so running out of input is an error.
    let (status, consumed, produced) = decompress(
        &mut state,
        compressed,
        &mut out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        TINFLStatus::Done if produced == len_usize && consumed == compressed.len() => Ok(out),
        TINFLStatus::Done if produced != len_usize => Err(corrupt(format!(
            "the snapshot decompresses to {produced} bytes but its length says {len}"
        ))),
        TINFLStatus::Done => Err(corrupt(format!(
            "{} bytes after the end of the compressed snapshot",
            compressed.len().saturating_sub(consumed)
        ))),
        TINFLStatus::HasMoreOutput => Err(BackupError::OversizedContents { limit: len }),
        other => Err(corrupt(format!(
            "the compressed snapshot is invalid ({other:?})"
        ))),
    }
}

/// Decodes the fixed-layout header; returns it with its length in bytes.
fn decode_header(file: &[u8]) -> Result<(BackupHeader, usize), BackupError> {
    if file.iter().zip(MAGIC.iter()).any(|(a, b)| a != b) {
        return Err(BackupError::NotABackup);
    }
    let mut reader = Reader::new(file);
    reader.header_bytes(MAGIC.len())?;
    let version = u16::from_le_bytes(reader.header_array()?);
    if version != FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion { found: version });
    }
    let created_at_ms = u64::from_le_bytes(reader.header_array()?);
    let key_count = u32::from_le_bytes(reader.header_array()?);
    let byte_size = u64::from_le_bytes(reader.header_array()?);
    let nonce = reader.header_array::<NONCE_LEN>()?;
    let ciphertext_len = u64::from_le_bytes(reader.header_array()?);
    let [tag] = reader.header_array::<1>()?;
    let key_source = match tag {
        KEY_SOURCE_PASSPHRASE => {
            let iterations = u32::from_le_bytes(reader.header_array()?);
            let salt = reader.header_array::<SALT_LEN>()?;
            check_iterations(iterations)?;
            KeySource::Passphrase { salt, iterations }
        }
        KEY_SOURCE_DEVICE => KeySource::DeviceKey {
            key_id: read_string(&mut reader, "key id")?,
        },
        other => {
            return Err(BackupError::MalformedHeader {
                reason: format!("unknown key source {other}"),
            });
        }
    };
    let metadata = BackupMetadata {
        backup_id: read_string(&mut reader, "backup id")?,
        created_at_ms,
        origin: read_string(&mut reader, "origin")?,
        spec_app: read_string(&mut reader, "spec app")?,
        spec_version: read_string(&mut reader, "spec version")?,
    };
    if ciphertext_len < MIN_CIPHERTEXT_LEN {
        return Err(BackupError::MalformedHeader {
            reason: format!(
                "ciphertext length {ciphertext_len} is below the minimum {MIN_CIPHERTEXT_LEN}"
            ),
        });
    }
    let header = BackupHeader {
        metadata,
        key_count,
        byte_size,
        nonce,
        ciphertext_len,
        key_source,
    };
    Ok((header, reader.pos))
}

fn read_string(reader: &mut Reader<'_>, field: &'static str) -> Result<String, BackupError> {
    let len = u16::from_le_bytes(reader.header_array()?);
    let bytes = reader.header_bytes(usize::from(len))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| BackupError::MalformedHeader {
        reason: format!("the {field} is not valid UTF-8"),
    })
}

/// A cursor over bytes; every read returns `None` instead of running past the end (and then
/// leaves the position where the missing field starts).
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// Like [`Reader::take`], for the header: a missing field means the file is cut short.
    fn header_bytes(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        let needed = self.pos.saturating_add(n) as u64;
        self.take(n).ok_or(BackupError::Truncated {
            len: self.bytes.len() as u64,
            needed,
        })
    }

    /// Like [`Reader::array`], for the header.
    fn header_array<const N: usize>(&mut self) -> Result<[u8; N], BackupError> {
        let needed = self.pos.saturating_add(N) as u64;
        self.array().ok_or(BackupError::Truncated {
            len: self.bytes.len() as u64,
            needed,
        })
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_limit_is_capped_at_one_gibibyte() {
        assert_eq!(snapshot_limit(0, 0), 0);
        assert_eq!(snapshot_limit(1, 2), 8 + 7);
        assert_eq!(snapshot_limit(u32::MAX, u64::MAX), MAX_SNAPSHOT_LEN);
    }

    #[test]
    fn snapshot_limit_holds_for_the_worst_escaped_text() {
        // Every unit escaped: 7 bytes each, the bound must be tight, not exceeded.
        let worst = LosslessString::from_utf16(&[0xFFFF, 0x0000, 0xD800]);
        let pairs = vec![(worst.clone(), worst)];
        let payload = compress_snapshot(&pairs).expect("encodes");
        let snapshot_len = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
        assert_eq!(snapshot_len, snapshot_limit(1, utf16_byte_size(&pairs)));
    }

    #[test]
    fn reader_never_runs_past_the_end() {
        let mut reader = Reader::new(&[1, 2, 3, 4, 5]);
        assert_eq!(reader.u32(), Some(0x0403_0201));
        assert_eq!(reader.u32(), None, "one byte left, four needed");
        assert_eq!(reader.pos, 4, "a failed read does not move");
        assert_eq!(reader.take(usize::MAX), None, "overflowing length");
        assert!(matches!(
            reader.header_array::<2>(),
            Err(BackupError::Truncated { len: 5, needed: 6 })
        ));
        assert_eq!(reader.take(1), Some(&[5][..]));
        assert_eq!(reader.rest(), &[] as &[u8]);
    }

    #[test]
    fn inflate_exact_refuses_short_long_and_trailing_streams() {
        let data = b"hello hello hello hello";
        let compressed = miniz_oxide::deflate::compress_to_vec(data, COMPRESSION_LEVEL);
        assert_eq!(
            inflate_exact(&compressed, data.len() as u64).ok(),
            Some(data.to_vec())
        );
        assert!(matches!(
            inflate_exact(&compressed, data.len() as u64 - 1),
            Err(BackupError::OversizedContents { .. })
        ));
        assert!(matches!(
            inflate_exact(&compressed, data.len() as u64 + 1),
            Err(BackupError::CorruptContents { .. })
        ));
        let mut trailing = compressed.clone();
        trailing.push(0);
        assert!(matches!(
            inflate_exact(&trailing, data.len() as u64),
            Err(BackupError::CorruptContents { .. })
        ));
        let cut = &compressed[..compressed.len() - 1];
        assert!(matches!(
            inflate_exact(cut, data.len() as u64),
            Err(BackupError::CorruptContents { .. })
        ));
    }
}
