//! Fault tests: a trap storm across thousands of children, and no leaks
//! across thousands of starts and stops.

mod common;

use common::process::RunningHost;
use common::*;
use hyper::Method;
use serde_json::json;
use wasmvisor::CallError;

fn cast_acked(host: &wasmvisor::Host, id: &str, msg: &serde_json::Value) {
    // A full mailbox is backpressure, not loss: retry until accepted.
    loop {
        match cast(host, id, msg.clone()) {
            Ok(()) => return,
            Err(CallError::MailboxFull) => std::thread::yield_now(),
            Err(e) => panic!("cast to {id}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_storm_loses_no_acknowledged_cast() {
    const N: usize = 5_000;
    let (host, _dir) = host_with(|c| {
        c.pool.max_instances = N as u32 + 200;
        c.ephemeral = true;
    })
    .await;
    for i in 0..N {
        start_ok(&host, &format!("s{i}"), "chaos", json!({"i": i})).await;
    }
    let (crash, bump) = (json!("crash"), json!("bump"));
    // Every child gets: crash, 2 bumps, crash, 3 bumps, all queued at once.
    for step in [&crash, &bump, &bump, &crash, &bump, &bump, &bump] {
        for i in 0..N {
            cast_acked(&host, &format!("s{i}"), step);
        }
    }
    for i in 0..N {
        let id = format!("s{i}");
        let state = call_ok(&host, &id, json!("state")).await;
        assert_eq!(state, json!({"args": {"i": i}, "count": 3}), "{id}");
        assert_eq!(host.child(&id).unwrap().restarts, 2, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_and_stopping_ten_thousand_children_leaks_nothing() {
    const N: usize = 10_000;
    let config = "[pool]\nmax_instances = 10100\n";
    let h = RunningHost::start_with(&["--ephemeral"], Some(config)).await;
    let cycle = |n: usize| {
        let client = h.client.clone();
        async move {
            for i in 0..n {
                let body = json!({"id": format!("l{i}"), "plugin": "tracker", "args": {"i": i}});
                client
                    .json(Method::POST, "/v1/children", Some(&body))
                    .await
                    .unwrap();
            }
            for i in 0..n {
                client
                    .json(Method::DELETE, &format!("/v1/children/l{i}"), None)
                    .await
                    .unwrap();
            }
        }
    };
    // One-time costs (the pool's slots and stacks, the allocator's arenas,
    // the API's buffers) are not leaks: the baseline is taken after a first
    // round of the same size.
    cycle(N).await;
    let baseline = h.rss_kib();
    cycle(N).await;
    let rss = h.rss_kib();
    eprintln!("host RSS: {baseline} KiB after {N} starts and stops, {rss} KiB after {N} more");
    // A freed slot keeps at most keep_resident_kib (16 by default) each of
    // memory, table and stack, and only the slots in use at once were used.
    let kept = pool_kept_kib(&h, "").await;
    let most = 3 * 16 * (N as u64 + 100);
    assert!(
        kept <= most,
        "freed slots keep {kept} KiB, more than {most}"
    );
    assert!(
        rss <= baseline + baseline / 10,
        "RSS grew from {baseline} KiB to {rss} KiB"
    );
    assert_eq!(h.get("/v1/children").await, json!([]));
}

/// KiB the host's freed pool slots keep resident, from `/metrics`: of one
/// `kind` (memory, table, stack), or of all with "".
async fn pool_kept_kib(h: &RunningHost, kind: &str) -> u64 {
    let prefix = match kind {
        "" => "wasmvisor_pool_unused_resident_bytes{".to_string(),
        kind => format!("wasmvisor_pool_unused_resident_bytes{{kind=\"{kind}\"}}"),
    };
    let (status, body) = h.client.raw(Method::GET, "/metrics", None).await.unwrap();
    assert_eq!(status, hyper::StatusCode::OK);
    std::str::from_utf8(&body)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("bad sample: {l}"))
        })
        .sum::<u64>()
        / 1024
}
