//! The pure middle of the processor: Kafka records in, validated readings
//! and rejections out, and the records to publish once they are stored.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message;
use quantrac_proto::domain::{from_timestamp, to_timestamp};
use quantrac_proto::v1::{ReadingBatch, RejectedReading, StationNotice, StoredReadingBatch};

use crate::validate::{Normalised, Validated, ValidationConfig, validate_any};
use quantrac_db::ReportedRow;
use quantrac_proto::qc::{QcFlag, RejectReason};
use quantrac_proto::registry::Registry;

/// A record read from the bus (Kafka or the in-process bus).
#[derive(Debug, Clone)]
pub struct InRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub payload: Bytes,
}

/// A batch after validation.
#[derive(Debug, Default)]
pub struct Checked {
    pub valid: Vec<Normalised>,
    /// Loggers' own minute / hourly / daily records: stored, not judged.
    pub reported: Vec<ReportedRow>,
    pub rejected: Vec<RejectedReading>,
    /// What stations said about themselves (HJ 212 notices).
    pub events: Vec<quantrac_db::events::EventRow>,
    /// Files stations uploaded, unchanged (evidence).
    pub files: Vec<quantrac_db::events::FileRow>,
    /// Digests of the frames the readings came in (evidence).
    pub frames: Vec<quantrac_db::events::FrameRow>,
}

impl Checked {
    pub fn readings(&self) -> usize {
        self.valid.len() + self.reported.len() + self.rejected.len()
    }
}

fn rejection(
    record: &InRecord,
    raw: Vec<u8>,
    key: String,
    reason: &str,
    detail: String,
    now: DateTime<Utc>,
) -> RejectedReading {
    RejectedReading {
        raw,
        reason: reason.to_owned(),
        detail,
        station_id: String::new(),
        parameter: String::new(),
        measured_at: None,
        source_topic: record.topic.to_string(),
        source_partition: record.partition,
        source_offset: record.offset,
        rejected_at: Some(to_timestamp(now)),
        key,
    }
}

/// PostgreSQL refuses NUL in text; the wire decoders refuse it, but the
/// topic may hold records from other producers, and one such record must
/// not stop the processor.
pub(crate) fn no_nul(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

/// Decodes and validates the readings of `records`, in order.
pub fn check(
    records: &[InRecord],
    registry: &Registry,
    cfg: &ValidationConfig,
    now: DateTime<Utc>,
) -> Checked {
    let mut out = Checked::default();
    for record in records {
        let coords = format!("{}/{}/{}", record.topic, record.partition, record.offset);
        // An empty payload decodes as an empty batch; a batch without
        // readings would otherwise vanish without a trace or a count.
        let decoded = match ReadingBatch::decode(&record.payload[..]) {
            Ok(b) if b.readings.is_empty() && b.notices.is_empty() => {
                Err("no readings in the record".to_owned())
            }
            Ok(b) => Ok(b),
            Err(e) => Err(e.to_string()),
        };
        let batch = match decoded {
            Ok(b) => b,
            Err(e) => {
                let r = rejection(
                    record,
                    record.payload.to_vec(),
                    coords,
                    RejectReason::Undecodable.as_str(),
                    e,
                    now,
                );
                out.rejected.push(r);
                continue;
            }
        };
        if let Some(file) = &batch.file
            && let Some(known) = registry.station(&batch.station_id)
        {
            out.files.push(quantrac_db::events::FileRow {
                station_id: known.id.clone(),
                name: file.name.replace('\0', ""),
                content: file.content.clone(),
                received_at: file
                    .received_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or(now),
                source: file.source,
            });
        }
        // Keyed like its readings: the station and their reception time.
        if let Some(frame) = &batch.frame
            && let Some(known) = registry.station(&batch.station_id)
            && let Some(received_at) = batch
                .readings
                .first()
                .and_then(|r| r.received_at.as_ref())
                .and_then(from_timestamp)
        {
            let mut origin = frame.origin.clone();
            no_nul(&mut origin);
            out.frames.push(quantrac_db::events::FrameRow {
                station_id: known.id.clone(),
                received_at,
                sha256: frame.sha256.clone(),
                size: frame.size,
                origin,
                source: batch.readings.first().map_or(0, |r| r.source),
            });
        }
        for (i, notice) in batch.notices.iter().enumerate() {
            match event(&batch.station_id, notice, registry, now) {
                Ok(e) => out.events.push(e),
                Err(detail) => {
                    let mut r = rejection(
                        record,
                        notice.encode_to_vec(),
                        format!("{coords}/notice/{i}"),
                        RejectReason::UnknownStation.as_str(),
                        detail,
                        now,
                    );
                    r.station_id.clone_from(&batch.station_id);
                    out.rejected.push(r);
                }
            }
        }
        let first_valid = out.valid.len();
        for (i, original) in batch.readings.iter().enumerate() {
            let cleaned;
            let reading = if [
                &original.station_id,
                &original.parameter,
                &original.unit,
                &original.device_flag,
                &original.ingest_id,
            ]
            .iter()
            .any(|s| s.contains('\0'))
            {
                let mut r = original.clone();
                for s in [
                    &mut r.station_id,
                    &mut r.parameter,
                    &mut r.unit,
                    &mut r.device_flag,
                    &mut r.ingest_id,
                ] {
                    no_nul(s);
                }
                cleaned = r;
                &cleaned
            } else {
                original
            };
            match validate_any(reading, registry, now, cfg) {
                Ok(Validated::Reading(n)) => {
                    if is_late(&n) {
                        metrics::counter!("processor_late_readings_total", "station" => n.station_id.clone())
                            .increment(1);
                    }
                    out.valid.push(n);
                }
                Ok(Validated::Reported(r)) => out.reported.push(r),
                Err(e) => {
                    // The ingest id is unique per reading; fall back to the
                    // record's coordinates so a replay finds the same key.
                    let key = if reading.ingest_id.is_empty() {
                        format!("{coords}/{i}")
                    } else {
                        reading.ingest_id.clone()
                    };
                    // The raw bytes are the reading as received.
                    let mut r = rejection(
                        record,
                        original.encode_to_vec(),
                        key,
                        e.reason.as_str(),
                        e.detail,
                        now,
                    );
                    r.station_id.clone_from(&reading.station_id);
                    r.parameter.clone_from(&reading.parameter);
                    r.measured_at = reading.measured_at;
                    out.rejected.push(r);
                }
            }
        }
        for derived in derived_nox(&out.valid[first_valid..], registry) {
            // Validated as any reading (range, status); what it cannot be is
            // counted, not stored: its parts are.
            match validate_any(&derived, registry, now, cfg) {
                Ok(Validated::Reading(mut n)) => {
                    n.wire_code = Some("NO+NO2".into());
                    metrics::counter!("processor_derived_total", "parameter" => "NOx").increment(1);
                    out.valid.push(n);
                }
                Ok(Validated::Reported(_)) => {}
                Err(e) => {
                    metrics::counter!("processor_derived_refused_total", "parameter" => "NOx", "reason" => e.reason.as_str()).increment(1);
                }
            }
        }
        correct_to_reference_o2(&mut out.valid[first_valid..], registry);
    }
    out
}

/// Received more than 5 minutes after its measurement: a back-filled
/// reading (loggers keep 60 days and send them after an outage). Kept and
/// judged like any other; counted per station, and marked `late` by the
/// query service.
fn is_late(n: &Normalised) -> bool {
    n.received_at
        .is_some_and(|r| r - n.measured_at > chrono::Duration::minutes(5))
}

/// Concentrations a permit judges at a reference O₂ get, as their converted
/// value, the value corrected with the station's O₂ of the same time in
/// the same record (`registry::o2_corrected`), unless the station sent its
/// own (HJ 212 `-ZsRtd`). Without a usable O₂ they keep none, and alerting
/// says the value it judged was not corrected. The permit is the one in
/// force on the UTC date of the measurement.
fn correct_to_reference_o2(rows: &mut [Normalised], registry: &Registry) {
    let o2_at: HashMap<(String, DateTime<Utc>), f64> = rows
        .iter()
        .filter(|r| r.parameter == "O2" && r.qc_flag == QcFlag::Valid)
        .map(|r| ((r.station_id.clone(), r.measured_at), r.value))
        .collect();
    if o2_at.is_empty() {
        return;
    }
    for r in rows
        .iter_mut()
        .filter(|r| r.converted.is_none() && r.parameter != "O2")
    {
        let Some(&o2) = o2_at.get(&(r.station_id.clone(), r.measured_at)) else {
            continue;
        };
        let Some(reference) = registry
            .station(&r.station_id)
            .and_then(|s| s.limit_at(&r.parameter, r.measured_at.date_naive()))
            .and_then(|l| l.reference_o2)
        else {
            continue;
        };
        r.converted = quantrac_proto::registry::o2_corrected(r.value, o2, reference);
        if r.converted.is_some() {
            metrics::counter!("processor_o2_corrected_total").increment(1);
        }
    }
}

/// NOx as NO2 of a stack that measures NO and NO2 separately (QCVN 19
/// limits NOx as NO2): for each time of a batch holding both, `NO × M(NO2)
/// / M(NO) + NO2`, when the station registers NOx and did not send it
/// itself. Both parts must be in NOx's unit; a part not valid lends the
/// result its status and flag (a saturated part makes a lower bound).
/// Parts that arrive in different records are not combined.
fn derived_nox(rows: &[Normalised], registry: &Registry) -> Vec<quantrac_proto::v1::Reading> {
    let mut out = Vec::new();
    let (Some(m_no), Some(m_no2)) = (
        quantrac_proto::units::molar_mass("NO"),
        quantrac_proto::units::molar_mass("NO2"),
    ) else {
        return out;
    };
    for no in rows.iter().filter(|r| r.parameter == "NO") {
        let at = |p: &str| {
            rows.iter().find(|r| {
                r.parameter == p && r.measured_at == no.measured_at && r.station_id == no.station_id
            })
        };
        let (Some(no2), None) = (at("NO2"), at("NOx")) else {
            continue;
        };
        let Some(spec) = registry
            .station(&no.station_id)
            .and_then(|s| s.parameter("NOx"))
        else {
            continue;
        };
        if no.unit != spec.unit || no2.unit != spec.unit {
            continue;
        }
        let nox = |a: f64, b: f64| a * m_no2 / m_no + b;
        let worse = if no.qc_flag != QcFlag::Valid { no } else { no2 };
        out.push(quantrac_proto::v1::Reading {
            station_id: no.station_id.clone(),
            parameter: "NOx".into(),
            value: nox(no.value, no2.value),
            unit: spec.unit.clone(),
            measured_at: Some(to_timestamp(no.measured_at)),
            status: quantrac_proto::v1::DeviceStatus::from(worse.status) as i32,
            device_flag: worse.device_flag.clone(),
            source: no.source,
            received_at: no.received_at.max(no2.received_at).map(to_timestamp),
            ingest_id: no.ingest_id.clone(),
            converted: no.converted.zip(no2.converted).map(|(a, b)| nox(a, b)),
            ..Default::default()
        });
    }
    out
}

/// A notice of a registered station as a station event, at the station's
/// time when it gave one, else at its reception.
fn event(
    station: &str,
    n: &StationNotice,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<quantrac_db::events::EventRow, String> {
    let known = registry
        .station(station)
        .ok_or_else(|| format!("station {station:?} is not in the registry"))?;
    let received_at = n.received_at.as_ref().and_then(from_timestamp);
    let own = n.at.as_ref().and_then(from_timestamp);
    Ok(quantrac_db::events::EventRow {
        station_id: known.id.clone(),
        kind: n.kind.replace('\0', ""),
        code: n.code.replace('\0', ""),
        at: own.or(received_at).unwrap_or(now),
        station_time: own.is_some(),
        detail: n.detail.replace('\0', ""),
        source: n.source,
        received_at,
    })
}

/// The `readings.valid` records: one `StoredReadingBatch` per station,
/// keyed by station, in the batch's order.
pub fn valid_records(valid: &[Normalised]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, StoredReadingBatch)> = Vec::new();
    // Station -> its place in `out`: a batch holds hundreds of stations.
    let mut place: HashMap<&str, usize> = HashMap::new();
    for n in valid {
        let reading = n.to_stored();
        match place.get(n.station_id.as_str()) {
            Some(&i) => out[i].1.readings.push(reading),
            None => {
                place.insert(&n.station_id, out.len());
                out.push((
                    n.station_id.clone(),
                    StoredReadingBatch {
                        station_id: n.station_id.clone(),
                        readings: vec![reading],
                        ..Default::default()
                    },
                ));
            }
        }
    }
    out.into_iter()
        .map(|(k, b)| (k, b.encode_to_vec()))
        .collect()
}

/// The `readings.rejected` records, keyed by station (or the key when the
/// station is unknown).
pub fn rejected_records(rejected: &[RejectedReading]) -> Vec<(String, Vec<u8>)> {
    rejected
        .iter()
        .map(|r| {
            let key = if r.station_id.is_empty() {
                r.key.clone()
            } else {
                r.station_id.clone()
            };
            (key, r.encode_to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &'static [u8]) -> InRecord {
        InRecord {
            topic: Arc::from("readings.raw"),
            partition: 2,
            offset: 41,
            payload: Bytes::from_static(payload),
        }
    }

    /// A record holding `batch`, as ingest writes it.
    fn batch_record(batch: &ReadingBatch) -> InRecord {
        InRecord {
            payload: Bytes::from(batch.encode_to_vec()),
            ..record(b"")
        }
    }

    /// Records that carry no reading are counted and kept as undecodable,
    /// keyed by where they were read, instead of disappearing.
    #[test]
    fn a_record_without_readings_is_rejected_not_dropped() {
        let registry = Registry::new(Vec::new()).expect("empty registry");
        let empty_batch = ReadingBatch {
            station_id: "S".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let leaked: &'static [u8] = Box::leak(empty_batch.into_boxed_slice());
        for payload in [&b""[..], leaked, &b"\xff\xff"[..]] {
            let checked = check(
                &[record(payload)],
                &registry,
                &ValidationConfig::default(),
                Utc::now(),
            );
            assert!(checked.valid.is_empty());
            assert_eq!(checked.rejected.len(), 1, "{payload:?}");
            let r = &checked.rejected[0];
            assert_eq!(r.reason, RejectReason::Undecodable.as_str());
            assert_eq!(r.key, "readings.raw/2/41");
            assert_eq!(r.raw, payload);
        }
    }

    /// A record holding only a station's notice is an event of the
    /// registered station (its id, not the alias it was sent under), at the
    /// station's time or, without one, at its reception; a notice of an
    /// unknown station is kept as rejected.
    #[test]
    fn notices_become_station_events() {
        let registry = Registry::from_toml(
            r#"
[[stations]]
id = "S-1"
aliases = ["OLD-1"]
name = "S"
facility = "F"
industrial_zone = "Z"
province = "P"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [{ code = "COD", unit = "mg/L", range_min = 0, range_max = 1000 }]
"#,
        )
        .expect("registry");
        let at = Utc::now() - chrono::Duration::minutes(3);
        let received = Utc::now();
        let notice = |own: Option<DateTime<Utc>>| StationNotice {
            kind: "restart".into(),
            code: "2081".into(),
            at: own.map(to_timestamp),
            detail: "RestartTime=...".into(),
            received_at: Some(to_timestamp(received)),
            source: 3,
        };
        let batch = |station: &str, notices| {
            batch_record(&ReadingBatch {
                station_id: station.into(),
                notices,
                ..Default::default()
            })
        };
        let checked = check(
            &[
                batch("OLD-1", vec![notice(Some(at)), notice(None)]),
                batch("NOBODY", vec![notice(Some(at))]),
            ],
            &registry,
            &ValidationConfig::default(),
            Utc::now(),
        );
        let seen: Vec<_> = checked
            .events
            .iter()
            .map(|e| (e.station_id.as_str(), e.at, e.station_time))
            .collect();
        let whole = |t: DateTime<Utc>| from_timestamp(&to_timestamp(t)).expect("timestamp");
        assert_eq!(
            seen,
            vec![("S-1", whole(at), true), ("S-1", whole(received), false)]
        );
        assert_eq!(checked.rejected.len(), 1);
        let r = &checked.rejected[0];
        assert_eq!(
            (r.reason.as_str(), r.station_id.as_str(), r.key.as_str()),
            (
                RejectReason::UnknownStation.as_str(),
                "NOBODY",
                "readings.raw/2/41/notice/0"
            )
        );
    }

    /// A stack sending NO and NO2 gets NOx (as NO2) = NO × 46/30 + NO2 when
    /// it registers NOx and did not send it; a calibrating part makes a
    /// calibrating NOx; a station without NOx, or one that sent NOx, gets
    /// nothing derived.
    #[test]
    fn nox_is_derived_from_no_and_no2() {
        let station = |id: &str, nox: bool| {
            let nox = if nox {
                r#"  { code = "NOx", unit = "mg/Nm3", range_min = 0, range_max = 2000 },"#
            } else {
                ""
            };
            format!(
                r#"
[[stations]]
id = "{id}"
name = "S"
facility = "F"
industrial_zone = "Z"
province = "P"
latitude = 13.0
longitude = 109.3
kind = "stack"
parameters = [
  {{ code = "NO", unit = "mg/Nm3", range_min = 0, range_max = 2000 }},
  {{ code = "NO2", unit = "mg/Nm3", range_min = 0, range_max = 2000 }},
{nox}
]
"#
            )
        };
        let registry = Registry::from_toml(&(station("ST-1", true) + &station("ST-2", false)))
            .expect("registry");
        let at = Utc::now() - chrono::Duration::minutes(5);
        let reading = |station: &str, p: &str, v: f64, status| quantrac_proto::v1::Reading {
            station_id: station.into(),
            parameter: p.into(),
            value: v,
            unit: "mg/Nm3".into(),
            measured_at: Some(to_timestamp(at)),
            status,
            device_flag: "00".into(),
            source: 3,
            ingest_id: "0190a3f0-0000-7000-8000-000000000001".into(),
            ..Default::default()
        };
        let measuring = quantrac_proto::v1::DeviceStatus::Measuring as i32;
        let calibrating = quantrac_proto::v1::DeviceStatus::Calibrating as i32;
        let batch = |readings: Vec<quantrac_proto::v1::Reading>| {
            batch_record(&ReadingBatch {
                station_id: readings[0].station_id.clone(),
                readings,
                ..Default::default()
            })
        };
        let checked = check(
            &[
                batch(vec![
                    reading("ST-1", "NO", 100.0, measuring),
                    reading("ST-1", "NO2", 20.0, measuring),
                ]),
                batch(vec![
                    reading("ST-1", "NO", 90.0, calibrating),
                    reading("ST-1", "NO2", 10.0, measuring),
                ]),
                batch(vec![
                    reading("ST-1", "NO", 100.0, measuring),
                    reading("ST-1", "NO2", 20.0, measuring),
                    reading("ST-1", "NOx", 170.0, measuring),
                ]),
                batch(vec![
                    reading("ST-2", "NO", 100.0, measuring),
                    reading("ST-2", "NO2", 20.0, measuring),
                ]),
            ],
            &registry,
            &ValidationConfig::default(),
            Utc::now(),
        );
        assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
        let nox: Vec<_> = checked
            .valid
            .iter()
            .filter(|r| r.parameter == "NOx")
            .map(|r| {
                (
                    r.station_id.as_str(),
                    r.value,
                    r.qc_flag,
                    r.wire_code.as_deref(),
                )
            })
            .collect();
        let (m_no, m_no2) = (30.006, 46.0055);
        assert_eq!(nox.len(), 3, "{nox:?}");
        assert_eq!(
            (nox[0].0, nox[0].2, nox[0].3),
            ("ST-1", QcFlag::Valid, Some("NO+NO2"))
        );
        assert!(
            (nox[0].1 - (100.0 * m_no2 / m_no + 20.0)).abs() < 1e-9,
            "{}",
            nox[0].1
        );
        assert_eq!(nox[1].2, QcFlag::Calibrating);
        assert!((nox[1].1 - (90.0 * m_no2 / m_no + 10.0)).abs() < 1e-9);
        // The station's own NOx, as sent.
        assert_eq!((nox[2].1, nox[2].3), (170.0, None));
    }

    /// A permit stated at 6 % O₂ gets each SO2 value corrected with the O₂
    /// of the same time (the NOx it derives too); the station's own
    /// converted value stands; without O₂ in the record, or near air, or
    /// under a permit naming no reference, nothing is corrected.
    #[test]
    fn concentrations_are_corrected_to_the_permits_reference_o2() {
        let station = |id: &str, reference: &str| {
            format!(
                r#"
[[stations]]
id = "{id}"
name = "S"
facility = "F"
industrial_zone = "Z"
province = "P"
latitude = 13.0
longitude = 109.3
kind = "stack"
parameters = [
  {{ code = "SO2", unit = "mg/Nm3", range_min = 0, range_max = 2000 }},
  {{ code = "O2", unit = "%", range_min = 0, range_max = 25 }},
]
[[stations.limits]]
parameter = "SO2"
max = 500
regulation = "QCVN 19:2009/BTNMT"
effective_from = 2020-01-01
{reference}
"#
            )
        };
        let registry =
            Registry::from_toml(&(station("ST-1", "reference_o2 = 6") + &station("ST-2", "")))
                .expect("registry");
        let at = Utc::now() - chrono::Duration::minutes(5);
        let reading =
            |station: &str, p: &str, v: f64, unit: &str, k: u32| quantrac_proto::v1::Reading {
                station_id: station.into(),
                parameter: p.into(),
                value: v,
                unit: unit.into(),
                measured_at: Some(to_timestamp(at + chrono::Duration::minutes(i64::from(k)))),
                status: quantrac_proto::v1::DeviceStatus::Measuring as i32,
                device_flag: "00".into(),
                source: 3,
                ingest_id: format!("0190a3f0-0000-7000-8000-00000000000{k}"),
                ..Default::default()
            };
        let batch = |readings: Vec<quantrac_proto::v1::Reading>| {
            batch_record(&ReadingBatch {
                station_id: readings[0].station_id.clone(),
                readings,
                ..Default::default()
            })
        };
        let own = quantrac_proto::v1::Reading {
            converted: Some(333.0),
            ..reading("ST-1", "SO2", 300.0, "mg/Nm3", 2)
        };
        let checked = check(
            &[
                batch(vec![
                    reading("ST-1", "SO2", 300.0, "mg/Nm3", 1),
                    reading("ST-1", "O2", 11.0, "%", 1),
                ]),
                batch(vec![own, reading("ST-1", "O2", 11.0, "%", 2)]),
                batch(vec![reading("ST-1", "SO2", 300.0, "mg/Nm3", 3)]),
                batch(vec![
                    reading("ST-1", "SO2", 300.0, "mg/Nm3", 4),
                    reading("ST-1", "O2", 20.5, "%", 4),
                ]),
                batch(vec![
                    reading("ST-2", "SO2", 300.0, "mg/Nm3", 5),
                    reading("ST-2", "O2", 11.0, "%", 5),
                ]),
            ],
            &registry,
            &ValidationConfig::default(),
            Utc::now(),
        );
        assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
        let so2: Vec<_> = checked
            .valid
            .iter()
            .filter(|r| r.parameter == "SO2")
            .map(|r| (r.station_id.as_str(), r.value, r.converted))
            .collect();
        // 300 × (21 − 6) / (21 − 11) = 450.
        assert_eq!(
            so2,
            vec![
                ("ST-1", 300.0, Some(450.0)),
                ("ST-1", 300.0, Some(333.0)),
                ("ST-1", 300.0, None),
                ("ST-1", 300.0, None),
                ("ST-2", 300.0, None),
            ]
        );
        // O₂ itself is never corrected.
        assert!(
            checked
                .valid
                .iter()
                .filter(|r| r.parameter == "O2")
                .all(|r| r.converted.is_none())
        );
    }
}
