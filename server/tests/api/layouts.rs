//! The layouts of issue 11 §2 through the real ingest path: a spec with records nested at a
//! `path` (a persisted state container), per-record keys behind an `index` key, a `legacy`
//! boolean map, and two kinds sharing one table. The browser side is ferry-core's pipeline and
//! batcher; the server re-validates every record and writes real PostgreSQL, checked by SQL.

use ferry_core::spec::Spec;
use ferry_core::wire::{self, BatchHeader, BatchLimits};
use ferry_server::ingest::RecordOutcome as O;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Run, TestApp, pairs, spawn_app_with};

fn layouts_spec_text() -> String {
    let text = |c: &str| json!({ "from": c, "column": c, "type": "string", "required": true });
    json!({
        "ferry_spec": 1,
        "app": "layouts-test",
        "version": "1",
        "kinds": [
            {
                "name": "items",
                "source": { "array": "pantry-store", "path": "/state/items" },
                "id": { "from": "id", "scope": "global", "legacy_column": "legacy_id" },
                "table": "pantry_items",
                "conflict": "overwrite",
                "fields": [
                    text("name"),
                    { "from": "stocked", "column": "stocked", "type": "boolean", "required": true,
                      "legacy": { "yes": true, "no": false, "1": true, "0": false } }
                ]
            },
            {
                "name": "settings",
                "source": { "object": "pantry-store", "path": "/state/settings" },
                "id": { "from": "$singleton", "scope": "global" },
                "table": "pantry_settings",
                "conflict": "overwrite",
                "fields": [text("unit")]
            },
            {
                "name": "recipes",
                "source": { "prefix": "recipe:", "index": "recipes.index", "index_path": "/ids" },
                "id": { "from": "$key_suffix", "scope": "device", "legacy_column": "legacy_id" },
                "table": "recipes",
                "conflict": "overwrite",
                "fields": [text("title")]
            },
            {
                "name": "notes_v1",
                "source": { "array": "notes" },
                "id": { "from": "id", "scope": "global", "legacy_column": "legacy_id" },
                "table": "notes",
                "shares_table": true,
                "conflict": "overwrite",
                "fields": [text("text")]
            },
            {
                "name": "notes_v2",
                "source": { "map": "notes-v2" },
                "id": { "from": "$map_key", "scope": "global", "legacy_column": "legacy_id" },
                "table": "notes",
                "shares_table": true,
                "conflict": "overwrite",
                "fields": [text("text")]
            }
        ]
    })
    .to_string()
}

/// A server running the layouts spec, its tables created from `spec ddl`.
async fn spawn_layouts_app(spec: &Spec) -> TestApp {
    let dir = std::env::temp_dir().join(format!("ferry-layouts-{}", Uuid::new_v4()));
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(dir.join("spec.json"), layouts_spec_text()).unwrap();
    std::fs::write(
        migrations.join("0001_tables.sql"),
        ferry_server::db::ddl::create_tables(spec),
    )
    .unwrap();
    let app = spawn_app_with(|s| {
        s.spec = vec![dir.join("spec.json")];
        s.app_migrations = Some(migrations);
    })
    .await;
    // Read at start: the folder is not left behind in the temporary directory.
    let _ = std::fs::remove_dir_all(&dir);
    app
}

#[tokio::test]
async fn nested_index_legacy_and_shared_table_layouts_reach_postgresql() {
    let spec = Spec::parse(&layouts_spec_text()).unwrap();
    let app = spawn_layouts_app(&spec).await;
    let user = app.user();
    let run = Run::new();
    let store = json!({
        "state": {
            "items": [
                { "id": "rice", "name": "Rice", "stocked": "yes" },
                { "id": "salt", "name": "Salt", "stocked": 0 }
            ],
            "settings": { "unit": "metric" }
        },
        "version": 3
    })
    .to_string();
    let local = pairs(&[
        ("pantry-store", &store),
        ("recipes.index", r#"{"ids":["1",2]}"#),
        ("recipe:1", r#"{"title":"Soup"}"#),
        ("recipe:2", r#"{"title":"Bread"}"#),
        ("recipe:3", r#"{"title":"Deleted long ago"}"#),
        (
            "notes",
            r#"[{"id":"n1","text":"old name"},{"id":"n2","text":"only v1"}]"#,
        ),
        ("notes-v2", r#"{"n1":{"text":"renamed"}}"#),
    ]);
    let records = ferry_core::pipeline::process(&spec, &local, &run.context());
    let header = BatchHeader::new(&spec, run.migration_id, &run.context());
    let batches = wire::build_batches(
        &spec,
        &header,
        &records,
        0..records.len(),
        0,
        BatchLimits::default(),
    );
    assert_eq!(batches.len(), 1);
    let result = app
        .send(&user.token, batches.into_iter().next().unwrap().body)
        .await;
    let inserted = result
        .outcomes
        .iter()
        .filter(|o| o.outcome == O::Inserted)
        .count();
    // 2 items, 1 settings, 2 listed recipes, notes n1 (v2 wins: `last`) and n2.
    assert_eq!(inserted, 7, "{result:?}");

    let rows = app
        .db
        .query(
            "SELECT legacy_id, name, stocked FROM pantry_items WHERE user_id = $1 ORDER BY legacy_id",
            &[&user.id],
        )
        .await
        .unwrap();
    let items: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        items,
        vec![
            ("rice".to_owned(), "Rice".to_owned(), true),
            ("salt".to_owned(), "Salt".to_owned(), false)
        ]
    );
    assert_eq!(
        app.text(
            "SELECT unit FROM pantry_settings WHERE user_id = $1",
            &[&user.id]
        )
        .await,
        "metric"
    );
    let recipes = app
        .texts(
            "SELECT legacy_id FROM recipes WHERE user_id = $1 ORDER BY legacy_id",
            &[&user.id],
        )
        .await;
    assert_eq!(recipes, vec!["1", "2"]);
    let notes: Vec<(String, String)> = app
        .db
        .query(
            "SELECT legacy_id, text FROM notes WHERE user_id = $1 ORDER BY legacy_id",
            &[&user.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        notes,
        vec![
            ("n1".to_owned(), "renamed".to_owned()),
            ("n2".to_owned(), "only v1".to_owned())
        ]
    );

    // The unlisted recipe and the losing note copy are in the quarantine with their reasons.
    let quarantined = app
        .db
        .query(
            "SELECT kind, key, raw_value, reasons::text FROM ferry_quarantine WHERE user_id = $1 ORDER BY key",
            &[&user.id],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String, String)> = quarantined
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (kind, key, raw, reasons) = &rows[0];
    assert_eq!((kind.as_str(), key.as_str()), ("notes_v1", "notes"));
    assert!(
        raw.contains("old name") && reasons.contains("same id"),
        "{reasons}"
    );
    let (kind, key, raw, reasons) = &rows[1];
    assert_eq!((kind.as_str(), key.as_str()), ("recipes", "recipe:3"));
    assert!(raw.contains("Deleted long ago"), "{raw}");
    assert!(
        reasons.contains("not listed") && reasons.contains("recipes.index"),
        "{reasons}"
    );
}
