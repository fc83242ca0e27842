//! `wasmvisor new`: the scaffold builds for wasm32-wasip2 with no edits, and
//! the host loads and runs the result.

mod common;

use common::process::BIN;
use common::*;
use serde_json::json;
use std::process::Command;

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

    let (host, _dir) = host_with_extra(&[("hello_plugin", wasm)], |_| {}).await;
    start_ok(&host, "h", "hello_plugin", json!(null)).await;
    assert_eq!(call_ok(&host, "h", json!("ping")).await, json!("pong"));
    assert_eq!(call_ok(&host, "h", json!("count")).await, json!(1));

    // Run again, it refuses to overwrite.
    let again = Command::new(BIN)
        .args(["new", "hello_plugin"])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// `wasmvisor new NAME --lang LANG` in a temp folder, then `build` there;
/// returns the built `.wasm`.
fn new_and_build(lang: &str, name: &str, build: &[&[&str]]) -> (tempfile::TempDir, String) {
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
    let (host, _dir) = host_with_extra(&[("hello_py", &wasm)], |_| {}).await;
    start_ok(&host, "h", "hello_py", json!(null)).await;
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
    let (host, _dir) = host_with_extra(&[("hello_js", &wasm)], |_| {}).await;
    start_ok(&host, "h", "hello_js", json!(null)).await;
    assert_eq!(call_ok(&host, "h", json!("ping")).await, json!("pong"));
    assert_eq!(call_ok(&host, "h", json!("count")).await, json!(1));
}
