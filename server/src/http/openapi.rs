//! The OpenAPI 3.1 description served at `GET /openapi.json`.
//!
//! Every body's schema is derived from the Rust types the server answers with and reads:
//! the shared contract (`ferry_core::contract`) and the batch (`ferry_core::wire`), through
//! utoipa's `ToSchema` behind ferry-core's `openapi` feature (the browser bundle does not
//! build it). What stays here is the table of routes, with their statuses, pointing at those
//! schemas. Tests check that every route the router serves is described, that every
//! reference resolves, and that the batch's schema is the real one.

use serde_json::{Value, json};

/// The document; `/dev/token` is listed only in dev mode, where it exists.
// Over 100 lines: one JSON literal, the table of routes (every schema in it is derived from
// the contract types), not steps.
pub fn document(dev_mode: bool) -> Value {
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
    if let Some(paths) = paths.as_object_mut() {
        paths.extend(v1_paths());
    }
    if let Some(me) = paths.pointer_mut("/~1v1~1me/get/responses")
        && let (Some(me), Value::Object(errors)) =
            (me.as_object_mut(), error_responses(&["401", "429"]))
    {
        me.extend(errors);
    }
    if dev_mode && let Some(paths) = paths.as_object_mut() {
        paths.insert(
            "/dev/sample".to_owned(),
            crate::http::dev_sample::openapi_path(),
        );
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
                        "415": { "$ref": "#/components/responses/Error415" },
                        "422": { "$ref": "#/components/responses/Error422" }
                    }
                }
            }),
        );
    }

    let mut responses = serde_json::Map::new();
    for (code, description) in [
        (
            "400",
            "Malformed JSON (`malformed_json`), not a batch (`invalid_batch`), a spec version the server does not serve (`spec_mismatch`, naming the versions it serves), not a backup (`invalid_backup`)",
        ),
        (
            "401",
            "Missing, invalid or expired token (`missing_token`, `invalid_token`, `token_expired`)",
        ),
        ("404", "Nothing at this address (`not_found`)"),
        (
            "413",
            "Body larger than the limit (`payload_too_large`); the message names the limit",
        ),
        (
            "409",
            "Refused because of earlier requests (`idempotency_conflict`, `migration_rolled_back`, `migration_purged`, `already_resolved`, `backup_exists`)",
        ),
        (
            "414",
            "Request target (path and query) longer than the server reads (`uri_too_long`)",
        ),
        (
            "415",
            "A JSON endpoint got another or no Content-Type (`unsupported_media_type`)",
        ),
        (
            "431",
            "Too many request headers, or too many bytes of them (`headers_too_large`); the message names the limits",
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
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
            }),
        );
    }

    let schemas = contract_schemas();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ferry ingest server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Authenticated, exactly-once batch ingest of browser localStorage into PostgreSQL. Every error has the shape of the Error schema."
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256, or RS256/ES256 from the JWKS)" } },
            "responses": responses,
            "schemas": schemas,
        }
    })
}

/// `{"<status>": {"$ref": "#/components/responses/Error<status>"}}` for each of `codes`.
fn error_responses(codes: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for code in codes {
        map.insert(
            (*code).to_owned(),
            json!({ "$ref": format!("#/components/responses/Error{code}") }),
        );
    }
    Value::Object(map)
}

/// The `/v1` endpoints of `docs/http-api.md` beyond `/v1/me`.
// Over 100 lines: a table of JSON literals, one per route, not steps (see `document`).
fn v1_paths() -> serde_json::Map<String, Value> {
    let with_errors = |ok: Value, codes: &[&str]| -> Value {
        let mut responses = serde_json::Map::new();
        responses.insert("200".to_owned(), ok);
        if let Value::Object(more) = error_responses(codes) {
            responses.extend(more);
        }
        Value::Object(responses)
    };
    let json_ok = |description: &str, schema: Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let id_param = |name: &str, schema: Value| json!([{ "name": name, "in": "path", "required": true, "schema": schema }]);
    let secured = json!([{ "bearer": [] }]);
    let mut paths = serde_json::Map::new();
    paths.insert("/v1/spec".into(), json!({ "get": {
        "summary": "A migration spec the server serves (the browser runs the same one): the newest version, or the one asked for",
        "description": "The server may serve several versions of an app (and several apps). Without ?version= the newest is returned (versions ordered part by part at dots, digits as numbers). 404 not_found: no such app or version; the message lists the ones served. 400 invalid_query: an unknown parameter, or several apps served and no ?app=.",
        "security": secured,
        "parameters": [
            { "name": "app", "in": "query", "required": false, "schema": { "type": "string" }, "description": "The app (needed when the server serves several)" },
            { "name": "version", "in": "query", "required": false, "schema": { "type": "string" }, "description": "The spec version (default: the newest)" }
        ],
        "responses": with_errors(json_ok("The spec file", json!({ "type": "object" })), &["400", "401", "404", "429"])
    }}));
    paths.insert("/v1/batches".into(), json!({ "post": {
        "summary": "Apply one ferry-batch/2 (or /1) batch exactly once",
        "description": "The body is a batch as built by ferry-core's wire module. A replay of the same (user, migration_id, sequence) and body returns the stored answer with replay: true.",
        "security": secured,
        "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Batch" } } } },
        "responses": with_errors(
            json_ok("What happened to every record", json!({ "$ref": "#/components/schemas/BatchResult" })),
            &["400", "401", "409", "413", "415", "429", "500", "503"])
    }}));
    paths.insert("/v1/migrations/{migration_id}".into(), json!({ "get": {
        "summary": "What the server received in a migration: per kind, count, XOR checksum, outcomes",
        "security": secured,
        "parameters": id_param("migration_id", json!({ "type": "string", "format": "uuid" })),
        "responses": with_errors(
            json_ok("The report", json!({ "$ref": "#/components/schemas/MigrationReport" })),
            &["401", "404", "429"])
    }}));
    paths.insert("/v1/migrations/{migration_id}/verify".into(), json!({ "post": {
        "summary": "The browser's per-kind tallies; when they are the server's, the run is marked verified (once) and the report says verified",
        "description": "409 migration_rolled_back: the migration was rolled back, it is not done. 409 verification_mismatch: the tallies differ; the run stays running.",
        "security": secured,
        "parameters": id_param("migration_id", json!({ "type": "string", "format": "uuid" })),
        "requestBody": { "required": true, "content": { "application/json": { "schema": schema_ref("VerifyRequest") } } },
        "responses": with_errors(
            json_ok("The report, status verified", schema_ref("MigrationReport")),
            &["401", "404", "409", "422", "429", "503"])
    }}));
    paths.insert("/v1/migrations/{migration_id}/rollback".into(), json!({ "post": {
        "summary": "Restore every row the migration touched as it was before it; later batches of it are refused",
        "description": "409 migration_purged: the migration's before-images were purged after its verification (`ferry-server purge`); it can no longer be rolled back.",
        "security": secured,
        "parameters": id_param("migration_id", json!({ "type": "string", "format": "uuid" })),
        "responses": with_errors(
            json_ok("Rows restored or deleted", schema_ref("RollbackAnswer")),
            &["401", "404", "409", "429", "503"])
    }}));
    paths.insert("/v1/conflicts".into(), json!({ "get": {
        "summary": "The caller's open conflicts (policy manual); sensitive values stay ciphertext",
        "security": secured,
        "responses": with_errors(json_ok("Open conflicts", json!({ "type": "array", "items": schema_ref("Conflict") })), &["401", "429"])
    }}));
    paths.insert("/v1/conflicts/{id}/resolve".into(), json!({ "post": {
        "summary": "Resolve a conflict: keep the stored row, take the incoming one, or write an edited one",
        "security": secured,
        "parameters": id_param("id", json!({ "type": "integer" })),
        "requestBody": { "required": true, "content": { "application/json": { "schema": schema_ref("Resolution") } } },
        "responses": with_errors(json_ok("Resolved", schema_ref("ResolveAnswer")),
            &["400", "401", "404", "409", "415", "422", "429"])
    }}));
    let backup_info = schema_ref("StoredBackup");
    paths.insert("/v1/backups".into(), json!({
        "post": {
            "summary": "Store a sealed backup (opaque; only its ferry-backup header is checked)",
            "security": secured,
            "parameters": [{ "name": "X-Ferry-Backup-Id", "in": "header", "required": true,
                             "schema": { "type": "string", "minLength": 1, "maxLength": 200 },
                             "description": "The backup_id in the backup's metadata" }],
            "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
            "responses": with_errors(json_ok("Stored (or already stored with the same bytes)", backup_info.clone()),
                &["400", "401", "409", "413", "429"])
        },
        "get": {
            "summary": "The caller's backups, newest first",
            "security": secured,
            "responses": with_errors(json_ok("Backups", json!({ "type": "array", "items": backup_info })), &["401", "429"])
        }
    }));
    paths.insert("/v1/backups/{id}".into(), json!({ "get": {
        "summary": "The bytes of one of the caller's backups",
        "security": secured,
        "parameters": id_param("id", json!({ "type": "string" })),
        "responses": with_errors(json!({ "description": "The backup file",
            "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } }),
            &["401", "404", "429"])
    }}));
    paths
}

/// `{"$ref": "#/components/schemas/<name>"}`.
fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The schemas of the `/v1` bodies, derived from the shared contract and wire types (and
/// every type they contain).
fn contract_schemas() -> Value {
    use ferry_core::contract::{
        BatchResult, Conflict, ErrorBody, MigrationReport, Resolution, ResolveAnswer,
        RollbackAnswer, StoredBackup, VerifyRequest,
    };
    use ferry_core::wire::Batch;
    use utoipa::OpenApi as _;

    #[derive(utoipa::OpenApi)]
    #[openapi(components(schemas(
        Batch,
        BatchResult,
        MigrationReport,
        VerifyRequest,
        RollbackAnswer,
        Conflict,
        Resolution,
        ResolveAnswer,
        StoredBackup,
        ErrorBody
    )))]
    struct Contract;

    Contract::openapi()
        .components
        .and_then(|components| serde_json::to_value(components.schemas).ok())
        .unwrap_or_else(|| json!({}))
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
            "/v1/spec",
            "/v1/batches",
            "/v1/migrations/{migration_id}",
            "/v1/migrations/{migration_id}/rollback",
            "/v1/migrations/{migration_id}/verify",
            "/v1/conflicts",
            "/v1/conflicts/{id}/resolve",
            "/v1/backups",
            "/v1/backups/{id}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is missing");
        }
        assert!(doc["paths"]["/v1/me"]["get"]["responses"]["401"].is_object());
        for (path, method) in [
            ("/v1/batches", "post"),
            ("/v1/conflicts/{id}/resolve", "post"),
            ("/dev/token", "post"),
        ] {
            assert!(
                doc["paths"][path][method]["responses"]["415"].is_object(),
                "{method} {path} does not say it refuses another Content-Type"
            );
        }
    }

    #[test]
    fn the_batch_schema_is_derived_from_the_wire_types() {
        let doc = document(false);
        let schemas = &doc["components"]["schemas"];
        let batch = &schemas["Batch"];
        assert_eq!(
            batch["properties"]["header"]["$ref"],
            "#/components/schemas/BatchHeader"
        );
        assert_eq!(
            batch["properties"]["records"]["items"]["$ref"],
            "#/components/schemas/WireRecord"
        );
        assert_eq!(
            batch["properties"]["rejected"]["items"]["$ref"],
            "#/components/schemas/WireRejected"
        );
        let header = schemas["BatchHeader"]["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for field in [
            "format",
            "migration_id",
            "sequence",
            "device_id",
            "app",
            "spec_version",
            "migrated_at_ms",
        ] {
            assert!(header.contains(&field.into()), "header.{field} is missing");
        }
        assert!(
            schemas["BatchHeader"]["properties"]["digest"].is_object(),
            "header.digest is missing"
        );
        for field in ["kind", "key", "at", "id", "hash", "raw"] {
            assert!(
                schemas["WireRecord"]["properties"][field].is_object(),
                "WireRecord.{field} is missing"
            );
        }
        assert!(schemas["WireRejected"]["properties"]["reasons"].is_object());
    }

    #[test]
    fn answers_and_outcomes_come_from_the_contract_types() {
        let doc = document(false);
        let schemas = &doc["components"]["schemas"];
        let outcomes: Vec<String> = ferry_core::contract::RecordOutcome::ALL
            .iter()
            .map(|o| o.as_str().to_owned())
            .collect();
        assert_eq!(
            schemas["RecordOutcome"]["enum"],
            serde_json::json!(outcomes)
        );
        assert_eq!(
            schemas["Choice"]["enum"],
            serde_json::json!(["stored", "incoming", "edited"])
        );
        let codes = serde_json::to_string(&schemas["ErrorCode"]).unwrap_or_default();
        for code in ferry_core::contract::ErrorCode::NAMED {
            assert!(codes.contains(&format!("\"{code}\"")), "{code} is missing");
        }
        for (path, method, schema) in [
            ("/v1/batches", "post", "BatchResult"),
            ("/v1/migrations/{migration_id}", "get", "MigrationReport"),
            (
                "/v1/migrations/{migration_id}/verify",
                "post",
                "MigrationReport",
            ),
            (
                "/v1/migrations/{migration_id}/rollback",
                "post",
                "RollbackAnswer",
            ),
            ("/v1/conflicts/{id}/resolve", "post", "ResolveAnswer"),
            ("/v1/backups", "post", "StoredBackup"),
        ] {
            assert_eq!(
                doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
                    ["$ref"],
                format!("#/components/schemas/{schema}"),
                "{method} {path}"
            );
        }
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
