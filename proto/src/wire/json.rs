//! The project's JSON sample format (MQTT payloads and TCP JSON lines).
//!
//! Schema: `proto/schema/sample.schema.json` (JSON Schema 2020-12). One
//! object per station sample, several parameters at one timestamp:
//!
//! ```json
//! {"station_id":"PY-HH-WW01","measured_at":"2025-01-15T10:35:00+07:00",
//!  "values":[{"parameter":"pH","value":7.12,"unit":"pH","status":"measuring","flag":"00"}]}
//! ```
//!
//! `unit` and `flag` default to `""`, `status` to `"measuring"`. Unknown
//! fields are refused: the schema is a contract, and a misspelt `unit`
//! silently dropped would store values without their unit.
//!
//! Reason codes (stable, used as metric labels):
//!
//! | reason | meaning |
//! |---|---|
//! | `json.syntax` | not JSON (or not UTF-8, or trailing bytes) |
//! | `json.schema` | JSON, but a field is missing, unknown, of the wrong type, empty or too long |
//! | `json.bad_time` | `measured_at` is not RFC 3339 with an offset |
//! | `json.bad_value` | a value does not fit a finite `f64` |
//! | `json.bad_status` | `status` is not `measuring`, `calibrating` or `error` |
//! | `json.missing_station` | no `station_id` in the payload and none known by the caller |
//! | `json.station_mismatch` | payload `station_id` differs from the one the caller knows |
//! | `json.empty` | `values` is empty |
//! | `json.too_many_values` | more than [`MAX_VALUES`] values |

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::WireError;
use crate::domain::{DeviceStatus, Sample, SampleValue};

/// Most values one sample may carry; a station has 6-10 parameters, so
/// anything near this is a misbehaving sender.
pub const MAX_VALUES: usize = 256;

/// Longest `station_id`, `parameter`, `unit` or `flag`, in characters (as
/// JSON Schema's `maxLength` counts).
pub const MAX_TEXT_LEN: usize = 64;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InSample {
    #[serde(default)]
    station_id: Option<String>,
    measured_at: String,
    values: BoundedValues,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InValue {
    parameter: String,
    value: f64,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    flag: String,
}

/// The `values` array, keeping at most [`MAX_VALUES`] entries so a hostile
/// payload cannot make us build a huge vector; the rest is only counted.
struct BoundedValues {
    items: Vec<InValue>,
    total: usize,
}

impl<'de> Deserialize<'de> for BoundedValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BoundedValues;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of values")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                let mut total = 0;
                loop {
                    let more = if items.len() < MAX_VALUES {
                        seq.next_element::<InValue>()?
                            .map(|v| items.push(v))
                            .is_some()
                    } else {
                        seq.next_element::<IgnoredAny>()?.is_some()
                    };
                    if !more {
                        break;
                    }
                    total += 1;
                }
                Ok(BoundedValues { items, total })
            }
        }
        d.deserialize_seq(V)
    }
}

fn err(reason: &'static str, detail: impl Into<String>) -> WireError {
    WireError::new(reason, detail)
}

fn check_text(
    field: &str,
    index: Option<usize>,
    s: &str,
    allow_empty: bool,
) -> Result<(), WireError> {
    let at = || index.map_or_else(|| field.to_owned(), |i| format!("values[{i}].{field}"));
    if !allow_empty && s.is_empty() {
        return Err(err("json.schema", format!("{} is empty", at())));
    }
    // Control characters (NUL above all: PostgreSQL refuses it in text)
    // have no place in codes, units or ids.
    if s.contains(char::is_control) {
        return Err(err(
            "json.schema",
            format!("{} contains a control character", at()),
        ));
    }
    if s.chars().count() > MAX_TEXT_LEN {
        return Err(err(
            "json.schema",
            format!("{} is longer than {MAX_TEXT_LEN} characters", at()),
        ));
    }
    Ok(())
}

/// Decodes one JSON sample. `expected_station` is the station the transport
/// already identified (the MQTT topic); the payload may then omit
/// `station_id`, and must agree with it when it does not.
pub fn decode(payload: &[u8], expected_station: Option<&str>) -> Result<Sample, WireError> {
    let payload = payload.strip_prefix(UTF8_BOM).unwrap_or(payload);
    let raw: InSample = serde_json::from_slice(payload).map_err(|e| {
        let detail = e.to_string();
        // JSON has no NaN or Infinity; the only way to a non-finite value is
        // a literal too large for f64, which serde_json reports as syntax.
        if detail.starts_with("number out of range") {
            return err("json.bad_value", detail);
        }
        match e.classify() {
            serde_json::error::Category::Data => err("json.schema", detail),
            _ => err("json.syntax", detail),
        }
    })?;

    let station_id = match (raw.station_id, expected_station) {
        (Some(sent), Some(known)) if sent != known => {
            return Err(err(
                "json.station_mismatch",
                format!("payload says {sent:?}, transport says {known:?}"),
            ));
        }
        (Some(sent), _) => {
            check_text("station_id", None, &sent, false)?;
            sent
        }
        (None, Some(known)) if !known.is_empty() => known.to_owned(),
        (None, _) => {
            return Err(err(
                "json.missing_station",
                "no station_id in payload or transport",
            ));
        }
    };

    let measured_at = DateTime::parse_from_rfc3339(&raw.measured_at)
        .map_err(|e| {
            err(
                "json.bad_time",
                format!("measured_at {:?}: {e}", raw.measured_at),
            )
        })?
        .with_timezone(&Utc);

    if raw.values.total > MAX_VALUES {
        return Err(err(
            "json.too_many_values",
            format!("{} values, at most {MAX_VALUES} allowed", raw.values.total),
        ));
    }
    if raw.values.items.is_empty() {
        return Err(err("json.empty", "values is empty"));
    }

    let values = raw
        .values
        .items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            check_text("parameter", Some(i), &v.parameter, false)?;
            check_text("unit", Some(i), &v.unit, true)?;
            check_text("flag", Some(i), &v.flag, true)?;
            if !v.value.is_finite() {
                return Err(err(
                    "json.bad_value",
                    format!("values[{i}].value is not finite"),
                ));
            }
            let status = match v.status.as_deref() {
                None => DeviceStatus::Measuring,
                Some(s) => DeviceStatus::from_json(s)
                    .ok_or_else(|| err("json.bad_status", format!("values[{i}].status {s:?}")))?,
            };
            Ok(SampleValue {
                parameter: v.parameter,
                value: v.value,
                unit: v.unit,
                status,
                device_flag: v.flag,
                report: None,
                converted: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Sample {
        station_id,
        measured_at,
        values,
    })
}

#[derive(Serialize)]
struct OutSample<'a> {
    station_id: &'a str,
    measured_at: String,
    values: Vec<OutValue<'a>>,
}

#[derive(Serialize)]
struct OutValue<'a> {
    parameter: &'a str,
    value: f64,
    unit: &'a str,
    status: &'static str,
    flag: &'a str,
}

/// Encodes a sample with every field of the schema present. `measured_at`
/// is written in UTC (`Z`) so the text is canonical; sub-second digits are
/// kept only when there are any. A non-finite value becomes `null`, which
/// [`decode`] refuses: such a sample should never have been built.
pub fn encode(sample: &Sample) -> Vec<u8> {
    let out = OutSample {
        station_id: &sample.station_id,
        measured_at: sample
            .measured_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        values: sample
            .values
            .iter()
            .map(|v| OutValue {
                parameter: &v.parameter,
                value: v.value,
                unit: &v.unit,
                status: v.status.as_str(),
                flag: &v.device_flag,
            })
            .collect(),
    };
    // Serialising plain structs of strings and numbers into a Vec cannot
    // fail; fall back to an empty payload rather than panic.
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const DOC_EXAMPLE: &str = r#"{"station_id":"PY-HH-WW01","measured_at":"2025-01-15T10:35:00+07:00",
 "values":[{"parameter":"pH","value":7.12,"unit":"pH","status":"measuring","flag":"00"}]}"#;

    fn reason(payload: &str, station: Option<&str>) -> &'static str {
        decode(payload.as_bytes(), station).unwrap_err().reason
    }

    #[test]
    fn decodes_the_documented_example() {
        let s = decode(DOC_EXAMPLE.as_bytes(), None).unwrap();
        assert_eq!(s.station_id, "PY-HH-WW01");
        assert_eq!(
            s.measured_at,
            Utc.with_ymd_and_hms(2025, 1, 15, 3, 35, 0).unwrap()
        );
        assert_eq!(
            s.values,
            vec![SampleValue {
                parameter: "pH".into(),
                value: 7.12,
                unit: "pH".into(),
                status: DeviceStatus::Measuring,
                device_flag: "00".into(),
                report: None,
                converted: None,
            }]
        );
    }

    #[test]
    fn optional_fields_default() {
        let s = decode(
            br#"{"measured_at":"2025-01-15T03:35:00Z","values":[{"parameter":"COD","value":42}]}"#,
            Some("S1"),
        )
        .unwrap();
        assert_eq!(s.station_id, "S1");
        let v = &s.values[0];
        assert_eq!(
            (v.value, v.unit.as_str(), v.status, v.device_flag.as_str()),
            (42.0, "", DeviceStatus::Measuring, "")
        );
    }

    #[test]
    fn station_from_both_sides() {
        assert!(decode(DOC_EXAMPLE.as_bytes(), Some("PY-HH-WW01")).is_ok());
        assert_eq!(
            reason(DOC_EXAMPLE, Some("PY-HH-WW02")),
            "json.station_mismatch"
        );
        let no_station =
            r#"{"measured_at":"2025-01-15T03:35:00Z","values":[{"parameter":"pH","value":7}]}"#;
        assert_eq!(reason(no_station, None), "json.missing_station");
    }

    #[test]
    fn tolerates_bom_and_whitespace() {
        let mut p = UTF8_BOM.to_vec();
        p.extend_from_slice(b"  \n");
        p.extend_from_slice(DOC_EXAMPLE.as_bytes());
        p.extend_from_slice(b"\r\n");
        assert!(decode(&p, None).is_ok());
    }

    #[test]
    fn encode_is_canonical_utc() {
        let mut s = decode(DOC_EXAMPLE.as_bytes(), None).unwrap();
        let text = String::from_utf8(encode(&s)).unwrap();
        assert_eq!(
            text,
            r#"{"station_id":"PY-HH-WW01","measured_at":"2025-01-15T03:35:00Z","values":[{"parameter":"pH","value":7.12,"unit":"pH","status":"measuring","flag":"00"}]}"#
        );
        assert_eq!(decode(text.as_bytes(), None).unwrap(), s);

        s.measured_at += chrono::Duration::milliseconds(250);
        let text = String::from_utf8(encode(&s)).unwrap();
        assert!(
            text.contains(r#""measured_at":"2025-01-15T03:35:00.250Z""#),
            "{text}"
        );
        assert_eq!(decode(text.as_bytes(), None).unwrap(), s);
    }

    #[test]
    fn values_are_exact() {
        // serde_json's default parser is 1 ulp off here; float_roundtrip is not.
        for v in [117_010.684_761_555_23, 5e-324, f64::MAX, -0.1, 1e21] {
            let p = format!(
                r#"{{"measured_at":"2025-01-15T03:35:00Z","values":[{{"parameter":"pH","value":{v:e}}}]}}"#
            );
            assert_eq!(
                decode(p.as_bytes(), Some("S")).unwrap().values[0]
                    .value
                    .to_bits(),
                v.to_bits(),
                "{v}"
            );
        }
    }

    #[test]
    fn rejection_reasons() {
        let base = |values: &str| {
            format!(
                r#"{{"station_id":"S","measured_at":"2025-01-15T03:35:00Z","values":{values}}}"#
            )
        };
        assert_eq!(reason("{", None), "json.syntax");
        assert_eq!(reason("", None), "json.syntax");
        assert_eq!(reason(&format!("{DOC_EXAMPLE} x"), None), "json.syntax");
        assert_eq!(
            decode(b"{\"station_id\":\"\xFF\"}", None)
                .unwrap_err()
                .reason,
            "json.syntax"
        );
        assert_eq!(reason("[]", None), "json.schema");
        assert_eq!(
            reason(r#"{"station_id":"S","values":[]}"#, None),
            "json.schema"
        );
        assert_eq!(
            reason(&base(r#"[{"parameter":"pH","value":"7"}]"#), None),
            "json.schema"
        );
        assert_eq!(
            reason(&base(r#"[{"parameter":"pH","value":7,"untis":"x"}]"#), None),
            "json.schema"
        );
        assert_eq!(
            reason(&base(r#"[{"parameter":"","value":7}]"#), None),
            "json.schema"
        );
        assert_eq!(
            reason(
                &base(&format!(
                    r#"[{{"parameter":"{}","value":7}}]"#,
                    "x".repeat(65)
                )),
                None
            ),
            "json.schema"
        );
        assert_eq!(
            reason(&base(r#"[{"parameter":"pH","value":1e400}]"#), None),
            "json.bad_value"
        );
        assert_eq!(
            reason(
                &base(r#"[{"parameter":"pH","value":7,"status":"broken"}]"#),
                None
            ),
            "json.bad_status"
        );
        assert_eq!(reason(&base("[]"), None), "json.empty");
        let many = vec![r#"{"parameter":"pH","value":7}"#; MAX_VALUES + 1].join(",");
        assert_eq!(
            reason(&base(&format!("[{many}]")), None),
            "json.too_many_values"
        );
        let max = vec![r#"{"parameter":"pH","value":7}"#; MAX_VALUES].join(",");
        assert!(decode(base(&format!("[{max}]")).as_bytes(), None).is_ok());
        for t in [
            "2025-01-15T10:35:00",
            "2025-01-15",
            "yesterday",
            "2025-13-15T10:35:00Z",
        ] {
            let p = format!(
                r#"{{"station_id":"S","measured_at":"{t}","values":[{{"parameter":"pH","value":7}}]}}"#
            );
            assert_eq!(reason(&p, None), "json.bad_time", "{t}");
        }
    }
}
