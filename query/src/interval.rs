//! Bucket intervals and the grid of buckets over a range, in local time
//! (Asia/Ho_Chi_Minh: UTC+7 all year since 1975, no daylight saving).
//!
//! Minutes and hours are fixed lengths aligned to local midnight; days
//! start at local midnight; months and years at local midnight on the 1st,
//! so a month bucket is 28 to 31 days long and a report by month matches
//! the calendar an officer reads.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Utc};

/// UTC+7, the offset of every Vietnamese local time.
pub fn local() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// A fixed length: 1 minute to 31 days.
    Fixed(Duration),
    /// Calendar months: 1 to 12 (a year is 12).
    Months(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interval {given:?}: {why} (examples: 5m, 1h, 1d, 7d, 1mo, 3mo, 1y)")]
pub struct IntervalError {
    pub given: String,
    pub why: &'static str,
}

impl std::str::FromStr for Interval {
    type Err = IntervalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| IntervalError {
            given: s.to_string(),
            why,
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad("no unit"))?;
        let (n, unit) = t.split_at(split);
        let n: u32 = n.parse().map_err(|_| bad("no number"))?;
        if n == 0 {
            return Err(bad("must be at least 1"));
        }
        let fixed = |secs: i64| {
            let total = secs
                .checked_mul(i64::from(n))
                .ok_or_else(|| bad("too long"))?;
            if total > 31 * 86_400 {
                return Err(bad(
                    "fixed intervals go up to 31d; use months (mo) or years (y)",
                ));
            }
            Ok(Interval::Fixed(Duration::seconds(total)))
        };
        match unit {
            "m" | "min" => fixed(60),
            "h" => fixed(3_600),
            "d" => fixed(86_400),
            "w" => fixed(7 * 86_400),
            "mo" if n <= 12 && 12 % n == 0 => Ok(Interval::Months(n)),
            "mo" => Err(bad("months must divide a year: 1, 2, 3, 4, 6 or 12")),
            "y" if n == 1 => Ok(Interval::Months(12)),
            "y" => Err(bad("at most 1y")),
            _ => Err(bad("unknown unit: m, h, d, w, mo or y")),
        }
    }
}

/// Local midnight of 2000-01-01: fixed buckets are counted from it, so an
/// hour or a day starts where a local clock says it does.
fn origin() -> DateTime<Utc> {
    local()
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl Interval {
    /// The start of the bucket holding `t`.
    pub fn floor(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Interval::Fixed(len) => {
                let o = origin();
                let step = len.num_seconds().max(1);
                let k = (t - o).num_seconds().div_euclid(step);
                o + Duration::seconds(k * step)
            }
            Interval::Months(n) => {
                let l = t.with_timezone(&local());
                let m0 = l.month0() - l.month0() % n;
                month_start(l.year(), m0)
            }
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Interval::Fixed(len) => start + len,
            Interval::Months(n) => {
                let l = start.with_timezone(&local());
                let m = l.month0() + n;
                month_start(l.year() + (m / 12) as i32, m % 12)
            }
        }
    }

    /// Bucket starts covering [start, end), at most `max` of them;
    /// `None` when there would be more.
    pub fn grid(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        max: usize,
    ) -> Option<Vec<DateTime<Utc>>> {
        let mut out = Vec::new();
        let mut b = self.floor(start);
        while b < end {
            if out.len() == max {
                return None;
            }
            out.push(b);
            b = self.next(b);
        }
        Some(out)
    }
}

fn month_start(year: i32, month0: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, month0 + 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|n| local().from_local_datetime(&n).single())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!("5m".parse(), Ok(Interval::Fixed(Duration::minutes(5))));
        assert_eq!("1h".parse(), Ok(Interval::Fixed(Duration::hours(1))));
        assert_eq!("1d".parse(), Ok(Interval::Fixed(Duration::days(1))));
        assert_eq!("3mo".parse(), Ok(Interval::Months(3)));
        assert_eq!("1y".parse(), Ok(Interval::Months(12)));
        for bad in ["", "h", "0h", "5", "5x", "32d", "5mo", "2y", "-1h"] {
            assert!(bad.parse::<Interval>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn days_start_at_local_midnight() {
        let d: Interval = "1d".parse().expect("1d");
        // 2026-03-10 03:00 local is 2026-03-09 20:00 UTC: its day started at
        // 2026-03-09 17:00 UTC.
        assert_eq!(
            d.floor(utc("2026-03-09T20:00:00Z")),
            utc("2026-03-09T17:00:00Z")
        );
    }

    #[test]
    fn months_follow_the_calendar() {
        let m: Interval = "1mo".parse().expect("1mo");
        let g = m
            .grid(utc("2026-01-15T00:00:00Z"), utc("2026-04-01T00:00:00Z"), 10)
            .expect("grid");
        assert_eq!(
            g,
            vec![
                utc("2025-12-31T17:00:00Z"),
                utc("2026-01-31T17:00:00Z"),
                utc("2026-02-28T17:00:00Z"),
                utc("2026-03-31T17:00:00Z"),
            ]
        );
        let q: Interval = "3mo".parse().expect("3mo");
        assert_eq!(
            q.floor(utc("2026-08-20T00:00:00Z")),
            utc("2026-06-30T17:00:00Z")
        );
        let y: Interval = "1y".parse().expect("1y");
        assert_eq!(
            y.next(y.floor(utc("2026-08-20T00:00:00Z"))),
            utc("2026-12-31T17:00:00Z")
        );
    }

    #[test]
    fn grid_is_bounded() {
        let m: Interval = "1m".parse().expect("1m");
        assert!(
            m.grid(
                utc("2026-01-01T00:00:00Z"),
                utc("2026-01-02T00:00:00Z"),
                100
            )
            .is_none()
        );
    }

    proptest! {
        // Every instant lies in the bucket its floor starts, and buckets
        // tile time without gaps or overlaps.
        #[test]
        fn buckets_tile_time(secs in 0i64..2_000_000_000, which in 0usize..8) {
            let iv: Interval = ["1m", "5m", "1h", "1d", "7d", "1mo", "3mo", "1y"][which]
                .parse().expect("interval");
            let t = DateTime::<Utc>::from_timestamp(secs, 0).expect("time");
            let b = iv.floor(t);
            prop_assert!(b <= t && t < iv.next(b));
            prop_assert_eq!(iv.floor(iv.next(b)), iv.next(b));
            prop_assert_eq!(iv.floor(b), b);
        }
    }
}
