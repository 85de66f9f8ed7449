//! The TimescaleDB schema on a real TimescaleDB server (the WebAssembly
//! build started by `deploy/services.sh start timescale`): hypertable,
//! policies, continuous aggregates, compression, idempotent writes into
//! compressed chunks. That server serves one connection at a time, so
//! everything here runs in one test on one connection.

use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use quantrac_processor::config::{StorageConfig, TimescaleMode, WriteMethod};
use quantrac_processor::store::Store;
use quantrac_processor::validate::{Normalised, QcFlag};
use quantrac_proto::domain::DeviceStatus;

fn timescale_url() -> String {
    std::env::var("QUANTRAC_TIMESCALE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:15433/template1".into())
}

fn reading(station: &str, at: DateTime<Utc>, value: f64, qc: QcFlag) -> Normalised {
    Normalised {
        station_id: station.into(),
        parameter: "COD".into(),
        value,
        unit: "mg/L".into(),
        measured_at: at,
        status: if qc == QcFlag::Valid {
            DeviceStatus::Measuring
        } else {
            DeviceStatus::Calibrating
        },
        device_flag: "00".into(),
        qc_flag: qc,
        source: 3,
        received_at: Some(at),
        ingest_id: uuid::Uuid::now_v7().to_string(),
        converted: None,
        wire_code: None,
    }
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(store: &mut Store, sql: &str) -> T {
    store
        .client()
        .await
        .expect("client")
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn hourly_row(store: &mut Store, station: &str, hour: DateTime<Utc>) -> tokio_postgres::Row {
    store
        .client()
        .await
        .expect("client")
        .query_one(
            "SELECT valid_count, max FROM readings_hourly WHERE station_id = $1 AND bucket = $2",
            &[&station, &hour],
        )
        .await
        .expect("hourly row")
}

#[tokio::test]
async fn timescale_schema_policies_aggregates_and_compression() {
    let storage = StorageConfig {
        write_method: WriteMethod::Unnest, // this server does not take COPY
        timescale: TimescaleMode::On,
        compress_after: Duration::from_secs(7 * 86_400),
        retention: Duration::from_secs(365 * 86_400),
        ..Default::default()
    };
    let (mut store, info) = tokio::time::timeout(
        Duration::from_secs(60),
        Store::open(
            &timescale_url(),
            &Default::default(),
            &storage.schema(),
            storage.write_method,
        ),
    )
    .await
    .expect("TimescaleDB answers (deploy/services.sh start timescale)")
    .expect("migrations apply on TimescaleDB");
    assert!(info.timescale);

    // Schema: a hypertable with both policies, two continuous aggregates
    // with their refresh policies.
    let hypertables: i64 = scalar(
        &mut store,
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'",
    )
    .await;
    assert_eq!(hypertables, 1);
    let jobs: Vec<String> = store
        .client()
        .await
        .expect("client")
        .query(
            "SELECT proc_name FROM timescaledb_information.jobs \
             WHERE hypertable_name IN ('readings', 'readings_hourly', 'readings_daily') \
             OR proc_name = 'policy_refresh_continuous_aggregate' ORDER BY proc_name",
            &[],
        )
        .await
        .expect("jobs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(jobs.contains(&"policy_compression".to_owned()), "{jobs:?}");
    assert!(jobs.contains(&"policy_retention".to_owned()), "{jobs:?}");
    assert_eq!(
        jobs.iter()
            .filter(|j| *j == "policy_refresh_continuous_aggregate")
            .count(),
        2,
        "{jobs:?}"
    );
    let retention_from_config: bool = scalar(
        &mut store,
        "SELECT (config->>'drop_after')::interval = INTERVAL '365 days' FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'",
    )
    .await;
    assert!(
        retention_from_config,
        "retention policy follows storage.retention"
    );
    let caggs: i64 = scalar(
        &mut store,
        "SELECT count(*) FROM timescaledb_information.continuous_aggregates \
         WHERE view_name IN ('readings_hourly', 'readings_daily')",
    )
    .await;
    assert_eq!(caggs, 2);

    // Running the migrations again (a restart) changes nothing.
    // (One connection at a time on this server: close the first.)
    drop(store);
    let (mut store, again) = Store::open(
        &timescale_url(),
        &Default::default(),
        &storage.schema(),
        storage.write_method,
    )
    .await
    .expect("re-open");
    assert_eq!(again.applied, 0);

    // Writes: idempotent; the hourly aggregate counts valid readings only.
    let station = format!("TS-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let hour = (Utc::now() - chrono::Duration::hours(3))
        .duration_trunc(chrono::Duration::hours(1))
        .expect("hour");
    let mut batch: Vec<Normalised> = (0..12)
        .map(|i| {
            reading(
                &station,
                hour + chrono::Duration::minutes(5 * i),
                40.0 + i as f64,
                QcFlag::Valid,
            )
        })
        .collect();
    batch[11] = reading(
        &station,
        hour + chrono::Duration::minutes(55),
        999.0,
        QcFlag::Calibrating,
    );
    // A saturated analyser's value counts as a lower bound.
    batch[10] = reading(
        &station,
        hour + chrono::Duration::minutes(50),
        1200.0,
        QcFlag::AboveRange,
    );
    let first = store.write(&batch, &[], &[]).await.expect("write");
    let second = store.write(&batch, &[], &[]).await.expect("write again");
    assert_eq!((first.inserted, first.duplicates), (12, 0));
    assert_eq!((second.inserted, second.duplicates), (0, 12));
    store
        .client()
        .await
        .expect("client")
        .batch_execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, now())")
        .await
        .expect("refresh");
    let row = store
        .client()
        .await
        .expect("client")
        .query_one(
            "SELECT avg, min, max, valid_count, total_count, above_range_count FROM readings_hourly WHERE station_id = $1 AND bucket = $2",
            &[&station, &hour],
        )
        .await
        .expect("hourly row");
    let (avg, min, max, valid, total, above): (f64, f64, f64, i64, i64, i64) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    // 40..49 valid and 1200 above range; the calibration value left out.
    assert_eq!((min, max, valid, total, above), (40.0, 1200.0, 10, 12, 1));
    assert!((avg - (445.0 + 1200.0) / 11.0).abs() < 1e-9, "{avg}");

    // A late reading into that materialized hour reaches the rollup at the
    // processor's next refresh (its rollup task), and only then.
    let late = reading(
        &station,
        hour + chrono::Duration::minutes(57),
        1000.0,
        QcFlag::Valid,
    );
    assert_eq!(
        store.write(&[late], &[], &[]).await.expect("late").inserted,
        1
    );
    let before = hourly_row(&mut store, &station, hour).await;
    assert_eq!(before.get::<_, i64>(0), 10, "not yet in the rollup");
    store
        .refresh_rollup("readings_hourly", hour + chrono::Duration::hours(1))
        .await
        .expect("refresh_rollup");
    let after = hourly_row(&mut store, &station, hour).await;
    assert_eq!(
        (after.get::<_, i64>(0), after.get::<_, f64>(1)),
        (11, 1200.0)
    );

    // Compression: readings older than compress_after end up in compressed
    // chunks once the policy runs; a replay into them adds nothing.
    let old = (Utc::now() - chrono::Duration::days(30))
        .duration_trunc(chrono::Duration::hours(1))
        .expect("hour");
    let old_batch: Vec<Normalised> = (0..6)
        .map(|i| {
            reading(
                &station,
                old + chrono::Duration::minutes(5 * i),
                30.0,
                QcFlag::Valid,
            )
        })
        .collect();
    assert_eq!(
        store
            .write(&old_batch, &[], &[])
            .await
            .expect("old write")
            .inserted,
        6
    );
    let job: i32 = scalar(
        &mut store,
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression' AND hypertable_name = 'readings'",
    )
    .await;
    store
        .client()
        .await
        .expect("client")
        .batch_execute(&format!("CALL run_job({job})"))
        .await
        .expect("compression job");
    let compressed: i64 = scalar(
        &mut store,
        &format!(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings' \
             AND is_compressed AND range_start <= '{}' AND range_end > '{}'",
            old.to_rfc3339(),
            old.to_rfc3339()
        ),
    )
    .await;
    assert_eq!(compressed, 1, "the old chunk is compressed");
    let replay = store
        .write(&old_batch, &[], &[])
        .await
        .expect("replay into a compressed chunk");
    assert_eq!((replay.inserted, replay.duplicates), (0, 6));
    let n: i64 = scalar(
        &mut store,
        &format!("SELECT count(*) FROM readings WHERE station_id = '{station}'"),
    )
    .await;
    assert_eq!(n, 19, "12 + the late one + 6 old");
}
