//! Property tests of the three wire formats: encode then decode gives the
//! sample back, and no input makes a decoder panic or fail without a reason
//! of its own module.

// Helpers outside #[test] fns are not covered by allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use proptest::prelude::*;
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::wire::{WireError, circular10, hj212, json};
use quantrac_proto::{Sample, SampleValue};

const C10_CODES: &[&str] = &[
    "Flow", "Temp", "Color", "pH", "TSS", "COD", "NH4", "TP", "TN", "TOC", "Cl", "RH", "P", "NO",
    "NO2", "CO", "SO2", "O2", "H2S", "NH3", "VHg", "PM", "O3", "PM10", "PM2,5",
];
const HJ212_CODES: &[&str] = &[
    "w00000", "w01001", "w01010", "w01012", "w01018", "w21003", "w21001", "w21011", "a00000",
    "a01012", "a01013", "a19001", "a34013", "a21026", "a21002", "a21005",
];
const UNITS: &[&str] = &[
    "mg/L", "mg/Nm³", "mg/Nm3", "°C", "m3/h", "Pt/Co", "pH", "%", "kPa", "",
];
const DATA_CNS: &[&str] = &["2011", "2051", "2061", "2031"];

fn status() -> impl Strategy<Value = DeviceStatus> {
    prop_oneof![
        Just(DeviceStatus::Measuring),
        Just(DeviceStatus::Calibrating),
        Just(DeviceStatus::Error)
    ]
}

/// Finite values: typical readings, tiny and huge magnitudes, any sign.
fn value() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        4 => -1.0e4..1.0e6f64,
        1 => -1.0e-3..1.0e-3f64,
        1 => (0i64..100_000).prop_map(|n| n as f64),
        2 => POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
    ]
}

/// Whole seconds from 2000-01-01 to 2099-12-31 UTC.
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    let from = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let to = Utc
        .with_ymd_and_hms(2099, 12, 31, 23, 59, 59)
        .unwrap()
        .timestamp();
    (from..=to).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

fn offset() -> impl Strategy<Value = FixedOffset> {
    prop_oneof![
        3 => Just(FixedOffset::east_opt(7 * 3600).unwrap()),
        1 => (-12 * 4..=14 * 4).prop_map(|q| FixedOffset::east_opt(q * 900).unwrap()),
    ]
}

/// A sample of distinct parameters from `codes`; `flag` chooses each
/// value's device flag from its status.
fn sample(
    codes: &'static [&'static str],
    units: impl Strategy<Value = String>,
    flag: impl Strategy<Value = String>,
    flag_of_status: fn(DeviceStatus, String) -> String,
) -> impl Strategy<Value = Sample> {
    let value = (value(), units, status(), flag)
        .prop_map(move |(v, u, s, f)| (v, u, s, flag_of_status(s, f)));
    (
        "[A-Za-z0-9-]{1,20}",
        time(),
        Just(codes.to_vec()).prop_shuffle(),
        proptest::collection::vec(value, 1..=10),
    )
        .prop_map(|(station_id, measured_at, codes, values)| Sample {
            station_id,
            measured_at,
            values: codes
                .into_iter()
                .zip(values)
                .map(|(code, (value, unit, status, device_flag))| SampleValue {
                    parameter: code.to_owned(),
                    value,
                    unit,
                    status,
                    device_flag,
                    report: None,
                    converted: None,
                })
                .collect(),
        })
}

fn unit() -> impl Strategy<Value = String> {
    proptest::sample::select(UNITS).prop_map(str::to_owned)
}

fn json_sample() -> impl Strategy<Value = Sample> {
    let codes: &'static [&'static str] =
        Box::leak([C10_CODES, HJ212_CODES].concat().into_boxed_slice());
    sample(codes, unit(), "[A-Za-z0-9]{0,4}", |_, f| f)
}

fn circular10_sample() -> impl Strategy<Value = Sample> {
    sample(C10_CODES, unit(), Just(String::new()), |s, _| {
        s.circular10_code().to_owned()
    })
}

/// The HJ 212 flag letter that stands for each status.
fn hj212_letter(s: DeviceStatus) -> String {
    match s {
        DeviceStatus::Measuring => "N",
        DeviceStatus::Calibrating => "C",
        DeviceStatus::Error => "D",
    }
    .to_owned()
}

fn hj212_sample() -> impl Strategy<Value = Sample> {
    sample(
        HJ212_CODES,
        Just(String::new()),
        Just(String::new()),
        |s, _| hj212_letter(s),
    )
}

fn check_rejection(result: Result<impl Sized, WireError>, prefix: &str) {
    if let Err(e) = result {
        assert!(
            e.reason.starts_with(prefix),
            "reason {:?} lacks prefix {prefix}",
            e.reason
        );
        assert!(e.reason.len() > prefix.len());
    }
}

/// What every decoded sample must satisfy, whatever the input.
fn check_sample(s: &Sample) {
    assert!(!s.values.is_empty());
    assert!(s.values.iter().all(|v| v.value.is_finite()));
}

/// Applies one of a few byte-level mutations.
fn mutate(mut bytes: Vec<u8>, kind: u8, at: usize, byte: u8) -> Vec<u8> {
    let at = if bytes.is_empty() {
        0
    } else {
        at % bytes.len()
    };
    match kind % 5 {
        0 if !bytes.is_empty() => bytes[at] = byte,
        1 => bytes.insert(at, byte),
        2 if !bytes.is_empty() => {
            bytes.remove(at);
        }
        3 => bytes.truncate(at),
        _ => {
            let tail = bytes.split_off(at);
            bytes.extend_from_slice(&tail[..tail.len() / 2]);
            bytes.extend_from_slice(&tail);
        }
    }
    bytes
}

fn frame(data: &[u8]) -> Vec<u8> {
    let mut f = format!("##{:04}", data.len()).into_bytes();
    f.extend_from_slice(data);
    f.extend_from_slice(format!("{:04X}\r\n", hj212::crc16(data)).as_bytes());
    f
}

/// The data segment of a frame our encoder wrote.
fn data_segment(frame: &[u8]) -> &[u8] {
    &frame[6..frame.len() - 6]
}

proptest! {
    #[test]
    fn json_round_trip(s in json_sample()) {
        let bytes = json::encode(&s);
        prop_assert_eq!(&json::decode(&bytes, None).unwrap(), &s);
        prop_assert_eq!(&json::decode(&bytes, Some(&s.station_id)).unwrap(), &s);
    }

    #[test]
    fn json_round_trip_sub_second(s in json_sample(), nanos in 0u32..1_000_000_000) {
        let s = Sample { measured_at: s.measured_at + chrono::Duration::nanoseconds(nanos.into()), ..s };
        prop_assert_eq!(json::decode(&json::encode(&s), None).unwrap(), s);
    }

    #[test]
    fn circular10_round_trip(s in circular10_sample(), offset in offset()) {
        let text = circular10::encode_record(&s, offset);
        prop_assert_eq!(circular10::decode_record(&text, &s.station_id, offset).unwrap(), vec![s]);
    }

    #[test]
    fn circular10_file_name_round_trip(
        province in "[A-Za-z0-9]{1,8}", facility in "[A-Za-z0-9-]{1,12}", station in "[A-Za-z0-9_-]{1,20}", t in time(),
    ) {
        let t = t.naive_utc();
        let parsed = circular10::parse_file_name(&circular10::file_name(&province, &facility, &station, t)).unwrap();
        prop_assert_eq!(parsed, circular10::FileName { province, facility, station, time: t });
    }

    #[test]
    fn hj212_round_trip(
        s in hj212_sample(),
        cn in proptest::sample::select(DATA_CNS),
        flag in any::<u32>(),
        qn_time in time(),
        qn_ms in 0i64..1000,
        offset in offset(),
    ) {
        let qn_time = qn_time + chrono::Duration::milliseconds(qn_ms);
        let p = hj212::Packet::from_sample(&s, cn, "32", "123456", flag, qn_time, offset);
        prop_assert_eq!(p.qn.len(), 17);
        let frame = hj212::encode(&p);
        prop_assert!(frame.ends_with(b"\r\n"));
        let decoded = hj212::decode(&frame).unwrap();
        prop_assert_eq!(&decoded, &p);
        prop_assert_eq!(decoded.wants_reply(), flag & 1 == 1);
        // Minute, hourly and daily packets are the logger's aggregates.
        let mut expected = s.clone();
        if let Some(kind) = quantrac_proto::domain::RecordKind::from_hj212_cn(cn) {
            for v in &mut expected.values {
                v.report = Some(quantrac_proto::domain::Report { kind, min: None, max: None, total: None });
            }
        }
        prop_assert_eq!(decoded.sample(offset).unwrap(), expected);
        let reply = hj212::decode(&hj212::encode(&decoded.data_response())).unwrap();
        prop_assert_eq!((reply.qn.as_str(), reply.cn.as_str(), reply.mn.as_str()), (p.qn.as_str(), "9014", p.mn.as_str()));
    }

    #[test]
    fn hj212_packet_round_trip(
        qn in "[0-9]{0,20}", st in "[0-9]{0,3}", cn in "[0-9]{1,4}", pw in "[A-Za-z0-9]{0,8}",
        mn in "[A-Za-z0-9]{0,24}", flag in any::<u32>(), cp in "[A-Za-z0-9=;,.-]{0,300}",
    ) {
        let p = hj212::Packet { qn, st, cn, pw, mn, flag, cp };
        prop_assert_eq!(hj212::decode(&hj212::encode(&p)).unwrap(), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), station in "[A-Z0-9-]{0,8}") {
        check_rejection(json::decode(&bytes, None), "json.");
        check_rejection(json::decode(&bytes, Some(&station)), "json.");
        check_rejection(hj212::decode(&bytes).and_then(|p| p.sample(FixedOffset::east_opt(0).unwrap())), "hj212.");
        // Also with a correct frame around the bytes, to reach the field parser.
        check_rejection(hj212::decode(&frame(&bytes)).and_then(|p| p.sample(FixedOffset::east_opt(0).unwrap())), "hj212.");
        check_rejection(circular10::decode_record(&bytes, &station, FixedOffset::east_opt(0).unwrap()), "circular10.");
        check_rejection(circular10::parse_file_name(&String::from_utf8_lossy(&bytes)), "circular10.");
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[ -~\t\r\n°³,]{0,512}") {
        check_rejection(json::decode(text.as_bytes(), Some("S")), "json.");
        check_rejection(hj212::decode(&frame(text.as_bytes())).and_then(|p| p.sample(FixedOffset::east_opt(0).unwrap())), "hj212.");
        check_rejection(circular10::decode_record(text.as_bytes(), "S", FixedOffset::east_opt(0).unwrap()), "circular10.");
        check_rejection(circular10::parse_file_name(&text), "circular10.");
    }

    #[test]
    fn mutated_json_never_panics(s in json_sample(), muts in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4)) {
        let bytes = muts.into_iter().fold(json::encode(&s), |b, (k, at, byte)| mutate(b, k, at, byte));
        match json::decode(&bytes, None) {
            Ok(s) => check_sample(&s),
            Err(e) => prop_assert!(e.reason.starts_with("json."), "{}", e.reason),
        }
    }

    #[test]
    fn mutated_circular10_never_panics(s in circular10_sample(), muts in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4)) {
        let offset = FixedOffset::east_opt(7 * 3600).unwrap();
        let bytes = muts.into_iter().fold(circular10::encode_record(&s, offset), |b, (k, at, byte)| mutate(b, k, at, byte));
        match circular10::decode_record(&bytes, "S", offset) {
            Ok(samples) => samples.iter().for_each(check_sample),
            Err(e) => prop_assert!(e.reason.starts_with("circular10."), "{}", e.reason),
        }
    }

    #[test]
    fn mutated_hj212_never_panics(
        s in hj212_sample(),
        reframe in any::<bool>(),
        muts in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4),
    ) {
        let offset = FixedOffset::east_opt(7 * 3600).unwrap();
        let p = hj212::Packet::from_sample(&s, "2011", "32", "123456", 5, s.measured_at, offset);
        let valid = hj212::encode(&p);
        // Mutating the whole frame mostly trips the CRC; mutating the data
        // segment and framing it again reaches the field and CP parsers.
        let bytes = if reframe {
            frame(&muts.into_iter().fold(data_segment(&valid).to_vec(), |b, (k, at, byte)| mutate(b, k, at, byte)))
        } else {
            muts.into_iter().fold(valid, |b, (k, at, byte)| mutate(b, k, at, byte))
        };
        match hj212::decode(&bytes).and_then(|p| p.sample(offset)) {
            Ok(s) => check_sample(&s),
            Err(e) => prop_assert!(e.reason.starts_with("hj212."), "{}", e.reason),
        }
    }
}
