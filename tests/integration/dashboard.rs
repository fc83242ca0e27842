//! The dashboard at `GET /`: served from the binary without the token,
//! while every data request it makes needs it; and the page itself, driven
//! in headless Chromium (skipped, saying why, when Chromium or chromedriver
//! is not installed).

mod common;

use common::browser::{Browser, LIMIT};
use common::process::RunningHost;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_assets_need_no_token_but_data_does() {
    let h = RunningHost::start(&["--token", "s3cret"]).await;
    let anonymous = wasmvisor::cli::client::Client::new(&h.addr, None);
    for path in ["/", "/assets/app.js", "/assets/app.css"] {
        let (status, body) = anonymous
            .raw(Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.is_empty(), "{path} has a body");
    }
    for path in [
        "/v1/children",
        "/v1/events/recent",
        "/v1/plugins",
        "/metrics",
    ] {
        let (status, _) = anonymous
            .raw(Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

/// Starts child `id` of `plugin` through the API.
async fn start_child(h: &RunningHost, id: &str, plugin: &str, args: Value) {
    h.client
        .json(
            Method::POST,
            "/v1/children",
            Some(&json!({"id": id, "plugin": plugin, "args": args})),
        )
        .await
        .unwrap_or_else(|e| panic!("POST /v1/children {id} ({plugin}): {e:#}"));
}

/// Calls `id` through the API; the error's text when the call fails.
async fn call(h: &RunningHost, id: &str, msg: Value) -> Result<Value, String> {
    h.client
        .json(
            Method::POST,
            &format!("/v1/children/{id}/call"),
            Some(&json!({"msg": msg})),
        )
        .await
        .map_err(|e| format!("{e:#}"))
}

/// A browser on the host's dashboard, or `None` when the tests skip.
async fn open(h: &RunningHost) -> Option<Browser> {
    let b = Browser::start().await?;
    b.goto(&format!("http://{}/", h.addr)).await;
    Some(b)
}

fn row(id: &str) -> String {
    format!("tr[data-id=\"{id}\"]")
}

/// Waits until the table's rows are `ids` (space-separated), in order.
async fn wait_order(b: &Browser, ids: &str) {
    b.wait_js(
        &format!("the rows to be {ids}"),
        "return [...document.querySelectorAll('tr[data-id]')]
           .map((r) => r.dataset.id).join(' ') === arguments[0];",
        vec![json!(ids)],
    )
    .await;
}

/// Waits until the page's event stream is connected.
async fn wait_live(b: &Browser) {
    b.wait_js(
        "the event stream to connect",
        "return document.getElementById('conn').dataset.state === 'live';",
        vec![],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_without_console_errors() {
    let h = RunningHost::start(&[]).await;
    start_child(&h, "alpha", "chaos", json!({})).await;
    let Some(b) = open(&h).await else { return };
    b.wait_visible(&row("alpha")).await;
    wait_live(&b).await;
    // Exercise the paths an operator uses: the detail, a call, the plugins
    // table and a metrics sample or two.
    b.click(&format!("{} button[data-action=open]", row("alpha")))
        .await;
    b.wait_text("#detail-title", "alpha").await;
    b.click("#call-send").await;
    b.wait_text("#call-result", "args").await;
    b.wait_visible("#plugins-body tr[data-plugin=chaos]").await;
    b.wait_js(
        "a metrics sample",
        "return document.querySelector('#summary [data-status=total]');",
        vec![],
    )
    .await;
    let severe = b.severe().await;
    assert!(severe.is_empty(), "console errors: {severe:#?}");
    // The editor refuses what is not JSON, and an error answer shows its
    // status, code and message. Chromium logs every 4xx/5xx answer as a
    // SEVERE network entry; that one is expected, and nothing else.
    b.type_into("#call-msg", "{not json").await;
    b.click("#call-send").await;
    b.wait_visible("#call-json-error").await;
    b.type_into("#call-msg", "\"crash\"").await;
    b.click("#call-send").await;
    b.wait_text("#call-result", "500 trapped").await;
    let severe = b.severe().await;
    assert!(
        severe.iter().all(|e| e["source"] == "network"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("/v1/children/alpha/call") && m.contains("500"))),
        "console errors besides the 500 of the call: {severe:#?}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_started_through_the_api_appears() {
    let h = RunningHost::start(&[]).await;
    let Some(b) = open(&h).await else { return };
    wait_live(&b).await;
    start_child(&h, "late-comer", "chaos", json!({})).await;
    b.wait_visible(&row("late-comer")).await;
    b.wait_text(&format!("{} .status", row("late-comer")), "running")
        .await;
    assert_eq!(
        b.text(&format!("{} .plugin", row("late-comer"))).await,
        json!("chaos")
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_button_raises_the_restart_count() {
    let h = RunningHost::start(&[]).await;
    start_child(&h, "bouncy", "chaos", json!({})).await;
    let Some(b) = open(&h).await else { return };
    let restarts = format!("{} .restarts", row("bouncy"));
    b.wait_text(&restarts, "0").await;
    wait_live(&b).await;
    b.click(&format!("{} .restart-btn", row("bouncy"))).await;
    h.wait_child("bouncy", "the API to count the restart", |c| {
        c["restarts"] == 1
    })
    .await;
    b.wait_js(
        "the page to show 1 restart",
        "const e = document.querySelector(arguments[0]);
         return e && e.textContent.trim() === '1';",
        vec![json!(restarts)],
    )
    .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_shows_its_message_in_the_detail() {
    let h = RunningHost::start(&[]).await;
    start_child(&h, "fragile", "chaos", json!({})).await;
    let Some(b) = open(&h).await else { return };
    b.wait_visible(&row("fragile")).await;
    wait_live(&b).await;
    let err = call(&h, "fragile", json!("panic"))
        .await
        .expect_err("a panic traps the call");
    assert!(err.contains("trapped"), "{err}");
    b.wait_text(&format!("{} .last-exit", row("fragile")), "chaos panic")
        .await;
    b.click(&format!("{} button[data-action=open]", row("fragile")))
        .await;
    b.wait_visible("#detail").await;
    let exit = b.wait_text("#detail-exit", "chaos panic").await;
    assert!(exit.contains("trap"), "the exit names its kind: {exit}");
    b.wait_text("#detail-exit .backtrace", "wasm backtrace:")
        .await;
    b.wait_text("#detail-events", "child_exited").await;
    // Stop asks for a second click, then the child goes.
    b.click("#act-stop").await;
    b.wait_text("#act-stop", "Confirm").await;
    b.click("#act-stop").await;
    b.wait_js(
        "the stopped child's row to go",
        "return !document.querySelector('tr[data-id=\"fragile\"]');",
        vec![],
    )
    .await;
    b.wait_text("#detail-title", "removed").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_and_refuses_a_wrong_one() {
    let h = RunningHost::start(&["--token", "s3cret"]).await;
    start_child(&h, "guarded", "chaos", json!({})).await;
    let Some(b) = open(&h).await else { return };
    b.wait_visible("#token").await;
    b.type_into("#token", "wrong").await;
    b.click("#token-submit").await;
    let err = b.wait_text("#token-error", "refused").await;
    assert!(err.contains("401"), "the error says what happened: {err}");
    b.wait_visible("#token").await;
    assert_eq!(
        b.js(
            "return document.querySelectorAll('tr[data-id]').length;",
            vec![]
        )
        .await,
        json!(0),
        "no data without the right token"
    );
    b.type_into("#token", "s3cret").await;
    b.click("#token-submit").await;
    b.wait_visible(&row("guarded")).await;
    wait_live(&b).await;
    b.wait_js(
        "the token form to go away",
        "return document.getElementById('auth').hidden;",
        vec![],
    )
    .await;
    // The token is sent as a header, never in a URL.
    let in_urls = b
        .js(
            "return performance.getEntriesByType('resource')
                .some(e => e.name.includes('s3cret'));",
            vec![],
        )
        .await;
    assert_eq!(in_urls, json!(false));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_sort_and_group_by_plugin() {
    let h = RunningHost::start(&[]).await;
    for id in ["s-a", "s-b", "s-c"] {
        start_child(&h, id, "chaos", json!({})).await;
    }
    start_child(&h, "t-1", "tracker", json!({"transaction_id": "1"})).await;
    for (id, times) in [("s-b", 2), ("s-c", 1)] {
        for n in 1..=times {
            h.client
                .json(Method::POST, &format!("/v1/children/{id}/restart"), None)
                .await
                .unwrap_or_else(|e| panic!("restart {id}: {e:#}"));
            h.wait_child(id, "the restart", |c| c["restarts"] == n)
                .await;
        }
    }
    let Some(b) = open(&h).await else { return };
    b.wait_visible(&row("t-1")).await;
    b.client
        .find(fantoccini::Locator::Css("#sort"))
        .await
        .expect("the sort control")
        .select_by_value("restarts")
        .await
        .expect("sort by restarts");
    wait_order(&b, "s-b s-c s-a t-1").await;
    b.type_into("#search", "s-c").await;
    wait_order(&b, "s-c").await;
    b.type_into("#search", "").await;
    b.click("#group-by-plugin").await;
    b.wait_visible("tr[data-section=\"plugin:tracker\"]").await;
    b.wait_visible("tr[data-section=\"plugin:chaos\"]").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_reload_shows_in_the_plugin_history_and_the_rows() {
    let h = RunningHost::start(&[]).await;
    start_child(&h, "reloaded", "chaos", json!({})).await;
    let old = h.get("/v1/children/reloaded").await["version"].clone();
    let Some(b) = open(&h).await else { return };
    wait_live(&b).await;
    let plugin = "#plugins-body tr[data-plugin=chaos]";
    // The load at host start comes from the recent events.
    b.wait_text(plugin, "loaded").await;
    let wasm = std::fs::read(h.plugins_dir().join("chaos.wasm")).expect("chaos.wasm is there");
    wasmvisor_tests::install(&h.plugins_dir(), "chaos", &common::rebuilt(wasm, 7));
    b.wait_text(plugin, "reloaded to").await;
    let child = h
        .wait_child("reloaded", "the new version", |c| c["version"] != old)
        .await;
    let new = child["version"].as_str().expect("a version");
    b.wait_text(&format!("{} .version", row("reloaded")), new)
        .await;
    b.wait_text(&format!("{plugin} td:nth-child(2)"), new).await;
    b.close().await;
}

/// A host with a nested group and a restart intensity that a few crashes
/// exhaust, so that the picture shows every kind of row.
const SCREENSHOT_CONFIG: &str = r#"
[supervisor]
max_restarts = 2
max_seconds = 60
on_exhausted = "fail"

[[groups]]
id = "bank"
strategy = "rest_for_one"
children = [
  { id = "ledger", plugin = "ledger" },
  { id = "balances", plugin = "balances" },
]

[[groups.groups]]
id = "audit"
strategy = "one_for_one"
children = [
  { id = "audit-trail", plugin = "tracker", args = { transaction_id = "audit" } },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_for_people() {
    let h = RunningHost::start_with(&[], Some(SCREENSHOT_CONFIG)).await;
    for id in ["api-gateway", "payments", "worker-7", "sessions"] {
        start_child(&h, id, "chaos", json!({"role": id})).await;
    }
    start_child(
        &h,
        "order-1042",
        "tracker",
        json!({"transaction_id": "1042"}),
    )
    .await;
    let Some(b) = open(&h).await else { return };
    wait_live(&b).await;
    call(&h, "payments", json!("panic"))
        .await
        .expect_err("a panic traps the call");
    // Crash worker-7 past its restart intensity: it stays failed.
    let deadline = Instant::now() + LIMIT;
    loop {
        let _ = call(&h, "worker-7", json!("crash")).await;
        let c = h.get("/v1/children/worker-7").await;
        if c["status"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "worker-7 never failed: {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.client
        .json(Method::POST, "/v1/children/sessions/hibernate", None)
        .await
        .expect("sessions hibernates");
    // Some traffic, so that the rate charts have a line: calls until the
    // calls chart has a few samples and shows a rate.
    b.click(&format!("{} button[data-action=open]", row("payments")))
        .await;
    let deadline = Instant::now() + LIMIT;
    loop {
        for _ in 0..20 {
            call(&h, "api-gateway", json!({"add": 1}))
                .await
                .expect("api-gateway answers");
        }
        let charted = b
            .js(
                "const n = Number(document.getElementById('rates-title').dataset.samples || 0);
                 const c = document.getElementById('rate-calls').textContent;
                 return n >= 5 && c && c !== '—' && c !== '0';",
                vec![],
            )
            .await;
        if charted == json!(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the calls chart never showed a rate"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    b.wait_text(&format!("{} .status", row("worker-7")), "failed")
        .await;
    b.wait_text(&format!("{} .status", row("sessions")), "hibernated")
        .await;
    b.wait_text("#detail-exit", "chaos panic").await;
    b.wait_visible("tr[data-section=\"group:audit\"]").await;
    b.wait_visible("#plugins-body tr[data-plugin=ledger]").await;
    // Taller than the tests' window, so that the picture shows every panel.
    b.client
        .set_window_size(1400, 1240)
        .await
        .expect("the window resizes");
    b.wait_js(
        "the page to lay out at the new size",
        "return window.innerHeight > 1000;",
        vec![],
    )
    .await;
    let png = b.client.screenshot().await.expect("a screenshot");
    // The target dir: CARGO_TARGET_TMPDIR is its tmp/ folder.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let path = target.join("dashboard.png");
    std::fs::write(&path, png).expect("the screenshot is written");
    eprintln!("dashboard screenshot: {}", path.display());
    let severe = b.severe().await;
    assert!(severe.is_empty(), "console errors: {severe:#?}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_children_page_and_update_in_place() {
    let h = RunningHost::start(&[]).await;
    // Lazy children have no instance, so 10,050 fit anywhere; that is more
    // than one API page (10,000), so the page must move through them.
    for i in 0..10_050 {
        h.client
            .json(
                Method::POST,
                "/v1/children",
                Some(&json!({"id": format!("n{i:05}"), "plugin": "chaos", "activate": "lazy"})),
            )
            .await
            .unwrap_or_else(|e| panic!("start n{i:05}: {e:#}"));
    }
    let Some(b) = open(&h).await else { return };
    let opened = Instant::now();
    b.wait_visible(&row("n00000")).await;
    eprintln!("10,000 children: first rows after {:?}", opened.elapsed());
    wait_live(&b).await;
    b.wait_visible("#window-nav").await;
    let rows = b
        .js(
            "return document.querySelectorAll('tr[data-id]').length;",
            vec![],
        )
        .await;
    let rows = rows.as_u64().expect("a count");
    assert!(
        (100..=200).contains(&rows),
        "one table page of rows (200 with the section headers), not 10,000: {rows}"
    );
    b.wait_text("#page-info", "of 10000").await;
    // Long tasks (> 50 ms on the main thread) while 100 children change.
    b.js(
        "window.__long = [];
         new PerformanceObserver((l) => window.__long.push(...l.getEntries().map((e) => e.duration)))
           .observe({ type: 'longtask' });",
        vec![],
    )
    .await;
    for i in 0..100 {
        h.client
            .json(Method::POST, &format!("/v1/children/n{i:05}/restart"), None)
            .await
            .unwrap_or_else(|e| panic!("restart n{i:05}: {e:#}"));
    }
    b.wait_js(
        "all 100 restarted rows to show running",
        "return [...document.querySelectorAll('tr[data-id]')]
           .filter((r) => r.dataset.status === 'running').length === 100;",
        vec![],
    )
    .await;
    let long = b.js("return Math.max(0, ...window.__long);", vec![]).await;
    eprintln!("10,000 children: longest task while 100 changed: {long} ms");
    // The next API page: the 50 children after the first 10,000.
    b.click("#window-next").await;
    b.wait_visible(&row("n10049")).await;
    b.wait_js(
        "the first API page's rows to go",
        "return !document.querySelector('tr[data-id=\"n00000\"]');",
        vec![],
    )
    .await;
    let severe = b.severe().await;
    assert!(severe.is_empty(), "console errors: {severe:#?}");
    b.close().await;
}
