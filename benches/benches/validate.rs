//! Validation throughput on one core, in readings per second: a batch of
//! 1,000 readings against the sample registry (`deploy/registry.toml`), as
//! the processor checks them between Kafka and the database.
//!
//! The mix is what the simulated fleet sends: every station and parameter
//! in turn, Circular 10 and HJ 212 codes, mostly canonical units (the fast
//! path) with some that need converting (`mg/l`, ppm, L/s), a few values
//! taken while calibrating and a few rejections.

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quantrac_processor::validate::{ValidationConfig, validate};
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::registry::Registry;
use quantrac_proto::v1;

const BATCH: usize = 1_000;

/// The batch: reading `i` is parameter `i` of the registry's
/// (station, parameter) list, cycled.
fn readings(registry: &Registry, now: DateTime<Utc>) -> Vec<v1::Reading> {
    let slots: Vec<_> = registry
        .stations()
        .flat_map(|s| s.parameters.iter().map(move |p| (s, p)))
        .collect();
    assert!(!slots.is_empty(), "sample registry has no parameters");
    (0..BATCH)
        .map(|i| {
            let (station, spec) = slots[i % slots.len()];
            let typical = spec.range_min + (spec.range_max - spec.range_min) / 4.0;
            // HJ 212 sends its own codes and no unit.
            let hj212 = i % 3 == 0;
            let (parameter, unit, value) = match i % 10 {
                _ if hj212 => (
                    spec.aliases.first().unwrap_or(&spec.code).clone(),
                    String::new(),
                    typical,
                ),
                1 if spec.unit == "mg/L" => (spec.code.clone(), "mg/l".to_owned(), typical),
                2 if spec.unit == "m3/h" => (spec.code.clone(), "L/s".to_owned(), typical / 3.6),
                4 if spec.code == "SO2" => (spec.code.clone(), "ppm".to_owned(), 100.0),
                // An unknown code: rejected.
                7 if i % 100 == 7 => ("XYZ".to_owned(), spec.unit.clone(), typical),
                _ => (spec.code.clone(), spec.unit.clone(), typical),
            };
            let status = if i % 50 == 0 {
                v1::DeviceStatus::Calibrating
            } else {
                v1::DeviceStatus::Measuring
            };
            v1::Reading {
                station_id: station.id.clone(),
                parameter,
                value,
                unit,
                measured_at: Some(to_timestamp(now - TimeDelta::minutes(5))),
                status: status as i32,
                device_flag: if hj212 { "N" } else { "00" }.to_owned(),
                source: if hj212 {
                    v1::SourceProtocol::TcpHj212
                } else {
                    v1::SourceProtocol::MqttJson
                } as i32,
                received_at: Some(to_timestamp(now)),
                ingest_id: format!("0194b0c8-0000-7000-8000-{i:012}"),
                ..Default::default()
            }
        })
        .collect()
}

fn bench_validate(c: &mut Criterion) {
    let registry = Registry::from_toml(include_str!("../../deploy/registry.toml"))
        .expect("sample registry loads");
    let now = Utc
        .with_ymd_and_hms(2025, 1, 15, 3, 40, 0)
        .single()
        .expect("valid time");
    let cfg = ValidationConfig::default();
    let batch = readings(&registry, now);
    let accepted = batch
        .iter()
        .filter(|r| validate(r, &registry, now, &cfg).is_ok())
        .count();
    assert!(
        accepted > BATCH * 9 / 10,
        "only {accepted} of {BATCH} accepted"
    );

    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_1000", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for r in black_box(&batch) {
                if let Ok(n) = validate(r, &registry, now, &cfg) {
                    ok += 1;
                    black_box(n);
                }
            }
            ok
        });
    });
    group.finish();
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
