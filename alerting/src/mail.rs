//! E-mail to people: officers by subscription (zone, station, severity),
//! the facility's own contacts (from the registry) for exceedances, lost
//! connection and device faults, escalation of critical alerts left
//! unacknowledged, and a daily digest of open alerts.
//!
//! Delivery goes through the `mail_outbox` table:
//! - the **planner** reads `alert_events` after its cursor and writes one
//!   row per (change, recipient) with a unique key, in the same
//!   transaction that moves the cursor: a change is planned exactly once;
//! - the **sender** sends due rows and marks each sent only after the SMTP
//!   server accepted it: a crash before that resends after the restart
//!   (at least once), and a sent row is never sent again;
//! - a refused message is retried with backoff up to `max_attempts`, then
//!   marked failed (kept, counted); a dead mail server delays only mail;
//! - a change measured inside a station's maintenance window is written
//!   with the window as `suppressed` and never sent.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use prost::Message as _;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::registry::Registry;
use quantrac_proto::v1;
use tokio::sync::{Notify, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::config::{EmailConfig, Subscription};
use crate::store::{self, AlertStoreError};

/// The planner's row in `webhook_cursors`.
pub const PLANNER: &str = "mail:planner";

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("email.smtp_url: {0}")]
    Url(String),
    #[error("email.from: {0}")]
    From(String),
}

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An officer's subscription.
    Subscription,
    /// The station's facility.
    Facility,
    Escalation,
    Digest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subscription => "subscription",
            Kind::Facility => "facility",
            Kind::Escalation => "escalation",
            Kind::Digest => "digest",
        }
    }
}

fn severity_rank(s: &str) -> i32 {
    match s {
        "critical" => v1::AlertSeverity::Critical as i32,
        "warning" => v1::AlertSeverity::Warning as i32,
        _ => v1::AlertSeverity::Info as i32,
    }
}

fn subscribed(s: &Subscription, a: &v1::Alert) -> bool {
    (s.zones.is_empty() || s.zones.contains(&a.industrial_zone))
        && (s.stations.is_empty() || s.stations.contains(&a.station_id))
        && a.severity >= severity_rank(&s.min_severity)
}

/// Who is told about `change` (opened, renotified, resolved, ...) of `a`:
/// subscribers on opening, re-notification and resolution; the facility's
/// contacts on opening and re-notification of the rules they are told
/// about. Each address once.
pub fn recipients(
    cfg: &EmailConfig,
    contacts: &[String],
    change: &str,
    a: &v1::Alert,
) -> Vec<(String, Kind)> {
    let mut out: Vec<(String, Kind)> = Vec::new();
    if matches!(change, "opened" | "renotified" | "resolved") {
        for s in cfg.subscriptions.iter().filter(|s| subscribed(s, a)) {
            out.push((s.address.clone(), Kind::Subscription));
        }
    }
    if matches!(change, "opened" | "renotified") && cfg.facility_rules.contains(&a.rule) {
        for c in contacts {
            out.push((c.clone(), Kind::Facility));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(addr, _)| seen.insert(addr.to_ascii_lowercase()));
    out
}

fn local(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(from_timestamp)
        .map(|t| {
            t.with_timezone(&quantrac_proto::domain::local_offset())
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn severity_vi(a: &v1::Alert) -> &'static str {
    match a.severity() {
        v1::AlertSeverity::Critical => "NGHIÊM TRỌNG / CRITICAL",
        v1::AlertSeverity::Warning => "Cảnh báo sớm / Warning",
        _ => "Thông tin / Info",
    }
}

/// Subject and body of a message about one change.
pub fn compose(kind: Kind, change: &str, a: &v1::Alert, page_url: &str) -> (String, String) {
    let what = match (kind, change) {
        (Kind::Escalation, _) => "Chưa xác nhận, chuyển cấp / Unacknowledged, escalated",
        (_, "resolved") => "Đã đóng / Resolved",
        (_, "renotified") => "Nhắc lại / Still open",
        _ => "Mới / New",
    };
    let subject = format!(
        "[Quantrac] {} · {} · {} {} ({})",
        severity_vi(a),
        a.station_id,
        a.parameter,
        a.rule,
        what
    );
    let body = format!(
        "{message}\n\n\
         Trạm / Station: {station} ({zone})\n\
         Thông số / Parameter: {parameter}\n\
         Giá trị / Value: {value} · Giới hạn / Limit: {limit}\n\
         Từ lúc / Since: {since} (giờ Việt Nam / Asia/Ho_Chi_Minh)\n\
         Trạng thái / State: {state}{ack}\n\n\
         {page}/alerts/{id}\n",
        message = a.message,
        station = a.station_id,
        zone = a.industrial_zone,
        parameter = a.parameter,
        value = a.observed_value,
        limit = a.limit_value,
        since = local(&a.window_start),
        state = match a.state() {
            v1::AlertState::Acknowledged => "đã xác nhận / acknowledged",
            v1::AlertState::Resolved => "đã đóng / resolved",
            _ => "đang mở / open",
        },
        ack = if a.acknowledged_by.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.acknowledged_by)
        },
        page = page_url.trim_end_matches('/'),
        id = url_path(&a.id),
    );
    (subject, body)
}

fn url_path(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Starts the planner at the newest change when it has no cursor yet (a
/// new installation is not sent the whole history).
pub async fn init_cursor(db: &Client) -> Result<(), AlertStoreError> {
    db.execute(
        "INSERT INTO webhook_cursors (url, delivered_through) \
         SELECT $1, coalesce(max(sequence), 0) FROM alert_events ON CONFLICT (url) DO NOTHING",
        &[&PLANNER],
    )
    .await?;
    Ok(())
}

/// Plans the next changes after the cursor; how many changes it read.
pub async fn plan(
    db: &mut Client,
    cfg: &EmailConfig,
    registry: &Registry,
) -> Result<usize, AlertStoreError> {
    let tx = db.transaction().await?;
    let through: i64 = tx
        .query_one(
            "SELECT delivered_through FROM webhook_cursors WHERE url = $1 FOR UPDATE",
            &[&PLANNER],
        )
        .await?
        .get(0);
    let rows = tx
        .query(
            "SELECT sequence, change, alert FROM alert_events WHERE sequence > $1 ORDER BY sequence LIMIT 200",
            &[&through],
        )
        .await?;
    let mut last = through;
    let mut planned = 0u64;
    for r in &rows {
        let sequence: i64 = r.get(0);
        let change: String = r.get(1);
        let bytes: Vec<u8> = r.get(2);
        last = sequence;
        let Ok(a) = v1::Alert::decode(&bytes[..]) else {
            tracing::warn!(
                sequence,
                "mail planner: an alert event cannot be read; skipped"
            );
            continue;
        };
        let contacts = registry
            .station(&a.station_id)
            .map(|s| s.contacts.clone())
            .unwrap_or_default();
        let to = recipients(cfg, &contacts, &change, &a);
        if to.is_empty() {
            continue;
        }
        let suppressed = match a.window_start.as_ref().and_then(from_timestamp) {
            Some(at) => store::maintenance_window(&tx, &a.station_id, at).await?,
            None => None,
        };
        for (address, kind) in to {
            let (subject, body) = compose(kind, &change, &a, &cfg.page_url);
            planned += tx
                .execute(
                    "INSERT INTO mail_outbox (dedupe_key, kind, recipient, subject, body, alert_id, suppressed) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe_key) DO NOTHING",
                    &[
                        &format!("event:{sequence}:{}", address.to_ascii_lowercase()),
                        &kind.as_str(),
                        &address,
                        &subject,
                        &body,
                        &a.id,
                        &suppressed,
                    ],
                )
                .await?;
        }
    }
    tx.execute(
        "UPDATE webhook_cursors SET delivered_through = $2, delivered_at = now() WHERE url = $1",
        &[&PLANNER, &last],
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("alerting_mail_planned_total").increment(planned);
    Ok(rows.len())
}

/// Critical alerts still open `after` their first change go to the
/// escalation contacts, once each.
pub async fn escalate(
    db: &Client,
    cfg: &EmailConfig,
    now: DateTime<Utc>,
) -> Result<u64, AlertStoreError> {
    let (Some(after), false) = (cfg.escalation_after, cfg.escalation_to.is_empty()) else {
        return Ok(0);
    };
    let due = now - chrono::Duration::from_std(after).unwrap_or_default();
    let rows = db
        .query(
            "SELECT e.alert FROM alerts a \
             CROSS JOIN LATERAL (SELECT alert FROM alert_events WHERE alert_id = a.id ORDER BY sequence DESC LIMIT 1) e \
             WHERE a.state = 'open' AND a.severity = 'critical' \
             AND (SELECT min(at) FROM alert_events WHERE alert_id = a.id) <= $1",
            &[&due],
        )
        .await?;
    let mut n = 0;
    for r in rows {
        let bytes: Vec<u8> = r.get(0);
        let Ok(a) = v1::Alert::decode(&bytes[..]) else {
            continue;
        };
        let suppressed = match a.window_start.as_ref().and_then(from_timestamp) {
            Some(at) => store::maintenance_window(db, &a.station_id, at).await?,
            None => None,
        };
        for address in &cfg.escalation_to {
            let (subject, body) = compose(Kind::Escalation, "escalated", &a, &cfg.page_url);
            n += db
                .execute(
                    "INSERT INTO mail_outbox (dedupe_key, kind, recipient, subject, body, alert_id, suppressed) \
                     VALUES ($1, 'escalation', $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
                    &[
                        &format!("escalation:{}:{}", a.id, address.to_ascii_lowercase()),
                        address,
                        &subject,
                        &body,
                        &a.id,
                        &suppressed,
                    ],
                )
                .await?;
        }
    }
    metrics::counter!("alerting_mail_escalations_total").increment(n);
    Ok(n)
}

/// Once a day after `digest_at` (local time): each subscription gets the
/// open and acknowledged alerts it covers, grouped by zone.
pub async fn digest(
    db: &Client,
    cfg: &EmailConfig,
    now: DateTime<Utc>,
    done: &mut Option<chrono::NaiveDate>,
) -> Result<u64, AlertStoreError> {
    let Some(at) = cfg
        .digest_at
        .as_deref()
        .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M").ok())
    else {
        return Ok(0);
    };
    let local_now = now.with_timezone(&quantrac_proto::domain::local_offset());
    if local_now.time() < at || cfg.subscriptions.is_empty() {
        return Ok(0);
    }
    let date = local_now.date_naive();
    // Written once a day (the rows' keys make a repeat harmless; this spares
    // reading every open alert on each tick until midnight).
    if *done == Some(date) {
        return Ok(0);
    }
    let rows = db
        .query(
            "SELECT e.alert FROM alerts a \
             CROSS JOIN LATERAL (SELECT alert FROM alert_events WHERE alert_id = a.id ORDER BY sequence DESC LIMIT 1) e \
             WHERE a.state <> 'resolved' ORDER BY a.industrial_zone, a.station_id, a.opened_at",
            &[],
        )
        .await?;
    let open: Vec<v1::Alert> = rows
        .iter()
        .filter_map(|r| v1::Alert::decode(&r.get::<_, Vec<u8>>(0)[..]).ok())
        .collect();
    let mut n = 0;
    for (i, s) in cfg.subscriptions.iter().enumerate() {
        let mine: Vec<&v1::Alert> = open.iter().filter(|a| subscribed(s, a)).collect();
        let mut body = format!(
            "Cảnh báo đang mở ngày {date} / Open alerts on {date}: {}\n",
            mine.len()
        );
        let mut zone = None;
        for a in &mine {
            if zone != Some(a.industrial_zone.as_str()) {
                zone = Some(a.industrial_zone.as_str());
                body.push_str(&format!("\n== {} ==\n", a.industrial_zone));
            }
            body.push_str(&format!(
                "- [{}] {} {} {} = {} (≤ {}), {} · {}/alerts/{}\n",
                a.state()
                    .as_str_name()
                    .trim_start_matches("ALERT_STATE_")
                    .to_lowercase(),
                a.station_id,
                a.parameter,
                a.rule,
                a.observed_value,
                a.limit_value,
                local(&a.window_start),
                cfg.page_url.trim_end_matches('/'),
                url_path(&a.id),
            ));
        }
        let subject = format!(
            "[Quantrac] Tổng hợp ngày {date} / Daily digest: {} cảnh báo đang mở / open",
            mine.len()
        );
        n += db
            .execute(
                "INSERT INTO mail_outbox (dedupe_key, kind, recipient, subject, body) \
                 VALUES ($1, 'digest', $2, $3, $4) ON CONFLICT (dedupe_key) DO NOTHING",
                &[
                    // One per subscription: an address may hold several.
                    &format!("digest:{date}:{i}:{}", s.address.to_ascii_lowercase()),
                    &s.address,
                    &subject,
                    &body,
                ],
            )
            .await?;
    }
    *done = Some(date);
    Ok(n)
}

/// An SMTP connection factory and the sender's address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

impl Mailer {
    pub fn new(cfg: &EmailConfig) -> Result<Self, MailError> {
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)
            .map_err(|e| MailError::Url(e.to_string()))?
            .timeout(Some(cfg.timeout));
        if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(user.clone(), pass.0.clone()));
        }
        let from = cfg
            .from
            .parse::<Mailbox>()
            .map_err(|e| MailError::From(e.to_string()))?;
        Ok(Mailer {
            transport: b.build(),
            from,
        })
    }

    /// One message; `X-Quantrac-Kind` and `X-Quantrac-Alert` let a
    /// mailbox sort them without reading the (Vietnamese) subject.
    async fn send(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        kind: &str,
        alert: Option<&str>,
    ) -> Result<(), String> {
        use lettre::message::header::{HeaderName, HeaderValue};
        let to: Mailbox = to.parse().map_err(|e| format!("recipient {to:?}: {e}"))?;
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Quantrac-Kind"),
                kind.to_owned(),
            ));
        if let Some(id) = alert {
            b = b.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Quantrac-Alert"),
                id.to_owned(),
            ));
        }
        let m = b
            .subject(subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| e.to_string())?;
        self.transport
            .send(m)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Deletes finished messages (sent, given up, suppressed) older than
/// `keep`; the number deleted. Unsent ones are never deleted.
pub async fn prune(db: &Client, keep: Duration) -> Result<u64, AlertStoreError> {
    let before = Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let n = db
        .execute(
            "DELETE FROM mail_outbox WHERE created_at < $1 \
             AND (sent_at IS NOT NULL OR failed_at IS NOT NULL OR suppressed IS NOT NULL)",
            &[&before],
        )
        .await?;
    metrics::counter!("alerting_mail_pruned_total").increment(n);
    Ok(n)
}

/// Backoff before attempt `n + 1`: 2^n seconds, at most 10 minutes.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 10).unsigned_abs()).min(Duration::from_secs(600))
}

/// Sends what is due; how many were sent.
pub async fn send_due(
    db: &Client,
    mailer: &Mailer,
    cfg: &EmailConfig,
) -> Result<usize, AlertStoreError> {
    let rows = db
        .query(
            "SELECT id, recipient, subject, body, attempts, kind, alert_id FROM mail_outbox \
             WHERE sent_at IS NULL AND failed_at IS NULL AND suppressed IS NULL AND next_attempt_at <= now() \
             ORDER BY id LIMIT 50",
            &[],
        )
        .await?;
    let mut sent = 0;
    for r in rows {
        let (id, to, subject, body, attempts): (i64, String, String, String, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let (kind, alert): (String, Option<String>) = (r.get(5), r.get(6));
        match mailer
            .send(&to, &subject, &body, &kind, alert.as_deref())
            .await
        {
            Ok(()) => {
                db.execute(
                    "UPDATE mail_outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = $1",
                    &[&id],
                )
                .await?;
                metrics::counter!("alerting_mail_sent_total").increment(1);
                sent += 1;
            }
            Err(e) => {
                let attempts = attempts + 1;
                let give_up = u32::try_from(attempts).unwrap_or(u32::MAX) >= cfg.max_attempts;
                let wait = chrono::Duration::from_std(backoff(attempts)).unwrap_or_default();
                db.execute(
                    "UPDATE mail_outbox SET attempts = $2, last_error = $3, next_attempt_at = $4, \
                     failed_at = CASE WHEN $5 THEN now() END WHERE id = $1",
                    &[&id, &attempts, &e, &(Utc::now() + wait), &give_up],
                )
                .await?;
                if give_up {
                    metrics::counter!("alerting_mail_failed_total").increment(1);
                    tracing::error!(
                        id,
                        attempts,
                        error = e,
                        "e-mail given up after its last attempt (kept in mail_outbox)"
                    );
                } else {
                    metrics::counter!("alerting_mail_retries_total").increment(1);
                    tracing::warn!(id, attempts, error = e, "e-mail not accepted; will retry");
                }
                // The server is likely down for the others too: try again later.
                break;
            }
        }
    }
    Ok(sent)
}

/// The planner (changes, escalation, digest) and the sender, until
/// shutdown; each reconnects to the database on its own.
pub fn spawn(
    cfg: EmailConfig,
    database_url: String,
    registry: Arc<Registry>,
    newest: watch::Receiver<u64>,
    tick: Duration,
    tasks: &mut tokio::task::JoinSet<Result<(), crate::AlertingError>>,
    shutdown: &CancellationToken,
) -> Result<(), MailError> {
    let mailer = Mailer::new(&cfg)?;
    let wake = Arc::new(Notify::new());
    {
        let (cfg, url, wake, stop) = (
            cfg.clone(),
            database_url.clone(),
            Arc::clone(&wake),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            retrying("mail planner", &stop, || {
                planner(&cfg, &url, &registry, newest.clone(), tick, &wake, &stop)
            })
            .await;
            Ok(())
        });
    }
    {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            retrying("mail sender", &stop, || {
                sender(&cfg, &database_url, &mailer, &wake, &stop)
            })
            .await;
            Ok(())
        });
    }
    Ok(())
}

async fn retrying<F, Fut>(what: &'static str, stop: &CancellationToken, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AlertStoreError>>,
{
    let mut wait = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(task = what, error = %e, retry_in = ?wait, "lost its database connection");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn planner(
    cfg: &EmailConfig,
    url: &str,
    registry: &Registry,
    mut newest: watch::Receiver<u64>,
    tick: Duration,
    wake: &Notify,
    stop: &CancellationToken,
) -> Result<(), AlertStoreError> {
    // The cursor exists (set at start, before the engine records anything).
    let mut db = store::connect(url).await?;
    let mut listening = true;
    let mut digest_done = None;
    loop {
        let read = plan(&mut db, cfg, registry).await?;
        let now = Utc::now();
        let extra =
            escalate(&db, cfg, now).await? + digest(&db, cfg, now, &mut digest_done).await?;
        if read > 0 || extra > 0 {
            wake.notify_one();
        }
        if read >= 200 {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            changed = newest.changed(), if listening => listening = changed.is_ok(),
            () = tokio::time::sleep(tick) => {}
        }
    }
}

async fn sender(
    cfg: &EmailConfig,
    url: &str,
    mailer: &Mailer,
    wake: &Notify,
    stop: &CancellationToken,
) -> Result<(), AlertStoreError> {
    let db = store::connect(url).await?;
    // One sender across alerting instances (each would otherwise send the
    // same due rows): the lock is the session's, so it passes to another
    // instance when this one's connection goes.
    loop {
        let held: bool = db
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('quantrac-mail-sender'))",
                &[],
            )
            .await?
            .get(0);
        if held {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    // The outbox is bounded: finished rows go after `keep` (checked at
    // start, then hourly).
    let mut pruned_at: Option<std::time::Instant> = None;
    loop {
        if pruned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            prune(&db, cfg.keep).await?;
            pruned_at = Some(std::time::Instant::now());
        }
        let sent = send_due(&db, mailer, cfg).await?;
        let pending: i64 = db
            .query_one(
                "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL AND suppressed IS NULL",
                &[],
            )
            .await?
            .get(0);
        metrics::gauge!("alerting_mail_pending").set(pending as f64);
        if sent == 50 {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(zone: &str, station: &str, severity: v1::AlertSeverity, rule: &str) -> v1::Alert {
        v1::Alert {
            id: "limit_exceeded/PY-1/COD/x".into(),
            rule: rule.into(),
            station_id: station.into(),
            parameter: "COD".into(),
            industrial_zone: zone.into(),
            severity: severity as i32,
            message: "COD above".into(),
            ..Default::default()
        }
    }

    fn cfg() -> EmailConfig {
        EmailConfig {
            smtp_url: "smtp://127.0.0.1:25".into(),
            subscriptions: vec![
                Subscription {
                    address: "hh@dost.vn".into(),
                    zones: vec!["KCN Hòa Hiệp".into()],
                    stations: vec![],
                    min_severity: "warning".into(),
                },
                Subscription {
                    address: "chief@dost.vn".into(),
                    zones: vec![],
                    stations: vec![],
                    min_severity: "critical".into(),
                },
                Subscription {
                    address: "st2@dost.vn".into(),
                    zones: vec![],
                    stations: vec!["PY-2".into()],
                    min_severity: "info".into(),
                },
            ],
            ..Default::default()
        }
    }

    fn addrs(v: Vec<(String, Kind)>) -> Vec<String> {
        v.into_iter().map(|(a, _)| a).collect()
    }

    #[test]
    fn subscriptions_match_zone_station_and_severity() {
        let c = cfg();
        let crit = alert(
            "KCN Hòa Hiệp",
            "PY-1",
            v1::AlertSeverity::Critical,
            "limit_exceeded",
        );
        assert_eq!(
            addrs(recipients(&c, &[], "opened", &crit)),
            vec!["hh@dost.vn", "chief@dost.vn"]
        );
        let warn = alert(
            "KCN An Phú",
            "PY-2",
            v1::AlertSeverity::Warning,
            "early_warning",
        );
        assert_eq!(
            addrs(recipients(&c, &[], "opened", &warn)),
            vec!["st2@dost.vn"]
        );
        let info = alert("KCN Hòa Hiệp", "PY-1", v1::AlertSeverity::Info, "flatline");
        assert!(recipients(&c, &[], "opened", &info).is_empty());
        // Acknowledgements and updates are not mailed.
        assert!(recipients(&c, &[], "acknowledged", &crit).is_empty());
        assert!(recipients(&c, &[], "updated", &crit).is_empty());
        assert_eq!(recipients(&c, &[], "resolved", &crit).len(), 2);
    }

    #[test]
    fn facilities_hear_of_their_rules_once_per_address() {
        let c = cfg();
        let contacts = vec!["ops@plant.vn".to_string(), "HH@dost.vn".to_string()];
        let crit = alert(
            "KCN Hòa Hiệp",
            "PY-1",
            v1::AlertSeverity::Critical,
            "limit_exceeded",
        );
        let r = recipients(&c, &contacts, "opened", &crit);
        assert_eq!(
            r,
            vec![
                ("hh@dost.vn".to_string(), Kind::Subscription),
                ("chief@dost.vn".to_string(), Kind::Subscription),
                ("ops@plant.vn".to_string(), Kind::Facility),
            ]
        );
        // Not a facility rule; and not on resolution.
        let sudden = alert(
            "KCN Hòa Hiệp",
            "PY-1",
            v1::AlertSeverity::Critical,
            "sudden_change",
        );
        assert!(
            !addrs(recipients(&c, &contacts, "opened", &sudden))
                .contains(&"ops@plant.vn".to_string())
        );
        assert!(
            !addrs(recipients(&c, &contacts, "resolved", &crit))
                .contains(&"ops@plant.vn".to_string())
        );
    }

    #[test]
    fn messages_link_to_the_page_and_back_off() {
        let a = alert(
            "KCN Hòa Hiệp",
            "PY-1",
            v1::AlertSeverity::Critical,
            "limit_exceeded",
        );
        let (subject, body) = compose(Kind::Subscription, "opened", &a, "http://center.example/");
        assert!(
            subject.contains("PY-1") && subject.contains("NGHIÊM TRỌNG"),
            "{subject}"
        );
        assert!(
            body.contains("http://center.example/alerts/limit_exceeded%2FPY-1%2FCOD%2Fx"),
            "{body}"
        );
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(30), Duration::from_secs(600));
    }
}
