//! Alerting service configuration: defaults, a TOML file, then environment
//! variables `QUANTRAC_ALERTING__<SECTION>__<FIELD>`; validated at start.
//! The rules themselves live in their own file (`rules`), reloaded while
//! running. `deploy/alerting.toml` documents every field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use quantrac_plumbing::config::ConfigError;
use quantrac_plumbing::config::invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    pub node_id: String,
    pub database_url: String,
    /// Station registry (permit limits, expected intervals).
    pub registry: PathBuf,
    /// Rule defaults and overrides; re-read when the file changes.
    pub rules: PathBuf,
    /// gRPC `AlertService` (subscribe, acknowledge, resolve).
    pub grpc_listen: SocketAddr,
    /// `/metrics` and `/health`.
    pub http_listen: SocketAddr,
    pub kafka: KafkaConfig,
    /// Wall-clock checks (data gaps, re-notification, rules file changes).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// On start, the engine's windows are rebuilt from this much of the
    /// stored readings.
    #[serde(with = "humantime_serde")]
    pub warm_up: Duration,
    pub webhooks: WebhookConfig,
    /// Open `Subscribe` streams at most; more are refused with
    /// RESOURCE_EXHAUSTED. Each holds a task and a buffer of 256 alerts.
    pub max_subscribers: usize,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            node_id: "alerting-1".into(),
            database_url: "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac".into(),
            registry: PathBuf::from("deploy/registry.toml"),
            rules: PathBuf::from("deploy/rules.toml"),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9466)),
            kafka: KafkaConfig::default(),
            tick: Duration::from_secs(5),
            warm_up: Duration::from_secs(26 * 3600),
            webhooks: WebhookConfig::default(),
            max_subscribers: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub valid_topic: String,
    pub alerts_topic: String,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        use quantrac_proto::topics;
        Self {
            brokers: "127.0.0.1:19092".into(),
            group_id: "quantrac-alerting".into(),
            valid_topic: topics::READINGS_VALID.into(),
            alerts_topic: topics::ALERTS.into(),
            session_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// `http://` URLs that receive every alert change as a JSON POST.
    pub urls: Vec<String>,
    /// When set, every POST is signed: `X-Quantrac-Timestamp: <unix
    /// seconds>` and `X-Quantrac-Signature: sha256=<hex HMAC-SHA256 of
    /// "<timestamp>.<body>" with this key>`, so the receiver can tell the
    /// alert came from here and refuse a replay (check the timestamp).
    /// Set it through QUANTRAC_ALERTING__WEBHOOKS__SECRET.
    pub secret: Option<WebhookSecret>,
    /// Failed attempts after which a failure is counted and logged as an
    /// error; delivery goes on trying (nothing is dropped), and the URL's
    /// later changes wait behind it.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// No longer used: deliveries are read from `alert_events` in the
    /// database, per URL, not from a queue. Accepted so that existing
    /// configuration files still load.
    pub queue: usize,
}

/// A webhook signing key; never printed.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: None,
            max_attempts: 8,
            timeout: Duration::from_secs(5),
            queue: 1_000,
        }
    }
}

impl AlertingConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let c: AlertingConfig = quantrac_plumbing::config::load(path, "QUANTRAC_ALERTING__")?;
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
        if self.max_subscribers == 0 {
            return Err(invalid("max_subscribers", "must be at least 1"));
        }
        if self.tick < Duration::from_millis(100) {
            return Err(invalid("tick", "must be at least 100ms"));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must list at least one host:port"));
        }
        if !(Duration::from_secs(6)..=Duration::from_secs(300))
            .contains(&self.kafka.session_timeout)
        {
            return Err(invalid(
                "kafka.session_timeout",
                "must be between 6s and 5m",
            ));
        }
        for url in &self.webhooks.urls {
            if !url.starts_with("http://") {
                return Err(invalid(
                    "webhooks.urls",
                    format!("`{url}`: only http:// URLs (put TLS in front)"),
                ));
            }
        }
        if self
            .webhooks
            .secret
            .as_ref()
            .is_some_and(|s| s.0.len() < 16)
        {
            return Err(invalid(
                "webhooks.secret",
                "at least 16 characters (a random key, e.g. 32 hex digits)",
            ));
        }
        if self.webhooks.max_attempts == 0 || self.webhooks.queue == 0 {
            return Err(invalid(
                "webhooks.max_attempts",
                "max_attempts and queue must be at least 1",
            ));
        }
        Ok(())
    }
}
