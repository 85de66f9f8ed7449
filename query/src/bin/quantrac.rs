//! `quantrac`: the analysts' and officers' command-line client.
//!
//! Reads go to the query service (`QUANTRAC_QUERY_URL`), acknowledge and
//! resolve to the alerting service (`QUANTRAC_ALERTING_URL`), each with the
//! bearer token in `QUANTRAC_TOKEN`. `quantrac token ...` and `quantrac
//! migrate` are the operator's: they talk to the database itself
//! (`QUANTRAC_DATABASE_URL`).
//!
//! Times: RFC 3339 (`2026-12-01T08:00:00+07:00`), a local date
//! (`2026-12-01`, midnight in Viet Nam), `now`, or `now-24h` / `now-30d`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use quantrac_db::access::Role;
use quantrac_proto::domain::{from_timestamp, to_timestamp};
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_proto::v1::query_service_client::QueryServiceClient;
use quantrac_proto::v1::*;
use quantrac_query::export::Sink;
use quantrac_query::interval::local;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Query series, compliance and alerts; manage access tokens"
)]
struct Args {
    #[arg(
        long,
        env = "QUANTRAC_QUERY_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    query_url: String,
    #[arg(
        long,
        env = "QUANTRAC_ALERTING_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    alerting_url: String,
    /// PEM CA trusted for https:// service URLs (a private CA); unset: the
    /// public web roots.
    #[arg(long, env = "QUANTRAC_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// Bearer token (`quantrac token issue`).
    #[arg(long, env = "QUANTRAC_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
struct Span {
    /// Start (included).
    #[arg(long, default_value = "now-24h")]
    from: String,
    /// End (excluded).
    #[arg(long, default_value = "now")]
    to: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stations, their parameters and the limits in force.
    Stations {
        #[arg(long, default_value = "")]
        zone: String,
    },
    /// Raw readings of a station.
    Series {
        station: String,
        /// Parameters (repeat); none: all.
        #[arg(long = "parameter", short)]
        parameters: Vec<String>,
        #[command(flatten)]
        span: Span,
        /// Include readings flagged by quality control.
        #[arg(long)]
        flagged: bool,
    },
    /// Buckets of one parameter.
    Agg {
        station: String,
        parameter: String,
        #[command(flatten)]
        span: Span,
        /// 1m .. 1y: 5m, 1h, 1d, 1mo, 1y.
        #[arg(long, default_value = "1h")]
        interval: String,
        /// Comma-separated: avg,min,max,sum,count,first,last,stddev,twa,p95.
        #[arg(long = "fn", default_value = "avg,min,max,count")]
        functions: String,
        #[arg(long, value_enum, default_value_t = FillArg::None)]
        fill: FillArg,
        #[arg(long, default_value_t = 0)]
        max_gap: u32,
    },
    /// The newest value of every station and parameter.
    Latest {
        #[arg(long, default_value = "")]
        zone: String,
        #[arg(long = "station")]
        stations: Vec<String>,
    },
    /// Averages judged against the permit.
    Compliance {
        station: String,
        #[command(flatten)]
        span: Span,
        /// 5m, 1h or 24h.
        #[arg(long, default_value = "1h")]
        averaging: String,
        #[arg(long)]
        min_coverage: Option<f64>,
    },
    /// Readings the processor refused.
    Rejected {
        station: String,
        #[command(flatten)]
        span: Span,
    },
    /// A station's events: restart and status notices, and silences.
    Events {
        station: String,
        #[command(flatten)]
        span: Span,
    },
    /// Alerts, newest first.
    Alerts {
        #[arg(long, default_value = "")]
        zone: String,
        #[arg(long, default_value = "")]
        station: String,
        /// open, acknowledged, resolved (repeat).
        #[arg(long = "state")]
        states: Vec<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Acknowledge an alert (officer).
    Ack {
        alert_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Resolve an alert (officer).
    Resolve {
        alert_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Declare a station's readings in a range wrong (officer): they are
    /// kept, flagged "invalidated", never judged or averaged; audited.
    Invalidate {
        station: String,
        /// Parameters (repeat); none: all.
        #[arg(long = "parameter", short)]
        parameters: Vec<String>,
        #[arg(long, default_value = "now-1h")]
        from: String,
        #[arg(long, default_value = "now")]
        to: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Raw readings to CSV or Parquet (streamed; progress on stderr).
    Export {
        /// csv, or parquet (needs --file).
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        station: String,
        #[arg(long = "parameter", short)]
        parameters: Vec<String>,
        #[command(flatten)]
        span: Span,
        /// File to write; `-` for standard output.
        #[arg(long, default_value = "-")]
        file: String,
        #[arg(long)]
        flagged: bool,
    },
    /// Access tokens (operator; talks to the database).
    Token {
        #[arg(
            long,
            env = "QUANTRAC_DATABASE_URL",
            default_value = "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac"
        )]
        database_url: String,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The audit log (operator; talks to the database).
    Audit {
        #[arg(
            long,
            env = "QUANTRAC_DATABASE_URL",
            default_value = "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac"
        )]
        database_url: String,
        #[command(subcommand)]
        action: AuditAction,
    },
    /// A new station secret and its hash: the secret goes into the
    /// station's logger, the hash into the registry (`secret_hash`).
    StationSecret {
        /// The station it is for (printed in the registry line).
        station: String,
    },
    /// Applies the database schema (operator).
    Migrate {
        #[arg(
            long,
            env = "QUANTRAC_DATABASE_URL",
            default_value = "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac"
        )]
        database_url: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    Csv,
    Parquet,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FillArg {
    None,
    Null,
    Locf,
    Linear,
}

#[derive(Subcommand, Debug)]
enum AuditAction {
    /// Checks the hash chain from the first entry; exits 1 if broken.
    Verify,
    /// The newest entries.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// Who runs an operator command, for the audit log.
fn operator() -> String {
    std::env::var("QUANTRAC_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into())
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Issues a token; it is printed once and stored only as a digest.
    Issue {
        /// Who the token stands for (e.g. an officer's e-mail).
        #[arg(long)]
        identity: String,
        /// analyst, officer or admin.
        #[arg(long)]
        role: String,
        /// Validity, e.g. 90d.
        #[arg(long, default_value = "90d")]
        expires: humantime::Duration,
    },
    /// Revokes a token by its prefix (as `token list` shows it).
    Revoke { prefix: String },
    /// Lists tokens (never their secrets).
    List,
}

/// Parses a time argument.
fn when(s: &str) -> Result<DateTime<Utc>> {
    let s = s.trim();
    let now = Utc::now();
    if s == "now" {
        return Ok(now);
    }
    if let Some(ago) = s.strip_prefix("now-") {
        let d: Duration = humantime::parse_duration(ago).with_context(|| format!("time {s:?}"))?;
        return Ok(now - chrono::Duration::from_std(d)?);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = local()
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).context("midnight")?)
            .single()
            .context("local midnight")?;
        return Ok(t.with_timezone(&Utc));
    }
    bail!("time {s:?}: expected RFC 3339, YYYY-MM-DD, now or now-<duration>")
}

fn range(span: &Span) -> Result<TimeRange> {
    Ok(TimeRange {
        start: Some(to_timestamp(when(&span.from)?)),
        end: Some(to_timestamp(when(&span.to)?)),
    })
}

fn show_time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(from_timestamp)
        .map(|t| {
            t.with_timezone(&local())
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default()
}

fn num(v: f64) -> String {
    if v.is_nan() {
        String::new()
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Rows to print, in the chosen format.
struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn print(&self, format: Format, out: &mut dyn Write) -> Result<()> {
        match format {
            Format::Table => {
                let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
                for r in &self.rows {
                    for (w, c) in widths.iter_mut().zip(r) {
                        *w = (*w).max(c.chars().count());
                    }
                }
                let line = |cells: Vec<&str>| {
                    cells
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                        .trim_end()
                        .to_string()
                };
                writeln!(
                    out,
                    "{}",
                    line(self.headers.iter().map(String::as_str).collect())
                )?;
                for r in &self.rows {
                    writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
                }
            }
            Format::Csv => {
                writeln!(out, "{}", self.headers.join(","))?;
                for r in &self.rows {
                    writeln!(
                        out,
                        "{}",
                        r.iter().map(|c| csv(c)).collect::<Vec<_>>().join(",")
                    )?;
                }
            }
            Format::Json => {
                let items: Vec<serde_json::Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        serde_json::Value::Object(
                            self.headers
                                .iter()
                                .zip(r)
                                .map(|(h, c)| (h.clone(), serde_json::Value::String(c.clone())))
                                .collect(),
                        )
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
            }
        }
        Ok(())
    }
}

fn csv(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

fn authed<T>(token: &Option<String>, message: T) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(message);
    let token = token.as_deref().ok_or_else(|| {
        anyhow!("no token: set QUANTRAC_TOKEN (an operator issues one with `quantrac token issue`)")
    })?;
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not valid header text")?,
    );
    Ok(r)
}

async fn channel(url: &str, ca: Option<&std::path::Path>) -> Result<Channel> {
    quantrac_plumbing::tls::grpc_endpoint(url, ca)
        .map_err(|e| anyhow!("{url}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach {url}"))
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", e.code(), e.message())
}

fn series_row(p: &SeriesPoint) -> Vec<String> {
    vec![
        p.parameter.clone(),
        show_time(p.measured_at.as_ref()),
        num(p.value),
        p.unit.clone(),
        p.qc_flag.clone(),
    ]
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A person reads this: the error and its causes, no backtrace.
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let t = &args.token;
    match args.command {
        Command::Audit {
            database_url,
            action,
        } => {
            let client =
                quantrac_db::connect(&database_url, &quantrac_db::ConnectOptions::default())
                    .await?;
            match action {
                AuditAction::Verify => {
                    let v = quantrac_db::audit::verify(&client).await?;
                    match v.broken {
                        None => eprintln!("audit log intact: {} entries, chain verified", v.rows),
                        Some((seq, why)) => bail!(
                            "audit log broken at entry {seq}: {why} ({} entries read)",
                            v.rows
                        ),
                    }
                }
                AuditAction::List { limit } => {
                    let mut table =
                        Table::new(&["sequence", "at", "actor", "action", "target", "detail"]);
                    for e in quantrac_db::audit::recent(&client, limit).await? {
                        table.rows.push(vec![
                            e.sequence.to_string(),
                            e.at.to_rfc3339(),
                            e.actor,
                            e.action,
                            e.target,
                            e.detail,
                        ]);
                    }
                    table.print(args.output, &mut out)?;
                }
            }
            return Ok(());
        }
        Command::Token {
            database_url,
            action,
        } => {
            let mut client =
                quantrac_db::connect(&database_url, &quantrac_db::ConnectOptions::default())
                    .await?;
            match action {
                TokenAction::Issue {
                    identity,
                    role,
                    expires,
                } => {
                    let role: Role = role.parse()?;
                    let until = Utc::now() + chrono::Duration::from_std(*expires)?;
                    let issued =
                        quantrac_db::access::issue(&client, &identity, role, until).await?;
                    quantrac_db::audit::append(
                        &mut client,
                        &operator(),
                        "token_issue",
                        &issued.prefix,
                        &serde_json::json!({ "identity": identity, "role": role.as_str(), "expires_at": issued.expires_at }),
                    )
                    .await?;
                    eprintln!(
                        "token {} for {identity} ({role}), valid until {}; shown once, keep it secret:",
                        issued.prefix, issued.expires_at
                    );
                    writeln!(out, "{}", issued.secret)?;
                }
                TokenAction::Revoke { prefix } => {
                    if !quantrac_db::access::revoke(&client, &prefix).await? {
                        bail!("no active token {prefix}");
                    }
                    quantrac_db::audit::append(
                        &mut client,
                        &operator(),
                        "token_revoke",
                        &prefix,
                        &serde_json::json!({}),
                    )
                    .await?;
                    eprintln!("token {prefix} revoked");
                }
                TokenAction::List => {
                    let mut table = Table::new(&[
                        "prefix", "identity", "role", "created", "expires", "revoked",
                    ]);
                    for k in quantrac_db::access::list(&client).await? {
                        table.rows.push(vec![
                            k.prefix,
                            k.identity,
                            k.role,
                            k.created_at.to_rfc3339(),
                            k.expires_at.to_rfc3339(),
                            k.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default(),
                        ]);
                    }
                    table.print(args.output, &mut out)?;
                }
            }
            return Ok(());
        }
        Command::StationSecret { station } => {
            let secret = quantrac_plumbing::secret::generate();
            let hash = quantrac_plumbing::secret::hash(&secret)?;
            let mqtt_hash = quantrac_plumbing::secret::mosquitto_hash(&secret);
            eprintln!(
                "station {station}: configure its logger with the secret below (HJ 212 PW, or the TCP auth frame); \
                 it is shown once and not stored"
            );
            writeln!(out, "{secret}")?;
            eprintln!(
                "and put this line in its [[stations]] entry of the registry (ingest reloads it):"
            );
            eprintln!("secret_hash = \"{hash}\"");
            eprintln!("mqtt_hash = \"{mqtt_hash}\"");
            eprintln!(
                "(mqtt_hash gives it an MQTT account, its id and this secret, once quantrac-mqtt-auth regenerates the broker's files)"
            );
            return Ok(());
        }
        Command::Migrate { database_url } => {
            let client =
                quantrac_db::connect(&database_url, &quantrac_db::ConnectOptions::default())
                    .await?;
            let info =
                quantrac_db::schema::migrate(&client, &quantrac_db::SchemaOptions::default())
                    .await?;
            eprintln!(
                "schema up to date ({} applied, timescale: {})",
                info.applied, info.timescale
            );
            return Ok(());
        }
        _ => {}
    }
    let resolve = matches!(args.command, Command::Resolve { .. });
    match args.command {
        Command::Ack { alert_id, note } | Command::Resolve { alert_id, note } => {
            let mut c = AlertServiceClient::new(
                channel(&args.alerting_url, args.ca_file.as_deref()).await?,
            );
            // The officer is the token's identity; the field is ignored.
            let officer = String::new();
            let answer = if resolve {
                let r = ResolveAlertRequest {
                    alert_id,
                    officer,
                    note,
                };
                c.resolve(authed(t, r)?).await
            } else {
                let r = AcknowledgeAlertRequest {
                    alert_id,
                    officer,
                    note,
                };
                c.acknowledge(authed(t, r)?).await
            };
            let a = answer.map_err(status)?.into_inner();
            alerts_table(&[a]).print(args.output, &mut out)?;
            return Ok(());
        }
        _ => {}
    }
    let mut q = QueryServiceClient::new(channel(&args.query_url, args.ca_file.as_deref()).await?)
        .max_decoding_message_size(64 << 20);
    match args.command {
        Command::Invalidate {
            station,
            parameters,
            from,
            to,
            reason,
        } => {
            let r = q
                .invalidate_readings(authed(
                    t,
                    InvalidateReadingsRequest {
                        station_id: station.clone(),
                        parameters,
                        range: Some(range(&Span { from, to })?),
                        reason,
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let mut table = Table::new(&["station", "invalidated", "audit_entry"]);
            table.rows.push(vec![
                station,
                r.invalidated.to_string(),
                r.audit_sequence.to_string(),
            ]);
            table.print(args.output, &mut out)?;
        }
        Command::Stations { zone } => {
            let r = q
                .list_stations(authed(
                    t,
                    ListStationsRequest {
                        industrial_zone: zone,
                        at: None,
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let mut table = Table::new(&["station", "zone", "kind", "parameters", "limits"]);
            for s in r.stations {
                let st = s.station.unwrap_or_default();
                table.rows.push(vec![
                    st.id.clone(),
                    st.industrial_zone.clone(),
                    if st.kind == StationKind::Stack as i32 {
                        "stack"
                    } else {
                        "wastewater"
                    }
                    .into(),
                    st.parameters
                        .iter()
                        .map(|p| p.code.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    s.limits
                        .iter()
                        .map(|l| {
                            format!(
                                "{}<={}",
                                l.parameter,
                                l.limit_max.map(num).unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                ]);
            }
            table.print(args.output, &mut out)?;
        }
        Command::Series {
            station,
            parameters,
            span,
            flagged,
        } => {
            let mut table = Table::new(&["parameter", "measured_at", "value", "unit", "qc_flag"]);
            let mut stream = q
                .stream_series(authed(
                    t,
                    GetSeriesRequest {
                        station_id: station,
                        parameters,
                        range: Some(range(&span)?),
                        page_size: 5_000,
                        page_token: String::new(),
                        include_flagged: flagged,
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            while let Some(page) = stream.message().await.map_err(status)? {
                table.rows.extend(page.points.iter().map(series_row));
            }
            table.print(args.output, &mut out)?;
        }
        Command::Agg {
            station,
            parameter,
            span,
            interval,
            functions,
            fill,
            max_gap,
        } => {
            let r = q
                .get_aggregates(authed(
                    t,
                    GetAggregatesRequest {
                        station_id: station,
                        parameter,
                        range: Some(range(&span)?),
                        interval,
                        functions: functions.split(',').map(|f| f.trim().to_string()).collect(),
                        fill: match fill {
                            FillArg::None => Fill::None,
                            FillArg::Null => Fill::Null,
                            FillArg::Locf => Fill::Locf,
                            FillArg::Linear => Fill::Linear,
                        } as i32,
                        max_gap_buckets: max_gap,
                        include_flagged: false,
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let mut headers = vec!["bucket".to_string()];
            headers.extend(r.functions.iter().cloned());
            headers.extend(["readings", "coverage", "note"].map(String::from));
            let mut table = Table::new(&headers);
            for b in &r.buckets {
                let mut row = vec![show_time(b.start.as_ref())];
                row.extend(b.values.iter().map(|v| num(*v)));
                let mut note = Vec::new();
                if b.lower_bound {
                    note.push("lower bound (analyser saturated)");
                }
                if b.filled {
                    note.push("filled");
                }
                row.extend([
                    b.count.to_string(),
                    format!("{:.0}%", b.coverage * 100.0),
                    note.join("; "),
                ]);
                table.rows.push(row);
            }
            eprintln!("unit: {}", r.unit);
            table.print(args.output, &mut out)?;
        }
        Command::Latest { zone, stations } => {
            let r = q
                .get_latest(authed(
                    t,
                    GetLatestRequest {
                        industrial_zone: zone,
                        station_ids: stations,
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let mut table = Table::new(&[
                "station",
                "parameter",
                "measured_at",
                "value",
                "unit",
                "qc_flag",
            ]);
            for (s, p) in r.station_ids.iter().zip(&r.points) {
                let mut row = vec![s.clone()];
                row.extend(series_row(p));
                table.rows.push(row);
            }
            table.print(args.output, &mut out)?;
        }
        Command::Compliance {
            station,
            span,
            averaging,
            min_coverage,
        } => {
            let r = q
                .get_compliance(authed(
                    t,
                    GetComplianceRequest {
                        station_id: station,
                        range: Some(range(&span)?),
                        averaging,
                        min_coverage,
                        parameters: vec![],
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let mut table = Table::new(&[
                "parameter",
                "limits",
                "periods",
                "judged",
                "exceeding",
                "worst",
                "completeness",
                "excluded",
            ]);
            for p in &r.parameters {
                let worst = p
                    .exceedances
                    .iter()
                    .map(|e| e.multiple)
                    .fold(f64::NAN, f64::max);
                table.rows.push(vec![
                    p.parameter.clone(),
                    p.limits
                        .iter()
                        .map(|l| {
                            format!(
                                "{} from {}",
                                l.limit_max.map(num).unwrap_or("-".into()),
                                show_time(l.from.as_ref())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    p.periods.to_string(),
                    p.periods_judged.to_string(),
                    p.periods_exceeding.to_string(),
                    if worst.is_nan() {
                        String::new()
                    } else {
                        format!("{worst:.2}x")
                    },
                    format!("{:.1}%", p.completeness * 100.0),
                    p.excluded
                        .iter()
                        .map(|x| format!("{} {}", x.readings, x.qc_flag))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]);
            }
            eprintln!("averaging: {}", r.averaging);
            table.print(args.output, &mut out)?;
            for v in &r.daily_volumes {
                eprintln!(
                    "{}: {:.0} m3 (flow coverage {:.0}%)",
                    v.date,
                    v.cubic_metres,
                    v.coverage * 100.0
                );
            }
        }
        Command::Rejected { station, span } => {
            let mut table = Table::new(&[
                "rejected_at",
                "reason",
                "parameter",
                "measured_at",
                "detail",
            ]);
            let mut token = String::new();
            loop {
                let r = q
                    .list_rejected(authed(
                        t,
                        ListRejectedRequest {
                            station_id: station.clone(),
                            range: Some(range(&span)?),
                            page_size: 1_000,
                            page_token: token,
                        },
                    )?)
                    .await
                    .map_err(status)?
                    .into_inner();
                for x in &r.readings {
                    table.rows.push(vec![
                        show_time(x.rejected_at.as_ref()),
                        x.reason.clone(),
                        x.parameter.clone(),
                        show_time(x.measured_at.as_ref()),
                        x.detail.clone(),
                    ]);
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            table.print(args.output, &mut out)?;
        }
        Command::Events { station, span } => {
            let mut table = Table::new(&["at", "kind", "until", "code", "station_time", "detail"]);
            let mut token = String::new();
            loop {
                let r = q
                    .list_station_events(authed(
                        t,
                        ListStationEventsRequest {
                            station_id: station.clone(),
                            range: Some(range(&span)?),
                            page_size: 1_000,
                            page_token: token,
                        },
                    )?)
                    .await
                    .map_err(status)?
                    .into_inner();
                for e in &r.events {
                    table.rows.push(vec![
                        show_time(e.at.as_ref()),
                        e.kind.clone(),
                        show_time(e.end.as_ref()),
                        e.code.clone(),
                        e.station_time.to_string(),
                        e.detail.clone(),
                    ]);
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            table.print(args.output, &mut out)?;
        }
        Command::Alerts {
            zone,
            station,
            states,
            limit,
        } => {
            let states = states
                .iter()
                .map(|s| match s.as_str() {
                    "open" => Ok(AlertState::Open as i32),
                    "acknowledged" => Ok(AlertState::Acknowledged as i32),
                    "resolved" => Ok(AlertState::Resolved as i32),
                    other => Err(anyhow!("state {other:?}: open, acknowledged or resolved")),
                })
                .collect::<Result<Vec<_>>>()?;
            let r = q
                .list_alerts(authed(
                    t,
                    ListAlertsRequest {
                        industrial_zone: zone,
                        station_id: station,
                        states,
                        page_size: limit,
                        ..Default::default()
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            alerts_table(&r.alerts).print(args.output, &mut out)?;
            if !r.next_page_token.is_empty() {
                eprintln!("more alerts: raise --limit");
            }
        }
        Command::Export {
            station,
            parameters,
            span,
            file,
            flagged,
            format,
        } => {
            let out: Box<dyn Write + Send> = if file == "-" {
                Box::new(std::io::BufWriter::new(std::io::stdout()))
            } else {
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(&file).with_context(|| format!("creating {file}"))?,
                ))
            };
            let mut sink = match format {
                ExportFormat::Csv => Sink::csv(out)?,
                ExportFormat::Parquet if file == "-" => {
                    bail!("--format parquet needs --file: a Parquet file is not a stream")
                }
                ExportFormat::Parquet => Sink::parquet(out)?,
            };
            let mut stream = q
                .stream_series(authed(
                    t,
                    GetSeriesRequest {
                        station_id: station.clone(),
                        parameters,
                        range: Some(range(&span)?),
                        page_size: 10_000,
                        page_token: String::new(),
                        include_flagged: flagged,
                    },
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let started = Instant::now();
            let mut rows = 0u64;
            let mut shown = Instant::now();
            while let Some(page) = stream.message().await.map_err(status)? {
                sink.write(&station, &page.points)?;
                rows += page.points.len() as u64;
                if shown.elapsed() > Duration::from_secs(1) {
                    eprint!(
                        "\r{rows} rows, {:.0} rows/s",
                        rows as f64 / started.elapsed().as_secs_f64()
                    );
                    shown = Instant::now();
                }
            }
            sink.finish()?;
            eprintln!(
                "\r{rows} rows exported in {:.1} s{}",
                started.elapsed().as_secs_f64(),
                if file == "-" {
                    String::new()
                } else {
                    format!(" to {file}")
                }
            );
        }
        _ => {}
    }
    Ok(())
}

fn alerts_table(alerts: &[Alert]) -> Table {
    let mut table = Table::new(&[
        "id",
        "state",
        "severity",
        "rule",
        "station",
        "parameter",
        "observed",
        "limit",
        "opened",
        "by",
    ]);
    for a in alerts {
        table.rows.push(vec![
            a.id.clone(),
            AlertState::try_from(a.state)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("ALERT_STATE_")
                        .to_lowercase()
                })
                .unwrap_or_default(),
            AlertSeverity::try_from(a.severity)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("ALERT_SEVERITY_")
                        .to_lowercase()
                })
                .unwrap_or_default(),
            a.rule.clone(),
            a.station_id.clone(),
            a.parameter.clone(),
            num(a.observed_value),
            num(a.limit_value),
            show_time(a.opened_at.as_ref()),
            a.acknowledged_by.clone(),
        ]);
    }
    table
}
