//! Where every receiver hands its records: Kafka, or in single-node mode the
//! in-process bus to the processor.
//!
//! Kafka: idempotent with `acks=all`: a record the broker acknowledged is on
//! every in-sync replica and is never written twice by a producer retry.
//! The bus: acknowledged once the processor committed the records to the
//! database. Either way a semaphore bounds the records not yet
//! acknowledged; when it is exhausted [`Sink::send`] waits, the receivers
//! stop reading and the stations slow down (invariant 5: overload never
//! grows memory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quantrac_plumbing::bus::{BusBatch, BusError, BusSender};
use quantrac_plumbing::kafka::{self, KafkaError};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::KafkaConfig;
use crate::status::Status;

/// Why a record did not reach Kafka.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Create(#[from] std::sync::Arc<KafkaError>),
    #[error("Kafka did not acknowledge the record on `{topic}`: {reason}")]
    Delivery { topic: String, reason: String },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("ingest is shutting down")]
    Closed,
}

/// One encoded record, kept as bytes so a retry resends exactly the same
/// record.
pub type OutRecord = quantrac_plumbing::bus::BusRecord;

#[derive(Clone)]
enum Backend {
    Kafka(FutureProducer),
    Bus(BusSender),
}

#[derive(Clone)]
pub struct Sink {
    backend: Backend,
    permits: Arc<Semaphore>,
    /// The semaphore's size: the most permits one send may hold.
    window: u32,
    status: Arc<Status>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

impl Sink {
    /// Single-node mode: records go to the processor over the in-process bus.
    pub fn bus(sender: BusSender, max_in_flight: usize, status: Arc<Status>) -> Self {
        Self {
            backend: Backend::Bus(sender),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            window: window(max_in_flight),
            status,
        }
    }

    pub fn kafka(
        config: &KafkaConfig,
        max_in_flight: usize,
        status: Arc<Status>,
    ) -> Result<Self, SinkError> {
        let cc = kafka::producer_config(
            &config.brokers,
            &config.properties,
            &[
                ("compression.type", "lz4".into()),
                ("linger.ms", config.linger.as_millis().to_string()),
                (
                    "message.timeout.ms",
                    config.message_timeout.as_millis().to_string(),
                ),
                // Our semaphore is the real bound; librdkafka's queue only
                // has to hold what the semaphore lets through.
                (
                    "queue.buffering.max.messages",
                    (max_in_flight + 1_000).to_string(),
                ),
                ("client.id", "quantrac-ingest".into()),
            ],
        );
        let producer: FutureProducer = kafka::create(&cc, "producer")
            .map_err(|e| SinkError::Create(std::sync::Arc::new(e)))?;
        Ok(Self {
            backend: Backend::Kafka(producer),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            window: window(max_in_flight),
            status,
        })
    }

    /// Hands the records over and returns a future of their
    /// acknowledgement. Waits (without bound) for room in the in-flight
    /// window: that wait is the back-pressure.
    ///
    /// Records are enqueued in order before this returns, so two calls made
    /// one after the other keep their order within a partition.
    ///
    /// One send holds a permit per record, but never more than the whole
    /// window: a message with more records than `max_in_flight` (one
    /// Circular 10 file of 10,900 lines) waits for the window to empty and
    /// then fills it, instead of waiting for permits that do not exist,
    /// which stalled every station for good.
    pub async fn send(&self, records: &[OutRecord]) -> Result<Acks, SinkError> {
        let n = u32::try_from(records.len().max(1)).unwrap_or(u32::MAX);
        self.send_holding(records, n.min(self.window)).await
    }

    /// Sends again records whose delivery failed, outside the window: the
    /// caller is the one task that frees the window (the MQTT PUBACK task,
    /// in order), so waiting for room here would wait for itself. Bounded
    /// all the same: that task retries one message at a time.
    pub async fn resend(&self, records: &[OutRecord]) -> Result<Acks, SinkError> {
        self.send_holding(records, 0).await
    }

    async fn send_holding(&self, records: &[OutRecord], permits: u32) -> Result<Acks, SinkError> {
        let n = u32::try_from(records.len().max(1)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| SinkError::Closed)?;
        let started = Instant::now();
        let pending = match &self.backend {
            Backend::Kafka(producer) => {
                let mut futures = Vec::with_capacity(records.len());
                for r in records {
                    let mut record = FutureRecord::to(&r.topic)
                        .key(&r.key[..])
                        .payload(&r.payload[..]);
                    // send_result fails only when librdkafka's own queue is
                    // full, which our semaphore makes rare; wait briefly then.
                    let fut = loop {
                        match producer.send_result(record) {
                            Ok(f) => break f,
                            Err((
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                                ),
                                rec,
                            )) => {
                                record = rec;
                                tracing::debug!("librdkafka queue full, waiting");
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            // Anything else will not get better by waiting.
                            Err((e, _)) => return Err(delivery_error(&r.topic, e.to_string())),
                        }
                    };
                    futures.push((Arc::clone(&r.topic), fut));
                }
                Pending::Kafka(futures)
            }
            Backend::Bus(sender) => {
                let (done, rx) = oneshot::channel();
                // Bounded: waits while the processor is busy.
                let batch = BusBatch {
                    records: records.to_vec(),
                    done,
                };
                sender.send(batch).await.map_err(|_| SinkError::Closed)?;
                Pending::Bus(rx)
            }
        };
        self.status.in_flight_add(i64::from(n));
        Ok(Acks {
            pending,
            permit,
            started,
            status: Arc::clone(&self.status),
            n,
        })
    }

    /// Waits up to `timeout` for records handed to Kafka to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Backend::Kafka(producer) = &self.backend
            && let Err(e) = producer.flush(timeout)
        {
            tracing::warn!(error = %e, "Kafka flush on shutdown did not finish");
        }
    }
}

/// The window as tokio counts permits (at least 1: a zero window would
/// never let anything through).
fn window(max_in_flight: usize) -> u32 {
    u32::try_from(max_in_flight.max(1)).unwrap_or(u32::MAX)
}

enum Pending {
    Kafka(Vec<(Arc<str>, rdkafka::producer::DeliveryFuture)>),
    Bus(oneshot::Receiver<Result<(), BusError>>),
}

/// The pending acknowledgement of records handed to [`Sink::send`].
#[must_use = "records are acknowledged only when this resolves"]
pub struct Acks {
    pending: Pending,
    permit: OwnedSemaphorePermit,
    started: Instant,
    status: Arc<Status>,
    n: u32,
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acks").field("records", &self.n).finish()
    }
}

fn delivery_error(topic: &str, reason: impl Into<String>) -> SinkError {
    SinkError::Delivery {
        topic: topic.to_owned(),
        reason: reason.into(),
    }
}

impl Acks {
    /// Resolves when every record is acknowledged, or with the first failure.
    pub async fn wait(self) -> Result<(), SinkError> {
        let Acks {
            pending,
            permit,
            started,
            status,
            n,
        } = self;
        let mut result = Ok(());
        match pending {
            Pending::Kafka(futures) => {
                for (topic, fut) in futures {
                    let outcome = match fut.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(delivery_error(&topic, e.to_string())),
                        Err(_) => Err(delivery_error(&topic, "producer dropped")),
                    };
                    if result.is_ok() {
                        result = outcome;
                    }
                }
            }
            Pending::Bus(rx) => {
                result = match rx.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(SinkError::Bus(e)),
                    Err(_) => Err(SinkError::Bus(BusError::Stopped)),
                };
            }
        }
        drop(permit);
        status.in_flight_add(-i64::from(n));
        metrics::histogram!("ingest_produce_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        status.kafka_result(result.is_ok());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn records(n: usize) -> Vec<OutRecord> {
        (0..n)
            .map(|i| OutRecord {
                topic: Arc::from("readings.raw"),
                key: Bytes::from_static(b"S"),
                payload: Bytes::from(i.to_string()),
            })
            .collect()
    }

    /// A message with more records than the in-flight window goes through
    /// (it used to wait for ever for permits that did not exist), and the
    /// next one still gets in after it.
    #[tokio::test]
    async fn a_message_larger_than_the_window_is_sent_and_others_follow() {
        let (tx, mut rx) = quantrac_plumbing::bus::channel(4);
        let status = Arc::new(Status::default());
        let sink = Sink::bus(tx, 10, status);
        // The other end stores every batch at once.
        let stored = tokio::spawn(async move {
            let mut n = 0;
            while let Some(batch) = rx.recv().await {
                n += batch.records.len();
                let _ = batch.done.send(Ok(()));
            }
            n
        });
        let within = Duration::from_secs(5);
        let big = tokio::time::timeout(within, sink.send(&records(25)))
            .await
            .expect("a 25-record message enters a window of 10")
            .expect("sent");
        big.wait().await.expect("acknowledged");
        let small = tokio::time::timeout(within, sink.send(&records(3)))
            .await
            .expect("the window is free again")
            .expect("sent");
        small.wait().await.expect("acknowledged");
        drop(sink);
        assert_eq!(stored.await.expect("receiver"), 28);
    }
}
