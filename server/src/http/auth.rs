//! Who is calling: bearer-token (JWT, HS256) authentication and the [`AuthUser`] extractor.
//!
//! The app's own login issues the tokens, signed with the secret it shares with this server
//! (`FERRY_JWT_SECRET`); the server checks the signature and `exp`, and accepts HS256 only,
//! so `alg: none` and every other algorithm are refused. The token's `sub` is the user's UUID,
//! and it is the *only* source of a row's `user_id`: no payload field can name another user.
//!
//! Authenticated routes sit behind [`require_user`], which also applies the per-user rate
//! limit and leaves an [`AuthUser`] in the request for handlers to extract. In dev mode
//! `POST /dev/token` issues tokens for named demo users (see [`demo_user_id`]).

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

use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;

/// Shortest accepted signing secret: HS256 is only as strong as its key.
pub const MIN_SECRET_BYTES: usize = 32;

/// Namespace of demo user ids: `demo_user_id(name)` is UUID v5 of the name under it.
pub const DEMO_USER_NAMESPACE: Uuid = Uuid::from_u128(0x9b7c_2f4e_51a3_4d8b_a6e0_3f1d_c2b5_e847);

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// The claims Ferry reads from (and puts in) a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's UUID.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
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
    /// Bad signature, wrong algorithm, malformed, missing claims, `sub` not a UUID...
    /// The reason is for the log only: the client is told just "invalid".
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

/// A problem with the configured signing secret.
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
}

/// The HS256 keys and validation rules. Its `Debug` shows no key material.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

/// A token issued by [`JwtKeys::issue`].
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
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Keys from a fresh random secret (dev mode without `FERRY_JWT_SECRET`).
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self::from_secret(hex.as_bytes())
    }

    /// Signs a token for `user_id` valid for `ttl`.
    pub fn issue(&self, user_id: Uuid, ttl: Duration) -> Result<IssuedToken, KeyError> {
        let iat = now_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Checks `token` and returns its user.
    pub fn verify(&self, token: &str) -> Result<Uuid, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                other => AuthError::Invalid(format!("{other:?}")),
            })?;
        Uuid::parse_str(&data.claims.sub)
            .map_err(|_| AuthError::Invalid("the `sub` claim is not a UUID".to_owned()))
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
    let user_id = bearer_token(request.headers())
        .and_then(|token| state.keys().verify(token))
        .inspect_err(|error| {
            // The reason, never the token.
            tracing::debug!(code = error.code().as_str(), reason = ?error, "request not authenticated");
        })?;
    if let Some(limiter) = state.rate_limiter()
        && let Err(wait) = limiter.check(user_id, std::time::Instant::now())
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

    #[test]
    fn a_token_round_trips_to_its_user() {
        let keys = JwtKeys::from_secret(SECRET).unwrap();
        let user = demo_user_id("alice");
        let issued = keys.issue(user, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&issued.token), Ok(user));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            JwtKeys::from_secret(b"short"),
            Err(KeyError::TooShort(5))
        ));
    }

    #[test]
    fn generated_keys_differ() {
        let a = JwtKeys::generate().unwrap();
        let b = JwtKeys::generate().unwrap();
        let token = a.issue(Uuid::nil(), Duration::from_secs(60)).unwrap().token;
        assert!(matches!(b.verify(&token), Err(AuthError::Invalid(_))));
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
