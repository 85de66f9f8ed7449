//! Station credentials from the registry, against the real Kafka: each TCP
//! protocol refuses a missing credential, a wrong one and another
//! station's; the right one is accepted; a secret changed in the registry
//! is taken without a restart; the secret never reaches `ingest.rejected`.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use quantrac_ingest::Ingest;
use quantrac_proto::wire::{circular10, hj212, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// A registry of stations `a` and `b` with secrets, and `open` without.
fn registry(a: &str, a_secret: &str, b: &str, b_secret: &str, open: &str) -> String {
    let station = |id: &str, secret: Option<&str>| {
        let hash = secret
            .map(|s| {
                format!(
                    "secret_hash = \"{}\"\n",
                    quantrac_plumbing::secret::hash(s).expect("hash")
                )
            })
            .unwrap_or_default();
        format!(
            "[[stations]]\nid = \"{id}\"\nname = \"x\"\nfacility = \"x\"\nindustrial_zone = \"x\"\nprovince = \"x\"\n\
             latitude = 13.0\nlongitude = 109.0\nkind = \"wastewater\"\n{hash}\
             parameters = [{{ code = \"COD\", unit = \"mg/L\", range_min = 0, range_max = 1000 }}]\n\n"
        )
    };
    [
        station(a, Some(a_secret)),
        station(b, Some(b_secret)),
        station(open, None),
    ]
    .concat()
}

struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let (rd, wr) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Conn {
            rd: BufReader::new(rd),
            wr,
        }
    }

    /// Sends `frame`, returns the reply line ("" when the connection was
    /// closed).
    async fn ask(&mut self, frame: &[u8]) -> String {
        self.wr.write_all(frame).await.expect("write");
        let mut line = String::new();
        tokio::time::timeout(WAIT, self.rd.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        line
    }
}

fn json_line(station: &str, cod: f64) -> Vec<u8> {
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    let mut l = json::encode(&sample(station, t, cod));
    l.push(b'\n');
    l
}

fn c10_record(station: &str, cod: f64) -> Vec<u8> {
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    let mut f = circular10::file_name(
        "PhuYen",
        "HoaHiep",
        station,
        t.with_timezone(&utc7()).naive_local(),
    )
    .into_bytes();
    f.extend_from_slice(b"\r\n");
    f.extend_from_slice(&circular10::encode_record(&sample(station, t, cod), utc7()));
    f.extend_from_slice(b"\r\n");
    f
}

fn hj212_packet(station: &str, pw: &str) -> Vec<u8> {
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    hj212::encode(&hj212::Packet::from_sample(
        &sample(station, t, 40.0),
        "2011",
        "32",
        pw,
        1,
        Utc::now(),
        utc7(),
    ))
}

fn auth_json(station: &str, secret: &str) -> Vec<u8> {
    format!("{{\"auth\":{{\"station\":\"{station}\",\"secret\":\"{secret}\"}}}}\n").into_bytes()
}

fn reason(reply: &str) -> String {
    serde_json::from_str::<serde_json::Value>(reply).expect("json reply")["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn every_tcp_protocol_checks_the_station_credential() {
    let topics = create_topics(&unique("t-cred")).await;
    let (a, b, open) = (unique("A"), unique("B"), unique("OPEN"));
    let (a_secret, b_secret) = ("a-secret-1", "b-secret-1");
    let path = std::env::temp_dir().join(format!("{}.toml", unique("registry")));
    std::fs::write(&path, registry(&a, a_secret, &b, b_secret, &open)).expect("registry");
    let mut config = test_config(&topics, &unique("n"));
    config.auth.registry = Some(path.clone());
    config.auth.reload_every = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
        .await
        .expect("start");
    let addr = ingest.tcp_addr.expect("tcp");

    // JSON lines: no credential, a wrong one, another station's.
    let mut c = Conn::open(addr).await;
    assert_eq!(reason(&c.ask(&json_line(&a, 10.0)).await), "auth.required");
    assert_eq!(
        reason(&c.ask(&auth_json(&a, "guess")).await),
        "auth.bad_secret"
    );
    let mut c = Conn::open(addr).await;
    let ok: serde_json::Value =
        serde_json::from_str(&c.ask(&auth_json(&b, b_secret)).await).expect("json");
    assert_eq!(
        (ok["ok"].as_bool(), ok["auth"].as_str()),
        (Some(true), Some(b.as_str()))
    );
    assert_eq!(
        reason(&c.ask(&json_line(&a, 10.0)).await),
        "auth.required",
        "B's credential is not A's"
    );
    // Its own credential: accepted; a station without a secret stays open.
    assert!(
        c.ask(&auth_json(&a, a_secret))
            .await
            .contains("\"ok\":true")
    );
    assert!(
        c.ask(&json_line(&a, 300.0))
            .await
            .contains("\"readings\":4")
    );
    let mut anon = Conn::open(addr).await;
    assert!(
        anon.ask(&json_line(&open, 5.0))
            .await
            .contains("\"ok\":true")
    );

    // Circular 10.
    let mut c = Conn::open(addr).await;
    assert!(
        c.ask(&c10_record(&a, 10.0))
            .await
            .starts_with("ERR auth.required")
    );
    assert!(
        c.ask(format!("AUTH {a} wrong\n").as_bytes())
            .await
            .starts_with("ERR auth.bad_secret")
    );
    assert_eq!(
        c.ask(format!("AUTH {a} {a_secret}\n").as_bytes()).await,
        format!("OK AUTH {a}\n")
    );
    assert_eq!(c.ask(&c10_record(&a, 11.0)).await, "OK 4\n");
    assert!(
        c.ask(&c10_record(&b, 12.0))
            .await
            .starts_with("ERR auth.required")
    );

    // HJ 212: PW is the registry secret.
    let mut c = Conn::open(addr).await;
    let refused =
        hj212::decode(c.ask(&hj212_packet(&a, "test-pw")).await.as_bytes()).expect("reply");
    assert_eq!(
        refused.cn, "9011",
        "the configured default password no longer opens A"
    );
    let accepted =
        hj212::decode(c.ask(&hj212_packet(&a, a_secret)).await.as_bytes()).expect("reply");
    assert_eq!(accepted.cn, "9014");
    let refused =
        hj212::decode(c.ask(&hj212_packet(&b, a_secret)).await.as_bytes()).expect("reply");
    assert_eq!(refused.cn, "9011", "A's secret does not open B");

    // Brute force: the connection is closed after max_failures.
    let mut c = Conn::open(addr).await;
    for _ in 0..2 {
        assert_eq!(
            reason(&c.ask(&auth_json(&a, "guess")).await),
            "auth.bad_secret"
        );
    }
    assert_eq!(
        reason(&c.ask(&auth_json(&a, "guess")).await),
        "auth.bad_secret"
    );
    let mut rest = String::new();
    let n = tokio::time::timeout(WAIT, c.rd.read_line(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0, "closed after 3 failures");

    // The registry changes A's secret: taken without a restart.
    std::fs::write(&path, registry(&a, "a-secret-2", &b, b_secret, &open)).expect("registry");
    let mut taken = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = Conn::open(addr).await;
        if c.ask(&auth_json(&a, "a-secret-2"))
            .await
            .contains("\"ok\":true")
        {
            taken = true;
            assert_eq!(
                reason(&c.ask(&auth_json(&a, a_secret)).await),
                "auth.bad_secret",
                "the old one is gone"
            );
            break;
        }
    }
    assert!(taken, "the new secret was not taken");

    // No secret on ingest.rejected.
    // 3 JSON, 3 Circular 10, 2 HJ 212, 3 brute force, 1 old secret.
    let rejected = read_rejected_where(&topics.rejected, 12, WAIT, |r| {
        r.reason.starts_with("auth.")
    })
    .await;
    assert_eq!(rejected.len(), 12);
    for r in &rejected {
        let raw = String::from_utf8_lossy(&r.raw);
        assert!(
            !raw.contains("guess") && !raw.contains("wrong") && !raw.contains("a-secret"),
            "{raw}"
        );
    }
    // Only the accepted readings reached readings.raw: A's 300 (JSON), A's
    // C10 11, A's HJ 212, and the open station's.
    let batches = read_batches(&topics.raw, 4, WAIT).await;
    assert_eq!(batches.len(), 4);
    stop.cancel();
    ingest.wait().await.expect("clean stop");
    let _ = std::fs::remove_file(&path);
}
