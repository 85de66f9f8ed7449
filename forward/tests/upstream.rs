//! The feed to the national system against the real services: readings
//! stored and their times queued in one transaction, as the processor does
//! with `storage.forward` (its own test: `processor/tests/forward_outbox.rs`),
//! the forwarder delivering Circular 10 files over FTPS to
//! pure-ftpd (`deploy/services.sh start ftp`), whose transfer log counts
//! every upload.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quantrac_db::readings::ReadingRow;
use quantrac_forward::config::{Password, UpstreamConfig};
use quantrac_forward::render::{self, Identities};
use quantrac_forward::{ForwardConfig, Forwarder};
use quantrac_proto::domain::DeviceStatus;
use quantrac_proto::qc::QcFlag;
use quantrac_proto::registry::Registry;
use quantrac_testkit::env::{UpstreamFtp, tls_ca, upstream_ftp};
use quantrac_testkit::registry::Outfalls;
use quantrac_testkit::unique;
use tokio_util::sync::CancellationToken;

const PARAMETERS: [(&str, &str, f64); 3] = [
    ("pH", "pH", 7.1),
    ("TSS", "mg/L", 40.0),
    ("COD", "mg/L", 90.0),
];

struct Fixture {
    db_url: String,
    db: tokio_postgres::Client,
    /// The processor's side: writes readings and queues their times.
    writer: tokio_postgres::Client,
    registry: std::path::PathBuf,
    identities: Identities,
    ftp: UpstreamFtp,
    /// This test's directory on the upstream server.
    dir: String,
    stations: [String; 3],
}

impl Fixture {
    async fn new() -> Fixture {
        let db_url = quantrac_testkit::db::fresh_database().await;
        let writer = quantrac_testkit::db::connect(&db_url).await;
        quantrac_db::schema::migrate(&writer, &Default::default())
            .await
            .expect("migrate");
        let prefix = unique("FW");
        let stations = [0, 1, 2].map(|i| format!("{prefix}-{i}"));
        // Two stations with their Circular 10 identity, one without.
        let toml: String = stations
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let o = Outfalls::one(id);
                if i < 2 {
                    o.with_lines(&format!("aliases = [\"PY_NM{i}_{id}\"]"))
                        .toml()
                } else {
                    o.toml()
                }
            })
            .collect();
        let registry = std::env::temp_dir().join(format!("{}.toml", unique("registry")));
        std::fs::write(&registry, &toml).expect("registry");
        let identities =
            Identities::from_registry(&Registry::from_toml(&toml).expect("registry loads"));
        let db = quantrac_testkit::db::connect(&db_url).await;
        Fixture {
            db_url,
            db,
            writer,
            registry,
            identities,
            ftp: upstream_ftp(),
            dir: unique("national"),
            stations,
        }
    }

    fn config(&self, port: u16) -> ForwardConfig {
        ForwardConfig {
            database_url: self.db_url.clone(),
            registry: self.registry.clone(),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            settle: Duration::ZERO,
            poll: Duration::from_millis(50),
            batch: 7,
            max_backoff: Duration::from_secs(1),
            upstream: UpstreamConfig {
                host: "localhost".into(),
                port,
                user: self.ftp.user.clone(),
                password: Password(self.ftp.password.clone()),
                dir: format!("/{}", self.dir),
                tls: true,
                ca_file: Some(tls_ca()),
                timeout: Duration::from_secs(10),
            },
            ..ForwardConfig::default()
        }
    }

    async fn start(&self, port: u16) -> (Forwarder, CancellationToken) {
        let stop = CancellationToken::new();
        let f = Forwarder::start(self.config(port), None, stop.clone())
            .await
            .expect("forwarder starts");
        (f, stop)
    }

    /// Stores `parameters` of `station` at `at` and queues the time, in one
    /// transaction, as the processor does.
    async fn store(&mut self, station: &str, at: DateTime<Utc>, parameters: &[(&str, &str, f64)]) {
        let rows: Vec<ReadingRow> = parameters
            .iter()
            .map(|(p, unit, v)| ReadingRow {
                station_id: station.into(),
                parameter: (*p).into(),
                value: *v,
                unit: (*unit).into(),
                measured_at: at,
                status: DeviceStatus::Measuring,
                device_flag: "00".into(),
                qc_flag: QcFlag::Valid,
                source: 0,
                received_at: Some(Utc::now()),
                ingest_id: uuid::Uuid::now_v7().to_string(),
                converted: None,
                wire_code: None,
            })
            .collect();
        let mut tx = self.writer.transaction().await.expect("tx");
        quantrac_db::readings::write(&mut tx, &rows, quantrac_db::readings::WriteMethod::Copy)
            .await
            .expect("stored");
        quantrac_db::forward::enqueue(&tx, &rows)
            .await
            .expect("queued");
        tx.commit().await.expect("commit");
    }

    async fn count(&self, sql: &str) -> i64 {
        quantrac_testkit::db::count(&self.db, sql).await
    }

    /// Waits (at most 60 s) until `sql` counts `n`.
    async fn until(&self, sql: &str, n: i64) {
        self.until_with(sql, |have| have == n, &format!("{n}"))
            .await;
    }

    /// Waits (at most 60 s) until `sql` counts at least `n`.
    async fn until_at_least(&self, sql: &str, n: i64) {
        self.until_with(sql, |have| have >= n, &format!("at least {n}"))
            .await;
    }

    async fn until_with(&self, sql: &str, done: impl Fn(i64) -> bool, n: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let have = self.count(sql).await;
            if done(have) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sql}: {have}, waiting for {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Uploads to this test's directory, by file name (`.part` stripped).
    fn uploads(&self) -> BTreeMap<String, usize> {
        let log = std::fs::read_to_string(&self.ftp.transfers).unwrap_or_default();
        let mut n = BTreeMap::new();
        for line in log.lines() {
            let Some(path) = line.split("\"PUT ").nth(1) else {
                continue;
            };
            let path = path.split('"').next().unwrap_or("");
            if let Some(name) = path.split(&format!("/{}/", self.dir)).nth(1) {
                *n.entry(name.trim_end_matches(".part").to_string())
                    .or_default() += 1;
            }
        }
        n
    }

    /// The file the Ministry should hold for a station and time, from what
    /// is stored.
    async fn expected(&self, station: &str, at: DateTime<Utc>) -> render::File {
        let rows = quantrac_db::forward::readings_at(&self.db, station, at)
            .await
            .expect("readings");
        render::file(
            self.identities.get(station).expect("identity"),
            at,
            &rows,
            quantrac_proto::domain::local_offset(),
        )
    }

    fn on_server(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.ftp.home.join(&self.dir).join(name)).ok()
    }
}

fn times(n: usize) -> Vec<DateTime<Utc>> {
    let start = DateTime::from_timestamp(1_780_000_200, 0).expect("time");
    (0..n as i64)
        .map(|i| start + chrono::Duration::minutes(5 * i))
        .collect()
}

const SENT: &str = "SELECT count(*) FROM forward_sent";

#[tokio::test]
async fn every_stored_time_reaches_the_national_system_once_across_an_outage_and_a_crash() {
    let mut f = Fixture::new().await;
    let times = times(40);
    let [a, b, c] = f.stations.clone();
    for &t in &times {
        f.store(&a, t, &PARAMETERS).await;
        f.store(&b, t, &PARAMETERS).await;
    }
    for &t in &times[..3] {
        f.store(&c, t, &PARAMETERS).await;
    }
    // A write the processor makes for a redelivered batch queues the same
    // times again: nothing new to send.
    f.store(&a, times[1], &PARAMETERS).await;

    // The Ministry's server unreachable: nothing is lost, every attempt is
    // recorded and retried.
    let closed = quantrac_testkit::ftp::free_port();
    let (down, _) = f.start(closed).await;
    f.until_at_least(
        "SELECT count(*) FROM forward_outbox WHERE attempts > 0 AND last_error LIKE 'connect%'",
        7,
    )
    .await;
    drop(down);
    assert_eq!(f.count(SENT).await, 0);

    // Up, then killed mid-feed: dropping the forwarder aborts its task
    // wherever it is, as a crash would.
    let (first, _) = f.start(f.ftp.port).await;
    f.until_at_least(SENT, 25).await;
    drop(first);

    // While it is down: a parameter arrives late for a time already sent.
    f.store(&a, times[0], &[("NH4", "mg/L", 3.5)]).await;

    let (second, stop) = f.start(f.ftp.port).await;
    f.until(SENT, 80).await;
    // Only the station without an identity is left, and says why.
    f.until("SELECT count(*) FROM forward_outbox", 3).await;
    let why: Vec<(String, i64, Option<String>)> =
        f.db.query(
            "SELECT station_id, pending, last_error FROM forward_status WHERE pending > 0",
            &[],
        )
        .await
        .expect("status")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!((why[0].0.as_str(), why[0].1), (c.as_str(), 3));
    assert!(
        why[0]
            .2
            .as_deref()
            .is_some_and(|e| e.contains("Circular 10 identity")),
        "{why:?}"
    );

    // What the Ministry holds is what is stored, every file.
    for station in [&a, &b] {
        for &t in &times {
            let want = f.expected(station, t).await;
            assert_eq!(
                f.on_server(&want.name).as_deref(),
                Some(&want.body[..]),
                "{}",
                want.name
            );
        }
    }
    let late = f.expected(&a, times[0]).await;
    assert!(String::from_utf8_lossy(&late.body).contains("NH4\t3.5\tmg/L"));

    // Sent once each: the late parameter's file twice (it changed), and at
    // most one file a second time, the one in flight when the first
    // forwarder was killed (its `.part` is replaced, the Ministry's side
    // sees the file once, by rename).
    let uploads = f.uploads();
    assert_eq!(uploads.len(), 80, "{uploads:?}");
    let twice: Vec<_> = uploads
        .iter()
        .filter(|(name, n)| **n > 1 && **name != late.name)
        .collect();
    assert!(twice.len() <= 1, "sent more than once: {twice:?}");
    assert!(twice.iter().all(|(_, n)| **n == 2), "{twice:?}");
    assert_eq!(uploads.get(&late.name), Some(&2), "{uploads:?}");
    stop.cancel();
    second.wait().await.expect("clean stop");
}

/// A file that reached the server just before a crash (its delivery not
/// yet recorded) is found there, byte for byte, and recorded without being
/// sent again; a time queued again with unchanged readings is not sent.
#[tokio::test]
async fn a_file_already_on_the_server_is_recorded_not_sent_again() {
    let mut f = Fixture::new().await;
    let [a, _, _] = f.stations.clone();
    let times = times(3);
    for &t in &times {
        f.store(&a, t, &PARAMETERS).await;
    }
    // The first time's file, uploaded by a forwarder that died before
    // recording it.
    let there = f.expected(&a, times[0]).await;
    let mut before = quantrac_forward::upstream::Session::open(&f.config(f.ftp.port).upstream)
        .await
        .expect("session");
    before.put(&there.name, &there.body).await.expect("upload");
    before.quit().await;
    assert_eq!(f.uploads().get(&there.name), Some(&1));

    // Two replicas: one forwards, the other stands by.
    let (one, stop) = f.start(f.ftp.port).await;
    let (other, stop_other) = f.start(f.ftp.port).await;
    f.until(SENT, 3).await;
    f.until("SELECT count(*) FROM forward_outbox", 0).await;
    let uploads = f.uploads();
    assert_eq!(uploads.get(&there.name), Some(&1), "re-sent: {uploads:?}");
    assert_eq!(uploads.len(), 3, "{uploads:?}");

    // The same readings written again (a redelivery): queued, not sent,
    // and known unchanged from the record of what was sent, without asking
    // the server.
    f.store(&a, times[1], &PARAMETERS).await;
    f.until("SELECT count(*) FROM forward_outbox", 0).await;
    assert_eq!(f.uploads().values().sum::<usize>(), 3);
    let (a, b) = (health(one.http_addr).await, health(other.http_addr).await);
    let (active, standby) = if a["active"] == true { (a, b) } else { (b, a) };
    assert_eq!(
        (
            &active["active"],
            &active["sent"],
            &active["recovered"],
            &active["unchanged"]
        ),
        (&true.into(), &2.into(), &1.into(), &1.into()),
        "{active}"
    );
    assert_eq!(
        (&standby["active"], &standby["sent"]),
        (&false.into(), &0.into()),
        "{standby}"
    );
    stop.cancel();
    one.wait().await.expect("clean stop");
    stop_other.cancel();
    other.wait().await.expect("clean stop");
}

/// The forwarder's `/health` status.
async fn health(addr: std::net::SocketAddr) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("answer");
    let body = answer.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    v["status"].clone()
}
