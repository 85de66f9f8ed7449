//! What a sample looks like on the wire, and what ingest's replies mean.
//! Pure functions over the `quantrac_proto::wire` encoders, testable
//! without sockets.

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use quantrac_proto::Sample;
use quantrac_proto::domain::parameter_by_code;
use quantrac_proto::units;
use quantrac_proto::wire::{circular10, hj212, json};

use crate::model::{PROVINCE_FILE_NAME, Station};
use crate::protocol::Protocol;

/// Loggers in Viet Nam write local time, UTC+7.
pub fn vn_offset() -> FixedOffset {
    FixedOffset::east_opt(7 * 3_600).expect("UTC+7 is a valid offset")
}

/// HJ 212 command of real-time data.
pub const HJ212_REALTIME: &str = "2011";
/// HJ 212 `Flag` bit 0: the logger wants a data response.
pub const HJ212_FLAG_WANTS_REPLY: u32 = 1;

/// MQTT topic of a station's readings.
pub fn mqtt_topic(station: &Station) -> String {
    format!("stations/{}/readings", station.id)
}

/// A Circular 10 "file": the file name line, then one line per parameter.
pub fn circular10_file(station: &Station, sample: &Sample) -> Vec<u8> {
    let local = sample.measured_at.with_timezone(&vn_offset()).naive_local();
    let mut out = circular10::file_name(
        PROVINCE_FILE_NAME,
        &station.facility_code,
        &station.id,
        local,
    )
    .into_bytes();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&circular10::encode_record(sample, vn_offset()));
    out
}

/// The MQTT payload of a sample for an MQTT protocol (JSON otherwise).
pub fn mqtt_payload(station: &Station, sample: &Sample) -> Vec<u8> {
    match station.protocol {
        Protocol::MqttC10 => circular10_file(station, sample),
        _ => json::encode(sample),
    }
}

/// The sample as an HJ 212 logger sends it: the standard's pollutant codes
/// in place of Circular 10 codes, each value in the standard's unit for
/// its code (flow in L/s or m³/s, gas concentrations at 273.15 K), and no
/// units (packets carry none). `Packet::from_sample` writes values as given.
pub fn with_hj212_codes(station: &Station, sample: &Sample) -> Sample {
    let mut sample = sample.clone();
    for v in &mut sample.values {
        if let Some(p) = parameter_by_code(&v.parameter, station.kind) {
            // The catalogue's units always convert to the standard's; were
            // one not to, the value goes as it is and the processor says so.
            if let Ok(x) = units::convert(v.value, &v.unit, p.hj212_unit, p.code) {
                v.value = x;
            }
            v.parameter = p.hj212_code.to_owned();
            v.unit.clear();
        }
    }
    sample
}

/// Format of a TCP connection; ingest tells them apart by the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpFormat {
    Hj212,
    Circular10,
    Json,
}

impl TcpFormat {
    pub fn of(protocol: Protocol) -> Option<TcpFormat> {
        match protocol {
            Protocol::TcpHj212 => Some(TcpFormat::Hj212),
            Protocol::TcpC10 => Some(TcpFormat::Circular10),
            Protocol::TcpJson => Some(TcpFormat::Json),
            Protocol::MqttJson | Protocol::MqttC10 => None,
        }
    }
}

/// One frame ready to write, with what is needed to match its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub bytes: Bytes,
    /// HJ 212 QN: replies carry it back.
    pub qn: Option<String>,
}

/// Frames a sample for a TCP format. `qn_time` must differ between frames
/// of one connection: the QN is the only key of an HJ 212 reply.
pub fn tcp_frame(
    format: TcpFormat,
    station: &Station,
    sample: &Sample,
    hj212_password: &str,
    qn_time: DateTime<Utc>,
) -> Frame {
    match format {
        TcpFormat::Hj212 => {
            let packet = hj212::Packet::from_sample(
                &with_hj212_codes(station, sample),
                HJ212_REALTIME,
                station.hj212_st(),
                hj212_password,
                HJ212_FLAG_WANTS_REPLY,
                qn_time,
                vn_offset(),
            );
            Frame {
                bytes: hj212::encode(&packet).into(),
                qn: Some(packet.qn),
            }
        }
        TcpFormat::Circular10 => {
            let mut bytes = circular10_file(station, sample);
            // An empty line ends the record.
            bytes.extend_from_slice(b"\r\n");
            Frame {
                bytes: bytes.into(),
                qn: None,
            }
        }
        TcpFormat::Json => {
            let mut bytes = json::encode(sample);
            bytes.push(b'\n');
            Frame {
                bytes: bytes.into(),
                qn: None,
            }
        }
    }
}

/// What ingest said about one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Durable on ingest's side; `readings` when the reply counts them.
    Acked { readings: Option<u64> },
    /// Refused. `retry` when the refusal says "later" (ingest's bus is
    /// unavailable), so the frame must be resent.
    Refused {
        reason: String,
        detail: String,
        retry: bool,
    },
}

/// A reply line matched to its frame: by QN for HJ 212, by order otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReply {
    pub reply: Reply,
    pub qn: Option<String>,
}

/// Refusals that ask the sender to try again later.
fn retryable(reason: &str) -> bool {
    reason.ends_with(".unavailable")
}

/// Parses one reply line (without or with its line end). `Err` is a reply
/// that makes no sense: the connection can no longer be trusted.
pub fn parse_reply(format: TcpFormat, line: &[u8]) -> Result<ParsedReply, String> {
    let text = std::str::from_utf8(line).map_err(|_| "reply is not UTF-8".to_owned())?;
    let text = text.trim_end_matches(['\r', '\n']);
    let reply = match format {
        TcpFormat::Hj212 => {
            let packet =
                hj212::decode(text.as_bytes()).map_err(|e| format!("bad HJ 212 reply: {e}"))?;
            let reply = match packet.cn.as_str() {
                hj212::CN_DATA_RESPONSE => Reply::Acked { readings: None },
                hj212::CN_REQUEST_RESPONSE => {
                    let code = packet
                        .cp
                        .split(';')
                        .find_map(|kv| kv.strip_prefix("QnRtn="))
                        .unwrap_or("?")
                        .to_owned();
                    Reply::Refused {
                        reason: format!("QnRtn={code}"),
                        detail: qn_rtn_meaning(&code).to_owned(),
                        retry: false,
                    }
                }
                cn => return Err(format!("unexpected HJ 212 reply CN={cn}")),
            };
            return Ok(ParsedReply {
                reply,
                qn: Some(packet.qn),
            });
        }
        TcpFormat::Circular10 => {
            if let Some(n) = text.strip_prefix("OK") {
                let n = n.trim();
                let readings = if n.is_empty() {
                    None
                } else {
                    Some(n.parse().map_err(|_| format!("bad reply {text:?}"))?)
                };
                Reply::Acked { readings }
            } else if let Some(rest) = text.strip_prefix("ERR ") {
                let (reason, detail) = rest.split_once(' ').unwrap_or((rest, ""));
                Reply::Refused {
                    reason: reason.to_owned(),
                    detail: detail.to_owned(),
                    retry: retryable(reason),
                }
            } else {
                return Err(format!("bad reply {text:?}"));
            }
        }
        TcpFormat::Json => {
            #[derive(serde::Deserialize)]
            struct JsonReply {
                ok: bool,
                readings: Option<u64>,
                #[serde(default)]
                reason: String,
                #[serde(default)]
                detail: String,
            }
            let r: JsonReply =
                serde_json::from_str(text).map_err(|e| format!("bad JSON reply {text:?}: {e}"))?;
            if r.ok {
                Reply::Acked {
                    readings: r.readings,
                }
            } else {
                let retry = retryable(&r.reason);
                Reply::Refused {
                    reason: r.reason,
                    detail: r.detail,
                    retry,
                }
            }
        }
    };
    Ok(ParsedReply { reply, qn: None })
}

/// HJ 212-2017 request response codes.
fn qn_rtn_meaning(code: &str) -> &'static str {
    match code {
        "1" => "ready",
        "2" => "refused",
        "3" => "wrong password",
        "4" => "unknown device (MN)",
        "5" => "wrong ST",
        "6" => "wrong Flag",
        "7" => "wrong QN",
        "8" => "unsupported CN",
        "9" => "CRC error",
        "100" => "unknown error",
        _ => "unknown code",
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use quantrac_proto::wire::WireError;

    use super::*;
    use crate::model::{Anomalies, Fleet, FleetConfig};
    use crate::protocol::ProtocolMix;

    fn station(protocol: Protocol) -> Result<Station, crate::SimError> {
        let config = FleetConfig {
            stations: 1,
            protocols: ProtocolMix::only(protocol),
            anomalies: Anomalies::none(),
            stack_share: 0.0,
            ..FleetConfig::default()
        };
        let fleet = Fleet::new(&config)?;
        Ok(fleet.stations()[0].clone())
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 15, 3, 35, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn hj212_frame_decodes_back_with_hj212_codes() -> Result<(), Box<dyn std::error::Error>> {
        let s = station(Protocol::TcpHj212)?;
        let sample = s.measure(at());
        let frame = tcp_frame(TcpFormat::Hj212, &s, &sample, "pw", at());
        assert!(frame.bytes.starts_with(b"##") && frame.bytes.ends_with(b"\r\n"));
        let packet = hj212::decode(&frame.bytes)?;
        assert_eq!(
            (
                packet.cn.as_str(),
                packet.st.as_str(),
                packet.pw.as_str(),
                packet.flag
            ),
            ("2011", "32", "pw", 1)
        );
        assert_eq!(frame.qn.as_deref(), Some(packet.qn.as_str()));
        let back = packet.sample(vn_offset())?;
        assert_eq!(back.station_id, s.id);
        assert_eq!(back.measured_at, sample.measured_at);
        let codes: Vec<_> = back.values.iter().map(|v| v.parameter.as_str()).collect();
        assert_eq!(
            codes,
            ["w00000", "w01001", "w01010", "w01012", "w01018", "w21003"]
        );
        // Flow goes in L/s (HJ 212's unit for w00000); the rest as measured.
        let values: Vec<_> = back.values.iter().map(|v| v.value).collect();
        let mut sent: Vec<_> = sample.values.iter().map(|v| v.value).collect();
        assert_eq!(sample.values[0].unit, "m3/h");
        sent[0] /= 3.6;
        assert_eq!(values.len(), sent.len());
        for (got, want) in values.iter().zip(&sent) {
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn circular10_frame_is_name_records_and_a_blank_line() -> Result<(), Box<dyn std::error::Error>>
    {
        let s = station(Protocol::TcpC10)?;
        let sample = s.measure(at());
        let frame = tcp_frame(TcpFormat::Circular10, &s, &sample, "", at());
        let text = std::str::from_utf8(&frame.bytes)?;
        let (name, rest) = text.split_once("\r\n").ok_or("no name line")?;
        // 03:35 UTC is 10:35 in Phú Yên.
        assert_eq!(
            name,
            format!("PhuYen_{}_{}_20250115103500.txt", s.facility_code, s.id)
        );
        let parsed = circular10::parse_file_name(name)?;
        assert_eq!(parsed.station, s.id);
        assert!(rest.ends_with("\r\n\r\n"));
        let back = circular10::decode_record(rest.as_bytes(), &s.id, vn_offset())?;
        assert_eq!(back, vec![sample]);
        Ok(())
    }

    #[test]
    fn json_frame_and_mqtt_payloads_decode_back() -> Result<(), WireError> {
        let s = station(Protocol::TcpJson).map_err(|e| WireError::new("test", e.to_string()))?;
        let sample = s.measure(at());
        let frame = tcp_frame(TcpFormat::Json, &s, &sample, "", at());
        assert_eq!(frame.bytes.last(), Some(&b'\n'));
        assert_eq!(json::decode(&frame.bytes, None)?, sample);
        assert_eq!(
            json::decode(&mqtt_payload(&s, &sample), Some(&s.id))?,
            sample
        );
        let mut c10 = s.clone();
        c10.protocol = Protocol::MqttC10;
        let payload = mqtt_payload(&c10, &sample);
        assert!(payload.starts_with(b"PhuYen_"));
        assert_eq!(mqtt_topic(&s), format!("stations/{}/readings", s.id));
        Ok(())
    }

    #[test]
    fn replies_are_understood() -> Result<(), Box<dyn std::error::Error>> {
        let data = hj212::Packet {
            qn: "20250115103500123".into(),
            st: "32".into(),
            cn: "2011".into(),
            pw: "pw".into(),
            mn: "PY-HH-WW01".into(),
            flag: 1,
            cp: "DataTime=20250115103500;w01001-Rtd=7.1,w01001-Flag=N".into(),
        };
        let ack = parse_reply(TcpFormat::Hj212, &hj212::encode(&data.data_response()))?;
        assert_eq!(
            ack,
            ParsedReply {
                reply: Reply::Acked { readings: None },
                qn: Some(data.qn.clone())
            }
        );
        let refused = parse_reply(TcpFormat::Hj212, &hj212::encode(&data.request_response(3)))?;
        assert!(
            matches!(refused.reply, Reply::Refused { ref reason, retry: false, .. } if reason == "QnRtn=3")
        );
        assert!(
            parse_reply(TcpFormat::Hj212, &hj212::encode(&data)).is_err(),
            "a data packet is no reply"
        );
        assert!(parse_reply(TcpFormat::Hj212, b"##0000garbage\r\n").is_err());

        assert_eq!(
            parse_reply(TcpFormat::Circular10, b"OK 6\r\n")?.reply,
            Reply::Acked { readings: Some(6) }
        );
        let err = parse_reply(
            TcpFormat::Circular10,
            b"ERR circular10.bad_value line 2: value `x`",
        )?
        .reply;
        assert_eq!(
            err,
            Reply::Refused {
                reason: "circular10.bad_value".into(),
                detail: "line 2: value `x`".into(),
                retry: false
            }
        );
        let later =
            parse_reply(TcpFormat::Circular10, b"ERR kafka.unavailable resend later")?.reply;
        assert!(matches!(later, Reply::Refused { retry: true, .. }));
        assert!(parse_reply(TcpFormat::Circular10, b"HELLO").is_err());

        assert_eq!(
            parse_reply(TcpFormat::Json, br#"{"ok":true,"readings":6}"#)?.reply,
            Reply::Acked { readings: Some(6) }
        );
        let no = parse_reply(
            TcpFormat::Json,
            br#"{"ok":false,"reason":"json.schema","detail":"x"}"#,
        )?
        .reply;
        assert!(
            matches!(no, Reply::Refused { ref reason, retry: false, .. } if reason == "json.schema")
        );
        let later = parse_reply(
            TcpFormat::Json,
            br#"{"ok":false,"reason":"kafka.unavailable"}"#,
        )?
        .reply;
        assert!(matches!(later, Reply::Refused { retry: true, .. }));
        assert!(parse_reply(TcpFormat::Json, b"{}").is_err());
        Ok(())
    }
}
