//! Alerts in the database: the `alerts` row per incident and the
//! `alert_events` history whose sequence numbers subscribers resume after.
//!
//! Idempotence (invariant 2): an `Opened` event whose key already has a row
//! (a replay, a restart, a second instance) is dropped here, before anyone
//! is notified; a change to an alert that is already resolved likewise.

use chrono::{DateTime, Utc};
use prost::Message;
use quantrac_db::describe;
use quantrac_proto::v1;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::alert::{AlertEvent, Change};

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error("database: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("stored alert `{0}` cannot be read back: {1}")]
    Corrupt(String, String),
    #[error("database connection closed")]
    Closed,
    #[error("database_url: {0}")]
    Url(String),
    #[error("an alert change cannot be written as `{0}`: {1}")]
    Encode(Type, String),
}

impl AlertStoreError {
    /// Whether waiting can help (connection trouble, server restarting),
    /// as opposed to data the database refuses.
    pub fn is_transient(&self) -> bool {
        match self {
            AlertStoreError::Db(e) => quantrac_db::is_transient(e),
            AlertStoreError::Corrupt(..) => false,
            AlertStoreError::Closed => true,
            AlertStoreError::Url(_) | AlertStoreError::Encode(..) => false,
        }
    }
}

/// The advisory lock key serialising `record` ("qalerts" in ASCII; the
/// migrations use "quantrac").
const RECORD_LOCK: i64 = 0x0071_616c_6572_7473;

/// An event that was new, with its position in the history.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub event: AlertEvent,
    pub alert: v1::Alert,
}

/// How to reach the database (TLS as `quantrac_db::parse_url` says).
pub fn database(
    url: &str,
) -> Result<(tokio_postgres::Config, quantrac_db::MakeRustlsConnect), AlertStoreError> {
    quantrac_db::parse_url(url).map_err(|e| AlertStoreError::Url(e.to_string()))
}

/// Longest any alerting statement may run: a statement stuck on a lock or
/// a sick server fails (and is retried) instead of stalling the engine for
/// good. Generous: the warm-up reads a day of readings in one statement.
pub const STATEMENT_TIMEOUT: &str = "5min";

pub async fn connect(url: &str) -> Result<Client, AlertStoreError> {
    let (mut config, tls) = database(url)?;
    config.connect_timeout(std::time::Duration::from_secs(10));
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "alerting database connection closed");
        }
    });
    client
        .batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
        .await?;
    Ok(client)
}

/// A new alert and its first history row, in one statement; no row when
/// the alert exists (a replayed incident). The new history row is
/// announced on `live::CHANNEL` (delivered at commit).
const OPEN_SQL: &str = "WITH a AS (INSERT INTO alerts (id, rule, station_id, parameter, window_start, window_end, severity, state, \
     observed_value, limit_value, message, industrial_zone, opened_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING RETURNING id), \
     e AS (INSERT INTO alert_events (alert_id, change, state, actor, note, at, alert) \
     SELECT a.id, $15::text, $8, $16::text, $17, $18::timestamptz, $19::bytea FROM a RETURNING sequence) \
     SELECT sequence, pg_notify('quantrac_alert_events', sequence::text) FROM e";

/// A change to an alert and its history row, in one statement; no row when
/// the alert is resolved already (or unknown). Announced as `OPEN_SQL`.
const CHANGE_SQL: &str = "WITH a AS (UPDATE alerts SET state = $2, severity = $3, observed_value = $4, window_end = $5, message = $6, \
     updated_at = $7, acknowledged_by = $8, note = $9, assignee = $10 WHERE id = $1 AND state <> 'resolved' RETURNING id), \
     e AS (INSERT INTO alert_events (alert_id, change, state, actor, note, at, alert) \
     SELECT a.id, $11::text, $2, $12::text, $9, $13::timestamptz, $14::bytea FROM a RETURNING sequence) \
     SELECT sequence, pg_notify('quantrac_alert_events', sequence::text) FROM e";

/// A statement parameter and its PostgreSQL type.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
type Typed<'a> = (Param<'a>, Type);

/// What a change's statement takes that is computed, not borrowed.
struct Owned {
    id: String,
    rule: &'static str,
    state: &'static str,
    severity: &'static str,
    change: &'static str,
    actor: Option<String>,
    proto: Vec<u8>,
}

impl Owned {
    fn of(event: &AlertEvent) -> Self {
        let a = &event.alert;
        let actor = match &event.change {
            Change::Resolved { by } => by.clone(),
            Change::Assigned { by } | Change::Commented { by } => Some(by.clone()),
            Change::Acknowledged => a.acknowledged_by.clone(),
            _ => None,
        };
        Self {
            id: a.key.id(),
            rule: a.key.rule.as_str(),
            state: a.state.as_str(),
            severity: a.severity.as_str(),
            change: event.change.as_str(),
            actor,
            proto: a.to_proto(0).encode_to_vec(),
        }
    }
}

/// Writes the events in one transaction; returns those that were new, in
/// order, with their sequence numbers.
pub async fn record(
    client: &Client,
    events: Vec<AlertEvent>,
    wait_for_flush: bool,
) -> Result<Vec<Recorded>, AlertStoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // Each change is one statement: the alert row, then its history row
    // only if the alert row changed. All are sent at once (pipelined, in
    // order, so sequence numbers follow the changes), each with its
    // parameters' types: one round trip, where a statement to prepare
    // first would take two.
    let owned: Vec<Owned> = events.iter().map(Owned::of).collect();
    let statements: Vec<(&str, Vec<Typed<'_>>)> = events
        .iter()
        .zip(&owned)
        .map(|(event, o)| {
            let a = &event.alert;
            match event.change {
                Change::Opened => (
                    OPEN_SQL,
                    vec![
                        (&o.id as Param<'_>, Type::TEXT),
                        (&o.rule, Type::TEXT),
                        (&a.key.station_id, Type::TEXT),
                        (&a.key.parameter, Type::TEXT),
                        (&a.key.window_start, Type::TIMESTAMPTZ),
                        (&a.window_end, Type::TIMESTAMPTZ),
                        (&o.severity, Type::TEXT),
                        (&o.state, Type::TEXT),
                        (&a.observed_value, Type::FLOAT8),
                        (&a.limit_value, Type::FLOAT8),
                        (&a.message, Type::TEXT),
                        (&a.industrial_zone, Type::TEXT),
                        (&a.opened_at, Type::TIMESTAMPTZ),
                        (&a.updated_at, Type::TIMESTAMPTZ),
                        (&o.change, Type::TEXT),
                        (&o.actor, Type::TEXT),
                        (&a.note, Type::TEXT),
                        (&event.at, Type::TIMESTAMPTZ),
                        (&o.proto, Type::BYTEA),
                    ],
                ),
                _ => (
                    CHANGE_SQL,
                    vec![
                        (&o.id as Param<'_>, Type::TEXT),
                        (&o.state, Type::TEXT),
                        (&o.severity, Type::TEXT),
                        (&a.observed_value, Type::FLOAT8),
                        (&a.window_end, Type::TIMESTAMPTZ),
                        (&a.message, Type::TEXT),
                        (&a.updated_at, Type::TIMESTAMPTZ),
                        (&a.acknowledged_by, Type::TEXT),
                        (&a.note, Type::TEXT),
                        (&a.assignee, Type::TEXT),
                        (&o.change, Type::TEXT),
                        (&o.actor, Type::TEXT),
                        (&event.at, Type::TIMESTAMPTZ),
                        (&o.proto, Type::BYTEA),
                    ],
                ),
            }
        })
        .collect();
    // A parameter the client cannot encode would leave its statement
    // unsent while the COMMIT below still goes: found here, before
    // anything is sent.
    let mut scratch = bytes::BytesMut::new();
    for (p, ty) in statements.iter().flat_map(|(_, p)| p) {
        scratch.clear();
        p.to_sql_checked(ty, &mut scratch)
            .map_err(|e| AlertStoreError::Encode(ty.clone(), e.to_string()))?;
    }
    // The whole transaction in one round trip: every message is queued
    // at the first poll, in this order. First the commit mode (the caller
    // stores its offsets once the flush has passed, `quantrac_db::durable`)
    // and one recorder at a time across instances, so that sequence
    // numbers commit in order (see `live`; alert changes are few, the wait
    // is short). Last the COMMIT, which the server turns into a rollback
    // when anything before it failed: the first error below says what.
    let begin = format!(
        "BEGIN; {}SELECT pg_advisory_xact_lock({RECORD_LOCK})",
        if wait_for_flush {
            ""
        } else {
            "SET LOCAL synchronous_commit = off; "
        }
    );
    let (begun, results, committed) = futures::join!(
        client.batch_execute(&begin),
        futures::future::join_all(
            statements
                .iter()
                .map(|(sql, p)| client.query_typed_opt(sql, p)),
        ),
        client.batch_execute("COMMIT"),
    );
    drop(statements);
    let rows = begun
        .and_then(|()| results.into_iter().collect::<Result<Vec<_>, _>>())
        .and_then(|rows| committed.map(|()| rows));
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            // Normally the COMMIT has already ended the transaction; when
            // the connection broke before it ran, there is none.
            if !client.is_closed() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            return Err(e.into());
        }
    };
    let mut out = Vec::new();
    for (event, row) in events.into_iter().zip(rows) {
        let Some(row) = row else {
            metrics::counter!("alerting_duplicates_skipped_total").increment(1);
            continue;
        };
        let sequence = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let alert = event.alert.to_proto(sequence);
        out.push(Recorded { event, alert });
    }
    Ok(out)
}

/// Rows of `(sequence, alert)` from `alert_events` as alerts carrying
/// their sequence number.
fn alerts_from_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<v1::Alert>, AlertStoreError> {
    rows.iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            let bytes: Vec<u8> = r.get(1);
            let mut a = v1::Alert::decode(&bytes[..])
                .map_err(|e| AlertStoreError::Corrupt(seq.to_string(), e.to_string()))?;
            a.sequence = u64::try_from(seq).unwrap_or(0);
            Ok(a)
        })
        .collect()
}

/// History after `sequence`, oldest first, at most `limit`.
pub async fn events_after(
    client: &Client,
    sequence: u64,
    limit: i64,
) -> Result<Vec<v1::Alert>, AlertStoreError> {
    let after = i64::try_from(sequence).unwrap_or(i64::MAX);
    let rows = client
        .query("SELECT sequence, alert FROM alert_events WHERE sequence > $1 ORDER BY sequence LIMIT $2", &[&after, &limit])
        .await?;
    alerts_from_rows(&rows)
}

/// The newest sequence number (0 when there is no history).
pub async fn last_sequence(client: &Client) -> Result<u64, AlertStoreError> {
    let row = client
        .query_one("SELECT coalesce(max(sequence), 0) FROM alert_events", &[])
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Alerts not yet resolved, as the engine needs them after a restart: the
/// latest stored `Alert` of each.
pub async fn open_alerts(client: &Client) -> Result<Vec<v1::Alert>, AlertStoreError> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (e.alert_id) e.sequence, e.alert FROM alert_events e \
             JOIN alerts a ON a.id = e.alert_id WHERE a.state <> 'resolved' \
             ORDER BY e.alert_id, e.sequence DESC",
            &[],
        )
        .await?;
    alerts_from_rows(&rows)
}

/// Recorded changes not yet published (a crash between recording and
/// publishing), oldest first.
pub async fn unnotified(client: &Client) -> Result<Vec<v1::Alert>, AlertStoreError> {
    let rows = client
        .query(
            "SELECT sequence, alert FROM alert_events WHERE notified_at IS NULL ORDER BY sequence",
            &[],
        )
        .await?;
    alerts_from_rows(&rows)
}

/// Marks changes as published.
pub async fn mark_notified(
    client: &mut Client,
    alerts: &[v1::Alert],
) -> Result<(), AlertStoreError> {
    let sequences: Vec<i64> = alerts
        .iter()
        .filter_map(|a| i64::try_from(a.sequence).ok())
        .collect();
    if !sequences.is_empty() {
        let tx = client.transaction().await?;
        // Without waiting for the WAL flush: the next readings' judging
        // waits for this, and a mark lost in a database crash only
        // publishes those changes again at start, as a crash before the
        // mark does.
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        tx.execute(
            "UPDATE alert_events SET notified_at = now() WHERE sequence = ANY($1)",
            &[&sequences],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The window covering a station at a measurement time, if any.
pub async fn maintenance_window(
    db: &impl tokio_postgres::GenericClient,
    station: &str,
    at: DateTime<Utc>,
) -> Result<Option<String>, AlertStoreError> {
    let row = db
        .query_opt(
            "SELECT id, reason FROM maintenance_windows WHERE station_id = $1 AND starts_at <= $2 AND ends_at > $2 \
             ORDER BY id LIMIT 1",
            &[&station, &at],
        )
        .await?;
    Ok(row.map(|r| {
        format!(
            "maintenance #{}: {}",
            r.get::<_, i64>(0),
            r.get::<_, String>(1)
        )
    }))
}

/// Whether the station was under planned maintenance when `a` was measured
/// (mail and webhooks skip such changes).
pub async fn in_maintenance(db: &Client, a: &v1::Alert) -> Result<bool, AlertStoreError> {
    let Some(at) = a
        .window_start
        .as_ref()
        .and_then(quantrac_proto::domain::from_timestamp)
    else {
        return Ok(false);
    };
    Ok(maintenance_window(db, &a.station_id, at).await?.is_some())
}

/// An officer's action another instance received, for the one holding the
/// alert (`alert_commands`).
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub id: i64,
    pub alert_id: String,
    pub action: String,
    pub assignee: String,
    pub officer: String,
    pub note: String,
}

/// What became of a forwarded action: a `tonic::Code`, its message, and
/// the alert after it when it succeeded.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: i32,
    pub message: String,
    pub alert: Option<v1::Alert>,
}

/// Whether an alert with this id was ever recorded.
pub async fn alert_exists(client: &Client, alert_id: &str) -> Result<bool, AlertStoreError> {
    Ok(client
        .query_opt("SELECT 1 FROM alerts WHERE id = $1", &[&alert_id])
        .await?
        .is_some())
}

/// Queues an action for the instance holding the alert; returns its id.
pub async fn forward_command(
    client: &Client,
    alert_id: &str,
    action: &str,
    assignee: &str,
    officer: &str,
    note: &str,
) -> Result<i64, AlertStoreError> {
    Ok(client
        .query_one(
            "INSERT INTO alert_commands (alert_id, action, assignee, officer, note) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&alert_id, &action, &assignee, &officer, &note],
        )
        .await?
        .get(0))
}

/// Actions not yet done, oldest first.
pub async fn pending_commands(client: &Client) -> Result<Vec<Forwarded>, AlertStoreError> {
    let rows = client
        .query(
            "SELECT id, alert_id, action, assignee, officer, note FROM alert_commands \
             WHERE done_at IS NULL ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Forwarded {
            id: r.get(0),
            alert_id: r.get(1),
            action: r.get(2),
            assignee: r.get(3),
            officer: r.get(4),
            note: r.get(5),
        })
        .collect())
}

/// Takes a pending action for `node`; false when another instance took it
/// or it is done.
pub async fn claim_command(client: &Client, id: i64, node: &str) -> Result<bool, AlertStoreError> {
    Ok(client
        .execute(
            "UPDATE alert_commands SET claimed_by = $2 \
             WHERE id = $1 AND claimed_by IS NULL AND done_at IS NULL",
            &[&id, &node],
        )
        .await?
        == 1)
}

/// Deletes actions finished more than a day ago.
pub async fn prune_commands(client: &Client) -> Result<u64, AlertStoreError> {
    Ok(client
        .execute(
            "DELETE FROM alert_commands WHERE done_at < now() - interval '1 day'",
            &[],
        )
        .await?)
}

/// Writes an action's outcome, unless it is already done (the receiving
/// instance gave up on it); returns whether it was written.
pub async fn finish_command(
    client: &Client,
    id: i64,
    outcome: &Outcome,
) -> Result<bool, AlertStoreError> {
    let result = outcome.alert.as_ref().map(Message::encode_to_vec);
    Ok(client
        .execute(
            "UPDATE alert_commands SET done_at = now(), code = $2, message = $3, result = $4 \
             WHERE id = $1 AND done_at IS NULL",
            &[&id, &outcome.code, &outcome.message, &result],
        )
        .await?
        == 1)
}

/// The outcome of a forwarded action, once it is done.
pub async fn command_outcome(client: &Client, id: i64) -> Result<Option<Outcome>, AlertStoreError> {
    let Some(row) = client
        .query_opt(
            "SELECT code, message, result FROM alert_commands WHERE id = $1 AND done_at IS NOT NULL",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let result: Option<Vec<u8>> = row.get(2);
    let alert = match result {
        Some(bytes) => Some(
            v1::Alert::decode(bytes.as_slice())
                .map_err(|e| AlertStoreError::Corrupt(format!("command {id}"), e.to_string()))?,
        ),
        None => None,
    };
    Ok(Some(Outcome {
        code: row.get::<_, Option<i32>>(0).unwrap_or(2),
        message: row.get::<_, Option<String>>(1).unwrap_or_default(),
        alert,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_statements_announce_on_the_channel_instances_listen_to() {
        let notify = format!("pg_notify('{}', sequence::text)", crate::live::CHANNEL);
        assert!(OPEN_SQL.contains(&notify), "{OPEN_SQL}");
        assert!(CHANGE_SQL.contains(&notify), "{CHANGE_SQL}");
    }
}
