//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use std::time::Duration;

use axum::body::Body;
use ferry_server::db::{self, PoolSettings};
use ferry_server::http::app;
use ferry_server::http::auth::JwtKeys;
use ferry_server::http::state::{AppState, HttpSettings};
use reqwest::StatusCode;
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::{spawn_app, test_settings};

#[tokio::test]
async fn healthz_says_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_says_ready_when_the_database_answers() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_is_503_in_our_shape_when_the_database_is_unreachable() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("nobody")
        .dbname("nothing");
    let pool = db::build_pool(
        config,
        &PoolSettings {
            size: 1,
            connect_timeout: Duration::from_millis(500),
        },
    )
    .unwrap();
    let state = AppState::new(
        pool,
        JwtKeys::generate().unwrap().into(),
        HttpSettings::from_settings(&test_settings(), false),
        ferry_server::http::state::Engines::single(ferry_server::http::state::Engine::new(
            crate::helpers::demo_spec().clone(),
            String::new(),
            ferry_server::ingest::field_crypto::FieldCipher::new("k1", [1; 32]),
        )),
    )
    .unwrap();
    let response = app(state)
        .oneshot(
            axum::http::Request::get("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    // No connection details leak into the body.
    let text = body.to_string();
    assert!(!text.contains(&port.to_string()), "{text}");
    assert!(!text.contains("nobody"), "{text}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    app.get("/no/such/page").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"ferry_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"} 1"#),
        "{text}"
    );
    // Unknown paths share one series instead of one per path.
    assert!(!text.contains("/no/such/page"), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
}

#[tokio::test]
async fn openapi_describes_every_route_and_each_described_get_answers() {
    let app = spawn_app_dev().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let response = app
                .client
                .request(method.to_uppercase().parse().unwrap(), app.url(path))
                .send()
                .await
                .unwrap();
            assert_ne!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{method} {path} is described but not served"
            );
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
        }
    }
}

async fn spawn_app_dev() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|s| s.dev = true).await
}

#[tokio::test]
async fn spawn_app_serves_a_fresh_migrated_database_of_its_own() {
    let app = spawn_app().await;
    let name: String = app
        .db
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, app.db_name);
    assert!(app.db_name.starts_with("t_"));
    let applied: i64 = app
        .db
        .query_one("SELECT count(*) FROM ferry_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied,
        (ferry_server::db::schema_migrations::SCHEMA_MIGRATIONS.len()
            + crate::helpers::demo_app_migrations().len()) as i64
    );
    assert_eq!(app.settings.port, 0, "tests bind port 0");
    assert!(
        !app.address.ends_with(":0"),
        "the real port is reported: {}",
        app.address
    );
}

#[tokio::test]
async fn transactions_carry_the_statement_timeout() {
    let database = crate::helpers::fresh_database().await;
    let pool = db::build_pool(
        database.config.clone(),
        &PoolSettings {
            size: 2,
            connect_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    let mut client = pool.get().await.unwrap();
    {
        let tx = db::begin(&mut client, Some(Duration::from_millis(1500)))
            .await
            .unwrap();
        let timeout: String = tx
            .query_typed_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(timeout, "1500ms");
        // And it bites.
        let error = tx.simple_query("SELECT pg_sleep(3)").await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
        );
    }
    // `SET LOCAL`: nothing is left on the connection for whoever uses it next.
    let after: String = client
        .query_typed_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, "0");
}
