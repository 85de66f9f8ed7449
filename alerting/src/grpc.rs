//! The monitoring center's gRPC `AlertService`: a server-streaming
//! subscription (filter by zone, station, severity; resume after a
//! sequence number without missing or repeating a change), and
//! acknowledge / resolve.
//!
//! Every call carries a bearer token (`quantrac_db::access`): subscribing
//! needs an analyst's, acknowledging and resolving an officer's, and the
//! action is attributed to the token's identity, never to a typed name.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use quantrac_db::access::{self, AccessError, Identity, Role};
use quantrac_proto::v1::alert_service_server::AlertService;
use quantrac_proto::v1::{
    AcknowledgeAlertRequest, Alert, AssignAlertRequest, CommentAlertRequest,
    ListMaintenanceRequest, ListMaintenanceResponse, MaintenanceWindow, ResolveAlertRequest,
    SubscribeAlertsRequest,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_postgres::Client;
use tonic::{Request, Response, Status};

use crate::store;

/// What an officer does to an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Resolve,
    /// To this officer.
    Assign(String),
    /// The command's note is the comment.
    Comment,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Resolve => "resolve",
            Action::Assign(_) => "assign",
            Action::Comment => "comment",
        }
    }
}

/// An officer's action, carried to the engine task (which owns the engine).
#[derive(Debug)]
pub struct Command {
    pub action: Action,
    pub alert_id: String,
    pub officer: String,
    pub note: String,
    pub reply: oneshot::Sender<Result<Alert, Status>>,
}

/// The gRPC service's read connection, opened again once it is lost (a
/// database restart), so that subscriptions recover instead of failing for
/// good with "connection closed".
#[derive(Debug)]
pub struct ReadDb(quantrac_db::Reconnecting);

impl ReadDb {
    pub fn new(url: String, client: Client) -> Self {
        ReadDb(quantrac_db::Reconnecting::new(
            url,
            quantrac_db::ConnectOptions::default(),
            Some(client),
        ))
    }

    /// The open connection, or a new one when it was closed.
    pub async fn get(&self) -> Result<Arc<Client>, Status> {
        self.0
            .get()
            .await
            .map_err(|e| Status::unavailable(format!("database: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct AlertGrpc {
    pub db: Arc<ReadDb>,
    pub live: broadcast::Sender<Alert>,
    /// The newest sequence committed by any instance (see `live`).
    pub newest: watch::Receiver<u64>,
    pub commands: mpsc::Sender<Command>,
    /// Ends the subscription streams: the server's graceful stop waits for
    /// open streams, and these never end by themselves.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// One permit per open subscription (`max_subscribers`).
    pub subscribers: Arc<tokio::sync::Semaphore>,
    /// Manual actions and refused calls go to the audit log.
    pub audit: Arc<quantrac_db::audit::Auditor>,
    /// People's OIDC tokens, when an issuer is configured.
    pub oidc: Option<Arc<quantrac_plumbing::oidc::Verifier>>,
}

fn matches(filter: &SubscribeAlertsRequest, a: &Alert) -> bool {
    (filter.industrial_zones.is_empty() || filter.industrial_zones.contains(&a.industrial_zone))
        && (filter.station_ids.is_empty() || filter.station_ids.contains(&a.station_id))
        && a.severity >= filter.min_severity
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<Alert, Status>> + Send>>;

const PAGE: i64 = 1_000;

#[tonic::async_trait]
impl AlertService for AlertGrpc {
    type SubscribeStream = AlertStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeAlertsRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        self.caller(&request, Role::Analyst, "Subscribe").await?;
        // Bounded: each stream holds a task and a buffer until it ends.
        let permit = Arc::clone(&self.subscribers)
            .try_acquire_owned()
            .map_err(|_| {
                metrics::counter!("alerting_subscribe_refused_total").increment(1);
                Status::resource_exhausted("too many open alert subscriptions; try again later")
            })?;
        let filter = request.into_inner();
        // Subscribe to live changes before reading the history, so nothing
        // falls between the two; duplicates are skipped by sequence.
        let live = self.live.subscribe();
        let newest = self.newest.clone();
        let db = Arc::clone(&self.db);
        let last = if filter.after_sequence == 0 {
            store::last_sequence(&*db.get().await?)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
        } else {
            filter.after_sequence
        };
        let (tx, rx) = mpsc::channel::<Result<Alert, Status>>(256);
        let shutdown = self.shutdown.clone();
        let gone = tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                // The subscriber went away: noticed now, not at the next
                // alert change (which may be hours away).
                () = gone.closed() => {}
                () = feed(filter, db, live, newest, last, tx) => {}
            }
            // Its place frees for the next subscriber.
            drop(permit);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        let who = self.caller(&request, Role::Officer, "Acknowledge").await?;
        let r = request.into_inner();
        self.act(Action::Acknowledge, r.alert_id, who, r.note).await
    }

    async fn resolve(
        &self,
        request: Request<ResolveAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        let who = self.caller(&request, Role::Officer, "Resolve").await?;
        let r = request.into_inner();
        self.act(Action::Resolve, r.alert_id, who, r.note).await
    }

    async fn assign(
        &self,
        request: Request<AssignAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        let who = self.caller(&request, Role::Officer, "Assign").await?;
        let r = request.into_inner();
        let assignee = r.assignee.trim();
        if assignee.is_empty() || assignee.len() > 200 {
            return Err(Status::invalid_argument(
                "assignee: an officer's identity is required (at most 200 bytes)",
            ));
        }
        self.act(Action::Assign(assignee.to_owned()), r.alert_id, who, r.note)
            .await
    }

    async fn comment(
        &self,
        request: Request<CommentAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        let who = self.caller(&request, Role::Officer, "Comment").await?;
        let r = request.into_inner();
        if r.text.trim().is_empty() || r.text.len() > 4_000 {
            return Err(Status::invalid_argument(
                "text: a comment of 1 to 4,000 bytes is required",
            ));
        }
        self.act(Action::Comment, r.alert_id, who, r.text).await
    }

    async fn create_maintenance(
        &self,
        request: Request<MaintenanceWindow>,
    ) -> Result<Response<MaintenanceWindow>, Status> {
        let who = self
            .caller(&request, Role::Officer, "CreateMaintenance")
            .await?;
        let mut w = request.into_inner();
        let time = |t: &Option<prost_types::Timestamp>, field: &str| {
            t.as_ref()
                .and_then(quantrac_proto::domain::from_timestamp)
                .ok_or_else(|| Status::invalid_argument(format!("{field}: a time is required")))
        };
        let (starts, ends) = (
            time(&w.starts_at, "starts_at")?,
            time(&w.ends_at, "ends_at")?,
        );
        if ends <= starts {
            return Err(Status::invalid_argument("ends_at: must be after starts_at"));
        }
        if ends - starts > chrono::Duration::days(31) {
            return Err(Status::invalid_argument(
                "ends_at: a window is at most 31 days (plan a longer one in parts)",
            ));
        }
        if w.station_id.trim().is_empty() || w.reason.trim().is_empty() || w.reason.len() > 1_000 {
            return Err(Status::invalid_argument(
                "station_id and reason (at most 1,000 bytes) are required",
            ));
        }
        let client = self.db.get().await?;
        let known: i64 = client
            .query_one(
                "SELECT count(*) FROM stations WHERE id = $1",
                &[&w.station_id],
            )
            .await
            .map_err(|e| Status::unavailable(format!("database: {e}")))?
            .get(0);
        if known == 0 {
            return Err(Status::not_found(format!(
                "station_id: no station {:?}",
                w.station_id
            )));
        }
        let id: i64 = client
            .query_one(
                "INSERT INTO maintenance_windows (station_id, starts_at, ends_at, reason, created_by) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&w.station_id, &starts, &ends, &w.reason, &who.name],
            )
            .await
            .map_err(|e| Status::unavailable(format!("database: {e}")))?
            .get(0);
        w.id = id;
        w.created_by = who.name.clone();
        let _ = self
            .audit
            .record(
                &who.name,
                "create_maintenance",
                &w.station_id,
                serde_json::json!({
                    "token": who.token, "window": id, "starts_at": starts, "ends_at": ends, "reason": w.reason,
                }),
            )
            .await;
        Ok(Response::new(w))
    }

    async fn list_maintenance(
        &self,
        request: Request<ListMaintenanceRequest>,
    ) -> Result<Response<ListMaintenanceResponse>, Status> {
        self.caller(&request, Role::Analyst, "ListMaintenance")
            .await?;
        let r = request.into_inner();
        let after = r
            .ending_after
            .as_ref()
            .and_then(quantrac_proto::domain::from_timestamp)
            .unwrap_or_else(chrono::Utc::now);
        let client = self.db.get().await?;
        let rows = client
            .query(
                "SELECT id, station_id, starts_at, ends_at, reason, created_by FROM maintenance_windows \
                 WHERE ($1 = '' OR station_id = $1) AND ends_at > $2 ORDER BY starts_at, id LIMIT 1000",
                &[&r.station_id, &after],
            )
            .await
            .map_err(|e| Status::unavailable(format!("database: {e}")))?;
        let ts = quantrac_proto::domain::to_timestamp;
        Ok(Response::new(ListMaintenanceResponse {
            windows: rows
                .iter()
                .map(|r| MaintenanceWindow {
                    id: r.get(0),
                    station_id: r.get(1),
                    starts_at: Some(ts(r.get(2))),
                    ends_at: Some(ts(r.get(3))),
                    reason: r.get(4),
                    created_by: r.get(5),
                })
                .collect(),
        }))
    }
}

impl AlertGrpc {
    /// Who calls, if their token grants `needs`. A refusal is counted and
    /// logged with its reason (never the token).
    async fn caller<T>(
        &self,
        request: &Request<T>,
        needs: Role,
        method: &'static str,
    ) -> Result<Identity, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let client = self.db.get().await?;
        match access::authorize_with(
            &client,
            self.oidc.as_deref(),
            access::bearer_token(header),
            needs,
            chrono::Utc::now(),
        )
        .await
        {
            Ok(who) => Ok(who),
            Err(AccessError::Db(e)) => Err(Status::unavailable(format!("database: {e}"))),
            Err(e) => {
                let reason = e.reason();
                metrics::counter!("alerting_access_refused_total", "reason" => reason).increment(1);
                tracing::warn!(target: "quantrac::security", method, reason, error = %e, "call refused");
                self.audit
                    .refused(&e.actor(), method, reason, request.remote_addr())
                    .await;
                Err(match e {
                    AccessError::Forbidden { .. } | AccessError::NoRole { .. } => {
                        Status::permission_denied(e.to_string())
                    }
                    other => Status::unauthenticated(format!(
                        "{other}: send `authorization: Bearer <token>` (`quantrac token issue`)"
                    )),
                })
            }
        }
    }

    /// Hands an officer's action to the engine task and waits for its
    /// answer; the token's identity is the actor.
    async fn act(
        &self,
        action: Action,
        alert_id: String,
        who: Identity,
        note: String,
    ) -> Result<Response<Alert>, Status> {
        let officer = who.name.clone();
        let label = action.as_str();
        let stopped = || Status::unavailable("alerting engine stopped");
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command {
                action,
                alert_id,
                officer,
                note,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        let alert = answer.await.map_err(|_| stopped())??;
        // Recorded after the change: a failed action is not an action. The
        // change stands even if the audit write fails (logged, counted).
        let _ = self
            .audit
            .record(
                &who.name,
                label,
                &alert.id,
                serde_json::json!({ "token": who.token, "note": alert.note, "assignee": alert.assignee }),
            )
            .await;
        Ok(Response::new(alert))
    }
}

/// History after the resume point, then live changes; when the live
/// channel lags or shows a gap, or another instance committed changes, the
/// difference is read from the history.
async fn feed(
    filter: SubscribeAlertsRequest,
    db: Arc<ReadDb>,
    mut live: broadcast::Receiver<Alert>,
    mut newest: watch::Receiver<u64>,
    mut last: u64,
    tx: mpsc::Sender<Result<Alert, Status>>,
) {
    // History after the resume point, then live changes; when the
    // live channel lags, fill the gap from the history.
    let mut catch_up = true;
    let mut listening = true;
    loop {
        if catch_up {
            loop {
                let client = match db.get().await {
                    Ok(c) => c,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let page = match store::events_after(&client, last, PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                };
                let n = page.len();
                for a in page {
                    last = a.sequence;
                    if matches(&filter, &a) && tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
                if n < PAGE as usize {
                    break;
                }
            }
            catch_up = false;
        }
        let received = tokio::select! {
            r = live.recv() => r,
            changed = newest.changed(), if listening => {
                match changed {
                    Ok(()) => catch_up = *newest.borrow_and_update() > last,
                    // The listener stopped (shutting down): own changes
                    // still arrive through `live`.
                    Err(_) => listening = false,
                }
                continue;
            }
        };
        match received {
            Ok(a) if a.sequence <= last => {}
            Ok(a) if a.sequence == last + 1 => {
                last = a.sequence;
                if matches(&filter, &a) && tx.send(Ok(a)).await.is_err() {
                    return;
                }
            }
            // A gap (another writer, or lag): read it from the history.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
