//! The whole pipeline for a benchmark run: fresh topics, the three
//! services' configurations (on free ports, a fresh database, a registry
//! for the fleet) and the services started as processes of their own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use quantrac_alerting::AlertingConfig;
use quantrac_ingest::IngestConfig;
use quantrac_processor::ProcessorConfig;
use quantrac_testkit::unique;

use super::TopicSpec;
use super::procs::{Proc, free_addr};

/// A run's own topics, `partitions` each.
pub struct Topics {
    pub raw: String,
    pub valid: String,
    pub rejected: String,
    pub alerts: String,
    pub ingest_rejected: String,
}

impl Topics {
    pub async fn create(brokers: &str, base: &str, partitions: i32) -> Result<Self> {
        let t = |s: &str| format!("{base}.{s}");
        let topics = Topics {
            raw: t("raw"),
            valid: t("valid"),
            rejected: t("rejected"),
            alerts: t("alerts"),
            ingest_rejected: t("ingest-rejected"),
        };
        let specs: Vec<TopicSpec<'_>> = topics
            .names()
            .into_iter()
            .map(|name| TopicSpec {
                name,
                partitions,
                configs: &[],
            })
            .collect();
        super::create_topics(brokers, &specs).await?;
        Ok(topics)
    }

    pub fn names(&self) -> [&str; 5] {
        [
            &self.raw,
            &self.valid,
            &self.rejected,
            &self.alerts,
            &self.ingest_rejected,
        ]
    }
}

/// The test broker's accounts, from `deploy/services.sh env` (with its
/// defaults): ingest's (reads only) and the simulated fleet's (writes only).
pub struct MqttAccounts {
    pub url: String,
    pub ingest: (String, String),
    pub station: (String, String),
}

impl MqttAccounts {
    pub fn from_env() -> Self {
        let var = quantrac_testkit::env::var;
        MqttAccounts {
            url: quantrac_testkit::env::mqtt_url(),
            ingest: (
                var("QUANTRAC_MQTT_USER", "ingest"),
                var("QUANTRAC_MQTT_PASSWORD", "ingest-secret"),
            ),
            station: (
                var("QUANTRAC_MQTT_STATION_USER", "station-demo"),
                var("QUANTRAC_MQTT_STATION_PASSWORD", "demo-secret"),
            ),
        }
    }
}

/// Where a run's services are and what they read.
pub struct Configs {
    pub ingest: IngestConfig,
    pub processor: ProcessorConfig,
    pub alerting: AlertingConfig,
    /// Ingest's TCP port and alerting's gRPC port.
    pub tcp: SocketAddr,
    pub grpc: SocketAddr,
}

impl Configs {
    /// `tag` names the run's consumer groups and ingest node; ingest uses
    /// its own MQTT account. No per-station TCP rate cap: the load
    /// generator decides the rate.
    pub fn new(
        tag: &str,
        db_url: &str,
        registry: &Path,
        topics: &Topics,
        brokers: &str,
        mqtt: &MqttAccounts,
    ) -> Result<Self> {
        let (tcp, grpc) = (free_addr()?, free_addr()?);
        let mut i = IngestConfig {
            node_id: unique(&format!("{tag}-ingest")),
            ..Default::default()
        };
        i.http.listen = free_addr()?;
        i.tcp.listen = tcp;
        i.tcp.max_readings_per_second_per_station = 0;
        i.kafka.brokers = brokers.to_owned();
        i.kafka.readings_topic = topics.raw.clone();
        i.kafka.rejected_topic = topics.ingest_rejected.clone();
        i.mqtt.url.clone_from(&mqtt.url);
        (i.mqtt.username, i.mqtt.password) = mqtt.ingest.clone();
        let mut p = ProcessorConfig {
            database_url: db_url.to_owned(),
            registry: registry.to_owned(),
            ..Default::default()
        };
        p.http.listen = free_addr()?;
        p.kafka.brokers = brokers.to_owned();
        p.kafka.group_id = unique(&format!("{tag}-p"));
        p.kafka.raw_topic = topics.raw.clone();
        p.kafka.valid_topic = topics.valid.clone();
        p.kafka.rejected_topic = topics.rejected.clone();
        let mut a = AlertingConfig {
            database_url: db_url.to_owned(),
            registry: registry.to_owned(),
            rules: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules.toml"),
            grpc_listen: grpc,
            http_listen: free_addr()?,
            ..Default::default()
        };
        a.kafka.brokers = brokers.to_owned();
        a.kafka.group_id = unique(&format!("{tag}-a"));
        a.kafka.valid_topic = topics.valid.clone();
        a.kafka.alerts_topic = topics.alerts.clone();
        Ok(Configs {
            ingest: i,
            processor: p,
            alerting: a,
            tcp,
            grpc,
        })
    }

    /// Drops ingest's persistent MQTT session from the broker, which would
    /// otherwise queue every later run's messages (and slow it down).
    pub async fn forget_ingest_session(&self, mqtt_url: &str) {
        super::procs::forget_session(
            mqtt_url,
            &self.ingest.mqtt.username,
            &self.ingest.mqtt.password,
            &format!("quantrac-{}", self.ingest.node_id),
        )
        .await;
    }
}

/// The three services, each its own process.
pub struct Services {
    pub ingest: Proc,
    pub processor: Proc,
    pub alerting: Proc,
}

/// Writes the configurations into `work` and starts the processor,
/// alerting, then ingest (so nothing it accepts waits for a consumer).
pub async fn start(work: &Path, c: &Configs) -> Result<Services> {
    for (file, text) in [
        ("ingest.toml", toml::to_string(&c.ingest)?),
        ("processor.toml", toml::to_string(&c.processor)?),
        ("alerting.toml", toml::to_string(&c.alerting)?),
    ] {
        std::fs::write(work.join(file), text)?;
    }
    let run = |name: &'static str, file: &str, http: SocketAddr| {
        let (config, log) = (
            work.join(format!("{file}.toml")),
            work.join(format!("{file}.log")),
        );
        async move { Proc::start(name, &config, http, &log).await }
    };
    let processor = run("quantrac-processor", "processor", c.processor.http.listen).await?;
    let alerting = run("quantrac-alerting", "alerting", c.alerting.http_listen).await?;
    let ingest = run("quantrac-ingest", "ingest", c.ingest.http.listen).await?;
    Ok(Services {
        ingest,
        processor,
        alerting,
    })
}
