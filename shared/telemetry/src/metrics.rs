//! Prometheus metrics: the recorder and the metric names every service uses.
//!
//! Names live here, once, because the Grafana dashboard and the alert rules in
//! `deploy/observability/` depend on them.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::TelemetryError;

/// REST requests by service, method, route template and status.
pub const HTTP_REQUESTS: &str = "portico_http_requests_total";
/// REST request duration histogram (seconds).
pub const HTTP_DURATION: &str = "portico_http_request_duration_seconds";
/// gRPC requests by method and status code.
pub const GRPC_REQUESTS: &str = "portico_grpc_requests_total";
/// gRPC request duration histogram (seconds).
pub const GRPC_DURATION: &str = "portico_grpc_request_duration_seconds";
/// Delivery attempts by outcome and status class.
pub const DELIVERIES: &str = "portico_deliveries_total";
/// Duration of one outgoing delivery attempt (seconds).
pub const DELIVERY_ATTEMPT_DURATION: &str = "portico_delivery_attempt_duration_seconds";
/// Time from an event being accepted to its successful delivery (seconds).
pub const EVENT_TO_DELIVERY: &str = "portico_event_to_delivery_seconds";
/// Jobs finished by consumer and outcome (ack, nak, term).
pub const JOBS: &str = "portico_jobs_total";
/// Jobs that arrived more than once.
pub const JOBS_REDELIVERED: &str = "portico_jobs_redelivered_total";
/// Jobs recorded in `job_dead_letters` (undecodable, or failing for good), by consumer.
pub const JOBS_DEAD_LETTERED: &str = "portico_jobs_dead_lettered_total";
/// Dead letters no operator has replayed or discarded yet (`job_dead_letters` rows with
/// `resolved_at` unset), set by the batch-processor.
pub const DEAD_LETTERS_UNRESOLVED: &str = "portico_dead_letters_unresolved";
/// Messages waiting in a durable consumer.
pub const QUEUE_PENDING: &str = "portico_queue_pending";
/// 1 while a durable consumer has been delivered past its stream's last sequence (the
/// stream came back from a crash at a lower sequence, and the consumer skips new jobs
/// until the stream passes it), else 0. Alert: `QueueConsumerAheadOfStream`.
pub const QUEUE_CONSUMER_AHEAD_OF_STREAM: &str = "portico_queue_consumer_ahead_of_stream";
/// Outbox rows not yet published.
pub const OUTBOX_PENDING: &str = "portico_outbox_pending";
/// Age of the oldest accepted-but-undispatched job (seconds).
pub const OUTBOX_OLDEST_AGE: &str = "portico_outbox_oldest_age_seconds";
/// Endpoints disabled for failing.
pub const ENDPOINTS_DISABLED: &str = "portico_webhook_endpoints_disabled_total";
/// Orders processed by outcome.
pub const BATCH_ORDERS: &str = "portico_batch_orders_total";
/// Batches currently being processed.
pub const BATCHES_IN_PROGRESS: &str = "portico_batches_in_progress";
/// Credential verifications by result.
pub const CREDENTIAL_VERIFICATIONS: &str = "portico_credential_verifications_total";
/// Usage-log entries dropped because the buffer was full.
pub const USAGE_LOG_DROPPED: &str = "portico_usage_log_dropped_total";
/// Usage-log entries waiting to be written.
pub const USAGE_LOG_BUFFER: &str = "portico_usage_log_buffer_len";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle; later
/// calls (several services in one test process) get the same handle.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let latency_buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?;
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // Another recorder won the race; use whichever handle was stored.
        return HANDLE
            .get()
            .cloned()
            .ok_or_else(|| TelemetryError::Metrics("a foreign recorder is installed".into()));
    }
    let _ = HANDLE.set(handle.clone());
    spawn_upkeep(handle.clone());
    Ok(handle)
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Histogram samples are kept raw until something folds them into buckets; a scrape
/// does, but a process nobody scrapes grew by every sample it ever recorded (the rss
/// benchmark saw the gateway and dispatcher grow by 20-35 bytes per event). A plain
/// thread, so it runs whichever runtime (or none) the process has.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "metrics upkeep thread not started; histograms are folded only when scraped");
    }
}
