//! Forwarder configuration: defaults, a TOML file, then environment
//! variables `QUANTRAC_FORWARD__<SECTION>__<FIELD>`; validated at start.
//! `deploy/forward.toml` documents every field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use quantrac_plumbing::config::ConfigError;
use quantrac_plumbing::config::invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    pub database_url: String,
    /// Station registry: each station's Circular 10 identity
    /// (`Province_Facility_Station`, one of its `aliases`) names its files.
    pub registry: PathBuf,
    /// `/metrics` and `/health`.
    pub http_listen: SocketAddr,
    pub upstream: UpstreamConfig,
    /// The file times' offset from UTC, in minutes (Viet Nam: +420).
    pub utc_offset_minutes: i32,
    /// A queued time waits this long before it is sent, so that readings of
    /// one time stored by several writes go in one file.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// How often the outbox is read when it was empty.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Files per round.
    pub batch: i64,
    /// A failing upload is retried after 2, 4, 8 ... seconds, at most this.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Deliveries are remembered this long (a time sent again within it,
    /// unchanged, is not uploaded twice).
    #[serde(with = "humantime_serde")]
    pub keep_sent: Duration,
}

/// The national system's FTP(S) server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Give it through QUANTRAC_FORWARD__UPSTREAM__PASSWORD.
    pub password: Password,
    /// Where files go; made if missing.
    pub dir: String,
    /// Explicit FTPS (`AUTH TLS`) before logging in: the password and the
    /// files are encrypted. Off only for a server on a trusted network.
    pub tls: bool,
    /// CA certificates for the server's; the public roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Each FTP command (connect, login, one upload) must finish within it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// The upstream password; never printed.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            database_url: "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac".into(),
            registry: PathBuf::from("deploy/registry.toml"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9469)),
            upstream: UpstreamConfig::default(),
            utc_offset_minutes: 7 * 60,
            settle: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            batch: 200,
            max_backoff: Duration::from_secs(300),
            keep_sent: Duration::from_secs(60 * 86_400),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 21,
            user: String::new(),
            password: Password::default(),
            dir: "/".into(),
            tls: true,
            ca_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl ForwardConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let c: ForwardConfig = quantrac_plumbing::config::load(path, "QUANTRAC_FORWARD__")?;
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
        if self.upstream.host.trim().is_empty() {
            return Err(invalid("upstream.host", "required"));
        }
        if self.upstream.user.trim().is_empty() {
            return Err(invalid(
                "upstream.user",
                "required (the account the Ministry gave the province)",
            ));
        }
        if self.offset().is_none() {
            return Err(invalid(
                "utc_offset_minutes",
                "between -1439 and 1439 minutes",
            ));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(invalid("batch", "between 1 and 10000"));
        }
        if self.upstream.timeout < Duration::from_secs(1) {
            return Err(invalid("upstream.timeout", "at least 1s"));
        }
        if self.poll.is_zero() {
            return Err(invalid("poll", "more than 0s"));
        }
        Ok(())
    }

    pub fn offset(&self) -> Option<chrono::FixedOffset> {
        chrono::FixedOffset::east_opt(self.utc_offset_minutes.checked_mul(60)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/forward.toml");
        let c = ForwardConfig::load(Some(&path)).expect("deploy/forward.toml loads");
        let d = ForwardConfig::default();
        assert_eq!(
            (c.settle, c.batch, c.max_backoff, c.utc_offset_minutes),
            (d.settle, d.batch, d.max_backoff, d.utc_offset_minutes)
        );
        assert!(c.upstream.tls);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let ok = || ForwardConfig {
            upstream: UpstreamConfig {
                user: "province".into(),
                ..UpstreamConfig::default()
            },
            ..ForwardConfig::default()
        };
        assert!(ok().validate().is_ok());
        let mut c = ok();
        c.upstream.user = " ".into();
        assert!(
            c.validate()
                .is_err_and(|e| e.to_string().contains("upstream.user"))
        );
        let mut c = ok();
        c.utc_offset_minutes = 24 * 60;
        assert!(
            c.validate()
                .is_err_and(|e| e.to_string().contains("utc_offset"))
        );
        assert_eq!(format!("{:?}", Password("hunter2".into())), "<redacted>");
    }
}
