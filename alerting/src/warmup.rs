//! Rebuilding the engine's windows after a restart from the topic itself:
//! the messages of `readings.valid` from `warm_up` ago up to the consumer
//! group's committed offsets are exactly the readings the engine had
//! already evaluated. They go through `Engine::warm_up` (state only, no
//! events); consumption then resumes at the committed offsets through
//! `Engine::observe`. Rebuilding from the database instead would mark as
//! seen readings that were stored but not yet evaluated, and their alerts
//! would be lost.
//!
//! Single-node mode has no topic: [`from_database`] reads the stored
//! readings instead and splits them by `alert_pending`, the record of
//! stored readings not judged yet that the processor writes in the same
//! transaction as the readings and the engine task clears once their alert
//! changes are recorded. A reading covered there was stored but maybe not
//! judged (the process died between the commit and the engine), so it is
//! judged now, however late it was measured; the rest only rebuilds state.
//! A row cleared late only means readings judged twice, which the
//! database's alert keys absorb.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use prost::Message;
use quantrac_proto::v1::{StoredReading, StoredReadingBatch};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use quantrac_plumbing::kafka::is_transient;

use crate::AlertingError;
use crate::alert::AlertEvent;
use crate::config::AlertingConfig;
use crate::engine::Engine;

const TIMEOUT: Duration = Duration::from_secs(10);

/// How long start-up keeps retrying a broker that is still settling.
const SETTLE: Duration = Duration::from_secs(60);

fn kafka(what: &'static str, e: KafkaError) -> AlertingError {
    AlertingError::Kafka(quantrac_plumbing::kafka::KafkaError::operation(what, e))
}

/// Runs a blocking broker call, retrying transient errors with backoff for
/// at most `SETTLE`. Blocking: only on a blocking thread.
fn settled<T>(
    what: &'static str,
    mut call: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, AlertingError> {
    let deadline = std::time::Instant::now() + SETTLE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && std::time::Instant::now() + backoff < deadline => {
                tracing::info!(call = what, error = %e, retry_in = ?backoff, "warm-up: broker not ready, retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::warn!(call = what, error = %e, "warm-up: broker call failed");
                return Err(kafka(what, e));
            }
        }
    }
}

/// Sends the readings already evaluated by this consumer group within the
/// warm-up horizon to `out`, a batch at a time, in topic order (per series,
/// the order they were evaluated in); returns how many. The channel is
/// bounded, so a day of readings never sits in memory at once. Blocking:
/// run it off the runtime.
pub fn evaluated_readings(
    config: &AlertingConfig,
    out: &tokio::sync::mpsc::Sender<Vec<StoredReading>>,
) -> Result<usize, AlertingError> {
    let topic = config.kafka.valid_topic.as_str();
    let mut cc =
        quantrac_plumbing::kafka::client_config(&config.kafka.brokers, &config.kafka.properties);
    // Read-only: these clients never commit.
    cc.set("enable.auto.commit", "false");
    let group: BaseConsumer = cc
        .clone()
        .set("group.id", &config.kafka.group_id)
        .create()
        .map_err(|e| {
            AlertingError::Kafka(quantrac_plumbing::kafka::KafkaError::Create {
                what: "warm-up group reader",
                source: e,
            })
        })?;
    let metadata = settled("warm-up metadata", || {
        group.fetch_metadata(Some(topic), TIMEOUT)
    })?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut all = TopicPartitionList::new();
    for p in &partitions {
        all.add_partition(topic, *p);
    }
    let committed = settled("warm-up committed offsets", || {
        group.committed_offsets(all.clone(), TIMEOUT)
    })?;

    let since_ms = chrono::Utc::now().timestamp_millis()
        - i64::try_from(config.warm_up.as_millis()).unwrap_or(i64::MAX / 2);
    let reader: BaseConsumer = cc
        .set("group.id", format!("{}-warmup", config.kafka.group_id))
        .create()
        .map_err(|e| {
            AlertingError::Kafka(quantrac_plumbing::kafka::KafkaError::Create {
                what: "warm-up reader",
                source: e,
            })
        })?;
    // offsets_for_timestamp only covers assigned partitions, and this reader
    // has none yet: ask per partition.
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted
            .add_partition_offset(topic, *p, Offset::Offset(since_ms))
            .map_err(|e| kafka("warm-up partition list", e))?;
    }
    let starts = settled("warm-up offsets for times", || {
        reader.offsets_for_times(wanted.clone(), TIMEOUT)
    })?;
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
            .map_err(|e| kafka("warm-up partition list", e))?;
        ends.insert(*p, end);
    }
    let mut sent = 0;
    if ends.is_empty() {
        return Ok(sent);
    }
    reader
        .assign(&assignment)
        .map_err(|e| kafka("warm-up assign", e))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = match message {
            Ok(m) => m,
            // librdkafka recovers from these itself; the deadline bounds it.
            Err(e) if is_transient(&e) => {
                tracing::info!(error = %e, "warm-up: transient read error");
                continue;
            }
            Err(e) => return Err(kafka("warm-up poll", e)),
        };
        let Some(&end) = ends.get(&m.partition()) else {
            continue;
        };
        if m.offset() < end
            && let Ok(batch) = StoredReadingBatch::decode(m.payload().unwrap_or_default())
        {
            sent += batch.readings.len();
            if out.blocking_send(batch.readings).is_err() {
                // The engine side is gone (shutting down).
                return Ok(sent);
            }
        }
        if m.offset() + 1 >= end {
            ends.remove(&m.partition());
        }
    }
    if !ends.is_empty() {
        tracing::warn!(partitions = ?ends.keys().collect::<Vec<_>>(), "warm-up did not reach the committed offsets in time");
    }
    Ok(sent)
}

/// What [`from_database`] did.
#[derive(Debug, Default)]
pub struct DatabaseWarmUp {
    /// Readings judged before: state only.
    pub warmed: usize,
    /// Readings stored but not known to be judged: judged now.
    pub judged: usize,
    /// The alert changes those produced, to record and notify.
    pub events: Vec<AlertEvent>,
    /// The `alert_pending` rows judged here, to clear once `events` are
    /// recorded.
    pub unjudged: Vec<(i64, String)>,
}

/// Single-node mode: rebuilds the engine from the readings stored within
/// `horizon`, judging those `alert_pending` covers (and, first, those it
/// covers from before the horizon: a late backlog).
pub async fn from_database(
    engine: &mut Engine,
    db: &tokio_postgres::Client,
    horizon: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<DatabaseWarmUp, AlertingError> {
    use futures::TryStreamExt;

    let pending = quantrac_db::pending::all(db).await?;
    let mut ranges: HashMap<&str, Vec<std::ops::RangeInclusive<DateTime<Utc>>>> = HashMap::new();
    for p in &pending {
        ranges
            .entry(p.station_id.as_str())
            .or_default()
            .push(p.first_at..=p.last_at);
    }
    let unjudged = |station: &str, at: DateTime<Utc>| {
        ranges
            .get(station)
            .is_some_and(|r| r.iter().any(|range| range.contains(&at)))
    };
    let since = now - chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::days(2));
    let mut out = DatabaseWarmUp::default();
    // Older than the horizon: only what was never judged, oldest first.
    let mut old: Vec<_> = Vec::new();
    for p in pending.iter().filter(|p| p.first_at < since) {
        old.extend(
            quantrac_db::pending::readings_between(
                db,
                &p.station_id,
                p.first_at,
                since.min(p.last_at + chrono::Duration::microseconds(1)),
            )
            .await?,
        );
    }
    old.sort_by_key(|r| r.measured_at);
    old.dedup_by(|a, b| {
        (&a.station_id, &a.parameter, a.measured_at) == (&b.station_id, &b.parameter, b.measured_at)
    });
    for row in old {
        out.events.extend(engine.observe(&row.to_stored(), now));
        out.judged += 1;
    }
    let readings = quantrac_db::readings::since(db, since).await?;
    futures::pin_mut!(readings);
    while let Some(row) = readings.try_next().await? {
        let r = row.to_stored();
        if unjudged(&row.station_id, row.measured_at) {
            out.events.extend(engine.observe(&r, now));
            out.judged += 1;
        } else {
            engine.warm_up(&r);
            out.warmed += 1;
        }
    }
    out.unjudged = pending
        .into_iter()
        .map(|p| (p.batch, p.station_id))
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    #[test]
    fn coordinator_and_leader_moves_are_transient_the_rest_is_not() {
        for code in [
            RDKafkaErrorCode::NotCoordinator,
            RDKafkaErrorCode::CoordinatorLoadInProgress,
            RDKafkaErrorCode::CoordinatorNotAvailable,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert!(is_transient(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::GroupAuthorizationFailed,
            RDKafkaErrorCode::InvalidArgument,
        ] {
            assert!(!is_transient(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
        assert!(!is_transient(&KafkaError::Canceled));
    }

    #[test]
    fn a_settling_coordinator_delays_and_a_real_error_fails_at_once() {
        let mut calls = 0;
        let v = settled("warm-up committed offsets", || {
            calls += 1;
            if calls < 3 {
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator))
            } else {
                Ok(calls)
            }
        })
        .expect("settles");
        assert_eq!(v, 3);

        let mut calls = 0;
        let e = settled("warm-up committed offsets", || {
            calls += 1;
            Err::<(), _>(KafkaError::MetadataFetch(
                RDKafkaErrorCode::GroupAuthorizationFailed,
            ))
        })
        .expect_err("not retried");
        assert_eq!(calls, 1);
        assert!(e.to_string().contains("committed offsets"), "{e}");
    }
}
