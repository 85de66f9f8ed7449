//! Where a run's alerts are told, and what arrived: a webhook endpoint in
//! this process (it can be taken down: it then answers 503, as a receiver
//! behind a proxy does while it restarts) and the test SMTP server's
//! Maildir (`deploy/services.sh start smtp`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;

/// Every alert change POSTed to the endpoint, by (alert id, sequence).
#[derive(Clone, Default)]
pub struct Webhook {
    pub url: String,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    received: Arc<Mutex<HashMap<(String, i64), u32>>>,
}

impl Webhook {
    /// Serves on a free loopback port until the process ends.
    pub async fn serve() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hook = Webhook {
            url: format!("http://{}/alerts", listener.local_addr()?),
            ..Default::default()
        };
        let h = hook.clone();
        let app = axum::Router::new().route(
            "/alerts",
            axum::routing::post(move |body: String| {
                let h = h.clone();
                async move {
                    if h.down.load(Ordering::SeqCst) {
                        h.refused.fetch_add(1, Ordering::Relaxed);
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    let key = (
                        v["id"].as_str().unwrap_or_default().to_owned(),
                        v["sequence"].as_i64().unwrap_or(-1),
                    );
                    *h.lock().entry(key).or_default() += 1;
                    axum::http::StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(hook)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), u32>> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// POSTs answered 503 while down.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Per alert id: how many of its changes arrived, and how many of
    /// those arrived more than once.
    pub fn by_alert(&self) -> HashMap<String, (u32, u32)> {
        let mut out: HashMap<String, (u32, u32)> = HashMap::new();
        for ((id, _), n) in self.lock().iter() {
            let e = out.entry(id.clone()).or_default();
            e.0 += 1;
            e.1 += u32::from(*n > 1);
        }
        out
    }
}

/// The test server's Maildir messages to `address`: each file and its
/// headers' `X-Quantrac-Alert`, if any.
fn messages_to(address: &str) -> Vec<(PathBuf, Option<String>)> {
    let dir = PathBuf::from(quantrac_testkit::env::var(
        "QUANTRAC_SMTP_MAILDIR",
        ".local/services/smtp/maildir",
    ))
    .join("new");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let header = |name: &str| {
            text.lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if header("X-RcptTo:").as_deref() == Some(address) {
            out.push((entry.path(), header("X-Quantrac-Alert:")));
        }
    }
    out
}

/// Messages to `address` in the test server's Maildir, per alert id
/// (`X-Quantrac-Alert`).
pub fn mailed(address: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for (_, alert) in messages_to(address) {
        if let Some(id) = alert {
            *out.entry(id).or_default() += 1;
        }
    }
    out
}

/// Removes the run's messages from the Maildir (they are counted).
pub fn forget_mail(address: &str) {
    for (path, _) in messages_to(address) {
        let _ = std::fs::remove_file(path);
    }
}
