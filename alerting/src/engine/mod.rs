//! The rules engine: pure, no I/O. Readings go in through [`Engine::observe`]
//! (event time = `measured_at`), the wall clock through [`Engine::tick`], and
//! alert events come out. The service around it consumes `readings.valid`,
//! persists the events, publishes them and feeds the officers' actions back
//! through [`Engine::acknowledge`] and [`Engine::resolve`].
//!
//! # Event time, replays and restarts
//!
//! Every series (station, parameter) keeps the newest measurement time seen
//! and the set of measurement times seen within
//! [`EngineSettings::max_lateness`](crate::rules::EngineSettings) of it:
//! - a reading already seen (a replayed topic, a redelivery) changes nothing
//!   and raises nothing;
//! - a reading newer than the newest (live data, or a logger's backlog after
//!   an outage, which arrives in measurement order) is judged by every rule;
//! - a reading older than the newest but not seen (a backlog interleaved with
//!   live data) is judged by the value rules (limit, early warning) and the
//!   window averages by its own measurement time; the sequence rules (sudden
//!   change, flatline, instrument status) follow the in-order stream only;
//! - a reading older than the newest by more than `max_lateness` is too late
//!   and dropped (counted in [`EngineStats::too_late`]).
//!
//! Alert keys come from the data (see [`AlertKey`]); a key the engine knows
//! (open, acknowledged or resolved) is never opened again, and one condition
//! on one series is one incident while it lasts: a breach at a time an
//! existing incident covers joins it. After a restart the service calls
//! [`Engine::restore`] with the alerts from the database, then
//! [`Engine::warm_up`] with the recent readings from the database in
//! measurement order (at least [`RulesConfig::warm_up_horizon`]), then
//! resumes the topic: warm-up rebuilds windows, last values and incidents
//! without opening alerts, and the replayed tail is recognised as seen.
//!
//! Warm-up opens nothing: a condition its readings show that no restored
//! alert covers is tracked as already handled until it clears. So warm up
//! only with readings the engine had judged before it stopped; readings it
//! may not have judged (stored by the processor, but their alert events not
//! yet persisted) should go through [`Engine::observe`] instead, which opens
//! only what no restored alert covers. Which readings those are is the
//! service's record, not the engine's (single-node mode: `alert_pending`;
//! Kafka: the committed offsets).
//!
//! Memory per series: one timestamp per reading within `max_lateness` (the
//! seen set), the window buckets within `max_lateness`, the previous valid
//! value, the current flatline run and status episode, and a few recent
//! incidents per rule.
//!
//! # The rules, precisely
//!
//! Only readings with `qc_flag == "valid"` (and a finite value) are judged
//! against limits, averaged, checked for sudden changes and flatlines.
//! Readings flagged `calibrating`, `maintenance` or `device_error` feed the
//! instrument-status rule; every reading, whatever its flag, counts as data
//! for the gap rule. The permit limit is
//! [`Station::limit_at`](quantrac_proto::registry::Station::limit_at) on
//! the local (UTC+7 by default) date of the measurement (of the window start
//! for averages). A station or parameter the registry does not know, or with
//! no limit, gets no limit rules; gap, status, flatline and sudden change
//! still apply (interval from the registry, else 5 minutes).
//!
//! - **limit exceeded**: value above Cmax or below the minimum (strictly;
//!   a value equal to Cmax complies). Resolves when a later valid value is
//!   back inside by the hysteresis margin (see
//!   [`ParamRules::hysteresis`](crate::rules::ParamRules::hysteresis)).
//! - **average exceeded**: each configured window (aligned to local
//!   midnight) is judged when it closes: a reading of the series at or after
//!   its end, or `tick` past its end + `grace`. It counts only with at least
//!   `completeness × window / interval` valid readings (and at least one).
//!   One alert per window (key = bucket start + length); a later complete
//!   window whose average is back inside by the margin resolves the earlier
//!   ones. Late readings into a judged window (kept for `max_lateness`)
//!   re-judge it.
//! - **early warning**: a value, or a window average, past the warning
//!   threshold but not past the limit; resolves like the limit rule against
//!   the threshold.
//! - **sudden change**: `v − min(valid values of the hour before v)`
//!   strictly above `max_rise_per_hour` (a rise within an hour, not two
//!   consecutive values' difference scaled to an hour, which turns an
//!   analyser's noise into alerts); resolves when the rise falls below
//!   `max_rise_per_hour × (1 − h)`.
//! - **data gap**: `now − max(newest measured_at, wall clock it was
//!   observed)` strictly longer than `max(k × interval, gap.min)`, for the
//!   station as a whole (parameter `""`, interval = its shortest) or, while
//!   the station still sends, for one parameter. Registry stations never
//!   heard from count from the engine's first `tick`/`observe`, and so do
//!   series only warmed up after a restart (the topic's tail gets time to
//!   arrive). Resolves on the first reading measured after the silence
//!   began.
//! - **instrument status**: an episode of calibrating/maintenance/error
//!   readings lasting strictly longer than `max_duration` (event time;
//!   resolves on the next measuring reading); more than `max_per_day`
//!   episodes starting in one local day (one alert per day, resolves when a
//!   reading of a later day arrives).
//! - **flatline**: `count` consecutive valid readings within `tolerance` of
//!   each other (key = first of the run); resolves when a value departs
//!   from the stuck value by more than `max(tolerance, h × |value|)`.
//!
//! Open alerts that nobody acknowledged are re-notified by `tick` every
//! `renotify_every`. An alert resolved by hand stays resolved; its incident
//! is remembered until the condition clears, so the same ongoing condition
//! does not reopen it.
//!
//! # Where things are
//!
//! - here: [`Engine`] and its public API, `tick` (and its re-notification);
//! - `reading`: one reading through the engine: usable, seen or new, in
//!   order or late, then the rules of its series in order;
//! - `series`: what is remembered per series and per station: the seen set
//!   (kept in `seen`), the window buckets, rules and registry refreshed on
//!   reload, pruning past the lateness horizon;
//! - `incidents`: findings, incidents and the book of alerts (open, worsen,
//!   breach, clear, auto-resolve, window alerts);
//! - `limits`: the permit bounds, limit exceeded and early warning on a
//!   value, and the window averages judged when a window closes;
//! - `sequence`: sudden change and flatline;
//! - `instrument`: instrument status (episodes too long, too many a day);
//! - `gap`: the data gap;
//! - `certificates`: instruments whose calibration or inspection ran out;
//! - `time`: time arithmetic, the local calendar, times and numbers in
//!   messages.

mod certificates;
mod gap;
mod incidents;
mod instrument;
mod limits;
mod reading;
mod seen;
mod sequence;
mod series;
mod time;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use quantrac_proto::registry::Registry;
use quantrac_proto::v1::StoredReading;
use thiserror::Error;

use self::incidents::{Book, Incident};
use self::series::{Series, StationTrack};
use self::time::{local_date, since};
use crate::alert::{AlertEvent, AlertKey, AlertRecord, Change, RuleKind, State};
use crate::rules::RulesConfig;

/// Why an officer's action was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("no alert with id {0:?}")]
    NotFound(String),
    #[error("alert {id} is {state}: cannot {action} it")]
    InvalidTransition {
        id: String,
        state: State,
        action: &'static str,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Readings judged (observed or warmed up, not duplicates).
    pub readings: u64,
    /// Readings already seen (replay, redelivery): ignored.
    pub duplicates: u64,
    /// Of those, readings with a value different from the one judged for
    /// their time: raised as `conflicting_value`.
    pub conflicts: u64,
    /// Readings older than their series' newest by more than `max_lateness`.
    pub too_late: u64,
    /// Readings measured more than `max_future` after the wall clock.
    pub from_future: u64,
    /// Readings without a usable measurement time.
    pub unusable: u64,
}

/// Observe mode: live (events out, wall clock known) or warm-up (no alert
/// opened; changes to restored alerts are queued for the next call).
#[derive(Debug, Clone, Copy)]
enum Mode {
    Live(DateTime<Utc>),
    WarmUp,
}

impl Mode {
    fn now_or(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Mode::Live(now) => now,
            Mode::WarmUp => t,
        }
    }
}

/// The alerting rules engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    rules: RulesConfig,
    registry: Arc<Registry>,
    generation: u64,
    series: BTreeMap<(String, String), Series>,
    stations: BTreeMap<String, StationTrack>,
    book: Book,
    started_at: Option<DateTime<Utc>>,
    stats: EngineStats,
    /// With several instances: the stations this one watches for silence
    /// (see `ownership`). `None`: every station (one instance, single node).
    owner: Option<Arc<crate::ownership::Ownership>>,
}

impl Engine {
    pub fn new(rules: RulesConfig, registry: Arc<Registry>) -> Self {
        let mut engine = Engine {
            rules,
            registry,
            generation: 0,
            series: BTreeMap::new(),
            stations: BTreeMap::new(),
            book: Book::default(),
            started_at: None,
            stats: EngineStats::default(),
            owner: None,
        };
        engine.sync_registry();
        engine
    }

    /// An engine with the same rules and registry and nothing else: what
    /// a start builds before restoring from the database.
    pub fn fresh(&self) -> Self {
        Engine::new(self.rules.clone(), Arc::clone(&self.registry))
    }

    /// Watch for silence only the stations `owner` says are this
    /// instance's.
    pub fn set_owner(&mut self, owner: Arc<crate::ownership::Ownership>) {
        self.owner = Some(owner);
    }

    /// New rules; every window, incident and alert is kept. Windows of a
    /// length no longer configured are dropped, new lengths start empty.
    pub fn reload(&mut self, rules: RulesConfig) {
        self.rules = rules;
        self.generation += 1;
    }

    /// A new registry (limits, intervals, stations); state is kept.
    pub fn set_registry(&mut self, registry: Arc<Registry>) {
        self.registry = registry;
        self.generation += 1;
        self.sync_registry();
    }

    pub fn rules(&self) -> &RulesConfig {
        &self.rules
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Alerts that are open or acknowledged.
    pub fn open_alerts(&self) -> impl Iterator<Item = &AlertRecord> {
        self.book.alerts.values().filter(|a| a.is_active())
    }

    /// Every alert the engine remembers (resolved ones until they are older
    /// than the lateness horizon).
    pub fn alerts(&self) -> impl Iterator<Item = &AlertRecord> {
        self.book.alerts.values()
    }

    /// Per station, the newest measurement time the engine has judged
    /// (observed or warmed up).
    pub fn watermarks(&self) -> impl Iterator<Item = (&str, DateTime<Utc>)> {
        self.stations
            .iter()
            .filter_map(|(id, t)| Some((id.as_str(), t.newest?)))
    }

    pub fn alert(&self, id: &str) -> Option<&AlertRecord> {
        self.book.alerts.get(&AlertKey::parse(id)?)
    }

    /// Evaluates one stored reading (event time = `measured_at`). `now` is
    /// the wall clock: notification times, the future-timestamp guard and
    /// the data-gap arrival time.
    pub fn observe(&mut self, reading: &StoredReading, now: DateTime<Utc>) -> Vec<AlertEvent> {
        self.started_at.get_or_insert(now);
        let mut out = self.take_pending(now);
        self.process(reading, Mode::Live(now), &mut out);
        out
    }

    /// Rebuilds state from a reading already judged before a restart
    /// (windows, last values, incidents, seen set) without opening alerts.
    /// Feed the recent readings per series in the order they were judged
    /// (the topic's order) or in `measured_at` order, after
    /// [`Engine::restore`]. A restored alert the readings show cleared is
    /// resolved, and that event comes out of the next `observe` or `tick`.
    pub fn warm_up(&mut self, reading: &StoredReading) {
        let mut sink = Vec::new();
        self.process(reading, Mode::WarmUp, &mut sink);
    }

    /// Restart: the alerts from the database. Pass the open and acknowledged
    /// ones, and preferably the resolved ones within
    /// [`RulesConfig::warm_up_horizon`] too: a known key is never opened
    /// again, and an active one carries its incident on.
    pub fn restore(&mut self, records: Vec<AlertRecord>) {
        for rec in records {
            let key = rec.key.clone();
            if key.window_len.is_none() {
                let start = key.window_start;
                let last = rec.window_end.unwrap_or(start).max(start);
                let incident = Incident {
                    key: key.clone(),
                    last,
                    ended: (!rec.is_active()).then_some(last),
                    worst: (rec.observed_value - rec.limit_value).abs(),
                    reference: rec.observed_value,
                };
                if key.parameter.is_empty() {
                    let track = self.station_track(&key.station_id);
                    track.gap.retain(|i| i.key != key);
                    track.gap.push(incident);
                } else {
                    let series = self.series_mut(&key.station_id, &key.parameter);
                    let list = series.state.incidents.entry(key.rule).or_default();
                    list.retain(|i| i.key != key);
                    list.push(incident);
                }
            } else if key.rule == RuleKind::InstrumentStatus && !key.parameter.is_empty() {
                let offset = self.rules.engine().utc_offset;
                let day = local_date(key.window_start, offset);
                let series = self.series_mut(&key.station_id, &key.parameter);
                series.state.day_claimed = series.state.day_claimed.max(Some(day));
            }
            self.book.alerts.insert(key, rec);
        }
    }

    /// An officer acknowledges an open alert.
    pub fn acknowledge(
        &mut self,
        alert_id: &str,
        officer: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<AlertEvent, EngineError> {
        let rec = self.record_mut(alert_id)?;
        rec.acknowledge(officer, note, now)
            .map_err(|(state, action)| EngineError::InvalidTransition {
                id: alert_id.to_owned(),
                state,
                action,
            })?;
        Ok(AlertEvent {
            change: Change::Acknowledged,
            alert: rec.clone(),
            at: now,
        })
    }

    /// An officer resolves an open or acknowledged alert. The incident stays
    /// remembered until its condition clears, so it does not reopen.
    pub fn resolve(
        &mut self,
        alert_id: &str,
        officer: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<AlertEvent, EngineError> {
        let rec = self.record_mut(alert_id)?;
        rec.resolve(Some(officer), note, now)
            .map_err(|(state, action)| EngineError::InvalidTransition {
                id: alert_id.to_owned(),
                state,
                action,
            })?;
        Ok(AlertEvent {
            change: Change::Resolved {
                by: Some(officer.to_owned()),
            },
            alert: rec.clone(),
            at: now,
        })
    }

    /// An officer hands an active alert to `assignee`.
    pub fn assign(
        &mut self,
        alert_id: &str,
        officer: &str,
        assignee: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<AlertEvent, EngineError> {
        let rec = self.record_mut(alert_id)?;
        rec.assign(assignee, note, now).map_err(|(state, action)| {
            EngineError::InvalidTransition {
                id: alert_id.to_owned(),
                state,
                action,
            }
        })?;
        Ok(AlertEvent {
            change: Change::Assigned {
                by: officer.to_owned(),
            },
            alert: rec.clone(),
            at: now,
        })
    }

    /// An officer's comment on an active alert.
    pub fn comment(
        &mut self,
        alert_id: &str,
        officer: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<AlertEvent, EngineError> {
        let rec = self.record_mut(alert_id)?;
        rec.comment(text, now)
            .map_err(|(state, action)| EngineError::InvalidTransition {
                id: alert_id.to_owned(),
                state,
                action,
            })?;
        Ok(AlertEvent {
            change: Change::Commented {
                by: officer.to_owned(),
            },
            alert: rec.clone(),
            at: now,
        })
    }

    /// Wall-clock work: windows past their end + grace, data gaps,
    /// re-notifications, and forgetting what is older than the horizon.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<AlertEvent> {
        let started = *self.started_at.get_or_insert(now);
        let mut out = self.take_pending(now);
        let settings = self.rules.engine().clone();

        // Windows nobody closed with a later reading.
        self.close_due_windows(now, &settings, &mut out);

        // Data gaps: the whole station first, else each parameter.
        self.data_gaps(now, started, &settings, &mut out);

        // Instruments whose calibration or inspection ran out.
        self.expired_instruments(now, settings.utc_offset, &mut out);

        // Re-notification of open, unacknowledged alerts.
        self.renotify(now, &mut out);

        self.prune();
        out
    }

    // -----------------------------------------------------------------------

    /// `tick`: open alerts nobody acknowledged, every `renotify_every`.
    fn renotify(&mut self, now: DateTime<Utc>, out: &mut Vec<AlertEvent>) {
        let Engine {
            rules,
            series,
            stations,
            book,
            ..
        } = self;
        for rec in book.alerts.values_mut() {
            if rec.state != State::Open {
                continue;
            }
            let every = if rec.key.parameter.is_empty() {
                stations
                    .get(&rec.key.station_id)
                    .map(|t| t.rules.renotify_every)
            } else {
                series
                    .get(&(rec.key.station_id.clone(), rec.key.parameter.clone()))
                    .map(|s| s.info.rules.renotify_every)
            }
            .unwrap_or_else(|| {
                rules
                    .for_reading(&rec.key.station_id, &rec.key.parameter)
                    .renotify_every
            });
            if !every.is_zero() && since(now, rec.last_notified_at) >= every {
                rec.last_notified_at = now;
                out.push(AlertEvent {
                    change: Change::Renotified,
                    alert: rec.clone(),
                    at: now,
                });
            }
        }
    }

    fn take_pending(&mut self, now: DateTime<Utc>) -> Vec<AlertEvent> {
        self.book
            .pending
            .drain(..)
            .map(|mut e| {
                e.at = now;
                e
            })
            .collect()
    }

    /// Whether officers' actions on `alert_id` take effect here: this
    /// engine holds the alert and judges its station (with several
    /// instances, the one owning the station's partition).
    pub fn handles(&self, alert_id: &str) -> bool {
        AlertKey::parse(alert_id)
            .is_some_and(|k| self.book.alerts.contains_key(&k) && self.watches(&k.station_id))
    }

    /// Whether this engine judges `station` (with several instances, the
    /// one owning the station's partition; alone, every station).
    fn watches(&self, station: &str) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|o| o.watching_since(station).is_some())
    }

    fn record_mut(&mut self, alert_id: &str) -> Result<&mut AlertRecord, EngineError> {
        AlertKey::parse(alert_id)
            .and_then(|k| self.book.alerts.get_mut(&k))
            .ok_or_else(|| EngineError::NotFound(alert_id.to_owned()))
    }
}
