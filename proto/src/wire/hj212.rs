//! HJ 212-2017 packets over TCP: `##dddd<data segment><CRC16 hex>\r\n`.
//!
//! The data segment is `QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;CP=&&..&&`.
//! The decoder is tolerant where loggers differ in practice: header fields
//! in any order, unknown ones (`PNUM`, `PNO`) ignored, missing `QN`/`ST`/`PW`
//! read as `""` and a missing `Flag` as 0 (HJ 212-2005 had none), CRC hex in
//! either case, the trailing `\r\n` optional. `CN`, `MN` and `CP` are needed.
//!
//! Reason codes (stable, used as metric labels):
//!
//! | reason | meaning |
//! |---|---|
//! | `hj212.bad_header` | no `##` or the 4 length digits are not digits |
//! | `hj212.length_mismatch` | the length digits disagree with the data segment |
//! | `hj212.crc_mismatch` | the CRC is wrong or not 4 hex digits |
//! | `hj212.encoding` | the data segment is not UTF-8 |
//! | `hj212.bad_field` | a field is not `key=value`, is duplicated, or `Flag` is not a number |
//! | `hj212.missing_field` | `CN`, `MN`, `CP` (or `DataTime` in a data packet) is missing |
//! | `hj212.not_data` | [`Packet::sample`] on a packet that is not CN 2011/2051/2061/2031 |
//! | `hj212.bad_time` | `DataTime` is not `yyyyMMddHHmmss` (or `yyyyMMddHHmmssSSS`) |
//! | `hj212.bad_value` | a value is not a finite number |
//! | `hj212.bad_flag` | a value flag (`-Flag`) is not one of N F M S D C T B |
//! | `hj212.empty` | a data packet without any value |

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, Utc};

use super::WireError;
use crate::domain::{DeviceStatus, RecordKind, Report, Sample, SampleValue};

/// Largest data segment the 4 length digits can announce.
pub const MAX_DATA_LEN: usize = 9999;

/// Commands that carry readings: real-time, minute, hourly, daily data.
pub const DATA_COMMANDS: [&str; 4] = ["2011", "2051", "2061", "2031"];

/// `CN` of the data response the server sends back.
pub const CN_DATA_RESPONSE: &str = "9014";

/// Uploads a logger makes that carry no readings, answered like data:
/// 2021 equipment running status, 2041 equipment running time, 2081 logger
/// restart time, 3020 on-site device information.
pub const NOTICE_COMMANDS: [&str; 4] = ["2021", "2041", "2081", "3020"];
/// `CN` of the request response (`QnRtn`).
pub const CN_REQUEST_RESPONSE: &str = "9011";

/// One HJ 212 packet, fields as text (the header fields echo back into
/// responses verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub qn: String,
    pub st: String,
    pub cn: String,
    pub pw: String,
    pub mn: String,
    pub flag: u32,
    /// Content between `CP=&&` and `&&`.
    pub cp: String,
}

fn err(reason: &'static str, detail: impl Into<String>) -> WireError {
    WireError::new(reason, detail)
}

/// CRC-16 of HJ 212 over the data segment, exactly as the standard prints
/// it: start 0xFFFF; per byte `crc = (crc >> 8) ^ byte`, then 8 reflected
/// steps with 0xA001. Not Modbus CRC, which XORs the byte without the shift.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc = (crc >> 8) ^ u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn parse_crc(hex: &[u8]) -> Option<u16> {
    // from_str_radix would accept a leading '+'; insist on 4 hex digits.
    if hex.len() != 4 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Decodes one framed packet. Checks the length and the CRC before looking
/// at any field, so a corrupted frame is reported as such.
pub fn decode(frame: &[u8]) -> Result<Packet, WireError> {
    let frame = frame
        .strip_suffix(b"\r\n")
        .or_else(|| frame.strip_suffix(b"\n"))
        .unwrap_or(frame);
    let rest = frame
        .strip_prefix(b"##")
        .ok_or_else(|| err("hj212.bad_header", "frame does not start with ##"))?;
    let (digits, rest) = rest
        .split_at_checked(4)
        .ok_or_else(|| err("hj212.bad_header", "frame shorter than its length field"))?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(err(
            "hj212.bad_header",
            format!("length field {:?}", String::from_utf8_lossy(digits)),
        ));
    }
    let len = digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if rest.len() != len + 4 {
        return Err(err(
            "hj212.length_mismatch",
            format!(
                "length field says {len}, data segment is {}",
                rest.len().saturating_sub(4)
            ),
        ));
    }
    let (data, crc_hex) = rest.split_at(len);
    let sent = parse_crc(crc_hex).ok_or_else(|| {
        err(
            "hj212.crc_mismatch",
            format!(
                "CRC field {:?} is not 4 hex digits",
                String::from_utf8_lossy(crc_hex)
            ),
        )
    })?;
    let computed = crc16(data);
    if sent != computed {
        return Err(err(
            "hj212.crc_mismatch",
            format!("sent {sent:04X}, computed {computed:04X}"),
        ));
    }
    let data = std::str::from_utf8(data).map_err(|e| err("hj212.encoding", e.to_string()))?;
    // No control characters inside a data segment (NUL would also be
    // refused by PostgreSQL further down).
    if data.contains(char::is_control) {
        return Err(err(
            "hj212.encoding",
            "control character in the data segment",
        ));
    }
    parse_data_segment(data)
}

fn parse_data_segment(data: &str) -> Result<Packet, WireError> {
    // CP holds ';' of its own, so cut it out before splitting the header.
    let start = data
        .find("CP=&&")
        .ok_or_else(|| err("hj212.missing_field", "no CP=&&"))?;
    let body = &data[start + 5..];
    let end = body
        .find("&&")
        .ok_or_else(|| err("hj212.bad_field", "CP has no closing &&"))?;
    let cp = &body[..end];
    let header = data[..start].split(';').chain(body[end + 2..].split(';'));

    let (mut qn, mut st, mut cn, mut pw, mut mn, mut flag) = (None, None, None, None, None, None);
    for field in header.filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| err("hj212.bad_field", format!("{field:?} is not key=value")))?;
        let slot = match key {
            "QN" => &mut qn,
            "ST" => &mut st,
            "CN" => &mut cn,
            "PW" => &mut pw,
            "MN" => &mut mn,
            "Flag" => &mut flag,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(err("hj212.bad_field", format!("{key} appears twice")));
        }
    }
    let flag = match flag {
        None => 0,
        Some(f) if f.bytes().all(|b| b.is_ascii_digit()) => f
            .parse()
            .map_err(|_| err("hj212.bad_field", format!("Flag={f}")))?,
        Some(f) => return Err(err("hj212.bad_field", format!("Flag={f}"))),
    };
    Ok(Packet {
        qn: qn.unwrap_or_default().to_owned(),
        st: st.unwrap_or_default().to_owned(),
        cn: cn
            .ok_or_else(|| err("hj212.missing_field", "no CN"))?
            .to_owned(),
        pw: pw.unwrap_or_default().to_owned(),
        mn: mn
            .ok_or_else(|| err("hj212.missing_field", "no MN"))?
            .to_owned(),
        flag,
        cp: cp.to_owned(),
    })
}

/// Frames a packet. The data segment of a packet longer than
/// [`MAX_DATA_LEN`] cannot be announced in 4 digits: callers split such
/// payloads (PNUM/PNO); the frame written would fail to decode.
pub fn encode(packet: &Packet) -> Vec<u8> {
    let data = format!(
        "QN={};ST={};CN={};PW={};MN={};Flag={};CP=&&{}&&",
        packet.qn, packet.st, packet.cn, packet.pw, packet.mn, packet.flag, packet.cp
    );
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("##{:04}", data.len()).as_bytes());
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(format!("{:04X}\r\n", crc16(data.as_bytes())).as_bytes());
    out
}

/// `yyyyMMddHHmmss`, or with milliseconds `yyyyMMddHHmmssSSS` as many
/// loggers send it.
fn parse_time(s: &str, offset: FixedOffset) -> Option<DateTime<Utc>> {
    let (seconds, millis) = match s.len() {
        14 => (s, 0),
        17 => {
            let (seconds, ms) = s.split_at_checked(14)?;
            if !ms.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (seconds, ms.parse::<u32>().ok()?)
        }
        _ => return None,
    };
    let naive = super::parse_compact_time(seconds)?
        .checked_add_signed(chrono::TimeDelta::milliseconds(i64::from(millis)))?;
    Some(
        naive
            .and_local_timezone(offset)
            .single()?
            .with_timezone(&Utc),
    )
}

/// The flag to send for a value: its own when it is an HJ 212 letter that
/// agrees with its status, else the plain letter for the status.
fn flag_for(v: &SampleValue) -> &str {
    match DeviceStatus::from_hj212_flag(&v.device_flag) {
        Some(s) if s == v.status => &v.device_flag,
        _ => match v.status {
            DeviceStatus::Measuring => "N",
            DeviceStatus::Calibrating => "C",
            DeviceStatus::Error => "D",
        },
    }
}

impl Packet {
    /// Flag bit 0: the logger resends until it gets a data response.
    pub fn wants_reply(&self) -> bool {
        self.flag & 1 != 0
    }

    pub fn is_data(&self) -> bool {
        DATA_COMMANDS.contains(&self.cn.as_str())
    }

    /// A station notice (restart, running status, device information).
    pub fn is_notice(&self) -> bool {
        NOTICE_COMMANDS.contains(&self.cn.as_str())
    }

    /// A notice's kind and its time by the station's clock (2081:
    /// `RestartTime`, else `DataTime`; `None` when neither is there or
    /// readable: the notice is still kept, at its reception time).
    /// `None` for a packet that is not a notice.
    pub fn notice(&self, offset: FixedOffset) -> Option<(&'static str, Option<DateTime<Utc>>)> {
        let kind = match self.cn.as_str() {
            "2081" => "restart",
            "2021" => "device_status",
            "2041" => "run_time",
            "3020" => "device_info",
            _ => return None,
        };
        let field = |name: &str| {
            self.cp
                .split([';', ','])
                .filter_map(|i| i.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| parse_time(v, offset))
        };
        let at = if kind == "restart" {
            field("RestartTime").or_else(|| field("DataTime"))
        } else {
            field("DataTime")
        };
        Some((kind, at))
    }

    /// Suffix of the value field this packet's command carries.
    fn value_suffix(&self) -> &'static str {
        if self.cn == "2011" { "Rtd" } else { "Avg" }
    }

    /// Readings of a data packet; station_id = MN; DataTime (yyyyMMddHHmmss,
    /// or with milliseconds) is logger-local time at `offset`.
    ///
    /// 2011 (real-time) takes `<code>-Rtd`; 2051 / 2061 / 2031 (the
    /// logger's minute, hourly and daily aggregates, over the period that
    /// starts at DataTime) take `<code>-Avg` as the value and keep `-Min`,
    /// `-Max` and `-Cou` (the period's cumulative amount) in its
    /// [`Report`]. `-ZsRtd` / `-ZsAvg` (the value converted to the
    /// reference state) is kept as `converted`. `<code>-Flag` gives the
    /// status via [`DeviceStatus::from_hj212_flag`] and is kept as
    /// `device_flag` (missing flag = `N`). Other suffixes (`-SampleTime`,
    /// `-EFlag`, ...) are ignored. Values come in payload order; units are
    /// empty (HJ 212 implies them by code).
    pub fn sample(&self, offset: FixedOffset) -> Result<Sample, WireError> {
        if !self.is_data() {
            return Err(err(
                "hj212.not_data",
                format!("CN={} carries no readings", self.cn),
            ));
        }
        if self.mn.is_empty() {
            return Err(err("hj212.missing_field", "MN is empty"));
        }
        let wanted = self.value_suffix();
        let converted_suffix = if wanted == "Rtd" { "ZsRtd" } else { "ZsAvg" };
        let kind = RecordKind::from_hj212_cn(&self.cn);
        let mut time = None;
        let mut values: Vec<(&str, f64)> = Vec::new();
        let mut flags: HashMap<&str, &str> = HashMap::new();
        // (code, suffix) -> number, for Min / Max / Cou / Zs*.
        let mut extra: HashMap<(&str, &str), f64> = HashMap::new();
        for item in self.cp.split([';', ',']).filter(|i| !i.is_empty()) {
            let (key, text) = item.split_once('=').ok_or_else(|| {
                err(
                    "hj212.bad_field",
                    format!("CP item {item:?} is not key=value"),
                )
            })?;
            if key == "DataTime" {
                let t = parse_time(text, offset)
                    .ok_or_else(|| err("hj212.bad_time", format!("DataTime={text}")))?;
                if time.replace(t).is_some() {
                    return Err(err("hj212.bad_field", "DataTime appears twice"));
                }
                continue;
            }
            let Some((code, suffix)) = key.rsplit_once('-') else {
                continue;
            };
            let number = || {
                text.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err("hj212.bad_value", format!("{key}={text}")))
            };
            if suffix == wanted {
                let value = number()?;
                if code.is_empty() || values.iter().any(|(c, _)| *c == code) {
                    return Err(err("hj212.bad_field", format!("{key} empty or repeated")));
                }
                values.push((code, value));
            } else if suffix == "Flag" {
                if flags.insert(code, text).is_some() {
                    return Err(err("hj212.bad_field", format!("{key} repeated")));
                }
            } else if ["Min", "Max", "Cou", converted_suffix].contains(&suffix) {
                // Secondary fields never cost the value: an empty or bad one
                // is left out (loggers send `-ZsRtd=` when they have none).
                if let Some(x) = text.parse::<f64>().ok().filter(|v| v.is_finite())
                    && extra.insert((code, suffix), x).is_some()
                {
                    return Err(err("hj212.bad_field", format!("{key} repeated")));
                }
            }
        }
        let measured_at = time.ok_or_else(|| err("hj212.missing_field", "no DataTime in CP"))?;
        if values.is_empty() {
            return Err(err("hj212.empty", format!("no -{wanted} value in CP")));
        }
        let values = values
            .into_iter()
            .map(|(code, value)| {
                let flag = flags.get(code).copied().unwrap_or("N");
                let status = DeviceStatus::from_hj212_flag(flag)
                    .ok_or_else(|| err("hj212.bad_flag", format!("{code}-Flag={flag}")))?;
                let get = |suffix: &str| extra.get(&(code, suffix)).copied();
                Ok(SampleValue {
                    parameter: code.to_owned(),
                    value,
                    unit: String::new(),
                    status,
                    device_flag: flag.to_owned(),
                    report: kind.map(|kind| Report {
                        kind,
                        min: get("Min"),
                        max: get("Max"),
                        total: get("Cou"),
                    }),
                    converted: get(converted_suffix),
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(Sample {
            station_id: self.mn.clone(),
            measured_at,
            values,
        })
    }

    /// Data response the server sends back (CN=9014, ST=91, same QN, PW, MN,
    /// Flag=4, empty CP): stops the logger resending.
    pub fn data_response(&self) -> Packet {
        self.response(CN_DATA_RESPONSE, String::new())
    }

    /// Request response for a refused packet (CN=9011, ST=91, same QN/PW/MN,
    /// Flag=4, CP `QnRtn=<code>`).
    ///
    /// HJ 212 QnRtn codes: 1 ready, 2 refused, 3 PW error, 4 MN error,
    /// 5 ST error, 6 Flag error, 7 QN error, 8 CN error, 9 CRC error,
    /// 100 unknown.
    pub fn request_response(&self, qn_rtn: u16) -> Packet {
        self.response(CN_REQUEST_RESPONSE, format!("QnRtn={qn_rtn}"))
    }

    fn response(&self, cn: &str, cp: String) -> Packet {
        Packet {
            qn: self.qn.clone(),
            st: "91".to_owned(),
            cn: cn.to_owned(),
            pw: self.pw.clone(),
            mn: self.mn.clone(),
            flag: 4,
            cp,
        }
    }

    /// Encoder for simulators: a data packet (CN given, 2011 -> `-Rtd` else
    /// `-Avg`), QN from `qn_time` (yyyyMMddHHmmssSSS at `offset`). Times are
    /// written to the second; the flag is the value's own HJ 212 letter when
    /// it agrees with its status, else N, C or D.
    pub fn from_sample(
        sample: &Sample,
        cn: &str,
        st: &str,
        pw: &str,
        flag: u32,
        qn_time: DateTime<Utc>,
        offset: FixedOffset,
    ) -> Packet {
        let suffix = if cn == "2011" { "Rtd" } else { "Avg" };
        let mut cp = format!(
            "DataTime={}",
            sample
                .measured_at
                .with_timezone(&offset)
                .format("%Y%m%d%H%M%S")
        );
        let zs = if cn == "2011" { "ZsRtd" } else { "ZsAvg" };
        for v in &sample.values {
            // Writing into a String cannot fail.
            let _ = write!(cp, ";{p}-{suffix}={}", v.value, p = v.parameter);
            if let Some(r) = v.report.as_ref().filter(|_| cn != "2011") {
                for (name, x) in [("Min", r.min), ("Max", r.max), ("Cou", r.total)] {
                    if let Some(x) = x {
                        let _ = write!(cp, ",{p}-{name}={x}", p = v.parameter);
                    }
                }
            }
            if let Some(x) = v.converted {
                let _ = write!(cp, ",{p}-{zs}={x}", p = v.parameter);
            }
            let _ = write!(cp, ",{p}-Flag={}", flag_for(v), p = v.parameter);
        }
        Packet {
            qn: qn_time
                .with_timezone(&offset)
                .format("%Y%m%d%H%M%S%3f")
                .to_string(),
            st: st.to_owned(),
            cn: cn.to_owned(),
            pw: pw.to_owned(),
            mn: sample.station_id.clone(),
            flag,
            cp,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const DATA: &str = "QN=20250115103500000;ST=32;CN=2011;PW=123456;MN=PYHHWW01;Flag=5;\
        CP=&&DataTime=20250115103500;w01001-Rtd=7.12,w01001-Flag=N;w01010-Rtd=29.4,w01010-Flag=N;\
        w01012-Rtd=18.6,w01012-Flag=N;w01018-Rtd=42.0,w01018-Flag=C;w21003-Rtd=1.35,w21003-Flag=N;\
        w00000-Rtd=52.8,w00000-Flag=N&&";

    /// CRC of `DATA`, computed independently with Python:
    /// `crc=0xFFFF; for b in data: crc=(crc>>8)^b; 8x (crc>>1)^0xA001 if crc&1 else crc>>1`.
    const DATA_CRC: u16 = 0x8941;

    fn vn() -> FixedOffset {
        FixedOffset::east_opt(7 * 3600).unwrap()
    }

    fn frame(data: &str) -> Vec<u8> {
        format!(
            "##{:04}{data}{:04X}\r\n",
            data.len(),
            crc16(data.as_bytes())
        )
        .into_bytes()
    }

    fn reason(frame: &[u8]) -> &'static str {
        decode(frame).unwrap_err().reason
    }

    #[test]
    fn notices_say_their_kind_and_the_station_time() {
        let notice = |cn: &str, cp: &str| {
            decode(&frame(&format!("ST=32;CN={cn};MN=X;Flag=5;CP=&&{cp}&&")))
                .unwrap()
                .notice(vn())
        };
        let t = |h, m| {
            Some(
                vn().with_ymd_and_hms(2025, 1, 15, h, m, 0)
                    .unwrap()
                    .to_utc(),
            )
        };
        // 2081: the restart's own time, not the upload's.
        assert_eq!(
            notice("2081", "DataTime=20250115103500;RestartTime=20250115102000"),
            Some(("restart", t(10, 20)))
        );
        assert_eq!(
            notice("2081", "DataTime=20250115103500"),
            Some(("restart", t(10, 35)))
        );
        assert_eq!(
            notice("2021", "DataTime=20250115103500;i12001-Info=1"),
            Some(("device_status", t(10, 35)))
        );
        assert_eq!(
            notice("2041", "DataTime=20250115103500000"),
            Some(("run_time", t(10, 35)))
        );
        // An unreadable time costs only the time.
        assert_eq!(
            notice("3020", "DataTime=2025011510"),
            Some(("device_info", None))
        );
        assert_eq!(notice("2011", "DataTime=20250115103500;w01018-Rtd=1"), None);
    }

    fn sample_reason(cp: &str) -> &'static str {
        let p = decode(&frame(&format!("ST=32;CN=2011;MN=X;CP=&&{cp}&&"))).unwrap();
        p.sample(vn()).unwrap_err().reason
    }

    #[test]
    fn crc_matches_independent_computation() {
        assert_eq!(crc16(DATA.as_bytes()), DATA_CRC);
        // Not Modbus (whose check value is 4B37): the byte goes into the low
        // byte of the shifted CRC. Python gives 2F80 for this routine.
        assert_eq!(crc16(b"123456789"), 0x2F80);
        // The example frame printed in HJ 212-2017 itself.
        let std_frame = b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";
        let p = decode(std_frame).unwrap();
        assert_eq!(
            (p.cn.as_str(), p.cp.as_str(), p.flag),
            ("1062", "RtdInterval=30", 5)
        );
        assert_eq!(encode(&p), std_frame);
        assert_eq!(crc16(b""), 0xFFFF);
    }

    #[test]
    fn decodes_a_wastewater_packet() {
        let f = frame(DATA);
        assert!(f.starts_with(format!("##{:04}QN=", DATA.len()).as_bytes()));
        let p = decode(&f).unwrap();
        assert_eq!(
            (
                p.qn.as_str(),
                p.st.as_str(),
                p.cn.as_str(),
                p.pw.as_str(),
                p.mn.as_str(),
                p.flag
            ),
            ("20250115103500000", "32", "2011", "123456", "PYHHWW01", 5)
        );
        assert!(p.wants_reply() && p.is_data());
        let s = p.sample(vn()).unwrap();
        assert_eq!(s.station_id, "PYHHWW01");
        assert_eq!(
            s.measured_at,
            Utc.with_ymd_and_hms(2025, 1, 15, 3, 35, 0).unwrap()
        );
        let got: Vec<_> = s
            .values
            .iter()
            .map(|v| {
                (
                    v.parameter.as_str(),
                    v.value,
                    v.status,
                    v.device_flag.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("w01001", 7.12, DeviceStatus::Measuring, "N"),
                ("w01010", 29.4, DeviceStatus::Measuring, "N"),
                ("w01012", 18.6, DeviceStatus::Measuring, "N"),
                ("w01018", 42.0, DeviceStatus::Calibrating, "C"),
                ("w21003", 1.35, DeviceStatus::Measuring, "N"),
                ("w00000", 52.8, DeviceStatus::Measuring, "N"),
            ]
        );
        assert!(s.values.iter().all(|v| v.unit.is_empty()));
        // Our encoder writes the same frame for the same fields.
        assert_eq!(encode(&p), f);
    }

    /// An hourly packet (CN 2061) is the logger's aggregate over the hour
    /// from DataTime: its -Avg is the value, -Min/-Max/-Cou its report, and
    /// -ZsAvg the converted value; a real-time packet (2011) keeps -ZsRtd.
    /// The shape of the standard's example (HJ 212-2017, appendix C).
    #[test]
    fn record_kinds_keep_their_report_and_converted_values() {
        let cp = "DataTime=20250115100000;a21026-Min=12.1,a21026-Avg=20.4,a21026-Max=35.0,a21026-ZsAvg=28.7,a21026-Cou=1.83,a21026-Flag=N;a00000-Avg=15.2,a00000-Cou=54720";
        let data =
            format!("QN=20250115110005123;ST=31;CN=2061;PW=123456;MN=ST01;Flag=5;CP=&&{cp}&&");
        let f = format!(
            "##{:04}{data}{:04X}\r\n",
            data.len(),
            crc16(data.as_bytes())
        );
        let s = decode(f.as_bytes()).unwrap().sample(vn()).unwrap();
        assert_eq!(
            s.measured_at,
            Utc.with_ymd_and_hms(2025, 1, 15, 3, 0, 0).unwrap()
        );
        let so2 = &s.values[0];
        assert_eq!((so2.parameter.as_str(), so2.value), ("a21026", 20.4));
        assert_eq!(
            so2.report,
            Some(Report {
                kind: RecordKind::Hour,
                min: Some(12.1),
                max: Some(35.0),
                total: Some(1.83),
            })
        );
        assert_eq!(so2.converted, Some(28.7));
        let flow = &s.values[1];
        assert_eq!(flow.report.as_ref().and_then(|r| r.total), Some(54720.0));
        assert_eq!(flow.report.as_ref().and_then(|r| r.min), None);

        // An empty -Min (loggers send them) costs nothing but itself.
        let d =
            "CN=2061;MN=M;CP=&&DataTime=20250115100000;w01018-Min=,w01018-Avg=40,w01018-Max=x&&";
        let f = format!("##{:04}{d}{:04X}\r\n", d.len(), crc16(d.as_bytes()));
        let s = decode(f.as_bytes()).unwrap().sample(vn()).unwrap();
        assert_eq!(s.values[0].value, 40.0);
        assert_eq!(
            s.values[0].report.as_ref().map(|r| (r.min, r.max)),
            Some((None, None))
        );

        let rt = "QN=20250115103500000;ST=31;CN=2011;PW=123456;MN=ST01;Flag=5;CP=&&DataTime=20250115103500;a21026-Rtd=20.4,a21026-ZsRtd=28.7,a21026-Flag=N&&";
        let f = format!("##{:04}{rt}{:04X}\r\n", rt.len(), crc16(rt.as_bytes()));
        let s = decode(f.as_bytes()).unwrap().sample(vn()).unwrap();
        assert_eq!(s.values[0].report, None, "real-time");
        assert_eq!(s.values[0].converted, Some(28.7));

        for (cn, kind) in [("2051", RecordKind::Minute), ("2031", RecordKind::Day)] {
            let d = format!("CN={cn};MN=M;CP=&&DataTime=20250115000000;w01018-Avg=40&&");
            let f = format!("##{:04}{d}{:04X}\r\n", d.len(), crc16(d.as_bytes()));
            let s = decode(f.as_bytes()).unwrap().sample(vn()).unwrap();
            assert_eq!(s.values[0].report.as_ref().map(|r| r.kind), Some(kind));
        }
    }

    #[test]
    fn tolerances() {
        // Lowercase CRC, no CRLF, fields reordered, unknown fields, no QN/Flag.
        let data = "MN=M1;PNUM=1;PNO=1;CN=2051;ST=31;CP=&&a34013-Min=1,a34013-Avg=2.5,a34013-Max=4,a34013-Flag=D;DataTime=20250115103000&&";
        let f = format!("##{:04}{data}{:04x}", data.len(), crc16(data.as_bytes()));
        let p = decode(f.as_bytes()).unwrap();
        assert_eq!((p.qn.as_str(), p.flag, p.cn.as_str()), ("", 0, "2051"));
        assert!(!p.wants_reply());
        let s = p.sample(vn()).unwrap();
        assert_eq!(s.values.len(), 1);
        assert_eq!(
            (
                s.values[0].value,
                s.values[0].status,
                s.values[0].device_flag.as_str()
            ),
            (2.5, DeviceStatus::Error, "D")
        );
        // Missing value flag means N; an aggregate packet ignores -Rtd.
        let p = decode(&frame(
            "CN=2061;MN=M;CP=&&DataTime=20250115100000;w01018-Rtd=9;w01018-Avg=40.5&&",
        ))
        .unwrap();
        let v = &p.sample(vn()).unwrap().values[0];
        assert_eq!(
            (v.value, v.status, v.device_flag.as_str()),
            (40.5, DeviceStatus::Measuring, "N")
        );
        // CP not last; bare LF.
        let mut f = frame("CP=&&DataTime=20250115100000;w01018-Rtd=1&&;CN=2011;MN=M");
        f.truncate(f.len() - 2);
        f.push(b'\n');
        assert_eq!(
            decode(&f).unwrap().sample(vn()).unwrap().values[0].value,
            1.0
        );
    }

    #[test]
    fn responses() {
        let p = decode(&frame(DATA)).unwrap();
        let r = p.data_response();
        assert_eq!(
            r,
            Packet {
                qn: p.qn.clone(),
                st: "91".into(),
                cn: "9014".into(),
                pw: "123456".into(),
                mn: "PYHHWW01".into(),
                flag: 4,
                cp: String::new()
            }
        );
        assert_eq!(
            String::from_utf8(encode(&r)).unwrap(),
            format!(
                "##0071QN=20250115103500000;ST=91;CN=9014;PW=123456;MN=PYHHWW01;Flag=4;CP=&&&&{:04X}\r\n",
                crc16(b"QN=20250115103500000;ST=91;CN=9014;PW=123456;MN=PYHHWW01;Flag=4;CP=&&&&")
            )
        );
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        let r = p.request_response(9);
        assert_eq!(
            (r.cn.as_str(), r.st.as_str(), r.cp.as_str(), r.flag),
            ("9011", "91", "QnRtn=9", 4)
        );
        assert!(!r.is_data());
        assert_eq!(r.sample(vn()).unwrap_err().reason, "hj212.not_data");
    }

    #[test]
    fn from_sample_round_trips() {
        let s = decode(&frame(DATA)).unwrap().sample(vn()).unwrap();
        let qn_time = Utc.with_ymd_and_hms(2025, 1, 15, 3, 35, 1).unwrap()
            + chrono::Duration::milliseconds(42);
        let p = Packet::from_sample(&s, "2011", "32", "pw", 1, qn_time, vn());
        assert_eq!(p.qn, "20250115103501042");
        assert!(
            p.cp.starts_with("DataTime=20250115103500;w01001-Rtd=7.12,w01001-Flag=N;"),
            "{}",
            p.cp
        );
        assert_eq!(decode(&encode(&p)).unwrap().sample(vn()).unwrap(), s);
    }

    #[test]
    fn frame_rejections() {
        let good = frame(DATA);
        assert_eq!(reason(b""), "hj212.bad_header");
        assert_eq!(reason(b"#0010"), "hj212.bad_header");
        assert_eq!(reason(b"##12"), "hj212.bad_header");
        assert_eq!(reason(b"##12a4QN=1"), "hj212.bad_header");
        assert_eq!(reason(&good[..good.len() - 4]), "hj212.length_mismatch");
        assert_eq!(reason(b"##9999"), "hj212.length_mismatch");
        let mut bad = good.clone();
        bad[20] ^= 1;
        assert_eq!(reason(&bad), "hj212.crc_mismatch");
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 3] = b'G';
        assert_eq!(reason(&bad), "hj212.crc_mismatch");
        let data = b"CN=2011;MN=\xFF;CP=&&&&";
        let mut f = format!("##{:04}", data.len()).into_bytes();
        f.extend_from_slice(data);
        f.extend_from_slice(format!("{:04X}", crc16(data)).as_bytes());
        assert_eq!(reason(&f), "hj212.encoding");
    }

    #[test]
    fn field_rejections() {
        assert_eq!(reason(&frame("CN=2011;MN=M")), "hj212.missing_field");
        assert_eq!(reason(&frame("CN=2011;CP=&&&&")), "hj212.missing_field");
        assert_eq!(reason(&frame("MN=M;CP=&&&&")), "hj212.missing_field");
        assert_eq!(
            reason(&frame("CN=2011;MN=M;CP=&&DataTime=1")),
            "hj212.bad_field"
        );
        assert_eq!(
            reason(&frame("CN=2011;MN=M;junk;CP=&&&&")),
            "hj212.bad_field"
        );
        assert_eq!(
            reason(&frame("CN=2011;MN=M;MN=N;CP=&&&&")),
            "hj212.bad_field"
        );
        assert_eq!(
            reason(&frame("CN=2011;MN=M;Flag=x;CP=&&&&")),
            "hj212.bad_field"
        );
        assert_eq!(
            reason(&frame("CN=2011;MN=M;Flag=-1;CP=&&&&")),
            "hj212.bad_field"
        );
        assert_eq!(
            reason(&frame("CN=2011;MN=M;Flag=99999999999;CP=&&&&")),
            "hj212.bad_field"
        );
    }

    #[test]
    fn sample_rejections() {
        let p = decode(&frame(
            "CN=2011;MN=;CP=&&DataTime=20250115100000;w01018-Rtd=1&&",
        ))
        .unwrap();
        assert_eq!(p.sample(vn()).unwrap_err().reason, "hj212.missing_field");
        assert_eq!(sample_reason("w01018-Rtd=1"), "hj212.missing_field");
        assert_eq!(
            sample_reason("DataTime=2025011510000;w01018-Rtd=1"),
            "hj212.bad_time"
        );
        assert_eq!(
            sample_reason("DataTime=20251315100000;w01018-Rtd=1"),
            "hj212.bad_time"
        );
        assert_eq!(
            sample_reason("DataTime=+2025011510000;w01018-Rtd=1"),
            "hj212.bad_time"
        );
        for v in ["", "abc", "NaN", "inf", "-infinity", "1e999"] {
            assert_eq!(
                sample_reason(&format!("DataTime=20250115100000;w01018-Rtd={v}")),
                "hj212.bad_value",
                "{v}"
            );
        }
        assert_eq!(
            sample_reason("DataTime=20250115100000;w01018-Rtd=1,w01018-Flag=X"),
            "hj212.bad_flag"
        );
        assert_eq!(
            sample_reason("DataTime=20250115100000;w01018-Rtd=1;w01018-Rtd=2"),
            "hj212.bad_field"
        );
        assert_eq!(
            sample_reason("DataTime=20250115100000;w01018-Rtd"),
            "hj212.bad_field"
        );
        assert_eq!(sample_reason("DataTime=20250115100000"), "hj212.empty");
        assert_eq!(
            sample_reason("DataTime=20250115100000;w01018-Avg=1"),
            "hj212.empty"
        );
    }

    /// Real loggers send DataTime (and QN) with milliseconds: 17 digits.
    #[test]
    fn seventeen_digit_data_time_keeps_its_milliseconds() {
        let p = decode(&frame(
            "QN=20240712101500123;ST=32;CN=2011;PW=123456;MN=M17;Flag=5;CP=&&DataTime=20240712101500123;w01018-Rtd=41.2,w01018-Flag=N&&",
        ))
        .unwrap();
        let s = p.sample(vn()).unwrap();
        let want = chrono::DateTime::parse_from_rfc3339("2024-07-12T10:15:00.123+07:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(s.measured_at, want);
        // 15 or 16 digits are neither form.
        for t in ["202407121015001", "2024071210150012"] {
            assert_eq!(
                sample_reason(&format!("DataTime={t};w01018-Rtd=1")),
                "hj212.bad_time",
                "{t}"
            );
        }
    }
}
