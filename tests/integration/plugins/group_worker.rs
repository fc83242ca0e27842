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

/// The lifecycle rule: a hot reload with a snapshot continues the child, so
/// its pending report timer carries over and the new version's `init` (which
/// would arm another) does not run. Each reload used to add a timer chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_worker_keeps_its_period_across_three_reloads() {
    const PERIOD_MS: u64 = 200;
    let (host, _dir) = host().await;
    let mut args = worker_args(PERIOD_MS, 1.0);
    args["group"] = json!("p");
    let mut rx = host.events();
    start_ok(&host, "p", "group_worker", args).await;
    let wasm = std::fs::read(wasmvisor_tests::GROUP_WORKER).unwrap();
    for tag in 1..=3 {
        next_on(&mut rx, "groups:scores", |v| v["group"] == "p").await;
        reload(&host, "group_worker", rebuilt(wasm.clone(), tag), 1).await;
    }
    assert_eq!(host.child("p").unwrap().restarts, 0);
    // Reports from now on only: a fresh receiver, not the backlog.
    let mut rx = host.events();
    next_on(&mut rx, "groups:scores", |v| v["group"] == "p").await;
    let first = std::time::Instant::now();
    for _ in 0..5 {
        next_on(&mut rx, "groups:scores", |v| v["group"] == "p").await;
    }
    // Five periods, less what a late receipt of the first report can take
    // off; four timer chains would report in about a quarter of it.
    let elapsed = first.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(5 * PERIOD_MS * 4 / 5),
        "5 reports after 3 reloads came in {elapsed:?}, not about {} ms",
        5 * PERIOD_MS
    );
}
