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
