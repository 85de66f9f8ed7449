//! The processor: a Kafka consumer group on `readings.raw` that validates
//! readings against the station registry, normalises their units, stores
//! them exactly once in TimescaleDB (or plain PostgreSQL), and publishes what
//! it stored on `readings.valid` for the alerting engine.
//!
//! A tour:
//! - [`config`]: TOML + environment configuration, validated at start.
//! - [`validate`]: pure checks and unit conversion of one reading against
//!   the registry (`quantrac_proto::registry`), with the rejection reasons
//!   of `quantrac_proto::qc`.
//! - [`pipeline`]: Kafka records in, validated readings and rejections out.
//! - [`store`]: the processor's connection and its batch writes, through
//!   `quantrac_db` (which holds the schema and the `readings` row).
//! - [`worker`]: one batch: validate, write in one transaction, retry while
//!   the database is down.
//! - [`consumer`]: the Kafka edge: batch, store, publish, then store offsets.
//! - [`local`]: the bus edge (single-node mode): the same worker fed by
//!   ingest over the in-process bus, answering each batch once committed.
//! - [`latest`]: the newest reading of each series into `latest_readings`,
//!   noted per batch and upserted every second, off the batch path.
//! - [`retention`]: deletes what is past `storage.retention` where no
//!   database policy does (readings on plain PostgreSQL, rejected readings).
//! - [`rollups`]: refreshes TimescaleDB's continuous aggregates over all
//!   time, so late readings reach them.
//! - [`status`]: counters and `/health`.
//!
//! In: `readings.raw` records ([`Edge::Kafka`]) or bus batches
//! ([`Edge::Bus`]). Out: rows in `readings` and `rejected_readings`, then
//! `readings.valid`/`readings.rejected` (or the bus's stored channel). The
//! edge is chosen once, in [`Processor::start`]; nothing else knows it.

pub mod config;
pub mod consumer;
pub mod latest;
pub mod local;
pub mod pipeline;
pub mod retention;
pub mod rollups;
pub mod status;
pub mod store;
pub mod validate;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use quantrac_plumbing::http::HttpError;
use quantrac_plumbing::kafka::KafkaError;
use quantrac_proto::registry::{Registry, RegistryError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::ProcessorConfig;
pub use status::{Snapshot, Status};

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("a task failed: {0}")]
    Task(String),
    #[error("shutting down")]
    ShuttingDown,
}

impl ProcessorError {
    /// Whether the same work can succeed later (the database or Kafka was
    /// unavailable) as opposed to a configuration or data problem.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProcessorError::Store(e) => e.is_transient(),
            ProcessorError::Kafka(e) => e.is_retryable(),
            ProcessorError::ShuttingDown => true,
            ProcessorError::Config(_)
            | ProcessorError::Registry(_)
            | ProcessorError::Http(_)
            | ProcessorError::Task(_) => false,
        }
    }
}

/// Where the processor's readings come from and its stored readings go.
#[derive(Debug)]
pub enum Edge {
    /// `readings.raw` in; `readings.valid` and `readings.rejected` out.
    Kafka,
    /// Single-node mode: ingest's batches in over the in-process bus, each
    /// answered once committed; stored readings out to alerting.
    Bus(local::LocalBus),
}

/// A running processor.
#[derive(Debug)]
pub struct Processor {
    pub status: Arc<Status>,
    pub http_addr: SocketAddr,
    pub timescale: bool,
    tasks: JoinSet<Result<(), ProcessorError>>,
    shutdown: CancellationToken,
}

impl Processor {
    /// Loads the registry, migrates the database, writes the registry to it
    /// and starts taking readings from `edge`. Cancel `shutdown` to stop,
    /// then [`Processor::wait`].
    pub async fn start(
        config: ProcessorConfig,
        edge: Edge,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, ProcessorError> {
        config.validate()?;
        let config = Arc::new(config);
        let registry = Arc::new(Registry::load(&config.registry)?);
        let (mut store, schema) = store::Store::open(
            &config.database_url,
            &config.database,
            &config.storage.schema(),
            config.storage.write_method,
        )
        .await?;
        store.set_forward(config.storage.forward);
        store
            .sync_registry(
                &registry,
                &format!(
                    "registry file {} ({})",
                    config.registry.display(),
                    config.node_id
                ),
            )
            .await?;
        tracing::info!(
            timescale = schema.timescale,
            migrations_applied = schema.applied,
            stations = registry.stations().count(),
            "database ready"
        );
        let status = Arc::new(Status::default());
        let http = quantrac_plumbing::http::Server::bind(config.http.listen).await?;
        let http_addr = http.addr;
        let mut tasks = JoinSet::new();
        {
            let health: Arc<dyn quantrac_plumbing::http::Health> = status.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { Ok(http.serve(health, metrics, shutdown).await?) });
        }
        tasks.spawn(retention::run(
            store.sibling(),
            config.storage.retention,
            config.storage.cleanup_every,
            !schema.timescale,
            shutdown.clone(),
        ));
        if schema.timescale && !config.storage.refresh_rollups_every.is_zero() {
            tasks.spawn(rollups::run(
                store.sibling(),
                config.storage.refresh_rollups_every,
                shutdown.clone(),
            ));
        }
        let latest = Arc::new(latest::Latest::default());
        tasks.spawn(latest::run(
            store.sibling(),
            Arc::clone(&latest),
            config.storage.latest_every,
            shutdown.clone(),
        ));
        let worker = |store| {
            worker::Worker::new(
                store,
                Arc::clone(&registry),
                &config,
                Arc::clone(&status),
                Arc::clone(&latest),
            )
        };
        match edge {
            Edge::Bus(bus) => tasks.spawn(local::run(
                Arc::clone(&config),
                worker(store),
                bus,
                shutdown.clone(),
            )),
            Edge::Kafka => {
                // Safe here only: the consumer stores offsets once the WAL
                // flush has passed them (`durable`).
                store.set_async_commit(config.storage.async_commit);
                let mut workers: Vec<_> = (1..config.batch.in_flight)
                    .map(|_| worker(store.sibling()))
                    .collect();
                workers.push(worker(store));
                tasks.spawn(consumer::run(
                    Arc::clone(&config),
                    workers,
                    shutdown.clone(),
                ))
            }
        };
        Ok(Self {
            status,
            http_addr,
            timescale: schema.timescale,
            tasks,
            shutdown,
        })
    }

    /// Waits for the tasks; the first to fail stops the others.
    pub async fn wait(mut self) -> Result<(), ProcessorError> {
        quantrac_plumbing::process::wait_for_tasks(
            &mut self.tasks,
            &self.shutdown,
            "processor",
            ProcessorError::Task,
        )
        .await
    }
}
