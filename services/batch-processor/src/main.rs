//! `portico-batch-processor`: parses configuration, binds, and hands over to the library.

use anyhow::Context;
use clap::Parser;
use portico_batch_processor::config::ProcessorConfig;

/// glibc's malloc was the largest single cost on the request path in profiles
/// (about a quarter of the gateway's CPU under load); mimalloc's per-thread free lists
/// make the many small, short-lived allocations of a request or a delivery cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ProcessorConfig::parse();
    let _telemetry =
        portico_telemetry::logging::init("portico-batch-processor", config.common.log_format)?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding admin on {}", config.http_addr))?;
    let shutdown = portico_runtime::shutdown::on_signal();
    portico_batch_processor::run(config, listener, shutdown).await?;
    Ok(())
}
