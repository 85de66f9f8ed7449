//! A stand-in OpenID Connect provider for tests: signing keys made per
//! run (ES256 with ring, RS256 with `openssl`), tokens signed with them,
//! and the key set served over HTTPS with the test CA's server certificate,
//! as Keycloak or Entra ID serve theirs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::env::tls_server;

pub const ISSUER: &str = "https://sso.stnmt.example.vn/realms/quantrac";
pub const AUDIENCE: &str = "quantrac-console";

/// The `[oidc]` settings for [`ISSUER`] and [`AUDIENCE`], trusting the test
/// CA, Keycloak's roles claim, provider roles `qt-officer`/`qt-analyst`.
pub fn config(jwks_url: String) -> quantrac_plumbing::oidc::OidcConfig {
    quantrac_plumbing::oidc::OidcConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url,
        identity_claim: "preferred_username".into(),
        roles_claim: "realm_access.roles".into(),
        roles: [("qt-officer", "officer"), ("qt-analyst", "analyst")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        ca_file: Some(crate::env::tls_ca()),
        leeway: std::time::Duration::from_secs(30),
        jwks_refresh: std::time::Duration::from_secs(3600),
    }
}

/// Claims as a provider issues them to `user` with `roles`, valid for 5
/// minutes; `change` alters them.
pub fn claims(
    user: &str,
    roles: &[&str],
    change: impl FnOnce(&mut serde_json::Value),
) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = serde_json::json!({
        "iss": ISSUER,
        "aud": [AUDIENCE, "account"],
        "iat": now,
        "exp": now + 300,
        "preferred_username": user,
        "realm_access": {"roles": roles},
    });
    change(&mut c);
    c
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public JWK.
#[derive(Debug)]
pub enum Key {
    Ec(signature::EcdsaKeyPair),
    Rsa(signature::RsaKeyPair),
}

impl Key {
    pub fn ec() -> Key {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
        Key::Ec(signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("EC key"))
    }

    pub fn rsa() -> Key {
        let dir = std::env::temp_dir().join(crate::unique("oidc-rsa"));
        std::fs::create_dir_all(&dir).expect("dir");
        let (pem, der) = (dir.join("key.pem"), dir.join("key.der"));
        let openssl = |args: &[&std::ffi::OsStr]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "genrsa".as_ref(),
            "-out".as_ref(),
            pem.as_os_str(),
            "2048".as_ref(),
        ]);
        // PKCS#1 DER, the form ring reads without PKCS#8's wrapping.
        openssl(&[
            "rsa".as_ref(),
            "-in".as_ref(),
            pem.as_os_str(),
            "-outform".as_ref(),
            "DER".as_ref(),
            "-traditional".as_ref(),
            "-out".as_ref(),
            der.as_os_str(),
        ]);
        let key = std::fs::read(&der).expect("key");
        let _ = std::fs::remove_dir_all(&dir);
        Key::Rsa(signature::RsaKeyPair::from_der(&key).expect("RSA key"))
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Ec(_) => "ES256",
            Key::Rsa(_) => "RS256",
        }
    }

    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        match self {
            Key::Ec(k) => {
                let p = k.public_key().as_ref();
                serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                    "alg": "ES256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Key::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64(&c.n), "e": b64(&c.e)})
            }
        }
    }

    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": self.alg(), "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Key::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("sign");
                sig
            }
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// The provider's JWKS endpoint over HTTPS with the test CA's server
/// certificate; counts the fetches.
pub async fn serve_jwks(jwks: serde_json::Value) -> (String, Arc<AtomicUsize>) {
    let (cert, key) = tls_server();
    let tls = quantrac_plumbing::tls::server_config(
        &quantrac_plumbing::tls::ServerTls {
            cert,
            key,
            client_ca: None,
            require_client_cert: false,
        },
        &[b"http/1.1"],
    )
    .expect("TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&fetches);
    let body = jwks.to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut s) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (
        format!("https://localhost:{port}/realms/quantrac/certs"),
        fetches,
    )
}
