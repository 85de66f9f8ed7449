//! The query service on a real TimescaleDB server (the WebAssembly build
//! started by `deploy/services.sh start timescale`), over the known data
//! set of `common` in compressed chunks:
//! - aggregates on whole hours and local days are read from the continuous
//!   aggregates, and the hours past their last refresh from the raw tail,
//!   rebuilt with each rollup bucket weighted by its count;
//! - a reading that arrived late into a rolled-up hour is in the rollup
//!   only after its next refresh (the processor refreshes), while raw
//!   answers have it at once;
//! - raw series read through compressed chunks.
//!
//! That server serves one connection at a time: the data is loaded first,
//! then the test's connection is closed and the service takes the session.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{end, local, range, start, with_token};
use quantrac_db::access::Role;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::query_service_client::QueryServiceClient;
use quantrac_proto::v1::*;
use quantrac_query::{Query, QueryConfig};
use tokio_util::sync::CancellationToken;

fn timescale_url() -> String {
    std::env::var("QUANTRAC_TIMESCALE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:15433/template1".into())
}

/// The late reading: a COD of 1000 in an hour already rolled up.
fn late_at() -> DateTime<Utc> {
    local(2026, 11, 14, 5, 2)
}

/// The raw tail: two hours a day ahead, past any refresh (the rollups'
/// watermark is global, and other tests refresh up to their own data, at
/// most now). Its first hour holds 12 COD of 100, its second 12 of 200 and
/// one of 1000: an average rebuilt without weighting each rollup bucket by
/// its count would differ.
fn tail_start() -> DateTime<Utc> {
    let two_hours: quantrac_query::interval::Interval = "2h".parse().expect("2h");
    two_hours.floor(Utc::now() + Duration::days(1))
}

fn tail_rows() -> Vec<(DateTime<Utc>, f64)> {
    let t0 = tail_start();
    let mut rows: Vec<_> = (0..24)
        .map(|i| {
            let v = if i < 12 { 100.0 } else { 200.0 };
            (t0 + Duration::minutes(5 * i), v)
        })
        .collect();
    rows.push((t0 + Duration::minutes(62), 1000.0));
    rows
}

/// Loads the data set (again: the server keeps data across test runs
/// while it runs), compresses its chunks, refreshes the rollups over it,
/// then writes the late reading and the raw tail; returns an analyst
/// token.
async fn prepare(url: &str) -> String {
    let mut db = quantrac_db::connect(url, &quantrac_db::ConnectOptions::default())
        .await
        .expect("TimescaleDB answers (deploy/services.sh start timescale)");
    let has_readings: bool = db
        .query_one("SELECT to_regclass('readings') IS NOT NULL", &[])
        .await
        .expect("probe")
        .get(0);
    if has_readings {
        db.batch_execute(
            "DELETE FROM readings WHERE station_id IN ('Q-1', 'Q-2'); \
             DELETE FROM rejected_readings WHERE key = 'r-1'",
        )
        .await
        .expect("clear an earlier run");
    }
    common::load(&mut db).await;
    let timescale: bool = db
        .query_one(
            "SELECT count(*) = 1 FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .expect("extension")
        .get(0);
    assert!(timescale, "the schema is on TimescaleDB here");
    let compressed: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT compress_chunk(c, if_not_compressed => true) \
             FROM show_chunks('readings', newer_than => $1::timestamptz, older_than => $2::timestamptz) c) t",
            &[&(start() - Duration::days(1)), &(end() + Duration::days(1))],
        )
        .await
        .expect("compress")
        .get(0);
    assert!(
        compressed >= 2,
        "the data set's days are in compressed chunks"
    );
    for view in ["readings_hourly", "readings_daily"] {
        db.batch_execute(&format!(
            "CALL refresh_continuous_aggregate('{view}', NULL, '{}'::timestamptz)",
            end().to_rfc3339()
        ))
        .await
        .expect("refresh");
    }
    let late = std::iter::once((late_at(), 1000.0)).chain(tail_rows());
    for (t, v) in late {
        db.execute(
            "INSERT INTO readings (station_id, parameter, value, unit, measured_at, status, device_flag, qc_flag, source, received_at, ingest_id) \
             VALUES ('Q-1', 'COD', $2, 'mg/L', $1, 1, 'N', 'valid', 1, now(), NULL)",
            &[&t, &v],
        )
        .await
        .expect("late reading");
    }
    let token = quantrac_db::access::issue(
        &db,
        "analyst@timescale",
        Role::Analyst,
        Utc::now() + Duration::hours(1),
    )
    .await
    .expect("token")
    .secret;
    drop(db);
    token
}

fn agg(interval: &str, functions: &[&str]) -> GetAggregatesRequest {
    agg_over(start(), end(), interval, functions)
}

fn agg_over(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: &str,
    functions: &[&str],
) -> GetAggregatesRequest {
    GetAggregatesRequest {
        station_id: "Q-1".into(),
        parameter: "COD".into(),
        range: range(from, to),
        interval: interval.into(),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        fill: Fill::None as i32,
        max_gap_buckets: 0,
        include_flagged: false,
    }
}

fn at(b: &AggregateBucket) -> DateTime<Utc> {
    b.start
        .and_then(|t| from_timestamp(&t))
        .expect("bucket start")
}

#[tokio::test]
async fn rollups_with_the_raw_tail_and_compressed_chunks() {
    let url = timescale_url();
    let token = prepare(&url).await;
    let stop = CancellationToken::new();
    let q = Query::start(
        QueryConfig {
            database_url: url,
            grpc_listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            connections: 1,
            ..QueryConfig::default()
        },
        None,
        stop.clone(),
    )
    .await
    .expect("start on TimescaleDB");
    let addr = q.grpc_addr;
    tokio::spawn(q.wait());
    let mut c = QueryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    // Hour by hour: read from readings_hourly. "first" cannot be rebuilt
    // from a rollup, so the same question with it comes from the readings.
    let rolled = c
        .get_aggregates(with_token(&token, agg("1h", &["avg", "max", "count"])))
        .await
        .expect("hourly")
        .into_inner();
    assert_eq!(rolled.source, "readings_hourly");
    let raw = c
        .get_aggregates(with_token(
            &token,
            agg("1h", &["avg", "max", "count", "first"]),
        ))
        .await
        .expect("hourly, raw")
        .into_inner();
    assert_eq!(raw.source, "raw");
    // 48 hours less the silent one and the calibrating one, both ways.
    assert_eq!(rolled.buckets.len(), 46);
    assert_eq!(raw.buckets.len(), 46);
    let late_hour = local(2026, 11, 14, 5, 0);
    for (r, w) in rolled.buckets.iter().zip(&raw.buckets) {
        assert_eq!(at(r), at(w));
        if at(r) == late_hour {
            // Materialized before the late reading: the rollup does not
            // have it until its next refresh; the readings do.
            assert_eq!((r.values.clone(), r.count), (vec![120.0, 120.0, 12.0], 12));
            assert_eq!(w.count, 13);
            assert_eq!(w.values[1], 1000.0);
            continue;
        }
        assert_eq!(r.count, w.count, "{}", at(r));
        assert_eq!(r.lower_bound, w.lower_bound, "{}", at(r));
        assert_eq!(r.coverage, w.coverage, "{}", at(r));
        for (a, b) in r.values.iter().zip(&w.values) {
            assert!((a - b).abs() < 1e-9, "{}: {a} against {b}", at(r));
        }
    }
    // The raw tail, past every refresh: read through the same rollup,
    // the same as from the readings.
    let (t0, t2) = (tail_start(), tail_start() + Duration::hours(2));
    let tail = c
        .get_aggregates(with_token(
            &token,
            agg_over(t0, t2, "1h", &["avg", "max", "count"]),
        ))
        .await
        .expect("tail")
        .into_inner();
    assert_eq!(tail.source, "readings_hourly");
    let values: Vec<_> = tail.buckets.iter().map(|b| b.values.clone()).collect();
    assert_eq!(
        values,
        vec![vec![100.0, 100.0, 12.0], vec![3400.0 / 13.0, 1000.0, 13.0]]
    );
    // Two rollup hours into one bucket, each weighted by its count.
    let two = c
        .get_aggregates(with_token(
            &token,
            agg_over(t0, t2, "2h", &["avg", "sum", "count"]),
        ))
        .await
        .expect("2h")
        .into_inner();
    assert_eq!(two.source, "readings_hourly");
    assert_eq!(two.buckets.len(), 1);
    let v = &two.buckets[0].values;
    assert!((v[0] - 184.0).abs() < 1e-9, "{v:?}");
    assert!((v[1] - 4600.0).abs() < 1e-9, "{v:?}");
    assert_eq!(v[2], 25.0);

    // Local days: readings_daily, materialized before the late reading.
    let daily = c
        .get_aggregates(with_token(&token, agg("1d", &["avg", "count"])))
        .await
        .expect("daily")
        .into_inner();
    assert_eq!(daily.source, "readings_daily");
    assert_eq!(daily.buckets.len(), 2);
    assert_eq!(at(&daily.buckets[0]), local(2026, 11, 14, 0, 0));
    // The 14th: 288 slots, less the calibrating hour's 12.
    assert_eq!(daily.buckets[0].values, vec![120.0, 276.0]);
    // The 15th: 276 (the silent hour) of which 12 are 140 and 12 are 500.
    let day15 = (252.0 * 120.0 + 12.0 * 140.0 + 12.0 * 500.0) / 276.0;
    assert!((daily.buckets[1].values[0] - day15).abs() < 1e-9);
    assert_eq!(daily.buckets[1].values[1], 276.0);
    assert!(daily.buckets[1].lower_bound);

    // A month: from the daily rollup.
    let month = c
        .get_aggregates(with_token(&token, agg("1mo", &["avg", "count"])))
        .await
        .expect("month")
        .into_inner();
    assert_eq!(month.source, "readings_daily");
    assert_eq!(month.buckets.len(), 1);
    let v = &month.buckets[0].values;
    assert!((v[0] - (120.0 + day15) / 2.0).abs() < 1e-9, "{v:?}");
    assert_eq!(v[1], 552.0);

    // Not on whole hours: the readings.
    let five = c
        .get_aggregates(with_token(&token, agg("5m", &["avg"])))
        .await
        .expect("5m")
        .into_inner();
    assert_eq!(five.source, "raw");

    // Raw rows through compressed chunks, the late one included.
    let series = c
        .get_series(with_token(
            &token,
            GetSeriesRequest {
                station_id: "Q-1".into(),
                parameters: vec!["COD".into()],
                range: range(local(2026, 11, 14, 5, 0), local(2026, 11, 14, 6, 0)),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("series")
        .into_inner();
    assert_eq!(series.points.len(), 13);
    assert!(
        series.points.iter().any(|p| p.value == 1000.0
            && p.measured_at.and_then(|t| from_timestamp(&t)) == Some(late_at()))
    );
    stop.cancel();
}
