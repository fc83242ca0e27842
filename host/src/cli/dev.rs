//! `wasmvisor dev [PATH]`: the edit → running loop for a Rust plugin crate.
//! It builds the crate for `wasm32-wasip2` at start and after every change
//! of its sources, and places each new `.wasm` into a plugins folder, where
//! the host's hot reload takes over. A build that fails shows the
//! compiler's errors and places nothing, so the running version stays.

use super::RunArgs;
use anyhow::{Context, Result, bail};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// How long the sources must be quiet before a build: an editor's save (or
/// a formatter right after it) is one build.
const SETTLE: Duration = Duration::from_millis(200);

/// What `dev` was asked to do.
pub(super) struct Dev {
    /// The plugin crate.
    pub path: PathBuf,
    /// The plugins folder of a host that is already running; none starts a
    /// host here.
    pub plugins: Option<PathBuf>,
    /// Where the host `dev` starts listens.
    pub listen: Option<String>,
}

pub(super) async fn dev(args: Dev, token: Option<String>) -> Result<()> {
    let krate = std::path::absolute(&args.path)?;
    let name = plugin_name(&krate)?;
    let own_host = args.plugins.is_none();
    let plugins = args
        .plugins
        .clone()
        .unwrap_or_else(|| krate.join(".wasmvisor-dev/plugins"));
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create {}", plugins.display()))?;
    // The first build comes before the host starts, which then loads it.
    build_and_place(&krate, &name, &plugins).await;

    let (tx, mut changes) = mpsc::unbounded_channel::<()>();
    let mut debouncer = new_debouncer(SETTLE, None, move |result: DebounceEventResult| {
        if result.is_ok_and(|events| !events.is_empty()) {
            let _ = tx.send(());
        }
    })
    .context("cannot watch the plugin's sources")?;
    for (watched, mode) in [
        ("src", notify::RecursiveMode::Recursive),
        ("Cargo.toml", notify::RecursiveMode::NonRecursive),
        ("build.rs", notify::RecursiveMode::NonRecursive),
    ] {
        let path = krate.join(watched);
        if path.exists() {
            debouncer
                .watch(&path, mode)
                .with_context(|| format!("cannot watch {}", path.display()))?;
        }
    }
    let run = RunArgs {
        plugins: Some(plugins.clone()),
        config: None,
        listen: args.listen,
        data: Some(krate.join(".wasmvisor-dev/data")),
        ephemeral: true,
        cluster: None,
        node: None,
    };
    let watched = krate.display().to_string();
    let builds = tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Changes made during the last build are one more build.
            while changes.try_recv().is_ok() {}
            build_and_place(&krate, &name, &plugins).await;
        }
    });
    let result = match own_host {
        true => super::run::run(run, token).await,
        false => {
            println!("watching {watched} (Ctrl-C to stop)");
            let _ = tokio::signal::ctrl_c().await;
            Ok(())
        }
    };
    builds.abort();
    drop(debouncer);
    result
}

/// The plugin a crate builds: its package name with `-` as `_`, as cargo
/// names the `.wasm`.
fn plugin_name(krate: &Path) -> Result<String> {
    let manifest = krate.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{} has no Cargo.toml: `wasmvisor dev` builds a Rust plugin crate \
             (make one with `wasmvisor new NAME`)",
            krate.display()
        )
    })?;
    let parsed: toml::Table =
        toml::from_str(&text).with_context(|| format!("cannot read {}", manifest.display()))?;
    let Some(name) = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
    else {
        bail!("{} has no [package] name", manifest.display());
    };
    let name = name.replace('-', "_");
    crate::names::validate_plugin(&name)
        .map_err(|e| anyhow::anyhow!("the crate's name is not a valid plugin name: {e}"))?;
    Ok(name)
}

/// Builds the crate and, if that worked and the `.wasm` changed, places it
/// into `plugins` (written beside it, then renamed into place, so the host
/// never reads half a file). Reports either way; never fails the loop.
async fn build_and_place(krate: &Path, name: &str, plugins: &Path) {
    let started = Instant::now();
    match build(krate, name).await {
        Ok(wasm) => match place(&wasm, name, plugins) {
            Ok(true) => println!(
                "built {name} in {:.1} s; placed {} (the host reloads it)",
                started.elapsed().as_secs_f64(),
                plugins.join(format!("{name}.wasm")).display()
            ),
            Ok(false) => println!("built {name}: unchanged"),
            Err(e) => println!("built {name}, but cannot place it: {e:#}"),
        },
        Err(e) => println!("build failed: {e:#}; the running version stays"),
    }
}

/// `cargo build --release --target wasm32-wasip2` in the crate; the
/// compiler's messages go to the terminal as cargo renders them, and the
/// `.wasm` comes from cargo's artifact report.
async fn build(krate: &Path, name: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = tokio::process::Command::new(cargo)
        .current_dir(krate)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().context("cargo's output")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut wasm = None;
    while let Some(line) = lines.next_line().await? {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact"
            || message["target"]["name"]
                .as_str()
                .map(|n| n.replace('-', "_"))
                .as_deref()
                != Some(name)
        {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten();
        if let Some(file) = files
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"))
        {
            wasm = Some(PathBuf::from(file));
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("cargo build exited with {status}");
    }
    wasm.with_context(|| {
        format!(
            "cargo built no {name}.wasm: is it a cdylib (crate-type = [\"cdylib\"]) and is \
             the wasm32-wasip2 target installed (rustup target add wasm32-wasip2)?"
        )
    })
}

/// Puts `wasm` at `plugins/NAME.wasm` unless that already holds the same
/// bytes; whether it did.
fn place(wasm: &Path, name: &str, plugins: &Path) -> Result<bool> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let target = plugins.join(format!("{name}.wasm"));
    if std::fs::read(&target).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let tmp = plugins.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("cannot move it to {}", target.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_name_is_the_package_name_with_underscores() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"my-plugin\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        assert_eq!(plugin_name(dir.path()).unwrap(), "my_plugin");
        let empty = tempfile::tempdir().unwrap();
        let err = plugin_name(empty.path()).unwrap_err().to_string();
        assert!(err.contains("wasmvisor new"), "{err}");
    }

    #[test]
    fn an_unchanged_build_is_not_placed_again() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("built.wasm");
        std::fs::write(&wasm, b"v1").unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        assert!(place(&wasm, "p", &plugins).unwrap());
        assert!(!place(&wasm, "p", &plugins).unwrap());
        std::fs::write(&wasm, b"v2").unwrap();
        assert!(place(&wasm, "p", &plugins).unwrap());
        assert_eq!(std::fs::read(plugins.join("p.wasm")).unwrap(), b"v2");
        assert!(!plugins.join(".p.wasm.tmp").exists());
    }
}
