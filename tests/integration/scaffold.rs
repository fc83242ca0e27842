//! `wasmvisor new`: the scaffold builds for wasm32-wasip2 with no edits, and
//! the host loads and runs the result.

mod common;

use common::process::BIN;
use common::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_builds_with_no_edits_and_runs_in_the_host() {
    // Inside the checkout (the target folder is in it), with no --sdk.
    let parent = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(BIN)
        .args(["new", "hello_plugin"])
        .current_dir(parent.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let dir = parent.path().join("hello_plugin");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    // A relative path to the checkout's SDK, so the checkout can move.
    assert!(
        manifest.contains("path = \"../") && manifest.contains("/guest-sdk\""),
        "{manifest}"
    );
    assert!(dir.join("README.md").is_file());

    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .current_dir(&dir)
        // Shares compiled dependencies between runs of this test.
        .env(
            "CARGO_TARGET_DIR",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/scaffold-target"),
        )
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/scaffold-target/wasm32-wasip2/release/hello_plugin.wasm"
    );

    answers_ping("hello_plugin", wasm).await;

    // Run again, it refuses to overwrite.
    let again = Command::new(BIN)
        .args(["new", "hello_plugin"])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// `wasmvisor new NAME --lang LANG` in a temp folder inside the checkout
/// (so a Rust crate finds its SDK): the folder, and the plugin's.
fn scaffold(lang: &str, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let parent = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(BIN)
        .args(["new", name, "--lang", lang])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = parent.path().join(name);
    (parent, dir)
}

/// [`scaffold`], then `build` in the plugin's folder; returns the built
/// `.wasm`.
fn new_and_build(lang: &str, name: &str, build: &[&[&str]]) -> (tempfile::TempDir, String) {
    let (parent, dir) = scaffold(lang, name);
    for command in build {
        let run = Command::new(command[0])
            .args(&command[1..])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        assert!(
            run.status.success(),
            "{command:?} failed:\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let wasm = dir.join(format!("{name}.wasm")).display().to_string();
    (parent, wasm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_plugin_builds_with_no_edits_and_runs_in_the_host() {
    let (_parent, wasm) = new_and_build("python", "hello_py", &[&["bash", "build.sh"]]);
    answers_ping("hello_py", &wasm).await;
}

/// A host with the plugin `name` at `wasm` runs a child that answers
/// "ping" and counts it.
async fn answers_ping(name: &str, wasm: &str) {
    let (host, _dir) = host_with_extra(&[(name, wasm)], |_| {}).await;
    start_ok(&host, "h", name, json!(null)).await;
    assert_eq!(call_ok(&host, "h", json!("ping")).await, json!("pong"));
    assert_eq!(call_ok(&host, "h", json!("count")).await, json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_js_plugin_builds_with_no_edits_and_runs_in_the_host() {
    let build: &[&[&str]] = &[
        &[
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ],
        &["npm", "run", "build", "--silent"],
    ];
    let (_parent, wasm) = new_and_build("js", "hello_js", build);
    answers_ping("hello_js", &wasm).await;
}

/// `wasmvisor dev` on a scaffolded crate, placing builds into a running
/// host's plugins folder: an edit is served after its rebuild, and a
/// compiler error keeps the last good version serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_each_edit_and_keeps_the_old_version_on_a_compiler_error() {
    use common::process::RunningHost;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let (_parent, krate) = scaffold("rust", "dev_plugin");
    let host = RunningHost::start(&[]).await;

    let mut dev = tokio::process::Command::new(BIN)
        .arg("dev")
        .arg(&krate)
        .arg("--plugins")
        .arg(host.plugins_dir())
        // Shares compiled dependencies with the other scaffold test.
        .env(
            "CARGO_TARGET_DIR",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/scaffold-target"),
        )
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let record = said.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            record.lock().unwrap().push(line);
        }
    });
    let builds = Duration::from_secs(300);
    let reply = |host: &RunningHost| {
        let body = json!({"msg": "ping"});
        let client = host.client.clone();
        async move {
            let answer = client
                .json(hyper::Method::POST, "/v1/children/d/call", Some(&body))
                .await
                .ok()?;
            Some(answer["reply"].clone())
        }
    };
    wait_for_async("the first build to load", builds, || async {
        let plugins = host.get("/v1/plugins").await;
        plugins
            .as_array()
            .is_some_and(|l| l.iter().any(|p| p["name"] == "dev_plugin"))
            .then_some(())
    })
    .await;
    let (ok, _, err) = host.cli(&["start", "d", "dev_plugin"]).await;
    assert!(ok, "{err}");
    assert_eq!(reply(&host).await, Some(json!("pong")));

    let lib = krate.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace("json!(\"pong\")", "json!(\"pong, edited\")");
    assert_ne!(edited, source);
    std::fs::write(&lib, &edited).unwrap();
    wait_for_async("the edit to be served", builds, || async {
        (reply(&host).await == Some(json!("pong, edited"))).then_some(())
    })
    .await;

    std::fs::write(&lib, format!("{edited}\nfn broken( {{\n")).unwrap();
    wait_for_async("dev to report the failed build", builds, || async {
        said.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("build failed"))
            .then_some(())
    })
    .await;
    assert_eq!(reply(&host).await, Some(json!("pong, edited")));
    dev.kill().await.unwrap();
}

/// Polls `check` until it gives a value, up to `limit`.
async fn wait_for_async<T, F>(what: &str, limit: Duration, check: impl Fn() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
