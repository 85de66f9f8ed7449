//! The one `/health` + `/metrics` server every service runs.
//!
//! `/metrics` renders the Prometheus recorder (404 when none is installed,
//! as in tests that start several services in one process). `/health`
//! answers from the service's own state through [`Health`]: 200 with a JSON
//! body when healthy, 503 with the same body when not, so an orchestrator
//! restarts or drains a service whose dependency is lost or whose work is
//! stalled.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A service's answer to `/health`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub healthy: bool,
    /// What the service wants an operator to see (counters, which
    /// dependency failed).
    pub status: serde_json::Value,
}

/// What a service's state says about its health.
pub trait Health: Send + Sync + 'static {
    fn report(&self) -> HealthReport;
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// A bound listener, so that a service learns its address (port 0 in tests)
/// before it starts serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(Self { listener, addr })
    }

    /// Serves until `shutdown`.
    pub async fn serve(
        self,
        health: Arc<dyn Health>,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<(), HttpError> {
        let app = Router::new()
            .route("/metrics", get(render_metrics))
            .route("/health", get(render_health))
            .with_state((health, metrics));
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(HttpError::Serve)
    }
}

type AppState = (Arc<dyn Health>, Option<PrometheusHandle>);

async fn render_metrics(State((_, metrics)): State<AppState>) -> impl IntoResponse {
    match metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".to_owned(),
        ),
    }
}

async fn render_health(State((health, _)): State<AppState>) -> impl IntoResponse {
    let HealthReport { healthy, status } = health.report();
    let body = serde_json::json!({ "healthy": healthy, "status": status }).to_string();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}
