//! The engine task: owns the rules engine and feeds it, in one place,
//! everything that can change an alert: readings from `readings.valid`,
//! the wall clock, officers' commands, and rule-file reloads. Each change is
//! recorded in the database first, then notified, and only then is the
//! Kafka offset stored: a crash replays, and the database drops what it has
//! already seen. With `async_commit` (Kafka mode), judging's changes are
//! committed without waiting for the WAL flush and the offsets wait for
//! it instead (`quantrac_db::durable`); if the database may have lost
//! them, the engine is rebuilt from the database as at a start and the
//! readings after the stored offsets are judged again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use futures::FutureExt as _;
use prost::Message;
use quantrac_db::durable::{self, Flushed, Mark, Verdict};
use quantrac_proto::v1::{self, StoredReadingBatch};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::AlertingError;
use crate::alert::AlertEvent;
use crate::config::AlertingConfig;
use crate::engine::Engine;
use crate::grpc::{Action, Command};
use crate::notify::Notifier;
use crate::rules::RulesConfig;
use crate::store::{self, Recorded};

pub(crate) struct EngineTask {
    pub config: Arc<AlertingConfig>,
    pub engine: Engine,
    pub db: Client,
    pub notifier: Notifier,
    pub commands: mpsc::Receiver<Command>,
    /// Alert changes from judging, at start, readings stored but maybe not
    /// judged before a crash (single-node mode).
    pub pending: Vec<AlertEvent>,
    /// The `alert_pending` rows those came from, cleared once recorded.
    pub unjudged: Vec<(i64, String)>,
    /// What `/health` reports of this task.
    pub health: Arc<crate::Health>,
    /// Officers' actions handed to another instance, awaiting its outcome.
    pub waiting: Vec<Waiting>,
    /// Whether judging's changes are recorded without waiting for the WAL
    /// flush (Kafka mode with `async_commit`, set by `run_kafka`).
    pub async_records: bool,
    /// Those changes and the offsets behind them, in order, until the
    /// flush passes them.
    pub unflushed: VecDeque<Unflushed>,
}

/// What waits for the WAL flush.
pub(crate) enum Unflushed {
    /// Changes recorded without waiting for the flush.
    Changes(Mark),
    /// Offsets to store once everything before them is on disk.
    Offsets(Vec<(String, i32, i64)>),
}

/// Entries of `unflushed` at most: consumption pauses beyond (the flush
/// watcher is stuck).
const MAX_UNFLUSHED: usize = 4_096;

/// How one consumer's life ended.
enum Ended {
    Stopped,
    /// Recorded changes may have been lost by the database: rebuild and
    /// judge again from the stored offsets.
    Replay,
}

/// An officer's action forwarded to the instance holding the alert.
pub(crate) struct Waiting {
    id: i64,
    alert_id: String,
    reply: tokio::sync::oneshot::Sender<Result<v1::Alert, Status>>,
    deadline: tokio::time::Instant,
}

/// Records of `readings.valid` judged before their changes are recorded:
/// one database transaction and one wake-up for what arrived together,
/// few enough that the live stream does not wait on a long round.
const MAX_RECORDS_PER_ROUND: usize = 256;

/// How long a forwarded action waits for the instance holding the alert.
const FORWARD_DEADLINE: Duration = Duration::from_secs(10);

/// The engine's input edge: `readings.valid` on Kafka, or the processor's
/// stored batches on the in-process bus (single-node mode).
#[derive(Debug)]
pub(crate) enum Input {
    Kafka,
    Bus(mpsc::Receiver<StoredReadingBatch>),
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl EngineTask {
    /// Records then notifies, retrying the database while it is down;
    /// without waiting for the WAL flush when `async_records` (the mark
    /// then joins `unflushed`).
    async fn apply(
        &mut self,
        events: Vec<AlertEvent>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Recorded>, AlertingError> {
        let wait = !self.async_records;
        self.apply_with(events, wait, shutdown).await
    }

    async fn apply_with(
        &mut self,
        events: Vec<AlertEvent>,
        wait_for_flush: bool,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Recorded>, AlertingError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let started_at = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let recorded = loop {
            match store::record(&self.db, events.clone(), wait_for_flush).await {
                Ok(r) => {
                    self.health.set_db_connected(true);
                    break r;
                }
                Err(e) if !e.is_transient() => {
                    // Retrying data the database refuses would stall every
                    // station behind it: log, count, go on.
                    metrics::counter!("alerting_record_failures_total").increment(1);
                    tracing::error!(error = %e, events = events.len(), "alert changes refused by the database; skipped");
                    return Ok(Vec::new());
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "recording alerts failed");
                    self.health.set_db_connected(false);
                    if self.db.is_closed() {
                        match store::connect(&self.config.database_url).await {
                            Ok(c) => self.db = c,
                            Err(e) => tracing::warn!(error = %e, "reconnecting to the database"),
                        }
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(AlertingError::ShuttingDown),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        };
        let alerts: Vec<v1::Alert> = recorded.iter().map(|r| r.alert.clone()).collect();
        // The changes' mark is read while they are notified, not before:
        // the commit is done, so a position read later is past it too, and
        // the round trip stays off the way to the live stream.
        let mark = async {
            if wait_for_flush {
                return None;
            }
            // Unknown: judged again after a rebuild.
            Some(Mark::after(started_at, durable::insert_lsn(&self.db).await))
        };
        let (mark, notified) =
            futures::future::join(mark, self.notifier.notify(&alerts, shutdown)).await;
        if let Some(mark) = mark {
            self.unflushed.push_back(Unflushed::Changes(mark));
        }
        notified?;
        for r in &recorded {
            metrics::counter!(
                "alerting_alerts_total",
                "rule" => r.event.alert.key.rule.as_str(),
                "state" => r.event.alert.state.as_str()
            )
            .increment(1);
            tracing::info!(
                alert = r.alert.id,
                state = r.event.alert.state.as_str(),
                severity = r.event.alert.severity.as_str(),
                message = r.alert.message,
                "alert"
            );
        }
        // Outbox: a crash before this line re-publishes at start.
        if let Err(e) = store::mark_notified(&mut self.db, &alerts).await {
            tracing::warn!(error = %e, "marking alerts as published; they may be published again at start");
        }
        Ok(recorded)
    }

    /// Single-node mode: `alert_pending` rows whose readings are judged
    /// and their changes recorded. A failure is logged, not retried: a row
    /// left behind only makes a restart judge those readings again.
    async fn judged(&self, done: &[(i64, &str)]) {
        if let Err(e) = quantrac_db::pending::judged(&self.db, done).await {
            metrics::counter!("alerting_pending_clear_failures_total").increment(1);
            tracing::warn!(error = %e, rows = done.len(), "clearing judged readings from alert_pending; a restart will judge them again");
        }
    }

    fn evaluate(&mut self, batch: &StoredReadingBatch) -> Vec<AlertEvent> {
        let started = Instant::now();
        let now = Utc::now();
        let mut events = Vec::new();
        for r in &batch.readings {
            events.extend(self.engine.observe(r, now));
        }
        metrics::counter!("alerting_readings_evaluated_total")
            .increment(batch.readings.len() as u64);
        metrics::histogram!("alerting_evaluation_seconds").record(started.elapsed().as_secs_f64());
        events
    }

    async fn command(
        &mut self,
        command: Command,
        shutdown: &CancellationToken,
    ) -> Result<(), AlertingError> {
        let Command {
            action,
            alert_id,
            officer,
            note,
            reply,
        } = command;
        if self.engine.handles(&alert_id) {
            let answer = self
                .act(&action, &alert_id, &officer, &note, shutdown)
                .await?;
            let _ = reply.send(answer);
            return Ok(());
        }
        // Another instance holds it (or none does): hand it over through
        // the database, and answer when that instance has acted.
        let assignee = match &action {
            Action::Assign(to) => to.as_str(),
            _ => "",
        };
        let forwarded = match store::alert_exists(&self.db, &alert_id).await {
            Ok(false) => Err(Status::not_found(format!("no alert {alert_id}"))),
            Ok(true) => store::forward_command(
                &self.db,
                &alert_id,
                action.as_str(),
                assignee,
                &officer,
                &note,
            )
            .await
            .map_err(|e| Status::unavailable(e.to_string())),
            Err(e) => Err(Status::unavailable(e.to_string())),
        };
        match forwarded {
            Ok(id) => self.waiting.push(Waiting {
                id,
                alert_id,
                reply,
                deadline: tokio::time::Instant::now() + FORWARD_DEADLINE,
            }),
            Err(status) => {
                let _ = reply.send(Err(status));
            }
        }
        Ok(())
    }

    /// Applies an officer's action to an alert this engine handles.
    async fn act(
        &mut self,
        action: &Action,
        alert_id: &str,
        officer: &str,
        note: &str,
        shutdown: &CancellationToken,
    ) -> Result<Result<v1::Alert, Status>, AlertingError> {
        let now = Utc::now();
        let result = match action {
            Action::Acknowledge => self.engine.acknowledge(alert_id, officer, note, now),
            Action::Resolve => self.engine.resolve(alert_id, officer, note, now),
            Action::Assign(to) => self.engine.assign(alert_id, officer, to, note, now),
            Action::Comment => self.engine.comment(alert_id, officer, note, now),
        };
        Ok(match result {
            // An answered action is on disk.
            Ok(event) => match self.apply_with(vec![event], true, shutdown).await?.pop() {
                Some(r) => Ok(r.alert),
                None => Err(Status::failed_precondition(
                    "the alert was already in that state",
                )),
            },
            Err(e) => Err(Status::not_found(e.to_string())),
        })
    }

    /// Actions other instances received for alerts this engine handles:
    /// applied here, their outcome written back. Then the answers to the
    /// actions this instance forwarded.
    async fn forwarded(&mut self, shutdown: &CancellationToken) -> Result<(), AlertingError> {
        let pending = match store::pending_commands(&self.db).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reading forwarded officer actions failed; retried on the next tick");
                return Ok(());
            }
        };
        for f in pending {
            if !self.engine.handles(&f.alert_id) {
                continue;
            }
            match store::claim_command(&self.db, f.id, &self.config.node_id).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, command = f.id, "claiming a forwarded action failed");
                    continue;
                }
            }
            let action = match f.action.as_str() {
                "acknowledge" => Action::Acknowledge,
                "resolve" => Action::Resolve,
                "assign" => Action::Assign(f.assignee.clone()),
                _ => Action::Comment,
            };
            let answer = self
                .act(&action, &f.alert_id, &f.officer, &f.note, shutdown)
                .await?;
            let outcome = match answer {
                Ok(alert) => store::Outcome {
                    code: tonic::Code::Ok as i32,
                    message: String::new(),
                    alert: Some(alert),
                },
                Err(status) => store::Outcome {
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                    alert: None,
                },
            };
            if let Err(e) = store::finish_command(&self.db, f.id, &outcome).await {
                tracing::warn!(error = %e, command = f.id, "writing a forwarded action's outcome failed");
            }
            metrics::counter!("alerting_forwarded_actions_total", "side" => "applied").increment(1);
        }
        self.answer_forwarded().await;
        Ok(())
    }

    /// Answers the officers whose actions went to another instance, once it
    /// acted or the deadline passed.
    async fn answer_forwarded(&mut self) {
        let mut still = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            let outcome = match store::command_outcome(&self.db, w.id).await {
                Ok(Some(o)) => Some(o),
                Ok(None) if tokio::time::Instant::now() < w.deadline => None,
                Ok(None) => {
                    // Nobody acted in time: give up, unless it was done
                    // in the meantime.
                    let gave_up = store::Outcome {
                        code: tonic::Code::Unavailable as i32,
                        message: format!(
                            "no alerting instance acted on {} within {FORWARD_DEADLINE:?}",
                            w.alert_id
                        ),
                        alert: None,
                    };
                    match store::finish_command(&self.db, w.id, &gave_up).await {
                        Ok(true) => Some(gave_up),
                        _ => store::command_outcome(&self.db, w.id).await.ok().flatten(),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a forwarded action's outcome failed");
                    None
                }
            };
            match outcome {
                Some(o) => {
                    metrics::counter!("alerting_forwarded_actions_total", "side" => "answered")
                        .increment(1);
                    let _ = w.reply.send(match o.alert {
                        Some(alert) if o.code == tonic::Code::Ok as i32 => Ok(alert),
                        _ => Err(Status::new(tonic::Code::from(o.code), o.message)),
                    });
                }
                None if tokio::time::Instant::now() > w.deadline + FORWARD_DEADLINE => {
                    let _ = w
                        .reply
                        .send(Err(Status::unavailable("database unavailable")));
                }
                None => still.push(w),
            }
        }
        self.waiting = still;
    }

    /// Runs the task; `/health` says it stopped once it returns.
    pub async fn run(self, input: Input, shutdown: CancellationToken) -> Result<(), AlertingError> {
        let health = Arc::clone(&self.health);
        let result = self.run_inner(input, shutdown).await;
        health.set_engine_running(false);
        result
    }

    async fn run_inner(
        mut self,
        input: Input,
        shutdown: CancellationToken,
    ) -> Result<(), AlertingError> {
        let mut clock = Clock::new(&self.config);
        let outcome = match input {
            Input::Bus(rx) => self.run_bus(rx, &mut clock, &shutdown).await,
            Input::Kafka => self.run_kafka(&mut clock, &shutdown).await,
        };
        match outcome {
            Err(AlertingError::ShuttingDown) => Ok(()),
            r => r,
        }
    }

    /// Single-node mode: stored batches from the processor's bus.
    async fn run_bus(
        &mut self,
        mut rx: mpsc::Receiver<StoredReadingBatch>,
        clock: &mut Clock,
        shutdown: &CancellationToken,
    ) -> Result<(), AlertingError> {
        // Judged at start: readings stored but maybe not judged before a
        // crash; then every station's line moves up to what is judged.
        let pending = std::mem::take(&mut self.pending);
        self.apply(pending, shutdown).await?;
        let unjudged = std::mem::take(&mut self.unjudged);
        let done: Vec<(i64, &str)> = unjudged.iter().map(|(b, s)| (*b, s.as_str())).collect();
        self.judged(&done).await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some(command) = self.commands.recv() => self.command(command, shutdown).await?,
                _ = clock.forwarded.tick() => self.forwarded(shutdown).await?,
                _ = clock.tick.tick() => self.on_tick(clock, shutdown).await?,
                Some(batch) = rx.recv() => {
                    let events = self.evaluate(&batch);
                    self.apply(events, shutdown).await?;
                    // Only now, with the changes recorded: a restart no
                    // longer needs to judge these readings.
                    if batch.unjudged_batch != 0 {
                        self.judged(&[(batch.unjudged_batch, batch.station_id.as_str())]).await;
                    }
                }
            }
        }
    }

    /// Kafka: `readings.valid`, the offset stored once the changes a batch
    /// makes are recorded and notified.
    async fn run_kafka(
        &mut self,
        clock: &mut Clock,
        shutdown: &CancellationToken,
    ) -> Result<(), AlertingError> {
        let watch = self.config.async_commit.then(|| {
            durable::FlushWatch::start(
                self.config.database_url.clone(),
                quantrac_db::ConnectOptions::default(),
            )
        });
        let mut flushed = None;
        if let Some(watch) = &watch {
            // Its connection must be older than the first record to vouch
            // for it.
            let mut rx = watch.receiver();
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = rx.wait_for(Option::is_some) => {
                    r.map_err(|_| AlertingError::Task("WAL flush watcher ended".into()))?;
                }
            }
            flushed = Some(rx);
            self.async_records = true;
        }
        loop {
            let cc = quantrac_plumbing::kafka::committing_consumer_config(
                &self.config.kafka.brokers,
                &self.config.kafka.properties,
                &self.config.kafka.group_id,
                &self.config.node_id,
                self.config.kafka.session_timeout,
            );
            // Several instances share the topic: each watches for silence
            // only the stations whose partitions it holds.
            let ownership = Arc::new(crate::ownership::Ownership::default());
            self.engine.set_owner(Arc::clone(&ownership));
            let context = OwnershipContext {
                ownership,
                topic: self.config.kafka.valid_topic.clone(),
            };
            let consumer: StreamConsumer<OwnershipContext> = cc
                .create_with_context(context)
                .map_err(|source| quantrac_plumbing::kafka::KafkaError::Create {
                    what: "consumer",
                    source,
                })?;
            consumer
                .subscribe(&[&self.config.kafka.valid_topic])
                .map_err(|e| quantrac_plumbing::kafka::KafkaError::operation("subscribe", e))?;
            let result = self.consume(&consumer, clock, &mut flushed, shutdown).await;
            if matches!(result, Ok(Ended::Stopped)) {
                // A stop waits a little for the last flush, so that the
                // next start does not judge it all again.
                let until = tokio::time::Instant::now() + Duration::from_secs(2);
                while self.settle(&consumer, flushed.as_ref()) && !self.unflushed.is_empty() {
                    if tokio::time::timeout_at(until, durable::changed(&mut flushed))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
            drop(consumer);
            match result? {
                Ended::Stopped => return Ok(()),
                Ended::Replay => self.rebuild(shutdown).await?,
            }
        }
    }

    /// Stores the offsets at the front of `unflushed` whose changes before
    /// them are on disk. False when some changes can no longer be known
    /// to be (rebuild).
    fn settle(
        &mut self,
        consumer: &StreamConsumer<OwnershipContext>,
        flushed: Option<&watch::Receiver<Option<Flushed>>>,
    ) -> bool {
        let now = flushed.and_then(|rx| *rx.borrow());
        while let Some(front) = self.unflushed.front() {
            match front {
                Unflushed::Changes(mark) => match durable::verdict(mark, now.as_ref()) {
                    Verdict::Durable => {}
                    Verdict::Wait => return true,
                    Verdict::Lost => return false,
                },
                Unflushed::Offsets(offsets) => {
                    for (topic, partition, offset) in offsets {
                        if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
                            tracing::info!(error = %e, "offset not stored (partition revoked)");
                        }
                    }
                }
            }
            self.unflushed.pop_front();
        }
        true
    }

    /// After the database may have lost recorded changes: the engine as a
    /// start builds it (open alerts from the database, windows from
    /// `readings.valid` up to the stored offsets), and what was recorded
    /// but not published is published.
    async fn rebuild(&mut self, shutdown: &CancellationToken) -> Result<(), AlertingError> {
        metrics::counter!("alerting_replays_total").increment(1);
        tracing::warn!(
            "alert changes recorded without waiting for the WAL flush can no longer be known to be on disk (the database connection was lost); rebuilding the engine from the database and judging again from the stored offsets"
        );
        self.unflushed.clear();
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt: Result<(), AlertingError> = async {
                if self.db.is_closed() {
                    self.db = store::connect(&self.config.database_url).await?;
                }
                let mut engine = self.engine.fresh();
                let open = open_records(store::open_alerts(&self.db).await?);
                let restored = open.len();
                engine.restore(open);
                crate::warm_up_from_kafka(&mut engine, &self.config, restored).await?;
                self.engine = engine;
                crate::publish_outbox(&mut self.db, &self.notifier, shutdown).await
            }
            .await;
            match attempt {
                Ok(()) => {
                    self.health.set_db_connected(true);
                    return Ok(());
                }
                Err(AlertingError::ShuttingDown) => return Err(AlertingError::ShuttingDown),
                Err(e) if e.is_retryable() => {
                    self.health.set_db_connected(false);
                    tracing::warn!(error = %e, retry_in = ?backoff, "rebuilding the engine");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(AlertingError::ShuttingDown),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn consume(
        &mut self,
        consumer: &StreamConsumer<OwnershipContext>,
        clock: &mut Clock,
        flushed: &mut Option<watch::Receiver<Option<Flushed>>>,
        shutdown: &CancellationToken,
    ) -> Result<Ended, AlertingError> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Ended::Stopped),
                () = durable::changed(flushed), if !self.unflushed.is_empty() => {
                    if !self.settle(consumer, flushed.as_ref()) {
                        return Ok(Ended::Replay);
                    }
                }
                Some(command) = self.commands.recv() => self.command(command, shutdown).await?,
                _ = clock.forwarded.tick() => self.forwarded(shutdown).await?,
                _ = clock.tick.tick() => {
                    let ctx = consumer.context();
                    if ctx.ownership.count_unknown() {
                        let count = ctx.partition_count(consumer, Duration::from_secs(1));
                        ctx.ownership.assign(&[], count, Utc::now());
                    }
                    self.on_tick(clock, shutdown).await?;
                    if !self.settle(consumer, flushed.as_ref()) {
                        return Ok(Ended::Replay);
                    }
                }
                m = consumer.recv(), if self.unflushed.len() < MAX_UNFLUSHED => {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => { tracing::warn!(error = %e, "Kafka consumer error"); continue; }
                    };
                    // With it, what has already arrived: judged together,
                    // recorded in one transaction, then every offset stored.
                    let mut messages = vec![m];
                    while messages.len() < MAX_RECORDS_PER_ROUND {
                        match consumer.recv().now_or_never() {
                            Some(Ok(m)) => messages.push(m),
                            Some(Err(e)) => { tracing::warn!(error = %e, "Kafka consumer error"); break; }
                            None => break,
                        }
                    }
                    let mut events = Vec::new();
                    for m in &messages {
                        match StoredReadingBatch::decode(m.payload().unwrap_or_default()) {
                            Ok(batch) => events.extend(self.evaluate(&batch)),
                            Err(e) => {
                                tracing::error!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "undecodable record on readings.valid; skipped");
                            }
                        }
                    }
                    self.apply(events, shutdown).await?;
                    // Stored (librdkafka commits the next one) once what
                    // they changed is on disk.
                    self.unflushed.push_back(Unflushed::Offsets(
                        messages
                            .iter()
                            .map(|m| (m.topic().to_owned(), m.partition(), m.offset()))
                            .collect(),
                    ));
                    if !self.settle(consumer, flushed.as_ref()) {
                        return Ok(Ended::Replay);
                    }
                }
            }
        }
    }

    /// The wall clock: rule-file reloads, then time-driven changes (data
    /// gaps, averages closing).
    async fn on_tick(
        &mut self,
        clock: &mut Clock,
        shutdown: &CancellationToken,
    ) -> Result<(), AlertingError> {
        let now_modified = modified(&self.config.rules);
        if now_modified != clock.rules_modified {
            clock.rules_modified = now_modified;
            match RulesConfig::load(&self.config.rules) {
                Ok(rules) => {
                    self.engine.reload(rules);
                    tracing::info!(path = %self.config.rules.display(), "rules reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "rules file refused; keeping the previous rules")
                }
            }
        }
        let events = self.engine.tick(Utc::now());
        self.apply(events, shutdown).await?;
        // On the clock, not on the 250 ms poll for forwarded actions.
        if let Err(e) = store::prune_commands(&self.db).await {
            tracing::warn!(error = %e, "pruning finished officer actions failed");
        }
        Ok(())
    }
}

/// Keeps `Ownership` in step with the consumer group's assignment.
struct OwnershipContext {
    ownership: Arc<crate::ownership::Ownership>,
    topic: String,
}

impl OwnershipContext {
    /// The topic's partition count, as the broker gives it.
    fn partition_count<C: Consumer<Self>>(&self, consumer: &C, timeout: Duration) -> Option<u32> {
        let metadata = consumer.fetch_metadata(Some(&self.topic), timeout).ok()?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.topic)?;
        u32::try_from(topic.partitions().len()).ok()
    }
}

impl rdkafka::ClientContext for OwnershipContext {}

impl rdkafka::consumer::ConsumerContext for OwnershipContext {
    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let ours = |tpl: &rdkafka::TopicPartitionList| -> Vec<i32> {
            tpl.elements_for_topic(&self.topic)
                .iter()
                .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
                .collect()
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                let count = self.partition_count(consumer, Duration::from_secs(5));
                let parts = ours(tpl);
                tracing::info!(partitions = ?parts, topic_partitions = ?count, "readings.valid partitions assigned");
                if count.is_none() {
                    // Without the count no station can be placed; the
                    // clock tick asks again.
                    tracing::warn!(
                        topic = self.topic,
                        "partition count of readings.valid unknown; data gaps wait until it is read"
                    );
                }
                self.ownership.assign(&parts, count, Utc::now());
            }
            Rebalance::Revoke(tpl) => self.ownership.revoke(&ours(tpl)),
            Rebalance::Error(e) => tracing::warn!(error = %e, "consumer group rebalance failed"),
        }
    }
}

/// The engine's clock and what it watches between ticks.
struct Clock {
    tick: tokio::time::Interval,
    /// Officers' actions forwarded between instances, looked for this often.
    forwarded: tokio::time::Interval,
    rules_modified: Option<SystemTime>,
}

impl Clock {
    fn new(config: &AlertingConfig) -> Self {
        let mut tick = tokio::time::interval(config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut forwarded = tokio::time::interval(Duration::from_millis(250));
        forwarded.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Clock {
            tick,
            forwarded,
            rules_modified: modified(&config.rules),
        }
    }
}

/// Alerts from their stored protobuf form, for the engine after a restart.
pub(crate) fn open_records(alerts: Vec<v1::Alert>) -> Vec<crate::alert::AlertRecord> {
    alerts
        .into_iter()
        .filter_map(|a| crate::alert::AlertRecord::from_proto(&a))
        .collect()
}
