//! Rule configuration: built-in defaults, then the file's `[defaults]`, then
//! `[parameters.<code>]`, then `[stations.<id>]`, then
//! `[stations.<id>.parameters.<code>]`; each layer sets only what it names.
//! See `deploy/rules.toml` for every knob and its default.
//!
//! The file is checked when loaded: unknown keys, wrong types and values out
//! of range are refused, and the error names the line and the field. Permit
//! limits are not here: they are data in the station registry (architecture
//! invariant 6); this file only says how to judge against them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{FixedOffset, Offset, Utc};
use humantime_serde::re::humantime;
use quantrac_proto::registry::Registry;
use serde::Deserialize;
use thiserror::Error;

use crate::alert::{RuleKind, Severity};

/// Reporting interval assumed for a parameter the registry does not know.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Why a rules file was refused.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("cannot read rules file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse or a value is not allowed. `line` and
    /// `column` are 1-based; `field` is the key as written (with the table
    /// it is in), when the error points at one.
    #[error("{}line {line}, column {column}{}: {message}",
        path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default(),
        field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        line: usize,
        column: usize,
        field: Option<String>,
        message: String,
    },
}

impl RulesError {
    /// The 1-based line the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            RulesError::Invalid { line, .. } => Some(*line),
            RulesError::Io { .. } => None,
        }
    }

    fn from_toml(text: &str, e: &toml::de::Error) -> RulesError {
        let offset = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        RulesError::Invalid {
            path: None,
            line,
            column,
            field: e.span().and_then(|s| field_at(text, s.start, s.end)),
            message: e.message().trim().to_owned(),
        }
    }
}

/// The key a span points at (`averages.completeness`), prefixed with the
/// table header it is under (`[parameters.COD] averages.completeness`).
fn field_at(text: &str, start: usize, end: usize) -> Option<String> {
    let start = start.min(text.len());
    let end = end.clamp(start, text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[line_start..line_end];
    let is_key = |c: char| c.is_ascii_alphanumeric() || "_-.\"',".contains(c);
    let spanned = text.get(start..end).unwrap_or("").trim();
    let header = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[').then(|| l.to_owned())
    });
    // A span on a key (unknown field) or on a `key = value` value.
    let key = if !spanned.is_empty() && spanned.chars().all(is_key) && !spanned.contains(',') {
        let rest = line_end.min(end);
        let after = text.get(rest..line_end).unwrap_or("").trim_start();
        if after.starts_with('=') || after.starts_with('.') {
            Some(spanned.to_owned())
        } else {
            None
        }
    } else {
        None
    };
    let key = key.or_else(|| {
        let head = text.get(line_start..start)?.trim_end();
        let head = head.strip_suffix('=')?.trim_end();
        let k: String = head
            .chars()
            .rev()
            .take_while(|&c| is_key(c) && c != ',')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        (!k.is_empty()).then_some(k)
    });
    // Inside inline tables (`flatline = { count = 1 }`): prefix their keys.
    let key = key.map(|k| {
        let head = text.get(line_start..start).unwrap_or("");
        let mut stack: Vec<String> = Vec::new();
        let mut last_key = String::new();
        let mut current = String::new();
        for c in head.chars() {
            match c {
                '{' => stack.push(std::mem::take(&mut last_key)),
                '}' => {
                    stack.pop();
                }
                '=' => last_key = std::mem::take(&mut current).trim().to_owned(),
                ',' => current.clear(),
                c => current.push(c),
            }
        }
        stack.retain(|s| !s.is_empty());
        stack.push(k);
        stack.join(".")
    });
    match (header, key) {
        (_, None) if line.trim_start().starts_with('[') => Some(line.trim().to_owned()),
        (Some(h), Some(k)) => Some(format!("{h} {k}")),
        (None, Some(k)) => Some(k),
        (_, None) => None,
    }
}

// ---------------------------------------------------------------------------
// Effective rules

/// The rules that apply to one station's parameter, all layers merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamRules {
    pub single_limit: SingleLimitRule,
    pub averages: AverageRule,
    pub early_warning: EarlyWarningRule,
    pub sudden_change: SuddenChangeRule,
    pub gap: GapRule,
    pub status: StatusRule,
    pub flatline: FlatlineRule,
    /// Auto-resolve margin, as a fraction: a maximum clears below
    /// `bound × (1 − h)`, a minimum above `bound × (1 + h)`; for a range
    /// (pH: min and max) both sides use `h × (max − min)`.
    pub hysteresis: f64,
    /// Re-notify an open, unacknowledged alert this often; zero: never.
    pub renotify_every: Duration,
    pub severity: Severities,
}

impl Default for ParamRules {
    fn default() -> Self {
        ParamRules {
            single_limit: SingleLimitRule { enabled: true },
            averages: AverageRule {
                enabled: true,
                windows: vec![HOUR, DAY],
                completeness: 0.75,
                grace: Duration::from_secs(15 * 60),
            },
            early_warning: EarlyWarningRule { fraction: 0.8 },
            sudden_change: SuddenChangeRule {
                max_rise_per_hour: None,
            },
            gap: GapRule {
                enabled: true,
                factor: 3.0,
                min: Duration::from_secs(15 * 60),
            },
            status: StatusRule {
                enabled: true,
                max_duration: Duration::from_secs(2 * 3600),
                max_per_day: 4,
            },
            flatline: FlatlineRule {
                count: 12,
                tolerance: 0.0,
            },
            hysteresis: 0.05,
            renotify_every: HOUR,
            severity: Severities::default(),
        }
    }
}

/// A single valid reading against the permit limit.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleLimitRule {
    pub enabled: bool,
}

/// Window averages against the permit limit.
#[derive(Debug, Clone, PartialEq)]
pub struct AverageRule {
    pub enabled: bool,
    /// Window lengths; each divides a day, and windows are aligned to local
    /// midnight (clock hours, local days).
    pub windows: Vec<Duration>,
    /// Fraction of the expected readings (`window / expected_interval`) a
    /// window must hold, valid, for its average to count.
    pub completeness: f64,
    /// Wall-clock wait after a window's end before `tick` judges it when no
    /// later reading has closed it.
    pub grace: Duration,
}

/// Warning before the limit, on values and on averages.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyWarningRule {
    /// Warn past this fraction of the limit (`0`: off): above `f × Cmax`.
    /// For a range (pH), within `(1 − f)(max − min)` of either bound: above
    /// `max − (1 − f)(max − min)` or below `min + (1 − f)(max − min)`.
    /// A value past the limit itself is a limit alert, not a warning.
    pub fraction: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SuddenChangeRule {
    /// Alert when a valid value rises faster than this (unit per hour) from
    /// the previous valid value; `None`: off.
    pub max_rise_per_hour: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GapRule {
    pub enabled: bool,
    /// Silent longer than `factor × expected_interval` (and than `min`).
    pub factor: f64,
    pub min: Duration,
}

impl GapRule {
    /// How long a series with this interval may be silent.
    pub fn threshold(&self, interval: Duration) -> Duration {
        interval.mul_f64(self.factor).max(self.min)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusRule {
    pub enabled: bool,
    /// Calibrating / maintenance / device error for longer than this (event
    /// time); zero: off.
    pub max_duration: Duration,
    /// More episodes than this in one local day; zero: off.
    pub max_per_day: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlatlineRule {
    /// Consecutive valid readings within `tolerance` of each other that make
    /// a flatline; zero: off.
    pub count: u32,
    pub tolerance: f64,
}

/// Severity of each rule kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Severities {
    pub limit_exceeded: Severity,
    pub average_exceeded: Severity,
    pub early_warning: Severity,
    pub sudden_change: Severity,
    pub data_gap: Severity,
    pub instrument_status: Severity,
    pub flatline: Severity,
    pub conflicting_value: Severity,
    pub instrument_expired: Severity,
}

impl Default for Severities {
    fn default() -> Self {
        Severities {
            limit_exceeded: Severity::Critical,
            average_exceeded: Severity::Critical,
            early_warning: Severity::Warning,
            sudden_change: Severity::Warning,
            data_gap: Severity::Warning,
            instrument_status: Severity::Warning,
            flatline: Severity::Warning,
            conflicting_value: Severity::Warning,
            instrument_expired: Severity::Warning,
        }
    }
}

impl Severities {
    pub fn of(&self, kind: RuleKind) -> Severity {
        match kind {
            RuleKind::LimitExceeded => self.limit_exceeded,
            RuleKind::AverageExceeded => self.average_exceeded,
            RuleKind::EarlyWarning => self.early_warning,
            RuleKind::SuddenChange => self.sudden_change,
            RuleKind::DataGap => self.data_gap,
            RuleKind::InstrumentStatus => self.instrument_status,
            RuleKind::Flatline => self.flatline,
            RuleKind::ConflictingValue => self.conflicting_value,
            RuleKind::InstrumentExpired => self.instrument_expired,
        }
    }
}

/// Engine-wide settings (`[engine]`).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// A reading older than the newest of its series by more than this is
    /// too late: it is counted and dropped. It also bounds what the engine
    /// remembers per series (readings seen, closed windows).
    pub max_lateness: Duration,
    /// A reading measured more than this after the wall clock is dropped
    /// (a station clock in the future would otherwise make every later
    /// reading look late).
    pub max_future: Duration,
    /// Local time: day windows start at local midnight and the permit limit
    /// in force is the one of the local date.
    pub utc_offset: FixedOffset,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_lateness: Duration::from_secs(26 * 3600),
            max_future: Duration::from_secs(3600),
            utc_offset: offset_hours(7),
        }
    }
}

fn offset_hours(h: i32) -> FixedOffset {
    FixedOffset::east_opt(h * 3600).unwrap_or_else(|| Utc.fix())
}

// ---------------------------------------------------------------------------
// The file

/// A parsed and checked rules file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesConfig {
    engine: EngineSettings,
    defaults: RulesPatch,
    parameters: BTreeMap<String, RulesPatch>,
    stations: BTreeMap<String, StationPatch>,
}

impl RulesConfig {
    pub fn from_toml(text: &str) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::from_toml(text, &e))?;
        let mut engine = EngineSettings::default();
        if let Some(v) = file.engine.max_lateness {
            engine.max_lateness = v.0;
        }
        if let Some(v) = file.engine.max_future {
            engine.max_future = v.0;
        }
        if let Some(v) = file.engine.utc_offset {
            engine.utc_offset = v.0;
        }
        Ok(RulesConfig {
            engine,
            defaults: file.defaults,
            parameters: file.parameters,
            stations: file.stations,
        })
    }

    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
            path: path.to_owned(),
            source,
        })?;
        RulesConfig::from_toml(&text).map_err(|e| match e {
            RulesError::Invalid {
                line,
                column,
                field,
                message,
                ..
            } => RulesError::Invalid {
                path: Some(path.to_owned()),
                line,
                column,
                field,
                message,
            },
            other => other,
        })
    }

    pub fn engine(&self) -> &EngineSettings {
        &self.engine
    }

    /// The rules for one station's parameter (canonical code; matched
    /// ignoring ASCII case). `parameter = ""` gives the station-wide rules
    /// (station data gap).
    pub fn for_reading(&self, station: &str, parameter: &str) -> ParamRules {
        let mut rules = ParamRules::default();
        self.defaults.apply(&mut rules);
        if !parameter.is_empty()
            && let Some(p) = lookup(&self.parameters, parameter)
        {
            p.apply(&mut rules);
        }
        if let Some(s) = self.stations.get(station) {
            s.rules.apply(&mut rules);
            if !parameter.is_empty()
                && let Some(p) = lookup(&s.parameters, parameter)
            {
                p.apply(&mut rules);
            }
        }
        rules
    }

    /// The longest average window any layer configures.
    pub fn longest_window(&self) -> Duration {
        let layers = std::iter::once(&self.defaults)
            .chain(self.parameters.values())
            .chain(
                self.stations
                    .values()
                    .flat_map(|s| std::iter::once(&s.rules).chain(s.parameters.values())),
            );
        layers
            .filter_map(|l| l.averages.as_ref()?.windows.as_ref())
            .flat_map(|w| w.iter().map(|d| d.0))
            .chain(ParamRules::default().averages.windows)
            .max()
            .unwrap_or(DAY)
    }

    /// How far back (before the newest reading) the readings replayed
    /// through [`crate::engine::Engine::warm_up`] after a restart should
    /// reach: the set of readings seen (`max_lateness`) and every window
    /// still open (the longest window) are rebuilt. Windows that started
    /// before the first warmed-up reading are known to be partial and are
    /// never judged.
    pub fn warm_up_horizon(&self) -> Duration {
        self.engine.max_lateness.max(self.longest_window())
    }

    /// Stations and parameters the file overrides that the registry does not
    /// know (probably typos): one line each, for a warning at load.
    pub fn unknown_references(&self, registry: &Registry) -> Vec<String> {
        let mut out = Vec::new();
        for (id, s) in &self.stations {
            match registry.station(id) {
                None => out.push(format!(
                    "[stations.{id:?}]: no such station in the registry"
                )),
                Some(st) => {
                    for code in s.parameters.keys() {
                        if st.parameter(code).is_none() {
                            out.push(format!(
                                "[stations.{id:?}.parameters.{code}]: station {id} does not measure {code}"
                            ));
                        }
                    }
                }
            }
        }
        for code in self.parameters.keys() {
            if !registry.stations().any(|s| s.parameter(code).is_some()) {
                out.push(format!(
                    "[parameters.{code}]: no station in the registry measures {code}"
                ));
            }
        }
        out
    }
}

fn lookup<'a, T>(map: &'a BTreeMap<String, T>, code: &str) -> Option<&'a T> {
    map.get(code).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(code))
            .map(|(_, v)| v)
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    engine: EnginePatch,
    #[serde(default)]
    defaults: RulesPatch,
    #[serde(default)]
    parameters: BTreeMap<String, RulesPatch>,
    #[serde(default)]
    stations: BTreeMap<String, StationPatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnginePatch {
    max_lateness: Option<PositiveDuration>,
    max_future: Option<PositiveDuration>,
    utc_offset: Option<UtcOffset>,
}

/// One layer: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesPatch {
    hysteresis: Option<Hysteresis>,
    renotify_every: Option<AnyDuration>,
    single_limit: Option<SingleLimitPatch>,
    averages: Option<AveragesPatch>,
    early_warning: Option<EarlyWarningPatch>,
    sudden_change: Option<SuddenChangePatch>,
    gap: Option<GapPatch>,
    status: Option<StatusPatch>,
    flatline: Option<FlatlinePatch>,
    severity: Option<SeverityPatch>,
}

/// `[stations.<id>]`: a layer for all the station's parameters, plus
/// per-parameter layers. (Not `#[serde(flatten)]`: it would silently accept
/// unknown keys.)
#[derive(Debug, Clone, Default, PartialEq)]
struct StationPatch {
    rules: RulesPatch,
    parameters: BTreeMap<String, RulesPatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationPatchFile {
    hysteresis: Option<Hysteresis>,
    renotify_every: Option<AnyDuration>,
    single_limit: Option<SingleLimitPatch>,
    averages: Option<AveragesPatch>,
    early_warning: Option<EarlyWarningPatch>,
    sudden_change: Option<SuddenChangePatch>,
    gap: Option<GapPatch>,
    status: Option<StatusPatch>,
    flatline: Option<FlatlinePatch>,
    severity: Option<SeverityPatch>,
    #[serde(default)]
    parameters: BTreeMap<String, RulesPatch>,
}

impl<'de> Deserialize<'de> for StationPatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = StationPatchFile::deserialize(d)?;
        Ok(StationPatch {
            rules: RulesPatch {
                hysteresis: f.hysteresis,
                renotify_every: f.renotify_every,
                single_limit: f.single_limit,
                averages: f.averages,
                early_warning: f.early_warning,
                sudden_change: f.sudden_change,
                gap: f.gap,
                status: f.status,
                flatline: f.flatline,
                severity: f.severity,
            },
            parameters: f.parameters,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SingleLimitPatch {
    enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct AveragesPatch {
    enabled: Option<bool>,
    windows: Option<Vec<WindowLen>>,
    completeness: Option<Fraction>,
    grace: Option<AnyDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct EarlyWarningPatch {
    fraction: Option<WarnFraction>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuddenChangePatch {
    max_rise_per_hour: Option<NonNegative>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct GapPatch {
    enabled: Option<bool>,
    factor: Option<GapFactor>,
    min: Option<AnyDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusPatch {
    enabled: Option<bool>,
    max_duration: Option<AnyDuration>,
    max_per_day: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatlinePatch {
    count: Option<FlatCount>,
    tolerance: Option<NonNegative>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityPatch {
    limit_exceeded: Option<Severity>,
    average_exceeded: Option<Severity>,
    early_warning: Option<Severity>,
    sudden_change: Option<Severity>,
    data_gap: Option<Severity>,
    instrument_status: Option<Severity>,
    flatline: Option<Severity>,
    conflicting_value: Option<Severity>,
    instrument_expired: Option<Severity>,
}

fn set<T: Clone, U>(target: &mut U, from: &Option<T>, f: impl FnOnce(T) -> U) {
    if let Some(v) = from {
        *target = f(v.clone());
    }
}

impl RulesPatch {
    fn apply(&self, r: &mut ParamRules) {
        set(&mut r.hysteresis, &self.hysteresis, |v| v.0);
        set(&mut r.renotify_every, &self.renotify_every, |v| v.0);
        if let Some(p) = &self.single_limit {
            set(&mut r.single_limit.enabled, &p.enabled, |v| v);
        }
        if let Some(p) = &self.averages {
            set(&mut r.averages.enabled, &p.enabled, |v| v);
            set(&mut r.averages.windows, &p.windows, |v| {
                let mut w: Vec<Duration> = v.into_iter().map(|w| w.0).collect();
                w.sort();
                w.dedup();
                w
            });
            set(&mut r.averages.completeness, &p.completeness, |v| v.0);
            set(&mut r.averages.grace, &p.grace, |v| v.0);
        }
        if let Some(p) = &self.early_warning {
            set(&mut r.early_warning.fraction, &p.fraction, |v| v.0);
        }
        if let Some(p) = &self.sudden_change {
            set(
                &mut r.sudden_change.max_rise_per_hour,
                &p.max_rise_per_hour,
                |v| (v.0 > 0.0).then_some(v.0),
            );
        }
        if let Some(p) = &self.gap {
            set(&mut r.gap.enabled, &p.enabled, |v| v);
            set(&mut r.gap.factor, &p.factor, |v| v.0);
            set(&mut r.gap.min, &p.min, |v| v.0);
        }
        if let Some(p) = &self.status {
            set(&mut r.status.enabled, &p.enabled, |v| v);
            set(&mut r.status.max_duration, &p.max_duration, |v| v.0);
            set(&mut r.status.max_per_day, &p.max_per_day, |v| v);
        }
        if let Some(p) = &self.flatline {
            set(&mut r.flatline.count, &p.count, |v| v.0);
            set(&mut r.flatline.tolerance, &p.tolerance, |v| v.0);
        }
        if let Some(p) = &self.severity {
            let s = &mut r.severity;
            set(&mut s.limit_exceeded, &p.limit_exceeded, |v| v);
            set(&mut s.average_exceeded, &p.average_exceeded, |v| v);
            set(&mut s.early_warning, &p.early_warning, |v| v);
            set(&mut s.sudden_change, &p.sudden_change, |v| v);
            set(&mut s.data_gap, &p.data_gap, |v| v);
            set(&mut s.instrument_status, &p.instrument_status, |v| v);
            set(&mut s.flatline, &p.flatline, |v| v);
            set(&mut s.conflicting_value, &p.conflicting_value, |v| v);
            set(&mut s.instrument_expired, &p.instrument_expired, |v| v);
        }
    }
}

// ---------------------------------------------------------------------------
// Checked values: each refuses a bad value while deserializing, so the error
// carries the value's position in the file.

macro_rules! checked {
    ($(#[$doc:meta])* $name:ident($inner:ty) from $raw:ty, |$v:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq)]
        struct $name($inner);

        impl TryFrom<$raw> for $name {
            type Error = String;
            fn try_from($v: $raw) -> Result<Self, String> {
                $check.map($name)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <$raw>::deserialize(d)?;
                $name::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn finite(v: f64) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not a finite number"))
    }
}

/// Longest duration a knob accepts: a year (keeps time arithmetic far from
/// overflow).
const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"15m\", \"2h\": {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(d)
}

checked!(
    /// In `[0, 1)`.
    Hysteresis(f64) from f64, |v| finite(v).and_then(|v| {
        if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("hysteresis {v} must be at least 0 and below 1")) }
    })
);
checked!(
    /// In `[0, 1]`.
    Fraction(f64) from f64, |v| finite(v).and_then(|v| {
        if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} must be between 0 and 1")) }
    })
);
checked!(
    /// In `[0, 1)`; 0 turns early warnings off.
    WarnFraction(f64) from f64, |v| finite(v).and_then(|v| {
        if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("early-warning fraction {v} must be at least 0 (off) and below 1")) }
    })
);
checked!(
    /// `>= 0`.
    NonNegative(f64) from f64, |v| finite(v).and_then(|v| {
        if v >= 0.0 { Ok(v) } else { Err(format!("{v} must not be negative")) }
    })
);
checked!(
    /// `>= 1`: silent for at least one interval.
    GapFactor(f64) from f64, |v| finite(v).and_then(|v| {
        if (1.0..=10_000.0).contains(&v) { Ok(v) } else { Err(format!("gap factor {v} must be between 1 and 10000")) }
    })
);
checked!(
    /// 0 (off) or at least 2.
    FlatCount(u32) from u32, |v| {
        if v == 1 { Err("flatline count must be 0 (off) or at least 2".to_owned()) } else { Ok(v) }
    }
);
checked!(
    /// Any duration up to a year, zero included.
    AnyDuration(Duration) from String, |v| duration(&v)
);
checked!(
    /// A positive duration up to a year.
    PositiveDuration(Duration) from String, |v| duration(&v).and_then(|d| {
        if d.is_zero() { Err(format!("{v:?} must be longer than zero")) } else { Ok(d) }
    })
);
checked!(
    /// A window length: at least a minute, whole seconds, dividing a day.
    WindowLen(Duration) from String, |v| duration(&v).and_then(|d| {
        if d < Duration::from_secs(60) || d.subsec_nanos() != 0 || !DAY.as_secs().is_multiple_of(d.as_secs()) {
            Err(format!("window {v:?} must be whole seconds, at least 1m, and divide 24h (e.g. \"1h\", \"8h\", \"24h\")"))
        } else {
            Ok(d)
        }
    })
);
checked!(
    /// `+07:00`, `-03:30`, `Z`.
    UtcOffset(FixedOffset) from String, |v| {
        let s = v.trim();
        if s == "Z" || s == "z" {
            Ok(offset_hours(0))
        } else {
            s.parse::<FixedOffset>().map_err(|e| format!("utc_offset {v:?}: {e} (write e.g. \"+07:00\")"))
        }
    }
);

impl fmt::Display for RulesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rules: {} parameter block(s), {} station override(s)",
            self.parameters.len(),
            self.stations.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> RulesError {
        match RulesConfig::from_toml(text) {
            Ok(_) => panic!("loaded:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = RulesConfig::from_toml("").unwrap_or_default();
        assert_eq!(c.for_reading("X", "COD"), ParamRules::default());
    }

    #[test]
    fn layers_apply_in_order() {
        let c = RulesConfig::from_toml(
            r#"
[defaults]
hysteresis = 0.1
early_warning.fraction = 0.7

[parameters.COD]
early_warning = { fraction = 0.9 }
sudden_change.max_rise_per_hour = 50

[stations."S1"]
hysteresis = 0.2
[stations."S1".parameters.cod]
sudden_change.max_rise_per_hour = 0
flatline = { count = 0 }
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let other = c.for_reading("S2", "COD");
        assert_eq!(other.hysteresis, 0.1);
        assert_eq!(other.early_warning.fraction, 0.9);
        assert_eq!(other.sudden_change.max_rise_per_hour, Some(50.0));
        let s1 = c.for_reading("S1", "COD");
        assert_eq!(s1.hysteresis, 0.2);
        assert_eq!(s1.early_warning.fraction, 0.9);
        assert_eq!(s1.sudden_change.max_rise_per_hour, None);
        assert_eq!(s1.flatline.count, 0);
        let ph = c.for_reading("S1", "pH");
        assert_eq!(ph.early_warning.fraction, 0.7);
        assert_eq!(ph.flatline.count, 12);
    }

    #[test]
    fn errors_name_line_and_field() {
        let e =
            err("[defaults]\nhysteresis = 0.05\n\n[parameters.COD]\naverages.completeness = 1.5\n");
        assert_eq!(e.line(), Some(5), "{e}");
        let s = e.to_string();
        assert!(s.contains("completeness"), "{s}");
        assert!(s.contains("between 0 and 1"), "{s}");

        let e = err("[defaults]\n\nflatline = { count = 1 }\n");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.to_string().contains("count"), "{e}");

        let e = err("[defaults]\naverages.windows = [\"1h\", \"7h\"]\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.to_string().contains("divide 24h"), "{e}");

        let e = err("[defaults]\n\n\nbogus = 1\n");
        assert_eq!(e.line(), Some(4), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");

        let e = err("[stations.X]\ngap.min = \"soon\"\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.to_string().contains("gap.min"), "{e}");

        let e = err("[defaults.severity]\nflatline = \"loud\"\n");
        assert_eq!(e.line(), Some(2), "{e}");

        let e = err("[engine]\nutc_offset = \"+25:00\"\n");
        assert_eq!(e.line(), Some(2), "{e}");
    }
}
