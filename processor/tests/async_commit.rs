//! `storage.async_commit` against a database crash: a private PostgreSQL
//! cluster whose WAL writer is stopped, so that batches the processor has
//! committed are still only in the server's memory when every server
//! process is killed (as unflushed WAL in the kernel's cache is lost in a
//! power cut). Nothing may be lost: their offsets were not stored, and the
//! processor reads them again.

mod common;

use std::time::Duration;

use common::*;
use quantrac_processor::Processor;
use quantrac_testkit::kafka::committed;
use quantrac_testkit::pg_cluster::{Cluster, WAL_STAYS_IN_MEMORY};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_database_crash_before_the_wal_flush_loses_no_reading() {
    let pg = Cluster::start(WAL_STAYS_IN_MEMORY);
    let url = pg.url();
    let topics = create_topics(&unique("p-async")).await;
    let prefix = unique("AC");
    let samples = samples(&prefix, 4, 50); // 200 samples x 4 = 800 readings
    let mut config = test_config(&url, &topics, registry_file(&prefix, 4));
    assert!(config.storage.async_commit, "the default");
    // The latest-values task commits synchronously, which would flush
    // the processor's WAL too: keep it out of the window.
    config.storage.latest_every = Duration::from_secs(3_600);
    let group = config.kafka.group_id.clone();
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        config,
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    // After the start's own synchronous writes (migrations, registry).
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.pause_wal_writer();
    produce(&topics.raw, &samples).await;
    let client = db(&url).await;
    let stored = wait_for_count(
        &client,
        "SELECT count(*) FROM readings",
        800,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(stored, 800, "{}", pg.log());
    drop(client);
    // Committed, not yet flushed: the offsets must wait (the consumer
    // commits stored offsets every second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        committed(&group, &topics.raw),
        0,
        "offsets stored before the WAL flush passed the batches"
    );

    pg.crash();
    pg.restart();
    let client = db(&url).await;
    let survived = count(&client, "SELECT count(*) FROM readings").await;
    assert!(
        survived < 800,
        "the crash lost nothing ({survived} rows survived), so this test proves nothing: the WAL was flushed before the crash"
    );
    // Read again from the last durable offsets and stored again.
    let n = wait_for_count(
        &client,
        "SELECT count(*) FROM readings",
        800,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(n, 800, "readings lost in the crash were not stored again");
    // And once the WAL is flushed (the restarted server's writer runs),
    // the offsets move.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while committed(&group, &topics.raw) < 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        committed(&group, &topics.raw),
        200,
        "every record acknowledged"
    );
    shutdown.cancel();
    p.wait().await.expect("stop");
    assert_eq!(count(&client, "SELECT count(*) FROM readings").await, 800);
}
