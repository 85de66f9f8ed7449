//! What the single-node tests share: `quantrac-testkit`, plus the
//! processor's and alerting's own test configurations, read from those
//! crates' test helpers rather than copied.
#![allow(dead_code, unused_imports)] // each test file uses a part

#[path = "../../../alerting/tests/common/mod.rs"]
mod alerting_common;
#[path = "../../../processor/tests/common/mod.rs"]
mod processor_common;

pub use alerting_common::{alerting_config, registry, rules, start_single_node};
pub use processor_common::{registry_file, test_config};
pub use quantrac_testkit::db::{connect as db, count, fresh_database, wait_for_count};
pub use quantrac_testkit::env::{kafka_brokers, var as env};
pub use quantrac_testkit::kafka::{Topics, create_topics};
pub use quantrac_testkit::samples::{cod, outfalls as samples};
pub use quantrac_testkit::unique;
