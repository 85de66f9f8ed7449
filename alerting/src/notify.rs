//! Telling the world about alert changes that were recorded: the Kafka
//! `alerts` topic (key = alert id; not in single-node mode, which runs
//! without Kafka), the live gRPC subscribers (a broadcast channel), and
//! webhooks (a bounded queue drained by a worker that retries with backoff).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use prost::Message;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::AlertingError;
use crate::config::WebhookConfig;

#[derive(Clone)]
pub struct Notifier {
    /// `None` in single-node mode.
    producer: Option<FutureProducer>,
    topic: String,
    live: broadcast::Sender<v1::Alert>,
    webhooks: Option<mpsc::Sender<v1::Alert>>,
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
        webhooks: Option<mpsc::Sender<v1::Alert>>,
    ) -> Self {
        Self {
            producer,
            topic,
            live,
            webhooks,
        }
    }

    /// Publishes recorded changes; returns once Kafka (if there is one)
    /// has them, retrying until then or until `shutdown`.
    pub async fn notify(
        &self,
        alerts: &[v1::Alert],
        shutdown: &CancellationToken,
    ) -> Result<(), AlertingError> {
        for alert in alerts {
            let payload = alert.encode_to_vec();
            let mut backoff = Duration::from_millis(100);
            while let Some(producer) = &self.producer {
                let sent = producer
                    .send(
                        FutureRecord::to(&self.topic)
                            .key(&alert.id)
                            .payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await;
                match sent {
                    Ok(_) => break,
                    Err((e, _)) => {
                        metrics::counter!("alerting_notification_failures_total", "channel" => "kafka").increment(1);
                        tracing::warn!(error = %e, retry_in = ?backoff, "publishing an alert to Kafka failed");
                        tokio::select! {
                            () = shutdown.cancelled() => return Err(AlertingError::ShuttingDown),
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            // No live subscriber is fine.
            let _ = self.live.send(alert.clone());
            // Webhooks never hold the engine up: the alert is already in the
            // database and on Kafka; a full queue (a dead endpoint) drops
            // the webhook copy and counts it.
            if let Some(tx) = &self.webhooks
                && tx.try_send(alert.clone()).is_err()
            {
                metrics::counter!("alerting_notification_failures_total", "channel" => "webhook_queue_full").increment(1);
                tracing::warn!(alert = alert.id, "webhook queue full; webhook copy dropped");
            }
        }
        Ok(())
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

async fn post(url: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("url without host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::post(&uri)
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
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

/// Delivers every alert change to every URL, retrying with exponential
/// backoff up to `max_attempts`; a notification that still fails is logged
/// and counted (the alert itself is safe in the database and on Kafka).
pub async fn webhook_worker(
    config: WebhookConfig,
    mut rx: mpsc::Receiver<v1::Alert>,
    shutdown: CancellationToken,
) {
    while let Some(alert) = tokio::select! {
        () = shutdown.cancelled() => None,
        a = rx.recv() => a,
    } {
        let body = webhook_json(&alert).to_string().into_bytes();
        for url in &config.urls {
            let mut backoff = Duration::from_millis(200);
            for attempt in 1..=config.max_attempts {
                match post(url, &body, config.timeout).await {
                    Ok(()) => break,
                    Err(e) if attempt == config.max_attempts => {
                        metrics::counter!("alerting_notification_failures_total", "channel" => "webhook").increment(1);
                        tracing::error!(
                            url,
                            alert = alert.id,
                            error = e,
                            "webhook delivery failed; giving up"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(url, alert = alert.id, attempt, error = e, retry_in = ?backoff, "webhook delivery failed");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
    }
}
