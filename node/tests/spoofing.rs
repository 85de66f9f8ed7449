//! Issue 8's spoofing scenario end to end in single-node mode (ingest,
//! processor and alerting over the in-process bus, the real PostgreSQL):
//! a clean COD value sent over TCP for a station's next slot, then the
//! station's real, exceeding value for the same slot. The real value is
//! not lost: it is kept as a conflict with both origins and raises a
//! `conflicting_value` alert.

mod common;

use std::time::Duration;

use common::*;
use quantrac_ingest::{Ingest, IngestConfig};
use quantrac_processor::Processor;
use quantrac_proto::wire::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_pre_submitted_value_does_not_silence_the_real_one() {
    let db_url = fresh_database().await;
    let prefix = unique("SPOOF");
    let station = format!("{prefix}-0");
    let reg = registry_file(&prefix, 1);
    let topics = Topics {
        raw: "readings.raw".into(),
        valid: "unused".into(),
        rejected: "unused".into(),
    };
    let mut pconfig = test_config(&db_url, &topics, reg.clone());
    pconfig.kafka.brokers = "127.0.0.1:1".into();
    let mut iconfig = IngestConfig {
        node_id: unique("node"),
        ..Default::default()
    };
    iconfig.mqtt.enabled = false;
    iconfig.tcp.listen = "127.0.0.1:0".parse().expect("addr");
    iconfig.http.listen = "127.0.0.1:0".parse().expect("addr");
    iconfig.kafka.brokers = "127.0.0.1:1".into();
    iconfig.kafka.readings_topic = topics.raw.clone();

    let stop = CancellationToken::new();
    let (tx, rx) = quantrac_plumbing::bus::channel(16);
    let (stored_tx, stored_rx) = tokio::sync::mpsc::channel(16);
    let processor = Processor::start(
        pconfig,
        quantrac_processor::Edge::Bus(quantrac_processor::local::LocalBus {
            input: rx,
            stored: Some(stored_tx),
        }),
        None,
        stop.clone(),
    )
    .await
    .expect("processor");
    let alerting = quantrac_alerting::Alerting::start(
        alerting_config(&db_url, &reg),
        quantrac_alerting::Edge::Bus(stored_rx),
        None,
        stop.clone(),
    )
    .await
    .expect("alerting");
    let ingest = Ingest::start(iconfig, quantrac_ingest::Edge::Bus(tx), None, stop.clone())
        .await
        .expect("ingest");

    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    // The spoofed clean value first, then the station's real one (above
    // Cmax 148.5), for the same slot.
    for value in [10.0, 300.0] {
        let sample = cod(&station, &[value], 5).remove(0);
        let mut line = json::encode(&sample);
        line.push(b'\n');
        wr.write_all(&line).await.expect("write");
        let mut reply = String::new();
        tokio::time::timeout(WAIT, rd.read_line(&mut reply))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(reply.contains("\"ok\":true"), "{reply}");
    }

    let client = db(&db_url).await;
    let stored: f64 = client
        .query_one(
            "SELECT value FROM readings WHERE station_id = $1 AND parameter = 'COD'",
            &[&station],
        )
        .await
        .expect("stored")
        .get(0);
    assert_eq!(stored, 10.0, "the first value stays the stored one");
    let kept: (f64, f64) = client
        .query_one(
            "SELECT stored_value, value FROM reading_conflicts WHERE station_id = $1",
            &[&station],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("the real value kept as a conflict");
    assert_eq!(kept, (10.0, 300.0));
    let alerts = wait_for_count(
        &client,
        &format!(
            "SELECT count(*) FROM alerts WHERE rule = 'conflicting_value' AND station_id = '{station}' AND observed_value = 300"
        ),
        1,
        WAIT,
    )
    .await;
    assert_eq!(alerts, 1, "a conflicting_value alert for the real value");

    stop.cancel();
    ingest.wait().await.expect("ingest stop");
    processor.wait().await.expect("processor stop");
    alerting.wait().await.expect("alerting stop");
}
