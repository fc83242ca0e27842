//! Outbound HTTP (`wasi:http/outgoing-handler`), limited to the plugin's
//! `allowed_hosts`. Any other destination is refused before a connection is
//! made: the guest gets `HTTP-request-denied`, the host logs it, and both
//! keep running.

use crate::config::PluginConfig;
use std::sync::Arc;
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
        let uri = request.uri();
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let hosts = &self.limits.allowed_hosts;
        if !allowed(hosts, authority, default_port) {
            tracing::warn!(
                child = %self.child,
                "outbound HTTP to {authority:?} denied: not in allowed_hosts of plugin {}",
                self.plugin
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
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
