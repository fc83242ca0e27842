//! `ledger`: the write side of CQRS over the event bus, run as in the
//! README's `rest_for_one` group `bank` (ledger first, then `balances`).

use super::*;
use wasmvisor::config::{GroupConfig, StaticChild, Strategy};

pub(super) async fn bank() -> (Host, tempfile::TempDir) {
    host_with(|c| {
        c.ephemeral = true;
        let child = |id: &str| StaticChild {
            id: id.into(),
            plugin: id.into(),
            args: json!({}),
            restart: Default::default(),
            activate: Default::default(),
            placement: Default::default(),
        };
        c.groups.push(GroupConfig {
            id: "bank".into(),
            strategy: Strategy::RestForOne,
            max_restarts: None,
            max_seconds: None,
            children: vec![child("ledger"), child("balances")],
            groups: Vec::new(),
            placement: Default::default(),
        });
    })
    .await
}

pub(super) async fn deposit(host: &Host, account: &str, amount: i64) -> Value {
    call_ok(
        host,
        "ledger",
        json!({"deposit": {"account": account, "amount": amount}}),
    )
    .await
}

pub(super) async fn balance(host: &Host, account: &str) -> Value {
    call_ok(host, "balances", json!({"balance": account})).await
}

/// Waits until the projection applied event `seq`.
pub(super) async fn caught_up(host: &Host, seq: u64) {
    tokio::time::timeout(LIMIT, async {
        while call(host, "balances", json!("seq")).await.ok() != Some(json!(seq)) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("balances never reached seq {seq}"));
}

pub(super) async fn restarts(host: &Host, id: &str, n: u64) {
    wait_for(&format!("{id} restarted {n} times"), LIMIT, || {
        host.child(id)
            .filter(|c| c.restarts == n && c.status == wasmvisor::Status::Running)
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_validated_and_become_events() {
    let (host, _dir) = bank().await;
    assert_eq!(deposit(&host, "alice", 100).await, json!({"ok": 1}));
    let withdraw = |amount: i64| json!({"withdraw": {"account": "alice", "amount": amount}});
    assert_eq!(
        call_ok(&host, "ledger", withdraw(30)).await,
        json!({"ok": 2})
    );
    assert_eq!(
        call_ok(&host, "ledger", withdraw(71)).await,
        json!({"error": "insufficient_funds"})
    );
    assert_eq!(
        call_ok(&host, "ledger", withdraw(-5)).await,
        json!({"error": "invalid_amount"})
    );
    assert_eq!(
        call_ok(&host, "ledger", json!({"events_since": 2})).await,
        json!([{"seq": 2, "account": "alice", "delta": -30}])
    );
    assert_eq!(
        call_ok(&host, "ledger", json!({"events_since": 1})).await,
        json!([
            {"seq": 1, "account": "alice", "delta": 100},
            {"seq": 2, "account": "alice", "delta": -30}
        ])
    );
    caught_up(&host, 2).await;
    assert_eq!(balance(&host, "alice").await, json!(70));
    assert_eq!(balance(&host, "nobody").await, json!(0));
}
