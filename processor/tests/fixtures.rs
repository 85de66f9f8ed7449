//! The real packets of `proto/tests/fixtures/hj212` as the processor stores
//! them, for a registry that names each station's parameters in QCVN's
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

/// The 2005-edition packet: B01 (wastewater flow) comes in the code
/// table's L/s and is stored in m³/h (36.91 × 3.6 = 132.876); 011 is COD
/// and 060 ammonia, both mg/L as sent. Each keeps its code as sent.
#[test]
fn the_2005_packet_is_stored_in_the_registrys_units() {
    let registry = Registry::from_toml(REGISTRY).expect("registry");
    let packet = hj212::decode(format!("{}\r\n", frame("2005-codes-17-digit-time.txt")).as_bytes())
        .expect("decodes");
    let sample = packet.sample(local_offset()).expect("a sample");
    let measured = sample.measured_at;
    let batch = sample.into_batch(
        SourceProtocol::TcpHj212,
        measured + chrono::Duration::seconds(30),
        "test",
    );
    let record = InRecord {
        topic: Arc::from("readings.raw"),
        partition: 0,
        offset: 0,
        payload: Bytes::from(batch.encode_to_vec()),
    };
    let checked = check(
        &[record],
        &registry,
        &ValidationConfig::default(),
        measured + chrono::Duration::minutes(1),
    );
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    let mut rows: Vec<(String, String, f64, String)> = checked
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
    assert_eq!(
        rows,
        vec![
            ("COD".into(), "011".into(), 231.0, "mg/L".into()),
            ("Flow".into(), "B01".into(), 132.876, "m3/h".into()),
            ("NH4".into(), "060".into(), 1.803, "mg/L".into()),
        ]
    );
}
