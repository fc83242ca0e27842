//! Helpers shared by the integration tests: a host on the example plugins,
//! JSON calls, and waiting on events.
#![allow(dead_code)]

use serde_json::Value;
use std::time::Duration;
use wasmvisor::{CallError, ChildSpec, Config, Host, Restart};

pub use wasmvisor_tests::wait_for;

/// A generous bound for anything a test waits on.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A host on a temp folder (`plugins/` with every example plugin, `data/`),
/// configured by `edit`.
pub async fn host_with(edit: impl FnOnce(&mut Config)) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    wasmvisor_tests::copy_plugins(&plugins);
    let mut config = Config {
        plugins_dir: plugins,
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.pool.max_instances = 1_000;
    edit(&mut config);
    let host = Host::new(config).await.expect("the host starts");
    (host, dir)
}

/// Like `host_with`, with more plugins copied in as (name, path).
pub async fn host_with_extra(
    extra: &[(&str, &str)],
    edit: impl FnOnce(&mut Config),
) -> (Host, tempfile::TempDir) {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    host_with(move |c| {
        for (name, path) in &extra {
            std::fs::copy(path, c.plugins_dir.join(format!("{name}.wasm"))).expect("copy a plugin");
        }
        edit(c);
    })
    .await
}

/// A host whose `chaos` plugin has the limits `chaos`.
pub async fn host_with_chaos(chaos: wasmvisor::config::PluginConfig) -> (Host, tempfile::TempDir) {
    host_with(move |c| {
        c.plugins.insert("chaos".into(), chaos);
    })
    .await
}

pub async fn host() -> (Host, tempfile::TempDir) {
    host_with(|_| {}).await
}

pub fn spec(id: &str, plugin: &str, args: Value) -> ChildSpec {
    ChildSpec::new(id, plugin, &args)
}

/// Starts a child that must start (its first `init` succeeds).
pub async fn start_ok(host: &Host, id: &str, plugin: &str, args: Value) {
    let started = host
        .start_child(spec(id, plugin, args))
        .await
        .unwrap_or_else(|e| panic!("start {id} ({plugin}): {e}"));
    assert!(started.is_some(), "{id} ({plugin}) was ignored");
}

pub fn spec_with(id: &str, plugin: &str, args: Value, restart: Restart) -> ChildSpec {
    ChildSpec::new(id, plugin, &args).restart(restart)
}

/// Calls `id` with JSON and decodes the JSON reply.
pub async fn call(host: &Host, id: &str, msg: Value) -> Result<Value, CallError> {
    let bytes = serde_json::to_vec(&msg).expect("JSON encodes");
    let reply = host.call(id, bytes, Duration::from_secs(10)).await?;
    Ok(serde_json::from_slice(&reply).expect("the reply is JSON"))
}

/// Like `call`, for calls that must succeed.
pub async fn call_ok(host: &Host, id: &str, msg: Value) -> Value {
    call(host, id, msg.clone())
        .await
        .unwrap_or_else(|e| panic!("call {id} {msg}: {e}"))
}

pub fn cast(host: &Host, id: &str, msg: Value) -> Result<(), CallError> {
    host.cast(id, serde_json::to_vec(&msg).expect("JSON encodes"))
}

/// The JSON of `call`s to chaos's `"infos"`: what it received so far.
pub async fn infos(host: &Host, id: &str) -> Vec<Value> {
    match call_ok(host, id, serde_json::json!("infos")).await {
        Value::Array(list) => list,
        other => panic!("infos is not a list: {other}"),
    }
}

/// Waits until `id`'s chaos instance has received an info matching `pred`.
pub async fn wait_for_info(
    host: &Host,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let got = infos(host, id).await;
        if got.iter().any(&pred) {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; infos: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until child `id` satisfies `pred`.
pub async fn wait_child(
    host: &Host,
    id: &str,
    what: &str,
    pred: impl Fn(&wasmvisor::ChildInfo) -> bool,
) -> wasmvisor::ChildInfo {
    let mut last = None;
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        match host.child(id) {
            Some(c) if pred(&c) => return c,
            seen => last = seen.or(last),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {LIMIT:?} waiting for {what}; {id} was last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until child `id` is gone from the registry.
pub async fn wait_gone(host: &Host, id: &str) {
    wait_for(&format!("{id} to be removed"), LIMIT, || {
        host.child(id).is_none().then_some(())
    })
    .await
}

/// Polls `call` once: that queues it, or, if the child is idle, runs it on
/// this task up to the guest's first yield (the spin yields at every epoch
/// tick). Until then a spawned call may not have reached the child at all.
pub async fn begin<F: std::future::Future + Unpin>(call: &mut F)
where
    F::Output: std::fmt::Debug,
{
    tokio::select! {
        biased;
        r = call => panic!("the call returned at once: {r:?}"),
        () = std::future::ready(()) => {}
    }
}

/// Begins `call` here (see [`begin`]) and finishes it on a task of its own,
/// so that what the test does next finds the call running or queued.
pub async fn spawn_begun<F>(call: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: std::fmt::Debug + Send + 'static,
{
    let mut call = Box::pin(call);
    begin(&mut call).await;
    tokio::spawn(call)
}

pub mod browser;
pub mod process;
pub mod proxy;

/// `wasm` with a custom section tagged `tag` appended: the same code, but
/// other bytes, so a new version to the host (a hot reload of the same
/// build, as often as the tags differ).
pub fn rebuilt(mut wasm: Vec<u8>, tag: u8) -> Vec<u8> {
    let name = b"wasmvisor-test";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(b"a reload of the same code, tag ");
    section.push(tag);
    assert!(section.len() < 128, "the sizes are one-byte LEB128");
    wasm.push(0); // a custom section
    wasm.push(section.len() as u8);
    wasm.extend(section);
    wasm
}

/// Hot-reloads plugin `name` to `bytes` and checks that all `instances`
/// of it moved to the new version.
pub async fn reload(host: &Host, name: &str, bytes: Vec<u8>, instances: usize) {
    match host.apply_bytes(name, bytes).await {
        Ok(wasmvisor::PluginChange::Reloaded {
            instances: moved,
            failed,
            ..
        }) => assert_eq!((moved, failed.len()), (instances, 0), "{failed:?}"),
        other => panic!("{name} was not reloaded: {other:?}"),
    }
}

/// The value of one series in the host's metrics, named as it is printed
/// (with its labels, if any); panics if the series is not there.
pub fn metric(host: &Host, series: &str) -> u64 {
    let text = host.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics:\n{text}"))
}
