//! Ingest's own MQTT endpoint against the real Kafka, with rumqttc as the
//! station: PUBACK only once Kafka has the record, in order; refused
//! credentials; another station's topic; an oversized PUBLISH; Session
//! Present across reconnects and restarts.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use quantrac_ingest::{Ingest, IngestConfig};
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::json;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// A registry with one station and its secret.
fn registry(station: &str, secret: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("registry")));
    let text = format!(
        "[[stations]]\nid = \"{station}\"\nname = \"x\"\nfacility = \"x\"\nindustrial_zone = \"x\"\nprovince = \"x\"\n\
         latitude = 13.0\nlongitude = 109.0\nkind = \"wastewater\"\nsecret_hash = \"{}\"\n\
         parameters = [{{ code = \"COD\", unit = \"mg/L\", range_min = 0, range_max = 1000 }}]\n",
        quantrac_plumbing::secret::hash(secret).expect("hash")
    );
    std::fs::write(&path, text).expect("registry");
    path
}

/// A test's station, its ingest config (the listener only) and sessions.
struct Setup {
    topics: Topics,
    station: String,
    secret: &'static str,
    config: IngestConfig,
}

async fn setup(name: &str) -> Setup {
    let topics = create_topics(&unique(name)).await;
    let station = unique("ML");
    let secret = "station-secret-1";
    let mut config = test_config(&topics, &unique("n"));
    config.tcp.enabled = false;
    config.auth.registry = Some(registry(&station, secret));
    config.mqtt_listener.enabled = true;
    config.mqtt_listener.listen = "127.0.0.1:0".parse().expect("addr");
    config.mqtt_listener.sessions_file = std::env::temp_dir()
        .join(unique("state"))
        .join("mqtt-sessions");
    Setup {
        topics,
        station,
        secret,
        config,
    }
}

async fn start(config: IngestConfig) -> (Ingest, CancellationToken, SocketAddr) {
    let stop = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
        .await
        .expect("start");
    let addr = ingest.mqtt_listener_addr.expect("listener on");
    (ingest, stop, addr)
}

async fn stop(ingest: Ingest, stop: CancellationToken) {
    stop.cancel();
    ingest.wait().await.expect("clean stop");
}

fn options(addr: SocketAddr, client: &str, user: &str, password: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client, addr.ip().to_string(), addr.port());
    o.set_credentials(user, password);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(4 << 20, 4 << 20);
    o
}

/// The next event that is not an outgoing one of no interest.
async fn next(el: &mut EventLoop) -> Result<Event, ConnectionError> {
    tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("an MQTT event in time")
}

/// Connects and returns the CONNACK's Session Present.
async fn connect(el: &mut EventLoop) -> bool {
    match next(el).await {
        Ok(Event::Incoming(Packet::ConnAck(ack))) => ack.session_present,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The next event before `deadline` (pings keep coming, so a wait for
/// one kind of event needs an overall bound).
async fn next_before(
    el: &mut EventLoop,
    deadline: tokio::time::Instant,
    what: &str,
) -> Result<Event, ConnectionError> {
    match tokio::time::timeout_at(deadline, el.poll()).await {
        Ok(r) => r,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls until `n` PUBACKs arrived; returns their packet ids in order and
/// the ids of the PUBLISHes sent, in order.
async fn pubacks(el: &mut EventLoop, n: usize) -> (Vec<u16>, Vec<u16>) {
    let (mut acked, mut sent) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.len() < n {
        match next_before(el, deadline, "PUBACKs").await {
            Ok(Event::Incoming(Packet::PubAck(a))) => acked.push(a.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => sent.push(pkid),
            Ok(_) => {}
            Err(e) => panic!("station connection failed: {e}"),
        }
    }
    (acked, sent)
}

fn reading(station: &str, minute: u32, cod: f64) -> Vec<u8> {
    let at = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, minute, 0)
        .single()
        .expect("t");
    json::encode(&sample(station, at, cod))
}

#[tokio::test]
async fn a_qos1_json_sample_is_acknowledged_and_on_the_readings_topic() {
    let s = setup("t-ml-json").await;
    let (ingest, stop_token, addr) = start(s.config.clone()).await;
    let (client, mut el) = AsyncClient::new(options(addr, &unique("c"), &s.station, s.secret), 16);
    assert!(!connect(&mut el).await, "a new client has no session");
    let topic = format!("stations/{}/readings", s.station);
    let payload = reading(&s.station, 0, 42.5);
    client
        .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
        .await
        .expect("queue");
    pubacks(&mut el, 1).await;
    let batches = read_batches(&s.topics.raw, 1, WAIT).await;
    assert_eq!(batches.len(), 1);
    let want = json::decode(&payload, None).expect("sample");
    assert_eq!(batch_to_sample(&batches[0]), want);
    // Its evidence: the digest of the payload as the station sent it.
    let frame = batches[0].frame.as_ref().expect("frame digest");
    use sha2::Digest as _;
    assert_eq!(frame.sha256, sha2::Sha256::digest(&payload).to_vec());
    assert_eq!(frame.size as usize, payload.len());
    assert!(frame.origin.starts_with("127.0.0.1:"), "{}", frame.origin);
    assert!(
        batches[0]
            .readings
            .iter()
            .all(|r| r.source() == SourceProtocol::MqttJson)
    );
    let snap = ingest.status.snapshot();
    assert_eq!((snap.received, snap.acknowledged), (1, 1));
    assert!(snap.mqtt_listening);
    stop(ingest, stop_token).await;
}

/// With Kafka unreachable the station gets no PUBACK and its connection is
/// closed; the same station, reconnecting to an ingest with Kafka, has its
/// unacknowledged message resent (Session Present 1) and then PUBACKed.
#[tokio::test]
async fn no_puback_before_kafka_has_the_record() {
    let s = setup("t-ml-wait").await;
    // A "broker" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut down = s.config.clone();
    down.kafka.brokers = silent.local_addr().expect("addr").to_string();
    down.kafka.message_timeout = Duration::from_secs(2);
    let (ingest, stop_token, addr) = start(down).await;
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });

    let (client, mut el) = AsyncClient::new(options(addr, &unique("c"), &s.station, s.secret), 16);
    assert!(!connect(&mut el).await);
    let payload = reading(&s.station, 5, 17.0);
    client
        .publish(
            format!("stations/{}/readings", s.station),
            QoS::AtLeastOnce,
            false,
            payload.clone(),
        )
        .await
        .expect("queue");
    // Until the connection ends: no PUBACK.
    let deadline = tokio::time::Instant::now() + WAIT;
    let closed = loop {
        match next_before(&mut el, deadline, "the connection to close").await {
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                panic!("PUBACK {} while Kafka cannot have the record", a.pkid)
            }
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        !matches!(closed, ConnectionError::ConnectionRefused(_)),
        "{closed}"
    );
    let snap = ingest.status.snapshot();
    assert_eq!((snap.received, snap.acknowledged), (1, 0), "{snap:?}");
    stop(ingest, stop_token).await;
    hold.abort();

    // The same port, Kafka reachable: the station's own retry does the rest.
    let mut up = s.config.clone();
    up.mqtt_listener.listen = addr;
    let (ingest, stop_token, _) = start(up).await;
    assert!(connect(&mut el).await, "the session is remembered");
    pubacks(&mut el, 1).await;
    let batches = read_batches(&s.topics.raw, 1, WAIT).await;
    assert_eq!(batches.len(), 1, "resent and stored");
    assert_eq!(
        batch_to_sample(&batches[0]),
        json::decode(&payload, None).expect("sample")
    );
    stop(ingest, stop_token).await;
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let s = setup("t-ml-auth").await;
    let (ingest, stop_token, addr) = start(s.config.clone()).await;
    for (user, password, code) in [
        (
            s.station.as_str(),
            "guess",
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            s.station.as_str(),
            "",
            ConnectReturnCode::BadUserNamePassword,
        ),
        ("", "x", ConnectReturnCode::NotAuthorized),
    ] {
        let (_client, mut el) = AsyncClient::new(options(addr, &unique("c"), user, password), 4);
        let r = next(&mut el).await;
        assert!(
            matches!(&r, Err(ConnectionError::ConnectionRefused(c)) if *c == code),
            "{user:?}/{password:?}: {r:?}"
        );
    }
    // The right one still gets in.
    let (_client, mut el) = AsyncClient::new(options(addr, &unique("c"), &s.station, s.secret), 4);
    connect(&mut el).await;
    stop(ingest, stop_token).await;
}

#[tokio::test]
async fn another_stations_topic_is_rejected_and_acknowledged() {
    let s = setup("t-ml-topic").await;
    let (ingest, stop_token, addr) = start(s.config.clone()).await;
    let (client, mut el) = AsyncClient::new(options(addr, &unique("c"), &s.station, s.secret), 16);
    connect(&mut el).await;
    let other = unique("OTHER");
    let foreign = reading(&other, 0, 1.0);
    client
        .publish(
            format!("stations/{other}/readings"),
            QoS::AtLeastOnce,
            false,
            foreign.clone(),
        )
        .await
        .expect("queue");
    client
        .publish(
            format!("stations/{}/readings", s.station),
            QoS::AtLeastOnce,
            false,
            reading(&s.station, 0, 2.0),
        )
        .await
        .expect("queue");
    pubacks(&mut el, 2).await;
    let rejected = read_rejected(&s.topics.rejected, 1, WAIT).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, "mqtt.topic_not_allowed");
    assert_eq!(rejected[0].station_id, s.station, "kept under who sent it");
    assert_eq!(rejected[0].raw, foreign);
    // Only the station's own reading is on the readings topic.
    let records = read_records(&s.topics.raw, 2, Duration::from_secs(5)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, s.station);
    stop(ingest, stop_token).await;
}

#[tokio::test]
async fn an_oversized_publish_is_acknowledged_once_and_rejected_and_the_next_arrives() {
    let mut s = setup("t-ml-big").await;
    s.config.mqtt_listener.max_packet_bytes = 64 * 1024;
    let (ingest, stop_token, addr) = start(s.config.clone()).await;
    let (client, mut el) = AsyncClient::new(options(addr, &unique("c"), &s.station, s.secret), 16);
    connect(&mut el).await;
    let topic = format!("stations/{}/readings", s.station);
    let big = vec![b'{'; 300 * 1024];
    client
        .publish(&topic, QoS::AtLeastOnce, false, big)
        .await
        .expect("queue");
    client
        .publish(
            &topic,
            QoS::AtLeastOnce,
            false,
            reading(&s.station, 10, 3.0),
        )
        .await
        .expect("queue");
    let (acked, sent) = pubacks(&mut el, 2).await;
    assert_eq!(acked, sent, "each acknowledged once, in order");
    // Nothing more comes: no second PUBACK, no reconnection.
    match tokio::time::timeout(Duration::from_secs(2), el.poll()).await {
        Err(_) | Ok(Ok(Event::Outgoing(Outgoing::PingReq | Outgoing::PingResp))) => {}
        Ok(Ok(Event::Incoming(Packet::PingResp))) => {}
        Ok(other) => panic!("unexpected after both PUBACKs: {other:?}"),
    }
    let rejected = read_rejected(&s.topics.rejected, 1, WAIT).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, "mqtt.too_large");
    assert_eq!(rejected[0].raw.len(), 4096, "the first 4 KiB kept");
    assert!(
        rejected[0].detail.contains("max_packet_bytes"),
        "{}",
        rejected[0].detail
    );
    let batches = read_batches(&s.topics.raw, 1, WAIT).await;
    assert_eq!(batches.len(), 1, "the next message arrived");
    stop(ingest, stop_token).await;
}

/// Readings (to the readings topic) and refused messages (to the rejected
/// topic, acknowledged by Kafka on their own schedule) alternate, many in
/// flight: the PUBACKs still come in the order of the PUBLISHes.
#[tokio::test]
async fn pubacks_keep_the_order_of_many_pipelined_publishes() {
    let mut s = setup("t-ml-order").await;
    s.config.mqtt_listener.in_flight_per_connection = 64;
    let (ingest, stop_token, addr) = start(s.config.clone()).await;
    let mut o = options(addr, &unique("c"), &s.station, s.secret);
    o.set_inflight(100);
    let (client, mut el) = AsyncClient::new(o, 600);
    connect(&mut el).await;
    let n = 600;
    let publisher = {
        let (client, station) = (client.clone(), s.station.clone());
        tokio::spawn(async move {
            for i in 0..n {
                let payload = if i % 2 == 0 {
                    reading(&station, (i / 2 % 60) as u32, f64::from(i as u32))
                } else {
                    b"not a reading".to_vec()
                };
                client
                    .publish(
                        format!("stations/{station}/readings"),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .expect("queue");
            }
        })
    };
    let (acked, sent) = pubacks(&mut el, n).await;
    publisher.await.expect("publisher");
    assert_eq!(acked.len(), n);
    assert_eq!(acked, sent[..n], "PUBACKs in the order of the PUBLISHes");
    let snap = ingest.status.snapshot();
    assert_eq!(snap.acknowledged, n as u64);
    assert_eq!(snap.rejected, n as u64 / 2);
    stop(ingest, stop_token).await;
}

#[tokio::test]
async fn session_present_follows_clean_session_across_reconnects_and_restarts() {
    let s = setup("t-ml-session").await;
    let (ingest, stop_token, addr) = start(s.config.clone()).await;
    let client_id = unique("logger");
    let present = |clean: bool| {
        let mut o = options(addr, &client_id, &s.station, s.secret);
        o.set_clean_session(clean);
        async move {
            let (client, mut el) = AsyncClient::new(o, 4);
            let p = connect(&mut el).await;
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
            p
        }
    };
    assert!(!present(false).await, "first connect: no session yet");
    assert!(present(false).await, "second connect: the session is there");
    stop(ingest, stop_token).await;

    // Same port and sessions file, new process state.
    let mut again = s.config.clone();
    again.mqtt_listener.listen = addr;
    let (ingest, stop_token, _) = start(again.clone()).await;
    assert!(present(false).await, "remembered across a restart");
    assert!(!present(true).await, "a clean session has none");
    assert!(!present(false).await, "and ended the persistent one");
    assert!(present(false).await);
    stop(ingest, stop_token).await;
    let (ingest, stop_token, _) = start(again).await;
    assert!(present(false).await);
    stop(ingest, stop_token).await;
}

/// On the TLS port a client certificate names the station: no password,
/// and a user name of another station is refused.
#[tokio::test]
async fn a_client_certificate_authenticates_its_station_on_the_tls_port() {
    use quantrac_testkit::env::{tls_ca, tls_server, tls_station};
    let topics = create_topics(&unique("t-ml-tls")).await;
    let (station, cert, key) = tls_station();
    let mut config = test_config(&topics, &unique("n"));
    config.tcp.enabled = false;
    config.auth.registry = Some(registry(&station, "cert-station-secret"));
    config.mqtt_listener.enabled = true;
    config.mqtt_listener.listen = "127.0.0.1:0".parse().expect("addr");
    config.mqtt_listener.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let (server_cert, server_key) = tls_server();
    config.mqtt_listener.tls = Some(quantrac_plumbing::tls::ServerTls {
        cert: server_cert,
        key: server_key,
        client_ca: Some(tls_ca()),
        require_client_cert: false,
    });
    config.mqtt_listener.sessions_file = std::env::temp_dir()
        .join(unique("state"))
        .join("mqtt-sessions");
    let (ingest, stop_token, _) = start(config).await;
    let port = ingest.mqtt_listener_tls_addr.expect("tls port").port();
    let tls = |identity: bool| {
        let id = identity.then_some((cert.as_path(), key.as_path()));
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            quantrac_plumbing::tls::client_config(Some(&tls_ca()), id).expect("client config"),
        ))
    };
    let mut o = MqttOptions::new(unique("c"), "localhost", port);
    o.set_transport(tls(true));
    let (client, mut el) = AsyncClient::new(o, 4);
    connect(&mut el).await;
    client
        .publish(
            format!("stations/{station}/readings"),
            QoS::AtLeastOnce,
            false,
            reading(&station, 0, 5.0),
        )
        .await
        .expect("queue");
    pubacks(&mut el, 1).await;
    assert_eq!(read_batches(&topics.raw, 1, WAIT).await.len(), 1);

    // The certificate with another station's name, or no certificate and
    // no password: refused.
    for (identity, user, code) in [
        (true, "SOMEONE-ELSE", ConnectReturnCode::NotAuthorized),
        (
            false,
            station.as_str(),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ] {
        let mut o = MqttOptions::new(unique("c"), "localhost", port);
        o.set_transport(tls(identity));
        o.set_credentials(user, "");
        let (_client, mut el) = AsyncClient::new(o, 4);
        let r = next(&mut el).await;
        assert!(
            matches!(&r, Err(ConnectionError::ConnectionRefused(c)) if *c == code),
            "{user}: {r:?}"
        );
    }
    stop(ingest, stop_token).await;
}

/// Over its rate cap a station is slowed, not refused: every PUBLISH is
/// acknowledged, and those past the first second's allowance take the time
/// the cap gives them.
#[tokio::test]
async fn a_station_over_its_rate_cap_is_slowed_not_refused() {
    let mut s = setup("t-ml-rate").await;
    // 10 readings a second; each sample below carries 4.
    s.config.mqtt_listener.max_readings_per_second_per_station = 10;
    let (ingest, stop_token, addr) = start(s.config.clone()).await;
    let (client, mut el) = AsyncClient::new(options(addr, &unique("c"), &s.station, s.secret), 16);
    connect(&mut el).await;
    let topic = format!("stations/{}/readings", s.station);
    let started = std::time::Instant::now();
    for minute in 0..10 {
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                reading(&s.station, minute, 10.0),
            )
            .await
            .expect("queue");
    }
    let (acked, _) = pubacks(&mut el, 10).await;
    assert_eq!(acked.len(), 10, "every PUBLISH acknowledged");
    // 10 readings of allowance, then 10 a second: the 10th PUBLISH cannot
    // be read before about 3 s (a lower bound, which load cannot break;
    // without the cap this takes a fraction of a second).
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_000),
        "40 readings in {took:?} under a 10/s cap"
    );
    stop(ingest, stop_token).await;
}
