//! Properties of the rules engine over arbitrary input: any sequence of
//! readings (random values, times, quality flags, arrival order), wall-clock
//! ticks and officers' actions never panics, never opens one key twice, only
//! changes alerts it opened, and a replay of the same readings (in the same
//! engine, or in a restarted one) opens nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use quantrac_alerting::alert::{AlertEvent, AlertKey, Change};
use quantrac_alerting::engine::Engine;
use quantrac_alerting::rules::RulesConfig;
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::registry::Registry;
use quantrac_proto::v1::StoredReading;

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
  { parameter = "COD", max = 80,  regulation = "QCVN 40:2025/BTNMT", effective_from = 2025-01-16 },
  { parameter = "pH",  min = 6, max = 9, regulation = "QCVN 40:2011/BTNMT", column = "A", effective_from = 2020-01-01 },
]

[[stations]]
id = "S2"
name = "Stack"
facility = "Kiln"
industrial_zone = "KCN Other"
province = "Phú Yên"
latitude = 13.1
longitude = 109.2
kind = "stack"
parameters = [
  { code = "SO2", unit = "mg/Nm3", range_min = 0, range_max = 2000, expected_interval = "1m" },
]
limits = [
  { parameter = "SO2", max = 500, regulation = "QCVN 19:2009/BTNMT", column = "B", coefficients = { Kp = 0.9, Kv = 1.0 }, effective_from = 2018-08-01 },
]
"#;

/// Every rule on, with small thresholds so that random input trips them.
const RULES: &str = r#"
[engine]
max_lateness = "6h"

[defaults]
hysteresis = 0.05
renotify_every = "20m"
averages.windows = ["30m", "1h", "24h"]
averages.completeness = 0.3
averages.grace = "5m"
early_warning.fraction = 0.8
sudden_change.max_rise_per_hour = 100
gap.factor = 3
gap.min = "5m"
status.max_duration = "20m"
status.max_per_day = 2
flatline.count = 3
flatline.tolerance = 0.5

[stations.S2]
gap.factor = 10
"#;

const STATIONS: [(&str, &[&str]); 3] = [
    ("S1", &["COD", "pH", "Flow"]),
    ("S2", &["SO2"]),
    ("UNKNOWN", &["COD"]),
];
const FLAGS: [&str; 7] = [
    "valid",
    "valid",
    "valid",
    "calibrating",
    "device_error",
    "maintenance",
    "manual",
];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 15, 14, 0, 0)
        .single()
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
enum Op {
    Read {
        station: usize,
        parameter: usize,
        /// Seconds after the base time (about two days).
        second: i64,
        value: f64,
        flag: usize,
        /// Seconds between measurement and arrival.
        delay: i64,
    },
    Tick {
        second: i64,
    },
    Officer {
        pick: usize,
        resolve: bool,
    },
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => 0.0..250.0f64,
        2 => prop::sample::select(vec![0.0, 6.0, 7.0, 9.0, 50.0, 80.0, 95.0, 100.0, 405.0, 450.0]),
        1 => prop::sample::select(vec![-5.0, 1e9, f64::NAN, f64::INFINITY]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..3usize, 0..3usize, 0..(2 * 86_400i64), value(), 0..FLAGS.len(), prop_oneof![Just(0i64), 0..7_200i64])
            .prop_map(|(station, parameter, second, value, flag, delay)| Op::Read {
                station,
                parameter,
                // Often on a 5-minute grid, so that series are regular and
                // duplicates happen.
                second: if second % 3 == 0 { second } else { second - second % 300 },
                value,
                flag,
                delay,
            }),
        2 => (0..(2 * 86_400i64 + 7_200)).prop_map(|second| Op::Tick { second }),
        1 => (0..8usize, any::<bool>()).prop_map(|(pick, resolve)| Op::Officer { pick, resolve }),
    ]
}

/// Readings mostly in time order, as a station sends them, with some
/// backlog and disorder from the strategy itself.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    (prop::collection::vec(op(), 0..250), any::<bool>()).prop_map(|(mut ops, sort)| {
        if sort {
            ops.sort_by_key(|o| match o {
                Op::Read { second, delay, .. } => second + delay,
                Op::Tick { second } => *second,
                Op::Officer { .. } => 0,
            });
        }
        ops
    })
}

fn reading(op: &Op) -> Option<(StoredReading, DateTime<Utc>)> {
    let Op::Read {
        station,
        parameter,
        second,
        value,
        flag,
        delay,
    } = op
    else {
        return None;
    };
    let (id, params) = STATIONS[*station];
    let t = base() + TimeDelta::seconds(*second);
    let r = StoredReading {
        station_id: id.into(),
        parameter: params[parameter % params.len()].into(),
        value: *value,
        measured_at: Some(to_timestamp(t)),
        qc_flag: FLAGS[*flag].into(),
        ..Default::default()
    };
    Some((r, t + TimeDelta::seconds(*delay)))
}

fn engine() -> Engine {
    let registry = Registry::from_toml(REGISTRY).unwrap_or_else(|e| panic!("registry: {e}"));
    let rules = RulesConfig::from_toml(RULES).unwrap_or_else(|e| panic!("rules: {e}"));
    Engine::new(rules, Arc::new(registry))
}

/// Runs the ops; checks the lifecycle invariants as it goes.
fn run(engine: &mut Engine, ops: &[Op]) -> Result<Vec<AlertEvent>, TestCaseError> {
    let mut events = Vec::new();
    let mut now = base();
    for op in ops {
        match op {
            Op::Read { .. } => {
                if let Some((r, arrival)) = reading(op) {
                    now = now.max(arrival);
                    events.extend(engine.observe(&r, arrival));
                }
            }
            Op::Tick { second } => {
                now = now.max(base() + TimeDelta::seconds(*second));
                events.extend(engine.tick(now));
            }
            Op::Officer { pick, resolve } => {
                let ids: Vec<String> = engine.open_alerts().map(|a| a.id()).collect();
                if let Some(id) = ids.get(pick % ids.len().max(1)) {
                    let result = if *resolve {
                        engine.resolve(id, "officer", "note", now)
                    } else {
                        engine.acknowledge(id, "officer", "note", now)
                    };
                    if let Ok(e) = result {
                        events.push(e);
                    }
                }
            }
        }
    }
    Ok(events)
}

fn check_lifecycle(events: &[AlertEvent]) -> Result<(), TestCaseError> {
    let mut opened: BTreeSet<AlertKey> = BTreeSet::new();
    let mut resolved: BTreeSet<AlertKey> = BTreeSet::new();
    for e in events {
        let key = &e.alert.key;
        match &e.change {
            Change::Opened => {
                prop_assert!(opened.insert(key.clone()), "opened twice: {}", key.id());
            }
            Change::Resolved { .. } => {
                prop_assert!(opened.contains(key), "resolved unknown {}", key.id());
                prop_assert!(resolved.insert(key.clone()), "resolved twice: {}", key.id());
            }
            _ => {
                prop_assert!(
                    opened.contains(key),
                    "{:?} of unknown {}",
                    e.change,
                    key.id()
                );
                prop_assert!(
                    !resolved.contains(key),
                    "{:?} after resolution: {}",
                    e.change,
                    key.id()
                );
            }
        }
        let parsed = AlertKey::parse(&key.id());
        prop_assert_eq!(parsed.as_ref(), Some(key));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_never_opens_twice_replay_is_silent(ops in ops()) {
        let mut e = engine();
        let first = run(&mut e, &ops)?;
        check_lifecycle(&first)?;

        // The engine's view agrees with the events.
        let mut state: BTreeMap<AlertKey, bool> = BTreeMap::new();
        for ev in &first {
            state.insert(ev.alert.key.clone(), ev.alert.is_active());
        }
        let active: BTreeSet<_> = state.iter().filter(|(_, a)| **a).map(|(k, _)| k.clone()).collect();
        let engine_active: BTreeSet<_> = e.open_alerts().map(|a| a.key.clone()).collect();
        prop_assert_eq!(&active, &engine_active);

        // Replaying the readings opens nothing.
        let readings: Vec<Op> = ops.iter().filter(|o| matches!(o, Op::Read { .. })).cloned().collect();
        let again = run(&mut e, &readings)?;
        let reopened: Vec<String> = again.iter().filter(|e| e.change == Change::Opened).map(|e| e.alert.id()).collect();
        prop_assert!(reopened.is_empty(), "replay opened {:?}", reopened);

        // A restarted engine (alerts restored, readings warmed up in
        // measurement order, the readings replayed) opens nothing either.
        let mut b = engine();
        b.restore(e.alerts().cloned().collect());
        let mut sorted: Vec<_> = readings.iter().filter_map(reading).collect();
        sorted.sort_by_key(|(r, _)| r.measured_at.map(|t| (t.seconds, t.nanos)));
        for (r, _) in &sorted {
            b.warm_up(r);
        }
        let replayed = run(&mut b, &readings)?;
        let reopened: Vec<String> = replayed.iter().filter(|e| e.change == Change::Opened).map(|e| e.alert.id()).collect();
        prop_assert!(reopened.is_empty(), "restart opened {:?}", reopened);
        for ev in &replayed {
            prop_assert!(e.alerts().any(|a| a.key == ev.alert.key), "restart touched unknown {}", ev.alert.id());
        }
    }

    #[test]
    fn ticks_alone_and_odd_clocks_never_panic(ticks in prop::collection::vec(-10_000_000_000i64..10_000_000_000i64, 0..20)) {
        let mut e = engine();
        let mut events = Vec::new();
        for s in ticks {
            let Some(now) = DateTime::from_timestamp(s, 0) else { continue };
            events.extend(e.tick(now));
            let r = StoredReading {
                station_id: "S1".into(),
                parameter: "COD".into(),
                value: 500.0,
                measured_at: Some(to_timestamp(now)),
                qc_flag: "valid".into(),
                ..Default::default()
            };
            events.extend(e.observe(&r, now));
        }
        check_lifecycle(&events)?;
    }
}
