//! The rules on the in-order sequence of valid values: sudden change
//! (a rise within the hour above the hour's lowest value) and flatline (a
//! run of values stuck within a tolerance).

use chrono::{DateTime, FixedOffset, Utc};

use super::Mode;
use super::incidents::{Book, Finding};
use super::series::{SeriesInfo, SeriesState};
use super::time::{local_time, num};
use crate::alert::{AlertEvent, RuleKind};

/// A flatline run: consecutive valid values within the tolerance.
#[derive(Debug, Clone)]
pub(super) struct Run {
    start: DateTime<Utc>,
    count: u32,
    min: f64,
    max: f64,
    first: f64,
}

/// How far back sudden change looks for the value a rise starts from.
const RISE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Most values kept for it (a bound; the minimum queue below rarely holds
/// more than a few dozen).
const MAX_RECENT: usize = 4_096;

/// Keeps `(t, v)` as a valid in-order value of the last hour, as a minimum
/// queue: a value is dropped as soon as a newer one is not greater, since
/// the newer one stays in the hour longer and the lowest value of the hour
/// is all sudden change asks for. Values and times increase from front to
/// back, so memory does not grow with the reporting rate.
pub(super) fn remember_valid(state: &mut SeriesState, t: DateTime<Utc>, v: f64) {
    while state.recent_valid.back().is_some_and(|&(_, pv)| pv >= v) {
        state.recent_valid.pop_back();
    }
    state.recent_valid.push_back((t, v));
    while state
        .recent_valid
        .front()
        .is_some_and(|(pt, _)| *pt < t - RISE_WINDOW)
        || state.recent_valid.len() > MAX_RECENT
    {
        state.recent_valid.pop_front();
    }
}

/// Sudden change: how far `v` is above the lowest valid value of the hour
/// before it. A rise measured between two consecutive 5-minute values and
/// extrapolated to an hour would turn an analyser's ordinary noise (a few
/// mg/L between readings) into "60 mg/L per hour"; what officers mean by a
/// sudden rise is one that happened within the hour.
#[allow(clippy::too_many_arguments)]
pub(super) fn sudden_change(
    info: &SeriesInfo,
    state: &mut SeriesState,
    book: &mut Book,
    t: DateTime<Utc>,
    v: f64,
    offset: FixedOffset,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let h = info.rules.hysteresis;
    let Some(max_rise) = info.rules.sudden_change.max_rise_per_hour else {
        return;
    };
    let base = state
        .recent_valid
        .iter()
        .filter(|(pt, _)| *pt >= t - RISE_WINDOW && *pt < t)
        .map(|&(_, pv)| pv)
        .fold(f64::INFINITY, f64::min);
    if !base.is_finite() {
        return;
    }
    let rise = v - base;
    let list = state.incidents.entry(RuleKind::SuddenChange).or_default();
    if rise > max_rise {
        let f = Finding {
            rule: RuleKind::SuddenChange,
            start: t,
            t,
            observed: rise,
            limit: max_rise,
            message: format!(
                "Tăng đột biến / sudden rise: {} từ {} lên {} {} trong vòng 1 giờ (+{} > {}), trạm {}, lúc {}",
                info.parameter,
                num(base),
                num(v),
                info.unit,
                num(rise),
                num(max_rise),
                info.station,
                local_time(t, offset)
            ),
            window_end: Some(t),
            opened_at: t,
            reference: v,
        };
        book.breach(list, f, info, mode, out);
    } else if rise < max_rise * (1.0 - h) {
        book.clear(list, t, mode, out);
    }
}

/// Flatline: `v` extends the current run or starts a new one; a run of
/// `count` values is a breach, and a value departing from the stuck one
/// clears it.
#[allow(clippy::too_many_arguments)]
pub(super) fn flatline(
    info: &SeriesInfo,
    state: &mut SeriesState,
    book: &mut Book,
    t: DateTime<Utc>,
    v: f64,
    offset: FixedOffset,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let h = info.rules.hysteresis;
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The minimum queue gives sudden change the same baseline as every
        /// value of the hour would: the lowest valid value in the hour
        /// before each new one, and it stays small however fast values come.
        #[test]
        fn the_kept_values_give_the_lowest_of_the_hour(
            steps in proptest::collection::vec((1i64..900, 0u32..1000), 1..600),
        ) {
            let mut state = SeriesState::default();
            let mut all: Vec<(DateTime<Utc>, f64)> = Vec::new();
            let mut t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
            for (gap, v) in steps {
                t += chrono::TimeDelta::seconds(gap);
                let v = f64::from(v) / 10.0;
                let lowest = |vals: &mut dyn Iterator<Item = &(DateTime<Utc>, f64)>| {
                    vals.filter(|(pt, _)| *pt >= t - RISE_WINDOW && *pt < t)
                        .map(|&(_, pv)| pv)
                        .fold(f64::INFINITY, f64::min)
                };
                let expected = lowest(&mut all.iter());
                let kept = lowest(&mut state.recent_valid.iter());
                prop_assert_eq!(kept, expected);
                remember_valid(&mut state, t, v);
                all.push((t, v));
                prop_assert!(state.recent_valid.len() <= all.len());
            }
        }
    }
}
