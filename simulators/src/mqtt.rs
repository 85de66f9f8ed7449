//! MQTT sender: QoS 1 publishes on `stations/<id>/readings`, counted as
//! acknowledged when their PUBACK arrives.
//!
//! rumqttc names a publish only by the packet id it assigns inside its event
//! loop, announced as `Outgoing::Publish(pkid)` in the order publishes were
//! handed over. So one task hands publishes over and queues what it sent
//! ([`Tracker::queued`]); the event-loop task moves each to
//! [`Tracker::in_flight`] under its packet id, and out again on PUBACK. A
//! semaphore bounds the publishes not yet acknowledged.
//!
//! At least once: with a clean session, rumqttc drops the publishes it still
//! held when the connection broke. The event-loop task takes them out of the
//! event loop before that can happen and puts them back once reconnected.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::SimError;
use crate::frames::{mqtt_payload, mqtt_topic};
use crate::model::{Fleet, Transmission};
use crate::pacing::Backoff;
use crate::stats::Counters;

/// Broker, credentials and flow control of the MQTT senders.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// `mqtt://host:port` (plain TCP).
    pub url: String,
    pub user: String,
    pub password: String,
    /// Client id prefix; connection `i` is `<prefix>-<i>`. Unique per
    /// simulator process so that two simulators never take each other's
    /// session.
    pub client_id: String,
    /// Publishes not yet acknowledged, per connection.
    pub inflight: u16,
    /// MQTT connections shared by the MQTT stations.
    pub connections: usize,
    pub keep_alive: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        MqttConfig {
            url: "mqtt://127.0.0.1:11883".into(),
            user: "station-demo".into(),
            password: "demo-secret".into(),
            client_id: format!("quantrac-sim-{}-{:04x}", std::process::id(), nanos & 0xffff),
            inflight: 100,
            connections: 1,
            keep_alive: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Host and port of an `mqtt://host:port` URL (port 1883 when absent).
pub fn broker_address(url: &str) -> Result<(String, u16), SimError> {
    let bad = |why: &str| SimError::Config(format!("MQTT url {url:?}: {why}"));
    let rest = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => rest,
        Some(_) => return Err(bad("only mqtt:// (plain TCP) is supported")),
        None => url,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => {
            (host, port.parse::<u16>().map_err(|_| bad("bad port"))?)
        }
        _ => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_owned(), port))
}

/// A publish handed to rumqttc and not yet acknowledged.
#[derive(Debug)]
struct Sent {
    readings: u64,
    /// Returned to the semaphore on PUBACK.
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct Tracker {
    /// Handed over, packet id not yet known, in hand-over order.
    queued: VecDeque<Sent>,
    /// Written under a packet id, waiting for PUBACK.
    in_flight: HashMap<u16, Sent>,
}

impl Tracker {
    fn len(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One MQTT connection's sender.
pub(crate) struct MqttLink {
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) config: Arc<MqttConfig>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) index: usize,
}

impl MqttLink {
    /// Publishes what `items` yields until it closes and everything is
    /// acknowledged, or until `shutdown`, after which unacknowledged
    /// publishes get `drain` to be acknowledged.
    pub(crate) async fn run(
        self,
        mut items: mpsc::Receiver<Transmission>,
        shutdown: CancellationToken,
        drain: Duration,
    ) {
        let (host, port) = match broker_address(&self.config.url) {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "MQTT sender not started");
                return;
            }
        };
        let client_id = format!("{}-{}", self.config.client_id, self.index);
        let inflight = self.config.inflight.max(1);
        let mut options = MqttOptions::new(client_id.clone(), host, port);
        options
            .set_credentials(self.config.user.clone(), self.config.password.clone())
            .set_keep_alive(self.config.keep_alive)
            .set_inflight(inflight)
            .set_clean_session(true);
        // The semaphore keeps at most `inflight` requests anywhere in
        // rumqttc, so its channel never blocks a publish.
        let (client, mut eventloop) = AsyncClient::new(options, usize::from(inflight));
        let permits = Arc::new(Semaphore::new(usize::from(inflight)));
        let tracker = Mutex::new(Tracker::default());
        let finished = CancellationToken::new();

        let publisher = async {
            loop {
                let permit = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let tx = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    tx = items.recv() => match tx {
                        Some(tx) => tx,
                        None => break,
                    },
                };
                let station = &self.fleet.stations()[tx.station];
                let payload = mqtt_payload(station, &tx.sample);
                // Queued before the hand-over: the event loop may announce
                // its packet id before `publish` returns.
                lock(&tracker).queued.push_back(Sent {
                    readings: tx.sample.values.len() as u64,
                    _permit: permit,
                });
                if client
                    .publish(mqtt_topic(station), QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    lock(&tracker).queued.pop_back();
                    break;
                }
            }
            // Every permit back means every publish acknowledged.
            let all = u32::from(inflight);
            if !shutdown.is_cancelled() {
                tokio::select! {
                    _ = permits.acquire_many(all) => {
                        finished.cancel();
                        return;
                    }
                    () = shutdown.cancelled() => {}
                }
            }
            let _ = timeout(drain, permits.acquire_many(all)).await;
            finished.cancel();
        };

        let poller = async {
            let mut backoff = Backoff::new(
                self.config.backoff_initial,
                self.config.backoff_max,
                self.index as u64,
            );
            // Publishes taken out of the event loop when the connection broke.
            let mut held = VecDeque::new();
            loop {
                let event = tokio::select! {
                    biased;
                    () = finished.cancelled() => break,
                    e = eventloop.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        info!(client_id, replay = held.len(), "MQTT connected");
                        eventloop.pending.append(&mut held);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let mut t = lock(&tracker);
                        if t.in_flight.contains_key(&pkid) {
                            self.counters.sent(1, true);
                        } else if let Some(sent) = t.queued.pop_front() {
                            t.in_flight.insert(pkid, sent);
                            self.counters.sent(1, false);
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        if let Some(sent) = lock(&tracker).in_flight.remove(&ack.pkid) {
                            self.counters.acked(sent.readings);
                            backoff.reset();
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.counters.error();
                        warn!(client_id, error = %e, unacknowledged = lock(&tracker).len(), "MQTT connection lost");
                        // A clean session would drop these on reconnect.
                        held.append(&mut eventloop.pending);
                        tokio::select! {
                            () = sleep(backoff.next_delay()) => {}
                            () = finished.cancelled() => break,
                        }
                    }
                }
            }
        };

        tokio::join!(publisher, poller);
        let left = lock(&tracker).len();
        if left > 0 {
            info!(
                client_id,
                unacknowledged = left,
                "stopped with unacknowledged publishes"
            );
            self.counters.abandoned(left as u64);
        }
        debug!(client_id, "MQTT sender done");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() -> Result<(), SimError> {
        assert_eq!(
            broker_address("mqtt://127.0.0.1:11883")?,
            ("127.0.0.1".into(), 11883)
        );
        assert_eq!(broker_address("tcp://broker/")?, ("broker".into(), 1883));
        assert_eq!(
            broker_address("localhost:1884")?,
            ("localhost".into(), 1884)
        );
        assert_eq!(broker_address("mqtt://[::1]:1883")?, ("::1".into(), 1883));
        assert!(broker_address("mqtts://broker:8883").is_err());
        assert!(broker_address("mqtt://broker:x").is_err());
        assert!(broker_address("mqtt://:1883").is_err());
        Ok(())
    }
}
