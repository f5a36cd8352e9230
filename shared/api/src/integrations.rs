//! Partner integrations, their credentials and usage log: `/integrations`,
//! `/integrations/{id}`, `/integrations/{id}/credentials/regenerate`,
//! `/integrations/{id}/usage`, `/integrations/verify`, `/integrations/me` and
//! `/integrations/me/usage`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::integrations::{IntegrationType, Scope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::schema::double_option;

/// An integration (never with its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::integration))]
pub struct IntegrationBody {
    /// Its id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// What kind of partner system it connects.
    #[serde(rename = "type")]
    pub integration_type: IntegrationType,
    /// Where the partner wants events.
    pub webhook_url: Option<String>,
    /// What its credentials may do.
    pub scopes: Vec<Scope>,
    /// False when deactivated (its credentials are refused).
    pub active: bool,
    /// The current public key id (`ptk_...`).
    pub api_key: Option<String>,
    /// When its credentials stop working; null = never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per second (burst twice that); 0 = unlimited.
    pub rate_limit_per_second: u32,
    /// Calls per UTC day; 0 = unlimited.
    pub daily_quota: u64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed by its owner.
    pub updated_at: DateTime<Utc>,
    /// Last call admitted with its credentials; null = never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Credentials, shown once: store the secret now, it cannot be shown again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsBody {
    /// Public key id, `ptk_` + 24 characters.
    pub api_key: String,
    /// Secret, `pts_` + 38 characters (the last 6 a checksum).
    pub api_secret: String,
}

/// An integration with freshly issued credentials (create and regenerate).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::integration_with_credentials))]
pub struct IntegrationWithCredentialsBody {
    /// The integration.
    #[serde(flatten)]
    pub integration: IntegrationBody,
    /// The new credentials, shown this once.
    pub credentials: CredentialsBody,
    /// Regenerate only: when the previous secret stops working (null: revoked at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// A new integration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(examples(crate::examples::create_integration))]
pub struct CreateIntegrationBody {
    /// 1-200 characters, not blank, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// What kind of partner system it connects.
    #[serde(rename = "type")]
    #[schema(value_type = IntegrationType)]
    pub integration_type: String,
    /// Optional http(s) URL.
    pub webhook_url: Option<String>,
    /// Default: bulk_orders:write, bulk_orders:read, orders:read.
    #[schema(value_type = Option<Vec<Scope>>)]
    pub scopes: Option<Vec<String>>,
    /// When the credentials stop working; must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// Default: the server's (50); 0 = unlimited.
    pub rate_limit_per_second: Option<u32>,
    /// Default: the server's (0 = unlimited).
    pub daily_quota: Option<u64>,
}

/// Absent leaves a field unchanged; `null` clears the nullable ones.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateIntegrationBody {
    /// New name.
    pub name: Option<String>,
    /// New type.
    #[serde(rename = "type")]
    #[schema(value_type = Option<IntegrationType>)]
    pub integration_type: Option<String>,
    /// New webhook URL; null removes it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub webhook_url: Option<Option<String>>,
    /// Replaces every scope.
    #[schema(value_type = Option<Vec<Scope>>)]
    pub scopes: Option<Vec<String>>,
    /// Activate or deactivate the credentials.
    pub active: Option<bool>,
    /// New expiry; null = never.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// 0 = unlimited.
    pub rate_limit_per_second: Option<u32>,
    /// 0 = unlimited.
    pub daily_quota: Option<u64>,
}

/// Regenerate options.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegenerateBody {
    /// How long the previous secret keeps working (default 86400; 0 revokes it at once).
    pub grace_period_seconds: Option<u32>,
}

/// A key and secret to check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyBody {
    /// `ptk_...`
    pub api_key: String,
    /// `pts_...`
    pub api_secret: String,
}

/// The verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResultBody {
    /// True when valid, current and one of the caller's integrations.
    pub valid: bool,
    /// Set when valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<Uuid>,
    /// Set when valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
}

/// A page of integrations.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::integration_list))]
pub struct IntegrationListBody {
    /// Newest first.
    pub data: Vec<IntegrationBody>,
    /// Pass as `cursor` for the next page; null = no more.
    pub next_cursor: Option<String>,
}

/// List filters.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only integrations of this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<IntegrationType>)]
    pub integration_type: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// From a previous page's `nextCursor`.
    pub cursor: Option<String>,
}

/// Usage range and page.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Inclusive lower bound (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// From a previous page's `nextCursor`.
    pub cursor: Option<String>,
}

/// One logged call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageEntryBody {
    /// HTTP method.
    pub method: String,
    /// Route template, e.g. `/api/bulk-orders/{id}`.
    pub route: String,
    /// Status answered.
    pub status: u16,
    /// Microseconds to the response head.
    pub latency_us: u64,
    /// Client address.
    pub client_ip: Option<String>,
    /// When the call arrived.
    pub occurred_at: DateTime<Utc>,
}

/// Totals over the range (all pages).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotalsBody {
    /// Calls in the range.
    pub total: u64,
    /// By status code, e.g. `{"200": 12, "429": 1}`.
    pub by_status: BTreeMap<String, u64>,
    /// By `METHOD route`, e.g. `{"POST /api/bulk-orders": 3}`.
    pub by_route: BTreeMap<String, u64>,
}

/// A page of the usage log with the range's totals.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePageBody {
    /// Newest first.
    pub data: Vec<UsageEntryBody>,
    /// Pass as `cursor` for the next page; null = no more.
    pub next_cursor: Option<String>,
    /// Totals over the whole range.
    pub totals: UsageTotalsBody,
}

/// The calling partner's integration with today's usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentIntegrationBody {
    /// The integration.
    #[serde(flatten)]
    pub integration: IntegrationBody,
    /// Calls since 00:00 UTC (the quota's day); written in batches, so up to a
    /// quarter of a second behind.
    pub usage_today: UsageTotalsBody,
}
