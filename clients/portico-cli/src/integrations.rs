//! `portico integrations ...`: partner integrations, their credentials and usage.

use clap::Subcommand;
use portico_client::ids::IntegrationId;
use portico_client::{Body, Client, Method, query_pairs};
use serde_json::{Value, json};

use crate::output::{self, Format, Out};

const INTEGRATION_COLUMNS: &[&str] = &[
    "id",
    "name",
    "type",
    "active",
    "scopes",
    "apiKey",
    "lastUsedAt",
];

/// `portico integrations`.
#[derive(Debug, Subcommand)]
pub enum IntegrationsCmd {
    /// Create an integration and its first credentials (the secret is shown only once).
    #[command(after_help = "Examples:
  portico integrations create --name 'Acme ERP' --type erp --scope orders:write --scope orders:read
  portico integrations create --name Shop --type ecommerce --webhook-url https://shop.example.com/hooks -o json")]
    Create {
        /// Display name (1-200 characters).
        #[arg(long)]
        name: String,
        /// Integration type (e.g. erp, ecommerce, marketplace, custom).
        #[arg(long = "type")]
        integration_type: String,
        /// Where the partner receives webhooks.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Scope granted (repeatable or comma-separated).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// RFC 3339 expiry of the credentials.
        #[arg(long)]
        expires_at: Option<String>,
        /// Requests per second.
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Requests per day.
        #[arg(long)]
        daily_quota: Option<u64>,
    },
    /// List integrations, newest first.
    List {
        /// Only this type.
        #[arg(long = "type")]
        integration_type: Option<String>,
        /// Most rows to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one integration.
    Get {
        /// Integration id.
        id: IntegrationId,
    },
    /// Delete an integration (its credentials stop working).
    Delete {
        /// Integration id.
        id: IntegrationId,
    },
    /// Issue new credentials; the old secret keeps working for the grace period.
    Regenerate {
        /// Integration id.
        id: IntegrationId,
        /// Seconds the old secret keeps working.
        #[arg(long)]
        grace_period: Option<u32>,
    },
    /// The usage log with totals by status and route. Without an id: the calling
    /// partner's own usage (partner credentials).
    #[command(after_help = "Examples:
  portico integrations usage <ID> --from 2026-01-31T00:00:00Z
  portico integrations usage --api-key pk_... --api-secret sk_...")]
    Usage {
        /// Integration id (omit with partner credentials).
        id: Option<IntegrationId>,
        /// RFC 3339 start.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 end.
        #[arg(long)]
        to: Option<String>,
        /// Most entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Runs `portico integrations ...`.
pub async fn run(cmd: IntegrationsCmd, client: &Client, out: Out) -> anyhow::Result<()> {
    match cmd {
        IntegrationsCmd::Create {
            name,
            integration_type,
            webhook_url,
            scopes,
            expires_at,
            rate_limit,
            daily_quota,
        } => {
            let mut body = json!({"name": name, "type": integration_type});
            if let Some(v) = webhook_url {
                body["webhookUrl"] = v.into();
            }
            if !scopes.is_empty() {
                body["scopes"] = scopes.into();
            }
            if let Some(v) = expires_at {
                body["expiresAt"] = v.into();
            }
            if let Some(v) = rate_limit {
                body["rateLimitPerSecond"] = v.into();
            }
            if let Some(v) = daily_quota {
                body["dailyQuota"] = v.into();
            }
            let created: Value = client
                .call(Method::POST, "/integrations", &[], Body::json(&body)?)
                .await?;
            out.one(&created)?;
            if out.format == Format::Table {
                eprintln!("store the API secret now: it is not shown again");
            }
            Ok(())
        }
        IntegrationsCmd::List {
            integration_type,
            limit,
        } => {
            let query = query_pairs(&[
                ("type", integration_type),
                ("limit", Some(limit.to_string())),
            ]);
            let page: Value = client
                .call(Method::GET, "/integrations", &query, Body::Empty)
                .await?;
            out.list(
                page["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                INTEGRATION_COLUMNS,
            )
        }
        IntegrationsCmd::Get { id } => {
            let v: Value = client
                .call(
                    Method::GET,
                    &format!("/integrations/{id}"),
                    &[],
                    Body::Empty,
                )
                .await?;
            out.one(&v)
        }
        IntegrationsCmd::Delete { id } => {
            client
                .call_empty(
                    Method::DELETE,
                    &format!("/integrations/{id}"),
                    &[],
                    Body::Empty,
                )
                .await?;
            out.message(
                &format!("deleted integration {id}"),
                &json!({"deleted": true, "id": id}),
            )
        }
        IntegrationsCmd::Regenerate { id, grace_period } => {
            let body = json!({ "gracePeriodSeconds": grace_period });
            let v: Value = client
                .call(
                    Method::POST,
                    &format!("/integrations/{id}/regenerate-credentials"),
                    &[],
                    Body::json(&body)?,
                )
                .await?;
            out.one(&v)
        }
        IntegrationsCmd::Usage {
            id,
            from,
            to,
            limit,
        } => {
            let query = query_pairs(&[
                ("from", from),
                ("to", to),
                ("limit", Some(limit.to_string())),
            ]);
            let path = match id {
                Some(id) => format!("/integrations/{id}/usage"),
                None => "/integrations/me/usage".to_owned(),
            };
            let page: Value = client.call(Method::GET, &path, &query, Body::Empty).await?;
            if out.format == Format::Json {
                return out.one(&page);
            }
            output::write_stdout(&output::details(&json!({"totals": page["totals"]})))?;
            output::write_stdout("\n")?;
            out.list(
                page["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &[
                    "occurredAt",
                    "method",
                    "route",
                    "status",
                    "latencyUs",
                    "clientIp",
                ],
            )
        }
    }
}
