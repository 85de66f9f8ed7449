//! Counters shared by the senders, readable while a run goes on.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a run; [`Counters::snapshot`] reads them.
#[derive(Debug, Default)]
pub struct Counters {
    sent: AtomicU64,
    resent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    readings_acked: AtomicU64,
    abandoned: AtomicU64,
}

/// Totals of a run (or a moment of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Samples written to the wire, resends included.
    pub sent: u64,
    /// Of `sent`, the resends: after a lost connection, a missing reply or a
    /// "try later" refusal (TCP), or a retransmission with the same packet
    /// id (MQTT).
    pub resent: u64,
    /// Samples ingest acknowledged (HJ 212 CN=9014, `OK n`, `{"ok":true}`,
    /// MQTT PUBACK).
    pub acked: u64,
    /// Samples ingest refused for good (bad content, wrong password).
    pub refused: u64,
    /// Connection failures, timeouts and replies that made no sense.
    pub errors: u64,
    /// Parameter values in the acknowledged samples.
    pub readings_acked: u64,
    /// Samples handed to a sender (sent or not yet written) and still
    /// unanswered when the run stopped.
    pub abandoned: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            sent: get(&self.sent),
            resent: get(&self.resent),
            acked: get(&self.acked),
            refused: get(&self.refused),
            errors: get(&self.errors),
            readings_acked: get(&self.readings_acked),
            abandoned: get(&self.abandoned),
        }
    }

    pub(crate) fn sent(&self, n: u64, resend: bool) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        if resend {
            self.resent.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn acked(&self, readings: u64) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.readings_acked.fetch_add(readings, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn abandoned(&self, n: u64) {
        self.abandoned.fetch_add(n, Ordering::Relaxed);
    }
}
