//! Each example plugin, as its crate docs describe it. `foreach_plugin!`
//! fails the build if a plugin in `plugins/` has no module here.

mod common;

use common::*;
use serde_json::{Value, json};
use wasmvisor::Host;

macro_rules! each_plugin_has_a_test {
    ($name:ident) => {
        #[allow(unused_imports)]
        use $name as _;
    };
}
wasmvisor_tests::foreach_plugin!(each_plugin_has_a_test);

#[path = "plugins/groups.rs"]
mod group_manager;
#[path = "plugins/bank.rs"]
mod ledger;
#[path = "plugins/mentions.rs"]
mod mentions_sync;

#[path = "plugins/balances.rs"]
mod balances;
#[path = "plugins/group_worker.rs"]
mod group_worker;

mod tracker {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn observes_and_reports() {
        let (host, _dir) = host().await;
        start_ok(
            &host,
            "txn_1",
            "tracker",
            json!({"transaction_id": "txn_1"}),
        )
        .await;
        assert_eq!(
            call_ok(&host, "txn_1", json!({"observe": {"amount": 5}})).await,
            json!(1)
        );
        assert_eq!(
            call_ok(&host, "txn_1", json!({"observe": "paid"})).await,
            json!(2)
        );
        cast(&host, "txn_1", json!({"observe": 3})).unwrap();
        assert_eq!(
            call_ok(&host, "txn_1", json!("state")).await,
            json!({"args": {"transaction_id": "txn_1"}, "events": [{"amount": 5}, "paid", 3]})
        );
        assert_eq!(
            call_ok(&host, "txn_1", json!("version")).await,
            json!("0.1.0")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_that_does_not_decode_is_answered_not_crashed() {
        let (host, _dir) = host().await;
        start_ok(&host, "t", "tracker", json!({})).await;
        let reply = call_ok(&host, "t", json!({"launch": "rockets"})).await;
        assert_eq!(reply["error"], "bad_message");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("unknown variant"),
            "{reply}"
        );
        assert_eq!(host.child("t").unwrap().restarts, 0);
    }
}

mod board_monitor {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_a_sorted_set_of_users() {
        let (host, _dir) = host().await;
        start_ok(&host, "board:1", "board_monitor", json!({"board_id": "b1"})).await;
        let id = "board:1";
        assert_eq!(
            call_ok(&host, id, json!({"user_joined": "zoe"})).await,
            json!(["zoe"])
        );
        assert_eq!(
            call_ok(&host, id, json!({"user_joined": "adam"})).await,
            json!(["adam", "zoe"])
        );
        assert_eq!(
            call_ok(&host, id, json!({"user_joined": "zoe"})).await,
            json!(["adam", "zoe"])
        );
        assert_eq!(
            call_ok(&host, id, json!({"user_left": "zoe"})).await,
            json!(["adam"])
        );
        assert_eq!(
            call_ok(&host, id, json!({"user_left": "nobody"})).await,
            json!(["adam"])
        );
        assert_eq!(call_ok(&host, id, json!("users")).await, json!(["adam"]));
        assert_eq!(call_ok(&host, id, json!("board")).await, json!("b1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn needs_a_board_id() {
        let (host, _dir) = host().await;
        for args in [json!({}), json!({"board_id": ""}), json!(null)] {
            let err = host
                .start_child(spec("b", "board_monitor", args.clone()))
                .await;
            assert!(
                matches!(err, Err(wasmvisor::StartError::InitFailed(_))),
                "{args}: {err:?}"
            );
        }
    }
}

mod chaos {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_spins_and_allocates() {
        let (host, _dir) = host().await;
        start_ok(&host, "c", "chaos", json!([1, 2])).await;
        assert_eq!(call_ok(&host, "c", json!({"add": 2})).await, json!(2));
        cast(&host, "c", json!("bump")).unwrap();
        cast(&host, "c", json!({"add": 10})).unwrap();
        assert_eq!(
            call_ok(&host, "c", json!("state")).await,
            json!({"args": [1, 2], "count": 13})
        );
        assert_eq!(
            call_ok(&host, "c", json!({"spin": 10_000_000})).await,
            json!(1_333_000)
        );
        assert_eq!(call_ok(&host, "c", json!({"spin": 0})).await, json!(0));
        assert_eq!(call_ok(&host, "c", json!("version")).await, json!("0.1.0"));
        let grows = metric(&host, "wasmvisor_memory_grows_total");
        assert_eq!(call_ok(&host, "c", json!({"alloc_mb": 3})).await, json!(3));
        assert!(
            metric(&host, "wasmvisor_memory_grows_total") > grows,
            "3 MiB needs memory.grow"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_ends_the_instance_normally() {
        let (host, _dir) = host().await;
        host.start_child(spec_with(
            "c",
            "chaos",
            json!(null),
            wasmvisor::Restart::Transient,
        ))
        .await
        .unwrap();
        assert_eq!(call_ok(&host, "c", json!("stop")).await, json!("stopping"));
        wait_gone(&host, "c").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plugin_grows_memory_on_the_init_path() {
    let (host, _dir) = host().await;
    let args = [
        ("tracker", json!({"transaction_id": "t"})),
        ("board_monitor", json!({"board_id": "b"})),
        ("chaos", json!({"subscribe": ["a", "b"]})),
    ];
    for round in 0..20 {
        for (plugin, args) in &args {
            start_ok(&host, &format!("{plugin}-{round}"), plugin, args.clone()).await;
        }
    }
    assert_eq!(metric(&host, "wasmvisor_memory_grows_total"), 0);
}
