//! The query service: analysts' read access over gRPC (and grpc-web),
//! straight from the database every service shares. It depends on no
//! other service.
//!
//! A tour:
//! - [`config`]: listen addresses, connections, the default deadline and
//!   the limits of one request.
//! - [`interval`]: bucket intervals (1 minute to 1 year) and their grid in
//!   local time, months and years by the calendar.
//! - [`read`]: one SQL statement per question (series pages, bucket
//!   aggregates with `width_bucket` over the grid, from the readings or,
//!   on TimescaleDB, from the hourly and daily continuous aggregates with
//!   their raw tail; latest values from the processor's `latest_readings`, limits,
//!   rejected readings, alerts).
//! - [`fill`]: empty buckets answered none / null / LOCF / linear, with a
//!   maximum gap.
//! - [`compliance`]: averages judged against the limit in force at each
//!   time, sanction bands, coverage.
//! - [`export`]: CSV and Parquet files of raw readings, one documented
//!   schema, written page by page.
//! - [`grpc`]: the `QueryService`: every call checks the caller's bearer
//!   token and role (`quantrac_db::access`), validates its input and
//!   answers `InvalidArgument` naming the field.
//!
//! [`Query::start`] serves it all with a shutdown token; `/health` says
//! whether the database answers.

pub mod compliance;
pub mod config;
pub mod export;
pub mod fill;
pub mod grpc;
pub mod interval;
pub mod read;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use quantrac_db::{ConnectOptions, Reconnecting};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::QueryConfig;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Db(#[from] quantrac_db::DbError),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Http(#[from] quantrac_plumbing::http::HttpError),
    #[error(transparent)]
    Tls(#[from] quantrac_plumbing::tls::TlsError),
    #[error("oidc: {0}")]
    Oidc(#[from] quantrac_plumbing::oidc::OidcError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Server(String),
    #[error("a task failed: {0}")]
    Task(String),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueryError::Db(quantrac_db::DbError::Postgres(e))
    }
}

/// Connections the calls take in turn; each reopens itself once lost.
#[derive(Debug)]
pub struct Pool {
    connections: Vec<Reconnecting>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(url: &str, size: usize, statement_timeout: std::time::Duration) -> Self {
        let options = ConnectOptions {
            statement_timeout,
            ..ConnectOptions::default()
        };
        Pool {
            connections: (0..size.max(1))
                .map(|_| Reconnecting::new(url.to_string(), options, None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Connections in the pool.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    pub async fn get(&self) -> Result<Arc<tokio_postgres::Client>, quantrac_db::DbError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].get().await
    }
}

/// `/health`: healthy while the database answers.
#[derive(Debug)]
struct Health {
    pool: Arc<Pool>,
    ok: std::sync::atomic::AtomicBool,
}

impl quantrac_plumbing::http::Health for Health {
    fn report(&self) -> quantrac_plumbing::http::HealthReport {
        let ok = self.ok.load(Ordering::Relaxed);
        quantrac_plumbing::http::HealthReport {
            healthy: ok,
            status: serde_json::json!({ "database_connected": ok }),
        }
    }
}

/// A running query service.
#[derive(Debug)]
pub struct Query {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: JoinSet<Result<(), QueryError>>,
    shutdown: CancellationToken,
}

impl Query {
    /// Checks the database (and its schema: the service reads, it never
    /// migrates), then serves gRPC, grpc-web and `/health`.
    pub async fn start(
        config: QueryConfig,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, QueryError> {
        config.validate()?;
        let pool = Arc::new(Pool::new(
            &config.database_url,
            config.connections,
            config.deadline,
        ));
        pool.get()
            .await?
            .query_one("SELECT count(*) FROM access_tokens", &[])
            .await
            .map_err(|e| {
                QueryError::Db(quantrac_db::DbError::Schema(format!(
                    "the database has no quantrac schema yet (start the processor once, or run `quantrac migrate`): {}",
                    quantrac_db::describe(&e)
                )))
            })?;
        let mut tasks = JoinSet::new();
        let listener = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|source| QueryError::Bind {
                addr: config.grpc_listen,
                source,
            })?;
        let grpc_addr = listener
            .local_addr()
            .map_err(|e| QueryError::Server(e.to_string()))?;
        let audit = Arc::new(quantrac_db::audit::Auditor::new(
            &config.database_url,
            ConnectOptions::default(),
        ));
        let rollups = read::rollups_available(&*pool.get().await?).await?;
        tracing::info!(
            rollups,
            "aggregates read from continuous aggregates where they can"
        );
        let oidc = match &config.oidc {
            Some(o) => Some(quantrac_plumbing::oidc::Verifier::new(o.clone())?),
            None => None,
        };
        let service = grpc::QueryGrpc::new(
            Arc::clone(&pool),
            config.limits.clone(),
            audit,
            rollups,
            oidc,
            config.database_url.clone(),
        );
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(quantrac_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| QueryError::Server(format!("reflection: {e}")))?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<quantrac_proto::v1::query_service_server::QueryServiceServer<grpc::QueryGrpc>>()
            .await;
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &config.grpc_tls {
            server = server
                .tls_config(quantrac_plumbing::tls::grpc_server(tls)?)
                .map_err(|e| QueryError::Server(format!("grpc_tls: {e}")))?;
        }
        {
            let stop = shutdown.clone();
            let deadline = config.deadline;
            tasks.spawn(async move {
                server
                    .accept_http1(true)
                    .timeout(deadline)
                    .layer(tonic_web::GrpcWebLayer::new())
                    .add_service(health_service)
                    .add_service(reflection)
                    .add_service(
                        quantrac_proto::v1::query_service_server::QueryServiceServer::new(service)
                            .max_encoding_message_size(64 << 20),
                    )
                    .serve_with_incoming_shutdown(
                        // No Nagle: a small answer waited for the client's delayed ACK,
                        // 40 ms on every call.
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        stop.cancelled_owned(),
                    )
                    .await
                    .map_err(|e| QueryError::Server(e.to_string()))
            });
        }
        let http = quantrac_plumbing::http::Server::bind(config.http_listen).await?;
        let http_addr = http.addr;
        let health = Arc::new(Health {
            pool: Arc::clone(&pool),
            ok: std::sync::atomic::AtomicBool::new(true),
        });
        {
            let (stop, h) = (shutdown.clone(), Arc::clone(&health));
            tasks.spawn(async move { Ok(http.serve(h, metrics, stop).await?) });
        }
        {
            let (stop, h) = (shutdown.clone(), Arc::clone(&health));
            tasks.spawn(async move {
                watch_database(h, stop).await;
                Ok(())
            });
        }
        tracing::info!(%grpc_addr, %http_addr, "query service started");
        Ok(Query {
            grpc_addr,
            http_addr,
            tasks,
            shutdown,
        })
    }

    /// Waits for the tasks; the first to fail stops the others.
    pub async fn wait(mut self) -> Result<(), QueryError> {
        quantrac_plumbing::process::wait_for_tasks(
            &mut self.tasks,
            &self.shutdown,
            "query",
            QueryError::Task,
        )
        .await
    }
}

/// Asks the database every few seconds, for `/health`.
async fn watch_database(health: Arc<Health>, stop: CancellationToken) {
    loop {
        let ok = match health.pool.get().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        };
        health.ok.store(ok, Ordering::Relaxed);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}
