//! Helpers for the integration tests: they run against the real Kafka and
//! Mosquitto started by `deploy/services.sh`, found through the same
//! environment variables (with the same defaults). Every test uses its own
//! topics, node id and station ids, so tests never see each other's data.

#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use quantrac_ingest::IngestConfig;
use quantrac_proto::v1::{ReadingBatch, RejectedInput};
use quantrac_proto::{Sample, SampleValue, domain::DeviceStatus};
pub use quantrac_testkit::env::{kafka_brokers, mqtt_url};
use quantrac_testkit::kafka::read_where;
pub use quantrac_testkit::kafka::{Topics, create_topics};
pub use quantrac_testkit::unique;

pub fn mqtt_station_credentials() -> (String, String) {
    (
        std::env::var("QUANTRAC_MQTT_STATION_USER").unwrap_or_else(|_| "station-demo".into()),
        std::env::var("QUANTRAC_MQTT_STATION_PASSWORD").unwrap_or_else(|_| "demo-secret".into()),
    )
}

/// An ingest config for a test: given topics, its own node id, TCP and HTTP
/// on ephemeral ports, MQTT off unless the test turns it on.
pub fn test_config(topics: &Topics, node: &str) -> IngestConfig {
    let mut c = IngestConfig {
        node_id: node.to_owned(),
        ..Default::default()
    };
    c.kafka.brokers = kafka_brokers();
    c.kafka.readings_topic = topics.raw.clone();
    c.kafka.rejected_topic = topics.rejected.clone();
    c.kafka.linger = Duration::from_millis(1);
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.tcp.listen = "127.0.0.1:0".parse().expect("addr");
    c.mqtt.enabled = false;
    c.mqtt.url = mqtt_url();
    c.mqtt.username = std::env::var("QUANTRAC_MQTT_USER").unwrap_or_else(|_| "ingest".into());
    c.mqtt.password =
        std::env::var("QUANTRAC_MQTT_PASSWORD").unwrap_or_else(|_| "ingest-secret".into());
    c.hj212.default_password = Some("test-pw".into());
    c
}

/// Reads records from the start of `topic` until `n` are read or `within`
/// passes; returns (key, payload) pairs.
pub async fn read_records(topic: &str, n: usize, within: Duration) -> Vec<(String, Vec<u8>)> {
    read_where(
        topic,
        n,
        within,
        |k, v| (String::from_utf8_lossy(k).into_owned(), v.to_vec()),
        |_| true,
    )
    .await
}

pub async fn read_batches(topic: &str, n: usize, within: Duration) -> Vec<ReadingBatch> {
    read_batches_where(topic, n, within, |_| true).await
}

/// Like [`read_batches`], counting only the batches `keep` selects (tests
/// that share the MQTT broker see each other's stations).
pub async fn read_batches_where(
    topic: &str,
    n: usize,
    within: Duration,
    keep: impl Fn(&ReadingBatch) -> bool,
) -> Vec<ReadingBatch> {
    read_where(
        topic,
        n,
        within,
        |key, payload| {
            let b = ReadingBatch::decode(payload).expect("a ReadingBatch");
            assert_eq!(key, b.station_id.as_bytes(), "record key is the station id");
            b
        },
        keep,
    )
    .await
}

pub async fn read_rejected(topic: &str, n: usize, within: Duration) -> Vec<RejectedInput> {
    read_rejected_where(topic, n, within, |_| true).await
}

pub async fn read_rejected_where(
    topic: &str,
    n: usize,
    within: Duration,
    keep: impl Fn(&RejectedInput) -> bool,
) -> Vec<RejectedInput> {
    read_where(
        topic,
        n,
        within,
        |_, payload| RejectedInput::decode(payload).expect("a RejectedInput"),
        keep,
    )
    .await
}

/// A wastewater sample at a whole second.
pub fn sample(station: &str, at: DateTime<Utc>, cod: f64) -> Sample {
    let v =
        |parameter: &str, value: f64, unit: &str, status: DeviceStatus, flag: &str| SampleValue {
            parameter: parameter.into(),
            value,
            unit: unit.into(),
            status,
            device_flag: flag.into(),
            report: None,
            converted: None,
        };
    Sample {
        station_id: station.into(),
        measured_at: at,
        values: vec![
            v("pH", 7.12, "pH", DeviceStatus::Measuring, "00"),
            v("TSS", 18.6, "mg/L", DeviceStatus::Measuring, "00"),
            v("COD", cod, "mg/L", DeviceStatus::Calibrating, "01"),
            v("NH4", 1.35, "mg/L", DeviceStatus::Error, "02"),
        ],
    }
}

/// The sample a batch carries, to compare with what was sent.
pub fn batch_to_sample(b: &ReadingBatch) -> Sample {
    let at = b
        .readings
        .first()
        .and_then(|r| r.measured_at.as_ref())
        .expect("measured_at");
    Sample {
        station_id: b.station_id.clone(),
        measured_at: quantrac_proto::domain::from_timestamp(at).expect("time"),
        values: b
            .readings
            .iter()
            .map(|r| SampleValue {
                parameter: r.parameter.clone(),
                value: r.value,
                unit: r.unit.clone(),
                status: match r.status() {
                    quantrac_proto::v1::DeviceStatus::Calibrating => DeviceStatus::Calibrating,
                    quantrac_proto::v1::DeviceStatus::Error => DeviceStatus::Error,
                    _ => DeviceStatus::Measuring,
                },
                device_flag: r.device_flag.clone(),
                report: None,
                converted: None,
            })
            .collect(),
    }
}

pub fn utc7() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(7 * 3600).expect("offset")
}
