//! The gRPC alert service under faults, against the real PostgreSQL:
//! - the database drops every connection (what a restart does to its
//!   clients): the service opens its read connection again, so subscribers
//!   are served again, and a resumed subscription reads the history
//!   recorded after the drop;
//! - more subscribers than `max_subscribers`: refused, and a place frees
//!   when a subscriber goes away.

use std::time::Duration;

use quantrac_db::access::Role;
use quantrac_proto::v1::{AcknowledgeAlertRequest, Alert, AlertState, SubscribeAlertsRequest};
use tokio_util::sync::CancellationToken;

mod common;
use common::{alert_client, fresh_database, registry, start_single_node, stored_cod, unique};

const WAIT: Duration = Duration::from_secs(30);

async fn next(stream: &mut tonic::Streaming<Alert>) -> Result<Alert, tonic::Status> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message in time")
        .map(|m| m.expect("stream not ended"))
}

#[tokio::test]
async fn subscribers_are_served_again_after_the_database_drops_connections() {
    let db_url = fresh_database().await;
    let station = unique("DBR");
    let reg = registry(&station);
    let stop = CancellationToken::new();
    let (alerting, bus) = start_single_node(&db_url, &reg, &stop).await;
    let mut client = alert_client(alerting.grpc_addr, &db_url, "officer-1", Role::Officer).await;
    let mut live = client
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    bus.send(stored_cod(&station, 300.0, 10))
        .await
        .expect("bus");
    let opened = next(&mut live).await.expect("the opening");
    assert_eq!(
        (opened.rule.as_str(), opened.state()),
        ("limit_exceeded", AlertState::Open)
    );

    // What a database restart does to every client of this database.
    let admin = quantrac_testkit::db::connect(&db_url).await;
    let dropped: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(dropped >= 2, "alerting's connections dropped: {dropped}");

    // A new subscription (it reads the newest sequence first). The first
    // call may still meet the dropped connection; it must not stay broken.
    let mut subscribed = Err(tonic::Status::unknown("not tried"));
    for _ in 0..20 {
        subscribed = client.subscribe(SubscribeAlertsRequest::default()).await;
        if subscribed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = subscribed.as_ref().err().map(ToString::to_string);
    assert!(subscribed.is_ok(), "subscribe after the drop: {status:?}");

    // A subscription resumed after the opening reads the history, and the
    // acknowledgement recorded after the drop arrives on it.
    let mut resumed = client
        .subscribe(SubscribeAlertsRequest {
            after_sequence: opened.sequence,
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    client
        .acknowledge(AcknowledgeAlertRequest {
            alert_id: opened.id.clone(),
            officer: "officer-1".into(),
            note: "seen".into(),
        })
        .await
        .expect("acknowledge after the drop");
    let acked = next(&mut resumed)
        .await
        .expect("the history after the drop");
    assert_eq!(
        (acked.id.as_str(), acked.state()),
        (opened.id.as_str(), AlertState::Acknowledged)
    );

    stop.cancel();
    alerting.wait().await.expect("clean stop");
}

/// Subscriptions are bounded: past `max_subscribers` a subscriber is told
/// RESOURCE_EXHAUSTED, and a place frees when a subscriber goes away.
#[tokio::test]
async fn subscriptions_are_bounded_and_free_their_place() {
    let db_url = fresh_database().await;
    let station = unique("SUB");
    let reg = registry(&station);
    let stop = CancellationToken::new();
    let mut config = common::alerting_config(&db_url, &reg);
    config.max_subscribers = 2;
    let (_bus, rx) = tokio::sync::mpsc::channel(4);
    let alerting = quantrac_alerting::Alerting::start(
        config,
        quantrac_alerting::Edge::Bus(rx),
        None,
        stop.clone(),
    )
    .await
    .expect("alerting");
    let mut a = alert_client(alerting.grpc_addr, &db_url, "analyst-1", Role::Analyst).await;
    let first = a
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect("first");
    let second = a
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect("second");
    let refused = a
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect_err("a third is refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");

    // A subscriber that goes away (no alert change needed to notice).
    drop(first);
    let mut third = Err(tonic::Status::unknown("not tried"));
    for _ in 0..50 {
        third = a.subscribe(SubscribeAlertsRequest::default()).await;
        if third.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(third.is_ok(), "a freed place is taken: {:?}", third.err());
    drop((second, third));
    stop.cancel();
    alerting.wait().await.expect("clean stop");
}

/// Every alerting connection has a statement timeout (issue 12: none had
/// one, so one statement stuck on a lock could stall the engine for good).
#[tokio::test]
async fn alerting_connections_have_a_statement_timeout() {
    let db_url = fresh_database().await;
    let client = quantrac_alerting::store::connect(&db_url)
        .await
        .expect("connect");
    let timeout: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(timeout, quantrac_alerting::store::STATEMENT_TIMEOUT);
}
