//! `mentions_sync`: polls a local HTTP server that the test runs.

use super::*;
use std::sync::{Arc, Mutex};
use wasmvisor::Event;

/// A server answering `GET /mentions` with the current list.
async fn server(list: Arc<Mutex<Value>>) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/mentions",
        axum::routing::get(move || {
            let list = list.clone();
            async move { axum::Json(list.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_each_new_mention_once_and_stops_with_its_owner() {
    let list = Arc::new(Mutex::new(json!([
        {"id": 1, "body": "hello @ann"},
        {"id": 2, "body": "ping @ann"}
    ])));
    let addr = server(list.clone()).await;
    let (host, _dir) = host_with(|c| {
        c.plugins
            .entry("mentions_sync".into())
            .or_default()
            .allowed_hosts = vec![addr.to_string()];
    })
    .await;
    start_ok(&host, "ann", "tracker", json!({})).await;
    let mut rx = host.events();
    let args = json!({"url": format!("http://{addr}/mentions"), "interval_ms": 20, "owner": "ann"});
    host.start_child(spec_with(
        "sync:ann",
        "mentions_sync",
        args,
        wasmvisor::Restart::Temporary,
    ))
    .await
    .unwrap();
    let mut published = Vec::new();
    let mut next = async || loop {
        let event = tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("a mention")
            .unwrap();
        if let Event::Topic { topic, msg } = &*event {
            assert_eq!(topic, "mentions:ann");
            return serde_json::from_slice::<Value>(msg).unwrap();
        }
    };
    published.push(next().await);
    published.push(next().await);
    assert_eq!(published, *list.lock().unwrap().as_array().unwrap());
    // Polls go on; only the new item is published.
    list.lock()
        .unwrap()
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "x3", "body": "new"}));
    assert_eq!(next().await, json!({"id": "x3", "body": "new"}));
    assert_eq!(call_ok(&host, "sync:ann", json!("poll")).await, json!(0));
    assert_eq!(call_ok(&host, "sync:ann", json!("seen")).await, json!(3));
    // The owner goes away: the syncer stops normally, and being temporary
    // it is gone.
    host.stop_child("ann").await.unwrap();
    wait_gone(&host, "sync:ann").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_outside_allowed_hosts_is_denied_and_everything_keeps_running() {
    let list = Arc::new(Mutex::new(json!([{"id": 1, "body": "b"}])));
    let addr = server(list).await;
    // Only another port of the same host is allowed.
    let (host, _dir) = host_with(|c| {
        c.plugins
            .entry("mentions_sync".into())
            .or_default()
            .allowed_hosts = vec![format!("127.0.0.1:{}", addr.port().wrapping_add(1))];
    })
    .await;
    start_ok(&host, "owner", "tracker", json!({})).await;
    let args =
        json!({"url": format!("http://{addr}/mentions"), "interval_ms": 60_000, "owner": "owner"});
    start_ok(&host, "sync", "mentions_sync", args).await;
    let reply = call_ok(&host, "sync", json!("poll")).await;
    let error = reply["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(
        error.contains("denied") && error.contains(&addr.to_string()),
        "{error}"
    );
    assert_eq!(call_ok(&host, "sync", json!("seen")).await, json!(0));
    let info = host.child("sync").unwrap();
    assert_eq!(
        (info.status, info.restarts),
        (wasmvisor::Status::Running, 0)
    );
    assert_eq!(
        call_ok(&host, "owner", json!("state")).await["events"],
        json!([])
    );
    // With no grant at all, the same.
    let (host, _dir) = common::host().await;
    start_ok(&host, "owner", "tracker", json!({})).await;
    let args = json!({"url": "http://example.com/", "interval_ms": 60_000, "owner": "owner"});
    start_ok(&host, "sync", "mentions_sync", args).await;
    let reply = call_ok(&host, "sync", json!("poll")).await;
    assert!(
        reply["error"].as_str().unwrap().contains("denied"),
        "{reply}"
    );
}
