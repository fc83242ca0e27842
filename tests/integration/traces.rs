//! Traces over OTLP/HTTP, received by a small OTLP receiver the test runs
//! itself: an API call to a child that calls another child is one trace
//! (request → call → handle-call → handle-call), and restarts and reloads
//! are spans too. And `--log-format json`.

mod common;

use axum::body::Bytes;
use axum::routing::post;
use common::process::RunningHost;
use hyper::Method;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmvisor_tests::{CHAOS_V2, install, wait_for};

/// Every span the receiver got.
type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP (protobuf) trace receiver on a free loopback port.
async fn receiver() -> (String, Spans) {
    let spans = Spans::default();
    let got = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let got = got.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut got = got.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        got.extend(scope.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

/// The span named `name` with attribute `child` = `child`, once it arrived.
fn find(spans: &[Span], name: &str, key: &str, value: &str) -> Option<Span> {
    spans
        .iter()
        .find(|s| s.name == name && attribute(s, key).as_deref() == Some(value))
        .cloned()
}

fn parent_of(spans: &[Span], child: &Span) -> Option<Span> {
    spans
        .iter()
        .find(|s| s.span_id == child.parent_span_id && s.trace_id == child.trace_id)
        .cloned()
}

async fn post_json(h: &RunningHost, path: &str, body: Value) -> Value {
    h.client
        .json(Method::POST, path, Some(&body))
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_to_guest_call_continues_the_api_requests_trace() {
    let (endpoint, spans) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    wasmvisor_tests::copy_plugins(&dir.path().join("plugins"));
    let h = RunningHost::start_in_env(
        dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await
    .unwrap_or_else(|log| panic!("the host exited; log:\n{log}"));
    for id in ["a", "b"] {
        post_json(&h, "/v1/children", json!({"id": id, "plugin": "chaos"})).await;
    }
    let reply = post_json(
        &h,
        "/v1/children/a/call",
        json!({"msg": {"call": {"to": "b", "msg": {"add": 2}}}}),
    )
    .await;
    assert_eq!(reply["reply"], 2, "{reply}");

    let limit = Duration::from_secs(20);
    let (inner, outer, call, request) = wait_for("the spans of the call", limit, || {
        let spans = spans.lock().unwrap();
        let inner = find(&spans, "handle-call", "child", "b")?;
        let outer = parent_of(&spans, &inner)?;
        let call = parent_of(&spans, &outer)?;
        let request = parent_of(&spans, &call)?;
        Some((inner, outer, call, request))
    })
    .await;
    // b's handle-call continues a's, which continues the API's call.
    assert_eq!(outer.name, "handle-call");
    assert_eq!(attribute(&outer, "child").as_deref(), Some("a"));
    assert_eq!(call.name, "call");
    assert_eq!(attribute(&call, "child").as_deref(), Some("a"));
    assert_eq!(request.name, "POST /v1/children/a/call");
    assert!(request.parent_span_id.is_empty(), "the request is the root");
    assert_eq!(inner.trace_id, request.trace_id);
    // Durations nest.
    assert!(outer.start_time_unix_nano <= inner.start_time_unix_nano);
    assert!(inner.end_time_unix_nano <= outer.end_time_unix_nano);

    // A restart and a reload are spans of their own.
    let (status, _) = h
        .client
        .raw(
            Method::POST,
            "/v1/children/b/call",
            Some(&json!({"msg": "crash"})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 500);
    wait_for("the restart span", limit, || {
        find(&spans.lock().unwrap(), "restart", "child", "b")
    })
    .await;
    install(&h.plugins_dir(), "chaos", &std::fs::read(CHAOS_V2).unwrap());
    wait_for("the reload span", limit, || {
        find(&spans.lock().unwrap(), "reload", "plugin", "chaos")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let h = RunningHost::start(&["--log-format", "json"]).await;
    post_json(&h, "/v1/children", json!({"id": "j", "plugin": "chaos"})).await;
    let _ = h
        .client
        .raw(
            Method::POST,
            "/v1/children/j/call",
            Some(&json!({"msg": "crash"})),
        )
        .await
        .unwrap();
    let line = wait_for("the exit's log line", Duration::from_secs(20), || {
        h.log()
            .lines()
            .find(|l| l.contains("exited"))
            .map(str::to_string)
    })
    .await;
    let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(entry["level"], "INFO", "{entry}");
    assert_eq!(entry["fields"]["child"], "j", "{entry}");
    assert!(
        entry["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("exited: trap")),
        "{entry}"
    );
    for line in h.log().lines().filter(|l| !l.is_empty()) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
