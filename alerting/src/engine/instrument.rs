//! The instrument-status rule, on the in-order stream: an episode of
//! calibrating, maintenance or device-error readings lasting too long, and
//! too many episodes starting in one local day.

use chrono::{DateTime, FixedOffset, Utc};

use super::Mode;
use super::incidents::{Book, Finding};
use super::series::{SeriesInfo, SeriesState};
use super::time::{DAY, add, bucket_start, local_date, local_time, minutes, num, since};
use crate::alert::{AlertEvent, AlertKey, RuleKind};

#[derive(Debug, Clone)]
pub(super) struct Episode {
    start: DateTime<Utc>,
    flag: String,
}

/// The instrument-status rule for a reading of the in-order stream.
#[allow(clippy::too_many_arguments)]
pub(super) fn status_rule(
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
            start_episode(info, state, book, t, qc, offset, mode, out);
        }
        episode_goes_on(info, state, book, t, qc, offset, mode, out);
    } else if measuring
        && state.episode.take().is_some()
        && let Some(list) = state.incidents.get_mut(&RuleKind::InstrumentStatus)
    {
        book.clear(list, t, mode, out);
    }
}

/// A new episode: counted in its local day, and more than `max_per_day`
/// in a day opens that day's alert (once).
#[allow(clippy::too_many_arguments)]
fn start_episode(
    info: &SeriesInfo,
    state: &mut SeriesState,
    book: &mut Book,
    t: DateTime<Utc>,
    qc: &str,
    offset: FixedOffset,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let rules = &info.rules.status;
    let today = local_date(t, offset);
    let day_start = bucket_start(t, DAY, offset);
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

/// The episode goes on at `t` (with the newest flag): lasting longer than
/// `max_duration` is a breach.
#[allow(clippy::too_many_arguments)]
fn episode_goes_on(
    info: &SeriesInfo,
    state: &mut SeriesState,
    book: &mut Book,
    t: DateTime<Utc>,
    qc: &str,
    offset: FixedOffset,
    mode: Mode,
    out: &mut Vec<AlertEvent>,
) {
    let rules = &info.rules.status;
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
}
