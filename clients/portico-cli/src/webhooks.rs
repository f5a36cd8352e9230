//! `portico webhooks ...` and `portico deliveries ...`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::{StreamExt, TryStreamExt};
use portico_client::Client;
use portico_client::api::retry_jobs::RetryFailedBody;
use portico_client::api::webhooks::{CreateWebhookBody, RetryPolicyInput, UpdateWebhookBody};
use portico_client::domain::webhooks::RetryJobStatus;
use portico_client::ids::{DeliveryId, WebhookId};
use portico_client::webhooks::{DeliveryFilter, RetryFailedOutcome};
use serde_json::json;

use crate::output::{Format, Out};
use crate::progress::Progress;

const WEBHOOK_COLUMNS: &[&str] = &["id", "url", "events", "active", "createdAt"];
const DELIVERY_COLUMNS: &[&str] = &[
    "id",
    "eventType",
    "status",
    "attempts",
    "lastStatusCode",
    "createdAt",
];

/// `portico webhooks`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCmd {
    /// List webhooks, newest first.
    #[command(
        after_help = "Examples:\n  portico webhooks list\n  portico webhooks list --all -o json | jq -r '.[].url'"
    )]
    List {
        /// Most rows to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Every webhook (follows every page).
        #[arg(long, conflicts_with = "limit")]
        all: bool,
    },
    /// Create a webhook; prints its signing secret once.
    #[command(after_help = "Examples:
  portico webhooks create --url https://example.com/hooks --event 'order.*'
  portico webhooks create --url https://example.com/hooks -e order.created -e order.cancelled \\
      --header 'X-Team: billing' --max-retries 8 --rate-limit 50 --ordering")]
    Create {
        /// Absolute http(s) URL the events are POSTed to.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        fields: WebhookFields,
    },
    /// Show one webhook.
    Get {
        /// Webhook id.
        id: WebhookId,
    },
    /// Change a webhook; only the options given change.
    #[command(after_help = "Examples:
  portico webhooks update <ID> --disable
  portico webhooks update <ID> --enable --event 'order.*' --clear-rate-limit")]
    Update {
        /// Webhook id.
        id: WebhookId,
        /// New URL.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        fields: WebhookFields,
        /// Re-enable (clears the reason Portico disabled it for).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable: events are no longer delivered.
        #[arg(long)]
        disable: bool,
        /// Remove the description.
        #[arg(long, conflicts_with = "description")]
        clear_description: bool,
        /// Remove the rate limit.
        #[arg(long, conflicts_with = "rate_limit")]
        clear_rate_limit: bool,
        /// Turn per-key ordering off.
        #[arg(long, conflicts_with = "ordering")]
        no_ordering: bool,
    },
    /// Delete a webhook.
    Delete {
        /// Webhook id.
        id: WebhookId,
    },
    /// Show the current signing secret.
    Secret {
        /// Webhook id.
        id: WebhookId,
    },
    /// Rotate the signing secret; the old one keeps signing during the grace period.
    RotateSecret {
        /// Webhook id.
        id: WebhookId,
        /// Seconds the old secret keeps signing (server default 86400; 0 = stop now).
        #[arg(long)]
        grace_period: Option<i64>,
    },
    /// Send a portico.test event to this webhook only.
    Test {
        /// Webhook id.
        id: WebhookId,
    },
}

/// Fields create and update share.
#[derive(Debug, clap::Args)]
pub struct WebhookFields {
    /// Event filter (repeatable or comma-separated): `order.created`, `order.*`, `*`.
    #[arg(long = "event", short = 'e', value_delimiter = ',')]
    events: Vec<String>,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// Custom header sent with every delivery, `Name: value` (repeatable; replaces all).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Retries after the first attempt (0-20).
    #[arg(long)]
    max_retries: Option<i64>,
    /// First retry delay, ms.
    #[arg(long)]
    base_delay_ms: Option<i64>,
    /// Largest retry delay, ms.
    #[arg(long)]
    max_delay_ms: Option<i64>,
    /// Deliveries per second (1-10000).
    #[arg(long)]
    rate_limit: Option<i64>,
    /// Concurrent deliveries (1-1000).
    #[arg(long)]
    max_concurrency: Option<i64>,
    /// Deliver events with the same ordering key in order.
    #[arg(long)]
    ordering: bool,
}

impl WebhookFields {
    fn headers(&self) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        if self.headers.is_empty() {
            return Ok(None);
        }
        self.headers
            .iter()
            .map(|h| {
                let (k, v) = h
                    .split_once(':')
                    .or_else(|| h.split_once('='))
                    .with_context(|| format!("--header {h:?}: expected 'Name: value'"))?;
                Ok((k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect::<anyhow::Result<_>>()
            .map(Some)
    }

    fn retry_policy(&self) -> Option<RetryPolicyInput> {
        (self.max_retries.is_some() || self.base_delay_ms.is_some() || self.max_delay_ms.is_some())
            .then_some(RetryPolicyInput {
                max_retries: self.max_retries,
                base_delay_ms: self.base_delay_ms,
                max_delay_ms: self.max_delay_ms,
            })
    }
}

/// `portico deliveries`.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCmd {
    /// List a webhook's deliveries, newest first.
    #[command(after_help = "Examples:
  portico deliveries list <WEBHOOK_ID> --status failed
  portico deliveries list <WEBHOOK_ID> --event-type order.created --since 2026-01-31T00:00:00Z --all -o json")]
    List {
        /// Webhook id.
        webhook: WebhookId,
        /// pending, delivering, succeeded, retrying or failed.
        #[arg(long)]
        status: Option<String>,
        /// Exact event type.
        #[arg(long)]
        event_type: Option<String>,
        /// RFC 3339: created at or after.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339: created before.
        #[arg(long)]
        until: Option<String>,
        /// Most rows to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Every matching delivery.
        #[arg(long, conflicts_with = "limit")]
        all: bool,
    },
    /// Show a delivery with every attempt.
    Get {
        /// Webhook id.
        webhook: WebhookId,
        /// Delivery id.
        delivery: DeliveryId,
    },
    /// Attempt a delivery again now.
    Retry {
        /// Webhook id.
        webhook: WebhookId,
        /// Delivery id.
        delivery: DeliveryId,
        /// Retries after this attempt (default: the webhook's policy).
        #[arg(long)]
        max_retries: Option<i64>,
    },
    /// Follow delivery attempts live, one line each (the live WebSocket).
    Tail(crate::tail::TailArgs),
    /// Retry every failed delivery of a webhook (a durable job), showing its progress.
    #[command(after_help = "Examples:
  portico deliveries retry-failed <WEBHOOK_ID> --dry-run
  portico deliveries retry-failed <WEBHOOK_ID> --status failed,retrying --since 2026-01-31T00:00:00Z")]
    RetryFailed {
        /// Webhook id.
        webhook: WebhookId,
        /// Statuses to retry: failed and/or retrying (default failed).
        #[arg(long = "status", value_delimiter = ',')]
        statuses: Vec<String>,
        /// Exact event type.
        #[arg(long)]
        event_type: Option<String>,
        /// RFC 3339: created at or after.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339: created before.
        #[arg(long)]
        until: Option<String>,
        /// Retries per delivery from now on.
        #[arg(long)]
        max_retries: Option<i64>,
        /// Only count the matching deliveries.
        #[arg(long)]
        dry_run: bool,
        /// Return once the job is created instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
}

/// Runs `portico webhooks ...`.
pub async fn run_webhooks(cmd: WebhooksCmd, client: &Client, out: Out) -> anyhow::Result<()> {
    match cmd {
        WebhooksCmd::List { limit, all } => {
            let limit = if all { usize::MAX } else { limit };
            let page = u32::try_from(limit.clamp(1, 500)).unwrap_or(500);
            let items: Vec<_> = client
                .webhooks(Some(page))
                .take(limit)
                .try_collect()
                .await?;
            out.list(&items, WEBHOOK_COLUMNS)
        }
        WebhooksCmd::Create { url, fields } => {
            if fields.events.is_empty() {
                bail!("give at least one --event filter (e.g. --event 'order.*')");
            }
            let body = CreateWebhookBody {
                url,
                events: fields.events.clone(),
                description: fields.description.clone(),
                headers: fields.headers()?,
                retry_policy: fields.retry_policy(),
                rate_limit_per_second: fields.rate_limit,
                max_concurrency: fields.max_concurrency,
                ordering_enabled: fields.ordering.then_some(true),
            };
            let created = client.create_webhook(&body).await?;
            out.one(&created)?;
            if out.format == Format::Table {
                eprintln!(
                    "keep the secret: it verifies every delivery (portico webhooks secret shows it again)"
                );
            }
            Ok(())
        }
        WebhooksCmd::Get { id } => out.one(&client.get_webhook(id).await?),
        WebhooksCmd::Update {
            id,
            url,
            fields,
            enable,
            disable,
            clear_description,
            clear_rate_limit,
            no_ordering,
        } => {
            let patch = UpdateWebhookBody {
                url,
                events: (!fields.events.is_empty()).then(|| fields.events.clone()),
                description: if clear_description {
                    Some(None)
                } else {
                    fields.description.clone().map(Some)
                },
                active: if enable {
                    Some(true)
                } else if disable {
                    Some(false)
                } else {
                    None
                },
                headers: fields.headers()?,
                retry_policy: fields.retry_policy(),
                rate_limit_per_second: if clear_rate_limit {
                    Some(None)
                } else {
                    fields.rate_limit.map(Some)
                },
                max_concurrency: fields.max_concurrency.map(Some),
                ordering_enabled: if fields.ordering {
                    Some(true)
                } else if no_ordering {
                    Some(false)
                } else {
                    None
                },
            };
            out.one(&client.update_webhook(id, &patch).await?)
        }
        WebhooksCmd::Delete { id } => {
            client.delete_webhook(id).await?;
            out.message(
                &format!("deleted webhook {id}"),
                &json!({"deleted": true, "id": id}),
            )
        }
        WebhooksCmd::Secret { id } => out.one(&client.get_webhook_secret(id).await?),
        WebhooksCmd::RotateSecret { id, grace_period } => {
            out.one(&client.rotate_webhook_secret(id, grace_period).await?)
        }
        WebhooksCmd::Test { id } => {
            let sent = client.send_test_event(id).await?;
            out.message(
                &format!(
                    "test event {} sent; follow it with: portico deliveries list {id}",
                    sent.event_id
                ),
                &sent,
            )
        }
    }
}

/// Runs `portico deliveries ...`.
pub async fn run_deliveries(cmd: DeliveriesCmd, client: &Client, out: Out) -> anyhow::Result<()> {
    match cmd {
        DeliveriesCmd::Tail(args) => crate::tail::run(args, client, out).await,
        DeliveriesCmd::List {
            webhook,
            status,
            event_type,
            since,
            until,
            limit,
            all,
        } => {
            let limit = if all { usize::MAX } else { limit };
            let filter = DeliveryFilter {
                status,
                event_type,
                since,
                until,
                limit: Some(u32::try_from(limit.clamp(1, 500)).unwrap_or(500)),
            };
            let items: Vec<_> = client
                .deliveries(webhook, &filter)
                .take(limit)
                .try_collect()
                .await?;
            out.list(&items, DELIVERY_COLUMNS)
        }
        DeliveriesCmd::Get { webhook, delivery } => {
            let detail = client.get_delivery(webhook, delivery).await?;
            if out.format == Format::Json {
                return out.one(&detail);
            }
            let mut summary = serde_json::to_value(&detail)?;
            if let Some(map) = summary.as_object_mut() {
                map.remove("attempts");
            }
            crate::output::write_stdout(&crate::output::details(&summary))?;
            crate::output::write_stdout("\nattempts:\n")?;
            out.list(
                &detail.attempts,
                &[
                    "attemptNumber",
                    "startedAt",
                    "responseStatus",
                    "latencyMs",
                    "errorKind",
                    "errorMessage",
                ],
            )
        }
        DeliveriesCmd::Retry {
            webhook,
            delivery,
            max_retries,
        } => out.one(
            &client
                .retry_delivery(webhook, delivery, max_retries)
                .await?,
        ),
        DeliveriesCmd::RetryFailed {
            webhook,
            statuses,
            event_type,
            since,
            until,
            max_retries,
            dry_run,
            no_wait,
        } => {
            let body = RetryFailedBody {
                dry_run: Some(dry_run),
                statuses: (!statuses.is_empty()).then_some(statuses),
                event_type,
                since,
                until,
                max_retries,
            };
            match client.retry_failed(webhook, &body).await? {
                RetryFailedOutcome::DryRun { matched } => out.message(
                    &format!("{matched} deliveries would be retried"),
                    &json!({"dryRun": true, "matched": matched}),
                ),
                RetryFailedOutcome::Job { job, .. } => {
                    if no_wait {
                        return out.one(&job);
                    }
                    let mut bar = Progress::new("retrying", out.format == Format::Json);
                    let mut job = *job;
                    loop {
                        bar.update(job.processed, job.total, job.status.as_str());
                        if matches!(
                            job.status,
                            RetryJobStatus::Completed | RetryJobStatus::Cancelled
                        ) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        job = client.get_retry_job(webhook, job.id.into()).await?;
                    }
                    bar.finish();
                    out.one(&job)
                }
            }
        }
    }
}
