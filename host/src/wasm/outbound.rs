//! Outbound HTTP, limited to the plugin's `allowed_hosts`: the guest's own
//! `wasi:http/outgoing-handler` requests, which it waits for, and
//! `runtime.http-send-async` requests, whose response arrives as a
//! notification. Any other destination is refused before a connection is
//! made: the guest gets `HTTP-request-denied` (or an error response), the
//! host logs it, and both keep running.

use crate::config::PluginConfig;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, Result, WasiBody, WasiHttpHooks};

/// The outbound HTTP policy of one instance.
pub(crate) struct HttpPolicy {
    pub(crate) child: Arc<str>,
    pub(crate) plugin: Arc<str>,
    pub(crate) limits: Arc<PluginConfig>,
}

/// Whether `authority` (`host` or `host:port`, as the request names it)
/// matches an entry of `allowed` (`host`, any port; or `host:port`).
pub(crate) fn allowed(allowed: &[String], authority: &str, default_port: u16) -> bool {
    let (host, port) = split_authority(authority);
    let port = port.unwrap_or(default_port);
    allowed
        .iter()
        .any(|entry| match split_authority(entry.trim()) {
            (h, Some(p)) => h == host && p == port,
            (h, None) => h == host,
        })
}

/// `host[:port]` in lower case; IPv6 hosts keep their brackets.
fn split_authority(authority: &str) -> (String, Option<u16>) {
    let authority = authority.to_ascii_lowercase();
    if let Some((h, p)) = authority.rsplit_once(':')
        && let Ok(port) = p.parse::<u16>()
        && (!h.contains(':') || h.ends_with(']'))
    {
        return (h.to_string(), Some(port));
    }
    (authority, None)
}

/// A request from `runtime.http-send-async`.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// Its response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpPolicy {
    /// Whether `uri` may be reached; logs a refusal.
    fn permits(&self, uri: &http::Uri) -> bool {
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let ok = allowed(&self.limits.allowed_hosts, authority, default_port);
        if !ok {
            tracing::warn!(
                child = %self.child,
                "outbound HTTP to {authority:?} denied: not in allowed_hosts of plugin {}",
                self.plugin
            );
        }
        ok
    }

    /// Sends `request` unless `allowed_hosts` forbid it, within the
    /// plugin's `http_timeout_ms`, reading at most `http_body_kib` of the
    /// response body: the response, or why there is none.
    pub(crate) fn fetch(&self, request: Request) -> BoxFuture<'static, Result<Reply, String>> {
        let built = http::Request::builder()
            .method(request.method.as_str())
            .uri(request.url.as_str());
        let built = request
            .headers
            .iter()
            .fold(built, |b, (name, value)| b.header(name, value))
            .body(Full::new(Bytes::from(request.body)).map_err(|never| match never {}));
        let request = match built {
            Ok(request) => request,
            Err(e) => return Box::pin(std::future::ready(Err(format!("invalid request: {e}")))),
        };
        if !matches!(request.uri().scheme_str(), Some("http" | "https")) {
            let why = format!("{} is not an http:// or https:// URL", request.uri());
            return Box::pin(std::future::ready(Err(why)));
        }
        if !self.permits(request.uri()) {
            let why = format!(
                "denied: {} is not in the plugin's allowed_hosts",
                request.uri().authority().map_or("", |a| a.as_str())
            );
            return Box::pin(std::future::ready(Err(why)));
        }
        let cap = self.limits.http_body_kib as usize * 1024;
        let limit = Duration::from_millis(self.limits.http_timeout_ms.into());
        Box::pin(async move {
            let exchange = async {
                let (response, io) = wasmtime_wasi_http::default_send_request(request, None)
                    .await
                    .map_err(|e| format!("{e}"))?;
                let (parts, body) = response.into_parts();
                let read = Limited::new(body, cap).collect();
                // The connection is driven while the body is read; if it
                // ends first, the body ends (or fails) with it.
                let drive = async {
                    let _ = io.await;
                    std::future::pending::<std::convert::Infallible>().await
                };
                let body = tokio::select! {
                    body = read => body,
                    never = drive => match never {},
                };
                let body = body.map_err(|e| match e.downcast_ref::<LengthLimitError>() {
                    Some(_) => format!(
                        "the response body is over http_body_kib ({} KiB)",
                        cap / 1024
                    ),
                    None => format!("reading the response: {e}"),
                })?;
                let headers = parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                Ok(Reply {
                    status: parts.status.as_u16(),
                    headers,
                    body: body.to_bytes().to_vec(),
                })
            };
            match tokio::time::timeout(limit, exchange).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "no complete response within http_timeout_ms ({} ms)",
                    limit.as_millis()
                )),
            }
        })
    }
}

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                )>,
            > + Send,
    > {
        if !self.permits(request.uri()) {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn hosts_match_with_or_without_a_port() {
        let list = ["api.example.com".to_string(), "127.0.0.1:8080".to_string()];
        assert!(allowed(&list, "api.example.com", 443));
        assert!(allowed(&list, "API.example.com:8443", 443));
        assert!(allowed(&list, "127.0.0.1:8080", 80));
        assert!(!allowed(&list, "127.0.0.1:8081", 80));
        assert!(!allowed(&list, "127.0.0.1", 80));
        assert!(!allowed(&list, "evil.com", 80));
        assert!(!allowed(&list, "api.example.com.evil.com", 80));
        assert!(!allowed(&[], "api.example.com", 80));
        assert!(allowed(&["[::1]:9000".to_string()], "[::1]:9000", 80));
        assert!(!allowed(&["[::1]:9000".to_string()], "[::1]:9001", 80));
    }
}
