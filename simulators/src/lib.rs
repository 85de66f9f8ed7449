//! Simulated monitoring stations for quantrac: wastewater outfalls and
//! stacks of Phú Yên's industrial zones, sending over MQTT and TCP what real
//! data loggers send, and counting what ingest acknowledges.
//!
//! A tour:
//! - [`model`]: the fleet, pure and deterministic from a seed. [`Fleet`]
//!   draws [`Station`]s (ids like `PY-HH-WW01`, a facility, a protocol);
//!   [`Station::measure`] gives what a station measures at any slot (daily
//!   cycle, drift, noise, exceedance / calibration / device-error episodes),
//!   [`Station::delivery`] whether and when it is sent (silences lose data,
//!   outages send it late), [`Fleet::samples_between`] everything sent in a
//!   time range. Tests and benchmarks know a run's traffic without a network.
//! - [`protocol`]: the five transports (`mqtt-json`, `mqtt-c10`,
//!   `tcp-hj212`, `tcp-c10`, `tcp-json`) and the fleet's mix.
//! - [`frames`]: samples as bytes (over `quantrac_proto::wire`'s encoders)
//!   and ingest's replies as [`frames::Reply`].
//! - [`tcp`], [`mqtt`]: the senders. Each waits for ingest's acknowledgement
//!   and resends what is unanswered after a reconnect (at least once).
//! - [`pacing`]: real time (with a speedup), a fixed total rate, or
//!   unpaced.
//! - [`Simulator`] (in `run`): wires stations, pacing and senders together,
//!   runs until done or shut down, and returns [`Stats`]; [`Counters`] can
//!   be read while it runs.
//!
//! The `quantrac-sim` binary only parses arguments and calls [`Simulator`].

pub mod frames;
pub mod model;
pub mod mqtt;
pub mod pacing;
pub mod protocol;
mod run;
pub mod stats;
pub mod tcp;

pub use model::{
    Anomalies, Delivery, EpisodeSpec, Fleet, FleetConfig, Station, Transmission, Zone,
};
pub use mqtt::MqttConfig;
pub use pacing::Pacing;
pub use protocol::{Protocol, ProtocolMix};
pub use run::{RunConfig, Simulator, default_start};
pub use stats::{Counters, Stats};
pub use tcp::TcpConfig;

/// What can go wrong in a simulator run. Network trouble is not an error
/// here: senders count it ([`Stats::errors`]) and retry.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is unusable: the caller's to fix, retrying won't help.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A task of the run panicked or was aborted: a bug in the simulator.
    #[error("simulator task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
