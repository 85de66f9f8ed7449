//! Incidents and the book of alerts. A rule's [`Finding`] is a breach of
//! its condition; an [`Incident`] is one condition on one series while it
//! lasts (a breach at a time it covers joins it); the [`Book`] holds every
//! alert the engine knows and opens, worsens and resolves them: a known key
//! is never opened twice, and warm-up opens nothing (changes to restored
//! alerts are queued for the next call).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Mode;
use super::series::SeriesInfo;
use crate::alert::{AlertEvent, AlertKey, AlertRecord, Change, RuleKind, State};

/// What a rule found, enough to open or update an alert.
#[derive(Debug)]
pub(super) struct Finding {
    pub(super) rule: RuleKind,
    pub(super) start: DateTime<Utc>,
    /// Event time of the evidence.
    pub(super) t: DateTime<Utc>,
    pub(super) observed: f64,
    pub(super) limit: f64,
    pub(super) message: String,
    pub(super) window_end: Option<DateTime<Utc>>,
    pub(super) opened_at: DateTime<Utc>,
    /// Flatline: the stuck value.
    pub(super) reference: f64,
}

/// One condition on one series while it lasts.
#[derive(Debug, Clone)]
pub(super) struct Incident {
    pub(super) key: AlertKey,
    /// Newest measurement time that showed the condition.
    pub(super) last: DateTime<Utc>,
    /// Measurement time that cleared it.
    pub(super) ended: Option<DateTime<Utc>>,
    /// `|observed − limit|` of the worst evidence.
    pub(super) worst: f64,
    pub(super) reference: f64,
}

impl Incident {
    /// Whether a breach at `t` belongs to this incident.
    pub(super) fn covers(&self, t: DateTime<Utc>) -> bool {
        self.key.window_start <= t && self.ended.is_none_or(|e| t < e)
    }
}

/// Every alert the engine knows, and events queued during warm-up.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub(super) alerts: BTreeMap<AlertKey, AlertRecord>,
    pub(super) pending: Vec<AlertEvent>,
}

impl Book {
    fn emit(&mut self, event: AlertEvent, mode: Mode, out: &mut Vec<AlertEvent>) {
        match mode {
            Mode::Live(_) => out.push(event),
            Mode::WarmUp => self.pending.push(event),
        }
    }

    /// Opens an alert unless its key is known (never twice) or in warm-up
    /// (suppressed: the incident is tracked, no alert is made).
    fn open(
        &mut self,
        key: AlertKey,
        f: Finding,
        info: &SeriesInfo,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.alerts.contains_key(&key) {
            return;
        }
        let Mode::Live(now) = mode else { return };
        let record = AlertRecord {
            severity: info.rules.severity.of(key.rule),
            key,
            state: State::Open,
            observed_value: f.observed,
            limit_value: f.limit,
            message: f.message,
            window_end: f.window_end,
            opened_at: f.opened_at,
            updated_at: now,
            last_notified_at: now,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_by: None,
            note: None,
            industrial_zone: info.zone.clone(),
            assignee: None,
        };
        out.push(AlertEvent {
            change: Change::Opened,
            alert: record.clone(),
            at: now,
        });
        self.alerts.insert(record.key.clone(), record);
    }

    /// A worse value for an active alert: `Updated`.
    fn worsen(&mut self, key: &AlertKey, f: Finding, mode: Mode, out: &mut Vec<AlertEvent>) {
        let Some(rec) = self.alerts.get_mut(key) else {
            return;
        };
        if !rec.is_active()
            || (f.observed - f.limit).abs() <= (rec.observed_value - rec.limit_value).abs()
        {
            return;
        }
        rec.observed_value = f.observed;
        rec.limit_value = f.limit;
        rec.message = f.message;
        if key.window_len.is_none() {
            rec.window_end = rec.window_end.max(Some(f.t));
        }
        rec.updated_at = mode.now_or(f.t);
        let event = AlertEvent {
            change: Change::Updated,
            alert: rec.clone(),
            at: mode.now_or(f.t),
        };
        self.emit(event, mode, out);
    }

    /// The condition cleared at event time `t`.
    pub(super) fn auto_resolve(
        &mut self,
        key: &AlertKey,
        t: DateTime<Utc>,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        let Some(rec) = self.alerts.get_mut(key) else {
            return;
        };
        if rec.resolve(None, "", mode.now_or(t)).is_err() {
            return;
        }
        if key.window_len.is_none() {
            rec.window_end = Some(t);
        }
        let event = AlertEvent {
            change: Change::Resolved { by: None },
            alert: rec.clone(),
            at: mode.now_or(t),
        };
        self.emit(event, mode, out);
    }

    /// Active window alerts of `rule` on a series with length `len` whose
    /// window starts before `before`.
    pub(super) fn active_windows(
        &self,
        rule: RuleKind,
        station: &str,
        parameter: &str,
        len: Duration,
        before: DateTime<Utc>,
    ) -> Vec<AlertKey> {
        let lo = AlertKey {
            rule,
            station_id: station.to_owned(),
            parameter: parameter.to_owned(),
            window_start: DateTime::<Utc>::MIN_UTC,
            window_len: None,
        };
        let hi = AlertKey {
            window_start: before,
            ..lo.clone()
        };
        self.alerts
            .range(lo..hi)
            .filter(|(k, r)| k.window_len == Some(len) && r.is_active())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A breach: joins the incident that covers `f.t`, or starts one (and
    /// opens its alert).
    pub(super) fn breach(
        &mut self,
        incidents: &mut Vec<Incident>,
        f: Finding,
        info: &SeriesInfo,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        let t = f.t;
        let score = (f.observed - f.limit).abs();
        // Almost always one incident covers `t` (a lasting condition):
        // only when several do is the book asked which one is active.
        let mut covers = incidents
            .iter()
            .enumerate()
            .filter(|(_, i)| i.covers(t))
            .map(|(n, _)| n);
        let covering = match (covers.next(), covers.next()) {
            (Some(only), None) => Some(only),
            (None, _) => None,
            (Some(a), Some(b)) => [a, b].into_iter().chain(covers).max_by_key(|&n| {
                let i = &incidents[n];
                let active = self.alerts.get(&i.key).is_some_and(AlertRecord::is_active);
                (active, i.key.window_start)
            }),
        };
        if let Some(n) = covering {
            let inc = &mut incidents[n];
            inc.last = inc.last.max(t);
            if let Some(rec) = self.alerts.get_mut(&inc.key)
                && rec.is_active()
            {
                rec.window_end = rec.window_end.max(Some(t));
            }
            if score > inc.worst {
                inc.worst = score;
                let key = inc.key.clone();
                if matches!(
                    key.rule,
                    RuleKind::LimitExceeded | RuleKind::EarlyWarning | RuleKind::SuddenChange
                ) {
                    self.worsen(&key, f, mode, out);
                }
            }
            return;
        }
        let key = AlertKey {
            rule: f.rule,
            station_id: info.station.clone(),
            parameter: info.parameter.clone(),
            window_start: f.start,
            window_len: None,
        };
        incidents.push(Incident {
            key: key.clone(),
            last: t,
            ended: None,
            worst: score,
            reference: f.reference,
        });
        self.open(key, f, info, mode, out);
    }

    /// A second, different value for a time already judged: one alert per
    /// (series, time), open until an officer resolves it; the first value
    /// stays the one judged. Warm-up raises nothing (the replayed stream
    /// holds only what was stored).
    pub(super) fn conflict(
        &mut self,
        info: &SeriesInfo,
        t: DateTime<Utc>,
        first: f64,
        r: &quantrac_proto::v1::StoredReading,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        let key = AlertKey {
            rule: RuleKind::ConflictingValue,
            station_id: info.station.clone(),
            parameter: info.parameter.clone(),
            window_start: t,
            window_len: None,
        };
        let f = Finding {
            rule: RuleKind::ConflictingValue,
            start: t,
            t,
            observed: r.value,
            limit: first,
            message: format!(
                "Giá trị mâu thuẫn / conflicting value: {} {} = {} {} arrived for {t}, already judged as {first}; \
                 the first value stands until an officer decides (see reading_conflicts)",
                info.station, info.parameter, r.value, r.unit
            ),
            window_end: Some(t),
            opened_at: mode.now_or(t),
            reference: first,
        };
        self.open(key, f, info, mode, out);
    }

    /// The condition is absent at `t`: ends every incident whose last
    /// evidence is older.
    pub(super) fn clear(
        &mut self,
        incidents: &mut [Incident],
        t: DateTime<Utc>,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        for inc in incidents
            .iter_mut()
            .filter(|i| i.ended.is_none() && i.last < t)
        {
            inc.ended = Some(t);
            self.auto_resolve(&inc.key, t, mode, out);
        }
    }

    /// A window judged: opens (or updates) its alert unless claimed.
    pub(super) fn window_alert(
        &mut self,
        key: AlertKey,
        f: Finding,
        claimed: &mut bool,
        info: &SeriesInfo,
        mode: Mode,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.alerts.contains_key(&key) {
            *claimed = true;
            self.worsen(&key, f, mode, out);
        } else if !*claimed {
            *claimed = true;
            self.open(key, f, info, mode, out);
        }
    }
}
