//! `quantrac-processor [--config FILE]`: consumes `readings.raw` into the
//! database until SIGINT/SIGTERM (a second signal exits at once).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_processor::{Edge, Processor, ProcessorConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version, about = "Validate, normalise and store station readings")]
struct Args {
    /// TOML configuration (see deploy/processor.toml); environment variables
    /// QUANTRAC_PROCESSOR__<SECTION>__<FIELD> override it.
    #[arg(long, env = "QUANTRAC_PROCESSOR_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    quantrac_plumbing::process::init_tracing(args.json_logs, "info,rdkafka=warn");
    let config = ProcessorConfig::load(args.config.as_deref())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let processor = Processor::start(config, Edge::Kafka, Some(metrics), shutdown.clone()).await?;
    tokio::spawn(quantrac_plumbing::process::stop_on_signals(shutdown));
    processor.wait().await?;
    tracing::info!("processor stopped");
    Ok(())
}
