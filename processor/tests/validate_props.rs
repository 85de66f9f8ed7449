//! Properties of unit conversion and reading validation, on the sample
//! registry (`deploy/registry.toml`).

use std::sync::LazyLock;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use quantrac_processor::validate::{QcFlag, RejectReason, ValidationConfig, validate};
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::registry::{ParameterSpec, Registry, Station};
use quantrac_proto::units::{self, convert};
use quantrac_proto::v1;

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    Registry::from_toml(include_str!("../../deploy/registry.toml"))
        .unwrap_or_else(|e| panic!("sample registry: {e}"))
});

/// Parameters whose molar mass matters (ppm) and one where it is unknown.
const PARAMETERS: &[&str] = &["SO2", "NOx", "NO", "CO", "H2S", "NH3", "COD", "PM"];

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Every (from, to, parameter) that converts, as canonical spellings.
fn convertible_pairs() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out = Vec::new();
    for from in units::known_units() {
        for to in units::known_units() {
            for &p in PARAMETERS {
                if convert(1.0, from, to, p).is_ok() {
                    out.push((from, to, p));
                }
            }
        }
    }
    out
}

static PAIRS: LazyLock<Vec<(&'static str, &'static str, &'static str)>> =
    LazyLock::new(convertible_pairs);

#[test]
fn there_are_many_convertible_pairs() {
    // Identity for every unit and parameter, plus real conversions.
    let real = PAIRS.iter().filter(|(a, b, _)| a != b).count();
    assert!(real > 100, "{real} real conversions");
    assert!(PAIRS.contains(&("ppm", "mg/Nm3", "SO2")));
    assert!(!PAIRS.contains(&("ppm", "mg/Nm3", "PM")));
    assert!(!PAIRS.contains(&("mg/m3", "mg/Nm3", "SO2")));
}

fn station_and_parameter() -> impl Strategy<Value = (&'static Station, &'static ParameterSpec)> {
    let all: Vec<(&'static Station, &'static ParameterSpec)> = REGISTRY
        .stations()
        .flat_map(|s| s.parameters.iter().map(move |p| (s, p)))
        .collect();
    proptest::sample::select(all)
}

/// A string that is often a real id, code or unit, and sometimes anything.
fn text(known: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(known),
        1 => any::<String>(),
        1 => "[A-Za-z0-9/%°³µ -]{0,12}",
    ]
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let near = (-200_000_000i64..1_000_000i64, 0i32..1_000_000_000).prop_map(|(offset, nanos)| {
        let base = now().timestamp();
        prost_types::Timestamp {
            seconds: base + offset,
            nanos,
        }
    });
    let anything = (any::<i64>(), any::<i32>())
        .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos });
    let extreme = proptest::sample::select(vec![
        i64::MIN,
        i64::MAX,
        -62_135_596_800,
        253_402_300_799,
        0,
    ])
    .prop_map(|seconds| prost_types::Timestamp { seconds, nanos: 0 });
    prop_oneof![
        1 => Just(None),
        4 => near.prop_map(Some),
        2 => anything.prop_map(Some),
        1 => extreme.prop_map(Some),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -1e4..1e6f64,
        1 => any::<f64>(),
        1 => proptest::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -9999.0, 0.0, f64::MAX, f64::MIN_POSITIVE]),
    ]
}

fn reading() -> impl Strategy<Value = v1::Reading> {
    let ids: Vec<String> = REGISTRY.stations().map(|s| s.id.clone()).collect();
    let codes: Vec<String> = REGISTRY
        .stations()
        .flat_map(|s| &s.parameters)
        .flat_map(|p| std::iter::once(&p.code).chain(&p.aliases))
        .cloned()
        .collect();
    let unit_names: Vec<String> = units::known_units()
        .map(str::to_owned)
        .chain(["".to_owned(), "mg/l".to_owned(), "oC".to_owned()])
        .collect();
    let flags: Vec<String> = ["00", "01", "02", "N", "S", "T", "M", "C", "D", "F", "B", ""]
        .map(str::to_owned)
        .to_vec();
    (
        text(ids),
        text(codes),
        value(),
        text(unit_names),
        timestamp(),
        prop_oneof![3 => 0i32..5, 1 => any::<i32>()],
        text(flags),
        timestamp(),
        any::<String>(),
    )
        .prop_map(
            |(
                station_id,
                parameter,
                value,
                unit,
                measured_at,
                status,
                device_flag,
                received_at,
                ingest_id,
            )| {
                v1::Reading {
                    station_id,
                    parameter,
                    value,
                    unit,
                    measured_at,
                    status,
                    device_flag,
                    source: v1::SourceProtocol::MqttJson as i32,
                    received_at,
                    ingest_id,
                    ..Default::default()
                }
            },
        )
}

/// A unit the canonical one converts to and back (possibly itself).
fn alternative_unit(spec: &ParameterSpec, pick: usize) -> &'static str {
    let alternatives: Vec<&'static str> = units::known_units()
        .filter(|u| {
            convert(1.0, &spec.unit, u, &spec.code).is_ok()
                && convert(1.0, u, &spec.unit, &spec.code).is_ok()
        })
        .collect();
    alternatives
        .get(pick % alternatives.len().max(1))
        .copied()
        .unwrap_or("")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn conversions_round_trip(
        pick in any::<proptest::sample::Index>(),
        v in prop_oneof![-1e6..1e6f64, -1.0..1.0f64, 1e-6..1e-3f64],
    ) {
        let (from, to, p) = *pick.get(&PAIRS);
        let there = convert(v, from, to, p);
        prop_assert!(there.is_ok(), "{from} -> {to}: {there:?}");
        let there = there.unwrap_or_default();
        let back = convert(there, to, from, p);
        prop_assert!(back.is_ok(), "{to} -> {from} fails after {from} -> {to} worked: {back:?}");
        let back = back.unwrap_or_default();
        prop_assert!(close(v, back), "{v} {from} -> {there} {to} -> {back} {from} ({p})");
    }

    #[test]
    fn validate_never_panics_and_gives_a_documented_reason(r in reading()) {
        match validate(&r, &REGISTRY, now(), &ValidationConfig::default()) {
            Ok(n) => {
                prop_assert!(n.value.is_finite());
                let station = REGISTRY.station(&n.station_id);
                prop_assert!(station.is_some());
                let spec = station.and_then(|s| s.parameter(&n.parameter));
                prop_assert!(spec.is_some_and(|p| p.code == n.parameter && p.unit == n.unit));
                prop_assert!(n.measured_at <= now() + TimeDelta::minutes(10));
            }
            Err(e) => {
                prop_assert!(RejectReason::ALL.contains(&e.reason), "undocumented reason {}", e.reason);
                prop_assert!(e.detail.len() < 1024, "detail of {} bytes", e.detail.len());
            }
        }
    }

    #[test]
    fn measured_values_in_range_are_accepted_and_converted(
        (station, spec) in station_and_parameter(),
        fraction in 0.0..=1.0f64,
        pick in any::<usize>(),
        minutes_ago in 0i64..100_000,
        flag in proptest::sample::select(vec!["00", "N", "S", ""]),
    ) {
        // Keep off the very edges: a round trip may move a value by an ulp.
        let span = spec.range_max - spec.range_min;
        let canonical = spec.range_min + span * (1e-6 + fraction * (1.0 - 2e-6));
        let unit = alternative_unit(spec, pick);
        let sent = convert(canonical, &spec.unit, unit, &spec.code);
        prop_assert!(sent.is_ok(), "{} -> {unit}: {sent:?}", spec.unit);
        let r = v1::Reading {
            station_id: station.id.clone(),
            parameter: spec.aliases.first().cloned().filter(|_| pick % 2 == 0).unwrap_or_else(|| spec.code.clone()),
            value: sent.unwrap_or_default(),
            unit: unit.to_owned(),
            measured_at: Some(to_timestamp(now() - TimeDelta::minutes(minutes_ago))),
            status: v1::DeviceStatus::Measuring as i32,
            device_flag: flag.to_owned(),
            ..v1::Reading::default()
        };
        let n = validate(&r, &REGISTRY, now(), &ValidationConfig::default());
        prop_assert!(n.is_ok(), "{r:?}: {n:?}");
        let n = n.unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(&n.parameter, &spec.code);
        prop_assert_eq!(&n.unit, &spec.unit);
        prop_assert!(close(n.value, canonical), "{} {unit} -> {} {}, want {canonical}", r.value, n.value, spec.unit);
        prop_assert!(matches!(n.qc_flag, QcFlag::Valid | QcFlag::Manual));
    }

    #[test]
    fn calibration_and_errors_are_never_rejected_for_their_value(
        (station, spec) in station_and_parameter(),
        v in prop_oneof![-1e9..1e9f64, proptest::sample::select(vec![-9999.0, 0.0, 1e12])],
        status in proptest::sample::select(vec![
            (v1::DeviceStatus::Calibrating, "01"),
            (v1::DeviceStatus::Calibrating, "C"),
            (v1::DeviceStatus::Calibrating, "M"),
            (v1::DeviceStatus::Error, "02"),
            (v1::DeviceStatus::Error, "D"),
        ]),
    ) {
        let r = v1::Reading {
            station_id: station.id.clone(),
            parameter: spec.code.clone(),
            value: v,
            unit: spec.unit.clone(),
            measured_at: Some(to_timestamp(now())),
            status: status.0 as i32,
            device_flag: status.1.to_owned(),
            ..v1::Reading::default()
        };
        let n = validate(&r, &REGISTRY, now(), &ValidationConfig::default());
        prop_assert!(n.is_ok(), "{r:?}: {n:?}");
        let n = n.unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(n.value, v);
        prop_assert!(matches!(n.qc_flag, QcFlag::Calibrating | QcFlag::Maintenance | QcFlag::DeviceError));
    }
}
