//! The Python and JavaScript example plugins (`plugins/python`,
//! `plugins/js`), built from source by their own build scripts, go through
//! the same behaviour checks as the Rust guests: calls, casts and their
//! order, trap and restart with the init args, hot reload with the state
//! carried over, timers and topics, and the memory cap and CPU deadline.
//! They are too large for a pool slot, so they also show that a default
//! host runs them on demand.
//!
//! Every host here shares one compile cache (in cargo's target tmp dir), and
//! the first test to need it fills it, so each component is compiled once
//! per run (or not at all when an earlier run left it).

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use wasmvisor::config::PluginConfig;
use wasmvisor::{CallError, Config, Host, Restart};
use wasmvisor_tests::{CHAOS, CHAOS_JS, CHAOS_JS_V2, CHAOS_PY, CHAOS_PY_V2};

/// The shared compile cache, filled with both plugins by the first caller.
async fn cache_dir() -> PathBuf {
    static CACHE: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    CACHE
        .get_or_init(|| async {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("language-plugins-cache");
            let (host, _tmp) = host_on(dir.clone(), &[CHAOS_PY, CHAOS_JS], |_| {}).await;
            for plugin in host.plugins() {
                assert!(plugin.last_error.is_none(), "{plugin:?}");
            }
            host.shutdown().await;
            dir
        })
        .await
        .clone()
}

/// A host with the compile cache `cache` and the plugins at `paths` (named
/// by their file name), configured by `edit`.
async fn host_on(
    cache: PathBuf,
    paths: &[&str],
    edit: impl FnOnce(&mut Config),
) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    for path in paths {
        let name = std::path::Path::new(path).file_name().expect("a file name");
        std::fs::copy(path, plugins.join(name)).expect("copy a plugin");
    }
    let mut config = Config {
        plugins_dir: plugins,
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.cache.dir = Some(cache);
    config.pool.max_instances = 100;
    edit(&mut config);
    let host = Host::new(config).await.expect("the host starts");
    (host, dir)
}

/// A host with the shared cache and the plugin at `path`.
async fn host_for(path: &str, edit: impl FnOnce(&mut Config)) -> (Host, tempfile::TempDir) {
    host_on(cache_dir().await, &[path], edit).await
}

fn limits(edit: impl FnOnce(&mut PluginConfig)) -> PluginConfig {
    let mut limits = PluginConfig::default();
    edit(&mut limits);
    limits
}

macro_rules! language_tests {
    ($language:ident, $plugin:literal, $wasm:expr, $wasm_v2:expr) => {
        mod $language {
            use super::*;

            const PLUGIN: &str = $plugin;

            #[tokio::test]
            async fn loads_with_no_config_and_runs_on_demand() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                let info = host.plugins().into_iter().find(|p| p.name == PLUGIN);
                let info = info.expect("the plugin is listed");
                assert!(info.last_error.is_none(), "{info:?}");
                assert_eq!(info.allocation, Some("on_demand"), "{info:?}");
                assert_eq!(info.cached, Some(true), "the shared cache had it");
                start_ok(&host, "a", PLUGIN, json!(null)).await;
                assert_eq!(metric(&host, "wasmvisor_on_demand_instances"), 1);
                assert_eq!(metric(&host, "wasmvisor_instances"), 0);
                host.stop_child("a").await.expect("stop");
                assert_eq!(metric(&host, "wasmvisor_on_demand_instances"), 0);
            }

            #[tokio::test]
            async fn calls_and_casts_are_served_in_order() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                let args = json!({"name": "first", "n": [1, 2]});
                start_ok(&host, "a", PLUGIN, args.clone()).await;
                assert_eq!(
                    call_ok(&host, "a", json!("state")).await,
                    json!({"args": args, "count": 0})
                );
                assert_eq!(call_ok(&host, "a", json!({"add": 5})).await, json!(5));
                for _ in 0..50 {
                    cast(&host, "a", json!("bump")).expect("cast");
                }
                cast(&host, "a", json!({"add": 10})).expect("cast");
                // The mailbox is FIFO: the call comes after every cast.
                assert_eq!(
                    call_ok(&host, "a", json!("state")).await["count"],
                    json!(65)
                );
                assert_eq!(call_ok(&host, "a", json!("version")).await, json!("1"));
                let bad = call_ok(&host, "a", json!("no such message")).await;
                assert_eq!(bad["error"], json!("bad_message"), "{bad}");
            }

            #[tokio::test]
            async fn a_trap_restarts_it_with_its_args() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                let args = json!({"keep": "me"});
                start_ok(&host, "a", PLUGIN, args.clone()).await;
                call_ok(&host, "a", json!({"add": 3})).await;
                match call(&host, "a", json!("crash")).await {
                    Err(CallError::Trapped(_)) => {}
                    other => panic!("crash answered {other:?}"),
                }
                wait_child(&host, "a", "the restart", |c| c.restarts == 1).await;
                assert_eq!(
                    call_ok(&host, "a", json!("state")).await,
                    json!({"args": args, "count": 0})
                );
                // A cast that traps restarts it too.
                cast(&host, "a", json!("crash")).expect("cast");
                wait_child(&host, "a", "the second restart", |c| c.restarts == 2).await;
                assert_eq!(call_ok(&host, "a", json!("state")).await["args"], args);
            }

            #[tokio::test]
            async fn init_can_refuse_to_start() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                let err = host
                    .start_child(spec("a", PLUGIN, json!({"fail_init": "not today"})))
                    .await
                    .expect_err("init refused");
                assert!(
                    matches!(&err, wasmvisor::StartError::InitFailed(why) if why.contains("not today")),
                    "{err:?}"
                );
                assert!(host.child("a").is_none());
            }

            #[tokio::test]
            async fn a_hibernated_child_wakes_with_its_state() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                start_ok(&host, "a", PLUGIN, json!({"k": 1})).await;
                call_ok(&host, "a", json!({"add": 4})).await;
                host.hibernate_child("a").await.expect("hibernate");
                assert_eq!(metric(&host, "wasmvisor_on_demand_instances"), 0);
                assert_eq!(
                    call_ok(&host, "a", json!("state")).await,
                    json!({"args": {"k": 1}, "count": 4})
                );
                assert_eq!(metric(&host, "wasmvisor_on_demand_instances"), 1);
            }

            #[tokio::test]
            async fn stop_ends_a_temporary_child_normally() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                let spec = spec_with("a", PLUGIN, json!(null), Restart::Temporary);
                host.start_child(spec).await.expect("start");
                assert_eq!(call_ok(&host, "a", json!("stop")).await, json!("stopping"));
                wait_gone(&host, "a").await;
            }

            #[tokio::test]
            async fn a_hot_reload_carries_the_state_over() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                let args = json!({"subscribe": ["news"]});
                start_ok(&host, "a", PLUGIN, args.clone()).await;
                start_ok(&host, "b", PLUGIN, json!(null)).await;
                call_ok(&host, "a", json!({"add": 7})).await;
                let v2 = std::fs::read($wasm_v2).expect("the second version");
                reload(&host, PLUGIN, v2, 2).await;
                assert_eq!(call_ok(&host, "a", json!("version")).await, json!("2"));
                assert_eq!(
                    call_ok(&host, "a", json!("state")).await,
                    json!({"args": args, "count": 7})
                );
                // The subscription made by the first version's init goes on.
                host.publish("news", serde_json::to_vec(&json!("after")).expect("JSON"));
                wait_for_info(&host, "a", "the event", |i| {
                    i["event"] == json!({"topic": "news", "msg": "after"})
                })
                .await;
                assert_eq!(call_ok(&host, "b", json!("version")).await, json!("2"));
            }

            #[tokio::test]
            async fn timers_and_topics_reach_it() {
                let (host, _dir) = host_for($wasm, |_| {}).await;
                let args = json!({"subscribe": ["t"], "timer": {"ms": 5, "msg": "at init"}});
                start_ok(&host, "a", PLUGIN, args).await;
                start_ok(&host, "b", PLUGIN, json!(null)).await;
                wait_for_info(&host, "a", "the init timer", |i| {
                    i == &json!({"timer": "at init"})
                })
                .await;
                let id = call_ok(&host, "a", json!({"send_after": {"ms": 1, "msg": {"n": 1}}}))
                    .await;
                assert!(id.is_u64(), "a timer id: {id}");
                wait_for_info(&host, "a", "the timer", |i| i == &json!({"timer": {"n": 1}}))
                    .await;
                // b publishes, a (subscribed at init) hears it; so does a
                // topic subscribed with a call.
                call_ok(&host, "b", json!({"publish": {"topic": "t", "msg": 1}})).await;
                wait_for_info(&host, "a", "the event", |i| {
                    i == &json!({"event": {"topic": "t", "msg": 1}})
                })
                .await;
                assert_eq!(call_ok(&host, "b", json!({"subscribe": "u"})).await, json!("ok"));
                call_ok(&host, "a", json!({"publish": {"topic": "u", "msg": "hi"}})).await;
                wait_for_info(&host, "b", "the event on u", |i| {
                    i == &json!({"event": {"topic": "u", "msg": "hi"}})
                })
                .await;
            }

            #[tokio::test]
            async fn the_memory_cap_holds() {
                let (host, _dir) = host_for($wasm, |c| {
                    c.plugins
                        .insert(PLUGIN.into(), limits(|l| l.memory_mb = 40));
                })
                .await;
                start_ok(&host, "a", PLUGIN, json!(null)).await;
                assert_eq!(call_ok(&host, "a", json!({"alloc_mb": 1})).await, json!(1));
                match call(&host, "a", json!({"alloc_mb": 64})).await {
                    Err(CallError::Killed(why)) => {
                        assert!(why.contains("memory limit of 40 MiB"), "{why}")
                    }
                    other => panic!("a 64 MiB allocation answered {other:?}"),
                }
                wait_child(&host, "a", "the restart", |c| c.restarts == 1).await;
                assert_eq!(call_ok(&host, "a", json!("state")).await["count"], json!(0));
            }

            #[tokio::test]
            async fn the_cpu_deadline_holds() {
                let (host, _dir) = host_for($wasm, |c| {
                    c.plugins.insert(PLUGIN.into(), limits(|l| l.cpu_ms = 100));
                })
                .await;
                start_ok(&host, "a", PLUGIN, json!(null)).await;
                match call(&host, "a", json!({"spin": 10_000_000_000u64})).await {
                    Err(CallError::Killed(why)) => {
                        assert!(why.contains("CPU deadline of 100 ms"), "{why}")
                    }
                    other => panic!("an endless loop answered {other:?}"),
                }
                wait_child(&host, "a", "the restart", |c| c.restarts == 1).await;
                assert_eq!(call_ok(&host, "a", json!({"spin": 3})).await, json!(14));
            }

            #[tokio::test]
            async fn a_memory_cap_below_its_initial_memory_is_refused_naming_the_key() {
                let (host, _dir) = host_for($wasm, |c| {
                    c.plugins.insert(PLUGIN.into(), limits(|l| l.memory_mb = 2));
                })
                .await;
                let info = host.plugins().into_iter().find(|p| p.name == PLUGIN);
                let error = info.and_then(|p| p.last_error).expect("refused");
                assert!(
                    error.contains(&format!("raise [plugins.{PLUGIN}] memory_mb")),
                    "{error}"
                );
                assert!(!error.contains("not a valid wasm component"), "{error}");
            }

            #[tokio::test]
            async fn the_on_demand_cap_refuses_one_more_instance_naming_the_key() {
                let (host, _dir) = host_for($wasm, |c| c.pool.on_demand_instances = 1).await;
                start_ok(&host, "a", PLUGIN, json!(null)).await;
                let err = host
                    .start_child(spec("b", PLUGIN, json!(null)))
                    .await
                    .expect_err("no room for b");
                let text = err.to_string();
                assert!(text.contains("[pool] on_demand_instances"), "{text}");
                host.stop_child("a").await.expect("stop");
                start_ok(&host, "b", PLUGIN, json!(null)).await;
            }
        }
    };
}

language_tests!(python, "chaos_py", CHAOS_PY, CHAOS_PY_V2);
language_tests!(javascript, "chaos_js", CHAOS_JS, CHAOS_JS_V2);

/// A Rust guest still takes a pool slot next to them, and a host compiles
/// and caches each large plugin once: a second host loads both from the
/// shared cache.
#[tokio::test]
async fn rust_guests_stay_in_the_pool_and_a_second_host_compiles_nothing() {
    let (host, _dir) = host_on(cache_dir().await, &[CHAOS, CHAOS_PY, CHAOS_JS], |_| {}).await;
    let plugins: Vec<(String, Option<&str>, Option<bool>)> = host
        .plugins()
        .into_iter()
        .map(|p| (p.name, p.allocation, p.cached))
        .collect();
    let allocation = |name: &str| {
        plugins
            .iter()
            .find(|p| p.0 == name)
            .map(|p| (p.1, p.2))
            .unwrap_or_else(|| panic!("{name} in {plugins:?}"))
    };
    assert_eq!(allocation("chaos").0, Some("pool"));
    assert_eq!(allocation("chaos_py"), (Some("on_demand"), Some(true)));
    assert_eq!(allocation("chaos_js"), (Some("on_demand"), Some(true)));
    start_ok(&host, "rust", "chaos", json!(null)).await;
    start_ok(&host, "py", "chaos_py", json!(null)).await;
    start_ok(&host, "js", "chaos_js", json!(null)).await;
    // They call each other like any children.
    call_ok(&host, "py", json!({"subscribe": "all"})).await;
    call_ok(&host, "js", json!({"subscribe": "all"})).await;
    let sent = call_ok(
        &host,
        "rust",
        json!({"publish": {"topic": "all", "msg": 3}}),
    )
    .await;
    assert_eq!(sent, json!("ok"));
    for id in ["py", "js"] {
        wait_for_info(&host, id, "the event", |i| {
            i == &json!({"event": {"topic": "all", "msg": 3}})
        })
        .await;
    }
    let _: Value = call_ok(
        &host,
        "rust",
        json!({"call": {"to": "py", "msg": "version"}}),
    )
    .await;
    assert_eq!(metric(&host, "wasmvisor_instances"), 1);
    assert_eq!(metric(&host, "wasmvisor_on_demand_instances"), 2);
}

/// A hot reload may move a plugin between the engines: children of a pool
/// plugin continue on demand when its new version is a Python component,
/// with their state (the Python chaos reads the Rust one's snapshot).
#[tokio::test]
async fn a_reload_moves_children_from_the_pool_to_on_demand_with_their_state() {
    let cache = cache_dir().await;
    let (host, _dir) = host_on(cache, &[], |_| {}).await;
    let rust = std::fs::read(CHAOS).expect("chaos.wasm");
    match host.apply_bytes("shifty", rust).await {
        Ok(wasmvisor::PluginChange::Loaded(_)) => {}
        other => panic!("shifty was not loaded: {other:?}"),
    }
    start_ok(&host, "a", "shifty", json!({"from": "rust"})).await;
    call_ok(&host, "a", json!({"add": 9})).await;
    assert_eq!(metric(&host, "wasmvisor_instances"), 1);
    let python = std::fs::read(CHAOS_PY).expect("chaos_py.wasm");
    reload(&host, "shifty", python, 1).await;
    let info = host.plugins().into_iter().find(|p| p.name == "shifty");
    assert_eq!(info.and_then(|p| p.allocation), Some("on_demand"));
    assert_eq!(call_ok(&host, "a", json!("version")).await, json!("1"));
    assert_eq!(
        call_ok(&host, "a", json!("state")).await,
        json!({"args": {"from": "rust"}, "count": 9})
    );
    assert_eq!(metric(&host, "wasmvisor_instances"), 0);
    assert_eq!(metric(&host, "wasmvisor_on_demand_instances"), 1);
}
