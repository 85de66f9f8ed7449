//! Property: an aggregate through the API equals the same aggregate
//! computed here, in Rust, from the raw rows, for random ranges,
//! intervals and functions.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Fixture, range, start, with_token};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use quantrac_db::access::Role;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::*;
use quantrac_query::interval::Interval;

type Row = (DateTime<Utc>, f64);

const FUNCTIONS: [&str; 11] = [
    "avg", "min", "max", "sum", "count", "first", "last", "stddev", "twa", "p50", "p90",
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The reference: one bucket's functions from its rows (time-ordered).
fn reference(rows: &[(DateTime<Utc>, f64)]) -> Vec<f64> {
    let n = rows.len() as f64;
    let values: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let sum: f64 = values.iter().sum();
    let avg = sum / n;
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let stddev = if rows.len() < 2 {
        f64::NAN
    } else {
        (values.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let (mut weighted, mut weights) = (0.0, 0.0);
    for w in rows.windows(2) {
        let secs = (w[1].0 - w[0].0).num_milliseconds() as f64 / 1_000.0;
        weighted += w[0].1 * secs;
        weights += secs;
    }
    let twa = if weights > 0.0 {
        weighted / weights
    } else {
        avg
    };
    vec![
        avg,
        sorted[0],
        sorted[sorted.len() - 1],
        sum,
        n,
        values[0],
        values[values.len() - 1],
        stddev,
        twa,
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_aggregates_equal_aggregates_of_the_raw_rows() {
    let f = Fixture::new().await;
    let token = f.token(Role::Analyst).await;
    let raw: Vec<(DateTime<Utc>, f64)> = f
        .db
        .query(
            "SELECT measured_at, value FROM readings WHERE station_id = 'Q-1' AND parameter = 'pH' AND qc_flag = 'valid' ORDER BY measured_at",
            &[],
        )
        .await
        .expect("raw")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let client = f.client().await;
    let handle = tokio::runtime::Handle::current();
    let strategy = (
        0i64..2_880,
        1i64..2_880,
        prop::sample::select(vec!["5m", "15m", "1h", "3h", "1d", "7d"]),
    );
    let mut runner = TestRunner::new(Config::with_cases(40));
    let result = runner.run(&strategy, |(offset, length, interval)| {
        let from = start() + Duration::minutes(offset);
        let to = from + Duration::minutes(length);
        let iv: Interval = interval.parse().expect("interval");
        let mut c = client.clone();
        let answer = tokio::task::block_in_place(|| {
            handle.block_on(c.get_aggregates(with_token(
                &token,
                GetAggregatesRequest {
                    station_id: "Q-1".into(),
                    parameter: "pH".into(),
                    range: range(from, to),
                    interval: interval.into(),
                    functions: FUNCTIONS.map(String::from).to_vec(),
                    fill: Fill::None as i32,
                    max_gap_buckets: 0,
                    include_flagged: false,
                },
            )))
        })
        .map_err(|e| TestCaseError::fail(format!("call failed: {e}")))?
        .into_inner();
        // The reference buckets, by the interval's own floor.
        let mut expected: Vec<(DateTime<Utc>, Vec<Row>)> = Vec::new();
        for &(t, v) in raw.iter().filter(|(t, _)| *t >= from && *t < to) {
            let b = iv.floor(t);
            match expected.last_mut() {
                Some((start, rows)) if *start == b => rows.push((t, v)),
                _ => expected.push((b, vec![(t, v)])),
            }
        }
        prop_assert_eq!(answer.buckets.len(), expected.len(), "bucket count");
        for (got, (b, rows)) in answer.buckets.iter().zip(&expected) {
            prop_assert_eq!(got.start.as_ref().and_then(from_timestamp), Some(*b));
            prop_assert_eq!(got.count, rows.len() as u64);
            let want = reference(rows);
            for (i, name) in FUNCTIONS.iter().enumerate() {
                prop_assert!(
                    close(got.values[i], want[i]),
                    "{} in bucket {}: api {} rust {}",
                    name,
                    b,
                    got.values[i],
                    want[i]
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
