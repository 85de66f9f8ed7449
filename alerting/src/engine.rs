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
//! only what no restored alert covers. [`Engine::watermarks`] gives, per
//! station, the newest measurement time judged: persisted with the alert
//! events, it is the line between the two.
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
//! [`Station::limit_at`](quantrac_processor::registry::Station::limit_at) on
//! the local (UTC+7 by default) date of the measurement (of the window start
//! for averages). A station or parameter the registry does not know, or with
//! no limit, gets no limit rules; gap, status, flatline and sudden change
//! still apply (interval from the registry, else 5 minutes).
//!
//! - **limit exceeded**: value above Cmax or below the minimum (strictly;
//!   a value equal to Cmax complies). Resolves when a later valid value is
//!   back inside by the hysteresis margin (see [`ParamRules::hysteresis`]).
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
//! - **sudden change**: `(v − v_prev) / hours` between consecutive valid
//!   readings strictly above `max_rise_per_hour`; resolves when the rate
//!   falls below `max_rise_per_hour × (1 − h)`.
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

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeDelta, Utc};
use quantrac_processor::registry::{PermitLimit, Registry};
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::StoredReading;
use thiserror::Error;

use crate::alert::{AlertEvent, AlertKey, AlertRecord, Change, RuleKind, State, format_len};
use crate::rules::{DEFAULT_INTERVAL, EngineSettings, ParamRules, RulesConfig};

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
    /// Readings older than their series' newest by more than `max_lateness`.
    pub too_late: u64,
    /// Readings measured more than `max_future` after the wall clock.
    pub from_future: u64,
    /// Readings without a usable measurement time.
    pub unusable: u64,
}

const DAY: Duration = Duration::from_secs(86_400);
/// Incidents kept per series and rule beyond the live ones (late joins).
const MAX_INCIDENTS: usize = 16;

fn td(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_sub_signed(td(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(td(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `a − b` as a std duration, zero when negative.
fn since(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (a - b).to_std().unwrap_or(Duration::ZERO)
}

fn minutes(d: Duration) -> f64 {
    d.as_secs_f64() / 60.0
}

/// Start of the `len` bucket holding `t`, buckets aligned to local midnight.
fn bucket_start(t: DateTime<Utc>, len: Duration, offset: FixedOffset) -> DateTime<Utc> {
    let len = i64::try_from(len.as_secs()).unwrap_or(86_400).max(1);
    let off = i64::from(offset.local_minus_utc());
    let local = t.timestamp() + off;
    let start = local - local.rem_euclid(len) - off;
    DateTime::from_timestamp(start, 0).unwrap_or(t)
}

fn local_date(t: DateTime<Utc>, offset: FixedOffset) -> NaiveDate {
    t.with_timezone(&offset).date_naive()
}

fn local_time(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A number for people: at most 3 decimals, no trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
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

/// The permit limit as bounds, with the margins of the hysteresis.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lo: Option<f64>,
    hi: Option<f64>,
}

impl Bounds {
    fn of(limit: &PermitLimit) -> Self {
        Bounds {
            lo: limit.min,
            hi: limit.cmax(),
        }
    }

    /// The bound `v` is strictly past, if any.
    fn crossed(&self, v: f64) -> Option<f64> {
        match (self.lo, self.hi) {
            (_, Some(hi)) if v > hi => Some(hi),
            (Some(lo), _) if v < lo => Some(lo),
            _ => None,
        }
    }

    fn margin(&self, h: f64, bound: f64) -> f64 {
        match (self.lo, self.hi) {
            (Some(lo), Some(hi)) => h * (hi - lo),
            _ => h * bound.abs(),
        }
    }

    /// Back inside by the margin (margins from the permit's own bounds).
    fn cleared(&self, v: f64, h: f64, permit: &Bounds) -> bool {
        self.hi.is_none_or(|hi| v < hi - permit.margin(h, hi))
            && self.lo.is_none_or(|lo| v > lo + permit.margin(h, lo))
    }

    /// The early-warning thresholds for fraction `f`.
    fn warning(&self, f: f64) -> Bounds {
        match (self.lo, self.hi) {
            (Some(lo), Some(hi)) => {
                let m = (1.0 - f) * (hi - lo);
                Bounds {
                    lo: Some(lo + m),
                    hi: Some(hi - m),
                }
            }
            (None, Some(hi)) => Bounds {
                lo: None,
                hi: Some(f * hi),
            },
            (Some(lo), None) => Bounds {
                lo: Some(lo + (1.0 - f) * lo.abs()),
                hi: None,
            },
            (None, None) => *self,
        }
    }
}

/// What a rule found, enough to open or update an alert.
#[derive(Debug)]
struct Finding {
    rule: RuleKind,
    start: DateTime<Utc>,
    /// Event time of the evidence.
    t: DateTime<Utc>,
    observed: f64,
    limit: f64,
    message: String,
    window_end: Option<DateTime<Utc>>,
    opened_at: DateTime<Utc>,
    /// Flatline: the stuck value.
    reference: f64,
}

/// One condition on one series while it lasts.
#[derive(Debug, Clone)]
struct Incident {
    key: AlertKey,
    /// Newest measurement time that showed the condition.
    last: DateTime<Utc>,
    /// Measurement time that cleared it.
    ended: Option<DateTime<Utc>>,
    /// `|observed − limit|` of the worst evidence.
    worst: f64,
    reference: f64,
}

impl Incident {
    /// Whether a breach at `t` belongs to this incident.
    fn covers(&self, t: DateTime<Utc>) -> bool {
        self.key.window_start <= t && self.ended.is_none_or(|e| t < e)
    }
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    sum: f64,
    count: u32,
    judged: bool,
    /// A late reading arrived after it was judged.
    dirty: bool,
    /// An alert for this window was opened, or would have been in warm-up.
    claimed_exceed: bool,
    claimed_warn: bool,
    /// Started before the first reading warm-up gave for its series: its
    /// readings are not all here, so it never opens or resolves anything.
    partial: bool,
}

#[derive(Debug, Clone)]
struct WindowSet {
    len: Duration,
    buckets: BTreeMap<DateTime<Utc>, Bucket>,
}

#[derive(Debug, Clone)]
struct Run {
    start: DateTime<Utc>,
    count: u32,
    min: f64,
    max: f64,
    first: f64,
}

#[derive(Debug, Clone)]
struct Episode {
    start: DateTime<Utc>,
    flag: String,
}

/// What a series is (from the rules and the registry), refreshed on reload.
#[derive(Debug, Clone)]
struct SeriesInfo {
    station: String,
    parameter: String,
    generation: u64,
    rules: ParamRules,
    interval: Duration,
    zone: String,
    unit: String,
}

/// What the engine remembers of a series.
#[derive(Debug, Clone, Default)]
struct SeriesState {
    newest: Option<DateTime<Utc>>,
    last_arrival: Option<DateTime<Utc>>,
    /// Measurement times seen within `max_lateness` of `newest`, sorted.
    seen: VecDeque<DateTime<Utc>>,
    windows: Vec<WindowSet>,
    incidents: BTreeMap<RuleKind, Vec<Incident>>,
    prev_valid: Option<(DateTime<Utc>, f64)>,
    run: Option<Run>,
    episode: Option<Episode>,
    day_episodes: Option<(NaiveDate, u32)>,
    /// The day whose too-many-episodes alert was opened (or suppressed).
    day_claimed: Option<NaiveDate>,
    /// Measurement time of the first reading of the series, when it came
    /// through warm-up: windows that started earlier are partial.
    warm_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Series {
    info: SeriesInfo,
    state: SeriesState,
}

/// Station-wide state: newest data of any parameter, station data gap.
#[derive(Debug, Clone)]
struct StationTrack {
    generation: u64,
    rules: ParamRules,
    /// Shortest interval of its parameters.
    interval: Duration,
    zone: String,
    newest: Option<DateTime<Utc>>,
    last_arrival: Option<DateTime<Utc>>,
    gap: Vec<Incident>,
}

/// Every alert the engine knows, and events queued during warm-up.
#[derive(Debug, Default)]
struct Book {
    alerts: BTreeMap<AlertKey, AlertRecord>,
    pending: Vec<AlertEvent>,
}

impl Book {
    fn emit(&mut self, event: AlertEvent, mode: Mode, out: &mut Vec<AlertEvent>) {
        match mode {
            Mode::Live(_) => out.push(event),
            Mode::WarmUp => self.pending.push(event),
        }
    }

    /// Opens an alert unless its key is known (never twice) or in warm-up
    /// (suppressed: the incident is tracked, no alert is made).
    fn open(
        &mut self,
        key: AlertKey,
        f: Finding,
        info: &SeriesInfo,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.alerts.contains_key(&key) {
            return;
        }
        let Mode::Live(now) = mode else { return };
        let record = AlertRecord {
            severity: info.rules.severity.of(key.rule),
            key,
            state: State::Open,
            observed_value: f.observed,
            limit_value: f.limit,
            message: f.message,
            window_end: f.window_end,
            opened_at: f.opened_at,
            updated_at: now,
            last_notified_at: now,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_by: None,
            note: None,
            industrial_zone: info.zone.clone(),
        };
        out.push(AlertEvent {
            change: Change::Opened,
            alert: record.clone(),
            at: now,
        });
        self.alerts.insert(record.key.clone(), record);
    }

    /// A worse value for an active alert: `Updated`.
    fn worsen(&mut self, key: &AlertKey, f: Finding, mode: Mode, out: &mut Vec<AlertEvent>) {
        let Some(rec) = self.alerts.get_mut(key) else {
            return;
        };
        if !rec.is_active()
            || (f.observed - f.limit).abs() <= (rec.observed_value - rec.limit_value).abs()
        {
            return;
        }
        rec.observed_value = f.observed;
        rec.limit_value = f.limit;
        rec.message = f.message;
        if key.window_len.is_none() {
            rec.window_end = rec.window_end.max(Some(f.t));
        }
        rec.updated_at = mode.now_or(f.t);
        let event = AlertEvent {
            change: Change::Updated,
            alert: rec.clone(),
            at: mode.now_or(f.t),
        };
        self.emit(event, mode, out);
    }

    /// The condition cleared at event time `t`.
    fn auto_resolve(
        &mut self,
        key: &AlertKey,
        t: DateTime<Utc>,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        let Some(rec) = self.alerts.get_mut(key) else {
            return;
        };
        if rec.resolve(None, "", mode.now_or(t)).is_err() {
            return;
        }
        if key.window_len.is_none() {
            rec.window_end = Some(t);
        }
        let event = AlertEvent {
            change: Change::Resolved { by: None },
            alert: rec.clone(),
            at: mode.now_or(t),
        };
        self.emit(event, mode, out);
    }

    /// Active window alerts of `rule` on a series with length `len` whose
    /// window starts before `before`.
    fn active_windows(
        &self,
        rule: RuleKind,
        station: &str,
        parameter: &str,
        len: Duration,
        before: DateTime<Utc>,
    ) -> Vec<AlertKey> {
        let lo = AlertKey {
            rule,
            station_id: station.to_owned(),
            parameter: parameter.to_owned(),
            window_start: DateTime::<Utc>::MIN_UTC,
            window_len: None,
        };
        let hi = AlertKey {
            window_start: before,
            ..lo.clone()
        };
        self.alerts
            .range(lo..hi)
            .filter(|(k, r)| k.window_len == Some(len) && r.is_active())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A breach: joins the incident that covers `f.t`, or starts one (and
    /// opens its alert).
    fn breach(
        &mut self,
        incidents: &mut Vec<Incident>,
        f: Finding,
        info: &SeriesInfo,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        let t = f.t;
        let score = (f.observed - f.limit).abs();
        let covering = incidents
            .iter()
            .enumerate()
            .filter(|(_, i)| i.covers(t))
            .max_by_key(|(_, i)| {
                let active = self.alerts.get(&i.key).is_some_and(AlertRecord::is_active);
                (active, i.key.window_start)
            })
            .map(|(n, _)| n);
        if let Some(n) = covering {
            let inc = &mut incidents[n];
            inc.last = inc.last.max(t);
            if let Some(rec) = self.alerts.get_mut(&inc.key)
                && rec.is_active()
            {
                rec.window_end = rec.window_end.max(Some(t));
            }
            if score > inc.worst {
                inc.worst = score;
                let key = inc.key.clone();
                if matches!(
                    key.rule,
                    RuleKind::LimitExceeded | RuleKind::EarlyWarning | RuleKind::SuddenChange
                ) {
                    self.worsen(&key, f, mode, out);
                }
            }
            return;
        }
        let key = AlertKey {
            rule: f.rule,
            station_id: info.station.clone(),
            parameter: info.parameter.clone(),
            window_start: f.start,
            window_len: None,
        };
        incidents.push(Incident {
            key: key.clone(),
            last: t,
            ended: None,
            worst: score,
            reference: f.reference,
        });
        self.open(key, f, info, mode, out);
    }

    /// The condition is absent at `t`: ends every incident whose last
    /// evidence is older.
    fn clear(
        &mut self,
        incidents: &mut [Incident],
        t: DateTime<Utc>,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        for inc in incidents
            .iter_mut()
            .filter(|i| i.ended.is_none() && i.last < t)
        {
            inc.ended = Some(t);
            self.auto_resolve(&inc.key, t, mode, out);
        }
    }

    /// A window judged: opens (or updates) its alert unless claimed.
    fn window_alert(
        &mut self,
        key: AlertKey,
        f: Finding,
        claimed: &mut bool,
        info: &SeriesInfo,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.alerts.contains_key(&key) {
            *claimed = true;
            self.worsen(&key, f, mode, out);
        } else if !*claimed {
            *claimed = true;
            self.open(key, f, info, mode, out);
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
        };
        engine.sync_registry();
        engine
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
    /// Feed the database's recent readings in `measured_at` order, after
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

    /// Wall-clock work: windows past their end + grace, data gaps,
    /// re-notifications, and forgetting what is older than the horizon.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<AlertEvent> {
        let started = *self.started_at.get_or_insert(now);
        let mut out = self.take_pending(now);
        let mode = Mode::Live(now);
        let generation = self.generation;
        let settings = self.rules.engine().clone();

        let Engine {
            rules,
            registry,
            series,
            stations,
            book,
            ..
        } = self;

        // Windows nobody closed with a later reading.
        for s in series.values_mut() {
            refresh_series(s, generation, rules, registry);
            close_windows(s, book, registry, &settings, Some(now), mode, &mut out);
        }

        // Data gaps: the whole station first, else each parameter.
        for (id, track) in stations.iter_mut() {
            refresh_station(track, id, generation, rules, registry);
            let silent_from = silent_since(track.newest, track.last_arrival, started);
            let threshold = track.rules.gap.threshold(track.interval);
            let station_silent = since(now, silent_from) > threshold;
            let station_gap = station_silent && track.rules.gap.enabled;
            if station_gap {
                let start = track.newest.unwrap_or(started);
                let info = SeriesInfo {
                    station: id.clone(),
                    parameter: String::new(),
                    generation,
                    rules: track.rules.clone(),
                    interval: track.interval,
                    zone: track.zone.clone(),
                    unit: String::new(),
                };
                let f = gap_finding(
                    &info,
                    start,
                    now,
                    silent_from,
                    threshold,
                    settings.utc_offset,
                );
                book.breach(&mut track.gap, f, &info, mode, &mut out);
            }
            if station_gap {
                // One alert for the station, not one per parameter.
                continue;
            }
            let lo = (id.clone(), String::new());
            for (_, s) in series.range_mut(lo..).take_while(|((st, _), _)| st == id) {
                let Series { info, state } = s;
                if !info.rules.gap.enabled {
                    continue;
                }
                let silent_from = silent_since(state.newest, state.last_arrival, started);
                let threshold = info.rules.gap.threshold(info.interval);
                if since(now, silent_from) > threshold {
                    let start = state.newest.unwrap_or(started);
                    let f = gap_finding(
                        info,
                        start,
                        now,
                        silent_from,
                        threshold,
                        settings.utc_offset,
                    );
                    let list = state.incidents.entry(RuleKind::DataGap).or_default();
                    book.breach(list, f, info, mode, &mut out);
                }
            }
        }

        // Re-notification of open, unacknowledged alerts.
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

        self.prune();
        out
    }

    // -----------------------------------------------------------------------

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

    fn record_mut(&mut self, alert_id: &str) -> Result<&mut AlertRecord, EngineError> {
        AlertKey::parse(alert_id)
            .and_then(|k| self.book.alerts.get_mut(&k))
            .ok_or_else(|| EngineError::NotFound(alert_id.to_owned()))
    }

    /// Every registry station and parameter is a series, so that one never
    /// heard from raises a data gap.
    fn sync_registry(&mut self) {
        let registry = Arc::clone(&self.registry);
        for st in registry.stations() {
            self.station_track(&st.id);
            for p in &st.parameters {
                self.series_mut(&st.id, &p.code);
            }
        }
    }

    fn station_track(&mut self, id: &str) -> &mut StationTrack {
        let generation = self.generation;
        let track = self
            .stations
            .entry(id.to_owned())
            .or_insert_with(|| StationTrack {
                generation: u64::MAX,
                rules: ParamRules::default(),
                interval: DEFAULT_INTERVAL,
                zone: String::new(),
                newest: None,
                last_arrival: None,
                gap: Vec::new(),
            });
        refresh_station(track, id, generation, &self.rules, &self.registry);
        track
    }

    fn series_mut(&mut self, station: &str, parameter: &str) -> &mut Series {
        let generation = self.generation;
        let s = self
            .series
            .entry((station.to_owned(), parameter.to_owned()))
            .or_insert_with(|| Series {
                info: SeriesInfo {
                    station: station.to_owned(),
                    parameter: parameter.to_owned(),
                    generation: u64::MAX,
                    rules: ParamRules::default(),
                    interval: DEFAULT_INTERVAL,
                    zone: String::new(),
                    unit: String::new(),
                },
                state: SeriesState::default(),
            });
        refresh_series(s, generation, &self.rules, &self.registry);
        s
    }

    fn process(&mut self, r: &StoredReading, mode: Mode, out: &mut Vec<AlertEvent>) {
        let Some(t) = r.measured_at.as_ref().and_then(from_timestamp) else {
            self.stats.unusable += 1;
            return;
        };
        if !(1970..=2200).contains(&t.year()) || r.station_id.is_empty() {
            self.stats.unusable += 1;
            return;
        }
        let settings: EngineSettings = self.rules.engine().clone();
        if let Mode::Live(now) = mode
            && t > add(now, settings.max_future)
        {
            self.stats.from_future += 1;
            return;
        }
        let registry = Arc::clone(&self.registry);
        let station = registry.station(&r.station_id);
        let code = station
            .and_then(|s| s.parameter(&r.parameter))
            .map_or_else(|| r.parameter.trim().to_owned(), |p| p.code.clone());
        if code.is_empty() {
            self.stats.unusable += 1;
            return;
        }

        // Seen, too late, or new?
        let in_order = {
            let s = self.series_mut(&r.station_id, &code);
            let st = &mut s.state;
            if let Some(newest) = st.newest
                && t < sub(newest, settings.max_lateness)
            {
                self.stats.too_late += 1;
                return;
            }
            let pos = match st.seen.binary_search(&t) {
                Ok(_) => {
                    self.stats.duplicates += 1;
                    return;
                }
                Err(pos) => pos,
            };
            st.seen.insert(pos, t);
            if st.newest.is_none() && matches!(mode, Mode::WarmUp) {
                st.warm_from = Some(t);
            }
            let in_order = st.newest.is_none_or(|n| t > n);
            if in_order {
                st.newest = Some(t);
            }
            let horizon = sub(st.newest.unwrap_or(t), settings.max_lateness);
            while st.seen.front().is_some_and(|&f| f < horizon) {
                st.seen.pop_front();
            }
            if let Mode::Live(now) = mode {
                st.last_arrival = Some(now);
            }
            in_order
        };
        self.stats.readings += 1;

        // Station-wide: newest data, the station gap ends.
        {
            let track = self.station_track(&r.station_id);
            track.newest = track.newest.max(Some(t));
            if let Mode::Live(now) = mode {
                track.last_arrival = Some(now);
            }
            let Engine { stations, book, .. } = self;
            if let Some(track) = stations.get_mut(&r.station_id) {
                book.clear(&mut track.gap, t, mode, out);
            }
        }

        let Engine { series, book, .. } = self;
        let Some(s) = series.get_mut(&(r.station_id.clone(), code.clone())) else {
            return;
        };
        let Series { info, state } = s;
        if info.unit.is_empty() && !r.unit.is_empty() {
            info.unit.clone_from(&r.unit);
        }
        let offset = settings.utc_offset;
        let h = info.rules.hysteresis;

        // Data gap of this parameter ends.
        if let Some(list) = state.incidents.get_mut(&RuleKind::DataGap) {
            book.clear(list, t, mode, out);
        }

        let qc = r.qc_flag.trim();
        let non_measuring = matches!(qc, "calibrating" | "maintenance" | "device_error");
        let measuring = matches!(qc, "valid" | "manual" | "above_range");
        let valid = qc == "valid" && r.value.is_finite();

        // Instrument status (in-order stream).
        if in_order && info.rules.status.enabled {
            status_rule(
                info,
                state,
                book,
                t,
                non_measuring,
                measuring,
                qc,
                offset,
                mode,
                out,
            );
        }

        if !valid {
            close_windows(s, book, &registry, &settings, None, mode, out);
            return;
        }
        let v = r.value;
        let limit = station.and_then(|st| st.limit_at(&code, local_date(t, offset)));

        // Limit and early warning on the value (late readings too).
        if let Some(limit) = limit {
            let permit = Bounds::of(limit);
            if info.rules.single_limit.enabled {
                let list = state.incidents.entry(RuleKind::LimitExceeded).or_default();
                if let Some(bound) = permit.crossed(v) {
                    let f = Finding {
                        rule: RuleKind::LimitExceeded,
                        start: t,
                        t,
                        observed: v,
                        limit: bound,
                        message: format!(
                            "Vượt quy chuẩn / limit exceeded: {} = {} {} {} {} ({}), trạm {}, lúc {} (giờ địa phương)",
                            info.parameter,
                            num(v),
                            info.unit,
                            if v > bound { ">" } else { "<" },
                            num(bound),
                            describe(limit),
                            info.station,
                            local_time(t, offset)
                        ),
                        window_end: Some(t),
                        opened_at: t,
                        reference: v,
                    };
                    book.breach(list, f, info, mode, out);
                } else if permit.cleared(v, h, &permit) {
                    book.clear(list, t, mode, out);
                }
            }
            let frac = info.rules.early_warning.fraction;
            if frac > 0.0 {
                let warn = permit.warning(frac);
                let list = state.incidents.entry(RuleKind::EarlyWarning).or_default();
                match warn.crossed(v) {
                    Some(threshold) if permit.crossed(v).is_none() => {
                        let f = Finding {
                            rule: RuleKind::EarlyWarning,
                            start: t,
                            t,
                            observed: v,
                            limit: threshold,
                            message: format!(
                                "Cảnh báo sớm / early warning: {} = {} {} vượt ngưỡng cảnh báo {} ({}% giới hạn; {}), trạm {}, lúc {}",
                                info.parameter,
                                num(v),
                                info.unit,
                                num(threshold),
                                num(frac * 100.0),
                                describe(limit),
                                info.station,
                                local_time(t, offset)
                            ),
                            window_end: Some(t),
                            opened_at: t,
                            reference: v,
                        };
                        book.breach(list, f, info, mode, out);
                    }
                    _ if warn.cleared(v, h, &permit) => book.clear(list, t, mode, out),
                    _ => {}
                }
            }
        }

        // Window averages.
        if info.rules.averages.enabled {
            for set in &mut state.windows {
                let start = bucket_start(t, set.len, offset);
                let b = set.buckets.entry(start).or_insert_with(|| Bucket {
                    partial: state.warm_from.is_some_and(|w| start < w),
                    ..Bucket::default()
                });
                b.sum += v;
                b.count += 1;
                if b.judged {
                    b.dirty = true;
                }
            }
        }

        if in_order {
            // Sudden change.
            if let Some(max_rise) = info.rules.sudden_change.max_rise_per_hour
                && let Some((pt, pv)) = state.prev_valid
            {
                let hours = (t - pt).num_milliseconds() as f64 / 3_600_000.0;
                if hours > 0.0 {
                    let rate = (v - pv) / hours;
                    let list = state.incidents.entry(RuleKind::SuddenChange).or_default();
                    if rate > max_rise {
                        let f = Finding {
                            rule: RuleKind::SuddenChange,
                            start: t,
                            t,
                            observed: rate,
                            limit: max_rise,
                            message: format!(
                                "Tăng đột biến / sudden rise: {} từ {} lên {} {} ({} /giờ > {} /giờ), trạm {}, lúc {}",
                                info.parameter,
                                num(pv),
                                num(v),
                                info.unit,
                                num(rate),
                                num(max_rise),
                                info.station,
                                local_time(t, offset)
                            ),
                            window_end: Some(t),
                            opened_at: t,
                            reference: v,
                        };
                        book.breach(list, f, info, mode, out);
                    } else if rate < max_rise * (1.0 - h) {
                        book.clear(list, t, mode, out);
                    }
                }
            }
            state.prev_valid = Some((t, v));

            // Flatline.
            let n = info.rules.flatline.count;
            if n >= 2 {
                let tol = info.rules.flatline.tolerance;
                let list = state.incidents.entry(RuleKind::Flatline).or_default();
                let departs = list
                    .iter()
                    .rev()
                    .find(|i| i.ended.is_none())
                    .is_some_and(|i| (v - i.reference).abs() > tol.max(h * i.reference.abs()));
                if departs {
                    book.clear(list, t, mode, out);
                }
                let run = match state.run.take() {
                    Some(mut run) if run.max.max(v) - run.min.min(v) <= tol => {
                        run.count = run.count.saturating_add(1);
                        run.min = run.min.min(v);
                        run.max = run.max.max(v);
                        run
                    }
                    _ => Run {
                        start: t,
                        count: 1,
                        min: v,
                        max: v,
                        first: v,
                    },
                };
                if run.count >= n {
                    let f = Finding {
                        rule: RuleKind::Flatline,
                        start: run.start,
                        t,
                        observed: run.first,
                        limit: f64::from(n),
                        message: format!(
                            "Giá trị không đổi / flatline: {} = {} {} trong {} lần đo liên tiếp từ {}, trạm {}",
                            info.parameter,
                            num(run.first),
                            info.unit,
                            run.count,
                            local_time(run.start, offset),
                            info.station
                        ),
                        window_end: Some(t),
                        opened_at: t,
                        reference: run.first,
                    };
                    book.breach(list, f, info, mode, out);
                }
                state.run = Some(run);
            }
        }

        close_windows(s, book, &registry, &settings, None, mode, out);
    }

    /// Forgets what is older than the lateness horizon: judged windows,
    /// ended incidents, resolved alerts.
    fn prune(&mut self) {
        let settings = self.rules.engine().clone();
        let keep = settings.max_lateness + self.rules.longest_window();
        for s in self.series.values_mut() {
            let Some(newest) = s.state.newest else {
                continue;
            };
            let horizon = sub(newest, settings.max_lateness);
            for set in &mut s.state.windows {
                let len = set.len;
                set.buckets.retain(|start, _| add(*start, len) >= horizon);
            }
            let old = sub(newest, keep);
            for list in s.state.incidents.values_mut() {
                prune_incidents(list, old, &self.book);
            }
        }
        for track in self.stations.values_mut() {
            if let Some(newest) = track.newest {
                prune_incidents(&mut track.gap, sub(newest, keep), &self.book);
            }
        }
        let series = &self.series;
        let stations = &self.stations;
        self.book.alerts.retain(|key, rec| {
            if rec.is_active() {
                return true;
            }
            let newest = if key.parameter.is_empty() {
                stations.get(&key.station_id).and_then(|t| t.newest)
            } else {
                series
                    .get(&(key.station_id.clone(), key.parameter.clone()))
                    .and_then(|s| s.state.newest)
            };
            let anchor = key
                .window_end()
                .or(rec.window_end)
                .unwrap_or(key.window_start)
                .max(key.window_start);
            newest.is_none_or(|n| anchor >= sub(n, keep))
        });
    }
}

/// When a series (or station) went silent: its newest measurement, or the
/// wall clock its last reading arrived at, whichever is later. Before any
/// reading arrived live (never heard from, or only warmed up after a
/// restart), the engine's start stands in for the arrival, so a restarted
/// engine gives the topic's tail time to come in before calling a gap.
fn silent_since(
    newest: Option<DateTime<Utc>>,
    last_arrival: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
) -> DateTime<Utc> {
    newest.map_or(started, |n| n.max(last_arrival.unwrap_or(started)))
}

fn prune_incidents(list: &mut Vec<Incident>, old: DateTime<Utc>, book: &Book) {
    let active = |i: &Incident| book.alerts.get(&i.key).is_some_and(AlertRecord::is_active);
    list.retain(|i| i.ended.is_none_or(|e| e >= old) || active(i));
    while list.len() > MAX_INCIDENTS {
        match list.iter().position(|i| i.ended.is_some() && !active(i)) {
            Some(n) => {
                list.remove(n);
            }
            None => break,
        }
    }
}

fn describe(limit: &PermitLimit) -> String {
    let mut s = limit.regulation.clone();
    if let Some(c) = &limit.column {
        s.push_str(" cột ");
        s.push_str(c);
    }
    s
}

fn gap_finding(
    info: &SeriesInfo,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    silent_from: DateTime<Utc>,
    threshold: Duration,
    offset: FixedOffset,
) -> Finding {
    let what = if info.parameter.is_empty() {
        format!("trạm {}", info.station)
    } else {
        format!("{} tại trạm {}", info.parameter, info.station)
    };
    Finding {
        rule: RuleKind::DataGap,
        start,
        t: start,
        observed: minutes(since(now, silent_from)),
        limit: minutes(threshold),
        message: format!(
            "Mất dữ liệu / data gap: không có dữ liệu {} từ {} (quá {} phút)",
            what,
            local_time(start, offset),
            num(minutes(threshold))
        ),
        window_end: None,
        opened_at: add(start, threshold),
        reference: 0.0,
    }
}

#[allow(clippy::too_many_arguments)]
fn status_rule(
    info: &SeriesInfo,
    state: &mut SeriesState,
    book: &mut Book,
    t: DateTime<Utc>,
    non_measuring: bool,
    measuring: bool,
    qc: &str,
    offset: FixedOffset,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let rules = &info.rules.status;
    let today = local_date(t, offset);
    let day_start = bucket_start(t, DAY, offset);
    // The too-many-episodes alert of an earlier day is over.
    if state.day_claimed.is_some_and(|d| d < today) {
        state.day_claimed = None;
        for key in book.active_windows(
            RuleKind::InstrumentStatus,
            &info.station,
            &info.parameter,
            DAY,
            day_start,
        ) {
            book.auto_resolve(&key, t, mode, out);
        }
    }
    if non_measuring {
        if state.episode.is_none() {
            state.episode = Some(Episode {
                start: t,
                flag: qc.to_owned(),
            });
            let count = match state.day_episodes {
                Some((day, n)) if day == today => n + 1,
                _ => 1,
            };
            state.day_episodes = Some((today, count));
            if rules.max_per_day > 0 && count > rules.max_per_day {
                let key = AlertKey {
                    rule: RuleKind::InstrumentStatus,
                    station_id: info.station.clone(),
                    parameter: info.parameter.clone(),
                    window_start: day_start,
                    window_len: Some(DAY),
                };
                let f = Finding {
                    rule: RuleKind::InstrumentStatus,
                    start: day_start,
                    t,
                    observed: f64::from(count),
                    limit: f64::from(rules.max_per_day),
                    message: format!(
                        "Thiết bị / instrument: {} tại trạm {} hiệu chuẩn/lỗi {} lần trong ngày {} (tối đa {})",
                        info.parameter, info.station, count, today, rules.max_per_day
                    ),
                    window_end: Some(add(day_start, DAY)),
                    opened_at: t,
                    reference: 0.0,
                };
                let mut claimed = state.day_claimed == Some(today);
                book.window_alert(key, f, &mut claimed, info, mode, out);
                if claimed {
                    state.day_claimed = Some(today);
                }
            }
        }
        let Some(ep) = state.episode.as_mut() else {
            return;
        };
        qc.clone_into(&mut ep.flag);
        let lasted = since(t, ep.start);
        if !rules.max_duration.is_zero() && lasted > rules.max_duration {
            let f = Finding {
                rule: RuleKind::InstrumentStatus,
                start: ep.start,
                t,
                observed: minutes(lasted),
                limit: minutes(rules.max_duration),
                message: format!(
                    "Thiết bị / instrument: {} tại trạm {} ở trạng thái {} từ {} (quá {} phút)",
                    info.parameter,
                    info.station,
                    ep.flag,
                    local_time(ep.start, offset),
                    num(minutes(rules.max_duration))
                ),
                window_end: Some(t),
                opened_at: t,
                reference: 0.0,
            };
            let list = state
                .incidents
                .entry(RuleKind::InstrumentStatus)
                .or_default();
            book.breach(list, f, info, mode, out);
        }
    } else if measuring
        && state.episode.take().is_some()
        && let Some(list) = state.incidents.get_mut(&RuleKind::InstrumentStatus)
    {
        book.clear(list, t, mode, out);
    }
}

/// Judges every window that is closed: by data (`through`, the newest
/// measurement time of the series) or by the wall clock (`wall` past the end
/// plus grace), and not judged yet or changed since.
#[allow(clippy::too_many_arguments)]
fn close_windows(
    s: &mut Series,
    book: &mut Book,
    registry: &Registry,
    settings: &EngineSettings,
    wall: Option<DateTime<Utc>>,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let Series { info, state } = s;
    if !info.rules.averages.enabled {
        return;
    }
    let through = state.newest;
    let grace = info.rules.averages.grace;
    for set in &mut state.windows {
        let len = set.len;
        for (&start, b) in set.buckets.iter_mut() {
            if b.judged && !b.dirty {
                continue;
            }
            let end = add(start, len);
            let closed =
                through.is_some_and(|n| n >= end) || wall.is_some_and(|now| now > add(end, grace));
            if closed {
                judge_window(info, book, registry, settings, start, len, b, mode, out);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn judge_window(
    info: &SeriesInfo,
    book: &mut Book,
    registry: &Registry,
    settings: &EngineSettings,
    start: DateTime<Utc>,
    len: Duration,
    b: &mut Bucket,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    b.judged = true;
    b.dirty = false;
    if b.partial {
        return;
    }
    let rules = &info.rules;
    let expected = len.as_secs_f64() / info.interval.as_secs_f64().max(1.0);
    let needed = (rules.averages.completeness * expected).max(1.0);
    if f64::from(b.count) + 1e-9 < needed {
        return;
    }
    let offset = settings.utc_offset;
    let Some(limit) = registry
        .station(&info.station)
        .and_then(|st| st.limit_at(&info.parameter, local_date(start, offset)))
    else {
        return;
    };
    let avg = b.sum / f64::from(b.count);
    let end = add(start, len);
    let permit = Bounds::of(limit);
    let h = rules.hysteresis;
    let period = format!(
        "{} từ {} ({} / {} giá trị)",
        format_len(len),
        local_time(start, offset),
        b.count,
        num(expected)
    );
    let finding = |rule, bound: f64, message: String| Finding {
        rule,
        start,
        t: end,
        observed: avg,
        limit: bound,
        message,
        window_end: Some(end),
        opened_at: end,
        reference: avg,
    };
    let key = |rule| AlertKey {
        rule,
        station_id: info.station.clone(),
        parameter: info.parameter.clone(),
        window_start: start,
        window_len: Some(len),
    };
    let frac = rules.early_warning.fraction;
    let warn = permit.warning(frac);
    if let Some(bound) = permit.crossed(avg) {
        let f = finding(
            RuleKind::AverageExceeded,
            bound,
            format!(
                "Trung bình vượt quy chuẩn / average exceeded: {} trung bình {} = {} {} {} {} ({}), trạm {}",
                info.parameter,
                period,
                num(avg),
                info.unit,
                if avg > bound { ">" } else { "<" },
                num(bound),
                describe(limit),
                info.station
            ),
        );
        book.window_alert(
            key(RuleKind::AverageExceeded),
            f,
            &mut b.claimed_exceed,
            info,
            mode,
            out,
        );
    } else if frac > 0.0
        && let Some(threshold) = warn.crossed(avg)
    {
        let f = finding(
            RuleKind::EarlyWarning,
            threshold,
            format!(
                "Cảnh báo sớm / early warning: {} trung bình {} = {} {} vượt ngưỡng cảnh báo {} ({}), trạm {}",
                info.parameter,
                period,
                num(avg),
                info.unit,
                num(threshold),
                describe(limit),
                info.station
            ),
        );
        book.window_alert(
            key(RuleKind::EarlyWarning),
            f,
            &mut b.claimed_warn,
            info,
            mode,
            out,
        );
    }
    // A complete window back inside resolves the earlier ones.
    if permit.cleared(avg, h, &permit) {
        for k in book.active_windows(
            RuleKind::AverageExceeded,
            &info.station,
            &info.parameter,
            len,
            start,
        ) {
            book.auto_resolve(&k, end, mode, out);
        }
    }
    if frac <= 0.0 || warn.cleared(avg, h, &permit) {
        for k in book.active_windows(
            RuleKind::EarlyWarning,
            &info.station,
            &info.parameter,
            len,
            start,
        ) {
            book.auto_resolve(&k, end, mode, out);
        }
    }
}

fn refresh_series(s: &mut Series, generation: u64, rules: &RulesConfig, registry: &Registry) {
    if s.info.generation == generation {
        return;
    }
    let info = &mut s.info;
    info.generation = generation;
    info.rules = rules.for_reading(&info.station, &info.parameter);
    let station = registry.station(&info.station);
    let spec = station.and_then(|st| st.parameter(&info.parameter));
    info.interval = spec.map_or(DEFAULT_INTERVAL, |p| p.expected_interval);
    info.zone = station
        .map(|st| st.industrial_zone.clone())
        .unwrap_or_default();
    if let Some(p) = spec {
        info.unit.clone_from(&p.unit);
    }
    // Keep the windows still configured, start the new ones empty.
    let wanted = &info.rules.averages.windows;
    let windows = &mut s.state.windows;
    windows.retain(|w| wanted.contains(&w.len));
    for &len in wanted {
        if !windows.iter().any(|w| w.len == len) {
            windows.push(WindowSet {
                len,
                buckets: BTreeMap::new(),
            });
        }
    }
    windows.sort_by_key(|w| w.len);
}

fn refresh_station(
    track: &mut StationTrack,
    id: &str,
    generation: u64,
    rules: &RulesConfig,
    registry: &Registry,
) {
    if track.generation == generation {
        return;
    }
    track.generation = generation;
    track.rules = rules.for_reading(id, "");
    let station = registry.station(id);
    track.zone = station
        .map(|s| s.industrial_zone.clone())
        .unwrap_or_default();
    track.interval = station
        .and_then(|s| s.parameters.iter().map(|p| p.expected_interval).min())
        .unwrap_or(DEFAULT_INTERVAL);
}
