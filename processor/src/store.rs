//! The database side: connection (re-established after a failure), batch
//! writes idempotent on (station, parameter, measured_at), rejected
//! readings, and the registry tables.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::pin_mut;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::RejectedReading;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use crate::config::{StorageConfig, WriteMethod};
use crate::schema::{self, SchemaInfo};
use crate::validate::Normalised;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("schema: {0}")]
    Schema(String),
}

/// The server's message when there is one: tokio-postgres's own Display
/// says only "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{} ({}){}",
            d.message(),
            d.code().code(),
            d.detail().map(|x| format!(": {x}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

impl StoreError {
    /// Whether retrying later can help (connection trouble, server
    /// restarting) as opposed to a bug or a schema mismatch.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => is_transient(e),
            StoreError::Schema(_) => false,
        }
    }
}

/// Whether a database error may go away by waiting: connection trouble,
/// a server restarting or short of resources, a serialization conflict.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error().is_none_or(|d| {
            let c = d.code().code();
            // 08 connection, 53 resources, 57 operator intervention
            // (shutdown), 40 serialization/deadlock.
            ["08", "53", "57", "40"].iter().any(|p| c.starts_with(p))
        })
}

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// New rows in `readings`.
    pub inserted: u64,
    /// Readings already stored (redelivery, replay).
    pub duplicates: u64,
    /// New rows in `rejected_readings`.
    pub rejected: u64,
}

const READING_COLUMNS: &str = "station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source, received_at, ingest_id";

const READING_TYPES: [Type; 11] = [
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::UUID,
];

#[derive(Debug)]
pub struct Store {
    url: String,
    client: Option<Client>,
    method: WriteMethod,
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

fn status_code(s: quantrac_proto::domain::DeviceStatus) -> i16 {
    quantrac_proto::v1::DeviceStatus::from(s) as i16
}

impl Store {
    /// Connects and applies the migrations.
    pub async fn open(
        url: &str,
        storage: &StorageConfig,
    ) -> Result<(Self, SchemaInfo), StoreError> {
        let client = connect(url).await?;
        let info = schema::migrate(&client, storage).await?;
        Ok((
            Self {
                url: url.to_owned(),
                client: Some(client),
                method: storage.write_method,
            },
            info,
        ))
    }

    /// Another store on the same database, connecting on first use (the
    /// schema is already migrated).
    pub fn sibling(&self) -> Self {
        Self {
            url: self.url.clone(),
            client: None,
            method: self.method,
        }
    }

    /// The live connection, reconnecting when the previous one broke.
    pub async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let c = connect(&self.url).await?;
            tracing::info!("reconnected to the database");
            self.client = Some(c);
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
        readings: &[Normalised],
        rejected: &[RejectedReading],
    ) -> Result<WriteOutcome, StoreError> {
        let method = self.method;
        let client = self.client().await?;
        let mut tx = client.transaction().await?;
        let inserted = if readings.is_empty() {
            0
        } else {
            match method {
                WriteMethod::Copy => copy_readings(&mut tx, readings).await?,
                WriteMethod::Unnest => unnest_readings(&tx, readings).await?,
            }
        };
        let rejected_new = if rejected.is_empty() {
            0
        } else {
            insert_rejected(&tx, rejected).await?
        };
        tx.commit().await?;
        Ok(WriteOutcome {
            inserted,
            duplicates: readings.len() as u64 - inserted,
            rejected: rejected_new,
        })
    }

    /// Plain PostgreSQL has no retention policy: delete old readings in
    /// bounded slices so a long backlog never holds one huge lock.
    pub async fn delete_expired(&mut self, retention: Duration) -> Result<u64, StoreError> {
        let cutoff = Utc::now()
            - chrono::Duration::seconds(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 2));
        let client = self.client().await?;
        let mut total = 0;
        loop {
            let n = client
                .execute(
                    "DELETE FROM readings WHERE ctid IN \
                     (SELECT ctid FROM readings WHERE measured_at < $1 LIMIT 10000)",
                    &[&cutoff],
                )
                .await?;
            total += n;
            if n < 10_000 {
                return Ok(total);
            }
        }
    }
}

fn ingest_uuid(s: &str) -> Option<uuid::Uuid> {
    uuid::Uuid::parse_str(s).ok()
}

/// Binary COPY of `readings` into `table`; the rows the server took.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    readings: &[Normalised],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({READING_COLUMNS}) FROM STDIN BINARY"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &READING_TYPES);
    pin_mut!(writer);
    for r in readings {
        let status = status_code(r.status);
        let source = i16::try_from(r.source).unwrap_or(0);
        let qc = r.qc_flag.as_str();
        let id = ingest_uuid(&r.ingest_id);
        let row: [&(dyn ToSql + Sync); 11] = [
            &r.station_id,
            &r.parameter,
            &r.measured_at,
            &r.value,
            &r.unit,
            &status,
            &r.device_flag,
            &qc,
            &source,
            &r.received_at,
            &id,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await
}

/// Readings by COPY. Most batches hold only new readings: they are copied
/// straight into `readings`, inside a savepoint. A batch that meets a row
/// already stored (a replay, a logger resending) is rolled back to the
/// savepoint and goes the slower way, through a staging table and
/// `INSERT ... ON CONFLICT DO NOTHING`. The straight path does half the
/// server's work per row (measured in benches/README.md).
async fn copy_readings(
    tx: &mut tokio_postgres::Transaction<'_>,
    readings: &[Normalised],
) -> Result<u64, StoreError> {
    let direct = tx.savepoint("direct_copy").await?;
    match copy_rows(&direct, "readings", readings).await {
        Ok(n) => {
            direct.commit().await?;
            return Ok(n);
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            direct.rollback().await?;
            metrics::counter!("processor_copy_fallbacks_total").increment(1);
            tracing::debug!(
                readings = readings.len(),
                "batch holds stored readings; copying through staging"
            );
        }
        Err(e) => return Err(e.into()),
    }
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS readings_staging \
         (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
    .await?;
    copy_rows(tx, "readings_staging", readings).await?;
    let n = tx
        .execute(
            &format!(
                "INSERT INTO readings ({READING_COLUMNS}) SELECT {READING_COLUMNS} FROM readings_staging \
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await?;
    Ok(n)
}

async fn unnest_readings(
    tx: &tokio_postgres::Transaction<'_>,
    readings: &[Normalised],
) -> Result<u64, StoreError> {
    let station: Vec<&str> = readings.iter().map(|r| r.station_id.as_str()).collect();
    let parameter: Vec<&str> = readings.iter().map(|r| r.parameter.as_str()).collect();
    let measured_at: Vec<DateTime<Utc>> = readings.iter().map(|r| r.measured_at).collect();
    let value: Vec<f64> = readings.iter().map(|r| r.value).collect();
    let unit: Vec<&str> = readings.iter().map(|r| r.unit.as_str()).collect();
    let status: Vec<i16> = readings.iter().map(|r| status_code(r.status)).collect();
    let flag: Vec<&str> = readings.iter().map(|r| r.device_flag.as_str()).collect();
    let qc: Vec<&str> = readings.iter().map(|r| r.qc_flag.as_str()).collect();
    let source: Vec<i16> = readings
        .iter()
        .map(|r| i16::try_from(r.source).unwrap_or(0))
        .collect();
    let received: Vec<Option<DateTime<Utc>>> = readings.iter().map(|r| r.received_at).collect();
    let ids: Vec<Option<uuid::Uuid>> = readings.iter().map(|r| ingest_uuid(&r.ingest_id)).collect();
    let n = tx
        .execute(
            &format!(
                "INSERT INTO readings ({READING_COLUMNS}) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::text[], \
                 $6::int2[], $7::text[], $8::text[], $9::int2[], $10::timestamptz[], $11::uuid[]) \
                 ON CONFLICT DO NOTHING"
            ),
            &[&station, &parameter, &measured_at, &value, &unit, &status, &flag, &qc, &source, &received, &ids],
        )
        .await?;
    Ok(n)
}

async fn insert_rejected(
    tx: &tokio_postgres::Transaction<'_>,
    rejected: &[RejectedReading],
) -> Result<u64, StoreError> {
    let key: Vec<&str> = rejected.iter().map(|r| r.key.as_str()).collect();
    let reason: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
    let detail: Vec<&str> = rejected.iter().map(|r| r.detail.as_str()).collect();
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let station: Vec<Option<String>> = rejected.iter().map(|r| nonempty(&r.station_id)).collect();
    let parameter: Vec<Option<String>> = rejected.iter().map(|r| nonempty(&r.parameter)).collect();
    let measured_at: Vec<Option<DateTime<Utc>>> = rejected
        .iter()
        .map(|r| r.measured_at.as_ref().and_then(from_timestamp))
        .collect();
    let raw: Vec<&[u8]> = rejected.iter().map(|r| r.raw.as_slice()).collect();
    let topic: Vec<&str> = rejected.iter().map(|r| r.source_topic.as_str()).collect();
    let partition: Vec<i32> = rejected.iter().map(|r| r.source_partition).collect();
    let offset: Vec<i64> = rejected.iter().map(|r| r.source_offset).collect();
    let n = tx
        .execute(
            "INSERT INTO rejected_readings \
             (key, reason, detail, station_id, parameter, measured_at, raw, source_topic, source_partition, source_offset) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
             $7::bytea[], $8::text[], $9::int4[], $10::int8[]) \
             ON CONFLICT (key) DO NOTHING",
            &[&key, &reason, &detail, &station, &parameter, &measured_at, &raw, &topic, &partition, &offset],
        )
        .await?;
    Ok(n)
}

impl Store {
    /// Writes the registry to its tables in one transaction: stations are
    /// upserted, their parameters and limits replaced. Stations missing from
    /// the file are kept (their readings refer to them) but logged.
    pub async fn sync_registry(
        &mut self,
        registry: &crate::registry::Registry,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let tx = client.transaction().await?;
        for s in registry.stations() {
            let kind = match s.kind {
                quantrac_proto::domain::StationKind::Wastewater => "wastewater",
                quantrac_proto::domain::StationKind::Stack => "stack",
            };
            tx.execute(
                "INSERT INTO stations (id, name, facility, industrial_zone, province, latitude, longitude, kind, \
                 hj212_password, mqtt_username, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now()) \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, facility = EXCLUDED.facility, \
                 industrial_zone = EXCLUDED.industrial_zone, province = EXCLUDED.province, \
                 latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, kind = EXCLUDED.kind, \
                 hj212_password = EXCLUDED.hj212_password, mqtt_username = EXCLUDED.mqtt_username, updated_at = now()",
                &[
                    &s.id,
                    &s.name,
                    &s.facility,
                    &s.industrial_zone,
                    &s.province,
                    &s.latitude,
                    &s.longitude,
                    &kind,
                    &s.hj212_password,
                    &s.mqtt_username,
                ],
            )
            .await?;
            tx.execute(
                "DELETE FROM station_parameters WHERE station_id = $1",
                &[&s.id],
            )
            .await?;
            for p in &s.parameters {
                let interval = i32::try_from(p.expected_interval.as_secs()).unwrap_or(i32::MAX);
                tx.execute(
                    "INSERT INTO station_parameters (station_id, code, aliases, unit, range_min, range_max, expected_interval_s) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&s.id, &p.code, &p.aliases, &p.unit, &p.range_min, &p.range_max, &interval],
                )
                .await?;
            }
            tx.execute("DELETE FROM permit_limits WHERE station_id = $1", &[&s.id])
                .await?;
            for l in &s.limits {
                let coefficients = serde_json::to_value(&l.coefficients).unwrap_or_default();
                tx.execute(
                    "INSERT INTO permit_limits (station_id, parameter, effective_from, limit_min, limit_max, effective_max, \
                     regulation, column_name, coefficients) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &s.id,
                        &l.parameter,
                        &l.effective_from,
                        &l.min,
                        &l.max,
                        &l.cmax(),
                        &l.regulation,
                        &l.column.clone().unwrap_or_default(),
                        &coefficients,
                    ],
                )
                .await?;
            }
        }
        let known: Vec<&str> = registry.stations().map(|s| s.id.as_str()).collect();
        let stale = tx
            .query(
                "SELECT id FROM stations WHERE NOT (id = ANY($1))",
                &[&known],
            )
            .await?;
        for row in stale {
            tracing::warn!(
                station = row.get::<_, String>(0),
                "station in the database but not in the registry file"
            );
        }
        tx.commit().await?;
        Ok(())
    }
}
