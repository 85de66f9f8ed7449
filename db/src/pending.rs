//! Single-node mode's record of stored readings the alerting engine has not
//! judged yet (`alert_pending`): one row per (processor write, station),
//! the measurement times it covers. The processor records it in the
//! transaction that stores the readings; alerting deletes it once the
//! alert changes are recorded; a restart judges what is still covered,
//! however late the readings were (migration 0022 says why).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Transaction};

use crate::DbError;
use crate::readings::ReadingRow;

/// One write's readings of one station, not judged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub batch: i64,
    pub station_id: String,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// Records `rows` (stored in `tx`) as not judged yet under `batch`; a
/// second write under the same batch (a batch stored in parts) widens the
/// station's range.
pub async fn record(tx: &Transaction<'_>, batch: i64, rows: &[ReadingRow]) -> Result<(), DbError> {
    let mut ranges: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for r in rows {
        let e = ranges
            .entry(r.station_id.as_str())
            .or_insert((r.measured_at, r.measured_at));
        e.0 = e.0.min(r.measured_at);
        e.1 = e.1.max(r.measured_at);
    }
    if ranges.is_empty() {
        return Ok(());
    }
    let stations: Vec<&str> = ranges.keys().copied().collect();
    let (first, last): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) = ranges.values().copied().unzip();
    tx.execute(
        "INSERT INTO alert_pending (batch, station_id, first_at, last_at) \
         SELECT $1, * FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[]) \
         ON CONFLICT (batch, station_id) DO UPDATE SET \
         first_at = LEAST(alert_pending.first_at, EXCLUDED.first_at), \
         last_at = GREATEST(alert_pending.last_at, EXCLUDED.last_at)",
        &[&batch, &stations, &first, &last],
    )
    .await?;
    Ok(())
}

/// Everything not judged yet.
pub async fn all(client: &Client) -> Result<Vec<Pending>, DbError> {
    let rows = client
        .query(
            "SELECT batch, station_id, first_at, last_at FROM alert_pending ORDER BY first_at",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Pending {
            batch: r.get(0),
            station_id: r.get(1),
            first_at: r.get(2),
            last_at: r.get(3),
        })
        .collect())
}

/// A station's stored readings measured in `[from, to)`, oldest first.
pub async fn readings_between(
    client: &Client,
    station: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ReadingRow>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM readings WHERE station_id = $1 AND measured_at >= $2 \
                 AND measured_at < $3 ORDER BY measured_at",
                crate::readings::ROW_COLUMNS
            ),
            &[&station, &from, &to],
        )
        .await?;
    rows.iter().map(crate::readings::from_row).collect()
}

/// Judged: the rows `(batch, station)` go.
pub async fn judged(client: &Client, done: &[(i64, &str)]) -> Result<u64, DbError> {
    if done.is_empty() {
        return Ok(0);
    }
    let (batches, stations): (Vec<i64>, Vec<&str>) = done.iter().copied().unzip();
    Ok(client
        .execute(
            "DELETE FROM alert_pending WHERE (batch, station_id) IN \
             (SELECT * FROM unnest($1::bigint[], $2::text[]))",
            &[&batches, &stations],
        )
        .await?)
}
