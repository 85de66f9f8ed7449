//! The gRPC `QueryService`. Each call: the caller's token and role first
//! (`quantrac_db::access`), then its input validated (a refusal names the
//! field), then the reads in `read`. A database failure is answered
//! `Unavailable` (retry) or `DeadlineExceeded`, its detail logged, never
//! sent to the caller.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::Stream;
use quantrac_db::access::{self, AccessError, Identity, Role};
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::query_service_server::QueryService;
use quantrac_proto::v1::*;
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tonic::{Request, Response, Status};

use crate::config::Limits;
use crate::fill::{self, Fill as FillMode};
use crate::interval::Interval;
use crate::read::{self, Func};
use crate::{Pool, QueryError, compliance};

#[derive(Debug, Clone)]
pub struct QueryGrpc {
    pool: Arc<Pool>,
    limits: Limits,
    audit: Arc<quantrac_db::audit::Auditor>,
    /// TimescaleDB's real-time continuous aggregates may answer
    /// aggregates ([`read::Source::choose`]).
    rollups: bool,
    /// People's OIDC tokens, when an issuer is configured.
    oidc: Option<Arc<quantrac_plumbing::oidc::Verifier>>,
    /// For the one write (`InvalidateReadings`), on its own connection.
    database_url: String,
}

impl QueryGrpc {
    pub fn new(
        pool: Arc<Pool>,
        limits: Limits,
        audit: Arc<quantrac_db::audit::Auditor>,
        rollups: bool,
        oidc: Option<Arc<quantrac_plumbing::oidc::Verifier>>,
        database_url: String,
    ) -> Self {
        QueryGrpc {
            pool,
            limits,
            audit,
            rollups,
            oidc,
            database_url,
        }
    }

    /// The caller's identity if its token grants `needs`, and a connection.
    async fn enter<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
        needs: Role,
    ) -> Result<(Identity, Arc<Client>), Status> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| db_status(method, &e.into()))?;
        let token = bearer(request.metadata());
        match access::authorize_with(&client, self.oidc.as_deref(), token, needs, Utc::now()).await
        {
            Ok(identity) => Ok((identity, client)),
            Err(AccessError::Db(e)) => Err(db_status(method, &QueryError::Db(e))),
            Err(e) => {
                self.audit
                    .refused(&e.actor(), method, e.reason(), request.remote_addr())
                    .await;
                Err(refused(method, e))
            }
        }
    }
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    access::bearer_token(metadata.get("authorization")?.to_str().ok())
}

/// A refused call: counted and logged with its reason (never the token).
pub fn refused(method: &'static str, e: AccessError) -> Status {
    let reason = e.reason();
    metrics::counter!("query_access_refused_total", "reason" => reason).increment(1);
    match e {
        AccessError::Forbidden { .. } | AccessError::NoRole { .. } => {
            tracing::warn!(target: "quantrac::security", method, reason, error = %e, "call refused");
            Status::permission_denied(e.to_string())
        }
        AccessError::Db(db) => db_status(method, &QueryError::Db(db)),
        other => {
            tracing::warn!(target: "quantrac::security", method, reason, error = %other, "call refused");
            Status::unauthenticated(format!(
                "{other}: send `authorization: Bearer <token>` (tokens come from `quantrac token issue`)"
            ))
        }
    }
}

/// A failure of ours as the caller sees it; its detail goes to the log.
fn db_status(method: &'static str, e: &QueryError) -> Status {
    if let QueryError::Db(quantrac_db::DbError::Postgres(pg)) = e
        && pg.as_db_error().map(|d| d.code().code()) == Some("57014")
    {
        return Status::deadline_exceeded(
            "the query ran past its deadline; ask for a shorter range",
        );
    }
    let transient = matches!(e, QueryError::Db(db) if db.is_transient());
    tracing::error!(method, error = %e, transient, "call failed");
    if transient {
        Status::unavailable("the database is unavailable; try again")
    } else {
        Status::internal("the query failed; the service log has the detail")
    }
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// [start, end) of a request, both given, start before end.
fn range(r: Option<&TimeRange>, field: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), Status> {
    let r = r.ok_or_else(|| invalid(field, "required (start and end)"))?;
    let start = r
        .start
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| invalid(&format!("{field}.start"), "required"))?;
    let end = r
        .end
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| invalid(&format!("{field}.end"), "required"))?;
    if start >= end {
        return Err(invalid(
            field,
            format!("start {start} is not before end {end}"),
        ));
    }
    Ok((start, end))
}

/// A page token: the key of the last row sent, opaque to callers.
fn encode_token(key: &str, at: DateTime<Utc>) -> String {
    format!("{}:{key}", at.timestamp_micros())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_token(token: &str) -> Result<Option<(String, DateTime<Utc>)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page_token", "not a token this service gave");
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (micros, key) = text.split_once(':').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok(Some((key.to_string(), at)))
}

/// Rows were read with one more than `size`: when that one came, the page
/// is cut to `size` and the token names its last row's key; else no token.
fn cut_page<T>(rows: &mut Vec<T>, size: i64, key: impl Fn(&T) -> (&str, DateTime<Utc>)) -> String {
    if rows.len() as i64 <= size {
        return String::new();
    }
    rows.truncate(size as usize);
    rows.last()
        .map(|r| {
            let (k, at) = key(r);
            encode_token(k, at)
        })
        .unwrap_or_default()
}

/// The alerts a `ListAlertsRequest` names (its paging aside).
fn alert_filter(r: &ListAlertsRequest) -> Result<read::AlertFilter, Status> {
    let severities: Vec<String> = match AlertSeverity::try_from(r.min_severity) {
        Ok(AlertSeverity::Info) => vec!["info", "warning", "critical"],
        Ok(AlertSeverity::Warning) => vec!["warning", "critical"],
        Ok(AlertSeverity::Critical) => vec!["critical"],
        Ok(AlertSeverity::Unspecified) => vec![],
        Err(_) => return Err(invalid("min_severity", "unknown severity")),
    }
    .into_iter()
    .map(String::from)
    .collect();
    let states = r
        .states
        .iter()
        .map(|s| match AlertState::try_from(*s) {
            Ok(AlertState::Open) => Ok("open".to_string()),
            Ok(AlertState::Acknowledged) => Ok("acknowledged".to_string()),
            Ok(AlertState::Resolved) => Ok("resolved".to_string()),
            _ => Err(invalid("states", format!("unknown state {s}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (start, end) = match r.range.as_ref() {
        None => (None, None),
        Some(x) => {
            let (s, e) = range(Some(x), "range")?;
            (Some(s), Some(e))
        }
    };
    Ok(read::AlertFilter {
        zone: r.industrial_zone.clone(),
        station: r.station_id.clone(),
        rule: r.rule.clone(),
        severities,
        states,
        start,
        end,
    })
}

fn page_size(asked: u32, max: u32) -> Result<i64, Status> {
    match asked {
        0 => Ok(i64::from(1_000.min(max))),
        n if n > max => Err(invalid(
            "page_size",
            format!("{n} is above the limit of {max}"),
        )),
        n => Ok(i64::from(n)),
    }
}

/// Runs a call, counting and timing it.
async fn observed<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<Response<T>, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await;
    observe(method, started, &result);
    result
}

/// Counts and times a call.
fn observe<T>(method: &'static str, started: Instant, r: &Result<T, Status>) {
    let code = match r {
        Ok(_) => "ok",
        Err(s) => match s.code() {
            tonic::Code::InvalidArgument => "invalid_argument",
            tonic::Code::Unauthenticated => "unauthenticated",
            tonic::Code::PermissionDenied => "permission_denied",
            tonic::Code::NotFound => "not_found",
            tonic::Code::Unavailable => "unavailable",
            tonic::Code::DeadlineExceeded => "deadline_exceeded",
            _ => "other",
        },
    };
    metrics::counter!("query_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("query_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// A station that exists, or `InvalidArgument` naming the field.
async fn known_station(client: &Client, id: &str, method: &'static str) -> Result<(), Status> {
    if id.trim().is_empty() {
        return Err(invalid("station_id", "required"));
    }
    match read::station(client, id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(invalid("station_id", format!("unknown station {id:?}"))),
        Err(e) => Err(db_status(method, &e)),
    }
}

/// The registered parameters named, or all of them when none are.
async fn known_parameters(
    client: &Client,
    station: &str,
    asked: &[String],
    method: &'static str,
) -> Result<Vec<read::ParameterRow>, Status> {
    let all = read::parameters(client, station)
        .await
        .map_err(|e| db_status(method, &e))?;
    select_parameters(&all, station, asked)
}

/// Of a station's registered parameters `all`, those named in `asked`, or
/// all of them when none are; `InvalidArgument` for one it does not have.
fn select_parameters(
    all: &[read::ParameterRow],
    station: &str,
    asked: &[String],
) -> Result<Vec<read::ParameterRow>, Status> {
    if asked.is_empty() {
        return Ok(all.to_vec());
    }
    asked
        .iter()
        .map(|code| {
            all.iter()
                .find(|p| &p.code == code)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<&str> = all.iter().map(|p| p.code.as_str()).collect();
                    invalid(
                        "parameter",
                        format!(
                            "station {station} has no parameter {code:?} (it has {})",
                            known.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

type SeriesStream = Pin<Box<dyn Stream<Item = Result<GetSeriesResponse, Status>> + Send>>;

/// Readings the station promises in [start, end).
fn expected(start: DateTime<Utc>, end: DateTime<Utc>, interval_s: i32) -> u64 {
    if interval_s <= 0 || end <= start {
        return 0;
    }
    ((end - start).num_seconds() / i64::from(interval_s)).max(0) as u64
}

/// Buckets of one parameter: the grid, the rows measured, clipped spans.
struct Buckets {
    grid: Vec<DateTime<Utc>>,
    rows: Vec<read::BucketRow>,
    interval: Interval,
    source: read::Source,
}

impl Buckets {
    fn span(
        &self,
        i: usize,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let b = self.grid[i];
        (b.max(start), self.interval.next(b).min(end))
    }
}

impl QueryGrpc {
    #[allow(clippy::too_many_arguments)]
    async fn buckets(
        &self,
        client: &Client,
        method: &'static str,
        station: &str,
        parameter: &str,
        interval: Interval,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        functions: &[Func],
        include_flagged: bool,
    ) -> Result<Buckets, Status> {
        if (end - start).to_std().unwrap_or_default() > self.limits.max_range {
            return Err(invalid(
                "range",
                format!(
                    "longer than the limit of {}",
                    humantime::format_duration(self.limits.max_range)
                ),
            ));
        }
        let grid = interval
            .grid(start, end, self.limits.max_buckets)
            .ok_or_else(|| {
                invalid(
                    "interval",
                    format!(
                        "more than {} buckets over this range; choose a longer interval",
                        self.limits.max_buckets
                    ),
                )
            })?;
        let source =
            read::Source::choose(self.rollups, &grid, start, end, functions, include_flagged);
        metrics::counter!("query_aggregate_source_total", "source" => source.label()).increment(1);
        let rows = read::aggregate(
            client,
            source,
            station,
            parameter,
            &grid,
            start,
            end,
            functions,
            include_flagged,
        )
        .await
        .map_err(|e| db_status(method, &e))?;
        Ok(Buckets {
            grid,
            rows,
            interval,
            source,
        })
    }

    async fn series_page(
        &self,
        client: &Client,
        r: &GetSeriesRequest,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        after: Option<(String, DateTime<Utc>)>,
        size: i64,
    ) -> Result<GetSeriesResponse, Status> {
        let mut points = read::series_page(
            client,
            &r.station_id,
            &r.parameters,
            start,
            end,
            after.as_ref(),
            size + 1,
            r.include_flagged,
        )
        .await
        .map_err(|e| db_status("GetSeries", &e))?;
        let next_page_token = cut_page(&mut points, size, |p| {
            let at = p
                .measured_at
                .as_ref()
                .and_then(from_timestamp)
                .unwrap_or_default();
            (p.parameter.as_str(), at)
        });
        Ok(GetSeriesResponse {
            points,
            next_page_token,
        })
    }

    async fn series_checked(
        &self,
        request: &Request<GetSeriesRequest>,
        method: &'static str,
    ) -> Result<
        (
            Arc<Client>,
            DateTime<Utc>,
            DateTime<Utc>,
            i64,
            Option<(String, DateTime<Utc>)>,
        ),
        Status,
    > {
        let (_, client) = self.enter(request, method, Role::Analyst).await?;
        let r = request.get_ref();
        known_station(&client, &r.station_id, method).await?;
        known_parameters(&client, &r.station_id, &r.parameters, method).await?;
        let (start, end) = range(r.range.as_ref(), "range")?;
        let size = page_size(r.page_size, self.limits.max_page_size)?;
        let after = decode_token(&r.page_token)?;
        Ok((client, start, end, size, after))
    }

    async fn get_compliance_inner(
        &self,
        request: Request<GetComplianceRequest>,
    ) -> Result<GetComplianceResponse, Status> {
        const M: &str = "GetCompliance";
        let (_, client) = self.enter(&request, M, Role::Analyst).await?;
        let r = request.into_inner();
        known_station(&client, &r.station_id, M).await?;
        let span = range(r.range.as_ref(), "range")?;
        let averaging = match r.averaging.trim() {
            "" => "1h",
            "24h" => "1d",
            other => other,
        };
        let interval: Interval = averaging.parse().map_err(|e| invalid("averaging", e))?;
        let min_coverage = r.min_coverage.unwrap_or(0.75);
        if !(0.0..=1.0).contains(&min_coverage) {
            return Err(invalid("min_coverage", "must be between 0 and 1"));
        }
        let all_limits = read::limits(&client, &r.station_id)
            .await
            .map_err(|e| db_status(M, &e))?;
        let mut wanted = r.parameters.clone();
        if wanted.is_empty() {
            wanted = all_limits.iter().map(|l| l.parameter.clone()).collect();
            wanted.dedup();
        }
        let registered = read::parameters(&client, &r.station_id)
            .await
            .map_err(|e| db_status(M, &e))?;
        let params = select_parameters(&registered, &r.station_id, &wanted)?;
        let mut parameters = Vec::with_capacity(params.len());
        for p in &params {
            let b = self
                .buckets(
                    &client,
                    M,
                    &r.station_id,
                    &p.code,
                    interval,
                    span,
                    &[Func::Avg],
                    false,
                )
                .await?;
            let mut periods: Vec<compliance::Period> = b
                .grid
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let (s, e) = b.span(i, span.0, span.1);
                    compliance::Period {
                        start: s,
                        end: e,
                        average: None,
                        valid: 0,
                        above_range: 0,
                        expected: expected(s, e, p.expected_interval_s),
                    }
                })
                .collect();
            for row in &b.rows {
                if let Some(period) = periods.get_mut(row.index) {
                    period.average = row.values.first().copied().flatten();
                    period.valid = row.valid;
                    period.above_range = row.above_range;
                }
            }
            // Hours the logger reported only as its own hourly records.
            if periods.iter().any(|p| p.valid == 0 && p.above_range == 0) {
                let hours = read::reported_hours(&client, &r.station_id, &p.code, span.0, span.1)
                    .await
                    .map_err(|e| db_status(M, &e))?;
                compliance::fill_from_hourly(&mut periods, &hours);
            }
            let limits: Vec<read::LimitRow> = all_limits
                .iter()
                .filter(|l| l.parameter == p.code)
                .cloned()
                .collect();
            let in_force = compliance::in_force(&limits, span.0, span.1);
            let s = compliance::judge(&periods, &in_force, min_coverage);
            let excluded = read::excluded(&client, &r.station_id, &p.code, span.0, span.1)
                .await
                .map_err(|e| db_status(M, &e))?;
            parameters.push(ParameterCompliance {
                parameter: p.code.clone(),
                unit: p.unit.clone(),
                limits: in_force
                    .iter()
                    .map(|f| LimitPeriod {
                        from: read::ts(f.from),
                        to: read::ts(f.to),
                        limit_max: f.limit.limit_max,
                        limit_min: f.limit.limit_min,
                        regulation: f.limit.regulation.clone(),
                    })
                    .collect(),
                periods: s.periods,
                periods_judged: s.judged,
                periods_exceeding: s.exceeding.len() as u64,
                bands: compliance::BANDS
                    .iter()
                    .zip(s.bands)
                    .map(|(edge, n)| BandCount {
                        from_multiple: *edge,
                        periods: n,
                    })
                    .collect(),
                exceedances: s
                    .exceeding
                    .iter()
                    .map(|j| Exceedance {
                        start: read::ts(j.start),
                        end: read::ts(j.end),
                        average: j.average,
                        limit: j.limit,
                        multiple: j.multiple,
                        lower_bound: j.lower_bound,
                    })
                    .collect(),
                readings: s.valid,
                expected: s.expected,
                completeness: if s.expected == 0 {
                    0.0
                } else {
                    (s.valid as f64 / s.expected as f64).min(1.0)
                },
                excluded: excluded
                    .into_iter()
                    .map(|(qc_flag, readings)| ExcludedCount { qc_flag, readings })
                    .collect(),
            });
        }
        let daily_volumes = self
            .daily_volumes(&client, &r.station_id, span, &registered)
            .await?;
        Ok(GetComplianceResponse {
            averaging: averaging.to_string(),
            parameters,
            daily_volumes,
        })
    }

    /// Cubic metres a day from the flow meter: the day's average flow
    /// times the day's length.
    async fn daily_volumes(
        &self,
        client: &Client,
        station: &str,
        span: (DateTime<Utc>, DateTime<Utc>),
        registered: &[read::ParameterRow],
    ) -> Result<Vec<DailyVolume>, Status> {
        const M: &str = "GetCompliance";
        let Some(flow) = registered.iter().find(|p| p.code == "Flow") else {
            return Ok(Vec::new());
        };
        let per_hour = match flow.unit.as_str() {
            "m3/h" => 1.0,
            "L/s" => 3.6,
            "m3/s" => 3_600.0,
            other => {
                tracing::warn!(station, unit = other, "flow unit not convertible to m3/day");
                return Ok(Vec::new());
            }
        };
        let day = Interval::Fixed(chrono::Duration::days(1));
        let b = self
            .buckets(
                client,
                M,
                station,
                &flow.code,
                day,
                span,
                &[Func::Avg],
                false,
            )
            .await?;
        Ok(b.rows
            .iter()
            .filter_map(|row| {
                let avg = row.values.first().copied().flatten()?;
                let (s, e) = b.span(row.index, span.0, span.1);
                let hours = (e - s).num_seconds() as f64 / 3_600.0;
                let exp = expected(s, e, flow.expected_interval_s);
                Some(DailyVolume {
                    date: s
                        .with_timezone(&crate::interval::local())
                        .format("%Y-%m-%d")
                        .to_string(),
                    cubic_metres: avg * per_hour * hours,
                    coverage: if exp == 0 {
                        0.0
                    } else {
                        (row.valid as f64 / exp as f64).min(1.0)
                    },
                })
            })
            .collect())
    }

    async fn get_aggregates_inner(
        &self,
        request: Request<GetAggregatesRequest>,
    ) -> Result<GetAggregatesResponse, Status> {
        const M: &str = "GetAggregates";
        let (_, client) = self.enter(&request, M, Role::Analyst).await?;
        let r = request.into_inner();
        known_station(&client, &r.station_id, M).await?;
        if r.parameter.is_empty() {
            return Err(invalid("parameter", "required"));
        }
        let p = known_parameters(
            &client,
            &r.station_id,
            std::slice::from_ref(&r.parameter),
            M,
        )
        .await?
        .remove(0);
        let span = range(r.range.as_ref(), "range")?;
        let interval: Interval = r.interval.parse().map_err(|e| invalid("interval", e))?;
        let names: Vec<String> = if r.functions.is_empty() {
            ["avg", "min", "max", "count"].map(String::from).to_vec()
        } else {
            r.functions.clone()
        };
        let functions = names
            .iter()
            .map(|f| f.parse::<Func>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("functions", e))?;
        let how = match Fill::try_from(r.fill).unwrap_or(Fill::Unspecified) {
            Fill::Unspecified | Fill::None => FillMode::None,
            Fill::Null => FillMode::Null,
            Fill::Locf => FillMode::Locf,
            Fill::Linear => FillMode::Linear,
        };
        let b = self
            .buckets(
                &client,
                M,
                &r.station_id,
                &p.code,
                interval,
                span,
                &functions,
                r.include_flagged,
            )
            .await?;
        let mut slots: Vec<fill::Slot> = vec![None; b.grid.len()];
        let mut measured: Vec<Option<&read::BucketRow>> = vec![None; b.grid.len()];
        for row in &b.rows {
            if let Some(slot) = slots.get_mut(row.index) {
                *slot = Some(row.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect());
                measured[row.index] = Some(row);
            }
        }
        let filled = fill::fill(&slots, how, r.max_gap_buckets as usize, functions.len());
        let buckets = filled
            .into_iter()
            .enumerate()
            .filter_map(|(i, answer)| {
                let (values, was_filled) = answer?;
                let (s, e) = b.span(i, span.0, span.1);
                let row = measured[i];
                let exp = expected(s, e, p.expected_interval_s);
                let valid = row.map_or(0, |x| x.valid);
                Some(AggregateBucket {
                    start: read::ts(b.grid[i]),
                    end: read::ts(b.interval.next(b.grid[i])),
                    values,
                    count: row.map_or(0, |x| x.count),
                    expected: exp,
                    coverage: if exp == 0 {
                        0.0
                    } else {
                        (valid as f64 / exp as f64).min(1.0)
                    },
                    lower_bound: row.is_some_and(|x| x.above_range > 0),
                    filled: was_filled,
                })
            })
            .collect();
        Ok(GetAggregatesResponse {
            functions: names,
            unit: p.unit,
            buckets,
            source: b.source.label().to_owned(),
        })
    }
}

#[tonic::async_trait]
impl QueryService for QueryGrpc {
    type StreamSeriesStream = SeriesStream;

    async fn list_stations(
        &self,
        request: Request<ListStationsRequest>,
    ) -> Result<Response<ListStationsResponse>, Status> {
        const M: &str = "ListStations";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let r = request.into_inner();
            let at = match r.at.as_ref() {
                Some(t) => from_timestamp(t).ok_or_else(|| invalid("at", "not a valid time"))?,
                None => Utc::now(),
            };
            let stations = read::stations(&client, &r.industrial_zone)
                .await
                .map_err(|e| db_status(M, &e))?;
            let ids: Vec<String> = stations.iter().map(|s| s.id.clone()).collect();
            let mut all_limits = read::limits_by_station(&client, &ids)
                .await
                .map_err(|e| db_status(M, &e))?;
            let mut all_instruments = read::instruments_by_station(&client, &ids)
                .await
                .map_err(|e| db_status(M, &e))?;
            let mut out = Vec::with_capacity(stations.len());
            for station in stations {
                let limits = all_limits.remove(&station.id).unwrap_or_default();
                let mut in_force: Vec<PermitLimit> = Vec::new();
                for l in limits {
                    if compliance::local_midnight(l.effective_from) > at {
                        continue;
                    }
                    // A limit past its permit's last day is no longer in force.
                    if l.effective_to.is_some_and(|to| {
                        to.succ_opt()
                            .is_some_and(|next| compliance::local_midnight(next) <= at)
                    }) {
                        in_force.retain(|x| x.parameter != l.parameter);
                        continue;
                    }
                    // Sorted by date: a later limit replaces an earlier one.
                    in_force.retain(|x| x.parameter != l.parameter);
                    in_force.push(PermitLimit {
                        parameter: l.parameter,
                        effective_from: l.effective_from.to_string(),
                        limit_max: l.limit_max,
                        limit_min: l.limit_min,
                        regulation: l.regulation,
                        column: l.column,
                        averaging: l.averaging,
                        effective_to: l.effective_to.map(|d| d.to_string()).unwrap_or_default(),
                        permit_number: l.permit_number,
                        authority: l.authority,
                        reference_o2: l.reference_o2,
                    });
                }
                let instruments = all_instruments.remove(&station.id).unwrap_or_default();
                out.push(StationInfo {
                    station: Some(station),
                    limits: in_force,
                    instruments,
                });
            }
            Ok(Response::new(ListStationsResponse { stations: out }))
        })
        .await
    }

    async fn get_series(
        &self,
        request: Request<GetSeriesRequest>,
    ) -> Result<Response<GetSeriesResponse>, Status> {
        const M: &str = "GetSeries";
        observed(M, async {
            let (client, start, end, size, after) = self.series_checked(&request, M).await?;
            self.series_page(&client, request.get_ref(), start, end, after, size)
                .await
                .map(Response::new)
        })
        .await
    }

    async fn stream_series(
        &self,
        request: Request<GetSeriesRequest>,
    ) -> Result<Response<SeriesStream>, Status> {
        const M: &str = "StreamSeries";
        let started = Instant::now();
        let checked = self.series_checked(&request, M).await;
        observe(M, started, &checked);
        let (client, start, end, size, mut after) = checked?;
        let r = request.into_inner();
        // A small buffer: a slow reader slows the reads, memory stays flat.
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let page = this
                    .series_page(&client, &r, start, end, after.take(), size)
                    .await;
                let next = match &page {
                    Ok(p) => decode_token(&p.next_page_token).ok().flatten(),
                    Err(_) => None,
                };
                if tx.send(page).await.is_err() {
                    return;
                }
                match next {
                    Some(n) => after = Some(n),
                    None => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_aggregates(
        &self,
        request: Request<GetAggregatesRequest>,
    ) -> Result<Response<GetAggregatesResponse>, Status> {
        observed("GetAggregates", async {
            self.get_aggregates_inner(request).await.map(Response::new)
        })
        .await
    }

    async fn get_latest(
        &self,
        request: Request<GetLatestRequest>,
    ) -> Result<Response<GetLatestResponse>, Status> {
        const M: &str = "GetLatest";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let r = request.into_inner();
            let rows = read::latest(&client, &r.industrial_zone, &r.station_ids)
                .await
                .map_err(|e| db_status(M, &e))?;
            let (station_ids, points) = rows.into_iter().unzip();
            Ok(Response::new(GetLatestResponse {
                points,
                station_ids,
            }))
        })
        .await
    }

    async fn get_compliance(
        &self,
        request: Request<GetComplianceRequest>,
    ) -> Result<Response<GetComplianceResponse>, Status> {
        observed("GetCompliance", async {
            self.get_compliance_inner(request).await.map(Response::new)
        })
        .await
    }

    async fn list_station_events(
        &self,
        request: Request<ListStationEventsRequest>,
    ) -> Result<Response<ListStationEventsResponse>, Status> {
        const M: &str = "ListStationEvents";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let r = request.into_inner();
            known_station(&client, &r.station_id, M).await?;
            let (start, end) = range(r.range.as_ref(), "range")?;
            let size = page_size(r.page_size, self.limits.max_page_size)?;
            let after = decode_token(&r.page_token)?;
            let mut rows =
                read::events_page(&client, &r.station_id, start, end, after.as_ref(), size + 1)
                    .await
                    .map_err(|e| db_status(M, &e))?;
            let next_page_token = cut_page(&mut rows, size, |(key, event)| {
                let at = event
                    .at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_default();
                (key.as_str(), at)
            });
            Ok(Response::new(ListStationEventsResponse {
                events: rows.into_iter().map(|(_, e)| e).collect(),
                next_page_token,
            }))
        })
        .await
    }

    async fn list_rejected(
        &self,
        request: Request<ListRejectedRequest>,
    ) -> Result<Response<ListRejectedResponse>, Status> {
        const M: &str = "ListRejected";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let r = request.into_inner();
            // No registry check: a reading for an unknown station is
            // exactly what this lists.
            if r.station_id.trim().is_empty() {
                return Err(invalid("station_id", "required"));
            }
            let (start, end) = range(r.range.as_ref(), "range")?;
            let size = page_size(r.page_size, self.limits.max_page_size)?;
            let after = decode_token(&r.page_token)?;
            let mut rows =
                read::rejected_page(&client, &r.station_id, start, end, after.as_ref(), size + 1)
                    .await
                    .map_err(|e| db_status(M, &e))?;
            let next_page_token = cut_page(&mut rows, size, |(key, row)| {
                let at = row
                    .rejected_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_default();
                (key.as_str(), at)
            });
            Ok(Response::new(ListRejectedResponse {
                readings: rows.into_iter().map(|(_, r)| r).collect(),
                next_page_token,
            }))
        })
        .await
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        const M: &str = "ListAlerts";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let r = request.into_inner();
            let filter = alert_filter(&r)?;
            let size = page_size(r.page_size, self.limits.max_page_size)?;
            let after = decode_token(&r.page_token)?;
            let mut rows = read::alerts_page(&client, &filter, after.as_ref(), size + 1)
                .await
                .map_err(|e| db_status(M, &e))?;
            let next_page_token =
                cut_page(&mut rows, size, |(id, opened, _)| (id.as_str(), *opened));
            Ok(Response::new(ListAlertsResponse {
                alerts: rows.into_iter().map(|(_, _, a)| a).collect(),
                next_page_token,
            }))
        })
        .await
    }

    async fn get_alert_history(
        &self,
        request: Request<GetAlertHistoryRequest>,
    ) -> Result<Response<GetAlertHistoryResponse>, Status> {
        const M: &str = "GetAlertHistory";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let id = request.into_inner().alert_id;
            if id.trim().is_empty() {
                return Err(invalid("alert_id", "required"));
            }
            match read::alert_history(&client, &id).await {
                Ok(Some((alert, changes))) => Ok(Response::new(GetAlertHistoryResponse {
                    alert: Some(alert),
                    changes,
                })),
                Ok(None) => Err(Status::not_found(format!("alert_id: no alert {id:?}"))),
                Err(e) => Err(db_status(M, &e)),
            }
        })
        .await
    }

    async fn count_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<AlertCounts>, Status> {
        const M: &str = "CountAlerts";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let filter = alert_filter(request.get_ref())?;
            read::alert_counts(&client, &filter)
                .await
                .map(Response::new)
                .map_err(|e| db_status(M, &e))
        })
        .await
    }

    async fn get_reported(
        &self,
        request: Request<GetReportedRequest>,
    ) -> Result<Response<GetReportedResponse>, Status> {
        const M: &str = "GetReported";
        observed(M, async {
            let (_, client) = self.enter(&request, M, Role::Analyst).await?;
            let r = request.into_inner();
            if !["", "minute", "hour", "day"].contains(&r.kind.as_str()) {
                return Err(invalid("kind", "minute, hour, day or empty"));
            }
            known_station(&client, &r.station_id, M).await?;
            let (start, end) = range(r.range.as_ref(), "range")?;
            let max = i64::from(self.limits.max_page_size);
            let mut records = read::reported(
                &client,
                &r.station_id,
                &r.parameters,
                &r.kind,
                start,
                end,
                max + 1,
            )
            .await
            .map_err(|e| db_status(M, &e))?;
            let truncated = records.len() as i64 > max;
            records.truncate(usize::try_from(max).unwrap_or(usize::MAX));
            Ok(Response::new(GetReportedResponse { records, truncated }))
        })
        .await
    }

    async fn invalidate_readings(
        &self,
        request: Request<InvalidateReadingsRequest>,
    ) -> Result<Response<InvalidateReadingsResponse>, Status> {
        const M: &str = "InvalidateReadings";
        observed(M, async {
            let (who, _) = self.enter(&request, M, Role::Officer).await?;
            let r = request.into_inner();
            let station = r.station_id.trim();
            if station.is_empty() {
                return Err(invalid("station_id", "required"));
            }
            let (start, end) = range(r.range.as_ref(), "range")?;
            let reason = r.reason.trim();
            if reason.is_empty() {
                return Err(invalid("reason", "required: why the readings are wrong"));
            }
            if reason.chars().count() > 1000 {
                return Err(invalid("reason", "at most 1000 characters"));
            }
            // A write of its own: a transaction on a connection no other
            // call shares.
            let mut client = quantrac_db::connect(&self.database_url, &Default::default())
                .await
                .map_err(|e| db_status(M, &QueryError::Db(e)))?;
            let (n, sequence) = quantrac_db::invalidate::invalidate(
                &mut client,
                &quantrac_db::invalidate::Invalidation {
                    station_id: station,
                    parameters: &r.parameters,
                    start,
                    end,
                    reason,
                    by: &who.name,
                },
            )
            .await
            .map_err(|e| db_status(M, &QueryError::Db(e)))?;
            tracing::info!(target: "quantrac::security", method = M, actor = %who.name, station, readings = n, audit = sequence, "readings invalidated");
            metrics::counter!("query_readings_invalidated_total").increment(n);
            Ok(Response::new(InvalidateReadingsResponse {
                invalidated: n,
                audit_sequence: sequence,
            }))
        })
        .await
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        const M: &str = "WhoAmI";
        observed(M, async {
            let (who, _) = self.enter(&request, M, Role::Analyst).await?;
            Ok(Response::new(WhoAmIResponse {
                identity: who.name,
                role: who.role.as_str().to_owned(),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let t = DateTime::<Utc>::from_timestamp_micros(1_780_000_000_123_456).expect("t");
        let token = encode_token("COD", t);
        assert_eq!(
            decode_token(&token).ok().flatten(),
            Some(("COD".to_string(), t))
        );
        assert_eq!(decode_token("").ok().flatten(), None);
        for bad in ["zz", "abc", "3a", "41"] {
            assert!(decode_token(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn expected_readings() {
        let s = DateTime::<Utc>::from_timestamp(0, 0).expect("t");
        assert_eq!(expected(s, s + chrono::Duration::hours(1), 300), 12);
        assert_eq!(expected(s, s, 300), 0);
        assert_eq!(expected(s, s + chrono::Duration::hours(1), 0), 0);
    }
}
