//! One JSON error shape for everything: malformed JSON, wrong content type, oversized bodies,
//! unknown routes, wrong methods, rate limits.

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{expect_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_json_is_400_malformed_json() {
    let app = spawn_app_with(|s| s.dev = true).await;
    // (body, why)
    let cases = [
        (r#"{"user":"#, "truncated"),
        (r#"{user: "alice"}"#, "unquoted key"),
        ("", "empty"),
        (r#"{"user":"alice"} trailing"#, "trailing garbage"),
    ];
    for (body, why) in cases {
        let response = app.post_raw_json("/dev/token", body).await;
        let body = expect_error(response, StatusCode::BAD_REQUEST, "malformed_json").await;
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 5,
            "{why}: {body}"
        );
    }
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_415() {
    let app = spawn_app_with(|s| s.dev = true).await;
    let response = app
        .client
        .post(app.url("/dev/token"))
        .header("content-type", "text/plain")
        .body(r#"{"user":"alice"}"#)
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_body_is_413_naming_the_limit() {
    let app = spawn_app_with(|s| {
        s.dev = true;
        s.body_limit_bytes = 1000;
    })
    .await;
    let body = format!(r#"{{"user":"{}"}}"#, "a".repeat(5000));
    let response = app.post_raw_json("/dev/token", body).await;
    let body = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1000 bytes"), "{message}");
    assert_eq!(body["error"]["details"]["limit_bytes"], 1000);

    // Just under the limit is fine.
    let response = app.post_raw_json("/dev/token", r#"{"user":"alice"}"#).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_are_404_in_our_shape() {
    let app = spawn_app().await;
    for path in ["/nope", "/v1/nope", "/v1", "/pkg/missing.wasm"] {
        let response = app.get(path).await;
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = app.post_raw_json("/nope", "{}").await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_in_our_shape() {
    let app = spawn_app().await;
    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert!(response.headers().contains_key("allow"));
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn too_many_requests_are_429_with_retry_after_per_user() {
    let app = spawn_app_with(|s| {
        s.rate_limit_per_second = 0.2;
        s.rate_limit_burst = 2;
    })
    .await;
    let alice = app.token_for(Uuid::new_v4());
    for _ in 0..2 {
        assert_eq!(
            app.get_authed("/v1/me", &alice).await.status(),
            StatusCode::OK
        );
    }
    let response = app.get_authed("/v1/me", &alice).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One token every 5 s.
    assert!((1..=5).contains(&retry_after), "Retry-After: {retry_after}");
    let body = expect_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(body["error"]["details"]["retry_after_secs"], retry_after);

    // Another user has a bucket of their own.
    let bob = app.token_for(Uuid::new_v4());
    assert_eq!(
        app.get_authed("/v1/me", &bob).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn unauthenticated_requests_do_not_use_up_a_users_budget() {
    let app = spawn_app_with(|s| {
        s.rate_limit_per_second = 0.2;
        s.rate_limit_burst = 1;
    })
    .await;
    for _ in 0..5 {
        app.get_authed("/v1/me", "garbage").await;
    }
    let response = app
        .get_authed("/v1/me", &app.token_for(Uuid::new_v4()))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}
