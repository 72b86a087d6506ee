//! An identity provider's public keys: a JWKS (JSON Web Key Set) read from a URL or a file,
//! cached, and refreshed.
//!
//! Teams log their users in with Auth0, Okta, Cognito, Google, Keycloak… which sign RS256 or
//! ES256 tokens and publish the public keys as a JWKS. The server:
//! 1. loads the set at start ([`Jwks::load`]) and refuses to start when it holds no usable key;
//! 2. finds a token's key by its `kid` ([`Jwks::key_for`]), and accepts the token only under
//!    the algorithm *pinned to that key* (the JWK's `alg`, else the one its key type and curve
//!    imply): the token header's `alg` must match it, it never chooses it;
//! 3. refetches the set when a token names a `kid` it does not know (a rotated key) or when the
//!    set is older than its refresh age, at most once per cool-down whatever the tokens say, so
//!    tokens with made-up `kid`s cannot turn the server into a flood on the provider; a failed
//!    refetch keeps the keys it had.
//!
//! Only RS256 and ES256 keys are used; other keys in the set (encryption keys, other
//! algorithms) are skipped with a warning naming their `kid`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::http::auth::AuthError;

/// Longest JWKS document accepted: real ones are a few kilobytes.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Time allowed to fetch the JWKS from its URL.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `FERRY_JWKS_URL`: fetched over HTTPS (plain HTTP only from a loopback host).
    Url(String),
    /// `FERRY_JWKS_FILE`: read from disk (re-read on refresh, so a rotated file is picked up).
    File(PathBuf),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(url) => write!(f, "{url} (FERRY_JWKS_URL)"),
            Self::File(path) => write!(f, "{} (FERRY_JWKS_FILE)", path.display()),
        }
    }
}

/// Why a key set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The URL is not `https://…` (or `http://` to a loopback host).
    #[error(
        "FERRY_JWKS_URL {0:?} must be an https:// URL (plain http:// only to localhost, 127.0.0.1 or [::1])"
    )]
    BadUrl(String),
    /// No CA certificates to check the provider's certificate with.
    #[error(
        "cannot load this machine's CA certificates to fetch FERRY_JWKS_URL over HTTPS: {0} (install ca-certificates, or set SSL_CERT_FILE)"
    )]
    NoRootCertificates(String),
    /// The file could not be read.
    #[error("cannot read the JWKS file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The URL could not be fetched.
    #[error("cannot fetch the JWKS from {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why (status, timeout, connection error, size).
        reason: String,
    },
    /// The document is not a JWKS.
    #[error(
        "the JWKS from {source_name} is not a JSON Web Key Set (`{{\"keys\": [...]}}`): {reason}"
    )]
    NotAKeySet {
        /// Where it came from.
        source_name: String,
        /// The parse error.
        reason: String,
    },
    /// The set holds no RS256 or ES256 signing key with a `kid`.
    #[error(
        "the JWKS from {source_name} holds no usable key (RS256 or ES256 signing keys with a `kid`){}",
        skipped_note(.skipped)
    )]
    NoUsableKey {
        /// Where it came from.
        source_name: String,
        /// Why each key was skipped.
        skipped: Vec<String>,
    },
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!("; skipped: {}", skipped.join("; "))
    }
}

/// One usable public key, with the algorithm pinned to it.
pub struct VerifyingKey {
    /// The only algorithm a token signed with this key may use.
    pub algorithm: Algorithm,
    /// The key.
    pub decoding: DecodingKey,
}

/// The keys of one fetch, by `kid`.
struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    fetched_at: Instant,
    /// Counts fetches, so a caller can tell whether someone refreshed while it waited.
    generation: u64,
}

/// A parsed set: the usable keys and why the others were skipped.
struct ParsedSet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    skipped: Vec<String>,
}

/// The cached key set of one source. Its `Debug` shows the source and the `kid`s only.
pub struct Jwks {
    source: JwksSource,
    client: Option<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    current: RwLock<Arc<KeySet>>,
    /// When the last refetch (not the start-up load) was tried: at most one per cool-down.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    refresh_after: Duration,
    cooldown: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .field("kids", &self.kids())
            .finish()
    }
}

impl Jwks {
    /// Loads the set from `source` (failing when it holds no usable key). The set is refetched
    /// once older than `refresh_after`, or when a token names an unknown `kid`; never twice
    /// within `cooldown`.
    pub async fn load(
        source: JwksSource,
        refresh_after: Duration,
        cooldown: Duration,
    ) -> Result<Self, JwksError> {
        let client = match &source {
            JwksSource::Url(url) => Some(http_client(url)?),
            JwksSource::File(_) => None,
        };
        let mut jwks = Self {
            source,
            client,
            current: RwLock::new(Arc::new(KeySet {
                keys: HashMap::new(),
                fetched_at: Instant::now(),
                generation: 0,
            })),
            last_refetch: tokio::sync::Mutex::new(None),
            refresh_after,
            cooldown,
        };
        let parsed = jwks.fetch().await?;
        for reason in &parsed.skipped {
            tracing::warn!(source = %jwks.source, "JWKS key skipped: {reason}");
        }
        jwks.current = RwLock::new(Arc::new(KeySet {
            keys: parsed.keys,
            fetched_at: Instant::now(),
            generation: 1,
        }));
        Ok(jwks)
    }

    /// Where the keys come from.
    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    /// The `kid`s and pinned algorithms of the cached keys, sorted.
    pub fn kids(&self) -> Vec<(String, Algorithm)> {
        let set = self.snapshot();
        let mut kids: Vec<_> = set
            .keys
            .iter()
            .map(|(kid, key)| (kid.clone(), key.algorithm))
            .collect();
        kids.sort_by(|a, b| a.0.cmp(&b.0));
        kids
    }

    /// The key a token with header `kid` and `alg` must be verified with.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyingKey>, AuthError> {
        let kid = kid.ok_or_else(|| {
            AuthError::Invalid("the token's header has no `kid` naming its key".to_owned())
        })?;
        let unknown =
            || AuthError::Invalid(format!("no key with kid {:?} in the JWKS", shorten(kid)));
        let set = self.snapshot();
        let stale = set.fetched_at.elapsed() >= self.refresh_after;
        let key = match set.keys.get(kid) {
            Some(key) if !stale => Arc::clone(key),
            Some(key) => {
                // Stale but known: refresh unless someone else is. A new set decides (a key
                // the provider withdrew is refused); without one, the cached key serves.
                let key = Arc::clone(key);
                if let Ok(mut last) = self.last_refetch.try_lock() {
                    self.refetch(&mut last, set.generation).await;
                }
                let now = self.snapshot();
                if now.generation == set.generation {
                    key
                } else {
                    now.keys.get(kid).cloned().ok_or_else(unknown)?
                }
            }
            None => {
                let mut last = self.last_refetch.lock().await;
                self.refetch(&mut last, set.generation).await;
                drop(last);
                self.snapshot().keys.get(kid).cloned().ok_or_else(unknown)?
            }
        };
        if key.algorithm != alg {
            return Err(AuthError::Invalid(format!(
                "the key {:?} is pinned to {:?}, the token says {alg:?}",
                shorten(kid),
                key.algorithm
            )));
        }
        Ok(key)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Refetches the set unless another caller did since `seen_generation` or the cool-down
    /// has not passed. A failure keeps the old keys.
    async fn refetch(&self, last: &mut Option<Instant>, seen_generation: u64) {
        if self.snapshot().generation != seen_generation {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < self.cooldown) {
            tracing::debug!(source = %self.source, "JWKS refetch skipped: within the cool-down");
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(parsed) => {
                for reason in &parsed.skipped {
                    tracing::warn!(source = %self.source, "JWKS key skipped: {reason}");
                }
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                let generation = current.generation + 1;
                *current = Arc::new(KeySet {
                    keys: parsed.keys,
                    fetched_at: Instant::now(),
                    generation,
                });
                tracing::info!(source = %self.source, keys = current.keys.len(), "JWKS refreshed");
            }
            Err(error) => {
                tracing::warn!(source = %self.source, error = %error, "JWKS refresh failed; keeping the keys we have");
            }
        }
    }

    async fn fetch(&self) -> Result<ParsedSet, JwksError> {
        let bytes = match (&self.source, &self.client) {
            (JwksSource::File(path), _) => {
                tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::Read {
                        path: path.clone(),
                        source,
                    })?
            }
            (JwksSource::Url(url), Some(client)) => fetch_url(client, url).await?,
            (JwksSource::Url(url), None) => return Err(JwksError::BadUrl(url.clone())),
        };
        parse_key_set(&bytes, &self.source.to_string())
    }
}

/// The HTTPS client for `url`: rustls with the machine's CA certificates; plain HTTP only to a
/// loopback host (a local sidecar, the tests).
fn http_client(
    url: &str,
) -> Result<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>, JwksError> {
    let uri: hyper::Uri = url.parse().map_err(|_| JwksError::BadUrl(url.to_owned()))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = match uri.scheme_str() {
        Some("https") => builder
            .with_provider_and_native_roots(provider)
            .map_err(|e| JwksError::NoRootCertificates(e.to_string()))?
            .https_only()
            .enable_http1()
            .build(),
        Some("http") if loopback => {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| JwksError::NoRootCertificates(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .build()
        }
        _ => return Err(JwksError::BadUrl(url.to_owned())),
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn fetch_url(
    client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    url: &str,
) -> Result<Vec<u8>, JwksError> {
    let fail = |reason: String| JwksError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let request = hyper::Request::get(url)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
        .await
        .map_err(|_| fail(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))?
        .map_err(|e| fail(with_causes(&e)))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(fail(format!("HTTP status {}", response.status())));
    }
    let body = tokio::time::timeout(
        FETCH_TIMEOUT,
        Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
    )
    .await
    .map_err(|_| {
        fail(format!(
            "body not read within {} s",
            FETCH_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| {
        fail(format!(
            "reading the body (at most {MAX_JWKS_BYTES} bytes): {e}"
        ))
    })?;
    Ok(body.to_bytes().to_vec())
}

/// `error` and its causes, `: `-separated (the client's own message is just "client error
/// (Connect)"; the cause says DNS, refused, or which certificate problem).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS document, keeping the RS256 and ES256 signing keys that have a `kid`.
fn parse_key_set(bytes: &[u8], source_name: &str) -> Result<ParsedSet, JwksError> {
    let raw: RawKeySet = serde_json::from_slice(bytes).map_err(|e| JwksError::NotAKeySet {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    })?;
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    for (index, value) in raw.keys.into_iter().enumerate() {
        match usable_key(value) {
            Ok((kid, _)) if keys.contains_key(&kid) => {
                skipped.push(format!(
                    "key {index}: kid {:?} appears twice; the first is used",
                    shorten(&kid)
                ));
            }
            Ok((kid, key)) => {
                keys.insert(kid, Arc::new(key));
            }
            Err(reason) => skipped.push(format!("key {index}: {reason}")),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey {
            source_name: source_name.to_owned(),
            skipped,
        });
    }
    Ok(ParsedSet { keys, skipped })
}

/// One JWK as a usable key, or why it is skipped.
fn usable_key(value: serde_json::Value) -> Result<(String, VerifyingKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    let kid = jwk
        .common
        .key_id
        .clone()
        .ok_or_else(|| "it has no `kid`".to_owned())?;
    let named = format!("kid {:?}", shorten(&kid));
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err(format!("{named}: `use` is not \"sig\""));
    }
    let algorithm = pinned_algorithm(&jwk).map_err(|reason| format!("{named}: {reason}"))?;
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{named}: {e}"))?;
    Ok((
        kid,
        VerifyingKey {
            algorithm,
            decoding,
        },
    ))
}

/// The one algorithm a key may verify: its `alg` when given, else what its type implies; only
/// RS256 (RSA) and ES256 (EC on P-256).
fn pinned_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    let rsa = matches!(jwk.algorithm, AlgorithmParameters::RSA(_));
    let p256 = matches!(&jwk.algorithm, AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256);
    match (jwk.common.key_algorithm, rsa, p256) {
        (Some(KeyAlgorithm::RS256) | None, true, _) => Ok(Algorithm::RS256),
        (Some(KeyAlgorithm::ES256) | None, _, true) => Ok(Algorithm::ES256),
        (Some(alg), _, _) => Err(format!(
            "`alg` {alg:?} on this key type is not supported (RS256 on RSA keys, ES256 on P-256 keys)"
        )),
        (None, _, _) => Err("not an RSA or P-256 key".to_owned()),
    }
}

/// `text` cut to 40 characters for messages.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}…")
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
    use serde_json::json;

    // A P-256 public key (from RFC 7515, appendix A.3).
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    // An RSA public key (from RFC 7517, appendix A.1).
    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    fn rsa(extra: serde_json::Value) -> serde_json::Value {
        let mut key = json!({ "kty": "RSA", "n": RSA_N, "e": "AQAB" });
        key.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key
    }

    fn ec(crv: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut key = json!({ "kty": "EC", "crv": crv, "x": EC_X, "y": EC_Y });
        key.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key
    }

    #[test]
    fn the_algorithm_is_pinned_per_key() {
        let set = json!({ "keys": [
            rsa(json!({ "kid": "r1", "alg": "RS256", "use": "sig" })),
            rsa(json!({ "kid": "r2" })),
            ec("P-256", json!({ "kid": "e1", "alg": "ES256" })),
            ec("P-256", json!({ "kid": "e2" })),
        ]});
        let parsed = parse_key_set(set.to_string().as_bytes(), "test").unwrap();
        let algs: HashMap<_, _> = parsed
            .keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.algorithm))
            .collect();
        assert_eq!(algs["r1"], Algorithm::RS256);
        assert_eq!(algs["r2"], Algorithm::RS256);
        assert_eq!(algs["e1"], Algorithm::ES256);
        assert_eq!(algs["e2"], Algorithm::ES256);
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
    }

    #[test]
    fn unusable_keys_are_skipped_with_their_reason() {
        // (key, a word the reason must contain, why it is skipped)
        let cases = [
            (rsa(json!({})), "kid", "no kid: tokens could not name it"),
            (
                rsa(json!({ "kid": "enc", "use": "enc" })),
                "use",
                "an encryption key",
            ),
            (
                rsa(json!({ "kid": "rs512", "alg": "RS512" })),
                "RS512",
                "only RS256 on RSA keys",
            ),
            (
                rsa(json!({ "kid": "es-on-rsa", "alg": "ES256" })),
                "ES256",
                "alg and key type disagree",
            ),
            (
                ec("P-384", json!({ "kid": "p384" })),
                "P-256",
                "only P-256 curves",
            ),
            (
                json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }),
                "hmac",
                "a shared secret in a public set",
            ),
            (json!({ "kid": "junk" }), "not an RSA", "not a key at all"),
        ];
        for (key, word, why) in cases {
            let set = json!({ "keys": [key, rsa(json!({ "kid": "good" }))] });
            let parsed = parse_key_set(set.to_string().as_bytes(), "test").unwrap();
            assert_eq!(parsed.keys.len(), 1, "{why}");
            assert!(
                parsed.skipped.len() == 1 && parsed.skipped[0].contains(word),
                "{why}: {:?}",
                parsed.skipped
            );
        }
    }

    #[test]
    fn a_set_without_a_usable_key_is_refused() {
        // (document, why)
        let cases = [
            ("{}", "no keys array"),
            ("[]", "not an object"),
            (r#"{"keys": []}"#, "empty"),
            (
                r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
                "no kid",
            ),
        ];
        for (document, why) in cases {
            assert!(parse_key_set(document.as_bytes(), "test").is_err(), "{why}");
        }
    }

    #[test]
    fn plain_http_is_allowed_only_to_loopback_hosts() {
        for url in [
            "http://127.0.0.1:9/jwks",
            "http://localhost/jwks",
            "http://[::1]:80/x",
        ] {
            assert!(http_client(url).is_ok(), "{url}");
        }
        // (Whether this one builds depends on the machine's CA certificates, not on the URL.)
        let https = http_client("https://idp.example/.well-known/jwks.json");
        assert!(!matches!(https, Err(JwksError::BadUrl(_))));
        for url in [
            "http://idp.example/jwks",
            "ftp://127.0.0.1/jwks",
            "not a url",
            "http://10.0.0.1/jwks",
        ] {
            assert!(
                matches!(http_client(url), Err(JwksError::BadUrl(_))),
                "{url}"
            );
        }
    }
}
