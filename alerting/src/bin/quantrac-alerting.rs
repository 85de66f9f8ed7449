//! `quantrac-alerting [--config FILE]`: evaluates alert rules on
//! `readings.valid` and serves the monitoring center's gRPC `AlertService`
//! until SIGINT/SIGTERM (a second signal exits at once).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_alerting::{Alerting, AlertingConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version, about = "Permit-aware alerts for the monitoring center")]
struct Args {
    /// TOML configuration (see deploy/alerting.toml); environment variables
    /// QUANTRAC_ALERTING__<SECTION>__<FIELD> override it.
    #[arg(long, env = "QUANTRAC_ALERTING_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    quantrac_plumbing::process::init_tracing(args.json_logs, "info,rdkafka=warn");
    let config = AlertingConfig::load(args.config.as_deref())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let alerting = Alerting::start(
        config,
        quantrac_alerting::Edge::Kafka,
        Some(metrics),
        shutdown.clone(),
    )
    .await?;
    tokio::spawn(quantrac_plumbing::process::stop_on_signals(shutdown));
    alerting.wait().await?;
    tracing::info!("alerting stopped");
    Ok(())
}
