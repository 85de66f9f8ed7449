//! Alert changes recorded by any alerting instance, as they commit. Each
//! new history row is announced with `pg_notify(CHANNEL, its sequence)`,
//! delivered at commit (`store::record`);
//! one connection per instance listens and keeps the newest committed
//! sequence number in a `watch` channel. A gRPC subscription that sees it
//! move past what it has sent reads the difference from the history. The
//! instance's own changes also come through the in-process broadcast (no
//! round trip); the notification is what brings the other instances'.
//!
//! Recording takes a transaction-level advisory lock first, so sequence
//! numbers commit in order: a subscriber that has read up to `n` never
//! finds `n - 1` committed later.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::store;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "quantrac_alert_events";

/// Follows the newest committed sequence number until `shutdown`,
/// reconnecting with backoff. After each (re)connection it also reads the
/// newest sequence from the history: a notification sent while it was
/// not listening is not lost, only late.
pub async fn follow(url: String, newest: watch::Sender<u64>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match listen(&url, &newest, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                metrics::counter!("alerting_listen_failures_total").increment(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "listening for alert changes failed; other instances' changes are late until it is back");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn advance(newest: &watch::Sender<u64>, sequence: u64) {
    newest.send_if_modified(|v| {
        let moved = sequence > *v;
        if moved {
            *v = sequence;
        }
        moved
    });
}

async fn listen(
    url: &str,
    newest: &watch::Sender<u64>,
    shutdown: &CancellationToken,
) -> Result<(), store::AlertStoreError> {
    let (config, tls) = store::database(url)?;
    let (client, mut connection) = config.connect(tls).await?;
    // The connection carries both the replies to `client` and the
    // notifications: drive it here and pick the notifications out.
    let messages = async {
        let mut messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            if let AsyncMessage::Notification(n) = m? {
                match n.payload().parse::<u64>() {
                    Ok(sequence) => advance(newest, sequence),
                    Err(_) => tracing::debug!(payload = n.payload(), "unexpected notification"),
                }
            }
        }
        Err(store::AlertStoreError::Closed)
    };
    let session = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        advance(newest, store::last_sequence(&client).await?);
        tracing::debug!("listening for alert changes");
        shutdown.cancelled().await;
        Ok(())
    };
    tokio::select! {
        r = messages => r,
        r = session => r,
    }
}
