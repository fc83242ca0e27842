//! Start, lookup, call, cast, restart after a trap: the library API.

mod common;

use common::*;
use serde_json::json;
use wasmvisor::{CallError, ExitReason, StartError, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_lookup_call_cast() {
    let (host, _dir) = host().await;
    let addr = host
        .start_child(spec("t1", "tracker", json!({"transaction_id": "txn_1"})))
        .await
        .unwrap();
    assert_eq!(addr.id(), "t1");
    assert_eq!(call_ok(&host, "t1", json!({"observe": 1})).await, json!(1));
    cast(&host, "t1", json!({"observe": "two"})).unwrap();
    assert_eq!(
        call_ok(&host, "t1", json!("state")).await,
        json!({"args": {"transaction_id": "txn_1"}, "events": [1, "two"]})
    );
    assert!(host.lookup("t1").unwrap().same(&addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_restarts_with_the_same_args_and_address() {
    let (host, _dir) = host().await;
    let addr = host.start_child(spec("c1", "chaos", json!({"k": "v"}))).await.unwrap();
    assert_eq!(call_ok(&host, "c1", json!({"add": 5})).await, json!(5));
    let err = call(&host, "c1", json!("crash")).await.unwrap_err();
    assert!(matches!(err, CallError::Trapped(_)), "{err:?}");
    assert_eq!(
        call_ok(&host, "c1", json!("state")).await,
        json!({"args": {"k": "v"}, "count": 0})
    );
    assert!(host.lookup("c1").unwrap().same(&addr));
    let info = host.child("c1").unwrap();
    assert_eq!(info.restarts, 1);
    assert_eq!(info.status, Status::Running);
    assert!(matches!(info.last_exit, Some(ExitReason::Trap(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_started_and_not_found() {
    let (host, _dir) = host().await;
    host.start_child(spec("x", "chaos", json!(null))).await.unwrap();
    let err = host.start_child(spec("x", "chaos", json!(null))).await.unwrap_err();
    assert!(matches!(err, StartError::AlreadyStarted(_)), "{err:?}");
    assert_eq!(call(&host, "nope", json!("state")).await.unwrap_err(), CallError::NotFound);
    assert_eq!(cast(&host, "nope", json!("bump")).unwrap_err(), CallError::NotFound);
}

macro_rules! plugin_has_a_test {
    ($name:ident) => {};
}
wasmvisor_tests::foreach_plugin!(plugin_has_a_test);
