//! What the alerting integration tests share beyond `quantrac-testkit`:
//! alerting's test configuration and starting it on the in-process bus.
#![allow(dead_code, unused_imports)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use quantrac_alerting::{Alerting, AlertingConfig};
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::v1::{DeviceStatus, StoredReading, StoredReadingBatch};
pub use quantrac_testkit::db::fresh_database;
pub use quantrac_testkit::env::var as env;
pub use quantrac_testkit::samples::cod;
pub use quantrac_testkit::unique;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A registry with the one outfall `station`, measuring COD hourly.
pub fn registry(station: &str) -> PathBuf {
    quantrac_testkit::registry::Outfalls::one(station)
        .measuring(&["COD"])
        .expected_interval("1h")
        .write()
        .expect("write registry")
}

pub fn rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules.toml")
}

/// Alerting on `db_url` with the sample rules, on free ports, ticking fast;
/// Kafka left at an address that fails if used.
pub fn alerting_config(db_url: &str, registry: &Path) -> AlertingConfig {
    let mut c = AlertingConfig {
        node_id: unique("node"),
        database_url: db_url.to_owned(),
        registry: registry.to_owned(),
        rules: rules(),
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        tick: Duration::from_millis(200),
        ..Default::default()
    };
    c.kafka.brokers = "127.0.0.1:1".into();
    c
}

/// Alerting in single-node mode: stored batches come through the returned
/// sender instead of Kafka.
pub async fn start_single_node(
    db_url: &str,
    registry: &Path,
    stop: &CancellationToken,
) -> (Alerting, mpsc::Sender<StoredReadingBatch>) {
    let (tx, rx) = mpsc::channel(16);
    let alerting = Alerting::start(
        alerting_config(db_url, registry),
        quantrac_alerting::Edge::Bus(rx),
        None,
        stop.clone(),
    )
    .await
    .expect("alerting");
    (alerting, tx)
}

/// A stored COD reading of `station`, as the processor hands it to alerting
/// on the bus: on the 5-minute grid, `minutes_ago` minutes ago.
pub fn stored_cod(station: &str, value: f64, minutes_ago: i64) -> StoredReadingBatch {
    let at = Utc::now() - chrono::Duration::minutes(minutes_ago);
    let at = chrono::DateTime::from_timestamp(at.timestamp() / 300 * 300, 0).expect("time");
    StoredReadingBatch {
        station_id: station.into(),
        readings: vec![StoredReading {
            station_id: station.into(),
            parameter: "COD".into(),
            value,
            unit: "mg/L".into(),
            measured_at: Some(to_timestamp(at)),
            status: DeviceStatus::Measuring as i32,
            device_flag: "00".into(),
            qc_flag: "valid".into(),
            source: 0,
            received_at: Some(to_timestamp(Utc::now())),
            ingest_id: uuid::Uuid::now_v7().to_string(),
            converted: None,
        }],
        unjudged_batch: 0,
    }
}

/// A gRPC alert client carrying a new token of `role` for `identity`,
/// issued in the database at `db_url` (alerting migrates it at start).
pub async fn alert_client(
    addr: std::net::SocketAddr,
    db_url: &str,
    identity: &str,
    role: quantrac_db::access::Role,
) -> AlertClient {
    let db = quantrac_testkit::db::connect(db_url).await;
    let token =
        quantrac_db::access::issue(&db, identity, role, Utc::now() + chrono::Duration::hours(1))
            .await
            .expect("issue a token")
            .secret;
    let channel = quantrac_testkit::grpc::channel(addr).await;
    quantrac_proto::v1::alert_service_client::AlertServiceClient::with_interceptor(
        channel,
        quantrac_testkit::grpc::Bearer::new(&token),
    )
}

pub type AlertClient = quantrac_proto::v1::alert_service_client::AlertServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        quantrac_testkit::grpc::Bearer,
    >,
>;
