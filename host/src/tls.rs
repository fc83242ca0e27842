//! One TLS crypto provider for the whole process.
//!
//! Three dependencies speak TLS through rustls: the guests' outbound HTTP
//! (wasmtime-wasi-http), the cluster's NATS client (async-nats) and the
//! OTLP trace exporter (reqwest). The first two build their TLS settings
//! from the process's default provider, which rustls can pick by itself
//! only when exactly one is compiled in. Installing *ring* (the provider
//! all three are built with) before any of them connects makes that choice
//! explicit instead of a panic at the first TLS connection.

/// Installs *ring* as the process's default rustls provider, unless one is
/// installed already (by an embedding program, or an earlier call).
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; its provider is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::CryptoProvider;
    use std::sync::Arc;

    #[test]
    fn a_provider_is_installed_once_and_then_kept() {
        super::install_crypto_provider();
        let first = CryptoProvider::get_default().expect("a provider is installed");
        super::install_crypto_provider();
        let again = CryptoProvider::get_default().expect("a provider is installed");
        assert!(Arc::ptr_eq(first, again));
    }
}
