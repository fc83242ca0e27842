//! `/v1/children`: the dynamic supervisor over HTTP.

use super::error::{ApiError, JsonBody};
use crate::host::Host;
use crate::names;
use crate::types::{Activate, CallError, ChildSpec, DEFAULT_SHUTDOWN_MS, Restart, StartPlacement};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The default call timeout, as OTP's.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest call timeout the API accepts (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    id: String,
    plugin: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    restart: Option<String>,
    #[serde(default)]
    shutdown_ms: Option<u32>,
    #[serde(default)]
    activate: Option<String>,
    #[serde(default)]
    placement: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallRequest {
    msg: Value,
    #[serde(default)]
    timeout_ms: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CastRequest {
    msg: Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct KillRequest {
    #[serde(default)]
    reason: Option<String>,
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    names::validate_id(id).map_err(ApiError::bad_request)
}

/// The `{id}` of a child path, validated: a malformed or invalid id is a
/// 400 in the API's error format.
pub(crate) struct ChildId(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ChildId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        valid_id(&id)?;
        Ok(ChildId(id))
    }
}

/// A call error, with the id in the message when the id is the problem.
fn naming(e: CallError, id: &str) -> ApiError {
    match e {
        CallError::NotFound => ApiError::not_found(id),
        other => other.into(),
    }
}

/// A timeout in ms between 1 and [`MAX_TIMEOUT_MS`]; anything else (zero,
/// negative, fractional, too large, not a number) is a 400.
fn timeout(value: Option<Value>) -> Result<Duration, ApiError> {
    let ms = match value {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_MS,
        Some(v) => v
            .as_u64()
            .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "timeout_ms must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}, got {v}"
                ))
            })?,
    };
    Ok(Duration::from_millis(ms))
}

/// The default and the largest page of `GET /v1/children`.
pub const DEFAULT_PAGE: usize = 1_000;
/// See [`DEFAULT_PAGE`].
pub const MAX_PAGE: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    limit: Option<String>,
    after: Option<String>,
}

/// At most `limit` children in id order, after `after`: a JSON array, so
/// that a client that reads one page reads the same shape as before paging.
pub(crate) async fn list(
    State(host): State<Host>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match page.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_PAGE}, got {l:?}"
                ))
            })?,
    };
    if let Some(after) = &page.after {
        valid_id(after)?;
    }
    Ok(Json(
        host.children_anywhere(page.after.as_deref(), limit).await,
    ))
}

/// A child of this node, or in a cluster of whichever node runs it (with
/// `node`).
pub(crate) async fn get(
    State(host): State<Host>,
    ChildId(id): ChildId,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(host.child_anywhere(&id).await?))
}

pub(crate) async fn start(
    State(host): State<Host>,
    JsonBody(req): JsonBody<StartRequest>,
) -> Result<impl IntoResponse, ApiError> {
    valid_id(&req.id)?;
    names::validate_plugin(&req.plugin).map_err(ApiError::bad_request)?;
    let restart = match req.restart.as_deref() {
        None => Restart::Permanent,
        Some(r) => r.parse().map_err(ApiError::bad_request)?,
    };
    let activate = match req.activate.as_deref() {
        None => Activate::Eager,
        Some(a) => a.parse().map_err(ApiError::bad_request)?,
    };
    let spec = ChildSpec {
        args: Bytes::from(serde_json::to_vec(&req.args).unwrap_or_default()),
        id: req.id,
        plugin: req.plugin,
        restart,
        shutdown_ms: req.shutdown_ms.unwrap_or(DEFAULT_SHUTDOWN_MS),
        activate,
    };
    let placement = match req.placement.as_deref() {
        None => StartPlacement::Local,
        Some(p) => p.parse().map_err(ApiError::bad_request)?,
    };
    let id = spec.id.clone();
    match host.start_placed(spec, placement).await? {
        Some(child) => Ok((StatusCode::CREATED, Json(child))),
        None => Ok((StatusCode::OK, Json(json!({"ignored": id})))),
    }
}

pub(crate) async fn stop(
    State(host): State<Host>,
    ChildId(id): ChildId,
) -> Result<impl IntoResponse, ApiError> {
    host.stop_child(&id).await?;
    Ok(Json(json!({"stopped": id})))
}

pub(crate) async fn restart(
    State(host): State<Host>,
    ChildId(id): ChildId,
) -> Result<impl IntoResponse, ApiError> {
    host.restart_child(&id).await?;
    Ok(Json(json!({"restarted": id})))
}

pub(crate) async fn kill(
    State(host): State<Host>,
    ChildId(id): ChildId,
    JsonBody(req): JsonBody<KillRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let reason = req.reason.unwrap_or_else(|| "killed by operator".into());
    host.kill_anywhere(&id, &reason).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"killed": id}))))
}

pub(crate) async fn hibernate(
    State(host): State<Host>,
    ChildId(id): ChildId,
) -> Result<impl IntoResponse, ApiError> {
    host.hibernate_child(&id).await?;
    Ok(Json(json!({"hibernated": id})))
}

pub(crate) async fn call(
    State(host): State<Host>,
    ChildId(id): ChildId,
    JsonBody(req): JsonBody<CallRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let timeout = timeout(req.timeout_ms)?;
    let msg = serde_json::to_vec(&req.msg).unwrap_or_default();
    let reply = host
        .call(&id, msg, timeout)
        .await
        .map_err(|e| naming(e, &id))?;
    let reply: Value = serde_json::from_slice(&reply)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply).into_owned()));
    Ok(Json(json!({"reply": reply})))
}

pub(crate) async fn cast(
    State(host): State<Host>,
    ChildId(id): ChildId,
    JsonBody(req): JsonBody<CastRequest>,
) -> Result<impl IntoResponse, ApiError> {
    host.cast_anywhere(&id, serde_json::to_vec(&req.msg).unwrap_or_default())
        .await
        .map_err(|e| naming(e, &id))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": id}))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_out_of_range_are_rejected() {
        assert_eq!(timeout(None).unwrap(), Duration::from_millis(5_000));
        assert_eq!(
            timeout(Some(json!(250))).unwrap(),
            Duration::from_millis(250)
        );
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("5"),
            json!(600_001),
            json!(u64::MAX),
        ] {
            assert!(timeout(Some(bad.clone())).is_err(), "{bad}");
        }
    }
}
