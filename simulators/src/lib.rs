//! Station simulators.

pub mod model;
pub mod protocol;

pub use model::{Anomalies, Delivery, EpisodeSpec, Fleet, FleetConfig, Station, Transmission, Zone};
pub use protocol::{Protocol, ProtocolMix};

/// What can go wrong in a simulator run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is unusable: the caller's to fix, retrying won't help.
    #[error("invalid configuration: {0}")]
    Config(String),
}
