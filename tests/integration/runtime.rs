//! The runtime imports as guests use them: timers, monitors, topics,
//! guest-to-guest calls and child management.

mod common;

use common::*;
use serde_json::json;
use wasmvisor::{Event, Restart, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_and_cancelled_timers_do_not() {
    let (host, _dir) = host().await;
    start_ok(&host, "t", "chaos", json!(null)).await;
    let early = call_ok(
        &host,
        "t",
        json!({"send_after": {"ms": 10, "msg": "early"}}),
    )
    .await;
    let cancelled = call_ok(
        &host,
        "t",
        json!({"send_after": {"ms": 50, "msg": "cancelled"}}),
    )
    .await;
    assert_ne!(early, cancelled);
    assert_eq!(
        call_ok(&host, "t", json!({"cancel_timer": cancelled})).await,
        json!(true)
    );
    assert_eq!(
        call_ok(&host, "t", json!({"cancel_timer": cancelled})).await,
        json!(false)
    );
    call_ok(
        &host,
        "t",
        json!({"send_after": {"ms": 150, "msg": "marker"}}),
    )
    .await;
    // The marker fires after the cancelled timer would have: by then it is
    // certain that the cancelled one never arrives.
    let got = wait_for_info(&host, "t", "the marker timer", |i| {
        i == &json!({"timer": "marker"})
    })
    .await;
    assert_eq!(
        got,
        vec![json!({"timer": "early"}), json!({"timer": "marker"})]
    );
    assert_eq!(
        call_ok(&host, "t", json!({"cancel_timer": early})).await,
        json!(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_die_with_the_instance_that_set_them() {
    let (host, _dir) = host().await;
    start_ok(&host, "t", "chaos", json!(null)).await;
    call_ok(
        &host,
        "t",
        json!({"send_after": {"ms": 30, "msg": "from the old instance"}}),
    )
    .await;
    let _ = call(&host, "t", json!("crash")).await;
    call_ok(
        &host,
        "t",
        json!({"send_after": {"ms": 100, "msg": "marker"}}),
    )
    .await;
    let got = wait_for_info(&host, "t", "the marker timer", |i| {
        i == &json!({"timer": "marker"})
    })
    .await;
    assert_eq!(got, vec![json!({"timer": "marker"})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_is_delivered_on_exit_and_at_once_for_an_id_never_running() {
    let (host, _dir) = host().await;
    start_ok(&host, "watcher", "chaos", json!(null)).await;
    start_ok(&host, "target", "chaos", json!(null)).await;
    let target = call_ok(&host, "watcher", json!({"monitor": "target"})).await;
    let ghost = call_ok(&host, "watcher", json!({"monitor": "ghost"})).await;
    assert_ne!(target, ghost, "each monitor has its own reference");
    wait_for_info(&host, "watcher", "down(ghost, noproc)", |i| {
        i == &json!({"down": {"ref": ghost, "id": "ghost", "reason": "noproc"}})
    })
    .await;
    let _ = call(&host, "target", json!("crash")).await;
    let got = wait_for_info(&host, "watcher", "down(target)", |i| {
        i["down"]["id"] == "target"
    })
    .await;
    let down = got.iter().find(|i| i["down"]["id"] == "target").unwrap();
    assert_eq!(down["down"]["ref"], target, "{down}");
    assert!(
        down["down"]["reason"]["trap"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{down}"
    );
    // A monitor fires once: the restarted target's next exit is not reported.
    // The down comes before the restart; a kill during the restart's `init`
    // would end that start, and the counter counts instances that ran.
    wait_child(&host, "target", "first restart", |c| c.restarts == 1).await;
    host.kill_child("target", "again").unwrap();
    wait_child(&host, "target", "second restart", |c| c.restarts == 2).await;
    call_ok(&host, "watcher", json!({"monitor": "ghost2"})).await;
    let got = wait_for_info(&host, "watcher", "down(ghost2)", |i| {
        i["down"]["id"] == "ghost2"
    })
    .await;
    assert_eq!(
        got.iter().filter(|i| i["down"]["id"] == "target").count(),
        1,
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_reports_normal_exits_too() {
    let (host, _dir) = host().await;
    start_ok(&host, "watcher", "chaos", json!(null)).await;
    host.start_child(spec_with(
        "worker",
        "chaos",
        json!(null),
        Restart::Temporary,
    ))
    .await
    .unwrap();
    let monitor = call_ok(&host, "watcher", json!({"monitor": "worker"})).await;
    call_ok(&host, "worker", json!("stop")).await;
    wait_for_info(&host, "watcher", "down(worker, normal)", |i| {
        i == &json!({"down": {"ref": monitor, "id": "worker", "reason": "normal"}})
    })
    .await;
    wait_gone(&host, "worker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribers_and_a_trapped_subscriber_subscribes_again() {
    let (host, _dir) = host().await;
    start_ok(&host, "sub", "chaos", json!({"subscribe": ["news"]})).await;
    start_ok(&host, "dynamic", "chaos", json!(null)).await;
    call_ok(&host, "dynamic", json!({"subscribe": "news"})).await;
    start_ok(&host, "pub", "chaos", json!(null)).await;
    call_ok(
        &host,
        "pub",
        json!({"publish": {"topic": "news", "msg": {"n": 1}}}),
    )
    .await;
    call_ok(
        &host,
        "pub",
        json!({"publish": {"topic": "other", "msg": "ignored"}}),
    )
    .await;
    let one = json!({"event": {"topic": "news", "msg": {"n": 1}}});
    wait_for_info(&host, "sub", "event 1", |i| i == &one).await;
    wait_for_info(&host, "dynamic", "event 1", |i| i == &one).await;

    // Both trap. `sub` subscribes in init, so it is subscribed again;
    // `dynamic` subscribed in a message, and that subscription died.
    for id in ["sub", "dynamic"] {
        let _ = call(&host, id, json!("crash")).await;
        // Answered by the new instance: its init has run.
        call_ok(&host, id, json!("state")).await;
    }
    call_ok(
        &host,
        "pub",
        json!({"publish": {"topic": "news", "msg": {"n": 2}}}),
    )
    .await;
    let two = json!({"event": {"topic": "news", "msg": {"n": 2}}});
    assert_eq!(
        wait_for_info(&host, "sub", "event 2", |i| i == &two).await,
        vec![two]
    );
    // `dynamic` gets nothing: prove it with a later direct publish that it
    // does see after subscribing again.
    call_ok(&host, "dynamic", json!({"subscribe": "news"})).await;
    call_ok(
        &host,
        "pub",
        json!({"publish": {"topic": "news", "msg": {"n": 3}}}),
    )
    .await;
    let three = json!({"event": {"topic": "news", "msg": {"n": 3}}});
    assert_eq!(
        wait_for_info(&host, "dynamic", "event 3", |i| i == &three).await,
        vec![three]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_reach_the_event_stream() {
    let (host, _dir) = host().await;
    let mut events = host.events();
    host.publish("alerts", br#"{"level":"high"}"#.to_vec());
    let event = tokio::time::timeout(LIMIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.topic(), Some("alerts"));
    assert!(matches!(&*event, Event::Topic { msg, .. } if &msg[..] == br#"{"level":"high"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_to_guest_calls() {
    let (host, _dir) = host().await;
    start_ok(&host, "a", "chaos", json!(null)).await;
    start_ok(&host, "b", "chaos", json!(null)).await;
    assert_eq!(
        call_ok(&host, "a", json!({"call": {"to": "b", "msg": {"add": 2}}})).await,
        json!(2)
    );
    assert_eq!(call_ok(&host, "b", json!("state")).await["count"], json!(2));
    let unknown = call_ok(
        &host,
        "a",
        json!({"call": {"to": "nobody", "msg": "state"}}),
    )
    .await;
    assert_eq!(unknown["error"], "not_found");
    let itself = call_ok(&host, "a", json!({"call": {"to": "a", "msg": "state"}})).await;
    assert_eq!(itself["error"], "failed");
    assert!(itself["message"].as_str().unwrap().contains("calling_self"));
    let trapped = call_ok(&host, "a", json!({"call": {"to": "b", "msg": "crash"}})).await;
    assert_eq!(trapped["error"], "trapped");
    assert_eq!(
        call_ok(&host, "a", json!({"cast": {"to": "b", "msg": "bump"}})).await,
        json!("ok")
    );
    assert_eq!(call_ok(&host, "b", json!("state")).await["count"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_calls_do_not_block_threads() {
    // Two workers, and more guests waiting in calls than workers: if a
    // waiting guest held a thread, the chain below could never complete.
    let (host, _dir) = host().await;
    for i in 0..6 {
        start_ok(&host, &format!("n{i}"), "chaos", json!(null)).await;
    }
    let mut msg = json!({"add": 1});
    for i in (1..6).rev() {
        msg = json!({"call": {"to": format!("n{i}"), "msg": msg}});
    }
    assert_eq!(call_ok(&host, "n0", msg).await, json!(1));
    assert_eq!(
        call_ok(&host, "n5", json!("state")).await["count"],
        json!(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_id_is_the_registry_id() {
    let (host, _dir) = host().await;
    start_ok(&host, "me:1", "chaos", json!(null)).await;
    assert_eq!(call_ok(&host, "me:1", json!("self")).await, json!("me:1"));
    let _ = call(&host, "me:1", json!("crash")).await;
    assert_eq!(call_ok(&host, "me:1", json!("self")).await, json!("me:1"));
    assert_eq!(host.child("me:1").unwrap().status, Status::Running);
}
