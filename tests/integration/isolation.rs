//! A guest is contained: it sees nothing it was not granted, and breaking a
//! limit ends that instance alone.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasmvisor::config::{DirGrant, PluginConfig};
use wasmvisor::{CallError, ExitReason, StartError};
use wasmvisor_tests::PROBER;

fn is_io_error(v: &Value) -> bool {
    v["error"] == "io" && v["message"].as_str().is_some_and(|m| !m.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_guest_has_no_files_environment_arguments_or_network() {
    let (host, dir) = host_with_extra(&[("prober", PROBER)], |_| {}).await;
    start_ok(&host, "p", "prober", json!(null)).await;
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "do not read").unwrap();
    for path in [secret.to_str().unwrap(), "/etc/passwd", "secret.txt", "."] {
        let got = call_ok(&host, "p", json!({"read_file": path})).await;
        assert!(is_io_error(&got), "{path}: {got}");
    }
    let got = call_ok(
        &host,
        "p",
        json!({"write_file": {"path": "/tmp/escaped", "text": "x"}}),
    )
    .await;
    assert!(is_io_error(&got), "{got}");
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    // SAFETY-irrelevant: reading the host's own environment in a test.
    assert!(std::env::vars().count() > 0);
    assert_eq!(call_ok(&host, "p", json!("env")).await, json!({}));
    assert_eq!(call_ok(&host, "p", json!("args")).await, json!([]));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = call_ok(&host, "p", json!({"connect": addr})).await;
    assert!(is_io_error(&got), "{got}");
    assert_eq!(
        host.child("p").unwrap().restarts,
        0,
        "refusals are errors, not traps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_in_the_plugin_config_open_exactly_what_they_name() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("hello.txt"), "hi from the host").unwrap();
    let (ro, rw) = (shared.path().join("ro"), shared.path().join("rw"));
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    std::fs::write(ro.join("note.txt"), "read only").unwrap();
    let (host, _dir) = host_with_extra(&[("prober", PROBER)], |c| {
        let mut p = PluginConfig::default();
        p.env.insert("MODE".into(), "test".into());
        p.dirs.push(DirGrant {
            host: ro.clone(),
            guest: "/ro".into(),
            writable: false,
        });
        p.dirs.push(DirGrant {
            host: rw.clone(),
            guest: "/rw".into(),
            writable: true,
        });
        c.plugins.insert("prober".into(), p);
    })
    .await;
    start_ok(&host, "p", "prober", json!(null)).await;
    assert_eq!(
        call_ok(&host, "p", json!("env")).await,
        json!({"MODE": "test"})
    );
    assert_eq!(
        call_ok(&host, "p", json!({"read_file": "/ro/note.txt"})).await,
        json!("read only")
    );
    let denied = call_ok(
        &host,
        "p",
        json!({"write_file": {"path": "/ro/new.txt", "text": "x"}}),
    )
    .await;
    assert!(is_io_error(&denied), "{denied}");
    assert!(!ro.join("new.txt").exists());
    let ok = call_ok(
        &host,
        "p",
        json!({"write_file": {"path": "/rw/new.txt", "text": "written"}}),
    )
    .await;
    assert_eq!(ok, json!("ok"));
    assert_eq!(
        std::fs::read_to_string(rw.join("new.txt")).unwrap(),
        "written"
    );
    // Outside the grants, and through `..`, nothing.
    for path in [
        "/rw/../hello.txt",
        "/hello.txt",
        shared.path().join("hello.txt").to_str().unwrap(),
    ] {
        let got = call_ok(&host, "p", json!({"read_file": path})).await;
        assert!(is_io_error(&got), "{path}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_over_its_memory_cap_is_killed_alone() {
    let (host, _dir) = host_with_chaos(PluginConfig {
        memory_mb: 16,
        ..Default::default()
    })
    .await;
    start_ok(&host, "sibling", "chaos", json!(null)).await;
    call_ok(&host, "sibling", json!({"add": 5})).await;
    start_ok(&host, "hog", "chaos", json!({"h": 1})).await;
    assert_eq!(
        call_ok(&host, "hog", json!({"alloc_mb": 4})).await,
        json!(4)
    );
    let err = call(&host, "hog", json!({"alloc_mb": 32}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Killed(m) if m.contains("memory limit of 16 MiB")),
        "{err:?}"
    );
    let info = wait_child(&host, "hog", "restart", |c| c.restarts == 1).await;
    assert!(matches!(info.last_exit, Some(ExitReason::Killed(_))));
    assert_eq!(
        call_ok(&host, "hog", json!("state")).await["args"],
        json!({"h": 1})
    );
    assert_eq!(
        call_ok(&host, "sibling", json!("state")).await["count"],
        json!(5)
    );
    assert_eq!(host.child("sibling").unwrap().restarts, 0);
}

/// The guest's heap (wasi-libc's allocator, which Rust's allocator uses
/// too) serves Rust and C alike: wasi-libc's own allocations and the C
/// functions go to the same heap, and the heap grows past the initial memory
/// when it must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_heap_serves_rust_and_c_and_grows_past_the_initial_memory() {
    let (host, _dir) = host_with_extra(&[("prober", PROBER)], |_| {}).await;
    start_ok(&host, "p", "prober", json!(null)).await;
    for round in 0..3 {
        assert_eq!(
            call_ok(&host, "p", json!({"heap": 3})).await,
            json!({"big": true, "churn": true, "kept": 2500, "c": true}),
            "round {round}"
        );
    }
    // wasi-libc allocates for its descriptor table and environment.
    let got = call_ok(&host, "p", json!({"read_file": "/etc/passwd"})).await;
    assert!(is_io_error(&got), "{got}");
    assert_eq!(call_ok(&host, "p", json!("env")).await, json!({}));
    assert_eq!(host.child("p").unwrap().restarts, 0);
}

/// An instance traps on every byte past the end of its memory, and one
/// that grows sees its new pages. Round 1 runs on the pool slot round 0's
/// instance grew, which the pool must shrink back to the new instance's
/// smaller memory. `peek` is checked against the memory's size by compiled
/// code; `peek_ahead` reads 60,000 bytes further through the load's offset,
/// which wasmtime leaves to the inaccessible pages past the end of memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_past_its_end_traps_even_on_a_slot_a_larger_memory_used() {
    let (host, _dir) = host_with_extra(&[("prober", PROBER)], |_| {}).await;
    start_ok(&host, "p", "prober", json!(null)).await;
    // Round 0 reads past a fresh instance's memory, round 1 past that of an
    // instance on the slot round 0's grew.
    for round in 0..2 {
        let size = call_ok(&host, "p", json!("memory_size")).await;
        let size = size.as_u64().unwrap();
        assert_eq!(size < 4096 * 1024, round == 0, "round {round}: {size}");
        assert_eq!(
            call_ok(&host, "p", json!({"peek": size - 1})).await,
            json!(0),
            "round {round}"
        );
        for past_the_end in [json!({"peek": size}), json!({"peek_ahead": size - 1})] {
            let restarts = host.child("p").unwrap().restarts;
            let msg = past_the_end.to_string().into_bytes();
            match host.call("p", msg, LIMIT).await {
                Err(CallError::Trapped(why)) => {
                    assert!(why.contains("out of bounds"), "{past_the_end}: {why}")
                }
                other => panic!("round {round}: {past_the_end} gave {other:?}"),
            }
            wait_child(&host, "p", "the restart", |c| c.restarts == restarts + 1).await;
        }
        // The restarted instance grows its memory past 4 MiB.
        assert_eq!(
            call_ok(&host, "p", json!({"heap": 3})).await,
            json!({"big": true, "churn": true, "kept": 2500, "c": true}),
            "round {round}"
        );
        let grown = call_ok(&host, "p", json!("memory_size")).await;
        assert!(
            grown.as_u64().unwrap() > 4096 * 1024,
            "round {round}: {grown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spinning_guests_do_not_starve_the_others() {
    let (host, _dir) = host_with_chaos(PluginConfig {
        cpu_ms: 600_000,
        ..Default::default()
    })
    .await;
    start_ok(&host, "quick", "chaos", json!(null)).await;
    let mut spinners = Vec::new();
    for i in 0..2 {
        let id = format!("spin{i}");
        start_ok(&host, &id, "chaos", json!(null)).await;
        let msg = serde_json::to_vec(&json!({"spin": 1_000_000_000_000u64})).unwrap();
        let caller = host.clone();
        // Begun here, not on the spawned task: a kill must not overtake
        // the call (the restarted instance would then spin until the
        // timeout), and with both workers busy that task may wait to run.
        let spin =
            spawn_begun(async move { caller.call(&id, msg, Duration::from_secs(120)).await }).await;
        wait_child(&host, &format!("spin{i}"), "the spin to be taken", |c| {
            c.queued == 0
        })
        .await;
        spinners.push(spin);
    }
    // Both workers are busy with a guest that never returns, yet calls to
    // another child are served between their ticks.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        assert_eq!(
            call_ok(&host, "quick", json!({"add": 1})).await,
            json!(i + 1)
        );
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest call while two guests spin: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(100),
        "a call took {slowest:?}"
    );
    for i in 0..2 {
        host.kill_child(&format!("spin{i}"), "done").unwrap();
    }
    for s in spinners {
        let result = tokio::time::timeout(LIMIT, s)
            .await
            .expect("the kill stops the spin");
        assert_eq!(result.unwrap(), Err(CallError::Killed("done".into())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_never_returns_is_cut_off_at_the_deadline() {
    let (host, _dir) = host_with_extra(&[("prober", PROBER)], |c| {
        c.plugins.insert(
            "prober".into(),
            PluginConfig {
                cpu_ms: 50,
                ..Default::default()
            },
        );
    })
    .await;
    let t = Instant::now();
    let err = host
        .start_child(spec("stuck", "prober", json!({"init": "loop"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::InitFailed(m) if m.contains("CPU deadline")),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    start_ok(&host, "fine", "prober", json!(null)).await;
    assert_eq!(call_ok(&host, "fine", json!("ping")).await, json!("pong"));
}
