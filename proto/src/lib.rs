//! The quantrac contract: what every service agrees on.
//!
//! A tour:
//! - [`v1`]: the protobuf messages and gRPC services generated from
//!   `proto/quantrac/v1/*.proto`. `ReadingBatch` is the Kafka record on
//!   `readings.raw`, `RejectedInput` the one on `ingest.rejected`.
//! - [`domain`]: the decoded form of a station sample ([`Sample`]), device
//!   statuses, the parameter catalogue (Circular 10 and HJ 212 codes, units)
//!   and the conversion of a sample into protobuf readings.
//! - [`wire`]: the three formats station data loggers speak: the project's
//!   JSON schema, HJ 212-2017 packets and Circular 10/2021 text records. Each
//!   has a decoder (never panics, rejects with a machine-readable reason) and
//!   an encoder (used by the simulators and the round-trip tests).
//! - [`units`]: unit conversion into each parameter's canonical unit.
//! - [`registry`]: the station registry: stations, their parameters and
//!   instrument ranges, permit limits with coefficients and effective
//!   dates (invariant 6: limits are data), loaded from TOML.
//! - [`qc`]: the QC flags stored with every reading and the reasons a
//!   reading is refused, as enums every crate matches on.
//!
//! Topic names shared by the services live in [`topics`].
//!
//! Architecture invariant: this crate does no I/O beyond reading the
//! registry file, and knows nothing of Kafka, databases or services.

pub mod domain;
pub mod qc;
pub mod registry;
pub mod units;
pub mod wire;

pub use domain::{Sample, SampleValue};

/// Generated protobuf and gRPC code, package `quantrac.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quantrac.v1");

    /// The encoded `FileDescriptorSet` of every `.proto` file, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("quantrac_descriptor");
}

/// Kafka topic names, one place for all services.
pub mod topics {
    /// Readings as received from stations, key = station id.
    pub const READINGS_RAW: &str = "readings.raw";
    /// Input ingest could not decode or check, with raw bytes and reason.
    pub const INGEST_REJECTED: &str = "ingest.rejected";
    /// Readings stored by the processor, for alerting.
    pub const READINGS_VALID: &str = "readings.valid";
    /// Readings the processor refused, with reason.
    pub const READINGS_REJECTED: &str = "readings.rejected";
    /// Alert lifecycle events.
    pub const ALERTS: &str = "alerts";
}
