//! One reading through the engine ([`Engine::observe`], [`Engine::warm_up`]):
//! is it usable, new, in order; the station's newest data; then the rules
//! of its series, in this order: data gap ends, instrument status, and for
//! a valid value the limit and early warning, window averages, sudden
//! change and flatline; last, the windows it closes.

use std::sync::Arc;

use chrono::{DateTime, Datelike, FixedOffset, Utc};
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::qc::QcFlag;
use quantrac_proto::registry::{Registry, Station};
use quantrac_proto::v1::StoredReading;

use super::incidents::Book;
use super::instrument::status_rule;
use super::limits::{close_windows, value_rules};
use super::sequence::{flatline, remember_valid, sudden_change};
use super::series::{Admission, Series, SeriesInfo, SeriesState};
use super::time::{add, local_date};
use super::{Engine, Mode};
use crate::alert::{AlertEvent, RuleKind};
use crate::rules::EngineSettings;

/// A reading that is usable and new, with what its rules need.
struct Admitted<'a> {
    r: &'a StoredReading,
    /// Measurement time.
    t: DateTime<Utc>,
    /// The parameter's canonical code.
    code: String,
    station: Option<&'a Station>,
    /// Newer than every reading of its series so far.
    in_order: bool,
}

impl Engine {
    /// Judges one reading; its events go to `out` (in warm-up, changes to
    /// restored alerts are queued instead).
    pub(super) fn process(&mut self, r: &StoredReading, mode: Mode, out: &mut Vec<AlertEvent>) {
        let Some(t) = self.event_time(r) else {
            return;
        };
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

        let Some(in_order) = self.admit(r, &code, t, mode, &settings, out) else {
            return;
        };
        self.stats.readings += 1;

        self.station_reading(&r.station_id, t, mode, out);

        let Engine { series, book, .. } = self;
        let Some(s) = series.get_mut(&(r.station_id.clone(), code.clone())) else {
            return;
        };
        let reading = Admitted {
            r,
            t,
            code,
            station,
            in_order,
        };
        judge_series(s, book, &reading, &registry, &settings, mode, out);
    }

    /// The measurement time, when usable (else counted as unusable).
    fn event_time(&mut self, r: &StoredReading) -> Option<DateTime<Utc>> {
        let Some(t) = r.measured_at.as_ref().and_then(from_timestamp) else {
            self.stats.unusable += 1;
            return None;
        };
        if !(1970..=2200).contains(&t.year()) || r.station_id.is_empty() {
            self.stats.unusable += 1;
            return None;
        }
        Some(t)
    }

    /// Seen, too late, or new? `Some(in_order)` when new; the others are
    /// counted, and a seen time with a different value raises a conflict.
    fn admit(
        &mut self,
        r: &StoredReading,
        code: &str,
        t: DateTime<Utc>,
        mode: Mode,
        settings: &EngineSettings,
        out: &mut Vec<AlertEvent>,
    ) -> Option<bool> {
        let s = self.series_mut(&r.station_id, code);
        match s.state.admit(t, r.value, mode, settings.max_lateness) {
            Admission::TooLate => {
                self.stats.too_late += 1;
                None
            }
            Admission::Duplicate { first } => {
                self.stats.duplicates += 1;
                if first.to_bits() != r.value.to_bits() && !(first.is_nan() && r.value.is_nan()) {
                    self.stats.conflicts += 1;
                    let Engine { series, book, .. } = self;
                    if let Some(s) = series.get(&(r.station_id.clone(), code.to_owned())) {
                        book.conflict(&s.info, t, first, r, mode, out);
                    }
                }
                None
            }
            Admission::New { in_order } => Some(in_order),
        }
    }

    /// Station-wide: newest data, the station gap ends.
    fn station_reading(
        &mut self,
        station: &str,
        t: DateTime<Utc>,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        let track = self.station_track(station);
        track.newest = track.newest.max(Some(t));
        if let Mode::Live(now) = mode {
            track.last_arrival = Some(now);
        }
        let Engine { stations, book, .. } = self;
        if let Some(track) = stations.get_mut(station) {
            book.clear(&mut track.gap, t, mode, out);
        }
    }
}

/// The rules of the reading's series, then the windows it closes.
fn judge_series(
    s: &mut Series,
    book: &mut Book,
    reading: &Admitted<'_>,
    registry: &Registry,
    settings: &EngineSettings,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let (r, t, in_order) = (reading.r, reading.t, reading.in_order);
    let Series { info, state } = s;
    if info.unit.is_empty() && !r.unit.is_empty() {
        info.unit.clone_from(&r.unit);
    }
    let offset = settings.utc_offset;

    // Data gap of this parameter ends.
    if let Some(list) = state.incidents.get_mut(&RuleKind::DataGap) {
        book.clear(list, t, mode, out);
    }

    // A flag this build does not know counts as neither measuring nor
    // down, and is not judged.
    let qc = r.qc_flag.parse::<QcFlag>().ok();
    let non_measuring = qc.is_some_and(QcFlag::is_instrument_down);
    let measuring = qc.is_some_and(QcFlag::is_measuring);
    let valid = qc == Some(QcFlag::Valid) && r.value.is_finite();
    // The analyser is past its range: the true value is at least this.
    let at_least = qc == Some(QcFlag::AboveRange) && r.value.is_finite();

    // Instrument status (in-order stream).
    if in_order && info.rules.status.enabled {
        status_rule(
            info,
            state,
            book,
            t,
            non_measuring,
            measuring,
            r.qc_flag.trim(),
            offset,
            mode,
            out,
        );
    }

    if valid || at_least {
        judge_value(info, state, book, reading, at_least, offset, mode, out);
    }
    close_windows(s, book, registry, settings, None, mode, out);
}

/// The rules on a valid value, or on a lower bound (`at_least`: the
/// analyser was saturated). A lower bound can show a limit broken, never
/// kept, and says nothing of how the value changes.
#[allow(clippy::too_many_arguments)]
fn judge_value(
    info: &SeriesInfo,
    state: &mut SeriesState,
    book: &mut Book,
    reading: &Admitted<'_>,
    at_least: bool,
    offset: FixedOffset,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let (t, v) = (reading.t, reading.r.value);
    let (station, code) = (reading.station, &reading.code);
    let limit = station.and_then(|st| st.limit_at(code, local_date(t, offset)));
    // A limit stated at a reference O₂ judges the corrected value, and its
    // averages average corrected values; without one the value is judged
    // as measured and the alert says so.
    let uncorrected;
    let (judged, limit) = match limit {
        Some(l) if l.reference_o2.is_some() => match reading.r.converted {
            Some(c) if c.is_finite() => (c, Some(l)),
            _ => {
                uncorrected = super::limits::not_corrected(l);
                (v, Some(&uncorrected))
            }
        },
        other => (v, other),
    };

    // Limit and early warning on the value (late readings too).
    if let Some(limit) = limit {
        value_rules(
            info, state, book, limit, t, judged, at_least, offset, mode, out,
        );
    }

    // Window averages.
    if info.rules.averages.enabled {
        state.add_to_windows(t, judged, at_least, offset);
    }

    if reading.in_order && !at_least {
        // Sudden change.
        sudden_change(info, state, book, t, v, offset, mode, out);
        remember_valid(state, t, v);

        // Flatline.
        flatline(info, state, book, t, v, offset, mode, out);
    }
}
