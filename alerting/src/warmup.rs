//! Rebuilding the engine's windows after a restart from the topic itself:
//! the messages of `readings.valid` from `warm_up` ago up to the consumer
//! group's committed offsets are exactly the readings the engine had
//! already evaluated. They go through `Engine::warm_up` (state only, no
//! events); consumption then resumes at the committed offsets through
//! `Engine::observe`. Rebuilding from the database instead would mark as
//! seen readings that were stored but not yet evaluated, and their alerts
//! would be lost.

use std::time::Duration;

use prost::Message;
use quantrac_proto::v1::{StoredReading, StoredReadingBatch};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::AlertingError;
use crate::config::AlertingConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

fn kafka(e: rdkafka::error::KafkaError) -> AlertingError {
    AlertingError::Kafka(e.to_string())
}

/// The readings already evaluated by this consumer group within the
/// warm-up horizon, in measurement order. Blocking: run it off the runtime.
pub fn evaluated_readings(config: &AlertingConfig) -> Result<Vec<StoredReading>, AlertingError> {
    let topic = config.kafka.valid_topic.as_str();
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.brokers)
        .set("enable.auto.commit", "false");
    for (k, v) in &config.kafka.properties {
        cc.set(k, v);
    }
    let group: BaseConsumer = cc
        .clone()
        .set("group.id", &config.kafka.group_id)
        .create()
        .map_err(kafka)?;
    let metadata = group.fetch_metadata(Some(topic), TIMEOUT).map_err(kafka)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut all = TopicPartitionList::new();
    for p in &partitions {
        all.add_partition(topic, *p);
    }
    let committed = group.committed_offsets(all, TIMEOUT).map_err(kafka)?;

    let since_ms = chrono::Utc::now().timestamp_millis()
        - i64::try_from(config.warm_up.as_millis()).unwrap_or(i64::MAX / 2);
    let reader: BaseConsumer = cc
        .set("group.id", format!("{}-warmup", config.kafka.group_id))
        .create()
        .map_err(kafka)?;
    // offsets_for_timestamp only covers assigned partitions, and this reader
    // has none yet: ask per partition.
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted
            .add_partition_offset(topic, *p, Offset::Offset(since_ms))
            .map_err(kafka)?;
    }
    let starts = reader.offsets_for_times(wanted, TIMEOUT).map_err(kafka)?;
    tracing::debug!(?committed, ?starts, "warm-up offsets");
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for p in &partitions {
        let end = match committed.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(end)) if end > 0 => end,
            _ => continue, // nothing evaluated yet on this partition
        };
        let start = match starts.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(s)) => s,
            // No message since `since_ms`: nothing to warm up from here.
            _ => continue,
        };
        if start >= end {
            continue;
        }
        assignment
            .add_partition_offset(topic, *p, Offset::from_raw(start))
            .map_err(kafka)?;
        ends.insert(*p, end);
    }
    let mut readings = Vec::new();
    if ends.is_empty() {
        return Ok(readings);
    }
    reader.assign(&assignment).map_err(kafka)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = message.map_err(kafka)?;
        let Some(&end) = ends.get(&m.partition()) else {
            continue;
        };
        if m.offset() < end
            && let Ok(batch) = StoredReadingBatch::decode(m.payload().unwrap_or_default())
        {
            readings.extend(batch.readings);
        }
        if m.offset() + 1 >= end {
            ends.remove(&m.partition());
        }
    }
    if !ends.is_empty() {
        tracing::warn!(partitions = ?ends.keys().collect::<Vec<_>>(), "warm-up did not reach the committed offsets in time");
    }
    // Per series the topic order is the evaluation order; across series any
    // order works. Measurement order keeps windows simple.
    readings.sort_by_key(|r| r.measured_at.map(|t| (t.seconds, t.nanos)));
    Ok(readings)
}
