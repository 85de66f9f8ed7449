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
//! - [`bus`]: the in-process bus that replaces Kafka in single-node mode.
//! - `process` (feature `bin`): logging and signal handling shared by the
//!   service binaries; `config` (feature `config`): how every service reads
//!   its TOML file and environment variables.
//!
//! Topic names shared by the services live in [`topics`].

pub mod bus;
#[cfg(feature = "config")]
pub mod config;
pub mod domain;
#[cfg(feature = "bin")]
pub mod process;
pub mod wire;

pub use domain::{Sample, SampleValue};

/// Generated protobuf and gRPC code, package `quantrac.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quantrac.v1");
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
