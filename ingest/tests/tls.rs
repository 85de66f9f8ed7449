//! TLS on ingest's listeners and clients, against the real Kafka and
//! Mosquitto with the test CA `deploy/services.sh` made:
//! - the TCP receiver's TLS port answers over TLS, and never answers plain
//!   bytes;
//! - a station's client certificate authenticates it (and only it) with no
//!   auth frame;
//! - ingest reads MQTT over TLS, checking the broker's certificate.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use quantrac_ingest::Ingest;
use quantrac_plumbing::tls::{ServerTls, client_config};
use quantrac_proto::wire::json;
use quantrac_testkit::env::{mqtts_url, tls_ca, tls_server, tls_station};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn registry(stations: &[(&str, &str)]) -> String {
    stations
        .iter()
        .map(|(id, secret)| {
            format!(
                "[[stations]]\nid = \"{id}\"\nname = \"x\"\nfacility = \"x\"\nindustrial_zone = \"x\"\nprovince = \"x\"\n\
                 latitude = 13.0\nlongitude = 109.0\nkind = \"wastewater\"\nsecret_hash = \"{}\"\n\
                 parameters = [{{ code = \"COD\", unit = \"mg/L\", range_min = 0, range_max = 1000 }}]\n\n",
                quantrac_plumbing::secret::hash(secret).expect("hash")
            )
        })
        .collect()
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

/// Sends `frame`, returns the reply line ("" when closed).
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>, frame: &[u8]) -> String {
    s.get_mut().write_all(frame).await.expect("write");
    let mut line = String::new();
    tokio::time::timeout(WAIT, s.read_line(&mut line))
        .await
        .expect("reply in time")
        .expect("read");
    line
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    client_cert: bool,
) -> BufReader<tokio_rustls::client::TlsStream<TcpStream>> {
    let (_, cert, key) = tls_station();
    let identity = client_cert.then_some((cert.as_path(), key.as_path()));
    let config = client_config(Some(&tls_ca()), identity).expect("client config");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let stream = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the test CA");
    BufReader::new(stream)
}

fn reason(reply: &str) -> String {
    serde_json::from_str::<serde_json::Value>(reply).expect("json reply")["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn the_tls_port_authenticates_stations_by_certificate_and_refuses_plain_bytes() {
    let topics = create_topics(&unique("t-tls")).await;
    let (cert_station, _, _) = tls_station();
    let other = unique("OTHER");
    let path = std::env::temp_dir().join(format!("{}.toml", unique("registry")));
    std::fs::write(
        &path,
        registry(&[
            (&cert_station, "cert-station-secret"),
            (&other, "other-secret"),
        ]),
    )
    .expect("registry");
    let (cert, key) = tls_server();
    let mut config = test_config(&topics, &unique("n"));
    config.auth.registry = Some(path.clone());
    config.tcp.plain = false;
    config.tcp.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.tcp.tls = Some(ServerTls {
        cert,
        key,
        client_ca: Some(tls_ca()),
        require_client_cert: false,
    });
    let stop = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
        .await
        .expect("start");
    assert!(ingest.tcp_addr.is_none(), "the plain port was switched off");
    let addr = ingest.tls_addr.expect("tls port");

    // TLS without a client certificate: the station must still prove itself.
    let mut anon = tls_connect(addr, false).await;
    assert_eq!(
        reason(&ask(&mut anon, &json_line(&cert_station, 10.0)).await),
        "auth.required"
    );
    assert!(
        ask(
            &mut anon,
            format!("{{\"auth\":{{\"station\":\"{other}\",\"secret\":\"other-secret\"}}}}\n")
                .as_bytes()
        )
        .await
        .contains("\"ok\":true"),
        "an auth frame still works inside TLS"
    );
    assert!(
        ask(&mut anon, &json_line(&other, 11.0))
            .await
            .contains("\"ok\":true")
    );

    // The station's certificate authenticates it, and only it.
    let mut station = tls_connect(addr, true).await;
    let reply = ask(&mut station, &json_line(&cert_station, 12.0)).await;
    assert!(reply.contains("\"ok\":true"), "{reply}");
    assert_eq!(
        reason(&ask(&mut station, &json_line(&other, 13.0)).await),
        "auth.required",
        "a certificate names one station"
    );
    let stored = read_batches_where(&topics.raw, 1, WAIT, |b| b.station_id == cert_station).await;
    assert_eq!(stored.len(), 1, "the certificate's reading reached Kafka");

    // Plain bytes on the TLS port: no answer, the connection is closed.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(&json_line(&other, 14.0))
        .await
        .expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, plain.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(
        !String::from_utf8_lossy(&got).contains("\"ok\""),
        "a plain sender got a protocol answer: {got:?}"
    );

    stop.cancel();
    ingest.wait().await.expect("clean stop");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn ingest_reads_mqtt_over_tls() {
    let topics = create_topics(&unique("t-mqtts")).await;
    let node = unique("n");
    let mut config = test_config(&topics, &node);
    config.tcp.enabled = false;
    config.mqtt.enabled = true;
    config.mqtt.url = mqtts_url();
    config.mqtt.ca_file = Some(tls_ca());
    let stop = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
        .await
        .expect("start");
    // Ingest subscribes once connected; wait for that before publishing.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ingest.status.snapshot().mqtt_connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest did not connect over TLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A station publishing over TLS too.
    let station = unique("MQTTS");
    let b = quantrac_ingest::mqtt::broker_address(&mqtts_url()).expect("url");
    let (user, pw) = mqtt_station_credentials();
    let mut o = MqttOptions::new(unique("station"), b.host, b.port);
    o.set_credentials(user, pw);
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::clone(
            &client_config(Some(&tls_ca()), None).expect("client"),
        )),
    ));
    let (client, mut el) = AsyncClient::new(o, 8);
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    client
        .publish(
            format!("stations/{station}/readings"),
            QoS::AtLeastOnce,
            false,
            json::encode(&sample(&station, t, 42.0)),
        )
        .await
        .expect("queue");
    let acked = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.expect("station link") {
                break;
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the broker acknowledged over TLS");
    let got = read_batches_where(&topics.raw, 1, WAIT, |b| b.station_id == station).await;
    assert_eq!(
        got.len(),
        1,
        "the reading reached Kafka through ingest's TLS link"
    );

    stop.cancel();
    ingest.wait().await.expect("clean stop");
}

#[tokio::test]
async fn ingest_produces_to_kafka_over_ssl_verifying_the_broker() {
    let topics = create_topics(&unique("t-kssl")).await;
    let start = |ca: Option<std::path::PathBuf>| {
        let mut config = test_config(&topics, &unique("n"));
        config.kafka.brokers = quantrac_testkit::env::kafka_ssl_brokers();
        config.kafka.message_timeout = Duration::from_secs(3);
        config
            .kafka
            .properties
            .insert("security.protocol".into(), "SSL".into());
        if let Some(ca) = ca {
            config
                .kafka
                .properties
                .insert("ssl.ca.location".into(), ca.display().to_string());
        }
        let stop = CancellationToken::new();
        async move {
            let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
                .await
                .expect("start");
            (ingest, stop)
        }
    };
    let station = unique("KSSL");

    // Trusting the test CA: stored in Kafka.
    let (ingest, stop) = start(Some(tls_ca())).await;
    let tcp = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect");
    let mut conn = BufReader::new(tcp);
    let reply = ask(&mut conn, &json_line(&station, 21.0)).await;
    assert!(reply.contains("\"ok\":true"), "{reply}");
    let got = read_batches_where(&topics.raw, 1, WAIT, |b| b.station_id == station).await;
    assert_eq!(got.len(), 1);
    stop.cancel();
    ingest.wait().await.expect("clean stop");

    // Not trusting it (the public roots): the broker is never used.
    let (ingest, stop) = start(None).await;
    let tcp = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect");
    let mut conn = BufReader::new(tcp);
    let reply = ask(&mut conn, &json_line(&station, 22.0)).await;
    assert_eq!(reason(&reply), "kafka.unavailable", "{reply}");
    stop.cancel();
    let _ = ingest.wait().await;
}
