//! The FTP(S) receiver against the real Kafka, with a real FTP client:
//! a station's Circular 10 upload is answered 226 with its readings on
//! `readings.raw`; a wrong password, another station's file and a file
//! that is not a Circular 10 file are refused with the reason, the refused
//! bytes kept on `ingest.rejected`; FTPS, and a plain login refused where
//! TLS is required.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use quantrac_ingest::Ingest;
use quantrac_testkit::ftp::{free_port, free_ports, upload, upload_tls, wait_listening};
use quantrac_testkit::registry::Outfalls;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "ftp-secret-1";

/// Ingest with the FTP receiver (and `tls` for FTPS) for two stations
/// `<prefix>-0` and `<prefix>-1`, both with the secret [`SECRET`].
async fn start(
    topics: &Topics,
    prefix: &str,
    tls: bool,
) -> (Ingest, SocketAddr, CancellationToken) {
    let hash = quantrac_plumbing::secret::hash(SECRET).expect("hash");
    let registry = Outfalls::numbered(prefix, 2)
        .with_lines(&format!("secret_hash = \"{hash}\""))
        .write()
        .expect("registry");
    let mut config = test_config(topics, &unique("ftp"));
    config.auth.registry = Some(registry);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    config.ftp.listen = Some(addr);
    config.ftp.passive_ports = free_ports(4);
    if tls {
        let (cert, key) = quantrac_testkit::env::tls_server();
        config.ftp.tls = Some(quantrac_plumbing::tls::ServerTls {
            cert,
            key,
            client_ca: None,
            require_client_cert: false,
        });
        config.ftp.require_tls = true;
    }
    let stop = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
        .await
        .expect("start");
    assert_eq!(ingest.ftp_addr, Some(addr));
    wait_listening(addr).await;
    (ingest, addr, stop)
}

/// A Circular 10 file of `station` at 2026-12-01 10:00 local time.
fn file(station: &str, cod: f64) -> (String, Vec<u8>) {
    (
        format!("PY_KCNHH_{station}_20261201100000.txt"),
        format!("COD\t{cod}\tmg/L\t20261201100000\t00\r\npH\t7.1\tpH\t20261201100000\t00\r\n")
            .into_bytes(),
    )
}

#[tokio::test]
async fn uploads_are_stored_and_refusals_say_why() {
    let topics = create_topics(&unique("t-ftp")).await;
    let prefix = unique("FT");
    let (a, b) = (format!("{prefix}-0"), format!("{prefix}-1"));
    let (ingest, addr, stop) = start(&topics, &prefix, false).await;

    // The station's own file: 226, then its readings are on Kafka.
    let (name, body) = file(&a, 42.0);
    assert_eq!(
        upload(addr, &a, SECRET, &name, &body).await,
        Ok(body.len() as u64)
    );
    let batches = read_batches(&topics.raw, 1, WAIT).await;
    assert_eq!(batches.len(), 1);
    let readings: Vec<_> = batches[0]
        .readings
        .iter()
        .map(|r| (r.station_id.as_str(), r.parameter.as_str(), r.value))
        .collect();
    assert_eq!(
        readings,
        vec![(a.as_str(), "COD", 42.0), (a.as_str(), "pH", 7.1)]
    );
    assert_eq!(
        batches[0].readings[0].source,
        quantrac_proto::v1::SourceProtocol::FtpCircular10 as i32
    );

    // A wrong password: no login.
    let wrong = upload(addr, &a, "not-it", &name, &body).await;
    assert!(
        wrong.as_ref().is_err_and(|e| e.starts_with("login")),
        "{wrong:?}"
    );

    // Another station's file under this station's login: 550, kept.
    let (other, other_body) = file(&b, 1.0);
    let refused = upload(addr, &a, SECRET, &other, &other_body).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("550 Permission denied")),
        "{refused:?}"
    );
    // A record that is not Circular 10: 551 (page type unknown).
    let garbage = upload(addr, &a, SECRET, &name, b"not a record\r\n").await;
    assert!(
        garbage.as_ref().is_err_and(|e| e.contains("551")),
        "{garbage:?}"
    );
    // Not a Circular 10 file name: 553.
    let bad_name = upload(addr, &a, SECRET, "data.csv", &body).await;
    assert!(
        bad_name.as_ref().is_err_and(|e| e.contains("553")),
        "{bad_name:?}"
    );
    let rejected = read_rejected(&topics.rejected, 3, WAIT).await;
    let reasons: Vec<_> = rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0], "ftp.wrong_station");
    assert!(reasons[1].starts_with("circular10."), "{reasons:?}");
    assert_eq!(reasons[2], "circular10.bad_file_name");
    assert!(rejected[0].raw.starts_with(other.as_bytes()), "name first");
    assert!(
        rejected[0].raw.ends_with(&other_body),
        "then the bytes as sent"
    );
    assert_eq!(rejected[0].station_id, a);
    // Nothing more reached the readings topic.
    assert_eq!(
        read_batches(&topics.raw, 2, Duration::from_secs(2))
            .await
            .len(),
        1
    );

    stop.cancel();
    ingest.wait().await.expect("clean stop");
}

#[tokio::test]
async fn ftps_uploads_and_plain_logins_refused_where_tls_is_required() {
    let topics = create_topics(&unique("t-ftps")).await;
    let prefix = unique("FS");
    let a = format!("{prefix}-0");
    let (ingest, addr, stop) = start(&topics, &prefix, true).await;
    let (name, body) = file(&a, 55.0);

    let plain = upload(addr, &a, SECRET, &name, &body).await;
    assert!(
        plain.as_ref().is_err_and(|e| e.starts_with("login")),
        "{plain:?}"
    );
    let ca = quantrac_testkit::env::tls_ca();
    assert_eq!(
        upload_tls(addr, &ca, &a, SECRET, &name, &body).await,
        Ok(body.len() as u64)
    );
    let batches = read_batches(&topics.raw, 1, WAIT).await;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].readings[0].value, 55.0);

    stop.cancel();
    ingest.wait().await.expect("clean stop");
}
