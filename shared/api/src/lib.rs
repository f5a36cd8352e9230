//! Portico's REST API bodies: every request and response body of `/api/v1`, with its
//! serde wire format and its OpenAPI schema (utoipa), in one crate without axum, sqlx
//! or tokio, so the gateway renders them and a Rust client parses them from the same
//! definitions and the two cannot drift.
//!
//! One module per resource:
//!
//! - [`common`]: the problem document of every error answer and the page parameters;
//! - [`schema`]: shared schema pieces (event type and filter patterns) and serde helpers;
//! - [`events`]: events published by internal services;
//! - [`event_types`]: the catalogue of event types Portico delivers;
//! - [`examples`]: examples of the main bodies, shown in the OpenAPI document;
//! - [`webhooks`]: endpoints and their signing secrets;
//! - [`listen`]: listen endpoints (`portico listen`) and their WebSocket messages;
//! - [`deliveries`]: deliveries, their attempts and single retries;
//! - [`retry_jobs`]: retry-failed and its durable jobs;
//! - [`bulk_orders`]: bulk-order batches, their results and orders;
//! - [`integrations`]: partner integrations, credentials and usage;
//! - [`admin`]: the operators' dead-letter API;
//! - [`audit`]: the audit log and its verification;
//!
//! Conversions into domain types (for example [`webhooks::CreateWebhookBody`] into
//! `portico_domain::webhooks::NewWebhook`) live here, next to the body; conversions
//! from the gateway's application types live in the gateway, since this crate cannot
//! see them. Each conversion exists once.
//!
//! Names are stable: the OpenAPI schema names are the type names, and clients import
//! them by path.

pub mod admin;
pub mod audit;
pub mod bulk_orders;
pub mod common;
pub mod deliveries;
pub mod event_types;
pub mod events;
pub mod examples;
pub mod integrations;
pub mod listen;
pub mod retry_jobs;
pub mod schema;
pub mod webhooks;

pub use common::{PROBLEM_JSON, PageQuery, Problem};
