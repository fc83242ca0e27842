//! Fixtures for the integration tests in this folder: the example plugins,
//! compiled by `build.rs`, and helpers that do not depend on the host.

use std::path::Path;
use std::time::{Duration, Instant};

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// Copies example plugin `name` into `dir` as `NAME.wasm`.
pub fn copy_plugin(name: &str, dir: &Path) {
    let (_, path) = ALL_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no example plugin named {name}"));
    std::fs::copy(path, dir.join(format!("{name}.wasm"))).expect("cannot copy a plugin");
}

/// Copies every example plugin into `dir` (created if missing), as a host's
/// plugins folder.
pub fn copy_plugins(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cannot create the plugins folder");
    for (name, _) in ALL_PLUGINS {
        copy_plugin(name, dir);
    }
}

/// Puts `bytes` at `dir/NAME.wasm` the way deployment tools do: written to a
/// temp file in the same folder, then renamed into place.
pub fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.wasm.partial"));
    std::fs::write(&tmp, bytes).expect("cannot write a temp plugin file");
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm")))
        .expect("cannot rename a plugin into place");
}

/// Polls `check` until it returns `Some`, at most `limit`; panics with
/// `what` when time runs out. Tests wait with this, never with a bare sleep.
pub async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    wait_for_async(what, limit, || std::future::ready(check())).await
}

/// As [`wait_for`], for a check that has to await (an HTTP request, a
/// connection).
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
