//! `portico integrations ...`: partner integrations, their credentials and usage.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use futures::{StreamExt, TryStreamExt};
use portico_client::Client;
use portico_client::api::integrations::{CreateIntegrationBody, UsageParams};
use portico_client::ids::IntegrationId;
use serde_json::json;

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
        limit: usize,
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

/// Parses an RFC 3339 flag value, naming the flag when it is not one (shared by the
/// commands that take times).
pub(crate) fn time(text: Option<String>, flag: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|d| d.with_timezone(&Utc))
            .with_context(|| format!("{flag} {t:?} is not an RFC 3339 time (2026-01-31T12:00:00Z)"))
    })
    .transpose()
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
            let body = CreateIntegrationBody {
                name,
                integration_type,
                webhook_url,
                scopes: (!scopes.is_empty()).then_some(scopes),
                expires_at: time(expires_at, "--expires-at")?,
                rate_limit_per_second: rate_limit,
                daily_quota,
            };
            let created = client.create_integration(&body).await?;
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
            let page = u32::try_from(limit.clamp(1, 500)).unwrap_or(500);
            let items: Vec<_> = client
                .integrations(integration_type, Some(page))
                .take(limit)
                .try_collect()
                .await?;
            out.list(&items, INTEGRATION_COLUMNS)
        }
        IntegrationsCmd::Get { id } => out.one(&client.get_integration(id).await?),
        IntegrationsCmd::Delete { id } => {
            client.delete_integration(id).await?;
            out.message(
                &format!("deleted integration {id}"),
                &json!({"deleted": true, "id": id}),
            )
        }
        IntegrationsCmd::Regenerate { id, grace_period } => {
            out.one(&client.regenerate_credentials(id, grace_period).await?)
        }
        IntegrationsCmd::Usage {
            id,
            from,
            to,
            limit,
        } => {
            let params = UsageParams {
                from: time(from, "--from")?,
                to: time(to, "--to")?,
                limit: Some(limit),
                cursor: None,
            };
            let page = match id {
                Some(id) => client.integration_usage(id, &params).await?,
                None => client.current_usage(&params).await?,
            };
            if out.format == Format::Json {
                return out.one(&page);
            }
            output::write_stdout(&output::details(&json!({"totals": page.totals})))?;
            output::write_stdout("\n")?;
            out.list(
                &page.data,
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
