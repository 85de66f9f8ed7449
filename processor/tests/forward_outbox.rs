//! With `storage.forward`, the store queues each stored (station, time)
//! for the national feed in the transaction that stores the readings;
//! without it, nothing is queued (no forwarder would empty the queue).
//! Against the real PostgreSQL; the forwarder's side is
//! `forward/tests/upstream.rs`.

use chrono::{DateTime, Duration, Utc};
use quantrac_db::{ReadingRow, WriteMethod};
use quantrac_processor::store::Store;
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::qc::QcFlag;

fn reading(station: &str, parameter: &str, at: DateTime<Utc>) -> ReadingRow {
    ReadingRow {
        station_id: station.into(),
        parameter: parameter.into(),
        value: 42.0,
        unit: "mg/L".into(),
        measured_at: at,
        status: DeviceStatus::Measuring,
        device_flag: "00".into(),
        qc_flag: QcFlag::Valid,
        source: 0,
        received_at: Some(at),
        ingest_id: uuid::Uuid::now_v7().to_string(),
        converted: None,
        wire_code: None,
    }
}

#[tokio::test]
async fn stored_times_are_queued_for_the_national_feed_only_when_forwarding() {
    let url = quantrac_testkit::db::fresh_database().await;
    let db = quantrac_testkit::db::connect(&url).await;
    let (mut store, _) = Store::open(
        &url,
        &Default::default(),
        &Default::default(),
        WriteMethod::Copy,
    )
    .await
    .expect("store");
    let t0 = DateTime::from_timestamp(1_780_000_200, 0).expect("time");
    let t1 = t0 + Duration::minutes(5);
    let queued = "SELECT count(*) FROM forward_outbox";

    // Off (the default): stored, not queued.
    store
        .write(&[reading("S1", "COD", t0)], &[], &[])
        .await
        .expect("write");
    assert_eq!(quantrac_testkit::db::count(&db, queued).await, 0);

    // On: one key per station and time, however many parameters.
    store.set_forward(true);
    let rows = [
        reading("S1", "COD", t1),
        reading("S1", "TSS", t1),
        reading("S2", "COD", t1),
    ];
    store.write(&rows, &[], &[]).await.expect("write");
    assert_eq!(quantrac_testkit::db::count(&db, queued).await, 2);
    // A sibling store (the processor's writers) queues too.
    let mut sibling = store.sibling();
    sibling
        .write(&[reading("S1", "NH4", t1)], &[], &[])
        .await
        .expect("write");
    assert_eq!(quantrac_testkit::db::count(&db, queued).await, 2);
    // Written again, the key's version grows: a file sent before this
    // write cannot clear it.
    let version: i64 = db
        .query_one(
            "SELECT version FROM forward_outbox WHERE station_id = 'S1' AND measured_at = $1",
            &[&t1],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(version, 2);
}
