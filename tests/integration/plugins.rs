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

/// The lifecycle rule for every example plugin with a `snapshot`: a hot
/// reload continues the child without `init`, so what `init` set up must be
/// in the snapshot. After a reload each answers its read calls exactly as
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_with_a_snapshot_answers_as_before_after_a_reload() {
    let (host, _dir) = host().await;
    let worker = json!({"group": "g", "report_ms": 60_000, "initial": 3, "decay": 1.0, "floor": 0, "high": 100});
    // (plugin, args, calls that change it, calls that read it)
    let cases = [
        (
            "tracker",
            json!({"transaction_id": "t1"}),
            vec![json!({"observe": 1}), json!({"observe": "x"})],
            vec![json!("state")],
        ),
        (
            "board_monitor",
            json!({"board_id": "main"}),
            vec![json!({"user_joined": 7}), json!({"user_joined": "ann"})],
            vec![json!("users"), json!("board")],
        ),
        (
            "chaos",
            json!({"name": "c"}),
            vec![
                json!({"add": 5}),
                json!({"monitor": "nobody"}),
                json!({"all": ["infos"]}),
            ],
            vec![json!("state"), json!("infos")],
        ),
        (
            "group_worker",
            worker,
            vec![json!("score")],
            vec![json!("score")],
        ),
        (
            "ledger",
            Value::Null,
            vec![json!({"deposit": {"account": "a", "amount": 4}})],
            vec![json!({"balance": "a"}), json!({"events_since": 0})],
        ),
    ];
    for (i, (plugin, args, changes, reads)) in cases.into_iter().enumerate() {
        let id = format!("p{i}");
        start_ok(&host, &id, plugin, args).await;
        for msg in changes {
            call_ok(&host, &id, msg).await;
        }
        if plugin == "chaos" {
            wait_for_info(&host, &id, "the down", |i| i["down"]["id"] == "nobody").await;
        }
        let mut before = Vec::new();
        for msg in &reads {
            before.push(call_ok(&host, &id, msg.clone()).await);
        }
        let (_, path) = wasmvisor_tests::ALL_PLUGINS
            .iter()
            .find(|(n, _)| *n == plugin)
            .unwrap();
        reload(&host, plugin, rebuilt(std::fs::read(path).unwrap(), 7), 1).await;
        for (msg, was) in reads.iter().zip(before) {
            assert_eq!(
                call_ok(&host, &id, msg.clone()).await,
                was,
                "{plugin} {msg}"
            );
        }
        assert_eq!(host.child(&id).unwrap().restarts, 0, "{plugin}");
    }
}

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

    /// Starts board `id` and has `users` join it, in order.
    async fn board_with(host: &Host, id: &str, users: &[Value]) {
        start_ok(host, id, "board_monitor", json!({"board_id": id})).await;
        for u in users {
            call_ok(host, id, json!({ "user_joined": u })).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn integer_ids_reply_as_integers() {
        let (host, _dir) = host().await;
        board_with(&host, "b", &[]).await;
        assert_eq!(
            call_ok(&host, "b", json!({"user_joined": 3})).await,
            json!([3])
        );
        assert_eq!(
            call_ok(&host, "b", json!({"user_joined": 1})).await,
            json!([1, 3])
        );
        assert_eq!(
            call_ok(&host, "b", json!({"user_joined": 10})).await,
            json!([1, 3, 10])
        );
        assert_eq!(call_ok(&host, "b", json!("users")).await, json!([1, 3, 10]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn string_ids_reply_as_strings() {
        let (host, _dir) = host().await;
        board_with(&host, "b", &[]).await;
        assert_eq!(
            call_ok(&host, "b", json!({"user_joined": "a"})).await,
            json!(["a"])
        );
        assert_eq!(
            call_ok(&host, "b", json!({"user_joined": "10"})).await,
            json!(["10", "a"])
        );
        assert_eq!(
            call_ok(&host, "b", json!({"user_joined": "3"})).await,
            json!(["10", "3", "a"])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_integer_and_the_same_digits_as_a_string_are_two_users() {
        let (host, _dir) = host().await;
        board_with(&host, "b", &[json!("adam"), json!(2), json!("1")]).await;
        // Integers first, in numeric order, then strings.
        assert_eq!(
            call_ok(&host, "b", json!({"user_joined": 1})).await,
            json!([1, 2, "1", "adam"])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaving_works_for_both_kinds_of_id() {
        let (host, _dir) = host().await;
        board_with(&host, "b", &[json!(1), json!("1"), json!(2), json!("a")]).await;
        assert_eq!(
            call_ok(&host, "b", json!({"user_left": "1"})).await,
            json!([1, 2, "a"])
        );
        assert_eq!(
            call_ok(&host, "b", json!({"user_left": 1})).await,
            json!([2, "a"])
        );
        // Someone who is not there, of either kind.
        assert_eq!(
            call_ok(&host, "b", json!({"user_left": "2"})).await,
            json!([2, "a"])
        );
        assert_eq!(
            call_ok(&host, "b", json!({"user_left": 9})).await,
            json!([2, "a"])
        );
        cast(&host, "b", json!({"user_left": "a"})).unwrap();
        cast(&host, "b", json!({"user_left": 2})).unwrap();
        assert_eq!(call_ok(&host, "b", json!("users")).await, json!([]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_that_is_neither_an_integer_nor_a_string_is_answered_not_crashed() {
        let (host, _dir) = host().await;
        board_with(&host, "b", &[json!(1), json!("a")]).await;
        for id in [
            json!({"id": 1}),
            json!(1.5),
            json!(1.0),
            json!([1]),
            json!(null),
            json!(true),
        ] {
            for msg in [json!({ "user_joined": id }), json!({ "user_left": id })] {
                let reply = call_ok(&host, "b", msg.clone()).await;
                assert_eq!(reply["error"], "bad_message", "{msg}: {reply}");
                assert!(
                    reply["message"]
                        .as_str()
                        .unwrap()
                        .contains("an integer or a string"),
                    "{msg}: {reply}"
                );
                // A cast is dropped the same way.
                cast(&host, "b", msg).unwrap();
            }
        }
        assert_eq!(call_ok(&host, "b", json!("users")).await, json!([1, "a"]));
        assert_eq!(host.child("b").unwrap().restarts, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn typed_ids_survive_a_hot_reload() {
        let (host, _dir) = host().await;
        board_with(&host, "b", &[json!(7), json!("7"), json!("x"), json!(12)]).await;
        let old = host.child("b").unwrap().version;
        let wasm = std::fs::read(wasmvisor_tests::BOARD_MONITOR).unwrap();
        reload(&host, "board_monitor", rebuilt(wasm, 1), 1).await;
        let info = host.child("b").unwrap();
        assert_ne!(info.version, old);
        assert_eq!(info.restarts, 0);
        assert_eq!(
            call_ok(&host, "b", json!("users")).await,
            json!([7, 12, "7", "x"])
        );
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
    async fn a_panic_reports_its_message_and_backtrace() {
        let (host, _dir) = host().await;
        let mut events = host.events();
        start_ok(&host, "c", "chaos", json!(null)).await;
        let err = call(&host, "c", json!("panic"))
            .await
            .expect_err("it panics");
        let wasmvisor::CallError::Trapped(why) = err else {
            panic!("a panic answered {err:?}")
        };
        for want in ["chaos panic", "wasm backtrace:", "panic_now"] {
            assert!(
                why.contains(want),
                "no {want:?} in the caller's error:\n{why}"
            );
        }
        let exited = wait_child(&host, "c", "the restart", |c| c.restarts == 1).await;
        let last = exited.last_exit.expect("a last exit").to_string();
        assert!(
            last.contains("chaos panic") && last.contains("panic_now"),
            "{last}"
        );
        // The exit event carries it too.
        let reason = loop {
            let event = tokio::time::timeout(LIMIT, events.recv())
                .await
                .expect("an exit event in time")
                .expect("the event stream");
            let value = serde_json::to_value(&*event).expect("events are JSON");
            if value["type"] == "child_exited" {
                break value["reason"].to_string();
            }
        };
        assert!(reason.contains("panic_now"), "{reason}");
    }

    /// With `debug = true` and a build with debug info, the frames carry
    /// file and line; without `debug`, the same build's do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_debug_plugin_places_its_frames_in_its_sources() {
        let (host, _dir) = host_with_extra(
            &[
                ("chaos_debug", wasmvisor_tests::CHAOS_DEBUG),
                ("chaos_nodebug", wasmvisor_tests::CHAOS_DEBUG),
            ],
            |c| {
                let debug = wasmvisor::config::PluginConfig {
                    debug: true,
                    ..Default::default()
                };
                c.plugins.insert("chaos_debug".into(), debug);
            },
        )
        .await;
        for (id, plugin) in [("d", "chaos_debug"), ("n", "chaos_nodebug")] {
            start_ok(&host, id, plugin, json!(null)).await;
        }
        let trap = |id: &'static str| {
            let host = host.clone();
            async move {
                match call(&host, id, json!("panic")).await {
                    Err(wasmvisor::CallError::Trapped(why)) => why,
                    other => panic!("a panic answered {other:?}"),
                }
            }
        };
        let frame = |text: &str| {
            let line = text.lines().find(|l| l.contains("!chaos::panic_now"));
            line.unwrap_or_else(|| panic!("no panic_now frame in\n{text}"))
                .to_string()
        };
        let placed = frame(&trap("d").await);
        let source = include_str!("../../plugins/chaos/src/lib.rs");
        let line = 1 + source
            .lines()
            .position(|l| l.contains("panic!(\"chaos panic\")"))
            .expect("chaos panics somewhere");
        assert!(
            placed.ends_with(&format!("chaos/src/lib.rs:{line}")),
            "{placed}"
        );
        let plain = frame(&trap("n").await);
        assert!(!plain.contains(" at "), "{plain}");
    }

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
        // More than the initial memory: the guest grows it.
        assert_eq!(call_ok(&host, "c", json!({"alloc_mb": 3})).await, json!(3));
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
