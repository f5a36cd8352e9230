//! `portico-gateway`: parses configuration, binds, and hands over to the library.

use anyhow::Context;
use clap::Parser;
use portico_gateway::config::{Cli, Command};
use portico_gateway::{Listeners, migrate, requeue, run};

/// glibc's malloc was the largest single cost on the request path in profiles
/// (about a quarter of the gateway's CPU under load); mimalloc's per-thread free lists
/// make the many small, short-lived allocations of a request or a delivery cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        portico_telemetry::logging::init("portico-gateway", cli.config.common.log_format)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            migrate(&cli.config).await.context("applying migrations")?;
            tracing::info!("migrations applied");
        }
        Command::Requeue => {
            let requeued = requeue(&cli.config)
                .await
                .context("requeueing unfinished jobs")?;
            tracing::info!(
                batches = requeued.batches,
                retry_jobs = requeued.retry_jobs,
                "unfinished jobs requeued"
            );
        }
        Command::Serve => {
            let http = tokio::net::TcpListener::bind(cli.config.http_addr)
                .await
                .with_context(|| format!("binding REST on {}", cli.config.http_addr))?;
            let grpc = tokio::net::TcpListener::bind(cli.config.grpc_addr)
                .await
                .with_context(|| format!("binding gRPC on {}", cli.config.grpc_addr))?;
            let shutdown = portico_runtime::shutdown::on_signal();
            run(cli.config, Listeners { http, grpc }, shutdown).await?;
        }
        Command::Reseal { batch } => {
            let (report, peppers) = portico_gateway::reseal::run(&cli.config, batch)
                .await
                .context("re-sealing secrets")?;
            tracing::info!(?report, "secrets re-sealed");
            for (pepper, credentials) in peppers {
                tracing::info!(
                    pepper = pepper.as_deref().unwrap_or("(none: before pepper ids)"),
                    credentials,
                    "live API credentials hashed with this pepper"
                );
            }
            // One machine-readable line for scripts and tests.
            println!(
                "{}",
                serde_json::json!({
                    "secretsResealed": report.secrets_resealed,
                    "secretsCurrent": report.secrets_current,
                    "secretsChangedMeanwhile": report.secrets_changed_meanwhile,
                    "secretsUnreadable": report.secrets_unreadable,
                    "webhooksResealed": report.webhooks_resealed,
                    "webhooksCurrent": report.webhooks_current,
                    "webhooksChangedMeanwhile": report.webhooks_changed_meanwhile,
                    "webhooksUnreadable": report.webhooks_unreadable,
                })
            );
            if report.secrets_unreadable + report.webhooks_unreadable > 0 {
                anyhow::bail!(
                    "some values open with no configured key; keep the key that sealed them"
                );
            }
        }
    }
    Ok(())
}
