//! `async_commit` against a database crash: a private PostgreSQL cluster
//! whose WAL writer is stopped, so that the alert alerting has recorded is
//! still only in the server's memory when every server process is killed
//! (as unflushed WAL in the kernel's cache is lost in a power cut). The
//! alert may not be lost: the reading's offset was not stored, and
//! alerting rebuilds its engine from the database and judges it again.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use quantrac_alerting::Alerting;
use quantrac_testkit::db::{connect, count, wait_for_count};
use quantrac_testkit::env::kafka_brokers;
use quantrac_testkit::kafka::{committed, create, create_topics};
use quantrac_testkit::pg_cluster::{Cluster, WAL_STAYS_IN_MEMORY};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const EXCEEDANCES: &str = "SELECT count(*) FROM alerts WHERE rule = 'limit_exceeded'";

#[tokio::test]
async fn a_database_crash_before_the_wal_flush_loses_no_alert() {
    let pg = Cluster::start(WAL_STAYS_IN_MEMORY);
    let url = pg.url();
    let topics = create_topics(&unique("a-async")).await;
    let alerts_topic = unique("a-async-alerts");
    create(&[&alerts_topic], 1).await;
    let station = unique("AS");
    let mut config = alerting_config(&url, &registry(&station));
    assert!(config.async_commit, "the default");
    config.kafka.brokers = kafka_brokers();
    config.kafka.group_id = unique("alerting");
    config.kafka.valid_topic = topics.valid.clone();
    config.kafka.alerts_topic = alerts_topic;
    let group = config.kafka.group_id.clone();
    let shutdown = CancellationToken::new();
    let alerting = Alerting::start(
        config,
        quantrac_alerting::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("alerting");
    // After the start's own synchronous writes (migrations).
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.pause_wal_writer();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&topics.valid)
                .key(&station)
                .payload(&stored_cod(&station, 300.0, 10).encode_to_vec()),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
    let client = connect(&url).await;
    assert_eq!(
        wait_for_count(&client, EXCEEDANCES, 1, Duration::from_secs(30)).await,
        1,
        "{}",
        pg.log()
    );
    drop(client);
    // Recorded, not yet flushed: the offset must wait (the consumer
    // commits stored offsets every second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        committed(&group, &topics.valid),
        0,
        "offset stored before the WAL flush passed the alert"
    );

    pg.crash();
    pg.restart();
    let client = connect(&url).await;
    assert_eq!(
        count(&client, EXCEEDANCES).await,
        0,
        "the crash lost nothing, so this test proves nothing: the WAL was flushed before the crash"
    );
    // Rebuilt from the database and judged again.
    assert_eq!(
        wait_for_count(&client, EXCEEDANCES, 1, Duration::from_secs(60)).await,
        1,
        "the alert lost in the crash was not recorded again"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while committed(&group, &topics.valid) < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        committed(&group, &topics.valid),
        1,
        "the reading acknowledged"
    );
    shutdown.cancel();
    alerting.wait().await.expect("stop");
    assert_eq!(count(&client, EXCEEDANCES).await, 1, "recorded once");
}
