//! CORS: only the configured origins get CORS headers; none configured, nobody does.

use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_app_with};

const ALLOWED: &str = "http://localhost:5173";

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers_and_another_does_not() {
    let app = spawn_app_with(|s| s.cors_origins = vec![ALLOWED.to_owned()]).await;

    let response = app
        .client
        .get(app.url("/healthz"))
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED);

    let response = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_may_send_authorization() {
    let app = spawn_app_with(|s| s.cors_origins = vec![ALLOWED.to_owned()]).await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/me"))
        .header("origin", ALLOWED)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED);
    let allowed_headers = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
}

#[tokio::test]
async fn error_responses_carry_cors_headers_too() {
    // A browser can only read a 401 or 429 body if it carries the CORS headers.
    let app = spawn_app_with(|s| s.cors_origins = vec![ALLOWED.to_owned()]).await;
    let response = app
        .client
        .get(app.url("/v1/me"))
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED);
}

#[tokio::test]
async fn no_configured_origins_means_no_cors_headers() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}
