//! Decoded station samples and the parameter catalogue.

use chrono::{DateTime, Utc};

use crate::v1;

/// Device status as the three meanings of Circular 10/2021 art. 39.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceStatus {
    Measuring,
    Calibrating,
    Error,
}

impl DeviceStatus {
    /// Circular 10 status code (`00`, `01`, `02`).
    pub fn circular10_code(self) -> &'static str {
        match self {
            DeviceStatus::Measuring => "00",
            DeviceStatus::Calibrating => "01",
            DeviceStatus::Error => "02",
        }
    }

    /// Parses a Circular 10 status code; tolerates a missing leading zero.
    pub fn from_circular10(code: &str) -> Option<Self> {
        match code.trim() {
            "00" | "0" => Some(DeviceStatus::Measuring),
            "01" | "1" => Some(DeviceStatus::Calibrating),
            "02" | "2" => Some(DeviceStatus::Error),
            _ => None,
        }
    }

    /// Maps an HJ 212-2017 value flag onto the three statuses. The original
    /// flag is kept beside it by the caller.
    ///
    /// N normal, S manual entry and T above range are values the instrument
    /// measured; C calibration and M maintenance are calibration windows;
    /// F analyser stopped, D fault and B link fault are errors.
    pub fn from_hj212_flag(flag: &str) -> Option<Self> {
        match flag {
            "N" | "S" | "T" => Some(DeviceStatus::Measuring),
            "C" | "M" => Some(DeviceStatus::Calibrating),
            "F" | "D" | "B" => Some(DeviceStatus::Error),
            _ => None,
        }
    }

    /// The JSON schema's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Measuring => "measuring",
            DeviceStatus::Calibrating => "calibrating",
            DeviceStatus::Error => "error",
        }
    }

    pub fn from_json(s: &str) -> Option<Self> {
        match s {
            "measuring" => Some(DeviceStatus::Measuring),
            "calibrating" => Some(DeviceStatus::Calibrating),
            "error" => Some(DeviceStatus::Error),
            _ => None,
        }
    }
}

impl From<DeviceStatus> for v1::DeviceStatus {
    fn from(s: DeviceStatus) -> Self {
        match s {
            DeviceStatus::Measuring => v1::DeviceStatus::Measuring,
            DeviceStatus::Calibrating => v1::DeviceStatus::Calibrating,
            DeviceStatus::Error => v1::DeviceStatus::Error,
        }
    }
}

/// One parameter's value inside a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleValue {
    /// Parameter code as sent (`COD`, `w01018`, ...).
    pub parameter: String,
    pub value: f64,
    /// Unit as sent, empty when the format carries none.
    pub unit: String,
    pub status: DeviceStatus,
    /// The device's own flag, verbatim.
    pub device_flag: String,
    /// `Some` when the value is not a real-time one but the logger's own
    /// aggregate over a period (HJ 212 CN 2051 / 2061 / 2031), `value`
    /// being its average.
    pub report: Option<Report>,
    /// HJ 212 `-ZsRtd` / `-ZsAvg`: the value the analyser converted to the
    /// reference state (dry gas at the reference O₂), kept beside it.
    pub converted: Option<f64>,
}

/// The kind of a logger's own aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// HJ 212 CN 2051: over a few minutes (the logger's setting).
    Minute,
    /// CN 2061: over an hour.
    Hour,
    /// CN 2031: over a day.
    Day,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Minute => "minute",
            RecordKind::Hour => "hour",
            RecordKind::Day => "day",
        }
    }

    /// The HJ 212 data command that carries this kind.
    pub fn from_hj212_cn(cn: &str) -> Option<RecordKind> {
        match cn {
            "2051" => Some(RecordKind::Minute),
            "2061" => Some(RecordKind::Hour),
            "2031" => Some(RecordKind::Day),
            _ => None,
        }
    }

    /// Its period when the kind fixes one (minutes are the logger's own
    /// setting, not in the packet: 0).
    pub fn period_seconds(self) -> u32 {
        match self {
            RecordKind::Minute => 0,
            RecordKind::Hour => 3_600,
            RecordKind::Day => 86_400,
        }
    }
}

/// A logger's own aggregate of one parameter over a period that starts at
/// the sample's time.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub kind: RecordKind,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// HJ 212 `-Cou`: the cumulative amount over the period (discharged
    /// volume, emitted mass).
    pub total: Option<f64>,
}

/// The values one station measured at one time: what one JSON message, one
/// HJ 212 data packet or one timestamp of a Circular 10 record carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub station_id: String,
    pub measured_at: DateTime<Utc>,
    pub values: Vec<SampleValue>,
}

/// Viet Nam's time, Asia/Ho_Chi_Minh: UTC+7 all year (no daylight saving).
pub fn local_offset() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset")
}

/// Converts a chrono time into a protobuf timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Converts a protobuf timestamp back; `None` when out of chrono's range.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

impl Sample {
    /// Stamps the sample with its arrival and turns it into the Kafka record.
    /// Each reading gets a fresh UUIDv7 ingest id.
    pub fn into_batch(
        self,
        source: v1::SourceProtocol,
        received_at: DateTime<Utc>,
        ingest_node: &str,
    ) -> v1::ReadingBatch {
        let measured_at = Some(to_timestamp(self.measured_at));
        let received = Some(to_timestamp(received_at));
        let readings = self
            .values
            .into_iter()
            .map(|v| v1::Reading {
                record: v
                    .report
                    .as_ref()
                    .map_or(v1::RecordKind::Realtime, |r| match r.kind {
                        RecordKind::Minute => v1::RecordKind::Minute,
                        RecordKind::Hour => v1::RecordKind::Hour,
                        RecordKind::Day => v1::RecordKind::Day,
                    }) as i32,
                period_seconds: v.report.as_ref().map_or(0, |r| r.kind.period_seconds()),
                min: v.report.as_ref().and_then(|r| r.min),
                max: v.report.as_ref().and_then(|r| r.max),
                total: v.report.as_ref().and_then(|r| r.total),
                converted: v.converted,
                station_id: self.station_id.clone(),
                parameter: v.parameter,
                value: v.value,
                unit: v.unit,
                measured_at,
                status: v1::DeviceStatus::from(v.status) as i32,
                device_flag: v.device_flag,
                source: source as i32,
                received_at: received,
                ingest_id: uuid::Uuid::now_v7().to_string(),
            })
            .collect();
        v1::ReadingBatch {
            station_id: self.station_id,
            readings,
            ingest_node: ingest_node.to_owned(),
            notices: Vec::new(),
            file: None,
            frame: None,
        }
    }
}

/// Kind of monitoring station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StationKind {
    Wastewater,
    Stack,
}

/// A monitored parameter: its Circular 10 code, its HJ 212 code, its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParameterInfo {
    /// Circular 10/2021 code (column 1 of the text record).
    pub code: &'static str,
    /// HJ 212-2017 pollutant code.
    pub hj212_code: &'static str,
    /// The same pollutant's code in HJ/T 212-2005, which older loggers
    /// still send; `""` where the catalogue does not hold one (only the
    /// codes in the domain notes are built in).
    pub hj212_2005_code: &'static str,
    /// The unit HJ 212's code table fixes for the code. Packets carry no
    /// units, so a value under the code is in this unit unless the
    /// station's registry entry says its logger sends another.
    pub hj212_unit: &'static str,
    pub name: &'static str,
    /// Unit the station normally sends (and the processor stores).
    pub unit: &'static str,
    pub kind: StationKind,
}

/// The parameters of the domain reference. Codes map between formats; the
/// limits that apply to them are data (per station, per permit), not here.
pub const PARAMETERS: &[ParameterInfo] = &[
    ParameterInfo {
        code: "Flow",
        hj212_code: "w00000",
        hj212_2005_code: "B01",
        hj212_unit: "L/s",
        name: "Wastewater flow",
        unit: "m3/h",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "pH",
        hj212_code: "w01001",
        hj212_2005_code: "001",
        hj212_unit: "pH",
        name: "pH",
        unit: "pH",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "Temp",
        hj212_code: "w01010",
        hj212_2005_code: "",
        hj212_unit: "°C",
        name: "Water temperature",
        unit: "°C",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "TSS",
        hj212_code: "w01012",
        hj212_2005_code: "003",
        hj212_unit: "mg/L",
        name: "Total suspended solids",
        unit: "mg/L",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "COD",
        hj212_code: "w01018",
        hj212_2005_code: "011",
        hj212_unit: "mg/L",
        name: "Chemical oxygen demand",
        unit: "mg/L",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "NH4",
        hj212_code: "w21003",
        hj212_2005_code: "060",
        hj212_unit: "mg/L",
        name: "Ammonium (as N)",
        unit: "mg/L",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "TN",
        hj212_code: "w21001",
        hj212_2005_code: "",
        hj212_unit: "mg/L",
        name: "Total nitrogen",
        unit: "mg/L",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "TP",
        hj212_code: "w21011",
        hj212_2005_code: "",
        hj212_unit: "mg/L",
        name: "Total phosphorus",
        unit: "mg/L",
        kind: StationKind::Wastewater,
    },
    ParameterInfo {
        code: "Flow",
        hj212_code: "a00000",
        hj212_2005_code: "B02",
        hj212_unit: "m3/s",
        name: "Flue-gas flow",
        unit: "m3/h",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "Temp",
        hj212_code: "a01012",
        hj212_2005_code: "",
        hj212_unit: "°C",
        name: "Flue-gas temperature",
        unit: "°C",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "P",
        hj212_code: "a01013",
        hj212_2005_code: "",
        hj212_unit: "kPa",
        name: "Flue-gas pressure",
        unit: "kPa",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "O2",
        hj212_code: "a19001",
        hj212_2005_code: "",
        hj212_unit: "%",
        name: "Oxygen (excess)",
        unit: "%",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "PM",
        hj212_code: "a34013",
        hj212_2005_code: "01",
        hj212_unit: "mg/m3@0C",
        name: "Dust",
        unit: "mg/Nm3",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "SO2",
        hj212_code: "a21026",
        hj212_2005_code: "02",
        hj212_unit: "mg/m3@0C",
        name: "Sulphur dioxide",
        unit: "mg/Nm3",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "NOx",
        hj212_code: "a21002",
        hj212_2005_code: "03",
        hj212_unit: "mg/m3@0C",
        name: "Nitrogen oxides (as NO2)",
        unit: "mg/Nm3",
        kind: StationKind::Stack,
    },
    // Stacks with separate analysers send NO and NO2; NOx (as NO2) is then
    // computed by the processor (NO x 46/30 + NO2).
    ParameterInfo {
        code: "NO",
        hj212_code: "a21003",
        hj212_2005_code: "",
        hj212_unit: "mg/m3@0C",
        name: "Nitric oxide",
        unit: "mg/Nm3",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "NO2",
        hj212_code: "a21004",
        hj212_2005_code: "",
        hj212_unit: "mg/m3@0C",
        name: "Nitrogen dioxide",
        unit: "mg/Nm3",
        kind: StationKind::Stack,
    },
    ParameterInfo {
        code: "CO",
        hj212_code: "a21005",
        hj212_2005_code: "",
        hj212_unit: "mg/m3@0C",
        name: "Carbon monoxide",
        unit: "mg/Nm3",
        kind: StationKind::Stack,
    },
];

/// Looks a parameter up by its HJ 212 code, 2017 or 2005 edition.
pub fn parameter_by_hj212(code: &str) -> Option<&'static ParameterInfo> {
    PARAMETERS
        .iter()
        .find(|p| p.hj212_code == code)
        .or_else(|| {
            PARAMETERS
                .iter()
                .find(|p| !p.hj212_2005_code.is_empty() && p.hj212_2005_code == code)
        })
}

/// The unit HJ 212's code table fixes for `code` (2017 or 2005 edition),
/// or `None` for a code the catalogue does not know.
pub fn hj212_standard_unit(code: &str) -> Option<&'static str> {
    parameter_by_hj212(code).map(|p| p.hj212_unit)
}

/// Looks a parameter up by Circular 10 code and station kind (`Flow` and
/// `Temp` exist for both kinds).
pub fn parameter_by_code(code: &str, kind: StationKind) -> Option<&'static ParameterInfo> {
    PARAMETERS.iter().find(|p| p.code == code && p.kind == kind)
}
