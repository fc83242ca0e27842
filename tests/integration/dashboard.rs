//! The dashboard at `GET /`: served from the binary without the token,
//! while every data request it makes needs it.

mod common;

use common::process::RunningHost;
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_assets_need_no_token_but_data_does() {
    let h = RunningHost::start(&["--token", "s3cret"]).await;
    let anonymous = wasmvisor::cli::client::Client::new(&h.addr, None);
    for path in ["/", "/assets/app.js", "/assets/app.css"] {
        let (status, body) = anonymous.raw(Method::GET, path, None).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.is_empty(), "{path} has a body");
    }
    for path in [
        "/v1/children",
        "/v1/events/recent",
        "/v1/plugins",
        "/metrics",
    ] {
        let (status, _) = anonymous.raw(Method::GET, path, None).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}
