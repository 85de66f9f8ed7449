//! `ingest-rate`: readings per second from simulated stations into Kafka,
//! per protocol, on the real Mosquitto and Kafka.
//!
//! For each protocol: fresh topics (the readings topic with
//! `message.timestamp.type = LogAppendTime`, so every record carries the
//! moment the broker appended it), an in-process ingest with its own node
//! id, and the simulator library sending `--stations` x `--samples` samples
//! as fast as the acknowledgements allow, anomalies off. The clock runs
//! from the first sample the simulator writes to the broker append time of
//! the last of them; afterwards the topic is read back and every expected
//! sample must be there.
//!
//! Sender, ingest, Kafka and Mosquitto all share one machine: the figures
//! are end to end on it, and the CPU columns say who used the cores.

mod common;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{TimeDelta, Utc};
use clap::Parser;
use prost::Message as _;
use quantrac_ingest::{Ingest, IngestConfig};
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::{ReadingBatch, RejectedInput};
use quantrac_simulators::{
    Anomalies, Fleet, FleetConfig, MqttConfig, Pacing, Protocol, ProtocolMix, RunConfig, Simulator,
    TcpConfig, default_start,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use common::{CpuUse, Service, Table, TopicSpec, quantile, thousands};

/// Thread-name prefixes of the two runtimes, for the CPU split.
const SIM_THREADS: &str = "sim-rt";
const INGEST_THREADS: &str = "ingest-rt";
const INTERVAL_SECS: u32 = 300;
const HJ212_PASSWORD: &str = "bench-pw";

#[derive(Debug, Parser)]
#[command(
    name = "ingest-rate",
    about = "Readings/s from simulated stations through ingest into Kafka, per protocol"
)]
struct Args {
    /// Protocols, one run each: mqtt-json, mqtt-c10, tcp-hj212, tcp-c10,
    /// tcp-json (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', default_value = "mqtt-json,mqtt-c10,tcp-hj212,tcp-c10,tcp-json", value_parser = parse_protocol)]
    protocol: Vec<Protocol>,
    /// Simulated stations.
    #[arg(long, default_value_t = 50)]
    stations: usize,
    /// Samples per station (slots of 5 simulated minutes).
    #[arg(long, default_value_t = 2000)]
    samples: u64,
    /// Fleet seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of stack stations (8 parameters) vs wastewater (6).
    #[arg(long, default_value_t = 0.3)]
    stack_share: f64,
    /// MQTT publishes not yet acknowledged, per simulator connection.
    #[arg(long, default_value_t = 100)]
    mqtt_inflight: u16,
    /// MQTT connections shared by the simulated stations.
    #[arg(long, default_value_t = 1)]
    mqtt_connections: usize,
    /// TCP frames sent ahead of their replies, per station connection.
    #[arg(long, default_value_t = 32)]
    tcp_window: usize,
    /// Worker threads of the simulator's runtime.
    #[arg(long, default_value_t = 2)]
    sim_threads: usize,
    /// Worker threads of ingest's runtime.
    #[arg(long, default_value_t = 2)]
    ingest_threads: usize,
    /// Ingest's Kafka linger (default: ingest's own default).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Ingest's max_in_flight (default: ingest's own default).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Ingest's mqtt.max_pending (default: ingest's own default). (Before
    /// ingest's MQTT receiver was split into stages, an unpaced run stalled
    /// with these defaults; see benches/README.md.)
    #[arg(long)]
    mqtt_max_pending: Option<usize>,
    /// Partitions of the fresh readings topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Give up a run after this long.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Rounds over all protocols (interleaved); with more than one, a
    /// table of medians follows.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// A run is "quiet" when the machine's busy time not explained by this
    /// process, Kafka and Mosquitto stays at or below this many cores.
    #[arg(long, default_value_t = 0.2)]
    max_other: f64,
    /// Pause between runs, so one run's tail does not load the next.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Keep the topics (default: deleted after each run).
    #[arg(long)]
    keep_topics: bool,
    #[arg(
        long,
        env = "QUANTRAC_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    #[arg(
        long,
        env = "QUANTRAC_MQTT_URL",
        default_value = "mqtt://127.0.0.1:11883"
    )]
    mqtt_url: String,
    /// Ingest's MQTT account.
    #[arg(long, env = "QUANTRAC_MQTT_USER", default_value = "ingest")]
    mqtt_user: String,
    #[arg(
        long,
        env = "QUANTRAC_MQTT_PASSWORD",
        default_value = "ingest-secret",
        hide_env_values = true
    )]
    mqtt_password: String,
    /// The simulated stations' MQTT account.
    #[arg(
        long,
        env = "QUANTRAC_MQTT_STATION_USER",
        default_value = "station-demo"
    )]
    station_user: String,
    #[arg(
        long,
        env = "QUANTRAC_MQTT_STATION_PASSWORD",
        default_value = "demo-secret",
        hide_env_values = true
    )]
    station_password: String,
}

/// (max_in_flight, mqtt.max_pending) of ingest for a run.
fn ingest_bounds(args: &Args, _protocol: Protocol) -> (usize, usize) {
    let defaults = IngestConfig::default();
    (
        args.max_in_flight.unwrap_or(defaults.max_in_flight),
        args.mqtt_max_pending.unwrap_or(defaults.mqtt.max_pending),
    )
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::from_str(s).map_err(|e| e.to_string())
}

/// What one protocol's run measured.
#[derive(Debug)]
struct RunResult {
    protocol: Protocol,
    /// The protocol, with the round when repeated.
    label: String,
    samples: u64,
    readings: u64,
    /// First sample written by the simulator -> broker append time of the
    /// last expected record.
    seconds: f64,
    /// Same start -> ingest's `acknowledged` counter reaching the total.
    ack_seconds: f64,
    /// Ingest receive -> broker append, per record, ms.
    latency_p50: Option<i64>,
    latency_p99: Option<i64>,
    cpu: CpuUse,
    sim_refused: u64,
    sim_errors: u64,
    sim_resent: u64,
    ingest_rejected: u64,
    ours_rejected: u64,
    duplicates: u64,
    foreign: u64,
    log_append_time: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    ensure!(args.stations > 0, "--stations must be at least 1");
    ensure!(args.samples > 0, "--samples must be at least 1");
    ensure!(args.repeat > 0, "--repeat must be at least 1");
    ensure!(
        args.sim_threads > 0 && args.ingest_threads > 0,
        "--sim-threads and --ingest-threads must be at least 1"
    );
    ensure!(args.partitions > 0, "--partitions must be at least 1");
    let ingest_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.ingest_threads)
        .thread_name(INGEST_THREADS)
        .enable_all()
        .build()
        .context("ingest runtime")?;
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.sim_threads)
        .thread_name(SIM_THREADS)
        .enable_all()
        .build()
        .context("simulator runtime")?;
    let result = ingest_rt.block_on(run(&args, sim_rt.handle()));
    sim_rt.shutdown_timeout(Duration::from_secs(5));
    ingest_rt.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn run(args: &Args, sim_rt: &tokio::runtime::Handle) -> Result<()> {
    let defaults = IngestConfig::default();
    println!("ingest-rate: simulated stations -> ingest -> Kafka, one run per protocol");
    println!(
        "  date (UTC)        {}",
        Utc::now().format("%Y-%m-%d %H:%M:%S")
    );
    println!("  machine           {}", common::machine_line());
    println!(
        "  fleet             {} stations x {} samples, seed {}, stack share {}, anomalies off, interval {} s",
        args.stations, args.samples, args.seed, args.stack_share, INTERVAL_SECS
    );
    println!(
        "  simulator         in this process, own runtime ({} worker threads), pacing unlimited; \
         MQTT: {} connection(s), {} in flight each; TCP: one connection per station, window {}",
        args.sim_threads, args.mqtt_connections, args.mqtt_inflight, args.tcp_window
    );
    let (tcp_in_flight, _) = ingest_bounds(args, Protocol::TcpJson);
    let (mqtt_in_flight, mqtt_pending) = ingest_bounds(args, Protocol::MqttJson);
    println!(
        "  ingest            in this process, own runtime ({} worker threads); linger {} ms; \
         TCP runs: max_in_flight {}; MQTT runs: max_in_flight {}, mqtt.max_pending {} \
         (ingest defaults {} and {})",
        args.ingest_threads,
        args.linger_ms
            .unwrap_or(u64::try_from(defaults.kafka.linger.as_millis()).unwrap_or(u64::MAX)),
        tcp_in_flight,
        mqtt_in_flight,
        mqtt_pending,
        defaults.max_in_flight,
        defaults.mqtt.max_pending
    );
    println!(
        "  Kafka             {} (fresh topic per run, {} partitions, RF 1, LogAppendTime)",
        args.brokers, args.partitions
    );
    println!("  MQTT broker       {} (shared)", args.mqtt_url);
    println!(
        "  busy before start {:.2} cores of the machine (1 s sample, before any run)",
        common::busy_now(Duration::from_secs(1)).await
    );
    println!(
        "  rounds            {} over the protocols, interleaved; {} s pause between runs",
        args.repeat, args.settle_secs
    );
    println!(
        "  clock             first sample written by the simulator -> broker append time of the last record"
    );
    println!();

    let mut results = Vec::new();
    let mut failures = Vec::new();
    let runs = args.protocol.len() * args.repeat;
    for round in 1..=args.repeat {
        for protocol in &args.protocol {
            if !(round == 1 && Some(protocol) == args.protocol.first()) {
                tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
            }
            let label = if args.repeat > 1 {
                format!("{protocol} #{round}")
            } else {
                protocol.to_string()
            };
            eprintln!("== {label}: running ...");
            match measure(args, *protocol, sim_rt).await {
                Ok(mut r) => {
                    eprintln!("== {label}: {} samples in {:.2} s", r.samples, r.seconds);
                    r.label = label;
                    results.push(r);
                }
                Err(e) => {
                    eprintln!("== {label}: FAILED: {e:#}");
                    failures.push((label, e));
                }
            }
        }
    }

    println!();
    let mut table = Table::new(&[
        "protocol",
        "samples",
        "readings",
        "seconds",
        "samples/s",
        "readings/s",
        "p50 ms",
        "p99 ms",
        "quiet",
    ]);
    for r in &results {
        table.row(vec![
            r.label.clone(),
            thousands(r.samples as f64),
            thousands(r.readings as f64),
            format!("{:.2}", r.seconds),
            thousands(r.samples as f64 / r.seconds),
            thousands(r.readings as f64 / r.seconds),
            r.latency_p50.map_or("-".into(), |v| v.to_string()),
            r.latency_p99.map_or("-".into(), |v| v.to_string()),
            if r.quiet(args) {
                "yes".into()
            } else {
                format!(
                    "no ({:.2})",
                    r.cpu.other(&[Service::Kafka, Service::Mosquitto])
                )
            },
        ]);
    }
    table.print();
    if args.repeat > 1 {
        println!();
        println!(
            "Per protocol over the rounds (readings/s), over the quiet runs when there are any:"
        );
        let mut m = Table::new(&[
            "protocol",
            "runs",
            "quiet runs",
            "median",
            "min",
            "max",
            "median samples/s",
        ]);
        for protocol in &args.protocol {
            let all: Vec<&RunResult> = results.iter().filter(|r| r.protocol == *protocol).collect();
            let quiet: Vec<&RunResult> = all.iter().copied().filter(|r| r.quiet(args)).collect();
            let used = if quiet.is_empty() { &all } else { &quiet };
            let mut rates: Vec<f64> = used.iter().map(|r| r.readings as f64 / r.seconds).collect();
            let (Some(first), false) = (all.first(), rates.is_empty()) else {
                continue;
            };
            rates.sort_by(f64::total_cmp);
            let per_sample = first.readings as f64 / first.samples as f64;
            let median = common::median(&rates);
            m.row(vec![
                protocol.to_string(),
                all.len().to_string(),
                quiet.len().to_string(),
                thousands(median),
                thousands(rates[0]),
                thousands(rates[rates.len() - 1]),
                thousands(median / per_sample),
            ]);
        }
        m.print();
    }
    println!();
    println!(
        "p50/p99: per record, ingest receive time (received_at) -> Kafka append time (LogAppendTime). \
         quiet: the machine's busy time outside this process, Kafka and Mosquitto stayed <= {:.2} \
         cores (else: how much it was).",
        args.max_other
    );
    println!();
    println!("CPU during the run, in cores (machine: 2 cores = 2.00):");
    let mut cpu = Table::new(&[
        "protocol",
        "simulator",
        "ingest",
        "Kafka",
        "Mosquitto",
        "other",
        "machine busy",
        "simulator share",
        "readings per ingest core-second",
    ]);
    for r in &results {
        let sim = r.cpu.thread(SIM_THREADS);
        cpu.row(vec![
            r.label.clone(),
            format!("{sim:.2}"),
            format!("{:.2}", (r.cpu.process - sim).max(0.0)),
            format!("{:.2}", r.cpu.service(Service::Kafka)),
            format!("{:.2}", r.cpu.service(Service::Mosquitto)),
            format!("{:.2}", r.cpu.other(&[Service::Kafka, Service::Mosquitto])),
            format!("{:.2} / {:.0}", r.cpu.machine, r.cpu.cores),
            format!(
                "{:.0} %",
                100.0 * sim / r.cpu.machine.max(f64::MIN_POSITIVE)
            ),
            thousands(r.readings as f64 / r.seconds / (r.cpu.process - sim).max(0.01)),
        ]);
    }
    cpu.print();
    println!();
    println!(
        "simulator = this process's `{SIM_THREADS}` threads; ingest = the rest of this process \
         (its runtime, librdkafka threads, the benchmark's polling); other = the machine's busy \
         time not explained by these (PostgreSQL, other users' work, the kernel); simulator \
         share = simulator / machine busy; readings per ingest core-second = readings/s / ingest \
         cores (what ingest's own CPU time bought; /proc times have 10 ms resolution)."
    );
    println!();
    println!("Checks:");
    let mut checks = Table::new(&[
        "protocol",
        "refused (sim)",
        "rejected (ingest)",
        "of which ours",
        "sim errors",
        "resent",
        "duplicate records",
        "foreign records",
        "ack-counter seconds",
    ]);
    for r in &results {
        checks.row(vec![
            r.label.clone(),
            r.sim_refused.to_string(),
            r.ingest_rejected.to_string(),
            r.ours_rejected.to_string(),
            r.sim_errors.to_string(),
            r.sim_resent.to_string(),
            r.duplicates.to_string(),
            r.foreign.to_string(),
            format!("{:.2}", r.ack_seconds),
        ]);
    }
    checks.print();
    println!();
    println!(
        "foreign records: other publishers on the shared broker during an MQTT run (not counted); \
         ack-counter seconds: same start, until ingest's acknowledged counter reached the total."
    );
    for r in &results {
        if !r.log_append_time {
            println!(
                "warning: {}: the topic did not use LogAppendTime; the end time is the producer's timestamp",
                r.protocol
            );
        }
        if r.sim_refused > 0 || r.ours_rejected > 0 {
            println!(
                "warning: {}: samples were refused; the figure counts only the stored ones",
                r.protocol
            );
        }
    }
    if !failures.is_empty() {
        for (p, e) in &failures {
            println!("FAILED {p}: {e:#}");
        }
        bail!("{} of {runs} runs failed", failures.len());
    }
    Ok(())
}

impl RunResult {
    /// Whether the rest of the machine stayed out of the way: busy time not
    /// explained by this process, Kafka and Mosquitto below `--max-other`.
    fn quiet(&self, args: &Args) -> bool {
        self.cpu.other(&[Service::Kafka, Service::Mosquitto]) <= args.max_other
    }
}

/// One protocol: topics, ingest, simulator, measurement, read-back, cleanup.
async fn measure(
    args: &Args,
    protocol: Protocol,
    sim_rt: &tokio::runtime::Handle,
) -> Result<RunResult> {
    let name = quantrac_testkit::unique(&format!("bench-ingest-{protocol}"));
    let raw = format!("{name}.raw");
    let rejected = format!("{name}.rejected");
    common::create_topics(
        &args.brokers,
        &[
            TopicSpec {
                name: &raw,
                partitions: args.partitions,
                configs: &[("message.timestamp.type", "LogAppendTime")],
            },
            TopicSpec {
                name: &rejected,
                partitions: args.partitions,
                configs: &[],
            },
        ],
    )
    .await?;

    let shutdown = CancellationToken::new();
    let node = name.clone();
    let mut config = IngestConfig {
        node_id: node.clone(),
        ..Default::default()
    };
    config.kafka.brokers = args.brokers.clone();
    config.kafka.readings_topic = raw.clone();
    config.kafka.rejected_topic = rejected.clone();
    if let Some(ms) = args.linger_ms {
        config.kafka.linger = Duration::from_millis(ms);
    }
    (config.max_in_flight, config.mqtt.max_pending) = ingest_bounds(args, protocol);
    config.http.listen = "127.0.0.1:0".parse()?;
    config.tcp.listen = "127.0.0.1:0".parse()?;
    // The receivers are measured, not the per-station cap.
    config.tcp.max_readings_per_second_per_station = 0;
    config.mqtt.enabled = protocol.is_mqtt();
    config.mqtt.url = args.mqtt_url.clone();
    config.mqtt.username = args.mqtt_user.clone();
    config.mqtt.password = args.mqtt_password.clone();
    config.hj212.default_password = Some(HJ212_PASSWORD.into());
    let ingest =
        match Ingest::start(config, quantrac_ingest::Edge::Kafka, None, shutdown.clone()).await {
            Ok(i) => i,
            Err(e) => {
                if !args.keep_topics {
                    common::delete_topics(&args.brokers, &[&raw, &rejected]).await;
                }
                return Err(anyhow!(e).context("starting ingest"));
            }
        };

    let outcome = drive(args, protocol, &ingest, &raw, &rejected, sim_rt).await;

    shutdown.cancel();
    let status = ingest.status.clone();
    if let Err(e) = ingest.wait().await {
        eprintln!("warning: ingest stopped with an error: {e}");
    }
    if protocol.is_mqtt()
        && let Err(e) = clear_mqtt_session(args, &format!("quantrac-{node}")).await
    {
        eprintln!("warning: could not remove ingest's persistent MQTT session: {e:#}");
    }
    if !args.keep_topics {
        common::delete_topics(&args.brokers, &[&raw, &rejected]).await;
    }
    let mut result = outcome?;
    result.ingest_rejected = status.snapshot().rejected;
    Ok(result)
}

/// Runs the simulator against the started ingest and measures.
async fn drive(
    args: &Args,
    protocol: Protocol,
    ingest: &Ingest,
    raw: &str,
    rejected_topic: &str,
    sim_rt: &tokio::runtime::Handle,
) -> Result<RunResult> {
    let timeout = Duration::from_secs(args.timeout_secs);
    // Let ingest's producer connect to the broker before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if protocol.is_mqtt() {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ingest.status.snapshot().mqtt_connected {
            ensure!(
                Instant::now() < deadline,
                "ingest did not connect to the MQTT broker within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The subscription goes out right after CONNACK; give it its SUBACK.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let tcp_addr = ingest
        .tcp_addr
        .ok_or_else(|| anyhow!("ingest has no TCP listener"))?;

    let fleet = Fleet::new(&FleetConfig {
        seed: args.seed,
        stations: args.stations,
        interval_secs: INTERVAL_SECS,
        protocols: ProtocolMix::only(protocol),
        stack_share: args.stack_share,
        anomalies: Anomalies::none(),
    })?;
    // A random window of the past: the station ids are the fleet's usual
    // ones, so (station, measured_at) tells this run's samples apart from
    // anything another simulator publishes on the shared broker meanwhile.
    let days_back = 30 + i64::try_from(common::random_u64() % 3000).unwrap_or(0);
    let start = default_start(
        Utc::now(),
        INTERVAL_SECS,
        Some(args.samples),
        Pacing::Unlimited,
    ) - TimeDelta::days(days_back);
    let sim = Simulator::new(
        Arc::new(fleet),
        RunConfig {
            start,
            slots: Some(args.samples),
            pacing: Pacing::Unlimited,
            mqtt: MqttConfig {
                url: args.mqtt_url.clone(),
                user: args.station_user.clone(),
                password: args.station_password.clone(),
                inflight: args.mqtt_inflight,
                connections: args.mqtt_connections,
                ..MqttConfig::default()
            },
            tcp: TcpConfig {
                addr: tcp_addr.to_string(),
                hj212_password: HJ212_PASSWORD.into(),
                window: args.tcp_window,
                ..TcpConfig::default()
            },
            drain_timeout: Duration::from_secs(5),
        },
    )?;
    let plan = sim
        .plan()
        .ok_or_else(|| anyhow!("the simulator has no plan for a bounded run"))?;
    let expected: HashSet<(String, i64)> = plan
        .iter()
        .map(|t| {
            (
                t.sample.station_id.clone(),
                t.sample.measured_at.timestamp(),
            )
        })
        .collect();
    ensure!(
        expected.len() == plan.len(),
        "the plan sends some sample twice"
    );
    let samples = plan.len() as u64;
    let readings: u64 = plan.iter().map(|t| t.sample.values.len() as u64).sum();
    let station_ids: HashSet<String> = sim
        .fleet()
        .stations()
        .iter()
        .map(|s| s.id.clone())
        .collect();
    drop(plan);

    let counters = sim.counters();
    let sim_stop = CancellationToken::new();
    let groups = [SIM_THREADS, INGEST_THREADS];
    let cpu_before = common::cpu_sample(&groups);
    let launched = Instant::now();
    let handle = sim_rt.spawn(sim.run(sim_stop.clone()));

    // Moment of the first write: poll the simulator's counter closely.
    let (first_sent, first_sent_wall) = loop {
        if counters.snapshot().sent > 0 {
            break (Instant::now(), SystemTime::now());
        }
        if handle.is_finished() {
            bail!("the simulator stopped before sending anything");
        }
        if launched.elapsed() > Duration::from_secs(30) {
            sim_stop.cancel();
            bail!("the simulator sent nothing within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // Ingest's acknowledged counter: frames whose records Kafka has.
    let acked_at = loop {
        let s = ingest.status.snapshot();
        if s.acknowledged >= samples {
            break Instant::now();
        }
        if first_sent.elapsed() > timeout {
            sim_stop.cancel();
            bail!(
                "timeout after {} s: simulator {:?}, ingest {:?}",
                timeout.as_secs(),
                counters.snapshot(),
                s
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu_after = common::cpu_sample(&groups);
    let stats = match tokio::time::timeout(Duration::from_secs(60), handle).await {
        Ok(joined) => joined.context("simulator task")??,
        Err(_) => {
            sim_stop.cancel();
            bail!(
                "the simulator did not finish within 60 s of ingest acknowledging everything: {:?}",
                counters.snapshot()
            );
        }
    };

    let scan = scan_readings(&args.brokers, raw, args.partitions, &expected, timeout).await?;
    ensure!(
        scan.readings == readings,
        "readings in Kafka {} != readings sent {}",
        scan.readings,
        readings
    );
    let ours_rejected = if ingest.status.snapshot().rejected > 0 {
        scan_rejected(&args.brokers, rejected_topic, args.partitions, &station_ids).await?
    } else {
        0
    };
    let first_ms = common::epoch_ms(first_sent_wall);
    let seconds = (scan.last_append_ms - first_ms) as f64 / 1000.0;
    ensure!(
        seconds > 0.0,
        "the last record's timestamp is not after the first send"
    );
    let mut latencies = scan.latencies_ms;
    latencies.sort_unstable();
    Ok(RunResult {
        protocol,
        label: protocol.to_string(),
        samples,
        readings,
        seconds,
        ack_seconds: acked_at.duration_since(first_sent).as_secs_f64(),
        latency_p50: quantile(&latencies, 0.50),
        latency_p99: quantile(&latencies, 0.99),
        cpu: CpuUse::between(&cpu_before, &cpu_after),
        sim_refused: stats.refused,
        sim_errors: stats.errors,
        sim_resent: stats.resent,
        ingest_rejected: 0,
        ours_rejected,
        duplicates: scan.duplicates,
        foreign: scan.foreign,
        log_append_time: scan.log_append_time,
    })
}

/// What the readings topic holds.
#[derive(Debug, Default)]
struct Scan {
    readings: u64,
    duplicates: u64,
    foreign: u64,
    last_append_ms: i64,
    latencies_ms: Vec<i64>,
    log_append_time: bool,
}

fn reader(brokers: &str, topic: &str, partitions: i32) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", quantrac_testkit::unique("bench-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("Kafka consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// End offset of each partition, now.
fn high_watermarks(c: &StreamConsumer, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| high)
                .with_context(|| format!("watermarks of {topic}/{p}"))
        })
        .collect()
}

/// Reads the readings topic from the start until every expected sample is
/// found (and everything written up to then is read).
async fn scan_readings(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: &HashSet<(String, i64)>,
    within: Duration,
) -> Result<Scan> {
    let consumer = reader(brokers, topic, partitions)?;
    let deadline = Instant::now() + within;
    let mut next = vec![0i64; usize::try_from(partitions)?];
    let mut seen: HashSet<(String, i64)> = HashSet::with_capacity(expected.len());
    let mut scan = Scan {
        log_append_time: true,
        ..Scan::default()
    };
    loop {
        let high = high_watermarks(&consumer, topic, partitions)?;
        while next.iter().zip(&high).any(|(n, h)| n < h) {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match tokio::time::timeout(left, consumer.recv()).await {
                Err(_) => bail!(
                    "timeout reading {topic}: {} of {} samples found",
                    seen.len(),
                    expected.len()
                ),
                Ok(m) => m.context("reading the readings topic")?,
            };
            if let Some(n) = usize::try_from(m.partition())
                .ok()
                .and_then(|p| next.get_mut(p))
            {
                *n = (*n).max(m.offset() + 1);
            }
            let append_ms = match m.timestamp() {
                Timestamp::LogAppendTime(ms) => ms,
                Timestamp::CreateTime(ms) => {
                    scan.log_append_time = false;
                    ms
                }
                Timestamp::NotAvailable => bail!("a record without a timestamp"),
            };
            let batch = ReadingBatch::decode(m.payload().unwrap_or_default())
                .context("a record that is not a ReadingBatch")?;
            let first = batch.readings.first();
            let measured = first
                .and_then(|r| r.measured_at.as_ref())
                .and_then(from_timestamp)
                .map(|t| t.timestamp());
            let key = (batch.station_id.clone(), measured.unwrap_or(i64::MIN));
            if !expected.contains(&key) {
                scan.foreign += 1;
                continue;
            }
            if !seen.insert(key) {
                scan.duplicates += 1;
                continue;
            }
            scan.readings += batch.readings.len() as u64;
            scan.last_append_ms = scan.last_append_ms.max(append_ms);
            if let Some(received) = first
                .and_then(|r| r.received_at.as_ref())
                .and_then(from_timestamp)
            {
                scan.latencies_ms
                    .push(append_ms - received.timestamp_millis());
            }
        }
        if seen.len() == expected.len() {
            return Ok(scan);
        }
        ensure!(
            Instant::now() < deadline,
            "only {} of {} samples reached {topic}",
            seen.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rejections on the rejected topic that name one of our stations.
async fn scan_rejected(
    brokers: &str,
    topic: &str,
    partitions: i32,
    stations: &HashSet<String>,
) -> Result<u64> {
    let consumer = reader(brokers, topic, partitions)?;
    let high = high_watermarks(&consumer, topic, partitions)?;
    let mut next = vec![0i64; usize::try_from(partitions)?];
    let mut ours = 0;
    while next.iter().zip(&high).any(|(n, h)| n < h) {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| anyhow!("timeout reading {topic}"))??;
        if let Some(n) = usize::try_from(m.partition())
            .ok()
            .and_then(|p| next.get_mut(p))
        {
            *n = (*n).max(m.offset() + 1);
        }
        let r = RejectedInput::decode(m.payload().unwrap_or_default())
            .context("a record that is not a RejectedInput")?;
        if stations.contains(&r.station_id) {
            eprintln!(
                "rejected: station {} reason {} ({})",
                r.station_id, r.reason, r.detail
            );
            ours += 1;
        }
    }
    Ok(ours)
}

/// Removes ingest's persistent session (clean_session = false, fixed client
/// id) from the shared broker, so it does not keep queueing every station's
/// messages after the run.
async fn clear_mqtt_session(args: &Args, client_id: &str) -> Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};
    let broker = quantrac_ingest::mqtt::broker_address(&args.mqtt_url).map_err(|e| anyhow!(e))?;
    let mut options = MqttOptions::new(client_id, broker.host, broker.port);
    options
        .set_credentials(args.mqtt_user.clone(), args.mqtt_password.clone())
        .set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let work = async {
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => break,
                _ => continue,
            }
        }
        client.disconnect().await?;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow!("broker did not answer within 10 s"))?
}
