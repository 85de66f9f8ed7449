//! The station registry: which stations exist, what each measures (canonical
//! parameter codes, units, instrument ranges, reporting interval) and the
//! permit limits that apply to it, with effective dates.
//!
//! Limits are data (architecture invariant 6): each station's environmental
//! permit cites a regulation and column, with its own coefficients, and a
//! permit can change over time, so a station carries a list of limits and
//! [`Station::limit_at`] picks the one in force on a date. Nothing here knows
//! a QCVN table.
//!
//! The registry is read from TOML (see `deploy/registry.toml`) and checked
//! as a whole when loaded, so that the processor never starts on a registry
//! that would make it judge readings wrongly. Loading also completes it:
//! units get their canonical spelling, each parameter accepts its HJ 212
//! code (from [`crate::domain::PARAMETERS`]) as an alias, and each
//! limit names its parameter by canonical code.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::{StationKind, parameter_by_code};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::units;

/// Why a registry could not be loaded. Errors about the content name the
/// station (and parameter or limit) and say what is wrong.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("cannot read station registry {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("station registry {}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("station registry does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("station {station:?}: {problem}")]
    Station { station: String, problem: String },
    #[error("station {station:?}, parameter {parameter:?}: {problem}")]
    Parameter {
        station: String,
        parameter: String,
        problem: String,
    },
    #[error("station {station:?}, limit on {parameter:?} effective {effective_from}: {problem}")]
    Limit {
        station: String,
        parameter: String,
        effective_from: NaiveDate,
        problem: String,
    },
}

/// The file's shape: a list of `[[stations]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    #[serde(default)]
    pub stations: Vec<Station>,
}

/// All known stations, checked and indexed by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RegistryFile")]
pub struct Registry {
    stations: Vec<Station>,
    #[serde(skip)]
    by_id: HashMap<String, usize>,
}

impl TryFrom<RegistryFile> for Registry {
    type Error = RegistryError;

    fn try_from(file: RegistryFile) -> Result<Self, Self::Error> {
        Registry::new(file.stations)
    }
}

impl Registry {
    /// Checks and completes `stations` (see the module doc).
    pub fn new(mut stations: Vec<Station>) -> Result<Self, RegistryError> {
        let mut by_id = HashMap::with_capacity(stations.len());
        for (i, station) in stations.iter_mut().enumerate() {
            station.check_and_complete()?;
            if by_id.insert(station.id.clone(), i).is_some() {
                return Err(RegistryError::Station {
                    station: station.id.clone(),
                    problem: "appears more than once".into(),
                });
            }
        }
        // Other names a station goes by resolve to it; none may name two.
        for (i, station) in stations.iter().enumerate() {
            for alias in &station.aliases {
                if let Some(&other) = by_id.get(alias) {
                    return Err(RegistryError::Station {
                        station: station.id.clone(),
                        problem: format!(
                            "alias {alias:?} already names station {}",
                            stations[other].id
                        ),
                    });
                }
                by_id.insert(alias.clone(), i);
            }
        }
        Ok(Registry { stations, by_id })
    }

    pub fn from_toml(text: &str) -> Result<Self, RegistryError> {
        let file: RegistryFile = toml::from_str(text)?;
        Registry::new(file.stations)
    }

    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.to_owned(),
            source,
        })?;
        Registry::from_toml(&text).map_err(|e| RegistryError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    pub fn stations(&self) -> impl Iterator<Item = &Station> {
        self.stations.iter()
    }

    pub fn station(&self, id: &str) -> Option<&Station> {
        self.by_id.get(id).and_then(|&i| self.stations.get(i))
    }

    pub fn len(&self) -> usize {
        self.stations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stations.is_empty()
    }
}

/// One monitoring station and its permit.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Station {
    /// As the station sends it: the MQTT topic segment, the HJ 212 `MN`, the
    /// Circular 10 file name's station part.
    pub id: String,
    pub name: String,
    pub facility: String,
    pub industrial_zone: String,
    pub province: String,
    pub latitude: f64,
    pub longitude: f64,
    #[serde(with = "kind_serde")]
    pub kind: StationKind,
    /// HJ 212 `PW` this station must send; `None` leaves it to ingest's
    /// default. Redacted from `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hj212_password: Option<String>,
    /// The station's secret, as an Argon2id hash in PHC form (`quantrac
    /// station-secret` makes one). When set, ingest accepts this station's
    /// readings only under it: HJ 212 `PW`, or a TCP connection's auth
    /// frame. The secret itself is never stored. Redacted from `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// Other names the station is known by: an old code after a province
    /// merger, the full Circular 10 identity `Province_Facility_Station`.
    /// A reading under an alias is stored under `id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// MQTT user the station connects as, so ingest can refuse a station
    /// publishing under another's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_username: Option<String>,
    /// The station's secret hashed for Mosquitto's password file (`$7$`,
    /// PBKDF2-SHA512; `quantrac station-secret` prints it beside
    /// `secret_hash`). With it, `quantrac-mqtt-auth` gives the station an
    /// MQTT account (`mqtt_username`, else its id) that may publish only to
    /// `stations/<id>/readings`. Redacted from `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_hash: Option<String>,
    /// The station's camera (the law requires one): an `http(s)://`
    /// snapshot or stream URL, or `rtsp://`. Shown on the officers' page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_url: Option<String>,
    /// The facility's contacts (e-mail addresses) told about exceedances,
    /// lost connection and device faults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    pub parameters: Vec<ParameterSpec>,
    #[serde(default)]
    pub limits: Vec<PermitLimit>,
    /// The station's analysers, with the dates their calibration and
    /// inspection (kiểm định) run out: an instrument past either raises an
    /// alert, as its readings can no longer be relied on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instruments: Vec<Instrument>,
}

/// One analyser of a station and the certificates that vouch for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    /// What the officers call it: make, model, serial number.
    pub name: String,
    /// The parameters it measures (codes or aliases; canonical once
    /// loaded). A multi-gas analyser lists several.
    pub parameters: Vec<String>,
    /// Last calibration, and the last day it is valid.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_date_serde"
    )]
    pub calibrated_on: Option<NaiveDate>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_date_serde"
    )]
    pub calibration_valid_to: Option<NaiveDate>,
    /// Last inspection (kiểm định) by an accredited body, and the last day
    /// its certificate is valid.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_date_serde"
    )]
    pub inspected_on: Option<NaiveDate>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_date_serde"
    )]
    pub inspection_valid_to: Option<NaiveDate>,
}

/// A certificate of an instrument that runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate {
    Calibration,
    Inspection,
}

impl Certificate {
    /// Bilingual, for alert messages.
    pub fn describe(self) -> &'static str {
        match self {
            Certificate::Calibration => "hiệu chuẩn / calibration",
            Certificate::Inspection => "kiểm định / inspection",
        }
    }
}

impl Instrument {
    /// The certificates no longer valid on `today`, with their last day.
    pub fn expired_on(&self, today: NaiveDate) -> Vec<(Certificate, NaiveDate)> {
        [
            (Certificate::Calibration, self.calibration_valid_to),
            (Certificate::Inspection, self.inspection_valid_to),
        ]
        .into_iter()
        .filter_map(|(c, to)| to.filter(|&to| to < today).map(|to| (c, to)))
        .collect()
    }
}

impl fmt::Debug for Station {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Station")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("facility", &self.facility)
            .field("industrial_zone", &self.industrial_zone)
            .field("province", &self.province)
            .field("latitude", &self.latitude)
            .field("longitude", &self.longitude)
            .field("kind", &self.kind)
            .field(
                "hj212_password",
                &self.hj212_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_hash",
                &self.secret_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("aliases", &self.aliases)
            .field("mqtt_username", &self.mqtt_username)
            .field("mqtt_hash", &self.mqtt_hash.as_ref().map(|_| "<redacted>"))
            .field("camera_url", &self.camera_url)
            .field("contacts", &self.contacts)
            .field("parameters", &self.parameters)
            .field("limits", &self.limits)
            .field("instruments", &self.instruments)
            .finish()
    }
}

impl Station {
    /// The parameter a wire code names: its canonical code or an alias,
    /// ignoring ASCII case and surrounding spaces (`ph` is `pH`).
    pub fn parameter(&self, code_or_alias: &str) -> Option<&ParameterSpec> {
        let code = code_or_alias.trim();
        self.parameters.iter().find(|p| p.answers_to(code))
    }

    /// The newest limit on a parameter (code or alias) in force on `date`.
    pub fn limit_at(&self, parameter_code: &str, date: NaiveDate) -> Option<&PermitLimit> {
        let code = &self.parameter(parameter_code)?.code;
        self.limits
            .iter()
            .filter(|l| l.parameter == *code && l.effective_from <= date)
            .max_by_key(|l| l.effective_from)
            // A newer limit replaces an older one from its own date; once
            // it has ended, no limit is in force until another begins (the
            // replaced one does not come back).
            .filter(|l| l.effective_to.is_none_or(|to| date <= to))
    }

    fn check_and_complete(&mut self) -> Result<(), RegistryError> {
        let station = |problem: String| RegistryError::Station {
            station: self.id.clone(),
            problem,
        };
        for name in std::iter::once(&self.id).chain(&self.aliases) {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(station(format!(
                    "id and aliases must be non-empty, without spaces ({name:?})"
                )));
            }
        }
        if let Some(h) = &self.secret_hash
            && !["$argon2id$", "$argon2i$", "$argon2d$"]
                .iter()
                .any(|p| h.starts_with(p))
        {
            return Err(station(
                "secret_hash must be an Argon2 hash in PHC form ($argon2id$...); `quantrac station-secret` makes one, never put the secret itself here".into(),
            ));
        }
        if let Some(h) = &self.mqtt_hash
            && !h.starts_with("$7$")
        {
            return Err(station(
                "mqtt_hash must be a Mosquitto $7$ hash; `quantrac station-secret` makes one, never put the secret itself here".into(),
            ));
        }
        if let Some(u) = &self.mqtt_username
            && (u.is_empty()
                || u.contains(':')
                || u.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(station(format!(
                "mqtt_username {u:?}: no spaces or colons (it is a line of Mosquitto's password file)"
            )));
        }
        if !(self.latitude.is_finite() && (-90.0..=90.0).contains(&self.latitude)) {
            return Err(station(format!(
                "latitude {} is not in [-90, 90]",
                self.latitude
            )));
        }
        if !(self.longitude.is_finite() && (-180.0..=180.0).contains(&self.longitude)) {
            return Err(station(format!(
                "longitude {} is not in [-180, 180]",
                self.longitude
            )));
        }
        if self.parameters.is_empty() {
            return Err(station("has no parameters".into()));
        }
        if let Some(u) = &self.camera_url
            && !["http://", "https://", "rtsp://", "rtsps://"]
                .iter()
                .any(|p| u.starts_with(p) && u.len() > p.len())
        {
            return Err(station(format!(
                "camera_url {u:?} must be an http(s):// or rtsp(s):// address"
            )));
        }
        for c in &self.contacts {
            let valid = c.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && host.contains('.') && !c.contains(char::is_whitespace)
            });
            if !valid {
                return Err(station(format!("contacts: {c:?} is not an e-mail address")));
            }
        }

        for p in &mut self.parameters {
            p.check_and_complete(&self.id, self.kind)?;
        }
        // Every code and alias must name one parameter only, or a reading
        // could land on the wrong one.
        let mut names: HashMap<String, &str> = HashMap::new();
        for p in &self.parameters {
            for name in std::iter::once(&p.code).chain(&p.aliases) {
                if let Some(other) = names.insert(name.to_ascii_lowercase(), &p.code) {
                    let problem = if other == p.code {
                        format!("code or alias {name:?} is listed twice")
                    } else {
                        format!("code or alias {name:?} also names parameter {other:?}")
                    };
                    return Err(RegistryError::Parameter {
                        station: self.id.clone(),
                        parameter: p.code.clone(),
                        problem,
                    });
                }
            }
        }

        for i in 0..self.instruments.len() {
            let inst = &self.instruments[i];
            if inst.name.trim().is_empty() {
                return Err(station("an instrument needs a name".into()));
            }
            if inst.parameters.is_empty() {
                return Err(station(format!(
                    "instrument {:?} measures no parameter",
                    inst.name
                )));
            }
            for (on, to, what) in [
                (inst.calibrated_on, inst.calibration_valid_to, "calibration"),
                (inst.inspected_on, inst.inspection_valid_to, "inspection"),
            ] {
                if let (Some(on), Some(to)) = (on, to)
                    && to < on
                {
                    return Err(station(format!(
                        "instrument {:?}: {what} valid to {to}, before it was done on {on}",
                        inst.name
                    )));
                }
            }
            let mut canonical = Vec::with_capacity(inst.parameters.len());
            for p in &inst.parameters {
                let spec = self.parameter(p).ok_or_else(|| {
                    station(format!(
                        "instrument {:?} measures {p:?}, which the station does not",
                        inst.name
                    ))
                })?;
                canonical.push(spec.code.clone());
            }
            self.instruments[i].parameters = canonical;
        }
        for i in 0..self.limits.len() {
            let canonical = self.limits[i].check(self)?;
            self.limits[i].parameter = canonical;
        }
        for (i, a) in self.limits.iter().enumerate() {
            if self.limits[..i]
                .iter()
                .any(|b| b.parameter == a.parameter && b.effective_from == a.effective_from)
            {
                return Err(RegistryError::Limit {
                    station: self.id.clone(),
                    parameter: a.parameter.clone(),
                    effective_from: a.effective_from,
                    problem: "another limit on this parameter takes effect the same day".into(),
                });
            }
        }
        Ok(())
    }
}

fn default_interval() -> Duration {
    // The national rule: one sample every 5 minutes.
    Duration::from_secs(300)
}

/// One parameter a station measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    /// Canonical Circular 10 code (`COD`); stored readings carry it.
    pub code: String,
    /// Other codes accepted from the wire. After loading, also holds the
    /// parameter's HJ 212 code when the catalogue knows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Canonical unit: readings are converted to it, ranges and limits are
    /// in it.
    pub unit: String,
    /// Instrument range: a measured value outside it is not a measurement.
    pub range_min: f64,
    pub range_max: f64,
    /// How often the station promises a value (gap detection).
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub expected_interval: Duration,
    /// The unit this station's logger sends under HJ 212, when it is not
    /// the standard's unit for the code (flow in m³/h is common). HJ 212
    /// packets carry no units; without this, a value under a known code is
    /// read in the standard's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hj212_unit: Option<String>,
}

impl ParameterSpec {
    /// Whether a (trimmed) wire code is this parameter's code or an alias.
    pub fn answers_to(&self, code: &str) -> bool {
        self.code.eq_ignore_ascii_case(code)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(code))
    }

    fn check_and_complete(
        &mut self,
        station: &str,
        kind: StationKind,
    ) -> Result<(), RegistryError> {
        let err = |problem: String| RegistryError::Parameter {
            station: station.to_owned(),
            parameter: self.code.clone(),
            problem,
        };
        let blank = |s: &str| s.is_empty() || s.trim() != s;
        if blank(&self.code) {
            return Err(err(
                "code must be non-empty, without surrounding spaces".into()
            ));
        }
        if let Some(a) = self.aliases.iter().find(|a| blank(a)) {
            return Err(err(format!(
                "alias {a:?} must be non-empty, without surrounding spaces"
            )));
        }
        let unit = units::canonical(&self.unit)
            .ok_or_else(|| err(format!("unknown unit {:?}", self.unit)))?;
        if !(self.range_min.is_finite() && self.range_max.is_finite()) {
            return Err(err("range_min and range_max must be finite numbers".into()));
        }
        if self.range_min >= self.range_max {
            return Err(err(format!(
                "range_min {} must be below range_max {}",
                self.range_min, self.range_max
            )));
        }
        if self.expected_interval.is_zero() {
            return Err(err("expected_interval must be positive".into()));
        }
        if let Some(info) = parameter_by_code(&self.code, kind) {
            // Catches `COD` in m3/h: the unit must measure what the
            // catalogue says the parameter is.
            if units::convert(1.0, info.unit, unit, &self.code).is_err() {
                return Err(err(format!(
                    "unit {:?} cannot express {} (catalogue unit {:?})",
                    self.unit, info.name, info.unit
                )));
            }
            for code in [info.hj212_code, info.hj212_2005_code] {
                if !code.is_empty() && !self.aliases.iter().any(|a| a == code) {
                    self.aliases.push(code.to_owned());
                }
            }
        }
        if let Some(sent) = &self.hj212_unit {
            let canonical = units::canonical(sent)
                .ok_or_else(|| err(format!("unknown hj212_unit {sent:?}")))?;
            if units::convert(1.0, canonical, unit, &self.code).is_err() {
                return Err(err(format!(
                    "hj212_unit {sent:?} cannot be converted to the unit {unit:?}"
                )));
            }
            self.hj212_unit = Some(canonical.to_owned());
        }
        unit.clone_into(&mut self.unit);
        Ok(())
    }

    /// The unit a value this station sent under HJ 212 code `code` is in:
    /// what the registry says its logger sends, else the standard's unit
    /// for a code the catalogue knows, else this parameter's unit.
    pub fn hj212_unit_for(&self, code: &str) -> &str {
        self.hj212_unit
            .as_deref()
            .or_else(|| crate::domain::hj212_standard_unit(code.trim()))
            .unwrap_or(&self.unit)
    }
}

/// A permit limit on one parameter, from `effective_from` until a newer
/// limit on the same parameter takes effect. Values are in the parameter's
/// canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermitLimit {
    /// Canonical code (an alias is accepted in the file and replaced).
    pub parameter: String,
    /// Lower bound of a range limit (pH); never scaled by coefficients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The regulation's C: the upper bound before coefficients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The cited regulation, e.g. `QCVN 40:2011/BTNMT`.
    pub regulation: String,
    /// The regulation's column (`A`, `B`), when it has columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Factors the permit applies to C (QCVN 40: Kq, Kf; QCVN 19: Kp, Kv).
    /// Empty where the regulation uses C alone (temperature, colour, pH).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub coefficients: BTreeMap<String, f64>,
    #[serde(with = "date_serde")]
    pub effective_from: NaiveDate,
    /// Last day the limit applies (the permit's expiry); none: until a
    /// newer limit replaces it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_date_serde"
    )]
    pub effective_to: Option<NaiveDate>,
    /// The permit that sets the limit, and who issued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// What the limit judges: each value (`single`, the default), the 1-hour
    /// average (`1h`) or the 24-hour average (`24h`). Sources disagree on
    /// which applies to automatic data (see the registry's comments), so the
    /// permit says.
    #[serde(default)]
    pub averaging: Averaging,
    /// The reference O₂ (% by volume) the permit states a stack's
    /// concentrations at (the emission standards name one per kind of
    /// source). Each value is then judged corrected to it, `C × (21 −
    /// O₂ref) / (21 − O₂measured)`, with the O₂ the station sent for the
    /// same time (or the station's own converted value, HJ 212 `-ZsRtd`).
    /// None: judged as measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_o2: Option<f64>,
}

/// The value a limit is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Averaging {
    /// Each value.
    #[default]
    #[serde(rename = "single")]
    Single,
    /// The 1-hour average.
    #[serde(rename = "1h")]
    Hour,
    /// The 24-hour (local day) average.
    #[serde(rename = "24h", alias = "day")]
    Day,
}

impl Averaging {
    pub fn as_str(self) -> &'static str {
        match self {
            Averaging::Single => "single",
            Averaging::Hour => "1h",
            Averaging::Day => "24h",
        }
    }
}

impl PermitLimit {
    /// The permitted maximum `Cmax = C × Π coefficients`, if the limit has an
    /// upper bound.
    pub fn cmax(&self) -> Option<f64> {
        self.max
            .map(|c| self.coefficients.values().fold(c, |acc, k| acc * k))
    }

    /// Whether `value` breaks the limit (above Cmax or below the minimum).
    pub fn exceeded_by(&self, value: f64) -> bool {
        self.cmax().is_some_and(|max| value > max) || self.min.is_some_and(|min| value < min)
    }

    /// Checks the limit against its station and returns the canonical code
    /// of its parameter.
    fn check(&self, station: &Station) -> Result<String, RegistryError> {
        let err = |problem: String| RegistryError::Limit {
            station: station.id.clone(),
            parameter: self.parameter.clone(),
            effective_from: self.effective_from,
            problem,
        };
        let spec = station
            .parameter(&self.parameter)
            .ok_or_else(|| err("the station has no such parameter".into()))?;
        match (self.min, self.max) {
            (None, None) => return Err(err("needs max, or min and max".into())),
            (min, max) => {
                if min.is_some_and(|v| !v.is_finite()) || max.is_some_and(|v| !v.is_finite()) {
                    return Err(err("min and max must be finite numbers".into()));
                }
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo >= hi
                {
                    return Err(err(format!("min {lo} must be below max {hi}")));
                }
            }
        }
        if self.regulation.trim().is_empty() {
            return Err(err("regulation must be named".into()));
        }
        if self.effective_to.is_some_and(|to| to < self.effective_from) {
            return Err(err("effective_to is before effective_from".into()));
        }
        if self.column.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(err("column, when given, must be non-empty".into()));
        }
        if let Some(o2) = self.reference_o2 {
            if !(o2.is_finite() && (0.0..MAX_REFERENCE_O2).contains(&o2)) {
                return Err(err(format!(
                    "reference_o2 = {o2} must be a percentage from 0 to below {MAX_REFERENCE_O2}"
                )));
            }
            if spec.code == "O2" || coefficients_forbidden(spec) || spec.unit == "m³/h" {
                return Err(err(format!(
                    "reference_o2 corrects a concentration; {} is not one",
                    spec.code
                )));
            }
            if station.parameter("O2").is_none() {
                return Err(err(
                    "reference_o2 needs the station to measure O2 (the correction uses it)".into(),
                ));
            }
        }
        if !self.coefficients.is_empty() {
            if coefficients_forbidden(spec) {
                return Err(err(format!(
                    "QCVN applies no coefficients to {} (temperature, pH, colour and \
                     coliform are judged against C itself)",
                    spec.code
                )));
            }
            if self.max.is_none() || self.min.is_some() {
                return Err(err(
                    "coefficients scale a maximum only; a range or minimum uses C alone".into(),
                ));
            }
            for (name, k) in &self.coefficients {
                if name.trim().is_empty() {
                    return Err(err("coefficient names must be non-empty".into()));
                }
                if !(k.is_finite() && *k > 0.0) {
                    return Err(err(format!(
                        "coefficient {name} = {k} must be a positive number"
                    )));
                }
            }
        }
        Ok(spec.code.clone())
    }
}

/// O₂ in air, %: a reference at or above it makes the correction
/// meaningless (no flue gas).
pub const MAX_REFERENCE_O2: f64 = 21.0;

/// A stack concentration `value` measured at `o2_measured` % O₂, corrected
/// to `o2_reference` %: `value × (21 − ref) / (21 − measured)`. None when
/// the measured O₂ is not below 21 % minus a margin (the stack is blowing
/// air: start-up, shut-down, a leak) and the factor would be meaningless,
/// or when either is not a number.
pub fn o2_corrected(value: f64, o2_measured: f64, o2_reference: f64) -> Option<f64> {
    // QCVN-style corrections are not applied this close to air: the factor
    // passes 20 at 20 % O₂ for a 1 % reference.
    const AIR_MARGIN: f64 = 1.0;
    let usable = value.is_finite()
        && o2_reference.is_finite()
        && (0.0..=MAX_REFERENCE_O2 - AIR_MARGIN).contains(&o2_measured);
    if !usable {
        return None;
    }
    Some(value * (MAX_REFERENCE_O2 - o2_reference) / (MAX_REFERENCE_O2 - o2_measured))
}

/// Parameters whose limit QCVN 40 (and its successors) apply without the
/// Kq/Kf coefficients: temperature, pH, colour and coliform. Known by the
/// unit (already canonical here) or, for coliform, by the code.
fn coefficients_forbidden(spec: &ParameterSpec) -> bool {
    let code = spec.code.to_ascii_lowercase();
    matches!(spec.unit.as_str(), "°C" | "K" | "°F" | "pH" | "Pt/Co")
        || ["coliform", "colour", "color"]
            .iter()
            .any(|c| code.contains(c))
}

/// `wastewater` / `stack` for the proto crate's [`StationKind`].
mod kind_serde {
    use crate::domain::StationKind;
    use serde::{Deserialize, Deserializer, Serializer};

    const NAMES: &[&str] = &["wastewater", "stack"];

    pub fn serialize<S: Serializer>(kind: &StationKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match kind {
            StationKind::Wastewater => "wastewater",
            StationKind::Stack => "stack",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StationKind, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "wastewater" => Ok(StationKind::Wastewater),
            "stack" => Ok(StationKind::Stack),
            other => Err(serde::de::Error::unknown_variant(other, NAMES)),
        }
    }
}

/// A date written as a TOML date (`2024-01-01`) or a string
/// (`"2024-01-01"`), so the same struct also reads from JSON or env vars.
mod date_serde {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Toml(toml::value::Datetime),
        Text(String),
    }

    pub fn serialize<S: Serializer>(date: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(date)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        use serde::de::Error;
        let text = match Raw::deserialize(d)? {
            Raw::Toml(dt) => match (dt.date, dt.time) {
                (Some(date), None) => date.to_string(),
                _ => return Err(D::Error::custom(format!("{dt} is not a plain date"))),
            },
            Raw::Text(s) => s,
        };
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .map_err(|e| D::Error::custom(format!("date {text:?}: {e}")))
    }
}

/// An optional plain date (`effective_to`).
mod opt_date_serde {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
        match date {
            Some(d) => super::date_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::date_serde")] NaiveDate);
        Option::<Wrap>::deserialize(d).map(|o| o.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../deploy/registry.toml");

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    fn load(text: &str) -> Registry {
        Registry::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        match Registry::from_toml(text) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    }

    /// One wastewater station; `extra` is appended inside it.
    fn one_station(extra: &str) -> String {
        format!(
            r#"
[[stations]]
id = "T-1"
name = "Test outfall"
facility = "Test plant"
industrial_zone = "KCN Test"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [
  {{ code = "pH", unit = "pH", range_min = 0, range_max = 14 }},
  {{ code = "COD", unit = "mg/l", range_min = 0, range_max = 500, expected_interval = "5m" }},
  {{ code = "Temp", unit = "oC", range_min = 0, range_max = 100, aliases = ["T"] }},
]
{extra}
"#
        )
    }

    #[test]
    fn a_station_answers_to_its_aliases() {
        let r = load(&one_station("").replace(
            "kind = \"wastewater\"",
            "kind = \"wastewater\"\naliases = [\"PhuYen_NhaMayA_T-1\", \"OLD-1\"]",
        ));
        for name in ["T-1", "PhuYen_NhaMayA_T-1", "OLD-1"] {
            assert_eq!(
                r.station(name).map(|s| s.id.as_str()),
                Some("T-1"),
                "{name}"
            );
        }
        assert!(r.station("NhaMayA_T-1").is_none());
    }

    #[test]
    fn sample_registry_loads() {
        let r = load(SAMPLE);
        assert!(r.len() >= 8, "{} stations", r.len());
        for s in r.stations() {
            assert!(s.id.starts_with("PY-"), "{}", s.id);
            assert!(!s.limits.is_empty(), "{} has no limits", s.id);
            for p in &s.parameters {
                assert_eq!(
                    p.expected_interval,
                    Duration::from_secs(300),
                    "{} {}",
                    s.id,
                    p.code
                );
            }
        }
    }

    #[test]
    fn sample_registry_covers_the_simulated_fleet() {
        // The first stations `quantrac-sim` draws with its default seed.
        let r = load(SAMPLE);
        for id in [
            "PY-HH-ST01",
            "PY-HH-ST02",
            "PY-AP-WW01",
            "PY-AP-ST01",
            "PY-HH-WW01",
            "PY-AP-WW02",
            "PY-HH-WW02",
            "PY-AP-WW03",
            "PY-AP-WW04",
            "PY-HH-WW03",
        ] {
            let s = r.station(id).unwrap_or_else(|| panic!("{id} missing"));
            let codes: Vec<&str> = match s.kind {
                StationKind::Wastewater => vec!["Flow", "pH", "Temp", "TSS", "COD", "NH4"],
                StationKind::Stack => vec!["Flow", "Temp", "P", "O2", "PM", "SO2", "NOx", "CO"],
            };
            for code in codes {
                let info = parameter_by_code(code, s.kind).unwrap_or_else(|| panic!("{code}"));
                let p = s
                    .parameter(code)
                    .unwrap_or_else(|| panic!("{id} lacks {code}"));
                assert_eq!(p.unit, info.unit, "{id} {code}");
                assert!(
                    s.parameter(info.hj212_code).is_some(),
                    "{id} {}",
                    info.hj212_code
                );
            }
        }
    }

    #[test]
    fn sample_registry_round_trips_through_toml() {
        let r = load(SAMPLE);
        let text = toml::to_string(&RegistryFile {
            stations: r.stations().cloned().collect(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let again = load(&text);
        assert_eq!(again.len(), r.len());
        for (a, b) in r.stations().zip(again.stations()) {
            assert_eq!(a.parameters, b.parameters);
            assert_eq!(a.limits, b.limits);
        }
    }

    #[test]
    fn load_completes_units_and_aliases() {
        let r = load(&one_station(""));
        let s = r.station("T-1").unwrap_or_else(|| panic!("T-1"));
        assert_eq!(s.kind, StationKind::Wastewater);
        let cod = s.parameter("COD").unwrap_or_else(|| panic!("COD"));
        assert_eq!(cod.unit, "mg/L");
        // HJ 212-2017 and HJ/T 212-2005 codes.
        assert_eq!(cod.aliases, ["w01018", "011"]);
        assert_eq!(s.parameter("w01018").map(|p| p.code.as_str()), Some("COD"));
        assert_eq!(s.parameter("011").map(|p| p.code.as_str()), Some("COD"));
        assert_eq!(s.parameter(" cod ").map(|p| p.code.as_str()), Some("COD"));
        assert_eq!(s.parameter("PH").map(|p| p.code.as_str()), Some("pH"));
        assert_eq!(s.parameter("T").map(|p| p.unit.as_str()), Some("°C"));
        assert!(s.parameter("NH4").is_none());
        assert!(r.station("T-2").is_none());
    }

    #[test]
    fn limits_follow_effective_dates() {
        let r = load(&one_station(
            r#"
[[stations.limits]]
parameter = "COD"
max = 150
regulation = "QCVN 40:2011/BTNMT"
column = "B"
coefficients = { Kq = 0.9, Kf = 1.1 }
effective_from = 2015-01-01

[[stations.limits]]
parameter = "w01018"
max = 75
regulation = "QCVN 40:2011/BTNMT"
column = "A"
coefficients = { Kq = 0.9, Kf = 1.1 }
effective_from = "2025-09-01"

[[stations.limits]]
parameter = "pH"
min = 5.5
max = 9
regulation = "QCVN 40:2011/BTNMT"
column = "B"
effective_from = 2015-01-01
"#,
        ));
        let s = r.station("T-1").unwrap_or_else(|| panic!("T-1"));
        assert!(s.limit_at("COD", date(2014, 12, 31)).is_none());
        let old = s
            .limit_at("COD", date(2025, 8, 31))
            .unwrap_or_else(|| panic!("old"));
        assert_eq!(old.column.as_deref(), Some("B"));
        let cmax = old.cmax().unwrap_or_default();
        assert!((cmax - 148.5).abs() < 1e-9, "{cmax}");
        assert!(old.exceeded_by(148.6) && !old.exceeded_by(148.5));
        // The alias in the file became the canonical code.
        let new = s
            .limit_at("w01018", date(2025, 9, 1))
            .unwrap_or_else(|| panic!("new"));
        assert_eq!(new.parameter, "COD");
        assert!((new.cmax().unwrap_or_default() - 74.25).abs() < 1e-9);
        let ph = s
            .limit_at("pH", date(2030, 1, 1))
            .unwrap_or_else(|| panic!("pH"));
        assert_eq!((ph.min, ph.cmax()), (Some(5.5), Some(9.0)));
        assert!(ph.exceeded_by(5.4) && ph.exceeded_by(9.1) && !ph.exceeded_by(7.0));
        assert!(s.limit_at("Temp", date(2030, 1, 1)).is_none());
        assert!(s.limit_at("nope", date(2030, 1, 1)).is_none());
    }

    /// A permit with a number, an authority, an end date and an averaging
    /// period: after its last day no limit is in force (until a new one).
    #[test]
    fn permits_end_and_say_what_they_judge() {
        let r = load(&one_station(
            "[[stations.limits]]\nparameter = \"COD\"\nmax = 75\nregulation = \"QCVN 40:2011/BTNMT\"\n\
             effective_from = 2020-01-01\neffective_to = 2025-12-31\npermit_number = \"123/GP-UBND\"\n\
             authority = \"UBND tỉnh Phú Yên\"\naveraging = \"1h\"\n",
        ));
        let s = r.station("T-1").expect("station");
        let l = s
            .limit_at("COD", date(2025, 12, 31))
            .expect("in force on its last day");
        assert_eq!(l.averaging, Averaging::Hour);
        assert_eq!(l.permit_number.as_deref(), Some("123/GP-UBND"));
        assert!(s.limit_at("COD", date(2026, 1, 1)).is_none(), "expired");
        // A permit that replaced an open-ended limit and then ended: the
        // replaced limit does not come back (as the query service reports).
        let r = load(&one_station(
            "[[stations.limits]]\nparameter = \"COD\"\nmax = 150\nregulation = \"x\"\neffective_from = 2020-01-01\n\
             [[stations.limits]]\nparameter = \"COD\"\nmax = 100\nregulation = \"x\"\neffective_from = 2025-01-01\neffective_to = 2025-12-31\n",
        ));
        let s = r.station("T-1").expect("station");
        assert_eq!(
            s.limit_at("COD", date(2024, 6, 1)).and_then(|l| l.max),
            Some(150.0)
        );
        assert_eq!(
            s.limit_at("COD", date(2025, 6, 1)).and_then(|l| l.max),
            Some(100.0)
        );
        assert!(s.limit_at("COD", date(2026, 6, 1)).is_none());
        assert!(
            error(&one_station(
                "[[stations.limits]]\nparameter = \"COD\"\nmax = 75\nregulation = \"x\"\neffective_from = 2020-01-01\neffective_to = 2019-01-01\n"
            ))
            .contains("effective_to is before effective_from")
        );
        assert!(
            error(&one_station(
                "[[stations.limits]]\nparameter = \"COD\"\nmax = 75\nregulation = \"x\"\neffective_from = 2020-01-01\naveraging = \"2h\"\n"
            ))
            .contains("averaging")
        );
    }

    #[test]
    fn stack_coefficients() {
        let limit = PermitLimit {
            parameter: "SO2".into(),
            min: None,
            max: Some(500.0),
            regulation: "QCVN 19:2009/BTNMT".into(),
            column: Some("B".into()),
            coefficients: [("Kp".to_owned(), 0.9), ("Kv".to_owned(), 1.0)].into(),
            effective_from: date(2020, 1, 1),
            effective_to: None,
            permit_number: None,
            authority: None,
            averaging: Averaging::Single,
            reference_o2: None,
        };
        assert!((limit.cmax().unwrap_or_default() - 450.0).abs() < 1e-9);
        let no_max = PermitLimit {
            max: None,
            min: Some(4.0),
            ..limit
        };
        assert_eq!(no_max.cmax(), None);
    }

    #[test]
    fn instruments_run_out_after_their_last_valid_day() {
        let r = load(&one_station(
            "[[stations.instruments]]\nname = \"COD analyser SN 7\"\nparameters = [\"cod\"]\n\
             calibrated_on = 2026-06-01\ncalibration_valid_to = 2026-11-30\n\
             inspected_on = 2025-12-10\ninspection_valid_to = 2026-12-09\n",
        ));
        let inst = &r.station("T-1").expect("station").instruments[0];
        assert_eq!(inst.parameters, vec!["COD".to_owned()], "canonical code");
        assert!(
            inst.expired_on(date(2026, 11, 30)).is_empty(),
            "valid on its last day"
        );
        assert_eq!(
            inst.expired_on(date(2026, 12, 1)),
            vec![(Certificate::Calibration, date(2026, 11, 30))]
        );
        assert_eq!(inst.expired_on(date(2026, 12, 10)).len(), 2);
    }

    /// The sample registry loads, instruments included.
    #[test]
    fn the_sample_registry_loads() {
        let r = load(include_str!("../../deploy/registry.toml"));
        let st = r.station("PY-HH-ST01").expect("stack");
        assert_eq!(st.instruments.len(), 2);
        assert!(st.instruments[0].expired_on(date(2027, 3, 14)).is_empty());
        assert_eq!(st.instruments[1].parameters, vec!["PM".to_owned()]);
    }

    #[test]
    fn o2_correction() {
        // 200 mg/Nm³ at 11 % O₂ is 280 at 7 %: (21 − 7) / (21 − 11) = 1.4.
        let c = o2_corrected(200.0, 11.0, 7.0).unwrap_or_default();
        assert!((c - 280.0).abs() < 1e-9, "{c}");
        // At the reference itself nothing changes.
        assert_eq!(o2_corrected(200.0, 6.0, 6.0), Some(200.0));
        // Near air the factor is meaningless: none, not a huge number.
        assert_eq!(o2_corrected(200.0, 20.5, 6.0), None);
        assert_eq!(o2_corrected(200.0, 21.0, 6.0), None);
        assert_eq!(o2_corrected(200.0, -1.0, 6.0), None);
        assert_eq!(o2_corrected(f64::NAN, 8.0, 6.0), None);
    }

    #[test]
    fn rejects_bad_registries() {
        let limit = |body: &str| {
            one_station(&format!(
                "[[stations.limits]]\nregulation = \"QCVN 40:2011/BTNMT\"\neffective_from = 2020-01-01\n{body}\n"
            ))
        };
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{}{}", one_station(""), one_station("")),
                "appears more than once",
            ),
            (
                one_station("").replace("range_max = 500", "range_max = 0"),
                "must be below range_max",
            ),
            (
                limit("parameter = \"COD\"\nmax = 75\nreference_o2 = 6"),
                "needs the station to measure O2",
            ),
            (
                one_station("[[stations.instruments]]\nname = \"X\"\nparameters = [\"TSS\"]\n"),
                "which the station does not",
            ),
            (
                one_station(
                    "[[stations.instruments]]\nname = \"X\"\nparameters = [\"COD\"]\ninspected_on = 2026-01-01\ninspection_valid_to = 2025-01-01\n",
                ),
                "before it was done",
            ),
            (
                limit("parameter = \"COD\"\nmax = 75\nreference_o2 = 21"),
                "must be a percentage",
            ),
            (
                one_station("").replace("range_max = 500", "range_max = nan"),
                "finite",
            ),
            (
                one_station("").replace("\"mg/l\"", "\"mg/furlong\""),
                "unknown unit",
            ),
            (
                one_station("").replace("\"mg/l\"", "\"m3/h\""),
                "cannot express",
            ),
            (
                one_station("").replace("\"T\"", "\"cod\""),
                "also names parameter",
            ),
            (
                one_station("").replace(
                    "kind = \"wastewater\"",
                    "kind = \"wastewater\"\ncamera_url = \"file:///etc/passwd\"",
                ),
                "camera_url",
            ),
            (
                format!(
                    "{}{}",
                    one_station(""),
                    one_station("").replace("id = \"T-1\"", "id = \"T-2\"\naliases = [\"T-1\"]")
                ),
                "already names station T-1",
            ),
            (
                one_station("").replace(
                    "kind = \"wastewater\"",
                    "kind = \"wastewater\"\ncontacts = [\"ops at plant\"]",
                ),
                "not an e-mail address",
            ),
            (
                one_station("").replace("\"T\"", "\"w01010\", \"w01010\""),
                "listed twice",
            ),
            (
                one_station("").replace("latitude = 13.0", "latitude = 95.0"),
                "latitude",
            ),
            (
                one_station("").replace("\"5m\"", "\"0s\""),
                "expected_interval",
            ),
            (
                one_station("").replace("\"5m\"", "\"five minutes\""),
                "expected_interval",
            ),
            (
                one_station("").replace("kind = \"wastewater\"", "kind = \"river\""),
                "river",
            ),
            (one_station("").replace("province", "provinse"), "provinse"),
            (limit("parameter = \"NH4\"\nmax = 10"), "no such parameter"),
            (limit("parameter = \"COD\""), "needs max"),
            (
                limit("parameter = \"COD\"\nmax = 150\ncoefficients = { Kq = 0 }"),
                "positive",
            ),
            (
                limit("parameter = \"COD\"\nmax = 150\ncoefficients = { Kq = -1.1 }"),
                "positive",
            ),
            (limit("parameter = \"COD\"\nmax = inf"), "finite"),
            (limit("parameter = \"pH\"\nmin = 9\nmax = 6"), "below max"),
            (
                limit("parameter = \"pH\"\nmin = 6\nmax = 9\ncoefficients = { Kq = 1.0 }"),
                "no coefficients to pH",
            ),
            (
                limit("parameter = \"pH\"\nmax = 9\ncoefficients = { Kq = 1.0 }"),
                "no coefficients to pH",
            ),
            (
                limit("parameter = \"T\"\nmax = 40\ncoefficients = { Kq = 0.9, Kf = 1.1 }"),
                "no coefficients to Temp",
            ),
            (
                limit("parameter = \"COD\"\nmin = 1\nmax = 150\ncoefficients = { Kq = 1.0 }"),
                "maximum only",
            ),
            (
                limit("parameter = \"COD\"\nmax = 150\ncolour = \"B\""),
                "colour",
            ),
            (
                format!(
                    "{}\n[[stations.limits]]\nparameter = \"COD\"\nmax = 75\nregulation = \"x\"\neffective_from = 2020-01-01\n",
                    limit("parameter = \"COD\"\nmax = 150")
                ),
                "same day",
            ),
        ];
        for (text, want) in cases {
            let e = error(&text);
            assert!(e.contains(want), "wanted {want:?} in: {e}");
        }
    }

    /// Coliform registers in MPN/100 mL; its limit takes no coefficients.
    #[test]
    fn coliform_registers_and_takes_no_coefficients() {
        let with_coliform = |coefficients: &str| {
            one_station(&format!(
                "[[stations.limits]]\nparameter = \"Coliform\"\nmax = 5000\n{coefficients}regulation = \"QCVN 40:2011/BTNMT\"\ncolumn = \"B\"\neffective_from = 2020-01-01\n"
            ))
            .replace(
                "  { code = \"pH\"",
                "  { code = \"Coliform\", unit = \"MPN/100 mL\", range_min = 0, range_max = 100000 },\n  { code = \"pH\"",
            )
        };
        let r = load(&with_coliform(""));
        let s = r.station("T-1").unwrap_or_else(|| panic!("T-1"));
        assert_eq!(
            s.parameter("Coliform").map(|p| p.unit.as_str()),
            Some("MPN/100mL")
        );
        let e = error(&with_coliform("coefficients = { Kq = 0.9 }\n"));
        assert!(e.contains("no coefficients to Coliform"), "{e}");
    }

    #[test]
    fn errors_name_station_and_parameter() {
        let e = error(&one_station("").replace("range_max = 500", "range_max = 0"));
        assert!(e.contains("T-1") && e.contains("COD"), "{e}");
    }

    #[test]
    fn load_reports_the_path() {
        let missing = Path::new("/nonexistent/registry.toml");
        let e = Registry::load(missing).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/registry.toml"), "{e}");
    }

    #[test]
    fn debug_redacts_the_password() {
        let r = load(&one_station("").replace(
            "kind = \"wastewater\"",
            "kind = \"wastewater\"\nhj212_password = \"s3cret\"",
        ));
        let s = r.station("T-1").unwrap_or_else(|| panic!("T-1"));
        assert_eq!(s.hj212_password.as_deref(), Some("s3cret"));
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
