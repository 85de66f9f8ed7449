//! The feed to the national system (migration 0024): the processor queues
//! the (station, measurement time) of every reading it stores in the same
//! transaction ([`enqueue`]); the forwarder takes what is due ([`due`]),
//! renders the time's Circular 10 file from `readings`, and records it sent
//! ([`sent`]) or failed ([`failed`]). A key is deleted only at the version
//! the forwarder read, so a reading stored while its file was on the way
//! queues the file again.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Transaction};

use crate::DbError;
use crate::readings::ReadingRow;

/// Queues the station and time of each of `rows` (stored in `tx`).
pub async fn enqueue(tx: &Transaction<'_>, rows: &[ReadingRow]) -> Result<u64, DbError> {
    // One key once per statement: ON CONFLICT DO UPDATE may not touch a
    // row twice.
    let keys: BTreeSet<(&str, DateTime<Utc>)> = rows
        .iter()
        .map(|r| (r.station_id.as_str(), r.measured_at))
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let (stations, times): (Vec<&str>, Vec<DateTime<Utc>>) = keys.into_iter().unzip();
    Ok(tx
        .execute(
            "INSERT INTO forward_outbox (station_id, measured_at) \
             SELECT * FROM unnest($1::text[], $2::timestamptz[]) \
             ON CONFLICT (station_id, measured_at) DO UPDATE SET \
             version = forward_outbox.version + 1, next_attempt_at = now()",
            &[&stations, &times],
        )
        .await?)
}

/// A queued file.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub station_id: String,
    pub measured_at: DateTime<Utc>,
    pub version: i64,
    pub attempts: i32,
}

/// Up to `limit` keys due now and queued at least `settle` ago (so that a
/// time's readings arriving in several writes go in one file), oldest
/// measurement first. Times are the database's, as the queue's are.
pub async fn due(
    client: &Client,
    settle: std::time::Duration,
    limit: i64,
) -> Result<Vec<Due>, DbError> {
    let rows = client
        .query(
            "SELECT station_id, measured_at, version, attempts FROM forward_outbox \
             WHERE next_attempt_at <= now() AND enqueued_at <= now() - make_interval(secs => $1) \
             ORDER BY measured_at, station_id LIMIT $2",
            &[&settle.as_secs_f64(), &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Due {
            station_id: r.get(0),
            measured_at: r.get(1),
            version: r.get(2),
            attempts: r.get(3),
        })
        .collect())
}

/// The stored readings of one station at one time, by parameter.
pub async fn readings_at(
    client: &Client,
    station: &str,
    at: DateTime<Utc>,
) -> Result<Vec<ReadingRow>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM readings WHERE station_id = $1 AND measured_at = $2 \
                 ORDER BY parameter",
                crate::readings::ROW_COLUMNS
            ),
            &[&station, &at],
        )
        .await?;
    rows.iter().map(crate::readings::from_row).collect()
}

/// The digest of the file last delivered for a key, if any.
pub async fn sent_digest(
    client: &Client,
    station: &str,
    at: DateTime<Utc>,
) -> Result<Option<Vec<u8>>, DbError> {
    Ok(client
        .query_opt(
            "SELECT sha256 FROM forward_sent WHERE station_id = $1 AND measured_at = $2",
            &[&station, &at],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Records `due` delivered as `file_name` and clears it from the outbox
/// unless it was queued again meanwhile.
pub async fn sent(
    client: &mut Client,
    due: &Due,
    file_name: &str,
    sha256: &[u8],
    lines: i32,
) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO forward_sent (station_id, measured_at, file_name, sha256, lines) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (station_id, measured_at) DO UPDATE SET \
         file_name = EXCLUDED.file_name, sha256 = EXCLUDED.sha256, lines = EXCLUDED.lines, \
         sent_at = now()",
        &[
            &due.station_id,
            &due.measured_at,
            &file_name,
            &sha256,
            &lines,
        ],
    )
    .await?;
    done(&tx, due).await?;
    tx.commit().await?;
    Ok(())
}

/// Clears `due` from the outbox (at its version) with nothing to send.
pub async fn drop_due(client: &mut Client, due: &Due) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    done(&tx, due).await?;
    tx.commit().await?;
    Ok(())
}

async fn done(tx: &Transaction<'_>, due: &Due) -> Result<(), DbError> {
    tx.execute(
        "DELETE FROM forward_outbox WHERE station_id = $1 AND measured_at = $2 AND version = $3",
        &[&due.station_id, &due.measured_at, &due.version],
    )
    .await?;
    Ok(())
}

/// Records a failed attempt; the key is tried again `retry_in` from now.
pub async fn failed(
    client: &Client,
    due: &Due,
    error: &str,
    retry_in: std::time::Duration,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE forward_outbox SET attempts = attempts + 1, last_error = $4, \
             next_attempt_at = now() + make_interval(secs => $5) \
             WHERE station_id = $1 AND measured_at = $2 AND version = $3",
            &[
                &due.station_id,
                &due.measured_at,
                &due.version,
                &error,
                &retry_in.as_secs_f64(),
            ],
        )
        .await?;
    Ok(())
}

/// How much is queued and since when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_enqueued_at: Option<DateTime<Utc>>,
}

pub async fn backlog(client: &Client) -> Result<Backlog, DbError> {
    let row = client
        .query_one("SELECT count(*), min(enqueued_at) FROM forward_outbox", &[])
        .await?;
    Ok(Backlog {
        pending: row.get(0),
        oldest_enqueued_at: row.get(1),
    })
}

/// One station's delivery status (the `forward_status` view).
#[derive(Debug, Clone, PartialEq)]
pub struct StationStatus {
    pub station_id: String,
    pub last_measured_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub pending: i64,
    pub oldest_enqueued_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub async fn status(client: &Client) -> Result<Vec<StationStatus>, DbError> {
    let rows = client
        .query(
            "SELECT station_id, last_measured_at, last_sent_at, pending, oldest_enqueued_at, \
             last_error FROM forward_status ORDER BY station_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StationStatus {
            station_id: r.get(0),
            last_measured_at: r.get(1),
            last_sent_at: r.get(2),
            pending: r.get(3),
            oldest_enqueued_at: r.get(4),
            last_error: r.get(5),
        })
        .collect())
}

/// Forgets deliveries recorded before `before`; the rows deleted.
pub async fn forget_sent(client: &Client, before: DateTime<Utc>) -> Result<u64, DbError> {
    Ok(client
        .execute("DELETE FROM forward_sent WHERE sent_at < $1", &[&before])
        .await?)
}
