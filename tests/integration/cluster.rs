//! Cluster mode against a real `nats-server -js` on loopback (which
//! `.ci/run` installs): three `wasmvisor` processes join one cluster, list
//! each other, refuse a second node of a live name, and agree on who holds
//! each dynamic child id when they all start the same ids at once. A node
//! cut off from NATS by its own TCP proxy (a partition, the server still
//! up) stops its children before the survivors run them; a NATS that is
//! not there, or has no JetStream, is a clear error at start. A node signs
//! in with a token, a credentials file (a NATS in operator mode) or over
//! TLS with its own CA, and is refused without them.

mod common;

use common::process::RunningHost;
use common::proxy::Proxy;
use hyper::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// A `nats-server` with JetStream on a free loopback port and a temporary
/// store, killed on drop.
struct Nats {
    url: String,
    /// `127.0.0.1:PORT`, for a proxy in front of it.
    addr: String,
    _process: tokio::process::Child,
    _store: tempfile::TempDir,
}

impl Nats {
    /// `None` (with the reason printed) when `nats-server` is not installed.
    async fn start() -> Option<Nats> {
        Nats::start_with(true).await
    }

    /// As [`Nats::start`]; without `jetstream`, a server with JetStream off.
    async fn start_with(jetstream: bool) -> Option<Nats> {
        Nats::start_full(jetstream, &[]).await
    }

    /// A server with JetStream as `jetstream` says and `extra` arguments
    /// (e.g. `--auth TOKEN`).
    async fn start_full(jetstream: bool, extra: &[&str]) -> Option<Nats> {
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
        let mut command = tokio::process::Command::new("nats-server");
        if jetstream {
            command.arg("-js").arg("-sd").arg(store.path());
        }
        let log = store.path().join("nats-server.log");
        let mut process = command
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        let addr = format!("127.0.0.1:{port}");
        let listening = wasmvisor_tests::wait_for_async(
            "nats-server to listen",
            Duration::from_secs(20),
            || {
                // One that exits (say, refusing its config) says why.
                let exited = process.try_wait().ok().flatten();
                let addr = addr.clone();
                async move {
                    match exited {
                        Some(status) => Some(Err(status)),
                        None => tokio::net::TcpStream::connect(&addr).await.ok().map(Ok),
                    }
                }
            },
        )
        .await;
        if let Err(status) = listening {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("nats-server {extra:?} exited ({status}):\n{said}");
        }
        Some(Nats {
            url: format!("nats://{addr}"),
            addr,
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

/// Where `id` runs, as `h` lists the cluster: once, and serving.
async fn once_on(h: &RunningHost, id: &str) -> Option<String> {
    let listed = h.get("/v1/children?limit=10000").await;
    let found: Vec<&Value> = listed
        .as_array()?
        .iter()
        .filter(|c| c["id"] == id)
        .collect();
    match found.as_slice() {
        [one] if one["status"] == "running" => one["node"].as_str().map(str::to_string),
        _ => None,
    }
}

/// Where the singleton `leader` and the singleton group `pair` (members
/// `p1` and `p2`) run, as `h` lists the cluster: each once, the group's
/// members on one node.
async fn singletons_on(h: &RunningHost) -> Option<(String, String)> {
    let leader = once_on(h, "leader").await?;
    let (p1, p2) = (once_on(h, "p1").await?, once_on(h, "p2").await?);
    (p1 == p2).then_some((leader, p1))
}

/// A singleton child and a singleton group declared on all three nodes
/// run once each, and move when their node is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singletons_run_once_and_move_when_their_node_dies() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let config = format!(
        "{CONFIG}\n[[children]]\nid = \"leader\"\nplugin = \"chaos\"\nplacement = \"singleton\"\nargs = {{ role = \"leader\" }}\n\
         [[groups]]\nid = \"pair\"\nplacement = \"singleton\"\nstrategy = \"one_for_all\"\n\
         children = [{{ id = \"p1\", plugin = \"chaos\" }}, {{ id = \"p2\", plugin = \"chaos\" }}]\n"
    );
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let flags = ["--cluster", nats.url.as_str(), "--node", name];
        nodes.push(Some(RunningHost::start_with(&flags, Some(&config)).await));
    }
    let first = nodes[0].as_ref().unwrap();
    let (home, group_home) =
        wasmvisor_tests::wait_for_async("the singletons", Duration::from_secs(30), || {
            singletons_on(first)
        })
        .await;
    // Every node lists them once, on the same nodes, and reaches them.
    for h in nodes.iter().flatten() {
        assert_eq!(
            singletons_on(h).await,
            Some((home.clone(), group_home.clone()))
        );
        let (status, body) = post(h, "/v1/children/leader/call", json!({"msg": "state"})).await;
        assert_eq!(
            (status, &body["reply"]["args"]),
            (200, &json!({"role": "leader"})),
            "{body}"
        );
        let (status, body) = post(h, "/v1/children/p2/call", json!({"msg": "state"})).await;
        assert_eq!(status, 200, "{body}");
    }

    // The leader's node dies: the leader comes up on another, once, and so
    // does the group if it was there too.
    let dead: usize = home[1..].parse::<usize>().unwrap() - 1;
    nodes[dead].take().unwrap().kill().await;
    let observer = nodes[(dead + 1) % 3].as_ref().unwrap();
    let (moved, group_now) =
        wasmvisor_tests::wait_for_async("the singletons to move", Duration::from_secs(30), || {
            let home = home.clone();
            async move {
                singletons_on(observer)
                    .await
                    .filter(|(n, g)| *n != home && *g != home)
            }
        })
        .await;
    assert_ne!(moved, home);
    if group_home != home {
        assert_eq!(group_now, group_home, "the group moved without cause");
    }
}

/// A node that reaches NATS through `url` (a proxy's).
async fn node_at(url: &str, name: &str) -> RunningHost {
    RunningHost::start_with(&["--cluster", url, "--node", name], Some(CONFIG)).await
}

/// A bound on each request in the partition test: a node that hangs is a
/// failure with a message, not a test that never ends.
const ANSWER: Duration = Duration::from_secs(10);

/// `GET path` on `h`, which must answer within [`ANSWER`].
async fn get_soon(h: &RunningHost, what: &str, path: &str) -> Value {
    tokio::time::timeout(ANSWER, h.client.json(Method::GET, path, None))
        .await
        .unwrap_or_else(|_| panic!("{what}: GET {path} got no answer within {ANSWER:?}"))
        .unwrap_or_else(|e| panic!("{what}: GET {path}: {e:#}"))
}

/// `POST path` on `h`, which must answer within [`ANSWER`].
async fn post_soon(h: &RunningHost, what: &str, path: &str, body: Value) -> (u16, Value) {
    tokio::time::timeout(ANSWER, post(h, path, body))
        .await
        .unwrap_or_else(|_| panic!("{what}: POST {path} got no answer within {ANSWER:?}"))
}

/// The dynamic children node `h` runs itself, id to status: its own
/// supervision tree, which it reads without asking NATS or another node.
async fn local_children(h: &RunningHost, what: &str) -> std::collections::BTreeMap<String, String> {
    let tree = get_soon(h, what, "/v1/tree").await;
    tree["dynamic"]
        .as_array()
        .expect("a list of dynamic children")
        .iter()
        .map(|c| {
            let id = c["id"].as_str().expect("an id").to_string();
            (id, c["status"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// The cluster's listing as `h` merges it: id to node, each id once.
async fn placement(h: &RunningHost, what: &str) -> std::collections::BTreeMap<String, String> {
    let listed = get_soon(h, what, "/v1/children?limit=10000").await;
    let listed = listed.as_array().expect("a list");
    let mut at = std::collections::BTreeMap::new();
    for c in listed {
        let id = c["id"].as_str().expect("an id").to_string();
        let node = c["node"].as_str().expect("a node").to_string();
        if let Some(other) = at.insert(id.clone(), node.clone()) {
            panic!("{what}: {id} is listed twice, on {other} and on {node}: {listed:?}");
        }
    }
    at
}

/// Starts chaos child `id` on `h` with args `{"i": i}`; it must be
/// acknowledged (201).
async fn start(h: &RunningHost, id: &str, restart: &str, i: u64) {
    let body = json!({"id": id, "plugin": "chaos", "args": {"i": i}, "restart": restart});
    let (status, body) = post_soon(h, "a start", "/v1/children", body).await;
    assert_eq!(status, 201, "{id}: {body}");
}

/// A network partition: n3 loses NATS (its proxy cuts every connection)
/// for longer than `node_timeout_ms`, while n1 and n2 keep it. n3 stops
/// its children (fenced, at half the timeout) before a survivor runs any
/// of them (at the timeout); the survivors serve the non-temporary ones
/// and take new starts; n3 refuses starts but still answers, its listing
/// included. Healed, n3 is back, no id runs on two nodes, and every
/// acknowledged start is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_stops_its_children_before_the_survivors_run_them() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let proxies = [
        Proxy::start(&nats.addr).await,
        Proxy::start(&nats.addr).await,
        Proxy::start(&nats.addr).await,
    ];
    let (n1, n2, n3) = (
        node_at(&proxies[0].nats_url(), "n1").await,
        node_at(&proxies[1].nats_url(), "n2").await,
        node_at(&proxies[2].nats_url(), "n3").await,
    );
    let logs = || {
        format!(
            "n1's log:\n{}\nn2's log:\n{}\nn3's log:\n{}",
            n1.log(),
            n2.log(),
            n3.log()
        )
    };

    // Acknowledged starts that must outlive the partition, id to args.
    let mut kept = std::collections::BTreeMap::new();
    // n3's: durable (the hosts keep a data dir), mostly `permanent`, so
    // they move; a few `temporary`, which do not.
    let mut isolated = BTreeSet::new();
    for i in 0..24 {
        let id = format!("p{i:02}");
        isolated.insert(id.clone());
        kept.insert(id.clone(), i);
        start(&n3, &id, "permanent", i).await;
    }
    let temporary: BTreeSet<String> = (0..4).map(|i| format!("t{i}")).collect();
    for (i, id) in temporary.iter().enumerate() {
        isolated.insert(id.clone());
        start(&n3, id, "temporary", 100 + i as u64).await;
    }
    for i in 0..4 {
        for (h, id, restart, arg) in [
            (&n1, format!("a{i}"), "permanent", 200 + i),
            (&n2, format!("b{i}"), "transient", 300 + i),
        ] {
            start(h, &id, restart, arg).await;
            kept.insert(id, arg);
        }
    }
    assert_eq!(placement(&n1, "before the cut").await.len(), 36);

    // The cut. Each round reads n3's own children, then the survivors'
    // (their own trees, not a merged listing, which may leave a node
    // out): the first round that sees n3 stopped must come strictly
    // before the first that sees a survivor run one of n3's ids, so at
    // some instant n3 had stopped and no survivor had started.
    proxies[2].cut();
    let cut_at = tokio::time::Instant::now();
    let (mut stopped, mut first_taken) = (None, None);
    let mut listing = None;
    let deadline = cut_at + Duration::from_secs(30);
    let mut round = 0;
    loop {
        round += 1;
        let on_n3 = local_children(&n3, "n3 while cut off").await;
        let still = isolated.iter().filter(|id| on_n3.contains_key(*id)).count();
        if still == 0 && stopped.is_none() {
            stopped = Some((round, cut_at.elapsed()));
            // A listing asked now, while n3 still counts the others as
            // live: it must answer while the partition lasts.
            let client = n3.client.clone();
            listing = Some((
                tokio::time::Instant::now(),
                tokio::spawn(async move { client.json(Method::GET, "/v1/children", None).await }),
            ));
        }
        let mut taken = 0;
        let mut serving = 0;
        for survivor in [&n1, &n2] {
            let theirs = local_children(survivor, "a survivor").await;
            for id in &isolated {
                if let Some(status) = theirs.get(id) {
                    taken += 1;
                    serving += usize::from(status == "running");
                }
            }
        }
        if taken > 0 && first_taken.is_none() {
            first_taken = Some((round, cut_at.elapsed()));
        }
        if serving == 24 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "30 s after the cut: {still} of n3's children still on n3, {taken} on the \
             survivors, {serving} serving\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stopped, first_taken) = (stopped.unwrap(), first_taken.unwrap());
    eprintln!(
        "partition: n3 seen stopped at {:?} (round {}); a survivor first seen running one \
         of its children at {:?} (round {})",
        stopped.1, stopped.0, first_taken.1, first_taken.0
    );
    assert!(
        stopped.0 < first_taken.0,
        "a survivor ran one of n3's children (round {}, {:?}) before n3 was seen to have \
         stopped them all (round {}, {:?})\n{}",
        first_taken.0,
        first_taken.1,
        stopped.0,
        stopped.1,
        logs()
    );

    // Each survivor runs the non-temporary ones, and they answer through
    // either survivor, with their args.
    let moved = placement(&n1, "the survivors").await;
    for (i, id) in isolated.iter().filter(|id| id.starts_with('p')).enumerate() {
        assert!(
            moved.get(id).is_some_and(|n| n == "n1" || n == "n2"),
            "{id}: {moved:?}"
        );
        let via = [&n1, &n2][i % 2];
        let (status, body) = post_soon(
            via,
            "a moved child",
            &format!("/v1/children/{id}/call"),
            json!({"msg": "state"}),
        )
        .await;
        assert_eq!(
            (status, &body["reply"]["args"]),
            (200, &json!({"i": kept[id]})),
            "{id}: {body}"
        );
    }
    // A temporary child is not restarted: once its heir saw it, its id
    // is free, and a start of it on a survivor is acknowledged.
    let t0 = json!({"id": "t0", "plugin": "chaos", "args": {"i": 400}});
    wasmvisor_tests::wait_for_async("t0's id to be free", Duration::from_secs(20), || async {
        let (status, body) = post_soon(&n1, "a start of t0", "/v1/children", t0.clone()).await;
        assert!(status == 201 || status == 409, "{body}");
        (status == 201).then_some(())
    })
    .await;
    kept.insert("t0".to_string(), 400);
    // The survivors take starts during the partition.
    for i in 0..4 {
        for (h, id, arg) in [
            (&n1, format!("d{i}"), 500 + i),
            (&n2, format!("e{i}"), 600 + i),
        ] {
            start(h, &id, "permanent", arg).await;
            kept.insert(id, arg);
        }
    }
    // n3, fenced, refuses a start, and still answers reads: its nodes, and
    // a listing of what it has (nothing: it cannot reach the others).
    let (status, body) = post_soon(
        &n3,
        "a start on n3",
        "/v1/children",
        json!({"id": "x", "plugin": "chaos"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(get_soon(&n3, "n3's nodes", "/v1/nodes").await.is_array());
    // Awaited before the heal, so that reconnecting cannot answer it: a
    // node cut off from NATS lists what it has, without asking the nodes
    // it still counts as live.
    let (asked, early) = listing.expect("asked when n3 was seen stopped");
    tokio::time::timeout_at(asked + ANSWER, early)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "n3's GET /v1/children, asked {:?} after the cut (once fenced), got no answer \
                 within {ANSWER:?} while the partition lasted",
                stopped.1
            )
        })
        .expect("the listing task")
        .expect("n3 lists its children while fenced");
    assert_eq!(
        get_soon(&n3, "n3's listing", "/v1/children").await,
        json!([])
    );

    // Healed: n3's heartbeat is renewed (the survivors see it alive) and
    // its fence lifted (it takes starts again).
    proxies[2].heal();
    for h in [&n1, &n2, &n3] {
        wasmvisor_tests::wait_for_async(
            "n3 to be alive again",
            Duration::from_secs(30),
            || async {
                let nodes = get_soon(h, "nodes after the heal", "/v1/nodes").await;
                let alive = nodes
                    .as_array()?
                    .iter()
                    .filter(|n| n["alive"] == true)
                    .count();
                (alive == 3).then_some(())
            },
        )
        .await;
    }
    let back = json!({"id": "f0", "plugin": "chaos", "args": {"i": 700}});
    wasmvisor_tests::wait_for_async("n3 to take starts", Duration::from_secs(30), || async {
        let (status, body) =
            post_soon(&n3, "a start after the heal", "/v1/children", back.clone()).await;
        assert!(status == 201 || status == 503, "{body}");
        (status == 201).then_some(())
    })
    .await;
    kept.insert("f0".to_string(), 700);

    // No id runs on two nodes, now or during the next heartbeats (when n3
    // looks for its own claims that run nowhere, a stale copy of the
    // claims would restart a moved child there too): the nodes' own
    // children are disjoint, each node lists every kept id once, and the
    // nodes agree on where each runs. Held for a few heartbeats.
    let expected: BTreeSet<&String> = kept.keys().collect();
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut runs_on = std::collections::BTreeMap::new();
        for (name, h) in [("n1", &n1), ("n2", &n2), ("n3", &n3)] {
            for id in local_children(h, "after the heal").await.into_keys() {
                if let Some(other) = runs_on.insert(id.clone(), name) {
                    panic!(
                        "{id} runs on {other} and on {name} after the heal\n{}",
                        logs()
                    );
                }
            }
        }
        let ran: BTreeSet<&String> = runs_on.keys().collect();
        assert_eq!(ran, expected, "what runs after the heal\n{}", logs());
        if tokio::time::Instant::now() >= watch_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = placement(&n1, "n1 after the heal").await;
    assert_eq!(seen.keys().collect::<BTreeSet<_>>(), expected);
    for (name, h) in [("n2", &n2), ("n3", &n3)] {
        assert_eq!(
            placement(h, name).await,
            seen,
            "n1 and {name} disagree on where children run"
        );
    }
    // The moved children stay where they moved; n3 runs only what was
    // started on it after the heal.
    assert!(
        seen.iter().all(|(id, n)| n != "n3" || id == "f0"),
        "{seen:?}"
    );
    for id in &temporary {
        assert!(id == "t0" || !seen.contains_key(id), "{id} came back");
    }
    // Every kept child answers, with the args it was started with.
    for (id, i) in &kept {
        let (status, body) = post_soon(
            &n3,
            "a call after the heal",
            &format!("/v1/children/{id}/call"),
            json!({"msg": "state"}),
        )
        .await;
        assert_eq!(
            (status, &body["reply"]["args"]),
            (200, &json!({"i": i})),
            "{id}: {body}"
        );
    }
    // A stale checkpoint write: see the paused node's test below (a
    // partitioned node's writes fail while it is cut off, and it stops its
    // children before its lease ends), and the store's own test of a write
    // refused after a take-over (`cluster::state` in the host crate).
}

/// The exit status, stderr and run time of `wasmvisor run` on an empty
/// folder with `--cluster url`, which must exit (not serve) within 60 s.
async fn run_failing(url: &str) -> (std::process::ExitStatus, String, Duration) {
    run_failing_with(url, None).await
}

/// As [`run_failing`], with `config` as the folder's `wasmvisor.toml`.
async fn run_failing_with(
    url: &str,
    config: Option<&str>,
) -> (std::process::ExitStatus, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = config {
        std::fs::write(dir.path().join("wasmvisor.toml"), text).unwrap();
    }
    let began = std::time::Instant::now();
    let out = tokio::process::Command::new(common::process::BIN)
        .current_dir(dir.path())
        .args(["run", "--listen", "127.0.0.1:0", "--plugins"])
        .arg(dir.path().join("plugins"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--cluster", url, "--node", "n1"])
        .env_remove("WASMVISOR_TOKEN")
        .env_remove("WASMVISOR_ADDR")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the host exits within 60 s")
        .expect("the wasmvisor binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "it serves: {stdout}");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        began.elapsed(),
    )
}

/// No NATS at the URL: the host exits non-zero within its own connect
/// timeout (10 s), saying which URL it could not reach. (No server, no
/// CPU: it does not wait for the other cluster tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_is_a_clear_error_naming_the_url() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let (status, stderr, took) = run_failing(&url).await;
    assert!(!status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    // Not a retried connect that later fails on JetStream: the first
    // connect's error, naming the URL.
    assert!(
        last.contains(&url),
        "the error does not name {url}: {stderr}"
    );
    assert!(took < Duration::from_secs(15), "it took {took:?}: {stderr}");
}

/// A NATS server without JetStream: the host exits non-zero at once and
/// says JetStream is what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_without_jetstream_is_a_clear_error() {
    let Some(nats) = Nats::start_with(false).await else {
        return;
    };
    let (status, stderr, took) = run_failing(&nats.url).await;
    assert!(!status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("JetStream") && last.contains("-js"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// Starts chaos child `id` on `h`; the status.
async fn started(h: &RunningHost, id: &str) -> u16 {
    let body = json!({"id": id, "plugin": "chaos", "args": {"id": id}});
    post(h, "/v1/children", body).await.0
}

/// Calls `id` through `h` with a 1 s timeout.
async fn call_1s(h: &RunningHost, id: &str, msg: Value) -> (u16, Value) {
    let path = format!("/v1/children/{id}/call");
    post(h, &path, json!({"msg": msg, "timeout_ms": 1000})).await
}

/// A node that was paused (SIGSTOP) past `node_timeout_ms` while its child
/// waited in a call: the survivor takes the child over with the state it
/// had checkpointed in the cluster's store. Resumed, the paused node does
/// not get its late checkpoint in: either it fences itself first (the
/// child's call is cut short) or the store refuses the write as stale.
/// The survivor's checkpoint stands, and the child runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_nodes_late_checkpoint_does_not_overwrite_the_moved_childs_state() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let config =
        format!("{CONFIG}[plugins.chaos]\ndurable_state = true\nrestart_from = \"checkpoint\"\n");
    let on = |name: &str| {
        let args = ["--cluster", nats.url.as_str(), "--node", name].map(str::to_string);
        let config = config.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            RunningHost::start_with(&args, Some(&config)).await
        }
    };
    let (n1, n2) = (on("n1").await, on("n2").await);
    assert_eq!(started(&n2, "d").await, 201);
    assert_eq!(started(&n1, "gate").await, 201);
    assert_eq!(started(&n1, "watch").await, 201);
    assert_eq!(
        call_1s(&n1, "watch", json!({"subscribe": "waiting"}))
            .await
            .0,
        200
    );
    assert_eq!(
        call_1s(&n2, "d", json!({"add": 5})).await.1["reply"],
        json!(5)
    );
    assert_eq!(
        call_1s(&n2, "d", json!("checkpoint")).await.1["reply"],
        json!("ok")
    );

    // d (on n2) says it waits, waits 10 s for gate (on n1), then adds 100
    // and checkpoints.
    let late = {
        let client = n2.client.clone();
        let msg = json!({"all": [
            {"publish": {"topic": "waiting", "msg": 1}},
            {"call": {"to": "gate", "msg": {"defer": {"ms": 10_000, "msg": "go"}}, "timeout_ms": 60_000}},
            {"add": 100},
            "checkpoint",
        ]});
        tokio::spawn(async move {
            let body = json!({"msg": msg, "timeout_ms": 120_000});
            client
                .json(Method::POST, "/v1/children/d/call", Some(&body))
                .await
        })
    };
    wasmvisor_tests::wait_for_async("d to wait for gate", Duration::from_secs(20), || async {
        let infos = call_1s(&n1, "watch", json!("infos")).await.1;
        let waiting = json!({"event": {"topic": "waiting", "msg": 1}});
        infos["reply"].as_array()?.contains(&waiting).then_some(())
    })
    .await;
    signal(n2.pid(), "STOP");

    // n1 takes d over, from its checkpoint, and checkpoints a state of its
    // own.
    wasmvisor_tests::wait_for_async("d to serve on n1", Duration::from_secs(30), || async {
        let (status, body) = call_1s(&n1, "d", json!("state")).await;
        (status == 200 && body["reply"]["count"] == 5).then_some(())
    })
    .await;
    let d = n1.get("/v1/children/d").await;
    assert_eq!(
        (d["node"].as_str(), &d["last_exit"]),
        (Some("n1"), &json!("noconnection")),
        "{d}"
    );
    assert_eq!(
        call_1s(&n1, "d", json!({"add": 1})).await.1["reply"],
        json!(6)
    );
    assert_eq!(
        call_1s(&n1, "d", json!("checkpoint")).await.1["reply"],
        json!("ok")
    );

    signal(n2.pid(), "CONT");
    let outcome = tokio::time::timeout(Duration::from_secs(60), late)
        .await
        .expect("the paused node answers the late call")
        .expect("the call's task");
    eprintln!("the paused node's late call: {outcome:?}");
    match outcome {
        // The store refused the late write.
        Ok(body) => {
            let replies = body["reply"].as_array().cloned().unwrap_or_default();
            assert_eq!(replies.len(), 4, "{body}");
            assert_eq!(replies[3]["error"], json!("unavailable"), "{body}");
        }
        // The paused node fenced itself first and cut the call short.
        Err(e) => assert!(format!("{e:#}").contains("noconnection"), "{e:#}"),
    }
    // n2 runs d no more, and n1's checkpoint stands: a crash restarts d
    // from it.
    wasmvisor_tests::wait_for_async("n2 to drop d", Duration::from_secs(20), || async {
        let tree = n2.get("/v1/tree").await;
        let ids: Vec<&str> = tree["dynamic"]
            .as_array()?
            .iter()
            .filter_map(|c| c["id"].as_str())
            .collect();
        (!ids.contains(&"d")).then_some(())
    })
    .await;
    let (status, _) = post(&n1, "/v1/children/d/cast", json!({"msg": "crash"})).await;
    assert_eq!(status, 202);
    wasmvisor_tests::wait_for_async(
        "d to restart from n1's checkpoint",
        Duration::from_secs(20),
        || async {
            let (status, body) = call_1s(&n1, "d", json!("state")).await;
            (status == 200).then_some(())?;
            assert_eq!(body["reply"]["count"], json!(6), "{body}");
            let d = n1.get("/v1/children/d").await;
            (d["restarts"].as_u64()? >= 1).then_some(())
        },
    )
    .await;
}

/// Placement and drain: a `least_loaded` start goes to the node with the
/// fewest children; `wasmvisor drain n1` moves each of n1's children to
/// another node (a `durable_state` child with its state), once, and n1
/// starts nothing more itself while it still places starts elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_starts_and_a_drained_nodes_children_move_with_their_state() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let config = format!("{CONFIG}[plugins.chaos]\ndurable_state = true\n");
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let args = ["--cluster", nats.url.as_str(), "--node", name];
        nodes.push(RunningHost::start_with(&args, Some(&config)).await);
    }
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    for i in 0..6 {
        start(n1, &format!("a{i}"), "permanent", i).await;
    }
    for i in 0..3 {
        start(n3, &format!("c{i}"), "transient", i).await;
    }
    assert_eq!(
        call_1s(n1, "a0", json!({"add": 7})).await.1["reply"],
        json!(7)
    );

    // Once the heartbeats say n1 runs 6 and n3 3, a least_loaded start
    // asked on n1 runs on n2.
    wasmvisor_tests::wait_for_async(
        "the heartbeats' counts",
        Duration::from_secs(20),
        || async {
            let nodes = n1.get("/v1/nodes").await;
            let count = |name: &str| {
                nodes.as_array()?.iter().find(|n| n["node"] == name)?["children"].as_u64()
            };
            (count("n1")? == 6 && count("n2")? == 0 && count("n3")? == 3).then_some(())
        },
    )
    .await;
    let body = json!({"id": "p1", "plugin": "chaos", "placement": "least_loaded"});
    let (status, child) = post(n1, "/v1/children", body).await;
    assert_eq!(
        (status, child["node"].as_str()),
        (201, Some("n2")),
        "{child}"
    );
    let body = json!({"id": "p2", "plugin": "chaos", "placement": "anywhere"});
    let (status, err) = post(n1, "/v1/children", body).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("bad_request")),
        "{err}"
    );
    // The start's errors come back from the node it was placed on.
    let body = json!({"id": "p1", "plugin": "chaos", "placement": "least_loaded"});
    let (status, err) = post(n3, "/v1/children", body).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (409, Some("already_started")),
        "{err}"
    );

    // A burst of least_loaded starts, quicker than the heartbeats, is
    // spread: each counts on its node until that node's next heartbeat.
    // (By the last heartbeats n2 runs none and n3 3: all six on n2 is what
    // counting heartbeats alone would do.)
    let mut burst = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..6 {
        let body = json!({"id": format!("b{i}"), "plugin": "chaos", "placement": "least_loaded"});
        let (status, child) = post(n1, "/v1/children", body).await;
        assert_eq!(status, 201, "{child}");
        let node = child["node"].as_str().unwrap_or_default().to_string();
        *burst.entry(node).or_default() += 1;
    }
    assert!(
        burst.contains_key("n3") && !burst.contains_key("n1"),
        "{burst:?}"
    );

    // Drained from n3's CLI: every child of n1 moves, once.
    let (ok, out, err) = n3.cli(&["drain", "n1"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("drained n1: 6 children moved"), "{out}");
    let at = placement(n2, "after the drain").await;
    for i in 0..6 {
        let node = at.get(&format!("a{i}")).map(String::as_str);
        assert!(
            matches!(node, Some("n2" | "n3")),
            "a{i} on {node:?}: {at:?}"
        );
    }
    assert_eq!(at.len(), 16, "{at:?}");
    assert!(local_children(n1, "n1 drained").await.is_empty());
    // a0 kept its state (hibernated and stored before it moved), and every
    // child its args.
    let (status, state) = call_1s(n2, "a0", json!("state")).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        (&state["reply"]["count"], &state["reply"]["args"]),
        (&json!(7), &json!({"i": 0}))
    );
    let a1 = n3.get("/v1/children/a1").await;
    assert_eq!(a1["last_exit"], json!("shutdown"), "{a1}");

    // n1 starts nothing itself, but still places a least_loaded start on a
    // node that takes it; the others see it draining.
    let (status, err) = post(n1, "/v1/children", json!({"id": "x", "plugin": "chaos"})).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (503, Some("unavailable")),
        "{err}"
    );
    let body = json!({"id": "p3", "plugin": "chaos", "placement": "least_loaded"});
    let (status, child) = post(n1, "/v1/children", body).await;
    assert_eq!(status, 201, "{child}");
    assert_ne!(child["node"].as_str(), Some("n1"), "{child}");
    wasmvisor_tests::wait_for_async("n1 to show draining", Duration::from_secs(20), || async {
        let nodes = n2.get("/v1/nodes").await;
        let n1 = nodes
            .as_array()?
            .iter()
            .find(|n| n["node"] == "n1")?
            .clone();
        (n1["draining"] == true).then_some(())
    })
    .await;
    // Draining a node that does not exist is a clear error.
    let (ok, _, err) = n2.cli(&["drain", "nope"]).await;
    assert!(!ok && err.contains("not_found"), "{err}");
}

/// The infos `id` (through `h`) has received.
async fn infos(h: &RunningHost, id: &str) -> Vec<Value> {
    let infos = call_1s(h, id, json!("infos")).await.1;
    infos["reply"].as_array().cloned().unwrap_or_default()
}

/// The `down` infos `id` (through `h`) has received, by monitor reference.
async fn downs(h: &RunningHost, id: &str) -> std::collections::BTreeMap<u64, Value> {
    let infos = infos(h, id).await;
    let down = |i: &Value| Some((i["down"]["ref"].as_u64()?, i["down"].clone()));
    infos.iter().filter_map(down).collect()
}

/// A guest's monitor of a child on another node: `down` with the exit
/// reason, `noproc` for an id that runs nowhere, nothing after
/// `demonitor`, and `noconnection` when the child's node is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_of_a_child_on_another_node_fires_and_says_noconnection_when_it_is_lost() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let (n1, n2) = (node(&nats, "n1").await, node(&nats, "n2").await);
    assert_eq!(started(&n1, "w").await, 201);
    assert_eq!(started(&n2, "t").await, 201);
    let monitor = |target: &'static str| {
        let n1 = &n1;
        async move {
            let (status, body) = call_1s(n1, "w", json!({"monitor": target})).await;
            assert_eq!(status, 200, "{body}");
            body["reply"].as_u64().expect("a reference")
        }
    };
    let down_of = |reference: u64| {
        let n1 = &n1;
        async move {
            wasmvisor_tests::wait_for_async("the down", Duration::from_secs(20), || async {
                downs(n1, "w").await.remove(&reference)
            })
            .await
        }
    };

    let nobody = monitor("nobody").await;
    assert_eq!(down_of(nobody).await["reason"], json!("noproc"));

    let dropped = monitor("t").await;
    let (status, body) = call_1s(&n1, "w", json!({"demonitor": dropped})).await;
    assert_eq!((status, &body["reply"]), (200, &json!(true)), "{body}");
    let killed = monitor("t").await;
    let (status, _) = post(&n1, "/v1/children/t/kill", json!({"reason": "by test"})).await;
    assert_eq!(status, 202);
    let down = down_of(killed).await;
    assert_eq!(
        (&down["id"], &down["reason"]),
        (&json!("t"), &json!({"killed": "by test"})),
        "{down}"
    );
    assert!(!downs(&n1, "w").await.contains_key(&dropped));

    // t restarted on n2; its node dies: the monitor fires noconnection.
    wasmvisor_tests::wait_for_async("t to restart", Duration::from_secs(20), || async {
        (call_1s(&n1, "t", json!("state")).await.0 == 200).then_some(())
    })
    .await;
    let lost = monitor("t").await;
    n2.kill().await;
    assert_eq!(down_of(lost).await["reason"], json!("noconnection"));
}

/// The `exit` infos `id` (through `h`) has received.
async fn exits(h: &RunningHost, id: &str) -> Vec<Value> {
    let infos = infos(h, id).await;
    infos
        .iter()
        .filter_map(|i| i.get("exit").cloned())
        .collect()
}

/// Links with a child on another node work both ways: an exit there takes
/// the linked child here down with `linked` (or, trapping exits, sends it
/// an `exit` info), an exit here takes the one there down, `unlink` ends
/// the link on both nodes, and a lost node sends `noconnection`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_with_a_child_on_another_node_carry_exits_both_ways() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let (n1, n2) = (node(&nats, "n1").await, node(&nats, "n2").await);
    for id in ["w", "trapper"] {
        assert_eq!(started(&n1, id).await, 201);
    }
    assert_eq!(started(&n2, "t").await, 201);
    let link = |from: &'static str, to: &'static str| {
        let n1 = &n1;
        async move {
            let (status, body) = call_1s(n1, from, json!({"link": to})).await;
            assert_eq!((status, &body["reply"]), (200, &json!("ok")), "{body}");
        }
    };
    let restarts = |h: &'static str, id: &'static str| {
        let host = if h == "n1" { &n1 } else { &n2 };
        async move { host.get(&format!("/v1/children/{id}")).await["restarts"].as_u64() }
    };
    let (status, body) = call_1s(&n1, "w", json!({"link": "nobody"})).await;
    assert_eq!(
        (status, &body["reply"]["error"]),
        (200, &json!("not_found")),
        "{body}"
    );

    // t's exit on n2 takes w (n1) down, and reaches trapper as an info.
    let (status, body) = call_1s(&n1, "trapper", json!({"trap_exits": true})).await;
    assert_eq!(status, 200, "{body}");
    link("w", "t").await;
    link("trapper", "t").await;
    let (status, _) = post(&n2, "/v1/children/t/kill", json!({"reason": "by test"})).await;
    assert_eq!(status, 202);
    wasmvisor_tests::wait_for_async("w to go down with t", Duration::from_secs(20), || async {
        let w = n1.get("/v1/children/w").await;
        (w["last_exit"] == json!({"linked": "t"})).then_some(())
    })
    .await;
    let got =
        wasmvisor_tests::wait_for_async("trapper's exit info", Duration::from_secs(20), || async {
            exits(&n1, "trapper").await.pop()
        })
        .await;
    assert_eq!(got, json!({"id": "t", "reason": {"killed": "by test"}}));

    // The other way: w's exit on n1 takes t (n2) down.
    wasmvisor_tests::wait_for_async(
        "w and t to serve again",
        Duration::from_secs(20),
        || async {
            let up = call_1s(&n1, "w", json!("state")).await.0 == 200
                && call_1s(&n1, "t", json!("state")).await.0 == 200;
            up.then_some(())
        },
    )
    .await;
    let t_restarts = restarts("n2", "t").await.expect("t's restarts");
    link("w", "t").await;
    let (status, _) = post(&n1, "/v1/children/w/kill", json!({"reason": "by test"})).await;
    assert_eq!(status, 202);
    wasmvisor_tests::wait_for_async("t to go down with w", Duration::from_secs(20), || async {
        let t = n2.get("/v1/children/t").await;
        let down = t["last_exit"] == json!({"linked": "w"}) && t["restarts"].as_u64()? > t_restarts;
        down.then_some(())
    })
    .await;

    // Unlinked, w stays up when t goes down; trapper (still linked) shows
    // that the exit went out.
    wasmvisor_tests::wait_for_async(
        "w and t to serve again",
        Duration::from_secs(20),
        || async {
            let up = call_1s(&n1, "w", json!("state")).await.0 == 200
                && call_1s(&n1, "t", json!("state")).await.0 == 200;
            up.then_some(())
        },
    )
    .await;
    link("w", "t").await;
    link("trapper", "t").await;
    let (status, body) = call_1s(&n1, "w", json!({"unlink": "t"})).await;
    assert_eq!((status, &body["reply"]), (200, &json!("ok")), "{body}");
    let w_restarts = restarts("n1", "w").await.expect("w's restarts");
    let before = exits(&n1, "trapper").await.len();
    let (status, _) = post(&n2, "/v1/children/t/kill", json!({"reason": "again"})).await;
    assert_eq!(status, 202);
    wasmvisor_tests::wait_for_async(
        "trapper's second exit info",
        Duration::from_secs(20),
        || async { (exits(&n1, "trapper").await.len() > before).then_some(()) },
    )
    .await;
    assert_eq!(restarts("n1", "w").await, Some(w_restarts));

    // t's node is lost: trapper gets noconnection.
    wasmvisor_tests::wait_for_async("t to serve again", Duration::from_secs(20), || async {
        (call_1s(&n1, "t", json!("state")).await.0 == 200).then_some(())
    })
    .await;
    link("trapper", "t").await;
    let before = exits(&n1, "trapper").await.len();
    n2.kill().await;
    let got = wasmvisor_tests::wait_for_async(
        "trapper's noconnection",
        Duration::from_secs(30),
        || async {
            let exits = exits(&n1, "trapper").await;
            (exits.len() > before).then(|| exits[before].clone())
        },
    )
    .await;
    assert_eq!(got, json!({"id": "t", "reason": "noconnection"}));
}

/// A durable node killed with `kill -9` comes back after its children
/// moved: one that was stopped on its new node meanwhile stays stopped
/// (the node forgets its record), one that runs there stays there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_does_not_bring_back_a_child_stopped_elsewhere() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let (n1, n2) = (node(&nats, "n1").await, node(&nats, "n2").await);
    start(&n1, "gone", "permanent", 1).await;
    start(&n1, "kept", "permanent", 2).await;
    let dir = n1.kill_keep_dir().await;
    wasmvisor_tests::wait_for_async("n2 to take both over", Duration::from_secs(30), || async {
        let at = placement(&n2, "after the kill").await;
        let both = at.get("gone").map(String::as_str) == Some("n2")
            && at.get("kept").map(String::as_str) == Some("n2");
        both.then_some(())
    })
    .await;
    n2.client
        .json(Method::DELETE, "/v1/children/gone", None)
        .await
        .expect("gone stops");

    let flags = ["--cluster", nats.url.as_str(), "--node", "n1"];
    let n1 = RunningHost::start_in(dir, &flags)
        .await
        .unwrap_or_else(|log| panic!("n1 did not come back; log:\n{log}"));
    assert!(local_children(&n1, "n1 back").await.is_empty());
    let at = placement(&n1, "n1 back").await;
    assert_eq!(at.get("kept").map(String::as_str), Some("n2"), "{at:?}");
    assert!(!at.contains_key("gone"), "{at:?}");
    assert!(
        n1.log().contains("was stopped on another node since"),
        "{}",
        n1.log()
    );
}

/// A dead node's child goes to a survivor that lacks its plugin: it waits
/// there (status `waiting`) and starts, with its args, once the plugin is
/// dropped into that node's folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_child_waits_for_its_plugin_on_the_survivor() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    let (n1, n2) = (node(&nats, "n1").await, node(&nats, "n2").await);
    let chaos = n2.plugins_dir().join("chaos.wasm");
    let bytes = std::fs::read(&chaos).expect("n2 has chaos");
    std::fs::remove_file(&chaos).expect("chaos leaves n2");
    wasmvisor_tests::wait_for_async("n2 to unload chaos", Duration::from_secs(20), || async {
        let plugins = n2.get("/v1/plugins").await;
        let loaded = plugins
            .as_array()?
            .iter()
            .any(|p| p["name"] == "chaos" && !p["version"].is_null());
        (!loaded).then_some(())
    })
    .await;
    start(&n1, "w", "permanent", 7).await;
    n1.kill().await;
    wasmvisor_tests::wait_for_async("w to wait on n2", Duration::from_secs(30), || async {
        // Until n2 takes it over, n1 (dead) is asked and does not answer.
        let w = n2
            .client
            .json(Method::GET, "/v1/children/w", None)
            .await
            .ok()?;
        (w["status"] == "waiting" && w["node"] == "n2").then_some(())
    })
    .await;
    std::fs::write(&chaos, bytes).expect("chaos is back");
    wasmvisor_tests::wait_for_async("w to serve on n2", Duration::from_secs(30), || async {
        let (status, body) = call_1s(&n2, "w", json!("state")).await;
        (status == 200).then_some(body)
    })
    .await;
    let (_, body) = call_1s(&n2, "w", json!("state")).await;
    assert_eq!(body["reply"]["args"], json!({"i": 7}), "{body}");
}

/// A NATS that wants a token: a node with the token in its URL joins, one
/// without is refused with an error naming the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_url_reaches_a_nats_that_wants_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(nats) = Nats::start_full(true, &["--auth", "s3cret"]).await else {
        return;
    };
    let with = format!("nats://s3cret@{}", nats.addr);
    let n1 = node_at(&with, "n1").await;
    let nodes = n1.get("/v1/nodes").await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    refused_without_config(&nats).await;
}

/// Runs `openssl` with the words of `args` in `dir`; `false` when it is
/// not installed.
fn openssl(dir: &std::path::Path, args: &str) -> bool {
    match std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(_) => false,
    }
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 it signed (`server.pem`,
/// `server.key`), made by the `openssl` command, which `.ci/run` installs;
/// `None` (with the reason printed) when it is missing.
fn tls_files() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    // The CA's extensions are spelled out: a minimal openssl.cnf may not.
    let ca = format!(
        "req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=wasmvisor-test-CA \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
    );
    if !openssl(dir.path(), &ca) {
        eprintln!("skipped: openssl is not on PATH (apt-get install openssl)");
        return None;
    }
    std::fs::write(
        dir.path().join("server.ext"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n",
    )
    .unwrap();
    let request = format!("req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1");
    openssl(dir.path(), &request);
    openssl(
        dir.path(),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
         -days 2 -extfile server.ext",
    );
    Some(dir)
}

/// A node `n1` with `config` joins the cluster on `nats` alone and
/// starts and answers child `id`.
async fn joins_and_serves(nats: &Nats, config: &str, id: &str) {
    let n1 = RunningHost::start_with(&["--cluster", &nats.url, "--node", "n1"], Some(config)).await;
    wasmvisor_tests::wait_for_async("n1 among the nodes", Duration::from_secs(20), || async {
        let nodes = n1.get("/v1/nodes").await;
        (nodes.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    assert_eq!(started(&n1, id).await, 201);
    let (status, body) = call_1s(&n1, id, json!("state")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"]["args"], json!({"id": id}), "{body}");
}

/// A node with no config cannot join the cluster on `nats`: it exits with
/// an error naming the server.
async fn refused_without_config(nats: &Nats) {
    let (status, stderr, _) = run_failing(&nats.url).await;
    assert!(!status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains(&nats.url), "{stderr}");
}

/// A NATS that speaks TLS only: a node given the CA that signed the
/// server's certificate (`tls_ca`) joins and runs a child; a node without
/// it does not trust the certificate and exits with an error naming the
/// server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_the_servers_ca_joins_a_nats_over_tls() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(tls) = tls_files() else {
        return;
    };
    let cert = tls.path().join("server.pem");
    let key = tls.path().join("server.key");
    let Some(nats) = Nats::start_full(
        true,
        &[
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
        ],
    )
    .await
    else {
        return;
    };
    let ca = tls.path().join("ca.pem");
    let config = format!("{CONFIG}tls_ca = {:?}\n", ca.to_str().unwrap());
    joins_and_serves(&nats, &config, "over-tls").await;
    // Without the CA: the server's certificate is not trusted.
    refused_without_config(&nats).await;
}

/// A NATS account set up as `nsc` would (the operator mode of the NATS
/// docs' memory resolver): an operator, a system account and an account
/// with JetStream, each a JWT signed by the key above it, and a user of
/// the account whose `.creds` file a node is given.
struct Accounts {
    dir: tempfile::TempDir,
    /// The server's config file.
    conf: std::path::PathBuf,
    /// The user's credentials file.
    creds: std::path::PathBuf,
}

/// A NATS JWT (version 2) of `nats` claims for `subject`, signed by
/// `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(json!({"typ": "JWT", "alg": "ed25519-nkey"}).to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": format!("{subject}-{now}"),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", b64.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64.encode(signature))
}

impl Accounts {
    fn make() -> Accounts {
        let dir = tempfile::tempdir().unwrap();
        let operator = nkeys::KeyPair::new_operator();
        let system = nkeys::KeyPair::new_account();
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let version = |kind: &str| json!({"type": kind, "version": 2});
        let operator_jwt = jwt(&operator, &operator.public_key(), "op", version("operator"));
        let mut system_claims = version("account");
        system_claims["limits"] = json!({"subs": -1, "conn": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "leaf": -1});
        let system_jwt = jwt(&operator, &system.public_key(), "SYS", system_claims);
        let mut account_claims = version("account");
        account_claims["limits"] = json!({
            "subs": -1, "conn": -1, "data": -1, "payload": -1, "imports": -1,
            "exports": -1, "wildcards": true, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let account_jwt = jwt(&operator, &account.public_key(), "app", account_claims);
        let mut user_claims = version("user");
        user_claims["pub"] = json!({});
        user_claims["sub"] = json!({});
        user_claims["subs"] = json!(-1);
        user_claims["data"] = json!(-1);
        user_claims["payload"] = json!(-1);
        let user_jwt = jwt(&account, &user.public_key(), "node", user_claims);
        let operator_file = dir.path().join("operator.jwt");
        std::fs::write(&operator_file, &operator_jwt).unwrap();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "operator: {:?}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {:?}\n  {}: {:?}\n}}\n",
                operator_file.to_str().unwrap(),
                system.public_key(),
                system.public_key(),
                system_jwt,
                account.public_key(),
                account_jwt,
            ),
        )
        .unwrap();
        let creds = dir.path().join("node.creds");
        std::fs::write(
            &creds,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                user.seed().unwrap()
            ),
        )
        .unwrap();
        Accounts { dir, conf, creds }
    }
}

/// A NATS in operator mode, whose users sign in with a credentials file:
/// a node given the user's `.creds` (`credentials`) joins and runs a
/// child; one without is refused with an error naming the server, and a
/// credentials file that is not there is an error naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_credentials_file_joins_a_nats_in_operator_mode() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let accounts = Accounts::make();
    let Some(nats) = Nats::start_full(true, &["-c", accounts.conf.to_str().unwrap()]).await else {
        return;
    };
    let config = format!(
        "{CONFIG}credentials = {:?}\n",
        accounts.creds.to_str().unwrap()
    );
    joins_and_serves(&nats, &config, "signed-in").await;
    // Without credentials: the server refuses the connection.
    refused_without_config(&nats).await;
    // A credentials file that is not there.
    let missing = accounts.dir.path().join("missing.creds");
    let config = format!("{CONFIG}credentials = {:?}\n", missing.to_str().unwrap());
    let (status, stderr, _) = run_failing_with(&nats.url, Some(&config)).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(missing.to_str().unwrap()),
        "the error does not name {}: {stderr}",
        missing.display()
    );
}
