//! Slow senders against the real Kafka: 1,000 connections from one
//! address, each sending one byte of a frame and nothing more, while a
//! station from another address must still be answered within a second.
//! Without the per-address cap the slow ones take every slot and the
//! station waits in the kernel's backlog; without the whole-frame deadline
//! each would hold its slot for the idle timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use quantrac_ingest::Ingest;
use quantrac_proto::wire::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// A connection from `from` (any 127.0.0.0/8 address is local on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

#[tokio::test]
async fn a_thousand_slow_senders_do_not_lock_out_a_station() {
    let topics = create_topics(&unique("t-slow")).await;
    let mut config = test_config(&topics, &unique("n"));
    config.tcp.max_connections = 200;
    config.tcp.max_connections_per_address = 50;
    config.tcp.read_timeout = Duration::from_secs(3);
    let stop = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
        .await
        .expect("start");
    let addr = ingest.tcp_addr.expect("tcp");

    // 1,000 slow senders from 127.0.0.1: one byte of a JSON line each.
    let mut slow = Vec::new();
    for _ in 0..1_000 {
        if let Ok(mut s) = connect_from([127, 0, 0, 1], addr).await {
            let _ = s.write_all(b"{").await;
            slow.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A station from another address: answered within a second.
    let started = Instant::now();
    let s = connect_from([127, 0, 0, 2], addr).await.expect("connect");
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = json::encode(&sample(&unique("REAL"), Utc::now(), 42.0));
    line.push(b'\n');
    wr.write_all(&line).await.expect("write");
    let mut reply = String::new();
    let answered = tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut reply)).await;
    let took = started.elapsed();
    assert!(answered.is_ok(), "no reply within 10 s");
    assert!(reply.contains("\"ok\":true"), "{reply}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");

    // The slow senders' frames hit the deadline: their connections close.
    // The first ones were accepted (those past the cap were closed at once).
    let mut one = slow.remove(0);
    let mut buf = [0u8; 16];
    let waited = Instant::now();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut one, &mut buf),
    )
    .await;
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "closed by the 3 s frame deadline, not the idle timeout"
    );
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a trickling frame is cut at read_timeout: {closed:?}"
    );
    drop(slow);
    stop.cancel();
    ingest.wait().await.expect("stop");
}
