//! Observability every Portico service shares: logs, traces and metrics.
//!
//! # Layout
//! - [`logging`]: structured JSON logs and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
//!   OpenTelemetry trace export over OTLP/gRPC.
//! - [`metrics`]: the Prometheus recorder and the names of every metric, in one place so
//!   dashboards and alerts have a single source.
//! - [`propagation`]: W3C `traceparent` carried in NATS message headers, so one trace runs
//!   from a gateway request through JetStream into a worker.
//! - [`span_fields`]: span fields kept as JSON text for log lines, written without an
//!   intermediate map.
//!
//! Configuration, readiness, the admin server and shutdown live in `portico-runtime`.

pub mod logging;
pub mod metrics;
pub mod propagation;
pub mod span_fields;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from its configuration.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// The Prometheus recorder could not be installed.
    #[error("metrics recorder: {0}")]
    Metrics(String),
    /// The tracing subscriber was already set.
    #[error("tracing subscriber: {0}")]
    Subscriber(String),
}
