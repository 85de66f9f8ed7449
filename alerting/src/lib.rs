//! The alerting service: permit-aware rules evaluated on `readings.valid`
//! by measurement time, an alert lifecycle kept in the database, and
//! delivery to the monitoring center.
//!
//! A tour:
//! - [`rules`]: rule defaults per parameter and overrides per station, from
//!   a TOML file validated at load (errors name the line), reloaded live.
//! - [`alert`]: alert keys (rule, station, parameter, window), severities,
//!   the open → acknowledged → resolved lifecycle and its events.
//! - [`engine`]: the pure rules engine: readings and the wall clock in,
//!   alert events out. No I/O, so every rule is tested with a controlled
//!   clock. Split by concern: series state, incidents, limits and
//!   averages, sequence rules, data gap, instrument status.
//! - [`store`]: alerts and their history in the database; a replayed
//!   incident is dropped there before anyone is notified.
//! - [`notify`]: the Kafka `alerts` topic, live gRPC subscribers, webhooks.
//! - [`mail`]: e-mail to officers (subscriptions), facilities (registry
//!   contacts), escalation and a daily digest, through an outbox table.
//! - [`live`]: the changes other alerting instances commit, through
//!   PostgreSQL notifications, for the gRPC subscribers.
//! - [`grpc`]: the `AlertService`: subscribe (filter, resume after a
//!   sequence number), acknowledge, resolve.
//! - [`service`]: the engine task that ties them together.
//! - [`warmup`]: after a restart, the engine's windows are rebuilt from the
//!   readings the consumer group had already evaluated (in single-node
//!   mode, from the database, judging what `alert_pending` says was
//!   stored and not judged yet).
//!
//! In: stored readings, from `readings.valid` ([`Edge::Kafka`]) or from
//! the processor in the same process ([`Edge::Bus`]). Out: the alerts
//! tables (through `quantrac_db`'s migrations), the Kafka `alerts` topic
//! (Kafka edge only), gRPC subscribers and webhooks. `/health` answers from
//! the engine task's state ([`Health`]). [`Alerting::start`] runs it all
//! with a shutdown token.

pub mod alert;
pub mod config;
pub mod engine;
pub mod grpc;
pub mod live;
pub mod mail;
pub mod notify;
pub mod ownership;
pub mod rules;
pub mod service;
pub mod store;
pub mod warmup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use quantrac_proto::v1::StoredReadingBatch;
use quantrac_proto::v1::alert_service_server::AlertServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::AlertingConfig;

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("rules: {0}")]
    Rules(#[from] rules::RulesError),
    #[error("registry: {0}")]
    Registry(#[from] quantrac_proto::registry::RegistryError),
    #[error(transparent)]
    Store(#[from] store::AlertStoreError),
    #[error(transparent)]
    Schema(#[from] quantrac_db::DbError),
    #[error(transparent)]
    Kafka(#[from] quantrac_plumbing::kafka::KafkaError),
    #[error(transparent)]
    Http(#[from] quantrac_plumbing::http::HttpError),
    #[error(transparent)]
    Tls(#[from] quantrac_plumbing::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Server(String),
    #[error("a task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Mail(#[from] mail::MailError),
    #[error("shutting down")]
    ShuttingDown,
}

impl AlertingError {
    /// Whether the same work can succeed later (the database or Kafka was
    /// unavailable) as opposed to a configuration or data problem.
    pub fn is_retryable(&self) -> bool {
        match self {
            AlertingError::Store(e) => e.is_transient(),
            AlertingError::Schema(e) => e.is_transient(),
            AlertingError::Kafka(e) => e.is_retryable(),
            AlertingError::ShuttingDown => true,
            _ => false,
        }
    }
}

/// Where alerting's readings come from.
#[derive(Debug)]
pub enum Edge {
    /// `readings.valid` as a consumer group; alert changes also go to the
    /// Kafka `alerts` topic.
    Kafka,
    /// Single-node mode: the processor's stored batches over a bounded
    /// channel; no Kafka at all.
    Bus(mpsc::Receiver<StoredReadingBatch>),
}

/// `/health`: unhealthy while the engine task is not running (stopped or
/// failed) or its database connection is lost.
#[derive(Debug, Default)]
pub struct Health {
    engine_running: AtomicBool,
    db_connected: AtomicBool,
}

impl Health {
    pub(crate) fn set_engine_running(&self, v: bool) {
        self.engine_running.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_db_connected(&self, v: bool) {
        self.db_connected.store(v, Ordering::Relaxed);
    }
}

impl quantrac_plumbing::http::Health for Health {
    fn report(&self) -> quantrac_plumbing::http::HealthReport {
        let engine = self.engine_running.load(Ordering::Relaxed);
        let db = self.db_connected.load(Ordering::Relaxed);
        quantrac_plumbing::http::HealthReport {
            healthy: engine && db,
            status: serde_json::json!({ "engine_running": engine, "database_connected": db }),
        }
    }
}

/// A running alerting service.
#[derive(Debug)]
pub struct Alerting {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: JoinSet<Result<(), AlertingError>>,
    shutdown: CancellationToken,
}

impl Alerting {
    /// Loads registry and rules, migrates the schema, restores open alerts
    /// and the engine's windows from the database, then serves gRPC and
    /// consumes `readings.valid` (or, with `local`, the processor's stored
    /// batches in single-node mode).
    pub async fn start(
        config: AlertingConfig,
        edge: Edge,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, AlertingError> {
        config.validate()?;
        let config = Arc::new(config);
        let registry = Arc::new(quantrac_proto::registry::Registry::load(&config.registry)?);
        let rules = rules::RulesConfig::load(&config.rules)?;
        let mut db = store::connect(&config.database_url).await?;
        quantrac_db::schema::migrate_tables(&db).await?;

        // Rebuild: open alerts, then the recent readings for the windows.
        let mut engine = engine::Engine::new(rules, Arc::clone(&registry));
        let open = service::open_records(store::open_alerts(&db).await?);
        let restored = open.len();
        engine.restore(open);
        let (input, producer, pending) = match edge {
            Edge::Kafka => {
                warm_up_from_kafka(&mut engine, &config, restored).await?;
                let producer = alerts_producer(&config)?;
                (
                    service::Input::Kafka,
                    Some(producer),
                    warmup::DatabaseWarmUp::default(),
                )
            }
            // Single-node mode runs without Kafka: no `alerts` topic there.
            Edge::Bus(rx) => {
                let pending = warm_up_from_database(&mut engine, &config, &db, restored).await?;
                (service::Input::Bus(rx), None, pending)
            }
        };

        let mut tasks = JoinSet::new();
        let (live, _) = broadcast::channel(1_024);
        let notifier =
            notify::Notifier::new(producer, config.kafka.alerts_topic.clone(), live.clone());
        publish_outbox(&mut db, &notifier, &shutdown).await?;
        // Every instance's recorded changes, as the newest sequence.
        let (newest_tx, newest) = tokio::sync::watch::channel(0);
        {
            let (url, stop) = (config.database_url.clone(), shutdown.clone());
            tasks.spawn(async move {
                live::follow(url, newest_tx, stop).await;
                Ok(())
            });
        }
        start_webhooks(&config, &db, &newest, &mut tasks, &shutdown).await?;
        if !config.email.smtp_url.is_empty() {
            // Before the engine records anything, as for webhooks: a change
            // recorded before the cursor exists would be skipped by it.
            mail::init_cursor(&db).await?;
            mail::spawn(
                config.email.clone(),
                config.database_url.clone(),
                Arc::clone(&registry),
                newest.clone(),
                config.tick,
                &mut tasks,
                &shutdown,
            )?;
        }
        let (commands_tx, commands) = mpsc::channel(64);
        let grpc_addr =
            serve_grpc(&config, live, newest, commands_tx, &mut tasks, &shutdown).await?;

        let http = quantrac_plumbing::http::Server::bind(config.http_listen).await?;
        let http_addr = http.addr;
        let health = Arc::new(Health::default());
        health.set_db_connected(true);
        health.set_engine_running(true);
        {
            let (stop, h) = (shutdown.clone(), Arc::clone(&health));
            tasks.spawn(async move { Ok(http.serve(h, metrics, stop).await?) });
        }
        let task = service::EngineTask {
            config: Arc::clone(&config),
            engine,
            db,
            notifier,
            commands,
            pending: pending.events,
            unjudged: pending.unjudged,
            health,
            waiting: Vec::new(),
            async_records: false,
            unflushed: std::collections::VecDeque::new(),
        };
        tasks.spawn(task.run(input, shutdown.clone()));
        tracing::info!(%grpc_addr, %http_addr, "alerting started");
        Ok(Self {
            grpc_addr,
            http_addr,
            tasks,
            shutdown,
        })
    }

    /// Waits for the tasks; the first to fail stops the others.
    pub async fn wait(mut self) -> Result<(), AlertingError> {
        quantrac_plumbing::process::wait_for_tasks(
            &mut self.tasks,
            &self.shutdown,
            "alerting",
            AlertingError::Task,
        )
        .await
    }
}

/// Windows from `readings.valid`, up to what this consumer group already
/// evaluated.
async fn warm_up_from_kafka(
    engine: &mut engine::Engine,
    config: &Arc<AlertingConfig>,
    restored: usize,
) -> Result<(), AlertingError> {
    let c = Arc::clone(config);
    // Batches stream from the reader thread through a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let reader = tokio::task::spawn_blocking(move || warmup::evaluated_readings(&c, &tx));
    while let Some(batch) = rx.recv().await {
        for r in &batch {
            engine.warm_up(r);
        }
    }
    let warmed = reader
        .await
        .map_err(|e| AlertingError::Task(e.to_string()))??;
    tracing::info!(
        open_alerts = restored,
        warm_up_readings = warmed,
        "alerting engine restored"
    );
    Ok(())
}

/// Windows from the database; the changes from judging what was stored
/// and not judged yet, and the `alert_pending` rows it covered (single-node
/// mode).
async fn warm_up_from_database(
    engine: &mut engine::Engine,
    config: &AlertingConfig,
    db: &tokio_postgres::Client,
    restored: usize,
) -> Result<warmup::DatabaseWarmUp, AlertingError> {
    let w = warmup::from_database(engine, db, config.warm_up, chrono::Utc::now()).await?;
    tracing::info!(
        open_alerts = restored,
        warm_up_readings = w.warmed,
        judged_again = w.judged,
        alert_changes = w.events.len(),
        "alerting engine restored"
    );
    Ok(w)
}

fn alerts_producer(
    config: &AlertingConfig,
) -> Result<rdkafka::producer::FutureProducer, AlertingError> {
    let cc = quantrac_plumbing::kafka::producer_config(
        &config.kafka.brokers,
        &config.kafka.properties,
        &[("linger.ms", "0".into())],
    );
    Ok(quantrac_plumbing::kafka::create(&cc, "producer")?)
}

/// One delivery task per webhook URL, each reading `alert_events` after
/// its cursor (set before the engine records anything).
async fn start_webhooks(
    config: &AlertingConfig,
    db: &tokio_postgres::Client,
    newest: &tokio::sync::watch::Receiver<u64>,
    tasks: &mut JoinSet<Result<(), AlertingError>>,
    shutdown: &CancellationToken,
) -> Result<(), AlertingError> {
    notify::init_webhook_cursors(db, &config.webhooks.urls).await?;
    for url in &config.webhooks.urls {
        let task = notify::deliver_webhooks(
            url.clone(),
            config.webhooks.clone(),
            config.database_url.clone(),
            newest.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            task.await;
            Ok(())
        });
    }
    Ok(())
}

/// The outbox: changes recorded but not published before a crash.
async fn publish_outbox(
    db: &mut tokio_postgres::Client,
    notifier: &notify::Notifier,
    shutdown: &CancellationToken,
) -> Result<(), AlertingError> {
    let unpublished = store::unnotified(db).await?;
    if !unpublished.is_empty() {
        tracing::info!(
            count = unpublished.len(),
            "publishing alert changes left unpublished"
        );
        notifier.notify(&unpublished, shutdown).await?;
        store::mark_notified(db, &unpublished).await?;
    }
    Ok(())
}

/// Binds and serves the gRPC alert service; returns its address.
async fn serve_grpc(
    config: &AlertingConfig,
    live: broadcast::Sender<quantrac_proto::v1::Alert>,
    newest: tokio::sync::watch::Receiver<u64>,
    commands: mpsc::Sender<grpc::Command>,
    tasks: &mut JoinSet<Result<(), AlertingError>>,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, AlertingError> {
    let read_db = Arc::new(grpc::ReadDb::new(
        config.database_url.clone(),
        store::connect(&config.database_url).await?,
    ));
    let grpc = grpc::AlertGrpc {
        db: read_db,
        live,
        newest,
        commands,
        shutdown: shutdown.clone(),
        subscribers: Arc::new(tokio::sync::Semaphore::new(config.max_subscribers)),
        audit: Arc::new(quantrac_db::audit::Auditor::new(
            &config.database_url,
            quantrac_db::ConnectOptions::default(),
        )),
        oidc: match &config.oidc {
            Some(o) => Some(
                quantrac_plumbing::oidc::Verifier::new(o.clone()).map_err(|e| {
                    AlertingError::Config(quantrac_plumbing::config::invalid("oidc", e.to_string()))
                })?,
            ),
            None => None,
        },
    };
    let listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| AlertingError::Bind {
            addr: config.grpc_listen,
            source,
        })?;
    let grpc_addr = listener
        .local_addr()
        .map_err(|e| AlertingError::Server(e.to_string()))?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &config.grpc_tls {
        server = server
            .tls_config(quantrac_plumbing::tls::grpc_server(tls)?)
            .map_err(|e| AlertingError::Server(format!("grpc_tls: {e}")))?;
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        server
            .add_service(AlertServiceServer::new(grpc))
            .serve_with_incoming_shutdown(
                // No Nagle: a small answer waited for the client's delayed ACK,
                // 40 ms on every call.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            )
            .await
            .map_err(|e| AlertingError::Server(e.to_string()))
    });
    Ok(grpc_addr)
}
