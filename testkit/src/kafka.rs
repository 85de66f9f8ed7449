//! A test's own Kafka topics; producing and reading them back.

use std::time::Duration;

use chrono::Utc;
use prost::Message;
use quantrac_proto::Sample;
use quantrac_proto::v1::SourceProtocol;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::{env, unique};

/// The three topics of one test: `<name>.raw`, `.valid`, `.rejected`.
#[derive(Debug, Clone)]
pub struct Topics {
    pub raw: String,
    pub valid: String,
    pub rejected: String,
}

impl Topics {
    pub fn named(name: &str) -> Self {
        Topics {
            raw: format!("{name}.raw"),
            valid: format!("{name}.valid"),
            rejected: format!("{name}.rejected"),
        }
    }
}

/// Creates the three topics of `name`, 3 partitions each.
pub async fn create_topics(name: &str) -> Topics {
    let t = Topics::named(name);
    create(&[&t.raw, &t.valid, &t.rejected], 3).await;
    t
}

/// Creates `names` with `partitions` partitions each.
pub async fn create(names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", env::kafka_brokers())
        .create()
        .expect("Kafka admin client");
    let new: Vec<_> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
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
}

/// Produces the samples to `topic` as ingest would: one `ReadingBatch` per
/// sample, keyed by station.
pub async fn produce(topic: &str, samples: &[Sample]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", env::kafka_brokers())
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

/// A consumer of `topic` from its start, in a group of its own.
pub fn reader(topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", env::kafka_brokers())
        .set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// Reads `topic` from its start until `n` records that `keep` selects are
/// read, or `within` passes; returns them decoded by `decode`.
pub async fn read_where<T>(
    topic: &str,
    n: usize,
    within: Duration,
    decode: impl Fn(&[u8], &[u8]) -> T,
    keep: impl Fn(&T) -> bool,
) -> Vec<T> {
    let c = reader(topic);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => panic!("Kafka consumer error: {e}"),
            Ok(Ok(m)) => {
                let v = decode(m.key().unwrap_or_default(), m.payload().unwrap_or_default());
                if keep(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// The group's committed offsets on `topic`'s partitions, summed (records
/// consumed and acknowledged); unset offsets count as 0.
pub fn committed(group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env::kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}
