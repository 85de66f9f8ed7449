//! Live counters of this processor, for `/health`, logs and tests; the
//! Prometheus metrics carry the same numbers with labels.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Status {
    consumed: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    db_failing: AtomicBool,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    /// Readings read from the bus.
    pub consumed: u64,
    /// New rows written to `readings`.
    pub stored: u64,
    /// Readings that were already stored (redelivery or replay).
    pub duplicates: u64,
    /// Readings refused by validation (kept in `rejected_readings`).
    pub rejected: u64,
    /// Batches committed.
    pub batches: u64,
    /// The last database write failed and is being retried.
    pub db_failing: bool,
}

impl Status {
    pub(crate) fn batch_done(&self, consumed: u64, stored: u64, duplicates: u64, rejected: u64) {
        self.consumed.fetch_add(consumed, Ordering::Relaxed);
        self.stored.fetch_add(stored, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("processor_consumed_total").increment(consumed);
        metrics::counter!("processor_stored_total").increment(stored);
        metrics::counter!("processor_duplicates_total").increment(duplicates);
    }

    pub(crate) fn set_db_failing(&self, v: bool) {
        self.db_failing.store(v, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            consumed: self.consumed.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            db_failing: self.db_failing.load(Ordering::Relaxed),
        }
    }
}

impl quantrac_plumbing::http::Health for Status {
    /// Unhealthy while database writes fail (they are being retried).
    fn report(&self) -> quantrac_plumbing::http::HealthReport {
        let s = self.snapshot();
        quantrac_plumbing::http::HealthReport {
            healthy: !s.db_failing,
            status: serde_json::to_value(s).unwrap_or_default(),
        }
    }
}
