//! Decoder throughput on one core, in readings per second: one typical
//! 6-value wastewater sample (pH, temperature, TSS, COD, NH4, flow) in each
//! station format. HJ 212 includes the CRC check and the CP parse into a
//! `Sample`, i.e. everything ingest does per packet before Kafka.

use std::hint::black_box;

use chrono::{FixedOffset, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::wire::{circular10, hj212, json};
use quantrac_proto::{Sample, SampleValue};

/// The domain reference's example record, with `code` choosing the
/// parameter naming (Circular 10 or HJ 212).
fn wastewater_sample(code: fn(&'static str, &'static str) -> &'static str) -> Sample {
    let rows = [
        ("pH", "w01001", 7.12, "pH", DeviceStatus::Measuring),
        ("Temp", "w01010", 29.4, "°C", DeviceStatus::Measuring),
        ("TSS", "w01012", 18.6, "mg/L", DeviceStatus::Measuring),
        ("COD", "w01018", 42.0, "mg/L", DeviceStatus::Calibrating),
        ("NH4", "w21003", 1.35, "mg/L", DeviceStatus::Measuring),
        ("Flow", "w00000", 52.8, "m3/h", DeviceStatus::Measuring),
    ];
    Sample {
        station_id: "PY-HH-WW01".to_owned(),
        measured_at: Utc
            .with_ymd_and_hms(2025, 1, 15, 3, 35, 0)
            .single()
            .expect("valid time"),
        values: rows
            .into_iter()
            .map(|(c10, hj, value, unit, status)| SampleValue {
                parameter: code(c10, hj).to_owned(),
                value,
                unit: unit.to_owned(),
                status,
                device_flag: status.circular10_code().to_owned(),
                report: None,
                converted: None,
            })
            .collect(),
    }
}

fn decode(c: &mut Criterion) {
    let vn = FixedOffset::east_opt(7 * 3600).expect("valid offset");
    let sample = wastewater_sample(|c10, _| c10);
    let readings = sample.values.len() as u64;

    let json_payload = json::encode(&sample);
    let c10_record = circular10::encode_record(&sample, vn);
    let hj212_frame = {
        let hj = wastewater_sample(|_, hj| hj);
        hj212::encode(&hj212::Packet::from_sample(
            &hj,
            "2011",
            "32",
            "123456",
            5,
            hj.measured_at,
            vn,
        ))
    };

    // Benchmark the success path, not an early rejection.
    assert!(json::decode(&json_payload, Some("PY-HH-WW01")).is_ok());
    assert!(
        hj212::decode(&hj212_frame)
            .and_then(|p| p.sample(vn))
            .is_ok()
    );
    assert!(circular10::decode_record(&c10_record, "PY-HH-WW01", vn).is_ok());

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(readings));
    group.bench_function("json", |b| {
        b.iter(|| json::decode(black_box(&json_payload), Some("PY-HH-WW01")))
    });
    group.bench_function("hj212", |b| {
        b.iter(|| hj212::decode(black_box(&hj212_frame)).and_then(|p| p.sample(vn)))
    });
    group.bench_function("circular10", |b| {
        b.iter(|| circular10::decode_record(black_box(&c10_record), "PY-HH-WW01", vn))
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
