//! The Kafka side: a consumer-group member on `readings.raw` that stores
//! each batch, publishes it, and only then stores the offsets.
//!
//! Order of effects per batch (invariants 1 and 2):
//! 1. read up to `batch.max_readings` readings, until the input is dry
//!    (`batch.write_when_idle`) or for at most `batch.max_wait`;
//! 2. validate; write readings + rejections in one database transaction,
//!    retried with backoff while the database is unavailable (consumption
//!    pauses meanwhile; librdkafka's prefetch queue is bounded);
//! 3. publish the valid readings to `readings.valid` and the rejections to
//!    `readings.rejected`, and wait for Kafka's acknowledgement;
//! 4. store the offsets (`enable.auto.offset.store=false`); the periodic
//!    auto-commit and the commit on revoke/close send them to Kafka. With
//!    `storage.async_commit` (the default), step 2's commit does not wait
//!    for the WAL flush, and step 4 waits instead until PostgreSQL reports
//!    the flush past the batch (`quantrac_db::durable`); when that can no
//!    longer be known (the database connection was lost), the consumer is
//!    recreated and reads again from the last stored offsets.
//!
//! A crash anywhere before 4 replays the batch: the database skips what it
//! already has (natural keys), and consumers of `readings.valid` are
//! idempotent on the same keys. Up to `batch.in_flight` batches are written
//! at once, each on its own connection, while the next one is read (the
//! database is the slow step); a connection is free again once its batch
//! is committed, not published (at most twice as many batches wait to be
//! published); step 3 waits for the batch before, and
//! batches finish in the order they were read, so `readings.valid` keeps
//! the order of `readings.raw` and offsets are stored in order per
//! partition. Two batches in flight hold the same row only when a record
//! was redelivered: one then waits for the other's commit and skips the
//! row (or the server breaks a deadlock and the write is retried).
//!
//! On a rebalance, a batch that straddles it may be stored by both the old
//! and the new owner: the second write finds duplicates and adds no row.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use quantrac_plumbing::kafka::{self, KafkaError};
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Statistics};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::ProcessorError;
use crate::config::ProcessorConfig;
use crate::pipeline::{self, InRecord};
use crate::worker::Worker;
use quantrac_db::durable::{self, Flushed, Mark, Verdict};

/// Logs rebalances and exports consumer lag from librdkafka's statistics.
struct Context;

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        let lag: i64 = stats
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("processor_consumer_lag").set(lag as f64);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "partitions rebalancing");
    }
}

pub(crate) fn producer(config: &ProcessorConfig) -> Result<FutureProducer, ProcessorError> {
    let cc = kafka::producer_config(
        &config.kafka.brokers,
        &config.kafka.properties,
        &[
            ("compression.type", "lz4".into()),
            ("linger.ms", config.kafka.linger.as_millis().to_string()),
        ],
    );
    Ok(kafka::create(&cc, "producer")?)
}

/// Publishes records and waits for every acknowledgement, retrying the
/// failed ones until they are in or `shutdown` fires.
pub(crate) async fn publish_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, Vec<u8>)],
    shutdown: &CancellationToken,
) -> Result<(), ProcessorError> {
    let mut pending: Vec<&(String, Vec<u8>)> = records.iter().collect();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        let sends = pending.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(30),
            )
        });
        let results = futures::future::join_all(sends).await;
        let failed: Vec<_> = pending
            .iter()
            .zip(results)
            .filter_map(|(r, res)| res.is_err().then_some(*r))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        tracing::warn!(topic, failed = failed.len(), retry_in = ?backoff, "Kafka publish failed; retrying");
        pending = failed;
        tokio::select! {
            () = shutdown.cancelled() => return Err(ProcessorError::ShuttingDown),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    Ok(())
}

/// Batches stored and published whose offsets wait for the WAL flush, at
/// most: consumption pauses beyond (the flush watcher is stuck).
const MAX_WAITING: usize = 256;

/// Runs the consumer until `shutdown` with one worker (database
/// connection) per batch in flight; the batches in hand are finished or
/// abandoned (they will be replayed), never half-acknowledged.
pub async fn run(
    config: Arc<ProcessorConfig>,
    workers: Vec<Worker>,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let watcher = config
        .storage
        .async_commit
        .then(|| durable::FlushWatch::start(config.database_url.clone(), config.database));
    let flushed = if let Some(watcher) = &watcher {
        let mut rx = watcher.receiver();
        // The watcher's connection must be older than the first batch to
        // vouch for it.
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = rx.wait_for(Option::is_some) => {
                r.map_err(|_| ProcessorError::Task("WAL flush watcher ended".into()))?;
            }
        }
        Some(rx)
    } else {
        None
    };
    let mut workers = workers;
    loop {
        match consume(&config, workers, flushed.clone(), &shutdown).await? {
            Ended::Stopped => return Ok(()),
            Ended::Replay(w) => {
                workers = w;
                metrics::counter!("processor_replays_total").increment(1);
                tracing::warn!(
                    "a batch committed without waiting for the WAL flush can no longer be known to be on disk (the database connection was lost); reading again from the last durable offsets"
                );
            }
        }
    }
}

/// How one consumer's life ended.
enum Ended {
    Stopped,
    /// A batch may have been lost by the database: its offsets were not
    /// stored; a new consumer reads again from the stored ones.
    Replay(Vec<Worker>),
}

async fn consume(
    config: &Arc<ProcessorConfig>,
    workers: Vec<Worker>,
    mut flushed: Option<watch::Receiver<Option<Flushed>>>,
    shutdown: &CancellationToken,
) -> Result<Ended, ProcessorError> {
    let consumer: StreamConsumer<Context> = kafka::committing_consumer_config(
        &config.kafka.brokers,
        &config.kafka.properties,
        &config.kafka.group_id,
        &config.node_id,
        config.kafka.session_timeout,
    )
    .set("statistics.interval.ms", "5000")
    .create_with_context(Context)
    .map_err(|source| KafkaError::Create {
        what: "consumer",
        source,
    })?;
    consumer
        .subscribe(&[&config.kafka.raw_topic])
        .map_err(|e| KafkaError::operation("subscribe", e))?;
    let producer = producer(config)?;
    let raw_topic: Arc<str> = config.kafka.raw_topic.as_str().into();

    let workers_total = workers.len();
    let mut idle = workers;
    // Workers come back here once their batch is committed.
    let (freed_tx, mut freed) = tokio::sync::mpsc::channel(workers_total.max(1));
    let mut in_flight: FuturesOrdered<_> = FuturesOrdered::new();
    // Resolved when the previous batch has been published.
    let mut previous: Option<oneshot::Receiver<()>> = None;
    // Published batches whose offsets wait for the WAL flush, in order.
    let mut waiting: VecDeque<Offsets> = VecDeque::new();
    let mut stopping = false;
    let mut replay = false;
    'batches: while !stopping && !replay {
        // 1. Collect a batch while a worker is free; meanwhile finish the
        //    batches in flight, in order.
        let mut records = Vec::new();
        let mut readings_estimate = 0;
        let mut deadline: Option<tokio::time::Instant> = None;
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => { stopping = true; break; }
                Some(worker) = freed.recv() => idle.push(worker),
                Some(done) = in_flight.next() => match done {
                    Ok(done) => {
                        let done: Done = done;
                        waiting.push_back(done.offsets);
                        if !settle(&consumer, &mut waiting, flushed.as_ref()) {
                            replay = true;
                            break;
                        }
                    }
                    Err(ProcessorError::ShuttingDown) => break 'batches,
                    Err(e) => return Err(e),
                },
                () = durable::changed(&mut flushed), if !waiting.is_empty() => {
                    if !settle(&consumer, &mut waiting, flushed.as_ref()) {
                        replay = true;
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => break,
                m = consumer.recv(), if !idle.is_empty()
                    && in_flight.len() < 2 * workers_total
                    && waiting.len() < MAX_WAITING => match m {
                    Ok(m) => {
                        readings_estimate += take(&m, &raw_topic, &mut records);
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.batch.max_wait);
                        if config.batch.write_when_idle {
                            // What is already queued joins the batch, and
                            // once the input is dry the batch goes: a quiet
                            // pipeline writes at once, a busy one (every
                            // worker writing, records queueing meanwhile)
                            // still writes large batches.
                            while readings_estimate < config.batch.max_readings {
                                match futures::FutureExt::now_or_never(consumer.recv()) {
                                    Some(Ok(m)) => readings_estimate += take(&m, &raw_topic, &mut records),
                                    Some(Err(e)) => {
                                        tracing::warn!(error = %e, "Kafka consumer error");
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            break;
                        }
                        if readings_estimate >= config.batch.max_readings {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                },
            }
        }
        // What was read before a shutdown is left for the next owner.
        if stopping || replay || records.is_empty() {
            continue;
        }
        // 2. and 3. Store, then publish after the previous batch did.
        let Some(worker) = idle.pop() else {
            // Records are only read while a worker is free.
            return Err(ProcessorError::Task("no free worker for a batch".into()));
        };
        let (published, next) = oneshot::channel();
        in_flight.push_back(write_then_publish(
            Arc::clone(config),
            worker,
            freed_tx.clone(),
            records,
            Turn {
                previous: previous.replace(next),
                published,
            },
            producer.clone(),
            shutdown.clone(),
        ));
    }
    // Batches already being written are finished (their own retries stop
    // at the shutdown) so that their offsets are stored (not when
    // replaying: the new consumer reads them again).
    while let Some(done) = in_flight.next().await {
        match done {
            Ok(done) => {
                if !replay {
                    waiting.push_back(done.offsets);
                }
            }
            Err(ProcessorError::ShuttingDown) => break,
            Err(e) => return Err(e),
        }
    }
    if !replay {
        // A stop waits a little for the last flush, so that the next
        // start does not read it all again.
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while settle(&consumer, &mut waiting, flushed.as_ref()) && !waiting.is_empty() {
            if tokio::time::timeout_at(until, durable::changed(&mut flushed))
                .await
                .is_err()
            {
                break;
            }
        }
    }
    if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        tracing::debug!(error = %e, "final offset commit");
    }
    if replay && !shutdown.is_cancelled() {
        // Every batch has finished, so every worker is back.
        drop(freed_tx);
        while let Some(w) = freed.recv().await {
            idle.push(w);
        }
        return Ok(Ended::Replay(idle));
    }
    Ok(Ended::Stopped)
}

/// Step 4 for the batches at the front of `waiting` that are on disk, in
/// order. False when one of them can no longer be known to be (replay).
fn settle(
    consumer: &StreamConsumer<Context>,
    waiting: &mut VecDeque<Offsets>,
    flushed: Option<&watch::Receiver<Option<Flushed>>>,
) -> bool {
    let now = flushed.map(|rx| *rx.borrow());
    while let Some(front) = waiting.front() {
        let verdict = match (&front.mark, &now) {
            (Some(mark), Some(now)) => durable::verdict(mark, now.as_ref()),
            // Committed with the flush (or no watcher to wait for).
            _ => Verdict::Durable,
        };
        match verdict {
            Verdict::Durable => {
                if let Some(o) = waiting.pop_front() {
                    store_offsets(consumer, o.highest);
                }
            }
            Verdict::Wait => return true,
            Verdict::Lost => return false,
        }
    }
    true
}

/// Adds a consumed record to the batch; its estimated readings.
fn take(
    m: &rdkafka::message::BorrowedMessage<'_>,
    raw_topic: &Arc<str>,
    records: &mut Vec<InRecord>,
) -> usize {
    let payload = Bytes::copy_from_slice(m.payload().unwrap_or_default());
    // ~50 bytes per reading: a cheap bound without decoding twice.
    let estimate = (payload.len() / 50).max(1);
    records.push(InRecord {
        topic: if m.topic() == &**raw_topic {
            Arc::clone(raw_topic)
        } else {
            m.topic().into()
        },
        partition: m.partition(),
        offset: m.offset(),
        payload,
    });
    estimate
}

/// A batch stored and published: the offsets to store.
struct Done {
    offsets: Offsets,
}

/// The offsets a batch moves to, and (async commit) what must be on disk
/// first.
struct Offsets {
    highest: BTreeMap<(Arc<str>, i32), i64>,
    mark: Option<Mark>,
}

/// A batch's turn to publish: after the batch before it (`previous`
/// resolves once it has), then telling the next one (`published`).
struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    published: oneshot::Sender<()>,
}

/// Writes one batch (concurrently with others), then publishes it once the
/// batch before it was published, so that `readings.valid` keeps the order
/// of `readings.raw` per partition.
async fn write_then_publish(
    config: Arc<ProcessorConfig>,
    mut worker: Worker,
    freed: tokio::sync::mpsc::Sender<Worker>,
    records: Vec<InRecord>,
    Turn {
        previous,
        published,
    }: Turn,
    producer: FutureProducer,
    shutdown: CancellationToken,
) -> Result<Done, ProcessorError> {
    let started_at = Instant::now();
    let checked = worker.store(&records, Vec::new(), &shutdown).await?;
    // The batch's mark is read while it is published, not before: the
    // commit is already done, so a position read later is past it too,
    // and the round trip stays off the way to `readings.valid`.
    let mark = async {
        let mark = if config.storage.async_commit {
            // Unknown: the batch is read again (duplicates skipped).
            Some(Mark::after(started_at, worker.wal_insert_lsn().await))
        } else {
            None
        };
        // The connection is not needed to publish: the next batch may use
        // it. (The channel holds every worker; it is never full.)
        let _ = freed.try_send(worker);
        mark
    };
    let publish = async {
        if let Some(previous) = previous {
            // A dropped sender means the batch before failed or was
            // abandoned: publishing this one ahead of it would break the
            // order.
            previous.await.map_err(|_| ProcessorError::ShuttingDown)?;
        }
        let started = Instant::now();
        let valid = pipeline::valid_records(&checked.valid);
        let rejected = pipeline::rejected_records(&checked.rejected);
        futures::future::try_join(
            publish_all(&producer, &config.kafka.valid_topic, &valid, &shutdown),
            publish_all(
                &producer,
                &config.kafka.rejected_topic,
                &rejected,
                &shutdown,
            ),
        )
        .await?;
        metrics::histogram!("processor_publish_seconds").record(seconds_since(started));
        Ok::<(), ProcessorError>(())
    };
    let (mark, published_ok) = futures::future::join(mark, publish).await;
    published_ok?;
    let _ = published.send(());
    let mut highest = BTreeMap::new();
    for r in &records {
        let e = highest
            .entry((Arc::clone(&r.topic), r.partition))
            .or_insert(r.offset);
        *e = (*e).max(r.offset);
    }
    Ok(Done {
        offsets: Offsets { highest, mark },
    })
}

/// Step 4: stores the offsets of a finished batch (batches finish in
/// order, so offsets move forward per partition).
fn store_offsets(consumer: &StreamConsumer<Context>, highest: BTreeMap<(Arc<str>, i32), i64>) {
    for ((topic, partition), offset) in highest {
        if let Err(e) = consumer.store_offset(&topic, partition, offset) {
            // The partition moved to another member during the batch;
            // it replays from its last commit and finds duplicates.
            tracing::info!(%topic, partition, offset, error = %e, "offset not stored (partition revoked)");
        }
    }
}

/// Time since `start` in seconds, for histograms.
pub(crate) fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
