//! The fixture corpus (`proto/tests/fixtures`: real HJ 212 packets, Circular
//! 10 files) as the processor stores it, for a registry that names each station's parameters in QCVN's
//! units: the code as sent, the registry's parameter, the value converted
//! from the unit HJ 212's code table fixes for that code. Expectations are
//! worked out by hand from the packet and the standard's units.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use quantrac_processor::pipeline::{InRecord, check};
use quantrac_processor::validate::ValidationConfig;
use quantrac_proto::domain::local_offset;
use quantrac_proto::registry::Registry;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::hj212;

/// The 2005-edition packet's station.
const REGISTRY: &str = r#"
[[stations]]
id = "LD130133000015"
name = "Outfall"
facility = "Plant"
industrial_zone = "Zone"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [
  { code = "Flow", unit = "m3/h", range_min = 0, range_max = 5000 },
  { code = "COD",  unit = "mg/L", range_min = 0, range_max = 1000 },
  { code = "NH4",  unit = "mg/L", range_min = 0, range_max = 100 },
]
"#;

/// A surface-water station `id`, with QCVN's codes for what the catalogue
/// knows of HJ 212's (pH, temperature, ammonia, total phosphorus); the
/// codes it does not know are not registered.
fn river_section(id: &str) -> String {
    format!(
        r#"
[[stations]]
id = "{id}"
name = "River section"
facility = "Monitoring network"
industrial_zone = "Zone"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [
  {{ code = "pH",   unit = "pH",   range_min = 0, range_max = 14 }},
  {{ code = "Temp", unit = "°C",   range_min = 0, range_max = 100 }},
  {{ code = "NH4",  unit = "mg/L", range_min = 0, range_max = 100 }},
  {{ code = "TP",   unit = "mg/L", range_min = 0, range_max = 100 }},
]
"#
    )
}

fn frame(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/tests/fixtures/hj212")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    text.lines()
        .find_map(|l| l.strip_prefix("frame "))
        .expect("a frame line")
        .to_owned()
}

/// The fixture's packet through the processor's checks, as received over
/// TCP 30 s after its DataTime and checked a minute later.
fn checked(fixture: &str, registry: &str) -> quantrac_processor::pipeline::Checked {
    let packet = hj212::decode(format!("{}\r\n", frame(fixture)).as_bytes()).expect("decodes");
    let sample = packet.sample(local_offset()).expect("a sample");
    check_sample(sample, SourceProtocol::TcpHj212, registry)
}

/// `sample` through the processor's checks, as received by `source` 30 s
/// after its time and checked a minute later.
fn check_sample(
    sample: quantrac_proto::domain::Sample,
    source: SourceProtocol,
    registry: &str,
) -> quantrac_processor::pipeline::Checked {
    let registry = Registry::from_toml(registry).expect("registry");
    let measured = sample.measured_at;
    let batch = sample.into_batch(source, measured + chrono::Duration::seconds(30), "test");
    let record = InRecord {
        topic: Arc::from("readings.raw"),
        partition: 0,
        offset: 0,
        payload: Bytes::from(batch.encode_to_vec()),
    };
    check(
        &[record],
        &registry,
        &ValidationConfig::default(),
        measured + chrono::Duration::minutes(1),
    )
}

/// Stored rows as (parameter, code as sent, value to 3 decimals, unit).
fn rows(checked: &quantrac_processor::pipeline::Checked) -> Vec<(String, String, f64, String)> {
    let mut rows: Vec<_> = checked
        .valid
        .iter()
        .map(|r| {
            (
                r.parameter.clone(),
                r.wire_code.clone().unwrap_or_default(),
                (r.value * 1000.0).round() / 1000.0,
                r.unit.clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Rejections as (code as sent, reason), sorted.
fn rejections(checked: &quantrac_processor::pipeline::Checked) -> Vec<(String, String)> {
    let mut r: Vec<_> = checked
        .rejected
        .iter()
        .map(|r| (r.parameter.clone(), r.reason.clone()))
        .collect();
    r.sort();
    r
}

/// The 2005-edition packet: B01 (wastewater flow) comes in the code
/// table's L/s and is stored in m³/h (36.91 × 3.6 = 132.876); 011 is COD
/// and 060 ammonia, both mg/L as sent. Each keeps its code as sent.
#[test]
fn the_2005_packet_is_stored_in_the_registrys_units() {
    let checked = checked("2005-codes-17-digit-time.txt", REGISTRY);
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    assert_eq!(
        rows(&checked),
        vec![
            ("COD".into(), "011".into(), 231.0, "mg/L".into()),
            ("Flow".into(), "B01".into(), 132.876, "m3/h".into()),
            ("NH4".into(), "060".into(), 1.803, "mg/L".into()),
        ]
    );
}

/// The 2017-edition surface-water packet is a test client's random values:
/// pH 15.294 cannot be (pH is 0-14) and is refused as impossible, not
/// stored; temperature, ammonia and total phosphorus are stored under
/// QCVN's codes; the four codes the registry does not name are refused
/// as unknown parameters. Rejections name the code as sent.
#[test]
fn the_surface_water_packet_keeps_what_can_be_and_says_why_not() {
    let checked = checked("2017-codes-surface-water.txt", &river_section("DM000001"));
    assert_eq!(
        rows(&checked),
        vec![
            ("NH4".into(), "w21003".into(), 78.741, "mg/L".into()),
            ("TP".into(), "w21011".into(), 92.488, "mg/L".into()),
            ("Temp".into(), "w01010".into(), 21.639, "°C".into()),
        ]
    );
    assert_eq!(
        rejections(&checked),
        vec![
            ("w01001".into(), "out_of_range".into()),
            ("w01003".into(), "unknown_parameter".into()),
            ("w01006".into(), "unknown_parameter".into()),
            ("w01014".into(), "unknown_parameter".into()),
            ("w01019".into(), "unknown_parameter".into()),
        ]
    );
}

/// The hourly record (CN 2061) is stored as the logger's own hourly
/// aggregates from DataTime (09:00 local, 02:00 UTC), never as real-time
/// readings: the hour's average, minimum and maximum, the cumulative
/// amount as sent. Its water temperature average (4,986 °C, the test
/// client's random numbers) is past the instrument's range and kept as
/// above range, not dropped.
#[test]
fn the_hourly_record_is_stored_as_the_loggers_hourly_aggregates() {
    let checked = checked("2061-hourly-record.txt", &river_section("chang000003"));
    assert!(checked.valid.is_empty(), "{:?}", checked.valid);
    let mut reported: Vec<_> = checked
        .reported
        .iter()
        .map(|r| {
            (
                r.parameter.clone(),
                r.kind,
                r.period_start.to_rfc3339(),
                r.period_seconds,
                r.avg,
                r.min,
                r.max,
                r.total,
                r.qc_flag.as_str(),
            )
        })
        .collect();
    reported.sort_by(|a, b| a.0.cmp(&b.0));
    let at = "2020-01-09T02:00:00+00:00".to_string();
    assert_eq!(
        reported,
        vec![
            (
                "NH4".into(),
                "hour",
                at.clone(),
                3600,
                1.544,
                Some(0.019),
                Some(3.0),
                Some(1045.241),
                "valid"
            ),
            (
                "TP".into(),
                "hour",
                at.clone(),
                3600,
                0.507,
                Some(0.0),
                Some(0.997),
                Some(343.524),
                "valid"
            ),
            (
                "Temp".into(),
                "hour",
                at.clone(),
                3600,
                4986.002,
                Some(22.339),
                Some(9998.616),
                Some(3375523.127),
                "above_range"
            ),
            (
                "pH".into(),
                "hour",
                at,
                3600,
                8.437,
                Some(1.014),
                Some(15.996),
                Some(5711.829),
                "valid"
            ),
        ]
    );
    assert_eq!(
        rejections(&checked),
        vec![
            ("w01003".into(), "unknown_parameter".into()),
            ("w01006".into(), "unknown_parameter".into()),
            ("w01014".into(), "unknown_parameter".into()),
            ("w01019".into(), "unknown_parameter".into()),
        ]
    );
}

/// The Windows logger's stack station (`proto/tests/fixtures/circular10`).
const STACK: &str = r#"
[[stations]]
id = "ST02"
name = "Boiler stack"
facility = "Xi măng Cam Ranh"
industrial_zone = "Zone"
province = "Khánh Hòa"
latitude = 12.0
longitude = 109.1
kind = "stack"
parameters = [
  { code = "Flow",  unit = "m3/h",   range_min = 0, range_max = 200000 },
  { code = "Temp",  unit = "°C",     range_min = 0, range_max = 400 },
  { code = "O2",    unit = "%",      range_min = 0, range_max = 25 },
  { code = "PM2,5", unit = "mg/Nm3", range_min = 0, range_max = 1000 },
  { code = "SO2",   unit = "mg/Nm3", range_min = 0, range_max = 2000 },
  { code = "NO",    unit = "mg/Nm3", range_min = 0, range_max = 2000 },
  { code = "NO2",   unit = "mg/Nm3", range_min = 0, range_max = 2000 },
  { code = "NOx",   unit = "mg/Nm3", range_min = 0, range_max = 4000 },
  { code = "CO",    unit = "mg/Nm3", range_min = 0, range_max = 5000 },
]
"#;

/// A stack's Circular 10 file written by a Windows logger
/// (`proto/tests/fixtures/circular10`), from an FTP upload: every value
/// stored in its canonical unit with its status (SO2 calibrating, CO in
/// error: stored, flagged, never judged), `PM2,5` under its own code, and
/// NOx computed as NO2 from the NO and NO2 the station sent, with the
/// molar masses of the unit table: 180 × 46.0055/30.006 + 12 = 287.978
/// mg/Nm3 (288 with the rounded 46/30).
#[test]
fn the_windows_loggers_stack_file_is_stored_with_nox_as_no2() {
    use quantrac_proto::wire::circular10;
    let name = "KH_NMXMCR_ST02_20250301080500.txt";
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../proto/tests/fixtures/circular10")
            .join(name),
    )
    .expect("fixture");
    let file = circular10::parse_file_name(name).expect("name");
    let sample = circular10::decode_record(&bytes, &file.station, local_offset())
        .expect("decodes")
        .remove(0);
    let checked = check_sample(sample, SourceProtocol::FtpCircular10, STACK);
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    let mut got: Vec<_> = checked
        .valid
        .iter()
        .map(|r| {
            (
                r.parameter.clone(),
                (r.value * 1000.0).round() / 1000.0,
                r.unit.clone(),
                r.status.as_str(),
                r.qc_flag.as_str(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("CO".into(), 95.0, "mg/Nm3".into(), "error", "device_error"),
            ("Flow".into(), 43210.5, "m3/h".into(), "measuring", "valid"),
            ("NO".into(), 180.0, "mg/Nm3".into(), "measuring", "valid"),
            ("NO2".into(), 12.0, "mg/Nm3".into(), "measuring", "valid"),
            ("NOx".into(), 287.978, "mg/Nm3".into(), "measuring", "valid"),
            ("O2".into(), 9.8, "%".into(), "measuring", "valid"),
            ("PM2,5".into(), 12.4, "mg/Nm3".into(), "measuring", "valid"),
            (
                "SO2".into(),
                312.0,
                "mg/Nm3".into(),
                "calibrating",
                "calibrating"
            ),
            ("Temp".into(), 142.3, "°C".into(), "measuring", "valid"),
        ]
    );
}
