//! Cluster mode against a real `nats-server -js` on loopback (which
//! `.ci/run` installs): three `wasmvisor` processes join one cluster, list
//! each other, refuse a second node of a live name, and agree on who holds
//! each dynamic child id when they all start the same ids at once.

mod common;

use common::process::RunningHost;
use hyper::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// A `nats-server` with JetStream on a free loopback port and a temporary
/// store, killed on drop.
struct Nats {
    url: String,
    _process: tokio::process::Child,
    _store: tempfile::TempDir,
}

impl Nats {
    /// `None` (with the reason printed) when `nats-server` is not installed.
    async fn start() -> Option<Nats> {
        if std::process::Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: nats-server is not on PATH (apt-get install nats-server)");
            return None;
        }
        let store = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        let addr = format!("127.0.0.1:{port}");
        wasmvisor_tests::wait_for_async("nats-server to listen", Duration::from_secs(20), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(&addr).await.ok() }
        })
        .await;
        Some(Nats {
            url: format!("nats://{addr}"),
            _process: process,
            _store: store,
        })
    }
}

/// The tests run one at a time: each runs a NATS server and up to three
/// hosts, and on a small machine more at once would starve heartbeats.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A lease of 3 s (half the timeout): long enough for a busy test machine.
const CONFIG: &str = "[cluster]\nheartbeat_ms = 500\nnode_timeout_ms = 6000\n";

async fn node(nats: &Nats, name: &str) -> RunningHost {
    RunningHost::start_with(&["--cluster", &nats.url, "--node", name], Some(CONFIG)).await
}

/// The ids the cluster lists, as node `h` sees it.
async fn ids_of(h: &RunningHost) -> Vec<String> {
    h.get("/v1/children?limit=10000")
        .await
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| c["id"].as_str().expect("an id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_and_every_id_is_started_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let nodes = [
        node(&nats, "n1").await,
        node(&nats, "n2").await,
        node(&nats, "n3").await,
    ];

    // Each lists the three, alive, and says which one it is.
    let listed = nodes[1].get("/v1/nodes").await;
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2", "n3"], "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["alive"] == true)
    );
    assert_eq!(listed[1]["this_node"], true);
    assert_eq!(listed[1]["api"], nodes[1].addr.as_str());
    assert!(listed[0]["plugins"]["chaos"].is_string(), "{listed}");

    // Every node starts the same 100 ids, 3 times each, all at once.
    let mut starts = Vec::new();
    for round in 0..3 {
        for (n, h) in nodes.iter().enumerate() {
            for i in 0..100 {
                let client = h.client.clone();
                starts.push(tokio::spawn(async move {
                    let body = json!({"id": format!("c{i}"), "plugin": "chaos",
                                      "args": {"by": n, "round": round}});
                    let (status, body) = client
                        .raw(Method::POST, "/v1/children", Some(&body))
                        .await
                        .expect("the node answers");
                    (
                        status.as_u16(),
                        serde_json::from_slice::<Value>(&body).unwrap(),
                    )
                }));
            }
        }
    }
    let (mut started, mut refused) = (0, 0);
    for s in starts {
        match s.await.unwrap() {
            (201, _) => started += 1,
            (409, body) => {
                assert_eq!(body["error"], "already_started", "{body}");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((started, refused), (100, 800));
    // Every node lists the whole cluster, each child once, with its node;
    // and each node runs what it says.
    let listed = nodes[2].get("/v1/children?limit=10000").await;
    let listed = listed.as_array().expect("a list");
    let unique: BTreeSet<&str> = listed.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!((listed.len(), unique.len()), (100, 100), "an id runs twice");
    for (n, h) in nodes.iter().enumerate() {
        let name = format!("n{}", n + 1);
        let theirs: BTreeSet<String> = listed
            .iter()
            .filter(|c| c["node"] == name.as_str())
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        // (A node may have won none of the races.)
        if let Some(id) = theirs.iter().next() {
            let own = h.get(&format!("/v1/children/{id}")).await;
            assert_eq!(own["node"], name.as_str(), "{own}");
        }
    }
    // Paged across nodes: 40 + 40 + 20, in id order.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let path = match after.is_empty() {
            true => "/v1/children?limit=40".to_string(),
            false => format!("/v1/children?limit=40&after={after}"),
        };
        let page = nodes[0].get(&path).await;
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap()["id"].as_str().unwrap().to_string();
        paged.extend(
            page.into_iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
    }
    let mut sorted = paged.clone();
    sorted.sort();
    assert_eq!((paged.len(), paged == sorted), (100, true));

    // The heartbeats carry the counts.
    wasmvisor_tests::wait_for_async("the nodes' child counts", Duration::from_secs(20), || {
        let h = &nodes[0];
        async move {
            let listed = h.get("/v1/nodes").await;
            let total: u64 = listed
                .as_array()?
                .iter()
                .map(|n| n["children"].as_u64().unwrap_or(0))
                .sum();
            (total == 100).then_some(())
        }
    })
    .await;

    // A stopped child's id is free again, on any node.
    let mut owner = None;
    for (n, h) in nodes.iter().enumerate() {
        let (status, _) = h
            .client
            .raw(Method::GET, "/v1/children/c7", None)
            .await
            .unwrap();
        if status.as_u16() == 200 {
            owner = Some(n);
        }
    }
    let owner = owner.expect("some node runs c7");
    let other = (owner + 1) % 3;
    let again = json!({"id": "c7", "plugin": "chaos"});
    let (status, _) = nodes[other]
        .client
        .raw(Method::POST, "/v1/children", Some(&again))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 409, "c7 runs on n{}", owner + 1);
    nodes[owner]
        .client
        .json(Method::DELETE, "/v1/children/c7", None)
        .await
        .expect("c7 stops");
    let (status, body) = nodes[other]
        .client
        .raw(Method::POST, "/v1/children", Some(&again))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 201, "{}", String::from_utf8_lossy(&body));

    // A fourth node with a live node's name is refused (once that name
    // has had `node_timeout_ms` to come free, and did not).
    let dir = tempfile::tempdir().unwrap();
    wasmvisor_tests::copy_plugins(&dir.path().join("plugins"));
    let log = RunningHost::start_in(dir, &["--cluster", &nats.url, "--node", "n2"])
        .await
        .err()
        .expect("a second n2 is refused");
    assert!(log.contains("a node named n2 is alive"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_host_has_no_nodes() {
    let h = RunningHost::start(&[]).await;
    let (status, body) = h.client.raw(Method::GET, "/v1/nodes", None).await.unwrap();
    assert_eq!(status.as_u16(), 404);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "no_cluster");
}

async fn post(h: &RunningHost, path: &str, body: Value) -> (u16, Value) {
    let (status, bytes) = h
        .client
        .raw(Method::POST, path, Some(&body))
        .await
        .expect("the node answers");
    (
        status.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Calls, casts, kills, restarts, reads and stops reach the node that runs
/// the child, from another node's API and from a guest on another node,
/// with the same answers and error codes as on one host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_casts_reach_the_node_that_runs_the_child() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let (n1, n2) = (node(&nats, "n1").await, node(&nats, "n2").await);
    assert_eq!(
        post(&n1, "/v1/children", json!({"id": "a", "plugin": "chaos"}))
            .await
            .0,
        201
    );
    assert_eq!(
        post(
            &n2,
            "/v1/children",
            json!({"id": "b", "plugin": "chaos", "args": {"k": 1}})
        )
        .await
        .0,
        201
    );

    // Through n1's API to b, which runs on n2.
    for i in 1..=20 {
        let (status, body) = post(&n1, "/v1/children/b/cast", json!({"msg": {"add": i}})).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = post(&n1, "/v1/children/b/call", json!({"msg": "state"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], json!({"args": {"k": 1}, "count": 210}));
    let got = n1.get("/v1/children/b").await;
    assert_eq!(
        (got["node"].as_str(), got["plugin"].as_str()),
        (Some("n2"), Some("chaos"))
    );
    let (status, body) = post(&n1, "/v1/children/b/call", json!({"msg": "panic"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("trapped")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("chaos panic"),
        "{body}"
    );
    let (status, body) = post(&n1, "/v1/children/ghost/call", json!({"msg": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = post(
        &n1,
        "/v1/children/b/call",
        json!({"msg": {"spin": 1_000_000_000_u64}, "timeout_ms": 200}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (504, Some("timeout")),
        "{body}"
    );
    let (status, _) = post(&n1, "/v1/children/b/kill", json!({"reason": "from n1"})).await;
    assert_eq!(status, 202);
    wasmvisor_tests::wait_for_async("b's kill", Duration::from_secs(20), || async {
        let b = n2.get("/v1/children/b").await;
        (b["last_exit"]["killed"] == "from n1").then_some(())
    })
    .await;
    let (status, _) = post(&n1, "/v1/children/b/restart", json!({})).await;
    assert_eq!(status, 200);

    // Guest to guest: a (on n1) calls and casts b (on n2).
    let via_a = |msg: Value| post(&n1, "/v1/children/a/call", json!({"msg": msg}));
    let (_, body) = via_a(json!({"call": {"to": "b", "msg": {"add": 2}}})).await;
    assert_eq!(body["reply"], 2, "{body}");
    let (_, body) = via_a(json!({"cast": {"to": "b", "msg": {"add": 3}}})).await;
    assert_eq!(body["reply"], "ok", "{body}");
    let (_, body) = via_a(json!({"call": {"to": "b", "msg": "state"}})).await;
    assert_eq!(body["reply"]["count"], 5, "{body}");
    let (_, body) = via_a(json!({"call": {"to": "b", "msg": "panic"}})).await;
    assert_eq!(body["reply"]["error"], "trapped", "{body}");
    let (_, body) = via_a(json!({"cast": {"to": "nobody", "msg": 1}})).await;
    assert_eq!(body["reply"]["error"], "not_found", "{body}");

    // Topics are cluster-wide: a publish on n1 reaches a subscriber on
    // n2 and an event stream on n2.
    let client = n2.client.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        client
            .events(Some("news"), false, |_, data| {
                let _ = tx.send(data.to_string());
                true
            })
            .await
    });
    post(
        &n2,
        "/v1/children",
        json!({"id": "reader", "plugin": "chaos"}),
    )
    .await;
    post(
        &n2,
        "/v1/children/reader/call",
        json!({"msg": {"subscribe": "news"}}),
    )
    .await;
    // The stream is open once it shows a publish; publish until it does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let event = loop {
        assert!(tokio::time::Instant::now() < deadline, "no event on n2");
        via_a_publish(&n1).await;
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            break event;
        }
    };
    let event: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(
        (event["topic"].as_str(), &event["msg"]),
        (Some("news"), &json!({"n": 1}))
    );
    reader.abort();
    let (_, infos) = post(&n2, "/v1/children/reader/call", json!({"msg": "infos"})).await;
    assert!(
        infos["reply"]
            .as_array()
            .unwrap()
            .contains(&json!({"event": {"topic": "news", "msg": {"n": 1}}})),
        "{infos}"
    );

    // Stopped from n1, b is gone everywhere.
    n1.client
        .json(Method::DELETE, "/v1/children/b", None)
        .await
        .expect("b stops");
    assert_eq!(ids_of(&n2).await, ["a", "reader"]);
    let (status, _) = post(&n1, "/v1/children/b/call", json!({"msg": 1})).await;
    assert_eq!(status, 404);
}

/// `a` (on n1) publishes `{"n": 1}` on `news`.
async fn via_a_publish(n1: &RunningHost) {
    let (status, body) = post(
        n1,
        "/v1/children/a/call",
        json!({"msg": {"publish": {"topic": "news", "msg": {"n": 1}}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// `kill -9` of a node: once its heartbeat is older than
/// `node_timeout_ms`, the survivors take its children over (each by
/// exactly one of them), restarted with their args; `temporary` ones are
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_children_serve_again_on_the_survivors() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let (n1, n2, n3) = (
        node(&nats, "n1").await,
        node(&nats, "n2").await,
        node(&nats, "n3").await,
    );
    let mut starts = Vec::new();
    for i in 0..300 {
        let client = n3.client.clone();
        starts.push(tokio::spawn(async move {
            let restart = if i % 15 == 0 {
                "temporary"
            } else {
                "permanent"
            };
            let body = json!({"id": format!("k{i:03}"), "plugin": "chaos",
                              "args": {"i": i}, "restart": restart});
            let (status, _) = client
                .raw(Method::POST, "/v1/children", Some(&body))
                .await
                .expect("n3 answers");
            status.as_u16()
        }));
    }
    for s in starts {
        assert_eq!(s.await.unwrap(), 201);
    }
    n3.kill().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let moved = loop {
        let listed = n1.get("/v1/children?limit=10000").await;
        let listed = listed.as_array().expect("a list").clone();
        let serving = listed
            .iter()
            .filter(|c| c["status"] == "running" && c["node"] != "n3")
            .count();
        if listed.len() == 280 && serving == 280 {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 30 s, {} listed, {serving} serving; n1's log:\n{}\nn2's log:\n{}",
            listed.len(),
            n1.log(),
            n2.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: BTreeSet<&str> = moved.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 280, "an id runs twice");
    assert!(moved.iter().all(|c| c["restart"] == "permanent"));
    assert!(moved.iter().any(|c| c["node"] == "n1"));
    assert!(moved.iter().any(|c| c["node"] == "n2"));
    // They serve, with their args.
    for id in ["k001", "k299", "k151"] {
        let (status, body) = post(
            &n2,
            &format!("/v1/children/{id}/call"),
            json!({"msg": "state"}),
        )
        .await;
        let i: u64 = id[1..].parse().unwrap();
        assert_eq!(
            (status, &body["reply"]["args"]),
            (200, &json!({"i": i})),
            "{body}"
        );
    }
    // A temporary child is not restarted: its id is free.
    let (status, _) = post(
        &n1,
        "/v1/children",
        json!({"id": "k000", "plugin": "chaos"}),
    )
    .await;
    assert_eq!(status, 201);
}

/// Where the singleton `leader` runs, as `h` lists the cluster: once, and
/// serving.
async fn leader_on(h: &RunningHost) -> Option<String> {
    let listed = h.get("/v1/children?limit=10000").await;
    let leaders: Vec<&Value> = listed
        .as_array()?
        .iter()
        .filter(|c| c["id"] == "leader")
        .collect();
    match leaders.as_slice() {
        [one] if one["status"] == "running" => one["node"].as_str().map(str::to_string),
        _ => None,
    }
}

/// A singleton declared on all three nodes runs once, and moves when its
/// node is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_runs_once_and_moves_when_its_node_dies() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let config = format!(
        "{CONFIG}\n[[children]]\nid = \"leader\"\nplugin = \"chaos\"\nplacement = \"singleton\"\nargs = {{ role = \"leader\" }}\n"
    );
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let flags = ["--cluster", nats.url.as_str(), "--node", name];
        nodes.push(Some(RunningHost::start_with(&flags, Some(&config)).await));
    }
    let first = nodes[0].as_ref().unwrap();
    let home = wasmvisor_tests::wait_for_async("the singleton", Duration::from_secs(30), || {
        leader_on(first)
    })
    .await;
    // Every node lists it once, on the same node, and reaches it.
    for h in nodes.iter().flatten() {
        assert_eq!(leader_on(h).await.as_deref(), Some(home.as_str()));
        let (status, body) = post(h, "/v1/children/leader/call", json!({"msg": "state"})).await;
        assert_eq!(
            (status, &body["reply"]["args"]),
            (200, &json!({"role": "leader"})),
            "{body}"
        );
    }

    // Its node dies: it comes up on another, once.
    let dead: usize = home[1..].parse::<usize>().unwrap() - 1;
    nodes[dead].take().unwrap().kill().await;
    let observer = nodes[(dead + 1) % 3].as_ref().unwrap();
    let moved =
        wasmvisor_tests::wait_for_async("the singleton to move", Duration::from_secs(30), || {
            let home = home.clone();
            async move { leader_on(observer).await.filter(|n| *n != home) }
        })
        .await;
    assert_ne!(moved, home);
}
