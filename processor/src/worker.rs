//! Validates a batch and writes it to the database, retrying with backoff
//! while the database is unavailable. Shared by the Kafka consumer and the
//! single-node bus.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::ProcessorError;
use crate::config::{BatchConfig, ProcessorConfig};
use crate::pipeline::{self, Checked, InRecord};
use crate::status::Status;
use crate::store::Store;
use crate::validate::ValidationConfig;
use quantrac_proto::qc::RejectReason;
use quantrac_proto::registry::Registry;

#[derive(Debug)]
pub struct Worker {
    store: Store,
    registry: Arc<Registry>,
    validation: ValidationConfig,
    batch: BatchConfig,
    status: Arc<Status>,
}

impl Worker {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        config: &ProcessorConfig,
        status: Arc<Status>,
    ) -> Self {
        let validation = ValidationConfig {
            max_future: config.validation.max_future,
            retention: config.storage.retention,
        };
        Self {
            store,
            registry,
            validation,
            batch: config.batch.clone(),
            status,
        }
    }

    /// Validates and stores `records` in one transaction. Returns once
    /// committed; retries transient failures until `shutdown`.
    ///
    /// `also_rejected` are rejections made before the processor (ingest's,
    /// in single-node mode), stored in the same transaction.
    pub async fn store(
        &mut self,
        records: &[InRecord],
        also_rejected: Vec<quantrac_proto::v1::RejectedReading>,
        shutdown: &CancellationToken,
    ) -> Result<Checked, ProcessorError> {
        let mut checked = pipeline::check(records, &self.registry, &self.validation, Utc::now());
        checked.rejected.extend(also_rejected);
        for r in &checked.rejected {
            metrics::counter!("processor_rejected_total", "reason" => reason_label(&r.reason))
                .increment(1);
        }
        let mut backoff = self.batch.min_backoff;
        let outcome = loop {
            let started = Instant::now();
            match self.store.write(&checked.valid, &checked.rejected).await {
                Ok(o) => {
                    metrics::histogram!("processor_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    self.status.set_db_failing(false);
                    break o;
                }
                Err(e) if e.is_transient() => {
                    self.status.set_db_failing(true);
                    metrics::counter!("processor_db_errors_total").increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "database write failed; pausing consumption");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(ProcessorError::ShuttingDown),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.batch.max_backoff);
                }
                Err(e) => return Err(ProcessorError::Store(e)),
            }
        };
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!("processor_batch_readings").record(checked.readings() as f64);
        self.status.batch_done(
            checked.readings() as u64,
            outcome.inserted,
            outcome.duplicates,
            checked.rejected.len() as u64,
        );
        tracing::debug!(
            readings = checked.readings(),
            inserted = outcome.inserted,
            duplicates = outcome.duplicates,
            rejected = checked.rejected.len(),
            "batch committed"
        );
        Ok(checked)
    }
}

/// Bounded label set: the processor's reasons are a fixed list; anything
/// else is folded into "ingest" (ingest's own reasons in single-node mode,
/// whose detail ingest's metric has) or "other".
fn reason_label(reason: &str) -> &'static str {
    match RejectReason::parse(reason) {
        Some(r) => r.as_str(),
        None if reason.contains('.') => "ingest",
        None => "other",
    }
}
