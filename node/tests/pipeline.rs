//! Alerting over the real Kafka and PostgreSQL, from readings on
//! `readings.raw` through the processor to the gRPC alert stream: an
//! exceedance is alerted, acknowledged and resolved; a replay after a
//! restart raises nothing twice; a subscriber resumes without gaps.

use std::time::Duration;

use quantrac_alerting::Alerting;
use quantrac_processor::{Processor, ProcessorConfig};
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_proto::v1::{AcknowledgeAlertRequest, Alert, AlertState, SubscribeAlertsRequest};
use quantrac_testkit::env::kafka_brokers as brokers;
use quantrac_testkit::kafka::{create as create_kafka_topics, produce};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

mod common;
use common::{alerting_config, cod, fresh_database, registry, unique};

const WAIT: Duration = Duration::from_secs(30);

async fn next(stream: &mut tonic::Streaming<Alert>) -> Alert {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an alert in time")
        .expect("stream ok")
        .expect("not ended")
}

#[tokio::test]
async fn exceedance_to_grpc_stream_with_lifecycle_replay_and_resume() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("quantrac_alerting=info")
        .with_test_writer()
        .try_init();
    let db_url = fresh_database().await;
    let base = unique("a");
    let (raw, valid, rejected, alerts) = (
        format!("{base}.raw"),
        format!("{base}.valid"),
        format!("{base}.rejected"),
        format!("{base}.alerts"),
    );
    create_kafka_topics(&[&raw, &valid, &rejected, &alerts], 3).await;
    let station = unique("AL");
    let registry = registry(&station);

    let mut pconfig = ProcessorConfig {
        database_url: db_url.clone(),
        registry: registry.clone(),
        ..Default::default()
    };
    pconfig.http.listen = "127.0.0.1:0".parse().expect("addr");
    pconfig.kafka.brokers = brokers();
    pconfig.kafka.group_id = unique("p");
    pconfig.kafka.raw_topic = raw.clone();
    pconfig.kafka.valid_topic = valid.clone();
    pconfig.kafka.rejected_topic = rejected.clone();
    pconfig.batch.max_wait = Duration::from_millis(20);
    let stop = CancellationToken::new();
    let processor = Processor::start(pconfig, quantrac_processor::Edge::Kafka, None, stop.clone())
        .await
        .expect("processor");

    // A webhook receiver: every POST body goes to this channel. The first
    // two attempts fail with 503, to exercise the retries.
    let (hook_tx, mut hook_rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/alerts", hook.local_addr().expect("addr"));
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |body: String| {
            let (tx, failures) = (hook_tx.clone(), failures.clone());
            async move {
                if failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let _ = tx.send(serde_json::from_str(&body).expect("webhook JSON"));
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(hook, app).await });

    let alerting_config = |group: &str| {
        let mut c = alerting_config(&db_url, &registry);
        c.kafka.brokers = brokers();
        c.kafka.group_id = group.to_owned();
        c.kafka.valid_topic = valid.clone();
        c.kafka.alerts_topic = alerts.clone();
        c.kafka.session_timeout = Duration::from_secs(6);
        c.webhooks.urls = vec![hook_url.clone()];
        c
    };
    let alerting_stop = CancellationToken::new();
    let first_group = unique("g");
    let alerting = Alerting::start(
        alerting_config(&first_group),
        quantrac_alerting::Edge::Kafka,
        None,
        alerting_stop.clone(),
    )
    .await
    .expect("alerting");
    let mut client = AlertServiceClient::with_interceptor(
        quantrac_testkit::grpc::channel(alerting.grpc_addr).await,
        quantrac_testkit::grpc::Bearer::new(
            &token(&db_url, quantrac_db::access::Role::Officer).await,
        ),
    );
    let mut stream = client
        .subscribe(SubscribeAlertsRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();

    // 1. One value above Cmax = 150 x 0.9 x 1.1 = 148.5 opens an alert.
    produce(&raw, &cod(&station, &[40.0, 42.0, 200.0], 30)).await;
    let opened = loop {
        let a = next(&mut stream).await;
        if a.rule == "limit_exceeded" {
            break a;
        }
    };
    assert_eq!(opened.station_id, station);
    // The webhook got it too, after two refused attempts.
    let posted = loop {
        let v = tokio::time::timeout(WAIT, hook_rx.recv())
            .await
            .expect("webhook in time")
            .expect("webhook");
        if v["id"] == opened.id.as_str() {
            break v;
        }
    };
    assert_eq!(posted["state"], "ALERT_STATE_OPEN");
    assert_eq!(posted["observed_value"], 200.0);
    assert_eq!(opened.parameter, "COD");
    assert_eq!(opened.state(), AlertState::Open);
    assert_eq!(opened.observed_value, 200.0);
    assert!((opened.limit_value - 148.5).abs() < 1e-9);

    // 2. An officer acknowledges it.
    let acked = client
        .acknowledge(AcknowledgeAlertRequest {
            alert_id: opened.id.clone(),
            officer: "can-bo-1".into(),
            note: "checking".into(),
        })
        .await
        .expect("acknowledge")
        .into_inner();
    assert_eq!(acked.state(), AlertState::Acknowledged);
    let seen = loop {
        let a = next(&mut stream).await;
        if a.id == opened.id {
            break a;
        }
    };
    // Attributed to the token's identity, not to the name typed.
    assert_eq!(
        (seen.state(), seen.acknowledged_by.as_str()),
        (AlertState::Acknowledged, "officer@test")
    );

    // 3. Values back well below the limit resolve it.
    produce(&raw, &cod(&station, &[40.0, 41.0, 39.0], 10)).await;
    let resolved = loop {
        let a = next(&mut stream).await;
        if a.id == opened.id && a.state() == AlertState::Resolved {
            break a;
        }
    };
    assert!(resolved.sequence > seen.sequence);

    // 4. Alerting stops; meanwhile a new exceedance is stored. On restart
    //    (same group) it is judged: the windows are rebuilt from what the
    //    group had evaluated, and the new reading goes through the rules.
    alerting_stop.cancel();
    alerting.wait().await.expect("alerting stops");
    let (db, conn) = tokio_postgres::connect(&db_url, NoTls).await.expect("db");
    tokio::spawn(conn);
    let count_opened = async |db: &tokio_postgres::Client| -> i64 {
        db.query_one(
            "SELECT count(*) FROM alert_events WHERE change = 'opened'",
            &[],
        )
        .await
        .expect("count")
        .get(0)
    };
    let opened_before = count_opened(&db).await;
    let readings_before: i64 = db
        .query_one("SELECT count(*) FROM readings", &[])
        .await
        .expect("count")
        .get(0);
    produce(&raw, &cod(&station, &[300.0], 0)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while db
        .query_one("SELECT count(*) FROM readings", &[])
        .await
        .expect("count")
        .get::<_, i64>(0)
        == readings_before
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the processor stores the new reading"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alerting_stop = CancellationToken::new();
    let alerting = Alerting::start(
        alerting_config(&first_group),
        quantrac_alerting::Edge::Kafka,
        None,
        alerting_stop.clone(),
    )
    .await
    .expect("restart");
    let new_exceedance = async |db: &tokio_postgres::Client| -> i64 {
        db.query_one(
            "SELECT count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id \
             WHERE e.change = 'opened' AND a.rule = 'limit_exceeded' AND a.observed_value = 300",
            &[],
        )
        .await
        .expect("count")
        .get(0)
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while new_exceedance(&db).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exceedance stored while alerting was down is alerted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(count_opened(&db).await > opened_before);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let opened_before = count_opened(&db).await;
    alerting_stop.cancel();
    alerting.wait().await.expect("alerting stops");

    //    Restart with a new consumer group: it replays the whole
    //    readings.valid topic and raises nothing twice.
    let alerting_stop = CancellationToken::new();
    let alerting = Alerting::start(
        alerting_config(&unique("g2")),
        quantrac_alerting::Edge::Kafka,
        None,
        alerting_stop.clone(),
    )
    .await
    .expect("restart");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count_opened(&db).await,
        opened_before,
        "a replay raises no alert twice"
    );

    // 5. A subscriber resuming after the first change gets every later one,
    //    in order, once.
    let mut client = AlertServiceClient::with_interceptor(
        quantrac_testkit::grpc::channel(alerting.grpc_addr).await,
        quantrac_testkit::grpc::Bearer::new(
            &token(&db_url, quantrac_db::access::Role::Officer).await,
        ),
    );
    let mut resumed = client
        .subscribe(SubscribeAlertsRequest {
            after_sequence: opened.sequence,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let total: i64 = db
        .query_one("SELECT count(*) FROM alert_events", &[])
        .await
        .expect("count")
        .get(0);
    let first: i64 = db
        .query_one("SELECT min(sequence) FROM alert_events", &[])
        .await
        .expect("min")
        .get(0);
    let mut last = opened.sequence;
    let expected = total - (i64::try_from(opened.sequence).expect("seq") - first + 1);
    for _ in 0..expected {
        let a = next(&mut resumed).await;
        assert!(
            a.sequence > last,
            "in order, no repeats: {} after {last}",
            a.sequence
        );
        last = a.sequence;
    }
    assert!(last >= resolved.sequence);

    alerting_stop.cancel();
    alerting.wait().await.expect("stop");
    stop.cancel();
    processor.wait().await.expect("stop");
}

/// A token of `role` issued in the database at `db_url`.
async fn token(db_url: &str, role: quantrac_db::access::Role) -> String {
    let db = quantrac_testkit::db::connect(db_url).await;
    quantrac_db::access::issue(
        &db,
        &format!("{role}@test"),
        role,
        chrono::Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .expect("issue a token")
    .secret
}
