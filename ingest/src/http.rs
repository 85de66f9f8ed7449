//! `/metrics` (Prometheus text format) and `/health` (JSON; 503 when a
//! receiver is down or Kafka deliveries are failing).

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

#[derive(Clone)]
struct AppState {
    status: Arc<Status>,
    metrics: Option<PrometheusHandle>,
    mqtt_enabled: bool,
    tcp_enabled: bool,
}

pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    metrics: Option<PrometheusHandle>,
    mqtt_enabled: bool,
    tcp_enabled: bool,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health))
        .with_state(AppState {
            status,
            metrics,
            mqtt_enabled,
            tcp_enabled,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    match &state.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".to_owned(),
        ),
    }
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.status.snapshot();
    let healthy = !s.kafka_failing
        && (!state.mqtt_enabled || s.mqtt_connected)
        && (!state.tcp_enabled || s.tcp_listening);
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
