//! Scenario tests of the rules engine with a controlled clock: every rule
//! kind fires, does not fire at its boundary, clears with hysteresis, raises
//! nothing twice on replay or after a restart, and judges a backlog by
//! measurement time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use quantrac_alerting::alert::{
    AlertEvent, AlertKey, AlertRecord, Change, RuleKind, Severity, State,
};
use quantrac_alerting::engine::{Engine, EngineError};
use quantrac_alerting::rules::{RulesConfig, RulesError};
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::registry::Registry;
use quantrac_proto::v1::StoredReading;

/// S1: COD (Cmax 100, 80 from 2025-06-01 local), pH 6-9, Flow (no limit).
/// S2: one parameter, never heard from in most tests.
const REGISTRY: &str = r#"
[[stations]]
id = "S1"
name = "Test outfall"
facility = "Test plant"
industrial_zone = "KCN Test"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [
  { code = "COD",  unit = "mg/L", range_min = 0, range_max = 1000, expected_interval = "5m" },
  { code = "pH",   unit = "pH",   range_min = 0, range_max = 14,   expected_interval = "5m" },
  { code = "Flow", unit = "m3/h", range_min = 0, range_max = 500,  expected_interval = "5m" },
]
limits = [
  { parameter = "COD", max = 100, regulation = "QCVN 40:2011/BTNMT", column = "B", effective_from = 2020-01-01 },
  { parameter = "COD", max = 80,  regulation = "QCVN 40:2025/BTNMT", effective_from = 2025-06-01 },
  { parameter = "pH",  min = 6, max = 9, regulation = "QCVN 40:2011/BTNMT", column = "A", effective_from = 2020-01-01 },
]

[[stations]]
id = "S2"
name = "Other outfall"
facility = "Other plant"
industrial_zone = "KCN Other"
province = "Phú Yên"
latitude = 13.1
longitude = 109.2
kind = "wastewater"
parameters = [
  { code = "COD", unit = "mg/L", range_min = 0, range_max = 1000, expected_interval = "10m" },
]
"#;

fn registry() -> Arc<Registry> {
    Arc::new(Registry::from_toml(REGISTRY).unwrap_or_else(|e| panic!("registry: {e}")))
}

fn rules(text: &str) -> RulesConfig {
    RulesConfig::from_toml(text).unwrap_or_else(|e| panic!("rules: {e}"))
}

fn engine(text: &str) -> Engine {
    Engine::new(rules(text), registry())
}

/// Only the rules a test is about, so that the others stay quiet.
const ONLY_LIMIT: &str = r#"
[defaults]
averages.enabled = false
early_warning.fraction = 0
flatline.count = 0
"#;

/// 2025-01-15 at `h:m` UTC (17:00 UTC is local midnight).
fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 15, 0, 0, 0)
        .single()
        .unwrap_or_default()
        + TimeDelta::minutes(i64::from(h) * 60 + i64::from(m))
}

fn mins(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

fn reading(
    station: &str,
    parameter: &str,
    t: DateTime<Utc>,
    value: f64,
    qc: &str,
) -> StoredReading {
    StoredReading {
        station_id: station.into(),
        parameter: parameter.into(),
        value,
        unit: String::new(),
        measured_at: Some(to_timestamp(t)),
        qc_flag: qc.into(),
        ..Default::default()
    }
}

fn valid(parameter: &str, t: DateTime<Utc>, value: f64) -> StoredReading {
    reading("S1", parameter, t, value, "valid")
}

/// Observes each reading with the wall clock one minute after it was measured.
fn feed(e: &mut Engine, readings: &[StoredReading]) -> Vec<AlertEvent> {
    readings
        .iter()
        .flat_map(|r| {
            let t = quantrac_proto::domain::from_timestamp(
                r.measured_at.as_ref().unwrap_or(&Default::default()),
            )
            .unwrap_or_default();
            e.observe(r, t + mins(1))
        })
        .collect()
}

fn of(events: &[AlertEvent], rule: RuleKind) -> Vec<&AlertEvent> {
    events.iter().filter(|e| e.alert.key.rule == rule).collect()
}

fn changes(events: &[AlertEvent], rule: RuleKind) -> Vec<(String, String)> {
    of(events, rule)
        .iter()
        .map(|e| (e.change.as_str().to_owned(), e.alert.id()))
        .collect()
}

fn opened(events: &[AlertEvent]) -> Vec<&AlertEvent> {
    events
        .iter()
        .filter(|e| e.change == Change::Opened)
        .collect()
}

fn resolved(events: &[AlertEvent]) -> Vec<&AlertEvent> {
    events
        .iter()
        .filter(|e| matches!(e.change, Change::Resolved { .. }))
        .collect()
}

/// COD every 5 minutes from `start` with these values.
fn series(parameter: &str, start: DateTime<Utc>, values: &[f64]) -> Vec<StoredReading> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| valid(parameter, start + mins(5 * i as i64), v))
        .collect()
}

// ---------------------------------------------------------------------------
// Limit exceeded by a single reading

#[test]
fn limit_fires_above_cmax_not_at_it() {
    let mut e = engine(ONLY_LIMIT);
    let ev = feed(&mut e, &series("COD", at(3, 25), &[50.0, 100.0, 100.5]));
    let limit = of(&ev, RuleKind::LimitExceeded);
    assert_eq!(limit.len(), 1, "{ev:#?}");
    let a = &limit[0].alert;
    assert_eq!(limit[0].change, Change::Opened);
    assert_eq!(a.id(), "limit_exceeded/S1/COD/2025-01-15T03:35:00Z");
    assert_eq!(a.key.window_start, at(3, 35));
    assert_eq!(a.observed_value, 100.5);
    assert_eq!(a.limit_value, 100.0);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.state, State::Open);
    assert_eq!(a.industrial_zone, "KCN Test");
    assert_eq!(a.opened_at, at(3, 35));
    assert!(a.message.contains("COD"), "{}", a.message);
}

#[test]
fn limit_clears_with_hysteresis_only() {
    let mut e = engine(ONLY_LIMIT);
    // 120 opens; 98 is below the limit but not below 100 x 0.95; 130 is
    // worse; 96 still inside the band; 94.9 resolves.
    let ev = feed(
        &mut e,
        &series("COD", at(3, 0), &[120.0, 98.0, 130.0, 96.0, 94.9]),
    );
    assert_eq!(
        changes(&ev, RuleKind::LimitExceeded)
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>(),
        ["opened", "updated", "resolved"]
    );
    let last = ev.last().map(|e| &e.alert);
    assert_eq!(last.map(|a| a.observed_value), Some(130.0));
    assert_eq!(last.and_then(|a| a.window_end), Some(at(3, 20)));
    assert_eq!(last.and_then(|a| a.resolved_by.clone()), None);
    assert_eq!(e.open_alerts().count(), 0);

    // A new exceedance is a new incident with a new key.
    let ev = feed(&mut e, &[valid("COD", at(3, 25), 101.0)]);
    let o = opened(&ev);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].alert.key.window_start, at(3, 25));
}

#[test]
fn ph_range_both_ways_with_margin() {
    let mut e = engine(ONLY_LIMIT);
    // Low side: 5.9 < 6 opens; 6.1 is inside but not by 0.05 x (9 - 6);
    // 6.2 resolves.
    let ev = feed(&mut e, &series("pH", at(1, 0), &[7.0, 6.0, 5.9, 6.1, 6.2]));
    assert_eq!(
        changes(&ev, RuleKind::LimitExceeded)
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>(),
        ["opened", "resolved"]
    );
    assert_eq!(of(&ev, RuleKind::LimitExceeded)[0].alert.limit_value, 6.0);
    assert_eq!(
        of(&ev, RuleKind::LimitExceeded)[1].alert.window_end,
        Some(at(1, 20))
    );
    // High side: 9 complies, 9.2 opens, 8.9 no, 8.8 resolves (< 8.85).
    let ev = feed(&mut e, &series("pH", at(2, 0), &[9.0, 9.2, 8.9, 8.8]));
    let limit = of(&ev, RuleKind::LimitExceeded);
    assert_eq!(limit.len(), 2, "{ev:#?}");
    assert_eq!(limit[0].alert.limit_value, 9.0);
    assert_eq!(limit[0].alert.key.window_start, at(2, 5));
    assert_eq!(limit[1].alert.window_end, Some(at(2, 15)));
}

#[test]
fn only_valid_readings_and_saturated_analysers_are_judged() {
    let mut e = engine(ONLY_LIMIT);
    let mut ev = Vec::new();
    for (i, qc) in [
        "calibrating",
        "device_error",
        "maintenance",
        "manual",
        "bogus",
    ]
    .iter()
    .enumerate()
    {
        let t = at(4, 0) + mins(5 * i as i64);
        ev.extend(e.observe(&reading("S1", "COD", t, 900.0, qc), t));
    }
    ev.extend(e.observe(&valid("COD", at(5, 0), f64::NAN), at(5, 0)));
    assert!(of(&ev, RuleKind::LimitExceeded).is_empty(), "{ev:#?}");
    assert!(of(&ev, RuleKind::AverageExceeded).is_empty(), "{ev:#?}");
}

/// A saturated analyser (`above_range`, HJ 212 flag T) says "at least this
/// much": past Cmax it opens the limit alert, saying so.
#[test]
fn a_saturated_analyser_past_the_limit_opens_an_exceedance() {
    let mut e = engine(ONLY_LIMIT);
    let ev = feed(
        &mut e,
        &[reading("S1", "COD", at(4, 0), 1000.0, "above_range")],
    );
    let o = opened(&ev);
    assert_eq!(o.len(), 1, "{ev:#?}");
    assert_eq!(o[0].alert.key.rule, RuleKind::LimitExceeded);
    assert_eq!(
        (o[0].alert.observed_value, o[0].alert.limit_value),
        (1000.0, 100.0)
    );
    let m = &o[0].alert.message;
    assert!(m.contains("COD ≥ 1000"), "{m}");
    assert!(m.contains("analyser saturated"), "{m}");
}

/// A lower bound below the limit proves nothing either way: it opens
/// nothing and does not resolve an open exceedance.
#[test]
fn a_saturated_value_below_the_limit_neither_opens_nor_clears() {
    let mut e = engine(ONLY_LIMIT);
    let ev = feed(
        &mut e,
        &[reading("S1", "COD", at(4, 0), 60.0, "above_range")],
    );
    assert!(opened(&ev).is_empty(), "{ev:#?}");

    let ev = feed(&mut e, &[valid("COD", at(4, 5), 300.0)]);
    assert_eq!(opened(&ev).len(), 1, "{ev:#?}");
    let ev = feed(
        &mut e,
        &[reading("S1", "COD", at(4, 10), 20.0, "above_range")],
    );
    assert!(
        ev.iter()
            .all(|x| !matches!(x.change, Change::Resolved { .. })),
        "{ev:#?}"
    );
    // A valid value back inside still clears it.
    let ev = feed(&mut e, &[valid("COD", at(4, 15), 20.0)]);
    assert_eq!(changes(&ev, RuleKind::LimitExceeded).len(), 1, "{ev:#?}");
}

/// A window holding a saturated value has a lower-bound average: it can
/// open the average alert and says so.
#[test]
fn a_window_with_a_saturated_value_is_a_lower_bound() {
    let mut e = engine(ONLY_AVERAGES);
    let mut readings: Vec<_> = (0..11).map(|i| valid("COD", at(4, 5 * i), 60.0)).collect();
    readings.push(reading("S1", "COD", at(4, 55), 1000.0, "above_range"));
    readings.push(valid("COD", at(5, 0), 60.0)); // closes 04:00-05:00
    let ev = feed(&mut e, &readings);
    let avg = of(&ev, RuleKind::AverageExceeded);
    assert_eq!(avg.len(), 1, "{ev:#?}");
    let m = &avg[0].alert.message;
    assert!(m.contains("≥ 138.33"), "{m}");
    assert!(m.contains("analyser saturated"), "{m}");
}

#[test]
fn limit_in_force_on_the_local_date() {
    let mut e = engine(ONLY_LIMIT);
    let june1_local = Utc
        .with_ymd_and_hms(2025, 5, 31, 17, 0, 0)
        .single()
        .unwrap_or_default();
    // 23:30 local on May 31: Cmax 100, 90 complies.
    let ev = feed(&mut e, &[valid("COD", june1_local - mins(30), 90.0)]);
    assert!(opened(&ev).is_empty(), "{ev:#?}");
    // 00:30 local on June 1: the new Cmax 80.
    let ev = feed(&mut e, &[valid("COD", june1_local + mins(30), 90.0)]);
    let o = opened(&ev);
    assert_eq!(o.len(), 1, "{ev:#?}");
    assert_eq!(o[0].alert.limit_value, 80.0);
}

#[test]
fn flow_without_limit_gets_no_limit_rules() {
    let mut e = engine("");
    let ev = feed(
        &mut e,
        &series("Flow", at(1, 0), &[100.0, 490.0, 10.0, 300.0]),
    );
    assert!(ev.is_empty(), "{ev:#?}");
    // Unknown station: no limits either, but no panic.
    let ev = feed(&mut e, &[reading("NOPE", "COD", at(1, 0), 1e6, "valid")]);
    assert!(ev.is_empty(), "{ev:#?}");
}

// ---------------------------------------------------------------------------
// Averages

const ONLY_AVERAGES: &str = r#"
[defaults]
single_limit.enabled = false
early_warning.fraction = 0
flatline.count = 0
averages.windows = ["1h"]
"#;

#[test]
fn hourly_average_fires_when_complete_and_closed() {
    let mut e = engine(ONLY_AVERAGES);
    // 9 of 12 expected readings (= 0.75 x 12) averaging 110.
    let mut rs = series("COD", at(10, 0), &[110.0; 9]);
    let ev = feed(&mut e, &rs);
    assert!(ev.is_empty(), "not closed yet: {ev:#?}");
    // A reading at the window end closes it.
    rs = vec![valid("COD", at(11, 0), 50.0)];
    let ev = feed(&mut e, &rs);
    let avg = of(&ev, RuleKind::AverageExceeded);
    assert_eq!(avg.len(), 1, "{ev:#?}");
    let a = &avg[0].alert;
    assert_eq!(a.id(), "average_exceeded/S1/COD/2025-01-15T10:00:00Z/1h");
    assert_eq!(a.key.window_len, Some(Duration::from_secs(3600)));
    assert_eq!(a.window_end, Some(at(11, 0)));
    assert_eq!(a.observed_value, 110.0);
    assert_eq!(a.limit_value, 100.0);
    assert_eq!(a.opened_at, at(11, 0));
}

#[test]
fn average_below_completeness_or_at_limit_does_not_count() {
    // 8 of 12 readings: 0.67 < 0.75.
    let mut e = engine(ONLY_AVERAGES);
    let mut rs = series("COD", at(10, 0), &[150.0; 8]);
    rs.push(valid("COD", at(11, 0), 50.0));
    let ev = feed(&mut e, &rs);
    assert!(of(&ev, RuleKind::AverageExceeded).is_empty(), "{ev:#?}");

    // Complete, average exactly Cmax.
    let mut e = engine(ONLY_AVERAGES);
    let mut rs = series(
        "COD",
        at(10, 0),
        &[
            90.0, 110.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0,
        ],
    );
    rs.push(valid("COD", at(11, 0), 50.0));
    let ev = feed(&mut e, &rs);
    assert!(of(&ev, RuleKind::AverageExceeded).is_empty(), "{ev:#?}");
}

#[test]
fn average_closed_by_the_wall_clock_after_grace() {
    let mut e = engine(ONLY_AVERAGES);
    let ev = feed(&mut e, &series("COD", at(10, 0), &[120.0; 12]));
    assert!(ev.is_empty());
    // Window ends 11:00, grace 15m: not at 11:15, at 11:15:01.
    let ev = e.tick(at(11, 15));
    assert!(of(&ev, RuleKind::AverageExceeded).is_empty(), "{ev:#?}");
    let ev = e.tick(at(11, 15) + TimeDelta::seconds(1));
    assert_eq!(of(&ev, RuleKind::AverageExceeded).len(), 1, "{ev:#?}");
    // A later reading closing it again raises nothing.
    let ev = feed(&mut e, &[valid("COD", at(11, 20), 50.0)]);
    assert!(opened(&ev).is_empty(), "{ev:#?}");
}

#[test]
fn average_resolves_with_hysteresis_on_a_later_window() {
    let mut e = engine(ONLY_AVERAGES);
    let mut rs = series("COD", at(10, 0), &[120.0; 12]);
    rs.extend(series("COD", at(11, 0), &[98.0; 12])); // below 100, above 95
    rs.extend(series("COD", at(12, 0), &[94.0; 12])); // below 95
    let ev = feed(&mut e, &rs);
    assert_eq!(
        changes(&ev, RuleKind::AverageExceeded),
        [(
            "opened".to_owned(),
            "average_exceeded/S1/COD/2025-01-15T10:00:00Z/1h".to_owned()
        )],
        "the 11:00 hour (98) does not resolve it"
    );
    // The 12:00 hour (94) closes at 13:00 and resolves it.
    let ev = feed(&mut e, &[valid("COD", at(13, 0), 50.0)]);
    let r = resolved(&ev);
    assert_eq!(r.len(), 1, "{ev:#?}");
    assert_eq!(r[0].alert.key.window_start, at(10, 0));
    assert_eq!(r[0].alert.window_end, Some(at(11, 0)));
    assert_eq!(e.open_alerts().count(), 0);
}

#[test]
fn day_average_is_aligned_to_local_midnight() {
    let mut e = engine(
        r#"
[defaults]
single_limit.enabled = false
early_warning.fraction = 0
flatline.count = 0
averages.windows = ["24h"]
averages.completeness = 0.05
"#,
    );
    // 0.05 x 288 = 14.4: 15 readings needed. Local day 2025-01-15 runs from
    // 2025-01-14T17:00Z to 2025-01-15T17:00Z.
    let day_start = at(0, 0) - TimeDelta::hours(7);
    let mut rs = series("COD", day_start + mins(5), &[130.0; 14]);
    rs.push(valid("COD", at(17, 0), 10.0));
    let ev = feed(&mut e, &rs);
    assert!(
        of(&ev, RuleKind::AverageExceeded).is_empty(),
        "14 < 14.4: {ev:#?}"
    );

    let mut e = engine(
        r#"
[defaults]
single_limit.enabled = false
early_warning.fraction = 0
flatline.count = 0
averages.windows = ["24h", "1h"]
averages.completeness = 0.05
"#,
    );
    let mut rs = series("COD", day_start, &[130.0; 15]);
    rs.push(valid("COD", at(17, 0), 10.0));
    let ev = feed(&mut e, &rs);
    let day: Vec<_> = of(&ev, RuleKind::AverageExceeded)
        .into_iter()
        .filter(|e| e.alert.key.window_len == Some(Duration::from_secs(86_400)))
        .collect();
    assert_eq!(day.len(), 1, "{ev:#?}");
    assert_eq!(day[0].alert.key.window_start, day_start);
    assert_eq!(
        day[0].alert.id(),
        "average_exceeded/S1/COD/2025-01-14T17:00:00Z/24h"
    );
    // The 1 h window starting at the same instant is another alert.
    let hour: Vec<_> = opened(&ev)
        .into_iter()
        .filter(|e| e.alert.key.window_len == Some(Duration::from_secs(3600)))
        .map(|e| e.alert.key.window_start)
        .collect();
    assert_eq!(hour, [day_start, day_start + TimeDelta::hours(1)]);
}

#[test]
fn late_readings_rejudge_a_closed_window() {
    let mut e = engine(ONLY_AVERAGES);
    // 8 readings: incomplete when closed.
    let mut rs = series("COD", at(10, 0), &[120.0; 8]);
    rs.push(valid("COD", at(11, 0), 50.0));
    let ev = feed(&mut e, &rs);
    assert!(opened(&ev).is_empty());
    // The missing ones arrive late: complete now.
    let ev = feed(&mut e, &[valid("COD", at(10, 45), 130.0)]);
    let o = opened(&ev);
    assert_eq!(o.len(), 1, "{ev:#?}");
    assert_eq!(o[0].alert.key.window_start, at(10, 0));
    // More late data making it worse: updated, not reopened.
    let ev = feed(&mut e, &[valid("COD", at(10, 50), 300.0)]);
    assert_eq!(
        changes(&ev, RuleKind::AverageExceeded)[0].0,
        "updated",
        "{ev:#?}"
    );
}

// ---------------------------------------------------------------------------
// Early warning

const ONLY_WARNING: &str = r#"
[defaults]
single_limit.enabled = false
flatline.count = 0
averages.windows = ["1h"]
early_warning.fraction = 0.8
"#;

#[test]
fn early_warning_on_values() {
    let mut e = engine(ONLY_WARNING);
    // 80 = 0.8 x 100 does not warn; 85 does.
    let ev = feed(
        &mut e,
        &[valid("COD", at(1, 0), 80.0), valid("COD", at(1, 5), 85.0)],
    );
    let w = of(&ev, RuleKind::EarlyWarning);
    assert_eq!(w.len(), 1, "{ev:#?}");
    assert_eq!(w[0].alert.key.window_start, at(1, 5));
    assert_eq!(w[0].alert.key.window_len, None);
    assert_eq!(w[0].alert.limit_value, 80.0);
    assert_eq!(w[0].alert.severity, Severity::Warning);
    // 77 is below 80 but not below 80 x 0.95 = 76; 75 resolves.
    let ev = feed(&mut e, &[valid("COD", at(1, 10), 77.0)]);
    assert!(resolved(&ev).is_empty(), "{ev:#?}");
    let ev = feed(&mut e, &[valid("COD", at(1, 15), 75.0)]);
    assert_eq!(resolved(&ev).len(), 1, "{ev:#?}");
    // A jump straight past the limit is the limit's business, not a warning.
    let mut e = engine("[defaults]\nflatline.count = 0\naverages.enabled = false\n");
    let ev = feed(
        &mut e,
        &[valid("COD", at(1, 0), 50.0), valid("COD", at(1, 5), 120.0)],
    );
    assert!(of(&ev, RuleKind::EarlyWarning).is_empty(), "{ev:#?}");
    assert_eq!(of(&ev, RuleKind::LimitExceeded).len(), 1);
}

#[test]
fn early_warning_on_ph_range() {
    let mut e = engine(
        "[defaults]\nflatline.count = 0\naverages.enabled = false\n[parameters.pH]\nearly_warning.fraction = 0.9\n",
    );
    // Range 6-9, fraction 0.9: warn above 8.7 or below 6.3.
    let ev = feed(&mut e, &series("pH", at(1, 0), &[7.0, 8.7, 8.75, 6.25]));
    let w = of(&ev, RuleKind::EarlyWarning);
    assert_eq!(w.len(), 1, "one incident: {ev:#?}");
    assert_eq!(w[0].alert.key.window_start, at(1, 10));
}

#[test]
fn early_warning_on_averages() {
    let mut e = engine(ONLY_WARNING);
    // Values alternate 75/95: each 95 warns, the hour averages 85.
    let values: Vec<f64> = (0..12)
        .map(|i| if i % 2 == 0 { 75.0 } else { 95.0 })
        .collect();
    let mut rs = series("COD", at(10, 0), &values);
    rs.push(valid("COD", at(11, 0), 50.0));
    let ev = feed(&mut e, &rs);
    let win: Vec<_> = of(&ev, RuleKind::EarlyWarning)
        .into_iter()
        .filter(|e| e.alert.key.window_len.is_some())
        .collect();
    assert_eq!(win.len(), 1, "{ev:#?}");
    assert_eq!(win[0].alert.observed_value, 85.0);
    assert_eq!(
        win[0].alert.id(),
        "early_warning/S1/COD/2025-01-15T10:00:00Z/1h"
    );
}

// ---------------------------------------------------------------------------
// Sudden change

const ONLY_RISE: &str = r#"
[defaults]
single_limit.enabled = false
averages.enabled = false
early_warning.fraction = 0
flatline.count = 0
[parameters.COD]
sudden_change.max_rise_per_hour = 60
"#;

/// An analyser's ordinary noise (±6 mg/L between 5-minute readings: "72
/// per hour" if two consecutive values were scaled to an hour) raises
/// nothing for two hours.
#[test]
fn steady_noise_is_not_a_sudden_rise() {
    let mut e = engine(ONLY_RISE);
    let noisy: Vec<f64> = (0..24)
        .map(|i| if i % 2 == 0 { 40.0 } else { 46.0 })
        .collect();
    let ev = feed(&mut e, &series("COD", at(1, 0), &noisy));
    assert!(of(&ev, RuleKind::SuddenChange).is_empty(), "{ev:#?}");
}

#[test]
fn sudden_rise_fires_within_the_hour_and_clears_with_hysteresis() {
    let mut e = engine(ONLY_RISE);
    // 50, then +30 and +31 within 10 minutes: 61 above the hour's lowest.
    let ev = feed(&mut e, &series("COD", at(1, 0), &[50.0, 80.0, 111.0]));
    let r = of(&ev, RuleKind::SuddenChange);
    assert_eq!(r.len(), 1, "{ev:#?}");
    assert_eq!(r[0].alert.key.window_start, at(1, 10));
    assert!((r[0].alert.observed_value - 61.0).abs() < 1e-9);
    assert_eq!(r[0].alert.limit_value, 60.0);
    // 58 above the lowest: below 60 but not below 57: stays open.
    let ev = feed(&mut e, &[valid("COD", at(1, 15), 108.0)]);
    assert!(ev.is_empty(), "{ev:#?}");
    // Just over an hour after the 50, the hour's lowest is 80: +30, resolved.
    let ev = feed(&mut e, &[valid("COD", at(2, 1), 110.0)]);
    assert_eq!(resolved(&ev).len(), 1, "{ev:#?}");
    // Falling never fires.
    let ev = feed(&mut e, &[valid("COD", at(2, 5), 10.0)]);
    assert!(ev.is_empty());
}

// ---------------------------------------------------------------------------
// Data gap

const ONLY_GAP: &str = r#"
[defaults]
averages.enabled = false
early_warning.fraction = 0
flatline.count = 0
"#;

fn all_params(t: DateTime<Utc>) -> Vec<StoredReading> {
    vec![
        valid("COD", t, 50.0),
        valid("pH", t, 7.0),
        valid("Flow", t, 40.0),
    ]
}

#[test]
fn station_gap_fires_after_k_intervals_not_at_it() {
    let mut e = engine(ONLY_GAP);
    for r in all_params(at(10, 0)) {
        e.observe(&r, at(10, 0));
    }
    // 3 x 5 m = 15 m exactly: no.
    let ev = e.tick(at(10, 15));
    assert!(
        of(&ev, RuleKind::DataGap)
            .iter()
            .all(|e| e.alert.key.station_id != "S1"),
        "{ev:#?}"
    );
    let ev = e.tick(at(10, 15) + TimeDelta::seconds(1));
    let gap: Vec<_> = of(&ev, RuleKind::DataGap)
        .into_iter()
        .filter(|e| e.alert.key.station_id == "S1")
        .collect();
    assert_eq!(
        gap.len(),
        1,
        "station-wide only, no per-parameter gaps: {ev:#?}"
    );
    let a = &gap[0].alert;
    assert_eq!(a.key.parameter, "");
    assert_eq!(a.key.window_start, at(10, 0));
    assert_eq!(a.id(), "data_gap/S1//2025-01-15T10:00:00Z");
    assert_eq!(a.opened_at, at(10, 15));
    // Still silent: nothing new.
    let ev = e.tick(at(10, 40));
    assert!(
        opened(&ev).iter().all(|e| e.alert.key.station_id != "S1"),
        "{ev:#?}"
    );

    // A reading measured before the silence began does not end it (a late
    // value from the logger's memory)...
    let ev = e.observe(&valid("COD", at(9, 55), 50.0), at(10, 41));
    assert!(resolved(&ev).is_empty(), "{ev:#?}");
    // ...a newer one does.
    let ev = e.observe(&valid("COD", at(10, 45), 50.0), at(10, 45));
    let r = resolved(&ev);
    assert_eq!(r.len(), 1, "{ev:#?}");
    assert_eq!(r[0].alert.window_end, Some(at(10, 45)));
}

#[test]
fn parameter_gap_while_the_station_still_sends() {
    let mut e = engine(ONLY_GAP);
    for r in all_params(at(10, 0)) {
        e.observe(&r, at(10, 0));
    }
    for m in [5, 10, 15, 20] {
        e.observe(&valid("COD", at(10, m), 50.0), at(10, m));
    }
    let ev = e.tick(at(10, 20));
    let gaps: Vec<_> = opened(&ev)
        .into_iter()
        .filter(|e| e.alert.key.station_id == "S1")
        .map(|e| e.alert.key.parameter.clone())
        .collect();
    assert_eq!(gaps, ["Flow", "pH"], "{ev:#?}");
    let ev = e.observe(&valid("pH", at(10, 21), 7.0), at(10, 21));
    let r = resolved(&ev);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].alert.key.parameter, "pH");
}

#[test]
fn station_never_heard_from_and_gap_hysteresis_on_backlog() {
    let mut e = engine(ONLY_GAP);
    // S2 (interval 10m: 30m threshold) never reports: counted from the
    // engine's first tick.
    assert!(opened(&e.tick(at(8, 0))).is_empty());
    assert!(
        opened(&e.tick(at(8, 30)))
            .iter()
            .all(|e| e.alert.key.station_id != "S2")
    );
    let ev = e.tick(at(8, 31));
    let s2: Vec<_> = opened(&ev)
        .into_iter()
        .filter(|e| e.alert.key.station_id == "S2")
        .collect();
    assert_eq!(s2.len(), 1, "{ev:#?}");
    assert_eq!(s2[0].alert.key.window_start, at(8, 0));

    // S1 sends until 10:00, is silent, then its logger sends the backlog at
    // 14:00 in measurement order.
    for r in all_params(at(10, 0)) {
        e.observe(&r, at(10, 0));
    }
    let ev = e.tick(at(11, 0));
    assert_eq!(
        opened(&ev)
            .iter()
            .filter(|e| e.alert.key.station_id == "S1")
            .count(),
        1
    );
    let mut ev = Vec::new();
    for i in 1..=48 {
        for r in all_params(at(10, 0) + mins(5 * i)) {
            ev.extend(e.observe(&r, at(14, 0)));
        }
        if i == 10 {
            // The wall clock ticks while the backlog is being read: the
            // station is sending, no new gap.
            ev.extend(e.tick(at(14, 0) + TimeDelta::seconds(30)));
        }
    }
    let s1: Vec<_> = of(&ev, RuleKind::DataGap)
        .into_iter()
        .filter(|e| e.alert.key.station_id == "S1")
        .collect();
    assert_eq!(s1.len(), 1, "{s1:#?}");
    assert_eq!(s1[0].change, Change::Resolved { by: None });
}

#[test]
fn restart_does_not_call_a_gap_before_the_tail_arrives() {
    let s1 = |ev: &[AlertEvent]| -> Vec<String> {
        opened(ev)
            .iter()
            .filter(|e| e.alert.key.station_id == "S1")
            .map(|e| e.alert.id())
            .collect()
    };
    let mut before = Vec::new();
    for m in (0..=30).step_by(5) {
        before.extend(all_params(at(10, m)));
    }
    // The engine stopped at 10:31; it restarts at 10:50 with the database's
    // readings, and the topic's tail (10:35..10:50) comes in after.
    let mut e = engine(ONLY_GAP);
    for r in &before {
        e.warm_up(r);
    }
    assert!(s1(&e.tick(at(10, 50))).is_empty());
    assert!(
        s1(&e.tick(at(11, 0))).is_empty(),
        "15 minutes after the restart, not yet"
    );
    for m in (35..=50).step_by(5) {
        for r in all_params(at(10, m)) {
            assert!(s1(&e.observe(&r, at(11, 1))).is_empty());
        }
    }
    assert!(s1(&e.tick(at(11, 10))).is_empty());

    // A station silent since before the restart: the gap it had keeps its
    // key and is not raised again.
    let mut a = engine(ONLY_GAP);
    for r in &before {
        a.observe(r, at(10, 30));
    }
    let ev = a.tick(at(11, 0));
    assert_eq!(s1(&ev), ["data_gap/S1//2025-01-15T10:30:00Z"], "{ev:#?}");
    let mut b = engine(ONLY_GAP);
    b.restore(a.open_alerts().cloned().collect());
    for r in &before {
        b.warm_up(r);
    }
    assert!(s1(&b.tick(at(11, 5))).is_empty());
    assert!(s1(&b.tick(at(12, 0))).is_empty());
    let ev = b.observe(&valid("COD", at(12, 0), 50.0), at(12, 0));
    assert_eq!(resolved(&ev).len(), 1, "{ev:#?}");
}

// ---------------------------------------------------------------------------
// Instrument status

const ONLY_STATUS: &str = r#"
[defaults]
averages.enabled = false
early_warning.fraction = 0
flatline.count = 0
gap.enabled = false
"#;

#[test]
fn long_calibration_fires_after_max_duration_not_at_it() {
    let mut e = engine(ONLY_STATUS);
    let mut ev = Vec::new();
    // Calibrating from 10:00 every 5 minutes; 12:00 is exactly 2 h.
    for i in 0..=24 {
        let t = at(10, 0) + mins(5 * i);
        ev.extend(e.observe(&reading("S1", "COD", t, 999.0, "calibrating"), t));
    }
    assert!(ev.is_empty(), "{ev:#?}");
    let ev = e.observe(
        &reading("S1", "COD", at(12, 5), 999.0, "device_error"),
        at(12, 5),
    );
    let s = of(&ev, RuleKind::InstrumentStatus);
    assert_eq!(s.len(), 1, "{ev:#?}");
    assert_eq!(s[0].alert.key.window_start, at(10, 0));
    assert_eq!(s[0].alert.key.window_len, None);
    assert!(
        s[0].alert.message.contains("device_error"),
        "{}",
        s[0].alert.message
    );
    // Still calibrating: nothing new.
    let ev = e.observe(
        &reading("S1", "COD", at(12, 10), 999.0, "calibrating"),
        at(12, 10),
    );
    assert!(ev.is_empty(), "{ev:#?}");
    // Measuring again: resolved.
    let ev = e.observe(&valid("COD", at(12, 15), 50.0), at(12, 15));
    assert_eq!(resolved(&ev).len(), 1, "{ev:#?}");
}

#[test]
fn too_many_episodes_a_day() {
    let mut e = engine(ONLY_STATUS);
    let mut ev = Vec::new();
    // Local day 2025-01-15 starts at 2025-01-14T17:00Z. Four episodes: fine.
    let day = at(0, 0) - TimeDelta::hours(7);
    let mut t = day;
    for _ in 0..4 {
        ev.extend(e.observe(&reading("S1", "COD", t, 0.0, "calibrating"), t));
        t += mins(5);
        ev.extend(e.observe(&valid("COD", t, 50.0), t));
        t += mins(5);
    }
    assert!(ev.is_empty(), "{ev:#?}");
    // The fifth opens one alert for the day.
    ev.extend(e.observe(&reading("S1", "COD", t, 0.0, "maintenance"), t));
    let s = of(&ev, RuleKind::InstrumentStatus);
    assert_eq!(s.len(), 1, "{ev:#?}");
    assert_eq!(s[0].alert.key.window_start, day);
    assert_eq!(s[0].alert.key.window_len, Some(Duration::from_secs(86_400)));
    // A reading of the next local day ends it.
    let next = day + TimeDelta::hours(24);
    let ev = e.observe(&valid("COD", next, 50.0), next);
    assert_eq!(resolved(&ev).len(), 1, "{ev:#?}");
}

// ---------------------------------------------------------------------------
// Flatline

const ONLY_FLAT: &str = r#"
[defaults]
single_limit.enabled = false
averages.enabled = false
early_warning.fraction = 0
flatline.count = 12
"#;

#[test]
fn flatline_fires_at_count_and_clears_with_hysteresis() {
    let mut e = engine(ONLY_FLAT);
    let ev = feed(&mut e, &series("COD", at(1, 0), &[50.0; 11]));
    assert!(ev.is_empty(), "11 readings: {ev:#?}");
    let ev = feed(&mut e, &[valid("COD", at(1, 55), 50.0)]);
    let f = of(&ev, RuleKind::Flatline);
    assert_eq!(f.len(), 1, "{ev:#?}");
    assert_eq!(f[0].alert.key.window_start, at(1, 0));
    assert_eq!(f[0].alert.observed_value, 50.0);
    // More of the same: one incident.
    let ev = feed(&mut e, &series("COD", at(2, 0), &[50.0; 20]));
    assert!(ev.is_empty(), "{ev:#?}");
    // 50.5 differs, but by less than 0.05 x 50: still stuck.
    let ev = feed(&mut e, &[valid("COD", at(3, 40), 50.5)]);
    assert!(ev.is_empty(), "{ev:#?}");
    let ev = feed(&mut e, &[valid("COD", at(3, 45), 60.0)]);
    assert_eq!(resolved(&ev).len(), 1, "{ev:#?}");
}

#[test]
fn flatline_tolerance_and_invalid_readings() {
    let mut e = engine(
        "[defaults]\nsingle_limit.enabled = false\naverages.enabled = false\nearly_warning.fraction = 0\nflatline.count = 4\nflatline.tolerance = 0.1\n",
    );
    // Within 0.1 of each other, with a calibrating reading in between
    // (ignored: neither extends nor breaks the run).
    let mut ev = feed(&mut e, &series("COD", at(1, 0), &[7.0, 7.05, 6.98]));
    ev.extend(e.observe(
        &reading("S1", "COD", at(1, 12), 0.0, "calibrating"),
        at(1, 12),
    ));
    assert!(ev.is_empty());
    let ev = feed(&mut e, &[valid("COD", at(1, 15), 7.08)]);
    assert_eq!(of(&ev, RuleKind::Flatline).len(), 1, "{ev:#?}");
}

// ---------------------------------------------------------------------------
// Replay, restart, backlog

/// A morning at S1 with every kind of trouble.
fn eventful_morning() -> Vec<StoredReading> {
    let mut rs = Vec::new();
    let mut t = at(1, 0);
    let values = [
        50.0, 52.0, 85.0, 120.0, 130.0, 90.0, 60.0, 61.0, 61.0, 61.0, 61.0, 61.0, 61.0, 61.0, 61.0,
        61.0, 61.0, 61.0, 61.0, 140.0, 150.0, 150.0, 150.0, 150.0, 150.0, 150.0, 150.0, 150.0,
        150.0, 150.0, 150.0, 150.0, 40.0,
    ];
    for v in values {
        rs.push(valid("COD", t, v));
        rs.push(valid("pH", t, if v > 100.0 { 9.4 } else { 7.2 }));
        t += mins(5);
    }
    for i in 0..30 {
        rs.push(reading("S1", "COD", t + mins(5 * i), 0.0, "calibrating"));
    }
    rs
}

const COD_RISE: &str = r#"
[parameters.COD]
sudden_change.max_rise_per_hour = 60
"#;

#[test]
fn replay_raises_nothing() {
    let mut e = engine(COD_RISE);
    let rs = eventful_morning();
    let first = feed(&mut e, &rs);
    let kinds: std::collections::BTreeSet<_> =
        opened(&first).iter().map(|e| e.alert.key.rule).collect();
    assert!(kinds.len() >= 5, "{kinds:?}");
    let second = feed(&mut e, &rs);
    assert!(second.is_empty(), "{second:#?}");
    assert!(e.stats().duplicates >= rs.len() as u64);
}

/// Issue 8's spoofing: a clean value arrives first for a slot, then the
/// station's real, exceeding one. The first stays judged, and the second
/// is not a silent duplicate: it opens a `conflicting_value` alert, once.
#[test]
fn a_different_value_for_a_judged_time_is_a_conflict() {
    let mut e = engine("");
    let ev = feed(&mut e, &[valid("COD", at(1, 0), 10.0)]);
    assert!(ev.is_empty(), "{ev:#?}");
    let ev = feed(&mut e, &[valid("COD", at(1, 0), 300.0)]);
    let c = of(&ev, RuleKind::ConflictingValue);
    assert_eq!(c.len(), 1, "{ev:#?}");
    assert_eq!(c[0].change, Change::Opened);
    assert_eq!(c[0].alert.key.window_start, at(1, 0));
    assert_eq!(
        (c[0].alert.observed_value, c[0].alert.limit_value),
        (300.0, 10.0)
    );
    assert!(
        of(&ev, RuleKind::LimitExceeded).is_empty(),
        "the first value stays judged"
    );
    // The same conflicting value again, and an identical redelivery of the
    // first: nothing more.
    let ev = feed(
        &mut e,
        &[valid("COD", at(1, 0), 300.0), valid("COD", at(1, 0), 10.0)],
    );
    assert!(ev.is_empty(), "{ev:#?}");
    assert_eq!(e.stats().conflicts, 2);
}

#[test]
fn restart_raises_nothing_twice() {
    let rs = eventful_morning();
    let (before, tail) = rs.split_at(rs.len() - 20);
    let mut a = engine(COD_RISE);
    let first = feed(&mut a, before);
    assert!(!opened(&first).is_empty());
    let open_ids: Vec<String> = a.open_alerts().map(AlertRecord::id).collect();
    assert!(!open_ids.is_empty());

    // Restart: the database gives back every alert (open and resolved) and
    // the readings; the topic is replayed from before the crash.
    let mut b = engine(COD_RISE);
    b.restore(a.alerts().cloned().collect());
    for r in before {
        b.warm_up(r);
    }
    let replay = feed(&mut b, &before[before.len() - 30..]);
    assert!(opened(&replay).is_empty(), "{replay:#?}");
    let rest = feed(&mut b, tail);
    let reference = feed(&mut a, tail);
    let ids = |ev: &[AlertEvent]| {
        ev.iter()
            .map(|e| (e.change.clone(), e.alert.id()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&rest),
        ids(&reference),
        "the restarted engine acts like the one that ran on"
    );

    // Only open alerts restored, and a warm-up that starts mid-incident.
    let mut c = engine(COD_RISE);
    c.restore(a.alerts().filter(|r| r.is_active()).cloned().collect());
    let half = before.len() / 2;
    for r in &before[half..] {
        c.warm_up(r);
    }
    let replay = feed(&mut c, &before[half..]);
    assert!(opened(&replay).is_empty(), "{replay:#?}");
}

#[test]
fn crash_before_the_events_were_stored_loses_nothing() {
    // The engine judged 01:00..01:10 and stored those events; the 01:15
    // exceedance was stored by the processor, but the engine stopped before
    // its alert was. Warm up to the watermark, observe the rest.
    let rs = series("COD", at(1, 0), &[50.0, 120.0, 50.0, 150.0]);
    let mut a = engine(ONLY_LIMIT);
    feed(&mut a, &rs[..3]);
    let watermark: Vec<_> = a.watermarks().map(|(s, t)| (s.to_owned(), t)).collect();
    assert_eq!(watermark, [("S1".to_owned(), at(1, 10))]);
    let stored: Vec<AlertRecord> = a.alerts().cloned().collect();
    assert_eq!(stored.len(), 1);

    let mut b = engine(ONLY_LIMIT);
    b.restore(stored);
    for r in &rs[..3] {
        b.warm_up(r);
    }
    let ev = feed(&mut b, &rs[3..]);
    let o = opened(&ev);
    assert_eq!(o.len(), 1, "{ev:#?}");
    assert_eq!(o[0].alert.key.window_start, at(1, 15));
    // And the topic's replay of all four afterwards: nothing.
    assert!(feed(&mut b, &rs).is_empty());
}

#[test]
fn warm_up_resolves_a_restored_alert_that_cleared() {
    // The engine crashed after the clearing reading was stored but before
    // the resolution was: warm-up resolves it and says so once.
    let mut a = engine(ONLY_LIMIT);
    feed(&mut a, &[valid("COD", at(1, 0), 150.0)]);
    let open: Vec<AlertRecord> = a.open_alerts().cloned().collect();
    assert_eq!(open.len(), 1);
    let mut b = engine(ONLY_LIMIT);
    b.restore(open);
    b.warm_up(&valid("COD", at(1, 0), 150.0));
    b.warm_up(&valid("COD", at(1, 5), 50.0));
    let ev = b.tick(at(1, 10));
    let r = resolved(&ev);
    assert_eq!(r.len(), 1, "{ev:#?}");
    assert_eq!(r[0].at, at(1, 10));
    assert!(resolved(&b.tick(at(1, 11))).is_empty());
}

#[test]
fn a_window_warmed_up_only_in_part_is_never_judged() {
    // 0.6 x 12: 8 readings make an hour.
    let text = format!("{ONLY_AVERAGES}averages.completeness = 0.6\n");
    // Warm-up reaches back to 10:30 only: the 10:00 hour is partial (its
    // first half was judged before the restart, or is simply not here).
    let mut e = engine(&text);
    for r in series("COD", at(10, 30), &[150.0; 8]) {
        e.warm_up(&r);
    }
    // Late readings for 10:05 and 10:10 make 8 in the 10:00 hour and
    // re-judge it: partial, nothing.
    let mut ev = e.observe(&valid("COD", at(10, 5), 150.0), at(11, 15));
    ev.extend(e.observe(&valid("COD", at(10, 10), 150.0), at(11, 15)));
    assert!(ev.is_empty(), "{ev:#?}");
    // The 11:00 hour, complete since warm-up, is judged as usual.
    let mut rs = series("COD", at(11, 10), &[150.0; 10]);
    rs.push(valid("COD", at(12, 0), 50.0));
    let ev = feed(&mut e, &rs);
    assert_eq!(
        changes(&ev, RuleKind::AverageExceeded),
        [(
            "opened".to_owned(),
            "average_exceeded/S1/COD/2025-01-15T11:00:00Z/1h".to_owned()
        )]
    );
}

#[test]
fn backlog_after_outage_is_judged_by_measurement_time() {
    let mut e = engine(
        "[defaults]\naverages.windows = [\"1h\"]\nflatline.count = 0\nearly_warning.fraction = 0\ngap.enabled = false\n",
    );
    // Live until 10:00.
    feed(&mut e, &series("COD", at(9, 0), &[50.0; 13]));
    // The link comes back at 14:00: the logger sends 10:05..13:55 in order,
    // with an exceedance at 11:35 and the 12:00 hour averaging 120.
    let mut backlog = Vec::new();
    let mut t = at(10, 5);
    while t < at(14, 0) {
        let v = if t == at(11, 35) {
            180.0
        } else if t >= at(12, 0) && t < at(13, 0) {
            120.0
        } else {
            50.0
        };
        backlog.push(valid("COD", t, v));
        t += mins(5);
    }
    let mut ev = Vec::new();
    for r in &backlog {
        ev.extend(e.observe(r, at(14, 0)));
    }
    let limit: Vec<_> = opened(&ev)
        .into_iter()
        .filter(|e| e.alert.key.rule == RuleKind::LimitExceeded)
        .map(|e| e.alert.key.window_start)
        .collect();
    assert_eq!(limit, [at(11, 35), at(12, 0)], "{ev:#?}");
    let avg: Vec<_> = opened(&ev)
        .into_iter()
        .filter(|e| e.alert.key.rule == RuleKind::AverageExceeded)
        .map(|e| (e.alert.key.window_start, e.alert.window_end))
        .collect();
    assert_eq!(avg, [(at(12, 0), Some(at(13, 0)))], "{ev:#?}");
    // Judged by measurement time: the 11:35 incident ended at 11:40.
    let r: Vec<_> = resolved(&ev)
        .into_iter()
        .filter(|e| e.alert.key.window_start == at(11, 35))
        .collect();
    assert_eq!(r[0].alert.window_end, Some(at(11, 40)));
}

#[test]
fn backlog_interleaved_with_live_data() {
    let mut e = engine(
        "[defaults]\naverages.windows = [\"1h\"]\nflatline.count = 0\nearly_warning.fraction = 0\ngap.enabled = false\n",
    );
    feed(&mut e, &series("COD", at(9, 0), &[50.0; 13]));
    // Live data resumes at 14:00 first...
    feed(&mut e, &series("COD", at(14, 0), &[50.0; 3]));
    // ...then the backlog of 10:05..13:55, with the 11:00 hour at 150 and a
    // single peak at 12:30.
    let mut ev = Vec::new();
    let mut t = at(10, 5);
    while t < at(14, 0) {
        let v = if t >= at(11, 0) && t < at(12, 0) {
            150.0
        } else if t == at(12, 30) {
            170.0
        } else {
            50.0
        };
        ev.extend(e.observe(&valid("COD", t, v), at(14, 20)));
        t += mins(5);
    }
    let limit: Vec<_> = opened(&ev)
        .into_iter()
        .filter(|e| e.alert.key.rule == RuleKind::LimitExceeded)
        .map(|e| e.alert.key.window_start)
        .collect();
    assert_eq!(
        limit,
        [at(11, 0), at(12, 30)],
        "one incident per run of exceedances: {ev:#?}"
    );
    let avg: Vec<_> = opened(&ev)
        .into_iter()
        .filter(|e| e.alert.key.rule == RuleKind::AverageExceeded)
        .map(|e| e.alert.key.window_start)
        .collect();
    assert_eq!(avg, [at(11, 0)], "{ev:#?}");
    // Both incidents resolved by the backlog's own normal values.
    assert_eq!(
        resolved(&ev)
            .iter()
            .filter(|e| e.alert.key.rule == RuleKind::LimitExceeded)
            .count(),
        2,
        "{ev:#?}"
    );
    // And the whole thing once more (a replay: the same values): nothing.
    let mut again = Vec::new();
    let mut t = at(10, 5);
    while t < at(14, 0) {
        let v = if t >= at(11, 0) && t < at(12, 0) {
            150.0
        } else if t == at(12, 30) {
            170.0
        } else {
            50.0
        };
        again.extend(e.observe(&valid("COD", t, v), at(14, 30)));
        t += mins(5);
    }
    assert!(again.is_empty(), "{again:#?}");
}

#[test]
fn too_late_and_future_readings_are_dropped() {
    let mut e = engine(ONLY_LIMIT);
    feed(&mut e, &[valid("COD", at(12, 0), 50.0)]);
    // More than max_lateness (26 h) older than the newest: dropped.
    let old = at(12, 0) - TimeDelta::hours(27);
    let ev = e.observe(&valid("COD", old, 500.0), at(12, 1));
    assert!(ev.is_empty());
    assert_eq!(e.stats().too_late, 1);
    // Measured two hours in the future of the wall clock: dropped.
    let ev = e.observe(&valid("COD", at(14, 0), 500.0), at(12, 0));
    assert!(ev.is_empty());
    assert_eq!(e.stats().from_future, 1);
    // Without a measurement time: dropped.
    let mut r = valid("COD", at(12, 5), 500.0);
    r.measured_at = None;
    assert!(e.observe(&r, at(12, 5)).is_empty());
    assert_eq!(e.stats().unusable, 1);
}

// ---------------------------------------------------------------------------
// Notification and officers

#[test]
fn renotify_after_the_interval_until_acknowledged() {
    let mut e = engine(&format!(
        "{ONLY_LIMIT}renotify_every = \"1h\"\ngap.enabled = false\n"
    ));
    let ev = e.observe(&valid("COD", at(1, 0), 150.0), at(1, 1));
    let id = opened(&ev)[0].alert.id();
    assert!(e.tick(at(2, 0)).is_empty(), "59 minutes");
    let ev = e.tick(at(2, 1));
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0].change, Change::Renotified);
    assert_eq!(ev[0].alert.last_notified_at, at(2, 1));
    assert!(e.tick(at(2, 30)).is_empty());
    assert_eq!(e.tick(at(3, 1)).len(), 1);
    e.acknowledge(&id, "officer.lan", "on my way", at(3, 5))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        e.tick(at(9, 0)).is_empty(),
        "acknowledged: no more reminders"
    );
}

#[test]
fn acknowledge_and_resolve_by_hand() {
    let mut e = engine(&format!("{ONLY_LIMIT}gap.enabled = false\n"));
    let ev = feed(&mut e, &[valid("COD", at(1, 0), 150.0)]);
    let id = opened(&ev)[0].alert.id();

    let ack = e
        .acknowledge(&id, "officer.lan", "calling the plant", at(1, 10))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(ack.change, Change::Acknowledged);
    assert_eq!(ack.alert.state, State::Acknowledged);
    assert_eq!(ack.alert.acknowledged_by.as_deref(), Some("officer.lan"));
    assert_eq!(ack.alert.acknowledged_at, Some(at(1, 10)));
    assert_eq!(ack.alert.note.as_deref(), Some("calling the plant"));
    assert!(matches!(
        e.acknowledge(&id, "x", "", at(1, 11)),
        Err(EngineError::InvalidTransition { .. })
    ));
    // Worse while acknowledged: updated, still acknowledged.
    let ev = feed(&mut e, &[valid("COD", at(1, 5), 170.0)]);
    assert_eq!(ev[0].change, Change::Updated);
    assert_eq!(ev[0].alert.state, State::Acknowledged);

    let res = e
        .resolve(&id, "officer.lan", "plant stopped the discharge", at(1, 20))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        res.change,
        Change::Resolved {
            by: Some("officer.lan".into())
        }
    );
    assert_eq!(res.alert.resolved_by.as_deref(), Some("officer.lan"));
    assert!(matches!(
        e.resolve(&id, "x", "", at(1, 21)),
        Err(EngineError::InvalidTransition { .. })
    ));
    assert_eq!(
        e.acknowledge(
            "limit_exceeded/S1/COD/2020-01-01T00:00:00Z",
            "x",
            "",
            at(1, 21)
        ),
        Err(EngineError::NotFound(
            "limit_exceeded/S1/COD/2020-01-01T00:00:00Z".into()
        ))
    );
    assert!(matches!(
        e.resolve("garbage", "x", "", at(1, 21)),
        Err(EngineError::NotFound(_))
    ));

    // Still exceeding: the same incident, resolved by hand, stays resolved.
    let ev = feed(&mut e, &series("COD", at(1, 10), &[160.0, 150.0]));
    assert!(ev.is_empty(), "{ev:#?}");
    // Cleared, then exceeding again: a new incident.
    let ev = feed(&mut e, &series("COD", at(1, 20), &[50.0, 150.0]));
    let o = opened(&ev);
    assert_eq!(o.len(), 1, "{ev:#?}");
    assert_eq!(o[0].alert.key.window_start, at(1, 25));
}

// ---------------------------------------------------------------------------
// Configuration

#[test]
fn config_errors_name_the_line() {
    let dir = std::env::temp_dir().join(format!("quantrac-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("rules.toml");
    std::fs::write(
        &path,
        "[defaults]\nhysteresis = 0.05\n\n[parameters.COD]\nearly_warning.fraction = 0.8\naverages.completeness = 1.2\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = RulesConfig::load(&path).err();
    let _ = std::fs::remove_dir_all(&dir);
    let Some(err) = err else { panic!("loaded") };
    assert_eq!(err.line(), Some(6), "{err}");
    let text = err.to_string();
    assert!(text.contains("rules.toml"), "{text}");
    assert!(text.contains("line 6"), "{text}");
    assert!(text.contains("averages.completeness"), "{text}");
    assert!(matches!(err, RulesError::Invalid { .. }));

    let missing = RulesConfig::load(std::path::Path::new("/nonexistent/rules.toml"));
    assert!(matches!(missing, Err(RulesError::Io { .. })));
}

#[test]
fn sample_rules_file_loads_and_runs_against_the_sample_registry() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules =
        RulesConfig::load(&root.join("deploy/rules.toml")).unwrap_or_else(|e| panic!("{e}"));
    let registry =
        Registry::load(&root.join("deploy/registry.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        rules.unknown_references(&registry).is_empty(),
        "{:?}",
        rules.unknown_references(&registry)
    );
    let ww01 = rules.for_reading("PY-HH-WW01", "COD");
    assert_eq!(ww01.early_warning.fraction, 0.7);
    // Effluent at 32-35 °C is ordinary here: warn at 38 °C, not 32.
    assert_eq!(
        rules
            .for_reading("PY-AP-WW01", "Temp")
            .early_warning
            .fraction,
        0.95
    );
    assert_eq!(ww01.gap.factor, 6.0);
    assert_eq!(ww01.sudden_change.max_rise_per_hour, Some(60.0));
    assert!(!rules.for_reading("PY-AP-WW02", "pH").averages.enabled);
    assert_eq!(
        rules
            .for_reading("PY-AP-WW02", "COD")
            .early_warning
            .fraction,
        0.8
    );

    let mut e = Engine::new(rules, Arc::new(registry.clone()));
    let mut n = 0;
    let start = at(0, 0);
    for i in 0..(12 * 30) {
        let t = start + mins(5 * i);
        for st in registry.stations() {
            for p in &st.parameters {
                let v = p.range_min
                    + (p.range_max - p.range_min) * (((i * 7 + n) % 100) as f64 / 400.0);
                n += 1;
                e.observe(&reading(&st.id, &p.code, t, v, "valid"), t + mins(1));
            }
        }
        e.tick(t + mins(2));
    }
    assert!(e.stats().readings > 10_000);
}

#[test]
fn reload_changes_thresholds_and_keeps_state() {
    let mut e = engine(ONLY_WARNING);
    let ev = feed(&mut e, &[valid("COD", at(1, 0), 85.0)]);
    assert_eq!(opened(&ev).len(), 1);
    let ev = feed(&mut e, &[valid("COD", at(1, 5), 50.0)]);
    assert_eq!(resolved(&ev).len(), 1);

    e.reload(rules(
        &ONLY_WARNING.replace("fraction = 0.8", "fraction = 0.9"),
    ));
    let ev = feed(&mut e, &[valid("COD", at(1, 10), 85.0)]);
    assert!(ev.is_empty(), "85 < 90: {ev:#?}");
    let ev = feed(&mut e, &[valid("COD", at(1, 15), 91.0)]);
    assert_eq!(opened(&ev).len(), 1);
    // State survived the reload: replaying is still silent.
    let ev = feed(
        &mut e,
        &[valid("COD", at(1, 0), 85.0), valid("COD", at(1, 15), 91.0)],
    );
    assert!(ev.is_empty());
}

#[test]
fn severities_follow_the_config() {
    let mut e = engine(&format!(
        "{ONLY_LIMIT}[stations.S1.parameters.COD]\nseverity.limit_exceeded = \"warning\"\n"
    ));
    let ev = feed(
        &mut e,
        &[valid("COD", at(1, 0), 150.0), valid("pH", at(1, 0), 10.0)],
    );
    let sev: Vec<_> = opened(&ev)
        .iter()
        .map(|e| (e.alert.key.parameter.clone(), e.alert.severity))
        .collect();
    assert_eq!(
        sev,
        [
            ("COD".to_owned(), Severity::Warning),
            ("pH".to_owned(), Severity::Critical)
        ]
    );
}

#[test]
fn alert_ids_parse_back_and_convert_to_proto() {
    let mut e = engine(ONLY_LIMIT);
    let ev = feed(&mut e, &[valid("COD", at(1, 0), 150.0)]);
    let a = &opened(&ev)[0].alert;
    assert_eq!(AlertKey::parse(&a.id()).as_ref(), Some(&a.key));
    let proto = a.to_proto(7);
    assert_eq!(proto.id, a.id());
    assert_eq!(proto.rule, "limit_exceeded");
    assert_eq!(proto.sequence, 7);
    let back = AlertRecord::from_proto(&proto).unwrap_or_else(|| panic!("from_proto"));
    assert_eq!(back.key, a.key);
    assert_eq!(back.state, a.state);
    assert_eq!(back.severity, a.severity);
}

/// A permit that judges COD on the 1-hour average: one 5-minute value past
/// Cmax is an early warning (warning severity, worded so), never "limit
/// exceeded"; the hour's average past it is the exceedance.
#[test]
fn a_limit_on_the_hourly_average_is_not_broken_by_one_value() {
    let text = REGISTRY.replace(
        r#"{ parameter = "COD", max = 100, regulation = "QCVN 40:2011/BTNMT", column = "B", effective_from = 2020-01-01 },"#,
        r#"{ parameter = "COD", max = 100, regulation = "QCVN 40:2011/BTNMT", column = "B", effective_from = 2020-01-01, averaging = "1h", permit_number = "12/GP-STNMT" },"#,
    );
    assert_ne!(text, REGISTRY, "the limit was rewritten");
    let registry = Arc::new(Registry::from_toml(&text).unwrap_or_else(|e| panic!("{e}")));
    let mut e = Engine::new(
        rules(
            r#"
[defaults]
early_warning.fraction = 0
flatline.count = 0
"#,
        ),
        registry,
    );
    let ev = feed(&mut e, &[valid("COD", at(10, 5), 150.0)]);
    assert!(of(&ev, RuleKind::LimitExceeded).is_empty(), "{ev:?}");
    let warn = of(&ev, RuleKind::EarlyWarning);
    assert_eq!(warn.len(), 1, "{ev:?}");
    assert_eq!(warn[0].alert.severity, Severity::Warning);
    assert!(
        warn[0].alert.message.contains("1-hour average"),
        "{}",
        warn[0].alert.message
    );
    // The rest of the hour stays high: the hourly average is the exceedance.
    let mut rest = series("COD", at(10, 10), &[150.0; 10]);
    rest.push(valid("COD", at(11, 5), 150.0));
    let ev = feed(&mut e, &rest);
    assert!(of(&ev, RuleKind::LimitExceeded).is_empty());
    assert_eq!(
        of(&ev, RuleKind::AverageExceeded)
            .iter()
            .filter(|x| x.change == Change::Opened)
            .count(),
        1,
        "{ev:?}"
    );
}

/// A permit stated at a reference O₂ judges the converted value (the
/// processor's correction, or the station's own): 300 mg/Nm³ as measured
/// at 11 % O₂ is 450 at 6 %, under a Cmax of 400. Without a converted value
/// the value is judged as measured, and the alert says it was not
/// corrected.
#[test]
fn a_limit_at_a_reference_o2_judges_the_corrected_value() {
    let registry = Registry::from_toml(
        r#"
[[stations]]
id = "K1"
name = "Boiler stack"
facility = "Test plant"
industrial_zone = "KCN Test"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "stack"
parameters = [
  { code = "SO2", unit = "mg/Nm3", range_min = 0, range_max = 2000, expected_interval = "5m" },
  { code = "O2",  unit = "%",      range_min = 0, range_max = 25,   expected_interval = "5m" },
]
limits = [
  { parameter = "SO2", max = 400, regulation = "QCVN 19:2009/BTNMT", column = "B", effective_from = 2020-01-01, reference_o2 = 6 },
]
"#,
    )
    .unwrap_or_else(|e| panic!("registry: {e}"));
    let mut e = Engine::new(rules(ONLY_LIMIT), Arc::new(registry));
    let so2 = |t, value, converted| StoredReading {
        converted,
        ..reading("K1", "SO2", t, value, "valid")
    };
    // Corrected above Cmax though measured below it: opens.
    let events = feed(&mut e, &[so2(at(1, 0), 300.0, Some(450.0))]);
    let open = opened(&events);
    assert_eq!(open.len(), 1, "{events:?}");
    assert_eq!(open[0].alert.key.rule, RuleKind::LimitExceeded);
    assert_eq!(open[0].alert.observed_value, 450.0);
    assert!(
        open[0].alert.message.contains("corrected to 6 % O₂"),
        "{}",
        open[0].alert.message
    );
    // Corrected back under: resolved, though measured higher.
    let events = feed(&mut e, &[so2(at(1, 5), 390.0, Some(300.0))]);
    assert_eq!(
        changes(&events, RuleKind::LimitExceeded).len(),
        1,
        "{events:?}"
    );
    assert!(matches!(events[0].change, Change::Resolved { .. }));
    // No O₂ with it: judged as measured, and said so.
    let events = feed(&mut e, &[so2(at(1, 10), 420.0, None)]);
    let open = opened(&events);
    assert_eq!(open.len(), 1, "{events:?}");
    assert_eq!(open[0].alert.observed_value, 420.0);
    assert!(
        open[0].alert.message.contains("not corrected to 6 % O₂"),
        "{}",
        open[0].alert.message
    );
}

/// An instrument whose calibration ran out raises `instrument_expired`
/// once, from the first day it is no longer covered (local time), on the
/// clock; still valid on its last day; renewed in the registry, resolved.
#[test]
fn an_instrument_past_its_calibration_raises_one_alert_until_renewed() {
    let with = |valid_to: &str| {
        Arc::new(
            Registry::from_toml(&format!(
                "{REGISTRY}\n[[stations.instruments]]\nname = \"COD analyser SN 7\"\n\
                 parameters = [\"COD\"]\ncalibrated_on = 2024-07-15\ncalibration_valid_to = {valid_to}\n"
            ))
            .unwrap_or_else(|e| panic!("registry: {e}")),
        )
    };
    // The instruments belong to S2 (the last station in REGISTRY), whose
    // COD is its only parameter.
    let mut e = Engine::new(rules(ONLY_LIMIT), with("2025-01-15"));
    // 2025-01-15 16:59 UTC is still the 15th locally: covered.
    let events = e.tick(at(16, 59));
    assert!(
        of(&events, RuleKind::InstrumentExpired).is_empty(),
        "{events:?}"
    );
    // Local midnight: the 16th, out of date.
    let events = e.tick(at(17, 0));
    let open = of(&events, RuleKind::InstrumentExpired);
    assert_eq!(open.len(), 1, "{events:?}");
    assert_eq!(open[0].change, Change::Opened);
    assert_eq!(
        (
            open[0].alert.key.station_id.as_str(),
            open[0].alert.key.parameter.as_str()
        ),
        ("S2", "COD")
    );
    assert!(
        open[0].alert.message.contains("COD analyser SN 7")
            && open[0].alert.message.contains("calibration"),
        "{}",
        open[0].alert.message
    );
    // Once.
    let events = e.tick(at(17, 5));
    assert!(
        of(&events, RuleKind::InstrumentExpired).is_empty(),
        "{events:?}"
    );
    // Renewed: resolved.
    e.set_registry(with("2026-01-15"));
    let events = e.tick(at(17, 10));
    let resolved = of(&events, RuleKind::InstrumentExpired);
    assert_eq!(resolved.len(), 1, "{events:?}");
    assert!(matches!(resolved[0].change, Change::Resolved { .. }));
}
