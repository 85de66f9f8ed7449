//! The simulated fleet: pure and deterministic from a seed, no I/O.
//!
//! A [`Fleet`] is a list of [`Station`]s drawn from [`FleetConfig::seed`].
//! A station samples on a fixed grid of its interval (multiples of the
//! interval since the Unix epoch, like a logger that samples at :00, :05,
//! ...). What it measures at a slot, and whether and when that sample is
//! sent, is a pure function of (seed, station, slot): ask in any order and
//! get the same answer, so a test can know exactly what a run will send.
//!
//! Anomalies are episodes in continuous time, drawn per day as a Poisson
//! count with random start and length ([`EpisodeSpec`]):
//! - exceedance (per limited parameter): values above the QCVN column B
//!   limit;
//! - calibration, device error (per parameter): the value's status is
//!   Calibrating (value = the span standard) or Error (value 0);
//! - silence (per station): nothing sent, the data is lost;
//! - outage (per station): the logger keeps measuring but cannot send; at
//!   the first slot after it, the backlog goes out, oldest first, before
//!   that slot's own sample ([`Delivery::Late`]).

mod draw;
pub mod profile;

use std::f64::consts::TAU;

use chrono::{DateTime, TimeDelta, Utc};
use quantrac_proto::domain::{DeviceStatus, ParameterInfo, StationKind, parameter_by_code};
use quantrac_proto::{Sample, SampleValue};

use self::draw::Draw;
use self::profile::{Limit, Profile, profiles};
use crate::SimError;
use crate::protocol::{Protocol, ProtocolMix};

const DAY: i64 = 86_400;
/// Viet Nam is UTC+7 all year: the daily cycle follows local hours.
const LOCAL_OFFSET_SECS: i64 = 7 * 3_600;
/// How far back a logger's memory reaches: samples held longer than this
/// when the link comes back are lost.
const MAX_BACKLOG_SECS: i64 = 7 * DAY;
/// Station id prefix and Circular 10 province name: the fleet is Phú Yên's.
pub const PROVINCE_CODE: &str = "PY";
pub const PROVINCE_FILE_NAME: &str = "PhuYen";

/// The industrial zones of Phú Yên the stations sit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    HoaHiep,
    AnPhu,
    DongBacSongCau,
}

impl Zone {
    pub const ALL: [Zone; 3] = [Zone::HoaHiep, Zone::AnPhu, Zone::DongBacSongCau];

    /// The code inside station ids (`PY-HH-WW01`).
    pub fn code(self) -> &'static str {
        match self {
            Zone::HoaHiep => "HH",
            Zone::AnPhu => "AP",
            Zone::DongBacSongCau => "DBSC",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Zone::HoaHiep => "KCN Hòa Hiệp",
            Zone::AnPhu => "KCN An Phú",
            Zone::DongBacSongCau => "KCN Đông Bắc Sông Cầu",
        }
    }

    /// Local place names facilities are named after: (Vietnamese, ASCII).
    fn places(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Zone::HoaHiep => &[
                ("Hòa Hiệp", "HoaHiep"),
                ("Đà Rằng", "DaRang"),
                ("Vũng Rô", "VungRo"),
                ("Tuy Hòa", "TuyHoa"),
            ],
            Zone::AnPhu => &[
                ("An Phú", "AnPhu"),
                ("Tuy An", "TuyAn"),
                ("Ô Loan", "OLoan"),
                ("Phú Lâm", "PhuLam"),
            ],
            Zone::DongBacSongCau => &[
                ("Sông Cầu", "SongCau"),
                ("Xuân Đài", "XuanDai"),
                ("Cù Mông", "CuMong"),
                ("Xuân Hải", "XuanHai"),
            ],
        }
    }
}

/// Industries per station kind: (Vietnamese, ASCII for file names).
const WASTEWATER_INDUSTRIES: &[(&str, &str)] = &[
    ("Thủy sản", "ThuySan"),
    ("Chế biến tinh bột sắn", "TinhBotSan"),
    ("Bia", "Bia"),
    ("Dệt nhuộm", "DetNhuom"),
    ("Chế biến gỗ", "CheBienGo"),
    ("Nước giải khát", "NuocGiaiKhat"),
    ("Xử lý nước thải tập trung", "XLNTTapTrung"),
];
const STACK_INDUSTRIES: &[(&str, &str)] = &[
    ("Nhiệt điện", "NhietDien"),
    ("Xi măng", "XiMang"),
    ("Gạch Tuynel", "GachTuynel"),
    ("Mía đường", "MiaDuong"),
    ("Lò hơi sinh khối", "LoHoiSinhKhoi"),
    ("Luyện thép", "LuyenThep"),
];
const COMPANY_FORMS: &[&str] = &["Công ty TNHH", "Công ty CP", "Nhà máy"];

/// How often an anomaly happens and how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeSpec {
    /// Mean number of episodes per day (per parameter for exceedance,
    /// calibration and device error; per station for silence and outage).
    pub per_day: f64,
    pub min_minutes: u32,
    /// At most a day: an episode only spills into the next day's block.
    pub max_minutes: u32,
}

impl EpisodeSpec {
    pub const NEVER: EpisodeSpec = EpisodeSpec {
        per_day: 0.0,
        min_minutes: 0,
        max_minutes: 0,
    };

    pub const fn new(per_day: f64, min_minutes: u32, max_minutes: u32) -> Self {
        EpisodeSpec {
            per_day,
            min_minutes,
            max_minutes,
        }
    }

    fn validate(&self, name: &str) -> Result<(), SimError> {
        let bad = |why: &str| Err(SimError::Config(format!("anomaly {name}: {why}")));
        if !self.per_day.is_finite() || !(0.0..=1000.0).contains(&self.per_day) {
            return bad("per_day must be between 0 and 1000");
        }
        if self.per_day > 0.0 && (self.min_minutes == 0 || self.min_minutes > self.max_minutes) {
            return bad("needs 0 < min_minutes <= max_minutes");
        }
        if self.max_minutes > 1440 {
            return bad("max_minutes must be at most 1440 (one day)");
        }
        Ok(())
    }
}

/// Anomaly rates; [`Anomalies::none`] gives a clean, well-behaved fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anomalies {
    pub exceedance: EpisodeSpec,
    pub calibration: EpisodeSpec,
    pub device_error: EpisodeSpec,
    pub silence: EpisodeSpec,
    pub outage: EpisodeSpec,
}

impl Anomalies {
    pub const fn none() -> Self {
        Anomalies {
            exceedance: EpisodeSpec::NEVER,
            calibration: EpisodeSpec::NEVER,
            device_error: EpisodeSpec::NEVER,
            silence: EpisodeSpec::NEVER,
            outage: EpisodeSpec::NEVER,
        }
    }

    /// Every rate times `factor` (durations unchanged): a short demo sees
    /// in a few simulated hours what a fleet shows in days.
    pub fn scaled(self, factor: f64) -> Result<Self, SimError> {
        let scale = |e: EpisodeSpec| EpisodeSpec {
            per_day: e.per_day * factor,
            ..e
        };
        let scaled = Anomalies {
            exceedance: scale(self.exceedance),
            calibration: scale(self.calibration),
            device_error: scale(self.device_error),
            silence: scale(self.silence),
            outage: scale(self.outage),
        };
        scaled.validate()?;
        Ok(scaled)
    }

    fn spec(&self, kind: Episode) -> &EpisodeSpec {
        match kind {
            Episode::Exceedance => &self.exceedance,
            Episode::Calibration => &self.calibration,
            Episode::DeviceError => &self.device_error,
            Episode::Silence => &self.silence,
            Episode::Outage => &self.outage,
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        self.exceedance.validate("exceedance")?;
        self.calibration.validate("calibration")?;
        self.device_error.validate("device_error")?;
        self.silence.validate("silence")?;
        self.outage.validate("outage")
    }
}

impl Default for Anomalies {
    /// Frequent enough that a few dozen stations show every kind within a
    /// simulated day.
    fn default() -> Self {
        Anomalies {
            exceedance: EpisodeSpec::new(0.15, 30, 180),
            calibration: EpisodeSpec::new(0.5, 15, 30),
            device_error: EpisodeSpec::new(0.05, 10, 120),
            silence: EpisodeSpec::new(0.1, 10, 60),
            outage: EpisodeSpec::new(0.1, 30, 240),
        }
    }
}

/// Everything the fleet is drawn from.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub seed: u64,
    pub stations: usize,
    /// Sample interval of simulated time; 300 s is the national rule.
    pub interval_secs: u32,
    pub protocols: ProtocolMix,
    /// Share of stack stations; the rest are wastewater outfalls.
    pub stack_share: f64,
    pub anomalies: Anomalies,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            seed: 1,
            stations: 10,
            interval_secs: 300,
            protocols: ProtocolMix::default(),
            stack_share: 0.3,
            anomalies: Anomalies::default(),
        }
    }
}

impl FleetConfig {
    pub fn validate(&self) -> Result<(), SimError> {
        if self.stations == 0 {
            return Err(SimError::Config("stations must be at least 1".into()));
        }
        if !(1..=86_400).contains(&self.interval_secs) {
            return Err(SimError::Config(
                "interval must be between 1 s and 1 day".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.stack_share) {
            return Err(SimError::Config(
                "stack_share must be between 0 and 1".into(),
            ));
        }
        self.anomalies.validate()
    }
}

/// The kinds of episode; the discriminant keys the random draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Episode {
    Exceedance = 1,
    Calibration = 2,
    DeviceError = 3,
    Silence = 4,
    Outage = 5,
}

/// Keys of the other random draws, apart from the episode ones.
const KEY_STATION: u64 = 100;
const KEY_NOISE: u64 = 101;
const KEY_DRIFT: u64 = 102;
/// Parameter index used for station-level episodes.
const WHOLE_STATION: u64 = u64::MAX;

/// What happens to the sample measured at one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sent at its own slot.
    OnTime,
    /// Held through an outage and sent at the first slot after it.
    Late { sent_at: DateTime<Utc> },
    /// Never sent.
    Lost,
}

/// One sample as a station puts it on the wire, in send order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmission {
    /// Index into [`Fleet::stations`].
    pub station: usize,
    pub sample: Sample,
    /// Simulated time of sending: the measurement time, or the end of the
    /// outage for backlog.
    pub sent_at: DateTime<Utc>,
    /// Backlog resent after an outage.
    pub late: bool,
}

/// One parameter of one station.
#[derive(Debug, Clone)]
struct Channel {
    profile: &'static Profile,
    info: &'static ParameterInfo,
}

/// A simulated monitoring station.
#[derive(Debug, Clone)]
pub struct Station {
    /// Position in the fleet.
    pub index: usize,
    /// `PY-<zone>-<WW|ST><nn>`.
    pub id: String,
    pub zone: Zone,
    pub kind: StationKind,
    /// Display name, in Vietnamese.
    pub facility_name: String,
    /// ASCII facility name for Circular 10 file names.
    pub facility_code: String,
    pub protocol: Protocol,
    pub interval_secs: u32,
    /// Size of the plant relative to the profile: scales flows and loads.
    pub scale: f64,
    channels: Vec<Channel>,
    /// Root of every random draw of this station.
    key: u64,
    anomalies: Anomalies,
}

impl Station {
    /// The parameters this station reports, in report order.
    pub fn parameters(&self) -> impl Iterator<Item = &'static ParameterInfo> + '_ {
        self.channels.iter().map(|c| c.info)
    }

    /// The column B limit the simulator's exceedance episodes cross.
    pub fn limit(&self, code: &str) -> Option<Limit> {
        self.channels
            .iter()
            .find(|c| c.profile.code == code)?
            .profile
            .limit
    }

    /// HJ 212 system code: 32 wastewater source, 31 flue-gas source.
    pub fn hj212_st(&self) -> &'static str {
        match self.kind {
            StationKind::Wastewater => "32",
            StationKind::Stack => "31",
        }
    }

    /// The slot containing `t`: `t` rounded down to the interval.
    pub fn slot(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        align(t, self.interval_secs)
    }

    /// What the station measures at the slot of `t`, whether or not it is
    /// ever sent.
    pub fn measure(&self, t: DateTime<Utc>) -> Sample {
        let at = self.slot(t);
        let secs = at.timestamp();
        let values = (0..self.channels.len())
            .map(|j| self.value(j, secs))
            .collect();
        Sample {
            station_id: self.id.clone(),
            measured_at: at,
            values,
        }
    }

    /// The sample of the slot of `t` if the station ever sends it (on time
    /// or after an outage), `None` when it is lost.
    pub fn sample_at(&self, t: DateTime<Utc>) -> Option<Sample> {
        match self.delivery(t) {
            Delivery::Lost => None,
            _ => Some(self.measure(t)),
        }
    }

    /// Whether and when the sample of the slot of `t` is sent.
    pub fn delivery(&self, t: DateTime<Utc>) -> Delivery {
        let at = self.slot(t);
        if self.in_outage(at) {
            let step = self.step();
            let mut next = at + step;
            while next - at <= TimeDelta::seconds(MAX_BACKLOG_SECS) {
                if !self.in_outage(next) {
                    return Delivery::Late { sent_at: next };
                }
                next += step;
            }
            Delivery::Lost
        } else if self
            .episode(Episode::Silence, WHOLE_STATION, at.timestamp())
            .is_some()
        {
            Delivery::Lost
        } else {
            Delivery::OnTime
        }
    }

    /// What the station sends at the slot of `t`: the backlog of an outage
    /// that just ended (only samples measured at or after `since`, when the
    /// simulation started), oldest first, then its own sample.
    pub fn sends_at(&self, t: DateTime<Utc>, since: DateTime<Utc>) -> Vec<Transmission> {
        let at = self.slot(t);
        if self.in_outage(at) {
            return Vec::new();
        }
        let step = self.step();
        let oldest_kept = at - TimeDelta::seconds(MAX_BACKLOG_SECS);
        let mut first = at;
        while first - step >= since && first - step >= oldest_kept && self.in_outage(first - step) {
            first -= step;
        }
        let mut out = Vec::new();
        let mut m = first;
        while m < at {
            out.push(Transmission {
                station: self.index,
                sample: self.measure(m),
                sent_at: at,
                late: true,
            });
            m += step;
        }
        if self
            .episode(Episode::Silence, WHOLE_STATION, at.timestamp())
            .is_none()
        {
            out.push(Transmission {
                station: self.index,
                sample: self.measure(at),
                sent_at: at,
                late: false,
            });
        }
        out
    }

    /// A fixed place in `[0, 1)` of this station among the fleet, to spread
    /// real-time sends and reconnects.
    pub(crate) fn phase(&self) -> f64 {
        unit_hash(self.key, 0)
    }

    fn step(&self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.interval_secs))
    }

    fn in_outage(&self, at: DateTime<Utc>) -> bool {
        self.episode(Episode::Outage, WHOLE_STATION, at.timestamp())
            .is_some()
    }

    /// The tag of an episode of `kind` covering second `t`, if any.
    ///
    /// Episodes are drawn per UTC day; since none lasts more than a day,
    /// only today's and yesterday's can cover `t`.
    fn episode(&self, kind: Episode, param: u64, t: i64) -> Option<u64> {
        let spec = self.anomalies.spec(kind);
        if spec.per_day <= 0.0 {
            return None;
        }
        let today = t.div_euclid(DAY);
        for day in [today - 1, today] {
            let mut draw = Draw::new(self.key, &[kind as u64, param, day as u64]);
            for _ in 0..draw.poisson(spec.per_day) {
                let start = day * DAY + (draw.uniform() * DAY as f64) as i64;
                let minutes = draw.range(f64::from(spec.min_minutes), f64::from(spec.max_minutes));
                let tag = draw.next_u64();
                if start <= t && t < start + (minutes * 60.0) as i64 {
                    return Some(tag);
                }
            }
        }
        None
    }

    fn value(&self, j: usize, t: i64) -> SampleValue {
        let channel = &self.channels[j];
        let p = channel.profile;
        let param = j as u64;
        let status = if self.episode(Episode::DeviceError, param, t).is_some() {
            DeviceStatus::Error
        } else if self.episode(Episode::Calibration, param, t).is_some() {
            DeviceStatus::Calibrating
        } else {
            DeviceStatus::Measuring
        };
        let noise = Draw::new(self.key, &[KEY_NOISE, param, t as u64]).normal();
        let value = match status {
            // Loggers report 0 for an analyser in fault.
            DeviceStatus::Error => 0.0,
            // During calibration the analyser reads its span standard.
            DeviceStatus::Calibrating => p.base,
            DeviceStatus::Measuring => {
                // Only parameters with a limit have exceedance episodes.
                let exceedance = p
                    .limit
                    .and_then(|limit| Some((limit, self.episode(Episode::Exceedance, param, t)?)));
                match exceedance {
                    Some((limit, tag)) => exceeding(limit, tag, noise),
                    None => self.typical(p, param, t, noise),
                }
            }
        };
        SampleValue {
            parameter: channel.info.code.to_owned(),
            value: round(value.max(0.0), p.decimals),
            unit: channel.info.unit.to_owned(),
            status,
            device_flag: status.circular10_code().to_owned(),
            report: None,
            converted: None,
        }
    }

    /// Base, daily cycle by local hour, a slow drift (smooth between
    /// two-hourly knots, so consecutive samples look like a process rather
    /// than white noise) and per-sample noise.
    fn typical(&self, p: &Profile, param: u64, t: i64, noise: f64) -> f64 {
        let scale = if p.scales { self.scale } else { 1.0 };
        let hour = (t + LOCAL_OFFSET_SECS).rem_euclid(DAY) as f64 / 3_600.0;
        let cycle = (TAU * (hour - p.peak_hour) / 24.0).cos();
        let knot = t.div_euclid(7_200);
        let a = Draw::new(self.key, &[KEY_DRIFT, param, knot as u64]).normal();
        let b = Draw::new(self.key, &[KEY_DRIFT, param, (knot + 1) as u64]).normal();
        let f = (t - knot * 7_200) as f64 / 7_200.0;
        let drift = a + (b - a) * f * f * (3.0 - 2.0 * f);
        scale * (p.base + p.daily_amplitude * cycle + p.noise * (drift + noise))
    }
}

/// A value clearly past the limit: 1.15-1.75 × a maximum, or 0.4-1.5
/// outside a range, with a little noise that cannot pull it back inside.
fn exceeding(limit: Limit, tag: u64, noise: f64) -> f64 {
    let u = (tag >> 11) as f64 / (1u64 << 53) as f64;
    match limit {
        Limit::Max(max) => max * (1.15 + 0.6 * u) * (1.0 + 0.02 * noise),
        Limit::Range(_, high) if tag & 1 == 0 => high + 0.4 + 1.1 * u + 0.05 * noise,
        Limit::Range(low, _) => low - 0.4 - 0.9 * u + 0.05 * noise,
    }
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// Uniform in `[0, 1)` from a key and a counter, for jitter outside the model.
pub(crate) fn unit_hash(key: u64, n: u64) -> f64 {
    Draw::new(key, &[n]).uniform()
}

/// `t` rounded down to a multiple of `interval_secs` since the epoch.
pub fn align(t: DateTime<Utc>, interval_secs: u32) -> DateTime<Utc> {
    let rem = t.timestamp().rem_euclid(i64::from(interval_secs.max(1)));
    t - TimeDelta::seconds(rem) - TimeDelta::nanoseconds(i64::from(t.timestamp_subsec_nanos()))
}

/// The simulated stations.
#[derive(Debug, Clone)]
pub struct Fleet {
    config: FleetConfig,
    stations: Vec<Station>,
}

impl Fleet {
    /// Draws the stations from the seed.
    pub fn new(config: &FleetConfig) -> Result<Self, SimError> {
        config.validate()?;
        let mut numbers = std::collections::HashMap::<(Zone, bool), usize>::new();
        let stations = (0..config.stations)
            .map(|index| {
                let mut d = Draw::new(config.seed, &[KEY_STATION, index as u64]);
                let stack = d.uniform() < config.stack_share;
                let kind = if stack {
                    StationKind::Stack
                } else {
                    StationKind::Wastewater
                };
                let zone = Zone::ALL[d.below(Zone::ALL.len())];
                let number = numbers.entry((zone, stack)).or_default();
                *number += 1;
                let id = format!(
                    "{PROVINCE_CODE}-{}-{}{:02}",
                    zone.code(),
                    if stack { "ST" } else { "WW" },
                    number
                );
                let industries = if stack {
                    STACK_INDUSTRIES
                } else {
                    WASTEWATER_INDUSTRIES
                };
                let (industry, industry_ascii) = industries[d.below(industries.len())];
                let (place, place_ascii) = zone.places()[d.below(zone.places().len())];
                let form = COMPANY_FORMS[d.below(COMPANY_FORMS.len())];
                let protocol = config.protocols.pick(d.uniform());
                let scale = d.range(0.7, 1.2);
                let channels = profiles(kind)
                    .iter()
                    .filter_map(|profile| {
                        let info = parameter_by_code(profile.code, kind)?;
                        Some(Channel { profile, info })
                    })
                    .collect();
                Station {
                    index,
                    id,
                    zone,
                    kind,
                    facility_name: format!("{form} {industry} {place}"),
                    facility_code: format!("{industry_ascii}{place_ascii}"),
                    protocol,
                    interval_secs: config.interval_secs,
                    scale,
                    channels,
                    key: d.next_u64(),
                    anomalies: config.anomalies,
                }
            })
            .collect();
        Ok(Fleet {
            config: config.clone(),
            stations,
        })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    pub fn stations(&self) -> &[Station] {
        &self.stations
    }

    pub fn station(&self, id: &str) -> Option<&Station> {
        self.stations.iter().find(|s| s.id == id)
    }

    pub fn interval(&self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.config.interval_secs))
    }

    /// `t` rounded down to the sampling grid.
    pub fn align(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        align(t, self.config.interval_secs)
    }

    /// Everything the fleet sends at slots in `[start, end)` of a simulation
    /// started at `start`, ordered by slot, then station, then measurement.
    pub fn samples_between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Transmission> {
        let since = self.align(start);
        let mut out = Vec::new();
        let mut at = since;
        while at < end {
            for station in &self.stations {
                out.extend(station.sends_at(at, since));
            }
            at += self.interval();
        }
        out
    }
}

#[cfg(test)]
mod tests;
