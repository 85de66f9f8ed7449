//! The data-gap rule: a station as a whole, or one parameter of a station
//! that still sends, silent for too long. Judged by `tick` on the wall
//! clock; a reading measured after the silence began ends it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};

use super::incidents::{Book, Finding};
use super::series::{Series, SeriesInfo, StationTrack, refresh_station};
use super::time::{add, local_time, minutes, num, since};
use super::{Engine, Mode};
use crate::alert::{AlertEvent, RuleKind};
use crate::rules::EngineSettings;

impl Engine {
    /// `tick`: data gaps, the whole station first, else each parameter.
    /// `started` is the engine's start (see [`silent_since`]).
    pub(super) fn data_gaps(
        &mut self,
        now: DateTime<Utc>,
        started: DateTime<Utc>,
        settings: &EngineSettings,
        out: &mut Vec<AlertEvent>,
    ) {
        let generation = self.generation;
        let offset = settings.utc_offset;
        let Engine {
            rules,
            registry,
            series,
            stations,
            book,
            owner,
            ..
        } = self;
        for (id, track) in stations.iter_mut() {
            // Another instance hears this station: only it may call it
            // silent. Ours: silent at most since we started hearing it.
            let started = match owner {
                None => started,
                Some(o) => match o.watching_since(id) {
                    Some(since) => since.max(started),
                    None => continue,
                },
            };
            refresh_station(track, id, generation, rules, registry);
            if station_gap(id, track, book, generation, now, started, offset, out) {
                // One alert for the station, not one per parameter.
                continue;
            }
            parameter_gaps(id, series, book, now, started, offset, out);
        }
    }
}

/// The station as a whole: a breach when it is silent for too long and
/// its gap rule is enabled. Returns whether it was.
#[allow(clippy::too_many_arguments)]
fn station_gap(
    id: &str,
    track: &mut StationTrack,
    book: &mut Book,
    generation: u64,
    now: DateTime<Utc>,
    started: DateTime<Utc>,
    offset: FixedOffset,
    out: &mut Vec<AlertEvent>,
) -> bool {
    let mode = Mode::Live(now);
    let silent_from = silent_since(track.newest, track.last_arrival, started);
    let threshold = track.rules.gap.threshold(track.interval);
    let station_silent = since(now, silent_from) > threshold;
    let station_gap = station_silent && track.rules.gap.enabled;
    if station_gap {
        let start = track.newest.unwrap_or(started);
        let info = SeriesInfo {
            station: id.to_owned(),
            parameter: String::new(),
            generation,
            rules: track.rules.clone(),
            interval: track.interval,
            zone: track.zone.clone(),
            unit: String::new(),
        };
        let f = gap_finding(&info, start, now, silent_from, threshold, offset);
        book.breach(&mut track.gap, f, &info, mode, out);
    }
    station_gap
}

/// Each parameter of a station that still sends: a breach when it is
/// silent for too long.
fn parameter_gaps(
    id: &str,
    series: &mut BTreeMap<(String, String), Series>,
    book: &mut Book,
    now: DateTime<Utc>,
    started: DateTime<Utc>,
    offset: FixedOffset,
    out: &mut Vec<AlertEvent>,
) {
    let mode = Mode::Live(now);
    let lo = (id.to_owned(), String::new());
    for (_, s) in series.range_mut(lo..).take_while(|((st, _), _)| st == id) {
        let Series { info, state } = s;
        if !info.rules.gap.enabled {
            continue;
        }
        let silent_from = silent_since(state.newest, state.last_arrival, started);
        let threshold = info.rules.gap.threshold(info.interval);
        if since(now, silent_from) > threshold {
            let start = state.newest.unwrap_or(started);
            let f = gap_finding(info, start, now, silent_from, threshold, offset);
            let list = state.incidents.entry(RuleKind::DataGap).or_default();
            book.breach(list, f, info, mode, out);
        }
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
    // Never before `started`: the engine's start, or the time this
    // instance began to hear the station (a rebalance gave it here).
    newest
        .map_or(started, |n| n.max(last_arrival.unwrap_or(started)))
        .max(started)
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
