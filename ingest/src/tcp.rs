//! TCP receiver: HJ 212-2017 packets, Circular 10 records and JSON lines on
//! one port, told apart by their first bytes.
//!
//! Framing (every frame ends with `\n`; `\r\n` is accepted):
//! - `##dddd...CRC\r\n`: one HJ 212 packet. When its `Flag` asks for a reply
//!   the data response (CN=9014) goes back only after Kafka acknowledged the
//!   readings; a refused packet gets CN=9011 with a `QnRtn` code (3 wrong
//!   password, 4 unknown device, 8 unsupported command, 100 bad content).
//!   Station notices (CN 2081 restart, 2021 running status, 2041 running
//!   time, 3020 device information) are answered with CN=9014 as uploads,
//!   logged and counted (`ingest_station_notices_total`).
//!   A packet whose length or CRC is wrong gets no reply: its fields cannot
//!   be trusted, and the logger resends unanswered packets.
//! - `{...}\n`: one JSON sample; reply `{"ok":true,"readings":N}` or
//!   `{"ok":false,"reason":"...","detail":"..."}`.
//! - anything else: a Circular 10 record: the file name line
//!   (`<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt`), the parameter
//!   lines, then an empty line; reply `OK <readings>` or
//!   `ERR <reason> <detail>`.
//!
//! Station credentials (`credentials`): a station whose registry entry
//! has a `secret_hash` is accepted only under its secret. HJ 212 carries
//! it as `PW`; JSON lines and Circular 10 send an auth frame first on the
//! connection, once per station the connection carries:
//! - `{"auth":{"station":"<id>","secret":"<secret>"}}` → `{"ok":true,"auth":"<id>"}`;
//! - `AUTH <id> <secret>` (a line of its own) → `OK AUTH <id>`.
//!
//! A reading of such a station on a connection not authenticated as it is
//! refused (`auth.required`); a wrong secret is refused (`auth.bad_secret`)
//! and, after `auth.max_failures` of them, the connection is closed. The
//! secret is never echoed, logged or kept in the rejected raw bytes.
//!
//! TLS (`tcp.tls_listen`, `[tcp.tls]`): the same framing on a second port
//! inside TLS. With `tcp.tls.client_ca`, a logger may present a client
//! certificate signed by that CA instead of sending an auth frame: its
//! subject CN is the station id, and the connection is authenticated as
//! that station from the handshake on. The handshake, like a frame, must
//! complete within `read_timeout`.
//!
//! Connections: at most `max_connections`, `max_connections_per_address`
//! of them from one address. When every slot is taken, a newcomer waits in
//! the kernel's backlog and the connection silent longest (for at least
//! `evict_idle_after`) is closed to make room: idle connections from many
//! addresses cannot lock stations out until `idle_timeout`.
//!
//! Replies keep the order of the frames. A connection may pipeline up to
//! `pipeline_window` frames ahead of their replies; past that, ingest stops
//! reading and TCP flow control slows the logger. When Kafka cannot take a
//! record, JSON and Circular 10 senders get `kafka.unavailable` (resend), HJ
//! 212 loggers get no reply (they resend by themselves).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::v1::{SourceProtocol, StationNotice};
use quantrac_proto::wire::{WireError, hj212, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::IngestError;
use crate::config::{AuthConfig, Hj212Config, IngestConfig, TcpConfig, invalid, parse_offset};
use crate::credentials::{Check, Credentials};
use crate::decode;
use crate::intake::{Intake, Prepared, Verdict, redact_pw};
use crate::rate::RateCap;
use crate::sink::Acks;

/// Most lines one Circular 10 record may have (a station has ~6-10 parameters).
const MAX_RECORD_LINES: usize = 512;

/// Stations one connection may carry readings for.
const MAX_STATIONS_PER_CONNECTION: usize = 256;

struct Ctx {
    intake: Intake,
    credentials: Arc<Credentials>,
    auth: AuthConfig,
    tcp: TcpConfig,
    hj212: Hj212Config,
    hj212_offset: FixedOffset,
    c10_offset: FixedOffset,
    per_address: RateCap,
    per_station: RateCap,
}

/// Accepts connections until `shutdown`, then lets every connection finish
/// the frames it already read (bounded by a deadline).
pub async fn run(
    config: Arc<IngestConfig>,
    intake: Intake,
    credentials: Arc<Credentials>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let ctx = Arc::new(Ctx {
        intake,
        credentials,
        auth: config.auth.clone(),
        tcp: config.tcp.clone(),
        hj212: config.hj212.clone(),
        hj212_offset: parse_offset(&config.hj212.utc_offset)
            .ok_or_else(|| IngestError::Config(invalid("hj212.utc_offset", "expected +HH:MM")))?,
        c10_offset: parse_offset(&config.circular10.utc_offset).ok_or_else(|| {
            IngestError::Config(invalid("circular10.utc_offset", "expected +HH:MM"))
        })?,
        per_address: RateCap::new(config.tcp.max_readings_per_second_per_address),
        per_station: RateCap::new(config.tcp.max_readings_per_second_per_station),
    });
    let limit = Arc::new(Semaphore::new(config.tcp.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let quiet = Arc::new(Quiet::default());
    let tracker = TaskTracker::new();
    let status = Arc::clone(ctx.intake.status());
    status.set_tcp_listening(true);
    let mut backoff = Duration::from_millis(10);
    loop {
        // Wait for a free slot before accepting: excess connections queue
        // in the kernel's backlog instead of costing memory here. While
        // every slot is taken, the connection silent longest gives its slot
        // up (once silent for evict_idle_after), one for each newcomer.
        let permit = loop {
            if let Ok(p) = Arc::clone(&limit).try_acquire_owned() {
                break Some(p);
            }
            if let Some(silent) = quiet.evict_quietest(ctx.tcp.evict_idle_after) {
                metrics::counter!("ingest_tcp_evicted_total").increment(1);
                tracing::warn!(target: "quantrac::security", silent_s = silent.as_secs(), limit = ctx.tcp.max_connections, "every connection slot taken: closing the connection silent longest to make room");
            }
            tokio::select! {
                () = shutdown.cancelled() => break None,
                p = tokio::time::timeout(Duration::from_millis(500), Arc::clone(&limit).acquire_owned()) => {
                    if let Ok(Ok(p)) = p {
                        break Some(p);
                    }
                }
            }
        };
        let Some(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => { backoff = Duration::from_millis(10); s }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Some(slot) = per_address.take(peer.ip(), ctx.tcp.max_connections_per_address) else {
            // Closed at once: its slot goes back to other senders.
            metrics::counter!("ingest_tcp_refused_total", "reason" => "per_address").increment(1);
            tracing::warn!(target: "quantrac::security", %peer, limit = ctx.tcp.max_connections_per_address, "connection refused: too many from this address");
            drop(stream);
            drop(permit);
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let quiet = quiet.enter();
        tracker.spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            metrics::gauge!("ingest_tcp_connections").increment(1.0);
            let result = match tls {
                None => {
                    connection(stream, peer, ConnAuth::default(), &ctx, &quiet, &shutdown).await
                }
                Some(acceptor) => match handshake(&acceptor, stream, peer, &ctx).await {
                    Some((stream, auth)) => {
                        connection(stream, peer, auth, &ctx, &quiet, &shutdown).await
                    }
                    None => Ok(()),
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            metrics::gauge!("ingest_tcp_connections").decrement(1.0);
            drop(permit);
        });
    }
    status.set_tcp_listening(false);
    drop(listener);
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "TCP drain deadline passed; unanswered frames will be resent by the loggers"
        );
    }
    Ok(())
}

/// Open connections, each with when it last completed a frame (or
/// opened): at capacity, the one silent longest makes room.
#[derive(Default)]
struct Quiet {
    next: std::sync::atomic::AtomicU64,
    open:
        std::sync::Mutex<std::collections::HashMap<u64, (tokio::time::Instant, CancellationToken)>>,
}

/// One connection's place in [`Quiet`], removed on drop.
struct QuietEntry {
    quiet: Arc<Quiet>,
    id: u64,
    evicted: CancellationToken,
}

impl Quiet {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<u64, (tokio::time::Instant, CancellationToken)>,
    > {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(self: &Arc<Self>) -> QuietEntry {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = CancellationToken::new();
        self.lock()
            .insert(id, (tokio::time::Instant::now(), evicted.clone()));
        QuietEntry {
            quiet: Arc::clone(self),
            id,
            evicted,
        }
    }

    /// Tells the connection silent longest to close, if it has been silent
    /// at least `after`; returns how long it was.
    fn evict_quietest(&self, after: Duration) -> Option<Duration> {
        let open = self.lock();
        let (since, token) = open
            .values()
            .filter(|(_, t)| !t.is_cancelled())
            .min_by_key(|(since, _)| *since)?;
        let silent = since.elapsed();
        if silent < after {
            return None;
        }
        token.cancel();
        Some(silent)
    }
}

impl QuietEntry {
    /// A frame arrived: the connection is in use.
    fn heard(&self) {
        if let Some(e) = self.quiet.lock().get_mut(&self.id) {
            e.0 = tokio::time::Instant::now();
        }
    }
}

impl Drop for QuietEntry {
    fn drop(&mut self) {
        self.quiet.lock().remove(&self.id);
    }
}

/// Open connections per address.
#[derive(Default)]
pub(crate) struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back on drop.
pub(crate) struct AddressSlot(Arc<PerAddress>, std::net::IpAddr);

impl PerAddress {
    pub(crate) fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<AddressSlot> {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(Arc::clone(self), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// The TLS handshake, within `read_timeout`; a verified client certificate
/// authenticates the connection as the station its CN names.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ConnAuth,
)> {
    let stream = match tokio::time::timeout(ctx.tcp.read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::counter!("ingest_tcp_refused_total", "reason" => "tls_handshake").increment(1);
            tracing::warn!(target: "quantrac::security", %peer, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            metrics::counter!("ingest_tcp_refused_total", "reason" => "tls_deadline").increment(1);
            tracing::warn!(target: "quantrac::security", %peer, "TLS handshake not complete within tcp.read_timeout");
            return None;
        }
    };
    let mut auth = ConnAuth::default();
    let station = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(quantrac_plumbing::tls::subject_common_name);
    if let Some(station) = station {
        tracing::info!(target: "quantrac::security", %peer, station, "station authenticated by its TLS client certificate");
        metrics::counter!("ingest_auth_accepted_total", "by" => "certificate").increment(1);
        auth.stations.insert(station);
    }
    Some((stream, auth))
}

/// A reply that goes out once (and if) Kafka acknowledged the frame.
struct ReplyJob {
    source: SourceProtocol,
    verdict: Verdict,
    /// `None`: nothing was published (a successful auth frame).
    acks: Option<Acks>,
    /// The station whose readings were accepted, for the rate caps.
    station: Option<String>,
    on_ack: Option<Vec<u8>>,
    on_failure: Option<Vec<u8>>,
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    mut auth: ConnAuth,
    ctx: &Ctx,
    quiet: &QuietEntry,
    shutdown: &CancellationToken,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<ReplyJob>(ctx.tcp.pipeline_window);
    let intake = ctx.intake.clone();
    let write_timeout = ctx.tcp.read_timeout;
    let writer = tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            // A successful auth frame published nothing: nothing to wait
            // for, and no frame of data to count.
            let published = job.acks.is_some();
            let acked = match job.acks {
                Some(acks) => acks.wait().await,
                None => Ok(()),
            };
            let reply = match acked {
                Ok(()) => {
                    if published {
                        intake.acknowledged(job.source, &job.verdict);
                    }
                    job.on_ack
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "Kafka did not take a frame; the sender must resend");
                    job.on_failure
                }
            };
            // A peer that stops reading its replies must not hold the
            // connection (and its slot) forever.
            if let Some(bytes) = reply {
                tokio::time::timeout(write_timeout, wr.write_all(&bytes))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "peer not reading replies",
                        )
                    })??;
            }
        }
        wr.shutdown().await
    });

    let origin = peer.to_string();
    let ip = peer.ip().to_string();
    let mut reader = BufReader::new(rd);
    let mut line = Vec::new();
    let result = loop {
        line.clear();
        // Idle until a frame starts; from its first byte, the whole frame
        // must arrive within read_timeout.
        let started = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = quiet.evicted.cancelled() => {
                tracing::debug!(%peer, "closed to make room for a new connection");
                break Ok(());
            }
            r = tokio::time::timeout(ctx.tcp.idle_timeout, reader.fill_buf()) => r,
        };
        match started {
            Err(_) => {
                tracing::debug!(%peer, "idle timeout");
                break Ok(());
            }
            Ok(Err(e)) => break Err(e),
            Ok(Ok([])) => break Ok(()),
            Ok(Ok(_)) => {}
        }
        let read = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            r = tokio::time::timeout(ctx.tcp.read_timeout, read_line(&mut reader, &mut line, ctx.tcp.max_frame_bytes)) => r,
        };
        let frame = match read {
            Err(_) => {
                metrics::counter!("ingest_tcp_frame_deadline_total").increment(1);
                tracing::warn!(target: "quantrac::security", %peer, "frame not complete within tcp.read_timeout; connection closed");
                break Ok(());
            }
            Ok(Err(e)) => break Err(e),
            Ok(Ok(LineRead::Eof)) => break Ok(()),
            Ok(Ok(LineRead::TooLong)) if line.starts_with(b"#") || line.starts_with(b"{") => {
                Frame::TooLong(line.clone())
            }
            Ok(Ok(LineRead::TooLong)) => {
                // An oversized Circular 10 file name line: skip its record
                // too, so the next reply answers the next record.
                let skipped =
                    tokio::time::timeout(ctx.tcp.read_timeout, read_record_body(&mut reader, 0))
                        .await;
                if !matches!(skipped, Ok(Ok(_))) {
                    break Ok(());
                }
                Frame::TooLong(line.clone())
            }
            Ok(Ok(LineRead::Line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Ok(LineRead::Line)) if line.starts_with(b"##") => Frame::Hj212(line.clone()),
            Ok(Ok(LineRead::Line)) if line.starts_with(b"{") => match json_auth(&line) {
                Some((station, secret)) => Frame::Auth {
                    source: SourceProtocol::TcpJson,
                    station,
                    secret,
                },
                None => Frame::Json(line.clone()),
            },
            Ok(Ok(LineRead::Line)) if line.starts_with(b"AUTH ") => {
                let (station, secret) = text_auth(&line);
                Frame::Auth {
                    source: SourceProtocol::TcpCircular10,
                    station,
                    secret,
                }
            }
            Ok(Ok(LineRead::Line)) => {
                let header = line.clone();
                let read = tokio::time::timeout(
                    ctx.tcp.read_timeout,
                    read_record_body(
                        &mut reader,
                        ctx.tcp.max_frame_bytes.saturating_sub(header.len()),
                    ),
                )
                .await;
                match read {
                    Err(_) => {
                        tracing::debug!(%peer, "read timeout inside a Circular 10 record");
                        break Ok(());
                    }
                    Ok(Err(e)) => break Err(e),
                    Ok(Ok((body, too_long))) if too_long => {
                        Frame::TooLong([header, body].join(&b'\n'))
                    }
                    Ok(Ok((body, _))) => Frame::Circular10 { header, body },
                }
            }
        };
        quiet.heard();
        let Some(job) = handle_frame(ctx, &origin, &mut auth, frame, shutdown).await else {
            break Ok(());
        };
        let close = auth.failures >= ctx.auth.max_failures.max(1);
        let wait = match (&job.station, &job.verdict) {
            (Some(station), Verdict::Accepted { readings }) => {
                let now = tokio::time::Instant::now().into_std();
                ctx.per_address
                    .take(&ip, *readings, now)
                    .max(ctx.per_station.take(station, *readings, now))
            }
            _ => Duration::ZERO,
        };
        let sent = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            r = tx.send(job) => r,
        };
        if sent.is_err() {
            break Ok(()); // writer failed: the peer is gone
        }
        if close {
            tracing::warn!(%peer, failures = auth.failures, "closing a connection after failed auth frames");
            metrics::counter!("ingest_auth_connections_closed_total").increment(1);
            break Ok(());
        }
        if !wait.is_zero() {
            // Over a rate cap: read the next frame later (back-pressure;
            // the frame just read is answered as usual).
            metrics::counter!("ingest_tcp_rate_limited_total").increment(1);
            metrics::histogram!("ingest_tcp_rate_wait_seconds").record(wait.as_secs_f64());
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    };
    drop(tx);
    match writer.await {
        Ok(Ok(())) => result,
        Ok(Err(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// What a connection has proved.
#[derive(Default)]
struct ConnAuth {
    stations: HashSet<String>,
    failures: u32,
}

/// `{"auth":{"station":..,"secret":..}}`, if the line is one. A line that
/// mentions no `"auth"` is not parsed twice.
fn json_auth(line: &[u8]) -> Option<(String, String)> {
    if !line.windows(6).any(|w| w == b"\"auth\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let a = v.get("auth")?;
    Some((
        a.get("station")?.as_str()?.to_owned(),
        a.get("secret")?.as_str()?.to_owned(),
    ))
}

/// `AUTH <station> <secret>`.
fn text_auth(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.trim().splitn(3, ' ').skip(1);
    let station = parts.next().unwrap_or("").to_owned();
    let secret = parts.next().unwrap_or("").trim().to_owned();
    (station, secret)
}

enum Frame {
    Hj212(Vec<u8>),
    Json(Vec<u8>),
    /// An auth frame; its secret never leaves this module.
    Auth {
        source: SourceProtocol,
        station: String,
        secret: String,
    },
    Circular10 {
        header: Vec<u8>,
        body: Vec<u8>,
    },
    TooLong(Vec<u8>),
}

/// Decodes, checks and hands one frame to Kafka. `None` on shutdown.
async fn handle_frame(
    ctx: &Ctx,
    origin: &str,
    auth: &mut ConnAuth,
    frame: Frame,
    shutdown: &CancellationToken,
) -> Option<ReplyJob> {
    let intake = &ctx.intake;
    let (source, prepared, on_ack, on_failure) = match frame {
        Frame::Auth {
            source,
            station,
            secret,
        } => return auth_frame(ctx, origin, auth, source, station, &secret, shutdown).await,
        Frame::Hj212(raw) => {
            intake.received(SourceProtocol::TcpHj212);
            let (prepared, on_ack) = hj212_frame(ctx, origin, &raw).await;
            (SourceProtocol::TcpHj212, prepared, on_ack, None)
        }
        Frame::Json(raw) => {
            let source = SourceProtocol::TcpJson;
            intake.received(source);
            let prepared = match json::decode(&raw, None) {
                Ok(s) => match unproven(ctx, auth, std::slice::from_ref(&s)) {
                    Some(e) => intake.reject(source, origin, &s.station_id, &raw, e),
                    None => intake.accept_frame(source, vec![s], &raw, origin),
                },
                Err(e) => intake.reject(source, origin, "", &raw, e),
            };
            let reply = json_reply(&prepared.verdict);
            (source, prepared, Some(reply), Some(json_unavailable()))
        }
        Frame::Circular10 { header, body } => {
            let source = SourceProtocol::TcpCircular10;
            intake.received(source);
            let (station, decoded) = decode::tcp_circular10(&header, &body, ctx.c10_offset, |f| {
                ctx.credentials.circular10_station(f)
            });
            let prepared = match decoded {
                Ok(samples) => match unproven(ctx, auth, &samples) {
                    Some(e) => {
                        let raw = [header, body].join(&b'\n');
                        intake.reject(source, origin, &station, &raw, e)
                    }
                    None => {
                        let raw = [&header[..], &body[..]].join(&b'\n');
                        intake.accept_frame(source, samples, &raw, origin)
                    }
                },
                Err(e) => {
                    let raw = [header, body].join(&b'\n');
                    intake.reject(source, origin, &station, &raw, e)
                }
            };
            let reply = text_reply(&prepared.verdict);
            (
                source,
                prepared,
                Some(reply),
                Some(b"ERR kafka.unavailable resend later\n".to_vec()),
            )
        }
        Frame::TooLong(prefix) => {
            let source = match prefix.first() {
                Some(b'#') => SourceProtocol::TcpHj212,
                Some(b'{') => SourceProtocol::TcpJson,
                _ => SourceProtocol::TcpCircular10,
            };
            intake.received(source);
            let error = WireError::new(
                "tcp.frame_too_large",
                format!(
                    "frame longer than {} bytes (tcp.max_frame_bytes)",
                    ctx.tcp.max_frame_bytes
                ),
            );
            let prepared = intake.reject(source, origin, "", &prefix, error);
            let reply = match source {
                SourceProtocol::TcpJson => Some(json_reply(&prepared.verdict)),
                SourceProtocol::TcpCircular10 => Some(text_reply(&prepared.verdict)),
                _ => None,
            };
            (source, prepared, reply, None)
        }
    };
    let acks = tokio::select! {
        () = shutdown.cancelled() => return None,
        r = intake.publish(&prepared) => r.ok()?,
    };
    let station = match prepared.verdict {
        Verdict::Accepted { readings } if readings > 0 => prepared
            .records
            .first()
            .map(|r| String::from_utf8_lossy(&r.key).into_owned()),
        _ => None,
    };
    Some(ReplyJob {
        source,
        verdict: prepared.verdict,
        acks: Some(acks),
        station,
        on_ack,
        on_failure,
    })
}

/// The refusal for samples of a station that needs its credential and
/// that this connection has not proved.
fn unproven(ctx: &Ctx, auth: &ConnAuth, samples: &[quantrac_proto::Sample]) -> Option<WireError> {
    let s = samples.iter().find(|s| {
        ctx.credentials.required(&s.station_id) && !auth.stations.contains(&s.station_id)
    })?;
    metrics::counter!("ingest_auth_refused_total", "reason" => "required").increment(1);
    tracing::warn!(target: "quantrac::security", station = %s.station_id, reason = "auth.required", "reading of a station not proved on this connection");
    Some(WireError::new(
        "auth.required",
        format!(
            "station {} needs its credential: send an auth frame for it first on this connection",
            s.station_id
        ),
    ))
}

/// Checks an auth frame. A success publishes nothing; a failure is kept
/// on `ingest.rejected` with the secret blanked out.
async fn auth_frame(
    ctx: &Ctx,
    origin: &str,
    auth: &mut ConnAuth,
    source: SourceProtocol,
    station: String,
    secret: &str,
    shutdown: &CancellationToken,
) -> Option<ReplyJob> {
    let check = if station.is_empty() || secret.is_empty() {
        Check::Wrong
    } else {
        ctx.credentials.check(&station, secret).await
    };
    let json = source == SourceProtocol::TcpJson;
    if check == Check::Valid && auth.stations.len() < MAX_STATIONS_PER_CONNECTION {
        // Under its id and the name it used: readings resolved to the id
        // (a Circular 10 identity, an alias) are then proven too.
        auth.stations.insert(ctx.credentials.canonical(&station));
        auth.stations.insert(station.clone());
        let reply = if json {
            serde_json::json!({ "ok": true, "auth": station }).to_string() + "\n"
        } else {
            format!("OK AUTH {station}\n")
        };
        return Some(ReplyJob {
            source,
            verdict: Verdict::Accepted { readings: 0 },
            acks: None,
            station: None,
            on_ack: Some(reply.into_bytes()),
            on_failure: None,
        });
    }
    auth.failures += 1;
    let (reason, detail) = match check {
        Check::NoSecret => (
            "auth.no_secret",
            format!("station {station:?} has no credential in the registry"),
        ),
        Check::Valid => (
            "auth.too_many_stations",
            format!("at most {MAX_STATIONS_PER_CONNECTION} stations per connection"),
        ),
        Check::Wrong => (
            "auth.bad_secret",
            format!("wrong secret for station {station:?}"),
        ),
    };
    metrics::counter!("ingest_auth_refused_total", "reason" => reason).increment(1);
    tracing::warn!(target: "quantrac::security", origin, station, reason, failures = auth.failures, "station auth refused");
    let redacted = if json {
        serde_json::json!({ "auth": { "station": station, "secret": "<redacted>" } }).to_string()
    } else {
        format!("AUTH {station} <redacted>")
    };
    let prepared = ctx.intake.reject(
        source,
        origin,
        &station,
        redacted.as_bytes(),
        WireError::new(reason, detail),
    );
    let reply = if json {
        json_reply(&prepared.verdict)
    } else {
        text_reply(&prepared.verdict)
    };
    let acks = tokio::select! {
        () = shutdown.cancelled() => return None,
        r = ctx.intake.publish(&prepared) => r.ok()?,
    };
    Some(ReplyJob {
        source,
        verdict: prepared.verdict,
        acks: Some(acks),
        station: None,
        on_ack: Some(reply.clone()),
        on_failure: Some(reply),
    })
}

/// Checks an HJ 212 packet; returns the records and the reply to send once
/// Kafka has them.
async fn hj212_frame(ctx: &Ctx, origin: &str, raw: &[u8]) -> (Prepared, Option<Vec<u8>>) {
    let source = SourceProtocol::TcpHj212;
    let intake = &ctx.intake;
    // What is kept of a refused packet never holds its password.
    let kept = redact_pw(raw);
    let packet = match hj212::decode(raw) {
        Ok(p) => p,
        Err(e) => return (intake.reject(source, origin, "", &kept, e), None),
    };
    let refuse = |code: u16, error: WireError| {
        let reply = packet
            .wants_reply()
            .then(|| hj212::encode(&packet.request_response(code)));
        (
            intake.reject(source, origin, &packet.mn, &kept, error),
            reply,
        )
    };
    // The registry's secret when the station has one; else the configured
    // passwords (kept for loggers not moved to credentials yet).
    match ctx.credentials.check(&packet.mn, &packet.pw).await {
        Check::Valid => {}
        Check::Wrong => {
            metrics::counter!("ingest_auth_refused_total", "reason" => "bad_secret").increment(1);
            return refuse(
                3,
                WireError::new(
                    "auth.bad_password",
                    format!("wrong PW for MN={}", packet.mn),
                ),
            );
        }
        Check::NoSecret if ctx.credentials.require_all => {
            return refuse(
                4,
                WireError::new(
                    "auth.no_secret",
                    format!("device MN={} has no credential in the registry", packet.mn),
                ),
            );
        }
        Check::NoSecret => match ctx.hj212.password_for(&packet.mn) {
            None => {
                return refuse(
                    4,
                    WireError::new(
                        "auth.unknown_station",
                        format!("device MN={} is not registered", packet.mn),
                    ),
                );
            }
            Some(pw) if !constant_time_eq(pw.as_bytes(), packet.pw.as_bytes()) => {
                return refuse(
                    3,
                    WireError::new(
                        "auth.bad_password",
                        format!("wrong PW for MN={}", packet.mn),
                    ),
                );
            }
            Some(_) => {}
        },
    }
    if let Some((kind, at)) = packet.notice(ctx.hj212_offset) {
        // Answered as the standard answers an upload, so the logger does not
        // resend it; kept as a station event by the processor.
        metrics::counter!("ingest_station_notices_total", "cn" => packet.cn.clone()).increment(1);
        tracing::info!(station = %packet.mn, cn = %packet.cn, kind, "station notice");
        let reply = packet
            .wants_reply()
            .then(|| hj212::encode(&packet.data_response()));
        let notice = StationNotice {
            kind: kind.to_owned(),
            code: packet.cn.clone(),
            at: at.map(to_timestamp),
            detail: truncated(&packet.cp, MAX_NOTICE_DETAIL).to_owned(),
            ..Default::default()
        };
        return (intake.notice(source, &packet.mn, notice), reply);
    }
    if !packet.is_data() {
        return refuse(
            8,
            WireError::new(
                "hj212.unsupported_command",
                format!("CN={} is not a data upload", packet.cn),
            ),
        );
    }
    match packet.sample(ctx.hj212_offset) {
        Ok(sample) => {
            let reply = packet
                .wants_reply()
                .then(|| hj212::encode(&packet.data_response()));
            (
                intake.accept_frame(source, vec![sample], raw, origin),
                reply,
            )
        }
        Err(e) => refuse(100, e),
    }
}

/// What a notice keeps of its data segment.
const MAX_NOTICE_DETAIL: usize = 4096;

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Password comparison that does not stop at the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_reply(verdict: &Verdict) -> Vec<u8> {
    let mut v = match verdict {
        Verdict::Accepted { readings } => serde_json::json!({ "ok": true, "readings": readings }),
        Verdict::Rejected(e) => {
            serde_json::json!({ "ok": false, "reason": e.reason, "detail": e.detail })
        }
    }
    .to_string()
    .into_bytes();
    v.push(b'\n');
    v
}

fn json_unavailable() -> Vec<u8> {
    b"{\"ok\":false,\"reason\":\"kafka.unavailable\",\"detail\":\"resend later\"}\n".to_vec()
}

fn text_reply(verdict: &Verdict) -> Vec<u8> {
    match verdict {
        Verdict::Accepted { readings } => format!("OK {readings}\n").into_bytes(),
        Verdict::Rejected(e) => {
            format!("ERR {} {}\n", e.reason, e.detail.replace(['\r', '\n'], " ")).into_bytes()
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    Line,
    /// Longer than the limit: `line` holds the first `max` bytes, the rest
    /// up to the newline was discarded.
    TooLong,
    Eof,
}

/// Reads one line into `line` without its `\n` (and `\r`), never holding
/// more than `max` bytes of it.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            // EOF: a last line without its newline still counts.
            return Ok(if !any {
                LineRead::Eof
            } else if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        if chunk.len() > room {
            too_long = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if done {
            if line.last() == Some(&b'\r') && !too_long {
                line.pop();
            }
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// Reads the lines of a Circular 10 record up to the empty line that ends
/// it (or EOF). Returns the body and whether it overflowed `max` bytes (the
/// rest of the record is then discarded up to its end).
async fn read_record_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    let mut too_long = false;
    let mut lines = 0;
    loop {
        line.clear();
        let room = max.saturating_sub(body.len());
        match read_line(r, &mut line, room).await? {
            LineRead::Eof => break,
            LineRead::Line if line.iter().all(u8::is_ascii_whitespace) => break,
            LineRead::Line if !too_long => {
                lines += 1;
                if lines > MAX_RECORD_LINES {
                    too_long = true;
                } else {
                    body.extend_from_slice(&line);
                    body.push(b'\n');
                }
            }
            LineRead::Line => {}
            // A blank line still ends the record when no room is left for it.
            LineRead::TooLong if line.iter().all(u8::is_ascii_whitespace) => break,
            LineRead::TooLong => too_long = true,
        }
    }
    Ok((body, too_long))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame `read_line` gives, reading `input` through a buffer of
    /// `capacity` bytes.
    fn frames(input: &[u8], max: usize, capacity: usize) -> Vec<(LineRead, Vec<u8>)> {
        // In-memory reads need no reactor: a plain executor, cheap per case.
        futures::executor::block_on(async {
            let mut r = BufReader::with_capacity(capacity, input);
            let mut out = Vec::new();
            loop {
                let mut line = Vec::new();
                let read = read_line(&mut r, &mut line, max)
                    .await
                    .expect("in-memory read");
                if read == LineRead::Eof {
                    return out;
                }
                out.push((read, line));
            }
        })
    }

    proptest::proptest! {
        /// The TCP framing against a model: any bytes, cut into reads of
        /// any size, give one frame per newline-terminated segment (and the
        /// unterminated tail), each the segment without its `\r\n`, or its
        /// first `max` bytes marked too long; never more than `max` bytes.
        #[test]
        fn framing_matches_the_model_whatever_the_reads(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::num::u8::ANY,
                    1 => proptest::strategy::Just(b'\n'),
                    1 => proptest::strategy::Just(b'\r'),
                ],
                0..400,
            ),
            max in 1usize..64,
            capacity in 1usize..70,
        ) {
            let got = frames(&input, max, capacity);
            let mut want = Vec::new();
            let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
            // The piece after the last newline: a frame only if not empty.
            let tail = segments.pop().filter(|t| !t.is_empty());
            for seg in segments {
                if seg.len() > max {
                    want.push((LineRead::TooLong, seg[..max].to_vec()));
                } else {
                    let seg = seg.strip_suffix(b"\r").unwrap_or(seg);
                    want.push((LineRead::Line, seg.to_vec()));
                }
            }
            // At EOF the last line counts without its newline (and keeps a
            // final `\r`: nothing says it ends there).
            if let Some(t) = tail {
                if t.len() > max {
                    want.push((LineRead::TooLong, t[..max].to_vec()));
                } else {
                    want.push((LineRead::Line, t.to_vec()));
                }
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    async fn lines(input: &[u8], max: usize) -> Vec<(LineRead, Vec<u8>)> {
        frames(input, max, 8)
    }

    #[tokio::test]
    async fn lines_are_bounded_and_resynchronise() {
        let got = lines(b"short\r\nthis line is far too long\nok\nlast", 10).await;
        assert_eq!(
            got,
            vec![
                (LineRead::Line, b"short".to_vec()),
                (LineRead::TooLong, b"this line ".to_vec()),
                (LineRead::Line, b"ok".to_vec()),
                (LineRead::Line, b"last".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn record_body_stops_at_blank_line() {
        let mut r = BufReader::new(&b"a\tb\r\nc\td\r\n\r\nnext"[..]);
        let (body, too_long) = read_record_body(&mut r, 100).await.expect("read");
        assert_eq!(body, b"a\tb\nc\td\n");
        assert!(!too_long);
        let mut rest = Vec::new();
        read_line(&mut r, &mut rest, 100).await.expect("read");
        assert_eq!(rest, b"next");
    }

    #[tokio::test]
    async fn oversized_record_is_flagged_and_skipped_whole() {
        let mut r = BufReader::new(&b"0123456789\n0123456789\n\nnext\n"[..]);
        let (_, too_long) = read_record_body(&mut r, 15).await.expect("read");
        assert!(too_long);
        let mut rest = Vec::new();
        read_line(&mut r, &mut rest, 100).await.expect("read");
        assert_eq!(rest, b"next");
    }

    #[tokio::test]
    async fn record_filling_the_limit_exactly_still_ends_at_its_blank_line() {
        let mut r = BufReader::new(&b"abc\r\n\r\nnext\n"[..]);
        let (body, too_long) = read_record_body(&mut r, 4).await.expect("read");
        assert_eq!((body.as_slice(), too_long), (&b"abc\n"[..], false));
        let mut rest = Vec::new();
        read_line(&mut r, &mut rest, 100).await.expect("read");
        assert_eq!(rest, b"next");
    }

    #[test]
    fn replies() {
        assert_eq!(text_reply(&Verdict::Accepted { readings: 6 }), b"OK 6\n");
        let e = WireError::new("circular10.bad_value", "line 2:\nvalue `x`");
        assert_eq!(
            text_reply(&Verdict::Rejected(e.clone())),
            b"ERR circular10.bad_value line 2: value `x`\n"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&json_reply(&Verdict::Rejected(e))).expect("json");
        assert_eq!(v["ok"], false);
        assert_eq!(v["reason"], "circular10.bad_value");
    }

    #[test]
    fn passwords_are_redacted_from_kept_packets() {
        let raw = b"##0101QN=1;ST=32;CN=2011;PW=s3cret;MN=X;Flag=5;CP=&&DataTime=1&&ABCD\r\n";
        let kept = redact_pw(raw);
        let text = String::from_utf8_lossy(&kept);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("PW=<redacted>;MN=X"), "{text}");
        assert_eq!(redact_pw(b"PW=abc"), b"PW=<redacted>".to_vec());
        assert_eq!(redact_pw(b"no password"), b"no password".to_vec());
    }

    #[test]
    fn password_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
