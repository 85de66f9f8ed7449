//! Processor configuration: built-in defaults, a TOML file, then
//! environment variables `QUANTRAC_PROCESSOR__<SECTION>__<FIELD>`;
//! validated at start with errors that name the field.
//! `deploy/processor.toml` documents every field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use quantrac_db::{ConnectOptions, TimescaleMode, WriteMethod};
pub use quantrac_plumbing::config::ConfigError;
use quantrac_plumbing::config::invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    pub node_id: String,
    /// `postgres://user:password@host:port/db` (TimescaleDB or PostgreSQL).
    pub database_url: String,
    /// Connect and statement timeouts.
    pub database: ConnectOptions,
    /// Station registry (TOML); loaded at start and written to the database.
    pub registry: PathBuf,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub batch: BatchConfig,
    pub storage: StorageConfig,
    pub validation: ValidationSettings,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            node_id: "processor-1".into(),
            database_url: "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac".into(),
            database: ConnectOptions::default(),
            registry: PathBuf::from("deploy/registry.toml"),
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            batch: BatchConfig::default(),
            storage: StorageConfig::default(),
            validation: ValidationSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Consumer group: processors with the same group split the partitions.
    pub group_id: String,
    pub raw_topic: String,
    pub valid_topic: String,
    pub rejected_topic: String,
    /// How long the group waits for a member that stopped heartbeating
    /// (crashed) before giving its partitions to the others.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How long the `readings.valid` producer waits to fill a request.
    /// Every committed batch waits this long before alerting sees it.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Extra librdkafka properties for both the consumer and the producer.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        use quantrac_proto::topics;
        Self {
            brokers: "127.0.0.1:19092".into(),
            group_id: "quantrac-processor".into(),
            raw_topic: topics::READINGS_RAW.into(),
            valid_topic: topics::READINGS_VALID.into(),
            rejected_topic: topics::READINGS_REJECTED.into(),
            session_timeout: Duration::from_secs(30),
            // Measured (benches/results, e2e): 5 ms put 5-7 ms on every
            // reading's way to alerting; `readings.valid` carries one record
            // per station per batch, produced together, so 1 ms costs few
            // extra requests.
            linger: Duration::from_millis(1),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is written when it holds this many readings...
    pub max_readings: usize,
    /// ...or when its first record is this old...
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// ...or, when set, as soon as nothing more is queued: readings are not
    /// held back waiting for company (latency at low rates), while under
    /// load, with every worker writing, records queue and batches stay
    /// large.
    pub write_when_idle: bool,
    /// Batches written at once, each on its own database connection, while
    /// the next is read. Publishing and offsets stay in batch order.
    pub in_flight: usize,
    /// Backoff while the database is unavailable (doubles up to `max_backoff`).
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_readings: 5_000,
            max_wait: Duration::from_millis(200),
            write_when_idle: true,
            in_flight: 3,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub write_method: WriteMethod,
    pub timescale: TimescaleMode,
    /// TimescaleDB: compress chunks older than this.
    #[serde(with = "humantime_serde")]
    pub compress_after: Duration,
    /// Readings older than this are dropped (TimescaleDB retention policy;
    /// on plain PostgreSQL an hourly delete) and refused on arrival.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often the processor deletes what is past `retention`: readings
    /// on plain PostgreSQL (TimescaleDB has its policy), rejected readings
    /// everywhere.
    #[serde(with = "humantime_serde")]
    pub cleanup_every: Duration,
    /// TimescaleDB: how often the processor refreshes the hourly and daily
    /// continuous aggregates over all time (late readings older than the
    /// refresh policies' windows reach them too). 0 turns it off.
    #[serde(with = "humantime_serde")]
    pub refresh_rollups_every: Duration,
    /// How often the newest reading of each series reaches
    /// `latest_readings` (the query service's latest values lag by at
    /// most this).
    #[serde(with = "humantime_serde")]
    pub latest_every: Duration,
    /// Queue every stored reading's station and time for `quantrac-forward`
    /// (the feed to the national system), in the transaction that stores
    /// it. Off unless a forwarder runs: nothing else empties the queue.
    pub forward: bool,
    /// Kafka mode: commit without waiting for PostgreSQL's WAL flush, and
    /// store a batch's offsets only once the flush has passed it
    /// (`quantrac_db::durable`). A database crash then loses no reading: the
    /// unflushed batches are replayed from `readings.raw`. Single-node
    /// mode always waits (its answer is the station's acknowledgement).
    pub async_commit: bool,
}

impl StorageConfig {
    /// What the schema's owner decides about storage.
    pub fn schema(&self) -> quantrac_db::SchemaOptions {
        quantrac_db::SchemaOptions {
            timescale: self.timescale,
            compress_after: self.compress_after,
            retention: self.retention,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            write_method: WriteMethod::Copy,
            timescale: TimescaleMode::Auto,
            compress_after: Duration::from_secs(7 * 86_400),
            retention: Duration::from_secs(5 * 365 * 86_400),
            cleanup_every: Duration::from_secs(3_600),
            refresh_rollups_every: Duration::from_secs(600),
            latest_every: Duration::from_secs(1),
            forward: false,
            async_commit: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSettings {
    /// Readings timestamped further ahead than this (clock skew) are refused.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            max_future: Duration::from_secs(600),
        }
    }
}

impl ProcessorConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let c: ProcessorConfig = quantrac_plumbing::config::load(path, "QUANTRAC_PROCESSOR__")?;
        c.validate()?;
        Ok(c)
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: ProcessorConfig = quantrac_plumbing::config::from_toml(text)?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.is_empty() {
            return Err(invalid("node_id", "must not be empty"));
        }
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(invalid(
                "database_url",
                "expected postgres://user:password@host:port/db",
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must list at least one host:port"));
        }
        if self.kafka.group_id.is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if !(Duration::from_secs(6)..=Duration::from_secs(300))
            .contains(&self.kafka.session_timeout)
        {
            return Err(invalid(
                "kafka.session_timeout",
                "must be between 6s and 5m (broker limits)",
            ));
        }
        if self.batch.max_readings == 0 {
            return Err(invalid("batch.max_readings", "must be at least 1"));
        }
        if !(1..=16).contains(&self.batch.in_flight) {
            return Err(invalid("batch.in_flight", "must be between 1 and 16"));
        }
        if self.batch.min_backoff.is_zero() || self.batch.max_backoff < self.batch.min_backoff {
            return Err(invalid(
                "batch.max_backoff",
                "need 0 < min_backoff <= max_backoff",
            ));
        }
        if self.storage.retention < Duration::from_secs(86_400) {
            return Err(invalid("storage.retention", "must be at least 1 day"));
        }
        if self.storage.latest_every.is_zero() {
            return Err(invalid("storage.latest_every", "must be positive"));
        }
        if self.storage.cleanup_every.is_zero() {
            return Err(invalid("storage.cleanup_every", "must be positive"));
        }
        if self.storage.compress_after < Duration::from_secs(3_600) {
            return Err(invalid("storage.compress_after", "must be at least 1 hour"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let c = ProcessorConfig::from_toml(include_str!("../../deploy/processor.toml"))
            .expect("parses");
        assert_eq!(c.kafka.raw_topic, "readings.raw");
    }

    #[test]
    fn errors_name_the_field() {
        let e = ProcessorConfig::from_toml("[storage]\nretention = \"1h\"\n").expect_err("refused");
        assert!(e.to_string().contains("storage.retention"), "{e}");
        let e = ProcessorConfig::from_toml("[storage]\nwrite_method = \"fast\"\n")
            .expect_err("refused");
        assert!(e.to_string().contains("write_method"), "{e}");
        let e = ProcessorConfig::from_toml("[batch]\nmax_rows = 1\n").expect_err("refused");
        assert!(e.to_string().contains("max_rows"), "{e}");
    }
}
