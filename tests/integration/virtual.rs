//! Virtual actors: hibernation (an idle child keeps its state and gives its
//! instance back), lazy activation (`init` at the first message), durable
//! state (a child's state outlives its instance and the host) and restart
//! from a checkpoint.

mod common;

use common::process::RunningHost;
use common::*;
use hyper::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use wasmvisor::config::{OnExhausted, PluginConfig, RestartFrom};
use wasmvisor::{Activate, CallError, ChildError, Config, Event, Host, Restart, Status};
use wasmvisor_tests::{CHAOS_BAD_RESTORE, CHAOS_V2};

/// `chaos` with `edit` applied to its plugin settings.
async fn host_where_chaos(edit: impl FnOnce(&mut PluginConfig)) -> (Host, tempfile::TempDir) {
    let mut chaos = PluginConfig::default();
    edit(&mut chaos);
    host_with_chaos(chaos).await
}

/// The next event about child `id` (any child if `id` is empty) that
/// `pick` accepts.
async fn next_about<T>(
    events: &mut broadcast::Receiver<Arc<Event>>,
    id: &str,
    what: &str,
    pick: impl Fn(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the event stream is open");
        let about = match &*event {
            Event::ChildHibernated { id: i } | Event::ChildWoken { id: i } => {
                id.is_empty() || i == id
            }
            _ => true,
        };
        if about && let Some(v) = pick(&event) {
            return v;
        }
    }
}

async fn woken(events: &mut broadcast::Receiver<Arc<Event>>, id: &str) {
    next_about(events, id, &format!("{id} to wake"), |e| {
        matches!(e, Event::ChildWoken { .. }).then_some(())
    })
    .await
}

async fn hibernated(events: &mut broadcast::Receiver<Arc<Event>>, id: &str) {
    next_about(events, id, &format!("{id} to hibernate"), |e| {
        matches!(e, Event::ChildHibernated { .. }).then_some(())
    })
    .await
}

fn status(host: &Host, id: &str) -> Status {
    host.child(id).expect("the child exists").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_child_hibernates_and_a_call_answers_from_its_restored_state() {
    let (host, _dir) = host_where_chaos(|c| c.hibernate_after_ms = 20).await;
    let mut events = host.hibernation_events();
    start_ok(&host, "c", "chaos", json!({"subscribe": ["t"]})).await;
    call_ok(&host, "c", json!({"add": 5})).await;
    hibernated(&mut events, "c").await;
    assert_eq!(status(&host, "c"), Status::Hibernated);
    assert_eq!(metric(&host, "wasmvisor_instances"), 0, "its slot is free");
    assert_eq!(
        metric(&host, "wasmvisor_children{status=\"hibernated\"}"),
        1
    );
    assert_eq!(metric(&host, "wasmvisor_hibernations_total"), 1);
    // Looking at a hibernated child does not wake it.
    let info = host.child("c").unwrap();
    assert_eq!((info.status, info.activated), (Status::Hibernated, true));

    // Everything sent while it sleeps or wakes arrives, in order.
    for _ in 0..100 {
        cast(&host, "c", json!("bump")).unwrap();
    }
    for i in 0..20 {
        host.publish("t", serde_json::to_vec(&json!(i)).unwrap());
    }
    assert_eq!(
        call_ok(&host, "c", json!("state")).await,
        json!({"args": {"subscribe": ["t"]}, "count": 105})
    );
    let got: Vec<Value> = infos(&host, "c")
        .await
        .into_iter()
        .map(|i| i["event"]["msg"].clone())
        .collect();
    assert_eq!(got, (0..20).map(|i| json!(i)).collect::<Vec<_>>());
    woken(&mut events, "c").await;
    assert_eq!(metric(&host, "wasmvisor_wakes_total"), 1, "woken once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_a_topic_event_and_a_down_each_wake_a_hibernated_child_once() {
    let (host, _dir) = host().await;
    let mut events = host.hibernation_events();
    start_ok(&host, "w", "chaos", json!({"subscribe": ["t"]})).await;
    start_ok(&host, "m", "chaos", json!(null)).await;
    call_ok(&host, "w", json!({"monitor": "m"})).await;
    call_ok(
        &host,
        "w",
        json!({"send_after": {"ms": 1_000, "msg": "tick"}}),
    )
    .await;
    host.hibernate_child("w").await.unwrap();
    assert_eq!(status(&host, "w"), Status::Hibernated);
    // The timer, kept by the host while the child sleeps.
    woken(&mut events, "w").await;
    host.hibernate_child("w").await.unwrap();
    host.publish("t", b"\"hello\"".to_vec());
    woken(&mut events, "w").await;
    host.hibernate_child("w").await.unwrap();
    host.stop_child("m").await.unwrap();
    woken(&mut events, "w").await;
    host.hibernate_child("w").await.unwrap();
    assert_eq!(metric(&host, "wasmvisor_wakes_total"), 3);

    let got = infos(&host, "w").await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], json!({"timer": "tick"}));
    assert_eq!(got[1], json!({"event": {"topic": "t", "msg": "hello"}}));
    assert_eq!(got[2]["down"]["id"], json!("m"));
    assert_eq!(metric(&host, "wasmvisor_wakes_total"), 4, "and the call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_worker_that_hibernates_between_reports_keeps_its_period() {
    let (host, _dir) = host().await;
    let mut events = host.hibernation_events();
    start_ok(&host, "p", "chaos", json!(null)).await;
    let began = Instant::now();
    let every = json!({"every": {"ms": 100, "times": 5}});
    call_ok(&host, "p", json!({"send_after": {"ms": 100, "msg": every}})).await;
    // Awake for the first tick, then woken by each of the four others.
    hibernated(&mut events, "p").await;
    for _ in 0..4 {
        woken(&mut events, "p").await;
        hibernated(&mut events, "p").await;
    }
    assert_eq!(status(&host, "p"), Status::Hibernated);
    // Five periods of 100 ms at least, none cut short by a hibernation.
    assert!(began.elapsed() >= Duration::from_millis(500));
    let ticks = infos(&host, "p").await;
    assert_eq!(ticks.len(), 5, "{ticks:?}");
    let left: Vec<Value> = ticks
        .iter()
        .map(|t| t["timer"]["every"]["times"].clone())
        .collect();
    assert_eq!(left, [json!(5), json!(4), json!(3), json!(2), json!(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_owes_a_deferred_reply_does_not_hibernate() {
    let (host, _dir) = host_where_chaos(|c| c.hibernate_after_ms = 20).await;
    let mut events = host.hibernation_events();
    start_ok(&host, "d", "chaos", json!(null)).await;
    let h = host.clone();
    let deferred =
        spawn_begun(
            async move { call(&h, "d", json!({"defer": {"ms": 400, "msg": "late"}})).await },
        )
        .await;
    // Asked from outside, it says why not.
    let deadline = Instant::now() + LIMIT;
    let refused = loop {
        match host.hibernate_child("d").await {
            Err(ChildError::CannotHibernate(why)) => break why,
            // The call may not have reached the child yet.
            Ok(()) => {
                assert!(Instant::now() < deadline, "d kept hibernating");
                woken(&mut events, "d").await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(refused.contains("deferred"), "{refused}");
    assert_eq!(deferred.await.unwrap().unwrap(), json!("late"));
    // Not a hibernation before the reply went out (the idle timer fired
    // many times meanwhile)...
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(&*event, Event::ChildHibernated { id } if id == "d"),
            "hibernated while owing a reply"
        );
    }
    // ...and one soon after.
    hibernated(&mut events, "d").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_a_snapshot_never_hibernates() {
    let (host, _dir) = host_with(|c| {
        c.plugins.insert(
            "balances".into(),
            PluginConfig {
                hibernate_after_ms: 10,
                ..Default::default()
            },
        );
    })
    .await;
    start_ok(&host, "ledger", "ledger", json!(null)).await;
    start_ok(&host, "b", "balances", json!(null)).await;
    let err = host.hibernate_child("b").await.unwrap_err();
    assert!(
        matches!(&err, ChildError::CannotHibernate(why) if why.contains("snapshot")),
        "{err:?}"
    );
    assert_eq!(status(&host, "b"), Status::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_only_hibernated_children_wakes_one_canary_and_the_rest_wake_on_the_new_version()
 {
    let (host, _dir) = host().await;
    for i in 0..3 {
        let id = format!("h{i}");
        start_ok(&host, &id, "chaos", json!({"i": i})).await;
        call_ok(&host, &id, json!({"add": i})).await;
        host.hibernate_child(&id).await.unwrap();
    }
    // A version whose restore traps: the canary rolls back, nobody moves.
    let err = host
        .apply_bytes("chaos", std::fs::read(CHAOS_BAD_RESTORE).unwrap())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("canary"), "{err:#}");
    // The canary woke, refused, and serves on the old version; the others
    // slept through it.
    let statuses: Vec<Status> = (0..3).map(|i| status(&host, &format!("h{i}"))).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == Status::Hibernated)
            .count(),
        2,
        "{statuses:?}"
    );
    for i in 0..3 {
        let id = format!("h{i}");
        assert_eq!(call_ok(&host, &id, json!("version")).await, json!("0.1.0"));
        host.hibernate_child(&id).await.unwrap();
    }
    let mut events = host.hibernation_events();
    reload(&host, "chaos", std::fs::read(CHAOS_V2).unwrap(), 1).await;
    let canary = next_about(&mut events, "", "the canary to wake", |e| match e {
        Event::ChildWoken { id } => Some(id.clone()),
        _ => None,
    })
    .await;
    let asleep: Vec<String> = (0..3)
        .map(|i| format!("h{i}"))
        .filter(|id| *id != canary)
        .collect();
    for id in &asleep {
        assert_eq!(status(&host, id), Status::Hibernated, "{id} slept on");
    }
    for i in 0..3 {
        let id = format!("h{i}");
        assert_eq!(call_ok(&host, &id, json!("version")).await, json!("0.2.0"));
        assert_eq!(
            call_ok(&host, &id, json!("state")).await,
            json!({"args": {"i": i}, "count": i})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_new_version_refuses_at_a_wake_keeps_that_child_on_the_old_one() {
    let (host, _dir) = host().await;
    let mut events = host.events();
    start_ok(&host, "awake", "chaos", json!(null)).await;
    start_ok(
        &host,
        "picky",
        "chaos",
        json!({"refuse_restore_in": "0.2.0"}),
    )
    .await;
    call_ok(&host, "picky", json!({"add": 3})).await;
    host.hibernate_child("picky").await.unwrap();
    // The running canary takes the new version; the sleeping child is left
    // for its next message.
    reload(&host, "chaos", std::fs::read(CHAOS_V2).unwrap(), 1).await;
    assert_eq!(status(&host, "picky"), Status::Hibernated);
    assert_eq!(
        call_ok(&host, "picky", json!("version")).await,
        json!("0.1.0")
    );
    assert_eq!(
        call_ok(&host, "picky", json!("state")).await["count"],
        json!(3)
    );
    let error = next_about(&mut events, "picky", "reload_failed", |e| match e {
        Event::ReloadFailed { plugin, error } if plugin == "chaos" => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("picky"), "{error}");
    assert_eq!(
        call_ok(&host, "awake", json!("version")).await,
        json!("0.2.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_child_runs_init_at_its_first_message() {
    let (host, _dir) = host().await;
    host.start_child(spec("lazy", "chaos", json!({"k": 1})).activate(Activate::Lazy))
        .await
        .unwrap();
    let info = host.child("lazy").unwrap();
    assert_eq!((info.status, info.activated), (Status::Hibernated, false));
    assert_eq!(metric(&host, "wasmvisor_instances"), 0);
    cast(&host, "lazy", json!("bump")).unwrap();
    assert_eq!(
        call_ok(&host, "lazy", json!("state")).await,
        json!({"args": {"k": 1}, "count": 1})
    );
    let info = host.child("lazy").unwrap();
    assert_eq!((info.status, info.activated), (Status::Running, true));
    assert_eq!(info.restarts, 0, "a first start, not a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_to_a_lazy_child_before_its_first_start_holds_after_it() {
    let (host, _dir) = host().await;
    host.start_child(spec("lazy", "chaos", json!(null)).activate(Activate::Lazy))
        .await
        .unwrap();
    start_ok(&host, "partner", "chaos", json!(null)).await;
    assert_eq!(
        call_ok(&host, "partner", json!({"link": "lazy"})).await,
        json!("ok")
    );
    // Its first start, then a trap: the link fires.
    call_ok(&host, "lazy", json!("state")).await;
    let _ = call(&host, "lazy", json!("crash")).await;
    let info = wait_child(&host, "partner", "taken down by the link", |c| {
        c.restarts == 1 && c.status == Status::Running
    })
    .await;
    assert_eq!(
        info.last_exit,
        Some(wasmvisor::ExitReason::Linked("lazy".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_child_whose_init_fails_answers_init_failed_then_follows_its_policy() {
    let (host, _dir) = host_with(|c| {
        c.supervisor.max_restarts = 0;
        c.supervisor.on_exhausted = OnExhausted::Backoff;
    })
    .await;
    let bad = json!({"fail_init": "no config"});
    host.start_child(spec("bad", "chaos", bad.clone()).activate(Activate::Lazy))
        .await
        .unwrap();
    // The call is queued first (it may even be answered within that first
    // poll: init runs on another thread), then the cast behind it.
    let mut first = Box::pin(call(&host, "bad", json!("state")));
    let early = tokio::select! {
        biased;
        r = &mut first => Some(r),
        () = std::future::ready(()) => None,
    };
    cast(&host, "bad", json!("bump")).unwrap();
    let err = match early {
        Some(r) => r,
        None => first.await,
    }
    .unwrap_err();
    assert!(
        matches!(&err, CallError::InitFailed(why) if why.contains("no config")),
        "{err:?}"
    );
    // Permanent, with no restarts left: it backs off and tries again, its
    // cast still queued for the instance that will serve it.
    let info = wait_child(&host, "bad", "backoff", |c| c.status == Status::Backoff).await;
    assert_eq!(info.queued, 1, "{info:?}");

    // A temporary lazy child whose init fails is removed.
    host.start_child(spec_with("brief", "chaos", bad, Restart::Temporary).activate(Activate::Lazy))
        .await
        .unwrap();
    let err = call(&host, "brief", json!("state")).await.unwrap_err();
    assert!(matches!(err, CallError::InitFailed(_)), "{err:?}");
    wait_gone(&host, "brief").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_removed_with_its_plugin_keeps_its_snapshot_while_it_waits() {
    let (host, dir) = host().await;
    start_ok(&host, "c", "chaos", json!(null)).await;
    call_ok(&host, "c", json!({"add": 4})).await;
    host.hibernate_child("c").await.unwrap();
    std::fs::remove_file(dir.path().join("plugins/chaos.wasm")).unwrap();
    host.remove_plugin("chaos").await;
    assert_eq!(status(&host, "c"), Status::Waiting);
    host.apply_bytes("chaos", std::fs::read(CHAOS_V2).unwrap())
        .await
        .unwrap();
    wait_child(&host, "c", "back", |c| c.status == Status::Running).await;
    assert_eq!(call_ok(&host, "c", json!("state")).await["count"], json!(4));
}

fn durable_config(dir: &tempfile::TempDir, restart_from: RestartFrom) -> Config {
    let mut c = Config {
        plugins_dir: dir.path().join("plugins"),
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    c.pool.max_instances = 100;
    c.plugins.insert(
        "chaos".into(),
        PluginConfig {
            durable_state: true,
            restart_from,
            ..Default::default()
        },
    );
    c
}

/// A host on `dir` whose `chaos` has `durable_state` and `restart_from`.
async fn durable_host(dir: &tempfile::TempDir, restart_from: RestartFrom) -> Host {
    Host::new(durable_config(dir, restart_from))
        .await
        .expect("the host starts")
}

fn plugins_in(dir: &tempfile::TempDir) {
    wasmvisor_tests::copy_plugins(&dir.path().join("plugins"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_is_refused_without_durable_state_and_above_max_state_kib() {
    let (host, _dir) = host().await;
    start_ok(&host, "c", "chaos", json!(null)).await;
    assert_eq!(
        call_ok(&host, "c", json!("checkpoint")).await["error"],
        json!("not_durable")
    );
    drop(host);
    let dir = tempfile::tempdir().unwrap();
    plugins_in(&dir);
    let mut config = durable_config(&dir, RestartFrom::Init);
    config.plugins.get_mut("chaos").unwrap().max_state_kib = 1;
    let host = Host::new(config).await.unwrap();
    start_ok(&host, "big", "chaos", json!("x".repeat(2_000))).await;
    let refused = call_ok(&host, "big", json!("checkpoint")).await;
    assert_eq!(refused["error"], json!("too_large"), "{refused}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_deletes_the_stored_state() {
    let dir = tempfile::tempdir().unwrap();
    plugins_in(&dir);
    let host = durable_host(&dir, RestartFrom::Init).await;
    start_ok(&host, "c", "chaos", json!(null)).await;
    call_ok(&host, "c", json!({"add": 5})).await;
    assert_eq!(call_ok(&host, "c", json!("checkpoint")).await, json!("ok"));
    host.stop_child("c").await.unwrap();
    host.start_child(spec("c", "chaos", json!(null)).activate(Activate::Lazy))
        .await
        .unwrap();
    host.shutdown().await;
    drop(host);

    let host = durable_host(&dir, RestartFrom::Init).await;
    assert_eq!(status(&host, "c"), Status::Hibernated);
    assert_eq!(call_ok(&host, "c", json!("state")).await["count"], json!(0));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_a_checkpoint_drops_it_after_a_second_trap() {
    let dir = tempfile::tempdir().unwrap();
    plugins_in(&dir);
    let host = durable_host(&dir, RestartFrom::Checkpoint).await;
    let mut events = host.events();
    start_ok(&host, "c", "chaos", json!({"k": 1})).await;
    call_ok(&host, "c", json!({"add": 5})).await;
    assert_eq!(call_ok(&host, "c", json!("checkpoint")).await, json!("ok"));
    call_ok(&host, "c", json!({"add": 10})).await;
    let _ = call(&host, "c", json!("crash")).await;
    wait_child(&host, "c", "restarted", |c| {
        c.restarts == 1 && c.status == Status::Running
    })
    .await;
    assert_eq!(
        call_ok(&host, "c", json!("state")).await,
        json!({"args": {"k": 1}, "count": 5}),
        "init, then the checkpoint"
    );
    // A second trap inside the window: the checkpoint is suspect.
    let _ = call(&host, "c", json!("crash")).await;
    next_about(&mut events, "c", "child_checkpoint_dropped", |e| {
        matches!(e, Event::ChildCheckpointDropped { id } if id == "c").then_some(())
    })
    .await;
    wait_child(&host, "c", "restarted again", |c| {
        c.restarts == 2 && c.status == Status::Running
    })
    .await;
    assert_eq!(
        call_ok(&host, "c", json!("state")).await,
        json!({"args": {"k": 1}, "count": 0}),
        "init args alone"
    );
    call_ok(&host, "c", json!({"add": 2})).await;
    host.shutdown().await;
    drop(host);

    // The poisoned checkpoint is gone for good: the state stored at the
    // clean shutdown is the fresh one.
    let host = durable_host(&dir, RestartFrom::Checkpoint).await;
    assert_eq!(call_ok(&host, "c", json!("state")).await["count"], json!(2));
    host.shutdown().await;
}

const DURABLE: &str = "[plugins.chaos]\ndurable_state = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_dropped_checkpoint_kill_9_does_not_bring_the_poisoned_state_back() {
    let config = "[plugins.chaos]\ndurable_state = true\nrestart_from = \"checkpoint\"\n";
    let h = RunningHost::start_with(&[], Some(config)).await;
    let body = json!({"id": "c", "plugin": "chaos", "args": {"k": 1}});
    h.client
        .json(Method::POST, "/v1/children", Some(&body))
        .await
        .unwrap();
    let at = "/v1/children/c/call";
    let send = |msg: Value| {
        let client = h.client.clone();
        async move {
            client
                .json(Method::POST, at, Some(&json!({"msg": msg})))
                .await
        }
    };
    send(json!({"add": 5})).await.unwrap();
    assert_eq!(
        send(json!("checkpoint")).await.unwrap()["reply"],
        json!("ok")
    );
    for restarts in 1..=2 {
        assert!(send(json!("crash")).await.is_err());
        h.wait_child("c", "restarted", |c| {
            c["restarts"] == json!(restarts) && c["status"] == json!("running")
        })
        .await;
    }
    assert_eq!(
        send(json!("state")).await.unwrap()["reply"]["count"],
        json!(0),
        "the second restart used the args alone"
    );
    send(json!({"add": 2})).await.unwrap();
    // No clean shutdown: only what was stored when the checkpoint was
    // dropped (the fresh state) can come back.
    let h = h.kill_and_restart(&[]).await;
    let state = h
        .client
        .json(Method::POST, at, Some(&json!({"msg": "state"})))
        .await
        .unwrap();
    assert_eq!(state["reply"]["count"], json!(0), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_children_come_back_with_their_last_state_and_their_init_armed_timers() {
    let h = RunningHost::start_with(&[], Some(DURABLE)).await;
    let args = json!({"timer": {"ms": 300, "msg": "armed"}});
    let body = json!({"id": "c", "plugin": "chaos", "args": args});
    h.client
        .json(Method::POST, "/v1/children", Some(&body))
        .await
        .unwrap();
    let call = |msg: Value| json!({"msg": msg});
    let at = "/v1/children/c/call";
    h.client
        .json(Method::POST, at, Some(&call(json!({"add": 7}))))
        .await
        .unwrap();
    let stored = h
        .client
        .json(Method::POST, at, Some(&call(json!("checkpoint"))))
        .await
        .unwrap();
    assert_eq!(stored["reply"], json!("ok"));
    // A second child, stored by hibernating.
    let body = json!({"id": "s", "plugin": "chaos", "args": null});
    h.client
        .json(Method::POST, "/v1/children", Some(&body))
        .await
        .unwrap();
    h.client
        .json(
            Method::POST,
            "/v1/children/s/call",
            Some(&call(json!({"add": 3}))),
        )
        .await
        .unwrap();
    let (ok, out, err) = h.cli(&["hibernate", "s"]).await;
    assert!(ok, "{out}{err}");

    let h = h.kill_and_restart(&[]).await;
    let c = h.get("/v1/children/c").await;
    assert_eq!(
        (&c["status"], &c["activated"]),
        (&json!("hibernated"), &json!(false))
    );
    let state = h
        .client
        .json(Method::POST, at, Some(&call(json!("state"))))
        .await
        .unwrap();
    assert_eq!(state["reply"]["count"], json!(7), "{state}");
    // Started, not continued: its init armed the timer again.
    let deadline = Instant::now() + LIMIT;
    loop {
        let infos = h
            .client
            .json(Method::POST, at, Some(&call(json!("infos"))))
            .await
            .unwrap();
        if infos["reply"]
            .as_array()
            .is_some_and(|i| i.contains(&json!({"timer": "armed"})))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no timer: {infos}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = h
        .client
        .json(
            Method::POST,
            "/v1/children/s/call",
            Some(&call(json!("state"))),
        )
        .await
        .unwrap();
    assert_eq!(s["reply"]["count"], json!(3), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_cli_register_lazily_hibernate_and_page() {
    let h = RunningHost::start(&[]).await;
    for id in ["a", "b", "c", "d", "e"] {
        let (ok, out, err) = h.cli(&["start", id, "chaos", "--lazy"]).await;
        assert!(ok && out.contains("lazy"), "{out}{err}");
    }
    let (ok, out, _) = h.cli(&["ps"]).await;
    assert!(ok);
    assert_eq!(out.matches("hibernated (lazy)").count(), 5, "{out}");

    let page = h.get("/v1/children?limit=2").await;
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&page), ["a", "b"]);
    assert_eq!(
        ids(&h.get("/v1/children?limit=2&after=b").await),
        ["c", "d"]
    );
    assert_eq!(ids(&h.get("/v1/children?after=d").await), ["e"]);
    for bad in ["limit=0", "limit=10001", "limit=x", "after=a%2Fb"] {
        let err = h
            .client
            .json(Method::GET, &format!("/v1/children?{bad}"), None)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("bad_request"), "{bad}: {err:#}");
    }

    // Hibernating a running child over the API; a plugin without a
    // snapshot is a 409.
    h.client
        .json(
            Method::POST,
            "/v1/children/a/call",
            Some(&json!({"msg": "state"})),
        )
        .await
        .unwrap();
    let (ok, out, err) = h.cli(&["hibernate", "a"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(h.get("/v1/children/a").await["status"], json!("hibernated"));
    for (id, plugin) in [("ledger", "ledger"), ("t", "balances")] {
        let (ok, out, err) = h.cli(&["start", id, plugin]).await;
        assert!(ok, "{out}{err}");
    }
    let (ok, _, err) = h.cli(&["hibernate", "t"]).await;
    assert!(!ok && err.contains("cannot_hibernate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_children_wake_and_hibernate_under_calls_with_a_smaller_pool() {
    const N: usize = 10_000;
    let (host, _dir) = host_with(|c| {
        c.pool.max_instances = 300;
        c.plugins.insert(
            "chaos".into(),
            PluginConfig {
                hibernate_after_ms: 50,
                ..Default::default()
            },
        );
    })
    .await;
    let host = Arc::new(host);
    for i in 0..N {
        host.start_child(spec(&format!("s{i:05}"), "chaos", json!(null)).activate(Activate::Lazy))
            .await
            .unwrap();
    }
    // 32 callers, two rounds over every child: each child is woken (and
    // put back to sleep, or evicted for another) at least twice.
    for round in 1..=2 {
        let mut callers = Vec::new();
        for w in 0..32 {
            let host = host.clone();
            callers.push(tokio::spawn(async move {
                for i in (w..N).step_by(32) {
                    let id = format!("s{i:05}");
                    loop {
                        match call(&host, &id, json!({"add": 1})).await {
                            Ok(_) => break,
                            // A full pool with no idle child: the call was not
                            // delivered; try again.
                            Err(CallError::Unavailable(_)) => {}
                            Err(e) => panic!("{id}: {e:?}"),
                        }
                    }
                }
            }));
        }
        for c in callers {
            c.await.unwrap();
        }
        for i in (0..N).step_by(997) {
            let id = format!("s{i:05}");
            assert_eq!(
                call_ok(&host, &id, json!("state")).await["count"],
                json!(round),
                "{id}"
            );
        }
    }
    // Every child ran both adds exactly once.
    let mut total = 0;
    for i in 0..N {
        total += call_ok(&host, &format!("s{i:05}"), json!("state")).await["count"]
            .as_i64()
            .unwrap();
    }
    assert_eq!(total, 2 * N as i64);
    // All idle again: every instance is given back.
    wait_for("every child to hibernate", LIMIT * 3, || {
        (metric(&host, "wasmvisor_instances") == 0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&host, "wasmvisor_children{status=\"hibernated\"}"),
        N as u64
    );
}
