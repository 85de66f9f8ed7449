//! Alert types and their lifecycle.
//!
//! One incident is one alert, identified by its [`AlertKey`]: the rule, the
//! station, the parameter and the window. The key is derived from the data
//! alone (measurement times, never arrival times), so judging the same
//! readings twice (a replayed topic, a restart) yields the same key and the
//! engine can refuse to open it again.
//!
//! Lifecycle: `Open -> Acknowledged -> Resolved`, or `Open -> Resolved`.
//! `Resolved` is final for a key: when the condition comes back later it is a
//! new incident, with a later `window_start` and so a new key. Every change is
//! reported as an [`AlertEvent`]; the events are the alert's history.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use quantrac_proto::domain::{from_timestamp, to_timestamp};
use quantrac_proto::v1;
use serde::{Deserialize, Serialize};

/// The kind of rule that raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// One valid reading outside the permit limit (above Cmax, or outside a
    /// pH-style range).
    LimitExceeded,
    /// The average of a complete window (clock hour, local day, ...) outside
    /// the permit limit.
    AverageExceeded,
    /// A value or a window average past a configured fraction of the limit.
    EarlyWarning,
    /// A rise faster than a configured rate.
    SuddenChange,
    /// A station (parameter `""`) or one of its parameters silent too long.
    DataGap,
    /// An instrument calibrating or in error too long, or too often a day.
    InstrumentStatus,
    /// The same value for too many consecutive readings.
    Flatline,
    /// A second, different value for a (station, parameter, time) already
    /// judged: a logger correcting itself, or someone writing as the
    /// station. The first value stays judged; an officer must look.
    ConflictingValue,
    /// An instrument whose calibration or inspection (kiểm định) has run
    /// out, by the registry's dates: one alert per instrument and day.
    InstrumentExpired,
}

impl RuleKind {
    pub const ALL: [RuleKind; 9] = [
        RuleKind::LimitExceeded,
        RuleKind::AverageExceeded,
        RuleKind::EarlyWarning,
        RuleKind::SuddenChange,
        RuleKind::DataGap,
        RuleKind::InstrumentStatus,
        RuleKind::Flatline,
        RuleKind::ConflictingValue,
        RuleKind::InstrumentExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::LimitExceeded => "limit_exceeded",
            RuleKind::AverageExceeded => "average_exceeded",
            RuleKind::EarlyWarning => "early_warning",
            RuleKind::SuddenChange => "sudden_change",
            RuleKind::DataGap => "data_gap",
            RuleKind::InstrumentStatus => "instrument_status",
            RuleKind::Flatline => "flatline",
            RuleKind::ConflictingValue => "conflicting_value",
            RuleKind::InstrumentExpired => "instrument_expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        RuleKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn to_proto(self) -> v1::AlertSeverity {
        match self {
            Severity::Info => v1::AlertSeverity::Info,
            Severity::Warning => v1::AlertSeverity::Warning,
            Severity::Critical => v1::AlertSeverity::Critical,
        }
    }

    pub fn from_proto(s: v1::AlertSeverity) -> Option<Self> {
        match s {
            v1::AlertSeverity::Info => Some(Severity::Info),
            v1::AlertSeverity::Warning => Some(Severity::Warning),
            v1::AlertSeverity::Critical => Some(Severity::Critical),
            v1::AlertSeverity::Unspecified => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Acknowledged,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acknowledged => "acknowledged",
            State::Resolved => "resolved",
        }
    }

    /// Open or acknowledged: the incident is not over.
    pub fn is_active(self) -> bool {
        !matches!(self, State::Resolved)
    }

    pub fn to_proto(self) -> v1::AlertState {
        match self {
            State::Open => v1::AlertState::Open,
            State::Acknowledged => v1::AlertState::Acknowledged,
            State::Resolved => v1::AlertState::Resolved,
        }
    }

    pub fn from_proto(s: v1::AlertState) -> Option<Self> {
        match s {
            v1::AlertState::Open => Some(State::Open),
            v1::AlertState::Acknowledged => Some(State::Acknowledged),
            v1::AlertState::Resolved => Some(State::Resolved),
            v1::AlertState::Unspecified => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deduplication key of an alert: rule, station, parameter, window.
///
/// `window_start` is derived from the data:
/// - incidents (limit, early warning on a value, sudden change, flatline,
///   instrument status too long, data gap): the measurement time at which the
///   incident started (for a data gap: the newest measurement time before the
///   silence; for a flatline: the first reading of the run; for a status
///   episode: its first calibrating/error reading);
/// - windows (averages, early warning on an average, status too often a day):
///   the bucket start, and `window_len` is the bucket length. Two windows of
///   different lengths can start at the same instant (the 1 h and the 24 h
///   window at local midnight), so the length is part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    pub rule: RuleKind,
    pub station_id: String,
    /// Canonical parameter code; `""` for a station-wide data gap.
    pub parameter: String,
    pub window_start: DateTime<Utc>,
    /// `Some` for window alerts (the bucket length), `None` for incidents.
    #[serde(default, with = "humantime_serde")]
    pub window_len: Option<Duration>,
}

impl AlertKey {
    /// Stable text id, e.g. `limit_exceeded/PY-HH-WW01/COD/2025-01-15T03:35:00Z`
    /// or `average_exceeded/PY-HH-WW01/COD/2025-01-15T03:00:00Z/1h`. `/` and
    /// `%` inside a station id or parameter code are percent-encoded, so
    /// [`AlertKey::parse`] reads every id back.
    pub fn id(&self) -> String {
        let mut id = format!(
            "{}/{}/{}/{}",
            self.rule.as_str(),
            escape(&self.station_id),
            escape(&self.parameter),
            self.window_start
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
        );
        if let Some(len) = self.window_len {
            id.push('/');
            id.push_str(&format_len(len));
        }
        id
    }

    /// The key an [`AlertKey::id`] was made from.
    pub fn parse(id: &str) -> Option<AlertKey> {
        let mut parts = id.split('/');
        let rule = RuleKind::parse(parts.next()?)?;
        let station_id = unescape(parts.next()?)?;
        let parameter = unescape(parts.next()?)?;
        let window_start = DateTime::parse_from_rfc3339(parts.next()?)
            .ok()?
            .with_timezone(&Utc);
        let window_len = match parts.next() {
            None => None,
            Some(len) => Some(parse_len(len)?),
        };
        if parts.next().is_some() || station_id.is_empty() {
            return None;
        }
        Some(AlertKey {
            rule,
            station_id,
            parameter,
            window_start,
            window_len,
        })
    }

    /// End of the window for window alerts.
    pub fn window_end(&self) -> Option<DateTime<Utc>> {
        let len = TimeDelta::from_std(self.window_len?).ok()?;
        self.window_start.checked_add_signed(len)
    }
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        match code {
            "25" => out.push('%'),
            "2F" | "2f" => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// `1h`, `24h`, `30m`, `90s`: the shortest exact form.
pub(crate) fn format_len(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn parse_len(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        _ => None,
    }
}

/// An alert as the engine and the database keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub key: AlertKey,
    pub severity: Severity,
    pub state: State,
    /// The worst value seen in the incident (a reading, an average, a rate
    /// per hour, minutes of silence, ...), in the parameter's unit.
    pub observed_value: f64,
    /// The bound it is judged against (Cmax, the range bound crossed, the
    /// warning threshold, the allowed rate, ...).
    pub limit_value: f64,
    /// For people, Vietnamese first.
    pub message: String,
    /// Windows: the bucket end. Incidents: the newest measurement time that
    /// still showed the condition while open, then the measurement time that
    /// cleared it.
    pub window_end: Option<DateTime<Utc>>,
    /// Event time: the measurement time at which the condition was known.
    pub opened_at: DateTime<Utc>,
    /// Wall clock of the last change.
    pub updated_at: DateTime<Utc>,
    /// Wall clock of the last notification (open or re-notification).
    pub last_notified_at: DateTime<Utc>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Officer who resolved it by hand; `None` when resolved automatically.
    pub resolved_by: Option<String>,
    /// The last officer's note (acknowledgement, resolution, assignment
    /// or comment).
    pub note: Option<String>,
    pub industrial_zone: String,
    /// The officer it is assigned to.
    #[serde(default)]
    pub assignee: Option<String>,
}

impl AlertRecord {
    pub fn id(&self) -> String {
        self.key.id()
    }

    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }

    /// `Open -> Acknowledged`.
    pub fn acknowledge(
        &mut self,
        officer: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<(), (State, &'static str)> {
        if self.state != State::Open {
            return Err((self.state, "acknowledge"));
        }
        self.state = State::Acknowledged;
        self.acknowledged_by = Some(officer.to_owned());
        self.acknowledged_at = Some(now);
        if !note.is_empty() {
            self.note = Some(note.to_owned());
        }
        self.updated_at = now;
        Ok(())
    }

    /// `Open | Acknowledged -> Resolved`, by an officer (`Some`) or by the
    /// engine (`None`).
    pub fn resolve(
        &mut self,
        by: Option<&str>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<(), (State, &'static str)> {
        if !self.state.is_active() {
            return Err((self.state, "resolve"));
        }
        self.state = State::Resolved;
        self.resolved_by = by.map(str::to_owned);
        if !note.is_empty() {
            self.note = Some(note.to_owned());
        }
        self.updated_at = now;
        Ok(())
    }

    /// An active alert handed to `assignee` (by an officer).
    pub fn assign(
        &mut self,
        assignee: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<(), (State, &'static str)> {
        if !self.state.is_active() {
            return Err((self.state, "assign"));
        }
        self.assignee = Some(assignee.to_owned());
        self.note = Some(note.to_owned())
            .filter(|n| !n.is_empty())
            .or(self.note.take());
        self.updated_at = now;
        Ok(())
    }

    /// A comment on an active alert: it becomes the alert's note and a line
    /// of its history.
    pub fn comment(&mut self, text: &str, now: DateTime<Utc>) -> Result<(), (State, &'static str)> {
        if !self.state.is_active() {
            return Err((self.state, "comment on"));
        }
        self.note = Some(text.to_owned());
        self.updated_at = now;
        Ok(())
    }

    /// The protobuf form (`sequence` is the event log position, kept by the
    /// service).
    pub fn to_proto(&self, sequence: u64) -> v1::Alert {
        v1::Alert {
            id: self.id(),
            rule: self.key.rule.as_str().to_owned(),
            station_id: self.key.station_id.clone(),
            parameter: self.key.parameter.clone(),
            window_start: Some(to_timestamp(self.key.window_start)),
            window_end: self.window_end.map(to_timestamp),
            severity: self.severity.to_proto().into(),
            state: self.state.to_proto().into(),
            observed_value: self.observed_value,
            limit_value: self.limit_value,
            message: self.message.clone(),
            opened_at: Some(to_timestamp(self.opened_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
            acknowledged_by: self.acknowledged_by.clone().unwrap_or_default(),
            note: self.note.clone().unwrap_or_default(),
            industrial_zone: self.industrial_zone.clone(),
            sequence,
            assignee: self.assignee.clone().unwrap_or_default(),
        }
    }

    /// Back from the protobuf form (for [`crate::engine::Engine::restore`]
    /// from a store that keeps `Alert` messages). The key comes from the id;
    /// fields the message lacks (`last_notified_at`, `acknowledged_at`,
    /// `resolved_by`) are taken from `updated_at` or left empty.
    pub fn from_proto(alert: &v1::Alert) -> Option<AlertRecord> {
        let key = AlertKey::parse(&alert.id)?;
        let time = |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(from_timestamp);
        let opened_at = time(&alert.opened_at)?;
        let updated_at = time(&alert.updated_at).unwrap_or(opened_at);
        let state = State::from_proto(v1::AlertState::try_from(alert.state).ok()?)?;
        let severity = Severity::from_proto(v1::AlertSeverity::try_from(alert.severity).ok()?)?;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Some(AlertRecord {
            key,
            severity,
            state,
            observed_value: alert.observed_value,
            limit_value: alert.limit_value,
            message: alert.message.clone(),
            window_end: time(&alert.window_end),
            opened_at,
            updated_at,
            last_notified_at: updated_at,
            acknowledged_by: non_empty(&alert.acknowledged_by),
            acknowledged_at: None,
            resolved_by: None,
            note: non_empty(&alert.note),
            industrial_zone: alert.industrial_zone.clone(),
            assignee: non_empty(&alert.assignee),
        })
    }
}

/// What happened to an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Opened,
    /// The incident got worse (a higher value, a higher average).
    Updated,
    /// Still open and not acknowledged after the re-notification interval.
    Renotified,
    Acknowledged,
    /// `by`: the officer, or `None` when the condition cleared.
    Resolved {
        by: Option<String>,
    },
    /// Handed to an officer, by `by`.
    Assigned {
        by: String,
    },
    /// A comment in the alert's thread, by `by`.
    Commented {
        by: String,
    },
}

impl Change {
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Updated => "updated",
            Change::Renotified => "renotified",
            Change::Acknowledged => "acknowledged",
            Change::Resolved { .. } => "resolved",
            Change::Assigned { .. } => "assigned",
            Change::Commented { .. } => "commented",
        }
    }
}

/// One change of one alert, with the alert as it is after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub change: Change,
    pub alert: AlertRecord,
    /// Wall clock of the change.
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(len: Option<Duration>) -> AlertKey {
        AlertKey {
            rule: RuleKind::AverageExceeded,
            station_id: "PY/HH%1".into(),
            parameter: "PM2,5".into(),
            window_start: DateTime::from_timestamp(1_736_910_000, 0).unwrap_or_default(),
            window_len: len,
        }
    }

    #[test]
    fn id_round_trips() {
        for len in [
            None,
            Some(Duration::from_secs(3600)),
            Some(Duration::from_secs(86_400)),
            Some(Duration::from_secs(1800)),
            Some(Duration::from_secs(45)),
        ] {
            let k = key(len);
            assert_eq!(AlertKey::parse(&k.id()), Some(k.clone()), "{}", k.id());
        }
        assert_eq!(
            key(Some(Duration::from_secs(3600))).id(),
            "average_exceeded/PY%2FHH%251/PM2,5/2025-01-15T03:00:00Z/1h"
        );
        assert_eq!(AlertKey::parse("nonsense/a/b/c"), None);
        assert_eq!(
            AlertKey::parse("flatline/a/b/2025-01-15T03:00:00Z/1h/x"),
            None
        );
    }
}
