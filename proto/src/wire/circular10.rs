//! Circular 10/2021 text records: one line per parameter,
//! `<code>\t<value>\t<unit>\t<yyyyMMddHHmmss>\t<status>`, in a file named
//! `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt`.
//!
//! The layout is best-known, not read from the circular itself, so the
//! decoder is tolerant of what loggers are seen to write: spaces instead of
//! tabs, CRLF, a UTF-8 BOM (on any line: files get concatenated), `,` as
//! decimal point, `PM2,5` as a code, blank lines, and a line without its
//! unit (4 fields; pH has none).
//!
//! Reason codes (stable, used as metric labels):
//!
//! | reason | meaning |
//! |---|---|
//! | `circular10.encoding` | the record is not UTF-8 |
//! | `circular10.bad_line` | a line has neither 4 nor 5 fields, or an empty code |
//! | `circular10.bad_value` | a value is not a finite number |
//! | `circular10.bad_time` | a time is not `yyyyMMddHHmmss` |
//! | `circular10.bad_status` | a status is not `00`, `01` or `02` |
//! | `circular10.empty` | no line at all |
//! | `circular10.bad_file_name` | the file name is not `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>[.txt]` |
//! | `circular10.time_mismatch` | a line's time is more than [`FILE_TIME_TOLERANCE`] away from the file name's |

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use super::WireError;
use crate::domain::{DeviceStatus, Sample, SampleValue};

const TIME_FORMAT: &str = "%Y%m%d%H%M%S";

fn err(reason: &'static str, detail: impl Into<String>) -> WireError {
    WireError::new(reason, detail)
}

/// The parts of a record's file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    pub province: String,
    pub facility: String,
    pub station: String,
    /// Sample time as written (local time of the deployment).
    pub time: chrono::NaiveDateTime,
}

/// `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt`; station = everything
/// between the 2nd and the last `_` (station codes may contain `_`). The
/// `.txt` is optional and matched case-insensitively.
pub fn parse_file_name(name: &str) -> Result<FileName, WireError> {
    let bad = || err("circular10.bad_file_name", format!("{name:?}"));
    let stem = match name
        .len()
        .checked_sub(4)
        .and_then(|i| Some((name.get(..i)?, name.get(i..)?)))
    {
        Some((stem, ext)) if ext.eq_ignore_ascii_case(".txt") => stem,
        _ => name,
    };
    let (province, rest) = stem.split_once('_').ok_or_else(bad)?;
    let (facility, rest) = rest.split_once('_').ok_or_else(bad)?;
    let (station, time) = rest.rsplit_once('_').ok_or_else(bad)?;
    if province.is_empty() || facility.is_empty() || station.is_empty() {
        return Err(bad());
    }
    let time = super::parse_compact_time(time).ok_or_else(bad)?;
    Ok(FileName {
        province: province.to_owned(),
        facility: facility.to_owned(),
        station: station.to_owned(),
        time,
    })
}

pub fn file_name(province: &str, facility: &str, station: &str, time: NaiveDateTime) -> String {
    format!(
        "{province}_{facility}_{station}_{}.txt",
        time.format(TIME_FORMAT)
    )
}

/// How far a line's time may be from its file name's: the name carries
/// the measurement time, and a logger writes the file within minutes.
pub const FILE_TIME_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// Checks the record's times against its file name's: a file named for
/// one time that holds another is refused (kept with its reason), not
/// stored under a time nobody can vouch for.
pub fn check_file_time(
    name: &FileName,
    samples: &[Sample],
    offset: FixedOffset,
) -> Result<(), WireError> {
    let Some(named) = name.time.and_local_timezone(offset).single() else {
        return Err(err(
            "circular10.bad_file_name",
            format!("file time {} is not a local time", name.time),
        ));
    };
    let named = named.with_timezone(&Utc);
    for s in samples {
        if (s.measured_at - named).abs() > FILE_TIME_TOLERANCE {
            return Err(err(
                "circular10.time_mismatch",
                format!(
                    "the file is named for {}, a line is measured at {} (more than {} minutes apart)",
                    name.time.format(TIME_FORMAT),
                    s.measured_at.with_timezone(&offset).format(TIME_FORMAT),
                    FILE_TIME_TOLERANCE.num_minutes()
                ),
            ));
        }
    }
    Ok(())
}

/// Splits a line into at most 6 fields (enough to tell "too many").
fn fields(line: &str) -> Vec<&str> {
    if line.contains('\t') {
        line.split('\t')
            .map(|f| f.trim_matches(' '))
            .take(6)
            .collect()
    } else {
        line.split([' ', '\t'])
            .filter(|f| !f.is_empty())
            .take(6)
            .collect()
    }
}

fn parse_value(text: &str) -> Option<f64> {
    // A decimal comma, but only as the sole separator: "1,234.5" is ambiguous.
    let normalised;
    let text = if text.contains(',') {
        if text.contains('.') || text.matches(',').count() > 1 {
            return None;
        }
        normalised = text.replace(',', ".");
        &normalised
    } else {
        text
    };
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Lines `<code>\t<value>\t<unit>\t<yyyyMMddHHmmss>\t<status>`; times at
/// `offset` (UTC+7 normally). Returns one Sample per distinct timestamp, in
/// order of first appearance, values in line order. A bad line rejects the
/// whole record (a half-stored file is harder to reason about than a
/// refused one); the detail names the line number and the bad field.
pub fn decode_record(
    text: &[u8],
    station_id: &str,
    offset: FixedOffset,
) -> Result<Vec<Sample>, WireError> {
    let text = std::str::from_utf8(text).map_err(|e| err("circular10.encoding", e.to_string()))?;
    if text.contains(|c: char| c.is_control() && !matches!(c, '\t' | '\r' | '\n')) {
        return Err(err(
            "circular10.encoding",
            "control character in the record",
        ));
    }

    let mut samples: Vec<Sample> = Vec::new();
    let mut by_time: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        // A leading tab is an empty code, not padding: trim spaces (and
        // BOMs) only there.
        let line = line
            .trim_start_matches([' ', '\u{FEFF}'])
            .trim_end_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() {
            continue;
        }
        let f = fields(line);
        let (code, value, unit, time, status_code) = match f.as_slice() {
            [c, v, u, t, s] => (*c, *v, *u, *t, *s),
            [c, v, t, s] => (*c, *v, "", *t, *s),
            _ => {
                return Err(err(
                    "circular10.bad_line",
                    format!("line {n}: {} fields, expected 5", f.len()),
                ));
            }
        };
        if code.is_empty() {
            return Err(err("circular10.bad_line", format!("line {n}: empty code")));
        }
        let value = parse_value(value)
            .ok_or_else(|| err("circular10.bad_value", format!("line {n}: value {value:?}")))?;
        let measured_at = super::parse_compact_time(time)
            .and_then(|t| t.and_local_timezone(offset).single())
            .ok_or_else(|| err("circular10.bad_time", format!("line {n}: time {time:?}")))?
            .with_timezone(&Utc);
        let status = DeviceStatus::from_circular10(status_code).ok_or_else(|| {
            err(
                "circular10.bad_status",
                format!("line {n}: status {status_code:?}"),
            )
        })?;

        let value = SampleValue {
            parameter: code.to_owned(),
            value,
            unit: unit.to_owned(),
            status,
            device_flag: status_code.to_owned(),
            report: None,
            converted: None,
        };
        match by_time.get(&measured_at) {
            Some(&at) => {
                if let Some(s) = samples.get_mut(at) {
                    s.values.push(value);
                }
            }
            None => {
                by_time.insert(measured_at, samples.len());
                samples.push(Sample {
                    station_id: station_id.to_owned(),
                    measured_at,
                    values: vec![value],
                });
            }
        }
    }
    if samples.is_empty() {
        return Err(err("circular10.empty", "no data line"));
    }
    Ok(samples)
}

/// Encodes one sample as lines ending `\r\n` (what Windows-based loggers
/// write). Values use Rust's shortest round-trip `Display`, so they decode
/// to the same `f64`; times are written to the second at `offset`; the
/// status column is the Circular 10 code of the value's status.
pub fn encode_record(sample: &Sample, offset: FixedOffset) -> Vec<u8> {
    let time = sample
        .measured_at
        .with_timezone(&offset)
        .format(TIME_FORMAT)
        .to_string();
    let mut out = String::with_capacity(sample.values.len() * 48);
    for v in &sample.values {
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "{}\t{}\t{}\t{time}\t{}\r\n",
            v.parameter,
            v.value,
            v.unit,
            v.status.circular10_code()
        );
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    const DOC_EXAMPLE: &str = "pH\t7.12\tpH\t20250115103500\t00
Temp\t29.4\t°C\t20250115103500\t00
TSS\t18.6\tmg/L\t20250115103500\t00
COD\t42.0\tmg/L\t20250115103500\t01
NH4\t1.35\tmg/L\t20250115103500\t00
Flow\t52.8\tm3/h\t20250115103500\t00
";

    fn vn() -> FixedOffset {
        FixedOffset::east_opt(7 * 3600).unwrap()
    }

    fn reason(text: &str) -> (&'static str, String) {
        let e = decode_record(text.as_bytes(), "S", vn()).unwrap_err();
        (e.reason, e.detail)
    }

    #[test]
    fn decodes_the_documented_example() {
        let samples = decode_record(DOC_EXAMPLE.as_bytes(), "PY_HH_WW01", vn()).unwrap();
        assert_eq!(samples.len(), 1);
        let s = &samples[0];
        assert_eq!(s.station_id, "PY_HH_WW01");
        assert_eq!(
            s.measured_at,
            Utc.with_ymd_and_hms(2025, 1, 15, 3, 35, 0).unwrap()
        );
        let got: Vec<_> = s
            .values
            .iter()
            .map(|v| {
                (
                    v.parameter.as_str(),
                    v.value,
                    v.unit.as_str(),
                    v.status,
                    v.device_flag.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("pH", 7.12, "pH", DeviceStatus::Measuring, "00"),
                ("Temp", 29.4, "°C", DeviceStatus::Measuring, "00"),
                ("TSS", 18.6, "mg/L", DeviceStatus::Measuring, "00"),
                ("COD", 42.0, "mg/L", DeviceStatus::Calibrating, "01"),
                ("NH4", 1.35, "mg/L", DeviceStatus::Measuring, "00"),
                ("Flow", 52.8, "m3/h", DeviceStatus::Measuring, "00"),
            ]
        );
        // Encoding gives the example back, with CRLF and "42" for 42.0.
        let encoded = String::from_utf8(encode_record(s, vn())).unwrap();
        assert_eq!(
            encoded,
            DOC_EXAMPLE.replace('\n', "\r\n").replace("42.0", "42")
        );
    }

    #[test]
    fn tolerances() {
        let text = "\u{FEFF}PM2,5   12,5  mg/Nm3 20250115103500 0\r\n\r\n  \r\n\u{FEFF}SO2\t3\tmg/Nm3\t20250115104000\t02\t\r\npH 7 20250115103500 01";
        let samples = decode_record(text.as_bytes(), "S", vn()).unwrap();
        assert_eq!(samples.len(), 2);
        let got: Vec<_> = samples[0]
            .values
            .iter()
            .map(|v| (v.parameter.as_str(), v.value, v.unit.as_str(), v.status))
            .collect();
        assert_eq!(
            got,
            [
                ("PM2,5", 12.5, "mg/Nm3", DeviceStatus::Measuring),
                ("pH", 7.0, "", DeviceStatus::Calibrating)
            ]
        );
        assert_eq!(samples[0].values[0].device_flag, "0");
        assert_eq!(samples[1].values[0].status, DeviceStatus::Error);
        assert_eq!(
            samples[1].measured_at,
            Utc.with_ymd_and_hms(2025, 1, 15, 3, 40, 0).unwrap()
        );
        // Tab-separated with an empty unit.
        let s = decode_record(b"pH\t7.1\t\t20250115103500\t00", "S", vn()).unwrap();
        assert_eq!(s[0].values[0].unit, "");
    }

    #[test]
    fn rejection_reasons() {
        assert_eq!(
            decode_record(b"pH\t7\tpH\t20250115103500\t0\xB0", "S", vn())
                .unwrap_err()
                .reason,
            "circular10.encoding"
        );
        assert_eq!(reason(""), ("circular10.empty", "no data line".into()));
        assert_eq!(reason("\u{FEFF}\r\n \r\n").0, "circular10.empty");
        let (r, d) = reason(&format!("{DOC_EXAMPLE}COD\t42\t20250115103500"));
        assert_eq!(
            (r, d.as_str()),
            ("circular10.bad_line", "line 7: 3 fields, expected 5")
        );
        assert_eq!(
            reason("pH\t7\tpH\t20250115103500\t00\tx").0,
            "circular10.bad_line"
        );
        assert_eq!(
            reason("\t7\tpH\t20250115103500\t00").0,
            "circular10.bad_line"
        );
        assert_eq!(reason("pH").0, "circular10.bad_line");
        for v in ["abc", "", "NaN", "inf", "1e999", "1,234.5", "1,2,3"] {
            let (r, d) = reason(&format!(
                "pH\t7\tpH\t20250115103500\t00\nCOD\t{v}\tmg/L\t20250115103500\t00"
            ));
            assert_eq!(r, "circular10.bad_value", "{v}");
            assert!(d.starts_with("line 2: value"), "{d}");
        }
        for t in [
            "2025011510350",
            "20251315103500",
            "+2025011510350",
            "2025-01-15T10:3",
        ] {
            assert_eq!(
                reason(&format!("pH\t7\tpH\t{t}\t00")).0,
                "circular10.bad_time",
                "{t}"
            );
        }
        assert_eq!(
            reason("pH\t7\tpH\t20250115103500\t03").0,
            "circular10.bad_status"
        );
        assert_eq!(
            reason("pH\t7\tpH\t20250115103500\tmeasuring").0,
            "circular10.bad_status"
        );
    }

    #[test]
    fn file_names() {
        let t = NaiveDate::from_ymd_opt(2025, 1, 15)
            .unwrap()
            .and_hms_opt(10, 35, 0)
            .unwrap();
        let name = file_name("PY", "HoaHiep", "WW_01", t);
        assert_eq!(name, "PY_HoaHiep_WW_01_20250115103500.txt");
        let expect = FileName {
            province: "PY".into(),
            facility: "HoaHiep".into(),
            station: "WW_01".into(),
            time: t,
        };
        assert_eq!(parse_file_name(&name).unwrap(), expect);
        assert_eq!(
            parse_file_name("PY_HoaHiep_WW_01_20250115103500.TXT").unwrap(),
            expect
        );
        assert_eq!(
            parse_file_name("PY_HoaHiep_WW_01_20250115103500").unwrap(),
            expect
        );
        for bad in [
            "",
            ".txt",
            "PY_HoaHiep_20250115103500.txt",
            "PY__WW_20250115103500.txt",
            "PY_F_S_2025011510350.txt",
            "PY_F_S_20251315103500.txt",
            "PY_F_S_20250115103500.csv",
            "é_F_S_2025011510350é",
        ] {
            assert_eq!(
                parse_file_name(bad).unwrap_err().reason,
                "circular10.bad_file_name",
                "{bad}"
            );
        }
    }
}
