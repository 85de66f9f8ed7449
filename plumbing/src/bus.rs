//! The in-process bus of single-node mode: what Kafka carries between ingest
//! and the processor when both run in one process.
//!
//! A sender hands over a batch of records with a one-shot reply; the
//! receiver answers only once the records are durable (stored in the
//! database), which is what lets ingest keep its rule of acknowledging a
//! station only after its reading is safe. The channel is bounded: a slow
//! database slows the stations down.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// One record, as it would be on a Kafka topic.
#[derive(Debug, Clone)]
pub struct BusRecord {
    pub topic: Arc<str>,
    pub key: Bytes,
    pub payload: Bytes,
}

/// Why the receiver did not make a batch durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The receiver tried and failed; `retryable` says whether sending the
    /// same records again later can succeed (the database was down) or not.
    #[error("the records were not stored: {reason}")]
    NotStored { reason: String, retryable: bool },
    /// The receiver stopped before answering; the records may be resent
    /// after a restart.
    #[error("the receiver stopped before storing the records")]
    Stopped,
}

impl BusError {
    /// Whether sending the same records again later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::NotStored { retryable, .. } => *retryable,
            BusError::Stopped => true,
        }
    }
}

/// Records handed over together, and where to say they are safe (or why not).
#[derive(Debug)]
pub struct BusBatch {
    pub records: Vec<BusRecord>,
    pub done: oneshot::Sender<Result<(), BusError>>,
}

pub type BusSender = mpsc::Sender<BusBatch>;
pub type BusReceiver = mpsc::Receiver<BusBatch>;

/// A bus holding at most `capacity` batches in transit.
pub fn channel(capacity: usize) -> (BusSender, BusReceiver) {
    mpsc::channel(capacity.max(1))
}
