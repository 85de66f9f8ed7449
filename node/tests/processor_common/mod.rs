//! Helpers for the processor's integration tests against the real Kafka
//! and PostgreSQL (`deploy/services.sh start`). Each test gets its own
//! database, topics, consumer group and registry file.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use quantrac_processor::ProcessorConfig;
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::{Sample, SampleValue};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::NoTls;

pub fn kafka_brokers() -> String {
    std::env::var("QUANTRAC_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn database_url() -> String {
    std::env::var("QUANTRAC_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac".into())
}

pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{}", &id[id.len() - 10..])
}

/// A fresh database for one test; returns its URL.
pub async fn fresh_database() -> String {
    let admin = database_url();
    let name = unique("qt");
    let (client, conn) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("PostgreSQL reachable: deploy/services.sh start");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("database url without a database name: {admin}"),
    }
}

pub async fn db(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

pub struct Topics {
    pub raw: String,
    pub valid: String,
    pub rejected: String,
}

pub async fn create_topics(name: &str) -> Topics {
    let t = Topics {
        raw: format!("{name}.raw"),
        valid: format!("{name}.valid"),
        rejected: format!("{name}.rejected"),
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("admin");
    let new = [
        NewTopic::new(&t.raw, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&t.valid, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&t.rejected, 3, TopicReplication::Fixed(1)),
    ];
    for r in admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("Kafka reachable: deploy/services.sh start")
    {
        r.expect("topic created");
    }
    t
}

/// A registry file with `stations` wastewater stations named `<prefix>-<i>`.
pub fn registry_file(prefix: &str, stations: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..stations {
        text.push_str(&format!(
            r#"
[[stations]]
id = "{prefix}-{i}"
name = "Test outfall {i}"
facility = "Test facility"
industrial_zone = "KCN Hòa Hiệp"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [
  {{ code = "pH",  unit = "pH",   range_min = 0, range_max = 14 }},
  {{ code = "TSS", unit = "mg/L", range_min = 0, range_max = 1000 }},
  {{ code = "COD", unit = "mg/L", range_min = 0, range_max = 1000 }},
  {{ code = "NH4", unit = "mg/L", range_min = 0, range_max = 100 }},
]
limits = [
  {{ parameter = "COD", max = 150, regulation = "QCVN 40:2011/BTNMT", column = "B", coefficients = {{ Kq = 0.9, Kf = 1.1 }}, effective_from = 2012-01-01 }},
  {{ parameter = "pH", min = 5.5, max = 9, regulation = "QCVN 40:2011/BTNMT", column = "B", effective_from = 2012-01-01 }},
]
"#
        ));
    }
    let path = std::env::temp_dir().join(format!("{}.toml", unique("registry")));
    std::fs::write(&path, text).expect("write registry");
    path
}

pub fn test_config(db_url: &str, topics: &Topics, registry: PathBuf) -> ProcessorConfig {
    let mut c = ProcessorConfig {
        node_id: unique("proc"),
        database_url: db_url.to_owned(),
        registry,
        ..Default::default()
    };
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = kafka_brokers();
    c.kafka.group_id = unique("group");
    c.kafka.raw_topic = topics.raw.clone();
    c.kafka.valid_topic = topics.valid.clone();
    c.kafka.rejected_topic = topics.rejected.clone();
    c.batch.max_wait = Duration::from_millis(50);
    c
}

/// `n` samples of 4 readings each per station, 5 minutes apart, ending now.
pub fn samples(prefix: &str, stations: usize, per_station: usize) -> Vec<Sample> {
    let end = Utc::now() - chrono::Duration::minutes(10);
    let mut out = Vec::new();
    for k in 0..per_station {
        let at: DateTime<Utc> = end - chrono::Duration::minutes(5 * (per_station - k) as i64);
        let at = DateTime::from_timestamp(at.timestamp(), 0).expect("whole second");
        for s in 0..stations {
            let v = |p: &str, value: f64, unit: &str| SampleValue {
                parameter: p.into(),
                value,
                unit: unit.into(),
                status: DeviceStatus::Measuring,
                device_flag: "00".into(),
            };
            out.push(Sample {
                station_id: format!("{prefix}-{s}"),
                measured_at: at,
                values: vec![
                    v("pH", 7.0 + (k % 10) as f64 / 10.0, "pH"),
                    v("TSS", 20.0 + k as f64 % 7.0, "mg/L"),
                    v("COD", 40.0 + k as f64 % 13.0, "mg/L"),
                    v("NH4", 1.5, "mg/L"),
                ],
            });
        }
    }
    out
}

/// Produces the samples to `topic` as ingest would.
pub async fn produce(topic: &str, samples: &[Sample]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let batches: Vec<_> = samples
        .iter()
        .map(|s| {
            s.clone()
                .into_batch(SourceProtocol::TcpHj212, Utc::now(), "test")
        })
        .map(|b| (b.station_id.clone(), b.encode_to_vec()))
        .collect();
    for chunk in batches.chunks(1000) {
        let sends = chunk.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.expect("produced");
        }
    }
}

pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .expect("count query")
        .get(0)
}

/// Polls until `sql` counts `want`, or gives up after `within`. Errors
/// (the table not created yet) count as 0.
pub async fn wait_for_count(
    client: &tokio_postgres::Client,
    sql: &str,
    want: i64,
    within: Duration,
) -> i64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = client
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if n >= want || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed when dropped, so a failing test leaves nothing
/// running.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
