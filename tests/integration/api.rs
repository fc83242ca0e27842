//! The real binary over HTTP: every endpoint, every documented error code,
//! the SSE stream and `/metrics`.

mod common;

use common::process::RunningHost;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use wasmvisor::cli::client::ApiFailure;

async fn post(h: &RunningHost, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, bytes) = h.client.raw(Method::POST, path, Some(&body)).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn request(h: &RunningHost, method: Method, path: &str) -> (StatusCode, Value) {
    let (status, bytes) = h.client.raw(method, path, None).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn assert_error(got: (StatusCode, Value), status: u16, code: &str) -> Value {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"], code, "{}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
    got.1
}

/// A child that crashes once stays `failed`.
const CONFIG: &str = r#"
[supervisor]
on_exhausted = "fail"
max_restarts = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_lifecycle_over_http() {
    let h = RunningHost::start(&[]).await;
    assert_eq!(h.get("/healthz").await, json!({"status": "ok"}));
    let plugins = h.get("/v1/plugins").await;
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut every: Vec<&str> = wasmvisor_tests::ALL_PLUGINS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    every.sort();
    assert_eq!(names, every);

    let (status, child) = post(
        &h,
        "/v1/children",
        json!({"id": "b1", "plugin": "board_monitor", "args": {"board_id": "main"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    assert_eq!(child["status"], "running");
    assert_eq!(child["restart"], "permanent");

    let (status, reply) = post(
        &h,
        "/v1/children/b1/call",
        json!({"msg": {"user_joined": "zoe"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply, json!({"reply": ["zoe"]}));
    let (status, _) = post(
        &h,
        "/v1/children/b1/cast",
        json!({"msg": {"user_joined": "adam"}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, reply) = post(
        &h,
        "/v1/children/b1/call",
        json!({"msg": "users", "timeout_ms": 1000}),
    )
    .await;
    assert_eq!(reply, json!({"reply": ["adam", "zoe"]}));

    let list = h.get("/v1/children").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let one = h.get("/v1/children/b1").await;
    assert_eq!(one["args"], json!({"board_id": "main"}));
    let board_monitor = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "board_monitor")
        .unwrap();
    assert_eq!(one["version"], board_monitor["version"]);

    let (status, _) = post(&h, "/v1/children/b1/restart", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.get("/v1/children/b1").await["restarts"], 1);
    let (status, _) = post(&h, "/v1/children/b1/kill", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let child = h
        .wait_child("b1", "the restart after the kill", |c| c["restarts"] == 2)
        .await;
    assert_eq!(child["last_exit"], json!({"killed": "killed by operator"}));
    let (status, _) = request(&h, Method::DELETE, "/v1/children/b1").await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        request(&h, Method::GET, "/v1/children/b1").await,
        404,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_code() {
    let h = RunningHost::start_with(&[], Some(CONFIG)).await;
    let start =
        |id: &str, plugin: &str, args: Value| json!({"id": id, "plugin": plugin, "args": args});
    assert_eq!(
        post(&h, "/v1/children", start("c", "chaos", json!(null)))
            .await
            .0,
        StatusCode::CREATED
    );

    // 409 already_started
    assert_error(
        post(&h, "/v1/children", start("c", "chaos", json!(null))).await,
        409,
        "already_started",
    );
    // 422 unknown_plugin and init_failed
    assert_error(
        post(&h, "/v1/children", start("x", "nope", json!(null))).await,
        422,
        "unknown_plugin",
    );
    let body = assert_error(
        post(
            &h,
            "/v1/children",
            start("x", "chaos", json!({"fail_init": "no thanks"})),
        )
        .await,
        422,
        "init_failed",
    );
    assert!(body["message"].as_str().unwrap().contains("no thanks"));
    // 404 not_found, for every verb on a child
    for path in ["/v1/children/ghost/call", "/v1/children/ghost/cast"] {
        assert_error(post(&h, path, json!({"msg": 1})).await, 404, "not_found");
    }
    for path in ["/v1/children/ghost/restart", "/v1/children/ghost/kill"] {
        assert_error(post(&h, path, json!({})).await, 404, "not_found");
    }
    assert_error(
        request(&h, Method::GET, "/v1/children/ghost").await,
        404,
        "not_found",
    );
    assert_error(
        request(&h, Method::DELETE, "/v1/children/ghost").await,
        404,
        "not_found",
    );
    // 504 timeout
    assert_error(
        post(
            &h,
            "/v1/children/c/call",
            json!({"msg": {"spin": 30_000_000u64}, "timeout_ms": 10}),
        )
        .await,
        504,
        "timeout",
    );
    // 500 trapped
    let body = assert_error(
        post(&h, "/v1/children/c/call", json!({"msg": "crash"})).await,
        500,
        "trapped",
    );
    assert!(body["message"].as_str().unwrap().contains("unreachable"));
    // 503 failed: max_restarts = 0 with on_exhausted = "fail" leaves it failed.
    assert_error(
        post(&h, "/v1/children/c/call", json!({"msg": "state"})).await,
        503,
        "failed",
    );
    // 500 killed: the default CPU deadline (1 s per message) cuts a long spin.
    assert_eq!(
        post(&h, "/v1/children", start("k", "chaos", json!(null)))
            .await
            .0,
        StatusCode::CREATED
    );
    let kill_body = json!({"msg": {"spin": 100_000_000_000u64}, "timeout_ms": 30_000});
    let caller = h.client.clone();
    let killed = tokio::spawn(async move {
        caller
            .raw(Method::POST, "/v1/children/k/call", Some(&kill_body))
            .await
    });
    let (status, bytes) = tokio::time::timeout(Duration::from_secs(30), killed)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (500, Some("killed")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("CPU deadline"));
    // 400 bad_request: malformed JSON, wrong types, unknown fields, bad ids,
    // bad policies, bad timeouts
    for raw in [&b"{"[..], b"not json", b"[1,2", b"\xff\xfe"] {
        let (status, bytes) = h
            .client
            .raw_bytes(Method::POST, "/v1/children", Some(raw.to_vec()))
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_error((status, body), 400, "bad_request");
    }
    for body in [
        json!({"id": 5, "plugin": "chaos"}),
        json!({"id": "a", "plugin": "chaos", "colour": "red"}),
        json!({"id": "a/b", "plugin": "chaos"}),
        json!({"id": "..", "plugin": "chaos"}),
        json!({"id": "", "plugin": "chaos"}),
        json!({"id": "a", "plugin": "../chaos"}),
        json!({"id": "a", "plugin": "chaos", "restart": "sometimes"}),
    ] {
        assert_error(post(&h, "/v1/children", body).await, 400, "bad_request");
    }
    for timeout in [
        json!(0),
        json!(-5),
        json!(1.5),
        json!("10"),
        json!(10_000_000),
    ] {
        assert_error(
            post(
                &h,
                "/v1/children/k/call",
                json!({"msg": "state", "timeout_ms": timeout}),
            )
            .await,
            400,
            "bad_request",
        );
    }
    assert_error(
        post(&h, "/v1/children/k/call", json!({"timeout_ms": 5})).await,
        400,
        "bad_request",
    );
    // 413 payload_too_large
    let huge = vec![b' '; 2 * 1024 * 1024];
    let (status, bytes) = h
        .client
        .raw_bytes(Method::POST, "/v1/children/k/cast", Some(huge))
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error((status, body), 413, "payload_too_large");
    // 404 no_route
    assert_error(
        request(&h, Method::GET, "/v2/everything").await,
        404,
        "no_route",
    );
    // The host kept serving through all of it.
    assert_eq!(
        post(&h, "/v1/children", start("ok", "chaos", json!(null)))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        post(&h, "/v1/children/ok/call", json!({"msg": {"add": 1}}))
            .await
            .1,
        json!({"reply": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_full_is_429() {
    let config = "[plugins.chaos]\nmailbox = 1\ncpu_ms = 60000\n";
    let h = RunningHost::start_with(&[], Some(config)).await;
    let (status, _) = post(&h, "/v1/children", json!({"id": "m", "plugin": "chaos"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let spin = json!({"msg": {"spin": 100_000_000_000u64}, "timeout_ms": 60_000});
    let caller = h.client.clone();
    let blocked = tokio::spawn(async move {
        caller
            .raw(Method::POST, "/v1/children/m/call", Some(&spin))
            .await
    });
    let mut full = None;
    for _ in 0..200 {
        let got = post(&h, "/v1/children/m/cast", json!({"msg": "bump"})).await;
        if got.0 == StatusCode::TOO_MANY_REQUESTS {
            full = Some(got);
            break;
        }
    }
    assert_error(full.expect("a mailbox of 1 fills"), 429, "mailbox_full");
    let (status, _) = post(&h, "/v1/children/m/kill", json!({"reason": "done"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let _ = tokio::time::timeout(Duration::from_secs(30), blocked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_healthz() {
    let h = RunningHost::start(&["--token", "s3cret"]).await;
    let anonymous = wasmvisor::cli::client::Client::new(&h.addr, None);
    let wrong = wasmvisor::cli::client::Client::new(&h.addr, Some("guess".into()));
    for client in [&anonymous, &wrong] {
        let err = client
            .json(Method::GET, "/v1/children", None)
            .await
            .unwrap_err();
        let failure = err.downcast_ref::<ApiFailure>().unwrap();
        assert_eq!(
            (failure.status, failure.code.as_str()),
            (401, "unauthorized")
        );
    }
    assert_eq!(
        anonymous.json(Method::GET, "/healthz", None).await.unwrap()["status"],
        "ok"
    );
    assert_eq!(h.get("/v1/children").await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_start_exit_and_restart() {
    let h = RunningHost::start(&[]).await;
    let client = h.client.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        client
            .events(None, false, |kind, data| {
                let _ = tx.send((
                    kind.to_string(),
                    serde_json::from_str::<Value>(data).unwrap(),
                ));
                true
            })
            .await
    });
    // Events flow once the stream is connected; until the first one arrives
    // it may not be, so keep starting children until one is reported.
    let mut seen = Vec::new();
    let mut started = false;
    for attempt in 0..100 {
        let id = format!("s{attempt}");
        post(&h, "/v1/children", json!({"id": id, "plugin": "chaos"})).await;
        if let Ok(Some((kind, data))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        {
            seen.push((kind.clone(), data.clone()));
            if kind == "child_started" {
                started = true;
                break;
            }
        }
    }
    assert!(started, "no child_started event: {seen:?}");
    let (_, data) = seen.last().unwrap();
    let id = data["id"].as_str().unwrap().to_string();
    assert_eq!(data["plugin"], "chaos");
    post(
        &h,
        &format!("/v1/children/{id}/call"),
        json!({"msg": "crash"}),
    )
    .await;
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let (kind, data) = tokio::time::timeout(common::LIMIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if data["id"] == id.as_str() {
            if kind == "child_exited" {
                assert!(data["reason"]["trap"].is_string(), "{data}");
            }
            if kind == "child_restarted" {
                assert_eq!(data["restarts"], 1);
            }
            kinds.push(kind);
        }
    }
    assert_eq!(kinds, ["child_exited", "child_restarted"]);
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_filter_keeps_only_that_topic() {
    let h = RunningHost::start(&[]).await;
    post(&h, "/v1/children", json!({"id": "p", "plugin": "chaos"})).await;
    let client = h.client.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        client
            .events(Some("wanted"), false, |kind, data| {
                let _ = tx.send((
                    kind.to_string(),
                    serde_json::from_str::<Value>(data).unwrap(),
                ));
                true
            })
            .await
    });
    let mut got = None;
    for _ in 0..100 {
        post(
            &h,
            "/v1/children/p/call",
            json!({"msg": {"publish": {"topic": "unwanted", "msg": 0}}}),
        )
        .await;
        post(
            &h,
            "/v1/children/p/call",
            json!({"msg": {"publish": {"topic": "wanted", "msg": {"k": 1}}}}),
        )
        .await;
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            got = Some(event);
            break;
        }
    }
    let (kind, data) = got.expect("a topic event arrives");
    assert_eq!(kind, "topic");
    assert_eq!(
        data,
        json!({"type": "topic", "topic": "wanted", "msg": {"k": 1}})
    );
    reader.abort();
}

/// A strict reader of the OpenMetrics text format: every line is a
/// `# HELP`, `# UNIT` or `# TYPE` of a family declared before its samples,
/// a sample `name{labels} value`, and the last line is `# EOF`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    for line in text.lines().filter(|l| *l != "# EOF") {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "HELP without text: {line}");
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, _) = rest.split_once(' ').expect("UNIT name unit");
            assert!(types.contains_key(name), "UNIT before its TYPE: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "unknown"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {line}"
            );
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "unexpected line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name {name}"
            );
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before its TYPE: {line}");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .expect("{labels}");
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
            }
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            samples.insert(series.to_string(), value);
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let h = RunningHost::start(&[]).await;
    post(&h, "/v1/children", json!({"id": "m", "plugin": "chaos"})).await;
    post(&h, "/v1/children/m/call", json!({"msg": {"add": 1}})).await;
    post(&h, "/v1/children/m/call", json!({"msg": "crash"})).await;
    // The trapped reply can reach the client before the child has recorded
    // the exit; the child counts the exit before it restarts.
    h.wait_child("m", "the restart after the crash", |c| c["restarts"] == 1)
        .await;
    post(&h, "/v1/children/ghost/call", json!({"msg": 1})).await;
    let (status, body) = h.client.raw(Method::GET, "/metrics", None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let samples = parse_prometheus(std::str::from_utf8(&body).unwrap());
    assert_eq!(samples["wasmvisor_calls_total"], 3.0);
    assert_eq!(
        samples["wasmvisor_call_errors_total{code=\"trapped\"}"],
        1.0
    );
    assert_eq!(
        samples["wasmvisor_call_errors_total{code=\"not_found\"}"],
        1.0
    );
    assert_eq!(samples["wasmvisor_exits_total{reason=\"trap\"}"], 1.0);
    for kind in ["memory", "table", "stack"] {
        let name = format!("wasmvisor_pool_unused_resident_bytes{{kind=\"{kind}\"}}");
        assert!(samples.contains_key(&name), "no {name}");
    }
    assert_eq!(samples["wasmvisor_instances"], 1.0);
    assert_eq!(
        samples["wasmvisor_plugins"],
        wasmvisor_tests::ALL_PLUGINS.len() as f64
    );
    assert_eq!(
        samples["wasmvisor_children{status=\"running\"}"]
            + samples["wasmvisor_children{status=\"restarting\"}"],
        1.0
    );
    // Histograms, with buckets: both calls that reached the child were
    // handled, and the crash was followed by one restart.
    assert_eq!(
        samples["wasmvisor_call_duration_seconds_count{plugin=\"chaos\"}"],
        2.0
    );
    assert_eq!(
        samples["wasmvisor_call_duration_seconds_bucket{le=\"+Inf\",plugin=\"chaos\"}"],
        2.0
    );
    let buckets = samples
        .keys()
        .filter(|k| k.starts_with("wasmvisor_call_duration_seconds_bucket{"))
        .count();
    assert!(buckets > 5, "{buckets} buckets");
    assert_eq!(samples["wasmvisor_mailbox_wait_seconds_count"], 2.0);
    assert_eq!(samples["wasmvisor_restart_duration_seconds_count"], 1.0);
    assert!(samples.contains_key("wasmvisor_reload_duration_seconds_bucket{le=\"+Inf\"}"));
}

/// The Prometheus Python client (which `.ci/run` installs) reads `/metrics`
/// with its OpenMetrics parser, histograms and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_the_prometheus_python_client() {
    let h = RunningHost::start(&[]).await;
    post(&h, "/v1/children", json!({"id": "m", "plugin": "chaos"})).await;
    post(&h, "/v1/children/m/call", json!({"msg": {"add": 1}})).await;
    let (status, body) = h.client.raw(Method::GET, "/metrics", None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
calls = families["wasmvisor_calls"]
assert calls.type == "counter", calls.type
assert calls.samples[0].value == 1.0, calls.samples
hist = families["wasmvisor_call_duration_seconds"]
assert hist.type == "histogram", hist.type
buckets = [s for s in hist.samples if s.name.endswith("_bucket") and s.labels["plugin"] == "chaos"]
assert len(buckets) > 5, buckets
assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 1.0, buckets
print(len(families), "families")
"#;
    let mut python = tokio::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use tokio::io::AsyncWriteExt;
    let mut stdin = python.stdin.take().expect("stdin is piped");
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = python.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the Prometheus Python client refused /metrics (pip install prometheus-client):\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_becomes_log_lines_tagged_with_the_child() {
    let h = RunningHost::start(&[]).await;
    post(
        &h,
        "/v1/children",
        json!({"id": "talker", "plugin": "chaos"}),
    )
    .await;
    let text = "hello from the guest \u{1b}[31m";
    let (status, _) = post(
        &h,
        "/v1/children/talker/call",
        json!({"msg": {"print": text}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + common::LIMIT;
    loop {
        let log = h.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("hello from the guest"))
            .collect();
        if lines.len() >= 2 {
            for line in &lines {
                assert!(line.contains("child=talker"), "{line}");
                // Escaped: the terminal escape is not passed through raw.
                assert!(!line.contains('\u{1b}'), "{line:?}");
            }
            assert!(
                lines.iter().any(|l| l.contains("stream=\"stdout\"")),
                "{lines:?}"
            );
            assert!(
                lines.iter().any(|l| l.contains("stream=\"stderr\"")),
                "{lines:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no guest output in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `init` returning `ignore`, `[supervisor] max_children` and the
/// supervision tree, over HTTP and through `wasmvisor tree`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_max_children_and_the_tree_over_http() {
    let config = r#"
[supervisor]
max_children = 1

[[children]]
id = "top"
plugin = "chaos"
args = { ignore_init = true }

[[groups]]
id = "bank"
strategy = "rest_for_one"
max_restarts = 4
max_seconds = 7
children = [{ id = "g1", plugin = "chaos" }, { id = "g2", plugin = "tracker" }]

[[groups.groups]]
id = "inner"
children = [{ id = "n1", plugin = "chaos" }]
"#;
    let h = RunningHost::start_with(&[], Some(config)).await;
    let ignored = json!({"id": "i", "plugin": "chaos", "args": {"ignore_init": true}});
    assert_eq!(
        post(&h, "/v1/children", ignored).await,
        (StatusCode::OK, json!({"ignored": "i"}))
    );
    assert_error(
        request(&h, Method::GET, "/v1/children/i").await,
        404,
        "not_found",
    );
    let (status, _) = post(&h, "/v1/children", json!({"id": "d1", "plugin": "chaos"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let refused = post(&h, "/v1/children", json!({"id": "d2", "plugin": "chaos"})).await;
    assert_error(refused, 503, "max_children");
    assert_error(
        request(&h, Method::GET, "/v1/children/d2").await,
        404,
        "not_found",
    );

    let child = |id: &str, plugin: &str, status: &str| json!({"id": id, "plugin": plugin, "status": status, "restarts": 0});
    let tree = h.get("/v1/tree").await;
    assert_eq!(
        tree,
        json!({
            "groups": [{
                "id": "bank",
                "strategy": "rest_for_one",
                "max_restarts": 4,
                "max_seconds": 7,
                "restarts": 0,
                "down": false,
                "members": [
                    {"child": child("g1", "chaos", "running")},
                    {"child": child("g2", "tracker", "running")},
                    {"group": {
                        "id": "inner",
                        "strategy": "one_for_one",
                        "max_restarts": 3,
                        "max_seconds": 5,
                        "restarts": 0,
                        "down": false,
                        "members": [{"child": child("n1", "chaos", "running")}],
                    }},
                ],
            }],
            "children": [child("top", "chaos", "ignored")],
            "dynamic": [child("d1", "chaos", "running")],
        })
    );

    let (ok, out, err) = h.cli(&["tree"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "root\n\
         \x20 group bank (rest_for_one, 0/4 restarts in 7 s)\n\
         \x20   g1 [chaos] running, restarts 0\n\
         \x20   g2 [tracker] running, restarts 0\n\
         \x20   group inner (one_for_one, 0/3 restarts in 5 s)\n\
         \x20     n1 [chaos] running, restarts 0\n\
         \x20 top [chaos] ignored, restarts 0\n\
         \x20 d1 [chaos] running, restarts 0 (dynamic)\n"
    );
    let (ok, out, _) = h.cli(&["tree", "--json"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), tree);
}
