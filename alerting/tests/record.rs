//! Recording alert changes against the real PostgreSQL: the whole
//! recording is one transaction (sent in one round trip), so a change the
//! database refuses takes the others of its round with it, and what is
//! recorded is announced to every instance listening.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use quantrac_alerting::alert::{
    AlertEvent, AlertKey, AlertRecord, Change, RuleKind, Severity, State,
};
use quantrac_alerting::store;
use quantrac_testkit::db::{connect, count, fresh_database};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

fn opened(station: &str, message: &str) -> AlertEvent {
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("time");
    AlertEvent {
        change: Change::Opened,
        at: t,
        alert: AlertRecord {
            key: AlertKey {
                rule: RuleKind::LimitExceeded,
                station_id: station.into(),
                parameter: "COD".into(),
                window_start: t,
                window_len: None,
            },
            severity: Severity::Critical,
            state: State::Open,
            observed_value: 300.0,
            limit_value: 150.0,
            message: message.into(),
            window_end: Some(t),
            opened_at: t,
            updated_at: t,
            last_notified_at: t,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_by: None,
            note: None,
            industrial_zone: "KCN Hoa Hiep".into(),
            assignee: None,
        },
    }
}

#[tokio::test]
async fn a_refused_change_rolls_back_its_round_and_a_recorded_one_is_announced() {
    let url = fresh_database().await;
    let admin = connect(&url).await;
    quantrac_db::schema::migrate_tables(&admin)
        .await
        .expect("migrate");
    // The database refuses one change of the round.
    admin
        .batch_execute(
            "ALTER TABLE alerts ADD CONSTRAINT test_refuses CHECK (message <> 'refused')",
        )
        .await
        .expect("constraint");
    // A listener of its own, as another instance's: what it hears, in
    // commit order.
    let (listener, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("listener");
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = heard_tx.send(n.payload().to_owned());
            }
        }
    });
    listener
        .batch_execute(&format!("LISTEN {}", quantrac_alerting::live::CHANNEL))
        .await
        .expect("LISTEN");
    let db = store::connect(&url).await.expect("connect");

    for wait_for_flush in [false, true] {
        let err = store::record(
            &db,
            vec![opened("A", "ok"), opened("B", "refused"), opened("C", "ok")],
            wait_for_flush,
        )
        .await
        .expect_err("a refused change fails the round");
        assert!(!err.is_transient(), "{err}");
        assert_eq!(count(&admin, "SELECT count(*) FROM alerts").await, 0);
        assert_eq!(count(&admin, "SELECT count(*) FROM alert_events").await, 0);
    }

    // The connection is usable afterwards, and what it records is
    // announced (pg_notify at commit) with its sequence numbers; the
    // rolled-back rounds announced nothing (they would have come first).
    let recorded = store::record(&db, vec![opened("A", "ok"), opened("C", "ok")], false)
        .await
        .expect("record");
    let sequences: Vec<String> = recorded
        .iter()
        .map(|r| r.alert.sequence.to_string())
        .collect();
    assert_eq!(sequences.len(), 2);
    assert_eq!(count(&admin, "SELECT count(*) FROM alerts").await, 2);
    let mut announced = Vec::new();
    while announced.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("the recorded changes are announced")
            .expect("listener");
        announced.push(next);
    }
    assert_eq!(announced, sequences);
    // A replay adds nothing.
    let again = store::record(&db, vec![opened("A", "ok")], false)
        .await
        .expect("replay");
    assert!(again.is_empty());
    assert_eq!(count(&admin, "SELECT count(*) FROM alert_events").await, 2);
}
