//! OpenTelemetry traces, exported over OTLP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set. Spans are `tracing` spans that `tracing-opentelemetry` turns into
//! OpenTelemetry ones; the hot paths ask [`enabled`], one relaxed load,
//! before they build any, so an untraced host pays a branch per message.

use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns span building on, once the exporter is installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether the environment asks for traces.
pub fn requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// The span a message carries from its sender to the child that handles it
/// (the sender's current span), or none when tracing is off.
#[inline]
pub(crate) fn sender() -> Span {
    if enabled() {
        Span::current()
    } else {
        Span::none()
    }
}
