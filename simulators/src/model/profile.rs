//! What a typical station measures: a base, a daily cycle and noise per
//! parameter, and the QCVN column B limit its exceedance episodes cross.
//!
//! The limits here only steer the simulator (an exceedance episode must land
//! above them); the pipeline takes its limits from permits, as data.

use quantrac_proto::domain::StationKind;

/// A permit limit as the simulator needs it to make an exceedance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// The value must stay at or below this.
    Max(f64),
    /// The value must stay within `[low, high]` (pH).
    Range(f64, f64),
}

impl Limit {
    /// Whether `value` breaks the limit.
    pub fn exceeded_by(self, value: f64) -> bool {
        match self {
            Limit::Max(max) => value > max,
            Limit::Range(low, high) => value < low || value > high,
        }
    }
}

/// How one parameter behaves at a typical station of its kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Circular 10 code; the unit and HJ 212 code come from
    /// `quantrac_proto::domain::PARAMETERS`.
    pub code: &'static str,
    /// Daily mean.
    pub base: f64,
    /// Half the peak-to-trough swing of the daily cycle.
    pub daily_amplitude: f64,
    /// Local hour (UTC+7) of the daily peak: production shifts drive flow
    /// and load, the afternoon sun drives water temperature.
    pub peak_hour: f64,
    /// Standard deviation of the sample-to-sample noise.
    pub noise: f64,
    /// Whether the station's size scales this parameter (flow, loads) or
    /// not (pH, temperatures, pressure, O2 stay physical).
    pub scales: bool,
    /// Decimals the logger reports.
    pub decimals: i32,
    /// QCVN 40:2011 / 19:2009 column B limit, if the parameter has one.
    pub limit: Option<Limit>,
}

/// Wastewater outfall: the mandatory set of Decree 08/2022.
///
/// Tuned so that base + cycle + 3.5 σ of noise and drift stays under
/// column B at the largest station scale; the model's tests check it.
#[rustfmt::skip]
pub const WASTEWATER: &[Profile] = &[
    Profile { code: "Flow", base: 50.0, daily_amplitude: 18.0, peak_hour: 11.0, noise: 3.0, scales: true, decimals: 1, limit: None },
    Profile { code: "pH", base: 7.2, daily_amplitude: 0.25, peak_hour: 14.0, noise: 0.06, scales: false, decimals: 2, limit: Some(Limit::Range(5.5, 9.0)) },
    Profile { code: "Temp", base: 29.0, daily_amplitude: 1.5, peak_hour: 15.0, noise: 0.3, scales: false, decimals: 1, limit: Some(Limit::Max(40.0)) },
    Profile { code: "TSS", base: 30.0, daily_amplitude: 6.0, peak_hour: 11.0, noise: 2.5, scales: true, decimals: 1, limit: Some(Limit::Max(100.0)) },
    Profile { code: "COD", base: 45.0, daily_amplitude: 8.0, peak_hour: 11.0, noise: 3.0, scales: true, decimals: 1, limit: Some(Limit::Max(150.0)) },
    Profile { code: "NH4", base: 2.0, daily_amplitude: 0.4, peak_hour: 11.0, noise: 0.2, scales: true, decimals: 2, limit: Some(Limit::Max(10.0)) },
];

/// Stack: Decree 08/2022 art. 98's set (best-known).
#[rustfmt::skip]
pub const STACK: &[Profile] = &[
    Profile { code: "Flow", base: 40_000.0, daily_amplitude: 6_000.0, peak_hour: 12.0, noise: 1_200.0, scales: true, decimals: 0, limit: None },
    Profile { code: "Temp", base: 120.0, daily_amplitude: 8.0, peak_hour: 13.0, noise: 2.0, scales: false, decimals: 1, limit: None },
    Profile { code: "P", base: 101.3, daily_amplitude: 0.2, peak_hour: 14.0, noise: 0.1, scales: false, decimals: 2, limit: None },
    // Excess O2 is highest when the furnace runs light, at night.
    Profile { code: "O2", base: 8.0, daily_amplitude: 0.6, peak_hour: 3.0, noise: 0.3, scales: false, decimals: 2, limit: None },
    Profile { code: "PM", base: 80.0, daily_amplitude: 15.0, peak_hour: 12.0, noise: 6.0, scales: true, decimals: 1, limit: Some(Limit::Max(200.0)) },
    Profile { code: "SO2", base: 250.0, daily_amplitude: 40.0, peak_hour: 12.0, noise: 15.0, scales: true, decimals: 1, limit: Some(Limit::Max(500.0)) },
    Profile { code: "NOx", base: 400.0, daily_amplitude: 60.0, peak_hour: 12.0, noise: 25.0, scales: true, decimals: 1, limit: Some(Limit::Max(850.0)) },
    Profile { code: "CO", base: 200.0, daily_amplitude: 40.0, peak_hour: 12.0, noise: 20.0, scales: true, decimals: 1, limit: Some(Limit::Max(1000.0)) },
];

/// The profile set of a station kind.
pub fn profiles(kind: StationKind) -> &'static [Profile] {
    match kind {
        StationKind::Wastewater => WASTEWATER,
        StationKind::Stack => STACK,
    }
}

#[cfg(test)]
mod tests {
    use quantrac_proto::domain::parameter_by_code;

    use super::*;

    #[test]
    fn every_profile_is_in_the_catalogue() {
        for kind in [StationKind::Wastewater, StationKind::Stack] {
            for p in profiles(kind) {
                assert!(
                    parameter_by_code(p.code, kind).is_some(),
                    "{} missing",
                    p.code
                );
            }
        }
    }
}
