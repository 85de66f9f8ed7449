//! The pipeline's services as child processes, and what the benchmark
//! binaries read from them: health, Prometheus counters, and the MQTT
//! session an ingest leaves behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A service binary built beside the running one (same profile).
pub fn bin(name: &str) -> Result<PathBuf> {
    let dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_owned();
    let p = dir.join(name);
    if !p.exists() {
        bail!(
            "{} not built: cargo build [--release] -p quantrac-ingest -p quantrac-processor -p quantrac-alerting --bins (the same profile as this binary)",
            p.display()
        );
    }
    Ok(p)
}

pub fn free_addr() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A pipeline service in its own process.
pub struct Proc {
    pub name: &'static str,
    pub child: tokio::process::Child,
    pub http: std::net::SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Proc {
    /// Starts `name` with `config`, its output appended to `log`, and waits
    /// until its `/health` answers 200.
    pub async fn start(
        name: &'static str,
        config: &Path,
        http: std::net::SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        let child = spawn(name, config, log)?;
        let p = Proc {
            name,
            child,
            http,
            config: config.to_owned(),
            log: log.to_owned(),
        };
        p.healthy_within(Duration::from_secs(60)).await?;
        Ok(p)
    }

    async fn healthy_within(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while http_get(self.http, "/health").await.map(|(s, _)| s) != Some(200) {
            if Instant::now() > deadline {
                bail!("{} not healthy within {within:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// `kill -9`: no shutdown, no flush, no commit.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts it again with the same configuration (after `kill9`), and
    /// waits until it is healthy.
    pub async fn restart(&mut self) -> Result<()> {
        self.child = spawn(self.name, &self.config, &self.log)?;
        self.healthy_within(Duration::from_secs(60)).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn spawn(name: &str, config: &Path, log: &Path) -> Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    tokio::process::Command::new(bin(name)?)
        .arg("--config")
        .arg(config)
        // QUANTRAC_SERVICE_LOG, e.g. "info", for the services' own logs.
        .env(
            "RUST_LOG",
            std::env::var("QUANTRAC_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// Status and body of an HTTP/1.0 GET.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Readings the processor has stored so far (read now, not from the
/// sampler, whose value can be a second old).
pub async fn stored_count(processor_http: std::net::SocketAddr) -> u64 {
    http_get(processor_http, "/metrics")
        .await
        .map_or(0.0, |(_, b)| prom_counter(&b, "processor_stored_total")) as u64
}

/// Readings alerting has evaluated so far.
pub async fn judged_count(alerting_http: std::net::SocketAddr) -> u64 {
    http_get(alerting_http, "/metrics")
        .await
        .map_or(0.0, |(_, b)| {
            prom_counter(&b, "alerting_readings_evaluated_total")
        }) as u64
}

/// A counter's value on a Prometheus page (summed over its labels).
pub fn prom_counter(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Ends an MQTT session: a clean-session connection with its client id.
pub async fn forget_session(url: &str, user: &str, password: &str, client_id: &str) {
    let Ok(b) = quantrac_ingest::mqtt::broker_address(url) else {
        return;
    };
    let mut o = rumqttc::MqttOptions::new(client_id, b.host, b.port);
    o.set_credentials(user, password).set_clean_session(true);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 8);
    if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) =
        tokio::time::timeout(Duration::from_secs(10), el.poll()).await
    {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    }
}
