//! Log lines to stderr (text or JSON), and OpenTelemetry traces over OTLP
//! when the environment asks for them (see [`crate::trace`]).

use super::LogFormat;
use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Installs the global subscriber: log lines filtered by `RUST_LOG`
/// (default `default_level`) in `format`, plus, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the host's spans exported over
/// OTLP/HTTP. The exporter's provider comes back, to flush at exit.
pub(super) fn init(default_level: &str, format: LogFormat) -> Result<Option<SdkTracerProvider>> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(super::progress::LogWriter)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(super::progress::LogWriter)
            .with_filter(filter)
            .boxed(),
    };
    let provider = match crate::trace::requested() {
        true => Some(provider()?),
        false => None,
    };
    // Only the host's own spans and events become OpenTelemetry data.
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("wasmvisor"))
            .with_filter(Targets::new().with_target("wasmvisor", LevelFilter::INFO))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("cannot install the log subscriber")?;
    if provider.is_some() {
        crate::trace::enable();
    }
    Ok(provider)
}

/// The OTLP/HTTP exporter behind a batch processor, configured by the
/// standard `OTEL_*` variables (endpoint, headers, timeout, batch delay).
fn provider() -> Result<SdkTracerProvider> {
    crate::tls::install_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("cannot set up the OTLP trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "wasmvisor".into());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}
