//! Telling the world about alert changes that were recorded: the Kafka
//! `alerts` topic (key = alert id; not in single-node mode, which runs
//! without Kafka) and the live gRPC subscribers (a broadcast channel), from
//! [`Notifier`]; and webhooks, from [`deliver_webhooks`]: one task per URL
//! that reads `alert_events` after that URL's cursor in the database, so a
//! crash, a burst or a dead endpoint loses nothing and one dead URL delays
//! only itself.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use prost::Message;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{broadcast, watch};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;

use crate::AlertingError;
use crate::config::WebhookConfig;
use crate::store::{self, AlertStoreError};

#[derive(Clone)]
pub struct Notifier {
    /// `None` in single-node mode.
    producer: Option<FutureProducer>,
    topic: String,
    live: broadcast::Sender<v1::Alert>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Notifier {
    pub fn new(
        producer: Option<FutureProducer>,
        topic: String,
        live: broadcast::Sender<v1::Alert>,
    ) -> Self {
        Self {
            producer,
            topic,
            live,
        }
    }

    /// Publishes recorded changes; returns once Kafka (if there is one)
    /// has them, retrying until then or until `shutdown`.
    pub async fn notify(
        &self,
        alerts: &[v1::Alert],
        shutdown: &CancellationToken,
    ) -> Result<(), AlertingError> {
        // Live subscribers first: the changes are committed in the
        // database (their source of truth), and the gRPC stream need not
        // wait for Kafka's acknowledgement of the alerts topic.
        for alert in alerts {
            // No live subscriber is fine.
            let _ = self.live.send(alert.clone());
        }
        // All at once, each retried until Kafka has it: one round trip for
        // the batch of changes, not one per change.
        let sends = alerts.iter().map(|alert| self.publish(alert, shutdown));
        for sent in futures::future::join_all(sends).await {
            sent?;
        }
        Ok(())
    }

    /// One change to the alerts topic, retried with backoff.
    async fn publish(
        &self,
        alert: &v1::Alert,
        shutdown: &CancellationToken,
    ) -> Result<(), AlertingError> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let payload = alert.encode_to_vec();
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = producer
                .send(
                    FutureRecord::to(&self.topic)
                        .key(&alert.id)
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err((e, _)) => {
                    metrics::counter!("alerting_notification_failures_total", "channel" => "kafka")
                        .increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "publishing an alert to Kafka failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(AlertingError::ShuttingDown),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// The JSON a webhook receives.
pub fn webhook_json(a: &v1::Alert) -> serde_json::Value {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref().and_then(from_timestamp).map(|t| t.to_rfc3339())
    };
    serde_json::json!({
        "id": a.id,
        "sequence": a.sequence,
        "rule": a.rule,
        "station_id": a.station_id,
        "parameter": a.parameter,
        "industrial_zone": a.industrial_zone,
        "severity": a.severity().as_str_name(),
        "state": a.state().as_str_name(),
        "observed_value": a.observed_value,
        "limit_value": a.limit_value,
        "message": a.message,
        "window_start": time(&a.window_start),
        "window_end": time(&a.window_end),
        "opened_at": time(&a.opened_at),
        "updated_at": time(&a.updated_at),
        "acknowledged_by": a.acknowledged_by,
        "note": a.note,
    })
}

/// `sha256=<hex>` of HMAC-SHA256(key, "<timestamp>.<body>").
pub fn signature(key: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "sha256={}",
        hmac_sha256_hex(key.as_bytes(), &[ts.as_bytes(), b".", body])
    )
}

/// HMAC-SHA256 (RFC 2104) of the concatenated parts, in hex.
fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    use hmac::{KeyInit, Mac};
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length.
        return String::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn post(
    url: &str,
    body: &[u8],
    timeout: Duration,
    secret: Option<&str>,
    tls: &TlsConnector,
) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("url without host")?.to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let mut sender = if https {
            let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let stream = tls
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            http1(stream).await?
        } else {
            http1(stream).await?
        };
        let mut request = Request::post(&uri)
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(key) = secret {
            // Signed at each attempt: a retry carries a fresh timestamp.
            let now = chrono::Utc::now().timestamp();
            request = request
                .header("x-quantrac-timestamp", now.to_string())
                .header("x-quantrac-signature", signature(key, now, body));
        }
        let request = request
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// An HTTP/1 client connection over `stream` (plain or TLS), its driver
/// running on its own task.
async fn http1<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Marks where a URL seen for the first time starts: at the newest event
/// (a new endpoint is not sent the whole history). Run before the engine
/// records anything, so nothing recorded after start is missed.
pub async fn init_webhook_cursors(
    db: &tokio_postgres::Client,
    urls: &[String],
) -> Result<(), AlertStoreError> {
    for url in urls {
        db.execute(
            "INSERT INTO webhook_cursors (url, delivered_through) \
             SELECT $1, coalesce(max(sequence), 0) FROM alert_events \
             ON CONFLICT (url) DO NOTHING",
            &[url],
        )
        .await?;
    }
    Ok(())
}

/// Delivers every alert change recorded after `url`'s cursor, in sequence
/// order, moving the cursor after each success; retries a failing endpoint
/// with backoff for as long as it fails (counting a failure each
/// `max_attempts`). One task per URL; across alerting instances one holds
/// the URL (a PostgreSQL advisory lock), the others wait to take over.
pub async fn deliver_webhooks(
    url: String,
    config: WebhookConfig,
    database_url: String,
    mut newest: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    // Checked when the configuration was validated.
    let tls = match quantrac_plumbing::tls::client_config(config.ca_file.as_deref(), None) {
        Ok(c) => TlsConnector::from(c),
        Err(e) => {
            tracing::error!(url, error = %e, "webhook TLS configuration unusable; not delivering");
            return;
        }
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match deliver_connected(&url, &config, &tls, &database_url, &mut newest, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(url, error = %e, retry_in = ?backoff, "webhook delivery lost its database connection");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Delivery on one connection; `Ok` on shutdown.
async fn deliver_connected(
    url: &str,
    config: &WebhookConfig,
    tls: &TlsConnector,
    database_url: &str,
    newest: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> Result<(), AlertStoreError> {
    let db = store::connect(database_url).await?;
    // One deliverer per URL: the lock is the session's, so it goes with a
    // crashed instance's connection and another instance takes over.
    loop {
        let held: bool = db
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('quantrac-webhook'), hashtext($1))",
                &[&url],
            )
            .await?
            .get(0);
        if held {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    let mut listening = true;
    loop {
        let through: i64 = db
            .query_one(
                "SELECT delivered_through FROM webhook_cursors WHERE url = $1",
                &[&url],
            )
            .await?
            .get(0);
        let page = store::events_after(&db, u64::try_from(through).unwrap_or(0), 100).await?;
        if page.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                changed = newest.changed(), if listening => listening = changed.is_ok(),
                // Also polls: the change feed may be down.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        for alert in page {
            // Planned maintenance: the change is kept, not notified.
            if store::in_maintenance(&db, &alert).await? {
                metrics::counter!("alerting_notifications_suppressed_total", "channel" => "webhook")
                    .increment(1);
            } else if !post_until_delivered(url, &alert, config, tls, shutdown).await {
                return Ok(());
            }
            db.execute(
                "UPDATE webhook_cursors SET delivered_through = $2, delivered_at = now() \
                 WHERE url = $1 AND delivered_through < $2",
                &[&url, &i64::try_from(alert.sequence).unwrap_or(i64::MAX)],
            )
            .await?;
            metrics::counter!("alerting_webhooks_delivered_total").increment(1);
        }
    }
}

/// Posts until the endpoint accepts; `false` when shutting down first.
async fn post_until_delivered(
    url: &str,
    alert: &v1::Alert,
    config: &WebhookConfig,
    tls: &TlsConnector,
    shutdown: &CancellationToken,
) -> bool {
    let body = webhook_json(alert).to_string().into_bytes();
    let mut backoff = Duration::from_millis(200);
    let mut attempt: u32 = 0;
    loop {
        let secret = config.secret.as_ref().map(|s| s.0.as_str());
        match post(url, &body, config.timeout, secret, tls).await {
            Ok(()) => return true,
            Err(e) => {
                attempt += 1;
                if attempt.is_multiple_of(config.max_attempts) {
                    metrics::counter!("alerting_notification_failures_total", "channel" => "webhook").increment(1);
                    tracing::error!(
                        url,
                        alert = alert.id,
                        attempts = attempt,
                        error = e,
                        "webhook endpoint still failing; delivery keeps trying, later changes wait behind this one"
                    );
                } else {
                    tracing::warn!(url, alert = alert.id, attempt, error = e, retry_in = ?backoff, "webhook delivery failed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod signature_tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_signature_covers_time_and_body() {
        let s = signature("k", 1_800_000_000, b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_ne!(s, signature("k", 1_800_000_001, b"{}"));
        assert_ne!(s, signature("k", 1_800_000_000, b"{ }"));
        assert_ne!(s, signature("k2", 1_800_000_000, b"{}"));
    }
}
