//! A small HTTP client for the API, used by the client commands (and by the
//! tests that drive a real host).

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::fmt;

/// An error answer from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The error code (`not_found`, `timeout`, ...).
    pub code: String,
    /// The message.
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// A client for one host.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client for the host at `addr` (`HOST:PORT` or `http://HOST:PORT`).
    pub fn new(addr: &str, token: Option<String>) -> Client {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        Client {
            base,
            token,
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(v)?))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(req.body(body)?)
    }

    /// Sends a request and returns the status and the raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes)> {
        self.raw_bytes(method, path, body.map(serde_json::to_vec).transpose()?)
            .await
    }

    /// Sends raw body bytes (for malformed-input tests) and returns the
    /// status and the raw body.
    pub async fn raw_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = self.request(method, path, None)?;
        if let Some(bytes) = body {
            *req.body_mut() = Full::new(Bytes::from(bytes));
        }
        let resp = self
            .http
            .request(req)
            .await
            .with_context(|| format!("cannot reach the wasmvisor host at {}", self.base))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends a request and decodes a JSON answer; an error status becomes an
    /// [`ApiFailure`].
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, bytes) = self.raw(method, path, body).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the host answered {status} with a body that is not JSON"))?;
        if status.is_success() {
            return Ok(value);
        }
        Err(anyhow!(ApiFailure {
            status: status.as_u16(),
            code: value["error"].as_str().unwrap_or("error").to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        }))
    }

    /// Opens `/v1/events` and calls `on_event(kind, data)` for each event
    /// until it returns false or the stream ends.
    pub async fn events(
        &self,
        topic: Option<&str>,
        hibernation: bool,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<()> {
        let mut query = Vec::new();
        if let Some(t) = topic {
            query.push(format!("topic={}", percent_encode(t)));
        }
        if hibernation {
            query.push("include=hibernation".to_string());
        }
        let path = if query.is_empty() {
            "/v1/events".to_string()
        } else {
            format!("/v1/events?{}", query.join("&"))
        };
        let resp = self
            .http
            .request(self.request(Method::GET, &path, None)?)
            .await
            .with_context(|| format!("cannot reach the wasmvisor host at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(anyhow!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        let mut body = resp.into_body();
        let mut buffer = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            buffer.push_str(&String::from_utf8_lossy(chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut kind = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() && !on_event(kind, &data) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Percent-encodes a query value.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(super::percent_encode("a b:c/d"), "a%20b%3Ac%2Fd");
    }
}
