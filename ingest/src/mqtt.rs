//! MQTT receiver: a persistent session with manual acknowledgements.
//!
//! Topic layout: stations publish with QoS 1 to
//! `stations/<station id>/readings`; the payload is a JSON sample
//! (`proto/schema/sample.schema.json`) or a Circular 10 record (optionally
//! preceded by its file name line). Mosquitto checks the station's
//! credentials (and, with an ACL, that it publishes only under its own id).
//!
//! The PUBACK for a message goes out only after Kafka acknowledged its
//! records, and in the order the messages arrived (MQTT 3.1.1 §4.6). The
//! session is persistent (`clean_session = false`, fixed client id), so a
//! message received but not acknowledged when ingest stops is delivered
//! again by the broker when it reconnects.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::IngestError;
use crate::config::{IngestConfig, invalid, parse_offset};
use crate::decode;
use crate::intake::{Intake, Prepared, source_label};
use crate::sink::Acks;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::WireError;

/// Where the broker is: `mqtt://host:port` (plain) or `mqtts://host:port`
/// (TLS, the server's name checked against `host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parses a broker URL.
pub fn broker_address(url: &str) -> Result<Broker, String> {
    const EXPECTED: &str = "expected mqtt://host:port or mqtts://host:port";
    let (rest, tls) = if let Some(r) = url
        .strip_prefix("mqtts://")
        .or_else(|| url.strip_prefix("ssl://"))
    {
        (r, true)
    } else if let Some(r) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (r, false)
    } else {
        return Err(EXPECTED.into());
    };
    let (host, port) = rest.rsplit_once(':').ok_or(EXPECTED)?;
    let port: u16 = port
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("bad port `{port}`"))?;
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok(Broker {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// A message waiting for Kafka before its PUBACK.
struct PendingAck {
    publish: Publish,
    source: SourceProtocol,
    prepared: Prepared,
    acks: Acks,
}

/// Runs until `shutdown`; then stops taking messages, sends the PUBACKs of
/// what Kafka already acknowledged (bounded by a deadline) and disconnects.
pub async fn run(
    config: Arc<IngestConfig>,
    intake: Intake,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let mc = &config.mqtt;
    let broker =
        broker_address(&mc.url).map_err(|e| IngestError::Config(invalid("mqtt.url", e)))?;
    let offset = parse_offset(&config.circular10.utc_offset)
        .ok_or_else(|| IngestError::Config(invalid("circular10.utc_offset", "expected +HH:MM")))?;
    let mut options = MqttOptions::new(
        format!("quantrac-{}", config.node_id),
        broker.host.clone(),
        broker.port,
    );
    if broker.tls {
        let tls = quantrac_plumbing::tls::client_config(mc.ca_file.as_deref(), None)?;
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    options
        .set_credentials(mc.username.clone(), mc.password.clone())
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(mc.keep_alive)
        // Read up to 4x the payload limit, so that a message over the limit
        // is refused here (rejected, PUBACKed) instead of breaking the
        // connection: the persistent session would redeliver it at every
        // reconnect, for ever. The broker caps packets below this (deploy:
        // Mosquitto `max_packet_size` 1 MiB = 4 x the default limit).
        .set_max_packet_size(read_limit(mc.max_payload_bytes), 64 * 1024);
    let filter = match &mc.shared_group {
        Some(group) => format!("$share/{group}/{}", mc.topic),
        None => mc.topic.clone(),
    };
    // Room for every pending PUBACK plus subscribes: the acker must never
    // block on this channel while the loop waits for the acker.
    let (client, mut eventloop) = AsyncClient::new(options, mc.max_pending + 64);
    // Three stages, so that the event loop is never blocked (it also sends
    // the PUBACKs and the pings; blocking it deadlocks the acker, which
    // waits for it to take the PUBACKs): the event loop forwards publishes;
    // the intake stage decodes them and hands them to Kafka (waiting there
    // is the back-pressure); the acker sends PUBACKs in order once Kafka
    // has the records. The hand-off to the intake stage is unbounded here
    // because MQTT bounds it: the broker sends no more than its in-flight
    // window (Mosquitto `max_inflight_messages`) until we acknowledge. A
    // gauge shows its depth, and a warning fires past `mqtt.max_pending`.
    let (publish_tx, mut publish_rx) = mpsc::unbounded_channel::<Publish>();
    let backlog = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (pending_tx, pending_rx) = mpsc::channel::<PendingAck>(mc.max_pending);
    let acker = tokio::spawn(ack_in_order(
        client.clone(),
        intake.clone(),
        pending_rx,
        shutdown.clone(),
    ));
    let intake_stage = {
        let (intake, shutdown, backlog) = (intake.clone(), shutdown.clone(), Arc::clone(&backlog));
        let max_payload = mc.max_payload_bytes;
        tokio::spawn(async move {
            loop {
                let publish = tokio::select! {
                    () = shutdown.cancelled() => break,
                    p = publish_rx.recv() => match p { Some(p) => p, None => break },
                };
                backlog.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let Some(pending) = prepare(&intake, offset, max_payload, publish, &shutdown).await
                else {
                    break;
                };
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = pending_tx.send(pending) => if r.is_err() { break },
                }
            }
            // Dropping pending_tx lets the acker finish what it holds.
        })
    };

    let mut backoff = Duration::from_millis(200);
    let status = Arc::clone(intake.status());
    let mut warned = false;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(200);
                status.set_mqtt_connected(true);
                tracing::info!(
                    session_present = ack.session_present,
                    filter,
                    "connected to MQTT broker"
                );
                // Idempotent; also covers a broker that lost the session.
                if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                    tracing::warn!(error = %e, "cannot queue MQTT subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let depth = backlog.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                #[allow(clippy::cast_precision_loss)]
                metrics::gauge!("ingest_mqtt_backlog").set(depth as f64);
                if depth > mc.max_pending && !warned {
                    warned = true;
                    tracing::warn!(
                        max_pending = mc.max_pending,
                        "more MQTT messages waiting than mqtt.max_pending: \
                         the broker's max_inflight_messages should not exceed it"
                    );
                }
                if publish_tx.send(publish).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                status.set_mqtt_connected(false);
                tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection lost");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    drop(publish_tx);
    if let Err(e) = intake_stage.await {
        tracing::error!(error = %e, "MQTT intake stage panicked");
    }

    // Drain: let the acker send PUBACKs for what Kafka already has, while
    // the event loop keeps running to put them on the wire.
    let drain = async {
        let mut acker = acker;
        loop {
            tokio::select! {
                r = &mut acker => { if let Err(e) = r { tracing::error!(error = %e, "MQTT acker panicked") } break }
                e = eventloop.poll() => if e.is_err() { tokio::time::sleep(Duration::from_millis(50)).await },
            }
        }
        let _ = client.disconnect().await;
        // Flush the disconnect (and the last PUBACKs) onto the socket.
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                    break;
                }
                Ok(Ok(_)) => {}
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("MQTT drain deadline passed; unacknowledged messages will be redelivered");
    }
    status.set_mqtt_connected(false);
    Ok(())
}

/// Decodes one message and hands its records to Kafka. `None` on shutdown.
/// The largest packet ingest reads from the broker: 4x the payload limit
/// plus room for the topic and header.
fn read_limit(max_payload: usize) -> usize {
    max_payload.saturating_mul(4).saturating_add(1024)
}

async fn prepare(
    intake: &Intake,
    offset: chrono::FixedOffset,
    max_payload: usize,
    publish: Publish,
    shutdown: &CancellationToken,
) -> Option<PendingAck> {
    let topic = publish.topic.clone();
    let (source, station, decoded) = match decode::station_from_topic(&topic) {
        Ok(station) if publish.payload.len() > max_payload => (
            SourceProtocol::Unspecified,
            station.to_owned(),
            Err(WireError::new(
                "mqtt.too_large",
                format!(
                    "{} bytes, over mqtt.max_payload_bytes = {max_payload}; the first {max_payload} kept",
                    publish.payload.len()
                ),
            )),
        ),
        Ok(station) => {
            let (source, r) = decode::mqtt_payload(station, &publish.payload, offset);
            (source, station.to_owned(), r)
        }
        Err(e) => (SourceProtocol::Unspecified, String::new(), Err(e)),
    };
    intake.received(source);
    // A refused message keeps at most the payload limit as evidence: a
    // rejected record must fit on Kafka.
    let kept = &publish.payload[..publish.payload.len().min(max_payload)];
    let prepared = match decoded {
        Ok(samples) => intake.accept_frame(source, samples, &publish.payload, &topic),
        Err(e) => intake.reject(source, &topic, &station, kept, e),
    };
    let acks = tokio::select! {
        () = shutdown.cancelled() => return None,
        r = intake.publish(&prepared) => r.ok()?,
    };
    Some(PendingAck {
        publish,
        source,
        prepared,
        acks,
    })
}

/// Sends PUBACKs in arrival order, each after Kafka acknowledged the
/// message's records. A failed delivery is retried with backoff: MQTT 3.1.1
/// redelivers only on reconnect, so giving up would strand the message.
async fn ack_in_order(
    client: AsyncClient,
    intake: Intake,
    mut pending: mpsc::Receiver<PendingAck>,
    shutdown: CancellationToken,
) {
    while let Some(PendingAck {
        publish,
        source,
        prepared,
        mut acks,
    }) = pending.recv().await
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match acks.wait().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, source = source_label(source), retry_in = ?backoff, "Kafka delivery failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    // Outside the window: the later messages holding it are
                    // freed only by this task.
                    acks = match intake.republish(&prepared).await {
                        Ok(a) => a,
                        Err(_) => return,
                    };
                }
            }
        }
        if let Err(e) = client.ack(&publish).await {
            tracing::warn!(error = %e, "cannot queue PUBACK; the broker will redeliver");
            return;
        }
        intake.acknowledged(source, &prepared.verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = |host: &str, port, tls| Broker {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            broker_address("mqtt://127.0.0.1:11883"),
            Ok(b("127.0.0.1", 11883, false))
        );
        assert_eq!(
            broker_address("tcp://broker:1883/"),
            Ok(b("broker", 1883, false))
        );
        assert_eq!(
            broker_address("mqtts://broker:8883"),
            Ok(b("broker", 8883, true))
        );
        assert!(broker_address("http://x:1").is_err());
        assert!(broker_address("mqtt://x").is_err());
        assert!(broker_address("mqtt://:1").is_err());
        assert!(broker_address("mqtt://x:99999").is_err());
    }
}
