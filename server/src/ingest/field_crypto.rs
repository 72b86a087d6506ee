//! Encryption at rest of sensitive fields (a spec's `sensitive` strings and `sensitive_keys`
//! inside JSON objects).
//!
//! AES-256-GCM under a server key from configuration, with the format version and the key id
//! stored in every value so the scheme and the keys can change without losing old values:
//! `ferry:enc:<version>:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`.
//!
//! The nonce is *derived*, not random: the first 12 bytes of an HMAC-SHA256 over context ‖
//! plaintext, where the context names the user, table, row and column (a synthetic-IV
//! construction). The same secret in the same cell always encrypts to the same text, so a
//! re-sent record is recognised as unchanged and conflict policies compare like with like;
//! the price is that equal plaintexts in the same cell are visibly equal, which reveals nothing
//! the row id does not. Different cells never share a nonce for different plaintexts.
//!
//! Versions (each key used for one purpose from `v2` on):
//! - `v2` (written): two keys derived from the configured key with HKDF-SHA256 under distinct
//!   labels ([`ENCRYPTION_KEY_INFO`], [`NONCE_KEY_INFO`]): one encrypts, the other only keys
//!   the nonce HMAC.
//! - `v1` (read only): the configured key did both, encrypting and keying the nonce HMAC.
//!   Values written before `v2` stay readable with the same configured key and key id.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::startup::secret::Secret;

/// Prefix of every encrypted value, whatever its version.
pub const PREFIX: &str = "ferry:enc:";

/// The version written today.
pub const CURRENT_VERSION: &str = "v2";

/// HKDF `info` label of the `v2` key that encrypts (AES-256-GCM).
pub const ENCRYPTION_KEY_INFO: &[u8] = b"ferry:enc:v2 aes-256-gcm encryption key";

/// HKDF `info` label of the `v2` key that derives nonces (HMAC-SHA256).
pub const NONCE_KEY_INFO: &[u8] = b"ferry:enc:v2 hmac-sha256 nonce key";

/// HKDF salt: fixed, so one configured key always derives the same two keys.
const HKDF_SALT: &[u8] = b"ferry field encryption";

/// The keys of one format version: one for AES-GCM, one for the nonce HMAC.
#[derive(Clone)]
struct VersionKeys {
    encryption: Secret<[u8; 32]>,
    nonce: Secret<[u8; 32]>,
}

impl VersionKeys {
    /// `v1`: the configured key serves both purposes (kept only to read old values).
    fn v1(key: [u8; 32]) -> Self {
        Self {
            encryption: Secret::new(key),
            nonce: Secret::new(key),
        }
    }

    /// `v2`: one key per purpose, derived from the configured key with HKDF-SHA256.
    fn v2(key: &[u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), key);
        let derive = |info: &[u8]| {
            let mut okm = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 255 × 32; this cannot fail.
            hkdf.expand(info, &mut okm)
                .unwrap_or_else(|_| unreachable!("HKDF-SHA256 yields 32 bytes"));
            Secret::new(okm)
        };
        Self {
            encryption: derive(ENCRYPTION_KEY_INFO),
            nonce: derive(NONCE_KEY_INFO),
        }
    }
}

/// Encrypts sensitive cells with the current key under the current version, and decrypts
/// values of every version made with that key.
#[derive(Clone)]
pub struct FieldCipher {
    key_id: String,
    v1: VersionKeys,
    v2: VersionKeys,
}

impl std::fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCipher")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A value could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldCryptoError {
    /// Not in the `ferry:enc:<version>:<key id>:<data>` format.
    #[error("not an encrypted Ferry value")]
    NotEncrypted,
    /// A format version this server does not know (quoted shortened).
    #[error("encrypted in format {0:?}, which this server does not read (it reads v1 and v2)")]
    UnknownVersion(String),
    /// Encrypted under another key id than the configured one.
    #[error("encrypted under key {0:?}, which this server does not have")]
    UnknownKey(String),
    /// The tag did not verify: wrong key or altered value.
    #[error("the encrypted value does not verify (altered, or another key with the same id)")]
    Corrupt,
}

/// Where a value lives: binds the ciphertext to its cell.
#[derive(Debug, Clone, Copy)]
pub struct CellContext<'a> {
    /// The row's user.
    pub user_id: Uuid,
    /// The table.
    pub table: &'a str,
    /// The row id.
    pub row_id: Uuid,
    /// The column (and, inside JSON, `column.key`).
    pub column: &'a str,
}

/// The table whose `raw_value` is sealed for kinds with sensitive fields.
pub const QUARANTINE_TABLE: &str = "ferry_quarantine";

/// Where a quarantined record's sealed raw value belongs: its user, migration, kind and key.
/// The ciphertext is bound to these, so it cannot be moved to another quarantined record.
#[derive(Debug, Clone, Copy)]
pub struct QuarantineContext<'a> {
    /// The record's user.
    pub user_id: Uuid,
    /// The migration it came in.
    pub migration_id: Uuid,
    /// Its kind, as stored in `ferry_quarantine.kind`.
    pub kind: &'a str,
    /// Its localStorage key, as stored in `ferry_quarantine.key`.
    pub key: &'a str,
}

impl QuarantineContext<'_> {
    /// The cell context: the quarantine table, the migration as the row, and a column naming
    /// the kind and key.
    fn column(&self) -> String {
        format!("raw_value\0{}\0{}", self.kind, self.key)
    }

    fn cell<'c>(&self, column: &'c str) -> CellContext<'c> {
        CellContext {
            user_id: self.user_id,
            table: QUARANTINE_TABLE,
            row_id: self.migration_id,
            column,
        }
    }
}

/// Why a configured or stored field key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum FieldKeyError {
    /// Not 64 hex characters. The value itself is never quoted: it is a secret.
    #[error(
        "{origin} must be 64 hex characters (32 bytes), found {length} characters{}: generate one with `openssl rand -hex 32`",
        if *.hex_only { "" } else { " including non-hex ones" }
    )]
    Malformed {
        /// Where the key came from (`FERRY_FIELD_KEY` or a file path).
        origin: String,
        /// Its length in characters.
        length: usize,
        /// Whether every character was a hex digit.
        hex_only: bool,
    },
    /// The key id is empty or holds `:` (the separator of the encrypted form).
    #[error("FERRY_FIELD_KEY_ID {0:?} must be 1 to 32 characters from a-z, A-Z, 0-9, `_` and `-`")]
    BadKeyId(String),
    /// No randomness for a generated key.
    #[error("cannot generate a field key: {0}")]
    Random(String),
    /// The dev key file could not be read or written.
    #[error("{action} the dev field key {path}: {source}")]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Parses a key written as 64 hex characters.
pub fn parse_hex_key(origin: &str, text: &str) -> Result<[u8; 32], FieldKeyError> {
    let text = text.trim();
    let malformed = || FieldKeyError::Malformed {
        origin: origin.to_owned(),
        length: text.chars().count(),
        hex_only: text.chars().all(|c| c.is_ascii_hexdigit()),
    };
    if text.len() != 64 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        let pair = text.get(2 * i..2 * i + 2).ok_or_else(malformed)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| malformed())?;
    }
    Ok(key)
}

/// Reads the dev-mode key at `path`, or generates one and writes it there (mode 0600) so the
/// values it encrypts stay readable after a restart.
pub fn load_or_create_dev_key(path: &std::path::Path) -> Result<[u8; 32], FieldKeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::read_to_string(path) {
        Ok(text) => return parse_hex_key(&path.display().to_string(), &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FieldKeyError::File {
                action: "cannot read",
                path: path.to_owned(),
                source,
            });
        }
    }
    let file_error = |action| {
        move |source| FieldKeyError::File {
            action,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_error("cannot create the folder of"))?;
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| FieldKeyError::Random(e.to_string()))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(file_error("cannot create"))?;
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error("cannot write"))?;
    Ok(key)
}

/// Checks a key id: it is stored in every value, between `:` separators.
pub fn check_key_id(key_id: &str) -> Result<(), FieldKeyError> {
    let ok = !key_id.is_empty()
        && key_id.len() <= 32
        && key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(FieldKeyError::BadKeyId(key_id.to_owned()))
    }
}

impl FieldCipher {
    /// A cipher with the current key.
    pub fn new(key_id: impl Into<String>, key: [u8; 32]) -> Self {
        Self {
            key_id: key_id.into(),
            v2: VersionKeys::v2(&key),
            v1: VersionKeys::v1(key),
        }
    }

    /// The current key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn associated_data(ctx: &CellContext<'_>) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + ctx.table.len() + ctx.column.len());
        aad.extend_from_slice(ctx.user_id.as_bytes());
        aad.extend_from_slice(ctx.row_id.as_bytes());
        aad.extend_from_slice(ctx.table.as_bytes());
        aad.push(0);
        aad.extend_from_slice(ctx.column.as_bytes());
        aad
    }

    /// Encrypts `plaintext` for the cell `ctx`, in the current version.
    pub fn encrypt(&self, ctx: &CellContext<'_>, plaintext: &str) -> String {
        self.encrypt_as(CURRENT_VERSION, &self.v2, ctx, plaintext)
    }

    /// Encrypts in the `v1` format, as servers before `v2` did: only to prove old values stay
    /// readable.
    #[cfg(test)]
    fn encrypt_v1(&self, ctx: &CellContext<'_>, plaintext: &str) -> String {
        self.encrypt_as("v1", &self.v1, ctx, plaintext)
    }

    /// Derives the nonce (HMAC under the nonce key) and seals under the encryption key.
    fn encrypt_as(
        &self,
        version: &str,
        keys: &VersionKeys,
        ctx: &CellContext<'_>,
        plaintext: &str,
    ) -> String {
        let aad = Self::associated_data(ctx);
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(keys.nonce.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&aad);
        mac.update(&[0xff]);
        mac.update(plaintext.as_bytes());
        let tag = mac.finalize().into_bytes();
        let nonce_bytes = &tag[..12];
        let cipher = Aes256Gcm::new(keys.encryption.expose().into());
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(nonce_bytes),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut blob = Vec::with_capacity(12 + sealed.len());
        blob.extend_from_slice(nonce_bytes);
        blob.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{version}:{}:{}",
            self.key_id,
            URL_SAFE_NO_PAD.encode(blob)
        )
    }

    /// Seals the whole raw text of a quarantined record.
    pub fn seal_quarantined(&self, ctx: &QuarantineContext<'_>, raw: &str) -> String {
        let column = ctx.column();
        self.encrypt(&ctx.cell(&column), raw)
    }

    /// Opens a raw value sealed by [`Self::seal_quarantined`] for the same record.
    pub fn open_quarantined(
        &self,
        ctx: &QuarantineContext<'_>,
        sealed: &str,
    ) -> Result<String, FieldCryptoError> {
        let column = ctx.column();
        self.decrypt(&ctx.cell(&column), sealed)
    }

    /// Decrypts a value made by [`Self::encrypt`] for the same cell, in any version this
    /// server reads.
    pub fn decrypt(&self, ctx: &CellContext<'_>, value: &str) -> Result<String, FieldCryptoError> {
        let rest = value
            .strip_prefix(PREFIX)
            .ok_or(FieldCryptoError::NotEncrypted)?;
        let (version, rest) = rest.split_once(':').ok_or(FieldCryptoError::NotEncrypted)?;
        let (key_id, b64) = rest.split_once(':').ok_or(FieldCryptoError::NotEncrypted)?;
        let keys = match version {
            "v2" => &self.v2,
            "v1" => &self.v1,
            other => {
                return Err(FieldCryptoError::UnknownVersion(
                    other.chars().take(16).collect(),
                ));
            }
        };
        if key_id != self.key_id {
            return Err(FieldCryptoError::UnknownKey(
                key_id.chars().take(40).collect(),
            ));
        }
        let blob = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| FieldCryptoError::Corrupt)?;
        if blob.len() < 12 + 16 {
            return Err(FieldCryptoError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(12);
        let aad = Self::associated_data(ctx);
        let cipher = Aes256Gcm::new(keys.encryption.expose().into());
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| FieldCryptoError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| FieldCryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(column: &str) -> CellContext<'_> {
        CellContext {
            user_id: Uuid::from_u128(1),
            table: "environments",
            row_id: Uuid::from_u128(2),
            column,
        }
    }

    #[test]
    fn round_trips_and_is_deterministic_per_cell() {
        let c = FieldCipher::new("k1", [7; 32]);
        let a = c.encrypt(&ctx("config.githubToken"), "ghp_secret");
        assert!(a.starts_with("ferry:enc:v2:k1:"));
        assert!(!a.contains("ghp_secret"));
        assert_eq!(a, c.encrypt(&ctx("config.githubToken"), "ghp_secret"));
        assert_ne!(
            a,
            c.encrypt(&ctx("other"), "ghp_secret"),
            "bound to its cell"
        );
        assert_eq!(
            c.decrypt(&ctx("config.githubToken"), &a).as_deref(),
            Ok("ghp_secret")
        );
    }

    /// Written by the server before `v2` (commit c3ee491) with key id `k1` and key `[7; 32]`:
    /// `ghp_secret` in `environments`/`config.githubToken` of user 1, row 2.
    const V1_CELL: &str = "ferry:enc:v1:k1:lf_g7u5Gst3UsvmL3slRlv-kPqtOo-IdQEXY6E1oW6RmlXDwvRQ";

    /// Written by the same server: `{"token":"ghp_secret"}` quarantined for user 1 in
    /// migration 2, kind `environments`, key `envs`.
    const V1_QUARANTINED: &str =
        "ferry:enc:v1:k1:7U_pBL3t3Akw9jbC7jJoA3hsdCQEIYkqccSYDYqIBs79f29MffUpKi3vzj_NEuB7YmE";

    fn quarantined_at(key: &str) -> QuarantineContext<'_> {
        QuarantineContext {
            user_id: Uuid::from_u128(1),
            migration_id: Uuid::from_u128(2),
            kind: "environments",
            key,
        }
    }

    /// Issue 12, item 4: values sealed before the key split stay readable with the same
    /// configured key.
    #[test]
    fn values_written_by_v1_still_decrypt() {
        let c = FieldCipher::new("k1", [7; 32]);
        assert_eq!(
            c.decrypt(&ctx("config.githubToken"), V1_CELL).as_deref(),
            Ok("ghp_secret")
        );
        assert_eq!(
            c.open_quarantined(&quarantined_at("envs"), V1_QUARANTINED)
                .as_deref(),
            Ok(r#"{"token":"ghp_secret"}"#)
        );
        assert_eq!(
            c.encrypt_v1(&ctx("config.githubToken"), "ghp_secret"),
            V1_CELL,
            "the v1 path is the old scheme, byte for byte"
        );
        assert_eq!(
            c.decrypt(&ctx("other"), V1_CELL),
            Err(FieldCryptoError::Corrupt),
            "a v1 value stays bound to its cell"
        );
    }

    /// Issue 12, item 4: new values are `v2`, sealed under keys derived for one purpose each.
    #[test]
    fn new_values_use_v2_with_one_key_per_purpose() {
        let c = FieldCipher::new("k1", [7; 32]);
        let v2 = c.encrypt(&ctx("config.githubToken"), "ghp_secret");
        assert!(v2.starts_with("ferry:enc:v2:k1:"), "{v2}");
        assert_ne!(v2.replacen("v2", "v1", 1), V1_CELL);
        assert_eq!(
            c.decrypt(&ctx("config.githubToken"), &v2).as_deref(),
            Ok("ghp_secret")
        );
        let encryption = c.v2.encryption.expose();
        let nonce = c.v2.nonce.expose();
        assert_ne!(encryption, nonce, "one key per purpose");
        assert_ne!(encryption, &[7; 32], "derived, not the configured key");
        assert_ne!(nonce, &[7; 32], "derived, not the configured key");
        assert_ne!(
            FieldCipher::new("k1", [8; 32]).v2.encryption.expose(),
            encryption,
            "each configured key derives its own"
        );
        // A v2 value relabelled v1 (or the reverse) does not verify: the version is bound.
        assert_eq!(
            c.decrypt(&ctx("config.githubToken"), &v2.replacen("v2", "v1", 1)),
            Err(FieldCryptoError::Corrupt)
        );
        assert_eq!(
            c.decrypt(&ctx("config.githubToken"), &V1_CELL.replacen("v1", "v2", 1)),
            Err(FieldCryptoError::Corrupt)
        );
        assert_eq!(
            c.decrypt(&ctx("x"), "ferry:enc:v9:k1:AAAA"),
            Err(FieldCryptoError::UnknownVersion("v9".into()))
        );
    }

    #[test]
    fn quarantined_raw_values_round_trip_bound_to_their_record() {
        let c = FieldCipher::new("k1", [7; 32]);
        let raw = r#"{"config":{"githubToken":"ghp_secret"#;
        let at = |key| QuarantineContext {
            user_id: Uuid::from_u128(1),
            migration_id: Uuid::from_u128(2),
            kind: "environments",
            key,
        };
        let sealed = c.seal_quarantined(&at("envs"), raw);
        assert!(sealed.starts_with("ferry:enc:v2:k1:"));
        assert!(!sealed.contains("ghp_secret"));
        assert_eq!(c.open_quarantined(&at("envs"), &sealed).as_deref(), Ok(raw));
        assert_eq!(
            c.open_quarantined(&at("other"), &sealed),
            Err(FieldCryptoError::Corrupt)
        );
    }

    #[test]
    fn hex_keys_parse_and_bad_ones_are_described_without_the_value() {
        let key = parse_hex_key("FERRY_FIELD_KEY", &"ab".repeat(32)).unwrap_or([0; 32]);
        assert_eq!(key, [0xab; 32]);
        // (text, why)
        for (text, why) in [
            ("abcd", "too short"),
            (&*"zz".repeat(32), "not hex"),
            (&*"a".repeat(65), "too long"),
        ] {
            let error = parse_hex_key("FERRY_FIELD_KEY", text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains("64 hex characters"), "{why}: {error}");
            assert!(
                !error.contains(text),
                "{why}: the secret is quoted: {error}"
            );
        }
        assert!(check_key_id("k1").is_ok());
        assert!(check_key_id("k:1").is_err());
        assert!(check_key_id("").is_err());
    }

    #[test]
    fn the_dev_key_is_created_once_with_mode_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("ferry-field-key-{}", Uuid::new_v4()));
        let path = dir.join("field.key");
        let first = load_or_create_dev_key(&path).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let second = load_or_create_dev_key(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, second, "a restart reads the same key");
        let _ignored = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_other_cells_keys_and_tampering() {
        let c = FieldCipher::new("k1", [7; 32]);
        let a = c.encrypt(&ctx("x"), "secret");
        assert_eq!(c.decrypt(&ctx("y"), &a), Err(FieldCryptoError::Corrupt));
        let other = FieldCipher::new("k2", [7; 32]);
        assert!(matches!(
            other.decrypt(&ctx("x"), &a),
            Err(FieldCryptoError::UnknownKey(_))
        ));
        let mut flipped = a.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        assert_eq!(
            c.decrypt(&ctx("x"), &flipped),
            Err(FieldCryptoError::Corrupt)
        );
        assert_eq!(
            c.decrypt(&ctx("x"), "plain"),
            Err(FieldCryptoError::NotEncrypted)
        );
    }
}
