//! The bad-input corpus: every case gets a precise error, and the host keeps
//! serving a sentinel child throughout.
//!
//! HTTP cases (41) run against the real binary; plugin-file cases (7) go
//! through the library, as the folder watcher applies them.

mod common;

use common::process::RunningHost;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use wasmvisor_tests::{CHAOS, PROBER, UNKNOWN_IMPORT, WRONG_WORLD};

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: Body,
    status: u16,
    code: &'static str,
    /// A fragment the message must contain, so the error is precise.
    says: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: Body,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        body,
        status,
        code,
        says,
    }
}

fn start(body: Value) -> Body {
    Body::Json(body)
}

fn corpus() -> Vec<Case> {
    use Method as M;
    let post = M::POST;
    let nested = format!(
        r#"{{"id":"a","plugin":"chaos","args":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let long_id = "x".repeat(200);
    let huge_args = format!(
        r#"{{"id":"big","plugin":"chaos","args":"{}"}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    vec![
        // Starting children
        case(
            "unknown plugin",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "nope"})),
            422,
            "unknown_plugin",
            "nope",
        ),
        case(
            "init returns an error",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "chaos", "args": {"fail_init": "refused by init"}})),
            422,
            "init_failed",
            "refused by init",
        ),
        case(
            "init traps",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "chaos", "args": {"crash_init": true}})),
            422,
            "init_failed",
            "unreachable",
        ),
        case(
            "init loops forever",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "prober", "args": {"init": "loop"}})),
            422,
            "init_failed",
            "CPU deadline",
        ),
        case(
            "init rejects its args",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "tracker", "args": [1, 2]})),
            422,
            "init_failed",
            "must be a JSON object",
        ),
        case(
            "already started",
            post.clone(),
            "/v1/children",
            start(json!({"id": "sentinel", "plugin": "chaos"})),
            409,
            "already_started",
            "sentinel",
        ),
        case(
            "huge args",
            post.clone(),
            "/v1/children",
            Body::Raw(huge_args.into_bytes()),
            413,
            "payload_too_large",
            "larger than the limit",
        ),
        case(
            "deeply nested JSON",
            post.clone(),
            "/v1/children",
            Body::Raw(nested.into_bytes()),
            400,
            "bad_request",
            "recursion limit",
        ),
        case(
            "invalid UTF-8",
            post.clone(),
            "/v1/children",
            Body::Raw(b"{\"id\": \"\xff\xfe\", \"plugin\": \"chaos\"}".to_vec()),
            400,
            "bad_request",
            "invalid JSON",
        ),
        case(
            "not JSON",
            post.clone(),
            "/v1/children",
            Body::Raw(b"id=a&plugin=chaos".to_vec()),
            400,
            "bad_request",
            "invalid JSON",
        ),
        case(
            "truncated JSON",
            post.clone(),
            "/v1/children",
            Body::Raw(b"{\"id\": \"a\", \"plug".to_vec()),
            400,
            "bad_request",
            "EOF",
        ),
        case(
            "id of the wrong type",
            post.clone(),
            "/v1/children",
            start(json!({"id": 7, "plugin": "chaos"})),
            400,
            "bad_request",
            "invalid type",
        ),
        case(
            "restart of the wrong type",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "chaos", "restart": 1})),
            400,
            "bad_request",
            "invalid type",
        ),
        case(
            "shutdown_ms of the wrong type",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "chaos", "shutdown_ms": "soon"})),
            400,
            "bad_request",
            "invalid type",
        ),
        case(
            "unknown field",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "chaos", "colour": "red"})),
            400,
            "bad_request",
            "unknown field `colour`",
        ),
        case(
            "missing id",
            post.clone(),
            "/v1/children",
            start(json!({"plugin": "chaos"})),
            400,
            "bad_request",
            "missing field `id`",
        ),
        case(
            "empty body",
            post.clone(),
            "/v1/children",
            Body::None,
            400,
            "bad_request",
            "missing field `id`",
        ),
        case(
            "bad restart policy",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "chaos", "restart": "sometimes"})),
            400,
            "bad_request",
            "sometimes",
        ),
        case(
            "id with a slash",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a/b", "plugin": "chaos"})),
            400,
            "bad_request",
            "'/'",
        ),
        case(
            "id with ..",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a..b", "plugin": "chaos"})),
            400,
            "bad_request",
            "..",
        ),
        case(
            "empty id",
            post.clone(),
            "/v1/children",
            start(json!({"id": "", "plugin": "chaos"})),
            400,
            "bad_request",
            "empty",
        ),
        case(
            "id with a control character",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a\u{1}b", "plugin": "chaos"})),
            400,
            "bad_request",
            "\\u{1}",
        ),
        case(
            "id too long",
            post.clone(),
            "/v1/children",
            start(json!({"id": long_id, "plugin": "chaos"})),
            400,
            "bad_request",
            "longer than 128",
        ),
        case(
            "plugin name with a path",
            post.clone(),
            "/v1/children",
            start(json!({"id": "a", "plugin": "../chaos"})),
            400,
            "bad_request",
            "plugin name",
        ),
        // Calls and casts
        case(
            "call to an unknown id",
            post.clone(),
            "/v1/children/ghost/call",
            Body::Json(json!({"msg": 1})),
            404,
            "not_found",
            "ghost",
        ),
        case(
            "cast to an unknown id",
            post.clone(),
            "/v1/children/ghost/cast",
            Body::Json(json!({"msg": 1})),
            404,
            "not_found",
            "ghost",
        ),
        case(
            "call without msg",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Json(json!({"timeout_ms": 100})),
            400,
            "bad_request",
            "missing field `msg`",
        ),
        case(
            "call with an unknown field",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Json(json!({"msg": 1, "urgent": true})),
            400,
            "bad_request",
            "unknown field `urgent`",
        ),
        case(
            "negative timeout",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Json(json!({"msg": "state", "timeout_ms": -1})),
            400,
            "bad_request",
            "timeout_ms",
        ),
        case(
            "zero timeout",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Json(json!({"msg": "state", "timeout_ms": 0})),
            400,
            "bad_request",
            "timeout_ms",
        ),
        case(
            "overflowing timeout",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Raw(br#"{"msg": "state", "timeout_ms": 1e300}"#.to_vec()),
            400,
            "bad_request",
            "timeout_ms",
        ),
        case(
            "timeout beyond u64",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Raw(br#"{"msg": "state", "timeout_ms": 99999999999999999999999}"#.to_vec()),
            400,
            "bad_request",
            "timeout_ms",
        ),
        case(
            "fractional timeout",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Json(json!({"msg": "state", "timeout_ms": 2.5})),
            400,
            "bad_request",
            "timeout_ms",
        ),
        case(
            "timeout as a string",
            post.clone(),
            "/v1/children/sentinel/call",
            Body::Json(json!({"msg": "state", "timeout_ms": "100"})),
            400,
            "bad_request",
            "timeout_ms",
        ),
        case(
            "cast with an unknown field",
            post.clone(),
            "/v1/children/sentinel/cast",
            Body::Json(json!({"msg": 1, "later": 5})),
            400,
            "bad_request",
            "unknown field `later`",
        ),
        case(
            "kill with an unknown field",
            post.clone(),
            "/v1/children/sentinel/kill",
            Body::Json(json!({"why": "x"})),
            400,
            "bad_request",
            "unknown field `why`",
        ),
        // Paths, methods, queries
        case(
            "unknown id, get",
            M::GET,
            "/v1/children/ghost",
            Body::None,
            404,
            "not_found",
            "ghost",
        ),
        case(
            "unknown id, delete",
            M::DELETE,
            "/v1/children/ghost",
            Body::None,
            404,
            "not_found",
            "ghost",
        ),
        case(
            "invalid id in the path",
            M::GET,
            "/v1/children/a%2F..%2Fb",
            Body::None,
            400,
            "bad_request",
            "'/'",
        ),
        case(
            "wrong method",
            M::GET,
            "/v1/children/sentinel/call",
            Body::None,
            405,
            "method_not_allowed",
            "method",
        ),
        case(
            "unknown query parameter",
            M::GET,
            "/v1/events?topics=x",
            Body::None,
            400,
            "bad_request",
            "topics",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_precise_error_and_the_host_keeps_serving() {
    let config = "[plugins.prober]\ncpu_ms = 100\n";
    let h = RunningHost::start_with(&[], Some(config)).await;
    std::fs::copy(PROBER, h.plugins_dir().join("prober.wasm")).unwrap();
    h.client
        .json(
            Method::POST,
            "/v1/children",
            Some(&json!({"id": "sentinel", "plugin": "chaos"})),
        )
        .await
        .unwrap();
    // The watcher loads the prober.
    let deadline = std::time::Instant::now() + common::LIMIT;
    while !h
        .get("/v1/plugins")
        .await
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "prober" && p["version"].is_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the prober was not loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let cases = corpus();
    assert!(cases.len() >= 30);
    for (i, c) in cases.into_iter().enumerate() {
        let body = match c.body {
            Body::None => None,
            Body::Json(v) => Some(serde_json::to_vec(&v).unwrap()),
            Body::Raw(b) => Some(b),
        };
        let (status, bytes) = h.client.raw_bytes(c.method, &c.path, body).await.unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{}: the body is not JSON: {:?}",
                c.name,
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(
            status,
            StatusCode::from_u16(c.status).unwrap(),
            "{}: {answer}",
            c.name
        );
        assert_eq!(answer["error"], c.code, "{}: {answer}", c.name);
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(c.says),
            "{}: {message:?} does not say {:?}",
            c.name,
            c.says
        );
        // The sentinel still answers, and no half-started child is left.
        let reply = h
            .client
            .json(
                Method::POST,
                "/v1/children/sentinel/call",
                Some(&json!({"msg": {"add": 1}})),
            )
            .await
            .unwrap_or_else(|e| panic!("after {}: {e:#}", c.name));
        assert_eq!(reply["reply"], json!(i + 1), "after {}", c.name);
    }
    let children = h.get("/v1/children").await;
    assert_eq!(children.as_array().unwrap().len(), 1, "{children}");
    assert_eq!(children[0]["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_plugin_file_is_refused_with_why_and_changes_nothing() {
    let (host, dir) = common::host().await;
    host.start_child(common::spec("sentinel", "chaos", json!(null)))
        .await
        .unwrap();
    let good = std::fs::read(CHAOS).unwrap();
    let world = format!(
        "does not export the plugin world of wasmvisor:plugin@{}",
        wasmvisor::WIT_VERSION
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not wasm",
            b"\x7fELF not wasm".to_vec(),
            "not a valid wasm component",
        ),
        (
            "truncated component",
            good[..good.len() / 3].to_vec(),
            "not a valid wasm component",
        ),
        ("empty file", Vec::new(), "the file is empty"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core wasm module, not a component",
        ),
        (
            "wrong world",
            std::fs::read(WRONG_WORLD).unwrap(),
            world.as_str(),
        ),
        (
            "unknown import",
            std::fs::read(UNKNOWN_IMPORT).unwrap(),
            "imports something the host does not provide",
        ),
    ];
    for (name, bytes, says) in cases {
        let err = host.apply_bytes("chaos", bytes).await.unwrap_err();
        assert!(format!("{err:#}").contains(says), "{name}: {err:#}");
        assert_eq!(
            common::call_ok(&host, "sentinel", json!("version")).await,
            json!("0.1.0"),
            "{name}"
        );
        let plugin = host
            .plugins()
            .into_iter()
            .find(|p| p.name == "chaos")
            .unwrap();
        assert!(plugin.last_error.unwrap().contains(says), "{name}");
    }
    // A file whose name is not a plugin name.
    let odd = dir.path().join("plugins").join("bad name.wasm");
    std::fs::write(&odd, &good).unwrap();
    let err = host.apply_file(&odd).await.unwrap_err();
    assert!(format!("{err:#}").contains("valid plugin name"), "{err:#}");
    assert_eq!(
        common::call_ok(&host, "sentinel", json!({"add": 1})).await,
        json!(1)
    );
    assert_eq!(host.child("sentinel").unwrap().restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_the_machine_cannot_hold_stops_run_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wasmvisor.toml"),
        "[pool]\nmax_instances = 100000000\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(common::process::BIN)
        .current_dir(dir.path())
        .args(["run", "--listen", "127.0.0.1:0", "--ephemeral"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lower max_instances"), "{err}");
}
