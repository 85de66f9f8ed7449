//! One station's readings at one time as the Circular 10 file the national
//! system takes: named `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt`
//! after the station's registered Circular 10 identity, one line per
//! parameter in its canonical code and unit, with its device status.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, Utc};
use quantrac_db::readings::ReadingRow;
use quantrac_proto::domain::{Sample, SampleValue};
use quantrac_proto::registry::Registry;
use quantrac_proto::wire::circular10;
use sha2::{Digest, Sha256};

/// Each station's Circular 10 identity, from the registry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identities(HashMap<String, [String; 3]>);

impl Identities {
    /// The first alias of each station that has the three parts
    /// `Province_Facility_Station`; a station without one is not forwarded
    /// (a made-up name would file its data under another facility).
    pub fn from_registry(registry: &Registry) -> Self {
        Identities(
            registry
                .stations()
                .filter_map(|s| {
                    let parts = s.aliases.iter().find_map(|a| split(a))?;
                    Some((s.id.clone(), parts))
                })
                .collect(),
        )
    }

    pub fn get(&self, station: &str) -> Option<&[String; 3]> {
        self.0.get(station)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn split(identity: &str) -> Option<[String; 3]> {
    let mut parts = identity.splitn(3, '_');
    let (p, f, s) = (parts.next()?, parts.next()?, parts.next()?);
    if [p, f, s].iter().any(|x| x.trim().is_empty()) {
        return None;
    }
    Some([p.to_string(), f.to_string(), s.to_string()])
}

/// A file ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub name: String,
    pub body: Vec<u8>,
    pub sha256: Vec<u8>,
    pub lines: i32,
}

/// The file of `rows` (one station, one time), named after `identity`.
pub fn file(
    identity: &[String; 3],
    at: DateTime<Utc>,
    rows: &[ReadingRow],
    offset: FixedOffset,
) -> File {
    let [province, facility, station] = identity;
    let sample = Sample {
        station_id: station.clone(),
        measured_at: at,
        values: rows
            .iter()
            .map(|r| SampleValue {
                parameter: r.parameter.clone(),
                value: r.value,
                unit: r.unit.clone(),
                status: r.status,
                device_flag: r.device_flag.clone(),
                report: None,
                converted: None,
            })
            .collect(),
    };
    let body = circular10::encode_record(&sample, offset);
    File {
        name: circular10::file_name(
            province,
            facility,
            station,
            at.with_timezone(&offset).naive_local(),
        ),
        sha256: Sha256::digest(&body).to_vec(),
        lines: i32::try_from(rows.len()).unwrap_or(i32::MAX),
        body,
    }
}

#[cfg(test)]
mod tests {
    use quantrac_proto::domain::DeviceStatus;
    use quantrac_proto::qc::QcFlag;

    use super::*;

    fn row(parameter: &str, value: f64, unit: &str, status: DeviceStatus) -> ReadingRow {
        ReadingRow {
            station_id: "PY-AP-WW01".into(),
            parameter: parameter.into(),
            value,
            unit: unit.into(),
            measured_at: DateTime::from_timestamp(1_736_912_100, 0).expect("time"),
            status,
            device_flag: "00".into(),
            qc_flag: QcFlag::Valid,
            source: 0,
            received_at: None,
            ingest_id: String::new(),
            converted: None,
            wire_code: None,
        }
    }

    #[test]
    fn a_file_reads_back_as_what_was_stored() {
        let vn = FixedOffset::east_opt(7 * 3600).expect("offset");
        let at = DateTime::from_timestamp(1_736_912_100, 0).expect("time");
        let rows = [
            row("COD", 42.0, "mg/L", DeviceStatus::Calibrating),
            row("pH", 7.12, "pH", DeviceStatus::Measuring),
        ];
        let identity = split("PY_CTY-AP_WW01").expect("identity");
        let f = file(&identity, at, &rows, vn);
        // 2025-01-15 03:35 UTC is 10:35 in Viet Nam.
        assert_eq!(f.name, "PY_CTY-AP_WW01_20250115103500.txt");
        assert_eq!(
            String::from_utf8(f.body.clone()).expect("utf-8"),
            "COD\t42\tmg/L\t20250115103500\t01\r\npH\t7.12\tpH\t20250115103500\t00\r\n"
        );
        // What the Ministry's side decodes is what is stored.
        let back = circular10::decode_record(&f.body, "WW01", vn).expect("decodes");
        assert_eq!(back[0].measured_at, at);
        let values: Vec<_> = back[0]
            .values
            .iter()
            .map(|v| (v.parameter.as_str(), v.value, v.status))
            .collect();
        assert_eq!(
            values,
            [
                ("COD", 42.0, DeviceStatus::Calibrating),
                ("pH", 7.12, DeviceStatus::Measuring)
            ]
        );
        assert_eq!(f.lines, 2);
    }

    #[test]
    fn identities_need_three_parts() {
        assert!(split("PY_AP_WW01").is_some());
        // A station code may hold `_`: everything after the second.
        assert_eq!(
            split("PY_AP_WW_01").map(|p| p[2].clone()),
            Some("WW_01".to_string())
        );
        for bad in ["PY-AP-WW01", "PY_AP", "PY__WW01", "_AP_WW01"] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }
}
