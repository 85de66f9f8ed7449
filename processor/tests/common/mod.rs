//! Helpers for the processor's integration tests against the real Kafka
//! and PostgreSQL (`deploy/services.sh start`): the shared fixtures come
//! from `quantrac-testkit`; the processor's test configuration is here.
//! Each test gets its own database, topics, consumer group and registry.

#![allow(dead_code, unused_imports)] // each test file uses a part

use std::path::PathBuf;
use std::time::Duration;

use quantrac_processor::ProcessorConfig;
pub use quantrac_testkit::db::{connect as db, count, fresh_database, wait_for_count};
pub use quantrac_testkit::env::kafka_brokers;
pub use quantrac_testkit::kafka::{Topics, create_topics, produce};
pub use quantrac_testkit::process::Child;
pub use quantrac_testkit::samples::outfalls as samples;
pub use quantrac_testkit::unique;

/// A registry file with `stations` wastewater outfalls `<prefix>-<i>`.
pub fn registry_file(prefix: &str, stations: usize) -> PathBuf {
    quantrac_testkit::registry::Outfalls::numbered(prefix, stations)
        .write()
        .expect("write registry")
}

pub fn test_config(db_url: &str, topics: &Topics, registry: PathBuf) -> ProcessorConfig {
    let mut c = ProcessorConfig {
        node_id: unique("proc"),
        database_url: db_url.to_owned(),
        registry,
        ..Default::default()
    };
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.kafka.brokers = kafka_brokers();
    c.kafka.group_id = unique("group");
    c.kafka.raw_topic = topics.raw.clone();
    c.kafka.valid_topic = topics.valid.clone();
    c.kafka.rejected_topic = topics.rejected.clone();
    c.batch.max_wait = Duration::from_millis(50);
    c
}
