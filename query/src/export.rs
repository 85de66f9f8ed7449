//! Open-data exports of raw readings (seed plan II.2.c): CSV and Parquet
//! with one stable, documented schema, written page by page as
//! `StreamSeries` delivers them, so an export of any size runs in flat
//! memory.
//!
//! Columns, in this order (the README documents them):
//! `station_id` (text), `parameter` (text, the catalogue code),
//! `measured_at` (UTC; Parquet: INT64 timestamp in microseconds, UTC),
//! `value` (double, in `unit`), `unit` (text), `qc_flag` (text: valid,
//! above_range, calibrating, ...), `licence` (text, the same on every row).

use std::io::Write;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::SeriesPoint;

/// The licence every exported row carries.
pub const LICENCE: &str = "CC-BY-4.0";

/// The CSV header; the Parquet schema has the same columns.
pub const CSV_HEADER: &str = "station_id,parameter,measured_at,value,unit,qc_flag,licence";

const SCHEMA: &str = "message quantrac_reading {
  REQUIRED BYTE_ARRAY station_id (STRING);
  REQUIRED BYTE_ARRAY parameter (STRING);
  REQUIRED INT64 measured_at (TIMESTAMP(MICROS,true));
  REQUIRED DOUBLE value;
  REQUIRED BYTE_ARRAY unit (STRING);
  REQUIRED BYTE_ARRAY qc_flag (STRING);
  REQUIRED BYTE_ARRAY licence (STRING);
}";

/// Rows per Parquet row group: large enough for good compression, small
/// enough to hold in memory (about 8 MB).
pub const ROW_GROUP: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("a point without a measurement time (parameter {0})")]
    NoTime(String),
}

/// Where exported rows go.
pub enum Sink<W: Write + Send> {
    Csv(W),
    Parquet {
        // Boxed: the writer is large beside a CSV sink.
        writer: Box<SerializedFileWriter<W>>,
        /// Rows waiting for a full row group, each with its station.
        buffered: Vec<(Arc<str>, SeriesPoint)>,
    },
}

impl<W: Write + Send> std::fmt::Debug for Sink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Csv(_) => "Sink::Csv",
            Sink::Parquet { .. } => "Sink::Parquet",
        })
    }
}

fn csv_field(c: &str) -> std::borrow::Cow<'_, str> {
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\"")).into()
    } else {
        c.into()
    }
}

impl<W: Write + Send> Sink<W> {
    pub fn csv(mut out: W) -> Result<Self, ExportError> {
        writeln!(out, "{CSV_HEADER}")?;
        Ok(Sink::Csv(out))
    }

    pub fn parquet(out: W) -> Result<Self, ExportError> {
        let schema = Arc::new(parse_message_type(SCHEMA)?);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("quantrac {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Sink::Parquet {
            writer: Box::new(SerializedFileWriter::new(out, schema, Arc::new(props))?),
            buffered: Vec::new(),
        })
    }

    /// Adds a page of points of `station`.
    pub fn write(&mut self, station: &str, points: &[SeriesPoint]) -> Result<(), ExportError> {
        match self {
            Sink::Csv(out) => {
                for p in points {
                    let at = p
                        .measured_at
                        .as_ref()
                        .and_then(from_timestamp)
                        .ok_or_else(|| ExportError::NoTime(p.parameter.clone()))?;
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{LICENCE}",
                        csv_field(station),
                        csv_field(&p.parameter),
                        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        p.value,
                        csv_field(&p.unit),
                        csv_field(&p.qc_flag),
                    )?;
                }
                Ok(())
            }
            Sink::Parquet { writer, buffered } => {
                let s: Arc<str> = Arc::from(station);
                buffered.extend(points.iter().map(|p| (Arc::clone(&s), p.clone())));
                while buffered.len() >= ROW_GROUP {
                    let rest = buffered.split_off(ROW_GROUP);
                    row_group(writer, buffered)?;
                    *buffered = rest;
                }
                Ok(())
            }
        }
    }

    /// Writes what is buffered and the file's footer.
    pub fn finish(self) -> Result<(), ExportError> {
        match self {
            Sink::Csv(mut out) => Ok(out.flush()?),
            Sink::Parquet {
                mut writer,
                buffered,
            } => {
                if !buffered.is_empty() {
                    row_group(&mut writer, &buffered)?;
                }
                writer.close()?;
                Ok(())
            }
        }
    }
}

fn text(v: &str) -> ByteArray {
    ByteArray::from(v.as_bytes().to_vec())
}

fn row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    rows: &[(Arc<str>, SeriesPoint)],
) -> Result<(), ExportError> {
    let times = rows
        .iter()
        .map(|(_, p)| {
            p.measured_at
                .as_ref()
                .and_then(from_timestamp)
                .map(|t| t.timestamp_micros())
                .ok_or_else(|| ExportError::NoTime(p.parameter.clone()))
        })
        .collect::<Result<Vec<i64>, _>>()?;
    let mut rg = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut col) = rg.next_column()? {
        match index {
            2 => {
                col.typed::<Int64Type>().write_batch(&times, None, None)?;
            }
            3 => {
                let values: Vec<f64> = rows.iter().map(|(_, p)| p.value).collect();
                col.typed::<DoubleType>().write_batch(&values, None, None)?;
            }
            i => {
                let values: Vec<ByteArray> = rows
                    .iter()
                    .map(|(station, p)| match i {
                        0 => text(station),
                        1 => text(&p.parameter),
                        4 => text(&p.unit),
                        5 => text(&p.qc_flag),
                        _ => text(LICENCE),
                    })
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, None, None)?;
            }
        }
        col.close()?;
        index += 1;
    }
    rg.close()?;
    Ok(())
}
