//! `store-rate`: stored rows per second from `readings.raw` to the
//! database, for the processor's two write methods, side by side with
//! `psql \copy` loading the same rows into the same table.
//!
//! One run: a fresh topic with N readings (`ReadingBatch` records of 4
//! readings, as ingest writes them) for the stations of a generated
//! registry; then for each write method a fresh database and consumer
//! group, an in-process `Processor`, and the time from `Processor::start`
//! until N rows are stored (the processor's `stored` counter, polled every
//! 5 ms, then `SELECT count(*)` confirms); then the rows the processor
//! stored are exported as CSV and loaded into a third fresh database (same
//! migrations, same registry) with `psql \copy`, timed around the psql
//! process.
//!
//! The processor's figure includes Kafka consumption, protobuf decode,
//! validation, unit normalisation, the idempotent write and the publish to
//! `readings.valid`; psql's is a plain COPY into the same table (primary
//! key and time index included).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use prost::Message as _;
use quantrac_processor::config::WriteMethod;
use quantrac_processor::{Processor, ProcessorConfig};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::{Sample, SampleValue};
use quantrac_testkit::registry::Outfalls;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use common::{CpuUse, Service, Table, TopicSpec, thousands};

/// The columns the processor writes (all but `stored_at`, a default).
const COLUMNS: &str = "station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source, received_at, ingest_id";
const READINGS_PER_SAMPLE: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    Copy,
    Unnest,
}

impl Method {
    fn write_method(self) -> WriteMethod {
        match self {
            Method::Copy => WriteMethod::Copy,
            Method::Unnest => WriteMethod::Unnest,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Method::Copy => "copy",
            Method::Unnest => "unnest",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "store-rate",
    about = "Stored rows/s from the readings topic to PostgreSQL: processor (copy, unnest) vs psql \\copy"
)]
struct Args {
    /// Readings to produce and store (rounded up to whole samples of 4
    /// readings over whole stations).
    #[arg(long, default_value_t = 200_000)]
    readings: u64,
    /// Stations in the generated registry.
    #[arg(long, default_value_t = 100)]
    stations: u64,
    /// Processor write methods to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "copy,unnest")]
    methods: Vec<Method>,
    /// Processor batch.max_readings (default: the processor's default).
    #[arg(long)]
    batch_max_readings: Option<usize>,
    /// Processor batch.max_wait in ms (default: the processor's default).
    #[arg(long)]
    batch_max_wait_ms: Option<u64>,
    /// Processor batch.in_flight (default: the processor's default).
    #[arg(long)]
    batch_in_flight: Option<usize>,
    /// Rounds of all loads (interleaved); with more than one, a table of
    /// medians follows.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// A load is "quiet" when the machine's busy time not explained by
    /// this process, PostgreSQL and Kafka stays at or below this many cores.
    #[arg(long, default_value_t = 0.2)]
    max_other: f64,
    /// Skip the psql COPY comparison.
    #[arg(long)]
    no_psql: bool,
    /// psql to run.
    #[arg(long, default_value = "psql")]
    psql: String,
    /// Partitions of the fresh topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Give up a phase after this long.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Keep the databases, topics, registry and CSV files.
    #[arg(long)]
    keep: bool,
    /// Where the registry and CSV files go (default: the temp directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(
        long,
        env = "QUANTRAC_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    /// A database the benchmark can `CREATE DATABASE` from (a superuser or
    /// CREATEDB role); fresh databases are made next to it.
    #[arg(
        long,
        env = "QUANTRAC_DATABASE_URL",
        default_value = "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac",
        hide_env_values = true
    )]
    database_url: String,
}

/// One timed load.
#[derive(Debug)]
struct Load {
    /// The load without the round.
    kind: String,
    what: String,
    rows: u64,
    /// The figure: from start to N rows stored.
    seconds: f64,
    /// Processor only: start-up (migrations + registry sync) and the time
    /// from start to the first committed batch.
    startup: Option<f64>,
    first_batch: Option<f64>,
    batches: Option<u64>,
    cpu: CpuUse,
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
    ensure!(args.readings > 0, "--readings must be at least 1");
    ensure!(args.stations > 0, "--stations must be at least 1");
    ensure!(args.repeat > 0, "--repeat must be at least 1");
    ensure!(args.partitions > 0, "--partitions must be at least 1");
    ensure!(
        !args.methods.is_empty() || !args.no_psql,
        "nothing to measure: no --methods and --no-psql"
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(run(&args))
}

/// What the run created, removed at the end unless `--keep`.
#[derive(Debug, Default)]
struct Created {
    topics: Vec<String>,
    groups: Vec<String>,
    databases: Vec<String>,
    files: Vec<PathBuf>,
}

async fn run(args: &Args) -> Result<()> {
    let mut created = Created::default();
    let outcome = benchmark(args, &mut created).await;
    if args.keep {
        eprintln!("kept: {created:#?}");
    } else {
        cleanup(args, &created).await;
    }
    outcome
}

async fn cleanup(args: &Args, created: &Created) {
    for db in &created.databases {
        if let Err(e) = drop_database(&args.database_url, db).await {
            eprintln!("warning: cannot drop database {db}: {e:#}");
        }
    }
    if !created.groups.is_empty() {
        let groups: Vec<&str> = created.groups.iter().map(String::as_str).collect();
        common::delete_groups(&args.brokers, &groups).await;
    }
    if !created.topics.is_empty() {
        let topics: Vec<&str> = created.topics.iter().map(String::as_str).collect();
        common::delete_topics(&args.brokers, &topics).await;
    }
    for f in &created.files {
        if let Err(e) = std::fs::remove_file(f) {
            eprintln!("warning: cannot remove {}: {e}", f.display());
        }
    }
}

async fn benchmark(args: &Args, created: &mut Created) -> Result<()> {
    let per_station = args.readings.div_ceil(READINGS_PER_SAMPLE * args.stations);
    let n_samples = per_station * args.stations;
    let n = n_samples * READINGS_PER_SAMPLE;
    let defaults = ProcessorConfig::default();
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let name = quantrac_testkit::unique("bench-store");
    let prefix = quantrac_testkit::unique("BS").to_uppercase();

    println!("store-rate: readings topic -> PostgreSQL, processor vs psql COPY");
    println!(
        "  date (UTC)        {}",
        Utc::now().format("%Y-%m-%d %H:%M:%S")
    );
    println!("  machine           {}", common::machine_line());
    println!(
        "  data              {} readings = {} stations x {} samples x {} readings (pH, TSS, COD, NH4), 5 min apart",
        thousands(n as f64),
        args.stations,
        per_station,
        READINGS_PER_SAMPLE
    );
    println!(
        "  Kafka             {} (fresh topics, {} partitions, one ReadingBatch per sample)",
        args.brokers, args.partitions
    );
    println!(
        "  database          {} (a fresh database per load; server {})",
        redact(&args.database_url),
        server_version(&args.database_url)
            .await
            .unwrap_or_else(|e| format!("unknown: {e:#}"))
    );
    println!(
        "  processor         in this process; batch.max_readings {}, batch.max_wait {} ms, batch.in_flight {}, fresh consumer group per method",
        args.batch_max_readings
            .unwrap_or(defaults.batch.max_readings),
        args.batch_max_wait_ms
            .unwrap_or(u64::try_from(defaults.batch.max_wait.as_millis()).unwrap_or(u64::MAX)),
        args.batch_in_flight.unwrap_or(defaults.batch.in_flight)
    );
    println!(
        "  busy before start {:.2} cores of the machine (1 s sample, before producing)",
        common::busy_now(Duration::from_secs(1)).await
    );
    println!(
        "  rounds            {} (each: {}{}), a CHECKPOINT and 1 s pause before every load, \
         each database dropped after its load",
        args.repeat,
        args.methods
            .iter()
            .map(|m| format!("processor {}", m.name()))
            .collect::<Vec<_>>()
            .join(", "),
        if args.no_psql { "" } else { ", psql \\copy" }
    );
    println!(
        "  clock             processor: Processor::start -> `stored` counter = N (then count(*) checked); \
         psql: the psql process, start to exit"
    );
    println!();

    // Registry, topic, records.
    let registry = work_dir.join(format!("{name}-registry.toml"));
    std::fs::write(
        &registry,
        Outfalls::numbered(&prefix, usize::try_from(args.stations)?).toml(),
    )
    .with_context(|| format!("writing {}", registry.display()))?;
    created.files.push(registry.clone());
    let raw = format!("{name}.raw");
    let valid = format!("{name}.valid");
    let rejected = format!("{name}.rejected");
    common::create_topics(
        &args.brokers,
        &[&raw, &valid, &rejected].map(|t| TopicSpec {
            name: t,
            partitions: args.partitions,
            configs: &[],
        }),
    )
    .await?;
    created
        .topics
        .extend([raw.clone(), valid.clone(), rejected.clone()]);
    eprintln!("producing {} records ...", thousands(n_samples as f64));
    let produced = Instant::now();
    produce(&args.brokers, &raw, &prefix, args.stations, per_station).await?;
    let produce_secs = produced.elapsed().as_secs_f64();
    println!(
        "  produced          {} records ({} readings) to {raw} in {produce_secs:.2} s (not part of any figure)",
        thousands(n_samples as f64),
        thousands(n as f64)
    );
    println!();

    let timeout = Duration::from_secs(args.timeout_secs);
    let mut loads = Vec::new();
    let csv = work_dir.join(format!("{name}.csv"));
    check_path(&csv)?;
    let mut have_csv = false;
    for round in 1..=args.repeat {
        let suffix = if args.repeat > 1 {
            format!(" #{round}")
        } else {
            String::new()
        };
        for method in &args.methods {
            let db = fresh_database(&args.database_url).await?;
            created.databases.push(db.clone());
            let url = database_url_for(&args.database_url, &db)?;
            let group = quantrac_testkit::unique("bench-store-group");
            created.groups.push(group.clone());
            let mut config = ProcessorConfig {
                node_id: quantrac_testkit::unique("bench-store-proc"),
                database_url: url.clone(),
                registry: registry.clone(),
                ..Default::default()
            };
            config.http.listen = "127.0.0.1:0".parse()?;
            config.kafka.brokers = args.brokers.clone();
            config.kafka.group_id = group;
            config.kafka.raw_topic = raw.clone();
            config.kafka.valid_topic = valid.clone();
            config.kafka.rejected_topic = rejected.clone();
            config.storage.write_method = method.write_method();
            if let Some(m) = args.batch_max_readings {
                config.batch.max_readings = m;
            }
            if let Some(ms) = args.batch_max_wait_ms {
                config.batch.max_wait = Duration::from_millis(ms);
            }
            if let Some(n) = args.batch_in_flight {
                config.batch.in_flight = n;
            }
            settle(&args.database_url).await?;
            eprintln!("processor, write_method = {}{suffix} ...", method.name());
            let mut load = processor_load(config, *method, n, timeout).await?;
            load.what.push_str(&suffix);
            eprintln!("  {:.2} s", load.seconds);
            loads.push(load);
            if !args.no_psql && !have_csv {
                // The very rows the processor stored.
                created.files.push(csv.clone());
                psql(
                    &args.psql,
                    &url,
                    &format!(
                        "\\copy (SELECT {COLUMNS} FROM readings) TO '{}' WITH (FORMAT csv)",
                        csv.display()
                    ),
                )?;
                have_csv = true;
            }
            drop_now(args, created, &db).await;
        }

        if !args.no_psql {
            if !have_csv {
                // No processor run: the same rows, built here.
                created.files.push(csv.clone());
                write_csv(&csv, &prefix, args.stations, per_station)?;
                have_csv = true;
            }
            let db = fresh_database(&args.database_url).await?;
            created.databases.push(db.clone());
            let url = database_url_for(&args.database_url, &db)?;
            // Same schema as the processor's databases: its migrations and
            // the registry, as Processor::start applies them.
            let defaults = ProcessorConfig::default();
            let (mut store, _) = quantrac_processor::store::Store::open(
                &url,
                &defaults.database,
                &defaults.storage.schema(),
                defaults.storage.write_method,
            )
            .await?;
            store
                .sync_registry(
                    &quantrac_proto::registry::Registry::load(&registry)?,
                    "store-rate",
                )
                .await?;
            drop(store);
            settle(&args.database_url).await?;
            eprintln!("psql \\copy{suffix} ...");
            let cpu0 = common::cpu_sample(&[]);
            let t0 = Instant::now();
            let out = psql(
                &args.psql,
                &url,
                &format!(
                    "\\copy readings ({COLUMNS}) FROM '{}' WITH (FORMAT csv)",
                    csv.display()
                ),
            )?;
            let seconds = t0.elapsed().as_secs_f64();
            let cpu1 = common::cpu_sample(&[]);
            let copied: u64 = out
                .trim()
                .strip_prefix("COPY ")
                .and_then(|x| x.trim().parse().ok())
                .ok_or_else(|| anyhow!("unexpected psql output: {out:?}"))?;
            let counted = count_readings(&url).await?;
            ensure!(
                copied == n && counted == n,
                "psql copied {copied}, table holds {counted}, expected {n}"
            );
            eprintln!("  {seconds:.2} s");
            loads.push(Load {
                kind: "psql \\copy (CSV)".into(),
                what: format!("psql \\copy (CSV){suffix}"),
                rows: n,
                seconds,
                startup: None,
                first_batch: None,
                batches: None,
                cpu: CpuUse::between(&cpu0, &cpu1),
            });
            drop_now(args, created, &db).await;
        }
    }

    report(&loads, args.repeat, args.max_other);
    Ok(())
}

/// Before each timed load: a CHECKPOINT, so no load pays for the previous
/// one's dirty pages, then a moment for the machine to go quiet.
async fn settle(admin_url: &str) -> Result<()> {
    connect(admin_url)
        .await?
        .batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT (needs a superuser or pg_checkpoint role)")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Drops a measured database right away (unless `--keep`), so later loads
/// do not share the server with it.
async fn drop_now(args: &Args, created: &mut Created, db: &str) {
    if args.keep {
        return;
    }
    match drop_database(&args.database_url, db).await {
        Ok(()) => created.databases.retain(|d| d != db),
        Err(e) => eprintln!("warning: cannot drop database {db} now: {e:#}"),
    }
}

/// Starts a processor, waits until `n` rows are stored, stops it.
async fn processor_load(
    config: ProcessorConfig,
    method: Method,
    n: u64,
    timeout: Duration,
) -> Result<Load> {
    let url = config.database_url.clone();
    let shutdown = CancellationToken::new();
    let cpu0 = common::cpu_sample(&[]);
    let t0 = Instant::now();
    let processor = Processor::start(
        config,
        quantrac_processor::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .context("starting the processor")?;
    let startup = t0.elapsed().as_secs_f64();
    let watched = async {
        let mut first_batch = None;
        loop {
            let s = processor.status.snapshot();
            if first_batch.is_none() && s.batches > 0 {
                first_batch = Some(t0.elapsed().as_secs_f64());
            }
            ensure!(
                s.rejected == 0,
                "the processor rejected {} readings",
                s.rejected
            );
            if s.stored >= n {
                return Ok((t0.elapsed().as_secs_f64(), first_batch, s));
            }
            if t0.elapsed() > timeout {
                bail!("timeout after {} s: {s:?}", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    .await;
    let cpu1 = common::cpu_sample(&[]);
    shutdown.cancel();
    let status = processor.status.clone();
    if let Err(e) = processor.wait().await {
        eprintln!("warning: the processor stopped with an error: {e}");
    }
    let (seconds, first_batch, at_end) = watched?;
    let counted = count_readings(&url).await?;
    ensure!(
        counted == n,
        "count(*) = {counted}, expected {n} (processor status {:?})",
        status.snapshot()
    );
    Ok(Load {
        kind: format!("processor, write_method = {}", method.name()),
        what: format!("processor, write_method = {}", method.name()),
        rows: n,
        seconds,
        startup: Some(startup),
        first_batch,
        batches: Some(at_end.batches),
        cpu: CpuUse::between(&cpu0, &cpu1),
    })
}

impl Load {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.seconds
    }

    /// Busy time not explained by this process, PostgreSQL and Kafka.
    fn other(&self) -> f64 {
        self.cpu.other(&[Service::Postgres, Service::Kafka])
    }
}

/// Rates of one kind of load, sorted: over its quiet runs when there are
/// any, else over all. Also (all runs, quiet runs).
fn rates_of(loads: &[Load], kind: &str, max_other: f64) -> (Vec<f64>, usize, usize) {
    let all: Vec<&Load> = loads.iter().filter(|l| l.kind == kind).collect();
    let quiet: Vec<&Load> = all
        .iter()
        .copied()
        .filter(|l| l.other() <= max_other)
        .collect();
    let used = if quiet.is_empty() { &all } else { &quiet };
    let mut rates: Vec<f64> = used.iter().map(|l| l.rate()).collect();
    rates.sort_by(f64::total_cmp);
    (rates, all.len(), quiet.len())
}

fn report(loads: &[Load], repeat: usize, max_other: f64) {
    let psql_kind = loads
        .iter()
        .find(|l| l.startup.is_none())
        .map(|l| l.kind.clone());
    let psql_rate = psql_kind.map(|k| common::median(&rates_of(loads, &k, max_other).0));
    println!();
    let mut t = Table::new(&[
        "load",
        "rows",
        "seconds",
        "rows/s",
        "vs psql",
        "start-up s",
        "first batch s",
        "rows/s after first batch",
        "batches",
        "quiet",
    ]);
    for l in loads {
        let rate = l.rate();
        // Rows stored after the first batch committed, over the time after it
        // (the first batch's rows are counted as already there).
        let steady = match (l.first_batch, l.batches) {
            (Some(f), Some(b)) if b > 1 && l.seconds > f => {
                let first_rows = l.rows as f64 / b as f64;
                Some((l.rows as f64 - first_rows) / (l.seconds - f))
            }
            _ => None,
        };
        t.row(vec![
            l.what.clone(),
            thousands(l.rows as f64),
            format!("{:.2}", l.seconds),
            thousands(rate),
            psql_rate.map_or("-".into(), |p| format!("{:.2}x", rate / p)),
            l.startup.map_or("-".into(), |s| format!("{s:.2}")),
            l.first_batch.map_or("-".into(), |s| format!("{s:.2}")),
            steady.map_or("-".into(), thousands),
            l.batches.map_or("-".into(), |b| b.to_string()),
            if l.other() <= max_other {
                "yes".into()
            } else {
                format!("no ({:.2})", l.other())
            },
        ]);
    }
    t.print();
    if repeat > 1 {
        println!();
        println!("Median over the rounds (over the quiet runs when there are any):");
        let mut m = Table::new(&[
            "load",
            "runs",
            "quiet runs",
            "median rows/s",
            "min",
            "max",
            "vs psql (medians)",
        ]);
        let mut kinds: Vec<&str> = Vec::new();
        for l in loads {
            if !kinds.contains(&l.kind.as_str()) {
                kinds.push(&l.kind);
            }
        }
        for kind in kinds {
            let (rates, all, quiet) = rates_of(loads, kind, max_other);
            let median = common::median(&rates);
            m.row(vec![
                kind.to_owned(),
                all.to_string(),
                quiet.to_string(),
                thousands(median),
                thousands(rates.first().copied().unwrap_or(f64::NAN)),
                thousands(rates.last().copied().unwrap_or(f64::NAN)),
                psql_rate.map_or("-".into(), |p| format!("{:.2}x", median / p)),
            ]);
        }
        m.print();
    }
    println!();
    println!(
        "vs psql: rows/s over the median psql rows/s (quiet runs). seconds: processor from \
         Processor::start (includes migrations + registry sync = start-up, the consumer group \
         join and the first fetch) until N rows stored; psql: the whole psql process (connect, \
         COPY, exit). rows/s after first batch: rows after the first commit (taking the first \
         batch as average size) over the time after it. quiet: the machine's busy time outside \
         this process, PostgreSQL and Kafka stayed <= {max_other:.2} cores (else: how much it was)."
    );
    println!();
    println!("CPU during each load, in cores (machine: 2 cores = 2.00):");
    let mut c = Table::new(&[
        "load",
        "this process",
        "PostgreSQL",
        "Kafka",
        "other",
        "machine busy",
        "rows per PostgreSQL core-second",
    ]);
    for l in loads {
        let pg = l.cpu.service(Service::Postgres);
        c.row(vec![
            l.what.clone(),
            format!("{:.2}", l.cpu.process),
            format!("{pg:.2}"),
            format!("{:.2}", l.cpu.service(Service::Kafka)),
            format!("{:.2}", l.other()),
            format!("{:.2} / {:.0}", l.cpu.machine, l.cpu.cores),
            thousands(l.rate() / pg.max(0.01)),
        ]);
    }
    c.print();
    println!();
    println!(
        "this process = the in-process processor (and the benchmark's polling), or psql for the \
         psql load; PostgreSQL = every postgres process (backends, checkpointer, WAL writer; other \
         users' queries too); other = busy time not explained by these."
    );
}

/// Sample `k` of station `s`: 5 minutes apart, ending 10 minutes ago, whole
/// seconds, values inside the registry's ranges.
fn sample(prefix: &str, s: u64, k: u64, per_station: u64, end: DateTime<Utc>) -> Result<Sample> {
    let back = i64::try_from(5 * (per_station - k))?;
    let at = end - chrono::Duration::minutes(back);
    let at = DateTime::from_timestamp(at.timestamp(), 0).ok_or_else(|| anyhow!("time"))?;
    let v = |p: &str, value: f64, unit: &str| SampleValue {
        parameter: p.into(),
        value,
        unit: unit.into(),
        status: DeviceStatus::Measuring,
        device_flag: "00".into(),
        report: None,
        converted: None,
    };
    let kf = k as f64;
    Ok(Sample {
        station_id: format!("{prefix}-{s}"),
        measured_at: at,
        values: vec![
            v("pH", 7.0 + (k % 10) as f64 / 10.0, "pH"),
            v("TSS", 20.0 + kf % 7.0, "mg/L"),
            v("COD", 40.0 + kf % 13.0, "mg/L"),
            v("NH4", 1.5, "mg/L"),
        ],
    })
}

/// Produces the samples as ingest would: one `ReadingBatch` per sample,
/// keyed by station, idempotent producer.
async fn produce(
    brokers: &str,
    topic: &str,
    prefix: &str,
    stations: u64,
    per_station: u64,
) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("Kafka producer")?;
    let end = Utc::now() - chrono::Duration::minutes(10);
    let mut records = Vec::with_capacity(usize::try_from(stations * per_station)?);
    for k in 0..per_station {
        for s in 0..stations {
            let b = sample(prefix, s, k, per_station, end)?.into_batch(
                SourceProtocol::TcpHj212,
                Utc::now(),
                "bench",
            );
            records.push((b.station_id.clone(), b.encode_to_vec()));
        }
    }
    for chunk in records.chunks(1000) {
        let sends = chunk.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?;
        }
    }
    Ok(())
}

/// Without a processor run: the same rows as CSV, built here (normalised
/// units are the registry's, so the values go in as they are).
fn write_csv(path: &Path, prefix: &str, stations: u64, per_station: u64) -> Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let end = Utc::now() - chrono::Duration::minutes(10);
    let source = SourceProtocol::TcpHj212 as i32;
    let measuring = quantrac_proto::v1::DeviceStatus::Measuring as i32;
    let valid = quantrac_proto::qc::QcFlag::Valid.as_str();
    for k in 0..per_station {
        for s in 0..stations {
            let sample = sample(prefix, s, k, per_station, end)?;
            let received = Utc::now().to_rfc3339();
            for v in &sample.values {
                writeln!(
                    w,
                    "{},{},{},{},{},{measuring},{},{valid},{source},{received},",
                    sample.station_id,
                    v.parameter,
                    sample.measured_at.to_rfc3339(),
                    v.value,
                    v.unit,
                    v.device_flag
                )?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

/// psql's `\copy` takes the file name in single quotes.
fn check_path(p: &Path) -> Result<()> {
    ensure!(
        !p.display().to_string().contains('\''),
        "the work directory must not contain a single quote: {}",
        p.display()
    );
    Ok(())
}

/// Runs one psql command; returns its standard output.
fn psql(psql: &str, url: &str, command: &str) -> Result<String> {
    let out = Command::new(psql)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", command])
        .output()
        .with_context(|| format!("running {psql}"))?;
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn server_version(url: &str) -> Result<String> {
    let c = connect(url).await?;
    Ok(c.query_one("SHOW server_version", &[]).await?.get(0))
}

async fn count_readings(url: &str) -> Result<u64> {
    let c = connect(url).await?;
    let n: i64 = c
        .query_one("SELECT count(*) FROM readings", &[])
        .await?
        .get(0);
    Ok(u64::try_from(n)?)
}

/// `CREATE DATABASE` next to the admin database; returns the name.
async fn fresh_database(admin_url: &str) -> Result<String> {
    let name = quantrac_testkit::unique_ident("qt_bench");
    connect(admin_url)
        .await?
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    Ok(name)
}

async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let c = connect(admin_url).await?;
    if c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .is_err()
    {
        // Before PostgreSQL 13 there is no FORCE.
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await?;
    }
    Ok(())
}

/// The admin URL with its database name replaced (query string kept).
fn database_url_for(admin_url: &str, db: &str) -> Result<String> {
    let (base, last) = admin_url
        .rsplit_once('/')
        .filter(|(base, _)| base.contains("://") && !base.ends_with('/'))
        .ok_or_else(|| {
            anyhow!(
                "database URL without a database name: {}",
                redact(admin_url)
            )
        })?;
    let query = last.find('?').map_or("", |i| &last[i..]);
    Ok(format!("{base}/{db}{query}"))
}

/// The URL without its password, for output.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
