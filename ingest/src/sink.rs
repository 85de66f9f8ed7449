//! The Kafka producer every receiver hands its records to.
//!
//! Idempotent with `acks=all`: a record the broker acknowledged is on every
//! in-sync replica and is never written twice by a producer retry. A
//! semaphore bounds the records not yet acknowledged; when it is exhausted
//! [`KafkaSink::send`] waits, the receivers stop reading and the stations
//! slow down (invariant 5: overload never grows memory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::KafkaConfig;
use crate::status::Status;

/// Why a record did not reach Kafka.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(String),
    #[error("Kafka did not acknowledge the record on `{topic}`: {reason}")]
    Delivery { topic: String, reason: String },
    #[error("ingest is shutting down")]
    Closed,
}

/// One encoded Kafka record, kept as bytes so a retry resends exactly the
/// same record.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: Arc<str>,
    pub key: Bytes,
    pub payload: Bytes,
}

#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    permits: Arc<Semaphore>,
    status: Arc<Status>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

impl KafkaSink {
    pub fn new(
        config: &KafkaConfig,
        max_in_flight: usize,
        status: Arc<Status>,
    ) -> Result<Self, SinkError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", "lz4")
            .set("linger.ms", config.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            // Our semaphore is the real bound; librdkafka's queue only has to
            // hold what the semaphore lets through.
            .set(
                "queue.buffering.max.messages",
                (max_in_flight + 1_000).to_string(),
            )
            .set("client.id", "quantrac-ingest");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        let producer: FutureProducer = cc.create().map_err(|e| SinkError::Create(e.to_string()))?;
        Ok(Self {
            producer,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            status,
        })
    }

    /// Hands the records to Kafka and returns a future of their
    /// acknowledgement. Waits (without bound) for room in the in-flight
    /// window: that wait is the back-pressure.
    ///
    /// Records are enqueued in order before this returns, so two calls made
    /// one after the other keep their order within a partition.
    pub async fn send(&self, records: &[OutRecord]) -> Result<Acks, SinkError> {
        let n = u32::try_from(records.len().max(1)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(n)
            .await
            .map_err(|_| SinkError::Closed)?;
        let started = Instant::now();
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            let mut record = FutureRecord::to(&r.topic)
                .key(&r.key[..])
                .payload(&r.payload[..]);
            // send_result fails only when librdkafka's own queue is full,
            // which our semaphore makes rare; wait briefly and retry then.
            let fut = loop {
                match self.producer.send_result(record) {
                    Ok(f) => break f,
                    Err((e, rec)) => {
                        record = rec;
                        tracing::debug!(error = %e, "librdkafka queue full, waiting");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            };
            futures.push((Arc::clone(&r.topic), fut));
        }
        self.status.in_flight_add(i64::from(n));
        Ok(Acks {
            futures,
            permit,
            started,
            status: Arc::clone(&self.status),
            n,
        })
    }

    /// Waits up to `timeout` for enqueued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "Kafka flush on shutdown did not finish");
        }
    }
}

/// The pending acknowledgement of records handed to [`KafkaSink::send`].
#[must_use = "records are acknowledged only when this resolves"]
pub struct Acks {
    futures: Vec<(Arc<str>, rdkafka::producer::DeliveryFuture)>,
    permit: OwnedSemaphorePermit,
    started: Instant,
    status: Arc<Status>,
    n: u32,
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acks")
            .field("records", &self.futures.len())
            .finish()
    }
}

impl Acks {
    /// Resolves when Kafka acknowledged every record, or with the first failure.
    pub async fn wait(self) -> Result<(), SinkError> {
        let Acks {
            futures,
            permit,
            started,
            status,
            n,
        } = self;
        let mut result = Ok(());
        for (topic, fut) in futures {
            let outcome = match fut.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(SinkError::Delivery {
                    topic: topic.to_string(),
                    reason: e.to_string(),
                }),
                Err(_) => Err(SinkError::Delivery {
                    topic: topic.to_string(),
                    reason: "producer dropped".into(),
                }),
            };
            if result.is_ok() {
                result = outcome;
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
