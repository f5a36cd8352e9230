//! Logs and traces: one `tracing` subscriber with a JSON (or pretty) formatter and an
//! optional OpenTelemetry layer.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::TelemetryError;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line: what log pipelines in Kubernetes expect.
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// Keeps the trace exporter alive; dropping it flushes and shuts the exporter down so
/// the last spans of a stopping process are not lost.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Shutdown blocks while the batch processor flushes; that is what we want
            // at exit, and it runs outside any async task here.
            if let Err(err) = provider.shutdown() {
                eprintln!("trace exporter shutdown: {err}");
            }
        }
    }
}

/// True when spans are exported (an OTLP endpoint is configured in the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); read once.
/// [`init`] installs the exporter on it, and hot paths use it to skip span work that
/// only an exported span needs.
pub fn traces_exported() -> bool {
    static EXPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EXPORTED.get_or_init(|| {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
    })
}

/// Installs the global subscriber for `service_name`. Trace export is on only when an
/// OTLP endpoint is configured through the standard OpenTelemetry variables.
pub fn init(service_name: &str, format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn,h2=warn,hyper=warn"));
    let fmt_layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(crate::span_fields::SpanJsonFields)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
    };
    let provider = if traces_exported() {
        Some(otlp_provider(service_name)?)
    } else {
        None
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name.to_owned())));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(TelemetryGuard { provider })
}

/// Builds the OTLP/gRPC exporter with a batch processor; the endpoint, headers and
/// timeouts come from the standard `OTEL_EXPORTER_OTLP_*` variables.
pub fn otlp_provider(service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_owned()),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            other => Err(format!("unknown log format {other:?} (json or pretty)")),
        }
    }
}
