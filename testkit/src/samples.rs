//! Readings to send, as stations would.

use chrono::{DateTime, Utc};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::{Sample, SampleValue};

fn measured(parameter: &str, value: f64, unit: &str) -> SampleValue {
    SampleValue {
        parameter: parameter.into(),
        value,
        unit: unit.into(),
        status: DeviceStatus::Measuring,
        device_flag: "00".into(),
        report: None,
        converted: None,
    }
}

/// One sample of pH 7.2, TSS 30, the given COD and NH4 2 (mg/L) from
/// `station` at `at`: inside range and permit unless `cod` is not.
pub fn outfall(station: &str, at: DateTime<Utc>, cod: f64) -> Sample {
    Sample {
        station_id: station.into(),
        measured_at: at,
        values: vec![
            measured("pH", 7.2, "pH"),
            measured("TSS", 30.0, "mg/L"),
            measured("COD", cod, "mg/L"),
            measured("NH4", 2.0, "mg/L"),
        ],
    }
}

/// `per_station` samples of pH, TSS, COD and NH4 for each of the outfalls
/// `<prefix>-0` … `<prefix>-<stations-1>`, 5 minutes apart, the last one 15
/// minutes ago, whole seconds; every value inside range and permit.
pub fn outfalls(prefix: &str, stations: usize, per_station: usize) -> Vec<Sample> {
    let end = Utc::now() - chrono::Duration::minutes(10);
    let mut out = Vec::new();
    for k in 0..per_station {
        let at: DateTime<Utc> = end - chrono::Duration::minutes(5 * (per_station - k) as i64);
        let at = DateTime::from_timestamp(at.timestamp(), 0).expect("whole second");
        for s in 0..stations {
            out.push(Sample {
                station_id: format!("{prefix}-{s}"),
                measured_at: at,
                values: vec![
                    measured("pH", 7.0 + (k % 10) as f64 / 10.0, "pH"),
                    measured("TSS", 20.0 + k as f64 % 7.0, "mg/L"),
                    measured("COD", 40.0 + k as f64 % 13.0, "mg/L"),
                    measured("NH4", 1.5, "mg/L"),
                ],
            });
        }
    }
    out
}

/// COD samples of `station`, 5 minutes apart on the 5-minute grid, the last
/// one `minutes_ago` minutes ago.
pub fn cod(station: &str, values: &[f64], minutes_ago: i64) -> Vec<Sample> {
    let n = values.len() as i64;
    let end = Utc::now() - chrono::Duration::minutes(minutes_ago);
    let end = DateTime::from_timestamp(end.timestamp() / 300 * 300, 0).expect("time");
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Sample {
            station_id: station.into(),
            measured_at: end - chrono::Duration::minutes(5 * (n - 1 - i as i64)),
            values: vec![measured("COD", *v, "mg/L")],
        })
        .collect()
}
