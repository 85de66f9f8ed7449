//! `quantrac-forward [--config FILE]`: delivers every stored reading to the
//! national system as Circular 10 files over FTP(S), until SIGINT/SIGTERM
//! (a second signal exits at once).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_forward::{ForwardConfig, Forwarder};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version, about = "Forward stored readings to the national system")]
struct Args {
    /// TOML configuration (see deploy/forward.toml); environment variables
    /// QUANTRAC_FORWARD__<SECTION>__<FIELD> override it.
    #[arg(long, env = "QUANTRAC_FORWARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    quantrac_plumbing::process::init_tracing(args.json_logs, "info");
    let config = ForwardConfig::load(args.config.as_deref())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let forwarder = Forwarder::start(config, Some(metrics), shutdown.clone()).await?;
    tokio::spawn(quantrac_plumbing::process::stop_on_signals(shutdown));
    forwarder.wait().await?;
    Ok(())
}
