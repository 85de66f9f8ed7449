//! `quantrac-console [--config FILE]`: serves the monitoring center's web
//! page until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_console::{Console, ConsoleConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version, about = "The monitoring center's web page")]
struct Args {
    /// TOML configuration (see deploy/console.toml); environment variables
    /// QUANTRAC_CONSOLE__<FIELD> override it.
    #[arg(long, env = "QUANTRAC_CONSOLE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    quantrac_plumbing::process::init_tracing(args.json_logs, "info");
    let config = ConsoleConfig::load(args.config.as_deref())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let console = Console::start(config, Some(metrics), shutdown.clone()).await?;
    println!("officers' page: http://{}/", console.addr);
    tokio::spawn(quantrac_plumbing::process::stop_on_signals(shutdown));
    console.wait().await?;
    tracing::info!("console stopped");
    Ok(())
}
