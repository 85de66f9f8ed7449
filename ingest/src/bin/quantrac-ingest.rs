//! `quantrac-ingest [--config FILE]`: runs the MQTT and TCP receivers until
//! SIGINT/SIGTERM (a second signal exits at once).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_ingest::{Edge, Ingest, IngestConfig};
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
    quantrac_plumbing::process::init_tracing(args.json_logs, "info,rdkafka=warn");
    let config = IngestConfig::load(args.config.as_deref())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, Edge::Kafka, Some(metrics), shutdown.clone()).await?;
    tokio::spawn(quantrac_plumbing::process::stop_on_signals(shutdown));
    ingest.wait().await?;
    tracing::info!("ingest stopped");
    Ok(())
}
