//! The TCP receiver against the real Kafka: every format arrives exactly as
//! sent, replies follow the Kafka acknowledgement, bad input is rejected
//! with its raw bytes and reason while good frames keep flowing.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use quantrac_ingest::Ingest;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::{circular10, hj212, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn reply_line(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut line = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut line))
        .await
        .expect("a reply in time")
        .expect("read");
    line
}

fn hj212_frame(sample: &quantrac_proto::Sample, pw: &str) -> Vec<u8> {
    let packet = hj212::Packet::from_sample(sample, "2011", "32", pw, 1, Utc::now(), utc7());
    hj212::encode(&packet)
}

#[tokio::test]
async fn every_tcp_format_arrives_in_kafka_exactly_as_sent() {
    let topics = create_topics(&unique("t-tcp")).await;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(
        test_config(&topics, &unique("n")),
        quantrac_ingest::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let addr = ingest.tcp_addr.expect("tcp on");

    let t0 = Utc
        .with_ymd_and_hms(2025, 1, 15, 3, 35, 0)
        .single()
        .expect("time");
    let (s_hj, s_c10, s_json) = (unique("HJ"), unique("C10"), unique("JS"));
    let hj = sample(&s_hj, t0, 42.0);
    let c10 = sample(&s_c10, t0, 43.5);
    let js = sample(&s_json, t0, 44.25);

    let (rd, mut wr) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);

    // HJ 212 carries no unit: what arrives has none.
    wr.write_all(&hj212_frame(&hj, "test-pw"))
        .await
        .expect("write");
    let reply = reply_line(&mut rd).await;
    let reply = hj212::decode(reply.as_bytes()).expect("reply is an HJ 212 packet");
    assert_eq!(reply.cn, "9014", "data response");

    let mut frame = circular10::file_name(
        "PhuYen",
        "HoaHiep",
        &s_c10,
        t0.with_timezone(&utc7()).naive_local(),
    )
    .into_bytes();
    frame.extend_from_slice(b"\r\n");
    frame.extend_from_slice(&circular10::encode_record(&c10, utc7()));
    frame.extend_from_slice(b"\r\n");
    wr.write_all(&frame).await.expect("write");
    assert_eq!(reply_line(&mut rd).await, "OK 4\n");

    let mut line = json::encode(&js);
    line.push(b'\n');
    wr.write_all(&line).await.expect("write");
    let v: serde_json::Value =
        serde_json::from_str(&reply_line(&mut rd).await).expect("json reply");
    assert_eq!(v["ok"], true);
    assert_eq!(v["readings"], 4);

    let batches = read_batches(&topics.raw, 3, WAIT).await;
    assert_eq!(batches.len(), 3, "one record per sample");
    for b in &batches {
        let got = batch_to_sample(b);
        let (want, source) = if b.station_id == s_hj {
            let mut want = hj.clone();
            // HJ 212 flags: status travels, units don't.
            for v in &mut want.values {
                v.unit.clear();
                v.device_flag = match v.status {
                    quantrac_proto::domain::DeviceStatus::Measuring => "N".into(),
                    quantrac_proto::domain::DeviceStatus::Calibrating => "C".into(),
                    quantrac_proto::domain::DeviceStatus::Error => "D".into(),
                };
            }
            (want, SourceProtocol::TcpHj212)
        } else if b.station_id == s_c10 {
            (c10.clone(), SourceProtocol::TcpCircular10)
        } else {
            (js.clone(), SourceProtocol::TcpJson)
        };
        assert_eq!(got, want, "station {}", b.station_id);
        for r in &b.readings {
            assert_eq!(r.source(), source);
            assert!(r.received_at.is_some());
            assert_eq!(r.ingest_id.len(), 36, "UUID ingest id");
        }
    }
    let s = ingest.status.snapshot();
    assert_eq!((s.received, s.acknowledged, s.rejected), (3, 3, 0));
    shutdown.cancel();
    ingest.wait().await.expect("clean stop");
}

#[tokio::test]
async fn bad_frames_are_rejected_with_reason_and_good_ones_keep_flowing() {
    let topics = create_topics(&unique("t-bad")).await;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(
        test_config(&topics, &unique("n")),
        quantrac_ingest::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    let t0 = Utc::now();
    let station = unique("BAD");

    // 1. Wrong HJ 212 password: refused with QnRtn=3.
    let wrong_pw = hj212_frame(&sample(&station, t0, 1.0), "nope");
    wr.write_all(&wrong_pw).await.expect("write");
    let reply = hj212::decode(reply_line(&mut rd).await.as_bytes()).expect("HJ 212 reply");
    assert_eq!((reply.cn.as_str(), reply.cp.as_str()), ("9011", "QnRtn=3"));

    // 2. Corrupted CRC: no reply (fields untrusted), but kept as rejected.
    let mut bad_crc = hj212_frame(&sample(&station, t0, 2.0), "test-pw");
    let n = bad_crc.len();
    bad_crc[n - 3] = if bad_crc[n - 3] == b'0' { b'1' } else { b'0' };
    wr.write_all(&bad_crc).await.expect("write");

    // 3. Bad JSON and a bad Circular 10 value: clear error replies.
    wr.write_all(b"{\"station_id\":\"x\"\n")
        .await
        .expect("write");
    let v: serde_json::Value = serde_json::from_str(&reply_line(&mut rd).await).expect("json");
    assert_eq!(v["ok"], false);
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("json."),
        "{v}"
    );
    let bad_c10 = format!(
        "PhuYen_HoaHiep_{station}_20250115103500.txt\r\nCOD\tabc\tmg/L\t20250115103500\t00\r\n\r\n"
    );
    wr.write_all(bad_c10.as_bytes()).await.expect("write");
    let reply = reply_line(&mut rd).await;
    assert!(reply.starts_with("ERR circular10.bad_value"), "{reply}");

    // 4. A good frame on the same connection still goes through.
    let good = hj212_frame(&sample(&station, t0, 3.0), "test-pw");
    wr.write_all(&good).await.expect("write");
    let reply = hj212::decode(reply_line(&mut rd).await.as_bytes()).expect("HJ 212 reply");
    assert_eq!(reply.cn, "9014");

    let rejected = read_rejected(&topics.rejected, 4, WAIT).await;
    let reasons: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons.contains(&"auth.bad_password"), "{reasons:?}");
    assert!(reasons.contains(&"hj212.crc_mismatch"), "{reasons:?}");
    assert!(reasons.contains(&"circular10.bad_value"), "{reasons:?}");
    let crc = rejected
        .iter()
        .find(|r| r.reason == "hj212.crc_mismatch")
        .expect("crc rejection");
    // The raw bytes are kept (without CRLF), less the password.
    let sent = String::from_utf8_lossy(&bad_crc[..bad_crc.len() - 2])
        .replace("PW=test-pw", "PW=<redacted>");
    assert_eq!(
        String::from_utf8_lossy(&crc.raw),
        sent,
        "raw bytes kept, password redacted"
    );
    let pw = rejected
        .iter()
        .find(|r| r.reason == "auth.bad_password")
        .expect("pw rejection");
    assert_eq!(pw.station_id, station);
    assert!(
        !String::from_utf8_lossy(&pw.raw).contains("nope"),
        "the tried password is not kept"
    );

    let good = read_batches(&topics.raw, 1, WAIT).await;
    assert_eq!(good.len(), 1);
    assert_eq!(
        good[0]
            .readings
            .iter()
            .find(|r| r.parameter == "COD")
            .map(|r| r.value),
        Some(3.0)
    );
    let snapshot = ingest.status.snapshot();
    assert_eq!(snapshot.rejected, 4);
    // Every frame's record (a rejection too) was acknowledged by Kafka.
    assert_eq!(snapshot.acknowledged, 5);
    shutdown.cancel();
    ingest.wait().await.expect("clean stop");
}

#[tokio::test]
async fn hj212_reply_waits_for_kafka() {
    // A "broker" that accepts connections and never answers: Kafka cannot
    // acknowledge, so the logger must get no data response.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let topics = Topics::named(&unique("never"));
    let mut config = test_config(&topics, &unique("n"));
    config.kafka.brokers = silent_addr.to_string();
    config.kafka.message_timeout = Duration::from_secs(3);
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, shutdown.clone())
        .await
        .expect("start");
    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    wr.write_all(&hj212_frame(
        &sample(&unique("S"), Utc::now(), 1.0),
        "test-pw",
    ))
    .await
    .expect("write");
    let mut line = String::new();
    // Longer than message_timeout: the delivery fails, and still no reply.
    let got = tokio::time::timeout(Duration::from_secs(6), rd.read_line(&mut line)).await;
    assert!(
        got.is_err(),
        "no reply may precede the Kafka acknowledgement, got {line:?}"
    );
    let s = ingest.status.snapshot();
    assert_eq!((s.received, s.acknowledged), (1, 0));
    assert!(s.kafka_failing);
    shutdown.cancel();
    ingest.wait().await.expect("stop");
    hold.abort();
}

#[tokio::test]
async fn hj212_reply_comes_after_the_record_is_readable() {
    // With a real broker: when the reply arrives the record must already be
    // in the topic.
    let topics = create_topics(&unique("t-order")).await;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(
        test_config(&topics, &unique("n")),
        quantrac_ingest::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    let station = unique("ORD");
    for i in 0..20 {
        wr.write_all(&hj212_frame(
            &sample(&station, Utc::now(), f64::from(i)),
            "test-pw",
        ))
        .await
        .expect("write");
        let reply = hj212::decode(reply_line(&mut rd).await.as_bytes()).expect("reply");
        assert_eq!(reply.cn, "9014");
        let seen = read_batches(&topics.raw, i as usize + 1, Duration::from_secs(10)).await;
        assert_eq!(
            seen.len(),
            i as usize + 1,
            "record {i} readable once acknowledged"
        );
    }
    shutdown.cancel();
    ingest.wait().await.expect("stop");
}

#[tokio::test]
async fn oversized_frames_and_slow_senders_are_cut_off() {
    let topics = create_topics(&unique("t-limits")).await;
    let mut config = test_config(&topics, &unique("n"));
    config.tcp.max_frame_bytes = 256;
    config.tcp.idle_timeout = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, shutdown.clone())
        .await
        .expect("start");
    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    let mut big = b"{\"values\":[".to_vec();
    big.extend(std::iter::repeat_n(b' ', 1000));
    big.push(b'\n');
    wr.write_all(&big).await.expect("write");
    let v: serde_json::Value = serde_json::from_str(&reply_line(&mut rd).await).expect("json");
    assert_eq!(v["reason"], "tcp.frame_too_large");
    // Idle for longer than idle_timeout: the server closes the connection.
    let mut rest = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut rest))
        .await
        .expect("closed in time");
    assert_eq!(n.expect("read"), 0, "EOF after idle timeout");
    shutdown.cancel();
    ingest.wait().await.expect("stop");
}

/// A logger's restart notice (CN 2081) and an unknown command: the notice
/// is answered as an upload (CN 9014, so the logger stops resending it),
/// the unknown command is refused with QnRtn=8; neither becomes a reading.
#[tokio::test]
async fn station_notices_are_answered_unknown_commands_refused() {
    let topics = create_topics(&unique("t-notice")).await;
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(
        test_config(&topics, &unique("n")),
        quantrac_ingest::Edge::Kafka,
        None,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    let station = unique("NOTE");
    let packet = |qn: &str, cn: &str, cp: &str| {
        hj212::encode(&hj212::Packet {
            qn: qn.into(),
            st: "32".into(),
            cn: cn.into(),
            pw: "test-pw".into(),
            mn: station.clone(),
            flag: 5,
            cp: cp.into(),
        })
    };
    wr.write_all(&packet(
        "20261201100000001",
        "2081",
        "DataTime=20261201100000;RestartTime=20261201095812",
    ))
    .await
    .expect("write");
    let reply = hj212::decode(reply_line(&mut rd).await.as_bytes()).expect("reply");
    assert_eq!(
        (reply.cn.as_str(), reply.qn.as_str()),
        ("9014", "20261201100000001")
    );
    wr.write_all(&packet(
        "20261201100000002",
        "1234",
        "DataTime=20261201100000",
    ))
    .await
    .expect("write");
    let reply = hj212::decode(reply_line(&mut rd).await.as_bytes()).expect("reply");
    assert_eq!((reply.cn.as_str(), reply.cp.as_str()), ("9011", "QnRtn=8"));
    let s = ingest.status.snapshot();
    assert_eq!(s.rejected, 1, "only the unknown command");
    // The notice is on the readings topic, for the processor to keep as a
    // station event: the restart's own time (UTC+7), the segment as sent.
    let batches = read_batches(&topics.raw, 1, Duration::from_secs(30)).await;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].station_id, station);
    assert!(batches[0].readings.is_empty());
    let n = &batches[0].notices;
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].kind.as_str(), n[0].code.as_str()),
        ("restart", "2081")
    );
    assert_eq!(
        n[0].at
            .and_then(|t| quantrac_proto::domain::from_timestamp(&t)),
        Some("2026-12-01T02:58:12Z".parse().expect("time"))
    );
    assert_eq!(
        n[0].detail,
        "DataTime=20261201100000;RestartTime=20261201095812"
    );
    shutdown.cancel();
    ingest.wait().await.expect("clean stop");
}
