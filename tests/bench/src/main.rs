//! `portico-bench`: parses the command line and runs one scenario (see the library).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = portico_bench::cli::Cli::parse();
    let json = cli.json;
    // Two workers for the load client; the sink has its own runtime and threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-load")
        .enable_all()
        .build()?;
    let report = runtime.block_on(portico_bench::cli::run(cli))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("command: {}", report.command);
    }
    Ok(())
}
