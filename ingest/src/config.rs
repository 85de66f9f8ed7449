//! Ingest configuration: built-in defaults, then a TOML file, then
//! environment variables `QUANTRAC_INGEST__<SECTION>__<FIELD>` (double
//! underscore between levels), then validation that names the bad field.
//!
//! `deploy/ingest.toml` documents every field with its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::FixedOffset;
use serde::{Deserialize, Serialize};

pub use quantrac_plumbing::config::ConfigError;
pub(crate) use quantrac_plumbing::config::invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Name of this instance, written into every record for tracing; also
    /// the base of the MQTT client id, so it must stay the same across
    /// restarts for the persistent session to be found again.
    pub node_id: String,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub mqtt: MqttConfig,
    pub tcp: TcpConfig,
    pub mqtt_listener: MqttListenerConfig,
    pub hj212: Hj212Config,
    pub circular10: Circular10Config,
    pub ftp: FtpConfig,
    pub auth: AuthConfig,
    /// Upper bound on records handed to Kafka and not yet acknowledged, over
    /// all receivers. When reached, receivers stop reading: senders slow down
    /// and memory stays bounded.
    pub max_in_flight: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            node_id: "ingest-1".into(),
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            mqtt: MqttConfig::default(),
            tcp: TcpConfig::default(),
            mqtt_listener: MqttListenerConfig::default(),
            hj212: Hj212Config::default(),
            circular10: Circular10Config::default(),
            ftp: FtpConfig::default(),
            auth: AuthConfig::default(),
            max_in_flight: 10_000,
        }
    }
}

/// The FTP(S) receiver of Circular 10 files (see `ftp`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtpConfig {
    /// Where it listens; unset: no FTP receiver.
    pub listen: Option<SocketAddr>,
    /// First and last port of passive data connections.
    pub passive_ports: [u16; 2],
    /// FTPS (explicit, `AUTH TLS`): certificate and key.
    pub tls: Option<quantrac_plumbing::tls::ServerTls>,
    /// Refuse logins and transfers that are not under TLS.
    pub require_tls: bool,
    /// A larger upload is refused (552) and its first bytes kept.
    pub max_file_bytes: usize,
    /// A session idle this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// At shutdown, uploads in flight get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for FtpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            passive_ports: [50_000, 50_099],
            tls: None,
            require_tls: false,
            max_file_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Station credentials (see `credentials`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The station registry whose `secret_hash` per station is the
    /// credential; re-read when it changes. Unset: no station has one.
    pub registry: Option<std::path::PathBuf>,
    /// Refuse readings of stations without a `secret_hash` too. Off by
    /// default so that stations can be moved to credentials one by one; a
    /// station with a secret is always checked.
    pub require_all: bool,
    /// Failed auth frames after which a TCP connection is closed.
    pub max_failures: u32,
    /// How often the registry file is checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_every: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            registry: None,
            require_all: false,
            max_failures: 3,
            reload_every: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `/metrics` (Prometheus) and `/health`.
    pub listen: SocketAddr,
    /// `/health` reports a stall (503) when frames kept arriving for this
    /// long and none was answered.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            stall_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub readings_topic: String,
    pub rejected_topic: String,
    /// How long librdkafka keeps retrying one record before giving up; the
    /// receivers then retry (MQTT) or tell the station to resend (TCP).
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// Small batching delay: trades a few ms of latency for throughput.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Extra librdkafka properties (e.g. security settings), applied last.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:19092".into(),
            readings_topic: quantrac_proto::topics::READINGS_RAW.into(),
            rejected_topic: quantrac_proto::topics::INGEST_REJECTED.into(),
            message_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(5),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub enabled: bool,
    /// `mqtt://host:port`, or `mqtts://host:port` for TLS.
    pub url: String,
    /// PEM CA certificates trusted for `mqtts://` (a private CA); unset:
    /// the public web roots.
    pub ca_file: Option<std::path::PathBuf>,
    pub username: String,
    pub password: String,
    /// Topic filter; the station id is the second level:
    /// `stations/<station id>/readings`.
    pub topic: String,
    /// When set, subscribe as `$share/<group>/<topic>` so that several ingest
    /// instances split one stream (each needs its own `node_id`).
    pub shared_group: Option<String>,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Received but not yet acknowledged messages; when full, ingest stops
    /// reading from the broker, which holds the rest.
    pub max_pending: usize,
    pub max_payload_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: "mqtt://127.0.0.1:11883".into(),
            ca_file: None,
            username: "ingest".into(),
            // No secret is compiled in: the deployment gives it
            // (QUANTRAC_INGEST__MQTT__PASSWORD).
            password: String::new(),
            topic: "stations/+/readings".into(),
            shared_group: None,
            keep_alive: Duration::from_secs(30),
            max_pending: 1_000,
            max_payload_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_connections: usize,
    /// Connections one address may hold at once; more are closed as soon
    /// as accepted, so one host cannot take every slot.
    pub max_connections_per_address: usize,
    /// Longest frame (HJ 212 packet, JSON line, Circular 10 record).
    pub max_frame_bytes: usize,
    /// A frame must complete within this once its first byte arrived (a
    /// sender trickling bytes cannot hold a connection for longer).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// A connection with no frame for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// At `max_connections`, a newcomer takes the slot of the connection
    /// silent longest, if it has been silent at least this long: idle
    /// connections (a scan, a crashed peer, an attack from many addresses)
    /// cannot lock stations out until `idle_timeout`. An evicted logger
    /// dials again when it next sends.
    #[serde(with = "humantime_serde")]
    pub evict_idle_after: Duration,
    /// Frames read ahead of their reply on one connection.
    pub pipeline_window: usize,
    /// Readings a second one sending address may deliver (all its
    /// connections); over it, ingest reads its next frame later
    /// (back-pressure, nothing refused). 0: no cap (stations behind one NAT
    /// share an address).
    pub max_readings_per_second_per_address: u32,
    /// Readings a second one station may deliver over TCP, likewise. A
    /// real station sends under one a second; a backlog after an outage
    /// goes out at this rate. 0: no cap.
    pub max_readings_per_second_per_station: u32,
    /// Serve the plain port `listen`; switch it off where every logger
    /// speaks TLS.
    pub plain: bool,
    /// A TLS port beside the plain one (needs `[tcp.tls]`).
    pub tls_listen: Option<SocketAddr>,
    /// Certificate and key of the TLS port; with `client_ca`, stations may
    /// authenticate by a client certificate whose CN is their id.
    pub tls: Option<quantrac_plumbing::tls::ServerTls>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9212)),
            max_connections: 1_024,
            max_connections_per_address: 256,
            max_frame_bytes: 64 * 1024,
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            evict_idle_after: Duration::from_secs(10),
            pipeline_window: 32,
            max_readings_per_second_per_address: 0,
            max_readings_per_second_per_station: 1_000,
            plain: true,
            tls_listen: None,
            tls: None,
        }
    }
}

/// Ingest's own MQTT 3.1.1 endpoint for stations (see `mqtt_listener`):
/// a station's PUBACK goes out only after Kafka acknowledged its message,
/// where a broker (Mosquitto) acknowledges before its disk has it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttListenerConfig {
    /// Off by default: deployments that use a broker are unchanged.
    pub enabled: bool,
    /// The plain port.
    pub listen: SocketAddr,
    /// A TLS port beside the plain one (needs `[mqtt_listener.tls]`).
    pub tls_listen: Option<SocketAddr>,
    /// Certificate and key of the TLS port; with `client_ca`, a station may
    /// authenticate by a client certificate whose CN is its id.
    pub tls: Option<quantrac_plumbing::tls::ServerTls>,
    pub max_connections: usize,
    /// Connections one address may hold; more are closed as soon as
    /// accepted, so one host cannot take every slot.
    pub max_connections_per_address: usize,
    /// Largest packet read whole. A larger PUBLISH is not buffered: it is
    /// rejected (its first bytes kept) and acknowledged, so the station
    /// stops resending it; any other larger packet closes the connection.
    pub max_packet_bytes: usize,
    /// The CONNECT must arrive within this after the connection opens.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A connection whose CONNECT asked for no keep-alive is closed after
    /// this long without a packet.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// PUBLISHes read ahead of their PUBACK on one connection; past that,
    /// ingest stops reading and TCP flow control slows the station.
    pub in_flight_per_connection: usize,
    /// The persistent sessions (client ids that connected with
    /// `clean_session = 0`), kept across restarts; created when missing.
    pub sessions_file: std::path::PathBuf,
    /// Most persistent sessions kept; past it a new one is refused (CONNACK
    /// "server unavailable") and the station retries.
    pub max_sessions: usize,
    /// At shutdown, PUBACKs of what Kafka already acknowledged go out
    /// within this, then connections close.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Readings a second one station may deliver (all its connections);
    /// over it, its next PUBLISH is read later (back-pressure through
    /// withheld PUBACKs and TCP flow control, nothing refused), as on TCP.
    /// A backlog after an outage goes out at this rate. 0: no cap.
    pub max_readings_per_second_per_station: u32,
}

impl Default for MqttListenerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            tls_listen: None,
            tls: None,
            max_connections: 1_024,
            max_connections_per_address: 256,
            max_packet_bytes: MqttConfig::default().max_payload_bytes,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            in_flight_per_connection: 32,
            sessions_file: "state/mqtt-sessions".into(),
            max_sessions: 100_000,
            shutdown_grace: Duration::from_secs(10),
            max_readings_per_second_per_station: 1_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hj212Config {
    /// Password (`PW`) per device id (`MN`).
    pub passwords: BTreeMap<String, String>,
    /// Password for devices not listed above; unset means such devices are
    /// refused.
    pub default_password: Option<String>,
    /// Offset of the loggers' local clock, e.g. `+07:00`.
    pub utc_offset: String,
}

impl Default for Hj212Config {
    fn default() -> Self {
        Self {
            passwords: BTreeMap::new(),
            default_password: None,
            utc_offset: "+07:00".into(),
        }
    }
}

impl Hj212Config {
    /// The password the device must send, if it may send at all.
    pub fn password_for(&self, mn: &str) -> Option<&str> {
        self.passwords
            .get(mn)
            .or(self.default_password.as_ref())
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Circular10Config {
    /// Offset of the times in the records, e.g. `+07:00` (Asia/Ho_Chi_Minh).
    pub utc_offset: String,
}

impl Default for Circular10Config {
    fn default() -> Self {
        Self {
            utc_offset: "+07:00".into(),
        }
    }
}

impl MqttListenerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_listen.is_some() != self.tls.is_some() {
            return Err(invalid(
                "mqtt_listener.tls_listen",
                "set it together with [mqtt_listener.tls] (cert, key)",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid(
                "mqtt_listener.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_connections_per_address == 0 {
            return Err(invalid(
                "mqtt_listener.max_connections_per_address",
                "must be at least 1",
            ));
        }
        // Room for a CONNECT with a long client id and credentials.
        if self.max_packet_bytes < 1_024 {
            return Err(invalid(
                "mqtt_listener.max_packet_bytes",
                "must be at least 1024",
            ));
        }
        if self.connect_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "mqtt_listener.connect_timeout",
                "must be at least 100ms",
            ));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("mqtt_listener.idle_timeout", "must be at least 1s"));
        }
        if self.in_flight_per_connection == 0 {
            return Err(invalid(
                "mqtt_listener.in_flight_per_connection",
                "must be at least 1",
            ));
        }
        if self.sessions_file.as_os_str().is_empty() {
            return Err(invalid("mqtt_listener.sessions_file", "must name a file"));
        }
        if self.max_sessions == 0 {
            return Err(invalid("mqtt_listener.max_sessions", "must be at least 1"));
        }
        Ok(())
    }
}

/// Parses `+07:00` / `-03:30` / `Z`.
pub fn parse_offset(s: &str) -> Option<FixedOffset> {
    if s == "Z" || s == "UTC" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if !(0..=23).contains(&h) || !(0..=59).contains(&m) {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

impl IngestConfig {
    /// Defaults, then `path` (if any), then `QUANTRAC_INGEST__*` variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let c: IngestConfig = quantrac_plumbing::config::load(path, "QUANTRAC_INGEST__")?;
        c.validate()?;
        Ok(c)
    }

    /// Parses a TOML text over the defaults (no environment); for tests.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: IngestConfig = quantrac_plumbing::config::from_toml(text)?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tcp.max_connections_per_address == 0 {
            return Err(invalid(
                "tcp.max_connections_per_address",
                "must be at least 1",
            ));
        }
        if self.ftp.passive_ports[0] == 0 || self.ftp.passive_ports[0] > self.ftp.passive_ports[1] {
            return Err(invalid(
                "ftp.passive_ports",
                "expected [first, last] with 0 < first <= last",
            ));
        }
        if self.ftp.max_file_bytes == 0 {
            return Err(invalid("ftp.max_file_bytes", "must be at least 1"));
        }
        if self.ftp.require_tls && self.ftp.tls.is_none() {
            return Err(invalid("ftp.require_tls", "needs [ftp.tls]"));
        }
        if self.ftp.listen.is_some() && self.auth.registry.is_none() {
            return Err(invalid(
                "ftp.listen",
                "FTP accounts are the registry's stations: set auth.registry",
            ));
        }
        if self.auth.max_failures == 0 {
            return Err(invalid("auth.max_failures", "must be at least 1"));
        }
        if self.auth.reload_every < Duration::from_millis(100) {
            return Err(invalid("auth.reload_every", "must be at least 100ms"));
        }
        if self.node_id.is_empty() || self.node_id.contains(['/', '+', '#', ' ']) {
            return Err(invalid(
                "node_id",
                "must be non-empty, without '/', '+', '#' or spaces",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must list at least one host:port"));
        }
        if self.kafka.readings_topic.is_empty() || self.kafka.rejected_topic.is_empty() {
            return Err(invalid("kafka.readings_topic", "topics must be named"));
        }
        if self.kafka.message_timeout < Duration::from_secs(1) {
            return Err(invalid("kafka.message_timeout", "must be at least 1s"));
        }
        if !self.mqtt.enabled && !self.tcp.enabled && !self.mqtt_listener.enabled {
            return Err(invalid(
                "mqtt.enabled",
                "enable at least one receiver (mqtt, tcp or mqtt_listener)",
            ));
        }
        if self.mqtt_listener.enabled {
            self.mqtt_listener.validate()?;
        }
        if self.mqtt.enabled {
            crate::mqtt::broker_address(&self.mqtt.url).map_err(|e| invalid("mqtt.url", e))?;
            if !self.mqtt.username.is_empty() && self.mqtt.password.is_empty() {
                return Err(invalid(
                    "mqtt.password",
                    "set the broker password of mqtt.username (QUANTRAC_INGEST__MQTT__PASSWORD)",
                ));
            }
            if !self.mqtt.topic.starts_with("stations/") {
                return Err(invalid(
                    "mqtt.topic",
                    "must be under `stations/` (stations/+/readings)",
                ));
            }
            if self.mqtt.max_pending == 0 {
                return Err(invalid("mqtt.max_pending", "must be at least 1"));
            }
            if self.mqtt.keep_alive < Duration::from_secs(5) {
                return Err(invalid("mqtt.keep_alive", "must be at least 5s"));
            }
        }
        if self.tcp.enabled {
            if self.tcp.tls_listen.is_some() != self.tcp.tls.is_some() {
                return Err(invalid(
                    "tcp.tls_listen",
                    "set it together with [tcp.tls] (cert, key)",
                ));
            }
            if !self.tcp.plain && self.tcp.tls_listen.is_none() {
                return Err(invalid(
                    "tcp.plain",
                    "the plain port is off and no tcp.tls_listen is set: nothing would listen",
                ));
            }
            if self.tcp.max_connections == 0 {
                return Err(invalid("tcp.max_connections", "must be at least 1"));
            }
            if self.tcp.max_frame_bytes < 128 {
                return Err(invalid("tcp.max_frame_bytes", "must be at least 128"));
            }
            if self.tcp.pipeline_window == 0 {
                return Err(invalid("tcp.pipeline_window", "must be at least 1"));
            }
        }
        if parse_offset(&self.hj212.utc_offset).is_none() {
            return Err(invalid(
                "hj212.utc_offset",
                "expected an offset like +07:00",
            ));
        }
        if parse_offset(&self.circular10.utc_offset).is_none() {
            return Err(invalid(
                "circular10.utc_offset",
                "expected an offset like +07:00",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_once_given_the_broker_password() {
        // No secret is built in: the defaults name what is missing.
        let err = IngestConfig::default().validate().expect_err("no password");
        assert!(err.to_string().contains("mqtt.password"), "{err}");
        let mut c = IngestConfig::default();
        c.mqtt.password = "from-the-environment".into();
        c.validate().expect("defaults validate");
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../deploy/ingest.toml");
        let c = IngestConfig::from_toml(text).expect("deploy/ingest.toml parses");
        assert_eq!(c.tcp.listen.port(), 9212);
        assert_eq!(c.auth.max_failures, AuthConfig::default().max_failures);
        assert!(c.auth.registry.is_some());
    }

    #[test]
    fn unknown_field_is_named() {
        let err =
            IngestConfig::from_toml("[tcp]\nmax_conections = 3\n").expect_err("must be refused");
        assert!(err.to_string().contains("max_conections"), "{err}");
    }

    #[test]
    fn invalid_value_names_the_field() {
        let err =
            IngestConfig::from_toml("[mqtt]\npassword = \"p\"\n[hj212]\nutc_offset = \"7\"\n")
                .expect_err("must be refused");
        assert!(err.to_string().contains("hj212.utc_offset"), "{err}");
        let err = IngestConfig::from_toml("[tcp]\nread_timeout = \"soon\"\n")
            .expect_err("must be refused");
        assert!(err.to_string().contains("read_timeout"), "{err}");
    }

    #[test]
    fn mqtt_listener_is_off_by_default_and_validated_by_field() {
        let c = IngestConfig::from_toml("[mqtt]\npassword = \"p\"\n").expect("defaults");
        assert!(!c.mqtt_listener.enabled);
        assert_eq!(c.mqtt_listener.max_packet_bytes, c.mqtt.max_payload_bytes);
        let err = IngestConfig::from_toml(
            "[mqtt]\npassword = \"p\"\n[mqtt_listener]\nenabled = true\nin_flight_per_connection = 0\n",
        )
        .expect_err("must be refused");
        assert!(
            err.to_string()
                .contains("mqtt_listener.in_flight_per_connection"),
            "{err}"
        );
        let err = IngestConfig::from_toml(
            "[mqtt]\npassword = \"p\"\n[mqtt_listener]\nenabled = true\ntls_listen = \"127.0.0.1:8884\"\n",
        )
        .expect_err("must be refused");
        assert!(
            err.to_string().contains("mqtt_listener.tls_listen"),
            "{err}"
        );
        // The listener alone is a receiver.
        IngestConfig::from_toml(
            "[mqtt]\nenabled = false\n[tcp]\nenabled = false\n[mqtt_listener]\nenabled = true\n",
        )
        .expect("the listener alone");
    }

    #[test]
    fn offsets() {
        assert_eq!(
            parse_offset("+07:00").map(|o| o.local_minus_utc()),
            Some(7 * 3600)
        );
        assert_eq!(
            parse_offset("-03:30").map(|o| o.local_minus_utc()),
            Some(-(3 * 3600 + 1800))
        );
        assert_eq!(parse_offset("Z").map(|o| o.local_minus_utc()), Some(0));
        assert!(parse_offset("+24:00").is_none());
        assert!(parse_offset("07:00").is_none());
    }

    #[test]
    fn hj212_password_lookup() {
        let mut c = Hj212Config::default();
        assert_eq!(c.password_for("X"), None);
        c.default_password = Some("d".into());
        c.passwords.insert("X".into(), "x".into());
        assert_eq!(c.password_for("X"), Some("x"));
        assert_eq!(c.password_for("Y"), Some("d"));
    }
}
