//! The rules against the permit limit: limit exceeded and early warning on
//! each valid value (late readings too), and the window averages (average
//! exceeded, early warning on an average), judged when a window closes.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use quantrac_proto::registry::{Averaging, PermitLimit, Registry};

use super::incidents::{Book, Finding};
use super::series::{Bucket, Series, SeriesInfo, SeriesState, refresh_series};
use super::time::{add, local_date, local_time, num};
use super::{Engine, Mode};
use crate::alert::{AlertEvent, AlertKey, RuleKind, format_len};
use crate::rules::EngineSettings;

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

fn describe(limit: &PermitLimit) -> String {
    let mut s = limit.regulation.clone();
    if let Some(c) = &limit.column {
        s.push_str(" cột ");
        s.push_str(c);
    }
    if let Some(o2) = limit.reference_o2 {
        let o2 = num(o2);
        s.push_str(&format!(", quy đổi về O₂ {o2} % / corrected to {o2} % O₂"));
    }
    s
}

/// The limit as the alert describes it when the value could not be
/// corrected to the permit's reference O₂ (no usable O₂ with it): judged
/// as measured, and said so.
pub(super) fn not_corrected(limit: &PermitLimit) -> PermitLimit {
    let mut l = limit.clone();
    if let Some(o2) = l.reference_o2.take() {
        let o2 = num(o2);
        l.regulation.push_str(&format!(
            "; giá trị đo chưa quy đổi về O₂ {o2} % (không có O₂ cùng thời điểm) / \
             value as measured, not corrected to {o2} % O₂ (no O₂ sent with it)"
        ));
    }
    l
}

/// Limit exceeded and early warning on one value measured at `t`. With
/// `at_least` the value is a saturated analyser's lower bound: it opens an
/// alert when even it is past an upper bound, and never clears one.
#[allow(clippy::too_many_arguments)]
pub(super) fn value_rules(
    info: &SeriesInfo,
    state: &mut SeriesState,
    book: &mut Book,
    limit: &PermitLimit,
    t: DateTime<Utc>,
    v: f64,
    at_least: bool,
    offset: FixedOffset,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let h = info.rules.hysteresis;
    let permit = Bounds::of(limit);
    // A lower bound proves only an upper bound broken.
    let proves = |bound: f64| !at_least || v > bound;
    // A limit judged on an average is broken by the average (the window
    // rules), not by one value: one value past it is an early warning.
    let on_values = limit.averaging == Averaging::Single;
    if !on_values {
        let list = state.incidents.entry(RuleKind::EarlyWarning).or_default();
        let frac = info.rules.early_warning.fraction;
        let warn = if frac > 0.0 {
            permit.warning(frac)
        } else {
            permit
        };
        match (permit.crossed(v), warn.crossed(v)) {
            (Some(bound), _) if proves(bound) => {
                let f = averaged_value_finding(info, limit, t, v, bound, at_least, offset);
                book.breach(list, f, info, mode, out);
            }
            (None, Some(threshold)) if frac > 0.0 && proves(threshold) => {
                let f = warning_finding(info, limit, t, v, threshold, frac, at_least, offset);
                book.breach(list, f, info, mode, out);
            }
            _ if !at_least && warn.cleared(v, h, &permit) => book.clear(list, t, mode, out),
            _ => {}
        }
        return;
    }
    if info.rules.single_limit.enabled {
        let list = state.incidents.entry(RuleKind::LimitExceeded).or_default();
        match permit.crossed(v) {
            Some(bound) if proves(bound) => {
                let f = limit_finding(info, limit, t, v, bound, at_least, offset);
                book.breach(list, f, info, mode, out);
            }
            None if !at_least && permit.cleared(v, h, &permit) => book.clear(list, t, mode, out),
            _ => {}
        }
    }
    let frac = info.rules.early_warning.fraction;
    if frac > 0.0 {
        let warn = permit.warning(frac);
        let list = state.incidents.entry(RuleKind::EarlyWarning).or_default();
        match warn.crossed(v) {
            Some(threshold) if permit.crossed(v).is_none() && proves(threshold) => {
                let f = warning_finding(info, limit, t, v, threshold, frac, at_least, offset);
                book.breach(list, f, info, mode, out);
            }
            _ if !at_least && warn.cleared(v, h, &permit) => book.clear(list, t, mode, out),
            _ => {}
        }
    }
}

/// How a value reads in a message: `= 42` or, for a saturated analyser's
/// lower bound, `≥ 2000`.
fn shown(v: f64, at_least: bool) -> String {
    format!("{} {}", if at_least { "≥" } else { "=" }, num(v))
}

/// The note a message carries when its value is a lower bound.
fn saturation_note(at_least: bool) -> &'static str {
    if at_least {
        " [máy đo quá thang, giá trị thực ít nhất bằng số đo / analyser saturated: the true value is at least this]"
    } else {
        ""
    }
}

/// A finding on the one value `v` measured at `t`, past `bound`.
fn value_finding(rule: RuleKind, t: DateTime<Utc>, v: f64, bound: f64, message: String) -> Finding {
    Finding {
        rule,
        start: t,
        t,
        observed: v,
        limit: bound,
        message,
        window_end: Some(t),
        opened_at: t,
        reference: v,
    }
}

fn limit_finding(
    info: &SeriesInfo,
    limit: &PermitLimit,
    t: DateTime<Utc>,
    v: f64,
    bound: f64,
    at_least: bool,
    offset: FixedOffset,
) -> Finding {
    value_finding(
        RuleKind::LimitExceeded,
        t,
        v,
        bound,
        format!(
            "Vượt quy chuẩn / limit exceeded: {} {} {} {} {} ({}), trạm {}, lúc {} (giờ địa phương){}",
            info.parameter,
            shown(v, at_least),
            info.unit,
            if v > bound { ">" } else { "<" },
            num(bound),
            describe(limit),
            info.station,
            local_time(t, offset),
            saturation_note(at_least)
        ),
    )
}

/// One value past a limit that is judged on an average: a warning that
/// says which average decides.
fn averaged_value_finding(
    info: &SeriesInfo,
    limit: &PermitLimit,
    t: DateTime<Utc>,
    v: f64,
    bound: f64,
    at_least: bool,
    offset: FixedOffset,
) -> Finding {
    let (vi, en) = match limit.averaging {
        Averaging::Day => ("trung bình 24 giờ", "24-hour average"),
        _ => ("trung bình 1 giờ", "1-hour average"),
    };
    value_finding(
        RuleKind::EarlyWarning,
        t,
        v,
        bound,
        format!(
            "Cảnh báo sớm / early warning: {} {} {} {} giới hạn {} ({}), giới hạn áp dụng cho {vi} / one value past a limit judged on the {en}; trạm {}, lúc {}{}",
            info.parameter,
            shown(v, at_least),
            info.unit,
            if v > bound { ">" } else { "<" },
            num(bound),
            describe(limit),
            info.station,
            local_time(t, offset),
            saturation_note(at_least)
        ),
    )
}

#[allow(clippy::too_many_arguments)]
fn warning_finding(
    info: &SeriesInfo,
    limit: &PermitLimit,
    t: DateTime<Utc>,
    v: f64,
    threshold: f64,
    frac: f64,
    at_least: bool,
    offset: FixedOffset,
) -> Finding {
    value_finding(
        RuleKind::EarlyWarning,
        t,
        v,
        threshold,
        format!(
            "Cảnh báo sớm / early warning: {} {} {} vượt ngưỡng cảnh báo {} ({}% giới hạn; {}), trạm {}, lúc {}{}",
            info.parameter,
            shown(v, at_least),
            info.unit,
            num(threshold),
            num(frac * 100.0),
            describe(limit),
            info.station,
            local_time(t, offset),
            saturation_note(at_least)
        ),
    )
}

impl Engine {
    /// `tick`: windows nobody closed with a later reading.
    pub(super) fn close_due_windows(
        &mut self,
        now: DateTime<Utc>,
        settings: &EngineSettings,
        out: &mut Vec<AlertEvent>,
    ) {
        let mode = Mode::Live(now);
        let generation = self.generation;
        let Engine {
            rules,
            registry,
            series,
            book,
            ..
        } = self;
        for s in series.values_mut() {
            refresh_series(s, generation, rules, registry);
            close_windows(s, book, registry, settings, Some(now), mode, out);
        }
    }
}

/// Judges every window that is closed: by data (`through`, the newest
/// measurement time of the series) or by the wall clock (`wall` past the end
/// plus grace), and not judged yet or changed since.
#[allow(clippy::too_many_arguments)]
pub(super) fn close_windows(
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
    let w = WindowAverage {
        info,
        limit,
        start,
        len,
        end,
        avg,
        lower_bound: b.lower_bound,
        period: format!(
            "{} từ {} ({} / {} giá trị)",
            format_len(len),
            local_time(start, offset),
            b.count,
            num(expected)
        ),
    };
    w.judge(b, book, mode, out);
}

/// A closed window with enough readings: its average, and how messages
/// describe it.
struct WindowAverage<'a> {
    info: &'a SeriesInfo,
    limit: &'a PermitLimit,
    start: DateTime<Utc>,
    len: Duration,
    end: DateTime<Utc>,
    avg: f64,
    /// A saturated analyser's value is in the window: the average is a
    /// lower bound, which can show an upper limit broken but never kept.
    lower_bound: bool,
    /// The window and its count of values, as messages show them.
    period: String,
}

impl WindowAverage<'_> {
    /// Opens (or worsens) the window's alert when its average is past the
    /// limit, else past the warning threshold; resolves the earlier
    /// windows' alerts when it is back inside.
    fn judge(&self, b: &mut Bucket, book: &mut Book, mode: Mode, out: &mut Vec<AlertEvent>) {
        let (info, avg) = (self.info, self.avg);
        let rules = &info.rules;
        let permit = Bounds::of(self.limit);
        let h = rules.hysteresis;
        let frac = rules.early_warning.fraction;
        let warn = permit.warning(frac);
        let proves = |bound: f64| !self.lower_bound || avg > bound;
        if let Some(bound) = permit.crossed(avg).filter(|b| proves(*b)) {
            book.window_alert(
                self.key(RuleKind::AverageExceeded),
                self.exceeded(bound),
                &mut b.claimed_exceed,
                info,
                mode,
                out,
            );
        } else if frac > 0.0
            && permit.crossed(avg).is_none()
            && let Some(threshold) = warn.crossed(avg).filter(|t| proves(*t))
        {
            book.window_alert(
                self.key(RuleKind::EarlyWarning),
                self.early_warning(threshold),
                &mut b.claimed_warn,
                info,
                mode,
                out,
            );
        }
        // A complete window back inside resolves the earlier ones; a lower
        // bound cannot show it is inside.
        if self.lower_bound {
            return;
        }
        if permit.cleared(avg, h, &permit) {
            self.resolve_earlier(RuleKind::AverageExceeded, book, mode, out);
        }
        if frac <= 0.0 || warn.cleared(avg, h, &permit) {
            self.resolve_earlier(RuleKind::EarlyWarning, book, mode, out);
        }
    }

    fn finding(&self, rule: RuleKind, bound: f64, message: String) -> Finding {
        let (start, end, avg) = (self.start, self.end, self.avg);
        Finding {
            rule,
            start,
            t: end,
            observed: avg,
            limit: bound,
            message,
            window_end: Some(end),
            opened_at: end,
            reference: avg,
        }
    }

    fn key(&self, rule: RuleKind) -> AlertKey {
        let (info, start, len) = (self.info, self.start, self.len);
        AlertKey {
            rule,
            station_id: info.station.clone(),
            parameter: info.parameter.clone(),
            window_start: start,
            window_len: Some(len),
        }
    }

    fn exceeded(&self, bound: f64) -> Finding {
        let (info, limit, avg, period) = (self.info, self.limit, self.avg, &self.period);
        self.finding(
            RuleKind::AverageExceeded,
            bound,
            format!(
                "Trung bình vượt quy chuẩn / average exceeded: {} trung bình {} {} {} {} {} ({}), trạm {}{}",
                info.parameter,
                period,
                shown(avg, self.lower_bound),
                info.unit,
                if avg > bound { ">" } else { "<" },
                num(bound),
                describe(limit),
                info.station,
                saturation_note(self.lower_bound)
            ),
        )
    }

    fn early_warning(&self, threshold: f64) -> Finding {
        let (info, limit, avg, period) = (self.info, self.limit, self.avg, &self.period);
        self.finding(
            RuleKind::EarlyWarning,
            threshold,
            format!(
                "Cảnh báo sớm / early warning: {} trung bình {} {} {} vượt ngưỡng cảnh báo {} ({}), trạm {}{}",
                info.parameter,
                period,
                shown(avg, self.lower_bound),
                info.unit,
                num(threshold),
                describe(limit),
                info.station,
                saturation_note(self.lower_bound)
            ),
        )
    }

    /// Resolves the active `rule` alerts of the earlier windows of this
    /// length: this one is back inside.
    fn resolve_earlier(
        &self,
        rule: RuleKind,
        book: &mut Book,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        let (info, len, start, end) = (self.info, self.len, self.start, self.end);
        for k in book.active_windows(rule, &info.station, &info.parameter, len, start) {
            book.auto_resolve(&k, end, mode, out);
        }
    }
}
