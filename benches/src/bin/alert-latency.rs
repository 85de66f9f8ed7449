//! `alert-latency`: from a reading sent by a station to the alert on the
//! monitoring center's gRPC stream, under a background load.
//!
//! Runs ingest (TCP), the processor and alerting in this process against
//! the real Kafka and PostgreSQL (fresh topics and database). Background
//! stations send JSON lines at `--rate` readings/s; a probe station sends,
//! every `--probe-every`, a COD value above its permit limit (alternating
//! with a normal one, so each exceedance is a new incident). The latency of
//! a probe is from writing its line to receiving the `limit_exceeded` alert
//! carrying its value on a gRPC subscription.
//!
//!     cargo run --release -p quantrac-benches --bin alert-latency -- --rate 1000 --rate 10000

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use quantrac_alerting::{Alerting, AlertingConfig};
use quantrac_ingest::{Ingest, IngestConfig};
use quantrac_processor::{Processor, ProcessorConfig};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::v1::SubscribeAlertsRequest;
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_proto::wire::json;
use quantrac_proto::{Sample, SampleValue};
use quantrac_testkit::registry::Outfalls;
use quantrac_testkit::{unique, unique_ident};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
struct Args {
    /// Background load in readings/s (repeat for several runs).
    #[arg(long = "rate", default_values_t = [1000u64, 10000])]
    rates: Vec<u64>,
    /// Probes per run.
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// Time between probes.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    probe_every: Duration,
    /// Background stations (4 readings per sample each).
    #[arg(long, default_value_t = 50)]
    stations: usize,
    /// TCP connections carrying the background load.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

/// `stations` + 1 outfalls (the last one carries the probes), each
/// parameter expected hourly.
fn registry(prefix: &str, stations: usize) -> Result<PathBuf> {
    Ok(Outfalls::numbered(prefix, stations + 1)
        .expected_interval("1h")
        .write()?)
}

fn sample(station: &str, at: chrono::DateTime<Utc>, cod: f64, jitter: f64) -> Sample {
    let v = |p: &str, value: f64, unit: &str| SampleValue {
        parameter: p.into(),
        value,
        unit: unit.into(),
        status: DeviceStatus::Measuring,
        device_flag: "00".into(),
        report: None,
        converted: None,
    };
    Sample {
        station_id: station.into(),
        measured_at: at,
        values: vec![
            v("pH", 7.2 + jitter * 0.1, "pH"),
            v("TSS", 30.0 + jitter, "mg/L"),
            v("COD", cod, "mg/L"),
            v("NH4", 2.0 + jitter * 0.1, "mg/L"),
        ],
    }
}

/// Sends background samples at `per_second` on one connection until
/// `stop`, reading the replies; returns samples acknowledged.
async fn background(
    addr: std::net::SocketAddr,
    stations: Vec<String>,
    per_second: f64,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
) -> Result<()> {
    let (rd, mut wr) = TcpStream::connect(addr).await?.into_split();
    let reader = tokio::spawn(async move {
        let mut rd = BufReader::new(rd);
        let mut line = String::new();
        while rd.read_line(&mut line).await.unwrap_or(0) > 0 {
            if line.contains("\"ok\":true") {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            line.clear();
        }
    });
    let start = Instant::now();
    let base = whole_second(Utc::now() - chrono::Duration::days(20));
    let mut k: u64 = 0;
    while !stop.is_cancelled() {
        let due = start + Duration::from_secs_f64(k as f64 / per_second);
        tokio::time::sleep_until(due.into()).await;
        let station = &stations[(k as usize) % stations.len()];
        let slot = k / stations.len() as u64;
        let at = base + chrono::Duration::seconds(i64::try_from(slot).unwrap_or(0) * 60);
        let jitter = ((k * 7919) % 100) as f64 / 100.0;
        let mut line = json::encode(&sample(station, at, 40.0 + jitter, jitter));
        line.push(b'\n');
        wr.write_all(&line).await?;
        k += 1;
    }
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    Ok(())
}

async fn run_once(args: &Args, rate: u64) -> Result<Vec<f64>> {
    let brokers = quantrac_testkit::env::kafka_brokers();
    let admin_url = quantrac_testkit::env::database_url();
    let db_name = unique_ident("bench_alert");
    let db_url = quantrac_testkit::db::create_database(&admin_url, &db_name)
        .await
        .context("PostgreSQL: CREATE DATABASE")?;
    let base = unique("bench-alert");
    let (raw, valid, rejected, alerts) = (
        format!("{base}.raw"),
        format!("{base}.valid"),
        format!("{base}.rejected"),
        format!("{base}.alerts"),
    );
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let ingest_rejected = format!("{base}.ingest-rejected");
    let topics: Vec<_> = [&raw, &valid, &rejected, &alerts, &ingest_rejected]
        .iter()
        .map(|t| NewTopic::new(t, 6, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("topic {t}: {e}"))?;
    }
    let prefix = unique("B");
    let registry = registry(&prefix, args.stations)?;
    let stop = CancellationToken::new();

    let mut p = ProcessorConfig {
        database_url: db_url.clone(),
        registry: registry.clone(),
        ..Default::default()
    };
    p.http.listen = "127.0.0.1:0".parse()?;
    p.kafka.brokers = brokers.clone();
    p.kafka.group_id = unique("g");
    p.kafka.raw_topic = raw.clone();
    p.kafka.valid_topic = valid.clone();
    p.kafka.rejected_topic = rejected.clone();
    p.batch.max_wait = Duration::from_millis(20);
    let processor =
        Processor::start(p, quantrac_processor::Edge::Kafka, None, stop.clone()).await?;

    let mut a = AlertingConfig {
        database_url: db_url.clone(),
        registry: registry.clone(),
        rules: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules.toml"),
        grpc_listen: "127.0.0.1:0".parse()?,
        http_listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    a.kafka.brokers = brokers.clone();
    a.kafka.group_id = unique("g");
    a.kafka.valid_topic = valid.clone();
    a.kafka.alerts_topic = alerts.clone();
    let alerting = Alerting::start(a, quantrac_alerting::Edge::Kafka, None, stop.clone()).await?;

    let mut i = IngestConfig {
        node_id: unique("n"),
        ..Default::default()
    };
    i.mqtt.enabled = false;
    // The pipeline is measured, not the per-station cap.
    i.tcp.max_readings_per_second_per_station = 0;
    i.tcp.listen = "127.0.0.1:0".parse()?;
    i.http.listen = "127.0.0.1:0".parse()?;
    i.kafka.brokers = brokers.clone();
    i.kafka.readings_topic = raw.clone();
    i.kafka.rejected_topic = ingest_rejected.clone();
    i.kafka.linger = Duration::from_millis(1);
    let ingest = Ingest::start(i, quantrac_ingest::Edge::Kafka, None, stop.clone()).await?;
    let addr = ingest.tcp_addr.context("tcp")?;

    let token = {
        let db = quantrac_db::connect(&db_url, &quantrac_db::ConnectOptions::default()).await?;
        let until = chrono::Utc::now() + chrono::Duration::hours(1);
        quantrac_db::access::issue(
            &db,
            "alert-latency",
            quantrac_db::access::Role::Analyst,
            until,
        )
        .await?
        .secret
    };
    let mut grpc = AlertServiceClient::with_interceptor(
        quantrac_testkit::grpc::channel(alerting.grpc_addr).await,
        quantrac_testkit::grpc::Bearer::new(&token),
    );
    let mut stream = grpc
        .subscribe(SubscribeAlertsRequest::default())
        .await?
        .into_inner();

    // Background load: 4 readings per sample.
    let load_stop = CancellationToken::new();
    let acked = Arc::new(AtomicU64::new(0));
    let per_conn = rate as f64 / 4.0 / args.connections as f64;
    let mut load = Vec::new();
    for c in 0..args.connections {
        let stations: Vec<String> = (0..args.stations)
            .filter(|s| s % args.connections == c)
            .map(|s| format!("{prefix}-{s}"))
            .collect();
        load.push(tokio::spawn(background(
            addr,
            stations,
            per_conn,
            load_stop.clone(),
            Arc::clone(&acked),
        )));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let the load settle

    // Probes on their own connection.
    let probe = format!("{prefix}-{}", args.stations);
    let (prd, mut pwr) = TcpStream::connect(addr).await?.into_split();
    tokio::spawn(async move {
        let mut rd = BufReader::new(prd);
        let mut line = String::new();
        while rd.read_line(&mut line).await.unwrap_or(0) > 0 {
            line.clear();
        }
    });
    let started_load = Instant::now();
    let acked_before = acked.load(Ordering::Relaxed);
    let mut latencies = Vec::new();
    let t0 = whole_second(Utc::now() - chrono::Duration::days(10));
    for k in 0..args.probes {
        // Normal value first (resolves the previous incident), then the probe.
        let at = t0 + chrono::Duration::minutes(10 * k as i64);
        let mut normal = json::encode(&sample(&probe, at, 40.0, 0.0));
        normal.push(b'\n');
        pwr.write_all(&normal).await?;
        tokio::time::sleep(args.probe_every / 2).await;
        let value = 200.0 + k as f64;
        let mut line = json::encode(&sample(
            &probe,
            at + chrono::Duration::minutes(5),
            value,
            0.0,
        ));
        line.push(b'\n');
        let sent = Instant::now();
        pwr.write_all(&line).await?;
        let deadline = sent + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.message()).await {
                Err(_) => {
                    eprintln!("probe {k}: no alert within 10 s");
                    break;
                }
                Ok(m) => {
                    let alert = m?.context("stream ended")?;
                    if alert.rule == "limit_exceeded"
                        && alert.station_id == probe
                        && alert.observed_value == value
                    {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(args.probe_every / 2).await;
    }
    let measured = (acked.load(Ordering::Relaxed) - acked_before) as f64 * 4.0
        / started_load.elapsed().as_secs_f64();
    load_stop.cancel();
    for l in load {
        let _ = l.await;
    }
    println!("  background load achieved: {measured:.0} readings/s (target {rate})");
    stop.cancel();
    let _ = ingest.wait().await;
    let _ = processor.wait().await;
    let _ = alerting.wait().await;
    if let Ok((client, conn)) = tokio_postgres::connect(&admin_url, NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await;
    }
    if latencies.is_empty() {
        bail!("no probe produced an alert");
    }
    Ok(latencies)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let args = Args::parse();
    println!(
        "alert-latency: reading sent on TCP -> ingest -> Kafka -> processor -> Kafka -> alerting -> gRPC stream"
    );
    println!(
        "all in one process on this machine with Kafka and PostgreSQL; {} probes per run",
        args.probes
    );
    let mut rows = Vec::new();
    for &rate in &args.rates {
        println!("run at {rate} readings/s background load");
        let mut l = run_once(&args, rate).await?;
        l.sort_by(f64::total_cmp);
        rows.push((
            rate,
            l.len(),
            quantile(&l, 0.5),
            quantile(&l, 0.99),
            l[l.len() - 1],
        ));
    }
    println!("\n| background readings/s | probes alerted | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|");
    for (rate, n, p50, p99, max) in rows {
        println!("| {rate} | {n} | {p50:.1} | {p99:.1} | {max:.1} |");
    }
    Ok(())
}

/// `t` without its fraction of a second, as loggers stamp measurements.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}
