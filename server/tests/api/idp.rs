//! A stand-in identity provider for the token tests: real RS256/ES256 keys (fixed test keys in
//! `keys/`), a real JWKS served over HTTP (or HTTPS, with a certificate for `localhost` from the
//! test CA in `keys/tls-ca.pem`) on 127.0.0.1:0 that a test can rotate, and a count of how
//! often the server fetched it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A provider's signing key and its public JWK.
pub struct SigningKey {
    /// The `kid` tokens name it by.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    /// The private key.
    pub encoding: EncodingKey,
    /// The public key as published in the JWKS.
    pub jwk: Value,
}

/// A file in `tests/api/keys/`.
pub fn key_file(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/keys")
        .join(file)
}

/// The DER bytes of a PEM file in `tests/api/keys/`.
fn der_of(file: &str) -> Vec<u8> {
    let path = key_file(file);
    let pem = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD
        .decode(body)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl SigningKey {
    /// RSA key `file` (PKCS#1) published as `kid`, RS256.
    pub fn rsa(file: &str, kid: &str) -> Self {
        Self::new(
            EncodingKey::from_rsa_der(&der_of(file)),
            Algorithm::RS256,
            kid,
        )
    }

    /// P-256 key `file` (PKCS#8) published as `kid`, ES256.
    pub fn ec(file: &str, kid: &str) -> Self {
        Self::new(
            EncodingKey::from_ec_der(&der_of(file)),
            Algorithm::ES256,
            kid,
        )
    }

    fn new(encoding: EncodingKey, alg: Algorithm, kid: &str) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk: serde_json::to_value(jwk).unwrap(),
        }
    }

    /// The same key published without `alg` (as Google and others do): the server must infer
    /// it from the key type.
    pub fn without_alg_in_jwk(mut self) -> Self {
        if let Some(object) = self.jwk.as_object_mut() {
            object.remove("alg");
        }
        self
    }

    /// A token with `claims`, signed with this key, its header naming `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        sign_with(header, &self.encoding, claims)
    }

    /// A token signed with this key but whose header names `kid` instead.
    pub fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        sign_with(header, &self.encoding, claims)
    }
}

/// A token with `header` and `claims` signed with `key`.
pub fn sign_with(header: Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap_or_else(|e| panic!("sign: {e}"))
}

/// The JWKS document of `keys`.
pub fn jwks_of(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// A JWKS endpoint on 127.0.0.1:0.
pub struct Provider {
    /// The JWKS URL.
    pub jwks_url: String,
    published: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    /// Starts serving `document` at `/.well-known/jwks.json` over HTTP.
    pub async fn start(document: Value) -> Self {
        let (router, published, fetches) = Self::router(document);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            jwks_url: format!("http://{address}/.well-known/jwks.json"),
            published,
            fetches,
        }
    }

    /// Starts serving `document` over HTTPS as `https://localhost:<port>/…`, with a
    /// certificate the test CA (`keys/tls-ca.pem`) signed.
    pub async fn start_tls(document: Value) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificates = CertificateDer::pem_file_iter(key_file("tls-localhost.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key_file("tls-localhost-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (router, published, fetches) = Self::router(document);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake: nothing to serve.
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ignored = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    }
                });
            }
        });
        Self {
            jwks_url: format!("https://localhost:{port}/.well-known/jwks.json"),
            published,
            fetches,
        }
    }

    /// The JWKS route serving `document`, the published document and the fetch count.
    fn router(document: Value) -> (axum::Router, Arc<Mutex<Value>>, Arc<AtomicUsize>) {
        let published = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            get({
                let published = Arc::clone(&published);
                let fetches = Arc::clone(&fetches);
                move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let document = published.lock().unwrap().clone();
                    axum::Json(document)
                }
            }),
        );
        (router, published, fetches)
    }

    /// Publishes `document` instead (a key rotation).
    pub fn publish(&self, document: Value) {
        *self.published.lock().unwrap() = document;
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}
