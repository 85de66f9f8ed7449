//! Single-node mode: the processor fed by the in-process bus instead of
//! Kafka, in the same process as ingest.
//!
//! Each bus batch is answered only after its records are committed to the
//! database, so ingest acknowledges a station only once its reading is
//! stored (invariant 1 without Kafka). Batches already waiting on the bus
//! are written together, without waiting for more: under load the batches
//! grow, at low rate the answer is immediate. Ingest's rejections (raw
//! bytes + reason) go to `rejected_readings` in the same transaction.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use prost::Message;
use quantrac_plumbing::bus::{BusBatch, BusError, BusReceiver};
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::v1::{RejectedInput, RejectedReading, StoredReadingBatch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ProcessorError;
use crate::config::ProcessorConfig;
use crate::pipeline::InRecord;
use crate::worker::Worker;

/// The processor's side of single-node mode.
#[derive(Debug)]
pub struct LocalBus {
    /// Records from ingest.
    pub input: BusReceiver,
    /// Where stored readings go next (the alerting engine), in place of
    /// the `readings.valid` topic. Bounded: a slow engine slows the bus.
    pub stored: Option<mpsc::Sender<StoredReadingBatch>>,
}

/// Position of a bus record, unique across restarts (microseconds since the
/// epoch at start, then a counter), standing in for a Kafka offset in
/// rejection keys.
struct Positions(i64);

impl Positions {
    fn next(&mut self) -> i64 {
        self.0 += 1;
        self.0
    }
}

fn ingest_rejection(topic: &str, offset: i64, payload: &Bytes) -> RejectedReading {
    let input = RejectedInput::decode(&payload[..]).unwrap_or_else(|e| RejectedInput {
        raw: payload.to_vec(),
        reason: "undecodable".into(),
        detail: e.to_string(),
        ..Default::default()
    });
    let (mut detail, mut station_id) = (input.detail, input.station_id);
    crate::pipeline::no_nul(&mut detail);
    crate::pipeline::no_nul(&mut station_id);
    let mut reason = input.reason;
    crate::pipeline::no_nul(&mut reason);
    RejectedReading {
        raw: input.raw,
        reason,
        detail,
        station_id,
        parameter: String::new(),
        measured_at: None,
        source_topic: topic.to_owned(),
        source_partition: -1,
        source_offset: offset,
        rejected_at: Some(to_timestamp(Utc::now())),
        key: format!("{topic}/bus/{offset}"),
    }
}

/// Runs until `shutdown` or until every bus sender is gone.
pub async fn run(
    config: Arc<ProcessorConfig>,
    mut worker: Worker,
    local: LocalBus,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let LocalBus {
        input: mut bus,
        stored,
    } = local;
    let raw_topic: Arc<str> = config.kafka.raw_topic.as_str().into();
    let mut positions = Positions(Utc::now().timestamp_micros());
    loop {
        // Biased: what is already on the bus is answered before stopping.
        let first = tokio::select! {
            biased;
            b = bus.recv() => match b { Some(b) => b, None => break },
            () = shutdown.cancelled() => break,
        };
        let mut batches: Vec<BusBatch> = vec![first];
        let mut records = batches[0].records.len();
        while records < config.batch.max_readings {
            match bus.try_recv() {
                Ok(b) => {
                    records += b.records.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let mut readings = Vec::new();
        let mut rejected = Vec::new();
        for record in batches.iter().flat_map(|b| &b.records) {
            let offset = positions.next();
            if record.topic == raw_topic {
                readings.push(InRecord {
                    topic: Arc::clone(&raw_topic),
                    partition: -1,
                    offset,
                    payload: record.payload.clone(),
                });
            } else {
                rejected.push(ingest_rejection(&record.topic, offset, &record.payload));
            }
        }
        // The write records its readings as not judged yet (alert_pending)
        // under a number that is unique across restarts; alerting clears
        // it once judged, and a restart judges what is left, however late.
        let unjudged = positions.next();
        worker.set_unjudged_batch(stored.as_ref().map(|_| unjudged));
        let outcome = worker.store(&readings, rejected, &shutdown).await;
        let answer = match &outcome {
            Ok(_) => Ok(()),
            Err(ProcessorError::ShuttingDown) => Err(BusError::Stopped),
            Err(e) => Err(BusError::NotStored {
                reason: e.to_string(),
                retryable: e.is_retryable(),
            }),
        };
        for b in batches {
            // The sender may have given up (connection closed): nothing to do.
            let _ = b.done.send(answer.clone());
        }
        if let (Ok(checked), Some(next)) = (&outcome, &stored) {
            for (_, payload) in crate::pipeline::valid_records(&checked.valid) {
                // Re-decoding is cheap and keeps one encoder for both modes.
                let Ok(mut batch) = StoredReadingBatch::decode(&payload[..]) else {
                    continue;
                };
                batch.unjudged_batch = unjudged;
                if next.send(batch).await.is_err() {
                    tracing::warn!("alerting engine stopped; stored readings are not evaluated");
                }
            }
        }
        match outcome {
            Ok(_) => {}
            Err(ProcessorError::ShuttingDown) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
