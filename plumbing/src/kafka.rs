//! Every Kafka client of every service is built here.
//!
//! The operator's `[kafka.properties]` (librdkafka settings such as
//! `security.protocol`) are applied first; the settings the delivery
//! invariants depend on are applied last, so a configuration line can tune a
//! client but never switch them off:
//! - producers: `enable.idempotence=true`, `acks=all` (invariant 1, and a
//!   producer retry never writes a record twice);
//! - committing consumers: `enable.auto.offset.store=false`, so an offset
//!   moves only when the application stores it after the effects are durable.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// A Kafka failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot create the Kafka {what}: {source}")]
    Create {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka {operation}: {source}")]
    Operation {
        operation: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl KafkaError {
    pub fn operation(operation: &'static str, source: rdkafka::error::KafkaError) -> Self {
        KafkaError::Operation { operation, source }
    }

    /// Whether waiting can help: a broker starting, a coordinator or leader
    /// moving, a timeout. A client that cannot be created (a bad property)
    /// will not get better.
    pub fn is_retryable(&self) -> bool {
        match self {
            KafkaError::Create { .. } => false,
            KafkaError::Operation { source, .. } => is_transient(source),
        }
    }
}

/// Errors a broker gives while it starts or moves a group coordinator or a
/// partition leader. On a freshly started cluster the first offset fetch
/// answers `NotCoordinator` for a moment: that must delay a caller, not fail
/// it.
pub fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
        )
    )
}

/// A client of `brokers` with the operator's extra librdkafka `properties`.
/// Settings made after this call win over the properties.
pub fn client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        cc.set(k, v);
    }
    cc
}

/// An idempotent `acks=all` producer: the properties, then `tuning` (linger,
/// compression, queue sizes: the caller's choice), then the delivery
/// settings, which nothing can override.
pub fn producer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    tuning: &[(&str, String)],
) -> ClientConfig {
    let mut cc = client_config(brokers, properties);
    for (k, v) in tuning {
        cc.set(*k, v);
    }
    cc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5");
    cc
}

/// A consumer-group member whose offsets move only when the application
/// stores them (after a message's effects are durable); the periodic commit
/// sends what was stored. Shared by the processor and alerting.
pub fn committing_consumer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    group_id: &str,
    client_id: &str,
    session_timeout: Duration,
) -> ClientConfig {
    let mut cc = client_config(brokers, properties);
    cc.set("group.id", group_id)
        .set("client.id", client_id)
        .set(
            "session.timeout.ms",
            session_timeout.as_millis().to_string(),
        )
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        // Bounded prefetch: memory stays bounded while the next step is slow.
        .set("queued.max.messages.kbytes", "16384")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false");
    cc
}

/// Creates a client from `cc`; `what` names it in the error.
pub fn create<T: FromClientConfig>(cc: &ClientConfig, what: &'static str) -> Result<T, KafkaError> {
    cc.create()
        .map_err(|source| KafkaError::Create { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn properties_reach_the_client_but_cannot_undo_delivery_settings() {
        let p = props(&[
            ("security.protocol", "SSL"),
            ("enable.idempotence", "false"),
            ("acks", "1"),
            ("enable.auto.offset.store", "true"),
        ]);
        let producer = producer_config("b:9092", &p, &[("acks", "0".into())]);
        assert_eq!(producer.get("security.protocol"), Some("SSL"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        let consumer = committing_consumer_config("b:9092", &p, "g", "c", Duration::from_secs(10));
        assert_eq!(consumer.get("security.protocol"), Some("SSL"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(consumer.get("group.id"), Some("g"));
    }

    #[test]
    fn tuning_is_applied_over_the_properties() {
        let p = props(&[("linger.ms", "100")]);
        let producer = producer_config("b:9092", &p, &[("linger.ms", "5".into())]);
        assert_eq!(producer.get("linger.ms"), Some("5"));
    }
}
