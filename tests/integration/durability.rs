//! Durable children: stored before a start or stop is acknowledged, brought
//! back in start order after a restart (even `kill -9`), never lost to a
//! damaged or shared database.

mod common;

use common::process::RunningHost;
use common::*;
use hyper::Method;
use serde_json::{Value, json};
use wasmvisor::config::OnExhausted;
use wasmvisor::{Config, Host, Restart, Status};

fn config(dir: &tempfile::TempDir) -> Config {
    let mut c = Config {
        plugins_dir: dir.path().join("plugins"),
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    c.pool.max_instances = 200;
    c
}

fn plugins_in(dir: &tempfile::TempDir) {
    wasmvisor_tests::copy_plugins(&dir.path().join("plugins"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_come_back_after_a_host_restart_and_stopped_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    plugins_in(&dir);
    let host = Host::new(config(&dir)).await.unwrap();
    assert!(host.is_durable());
    start_ok(&host, "first", "tracker", json!({"n": 1})).await;
    host.start_child(spec_with(
        "second",
        "chaos",
        json!({"n": 2}),
        Restart::Transient,
    ))
    .await
    .unwrap();
    start_ok(&host, "gone", "chaos", json!(null)).await;
    host.stop_child("gone").await.unwrap();
    // A temporary child that exits is removed, and forgotten too.
    host.start_child(spec_with("brief", "chaos", json!(null), Restart::Temporary))
        .await
        .unwrap();
    call_ok(&host, "brief", json!("stop")).await;
    wait_gone(&host, "brief").await;
    host.shutdown().await;
    assert_eq!(host.count_children(), 0);
    drop(host);

    let host = Host::new(config(&dir)).await.unwrap();
    let ids: Vec<String> = host.children().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["first", "second"]);
    let second = host.child("second").unwrap();
    assert!(second.restored);
    assert_eq!(
        (second.restart, second.status),
        (Restart::Transient, Status::Running)
    );
    assert_eq!(
        call_ok(&host, "first", json!("state")).await["args"],
        json!({"n": 1})
    );
    assert_eq!(
        call_ok(&host, "second", json!("state")).await["args"],
        json!({"n": 2})
    );
    // Children started now are not marked restored.
    start_ok(&host, "third", "chaos", json!(null)).await;
    assert!(!host.child("third").unwrap().restored);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_child_comes_back_failed() {
    let dir = tempfile::tempdir().unwrap();
    plugins_in(&dir);
    let failing = |dir: &tempfile::TempDir| {
        let mut c = config(dir);
        c.supervisor.max_restarts = 0;
        c.supervisor.on_exhausted = OnExhausted::Fail;
        c
    };
    let host = Host::new(failing(&dir)).await.unwrap();
    start_ok(&host, "f", "chaos", json!({"k": 1})).await;
    let _ = call(&host, "f", json!("crash")).await;
    wait_child(&host, "f", "failed", |c| c.status == Status::Failed).await;
    host.shutdown().await;
    drop(host);
    let host = Host::new(failing(&dir)).await.unwrap();
    let f = host.child("f").unwrap();
    assert_eq!(f.status, Status::Failed);
    assert!(matches!(f.last_exit, Some(wasmvisor::ExitReason::Trap(_))));
    // An operator revives it, and that sticks.
    host.restart_child("f").await.unwrap();
    assert_eq!(
        call_ok(&host, "f", json!("state")).await["args"],
        json!({"k": 1})
    );
    host.shutdown().await;
    drop(host);
    let host = Host::new(failing(&dir)).await.unwrap();
    wait_child(&host, "f", "running", |c| c.status == Status::Running).await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    plugins_in(&dir);
    let ephemeral = |dir: &tempfile::TempDir| Config {
        ephemeral: true,
        ..config(dir)
    };
    let host = Host::new(ephemeral(&dir)).await.unwrap();
    assert!(!host.is_durable());
    start_ok(&host, "e", "chaos", json!(null)).await;
    host.shutdown().await;
    drop(host);
    assert!(!dir.path().join("data").exists(), "nothing is written");
    let host = Host::new(ephemeral(&dir)).await.unwrap();
    assert_eq!(host.count_children(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_children_survive_kill_9() {
    let h = RunningHost::start(&[]).await;
    for i in 0..1_000 {
        let body = json!({"id": format!("d{i}"), "plugin": "chaos", "args": {"i": i}});
        h.client
            .json(Method::POST, "/v1/children", Some(&body))
            .await
            .unwrap();
    }
    let h = h.kill_and_restart(&[]).await;
    let children = h.get("/v1/children").await;
    assert_eq!(children.as_array().unwrap().len(), 1_000);
    for i in 0..1_000 {
        let body = json!({"msg": "state"});
        let reply = h
            .client
            .json(
                Method::POST,
                &format!("/v1/children/d{i}/call"),
                Some(&body),
            )
            .await
            .unwrap();
        assert_eq!(reply["reply"]["args"], json!({"i": i}));
    }
    assert!(
        children
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["restored"] == Value::Bool(true))
    );
    assert!(
        h.log().contains("[1000/1000] restoring child"),
        "progress is shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_shared_database_stops_the_start_with_a_clear_error() {
    let h = RunningHost::start(&[]).await;
    let body = json!({"id": "keep", "plugin": "chaos"});
    h.client
        .json(Method::POST, "/v1/children", Some(&body))
        .await
        .unwrap();
    // A second host on the same data dir.
    let second = tempfile::tempdir().unwrap();
    std::fs::create_dir(second.path().join("plugins")).unwrap();
    let out = tokio::process::Command::new(common::process::BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--plugins"])
        .arg(second.path().join("plugins"))
        .arg("--data")
        .arg(h.dir.path().join("data"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another wasmvisor host"), "{err}");

    let dir = h.kill_keep_dir().await;
    let db = dir.path().join("data/state.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b ^= 0xa5;
    }
    std::fs::write(&db, bytes).unwrap();
    let log = match RunningHost::start_in(dir, &[]).await {
        Ok(_) => panic!("a host started on a damaged database"),
        Err(log) => log,
    };
    assert!(
        log.contains("cannot open the state database") && log.contains("move it aside"),
        "{log}"
    );
}
