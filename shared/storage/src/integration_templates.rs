//! Integration templates users save (`integration_templates`), and creating an
//! integration from a template: the integration, its first credential and its webhook
//! subscription in one transaction.
//!
//! Every statement is scoped by `user_id`, so another user's template is simply not
//! found. Templates are named by their key (primary key `(user_id, key)`), which also
//! orders the owner's list: a page is an index range scan after the last key seen.
//! The built-in templates are not stored: they ship with the gateway.

use chrono::{DateTime, Utc};
use portico_domain::ids::IntegrationId;

use crate::integrations::{self, NewIntegration};
use crate::webhooks::{self, WebhookRow, WebhookValues};

/// One saved template as its owner reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRow {
    /// The key, unique per owner.
    pub key: String,
    /// Display name.
    pub name: String,
    /// What the template is for.
    pub description: String,
    /// An integration type name from the fixed list.
    pub integration_type: String,
    /// Scope names an integration gets by default.
    pub scopes: Vec<String>,
    /// Scope names a request may choose from; `None` = any.
    pub allowed_scopes: Option<Vec<String>>,
    /// Requests per second (0 = unlimited).
    pub rate_limit_per_second: i32,
    /// Calls per UTC day (0 = unlimited).
    pub daily_quota: i32,
    /// Event filters of the webhook subscription.
    pub events: Vec<String>,
    /// Request field names that may override the defaults.
    pub overridable: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed by its owner.
    pub updated_at: DateTime<Utc>,
}

/// The owner-set columns of a template, validated by the caller: one struct for insert
/// and update, so they cannot disagree on a column.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    /// Display name.
    pub name: &'a str,
    /// What the template is for.
    pub description: &'a str,
    /// An integration type name.
    pub integration_type: &'a str,
    /// Default scope names.
    pub scopes: &'a [String],
    /// Scope names a request may choose from; `None` = any.
    pub allowed_scopes: Option<&'a [String]>,
    /// Requests per second.
    pub rate_limit_per_second: i32,
    /// Calls per UTC day.
    pub daily_quota: i32,
    /// Event filters.
    pub events: &'a [String],
    /// Overridable request field names.
    pub overridable: &'a [String],
}

/// Inserts a template; `None` when the owner already has one with this key.
pub async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    key: &str,
    values: &TemplateValues<'_>,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as!(
        TemplateRow,
        "INSERT INTO integration_templates (user_id, key, name, description, integration_type,
             scopes, allowed_scopes, rate_limit_per_second, daily_quota, events, overridable)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (user_id, key) DO NOTHING
         RETURNING key, name, description, integration_type, scopes, allowed_scopes,
             rate_limit_per_second, daily_quota, events, overridable, created_at, updated_at",
        user_id,
        key,
        values.name,
        values.description,
        values.integration_type,
        values.scopes,
        values.allowed_scopes,
        values.rate_limit_per_second,
        values.daily_quota,
        values.events,
        values.overridable,
    )
    .fetch_optional(executor)
    .await
}

/// One of `user_id`'s templates.
pub async fn get(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    key: &str,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as!(
        TemplateRow,
        "SELECT key, name, description, integration_type, scopes, allowed_scopes,
             rate_limit_per_second, daily_quota, events, overridable, created_at, updated_at
         FROM integration_templates WHERE user_id = $1 AND key = $2",
        user_id,
        key,
    )
    .fetch_optional(executor)
    .await
}

/// Up to `limit` of `user_id`'s templates in key order, after the key `after`.
pub async fn list(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<TemplateRow>, sqlx::Error> {
    sqlx::query_as!(
        TemplateRow,
        "SELECT key, name, description, integration_type, scopes, allowed_scopes,
             rate_limit_per_second, daily_quota, events, overridable, created_at, updated_at
         FROM integration_templates
         WHERE user_id = $1 AND ($2::text IS NULL OR key > $2)
         ORDER BY key
         LIMIT $3",
        user_id,
        after,
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Replaces every owner-set column of one of `user_id`'s templates (the caller merged
/// its patch into the current row) and bumps `updated_at`; `None` when it does not
/// exist.
pub async fn update(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    key: &str,
    values: &TemplateValues<'_>,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as!(
        TemplateRow,
        "UPDATE integration_templates SET
             name = $3, description = $4, integration_type = $5, scopes = $6,
             allowed_scopes = $7, rate_limit_per_second = $8, daily_quota = $9,
             events = $10, overridable = $11, updated_at = now()
         WHERE user_id = $1 AND key = $2
         RETURNING key, name, description, integration_type, scopes, allowed_scopes,
             rate_limit_per_second, daily_quota, events, overridable, created_at, updated_at",
        user_id,
        key,
        values.name,
        values.description,
        values.integration_type,
        values.scopes,
        values.allowed_scopes,
        values.rate_limit_per_second,
        values.daily_quota,
        values.events,
        values.overridable,
    )
    .fetch_optional(executor)
    .await
}

/// Deletes one of `user_id`'s templates; false when it does not exist. Integrations
/// created from it are not affected.
pub async fn delete(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM integration_templates WHERE user_id = $1 AND key = $2",
        user_id,
        key,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

/// Everything an integration created from a template writes, validated by the caller.
#[derive(Debug, Clone, Copy)]
pub struct IntegrationWithWebhook<'a> {
    /// The integration row (its `user_id` owns the webhook too).
    pub integration: NewIntegration<'a>,
    /// Public key id of its first credential.
    pub api_key: &'a str,
    /// Keyed hash of that credential's secret.
    pub secret_hash: &'a [u8],
    /// The webhook subscription.
    pub webhook: WebhookValues<'a>,
    /// The webhook's sealed signing secret.
    pub sealed_secret: &'a [u8],
}

/// Creates an integration, its first credential and its webhook subscription in one
/// transaction, with the same statements as creating each alone
/// ([`integrations::insert`], [`integrations::insert_credential`],
/// [`webhooks::insert_with_secret`]): if any step fails, nothing is written. Runs in
/// the caller's transaction, so the caller's audit record commits with it.
pub async fn create_integration_with_webhook(
    tx: &mut sqlx::PgConnection,
    new: &IntegrationWithWebhook<'_>,
) -> Result<(IntegrationId, WebhookRow), sqlx::Error> {
    integrations::insert(&mut *tx, &new.integration).await?;
    integrations::insert_credential(&mut *tx, new.integration.id, new.api_key, new.secret_hash)
        .await?;
    let webhook = webhooks::insert_with_secret(
        &mut *tx,
        new.integration.user_id,
        &new.webhook,
        new.sealed_secret,
    )
    .await?;
    Ok((new.integration.id, webhook))
}
