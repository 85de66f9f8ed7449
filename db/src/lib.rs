//! The database every service shares: PostgreSQL, or TimescaleDB when the
//! extension is there.
//!
//! A tour:
//! - this file: [`connect`] with connect and statement timeouts
//!   ([`ConnectOptions`]), and [`DbError`], which says whether a retry can
//!   help and whose fault a failure is ([`Fault`]).
//! - [`schema`]: every versioned migration, the processor's tables and
//!   alerting's alike (`db/migrations/`), applied at start under an
//!   advisory lock; TimescaleDB and plain variants.
//! - [`readings`]: [`ReadingRow`], the one definition of a `readings` row:
//!   the processor writes it (binary COPY or `unnest`, idempotent on
//!   station, parameter, measured_at), alerting's warm-up and the query
//!   side read it back.
//! - [`events`]: what stations say about themselves (HJ 212 notices).
//! - [`pending`]: single-node mode's stored readings not judged yet.
//! - [`forward`]: the outbox of the feed to the national system.
//! - [`invalidate`]: an officer's invalidation of stored readings, audited
//!   in the same transaction.
//! - [`registry`]: the station registry written to its tables.
//! - [`access`]: people's bearer tokens (digests, roles, expiry), checked
//!   by every gRPC service; [`Reconnecting`], the connection a long-lived
//!   reader keeps.
//! - [`audit`]: the append-only, hash-chained audit log and its check.
//! - [`durable`]: for consumers committing without waiting for the WAL
//!   flush, which writes are on disk (so that their offsets may be stored).
//!
//! Architecture invariant: no service logic here. A function takes a client
//! or a transaction and does one thing to the tables; deciding when, and
//! what to do on failure, is the caller's.

pub mod access;
pub mod audit;
pub mod durable;
pub mod events;
pub mod forward;
pub mod invalidate;
pub mod pending;
pub mod readings;
pub mod registry;
pub mod schema;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
pub use tokio_postgres_rustls::MakeRustlsConnect;

pub use readings::{ReadingRow, ReportedRow, WriteMethod};
pub use schema::{SchemaInfo, SchemaOptions, TimescaleMode};

/// Whose fault a failure is, so a caller knows what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server or the network: connection lost, server restarting or
    /// short of resources, a serialization conflict, a timeout. Retry.
    Infrastructure,
    /// The data: a value the server refuses (out of its range, a broken
    /// constraint). Retrying the same data fails again: set it aside.
    Input,
    /// The deployment: credentials, a missing database or extension, a
    /// schema that does not match. An operator must act.
    Deployment,
    /// Anything else: a bug here.
    Internal,
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("schema: {0}")]
    Schema(String),
    #[error("stored {what} cannot be read back: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("database URL: {0}")]
    Url(String),
    #[error("database TLS: {0}")]
    Tls(#[from] quantrac_plumbing::tls::TlsError),
}

impl DbError {
    pub fn fault(&self) -> Fault {
        match self {
            DbError::Postgres(e) => fault_of(e),
            DbError::Schema(_) => Fault::Deployment,
            DbError::Corrupt { .. } => Fault::Internal,
            DbError::Url(_) | DbError::Tls(_) => Fault::Deployment,
        }
    }

    /// Whether waiting can help (connection trouble, server restarting).
    pub fn is_transient(&self) -> bool {
        self.fault() == Fault::Infrastructure
    }
}

/// The server's message when there is one: tokio-postgres's own Display
/// says only "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{} ({}){}",
            d.message(),
            d.code().code(),
            d.detail().map(|x| format!(": {x}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// Whose fault a tokio-postgres error is, from its SQLSTATE class.
pub fn fault_of(e: &tokio_postgres::Error) -> Fault {
    if e.is_closed() {
        return Fault::Infrastructure;
    }
    let Some(db) = e.as_db_error() else {
        // No server answer: I/O, a timeout, the connection refused.
        return Fault::Infrastructure;
    };
    let code = db.code().code();
    match code.get(..2).unwrap_or("") {
        // 08 connection, 53 resources, 57 operator intervention (shutdown,
        // statement timeout), 40 serialization failure or deadlock.
        "08" | "53" | "57" | "40" => Fault::Infrastructure,
        // 22 data exception, 23 integrity constraint violation.
        "22" | "23" => Fault::Input,
        // 28 authorization, 3D no such database, 42 undefined object or
        // privilege, 0A feature not supported (a server without COPY).
        "28" | "3D" | "42" | "0A" => Fault::Deployment,
        _ => Fault::Internal,
    }
}

/// Whether a tokio-postgres error may go away by waiting.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    fault_of(e) == Fault::Infrastructure
}

/// How long connecting and each statement may take. A database that stops
/// answering must turn into an error a service can act on (retry, report
/// unhealthy), never into a task waiting for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectOptions {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Zero: no limit.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            // Long enough for a migration on a large table.
            statement_timeout: Duration::from_secs(300),
        }
    }
}

/// How to reach the database at `url`, in libpq's URL form.
///
/// TLS follows `sslmode`: unset or `disable`, plain; `prefer`, `require`,
/// `verify-ca` and `verify-full` all mean TLS with the server's
/// certificate checked against `sslrootcert` (a PEM file; unset: the
/// public web roots) and its name against the host, i.e. verify-full.
/// An unverified TLS connection protects against nothing a plain one does
/// not, so it is not offered.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), DbError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root = Some(std::path::PathBuf::from(v)),
            _ => kept.push(pair),
        }
    }
    let tls_on = match mode.as_deref() {
        None | Some("disable") => false,
        Some("prefer" | "require" | "verify-ca" | "verify-full") => true,
        Some(other) => {
            return Err(DbError::Url(format!(
                "sslmode={other}: expected disable, require or verify-full"
            )));
        }
    };
    kept.push(if tls_on {
        "sslmode=require"
    } else {
        "sslmode=disable"
    });
    let url = format!("{base}?{}", kept.join("&"));
    let config: tokio_postgres::Config = url.parse()?;
    // Built even for plain connections: the connection's type names it, and
    // tokio-postgres never calls it with sslmode=disable.
    let client = quantrac_plumbing::tls::client_config(root.as_deref(), None)?;
    Ok((config, MakeRustlsConnect::new((*client).clone())))
}

/// Connects to `url` with the timeouts of `options`; the connection runs on
/// its own task, and a closed client is how callers learn it broke.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Client, DbError> {
    let (mut config, tls) = parse_url(url)?;
    config.connect_timeout(options.connect_timeout);
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "database connection closed");
        }
    });
    if !options.statement_timeout.is_zero() {
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                options.statement_timeout.as_millis()
            ))
            .await?;
    }
    Ok(client)
}

/// A connection opened again once it is lost (a database restart), so a
/// long-lived reader such as a gRPC service recovers instead of answering
/// "connection closed" for good.
#[derive(Debug)]
pub struct Reconnecting {
    url: String,
    options: ConnectOptions,
    slot: tokio::sync::Mutex<Option<std::sync::Arc<Client>>>,
}

impl Reconnecting {
    /// Starts with `client` when given, else connects at the first `get`.
    pub fn new(url: String, options: ConnectOptions, client: Option<Client>) -> Self {
        Reconnecting {
            url,
            options,
            slot: tokio::sync::Mutex::new(client.map(std::sync::Arc::new)),
        }
    }

    /// The open connection, or a new one when it was closed.
    pub async fn get(&self) -> Result<std::sync::Arc<Client>, DbError> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(std::sync::Arc::clone(c));
        }
        let c = std::sync::Arc::new(connect(&self.url, &self.options).await?);
        tracing::info!("database connection reopened");
        *slot = Some(std::sync::Arc::clone(&c));
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_decides_tls_and_always_verifies() {
        let (plain, _) = parse_url("postgres://u:p@h:5432/d").expect("plain");
        assert_eq!(
            plain.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        for mode in ["prefer", "require", "verify-ca", "verify-full"] {
            let (c, _) = parse_url(&format!(
                "postgres://u:p@h/d?sslmode={mode}&application_name=x"
            ))
            .expect(mode);
            assert_eq!(
                c.get_ssl_mode(),
                tokio_postgres::config::SslMode::Require,
                "{mode}"
            );
            assert_eq!(
                c.get_application_name(),
                Some("x"),
                "other options are kept"
            );
        }
        let err = parse_url("postgres://u:p@h/d?sslmode=allow")
            .err()
            .expect("allow is refused");
        assert!(err.to_string().contains("sslmode=allow"), "{err}");
        let err = parse_url("postgres://u:p@h/d?sslmode=require&sslrootcert=/nonexistent/ca.pem")
            .err()
            .expect("a missing CA file is refused");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
