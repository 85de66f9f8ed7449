//! Unit normalisation: turns a value in the unit a station sent into the
//! parameter's canonical unit from the registry.
//!
//! Loggers spell units every which way (`mg/l`, `mg/Nm³`, `oC`, `m3/ngày`),
//! so spellings are first reduced to a key (trimmed, lower case, no spaces,
//! `³` → `3`, `µ` → `u`, no degree sign) and looked up in a table. Each unit
//! belongs to one quantity and converts linearly (temperatures affinely) to
//! that quantity's base; two units convert only within the same quantity,
//! plus one bridge: gas volume fractions (`ppm`, `ppb`) to mass
//! concentrations at normal conditions, `mg/Nm³ = ppm × M / 24.45`, with the
//! molar mass `M` of the parameter and the molar volume 24.45 L/mol of QCVN
//! 19:2009's normal conditions (25 °C, 760 mmHg).
//!
//! Deliberately *not* convertible: concentrations at stack conditions
//! (`mg/m3`) to normal conditions (`mg/Nm3`), and actual to normal gas flow;
//! both need the flue gas's temperature and pressure at that moment, which a
//! single reading does not carry.

use thiserror::Error;

/// Litres per mole of ideal gas at QCVN 19:2009 normal conditions (25 °C,
/// 760 mmHg).
pub const MOLAR_VOLUME_L: f64 = 24.45;

/// Why a value could not be converted. Both variants name both units as
/// sent, so the rejection tells the operator exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitError {
    #[error("cannot convert {from:?} to {to:?}: unknown unit {unknown:?}")]
    Unknown {
        from: String,
        to: String,
        unknown: String,
    },
    #[error("cannot convert {from:?} to {to:?}: {why}")]
    Incompatible {
        from: String,
        to: String,
        why: String,
    },
}

/// The physical quantity a unit measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    /// Mass per actual volume (water; gas at stack conditions). Base mg/L.
    MassConcentration,
    /// Mass per normal cubic metre (QCVN 19 conditions). Base mg/Nm3.
    NormalMassConcentration,
    /// Gas volume fraction. Base ppm.
    VolumeFraction,
    /// Volume flow at actual conditions. Base m3/h.
    Flow,
    /// Volume flow at normal conditions. Base Nm3/h.
    NormalFlow,
    /// Base K.
    Temperature,
    /// Base kPa.
    Pressure,
    Ph,
    /// Percent by volume (O2, moisture).
    Percent,
    /// Platinum-cobalt colour units.
    Colour,
    /// Most probable number of coliform bacteria per 100 mL (QCVN 40's
    /// coliform limit).
    Microbial,
}

impl Quantity {
    fn name(self) -> &'static str {
        match self {
            Quantity::MassConcentration => "mass concentration",
            Quantity::NormalMassConcentration => "mass concentration at normal conditions",
            Quantity::VolumeFraction => "volume fraction",
            Quantity::Flow => "flow",
            Quantity::NormalFlow => "flow at normal conditions",
            Quantity::Temperature => "temperature",
            Quantity::Pressure => "pressure",
            Quantity::Ph => "pH",
            Quantity::Percent => "percent",
            Quantity::Colour => "colour",
            Quantity::Microbial => "bacteria count",
        }
    }
}

/// One unit: `base = value × scale + offset` in its quantity's base unit.
#[derive(Debug)]
struct Unit {
    canonical: &'static str,
    quantity: Quantity,
    scale: f64,
    offset: f64,
    /// Every accepted spelling as a lookup key (see [`key`]), the
    /// canonical one's included.
    spellings: &'static [&'static str],
    /// A unit that counts one species' mass (ammonium as the NH4+ ion)
    /// converts only for that parameter.
    species: Option<&'static str>,
}

const fn unit(
    canonical: &'static str,
    quantity: Quantity,
    scale: f64,
    spellings: &'static [&'static str],
) -> Unit {
    Unit {
        canonical,
        quantity,
        scale,
        offset: 0.0,
        spellings,
        species: None,
    }
}

/// Grams of nitrogen per gram of ammonium ion (N 14.0067, NH4+ 18.0385):
/// QCVN 40 limits ammonium "as N"; analysers often report the ion.
const NH4_ION_AS_N: f64 = 14.0067 / 18.0385;

/// mg/m³ at 273.15 K in mg/Nm³ at QCVN's 298.15 K (same pressure).
const STANDARD_STATE_CN: f64 = 273.15 / 298.15;

/// 0 °F in kelvin.
const FAHRENHEIT_ZERO_K: f64 = 273.15 - 32.0 * 5.0 / 9.0;

use Quantity::*;

#[rustfmt::skip]
static UNITS: &[Unit] = &[
    unit("mg/L", MassConcentration, 1.0, &["mg/l", "mg/dm3"]),
    unit("g/m3", MassConcentration, 1.0, &["g/m3"]),
    unit("µg/L", MassConcentration, 1e-3, &["ug/l", "mcg/l"]),
    unit("g/L", MassConcentration, 1e3, &["g/l"]),
    unit("mg/m3", MassConcentration, 1e-3, &["mg/m3"]),
    unit("µg/m3", MassConcentration, 1e-6, &["ug/m3"]),
    unit("mg/Nm3", NormalMassConcentration, 1.0, &["mg/nm3"]),
    unit("g/Nm3", NormalMassConcentration, 1e3, &["g/nm3"]),
    unit("µg/Nm3", NormalMassConcentration, 1e-3, &["ug/nm3"]),
    // HJ 212's gas concentrations: per m³ at the Chinese standard state
    // (273.15 K, 101.325 kPa). The same mass fills 298.15/273.15 times the
    // volume at QCVN's 25 °C, so the concentration there is lower.
    unit("mg/m3@0C", NormalMassConcentration, STANDARD_STATE_CN, &["mg/m3@0c", "mg/nm3@0c", "mg/m3@273k", "mg/nm3@273k", "mg/m3(0c)", "mg/nm3(0c)"]),
    unit("ppm", VolumeFraction, 1.0, &["ppm", "ppmv", "ppm(v)"]),
    unit("ppb", VolumeFraction, 1e-3, &["ppb", "ppbv"]),
    unit("m3/h", Flow, 1.0, &["m3/h", "m3/hr", "m3/giờ", "m3/gio"]),
    unit("m3/s", Flow, 3600.0, &["m3/s", "m3/sec"]),
    unit("m3/min", Flow, 60.0, &["m3/min", "m3/phút"]),
    unit("L/s", Flow, 3.6, &["l/s", "lps"]),
    unit("L/min", Flow, 0.06, &["l/min", "lpm"]),
    unit("m3/day", Flow, 1.0 / 24.0, &["m3/day", "m3/d", "m3/ngày", "m3/ngay", "m3/ngàyđêm", "m3/ngđ"]),
    unit("Nm3/h", NormalFlow, 1.0, &["nm3/h", "nm3/hr"]),
    unit("Nm3/s", NormalFlow, 3600.0, &["nm3/s"]),
    // Ammonium as the NH4+ ion, to ammonium as N (NH4 only); and mass of
    // nitrogen, which is what "mg/L" of NH4 (as N) means.
    Unit { canonical: "mg/L NH4+", quantity: MassConcentration, scale: NH4_ION_AS_N, offset: 0.0, spellings: &["mg/lnh4+", "mg/lnh4", "mg/l-nh4", "mg/l-nh4+", "mg/l(nh4+)", "mg/l(nh4)", "mgnh4/l", "mgnh4+/l", "mg/lasnh4", "mg/lasnh4+"], species: Some("NH4") },
    unit("mg/L N", MassConcentration, 1.0, &["mg/ln", "mg/l-n", "mg/l(n)", "mgn/l", "mg/lasn", "mg/l(asn)", "mg/lnh4-n", "mg/l(nh4-n)", "mg/lnh4n"]),
    Unit { canonical: "°C", quantity: Temperature, scale: 1.0, offset: 273.15, spellings: &["c", "oc", "degc", "celsius"], species: None },
    unit("K", Temperature, 1.0, &["k", "kelvin"]),
    Unit { canonical: "°F", quantity: Temperature, scale: 5.0 / 9.0, offset: FAHRENHEIT_ZERO_K, spellings: &["f", "of", "degf", "fahrenheit"], species: None },
    unit("kPa", Pressure, 1.0, &["kpa"]),
    unit("Pa", Pressure, 1e-3, &["pa"]),
    unit("hPa", Pressure, 0.1, &["hpa"]),
    unit("mbar", Pressure, 0.1, &["mbar", "mb"]),
    unit("bar", Pressure, 100.0, &["bar"]),
    unit("mmHg", Pressure, 101.325 / 760.0, &["mmhg", "torr"]),
    unit("mmH2O", Pressure, 0.009_806_65, &["mmh2o", "mmwc", "mmwg"]),
    unit("atm", Pressure, 101.325, &["atm"]),
    unit("pH", Ph, 1.0, &["ph", "-"]),
    unit("%", Percent, 1.0, &["%", "%vol", "vol%", "%v/v", "%(v/v)"]),
    unit("Pt/Co", Colour, 1.0, &["pt/co", "pt-co", "ptco", "mgpt/l", "hazen", "tcu"]),
    unit("MPN/100mL", Microbial, 1.0, &["mpn/100ml", "mpn/100"]),
];

/// Molar masses (g/mol) of the gases a stack reports in ppm, by canonical
/// parameter code. NOx is reported as NO2 (QCVN 19:2009).
#[rustfmt::skip]
const MOLAR_MASSES: &[(&str, f64)] = &[
    ("SO2", 64.066),
    ("NOx", 46.0055),
    ("NO2", 46.0055),
    ("NO", 30.006),
    ("CO", 28.010),
    ("H2S", 34.08),
    ("NH3", 17.031),
];

/// Molar mass of a parameter's gas, for ppm conversions.
pub fn molar_mass(parameter: &str) -> Option<f64> {
    MOLAR_MASSES
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(parameter.trim()))
        .map(|&(_, m)| m)
}

/// Reduces a spelling to its lookup key.
fn key(spelling: &str) -> String {
    spelling
        .trim()
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '°' | 'º' | '˚'))
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            '³' => '3',
            '²' | '₂' => '2',
            'µ' | 'μ' => 'u',
            other => other,
        })
        .collect()
}

fn lookup(spelling: &str) -> Option<&'static Unit> {
    // Most units arrive spelled canonically: skip the allocation.
    if let Some(u) = UNITS.iter().find(|u| u.canonical == spelling) {
        return Some(u);
    }
    let k = key(spelling);
    UNITS.iter().find(|u| u.spellings.contains(&k.as_str()))
}

/// The canonical spelling of a recognised unit (`"mg/l"` → `"mg/L"`), or
/// `None` when the unit is unknown. The empty string is not a unit.
pub fn canonical(unit: &str) -> Option<&'static str> {
    lookup(unit).map(|u| u.canonical)
}

/// The canonical spellings of every recognised unit.
pub fn known_units() -> impl Iterator<Item = &'static str> {
    UNITS.iter().map(|u| u.canonical)
}

/// Converts `value` from unit `from` to unit `to`. `parameter` is the
/// canonical parameter code, used for the molar mass of ppm conversions.
///
/// An empty `from` means the value is already in `to` (callers decide what
/// a missing unit means before calling), so it is returned unchanged once
/// `to` is known.
pub fn convert(value: f64, from: &str, to: &str, parameter: &str) -> Result<f64, UnitError> {
    let unknown = |u: &str| UnitError::Unknown {
        from: from.to_owned(),
        to: to.to_owned(),
        unknown: u.to_owned(),
    };
    let target = lookup(to).ok_or_else(|| unknown(to))?;
    if from.is_empty() {
        return Ok(value);
    }
    let source = lookup(from).ok_or_else(|| unknown(from))?;
    if std::ptr::eq(source, target) {
        return Ok(value);
    }
    let incompatible = |why: String| UnitError::Incompatible {
        from: from.to_owned(),
        to: to.to_owned(),
        why,
    };

    for u in [source, target] {
        if let Some(species) = u.species
            && !species.eq_ignore_ascii_case(parameter.trim())
        {
            return Err(incompatible(format!(
                "{} counts {species} only, not {parameter:?}",
                u.canonical
            )));
        }
    }
    let base = value * source.scale + source.offset;
    let base = match (source.quantity, target.quantity) {
        (a, b) if a == b => base,
        (VolumeFraction, NormalMassConcentration) | (NormalMassConcentration, VolumeFraction) => {
            let m = molar_mass(parameter).ok_or_else(|| {
                incompatible(format!("no molar mass known for parameter {parameter:?}"))
            })?;
            if source.quantity == VolumeFraction {
                base * m / MOLAR_VOLUME_L
            } else {
                base * MOLAR_VOLUME_L / m
            }
        }
        (MassConcentration, NormalMassConcentration)
        | (NormalMassConcentration, MassConcentration)
        | (Flow, NormalFlow)
        | (NormalFlow, Flow) => {
            return Err(incompatible(
                "actual and normal conditions differ by the gas's temperature and pressure, \
                 which the reading does not carry"
                    .to_owned(),
            ));
        }
        (a, b) => {
            return Err(incompatible(format!("{} is not {}", a.name(), b.name())));
        }
    };
    Ok((base - target.offset) / target.scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn conv(v: f64, from: &str, to: &str) -> f64 {
        convert(v, from, to, "COD").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ammonium_as_the_ion_converts_to_ammonium_as_n_and_only_for_nh4() {
        let n = convert(18.0385, "mg/L NH4+", "mg/L", "NH4").expect("NH4");
        assert!(close(n, 14.0067), "{n}");
        let spelled = convert(10.0, "mg/l NH4+", "mg/L", "NH4").expect("spelling");
        assert!(close(spelled, 10.0 * 14.0067 / 18.0385), "{spelled}");
        assert_eq!(convert(3.0, "mg/L N", "mg/L", "NH4"), Ok(3.0));
        assert!(matches!(
            convert(10.0, "mg/L NH4+", "mg/L", "COD"),
            Err(UnitError::Incompatible { .. })
        ));
    }

    #[test]
    fn canonical_tables_are_consistent() {
        for u in UNITS {
            assert_eq!(canonical(u.canonical), Some(u.canonical));
            assert!(
                u.spellings.contains(&key(u.canonical).as_str()),
                "{}",
                u.canonical
            );
            for s in u.spellings {
                assert_eq!(key(s), *s, "spelling {s:?} of {} is not a key", u.canonical);
                assert_eq!(canonical(s), Some(u.canonical), "{s}");
            }
        }
        // No key may point at two units.
        let mut keys = std::collections::HashMap::new();
        for u in UNITS {
            for k in u.spellings {
                if let Some(other) = keys.insert(*k, u.canonical) {
                    panic!("key {k:?} means both {other} and {}", u.canonical);
                }
            }
        }
    }

    #[test]
    fn tolerant_spellings() {
        for (spelling, want) in [
            ("mg/l", "mg/L"),
            (" MG/L ", "mg/L"),
            ("m³/h", "m3/h"),
            ("M3/H", "m3/h"),
            ("°C", "°C"),
            ("oC", "°C"),
            ("C", "°C"),
            ("degC", "°C"),
            ("deg C", "°C"),
            ("ºC", "°C"),
            ("mg/Nm³", "mg/Nm3"),
            ("mg/nm3", "mg/Nm3"),
            ("mg/Nm3", "mg/Nm3"),
            ("pH", "pH"),
            ("-", "pH"),
            ("%", "%"),
            ("%vol", "%"),
            ("% vol", "%"),
            ("kPa", "kPa"),
            ("Pa", "Pa"),
            ("hPa", "hPa"),
            ("mbar", "mbar"),
            ("Pt/Co", "Pt/Co"),
            ("Pt-Co", "Pt/Co"),
            ("μg/L", "µg/L"),
            ("ug/l", "µg/L"),
            ("m3/ngày đêm", "m3/day"),
            ("mmH₂O", "mmH2O"),
        ] {
            assert_eq!(canonical(spelling), Some(want), "{spelling:?}");
        }
        assert_eq!(canonical(""), None);
        assert_eq!(canonical("furlongs"), None);
    }

    #[test]
    fn mass_concentration() {
        assert!(close(conv(1.0, "g/L", "mg/L"), 1000.0));
        assert!(close(conv(42.0, "g/m3", "mg/L"), 42.0));
        assert!(close(conv(2500.0, "µg/L", "mg/L"), 2.5));
        assert!(close(conv(2.5, "mg/L", "ug/l"), 2500.0));
        assert!(close(conv(150.0, "mg/l", "g/L"), 0.15));
        assert!(close(conv(1.0, "mg/Nm3", "µg/Nm3"), 1000.0));
        assert!(close(conv(0.2, "g/Nm3", "mg/Nm3"), 200.0));
    }

    #[test]
    fn flow() {
        assert!(close(conv(1.0, "m3/s", "m3/h"), 3600.0));
        assert!(close(conv(10.0, "L/s", "m3/h"), 36.0));
        assert!(close(conv(1200.0, "m3/day", "m3/h"), 50.0));
        assert!(close(conv(50.0, "m3/h", "m3/ngày"), 1200.0));
        assert!(close(conv(36.0, "m3/h", "l/s"), 10.0));
    }

    #[test]
    fn temperature() {
        assert!(close(conv(0.0, "°C", "K"), 273.15));
        assert!(close(conv(300.0, "K", "oC"), 26.85));
        assert!(close(conv(212.0, "°F", "°C"), 100.0));
        assert!(close(conv(40.0, "degC", "F"), 104.0));
        assert!(close(conv(-40.0, "°F", "°C"), -40.0));
    }

    #[test]
    fn pressure() {
        assert!(close(conv(101_325.0, "Pa", "kPa"), 101.325));
        assert!(close(conv(1013.25, "hPa", "kPa"), 101.325));
        assert!(close(conv(1013.25, "mbar", "kPa"), 101.325));
        assert!(close(conv(760.0, "mmHg", "kPa"), 101.325));
        assert!(close(conv(1.0, "atm", "Pa"), 101_325.0));
        assert!(close(conv(1000.0, "mmH2O", "kPa"), 9.80665));
    }

    #[test]
    fn dimensionless_and_identity() {
        assert!(close(conv(7.1, "-", "pH"), 7.1));
        assert!(close(conv(21.0, "%vol", "%"), 21.0));
        assert!(close(conv(30.0, "Pt-Co", "Pt/Co"), 30.0));
        // HJ 212 carries no unit: the value is already canonical.
        assert_eq!(convert(7.1, "", "pH", "pH"), Ok(7.1));
        assert_eq!(convert(42.0, "", "mg/L", "COD"), Ok(42.0));
    }

    #[test]
    fn ppm_to_normal_mass_concentration() {
        let cases = [
            ("SO2", 64.066),
            ("NOx", 46.0055),
            ("NO", 30.006),
            ("CO", 28.010),
            ("H2S", 34.08),
            ("NH3", 17.031),
        ];
        for (gas, m) in cases {
            let mg = convert(100.0, "ppm", "mg/Nm3", gas).unwrap_or_else(|e| panic!("{e}"));
            assert!(close(mg, 100.0 * m / 24.45), "{gas}: {mg}");
            let back = convert(mg, "mg/Nm3", "ppm", gas).unwrap_or_else(|e| panic!("{e}"));
            assert!(close(back, 100.0), "{gas}: {back}");
        }
        // 175 ppm SO2 is about 458.6 mg/Nm3: close to QCVN 19 column B.
        let so2 = convert(175.0, "ppm", "mg/Nm³", "SO2").unwrap_or_else(|e| panic!("{e}"));
        assert!((so2 - 458.55).abs() < 0.01, "{so2}");
        let ppb = convert(1000.0, "ppb", "mg/Nm3", "CO").unwrap_or_else(|e| panic!("{e}"));
        assert!(close(ppb, 28.010 / 24.45));
    }

    #[test]
    fn ppm_needs_a_known_gas() {
        let err = convert(5.0, "ppm", "mg/Nm3", "PM");
        assert!(
            matches!(&err, Err(UnitError::Incompatible { why, .. }) if why.contains("PM")),
            "{err:?}"
        );
    }

    #[test]
    fn stack_conditions_are_not_normal_conditions() {
        let err = convert(100.0, "mg/m3", "mg/Nm3", "SO2");
        assert!(
            matches!(err, Err(UnitError::Incompatible { .. })),
            "{err:?}"
        );
        let err = convert(100.0, "m3/h", "Nm3/h", "Flow");
        assert!(
            matches!(err, Err(UnitError::Incompatible { .. })),
            "{err:?}"
        );
        // mg/m3 is still a mass concentration like mg/L.
        assert!(close(conv(1000.0, "mg/m3", "mg/L"), 1.0));
    }

    #[test]
    fn errors_name_both_units() {
        for (from, to) in [
            ("mg/L", "m3/h"),
            ("furlongs", "mg/L"),
            ("mg/L", "bogus"),
            ("°C", "pH"),
        ] {
            let err = convert(1.0, from, to, "COD");
            let text = match &err {
                Err(e) => e.to_string(),
                Ok(v) => panic!("{from} -> {to} converted to {v}"),
            };
            assert!(text.contains(from) && text.contains(to), "{text}");
        }
        // An empty source unit still needs a known target.
        assert!(matches!(
            convert(1.0, "", "bogus", "COD"),
            Err(UnitError::Unknown { .. })
        ));
    }

    #[test]
    fn chinese_standard_state_to_qcvn_normal_conditions() {
        // 450 mg/m3 at 0 °C is 412.3 mg/Nm3 at 25 °C.
        let v = conv(450.0, "mg/m3@0C", "mg/Nm3");
        assert!((v - 450.0 * 273.15 / 298.15).abs() < 1e-9, "{v}");
        assert!(close(conv(v, "mg/Nm3", "mg/m3@0C"), 450.0));
        assert_eq!(canonical("mg/Nm3@0°C"), Some("mg/m3@0C"));
        // Still not the stack's actual conditions.
        assert!(convert(1.0, "mg/m3@0C", "mg/m3", "SO2").is_err());
    }

    #[test]
    fn coliform_counts() {
        assert_eq!(canonical("MPN/100 ml"), Some("MPN/100mL"));
        assert!(close(conv(3000.0, "mpn/100ml", "MPN/100mL"), 3000.0));
        assert!(convert(1.0, "MPN/100mL", "mg/L", "Coliform").is_err());
    }
}
