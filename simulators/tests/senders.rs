//! The senders against tiny fake ingests on `127.0.0.1:0`: a TCP one that
//! decodes HJ 212, Circular 10 and JSON lines and answers like ingest, and
//! an MQTT broker that PUBACKs. What arrives is checked against the fleet's
//! plan.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::{SinkExt, StreamExt};
use quantrac_proto::Sample;
use quantrac_proto::domain::parameter_by_hj212;
use quantrac_proto::units;
use quantrac_proto::wire::{circular10, hj212, json};
use quantrac_simulators::frames::vn_offset;
use quantrac_simulators::{
    Anomalies, Fleet, FleetConfig, MqttConfig, Pacing, Protocol, ProtocolMix, RunConfig, Simulator,
    Stats, TcpConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 15, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn fleet(
    protocol: Protocol,
    stations: usize,
    anomalies: Anomalies,
) -> Result<Arc<Fleet>, quantrac_simulators::SimError> {
    let config = FleetConfig {
        seed: 42,
        stations,
        protocols: ProtocolMix::only(protocol),
        anomalies,
        ..FleetConfig::default()
    };
    Ok(Arc::new(Fleet::new(&config)?))
}

fn run_config(addr: SocketAddr, slots: u64) -> RunConfig {
    RunConfig {
        start: start(),
        slots: Some(slots),
        pacing: Pacing::Unlimited,
        tcp: TcpConfig {
            addr: addr.to_string(),
            window: 4,
            reply_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..TcpConfig::default()
        },
        mqtt: MqttConfig {
            url: format!("mqtt://{addr}"),
            inflight: 8,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..MqttConfig::default()
        },
        drain_timeout: Duration::from_secs(1),
    }
}

async fn run(sim: Simulator) -> Result<Stats, Box<dyn std::error::Error>> {
    Ok(tokio::time::timeout(Duration::from_secs(20), sim.run(CancellationToken::new())).await??)
}

/// A sample as comparable across formats: Circular 10 codes, no units
/// (HJ 212 carries none), the value in the catalogue's unit to 6 decimals
/// (HJ 212 sends the standard's unit, so its values come back through a
/// conversion) and status.
type Key = (String, DateTime<Utc>, Vec<(String, i64, &'static str)>);

fn key(s: &Sample) -> Key {
    let values = s
        .values
        .iter()
        .map(|v| {
            let (code, value) = match parameter_by_hj212(&v.parameter) {
                Some(p) => (
                    p.code,
                    units::convert(v.value, p.hj212_unit, p.unit, p.code).expect("convertible"),
                ),
                None => (v.parameter.as_str(), v.value),
            };
            (
                code.to_owned(),
                (value * 1e6).round() as i64,
                v.status.circular10_code(),
            )
        })
        .collect();
    (s.station_id.clone(), s.measured_at, values)
}

/// What the fake ingest does with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Ack,
    /// Refused for good (wrong password, bad content).
    Refuse,
    /// "Resend later" (bus unavailable): JSON and Circular 10 only.
    Later,
    /// No reply at all, as ingest does for HJ 212 when its bus is down.
    Silent,
    /// Close the connection without replying.
    Close,
}

/// (connection number, frame number on that connection from 1, sample).
type Policy = Arc<dyn Fn(usize, usize, &Sample) -> Action + Send + Sync>;

fn always_ack() -> Policy {
    Arc::new(|_, _, _| Action::Ack)
}

#[derive(Debug)]
struct Received {
    connection: usize,
    sample: Sample,
}

struct FakeIngest {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Most frames read on one connection and not yet answered.
    max_outstanding: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl FakeIngest {
    async fn start(policy: Policy, reply_delay: Duration) -> Result<FakeIngest, std::io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let ingest = FakeIngest {
            addr: listener.local_addr()?,
            received: Arc::default(),
            max_outstanding: Arc::default(),
            connections: Arc::default(),
        };
        let (received, max_outstanding, connections) = (
            ingest.received.clone(),
            ingest.max_outstanding.clone(),
            ingest.connections.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(
                    stream,
                    connection,
                    policy.clone(),
                    reply_delay,
                    received.clone(),
                    max_outstanding.clone(),
                ));
            }
        });
        Ok(ingest)
    }

    fn samples(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Reads frames like ingest does (sniffing the first bytes) and answers in
/// order from a separate writer, after `reply_delay` each, so that frames
/// pile up when the client pipelines.
async fn serve(
    stream: TcpStream,
    connection: usize,
    policy: Policy,
    reply_delay: Duration,
    received: Arc<Mutex<Vec<Received>>>,
    max_outstanding: Arc<AtomicUsize>,
) {
    let (read, mut write) = stream.into_split();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let (replies, mut to_write) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let writer_outstanding = outstanding.clone();
    let writer = tokio::spawn(async move {
        while let Some(Some(reply)) = to_write.recv().await {
            tokio::time::sleep(reply_delay).await;
            if !reply.is_empty() && write.write_all(&reply).await.is_err() {
                return;
            }
            writer_outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        // Close: drop the write half after the replies queued before it.
    });
    let mut lines = BufReader::new(read);
    let mut frame_no = 0;
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (sample, reply_for): (Sample, Box<dyn Fn(Action) -> Vec<u8> + Send>) = if line
            .starts_with("##")
        {
            let Ok(packet) = hj212::decode(line.as_bytes()) else {
                break;
            };
            let Ok(sample) = packet.sample(vn_offset()) else {
                break;
            };
            (
                sample,
                Box::new(move |a| match a {
                    Action::Ack => hj212::encode(&packet.data_response()),
                    Action::Refuse => hj212::encode(&packet.request_response(3)),
                    _ => Vec::new(),
                }),
            )
        } else if line.starts_with('{') {
            let Ok(sample) = json::decode(line.as_bytes(), None) else {
                break;
            };
            let n = sample.values.len();
            (
                sample,
                Box::new(move |a| match a {
                    Action::Ack => format!("{{\"ok\":true,\"readings\":{n}}}\n").into_bytes(),
                    Action::Refuse => {
                        b"{\"ok\":false,\"reason\":\"json.schema\",\"detail\":\"test\"}\n".to_vec()
                    }
                    Action::Later => {
                        b"{\"ok\":false,\"reason\":\"kafka.unavailable\",\"detail\":\"later\"}\n"
                            .to_vec()
                    }
                    _ => Vec::new(),
                }),
            )
        } else {
            let Ok(name) = circular10::parse_file_name(line.trim_end()) else {
                break;
            };
            let mut body = Vec::new();
            loop {
                let mut l = String::new();
                match lines.read_line(&mut l).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if l.trim().is_empty() => break,
                    Ok(_) => body.extend_from_slice(l.as_bytes()),
                }
            }
            let Ok(mut samples) = circular10::decode_record(&body, &name.station, vn_offset())
            else {
                break;
            };
            let Some(sample) = samples.pop() else { break };
            let n = sample.values.len();
            (
                sample,
                Box::new(move |a| match a {
                    Action::Ack => format!("OK {n}\r\n").into_bytes(),
                    Action::Refuse => b"ERR circular10.bad_value test\r\n".to_vec(),
                    Action::Later => b"ERR kafka.unavailable resend later\r\n".to_vec(),
                    _ => Vec::new(),
                }),
            )
        };
        frame_no += 1;
        let action = policy(connection, frame_no, &sample);
        received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Received { connection, sample });
        match action {
            Action::Close => break,
            Action::Silent => continue,
            _ => {}
        }
        let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
        max_outstanding.fetch_max(now, Ordering::SeqCst);
        if replies.send(Some(reply_for(action))).is_err() {
            break;
        }
    }
    let _ = replies.send(None);
    let _ = writer.await;
}

fn plan_keys(sim: &Simulator) -> Vec<Key> {
    sim.plan()
        .unwrap_or_default()
        .iter()
        .map(|tx| key(&tx.sample))
        .collect()
}

/// Per connection, samples arrive in measurement order per station.
fn assert_in_order_per_connection(received: &[Received]) {
    let mut last: std::collections::HashMap<(usize, &str), DateTime<Utc>> = Default::default();
    for r in received {
        let k = (r.connection, r.sample.station_id.as_str());
        if let Some(prev) = last.insert(k, r.sample.measured_at) {
            assert!(
                prev < r.sample.measured_at,
                "out of order on connection {}: {prev} then {}",
                r.connection,
                r.sample.measured_at
            );
        }
    }
}

#[tokio::test]
async fn hj212_is_pipelined_acked_and_complete() -> TestResult {
    let ingest = FakeIngest::start(always_ack(), Duration::from_millis(5)).await?;
    let fleet = fleet(Protocol::TcpHj212, 3, Anomalies::none())?;
    let sim = Simulator::new(fleet, run_config(ingest.addr, 20))?;
    let expected = plan_keys(&sim);
    assert_eq!(expected.len(), 60);
    let readings: u64 = sim
        .plan()
        .unwrap_or_default()
        .iter()
        .map(|tx| tx.sample.values.len() as u64)
        .sum();

    let stats = run(sim).await?;
    assert_eq!(
        stats,
        Stats {
            sent: 60,
            acked: 60,
            readings_acked: readings,
            ..Stats::default()
        },
        "every sample acked once"
    );
    let received = ingest.samples();
    assert_in_order_per_connection(&received);
    let mut got: Vec<Key> = received.iter().map(|r| key(&r.sample)).collect();
    let mut want = expected;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let max = ingest.max_outstanding.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&max),
        "frames in flight at once: {max} (window 4)"
    );
    assert_eq!(
        ingest.connections.load(Ordering::SeqCst),
        3,
        "one connection per station"
    );
    Ok(())
}

#[tokio::test]
async fn circular10_and_json_lines_round_trip_exactly() -> TestResult {
    for protocol in [Protocol::TcpC10, Protocol::TcpJson] {
        let ingest = FakeIngest::start(always_ack(), Duration::ZERO).await?;
        let fleet = fleet(protocol, 2, Anomalies::default())?;
        let mut config = run_config(ingest.addr, 288);
        config.tcp.stations_per_connection = 2;
        let sim = Simulator::new(fleet, config)?;
        let plan: Vec<Sample> = sim
            .plan()
            .unwrap_or_default()
            .into_iter()
            .map(|tx| tx.sample)
            .collect();

        let stats = run(sim).await?;
        assert_eq!(
            (stats.acked, stats.refused, stats.errors, stats.resent),
            (plan.len() as u64, 0, 0, 0),
            "{protocol}"
        );
        let received = ingest.samples();
        assert_eq!(
            ingest.connections.load(Ordering::SeqCst),
            1,
            "{protocol}: two stations share a connection"
        );
        assert_in_order_per_connection(&received);
        // One connection, sent in plan order per station: identical samples,
        // statuses and units included, anomalies and backlog too.
        let by_station = |samples: Vec<&Sample>, id: &str| {
            samples
                .into_iter()
                .filter(|s| s.station_id == id)
                .cloned()
                .collect::<Vec<_>>()
        };
        let ids: HashSet<_> = plan.iter().map(|s| s.station_id.clone()).collect();
        for id in &ids {
            let want = by_station(plan.iter().collect(), id);
            let got = by_station(received.iter().map(|r| &r.sample).collect(), id);
            assert_eq!(got, want, "{protocol} {id}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn unanswered_frames_are_resent_in_order_after_a_disconnect() -> TestResult {
    // First connection: two answers, two frames left unanswered, then the
    // connection drops on the fifth.
    let policy: Policy = Arc::new(|conn, n, _| match (conn, n) {
        (0, 1 | 2) => Action::Ack,
        (0, 3 | 4) => Action::Silent,
        (0, _) => Action::Close,
        _ => Action::Ack,
    });
    for protocol in [Protocol::TcpHj212, Protocol::TcpC10, Protocol::TcpJson] {
        let ingest = FakeIngest::start(policy.clone(), Duration::ZERO).await?;
        let fleet = fleet(protocol, 1, Anomalies::none())?;
        let sim = Simulator::new(fleet, run_config(ingest.addr, 12))?;
        let expected = plan_keys(&sim);

        let stats = run(sim).await?;
        assert_eq!(stats.acked, 12, "{protocol}: {stats:?}");
        assert!(
            stats.resent >= 3 && stats.errors >= 1,
            "{protocol}: {stats:?}"
        );
        let received = ingest.samples();
        assert_in_order_per_connection(&received);
        let second: Vec<Key> = received
            .iter()
            .filter(|r| r.connection == 1)
            .map(|r| key(&r.sample))
            .collect();
        assert_eq!(
            second.first(),
            expected.get(2),
            "{protocol}: resending starts at the first unanswered frame"
        );
        let unique: HashSet<Key> = received.iter().map(|r| key(&r.sample)).collect();
        assert_eq!(
            unique,
            expected.into_iter().collect(),
            "{protocol}: nothing lost"
        );
    }
    Ok(())
}

#[tokio::test]
async fn hj212_frame_passed_over_without_reply_is_resent() -> TestResult {
    let policy: Policy = Arc::new(|conn, n, _| {
        if (conn, n) == (0, 2) {
            Action::Silent
        } else {
            Action::Ack
        }
    });
    let ingest = FakeIngest::start(policy, Duration::ZERO).await?;
    let sim = Simulator::new(
        fleet(Protocol::TcpHj212, 1, Anomalies::none())?,
        run_config(ingest.addr, 8),
    )?;
    let expected = plan_keys(&sim);
    let stats = run(sim).await?;
    assert_eq!(stats.acked, 8, "{stats:?}");
    let received = ingest.samples();
    let unique: HashSet<Key> = received.iter().map(|r| key(&r.sample)).collect();
    assert_eq!(unique, expected.iter().cloned().collect());
    let second: Vec<Key> = received
        .iter()
        .filter(|r| r.connection == 1)
        .map(|r| key(&r.sample))
        .collect();
    assert_eq!(
        second.first(),
        expected.get(1),
        "the unanswered frame goes first"
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_ingest_times_out_and_gets_everything_resent() -> TestResult {
    let policy: Policy = Arc::new(|conn, n, _| {
        if conn == 0 && n >= 3 {
            Action::Silent
        } else {
            Action::Ack
        }
    });
    let ingest = FakeIngest::start(policy, Duration::ZERO).await?;
    let mut config = run_config(ingest.addr, 10);
    config.tcp.reply_timeout = Duration::from_millis(200);
    let sim = Simulator::new(fleet(Protocol::TcpJson, 1, Anomalies::none())?, config)?;
    let stats = run(sim).await?;
    assert_eq!(stats.acked, 10, "{stats:?}");
    assert!(stats.errors >= 1 && stats.resent >= 1, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn refusals_are_counted_and_try_later_is_resent() -> TestResult {
    let refuse_first: Policy =
        Arc::new(|_, n, _| if n == 1 { Action::Refuse } else { Action::Ack });
    for protocol in [Protocol::TcpHj212, Protocol::TcpC10, Protocol::TcpJson] {
        let ingest = FakeIngest::start(refuse_first.clone(), Duration::ZERO).await?;
        let sim = Simulator::new(
            fleet(protocol, 2, Anomalies::none())?,
            run_config(ingest.addr, 5),
        )?;
        let stats = run(sim).await?;
        assert_eq!(
            (stats.refused, stats.acked, stats.resent),
            (2, 8, 0),
            "{protocol}: {stats:?}"
        );
    }
    let later_once: Policy = Arc::new(|conn, n, _| {
        if (conn, n) == (0, 1) {
            Action::Later
        } else {
            Action::Ack
        }
    });
    for protocol in [Protocol::TcpC10, Protocol::TcpJson] {
        let ingest = FakeIngest::start(later_once.clone(), Duration::ZERO).await?;
        let sim = Simulator::new(
            fleet(protocol, 1, Anomalies::none())?,
            run_config(ingest.addr, 5),
        )?;
        let stats = run(sim).await?;
        assert_eq!(
            (stats.refused, stats.acked),
            (0, 5),
            "{protocol}: {stats:?}"
        );
        assert!(stats.resent >= 1, "{protocol}: {stats:?}");
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_an_endless_run_and_unreachable_ingest_is_an_error_count() -> TestResult {
    let ingest = FakeIngest::start(always_ack(), Duration::ZERO).await?;
    let mut config = run_config(ingest.addr, 0);
    config.slots = None;
    config.pacing = Pacing::Rate { per_second: 200.0 };
    let sim = Simulator::new(fleet(Protocol::TcpHj212, 4, Anomalies::default())?, config)?;
    let counters = sim.counters();
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    let stats = tokio::time::timeout(Duration::from_secs(5), sim.run(shutdown)).await??;
    assert!(stats.acked > 10 && stats.acked <= 200, "{stats:?}");
    assert_eq!(stats, counters.snapshot());

    // Nobody listens on a port we just closed.
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let sim = Simulator::new(
        fleet(Protocol::TcpJson, 1, Anomalies::none())?,
        run_config(closed, 3),
    )?;
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    let stats = tokio::time::timeout(Duration::from_secs(5), sim.run(shutdown)).await??;
    assert_eq!((stats.sent, stats.acked), (0, 0));
    assert!(
        stats.errors >= 2,
        "connection attempts are counted: {stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn realtime_pacing_follows_the_simulated_clock() -> TestResult {
    let ingest = FakeIngest::start(always_ack(), Duration::ZERO).await?;
    let mut config = run_config(ingest.addr, 6);
    // 300 s slots at 10 000x: one slot every 30 ms of wall clock.
    config.pacing = Pacing::Realtime { speedup: 10_000.0 };
    let sim = Simulator::new(fleet(Protocol::TcpJson, 2, Anomalies::none())?, config)?;
    let began = std::time::Instant::now();
    let stats = run(sim).await?;
    assert_eq!(stats.acked, 12, "{stats:?}");
    let elapsed = began.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150),
        "slot 5 waits 5 x 30 ms, took {elapsed:?}"
    );
    Ok(())
}

/// (connection number, topic, payload) of each acknowledged publish.
type Publishes = Arc<Mutex<Vec<(usize, String, Vec<u8>)>>>;

/// A broker that PUBACKs every QoS 1 publish; on its first connection it
/// drops the line, unacknowledged, at publish number `drop_at`.
struct FakeBroker {
    addr: SocketAddr,
    received: Publishes,
    logins: Arc<Mutex<Vec<(String, String, bool)>>>,
}

impl FakeBroker {
    async fn start(drop_at: Option<usize>) -> Result<FakeBroker, std::io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let broker = FakeBroker {
            addr: listener.local_addr()?,
            received: Arc::default(),
            logins: Arc::default(),
        };
        let (received, logins) = (broker.received.clone(), broker.logins.clone());
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let (received, logins) = (received.clone(), logins.clone());
                let drop_at = if connection == 0 { drop_at } else { None };
                tokio::spawn(async move {
                    let codec = rumqttc::Codec {
                        max_incoming_size: 1 << 20,
                        max_outgoing_size: 1 << 20,
                    };
                    let mut framed = tokio_util::codec::Framed::new(stream, codec);
                    let mut publishes = 0;
                    while let Some(Ok(packet)) = framed.next().await {
                        let reply = match packet {
                            rumqttc::Packet::Connect(c) => {
                                let login = c
                                    .login
                                    .map(|l| (l.username, l.password))
                                    .unwrap_or_default();
                                logins.lock().unwrap_or_else(|e| e.into_inner()).push((
                                    login.0,
                                    login.1,
                                    c.clean_session,
                                ));
                                rumqttc::Packet::ConnAck(rumqttc::ConnAck::new(
                                    rumqttc::ConnectReturnCode::Success,
                                    false,
                                ))
                            }
                            rumqttc::Packet::Publish(p) => {
                                publishes += 1;
                                if Some(publishes) == drop_at {
                                    return;
                                }
                                received.lock().unwrap_or_else(|e| e.into_inner()).push((
                                    connection,
                                    p.topic,
                                    p.payload.to_vec(),
                                ));
                                rumqttc::Packet::PubAck(rumqttc::PubAck::new(p.pkid))
                            }
                            rumqttc::Packet::PingReq => rumqttc::Packet::PingResp,
                            _ => return,
                        };
                        if framed.send(reply).await.is_err() {
                            return;
                        }
                    }
                });
                connection += 1;
            }
        });
        Ok(broker)
    }

    fn publishes(&self) -> Vec<(usize, String, Vec<u8>)> {
        std::mem::take(&mut *self.received.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[tokio::test]
async fn mqtt_publishes_are_acked_and_decode_to_the_plan() -> TestResult {
    for protocol in [Protocol::MqttJson, Protocol::MqttC10] {
        let broker = FakeBroker::start(None).await?;
        let sim = Simulator::new(
            fleet(protocol, 3, Anomalies::default())?,
            run_config(broker.addr, 30),
        )?;
        let plan: Vec<Sample> = sim
            .plan()
            .unwrap_or_default()
            .into_iter()
            .map(|tx| tx.sample)
            .collect();
        let readings: u64 = plan.iter().map(|s| s.values.len() as u64).sum();

        let stats = run(sim).await?;
        assert_eq!(
            stats,
            Stats {
                sent: plan.len() as u64,
                acked: plan.len() as u64,
                readings_acked: readings,
                ..Stats::default()
            },
            "{protocol}"
        );
        let mut got = Vec::new();
        for (_, topic, payload) in broker.publishes() {
            let station = topic
                .strip_prefix("stations/")
                .and_then(|t| t.strip_suffix("/readings"))
                .ok_or("bad topic")?;
            let sample = match protocol {
                Protocol::MqttJson => json::decode(&payload, Some(station))?,
                _ => {
                    let text = std::str::from_utf8(&payload)?;
                    let (name, body) = text.split_once("\r\n").ok_or("no file name line")?;
                    assert_eq!(circular10::parse_file_name(name)?.station, station);
                    let mut samples =
                        circular10::decode_record(body.as_bytes(), station, vn_offset())?;
                    samples.pop().ok_or("empty record")?
                }
            };
            got.push(sample);
        }
        assert_eq!(got.len(), plan.len());
        for s in &plan {
            assert!(
                got.contains(s),
                "{protocol}: {} at {} missing",
                s.station_id,
                s.measured_at
            );
        }
        let logins = broker
            .logins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert_eq!(
            logins,
            vec![("station-demo".to_owned(), "demo-secret".to_owned(), true)]
        );
    }
    Ok(())
}

#[tokio::test]
async fn mqtt_publishes_unacked_when_the_line_drops_are_republished() -> TestResult {
    let broker = FakeBroker::start(Some(6)).await?;
    let sim = Simulator::new(
        fleet(Protocol::MqttJson, 2, Anomalies::none())?,
        run_config(broker.addr, 20),
    )?;
    let plan: HashSet<Vec<u8>> = sim
        .plan()
        .unwrap_or_default()
        .iter()
        .map(|tx| json::encode(&tx.sample))
        .collect();
    let stats = run(sim).await?;
    assert_eq!(stats.acked, 40, "{stats:?}");
    assert!(stats.errors >= 1, "{stats:?}");
    let publishes = broker.publishes();
    assert!(publishes.iter().any(|(c, _, _)| *c == 1), "reconnected");
    let got: HashSet<Vec<u8>> = publishes.into_iter().map(|(_, _, p)| p).collect();
    assert_eq!(got, plan, "nothing lost");
    Ok(())
}
