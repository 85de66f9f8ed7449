//! A different value for a stored (station, parameter, time) is kept as a
//! conflict with both origins, never dropped as a duplicate; an identical
//! redelivery stays a silent duplicate. Against the real PostgreSQL, for
//! both write methods.

use chrono::{DateTime, Duration, TimeZone, Utc};
use quantrac_db::{ReadingRow, WriteMethod};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::qc::QcFlag;

fn reading(at: DateTime<Utc>, value: f64, source: i32) -> ReadingRow {
    ReadingRow {
        station_id: "PY-AP-WW03".into(),
        parameter: "COD".into(),
        value,
        unit: "mg/L".into(),
        measured_at: at,
        status: DeviceStatus::Measuring,
        device_flag: "N".into(),
        qc_flag: QcFlag::Valid,
        source,
        received_at: Some(at + Duration::seconds(3)),
        ingest_id: uuid::Uuid::now_v7().to_string(),
        converted: None,
        wire_code: None,
    }
}

async fn write(
    db: &mut tokio_postgres::Client,
    rows: &[ReadingRow],
    method: WriteMethod,
) -> quantrac_db::readings::Written {
    let mut tx = db.transaction().await.expect("tx");
    let w = quantrac_db::readings::write(&mut tx, rows, method)
        .await
        .expect("write");
    tx.commit().await.expect("commit");
    w
}

async fn spoofed_slot_keeps_both_values(method: WriteMethod) {
    let url = quantrac_testkit::db::fresh_database().await;
    let mut db = quantrac_testkit::db::connect(&url).await;
    quantrac_db::schema::migrate_tables(&db)
        .await
        .expect("migrate");
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");

    // A sender with no right to it pre-submits a clean value for the
    // station's next slot (TCP JSON, source 4)...
    let spoof = reading(t, 10.0, 4);
    assert_eq!(
        write(&mut db, std::slice::from_ref(&spoof), method)
            .await
            .inserted,
        1
    );
    // ...then the station's real, exceeding value arrives (MQTT, source 1),
    // with a new reading in the same batch.
    let real = reading(t, 300.0, 1);
    let next = reading(t + Duration::minutes(5), 280.0, 1);
    let w = write(&mut db, &[real.clone(), next], method).await;
    assert_eq!((w.inserted, w.conflicts), (1, 1), "{method:?}");
    let row = db
        .query_one(
            "SELECT stored_value, value, stored_source, source, stored_ingest_id::text, ingest_id::text FROM reading_conflicts",
            &[],
        )
        .await
        .expect("one conflict");
    assert_eq!((row.get::<_, f64>(0), row.get::<_, f64>(1)), (10.0, 300.0));
    assert_eq!((row.get::<_, i16>(2), row.get::<_, i16>(3)), (4, 1));
    assert_eq!(row.get::<_, String>(4), spoof.ingest_id);
    assert_eq!(row.get::<_, String>(5), real.ingest_id);

    // A replay of the same batch adds nothing; an identical resend of the
    // stored value (another ingest id) is a duplicate, not a conflict.
    let w = write(&mut db, std::slice::from_ref(&real), method).await;
    assert_eq!((w.inserted, w.conflicts), (0, 0));
    let w = write(&mut db, &[reading(t, 10.0, 4)], method).await;
    assert_eq!((w.inserted, w.conflicts), (0, 0));

    // Two different values for one slot in one batch: one stored, one kept.
    let later = t + Duration::hours(1);
    let w = write(
        &mut db,
        &[reading(later, 5.0, 1), reading(later, 6.0, 1)],
        method,
    )
    .await;
    assert_eq!((w.inserted, w.conflicts), (1, 1));
    let kept: i64 = db
        .query_one("SELECT count(*) FROM reading_conflicts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(kept, 2);
}

#[tokio::test]
async fn copy_keeps_conflicts() {
    spoofed_slot_keeps_both_values(WriteMethod::Copy).await;
}

#[tokio::test]
async fn unnest_keeps_conflicts() {
    spoofed_slot_keeps_both_values(WriteMethod::Unnest).await;
}

fn rejection(key: &str) -> quantrac_proto::v1::RejectedReading {
    quantrac_proto::v1::RejectedReading {
        key: key.into(),
        raw: key.as_bytes().to_vec(),
        reason: "unknown_parameter".into(),
        station_id: "PY-AP-WW03".into(),
        parameter: "Colour".into(),
        ..Default::default()
    }
}

fn frame(at: DateTime<Utc>, byte: u8) -> quantrac_db::events::FrameRow {
    quantrac_db::events::FrameRow {
        station_id: "PY-AP-WW03".into(),
        received_at: at,
        sha256: vec![byte; 32],
        size: 120,
        origin: "192.0.2.7:40100".into(),
        source: 4,
    }
}

/// The processor's own batch write: a batch that meets stored rows is
/// written again through staging, and its rejections and frame digests
/// (sent alongside the failed COPY) are stored with it, not lost with the
/// rolled-back attempt.
#[tokio::test]
async fn a_batch_meeting_stored_rows_keeps_its_rejections_and_frames() {
    let url = quantrac_testkit::db::fresh_database().await;
    let (mut store, _) = quantrac_processor::store::Store::open(
        &url,
        &quantrac_db::ConnectOptions::default(),
        &quantrac_db::SchemaOptions::default(),
        WriteMethod::Copy,
    )
    .await
    .expect("open");
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    let first = [
        reading(t, 10.0, 4),
        reading(t + Duration::minutes(5), 11.0, 4),
    ];
    let o = store
        .write(&first, &[rejection("r1")], &[frame(t, 1)])
        .await
        .expect("first batch");
    assert_eq!((o.inserted, o.rejected, o.frames), (2, 1, 1));

    // A replay of the first batch's rows, one new row, a new rejection
    // and a new frame.
    let mut second = first.to_vec();
    second.push(reading(t + Duration::minutes(10), 12.0, 4));
    let o = store
        .write(&second, &[rejection("r2")], &[frame(t, 2)])
        .await
        .expect("second batch");
    assert_eq!(
        (o.inserted, o.duplicates, o.rejected, o.frames),
        (1, 2, 1, 1)
    );
    let db = quantrac_testkit::db::connect(&url).await;
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.expect(sql).get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM readings").await, 3);
    assert_eq!(count("SELECT count(*) FROM rejected_readings").await, 2);
    assert_eq!(count("SELECT count(*) FROM raw_frames").await, 2);
}
