//! Portico's domain: the types and validation rules both doors (REST and gRPC) and the
//! workers share, with no I/O, so every rule lives once and is unit-tested in isolation.
//!
//! # Layout
//! - [`error`]: [`FieldError`], a validation failure with a stable code and a JSON pointer.
//! - [`pagination`]: opaque cursors for `?limit=&cursor=` lists.
//! - [`ids`]: identifiers derived deterministically (event ids from idempotency keys).
//! - [`network`]: the SSRF guard's rules (forbidden address ranges, the operator allowlist, URL form).
//! - [`webhooks`]: webhook configuration rules, event filters and matching, retry policy.
//!
//! Feature modules (webhooks, events, bulk orders, integrations) add their own types
//! beside these.

pub mod error;
pub mod ids;
pub mod network;
pub mod pagination;
pub mod webhooks;

pub use error::FieldError;
