//! The shared vocabulary of data quality: the QC flag stored with every
//! reading and the reasons a reading is refused. Every crate uses these
//! enums; the strings are only their stored and wire form (the `qc_flag`
//! column, `StoredReading.qc_flag`, `RejectedReading.reason`, metric labels).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::DeviceStatus;

/// Data-quality flag of a stored reading. Only `Valid` values are judged
/// against permit limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QcFlag {
    Valid,
    /// Entered by hand at the station (HJ 212 `S`).
    Manual,
    /// The analyser says the true value is above its range (HJ 212 `T`).
    AboveRange,
    Calibrating,
    /// Maintenance window (HJ 212 `M`).
    Maintenance,
    DeviceError,
    /// An officer declared the stored value wrong (`InvalidateReadings`):
    /// kept, shown, never judged nor averaged.
    Invalidated,
}

impl QcFlag {
    pub const ALL: [QcFlag; 7] = [
        QcFlag::Valid,
        QcFlag::Manual,
        QcFlag::AboveRange,
        QcFlag::Calibrating,
        QcFlag::Maintenance,
        QcFlag::DeviceError,
        QcFlag::Invalidated,
    ];

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            QcFlag::Valid => "valid",
            QcFlag::Manual => "manual",
            QcFlag::AboveRange => "above_range",
            QcFlag::Calibrating => "calibrating",
            QcFlag::Maintenance => "maintenance",
            QcFlag::DeviceError => "device_error",
            QcFlag::Invalidated => "invalidated",
        }
    }

    /// The flag of a status refined by the device's own flag.
    pub fn from_status(status: DeviceStatus, device_flag: &str) -> Self {
        let flag = device_flag.trim();
        let is = |f: &str| flag.eq_ignore_ascii_case(f);
        match status {
            DeviceStatus::Measuring if is("S") => QcFlag::Manual,
            DeviceStatus::Measuring if is("T") => QcFlag::AboveRange,
            DeviceStatus::Measuring => QcFlag::Valid,
            DeviceStatus::Calibrating if is("M") => QcFlag::Maintenance,
            DeviceStatus::Calibrating => QcFlag::Calibrating,
            DeviceStatus::Error => QcFlag::DeviceError,
        }
    }

    /// A value the instrument stands behind, so that its range applies.
    pub fn is_measured(self) -> bool {
        matches!(self, QcFlag::Valid | QcFlag::Manual)
    }

    /// The instrument was measuring (whatever the value's standing).
    pub fn is_measuring(self) -> bool {
        matches!(self, QcFlag::Valid | QcFlag::Manual | QcFlag::AboveRange)
    }

    /// The instrument was not measuring: calibration, maintenance or a
    /// fault. Such readings feed the instrument-status rule.
    pub fn is_instrument_down(self) -> bool {
        matches!(
            self,
            QcFlag::Calibrating | QcFlag::Maintenance | QcFlag::DeviceError
        )
    }
}

impl fmt::Display for QcFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not a QC flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown QC flag {0:?}")]
pub struct UnknownQcFlag(pub String);

impl FromStr for QcFlag {
    type Err = UnknownQcFlag;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        QcFlag::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownQcFlag(s.to_owned()))
    }
}

/// Why the processor refused a reading. Stable: stored with the raw reading
/// and used as a metric label. Checks run in the order listed, so a reading
/// has exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The station id is not in the registry.
    UnknownStation,
    /// The station has no parameter with that code or alias.
    UnknownParameter,
    /// The device status is unspecified or not a known value.
    BadStatus,
    /// No measurement time, or an invalid one.
    MissingTime,
    /// Measured more than `max_future` after now (clock skew).
    FutureTimestamp,
    /// Measured before the retention period: it would be dropped at once.
    TooOld,
    /// NaN or infinite value (also after unit conversion).
    NonFinite,
    /// The unit is unknown or not convertible to the canonical one.
    UnitNotConvertible,
    /// A measured value outside the instrument's range.
    OutOfRange,
    /// A Kafka record that is not a `ReadingBatch` at all.
    Undecodable,
    /// Valid, but the database refused the row for good (a time outside
    /// its range, say): kept here instead of stopping every batch behind it.
    StorageRefused,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::UnknownStation,
        RejectReason::UnknownParameter,
        RejectReason::BadStatus,
        RejectReason::MissingTime,
        RejectReason::FutureTimestamp,
        RejectReason::TooOld,
        RejectReason::NonFinite,
        RejectReason::UnitNotConvertible,
        RejectReason::OutOfRange,
        RejectReason::Undecodable,
        RejectReason::StorageRefused,
    ];

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownStation => "unknown_station",
            RejectReason::UnknownParameter => "unknown_parameter",
            RejectReason::BadStatus => "bad_status",
            RejectReason::MissingTime => "missing_time",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::TooOld => "too_old",
            RejectReason::NonFinite => "non_finite",
            RejectReason::UnitNotConvertible => "unit_not_convertible",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::Undecodable => "undecodable",
            RejectReason::StorageRefused => "storage_refused",
        }
    }

    /// The reason of a stored form, if it is one of the processor's.
    /// Ingest's reasons (`hj212.crc_mismatch`, ...) are not: they come from
    /// [`crate::wire::WireError`].
    pub fn parse(s: &str) -> Option<Self> {
        RejectReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_forms_round_trip_and_match_serde() {
        for f in QcFlag::ALL {
            assert_eq!(f.as_str().parse::<QcFlag>(), Ok(f));
            assert_eq!(
                serde_json::to_string(&f).ok(),
                Some(format!("\"{}\"", f.as_str()))
            );
        }
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_string(&r).ok(),
                Some(format!("\"{}\"", r.as_str()))
            );
        }
        assert!("bogus".parse::<QcFlag>().is_err());
        assert_eq!(RejectReason::parse("hj212.crc_mismatch"), None);
    }

    #[test]
    fn every_flag_is_measuring_or_instrument_down_never_both() {
        for f in QcFlag::ALL {
            if f == QcFlag::Invalidated {
                // An officer's verdict on the value, not the instrument's
                // state: neither, so never judged and no status alert.
                assert!(!f.is_measuring() && !f.is_instrument_down());
                continue;
            }
            assert!(f.is_measuring() != f.is_instrument_down(), "{f}");
        }
    }
}
