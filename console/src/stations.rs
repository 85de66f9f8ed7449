//! The station board and one station's page (latest values against
//! limits, 24-hour charts, camera, maintenance, exports).
//!
//! A station is *online* when it was last heard from (a reading received)
//! within 3 expected intervals and its newest measurement is that recent
//! too; *late* when it is heard from but its newest measurement is older (a
//! logger sending its backlog, a clock behind); *silent* when nothing was
//! received for 12 intervals; *never* before its first reading.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use quantrac_proto::domain::{from_timestamp, to_timestamp};
use quantrac_proto::v1::{
    Fill, GetAggregatesRequest, GetLatestRequest, GetSeriesRequest, ListMaintenanceRequest,
    ListStationsRequest, MaintenanceWindow, SeriesPoint, StationInfo, TimeRange,
};
use serde::Deserialize;

use crate::AppState;
use crate::chart;
use crate::export::{Cell, Table};
use crate::html::{esc, notice, page, url};
use crate::i18n::{Lang, local_time, local_ts};
use crate::session::{Ctx, authed, failure};

/// Where a station stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Online,
    Late,
    Silent,
    Never,
}

impl Status {
    pub fn key(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Late => "late",
            Status::Silent => "silent",
            Status::Never => "never",
        }
    }

    /// From the newest measurement time, the last reception and the
    /// station's shortest expected interval.
    pub fn of(
        measured: Option<DateTime<Utc>>,
        received: Option<DateTime<Utc>>,
        interval: Duration,
        now: DateTime<Utc>,
    ) -> Status {
        let Some(measured) = measured else {
            return Status::Never;
        };
        // A reading without a reception time was heard when it was measured.
        let heard = received.unwrap_or(measured).max(measured);
        if now - heard > interval * 12 {
            Status::Silent
        } else if now - measured > interval * 3 {
            Status::Late
        } else {
            Status::Online
        }
    }
}

fn interval(info: &StationInfo) -> Duration {
    info.station
        .as_ref()
        .and_then(|s| {
            s.parameters
                .iter()
                .map(|p| p.expected_interval_seconds)
                .filter(|s| *s > 0)
                .min()
        })
        .map(|s| Duration::seconds(i64::from(s)))
        .unwrap_or_else(|| Duration::minutes(5))
}

fn fmt_value(v: f64) -> String {
    crate::html::num(v)
}

/// Whether a value breaks the station's limit for its parameter.
fn over(info: &StationInfo, p: &SeriesPoint) -> bool {
    info.limits.iter().any(|l| {
        l.parameter == p.parameter
            && (l.limit_max.is_some_and(|m| p.value > m)
                || l.limit_min.is_some_and(|m| p.value < m))
    })
}

fn limit_text(info: &StationInfo, parameter: &str) -> String {
    info.limits
        .iter()
        .find(|l| l.parameter == parameter)
        .map(|l| match (l.limit_min, l.limit_max) {
            (Some(a), Some(b)) => format!("{}–{}", fmt_value(a), fmt_value(b)),
            (None, Some(b)) => format!("≤ {}", fmt_value(b)),
            (Some(a), None) => format!("≥ {}", fmt_value(a)),
            (None, None) => String::new(),
        })
        .unwrap_or_default()
}

/// Stations and the newest reading of each of their parameters.
pub(crate) async fn stations_and_latest(
    state: &AppState,
    ctx: &Ctx,
    ids: Vec<String>,
) -> Result<(Vec<StationInfo>, BTreeMap<String, Vec<SeriesPoint>>), tonic::Status> {
    let stations = state
        .query
        .clone()
        .list_stations(authed(state, &ctx.token, ListStationsRequest::default()))
        .await?
        .into_inner()
        .stations;
    let latest = state
        .query
        .clone()
        .get_latest(authed(
            state,
            &ctx.token,
            GetLatestRequest {
                industrial_zone: String::new(),
                station_ids: ids,
            },
        ))
        .await?
        .into_inner();
    let mut by_station: BTreeMap<String, Vec<SeriesPoint>> = BTreeMap::new();
    for (station, point) in latest.station_ids.into_iter().zip(latest.points) {
        by_station.entry(station).or_default().push(point);
    }
    Ok((stations, by_station))
}

fn newest(points: Option<&Vec<SeriesPoint>>) -> Option<DateTime<Utc>> {
    points?
        .iter()
        .filter_map(|p| p.measured_at.as_ref().and_then(from_timestamp))
        .max()
}

fn heard(points: Option<&Vec<SeriesPoint>>) -> Option<DateTime<Utc>> {
    points?
        .iter()
        .filter_map(|p| p.received_at.as_ref().and_then(from_timestamp))
        .max()
}

/// A station's status from its latest points.
pub(crate) fn status_of(
    info: &StationInfo,
    points: Option<&Vec<SeriesPoint>>,
    now: DateTime<Utc>,
) -> Status {
    Status::of(newest(points), heard(points), interval(info), now)
}

pub async fn board(State(state): State<AppState>, ctx: Ctx) -> Response {
    let lang = ctx.lang;
    let (stations, latest) = match stations_and_latest(&state, &ctx, Vec::new()).await {
        Ok(x) => x,
        Err(s) => return failure(lang, Some(&ctx.viewer), &s),
    };
    let now = Utc::now();
    let mut rows = String::new();
    let mut counts: BTreeMap<Status, usize> = BTreeMap::new();
    for info in &stations {
        let Some(st) = info.station.as_ref() else {
            continue;
        };
        let points = latest.get(&st.id);
        let last = heard(points).or(newest(points));
        let status = status_of(info, points, now);
        *counts.entry(status).or_default() += 1;
        let mut values = String::new();
        for p in points.into_iter().flatten() {
            let class = if over(info, p) { "over" } else { "ok" };
            let _ = write!(
                values,
                r#"<span class="v {class}" title="{}">{} {} {}</span> "#,
                esc(&p.qc_flag),
                esc(&p.parameter),
                fmt_value(p.value),
                esc(&p.unit),
            );
        }
        let _ = write!(
            rows,
            r#"<tr class="station {k}" data-station="{id}" data-status="{k}"><td><a href="/stations/{u}">{id}</a></td><td>{name}</td><td>{zone}</td><td><span class="badge {k}">{label}</span></td><td>{seen}</td><td>{values}</td></tr>"#,
            k = status.key(),
            id = esc(&st.id),
            u = url(&st.id),
            name = esc(&st.name),
            zone = esc(&st.industrial_zone),
            label = lang.t(status.key()),
            seen = last.map(local_time).unwrap_or_default(),
        );
    }
    let mut s = format!("<h1>{}</h1><div class=\"counts\">", lang.t("stations"));
    for (status, n) in &counts {
        let _ = write!(
            s,
            r#"<span class="count"><span class="badge {k}">{}</span> <b>{n}</b></span> "#,
            lang.t(status.key()),
            k = status.key()
        );
    }
    let _ = write!(
        s,
        r#"</div><table class="stations"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{rows}</tbody></table>"#,
        lang.t("station"),
        lang.t("facility"),
        lang.t("zone"),
        lang.t("state"),
        lang.t("last_seen"),
        lang.t("latest"),
    );
    Html(page(
        lang,
        Some(&ctx.viewer),
        "stations",
        lang.t("stations"),
        &s,
    ))
    .into_response()
}

/// Where a camera URL points: scheme, host, port, and whether it carries
/// credentials (`user:pass@`), which are never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraTarget {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub has_credentials: bool,
    /// The URL without its credentials.
    pub shown: String,
}

pub fn camera_target(url: &str) -> Option<CameraTarget> {
    let (scheme, rest) = url.split_once("://")?;
    // Credentials end at the last `@` (a password may hold `/`); the path
    // starts at the first `/` after them. A query string is never shown:
    // cameras take `?user=…&pwd=…` there.
    let (creds, after) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let (hostport, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let (path, query) = match path.split_once('?') {
        Some((p, _)) => (p, true),
        None => (path, false),
    };
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        "rtsp" => 554,
        "rtsps" => 322,
        _ => return None,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map(str::parse).transpose().ok()?;
        (h.to_owned(), port.unwrap_or(default))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (hostport.to_owned(), default),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(CameraTarget {
        scheme: scheme.to_owned(),
        has_credentials: creds.is_some() || query,
        shown: format!("{scheme}://{hostport}{path}"),
        host,
        port,
    })
}

/// The camera beside the data: a snapshot (http/https without
/// credentials), the address, and whether it answers a TCP connection
/// from here within 2 seconds.
async fn camera_html(lang: Lang, url: &str) -> String {
    let head = format!(r#"<section class="camera"><h2>{}</h2>"#, lang.t("camera"));
    let Some(t) = camera_target(url) else {
        return format!("{head}{}</section>", notice("info", lang.t("no_camera")));
    };
    let reachable = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    metrics::counter!("console_camera_checks_total", "reachable" => reachable.to_string())
        .increment(1);
    let (class, label) = if reachable {
        ("online", lang.t("reachable"))
    } else {
        ("silent", lang.t("unreachable"))
    };
    let mut s = format!(
        r#"{head}<p><span class="badge {class}" id="camera-status" data-reachable="{reachable}">{label}</span> <a href="{u}" rel="noreferrer">{u}</a></p>"#,
        u = esc(&t.shown),
    );
    if t.scheme.starts_with("http") && !t.has_credentials && reachable {
        let _ = write!(
            s,
            r#"<img class="camera-snapshot" src="{}" alt="{}" loading="lazy" referrerpolicy="no-referrer">"#,
            esc(&t.shown),
            lang.t("camera")
        );
    }
    s.push_str("</section>");
    s
}

/// The station's planned maintenance (not yet over), and for officers a
/// form to plan one: alerts measured inside a window are kept but not
/// notified.
async fn maintenance_html(state: &AppState, ctx: &Ctx, id: &str) -> Result<String, tonic::Status> {
    let lang = ctx.lang;
    let windows = state
        .alerting
        .clone()
        .list_maintenance(authed(
            state,
            &ctx.token,
            ListMaintenanceRequest {
                station_id: id.to_owned(),
                ending_after: None,
            },
        ))
        .await?
        .into_inner()
        .windows;
    let mut s = format!(
        r#"<section class="maintenance"><h2>{}</h2>"#,
        lang.t("maintenance")
    );
    if windows.is_empty() {
        s.push_str(&notice("info", lang.t("no_maintenance")));
    } else {
        s.push_str(r#"<ul id="maintenance-windows">"#);
        for w in &windows {
            let t = local_ts;
            let _ = write!(
                s,
                "<li>{} → {} · {} · {}</li>",
                t(&w.starts_at),
                t(&w.ends_at),
                esc(&w.reason),
                esc(&w.created_by)
            );
        }
        s.push_str("</ul>");
    }
    if ctx.viewer.can_act() {
        let _ = write!(
            s,
            r#"<form method="post" action="/stations/{u}/maintenance" class="act" id="form-maintenance"><label>{from}<input type="datetime-local" name="starts" id="maintenance-starts" required></label><label>{hours}<input type="number" name="hours" id="maintenance-hours" min="1" max="744" value="4" required></label><label>{reason}<input type="text" name="reason" id="maintenance-reason" required></label><button type="submit" id="do-maintenance">{plan}</button></form>"#,
            u = url(id),
            from = lang.t("starts"),
            hours = lang.t("hours"),
            reason = lang.t("reason"),
            plan = lang.t("plan_maintenance"),
        );
    }
    s.push_str("</section>");
    Ok(s)
}

#[derive(Debug, Deserialize)]
pub struct MaintenanceForm {
    /// `YYYY-MM-DDTHH:MM`, local time (the browser's datetime-local).
    starts: String,
    hours: i64,
    reason: String,
}

/// Plans a maintenance window through the alerting service (which checks
/// the officer's role and audits it).
pub async fn plan_maintenance(
    State(state): State<AppState>,
    headers: HeaderMap,
    ctx: Ctx,
    Path(id): Path<String>,
    axum::extract::Form(form): axum::extract::Form<MaintenanceForm>,
) -> Response {
    if !crate::session::same_origin(&headers) {
        return (axum::http::StatusCode::FORBIDDEN, "cross-site form refused").into_response();
    }
    let starts = chrono::NaiveDateTime::parse_from_str(&form.starts, "%Y-%m-%dT%H:%M")
        .ok()
        .and_then(|t| {
            t.and_local_timezone(quantrac_proto::domain::local_offset())
                .single()
        })
        .map(|t| t.with_timezone(&Utc));
    let Some(starts) = starts else {
        return failure(
            ctx.lang,
            Some(&ctx.viewer),
            &tonic::Status::invalid_argument("starts: YYYY-MM-DDTHH:MM"),
        );
    };
    let ends = starts + Duration::hours(form.hours.clamp(1, 744));
    let r = state
        .alerting
        .clone()
        .create_maintenance(authed(
            &state,
            &ctx.token,
            MaintenanceWindow {
                id: 0,
                station_id: id.clone(),
                starts_at: Some(to_timestamp(starts)),
                ends_at: Some(to_timestamp(ends)),
                reason: form.reason,
                created_by: String::new(),
            },
        ))
        .await;
    match r {
        Ok(_) => axum::response::Redirect::to(&format!("/stations/{}", url(&id))).into_response(),
        Err(s) => failure(ctx.lang, Some(&ctx.viewer), &s),
    }
}

/// Every reading of `station` in `[start, end)`, flagged ones included,
/// through the query service's pages.
async fn series(
    state: &AppState,
    ctx: &Ctx,
    station: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max: usize,
) -> Result<Vec<SeriesPoint>, tonic::Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = state
            .query
            .clone()
            .get_series(authed(
                state,
                &ctx.token,
                GetSeriesRequest {
                    station_id: station.to_owned(),
                    parameters: Vec::new(),
                    range: Some(TimeRange {
                        start: Some(to_timestamp(start)),
                        end: Some(to_timestamp(end)),
                    }),
                    page_size: 10_000,
                    page_token: token,
                    include_flagged: true,
                },
            ))
            .await?
            .into_inner();
        out.extend(page.points);
        if page.next_page_token.is_empty() || out.len() >= max {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

pub async fn detail(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let lang = ctx.lang;
    let (stations, latest) = match stations_and_latest(&state, &ctx, vec![id.clone()]).await {
        Ok(x) => x,
        Err(s) => return failure(lang, Some(&ctx.viewer), &s),
    };
    let Some(info) = stations
        .iter()
        .find(|s| s.station.as_ref().is_some_and(|s| s.id == id))
    else {
        return failure(
            lang,
            Some(&ctx.viewer),
            &tonic::Status::not_found(format!("station {id}")),
        );
    };
    let Some(st) = info.station.as_ref() else {
        return failure(lang, Some(&ctx.viewer), &tonic::Status::not_found(id));
    };
    let now = Utc::now();
    let start = now - Duration::hours(24);
    let points = match series(&state, &ctx, &id, start, now, 100_000).await {
        Ok(p) => p,
        Err(s) => return failure(lang, Some(&ctx.viewer), &s),
    };
    let last = heard(latest.get(&id)).or(newest(latest.get(&id)));
    let status = status_of(info, latest.get(&id), now);
    let mut s = format!(
        r#"<h1>{} · {} <span class="badge {k}" id="station-status">{}</span></h1><p>{} · {} · {} · {}: {}</p>"#,
        esc(&st.id),
        esc(&st.name),
        lang.t(status.key()),
        esc(&st.facility),
        esc(&st.industrial_zone),
        esc(&st.province),
        lang.t("last_seen"),
        last.map(local_time)
            .unwrap_or_else(|| lang.t("never").to_owned()),
        k = status.key(),
    );
    s.push_str(&camera_html(lang, &st.camera_url).await);
    match maintenance_html(&state, &ctx, &id).await {
        Ok(m) => s.push_str(&m),
        Err(e) => s.push_str(&notice("error", e.message())),
    }
    let _ = write!(
        s,
        r#"<h2>{}</h2><table class="latest"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>QC</th></tr></thead><tbody>"#,
        lang.t("latest"),
        lang.t("parameter"),
        lang.t("value"),
        lang.t("limit"),
        lang.t("since"),
    );
    for p in latest.get(&id).into_iter().flatten() {
        let class = if over(info, p) { "over" } else { "ok" };
        let _ = write!(
            s,
            r#"<tr class="{class}" data-parameter="{pa}"><td>{pa}</td><td class="num">{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            fmt_value(p.value),
            esc(&p.unit),
            limit_text(info, &p.parameter),
            local_ts(&p.measured_at),
            esc(&p.qc_flag),
            pa = esc(&p.parameter),
        );
    }
    let _ = write!(
        s,
        r#"</tbody></table><h2>{} <span class="small">{export}: <a href="/stations/{u}/readings.csv?hours=24" id="readings-csv">CSV</a> · <a href="/stations/{u}/readings.xlsx?hours=24" id="readings-xlsx">XLSX</a> · {averages}: <a href="/stations/{u}/averages.csv?hours=24">CSV</a> · <a href="/stations/{u}/averages.xlsx?hours=24" id="averages-xlsx">XLSX</a></span></h2><p class="legend"><span class="key gap">— —</span> {} · <span class="key flagged">●</span> {} · <span class="key saturated">▲</span> {} · <span class="key limit">- - -</span> {}</p>"#,
        lang.t("chart_24h"),
        lang.t("gap"),
        lang.t("flagged"),
        lang.t("saturated"),
        lang.t("limit"),
        u = url(&id),
        export = lang.t("export"),
        averages = lang.t("hourly_averages"),
    );
    let labels = chart::Labels {
        limit: lang.t("limit"),
        flagged: lang.t("flagged"),
        saturated: lang.t("saturated"),
    };
    for p in &st.parameters {
        let mut pts: Vec<chart::Point> = points
            .iter()
            .filter(|x| x.parameter == p.code)
            .filter_map(|x| {
                Some(chart::Point {
                    at: x.measured_at.as_ref().and_then(from_timestamp)?,
                    value: x.value,
                    qc_flag: x.qc_flag.clone(),
                })
            })
            .collect();
        pts.sort_by_key(|x| x.at);
        let limit = info.limits.iter().find(|l| l.parameter == p.code);
        let frame = chart::Frame {
            start,
            end: now,
            limit_max: limit.and_then(|l| l.limit_max),
            limit_min: limit.and_then(|l| l.limit_min),
            expected_interval: Duration::seconds(i64::from(p.expected_interval_seconds.max(1))),
            unit: p.canonical_unit.clone(),
        };
        let _ = write!(
            s,
            r#"<figure class="param" data-parameter="{c}"><figcaption>{c} ({u}) · {n}</figcaption>{svg}</figure>"#,
            c = esc(&p.code),
            u = esc(&p.canonical_unit),
            n = pts.len(),
            svg = chart::svg(&pts, &frame, &labels),
        );
    }
    Html(page(lang, Some(&ctx.viewer), "stations", &st.id, &s)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct Span {
    #[serde(default = "day")]
    hours: i64,
}

fn day() -> i64 {
    24
}

/// A station's readings over the last `hours` (at most 31 days), flagged
/// ones included with their flag.
async fn readings_table(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    hours: i64,
) -> Result<Table, tonic::Status> {
    let now = Utc::now();
    let hours = hours.clamp(1, 31 * 24);
    let points = series(state, ctx, id, now - Duration::hours(hours), now, 1_000_000).await?;
    let rows = points
        .into_iter()
        .map(|p| {
            let at = p.measured_at.as_ref().and_then(from_timestamp);
            vec![
                Cell::from(id),
                p.parameter.into(),
                at.map(|t| t.to_rfc3339()).unwrap_or_default().into(),
                at.map(local_time).unwrap_or_default().into(),
                p.value.into(),
                p.unit.into(),
                p.qc_flag.into(),
            ]
        })
        .collect();
    Ok(Table {
        name: format!("{id} readings"),
        headers: vec![
            "station_id",
            "parameter",
            "measured_at",
            "measured_at_local",
            "value",
            "unit",
            "qc_flag",
        ],
        rows,
    })
}

/// Hourly averages of every parameter over the last `hours`, from the
/// query service's aggregates: average, minimum, maximum, readings,
/// coverage, and whether the hour holds saturated (lower-bound) values.
async fn averages_table(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    hours: i64,
) -> Result<Table, tonic::Status> {
    let now = Utc::now();
    let hours = hours.clamp(1, 31 * 24);
    let start = now - Duration::hours(hours);
    let stations = state
        .query
        .clone()
        .list_stations(authed(state, &ctx.token, ListStationsRequest::default()))
        .await?
        .into_inner()
        .stations;
    let parameters: Vec<String> = stations
        .iter()
        .filter_map(|s| s.station.as_ref())
        .find(|s| s.id == id)
        .map(|s| s.parameters.iter().map(|p| p.code.clone()).collect())
        .ok_or_else(|| tonic::Status::not_found(format!("station {id}")))?;
    let mut rows = Vec::new();
    for parameter in parameters {
        let r = state
            .query
            .clone()
            .get_aggregates(authed(
                state,
                &ctx.token,
                GetAggregatesRequest {
                    station_id: id.to_owned(),
                    parameter: parameter.clone(),
                    range: Some(TimeRange {
                        start: Some(to_timestamp(start)),
                        end: Some(to_timestamp(now)),
                    }),
                    interval: "1h".into(),
                    functions: ["avg", "min", "max"].map(String::from).to_vec(),
                    fill: Fill::None as i32,
                    max_gap_buckets: 0,
                    include_flagged: false,
                },
            ))
            .await?
            .into_inner();
        for b in r.buckets {
            let v = |i: usize| Cell::from(b.values.get(i).copied());
            rows.push(vec![
                Cell::from(id),
                parameter.as_str().into(),
                local_ts(&b.start).into(),
                v(0),
                v(1),
                v(2),
                r.unit.as_str().into(),
                (b.count as f64).into(),
                b.coverage.into(),
                if b.lower_bound { "yes" } else { "" }.into(),
            ]);
        }
    }
    Ok(Table {
        name: format!("{id} hourly"),
        headers: vec![
            "station_id",
            "parameter",
            "hour_local",
            "avg",
            "min",
            "max",
            "unit",
            "readings",
            "coverage",
            "lower_bound",
        ],
        rows,
    })
}

/// `/stations/{id}/{readings|averages}.{csv|xlsx}?hours=N`.
pub async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, file)): Path<(String, String)>,
    Query(q): Query<Span>,
) -> Response {
    let Some((what, format)) = file.split_once('.') else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    if format != "csv" && format != "xlsx" {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let table = match what {
        "readings" => readings_table(&state, &ctx, &id, q.hours).await,
        "averages" => averages_table(&state, &ctx, &id, q.hours).await,
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    match table {
        Ok(t) => t.download(format, &format!("{id}-{what}")),
        Err(s) => failure(ctx.lang, Some(&ctx.viewer), &s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_expected_interval() {
        let now = DateTime::from_timestamp(1_780_000_000, 0).expect("t");
        let five = Duration::minutes(5);
        let ago = |m: i64| Some(now - Duration::minutes(m));
        assert_eq!(Status::of(None, None, five, now), Status::Never);
        assert_eq!(Status::of(ago(15), ago(15), five, now), Status::Online);
        assert_eq!(Status::of(ago(16), ago(16), five, now), Status::Late);
        assert_eq!(Status::of(ago(60), ago(60), five, now), Status::Late);
        assert_eq!(Status::of(ago(61), ago(61), five, now), Status::Silent);
        // Sending yesterday's backlog now: heard from, but late.
        assert_eq!(Status::of(ago(24 * 60), ago(1), five, now), Status::Late);
        // No reception time recorded: measured time counts as heard.
        assert_eq!(Status::of(ago(61), None, five, now), Status::Silent);
        // An hourly logger is not late at 40 minutes.
        assert_eq!(
            Status::of(ago(40), ago(40), Duration::hours(1), now),
            Status::Online
        );
    }

    #[test]
    fn camera_addresses_and_their_credentials() {
        let t = camera_target("rtsp://admin:secret@10.0.0.7/stream1").expect("rtsp");
        assert_eq!(
            (t.host.as_str(), t.port, t.has_credentials),
            ("10.0.0.7", 554, true)
        );
        assert_eq!(t.shown, "rtsp://10.0.0.7/stream1");
        let t = camera_target("http://cam.example.vn:8080/snap.jpg").expect("http");
        assert_eq!(
            (t.host.as_str(), t.port, t.has_credentials),
            ("cam.example.vn", 8080, false)
        );
        // A password with a slash, and credentials in the query string.
        let t = camera_target("rtsp://admin:12/34@10.0.0.8:8554/live").expect("slash");
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.8", 8554));
        assert_eq!(t.shown, "rtsp://10.0.0.8:8554/live");
        let t = camera_target("http://cam.vn/snapshot.cgi?user=admin&pwd=secret").expect("query");
        assert_eq!(t.shown, "http://cam.vn/snapshot.cgi");
        assert!(t.has_credentials, "no snapshot is embedded from it");
        let t = camera_target("https://[2001:db8::1]/s.jpg").expect("v6");
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 443));
        assert_eq!(camera_target(""), None);
        assert_eq!(camera_target("ftp://x/y"), None);
        assert_eq!(camera_target("http://:80/"), None);
    }
}
