//! Pure functions from received bytes to samples, shared by the receivers
//! and tested without sockets.

use chrono::FixedOffset;
use quantrac_proto::Sample;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::{WireError, circular10, json};

/// Station id from an MQTT topic `stations/<station id>/readings`.
pub fn station_from_topic(topic: &str) -> Result<&str, WireError> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("stations"), Some(id), Some("readings"), None) if !id.is_empty() => Ok(id),
        _ => Err(WireError::new(
            "mqtt.bad_topic",
            format!("topic `{topic}` is not stations/<station id>/readings"),
        )),
    }
}

/// Strips a UTF-8 BOM and leading whitespace, to sniff the format.
fn content_start(payload: &[u8]) -> &[u8] {
    let p = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    let skip = p.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &p[skip..]
}

/// Decodes an MQTT payload: JSON when it starts with `{`, otherwise a
/// Circular 10 record, optionally preceded by its file name line.
pub fn mqtt_payload(
    station: &str,
    payload: &[u8],
    offset: FixedOffset,
) -> (SourceProtocol, Result<Vec<Sample>, WireError>) {
    let body = content_start(payload);
    if body.first() == Some(&b'{') {
        return (
            SourceProtocol::MqttJson,
            json::decode(body, Some(station)).map(|s| vec![s]),
        );
    }
    let result = match split_file_name(body) {
        Some((name, rest)) => match circular10::parse_file_name(name) {
            Ok(f) if f.station == station => circular10::decode_record(rest, station, offset)
                .and_then(|s| circular10::check_file_time(&f, &s, offset).map(|()| s)),
            Ok(f) => Err(WireError::new(
                "mqtt.station_mismatch",
                format!(
                    "file name names station `{}`, topic names `{station}`",
                    f.station
                ),
            )),
            Err(e) => Err(e),
        },
        None => circular10::decode_record(body, station, offset),
    };
    (SourceProtocol::MqttCircular10, result)
}

/// When the first line looks like a Circular 10 file name (no tab, ends in
/// `.txt`), returns it and the rest.
fn split_file_name(body: &[u8]) -> Option<(&str, &[u8])> {
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = std::str::from_utf8(&body[..end])
        .ok()?
        .trim_end_matches('\r')
        .trim();
    if line.contains('\t') || !line.to_ascii_lowercase().ends_with(".txt") {
        return None;
    }
    Some((line, body.get(end + 1..).unwrap_or_default()))
}

/// Decodes a Circular 10 record received over TCP: the file name line names
/// the station, the lines after it are the record.
pub fn tcp_circular10(
    header: &[u8],
    body: &[u8],
    offset: FixedOffset,
    station_of: impl Fn(&circular10::FileName) -> Result<String, WireError>,
) -> (String, Result<Vec<Sample>, WireError>) {
    let name = match std::str::from_utf8(content_start(header)) {
        Ok(s) => s.trim(),
        Err(_) => {
            return (
                String::new(),
                Err(WireError::new(
                    "circular10.encoding",
                    "file name line is not UTF-8",
                )),
            );
        }
    };
    match circular10::parse_file_name(name) {
        Ok(f) => match station_of(&f) {
            Ok(station) => {
                let result = circular10::decode_record(body, &station, offset)
                    .and_then(|s| circular10::check_file_time(&f, &s, offset).map(|()| s));
                (station, result)
            }
            Err(e) => (f.station, Err(e)),
        },
        Err(e) => (String::new(), Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc7() -> FixedOffset {
        FixedOffset::east_opt(7 * 3600).expect("valid offset")
    }

    #[test]
    fn topics() {
        assert_eq!(
            station_from_topic("stations/PY-HH-WW01/readings"),
            Ok("PY-HH-WW01")
        );
        for bad in [
            "stations//readings",
            "stations/x",
            "stations/x/readings/more",
            "other/x/readings",
            "",
        ] {
            assert_eq!(
                station_from_topic(bad).map_err(|e| e.reason),
                Err("mqtt.bad_topic"),
                "{bad}"
            );
        }
    }

    const RECORD: &str =
        "pH\t7.12\tpH\t20250115103500\t00\r\nCOD\t42.0\tmg/L\t20250115103500\t01\r\n";

    #[test]
    fn mqtt_json_and_circular10_are_told_apart() {
        let json = br#" {"measured_at":"2025-01-15T10:35:00+07:00","values":[{"parameter":"pH","value":7.1}]}"#;
        let (source, r) = mqtt_payload("S1", json, utc7());
        assert_eq!(source, SourceProtocol::MqttJson);
        assert_eq!(r.expect("json decodes")[0].station_id, "S1");

        let (source, r) = mqtt_payload("S1", RECORD.as_bytes(), utc7());
        assert_eq!(source, SourceProtocol::MqttCircular10);
        let samples = r.expect("record decodes");
        assert_eq!(samples[0].values.len(), 2);
    }

    #[test]
    fn mqtt_circular10_file_name_must_match_topic() {
        let with_name = format!("PhuYen_HoaHiep_S1_20250115103500.txt\r\n{RECORD}");
        let (_, r) = mqtt_payload("S1", with_name.as_bytes(), utc7());
        assert_eq!(r.expect("decodes")[0].values.len(), 2);
        let (_, r) = mqtt_payload("S2", with_name.as_bytes(), utc7());
        assert_eq!(r.map_err(|e| e.reason), Err("mqtt.station_mismatch"));
    }

    /// The `<Station>` part, as ingest names a station without a registry.
    fn part(f: &circular10::FileName) -> Result<String, WireError> {
        Ok(f.station.clone())
    }

    #[test]
    fn tcp_circular10_takes_station_from_header() {
        let (station, r) = tcp_circular10(
            b"PhuYen_HoaHiep_S-9_20250115103500.txt",
            RECORD.as_bytes(),
            utc7(),
            part,
        );
        assert_eq!(station, "S-9");
        assert_eq!(r.expect("decodes")[0].station_id, "S-9");
        // A file named for one time holding another is refused, with both.
        let (_, r) = tcp_circular10(
            b"PhuYen_HoaHiep_S-9_20250115113500.txt",
            RECORD.as_bytes(),
            utc7(),
            part,
        );
        let e = r.expect_err("an hour apart");
        assert_eq!(e.reason, "circular10.time_mismatch");
        assert!(
            e.detail.contains("20250115113500") && e.detail.contains("20250115103500"),
            "{}",
            e.detail
        );
        // Within the tolerance: accepted.
        let (_, r) = tcp_circular10(
            b"PhuYen_HoaHiep_S-9_20250115103900.txt",
            RECORD.as_bytes(),
            utc7(),
            part,
        );
        assert!(r.is_ok());
        let with_name = format!("PhuYen_HoaHiep_S1_20250116103500.txt\r\n{RECORD}");
        let (_, r) = mqtt_payload("S1", with_name.as_bytes(), utc7());
        assert_eq!(r.map_err(|e| e.reason), Err("circular10.time_mismatch"));
        let (station, r) = tcp_circular10(b"garbage", RECORD.as_bytes(), utc7(), part);
        assert_eq!(station, "");
        assert_eq!(r.map_err(|e| e.reason), Err("circular10.bad_file_name"));
    }
}
