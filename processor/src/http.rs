//! `/metrics` (Prometheus) and `/health` (503 while database writes fail).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::status::Status;

type AppState = (Arc<Status>, Option<PrometheusHandle>);

pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health))
        .with_state((status, metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn render_metrics(State((_, metrics)): State<AppState>) -> impl IntoResponse {
    match metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".to_owned(),
        ),
    }
}

async fn health(State((status, _)): State<AppState>) -> impl IntoResponse {
    let s = status.snapshot();
    let healthy = !s.db_failing;
    let body = serde_json::json!({ "healthy": healthy, "status": s }).to_string();
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
