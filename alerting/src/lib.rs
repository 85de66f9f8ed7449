//! The alerting engine: permit-aware rules evaluated on `readings.valid` by
//! measurement time, an alert lifecycle kept in the database, and delivery to
//! the monitoring center (Kafka `alerts`, the gRPC `AlertService` stream
//! declared in `quantrac-proto`, webhooks).
//!
//! Not built yet: this crate is the place for issue "Alerting: a
//! permit-aware rules engine".
