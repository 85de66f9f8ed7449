//! The rules on the in-order sequence of valid values: sudden change
//! (the rise per hour between consecutive values) and flatline (a run of
//! values stuck within a tolerance).

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

/// Sudden change: the rise per hour from the previous valid value to `v`.
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
