//! What an operator sees: the request id (answer header, error body, log lines), JSON logs,
//! and the metrics beyond requests (pool, write time by kind, records by kind and outcome,
//! migration runs by status, memory), each checked to move with real traffic.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Run, ServerProcess, TestApp, app_at, eventually, expect_error, fresh_database, spawn_app,
    spawn_app_with,
};

const HEADER: &str = "x-request-id";

fn header_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {HEADER} in {:?}", response.headers()))
        .to_owned()
}

#[tokio::test]
async fn a_request_id_sent_by_the_client_comes_back_in_the_header_and_the_error_body() {
    let app = spawn_app().await;
    let given = "lb-7f3a/2026-12-02T16:40:00Z#12";
    let ok = app
        .client
        .get(app.url("/healthz"))
        .header(HEADER, given)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header_of(&ok), given);

    let refused = app
        .client
        .get(app.url("/v1/me"))
        .header(HEADER, given)
        .send()
        .await
        .unwrap();
    assert_eq!(header_of(&refused), given);
    let body = expect_error(refused, StatusCode::UNAUTHORIZED, "missing_token").await;
    assert_eq!(body["error"]["request_id"], given, "{body}");
}

#[tokio::test]
async fn without_a_valid_request_id_each_answer_gets_a_new_uuid() {
    let app = spawn_app().await;
    // (header value, why it is not kept)
    let too_long = "a".repeat(129);
    let cases: [(Option<&[u8]>, &str); 5] = [
        (None, "none sent"),
        (Some(too_long.as_bytes()), "longer than 128 characters"),
        (Some(b"two words"), "a space"),
        (Some(b"caf\xc3\xa9"), "not ASCII"),
        (Some(b""), "empty"),
    ];
    let mut seen = std::collections::HashSet::new();
    for (value, why) in cases {
        for path in ["/healthz", "/no/such/page"] {
            let mut request = app.client.get(app.url(path));
            if let Some(value) = value {
                request = request.header(
                    HEADER,
                    reqwest::header::HeaderValue::from_bytes(value).unwrap(),
                );
            }
            let response = request.send().await.unwrap();
            let id = header_of(&response);
            let uuid = Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{why}: {id:?}: {e}"));
            assert_eq!(uuid.get_version_num(), 4, "{why}: {id}");
            assert!(seen.insert(id.clone()), "{why}: {id} given twice");
            if path != "/healthz" {
                let body = expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
                assert_eq!(body["error"]["request_id"], id.as_str(), "{why}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn every_error_body_carries_the_request_id_whoever_made_the_error() {
    let app = spawn_app().await;
    let token = app.user().token;
    let post = |path: &str| app.client.post(app.url(path));
    // (request, status, code, who answers)
    let cases = [
        (
            app.client.get(app.url("/nothing")),
            StatusCode::NOT_FOUND,
            "not_found",
            "the router's fallback, rewritten",
        ),
        (
            post("/healthz"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the router's 405, rewritten",
        ),
        (
            app.client.get(app.url("/v1/me")).bearer_auth("not.a.token"),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the authentication layer",
        ),
        (
            post("/v1/batches")
                .bearer_auth(&token)
                .header("content-type", "text/plain")
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the extractor",
        ),
        (
            post("/v1/batches")
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "the handler",
        ),
        (
            app.client.get(app.url(&format!("/{}", "x".repeat(9000)))),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the head limit",
        ),
    ];
    for (i, (request, status, code, who)) in cases.into_iter().enumerate() {
        let given = format!("case-{i}-{}", Uuid::new_v4().simple());
        let response = request.header(HEADER, &given).send().await.unwrap();
        assert_eq!(header_of(&response), given, "{who}");
        let body = expect_error(response, status, code).await;
        assert_eq!(body["error"]["request_id"], given.as_str(), "{who}: {body}");
    }
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_may_send_and_read_the_request_id() {
    let origin = "http://localhost:5173";
    let app = spawn_app_with(|s| s.cors_origins = vec![origin.to_owned()]).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/me"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization,x-request-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains(HEADER), "{allowed}");
    // The preflight is an answer too: it has an id.
    assert!(Uuid::parse_str(&header_of(&preflight)).is_ok());

    let response = app
        .client
        .get(app.url("/v1/me"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains(HEADER), "{exposed}");
}

/// The JSON log lines printed so far (every line must be one).
fn json_lines(server: &ServerProcess) -> Vec<Value> {
    server
        .log_lines()
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect()
}

/// The log lines of the request with `id`: those logged inside its `request` span.
fn lines_of(lines: &[Value], id: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["span"]["request_id"] == id)
        .cloned()
        .collect()
}

fn messages(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect()
}

#[tokio::test]
async fn json_logs_name_the_request_id_in_every_line_logged_for_a_request() {
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    let server = ServerProcess::start(
        &conninfo,
        &[
            ("FERRY_LOG_FORMAT", "json"),
            ("RUST_LOG", "info,ferry_server=debug"),
        ],
    )
    .await;
    let app = app_at(&server.url, database);

    // A: refused by the authentication layer, which logs why, then the access line.
    let a = format!("obs-a-{}", Uuid::new_v4().simple());
    let response = app
        .client
        .get(app.url("/v1/me"))
        .header(HEADER, &a)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // B: no id sent; the handler logs (at debug) before answering 404.
    let token = app.user().token;
    let response = app.get_authed("/v1/migrations/not-a-uuid", &token).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let b = header_of(&response);
    // C: a success, logged at debug.
    let c = format!("obs-c-{}", Uuid::new_v4().simple());
    let response = app
        .client
        .get(app.url("/healthz"))
        .header(HEADER, &c)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let complete = eventually(Duration::from_secs(10), || {
        let lines = json_lines(&server);
        [(&a, 2), (&b, 2), (&c, 1)]
            .iter()
            .all(|(id, n)| lines_of(&lines, id).len() >= *n)
    })
    .await;
    let lines = json_lines(&server);
    assert!(complete, "log:\n{}", server.log());

    let of_a = lines_of(&lines, &a);
    assert_eq!(
        messages(&of_a),
        [
            "request not authenticated",
            "request answered with an error"
        ],
        "{of_a:?}"
    );
    assert_eq!(of_a[1]["fields"]["status"], 401, "{of_a:?}");
    assert_eq!(of_a[1]["fields"]["route"], "/v1/me", "{of_a:?}");
    let of_b = lines_of(&lines, &b);
    assert_eq!(
        messages(&of_b),
        ["not a UUID in the path", "request answered with an error"],
        "{of_b:?}"
    );
    assert_eq!(messages(&lines_of(&lines, &c)), ["request"]);
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        // A line logged inside a request names it, in `span` and in the list of spans.
        if let Some(spans) = line["spans"].as_array() {
            let ids: Vec<&Value> = spans
                .iter()
                .filter(|s| s["name"] == "request")
                .map(|s| &s["request_id"])
                .collect();
            assert!(
                ids.iter().all(|id| id.is_string()) && ids.len() <= 1,
                "{line}"
            );
        }
    }
    // The start-up lines are JSON too (nothing else on stdout): the "listening" line says where.
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["url"] == server.url.as_str()),
        "log:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn with_json_logs_an_error_that_stops_the_server_is_a_json_line_too() {
    let database = fresh_database().await;
    let Some(url) = database.conninfo else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    // Outside dev mode without a token secret or JWKS: refused at start.
    let output = crate::binary::ferry_server(&["serve"])
        .env("DATABASE_URL", &url)
        .env("FERRY_PORT", "0")
        .env("FERRY_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.last().unwrap_or_else(|| panic!("nothing logged"));
    assert_eq!(last["level"], "ERROR", "{stderr}");
    assert_eq!(
        last["fields"]["message"],
        "ferry-server stopped on an error"
    );
    assert!(
        last["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("FERRY_JWT_SECRET (HS256) or FERRY_JWKS_URL")),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn text_logs_name_the_request_id_in_the_span_prefix() {
    let database = fresh_database().await;
    let Some(conninfo) = database.conninfo.clone() else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    let server = ServerProcess::start(&conninfo, &[]).await;
    let app = app_at(&server.url, database);
    let id = format!("obs-text-{}", Uuid::new_v4().simple());
    let response = app
        .client
        .get(app.url("/v1/me"))
        .header(HEADER, &id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let prefix = format!("request{{request_id={id}}}");
    let logged = eventually(Duration::from_secs(10), || {
        server
            .log_lines()
            .iter()
            .any(|l| l.contains(&prefix) && l.contains("request answered with an error"))
    })
    .await;
    assert!(logged, "no line with {prefix}:\n{}", server.log());
}

/// The value of one series (`name{labels}` exactly as rendered) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

fn tasks(n: usize) -> String {
    let list: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": Uuid::new_v4(), "title": format!("t{i}"), "status": "todo",
                   "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-02T00:00:00Z"})
        })
        .collect();
    Value::Array(list).to_string()
}

#[tokio::test]
async fn a_batch_moves_records_by_kind_and_outcome_write_time_by_kind_and_runs_by_status() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    for status in ["running", "verified", "rolled_back"] {
        assert_eq!(
            sample(
                &before,
                &format!(r#"ferry_migration_runs{{status="{status}"}}"#)
            ),
            Some(0.0),
            "{before}"
        );
    }
    assert_eq!(
        sample(
            &before,
            r#"ferry_records_total{kind="tasks",outcome="inserted"}"#
        ),
        None
    );
    assert_eq!(
        sample(&before, r#"ferry_batch_apply_seconds_count{kind="tasks"}"#),
        None
    );
    let memory = sample(&before, "process_resident_memory_bytes").unwrap_or_default();
    assert!(memory > 1024.0 * 1024.0, "{before}");

    let user = app.user();
    let run = Run::new();
    let batch = run.batch(&[
        ("tasks", &tasks(3)),
        ("userPreferences", r#"{"theme":"dark"}"#),
    ]);
    let result = app.send(&user.token, batch.clone()).await;
    assert!(!result.replay);
    // Sent again: a replay writes nothing and counts no record again.
    assert!(app.send(&user.token, batch).await.replay);

    let after = scrape(&app).await;
    assert_eq!(
        sample(
            &after,
            r#"ferry_records_total{kind="tasks",outcome="inserted"}"#
        ),
        Some(3.0),
        "{after}"
    );
    let kinds: Vec<&String> = result.counts.keys().collect();
    assert!(kinds.len() >= 2, "both kinds written: {result:?}");
    for kind in kinds {
        let series = format!(r#"ferry_batch_apply_seconds_count{{kind="{kind}"}}"#);
        assert_eq!(sample(&after, &series), Some(1.0), "{series}\n{after}");
        let sum = format!(r#"ferry_batch_apply_seconds_sum{{kind="{kind}"}}"#);
        assert!(
            sample(&after, &sum).is_some_and(|s| s > 0.0),
            "{sum}\n{after}"
        );
    }
    assert_eq!(
        sample(&after, r#"ferry_migration_runs{status="running"}"#),
        Some(1.0),
        "{after}"
    );

    // Rolled back: the run moves from running to rolled_back at the next scrape.
    let rollback = app
        .client
        .post(app.url(&format!("/v1/migrations/{}/rollback", run.migration_id)))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let status = rollback.status();
    assert_eq!(status, StatusCode::OK, "{}", rollback.text().await.unwrap());
    let rolled_back = scrape(&app).await;
    assert_eq!(
        sample(&rolled_back, r#"ferry_migration_runs{status="running"}"#),
        Some(0.0),
        "{rolled_back}"
    );
    assert_eq!(
        sample(
            &rolled_back,
            r#"ferry_migration_runs{status="rolled_back"}"#
        ),
        Some(1.0),
        "{rolled_back}"
    );
}

#[tokio::test]
async fn the_pool_gauges_show_connections_in_use_and_requests_waiting() {
    let app = spawn_app_with(|s| {
        s.db_pool_size = 1;
        // Long enough that the waiting request is still waiting when it is looked at.
        s.db_connect_timeout_ms = 30_000;
    })
    .await;
    let idle = scrape(&app).await;
    assert_eq!(sample(&idle, "ferry_db_pool_max_connections"), Some(1.0));
    assert_eq!(sample(&idle, "ferry_db_pool_connections_in_use"), Some(0.0));
    assert_eq!(sample(&idle, "ferry_db_pool_waiting"), Some(0.0));

    // Hold the user's lock: the first batch takes the only connection and waits on the lock,
    // the second waits for the connection.
    let user = app.user();
    let mut holder = tokio_postgres::Config::connect(&app.db_config, tokio_postgres::NoTls)
        .await
        .map(|(client, connection)| {
            tokio::spawn(connection);
            client
        })
        .unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[
            &ferry_server::db::USER_LOCK_CLASS,
            &ferry_server::db::user_lock_key(user.id),
        ],
    )
    .await
    .unwrap();
    let batch = Run::new().batch(&[("tasks", &tasks(2))]);
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (client, url, token, body) = (
            app.client.clone(),
            app.url("/v1/batches"),
            user.token.clone(),
            batch.clone(),
        );
        senders.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        // The scrape's own count of runs waits for the pool too (at most 2 s), and still
        // answers: the runs are then left out rather than the scrape hanging.
        let started = Instant::now();
        let text = scrape(&app).await;
        assert!(started.elapsed() < Duration::from_secs(5), "a scrape hung");
        if sample(&text, "ferry_db_pool_connections_in_use") == Some(1.0)
            && sample(&text, "ferry_db_pool_waiting") == Some(1.0)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "never busy:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sample(&busy, r#"ferry_migration_runs{status="running"}"#),
        None,
        "no connection for the count: the series are absent, not stale\n{busy}"
    );
    tx.commit().await.unwrap();
    for sender in senders {
        assert_eq!(sender.await.unwrap().unwrap(), StatusCode::OK);
    }
    let after = scrape(&app).await;
    assert_eq!(
        sample(&after, "ferry_db_pool_connections_in_use"),
        Some(0.0)
    );
    assert_eq!(sample(&after, "ferry_db_pool_waiting"), Some(0.0));
    assert_eq!(sample(&after, "ferry_db_pool_connections"), Some(1.0));
    assert_eq!(
        sample(&after, r#"ferry_migration_runs{status="running"}"#),
        Some(1.0),
        "{after}"
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_counts_both_write_attempts_and_its_quarantine() {
    let app = spawn_app().await;
    app.db
        .batch_execute("ALTER TABLE tasks ALTER COLUMN title TYPE varchar(20)")
        .await
        .unwrap();
    let list: Vec<Value> = (0..5)
        .map(|i| {
            let title = if i == 3 {
                "a title the spec allows but varchar(20) does not".to_owned()
            } else {
                format!("task {i}")
            };
            json!({"id": Uuid::new_v4(), "title": title, "status": "todo",
                   "createdAt": "2024-01-01T00:00:00Z"})
        })
        .collect();
    let user = app.user();
    let result = app
        .send(
            &user.token,
            Run::new().batch(&[("tasks", &Value::Array(list).to_string())]),
        )
        .await;
    assert_eq!(result.outcomes.len(), 5, "{result:?}");
    let text = scrape(&app).await;
    // The set-based statement the database refused, then the row-by-halves rewrite.
    assert_eq!(
        sample(&text, r#"ferry_batch_apply_seconds_count{kind="tasks"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"ferry_records_total{kind="tasks",outcome="inserted"}"#
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"ferry_records_total{kind="tasks",outcome="quarantined"}"#
        ),
        Some(1.0),
        "{text}"
    );
}
