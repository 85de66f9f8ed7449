//! TimescaleDB's continuous aggregates kept current by the processor.
//!
//! The refresh policies cover only recent days (3 for hours, 7 for days),
//! and a station's backlog can arrive later than that: after a long outage
//! a logger uploads weeks of readings. TimescaleDB logs every write below
//! a rollup's watermark as an invalidation, and a refresh re-materializes
//! only what was invalidated; this task refreshes over all time, up to the
//! last whole bucket, every `storage.refresh_rollups_every`, so late
//! readings reach the rollups the query service reads. It also does the
//! policies' work where no background jobs run.

use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use tokio_util::sync::CancellationToken;

use crate::ProcessorError;
use crate::store::Store;

/// Runs until `shutdown`; a failed round is logged and tried again at the
/// next tick (the rollups are then only late, nothing is lost).
pub async fn run(
    mut store: Store,
    every: Duration,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        for (view, end) in windows(Utc::now()) {
            let started = std::time::Instant::now();
            match store.refresh_rollup(view, end).await {
                Ok(()) => {
                    metrics::histogram!("processor_rollup_refresh_seconds", "view" => view)
                        .record(started.elapsed().as_secs_f64());
                    tracing::debug!(view, until = %end, "rollup refreshed");
                }
                Err(e) => {
                    metrics::counter!("processor_rollup_refresh_failures_total", "view" => view)
                        .increment(1);
                    tracing::warn!(view, error = %e, "refreshing a rollup failed");
                }
            }
        }
    }
}

/// Each rollup and the end of its last whole bucket at `now`: buckets
/// still filling are answered from the raw tail.
fn windows(now: DateTime<Utc>) -> [(&'static str, DateTime<Utc>); 2] {
    let hour = now
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap_or(now);
    // Local days (UTC+7) end at 17:00 UTC.
    let shifted = (now + chrono::Duration::hours(7))
        .duration_trunc(chrono::Duration::days(1))
        .unwrap_or(now);
    [
        ("readings_hourly", hour),
        ("readings_daily", shifted - chrono::Duration::hours(7)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_at_the_last_whole_hour_and_local_day() {
        let now: DateTime<Utc> = "2026-12-06T16:59:30Z".parse().unwrap();
        let [(h, hour), (d, day)] = windows(now);
        assert_eq!(
            (h, hour.to_rfc3339()),
            ("readings_hourly", "2026-12-06T16:00:00+00:00".into())
        );
        // 23:59:30 local: the local day started at 17:00 UTC the day before.
        assert_eq!(
            (d, day.to_rfc3339()),
            ("readings_daily", "2026-12-05T17:00:00+00:00".into())
        );
        let later: DateTime<Utc> = "2026-12-06T17:00:00Z".parse().unwrap();
        assert_eq!(
            windows(later)[1].1.to_rfc3339(),
            "2026-12-06T17:00:00+00:00"
        );
    }
}
