//! `quantrac-query [--config FILE]`: serves analysts' gRPC `QueryService`
//! (and grpc-web) until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_query::{Query, QueryConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version, about = "Analysts' query service")]
struct Args {
    /// TOML configuration (see deploy/query.toml); environment variables
    /// QUANTRAC_QUERY__<SECTION>__<FIELD> override it.
    #[arg(long, env = "QUANTRAC_QUERY_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    quantrac_plumbing::process::init_tracing(args.json_logs, "info");
    let config = QueryConfig::load(args.config.as_deref())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let query = Query::start(config, Some(metrics), shutdown.clone()).await?;
    tokio::spawn(quantrac_plumbing::process::stop_on_signals(shutdown));
    query.wait().await?;
    tracing::info!("query service stopped");
    Ok(())
}
