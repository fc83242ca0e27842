//! The HTTP API (axum): JSON in and out, errors as `{"error", "message"}`.

mod children;
mod dashboard;
pub mod error;
mod events;

pub use children::{DEFAULT_PAGE, DEFAULT_TIMEOUT_MS, MAX_PAGE, MAX_TIMEOUT_MS};

use crate::host::{Host, PluginInfo};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::Instrument;

/// The largest request body the API reads (a message and its envelope).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's router for `host`. With `token`, every route requires
/// `Authorization: Bearer <token>` but `/healthz` and the dashboard's page
/// and assets, which hold no data.
pub fn router(host: Host, token: Option<String>) -> Router {
    let api = Router::new()
        .route("/v1/plugins", get(plugins))
        .route("/v1/children", get(children::list).post(children::start))
        .route(
            "/v1/children/{id}",
            get(children::get).delete(children::stop),
        )
        .route("/v1/children/{id}/restart", post(children::restart))
        .route("/v1/children/{id}/kill", post(children::kill))
        .route("/v1/children/{id}/hibernate", post(children::hibernate))
        .route("/v1/children/{id}/call", post(children::call))
        .route("/v1/children/{id}/cast", post(children::cast))
        .route("/v1/tree", get(tree))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{node}/drain", post(drain))
        .route("/v1/events", get(events::stream))
        .route("/v1/events/recent", get(events::recent))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            token.map(|t| Arc::new(Sha256::digest(t.as_bytes()).to_vec())),
            authorize,
        ));
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::script))
        .route("/assets/app.css", get(dashboard::style))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(api)
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "no_route",
                message: "no such endpoint; see the README for the API".into(),
            }
        })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "this endpoint does not take that method; see the README for the API"
                    .into(),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(traced))
        .with_state(host)
}

/// With traces on, each request is a span (the parent of the call it
/// makes); without, one branch.
async fn traced(request: Request, next: Next) -> Response {
    if !crate::trace::enabled() {
        return next.run(request).await;
    }
    let name = format!("{} {}", request.method(), request.uri().path());
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        http.response.status_code = tracing::field::Empty
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// Compares the presented token with the configured one in constant time
/// (both hashed, so neither the content nor the length leaks).
async fn authorize(
    State(expected): State<Option<Arc<Vec<u8>>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = expected {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| Sha256::digest(t.as_bytes()));
        let ok = presented.is_some_and(|p| {
            p.iter()
                .zip(expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        });
        if !ok {
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "this host requires Authorization: Bearer <token>".into(),
            }
            .into_response();
        }
    }
    next.run(request).await
}

async fn tree(State(host): State<Host>) -> Json<crate::host::Tree> {
    Json(host.tree().await)
}

async fn nodes(State(host): State<Host>) -> Result<Json<Vec<crate::host::NodeStatus>>, ApiError> {
    match host.nodes() {
        Some(nodes) => Ok(Json(nodes)),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "no_cluster",
            message: "this host runs alone; start it with --cluster nats://HOST:PORT".into(),
        }),
    }
}

async fn drain(
    State(host): State<Host>,
    axum::extract::Path(node): axum::extract::Path<String>,
) -> Result<Json<crate::host::DrainReport>, ApiError> {
    if host.nodes().is_none() {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "no_cluster",
            message: "this host runs alone; start it with --cluster nats://HOST:PORT".into(),
        });
    }
    Ok(Json(host.drain(&node).await?))
}

async fn plugins(State(host): State<Host>) -> Json<Vec<PluginInfo>> {
    Json(host.plugins())
}

async fn metrics(State(host): State<Host>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        host.metrics_text(),
    )
}
