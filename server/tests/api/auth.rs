//! Bearer tokens on `/v1/*`, and `POST /dev/token`: HS256 with the shared secret, and the
//! RS256/ES256 tokens of identity providers verified against their JWKS (see `idp.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_server::http::auth::jwks::JwksSource;
use ferry_server::http::auth::{SUBJECT_NAMESPACE, demo_user_id};
use ferry_server::startup::build_authenticator;
use ferry_server::startup::config::Settings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    ServerProcess, TEST_SECRET, TestApp, expect_error, fresh_database, spawn_app, spawn_app_with,
};
use crate::idp::{Provider, SigningKey, jwks_of, key_file, sign_with};

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_authed("/v1/me", token).await
}

#[tokio::test]
async fn a_valid_token_names_its_user() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let response = me(&app, &app.token_for(user)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], user.to_string());
}

#[tokio::test]
async fn bad_credentials_are_401_in_our_shape() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    // (token, code, why)
    let cases = [
        ("not-a-jwt".to_owned(), "invalid_token", "garbage"),
        (app.expired_token(user), "token_expired", "exp an hour ago"),
        (
            app.forged_token(user),
            "invalid_token",
            "signed with another secret",
        ),
        (
            app.alg_none_token(user),
            "invalid_token",
            "alg: none must never be accepted",
        ),
        (
            app.hs512_token(user),
            "invalid_token",
            "the algorithm is pinned to HS256",
        ),
        (
            app.subject_token(""),
            "invalid_token",
            "an empty sub names nobody",
        ),
    ];
    for (token, code, why) in cases {
        let response = me(&app, &token).await;
        let www = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = expect_error(response, StatusCode::UNAUTHORIZED, code).await;
        assert!(
            www.is_some_and(|v| v.starts_with("Bearer")),
            "{why}: no WWW-Authenticate"
        );
        // The body never echoes the token.
        assert!(!body.to_string().contains(&token), "{why}: {body}");
    }
}

#[tokio::test]
async fn a_missing_or_non_bearer_header_is_401() {
    let app = spawn_app().await;
    let response = app.get("/v1/me").await;
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;

    let response = app
        .client
        .get(app.url("/v1/me"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
}

#[tokio::test]
async fn dev_token_is_absent_outside_dev_mode() {
    let app = spawn_app().await;
    let response = app.post_raw_json("/dev/token", r#"{"user":"alice"}"#).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn dev_token_issues_a_working_token_for_a_stable_demo_user() {
    let app = spawn_app_with(|s| s.dev = true).await;
    let response = app.post_raw_json("/dev/token", r#"{"user":"alice"}"#).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let alice = demo_user_id("alice");
    assert_eq!(body["user_id"], alice.to_string());
    assert_eq!(body["token_type"], "Bearer");
    let token = body["token"].as_str().unwrap();

    let response = me(&app, token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me_body: Value = response.json().await.unwrap();
    assert_eq!(me_body["user_id"], alice.to_string());
}

#[tokio::test]
async fn dev_token_refuses_bad_names() {
    let app = spawn_app_with(|s| s.dev = true).await;
    // (body, why)
    let cases = [
        (json!({ "user": "" }), "empty"),
        (json!({ "user": "   " }), "blank"),
        (
            json!({ "user": "x".repeat(65) }),
            "longer than 64 characters",
        ),
        (json!({ "user": "a\u{0}b" }), "a control character"),
        (json!({ "name": "alice" }), "the field is `user`"),
        (json!({ "user": 42 }), "not a string"),
    ];
    for (body, why) in cases {
        let response = app.post_raw_json("/dev/token", body.to_string()).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        assert!(body["error"]["message"].is_string(), "{why}: {body}");
    }
}

#[tokio::test]
async fn a_string_subject_names_a_stable_derived_user() {
    let app = spawn_app().await;
    let first = me(&app, &app.subject_token("alice")).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    // No `iss`: the issuer part of the rule is the empty string.
    let expected = Uuid::new_v5(&Uuid::new_v5(&SUBJECT_NAMESPACE, b""), b"alice");
    assert_eq!(first["user_id"], expected.to_string());
    let again: Value = me(&app, &app.subject_token("alice"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["user_id"], first["user_id"]);
    let bob: Value = me(&app, &app.subject_token("bob"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(bob["user_id"], first["user_id"]);
}

// ---- Identity providers: RS256 / ES256 against a JWKS ------------------------------------

const AUTH0: &str = "https://tenant.eu.auth0.com/";
const OKTA: &str = "https://dev-123456.okta.com/oauth2/default";
const COGNITO: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123";
const GOOGLE: &str = "https://accounts.google.com";
const KEYCLOAK: &str = "https://sso.example.com/realms/app";
const AUDIENCES: [&str; 4] = [
    "https://api.ferry.example",
    "api://default",
    "4d3c2b1a0f9e8d7c6b5a4321",
    "1234567890-abc.apps.googleusercontent.com",
];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The provider's keys: two RSA (one for a rotation), one EC, and an RSA key published without
/// `alg`.
struct Keys {
    rsa: SigningKey,
    rotated: SigningKey,
    ec: SigningKey,
}

fn keys() -> Keys {
    Keys {
        rsa: SigningKey::rsa("rsa-1.pem", "rsa-2026-01"),
        rotated: SigningKey::rsa("rsa-2.pem", "rsa-2026-07").without_alg_in_jwk(),
        ec: SigningKey::ec("ec-1.pem", "ec-1"),
    }
}

fn idp_settings(settings: &mut Settings, jwks_url: &str) {
    settings.jwks_url = Some(jwks_url.to_owned());
    settings.jwt_issuer = [AUTH0, OKTA, COGNITO, GOOGLE, KEYCLOAK]
        .map(str::to_owned)
        .to_vec();
    settings.jwt_audience = AUDIENCES.map(str::to_owned).to_vec();
}

/// A server that trusts `provider` (and still the shared HS256 secret).
async fn spawn_idp_app(provider: &Provider) -> TestApp {
    spawn_app_with(|s| idp_settings(s, &provider.jwks_url)).await
}

/// Auth0-shaped claims: string `sub`, `aud` array, `iss` with a trailing slash.
fn auth0_claims(sub: &str) -> Value {
    json!({
        "iss": AUTH0,
        "sub": sub,
        "aud": ["https://api.ferry.example", "https://tenant.eu.auth0.com/userinfo"],
        "iat": now(),
        "exp": now() + 600,
        "azp": "xyz",
        "scope": "openid profile",
    })
}

fn derived(issuer: &str, sub: &str) -> String {
    Uuid::new_v5(
        &Uuid::new_v5(&SUBJECT_NAMESPACE, issuer.as_bytes()),
        sub.as_bytes(),
    )
    .to_string()
}

async fn user_of(app: &TestApp, token: &str, why: &str) -> String {
    let response = me(app, token).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{why}: {body}");
    body["user_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn provider_tokens_are_accepted_and_name_a_stable_user() {
    let keys = keys();
    let provider = Provider::start(jwks_of(&[&keys.rsa, &keys.rotated, &keys.ec])).await;
    let app = spawn_idp_app(&provider).await;
    let cognito_sub = "7f3e8b2a-91c4-4d5e-a6b7-c8d9e0f1a2b3";
    // (token, expected user id, why)
    let cases = [
        (
            keys.rsa.sign(&auth0_claims("auth0|abc123")),
            derived(AUTH0, "auth0|abc123"),
            "Auth0: RS256, string sub, aud array",
        ),
        (
            keys.rsa.sign(&auth0_claims("google-oauth2|110169484474386276334")),
            derived(AUTH0, "google-oauth2|110169484474386276334"),
            "Auth0 social login: another string sub",
        ),
        (
            keys.rsa.sign(&json!({
                "ver": 1, "iss": OKTA, "sub": "00u1a2b3c4D5e6F7g8h9", "aud": "api://default",
                "iat": now(), "exp": now() + 3600, "cid": "0oa1b2c3", "uid": "00u1a2b3c4D5e6F7g8h9",
                "scp": ["openid"],
            })),
            derived(OKTA, "00u1a2b3c4D5e6F7g8h9"),
            "Okta: aud as a plain string",
        ),
        (
            keys.rsa.sign(&json!({
                "iss": COGNITO, "sub": cognito_sub, "aud": "4d3c2b1a0f9e8d7c6b5a4321",
                "token_use": "id", "auth_time": now(), "iat": now(), "exp": now() + 3600,
                "cognito:username": "jane",
            })),
            cognito_sub.to_owned(),
            "Cognito: a UUID sub is the user id as it is",
        ),
        (
            keys.rotated.sign(&json!({
                "iss": GOOGLE, "azp": "1234567890-abc.apps.googleusercontent.com",
                "aud": "1234567890-abc.apps.googleusercontent.com", "sub": "110169484474386276334",
                "email": "jane@example.com", "email_verified": true, "iat": now(), "exp": now() + 3600,
            })),
            derived(GOOGLE, "110169484474386276334"),
            "Google: numeric string sub, JWK without alg (RS256 inferred)",
        ),
        (
            keys.ec.sign(&json!({
                "iss": KEYCLOAK, "sub": "f:3a1b:jane", "aud": ["account", "https://api.ferry.example"],
                "typ": "Bearer", "iat": now(), "exp": now() + 300, "nbf": now() - 5,
            })),
            derived(KEYCLOAK, "f:3a1b:jane"),
            "Keycloak-like ES256 with nbf",
        ),
    ];
    for (token, expected, why) in &cases {
        assert_eq!(&user_of(&app, token, why).await, expected, "{why}");
    }
    // The same sub at two providers is two users.
    let okta_abc = keys.rsa.sign(&json!({
        "iss": OKTA, "sub": "auth0|abc123", "aud": "api://default", "exp": now() + 60,
    }));
    assert_ne!(
        user_of(&app, &okta_abc, "same sub, Okta").await,
        derived(AUTH0, "auth0|abc123")
    );
    // Dev tokens (HS256) keep working next to the provider's.
    let user = Uuid::new_v4();
    let hs = crate::idp::sign_with(
        Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
        &json!({ "sub": user, "iss": GOOGLE, "aud": AUDIENCES[0], "exp": now() + 60 }),
    );
    assert_eq!(
        user_of(&app, &hs, "HS256 with iss and aud").await,
        user.to_string()
    );
    assert_eq!(
        provider.fetches(),
        1,
        "the keys were cached after the start-up fetch"
    );
}

#[tokio::test]
async fn bad_provider_tokens_are_401_in_our_shape() {
    let keys = keys();
    let other = SigningKey::ec("ec-2.pem", "ec-1");
    let provider = Provider::start(jwks_of(&[&keys.rsa, &keys.ec])).await;
    let app = spawn_idp_app(&provider).await;
    let with = |changes: Value| {
        let mut claims = auth0_claims("auth0|abc123");
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(key);
            } else {
                claims[key] = value.clone();
            }
        }
        claims
    };
    let good = with(json!({}));
    let segment = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let public_key_json = keys.rsa.jwk.to_string();
    let modulus = keys.rsa.jwk["n"].as_str().unwrap().to_owned();
    let hs256_with = |secret: &[u8], kid: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        sign_with(header, &EncodingKey::from_secret(secret), &good)
    };
    let good_token = keys.rsa.sign(&good);
    let (head, rest) = good_token.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    // (token, code, why)
    let cases = [
        (
            keys.rsa
                .sign(&with(json!({ "exp": now() - 3600, "iat": now() - 7200 }))),
            "token_expired",
            "expired an hour ago",
        ),
        (
            keys.rsa.sign(&with(json!({ "nbf": now() + 3600 }))),
            "invalid_token",
            "not valid for another hour",
        ),
        (
            keys.rsa.sign(&with(json!({ "exp": null }))),
            "invalid_token",
            "no exp",
        ),
        (
            keys.rsa.sign(&with(json!({ "sub": null }))),
            "invalid_token",
            "no sub",
        ),
        (
            keys.rsa.sign(&with(json!({ "sub": "" }))),
            "invalid_token",
            "an empty sub",
        ),
        (
            keys.rotated.sign_as(Some(&keys.rsa.kid), &good),
            "invalid_token",
            "signed with another key than its kid's",
        ),
        (
            other.sign(&good),
            "invalid_token",
            "an EC key with a known kid but another key",
        ),
        (
            format!(
                "{head}.{}.{}",
                segment(with(json!({ "sub": "auth0|someone-else" }))),
                rest.split_once('.').unwrap().1
            ),
            "invalid_token",
            "the payload changed after signing",
        ),
        (
            format!(
                "{}.{payload}.",
                segment(json!({ "alg": "none", "kid": keys.rsa.kid }))
            ),
            "invalid_token",
            "alg: none",
        ),
        (
            format!(
                "{}.{payload}.",
                segment(json!({ "alg": "None", "typ": "JWT", "kid": keys.rsa.kid }))
            ),
            "invalid_token",
            "alg: None",
        ),
        (
            hs256_with(public_key_json.as_bytes(), &keys.rsa.kid),
            "invalid_token",
            "alg confusion: HS256 keyed with the public JWK",
        ),
        (
            hs256_with(modulus.as_bytes(), &keys.rsa.kid),
            "invalid_token",
            "alg confusion: HS256 keyed with the modulus",
        ),
        (
            keys.ec.sign_as(Some(&keys.rsa.kid), &good),
            "invalid_token",
            "ES256 header on the RS256 key's kid",
        ),
        (
            sign_with(
                {
                    let mut h = Header::new(Algorithm::RS384);
                    h.kid = Some(keys.rsa.kid.clone());
                    h
                },
                &keys.rsa.encoding,
                &good,
            ),
            "invalid_token",
            "RS384 with the right key: the key is pinned to RS256",
        ),
        (
            sign_with(
                {
                    let mut h = Header::new(Algorithm::PS256);
                    h.kid = Some(keys.rsa.kid.clone());
                    h
                },
                &keys.rsa.encoding,
                &good,
            ),
            "invalid_token",
            "PS256 with the right key",
        ),
        (
            keys.rsa.sign_as(Some("no-such-kid"), &good),
            "invalid_token",
            "an unknown kid",
        ),
        (keys.rsa.sign_as(None, &good), "invalid_token", "no kid"),
        (
            keys.rsa
                .sign(&with(json!({ "iss": "https://evil.example/" }))),
            "invalid_token",
            "an unknown issuer",
        ),
        (
            keys.rsa
                .sign(&with(json!({ "iss": "https://tenant.eu.auth0.com" }))),
            "invalid_token",
            "the issuer without its trailing slash",
        ),
        (
            keys.rsa.sign(&with(json!({ "iss": null }))),
            "invalid_token",
            "no issuer",
        ),
        (
            keys.rsa
                .sign(&with(json!({ "aud": "https://other-api.example" }))),
            "invalid_token",
            "an unknown audience",
        ),
        (
            keys.rsa.sign(&with(
                json!({ "aud": ["https://other-api.example", "account"] }),
            )),
            "invalid_token",
            "no accepted audience in the array",
        ),
        (
            keys.rsa.sign(&with(json!({ "aud": [] }))),
            "invalid_token",
            "an empty aud array",
        ),
        (
            keys.rsa.sign(&with(json!({ "aud": null }))),
            "invalid_token",
            "no audience",
        ),
        (
            sign_with(
                Header::new(Algorithm::HS256),
                &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
                &json!({ "sub": Uuid::new_v4(), "exp": now() + 60 }),
            ),
            "invalid_token",
            "HS256 with the right secret but no iss or aud",
        ),
    ];
    for (token, code, why) in cases {
        let response = me(&app, &token).await;
        let www = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        assert_eq!(body["error"]["code"], code, "{why}: {body}");
        assert!(
            www.is_some_and(|v| v.starts_with("Bearer")),
            "{why}: no WWW-Authenticate"
        );
        assert!(!body.to_string().contains(&token), "{why}: {body}");
    }
    // The good token itself passes: the cases fail for their reason, not for the setup.
    assert_eq!(
        user_of(&app, &good_token, "the good token").await,
        derived(AUTH0, "auth0|abc123")
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_unknown_kids_refetch_at_most_once_per_cooldown() {
    let keys = keys();
    let provider = Provider::start(jwks_of(&[&keys.rsa])).await;
    // A cool-down no slow machine outlasts within this test.
    let app = spawn_app_with(|s| {
        idp_settings(s, &provider.jwks_url);
        s.jwks_refetch_cooldown_secs = 3600;
    })
    .await;
    assert_eq!(provider.fetches(), 1, "the keys are fetched at start");
    user_of(
        &app,
        &keys.rsa.sign(&auth0_claims("auth0|a")),
        "the first key",
    )
    .await;
    assert_eq!(provider.fetches(), 1, "a known kid needs no fetch");

    // The provider rotates: a token signed with the new key makes the server refetch once.
    provider.publish(jwks_of(&[&keys.rsa, &keys.rotated]));
    let rotated = keys.rotated.sign(&auth0_claims("auth0|a"));
    assert_eq!(
        user_of(&app, &rotated, "the rotated key").await,
        derived(AUTH0, "auth0|a")
    );
    assert_eq!(provider.fetches(), 2, "one refetch for the new kid");
    user_of(&app, &rotated, "the rotated key again").await;
    assert_eq!(provider.fetches(), 2, "the new key is cached");

    // Tokens with made-up kids, many at once: no new fetch within the cool-down.
    let bogus: Vec<String> = (0..12)
        .map(|i| {
            keys.rsa
                .sign_as(Some(&format!("made-up-{i}")), &auth0_claims("auth0|a"))
        })
        .collect();
    let answers = futures_join(&app, &bogus).await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    assert_eq!(
        provider.fetches(),
        2,
        "unknown kids within the cool-down fetch nothing"
    );
}

#[tokio::test]
async fn concurrent_unknown_kids_after_the_cooldown_cause_one_fetch() {
    let keys = keys();
    let provider = Provider::start(jwks_of(&[&keys.rsa])).await;
    let app = spawn_app_with(|s| {
        idp_settings(s, &provider.jwks_url);
        s.jwks_refetch_cooldown_secs = 0;
    })
    .await;
    provider.publish(jwks_of(&[&keys.rsa, &keys.ec]));
    // Twelve requests with the new kid at once: one refetch serves them all.
    let tokens: Vec<String> = (0..12)
        .map(|_| keys.ec.sign(&auth0_claims("auth0|b")))
        .collect();
    let answers = futures_join(&app, &tokens).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    assert_eq!(
        provider.fetches(),
        2,
        "one refetch for twelve waiting requests"
    );
}

/// The statuses of `GET /v1/me` with each token, sent concurrently.
async fn futures_join(app: &TestApp, tokens: &[String]) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        let request = app.client.get(app.url("/v1/me")).bearer_auth(token);
        tasks.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.push(done.unwrap().unwrap());
    }
    statuses
}

#[tokio::test]
async fn a_jwks_file_is_read_and_reread_for_a_new_kid() {
    let keys = keys();
    let dir = std::env::temp_dir().join(format!("ferry-jwks-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, jwks_of(&[&keys.ec]).to_string()).unwrap();
    let app = spawn_app_with(|s| {
        s.jwks_file = Some(file.clone());
        s.jwt_secret = None;
    })
    .await;
    let claims = json!({ "sub": "user-1", "iss": KEYCLOAK, "exp": now() + 60 });
    assert_eq!(
        user_of(&app, &keys.ec.sign(&claims), "the file's key").await,
        derived(KEYCLOAK, "user-1")
    );
    std::fs::write(&file, jwks_of(&[&keys.ec, &keys.rsa]).to_string()).unwrap();
    assert_eq!(
        user_of(&app, &keys.rsa.sign(&claims), "a key added to the file").await,
        derived(KEYCLOAK, "user-1")
    );
    // Without FERRY_JWT_SECRET no HS256 token is accepted, whatever its key.
    let hs = sign_with(
        Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
        &json!({ "sub": Uuid::new_v4(), "exp": now() + 60 }),
    );
    expect_error(
        me(&app, &hs).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let _ignored = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_server_refuses_to_start_without_usable_keys() {
    let keys = keys();
    let empty = Provider::start(json!({ "keys": [] })).await;
    let only_hmac =
        Provider::start(json!({ "keys": [{ "kty": "oct", "kid": "h", "k": "c2VjcmV0" }] })).await;
    let not_json = Provider::start(json!("not a key set")).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/jwks.json", listener.local_addr().unwrap())
    };
    let missing_file = std::env::temp_dir().join(format!("ferry-no-jwks-{}.json", Uuid::new_v4()));
    // (source, words the error must contain, why)
    let cases = [
        (
            JwksSource::Url(empty.jwks_url.clone()),
            vec!["no usable key"],
            "an empty set",
        ),
        (
            JwksSource::Url(only_hmac.jwks_url.clone()),
            vec!["no usable key", "kid \"h\""],
            "only a shared-secret key",
        ),
        (
            JwksSource::Url(not_json.jwks_url.clone()),
            vec!["not a JSON Web Key Set"],
            "not a set",
        ),
        (
            JwksSource::Url(closed.clone()),
            vec!["cannot fetch", &closed],
            "nothing listens",
        ),
        (
            JwksSource::Url("http://idp.example/jwks.json".to_owned()),
            vec!["https://"],
            "plain HTTP to another host",
        ),
        (
            JwksSource::File(missing_file.clone()),
            vec!["cannot read the JWKS file"],
            "a missing file",
        ),
    ];
    for (source, words, why) in cases {
        let mut settings = Settings::defaults();
        settings.jwt_secret = None;
        match source {
            JwksSource::Url(url) => settings.jwks_url = Some(url),
            JwksSource::File(path) => settings.jwks_file = Some(path),
        }
        let error = build_authenticator(&settings, false)
            .await
            .map(|_| ())
            .map_err(|e| ferry_server::error_chain(&e));
        let Err(message) = error else {
            panic!("{why}: the server started")
        };
        for word in words {
            assert!(message.contains(word), "{why}: {message}");
        }
    }
    // Nothing to verify tokens with outside dev mode.
    let mut settings = Settings::defaults();
    settings.jwt_secret = None;
    let refused = build_authenticator(&settings, false)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(refused.is_err_and(|m| m.contains("FERRY_JWKS_URL")));
    // A usable set starts, and says which modes are on.
    let good = Provider::start(jwks_of(&[&keys.rsa, &keys.ec])).await;
    let mut settings = Settings::defaults();
    idp_settings(&mut settings, &good.jwks_url);
    let auth = build_authenticator(&settings, false).await.unwrap();
    let said = auth.describe();
    for word in [
        "RS256/ES256 with the JWKS from",
        "ec-1 ES256",
        "rsa-2026-01 RS256",
        AUTH0,
        AUDIENCES[0],
    ] {
        assert!(said.contains(word), "{said}");
    }
    assert!(!said.contains("HS256 with"), "{said}");
}

#[tokio::test]
async fn the_documented_sql_computes_the_same_user_id_as_the_server() {
    let keys = keys();
    let provider = Provider::start(jwks_of(&[&keys.rsa])).await;
    let app = spawn_idp_app(&provider).await;
    app.db
        .batch_execute(r#"CREATE EXTENSION IF NOT EXISTS "uuid-ossp""#)
        .await
        .unwrap();
    // (iss, sub): the strings an app's own tables would hold.
    let cases = [
        (AUTH0, "auth0|abc123"),
        (GOOGLE, "110169484474386276334"),
        (OKTA, "00u1a2b3c4D5e6F7g8h9"),
        (KEYCLOAK, "ünïcödé|用户"),
    ];
    for (iss, sub) in cases {
        let token = keys.rsa.sign(&json!({
            "iss": iss, "sub": sub, "aud": AUDIENCES[0], "exp": now() + 60,
        }));
        let served = user_of(&app, &token, sub).await;
        // Exactly the statement docs/http-api.md gives.
        let row = app
            .db
            .query_one(
                "SELECT uuid_generate_v5(uuid_generate_v5('5f1e9d2c-7a43-4b8e-9c61-0d2a4f6b8e37', $1), $2)",
                &[&iss, &sub],
            )
            .await
            .unwrap();
        let computed: Uuid = row.get(0);
        assert_eq!(served, computed.to_string(), "{iss} {sub}");
    }
}

#[tokio::test]
async fn a_stale_set_is_refreshed_and_a_withdrawn_key_is_refused() {
    let keys = keys();
    let provider = Provider::start(jwks_of(&[&keys.rsa, &keys.ec])).await;
    let app = spawn_app_with(|s| {
        idp_settings(s, &provider.jwks_url);
        s.jwks_refresh_secs = 1;
        s.jwks_refetch_cooldown_secs = 0;
    })
    .await;
    let token = keys.rsa.sign(&auth0_claims("auth0|c"));
    user_of(&app, &token, "before the rotation").await;
    // The provider withdraws the RSA key; once the set is older than the refresh age, the next
    // token is checked against a fresh set. (Counted from here: on a loaded machine the first
    // calls may already have outlived the one-second age and refreshed.)
    let before = provider.fetches();
    provider.publish(jwks_of(&[&keys.ec]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    expect_error(
        me(&app, &token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(provider.fetches(), before + 1, "one refresh");
    let ec = keys.ec.sign(&auth0_claims("auth0|c"));
    user_of(&app, &ec, "the key that stayed").await;
    // The provider is down: the keys we have keep working.
    let before = provider.fetches();
    provider.publish(json!("unavailable"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    user_of(&app, &ec, "a failed refresh keeps the keys").await;
    assert!(
        provider.fetches() > before,
        "the refresh was tried, and failed"
    );
}

#[tokio::test]
async fn the_binary_fetches_the_jwks_over_https_and_checks_the_certificate() {
    let keys = keys();
    let provider = Provider::start_tls(jwks_of(&[&keys.rsa])).await;
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    let ca = key_file("tls-ca.pem");
    let server = ServerProcess::start(
        &conninfo,
        &[
            ("FERRY_JWKS_URL", &provider.jwks_url),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("FERRY_JWT_ISSUER", AUTH0),
            ("FERRY_JWT_AUDIENCE", AUDIENCES[0]),
        ],
    )
    .await;
    let log = server.log();
    assert!(
        log.contains("RS256/ES256 with the JWKS from https://localhost:"),
        "{log}"
    );
    let token = keys.rsa.sign(&auth0_claims("auth0|tls"));
    let response = reqwest::Client::new()
        .get(format!("{}/v1/me", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", server.log());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], derived(AUTH0, "auth0|tls"));
    assert_eq!(provider.fetches(), 1);

    // Without the test CA the provider's certificate is not trusted: no start.
    let mut command = crate::binary::ferry_server(&["serve"]);
    command
        .env("DATABASE_URL", &conninfo)
        .env("FERRY_PORT", "0")
        .env("FERRY_FIELD_KEY", crate::helpers::TEST_FIELD_KEY)
        .env("FERRY_JWKS_URL", &provider.jwks_url);
    // Off the runtime: the provider answers on this test's runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot fetch the JWKS") && stderr.contains("certificate"),
        "{stderr}"
    );
    assert_eq!(
        provider.fetches(),
        1,
        "the untrusted handshake never reached HTTP"
    );
}
