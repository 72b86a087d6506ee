//! Who is calling: bearer-token (JWT) authentication and the [`AuthUser`] extractor.
//!
//! The app's own login issues the tokens; the server accepts two kinds, each only under its
//! pinned algorithm, so `alg: none` and every other algorithm are refused:
//! - **HS256** signed with the secret the app shares with this server (`FERRY_JWT_SECRET`);
//! - **RS256 / ES256** signed by an identity provider (Auth0, Okta, Cognito, Google,
//!   Keycloak…) whose public keys come from its JWKS (`FERRY_JWKS_URL` or `FERRY_JWKS_FILE`):
//!   the header's `kid` picks the key, and the key fixes the algorithm ([`jwks`]).
//!
//! HS256 is never tried with a JWKS key, so a token "signed" with a provider's public key as
//! an HMAC secret (algorithm confusion) is refused. Every token must carry `exp` and `sub`;
//! `nbf` is checked when present; `iss` and `aud` are checked when `FERRY_JWT_ISSUER` /
//! `FERRY_JWT_AUDIENCE` are set (`aud` may be a string or an array in the token).
//!
//! The user id is derived from the token only ([`user_id_for_subject`]), and it is the *only*
//! source of a row's `user_id`: no payload field can name another user. A `sub` that is a
//! hyphenated UUID is the user id as it is; any other `sub` string maps to a stable UUID v5
//! under the token's issuer.
//!
//! Authenticated routes sit behind [`require_user`], which also applies the per-user rate
//! limit and leaves an [`AuthUser`] in the request for handlers to extract. In dev mode
//! `POST /dev/token` issues HS256 tokens for named demo users (see [`demo_user_id`]).

pub mod jwks;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::auth::jwks::Jwks;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;

/// Shortest accepted signing secret: HS256 is only as strong as its key.
pub const MIN_SECRET_BYTES: usize = 32;

/// Namespace of demo user ids: `demo_user_id(name)` is UUID v5 of the name under it.
pub const DEMO_USER_NAMESPACE: Uuid = Uuid::from_u128(0x9b7c_2f4e_51a3_4d8b_a6e0_3f1d_c2b5_e847);

/// Namespace of user ids derived from a token's `iss` and `sub`
/// (`5f1e9d2c-7a43-4b8e-9c61-0d2a4f6b8e37`): see [`user_id_for_subject`].
pub const SUBJECT_NAMESPACE: Uuid = Uuid::from_u128(0x5f1e_9d2c_7a43_4b8e_9c61_0d2a_4f6b_8e37);

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// The claims Ferry puts in the tokens it issues (`POST /dev/token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// The user's UUID.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// The first `FERRY_JWT_ISSUER`, when issuers are checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The first `FERRY_JWT_AUDIENCE`, when audiences are checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The claims Ferry reads from a verified token (`exp`, `nbf`, `iss` and `aud` are checked by
/// the validation itself).
#[derive(Debug, Deserialize)]
struct TokenClaims {
    sub: String,
    #[serde(default)]
    iss: Option<String>,
}

/// Why a request is not authenticated. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("this endpoint needs an `Authorization: Bearer <token>` header")]
    MissingToken,
    /// The header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    /// The token's `exp` has passed.
    #[error("the token has expired; get a new one")]
    Expired,
    /// Bad signature, wrong algorithm, unknown `kid`, wrong `iss` or `aud`, malformed, missing
    /// claims, empty `sub`... The reason is for the log only: the client is told just
    /// "invalid".
    #[error("the token is not valid")]
    Invalid(String),
}

impl AuthError {
    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MissingToken | Self::NotBearer => ErrorCode::MissingToken,
            Self::Expired => ErrorCode::TokenExpired,
            Self::Invalid(_) => ErrorCode::InvalidToken,
        }
    }

    /// The `WWW-Authenticate` header (RFC 6750).
    pub fn www_authenticate(&self) -> HeaderValue {
        match self {
            Self::MissingToken | Self::NotBearer => HeaderValue::from_static("Bearer"),
            Self::Expired => HeaderValue::from_static(
                "Bearer error=\"invalid_token\", error_description=\"the token has expired\"",
            ),
            Self::Invalid(_) => HeaderValue::from_static("Bearer error=\"invalid_token\""),
        }
    }
}

/// A problem with the configured token keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The secret is too short.
    #[error(
        "FERRY_JWT_SECRET is {0} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort(usize),
    /// No randomness for a generated secret.
    #[error("cannot generate a random JWT secret: {0}")]
    Random(String),
    /// Signing failed.
    #[error("cannot sign a token: {0}")]
    Signing(String),
    /// Tokens can only be issued with a shared secret.
    #[error("cannot issue a token: no HS256 secret (FERRY_JWT_SECRET) is configured")]
    NoSecret,
    /// An empty entry in `FERRY_JWT_ISSUER` or `FERRY_JWT_AUDIENCE`.
    #[error("{0} has an empty entry; list the accepted values separated by commas")]
    EmptyEntry(&'static str),
}

/// The HS256 shared-secret keys. Its `Debug` shows no key material.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    generated: bool,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

/// A token issued by [`Authenticator::issue`].
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Its expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtKeys {
    /// Keys from a shared secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::TooShort(secret.len()));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            generated: false,
        })
    }

    /// Keys from a fresh random secret (dev mode without `FERRY_JWT_SECRET`).
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut keys = Self::from_secret(hex.as_bytes())?;
        keys.generated = true;
        Ok(keys)
    }
}

/// The user id of a token's subject, issued by `issuer` (the token's `iss`, `None` when it
/// has none). The exact rule, so an app's own tables can compute and join on it:
/// - a `sub` in the hyphenated form of a UUID (36 characters, any case) is that UUID;
/// - any other non-empty `sub` is `uuid_v5(uuid_v5(SUBJECT_NAMESPACE, iss), sub)`, with
///   [`SUBJECT_NAMESPACE`] = `5f1e9d2c-7a43-4b8e-9c61-0d2a4f6b8e37`, `iss` and `sub` as their
///   UTF-8 bytes, and `iss` the empty string when the token has none. In PostgreSQL
///   (`uuid-ossp`): `uuid_generate_v5(uuid_generate_v5('5f1e9d2c-…'::uuid, iss), sub)`.
///
/// So the same person at two providers is two users, and a provider cannot name a user of
/// another provider with a string `sub`.
pub fn user_id_for_subject(issuer: Option<&str>, subject: &str) -> Result<Uuid, AuthError> {
    if subject.is_empty() {
        return Err(AuthError::Invalid("the `sub` claim is empty".to_owned()));
    }
    if subject.len() == 36
        && let Ok(uuid) = Uuid::try_parse(subject)
    {
        return Ok(uuid);
    }
    let issuer_namespace = Uuid::new_v5(&SUBJECT_NAMESPACE, issuer.unwrap_or("").as_bytes());
    Ok(Uuid::new_v5(&issuer_namespace, subject.as_bytes()))
}

/// Every way a token can be verified, and the claim rules they share. Its `Debug` shows no
/// key material.
#[derive(Debug)]
pub struct Authenticator {
    shared: Option<JwtKeys>,
    jwks: Option<Jwks>,
    issuers: Vec<String>,
    audiences: Vec<String>,
}

impl From<JwtKeys> for Authenticator {
    fn from(keys: JwtKeys) -> Self {
        Self {
            shared: Some(keys),
            jwks: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
        }
    }
}

impl Authenticator {
    /// Verifies HS256 tokens with `shared` and RS256/ES256 tokens with `jwks`; when `issuers`
    /// (`audiences`) is not empty, a token's `iss` (one of its `aud`) must be one of them.
    pub fn new(
        shared: Option<JwtKeys>,
        jwks: Option<Jwks>,
        issuers: Vec<String>,
        audiences: Vec<String>,
    ) -> Result<Self, KeyError> {
        if issuers.iter().any(|i| i.trim().is_empty()) {
            return Err(KeyError::EmptyEntry("FERRY_JWT_ISSUER"));
        }
        if audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(KeyError::EmptyEntry("FERRY_JWT_AUDIENCE"));
        }
        Ok(Self {
            shared,
            jwks,
            issuers,
            audiences,
        })
    }

    /// Signs an HS256 token for `user_id` valid for `ttl`, carrying the first configured
    /// issuer and audience so it passes the same checks as the app's tokens.
    pub fn issue(&self, user_id: Uuid, ttl: Duration) -> Result<IssuedToken, KeyError> {
        let keys = self.shared.as_ref().ok_or(KeyError::NoSecret)?;
        let iat = now_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
            iss: self.issuers.first().cloned(),
            aud: self.audiences.first().cloned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Checks `token` and returns its user.
    pub async fn verify(&self, token: &str) -> Result<Uuid, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
        let result = match (header.alg, &self.shared, &self.jwks) {
            (Algorithm::HS256, Some(keys), _) => jsonwebtoken::decode::<TokenClaims>(
                token,
                &keys.decoding,
                &self.validation(Algorithm::HS256),
            ),
            (Algorithm::HS256, None, _) => {
                return Err(AuthError::Invalid(
                    "an HS256 token, but no FERRY_JWT_SECRET is configured".to_owned(),
                ));
            }
            (alg @ (Algorithm::RS256 | Algorithm::ES256), _, Some(jwks)) => {
                let key = jwks.key_for(header.kid.as_deref(), alg).await?;
                jsonwebtoken::decode::<TokenClaims>(token, &key.decoding, &self.validation(alg))
            }
            (alg, _, _) => {
                return Err(AuthError::Invalid(format!(
                    "the algorithm {alg:?} is not accepted here"
                )));
            }
        };
        let claims = result.map_err(|e| invalid(&e))?.claims;
        user_id_for_subject(claims.iss.as_deref(), &claims.sub)
    }

    /// The rules every token meets, for a token signed with `alg`.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
            required.push("iss");
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// One line saying which kinds of token are accepted and what is checked, for the start-up
    /// log.
    pub fn describe(&self) -> String {
        let mut modes = Vec::new();
        match &self.shared {
            Some(keys) if keys.generated => {
                modes.push("HS256 with a secret generated for this run (dev mode)".to_owned())
            }
            Some(_) => modes.push("HS256 with FERRY_JWT_SECRET".to_owned()),
            None => {}
        }
        if let Some(jwks) = &self.jwks {
            let kids: Vec<String> = jwks
                .kids()
                .iter()
                .map(|(kid, alg)| format!("{kid} {alg:?}"))
                .collect();
            modes.push(format!(
                "RS256/ES256 with the JWKS from {} (keys: {})",
                jwks.source(),
                kids.join(", ")
            ));
        }
        let issuer = if self.issuers.is_empty() {
            "iss not checked".to_owned()
        } else {
            format!("iss must be {}", self.issuers.join(" or "))
        };
        let audience = if self.audiences.is_empty() {
            "aud not checked".to_owned()
        } else {
            format!("aud must include {}", self.audiences.join(" or "))
        };
        format!("tokens: {}; {issuer}; {audience}", modes.join(" + "))
    }
}

/// A decoding failure as an [`AuthError`]: expiry is told apart, the rest is "invalid".
fn invalid(error: &jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        other => AuthError::Invalid(format!("{other:?}")),
    }
}

/// The token in `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

/// The demo user id for `name`: UUID v5 under [`DEMO_USER_NAMESPACE`], so "alice" is the same
/// user on every run and every machine.
pub fn demo_user_id(name: &str) -> Uuid {
    Uuid::new_v5(&DEMO_USER_NAMESPACE, name.as_bytes())
}

/// The authenticated user of a request. Extracting it on a route not behind [`require_user`]
/// is a programming error and answers 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    /// The user, from the token's `sub`.
    pub user_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<AuthUser>().copied().ok_or_else(|| {
            ApiError::Internal(
                "AuthUser extracted on a route without the require_user layer".to_owned(),
            )
        })
    }
}

/// Middleware for authenticated routes: checks the bearer token (401), applies the user's rate
/// limit (429), and hands the [`AuthUser`] on to the handler.
pub async fn require_user(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let verified = match bearer_token(request.headers()) {
        Ok(token) => state.keys().verify(token).await,
        Err(error) => Err(error),
    };
    let user_id = verified.inspect_err(|error| {
        // The reason, never the token.
        tracing::debug!(code = error.code().as_str(), reason = ?error, "request not authenticated");
    })?;
    if let Some(limiter) = state.rate_limiter()
        && let Err(wait) = limiter.check(state.pool(), user_id).await?
    {
        return Err(ApiError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    request.extensions_mut().insert(AuthUser { user_id });
    Ok(next.run(request).await)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn shared() -> Authenticator {
        JwtKeys::from_secret(SECRET).unwrap().into()
    }

    #[tokio::test]
    async fn a_token_round_trips_to_its_user() {
        let auth = shared();
        let user = demo_user_id("alice");
        let issued = auth.issue(user, Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify(&issued.token).await, Ok(user));
    }

    #[tokio::test]
    async fn issued_tokens_carry_the_configured_issuer_and_audience() {
        let auth = Authenticator::new(
            Some(JwtKeys::from_secret(SECRET).unwrap()),
            None,
            vec!["https://login.example/".to_owned()],
            vec!["ferry".to_owned(), "api".to_owned()],
        )
        .unwrap();
        let user = demo_user_id("alice");
        let issued = auth.issue(user, Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify(&issued.token).await, Ok(user));
        // The same token without the issuer and audience is refused.
        let bare = shared().issue(user, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            auth.verify(&bare.token).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn empty_issuer_or_audience_entries_are_refused() {
        for (issuers, audiences, name) in [
            (vec![String::new()], vec![], "FERRY_JWT_ISSUER"),
            (
                vec![],
                vec!["a".to_owned(), " ".to_owned()],
                "FERRY_JWT_AUDIENCE",
            ),
        ] {
            let refused = Authenticator::new(None, None, issuers, audiences);
            assert!(
                matches!(refused, Err(KeyError::EmptyEntry(n)) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            JwtKeys::from_secret(b"short"),
            Err(KeyError::TooShort(5))
        ));
    }

    #[tokio::test]
    async fn generated_keys_differ() {
        let a: Authenticator = JwtKeys::generate().unwrap().into();
        let b: Authenticator = JwtKeys::generate().unwrap().into();
        let token = a.issue(Uuid::nil(), Duration::from_secs(60)).unwrap().token;
        assert!(matches!(b.verify(&token).await, Err(AuthError::Invalid(_))));
    }

    #[test]
    fn subjects_map_to_stable_user_ids() {
        let uuid = "6a2f41a3-c54c-fce8-32d2-0324e1c32e22";
        // A hyphenated UUID is kept, whatever the issuer and case.
        assert_eq!(user_id_for_subject(None, uuid).unwrap().to_string(), uuid);
        assert_eq!(
            user_id_for_subject(Some("https://a.example/"), &uuid.to_uppercase())
                .unwrap()
                .to_string(),
            uuid
        );
        // Other strings: v5 under the issuer's namespace; the documented value, pinned so a
        // change of rule (which would orphan every user's rows) fails here.
        let auth0 = user_id_for_subject(Some("https://tenant.auth0.com/"), "auth0|abc123").unwrap();
        assert_eq!(auth0.get_version_num(), 5);
        // The documented example, computed independently (Python's `uuid.uuid5`).
        assert_eq!(auth0.to_string(), "a2615ff7-1f5a-5d23-b1b8-7fe05c883e2f");
        let issuer_namespace = Uuid::new_v5(&SUBJECT_NAMESPACE, b"https://tenant.auth0.com/");
        assert_eq!(auth0, Uuid::new_v5(&issuer_namespace, b"auth0|abc123"));
        assert_eq!(
            SUBJECT_NAMESPACE.to_string(),
            "5f1e9d2c-7a43-4b8e-9c61-0d2a4f6b8e37"
        );
        assert_eq!(
            auth0,
            user_id_for_subject(Some("https://tenant.auth0.com/"), "auth0|abc123").unwrap()
        );
        // The same sub at another issuer, or without one, is another user.
        assert_ne!(
            auth0,
            user_id_for_subject(Some("https://other.example/"), "auth0|abc123").unwrap()
        );
        assert_ne!(auth0, user_id_for_subject(None, "auth0|abc123").unwrap());
        // A UUID in another form is just a string.
        let simple = uuid.replace('-', "");
        assert_ne!(
            user_id_for_subject(None, &simple).unwrap().to_string(),
            uuid
        );
        assert!(matches!(
            user_id_for_subject(None, ""),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn demo_users_are_stable_and_distinct() {
        assert_eq!(demo_user_id("alice"), demo_user_id("alice"));
        assert_ne!(demo_user_id("alice"), demo_user_id("bob"));
        assert_eq!(demo_user_id("alice").get_version_num(), 5);
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        // (header value, expected token or error, why)
        let cases: [(Option<&str>, Result<&str, AuthError>, &str); 6] = [
            (None, Err(AuthError::MissingToken), "no header"),
            (
                Some("Bearer abc.def.ghi"),
                Ok("abc.def.ghi"),
                "the normal case",
            ),
            (
                Some("bearer abc"),
                Ok("abc"),
                "the scheme is case-insensitive",
            ),
            (
                Some("Basic dXNlcjpwdw=="),
                Err(AuthError::NotBearer),
                "another scheme",
            ),
            (Some("Bearer "), Err(AuthError::NotBearer), "an empty token"),
            (
                Some("abc.def.ghi"),
                Err(AuthError::NotBearer),
                "a token without scheme",
            ),
        ];
        for (value, expected, why) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            }
            assert_eq!(bearer_token(&headers), expected, "{why}");
        }
    }
}
