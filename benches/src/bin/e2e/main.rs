//! `e2e`: the whole pipeline at once on this machine. Simulated stations
//! publish over MQTT and TCP to `quantrac-ingest`, `quantrac-processor` and
//! `quantrac-alerting` (release binaries, each its own process, with Kafka,
//! Mosquitto and PostgreSQL from `deploy/services.sh`), on a fresh
//! database and fresh topics, with a registry generated for the fleet so
//! every reading is stored and judged.
//!
//! The offered rate steps up (`--rate`, repeatable); each step runs
//! `--step` after a short settling time. Per step:
//! - readings acknowledged to stations and stored (the processor's
//!   `processor_stored_total`), and whether the backlog (acknowledged minus
//!   stored) grew: a step is *sustained* when it did not grow by more than
//!   2 % of what was offered;
//! - latency of probe readings from the station's write to the committed
//!   row being announced on `readings.valid` (published after the commit),
//!   and to the `limit_exceeded` alert on alerting's gRPC stream;
//! - CPU seconds and peak memory of every process, Kafka, Mosquitto and
//!   PostgreSQL included, and the CPU cost of one reading per process.
//!
//! Then, with the pipeline stopped, the same machine's limits: `psql
//! \copy` of the stored rows into a copy of the table, Kafka's
//! `ProducerPerformance` on a topic like `readings.raw`, and Mosquitto's
//! QoS 1 loopback publish rate. Finally every acknowledged reading is
//! looked for in the database: lost and duplicated are counted.
//!
//! The report goes to `benches/results/e2e-<time>.{md,json,svg}`.
//!
//!     scripts/bench.sh e2e
//!     target/release/e2e --rate 1000 --rate 5000 --rate 20000 --step 30s

#[path = "../common/mod.rs"]
mod common;
mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use common::procs::{Proc, http_get, judged_count, prom_counter, stored_count};
use common::{Service, TopicSpec};
use prost::Message;
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_proto::v1::{ReadingBatch, StoredReadingBatch, SubscribeAlertsRequest};
use quantrac_proto::wire::json;
use quantrac_testkit::registry::Outfalls;
use quantrac_testkit::samples::outfall as sample;
use quantrac_testkit::{unique, unique_ident};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message as _};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    about = "The whole pipeline on this machine: rate, latency, CPU and memory, against the machine's limits"
)]
struct Args {
    /// Offered readings/s per step, in order (repeat).
    #[arg(long = "rate", default_values_t = [1000u64, 5000, 10000, 20000, 40000, 50000, 60000, 80000])]
    rates: Vec<u64>,
    /// Measured time per step (after `--settle`).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    step: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Simulated stations (4 readings per sample each).
    #[arg(long, default_value_t = 200)]
    stations: usize,
    /// Share of the stations publishing over MQTT; the rest use TCP.
    #[arg(long, default_value_t = 0.5)]
    mqtt_share: f64,
    /// TCP connections and MQTT clients carrying the load.
    #[arg(long, default_value_t = 4)]
    links: usize,
    /// Time between two probes (each a normal value, then one over the
    /// limit); they do not wait for each other.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    probe_every: Duration,
    /// Stations the probes rotate over.
    #[arg(long, default_value_t = 10)]
    probe_stations: usize,
    /// Stop stepping up after the first step that is not sustained.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    stop_when_behind: bool,
    /// Where the report goes.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Run the processor as before `batch.write_when_idle` (each batch waits
    /// up to `batch.max_wait` to fill), for a before/after comparison.
    #[arg(long)]
    processor_waits: bool,
    /// Kafka producer linger of ingest (`readings.raw`) and the processor
    /// (`readings.valid`), in ms (default: the services' own defaults).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Partitions of each of the run's topics. One instance of each
    /// service reads them all, as a one-host deployment would; each more
    /// partition costs the broker and the consumers (at 5,400 readings/s,
    /// 6 instead of 2 nearly doubled Kafka's CPU and the p99 to the alert).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=64))]
    partitions: i32,
    /// Rows for the psql \copy limit.
    #[arg(long, default_value_t = 300_000)]
    copy_rows: i64,
}

/// Offered samples/s for one link, read at each tick so steps change it.
#[derive(Clone)]
struct Pace {
    samples_per_second: Arc<AtomicU64>,
}

/// Sends samples for `stations` over one TCP connection at the pace,
/// counting acknowledged readings; each sample gets its own time slot.
async fn tcp_link(
    addr: std::net::SocketAddr,
    stations: Vec<String>,
    pace: Pace,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
) -> Result<()> {
    let (rd, mut wr) = TcpStream::connect(addr).await?.into_split();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"ok\":true") {
                acked.fetch_add(4, Ordering::Relaxed);
            }
        }
    });
    let base = whole_second(Utc::now() - chrono::Duration::days(300));
    let mut k: u64 = 0;
    let mut credit = 0.0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut buf = Vec::with_capacity(64 * 1024);
    while !stop.is_cancelled() {
        tick.tick().await;
        credit += pace.samples_per_second.load(Ordering::Relaxed) as f64 / 100.0;
        buf.clear();
        while credit >= 1.0 {
            let station = &stations[(k as usize) % stations.len()];
            let slot = i64::try_from(k / stations.len() as u64).unwrap_or(0);
            let mut line = json::encode(&sample(
                station,
                base + chrono::Duration::seconds(slot * 10),
                40.0,
            ));
            line.push(b'\n');
            buf.extend_from_slice(&line);
            k += 1;
            credit -= 1.0;
        }
        if !buf.is_empty() {
            wr.write_all(&buf).await?;
        }
    }
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    Ok(())
}

/// The same over one MQTT client (QoS 1), counting PUBACKed readings.
async fn mqtt_link(
    url: &str,
    user: &str,
    password: &str,
    stations: Vec<String>,
    pace: Pace,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
) -> Result<()> {
    let b = quantrac_ingest::mqtt::broker_address(url).map_err(|e| anyhow::anyhow!(e))?;
    let mut o = rumqttc::MqttOptions::new(unique("e2e-st"), b.host, b.port);
    o.set_credentials(user, password).set_inflight(1000);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10_000);
    let poll_stop = stop.clone();
    let poller = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = poll_stop.cancelled() => break,
                e = el.poll() => match e {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => { acked.fetch_add(4, Ordering::Relaxed); }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    });
    let base = whole_second(Utc::now() - chrono::Duration::days(300));
    let mut k: u64 = 0;
    let mut credit = 0.0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.is_cancelled() {
        tick.tick().await;
        credit += pace.samples_per_second.load(Ordering::Relaxed) as f64 / 100.0;
        while credit >= 1.0 {
            let station = &stations[(k as usize) % stations.len()];
            let slot = i64::try_from(k / stations.len() as u64).unwrap_or(0);
            let payload = json::encode(&sample(
                station,
                base + chrono::Duration::seconds(slot * 10),
                40.0,
            ));
            client
                .publish(
                    format!("stations/{station}/readings"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await?;
            k += 1;
            credit -= 1.0;
        }
    }
    // Let the last PUBACKs arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    poller.abort();
    Ok(())
}

/// One probe's two latencies, in ms (committed, alert), and when it was sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Probe {
    at_s: f64,
    committed_ms: Option<f64>,
    alert_ms: Option<f64>,
}

/// The stages of a probe's way, in order: each is timed from the end of
/// the one before, on the wall clock (Kafka's record timestamps are the
/// producers' wall-clock times at `send`, in ms).
const STAGES: [&str; 5] = [
    "ingest: write → raw record produced",
    "Kafka: raw produced → consumed",
    "processor: consumed → stored and produced on readings.valid",
    "Kafka: valid produced → consumed",
    "alerting: valid consumed → alert on the gRPC stream",
];

/// When a probe reached each stage's end, ms since the Unix epoch:
/// raw produced, raw consumed, valid produced, valid consumed, alert seen.
type Marks = [Option<f64>; 5];

fn wall_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Records a stage's end for a probe (the first time only).
fn mark(marks: &std::sync::Mutex<HashMap<i64, Marks>>, key: i64, stage: usize, at: f64) {
    let mut m = marks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    m.entry(key).or_default()[stage].get_or_insert(at);
}

/// Databases earlier test runs left keep an idle PostgreSQL busy (0.32
/// cores with 602 of them, autovacuum visiting each), which this run
/// would count as the pipeline's; `deploy/services.sh prune` removes them
/// (and the topics and MQTT sessions tests leave; `scripts/bench.sh` runs it).
async fn warn_about_leftovers(admin_url: &str) {
    let Ok((client, conn)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(conn);
    let left = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname ~ '^(qt|qt_bench|bench_e2e|bench_alert|faults)_[0-9a-f]{10}$'",
            &[],
        )
        .await
        .map(|row| row.get::<_, i64>(0));
    if let Ok(n) = left
        && n > 20
    {
        println!(
            "e2e: WARNING: {n} databases left by earlier test runs keep PostgreSQL busy; run `deploy/services.sh prune` first (no tests running)"
        );
    }
}

/// The COD values among `readings` (probes carry COD), whatever the
/// message type: `field` gives a reading's parameter and value.
fn probe_values<R>(readings: &[R], field: fn(&R) -> (&str, f64)) -> Vec<f64> {
    readings
        .iter()
        .map(field)
        .filter(|(parameter, _)| *parameter == "COD")
        .map(|(_, value)| value)
        .collect()
}

/// Follows `topic` from now on: for every probe value (COD of 200 or more)
/// in the records of probe stations, marks stage `stage` with the record's
/// Kafka timestamp (when it was produced) and `stage + 1` with when it was
/// read, and notes in `seen` when it was first read.
fn watch_probes(
    brokers: &str,
    topic: &str,
    probes: Arc<std::collections::HashSet<String>>,
    marks: Arc<std::sync::Mutex<HashMap<i64, Marks>>>,
    stage: usize,
    values: fn(&[u8]) -> Vec<f64>,
    seen: Option<Arc<std::sync::Mutex<HashMap<i64, Instant>>>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("e2e-watch"))
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(tokio::spawn(async move {
        while let Ok(m) = consumer.recv().await {
            let (read_at, read_instant) = (wall_ms(), Instant::now());
            if !m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .is_some_and(|k| probes.contains(k))
            {
                continue;
            }
            let produced = m.timestamp().to_millis().map(|t| t as f64);
            for v in values(m.payload().unwrap_or_default()) {
                if v < 200.0 {
                    continue;
                }
                let key = (v * 1000.0).round() as i64;
                if let Some(t) = produced {
                    mark(&marks, key, stage, t);
                }
                mark(&marks, key, stage + 1, read_at);
                if let Some(seen) = &seen {
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(key)
                        .or_insert(read_instant);
                }
            }
        }
    }))
}

/// Per stage, p50 / p99 / max of its duration over the probes that
/// reached both its start and its end.
fn stage_times(sent: &[(i64, f64)], marks: &HashMap<i64, Marks>) -> Vec<[Option<f64>; 3]> {
    (0..STAGES.len())
        .map(|i| {
            let d: Vec<f64> = sent
                .iter()
                .filter_map(|(k, sent)| {
                    let m = marks.get(k)?;
                    let start = if i == 0 { Some(*sent) } else { m[i - 1] };
                    Some((m[i]? - start?).max(0.0))
                })
                .collect();
            [pct(&d, 0.5), pct(&d, 0.99), pct(&d, 1.0)]
        })
        .collect()
}

#[derive(Debug, Clone, serde::Serialize)]
struct Step {
    /// Background plus probes, readings/s.
    offered: f64,
    acked_per_s: f64,
    stored_per_s: f64,
    /// Readings alerting evaluated.
    judged_per_s: f64,
    /// Growth of (acknowledged - stored) and of (stored - judged).
    backlog_growth_per_s: f64,
    judge_backlog_growth_per_s: f64,
    sustained: bool,
    probes: usize,
    committed_p50: Option<f64>,
    committed_p99: Option<f64>,
    committed_max: Option<f64>,
    alert_p50: Option<f64>,
    alert_p99: Option<f64>,
    alert_max: Option<f64>,
    /// Per stage of `STAGES`, p50 / p99 / max ms.
    stages: Vec<[Option<f64>; 3]>,
    /// CPU cores used over the step, by process.
    cores: HashMap<String, f64>,
    /// Busy cores not explained by the processes in `cores`.
    other_cores: Option<f64>,
    /// Share of the step's time some runnable task waited for a CPU (PSI).
    cpu_wait_share: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Point {
    t: f64,
    offered: f64,
    acked: f64,
    stored: f64,
}

fn pct(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.1}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let args = Args::parse();
    let started = Instant::now();
    let brokers = quantrac_testkit::env::kafka_brokers();
    let admin_url = quantrac_testkit::env::database_url();
    let mqtt = common::pipeline::MqttAccounts::from_env();
    let mqtt_url = mqtt.url.clone();
    let (station_user, station_password) = mqtt.station.clone();
    let machine = common::machine_line();
    println!("e2e: {machine}");
    warn_about_leftovers(&admin_url).await;

    // Fresh database, topics and registry.
    let db_name = unique_ident("bench_e2e");
    let db_url = quantrac_testkit::db::create_database(&admin_url, &db_name)
        .await
        .context("CREATE DATABASE")?;
    let base = unique("e2e");
    let topics = common::pipeline::Topics::create(&brokers, &base, args.partitions).await?;
    let valid = topics.valid.clone();
    let prefix = unique("E");
    let registry = Outfalls::numbered(&prefix, args.stations + args.probe_stations.max(1))
        .expected_interval("1h")
        .write()?;
    let work = std::env::temp_dir().join(&base);
    std::fs::create_dir_all(&work)?;

    // Configurations, written as the services read them.
    let mut configs =
        common::pipeline::Configs::new("e2e", &db_url, &registry, &topics, &brokers, &mqtt)?;
    configs.processor.batch.write_when_idle = !args.processor_waits;
    if let Some(ms) = args.linger_ms {
        configs.ingest.kafka.linger = Duration::from_millis(ms);
        configs.processor.kafka.linger = Duration::from_millis(ms);
    }
    let (tcp_addr, grpc_addr) = (configs.tcp, configs.grpc);
    let (processor_http, alerting_http) =
        (configs.processor.http.listen, configs.alerting.http_listen);
    let common::pipeline::Services {
        ingest,
        processor,
        alerting,
    } = common::pipeline::start(&work, &configs).await?;
    let procs = [&ingest, &processor, &alerting];
    println!(
        "services up ({} s); logs and configs in {}",
        started.elapsed().as_secs(),
        work.display()
    );

    // Alerts stream and the committed-row feed (readings.valid).
    let token = {
        let db = quantrac_db::connect(&db_url, &quantrac_db::ConnectOptions::default()).await?;
        quantrac_db::access::issue(
            &db,
            "e2e",
            quantrac_db::access::Role::Analyst,
            Utc::now() + chrono::Duration::hours(6),
        )
        .await?
        .secret
    };
    let mut grpc = AlertServiceClient::with_interceptor(
        quantrac_testkit::grpc::channel(grpc_addr).await,
        quantrac_testkit::grpc::Bearer::new(&token),
    );
    let mut alert_stream = grpc
        .subscribe(SubscribeAlertsRequest::default())
        .await?
        .into_inner();
    let probe_stations: Vec<String> = (0..args.probe_stations.max(1))
        .map(|i| format!("{prefix}-{}", args.stations + i))
        .collect();
    let is_probe: Arc<std::collections::HashSet<String>> =
        Arc::new(probe_stations.iter().cloned().collect());
    // Probe value (x1000) -> when its committed row, and its alert, came.
    let committed_seen: Arc<std::sync::Mutex<HashMap<i64, Instant>>> = Arc::default();
    let alert_seen: Arc<std::sync::Mutex<HashMap<i64, Instant>>> = Arc::default();
    let marks: Arc<std::sync::Mutex<HashMap<i64, Marks>>> = Arc::default();
    {
        let (seen, probes, marks) = (
            Arc::clone(&alert_seen),
            Arc::clone(&is_probe),
            Arc::clone(&marks),
        );
        tokio::spawn(async move {
            while let Ok(Some(alert)) = alert_stream.message().await {
                if alert.rule == "limit_exceeded" && probes.contains(&alert.station_id) {
                    let key = (alert.observed_value * 1000.0).round() as i64;
                    mark(&marks, key, 4, wall_ms());
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(key)
                        .or_insert_with(Instant::now);
                }
            }
        });
    }
    // The probes' raw records (for the stage times only), and their
    // committed rows as announced on readings.valid.
    let raw_watcher = watch_probes(
        &brokers,
        &topics.raw,
        Arc::clone(&is_probe),
        Arc::clone(&marks),
        0,
        |p| {
            ReadingBatch::decode(p).map_or_else(
                |_| Vec::new(),
                |b| probe_values(&b.readings, |r| (&r.parameter, r.value)),
            )
        },
        None,
    )?;
    let valid_watcher = watch_probes(
        &brokers,
        &valid,
        Arc::clone(&is_probe),
        Arc::clone(&marks),
        2,
        |p| {
            StoredReadingBatch::decode(p).map_or_else(
                |_| Vec::new(),
                |b| probe_values(&b.readings, |r| (&r.parameter, r.value)),
            )
        },
        Some(Arc::clone(&committed_seen)),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Load links.
    let stop_load = CancellationToken::new();
    let acked = Arc::new(AtomicU64::new(0));
    let n_mqtt = ((args.stations as f64 * args.mqtt_share).round() as usize).min(args.stations);
    let stations: Vec<String> = (0..args.stations)
        .map(|s| format!("{prefix}-{s}"))
        .collect();
    let (mqtt_st, tcp_st) = stations.split_at(n_mqtt);
    let mut paces = Vec::new();
    let mut links = Vec::new();
    for (kind, group) in [("mqtt", mqtt_st), ("tcp", tcp_st)] {
        if group.is_empty() {
            continue;
        }
        for l in 0..args.links {
            let mine: Vec<String> = group
                .iter()
                .enumerate()
                .filter(|(j, _)| j % args.links == l)
                .map(|(_, s)| s.clone())
                .collect();
            if mine.is_empty() {
                continue;
            }
            let pace = Pace {
                samples_per_second: Arc::new(AtomicU64::new(0)),
            };
            paces.push((kind, mine.len(), pace.clone()));
            let (stop, acked) = (stop_load.clone(), Arc::clone(&acked));
            if kind == "mqtt" {
                let (url, u, pw) = (
                    mqtt_url.clone(),
                    station_user.clone(),
                    station_password.clone(),
                );
                links.push(tokio::spawn(async move {
                    mqtt_link(&url, &u, &pw, mine, pace, stop, acked).await
                }));
            } else {
                links.push(tokio::spawn(async move {
                    tcp_link(tcp_addr, mine, pace, stop, acked).await
                }));
            }
        }
    }
    let set_rate = |readings_per_s: u64| {
        let samples = readings_per_s as f64 / 4.0;
        for (_, n, pace) in &paces {
            let share = *n as f64 / args.stations as f64;
            pace.samples_per_second
                .store((samples * share).round() as u64, Ordering::Relaxed);
        }
    };

    // Sampler: one point a second.
    let timeline: Arc<std::sync::Mutex<Vec<Point>>> = Arc::default();
    let offered_now = Arc::new(AtomicU64::new(0));
    let peak_services: Arc<std::sync::Mutex<HashMap<Service, f64>>> = Arc::default();
    {
        let (timeline, offered_now, acked, peak) = (
            Arc::clone(&timeline),
            Arc::clone(&offered_now),
            Arc::clone(&acked),
            Arc::clone(&peak_services),
        );
        let stop = stop_load.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let (mut last_a, mut last_s, mut last_t) = (0u64, 0u64, Instant::now());
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let stored = stored_count(processor_http).await;
                let a = acked.load(Ordering::Relaxed);
                let dt = last_t.elapsed().as_secs_f64();
                timeline
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(Point {
                        t: t0.elapsed().as_secs_f64(),
                        offered: offered_now.load(Ordering::Relaxed) as f64,
                        acked: (a - last_a) as f64 / dt,
                        stored: stored.saturating_sub(last_s) as f64 / dt,
                    });
                (last_a, last_s, last_t) = (a, stored, Instant::now());
                let mut peak = peak
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (s, v) in common::service_rss_mib() {
                    let e = peak.entry(s).or_insert(0.0);
                    *e = e.max(v);
                }
            }
        });
    }

    // Probes: their own TCP connection and station.
    // Their readings count as offered and acknowledged like the rest.
    let (prd, mut pwr) = TcpStream::connect(tcp_addr).await?.into_split();
    let probe_acked = Arc::clone(&acked);
    tokio::spawn(async move {
        let mut lines = BufReader::new(prd).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"ok\":true") {
                probe_acked.fetch_add(4, Ordering::Relaxed);
            }
        }
    });
    let probe_t0 = whole_second(Utc::now() - chrono::Duration::days(200));
    let mut probe_k: i64 = 0;
    let run_t0 = Instant::now();
    let mut all_probes: Vec<Probe> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();

    let cpu_of = |procs: &[&Proc]| -> HashMap<String, f64> {
        let mut m: HashMap<String, f64> = procs
            .iter()
            .map(|p| (p.name.to_owned(), common::pid_cpu_seconds(p.pid())))
            .collect();
        for (s, v) in common::service_cpu_seconds() {
            m.insert(format!("{s:?}").to_lowercase(), v);
        }
        // The simulated stations and probes share the machine too.
        m.insert(
            "load generator (e2e)".into(),
            common::pid_cpu_seconds(std::process::id()),
        );
        m
    };
    let cpu_start = cpu_of(&procs);
    let probe_rate = 8.0 / args.probe_every.as_secs_f64();
    for &rate in &args.rates {
        offered_now.store(rate, Ordering::Relaxed);
        set_rate(rate);
        tokio::time::sleep(args.settle).await;
        let (a0, s0, c0, w0) = (
            acked.load(Ordering::Relaxed),
            stored_count(processor_http).await,
            cpu_of(&procs),
            Instant::now(),
        );
        let (busy0, wait0) = (
            common::machine_busy_seconds(),
            common::cpu_pressure_seconds(),
        );
        let j0 = judged_count(alerting_http).await;
        // Probes on schedule, each a normal value (closing its station's
        // previous incident) then one over the limit, in one write.
        let mut sent_probes: Vec<(i64, Instant, f64)> = Vec::new();
        let mut sent_wall: Vec<(i64, f64)> = Vec::new();
        let mut next = tokio::time::Instant::now();
        while w0.elapsed() < args.step {
            tokio::time::sleep_until(next).await;
            next += args.probe_every;
            let station = &probe_stations[(probe_k as usize) % probe_stations.len()];
            let n = probe_k / probe_stations.len() as i64;
            let at = probe_t0 + chrono::Duration::minutes(10 * n);
            let value = 200.0 + probe_k as f64 * 0.001;
            let key = (value * 1000.0).round() as i64;
            probe_k += 1;
            let mut frame = json::encode(&sample(station, at, 40.0));
            frame.push(b'\n');
            frame.extend_from_slice(&json::encode(&sample(
                station,
                at + chrono::Duration::minutes(5),
                value,
            )));
            frame.push(b'\n');
            let sent = Instant::now();
            sent_wall.push((key, wall_ms()));
            pwr.write_all(&frame).await?;
            sent_probes.push((key, sent, run_t0.elapsed().as_secs_f64()));
        }
        let secs = w0.elapsed().as_secs_f64();
        let (a1, s1, c1) = (
            acked.load(Ordering::Relaxed),
            stored_count(processor_http).await,
            cpu_of(&procs),
        );
        let (busy1, wait1) = (
            common::machine_busy_seconds(),
            common::cpu_pressure_seconds(),
        );
        let j1 = judged_count(alerting_http).await;
        let judged_per_s = j1.saturating_sub(j0) as f64 / secs;
        let judge_backlog_growth = ((s1 as f64 - j1 as f64) - (s0 as f64 - j0 as f64)) / secs;
        let acked_per_s = (a1 - a0) as f64 / secs;
        let stored_per_s = s1.saturating_sub(s0) as f64 / secs;
        let backlog_growth = ((a1 as f64 - s1 as f64) - (a0 as f64 - s0 as f64)) / secs;
        let offered = rate as f64 + probe_rate;
        // Stored *and judged*: neither backlog may grow.
        let sustained = acked_per_s >= offered * 0.95
            && backlog_growth <= offered * 0.02
            && judge_backlog_growth <= offered * 0.02;
        // Late probes get up to 10 s (after the step's figures are taken).
        let grace = Instant::now() + Duration::from_secs(10);
        loop {
            let all = {
                let seen = alert_seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                sent_probes.iter().all(|(k, ..)| seen.contains_key(k))
            };
            if all || Instant::now() > grace {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let probes: Vec<Probe> = {
            let committed = committed_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let alerted = alert_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let since = |m: &HashMap<i64, Instant>, k: &i64, sent: &Instant| {
                m.get(k)
                    .map(|t| t.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
            };
            sent_probes
                .iter()
                .map(|(k, sent, at_s)| Probe {
                    at_s: *at_s,
                    committed_ms: since(&committed, k, sent),
                    alert_ms: since(&alerted, k, sent),
                })
                .collect()
        };
        let stages = stage_times(
            &sent_wall,
            &marks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let committed: Vec<f64> = probes.iter().filter_map(|p| p.committed_ms).collect();
        let alerted: Vec<f64> = probes.iter().filter_map(|p| p.alert_ms).collect();
        let cores: HashMap<String, f64> = c1
            .iter()
            .map(|(k, v)| (k.clone(), (v - c0.get(k).copied().unwrap_or(0.0)) / secs))
            .collect();
        let machine_cores = busy0.zip(busy1).map(|(a, b)| (b - a) / secs);
        let other_cores = machine_cores.map(|m| (m - cores.values().sum::<f64>()).max(0.0));
        let cpu_wait_share = wait0.zip(wait1).map(|(a, b)| (b - a) / secs);
        let step = Step {
            offered: rate as f64 + probe_rate,
            acked_per_s,
            stored_per_s,
            judged_per_s,
            backlog_growth_per_s: backlog_growth,
            judge_backlog_growth_per_s: judge_backlog_growth,
            sustained,
            probes: probes.len(),
            committed_p50: pct(&committed, 0.5),
            committed_p99: pct(&committed, 0.99),
            committed_max: pct(&committed, 1.0),
            alert_p50: pct(&alerted, 0.5),
            alert_p99: pct(&alerted, 0.99),
            alert_max: pct(&alerted, 1.0),
            stages,
            cores,
            other_cores,
            cpu_wait_share,
        };
        println!(
            "step {rate}/s: acked {:.0}/s stored {:.0}/s judged {:.0}/s backlog {:+.0}/s judge backlog {:+.0}/s {} | probes {} committed p50/p99 {}/{} ms, alert p50/p99/max {}/{}/{} ms ({} alerted)",
            step.acked_per_s,
            step.stored_per_s,
            step.judged_per_s,
            step.backlog_growth_per_s,
            step.judge_backlog_growth_per_s,
            if sustained { "sustained" } else { "BEHIND" },
            step.probes,
            ms(step.committed_p50),
            ms(step.committed_p99),
            ms(step.alert_p50),
            ms(step.alert_p99),
            ms(step.alert_max),
            alerted.len()
        );
        for (name, [p50, p99, max]) in STAGES.iter().zip(&step.stages) {
            println!(
                "    {name}: p50/p99/max {}/{}/{} ms",
                ms(*p50),
                ms(*p99),
                ms(*max)
            );
        }
        if let Some(w) = step.cpu_wait_share {
            println!(
                "    a runnable task waited for a CPU {:.0} % of the step; other processes used {} cores",
                w * 100.0,
                step.other_cores
                    .map_or("?".to_owned(), |o| format!("{o:.2}"))
            );
        }
        all_probes.extend(probes);
        steps.push(step);
        if !sustained && args.stop_when_behind {
            break;
        }
    }
    let run_secs = run_t0.elapsed().as_secs_f64();
    set_rate(0);
    stop_load.cancel();
    for l in links {
        if let Ok(Err(e)) = l.await {
            eprintln!("a load link failed: {e:#}");
        }
    }
    // Drain: everything acknowledged must be stored.
    let acked_total = acked.load(Ordering::Relaxed);
    let drain_t0 = Instant::now();
    let db = quantrac_db::connect(&db_url, &quantrac_db::ConnectOptions::default()).await?;
    let probe_readings = 8 * probe_k; // two samples of 4 readings per probe
    let mut stored_rows: i64 = 0;
    while drain_t0.elapsed() < Duration::from_secs(120) {
        stored_rows = db
            .query_one("SELECT count(*) FROM readings", &[])
            .await?
            .get(0);
        if stored_rows >= i64::try_from(acked_total).unwrap_or(i64::MAX) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu_end = cpu_of(&procs);
    let peak_rss: HashMap<String, f64> = procs
        .iter()
        .map(|p| (p.name.to_owned(), common::pid_peak_rss_mib(p.pid())))
        .chain(std::iter::once((
            "load generator (e2e)".to_owned(),
            common::pid_peak_rss_mib(std::process::id()),
        )))
        .chain(
            peak_services
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(s, v)| (format!("{s:?}").to_lowercase(), *v)),
        )
        .collect();
    let background_rows = stored_rows;
    let acked_i = i64::try_from(acked_total).unwrap_or(i64::MAX);
    // Rows have a primary key (station, parameter, time), so a duplicate
    // can only be a redelivery the processor skipped: counted there.
    let lost = (acked_i - background_rows).max(0);
    let unacked_stored = (background_rows - acked_i).max(0);
    let duplicates = http_get(processor_http, "/metrics")
        .await
        .map_or(0.0, |(_, b)| prom_counter(&b, "processor_duplicates_total"))
        as u64;
    println!(
        "acknowledged {acked_total} readings; {background_rows} stored ({lost} missing, {unacked_stored} stored but not acknowledged, {duplicates} redeliveries skipped) after {:.1} s of drain",
        drain_t0.elapsed().as_secs_f64()
    );
    for p in [ingest, alerting, processor] {
        p.stop().await;
    }
    configs.forget_ingest_session(&mqtt_url).await;

    // The machine's limits, with the pipeline stopped.
    let copy = psql_copy(&db_url, args.copy_rows).await;
    let kafka = kafka_perf(&brokers, &base, args.partitions).await;
    let mosq = mosquitto_rate(&mqtt_url, &station_user, &station_password).await;
    let record_bytes: f64 = json::encode(&sample("E-0-0000", Utc::now(), 40.0)).len() as f64;

    // Report.
    report::write(&report::Run {
        out: &args.out,
        machine: &machine,
        stations: args.stations,
        mqtt_stations: n_mqtt,
        partitions: args.partitions,
        steps: &steps,
        probes: &all_probes,
        timeline: &timeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        cpu_start: &cpu_start,
        cpu_end: &cpu_end,
        peak_rss: &peak_rss,
        run_secs,
        acked: acked_total,
        probe_readings,
        stored: background_rows,
        lost,
        stored_unacknowledged: unacked_stored,
        redeliveries_skipped: duplicates,
        limits: report::Limits {
            psql_copy: copy,
            kafka,
            mosquitto: mosq,
            record_bytes,
        },
    })?;
    let _ = db.batch_execute("SELECT 1").await;
    drop(db);
    if let Ok(admin) =
        quantrac_db::connect(&admin_url, &quantrac_db::ConnectOptions::default()).await
    {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await;
    }
    // The watchers' consumers must be gone before their topics are
    // deleted, or librdkafka logs every partition as an error.
    for w in [raw_watcher, valid_watcher] {
        w.abort();
        let _ = w.await;
    }
    common::delete_topics(&brokers, &topics.names()).await;
    Ok(())
}

/// Rows/s of `psql \copy` loading `rows` stored readings into a copy of the
/// table (same indexes), timed around psql.
async fn psql_copy(db_url: &str, rows: i64) -> Option<f64> {
    let file = std::env::temp_dir().join(format!("{}.copy", unique("e2e")));
    let export = format!(
        "\\copy (SELECT * FROM readings LIMIT {rows}) TO '{}'",
        file.display()
    );
    let ok = tokio::process::Command::new("psql")
        .arg(db_url)
        .args(["-qc", &export])
        .status()
        .await
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let n = std::fs::read_to_string(&file).ok()?.lines().count() as f64;
    let setup = "DROP TABLE IF EXISTS readings_copy_limit; CREATE TABLE readings_copy_limit (LIKE readings INCLUDING ALL)";
    tokio::process::Command::new("psql")
        .arg(db_url)
        .args(["-qc", setup])
        .status()
        .await
        .ok()?;
    let t0 = Instant::now();
    let ok = tokio::process::Command::new("psql")
        .arg(db_url)
        .args([
            "-qc",
            &format!("\\copy readings_copy_limit FROM '{}'", file.display()),
        ])
        .status()
        .await
        .ok()?
        .success();
    let secs = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    ok.then_some(n / secs)
}

/// Kafka's own producer benchmark on a topic like `readings.raw` (as many
/// partitions).
async fn kafka_perf(brokers: &str, base: &str, partitions: i32) -> Option<f64> {
    let state = std::env::var("QUANTRAC_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/services"));
    let libs = state.join("kafka/libs");
    let topic = format!("{base}.perf");
    common::create_topics(
        brokers,
        &[TopicSpec {
            name: &topic,
            partitions,
            configs: &[],
        }],
    )
    .await
    .ok()?;
    let size = json::encode(&sample("E-0-0000", Utc::now(), 40.0)).len();
    let out = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .args([
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            &topic,
            "--num-records",
            "1000000",
            "--record-size",
            &size.to_string(),
            "--throughput",
            "-1",
            "--producer-props",
        ])
        .arg(format!("bootstrap.servers={brokers}"))
        .args(["acks=all", "linger.ms=5", "enable.idempotence=true"])
        .output()
        .await
        .ok()?;
    common::delete_topics(brokers, &[&topic]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    // Last line: "1000000 records sent, 123456.7 records/sec (...)".
    let line = text.lines().rev().find(|l| l.contains("records sent"))?;
    line.split(',')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// QoS 1 messages/s one client gets PUBACKed by Mosquitto on loopback.
async fn mosquitto_rate(url: &str, user: &str, password: &str) -> Option<f64> {
    let b = quantrac_ingest::mqtt::broker_address(url).ok()?;
    let mut o = rumqttc::MqttOptions::new(unique("e2e-loop"), b.host, b.port);
    o.set_credentials(user, password).set_inflight(1000);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10_000);
    let payload = json::encode(&sample("E-0-0000", Utc::now(), 40.0));
    let n = 200_000u64;
    let topic = format!("stations/{}/readings", unique("loop"));
    let publisher = tokio::spawn(async move {
        for _ in 0..n {
            if client
                .publish(&topic, rumqttc::QoS::AtLeastOnce, false, payload.clone())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let t0 = Instant::now();
    let mut acked = 0u64;
    while acked < n && t0.elapsed() < Duration::from_secs(60) {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    publisher.abort();
    Some(acked as f64 / t0.elapsed().as_secs_f64())
}

/// `t` without its fraction of a second: loggers stamp measurements in
/// whole seconds (HJ 212 and Circular 10 carry nothing finer), and
/// alerting keeps such times in less memory than finer ones.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}
