//! What every Portico service does the same way, written once: its shared settings,
//! connecting to PostgreSQL and NATS, the readiness check, the admin server
//! (`/healthz`, `/readyz`, `/metrics`), the outbox relay and graceful shutdown.
//!
//! # Layout
//! - [`config`]: settings every service shares (database, NATS, stream prefix, logs,
//!   ack wait, replica name), flattened into each service's clap struct.
//! - [`foundation`]: the connections a service starts with, and the tasks built on them.
//! - [`readiness`]: the `/readyz` check (PostgreSQL with a current schema, JetStream).
//! - [`admin`]: the admin router and server every service runs.
//! - [`shutdown`]: SIGTERM/SIGINT turned into a cancellation token.
//! - [`limits`]: the open-files limit raised to what the host allows.

pub mod admin;
pub mod allocator;
pub mod config;
pub mod foundation;
pub mod limits;
pub mod readiness;
pub mod shutdown;

pub use foundation::Foundation;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// PostgreSQL could not be reached or configured.
    #[error(transparent)]
    Storage(#[from] portico_storage::StorageError),
    /// NATS or JetStream could not be reached or configured.
    #[error(transparent)]
    Queue(#[from] portico_queue::QueueError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Telemetry(#[from] portico_telemetry::TelemetryError),
}
