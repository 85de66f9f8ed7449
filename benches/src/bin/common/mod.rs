//! What the benchmark binaries share: unique names, Kafka topics, CPU
//! accounting from `/proc`, and result tables.

#![allow(dead_code)]

pub mod notified;
pub mod pipeline;
pub mod procs;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// A random number, good enough for names and start times (no extra crate).
pub fn random_u64() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((nanos, std::process::id()))
}

/// Milliseconds since the Unix epoch (the clock Kafka timestamps use).
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("Kafka admin client")
}

/// A topic to create: name, partitions, topic configs.
#[derive(Debug)]
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub configs: &'a [(&'a str, &'a str)],
}

/// Creates the topics (replication 1: the local broker is a single node).
pub async fn create_topics(brokers: &str, specs: &[TopicSpec<'_>]) -> Result<()> {
    let admin = admin(brokers)?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            s.configs.iter().fold(
                NewTopic::new(s.name, s.partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .context("Kafka unreachable: is `deploy/services.sh start` done?")?;
    for r in results {
        if let Err((topic, e)) = r {
            bail!("cannot create topic {topic}: {e}");
        }
    }
    // CreateTopics answers before every partition has a leader in the
    // broker's metadata; a producer arriving then waits for a metadata
    // refresh (hundreds of ms), which would land in the measurement.
    let deadline = Instant::now() + Duration::from_secs(20);
    for spec in specs {
        loop {
            let ready = admin
                .inner()
                .fetch_metadata(Some(spec.name), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics().first().map(|t| {
                        t.error().is_none()
                            && t.partitions().len() == usize::try_from(spec.partitions).unwrap_or(0)
                            && t.partitions()
                                .iter()
                                .all(|p| p.error().is_none() && p.leader() >= 0)
                    })
                })
                .unwrap_or(false);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "topic {} has no leader for every partition after 20 s",
                    spec.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Deletes the topics; failures are only reported (this is cleanup).
pub async fn delete_topics(brokers: &str, names: &[&str]) {
    let result = async {
        let admin = admin(brokers)?;
        for r in admin
            .delete_topics(
                names,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
            )
            .await?
        {
            if let Err((topic, e)) = r {
                eprintln!("warning: cannot delete topic {topic}: {e}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("warning: cannot delete topics {names:?}: {e:#}");
    }
}

/// Deletes consumer groups the benchmark created; failures only reported.
pub async fn delete_groups(brokers: &str, names: &[&str]) {
    let result = async {
        let admin = admin(brokers)?;
        for r in admin
            .delete_groups(
                names,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
            )
            .await?
        {
            if let Err((group, e)) = r {
                eprintln!("warning: cannot delete consumer group {group}: {e}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("warning: cannot delete consumer groups {names:?}: {e:#}");
    }
}

// ---------------------------------------------------------------------------
// CPU accounting

/// Clock ticks per second of `/proc` times (USER_HZ: 100 on Linux x86-64
/// and arm64).
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields after the `(comm)` of a `/proc/.../stat` line, starting with
/// field 3 (state); with the comm.
fn parse_stat(text: &str) -> Option<(String, Vec<&str>)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest = text.get(close + 1..)?.split_whitespace().collect();
    Some((comm, rest))
}

/// (comm, ppid, utime + stime, cutime + cstime) of a process or thread.
fn proc_times(path: &str) -> Option<(String, i32, u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (comm, f) = parse_stat(&text)?;
    // f[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
    // cutime 16, cstime 17.
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    let ppid = f.get(1)?.parse().ok()?;
    Some((comm, ppid, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// Busy and total ticks of the whole machine (`/proc/stat`, all CPUs).
fn system_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy CPU seconds of the whole machine since boot (`/proc/stat`).
pub fn machine_busy_seconds() -> Option<f64> {
    system_ticks().map(|(busy, _)| busy as f64 / TICKS_PER_SECOND)
}

/// Seconds since boot during which at least one runnable task waited for
/// a CPU (`/proc/pressure/cpu`, "some"); `None` without PSI. Over a step,
/// its share of the wall time tells a crowded machine (other tenants, a
/// hypervisor's neighbours) from a slow pipeline.
pub fn cpu_pressure_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let total = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    Some(total.parse::<u64>().ok()? as f64 / 1e6)
}

/// External services whose CPU time is reported separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Kafka,
    Mosquitto,
    Postgres,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Kafka, Service::Mosquitto, Service::Postgres];
}

/// CPU ticks consumed so far, by who consumed them.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    system_busy: u64,
    system_total: u64,
    /// This process, its threads and its reaped children (psql).
    process: u64,
    /// This process's threads, summed by thread-name prefix.
    threads: HashMap<String, u64>,
    services: HashMap<Service, u64>,
}

/// Reads the counters now. `thread_groups` are thread-name prefixes whose
/// threads are summed separately (e.g. a runtime's `thread_name`).
pub fn cpu_sample(thread_groups: &[&str]) -> CpuSample {
    let (system_busy, system_total) = system_ticks().unwrap_or((0, 0));
    let process = proc_times("/proc/self/stat").map_or(0, |(_, _, own, children)| own + children);
    let mut threads: HashMap<String, u64> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let path = format!("{}/stat", entry.path().display());
            if let Some((comm, _, t, _)) = proc_times(&path)
                && let Some(g) = thread_groups.iter().find(|g| comm.starts_with(**g))
            {
                *threads.entry((*g).to_owned()).or_default() += t;
            }
        }
    }
    CpuSample {
        at: Instant::now(),
        system_busy,
        system_total,
        process,
        threads,
        services: service_ticks(),
    }
}

/// Kafka (the `kafka.Kafka` JVM), Mosquitto, and PostgreSQL (every
/// postmaster with its live backends, plus what its exited backends used,
/// which the kernel adds to the postmaster's children times).
fn service_ticks() -> HashMap<Service, u64> {
    let mut procs: Vec<(i32, String, i32, u64, u64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Some((comm, ppid, own, children)) = proc_times(&format!("/proc/{pid}/stat")) {
                procs.push((pid, comm, ppid, own, children));
            }
        }
    }
    let comm_of: HashMap<i32, &str> = procs.iter().map(|p| (p.0, p.1.as_str())).collect();
    let mut out: HashMap<Service, u64> = Service::ALL.iter().map(|s| (*s, 0)).collect();
    for (pid, comm, ppid, own, children) in &procs {
        let service = if comm == "java" {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .filter(|c| c.windows(11).any(|w| w == b"kafka.Kafka"))
                .map(|_| (Service::Kafka, own + children))
        } else if comm == "mosquitto" {
            Some((Service::Mosquitto, own + children))
        } else if comm.starts_with("postgres") {
            let parent_is_postgres = comm_of.get(ppid).is_some_and(|c| c.starts_with("postgres"));
            // The postmaster counts its reaped backends; a backend only itself.
            Some((
                Service::Postgres,
                if parent_is_postgres {
                    *own
                } else {
                    own + children
                },
            ))
        } else {
            None
        };
        if let Some((s, t)) = service {
            *out.entry(s).or_default() += t;
        }
    }
    out
}

/// CPU used between two samples, in cores (1.0 = one core busy the whole
/// time).
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub wall: Duration,
    /// Cores in the machine, from the ticks `/proc/stat` counted.
    pub cores: f64,
    /// The whole machine, busy.
    pub machine: f64,
    pub process: f64,
    pub threads: HashMap<String, f64>,
    pub services: HashMap<Service, f64>,
}

impl CpuUse {
    pub fn between(a: &CpuSample, b: &CpuSample) -> CpuUse {
        let wall = b.at.saturating_duration_since(a.at);
        let secs = wall.as_secs_f64().max(1e-9);
        let cores_of = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / secs;
        let threads = b
            .threads
            .iter()
            .map(|(k, v)| {
                let before = a.threads.get(k).copied().unwrap_or(0);
                (k.clone(), cores_of(v.saturating_sub(before)))
            })
            .collect();
        let services = b
            .services
            .iter()
            .map(|(k, v)| {
                let before = a.services.get(k).copied().unwrap_or(0);
                (*k, cores_of(v.saturating_sub(before)))
            })
            .collect();
        let total = b.system_total.saturating_sub(a.system_total) as f64;
        CpuUse {
            wall,
            cores: total / TICKS_PER_SECOND / secs,
            machine: cores_of(b.system_busy.saturating_sub(a.system_busy)),
            process: cores_of(b.process.saturating_sub(a.process)),
            threads,
            services,
        }
    }

    pub fn thread(&self, group: &str) -> f64 {
        self.threads.get(group).copied().unwrap_or(0.0)
    }

    pub fn service(&self, s: Service) -> f64 {
        self.services.get(&s).copied().unwrap_or(0.0)
    }

    /// Busy time not explained by this process or the named services.
    pub fn other(&self, services: &[Service]) -> f64 {
        let known: f64 = self.process + services.iter().map(|s| self.service(*s)).sum::<f64>();
        (self.machine - known).max(0.0)
    }
}

// ---------------------------------------------------------------------------
// Output

/// A plain text table, columns right-aligned except the first.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(header: &[S]) -> Self {
        Table {
            header: header.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let n = self.header.len();
        let mut width = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    let c = r.get(i).map_or("", String::as_str);
                    if i == 0 {
                        format!("{c:<w$}", w = width[i])
                    } else {
                        format!("{c:>w$}", w = width[i])
                    }
                })
                .collect();
            format!("| {} |", cells.join(" | "))
        };
        println!("{}", line(&self.header));
        let rule: Vec<String> = width
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    format!(":{}", "-".repeat(*w + 1))
                } else {
                    format!("{}:", "-".repeat(*w + 1))
                }
            })
            .collect();
        println!("|{}|", rule.join("|"));
        for r in &self.rows {
            println!("{}", line(r));
        }
    }
}

/// `12345.6` -> `12,346`.
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Median of sorted values (mean of the middle two for an even count).
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The value at quantile `q` of sorted values (nearest rank).
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// Busy cores of the whole machine over `over`, measured now: what else
/// runs before the benchmark starts.
pub async fn busy_now(over: Duration) -> f64 {
    let a = cpu_sample(&[]);
    tokio::time::sleep(over).await;
    let b = cpu_sample(&[]);
    CpuUse::between(&a, &b).machine
}

/// One line about the machine, for the parameters block.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{cores} cores ({model}), load average (1 min) at start {load}")
}

/// CPU seconds a process has used so far (its threads and reaped children).
pub fn pid_cpu_seconds(pid: u32) -> f64 {
    proc_times(&format!("/proc/{pid}/stat")).map_or(0.0, |(_, _, own, children)| {
        (own + children) as f64 / TICKS_PER_SECOND
    })
}

/// A process's peak resident memory so far (`VmHWM`), in MiB.
pub fn pid_peak_rss_mib(pid: u32) -> f64 {
    status_kib(&format!("/proc/{pid}/status"), "VmHWM:") / 1024.0
}

/// A process's resident memory now (`VmRSS`), in MiB; 0 once it is gone.
pub fn pid_rss_mib(pid: u32) -> f64 {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:") / 1024.0
}

fn status_kib(path: &str, field: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// CPU seconds used so far by each external service (see `service_ticks`).
pub fn service_cpu_seconds() -> HashMap<Service, f64> {
    service_ticks()
        .into_iter()
        .map(|(s, t)| (s, t as f64 / TICKS_PER_SECOND))
        .collect()
}

/// Resident memory of each external service now, in MiB (PostgreSQL: the
/// postmaster and its backends together; shared buffers count once per
/// process that touched them, so this is an upper bound).
pub fn service_rss_mib() -> HashMap<Service, f64> {
    let mut out: HashMap<Service, f64> = Service::ALL.iter().map(|s| (*s, 0.0)).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Some((comm, ..)) = proc_times(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        let service = if comm == "java" {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .filter(|c| c.windows(11).any(|w| w == b"kafka.Kafka"))
                .map(|_| Service::Kafka)
        } else if comm == "mosquitto" {
            Some(Service::Mosquitto)
        } else if comm.starts_with("postgres") {
            Some(Service::Postgres)
        } else {
            None
        };
        if let Some(s) = service {
            *out.entry(s).or_default() +=
                status_kib(&format!("/proc/{pid}/status"), "VmRSS:") / 1024.0;
        }
    }
    out
}
