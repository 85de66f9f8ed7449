//! The five ways a simulated station talks to ingest, and the fleet's mix.

use std::fmt;
use std::str::FromStr;

use crate::SimError;

/// Transport and format of one station.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// MQTT QoS 1, payload in the project's JSON schema.
    MqttJson,
    /// MQTT QoS 1, payload a Circular 10 file (name line, then records).
    MqttC10,
    /// TCP, HJ 212-2017 packets answered with CN=9014.
    TcpHj212,
    /// TCP, Circular 10 files separated by an empty line, answered `OK n`.
    TcpC10,
    /// TCP, JSON lines answered with a JSON line.
    TcpJson,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::MqttJson,
        Protocol::MqttC10,
        Protocol::TcpHj212,
        Protocol::TcpC10,
        Protocol::TcpJson,
    ];

    /// The name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::MqttJson => "mqtt-json",
            Protocol::MqttC10 => "mqtt-c10",
            Protocol::TcpHj212 => "tcp-hj212",
            Protocol::TcpC10 => "tcp-c10",
            Protocol::TcpJson => "tcp-json",
        }
    }

    pub fn is_mqtt(self) -> bool {
        matches!(self, Protocol::MqttJson | Protocol::MqttC10)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                SimError::Config(format!(
                    "unknown protocol {s:?}; expected one of mqtt-json, mqtt-c10, tcp-hj212, tcp-c10, tcp-json or mix"
                ))
            })
    }
}

/// Weighted choice of protocols across the fleet; each station gets one,
/// drawn from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolMix {
    weights: Vec<(Protocol, u32)>,
}

impl ProtocolMix {
    /// Every station speaks `protocol`.
    pub fn only(protocol: Protocol) -> Self {
        ProtocolMix {
            weights: vec![(protocol, 1)],
        }
    }

    /// A mix with explicit weights; zero weights are dropped.
    pub fn weighted(weights: impl IntoIterator<Item = (Protocol, u32)>) -> Result<Self, SimError> {
        let weights: Vec<_> = weights.into_iter().filter(|&(_, w)| w > 0).collect();
        if weights.is_empty() {
            return Err(SimError::Config(
                "the protocol mix has no protocol with a weight above 0".into(),
            ));
        }
        Ok(ProtocolMix { weights })
    }

    /// Parses command-line values: `mix` (the default mix), or any number
    /// of `<protocol>[=<weight>]`, e.g. `tcp-hj212=3 mqtt-json`.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, SimError> {
        if values.is_empty() || values.iter().any(|v| v.as_ref().trim() == "mix") {
            if values.len() > 1 {
                return Err(SimError::Config(
                    "`mix` cannot be combined with other protocols".into(),
                ));
            }
            return Ok(Self::default());
        }
        let mut weights = Vec::new();
        for value in values {
            let value = value.as_ref();
            let (name, weight) = match value.split_once('=') {
                Some((name, w)) => {
                    let w = w.trim().parse::<u32>().map_err(|_| {
                        SimError::Config(format!(
                            "bad weight in {value:?}: expected a whole number"
                        ))
                    })?;
                    (name, w)
                }
                None => (value, 1),
            };
            weights.push((name.parse::<Protocol>()?, weight));
        }
        Self::weighted(weights)
    }

    /// The protocol at position `u` (uniform in `[0, 1)`) of the cumulative
    /// weights.
    pub(crate) fn pick(&self, u: f64) -> Protocol {
        let total: u64 = self.weights.iter().map(|&(_, w)| u64::from(w)).sum();
        let mut target = (u * total as f64) as u64;
        for &(p, w) in &self.weights {
            if target < u64::from(w) {
                return p;
            }
            target -= u64::from(w);
        }
        // Only reachable through rounding at u close to 1.
        self.weights.last().map_or(Protocol::MqttJson, |&(p, _)| p)
    }

    pub fn weights(&self) -> &[(Protocol, u32)] {
        &self.weights
    }
}

impl Default for ProtocolMix {
    /// Roughly the field: most loggers sold in the region speak HJ 212,
    /// newer installations MQTT JSON, some still push Circular 10 files.
    fn default() -> Self {
        ProtocolMix {
            weights: vec![
                (Protocol::TcpHj212, 35),
                (Protocol::MqttJson, 30),
                (Protocol::TcpJson, 15),
                (Protocol::MqttC10, 10),
                (Protocol::TcpC10, 10),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_weights_and_mix() -> Result<(), SimError> {
        assert_eq!(ProtocolMix::parse(&["mix"])?, ProtocolMix::default());
        assert_eq!(ProtocolMix::parse::<&str>(&[])?, ProtocolMix::default());
        assert_eq!(
            ProtocolMix::parse(&["tcp-c10"])?,
            ProtocolMix::only(Protocol::TcpC10)
        );
        let mix = ProtocolMix::parse(&["tcp-hj212=3", "mqtt-json"])?;
        assert_eq!(
            mix.weights(),
            &[(Protocol::TcpHj212, 3), (Protocol::MqttJson, 1)]
        );
        assert!(ProtocolMix::parse(&["udp"]).is_err());
        assert!(ProtocolMix::parse(&["tcp-json=x"]).is_err());
        assert!(ProtocolMix::parse(&["tcp-json=0"]).is_err());
        assert!(ProtocolMix::parse(&["mix", "tcp-json"]).is_err());
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>()?, p);
        }
        Ok(())
    }

    #[test]
    fn pick_follows_weights() -> Result<(), SimError> {
        let mix = ProtocolMix::weighted([(Protocol::TcpJson, 1), (Protocol::MqttC10, 3)])?;
        assert_eq!(mix.pick(0.0), Protocol::TcpJson);
        assert_eq!(mix.pick(0.24), Protocol::TcpJson);
        assert_eq!(mix.pick(0.26), Protocol::MqttC10);
        assert_eq!(mix.pick(0.999_999), Protocol::MqttC10);
        Ok(())
    }
}
