//! The engine task: owns the rules engine and feeds it, in one place,
//! everything that can change an alert: readings from `readings.valid`,
//! the wall clock, officers' commands, and rule-file reloads. Each change is
//! recorded in the database first, then notified, and only then is the
//! Kafka offset stored: a crash replays, and the database drops what it has
//! already seen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use prost::Message;
use quantrac_proto::v1::{self, StoredReadingBatch};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use tokio::sync::mpsc;
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
    /// Readings from the processor in single-node mode (instead of Kafka).
    pub local: Option<mpsc::Receiver<StoredReadingBatch>>,
    /// Alert changes from judging, at start, readings stored but maybe not
    /// judged before a crash (single-node mode).
    pub pending: Vec<AlertEvent>,
    /// What `/health` reports of this task.
    pub health: Arc<crate::Health>,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl EngineTask {
    /// Records then notifies, retrying the database while it is down.
    async fn apply(
        &mut self,
        events: Vec<AlertEvent>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Recorded>, AlertingError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut backoff = Duration::from_millis(200);
        let recorded = loop {
            match store::record(&mut self.db, events.clone()).await {
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
        let alerts: Vec<v1::Alert> = recorded.iter().map(|r| r.alert.clone()).collect();
        self.notifier.notify(&alerts, shutdown).await?;
        // Outbox: a crash before this line re-publishes at start.
        if let Err(e) = store::mark_notified(&self.db, &alerts).await {
            tracing::warn!(error = %e, "marking alerts as published; they may be published again at start");
        }
        Ok(recorded)
    }

    /// The engine's watermarks for the stations of `batch`.
    fn batch_watermarks(&self, batch: &StoredReadingBatch) -> Vec<(String, chrono::DateTime<Utc>)> {
        let stations: std::collections::HashSet<&str> = batch
            .readings
            .iter()
            .map(|r| r.station_id.as_str())
            .collect();
        self.engine
            .watermarks()
            .filter(|(s, _)| stations.contains(s))
            .map(|(s, t)| (s.to_owned(), t))
            .collect()
    }

    /// Single-node mode. A failure is logged, not retried: a watermark left
    /// behind only makes a restart judge more readings again.
    async fn save_watermarks(&self, marks: Vec<(String, chrono::DateTime<Utc>)>) {
        if let Err(e) = store::save_watermarks(&self.db, &marks).await {
            metrics::counter!("alerting_watermark_failures_total").increment(1);
            tracing::warn!(error = %e, stations = marks.len(), "saving alert watermarks; a restart will judge these readings again");
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
        let now = Utc::now();
        let Command {
            action,
            alert_id,
            officer,
            note,
            reply,
        } = command;
        let result = match action {
            Action::Acknowledge => self.engine.acknowledge(&alert_id, &officer, &note, now),
            Action::Resolve => self.engine.resolve(&alert_id, &officer, &note, now),
        };
        let answer = match result {
            Ok(event) => match self.apply(vec![event], shutdown).await?.pop() {
                Some(r) => Ok(r.alert),
                None => Err(Status::failed_precondition(
                    "the alert was already in that state",
                )),
            },
            Err(e) => Err(Status::not_found(e.to_string())),
        };
        let _ = reply.send(answer);
        Ok(())
    }

    /// Runs the task; `/health` says it stopped once it returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AlertingError> {
        let health = Arc::clone(&self.health);
        let result = self.run_inner(shutdown).await;
        health.set_engine_running(false);
        result
    }

    async fn run_inner(mut self, shutdown: CancellationToken) -> Result<(), AlertingError> {
        let consumer: Option<StreamConsumer> = if self.local.is_some() {
            None
        } else {
            let cc = quantrac_plumbing::kafka::committing_consumer_config(
                &self.config.kafka.brokers,
                &self.config.kafka.properties,
                &self.config.kafka.group_id,
                &self.config.node_id,
                self.config.kafka.session_timeout,
            );
            let c: StreamConsumer = quantrac_plumbing::kafka::create(&cc, "consumer")?;
            c.subscribe(&[&self.config.kafka.valid_topic])
                .map_err(|e| quantrac_plumbing::kafka::KafkaError::operation("subscribe", e))?;
            Some(c)
        };
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rules_modified = modified(&self.config.rules);
        let mut local = self.local.take();
        if local.is_some() {
            let pending = std::mem::take(&mut self.pending);
            match self.apply(pending, &shutdown).await {
                Err(AlertingError::ShuttingDown) => return Ok(()),
                r => {
                    r?;
                }
            }
            let all: Vec<(String, chrono::DateTime<Utc>)> = self
                .engine
                .watermarks()
                .map(|(s, t)| (s.to_owned(), t))
                .collect();
            self.save_watermarks(all).await;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(command) = self.commands.recv() => match self.command(command, &shutdown).await {
                    Err(AlertingError::ShuttingDown) => break,
                    r => r?,
                },
                _ = tick.tick() => {
                    let now_modified = modified(&self.config.rules);
                    if now_modified != rules_modified {
                        rules_modified = now_modified;
                        match RulesConfig::load(&self.config.rules) {
                            Ok(rules) => {
                                self.engine.reload(rules);
                                tracing::info!(path = %self.config.rules.display(), "rules reloaded");
                            }
                            Err(e) => tracing::error!(error = %e, "rules file refused; keeping the previous rules"),
                        }
                    }
                    let events = self.engine.tick(Utc::now());
                    match self.apply(events, &shutdown).await {
                        Err(AlertingError::ShuttingDown) => break,
                        r => { r?; }
                    }
                }
                Some(batch) = async { match local.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    let events = self.evaluate(&batch);
                    match self.apply(events, &shutdown).await {
                        Err(AlertingError::ShuttingDown) => break,
                        r => { r?; }
                    }
                    // Only now, with the changes recorded: the line up to
                    // which a restart rebuilds instead of judging again.
                    let marks = self.batch_watermarks(&batch);
                    self.save_watermarks(marks).await;
                }
                m = async { match consumer.as_ref() { Some(c) => c.recv().await, None => std::future::pending().await } } => {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => { tracing::warn!(error = %e, "Kafka consumer error"); continue; }
                    };
                    let events = match StoredReadingBatch::decode(m.payload().unwrap_or_default()) {
                        Ok(batch) => self.evaluate(&batch),
                        Err(e) => {
                            tracing::error!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "undecodable record on readings.valid; skipped");
                            Vec::new()
                        }
                    };
                    match self.apply(events, &shutdown).await {
                        Err(AlertingError::ShuttingDown) => break,
                        r => { r?; }
                    }
                    if let Some(c) = consumer.as_ref()
                        && let Err(e) = c.store_offset_from_message(&m)
                    {
                        tracing::info!(error = %e, "offset not stored (partition revoked)");
                    }
                }
            }
        }
        if let Some(c) = consumer.as_ref() {
            let _ = c.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        }
        Ok(())
    }
}

/// Alerts from their stored protobuf form, for the engine after a restart.
pub(crate) fn open_records(alerts: Vec<v1::Alert>) -> Vec<crate::alert::AlertRecord> {
    alerts
        .into_iter()
        .filter_map(|a| crate::alert::AlertRecord::from_proto(&a))
        .collect()
}
