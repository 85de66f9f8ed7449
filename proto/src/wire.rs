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
        Self { reason, detail: detail.into() }
    }

    /// The stable code.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}
