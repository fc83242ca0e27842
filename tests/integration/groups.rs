//! Supervision groups from the config: start and stop order, the three
//! strategies, intensity per group, escalation to the parent and to the
//! root, and static top-level children.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::broadcast;
use wasmvisor::config::{GroupConfig, StaticChild, Strategy};
use wasmvisor::{Config, Event, ExitReason, Host, Status};

fn member(id: &str) -> StaticChild {
    StaticChild {
        id: id.into(),
        plugin: "chaos".into(),
        args: json!({"name": id}),
        restart: Default::default(),
        activate: Default::default(),
        placement: Default::default(),
    }
}

fn group(id: &str, strategy: Strategy, ids: &[&str]) -> GroupConfig {
    GroupConfig {
        id: id.into(),
        strategy,
        max_restarts: None,
        max_seconds: None,
        children: ids.iter().map(|i| member(i)).collect(),
        groups: Vec::new(),
        placement: Default::default(),
    }
}

async fn host_with_groups(edit: impl FnOnce(&mut Config)) -> (Host, tempfile::TempDir) {
    host_with(|c| {
        c.ephemeral = true;
        edit(c);
    })
    .await
}

/// Adds to every child's count, so that a restart shows as a count of 0.
async fn mark(host: &Host, ids: &[&str]) {
    for id in ids {
        call_ok(host, id, json!({"add": 1})).await;
    }
}

async fn count(host: &Host, id: &str) -> u64 {
    call_ok(host, id, json!("state")).await["count"]
        .as_u64()
        .unwrap()
}

/// Lifecycle events of children, in order, until `done` says stop.
async fn lifecycle(
    rx: &mut broadcast::Receiver<Arc<Event>>,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while !done(&seen) {
            let event = rx.recv().await.expect("the event stream stays open");
            match &*event {
                Event::ChildExited { id, reason } => {
                    seen.push(format!("exit {id} {}", reason.code()))
                }
                Event::ChildRestarted { id, .. } => seen.push(format!("start {id}")),
                Event::ChildRemoved { id } => seen.push(format!("stop {id}")),
                Event::GroupEscalated { id, to, .. } => seen.push(format!(
                    "escalate {id} to {}",
                    to.as_deref().unwrap_or("root")
                )),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; events so far: {seen:?}"));
    seen
}

fn restarts(host: &Host, id: &str) -> u64 {
    host.child(id).unwrap().restarts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_start_in_order_show_their_group_and_stop_in_reverse_order() {
    let (host, _dir) = host_with_groups(|c| {
        let mut outer = group("outer", Strategy::OneForOne, &["a", "b"]);
        outer
            .groups
            .push(group("inner", Strategy::OneForOne, &["c", "d"]));
        c.groups.push(outer);
    })
    .await;
    let started: Vec<u64> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| host.child(id).unwrap().started_at_ms)
        .collect();
    assert!(started.windows(2).all(|w| w[0] <= w[1]), "{started:?}");
    assert_eq!(host.child("a").unwrap().group.as_deref(), Some("outer"));
    assert_eq!(host.child("d").unwrap().group.as_deref(), Some("inner"));
    let mut rx = host.events();
    host.shutdown().await;
    let seen = lifecycle(&mut rx, |s| s.len() == 4).await;
    assert_eq!(seen, ["stop d", "stop c", "stop b", "stop a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_member_that_exited() {
    let (host, _dir) = host_with_groups(|c| {
        c.groups
            .push(group("g", Strategy::OneForOne, &["a", "b", "c"]));
    })
    .await;
    mark(&host, &["a", "b", "c"]).await;
    let mut rx = host.events();
    host.cast("b", b"\"crash\"".to_vec()).unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 2).await;
    assert_eq!(seen, ["exit b trap", "start b"]);
    assert_eq!(
        (
            count(&host, "a").await,
            count(&host, "b").await,
            count(&host, "c").await
        ),
        (1, 0, 1)
    );
    assert_eq!(
        (
            restarts(&host, "a"),
            restarts(&host, "b"),
            restarts(&host, "c")
        ),
        (0, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() {
    let (host, _dir) = host_with_groups(|c| {
        c.groups
            .push(group("g", Strategy::OneForAll, &["a", "b", "c"]));
    })
    .await;
    mark(&host, &["a", "b", "c"]).await;
    let mut rx = host.events();
    host.cast("b", b"\"crash\"".to_vec()).unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 6).await;
    assert_eq!(
        seen,
        [
            "exit b trap",
            "exit c shutdown",
            "exit a shutdown",
            "start a",
            "start b",
            "start c"
        ]
    );
    for id in ["a", "b", "c"] {
        assert_eq!(count(&host, id).await, 0, "{id}");
        assert_eq!(restarts(&host, id), 1, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_member_and_those_after_it() {
    let (host, _dir) = host_with_groups(|c| {
        c.groups
            .push(group("g", Strategy::RestForOne, &["a", "b", "c", "d"]));
    })
    .await;
    mark(&host, &["a", "b", "c", "d"]).await;
    let mut rx = host.events();
    host.kill_child("b", "test").unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 6).await;
    assert_eq!(
        seen,
        [
            "exit b killed",
            "exit d shutdown",
            "exit c shutdown",
            "start b",
            "start c",
            "start d"
        ]
    );
    assert_eq!(count(&host, "a").await, 1);
    assert_eq!(restarts(&host, "a"), 0);
    for id in ["b", "c", "d"] {
        assert_eq!(count(&host, id).await, 0, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_group_over_its_intensity_escalates_to_its_parent() {
    let (host, _dir) = host_with_groups(|c| {
        let mut outer = group("outer", Strategy::OneForOne, &["a"]);
        let mut inner = group("inner", Strategy::OneForOne, &["x", "y"]);
        inner.max_restarts = Some(1);
        outer.groups.push(inner);
        c.groups.push(outer);
    })
    .await;
    mark(&host, &["a", "x", "y"]).await;
    let mut rx = host.events();
    // The first crash is within the inner group's intensity (1 restart)...
    host.cast("x", b"\"crash\"".to_vec()).unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 2).await;
    assert_eq!(seen, ["exit x trap", "start x"]);
    assert_eq!(count(&host, "y").await, 1);
    // ...the second exceeds it: the inner group stops (reverse order) and
    // the outer group restarts it as a whole (in order).
    host.cast("x", b"\"crash\"".to_vec()).unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 5).await;
    assert_eq!(
        seen,
        [
            "exit x trap",
            "exit y shutdown",
            "escalate inner to outer",
            "start x",
            "start y"
        ]
    );
    assert_eq!(count(&host, "y").await, 0);
    // The outer group's other member never noticed.
    assert_eq!((count(&host, "a").await, restarts(&host, "a")), (1, 0));
    // The restarted inner group counts from zero again.
    host.cast("y", b"\"crash\"".to_vec()).unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 2).await;
    assert_eq!(seen, ["exit y trap", "start y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_restarts_an_exhausted_group_after_a_backoff_and_the_host_keeps_serving() {
    let (host, _dir) = host_with_groups(|c| {
        let mut g = group("g", Strategy::OneForAll, &["a", "b"]);
        g.max_restarts = Some(0);
        c.groups.push(g);
        c.children.push(member("solo"));
    })
    .await;
    mark(&host, &["a", "b", "solo"]).await;
    let mut rx = host.events();
    host.cast("a", b"\"crash\"".to_vec()).unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 5).await;
    assert_eq!(
        seen,
        [
            "exit a trap",
            "exit b shutdown",
            "escalate g to root",
            "start a",
            "start b"
        ]
    );
    assert_eq!(count(&host, "solo").await, 1);
    assert_eq!(count(&host, "b").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_exhausted_fail_the_root_leaves_an_exhausted_group_failed() {
    let (host, _dir) = host_with_groups(|c| {
        c.supervisor.on_exhausted = wasmvisor::config::OnExhausted::Fail;
        let mut g = group("g", Strategy::OneForOne, &["a", "b"]);
        g.max_restarts = Some(0);
        c.groups.push(g);
    })
    .await;
    let mut rx = host.events();
    host.cast("a", b"\"crash\"".to_vec()).unwrap();
    let seen = lifecycle(&mut rx, |s| s.len() == 3).await;
    assert_eq!(
        seen,
        ["exit a trap", "exit b shutdown", "escalate g to root"]
    );
    for id in ["a", "b"] {
        assert_eq!(host.child(id).unwrap().status, Status::Failed, "{id}");
        assert!(matches!(
            call(&host, id, json!("state")).await,
            Err(wasmvisor::CallError::Failed(_))
        ));
    }
    // An operator revives a member.
    host.restart_child("a").await.unwrap();
    assert_eq!(count(&host, "a").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_children_run_under_their_own_policy_and_temporary_members_leave() {
    let (host, _dir) = host_with_groups(|c| {
        c.children.push(member("solo"));
        let mut g = group("g", Strategy::OneForAll, &["a"]);
        g.children.push(StaticChild {
            restart: wasmvisor::Restart::Temporary,
            ..member("temp")
        });
        c.groups.push(g);
    })
    .await;
    assert_eq!(host.child("solo").unwrap().group, None);
    host.cast("solo", b"\"crash\"".to_vec()).unwrap();
    wait_for("solo restarted", LIMIT, || {
        (restarts(&host, "solo") == 1).then_some(())
    })
    .await;
    // A temporary member that exits leaves the group; its siblings stay.
    mark(&host, &["a"]).await;
    host.cast("temp", b"\"crash\"".to_vec()).unwrap();
    wait_for("temp removed", LIMIT, || {
        host.child("temp").is_none().then_some(())
    })
    .await;
    assert_eq!(count(&host, "a").await, 1);
    assert_eq!(host.child("a").unwrap().last_exit, None::<ExitReason>);
}
