//! What the alerting integration tests share: service addresses, fresh
//! databases, a one-station registry and COD samples.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use quantrac_alerting::{Alerting, AlertingConfig};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::v1::StoredReadingBatch;
use quantrac_proto::{Sample, SampleValue};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{}", &id[id.len() - 10..])
}

pub async fn fresh_database() -> String {
    let admin = env(
        "QUANTRAC_DATABASE_URL",
        "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac",
    );
    let name = unique("qa");
    let (client, conn) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("PostgreSQL reachable");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("url with a database");
    format!("{base}/{name}")
}

pub fn registry(station: &str) -> PathBuf {
    let text = format!(
        r#"
[[stations]]
id = "{station}"
name = "Test outfall"
facility = "Test facility"
industrial_zone = "KCN Hòa Hiệp"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [
  {{ code = "COD", unit = "mg/L", range_min = 0, range_max = 1000, expected_interval = "1h" }},
]
limits = [
  {{ parameter = "COD", max = 150, regulation = "QCVN 40:2011/BTNMT", column = "B", coefficients = {{ Kq = 0.9, Kf = 1.1 }}, effective_from = 2012-01-01 }},
]
"#
    );
    let path = std::env::temp_dir().join(format!("{}.toml", unique("registry")));
    std::fs::write(&path, text).expect("write registry");
    path
}

/// COD samples 5 minutes apart ending `minutes_ago` minutes ago.
pub fn cod(station: &str, values: &[f64], minutes_ago: i64) -> Vec<Sample> {
    let n = values.len() as i64;
    let end = Utc::now() - chrono::Duration::minutes(minutes_ago);
    let end = chrono::DateTime::from_timestamp(end.timestamp() / 300 * 300, 0).expect("time");
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Sample {
            station_id: station.into(),
            measured_at: end - chrono::Duration::minutes(5 * (n - 1 - i as i64)),
            values: vec![SampleValue {
                parameter: "COD".into(),
                value: *v,
                unit: "mg/L".into(),
                status: DeviceStatus::Measuring,
                device_flag: "00".into(),
            }],
        })
        .collect()
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
