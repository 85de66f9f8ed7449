//! Station wire formats: decoders for what data loggers send, encoders for
//! what the simulators send.
//!
//! Decoders take untrusted bytes. They never panic, never allocate more than
//! a small multiple of their input, and fail with a [`WireError`] whose
//! [`WireError::reason`] is a stable machine-readable code (it becomes the
//! `reason` of a `RejectedInput` and a metric label, so the set is bounded).

pub mod circular10;
pub mod hj212;
pub mod json;

/// Why bytes from a station could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct WireError {
    /// Stable code, e.g. `hj212.crc_mismatch`; bounded set, used as a metric label.
    pub reason: &'static str,
    /// What exactly was wrong, for logs and the rejected topic.
    pub detail: String,
}

impl WireError {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// The stable code.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Parses the compact `yyyyMMddHHmmss` time both HJ 212 and Circular 10 use.
/// Exactly 14 ASCII digits (chrono's `%Y` would also take a sign or more
/// digits); done by hand because it runs once per line or packet.
pub(crate) fn parse_compact_time(s: &str) -> Option<chrono::NaiveDateTime> {
    let b: &[u8; 14] = s.as_bytes().try_into().ok()?;
    if !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b.get(r)
            .map(|d| d.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    chrono::NaiveDate::from_ymd_opt(year, num(4..6)?, num(6..8)?)?.and_hms_opt(
        num(8..10)?,
        num(10..12)?,
        num(12..14)?,
    )
}
