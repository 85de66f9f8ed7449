//! The query service against the real PostgreSQL, over a known data set
//! (`common`): every call, its errors, and access by token.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Fixture, end, local, range, start, with_token};
use prost::Message;
use quantrac_db::access::Role;
use quantrac_proto::domain::{from_timestamp, to_timestamp};
use quantrac_proto::v1::*;
use tonic::Code;

#[tokio::test]
async fn every_call_needs_a_valid_token() {
    let f = Fixture::new().await;
    let mut c = f.client().await;
    let ask = || ListStationsRequest::default();
    let no_token = c
        .list_stations(tonic::Request::new(ask()))
        .await
        .expect_err("no token");
    assert_eq!(no_token.code(), Code::Unauthenticated);
    let made_up = c
        .list_stations(with_token(
            "qtk_0000000000000000000000000000000000000000000000000000000000000000",
            ask(),
        ))
        .await
        .expect_err("unknown token");
    assert_eq!(made_up.code(), Code::Unauthenticated);

    let expired = quantrac_db::access::issue(
        &f.db,
        "old@test",
        Role::Admin,
        Utc::now() - Duration::seconds(1),
    )
    .await
    .expect("issue");
    let e = c
        .list_stations(with_token(&expired.secret, ask()))
        .await
        .expect_err("expired");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{}", e.message());

    let analyst = f.token(Role::Analyst).await;
    c.list_stations(with_token(&analyst, ask()))
        .await
        .expect("analyst reads");
    let prefix = &analyst[..12];
    assert!(
        quantrac_db::access::revoke(&f.db, prefix)
            .await
            .expect("revoke")
    );
    let e = c
        .list_stations(with_token(&analyst, ask()))
        .await
        .expect_err("revoked");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("revoked"), "{}", e.message());

    // Roles include the ones below; an analyst's token is not an officer's.
    let officer = f.token(Role::Officer).await;
    let who = quantrac_db::access::authorize(&f.db, Some(&officer), Role::Analyst, Utc::now())
        .await
        .expect("officer reads");
    assert_eq!(
        (who.name.as_str(), who.role),
        ("officer@test", Role::Officer)
    );
    let analyst = f.token(Role::Analyst).await;
    let denied =
        quantrac_db::access::authorize(&f.db, Some(&analyst), Role::Officer, Utc::now()).await;
    assert!(
        matches!(
            denied,
            Err(quantrac_db::access::AccessError::Forbidden { .. })
        ),
        "{denied:?}"
    );
    // Only a digest is stored.
    let stored = common_count(
        &f,
        &format!(
            "SELECT count(*) FROM access_tokens WHERE digest::text LIKE '%{}%'",
            &analyst[4..20]
        ),
    )
    .await;
    assert_eq!(stored, 0);
}

async fn common_count(f: &Fixture, sql: &str) -> i64 {
    f.db.query_one(sql, &[]).await.expect("count").get(0)
}

#[tokio::test]
async fn stations_with_the_limits_in_force() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let limits_at = |at: DateTime<Utc>| ListStationsRequest {
        industrial_zone: "KCN Test".into(),
        at: Some(to_timestamp(at)),
    };
    let before = c
        .list_stations(with_token(&t, limits_at(local(2026, 11, 14, 23, 0))))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(before.stations.len(), 1, "zone filter");
    let s = &before.stations[0];
    assert_eq!(s.station.as_ref().map(|x| x.id.as_str()), Some("Q-1"));
    assert_eq!(s.station.as_ref().map(|x| x.parameters.len()), Some(3));
    let cod = |r: &ListStationsResponse| {
        r.stations[0]
            .limits
            .iter()
            .find(|l| l.parameter == "COD")
            .and_then(|l| l.limit_max)
    };
    assert_eq!(cod(&before), Some(150.0));
    let after = c
        .list_stations(with_token(&t, limits_at(local(2026, 11, 15, 0, 0))))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(cod(&after), Some(100.0));
    // The permit behind a limit, and its last day.
    let ph = after.stations[0]
        .limits
        .iter()
        .find(|l| l.parameter == "pH")
        .expect("pH limit in force");
    assert_eq!(
        (
            ph.averaging.as_str(),
            ph.effective_to.as_str(),
            ph.permit_number.as_str()
        ),
        ("24h", "2026-11-30", "07/GP-UBND")
    );
    let expired = c
        .list_stations(with_token(&t, limits_at(local(2026, 12, 1, 0, 0))))
        .await
        .expect("list")
        .into_inner();
    assert!(
        expired.stations[0]
            .limits
            .iter()
            .all(|l| l.parameter != "pH"),
        "the pH permit ended on 2026-11-30"
    );
    assert_eq!(cod(&expired), Some(100.0));
    let all = c
        .list_stations(with_token(&t, ListStationsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.stations.len(), 2);
}

fn series(
    station: &str,
    parameters: &[&str],
    page_size: u32,
    token: String,
    flagged: bool,
) -> GetSeriesRequest {
    GetSeriesRequest {
        station_id: station.into(),
        parameters: parameters.iter().map(|p| p.to_string()).collect(),
        range: range(start(), end()),
        page_size,
        page_token: token,
        include_flagged: flagged,
    }
}

#[tokio::test]
async fn series_pages_are_complete_and_never_cut_silently() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = c
            .get_series(with_token(
                &t,
                series("Q-1", &["COD", "pH"], 100, token, false),
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(r.points.len() <= 100);
        if !r.next_page_token.is_empty() {
            assert_eq!(r.points.len(), 100, "a page with more to come is full");
        }
        pages += 1;
        seen.extend(r.points.into_iter().map(|p| {
            (
                p.parameter,
                p.measured_at.and_then(|t| from_timestamp(&t)),
                p.qc_flag,
            )
        }));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    // COD: 576 slots, 12 silent, 12 calibrating (left out); pH: 576.
    assert_eq!(seen.len(), 552 + 576);
    assert_eq!(pages, 12);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no point twice");
    assert!(
        seen.iter()
            .all(|(_, _, qc)| qc == "valid" || qc == "above_range")
    );

    let flagged = c
        .get_series(with_token(
            &t,
            series("Q-1", &["COD"], 1_000, String::new(), true),
        ))
        .await
        .expect("flagged")
        .into_inner();
    assert_eq!(flagged.points.len(), 564);
    assert!(flagged.next_page_token.is_empty());
    assert_eq!(
        flagged
            .points
            .iter()
            .filter(|p| p.qc_flag == "calibrating")
            .count(),
        12
    );

    // The stream sends the same points.
    let mut stream = c
        .stream_series(with_token(
            &t,
            series("Q-1", &["COD", "pH"], 250, String::new(), false),
        ))
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = 0;
    while let Some(page) = stream.message().await.expect("page") {
        streamed += page.points.len();
    }
    assert_eq!(streamed, 552 + 576);
}

fn agg(
    parameter: &str,
    interval: &str,
    functions: &[&str],
    fill: Fill,
    max_gap: u32,
) -> GetAggregatesRequest {
    GetAggregatesRequest {
        station_id: "Q-1".into(),
        parameter: parameter.into(),
        range: range(start(), end()),
        interval: interval.into(),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        fill: fill as i32,
        max_gap_buckets: max_gap,
        include_flagged: false,
    }
}

#[tokio::test]
async fn aggregates_coverage_lower_bounds_and_fill() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let hourly = c
        .get_aggregates(with_token(
            &t,
            agg("COD", "1h", &["avg", "max", "count"], Fill::None, 0),
        ))
        .await
        .expect("agg")
        .into_inner();
    // 48 hours, less the silent hour and the calibrating one.
    assert_eq!(hourly.buckets.len(), 46);
    assert_eq!(hourly.unit, "mg/L");
    // Plain PostgreSQL has no continuous aggregates: from the readings.
    assert_eq!(hourly.source, "raw");
    let at = |b: &AggregateBucket| b.start.and_then(|t| from_timestamp(&t));
    let saturated = hourly
        .buckets
        .iter()
        .find(|b| at(b) == Some(local(2026, 11, 15, 12, 0)))
        .expect("12:00");
    assert!(saturated.lower_bound);
    assert_eq!(saturated.values, vec![500.0, 500.0, 12.0]);
    assert_eq!(
        saturated.coverage, 0.0,
        "no valid reading: saturated ones are not coverage"
    );
    let normal = hourly
        .buckets
        .iter()
        .find(|b| at(b) == Some(local(2026, 11, 15, 9, 0)))
        .expect("09:00");
    assert!(!normal.lower_bound);
    assert_eq!(
        (normal.count, normal.expected, normal.coverage),
        (12, 12, 1.0)
    );

    // Days start at local midnight.
    let daily = c
        .get_aggregates(with_token(
            &t,
            agg("Flow", "1d", &["avg", "sum"], Fill::None, 0),
        ))
        .await
        .expect("daily")
        .into_inner();
    assert_eq!(daily.buckets.len(), 2);
    assert_eq!(at(&daily.buckets[0]), Some(start()));
    assert_eq!(daily.buckets[0].values, vec![36.0, 36.0 * 288.0]);

    // The silent hour: left out, null, carried forward, interpolated; not
    // across a gap longer than max_gap.
    let gap = local(2026, 11, 15, 10, 0);
    let bucket = |r: &GetAggregatesResponse| r.buckets.iter().find(|b| at(b) == Some(gap)).cloned();
    for (fill, expect) in [
        (Fill::Null, f64::NAN),
        (Fill::Locf, 120.0),
        (Fill::Linear, 130.0),
    ] {
        let r = c
            .get_aggregates(with_token(&t, agg("COD", "1h", &["avg"], fill, 1)))
            .await
            .expect("fill")
            .into_inner();
        assert_eq!(r.buckets.len(), 48, "{fill:?}");
        let b = bucket(&r).expect("gap bucket");
        assert_eq!(b.count, 0);
        if expect.is_nan() {
            assert!(b.values[0].is_nan() && !b.filled);
        } else {
            assert_eq!(b.values[0], expect, "{fill:?}");
            assert!(b.filled);
        }
    }
    // 5-minute buckets: the silent hour is 12 empty buckets, more than 3.
    let r = c
        .get_aggregates(with_token(&t, agg("COD", "5m", &["avg"], Fill::Locf, 3)))
        .await
        .expect("5m")
        .into_inner();
    let b = r
        .buckets
        .iter()
        .find(|b| at(b) == Some(gap + Duration::minutes(30)))
        .expect("bucket");
    assert!(b.values[0].is_nan() && !b.filled);
}

#[tokio::test]
async fn compliance_judges_against_the_limit_in_force() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let r = c
        .get_compliance(with_token(
            &t,
            GetComplianceRequest {
                station_id: "Q-1".into(),
                range: range(start(), end()),
                averaging: String::new(),
                min_coverage: None,
                parameters: vec![],
            },
        ))
        .await
        .expect("compliance")
        .into_inner();
    assert_eq!(r.averaging, "1h");
    let cod = r
        .parameters
        .iter()
        .find(|p| p.parameter == "COD")
        .expect("COD");
    let limits: Vec<Option<f64>> = cod.limits.iter().map(|l| l.limit_max).collect();
    assert_eq!(
        limits,
        vec![Some(150.0), Some(100.0)],
        "a permit change shows as two limits"
    );
    assert_eq!(
        cod.limits[1].from.and_then(|t| from_timestamp(&t)),
        Some(local(2026, 11, 15, 0, 0))
    );
    assert_eq!(
        (cod.periods, cod.periods_judged, cod.periods_exceeding),
        (48, 46, 23)
    );
    let bands: Vec<(f64, u64)> = cod
        .bands
        .iter()
        .filter(|b| b.periods > 0)
        .map(|b| (b.from_multiple, b.periods))
        .collect();
    assert_eq!(bands, vec![(1.1, 22), (5.0, 1)]);
    let worst = cod
        .exceedances
        .iter()
        .find(|e| e.lower_bound)
        .expect("saturated hour");
    assert_eq!(
        (worst.average, worst.limit, worst.multiple),
        (500.0, 100.0, 5.0)
    );
    assert_eq!((cod.readings, cod.expected), (540, 576));
    assert!((cod.completeness - 540.0 / 576.0).abs() < 1e-9);
    let excluded: Vec<(&str, u64)> = cod
        .excluded
        .iter()
        .map(|x| (x.qc_flag.as_str(), x.readings))
        .collect();
    assert_eq!(
        excluded,
        vec![("calibrating", 12), ("rejected:out_of_range", 1)]
    );
    let ph = r
        .parameters
        .iter()
        .find(|p| p.parameter == "pH")
        .expect("pH");
    assert_eq!((ph.periods_judged, ph.periods_exceeding), (48, 0));
    let volumes: Vec<(&str, f64)> = r
        .daily_volumes
        .iter()
        .map(|v| (v.date.as_str(), v.cubic_metres))
        .collect();
    assert_eq!(volumes, vec![("2026-11-14", 864.0), ("2026-11-15", 864.0)]);

    // Daily averages: day 15 averages the saturated hour in.
    let daily = c
        .get_compliance(with_token(
            &t,
            GetComplianceRequest {
                station_id: "Q-1".into(),
                range: range(start(), end()),
                averaging: "24h".into(),
                min_coverage: Some(0.9),
                parameters: vec!["COD".into()],
            },
        ))
        .await
        .expect("daily")
        .into_inner();
    let cod = &daily.parameters[0];
    assert_eq!(
        (cod.periods, cod.periods_judged, cod.periods_exceeding),
        (2, 2, 1)
    );
    assert!(cod.exceedances[0].lower_bound);
}

#[tokio::test]
async fn latest_values_of_every_station() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let r = c
        .get_latest(with_token(&t, GetLatestRequest::default()))
        .await
        .expect("latest")
        .into_inner();
    let got: Vec<(String, String, Option<DateTime<Utc>>)> = r
        .station_ids
        .iter()
        .zip(&r.points)
        .map(|(s, p)| {
            (
                s.clone(),
                p.parameter.clone(),
                p.measured_at.and_then(|t| from_timestamp(&t)),
            )
        })
        .collect();
    let last = end() - Duration::minutes(5);
    assert_eq!(
        got,
        vec![
            ("Q-1".into(), "COD".into(), Some(last)),
            ("Q-1".into(), "Flow".into(), Some(last)),
            ("Q-1".into(), "pH".into(), Some(last)),
            ("Q-2".into(), "pH".into(), Some(local(2026, 11, 15, 9, 0))),
        ]
    );
    let other = c
        .get_latest(with_token(
            &t,
            GetLatestRequest {
                industrial_zone: "KCN Other".into(),
                station_ids: vec![],
            },
        ))
        .await
        .expect("zone")
        .into_inner();
    assert_eq!(other.station_ids, vec!["Q-2".to_string()]);
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let check = |r: Result<tonic::Response<GetAggregatesResponse>, tonic::Status>, field: &str| {
        let e = r.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    };
    let mut unknown = agg("COD", "1h", &[], Fill::None, 0);
    unknown.station_id = "NOPE".into();
    check(
        c.get_aggregates(with_token(&t, unknown)).await,
        "station_id",
    );
    check(
        c.get_aggregates(with_token(&t, agg("BOD5", "1h", &[], Fill::None, 0)))
            .await,
        "parameter",
    );
    let mut inverted = agg("COD", "1h", &[], Fill::None, 0);
    inverted.range = range(end(), start());
    check(c.get_aggregates(with_token(&t, inverted)).await, "range");
    let mut missing = agg("COD", "1h", &[], Fill::None, 0);
    missing.range = None;
    check(c.get_aggregates(with_token(&t, missing)).await, "range");
    check(
        c.get_aggregates(with_token(&t, agg("COD", "7x", &[], Fill::None, 0)))
            .await,
        "interval",
    );
    check(
        c.get_aggregates(with_token(&t, agg("COD", "1h", &["median"], Fill::None, 0)))
            .await,
        "functions",
    );
    let mut long = agg("COD", "1m", &[], Fill::None, 0);
    long.range = range(start(), start() + Duration::days(100));
    check(c.get_aggregates(with_token(&t, long)).await, "interval");

    let e = c
        .get_series(with_token(
            &t,
            series("Q-1", &[], 50_000, String::new(), false),
        ))
        .await
        .expect_err("page size");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("page_size"), "{}", e.message());
    let e = c
        .get_series(with_token(
            &t,
            series("Q-1", &[], 10, "not-a-token".into(), false),
        ))
        .await
        .expect_err("token");
    assert!(e.message().starts_with("page_token"), "{}", e.message());
    let e = c
        .get_alert_history(with_token(
            &t,
            GetAlertHistoryRequest {
                alert_id: "none".into(),
            },
        ))
        .await
        .expect_err("no alert");
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn rejected_readings_and_alerts() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let r = c
        .list_rejected(with_token(
            &t,
            ListRejectedRequest {
                station_id: "Q-1".into(),
                range: range(start(), end()),
                page_size: 0,
                page_token: String::new(),
            },
        ))
        .await
        .expect("rejected")
        .into_inner();
    assert_eq!(r.readings.len(), 1);
    assert_eq!(
        (
            r.readings[0].reason.as_str(),
            r.readings[0].parameter.as_str()
        ),
        ("out_of_range", "COD")
    );

    // Two alerts, one acknowledged, as alerting records them.
    for (id, station, opened, ack) in [
        ("a-1", "Q-1", local(2026, 11, 15, 1, 0), true),
        ("a-2", "Q-2", local(2026, 11, 15, 2, 0), false),
    ] {
        let mut alert = Alert {
            id: id.into(),
            rule: "exceedance".into(),
            station_id: station.into(),
            parameter: "COD".into(),
            severity: AlertSeverity::Critical as i32,
            state: AlertState::Open as i32,
            industrial_zone: if station == "Q-1" {
                "KCN Test"
            } else {
                "KCN Other"
            }
            .into(),
            opened_at: Some(to_timestamp(opened)),
            ..Default::default()
        };
        let state = if ack { "acknowledged" } else { "open" };
        f.db.execute(
            "INSERT INTO alerts (id, rule, station_id, parameter, window_start, severity, state, message, industrial_zone, opened_at, updated_at) \
             VALUES ($1, 'exceedance', $2, 'COD', $3, 'critical', $4, 'COD above permit', $5, $3, $3)",
            &[&id, &station, &opened, &state, &alert.industrial_zone],
        )
        .await
        .expect("alert");
        let mut events = vec![("opened", alert.clone(), "")];
        if ack {
            alert.state = AlertState::Acknowledged as i32;
            alert.acknowledged_by = "officer@test".into();
            events.push(("acknowledged", alert.clone(), "officer@test"));
        }
        for (change, a, actor) in events {
            f.db.execute(
                "INSERT INTO alert_events (alert_id, change, state, actor, at, alert) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &change, &state, &actor, &opened, &a.encode_to_vec()],
            )
            .await
            .expect("event");
        }
    }
    let all = c
        .list_alerts(with_token(&t, ListAlertsRequest::default()))
        .await
        .expect("alerts")
        .into_inner();
    let ids: Vec<&str> = all.alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["a-2", "a-1"], "newest first");
    let open = c
        .list_alerts(with_token(
            &t,
            ListAlertsRequest {
                states: vec![AlertState::Open as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("open")
        .into_inner();
    assert_eq!(
        open.alerts
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        vec!["a-2"]
    );
    let zone = c
        .list_alerts(with_token(
            &t,
            ListAlertsRequest {
                industrial_zone: "KCN Test".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("zone")
        .into_inner();
    assert_eq!(zone.alerts.len(), 1);
    assert!(
        zone.next_page_token.is_empty(),
        "one alert in the zone: no further page"
    );
    let paged = c
        .list_alerts(with_token(
            &t,
            ListAlertsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("page 1")
        .into_inner();
    let rest = c
        .list_alerts(with_token(
            &t,
            ListAlertsRequest {
                page_size: 1,
                page_token: paged.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(
        (paged.alerts[0].id.as_str(), rest.alerts[0].id.as_str()),
        ("a-2", "a-1")
    );
    let h = c
        .get_alert_history(with_token(
            &t,
            GetAlertHistoryRequest {
                alert_id: "a-1".into(),
            },
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        h.alert.map(|a| a.state),
        Some(AlertState::Acknowledged as i32)
    );
    let changes: Vec<(&str, &str)> = h
        .changes
        .iter()
        .map(|c| (c.change.as_str(), c.actor.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![("opened", ""), ("acknowledged", "officer@test")]
    );

    // Counted by state, severity and rule, under the same filter.
    let counts = c
        .count_alerts(with_token(&t, ListAlertsRequest::default()))
        .await
        .expect("counts")
        .into_inner();
    let pairs = |v: &[Count]| {
        v.iter()
            .map(|c| (c.key.clone(), c.count))
            .collect::<Vec<_>>()
    };
    assert_eq!((counts.total, counts.unacknowledged), (2, 1));
    assert_eq!(
        pairs(&counts.by_state),
        vec![("acknowledged".into(), 1), ("open".into(), 1)]
    );
    assert_eq!(pairs(&counts.by_severity), vec![("critical".into(), 2)]);
    assert_eq!(pairs(&counts.by_rule), vec![("exceedance".into(), 2)]);
    let zone = c
        .count_alerts(with_token(
            &t,
            ListAlertsRequest {
                industrial_zone: "KCN Other".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("zone counts")
        .into_inner();
    assert_eq!((zone.total, zone.unacknowledged), (1, 1));

    // Who the token names (a page's login).
    let me = c
        .who_am_i(with_token(&t, WhoAmIRequest {}))
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(me.role, "analyst");
    assert_eq!(me.identity, "analyst@test");
    let e = c
        .who_am_i(with_token("qt_nonsense", WhoAmIRequest {}))
        .await
        .expect_err("a token never issued");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
}

/// The standard health service answers for the query service, and server
/// reflection lists it (what grpcurl and Postman use), without a token.
/// A reading received more than 5 minutes after its measurement (a
/// logger's back-fill) is returned marked late; the others are not.
#[tokio::test]
async fn back_filled_readings_are_marked_late() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let at = local(2026, 11, 14, 0, 2);
    f.db.execute(
        "INSERT INTO readings (station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source, received_at) \
         VALUES ('Q-1', 'COD', $1, 120, 'mg/L', 1, 'N', 'valid', 6, $2)",
        &[&at, &(at + Duration::days(2))],
    )
    .await
    .expect("back-filled reading");
    let page = c
        .get_series(with_token(
            &t,
            GetSeriesRequest {
                station_id: "Q-1".into(),
                parameters: vec!["COD".into()],
                range: range(start(), local(2026, 11, 14, 0, 10)),
                page_size: 10,
                ..Default::default()
            },
        ))
        .await
        .expect("series")
        .into_inner();
    let marks: Vec<_> = page
        .points
        .iter()
        .map(|p| (p.measured_at.and_then(|t| from_timestamp(&t)), p.late))
        .collect();
    assert_eq!(
        marks,
        vec![
            (Some(local(2026, 11, 14, 0, 0)), false),
            (Some(at), true),
            (Some(local(2026, 11, 14, 0, 5)), false),
        ]
    );
}

/// A station's events: its notices as the processor stores them, and its
/// silences (data-gap alerts), by time, paged; another station's are not
/// listed.
#[tokio::test]
async fn station_events_are_notices_and_silences_in_time_order() {
    let f = Fixture::new().await;
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let notice = |station: &str, kind: &str, code: &str, at, own| quantrac_db::events::EventRow {
        station_id: station.into(),
        kind: kind.into(),
        code: code.into(),
        at,
        station_time: own,
        detail: format!("DataTime=...;{code}"),
        source: SourceProtocol::TcpHj212 as i32,
        received_at: Some(at),
    };
    let rows = [
        notice("Q-1", "restart", "2081", local(2026, 11, 15, 9, 55), true),
        notice(
            "Q-1",
            "device_status",
            "2021",
            local(2026, 11, 15, 12, 0),
            false,
        ),
        notice("Q-2", "restart", "2081", local(2026, 11, 15, 9, 0), true),
    ];
    assert_eq!(
        quantrac_db::events::write(&f.db, &rows)
            .await
            .expect("write"),
        3
    );
    // A resent notice is the same event.
    assert_eq!(
        quantrac_db::events::write(&f.db, &rows[..1])
            .await
            .expect("again"),
        0
    );
    f.db.execute(
        "INSERT INTO alerts (id, rule, station_id, parameter, window_start, window_end, severity, state, message, industrial_zone, opened_at, updated_at) \
         VALUES ('gap-1', 'data_gap', 'Q-1', 'COD', $1, $2, 'warning', 'open', 'Mất dữ liệu / data gap', 'KCN Test', $2, $2)",
        &[&local(2026, 11, 15, 10, 0), &local(2026, 11, 15, 11, 0)],
    )
    .await
    .expect("gap alert");
    let ask = |token: &str| ListStationEventsRequest {
        station_id: "Q-1".into(),
        range: range(start(), end()),
        page_size: 2,
        page_token: token.into(),
    };
    let first = c
        .list_station_events(with_token(&t, ask("")))
        .await
        .expect("events")
        .into_inner();
    assert!(!first.next_page_token.is_empty(), "3 events, pages of 2");
    let second = c
        .list_station_events(with_token(&t, ask(&first.next_page_token)))
        .await
        .expect("page 2")
        .into_inner();
    assert!(second.next_page_token.is_empty());
    let events: Vec<_> = first.events.iter().chain(&second.events).collect();
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.code.as_str(),
                e.at.and_then(|t| from_timestamp(&t)),
                e.end.and_then(|t| from_timestamp(&t)),
                e.station_time,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "restart",
                "2081",
                Some(local(2026, 11, 15, 9, 55)),
                None,
                true
            ),
            (
                "silence",
                "COD",
                Some(local(2026, 11, 15, 10, 0)),
                Some(local(2026, 11, 15, 11, 0)),
                true
            ),
            (
                "device_status",
                "2021",
                Some(local(2026, 11, 15, 12, 0)),
                None,
                false
            ),
        ]
    );
    assert_eq!(events[1].alert_id, "gap-1");
    let unknown = c
        .list_station_events(with_token(
            &t,
            ListStationEventsRequest {
                station_id: "NOPE".into(),
                ..ask("")
            },
        ))
        .await
        .expect_err("unknown station");
    assert_eq!(unknown.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn health_and_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let f = Fixture::new().await;
    let channel = quantrac_testkit::grpc::channel(f.addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "quantrac.v1.QueryService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"quantrac.v1.QueryService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

/// A logger's own hourly record (CN 2061) stands for an hour without
/// real-time values: the silent hour 10:00-11:00 on the 15th, reported as
/// an hourly average of 130, counts as complete and is judged (above the
/// permit's 100); an hourly record beside real-time values changes nothing.
#[tokio::test]
async fn hourly_records_count_toward_completeness() {
    let f = Fixture::new().await;
    for (at, avg) in [
        (local(2026, 11, 15, 10, 0), 130.0),
        (local(2026, 11, 15, 9, 0), 900.0),
    ] {
        f.db.execute(
            "INSERT INTO reported_aggregates (station_id, parameter, kind, period_start, period_seconds, avg, \
             unit, status, device_flag, qc_flag, source) \
             VALUES ('Q-1', 'COD', 'hour', $1, 3600, $2, 'mg/L', 1, 'N', 'valid', 3)",
            &[&at, &avg],
        )
        .await
        .expect("reported hour");
    }
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let r = c
        .get_compliance(with_token(
            &t,
            GetComplianceRequest {
                station_id: "Q-1".into(),
                range: range(start(), end()),
                averaging: String::new(),
                min_coverage: None,
                parameters: vec!["COD".into()],
            },
        ))
        .await
        .expect("compliance")
        .into_inner();
    let cod = &r.parameters[0];
    // One more hour judged and exceeding than without the record.
    assert_eq!(
        (cod.periods, cod.periods_judged, cod.periods_exceeding),
        (48, 47, 24)
    );
    let hour = cod
        .exceedances
        .iter()
        .find(|e| e.start.and_then(|t| from_timestamp(&t)) == Some(local(2026, 11, 15, 10, 0)))
        .expect("the reported hour");
    assert_eq!(hour.average, 130.0);
    // The 09:00 hour keeps its real-time average (140 is 11:00; 09:00 is 120).
    assert!(
        cod.exceedances.iter().all(|e| e.average != 900.0),
        "{:?}",
        cod.exceedances
    );
    assert_eq!((cod.readings, cod.expected), (552, 576));
}
