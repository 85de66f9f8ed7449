//! TCP sender: one connection per station (or per group of stations),
//! frames pipelined ahead of their replies within a bounded window.
//!
//! Like a real logger it delivers at least once: every frame stays in the
//! window until ingest answers it; a lost connection, a reply timeout, a
//! "try later" refusal or a frame passed over without a reply (ingest does
//! that with HJ 212 when its bus is down) closes the connection, and after a
//! backoff every unanswered frame is resent, oldest first, before anything
//! new.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::frames::{Frame, Reply, TcpFormat, parse_reply, tcp_frame};
use crate::model::{Fleet, Transmission};
use crate::pacing::Backoff;
use crate::stats::Counters;

/// Longest reply line accepted; ingest's replies are a few dozen bytes.
const MAX_REPLY_LINE: usize = 8 * 1024;
/// Refusals logged at WARN per connection before the rest go to DEBUG.
const REFUSALS_WARNED: u32 = 3;

/// Where and how the TCP senders connect.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    /// Ingest's TCP listener, `host:port`.
    pub addr: String,
    /// `PW` of HJ 212 packets of stations without a secret below.
    pub hj212_password: String,
    /// Each station's secret (ingest's registry holds its hash): HJ 212
    /// sends it as `PW`; a JSON lines or Circular 10 connection sends an
    /// auth frame for each of its stations before any data.
    pub secrets: Arc<std::collections::HashMap<String, String>>,
    /// Frames sent ahead of their replies on one connection.
    pub window: usize,
    /// Stations sharing one connection (of one format); 1 is what real
    /// loggers do, more saves file descriptors for large fleets.
    pub stations_per_connection: usize,
    pub connect_timeout: Duration,
    /// How long the oldest unanswered frame may wait before the connection
    /// is considered dead and its frames are resent.
    pub reply_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            addr: "127.0.0.1:9212".into(),
            hj212_password: "demo-secret".into(),
            secrets: Arc::default(),
            window: 32,
            stations_per_connection: 1,
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(15),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// A frame written (or to be rewritten) and not yet answered.
#[derive(Debug)]
struct Unanswered {
    frame: Frame,
    readings: u64,
}

/// Why a connection ended.
enum End {
    /// Nothing left to send, or the run is stopping.
    Done,
    /// Reconnect and resend what is unanswered.
    Reconnect,
}

/// HJ 212 QNs of one connection: the time in milliseconds, made unique by
/// stepping past the last one when frames go out within the same
/// millisecond (a reply is matched to its frame by QN alone).
#[derive(Debug, Default)]
struct QnClock(i64);

impl QnClock {
    fn next(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        self.0 = now.timestamp_millis().max(self.0 + 1);
        DateTime::from_timestamp_millis(self.0).unwrap_or(now)
    }
}

/// One TCP connection's sender.
pub(crate) struct TcpLink {
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) format: TcpFormat,
    pub(crate) config: Arc<TcpConfig>,
    pub(crate) counters: Arc<Counters>,
    /// For logs: the stations on this connection.
    pub(crate) name: String,
    /// The ids of the stations on this connection.
    pub(crate) stations: Vec<String>,
    /// Spreads this link's reconnects among the fleet's.
    pub(crate) jitter_key: u64,
}

/// The state that outlives a connection.
struct LinkState {
    items: mpsc::Receiver<Transmission>,
    /// Written, unanswered, in send order.
    window: VecDeque<Unanswered>,
    /// The drivers are done: nothing new will come.
    closed: bool,
    backoff: Backoff,
    qn: QnClock,
    refusals: u32,
}

impl TcpLink {
    /// Sends what `items` yields until it closes and everything is
    /// answered, or until `shutdown`, after which unanswered frames get
    /// `drain` to be answered.
    pub(crate) async fn run(
        self,
        items: mpsc::Receiver<Transmission>,
        shutdown: CancellationToken,
        drain: Duration,
    ) {
        let mut st = LinkState {
            items,
            window: VecDeque::new(),
            closed: false,
            backoff: Backoff::new(
                self.config.backoff_initial,
                self.config.backoff_max,
                self.jitter_key,
            ),
            qn: QnClock::default(),
            refusals: 0,
        };
        loop {
            if (st.closed && st.window.is_empty()) || shutdown.is_cancelled() {
                break;
            }
            let connected = tokio::select! {
                r = timeout(self.config.connect_timeout, TcpStream::connect(&self.config.addr)) => r,
                () = shutdown.cancelled() => break,
            };
            let end = match connected {
                Ok(Ok(stream)) => {
                    debug!(link = %self.name, addr = %self.config.addr, "connected");
                    self.session(stream, &mut st, &shutdown, drain).await
                }
                Ok(Err(e)) => {
                    self.counters.error();
                    warn!(link = %self.name, addr = %self.config.addr, error = %e, "cannot connect");
                    End::Reconnect
                }
                Err(_) => {
                    self.counters.error();
                    warn!(link = %self.name, addr = %self.config.addr, "connect timed out");
                    End::Reconnect
                }
            };
            if let End::Done = end {
                break;
            }
            let delay = st.backoff.next_delay();
            tokio::select! {
                () = sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        if !st.window.is_empty() {
            info!(link = %self.name, unanswered = st.window.len(), "stopped with unanswered samples");
            self.counters.abandoned(st.window.len() as u64);
        }
    }

    async fn session(
        &self,
        stream: TcpStream,
        st: &mut LinkState,
        shutdown: &CancellationToken,
        drain: Duration,
    ) -> End {
        // Small frames pipelined: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let mut replies = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_REPLY_LINE));
        if !self.authenticate(&mut write, &mut replies).await {
            return End::Reconnect;
        }

        if !st.window.is_empty() {
            let mut buf = BytesMut::new();
            for u in &st.window {
                buf.extend_from_slice(&u.frame.bytes);
            }
            debug!(link = %self.name, frames = st.window.len(), "resending unanswered frames");
            if !self.write(&mut write, &buf).await {
                return End::Reconnect;
            }
            self.counters.sent(st.window.len() as u64, true);
        }

        let mut drain_until: Option<Instant> = None;
        // When the oldest unanswered frame started waiting, for the timeout.
        let mut waiting_since = Instant::now();
        loop {
            let room =
                !st.closed && drain_until.is_none() && st.window.len() < self.config.window.max(1);
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if drain_until.is_none() => {
                    if st.window.is_empty() {
                        return End::Done;
                    }
                    drain_until = Some(Instant::now() + drain);
                }
                () = sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() => return End::Done,
                () = sleep_until(waiting_since + self.config.reply_timeout), if !st.window.is_empty() => {
                    self.counters.error();
                    warn!(link = %self.name, unanswered = st.window.len(), "no reply in time; reconnecting");
                    return End::Reconnect;
                }
                line = replies.next() => match line {
                    Some(Ok(line)) => {
                        waiting_since = Instant::now();
                        if !self.on_reply(&line, st) {
                            return End::Reconnect;
                        }
                        if st.window.is_empty() && (st.closed || drain_until.is_some()) {
                            return End::Done;
                        }
                    }
                    Some(Err(e)) => {
                        self.counters.error();
                        warn!(link = %self.name, error = %e, "unreadable reply; reconnecting");
                        return End::Reconnect;
                    }
                    None => {
                        if !st.window.is_empty() {
                            self.counters.error();
                            warn!(link = %self.name, unanswered = st.window.len(), "ingest closed the connection");
                        }
                        return if st.closed && st.window.is_empty() { End::Done } else { End::Reconnect };
                    }
                },
                item = st.items.recv(), if room => {
                    let Some(first) = item else {
                        st.closed = true;
                        if st.window.is_empty() {
                            return End::Done;
                        }
                        continue;
                    };
                    if st.window.is_empty() {
                        waiting_since = Instant::now();
                    }
                    // Take whatever else is ready too and write it at once.
                    let mut buf = BytesMut::new();
                    let mut n = 0;
                    let mut next = Some(first);
                    while let Some(tx) = next.take() {
                        let u = self.frame(&tx, &mut st.qn);
                        buf.extend_from_slice(&u.frame.bytes);
                        st.window.push_back(u);
                        n += 1;
                        if st.window.len() < self.config.window {
                            match st.items.try_recv() {
                                Ok(tx) => next = Some(tx),
                                Err(TryRecvError::Disconnected) => st.closed = true,
                                Err(TryRecvError::Empty) => {}
                            }
                        }
                    }
                    // Frames are in the window before the write: if it
                    // fails they are resent on the next connection.
                    if !self.write(&mut write, &buf).await {
                        return End::Reconnect;
                    }
                    self.counters.sent(n, false);
                }
            }
        }
    }

    /// Auth frames for the stations of this connection that have a
    /// secret, each answered before any data goes (JSON lines and
    /// Circular 10; HJ 212 carries the secret in every packet).
    async fn authenticate(
        &self,
        write: &mut OwnedWriteHalf,
        replies: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, LinesCodec>,
    ) -> bool {
        if self.format == TcpFormat::Hj212 {
            return true;
        }
        for id in &self.stations {
            let Some(secret) = self.config.secrets.get(id) else {
                continue;
            };
            let (frame, ok) = match self.format {
                TcpFormat::Json => (
                    serde_json::json!({ "auth": { "station": id, "secret": secret } }).to_string()
                        + "\n",
                    "\"ok\":true",
                ),
                _ => (format!("AUTH {id} {secret}\n"), "OK AUTH"),
            };
            if !self.write(write, frame.as_bytes()).await {
                return false;
            }
            let reply = timeout(self.config.reply_timeout, replies.next()).await;
            match reply {
                Ok(Some(Ok(line))) if line.contains(ok) => {}
                other => {
                    self.counters.error();
                    warn!(link = %self.name, station = %id, reply = ?other, "ingest refused the station's credential; reconnecting");
                    return false;
                }
            }
        }
        true
    }

    fn frame(&self, tx: &Transmission, qn: &mut QnClock) -> Unanswered {
        let station = &self.fleet.stations()[tx.station];
        let qn_time = match self.format {
            TcpFormat::Hj212 => qn.next(),
            _ => Utc::now(),
        };
        Unanswered {
            frame: tcp_frame(
                self.format,
                station,
                &tx.sample,
                self.config
                    .secrets
                    .get(&station.id)
                    .unwrap_or(&self.config.hj212_password),
                qn_time,
            ),
            readings: tx.sample.values.len() as u64,
        }
    }

    async fn write(&self, write: &mut OwnedWriteHalf, buf: &[u8]) -> bool {
        match timeout(self.config.reply_timeout, write.write_all(buf)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.counters.error();
                warn!(link = %self.name, error = %e, "write failed; reconnecting");
                false
            }
            Err(_) => {
                self.counters.error();
                warn!(link = %self.name, "write timed out; reconnecting");
                false
            }
        }
    }

    /// Applies one reply to the window; `false` when the connection must be
    /// dropped and the unanswered frames resent.
    fn on_reply(&self, line: &str, st: &mut LinkState) -> bool {
        let parsed = match parse_reply(self.format, line.as_bytes()) {
            Ok(p) => p,
            Err(why) => {
                self.counters.error();
                warn!(link = %self.name, %why, "reply makes no sense; reconnecting");
                return false;
            }
        };
        // HJ 212 replies name their frame; the others answer in order.
        let index = match &parsed.qn {
            Some(qn) => st
                .window
                .iter()
                .position(|u| u.frame.qn.as_deref() == Some(qn.as_str())),
            None => (!st.window.is_empty()).then_some(0),
        };
        let Some(index) = index else {
            self.counters.error();
            warn!(link = %self.name, reply = %line, "reply to no unanswered frame; reconnecting");
            return false;
        };
        match parsed.reply {
            Reply::Acked { readings } => {
                if let Some(u) = st.window.remove(index) {
                    if readings.is_some_and(|n| n != u.readings) {
                        debug!(link = %self.name, sent = u.readings, acked = ?readings, "ingest counted other readings");
                    }
                    self.counters.acked(u.readings);
                    st.backoff.reset();
                }
            }
            Reply::Refused {
                reason,
                detail,
                retry: true,
            } => {
                // The frame stays in the window and goes again after a backoff.
                self.counters.error();
                debug!(link = %self.name, %reason, %detail, "ingest asks to resend later");
                return false;
            }
            Reply::Refused {
                reason,
                detail,
                retry: false,
            } => {
                st.window.remove(index);
                self.counters.refused();
                st.refusals += 1;
                if st.refusals <= REFUSALS_WARNED {
                    warn!(link = %self.name, %reason, %detail, "sample refused");
                } else {
                    debug!(link = %self.name, %reason, %detail, "sample refused");
                }
            }
        }
        if index > 0 {
            // Frames before the answered one got no reply: ingest dropped
            // them. Resend them, as a logger would.
            self.counters.error();
            debug!(link = %self.name, unanswered = index, "frames passed over without a reply; reconnecting");
            return false;
        }
        true
    }
}
