//! Randomness (`crypto.getRandomValues`) and the WebCrypto [`Vault`]: backups in the shared
//! `ferry_core::backup` format, encrypted by WebCrypto so the device key never exists in
//! JavaScript or wasm memory.
//!
//! The device key is an AES-256-GCM `CryptoKey` generated with `extractable: false` and kept
//! in IndexedDB (structured clone), with a random key id for the backup header. Sealing runs
//! `ferry_core::backup::prepare` (compress, checksum, header), WebCrypto `encrypt` (the
//! header as additional data, 128-bit tag appended) and `assemble`; opening runs `parse`,
//! `decrypt` and `decode_plaintext`. Passphrase exports derive a non-extractable AES key
//! with WebCrypto PBKDF2-SHA-256 (600,000 iterations, native speed).

use std::rc::Rc;

use ferry_core::backup::{self, BackupError, BackupMetadata, KeySource, Pair};
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CryptoKey, SubtleCrypto};

use super::idb::IdbStore;
use super::{describe, wait, window};
use crate::error::Error;
use crate::ports::{Entropy, LocalFuture, Vault, VaultKey};

/// IndexedDB key of the device `CryptoKey`.
pub const DEVICE_CRYPTO_KEY: &str = "device-crypto-key";
/// IndexedDB key of the device key's id.
pub const DEVICE_KEY_ID: &str = "device-crypto-key-id";

fn crypto_error(what: &str, e: &JsValue) -> Error {
    Error::Crypto {
        what: what.to_owned(),
        detail: describe(e),
    }
}

fn crypto() -> Result<web_sys::Crypto, Error> {
    window()?
        .crypto()
        .map_err(|e| Error::Unsupported(format!("WebCrypto ({})", describe(&e))))
}

/// `window.crypto.subtle` (only in secure contexts: https or localhost).
pub fn subtle() -> Result<SubtleCrypto, Error> {
    Ok(crypto()?.subtle())
}

/// `crypto.getRandomValues`.
pub struct BrowserEntropy;

impl Entropy for BrowserEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), Error> {
        // getRandomValues fills at most 65,536 bytes per call.
        for chunk in buf.chunks_mut(65_536) {
            crypto()?
                .get_random_values_with_u8_array(chunk)
                .map_err(|e| crypto_error("drawing random bytes", &e))?;
        }
        Ok(())
    }
}

fn object(fields: &[(&str, JsValue)]) -> Result<Object, Error> {
    let o = Object::new();
    for (k, v) in fields {
        Reflect::set(&o, &JsValue::from_str(k), v)
            .map_err(|e| crypto_error("building parameters", &e))?;
    }
    Ok(o)
}

fn usages(list: &[&str]) -> JsValue {
    list.iter()
        .map(|u| JsValue::from_str(u))
        .collect::<Array>()
        .into()
}

fn gcm_params(nonce: &[u8], aad: &[u8]) -> Result<Object, Error> {
    object(&[
        ("name", "AES-GCM".into()),
        ("iv", Uint8Array::from(nonce).into()),
        ("additionalData", Uint8Array::from(aad).into()),
        ("tagLength", 128.into()),
    ])
}

async fn to_key(promise: Result<js_sys::Promise, JsValue>, what: &str) -> Result<CryptoKey, Error> {
    let promise = promise.map_err(|e| crypto_error(what, &e))?;
    wait(promise)
        .await
        .map_err(|e| crypto_error(what, &e))?
        .dyn_into::<CryptoKey>()
        .map_err(|e| crypto_error(what, &e))
}

/// Derives a non-extractable AES-256-GCM key from a passphrase with PBKDF2-SHA-256.
pub async fn passphrase_key(
    passphrase: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<CryptoKey, Error> {
    let subtle = subtle()?;
    let what = "deriving the passphrase key";
    let raw = Uint8Array::from(passphrase.as_bytes());
    let base = to_key(
        subtle.import_key_with_str("raw", &raw, "PBKDF2", false, &usages(&["deriveKey"])),
        what,
    )
    .await?;
    let params = object(&[
        ("name", "PBKDF2".into()),
        ("hash", "SHA-256".into()),
        ("salt", Uint8Array::from(salt).into()),
        ("iterations", iterations.into()),
    ])?;
    let aes = object(&[("name", "AES-GCM".into()), ("length", 256.into())])?;
    to_key(
        subtle.derive_key_with_object_and_object(
            &params,
            &base,
            &aes,
            false,
            &usages(&["encrypt", "decrypt"]),
        ),
        what,
    )
    .await
}

/// Encrypts with AES-GCM (tag appended, as `ferry_core::backup` expects).
pub async fn encrypt(
    key: &CryptoKey,
    nonce: &[u8],
    aad: &[u8],
    plaintext: Vec<u8>,
) -> Result<Uint8Array, Error> {
    let what = "encrypting the backup";
    let p = subtle()?
        .encrypt_with_object_and_u8_array(&gcm_params(nonce, aad)?, key, &plaintext)
        .map_err(|e| crypto_error(what, &e))?;
    // WebCrypto copied it when called: wasm's copy goes before the wait.
    drop(plaintext);
    let buf = wait(p).await.map_err(|e| crypto_error(what, &e))?;
    Ok(Uint8Array::new(&buf))
}

/// Decrypts with AES-GCM; a failed tag check is [`BackupError::WrongKeyOrModified`].
pub async fn decrypt(
    key: &CryptoKey,
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    let p = subtle()?
        .decrypt_with_object_and_u8_array(&gcm_params(nonce, aad)?, key, ciphertext)
        .map_err(|e| crypto_error("decrypting the backup", &e))?;
    let buf = wait(p)
        .await
        .map_err(|_| Error::Backup(BackupError::WrongKeyOrModified))?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// The WebCrypto vault over the device key kept in IndexedDB.
pub struct WebCryptoVault {
    store: Rc<IdbStore>,
}

impl WebCryptoVault {
    /// A vault keeping its device key in `store`.
    pub fn new(store: Rc<IdbStore>) -> Self {
        Self { store }
    }

    /// The device key and its id, generated (non-extractable) on first use.
    pub async fn device_key(&self) -> Result<(CryptoKey, String), Error> {
        let stored = self.store.get_value(DEVICE_CRYPTO_KEY).await?;
        let id = self.store.get_value(DEVICE_KEY_ID).await?.as_string();
        if let (Ok(key), Some(id)) = (stored.dyn_into::<CryptoKey>(), id) {
            return Ok((key, id));
        }
        let params = object(&[("name", "AES-GCM".into()), ("length", 256.into())])?;
        let key = to_key(
            subtle()?.generate_key_with_object(&params, false, &usages(&["encrypt", "decrypt"])),
            "generating the device key",
        )
        .await?;
        let mut raw_id = [0u8; 16];
        BrowserEntropy.fill(&mut raw_id)?;
        let id = format!(
            "device-{}",
            uuid::Builder::from_random_bytes(raw_id).into_uuid()
        );
        // The id is written after the key: a crash between the two leaves no id, so the next
        // call makes a new pair rather than naming the wrong key.
        self.store.put_value(DEVICE_CRYPTO_KEY, &key).await?;
        self.store
            .put_value(DEVICE_KEY_ID, &JsValue::from_str(&id))
            .await?;
        Ok((key, id))
    }
}

impl Vault for WebCryptoVault {
    fn seal<'a>(
        &'a self,
        pairs: &'a [Pair],
        metadata: BackupMetadata,
        key: VaultKey<'a>,
    ) -> LocalFuture<'a, Result<Vec<u8>, Error>> {
        Box::pin(async move {
            let mut nonce = [0u8; backup::NONCE_LEN];
            BrowserEntropy.fill(&mut nonce)?;
            let (crypto_key, source) = match key {
                VaultKey::Device => {
                    let (k, key_id) = self.device_key().await?;
                    (k, KeySource::DeviceKey { key_id })
                }
                VaultKey::Passphrase(passphrase) => {
                    if passphrase.is_empty() {
                        return Err(BackupError::EmptyPassphrase.into());
                    }
                    let mut salt = [0u8; backup::SALT_LEN];
                    BrowserEntropy.fill(&mut salt)?;
                    let iterations = backup::MIN_PBKDF2_ITERATIONS;
                    let k = passphrase_key(passphrase, &salt, iterations).await?;
                    (k, KeySource::Passphrase { salt, iterations })
                }
            };
            let prepared = backup::prepare(pairs, metadata, source, nonce)?;
            let ciphertext =
                encrypt(&crypto_key, &nonce, &prepared.aad, prepared.plaintext).await?;
            Ok(backup::assemble_with(
                &prepared.aad,
                ciphertext.length() as usize,
                |out| ciphertext.copy_to(out),
            )?)
        })
    }

    fn open<'a>(
        &'a self,
        file: &'a [u8],
        key: VaultKey<'a>,
    ) -> LocalFuture<'a, Result<Vec<Pair>, Error>> {
        Box::pin(async move {
            let parsed = backup::parse(file)?;
            let crypto_key = match (&parsed.header.key_source, key) {
                (KeySource::DeviceKey { key_id }, VaultKey::Device) => {
                    let (k, id) = self.device_key().await?;
                    if *key_id != id {
                        return Err(BackupError::WrongDeviceKey {
                            sealed_with: key_id.clone(),
                            given: id,
                        }
                        .into());
                    }
                    k
                }
                (KeySource::Passphrase { salt, iterations }, VaultKey::Passphrase(p)) => {
                    // Checked before the derivation, which the header asks for unauthenticated.
                    if *iterations < backup::MIN_PBKDF2_ITERATIONS {
                        return Err(BackupError::TooFewIterations {
                            iterations: *iterations,
                        }
                        .into());
                    }
                    if *iterations > backup::MAX_PBKDF2_ITERATIONS {
                        return Err(BackupError::TooManyIterations {
                            iterations: *iterations,
                        }
                        .into());
                    }
                    passphrase_key(p, salt, *iterations).await?
                }
                (KeySource::DeviceKey { .. }, VaultKey::Passphrase(_)) => {
                    return Err(BackupError::WrongKeyKind {
                        sealed_with: "device key",
                        given: "passphrase",
                    }
                    .into());
                }
                (KeySource::Passphrase { .. }, VaultKey::Device) => {
                    return Err(BackupError::WrongKeyKind {
                        sealed_with: "passphrase",
                        given: "device key",
                    }
                    .into());
                }
            };
            let plaintext = decrypt(
                &crypto_key,
                &parsed.header.nonce,
                parsed.aad,
                parsed.ciphertext,
            )
            .await?;
            Ok(backup::decode_plaintext(&parsed.header, &plaintext)?)
        })
    }
}
