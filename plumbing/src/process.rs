//! What every service binary does around its library: logging and the
//! signal rule (first SIGINT/SIGTERM drains and stops, a second exits at
//! once). Behind the `bin` feature so that library users don't pull in a
//! log subscriber.

use tokio_util::sync::CancellationToken;

/// Logs to stdout, as text or JSON lines; `RUST_LOG` overrides `default`.
///
/// With `QUANTRAC_SYSLOG=udp://host:port`, security events
/// (`target = "quantrac::security"`) also go to that syslog collector
/// ([`crate::syslog`]); an unusable address is reported and ignored.
pub fn init_tracing(json: bool, default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let app = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "quantrac".into());
    let (syslog, syslog_error) = match std::env::var("QUANTRAC_SYSLOG") {
        Ok(url) if !url.is_empty() => match crate::syslog::SyslogLayer::new(&url, &app) {
            Ok(layer) => (Some(layer), None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(syslog);
    if json {
        registry
            .with(tracing_subscriber::fmt::layer().json())
            .init();
    } else {
        registry.with(tracing_subscriber::fmt::layer()).init();
    }
    if let Some(e) = syslog_error {
        tracing::error!(error = %e, "security events are not sent to syslog");
    }
}

/// First SIGINT/SIGTERM: cancels `shutdown` (drain and stop). Second:
/// exits at once with status 130.
pub async fn stop_on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down (signal again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}

/// Waits for a service's tasks; the first to fail (or panic, given to
/// `task_error`) cancels `shutdown` so that the others stop, and is the
/// result. `service` names it in the log.
pub async fn wait_for_tasks<E: std::fmt::Display + Send + 'static>(
    tasks: &mut tokio::task::JoinSet<Result<(), E>>,
    shutdown: &CancellationToken,
    service: &str,
    task_error: impl Fn(String) -> E,
) -> Result<(), E> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined
            .map_err(|e| task_error(e.to_string()))
            .and_then(|r| r)
        {
            tracing::error!(error = %e, service, "task failed; stopping the others");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
