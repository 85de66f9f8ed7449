//! `latest_readings`, the newest reading of every series, kept off the
//! batch path: each committed batch's newest reading per series is noted in
//! memory ([`Latest::observe`], a hash-map update), and [`run`] upserts
//! what changed every `storage.latest_every`. An upsert per reading inside
//! the batch's transaction cost 39% of the store rate.
//!
//! What a crash loses (noted, not yet flushed) is recovered at start:
//! [`run`] first seeds the table from `readings`. The table lags the
//! readings by at most one interval. Its size, and the map's, is the
//! number of registered series.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quantrac_db::ReadingRow;
use tokio_util::sync::CancellationToken;

use crate::ProcessorError;
use crate::store::Store;

/// Newest readings noted since the last flush, by station then parameter
/// (looked up by `&str`: noting a reading allocates only for a new series).
#[derive(Debug, Default)]
pub struct Latest {
    pending: Mutex<Pending>,
}

type Pending = HashMap<String, HashMap<String, ReadingRow>>;

impl Latest {
    /// Notes committed rows; a series keeps its newest (the first seen of
    /// equal times: the stored one, since a later different value for the
    /// same time is a conflict, not stored).
    pub fn observe(&self, rows: &[ReadingRow]) {
        if rows.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for r in rows {
            keep_newest(&mut pending, r);
        }
    }

    fn take(&self) -> Vec<ReadingRow> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .drain()
            .flat_map(|(_, series)| series.into_values())
            .collect()
    }

    /// A failed flush's rows back, unless newer ones came meanwhile.
    fn put_back(&self, rows: Vec<ReadingRow>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for r in &rows {
            keep_newest(&mut pending, r);
        }
    }
}

fn keep_newest(pending: &mut Pending, r: &ReadingRow) {
    let station = match pending.get_mut(r.station_id.as_str()) {
        Some(s) => s,
        None => pending.entry(r.station_id.clone()).or_default(),
    };
    match station.get_mut(r.parameter.as_str()) {
        Some(held) if held.measured_at >= r.measured_at => {}
        Some(held) => *held = r.clone(),
        None => {
            station.insert(r.parameter.clone(), r.clone());
        }
    }
}

/// Seeds the table, then flushes every `every` until `shutdown` (and once
/// more then). Failures are logged and retried at the next tick: the
/// table is then only late.
pub async fn run(
    mut store: Store,
    latest: Arc<Latest>,
    every: Duration,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seeded = false;
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        if !seeded {
            match store.seed_latest().await {
                Ok(n) => {
                    seeded = true;
                    tracing::info!(series = n, "latest readings seeded from readings");
                }
                Err(e) => tracing::warn!(error = %e, "seeding latest readings failed"),
            }
        }
        let rows = latest.take();
        if !rows.is_empty() {
            match store.upsert_latest(&rows).await {
                Ok(n) => {
                    metrics::counter!("processor_latest_updated_total").increment(n);
                }
                Err(e) => {
                    metrics::counter!("processor_latest_flush_failures_total").increment(1);
                    tracing::warn!(error = %e, series = rows.len(), "updating latest readings failed");
                    latest.put_back(rows);
                }
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use quantrac_proto::domain::DeviceStatus;
    use quantrac_proto::qc::QcFlag;

    fn row(station: &str, at: &str, value: f64) -> ReadingRow {
        ReadingRow {
            station_id: station.into(),
            parameter: "COD".into(),
            value,
            unit: "mg/L".into(),
            measured_at: at.parse::<DateTime<Utc>>().expect("time"),
            status: DeviceStatus::Measuring,
            device_flag: "00".into(),
            qc_flag: QcFlag::Valid,
            source: 1,
            received_at: None,
            ingest_id: String::new(),
            converted: None,
            wire_code: None,
        }
    }

    #[test]
    fn keeps_the_newest_per_series_and_the_first_of_equal_times() {
        let l = Latest::default();
        l.observe(&[
            row("A", "2026-12-01T00:05:00Z", 2.0),
            row("A", "2026-12-01T00:00:00Z", 1.0),
            row("B", "2026-12-01T00:00:00Z", 9.0),
        ]);
        l.observe(&[row("A", "2026-12-01T00:05:00Z", 7.0)]);
        let mut got: Vec<_> = l
            .take()
            .into_iter()
            .map(|r| (r.station_id, r.value))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, vec![("A".to_string(), 2.0), ("B".to_string(), 9.0)]);
        assert!(l.take().is_empty(), "taken once");
        // A failed flush's rows come back, under newer ones noted since.
        l.observe(&[row("A", "2026-12-01T00:10:00Z", 3.0)]);
        l.put_back(vec![
            row("A", "2026-12-01T00:05:00Z", 2.0),
            row("B", "2026-12-01T00:00:00Z", 9.0),
        ]);
        let mut got: Vec<_> = l
            .take()
            .into_iter()
            .map(|r| (r.station_id, r.value))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, vec![("A".to_string(), 3.0), ("B".to_string(), 9.0)]);
    }
}
