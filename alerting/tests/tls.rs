//! Alerting with TLS on both sides, against the real PostgreSQL and the
//! test CA `deploy/services.sh` made: its database connections are
//! encrypted and verified (a server certificate the client cannot verify
//! stops it at start), and its gRPC port answers over TLS.

use chrono::Utc;
use quantrac_db::access::Role;
use quantrac_plumbing::tls::{ServerTls, grpc_endpoint};
use quantrac_proto::v1::ListMaintenanceRequest;
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_testkit::env::{tls_ca, tls_server};
use tokio_util::sync::CancellationToken;

mod common;
use common::{fresh_database, registry, unique};

/// The same database over TLS, by the name on the server's certificate.
fn tls_url(plain: &str, root: Option<&std::path::Path>) -> String {
    let url = plain.replace("@127.0.0.1:", "@localhost:");
    match root {
        Some(ca) => format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()),
        None => format!("{url}?sslmode=verify-full"),
    }
}

#[tokio::test]
async fn alerting_verifies_the_database_and_serves_grpc_over_tls() {
    let db_url = fresh_database().await;
    let reg = registry(&unique("TLS"));

    // A CA the client does not know (the public roots): refused at start.
    let mut config = common::alerting_config(&tls_url(&db_url, None), &reg);
    let (_bus, rx) = tokio::sync::mpsc::channel(4);
    let refused = quantrac_alerting::Alerting::start(
        config.clone(),
        quantrac_alerting::Edge::Bus(rx),
        None,
        CancellationToken::new(),
    )
    .await;
    assert!(
        refused.is_err(),
        "an unverifiable database certificate was accepted"
    );

    config.database_url = tls_url(&db_url, Some(&tls_ca()));
    let (cert, key) = tls_server();
    config.grpc_tls = Some(ServerTls {
        cert,
        key,
        client_ca: None,
        require_client_cert: false,
    });
    let stop = CancellationToken::new();
    let (_bus, rx) = tokio::sync::mpsc::channel(4);
    let alerting = quantrac_alerting::Alerting::start(
        config,
        quantrac_alerting::Edge::Bus(rx),
        None,
        stop.clone(),
    )
    .await
    .expect("alerting over a verified TLS database connection");

    // Every connection alerting holds to its database is encrypted.
    let db = quantrac_testkit::db::connect(&db_url).await;
    let name = db_url.rsplit('/').next().expect("database name").to_owned();
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .expect("pg_stat_ssl");
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all > 0, "alerting holds no connection");
    assert_eq!(encrypted, all, "{all} connections, {encrypted} over TLS");

    // gRPC over TLS, trusting the test CA.
    let token = quantrac_db::access::issue(
        &db,
        "analyst-tls",
        Role::Analyst,
        Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .expect("token")
    .secret;
    let channel = grpc_endpoint(
        &format!("https://localhost:{}", alerting.grpc_addr.port()),
        Some(&tls_ca()),
    )
    .expect("endpoint")
    .connect()
    .await
    .expect("TLS to the alert service");
    let mut client =
        AlertServiceClient::with_interceptor(channel, quantrac_testkit::grpc::Bearer::new(&token));
    client
        .list_maintenance(ListMaintenanceRequest::default())
        .await
        .expect("answered over TLS");
    stop.cancel();
}
