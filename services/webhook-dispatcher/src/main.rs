//! `portico-webhook-dispatcher`: parses configuration, binds, and hands over to the library.

use anyhow::Context;
use clap::Parser;
use portico_webhook_dispatcher::config::DispatcherConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = DispatcherConfig::parse();
    let _telemetry =
        portico_telemetry::logging::init("portico-webhook-dispatcher", config.common.log_format)?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding admin on {}", config.http_addr))?;
    let shutdown = portico_telemetry::shutdown::on_signal();
    portico_webhook_dispatcher::run(config, listener, shutdown).await?;
    Ok(())
}
