//! `portico audit ...`: the caller's user's audit log (`GET /api/audit-log`, every
//! filter the API offers) and the check of its hash chain (`GET /api/audit-log/verify`),
//! so an owner reads who changed what, and a script fails when a record was edited or
//! removed. Users and internal services only: partner credentials are refused (exit 4).

use clap::Subcommand;
use futures::{StreamExt, TryStreamExt};
use portico_client::Client;
use portico_client::api::audit::{AuditLogQuery, AuditVerifyQuery};

use crate::exit::{self, Exit};
use crate::integrations::time;
use crate::output::{Format, Out};

const RECORD_COLUMNS: &[&str] = &[
    "seq",
    "at",
    "actor.kind",
    "actor.id",
    "action",
    "resourceType",
    "resourceId",
    "changes.fields",
];

/// `portico audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit records, newest first; every filter is an exact match.
    #[command(after_help = "Examples:
  portico audit list --resource-type webhook --since 2026-12-01T00:00:00Z
  portico audit list --action integration.credentials_regenerated --limit 10 -o json
  portico audit list --actor-kind partner --actor-id <INTEGRATION_ID>")]
    List {
        /// Only this action, e.g. webhook.updated.
        #[arg(long)]
        action: Option<String>,
        /// Only this resource type, e.g. webhook, integration, bulk_batch.
        #[arg(long)]
        resource_type: Option<String>,
        /// Only this resource id.
        #[arg(long)]
        resource_id: Option<String>,
        /// Only this kind of actor: user, service, partner or operator.
        #[arg(long)]
        actor_kind: Option<String>,
        /// Only this actor id (a user id, an integration id, an operator's name).
        #[arg(long)]
        actor_id: Option<String>,
        /// RFC 3339: recorded at or after.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339: recorded before.
        #[arg(long)]
        until: Option<String>,
        /// Most records to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Recompute the hash chain: valid, or the first record edited or removed.
    #[command(after_help = "Examples:
  portico audit verify
  portico audit verify --from-seq 120 -o json

Exit code 0 when the chain is intact, 8 when a record was edited or removed. Keep the
`head` it prints: a later verification that still passes through it proves nothing
before it changed.")]
    Verify {
        /// Start at this sequence number, trusting its prevHash (default: the oldest
        /// retained record).
        #[arg(long)]
        from_seq: Option<i64>,
    },
}

/// Runs `portico audit ...`.
pub async fn run(cmd: AuditCmd, client: &Client, out: Out) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::List {
            action,
            resource_type,
            resource_id,
            actor_kind,
            actor_id,
            since,
            until,
            limit,
        } => {
            let filter = AuditLogQuery {
                action,
                resource_type,
                resource_id,
                actor_kind,
                actor_id,
                since: time(since, "--since")?.map(|t| t.to_rfc3339()),
                until: time(until, "--until")?.map(|t| t.to_rfc3339()),
                limit: Some(u32::try_from(limit.clamp(1, 500)).unwrap_or(500)),
                cursor: None,
            };
            let records: Vec<_> = client.audit_log(filter).take(limit).try_collect().await?;
            out.list(&records, RECORD_COLUMNS)
        }
        AuditCmd::Verify { from_seq } => {
            let verification = client
                .verify_audit_log(&AuditVerifyQuery { from_seq })
                .await?;
            if verification.valid || out.format == Format::Json {
                out.one(&verification)?;
            }
            if verification.valid {
                return Ok(());
            }
            Err(Exit::new(
                exit::AUDIT_CHAIN_BROKEN,
                format!(
                    "the audit chain is broken at record {} ({}): {} ({} records intact before it, from {})",
                    verification.broken_at.unwrap_or_default(),
                    verification.reason.as_deref().unwrap_or("unknown"),
                    verification.detail.as_deref().unwrap_or("no detail"),
                    verification.records,
                    verification.from_seq,
                ),
            )
            .into())
        }
    }
}
