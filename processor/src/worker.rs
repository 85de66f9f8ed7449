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
use crate::store::{Store, WriteOutcome};
use crate::validate::Normalised;
use crate::validate::ValidationConfig;
use prost::Message as _;
use quantrac_db::DbError as StoreError;
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::qc::RejectReason;
use quantrac_proto::registry::Registry;
use quantrac_proto::v1::RejectedReading;

#[derive(Debug)]
pub struct Worker {
    store: Store,
    registry: Arc<Registry>,
    validation: ValidationConfig,
    batch: BatchConfig,
    status: Arc<Status>,
    latest: Arc<crate::latest::Latest>,
}

impl Worker {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        config: &ProcessorConfig,
        status: Arc<Status>,
        latest: Arc<crate::latest::Latest>,
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
            latest,
        }
    }

    /// Validates and stores `records` in one transaction. Returns once
    /// committed; retries transient failures until `shutdown`.
    ///
    /// `also_rejected` are rejections made before the processor (ingest's,
    /// in single-node mode), stored in the same transaction.
    /// Single-node mode: see [`Store::set_unjudged_batch`].
    pub fn set_unjudged_batch(&mut self, batch: Option<i64>) {
        self.store.set_unjudged_batch(batch);
    }

    /// The WAL position past this worker's commits so far.
    pub async fn wal_insert_lsn(&mut self) -> Result<i64, StoreError> {
        self.store.wal_insert_lsn().await
    }

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
            match self
                .store
                .write(&checked.valid, &checked.rejected, &checked.frames)
                .await
            {
                Ok(o) => {
                    metrics::histogram!("processor_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    self.status.set_db_failing(false);
                    // Committed with the readings; not written again below.
                    checked.frames.clear();
                    metrics::counter!("processor_raw_frames_stored_total").increment(o.frames);
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
                // Not the database's state but a row it refuses: find the
                // row, keep it as rejected, store the rest. Failing the
                // batch would stop this partition for good (a crash loop).
                Err(e) => {
                    tracing::error!(error = %e, readings = checked.valid.len(), "database refused the batch; isolating the refused rows");
                    match self.isolate(&mut checked).await {
                        Ok(o) => break o,
                        // The database went away meanwhile: retry the
                        // whole batch (writes are idempotent).
                        Err(e) if e.is_transient() => {
                            self.status.set_db_failing(true);
                            tokio::select! {
                                () = shutdown.cancelled() => return Err(ProcessorError::ShuttingDown),
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(self.batch.max_backoff);
                        }
                        Err(e) => return Err(ProcessorError::Store(e)),
                    }
                }
            }
        };
        self.latest.observe(&checked.valid);
        // The loggers' own aggregates, after the readings: written
        // idempotently, so a crash in between only writes them on replay.
        let reported = self.store_reported(&mut checked, shutdown).await?;
        self.store_events(&mut checked, shutdown).await?;
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!("processor_batch_readings").record(checked.readings() as f64);
        self.status.batch_done(
            checked.readings() as u64,
            outcome.inserted + reported,
            outcome.duplicates,
            checked.rejected.len() as u64,
        );
        tracing::debug!(
            readings = checked.readings(),
            inserted = outcome.inserted,
            duplicates = outcome.duplicates,
            conflicts = outcome.conflicts,
            rejected = checked.rejected.len(),
            "batch committed"
        );
        Ok(checked)
    }
}

impl Worker {
    /// Stores the batch's reported aggregates, retrying while the database
    /// is away; a row it refuses is kept as a `storage_refused` rejection
    /// rather than stopping the partition.
    async fn store_reported(
        &mut self,
        checked: &mut Checked,
        shutdown: &CancellationToken,
    ) -> Result<u64, ProcessorError> {
        let mut backoff = self.batch.min_backoff;
        loop {
            match self.store.write_reported(&checked.reported).await {
                Ok(n) => {
                    metrics::counter!("processor_reported_stored_total").increment(n);
                    return Ok(n);
                }
                Err(e) if e.is_transient() => {
                    self.status.set_db_failing(true);
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(ProcessorError::ShuttingDown),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.batch.max_backoff);
                }
                Err(e) => {
                    tracing::error!(error = %e, "database refused reported aggregates; storing them one by one");
                    let mut stored = 0;
                    for row in std::mem::take(&mut checked.reported) {
                        match self.store.write_reported(std::slice::from_ref(&row)).await {
                            Ok(n) => {
                                stored += n;
                                checked.reported.push(row);
                            }
                            Err(e) if e.is_transient() => return Err(ProcessorError::Store(e)),
                            Err(e) => {
                                let refused = reported_refusal(&row, &e);
                                self.store
                                    .write(&[], std::slice::from_ref(&refused), &[])
                                    .await
                                    .map_err(ProcessorError::Store)?;
                                checked.rejected.push(refused);
                            }
                        }
                    }
                    return Ok(stored);
                }
            }
        }
    }

    /// Stores the batch's station events and uploaded files, retrying
    /// while the database is away; what it refuses is kept as
    /// `storage_refused` rejections (a notice, a file, is evidence too)
    /// rather than stopping the partition.
    async fn store_events(
        &mut self,
        checked: &mut Checked,
        shutdown: &CancellationToken,
    ) -> Result<(), ProcessorError> {
        let mut backoff = self.batch.min_backoff;
        loop {
            let written = match self.store.write_events(&checked.events).await {
                Ok(events) => match self.store.write_files(&checked.files).await {
                    Ok(files) => self
                        .store
                        .write_frames(&checked.frames)
                        .await
                        .map(|frames| (events, files, frames)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match written {
                Ok((events, files, frames)) => {
                    metrics::counter!("processor_station_events_stored_total").increment(events);
                    metrics::counter!("processor_raw_files_stored_total").increment(files);
                    metrics::counter!("processor_raw_frames_stored_total").increment(frames);
                    return Ok(());
                }
                Err(e) if e.is_transient() => {
                    self.status.set_db_failing(true);
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(ProcessorError::ShuttingDown),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.batch.max_backoff);
                }
                Err(e) => {
                    tracing::error!(error = %e, events = checked.events.len(), "database refused station events; keeping them as rejected");
                    let mut refused: Vec<RejectedReading> = std::mem::take(&mut checked.events)
                        .iter()
                        .map(|ev| event_refusal(ev, &e))
                        .collect();
                    refused.extend(
                        std::mem::take(&mut checked.files)
                            .into_iter()
                            .map(|f| file_refusal(f, &e)),
                    );
                    // Digests carry nothing the database can refuse (NULs are
                    // replaced); should it refuse them all the same, they are
                    // counted, the readings stay.
                    let frames = std::mem::take(&mut checked.frames).len();
                    if frames > 0 {
                        metrics::counter!("processor_raw_frames_refused_total")
                            .increment(frames as u64);
                    }
                    self.store
                        .write(&[], &refused, &[])
                        .await
                        .map_err(ProcessorError::Store)?;
                    checked.rejected.extend(refused);
                    return Ok(());
                }
            }
        }
    }

    /// Writes a batch the database refused as a whole: its rejections
    /// first, then its readings by halves, down to single rows; a reading
    /// refused alone moves to `checked.rejected` as `storage_refused`.
    /// Earlier writes are committed and idempotent, so a transient error
    /// part-way is retried by writing the whole batch again.
    async fn isolate(&mut self, checked: &mut Checked) -> Result<WriteOutcome, StoreError> {
        let mut outcome = WriteOutcome::default();
        let mut refused_rejections = Vec::new();
        for r in &checked.rejected {
            match self.store.write(&[], std::slice::from_ref(r), &[]).await {
                Ok(o) => outcome.rejected += o.rejected,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => refused_rejections.push((r.clone(), e.to_string())),
            }
        }
        // A rejection the database refuses keeps its raw bytes and reason,
        // without the fields that can be out of its range.
        for (mut r, error) in refused_rejections {
            r.measured_at = None;
            r.rejected_at = None;
            r.detail = format!("{} (stored without its times: {error})", r.detail);
            match self.store.write(&[], std::slice::from_ref(&r), &[]).await {
                Ok(o) => outcome.rejected += o.rejected,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    metrics::counter!("processor_unstorable_total").increment(1);
                    tracing::error!(error = %e, reason = %r.reason, "a rejection the database refuses even without its times; counted, not stored");
                }
            }
        }
        let mut pending = vec![std::mem::take(&mut checked.valid)];
        let mut stored = Vec::new();
        while let Some(rows) = pending.pop() {
            match self.store.write(&rows, &[], &[]).await {
                Ok(o) => {
                    outcome.inserted += o.inserted;
                    outcome.duplicates += o.duplicates;
                    outcome.conflicts += o.conflicts;
                    stored.extend(rows);
                }
                Err(e) if e.is_transient() => {
                    checked.valid = restored(stored, rows, pending);
                    return Err(e);
                }
                Err(e) if rows.len() == 1 => {
                    let refused = refusal(&rows[0], &e);
                    metrics::counter!("processor_rejected_total", "reason" => RejectReason::StorageRefused.as_str()).increment(1);
                    tracing::error!(station = %rows[0].station_id, parameter = %rows[0].parameter, error = %e, "reading refused by the database; kept as rejected");
                    match self
                        .store
                        .write(&[], std::slice::from_ref(&refused), &[])
                        .await
                    {
                        Ok(o) => outcome.rejected += o.rejected,
                        Err(e) if e.is_transient() => {
                            checked.valid = restored(stored, rows, pending);
                            return Err(e);
                        }
                        Err(e) => {
                            metrics::counter!("processor_unstorable_total").increment(1);
                            tracing::error!(error = %e, "its rejection is refused too; counted, not stored");
                        }
                    }
                    checked.rejected.push(refused);
                }
                Err(_) => {
                    let mut rows = rows;
                    let second = rows.split_off(rows.len() / 2);
                    // Popped last-in first: the first half first, in order.
                    pending.push(second);
                    pending.push(rows);
                }
            }
        }
        checked.valid = stored;
        Ok(outcome)
    }
}

/// Every reading of a batch being isolated, for the whole batch to be
/// written again after a transient error.
fn restored(
    stored: Vec<Normalised>,
    current: Vec<Normalised>,
    pending: Vec<Vec<Normalised>>,
) -> Vec<Normalised> {
    stored
        .into_iter()
        .chain(current)
        .chain(pending.into_iter().flatten())
        .collect()
}

/// A reported aggregate the database refused, as a rejection.
fn reported_refusal(row: &quantrac_db::ReportedRow, e: &StoreError) -> RejectedReading {
    let reading = quantrac_proto::v1::Reading {
        station_id: row.station_id.clone(),
        parameter: row.parameter.clone(),
        value: row.avg,
        unit: row.unit.clone(),
        measured_at: Some(to_timestamp(row.period_start)),
        source: row.source,
        ingest_id: row.ingest_id.clone(),
        min: row.min,
        max: row.max,
        total: row.total,
        ..Default::default()
    };
    // Unique per record even without an ingest id.
    let key = format!(
        "reported/{}/{}/{}/{}",
        row.station_id,
        row.parameter,
        row.kind,
        row.period_start.to_rfc3339()
    );
    storage_refused(
        &reading.station_id,
        &reading.parameter,
        reading.encode_to_vec(),
        key,
        e.to_string(),
    )
}

/// A station event the database refused, as a rejection.
fn event_refusal(ev: &quantrac_db::events::EventRow, e: &StoreError) -> RejectedReading {
    let raw = format!(
        "{} {} {} {}",
        ev.station_id,
        ev.code,
        ev.at.to_rfc3339(),
        ev.detail
    );
    let key = format!("event/{}/{}/{}", ev.station_id, ev.code, ev.at.to_rfc3339());
    storage_refused(&ev.station_id, "", raw.into_bytes(), key, e.to_string())
}

/// An uploaded file the database refused, as a rejection: its bytes.
fn file_refusal(f: quantrac_db::events::FileRow, e: &StoreError) -> RejectedReading {
    let key = format!(
        "file/{}/{}/{}",
        f.station_id,
        f.name,
        f.received_at.to_rfc3339()
    );
    let detail = format!("file {}: {e}", f.name);
    storage_refused(&f.station_id, "", f.content, key, detail)
}

/// A reading the database refused, as a rejection: the reading as it was
/// validated, the database's reason, and no time (it may be what was
/// refused).
fn refusal(row: &Normalised, e: &StoreError) -> RejectedReading {
    let reading = quantrac_proto::v1::Reading {
        station_id: row.station_id.clone(),
        parameter: row.parameter.clone(),
        value: row.value,
        unit: row.unit.clone(),
        measured_at: Some(to_timestamp(row.measured_at)),
        status: quantrac_proto::v1::DeviceStatus::from(row.status) as i32,
        device_flag: row.device_flag.clone(),
        source: row.source,
        received_at: row.received_at.map(to_timestamp),
        ingest_id: row.ingest_id.clone(),
        ..Default::default()
    };
    // A replay of the same reading finds the same key.
    let key = if row.ingest_id.is_empty() {
        format!(
            "{}/{}/{}",
            row.station_id,
            row.parameter,
            row.measured_at.timestamp_micros()
        )
    } else {
        row.ingest_id.clone()
    };
    storage_refused(
        &reading.station_id,
        &reading.parameter,
        reading.encode_to_vec(),
        key,
        e.to_string(),
    )
}

/// The rejection of what the database refused: the record's bytes as it
/// was, the database's reason, and no time (it may be what was refused).
fn storage_refused(
    station: &str,
    parameter: &str,
    raw: Vec<u8>,
    key: String,
    detail: String,
) -> RejectedReading {
    RejectedReading {
        reason: RejectReason::StorageRefused.as_str().to_owned(),
        detail,
        station_id: station.to_owned(),
        parameter: parameter.to_owned(),
        measured_at: None,
        key,
        raw,
        ..Default::default()
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
