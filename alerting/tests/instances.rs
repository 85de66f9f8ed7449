//! Two alerting instances on one database (the real PostgreSQL): a
//! subscriber on either receives the changes both record, in sequence
//! order, once each.

use std::time::Duration;

use quantrac_alerting::Alerting;
use quantrac_db::access::Role;
use quantrac_proto::v1::{Alert, AlertState, SubscribeAlertsRequest};
use tokio_util::sync::CancellationToken;

mod common;
use common::{fresh_database, registry, start_single_node as start, stored_cod as cod, unique};

const WAIT: Duration = Duration::from_secs(30);

async fn subscribe(alerting: &Alerting, db_url: &str) -> tonic::Streaming<Alert> {
    let mut client =
        common::alert_client(alerting.grpc_addr, db_url, "analyst", Role::Analyst).await;
    client
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect("subscribe")
        .into_inner()
}

/// The openings of limit_exceeded alerts until there are `n`, checking
/// that every change on the stream comes once and in sequence order.
async fn openings(stream: &mut tonic::Streaming<Alert>, n: usize) -> Vec<Alert> {
    let mut last = 0;
    let mut out = Vec::new();
    while out.len() < n {
        let a = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} openings in time", out.len()))
            .expect("stream ok")
            .expect("not ended");
        assert!(a.sequence > last, "{} after {last}", a.sequence);
        last = a.sequence;
        if a.rule == "limit_exceeded" && a.state() == AlertState::Open {
            out.push(a);
        }
    }
    out
}

#[tokio::test]
async fn a_subscriber_on_either_instance_sees_both_instances_changes() {
    let db_url = fresh_database().await;
    let station = unique("MI");
    let registry = registry(&station);
    let stop = CancellationToken::new();
    let (a, a_in) = start(&db_url, &registry, &stop).await;
    let (b, b_in) = start(&db_url, &registry, &stop).await;
    let mut on_a = subscribe(&a, &db_url).await;
    let mut on_b = subscribe(&b, &db_url).await;

    // Instance A judges one exceedance, then instance B another (a later
    // incident of the same series, as after a partition moved).
    a_in.send(cod(&station, 300.0, 60))
        .await
        .expect("a running");
    let first = openings(&mut on_b, 1).await;
    assert_eq!(
        first[0].observed_value, 300.0,
        "B's subscriber sees A's alert"
    );
    b_in.send(cod(&station, 400.0, 30))
        .await
        .expect("b running");

    let seen_on_a = openings(&mut on_a, 2).await;
    let seen_on_b = openings(&mut on_b, 1).await;
    assert_eq!(
        seen_on_a
            .iter()
            .map(|x| x.observed_value)
            .collect::<Vec<_>>(),
        vec![300.0, 400.0]
    );
    assert_eq!(seen_on_b[0].observed_value, 400.0);
    assert_eq!(seen_on_a[1].sequence, seen_on_b[0].sequence);
    stop.cancel();
    a.wait().await.expect("a stopped cleanly");
    b.wait().await.expect("b stopped cleanly");
}

/// An officer's action reaches whichever instance the load balancer picks:
/// on the instance that does not hold the alert it is handed over, through
/// the database, to the one that does, whose engine then knows it (it used
/// to answer NotFound).
#[tokio::test]
async fn an_action_on_the_instance_without_the_alert_takes_effect_on_the_one_with_it() {
    let db_url = fresh_database().await;
    let station = unique("MX");
    let registry = registry(&station);
    let stop = CancellationToken::new();
    let (a, a_in) = start(&db_url, &registry, &stop).await;
    let (b, _b_in) = start(&db_url, &registry, &stop).await;
    let mut on_a = subscribe(&a, &db_url).await;
    a_in.send(cod(&station, 300.0, 60))
        .await
        .expect("a running");
    let opened = openings(&mut on_a, 1).await.remove(0);

    let mut officer_on_b =
        common::alert_client(b.grpc_addr, &db_url, "officer-b", Role::Officer).await;
    let acked = officer_on_b
        .acknowledge(quantrac_proto::v1::AcknowledgeAlertRequest {
            alert_id: opened.id.clone(),
            officer: String::new(),
            note: "calling the plant".into(),
        })
        .await
        .expect("acknowledged through B")
        .into_inner();
    assert_eq!(acked.state(), AlertState::Acknowledged);
    assert_eq!(acked.acknowledged_by, "officer-b");

    // A's engine holds it acknowledged now: acknowledging again there is
    // refused, resolving is not.
    let mut officer_on_a =
        common::alert_client(a.grpc_addr, &db_url, "officer-a", Role::Officer).await;
    let again = officer_on_a
        .acknowledge(quantrac_proto::v1::AcknowledgeAlertRequest {
            alert_id: opened.id.clone(),
            officer: String::new(),
            note: String::new(),
        })
        .await;
    assert!(again.is_err(), "acknowledged twice: {again:?}");
    let resolved = officer_on_b
        .resolve(quantrac_proto::v1::ResolveAlertRequest {
            alert_id: opened.id.clone(),
            officer: String::new(),
            note: "fixed".into(),
        })
        .await
        .expect("resolved through B")
        .into_inner();
    assert_eq!(resolved.state(), AlertState::Resolved);

    // An id no instance ever recorded is not found at once.
    let missing = officer_on_b
        .acknowledge(quantrac_proto::v1::AcknowledgeAlertRequest {
            alert_id: format!("limit_exceeded/{station}/COD/2020-01-01T00:00:00Z"),
            officer: String::new(),
            note: String::new(),
        })
        .await
        .expect_err("unknown alert");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing}");
    stop.cancel();
    a.wait().await.expect("a stopped cleanly");
    b.wait().await.expect("b stopped cleanly");
}

/// A `StoredReadingBatch` of `station`, measured now (as the processor
/// publishes it on `readings.valid`).
fn live_cod(station: &str) -> quantrac_proto::v1::StoredReadingBatch {
    use quantrac_proto::domain::{DeviceStatus, to_timestamp};
    let now = chrono::Utc::now();
    quantrac_proto::v1::StoredReadingBatch {
        station_id: station.into(),
        readings: vec![quantrac_proto::v1::StoredReading {
            station_id: station.into(),
            parameter: "COD".into(),
            value: 10.0,
            unit: "mg/L".into(),
            measured_at: Some(to_timestamp(now)),
            status: DeviceStatus::Measuring as i32,
            device_flag: "00".into(),
            qc_flag: "valid".into(),
            source: 0,
            received_at: Some(to_timestamp(now)),
            ingest_id: uuid::Uuid::now_v7().to_string(),
            converted: None,
        }],
        unjudged_batch: 0,
    }
}

/// Two instances in one consumer group (as the README describes) on a
/// 6-partition `readings.valid`: a station that sends raises no data gap,
/// and each silent station raises exactly one. Every engine used to watch
/// every station, so a sending station whose readings went to the other
/// instance looked silent, and a silent one got two gap alerts.
#[tokio::test]
async fn two_instances_in_one_group_call_each_silence_once() {
    use prost::Message as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let db_url = fresh_database().await;
    let base = unique("gap2");
    let (valid, alerts) = (format!("{base}.valid"), format!("{base}.alerts"));
    quantrac_testkit::kafka::create(&[&valid, &alerts], 6).await;
    let sending: Vec<String> = (0..4).map(|i| format!("{base}-{i}")).collect();
    let silent: Vec<String> = (4..8).map(|i| format!("{base}-{i}")).collect();
    let registry = quantrac_testkit::registry::Outfalls::numbered(&base, 8)
        .measuring(&["COD"])
        .expected_interval("5s")
        .write()
        .expect("registry");
    // Silent for 2 x 5 s (and at least 1 s): a gap.
    let rules = std::env::temp_dir().join(format!("{base}-rules.toml"));
    std::fs::write(
        &rules,
        "[defaults]\ngap.enabled = true\ngap.factor = 2\ngap.min = \"1s\"\n",
    )
    .expect("rules");
    let group = unique("alerting");
    let start = |node: &str| {
        let mut c = common::alerting_config(&db_url, &registry);
        c.node_id = node.to_owned();
        c.rules = rules.clone();
        c.kafka.brokers = quantrac_testkit::env::kafka_brokers();
        c.kafka.group_id = group.clone();
        c.kafka.valid_topic = valid.clone();
        c.kafka.alerts_topic = alerts.clone();
        c
    };
    let stop = CancellationToken::new();
    let a = Alerting::start(
        start("a"),
        quantrac_alerting::Edge::Kafka,
        None,
        stop.clone(),
    )
    .await
    .expect("instance a");
    let b = Alerting::start(
        start("b"),
        quantrac_alerting::Edge::Kafka,
        None,
        stop.clone(),
    )
    .await
    .expect("instance b");

    // The sending stations send every 500 ms, each to its own partition.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", quantrac_testkit::env::kafka_brokers())
        .create()
        .expect("producer");
    let feeding = CancellationToken::new();
    let feeder = {
        let (producer, valid, sending, feeding) = (
            producer.clone(),
            valid.clone(),
            sending.clone(),
            feeding.clone(),
        );
        tokio::spawn(async move {
            while !feeding.is_cancelled() {
                for s in &sending {
                    let payload = live_cod(s).encode_to_vec();
                    let _ = producer
                        .send(
                            FutureRecord::to(&valid).key(s).payload(&payload),
                            Duration::from_secs(10),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let db = quantrac_testkit::db::connect(&db_url).await;
    let gaps = || async {
        let rows = db
            .query(
                "SELECT station_id, count(*) FROM alerts WHERE rule = 'data_gap' GROUP BY station_id",
                &[],
            )
            .await
            .expect("gaps");
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let g = gaps().await;
        if silent.iter().all(|s| g.contains_key(s)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every silent station got a gap alert: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // More ticks on both instances, well past every threshold.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let g = gaps().await;
    for s in &silent {
        assert_eq!(g.get(s), Some(&1), "{s}: {g:?}");
    }
    for s in &sending {
        assert_eq!(g.get(s), None, "{s} sends but got a gap alert: {g:?}");
    }
    feeding.cancel();
    let _ = feeder.await;
    stop.cancel();
    a.wait().await.expect("a stops");
    b.wait().await.expect("b stops");
}

/// The partition alerting computes for a station is the one librdkafka's
/// default partitioner chose for it (what the ownership rule relies on).
#[tokio::test]
async fn station_partitions_match_the_producers() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topic = unique("parts");
    quantrac_testkit::kafka::create(&[&topic], 6).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", quantrac_testkit::env::kafka_brokers())
        .create()
        .expect("producer");
    for i in 0..50 {
        let key = format!("PY-ST{i:02}");
        let delivered = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
        assert_eq!(
            delivered.partition,
            quantrac_alerting::ownership::partition_of(key.as_bytes(), 6),
            "{key}"
        );
    }
}
