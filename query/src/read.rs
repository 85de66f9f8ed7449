//! The query service's reads: one function per question, each a single
//! SQL statement over the shared tables (`quantrac_db`'s migrations).
//! Nothing here validates a request or knows about gRPC; `grpc` does.

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use quantrac_proto::domain::StationKind;
use quantrac_proto::v1;
use tokio_postgres::Client;

use crate::QueryError;

/// What a bucket is reduced to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Func {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
    Stddev,
    /// Time-weighted average: each value holds until the next reading in
    /// its bucket; the bucket's last reading weighs nothing unless it is
    /// the only one.
    Twa,
    /// Continuous percentile, 0..1.
    Percentile(f64),
}

impl std::str::FromStr for Func {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "avg" | "mean" => Func::Avg,
            "min" => Func::Min,
            "max" => Func::Max,
            "sum" => Func::Sum,
            "count" => Func::Count,
            "first" => Func::First,
            "last" => Func::Last,
            "stddev" => Func::Stddev,
            "twa" => Func::Twa,
            p if p.starts_with('p') => {
                let n: f64 = p[1..]
                    .parse()
                    .map_err(|_| format!("{p:?}: a percentile is p0 to p100, e.g. p95"))?;
                if !(0.0..=100.0).contains(&n) {
                    return Err(format!("{p:?}: a percentile is p0 to p100"));
                }
                Func::Percentile(n / 100.0)
            }
            other => {
                return Err(format!(
                    "unknown function {other:?}: avg, min, max, sum, count, first, last, stddev, twa, pNN"
                ));
            }
        })
    }
}

impl Func {
    /// Its SQL over a rollup's buckets (`n` = the values a bucket counts);
    /// `None` for what a rollup cannot rebuild.
    fn rollup_sql(self) -> Option<&'static str> {
        Some(match self {
            Func::Avg => "sum(avg * n) / sum(n)",
            Func::Min => "min(min)",
            Func::Max => "max(max)",
            Func::Sum => "sum(avg * n)",
            Func::Count => "sum(n)::float8",
            _ => return None,
        })
    }

    /// Its SQL; the only text of a request that reaches a statement is a
    /// percentile, and that is a parsed number.
    fn sql(self) -> String {
        match self {
            Func::Avg => "avg(value)".into(),
            Func::Min => "min(value)".into(),
            Func::Max => "max(value)".into(),
            Func::Sum => "sum(value)".into(),
            Func::Count => "count(*)::float8".into(),
            Func::First => "(array_agg(value ORDER BY measured_at))[1]".into(),
            Func::Last => "(array_agg(value ORDER BY measured_at DESC))[1]".into(),
            Func::Stddev => "stddev_samp(value)".into(),
            Func::Twa => "coalesce(sum(value * w) / nullif(sum(w), 0), avg(value))".into(),
            Func::Percentile(p) => {
                format!("percentile_cont({p:.6}::float8) WITHIN GROUP (ORDER BY value)")
            }
        }
    }
}

/// Where buckets are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The readings themselves.
    Raw,
    /// TimescaleDB's hourly continuous aggregate (with its raw tail).
    Hourly,
    /// The daily one, whose days start at local midnight.
    Daily,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Raw => "raw",
            Source::Hourly => "readings_hourly",
            Source::Daily => "readings_daily",
        }
    }

    /// The source for a grid: a rollup when rollups exist, the caller
    /// wants only the values a rollup counts, every function can be
    /// rebuilt from a rollup's columns (avg, min, max, count; sum as avg ×
    /// count), and every bucket edge and the range's ends fall on the
    /// rollup's buckets (whole local days, or whole hours). Otherwise raw.
    pub fn choose(
        rollups: bool,
        grid: &[DateTime<Utc>],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        functions: &[Func],
        include_flagged: bool,
    ) -> Source {
        let rebuildable = functions.iter().all(|f| {
            matches!(
                f,
                Func::Avg | Func::Min | Func::Max | Func::Sum | Func::Count
            )
        });
        if !rollups || include_flagged || !rebuildable {
            return Source::Raw;
        }
        let aligned = |step: i64, offset: i64| {
            [start, end].iter().chain(grid).all(|t| {
                t.timestamp_subsec_nanos() == 0 && (t.timestamp() + offset).rem_euclid(step) == 0
            })
        };
        // Local midnight is 17:00 UTC (UTC+7, no daylight saving).
        if aligned(86_400, 7 * 3_600) {
            Source::Daily
        } else if aligned(3_600, 0) {
            Source::Hourly
        } else {
            Source::Raw
        }
    }
}

/// Whether this database has the rollups [`Source::choose`] may pick:
/// both continuous aggregates, answering with their raw tail (real-time
/// aggregation; a materialized-only one would miss the newest hours).
pub async fn rollups_available(client: &Client) -> Result<bool, QueryError> {
    let timescale: bool = client
        .query_one(
            "SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !timescale {
        return Ok(false);
    }
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates \
             WHERE view_schema = current_schema() AND view_name IN ('readings_hourly', 'readings_daily') \
             AND NOT materialized_only",
            &[],
        )
        .await?
        .get(0);
    Ok(n == 2)
}

/// Flags an aggregate or a compliance average counts: a saturated
/// analyser's value is a lower bound, evidence of an exceedance.
const COUNTED: &str = "qc_flag IN ('valid', 'above_range')";

/// A bucket as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketRow {
    /// Index into the grid.
    pub index: usize,
    pub values: Vec<Option<f64>>,
    pub count: u64,
    pub valid: u64,
    pub above_range: u64,
}

/// Buckets of one parameter over [start, end), by the grid's starts, from
/// `source` (see [`Source::choose`]).
#[allow(clippy::too_many_arguments)]
pub async fn aggregate(
    client: &Client,
    source: Source,
    station: &str,
    parameter: &str,
    grid: &[DateTime<Utc>],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    functions: &[Func],
    include_flagged: bool,
) -> Result<Vec<BucketRow>, QueryError> {
    let sql = match source {
        Source::Raw => raw_sql(functions, include_flagged),
        Source::Hourly | Source::Daily => rollup_sql(source.label(), functions)?,
    };
    let rows = client
        .query(&sql, &[&station, &parameter, &grid, &start, &end])
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let b: i32 = r.get(0);
        // width_bucket counts from 1 for the first threshold.
        let Some(index) = usize::try_from(b).ok().and_then(|b| b.checked_sub(1)) else {
            continue;
        };
        let values = (0..functions.len())
            .map(|i| r.get::<_, Option<f64>>(4 + i))
            .collect();
        out.push(BucketRow {
            index,
            values,
            count: r.get::<_, i64>(1) as u64,
            valid: r.get::<_, i64>(2) as u64,
            above_range: r.get::<_, i64>(3) as u64,
        });
    }
    Ok(out)
}

/// The grid's buckets rebuilt from a rollup's: the counted values' average
/// weighted by their number, the extremes of the extremes. A rollup bucket
/// holding only flagged readings makes no bucket, as in [`raw_sql`].
fn rollup_sql(view: &str, functions: &[Func]) -> Result<String, QueryError> {
    let selected = functions
        .iter()
        .map(|f| {
            f.rollup_sql()
                .ok_or_else(|| QueryError::Corrupt(format!("{f:?} cannot be read from {view}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        "SELECT b, sum(n)::int8, sum(valid_count)::int8, sum(above_range_count)::int8{comma}{list} \
         FROM (SELECT width_bucket(bucket, $3::timestamptz[]) AS b, avg, min, max, valid_count, above_range_count, \
                      valid_count + above_range_count AS n \
               FROM {view} WHERE station_id = $1 AND parameter = $2 AND bucket >= $4 AND bucket < $5) t \
         GROUP BY b HAVING sum(n) > 0 ORDER BY b",
        comma = if selected.is_empty() { "" } else { ", " },
        list = selected.join(", "),
    ))
}

/// The grid's buckets from the readings.
fn raw_sql(functions: &[Func], include_flagged: bool) -> String {
    let selected: Vec<String> = functions.iter().map(|f| f.sql()).collect();
    let twa = functions.contains(&Func::Twa);
    let weight = if twa {
        ", extract(epoch FROM (lead(measured_at) OVER (PARTITION BY width_bucket(measured_at, $3::timestamptz[]) \
         ORDER BY measured_at) - measured_at)) AS w"
    } else {
        ""
    };
    let flags = if include_flagged { "TRUE" } else { COUNTED };
    format!(
        "SELECT b, count(*), count(*) FILTER (WHERE qc_flag = 'valid'), count(*) FILTER (WHERE qc_flag = 'above_range'){comma}{list} \
         FROM (SELECT width_bucket(measured_at, $3::timestamptz[]) AS b, measured_at, value, qc_flag{weight} \
               FROM readings WHERE station_id = $1 AND parameter = $2 AND measured_at >= $4 AND measured_at < $5 AND {flags}) t \
         GROUP BY b ORDER BY b",
        comma = if selected.is_empty() { "" } else { ", " },
        list = selected.join(", "),
    )
}

/// A station's kind and zone, if it is registered.
pub async fn station(client: &Client, id: &str) -> Result<Option<String>, QueryError> {
    Ok(client
        .query_opt("SELECT industrial_zone FROM stations WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0)))
}

/// A registered parameter of a station.
#[derive(Debug, Clone)]
pub struct ParameterRow {
    pub code: String,
    pub unit: String,
    pub expected_interval_s: i32,
}

pub async fn parameters(client: &Client, station: &str) -> Result<Vec<ParameterRow>, QueryError> {
    let rows = client
        .query(
            "SELECT code, unit, expected_interval_s FROM station_parameters WHERE station_id = $1 ORDER BY code",
            &[&station],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ParameterRow {
            code: r.get(0),
            unit: r.get(1),
            expected_interval_s: r.get(2),
        })
        .collect())
}

/// A permit limit as registered.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitRow {
    pub parameter: String,
    pub effective_from: NaiveDate,
    pub limit_min: Option<f64>,
    pub limit_max: Option<f64>,
    pub regulation: String,
    pub column: String,
    /// The permit's last day, if it has one.
    pub effective_to: Option<NaiveDate>,
    pub permit_number: String,
    pub authority: String,
    /// single, 1h or 24h.
    pub averaging: String,
    /// The O₂ percentage the limit's concentration is corrected to.
    pub reference_o2: Option<f64>,
}

/// Every limit of a station, by parameter and date.
pub async fn limits(client: &Client, station: &str) -> Result<Vec<LimitRow>, QueryError> {
    let mut by_station = limits_by_station(client, &[station.to_owned()]).await?;
    Ok(by_station.remove(station).unwrap_or_default())
}

/// Every limit of the stations named, by station (one statement).
pub async fn limits_by_station(
    client: &Client,
    stations: &[String],
) -> Result<std::collections::HashMap<String, Vec<LimitRow>>, QueryError> {
    let rows = client
        .query(
            "SELECT station_id, parameter, effective_from, limit_min, effective_max, regulation, column_name, \
             effective_to, coalesce(permit_number, ''), coalesce(authority, ''), averaging, reference_o2 \
             FROM permit_limits WHERE station_id = ANY($1) ORDER BY station_id, parameter, effective_from",
            &[&stations],
        )
        .await?;
    let mut out: std::collections::HashMap<String, Vec<LimitRow>> =
        std::collections::HashMap::new();
    for r in &rows {
        out.entry(r.get(0)).or_default().push(LimitRow {
            parameter: r.get(1),
            effective_from: r.get(2),
            limit_min: r.get(3),
            limit_max: r.get(4),
            regulation: r.get(5),
            column: r.get(6),
            effective_to: r.get(7),
            permit_number: r.get(8),
            authority: r.get(9),
            averaging: r.get(10),
            reference_o2: r.get(11),
        });
    }
    Ok(out)
}

/// The instruments of the stations named, by station (one statement).
pub async fn instruments_by_station(
    client: &Client,
    stations: &[String],
) -> Result<std::collections::HashMap<String, Vec<v1::Instrument>>, QueryError> {
    let rows = client
        .query(
            "SELECT station_id, name, parameters, calibrated_on, calibration_valid_to, inspected_on, \
             inspection_valid_to FROM station_instruments WHERE station_id = ANY($1) ORDER BY station_id, name",
            &[&stations],
        )
        .await?;
    let date = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let mut out: std::collections::HashMap<String, Vec<v1::Instrument>> =
        std::collections::HashMap::new();
    for r in &rows {
        out.entry(r.get(0)).or_default().push(v1::Instrument {
            name: r.get(1),
            parameters: r.get(2),
            calibrated_on: date(r.get(3)),
            calibration_valid_to: date(r.get(4)),
            inspected_on: date(r.get(5)),
            inspection_valid_to: date(r.get(6)),
        });
    }
    Ok(out)
}

/// Stations (of a zone), with parameters.
pub async fn stations(client: &Client, zone: &str) -> Result<Vec<v1::Station>, QueryError> {
    let rows = client
        .query(
            "SELECT s.id, s.name, s.facility, s.industrial_zone, s.province, s.latitude, s.longitude, s.kind, \
                    coalesce(array_agg(p.code ORDER BY p.code) FILTER (WHERE p.code IS NOT NULL), '{}'), \
                    coalesce(array_agg(p.unit ORDER BY p.code) FILTER (WHERE p.code IS NOT NULL), '{}'), \
                    coalesce(array_agg(p.range_min ORDER BY p.code) FILTER (WHERE p.code IS NOT NULL), '{}'), \
                    coalesce(array_agg(p.range_max ORDER BY p.code) FILTER (WHERE p.code IS NOT NULL), '{}'), \
                    coalesce(array_agg(p.expected_interval_s ORDER BY p.code) FILTER (WHERE p.code IS NOT NULL), '{}'), \
                    coalesce(s.camera_url, '') \
             FROM stations s LEFT JOIN station_parameters p ON p.station_id = s.id \
             WHERE $1 = '' OR s.industrial_zone = $1 GROUP BY s.id ORDER BY s.id",
            &[&zone],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let codes: Vec<String> = r.get(8);
            let units: Vec<String> = r.get(9);
            let mins: Vec<f64> = r.get(10);
            let maxs: Vec<f64> = r.get(11);
            let intervals: Vec<i32> = r.get(12);
            let kind = match r.get::<_, String>(7).as_str() {
                "stack" => StationKind::Stack,
                _ => StationKind::Wastewater,
            };
            v1::Station {
                id: r.get(0),
                name: r.get(1),
                facility: r.get(2),
                industrial_zone: r.get(3),
                province: r.get(4),
                camera_url: r.get(13),
                latitude: r.get::<_, Option<f64>>(5).unwrap_or(f64::NAN),
                longitude: r.get::<_, Option<f64>>(6).unwrap_or(f64::NAN),
                kind: match kind {
                    StationKind::Stack => v1::StationKind::Stack,
                    StationKind::Wastewater => v1::StationKind::Wastewater,
                } as i32,
                parameters: codes
                    .into_iter()
                    .enumerate()
                    .map(|(i, code)| v1::Parameter {
                        name: quantrac_proto::domain::parameter_by_code(&code, kind)
                            .map(|p| p.name.to_string())
                            .unwrap_or_default(),
                        code,
                        canonical_unit: units.get(i).cloned().unwrap_or_default(),
                        range_min: mins.get(i).copied().unwrap_or(f64::NAN),
                        range_max: maxs.get(i).copied().unwrap_or(f64::NAN),
                        expected_interval_seconds: intervals
                            .get(i)
                            .and_then(|s| u32::try_from(*s).ok())
                            .unwrap_or(0),
                    })
                    .collect(),
            }
        })
        .collect())
}

pub(crate) fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(quantrac_proto::domain::to_timestamp(t))
}

/// A point's columns; a reading received more than 5 minutes after its
/// measurement is late (the transmission rule of Circular 24/2017, still
/// applied).
const POINT_COLUMNS: &str = "parameter, measured_at, value, unit, status, qc_flag, source, received_at, converted, \
     coalesce(wire_code, parameter) AS wire_code, coalesce(received_at > measured_at + interval '5 minutes', false) AS late";

fn point(r: &tokio_postgres::Row, at: usize) -> v1::SeriesPoint {
    v1::SeriesPoint {
        parameter: r.get(at),
        measured_at: ts(r.get(at + 1)),
        value: r.get(at + 2),
        unit: r.get(at + 3),
        status: i32::from(r.get::<_, i16>(at + 4)),
        qc_flag: r.get(at + 5),
        source: i32::from(r.get::<_, i16>(at + 6)),
        received_at: r.get::<_, Option<DateTime<Utc>>>(at + 7).and_then(ts),
        converted: r.get(at + 8),
        wire_code: r.get(at + 9),
        late: r.get(at + 10),
    }
}

/// A station's own minute / hourly / daily records in `[start, end)`, by
/// parameter, kind and period start (at most `limit`).
pub async fn reported(
    client: &Client,
    station: &str,
    parameters: &[String],
    kind: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<v1::ReportedAggregate>, QueryError> {
    let rows = client
        .query(
            "SELECT parameter, kind, period_start, period_seconds, avg, min, max, total, converted, unit, qc_flag, \
             coalesce(wire_code, parameter) FROM reported_aggregates WHERE station_id = $1 \
             AND (cardinality($2::text[]) = 0 OR parameter = ANY($2)) AND ($3 = '' OR kind = $3) \
             AND period_start >= $4 AND period_start < $5 ORDER BY parameter, kind, period_start LIMIT $6",
            &[&station, &parameters, &kind, &start, &end, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| v1::ReportedAggregate {
            parameter: r.get(0),
            kind: r.get(1),
            period_start: ts(r.get(2)),
            period_seconds: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
            avg: r.get(4),
            min: r.get(5),
            max: r.get(6),
            total: r.get(7),
            converted: r.get(8),
            unit: r.get(9),
            qc_flag: r.get(10),
            wire_code: r.get(11),
        })
        .collect())
}

/// One page of raw readings, ordered by parameter then time, after the
/// key `after` (exclusive).
#[allow(clippy::too_many_arguments)]
pub async fn series_page(
    client: &Client,
    station: &str,
    parameters: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    after: Option<&(String, DateTime<Utc>)>,
    limit: i64,
    include_flagged: bool,
) -> Result<Vec<v1::SeriesPoint>, QueryError> {
    let flags = if include_flagged { "TRUE" } else { COUNTED };
    // The first page has no key to start after: a separate statement, as
    // no sentinel time fits both chrono's and PostgreSQL's ranges.
    let (ap, at) = match after {
        Some((p, t)) => (p.as_str(), *t),
        None => ("", start),
    };
    let cmp = if after.is_some() { ">" } else { ">=" };
    let sql = format!(
        "SELECT {POINT_COLUMNS} FROM readings WHERE station_id = $1 \
         AND (cardinality($2::text[]) = 0 OR parameter = ANY($2)) \
         AND measured_at >= $3 AND measured_at < $4 AND (parameter, measured_at) {cmp} ($5, $6) AND {flags} \
         ORDER BY parameter, measured_at LIMIT $7"
    );
    let rows = client
        .query(
            &sql,
            &[&station, &parameters, &start, &end, &ap, &at, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| point(r, 0)).collect())
}

/// The newest reading of each registered (station, parameter), through
/// the primary key: one index probe per series, not a scan.
pub async fn latest(
    client: &Client,
    zone: &str,
    stations: &[String],
) -> Result<Vec<(String, v1::SeriesPoint)>, QueryError> {
    // latest_readings is kept by the processor (one row per series, at
    // most `storage.latest_every` behind); registered series only.
    let sql = format!(
        "SELECT station_id, {POINT_COLUMNS} FROM latest_readings \
         WHERE (station_id, parameter) IN (SELECT sp.station_id, sp.code FROM station_parameters sp \
           JOIN stations s ON s.id = sp.station_id \
           WHERE ($1 = '' OR s.industrial_zone = $1) AND (cardinality($2::text[]) = 0 OR sp.station_id = ANY($2))) \
         ORDER BY station_id, parameter"
    );
    let rows = client.query(&sql, &[&zone, &stations]).await?;
    Ok(rows.iter().map(|r| (r.get(0), point(r, 1))).collect())
}

/// A logger's own hourly records of a parameter starting in [start, end),
/// valid ones only (HJ 212 CN 2061 kept in `reported_aggregates`).
pub async fn reported_hours(
    client: &Client,
    station: &str,
    parameter: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<crate::compliance::ReportedHour>, QueryError> {
    let rows = client
        .query(
            "SELECT period_start, avg FROM reported_aggregates WHERE station_id = $1 AND parameter = $2 \
             AND kind = 'hour' AND qc_flag = 'valid' AND period_start >= $3 AND period_start < $4 \
             ORDER BY period_start",
            &[&station, &parameter, &start, &end],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| crate::compliance::ReportedHour {
            start: r.get(0),
            average: r.get(1),
        })
        .collect())
}

/// Readings of a parameter left out of averages, by QC flag, and those
/// the processor refused, by reason (`rejected:<reason>`).
pub async fn excluded(
    client: &Client,
    station: &str,
    parameter: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<(String, u64)>, QueryError> {
    let rows = client
        .query(
            &format!(
                "SELECT qc_flag, count(*) FROM readings WHERE station_id = $1 AND parameter = $2 \
                 AND measured_at >= $3 AND measured_at < $4 AND NOT ({COUNTED}) GROUP BY qc_flag \
                 UNION ALL \
                 SELECT 'rejected:' || reason, count(*) FROM rejected_readings WHERE station_id = $1 AND parameter = $2 \
                 AND measured_at >= $3 AND measured_at < $4 GROUP BY reason ORDER BY 1"
            ),
            &[&station, &parameter, &start, &end],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// One page of a station's rejected readings, oldest first, after `after`
/// (rejected_at, key).
/// A station's events starting in [start, end), by (time, key) after
/// `after`: its notices (`station_events`) and its silences (data-gap
/// alerts). Keys: `n/<code>` for a notice, `a/<alert id>` for a silence.
pub async fn events_page(
    client: &Client,
    station: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    after: Option<&(String, DateTime<Utc>)>,
    limit: i64,
) -> Result<Vec<(String, v1::StationEvent)>, QueryError> {
    let (ak, at) = match after {
        Some((k, t)) => (k.as_str(), *t),
        None => ("", start),
    };
    let cmp = if after.is_some() { ">" } else { ">=" };
    let rows = client
        .query(
            &format!(
                "SELECT * FROM ( \
                   SELECT 'n/' || code AS key, kind, at, NULL::timestamptz AS ended, code, detail, station_time, '' AS alert_id, received_at \
                   FROM station_events WHERE station_id = $1 AND at >= $2 AND at < $3 \
                   UNION ALL \
                   SELECT 'a/' || id, 'silence', window_start, window_end, parameter, message, true, id, NULL \
                   FROM alerts WHERE station_id = $1 AND rule = 'data_gap' AND window_start >= $2 AND window_start < $3 \
                 ) e WHERE (at, key) {cmp} ($4, $5) ORDER BY at, key LIMIT $6"
            ),
            &[&station, &start, &end, &at, &ak, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                v1::StationEvent {
                    kind: r.get(1),
                    at: ts(r.get(2)),
                    end: r.get::<_, Option<DateTime<Utc>>>(3).and_then(ts),
                    code: r.get(4),
                    detail: r.get(5),
                    station_time: r.get(6),
                    alert_id: r.get(7),
                    received_at: r.get::<_, Option<DateTime<Utc>>>(8).and_then(ts),
                },
            )
        })
        .collect())
}

pub async fn rejected_page(
    client: &Client,
    station: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    after: Option<&(String, DateTime<Utc>)>,
    limit: i64,
) -> Result<Vec<(String, v1::RejectedRow)>, QueryError> {
    let (ak, at) = match after {
        Some((k, t)) => (k.as_str(), *t),
        None => ("", start),
    };
    let cmp = if after.is_some() { ">" } else { ">=" };
    let rows = client
        .query(
            &format!(
                "SELECT key, rejected_at, reason, detail, coalesce(parameter, ''), measured_at FROM rejected_readings \
                 WHERE station_id = $1 AND rejected_at >= $2 AND rejected_at < $3 AND (rejected_at, key) {cmp} ($4, $5) \
                 ORDER BY rejected_at, key LIMIT $6"
            ),
            &[&station, &start, &end, &at, &ak, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                v1::RejectedRow {
                    rejected_at: ts(r.get(1)),
                    reason: r.get(2),
                    detail: r.get(3),
                    parameter: r.get(4),
                    measured_at: r.get::<_, Option<DateTime<Utc>>>(5).and_then(ts),
                },
            )
        })
        .collect())
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub zone: String,
    pub station: String,
    pub rule: String,
    pub severities: Vec<String>,
    pub states: Vec<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// The `alerts a` rows an [`AlertFilter`] selects, its fields as $1-$7.
const ALERT_FILTER: &str = "WHERE ($1 = '' OR a.industrial_zone = $1) AND ($2 = '' OR a.station_id = $2) \
     AND ($3 = '' OR a.rule = $3) AND (cardinality($4::text[]) = 0 OR a.severity = ANY($4)) \
     AND (cardinality($5::text[]) = 0 OR a.state = ANY($5)) \
     AND ($6::timestamptz IS NULL OR a.opened_at >= $6) AND ($7::timestamptz IS NULL OR a.opened_at < $7)";

fn decode_alert(sequence: i64, bytes: &[u8]) -> Result<v1::Alert, QueryError> {
    let mut a = v1::Alert::decode(bytes)
        .map_err(|e| QueryError::Corrupt(format!("alert event {sequence}: {e}")))?;
    a.sequence = sequence as u64;
    Ok(a)
}

/// One page of alerts, newest opened first, after `after` (opened_at, id).
pub async fn alerts_page(
    client: &Client,
    f: &AlertFilter,
    after: Option<&(String, DateTime<Utc>)>,
    limit: i64,
) -> Result<Vec<(String, DateTime<Utc>, v1::Alert)>, QueryError> {
    let (ak, at) = match after {
        Some((k, t)) => (k.as_str(), Some(*t)),
        None => ("", None),
    };
    let rows = client
        .query(
            &format!(
                "SELECT a.id, a.opened_at, e.sequence, e.alert FROM alerts a \
                 CROSS JOIN LATERAL (SELECT sequence, alert FROM alert_events WHERE alert_id = a.id ORDER BY sequence DESC LIMIT 1) e \
                 {ALERT_FILTER} AND ($8::timestamptz IS NULL OR (a.opened_at, a.id) < ($8, $9)) \
                 ORDER BY a.opened_at DESC, a.id DESC LIMIT $10"
            ),
            &[
                &f.zone, &f.station, &f.rule, &f.severities, &f.states, &f.start, &f.end, &at, &ak, &limit,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let alert = decode_alert(r.get(2), r.get(3))?;
            Ok((r.get(0), r.get(1), alert))
        })
        .collect()
}

/// The alerts `f` matches, counted by state, severity and rule (one
/// statement, grouping sets).
pub async fn alert_counts(client: &Client, f: &AlertFilter) -> Result<v1::AlertCounts, QueryError> {
    let rows = client
        .query(
            &format!(
                "SELECT a.state, a.severity, a.rule, count(*), \
                 grouping(a.state), grouping(a.severity), grouping(a.rule) FROM alerts a {ALERT_FILTER} \
                 GROUP BY GROUPING SETS ((), (a.state), (a.severity), (a.rule)) ORDER BY 1, 2, 3"
            ),
            &[&f.zone, &f.station, &f.rule, &f.severities, &f.states, &f.start, &f.end],
        )
        .await?;
    let mut out = v1::AlertCounts::default();
    for r in &rows {
        let n = u64::try_from(r.get::<_, i64>(3)).unwrap_or(0);
        let grouped = |i: usize| r.get::<_, i32>(i) == 0;
        let count = |i: usize| v1::Count {
            key: r.get::<_, Option<String>>(i).unwrap_or_default(),
            count: n,
        };
        match (grouped(4), grouped(5), grouped(6)) {
            (false, false, false) => out.total = n,
            (true, false, false) => {
                if r.get::<_, Option<String>>(0).as_deref() == Some("open") {
                    out.unacknowledged = n;
                }
                out.by_state.push(count(0));
            }
            (false, true, false) => out.by_severity.push(count(1)),
            (false, false, true) => out.by_rule.push(count(2)),
            _ => {}
        }
    }
    Ok(out)
}

/// An alert as it is now, and each of its changes, oldest first.
pub async fn alert_history(
    client: &Client,
    id: &str,
) -> Result<Option<(v1::Alert, Vec<v1::AlertChange>)>, QueryError> {
    let rows = client
        .query(
            "SELECT sequence, change, alert, coalesce(actor, ''), coalesce(note, ''), at \
             FROM alert_events WHERE alert_id = $1 ORDER BY sequence",
            &[&id],
        )
        .await?;
    let Some(last) = rows.last() else {
        return Ok(None);
    };
    let current = decode_alert(last.get(0), last.get(2))?;
    let mut changes = Vec::with_capacity(rows.len());
    for r in &rows {
        let a = decode_alert(r.get(0), r.get(2))?;
        changes.push(v1::AlertChange {
            sequence: a.sequence,
            change: r.get(1),
            state: a.state,
            actor: r.get(3),
            note: r.get(4),
            at: ts(r.get(5)),
        });
    }
    Ok(Some((current, changes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn rollups_answer_whole_hours_and_local_days_of_rebuildable_functions() {
        let fs = [Func::Avg, Func::Min, Func::Max, Func::Sum, Func::Count];
        // Local midnights (17:00 UTC).
        let days = [t("2026-11-13T17:00:00Z"), t("2026-11-14T17:00:00Z")];
        let (s, e) = (days[0], t("2026-11-15T17:00:00Z"));
        assert_eq!(Source::choose(true, &days, s, e, &fs, false), Source::Daily);
        let hours = [t("2026-11-14T01:00:00Z"), t("2026-11-14T02:00:00Z")];
        let (s, e) = (hours[0], t("2026-11-14T03:00:00Z"));
        assert_eq!(
            Source::choose(true, &hours, s, e, &fs, false),
            Source::Hourly
        );
        // UTC midnight is 07:00 local: hours, not days.
        let utc = [t("2026-11-14T00:00:00Z")];
        let e = t("2026-11-15T00:00:00Z");
        assert_eq!(
            Source::choose(true, &utc, utc[0], e, &fs, false),
            Source::Hourly
        );
        // A range ending mid-hour, a 5-minute grid, a function a rollup
        // cannot rebuild, flagged values asked for, no rollups: raw.
        let mid = t("2026-11-14T02:30:00Z");
        assert_eq!(
            Source::choose(true, &hours, hours[0], mid, &fs, false),
            Source::Raw
        );
        let fives = [hours[0], hours[0] + chrono::Duration::minutes(5)];
        let e = hours[0] + chrono::Duration::minutes(10);
        assert_eq!(
            Source::choose(true, &fives, hours[0], e, &fs, false),
            Source::Raw
        );
        let e = t("2026-11-14T03:00:00Z");
        for f in [
            Func::First,
            Func::Last,
            Func::Stddev,
            Func::Twa,
            Func::Percentile(0.95),
        ] {
            assert_eq!(
                Source::choose(true, &hours, hours[0], e, &[Func::Avg, f], false),
                Source::Raw
            );
        }
        assert_eq!(
            Source::choose(true, &hours, hours[0], e, &fs, true),
            Source::Raw
        );
        assert_eq!(
            Source::choose(false, &hours, hours[0], e, &fs, false),
            Source::Raw
        );
    }
}
