//! The monitoring center's web page (`quantrac-console`): a small service
//! of its own that renders HTML on the server and speaks gRPC to the
//! alerting and query services with the logged-in person's token, so the
//! page has exactly the roles and the audit trail every other client has.
//!
//! A tour:
//! - [`config`]: addresses of the two services, language, map tiles.
//! - [`session`]: login with an access token (checked by the query
//!   service's `WhoAmI`), kept in an HttpOnly, SameSite=Strict cookie;
//!   every form is refused from another origin.
//! - [`alerts`]: the live alert list (server-sent events from the alerting
//!   service's `Subscribe`: a change refreshes the list without a reload),
//!   filters, counts, acknowledge / resolve / assign / comment, bulk
//!   acknowledge, the history timeline, CSV export.
//! - [`stations`]: the board (online, late or silent; latest values
//!   against limits; 24-hour charts that show gaps as gaps); [`map`].
//! - [`chart`]: the SVG charts. [`html`]: escaping and the layout.
//!   [`i18n`]: Vietnamese and English labels, local time (UTC+7).
//!   [`export`]: tables as CSV or XLSX.
//!
//! Nothing is fetched from the internet at run time: the CSS and the one
//! script are compiled in, charts and the map are SVG drawn here, and map
//! tiles are used only when `tile_url` names a tile server.

pub mod alerts;
pub mod chart;
pub mod config;
pub mod export;
pub mod html;
pub mod i18n;
pub mod map;
pub mod session;
pub mod stations;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_proto::v1::query_service_client::QueryServiceClient;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use config::ConsoleConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{field}: {url:?} is not a usable address: {reason}")]
    Backend {
        field: &'static str,
        url: String,
        reason: String,
    },
    #[error(transparent)]
    Http(#[from] quantrac_plumbing::http::HttpError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Server(String),
    #[error("a task failed: {0}")]
    Task(String),
}

/// What every handler shares: configuration and the two services.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: ConsoleConfig,
    pub alerting: AlertServiceClient<Channel>,
    pub query: QueryServiceClient<Channel>,
    /// One permit per open live-alert stream.
    pub live: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn channel(
    field: &'static str,
    url: &str,
    ca: Option<&std::path::Path>,
) -> Result<Channel, ConsoleError> {
    let endpoint =
        quantrac_plumbing::tls::grpc_endpoint(url, ca).map_err(|reason| ConsoleError::Backend {
            field,
            url: url.to_owned(),
            reason,
        })?;
    // Connected on first use and again after a restart of the service: the
    // page starts even while a service is still starting.
    Ok(endpoint
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy())
}

/// The page's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/alerts") }),
        )
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/lang", get(session::switch_language))
        .route("/alerts", get(alerts::list_page))
        .route("/alerts/table", get(alerts::table_fragment))
        .route("/alerts/events", get(alerts::events))
        .route("/alerts/export.csv", get(alerts::export_csv))
        .route("/alerts/export.xlsx", get(alerts::export_xlsx))
        .route("/alerts/bulk-acknowledge", post(alerts::bulk_acknowledge))
        .route("/alerts/{id}", get(alerts::detail_page))
        .route("/alerts/{id}/{action}", post(alerts::act))
        .route("/stations", get(stations::board))
        .route("/stations/{id}", get(stations::detail))
        .route("/stations/{id}/{file}", get(stations::export))
        .route(
            "/stations/{id}/maintenance",
            post(stations::plan_maintenance),
        )
        .route("/map", get(map::map))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .with_state(state)
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        html::CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        html::JS,
    )
}

/// `/health`: the console itself is up (the services it calls have their
/// own health; a page that cannot reach one says so).
#[derive(Debug)]
struct Health;

impl quantrac_plumbing::http::Health for Health {
    fn report(&self) -> quantrac_plumbing::http::HealthReport {
        quantrac_plumbing::http::HealthReport {
            healthy: true,
            status: serde_json::json!({ "serving": true }),
        }
    }
}

/// A running console.
#[derive(Debug)]
pub struct Console {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: JoinSet<Result<(), ConsoleError>>,
    shutdown: CancellationToken,
}

impl Console {
    pub async fn start(
        config: ConsoleConfig,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Result<Self, ConsoleError> {
        config.validate()?;
        let alerting = AlertServiceClient::new(channel(
            "alerting_url",
            &config.alerting_url,
            config.ca_file.as_deref(),
        )?);
        let query = QueryServiceClient::new(channel(
            "query_url",
            &config.query_url,
            config.ca_file.as_deref(),
        )?)
        .max_decoding_message_size(64 << 20);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ConsoleError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ConsoleError::Server(e.to_string()))?;
        let state = AppState(Arc::new(Inner {
            live: Arc::new(tokio::sync::Semaphore::new(config.max_live_streams)),
            config,
            alerting,
            query,
        }));
        let http = quantrac_plumbing::http::Server::bind(state.config.http_listen).await?;
        let http_addr = http.addr;
        let mut tasks = JoinSet::new();
        {
            let stop = shutdown.clone();
            tasks.spawn(async move { Ok(http.serve(Arc::new(Health), metrics, stop).await?) });
        }
        {
            let stop = shutdown.clone();
            let app = router(state);
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .map_err(|e| ConsoleError::Server(e.to_string()))
            });
        }
        tracing::info!(%addr, %http_addr, "console started: open http://{addr}/");
        Ok(Self {
            addr,
            http_addr,
            tasks,
            shutdown,
        })
    }

    /// Waits for the tasks; the first to fail stops the others.
    pub async fn wait(mut self) -> Result<(), ConsoleError> {
        quantrac_plumbing::process::wait_for_tasks(
            &mut self.tasks,
            &self.shutdown,
            "console",
            ConsoleError::Task,
        )
        .await
    }
}
