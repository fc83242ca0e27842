//! The client commands against the real binary, as the README's quick start
//! uses them.

mod common;

use common::process::RunningHost;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start() {
    let h = RunningHost::start(&[]).await;
    let (ok, out, err) = h
        .cli(&[
            "start",
            "t1",
            "tracker",
            "--args",
            r#"{"transaction_id":"txn_1"}"#,
        ])
        .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("started t1 (tracker "), "{out}");
    let (ok, out, _) = h.cli(&["call", "t1", r#"{"observe":1}"#]).await;
    assert!(ok);
    assert_eq!(out.trim(), "1");

    // Watch the events while a chaos child crashes.
    let mut events = h.cli_streaming(&["events"]);
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    let (ok, _, err) = h
        .cli(&["start", "c1", "chaos", "--args", r#"{"n":7}"#])
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = h.cli(&["call", "c1", r#""crash""#]).await;
    assert!(!ok, "a trapped call fails the command");
    assert!(err.starts_with("error: trapped: "), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let (ok, ps, _) = h.cli(&["ps"]).await;
    assert!(ok);
    let row = ps
        .lines()
        .find(|l| l.starts_with("c1 "))
        .unwrap_or_else(|| panic!("{ps}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["c1", "chaos", "running"], "{row}");
    assert_eq!(cells[4], "1", "restart count: {row}");
    assert_eq!(cells[5], r#"{"n":7}"#, "args: {row}");
    assert!(row.contains("trap:"), "{row}");

    // The stream may have connected after the crash; crash once more so a
    // restart is certainly in it.
    let mut saw_restart = false;
    for _ in 0..5 {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if event["type"] == "child_restarted" && event["id"] == "c1" {
                saw_restart = true;
                break;
            }
        }
        if saw_restart {
            break;
        }
        h.cli(&["kill", "c1"]).await;
    }
    assert!(saw_restart, "`wasmvisor events` shows the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_command() {
    let h = RunningHost::start(&[]).await;
    let (ok, out, _) = h.cli(&["plugins"]).await;
    assert!(ok);
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert_eq!(
        out.lines().count(),
        wasmvisor_tests::ALL_PLUGINS.len() + 1,
        "{out}"
    );
    assert!(
        h.cli(&["start", "c", "chaos", "--restart", "transient"])
            .await
            .0
    );
    assert!(h.cli(&["cast", "c", r#""bump""#]).await.0);
    assert_eq!(
        h.cli(&["call", "c", r#""state""#]).await.1.trim(),
        r#"{"args":null,"count":1}"#
    );
    assert!(h.cli(&["restart", "c"]).await.0);
    assert_eq!(
        h.cli(&["call", "c", r#""state""#, "--timeout", "2000"])
            .await
            .1
            .trim(),
        r#"{"args":null,"count":0}"#
    );
    assert!(h.cli(&["kill", "c"]).await.0);
    let (ok, json, _) = h.cli(&["ps", "--json"]).await;
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list[0]["restart"], "transient");
    assert!(h.cli(&["stop", "c"]).await.0);
    let (ok, _, err) = h.cli(&["stop", "c"]).await;
    assert!(!ok);
    assert!(err.starts_with("error: not_found"), "{err}");
    let (ok, _, err) = h.cli(&["start", "x", "chaos", "--args", "{nope"]).await;
    assert!(!ok);
    assert!(err.contains("--args is not valid JSON"), "{err}");
    let (ok, _, err) = h
        .cli(&["start", "x", "chaos", "--restart", "sometimes"])
        .await;
    assert!(!ok);
    assert!(err.contains("sometimes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_host_fails_with_one_line() {
    let out = tokio::process::Command::new(common::process::BIN)
        .args(["--addr", "127.0.0.1:1", "ps"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot reach the wasmvisor host"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wit_prints_or_writes_the_package_plugins_are_built_against() {
    let out = tokio::process::Command::new(common::process::BIN)
        .arg("wit")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let package = format!("package wasmvisor:plugin@{};", wasmvisor::WIT_VERSION);
    assert!(printed.contains(&package), "{printed}");
    assert!(printed.contains("world plugin"), "{printed}");

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("wit");
    let out = tokio::process::Command::new(common::process::BIN)
        .arg("wit")
        .arg("--out")
        .arg(&target)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("plugin.wit")).unwrap(),
        printed
    );
    // A folder that cannot be created is an error that names it.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "x").unwrap();
    let out = tokio::process::Command::new(common::process::BIN)
        .args(["wit", "--out"])
        .arg(blocked.join("wit"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot create"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_written_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = tokio::process::Command::new(common::process::BIN)
            .args(["completions", shell])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["wasmvisor", "hibernate", "completions"] {
            assert!(script.contains(word), "no {word} in the {shell} script");
        }
        // Where the shell is installed, the script must at least parse.
        let file = dir.path().join(shell);
        std::fs::write(&file, &script).unwrap();
        let parses = match shell {
            "fish" => std::process::Command::new("fish")
                .arg("--no-execute")
                .arg(&file)
                .status(),
            other => std::process::Command::new(other)
                .arg("-n")
                .arg(&file)
                .status(),
        };
        match parses {
            Ok(status) => assert!(status.success(), "the {shell} script does not parse"),
            Err(e) => {
                println!("{shell} is not installed ({e}); the script's syntax is not checked")
            }
        }
    }
    let out = tokio::process::Command::new(common::process::BIN)
        .args(["completions", "tcsh"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_coloured_only_on_request_or_a_terminal() {
    let host = RunningHost::start(&[]).await;
    let (ok, _, err) = host.cli(&["start", "c1", "chaos"]).await;
    assert!(ok, "{err}");
    // Through a pipe: plain text.
    let (ok, plain, _) = host.cli(&["ps"]).await;
    assert!(ok);
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    assert!(plain.contains("running"), "{plain}");
    // Forced (CLICOLOR_FORCE): the status is green and the columns still
    // line up once the codes are removed.
    let out = tokio::process::Command::new(common::process::BIN)
        .args(["--addr", &host.addr, "ps"])
        .env("CLICOLOR_FORCE", "1")
        .env_remove("NO_COLOR")
        .output()
        .await
        .unwrap();
    let coloured = String::from_utf8(out.stdout).unwrap();
    assert!(coloured.contains("\u{1b}[32mrunning"), "{coloured:?}");
    let stripped: String = {
        let mut s = String::new();
        let mut chars = coloured.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                s.push(c);
            }
        }
        s
    };
    assert_eq!(stripped, plain);
}

/// On a terminal, a host start that compiles several plugins draws a
/// progress bar on stderr (`script` gives the host a pseudo-terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_start_on_a_terminal_shows_a_progress_bar() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    wasmvisor_tests::copy_plugins(&dir.path().join("plugins"));
    let command = format!(
        "{} run --ephemeral --listen 127.0.0.1:0 --plugins {} --data {}",
        common::process::BIN,
        dir.path().join("plugins").display(),
        dir.path().join("data").display()
    );
    let mut host = tokio::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("WASMVISOR_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script runs");
    let mut out = BufReader::new(host.stdout.take().unwrap());
    let mut seen = String::new();
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !seen.contains("wasmvisor listening on") {
        let mut chunk = Vec::new();
        let read = tokio::time::timeout_at(limit.into(), out.read_until(b'\n', &mut chunk))
            .await
            .expect("the host listens within 120 s")
            .unwrap();
        assert!(read > 0, "the host ended:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let total = wasmvisor_tests::ALL_PLUGINS.len();
    assert!(
        seen.contains("compiling plugins [") && seen.contains(&format!("/{total} (")),
        "no progress bar on the terminal:\n{seen}"
    );
}
