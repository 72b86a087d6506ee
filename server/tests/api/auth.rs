//! Bearer tokens on `/v1/*`, and `POST /dev/token`.

use ferry_server::http::auth::demo_user_id;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, expect_error, spawn_app, spawn_app_with};

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
            app.non_uuid_subject_token(),
            "invalid_token",
            "sub must be a user UUID",
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
