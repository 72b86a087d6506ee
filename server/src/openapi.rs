//! The OpenAPI 3.1 description served at `GET /openapi.json`, written by hand.
//!
//! Hand-written because the request and response types of the ingest endpoints live in the
//! platform-free `ferry-core` crate, which should not depend on an OpenAPI library. A test
//! checks that every route the router serves is described here.

use serde_json::{Value, json};

/// The document; `/dev/token` is listed only in dev mode, where it exists.
pub fn document(dev_mode: bool) -> Value {
    let error_responses = |codes: &[&str]| -> Value {
        let mut map = serde_json::Map::new();
        for code in codes {
            map.insert(
                (*code).to_owned(),
                json!({ "$ref": format!("#/components/responses/Error{code}") }),
            );
        }
        Value::Object(map)
    };
    let mut paths = json!({
        "/healthz": {
            "get": {
                "summary": "The process is up",
                "responses": { "200": { "description": "Up", "content": { "application/json": {
                    "schema": { "type": "object", "properties": { "status": { "const": "ok" } } } } } } }
            }
        },
        "/readyz": {
            "get": {
                "summary": "The database is reachable",
                "responses": {
                    "200": { "description": "Ready", "content": { "application/json": {
                        "schema": { "type": "object", "properties": { "status": { "const": "ready" } } } } } },
                    "503": { "$ref": "#/components/responses/Error503" }
                }
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "responses": { "200": { "description": "Metrics", "content": { "text/plain": { "schema": { "type": "string" } } } } }
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": { "200": { "description": "OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } } }
            }
        },
        "/v1/me": {
            "get": {
                "summary": "The user of the bearer token",
                "security": [ { "bearer": [] } ],
                "responses": {
                    "200": { "description": "The user", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["user_id"],
                        "properties": { "user_id": { "type": "string", "format": "uuid" } } } } } }
                }
            }
        }
    });
    if let Some(me) = paths.pointer_mut("/~1v1~1me/get/responses")
        && let (Some(me), Value::Object(errors)) =
            (me.as_object_mut(), error_responses(&["401", "429"]))
    {
        me.extend(errors);
    }
    if dev_mode && let Some(paths) = paths.as_object_mut() {
        paths.insert(
            "/dev/token".to_owned(),
            json!({
                "post": {
                    "summary": "Dev mode only: a token for a named demo user",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": {
                        "type": "object", "required": ["user"], "additionalProperties": false,
                        "properties": { "user": { "type": "string", "minLength": 1, "maxLength": 64 } } } } } },
                    "responses": {
                        "200": { "description": "The token", "content": { "application/json": { "schema": {
                            "type": "object",
                            "required": ["token", "token_type", "user", "user_id", "expires_at"],
                            "properties": {
                                "token": { "type": "string" },
                                "token_type": { "const": "Bearer" },
                                "user": { "type": "string" },
                                "user_id": { "type": "string", "format": "uuid" },
                                "expires_at": { "type": "integer", "description": "Seconds since the Unix epoch" }
                            } } } } },
                        "400": { "$ref": "#/components/responses/Error400" },
                        "413": { "$ref": "#/components/responses/Error413" },
                        "422": { "$ref": "#/components/responses/Error422" }
                    }
                }
            }),
        );
    }

    let mut responses = serde_json::Map::new();
    for (code, description) in [
        ("400", "Malformed JSON (`malformed_json`)"),
        (
            "401",
            "Missing, invalid or expired token (`missing_token`, `invalid_token`, `token_expired`)",
        ),
        ("404", "Nothing at this address (`not_found`)"),
        (
            "413",
            "Body larger than the limit (`payload_too_large`); the message names the limit",
        ),
        ("422", "JSON of the wrong shape (`invalid_body`)"),
        ("429", "Rate limited (`rate_limited`); see Retry-After"),
        (
            "500",
            "Internal error (`internal`); details are only in the server log",
        ),
        (
            "503",
            "Database unreachable (`unavailable`) or request timeout (`request_timeout`); see Retry-After",
        ),
    ] {
        responses.insert(
            format!("Error{code}"),
            json!({
                "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
            }),
        );
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ferry ingest server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Authenticated, exactly-once batch ingest of browser localStorage into PostgreSQL. Every error has the shape of the Error schema."
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256)" } },
            "responses": responses,
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string", "description": "Stable machine-readable code" },
                            "message": { "type": "string", "description": "For a person" },
                            "details": { "description": "More, machine-readable, when there is something to add" }
                        }
                    } }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::document;

    #[test]
    fn every_route_is_described() {
        let doc = document(true);
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/v1/me",
            "/dev/token",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is missing");
        }
        assert!(doc["paths"]["/v1/me"]["get"]["responses"]["401"].is_object());
    }

    #[test]
    fn dev_token_is_absent_outside_dev_mode() {
        assert!(document(false)["paths"]["/dev/token"].is_null());
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document(true);
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for reference in refs {
            let pointer = reference.trim_start_matches('#');
            assert!(
                doc.pointer(pointer).is_some(),
                "{reference} does not resolve"
            );
        }
    }

    fn collect_refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    if key == "$ref"
                        && let Some(s) = v.as_str()
                    {
                        out.push(s.to_owned());
                    }
                    collect_refs(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
