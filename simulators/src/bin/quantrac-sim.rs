//! `quantrac-sim`: simulated monitoring stations sending to quantrac ingest.
//!
//! Parses arguments, sets up logging and signals, and runs the library's
//! [`Simulator`]; prints progress every few seconds and a summary at the end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use quantrac_simulators::{
    Anomalies, Counters, Fleet, FleetConfig, MqttConfig, Pacing, ProtocolMix, RunConfig, Simulator,
    Stats, TcpConfig, default_start,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Simulated wastewater and stack monitoring stations (Phú Yên) sending
/// over MQTT (JSON, Circular 10) and TCP (HJ 212, Circular 10, JSON lines).
#[derive(Debug, Parser)]
#[command(name = "quantrac-sim", version)]
struct Args {
    /// Number of stations.
    #[arg(long, env = "QUANTRAC_SIM_STATIONS", default_value_t = 10)]
    stations: usize,
    /// Seed of the fleet: same seed, same stations and readings.
    #[arg(long, env = "QUANTRAC_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Protocol of the stations: `mix`, or one or more of mqtt-json,
    /// mqtt-c10, tcp-hj212, tcp-c10, tcp-json, each optionally `=<weight>`.
    #[arg(
        long = "protocol",
        env = "QUANTRAC_SIM_PROTOCOL",
        value_delimiter = ',',
        default_value = "mix"
    )]
    protocols: Vec<String>,
    /// Sample interval of simulated time (`300`, `300s`, `5m`).
    #[arg(long, env = "QUANTRAC_SIM_INTERVAL", default_value = "300s", value_parser = parse_duration)]
    interval: Duration,
    /// Share of stack stations (the rest are wastewater outfalls).
    #[arg(long, default_value_t = 0.3)]
    stack_share: f64,
    /// No exceedances, calibrations, device errors, silences or outages.
    #[arg(long, env = "QUANTRAC_SIM_NO_ANOMALIES")]
    no_anomalies: bool,
    /// Anomaly episodes this many times as often (the demo raises it to
    /// show exceedances within a few simulated hours).
    #[arg(long, env = "QUANTRAC_SIM_ANOMALY_SCALE", default_value_t = 1.0)]
    anomaly_scale: f64,

    /// Total samples per second over all stations; 0 sends as fast as
    /// acknowledgements allow. Without it, stations send on the simulated
    /// clock (see --speedup).
    #[arg(long, env = "QUANTRAC_SIM_RATE")]
    rate: Option<f64>,
    /// Real-time pacing only: simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Slots per station, then stop once everything is answered.
    #[arg(long, env = "QUANTRAC_SIM_SAMPLES")]
    samples: Option<u64>,
    /// Stop after this long (wall clock), e.g. `90s`, `10m`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Simulated time of the first slot (RFC 3339). Default: so that the
    /// readings end near now.
    #[arg(long)]
    start: Option<DateTime<Utc>>,

    #[arg(
        long,
        env = "QUANTRAC_MQTT_URL",
        default_value = "mqtt://127.0.0.1:11883"
    )]
    mqtt_url: String,
    #[arg(
        long,
        env = "QUANTRAC_MQTT_STATION_USER",
        default_value = "station-demo"
    )]
    mqtt_user: String,
    #[arg(
        long,
        env = "QUANTRAC_MQTT_STATION_PASSWORD",
        default_value = "demo-secret",
        hide_env_values = true
    )]
    mqtt_password: String,
    /// Client id prefix (default: unique per process).
    #[arg(long, env = "QUANTRAC_MQTT_CLIENT_ID")]
    mqtt_client_id: Option<String>,
    /// MQTT publishes awaiting PUBACK, per connection.
    #[arg(long, default_value_t = 100)]
    mqtt_inflight: u16,
    /// MQTT connections shared by the MQTT stations.
    #[arg(long, default_value_t = 1)]
    mqtt_connections: usize,

    /// Ingest's TCP listener.
    #[arg(
        long,
        env = "QUANTRAC_INGEST_TCP_ADDR",
        default_value = "127.0.0.1:9212"
    )]
    tcp_addr: String,
    /// HJ 212 password (PW) of every station.
    #[arg(
        long,
        env = "QUANTRAC_HJ212_PASSWORD",
        default_value = "demo-secret",
        hide_env_values = true
    )]
    hj212_password: String,
    /// Station secrets, a TOML table `"<station id>" = "<secret>"`: HJ 212
    /// sends a station's as PW, JSON lines and Circular 10 connections send
    /// an auth frame with it (ingest checks it against the registry's
    /// secret_hash).
    #[arg(long, env = "QUANTRAC_SIM_SECRETS")]
    secrets: Option<std::path::PathBuf>,
    /// TCP frames sent ahead of their replies, per connection.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Stations sharing one TCP connection.
    #[arg(long, default_value_t = 1)]
    stations_per_connection: usize,
    /// Oldest unanswered TCP frame older than this: reconnect and resend.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    reply_timeout: Duration,

    /// On stop, how long to wait for answers to samples already sent.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// Progress line every this long; 0 for none.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    progress: Duration,
    /// Print the fleet (id, kind, protocol, facility) and exit.
    #[arg(long)]
    list: bool,
}

/// `500ms`, `30`, `30s`, `5m`, `2h`, `1d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 2h"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (ms, s, m, h, d)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let interval_secs = u32::try_from(args.interval.as_secs()).context("--interval is too long")?;
    if args.interval.subsec_nanos() != 0 {
        bail!("--interval must be whole seconds");
    }
    let fleet = Fleet::new(&FleetConfig {
        seed: args.seed,
        stations: args.stations,
        interval_secs,
        protocols: ProtocolMix::parse(&args.protocols)?,
        stack_share: args.stack_share,
        anomalies: if args.no_anomalies {
            Anomalies::none()
        } else {
            Anomalies::default().scaled(args.anomaly_scale)?
        },
    })?;
    if args.list {
        for s in fleet.stations() {
            println!(
                "{}\t{:?}\t{}\t{}\t{}",
                s.id, s.kind, s.protocol, s.facility_code, s.facility_name
            );
        }
        return Ok(());
    }

    let pacing = match args.rate {
        None => Pacing::Realtime {
            speedup: args.speedup,
        },
        Some(0.0) => Pacing::Unlimited,
        Some(r) => Pacing::Rate { per_second: r },
    };
    // Slots the run will likely cover, so that a default start ends near now.
    let slots_hint = args.samples.or_else(|| {
        let d = args.duration?.as_secs_f64();
        match pacing {
            Pacing::Realtime { speedup } => Some((d * speedup / f64::from(interval_secs)) as u64),
            Pacing::Rate { per_second } => Some((d * per_second / args.stations as f64) as u64),
            Pacing::Unlimited => None,
        }
    });
    let start = args
        .start
        .unwrap_or_else(|| default_start(Utc::now(), interval_secs, slots_hint, pacing));
    let mut mqtt = MqttConfig {
        url: args.mqtt_url,
        user: args.mqtt_user,
        password: args.mqtt_password,
        inflight: args.mqtt_inflight,
        connections: args.mqtt_connections,
        ..MqttConfig::default()
    };
    if let Some(id) = args.mqtt_client_id {
        mqtt.client_id = id;
    }
    let config = RunConfig {
        start,
        slots: args.samples,
        pacing,
        mqtt,
        tcp: TcpConfig {
            addr: args.tcp_addr,
            hj212_password: args.hj212_password,
            secrets: std::sync::Arc::new(match &args.secrets {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    toml::from_str(&text).with_context(|| {
                        format!(
                            "{}: expected \"<station id>\" = \"<secret>\" lines",
                            path.display()
                        )
                    })?
                }
                None => std::collections::HashMap::new(),
            }),
            window: args.window,
            stations_per_connection: args.stations_per_connection,
            reply_timeout: args.reply_timeout,
            ..TcpConfig::default()
        },
        drain_timeout: args.drain,
    };
    let simulator = Simulator::new(Arc::new(fleet), config)?;
    let counters = simulator.counters();
    let started = Instant::now();

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signals(
        shutdown.clone(),
        Arc::clone(&counters),
        started,
    ));
    if let Some(d) = args.duration {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            info!("duration reached; stopping");
            shutdown.cancel();
        });
    }
    let done = CancellationToken::new();
    if !args.progress.is_zero() {
        tokio::spawn(progress(Arc::clone(&counters), args.progress, done.clone()));
    }

    let stats = simulator.run(shutdown).await;
    done.cancel();
    let stats = stats?;
    println!("{}", summary(&stats, started.elapsed()));
    Ok(())
}

/// First Ctrl-C or SIGTERM: stop and drain. Second: exit at once.
async fn stop_on_signals(shutdown: CancellationToken, counters: Arc<Counters>, started: Instant) {
    signal().await;
    info!("stopping: waiting for answers to samples already sent (signal again to exit now)");
    shutdown.cancel();
    signal().await;
    println!("{}", summary(&counters.snapshot(), started.elapsed()));
    std::process::exit(130);
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn progress(counters: Arc<Counters>, every: Duration, done: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut last = counters.snapshot();
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = counters.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(1e-3);
        info!(
            sent = now.sent,
            acked = now.acked,
            refused = now.refused,
            errors = now.errors,
            samples_per_s = format!("{:.0}", (now.acked - last.acked) as f64 / secs),
            readings_per_s = format!(
                "{:.0}",
                (now.readings_acked - last.readings_acked) as f64 / secs
            ),
            "progress"
        );
        last = now;
        last_at = Instant::now();
    }
}

fn summary(s: &Stats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "quantrac-sim: sent {} (resent {}), acked {}, refused {}, errors {}, unanswered at stop {}; \
         {} readings acked in {:.1} s ({:.0} samples/s, {:.0} readings/s)",
        s.sent,
        s.resent,
        s.acked,
        s.refused,
        s.errors,
        s.abandoned,
        s.readings_acked,
        secs,
        s.acked as f64 / secs,
        s.readings_acked as f64 / secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn arguments_parse() {
        let args = Args::try_parse_from([
            "quantrac-sim",
            "--stations",
            "3",
            "--protocol",
            "tcp-hj212=2",
            "--protocol",
            "mqtt-json",
            "--rate",
            "0",
            "--samples",
            "5",
            "--start",
            "2025-01-15T10:00:00+07:00",
        ]);
        let args = match args {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(args.protocols, ["tcp-hj212=2", "mqtt-json"]);
        assert_eq!(
            args.start.map(|t| t.to_rfc3339()),
            Some("2025-01-15T03:00:00+00:00".into())
        );
    }
}
