//! Instruments' certificates: an analyser whose calibration or inspection
//! (kiểm định) ran out by the registry's dates raises `instrument_expired`
//! on the first parameter it measures, once per instrument and day it ran
//! out (both certificates of one day share the alert). A later date in the
//! registry (the certificate renewed) resolves it. Judged on the clock, by
//! the instance that watches the station.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use quantrac_proto::registry::{Certificate, Instrument};

use super::incidents::Finding;
use super::time::{local_date, local_midnight};
use super::{Engine, Mode};
use crate::alert::{AlertEvent, AlertKey, RuleKind};

const DAY: Duration = Duration::from_secs(86_400);

/// The alert of `inst` for certificates that ran out after `last_day`: its
/// window is the first day the instrument was no longer covered.
fn key(
    station: &str,
    inst: &Instrument,
    last_day: NaiveDate,
    offset: FixedOffset,
) -> Option<AlertKey> {
    Some(AlertKey {
        rule: RuleKind::InstrumentExpired,
        station_id: station.to_owned(),
        parameter: inst.parameters.first()?.clone(),
        window_start: local_midnight(last_day.succ_opt()?, offset),
        window_len: Some(DAY),
    })
}

impl Engine {
    pub(super) fn expired_instruments(
        &mut self,
        now: DateTime<Utc>,
        offset: FixedOffset,
        out: &mut Vec<AlertEvent>,
    ) {
        let today = local_date(now, offset);
        let registry = std::sync::Arc::clone(&self.registry);
        let mut due = Vec::new();
        for station in registry.stations() {
            if !self.watches(&station.id) {
                continue;
            }
            for inst in &station.instruments {
                // Certificates that ran out the same day share one alert.
                let mut by_day: BTreeMap<NaiveDate, Vec<Certificate>> = BTreeMap::new();
                for (cert, day) in inst.expired_on(today) {
                    by_day.entry(day).or_default().push(cert);
                }
                for (day, certs) in by_day {
                    if let Some(k) = key(&station.id, inst, day, offset) {
                        due.push((k, inst.name.clone(), inst.parameters.join(", "), certs, day));
                    }
                }
            }
        }
        // Renewed: an active alert whose expiry the registry no longer shows.
        let renewed: Vec<AlertKey> = self
            .book
            .alerts
            .iter()
            .filter(|(k, r)| {
                k.rule == RuleKind::InstrumentExpired
                    && r.is_active()
                    && !due.iter().any(|(d, ..)| d == *k)
                    && self.watches(&k.station_id)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mode = Mode::Live(now);
        for k in renewed {
            self.book.auto_resolve(&k, now, mode, out);
        }
        for (k, name, measures, certs, day) in due {
            if self.book.alerts.contains_key(&k) {
                continue;
            }
            let what: Vec<&str> = certs.iter().map(|c| c.describe()).collect();
            let f = Finding {
                rule: RuleKind::InstrumentExpired,
                start: k.window_start,
                t: now,
                observed: 0.0,
                limit: 0.0,
                message: format!(
                    "Thiết bị hết hạn / instrument out of date: {name} ({measures}) của trạm {}: {} hết hiệu lực sau ngày {day}; số liệu không còn được bảo đảm / its readings are no longer vouched for",
                    k.station_id,
                    what.join(", ")
                ),
                window_end: None,
                opened_at: now,
                reference: 0.0,
            };
            let info = self.series_mut(&k.station_id, &k.parameter).info.clone();
            let mut claimed = false;
            self.book.window_alert(k, f, &mut claimed, &info, mode, out);
        }
    }
}
