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
    /// TLS on the gRPC port (cert, key; client_ca for client certificates).
    pub grpc_tls: Option<quantrac_plumbing::tls::ServerTls>,
    /// People's tokens from an OpenID Connect provider, beside quantrac's
    /// own (`quantrac token issue`); off when unset.
    pub oidc: Option<quantrac_plumbing::oidc::OidcConfig>,
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
    /// Kafka mode: record the changes that judging readings makes without
    /// waiting for PostgreSQL's WAL flush, and store the readings' offsets
    /// only once the flush has passed them (`quantrac_db::durable`). If
    /// the database then loses them, the engine is rebuilt from the
    /// database and the readings judged again. Officers' actions and
    /// single-node mode always wait for the flush.
    pub async_commit: bool,
    pub webhooks: WebhookConfig,
    /// Open `Subscribe` streams at most; more are refused with
    /// RESOURCE_EXHAUSTED. Each holds a task and a buffer of 256 alerts.
    pub max_subscribers: usize,
    /// E-mail to officers and facilities (off while `smtp_url` is empty).
    pub email: EmailConfig,
}

/// Who gets e-mail about which alerts, and through which server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `smtp://host:port` (plain, for a relay on the same host),
    /// `smtp://host:587?tls=required` (STARTTLS) or `smtps://host:465`.
    /// Empty: no e-mail.
    pub smtp_url: String,
    pub username: Option<String>,
    /// Give it through QUANTRAC_ALERTING__EMAIL__PASSWORD.
    pub password: Option<WebhookSecret>,
    /// The sender, e.g. `Trung tâm quan trắc <quantrac@stnmt.example.vn>`.
    pub from: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A message still refused after this many attempts (backing off up to
    /// 10 minutes apart) is marked failed and counted; it stays in the
    /// outbox to be read.
    pub max_attempts: u32,
    /// Officers: alerts of their zones / stations from a severity up.
    pub subscriptions: Vec<Subscription>,
    /// Rules whose alerts also go to the station's facility contacts (the
    /// registry's `contacts`): exceedances, lost connection, device faults
    /// and long calibrations.
    pub facility_rules: Vec<String>,
    /// A critical alert still open (not acknowledged) this long after it
    /// opened goes to `escalation_to`. Unset: no escalation.
    #[serde(default, with = "humantime_serde::option")]
    pub escalation_after: Option<Duration>,
    pub escalation_to: Vec<String>,
    /// Local time (Asia/Ho_Chi_Minh), "HH:MM", of the daily digest of open
    /// alerts sent to each subscription. Unset: no digest.
    pub digest_at: Option<String>,
    /// The officers' page, for links in the messages.
    pub page_url: String,
    /// Messages sent, given up or suppressed are kept this long in
    /// `mail_outbox` (evidence of who was told), then deleted.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
}

/// One officer's (or a shared mailbox's) subscription.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub address: String,
    /// Empty: every zone.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Empty: every station (of the zones).
    #[serde(default)]
    pub stations: Vec<String>,
    /// info, warning or critical.
    #[serde(default = "warning")]
    pub min_severity: String,
}

fn warning() -> String {
    "warning".into()
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_url: String::new(),
            username: None,
            password: None,
            from: "Quantrac <quantrac@localhost>".into(),
            timeout: Duration::from_secs(20),
            max_attempts: 20,
            subscriptions: Vec::new(),
            facility_rules: [
                "limit_exceeded",
                "average_exceeded",
                "data_gap",
                "instrument_status",
            ]
            .map(String::from)
            .to_vec(),
            escalation_after: Some(Duration::from_secs(30 * 60)),
            escalation_to: Vec::new(),
            digest_at: None,
            page_url: "http://127.0.0.1:8080".into(),
            keep: Duration::from_secs(366 * 86_400),
        }
    }
}

fn is_address(a: &str) -> bool {
    a.split_once('@')
        .is_some_and(|(u, h)| !u.is_empty() && h.contains('.') && !a.contains(char::is_whitespace))
}

impl EmailConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.smtp_url.is_empty() {
            return Ok(());
        }
        if !["smtp://", "smtps://"]
            .iter()
            .any(|p| self.smtp_url.starts_with(p))
        {
            return Err(invalid(
                "email.smtp_url",
                "smtp://host:port, smtp://host:587?tls=required or smtps://host:465",
            ));
        }
        if !self.from.contains('@') {
            return Err(invalid(
                "email.from",
                "an address, e.g. Quantrac <quantrac@example.vn>",
            ));
        }
        if self.max_attempts == 0 {
            return Err(invalid("email.max_attempts", "at least 1"));
        }
        if self.keep < Duration::from_secs(86_400) {
            return Err(invalid("email.keep", "at least 1d"));
        }
        for s in &self.subscriptions {
            if !is_address(&s.address) {
                return Err(invalid(
                    "email.subscriptions",
                    format!("{:?} is not an e-mail address", s.address),
                ));
            }
            if !["info", "warning", "critical"].contains(&s.min_severity.as_str()) {
                return Err(invalid(
                    "email.subscriptions",
                    format!("{}: min_severity is info, warning or critical", s.address),
                ));
            }
        }
        for a in &self.escalation_to {
            if !is_address(a) {
                return Err(invalid(
                    "email.escalation_to",
                    format!("{a:?} is not an e-mail address"),
                ));
            }
        }
        if let Some(t) = &self.digest_at
            && chrono::NaiveTime::parse_from_str(t, "%H:%M").is_err()
        {
            return Err(invalid("email.digest_at", "a local time HH:MM"));
        }
        Ok(())
    }
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            node_id: "alerting-1".into(),
            database_url: "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac".into(),
            registry: PathBuf::from("deploy/registry.toml"),
            rules: PathBuf::from("deploy/rules.toml"),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            grpc_tls: None,
            oidc: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9466)),
            kafka: KafkaConfig::default(),
            tick: Duration::from_secs(5),
            warm_up: Duration::from_secs(26 * 3600),
            async_commit: true,
            webhooks: WebhookConfig::default(),
            max_subscribers: 256,
            email: EmailConfig::default(),
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
    /// `https://` (or `http://`) URLs that receive every alert change as a
    /// JSON POST.
    pub urls: Vec<String>,
    /// PEM CA trusted for `https://` URLs (a private CA); unset: the public
    /// web roots.
    pub ca_file: Option<PathBuf>,
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
            ca_file: None,
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
        if let Some(problem) = self.oidc.as_ref().and_then(|o| o.problems()) {
            return Err(invalid("oidc", problem));
        }
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
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "webhooks.urls",
                    format!("`{url}`: expected an https:// or http:// URL"),
                ));
            }
        }
        if self.webhooks.urls.iter().any(|u| u.starts_with("https://")) {
            quantrac_plumbing::tls::client_config(self.webhooks.ca_file.as_deref(), None)
                .map_err(|e| invalid("webhooks.ca_file", e.to_string()))?;
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
        self.email.validate()?;
        if self.webhooks.max_attempts == 0 || self.webhooks.queue == 0 {
            return Err(invalid(
                "webhooks.max_attempts",
                "max_attempts and queue must be at least 1",
            ));
        }
        Ok(())
    }
}
