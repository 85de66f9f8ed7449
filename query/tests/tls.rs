//! The query service over TLS, with the test CA `deploy/services.sh` made:
//! a client trusting the CA is answered; a plain HTTP/2 client and a
//! client that does not trust the CA are not.

mod common;

use common::*;
use quantrac_db::access::Role;
use quantrac_plumbing::tls::{ServerTls, grpc_endpoint};
use quantrac_proto::v1::WhoAmIRequest;
use quantrac_proto::v1::query_service_client::QueryServiceClient;
use quantrac_testkit::env::{tls_ca, tls_server};

#[tokio::test]
async fn the_query_service_answers_over_tls_only() {
    let (cert, key) = tls_server();
    let f = Fixture::with(|c| {
        c.grpc_tls = Some(ServerTls {
            cert,
            key,
            client_ca: None,
            require_client_cert: false,
        })
    })
    .await;
    let token = f.token(Role::Analyst).await;
    let url = format!("https://localhost:{}", f.addr.port());

    let channel = grpc_endpoint(&url, Some(&tls_ca()))
        .expect("endpoint")
        .connect()
        .await
        .expect("TLS connection trusting the test CA");
    let me = QueryServiceClient::new(channel)
        .who_am_i(with_token(&token, WhoAmIRequest {}))
        .await
        .expect("answered over TLS")
        .into_inner();
    assert_eq!(
        (me.identity.as_str(), me.role.as_str()),
        ("analyst@test", "analyst")
    );

    // Plain HTTP/2 on the TLS port.
    let plain = match QueryServiceClient::connect(format!("http://{}", f.addr)).await {
        Ok(mut c) => c
            .who_am_i(with_token(&token, WhoAmIRequest {}))
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!plain, "a plain client was answered on the TLS port");

    // The public roots do not know the test CA.
    let untrusted = match grpc_endpoint(&url, None).expect("endpoint").connect().await {
        Ok(ch) => QueryServiceClient::new(ch)
            .who_am_i(with_token(&token, WhoAmIRequest {}))
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(
        !untrusted,
        "a server certificate from an unknown CA was accepted"
    );
}
