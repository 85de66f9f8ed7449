//! Ingest's own MQTT 3.1.1 endpoint for stations: a station's PUBACK goes
//! out only after Kafka acknowledged the message's records, the promise the
//! TCP receiver keeps. (A broker such as Mosquitto PUBACKs a station before
//! its disk has the message, and a `kill -9` loses what it acknowledged;
//! the broker path, [`crate::mqtt`], stays for deployments that need one.)
//!
//! Per connection:
//! - The first packet must be a CONNECT, within `connect_timeout`; another
//!   protocol level than 4 (3.1.1) gets CONNACK 0x01 and the connection
//!   closes.
//! - Identity: user name = station id (or alias), password = the station's
//!   secret, checked like a TCP auth frame; or, on the TLS port, a client
//!   certificate whose CN is the station id. A refusal gets CONNACK 0x04
//!   (wrong secret) or 0x05 (no identity allowed), is counted by reason and
//!   logged with station and address, and the connection closes.
//! - Sessions ([`sessions`]): the CONNACK's Session Present is 1 for a
//!   (station, client id) that connected before with `clean_session = 0`,
//!   remembered across restarts, so a station keeps (and resends) its
//!   unacknowledged messages.
//! - PUBLISH to `stations/<own id>/readings`: decoded as the broker path
//!   does (JSON or Circular 10); the records, or a rejected record with the
//!   raw bytes and reason, go to Kafka; QoS 1 is PUBACKed (QoS 2 PUBRECed)
//!   once Kafka acknowledged them, in the order the PUBLISHes arrived
//!   (§4.6.0-2). Another topic is rejected (`mqtt.topic_not_allowed`,
//!   `mqtt.bad_topic`) and acknowledged all the same: resending it would
//!   not make it better. When Kafka does not take the records, no PUBACK:
//!   the connection closes and the station resends after reconnecting.
//! - A PUBLISH over `max_packet_bytes` is never buffered whole: its topic
//!   and packet id are read from its head, the rest is discarded as it
//!   streams in, a rejected record (`mqtt.too_large`, its first bytes) goes
//!   to Kafka and the PUBLISH is acknowledged, so the station stops
//!   resending it. Any other oversized or malformed packet closes the
//!   connection.
//! - A station over `max_readings_per_second_per_station` has its next
//!   PUBLISH read later (back-pressure, nothing refused), as on TCP.
//! - Up to `in_flight_per_connection` PUBLISHes are read ahead of their
//!   PUBACK; past that ingest stops reading and TCP flow control slows the
//!   station. A connection silent for 1.5 × its keep-alive (or
//!   `idle_timeout` without one) is closed.
//! - SUBSCRIBE is refused (SUBACK 0x80 per filter): stations only publish.
//!
//! Behind a load balancer, keep a station on one instance (or give the
//! instances one `sessions_file`): another instance would not know its
//! session and answer Session Present 0.

pub mod frame;
pub mod sessions;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use chrono::FixedOffset;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::WireError;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::IngestError;
use crate::config::{MqttListenerConfig, invalid, parse_offset};
use crate::credentials::{Check, Credentials};
use crate::decode;
use crate::intake::{Intake, Prepared, Verdict};
use crate::rate::RateCap;
use crate::sink::Acks;
use crate::tcp::PerAddress;
pub use sessions::{SessionError, Sessions};

/// Payload bytes of an oversized PUBLISH kept on its rejected record.
const OVERSIZED_KEPT: usize = 4096;

/// QoS 2 packet ids awaiting their PUBREL on one connection; past that the
/// client breaks its own in-flight window and is disconnected.
const MAX_AWAITING_PUBREL: usize = 1024;

/// Longest client id accepted (3.1.1 requires 23; longer ones are common).
const MAX_CLIENT_ID: usize = 256;

/// Why a connection ended other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// Nothing heard for the keep-alive allowance.
    #[error("silent for {0:?}")]
    Silent(Duration),
}

struct Ctx {
    intake: Intake,
    credentials: Arc<Credentials>,
    sessions: Arc<Sessions>,
    cfg: MqttListenerConfig,
    offset: FixedOffset,
    live: Live,
    per_station: RateCap,
}

/// Accepts stations until `shutdown`, then lets every connection send the
/// PUBACKs of what Kafka already acknowledged (within `shutdown_grace`).
pub async fn run(
    config: Arc<crate::IngestConfig>,
    intake: Intake,
    credentials: Arc<Credentials>,
    sessions: Arc<Sessions>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let cfg = config.mqtt_listener.clone();
    let ctx = Arc::new(Ctx {
        intake,
        credentials,
        sessions,
        offset: parse_offset(&config.circular10.utc_offset).ok_or_else(|| {
            IngestError::Config(invalid("circular10.utc_offset", "expected +HH:MM"))
        })?,
        live: Live::default(),
        per_station: RateCap::new(cfg.max_readings_per_second_per_station),
        cfg,
    });
    let limit = Arc::new(Semaphore::new(ctx.cfg.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let tracker = TaskTracker::new();
    let status = Arc::clone(ctx.intake.status());
    status.set_mqtt_listening(true);
    let mut backoff = Duration::from_millis(10);
    loop {
        // A free slot before accepting: excess connections wait in the
        // kernel's backlog instead of costing memory here.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => { backoff = Duration::from_millis(10); s }
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT listener: accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Some(slot) = per_address.take(peer.ip(), ctx.cfg.max_connections_per_address) else {
            refused("per_address");
            tracing::warn!(target: "quantrac::security", %peer, limit = ctx.cfg.max_connections_per_address, "MQTT connection refused: too many from this address");
            continue;
        };
        let (ctx, shutdown, tls) = (Arc::clone(&ctx), shutdown.clone(), tls.clone());
        tracker.spawn(async move {
            let _slot = slot;
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            metrics::gauge!("ingest_mqtt_listener_connections").increment(1.0);
            let result = match tls {
                None => connection(stream, peer, None, &ctx, &shutdown).await,
                Some(acceptor) => match handshake(&acceptor, stream, peer, &ctx).await {
                    Some((stream, cn)) => connection(stream, peer, cn, &ctx, &shutdown).await,
                    None => Ok(()),
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "MQTT connection ended with an error");
            }
            metrics::gauge!("ingest_mqtt_listener_connections").decrement(1.0);
        });
    }
    status.set_mqtt_listening(false);
    drop(listener);
    tracker.close();
    // Each connection bounds its own drain by shutdown_grace; this is the
    // backstop.
    let backstop = ctx.cfg.shutdown_grace + Duration::from_secs(1);
    if tokio::time::timeout(backstop, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "MQTT listener drain deadline passed; unacknowledged messages will be resent by the stations"
        );
    }
    Ok(())
}

fn refused(reason: &'static str) {
    metrics::counter!("ingest_mqtt_listener_refused_total", "reason" => reason).increment(1);
}

/// The TLS handshake, within `connect_timeout`; the CN of a verified client
/// certificate names the station.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Option<String>,
)> {
    let stream = match tokio::time::timeout(ctx.cfg.connect_timeout, acceptor.accept(stream)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            refused("tls_handshake");
            tracing::warn!(target: "quantrac::security", %peer, error = %e, "MQTT TLS handshake refused");
            return None;
        }
        Err(_) => {
            refused("tls_deadline");
            tracing::warn!(target: "quantrac::security", %peer, "MQTT TLS handshake not complete within mqtt_listener.connect_timeout");
            return None;
        }
    };
    let cn = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(quantrac_plumbing::tls::subject_common_name);
    Some((stream, cn))
}

/// What the reader gives the connection.
#[derive(Debug)]
enum Frame {
    Packet(Packet),
    /// A PUBLISH over `max_packet_bytes`, read through and discarded: its
    /// head and the first payload bytes.
    Oversized {
        head: frame::PublishHead,
        kept: Vec<u8>,
    },
    /// A CONNECT of another protocol (name, level) than MQTT 3.1.1.
    OtherProtocol(u8),
}

/// Reads packets, never holding more than one packet of at most
/// `max` bytes (or the head of a larger PUBLISH).
struct Reader<R> {
    rd: R,
    buf: BytesMut,
    max: usize,
    /// Longest wait for the next bytes.
    silence: Duration,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn fill(&mut self) -> Result<(), ConnError> {
        self.buf.reserve(8 * 1024);
        match tokio::time::timeout(self.silence, self.rd.read_buf(&mut self.buf)).await {
            Err(_) => Err(ConnError::Silent(self.silence)),
            Ok(Ok(0)) => Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// The next packet; `None` at a clean end of stream.
    async fn next(&mut self) -> Result<Option<Frame>, ConnError> {
        loop {
            let header =
                frame::fixed_header(&self.buf).map_err(|e| ConnError::Malformed(e.to_string()))?;
            if let Some(h) = header {
                if h.remaining > self.max {
                    if h.packet_type() != frame::PUBLISH {
                        return Err(ConnError::Protocol(
                            "packet over mqtt_listener.max_packet_bytes",
                        ));
                    }
                    if let Some(head) = frame::publish_head(&self.buf)
                        .map_err(|e| ConnError::Malformed(e.to_string()))?
                    {
                        return self.skip(head).await.map(Some);
                    }
                } else if self.buf.len() >= h.frame_len() {
                    if h.packet_type() == frame::CONNECT
                        && let Some((name, level)) =
                            frame::connect_protocol(&self.buf[..h.frame_len()])
                        && (name != b"MQTT" || level != 4)
                    {
                        self.buf.advance(h.frame_len());
                        return Ok(Some(Frame::OtherProtocol(level)));
                    }
                    return Packet::read(&mut self.buf, self.max)
                        .map(|p| Some(Frame::Packet(p)))
                        .map_err(|e| ConnError::Malformed(e.to_string()));
                }
            }
            let was_empty = self.buf.is_empty();
            match self.fill().await {
                Err(ConnError::Io(e))
                    if was_empty && e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(None);
                }
                r => r?,
            }
        }
    }

    /// Reads through the rest of an oversized PUBLISH (never holding more
    /// than one read of it), keeping its first payload bytes.
    async fn skip(&mut self, head: frame::PublishHead) -> Result<Frame, ConnError> {
        let mut kept = Vec::with_capacity(OVERSIZED_KEPT.min(head.payload_len()));
        // `publish_head` answered, so the head is buffered.
        self.buf.advance(head.head_len);
        let mut left = head.payload_len();
        loop {
            let used = self.buf.len().min(left);
            let take = used.min(OVERSIZED_KEPT - kept.len());
            kept.extend_from_slice(&self.buf[..take]);
            self.buf.advance(used);
            left -= used;
            if left == 0 {
                return Ok(Frame::Oversized { head, kept });
            }
            self.fill().await?;
        }
    }
}

/// Open (station, client id) connections: a client connecting again takes
/// over from its old connection (§3.1.4-2), which is closed.
#[derive(Default)]
struct Live {
    next: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<HashMap<(String, String), (u64, CancellationToken)>>,
}

/// One connection's place in [`Live`], removed on drop.
struct LiveEntry<'a> {
    live: &'a Live,
    key: (String, String),
    id: u64,
    taken_over: CancellationToken,
}

impl Live {
    fn enter(&self, station: &str, client: &str) -> LiveEntry<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = CancellationToken::new();
        let key = (station.to_owned(), client.to_owned());
        let old = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), (id, token.clone()));
        if let Some((_, old)) = old {
            old.cancel();
        }
        LiveEntry {
            live: self,
            key,
            id,
            taken_over: token,
        }
    }
}

impl Drop for LiveEntry<'_> {
    fn drop(&mut self) {
        let mut open = self
            .live
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            open.remove(&self.key);
        }
    }
}

/// Encodes and writes packets in the order they come; closes at once
/// when the connection `failed` (a message Kafka did not take).
async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut out: mpsc::Receiver<Packet>,
    timeout: Duration,
    failed: CancellationToken,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    loop {
        let p = tokio::select! {
            biased;
            () = failed.cancelled() => break,
            p = out.recv() => match p { Some(p) => p, None => break },
        };
        buf.clear();
        p.write(&mut buf, usize::MAX)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // Several answers ready at once go out in one write.
        while let Ok(p) = out.try_recv() {
            p.write(&mut buf, usize::MAX)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        // A peer that stops reading must not hold the connection for ever.
        tokio::time::timeout(timeout, wr.write_all(&buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "peer not reading"))??;
    }
    wr.shutdown().await
}

async fn write_one<W: AsyncWrite + Unpin>(wr: &mut W, p: Packet) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    p.write(&mut buf, usize::MAX)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    wr.write_all(&buf).await?;
    wr.flush().await
}

/// A refused CONNECT: CONNACK with `code`, then close.
async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    code: ConnectReturnCode,
    reason: &'static str,
) -> Result<(), ConnError> {
    refused(reason);
    write_one(wr, Packet::ConnAck(ConnAck::new(code, false))).await?;
    let _ = wr.shutdown().await;
    Ok(())
}

/// Who the CONNECT proves the station to be, or the refusal.
async fn authenticate(
    ctx: &Ctx,
    connect: &Connect,
    certificate: Option<&str>,
) -> Result<String, (ConnectReturnCode, &'static str, String)> {
    let username = connect
        .login
        .as_ref()
        .map(|l| l.username.as_str())
        .unwrap_or_default();
    if let Some(cn) = certificate {
        let station = ctx.credentials.canonical(cn);
        // A user name, if any, must name the certificate's station.
        if !username.is_empty() && ctx.credentials.canonical(username) != station {
            return Err((
                ConnectReturnCode::NotAuthorized,
                "certificate_mismatch",
                username.to_owned(),
            ));
        }
        metrics::counter!("ingest_auth_accepted_total", "by" => "certificate").increment(1);
        return Ok(station);
    }
    if username.is_empty() || username.chars().any(char::is_control) {
        return Err((
            ConnectReturnCode::NotAuthorized,
            "no_station",
            username.escape_debug().to_string(),
        ));
    }
    let station = ctx.credentials.canonical(username);
    let password = connect
        .login
        .as_ref()
        .map(|l| l.password.as_str())
        .unwrap_or_default();
    // As a TCP auth frame: an empty secret is wrong without asking Argon2.
    let check = if password.is_empty() {
        if ctx.credentials.has_secret(&station) {
            Check::Wrong
        } else {
            Check::NoSecret
        }
    } else {
        ctx.credentials.check(&station, password).await
    };
    match check {
        Check::Valid => {
            metrics::counter!("ingest_auth_accepted_total", "by" => "secret").increment(1);
            Ok(station)
        }
        Check::Wrong => Err((
            ConnectReturnCode::BadUserNamePassword,
            "bad_secret",
            station,
        )),
        Check::NoSecret if ctx.credentials.require_all => {
            Err((ConnectReturnCode::NotAuthorized, "no_secret", station))
        }
        // As on TCP: a station without a secret in the registry is not
        // asked for one (until auth.require_all).
        Check::NoSecret => Ok(station),
    }
}

/// The station a PUBLISH topic names, if the connection may publish there.
pub fn topic_station<'t>(
    topic: &'t str,
    station: &str,
    canonical: impl Fn(&str) -> String,
) -> Result<&'t str, WireError> {
    let named = decode::station_from_topic(topic)?;
    if named == station || canonical(named) == station {
        Ok(named)
    } else {
        Err(WireError::new(
            "mqtt.topic_not_allowed",
            format!(
                "station {station} may publish only to stations/{station}/readings, not `{topic}`"
            ),
        ))
    }
}

/// An answer that waits for Kafka: sent once (and if) `acks` resolve, in
/// the order the PUBLISHes came.
struct AckJob {
    source: SourceProtocol,
    /// `None`: nothing to acknowledge to the station (QoS 0).
    reply: Option<Packet>,
    /// `None`: already on Kafka (a QoS 2 PUBLISH sent again).
    acks: Option<Acks>,
    /// `None` for a QoS 2 PUBLISH sent again: answered, not counted twice.
    verdict: Option<Verdict>,
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<String>,
    ctx: &Ctx,
    shutdown: &CancellationToken,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = Reader {
        rd,
        buf: BytesMut::new(),
        max: ctx.cfg.max_packet_bytes,
        silence: ctx.cfg.connect_timeout,
    };
    let first = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        r = tokio::time::timeout(ctx.cfg.connect_timeout, reader.next()) => r,
    };
    let connect = match first {
        Ok(Ok(Some(Frame::Packet(Packet::Connect(c))))) if c.protocol == Protocol::V4 => c,
        Ok(Ok(Some(Frame::OtherProtocol(level)))) => {
            tracing::warn!(%peer, level, "MQTT CONNECT of another protocol level than 3.1.1 refused");
            return refuse(
                &mut wr,
                ConnectReturnCode::RefusedProtocolVersion,
                "protocol_version",
            )
            .await;
        }
        Ok(Ok(Some(Frame::Packet(Packet::Connect(_))))) => {
            return refuse(
                &mut wr,
                ConnectReturnCode::RefusedProtocolVersion,
                "protocol_version",
            )
            .await;
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(_))) => {
            refused("not_connect");
            return Err(ConnError::Protocol("first packet is not CONNECT"));
        }
        Err(_) | Ok(Err(ConnError::Silent(_))) => {
            refused("connect_timeout");
            tracing::debug!(%peer, "no CONNECT within mqtt_listener.connect_timeout");
            return Ok(());
        }
        Ok(Err(e)) => {
            refused("malformed_connect");
            return Err(e);
        }
    };
    let station = match authenticate(ctx, &connect, certificate.as_deref()).await {
        Ok(s) => s,
        Err((code, reason, station)) => {
            tracing::warn!(target: "quantrac::security", %peer, station, reason, "MQTT station refused");
            return refuse(&mut wr, code, reason).await;
        }
    };
    let client = connect.client_id.clone();
    let clean = connect.clean_session;
    // §3.1.3-8: a persistent session needs a client id to find it by.
    if (client.is_empty() && !clean)
        || client.len() > MAX_CLIENT_ID
        || client.chars().any(char::is_control)
    {
        tracing::warn!(%peer, station, client = %client.escape_debug(), "MQTT client id refused");
        return refuse(&mut wr, ConnectReturnCode::BadClientId, "client_id").await;
    }
    let present = if client.is_empty() {
        false
    } else {
        let (sessions, s, c) = (Arc::clone(&ctx.sessions), station.clone(), client.clone());
        match tokio::task::spawn_blocking(move || sessions.connect(&s, &c, clean)).await {
            Ok(Ok(present)) => present,
            Ok(Err(e)) => {
                tracing::error!(%peer, station, error = %e, "MQTT persistent session not recorded; CONNECT refused (the station retries)");
                return refuse(&mut wr, ConnectReturnCode::ServiceUnavailable, "sessions").await;
            }
            Err(e) => return Err(ConnError::Io(std::io::Error::other(e))),
        }
    };
    let live = (!client.is_empty()).then(|| ctx.live.enter(&station, &client));
    write_one(
        &mut wr,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, present)),
    )
    .await?;
    tracing::info!(%peer, station, client, clean_session = clean, session_present = present, keep_alive = connect.keep_alive, "MQTT station connected");
    // §3.1.2-24: silent for 1.5 x the keep-alive means gone.
    reader.silence = match connect.keep_alive {
        0 => ctx.cfg.idle_timeout,
        k => Duration::from_millis(u64::from(k) * 1500),
    };
    let taken_over = live
        .as_ref()
        .map(|l| l.taken_over.clone())
        .unwrap_or_default();
    serve(reader, wr, peer, &station, ctx, shutdown, &taken_over).await
}

/// After the CONNACK: reads packets until the end, a failure or shutdown;
/// then lets the PUBACKs of what Kafka already has go out, within
/// `shutdown_grace`.
async fn serve<R, W>(
    mut reader: Reader<R>,
    wr: W,
    peer: SocketAddr,
    station: &str,
    ctx: &Ctx,
    shutdown: &CancellationToken,
    taken_over: &CancellationToken,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let window = ctx.cfg.in_flight_per_connection;
    let (out_tx, out_rx) = mpsc::channel::<Packet>(window + 8);
    let (job_tx, job_rx) = mpsc::channel::<AckJob>(window.saturating_sub(1).max(1));
    let failed = CancellationToken::new();
    let write = tokio::spawn(writer(
        wr,
        out_rx,
        reader.silence.max(Duration::from_secs(10)),
        failed.clone(),
    ));
    let acker = tokio::spawn(ack_in_order(
        job_rx,
        out_tx.clone(),
        ctx.intake.clone(),
        peer,
        station.to_owned(),
        failed.clone(),
    ));
    let mut awaiting_rel: HashSet<u16> = HashSet::new();
    let result = loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = failed.cancelled() => break Ok(()),
            () = taken_over.cancelled() => {
                tracing::info!(%peer, station, "MQTT client connected again: this connection closed");
                break Ok(());
            }
            r = reader.next() => r,
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(ConnError::Silent(d)) => {
                tracing::info!(%peer, station, silent = ?d, "MQTT station silent past its keep-alive: closed");
                break Ok(());
            }
            Err(e) => break Err(e),
        };
        let job = match frame {
            Frame::Packet(Packet::Publish(p)) => {
                if p.qos == QoS::ExactlyOnce && !awaiting_rel.insert(p.pkid) {
                    // Sent again before its PUBREL: Kafka has (or will
                    // have, before the PUBREC ahead of this one) it.
                    Some(AckJob {
                        source: SourceProtocol::Unspecified,
                        reply: Some(Packet::PubRec(PubRec::new(p.pkid))),
                        acks: None,
                        verdict: None,
                    })
                } else if awaiting_rel.len() > MAX_AWAITING_PUBREL {
                    break Err(ConnError::Protocol(
                        "too many QoS 2 messages awaiting PUBREL",
                    ));
                } else {
                    let reply = answer(p.qos, p.pkid);
                    let (source, prepared) = prepare(ctx, station, &peer.to_string(), &p);
                    match publish(ctx, source, prepared, reply, shutdown).await {
                        Some(job) => Some(job),
                        None => break Ok(()),
                    }
                }
            }
            Frame::Oversized { head, kept } => {
                let qos = match head.qos {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                let pkid = head.pkid.unwrap_or(0);
                if qos == QoS::ExactlyOnce && !awaiting_rel.insert(pkid) {
                    Some(AckJob {
                        source: SourceProtocol::Unspecified,
                        reply: Some(Packet::PubRec(PubRec::new(pkid))),
                        acks: None,
                        verdict: None,
                    })
                } else {
                    let prepared = too_large(ctx, station, &head, &kept);
                    match publish(
                        ctx,
                        SourceProtocol::Unspecified,
                        prepared,
                        answer(qos, pkid),
                        shutdown,
                    )
                    .await
                    {
                        Some(job) => Some(job),
                        None => break Ok(()),
                    }
                }
            }
            Frame::Packet(Packet::PubRel(r)) => {
                // Unknown ids too (§4.3.3: after a reconnect the server may
                // have forgotten them): the message is on Kafka either way.
                awaiting_rel.remove(&r.pkid);
                reply(&out_tx, Packet::PubComp(PubComp::new(r.pkid))).await;
                None
            }
            Frame::Packet(Packet::PingReq) => {
                reply(&out_tx, Packet::PingResp).await;
                None
            }
            Frame::Packet(Packet::Subscribe(s)) => {
                // Stations publish; nothing here to subscribe to.
                let codes = vec![SubscribeReasonCode::Failure; s.filters.len()];
                reply(&out_tx, Packet::SubAck(SubAck::new(s.pkid, codes))).await;
                None
            }
            Frame::Packet(Packet::Unsubscribe(u)) => {
                reply(&out_tx, Packet::UnsubAck(UnsubAck::new(u.pkid))).await;
                None
            }
            Frame::Packet(Packet::Disconnect) => break Ok(()),
            Frame::Packet(Packet::Connect(_)) | Frame::OtherProtocol(_) => {
                break Err(ConnError::Protocol("second CONNECT"));
            }
            Frame::Packet(_) => break Err(ConnError::Protocol("unexpected packet type")),
        };
        if let Some(job) = job {
            let wait = match &job.verdict {
                Some(Verdict::Accepted { readings }) => {
                    let now = tokio::time::Instant::now().into_std();
                    ctx.per_station.take(station, *readings, now)
                }
                _ => Duration::ZERO,
            };
            // A full queue is the in-flight bound: no more reading.
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = failed.cancelled() => break Ok(()),
                r = job_tx.send(job) => if r.is_err() { break Ok(()) },
            }
            if !wait.is_zero() {
                // Over the station's rate: read its next PUBLISH later.
                metrics::counter!("ingest_mqtt_listener_rate_limited_total").increment(1);
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    // Nothing more is read; PUBACKs of what Kafka acknowledged still go out.
    drop(job_tx);
    drop(out_tx);
    if failed.is_cancelled() {
        // Closed without waiting: the acker finishes the deliveries still
        // pending (bounded by kafka.message_timeout) on its own.
        let _ = write.await;
        return result;
    }
    let drain = async {
        let _ = acker.await;
        write.await
    };
    match tokio::time::timeout(ctx.cfg.shutdown_grace, drain).await {
        Ok(Ok(Ok(()))) => result,
        Ok(Ok(Err(e))) => result.and(Err(e.into())),
        Ok(Err(e)) => result.and(Err(ConnError::Io(std::io::Error::other(e)))),
        Err(_) => {
            tracing::warn!(%peer, station, "MQTT connection drain deadline passed; the station resends what was not acknowledged");
            result
        }
    }
}

/// The acknowledgement a PUBLISH of `qos` gets once Kafka has it.
fn answer(qos: QoS, pkid: u16) -> Option<Packet> {
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(pkid))),
        QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(pkid))),
    }
}

async fn reply(out: &mpsc::Sender<Packet>, p: Packet) {
    // A closed channel means the writer failed: the read loop ends soon.
    let _ = out.send(p).await;
}

/// Decodes a PUBLISH into records (or a rejected record); `origin` is the
/// station's address.
fn prepare(ctx: &Ctx, station: &str, origin: &str, p: &Publish) -> (SourceProtocol, Prepared) {
    let intake = &ctx.intake;
    let (source, decoded, record_station) = match topic_station(&p.topic, station, |s| {
        ctx.credentials.canonical(s)
    }) {
        Ok(named) => {
            let (source, r) = decode::mqtt_payload(named, &p.payload, ctx.offset);
            (source, r, named)
        }
        Err(e) => {
            if e.reason == "mqtt.topic_not_allowed" {
                metrics::counter!("ingest_mqtt_listener_topic_refused_total").increment(1);
                tracing::warn!(target: "quantrac::security", station, topic = %p.topic, "MQTT PUBLISH to another station's topic");
            }
            (SourceProtocol::Unspecified, Err(e), station)
        }
    };
    intake.received(source);
    let prepared = match decoded {
        Ok(samples) => intake.accept_frame(source, samples, &p.payload, origin),
        Err(e) => intake.reject(source, &p.topic, record_station, &p.payload, e),
    };
    (source, prepared)
}

/// The rejected record of a PUBLISH over `max_packet_bytes`.
fn too_large(ctx: &Ctx, station: &str, head: &frame::PublishHead, kept: &[u8]) -> Prepared {
    let source = SourceProtocol::Unspecified;
    ctx.intake.received(source);
    let error = WireError::new(
        "mqtt.too_large",
        format!(
            "PUBLISH of {} bytes, over mqtt_listener.max_packet_bytes = {}; the first {} payload bytes kept",
            head.header.frame_len(),
            ctx.cfg.max_packet_bytes,
            kept.len()
        ),
    );
    ctx.intake.reject(source, &head.topic, station, kept, error)
}

/// Hands records to Kafka (waiting for room: the back-pressure). `None` on
/// shutdown or when the sink is closed.
async fn publish(
    ctx: &Ctx,
    source: SourceProtocol,
    prepared: Prepared,
    reply: Option<Packet>,
    shutdown: &CancellationToken,
) -> Option<AckJob> {
    let acks = tokio::select! {
        () = shutdown.cancelled() => return None,
        r = ctx.intake.publish(&prepared) => match r {
            Ok(a) => a,
            Err(e) => {
                outcome("kafka_failed");
                tracing::warn!(error = %e, "Kafka refused a station's message; closing the connection (the station resends)");
                return None;
            }
        },
    };
    Some(AckJob {
        source,
        reply,
        acks: Some(acks),
        verdict: Some(prepared.verdict),
    })
}

fn outcome(outcome: &'static str) {
    metrics::counter!("ingest_mqtt_listener_messages_total", "outcome" => outcome).increment(1);
}

/// Sends each answer once Kafka acknowledged its message, in arrival
/// order. After a failed delivery nothing more is answered (the station
/// resends from the first unanswered message after reconnecting); the
/// remaining deliveries are still awaited so the counters stay true.
async fn ack_in_order(
    mut jobs: mpsc::Receiver<AckJob>,
    out: mpsc::Sender<Packet>,
    intake: Intake,
    peer: SocketAddr,
    station: String,
    failed: CancellationToken,
) {
    while let Some(job) = jobs.recv().await {
        let delivered = match job.acks {
            Some(acks) => acks.wait().await,
            None => Ok(()),
        };
        if failed.is_cancelled() {
            continue;
        }
        if let Err(e) = delivered {
            if job.reply.is_none() {
                outcome("qos0_lost");
                tracing::warn!(%peer, station, error = %e, "Kafka did not take a QoS 0 message: lost, as QoS 0 allows");
                continue;
            }
            outcome("kafka_failed");
            tracing::warn!(%peer, station, error = %e, "Kafka did not take a message: no PUBACK, connection closed; the station resends it after reconnecting");
            failed.cancel();
            continue;
        }
        let Some(reply) = job.reply else {
            // Nothing to answer, but done with: counted as answered, or
            // /health would take a QoS 0 stream for a stall.
            outcome("qos0");
            if let Some(v) = &job.verdict {
                intake.acknowledged(job.source, v);
            }
            continue;
        };
        match &job.verdict {
            Some(v @ Verdict::Accepted { .. }) => {
                outcome("accepted");
                intake.acknowledged(job.source, v);
            }
            Some(v @ Verdict::Rejected(_)) => {
                outcome("rejected");
                intake.acknowledged(job.source, v);
            }
            None => outcome("duplicate"),
        }
        if out.send(reply).await.is_err() {
            failed.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(s: &str) -> String {
        if s == "alias-of-S1" {
            "S1".into()
        } else {
            s.into()
        }
    }

    #[test]
    fn a_station_publishes_only_under_its_own_topic() {
        assert_eq!(
            topic_station("stations/S1/readings", "S1", canonical),
            Ok("S1")
        );
        assert_eq!(
            topic_station("stations/alias-of-S1/readings", "S1", canonical),
            Ok("alias-of-S1")
        );
        let reason = |t: &str| {
            topic_station(t, "S1", canonical)
                .map(str::len)
                .map_err(|e| e.reason)
        };
        assert_eq!(
            reason("stations/S2/readings"),
            Err("mqtt.topic_not_allowed")
        );
        assert_eq!(reason("stations/S1/other"), Err("mqtt.bad_topic"));
        assert_eq!(reason("stations/S1/readings/x"), Err("mqtt.bad_topic"));
    }

    async fn read_all(input: &[u8], max: usize) -> Vec<Result<Frame, String>> {
        let mut r = Reader {
            rd: input,
            buf: BytesMut::new(),
            max,
            silence: Duration::from_secs(1),
        };
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    fn bytes(p: Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).expect("encode");
        b.to_vec()
    }

    #[tokio::test]
    async fn an_oversized_publish_is_skipped_and_the_next_packet_read() {
        let mut big = Publish::new("stations/S1/readings", QoS::AtLeastOnce, vec![b'x'; 50_000]);
        big.pkid = 9;
        let mut small = Publish::new("stations/S1/readings", QoS::AtLeastOnce, b"{}".to_vec());
        small.pkid = 10;
        let input = [
            bytes(Packet::Publish(big)),
            bytes(Packet::Publish(small.clone())),
            bytes(Packet::PingReq),
        ]
        .concat();
        let frames = read_all(&input, 1_024).await;
        assert_eq!(frames.len(), 3, "{frames:?}");
        match &frames[0] {
            Ok(Frame::Oversized { head, kept }) => {
                assert_eq!(
                    (head.topic.as_str(), head.pkid),
                    ("stations/S1/readings", Some(9))
                );
                assert_eq!(kept.len(), OVERSIZED_KEPT);
            }
            f => panic!("{f:?}"),
        }
        assert!(matches!(&frames[1], Ok(Frame::Packet(Packet::Publish(p))) if *p == small));
        assert!(matches!(&frames[2], Ok(Frame::Packet(Packet::PingReq))));
    }

    #[tokio::test]
    async fn an_oversized_packet_other_than_publish_or_a_truncated_one_ends_the_connection() {
        let sub = bytes(Packet::Subscribe(rumqttc::mqttbytes::v4::Subscribe::new(
            "x".repeat(2_000),
            QoS::AtLeastOnce,
        )));
        let frames = read_all(&sub, 1_024).await;
        assert!(
            matches!(&frames[..], [Err(e)] if e.contains("max_packet_bytes")),
            "{frames:?}"
        );
        let mut p = Publish::new("t", QoS::AtLeastOnce, vec![0; 10]);
        p.pkid = 1;
        let full = bytes(Packet::Publish(p));
        let frames = read_all(&full[..full.len() - 1], 1_024).await;
        assert!(matches!(&frames[..], [Err(_)]), "{frames:?}");
    }

    #[tokio::test]
    async fn a_connect_of_another_protocol_level_is_told_apart() {
        let mut c = bytes(Packet::Connect(Connect::new("c")));
        c[8] = 5;
        let frames = read_all(&c, 1_024).await;
        assert!(
            matches!(&frames[..], [Ok(Frame::OtherProtocol(5))]),
            "{frames:?}"
        );
    }
}
