//! Ingest: takes readings from station data loggers over MQTT and TCP and
//! puts them on Kafka (`readings.raw`, key = station id), acknowledging a
//! station only after Kafka acknowledged its readings.
//!
//! A tour:
//! - [`config`]: the TOML file + environment configuration, validated at
//!   start with errors that name the field.
//! - [`mqtt`]: persistent-session MQTT receiver with manual, in-order PUBACKs.
//! - [`mqtt_listener`]: ingest's own MQTT 3.1.1 endpoint for stations (no
//!   broker between): PUBACK only once Kafka has the message, in order;
//!   station credentials or client certificates; persistent sessions
//!   remembered in a file.
//! - [`tcp`]: HJ 212-2017 / Circular 10 / JSON-lines receiver with bounded
//!   connections, frame size, timeouts and per-connection pipelining.
//! - [`credentials`]: each station's secret hash from the registry,
//!   reloaded on change; checked for HJ 212 `PW` and TCP auth frames.
//! - [`ftp`]: the FTP(S) receiver of Circular 10 files (libunftp), each
//!   upload answered 226 only once its records are durable.
//! - [`decode`]: pure functions from received bytes to samples.
//! - [`intake`]: samples into `ReadingBatch` records, failures into
//!   `RejectedInput` records (raw bytes + reason) on `ingest.rejected`.
//! - [`sink`]: the idempotent `acks=all` Kafka producer (or, in single-node
//!   mode, the in-process bus to the processor) with a bounded in-flight
//!   window: the back-pressure point.
//! - [`status`]: counters, and `/health` answered from them (served by
//!   `quantrac_plumbing::http` with `/metrics`).
//! - [`rate`]: readings-per-second caps per address and per station, as
//!   back-pressure on TCP connections.
//! - [`broker_auth`]: Mosquitto's password file and ACL generated from the
//!   registry (per-station MQTT accounts; `quantrac-mqtt-auth` writes them).
//!
//! In: station bytes (MQTT, TCP, FTP). Out: `readings.raw` and `ingest.rejected`
//! records on the [`Edge`]: Kafka, or the in-process bus in single-node
//! mode. [`Ingest::start`] wires them together; it takes a shutdown token
//! and can run inside a test.

pub mod broker_auth;
pub mod config;
pub mod credentials;
pub mod decode;
pub mod ftp;
pub mod intake;
pub mod mqtt;
pub mod mqtt_listener;
pub mod rate;
pub mod sink;
pub mod status;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use quantrac_plumbing::bus::BusSender;
use quantrac_plumbing::http::HttpError;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::IngestConfig;
pub use status::{Snapshot, Status};

/// Why ingest could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Tls(#[from] quantrac_plumbing::tls::TlsError),
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("a receiver task failed: {0}")]
    Task(String),
    #[error("FTP receiver: {0}")]
    Ftp(String),
    #[error(transparent)]
    Sessions(#[from] mqtt_listener::SessionError),
}

/// Where ingest's records go.
#[derive(Debug)]
pub enum Edge {
    /// The idempotent `acks=all` Kafka producer.
    Kafka,
    /// Single-node mode: the in-process bus to a processor in the same
    /// process, which answers once the records are committed.
    Bus(BusSender),
}

async fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<TcpListener, IngestError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| IngestError::Bind { what, addr, source })
}

/// A running ingest instance.
#[derive(Debug)]
pub struct Ingest {
    pub status: Arc<Status>,
    /// Where the TCP receiver listens (useful with port 0).
    pub tcp_addr: Option<SocketAddr>,
    /// Where the TLS port of the TCP receiver listens.
    pub tls_addr: Option<SocketAddr>,
    /// Where the FTP(S) receiver listens.
    pub ftp_addr: Option<SocketAddr>,
    /// Where ingest's own MQTT endpoint listens (plain, then TLS).
    pub mqtt_listener_addr: Option<SocketAddr>,
    pub mqtt_listener_tls_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    tasks: JoinSet<Result<(), IngestError>>,
    shutdown: CancellationToken,
    sink: sink::Sink,
}

impl Ingest {
    /// Binds the listeners and starts the receivers, handing records to
    /// `edge`. Returns once listening; cancel `shutdown` to stop, then
    /// [`Ingest::wait`].
    pub async fn start(
        config: IngestConfig,
        edge: Edge,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, IngestError> {
        config.validate()?;
        let config = Arc::new(config);
        let status = Arc::new(Status::default());
        let sink = match edge {
            Edge::Bus(sender) => sink::Sink::bus(sender, config.max_in_flight, Arc::clone(&status)),
            Edge::Kafka => {
                sink::Sink::kafka(&config.kafka, config.max_in_flight, Arc::clone(&status))?
            }
        };
        let intake = intake::Intake::new(
            sink.clone(),
            &config.node_id,
            &config.kafka.readings_topic,
            &config.kafka.rejected_topic,
            Arc::clone(&status),
        );
        let mut tasks = JoinSet::new();
        let credentials = Arc::new(match &config.auth.registry {
            Some(path) => credentials::Credentials::load(path, config.auth.require_all)?,
            None => credentials::Credentials::none(config.auth.require_all),
        });
        {
            let (c, every, stop) = (
                Arc::clone(&credentials),
                config.auth.reload_every,
                shutdown.clone(),
            );
            tasks.spawn(async move {
                credentials::watch(c, every, stop).await;
                Ok(())
            });
        }

        let http = quantrac_plumbing::http::Server::bind(config.http.listen).await?;
        let http_addr = http.addr;
        tasks.spawn({
            let health: Arc<dyn quantrac_plumbing::http::Health> = Arc::new(status::IngestHealth {
                status: Arc::clone(&status),
                mqtt_enabled: config.mqtt.enabled,
                tcp_enabled: config.tcp.enabled,
                mqtt_listener_enabled: config.mqtt_listener.enabled,
                stall_after: config.http.stall_after,
                progress: std::sync::Mutex::default(),
            });
            let shutdown = shutdown.clone();
            async move { Ok(http.serve(health, metrics, shutdown).await?) }
        });

        // The plain port and the TLS port: the same receiver, with or
        // without a TLS acceptor in front.
        let plain = (config.tcp.enabled && config.tcp.plain).then_some((config.tcp.listen, None));
        let tls = match (&config.tcp.tls_listen, &config.tcp.tls) {
            (Some(addr), Some(files)) if config.tcp.enabled => Some((
                *addr,
                Some(tokio_rustls::TlsAcceptor::from(
                    quantrac_plumbing::tls::server_config(files, &[])?,
                )),
            )),
            _ => None,
        };
        let mut bound = [None, None];
        for (slot, (addr, acceptor)) in [plain, tls]
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i, p)))
        {
            let listener =
                bind_tcp(addr, if acceptor.is_some() { "tcp.tls" } else { "tcp" }).await?;
            bound[slot] = listener.local_addr().ok();
            tasks.spawn(tcp::run(
                Arc::clone(&config),
                intake.clone(),
                Arc::clone(&credentials),
                listener,
                acceptor,
                shutdown.clone(),
            ));
        }
        let [tcp_addr, tls_addr] = bound;
        let ftp_addr = config.ftp.listen;
        if ftp_addr.is_some() {
            let offset = config::parse_offset(&config.circular10.utc_offset)
                .ok_or_else(|| config::invalid("circular10.utc_offset", "not an offset"))?;
            tasks.spawn(ftp::run(
                config.ftp.clone(),
                offset,
                intake.clone(),
                Arc::clone(&credentials),
                shutdown.clone(),
            ));
        }
        let mut mqtt_bound = [None, None];
        if config.mqtt_listener.enabled {
            let ml = &config.mqtt_listener;
            // Read before listening: a file that cannot be used stops the
            // start, rather than answering stations without their sessions.
            let sessions = Arc::new(mqtt_listener::Sessions::open(
                &ml.sessions_file,
                ml.max_sessions,
            )?);
            let tls = match (&ml.tls_listen, &ml.tls) {
                (Some(addr), Some(files)) => Some((
                    *addr,
                    Some(tokio_rustls::TlsAcceptor::from(
                        quantrac_plumbing::tls::server_config(files, &[])?,
                    )),
                )),
                _ => None,
            };
            for (slot, (addr, acceptor)) in [Some((ml.listen, None)), tls]
                .into_iter()
                .enumerate()
                .filter_map(|(i, p)| p.map(|p| (i, p)))
            {
                let what = if acceptor.is_some() {
                    "mqtt_listener.tls"
                } else {
                    "mqtt_listener"
                };
                let listener = bind_tcp(addr, what).await?;
                mqtt_bound[slot] = listener.local_addr().ok();
                tasks.spawn(mqtt_listener::run(
                    Arc::clone(&config),
                    intake.clone(),
                    Arc::clone(&credentials),
                    Arc::clone(&sessions),
                    listener,
                    acceptor,
                    shutdown.clone(),
                ));
            }
        }
        let [mqtt_listener_addr, mqtt_listener_tls_addr] = mqtt_bound;
        if config.mqtt.enabled {
            tasks.spawn(mqtt::run(
                Arc::clone(&config),
                intake.clone(),
                shutdown.clone(),
            ));
        }
        tracing::info!(node = config.node_id, ?tcp_addr, ?tls_addr, ?ftp_addr, ?mqtt_listener_addr, ?mqtt_listener_tls_addr, %http_addr, mqtt = config.mqtt.enabled, "ingest started");
        Ok(Self {
            status,
            tcp_addr,
            tls_addr,
            ftp_addr,
            mqtt_listener_addr,
            mqtt_listener_tls_addr,
            http_addr,
            tasks,
            shutdown,
            sink,
        })
    }

    /// Waits for every task. The first task to fail cancels the others.
    pub async fn wait(mut self) -> Result<(), IngestError> {
        let result = quantrac_plumbing::process::wait_for_tasks(
            &mut self.tasks,
            &self.shutdown,
            "ingest",
            IngestError::Task,
        )
        .await;
        // Whatever is still queued in librdkafka gets a last chance.
        self.sink.flush(Duration::from_secs(5));
        result
    }
}
