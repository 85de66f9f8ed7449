//! The processor: a Kafka consumer group on `readings.raw` that validates
//! readings against the station registry, normalises their units, stores
//! them exactly once in TimescaleDB (or plain PostgreSQL), and publishes what
//! it stored on `readings.valid` for the alerting engine.
//!
//! A tour:
//! - [`config`]: TOML + environment configuration, validated at start.
//! - [`registry`]: stations, their parameters and permit limits, loaded from
//!   a file and written to the database.
//! - [`units`] and [`validate`]: pure checks and unit conversion of one
//!   reading, with machine-readable rejection reasons.
//! - [`pipeline`]: Kafka records in, validated readings and rejections out.
//! - [`schema`]: versioned migrations (TimescaleDB and plain variants).
//! - [`store`]: idempotent batch writes (binary COPY or `unnest`).
//! - [`worker`]: one batch: validate, write in one transaction, retry while
//!   the database is down.
//! - [`consumer`]: the Kafka loop: batch, store, publish, then store offsets.
//! - [`local`]: single-node mode: the same worker fed by ingest over the
//!   in-process bus, answering each batch once it is committed.
//!
//! [`Processor::start`] wires them together with a shutdown token.

pub mod config;
pub mod consumer;
pub mod http;
pub mod local;
pub mod pipeline;
pub mod registry;
pub mod schema;
pub mod status;
pub mod store;
pub mod units;
pub mod validate;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::ProcessorConfig;
pub use status::{Snapshot, Status};

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("registry: {0}")]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("a task failed: {0}")]
    Task(String),
    #[error("shutting down")]
    ShuttingDown,
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
    /// and starts consuming `readings.raw` from Kafka. Cancel `shutdown` to
    /// stop, then [`Processor::wait`].
    pub async fn start(
        config: ProcessorConfig,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, ProcessorError> {
        Self::start_with(config, None, metrics, shutdown).await
    }

    /// Like [`Processor::start`]; with `bus`, readings come from ingest in
    /// the same process over the in-process bus instead of from Kafka
    /// (single-node mode).
    pub async fn start_with(
        config: ProcessorConfig,
        bus: Option<local::LocalBus>,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, ProcessorError> {
        config
            .validate()
            .map_err(|e| ProcessorError::Config(e.to_string()))?;
        let config = Arc::new(config);
        let registry = Arc::new(registry::Registry::load(&config.registry)?);
        let (mut store, schema) = store::Store::open(&config.database_url, &config.storage).await?;
        store.sync_registry(&registry).await?;
        tracing::info!(
            timescale = schema.timescale,
            migrations_applied = schema.applied,
            stations = registry.stations().count(),
            "database ready"
        );
        let status = Arc::new(Status::default());
        let listener = TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| ProcessorError::Bind {
                addr: config.http.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(ProcessorError::Http)?;
        let mut tasks = JoinSet::new();
        {
            let (status, shutdown) = (Arc::clone(&status), shutdown.clone());
            tasks.spawn(async move {
                http::serve(listener, status, metrics, shutdown)
                    .await
                    .map_err(ProcessorError::Http)
            });
        }
        match bus {
            Some(bus) => {
                let worker = worker::Worker::new(store, registry, &config, Arc::clone(&status));
                tasks.spawn(local::run(
                    Arc::clone(&config),
                    worker,
                    bus,
                    shutdown.clone(),
                ))
            }
            None => {
                let mut workers: Vec<_> = (1..config.batch.in_flight)
                    .map(|_| {
                        let s = store.sibling();
                        worker::Worker::new(s, Arc::clone(&registry), &config, Arc::clone(&status))
                    })
                    .collect();
                workers.push(worker::Worker::new(
                    store,
                    registry,
                    &config,
                    Arc::clone(&status),
                ));
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
        quantrac_proto::process::wait_for_tasks(
            &mut self.tasks,
            &self.shutdown,
            "processor",
            ProcessorError::Task,
        )
        .await
    }
}
