//! `balances`: the projection of `ledger`, rebuilt after a restart.

use super::*;
use ledger::{balance, bank, caught_up, deposit, restarts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_balances_rebuild_without_losing_or_repeating_an_event() {
    let (host, _dir) = bank().await;
    for i in 0..50 {
        deposit(&host, if i % 2 == 0 { "a" } else { "b" }, 1).await;
    }
    caught_up(&host, 50).await;
    // Kill the projection while commands keep coming: those published
    // during its rebuild must be applied exactly once.
    let writer = {
        let host = host.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                deposit(&host, "a", 1).await;
            }
        })
    };
    host.kill_child("balances", "test").unwrap();
    writer.await.unwrap();
    restarts(&host, "balances", 1).await;
    caught_up(&host, 250).await;
    assert_eq!(balance(&host, "a").await, json!(225));
    assert_eq!(balance(&host, "b").await, json!(25));
    // Only the projection restarted.
    assert_eq!(host.child("ledger").unwrap().restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ledger_restarts_balances_too() {
    let (host, _dir) = bank().await;
    deposit(&host, "a", 10).await;
    caught_up(&host, 1).await;
    host.kill_child("ledger", "test").unwrap();
    restarts(&host, "ledger", 1).await;
    restarts(&host, "balances", 1).await;
    // A new ledger starts empty, and so does its projection.
    assert_eq!(call_ok(&host, "balances", json!("seq")).await, json!(0));
    assert_eq!(deposit(&host, "a", 5).await, json!({"ok": 1}));
    caught_up(&host, 1).await;
    assert_eq!(balance(&host, "a").await, json!(5));
}
