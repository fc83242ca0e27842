//! `group_worker`: a conversation group's decaying score.

use super::*;
use group_manager::{next_on, worker_args};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_scores_messages_and_reports_decayed_scores() {
    let (host, _dir) = host().await;
    let mut args = worker_args(60_000, 0.5);
    args["group"] = json!("g1");
    start_ok(&host, "w", "group_worker", args).await;
    for author in ["ann", "ann", "bob", "bob", "bob"] {
        cast(&host, "w", json!({"message": {"author": author}})).unwrap();
    }
    // ann 10, ann 5, bob 10, bob 5, bob 2.5
    assert_eq!(call_ok(&host, "w", json!("score")).await, json!(32.5));

    // A fast reporter: the score halves at each report; hot while >= 25.
    let mut args = worker_args(20, 0.5);
    args["group"] = json!("g2");
    args["floor"] = json!(1);
    let mut rx = host.events();
    host.start_child(spec_with(
        "w2",
        "group_worker",
        args,
        wasmvisor::Restart::Temporary,
    ))
    .await
    .unwrap();
    for author in ["a", "b", "c", "d", "e", "f"] {
        cast(&host, "w2", json!({"message": {"author": author}})).unwrap();
    }
    let hot = next_on(&mut rx, "groups", |_| true).await;
    assert_eq!(hot, json!({"group": "g2", "event": "hot"}));
    let report = next_on(&mut rx, "groups:scores", |v| v["group"] == "g2").await;
    assert!(report["score"].as_f64().unwrap() > 0.0, "{report}");
    // Below the floor it stops normally (temporary: gone).
    wait_gone(&host, "w2").await;
}
