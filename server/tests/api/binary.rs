//! The `ferry-server` binary itself: `serve` with the embedded cluster and Ctrl-C, `migrate`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ferry_server::db::embedded_pg::{EmbeddedPg, process_may_be_live_postgres};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{CLUSTER_DIR_PREFIX, eventually, fresh_database};

const BINARY: &str = env!("CARGO_BIN_EXE_ferry-server");

/// The binary with a clean environment: none of the developer's `FERRY_*` or `DATABASE_URL`;
/// the project is the demo, as `scripts/demo.sh` starts it: the repository as project dir and
/// the demo's app schema migrations (remove both to see what a copied binary does).
pub fn ferry_server(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FERRY_PROJECT_DIR", crate::helpers::repo_root())
        .env(
            "FERRY_APP_MIGRATIONS",
            crate::helpers::demo_migrations_dir(),
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    if let Some(bin) = std::env::var_os("FERRY_PG_BIN") {
        command.env("FERRY_PG_BIN", bin);
    }
    command
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ignored = self.0.kill();
        let _ignored = self.0.wait();
    }
}

fn send_sigint(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn serve_without_database_url_runs_embedded_postgres_and_ctrl_c_stops_both() {
    let project = PathBuf::from(format!("{CLUSTER_DIR_PREFIX}{}-serve", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&project);
    std::fs::create_dir_all(project.join("www")).unwrap();
    let data_dir = project.join(".ferry/pgdata");

    let spec = crate::helpers::repo_root().join("specs/taskboard.json");
    let child = ferry_server(&["serve"])
        .env("FERRY_PROJECT_DIR", &project)
        .env("FERRY_SPEC", &spec)
        .env(
            "FERRY_APP_MIGRATIONS",
            crate::helpers::demo_migrations_dir(),
        )
        .env("FERRY_PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);

    // Read the log until the server says where it listens; keep the rest for failures.
    let stderr = server.0.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let url = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no 'listening on' line; log so far:\n{}", log.join("\n")));
        log.push(line.clone());
        if let Some((_, rest)) = line.split_once("listening on http://") {
            let address: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            break format!("http://{address}");
        }
    };

    // It says at start which project dir it uses.
    assert!(
        log.iter()
            .any(|l| l.contains("project dir") && l.contains(&*project.to_string_lossy())),
        "log:\n{}",
        log.join("\n")
    );
    // It says at start which tokens it accepts.
    assert!(
        log.iter()
            .any(|l| l.contains("tokens: HS256 with a secret generated for this run")),
        "log:\n{}",
        log.join("\n")
    );
    let client = reqwest::Client::new();
    let ready = client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "log:\n{}", log.join("\n"));
    // Dev mode without FERRY_FIELD_KEY: a key is generated once and kept, owner-only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key_file = project.join(".ferry/field.key");
        let mode = std::fs::metadata(&key_file)
            .unwrap_or_else(|e| panic!("{}: {e}", key_file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Embedded means dev mode: a demo token works against the embedded database's server.
    let token: Value = client
        .post(format!("{url}/dev/token"))
        .header("content-type", "application/json")
        .body(r#"{"user":"alice"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me = client
        .get(format!("{url}/v1/me"))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    let pid_file = data_dir.join("postmaster.pid");
    let postmaster: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(process_may_be_live_postgres(postmaster));

    // An operator command joins the cluster the running server drives.
    let status = ferry_server(&["status"])
        .env("FERRY_PROJECT_DIR", &project)
        .env("FERRY_SPEC", &spec)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "status while the server runs: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("0 run(s)"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    send_sigint(&server.0);
    let exited = eventually(Duration::from_secs(30), || {
        matches!(server.0.try_wait(), Ok(Some(_)))
    })
    .await;
    while let Ok(line) = lines_rx.try_recv() {
        log.push(line);
    }
    assert!(
        exited,
        "the server did not stop on SIGINT; log:\n{}",
        log.join("\n")
    );
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status}; log:\n{}", log.join("\n"));
    assert!(
        !pid_file.exists(),
        "the cluster was not stopped; log:\n{}",
        log.join("\n")
    );
    assert!(!process_may_be_live_postgres(postmaster));

    let _ignored = EmbeddedPg::stop_abandoned(&data_dir, None);
    let _ignored = std::fs::remove_dir_all(&project);
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_jwt_secret_outside_dev_mode() {
    let database = fresh_database().await;
    let Some(url) = database.conninfo else {
        return; // An external DATABASE_URL: no connection string for this database.
    };
    let output = ferry_server(&["serve"])
        .env("DATABASE_URL", &url)
        .env("FERRY_PORT", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FERRY_JWT_SECRET (HS256) or FERRY_JWKS_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_migrate_subcommand_migrates_then_has_nothing_to_do() {
    let database = fresh_database().await;
    let Some(url) = database.conninfo else {
        return;
    };
    let run = || {
        let output = ferry_server(&["migrate"])
            .env("DATABASE_URL", &url)
            .env("FERRY_PROJECT_DIR", crate::helpers::repo_root())
            .env(
                "FERRY_APP_MIGRATIONS",
                crate::helpers::demo_migrations_dir(),
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let first = run();
    assert!(
        first.contains("applied    ferry/0001_ferry_tables"),
        "{first}"
    );
    assert!(
        first.contains("applied    app/0001_demo_app_tables"),
        "{first}"
    );
    let second = run();
    assert!(
        second.contains(&format!(
            "0 applied, 0 baselined, {} already applied",
            ferry_server::db::schema_migrations::SCHEMA_MIGRATIONS.len()
                + crate::helpers::demo_app_migrations().len()
        )),
        "{second}"
    );
}

#[tokio::test]
async fn migrate_baseline_records_hand_made_app_tables() {
    let database = fresh_database().await;
    let Some(url) = database.conninfo.clone() else {
        return;
    };
    let app_sql = crate::helpers::demo_app_migrations().remove(0).sql;
    database.client.batch_execute(&app_sql).await.unwrap();
    let output = ferry_server(&["migrate", "--baseline"])
        .env("DATABASE_URL", &url)
        .env("FERRY_PROJECT_DIR", crate::helpers::repo_root())
        .arg("--app-migrations")
        .arg(crate::helpers::demo_migrations_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("baselined  app/0001_demo_app_tables"),
        "{stdout}"
    );
}

/// Regression: operator commands in a project without a database ran `initdb` and created one.
#[test]
fn operator_commands_without_a_database_create_nothing_and_say_how_to_get_one() {
    let project = PathBuf::from(format!("{CLUSTER_DIR_PREFIX}{}-nodb", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&project);
    std::fs::create_dir_all(&project).unwrap();
    let spec = crate::helpers::repo_root().join("specs/taskboard.json");
    let (user, migration) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let commands: [&[&str]; 5] = [
        &["migrate"],
        &["status"],
        &["conflicts"],
        &["quarantine"],
        &["rollback", "--user", &user, "--migration", &migration],
    ];
    // Named, or (a copied binary) the current directory: never the checkout it was built in.
    let runs = commands
        .iter()
        .flat_map(|args| [(*args, true), (*args, false)]);
    for (args, named) in runs {
        let mut command = ferry_server(args);
        command.env("FERRY_SPEC", &spec);
        if named {
            command.env("FERRY_PROJECT_DIR", &project);
        } else {
            command
                .env_remove("FERRY_PROJECT_DIR")
                .current_dir(&project);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        for says in [
            "no database to work on",
            "ferry-server serve",
            "DATABASE_URL",
            &project.join(".ferry/pgdata").display().to_string(),
        ] {
            assert!(stderr.contains(says), "{args:?}: {says:?} not in {stderr}");
        }
        let left: Vec<_> = std::fs::read_dir(&project)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{args:?} created {left:?} in the project");
    }
    let _ignored = std::fs::remove_dir_all(&project);
}

/// A refused spec or app migrations folder stops `serve` before anything is written: not even
/// the embedded cluster is created.
#[test]
fn serve_with_a_bad_spec_or_app_folder_lists_every_problem_and_writes_nothing() {
    let project = PathBuf::from(format!(
        "{CLUSTER_DIR_PREFIX}{}-badinput",
        std::process::id()
    ));
    let _ignored = std::fs::remove_dir_all(&project);
    let inputs = project.join("inputs");
    std::fs::create_dir_all(inputs.join("migrations")).unwrap();
    for (name, sql) in [
        ("0001_a.sql", "CREATE TABLE a (id int);"),
        ("0003_c.sql", "CREATE TABLE c (id int);"),
        ("1_bad.sql", "CREATE TABLE b (id int);"),
    ] {
        std::fs::write(inputs.join("migrations").join(name), sql).unwrap();
    }
    std::fs::write(inputs.join("bad-spec.json"), "{\"app\": 1}").unwrap();
    let spec = crate::helpers::repo_root().join("specs/taskboard.json");
    let cases = [
        (
            spec.clone(),
            inputs.join("migrations"),
            vec![
                "\"1_bad.sql\": not a schema migration file name",
                "version 0002 is missing",
            ],
        ),
        (
            inputs.join("bad-spec.json"),
            crate::helpers::demo_migrations_dir(),
            vec!["bad-spec.json", "was refused"],
        ),
    ];
    for (spec, folder, says) in cases {
        let output = ferry_server(&["serve"])
            .env("FERRY_PROJECT_DIR", &project)
            .env("FERRY_SPEC", &spec)
            .env("FERRY_APP_MIGRATIONS", &folder)
            .env("FERRY_PORT", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        for said in says {
            assert!(stderr.contains(said), "{said:?} not in {stderr}");
        }
        assert!(
            !project.join(".ferry").exists(),
            "a refused start created {}",
            project.join(".ferry").display()
        );
    }
    let _ignored = std::fs::remove_dir_all(&project);
}
