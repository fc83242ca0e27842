//! Running the real `wasmvisor` binary: `run` on a temp folder, and the
//! client commands against it.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use wasmvisor::cli::client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_wasmvisor");

/// A `wasmvisor run` process on a temp plugins folder, killed on drop.
pub struct RunningHost {
    pub addr: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
    process: tokio::process::Child,
}

impl RunningHost {
    /// Starts the binary with every example plugin and `extra` flags, and
    /// waits for its "listening" line.
    pub async fn start(extra: &[&str]) -> RunningHost {
        RunningHost::start_with(extra, None).await
    }

    pub async fn start_with(extra: &[&str], config: Option<&str>) -> RunningHost {
        let dir = tempfile::tempdir().expect("temp dir");
        wasmvisor_tests::copy_plugins(&dir.path().join("plugins"));
        if let Some(text) = config {
            std::fs::write(dir.path().join("wasmvisor.toml"), text).expect("config");
        }
        RunningHost::start_in(dir, extra)
            .await
            .unwrap_or_else(|log| panic!("the host exited; log:\n{log}"))
    }

    /// Starts the binary on an existing folder (`plugins/`, `data/`); the
    /// log of a host that exited instead of listening is the error.
    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Result<RunningHost, String> {
        RunningHost::start_in_env(dir, extra, &[]).await
    }

    /// As [`RunningHost::start_in`], with `env` set for the host.
    pub async fn start_in_env(
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<RunningHost, String> {
        let log = std::fs::File::create(dir.path().join("host.log")).expect("log file");
        let mut process = tokio::process::Command::new(BIN)
            .current_dir(dir.path())
            .args(["run", "--listen", "127.0.0.1:0", "--plugins"])
            .arg(dir.path().join("plugins"))
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(extra)
            .env_remove("WASMVISOR_TOKEN")
            .env_remove("WASMVISOR_ADDR")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the wasmvisor binary starts");
        let stdout = process.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("the host prints its address or exits within 120 s")
            .expect("stdout is readable");
        let Some(line) = line else {
            let _ = process.wait().await;
            return Err(read_log(dir.path()));
        };
        let addr = line
            .strip_prefix("wasmvisor listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_string());
        Ok(RunningHost {
            client: Client::new(&addr, token),
            addr,
            dir,
            process,
        })
    }

    /// `kill -9`, then a new host on the same folder.
    pub async fn kill_and_restart(mut self, extra: &[&str]) -> RunningHost {
        self.process.kill().await.expect("the host can be killed");
        let dir = self.dir;
        RunningHost::start_in(dir, extra)
            .await
            .unwrap_or_else(|log| panic!("the host did not come back; log:\n{log}"))
    }

    /// Kills the host and gives its folder back.
    pub async fn kill_keep_dir(mut self) -> tempfile::TempDir {
        self.process.kill().await.expect("the host can be killed");
        self.dir
    }

    /// Runs a client command against this host and returns (success,
    /// stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new(BIN)
            .arg("--addr")
            .arg(&self.addr)
            .args(args)
            .env_remove("WASMVISOR_TOKEN")
            .output()
            .await
            .expect("the client command runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts a client command that keeps running (like `events`).
    pub fn cli_streaming(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(BIN)
            .arg("--addr")
            .arg(&self.addr)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the client command starts")
    }

    pub fn pid(&self) -> u32 {
        self.process.id().expect("the host runs")
    }

    /// The host process's resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.process.id().expect("the host runs");
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("VmRSS is there")
    }

    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Sends SIGTERM-equivalent (kill) and waits for the process.
    pub async fn kill(mut self) {
        let _ = self.process.kill().await;
    }

    pub async fn get(&self, path: &str) -> Value {
        self.client
            .json(hyper::Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }
}

impl RunningHost {
    /// Polls `GET /v1/children/{id}` until `pred` holds (bounded).
    pub async fn wait_child(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + super::LIMIT;
        loop {
            let got = self
                .client
                .json(hyper::Method::GET, &format!("/v1/children/{id}"), None)
                .await;
            match got {
                Ok(child) if pred(&child) => return child,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "timed out waiting for {what}; last answer: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("host.log")).unwrap_or_default()
}
