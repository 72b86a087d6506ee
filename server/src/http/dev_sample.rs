//! `GET /dev/sample` (dev mode only): seeded legacy localStorage for the demo, the browser
//! benchmarks and the end-to-end tests.
//!
//! The demo's "Load sample data" needs realistic legacy data, and it comes from Ferry's one
//! generator, `ferry-sample`. The migrator's wasm bundle does not carry it (every user of an
//! app would download demo code), so the dev server hands the pairs out:
//! `GET /dev/sample?app=taskboard&seed=7&bytes=5000000&faults=0.02` answers
//! `[["key","value"],…]`, whose `JSON.parse` gives the exact JavaScript strings, NUL and lone
//! surrogates included ([`ferry_sample::pairs_json`]). Every parameter is optional: the
//! defaults are the taskboard app, seed 0, 5 MiB and 2% broken records. Like `POST /dev/token`
//! the route exists only in dev mode; elsewhere it is a 404 like any unknown address.

use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use ferry_core::contract::ErrorCode;
use ferry_sample::{DEFAULT_INVALID_FRACTION, DEFAULT_TARGET_BYTES, LegacyApp, SampleOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::error::ApiError;

/// Largest sample served, in UTF-16 bytes: a dozen times a browser's localStorage quota, so a
/// typing slip cannot make the dev server build gigabytes.
pub const MAX_SAMPLE_BYTES: u64 = 64 * 1024 * 1024;

/// The query of `GET /dev/sample`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleQuery {
    /// `taskboard` (default) or `jotter`: which example spec's localStorage.
    app: Option<String>,
    /// Seed of the generator (default 0): the same query gives the same sample.
    seed: Option<u64>,
    /// Approximate size in UTF-16 bytes (default 5 MiB, at most [`MAX_SAMPLE_BYTES`]).
    bytes: Option<u64>,
    /// Share of records broken on purpose, 0 to 1 (default 0.02).
    faults: Option<f64>,
}

/// `GET /dev/sample`: the pairs of a generated sample as JSON.
pub async fn sample(uri: Uri) -> Result<impl IntoResponse, ApiError> {
    let raw = uri.query().unwrap_or_default();
    let query: SampleQuery = serde_urlencoded::from_str(raw).map_err(|e| {
        // The query and serde's message about it are the caller's input: cut.
        invalid_query(format!(
            "the query {} does not fit: {}",
            crate::http::error::quote_input(raw),
            crate::http::error::shorten_body_strings(&e.to_string())
        ))
    })?;
    let options = sample_options(&query)?;
    // A 5 MiB sample takes tens of milliseconds to write: off the async workers.
    let text = tokio::task::spawn_blocking(move || {
        ferry_sample::pairs_json(&ferry_sample::generate(&options).pairs)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text))
}

/// The generator's options for a query, refusing values out of range.
fn sample_options(query: &SampleQuery) -> Result<SampleOptions, ApiError> {
    let app = match query.app.as_deref().unwrap_or("taskboard") {
        "taskboard" => LegacyApp::Taskboard,
        "jotter" => LegacyApp::Jotter,
        other => {
            return Err(invalid_query(format!(
                "`app` is {}; use \"taskboard\" or \"jotter\"",
                crate::http::error::quote_input(other)
            )));
        }
    };
    let bytes = query.bytes.unwrap_or(DEFAULT_TARGET_BYTES);
    if bytes > MAX_SAMPLE_BYTES {
        return Err(invalid_query(format!(
            "`bytes` is {bytes}, more than the {MAX_SAMPLE_BYTES} a sample may have"
        )));
    }
    let faults = query.faults.unwrap_or(DEFAULT_INVALID_FRACTION);
    if !(0.0..=1.0).contains(&faults) {
        return Err(invalid_query(format!(
            "`faults` is {faults}; it is the share of broken records, from 0 to 1"
        )));
    }
    let mut options = SampleOptions::new(app);
    options.seed = query.seed.unwrap_or(0);
    options.target_bytes = bytes;
    options.invalid_fraction = faults;
    Ok(options)
}

fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::refused(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, message)
}

/// The OpenAPI description of the route (listed in dev mode only, where it exists).
pub fn openapi_path() -> Value {
    json!({
        "get": {
            "summary": "Dev mode only: seeded legacy localStorage for the demo, as [key, value] pairs",
            "parameters": [
                { "name": "app", "in": "query", "schema": { "enum": ["taskboard", "jotter"], "default": "taskboard" } },
                { "name": "seed", "in": "query", "description": "Same seed, same sample", "schema": { "type": "integer", "minimum": 0, "default": 0 } },
                { "name": "bytes", "in": "query", "description": "Approximate size in UTF-16 bytes", "schema": { "type": "integer", "minimum": 0, "maximum": MAX_SAMPLE_BYTES, "default": DEFAULT_TARGET_BYTES } },
                { "name": "faults", "in": "query", "description": "Share of records broken on purpose", "schema": { "type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_INVALID_FRACTION } }
            ],
            "responses": {
                "200": { "description": "The pairs; JSON.parse gives the exact strings (lone surrogates and NUL as \\u escapes)",
                    "content": { "application/json": { "schema": {
                        "type": "array",
                        "items": { "type": "array", "prefixItems": [{ "type": "string" }, { "type": "string" }], "minItems": 2, "maxItems": 2 } } } } },
                "400": { "description": "A parameter out of range or not a number (`invalid_query`)",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(app: Option<&str>, bytes: Option<u64>, faults: Option<f64>) -> SampleQuery {
        SampleQuery {
            app: app.map(str::to_owned),
            seed: Some(7),
            bytes,
            faults,
        }
    }

    #[test]
    fn defaults_are_the_demos_sample() {
        let options = sample_options(&query(None, None, None)).unwrap();
        let mut want = SampleOptions::new(LegacyApp::Taskboard);
        want.seed = 7;
        assert_eq!(options, want);
        let jotter = sample_options(&query(Some("jotter"), Some(1000), Some(0.0))).unwrap();
        assert_eq!(
            (jotter.app, jotter.target_bytes, jotter.invalid_fraction),
            (LegacyApp::Jotter, 1000, 0.0)
        );
    }

    #[test]
    fn values_out_of_range_are_refused() {
        // (query, why it must fail)
        let cases = [
            (query(Some("notes"), None, None), "no such example app"),
            (query(Some(""), None, None), "an empty app"),
            (
                query(None, Some(MAX_SAMPLE_BYTES + 1), None),
                "larger than the cap",
            ),
            (query(None, None, Some(1.5)), "more than every record"),
            (query(None, None, Some(-0.1)), "a negative share"),
            (query(None, None, Some(f64::NAN)), "not a number"),
        ];
        for (q, why) in cases {
            let error = sample_options(&q).err();
            assert!(
                matches!(&error, Some(ApiError::Refused { status, code: ErrorCode::InvalidQuery, .. }) if *status == StatusCode::BAD_REQUEST),
                "{why}: {error:?}"
            );
        }
    }

    #[test]
    fn the_route_is_described_in_dev_mode_only() {
        assert!(crate::http::openapi::document(true)["paths"]["/dev/sample"]["get"].is_object());
        assert!(crate::http::openapi::document(false)["paths"]["/dev/sample"].is_null());
    }
}
