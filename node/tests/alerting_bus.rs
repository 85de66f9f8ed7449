//! Single-node mode over the real PostgreSQL (no Kafka): a reading the
//! processor committed but alerting never judged, because the process
//! stopped in between, is judged when alerting starts again (a late one,
//! measured before readings already judged, too), and what was judged
//! before is not alerted twice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use quantrac_alerting::engine::Engine;
use quantrac_alerting::rules::RulesConfig;
use quantrac_alerting::warmup;
use quantrac_plumbing::bus::{BusBatch, BusRecord, BusSender};
use quantrac_processor::local::LocalBus;
use quantrac_processor::{Processor, ProcessorConfig};
use quantrac_proto::Sample;
use quantrac_proto::registry::Registry;
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_proto::v1::{
    Alert, AlertState, SourceProtocol, StoredReadingBatch, SubscribeAlertsRequest,
};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

mod common;
use common::{cod, fresh_database, registry, rules, start_single_node, unique};

const WAIT: Duration = Duration::from_secs(30);

async fn start_processor(
    db_url: &str,
    registry: &std::path::Path,
    stored: mpsc::Sender<StoredReadingBatch>,
    stop: &CancellationToken,
) -> (Processor, BusSender) {
    let mut config = ProcessorConfig {
        database_url: db_url.to_owned(),
        registry: registry.to_owned(),
        ..Default::default()
    };
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.kafka.brokers = "127.0.0.1:1".into(); // would fail if used
    config.batch.max_wait = Duration::from_millis(20);
    let (tx, rx) = quantrac_plumbing::bus::channel(16);
    let processor = Processor::start(
        config,
        quantrac_processor::Edge::Bus(LocalBus {
            input: rx,
            stored: Some(stored),
        }),
        None,
        stop.clone(),
    )
    .await
    .expect("processor");
    (processor, tx)
}

/// Hands samples to the processor and waits until they are committed.
async fn store(bus: &BusSender, samples: &[Sample]) {
    let records = samples
        .iter()
        .map(|s| {
            let b = s
                .clone()
                .into_batch(SourceProtocol::TcpJson, chrono::Utc::now(), "test");
            BusRecord {
                topic: "readings.raw".into(),
                key: Bytes::from(b.station_id.clone()),
                payload: Bytes::from(b.encode_to_vec()),
            }
        })
        .collect();
    let (done, committed) = tokio::sync::oneshot::channel();
    bus.send(BusBatch { records, done })
        .await
        .expect("processor running");
    tokio::time::timeout(WAIT, committed)
        .await
        .expect("committed in time")
        .expect("answered")
        .expect("stored");
}

/// The next opening of a limit_exceeded alert on the stream (other rules
/// and other changes may come too).
async fn next_exceedance(stream: &mut tonic::Streaming<Alert>) -> Alert {
    loop {
        let a = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an alert in time")
            .expect("stream ok")
            .expect("not ended");
        if a.rule == "limit_exceeded" && a.state() == AlertState::Open {
            return a;
        }
    }
}

/// The sequence of the opening of the limit_exceeded alert for `value`,
/// once alerting has recorded it.
async fn wait_for_exceedance(db: &tokio_postgres::Client, value: f64) -> i64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let row = db
            .query_opt(
                "SELECT e.sequence FROM alert_events e JOIN alerts a ON a.id = e.alert_id \
                 WHERE a.rule = 'limit_exceeded' AND e.change = 'opened' AND a.observed_value = $1",
                &[&value],
            )
            .await
            .expect("query");
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert for {value} in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the alert opened at `sequence` is resolved.
async fn wait_for_resolution(db: &tokio_postgres::Client, sequence: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM alert_events r JOIN alert_events o ON o.alert_id = r.alert_id \
                 WHERE o.sequence = $1 AND r.change = 'resolved'",
                &[&sequence],
            )
            .await
            .expect("query")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not resolved in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the database would rebuild an engine from now: (warmed, judged).
async fn split(db: &tokio_postgres::Client, registry: &std::path::Path) -> (usize, usize) {
    let mut engine = Engine::new(
        RulesConfig::load(&rules()).expect("rules"),
        Arc::new(Registry::load(registry).expect("registry")),
    );
    let w = warmup::from_database(
        &mut engine,
        db,
        Duration::from_secs(26 * 3600),
        chrono::Utc::now(),
    )
    .await
    .expect("warm-up");
    (w.warmed, w.judged)
}

#[tokio::test]
async fn a_reading_stored_but_not_judged_before_a_stop_is_alerted_at_start() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("quantrac_alerting=debug,quantrac_processor=info")
        .with_test_writer()
        .try_init();
    let db_url = fresh_database().await;
    let station = unique("SN");
    let registry = registry(&station);
    let (db, conn) = tokio_postgres::connect(&db_url, NoTls).await.expect("db");
    tokio::spawn(conn);

    // 1. Processor and alerting together: an exceedance (300 against a
    //    Cmax of 148.5) is alerted, and resolved by the next value.
    let (stop, alerting_stop) = (CancellationToken::new(), CancellationToken::new());
    let (alerting, stored_tx) = start_single_node(&db_url, &registry, &alerting_stop).await;
    let (processor, bus) = start_processor(&db_url, &registry, stored_tx, &stop).await;
    store(&bus, &cod(&station, &[300.0, 100.0], 55)).await;
    let first = wait_for_exceedance(&db, 300.0).await;
    wait_for_resolution(&db, first).await;
    stop.cancel();
    processor.wait().await.expect("processor stopped cleanly");
    alerting_stop.cancel();
    alerting.wait().await.expect("alerting stopped cleanly");
    assert_eq!(
        split(&db, &registry).await,
        (2, 0),
        "the judged readings are no longer pending"
    );

    // 2. The crash window: the processor commits a new exceedance, but
    //    alerting is gone before it judges it (its channel is never read).
    let stop = CancellationToken::new();
    let (unread_tx, unread_rx) = mpsc::channel(16);
    let (processor, bus) = start_processor(&db_url, &registry, unread_tx, &stop).await;
    store(&bus, &cod(&station, &[400.0], 30)).await;
    stop.cancel();
    processor.wait().await.expect("processor stopped cleanly");
    drop(unread_rx);
    assert_eq!(
        split(&db, &registry).await,
        (2, 1),
        "the unjudged reading is pending"
    );

    // 3. Alerting starts again, alone: the second exceedance is alerted,
    //    the first incident is not opened again.
    let alerting_stop = CancellationToken::new();
    let (alerting, _idle) = start_single_node(&db_url, &registry, &alerting_stop).await;
    let mut client = AlertServiceClient::with_interceptor(
        quantrac_testkit::grpc::channel(alerting.grpc_addr).await,
        quantrac_testkit::grpc::Bearer::new(
            &token(&db_url, quantrac_db::access::Role::Officer).await,
        ),
    );
    let mut stream = client
        .subscribe(SubscribeAlertsRequest {
            after_sequence: u64::try_from(first).expect("positive"),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let second = next_exceedance(&mut stream).await;
    assert_eq!(second.observed_value, 400.0);
    assert!(second.sequence > u64::try_from(first).expect("positive"));
    let opened: i64 = db
        .query_one(
            "SELECT count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id \
             WHERE a.rule = 'limit_exceeded' AND e.change = 'opened'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(opened, 2, "one opening per exceedance");
    // Pending rows are cleared after the changes are recorded: wait for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = split(&db, &registry).await;
        if s == (3, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "all readings judged, got {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alerting_stop.cancel();
    alerting.wait().await.expect("alerting stopped cleanly");
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

#[tokio::test]
async fn a_late_reading_stored_but_not_judged_before_a_stop_is_alerted_at_start() {
    let db_url = fresh_database().await;
    let station = unique("SNL");
    let registry = registry(&station);
    let (db, conn) = tokio_postgres::connect(&db_url, NoTls).await.expect("db");
    tokio::spawn(conn);

    // 1. Processor and alerting together: an ordinary reading 30 minutes
    //    ago is judged (nothing left pending).
    let (stop, alerting_stop) = (CancellationToken::new(), CancellationToken::new());
    let (alerting, stored_tx) = start_single_node(&db_url, &registry, &alerting_stop).await;
    let (processor, bus) = start_processor(&db_url, &registry, stored_tx, &stop).await;
    store(&bus, &cod(&station, &[100.0], 30)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while split(&db, &registry).await != (1, 0) {
        assert!(tokio::time::Instant::now() < deadline, "the reading judged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    processor.wait().await.expect("processor stopped cleanly");
    alerting_stop.cancel();
    alerting.wait().await.expect("alerting stopped cleanly");

    // 2. A logger's backlog arrives late: an exceedance measured two hours
    //    ago, before the judged reading. The processor commits it; alerting
    //    is gone before judging it.
    let stop = CancellationToken::new();
    let (unread_tx, unread_rx) = mpsc::channel(16);
    let (processor, bus) = start_processor(&db_url, &registry, unread_tx, &stop).await;
    store(&bus, &cod(&station, &[400.0], 120)).await;
    stop.cancel();
    processor.wait().await.expect("processor stopped cleanly");
    drop(unread_rx);
    assert_eq!(
        split(&db, &registry).await,
        (1, 1),
        "the late reading is pending, though older than what was judged"
    );

    // 3. Alerting starts again: the late exceedance is alerted.
    let alerting_stop = CancellationToken::new();
    let (alerting, _idle) = start_single_node(&db_url, &registry, &alerting_stop).await;
    wait_for_exceedance(&db, 400.0).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while split(&db, &registry).await != (2, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late reading no longer pending once judged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alerting_stop.cancel();
    alerting.wait().await.expect("alerting stopped cleanly");
}
