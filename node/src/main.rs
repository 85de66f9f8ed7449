//! `quantrac-node`: single-node mode. Ingest, the processor and alerting in
//! one process, joined by in-process channels instead of Kafka; only
//! PostgreSQL (or TimescaleDB) is needed. For a province with a few dozen
//! stations and one server. A station is answered only after its reading is
//! committed.
//!
//!     quantrac-node --ingest-config deploy/ingest.toml \
//!         --processor-config deploy/processor.toml --alerting-config deploy/alerting.toml

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quantrac_alerting::{Alerting, AlertingConfig};
use quantrac_ingest::{Ingest, IngestConfig};
use quantrac_processor::local::LocalBus;
use quantrac_processor::{Processor, ProcessorConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Ingest, processor and alerting in one process, without Kafka"
)]
struct Args {
    /// Ingest configuration (its [kafka] section is not used).
    #[arg(long, env = "QUANTRAC_INGEST_CONFIG")]
    ingest_config: Option<PathBuf>,
    /// Processor configuration (its [kafka] section is not used).
    #[arg(long, env = "QUANTRAC_PROCESSOR_CONFIG")]
    processor_config: Option<PathBuf>,
    /// Alerting configuration (its [kafka] section is not used).
    #[arg(long, env = "QUANTRAC_ALERTING_CONFIG")]
    alerting_config: Option<PathBuf>,
    /// Batches in transit on each in-process channel.
    #[arg(long, default_value_t = 1024)]
    bus_capacity: usize,
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    quantrac_plumbing::process::init_tracing(args.json_logs, "info");
    let mut ingest_config = IngestConfig::load(args.ingest_config.as_deref())?;
    let processor_config = ProcessorConfig::load(args.processor_config.as_deref())?;
    let alerting_config = AlertingConfig::load(args.alerting_config.as_deref())?;
    // The bus routes by topic name: make ingest's match the processor's.
    ingest_config.kafka.readings_topic = processor_config.kafka.raw_topic.clone();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;

    // Stop order: ingest first (it stops taking input and waits for the
    // answers of what it sent), then the processor (which answers until the
    // bus is empty), then alerting. Any of them failing stops ingest.
    let ingest_stop = CancellationToken::new();
    let processor_stop = CancellationToken::new();
    let alerting_stop = CancellationToken::new();
    let (bus_tx, bus_rx) = quantrac_plumbing::bus::channel(args.bus_capacity);
    let (stored_tx, stored_rx) = tokio::sync::mpsc::channel(args.bus_capacity);
    let alerting = Alerting::start(
        alerting_config,
        quantrac_alerting::Edge::Bus(stored_rx),
        Some(metrics.clone()),
        alerting_stop.clone(),
    )
    .await?;
    let processor = Processor::start(
        processor_config,
        quantrac_processor::Edge::Bus(LocalBus {
            input: bus_rx,
            stored: Some(stored_tx),
        }),
        Some(metrics.clone()),
        processor_stop.clone(),
    )
    .await?;
    let ingest = Ingest::start(
        ingest_config,
        quantrac_ingest::Edge::Bus(bus_tx),
        Some(metrics),
        ingest_stop.clone(),
    )
    .await?;
    tokio::spawn(quantrac_plumbing::process::stop_on_signals(
        ingest_stop.clone(),
    ));
    let watch = |stop: CancellationToken| {
        move |r: Result<(), String>| {
            if r.is_err() {
                stop.cancel();
            }
            r
        }
    };
    let on_processor = watch(ingest_stop.clone());
    let processor =
        tokio::spawn(
            async move { on_processor(processor.wait().await.map_err(|e| e.to_string())) },
        );
    let on_alerting = watch(ingest_stop.clone());
    let alerting =
        tokio::spawn(async move { on_alerting(alerting.wait().await.map_err(|e| e.to_string())) });
    let ingest_result = ingest.wait().await;
    processor_stop.cancel();
    let processor_result = processor.await.context("processor task")?;
    alerting_stop.cancel();
    let alerting_result = alerting.await.context("alerting task")?;
    ingest_result?;
    processor_result.map_err(anyhow::Error::msg)?;
    alerting_result.map_err(anyhow::Error::msg)?;
    tracing::info!("node stopped");
    Ok(())
}
