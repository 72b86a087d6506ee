//! The embedded cluster: start, stop, restart with data kept, recovery from killed runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_server::db;
use ferry_server::db::embedded_pg::{
    EmbeddedPg, EmbeddedPgOptions, Listen, PgBinaries, process_may_be_live_postgres,
};

use crate::helpers::{CLUSTER_DIR_PREFIX, eventually, start_embedded};

/// Deletes a test cluster's folder at the end of the test, pass or fail.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ignored = EmbeddedPg::stop_abandoned(&self.0.join("data"), None);
        let _ignored = fs::remove_dir_all(&self.0);
    }
}

fn test_root(name: &str) -> (PathBuf, Cleanup) {
    let root = PathBuf::from(format!("{CLUSTER_DIR_PREFIX}{}-{name}", std::process::id()));
    (root.clone(), Cleanup(root))
}

fn socket(root: &Path) -> Listen {
    Listen::UnixSocket {
        dir: root.join("run"),
        port: 5432,
    }
}

/// Starts again on an existing data directory (unlike `start_embedded`, which empties it).
/// Durable, like the server's own cluster: these tests are about keeping data.
fn restart(root: &Path) -> EmbeddedPg {
    restart_with(root, std::env::var_os("FERRY_PG_BIN").map(PathBuf::from))
}

/// [`restart`] with the binaries in `bin_dir`.
fn restart_with(root: &Path, bin_dir: Option<PathBuf>) -> EmbeddedPg {
    EmbeddedPg::start(EmbeddedPgOptions {
        data_dir: root.join("data"),
        listen: socket(root),
        bin_dir,
        ephemeral: false,
        settings: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("restart: {e}"))
}

async fn query_i32(cluster: &EmbeddedPg, sql: &str) -> i32 {
    let client = db::connect(&cluster.config("postgres")).await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn execute(cluster: &EmbeddedPg, sql: &str) {
    let client = db::connect(&cluster.config("postgres")).await.unwrap();
    client.batch_execute(sql).await.unwrap();
}

fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_cluster_keeps_its_data_across_stop_and_start() {
    let (root, _cleanup) = test_root("restart");
    let mut cluster = start_embedded(&root, socket(&root), false).unwrap();
    assert!(cluster.is_running().unwrap());
    execute(
        &cluster,
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)",
    )
    .await;

    cluster.stop().unwrap();
    assert!(!cluster.is_running().unwrap());
    assert!(!root.join("data/postmaster.pid").exists());
    drop(cluster);

    let cluster = restart(&root);
    assert_eq!(query_i32(&cluster, "SELECT v FROM kept").await, 42);
}

#[tokio::test]
async fn dropping_the_cluster_stops_it() {
    let (root, _cleanup) = test_root("drop");
    let cluster = start_embedded(&root, socket(&root), true).unwrap();
    let pid = cluster.postmaster_pid().unwrap();
    drop(cluster);
    assert!(
        !process_may_be_live_postgres(pid),
        "postmaster {pid} still running"
    );
}

/// A folder of PostgreSQL binaries whose `pg_ctl stop` returns at once and leaves the postmaster
/// to get its stop signal half a second later: what a loaded machine does to a real `pg_ctl stop
/// -w`, which returns when `postmaster.pid` is gone while the postmaster is still exiting.
fn binaries_whose_stop_returns_early(root: &Path) -> PathBuf {
    let real = PgBinaries::locate(
        std::env::var_os("FERRY_PG_BIN")
            .map(PathBuf::from)
            .as_deref(),
    )
    .unwrap();
    let dir = root.join("bin");
    fs::create_dir_all(&dir).unwrap();
    for tool in ["initdb", "postgres"] {
        std::os::unix::fs::symlink(real.bin_dir().join(tool), dir.join(tool)).unwrap();
    }
    let script = format!(
        r#"#!/bin/sh
if [ "$1" = stop ]; then
  while [ $# -gt 0 ] && [ "$1" != -D ]; do shift; done
  pid=$(head -n 1 "$2/postmaster.pid")
  (sleep 0.5; kill -INT "$pid") </dev/null >/dev/null 2>&1 &
  exit 0
fi
exec '{}' "$@"
"#,
        real.bin_dir().join("pg_ctl").display()
    );
    let pg_ctl = dir.join("pg_ctl");
    fs::write(&pg_ctl, script).unwrap();
    fs::set_permissions(&pg_ctl, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Regression: `dropping_the_cluster_stops_it` failed once under load, the postmaster still
/// alive right after `pg_ctl stop` returned. Here `pg_ctl stop` always returns early, so the
/// test fails every time unless stopping waits for the postmaster process itself.
#[tokio::test]
async fn stopping_waits_until_the_postmaster_is_gone() {
    let (root, _cleanup) = test_root("stop-waits");
    fs::create_dir_all(&root).unwrap();
    let bin_dir = binaries_whose_stop_returns_early(&root);
    let mut cluster = EmbeddedPg::start(EmbeddedPgOptions {
        data_dir: root.join("data"),
        listen: socket(&root),
        bin_dir: Some(bin_dir),
        ephemeral: false,
        settings: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("start: {e}"));
    let pid = cluster.postmaster_pid().unwrap();
    cluster.stop().unwrap();
    assert!(
        !process_may_be_live_postgres(pid),
        "postmaster {pid} still running after stop() returned"
    );
    drop(cluster);

    // The drop path too (it is how the server and the tests stop a cluster).
    let cluster = restart_with(&root, Some(root.join("bin")));
    let pid = cluster.postmaster_pid().unwrap();
    drop(cluster);
    assert!(
        !process_may_be_live_postgres(pid),
        "postmaster {pid} still running after the drop"
    );
}

#[tokio::test]
async fn a_stale_pid_file_from_a_killed_postmaster_is_recovered() {
    let (root, _cleanup) = test_root("stale-pid");
    let cluster = start_embedded(&root, socket(&root), false).unwrap();
    execute(
        &cluster,
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)",
    )
    .await;
    let pid = cluster.postmaster_pid().unwrap();
    kill_9(pid);
    // On a machine whose init does not reap orphans it stays a zombie: dead all the same.
    let gone = eventually(Duration::from_secs(10), || {
        !process_may_be_live_postgres(pid)
    })
    .await;
    assert!(gone, "postmaster {pid} survived SIGKILL");
    assert!(
        root.join("data/postmaster.pid").exists(),
        "the stale pid file is the point of this test"
    );
    // Nothing to stop: the drop must cope with a dead postmaster.
    drop(cluster);

    let cluster = restart(&root);
    assert_eq!(query_i32(&cluster, "SELECT v FROM kept").await, 7);
}

#[tokio::test]
async fn a_cluster_left_running_by_a_killed_server_is_restarted() {
    let (root, _cleanup) = test_root("left-running");
    let abandoned = start_embedded(&root, socket(&root), true).unwrap();
    let old_pid = abandoned.postmaster_pid().unwrap();
    // What a server killed with SIGKILL (watchdog and all) leaves: a running cluster, no lock.
    abandoned.detach();
    assert!(process_may_be_live_postgres(old_pid));

    let cluster = restart(&root);
    assert!(cluster.is_running().unwrap());
    assert_ne!(cluster.postmaster_pid(), Some(old_pid));
    assert_eq!(query_i32(&cluster, "SELECT 1").await, 1);
}

#[tokio::test]
async fn a_cluster_can_listen_on_a_free_loopback_port() {
    let (root, _cleanup) = test_root("tcp");
    let cluster = start_embedded(&root, Listen::Loopback { port: None }, true).unwrap();
    assert!(cluster.socket_dir().is_none());
    assert!(
        cluster
            .connection_string("postgres")
            .contains("host='127.0.0.1'")
    );
    assert_eq!(query_i32(&cluster, "SELECT 2").await, 2);
}

#[test]
fn a_non_empty_folder_that_is_no_cluster_is_refused() {
    let (root, _cleanup) = test_root("not-a-cluster");
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(root.join("data/precious.txt"), "do not initdb over me").unwrap();
    let error = EmbeddedPg::start(EmbeddedPgOptions::unix_socket(
        root.join("data"),
        root.join("run"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("is not empty and holds no PostgreSQL cluster"),
        "{error}"
    );
    assert!(root.join("data/precious.txt").exists());
}

#[tokio::test]
async fn a_data_directory_in_use_is_refused_and_left_alone() {
    let (root, _cleanup) = test_root("in-use");
    let first = start_embedded(&root, socket(&root), true).unwrap();
    let pid = first.postmaster_pid().unwrap();
    let error = EmbeddedPg::start(EmbeddedPgOptions::unix_socket(
        root.join("data"),
        root.join("run"),
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("in use by another process"), "{error}");
    assert!(
        error.contains(&std::process::id().to_string()),
        "names the holder: {error}"
    );
    // The first one's cluster was not touched.
    assert_eq!(first.postmaster_pid(), Some(pid));
    assert_eq!(query_i32(&first, "SELECT 3").await, 3);
}
