//! The operator dashboard's API (issue 16 §1): the operator token and nothing else opens it
//! (401/403 in the error shape otherwise), the summary and user list count real migrations,
//! the drill-down shows a user's runs and quarantine (sensitive values masked, hostile text
//! as sent), 404s for what does not exist, and a rollback done through it is the CLI's
//! rollback with one audit row per action, checked by SQL.

use ferry_server::startup::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Run, TestApp, expect_error, pairs, spawn_app, spawn_app_with};

const OPERATOR_TOKEN: &str = "operator-0123456789abcdef0123456789abcdef";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

async fn spawn_with_operator() -> TestApp {
    spawn_app_with(|s| s.operator_token = Some(Secret::new(OPERATOR_TOKEN.to_owned()))).await
}

async fn admin_get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn admin_json(app: &TestApp, path: &str) -> Value {
    let response = admin_get(app, path, Some(OPERATOR_TOKEN)).await;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
}

async fn rollback(app: &TestApp, user: &str, body: &Value, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/admin/api/users/{user}/rollback")))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST rollback: {e}"))
}

/// One migration of `token`'s user: two good tasks, one with a hostile title and a status the
/// spec does not know (quarantined), and preferences. Returns the run.
async fn migrate(app: &TestApp, token: &str) -> Run {
    let run = Run::new();
    let tasks = json!([
        {"id": Uuid::new_v4(), "title": "a", "status": "todo", "createdAt": "2024-01-01T00:00:00Z"},
        {"id": Uuid::new_v4(), "title": "b", "status": "done", "createdAt": "2024-01-01T00:00:00Z"},
        {"id": Uuid::new_v4(), "title": HOSTILE, "status": "bogus", "createdAt": "2024-01-01T00:00:00Z"},
    ]);
    let (_, batches) = run.batches(&pairs(&[
        ("tasks", &tasks.to_string()),
        ("userPreferences", r#"{"theme":"dark"}"#),
    ]));
    for b in batches {
        app.send(token, b.body).await;
    }
    run
}

/// The summary's totals of kind `tasks`, once checked to count every task record received.
async fn tasks_totals(app: &TestApp, summary: &Value) -> Value {
    let tasks = summary["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "tasks")
        .cloned()
        .unwrap_or_else(|| panic!("{summary}"));
    let received = app
        .count(
            "SELECT count(*) FROM ferry_received WHERE kind = 'tasks'",
            &[],
        )
        .await;
    assert_eq!(tasks["received"], received, "{summary}");
    tasks
}

#[tokio::test]
async fn without_an_operator_token_the_dashboard_is_off_and_says_how_to_turn_it_on() {
    let app = spawn_app().await;
    let user = app.user();
    for path in ["/admin", "/admin/api/summary", "/admin/api/users"] {
        let body = expect_error(
            admin_get(&app, path, Some(&user.token)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("FERRY_OPERATOR_TOKEN"), "{path}: {body}");
    }
}

#[tokio::test]
async fn only_the_operator_token_opens_the_data_and_the_page_holds_none() {
    let app = spawn_with_operator().await;
    let user = app.user();
    migrate(&app, &user.token).await;

    // The page is served without a credential, under a policy that runs only its own files.
    let page = admin_get(&app, "/admin", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains(&user.id.to_string()));
    for file in ["admin.js", "chart.js", "admin.css"] {
        let r = admin_get(&app, &format!("/admin/{file}"), None).await;
        assert_eq!(r.status(), StatusCode::OK, "{file}");
    }
    expect_error(
        admin_get(&app, "/admin/nothing.js", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let paths = [
        "/admin/api/summary".to_owned(),
        "/admin/api/users".to_owned(),
        format!("/admin/api/users/{}", user.id),
        "/admin/api/audit".to_owned(),
    ];
    for path in &paths {
        expect_error(
            admin_get(&app, path, None).await,
            StatusCode::UNAUTHORIZED,
            "missing_token",
        )
        .await;
        let wrong = format!("{OPERATOR_TOKEN}x");
        let body = expect_error(
            admin_get(&app, path, Some(&wrong)).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
        assert!(!body.to_string().contains(&user.id.to_string()), "{body}");
        // A user's valid token is never an operator's.
        let body = expect_error(
            admin_get(&app, path, Some(&user.token)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert!(!body.to_string().contains("received"), "{body}");
        admin_json(&app, path).await;
    }
    // Nor can a user's token act.
    let r = rollback(
        &app,
        &user.id.to_string(),
        &json!({"migration_id": Uuid::new_v4(), "confirm": true}),
        &user.token,
    )
    .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        app.count("SELECT count(*) FROM ferry_operator_audit", &[])
            .await,
        0
    );
}

#[tokio::test]
async fn the_dashboard_counts_users_and_drills_down_with_secrets_masked_and_text_as_sent() {
    let app = spawn_with_operator().await;
    let (alice, bob) = (app.user(), app.user());
    migrate(&app, &alice.token).await;
    migrate(&app, &bob.token).await;
    // Bob also has an environment whose config holds a token: quarantined (no name), masked.
    let run = Run::new();
    let envs = json!([{"id": Uuid::new_v4(), "config": {"githubToken": "ghp_topsecret"}}]);
    app.send(
        &bob.token,
        run.batch(&[("environments", &envs.to_string())]),
    )
    .await;

    let summary = admin_json(&app, "/admin/api/summary").await;
    assert_eq!(summary["users"]["started"], 2, "{summary}");
    assert_eq!(summary["users"]["in_progress"], 2, "{summary}");
    let tasks = tasks_totals(&app, &summary).await;
    assert_eq!(tasks["quarantined"], 2, "{summary}");
    // Top rejection reasons: by kind and field, counted, an example each, no secret in clear.
    let rejections = summary["rejections"].as_array().unwrap();
    let status = rejections
        .iter()
        .find(|r| r["kind"] == "tasks" && r["field"] == "status")
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(status["records"], 2, "{summary}");
    assert!(
        status["example"].as_str().unwrap().contains("bogus"),
        "{summary}"
    );
    assert!(
        rejections.iter().any(|r| r["kind"] == "environments"),
        "{summary}"
    );
    assert!(!summary.to_string().contains("ghp_topsecret"), "{summary}");
    let versions = summary["spec_versions"].as_array().unwrap();
    assert_eq!(
        versions.iter().map(|v| &v["users"]).collect::<Vec<_>>(),
        [2]
    );

    // The list, by state and a page at a time.
    let all = admin_json(&app, "/admin/api/users").await;
    let ids: Vec<&str> = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    let mut expected = vec![alice.id.to_string(), bob.id.to_string()];
    expected.sort();
    assert_eq!(ids, expected);
    let first = admin_json(&app, "/admin/api/users?limit=1").await;
    assert_eq!(first["users"].as_array().unwrap().len(), 1);
    let after = first["next_after"].as_str().unwrap();
    let second = admin_json(&app, &format!("/admin/api/users?limit=1&after={after}")).await;
    assert_eq!(second["users"][0]["user_id"], expected[1]);
    // Any threshold: a huge one is capped, not a database error; a negative one is refused.
    let capped = admin_json(
        &app,
        "/admin/api/summary?stalled_after_secs=18446744073709551615",
    )
    .await;
    assert_eq!(capped["users"]["in_progress"], 2, "{capped}");
    expect_error(
        admin_get(
            &app,
            "/admin/api/summary?stalled_after_secs=-1",
            Some(OPERATOR_TOKEN),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let stalled = admin_json(&app, "/admin/api/users?state=stalled&stalled_after_secs=0").await;
    assert_eq!(stalled["users"].as_array().unwrap().len(), 2, "{stalled}");
    let none = admin_json(&app, "/admin/api/users?state=verified").await;
    assert_eq!(none["users"], json!([]));
    let body = expect_error(
        admin_get(&app, "/admin/api/users?state=lost", Some(OPERATOR_TOKEN)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("lost"));

    // Bob's drill-down.
    let detail = admin_json(&app, &format!("/admin/api/users/{}", bob.id)).await;
    assert_eq!(detail["runs"].as_array().unwrap().len(), 2, "{detail}");
    let text = detail.to_string();
    assert!(!text.contains("ghp_topsecret"), "{text}");
    let quarantine = detail["quarantine"].as_array().unwrap();
    assert_eq!(detail["quarantine_total"], 2, "{detail}");
    assert!(
        quarantine
            .iter()
            .any(|q| q["raw_value"].as_str().is_some_and(|r| r.contains(HOSTILE))),
        "{detail}"
    );
    assert!(
        quarantine.iter().any(|q| q["kind"] == "environments"
            && q["raw_value"].as_str().is_some_and(|r| r.contains("•••"))),
        "{detail}"
    );

    // 404s in the error shape.
    for path in [
        format!("/admin/api/users/{}", Uuid::new_v4()),
        "/admin/api/users/not-a-uuid".to_owned(),
    ] {
        expect_error(
            admin_get(&app, &path, Some(OPERATOR_TOKEN)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
}

async fn tasks_of(app: &TestApp, user: Uuid) -> i64 {
    app.count("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user])
        .await
}

#[tokio::test]
async fn an_operator_rollback_is_the_clis_with_one_audit_row_per_action() {
    let app = spawn_with_operator().await;
    let (alice, bob) = (app.user(), app.user());
    let run = migrate(&app, &alice.token).await;
    migrate(&app, &bob.token).await;
    assert_eq!(tasks_of(&app, alice.id).await, 2);

    // No confirmation: nothing done, nothing audited.
    let body = json!({"migration_id": run.migration_id, "confirm": false});
    let r = rollback(&app, &alice.id.to_string(), &body, OPERATOR_TOKEN).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert_eq!(tasks_of(&app, alice.id).await, 2);

    // A migration the user does not have, and a user who does not exist: 404, audited.
    let confirm = |m: Uuid| json!({"migration_id": m, "confirm": true});
    let r = rollback(
        &app,
        &alice.id.to_string(),
        &confirm(Uuid::new_v4()),
        OPERATOR_TOKEN,
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = rollback(
        &app,
        &Uuid::new_v4().to_string(),
        &confirm(run.migration_id),
        OPERATOR_TOKEN,
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = rollback(&app, "nobody", &confirm(run.migration_id), OPERATOR_TOKEN).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;

    let r = rollback(
        &app,
        &alice.id.to_string(),
        &confirm(run.migration_id),
        OPERATOR_TOKEN,
    )
    .await;
    let status = r.status();
    let done: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["rollback"]["already_rolled_back"], false, "{done}");
    assert_eq!(tasks_of(&app, alice.id).await, 0);
    assert_eq!(
        tasks_of(&app, bob.id).await,
        2,
        "another user's rows are untouched"
    );
    assert_eq!(
        app.text(
            "SELECT status FROM ferry_migration_runs WHERE user_id = $1 AND migration_id = $2",
            &[&alice.id, &run.migration_id]
        )
        .await,
        "rolled_back"
    );
    let audit_id = done["audit_id"].as_i64().unwrap();
    let row = app
        .db
        .query_one(
            "SELECT operator, action, user_id, migration_id, result, (details->>'restored')::bigint
               FROM ferry_operator_audit WHERE id = $1",
            &[&audit_id],
        )
        .await
        .unwrap();
    assert!(row.get::<_, String>(0).starts_with("operator-token:"));
    assert!(!row.get::<_, String>(0).contains(OPERATOR_TOKEN));
    assert_eq!(row.get::<_, String>(1), "rollback");
    assert_eq!(row.get::<_, Uuid>(2), alice.id);
    assert_eq!(row.get::<_, Uuid>(3), run.migration_id);
    assert_eq!(row.get::<_, String>(4), "rolled_back");
    assert!(row.get::<_, Option<i64>>(5).unwrap() > 0);

    // Again: nothing more to do, and said so.
    let r = rollback(
        &app,
        &alice.id.to_string(),
        &confirm(run.migration_id),
        OPERATOR_TOKEN,
    )
    .await;
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["rollback"]["already_rolled_back"], true, "{again}");

    let results: Vec<String> = app
        .db
        .query("SELECT result FROM ferry_operator_audit ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        results,
        [
            "not_found",
            "not_found",
            "rolled_back",
            "already_rolled_back"
        ],
        "the non-UUID user never reached an action"
    );
    // The summary and the drill-down show it.
    let summary = admin_json(&app, "/admin/api/summary").await;
    assert_eq!(summary["users"]["rolled_back"], 1, "{summary}");
    let detail = admin_json(&app, &format!("/admin/api/users/{}", alice.id)).await;
    assert_eq!(detail["audit"].as_array().unwrap().len(), 3, "{detail}");
    let list = admin_json(&app, "/admin/api/users?state=rolled_back").await;
    assert_eq!(list["users"][0]["user_id"], alice.id.to_string());
}

#[test]
fn the_operator_token_comes_from_the_environment_or_a_file_and_must_be_long() {
    use ferry_server::startup::config::Settings;
    use ferry_server::startup::operator_token;
    let mut settings = Settings::defaults();
    assert!(operator_token(&settings).unwrap().is_none(), "none: off");

    let dir = std::env::temp_dir().join(format!("ferry-op-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("{OPERATOR_TOKEN}\nsecond line ignored\n")).unwrap();
    settings.operator_token_file = Some(file.clone());
    let token = operator_token(&settings).unwrap().unwrap();
    assert!(token.matches(OPERATOR_TOKEN));

    std::fs::write(&file, "short\n").unwrap();
    let error = operator_token(&settings).unwrap_err().to_string();
    assert!(error.contains("at least 32"), "{error}");
    settings.operator_token_file = Some(dir.join("missing"));
    let error = operator_token(&settings).unwrap_err().to_string();
    assert!(
        error.contains("cannot read") && error.contains("missing"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_operator_resolves_a_conflict_on_the_users_behalf_with_an_audit_row() {
    let app = spawn_with_operator().await;
    let (user, other) = (app.user(), app.user());
    let draft = |v: &str| format!(r#"{{"name":"{v}","savedAt":1700000000000}}"#);
    app.send(
        &user.token,
        Run::new().batch(&[("formData:contact", &draft("stored"))]),
    )
    .await;
    app.send(
        &user.token,
        Run::new().batch(&[("formData:contact", &draft("incoming"))]),
    )
    .await;
    let detail = admin_json(&app, &format!("/admin/api/users/{}", user.id)).await;
    let conflict = detail["conflicts"][0]["id"].as_i64().unwrap();
    let path = |u: &str, c: &str| format!("/admin/api/users/{u}/conflicts/{c}/resolve");
    let post = |p: String, body: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url(&p))
                .bearer_auth(OPERATOR_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let uid = user.id.to_string();
    let cid = conflict.to_string();

    // Refusals: editing is the user's, a confirmation is needed, another user's conflict is
    // not found, a user token cannot act.
    let r = post(
        path(&uid, &cid),
        json!({"choice": "edited", "confirm": true}),
    )
    .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = post(
        path(&uid, &cid),
        json!({"choice": "incoming", "confirm": false}),
    )
    .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = post(
        path(&other.id.to_string(), &cid),
        json!({"choice": "incoming", "confirm": true}),
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = post(
        path(&uid, "x"),
        json!({"choice": "incoming", "confirm": true}),
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .client
        .post(app.url(&path(&uid, &cid)))
        .bearer_auth(&user.token)
        .json(&json!({"choice": "incoming", "confirm": true}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;

    let r = post(
        path(&uid, &cid),
        json!({"choice": "incoming", "confirm": true}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let name = app
        .text(
            "SELECT data->>'name' FROM form_drafts WHERE user_id = $1",
            &[&user.id],
        )
        .await;
    assert_eq!(name, "incoming");
    assert_eq!(
        app.text(
            "SELECT status FROM ferry_conflicts WHERE id = $1",
            &[&conflict]
        )
        .await,
        "took_incoming"
    );
    let r = post(
        path(&uid, &cid),
        json!({"choice": "stored", "confirm": true}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "already_resolved").await;

    let rows: Vec<(String, String, Uuid, Option<Uuid>)> = app
        .db
        .query(
            "SELECT action, result, user_id, migration_id FROM ferry_operator_audit ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let results: Vec<(&str, &str)> = rows
        .iter()
        .map(|(a, r, _, _)| (a.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            ("resolve_conflict", "not_found"),
            ("resolve_conflict", "resolved"),
            ("resolve_conflict", "already_resolved")
        ]
    );
    assert_eq!(rows[1].2, user.id);
    assert!(rows[1].3.is_some(), "the conflict's migration is recorded");
}

/// The summary's counts, kept by ingest with the rows (schema migration 0012), against the
/// rows themselves: records received per kind and outcome, per hour and user, quarantined per
/// kind, rejection reasons by kind and field, and each run's latest batch time. Through a
/// replayed batch, a record sent again under another sequence, a record with two reasons and
/// three users.
#[tokio::test]
async fn the_counts_kept_at_ingest_equal_the_rows_they_count() {
    let app = spawn_with_operator().await;
    let spec = crate::helpers::demo_spec();
    let (alice, bob, carol) = (app.user(), app.user(), app.user());
    migrate(&app, &alice.token).await;
    migrate(&app, &bob.token).await;
    let run = Run::new();
    let same = json!([{"id": Uuid::new_v4(), "title": "c", "status": "todo", "createdAt": "2024-01-01T00:00:00Z"}])
        .to_string();
    let first = crate::helpers::batch_under(spec, &run, &[("tasks", &same)], 0);
    app.send(&carol.token, first.clone()).await;
    app.send(&carol.token, first).await;
    // Sent again under sequence 1 (a resumed run), with a record wrong in two fields.
    let two_reasons = json!([
        serde_json::from_str::<Value>(&same).unwrap()[0],
        {"id": Uuid::new_v4(), "title": 7, "status": "bogus", "createdAt": "2024-01-01T00:00:00Z"},
    ])
    .to_string();
    app.send(
        &carol.token,
        crate::helpers::batch_under(spec, &run, &[("tasks", &two_reasons)], 1),
    )
    .await;

    let rows = |sql: &'static str| {
        let app = &app;
        async move {
            let mut out: Vec<String> = app
                .db
                .query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<_, Option<String>>(i)
                                .map(|v| v.unwrap_or_else(|| "NULL".to_owned()))
                                .or_else(|_| row.try_get::<_, i64>(i).map(|n| n.to_string()))
                                .unwrap_or_else(|e| panic!("{sql}: column {i}: {e}"))
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .collect();
            out.sort();
            out
        }
    };
    let kept = rows(
        "SELECT kind, outcome, hour_utc::text, user_id::text, sum(records)::bigint FROM ferry_received_counts GROUP BY 1, 2, 3, 4",
    )
    .await;
    let counted = rows(
        "SELECT kind, outcome, date_trunc('hour', received_at AT TIME ZONE 'UTC')::text, user_id::text, count(*)
           FROM ferry_received GROUP BY 1, 2, 3, 4",
    )
    .await;
    assert_eq!(kept, counted);
    assert!(kept.len() >= 6, "{kept:?}");
    assert_eq!(
        rows("SELECT kind, user_id::text, records FROM ferry_quarantine_counts").await,
        rows("SELECT kind, user_id::text, count(*) FROM ferry_quarantine GROUP BY 1, 2").await
    );
    let kept = rows(
        "SELECT user_id::text, kind, field, reasons, records, example FROM ferry_rejection_counts",
    )
    .await;
    let counted = rows(
        "SELECT q.user_id::text, q.kind, substring(r.reason from 'field `([^`]*)`'),
                count(*), count(DISTINCT q.id), min(r.reason)
           FROM ferry_quarantine q, LATERAL jsonb_array_elements_text(q.reasons) AS r(reason)
          GROUP BY 1, 2, 3",
    )
    .await;
    assert_eq!(kept, counted);
    // Carol's second record was refused for its title and its status: two groups, one record
    // each (tasks/status also holds Alice's and Bob's).
    let carol_groups: Vec<&String> = kept
        .iter()
        .filter(|g| g.starts_with(&carol.id.to_string()))
        .collect();
    assert_eq!(carol_groups.len(), 2, "{kept:?}");
    assert_eq!(
        rows("SELECT user_id::text, migration_id::text, last_batch_at::text FROM ferry_migration_runs").await,
        rows(
            "SELECT user_id::text, migration_id::text, max(created_at)::text
               FROM ferry_ingest_ledger GROUP BY 1, 2"
        )
        .await
    );

    let summary = admin_json(&app, "/admin/api/summary").await;
    let tasks = tasks_totals(&app, &summary).await;
    assert_eq!(tasks["quarantined"], 3, "{summary}");
    let hours = summary["hours"].as_array().unwrap();
    assert_eq!(
        hours.iter().map(|h| h["users"].as_u64().unwrap()).max(),
        Some(3),
        "{summary}"
    );
}
