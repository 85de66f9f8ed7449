//! Query service latency and export throughput on a realistic data set,
//! each beside the same question asked in hand-written SQL through `psql`
//! in the same run: the ratio is what the API costs.
//!
//! Data set (loaded by the benchmark itself, once; `--reload` loads it
//! again): `--stations` wastewater outfalls x 8 parameters x `--days` days
//! at 5-minute intervals (100 x 8 x 30 = 6.9 million rows), in the
//! database `quantrac_query_bench` next to `QUANTRAC_DATABASE_URL`.
//!
//! Calls, each `--rounds` times on random stations: one parameter hour by
//! hour for the whole range; a station's compliance report for the whole
//! range (1-hour averages, every limited parameter, daily volumes); the
//! latest values of all stations; one station-day of raw rows. Export:
//! `--export-stations` stations' whole range streamed, in rows per second.
//!
//! `cargo run --release -p quantrac-benches --bin query-latency`

mod common;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::v1::query_service_client::QueryServiceClient;
use quantrac_proto::v1::*;
use quantrac_query::{Query, QueryConfig};
use tokio_util::sync::CancellationToken;

use common::{Table, quantile, thousands};

#[derive(Parser, Debug)]
#[command(about = "Query service latency (p50/p99) and export rate vs the same SQL through psql")]
struct Args {
    #[arg(long, default_value_t = 100)]
    stations: u32,
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Calls of each kind.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Stations whose whole range the export streams.
    #[arg(long, default_value_t = 10)]
    export_stations: u32,
    /// Load the data set again even if it is there.
    #[arg(long)]
    reload: bool,
    #[arg(long, default_value = "psql")]
    psql: String,
}

const PARAMETERS: [(&str, &str, f64, f64); 8] = [
    ("COD", "mg/L", 60.0, 25.0),
    ("Flow", "m3/h", 40.0, 10.0),
    ("NH4", "mg/L", 3.0, 1.5),
    ("TN", "mg/L", 15.0, 5.0),
    ("TP", "mg/L", 2.0, 1.0),
    ("TSS", "mg/L", 40.0, 15.0),
    ("Temp", "°C", 30.0, 3.0),
    ("pH", "pH", 7.2, 0.5),
];
const DB_NAME: &str = "quantrac_query_bench";

fn registry(stations: u32) -> String {
    let params: String = PARAMETERS
        .iter()
        .map(|(code, unit, _, _)| {
            let max = if *code == "Flow" { 5000 } else { 1000 };
            format!("  {{ code = \"{code}\", unit = \"{unit}\", range_min = 0, range_max = {max}, expected_interval = \"5m\" }},\n")
        })
        .collect();
    let limits = "  { parameter = \"COD\", max = 75, regulation = \"QCVN 40:2011/BTNMT\", column = \"B\", effective_from = 2020-01-01 },\n\
                  { parameter = \"TSS\", max = 50, regulation = \"QCVN 40:2011/BTNMT\", column = \"B\", effective_from = 2020-01-01 },\n\
                  { parameter = \"NH4\", max = 5, regulation = \"QCVN 40:2011/BTNMT\", column = \"B\", effective_from = 2020-01-01 },\n\
                  { parameter = \"Temp\", max = 40, regulation = \"QCVN 40:2011/BTNMT\", column = \"B\", effective_from = 2020-01-01 },\n\
                  { parameter = \"pH\", min = 5.5, max = 9, regulation = \"QCVN 40:2011/BTNMT\", column = \"B\", effective_from = 2020-01-01 },\n";
    (0..stations)
        .map(|i| {
            format!(
                "[[stations]]\nid = \"QB-{i:03}\"\nname = \"Bench outfall {i}\"\nfacility = \"Bench\"\nindustrial_zone = \"KCN {}\"\n\
                 province = \"Phú Yên\"\nlatitude = 13.0\nlongitude = 109.3\nkind = \"wastewater\"\nparameters = [\n{params}]\nlimits = [\n{limits}]\n\n",
                i % 10
            )
        })
        .collect()
}

/// Midnight local time, `days` days before today's.
fn range(days: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = quantrac_query::interval::local();
    let today = Utc::now().with_timezone(&local).date_naive();
    let end = local
        .from_local_datetime(&today.and_hms_opt(0, 0, 0).unwrap_or_default())
        .single()
        .unwrap_or_default()
        .with_timezone(&Utc);
    (end - chrono::Duration::days(i64::from(days)), end)
}

async fn load(url: &str, args: &Args, (start, end): (DateTime<Utc>, DateTime<Utc>)) -> Result<()> {
    let mut db = quantrac_db::connect(url, &quantrac_db::ConnectOptions::default()).await?;
    quantrac_db::schema::migrate(&db, &quantrac_db::SchemaOptions::default()).await?;
    let expected = i64::from(args.stations) * 8 * i64::from(args.days) * 288;
    let have: i64 = db
        .query_one("SELECT count(*) FROM readings", &[])
        .await?
        .get(0);
    let first: Option<DateTime<Utc>> = db
        .query_one("SELECT min(measured_at) FROM readings", &[])
        .await?
        .get(0);
    if !args.reload && have == expected && first == Some(start) {
        eprintln!("data set already loaded: {} rows", thousands(have as f64));
        // As the processor does at start (a data set loaded before
        // latest_readings existed gets it here).
        quantrac_db::readings::seed_latest(&db).await?;
        return Ok(());
    }
    db.batch_execute("TRUNCATE readings, rejected_readings")
        .await?;
    let reg = quantrac_proto::registry::Registry::from_toml(&registry(args.stations))?;
    quantrac_db::registry::sync(&mut db, &reg).await?;
    let codes: Vec<&str> = PARAMETERS.iter().map(|p| p.0).collect();
    let units: Vec<&str> = PARAMETERS.iter().map(|p| p.1).collect();
    let bases: Vec<f64> = PARAMETERS.iter().map(|p| p.2).collect();
    let swings: Vec<f64> = PARAMETERS.iter().map(|p| p.3).collect();
    let started = Instant::now();
    for s in 0..args.stations {
        // A daily cycle, noise, 1% calibrating; server-side, so the load
        // is PostgreSQL's own insert rate.
        db.execute(
            "INSERT INTO readings (station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source, received_at) \
             SELECT $1, p.code, t, greatest(0, p.base + p.swing * sin(extract(epoch FROM t)::float8 / 13750.0 + $2::float8) + p.swing * 0.3 * (random() - 0.5)), \
                    p.unit, 1, 'N', CASE WHEN random() < 0.01 THEN 'calibrating' ELSE 'valid' END, 1, t \
             FROM unnest($3::text[], $4::text[], $5::float8[], $6::float8[]) AS p(code, unit, base, swing), \
                  generate_series($7::timestamptz, $8::timestamptz - interval '5 minutes', interval '5 minutes') AS t",
            &[&format!("QB-{s:03}"), &f64::from(s), &codes, &units, &bases, &swings, &start, &end],
        )
        .await?;
        if s % 10 == 9 {
            let rows = f64::from(s + 1) * 8.0 * f64::from(args.days) * 288.0;
            eprintln!(
                "loaded {}/{} stations, {} rows, {:.0} rows/s",
                s + 1,
                args.stations,
                thousands(rows),
                rows / started.elapsed().as_secs_f64()
            );
        }
    }
    // The processor keeps latest_readings as it stores; loaded
    // server-side here, so seeded as the processor does at start.
    quantrac_db::readings::seed_latest(&db).await?;
    db.batch_execute("ANALYZE readings, latest_readings")
        .await?;
    Ok(())
}

/// A fixed pseudo-random sequence, so the API and psql ask about the same
/// stations.
fn stations(n: usize, of: u32) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("QB-{:03}", x % u64::from(of))
        })
        .collect()
}

fn authed<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn tr(s: DateTime<Utc>, e: DateTime<Utc>) -> Option<TimeRange> {
    Some(TimeRange {
        start: Some(to_timestamp(s)),
        end: Some(to_timestamp(e)),
    })
}

/// Latencies in microseconds, sorted.
struct Lat(Vec<i64>);

impl Lat {
    fn p(&self, q: f64) -> f64 {
        quantile(&self.0, q).unwrap_or(0) as f64 / 1_000.0
    }
}

/// `psql` running `sql` once per element of `each`, with `\timing`; the
/// times it reports, sorted.
fn psql_times(psql: &str, url: &str, statements: &[String]) -> Result<Lat> {
    let mut script = String::from("\\timing on\n\\o /dev/null\n");
    for s in statements {
        script.push_str(s);
        script.push_str(";\n");
    }
    let path = std::env::temp_dir().join(format!("query-latency-{}.sql", std::process::id()));
    std::fs::write(&path, script)?;
    let out = std::process::Command::new(psql)
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&path)
        .output()
        .with_context(|| format!("running {psql}"))?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut times: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| (ms * 1_000.0) as i64)
        .collect();
    times.sort_unstable();
    if times.len() != statements.len() {
        bail!(
            "psql reported {} times for {} statements",
            times.len(),
            statements.len()
        );
    }
    Ok(Lat(times))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let admin = quantrac_testkit::env::database_url();
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{DB_NAME}"),
        None => bail!("QUANTRAC_DATABASE_URL has no database name"),
    };
    let _ = quantrac_testkit::db::create_database(&admin, DB_NAME).await;
    let span = range(args.days);
    load(&url, &args, span).await?;

    let stop = CancellationToken::new();
    let query = Query::start(
        QueryConfig {
            database_url: url.clone(),
            grpc_listen: "127.0.0.1:0".parse()?,
            http_listen: "127.0.0.1:0".parse()?,
            ..QueryConfig::default()
        },
        None,
        stop.clone(),
    )
    .await?;
    let db = quantrac_db::connect(&url, &quantrac_db::ConnectOptions::default()).await?;
    let token = quantrac_db::access::issue(
        &db,
        "query-latency",
        quantrac_db::access::Role::Analyst,
        Utc::now() + chrono::Duration::hours(2),
    )
    .await?
    .secret;
    // The endpoint the console and the `quantrac` client use.
    let endpoint =
        quantrac_plumbing::tls::grpc_endpoint(&format!("http://{}", query.grpc_addr), None)
            .map_err(anyhow::Error::msg)?;
    let mut c =
        QueryServiceClient::new(endpoint.connect().await?).max_decoding_message_size(256 << 20);
    let picks = stations(args.rounds, args.stations);
    let (start, end) = span;
    let day = (end - chrono::Duration::days(1), end);
    println!("{}", common::machine_line());
    println!(
        "data set: {} stations x 8 parameters x {} days at 5 min = {} rows; {} calls of each kind\n",
        args.stations,
        args.days,
        thousands(f64::from(args.stations) * 8.0 * f64::from(args.days) * 288.0),
        args.rounds
    );

    // Warm the caches once per kind, then measure.
    let mut results: Vec<(&str, Lat, Lat)> = Vec::new();
    macro_rules! timed {
        ($call:expr) => {{
            let t = Instant::now();
            $call.await?;
            t.elapsed().as_micros() as i64
        }};
    }
    let fmt = |t: DateTime<Utc>| format!("'{}'", t.to_rfc3339());

    // 1. One parameter of one station, hour by hour.
    let agg = |s: &str| GetAggregatesRequest {
        station_id: s.into(),
        parameter: "COD".into(),
        range: tr(start, end),
        interval: "1h".into(),
        functions: vec!["avg".into(), "min".into(), "max".into(), "count".into()],
        fill: Fill::None as i32,
        max_gap_buckets: 0,
        include_flagged: false,
    };
    c.get_aggregates(authed(&token, agg(&picks[0]))).await?;
    let mut api = Vec::new();
    for s in &picks {
        api.push(timed!(c.get_aggregates(authed(&token, agg(s)))));
    }
    api.sort_unstable();
    let sql: Vec<String> = picks
        .iter()
        .map(|s| {
            format!(
                "SELECT date_bin('1 hour', measured_at, '2000-01-01 00:00+07'), avg(value), min(value), max(value), count(*) \
                 FROM readings WHERE station_id = '{s}' AND parameter = 'COD' AND measured_at >= {} AND measured_at < {} \
                 AND qc_flag IN ('valid', 'above_range') GROUP BY 1 ORDER BY 1",
                fmt(start),
                fmt(end)
            )
        })
        .collect();
    results.push((
        "hourly series, 1 parameter, whole range",
        Lat(api),
        psql_times(&args.psql, &url, &sql)?,
    ));

    // 2. Compliance report.
    let comp = |s: &str| GetComplianceRequest {
        station_id: s.into(),
        range: tr(start, end),
        averaging: "1h".into(),
        min_coverage: None,
        parameters: vec![],
    };
    c.get_compliance(authed(&token, comp(&picks[0]))).await?;
    let mut api = Vec::new();
    for s in &picks {
        api.push(timed!(c.get_compliance(authed(&token, comp(s)))));
    }
    api.sort_unstable();
    let sql: Vec<String> = picks
        .iter()
        .map(|s| {
            format!(
                "SELECT parameter, date_bin('1 hour', measured_at, '2000-01-01 00:00+07') AS h, avg(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')), \
                 count(*) FILTER (WHERE qc_flag = 'valid'), count(*) FILTER (WHERE qc_flag NOT IN ('valid', 'above_range')) \
                 FROM readings WHERE station_id = '{s}' AND parameter IN ('COD', 'NH4', 'TSS', 'Temp', 'pH', 'Flow') \
                 AND measured_at >= {} AND measured_at < {} GROUP BY 1, 2 ORDER BY 1, 2",
                fmt(start),
                fmt(end)
            )
        })
        .collect();
    results.push((
        "compliance report, whole range",
        Lat(api),
        psql_times(&args.psql, &url, &sql)?,
    ));

    // 3. Latest values of all stations.
    let mut api = Vec::new();
    c.get_latest(authed(&token, GetLatestRequest::default()))
        .await?;
    for _ in &picks {
        api.push(timed!(
            c.get_latest(authed(&token, GetLatestRequest::default()))
        ));
    }
    api.sort_unstable();
    let sql: Vec<String> = picks
        .iter()
        .map(|_| {
            // The same read as the API's: the processor's latest_readings.
            "SELECT station_id, parameter, measured_at, value, unit, qc_flag FROM latest_readings \
             WHERE (station_id, parameter) IN (SELECT station_id, code FROM station_parameters) \
             ORDER BY station_id, parameter"
                .to_string()
        })
        .collect();
    results.push((
        "latest values, all stations",
        Lat(api),
        psql_times(&args.psql, &url, &sql)?,
    ));

    // 4. One station-day of raw rows.
    let raw = |s: &str| GetSeriesRequest {
        station_id: s.into(),
        parameters: vec![],
        range: tr(day.0, day.1),
        page_size: 10_000,
        page_token: String::new(),
        include_flagged: true,
    };
    let mut api = Vec::new();
    for s in &picks {
        api.push(timed!(c.get_series(authed(&token, raw(s)))));
    }
    api.sort_unstable();
    let sql: Vec<String> = picks
        .iter()
        .map(|s| {
            format!(
                "SELECT parameter, measured_at, value, unit, status, qc_flag, source, received_at FROM readings \
                 WHERE station_id = '{s}' AND measured_at >= {} AND measured_at < {} ORDER BY parameter, measured_at",
                fmt(day.0),
                fmt(day.1)
            )
        })
        .collect();
    results.push((
        "raw rows, one station-day",
        Lat(api),
        psql_times(&args.psql, &url, &sql)?,
    ));

    let mut table = Table::new(&[
        "call",
        "API p50 ms",
        "API p99 ms",
        "psql p50 ms",
        "psql p99 ms",
        "p50 ratio",
    ]);
    for (name, a, p) in &results {
        table.row(vec![
            name.to_string(),
            format!("{:.2}", a.p(0.5)),
            format!("{:.2}", a.p(0.99)),
            format!("{:.2}", p.p(0.5)),
            format!("{:.2}", p.p(0.99)),
            format!("{:.2}x", a.p(0.5) / p.p(0.5)),
        ]);
    }
    table.print();

    // Export: whole range of several stations, streamed.
    let t = Instant::now();
    let mut rows = 0u64;
    for i in 0..args.export_stations {
        let mut stream = c
            .stream_series(authed(
                &token,
                GetSeriesRequest {
                    station_id: format!("QB-{i:03}"),
                    parameters: vec![],
                    range: tr(start, end),
                    page_size: 10_000,
                    page_token: String::new(),
                    include_flagged: true,
                },
            ))
            .await?
            .into_inner();
        while let Some(page) = stream.message().await? {
            rows += page.points.len() as u64;
        }
    }
    let api_rate = rows as f64 / t.elapsed().as_secs_f64();
    let ids: Vec<String> = (0..args.export_stations)
        .map(|i| format!("'QB-{i:03}'"))
        .collect();
    let t = Instant::now();
    let out = std::process::Command::new(&args.psql)
        .args([&url, "-X", "-q", "-c"])
        .arg(format!(
            "\\copy (SELECT station_id, parameter, measured_at, value, unit, status, qc_flag, source, received_at FROM readings \
             WHERE station_id IN ({}) ORDER BY station_id, parameter, measured_at) TO '/dev/null' CSV",
            ids.join(", ")
        ))
        .output()?;
    if !out.status.success() {
        bail!(
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let psql_rate = rows as f64 / t.elapsed().as_secs_f64();
    println!();
    let mut table = Table::new(&[
        "export",
        "rows",
        "API rows/s",
        "psql \\copy rows/s",
        "ratio",
    ]);
    table.row(vec![
        format!("{} stations, whole range, streamed", args.export_stations),
        thousands(rows as f64),
        thousands(api_rate),
        thousands(psql_rate),
        format!("{:.2}x", api_rate / psql_rate),
    ]);
    table.print();
    stop.cancel();
    query.wait().await?;
    Ok(())
}
