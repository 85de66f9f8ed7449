//! Small helpers: time arithmetic that saturates instead of panicking, the
//! local calendar (buckets aligned to local midnight), and how times and
//! numbers read in alert messages.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeDelta, TimeZone as _, Utc};

pub(super) const DAY: Duration = Duration::from_secs(86_400);

fn td(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

pub(super) fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_sub_signed(td(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(super) fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(td(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `a − b` as a std duration, zero when negative.
pub(super) fn since(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (a - b).to_std().unwrap_or(Duration::ZERO)
}

pub(super) fn minutes(d: Duration) -> f64 {
    d.as_secs_f64() / 60.0
}

/// Start of the `len` bucket holding `t`, buckets aligned to local midnight.
pub(super) fn bucket_start(t: DateTime<Utc>, len: Duration, offset: FixedOffset) -> DateTime<Utc> {
    let len = i64::try_from(len.as_secs()).unwrap_or(86_400).max(1);
    let off = i64::from(offset.local_minus_utc());
    let local = t.timestamp() + off;
    let start = local - local.rem_euclid(len) - off;
    DateTime::from_timestamp(start, 0).unwrap_or(t)
}

/// The first instant of `day` in local time, as UTC.
pub(super) fn local_midnight(day: NaiveDate, offset: FixedOffset) -> DateTime<Utc> {
    let midnight = day.and_time(chrono::NaiveTime::MIN);
    offset
        .from_local_datetime(&midnight)
        .single()
        .map_or_else(|| midnight.and_utc(), |t| t.to_utc())
}

pub(super) fn local_date(t: DateTime<Utc>, offset: FixedOffset) -> NaiveDate {
    t.with_timezone(&offset).date_naive()
}

pub(super) fn local_time(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A number for people: at most 3 decimals, no trailing zeros.
pub(super) fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}
