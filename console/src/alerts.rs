//! The live alert list and acting on alerts.
//!
//! The list is HTML from the server. Its script opens `/alerts/events`, a
//! server-sent-event stream fed by the alerting service's `Subscribe` under
//! the viewer's token; each alert change makes the script fetch
//! `/alerts/table` again (the same filters), so counts and rows stay those
//! the query service answers, with no reload and no second rule of truth.

use std::convert::Infallible;
use std::fmt::Write as _;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::StreamExt;
use quantrac_proto::v1::{
    AcknowledgeAlertRequest, Alert, AlertCounts, AlertSeverity, AlertState, AssignAlertRequest,
    CommentAlertRequest, GetAlertHistoryRequest, ListAlertsRequest, ListStationsRequest,
    ResolveAlertRequest, SubscribeAlertsRequest,
};
use serde::Deserialize;

use crate::AppState;
use crate::export::{Cell, Table};
use crate::html::{esc, notice, page, url};
use crate::i18n::{Lang, local_ts as time};
use crate::session::{ApiCtx, Ctx, authed, failure, same_origin};

/// Rows shown on the page (the counts always cover every match, and the
/// page says when it shows fewer).
const SHOWN: u32 = 200;
/// Rows of one CSV export.
const EXPORT_MAX: usize = 100_000;

pub const RULES: [&str; 8] = [
    "limit_exceeded",
    "average_exceeded",
    "early_warning",
    "sudden_change",
    "data_gap",
    "instrument_status",
    "flatline",
    "conflicting_value",
];

/// The list's filters, as query parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub zone: String,
    pub station: String,
    pub rule: String,
    /// At least this severity: info, warning, critical.
    pub severity: String,
    /// open, acknowledged, resolved, or active (open or acknowledged).
    pub state: String,
}

impl Filter {
    pub fn request(&self, page_size: u32, page_token: String) -> ListAlertsRequest {
        let states = match self.state.as_str() {
            "open" => vec![AlertState::Open],
            "acknowledged" => vec![AlertState::Acknowledged],
            "resolved" => vec![AlertState::Resolved],
            "active" => vec![AlertState::Open, AlertState::Acknowledged],
            _ => vec![],
        };
        ListAlertsRequest {
            industrial_zone: self.zone.clone(),
            station_id: self.station.clone(),
            rule: self.rule.clone(),
            min_severity: severity(&self.severity) as i32,
            states: states.into_iter().map(|s| s as i32).collect(),
            range: None,
            page_size,
            page_token,
        }
    }

    /// `?zone=..&station=..` (empty fields left out).
    pub fn query_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("zone", &self.zone),
            ("station", &self.station),
            ("rule", &self.rule),
            ("severity", &self.severity),
            ("state", &self.state),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", url(v)));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }

    fn with(&self, key: &str, value: &str) -> Filter {
        let mut f = self.clone();
        match key {
            "state" => f.state = value.into(),
            "severity" => f.severity = value.into(),
            "rule" => f.rule = value.into(),
            _ => {}
        }
        f
    }
}

fn severity(s: &str) -> AlertSeverity {
    match s {
        "info" => AlertSeverity::Info,
        "warning" => AlertSeverity::Warning,
        "critical" => AlertSeverity::Critical,
        _ => AlertSeverity::Unspecified,
    }
}

pub fn severity_key(a: &Alert) -> &'static str {
    match a.severity() {
        AlertSeverity::Critical => "critical",
        AlertSeverity::Warning => "warning",
        _ => "info",
    }
}

pub fn state_key(a: &Alert) -> &'static str {
    match a.state() {
        AlertState::Acknowledged => "acknowledged",
        AlertState::Resolved => "resolved",
        _ => "open",
    }
}

fn value(v: f64) -> String {
    crate::html::num(v)
}

/// Counts, the bulk form and the rows: what `/alerts/table` answers and
/// the live list re-renders.
async fn table(state: &AppState, ctx: &Ctx, f: &Filter) -> Result<String, tonic::Status> {
    let lang = ctx.lang;
    let counts = state
        .query
        .clone()
        .count_alerts(authed(state, &ctx.token, f.request(0, String::new())))
        .await?
        .into_inner();
    let list = state
        .query
        .clone()
        .list_alerts(authed(state, &ctx.token, f.request(SHOWN, String::new())))
        .await?
        .into_inner();
    let mut s = counts_html(lang, f, &counts);
    if list.alerts.is_empty() {
        s.push_str(&notice("empty", lang.t("no_alerts")));
        return Ok(s);
    }
    if counts.total > list.alerts.len() as u64 {
        let _ = write!(
            s,
            r#"<p class="shown">{} / {} · <a href="/alerts/export.csv{}">CSV</a></p>"#,
            list.alerts.len(),
            counts.total,
            f.query_string()
        );
    }
    let act = ctx.viewer.can_act();
    if act {
        let _ = write!(
            s,
            r#"<form method="post" action="/alerts/bulk-acknowledge" id="bulk"><input type="text" name="note" placeholder="{c}" aria-label="{c}"> <button type="submit" id="bulk-ack">{b}</button></form>"#,
            c = lang.t("comment"),
            b = lang.t("acknowledge_selected"),
        );
    }
    s.push_str(r#"<table class="alerts"><thead><tr>"#);
    if act {
        let _ = write!(
            s,
            r#"<th><input type="checkbox" id="select-all" aria-label="{}"></th>"#,
            lang.t("select_all")
        );
    }
    for k in [
        "severity",
        "state",
        "station",
        "parameter",
        "rule",
        "value",
        "limit",
        "message",
        "since",
        "assignee",
    ] {
        let _ = write!(s, "<th>{}</th>", lang.t(k));
    }
    s.push_str("</tr></thead><tbody>");
    for a in &list.alerts {
        let (sev, st) = (severity_key(a), state_key(a));
        let _ = write!(
            s,
            r#"<tr class="alert {sev} {st}" data-id="{id}">"#,
            id = esc(&a.id)
        );
        if act {
            if a.state() == AlertState::Open {
                let _ = write!(
                    s,
                    r#"<td><input type="checkbox" name="id" value="{}" form="bulk"></td>"#,
                    esc(&a.id)
                );
            } else {
                s.push_str("<td></td>");
            }
        }
        let _ = write!(
            s,
            r#"<td><span class="badge {sev}">{}</span></td><td><span class="badge {st}">{}</span></td><td><a href="/stations/{}">{}</a></td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td><a class="open-alert" href="/alerts/{}">{}</a></td><td>{}</td><td>{}</td></tr>"#,
            lang.t(sev),
            lang.t(st),
            url(&a.station_id),
            esc(&a.station_id),
            esc(&a.parameter),
            esc(&a.rule),
            value(a.observed_value),
            value(a.limit_value),
            url(&a.id),
            esc(&a.message),
            time(&a.window_start),
            esc(&a.assignee),
        );
    }
    s.push_str("</tbody></table>");
    Ok(s)
}

fn counts_html(lang: Lang, f: &Filter, c: &AlertCounts) -> String {
    let mut s = format!(
        r#"<div class="counts"><span class="count total">{} <b id="count-total">{}</b></span> <a class="count unacked" id="count-unacked" href="/alerts{}">{} <b>{}</b></a>"#,
        lang.t("total"),
        c.total,
        f.with("state", "open").query_string(),
        lang.t("unacknowledged"),
        c.unacknowledged
    );
    for (title, key, group) in [
        ("by_state", "state", &c.by_state),
        ("by_severity", "severity", &c.by_severity),
        ("by_rule", "rule", &c.by_rule),
    ] {
        let _ = write!(s, r#"<span class="group">{}:"#, lang.t(title));
        for n in group {
            let label = if key == "rule" {
                esc(&n.key)
            } else {
                lang.t(known(&n.key)).to_owned()
            };
            let _ = write!(
                s,
                r#" <a class="count" data-{key}="{k}" href="/alerts{q}">{label} <b>{n}</b></a>"#,
                k = esc(&n.key),
                q = f.with(key, &n.key).query_string(),
                n = n.count,
            );
        }
        s.push_str("</span>");
    }
    s.push_str("</div>");
    s
}

/// A label key for a state or severity the services answered.
fn known(k: &str) -> &'static str {
    match k {
        "open" => "open",
        "acknowledged" => "acknowledged",
        "resolved" => "resolved",
        "info" => "info",
        "warning" => "warning",
        "critical" => "critical",
        _ => "any",
    }
}

fn select(
    name: &str,
    label: &str,
    current: &str,
    options: &[(String, String)],
    any: &str,
) -> String {
    let mut s = format!(
        r#"<label>{}<select name="{name}" id="f-{name}"><option value="">{any}</option>"#,
        esc(label)
    );
    for (v, text) in options {
        let sel = if v == current { " selected" } else { "" };
        let _ = write!(
            s,
            r#"<option value="{}"{sel}>{}</option>"#,
            esc(v),
            esc(text)
        );
    }
    s.push_str("</select></label>");
    s
}

pub async fn list_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(f): Query<Filter>,
) -> Response {
    let lang = ctx.lang;
    let stations = match state
        .query
        .clone()
        .list_stations(authed(&state, &ctx.token, ListStationsRequest::default()))
        .await
    {
        Ok(r) => r.into_inner().stations,
        Err(s) => return failure(lang, Some(&ctx.viewer), &s),
    };
    let table = match table(&state, &ctx, &f).await {
        Ok(t) => t,
        Err(s) => return failure(lang, Some(&ctx.viewer), &s),
    };
    let mut zones: Vec<String> = stations
        .iter()
        .filter_map(|s| s.station.as_ref().map(|s| s.industrial_zone.clone()))
        .collect();
    zones.sort();
    zones.dedup();
    let pair = |v: &str| (v.to_owned(), v.to_owned());
    let labelled = |keys: &[&'static str]| -> Vec<(String, String)> {
        keys.iter()
            .map(|k| ((*k).to_owned(), lang.t(k).to_owned()))
            .collect()
    };
    let mut s = String::new();
    let _ = write!(s, "<h1>{}</h1>", lang.t("alerts"));
    if !ctx.viewer.can_act() {
        s.push_str(&notice("info", lang.t("read_only")));
    }
    s.push_str(r#"<form class="filters" method="get" action="/alerts">"#);
    s.push_str(&select(
        "zone",
        lang.t("zone"),
        &f.zone,
        &zones.iter().map(|z| pair(z)).collect::<Vec<_>>(),
        lang.t("any"),
    ));
    s.push_str(&select(
        "station",
        lang.t("station"),
        &f.station,
        &stations
            .iter()
            .filter_map(|s| s.station.as_ref())
            .map(|s| (s.id.clone(), format!("{} · {}", s.id, s.name)))
            .collect::<Vec<_>>(),
        lang.t("any"),
    ));
    s.push_str(&select(
        "rule",
        lang.t("rule"),
        &f.rule,
        &RULES.iter().map(|r| pair(r)).collect::<Vec<_>>(),
        lang.t("any"),
    ));
    s.push_str(&select(
        "severity",
        lang.t("severity"),
        &f.severity,
        &labelled(&["info", "warning", "critical"]),
        lang.t("any"),
    ));
    let mut states = labelled(&["open", "acknowledged", "resolved"]);
    states.insert(
        0,
        (
            "active".into(),
            format!("{} + {}", lang.t("open"), lang.t("acknowledged")),
        ),
    );
    s.push_str(&select(
        "state",
        lang.t("state"),
        &f.state,
        &states,
        lang.t("any"),
    ));
    let _ = write!(
        s,
        r#"<button type="submit">{}</button> <a class="quick" id="quick-unacked" href="/alerts?state=open">{}</a> <a class="quick" href="/alerts">{}</a> {} <a href="/alerts/export.csv{q}" id="export-csv">CSV</a> · <a href="/alerts/export.xlsx{q}" id="export-xlsx">XLSX</a></form>"#,
        lang.t("filter"),
        lang.t("active_unacked"),
        lang.t("all_alerts"),
        lang.t("export"),
        q = f.query_string(),
    );
    let _ = write!(
        s,
        r#"<p class="live-status"><span class="dot"></span> {}</p><div id="alerts-live" data-query="{}">{}</div>"#,
        lang.t("live"),
        esc(&f.query_string()),
        table
    );
    Html(page(
        lang,
        Some(&ctx.viewer),
        "alerts",
        lang.t("alerts"),
        &s,
    ))
    .into_response()
}

pub async fn table_fragment(
    State(state): State<AppState>,
    ApiCtx(ctx): ApiCtx,
    Query(f): Query<Filter>,
) -> Response {
    match table(&state, &ctx, &f).await {
        Ok(t) => ([(header::CACHE_CONTROL, "no-store")], Html(t)).into_response(),
        Err(s) => failure(ctx.lang, Some(&ctx.viewer), &s),
    }
}

/// Server-sent events: one `alert` event per alert change the viewer may
/// see (the alerting service applies their token and the zone, station and
/// severity filters), and `ready` once the subscription stands (an event
/// needs data, or browsers drop it).
pub async fn events(
    State(state): State<AppState>,
    ApiCtx(ctx): ApiCtx,
    Query(f): Query<Filter>,
) -> Response {
    let Ok(permit) = std::sync::Arc::clone(&state.live).try_acquire_owned() else {
        metrics::counter!("console_live_refused_total").increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many live pages open").into_response();
    };
    let request = SubscribeAlertsRequest {
        industrial_zones: (!f.zone.is_empty())
            .then(|| f.zone.clone())
            .into_iter()
            .collect(),
        station_ids: (!f.station.is_empty())
            .then(|| f.station.clone())
            .into_iter()
            .collect(),
        min_severity: severity(&f.severity) as i32,
        after_sequence: 0,
    };
    let mut r = authed(&state, &ctx.token, request);
    // A subscription lasts as long as the page is open.
    r.set_timeout(std::time::Duration::from_secs(365 * 86_400));
    let stream = match state.alerting.clone().subscribe(r).await {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::Unauthenticated => {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        Err(s) => {
            tracing::warn!(error = %s, "live alerts: subscribe failed");
            return (StatusCode::SERVICE_UNAVAILABLE, s.message().to_owned()).into_response();
        }
    };
    metrics::gauge!("console_live_streams").increment(1.0);
    let guard = LiveGuard { _permit: permit };
    let ready = futures::stream::once(async {
        Ok::<_, Infallible>(Event::default().event("ready").data("subscribed"))
    });
    let changes = stream
        .take_while(|m| futures::future::ready(m.is_ok()))
        .filter_map(move |m| {
            let _held = &guard;
            futures::future::ready(m.ok().map(|a| {
                Ok::<_, Infallible>(
                    Event::default()
                        .event("alert")
                        .data(serde_json::json!({ "id": a.id, "sequence": a.sequence, "state": state_key(&a) }).to_string()),
                )
            }))
        });
    Sse::new(ready.chain(changes))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Holds a live-stream place until the page goes away.
struct LiveGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        metrics::gauge!("console_live_streams").decrement(1.0);
    }
}

pub async fn detail_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let lang = ctx.lang;
    let h = match state
        .query
        .clone()
        .get_alert_history(authed(
            &state,
            &ctx.token,
            GetAlertHistoryRequest {
                alert_id: id.clone(),
            },
        ))
        .await
    {
        Ok(h) => h.into_inner(),
        Err(s) => return failure(lang, Some(&ctx.viewer), &s),
    };
    let Some(a) = h.alert else {
        return failure(lang, Some(&ctx.viewer), &tonic::Status::not_found(id));
    };
    let (sev, st) = (severity_key(&a), state_key(&a));
    let mut s = format!(
        r#"<h1><span class="badge {sev}">{}</span> <span class="badge {st}" id="alert-state" data-state="{st}">{}</span> {}</h1><dl class="facts">"#,
        lang.t(sev),
        lang.t(st),
        esc(&a.message),
    );
    for (k, v) in [
        (
            "station",
            format!(
                r#"<a href="/stations/{}">{}</a>"#,
                url(&a.station_id),
                esc(&a.station_id)
            ),
        ),
        ("zone", esc(&a.industrial_zone)),
        ("parameter", esc(&a.parameter)),
        ("rule", esc(&a.rule)),
        ("value", value(a.observed_value)),
        ("limit", value(a.limit_value)),
        ("since", time(&a.window_start)),
        ("updated", time(&a.updated_at)),
        ("assignee", esc(&a.assignee)),
    ] {
        let _ = write!(s, "<dt>{}</dt><dd>{v}</dd>", lang.t(k));
    }
    s.push_str("</dl>");
    if ctx.viewer.can_act() && a.state() != AlertState::Resolved {
        let form = |action: &str, field: &str, label: &str, button: &str, required: bool| {
            format!(
                r#"<form method="post" action="/alerts/{id}/{action}" class="act" id="form-{action}"><label>{label}<input type="text" name="{field}" id="{action}-{field}"{req}></label><button type="submit" id="do-{action}">{button}</button></form>"#,
                id = url(&a.id),
                req = if required { " required" } else { "" },
            )
        };
        s.push_str(r#"<div class="actions">"#);
        if a.state() == AlertState::Open {
            s.push_str(&form(
                "acknowledge",
                "note",
                lang.t("comment"),
                lang.t("acknowledge"),
                false,
            ));
        }
        s.push_str(&form(
            "resolve",
            "note",
            lang.t("reason"),
            lang.t("resolve"),
            true,
        ));
        s.push_str(&form(
            "assign",
            "assignee",
            lang.t("officer"),
            lang.t("assign"),
            true,
        ));
        s.push_str(&form(
            "comment",
            "note",
            lang.t("comment"),
            lang.t("comment"),
            true,
        ));
        s.push_str("</div>");
    } else if !ctx.viewer.can_act() {
        s.push_str(&notice("info", lang.t("read_only")));
    }
    let _ = write!(
        s,
        r#"<h2>{}</h2><ol class="timeline" id="history">"#,
        lang.t("history")
    );
    for c in &h.changes {
        let _ = write!(
            s,
            r#"<li data-change="{}"><time>{}</time> <b>{}</b> {} <span class="note">{}</span></li>"#,
            esc(&c.change),
            time(&c.at),
            esc(&c.change),
            esc(&c.actor),
            esc(&c.note),
        );
    }
    s.push_str("</ol>");
    Html(page(lang, Some(&ctx.viewer), "alerts", &a.message, &s)).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ActForm {
    note: String,
    assignee: String,
}

/// Acknowledge, resolve, assign or comment: the alerting service decides
/// whether the token may, and records the token holder as the actor.
pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    ctx: Ctx,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActForm>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site form refused").into_response();
    }
    let mut alerting = state.alerting.clone();
    let t = &ctx.token;
    let result = match action.as_str() {
        "acknowledge" => {
            alerting
                .acknowledge(authed(
                    &state,
                    t,
                    AcknowledgeAlertRequest {
                        alert_id: id.clone(),
                        officer: String::new(),
                        note: form.note,
                    },
                ))
                .await
        }
        "resolve" => {
            alerting
                .resolve(authed(
                    &state,
                    t,
                    ResolveAlertRequest {
                        alert_id: id.clone(),
                        officer: String::new(),
                        note: form.note,
                    },
                ))
                .await
        }
        "assign" => {
            alerting
                .assign(authed(
                    &state,
                    t,
                    AssignAlertRequest {
                        alert_id: id.clone(),
                        assignee: form.assignee,
                        note: form.note,
                    },
                ))
                .await
        }
        "comment" => {
            alerting
                .comment(authed(
                    &state,
                    t,
                    CommentAlertRequest {
                        alert_id: id.clone(),
                        text: form.note,
                    },
                ))
                .await
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    metrics::counter!("console_actions_total", "action" => action.clone(), "ok" => result.is_ok().to_string()).increment(1);
    match result {
        Ok(_) => Redirect::to(&format!("/alerts/{}", url(&id))).into_response(),
        Err(s) => failure(ctx.lang, Some(&ctx.viewer), &s),
    }
}

/// Acknowledges every checked alert, each as its own call (each attributed
/// and audited); the result lists what failed and why.
pub async fn bulk_acknowledge(
    State(state): State<AppState>,
    headers: HeaderMap,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site form refused").into_response();
    }
    let lang = ctx.lang;
    let mut ids = Vec::new();
    let mut note = String::new();
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "id" if ids.len() < 1_000 => ids.push(v.into_owned()),
            "note" => note = v.into_owned(),
            _ => {}
        }
    }
    let mut failed = Vec::new();
    for id in &ids {
        let r = state
            .alerting
            .clone()
            .acknowledge(authed(
                &state,
                &ctx.token,
                AcknowledgeAlertRequest {
                    alert_id: id.clone(),
                    officer: String::new(),
                    note: note.clone(),
                },
            ))
            .await;
        if let Err(s) = r {
            if s.code() == tonic::Code::PermissionDenied || s.code() == tonic::Code::Unauthenticated
            {
                return failure(lang, Some(&ctx.viewer), &s);
            }
            failed.push((id.clone(), s.message().to_owned()));
        }
    }
    metrics::counter!("console_actions_total", "action" => "bulk_acknowledge", "ok" => failed.is_empty().to_string())
        .increment(ids.len() as u64);
    if failed.is_empty() {
        return Redirect::to("/alerts").into_response();
    }
    let mut s = notice("error", &format!("{} / {}", failed.len(), ids.len()));
    s.push_str("<ul>");
    for (id, why) in failed {
        let _ = write!(
            s,
            r#"<li><a href="/alerts/{}">{}</a>: {}</li>"#,
            url(&id),
            esc(&id),
            esc(&why)
        );
    }
    let _ = write!(s, r#"</ul><a href="/alerts">{}</a>"#, lang.t("alerts"));
    (
        StatusCode::OK,
        Html(page(
            lang,
            Some(&ctx.viewer),
            "alerts",
            lang.t("acknowledge"),
            &s,
        )),
    )
        .into_response()
}

/// Every alert the filters match (up to 100,000), page by page from the
/// query service, as a table.
async fn alerts_table(state: &AppState, ctx: &Ctx, f: &Filter) -> Result<Table, tonic::Status> {
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let page = state
            .query
            .clone()
            .list_alerts(authed(state, &ctx.token, f.request(1_000, token)))
            .await?
            .into_inner();
        for a in &page.alerts {
            rows.push(vec![
                Cell::from(a.id.as_str()),
                time(&a.opened_at).into(),
                a.station_id.as_str().into(),
                a.industrial_zone.as_str().into(),
                a.parameter.as_str().into(),
                a.rule.as_str().into(),
                severity_key(a).into(),
                state_key(a).into(),
                a.observed_value.into(),
                a.limit_value.into(),
                a.message.as_str().into(),
                a.acknowledged_by.as_str().into(),
                a.assignee.as_str().into(),
                a.note.as_str().into(),
            ]);
        }
        if page.next_page_token.is_empty() || rows.len() >= EXPORT_MAX {
            break;
        }
        token = page.next_page_token;
    }
    Ok(Table {
        name: "alerts".into(),
        headers: vec![
            "id",
            "opened_at_local",
            "station_id",
            "industrial_zone",
            "parameter",
            "rule",
            "severity",
            "state",
            "observed_value",
            "limit_value",
            "message",
            "acknowledged_by",
            "assignee",
            "note",
        ],
        rows,
    })
}

async fn export(state: &AppState, ctx: &Ctx, f: &Filter, format: &str) -> Response {
    match alerts_table(state, ctx, f).await {
        Ok(t) => t.download(format, "alerts"),
        Err(s) => failure(ctx.lang, Some(&ctx.viewer), &s),
    }
}

/// The alerts the filters match, as CSV.
pub async fn export_csv(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(f): Query<Filter>,
) -> Response {
    export(&state, &ctx, &f, "csv").await
}

/// The alerts the filters match, as XLSX.
pub async fn export_xlsx(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(f): Query<Filter>,
) -> Response {
    export(&state, &ctx, &f, "xlsx").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_requests_and_links() {
        let f = Filter {
            zone: "KCN Hòa Hiệp".into(),
            state: "active".into(),
            severity: "warning".into(),
            ..Default::default()
        };
        let r = f.request(10, String::new());
        assert_eq!(
            r.states,
            vec![AlertState::Open as i32, AlertState::Acknowledged as i32]
        );
        assert_eq!(r.min_severity, AlertSeverity::Warning as i32);
        assert_eq!(
            f.query_string(),
            "?zone=KCN+H%C3%B2a+Hi%E1%BB%87p&severity=warning&state=active"
        );
        assert_eq!(Filter::default().query_string(), "");
        assert_eq!(
            f.with("state", "open").request(1, String::new()).states,
            vec![AlertState::Open as i32]
        );
    }
}
