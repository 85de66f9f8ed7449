//! People's OpenID Connect tokens: the query service checks a JWT against
//! the issuer's keys, served here over HTTPS (test CA) as a provider such
//! as Keycloak serves them (`quantrac_testkit::oidc`), and maps the token's
//! roles to ours.

mod common;

use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use quantrac_proto::v1::WhoAmIRequest;
use quantrac_testkit::oidc::{Key, b64, claims, config, serve_jwks};
use tonic::Code;

async fn who_am_i(f: &Fixture, token: &str) -> Result<(String, String), Code> {
    f.client()
        .await
        .who_am_i(with_token(token, WhoAmIRequest {}))
        .await
        .map(|r| {
            let r = r.into_inner();
            (r.identity, r.role)
        })
        .map_err(|s| s.code())
}

#[tokio::test]
async fn provider_tokens_are_verified_against_the_issuers_keys() {
    let ec = Key::ec();
    let rsa = Key::rsa();
    let (jwks_url, fetches) = serve_jwks(serde_json::json!({"keys": [
        ec.jwk("ec-1"),
        rsa.jwk("rsa-1"),
        // An encryption key under a signing key's name is never used.
        {"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"},
    ]}))
    .await;
    let f = Fixture::with(|c| {
        c.oidc = Some(config(jwks_url));
    })
    .await;

    // Signed by either key, the provider's roles mapped to ours; the
    // person is named as the provider names them, marked as such.
    let officer = ec.sign(
        "ec-1",
        &claims("le.thi.b", &["qt-officer", "offline_access"], |_| {}),
    );
    assert_eq!(
        who_am_i(&f, &officer).await,
        Ok(("oidc:le.thi.b".into(), "officer".into()))
    );
    let analyst = rsa.sign("rsa-1", &claims("tran.c", &["qt-analyst"], |_| {}));
    assert_eq!(
        who_am_i(&f, &analyst).await,
        Ok(("oidc:tran.c".into(), "analyst".into()))
    );
    // quantrac's own tokens still work beside them.
    let own = f.token(quantrac_db::access::Role::Admin).await;
    assert_eq!(
        who_am_i(&f, &own).await,
        Ok(("admin@test".into(), "admin".into()))
    );

    // What must be refused.
    let someone_elses = Key::ec();
    let refused: Vec<(&str, String, Code)> = vec![
        (
            "expired beyond the leeway",
            ec.sign(
                "ec-1",
                &claims("a", &["qt-officer"], |c| {
                    c["exp"] = (chrono::Utc::now().timestamp() - 120).into()
                }),
            ),
            Code::Unauthenticated,
        ),
        (
            "without an expiry",
            ec.sign(
                "ec-1",
                &claims("a", &["qt-officer"], |c| {
                    c.as_object_mut().map(|o| o.remove("exp"));
                }),
            ),
            Code::Unauthenticated,
        ),
        (
            "for another application",
            ec.sign(
                "ec-1",
                &claims("a", &["qt-officer"], |c| c["aud"] = "grafana".into()),
            ),
            Code::Unauthenticated,
        ),
        (
            "from another issuer",
            ec.sign(
                "ec-1",
                &claims("a", &["qt-officer"], |c| {
                    c["iss"] = "https://sso.other.example/realms/x".into()
                }),
            ),
            Code::Unauthenticated,
        ),
        (
            "signed by a key the issuer does not publish, under its kid",
            someone_elses.sign("ec-1", &claims("a", &["qt-officer"], |_| {})),
            Code::Unauthenticated,
        ),
        (
            "naming a key the issuer does not have",
            ec.sign("ec-9", &claims("a", &["qt-officer"], |_| {})),
            Code::Unauthenticated,
        ),
        (
            "with no role of ours",
            ec.sign("ec-1", &claims("a", &["offline_access"], |_| {})),
            Code::PermissionDenied,
        ),
        (
            "alg none",
            unsigned(&claims("a", &["qt-officer"], |_| {})),
            Code::Unauthenticated,
        ),
        (
            "an analyst's token raised to officer",
            raised(&analyst),
            Code::Unauthenticated,
        ),
    ];
    for (what, token, code) in refused {
        assert_eq!(who_am_i(&f, &token).await, Err(code), "{what}");
    }
    // The keys were fetched once, and once more for the unknown kid at
    // most: a stream of tokens naming made-up keys does not hammer the
    // issuer.
    let n = fetches.load(Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} fetches of the key set");

    // Refusals are in the audit log like any other.
    let audited = quantrac_testkit::db::count(
        &f.db,
        "SELECT count(*) FROM audit_log WHERE action = 'call_refused' AND detail::jsonb->>'reason' = 'invalid_jwt'",
    )
    .await;
    assert!(audited >= 1, "{audited} refused JWTs audited");
}

/// A token claiming `alg: none`, with no signature.
fn unsigned(claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// `token` with its payload's roles raised to officer, signature kept.
fn raised(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["realm_access"]["roles"] = serde_json::json!(["qt-officer"]);
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    )
}
