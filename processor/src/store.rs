//! The processor's database side: one connection (re-established after a
//! failure), batch writes in one transaction through
//! [`quantrac_db::readings`], the registry written at start, and retention
//! on plain PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use quantrac_db::{
    ConnectOptions, DbError, ReadingRow, ReportedRow, SchemaInfo, SchemaOptions, WriteMethod,
};
use quantrac_proto::registry::Registry;
use quantrac_proto::v1::RejectedReading;
use tokio_postgres::Client;

pub type StoreError = DbError;

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// New rows in `readings`.
    pub inserted: u64,
    /// Readings already stored, identical (redelivery, replay).
    pub duplicates: u64,
    /// Readings already stored with a different value, kept as conflicts.
    pub conflicts: u64,
    /// New rows in `rejected_readings`.
    pub rejected: u64,
    /// New frame digests in `raw_frames`.
    pub frames: u64,
}

#[derive(Debug)]
pub struct Store {
    url: String,
    options: ConnectOptions,
    client: Option<Client>,
    method: WriteMethod,
    /// Single-node mode: the batch the next writes record as not judged.
    unjudged: Option<i64>,
    /// Queue each stored time for the national feed (`quantrac_db::forward`).
    forward: bool,
    /// Commit without waiting for the WAL flush (`storage.async_commit`;
    /// see `quantrac_db::durable`).
    async_commit: bool,
    /// Whether the current connection has `synchronous_commit` off.
    session_async: bool,
}

/// Tables kept no longer than `storage.retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// Plain PostgreSQL only: TimescaleDB's retention policy drops chunks.
    Readings,
    /// By when they were rejected.
    Rejected,
    /// By the event's time.
    StationEvents,
    /// By reception.
    RawFiles,
    /// By reception.
    RawFrames,
}

impl Expiring {
    /// Its metrics label (the table), row key and time column.
    pub fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Expiring::Readings => ("readings", "ctid", "measured_at"),
            Expiring::Rejected => ("rejected_readings", "key", "rejected_at"),
            Expiring::StationEvents => ("station_events", "ctid", "at"),
            Expiring::RawFiles => ("raw_files", "ctid", "received_at"),
            Expiring::RawFrames => ("raw_frames", "ctid", "received_at"),
        }
    }
}

impl Store {
    /// Connects and applies the migrations.
    pub async fn open(
        url: &str,
        options: &ConnectOptions,
        schema: &SchemaOptions,
        method: WriteMethod,
    ) -> Result<(Self, SchemaInfo), StoreError> {
        let client = quantrac_db::connect(url, options).await?;
        let info = quantrac_db::schema::migrate(&client, schema).await?;
        Ok((
            Self {
                url: url.to_owned(),
                options: *options,
                client: Some(client),
                method,
                unjudged: None,
                forward: false,
                async_commit: false,
                session_async: false,
            },
            info,
        ))
    }

    /// Another store on the same database, connecting on first use (the
    /// schema is already migrated).
    pub fn sibling(&self) -> Self {
        Self {
            url: self.url.clone(),
            options: self.options,
            client: None,
            method: self.method,
            unjudged: None,
            forward: self.forward,
            async_commit: self.async_commit,
            session_async: false,
        }
    }

    /// Whether each write also queues its stations' times for the feed to
    /// the national system, in the same transaction (`storage.forward`).
    pub fn set_forward(&mut self, forward: bool) {
        self.forward = forward;
    }

    /// Whether this store's transactions commit without waiting for the
    /// WAL flush. Only for a caller that stores its progress once
    /// `quantrac_db::durable` says the writes are on disk.
    pub fn set_async_commit(&mut self, on: bool) {
        self.async_commit = on;
    }

    /// The WAL insert position, past every commit made so far on this
    /// store's connection (`quantrac_db::durable::Mark`).
    pub async fn wal_insert_lsn(&mut self) -> Result<i64, StoreError> {
        quantrac_db::durable::insert_lsn(&*self.client().await?).await
    }

    /// Single-node mode: the writes that follow record their readings as
    /// not judged yet under `batch` (`quantrac_db::pending`), in the same
    /// transaction; `None` (Kafka mode): they do not.
    pub fn set_unjudged_batch(&mut self, batch: Option<i64>) {
        self.unjudged = batch;
    }

    /// The live connection, reconnecting when the previous one broke.
    pub async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let c = quantrac_db::connect(&self.url, &self.options).await?;
            tracing::info!("reconnected to the database");
            self.client = Some(c);
            self.session_async = false;
        }
        if self.async_commit != self.session_async {
            let setting = if self.async_commit { "off" } else { "on" };
            if let Some(c) = &self.client {
                c.batch_execute(&format!("SET synchronous_commit = {setting}"))
                    .await?;
            }
            self.session_async = self.async_commit;
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Schema("no connection".into()))
    }

    /// Writes one batch in one transaction: readings (duplicates skipped)
    /// and rejected readings (replays skipped). Either all of it is stored
    /// or none of it.
    pub async fn write(
        &mut self,
        readings: &[ReadingRow],
        rejected: &[RejectedReading],
        frames: &[quantrac_db::events::FrameRow],
    ) -> Result<WriteOutcome, StoreError> {
        let (method, unjudged, forward) = (self.method, self.unjudged, self.forward);
        let client = self.client().await?;
        let mut tx = client.transaction().await?;
        let written = if method == WriteMethod::Copy {
            match quantrac_db::readings::copy_direct(&tx, readings).await? {
                Some(n) => quantrac_db::readings::Written {
                    inserted: n,
                    conflicts: 0,
                },
                None => {
                    // The batch meets stored rows and the failed COPY
                    // aborted the transaction, before anything else was
                    // written in it: again, through staging.
                    tx.rollback().await?;
                    tx = client.transaction().await?;
                    quantrac_db::readings::copy_staged(&mut tx, readings).await?
                }
            }
        } else {
            quantrac_db::readings::write(&mut tx, readings, method).await?
        };
        if let Some(batch) = unjudged {
            quantrac_db::pending::record(&tx, batch, readings).await?;
        }
        if forward {
            quantrac_db::forward::enqueue(&tx, readings).await?;
        }
        let rejected_new = quantrac_db::readings::insert_rejected(&tx, rejected).await?;
        // In the same commit: a second transaction per batch for the
        // digests cost PostgreSQL a second WAL flush per batch.
        let frames_new = quantrac_db::events::write_frames(&tx, frames).await?;
        tx.commit().await?;
        Ok(WriteOutcome {
            frames: frames_new,
            inserted: written.inserted,
            duplicates: (readings.len() as u64 - written.inserted)
                .saturating_sub(written.conflicts),
            conflicts: written.conflicts,
            rejected: rejected_new,
        })
    }

    /// Writes loggers' own aggregates (duplicates skipped); the new rows.
    pub async fn write_reported(&mut self, rows: &[ReportedRow]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        let tx = client.transaction().await?;
        let n = quantrac_db::readings::write_reported(&tx, rows).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Writes the registry to its tables; changes are audited under
    /// `actor`.
    pub async fn sync_registry(
        &mut self,
        registry: &Registry,
        actor: &str,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        quantrac_db::registry::sync_as(client, registry, actor).await
    }

    /// Station events (idempotent); the new rows.
    pub async fn write_events(
        &mut self,
        rows: &[quantrac_db::events::EventRow],
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        quantrac_db::events::write(client, rows).await
    }

    /// Frame digests (idempotent); the new rows.
    pub async fn write_frames(
        &mut self,
        frames: &[quantrac_db::events::FrameRow],
    ) -> Result<u64, StoreError> {
        if frames.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        quantrac_db::events::write_frames(client, frames).await
    }

    /// Uploaded files (idempotent); the new rows.
    pub async fn write_files(
        &mut self,
        files: &[quantrac_db::events::FileRow],
    ) -> Result<u64, StoreError> {
        if files.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        quantrac_db::events::write_files(client, files).await
    }

    /// Newer readings into `latest_readings`.
    pub async fn upsert_latest(
        &mut self,
        rows: &[quantrac_db::ReadingRow],
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        quantrac_db::readings::upsert_latest(client, rows).await
    }

    /// `latest_readings` brought up to date from `readings`.
    pub async fn seed_latest(&mut self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        quantrac_db::readings::seed_latest(client).await
    }

    /// Re-materializes `view` (a continuous aggregate) over all time up to
    /// `end`: what was invalidated by late writes, and new whole buckets.
    pub async fn refresh_rollup(
        &mut self,
        view: &'static str,
        end: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        // CALL takes no bind parameters; `end` is our own timestamp.
        client
            .batch_execute(&format!(
                "CALL refresh_continuous_aggregate('{view}', NULL, '{}'::timestamptz)",
                end.to_rfc3339()
            ))
            .await?;
        Ok(())
    }

    /// Deletes `table`'s rows past `retention` in slices of 10,000, so a
    /// long backlog never holds one huge lock.
    pub async fn delete_expired(
        &mut self,
        table: Expiring,
        retention: Duration,
    ) -> Result<u64, StoreError> {
        let (name, key, time) = table.columns();
        self.delete_before(
            &format!(
                "DELETE FROM {name} WHERE {key} IN \
                 (SELECT {key} FROM {name} WHERE {time} < $1 LIMIT 10000)"
            ),
            retention,
        )
        .await
    }

    /// Runs `sql` (deleting at most 10,000 rows older than `$1`) until it
    /// deletes fewer.
    async fn delete_before(&mut self, sql: &str, retention: Duration) -> Result<u64, StoreError> {
        let cutoff = Utc::now()
            - chrono::Duration::seconds(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 2));
        let client = self.client().await?;
        let mut total = 0;
        loop {
            let n = client.execute(sql, &[&cutoff]).await?;
            total += n;
            if n < 10_000 {
                return Ok(total);
            }
        }
    }
}
