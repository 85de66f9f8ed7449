//! `station_events`: what stations say about themselves (HJ 212 restart
//! and status notices). The processor writes them ([`write`], idempotent:
//! a resent notice is the same event); the query service lists them with
//! the data-gap alerts as a station's events. And `raw_files`, the files
//! stations uploaded, kept unchanged as evidence ([`write_files`]), and
//! `raw_frames`, the digests of the frames that came over TCP and MQTT
//! ([`write_frames`]).

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::DbError;

/// One station event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// The registry's id (aliases resolved).
    pub station_id: String,
    /// "restart", "device_status", "run_time" or "device_info".
    pub kind: String,
    /// The command as sent (HJ 212 CN).
    pub code: String,
    pub at: DateTime<Utc>,
    /// `at` is the station's own time (false: its reception).
    pub station_time: bool,
    pub detail: String,
    /// `v1::SourceProtocol` as sent.
    pub source: i32,
    pub received_at: Option<DateTime<Utc>>,
}

/// Writes `rows`; events already stored are left as they are. Returns the
/// new rows.
pub async fn write(client: &Client, rows: &[EventRow]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let station: Vec<&str> = rows.iter().map(|r| r.station_id.as_str()).collect();
    let kind: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let code: Vec<&str> = rows.iter().map(|r| r.code.as_str()).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
    let station_time: Vec<bool> = rows.iter().map(|r| r.station_time).collect();
    let detail: Vec<&str> = rows.iter().map(|r| r.detail.as_str()).collect();
    let source: Vec<i16> = rows
        .iter()
        .map(|r| i16::try_from(r.source).unwrap_or(0))
        .collect();
    let received: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.received_at).collect();
    Ok(client
        .execute(
            "INSERT INTO station_events (station_id, kind, code, at, station_time, detail, source, received_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[], $6::text[], \
                                  $7::int2[], $8::timestamptz[]) \
             ON CONFLICT DO NOTHING",
            &[&station, &kind, &code, &at, &station_time, &detail, &source, &received],
        )
        .await?)
}

/// A file a station uploaded, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub station_id: String,
    pub name: String,
    pub content: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// `v1::SourceProtocol` as sent.
    pub source: i32,
}

/// The digest of a frame a station sent (see `quantrac.v1.FrameDigest`),
/// with its readings' station and reception time.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRow {
    pub station_id: String,
    pub received_at: DateTime<Utc>,
    pub sha256: Vec<u8>,
    pub size: u32,
    pub origin: String,
    /// `v1::SourceProtocol` as sent.
    pub source: i32,
}

/// Writes frame digests; one already kept is left as it is. Returns the
/// new rows.
pub async fn write_frames(
    client: &impl tokio_postgres::GenericClient,
    frames: &[FrameRow],
) -> Result<u64, DbError> {
    if frames.is_empty() {
        return Ok(0);
    }
    let station: Vec<&str> = frames.iter().map(|f| f.station_id.as_str()).collect();
    let received: Vec<DateTime<Utc>> = frames.iter().map(|f| f.received_at).collect();
    let sha256: Vec<&[u8]> = frames.iter().map(|f| f.sha256.as_slice()).collect();
    let size: Vec<i64> = frames.iter().map(|f| i64::from(f.size)).collect();
    let origin: Vec<&str> = frames.iter().map(|f| f.origin.as_str()).collect();
    let source: Vec<i16> = frames
        .iter()
        .map(|f| i16::try_from(f.source).unwrap_or(0))
        .collect();
    // Typed parameters: one round trip on every batch's way, where a
    // statement prepared first would take two.
    Ok(client
        .execute_typed(
            "INSERT INTO raw_frames (station_id, received_at, sha256, size, origin, source) \
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bytea[], $4::bigint[], \
             $5::text[], $6::smallint[]) ON CONFLICT DO NOTHING",
            &[
                (&station, Type::TEXT_ARRAY),
                (&received, Type::TIMESTAMPTZ_ARRAY),
                (&sha256, Type::BYTEA_ARRAY),
                (&size, Type::INT8_ARRAY),
                (&origin, Type::TEXT_ARRAY),
                (&source, Type::INT2_ARRAY),
            ],
        )
        .await?)
}

/// Writes `files` with their SHA-256; a file already kept (same station,
/// name and bytes) is left as it is. Returns the new rows.
pub async fn write_files(client: &Client, files: &[FileRow]) -> Result<u64, DbError> {
    use sha2::Digest as _;
    let mut n = 0;
    for f in files {
        let digest = sha2::Sha256::digest(&f.content).to_vec();
        n += client
            .execute(
                "INSERT INTO raw_files (station_id, name, sha256, content, received_at, source) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &f.station_id,
                    &f.name,
                    &digest,
                    &f.content,
                    &f.received_at,
                    &i16::try_from(f.source).unwrap_or(0),
                ],
            )
            .await?;
    }
    Ok(n)
}
