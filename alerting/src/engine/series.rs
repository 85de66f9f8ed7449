//! What the engine remembers of each series (station, parameter) and of
//! each station: the seen set that tells a new reading from a replayed or
//! too-late one, the window buckets of the averages, what the rules and the
//! registry say of it (refreshed on reload), and forgetting what is older
//! than the lateness horizon.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use quantrac_proto::registry::Registry;

use super::incidents::{Book, Incident};
use super::instrument::Episode;
use super::seen::Seen;
use super::sequence::Run;
use super::time::{add, bucket_start, sub};
use super::{Engine, Mode};
use crate::alert::{AlertRecord, RuleKind};
use crate::rules::{DEFAULT_INTERVAL, ParamRules, RulesConfig};

/// Incidents kept per series and rule beyond the live ones (late joins).
const MAX_INCIDENTS: usize = 16;

#[derive(Debug, Clone, Default)]
pub(super) struct Bucket {
    pub(super) sum: f64,
    pub(super) count: u32,
    pub(super) judged: bool,
    /// A late reading arrived after it was judged.
    pub(super) dirty: bool,
    /// An alert for this window was opened, or would have been in warm-up.
    pub(super) claimed_exceed: bool,
    pub(super) claimed_warn: bool,
    /// Started before the first reading warm-up gave for its series: its
    /// readings are not all here, so it never opens or resolves anything.
    pub(super) partial: bool,
    /// Holds a saturated analyser's value: the average is a lower bound.
    pub(super) lower_bound: bool,
}

#[derive(Debug, Clone)]
pub(super) struct WindowSet {
    pub(super) len: Duration,
    pub(super) buckets: BTreeMap<DateTime<Utc>, Bucket>,
}

/// What a series is (from the rules and the registry), refreshed on reload.
#[derive(Debug, Clone)]
pub(super) struct SeriesInfo {
    pub(super) station: String,
    pub(super) parameter: String,
    pub(super) generation: u64,
    pub(super) rules: ParamRules,
    pub(super) interval: Duration,
    pub(super) zone: String,
    pub(super) unit: String,
}

/// What the engine remembers of a series.
#[derive(Debug, Clone, Default)]
pub(super) struct SeriesState {
    pub(super) newest: Option<DateTime<Utc>>,
    pub(super) last_arrival: Option<DateTime<Utc>>,
    /// Measurement times seen within `max_lateness` of `newest` (in
    /// microseconds since the epoch, the database's precision), each with
    /// the value first judged for it: 12 bytes a reading (16 for times
    /// finer than a second), the engine's largest state (a day of 1-minute
    /// data from 3,000 series is 4.5 million entries).
    pub(super) seen: Seen,
    pub(super) windows: Vec<WindowSet>,
    pub(super) incidents: BTreeMap<RuleKind, Vec<Incident>>,
    /// Valid in-order values of the last hour that may yet be its lowest
    /// (sudden change's baseline; see `sequence::remember_valid`), oldest
    /// first.
    pub(super) recent_valid: VecDeque<(DateTime<Utc>, f64)>,
    pub(super) run: Option<Run>,
    pub(super) episode: Option<Episode>,
    pub(super) day_episodes: Option<(NaiveDate, u32)>,
    /// The day whose too-many-episodes alert was opened (or suppressed).
    pub(super) day_claimed: Option<NaiveDate>,
    /// Measurement time of the first reading of the series, when it came
    /// through warm-up: windows that started earlier are partial.
    pub(super) warm_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub(super) struct Series {
    pub(super) info: SeriesInfo,
    pub(super) state: SeriesState,
}

/// Station-wide state: newest data of any parameter, station data gap.
#[derive(Debug, Clone)]
pub(super) struct StationTrack {
    pub(super) generation: u64,
    pub(super) rules: ParamRules,
    /// Shortest interval of its parameters.
    pub(super) interval: Duration,
    pub(super) zone: String,
    pub(super) newest: Option<DateTime<Utc>>,
    pub(super) last_arrival: Option<DateTime<Utc>>,
    pub(super) gap: Vec<Incident>,
}

/// A reading's measurement time against the seen set of its series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Admission {
    /// Older than the newest by more than `max_lateness`.
    TooLate,
    /// Already seen (replay, redelivery); `first` is the value judged
    /// then, so a different one can be told from a redelivery.
    Duplicate { first: f64 },
    /// Not seen before; `in_order` when newer than the newest.
    New { in_order: bool },
}

impl SeriesState {
    /// Seen, too late, or new? A new reading's time joins the seen set (and
    /// becomes the newest when in order), the seen set forgets what fell
    /// behind the horizon, and a live reading records its arrival.
    pub(super) fn admit(
        &mut self,
        t: DateTime<Utc>,
        value: f64,
        mode: Mode,
        max_lateness: Duration,
    ) -> Admission {
        if let Some(newest) = self.newest
            && t < sub(newest, max_lateness)
        {
            return Admission::TooLate;
        }
        if let Some(first) = self.seen.insert(t.timestamp_micros(), value) {
            return Admission::Duplicate { first };
        }
        if self.newest.is_none() && matches!(mode, Mode::WarmUp) {
            self.warm_from = Some(t);
        }
        let in_order = self.newest.is_none_or(|n| t > n);
        if in_order {
            self.newest = Some(t);
        }
        let horizon = sub(self.newest.unwrap_or(t), max_lateness).timestamp_micros();
        self.seen.forget_before(horizon);
        if let Mode::Live(now) = mode {
            self.last_arrival = Some(now);
        }
        Admission::New { in_order }
    }

    /// Adds a valid value measured at `t` to its bucket in every window.
    pub(super) fn add_to_windows(
        &mut self,
        t: DateTime<Utc>,
        v: f64,
        at_least: bool,
        offset: FixedOffset,
    ) {
        for set in &mut self.windows {
            let start = bucket_start(t, set.len, offset);
            let b = set.buckets.entry(start).or_insert_with(|| Bucket {
                partial: self.warm_from.is_some_and(|w| start < w),
                ..Bucket::default()
            });
            b.sum += v;
            b.count += 1;
            b.lower_bound |= at_least;
            if b.judged {
                b.dirty = true;
            }
        }
    }
}

impl Engine {
    /// Every registry station and parameter is a series, so that one never
    /// heard from raises a data gap.
    pub(super) fn sync_registry(&mut self) {
        let registry = Arc::clone(&self.registry);
        for st in registry.stations() {
            self.station_track(&st.id);
            for p in &st.parameters {
                self.series_mut(&st.id, &p.code);
            }
        }
    }

    pub(super) fn station_track(&mut self, id: &str) -> &mut StationTrack {
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

    pub(super) fn series_mut(&mut self, station: &str, parameter: &str) -> &mut Series {
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

    /// Forgets what is older than the lateness horizon: judged windows,
    /// ended incidents, resolved alerts.
    pub(super) fn prune(&mut self) {
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

pub(super) fn refresh_series(
    s: &mut Series,
    generation: u64,
    rules: &RulesConfig,
    registry: &Registry,
) {
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

pub(super) fn refresh_station(
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
