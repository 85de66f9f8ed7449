//! Security events to syslog (RFC 5424 over UDP), for a security operations
//! centre that collects syslog rather than log files.
//!
//! Only events with `target = "quantrac::security"` go out (refused
//! credentials and calls, closed connections, TLS failures); each is one
//! datagram, facility `auth`, whose message is the event's fields as JSON.
//! Sending never blocks a service: a lost datagram is lost (UDP), and a
//! send error is counted, not retried.
//!
//! Switched on by `QUANTRAC_SYSLOG=udp://host:port` (see
//! [`crate::process::init_tracing`]).

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// The target security events are logged under.
pub const SECURITY_TARGET: &str = "quantrac::security";

/// RFC 5424 facility `auth` (4).
const FACILITY_AUTH: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("QUANTRAC_SYSLOG: {0:?} is not udp://host:port")]
    Address(String),
    #[error("syslog socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// A layer sending security events to `addr`.
#[derive(Debug)]
pub struct SyslogLayer {
    socket: UdpSocket,
    addr: SocketAddr,
    app: String,
    host: String,
}

impl SyslogLayer {
    /// `url` is `udp://host:port`; `app` names the service (APP-NAME).
    pub fn new(url: &str, app: &str) -> Result<Self, SyslogError> {
        use std::net::ToSocketAddrs;
        let rest = url
            .strip_prefix("udp://")
            .ok_or_else(|| SyslogError::Address(url.to_owned()))?;
        let addr = rest
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SyslogError::Address(url.to_owned()))?;
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
            .unwrap_or_else(|| "-".into());
        Ok(Self {
            socket,
            addr,
            app: app
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(48)
                .collect(),
            host,
        })
    }
}

/// An event's fields as a JSON object.
#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// RFC 5424 severity of a tracing level.
fn severity(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`.
pub fn format(level: &tracing::Level, host: &str, app: &str, fields: &serde_json::Value) -> String {
    let mut m = String::with_capacity(256);
    let _ = write!(
        m,
        "<{}>1 {} {host} {app} {} security - {fields}",
        FACILITY_AUTH * 8 + severity(level),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        std::process::id(),
    );
    m
}

impl<S: tracing::Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != SECURITY_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = format(
            event.metadata().level(),
            &self.host,
            &self.app,
            &serde_json::Value::Object(fields.0),
        );
        if self.socket.send_to(message.as_bytes(), self.addr).is_err() {
            metrics::counter!("syslog_send_failures_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_security_event_is_one_rfc5424_datagram_and_others_are_not_sent() {
        let collector = UdpSocket::bind("127.0.0.1:0").expect("bind");
        collector
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let url = format!("udp://{}", collector.local_addr().expect("addr"));
        let layer = SyslogLayer::new(&url, "quantrac-ingest").expect("layer");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(station = "X", "an ordinary event");
            tracing::warn!(target: "quantrac::security", peer = "10.0.0.9:4000", station = "PY-1", failures = 3u64, "closing a connection after failed auth frames");
        });
        let mut buf = [0u8; 2048];
        let n = collector.recv(&mut buf).expect("a datagram");
        let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
        // auth (4) * 8 + warning (4)
        assert!(text.starts_with("<36>1 "), "{text}");
        assert!(text.contains(" quantrac-ingest "), "{text}");
        let json = &text[text.find(" - ").expect("MSG") + 3..];
        let v: serde_json::Value = serde_json::from_str(json).expect("JSON message");
        assert_eq!(v["station"], "PY-1");
        assert_eq!(v["failures"], 3);
        assert_eq!(
            v["message"],
            "closing a connection after failed auth frames"
        );
        collector
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        assert!(
            collector.recv(&mut buf).is_err(),
            "the ordinary event was sent too"
        );
        assert!(SyslogLayer::new("tcp://x:1", "a").is_err());
    }
}
