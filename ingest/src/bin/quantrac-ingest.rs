//! `quantrac-ingest [--config FILE]`: runs the MQTT and TCP receivers until
//! SIGINT/SIGTERM (a second signal exits at once).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_ingest::{Ingest, IngestConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version, about = "Station readings over MQTT and TCP into Kafka")]
struct Args {
    /// TOML configuration (see deploy/ingest.toml); environment variables
    /// QUANTRAC_INGEST__<SECTION>__<FIELD> override it.
    #[arg(long, env = "QUANTRAC_INGEST_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    if args.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = IngestConfig::load(args.config.as_deref())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, Some(metrics), shutdown.clone()).await?;
    tokio::spawn(signals(shutdown));
    ingest.wait().await?;
    tracing::info!("ingest stopped");
    Ok(())
}

/// First SIGINT/SIGTERM: drain and stop. Second: exit at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down (signal again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
