//! Webhook delivery against the real PostgreSQL and a real HTTP endpoint:
//! an endpoint that is down while an alert opens, and an alerting instance
//! that stops before the endpoint comes back. The notification used to be
//! marked done once queued and was lost with the queue; it now arrives,
//! once, after the restart, signed (the endpoint accepts only a body whose
//! HMAC signature and timestamp check out).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use quantrac_alerting::{Alerting, Edge};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod common;
use common::{alerting_config, fresh_database, registry, stored_cod, unique};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_webhook_down_across_a_restart_is_delivered_once() {
    let db_url = fresh_database().await;
    let station = unique("WH");
    let reg = registry(&station);

    // The endpoint: 503 while `down`, else every body to `delivered`.
    let down = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicU32::new(0));
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel::<serde_json::Value>();
    const KEY: &str = "0123456789abcdef0123456789abcdef";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let app = {
        let (down, refused) = (Arc::clone(&down), Arc::clone(&refused));
        axum::Router::new().route(
            "/alerts",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (down, refused, tx) = (down.clone(), refused.clone(), delivered_tx.clone());
                async move {
                    if down.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    // What a receiver does: recompute the signature over
                    // the timestamp and the body, refuse if it differs.
                    let header = |h: &str| {
                        headers
                            .get(h)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let ts: i64 = header("x-quantrac-timestamp").parse().unwrap_or(0);
                    let fresh = (chrono::Utc::now().timestamp() - ts).abs() < 300;
                    if !fresh
                        || header("x-quantrac-signature")
                            != quantrac_alerting::notify::signature(KEY, ts, body.as_bytes())
                    {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    let _ = tx.send(serde_json::from_str(&body).expect("webhook JSON"));
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = alerting_config(&db_url, &reg);
    config.webhooks.urls = vec![url];
    config.webhooks.secret = Some(quantrac_alerting::config::WebhookSecret(KEY.into()));

    // First instance: the alert opens while the endpoint refuses.
    let stop = CancellationToken::new();
    let (bus, rx) = mpsc::channel(4);
    let first = Alerting::start(config.clone(), Edge::Bus(rx), None, stop.clone())
        .await
        .expect("alerting");
    bus.send(stored_cod(&station, 300.0, 10))
        .await
        .expect("bus");
    let deadline = tokio::time::Instant::now() + WAIT;
    while refused.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused.load(Ordering::SeqCst) > 0, "delivery was attempted");
    stop.cancel();
    first.wait().await.expect("clean stop");
    assert!(
        delivered.try_recv().is_err(),
        "nothing delivered while down"
    );

    // The endpoint is back; a new instance delivers what was recorded.
    down.store(false, Ordering::SeqCst);
    let stop = CancellationToken::new();
    let (_bus, rx) = mpsc::channel(4);
    let second = Alerting::start(config, Edge::Bus(rx), None, stop.clone())
        .await
        .expect("alerting again");
    let posted = tokio::time::timeout(WAIT, delivered.recv())
        .await
        .expect("the webhook after the restart")
        .expect("endpoint running");
    assert_eq!(posted["rule"], "limit_exceeded");
    assert_eq!(posted["state"], "ALERT_STATE_OPEN");
    assert_eq!(posted["station_id"], station.as_str());
    // Once: the cursor moved past it (read back from the database).
    let db = quantrac_testkit::db::connect(&db_url).await;
    let through = posted["sequence"].as_i64().expect("sequence");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cursor: i64 = db
            .query_one("SELECT delivered_through FROM webhook_cursors", &[])
            .await
            .expect("cursor")
            .get(0);
        if cursor >= through || tokio::time::Instant::now() > deadline {
            assert_eq!(cursor, through);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    second.wait().await.expect("clean stop");
    assert!(delivered.try_recv().is_err(), "delivered once");
}

/// An https endpoint with the test CA's server certificate: every body it
/// receives goes to the returned channel.
async fn https_endpoint() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (cert, key) = quantrac_testkit::env::tls_server();
    let tls = quantrac_plumbing::tls::server_config(
        &quantrac_plumbing::tls::ServerTls {
            cert,
            key,
            client_ca: None,
            require_client_cert: false,
        },
        &[b"http/1.1"],
    )
    .expect("server TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://localhost:{}/alerts",
        listener.local_addr().expect("addr").port()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_str(&body).expect("webhook JSON"));
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return; // a client that did not trust us
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn webhooks_go_over_https_to_an_endpoint_whose_certificate_checks_out() {
    let db_url = fresh_database().await;
    let station = unique("WHS");
    let reg = registry(&station);
    let (url, mut delivered) = https_endpoint().await;

    // Without the endpoint's CA (the public roots): never delivered.
    let mut config = alerting_config(&db_url, &reg);
    config.webhooks.urls = vec![url];
    let stop = CancellationToken::new();
    let (bus, rx) = mpsc::channel(4);
    let untrusting = Alerting::start(config.clone(), Edge::Bus(rx), None, stop.clone())
        .await
        .expect("alerting");
    bus.send(stored_cod(&station, 300.0, 10))
        .await
        .expect("bus");
    assert!(
        tokio::time::timeout(Duration::from_secs(3), delivered.recv())
            .await
            .is_err(),
        "delivered to an endpoint whose certificate could not be verified"
    );
    stop.cancel();
    untrusting.wait().await.expect("clean stop");

    // Trusting the test CA: delivered.
    config.webhooks.ca_file = Some(quantrac_testkit::env::tls_ca());
    let stop = CancellationToken::new();
    let (_bus, rx) = mpsc::channel(4);
    let trusting = Alerting::start(config, Edge::Bus(rx), None, stop.clone())
        .await
        .expect("alerting");
    let posted = tokio::time::timeout(WAIT, delivered.recv())
        .await
        .expect("the webhook over https")
        .expect("endpoint running");
    assert_eq!(posted["station_id"], station.as_str());
    stop.cancel();
    trusting.wait().await.expect("clean stop");
}
