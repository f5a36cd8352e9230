//! `portico-gateway`: parses configuration, binds, and hands over to the library.

use anyhow::Context;
use clap::Parser;
use portico_gateway::config::{Cli, Command};
use portico_gateway::{Listeners, migrate, run};

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
    }
    Ok(())
}
