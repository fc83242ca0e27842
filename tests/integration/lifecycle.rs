//! The dynamic supervisor through the library API: start, lookup, call,
//! cast, restart policies, restart intensity, operator stop/restart/kill.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use wasmvisor::config::{OnExhausted, PluginConfig};
use wasmvisor::{CallError, ExitReason, Restart, StartError, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_lookup_call_cast() {
    let (host, _dir) = host().await;
    let addr = host
        .start_child(spec("t1", "tracker", json!({"transaction_id": "txn_1"})))
        .await
        .unwrap()
        .expect("a tracker is not ignored");
    assert_eq!(addr.id(), "t1");
    assert_eq!(call_ok(&host, "t1", json!({"observe": 1})).await, json!(1));
    cast(&host, "t1", json!({"observe": "two"})).unwrap();
    assert_eq!(
        call_ok(&host, "t1", json!("state")).await,
        json!({"args": {"transaction_id": "txn_1"}, "events": [1, "two"]})
    );
    assert!(host.lookup("t1").unwrap().same(&addr));
    assert_eq!(host.count_children(), 1);
    let info = host.child("t1").unwrap();
    assert_eq!(info.status, Status::Running);
    assert_eq!(info.restarts, 0);
    assert_eq!(info.version.as_deref().map(str::len), Some(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_started_and_not_found() {
    let (host, _dir) = host().await;
    start_ok(&host, "x", "chaos", json!(null)).await;
    let err = host
        .start_child(spec("x", "tracker", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::AlreadyStarted(_)), "{err:?}");
    assert_eq!(
        call(&host, "nope", json!("state")).await.unwrap_err(),
        CallError::NotFound
    );
    assert_eq!(
        cast(&host, "nope", json!("bump")).unwrap_err(),
        CallError::NotFound
    );
    assert!(host.lookup("nope").is_none());
    let err = host
        .start_child(spec("y", "no_such_plugin", json!(null)))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::UnknownPlugin(_)), "{err:?}");
    assert!(host.child("y").is_none(), "a failed start frees the id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_failure_fails_the_start_and_frees_the_id() {
    let (host, _dir) = host().await;
    let err = host
        .start_child(spec("t", "tracker", json!("not an object")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::InitFailed(m) if m.contains("args must be a JSON object")),
        "{err:?}"
    );
    let err = host
        .start_child(spec("c", "chaos", json!({"crash_init": true})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::InitFailed(m) if m.contains("unreachable")),
        "{err:?}"
    );
    assert_eq!(host.count_children(), 0);
    start_ok(&host, "t", "tracker", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_restarts_with_the_same_args_and_address() {
    let (host, _dir) = host().await;
    let addr = host
        .start_child(spec("c1", "chaos", json!({"k": "v"})))
        .await
        .unwrap()
        .expect("chaos is not ignored");
    assert_eq!(call_ok(&host, "c1", json!({"add": 5})).await, json!(5));
    crash_and_find_args_kept(&host, "c1", json!({"k": "v"})).await;
    assert!(host.lookup("c1").unwrap().same(&addr));
    let info = host.child("c1").unwrap();
    assert_eq!(info.restarts, 1);
    assert_eq!(info.status, Status::Running);
    assert!(matches!(info.last_exit, Some(ExitReason::Trap(_))));
}

/// A `"crash"` call traps with `unreachable`; the restarted instance has
/// the same init `args` and a fresh count.
async fn crash_and_find_args_kept(host: &wasmvisor::Host, id: &str, args: serde_json::Value) {
    let err = call(host, id, json!("crash")).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Trapped(m) if m.contains("unreachable")),
        "{err:?}"
    );
    assert_eq!(
        call_ok(host, id, json!("state")).await,
        json!({"args": args, "count": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_queued_behind_a_crash_reach_the_new_instance() {
    let (host, _dir) = host().await;
    start_ok(&host, "c", "chaos", json!(null)).await;
    cast(&host, "c", json!("crash")).unwrap();
    for _ in 0..50 {
        cast(&host, "c", json!("bump")).unwrap();
    }
    // The mailbox is first in, first out: the call is answered after the
    // crash and the 50 bumps, by the restarted instance.
    assert_eq!(
        call_ok(&host, "c", json!("state")).await,
        json!({"args": null, "count": 50})
    );
    assert_eq!(host.child("c").unwrap().restarts, 1);
}

/// How an instance of `id` is made to exit.
#[derive(Clone, Copy, Debug)]
enum Exit {
    Normal,
    Trap,
    Kill,
}

async fn make_exit(host: &wasmvisor::Host, id: &str, how: Exit) {
    match how {
        Exit::Normal => assert_eq!(call_ok(host, id, json!("stop")).await, json!("stopping")),
        Exit::Trap => assert!(matches!(
            call(host, id, json!("crash")).await,
            Err(CallError::Trapped(_))
        )),
        Exit::Kill => host.kill_child(id, "test kill").unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_and_exit_reason() {
    let (host, _dir) = host().await;
    for policy in [Restart::Permanent, Restart::Transient, Restart::Temporary] {
        for how in [Exit::Normal, Exit::Trap, Exit::Kill] {
            let id = format!("{policy}-{how:?}");
            host.start_child(spec_with(&id, "chaos", json!({"case": id}), policy))
                .await
                .unwrap();
            make_exit(&host, &id, how).await;
            let restarted = match (policy, how) {
                (Restart::Permanent, _) => true,
                (Restart::Transient, Exit::Normal) => false,
                (Restart::Transient, _) => true,
                (Restart::Temporary, _) => false,
            };
            if restarted {
                let info = wait_child(&host, &id, "a restart", |c| {
                    c.restarts == 1 && c.status == Status::Running
                })
                .await;
                let expected = match how {
                    Exit::Normal => "normal",
                    Exit::Trap => "trap",
                    Exit::Kill => "killed",
                };
                assert_eq!(
                    info.last_exit.as_ref().map(ExitReason::code),
                    Some(expected),
                    "{id}"
                );
                assert_eq!(
                    call_ok(&host, &id, json!("state")).await["args"],
                    json!({"case": id})
                );
            } else {
                wait_gone(&host, &id).await;
                assert_eq!(
                    call(&host, &id, json!("state")).await,
                    Err(CallError::NotFound)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_stop_removes_any_policy_and_runs_terminate() {
    let (host, _dir) = host().await;
    start_ok(&host, "w", "chaos", json!(null)).await;
    start_ok(&host, "p", "chaos", json!(null)).await;
    let monitor = call_ok(&host, "w", json!({"monitor": "p"})).await;
    host.stop_child("p").await.unwrap();
    assert!(host.child("p").is_none());
    wait_for_info(&host, "w", "down(p, shutdown)", |i| {
        i == &json!({"down": {"ref": monitor, "id": "p", "reason": "shutdown"}})
    })
    .await;
    assert!(host.stop_child("p").await.is_err());
    // The id is free again.
    start_ok(&host, "p", "tracker", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_gives_a_fresh_instance_with_the_same_args() {
    let (host, _dir) = host().await;
    start_ok(&host, "c", "chaos", json!({"a": 1})).await;
    call_ok(&host, "c", json!({"add": 3})).await;
    host.restart_child("c").await.unwrap();
    // It returns once the new instance runs, as OTP's restart_child does.
    let info = host.child("c").unwrap();
    assert_eq!((info.restarts, info.status), (1, Status::Running));
    assert_eq!(
        call_ok(&host, "c", json!("state")).await,
        json!({"args": {"a": 1}, "count": 0})
    );
}

fn storm_config(on_exhausted: OnExhausted) -> impl FnOnce(&mut wasmvisor::Config) {
    move |c| {
        c.supervisor.max_restarts = 3;
        c.supervisor.max_seconds = 5;
        c.supervisor.on_exhausted = on_exhausted;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_storm_backs_off_while_siblings_keep_state() {
    let (host, _dir) = host_with(storm_config(OnExhausted::Backoff)).await;
    start_ok(&host, "sibling", "chaos", json!(null)).await;
    call_ok(&host, "sibling", json!({"add": 7})).await;
    start_ok(&host, "storm", "chaos", json!(null)).await;
    for _ in 0..4 {
        // A crash is answered at once; the restart follows before the next
        // message is taken, so each call here meets a fresh instance.
        let _ = call(&host, "storm", json!("crash")).await;
    }
    let info = wait_child(&host, "storm", "backoff", |c| c.status == Status::Backoff).await;
    assert!(info.backoff_until_ms.is_some());
    assert!(matches!(info.last_exit, Some(ExitReason::Trap(_))));
    // It comes back by itself after the delay (100 ms for the first).
    wait_child(&host, "storm", "running again", |c| {
        c.status == Status::Running
    })
    .await;
    let sibling = host.child("sibling").unwrap();
    assert_eq!(sibling.restarts, 0);
    assert_eq!(
        call_ok(&host, "sibling", json!("state")).await["count"],
        json!(7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_storm_fails_when_configured_and_restart_revives() {
    let (host, _dir) = host_with(storm_config(OnExhausted::Fail)).await;
    start_ok(&host, "sibling", "chaos", json!(null)).await;
    call_ok(&host, "sibling", json!({"add": 7})).await;
    start_ok(&host, "storm", "chaos", json!({"x": 1})).await;
    for _ in 0..4 {
        let _ = call(&host, "storm", json!("crash")).await;
    }
    let info = wait_child(&host, "storm", "failed", |c| c.status == Status::Failed).await;
    assert!(matches!(info.last_exit, Some(ExitReason::Trap(_))));
    let err = call(&host, "storm", json!("state")).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Failed(m) if m.contains("failed")),
        "{err:?}"
    );
    assert_eq!(
        call_ok(&host, "sibling", json!("state")).await["count"],
        json!(7)
    );
    host.restart_child("storm").await.unwrap();
    assert_eq!(host.child("storm").unwrap().status, Status::Running);
    assert_eq!(
        call_ok(&host, "storm", json!("state")).await["args"],
        json!({"x": 1})
    );
    // A failed child can be stopped too.
    host.stop_child("storm").await.unwrap();
    assert!(host.child("storm").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_times_out_and_the_late_reply_is_dropped() {
    let (host, _dir) = host_with_chaos(PluginConfig {
        cpu_ms: 60_000,
        ..Default::default()
    })
    .await;
    start_ok(&host, "slow", "chaos", json!(null)).await;
    let msg = serde_json::to_vec(&json!({"spin": 200_000_000u64})).unwrap();
    let err = host
        .call("slow", msg, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Timeout);
    // The child finishes the spin and keeps serving; the late reply went
    // nowhere.
    assert_eq!(call_ok(&host, "slow", json!({"add": 1})).await, json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_answers_mailbox_full() {
    let (host, _dir) = host_with_chaos(PluginConfig {
        mailbox: 2,
        cpu_ms: 60_000,
        ..Default::default()
    })
    .await;
    start_ok(&host, "busy", "chaos", json!(null)).await;
    let busy = host.clone();
    let msg = serde_json::to_vec(&json!({"spin": 2_000_000_000u64})).unwrap();
    // Begun here, so the casts below find the guest busy with it.
    let spin =
        spawn_begun(async move { busy.call("busy", msg, Duration::from_secs(60)).await }).await;
    let mut full = false;
    for _ in 0..10 {
        if cast(&host, "busy", json!("bump")) == Err(CallError::MailboxFull) {
            full = true;
            break;
        }
    }
    assert!(
        full,
        "a mailbox of 2 behind a long call fills within 3 casts"
    );
    host.kill_child("busy", "test over").unwrap();
    let _ = spin.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_over_its_cpu_deadline_is_killed_and_restarted() {
    let (host, _dir) = host_with_chaos(PluginConfig {
        cpu_ms: 50,
        ..Default::default()
    })
    .await;
    start_ok(&host, "spin", "chaos", json!({"a": 1})).await;
    let err = call(&host, "spin", json!({"spin": 100_000_000_000u64}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Killed(m) if m.contains("CPU deadline")),
        "{err:?}"
    );
    let info = wait_child(&host, "spin", "restart", |c| c.restarts == 1).await;
    assert!(matches!(info.last_exit, Some(ExitReason::Killed(_))));
    assert_eq!(
        call_ok(&host, "spin", json!("state")).await["args"],
        json!({"a": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_interrupts_a_busy_guest_and_its_caller_is_told() {
    let (host, _dir) = host_with(|c| {
        let chaos = PluginConfig {
            cpu_ms: 600_000,
            ..Default::default()
        };
        c.plugins.insert("chaos".into(), chaos);
    })
    .await;
    start_ok(&host, "k", "chaos", json!(null)).await;
    let msg = serde_json::to_vec(&json!({"spin": 100_000_000_000u64})).unwrap();
    let mut spin = Box::pin(host.call("k", msg, Duration::from_secs(60)));
    // Poll the call once: that queues it. It is the only message, so once
    // the queue is empty again the guest is running it.
    tokio::select! {
        biased;
        r = &mut spin => panic!("the spin returned at once: {r:?}"),
        () = std::future::ready(()) => {}
    }
    wait_child(&host, "k", "the spin to be taken", |c| c.queued == 0).await;
    host.kill_child("k", "enough").unwrap();
    let result = tokio::time::timeout(LIMIT, spin).await.unwrap();
    assert_eq!(result, Err(CallError::Killed("enough".into())));
    let info = wait_child(&host, "k", "restart after kill", |c| c.restarts == 1).await;
    assert_eq!(info.last_exit, Some(ExitReason::Killed("enough".into())));
}

/// Not a timed test (nothing here asserts a duration): it measures the
/// crash → restarted → serving cycle through the library, in whatever build
/// runs it, and prints the distribution (`cargo test -- --nocapture`). The
/// benchmark measures the same in a release build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_to_serving_cycle() {
    // Restart intensity would (rightly) back this child off after 3 crashes.
    let (host, _dir) = host_with(|c| c.supervisor.max_restarts = u32::MAX).await;
    start_ok(&host, "cycle", "chaos", json!({"id": 42})).await;
    let crash = serde_json::to_vec(&json!("crash")).unwrap();
    let state = serde_json::to_vec(&json!("state")).unwrap();
    let limit = Duration::from_secs(10);
    let rounds = 300;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let err = host.call("cycle", crash.clone(), limit).await.unwrap_err();
        assert!(matches!(err, CallError::Trapped(_)), "{err:?}");
        let reply = host.call("cycle", state.clone(), limit).await.unwrap();
        samples.push(t.elapsed());
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            reply["args"],
            json!({"id": 42}),
            "init args survive every restart"
        );
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    eprintln!(
        "crash -> restarted -> serving, library API, test build ({} rounds): p50 {:?}, p99 {:?}",
        rounds,
        p(0.50),
        p(0.99)
    );
    assert_eq!(host.child("cycle").unwrap().restarts, rounds as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plugin_file_at_start_is_reported_and_the_others_load() {
    let (host, dir) = host_with(|_| {}).await;
    drop(host);
    let plugins = dir.path().join("plugins");
    std::fs::write(plugins.join("broken.wasm"), b"not wasm at all").unwrap();
    std::fs::write(plugins.join("notes.txt"), b"ignored").unwrap();
    let config = wasmvisor::Config {
        plugins_dir: plugins,
        data_dir: dir.path().join("data"),
        ephemeral: true,
        ..Default::default()
    };
    let host = wasmvisor::Host::new(config).await.unwrap();
    let plugins = host.plugins();
    let broken = plugins.iter().find(|p| p.name == "broken").unwrap();
    assert_eq!(broken.version, None);
    assert!(
        broken
            .last_error
            .as_deref()
            .unwrap()
            .contains("not a valid wasm component")
    );
    assert_eq!(
        plugins.iter().filter(|p| p.version.is_some()).count(),
        wasmvisor_tests::ALL_PLUGINS.len()
    );
    start_ok(&host, "c", "chaos", json!(null)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_instance_pool_fails_the_start_cleanly() {
    let (host, _dir) = host_with(|c| c.pool.max_instances = 2).await;
    start_ok(&host, "a", "chaos", json!(null)).await;
    start_ok(&host, "b", "chaos", json!(null)).await;
    let err = host
        .start_child(spec("c", "chaos", json!(null)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::Unavailable(m) if m.contains("2")),
        "{err:?}"
    );
    assert!(host.child("c").is_none());
    host.stop_child("a").await.unwrap();
    start_ok(&host, "c", "chaos", json!(null)).await;
    assert_eq!(call_ok(&host, "b", json!({"add": 1})).await, json!(1));
}

/// Freed slots wait in the decommit batch until it fills; a pool with no
/// free slot left must take them back first instead of failing the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_waiting_to_be_decommitted_serve_a_full_pool() {
    let (host, _dir) = host_with(|c| {
        c.pool.max_instances = 2;
        // Twenty crashes in a row are the point here, not a reason to back off.
        c.supervisor.max_restarts = 100;
    })
    .await;
    start_ok(&host, "a", "chaos", json!({"k": "a"})).await;
    start_ok(&host, "b", "chaos", json!({"k": "b"})).await;
    for round in 1..=20 {
        let err = call(&host, "a", json!("crash")).await.unwrap_err();
        assert!(matches!(err, CallError::Trapped(_)), "{err:?}");
        let state = call_ok(&host, "a", json!("state")).await;
        assert_eq!(state["args"], json!({"k": "a"}), "round {round}");
        assert_eq!(host.child("a").unwrap().restarts, round);
        host.stop_child("b").await.unwrap();
        start_ok(&host, "b", "chaos", json!({"k": "b"})).await;
    }
    assert_eq!(call_ok(&host, "b", json!({"add": 2})).await, json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_and_calls_from_one_client_keep_their_order() {
    let (host, _dir) = host().await;
    start_ok(&host, "o", "chaos", json!(null)).await;
    for i in 1..=200 {
        cast(&host, "o", json!("bump")).unwrap();
        // After the bump, then alone.
        assert_eq!(
            call_ok(&host, "o", json!({"add": 1})).await,
            json!(3 * i - 1)
        );
        assert_eq!(call_ok(&host, "o", json!({"add": 1})).await, json!(3 * i));
    }
}

/// A host dropped without `shutdown` goes away with the runtime that ran
/// it, idle children and all: the next host on the same data dir opens its
/// database, which the old one would still hold.
#[test]
fn a_host_dropped_with_its_runtime_lets_go_of_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    wasmvisor_tests::copy_plugin("chaos", &plugins);
    for round in 0..2 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config = wasmvisor::Config {
                plugins_dir: plugins.clone(),
                data_dir: dir.path().join("data"),
                ..Default::default()
            };
            config.pool.max_instances = 10;
            let host = match wasmvisor::Host::new(config).await {
                Ok(host) => host,
                Err(e) => panic!("round {round}: the host does not start: {e:#}"),
            };
            let id = format!("c{round}");
            start_ok(&host, &id, "chaos", json!(null)).await;
            assert_eq!(call_ok(&host, &id, json!({"add": 1})).await, json!(1));
        });
        drop(runtime);
    }
}
