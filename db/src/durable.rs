//! Which asynchronously committed writes are durable: for a consumer
//! that commits without waiting for PostgreSQL's WAL flush (the
//! processor's `storage.async_commit`, alerting's `async_commit`, Kafka
//! mode) and stores its Kafka offsets only once the flush has passed.
//!
//! A commit that returns before its WAL record is on disk is lost if the
//! database crashes in the next few hundred milliseconds. That is safe
//! only while the Kafka offsets of what was written are not stored: the
//! topic still holds the records, and a replay writes them again. So:
//! - after a write, its mark is the WAL insert position
//!   ([`insert_lsn`], past its commit records) and the time the write
//!   started;
//! - [`FlushWatch`] reads `pg_current_wal_flush_lsn()` every few
//!   milliseconds on a connection of its own;
//! - a batch is durable when a reading at or past its mark was taken on a
//!   connection opened *before* the batch started. That connection's life
//!   spans the commit, so the server did not restart in between; a
//!   reading from a connection opened later may come from a server that
//!   recovered without the batch (WAL positions go on from the recovered
//!   end and pass the lost commit's position again), so it confirms
//!   nothing: the batch is [`Verdict::Lost`] and the consumer replays from
//!   the last durable offsets.
//!
//! What was written is passed on (published, notified) before it is
//! durable; if the database then loses it, the replay writes and passes
//! on the same thing again: at least once, never lost.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::{GenericClient, SimpleQueryMessage};

use crate::{ConnectOptions, DbError};

/// How often the flush position is read while waiting for it.
const POLL: Duration = Duration::from_millis(20);

/// What the database reported flushed, on which connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// When the connection the reading was taken on was opened.
    pub connected_at: Instant,
    /// `pg_current_wal_flush_lsn()`, as bytes from 0/0.
    pub lsn: i64,
}

/// A written batch: when its write started, and the WAL position after
/// its last commit (`None`: it could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub started_at: Instant,
    pub lsn: Option<i64>,
}

impl Mark {
    /// The mark of a write that started at `started_at`, from the reading
    /// of [`insert_lsn`] taken after its commit. A failed reading leaves
    /// the position unknown: the write then counts as lost (replayed).
    pub fn after(started_at: Instant, lsn: Result<i64, DbError>) -> Self {
        let lsn = lsn
            .inspect_err(|e| {
                tracing::warn!(error = %e, "reading the WAL position after a write; it will be treated as lost");
            })
            .ok();
        Self { started_at, lsn }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On disk: its offsets may be stored.
    Durable,
    /// Not known yet.
    Wait,
    /// Can no longer be known to be on disk: replay it.
    Lost,
}

/// Whether the batch marked `mark` is durable, given the latest reading.
pub fn verdict(mark: &Mark, flushed: Option<&Flushed>) -> Verdict {
    let Some(lsn) = mark.lsn else {
        return Verdict::Lost;
    };
    match flushed {
        None => Verdict::Wait,
        Some(f) if f.connected_at >= mark.started_at => Verdict::Lost,
        Some(f) if f.lsn >= lsn => Verdict::Durable,
        Some(_) => Verdict::Wait,
    }
}

/// The WAL insert position, as bytes from 0/0: past every commit `db`'s
/// session has made. One round trip (simple query): it follows every
/// write on the hot path.
pub async fn insert_lsn(db: &impl GenericClient) -> Result<i64, DbError> {
    let rows = db
        .simple_query("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
        .await?;
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| DbError::Schema("pg_current_wal_insert_lsn() returned no row".into()))
}

/// Resolves when `flushed` reports something new; never without a
/// watcher (`None`), so that it can sit in a `select!` either way.
pub async fn changed(flushed: &mut Option<watch::Receiver<Option<Flushed>>>) {
    if let Some(rx) = flushed
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Reads the flush position on a connection of its own, reconnecting after
/// a failure (and reporting `None` until connected again); stops when
/// dropped.
#[derive(Debug)]
pub struct FlushWatch {
    rx: watch::Receiver<Option<Flushed>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlushWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FlushWatch {
    pub fn start(url: String, options: ConnectOptions) -> Self {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(read_flushes(url, options, tx));
        Self { rx, task }
    }

    /// The latest reading, and its changes.
    pub fn receiver(&self) -> watch::Receiver<Option<Flushed>> {
        self.rx.clone()
    }
}

async fn read_flushes(url: String, options: ConnectOptions, tx: watch::Sender<Option<Flushed>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        {
            let client = match crate::connect(&url, &options).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "WAL flush watcher: connecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Taken after the connection is up: a batch must have started
            // later than this for this connection to vouch for it.
            let connected_at = Instant::now();
            backoff = Duration::from_millis(100);
            loop {
                match client
                    .query_one(
                        "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint",
                        &[],
                    )
                    .await
                {
                    Ok(row) => {
                        let lsn: i64 = row.get(0);
                        tx.send_if_modified(|old| {
                            let new = Some(Flushed { connected_at, lsn });
                            let changed = *old != new;
                            *old = new;
                            changed
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL flush watcher: reading the flush position");
                        tx.send_replace(None);
                        break;
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_vouches_only_from_a_connection_older_than_the_batch() {
        let t0 = Instant::now();
        let started_at = t0 + Duration::from_millis(10);
        let mark = Mark {
            started_at,
            lsn: Some(1_000),
        };
        let before = |lsn| Flushed {
            connected_at: t0,
            lsn,
        };
        assert_eq!(verdict(&mark, None), Verdict::Wait);
        assert_eq!(verdict(&mark, Some(&before(999))), Verdict::Wait);
        assert_eq!(verdict(&mark, Some(&before(1_000))), Verdict::Durable);
        assert_eq!(verdict(&mark, Some(&before(5_000))), Verdict::Durable);
        // A connection opened after the batch started: the server may have
        // restarted without it, whatever the position says.
        for lsn in [999, 1_000, 5_000] {
            let after = Flushed {
                connected_at: started_at + Duration::from_millis(1),
                lsn,
            };
            assert_eq!(verdict(&mark, Some(&after)), Verdict::Lost);
        }
        // Its position unknown: never known to be on disk.
        let unknown = Mark { lsn: None, ..mark };
        assert_eq!(verdict(&unknown, Some(&before(5_000))), Verdict::Lost);
    }
}
