//! Per-station MQTT accounts, against a real Mosquitto (the Debian binary
//! `deploy/services.sh` installs, run here with the files
//! `quantrac-mqtt-auth` generates from a registry) and the real Kafka:
//! - a station publishes its own readings, which reach Kafka through ingest;
//! - a station publishing under another's id is not delivered;
//! - a station cannot subscribe to the readings; a wrong password is
//!   refused;
//! - a station added to the registry can connect once the files are
//!   regenerated and Mosquitto reloaded, without a restart.

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

async fn start_broker(dir: PathBuf) -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous false\n\
             password_file {}\nacl_file {}\npid_file {}\npersistence false\n{}",
            dir.join("passwd").display(),
            dir.join("acl").display(),
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

    let topics = create_topics(&unique("t-acl")).await;
    let mut config = test_config(&topics, &unique("n"));
    config.tcp.enabled = false;
    config.mqtt.enabled = true;
    config.mqtt.url = format!("mqtt://127.0.0.1:{}", broker.port);
    config.mqtt.username = "ingest".into();
    config.mqtt.password = "ingest-pw".into();
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
    publish(
        &client,
        &mut el,
        &format!("stations/{a}/readings"),
        json::encode(&sample(&a, t(0), 10.0)),
    )
    .await;
    publish(
        &client,
        &mut el,
        &format!("stations/{b}/readings"),
        json::encode(&sample(&b, t(5), 11.0)),
    )
    .await;
    publish(
        &client,
        &mut el,
        &format!("stations/{a}/readings"),
        json::encode(&sample(&a, t(10), 12.0)),
    )
    .await;
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
    publish(
        &b_client,
        &mut b_el,
        &format!("stations/{b}/readings"),
        json::encode(&sample(&b, t(15), 14.0)),
    )
    .await;
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
    publish(
        &client,
        &mut el,
        &format!("stations/{c}/readings"),
        json::encode(&sample(&c, t(0), 13.0)),
    )
    .await;
    let got = read_batches_where(&topics.raw, 1, WAIT, |x| x.station_id == c).await;
    assert_eq!(got.len(), 1, "C's reading reached Kafka");

    stop.cancel();
    ingest.wait().await.expect("clean stop");
    drop(broker);
}
