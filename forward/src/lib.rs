//! The feed to the national system. A province passes on every reading
//! its stations send to the Ministry, as Circular 10 files on the
//! Ministry's FTP(S) server, and answers for its delivery.
//!
//! A tour:
//! - The outbox is a table (`quantrac_db::forward`): the processor queues
//!   the (station, time) of every reading in the transaction that stores
//!   it (`storage.forward = true`), so nothing stored is missed, and a
//!   restart of either side loses nothing.
//! - [`Forwarder`] takes what is due, oldest first; [`render`] makes each
//!   time's file from `readings`, named after the station's Circular 10
//!   identity; [`upstream`] writes it (`.part`, then renamed) and only then
//!   is the key cleared. A failed upload is retried with backoff; the
//!   session is opened again.
//! - Not sent twice: a time queued again with unchanged content is
//!   cleared without an upload (`forward_sent` keeps each file's digest),
//!   and after a crash between upload and record, the file found on the
//!   server with the same bytes is recorded, not sent again.
//! - Each station's delivery status is the `forward_status` view; the
//!   feed's lag and backlog are in metrics and `/health`.
//! - More than one replica may run: one holds a PostgreSQL advisory lock
//!   and forwards, the others wait for it (the lock goes with its session,
//!   so a crashed forwarder's standby takes over within `poll`).
//! - [`config`]: settings, documented in `deploy/forward.toml`.

pub mod config;
pub mod render;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use quantrac_db::forward::{self, Due};
use quantrac_plumbing::http::{Health, HealthReport};
use quantrac_proto::registry::Registry;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

pub use config::ForwardConfig;
use render::Identities;
use upstream::{Session, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Db(#[from] quantrac_db::DbError),
    #[error("registry: {0}")]
    Registry(String),
    #[error(transparent)]
    Http(#[from] quantrac_plumbing::http::HttpError),
    #[error("a task failed: {0}")]
    Task(String),
}

impl From<tokio_postgres::Error> for ForwardError {
    fn from(e: tokio_postgres::Error) -> Self {
        ForwardError::Db(quantrac_db::DbError::Postgres(e))
    }
}

/// What `/health` shows.
#[derive(Debug, Default)]
struct State {
    pending: i64,
    lag_seconds: f64,
    sent: u64,
    unchanged: u64,
    recovered: u64,
    failures: u64,
    last_error: Option<String>,
    upstream_ok: bool,
    database_ok: bool,
    /// This replica holds the feed's lock.
    active: bool,
}

#[derive(Debug, Default)]
struct Status(Mutex<State>);

impl Status {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

impl Health for Status {
    fn report(&self) -> HealthReport {
        let s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The upstream being down is the Ministry's outage, not ours: a
        // restart would not help, so it is reported, not unhealthy.
        HealthReport {
            healthy: s.database_ok,
            status: serde_json::json!({
                "pending": s.pending,
                "lag_seconds": s.lag_seconds,
                "sent": s.sent,
                "unchanged": s.unchanged,
                "recovered": s.recovered,
                "failures": s.failures,
                "upstream_ok": s.upstream_ok,
                "database_ok": s.database_ok,
                "active": s.active,
                "last_error": s.last_error,
            }),
        }
    }
}

/// A running forwarder.
#[derive(Debug)]
pub struct Forwarder {
    pub http_addr: SocketAddr,
    tasks: JoinSet<Result<(), ForwardError>>,
    shutdown: CancellationToken,
}

/// The outcome of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    Sent,
    /// The same bytes were delivered before.
    Unchanged,
    /// Found on the server (an upload whose record was lost).
    Recovered,
    /// No readings at that key (nothing to send).
    Empty,
}

impl Delivered {
    fn as_str(self) -> &'static str {
        match self {
            Delivered::Sent => "sent",
            Delivered::Unchanged => "unchanged",
            Delivered::Recovered => "recovered",
            Delivered::Empty => "empty",
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum KeyError {
    #[error(
        "station {0} has no Circular 10 identity (Province_Facility_Station) among its registry aliases"
    )]
    NoIdentity(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Db(#[from] quantrac_db::DbError),
}

impl Forwarder {
    pub async fn start(
        config: ForwardConfig,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, ForwardError> {
        config.validate()?;
        let db = quantrac_db::connect(&config.database_url, &Default::default()).await?;
        // The processor owns the schema; the outbox must be there.
        db.query_one("SELECT count(*) FROM forward_outbox", &[])
            .await
            .map_err(|e| {
                quantrac_db::DbError::Schema(format!(
                    "the database has no forward_outbox yet (start the processor once, or run `quantrac migrate`): {}",
                    quantrac_db::describe(&e)
                ))
            })?;
        let identities = load_identities(&config.registry)?;
        tracing::info!(
            stations = identities.len(),
            upstream = %format!("{}:{}{}", config.upstream.host, config.upstream.port, config.upstream.dir),
            tls = config.upstream.tls,
            "forwarding to the national system"
        );
        let status = Arc::new(Status::default());
        status.update(|s| s.database_ok = true);
        let http = quantrac_plumbing::http::Server::bind(config.http_listen).await?;
        let http_addr = http.addr;
        let mut tasks = JoinSet::new();
        {
            let status: Arc<dyn Health> = status.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move { Ok(http.serve(status, metrics, stop).await?) });
        }
        let run = Run {
            config,
            db,
            identities,
            registry_modified: None,
            status,
            session: None,
            active: false,
        };
        tasks.spawn(run.forever(shutdown.clone()));
        Ok(Forwarder {
            http_addr,
            tasks,
            shutdown,
        })
    }

    /// Until stopped; the first task to fail ends the others.
    pub async fn wait(mut self) -> Result<(), ForwardError> {
        quantrac_plumbing::process::wait_for_tasks(
            &mut self.tasks,
            &self.shutdown,
            "forward",
            ForwardError::Task,
        )
        .await
    }
}

fn load_identities(path: &std::path::Path) -> Result<Identities, ForwardError> {
    let registry = Registry::load(path).map_err(|e| ForwardError::Registry(e.to_string()))?;
    Ok(Identities::from_registry(&registry))
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

struct Run {
    config: ForwardConfig,
    db: Client,
    identities: Identities,
    registry_modified: Option<SystemTime>,
    status: Arc<Status>,
    session: Option<Session>,
    /// Holds the feed's advisory lock (on `db`'s session).
    active: bool,
}

/// `pg_try_advisory_lock` key of the feed: "qtfwd".
const FEED_LOCK: i64 = 0x0071_7466_7764;

impl Run {
    async fn forever(mut self, shutdown: CancellationToken) -> Result<(), ForwardError> {
        self.registry_modified = modified(&self.config.registry);
        let mut last_cleanup: Option<DateTime<Utc>> = None;
        loop {
            let busy = match self.round(&shutdown).await {
                Ok(n) => {
                    self.status.update(|s| s.database_ok = true);
                    n > 0
                }
                Err(e) => {
                    tracing::error!(error = %e, "forwarding round failed; retrying");
                    self.status.update(|s| {
                        s.database_ok = false;
                        s.last_error = Some(e.to_string());
                    });
                    self.reconnect().await;
                    false
                }
            };
            self.observe().await;
            let now = Utc::now();
            if last_cleanup.is_none_or(|t| now - t > chrono::Duration::hours(1)) {
                let keep = chrono::Duration::from_std(self.config.keep_sent).unwrap_or_default();
                if let Ok(n) = forward::forget_sent(&self.db, now - keep).await {
                    last_cleanup = Some(now);
                    if n > 0 {
                        tracing::info!(rows = n, "forgot deliveries past keep_sent");
                    }
                }
            }
            self.reload_registry();
            // A full round goes on at once; an empty one waits.
            let pause = if busy {
                Duration::ZERO
            } else {
                self.config.poll
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        if let Some(s) = self.session.take() {
            s.quit().await;
        }
        tracing::info!("forwarder stopped");
        Ok(())
    }

    async fn reconnect(&mut self) {
        if self.db.is_closed()
            && let Ok(c) =
                quantrac_db::connect(&self.config.database_url, &Default::default()).await
        {
            self.db = c;
            // The lock went with the old session.
            self.active = false;
            self.status.update(|s| s.active = false);
        }
    }

    fn reload_registry(&mut self) {
        let now = modified(&self.config.registry);
        if now == self.registry_modified {
            return;
        }
        match load_identities(&self.config.registry) {
            Ok(ids) => {
                tracing::info!(stations = ids.len(), "registry reloaded");
                self.identities = ids;
                self.registry_modified = now;
            }
            Err(e) => {
                tracing::warn!(error = %e, "registry changed but does not load; keeping the previous one")
            }
        }
    }

    /// Backlog and lag, for metrics and `/health`.
    async fn observe(&self) {
        if let Ok(b) = forward::backlog(&self.db).await {
            let lag = b
                .oldest_enqueued_at
                .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("forward_pending").set(b.pending as f64);
            metrics::gauge!("forward_lag_seconds").set(lag);
            self.status.update(|s| {
                s.pending = b.pending;
                s.lag_seconds = lag;
            });
        }
    }

    /// Sends what is due; the number of keys handled.
    async fn round(&mut self, shutdown: &CancellationToken) -> Result<usize, quantrac_db::DbError> {
        if !self.active {
            self.active = self
                .db
                .query_one("SELECT pg_try_advisory_lock($1)", &[&FEED_LOCK])
                .await?
                .get(0);
            if !self.active {
                return Ok(0);
            }
            tracing::info!("holding the feed's lock: this replica forwards");
            let active = self.active;
            self.status.update(|s| s.active = active);
        }
        let due = forward::due(&self.db, self.config.settle, self.config.batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        if self.session.is_none() {
            match Session::open(&self.config.upstream).await {
                Ok(s) => {
                    self.session = Some(s);
                    self.status.update(|s| s.upstream_ok = true);
                }
                Err(e) => {
                    for d in &due {
                        self.failed(d, &e.to_string(), e.step()).await?;
                    }
                    self.status.update(|s| s.upstream_ok = false);
                    return Ok(0);
                }
            }
        }
        let mut handled = 0;
        for d in &due {
            if shutdown.is_cancelled() {
                break;
            }
            match self.deliver(d).await {
                Ok(outcome) => {
                    handled += 1;
                    metrics::counter!("forward_files_total", "outcome" => outcome.as_str())
                        .increment(1);
                    self.status.update(|s| match outcome {
                        Delivered::Sent => s.sent += 1,
                        Delivered::Unchanged => s.unchanged += 1,
                        Delivered::Recovered => s.recovered += 1,
                        Delivered::Empty => {}
                    });
                }
                Err(KeyError::Db(e)) => return Err(e),
                Err(e @ KeyError::NoIdentity(_)) => {
                    // Waits for the registry to name the station.
                    self.failed(d, &e.to_string(), "no_identity").await?;
                }
                Err(KeyError::Upstream(e)) => {
                    // The session is suspect: the rest of the round waits
                    // for a new one.
                    self.failed(d, &e.to_string(), e.step()).await?;
                    if let Some(s) = self.session.take() {
                        s.quit().await;
                    }
                    self.status.update(|s| s.upstream_ok = false);
                    break;
                }
            }
        }
        Ok(handled)
    }

    async fn failed(
        &self,
        d: &Due,
        error: &str,
        step: &'static str,
    ) -> Result<(), quantrac_db::DbError> {
        let backoff = Duration::from_secs(2u64.saturating_pow(d.attempts.clamp(0, 20) as u32 + 1))
            .min(self.config.max_backoff);
        metrics::counter!("forward_failures_total", "step" => step).increment(1);
        tracing::warn!(station = %d.station_id, measured_at = %d.measured_at, attempts = d.attempts + 1, step, error, retry_in = ?backoff, "forwarding failed");
        self.status.update(|s| {
            s.failures += 1;
            s.last_error = Some(error.to_string());
        });
        forward::failed(&self.db, d, error, backoff).await
    }

    async fn deliver(&mut self, d: &Due) -> Result<Delivered, KeyError> {
        let rows = forward::readings_at(&self.db, &d.station_id, d.measured_at).await?;
        if rows.is_empty() {
            forward::drop_due(&mut self.db, d).await?;
            return Ok(Delivered::Empty);
        }
        let identity = self
            .identities
            .get(&d.station_id)
            .ok_or_else(|| KeyError::NoIdentity(d.station_id.clone()))?;
        let offset = self
            .config
            .offset()
            .unwrap_or_else(quantrac_proto::domain::local_offset);
        let file = render::file(identity, d.measured_at, &rows, offset);
        if forward::sent_digest(&self.db, &d.station_id, d.measured_at).await?
            == Some(file.sha256.clone())
        {
            forward::drop_due(&mut self.db, d).await?;
            return Ok(Delivered::Unchanged);
        }
        let session = match self.session.as_mut() {
            Some(s) => s,
            None => {
                let s = Session::open(&self.config.upstream).await?;
                self.session.insert(s)
            }
        };
        let outcome = if session.holds(&file.name, &file.body).await? {
            Delivered::Recovered
        } else {
            session.put(&file.name, &file.body).await?;
            Delivered::Sent
        };
        forward::sent(&mut self.db, d, &file.name, &file.sha256, file.lines).await?;
        tracing::debug!(station = %d.station_id, file = %file.name, outcome = outcome.as_str(), "delivered");
        Ok(outcome)
    }
}
