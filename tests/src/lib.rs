//! Fixtures for the integration tests in this folder: the example plugins,
//! compiled by `build.rs`, and helpers that do not depend on the host.

use std::path::Path;
use std::time::{Duration, Instant};

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// A fresh plugins folder holding the given example plugins.
pub fn plugins_dir(plugins: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("cannot create a temp dir");
    for name in plugins {
        copy_plugin(name, dir.path());
    }
    dir
}

/// Copies example plugin `name` into `dir` as `NAME.wasm`.
pub fn copy_plugin(name: &str, dir: &Path) {
    let (_, path) = ALL_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no example plugin named {name}"));
    std::fs::copy(path, dir.join(format!("{name}.wasm"))).expect("cannot copy a plugin");
}

/// Polls `check` until it returns `Some`, at most `limit`; panics with
/// `what` when time runs out. Tests wait with this, never with a bare sleep.
pub async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
