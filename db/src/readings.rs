//! The `readings` table: [`ReadingRow`] is its one definition. The
//! processor writes rows ([`write`], idempotent on the natural key station,
//! parameter, measured_at: invariant 2) with the rejected readings of the
//! same batch ([`insert_rejected`]); alerting's warm-up reads them back
//! ([`since`]).

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, pin_mut};
use quantrac_proto::domain::{DeviceStatus, from_timestamp, to_timestamp};
use quantrac_proto::qc::QcFlag;
use quantrac_proto::v1::{self, RejectedReading};
use serde::{Deserialize, Serialize};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use crate::DbError;

/// One stored reading: canonical parameter code and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRow {
    pub station_id: String,
    /// Canonical code from the registry.
    pub parameter: String,
    /// In the canonical unit.
    pub value: f64,
    /// Canonical unit.
    pub unit: String,
    pub measured_at: DateTime<Utc>,
    pub status: DeviceStatus,
    pub device_flag: String,
    pub qc_flag: QcFlag,
    /// `v1::SourceProtocol` as sent.
    pub source: i32,
    pub received_at: Option<DateTime<Utc>>,
    pub ingest_id: String,
    /// HJ 212 `-ZsRtd`: the analyser's converted value, in the canonical unit.
    pub converted: Option<f64>,
    /// The code as the station sent it, when not the canonical one.
    pub wire_code: Option<String>,
}

impl ReadingRow {
    /// The form on `readings.valid` and the engine's input.
    pub fn to_stored(&self) -> v1::StoredReading {
        v1::StoredReading {
            station_id: self.station_id.clone(),
            parameter: self.parameter.clone(),
            value: self.value,
            unit: self.unit.clone(),
            measured_at: Some(to_timestamp(self.measured_at)),
            status: v1::DeviceStatus::from(self.status) as i32,
            device_flag: self.device_flag.clone(),
            qc_flag: self.qc_flag.as_str().to_owned(),
            source: self.source,
            received_at: self.received_at.map(to_timestamp),
            ingest_id: self.ingest_id.clone(),
            converted: self.converted,
        }
    }
}

/// How a batch reaches the table; see `benches/` for the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMethod {
    /// Binary COPY straight into `readings`; through a staging table and
    /// `INSERT ... SELECT ... ON CONFLICT DO NOTHING` when the batch meets
    /// stored rows.
    Copy,
    /// One `INSERT ... SELECT FROM unnest($1, $2, ...) ON CONFLICT DO
    /// NOTHING` with array parameters (for servers without COPY).
    Unnest,
}

const COLUMNS: &str = "station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source, received_at, ingest_id, converted, wire_code";

const TYPES: [Type; 13] = [
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::FLOAT8,
    Type::TEXT,
];

fn status_code(s: DeviceStatus) -> i16 {
    v1::DeviceStatus::from(s) as i16
}

fn status_of(code: i16) -> Option<DeviceStatus> {
    match v1::DeviceStatus::try_from(i32::from(code)).ok()? {
        v1::DeviceStatus::Measuring => Some(DeviceStatus::Measuring),
        v1::DeviceStatus::Calibrating => Some(DeviceStatus::Calibrating),
        v1::DeviceStatus::Error => Some(DeviceStatus::Error),
        v1::DeviceStatus::Unspecified => None,
    }
}

fn ingest_uuid(s: &str) -> Option<uuid::Uuid> {
    uuid::Uuid::parse_str(s).ok()
}

fn source_code(source: i32) -> i16 {
    i16::try_from(source).unwrap_or(0)
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// New rows in `readings`.
    pub inserted: u64,
    /// Readings for a stored (station, parameter, time) with a different
    /// value, unit or status, newly kept in `reading_conflicts`.
    pub conflicts: u64,
}

/// Writes `rows` inside `tx`. Rows already stored are not written again:
/// an identical one (a redelivery, a replay, a logger resending) is a
/// duplicate; a different one is kept as a conflict.
pub async fn write(
    tx: &mut Transaction<'_>,
    rows: &[ReadingRow],
    method: WriteMethod,
) -> Result<Written, DbError> {
    if rows.is_empty() {
        return Ok(Written::default());
    }
    match method {
        WriteMethod::Copy => copy_readings(tx, rows).await,
        WriteMethod::Unnest => unnest_readings(tx, rows).await,
    }
}

/// Keeps as conflicts the rows of `source` (a relation with the
/// `readings` columns) that disagree with what is stored for their key.
/// Run after the insert, so a batch's own rows are compared too.
async fn record_conflicts(
    tx: &Transaction<'_>,
    source: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let n = tx
        .execute(
            &format!(
                "INSERT INTO reading_conflicts (station_id, parameter, measured_at, stored_value, stored_unit, stored_status, \
                 stored_source, stored_received_at, stored_ingest_id, value, unit, status, source, received_at, ingest_id) \
                 SELECT r.station_id, r.parameter, r.measured_at, r.value, r.unit, r.status, r.source, r.received_at, r.ingest_id, \
                        s.value, s.unit, s.status, s.source, s.received_at, s.ingest_id \
                 FROM {source} JOIN readings r ON r.station_id = s.station_id AND r.parameter = s.parameter \
                      AND r.measured_at = s.measured_at \
                 WHERE (r.value, r.unit, r.status) IS DISTINCT FROM (s.value, s.unit, s.status) \
                 ON CONFLICT DO NOTHING"
            ),
            params,
        )
        .await?;
    if n > 0 {
        metrics::counter!("processor_reading_conflicts_total").increment(n);
        tracing::warn!(
            conflicts = n,
            "readings differ from those already stored for the same station, parameter and time; kept in reading_conflicts"
        );
    }
    Ok(n)
}

/// Binary COPY of `rows` into `table`; the rows the server took.
async fn copy_rows(
    tx: &Transaction<'_>,
    table: &str,
    rows: &[ReadingRow],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!("COPY {table} ({COLUMNS}) FROM STDIN BINARY"))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &TYPES);
    pin_mut!(writer);
    for r in rows {
        let status = status_code(r.status);
        let source = source_code(r.source);
        let qc = r.qc_flag.as_str();
        let id = ingest_uuid(&r.ingest_id);
        let row: [&(dyn ToSql + Sync); 13] = [
            &r.station_id,
            &r.parameter,
            &r.measured_at,
            &r.value,
            &r.unit,
            &status,
            &r.device_flag,
            &qc,
            &source,
            &r.received_at,
            &id,
            &r.converted,
            &r.wire_code,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await
}

/// Readings by COPY. Most batches hold only new readings: they are copied
/// straight into `readings`, inside a savepoint. A batch that meets a row
/// already stored (a replay, a logger resending) is rolled back to the
/// savepoint and goes the slower way, through a staging table and
/// `INSERT ... ON CONFLICT DO NOTHING`. The straight path does half the
/// server's work per row (measured in benches/README.md).
async fn copy_readings(tx: &mut Transaction<'_>, rows: &[ReadingRow]) -> Result<Written, DbError> {
    let direct = tx.savepoint("direct_copy").await?;
    if let Some(n) = copy_direct(&direct, rows).await? {
        direct.commit().await?;
        // Nothing was stored for these keys: no conflict possible.
        return Ok(Written {
            inserted: n,
            conflicts: 0,
        });
    }
    direct.rollback().await?;
    copy_staged(tx, rows).await
}

/// The fast path of [`WriteMethod::Copy`]: `rows` copied straight into
/// `readings`. `None` when some are already stored: the COPY failed and
/// `tx` is aborted, so the caller rolls it (or a savepoint) back and
/// writes through [`copy_staged`]. Without a savepoint of its own, a batch
/// costs two round trips fewer.
pub async fn copy_direct(
    tx: &Transaction<'_>,
    rows: &[ReadingRow],
) -> Result<Option<u64>, DbError> {
    if rows.is_empty() {
        return Ok(Some(0));
    }
    match copy_rows(tx, "readings", rows).await {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            metrics::counter!("processor_copy_fallbacks_total").increment(1);
            tracing::debug!(
                readings = rows.len(),
                "batch holds stored readings; copying through staging"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// [`WriteMethod::Copy`] for a batch that meets stored rows: through a
/// staging table, duplicates skipped and differing rows kept as conflicts.
pub async fn copy_staged(
    tx: &mut Transaction<'_>,
    rows: &[ReadingRow],
) -> Result<Written, DbError> {
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS readings_staging \
         (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
    .await?;
    copy_rows(tx, "readings_staging", rows).await?;
    let n = tx
        .execute(
            &format!(
                "INSERT INTO readings ({COLUMNS}) SELECT {COLUMNS} FROM readings_staging \
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await?;
    let conflicts = record_conflicts(tx, "readings_staging s", &[]).await?;
    Ok(Written {
        inserted: n,
        conflicts,
    })
}

/// A batch as one array per column, for `unnest($1::text[], ...)`.
struct Columns<'a> {
    station: Vec<&'a str>,
    parameter: Vec<&'a str>,
    measured_at: Vec<DateTime<Utc>>,
    value: Vec<f64>,
    unit: Vec<&'a str>,
    status: Vec<i16>,
    flag: Vec<&'a str>,
    qc: Vec<&'a str>,
    source: Vec<i16>,
    received: Vec<Option<DateTime<Utc>>>,
    ids: Vec<Option<uuid::Uuid>>,
    converted: Vec<Option<f64>>,
    wire: Vec<Option<&'a str>>,
}

/// The arrays of [`Columns`] as a row source named `s` with [`COLUMNS`].
const INPUT: &str = "unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::text[], \
     $6::int2[], $7::text[], $8::text[], $9::int2[], $10::timestamptz[], $11::uuid[], $12::float8[], $13::text[])";

impl<'a> Columns<'a> {
    fn of(rows: &'a [ReadingRow]) -> Self {
        Columns {
            station: rows.iter().map(|r| r.station_id.as_str()).collect(),
            parameter: rows.iter().map(|r| r.parameter.as_str()).collect(),
            measured_at: rows.iter().map(|r| r.measured_at).collect(),
            value: rows.iter().map(|r| r.value).collect(),
            unit: rows.iter().map(|r| r.unit.as_str()).collect(),
            status: rows.iter().map(|r| status_code(r.status)).collect(),
            flag: rows.iter().map(|r| r.device_flag.as_str()).collect(),
            qc: rows.iter().map(|r| r.qc_flag.as_str()).collect(),
            source: rows.iter().map(|r| source_code(r.source)).collect(),
            received: rows.iter().map(|r| r.received_at).collect(),
            ids: rows.iter().map(|r| ingest_uuid(&r.ingest_id)).collect(),
            converted: rows.iter().map(|r| r.converted).collect(),
            wire: rows.iter().map(|r| r.wire_code.as_deref()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.station,
            &self.parameter,
            &self.measured_at,
            &self.value,
            &self.unit,
            &self.status,
            &self.flag,
            &self.qc,
            &self.source,
            &self.received,
            &self.ids,
            &self.converted,
            &self.wire,
        ]
    }
}

async fn unnest_readings(tx: &Transaction<'_>, rows: &[ReadingRow]) -> Result<Written, DbError> {
    let columns = Columns::of(rows);
    let params = columns.params();
    let n = tx
        .execute(
            &format!(
                "INSERT INTO readings ({COLUMNS}) SELECT * FROM {INPUT} ON CONFLICT DO NOTHING"
            ),
            &params,
        )
        .await?;
    let conflicts = record_conflicts(tx, &format!("{INPUT} AS s ({COLUMNS})"), &params).await?;
    Ok(Written {
        inserted: n,
        conflicts,
    })
}

/// Replaces a series' row in `latest_readings` when `rows` hold a newer
/// measurement (at most one row per series in `rows`); older ones change
/// nothing, so writers may race and replay. Returns the rows changed.
pub async fn upsert_latest(client: &Client, rows: &[ReadingRow]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let columns = Columns::of(rows);
    Ok(client
        .execute(
            &format!(
                "INSERT INTO latest_readings ({COLUMNS}) SELECT * FROM {INPUT} \
                 ON CONFLICT (station_id, parameter) DO UPDATE SET {LATEST_SET} \
                 WHERE latest_readings.measured_at < excluded.measured_at"
            ),
            &columns.params(),
        )
        .await?)
}

/// Every registered series' newest reading into `latest_readings`, from
/// `readings` (one primary-key probe per series): what the processor runs
/// at start, so an update lost in a crash before its flush is recovered.
pub async fn seed_latest(client: &Client) -> Result<u64, DbError> {
    Ok(client
        .execute(
            &format!(
                "INSERT INTO latest_readings ({COLUMNS}) \
                 SELECT r.* FROM station_parameters sp CROSS JOIN LATERAL \
                   (SELECT {COLUMNS} FROM readings WHERE station_id = sp.station_id AND parameter = sp.code \
                    ORDER BY measured_at DESC LIMIT 1) r \
                 ON CONFLICT (station_id, parameter) DO UPDATE SET {LATEST_SET} \
                 WHERE latest_readings.measured_at < excluded.measured_at"
            ),
            &[],
        )
        .await?)
}

/// Every column but the key, from `excluded`.
const LATEST_SET: &str = "measured_at = excluded.measured_at, value = excluded.value, unit = excluded.unit, \
     status = excluded.status, device_flag = excluded.device_flag, qc_flag = excluded.qc_flag, \
     source = excluded.source, received_at = excluded.received_at, ingest_id = excluded.ingest_id, \
     converted = excluded.converted, wire_code = excluded.wire_code";

/// Rejected readings (raw bytes + reason: invariant 3), skipping replays
/// by their key; the number of new rows.
pub async fn insert_rejected(
    tx: &Transaction<'_>,
    rejected: &[RejectedReading],
) -> Result<u64, DbError> {
    if rejected.is_empty() {
        return Ok(0);
    }
    let key: Vec<&str> = rejected.iter().map(|r| r.key.as_str()).collect();
    let reason: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
    let detail: Vec<&str> = rejected.iter().map(|r| r.detail.as_str()).collect();
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let station: Vec<Option<String>> = rejected.iter().map(|r| nonempty(&r.station_id)).collect();
    let parameter: Vec<Option<String>> = rejected.iter().map(|r| nonempty(&r.parameter)).collect();
    let measured_at: Vec<Option<DateTime<Utc>>> = rejected
        .iter()
        .map(|r| r.measured_at.as_ref().and_then(from_timestamp))
        .collect();
    let raw: Vec<&[u8]> = rejected.iter().map(|r| r.raw.as_slice()).collect();
    let topic: Vec<&str> = rejected.iter().map(|r| r.source_topic.as_str()).collect();
    let partition: Vec<i32> = rejected.iter().map(|r| r.source_partition).collect();
    let offset: Vec<i64> = rejected.iter().map(|r| r.source_offset).collect();
    let n = tx
        .execute(
            "INSERT INTO rejected_readings \
             (key, reason, detail, station_id, parameter, measured_at, raw, source_topic, source_partition, source_offset) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
             $7::bytea[], $8::text[], $9::int4[], $10::int8[]) \
             ON CONFLICT (key) DO NOTHING",
            &[&key, &reason, &detail, &station, &parameter, &measured_at, &raw, &topic, &partition, &offset],
        )
        .await?;
    Ok(n)
}

/// The columns [`from_row`] reads, in its order.
pub(crate) const ROW_COLUMNS: &str = "station_id, parameter, measured_at, value, unit, status, \
     device_flag, qc_flag, source, received_at, coalesce(ingest_id::text, ''), converted, wire_code";

pub(crate) fn from_row(r: &tokio_postgres::Row) -> Result<ReadingRow, DbError> {
    let corrupt = |detail: String| DbError::Corrupt {
        what: "reading",
        detail,
    };
    let code: i16 = r.try_get(5)?;
    let status = status_of(code).ok_or_else(|| corrupt(format!("device status {code}")))?;
    let qc: String = r.try_get(7)?;
    let qc_flag = qc.parse().map_err(|e| corrupt(format!("{e}")))?;
    Ok(ReadingRow {
        station_id: r.try_get(0)?,
        parameter: r.try_get(1)?,
        value: r.try_get(3)?,
        unit: r.try_get(4)?,
        measured_at: r.try_get(2)?,
        status,
        device_flag: r.try_get(6)?,
        qc_flag,
        source: i32::from(r.try_get::<_, i16>(8)?),
        received_at: r.try_get(9)?,
        ingest_id: r.try_get(10)?,
        converted: r.try_get(11)?,
        wire_code: r.try_get(12)?,
    })
}

/// Stored readings measured at or after `since`, in measurement order,
/// streamed (a day of a large fleet does not fit comfortably in memory).
pub async fn since(
    client: &Client,
    since: DateTime<Utc>,
) -> Result<impl Stream<Item = Result<ReadingRow, DbError>> + use<>, DbError> {
    let rows = client
        .query_raw(
            &format!(
                "SELECT {ROW_COLUMNS} FROM readings WHERE measured_at >= $1 ORDER BY measured_at"
            ),
            [since],
        )
        .await?;
    Ok(rows.map(|row| from_row(&row?)))
}

/// A logger's own aggregate (HJ 212 CN 2051 / 2061 / 2031), normalised
/// like a reading: the row of `reported_aggregates`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedRow {
    pub station_id: String,
    pub parameter: String,
    /// minute, hour or day.
    pub kind: &'static str,
    pub period_start: DateTime<Utc>,
    /// 0 when the record does not say.
    pub period_seconds: i32,
    /// In the canonical unit, like `min`, `max` and `converted`.
    pub avg: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// As sent (a cumulative amount, not in the concentration's unit).
    pub total: Option<f64>,
    pub converted: Option<f64>,
    pub unit: String,
    pub status: DeviceStatus,
    pub device_flag: String,
    pub qc_flag: QcFlag,
    pub source: i32,
    pub wire_code: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
    pub ingest_id: String,
}

/// Writes reported aggregates inside `tx`; one already stored for its
/// (station, parameter, kind, period) is a duplicate. The number of new rows.
pub async fn write_reported(tx: &Transaction<'_>, rows: &[ReportedRow]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&ReportedRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<Option<f64>>>();
    let station: Vec<&str> = rows.iter().map(|r| r.station_id.as_str()).collect();
    let parameter: Vec<&str> = rows.iter().map(|r| r.parameter.as_str()).collect();
    let kind: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let start: Vec<DateTime<Utc>> = rows.iter().map(|r| r.period_start).collect();
    let seconds: Vec<i32> = rows.iter().map(|r| r.period_seconds).collect();
    let avg: Vec<f64> = rows.iter().map(|r| r.avg).collect();
    let (min, max, total, converted) = (
        col(|r| r.min),
        col(|r| r.max),
        col(|r| r.total),
        col(|r| r.converted),
    );
    let unit: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
    let status: Vec<i16> = rows.iter().map(|r| status_code(r.status)).collect();
    let flag: Vec<&str> = rows.iter().map(|r| r.device_flag.as_str()).collect();
    let qc: Vec<&str> = rows.iter().map(|r| r.qc_flag.as_str()).collect();
    let source: Vec<i16> = rows.iter().map(|r| source_code(r.source)).collect();
    let wire: Vec<Option<&str>> = rows.iter().map(|r| r.wire_code.as_deref()).collect();
    let received: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.received_at).collect();
    let ids: Vec<Option<uuid::Uuid>> = rows.iter().map(|r| ingest_uuid(&r.ingest_id)).collect();
    let n = tx
        .execute(
            "INSERT INTO reported_aggregates (station_id, parameter, kind, period_start, period_seconds, avg, min, max, \
             total, converted, unit, status, device_flag, qc_flag, source, wire_code, received_at, ingest_id) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[], $6::float8[], \
             $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::text[], $12::int2[], $13::text[], $14::text[], \
             $15::int2[], $16::text[], $17::timestamptz[], $18::uuid[]) ON CONFLICT DO NOTHING",
            &[
                &station, &parameter, &kind, &start, &seconds, &avg, &min, &max, &total, &converted, &unit, &status,
                &flag, &qc, &source, &wire, &received, &ids,
            ],
        )
        .await?;
    if n < rows.len() as u64 {
        // The first record stands (as for readings); a different one for the
        // same period, a logger's recalculation or someone else's, is
        // counted and logged rather than lost without a trace.
        let differing: i64 = tx
            .query_one(
                "SELECT count(*) FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[], \
                 $6::float8[], $7::float8[], $8::float8[]) AS s (station_id, parameter, kind, period_start, avg, min, max, total) \
                 JOIN reported_aggregates r USING (station_id, parameter, kind, period_start) \
                 WHERE (r.avg, r.min, r.max, r.total) IS DISTINCT FROM (s.avg, s.min, s.max, s.total)",
                &[&station, &parameter, &kind, &start, &avg, &min, &max, &total],
            )
            .await?
            .get(0);
        if differing > 0 {
            metrics::counter!("processor_reported_conflicts_total")
                .increment(differing.unsigned_abs());
            tracing::warn!(
                records = differing,
                "reported aggregates differ from those already stored for the same period; the first stands"
            );
        }
    }
    Ok(n)
}
