//! Per-station MQTT accounts, against a real Mosquitto (the Debian binary
//! `deploy/services.sh` installs, run here with the files
//! `quantrac-mqtt-auth` generates from a registry) and the real Kafka:
//! - a station publishes its own readings, which reach Kafka through ingest;
//! - a station publishing under another's id is not delivered;
//! - a station cannot subscribe to the readings; a wrong password is
//!   refused;
//! - a station added to the registry can connect once the files are
//!   regenerated and Mosquitto reloaded, without a restart;
//! - with the dynamic-security plugin's configuration instead, a station
//!   cannot join ingest's shared subscription, so it takes no share of
//!   other stations' messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use quantrac_ingest::Ingest;
use quantrac_plumbing::secret::mosquitto_hash;
use quantrac_proto::wire::json;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn station_entry(id: &str, secret: &str) -> String {
    format!(
        "[[stations]]\nid = \"{id}\"\nname = \"x\"\nfacility = \"x\"\nindustrial_zone = \"x\"\nprovince = \"x\"\n\
         latitude = 13.0\nlongitude = 109.0\nkind = \"wastewater\"\nmqtt_hash = \"{}\"\n\
         parameters = [{{ code = \"COD\", unit = \"mg/L\", range_min = 0, range_max = 1000 }}]\n\n",
        mosquitto_hash(secret)
    )
}

/// A Mosquitto of this test's own, killed on drop.
struct Broker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mosquitto_bin() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto (deploy/services.sh start mosquitto installs it)")
}

fn generate(dir: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_quantrac-mqtt-auth"))
        .arg("--registry")
        .arg(dir.join("registry.toml"))
        .arg("--accounts")
        .arg(dir.join("accounts"))
        .arg("--password-file")
        .arg(dir.join("passwd"))
        .arg("--acl-file")
        .arg(dir.join("acl"))
        .arg("--pid-file")
        .arg(dir.join("mosquitto.pid"))
        .status()
        .expect("run quantrac-mqtt-auth");
    assert!(status.success(), "quantrac-mqtt-auth failed");
}

/// The dynamic-security plugin's configuration, in `dir/dynsec.json`.
fn generate_dynsec(dir: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_quantrac-mqtt-auth"))
        .arg("--registry")
        .arg(dir.join("registry.toml"))
        .arg("--accounts")
        .arg(dir.join("accounts"))
        .arg("--dynsec-file")
        .arg(dir.join("dynsec.json"))
        .status()
        .expect("run quantrac-mqtt-auth");
    assert!(status.success(), "quantrac-mqtt-auth --dynsec-file failed");
}

/// Debian's mosquitto package ships the plugin beside libmosquitto.
fn dynsec_plugin() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("mosquitto_dynamic_security.so (Debian's mosquitto package)")
}

async fn start_broker(dir: PathBuf) -> Broker {
    let auth = format!(
        "password_file {}\nacl_file {}\n",
        dir.join("passwd").display(),
        dir.join("acl").display()
    );
    start_broker_with(dir, auth).await
}

async fn start_broker_with(dir: PathBuf, auth: String) -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous false\n\
             {auth}pid_file {}\npersistence false\n{}",
            dir.join("mosquitto.pid").display(),
            if nix_root() { "user root\n" } else { "" },
        ),
    )
    .expect("conf");
    let child = Command::new(mosquitto_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
        || !dir.join("mosquitto.pid").exists()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Broker { child, port, dir }
}

/// Whether this process runs as root (Mosquitto then needs `user root` to
/// keep reading files in a root-owned temporary directory).
fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Ingest reading `broker` as the `ingest` service account (password
/// `ingest-pw`), in `shared_group` if given, into new topics; once it is
/// connected.
async fn start_ingest(
    broker: &Broker,
    shared_group: Option<String>,
) -> (Ingest, Topics, CancellationToken) {
    let topics = create_topics(&unique("t-acl")).await;
    let mut config = test_config(&topics, &unique("n"));
    config.tcp.enabled = false;
    config.mqtt.enabled = true;
    config.mqtt.url = format!("mqtt://127.0.0.1:{}", broker.port);
    config.mqtt.username = "ingest".into();
    config.mqtt.password = "ingest-pw".into();
    config.mqtt.shared_group = shared_group;
    let stop = CancellationToken::new();
    let ingest = Ingest::start(config, quantrac_ingest::Edge::Kafka, None, stop.clone())
        .await
        .expect("start");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ingest.status.snapshot().mqtt_connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest's account was refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (ingest, topics, stop)
}

/// A connected client, or how the broker refused it.
async fn connect(
    port: u16,
    user: &str,
    password: &str,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let mut o = MqttOptions::new(unique("c"), "127.0.0.1", port);
    o.set_credentials(user, password);
    let (client, mut el) = AsyncClient::new(o, 16);
    loop {
        match tokio::time::timeout(WAIT, el.poll())
            .await
            .expect("an answer in time")?
        {
            Event::Incoming(Packet::ConnAck(_)) => return Ok((client, el)),
            _ => continue,
        }
    }
}

/// Publishes one QoS 1 message and waits for its PUBACK.
async fn publish(client: &AsyncClient, el: &mut EventLoop, topic: &str, payload: Vec<u8>) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queue");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.expect("link") {
                return;
            }
        }
    })
    .await
    .expect("PUBACK");
}

/// Publishes a COD reading of `station` at `at` to `as_station`'s topic
/// (the same station, or another it pretends to be).
async fn send(
    client: &AsyncClient,
    el: &mut EventLoop,
    as_station: &str,
    station: &str,
    at: chrono::DateTime<Utc>,
    cod: f64,
) {
    let topic = format!("stations/{as_station}/readings");
    publish(client, el, &topic, json::encode(&sample(station, at, cod))).await;
}

#[tokio::test]
async fn stations_publish_only_as_themselves_and_never_read() {
    let dir = std::env::temp_dir().join(unique("mqtt-acl"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (a, b, c) = (unique("A"), unique("B"), unique("C"));
    std::fs::write(
        dir.join("registry.toml"),
        [station_entry(&a, "a-secret"), station_entry(&b, "b-secret")].concat(),
    )
    .expect("registry");
    std::fs::write(
        dir.join("accounts"),
        format!("ingest:{}\n", mosquitto_hash("ingest-pw")),
    )
    .expect("accounts");
    generate(&dir);
    let broker = start_broker(dir.clone()).await;

    let (ingest, topics, stop) = start_ingest(&broker, None).await;

    let t = |minute| {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, minute, 0)
            .single()
            .expect("t")
    };
    // A's readings, then A pretending to be B, then A again: the last one
    // arriving means the one before it would have arrived too.
    let (client, mut el) = connect(broker.port, &a, "a-secret")
        .await
        .expect("A connects");
    send(&client, &mut el, &a, &a, t(0), 10.0).await;
    send(&client, &mut el, &b, &b, t(5), 11.0).await;
    send(&client, &mut el, &a, &a, t(10), 12.0).await;
    let got = read_batches_where(&topics.raw, 2, WAIT, |x| x.station_id == a).await;
    assert_eq!(got.len(), 2, "A's own readings reached Kafka");
    let spoofed = read_batches_where(&topics.raw, 1, Duration::from_secs(1), |x| {
        x.station_id == b
    })
    .await;
    assert!(spoofed.is_empty(), "A published as B and it was delivered");

    // A station cannot read the readings: Mosquitto 2.0 grants the
    // SUBSCRIBE and then delivers nothing the ACL does not let it read. B
    // publishes; once ingest has it, A's copy would have gone out already.
    client
        .subscribe("stations/+/readings", QoS::AtLeastOnce)
        .await
        .expect("queue");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.expect("link") {
                return;
            }
        }
    })
    .await
    .expect("SUBACK");
    let (b_client, mut b_el) = connect(broker.port, &b, "b-secret")
        .await
        .expect("B connects");
    send(&b_client, &mut b_el, &b, &b, t(15), 14.0).await;
    let got = read_batches_where(&topics.raw, 1, WAIT, |x| x.station_id == b).await;
    assert_eq!(got.len(), 1, "B's own reading reached Kafka");
    let leaked = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return p.topic,
                Ok(_) => continue,
                Err(e) => panic!("A's link: {e}"),
            }
        }
    })
    .await;
    assert!(leaked.is_err(), "station A read {:?}", leaked.ok());

    // A wrong password, and a station not yet in the registry.
    for (user, password) in [(a.as_str(), "guess"), (c.as_str(), "c-secret")] {
        let refused = connect(broker.port, user, password).await.err();
        assert!(
            matches!(
                refused,
                Some(ConnectionError::ConnectionRefused(
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
                ))
            ),
            "{user} connected: {refused:?}"
        );
    }

    // C joins the registry: regenerated and reloaded, no broker restart.
    std::fs::write(
        dir.join("registry.toml"),
        [
            station_entry(&a, "a-secret"),
            station_entry(&b, "b-secret"),
            station_entry(&c, "c-secret"),
        ]
        .concat(),
    )
    .expect("registry");
    generate(&dir);
    let mut joined = None;
    for _ in 0..100 {
        if let Ok(link) = connect(broker.port, &c, "c-secret").await {
            joined = Some(link);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (client, mut el) = joined.expect("C connects after the reload");
    send(&client, &mut el, &c, &c, t(0), 13.0).await;
    let got = read_batches_where(&topics.raw, 1, WAIT, |x| x.station_id == c).await;
    assert_eq!(got.len(), 1, "C's reading reached Kafka");

    stop.cancel();
    ingest.wait().await.expect("clean stop");
    drop(broker);
}

/// Mosquitto 2.0's ACL file lets a station account SUBSCRIBE to ingest's
/// shared group and then drops what the broker hands it (SECURITY.md: with
/// the ACL file, ingest received 3 of 6). With the dynamic-security
/// configuration the SUBSCRIBE is refused and ingest receives all six.
#[tokio::test]
async fn with_dynamic_security_a_station_cannot_join_ingests_shared_group() {
    use rumqttc::SubscribeReasonCode;

    let dir = std::env::temp_dir().join(unique("mqtt-dynsec"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (a, b) = (unique("A"), unique("B"));
    std::fs::write(
        dir.join("registry.toml"),
        [station_entry(&a, "a-secret"), station_entry(&b, "b-secret")].concat(),
    )
    .expect("registry");
    std::fs::write(
        dir.join("accounts"),
        format!("ingest:{}\n", mosquitto_hash("ingest-pw")),
    )
    .expect("accounts");
    generate_dynsec(&dir);
    let auth = format!(
        "plugin {}\nplugin_opt_config_file {}\n",
        dynsec_plugin().display(),
        dir.join("dynsec.json").display()
    );
    let broker = start_broker_with(dir.clone(), auth).await;

    let group = unique("g");
    let (ingest, topics, stop) = start_ingest(&broker, Some(group.clone())).await;

    // A asks to join ingest's group: refused.
    let (a_client, mut a_el) = connect(broker.port, &a, "a-secret")
        .await
        .expect("A connects");
    a_client
        .subscribe(
            format!("$share/{group}/stations/+/readings"),
            QoS::AtLeastOnce,
        )
        .await
        .expect("queue");
    let codes = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = a_el.poll().await.expect("link") {
                return ack.return_codes;
            }
        }
    })
    .await
    .expect("SUBACK");
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::Failure],
        "A joined the group"
    );
    // A keeps its connection open (its session polled) while B publishes.
    let a_link = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(ev) = a_el.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                got.push(p.topic);
            }
        }
        got
    });

    let t = |minute| {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, minute, 0)
            .single()
            .expect("t")
    };
    let (b_client, mut b_el) = connect(broker.port, &b, "b-secret")
        .await
        .expect("B connects");
    for i in 0..6 {
        send(&b_client, &mut b_el, &b, &b, t(5 * i), 10.0 + f64::from(i)).await;
    }
    let got = read_batches_where(&topics.raw, 6, WAIT, |x| x.station_id == b).await;
    assert_eq!(got.len(), 6, "ingest received every one of B's messages");
    // A publishing as B is dropped; A's own reading, sent after it,
    // arrives, so the spoof would have too.
    let (a2, mut a2_el) = connect(broker.port, &a, "a-secret").await.expect("A again");
    send(&a2, &mut a2_el, &b, &b, t(59), 99.0).await;
    send(&a2, &mut a2_el, &a, &a, t(0), 1.0).await;
    let own = read_batches_where(&topics.raw, 1, WAIT, |x| x.station_id == a).await;
    assert_eq!(own.len(), 1, "A's own reading reached Kafka");
    let all_b = read_batches_where(&topics.raw, 7, Duration::from_secs(1), |x| {
        x.station_id == b
    })
    .await;
    assert_eq!(all_b.len(), 6, "A's reading as B was delivered");
    stop.cancel();
    ingest.wait().await.expect("clean stop");
    a_link.abort();
    let received = a_link.await.unwrap_or_default();
    assert!(received.is_empty(), "station A received {received:?}");
    drop(broker);
}

/// A station that authenticates to Mosquitto with a client certificate
/// (CN = its id; no password in the registry) on a listener that requires
/// one (`require_certificate`, `use_identity_as_username`): the ACL
/// `quantrac-mqtt-auth` generates gives it its own topics only, and the
/// listener refuses a client without a certificate.
#[tokio::test]
async fn a_station_with_a_client_certificate_publishes_only_as_itself() {
    use quantrac_testkit::env::{tls_ca, tls_server, tls_station};

    let (cert_station, cert, key) = tls_station();
    let dir = std::env::temp_dir().join(unique("mqtt-cert"));
    std::fs::create_dir_all(&dir).expect("dir");
    let b = unique("B");
    // The certificate's station has no mqtt_hash: no password login.
    let without_hash: String = station_entry(&cert_station, "unused")
        .lines()
        .filter(|l| !l.starts_with("mqtt_hash"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        dir.join("registry.toml"),
        [without_hash, station_entry(&b, "b-secret")].concat(),
    )
    .expect("registry");
    std::fs::write(
        dir.join("accounts"),
        format!("ingest:{}\n", mosquitto_hash("ingest-pw")),
    )
    .expect("accounts");
    generate(&dir);
    let cert_port = quantrac_testkit::ftp::free_port();
    let (server_cert, server_key) = tls_server();
    let auth = format!(
        "password_file {}\nacl_file {}\nlistener {cert_port} 127.0.0.1\ncafile {}\ncertfile {}\n\
         keyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
        dir.join("passwd").display(),
        dir.join("acl").display(),
        tls_ca().display(),
        server_cert.display(),
        server_key.display(),
    );
    let broker = start_broker_with(dir.clone(), auth).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", cert_port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate listener"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (ingest, topics, stop) = start_ingest(&broker, None).await;

    let tls_client = |identity: Option<(&Path, &Path)>| {
        let tls = quantrac_plumbing::tls::client_config(Some(&tls_ca()), identity).expect("TLS");
        let mut o = MqttOptions::new(unique("c"), "localhost", cert_port);
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
        AsyncClient::new(o, 16)
    };
    // No certificate: the TLS handshake is refused.
    let (_, mut el) = tls_client(None);
    let refused = tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("an answer");
    assert!(refused.is_err(), "connected without a certificate");

    let t = |minute| {
        Utc.with_ymd_and_hms(2026, 12, 1, 4, minute, 0)
            .single()
            .expect("t")
    };
    let (client, mut el) = tls_client(Some((&cert, &key)));
    loop {
        match tokio::time::timeout(WAIT, el.poll())
            .await
            .expect("in time")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => continue,
            Err(e) => panic!("the station's certificate was refused: {e}"),
        }
    }
    // As B (dropped), then as itself (delivered: so B's would have been).
    send(&client, &mut el, &b, &b, t(0), 50.0).await;
    send(&client, &mut el, &cert_station, &cert_station, t(5), 12.5).await;
    let own = read_batches_where(&topics.raw, 1, WAIT, |x| x.station_id == cert_station).await;
    assert_eq!(own.len(), 1, "the certificate's station reached Kafka");
    let spoofed = read_batches_where(&topics.raw, 1, Duration::from_secs(1), |x| {
        x.station_id == b
    })
    .await;
    assert!(
        spoofed.is_empty(),
        "a certificate for one station published as B"
    );
    stop.cancel();
    ingest.wait().await.expect("clean stop");
    drop(broker);
}
