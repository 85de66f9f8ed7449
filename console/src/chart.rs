//! A parameter's last hours as an SVG drawn on the server: no chart library,
//! nothing fetched. What Grafana gets wrong on purpose here:
//! - a gap (no reading for longer than 2.5 expected intervals) breaks the
//!   line, so missing data never looks like a steady value;
//! - values flagged by quality control are not joined into the line but
//!   marked (circles), and an analyser's saturated readings (`above_range`,
//!   a lower bound of the truth) are marked with a triangle;
//! - the permit limit is a dashed line with its value.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

use crate::html::esc;

/// One reading to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub value: f64,
    /// `valid`, `above_range`, `calibrating`, ...
    pub qc_flag: String,
}

/// What to draw besides the points.
#[derive(Debug, Clone)]
pub struct Frame {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub limit_max: Option<f64>,
    pub limit_min: Option<f64>,
    pub expected_interval: Duration,
    pub unit: String,
}

const W: f64 = 720.0;
const H: f64 = 180.0;
const PAD_L: f64 = 48.0;
const PAD_R: f64 = 8.0;
const PAD_T: f64 = 10.0;
const PAD_B: f64 = 22.0;

/// Runs of valid points with no gap inside: each becomes one polyline.
pub fn segments(points: &[Point], expected: Duration) -> Vec<Vec<&Point>> {
    let max_gap = expected * 5 / 2;
    let mut out: Vec<Vec<&Point>> = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    for p in points.iter().filter(|p| p.qc_flag == "valid") {
        match (last, out.last_mut()) {
            (Some(prev), Some(run)) if p.at - prev <= max_gap => run.push(p),
            _ => out.push(vec![p]),
        }
        last = Some(p.at);
    }
    out
}

/// The chart of `points` (sorted by time) over `frame`.
pub fn svg(points: &[Point], frame: &Frame, labels: &Labels) -> String {
    let span = (frame.end - frame.start).num_milliseconds().max(1) as f64;
    let mut lo = points.iter().map(|p| p.value).fold(f64::INFINITY, f64::min);
    let mut hi = points
        .iter()
        .map(|p| p.value)
        .fold(f64::NEG_INFINITY, f64::max);
    for l in [frame.limit_max, frame.limit_min].into_iter().flatten() {
        lo = lo.min(l);
        hi = hi.max(l);
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    lo = lo.min(0.0);
    if hi <= lo {
        hi = lo + 1.0;
    }
    hi += (hi - lo) * 0.08;
    let x = |t: DateTime<Utc>| {
        PAD_L + (t - frame.start).num_milliseconds() as f64 / span * (W - PAD_L - PAD_R)
    };
    let y = |v: f64| PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><rect class="plot" x="{PAD_L}" y="{PAD_T}" width="{}" height="{}"/>"#,
        esc(&frame.unit),
        W - PAD_L - PAD_R,
        H - PAD_T - PAD_B
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            s,
            r#"<text class="axis" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            PAD_L - 4.0,
            y(v) + 4.0,
            short(v)
        );
    }
    for h in [0, 6, 12, 18, 24] {
        let t = frame.start + (frame.end - frame.start) * h / 24;
        let _ = write!(
            s,
            r#"<text class="axis" x="{:.1}" y="{}" text-anchor="{}">{}</text>"#,
            x(t),
            H - 6.0,
            match h {
                0 => "start",
                24 => "end",
                _ => "middle",
            },
            crate::i18n::local_time(t).get(11..16).unwrap_or_default()
        );
    }
    for (l, class) in [(frame.limit_max, "limit"), (frame.limit_min, "limit min")] {
        if let Some(l) = l {
            let _ = write!(
                s,
                r#"<line class="{class}" x1="{PAD_L}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="limit-label" x="{}" y="{:.1}" text-anchor="end">{} {}</text>"#,
                W - PAD_R,
                W - PAD_R - 2.0,
                y(l) - 3.0,
                labels.limit,
                short(l),
                y = y(l),
            );
        }
    }
    for run in segments(points, frame.expected_interval) {
        if run.len() == 1 {
            let _ = write!(
                s,
                r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="2"/>"#,
                x(run[0].at),
                y(run[0].value)
            );
            continue;
        }
        s.push_str(r#"<polyline class="series" points=""#);
        for p in run {
            let _ = write!(s, "{:.1},{:.1} ", x(p.at), y(p.value));
        }
        s.push_str(r#""/>"#);
    }
    for p in points.iter().filter(|p| p.qc_flag != "valid") {
        let (cx, cy) = (x(p.at), y(p.value));
        if p.qc_flag == "above_range" {
            let _ = write!(
                s,
                r#"<path class="saturated" d="M{:.1},{:.1} l4,7 h-8 z"><title>{} ≥ {} ({})</title></path>"#,
                cx,
                cy - 4.0,
                labels.saturated,
                short(p.value),
                crate::i18n::local_time(p.at)
            );
        } else {
            let _ = write!(
                s,
                r#"<circle class="flagged" cx="{cx:.1}" cy="{cy:.1}" r="3"><title>{}: {} = {} ({})</title></circle>"#,
                labels.flagged,
                esc(&p.qc_flag),
                short(p.value),
                crate::i18n::local_time(p.at)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The chart's words, in the page's language.
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    pub limit: &'static str,
    pub flagged: &'static str,
    pub saturated: &'static str,
}

fn short(v: f64) -> String {
    crate::html::num(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).expect("t") + Duration::minutes(min)
    }

    fn p(min: i64, value: f64, flag: &str) -> Point {
        Point {
            at: at(min),
            value,
            qc_flag: flag.into(),
        }
    }

    const L: Labels = Labels {
        limit: "limit",
        flagged: "flagged",
        saturated: "saturated",
    };

    fn frame() -> Frame {
        Frame {
            start: at(0),
            end: at(24 * 60),
            limit_max: Some(75.0),
            limit_min: None,
            expected_interval: Duration::minutes(5),
            unit: "mg/L".into(),
        }
    }

    #[test]
    fn a_gap_breaks_the_line_and_flags_are_not_joined() {
        // 0, 5, 10; silence for 40 minutes; 50, 55; a calibrating value at 60
        // between them is not part of a run, so 55 and 65 still join.
        let pts = vec![
            p(0, 10.0, "valid"),
            p(5, 11.0, "valid"),
            p(10, 12.0, "valid"),
            p(50, 13.0, "valid"),
            p(55, 14.0, "valid"),
            p(60, 99.0, "calibrating"),
            p(65, 15.0, "valid"),
            p(70, 2_000.0, "above_range"),
        ];
        let runs = segments(&pts, Duration::minutes(5));
        let lens: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![3, 3]);
        let svg = svg(&pts, &frame(), &L);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches(r#"class="flagged""#).count(), 1);
        assert_eq!(svg.matches(r#"class="saturated""#).count(), 1);
        assert!(svg.contains("saturated ≥ 2000"), "{svg}");
        assert_eq!(svg.matches(r#"<line class="limit""#).count(), 1);
        assert!(svg.contains("limit 75<"), "{svg}");
    }

    #[test]
    fn twelve_and_a_half_minutes_is_still_a_line_thirteen_is_a_gap() {
        let joined = [
            p(0, 1.0, "valid"),
            Point {
                at: at(0) + Duration::seconds(750),
                ..p(0, 2.0, "valid")
            },
        ];
        assert_eq!(segments(&joined, Duration::minutes(5)).len(), 1);
        let apart = [p(0, 1.0, "valid"), p(13, 2.0, "valid")];
        assert_eq!(segments(&apart, Duration::minutes(5)).len(), 2);
    }

    #[test]
    fn no_points_draws_an_empty_frame() {
        let s = svg(&[], &frame(), &L);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 0);
    }
}
