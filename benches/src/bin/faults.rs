//! `faults`: the whole pipeline under injected faults, and whether it kept
//! its promises. Simulated stations, each with its own TCP connection, MQTT
//! session or FTP uploads, send readings at a fixed pace to
//! `quantrac-ingest`, `quantrac-processor` and `quantrac-alerting` (each its
//! own process, with Kafka, Mosquitto and PostgreSQL from
//! `deploy/services.sh`), on a fresh database and fresh topics. A station
//! behaves like a real logger: it proves itself with its secret (from the
//! registry, as in production), keeps every sample until it is acknowledged
//! (a TCP reply `ok`, `OK n` or CN=9014, an MQTT PUBACK, an FTP 226) and
//! sends it again after a reconnection, a refusal or a missing answer.
//!
//! The fleet speaks every protocol ingest receives: MQTT JSON
//! (`--mqtt-share`), TCP JSON lines, TCP HJ 212-2017 and TCP Circular 10
//! records (the rest, in thirds), and Circular 10 files over FTP (every
//! `--ftp-every`-th station, one file every 10 s). HJ 212 and Circular 10
//! carry measurement times to the second, so their stations keep one
//! sample a second in a burst or an overload.
//!
//! The run is a sequence of phases; in each, one fault is injected a few
//! seconds in while the load goes on (`--fault`, repeatable):
//! `kill -9` of each service (restarted at once), a second alerting
//! instance joining and leaving the consumer group, the webhook endpoint
//! and the mail server down, a restart of Kafka,
//! PostgreSQL or Mosquitto, a `kill -9` of PostgreSQL (every process of
//! the server at once) or of Mosquitto, poison records on the
//! readings topic, an MQTT message over ingest's size limit and one of 10,900
//! lines, 1,100 idle TCP connections, a 10× burst, and 10 s of overload
//! (100 samples a second per MQTT and TCP JSON station: about 10× what the
//! pipeline sustains here).
//!
//! Some stations of every protocol send a COD over the permit every 20 s:
//! each such sample must open exactly one `limit_exceeded` alert.
//!
//! At the end, with the load stopped and every station's samples answered
//! (or given up after `--drain`), every sample is looked for in the
//! database. Per phase: samples and readings sent, acknowledged and stored,
//! lost (acknowledged, not stored) and duplicated; alerts expected, raised,
//! raised twice and missing, and notified (a webhook endpoint in this
//! process, and the test mail server); the time until every station had an answer
//! again after the fault; and each process's peak memory. Per protocol:
//! samples sent, acknowledged and stored, readings lost, alerts. The report
//! goes to `benches/results/faults-<time>.{md,json}`. The exit status is 1
//! when a promise was broken: a reading lost or duplicated, an alert
//! missing, doubled or not notified, a station not answered within
//! `--recover-within`, a protocol with nothing stored, or a service over
//! 200 MB.
//!
//!     scripts/faults.sh                # the full run (about 1 million readings)
//!     scripts/faults.sh --short        # the CI version (about 4 minutes)

mod common;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, FixedOffset, Utc};
use clap::{Parser, ValueEnum};
use common::procs::forget_session;
use quantrac_proto::Sample;
use quantrac_proto::wire::{circular10, hj212, json};
use quantrac_testkit::registry::Outfalls;
use quantrac_testkit::samples::outfall;
use quantrac_testkit::{unique, unique_ident};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "The whole pipeline under injected faults: lost, duplicated, alerts, recovery")]
struct Args {
    /// Faults, one phase each, in order (repeat). Default: all of them.
    #[arg(long = "fault", value_enum)]
    faults: Vec<Fault>,
    /// The CI version: 100 stations, 12 s phases, the faults that need no
    /// Kafka restart, every sample answered within 20 s.
    #[arg(long)]
    short: bool,
    /// Simulated stations, one sample (4 readings) a second each.
    #[arg(long, default_value_t = 500)]
    stations: usize,
    /// Share of the stations on MQTT; the rest (but the FTP ones) use TCP,
    /// in thirds: JSON lines, HJ 212 and Circular 10 records.
    #[arg(long, default_value_t = 0.5)]
    mqtt_share: f64,
    /// Every n-th station (0, n, 2n, …) uploads Circular 10 files by FTP
    /// instead; 0: none.
    #[arg(long, default_value_t = 25)]
    ftp_every: usize,
    /// Where MQTT stations publish: ingest's own MQTT endpoint (PUBACK once
    /// Kafka has the message), or Mosquitto (PUBACK from the broker; ingest
    /// subscribes). The default list of faults has the broker's own faults
    /// only with `broker`.
    #[arg(long, value_enum, default_value = "listener")]
    mqtt_via: MqttVia,
    /// Length of a phase (a fault's injection and its aftermath).
    #[arg(long, default_value = "42s", value_parser = humantime::parse_duration)]
    phase: Duration,
    /// When, in a phase, its fault is injected.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    inject_after: Duration,
    /// The promise: every station answered again within this after a fault.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    recover_within: Duration,
    /// After the load stops, how long stations may wait for their last answers.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Idle TCP connections opened by the `slow-connections` fault: more
    /// than ingest's `tcp.max_connections` (1,024), so that as stations hang
    /// up and dial again, idle connections queued before them take their
    /// slots.
    #[arg(long, default_value_t = 1100)]
    slow_connections: usize,
    /// The cost of the fleet's secret hash (every station proves itself
    /// with its secret on every protocol either way). Default: production's,
    /// `light` with `--short` (a debug build).
    #[arg(long, value_enum)]
    argon2: Option<SecretCost>,
    /// Where the report goes.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum SecretCost {
    /// Argon2id with 1 MiB and one pass (ingest verifies with the
    /// parameters a hash names): about 10 ms a verification in a debug
    /// build, so a restarted ingest has the fleet proved again within a
    /// second.
    Light,
    /// A random secret hashed as `quantrac_plumbing::secret::hash` does for
    /// production (19 MiB, two passes): about 0.4 s a verification in a
    /// debug build on 2 cores, two at a time. (Before ingest looked at the
    /// verified secrets again after waiting for a slot, every connection of
    /// a reconnecting fleet ran its own: 100 stations took about a minute
    /// after each start of ingest in a debug build.)
    Production,
}

/// The light secret of the fleet and its hash (`m=1024,t=1,p=1`, made once
/// with the argon2 crate; a fixed test secret, not a credential of
/// anything).
const LIGHT_SECRET: &str = "faults-fleet-secret";
const LIGHT_HASH: &str = "$argon2id$v=19$m=1024,t=1,p=1$cXVhbnRyYWMtZmF1bHRzIQ$JGMGOh8VVBecI+LC8tjZcIB9jI/pIOnqvqFsr3B2JSY";

/// The fleet's one secret (one hash to make and keep) and its hash for
/// the registry.
fn fleet_secret(cost: SecretCost) -> Result<(Arc<str>, String)> {
    Ok(match cost {
        SecretCost::Light => (LIGHT_SECRET.into(), LIGHT_HASH.to_owned()),
        SecretCost::Production => {
            let secret = quantrac_plumbing::secret::generate();
            let hash = quantrac_plumbing::secret::hash(&secret)?;
            (secret.into(), hash)
        }
    })
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum MqttVia {
    Listener,
    Broker,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Fault {
    /// No fault.
    Baseline,
    KillIngest,
    KillProcessor,
    KillAlerting,
    /// A second alerting instance joins the consumer group (its partitions
    /// move), and 15 s later leaves it (they move back).
    RebalanceAlerting,
    /// The webhook endpoint answers 503 and the mail server is stopped,
    /// for 15 s.
    NotifiersDown,
    RestartKafka,
    RestartPostgres,
    /// `kill -9` of PostgreSQL, its postmaster and every process it
    /// started at once (as an out-of-memory kill or a power cut leaves it),
    /// then started again: crash recovery from the WAL. Transactions
    /// committed without waiting for the WAL flush (`async_commit`) are
    /// lost by the server; the pipeline must notice and redo them.
    KillPostgres,
    RestartMosquitto,
    /// `kill -9` of the broker: what it had acknowledged and not yet written
    /// to its persistence file is at risk.
    KillMosquitto,
    /// Ingest stopped for 5 s, so the broker queues its session's messages,
    /// then `kill -9` of the broker, then both started again: what the
    /// broker had acknowledged to stations and not yet saved is at risk
    /// (Mosquitto saves every `autosave_interval`). Not in the default
    /// list: it measures the broker, not the pipeline.
    KillMosquittoWithBacklog,
    /// Undecodable, empty and out-of-range records on the readings topic.
    Poison,
    /// An MQTT message over ingest's payload limit, and a Circular 10
    /// message of 10,900 lines.
    OversizedMqtt,
    /// `--slow-connections` TCP connections that send nothing.
    SlowConnections,
    /// Every station sends 10 samples a second for 10 s.
    Burst,
    /// Every station sends 100 samples a second for 10 s: with 500
    /// stations, 200,000 readings a second offered, about 10× what the
    /// pipeline sustains on this machine (`e2e`). Stations are slowed,
    /// never refused, and memory stays bounded.
    Overload,
}

impl Fault {
    // Slow connections come after the kills: killing ingest would free
    // their slots, and they stay until the end.
    const SHORT: [Fault; 14] = [
        Fault::Baseline,
        Fault::KillIngest,
        Fault::KillProcessor,
        Fault::KillAlerting,
        Fault::RebalanceAlerting,
        Fault::NotifiersDown,
        Fault::RestartPostgres,
        Fault::KillPostgres,
        Fault::RestartMosquitto,
        Fault::SlowConnections,
        Fault::Poison,
        Fault::OversizedMqtt,
        Fault::Burst,
        Fault::Overload,
    ];
    const FULL: [Fault; 16] = [
        Fault::Baseline,
        Fault::KillIngest,
        Fault::KillProcessor,
        Fault::KillAlerting,
        Fault::RebalanceAlerting,
        Fault::NotifiersDown,
        Fault::RestartKafka,
        Fault::RestartPostgres,
        Fault::KillPostgres,
        Fault::RestartMosquitto,
        Fault::Poison,
        Fault::OversizedMqtt,
        Fault::SlowConnections,
        Fault::Burst,
        Fault::Overload,
        Fault::KillMosquitto,
    ];

    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }
}

/// The promise on each Rust service's resident memory, in MiB (200 MB).
const MEMORY_BOUND_MIB: f64 = 190.7;

/// How a station speaks to ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Protocol {
    /// JSON samples with QoS 1 in a persistent session.
    Mqtt,
    /// A TCP connection of its own.
    Tcp(Dialect),
    /// Circular 10 files, one every 10 s.
    Ftp,
}

/// What a TCP station writes (ingest tells them apart on its one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dialect {
    Json,
    Hj212,
    Circular10,
}

impl Protocol {
    /// In the reports' order.
    const ALL: [Protocol; 5] = [
        Protocol::Mqtt,
        Protocol::Tcp(Dialect::Json),
        Protocol::Tcp(Dialect::Hj212),
        Protocol::Tcp(Dialect::Circular10),
        Protocol::Ftp,
    ];

    /// Station `s`'s: every `ftp_every`-th from 0 uploads by FTP, the
    /// others below `n_mqtt` use MQTT, the rest TCP by `s % 3`. Starting at
    /// 0 and cycling by 3 put alert stations (every 10th) on every protocol.
    fn of(s: usize, n_mqtt: usize, ftp_every: usize) -> Self {
        if ftp_every > 0 && s.is_multiple_of(ftp_every) {
            Protocol::Ftp
        } else if s < n_mqtt {
            Protocol::Mqtt
        } else {
            Protocol::Tcp([Dialect::Json, Dialect::Hj212, Dialect::Circular10][s % 3])
        }
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Mqtt => "MQTT JSON",
            Protocol::Tcp(Dialect::Json) => "TCP JSON",
            Protocol::Tcp(Dialect::Hj212) => "TCP HJ 212",
            Protocol::Tcp(Dialect::Circular10) => "TCP Circular 10",
            Protocol::Ftp => "FTP Circular 10",
        }
    }

    /// HJ 212 and Circular 10 write measurement times to the second: their
    /// stations take one sample a second whatever the pace, or a burst's
    /// samples would share a time and overwrite each other.
    fn whole_seconds(self) -> bool {
        matches!(
            self,
            Protocol::Tcp(Dialect::Hj212 | Dialect::Circular10) | Protocol::Ftp
        )
    }
}

/// Stations per protocol, in [`Protocol::ALL`]'s order.
fn fleet_mix(stations: usize, n_mqtt: usize, ftp_every: usize) -> Vec<(Protocol, usize)> {
    Protocol::ALL
        .iter()
        .map(|p| {
            let n = (0..stations)
                .filter(|s| Protocol::of(*s, n_mqtt, ftp_every) == *p)
                .count();
            (*p, n)
        })
        .collect()
}

/// Readings a second the fleet offers at `pace` samples a second per
/// station (the whole-second ones keep 1).
fn offered(mix: &[(Protocol, usize)], pace: usize) -> usize {
    mix.iter()
        .map(|(p, n)| n * 4 * if p.whole_seconds() { 1 } else { pace })
        .sum()
}

/// One sample (4 readings) a station sent, and what became of it.
#[derive(Debug, Clone)]
struct Sent {
    station: usize,
    protocol: Protocol,
    measured_at: DateTime<Utc>,
    /// The phase in which it was measured.
    phase: usize,
    exceeds: bool,
    /// Milliseconds since the run's start, when first handed to the wire.
    sent_ms: u64,
    acked_ms: Option<u64>,
}

/// Every sample of the run, by id (its index).
#[derive(Debug)]
struct Ledger {
    t0: Instant,
    samples: Mutex<Vec<Sent>>,
    phase: AtomicUsize,
    /// Samples per second per station (1, or 10 in a burst).
    pace: AtomicU32,
    refusals: AtomicUsize,
    /// FTP uploads that failed and were made again.
    ftp_retries: AtomicUsize,
}

impl Ledger {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sent>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new sample of `station`; returns its id.
    fn record(&self, station: &Station, measured_at: DateTime<Utc>, exceeds: bool) -> usize {
        let mut s = self.lock();
        s.push(Sent {
            station: station.index,
            protocol: station.protocol,
            measured_at,
            phase: self.phase.load(Ordering::Relaxed),
            exceeds,
            sent_ms: self.now_ms(),
            acked_ms: None,
        });
        s.len() - 1
    }

    /// Samples first handed to the wire now, later than measured (an FTP
    /// file's): the wait for an answer starts here.
    fn sent(&self, ids: &[usize]) {
        let now = self.now_ms();
        let mut s = self.lock();
        for id in ids {
            if let Some(x) = s.get_mut(*id) {
                x.sent_ms = now;
            }
        }
    }

    fn acked(&self, id: usize) {
        let now = self.now_ms();
        if let Some(s) = self.lock().get_mut(id) {
            s.acked_ms.get_or_insert(now);
        }
    }
}

/// One station's clock: the slot of its next sample, one a second (or
/// faster in a burst), measured when it is due: measurement times keep
/// pace with the wall clock whatever the rate (a station measuring ahead of
/// it would be refused as `future_timestamp`).
struct Clock {
    at_ms: u64,
    next: tokio::time::Instant,
    /// The previous sample's measurement time.
    prev_ms: Option<u64>,
}

/// A sample's measurement time in ms after the run's start, and the time
/// to the next.
#[derive(Debug, Clone, Copy)]
struct Slot {
    at_ms: u64,
    /// Whether no earlier sample of this station fell in the same second.
    first_in_second: bool,
}

impl Clock {
    /// Starting within the next second, at a point that depends on the
    /// station, so the fleet does not send in step.
    fn staggered(station: usize) -> Self {
        let offset = Duration::from_millis((station as u64 * 7919) % 1000);
        Clock {
            at_ms: 0,
            next: tokio::time::Instant::now() + offset,
            prev_ms: None,
        }
    }

    async fn tick(&mut self, pace: u32) -> Slot {
        tokio::time::sleep_until(self.next).await;
        let step_ms = 1000 / u64::from(pace.max(1));
        let slot = Slot {
            at_ms: self.at_ms,
            first_in_second: self.prev_ms.is_none_or(|p| p / 1000 != self.at_ms / 1000),
        };
        self.prev_ms = Some(self.at_ms);
        self.next += Duration::from_millis(step_ms);
        self.at_ms += step_ms;
        slot
    }
}

/// What every simulated station has, whatever its protocol.
struct Station {
    index: usize,
    name: String,
    protocol: Protocol,
    /// Its secret; the registry holds its hash, and ingest checks it on
    /// every protocol, as in production.
    secret: Arc<str>,
    /// Sends a COD over its permit every 20 s.
    alerts: bool,
    /// Measurement time of its first sample (a whole second).
    start: DateTime<Utc>,
    ledger: Arc<Ledger>,
    /// Stop sampling (then drain).
    stop: CancellationToken,
    /// Stop waiting for answers.
    give_up: CancellationToken,
}

impl Station {
    /// Samples a second it takes now.
    fn pace(&self) -> u32 {
        if self.protocol.whole_seconds() {
            1
        } else {
            self.ledger.pace.load(Ordering::Relaxed)
        }
    }

    /// A new sample in `slot`, its COD over the permit every 20 s for the
    /// alert stations; its id and the sample.
    fn sample(
        &self,
        Slot {
            at_ms,
            first_in_second,
        }: Slot,
    ) -> (usize, Sample) {
        let measured_at =
            self.start + chrono::Duration::milliseconds(i64::try_from(at_ms).unwrap_or(i64::MAX));
        // Every 20 s of measurement time whatever the pace (the first sample
        // of that second, also when the pace changed within it: two
        // exceeding samples in a row would be one incident), one incident
        // each; staggered by station, so that every phase has some.
        let exceeds =
            self.alerts && (at_ms / 1000 + self.index as u64) % 20 == 10 && first_in_second;
        let cod = if exceeds { 300.0 } else { 40.0 };
        let id = self.ledger.record(self, measured_at, exceeds);
        (id, outfall(&self.name, measured_at, cod))
    }
}

/// Loggers here keep local time (Viet Nam, UTC+7), as ingest's
/// `hj212.utc_offset` and `circular10.utc_offset` expect by default.
fn local_offset() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("UTC+7")
}

/// A sample as an HJ 212-2017 real-time packet (CN 2011) in the standard's
/// codes from the parameter catalogue (COD is w01018; HJ 212 carries no
/// units), its secret as `PW`, Flag 5 (version 2017, a reply asked for)
/// and, as `QN`, its measurement time: unique per station, and echoed in
/// the reply, which tells which packet it answers.
fn hj212_packet(sample: &Sample, secret: &str) -> hj212::Packet {
    use quantrac_proto::domain::{StationKind, parameter_by_code};
    let mut coded = sample.clone();
    for v in &mut coded.values {
        if let Some(p) = parameter_by_code(&v.parameter, StationKind::Wastewater) {
            v.parameter = p.hj212_code.to_owned();
        }
        v.unit.clear();
    }
    hj212::Packet::from_sample(
        &coded,
        "2011",
        "32",
        secret,
        5,
        sample.measured_at,
        local_offset(),
    )
}

/// A Circular 10 file name for `station`'s sample at `at`:
/// `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt`, local time.
fn circular10_name(station: &str, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&local_offset()).naive_local();
    circular10::file_name("HN", "FAULTS", station, local)
}

/// A sample as a Circular 10 record on TCP: its file name line, its
/// parameter lines, an empty line.
fn circular10_record(sample: &Sample) -> Vec<u8> {
    let mut out = circular10_name(&sample.station_id, sample.measured_at).into_bytes();
    out.extend_from_slice(b"\r\n");
    out.extend(circular10::encode_record(sample, local_offset()));
    out.extend_from_slice(b"\r\n");
    out
}

/// A frame a TCP station sends, and what names it in its answer (HJ 212's
/// `QN`; the other dialects' answers name nothing and come in order).
struct Frame {
    id: usize,
    bytes: Vec<u8>,
    key: Option<String>,
}

/// Ingest's answer to a data frame: acknowledged or refused.
struct Answer {
    ok: bool,
    key: Option<String>,
}

impl Dialect {
    fn frame(self, id: usize, sample: &Sample, secret: &str) -> Frame {
        match self {
            Dialect::Json => {
                let mut bytes = json::encode(sample);
                bytes.push(b'\n');
                Frame {
                    id,
                    bytes,
                    key: None,
                }
            }
            Dialect::Hj212 => {
                let packet = hj212_packet(sample, secret);
                Frame {
                    id,
                    bytes: hj212::encode(&packet),
                    key: Some(packet.qn),
                }
            }
            Dialect::Circular10 => Frame {
                id,
                bytes: circular10_record(sample),
                key: None,
            },
        }
    }

    /// The frame that proves a connection is the station's, sent first on
    /// each (HJ 212 carries the secret in every packet instead).
    fn auth(self, station: &str, secret: &str) -> Option<Vec<u8>> {
        match self {
            Dialect::Json => {
                let frame = serde_json::json!({ "auth": { "station": station, "secret": secret } });
                Some(format!("{frame}\n").into_bytes())
            }
            Dialect::Circular10 => Some(format!("AUTH {station} {secret}\n").into_bytes()),
            Dialect::Hj212 => None,
        }
    }

    fn auth_accepted(self, reply: &str) -> bool {
        match self {
            Dialect::Json => reply.contains("\"ok\":true"),
            Dialect::Circular10 | Dialect::Hj212 => reply.starts_with("OK AUTH"),
        }
    }

    /// What a reply line says; `None` for one that answers no data frame.
    fn answer(self, reply: &str) -> Option<Answer> {
        match self {
            Dialect::Json => Some(Answer {
                ok: reply.contains("\"ok\":true"),
                key: None,
            }),
            Dialect::Circular10 => Some(Answer {
                ok: reply.starts_with("OK "),
                key: None,
            }),
            Dialect::Hj212 => {
                let p = hj212::decode(reply.as_bytes()).ok()?;
                let ok = match p.cn.as_str() {
                    hj212::CN_DATA_RESPONSE => true,
                    hj212::CN_REQUEST_RESPONSE => false,
                    _ => return None,
                };
                Some(Answer {
                    ok,
                    key: Some(p.qn),
                })
            }
        }
    }
}

/// A TCP station's frames not yet acknowledged.
#[derive(Default)]
struct Outbox {
    /// Oldest first; the first `written` of them were sent on the current
    /// connection (the rest came while it was closing).
    pending: VecDeque<Frame>,
    written: usize,
    /// Refused or never answered: sent again a second later.
    refused: VecDeque<Frame>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.refused.is_empty()
    }

    /// On a new connection: everything unacknowledged, to write at once.
    fn redial(&mut self) -> Vec<u8> {
        self.pending.extend(self.refused.drain(..));
        self.written = self.pending.len();
        self.pending.iter().flat_map(|f| f.bytes.clone()).collect()
    }

    /// A new frame; its bytes when it is to be written now.
    fn push(&mut self, frame: Frame, write: bool) -> Option<Vec<u8>> {
        let bytes = write.then(|| frame.bytes.clone());
        self.written += usize::from(write);
        self.pending.push_back(frame);
        bytes
    }

    /// The refused frames again, behind the written ones (nothing unwritten
    /// is queued while the connection is not closing).
    fn retry(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(f) = self.refused.pop_front() {
            out.extend_from_slice(&f.bytes);
            self.pending.push_back(f);
            self.written += 1;
        }
        out
    }

    /// Settles the frame `answer` is for. Replies keep the frames' order:
    /// frames written before it and not answered never will be on this
    /// connection (an HJ 212 packet Kafka did not take gets no reply), so
    /// they are sent again too.
    fn answered(&mut self, ledger: &Ledger, answer: Answer) {
        let at = match &answer.key {
            None => 0,
            Some(k) => match self
                .pending
                .iter()
                .take(self.written)
                .position(|f| f.key.as_ref() == Some(k))
            {
                Some(at) => at,
                None => return,
            },
        };
        if at >= self.written {
            return;
        }
        let unanswered: Vec<Frame> = self.pending.drain(..at).collect();
        self.refused.extend(unanswered);
        self.written -= at + 1;
        let Some(frame) = self.pending.pop_front() else {
            return;
        };
        if answer.ok {
            ledger.acked(frame.id);
        } else {
            ledger.refusals.fetch_add(1, Ordering::Relaxed);
            self.refused.push_back(frame);
        }
    }
}

/// A TCP connection's replies (one a line) and its writing half.
type Conn = (tokio::io::Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf);

/// How long a station waits for its auth frame's answer: after a restart
/// of ingest the whole fleet proves itself again, an Argon2 verification
/// each, two at a time.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// A logger's reply timeout (HJ 212's `OverTime`): an HJ 212 packet Kafka
/// did not take gets no reply at all, so a connection silent this long
/// with packets unanswered is hung up and the packets sent again.
const HJ212_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Dials ingest and, in a dialect with auth frames, proves the station's
/// identity first, waiting for the answer, so that every later reply
/// answers a data frame.
async fn dial(addr: std::net::SocketAddr, dialect: Dialect, st: &Station) -> Option<Conn> {
    let conn = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let (rd, mut wr) = conn.into_split();
    let mut replies = BufReader::new(rd).lines();
    if let Some(auth) = dialect.auth(&st.name, &st.secret) {
        wr.write_all(&auth).await.ok()?;
        let reply = tokio::time::timeout(AUTH_TIMEOUT, replies.next_line())
            .await
            .ok()?
            .ok()??;
        if !dialect.auth_accepted(&reply) {
            return None;
        }
    }
    Some((replies, wr))
}

/// A station over TCP, in one dialect: one reply per frame, in order (an
/// HJ 212 packet may get none). Like many loggers it hangs up after a
/// while (every 10 to 20 samples, once everything sent is answered) and
/// dials again. Unanswered frames are sent again on the next connection; a
/// refused one a second later.
async fn tcp_station(addr: std::net::SocketAddr, dialect: Dialect, st: Station) {
    // Staggered, so that some station dials in every second.
    let reconnect_every = 10 + (st.index % 11) as u32;
    let mut out = Outbox::default();
    let mut clock = Clock::staggered(st.index);
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    let done =
        |out: &Outbox| st.give_up.is_cancelled() || (st.stop.is_cancelled() && out.is_empty());
    'connection: loop {
        if done(&out) {
            return;
        }
        let Some((mut replies, mut wr)) = dial(addr, dialect, &st).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if wr.write_all(&out.redial()).await.is_err() {
            continue;
        }
        let (mut sent_here, mut closing) = (0u32, false);
        // Since when ingest has been silent with frames unanswered: the
        // last reply, or the write that made it owe one.
        let mut heard = tokio::time::Instant::now();
        loop {
            if done(&out) {
                return;
            }
            if closing && out.written == 0 {
                continue 'connection;
            }
            tokio::select! {
                () = st.give_up.cancelled() => return,
                slot = clock.tick(st.pace()), if !st.stop.is_cancelled() => {
                    let (id, sample) = st.sample(slot);
                    if out.written == 0 {
                        heard = tokio::time::Instant::now();
                    }
                    if let Some(bytes) = out.push(dialect.frame(id, &sample, &st.secret), !closing) {
                        if wr.write_all(&bytes).await.is_err() {
                            continue 'connection;
                        }
                        sent_here += 1;
                        closing = sent_here >= reconnect_every;
                    }
                }
                _ = retry.tick(), if !out.refused.is_empty() && !closing => {
                    if out.written == 0 {
                        heard = tokio::time::Instant::now();
                    }
                    if wr.write_all(&out.retry()).await.is_err() {
                        continue 'connection;
                    }
                }
                () = tokio::time::sleep_until(heard + HJ212_REPLY_TIMEOUT),
                    if dialect == Dialect::Hj212 && out.written > 0 => continue 'connection,
                reply = replies.next_line() => match reply {
                    Ok(Some(text)) => {
                        heard = tokio::time::Instant::now();
                        if let Some(answer) = dialect.answer(&text) {
                            out.answered(&st.ledger, answer);
                        }
                    }
                    Ok(None) | Err(_) => continue 'connection,
                },
            }
        }
    }
}

/// A station with its own persistent MQTT session (QoS 1). rumqttc sends
/// unacknowledged messages again after a reconnection; a sample counts as
/// acknowledged at its PUBACK.
async fn mqtt_station(broker: (String, u16, String, String), client_id: String, st: Station) {
    let (host, port, user, password) = broker;
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_credentials(user, password)
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5))
        .set_inflight(100);
    let (client, mut events) = rumqttc::AsyncClient::new(o, 16);
    let topic = format!("stations/{}/readings", st.name);
    // Published, waiting for rumqttc to give them a packet id.
    let mut queued: VecDeque<usize> = VecDeque::new();
    // Not yet handed to rumqttc (its request queue was full).
    let mut backlog: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    let mut in_flight: HashMap<u16, usize> = HashMap::new();
    let mut clock = Clock::staggered(st.index);
    loop {
        if st.give_up.is_cancelled()
            || (st.stop.is_cancelled()
                && backlog.is_empty()
                && queued.is_empty()
                && in_flight.is_empty())
        {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
            return;
        }
        tokio::select! {
            () = st.give_up.cancelled() => {}
            slot = clock.tick(st.pace()), if !st.stop.is_cancelled() => {
                let (id, sample) = st.sample(slot);
                backlog.push_back((id, json::encode(&sample)));
            }
            event = events.poll() => match event {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    // A resend keeps its packet id; a new one takes the next
                    // queued sample.
                    if let std::collections::hash_map::Entry::Vacant(e) = in_flight.entry(pkid)
                        && let Some(id) = queued.pop_front()
                    {
                        e.insert(id);
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                    if let Some(id) = in_flight.remove(&ack.pkid) {
                        st.ledger.acked(id);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            },
        }
        while let Some((id, line)) = backlog.pop_front() {
            if client
                .try_publish(&topic, rumqttc::QoS::AtLeastOnce, false, line.clone())
                .is_ok()
            {
                queued.push_back(id);
            } else {
                backlog.push_front((id, line));
                break;
            }
        }
    }
}

/// Samples in one FTP file: a logger writes one every 10 s.
const FTP_FILE_SAMPLES: usize = 10;

/// How long an FTP upload may take before the station gives it up and
/// uploads the file again.
const FTP_UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A Circular 10 file an FTP station has written, and its samples' ids.
struct FtpFile {
    name: String,
    body: Vec<u8>,
    ids: Vec<usize>,
}

/// A station that uploads a Circular 10 file every 10 s with its samples of
/// those 10 s, named for the first one's time, as the Circular prescribes.
/// The file is acknowledged whole by the upload's 226; a refusal or a
/// broken transfer: the same file again a second later.
async fn ftp_station(addr: std::net::SocketAddr, st: Station) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::join!(ftp_writer(&st, tx), ftp_uploader(addr, &st, rx));
}

/// Takes a sample a second and hands each full file to the uploader; on
/// stop, the last samples in a shorter file. Dropping `files` ends the
/// uploader once it has uploaded them all.
async fn ftp_writer(st: &Station, files: tokio::sync::mpsc::UnboundedSender<FtpFile>) {
    let mut clock = Clock::staggered(st.index);
    let mut file: Option<FtpFile> = None;
    loop {
        tokio::select! {
            () = st.stop.cancelled() => break,
            slot = clock.tick(st.pace()) => {
                let (id, sample) = st.sample(slot);
                let f = file.get_or_insert_with(|| FtpFile {
                    name: circular10_name(&st.name, sample.measured_at),
                    body: Vec::new(),
                    ids: Vec::new(),
                });
                f.body.extend(circular10::encode_record(&sample, local_offset()));
                f.ids.push(id);
                let full = f.ids.len() >= FTP_FILE_SAMPLES;
                if full && let Some(f) = file.take() {
                    let _ = files.send(f);
                }
            }
        }
    }
    if let Some(f) = file {
        let _ = files.send(f);
    }
}

/// Uploads each file until it is answered 226, oldest first.
async fn ftp_uploader(
    addr: std::net::SocketAddr,
    st: &Station,
    mut files: tokio::sync::mpsc::UnboundedReceiver<FtpFile>,
) {
    loop {
        let f = tokio::select! {
            () = st.give_up.cancelled() => return,
            f = files.recv() => match f {
                Some(f) => f,
                None => return,
            },
        };
        st.ledger.sent(&f.ids);
        loop {
            let upload =
                quantrac_testkit::ftp::upload(addr, &st.name, &st.secret, &f.name, &f.body);
            let answered = tokio::select! {
                () = st.give_up.cancelled() => return,
                r = tokio::time::timeout(FTP_UPLOAD_TIMEOUT, upload) => matches!(r, Ok(Ok(_))),
            };
            if answered {
                for id in &f.ids {
                    st.ledger.acked(*id);
                }
                break;
            }
            st.ledger.ftp_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// What one phase saw.
#[derive(Debug, Default, serde::Serialize)]
struct PhaseReport {
    fault: String,
    /// Seconds after the run's start.
    injected_at_s: f64,
    ended_at_s: f64,
    /// How long the injection itself took (a restart until the service was up).
    injection_s: f64,
    note: String,
    samples_sent: usize,
    readings_sent: usize,
    readings_acked: usize,
    readings_stored: usize,
    readings_lost: usize,
    alerts_expected: usize,
    alerts_raised: usize,
    alerts_raised_twice: usize,
    alerts_missing: usize,
    /// Raised alerts whose opening reached the webhook endpoint, and the
    /// mail server (at least once).
    alerts_notified_webhook: usize,
    alerts_notified_mail: usize,
    /// Raised alerts with a change the webhook endpoint received twice
    /// (delivery is at least once: a crash between the POST and its
    /// recorded cursor sends it again).
    alerts_webhook_twice: usize,
    /// The longest a sample sent after the injection (in this phase) waited
    /// for its answer.
    recovery_s: Option<f64>,
    stations_not_recovered: usize,
    peak_rss_mib: std::collections::BTreeMap<String, f64>,
}

/// What one protocol's stations saw over the run.
#[derive(Debug, Default, serde::Serialize)]
struct ProtocolReport {
    protocol: &'static str,
    stations: usize,
    samples_sent: usize,
    samples_acked: usize,
    /// Samples with all 4 readings stored.
    samples_stored: usize,
    readings_stored: usize,
    readings_lost: usize,
    alerts_expected: usize,
    /// Expected alerts raised exactly once.
    alerts_raised_once: usize,
}

/// "48 MQTT JSON, 16 TCP JSON, …": the protocols with stations.
fn mix_line(mix: &[(Protocol, usize)]) -> String {
    mix.iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{n} {}", p.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
#[allow(clippy::too_many_lines)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let mut args = Args::parse();
    let argon2 = args.argon2.unwrap_or(if args.short {
        SecretCost::Light
    } else {
        SecretCost::Production
    });
    args.argon2 = Some(argon2);
    if args.short {
        args.stations = args.stations.min(100);
        args.phase = args.phase.min(Duration::from_secs(12));
        args.inject_after = args.inject_after.min(Duration::from_secs(3));
        args.recover_within = args.recover_within.min(Duration::from_secs(20));
    }
    let faults: Vec<Fault> = match (args.faults.is_empty(), args.short) {
        (false, _) => args.faults.clone(),
        (true, true) => Fault::SHORT.to_vec(),
        (true, false) => Fault::FULL.to_vec(),
    };
    // With the listener, no station goes through Mosquitto: its faults
    // would try nothing.
    let broker_fault = |f: &Fault| {
        matches!(
            f,
            Fault::RestartMosquitto | Fault::KillMosquitto | Fault::KillMosquittoWithBacklog
        )
    };
    let faults: Vec<Fault> = if args.faults.is_empty() && args.mqtt_via == MqttVia::Listener {
        faults.into_iter().filter(|f| !broker_fault(f)).collect()
    } else {
        faults
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let brokers = quantrac_testkit::env::kafka_brokers();
    let admin_url = quantrac_testkit::env::database_url();
    let mqtt = common::pipeline::MqttAccounts::from_env();
    let mqtt_url = mqtt.url.clone();
    let (station_user, station_password) = mqtt.station.clone();
    let n_mqtt = ((args.stations as f64 * args.mqtt_share).round() as usize).min(args.stations);
    let mix = fleet_mix(args.stations, n_mqtt, args.ftp_every);
    println!("faults: {}", common::machine_line());
    println!(
        "{} stations ({}; MQTT to the {}), {} phases of {:?}: {}",
        args.stations,
        mix_line(&mix),
        match args.mqtt_via {
            MqttVia::Listener => "MQTT listener",
            MqttVia::Broker => "broker",
        },
        faults.len(),
        args.phase,
        faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Fresh database, topics and registry.
    let db_name = unique_ident("faults");
    let db_url = quantrac_testkit::db::create_database(&admin_url, &db_name)
        .await
        .context("CREATE DATABASE")?;
    let base = unique("faults");
    let topics = common::pipeline::Topics::create(&brokers, &base, 6).await?;
    let prefix = unique("F");
    // The hash in every station's registry entry: ingest checks the secret
    // on every protocol, as in production.
    let (secret, hash) = fleet_secret(argon2)?;
    let registry = Outfalls::numbered(&prefix, args.stations)
        .expected_interval("1h")
        .with_lines(&format!("secret_hash = \"{hash}\""))
        .write()?;
    let work = std::env::temp_dir().join(&base);
    std::fs::create_dir_all(&work)?;

    let mut configs =
        common::pipeline::Configs::new("faults", &db_url, &registry, &topics, &brokers, &mqtt)?;
    configs.ingest.auth.registry = Some(registry.clone());
    // The FTP receiver, with passive ports enough for every FTP station
    // uploading at once.
    let ftp_addr = common::procs::free_addr()?;
    if let Some(uploaders) = args.stations.checked_div(args.ftp_every) {
        configs.ingest.ftp.listen = Some(ftp_addr);
        let ports = u16::try_from(uploaders + 8).unwrap_or(64);
        configs.ingest.ftp.passive_ports = quantrac_testkit::ftp::free_ports(ports);
    }
    // Every alert change to a webhook endpoint here and, by mail, to one
    // officer subscribed to everything.
    let webhook = common::notified::Webhook::serve().await?;
    let mail_to = format!("{base}@faults.example.org");
    configs.alerting.webhooks.urls = vec![webhook.url.clone()];
    let email = &mut configs.alerting.email;
    email.smtp_url = quantrac_testkit::env::var("QUANTRAC_SMTP_URL", "smtp://127.0.0.1:12525");
    email.subscriptions = vec![quantrac_alerting::config::Subscription {
        address: mail_to.clone(),
        zones: Vec::new(),
        stations: Vec::new(),
        min_severity: "info".into(),
    }];
    email.facility_rules = Vec::new();
    email.escalation_after = None;
    // MQTT stations publish to ingest's own endpoint (under their station
    // id) or to Mosquitto (the fleet's shared account), and `max_payload`
    // is the limit of the one they use.
    let b = quantrac_ingest::mqtt::broker_address(&mqtt_url).map_err(|e| anyhow::anyhow!(e))?;
    let (mqtt_host, mqtt_port, max_payload) = match args.mqtt_via {
        MqttVia::Listener => {
            let l = &mut configs.ingest.mqtt_listener;
            l.enabled = true;
            l.listen = common::procs::free_addr()?;
            l.sessions_file = work.join("mqtt-sessions");
            // Every simulated station connects from 127.0.0.1.
            l.max_connections_per_address = l.max_connections;
            configs.ingest.mqtt.enabled = false;
            (
                l.listen.ip().to_string(),
                l.listen.port(),
                l.max_packet_bytes,
            )
        }
        MqttVia::Broker => (
            b.host.clone(),
            b.port,
            configs.ingest.mqtt.max_payload_bytes,
        ),
    };
    let mqtt_login = |station: &str| match args.mqtt_via {
        // Ingest's own endpoint: the station id and its secret.
        MqttVia::Listener => (station.to_owned(), secret.to_string()),
        MqttVia::Broker => (station_user.clone(), station_password.clone()),
    };
    let (tcp_addr, ingest_http) = (configs.tcp, configs.ingest.http.listen);
    let common::pipeline::Services {
        mut ingest,
        mut processor,
        mut alerting,
    } = common::pipeline::start(&work, &configs).await?;
    println!("services up; logs and configs in {}", work.display());

    // The fleet: alert stations are every 10th, on every protocol.
    let ledger = Arc::new(Ledger {
        t0: Instant::now(),
        samples: Mutex::new(Vec::new()),
        phase: AtomicUsize::new(0),
        pace: AtomicU32::new(1),
        refusals: AtomicUsize::new(0),
        ftp_retries: AtomicUsize::new(0),
    });
    let stop = CancellationToken::new();
    let give_up = CancellationToken::new();
    let start = DateTime::from_timestamp(Utc::now().timestamp(), 0).context("now")?;
    let mut fleet = Vec::new();
    let mut client_ids = Vec::new();
    for s in 0..args.stations {
        let st = Station {
            index: s,
            name: format!("{prefix}-{s}"),
            protocol: Protocol::of(s, n_mqtt, args.ftp_every),
            secret: Arc::clone(&secret),
            alerts: s % 10 == 0,
            start,
            ledger: Arc::clone(&ledger),
            stop: stop.clone(),
            give_up: give_up.clone(),
        };
        fleet.push(match st.protocol {
            Protocol::Mqtt => {
                let client_id = format!("{base}-{s}");
                client_ids.push(client_id.clone());
                let (user, password) = mqtt_login(&st.name);
                let broker = (mqtt_host.clone(), mqtt_port, user, password);
                tokio::spawn(mqtt_station(broker, client_id, st))
            }
            Protocol::Tcp(dialect) => tokio::spawn(tcp_station(tcp_addr, dialect, st)),
            Protocol::Ftp => tokio::spawn(ftp_station(ftp_addr, st)),
        });
    }

    // Memory: every second, each process's resident size, kept per phase.
    let peaks: Arc<Mutex<Vec<HashMap<String, f64>>>> =
        Arc::new(Mutex::new(vec![HashMap::new(); faults.len()]));
    let pids: Arc<Mutex<Vec<(&'static str, u32)>>> = Arc::new(Mutex::new(vec![
        ("ingest", ingest.pid()),
        ("processor", processor.pid()),
        ("alerting", alerting.pid()),
    ]));
    {
        let (peaks, pids, ledger, stop) = (
            Arc::clone(&peaks),
            Arc::clone(&pids),
            Arc::clone(&ledger),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let phase = ledger.phase.load(Ordering::Relaxed);
                let mut now: Vec<(String, f64)> = common::service_rss_mib()
                    .into_iter()
                    .map(|(s, v)| (format!("{s:?}").to_lowercase(), v))
                    .collect();
                for (name, pid) in pids.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                    now.push(((*name).to_owned(), common::pid_rss_mib(*pid)));
                }
                if let Some(p) = peaks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_mut(phase)
                {
                    for (k, v) in now {
                        let e = p.entry(k).or_insert(0.0);
                        *e = e.max(v);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // The phases.
    let mut reports: Vec<PhaseReport> = Vec::new();
    let mut idle_held: Vec<TcpStream> = Vec::new();
    for (n, fault) in faults.iter().enumerate() {
        ledger.phase.store(n, Ordering::Relaxed);
        let phase_start = Instant::now();
        tokio::time::sleep(args.inject_after).await;
        let injected_ms = ledger.now_ms();
        let began = Instant::now();
        let note = match fault {
            Fault::Baseline => String::new(),
            Fault::KillIngest => {
                ingest.kill9().await;
                ingest.restart().await?;
                String::new()
            }
            Fault::KillProcessor => {
                processor.kill9().await;
                processor.restart().await?;
                String::new()
            }
            Fault::KillAlerting => {
                alerting.kill9().await;
                alerting.restart().await?;
                String::new()
            }
            Fault::RebalanceAlerting => {
                let mut second = configs.alerting.clone();
                second.grpc_listen = common::procs::free_addr()?;
                second.http_listen = common::procs::free_addr()?;
                let config = work.join("alerting-2.toml");
                std::fs::write(&config, toml::to_string(&second)?)?;
                let other = common::procs::Proc::start(
                    "quantrac-alerting",
                    &config,
                    second.http_listen,
                    &work.join("alerting-2.log"),
                )
                .await?;
                pids.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(("alerting-2", other.pid()));
                tokio::time::sleep(Duration::from_secs(15)).await;
                other.stop().await;
                pids.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|(name, _)| *name != "alerting-2");
                "a second alerting instance joined the group, and left it 15 s later".to_owned()
            }
            Fault::NotifiersDown => {
                webhook.set_down(true);
                let stopped = services(&repo, "stop", "smtp").await?;
                tokio::time::sleep(Duration::from_secs(15)).await;
                webhook.set_down(false);
                let started = services(&repo, "start", "smtp").await?;
                format!(
                    "webhook answered 503 and the mail server was down for 15 s ({} POSTs refused; {stopped}, {started})",
                    webhook.refused()
                )
            }
            Fault::RestartKafka => services(&repo, "restart", "kafka").await?,
            Fault::RestartPostgres => services(&repo, "restart", "postgres").await?,
            Fault::KillPostgres => {
                let killed = kill_postgres(&admin_url).await?;
                let started = services(&repo, "start", "postgres").await?;
                format!("killed {killed} PostgreSQL processes; {started}")
            }
            Fault::RestartMosquitto => services(&repo, "restart", "mosquitto").await?,
            Fault::KillMosquitto => {
                let (killed, started) = kill_mosquitto(&repo).await?;
                format!("killed: {killed}; {started}")
            }
            Fault::KillMosquittoWithBacklog => {
                ingest.kill9().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                let (killed, started) = kill_mosquitto(&repo).await?;
                ingest.restart().await?;
                format!("ingest stopped 5 s, then broker killed: {killed}; {started}")
            }
            Fault::Poison => poison(&brokers, &topics.raw).await?,
            Fault::OversizedMqtt => {
                let (user, password) = mqtt_login(&format!("{prefix}-1"));
                oversized(
                    &mqtt_host,
                    mqtt_port,
                    &user,
                    &password,
                    &prefix,
                    max_payload,
                )
                .await?
            }
            Fault::SlowConnections => {
                // Held to the end of the run: an attack does not stop
                // when a phase does.
                let conns = idle_connections(tcp_addr, args.slow_connections).await;
                let held = conns.len();
                idle_held = conns;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let open = common::procs::http_get(ingest_http, "/metrics")
                    .await
                    .map_or(-1.0, |(_, b)| {
                        common::procs::prom_counter(&b, "ingest_tcp_connections")
                    });
                format!("{held} idle connections opened; ingest holds {open} connections")
            }
            Fault::Burst => {
                ledger.pace.store(10, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(10)).await;
                ledger.pace.store(1, Ordering::Relaxed);
                format!(
                    "10 samples/s per MQTT and TCP JSON station for 10 s: {} readings/s offered",
                    common::thousands(offered(&mix, 10) as f64)
                )
            }
            Fault::Overload => {
                ledger.pace.store(100, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(10)).await;
                ledger.pace.store(1, Ordering::Relaxed);
                let to = ledger.now_ms();
                let acked = ledger
                    .lock()
                    .iter()
                    .filter(|s| s.acked_ms.is_some_and(|t| (injected_ms..to).contains(&t)))
                    .count();
                format!(
                    "100 samples/s per MQTT and TCP JSON station for 10 s: {} readings/s offered, {} acknowledged",
                    common::thousands(offered(&mix, 100) as f64),
                    common::thousands(
                        acked as f64 * 4.0 * 1000.0 / (to - injected_ms).max(1) as f64
                    )
                )
            }
        };
        pids.lock().unwrap_or_else(PoisonError::into_inner).splice(
            0..3,
            [
                ("ingest", ingest.pid()),
                ("processor", processor.pid()),
                ("alerting", alerting.pid()),
            ],
        );
        let injection_s = began.elapsed().as_secs_f64();
        println!(
            "phase {n} {}: injected at {:.1} s, took {injection_s:.1} s {note}",
            fault.name(),
            injected_ms as f64 / 1000.0
        );
        let rest = args
            .phase
            .saturating_sub(phase_start.elapsed())
            .max(Duration::from_secs(5));
        tokio::time::sleep(rest).await;
        reports.push(PhaseReport {
            fault: fault.name(),
            injected_at_s: injected_ms as f64 / 1000.0,
            ended_at_s: ledger.now_ms() as f64 / 1000.0,
            injection_s,
            note,
            ..Default::default()
        });
    }

    // Drain: stations stop sampling and wait for their last answers.
    stop.cancel();
    drop(idle_held);
    let drained =
        tokio::time::timeout(args.drain, futures::future::join_all(fleet.iter_mut())).await;
    give_up.cancel();
    for f in fleet.into_iter().filter(|f| !f.is_finished()) {
        let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
    }
    if drained.is_err() {
        println!(
            "some stations still had unanswered samples after {:?}",
            args.drain
        );
    }
    let samples = ledger.lock().clone();
    let acked_readings = samples.iter().filter(|s| s.acked_ms.is_some()).count() as i64 * 4;
    println!(
        "load stopped: {} samples sent, {} acknowledged, {} refusals answered (and resent), {} FTP uploads made again",
        samples.len(),
        acked_readings / 4,
        ledger.refusals.load(Ordering::Relaxed),
        ledger.ftp_retries.load(Ordering::Relaxed)
    );

    // Wait until what was acknowledged is stored, and judged.
    let db = quantrac_testkit::db::connect(&db_url).await;
    let settle = Instant::now();
    let mut last = (-1, Instant::now());
    loop {
        let n = quantrac_testkit::db::count(
            &db,
            &format!("SELECT count(*) FROM readings WHERE station_id LIKE '{prefix}-%'"),
        )
        .await;
        if n >= acked_readings || last.1.elapsed() > Duration::from_secs(30) {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "stored settled after {:.1} s",
        settle.elapsed().as_secs_f64()
    );
    // Alerting judges what is stored later: wait until its consumer group
    // has committed everything on the valid topic (or made no progress
    // for 30 s).
    let judging = Instant::now();
    let mut last = (i64::MAX, Instant::now());
    loop {
        let lag = group_lag(&brokers, &configs.alerting.kafka.group_id, &topics.valid).await;
        if lag == Some(0) || last.1.elapsed() > Duration::from_secs(30) {
            println!(
                "alerting's lag {lag:?} after {:.1} s",
                judging.elapsed().as_secs_f64()
            );
            break;
        }
        if let Some(lag) = lag
            && lag < last.0
        {
            last = (lag, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Look for every sample.
    let mut stored: HashMap<(String, i64), i64> = HashMap::new();
    for r in db
        .query(
            "SELECT station_id, (extract(epoch FROM measured_at) * 1000)::bigint, count(*)::bigint \
             FROM readings WHERE station_id LIKE $1 GROUP BY 1, 2",
            &[&format!("{prefix}-%")],
        )
        .await?
    {
        stored.insert((r.get(0), r.get(1)), r.get(2));
    }
    let duplicated: i64 = db
        .query_one(
            "SELECT count(*) - count(DISTINCT (station_id, parameter, measured_at)) FROM readings",
            &[],
        )
        .await?
        .get(0);
    // The alerts raised, by station and window: their ids.
    let mut raised: HashMap<(String, i64), Vec<String>> = HashMap::new();
    for r in db
        .query(
            "SELECT station_id, (extract(epoch FROM window_start) * 1000)::bigint, id \
             FROM alerts WHERE rule = 'limit_exceeded' AND station_id LIKE $1",
            &[&format!("{prefix}-%")],
        )
        .await?
    {
        raised
            .entry((r.get(0), r.get(1)))
            .or_default()
            .push(r.get(2));
    }
    // Wait until each has reached the webhook and the mailbox (or nothing
    // new arrived for 30 s).
    let ids: Vec<&String> = raised.values().flatten().collect();
    let (mut told, mut last) = ((0, 0), Instant::now());
    let (hooked, mailed) = loop {
        let (hooked, mailed) = (webhook.by_alert(), common::notified::mailed(&mail_to));
        let now = (
            ids.iter().filter(|id| hooked.contains_key(**id)).count(),
            ids.iter().filter(|id| mailed.contains_key(**id)).count(),
        );
        if now == (ids.len(), ids.len()) || last.elapsed() > Duration::from_secs(30) {
            break (hooked, mailed);
        }
        if now != told {
            (told, last) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "notified: {} of {} alerts by webhook, {} by mail",
        ids.iter().filter(|id| hooked.contains_key(**id)).count(),
        ids.len(),
        ids.iter().filter(|id| mailed.contains_key(**id)).count()
    );
    let promise_ms = u64::try_from(args.recover_within.as_millis()).unwrap_or(u64::MAX);
    tally(
        &samples,
        &stored,
        Alerts {
            raised: &raised,
            hooked: &hooked,
            mailed: &mailed,
        },
        &prefix,
        (ledger.now_ms(), promise_ms),
        &mut reports,
    );
    let protocols = by_protocol(&samples, &stored, &raised, &prefix, &mix);
    let peaks = peaks.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for (r, p) in reports.iter_mut().zip(peaks) {
        r.peak_rss_mib = p
            .into_iter()
            .map(|(k, v)| (k, (v * 10.0).round() / 10.0))
            .collect();
    }
    let unexpected_alerts = raised.len().saturating_sub(
        samples
            .iter()
            .filter(|s| s.exceeds && raised.contains_key(&stored_key(&prefix, s)))
            .count(),
    );

    // Stop the services and wipe the stations' broker sessions.
    for p in [ingest, processor, alerting] {
        p.stop().await;
    }
    common::notified::forget_mail(&mail_to);
    if args.mqtt_via == MqttVia::Broker {
        for id in &client_ids {
            forget_session(&mqtt_url, &station_user, &station_password, id).await;
        }
        configs.forget_ingest_session(&mqtt_url).await;
    }

    // Verdict and report.
    let mut broken = Vec::new();
    for r in &reports {
        if r.readings_lost > 0 {
            broken.push(format!("{}: {} readings lost", r.fault, r.readings_lost));
        }
        if r.alerts_missing > 0 || r.alerts_raised_twice > 0 {
            broken.push(format!(
                "{}: {} alerts missing, {} raised twice",
                r.fault, r.alerts_missing, r.alerts_raised_twice
            ));
        }
        if r.alerts_notified_webhook < r.alerts_raised || r.alerts_notified_mail < r.alerts_raised {
            broken.push(format!(
                "{}: of {} alerts raised, {} reached the webhook and {} the mailbox",
                r.fault, r.alerts_raised, r.alerts_notified_webhook, r.alerts_notified_mail
            ));
        }
        if r.stations_not_recovered > 0 {
            broken.push(format!(
                "{}: {} stations waited longer than {:?} for an answer (longest {:.1} s)",
                r.fault,
                r.stations_not_recovered,
                args.recover_within,
                r.recovery_s.unwrap_or_default()
            ));
        }
    }
    // Each Rust service under 200 MB, whatever the load.
    for r in &reports {
        for (name, mib) in &r.peak_rss_mib {
            if ["ingest", "processor", "alerting", "alerting-2"].contains(&name.as_str())
                && *mib > MEMORY_BOUND_MIB
            {
                broken.push(format!(
                    "{}: {name} peaked at {mib:.0} MiB (bound {MEMORY_BOUND_MIB} MiB)",
                    r.fault
                ));
            }
        }
    }
    // Every protocol the fleet speaks got readings through.
    for p in protocols.iter().filter(|p| p.stations > 0) {
        if p.readings_stored == 0 {
            broken.push(format!("no reading of a {} station stored", p.protocol));
        }
    }
    if duplicated != 0 {
        broken.push(format!("{duplicated} duplicate rows"));
    }
    if unexpected_alerts != 0 {
        broken.push(format!(
            "{unexpected_alerts} limit_exceeded alerts for no exceeding sample"
        ));
    }
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let md = markdown(
        &args,
        (&reports, &protocols),
        &broken,
        &work,
        duplicated,
        unexpected_alerts,
    );
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join(format!("faults-{stamp}"));
    std::fs::write(path.with_extension("md"), &md)?;
    std::fs::write(
        path.with_extension("json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": common::machine_line(),
            "stations": args.stations,
            "mqtt_share": args.mqtt_share,
            "ftp_every": args.ftp_every,
            "argon2": argon2,
            "mqtt_via": args.mqtt_via,
            "protocols": protocols,
            "phase_s": args.phase.as_secs_f64(),
            "recover_within_s": args.recover_within.as_secs_f64(),
            "phases": reports,
            "duplicate_rows": duplicated,
            "unexpected_alerts": unexpected_alerts,
            "broken": broken,
        }))?,
    )?;
    println!("{md}");
    println!("report: {}.md and .json", path.display());
    let _ = db.batch_execute("SELECT 1").await;
    common::delete_topics(&brokers, &topics.names()).await;
    if !broken.is_empty() {
        bail!("promises broken: {}", broken.join("; "));
    }
    Ok(())
}

/// The alerts raised (their ids, by station and window) and what reached
/// the webhook endpoint (changes, and changes received twice, per alert)
/// and the mailbox (messages per alert).
struct Alerts<'a> {
    raised: &'a HashMap<(String, i64), Vec<String>>,
    hooked: &'a HashMap<String, (u32, u32)>,
    mailed: &'a HashMap<String, u32>,
}

/// Fills each phase's counts from the samples, what is stored, and the
/// alerts raised.
fn tally(
    samples: &[Sent],
    stored: &HashMap<(String, i64), i64>,
    Alerts {
        raised,
        hooked,
        mailed,
    }: Alerts<'_>,
    prefix: &str,
    (run_end_ms, promise_ms): (u64, u64),
    reports: &mut [PhaseReport],
) {
    for s in samples {
        let Some(r) = reports.get_mut(s.phase) else {
            continue;
        };
        let key = stored_key(prefix, s);
        let rows = stored.get(&key).copied().unwrap_or(0);
        r.samples_sent += 1;
        r.readings_sent += 4;
        r.readings_stored += usize::try_from(rows).unwrap_or(0);
        if s.acked_ms.is_some() {
            r.readings_acked += 4;
            r.readings_lost += usize::try_from(4 - rows.min(4)).unwrap_or(0);
        }
        if s.exceeds && rows > 0 {
            r.alerts_expected += 1;
            let ids = raised.get(&key).map_or(&[][..], Vec::as_slice);
            match ids.len() {
                0 => r.alerts_missing += 1,
                1 => r.alerts_raised += 1,
                _ => {
                    r.alerts_raised += 1;
                    r.alerts_raised_twice += 1;
                }
            }
            if let Some(id) = ids.first() {
                let hook = hooked.get(id).copied().unwrap_or_default();
                r.alerts_notified_webhook += usize::from(hook.0 > 0);
                r.alerts_webhook_twice += usize::from(hook.1 > 0);
                r.alerts_notified_mail += usize::from(mailed.contains_key(id));
            }
        }
    }
    // Recovery: the longest a sample sent between the injection and the
    // phase's end waited for its answer (never answered: until the run's
    // end); a station with a sample that waited longer than the promise did
    // not recover in time.
    for r in reports.iter_mut() {
        let (from, to) = (
            (r.injected_at_s * 1000.0) as u64,
            (r.ended_at_s * 1000.0) as u64,
        );
        let mut worst = 0u64;
        let mut late = std::collections::HashSet::new();
        for s in samples.iter().filter(|s| (from..to).contains(&s.sent_ms)) {
            let waited = s.acked_ms.unwrap_or(run_end_ms).saturating_sub(s.sent_ms);
            worst = worst.max(waited);
            if s.acked_ms.is_none() || waited > promise_ms {
                late.insert(s.station);
            }
        }
        r.stations_not_recovered = late.len();
        r.recovery_s = Some(worst as f64 / 1000.0);
    }
}

/// A sample's key among the stored rows and the alerts: its station and
/// its measurement time in ms (whole seconds for HJ 212 and Circular 10).
fn stored_key(prefix: &str, s: &Sent) -> (String, i64) {
    (
        format!("{prefix}-{}", s.station),
        s.measured_at.timestamp_millis(),
    )
}

/// Per protocol: samples sent, acknowledged and stored, readings lost, and
/// the exceeding samples' alerts.
fn by_protocol(
    samples: &[Sent],
    stored: &HashMap<(String, i64), i64>,
    raised: &HashMap<(String, i64), Vec<String>>,
    prefix: &str,
    mix: &[(Protocol, usize)],
) -> Vec<ProtocolReport> {
    let mut out: Vec<ProtocolReport> = mix
        .iter()
        .map(|(p, n)| ProtocolReport {
            protocol: p.name(),
            stations: *n,
            ..Default::default()
        })
        .collect();
    for s in samples {
        let Some(r) = mix
            .iter()
            .position(|(p, _)| *p == s.protocol)
            .and_then(|i| out.get_mut(i))
        else {
            continue;
        };
        let key = stored_key(prefix, s);
        let rows = stored.get(&key).copied().unwrap_or(0);
        r.samples_sent += 1;
        r.samples_stored += usize::from(rows >= 4);
        r.readings_stored += usize::try_from(rows).unwrap_or(0);
        if s.acked_ms.is_some() {
            r.samples_acked += 1;
            r.readings_lost += usize::try_from(4 - rows.min(4)).unwrap_or(0);
        }
        if s.exceeds && rows > 0 {
            r.alerts_expected += 1;
            r.alerts_raised_once += usize::from(raised.get(&key).is_some_and(|ids| ids.len() == 1));
        }
    }
    out
}

/// Records of `topic` the consumer `group` has not committed yet (`None`
/// when Kafka does not answer).
async fn group_lag(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .ok()?;
        let timeout = Duration::from_secs(5);
        let meta = c.fetch_metadata(Some(&topic), timeout).ok()?;
        let partitions = meta.topics().first()?.partitions().len();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, i32::try_from(p).ok()?);
        }
        let committed = c.committed_offsets(tpl, timeout).ok()?;
        let mut lag = 0;
        for e in committed.elements() {
            let (_, high) = c.fetch_watermarks(&topic, e.partition(), timeout).ok()?;
            let done = match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => 0,
            };
            lag += (high - done).max(0);
        }
        Some(lag)
    })
    .await
    .ok()
    .flatten()
}

/// `kill -9` of the broker (every `mosquitto` on the machine), then
/// `deploy/services.sh start mosquitto`; whether one was killed, and a note.
async fn kill_mosquitto(repo: &std::path::Path) -> Result<(bool, String)> {
    let killed = std::process::Command::new("pkill")
        .args(["-9", "-x", "mosquitto"])
        .status()
        .is_ok_and(|s| s.success());
    Ok((killed, services(repo, "start", "mosquitto").await?))
}

/// `kill -9` of the PostgreSQL server `url` reaches: its postmaster (the
/// parent of this connection's backend) and every child of it, in one
/// `kill`. Returns how many processes were killed.
async fn kill_postgres(url: &str) -> Result<usize> {
    let client = quantrac_testkit::db::connect(url).await;
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .context("SELECT pg_backend_pid()")?
        .get(0);
    let postmaster = parent_pid(backend as u32)
        .with_context(|| format!("parent of PostgreSQL backend {backend}"))?;
    let mut victims: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_pid(pid).is_some_and(|p| p == postmaster))
        .collect();
    victims.push(postmaster);
    // A backend may end between the listing and the kill (its client
    // left): `kill` then fails for that one and still kills the others,
    // and the wait below tells whether every one is gone.
    std::process::Command::new("kill")
        .arg("-9")
        .args(victims.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status()
        .context("kill -9")?;
    // Dying takes a moment. A server started before the old postmaster
    // is reaped finds its lock file's process (`kill(pid, 0)` answers for
    // a zombie) and stops; one started before the others have died finds
    // its shared memory in use.
    let deadline = Instant::now() + Duration::from_secs(30);
    while exists(postmaster) || victims.iter().any(|&pid| running(pid)) {
        if Instant::now() > deadline {
            bail!("PostgreSQL {victims:?} still there 30 s after kill -9");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(victims.len())
}

/// Whether `pid` is a process, a zombie included.
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` runs (a zombie has finished).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// A process's parent, from `/proc/<pid>/stat` (the field after the
/// parenthesised name, which may itself hold spaces and parentheses).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `deploy/services.sh <cmd> <service>`, timed; returns a note.
async fn services(repo: &std::path::Path, cmd: &str, service: &str) -> Result<String> {
    let t = Instant::now();
    let out = tokio::process::Command::new(repo.join("deploy/services.sh"))
        .args([cmd, service])
        .output()
        .await
        .with_context(|| format!("deploy/services.sh {cmd} {service}"))?;
    if !out.status.success() {
        bail!(
            "deploy/services.sh {cmd} {service}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!(
        "{service} {cmd} took {:.1} s",
        t.elapsed().as_secs_f64()
    ))
}

/// Records the processor must set aside without stopping: bytes that are
/// not a batch, an empty record, and a batch whose reception time
/// PostgreSQL cannot store.
async fn poison(brokers: &str, topic: &str) -> Result<String> {
    use prost::Message as _;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let far = prost_types::Timestamp {
        seconds: 300_000 * 365 * 86_400,
        nanos: 0,
    };
    let batch = quantrac_proto::v1::ReadingBatch {
        station_id: "POISON".into(),
        readings: vec![quantrac_proto::v1::Reading {
            station_id: "POISON".into(),
            parameter: "COD".into(),
            value: 1.0,
            measured_at: Some(far),
            received_at: Some(far),
            ..Default::default()
        }],
        ..Default::default()
    };
    let records: [(&str, Vec<u8>); 3] = [
        ("POISON-1", b"\xff\xfe not a batch".to_vec()),
        ("POISON-2", Vec::new()),
        ("POISON-3", batch.encode_to_vec()),
    ];
    for (key, payload) in &records {
        producer
            .send(
                FutureRecord::to(topic).key(*key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("poison record: {e}"))?;
    }
    Ok(format!("{} poison records", records.len()))
}

/// One MQTT message over ingest's payload limit, and a Circular 10 payload
/// of 10,900 timestamped lines (within the limit), for a station of the
/// fleet.
async fn oversized(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    prefix: &str,
    max_payload: usize,
) -> Result<String> {
    let mut o = rumqttc::MqttOptions::new(unique("faults-big"), host, port);
    o.set_credentials(user, password)
        .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
    let (client, mut events) = rumqttc::AsyncClient::new(o, 8);
    let topic = format!("stations/{prefix}-1/readings");
    client
        .publish(
            &topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            vec![b'x'; max_payload * 2],
        )
        .await?;
    // 10,900 pH lines (23 bytes each, no unit) fit under the limit, as in
    // the case: one message, more records than ingest's window.
    let mut lines = String::new();
    let start = Utc::now() - chrono::Duration::days(40);
    for k in 0..10_900i64 {
        let at = start + chrono::Duration::seconds(k * 60);
        let _ = writeln!(lines, "pH\t7\t{}\t00", at.format("%Y%m%d%H%M%S"));
    }
    let long = lines.len();
    client
        .publish(&topic, rumqttc::QoS::AtLeastOnce, false, lines.into_bytes())
        .await?;
    let mut acks = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks < 2 && Instant::now() < deadline {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), events.poll()).await
        {
            acks += 1;
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
    Ok(format!(
        "{} and {long} bytes published, {acks} of 2 acknowledged",
        max_payload * 2
    ))
}

/// `n` TCP connections to ingest that send nothing, from
/// `n / 4` loopback addresses (127.0.1.x, 127.0.2.x, …), so that ingest's
/// per-address cap does not turn them away: a thousand hosts on a
/// province's network, not one.
async fn idle_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for c in 0..n {
        let host = c / 4 + 256;
        let from = std::net::Ipv4Addr::new(127, 0, (host / 250) as u8, (host % 250 + 1) as u8);
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            break;
        };
        if socket.bind((from, 0).into()).is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await {
            Ok(Ok(conn)) => out.push(conn),
            _ => break,
        }
    }
    out
}

fn markdown(
    args: &Args,
    (reports, protocols): (&[PhaseReport], &[ProtocolReport]),
    broken: &[String],
    work: &std::path::Path,
    duplicated: i64,
    unexpected_alerts: usize,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Fault injection, {}\n",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(md, "Machine: {}.\n", common::machine_line());
    let _ = writeln!(
        md,
        "{} stations, one sample (4 readings) a second each: {} (MQTT with QoS 1 and persistent sessions, {}; TCP on a connection of their own, redialled every 10-20 samples; FTP one Circular 10 file every 10 s), each proving itself with its secret (Argon2 cost `{}`). HJ 212 and Circular 10 stations keep one sample a second in a burst or an overload (their times are whole seconds). Every 10th station sends a COD over its permit every 20 s (of measurement time, at any pace). Phases of {:?}, the fault injected {:?} in. Logs in `{}`.\n",
        args.stations,
        protocols
            .iter()
            .filter(|p| p.stations > 0)
            .map(|p| format!("{} {}", p.stations, p.protocol))
            .collect::<Vec<_>>()
            .join(", "),
        match args.mqtt_via {
            MqttVia::Listener => "to ingest's own MQTT endpoint",
            MqttVia::Broker => "through Mosquitto",
        },
        match args.argon2.unwrap_or(SecretCost::Production) {
            SecretCost::Light => "light",
            SecretCost::Production => "production",
        },
        args.phase,
        args.inject_after,
        work.display()
    );
    let _ = writeln!(
        md,
        "| phase | readings sent | acked | stored | lost | alerts expected | raised | twice | missing | notified webhook / mail | webhook twice | recovery s | not recovered | injection s | peak RSS MiB (ingest / processor / alerting / kafka / mosquitto / postgres) |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let mut total = PhaseReport::default();
    for r in reports {
        let rss = [
            "ingest",
            "processor",
            "alerting",
            "kafka",
            "mosquitto",
            "postgres",
        ]
        .iter()
        .map(|k| {
            r.peak_rss_mib
                .get(*k)
                .map_or("-".to_owned(), |v| format!("{v:.0}"))
        })
        .collect::<Vec<_>>()
        .join(" / ");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} / {} | {} | {} | {} | {:.1} | {rss} |",
            r.fault,
            common::thousands(r.readings_sent as f64),
            common::thousands(r.readings_acked as f64),
            common::thousands(r.readings_stored as f64),
            r.readings_lost,
            r.alerts_expected,
            r.alerts_raised,
            r.alerts_raised_twice,
            r.alerts_missing,
            r.alerts_notified_webhook,
            r.alerts_notified_mail,
            r.alerts_webhook_twice,
            r.recovery_s.map_or("-".to_owned(), |s| format!("{s:.1}")),
            r.stations_not_recovered,
            r.injection_s,
        );
        total.readings_sent += r.readings_sent;
        total.readings_acked += r.readings_acked;
        total.readings_stored += r.readings_stored;
        total.readings_lost += r.readings_lost;
        total.alerts_expected += r.alerts_expected;
        total.alerts_raised += r.alerts_raised;
        total.alerts_raised_twice += r.alerts_raised_twice;
        total.alerts_missing += r.alerts_missing;
        total.alerts_notified_webhook += r.alerts_notified_webhook;
        total.alerts_notified_mail += r.alerts_notified_mail;
        total.alerts_webhook_twice += r.alerts_webhook_twice;
    }
    let _ = writeln!(
        md,
        "| **all** | {} | {} | {} | **{}** | {} | {} | {} | {} | {} / {} | {} | | | | |\n",
        common::thousands(total.readings_sent as f64),
        common::thousands(total.readings_acked as f64),
        common::thousands(total.readings_stored as f64),
        total.readings_lost,
        total.alerts_expected,
        total.alerts_raised,
        total.alerts_raised_twice,
        total.alerts_missing,
        total.alerts_notified_webhook,
        total.alerts_notified_mail,
        total.alerts_webhook_twice,
    );
    let _ = writeln!(
        md,
        "Per protocol (the whole run):\n\n| protocol | stations | samples sent | acked | stored | readings lost | alerts expected | raised once |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in protocols {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | **{}** | {} | {} |",
            p.protocol,
            p.stations,
            common::thousands(p.samples_sent as f64),
            common::thousands(p.samples_acked as f64),
            common::thousands(p.samples_stored as f64),
            p.readings_lost,
            p.alerts_expected,
            p.alerts_raised_once,
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "Notes per phase:\n");
    for r in reports.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(md, "- {}: {}", r.fault, r.note);
    }
    let _ = writeln!(
        md,
        "\nDuplicate rows (same station, parameter and time) in the whole run: {duplicated}. `limit_exceeded` alerts for no exceeding sample: {unexpected_alerts}.\n"
    );
    let _ = writeln!(
        md,
        "Lost: acknowledged to the station and not stored. Recovery: the longest a sample sent after the injection, in that phase, waited for its answer; not recovered: stations with such a sample that waited longer than the promise ({:?}) or was never answered. Notified: raised alerts whose changes reached the webhook endpoint, and the mailbox of an officer subscribed to every alert; webhook twice: alerts with a change POSTed twice (delivery is at least once).\n",
        args.recover_within
    );
    if broken.is_empty() {
        let _ = writeln!(md, "**Every promise kept.**");
    } else {
        let _ = writeln!(md, "**Promises broken:**\n");
        for b in broken {
            let _ = writeln!(md, "- {b}");
        }
    }
    md
}
