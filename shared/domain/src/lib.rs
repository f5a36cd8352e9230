//! Portico's domain: the types and validation rules both doors (REST and gRPC) and the
//! workers share, with no I/O, so every rule lives once and is unit-tested in isolation.
//!
//! # Layout
//! - [`error`]: [`FieldError`], a validation failure with a stable code and a JSON pointer.
//! - [`pagination`]: opaque cursors for `?limit=&cursor=` lists.
//! - [`ids`]: identifiers derived deterministically (event ids from idempotency keys).
//! - [`network`]: the SSRF guard's rules (forbidden address ranges, the operator allowlist, URL form).
//! - [`webhooks`]: webhook configuration rules, event filters and matching, retry policy.
//! - [`retry`]: when a failed delivery is tried again (`Retry-After`, the retry budget).
//! - [`rate`]: the one token bucket of every rate limit, and what its burst means.
//! - [`integrations`]: integration types, credential scopes and field rules.
//! - [`credentials`]: the API key and secret format (prefixes, checksum) and generation.
//! - [`dead_letters`]: how an operator resolved a dead letter, and the list's status filter.
//! - [`event_types`]: the catalogue of event types Portico delivers, with payload schemas and examples.
//! - [`text`]: length and control-character rules for every text field stored in PostgreSQL.
//! - [`orders`]: an order as submitted, parsed into a typed order or field errors with JSON pointers.
//! - [`bulk_orders`]: batch states, result statuses, the chunk layout and the results cursor.
//! - [`wire`]: the one parser of enums with wire names (statuses, resolutions).
//! - [`timestamp`]: the fixed RFC 3339 form (microseconds, UTC) written per message, without `core::fmt`.
//!
//! Feature modules (webhooks, events, bulk orders, integrations) add their own types
//! beside these.

pub mod bulk_orders;
pub mod credentials;
pub mod dead_letters;
pub mod error;
pub mod event_types;
pub mod ids;
pub mod integrations;
pub mod network;
pub mod orders;
pub mod pagination;
pub mod rate;
pub mod retry;
pub mod text;
pub mod timestamp;
pub mod webhooks;
pub mod wire;

pub use error::FieldError;
