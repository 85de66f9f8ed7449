//! Validation and normalisation of one reading: pure, no I/O, so that the
//! pipeline can run it on every reading and tests can run it on anything.
//!
//! [`validate`] maps the wire parameter code onto the registry's canonical
//! code (HJ 212-2017 and 2005-edition codes are aliases), converts the value
//! into the canonical unit, checks time and range,
//! and derives the QC flag from the device status. It either returns the
//! [`Normalised`] reading to store or a [`Rejection`] whose `reason` is one
//! of this bounded set (stable: used as metric labels and stored with the
//! raw reading):
//!
//! | reason | meaning |
//! |---|---|
//! | `unknown_station` | the station id is not in the registry |
//! | `unknown_parameter` | the station has no parameter with that code or alias |
//! | `bad_status` | the device status is unspecified or not a known value |
//! | `missing_time` | no measurement time, or an invalid one |
//! | `future_timestamp` | measured more than `max_future` after now (clock skew) |
//! | `too_old` | measured before the retention period: it would be dropped at once |
//! | `non_finite` | NaN or infinite value (also after unit conversion) |
//! | `unit_not_convertible` | the unit is unknown or not convertible to the canonical one |
//! | `out_of_range` | a measured value that cannot be one: pH outside 0-14, below the instrument's range by more than 1% of it, or a manual entry outside it |
//!
//! Checks run in that order, so a reading has exactly one reason.
//!
//! Units: a reading's own unit, when it names one. HJ 212 packets name none:
//! a value under HJ 212 is in the unit the station's registry entry names
//! (`hj212_unit`, what its logger is configured to send), else the unit the
//! standard's code table fixes for the code (w00000 L/s, a00000 m³/s, gas
//! concentrations mg/m³ at 273.15 K, converted to QCVN's 25 °C). Only where
//! neither applies is a missing unit the parameter's own.
//!
//! Status → QC flag: measuring → `valid` (HJ 212 flag `S` → `manual`, `T` →
//! `above_range`); calibrating → `calibrating` (HJ 212 `M` →
//! `maintenance`); error → `device_error`. The instrument-range check
//! applies to measured values only (`valid`, `manual`): loggers send 0 or
//! -9999 while calibrating or in error, and those readings are stored, with
//! their flag, because a long calibration is itself something to see. A
//! measured value above the instrument's range, and a value the analyser
//! itself flags `T`, are stored as `above_range`: the analyser is saturated
//! and the value says "at least this much", which the alerting engine
//! judges as a lower bound. An officer needs that more than a rejection.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use quantrac_proto::domain::{DeviceStatus, from_timestamp};
use quantrac_proto::v1;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use quantrac_db::{ReadingRow, ReportedRow};
pub use quantrac_proto::qc::{QcFlag, RejectReason};
use quantrac_proto::registry::{ParameterSpec, Registry};
use quantrac_proto::units;

/// Time bounds a reading must fall in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// How far ahead of the processor's clock a measurement time may be:
    /// logger clocks drift, but a reading from tomorrow would corrupt
    /// "latest" and windows.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Oldest measurement accepted: the storage retention, so that a
    /// logger's backlog is stored but nothing is stored only to be dropped.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            max_future: Duration::from_secs(10 * 60),
            // Five years, one of them leap.
            retention: Duration::from_secs(1826 * 86_400),
        }
    }
}

/// A reading ready to store: the row of `readings`.
pub type Normalised = ReadingRow;

/// Why a reading was refused: a reason and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

fn reject(reason: RejectReason, detail: String) -> Rejection {
    Rejection { reason, detail }
}

/// Input text quoted in a detail, cut short: the raw reading is kept beside
/// the rejection anyway, and details must stay small.
fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// Validates and normalises one reading (see the module doc).
pub fn validate(
    reading: &v1::Reading,
    registry: &Registry,
    now: DateTime<Utc>,
    cfg: &ValidationConfig,
) -> Result<Normalised, Rejection> {
    let station = registry.station(&reading.station_id).ok_or_else(|| {
        reject(
            RejectReason::UnknownStation,
            format!(
                "station {} is not in the registry",
                quote(&reading.station_id)
            ),
        )
    })?;
    let spec = station.parameter(&reading.parameter).ok_or_else(|| {
        reject(
            RejectReason::UnknownParameter,
            format!(
                "station {} has no parameter {}",
                station.id,
                quote(&reading.parameter)
            ),
        )
    })?;

    let status = match v1::DeviceStatus::try_from(reading.status) {
        Ok(v1::DeviceStatus::Measuring) => DeviceStatus::Measuring,
        Ok(v1::DeviceStatus::Calibrating) => DeviceStatus::Calibrating,
        Ok(v1::DeviceStatus::Error) => DeviceStatus::Error,
        Ok(v1::DeviceStatus::Unspecified) | Err(_) => {
            return Err(reject(
                RejectReason::BadStatus,
                format!(
                    "device status {} is not measuring, calibrating or error",
                    reading.status
                ),
            ));
        }
    };

    let measured_at = check_time(reading.measured_at.as_ref(), now, cfg)?;

    if !reading.value.is_finite() {
        return Err(reject(
            RejectReason::NonFinite,
            format!("value {} is not a finite number", reading.value),
        ));
    }
    let sent_unit = sent_unit(reading, spec);
    let convert = |x: f64| to_canonical(x, sent_unit, spec);
    let value = convert(reading.value)?;
    // The analyser's converted value is in the measured value's unit; one
    // that does not convert to a finite number is left out, not refused.
    let converted = reading
        .converted
        .and_then(|c| convert(c).ok())
        .filter(|c| c.is_finite());
    if !value.is_finite() {
        return Err(reject(
            RejectReason::NonFinite,
            format!(
                "value {} {} overflows in {}",
                reading.value,
                quote(&reading.unit),
                spec.unit
            ),
        ));
    }

    let qc_flag = range_check(
        QcFlag::from_status(status, &reading.device_flag),
        spec,
        value,
    )?;

    Ok(Normalised {
        station_id: station.id.clone(),
        parameter: spec.code.clone(),
        value,
        unit: spec.unit.clone(),
        measured_at,
        status,
        device_flag: reading.device_flag.clone(),
        qc_flag,
        source: reading.source,
        received_at: reading.received_at.as_ref().and_then(from_timestamp),
        ingest_id: reading.ingest_id.clone(),
        converted,
        wire_code: (reading.parameter != spec.code).then(|| reading.parameter.clone()),
    })
}

/// The unit a reading's value is in. A unit the reading names is its unit.
/// HJ 212 packets name none: the value is in the unit the station's logger
/// is registered to send, else the standard's unit for its code. Elsewhere
/// a missing unit is the parameter's own.
fn sent_unit<'a>(reading: &'a v1::Reading, spec: &'a ParameterSpec) -> &'a str {
    if !reading.unit.is_empty() {
        &reading.unit
    } else if reading.source == v1::SourceProtocol::TcpHj212 as i32 {
        spec.hj212_unit_for(&reading.parameter)
    } else {
        &spec.unit
    }
}

fn to_canonical(x: f64, sent_unit: &str, spec: &ParameterSpec) -> Result<f64, Rejection> {
    if sent_unit == spec.unit {
        Ok(x)
    } else {
        units::convert(x, sent_unit, &spec.unit, &spec.code).map_err(|e| {
            reject(
                RejectReason::UnitNotConvertible,
                format!("{}: {}", spec.code, e),
            )
        })
    }
}

/// What a validated reading is: a real-time value, or a logger's own
/// aggregate over a period.
#[derive(Debug, Clone, PartialEq)]
pub enum Validated {
    Reading(Normalised),
    Reported(ReportedRow),
}

/// [`validate`] for either kind: a logger's minute / hourly / daily record
/// is checked like a reading (its average is the value: same unit
/// conversion, range and flags), its minimum and maximum converted alike.
pub fn validate_any(
    reading: &v1::Reading,
    registry: &Registry,
    now: DateTime<Utc>,
    cfg: &ValidationConfig,
) -> Result<Validated, Rejection> {
    let kind = match v1::RecordKind::try_from(reading.record) {
        Ok(v1::RecordKind::Realtime) => {
            return validate(reading, registry, now, cfg).map(Validated::Reading);
        }
        Ok(v1::RecordKind::Minute) => "minute",
        Ok(v1::RecordKind::Hour) => "hour",
        Ok(v1::RecordKind::Day) => "day",
        Err(_) => {
            return Err(reject(
                RejectReason::BadStatus,
                format!(
                    "record kind {} is not one this processor knows",
                    reading.record
                ),
            ));
        }
    };
    let avg = validate(reading, registry, now, cfg)?;
    // Minimum and maximum in the average's unit, converted the same way.
    let spec = registry
        .station(&reading.station_id)
        .and_then(|s| s.parameter(&reading.parameter));
    let canonical = |x: Option<f64>| -> Option<f64> {
        let spec = spec?;
        to_canonical(x?, sent_unit(reading, spec), spec)
            .ok()
            .filter(|v| v.is_finite())
    };
    let (min, max) = (canonical(reading.min), canonical(reading.max));
    Ok(Validated::Reported(ReportedRow {
        station_id: avg.station_id,
        parameter: avg.parameter,
        kind,
        period_start: avg.measured_at,
        period_seconds: i32::try_from(reading.period_seconds).unwrap_or(i32::MAX),
        avg: avg.value,
        min,
        max,
        total: reading.total.filter(|t| t.is_finite()),
        converted: avg.converted,
        unit: avg.unit,
        status: avg.status,
        device_flag: avg.device_flag,
        qc_flag: avg.qc_flag,
        source: avg.source,
        wire_code: avg.wire_code,
        received_at: avg.received_at,
        ingest_id: avg.ingest_id,
    }))
}

/// Below the range's low end by more than this share of the range is not
/// zero drift: a negative concentration like that is not physical.
const BELOW_RANGE_TOLERANCE: f64 = 0.01;

/// The instrument range, for measured values. Above the range the analyser
/// is saturated: the value is kept as `above_range`, a lower bound, which
/// is evidence of an exceedance, not noise. Rejected only what cannot be a
/// measurement: pH outside 0-14, or below the range's low end by more than
/// [`BELOW_RANGE_TOLERANCE`] of the range (`-9999` error codes, negative
/// concentrations); manual entries are not an analyser's, so its range
/// bounds them both ways.
fn range_check(qc: QcFlag, spec: &ParameterSpec, value: f64) -> Result<QcFlag, Rejection> {
    if !qc.is_measured() {
        return Ok(qc);
    }
    let outside = |what: &str| {
        reject(
            RejectReason::OutOfRange,
            format!(
                "{} = {value} {} is {what} (instrument range [{}, {}])",
                spec.code, spec.unit, spec.range_min, spec.range_max
            ),
        )
    };
    if spec.unit == "pH" && !(0.0..=14.0).contains(&value) {
        return Err(outside("not a pH"));
    }
    let tolerance = BELOW_RANGE_TOLERANCE * (spec.range_max - spec.range_min);
    if value < spec.range_min - tolerance {
        return Err(outside("below the instrument range"));
    }
    if value > spec.range_max {
        return match qc {
            QcFlag::Valid => Ok(QcFlag::AboveRange),
            _ => Err(outside("above the instrument range")),
        };
    }
    Ok(qc)
}

/// The measurement time, within `[now - retention, now + max_future]`.
fn check_time(
    t: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
    cfg: &ValidationConfig,
) -> Result<DateTime<Utc>, Rejection> {
    let t = t.ok_or_else(|| reject(RejectReason::MissingTime, "no measurement time".into()))?;
    let Some(at) = from_timestamp(t) else {
        // Outside chrono's range (hundreds of thousands of years) or with
        // impossible nanoseconds.
        let (why, detail) = if !(0..1_000_000_000).contains(&t.nanos) {
            (RejectReason::MissingTime, "invalid nanoseconds")
        } else if t.seconds > 0 {
            (
                RejectReason::FutureTimestamp,
                "beyond any representable date",
            )
        } else {
            (RejectReason::TooOld, "before any representable date")
        };
        return Err(reject(
            why,
            format!("measurement time {}s {}ns: {detail}", t.seconds, t.nanos),
        ));
    };
    // A bound too large to represent is no bound.
    let latest = TimeDelta::from_std(cfg.max_future)
        .ok()
        .and_then(|d| now.checked_add_signed(d));
    if latest.is_some_and(|latest| at > latest) {
        return Err(reject(
            RejectReason::FutureTimestamp,
            format!(
                "measured at {at}, more than {:?} after now ({now})",
                cfg.max_future
            ),
        ));
    }
    let oldest = TimeDelta::from_std(cfg.retention)
        .ok()
        .and_then(|d| now.checked_sub_signed(d));
    if oldest.is_some_and(|oldest| at < oldest) {
        return Err(reject(
            RejectReason::TooOld,
            format!(
                "measured at {at}, older than the retention of {:?}",
                cfg.retention
            ),
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use quantrac_proto::domain::to_timestamp;

    use super::*;

    const SAMPLE: &str = include_str!("../../deploy/registry.toml");

    fn registry() -> Registry {
        Registry::from_toml(SAMPLE).unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 15, 3, 40, 0)
            .single()
            .unwrap_or_default()
    }

    /// COD 42 mg/L, measuring, five minutes ago, at a wastewater station.
    fn reading() -> v1::Reading {
        v1::Reading {
            station_id: "PY-HH-WW01".into(),
            parameter: "COD".into(),
            value: 42.0,
            unit: "mg/L".into(),
            measured_at: Some(to_timestamp(now() - TimeDelta::minutes(5))),
            status: v1::DeviceStatus::Measuring as i32,
            device_flag: "00".into(),
            source: v1::SourceProtocol::TcpCircular10 as i32,
            received_at: Some(to_timestamp(now())),
            ingest_id: "0194b0c8-0000-7000-8000-000000000001".into(),
            ..Default::default()
        }
    }

    fn check(r: &v1::Reading) -> Result<Normalised, Rejection> {
        validate(r, &registry(), now(), &ValidationConfig::default())
    }

    fn accepted(r: &v1::Reading) -> Normalised {
        check(r).unwrap_or_else(|e| panic!("rejected: {e}"))
    }

    /// A station renamed (a province merger) keeps its old name as an
    /// alias: its readings land under the registry's id, with the code as
    /// sent kept when it is not the canonical one.
    #[test]
    fn readings_under_an_alias_are_stored_under_the_id() {
        let registry = Registry::from_toml(&SAMPLE.replace(
            "id = \"PY-HH-WW01\"",
            "id = \"PY-HH-WW01\"\naliases = [\"PY-OLD-01\"]",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let r = v1::Reading {
            station_id: "PY-OLD-01".into(),
            parameter: "w01018".into(),
            unit: String::new(),
            source: v1::SourceProtocol::TcpHj212 as i32,
            ..reading()
        };
        let n = validate(&r, &registry, now(), &ValidationConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.station_id, "PY-HH-WW01");
        assert_eq!(
            (n.parameter.as_str(), n.wire_code.as_deref()),
            ("COD", Some("w01018"))
        );
        assert_eq!(
            accepted(&reading()).wire_code,
            None,
            "canonical code: none kept"
        );
    }

    fn rejected(r: &v1::Reading) -> Rejection {
        match check(r) {
            Ok(n) => panic!("accepted: {n:?}"),
            Err(e) => {
                assert!(RejectReason::ALL.contains(&e.reason), "{}", e.reason);
                e
            }
        }
    }

    #[test]
    fn accepts_and_normalises() {
        let n = accepted(&reading());
        assert_eq!(n.station_id, "PY-HH-WW01");
        assert_eq!(
            (n.parameter.as_str(), n.value, n.unit.as_str()),
            ("COD", 42.0, "mg/L")
        );
        assert_eq!(n.measured_at, now() - TimeDelta::minutes(5));
        assert_eq!(
            (n.status, n.qc_flag),
            (DeviceStatus::Measuring, QcFlag::Valid)
        );
        assert_eq!(n.device_flag, "00");
        assert_eq!(n.source, v1::SourceProtocol::TcpCircular10 as i32);
        assert_eq!(n.received_at, Some(now()));
        assert_eq!(n.ingest_id, reading().ingest_id);
    }

    fn hj212(station: &str, code: &str, value: f64) -> v1::Reading {
        v1::Reading {
            station_id: station.into(),
            parameter: code.into(),
            value,
            unit: String::new(),
            device_flag: "N".into(),
            source: v1::SourceProtocol::TcpHj212 as i32,
            ..reading()
        }
    }

    /// HJ 212's code table: w00000 in L/s, a00000 in m³/s, gas
    /// concentrations in mg/m³ at 273.15 K; stored in the registry's units.
    #[test]
    fn hj212_values_are_read_in_the_standards_units() {
        let flow = accepted(&hj212("PY-AP-WW01", "w00000", 10.0));
        assert_eq!(
            (flow.parameter.as_str(), flow.unit.as_str()),
            ("Flow", "m3/h")
        );
        assert!((flow.value - 36.0).abs() < 1e-9, "{}", flow.value);

        let gas = accepted(&hj212("PY-HH-ST01", "a00000", 20.0));
        assert!((gas.value - 72_000.0).abs() < 1e-6, "{}", gas.value);

        let so2 = accepted(&hj212("PY-HH-ST01", "a21026", 450.0));
        assert_eq!(so2.unit, "mg/Nm3");
        assert!(
            (so2.value - 450.0 * 273.15 / 298.15).abs() < 1e-9,
            "{}",
            so2.value
        );

        // 2005-edition codes too.
        let cod = accepted(&hj212("PY-AP-WW01", "011", 42.0));
        assert_eq!((cod.parameter.as_str(), cod.value), ("COD", 42.0));
        let flow05 = accepted(&hj212("PY-AP-WW01", "B01", 10.0));
        assert!((flow05.value - 36.0).abs() < 1e-9);
    }

    /// A station whose logger is configured for m³/h says so in the registry.
    #[test]
    fn hj212_unit_from_the_registry_wins() {
        let text = SAMPLE.replacen(
            r#"{ code = "Flow", unit = "m3/h",  range_min = 0, range_max = 500,  expected_interval = "5m" },"#,
            r#"{ code = "Flow", unit = "m3/h",  range_min = 0, range_max = 500,  expected_interval = "5m", hj212_unit = "m3/h" },"#,
            1,
        );
        assert_ne!(text, SAMPLE, "the sample registry changed shape");
        let registry = Registry::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
        let n = validate(
            &hj212("PY-AP-WW01", "w00000", 10.0),
            &registry,
            now(),
            &ValidationConfig::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.value, 10.0);
    }

    #[test]
    fn hj212_code_without_unit() {
        let r = v1::Reading {
            parameter: "w01018".into(),
            unit: String::new(),
            device_flag: "N".into(),
            ..reading()
        };
        let n = accepted(&r);
        assert_eq!(
            (n.parameter.as_str(), n.value, n.unit.as_str()),
            ("COD", 42.0, "mg/L")
        );
    }

    #[test]
    fn converts_units() {
        let r = v1::Reading {
            value: 0.042,
            unit: "g/L".into(),
            ..reading()
        };
        assert!((accepted(&r).value - 42.0).abs() < 1e-9);
        let r = v1::Reading {
            parameter: "Flow".into(),
            value: 10.0,
            unit: "L/s".into(),
            ..reading()
        };
        assert!((accepted(&r).value - 36.0).abs() < 1e-9);
        let r = v1::Reading {
            parameter: "Temp".into(),
            value: 302.15,
            unit: "K".into(),
            ..reading()
        };
        assert!((accepted(&r).value - 29.0).abs() < 1e-9);
        // A stack station reporting SO2 in ppm.
        let r = v1::Reading {
            station_id: "PY-HH-ST01".into(),
            parameter: "SO2".into(),
            value: 100.0,
            unit: "ppm".into(),
            ..reading()
        };
        let n = accepted(&r);
        assert_eq!(n.unit, "mg/Nm3");
        assert!((n.value - 100.0 * 64.066 / 24.45).abs() < 1e-9);
    }

    #[test]
    fn status_to_qc_flag() {
        use v1::DeviceStatus as S;
        for (status, flag, want) in [
            (S::Measuring, "00", QcFlag::Valid),
            (S::Measuring, "N", QcFlag::Valid),
            (S::Measuring, "S", QcFlag::Manual),
            (S::Measuring, "T", QcFlag::AboveRange),
            (S::Calibrating, "01", QcFlag::Calibrating),
            (S::Calibrating, "C", QcFlag::Calibrating),
            (S::Calibrating, "M", QcFlag::Maintenance),
            (S::Error, "02", QcFlag::DeviceError),
            (S::Error, "D", QcFlag::DeviceError),
        ] {
            let r = v1::Reading {
                status: status as i32,
                device_flag: flag.into(),
                ..reading()
            };
            assert_eq!(accepted(&r).qc_flag, want, "{status:?} {flag}");
        }
        assert_eq!(QcFlag::AboveRange.as_str(), "above_range");
        assert_eq!(QcFlag::DeviceError.as_str(), "device_error");
    }

    #[test]
    fn unknown_station() {
        let r = v1::Reading {
            station_id: "PY-XX-WW99".into(),
            ..reading()
        };
        let e = rejected(&r);
        assert_eq!(e.reason, RejectReason::UnknownStation);
        assert!(e.detail.contains("PY-XX-WW99"), "{e}");
    }

    #[test]
    fn unknown_parameter() {
        // SO2 exists, but not at a wastewater outfall.
        let r = v1::Reading {
            parameter: "SO2".into(),
            ..reading()
        };
        assert_eq!(rejected(&r).reason, RejectReason::UnknownParameter);
        let r = v1::Reading {
            parameter: "x".repeat(10_000),
            ..reading()
        };
        let e = rejected(&r);
        assert_eq!(e.reason, RejectReason::UnknownParameter);
        assert!(e.detail.len() < 200, "detail is {} bytes", e.detail.len());
    }

    #[test]
    fn unit_not_convertible() {
        for unit in ["m3/h", "furlongs", "mg/Nm3"] {
            let r = v1::Reading {
                unit: unit.into(),
                ..reading()
            };
            let e = rejected(&r);
            assert_eq!(e.reason, RejectReason::UnitNotConvertible, "{unit}");
            assert!(e.detail.contains(unit) && e.detail.contains("mg/L"), "{e}");
        }
        // Stack conditions are not normal conditions.
        let r = v1::Reading {
            station_id: "PY-HH-ST01".into(),
            parameter: "SO2".into(),
            unit: "mg/m3".into(),
            ..reading()
        };
        assert_eq!(rejected(&r).reason, RejectReason::UnitNotConvertible);
    }

    #[test]
    fn range_after_conversion_saturation_kept_impossible_refused() {
        let at = |value: f64, unit: &str| v1::Reading {
            value,
            unit: unit.into(),
            ..reading()
        };
        assert_eq!(accepted(&at(0.0, "mg/L")).value, 0.0);
        assert_eq!(accepted(&at(1000.0, "mg/L")).qc_flag, QcFlag::Valid);
        // Above the range: the analyser is saturated, the value a lower
        // bound, kept.
        let saturated = accepted(&at(1000.5, "mg/L"));
        assert_eq!(
            (saturated.value, saturated.qc_flag),
            (1000.5, QcFlag::AboveRange)
        );
        // 1.5 g/L is 1500 mg/L: above the 0-1000 mg/L analyser.
        let saturated = accepted(&at(1.5, "g/L"));
        assert_eq!(
            (saturated.value, saturated.qc_flag),
            (1500.0, QcFlag::AboveRange)
        );
        // Zero drift is kept; beyond 1% of the range below zero it is not
        // a concentration.
        assert_eq!(accepted(&at(-0.1, "mg/L")).qc_flag, QcFlag::Valid);
        assert_eq!(accepted(&at(-10.0, "mg/L")).qc_flag, QcFlag::Valid);
        assert_eq!(
            rejected(&at(-10.5, "mg/L")).reason,
            RejectReason::OutOfRange
        );
        assert_eq!(
            rejected(&at(-9999.0, "mg/L")).reason,
            RejectReason::OutOfRange
        );
        // pH outside 0-14 is no pH.
        let ph = |value: f64| v1::Reading {
            parameter: "pH".into(),
            value,
            unit: "pH".into(),
            ..reading()
        };
        assert_eq!(rejected(&ph(14.2)).reason, RejectReason::OutOfRange);
        assert_eq!(rejected(&ph(-0.1)).reason, RejectReason::OutOfRange);
        assert_eq!(accepted(&ph(14.0)).qc_flag, QcFlag::Valid);
        // Manual entries are measurements too.
        let manual = v1::Reading {
            device_flag: "S".into(),
            ..at(5000.0, "mg/L")
        };
        assert_eq!(rejected(&manual).reason, RejectReason::OutOfRange);
    }

    #[test]
    fn calibration_and_errors_are_never_out_of_range() {
        for (status, flag) in [
            (v1::DeviceStatus::Calibrating, "01"),
            (v1::DeviceStatus::Calibrating, "M"),
            (v1::DeviceStatus::Error, "02"),
            (v1::DeviceStatus::Measuring, "T"),
        ] {
            for value in [-9999.0, 1e6] {
                let r = v1::Reading {
                    status: status as i32,
                    device_flag: flag.into(),
                    value,
                    ..reading()
                };
                assert_eq!(accepted(&r).value, value, "{status:?} {flag} {value}");
            }
        }
    }

    #[test]
    fn non_finite() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for status in [v1::DeviceStatus::Measuring, v1::DeviceStatus::Error] {
                let r = v1::Reading {
                    value,
                    status: status as i32,
                    ..reading()
                };
                assert_eq!(rejected(&r).reason, RejectReason::NonFinite);
            }
        }
        // Finite as sent, infinite in the canonical unit.
        let r = v1::Reading {
            value: f64::MAX,
            unit: "g/L".into(),
            status: v1::DeviceStatus::Error as i32,
            ..reading()
        };
        assert_eq!(rejected(&r).reason, RejectReason::NonFinite);
    }

    #[test]
    fn bad_status() {
        for status in [0, 4, -1, i32::MAX] {
            let r = v1::Reading {
                status,
                ..reading()
            };
            assert_eq!(rejected(&r).reason, RejectReason::BadStatus, "{status}");
        }
    }

    #[test]
    fn missing_time() {
        let r = v1::Reading {
            measured_at: None,
            ..reading()
        };
        assert_eq!(rejected(&r).reason, RejectReason::MissingTime);
        let r = v1::Reading {
            measured_at: Some(prost_types::Timestamp {
                seconds: 1_736_912_400,
                nanos: -1,
            }),
            ..reading()
        };
        assert_eq!(rejected(&r).reason, RejectReason::MissingTime);
    }

    #[test]
    fn future_timestamp() {
        let cfg = ValidationConfig::default();
        let at = |t: DateTime<Utc>| v1::Reading {
            measured_at: Some(to_timestamp(t)),
            ..reading()
        };
        assert!(check(&at(now() + TimeDelta::minutes(10))).is_ok());
        let e = rejected(&at(now()
            + TimeDelta::minutes(10)
            + TimeDelta::nanoseconds(1)));
        assert_eq!(e.reason, RejectReason::FutureTimestamp);
        let far = v1::Reading {
            measured_at: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..reading()
        };
        assert_eq!(rejected(&far).reason, RejectReason::FutureTimestamp);
        // A huge max_future is no bound rather than an overflow.
        let lax = ValidationConfig {
            max_future: Duration::MAX,
            ..cfg
        };
        assert!(validate(&at(now() + TimeDelta::days(365)), &registry(), now(), &lax).is_ok());
    }

    #[test]
    fn too_old() {
        let cfg = ValidationConfig::default();
        let at = |t: DateTime<Utc>| v1::Reading {
            measured_at: Some(to_timestamp(t)),
            ..reading()
        };
        let oldest = now() - TimeDelta::from_std(cfg.retention).unwrap_or_default();
        assert!(check(&at(oldest)).is_ok());
        // A logger's week-long backlog is fine.
        assert!(check(&at(now() - TimeDelta::days(7))).is_ok());
        assert_eq!(
            rejected(&at(oldest - TimeDelta::seconds(1))).reason,
            RejectReason::TooOld
        );
        let epoch = v1::Reading {
            measured_at: Some(prost_types::Timestamp::default()),
            ..reading()
        };
        assert_eq!(rejected(&epoch).reason, RejectReason::TooOld);
        let ancient = v1::Reading {
            measured_at: Some(prost_types::Timestamp {
                seconds: i64::MIN,
                nanos: 0,
            }),
            ..reading()
        };
        assert_eq!(rejected(&ancient).reason, RejectReason::TooOld);
    }

    #[test]
    fn checks_run_in_documented_order() {
        // Unknown station wins over everything else wrong with a reading.
        let r = v1::Reading {
            station_id: "nope".into(),
            parameter: "nope".into(),
            value: f64::NAN,
            measured_at: None,
            status: 0,
            ..reading()
        };
        assert_eq!(rejected(&r).reason, RejectReason::UnknownStation);
        let r = v1::Reading {
            station_id: reading().station_id,
            ..r
        };
        assert_eq!(rejected(&r).reason, RejectReason::UnknownParameter);
        let r = v1::Reading {
            parameter: "COD".into(),
            ..r
        };
        assert_eq!(rejected(&r).reason, RejectReason::BadStatus);
        let r = v1::Reading { status: 1, ..r };
        assert_eq!(rejected(&r).reason, RejectReason::MissingTime);
        let r = v1::Reading {
            measured_at: reading().measured_at,
            ..r
        };
        assert_eq!(rejected(&r).reason, RejectReason::NonFinite);
    }

    #[test]
    fn config_reads_humantime() {
        let cfg: ValidationConfig =
            toml::from_str("max_future = \"2m\"\nretention = \"365days\"").unwrap_or_default();
        assert_eq!(cfg.max_future, Duration::from_secs(120));
        assert_eq!(cfg.retention, Duration::from_secs(365 * 86_400));
        let partial: ValidationConfig = toml::from_str("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(partial, ValidationConfig::default());
    }
}
