//! Encryption at rest of sensitive fields (a spec's `sensitive` strings and `sensitive_keys`
//! inside JSON objects).
//!
//! AES-256-GCM under a server key from configuration, with the key id stored in every value so
//! keys can be rotated: `ferry:enc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`.
//!
//! The nonce is *derived*, not random: the first 12 bytes of HMAC-SHA256(key, context ‖
//! plaintext), where the context names the user, table, row and column (a synthetic-IV
//! construction). The same secret in the same cell always encrypts to the same text, so a
//! re-sent record is recognised as unchanged and conflict policies compare like with like;
//! the price is that equal plaintexts in the same cell are visibly equal, which reveals nothing
//! the row id does not. Different cells never share a nonce for different plaintexts.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::secret::Secret;

/// Prefix of every encrypted value.
pub const PREFIX: &str = "ferry:enc:v1:";

/// Encrypts and decrypts sensitive cells with one current key.
#[derive(Clone)]
pub struct FieldCipher {
    key_id: String,
    key: Secret<[u8; 32]>,
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
    /// Not in the `ferry:enc:v1:` format.
    #[error("not an encrypted Ferry value")]
    NotEncrypted,
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

impl FieldCipher {
    /// A cipher with the current key.
    pub fn new(key_id: impl Into<String>, key: [u8; 32]) -> Self {
        Self {
            key_id: key_id.into(),
            key: Secret::new(key),
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

    /// Encrypts `plaintext` for the cell `ctx`.
    pub fn encrypt(&self, ctx: &CellContext<'_>, plaintext: &str) -> String {
        let aad = Self::associated_data(ctx);
        let key = self.key.expose();
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&aad);
        mac.update(&[0xff]);
        mac.update(plaintext.as_bytes());
        let tag = mac.finalize().into_bytes();
        let nonce_bytes = &tag[..12];
        let cipher = Aes256Gcm::new(key.into());
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
        format!("{PREFIX}{}:{}", self.key_id, URL_SAFE_NO_PAD.encode(blob))
    }

    /// Decrypts a value made by [`Self::encrypt`] for the same cell.
    pub fn decrypt(&self, ctx: &CellContext<'_>, value: &str) -> Result<String, FieldCryptoError> {
        let rest = value
            .strip_prefix(PREFIX)
            .ok_or(FieldCryptoError::NotEncrypted)?;
        let (key_id, b64) = rest
            .split_once(':')
            .ok_or(FieldCryptoError::NotEncrypted)?;
        if key_id != self.key_id {
            return Err(FieldCryptoError::UnknownKey(key_id.to_owned()));
        }
        let blob = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| FieldCryptoError::Corrupt)?;
        if blob.len() < 12 + 16 {
            return Err(FieldCryptoError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(12);
        let aad = Self::associated_data(ctx);
        let cipher = Aes256Gcm::new(self.key.expose().into());
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
        assert!(a.starts_with("ferry:enc:v1:k1:"));
        assert!(!a.contains("ghp_secret"));
        assert_eq!(a, c.encrypt(&ctx("config.githubToken"), "ghp_secret"));
        assert_ne!(a, c.encrypt(&ctx("other"), "ghp_secret"), "bound to its cell");
        assert_eq!(c.decrypt(&ctx("config.githubToken"), &a).as_deref(), Ok("ghp_secret"));
    }

    #[test]
    fn refuses_other_cells_keys_and_tampering() {
        let c = FieldCipher::new("k1", [7; 32]);
        let a = c.encrypt(&ctx("x"), "secret");
        assert_eq!(c.decrypt(&ctx("y"), &a), Err(FieldCryptoError::Corrupt));
        let other = FieldCipher::new("k2", [7; 32]);
        assert!(matches!(other.decrypt(&ctx("x"), &a), Err(FieldCryptoError::UnknownKey(_))));
        let mut flipped = a.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        assert_eq!(c.decrypt(&ctx("x"), &flipped), Err(FieldCryptoError::Corrupt));
        assert_eq!(c.decrypt(&ctx("x"), "plain"), Err(FieldCryptoError::NotEncrypted));
    }
}
