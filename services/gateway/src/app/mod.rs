//! The domain operations behind both doors. REST handlers and gRPC methods parse their
//! input, call one function here with the authenticated [`crate::identity::Caller`], and
//! render its result; validation, authorisation and persistence live here, once.

pub mod analytics;
pub mod audit;
pub mod bulk_orders;
pub mod dead_letters;
pub mod events;
pub mod idempotency;
pub mod integration_templates;
pub mod integrations;
pub mod listen;
pub mod preconditions;
pub mod sealing;
pub mod ssrf_guard;
pub mod webhook_deliveries;
pub mod webhooks;
