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
    mqtt_listening: AtomicBool,
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
    /// Ingest's own MQTT endpoint accepts stations.
    pub mqtt_listening: bool,
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
    pub(crate) fn set_mqtt_listening(&self, v: bool) {
        self.mqtt_listening.store(v, Ordering::Relaxed);
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
            mqtt_listening: self.mqtt_listening.load(Ordering::Relaxed),
        }
    }
}

/// `/health` of an ingest instance: unhealthy while Kafka (or the bus)
/// refuses deliveries, an enabled receiver is down, or the instance is
/// stalled: frames kept arriving for `stall_after` while none was answered.
#[derive(Debug)]
pub(crate) struct IngestHealth {
    pub status: std::sync::Arc<Status>,
    pub mqtt_enabled: bool,
    pub tcp_enabled: bool,
    pub mqtt_listener_enabled: bool,
    pub stall_after: std::time::Duration,
    /// Received and answered counts when answers last moved, and when.
    pub progress: std::sync::Mutex<Option<(u64, u64, std::time::Instant)>>,
}

impl IngestHealth {
    /// For how long frames have arrived with none answered (`None`: not
    /// stalled). Checked when `/health` is asked; an idle instance (nothing
    /// arriving) is not stalled.
    fn stalled_for(&self, s: &Snapshot) -> Option<std::time::Duration> {
        let answered = s.acknowledged + s.rejected;
        let mut p = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *p {
            Some((received, before, since)) if before == answered => {
                let waited = since.elapsed();
                (s.received > received && waited >= self.stall_after).then_some(waited)
            }
            _ => {
                *p = Some((s.received, answered, std::time::Instant::now()));
                None
            }
        }
    }
}

impl quantrac_plumbing::http::Health for IngestHealth {
    fn report(&self) -> quantrac_plumbing::http::HealthReport {
        let s = self.status.snapshot();
        let stalled = self.stalled_for(&s);
        let healthy = !s.kafka_failing
            && (!self.mqtt_enabled || s.mqtt_connected)
            && (!self.tcp_enabled || s.tcp_listening)
            && (!self.mqtt_listener_enabled || s.mqtt_listening)
            && stalled.is_none();
        let mut status = serde_json::to_value(s).unwrap_or_default();
        if let (Some(waited), Some(map)) = (stalled, status.as_object_mut()) {
            map.insert("stalled_for_s".into(), waited.as_secs().into());
        }
        quantrac_plumbing::http::HealthReport { healthy, status }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use quantrac_plumbing::http::Health as _;

    use super::*;

    fn health(stall_after: Duration) -> (Arc<Status>, IngestHealth) {
        let status = Arc::new(Status::default());
        status.set_tcp_listening(true);
        let h = IngestHealth {
            status: Arc::clone(&status),
            mqtt_enabled: false,
            tcp_enabled: true,
            mqtt_listener_enabled: false,
            stall_after,
            progress: std::sync::Mutex::default(),
        };
        (status, h)
    }

    #[test]
    fn frames_arriving_with_none_answered_are_a_stall() {
        let (status, h) = health(Duration::from_millis(30));
        status.received();
        status.acknowledged();
        assert!(h.report().healthy);
        // Frames keep arriving, none is answered.
        status.received();
        std::thread::sleep(Duration::from_millis(50));
        status.received();
        let r = h.report();
        assert!(!r.healthy, "{:?}", r.status);
        assert!(r.status.get("stalled_for_s").is_some(), "{:?}", r.status);
        // An answer is progress.
        status.acknowledged();
        assert!(h.report().healthy);
    }

    #[test]
    fn an_idle_instance_is_not_stalled() {
        let (status, h) = health(Duration::from_millis(30));
        // One frame never answered (say, refused while Kafka was down),
        // then nothing arrives.
        status.received();
        assert!(h.report().healthy);
        std::thread::sleep(Duration::from_millis(50));
        assert!(h.report().healthy);
    }
}
