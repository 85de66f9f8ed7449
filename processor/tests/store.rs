//! The processor against the real Kafka and PostgreSQL: exactly-once rows,
//! replay, crash mid-batch, rejected readings.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use prost::Message;
use quantrac_processor::Processor;
use quantrac_proto::v1::{SourceProtocol, StoredReadingBatch};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn n_readings_in_give_n_rows_and_a_replay_adds_none() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-exact")).await,
    );
    let prefix = unique("EX");
    let registry = registry_file(&prefix, 3);
    let samples = samples(&prefix, 3, 50); // 150 samples x 4 = 600 readings
    produce(&topics.raw, &samples).await;
    // Redelivery: the same records twice on the topic.
    produce(&topics.raw, &samples[..20]).await;

    let shutdown = CancellationToken::new();
    let p = Processor::start(
        test_config(&db_url, &topics, registry.clone()),
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let client = db(&db_url).await;
    let n = wait_for_count(&client, "SELECT count(*) FROM readings", 600, WAIT).await;
    assert_eq!(n, 600);
    let status = p.status.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while status.snapshot().consumed < 680 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = status.snapshot();
    assert_eq!(
        (s.consumed, s.stored, s.duplicates, s.rejected),
        (680, 600, 80, 0)
    );
    shutdown.cancel();
    p.wait().await.expect("stop");

    // Replay the whole topic with a new consumer group: still 600 rows.
    let mut config = test_config(&db_url, &topics, registry);
    config.kafka.group_id = unique("replay");
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        config,
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("restart");
    let status = p.status.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while status.snapshot().consumed < 680 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status.snapshot().duplicates,
        680,
        "every replayed reading is a duplicate"
    );
    assert_eq!(count(&client, "SELECT count(*) FROM readings").await, 600);
    // Values stored as sent, with their QC flag.
    let row = client
        .query_one(
            "SELECT value, unit, qc_flag, source FROM readings WHERE station_id = $1 AND parameter = 'COD' \
             ORDER BY measured_at LIMIT 1",
            &[&format!("{prefix}-0")],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, f64>(0), 40.0);
    assert_eq!(row.get::<_, String>(1), "mg/L");
    assert_eq!(row.get::<_, String>(2), "valid");
    assert_eq!(row.get::<_, i16>(3), SourceProtocol::TcpHj212 as i16);
    shutdown.cancel();
    p.wait().await.expect("stop");
}

#[tokio::test]
async fn bad_readings_land_in_rejected_readings_with_their_reason() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-bad")).await,
    );
    let prefix = unique("BD");
    let registry = registry_file(&prefix, 1);
    let mut good = samples(&prefix, 1, 1);
    let mut unknown_station = good[0].clone();
    unknown_station.station_id = "NOT-REGISTERED".into();
    let mut bad = good[0].clone();
    bad.measured_at -= chrono::Duration::minutes(1);
    bad.values[0].value = 15.0; // pH outside 0..14 while measuring
    bad.values[1].parameter = "Colour".into(); // not measured by this station
    bad.values[2].unit = "furlongs".into(); // COD in an unknown unit
    bad.values[3].status = quantrac_proto::domain::DeviceStatus::Error; // stored, flagged
    bad.values[3].value = -9999.0;
    let mut future = good[0].clone();
    future.measured_at = Utc::now() + chrono::Duration::hours(2);
    future.values.truncate(1);
    good.extend([unknown_station, bad, future]);
    produce(&topics.raw, &good).await;

    let shutdown = CancellationToken::new();
    let p = Processor::start(
        test_config(&db_url, &topics, registry),
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let client = db(&db_url).await;
    let rejected = wait_for_count(&client, "SELECT count(*) FROM rejected_readings", 8, WAIT).await;
    assert_eq!(rejected, 8);
    let reasons: Vec<(String, i64)> = client
        .query(
            "SELECT reason, count(*) FROM rejected_readings GROUP BY reason ORDER BY reason",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, i64)> = [
        ("future_timestamp", 1),
        ("out_of_range", 1),
        ("unit_not_convertible", 1),
        ("unknown_parameter", 1),
        ("unknown_station", 4),
    ]
    .iter()
    .map(|(r, n)| ((*r).to_owned(), *n))
    .collect();
    assert_eq!(reasons, want);
    // The raw reading is kept: it decodes back to what was sent.
    let raw: Vec<u8> = client
        .query_one(
            "SELECT raw FROM rejected_readings WHERE reason = 'out_of_range'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    let reading = quantrac_proto::v1::Reading::decode(&raw[..]).expect("a Reading");
    assert_eq!((reading.parameter.as_str(), reading.value), ("pH", 15.0));
    // 4 good + the device-error reading (stored, flagged).
    assert_eq!(
        wait_for_count(&client, "SELECT count(*) FROM readings", 5, WAIT).await,
        5
    );
    let flag: String = client
        .query_one("SELECT qc_flag FROM readings WHERE value = -9999", &[])
        .await
        .expect("flagged row")
        .get(0);
    assert_eq!(flag, "device_error");
    shutdown.cancel();
    p.wait().await.expect("stop");
}

#[tokio::test]
async fn stored_readings_are_published_on_readings_valid() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-valid")).await,
    );
    let prefix = unique("VA");
    let samples = samples(&prefix, 2, 5);
    produce(&topics.raw, &samples).await;
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        test_config(&db_url, &topics, registry_file(&prefix, 2)),
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topics.valid]).expect("subscribe");
    let mut readings = 0;
    while readings < 40 {
        let m = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("in time")
            .expect("message");
        let b = StoredReadingBatch::decode(m.payload().unwrap_or_default())
            .expect("StoredReadingBatch");
        assert_eq!(m.key(), Some(b.station_id.as_bytes()));
        assert!(
            b.readings
                .iter()
                .all(|r| r.qc_flag == "valid" && r.station_id == b.station_id)
        );
        readings += b.readings.len();
    }
    assert_eq!(readings, 40);
    shutdown.cancel();
    p.wait().await.expect("stop");
}

#[tokio::test]
async fn killed_mid_batch_and_restarted_leaves_exactly_n_rows() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-kill")).await,
    );
    let prefix = unique("KL");
    let registry = registry_file(&prefix, 10);
    let samples = samples(&prefix, 10, 500); // 5,000 samples, 20,000 readings
    produce(&topics.raw, &samples).await;
    let group = unique("kill-group");

    let spawn = || {
        Child(
            std::process::Command::new(env!("CARGO_BIN_EXE_quantrac-processor"))
                .env("QUANTRAC_PROCESSOR__DATABASE_URL", &db_url)
                .env("QUANTRAC_PROCESSOR__REGISTRY", &registry)
                .env("QUANTRAC_PROCESSOR__HTTP__LISTEN", "127.0.0.1:0")
                .env("QUANTRAC_PROCESSOR__KAFKA__BROKERS", kafka_brokers())
                .env("QUANTRAC_PROCESSOR__KAFKA__GROUP_ID", &group)
                .env("QUANTRAC_PROCESSOR__KAFKA__RAW_TOPIC", &topics.raw)
                .env("QUANTRAC_PROCESSOR__KAFKA__VALID_TOPIC", &topics.valid)
                .env(
                    "QUANTRAC_PROCESSOR__KAFKA__REJECTED_TOPIC",
                    &topics.rejected,
                )
                // The killed member's partitions move on after this.
                .env("QUANTRAC_PROCESSOR__KAFKA__SESSION_TIMEOUT", "6s")
                // Small batches: a kill lands between or inside many of them.
                .env("QUANTRAC_PROCESSOR__BATCH__MAX_READINGS", "400")
                .env("RUST_LOG", "warn")
                .spawn()
                .expect("spawn processor"),
        )
    };
    let client = db(&db_url).await;
    let child = spawn();
    // Kill it (SIGKILL, no goodbye) as soon as its first batches are in;
    // polled tightly so that a fast machine still kills it part-way.
    let deadline = tokio::time::Instant::now() + WAIT;
    let partial = loop {
        let n = client
            .query_one("SELECT count(*) FROM readings", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if n > 0 || tokio::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    drop(child);
    let after_kill = count(&client, "SELECT count(*) FROM readings").await;
    eprintln!("killed with {after_kill} of 20000 rows stored");
    assert!(
        partial > 0 && after_kill < 20_000,
        "killed part-way ({after_kill} rows)"
    );

    let child = spawn();
    let n = wait_for_count(
        &client,
        "SELECT count(*) FROM readings",
        20_000,
        Duration::from_secs(120),
    )
    .await;
    drop(child);
    assert_eq!(n, 20_000);
    // No gap: every station has every timestamp of every parameter.
    let per_series: Vec<i64> = client
        .query(
            "SELECT count(*) FROM readings GROUP BY station_id, parameter",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(per_series.len(), 40);
    assert!(per_series.iter().all(|&c| c == 500), "{per_series:?}");
}

#[tokio::test]
async fn registry_is_written_to_the_database() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-reg")).await,
    );
    let prefix = unique("RG");
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        test_config(&db_url, &topics, registry_file(&prefix, 2)),
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let client = db(&db_url).await;
    assert_eq!(count(&client, "SELECT count(*) FROM stations").await, 2);
    assert_eq!(
        count(&client, "SELECT count(*) FROM station_parameters").await,
        8
    );
    let cmax: f64 = client
        .query_one(
            "SELECT effective_max FROM permit_limits WHERE station_id = $1 AND parameter = 'COD'",
            &[&format!("{prefix}-0")],
        )
        .await
        .expect("limit")
        .get(0);
    assert!(
        (cmax - 148.5).abs() < 1e-9,
        "COD column B x Kq 0.9 x Kf 1.1 = {cmax}"
    );
    assert!(!p.timescale, "plain PostgreSQL here");
    shutdown.cancel();
    p.wait().await.expect("stop");
}

/// A reading the database refuses for good (here a receive time before
/// PostgreSQL's earliest timestamp) used to fail its batch at every start,
/// so the processor crash-looped and its partition stopped. Now the refused
/// reading is kept as `storage_refused`, the rest of its batch and the
/// batches behind it are stored, and the processor keeps running.
#[tokio::test]
async fn a_reading_the_database_refuses_is_rejected_and_the_rest_stored() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-poison")).await,
    );
    let prefix = unique("PO");
    let samples = samples(&prefix, 1, 3); // 3 samples x 4 readings
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("producer");
    for (i, s) in samples.iter().enumerate() {
        let mut batch = s
            .clone()
            .into_batch(SourceProtocol::TcpJson, Utc::now(), "test");
        if i == 1 {
            // 5000 BC: chrono holds it, PostgreSQL's range starts at 4713 BC.
            batch.readings[2].received_at = Some(prost_types::Timestamp {
                seconds: -220_000_000_000,
                nanos: 0,
            });
        }
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topics.raw)
                    .key(&batch.station_id)
                    .payload(&batch.encode_to_vec()),
                Duration::from_secs(30),
            )
            .await
            .expect("produced");
    }
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        test_config(&db_url, &topics, registry_file(&prefix, 1)),
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let client = db(&db_url).await;
    assert_eq!(
        wait_for_count(&client, "SELECT count(*) FROM readings", 11, WAIT).await,
        11
    );
    let refused = wait_for_count(
        &client,
        "SELECT count(*) FROM rejected_readings WHERE reason = 'storage_refused'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(refused, 1);
    let raw: Vec<u8> = client
        .query_one(
            "SELECT raw FROM rejected_readings WHERE reason = 'storage_refused'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    let reading = quantrac_proto::v1::Reading::decode(&raw[..]).expect("a Reading");
    assert_eq!(reading.parameter, "COD");
    // Still running: a later sample is stored too.
    let later = samples_after(&prefix, &samples);
    produce(&topics.raw, &later).await;
    assert_eq!(
        wait_for_count(&client, "SELECT count(*) FROM readings", 15, WAIT).await,
        15
    );
    shutdown.cancel();
    p.wait().await.expect("a clean stop, not a crash");
}

/// One more sample of the same station, 5 minutes after the last one.
fn samples_after(prefix: &str, before: &[quantrac_proto::Sample]) -> Vec<quantrac_proto::Sample> {
    let mut s = before.last().expect("a sample").clone();
    s.measured_at += chrono::Duration::minutes(5);
    assert!(s.station_id.starts_with(prefix));
    vec![s]
}

/// On plain PostgreSQL nothing else deletes old rows: the processor deletes
/// readings, rejected readings and station events past
/// `storage.retention`, and keeps the rest.
#[tokio::test]
async fn rows_past_retention_are_deleted_on_plain_postgresql() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-ret")).await,
    );
    let prefix = unique("RT");
    let mut config = test_config(&db_url, &topics, registry_file(&prefix, 1));
    config.storage.timescale = quantrac_processor::config::TimescaleMode::Off;
    config.storage.retention = Duration::from_secs(2 * 86_400);
    config.storage.cleanup_every = Duration::from_millis(200);
    // The schema first, without the cleanup running: a processor that
    // stops at once.
    let stop = CancellationToken::new();
    stop.cancel();
    let mut first = config.clone();
    first.storage.cleanup_every = Duration::from_secs(3_600);
    Processor::start(first, quantrac_processor::Edge::Kafka, None, stop)
        .await
        .expect("schema")
        .wait()
        .await
        .expect("stopped");
    let client = db(&db_url).await;
    let station = format!("{prefix}-0");
    client
        .execute(
            "INSERT INTO readings (station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source, ingest_id) \
             SELECT $1, 'COD', now() - make_interval(days => d), 40, 'mg/L', 1, '00', 'valid', 5, gen_random_uuid() \
             FROM unnest(ARRAY[1, 3, 10]) AS d",
            &[&station],
        )
        .await
        .expect("readings");
    client
        .execute(
            "INSERT INTO rejected_readings (key, rejected_at, reason, detail, raw) \
             SELECT 'k' || d, now() - make_interval(days => d), 'unknown_station', 'test', '\\x00' \
             FROM unnest(ARRAY[1, 3]) AS d",
            &[],
        )
        .await
        .expect("rejections");
    client
        .execute(
            "INSERT INTO station_events (station_id, kind, code, at, station_time, detail, source) \
             SELECT $1, 'restart', '2081', now() - make_interval(days => d), true, '', 3 \
             FROM unnest(ARRAY[1, 3]) AS d",
            &[&station],
        )
        .await
        .expect("station events");
    assert_eq!(count(&client, "SELECT count(*) FROM readings").await, 3);

    let shutdown = CancellationToken::new();
    let p = Processor::start(
        config,
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    // Polls until only the rows within 2 days are left.
    let deadline = tokio::time::Instant::now() + WAIT;
    let left = loop {
        let left = (
            count(&client, "SELECT count(*) FROM readings").await,
            count(&client, "SELECT count(*) FROM rejected_readings").await,
            count(&client, "SELECT count(*) FROM station_events").await,
        );
        if left == (1, 1, 1) || tokio::time::Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        left,
        (1, 1, 1),
        "(readings, rejected, station events) within retention"
    );
    let newest: bool = client
        .query_one(
            "SELECT measured_at > now() - interval '2 days' FROM readings",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert!(newest, "the recent reading is the one kept");
    shutdown.cancel();
    p.wait().await.expect("stop");
}

/// A quiet pipeline writes a reading as soon as nothing more is queued: with
/// `max_wait` an hour, a lone sample is stored anyway (it used to wait for
/// company until `max_wait`); with `write_when_idle` off it waits.
#[tokio::test]
async fn a_lone_reading_is_written_without_waiting_for_max_wait() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-idle")).await,
    );
    let prefix = unique("ID");
    let registry = registry_file(&prefix, 1);
    let mut config = test_config(&db_url, &topics, registry);
    config.batch.max_wait = Duration::from_secs(3600);
    config.batch.max_readings = 1_000_000;
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        config.clone(),
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    produce(&topics.raw, &samples(&prefix, 1, 1)).await;
    let client = db(&db_url).await;
    let n = wait_for_count(&client, "SELECT count(*) FROM readings", 4, WAIT).await;
    assert_eq!(n, 4, "the lone sample waited for max_wait");
    shutdown.cancel();
    p.wait().await.expect("stop");

    // The old behaviour, for contrast: nothing within a few seconds.
    config.batch.write_when_idle = false;
    config.kafka.group_id = unique("held");
    let topics = create_topics(&unique("p-held")).await;
    config.kafka.raw_topic = topics.raw.clone();
    config.kafka.valid_topic = topics.valid.clone();
    config.kafka.rejected_topic = topics.rejected.clone();
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        config,
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let later = samples(&prefix, 1, 2);
    produce(&topics.raw, &later[1..]).await;
    let n = wait_for_count(
        &client,
        "SELECT count(*) FROM readings",
        8,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(n, 4, "held back until max_wait");
    shutdown.cancel();
    p.wait().await.expect("stop");
}

/// `latest_readings` holds each series' newest reading, flushed every
/// `storage.latest_every`; at start the processor seeds it from
/// `readings`, so what a crash lost before a flush comes back.
#[tokio::test]
async fn latest_readings_hold_the_newest_and_are_seeded_at_start() {
    let (db_url, topics) = (
        fresh_database().await,
        create_topics(&unique("p-latest")).await,
    );
    let prefix = unique("LT");
    let registry = registry_file(&prefix, 2);
    let samples = samples(&prefix, 2, 3);
    let newest = samples
        .iter()
        .map(|s| s.measured_at)
        .max()
        .expect("samples");
    let (last, earlier): (Vec<_>, Vec<_>) =
        samples.into_iter().partition(|s| s.measured_at == newest);
    produce(&topics.raw, &earlier).await;
    let mut config = test_config(&db_url, &topics, registry);
    config.storage.latest_every = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        config.clone(),
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let client = db(&db_url).await;
    wait_for_count(&client, "SELECT count(*) FROM readings", 16, WAIT).await;
    // Long after the start's seeding: only the flush can bring these.
    produce(&topics.raw, &last).await;
    wait_for_count(&client, "SELECT count(*) FROM readings", 24, WAIT).await;
    let newest_rows = format!(
        "SELECT count(*) FROM latest_readings WHERE measured_at = '{}'",
        newest.to_rfc3339()
    );
    assert_eq!(wait_for_count(&client, &newest_rows, 8, WAIT).await, 8);
    assert_eq!(
        count(&client, "SELECT count(*) FROM latest_readings").await,
        8,
        "one row per series: 2 stations x 4 parameters"
    );
    shutdown.cancel();
    p.wait().await.expect("stop");

    // A newer reading stored while latest_readings missed it (a crash
    // between commit and flush): the next start seeds it.
    let later = newest + chrono::Duration::minutes(5);
    client
        .execute(
            "INSERT INTO readings (station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source) \
             VALUES ($1, 'COD', $2, 77, 'mg/L', 1, '00', 'valid', 5)",
            &[&format!("{prefix}-0"), &later],
        )
        .await
        .expect("newer reading");
    let shutdown = CancellationToken::new();
    let p = Processor::start(
        config,
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("restart");
    let seeded = format!(
        "SELECT count(*) FROM latest_readings WHERE parameter = 'COD' AND value = 77 AND measured_at = '{}'",
        later.to_rfc3339()
    );
    assert_eq!(wait_for_count(&client, &seeded, 1, WAIT).await, 1);
    shutdown.cancel();
    p.wait().await.expect("stop");
}
