//! `GET /dev/sample`: the demo's sample data, served in dev mode only.

use ferry_core::lossless;
use ferry_sample::{LegacyApp, SampleOptions};
use reqwest::StatusCode;

use crate::helpers::{expect_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn dev_sample_is_absent_outside_dev_mode() {
    let app = spawn_app().await;
    let response = app.get("/dev/sample").await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn dev_sample_serves_the_generators_exact_strings() {
    // Why: the demo, the browser benchmarks and the e2e tests write these pairs into
    // localStorage; a lone surrogate or NUL lost on the way would drop the hostile cases.
    let app = spawn_app_with(|s| s.dev = true).await;
    let response = app
        .get("/dev/sample?app=jotter&seed=3&bytes=100000&faults=0.1")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();
    // `\uD800`-style escapes in, escaped-form strings out: what JSON.parse gives, losslessly.
    let got: Vec<(String, String)> = serde_json::from_str(&lossless::prepare_json(&text)).unwrap();
    let mut options = SampleOptions::new(LegacyApp::Jotter);
    options.seed = 3;
    options.target_bytes = 100_000;
    options.invalid_fraction = 0.1;
    let want: Vec<(String, String)> = ferry_sample::generate(&options)
        .pairs
        .into_iter()
        .map(|(k, v)| (k.into_escaped(), v.into_escaped()))
        .collect();
    assert_eq!(got, want);
    assert!(
        got.iter()
            .any(|(k, v)| k.contains(lossless::ESCAPE) || v.contains(lossless::ESCAPE)),
        "the sample holds lone surrogates or NUL"
    );
}

#[tokio::test]
async fn dev_sample_refuses_bad_queries_in_our_shape() {
    let app = spawn_app_with(|s| s.dev = true).await;
    // (query, why)
    let cases = [
        ("bytes=lots", "not a number"),
        ("seed=-1", "a negative seed"),
        ("faults=2", "more than every record"),
        ("app=notes", "no such example app"),
        ("colour=red", "no such parameter"),
    ];
    for (query, why) in cases {
        let response = app.get(&format!("/dev/sample?{query}")).await;
        let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
        assert!(body["error"]["message"].is_string(), "{why}: {body}");
    }
}
