//! `group_manager`: one `group_worker` per active conversation group.

use super::*;
use std::sync::Arc;
use wasmvisor::Event;

pub(super) fn worker_args(report_ms: u64, decay: f64) -> Value {
    json!({"report_ms": report_ms, "initial": 0, "decay": decay, "floor": -1, "high": 25})
}

/// The next message on `topic` that `pick` accepts.
pub(super) async fn next_on(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    topic: &str,
    mut pick: impl FnMut(&Value) -> bool,
) -> Value {
    tokio::time::timeout(LIMIT, async {
        loop {
            let event = rx.recv().await.expect("events");
            if let Event::Topic { topic: t, msg } = &*event
                && t == topic
                && let Ok(v) = serde_json::from_slice::<Value>(msg)
                && pick(&v)
            {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing on {topic}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_keeps_one_worker_per_active_group() {
    let (host, _dir) = host().await;
    // Workers report every 20 ms and never cool down, so that their reports
    // show time passing.
    let args = json!({"interval_ms": 20, "groups": ["a", "b"], "worker": worker_args(20, 1.0)});
    start_ok(&host, "manager", "group_manager", args).await;
    let workers = || async { call_ok(&host, "manager", json!("workers")).await };
    tokio::time::timeout(LIMIT, async {
        while workers().await != json!(["group:a", "group:b"]) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both workers run");
    let info = host.child("group:a").unwrap();
    assert_eq!(info.plugin, "group_worker");
    assert_eq!(info.restart, wasmvisor::Restart::Temporary);
    assert_eq!(info.args["group"], json!("a"));

    assert_eq!(
        call_ok(&host, "manager", json!({"activate": "c"})).await,
        json!(["group:a", "group:b", "group:c"])
    );
    assert_eq!(
        call_ok(&host, "manager", json!({"deactivate": "b"})).await,
        json!(["group:a", "group:c"])
    );
    wait_gone(&host, "group:b").await;

    // A worker that goes down leaves the active set: it is not restarted.
    host.kill_child("group:c", "test").unwrap();
    tokio::time::timeout(LIMIT, async {
        while workers().await != json!(["group:a"]) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("group c dropped");
    // Several of the manager's intervals later it is still gone.
    let mut rx = host.events();
    for _ in 0..5 {
        next_on(&mut rx, "groups:scores", |v| v["group"] == "a").await;
    }
    assert!(host.child("group:c").is_none());
    assert_eq!(workers().await, json!(["group:a"]));
}

/// A group deactivated and activated again back to back keeps its new
/// worker: the old worker's `down` was removed with its monitor, so it
/// cannot drop the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deactivated_and_activated_back_to_back_stays_active() {
    let (host, _dir) = host().await;
    let args = json!({"interval_ms": 60_000, "groups": ["a"], "worker": worker_args(60_000, 1.0)});
    start_ok(&host, "manager", "group_manager", args).await;
    wait_for("the first worker", LIMIT, || host.child("group:a")).await;
    for round in 0..3 {
        // Both casts are queued before the manager handles the first: the
        // old worker's exit happens between them.
        cast(&host, "manager", json!({"deactivate": "a"})).unwrap();
        cast(&host, "manager", json!({"activate": "a"})).unwrap();
        // The first call may be queued before the old worker's `down`; the
        // second is certainly after it.
        call_ok(&host, "manager", json!("workers")).await;
        assert_eq!(
            call_ok(&host, "manager", json!("workers")).await,
            json!(["group:a"]),
            "round {round}"
        );
    }
    let worker = host.child("group:a").expect("a worker runs");
    assert_eq!(worker.status, wasmvisor::Status::Running);
}
