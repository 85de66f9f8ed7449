//! The published JSON Schema and the JSON codec must describe the same
//! format: these tests fail when one changes without the other.
//!
//! A full validator crate would be heavy for this; the checks below cover
//! what can drift: field names, required fields, types, enums and bounds.

// Helpers outside #[test] fns are not covered by allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::wire::json;
use quantrac_proto::{Sample, SampleValue};
use serde_json::{Map, Value};

const SCHEMA: &str = include_str!("../schema/sample.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).unwrap()
}

fn value_schema(schema: &Value) -> &Value {
    &schema["$defs"]["value"]
}

fn keys(map: &Map<String, Value>) -> BTreeSet<&str> {
    map.keys().map(String::as_str).collect()
}

fn props(object_schema: &Value) -> &Map<String, Value> {
    object_schema["properties"].as_object().unwrap()
}

fn sample() -> Sample {
    let v = |parameter: &str, value, unit: &str, status, flag: &str| SampleValue {
        parameter: parameter.into(),
        value,
        unit: unit.into(),
        status,
        device_flag: flag.into(),
        report: None,
        converted: None,
    };
    Sample {
        station_id: "PY-HH-WW01".into(),
        measured_at: Utc.with_ymd_and_hms(2025, 1, 15, 3, 35, 0).unwrap(),
        values: vec![
            v("pH", 7.12, "pH", DeviceStatus::Measuring, "00"),
            v("COD", 42.0, "mg/L", DeviceStatus::Calibrating, "C"),
            v("Temp", -1.5e-3, "", DeviceStatus::Error, ""),
        ],
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks one encoded object against an object schema: exactly the declared
/// fields, required ones present, each of the declared type and enum.
fn check_object(object: &Value, schema: &Value, at: &str) {
    let object = object
        .as_object()
        .unwrap_or_else(|| panic!("{at} is not an object"));
    let declared = props(schema);
    assert_eq!(
        keys(object),
        keys(declared),
        "{at}: encoder fields differ from schema properties"
    );
    assert_eq!(schema["additionalProperties"], Value::Bool(false), "{at}");
    for required in schema["required"].as_array().unwrap() {
        assert!(
            object.contains_key(required.as_str().unwrap()),
            "{at}: missing required {required}"
        );
    }
    for (name, field) in object {
        let spec = &declared[name];
        if let Some(t) = spec["type"].as_str() {
            assert_eq!(json_type(field), t, "{at}.{name}");
        }
        if let Some(allowed) = spec["enum"].as_array() {
            assert!(allowed.contains(field), "{at}.{name}: {field} not in enum");
        }
    }
}

#[test]
fn encoder_output_has_exactly_the_schema_fields() {
    let schema = schema();
    let encoded: Value = serde_json::from_slice(&json::encode(&sample())).unwrap();
    check_object(&encoded, &schema, "sample");
    let values = encoded["values"].as_array().unwrap();
    assert_eq!(values.len(), 3);
    for (i, v) in values.iter().enumerate() {
        check_object(v, value_schema(&schema), &format!("values[{i}]"));
    }
}

#[test]
fn schema_agrees_with_the_codec() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["properties"]["values"]["maxItems"], json::MAX_VALUES);
    assert_eq!(
        schema["properties"]["values"]["items"]["$ref"],
        "#/$defs/value"
    );
    assert_eq!(
        schema["properties"]["station_id"]["maxLength"],
        json::MAX_TEXT_LEN
    );
    let value = value_schema(&schema);
    for f in ["parameter", "unit", "flag"] {
        assert_eq!(
            value["properties"][f]["maxLength"],
            json::MAX_TEXT_LEN,
            "{f}"
        );
    }
    let statuses: Vec<_> = [
        DeviceStatus::Measuring,
        DeviceStatus::Calibrating,
        DeviceStatus::Error,
    ]
    .iter()
    .map(|s| Value::from(s.as_str()))
    .collect();
    assert_eq!(
        value["properties"]["status"]["enum"],
        Value::Array(statuses)
    );
    assert_eq!(value["properties"]["status"]["default"], "measuring");

    // Every property carries a description: the schema is the documentation.
    for (name, p) in props(&schema).iter().chain(props(value)) {
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
    }
}

#[test]
fn schema_examples_decode() {
    let schema = schema();
    let examples = schema["examples"].as_array().unwrap();
    assert!(!examples.is_empty());
    for e in examples {
        let bytes = serde_json::to_vec(e).unwrap();
        let s = json::decode(&bytes, Some("PY-HH-WW01")).unwrap();
        // Defaults of the schema are the decoder's defaults.
        let raw_values = e["values"].as_array().unwrap();
        for (raw, v) in raw_values.iter().zip(&s.values) {
            let default = |f: &str| {
                value_schema(&schema)["properties"][f]["default"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let text = |f: &str| {
                raw.get(f)
                    .and_then(Value::as_str)
                    .map_or_else(|| default(f), str::to_owned)
            };
            assert_eq!(v.unit, text("unit"));
            assert_eq!(v.device_flag, text("flag"));
            assert_eq!(v.status.as_str(), text("status"));
        }
    }
}

#[test]
fn lowercase_rfc3339_accepted_as_the_pattern_allows() {
    let p = br#"{"measured_at":"2025-01-15t03:35:00.5z","values":[{"parameter":"pH","value":7}]}"#;
    let s = json::decode(p, Some("S")).unwrap();
    assert_eq!(
        s.measured_at,
        Utc.with_ymd_and_hms(2025, 1, 15, 3, 35, 0).unwrap() + chrono::Duration::milliseconds(500)
    );
}
