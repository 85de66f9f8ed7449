//! Judging averages against the permit: the limit in force at each
//! averaging period (a permit change inside a range shows as two limits),
//! how far above it, and in which sanction band (Decree 45/2022 art. 18
//! counts from 1.1x and 1.5x of the limit, then 2x, 3x, 5x, 10x).
//! Pure: the database reads are in `read`.

use chrono::{DateTime, TimeZone, Utc};

use crate::interval::local;
use crate::read::LimitRow;

/// Lower edges of the bands, as multiples of the limit.
pub const BANDS: [f64; 7] = [1.0, 1.1, 1.5, 2.0, 3.0, 5.0, 10.0];

/// A limit and the span it is in force within the asked range.
#[derive(Debug, Clone, PartialEq)]
pub struct InForce {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub limit: LimitRow,
}

/// Local midnight starting `date`: a permit applies from that moment.
pub fn local_midnight(date: chrono::NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .and_then(|n| local().from_local_datetime(&n).single())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The limits of one parameter (sorted by date) in force within
/// [start, end).
pub fn in_force(limits: &[LimitRow], start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<InForce> {
    let mut out = Vec::new();
    for (i, l) in limits.iter().enumerate() {
        let from = local_midnight(l.effective_from).max(start);
        // Until the next limit, or the end of the permit's last day.
        let replaced = limits
            .get(i + 1)
            .map(|n| local_midnight(n.effective_from))
            .unwrap_or(end);
        let expired = l
            .effective_to
            .and_then(|d| d.succ_opt())
            .map(local_midnight)
            .unwrap_or(end);
        let to = replaced.min(expired).min(end);
        if from < to {
            out.push(InForce {
                from,
                to,
                limit: l.clone(),
            });
        }
    }
    out
}

/// The limit in force at `t`.
pub fn at(periods: &[InForce], t: DateTime<Utc>) -> Option<&LimitRow> {
    periods
        .iter()
        .find(|p| p.from <= t && t < p.to)
        .map(|p| &p.limit)
}

/// One averaging period as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub average: Option<f64>,
    pub valid: u64,
    pub above_range: u64,
    pub expected: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub average: f64,
    pub limit: f64,
    pub multiple: f64,
    pub lower_bound: bool,
}

/// What a parameter's periods add up to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub periods: u64,
    pub judged: u64,
    pub exceeding: Vec<Judged>,
    /// Periods per band of `BANDS`.
    pub bands: [u64; BANDS.len()],
    pub valid: u64,
    pub expected: u64,
}

/// A logger's own hourly record (HJ 212 CN 2061): the hour from `start`
/// and its average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportedHour {
    pub start: DateTime<Utc>,
    pub average: f64,
}

/// Periods the station sent no real-time value for, filled from its own
/// hourly records: a logger configured to send only hourly data counts
/// toward completeness and is judged. Each hour reported stands for that
/// hour's expected values; the period's average is the mean of its hours.
/// A period with any real-time value keeps it (the records never mix).
/// Returns how many periods were filled.
pub fn fill_from_hourly(periods: &mut [Period], hours: &[ReportedHour]) -> usize {
    let mut filled = 0;
    for p in periods
        .iter_mut()
        .filter(|p| p.valid == 0 && p.above_range == 0)
    {
        let inside: Vec<f64> = hours
            .iter()
            .filter(|h| p.start <= h.start && h.start + chrono::Duration::hours(1) <= p.end)
            .map(|h| h.average)
            .filter(|a| a.is_finite())
            .collect();
        if inside.is_empty() {
            continue;
        }
        let hours_in_period = ((p.end - p.start).num_seconds() as f64 / 3600.0).max(1.0);
        let share = (inside.len() as f64 / hours_in_period).min(1.0);
        p.average = Some(inside.iter().sum::<f64>() / inside.len() as f64);
        p.valid = (p.expected as f64 * share).round() as u64;
        filled += 1;
    }
    filled
}

/// Judges each period with enough data against the limit in force at its
/// start. A period is judged when its valid and saturated readings reach
/// `min_coverage` of those expected; a saturated reading counts, as its
/// value is a lower bound of an exceedance.
pub fn judge(periods: &[Period], limits: &[InForce], min_coverage: f64) -> Summary {
    let mut s = Summary::default();
    for p in periods {
        s.periods += 1;
        s.valid += p.valid;
        s.expected += p.expected;
        let counted = p.valid + p.above_range;
        let enough = p.expected == 0 || counted as f64 >= min_coverage * p.expected as f64;
        let (Some(avg), true) = (p.average, enough) else {
            continue;
        };
        s.judged += 1;
        let Some(limit) = at(limits, p.start).and_then(|l| l.limit_max) else {
            continue;
        };
        if limit <= 0.0 || avg <= limit {
            continue;
        }
        let multiple = avg / limit;
        for (i, edge) in BANDS.iter().enumerate().rev() {
            if multiple >= *edge {
                s.bands[i] += 1;
                break;
            }
        }
        s.exceeding.push(Judged {
            start: p.start,
            end: p.end,
            average: avg,
            limit,
            multiple,
            lower_bound: p.above_range > 0,
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};

    fn limit(date: &str, max: f64) -> LimitRow {
        LimitRow {
            parameter: "COD".into(),
            effective_from: NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("date"),
            limit_min: None,
            limit_max: Some(max),
            regulation: "QCVN 40:2025/BTNMT".into(),
            column: "B".into(),
            effective_to: None,
            permit_number: String::new(),
            authority: String::new(),
            averaging: "single".into(),
            reference_o2: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("t")
            .with_timezone(&Utc)
    }

    /// A permit that ends leaves a gap until the next one: nothing is
    /// judged against an expired limit.
    #[test]
    fn an_expired_permit_stops_at_the_end_of_its_last_day() {
        let mut old = limit("2026-01-01", 150.0);
        old.effective_to = NaiveDate::from_ymd_opt(2026, 11, 10);
        let new = limit("2026-11-15", 100.0);
        let p = in_force(
            &[old, new],
            t("2026-11-01T00:00:00+07:00"),
            t("2026-12-01T00:00:00+07:00"),
        );
        let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = p.iter().map(|x| (x.from, x.to)).collect();
        assert_eq!(
            spans,
            vec![
                (
                    t("2026-11-01T00:00:00+07:00"),
                    t("2026-11-11T00:00:00+07:00")
                ),
                (
                    t("2026-11-15T00:00:00+07:00"),
                    t("2026-12-01T00:00:00+07:00")
                ),
            ]
        );
        assert!(
            at(&p, t("2026-11-12T12:00:00+07:00")).is_none(),
            "no permit in force"
        );
    }

    #[test]
    fn a_permit_change_shows_as_two_limits() {
        let limits = [limit("2026-01-01", 150.0), limit("2026-03-01", 100.0)];
        let p = in_force(
            &limits,
            t("2026-02-27T17:00:00Z"),
            t("2026-03-02T17:00:00Z"),
        );
        assert_eq!(p.len(), 2);
        // The new limit starts at local midnight of 1 March.
        assert_eq!(p[0].to, t("2026-02-28T17:00:00Z"));
        assert_eq!(p[1].from, t("2026-02-28T17:00:00Z"));
        assert_eq!(
            at(&p, t("2026-02-28T16:59:59Z")).and_then(|l| l.limit_max),
            Some(150.0)
        );
        assert_eq!(
            at(&p, t("2026-02-28T17:00:00Z")).and_then(|l| l.limit_max),
            Some(100.0)
        );
        // Before the first limit: none in force.
        assert!(
            in_force(
                &limits,
                t("2025-01-01T00:00:00Z"),
                t("2025-02-01T00:00:00Z")
            )
            .is_empty()
        );
    }

    fn period(start: &str, avg: f64, valid: u64, above: u64) -> Period {
        let s = t(start);
        Period {
            start: s,
            end: s + Duration::hours(1),
            average: Some(avg),
            valid,
            above_range: above,
            expected: 12,
        }
    }

    #[test]
    fn bands_coverage_and_lower_bounds() {
        let limits = in_force(
            &[limit("2026-01-01", 100.0)],
            t("2026-01-10T00:00:00Z"),
            t("2026-01-11T00:00:00Z"),
        );
        let periods = [
            period("2026-01-10T00:00:00Z", 90.0, 12, 0),  // under
            period("2026-01-10T01:00:00Z", 105.0, 12, 0), // 1.05x: band 1.0
            period("2026-01-10T02:00:00Z", 120.0, 12, 0), // 1.2x: band 1.1
            period("2026-01-10T03:00:00Z", 160.0, 10, 2), // 1.6x, saturated
            period("2026-01-10T04:00:00Z", 500.0, 5, 0),  // too few readings
        ];
        let s = judge(&periods, &limits, 0.75);
        assert_eq!((s.periods, s.judged, s.exceeding.len()), (5, 4, 3));
        assert_eq!(s.bands[..4], [1, 1, 1, 0]);
        assert!(s.exceeding[2].lower_bound && !s.exceeding[1].lower_bound);
        assert!((s.exceeding[1].multiple - 1.2).abs() < 1e-9);
        assert_eq!((s.valid, s.expected), (51, 60));
    }

    /// A logger that sends only hourly records: its hours count as complete
    /// and are judged; an hour with real-time values keeps them; a day
    /// with 18 of 24 hours reported is 75 % complete.
    #[test]
    fn hourly_records_fill_hours_without_real_time_values() {
        let hour = |start: &str, average| ReportedHour {
            start: t(start),
            average,
        };
        let empty = |start: &str| Period {
            average: None,
            valid: 0,
            ..period(start, 0.0, 0, 0)
        };
        let mut periods = [
            empty("2026-01-10T00:00:00Z"),
            period("2026-01-10T01:00:00Z", 90.0, 12, 0),
            empty("2026-01-10T02:00:00Z"),
        ];
        let hours = [
            hour("2026-01-10T00:00:00Z", 120.0),
            hour("2026-01-10T01:00:00Z", 500.0),
        ];
        assert_eq!(fill_from_hourly(&mut periods, &hours), 1);
        assert_eq!((periods[0].average, periods[0].valid), (Some(120.0), 12));
        assert_eq!((periods[1].average, periods[1].valid), (Some(90.0), 12));
        assert_eq!((periods[2].average, periods[2].valid), (None, 0));
        let limits = in_force(
            &[limit("2026-01-01", 100.0)],
            t("2026-01-10T00:00:00Z"),
            t("2026-01-11T00:00:00Z"),
        );
        let s = judge(&periods, &limits, 0.75);
        assert_eq!((s.judged, s.exceeding.len()), (2, 1));

        let mut day = [Period {
            start: t("2026-01-09T17:00:00Z"),
            end: t("2026-01-10T17:00:00Z"),
            average: None,
            valid: 0,
            above_range: 0,
            expected: 288,
        }];
        let hours: Vec<ReportedHour> = (0..18)
            .map(|h| ReportedHour {
                start: t("2026-01-09T17:00:00Z") + Duration::hours(h),
                average: 50.0,
            })
            .collect();
        assert_eq!(fill_from_hourly(&mut day, &hours), 1);
        assert_eq!((day[0].average, day[0].valid), (Some(50.0), 216));
    }
}
