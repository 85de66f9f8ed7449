//! A simulator run: one driver task per station paces its samples and hands
//! them to its connection's sender through a bounded channel, so a slow
//! ingest slows the drivers down instead of growing a queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::SimError;
use crate::frames::TcpFormat;
use crate::model::{Fleet, Transmission, align};
use crate::mqtt::{MqttConfig, MqttLink, broker_address};
use crate::pacing::{Pacer, Pacing};
use crate::stats::{Counters, Stats};
use crate::tcp::{TcpConfig, TcpLink};

/// How a run sends the fleet's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Simulated time of the first slot (rounded down to the interval).
    pub start: DateTime<Utc>,
    /// Slots per station; `None` runs until shutdown.
    pub slots: Option<u64>,
    pub pacing: Pacing,
    pub mqtt: MqttConfig,
    pub tcp: TcpConfig,
    /// After shutdown, how long samples already sent may still be answered.
    pub drain_timeout: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            start: Utc::now(),
            slots: None,
            pacing: Pacing::Realtime { speedup: 1.0 },
            mqtt: MqttConfig::default(),
            tcp: TcpConfig::default(),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Where the simulated clock starts when the user does not say: so that the
/// last of `slots` readings falls near the wall-clock end of the run. In
/// real time at speedup 1 that is now; with faster pacing the clock starts
/// in the past and catches up (`now - slots * interval` when unpaced).
pub fn default_start(
    now: DateTime<Utc>,
    interval_secs: u32,
    slots: Option<u64>,
    pacing: Pacing,
) -> DateTime<Utc> {
    let lead = match pacing {
        Pacing::Realtime { speedup } => (1.0 - 1.0 / speedup).max(0.0),
        Pacing::Rate { .. } | Pacing::Unlimited => 1.0,
    };
    let back = slots.unwrap_or(0) as f64 * f64::from(interval_secs) * lead;
    let back = TimeDelta::try_seconds(back as i64).unwrap_or(TimeDelta::zero());
    align(now.checked_sub_signed(back).unwrap_or(now), interval_secs)
}

/// A configured run, ready to start.
#[derive(Debug)]
pub struct Simulator {
    fleet: Arc<Fleet>,
    config: RunConfig,
    counters: Arc<Counters>,
}

impl Simulator {
    pub fn new(fleet: Arc<Fleet>, mut config: RunConfig) -> Result<Self, SimError> {
        config.pacing.validate()?;
        if config.tcp.window == 0 || config.tcp.stations_per_connection == 0 {
            return Err(SimError::Config(
                "the TCP window and stations per connection must be at least 1".into(),
            ));
        }
        if config.mqtt.inflight == 0 || config.mqtt.connections == 0 {
            return Err(SimError::Config(
                "MQTT inflight and connections must be at least 1".into(),
            ));
        }
        if fleet.stations().iter().any(|s| s.protocol.is_mqtt()) {
            broker_address(&config.mqtt.url)?;
        }
        config.start = fleet.align(config.start);
        Ok(Simulator {
            fleet,
            config,
            counters: Arc::new(Counters::default()),
        })
    }

    /// Live counters, for progress reports while [`Simulator::run`] goes on.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// What a bounded run sends, in the order of
    /// [`Fleet::samples_between`]; `None` for a run until shutdown.
    pub fn plan(&self) -> Option<Vec<Transmission>> {
        let slots = i32::try_from(self.config.slots?).ok()?;
        let end = self
            .config
            .start
            .checked_add_signed(self.fleet.interval().checked_mul(slots)?)?;
        Some(self.fleet.samples_between(self.config.start, end))
    }

    /// Sends until every slot is sent and answered, or until `shutdown`
    /// (then unanswered samples get [`RunConfig::drain_timeout`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<Stats, SimError> {
        let pacer = Arc::new(Pacer::new(
            self.config.pacing,
            self.fleet.config().interval_secs,
        ));
        let drain = self.config.drain_timeout;
        // A failed task stops the others; the caller's token is left alone.
        let stop = shutdown.child_token();
        let mut tasks = JoinSet::new();
        let mut drivers = JoinSet::new();

        let mut groups: Vec<(Link, Vec<usize>)> = Vec::new();
        let mqtt: Vec<usize> = self
            .fleet
            .stations()
            .iter()
            .filter(|s| s.protocol.is_mqtt())
            .map(|s| s.index)
            .collect();
        let connections = self.config.mqtt.connections.min(mqtt.len());
        for c in 0..connections {
            let stations = mqtt.iter().copied().skip(c).step_by(connections).collect();
            groups.push((Link::Mqtt(c), stations));
        }
        let mut tcp: BTreeMap<TcpFormat, Vec<usize>> = BTreeMap::new();
        for s in self.fleet.stations() {
            if let Some(format) = TcpFormat::of(s.protocol) {
                tcp.entry(format).or_default().push(s.index);
            }
        }
        for (format, stations) in tcp {
            for chunk in stations.chunks(self.config.tcp.stations_per_connection) {
                groups.push((Link::Tcp(format), chunk.to_vec()));
            }
        }

        let mqtt_config = Arc::new(self.config.mqtt.clone());
        let tcp_config = Arc::new(self.config.tcp.clone());
        info!(
            stations = self.fleet.stations().len(),
            connections = groups.len(),
            start = %self.config.start,
            slots = ?self.config.slots,
            pacing = ?self.config.pacing,
            "simulator starting"
        );
        for (link, stations) in groups {
            let capacity = match link {
                Link::Mqtt(_) => usize::from(self.config.mqtt.inflight),
                Link::Tcp(_) => self.config.tcp.window,
            };
            let (tx, rx) = mpsc::channel(capacity);
            match link {
                Link::Mqtt(index) => {
                    let sender = MqttLink {
                        fleet: Arc::clone(&self.fleet),
                        config: Arc::clone(&mqtt_config),
                        counters: Arc::clone(&self.counters),
                        index,
                    };
                    tasks.spawn(sender.run(rx, stop.clone(), drain));
                }
                Link::Tcp(format) => {
                    let first = &self.fleet.stations()[stations[0]];
                    let name = match stations.len() {
                        1 => first.id.clone(),
                        n => format!("{}+{}", first.id, n - 1),
                    };
                    let sender = TcpLink {
                        fleet: Arc::clone(&self.fleet),
                        format,
                        config: Arc::clone(&tcp_config),
                        counters: Arc::clone(&self.counters),
                        name,
                        stations: stations
                            .iter()
                            .map(|&i| self.fleet.stations()[i].id.clone())
                            .collect(),
                        jitter_key: first.phase().to_bits(),
                    };
                    tasks.spawn(sender.run(rx, stop.clone(), drain));
                }
            }
            for station in stations {
                let driver = Driver {
                    fleet: Arc::clone(&self.fleet),
                    station,
                    start: self.config.start,
                    slots: self.config.slots,
                    pacer: Arc::clone(&pacer),
                };
                drivers.spawn(driver.run(tx.clone(), stop.clone()));
            }
        }

        let mut failure = None;
        while let Some(joined) = drivers.join_next().await {
            if let Err(e) = joined {
                error!(error = %e, "station driver failed; stopping the run");
                stop.cancel();
                failure.get_or_insert(e);
            }
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                error!(error = %e, "sender failed; stopping the run");
                stop.cancel();
                failure.get_or_insert(e);
            }
        }
        match failure {
            Some(e) => Err(SimError::Task(e)),
            None => Ok(self.counters.snapshot()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Mqtt(usize),
    Tcp(TcpFormat),
}

/// Paces one station's slots and hands its samples to its sender.
struct Driver {
    fleet: Arc<Fleet>,
    station: usize,
    start: DateTime<Utc>,
    slots: Option<u64>,
    pacer: Arc<Pacer>,
}

impl Driver {
    async fn run(self, out: mpsc::Sender<Transmission>, stop: CancellationToken) {
        let station = &self.fleet.stations()[self.station];
        let phase = station.phase();
        let step = self.fleet.interval();
        let mut at = self.start;
        let mut slot = 0u64;
        while self.slots.is_none_or(|n| slot < n) {
            let items = station.sends_at(at, self.start);
            if items.is_empty() {
                // A long silence must not hog the worker thread.
                tokio::task::yield_now().await;
            } else {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = self.pacer.slot(slot, phase) => {}
                }
                for tx in items {
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => return,
                        () = self.pacer.sample() => {}
                    }
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => return,
                        sent = out.send(tx) => if sent.is_err() { return },
                    }
                }
            }
            slot += 1;
            let Some(next) = at.checked_add_signed(step) else {
                return;
            };
            at = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn default_start_ends_near_now() {
        let now = Utc
            .with_ymd_and_hms(2025, 1, 15, 10, 37, 12)
            .single()
            .unwrap_or_default();
        let at = |h, m| {
            Utc.with_ymd_and_hms(2025, 1, 15, h, m, 0)
                .single()
                .unwrap_or_default()
        };
        assert_eq!(
            default_start(now, 300, Some(12), Pacing::Unlimited),
            at(9, 35)
        );
        assert_eq!(
            default_start(now, 300, Some(12), Pacing::Rate { per_second: 5.0 }),
            at(9, 35)
        );
        assert_eq!(
            default_start(now, 300, Some(12), Pacing::Realtime { speedup: 1.0 }),
            at(10, 35)
        );
        assert_eq!(
            default_start(now, 300, Some(12), Pacing::Realtime { speedup: 2.0 }),
            at(10, 5)
        );
        assert_eq!(default_start(now, 300, None, Pacing::Unlimited), at(10, 35));
    }
}
