//! Outbound HTTP.
//!
//! Two ways, both limited to the hosts listed in the plugin's config
//! (`allowed_hosts`):
//!
//! - [`send_async`] sends a request and returns at once; the response
//!   arrives later as [`Info::Http`](crate::Info::Http), while the instance
//!   keeps handling its other messages. This is the OTP way to talk to a
//!   slow source: defer the caller's reply, and answer it when the response
//!   comes (see [`reply`](crate::reply)).
//! - [`get`] waits for the response inside the current callback, over
//!   `wasi:http/outgoing-handler`: simple, but the child handles nothing
//!   else meanwhile.
//!
//! ```ignore
//! let resp = wasmvisor_sdk::http::get("http://api.example.com/mentions")?;
//! let items: Vec<serde_json::Value> = resp.json()?;
//!
//! let id = wasmvisor_sdk::http::send_async(&Request::get("http://api.example.com/slow"));
//! // later, in handle_info: Info::Http { id, result } ...
//! ```

use crate::message::{DecodeError, decode_bytes};
use serde::de::DeserializeOwned;
use std::fmt;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingRequest, RequestOptions, Scheme};

/// The largest response body [`get`] reads.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How long [`get`] waits for a connection, and then for the first byte.
pub const TIMEOUT_MS: u64 = 10_000;

/// A response: its status, headers and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The headers, as name and value (empty for [`get`]).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A request for [`send_async`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// An `http://` or `https://` URL whose host is in `allowed_hosts`.
    pub url: String,
    /// Request headers, as name and value.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

impl Request {
    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `POST url` with `body`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        Request {
            method: "POST".into(),
            url: url.into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What [`send_async`] returns; the response arrives as
/// [`Info::Http`](crate::Info::Http) with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// Sends `request` without waiting: the response, or why there is none (a
/// host not in `allowed_hosts`, a connection error, the plugin's
/// `http_timeout_ms`, a body over its `http_body_kib`), arrives as
/// [`Info::Http`](crate::Info::Http). A request ends with the instance's
/// incarnation: an exit cancels it, a hot reload that continues the child
/// does not.
pub fn send_async(request: &Request) -> RequestId {
    use crate::bindings::wasmvisor::plugin::types::HttpRequest;
    RequestId(
        crate::bindings::wasmvisor::plugin::runtime::http_send_async(&HttpRequest {
            method: request.method.clone(),
            url: request.url.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
        }),
    )
}

impl Response {
    /// Decodes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_bytes(&self.body)
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not `http://` or `https://` with a host.
    InvalidUrl(String),
    /// The host refused the destination: it is not in the plugin's
    /// `allowed_hosts`.
    Denied(String),
    /// The request failed on the way (DNS, connection, TLS, timeout ...).
    Failed(String),
    /// The body is larger than [`MAX_BODY_BYTES`].
    TooLarge,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            HttpError::Denied(host) => write!(
                f,
                "the host denied the request to {host}: it is not in this plugin's allowed_hosts"
            ),
            HttpError::Failed(why) => write!(f, "request failed: {why}"),
            HttpError::TooLarge => write!(f, "the response is larger than {MAX_BODY_BYTES} bytes"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The parts of an `http(s)://authority/path?query` URL.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!(
            "{url:?} does not start with http:// or https://"
        )));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(HttpError::InvalidUrl(format!("{url:?} has no plain host")));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// `GET url`, waiting for the whole body. Other instances keep running
/// meanwhile: the wait suspends this instance, not a host thread.
pub fn get(url: &str) -> Result<Response, HttpError> {
    let (scheme, authority, path) = split_url(url)?;
    let request = OutgoingRequest::new(Fields::new());
    let invalid = |what: &str| HttpError::InvalidUrl(format!("{url:?}: bad {what}"));
    request
        .set_method(&Method::Get)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let options = RequestOptions::new();
    let ns = TIMEOUT_MS * 1_000_000;
    // A host may not support a timeout; the request then simply has none.
    let _ = options.set_connect_timeout(Some(ns));
    let _ = options.set_first_byte_timeout(Some(ns));
    let _ = options.set_between_bytes_timeout(Some(ns));
    let failed = |e: ErrorCode| match e {
        ErrorCode::HttpRequestDenied => HttpError::Denied(authority.to_string()),
        other => HttpError::Failed(format!("{other:?}")),
    };
    let pending = outgoing_handler::handle(request, Some(options)).map_err(failed)?;
    let response = loop {
        if let Some(result) = pending.get() {
            break result
                .map_err(|()| HttpError::Failed("the response was already taken".into()))?
                .map_err(failed)?;
        }
        pending.subscribe().block();
    };
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| HttpError::Failed("the body was already taken".into()))?;
    let stream = body
        .stream()
        .map_err(|()| HttpError::Failed("the body stream was already taken".into()))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if out.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(HttpError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Failed(e.to_debug_string()));
            }
        }
    }
    drop(stream);
    Ok(Response {
        status,
        headers: Vec::new(),
        body: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        let (s, a, p) = split_url("http://127.0.0.1:8080/feed?x=1").unwrap();
        assert!(matches!(s, Scheme::Http));
        assert_eq!((a, p), ("127.0.0.1:8080", "/feed?x=1"));
        let (s, a, p) = split_url("https://example.com").unwrap();
        assert!(matches!(s, Scheme::Https));
        assert_eq!((a, p), ("example.com", "/"));
        let (_, a, p) = split_url("http://h?q").unwrap();
        assert_eq!((a, p), ("h", "?q"));
        for bad in ["ftp://x/", "http:///x", "http://user@h/", "example.com"] {
            assert!(
                matches!(split_url(bad), Err(HttpError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }
}
