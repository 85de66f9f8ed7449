//! Live counters of this ingest instance, shared by the receivers, the
//! `/health` endpoint and tests. Prometheus metrics carry the same numbers
//! with labels; these are the unlabelled totals a probe or a test can read.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Status {
    received: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    in_flight: AtomicI64,
    kafka_failing: AtomicBool,
    mqtt_connected: AtomicBool,
    tcp_listening: AtomicBool,
}

/// A copy of [`Status`] at one moment.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    /// Frames/messages received from stations.
    pub received: u64,
    /// Of those, acknowledged to the station after Kafka had them.
    pub acknowledged: u64,
    /// Of those, rejected (and kept on the rejected topic).
    pub rejected: u64,
    /// Records handed to Kafka and not yet acknowledged by it.
    pub in_flight: i64,
    /// The last delivery to Kafka failed.
    pub kafka_failing: bool,
    pub mqtt_connected: bool,
    pub tcp_listening: bool,
}

impl Status {
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
    pub fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn in_flight_add(&self, n: i64) {
        let now = self.in_flight.fetch_add(n, Ordering::Relaxed) + n;
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("ingest_in_flight").set(now as f64);
    }
    pub(crate) fn kafka_result(&self, ok: bool) {
        self.kafka_failing.store(!ok, Ordering::Relaxed);
    }
    pub(crate) fn set_mqtt_connected(&self, v: bool) {
        self.mqtt_connected.store(v, Ordering::Relaxed);
    }
    pub(crate) fn set_tcp_listening(&self, v: bool) {
        self.tcp_listening.store(v, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            received: self.received.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            kafka_failing: self.kafka_failing.load(Ordering::Relaxed),
            mqtt_connected: self.mqtt_connected.load(Ordering::Relaxed),
            tcp_listening: self.tcp_listening.load(Ordering::Relaxed),
        }
    }
}

/// `/health` of an ingest instance: unhealthy while Kafka (or the bus)
/// refuses deliveries, or an enabled receiver is down.
#[derive(Debug)]
pub(crate) struct IngestHealth {
    pub status: std::sync::Arc<Status>,
    pub mqtt_enabled: bool,
    pub tcp_enabled: bool,
}

impl quantrac_plumbing::http::Health for IngestHealth {
    fn report(&self) -> quantrac_plumbing::http::HealthReport {
        let s = self.status.snapshot();
        let healthy = !s.kafka_failing
            && (!self.mqtt_enabled || s.mqtt_connected)
            && (!self.tcp_enabled || s.tcp_listening);
        quantrac_plumbing::http::HealthReport {
            healthy,
            status: serde_json::to_value(s).unwrap_or_default(),
        }
    }
}
