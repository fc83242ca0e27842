//! Hot reload through the watched plugins folder: rolling upgrade with state
//! carried over, the canary rollback, bad files, removal and return, and the
//! compile cache across host restarts.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::broadcast;
use wasmvisor::config::OnExhausted;
use wasmvisor::{CallError, Event, Host, PluginChange, Status};
use wasmvisor_tests::{CHAOS, CHAOS_BAD_RESTORE, CHAOS_V2, TRACKER, install};

fn plugins(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("plugins")
}

/// Waits for the first event that `pick` maps to `Some`.
async fn next_event<T>(
    events: &mut broadcast::Receiver<Arc<Event>>,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => {
                if let Some(v) = pick(&e) {
                    return v;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn reloaded(
    events: &mut broadcast::Receiver<Arc<Event>>,
) -> (String, usize, Vec<(String, String)>, f64) {
    next_event(events, "plugin_reloaded", |e| match e {
        Event::PluginReloaded {
            version,
            instances,
            failed,
            ms,
            ..
        } => Some((version.clone(), *instances, failed.clone(), *ms)),
        _ => None,
    })
    .await
}

async fn reload_failed(events: &mut broadcast::Receiver<Arc<Event>>) -> String {
    next_event(events, "reload_failed", |e| match e {
        Event::ReloadFailed { error, .. } => Some(error.clone()),
        _ => None,
    })
    .await
}

async fn start_counters(host: &Host, n: usize) {
    for i in 0..n {
        start_ok(host, &format!("c{i}"), "chaos", json!({"i": i})).await;
        call_ok(host, &format!("c{i}"), json!({"add": i})).await;
    }
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_moves_to_the_new_version_with_its_count() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_counters(&host, 20).await;
    let old = host.child("c0").unwrap().version.unwrap();
    let mut events = host.events();
    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    let (version, instances, failed, _) = reloaded(&mut events).await;
    assert_eq!((instances, failed.len()), (20, 0));
    assert_ne!(version, old);
    for i in 0..20 {
        let id = format!("c{i}");
        assert_eq!(
            call_ok(&host, &id, json!("version")).await,
            json!("0.2.0"),
            "{id}"
        );
        assert_eq!(
            call_ok(&host, &id, json!("state")).await,
            json!({"args": {"i": i}, "count": i})
        );
        let info = host.child(&id).unwrap();
        assert_eq!(
            (info.version.as_deref(), info.restarts),
            (Some(version.as_str()), 0)
        );
    }
    let plugin = host
        .plugins()
        .into_iter()
        .find(|p| p.name == "chaos")
        .unwrap();
    assert_eq!(
        (plugin.version, plugin.instances, plugin.last_error),
        (Some(version), 20, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_casts_through_a_reload_lose_nothing_acknowledged() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_ok(&host, "target", "chaos", json!(null)).await;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let caster = tokio::spawn({
        let (host, acked, stop) = (host.clone(), acked.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                match cast(&host, "target", json!("bump")) {
                    Ok(()) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(CallError::MailboxFull) => {}
                    Err(e) => panic!("cast failed: {e}"),
                }
                tokio::task::yield_now().await;
            }
        }
    });
    let mut events = host.events();
    wait_for("casts to flow", LIMIT, || {
        (acked.load(Ordering::Relaxed) > 1_000).then_some(())
    })
    .await;
    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    reloaded(&mut events).await;
    let after = acked.load(Ordering::Relaxed);
    wait_for("more casts after the reload", LIMIT, || {
        (acked.load(Ordering::Relaxed) > after + 1_000).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    caster.await.unwrap();
    // The caster may have left the mailbox full, which refuses a call
    // (`mailbox_full`) until the child makes room. The mailbox is FIFO: the
    // call is answered after every acked cast.
    let deadline = Instant::now() + LIMIT;
    let state = loop {
        match call(&host, "target", json!("state")).await {
            Err(CallError::MailboxFull) if Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            other => break other.expect("the state call is answered"),
        }
    };
    assert_eq!(state["count"], json!(acked.load(Ordering::Relaxed)));
    assert_eq!(
        call_ok(&host, "target", json!("version")).await,
        json!("0.2.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_rolls_back_and_touches_nothing_else() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_counters(&host, 5).await;
    let before: Vec<_> = (0..5)
        .map(|i| host.child(&format!("c{i}")).unwrap())
        .collect();
    let mut events = host.events();
    install(&plugins(&dir), "chaos", &read(CHAOS_BAD_RESTORE));
    let error = reload_failed(&mut events).await;
    assert!(
        error.contains("canary") && error.contains("restore"),
        "{error}"
    );
    for (i, info) in before.iter().enumerate() {
        let id = format!("c{i}");
        assert_eq!(call_ok(&host, &id, json!("version")).await, json!("0.1.0"));
        assert_eq!(call_ok(&host, &id, json!("state")).await["count"], json!(i));
        let now = host.child(&id).unwrap();
        assert_eq!(
            (now.version, now.restarts),
            (info.version.clone(), 0),
            "{id}"
        );
    }
    let plugin = host
        .plugins()
        .into_iter()
        .find(|p| p.name == "chaos")
        .unwrap();
    assert!(plugin.last_error.unwrap().contains("canary"));
    // A good version afterwards goes through and clears the error.
    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    assert_eq!(reloaded(&mut events).await.1, 5);
    let plugin = host
        .plugins()
        .into_iter()
        .find(|p| p.name == "chaos")
        .unwrap();
    assert_eq!(plugin.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_change_nothing_and_report_why() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_counters(&host, 3).await;
    let good = read(CHAOS);
    let mut events = host.events();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            "not a valid wasm component",
        ),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "not a valid wasm component",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core wasm module",
        ),
        ("empty", Vec::new(), "empty"),
    ];
    for (what, bytes, expect) in cases {
        install(&plugins(&dir), "chaos", &bytes);
        let error = reload_failed(&mut events).await;
        assert!(error.contains(expect), "{what}: {error}");
        for i in 0..3 {
            let id = format!("c{i}");
            assert_eq!(
                call_ok(&host, &id, json!("state")).await["count"],
                json!(i),
                "{what}"
            );
            assert_eq!(host.child(&id).unwrap().restarts, 0, "{what}");
        }
        let plugin = host
            .plugins()
            .into_iter()
            .find(|p| p.name == "chaos")
            .unwrap();
        assert!(plugin.last_error.unwrap().contains(expect), "{what}");
    }
    // New children still get the last good version.
    start_ok(&host, "fresh", "chaos", json!(null)).await;
    assert_eq!(
        call_ok(&host, "fresh", json!("version")).await,
        json!("0.1.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_is_a_no_op() {
    let (host, _dir) = host().await;
    start_counters(&host, 2).await;
    let change = host.apply_bytes("chaos", read(CHAOS)).await.unwrap();
    assert!(matches!(change, PluginChange::Unchanged), "{change:?}");
    assert_eq!(
        call_ok(&host, "c1", json!("state")).await["count"],
        json!(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_files_and_other_names_are_ignored_until_renamed_into_place() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_counters(&host, 1).await;
    let mut events = host.events();
    // An editor or a copy tool writing through a temp file.
    let tmp = plugins(&dir).join("chaos.wasm.tmp");
    std::fs::write(&tmp, b"half written").unwrap();
    std::fs::write(plugins(&dir).join(".chaos.wasm.swp"), b"editor state").unwrap();
    std::fs::write(plugins(&dir).join("README.txt"), b"not a plugin").unwrap();
    std::fs::write(&tmp, read(CHAOS_V2)).unwrap();
    std::fs::rename(&tmp, plugins(&dir).join("chaos.wasm")).unwrap();
    // The first event after those writes is the reload: none of them was
    // taken for a plugin.
    let first = next_event(&mut events, "a plugin event", |e| match e {
        Event::PluginReloaded { .. } | Event::ReloadFailed { .. } | Event::PluginLoaded { .. } => {
            Some(e.kind())
        }
        _ => None,
    })
    .await;
    assert_eq!(first, "plugin_reloaded");
    assert_eq!(call_ok(&host, "c0", json!("version")).await, json!("0.2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_is_applied_once_although_the_debouncer_reports_it_again() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_counters(&host, 1).await;
    let mut events = host.events();
    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    // A file written in place (no rename) goes through the debouncer only,
    // so it is reported after the settled report of the rename above.
    std::fs::write(plugins(&dir).join("late.wasm"), read(TRACKER)).unwrap();
    let mut seen = Vec::new();
    next_event(&mut events, "late to load", |e| {
        match e {
            Event::PluginReloaded { plugin, .. } | Event::ReloadFailed { plugin, .. } => {
                seen.push(format!("{} {plugin}", e.kind()));
            }
            _ => {}
        }
        matches!(e, Event::PluginLoaded { plugin, .. } if plugin == "late").then_some(())
    })
    .await;
    assert_eq!(seen, ["plugin_reloaded chaos"]);
    assert_eq!(call_ok(&host, "c0", json!("version")).await, json!("0.2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_plugin_waits_and_comes_back_with_its_state() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_counters(&host, 3).await;
    start_ok(&host, "watcher", "tracker", json!({})).await;
    let mut events = host.events();
    std::fs::remove_file(plugins(&dir).join("chaos.wasm")).unwrap();
    let waiting = next_event(&mut events, "plugin_removed", |e| match e {
        Event::PluginRemoved { instances, .. } => Some(*instances),
        _ => None,
    })
    .await;
    assert_eq!(waiting, 3);
    for i in 0..3 {
        let id = format!("c{i}");
        // chaos has a snapshot, so its children hibernate into `waiting`
        // rather than exit: no exit is recorded and the state is kept.
        let info = host.child(&id).unwrap();
        assert_eq!(
            (info.status, info.last_exit.clone()),
            (Status::Waiting, None)
        );
        let err = call(&host, &id, json!("state")).await.unwrap_err();
        assert!(
            matches!(&err, CallError::Failed(m) if m.contains("waiting")),
            "{err:?}"
        );
    }
    let err = host
        .start_child(spec("new", "chaos", json!(null)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, wasmvisor::StartError::UnknownPlugin(_)),
        "{err:?}"
    );
    assert_eq!(
        call_ok(&host, "watcher", json!("state")).await["args"],
        json!({})
    );

    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    next_event(&mut events, "plugin_loaded", |e| {
        matches!(e, Event::PluginLoaded { .. }).then_some(())
    })
    .await;
    for i in 0..3 {
        let id = format!("c{i}");
        wait_child(&host, &id, "running again", |c| c.status == Status::Running).await;
        assert_eq!(
            call_ok(&host, &id, json!("state")).await,
            json!({"args": {"i": i}, "count": i})
        );
        assert_eq!(call_ok(&host, &id, json!("version")).await, json!("0.2.0"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_revives_failed_children_on_the_new_version() {
    let (host, dir) = host_with(|c| {
        c.supervisor.max_restarts = 0;
        c.supervisor.on_exhausted = OnExhausted::Fail;
    })
    .await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_ok(&host, "broken", "chaos", json!({"k": 1})).await;
    let _ = call(&host, "broken", json!("crash")).await;
    wait_child(&host, "broken", "failed", |c| c.status == Status::Failed).await;
    let mut events = host.events();
    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    reloaded(&mut events).await;
    wait_child(&host, "broken", "revived", |c| c.status == Status::Running).await;
    assert_eq!(
        call_ok(&host, "broken", json!("version")).await,
        json!("0.2.0")
    );
    assert_eq!(
        call_ok(&host, "broken", json!("state")).await["args"],
        json!({"k": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_timers_survive_a_reload() {
    let (host, dir) = host().await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    start_ok(&host, "s", "chaos", json!({"subscribe": ["news"]})).await;
    call_ok(&host, "s", json!({"subscribe": "extra"})).await;
    // Long enough to fire after the reload even on a loaded machine: a
    // timer that fired before it would reach the old version, whose infos
    // the new one does not inherit (300 ms was too short when the whole
    // suite ran on two busy cores).
    call_ok(
        &host,
        "s",
        json!({"send_after": {"ms": 2000, "msg": "tick"}}),
    )
    .await;
    let mut events = host.events();
    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    reloaded(&mut events).await;
    host.publish("news", b"1".to_vec());
    host.publish("extra", b"2".to_vec());
    let got = wait_for_info(&host, "s", "the timer", |i| i == &json!({"timer": "tick"})).await;
    let events: Vec<&Value> = got.iter().filter(|i| i.get("event").is_some()).collect();
    assert_eq!(events.len(), 2, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_restart_loads_unchanged_plugins_from_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &tempfile::TempDir| {
        let mut c = wasmvisor::Config {
            plugins_dir: dir.path().join("plugins"),
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        c.pool.max_instances = 100;
        c
    };
    wasmvisor_tests::copy_plugins(&dir.path().join("plugins"));
    let first = Host::new(config(&dir)).await.unwrap();
    assert!(first.plugins().iter().all(|p| p.cached == Some(false)));
    // Artifacts are written off the serving path, shortly after loading.
    wait_for("an artifact per plugin in the cache", LIMIT, || {
        let n = std::fs::read_dir(dir.path().join("data/cache"))
            .ok()?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            })
            .count();
        (n == wasmvisor_tests::ALL_PLUGINS.len()).then_some(())
    })
    .await;
    drop(first);
    let t = Instant::now();
    let second = Host::new(config(&dir)).await.unwrap();
    let took = t.elapsed();
    assert!(
        second.plugins().iter().all(|p| p.cached == Some(true)),
        "{:?}",
        second.plugins()
    );
    second
        .start_child(spec("c", "chaos", json!(null)))
        .await
        .unwrap();
    assert_eq!(call_ok(&second, "c", json!({"add": 2})).await, json!(2));
    eprintln!("host start with 3 cached plugins (test build): {took:?}");

    // A corrupt artifact is discarded and the plugin recompiled.
    second.shutdown().await;
    drop(second);
    for entry in std::fs::read_dir(dir.path().join("data/cache")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = Host::new(config(&dir)).await.unwrap();
    assert!(
        third
            .plugins()
            .iter()
            .all(|p| p.cached == Some(false) && p.version.is_some())
    );
}

/// Not a timed test: reloads a plugin under 1,000 running children and
/// prints how long it took (test build; the benchmark measures a release
/// build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_thousand_children() {
    let (host, dir) = host_with(|c| c.pool.max_instances = 1_200).await;
    let _watch = host.watch(&plugins(&dir)).unwrap();
    for i in 0..1_000 {
        start_ok(&host, &format!("r{i}"), "chaos", json!(null)).await;
    }
    let mut events = host.events();
    let t = Instant::now();
    install(&plugins(&dir), "chaos", &read(CHAOS_V2));
    let (version, instances, failed, ms) = reloaded(&mut events).await;
    let total = t.elapsed();
    assert_eq!((instances, failed.len()), (1_000, 0));
    for i in (0..1_000).step_by(97) {
        assert_eq!(
            host.child(&format!("r{i}")).unwrap().version,
            Some(version.clone())
        );
    }
    let compile_ms = host
        .plugins()
        .into_iter()
        .find(|p| p.name == "chaos")
        .and_then(|p| p.compile_ms)
        .unwrap_or_default();
    eprintln!(
        "reload of 1,000 children, test build: {total:?} from rename to done ({ms:.1} ms after the change was noticed, {compile_ms:.1} ms of it compiling)"
    );
}

/// The compile cache over `[cache] max_mb` loses the artifacts of versions
/// the host no longer runs, and keeps the current ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compile_cache_drops_replaced_versions_beyond_its_cap() {
    let (host, dir) = host_with(|c| c.cache.max_mb = 0).await;
    let cache = dir.path().join("data/cache");
    let chaos = std::fs::read(CHAOS).expect("chaos.wasm");
    let first = host
        .plugins()
        .into_iter()
        .find(|p| p.name == "chaos")
        .and_then(|p| p.version)
        .expect("chaos is loaded");
    reload(&host, "chaos", rebuilt(chaos.clone(), 1), 0).await;
    reload(&host, "chaos", rebuilt(chaos, 2), 0).await;
    let current: Vec<String> = host
        .plugins()
        .into_iter()
        .filter_map(|p| p.version)
        .collect();
    assert!(!current.contains(&first));
    let artifacts = || -> Vec<String> {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Stored and evicted off the serving path: wait for the outcome.
    let kept = wait_for("the cache to hold the current versions only", LIMIT, || {
        let now = artifacts();
        let only_current = now.len() == current.len()
            && now
                .iter()
                .all(|n| current.iter().any(|v| n.starts_with(v.as_str())));
        only_current.then_some(now)
    })
    .await;
    assert!(!kept.iter().any(|n| n.starts_with(&first)), "{kept:?}");
}
