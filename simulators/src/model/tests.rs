use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use quantrac_proto::domain::{DeviceStatus, PARAMETERS, StationKind};

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 15, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn fleet(seed: u64, stations: usize, anomalies: Anomalies) -> Fleet {
    let config = FleetConfig {
        seed,
        stations,
        anomalies,
        ..FleetConfig::default()
    };
    match Fleet::new(&config) {
        Ok(f) => f,
        Err(e) => panic!("fleet: {e}"),
    }
}

/// Only one kind of episode, so its frequency can be measured alone.
fn only(set: impl FnOnce(&mut Anomalies)) -> Anomalies {
    let mut a = Anomalies::none();
    set(&mut a);
    a
}

/// Every slot of `days` days from `t0` for every station.
fn slots(f: &Fleet, days: i64) -> impl Iterator<Item = (&Station, DateTime<Utc>)> + '_ {
    let n = days * 86_400 / i64::from(f.config().interval_secs);
    f.stations()
        .iter()
        .flat_map(move |s| (0..n).map(move |k| (s, t0() + f.interval() * k as i32)))
}

/// Probability that a point in time is covered by at least one episode of
/// a Poisson process with `per_day` episodes of `minutes` each.
fn coverage(per_day: f64, minutes: f64) -> f64 {
    1.0 - (-per_day * minutes / 1_440.0).exp()
}

fn assert_near(measured: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (measured - expected).abs() <= tolerance * expected,
        "{what}: measured {measured:.4}, expected {expected:.4} ± {:.0}%",
        tolerance * 100.0
    );
}

#[test]
fn same_seed_same_fleet_and_samples() {
    let a = fleet(7, 20, Anomalies::default());
    let b = fleet(7, 20, Anomalies::default());
    let end = t0() + TimeDelta::days(2);
    assert_eq!(a.samples_between(t0(), end), b.samples_between(t0(), end));
    for (x, y) in a.stations().iter().zip(b.stations()) {
        assert_eq!(
            (&x.id, &x.facility_name, x.protocol),
            (&y.id, &y.facility_name, y.protocol)
        );
    }
}

#[test]
fn different_seeds_differ() {
    let a = fleet(1, 20, Anomalies::default());
    let b = fleet(2, 20, Anomalies::default());
    let end = t0() + TimeDelta::hours(1);
    assert_ne!(a.samples_between(t0(), end), b.samples_between(t0(), end));
    let layout = |f: &Fleet| {
        f.stations()
            .iter()
            .map(|s| (s.id.clone(), s.facility_name.clone()))
            .collect::<Vec<_>>()
    };
    assert_ne!(layout(&a), layout(&b));
}

#[test]
fn answers_do_not_depend_on_the_order_of_questions() {
    let f = fleet(3, 5, Anomalies::default());
    let s = &f.stations()[4];
    let late = t0() + TimeDelta::days(30);
    let first = s.measure(late);
    for k in 0..100 {
        s.measure(t0() + TimeDelta::minutes(5 * k));
    }
    assert_eq!(s.measure(late), first);
    // Any time inside a slot gives that slot's sample.
    assert_eq!(s.measure(late + TimeDelta::seconds(299)), first);
}

#[test]
fn stations_have_ids_facilities_and_the_catalogue_parameters() {
    let f = fleet(11, 300, Anomalies::default());
    let ids: HashSet<_> = f.stations().iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 300, "ids are unique");
    for s in f.stations() {
        let parts: Vec<_> = s.id.split('-').collect();
        assert_eq!(parts.len(), 3, "{}", s.id);
        assert_eq!(parts[0], "PY");
        assert!(["HH", "AP", "DBSC"].contains(&parts[1]), "{}", s.id);
        let (prefix, number) = parts[2].split_at(2);
        assert_eq!(
            prefix,
            if s.kind == StationKind::Stack {
                "ST"
            } else {
                "WW"
            }
        );
        assert!(
            number.len() >= 2 && number.bytes().all(|b| b.is_ascii_digit()),
            "{}",
            s.id
        );
        assert!(
            s.facility_code.is_ascii() && !s.facility_code.contains(['_', ' ']),
            "{}",
            s.facility_code
        );
        assert!(!s.facility_name.is_empty());
        let codes: Vec<_> = s.parameters().map(|p| p.code).collect();
        let expected: &[&str] = match s.kind {
            StationKind::Wastewater => &["Flow", "pH", "Temp", "TSS", "COD", "NH4"],
            StationKind::Stack => &["Flow", "Temp", "P", "O2", "PM", "SO2", "NOx", "CO"],
        };
        assert_eq!(codes, expected);
        let sample = s.measure(t0());
        for (v, p) in sample.values.iter().zip(s.parameters()) {
            assert!(PARAMETERS.contains(p));
            assert_eq!((v.parameter.as_str(), v.unit.as_str()), (p.code, p.unit));
        }
    }
    let stack = f
        .stations()
        .iter()
        .filter(|s| s.kind == StationKind::Stack)
        .count();
    assert!(stack > 0 && stack < 300, "both kinds appear");
    assert_near(stack as f64 / 300.0, 0.3, 0.3, "stack share");
}

#[test]
fn protocol_mix_is_honoured() -> Result<(), SimError> {
    let config = FleetConfig {
        stations: 50,
        protocols: ProtocolMix::only(Protocol::TcpC10),
        ..FleetConfig::default()
    };
    assert!(
        Fleet::new(&config)?
            .stations()
            .iter()
            .all(|s| s.protocol == Protocol::TcpC10)
    );
    let f = fleet(5, 1_000, Anomalies::none());
    let hj212 = f
        .stations()
        .iter()
        .filter(|s| s.protocol == Protocol::TcpHj212)
        .count();
    assert_near(
        hj212 as f64 / 1_000.0,
        0.35,
        0.15,
        "tcp-hj212 share of the default mix",
    );
    Ok(())
}

#[test]
fn without_anomalies_every_slot_is_sent_on_time_and_within_limits() {
    let f = fleet(9, 40, Anomalies::none());
    let end = t0() + TimeDelta::days(3);
    let sent = f.samples_between(t0(), end);
    assert_eq!(sent.len(), 40 * 3 * 288);
    for tx in &sent {
        assert!(!tx.late);
        assert_eq!(tx.sent_at, tx.sample.measured_at);
        let station = &f.stations()[tx.station];
        for v in &tx.sample.values {
            assert_eq!(v.status, DeviceStatus::Measuring);
            assert_eq!(v.device_flag, "00");
            assert!(v.value >= 0.0, "{v:?}");
            if let Some(limit) = station.limit(&v.parameter) {
                assert!(
                    !limit.exceeded_by(v.value),
                    "{} {v:?} breaks {limit:?}",
                    station.id
                );
            }
        }
    }
}

#[test]
fn values_are_plausible() {
    let f = fleet(4, 60, Anomalies::none());
    let mut sums = std::collections::HashMap::<(&str, bool), (f64, usize)>::new();
    for (s, t) in slots(&f, 2) {
        for v in s.measure(t).values {
            let key = (
                s.parameters()
                    .find(|p| p.code == v.parameter)
                    .map_or("", |p| p.code),
                s.kind == StationKind::Stack,
            );
            let e = sums.entry(key).or_default();
            e.0 += v.value;
            e.1 += 1;
        }
    }
    let mean = |code, stack| {
        sums.get(&(code, stack))
            .map_or(f64::NAN, |(sum, n)| sum / *n as f64)
    };
    // Station scale is 0.7-1.2 (mean 0.95) on flows and loads.
    assert_near(mean("pH", false), 7.2, 0.03, "pH");
    assert_near(mean("Temp", false), 29.0, 0.03, "water temperature");
    assert_near(mean("COD", false), 45.0 * 0.95, 0.12, "COD");
    assert_near(mean("Flow", false), 50.0 * 0.95, 0.12, "wastewater flow");
    assert_near(mean("Temp", true), 120.0, 0.03, "stack temperature");
    assert_near(mean("SO2", true), 250.0 * 0.95, 0.15, "SO2");
    assert_near(mean("O2", true), 8.0, 0.05, "O2");
}

#[test]
fn flow_follows_the_local_working_day() {
    let f = fleet(6, 30, Anomalies::none());
    let mut day = 0.0;
    let mut night = 0.0;
    for s in f
        .stations()
        .iter()
        .filter(|s| s.kind == StationKind::Wastewater)
    {
        for d in 0..7 {
            // 11:00 and 23:00 local are 04:00 and 16:00 UTC.
            let noon = t0() + TimeDelta::days(d) + TimeDelta::hours(4);
            day += s.measure(noon).values[0].value;
            night += s.measure(noon + TimeDelta::hours(12)).values[0].value;
        }
    }
    assert!(day > night * 1.3, "day {day} night {night}");
}

#[test]
fn calibrations_and_errors_appear_at_the_configured_rate() {
    let days = 60;
    let f = fleet(
        21,
        10,
        only(|a| a.calibration = EpisodeSpec::new(2.0, 20, 20)),
    );
    let (mut calibrating, mut total) = (0usize, 0usize);
    for (s, t) in slots(&f, days) {
        for v in s.measure(t).values {
            total += 1;
            if v.status == DeviceStatus::Calibrating {
                calibrating += 1;
                assert_eq!(v.device_flag, "01");
            }
        }
    }
    assert_near(
        calibrating as f64 / total as f64,
        coverage(2.0, 20.0),
        0.15,
        "calibrating share",
    );

    let f = fleet(
        22,
        10,
        only(|a| a.device_error = EpisodeSpec::new(1.0, 30, 90)),
    );
    let (mut errors, mut total) = (0usize, 0usize);
    for (s, t) in slots(&f, days) {
        for v in s.measure(t).values {
            total += 1;
            if v.status == DeviceStatus::Error {
                errors += 1;
                assert_eq!((v.value, v.device_flag.as_str()), (0.0, "02"));
            }
        }
    }
    assert_near(
        errors as f64 / total as f64,
        coverage(1.0, 60.0),
        0.15,
        "error share",
    );
}

#[test]
fn exceedances_appear_at_the_configured_rate_and_break_the_limit() {
    let f = fleet(
        23,
        10,
        only(|a| a.exceedance = EpisodeSpec::new(0.5, 60, 120)),
    );
    let (mut over, mut total) = (0usize, 0usize);
    let mut runs = 0;
    for s in f.stations() {
        let limits: Vec<_> = s.parameters().map(|p| s.limit(p.code)).collect();
        let mut was_over = vec![false; limits.len()];
        for k in 0..(60 * 288) {
            let sample = s.measure(t0() + TimeDelta::minutes(5 * k));
            for (j, v) in sample.values.iter().enumerate() {
                let Some(limit) = limits[j] else { continue };
                total += 1;
                let is_over = limit.exceeded_by(v.value);
                over += usize::from(is_over);
                runs += usize::from(is_over && !was_over[j]);
                was_over[j] = is_over;
            }
        }
    }
    assert_near(
        over as f64 / total as f64,
        coverage(0.5, 90.0),
        0.15,
        "exceeding share",
    );
    // Episodes last 1-2 h: at 5 min a run is 12-24 samples, fewer when two merge.
    let mean_run = over as f64 / runs as f64;
    assert!((11.0..=26.0).contains(&mean_run), "mean run {mean_run}");
}

#[test]
fn silences_lose_data_and_outages_deliver_it_late_in_order() {
    let anomalies = only(|a| {
        a.silence = EpisodeSpec::new(1.0, 30, 30);
        a.outage = EpisodeSpec::new(1.0, 60, 180);
    });
    let f = fleet(31, 10, anomalies);
    let days = 40;
    let end = t0() + TimeDelta::days(days);
    let sent = f.samples_between(t0(), end);

    // Each measurement is sent at most once, at the time delivery() says,
    // and per station in measurement order.
    let mut seen = HashSet::new();
    let mut last = vec![None; f.stations().len()];
    for tx in &sent {
        let s = &f.stations()[tx.station];
        assert!(
            seen.insert((tx.station, tx.sample.measured_at)),
            "sent twice"
        );
        let expected = if tx.late {
            Delivery::Late {
                sent_at: tx.sent_at,
            }
        } else {
            Delivery::OnTime
        };
        assert_eq!(s.delivery(tx.sample.measured_at), expected);
        assert!(
            last[tx.station] < Some(tx.sample.measured_at),
            "out of order"
        );
        last[tx.station] = Some(tx.sample.measured_at);
        assert_eq!(
            s.sample_at(tx.sample.measured_at).as_ref(),
            Some(&tx.sample)
        );
    }
    let (mut lost, mut late, mut total) = (0usize, 0usize, 0usize);
    for (s, t) in slots(&f, days) {
        total += 1;
        match s.delivery(t) {
            Delivery::Lost => {
                lost += 1;
                assert_eq!(s.sample_at(t), None);
                assert!(!seen.contains(&(s.index, t)));
            }
            Delivery::Late { sent_at } => {
                late += 1;
                // The backlog of an outage running past the end is never sent.
                assert_eq!(seen.contains(&(s.index, t)), sent_at < end);
            }
            Delivery::OnTime => assert!(seen.contains(&(s.index, t))),
        }
    }
    // An outage slot is late, never lost: silence only loses what is not
    // already buffered.
    let p_outage = coverage(1.0, 120.0);
    assert_near(late as f64 / total as f64, p_outage, 0.15, "late share");
    assert_near(
        lost as f64 / total as f64,
        coverage(1.0, 30.0) * (1.0 - p_outage),
        0.2,
        "lost share",
    );
}

#[test]
fn backlog_before_the_start_is_not_sent() {
    let f = fleet(32, 5, only(|a| a.outage = EpisodeSpec::new(3.0, 120, 240)));
    let s = &f.stations()[0];
    // Find a slot inside an outage, start there: its backlog starts at the start.
    let Some(start) = (0..288 * 10)
        .map(|k| t0() + TimeDelta::minutes(5 * k))
        .find(|&t| {
            matches!(s.delivery(t), Delivery::Late { .. })
                && matches!(s.delivery(t - TimeDelta::minutes(5)), Delivery::Late { .. })
        })
    else {
        panic!("no outage in 10 days at 3 a day");
    };
    let Delivery::Late { sent_at } = s.delivery(start) else {
        unreachable!()
    };
    let sent = s.sends_at(sent_at, start);
    assert_eq!(sent[0].sample.measured_at, start);
    assert!(sent.iter().rev().skip(1).all(|tx| tx.late));
}

#[test]
fn config_is_validated() {
    let bad = [
        FleetConfig {
            stations: 0,
            ..FleetConfig::default()
        },
        FleetConfig {
            interval_secs: 0,
            ..FleetConfig::default()
        },
        FleetConfig {
            stack_share: 1.5,
            ..FleetConfig::default()
        },
        FleetConfig {
            anomalies: only(|a| a.outage = EpisodeSpec::new(1.0, 0, 10)),
            ..FleetConfig::default()
        },
        FleetConfig {
            anomalies: only(|a| a.outage = EpisodeSpec::new(1.0, 10, 2_000)),
            ..FleetConfig::default()
        },
        FleetConfig {
            anomalies: only(|a| a.silence = EpisodeSpec::new(f64::NAN, 10, 20)),
            ..FleetConfig::default()
        },
    ];
    for config in bad {
        assert!(
            matches!(Fleet::new(&config), Err(SimError::Config(_))),
            "{config:?}"
        );
    }
}

#[test]
fn scaled_anomalies_multiply_rates_and_keep_durations() {
    let base = Anomalies::default();
    let scaled = base.scaled(30.0).expect("within bounds");
    assert!((scaled.exceedance.per_day - base.exceedance.per_day * 30.0).abs() < 1e-9);
    assert!((scaled.silence.per_day - base.silence.per_day * 30.0).abs() < 1e-9);
    assert_eq!(scaled.exceedance.min_minutes, base.exceedance.min_minutes);
    assert_eq!(scaled.outage.max_minutes, base.outage.max_minutes);
    // More exceedance episodes in the same simulated day.
    let count = |a: Anomalies| {
        let f = fleet(7, 20, a);
        let mut over = 0usize;
        for s in f.stations() {
            let limits: Vec<_> = s.parameters().map(|p| s.limit(p.code)).collect();
            for k in 0..288 {
                let sample = s.measure(t0() + TimeDelta::minutes(5 * k));
                for (j, v) in sample.values.iter().enumerate() {
                    over += usize::from(limits[j].is_some_and(|l| l.exceeded_by(v.value)));
                }
            }
        }
        over
    };
    assert!(count(scaled) > count(base));
    for bad in [-1.0, f64::NAN, 1e6] {
        let e = base.scaled(bad).expect_err("refused");
        assert!(e.to_string().contains("per_day"), "{e}");
    }
}
