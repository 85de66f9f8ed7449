//! Query service configuration: defaults, a TOML file, then environment
//! variables `QUANTRAC_QUERY__<SECTION>__<FIELD>`; validated at start.
//! `deploy/query.toml` documents every field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use quantrac_plumbing::config::ConfigError;
use quantrac_plumbing::config::invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub database_url: String,
    /// gRPC `QueryService` (and grpc-web, for the officers' page).
    pub grpc_listen: SocketAddr,
    /// TLS on the gRPC port (cert, key; client_ca for client certificates).
    pub grpc_tls: Option<quantrac_plumbing::tls::ServerTls>,
    /// People's tokens from an OpenID Connect provider, beside quantrac's
    /// own (`quantrac token issue`); off when unset.
    pub oidc: Option<quantrac_plumbing::oidc::OidcConfig>,
    /// `/metrics` and `/health`.
    pub http_listen: SocketAddr,
    /// Database connections the calls share (each runs several calls at
    /// once; a slow call holds one statement, not a connection).
    pub connections: usize,
    /// A call without a `grpc-timeout` gets this deadline; a statement
    /// never runs longer.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    pub limits: Limits,
}

/// What one request may ask for; more is refused with a status naming the
/// field, never cut silently.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Points per page of `GetSeries` / message of `StreamSeries`.
    pub max_page_size: u32,
    /// Buckets per `GetAggregates` call.
    pub max_buckets: usize,
    /// Longest range of an aggregate or compliance call.
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            database_url: "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac".into(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            grpc_tls: None,
            oidc: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9467)),
            connections: 4,
            deadline: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_page_size: 10_000,
            max_buckets: 100_000,
            max_range: Duration::from_secs(10 * 366 * 86_400),
        }
    }
}

impl QueryConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let c: QueryConfig = quantrac_plumbing::config::load(path, "QUANTRAC_QUERY__")?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(invalid(
                "database_url",
                "expected postgres://user:password@host:port/db",
            ));
        }
        if let Some(problem) = self.oidc.as_ref().and_then(|o| o.problems()) {
            return Err(invalid("oidc", problem));
        }
        if !(1..=64).contains(&self.connections) {
            return Err(invalid("connections", "must be between 1 and 64"));
        }
        if self.deadline < Duration::from_millis(100) {
            return Err(invalid("deadline", "must be at least 100ms"));
        }
        if self.limits.max_page_size == 0 || self.limits.max_buckets == 0 {
            return Err(invalid(
                "limits.max_page_size",
                "max_page_size and max_buckets must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/query.toml");
        let c = QueryConfig::load(Some(&path)).expect("deploy/query.toml loads");
        let d = QueryConfig::default();
        assert_eq!(
            (
                c.grpc_listen,
                c.connections,
                c.deadline,
                c.limits.max_buckets,
                c.limits.max_range
            ),
            (
                d.grpc_listen,
                d.connections,
                d.deadline,
                d.limits.max_buckets,
                d.limits.max_range
            )
        );
    }

    #[test]
    fn refuses_what_cannot_work() {
        let c = QueryConfig {
            connections: 0,
            ..QueryConfig::default()
        };
        assert!(c.validate().is_err());
        let c = QueryConfig {
            database_url: "mysql://x".into(),
            ..QueryConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
