//! The MQTT receiver against the real Mosquitto and Kafka.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use quantrac_ingest::Ingest;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::{circular10, json};
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// A station's MQTT connection that publishes QoS 1 and waits for PUBACKs.
async fn publish_all(messages: &[(String, Vec<u8>)]) {
    let b = quantrac_ingest::mqtt::broker_address(&mqtt_url()).expect("url");
    let (host, port) = (b.host, b.port);
    let (user, pw) = mqtt_station_credentials();
    let mut o = MqttOptions::new(unique("station"), host, port);
    o.set_credentials(user, pw);
    // Large enough for the over-the-limit message test.
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut el) = AsyncClient::new(o, 64);
    // Queue from a task: the event loop below must turn meanwhile.
    let publisher = {
        let (client, messages) = (client.clone(), messages.to_vec());
        tokio::spawn(async move {
            for (topic, payload) in messages {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("queue publish");
            }
        })
    };
    let mut acked = 0;
    while acked < messages.len() {
        match tokio::time::timeout(WAIT, el.poll())
            .await
            .expect("broker PUBACK in time")
        {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("station connection failed: {e}"),
        }
    }
    publisher.await.expect("publisher");
    let _ = client.disconnect().await;
}

/// Ends ingest's persistent session so the broker stops queueing for it.
async fn forget_session(node: &str) {
    let b = quantrac_ingest::mqtt::broker_address(&mqtt_url()).expect("url");
    let (host, port) = (b.host, b.port);
    let mut o = MqttOptions::new(format!("quantrac-{node}"), host, port);
    o.set_clean_session(true);
    o.set_credentials(
        std::env::var("QUANTRAC_MQTT_USER").unwrap_or_else(|_| "ingest".into()),
        std::env::var("QUANTRAC_MQTT_PASSWORD").unwrap_or_else(|_| "ingest-secret".into()),
    );
    let (client, mut el) = AsyncClient::new(o, 8);
    if let Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) = tokio::time::timeout(WAIT, el.poll()).await
    {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    }
}

/// Waits until `f` holds, or fails the test.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn json_and_circular10_over_mqtt_arrive_in_kafka_exactly_as_sent() {
    let topics = create_topics(&unique("t-mqtt")).await;
    let node = unique("n");
    let mut config = test_config(&topics, &node);
    config.mqtt.enabled = true;
    config.tcp.enabled = false;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, shutdown.clone())
        .await
        .expect("start");
    let status = ingest.status.clone();
    eventually("MQTT connected", || status.snapshot().mqtt_connected).await;
    // Let the SUBACK land before publishing.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = Utc
        .with_ymd_and_hms(2025, 6, 1, 0, 5, 0)
        .single()
        .expect("time");
    let (s_json, s_c10) = (unique("MJ"), unique("MC"));
    let js = sample(&s_json, t0, 40.5);
    let c10 = sample(&s_c10, t0, 41.5);
    let mut c10_payload = circular10::file_name(
        "PhuYen",
        "AnPhu",
        &s_c10,
        t0.with_timezone(&utc7()).naive_local(),
    )
    .into_bytes();
    c10_payload.extend_from_slice(b"\r\n");
    c10_payload.extend_from_slice(&circular10::encode_record(&c10, utc7()));
    publish_all(&[
        (format!("stations/{s_json}/readings"), json::encode(&js)),
        (format!("stations/{s_c10}/readings"), c10_payload),
        // Topic names another station than the payload: rejected.
        (format!("stations/{s_c10}/readings"), json::encode(&js)),
    ])
    .await;

    // Other tests share the broker; keep only this test's stations.
    let mine = |id: &str| id == s_json || id == s_c10;
    let batches = read_batches_where(&topics.raw, 2, WAIT, |b| mine(&b.station_id)).await;
    assert_eq!(batches.len(), 2);
    for b in &batches {
        let (want, source) = if b.station_id == s_json {
            (&js, SourceProtocol::MqttJson)
        } else {
            (&c10, SourceProtocol::MqttCircular10)
        };
        assert_eq!(&batch_to_sample(b), want);
        assert!(b.readings.iter().all(|r| r.source() == source));
    }
    let rejected = read_rejected_where(&topics.rejected, 1, WAIT, |r| mine(&r.station_id)).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, "json.station_mismatch");
    assert_eq!(rejected[0].origin, format!("stations/{s_c10}/readings"));
    shutdown.cancel();
    ingest.wait().await.expect("stop");
    forget_session(&node).await;
}

#[tokio::test]
async fn message_received_but_not_acknowledged_is_redelivered_after_restart() {
    let topics = create_topics(&unique("t-redeliver")).await;
    let node = unique("n");
    let station = unique("RD");

    // First run: Kafka unreachable, so the message is received but never
    // acknowledged; then ingest stops.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut config = test_config(&topics, &node);
    config.mqtt.enabled = true;
    config.tcp.enabled = false;
    config.kafka.brokers = silent.local_addr().expect("addr").to_string();
    config.kafka.message_timeout = Duration::from_secs(2);
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(
        config.clone(),
        quantrac_ingest::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let status = ingest.status.clone();
    eventually("MQTT connected", || status.snapshot().mqtt_connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = sample(
        &station,
        Utc.with_ymd_and_hms(2025, 6, 1, 1, 0, 0)
            .single()
            .expect("t"),
        77.0,
    );
    publish_all(&[(format!("stations/{station}/readings"), json::encode(&s))]).await;
    eventually("message received", || status.snapshot().received >= 1).await;
    let before = status.snapshot();
    assert_eq!(
        before.acknowledged, 0,
        "nothing acknowledged while Kafka is down"
    );
    shutdown.cancel();
    ingest.wait().await.expect("stop");
    drop(silent);

    // Second run, same node id (same persistent session), real Kafka.
    config.kafka.brokers = kafka_brokers();
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, shutdown.clone())
        .await
        .expect("restart");
    let batches = read_batches_where(&topics.raw, 1, WAIT, |b| b.station_id == station).await;
    assert_eq!(batches.len(), 1, "redelivered after restart");
    assert_eq!(batch_to_sample(&batches[0]), s);
    let status = ingest.status.clone();
    eventually("acknowledged", || status.snapshot().acknowledged >= 1).await;
    shutdown.cancel();
    ingest.wait().await.expect("stop");
    forget_session(&node).await;
}

#[tokio::test]
async fn station_with_wrong_mqtt_password_is_refused() {
    let b = quantrac_ingest::mqtt::broker_address(&mqtt_url()).expect("url");
    let (host, port) = (b.host, b.port);
    let mut o = MqttOptions::new(unique("intruder"), host, port);
    o.set_credentials("station-demo", "wrong-password");
    let (_client, mut el) = AsyncClient::new(o, 8);
    let r = tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("answer in time");
    assert!(
        matches!(
            r,
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            ))
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_burst_larger_than_every_bound_flows_through() {
    // Small bounds and a burst far above them: the receiver must keep the
    // MQTT event loop turning (PUBACKs, pings) while it waits for Kafka, or
    // it stalls for good.
    let topics = create_topics(&unique("t-burst")).await;
    let node = unique("n");
    let mut config = test_config(&topics, &node);
    config.mqtt.enabled = true;
    config.tcp.enabled = false;
    config.mqtt.max_pending = 50;
    config.max_in_flight = 100;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, shutdown.clone())
        .await
        .expect("start");
    let status = ingest.status.clone();
    eventually("MQTT connected", || status.snapshot().mqtt_connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let station = unique("BU");
    let t0 = Utc
        .with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
        .single()
        .expect("time");
    let messages: Vec<(String, Vec<u8>)> = (0..2_000)
        .map(|i| {
            let s = sample(&station, t0 + chrono::Duration::minutes(5 * i), 40.0);
            (format!("stations/{station}/readings"), json::encode(&s))
        })
        .collect();
    publish_all(&messages).await;
    let batches = read_batches_where(&topics.raw, 2_000, Duration::from_secs(90), |b| {
        b.station_id == station
    })
    .await;
    assert_eq!(
        batches.len(),
        2_000,
        "every message of the burst reached Kafka"
    );
    shutdown.cancel();
    ingest.wait().await.expect("stop");
    forget_session(&node).await;
}

/// A message over `mqtt.max_payload_bytes` (but under what the broker
/// takes) is refused, kept cut at the limit, and acknowledged, and the
/// station's next message arrives. It used to break ingest's connection and
/// come back with the persistent session at every reconnect, for ever.
#[tokio::test]
async fn a_message_over_the_payload_limit_is_refused_and_the_next_arrives() {
    let topics = create_topics(&unique("t-big")).await;
    let node = unique("n");
    let mut config = test_config(&topics, &node);
    config.mqtt.enabled = true;
    config.tcp.enabled = false;
    let limit = config.mqtt.max_payload_bytes;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, shutdown.clone())
        .await
        .expect("start");
    let status = ingest.status.clone();
    eventually("MQTT connected", || status.snapshot().mqtt_connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let station = unique("BIG");
    let s = sample(
        &station,
        Utc.with_ymd_and_hms(2025, 6, 1, 2, 0, 0)
            .single()
            .expect("t"),
        42.0,
    );
    let topic = format!("stations/{station}/readings");
    let big = vec![b' '; limit + 100 * 1024];
    publish_all(&[(topic.clone(), big), (topic, json::encode(&s))]).await;

    let batches = read_batches_where(&topics.raw, 1, WAIT, |b| b.station_id == station).await;
    assert_eq!(batches.len(), 1, "the next message arrived");
    assert_eq!(batch_to_sample(&batches[0]), s);
    let rejected =
        read_rejected_where(&topics.rejected, 1, WAIT, |r| r.station_id == station).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, "mqtt.too_large");
    assert_eq!(rejected[0].raw.len(), limit);
    shutdown.cancel();
    ingest.wait().await.expect("stop");
    forget_session(&node).await;
}

/// A delivery that fails while later messages fill the in-flight window is
/// retried, and every message is acknowledged. The retry used to wait for
/// window permits that only the later messages' PUBACKs (queued behind the
/// retry) would free: ingest stopped for good after one Kafka failure.
#[tokio::test]
async fn a_failed_delivery_is_retried_while_later_messages_fill_the_window() {
    let topics = create_topics(&unique("t-retry")).await;
    let node = unique("n");
    let station = unique("RT");
    let mut config = test_config(&topics, &node);
    config.mqtt.enabled = true;
    config.tcp.enabled = false;
    config.max_in_flight = 2;
    // The durable side is this test: the first batch fails (as a Kafka
    // outage would), every later one is stored.
    let (bus, mut batches) = quantrac_plumbing::bus::channel(16);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answers = std::sync::Arc::clone(&answered);
    tokio::spawn(async move {
        while let Some(batch) = batches.recv().await {
            let n = answers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let outcome = if n == 0 {
                Err(quantrac_plumbing::bus::BusError::NotStored {
                    reason: "the test's outage".into(),
                    retryable: true,
                })
            } else {
                Ok(())
            };
            let _ = batch.done.send(outcome);
        }
    });
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(
        config,
        quantrac_ingest::Edge::Bus(bus),
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let status = ingest.status.clone();
    eventually("MQTT connected", || status.snapshot().mqtt_connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            let at = Utc
                .with_ymd_and_hms(2025, 6, 1, 1, i * 5, 0)
                .single()
                .expect("t");
            (
                format!("stations/{station}/readings"),
                json::encode(&sample(&station, at, 40.0)),
            )
        })
        .collect();
    publish_all(&messages).await;
    eventually("all six acknowledged after the retry", || {
        status.snapshot().acknowledged >= 6
    })
    .await;
    assert!(
        answered.load(std::sync::atomic::Ordering::SeqCst) >= 7,
        "the failed batch was sent again"
    );
    shutdown.cancel();
    ingest.wait().await.expect("stop");
    forget_session(&node).await;
}
