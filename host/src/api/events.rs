//! `GET /v1/events[?topic=T][&include=hibernation]`: the host's events as
//! Server-Sent Events.

use super::error::ApiError;
use crate::host::Host;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filter {
    topic: Option<String>,
    include: Option<String>,
}

/// Every lifecycle and topic event; with `topic`, only that topic's events.
/// `child_hibernated` and `child_woken` come only with
/// `include=hibernation`: with a million idle children they would drown
/// everything else.
/// A client that falls too far behind gets a `lagged` event saying how many
/// events it missed, then continues.
pub(crate) async fn stream(
    State(host): State<Host>,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let hibernation = match filter.include.as_deref() {
        None => None,
        Some("hibernation") => Some(BroadcastStream::new(host.hibernation_events())),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "include takes \"hibernation\", got {other:?}"
            )));
        }
    };
    let events = BroadcastStream::new(host.events());
    let events = match hibernation {
        Some(h) => stream::select(events, h).left_stream(),
        None => events.right_stream(),
    };
    let events = events.filter_map(move |item| {
        let out = match item {
            Ok(event) => match &filter.topic {
                Some(t) if event.topic() != Some(t.as_str()) => None,
                _ => serde_json::to_string(&*event)
                    .ok()
                    .map(|data| SseEvent::default().event(event.kind()).data(data)),
            },
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(
                SseEvent::default()
                    .event("lagged")
                    .data(format!("{{\"type\":\"lagged\",\"skipped\":{n}}}")),
            ),
        };
        std::future::ready(out.map(Ok))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /v1/events/recent`: the last lifecycle events the host keeps, oldest
/// first, for a client that starts listening after they happened.
pub(crate) async fn recent(State(host): State<Host>) -> axum::Json<Vec<serde_json::Value>> {
    let events = host.recent_events();
    axum::Json(
        events
            .iter()
            .filter_map(|e| serde_json::to_value(&**e).ok())
            .collect(),
    )
}
