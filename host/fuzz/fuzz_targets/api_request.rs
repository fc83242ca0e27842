//! HTTP request decoding: arbitrary methods, paths, queries, headers and
//! bodies through the real API router of a real host (with the example
//! `chaos` plugin when it is built). Every answer must be well-formed: no
//! panic, every error a `{"error", "message"}` JSON object, and a 500 only
//! for what a guest did (`trapped`, `killed`), never for the host.

#![no_main]

use arbitrary::Arbitrary;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tower::ServiceExt;
use wasmvisor::{Config, Host};

/// Paths the fuzzer fills in, so that it reaches every route's decoding
/// instead of spending its time on 404s.
const ROUTES: &[&str] = &[
    "/v1/children",
    "/v1/children/{}",
    "/v1/children/{}/call",
    "/v1/children/{}/cast",
    "/v1/children/{}/restart",
    "/v1/children/{}/kill",
    "/v1/plugins",
    "/v1/events?{}",
    "/metrics",
    "/healthz",
    "{}",
];

const METHODS: &[&str] = &["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"];

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    route: u8,
    segment: String,
    json_content_type: bool,
    body: Vec<u8>,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wasmvisor-fuzz-{}", std::process::id()));
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).expect("temp dir");
        let built = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../plugins/target/wasm32-wasip2/release/chaos.wasm"
        );
        if std::fs::copy(built, plugins.join("chaos.wasm")).is_err() {
            eprintln!("chaos.wasm is not built; fuzzing without a plugin");
        }
        let mut config = Config {
            plugins_dir: plugins,
            data_dir: dir.join("data"),
            ephemeral: true,
            ..Config::default()
        };
        config.pool.max_instances = 200;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let host = runtime
            .block_on(Host::new(config))
            .expect("the host starts");
        let app = wasmvisor::api::router(host, None);
        Fixture { runtime, app }
    })
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let method = METHODS[input.method as usize % METHODS.len()];
    let route = ROUTES[input.route as usize % ROUTES.len()];
    let uri = route.replace("{}", &input.segment);
    let mut request = axum::http::Request::builder().method(method).uri(&uri);
    if input.json_content_type {
        request = request.header("content-type", "application/json");
    }
    // An invalid URI never reaches the router: hyper rejects it first.
    let Ok(request) = request.body(axum::body::Body::from(input.body)) else {
        return;
    };
    // The event stream never ends on its own: check its head only.
    let streaming = route.starts_with("/v1/events");
    f.runtime.block_on(async {
        let response = f.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        // A HEAD answer has no body, by HTTP's rules.
        if (streaming && status.is_success()) || method == "HEAD" {
            return;
        }
        let body = response.into_body().collect().await.expect("body").to_bytes();
        if status.is_client_error() || status.is_server_error() {
            let error: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{method} {uri}: error body is not JSON ({e})"));
            assert!(error["error"].is_string(), "{method} {uri}: {error}");
            assert!(error["message"].is_string(), "{method} {uri}: {error}");
            if status.as_u16() == 500 {
                let code = error["error"].as_str();
                assert!(matches!(code, Some("trapped" | "killed")), "{method} {uri}: {error}");
            }
        }
    });
});
