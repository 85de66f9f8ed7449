//! OpenID Connect access tokens (JWTs) from an operator's identity
//! provider (Keycloak, Entra ID, a ministry's SSO), checked against the
//! issuer's published keys (JWKS) so that people need no quantrac token.
//!
//! Checked, in this order: the compact form, an algorithm from the list
//! below (never `none`, never a MAC: a shared secret would let every
//! service forge tokens), the key named by `kid` in the issuer's JWKS, the
//! signature (ring, already linked for TLS), then `iss`, `aud`, `exp` and
//! `nbf` with a small clock leeway. The keys are fetched over HTTPS only,
//! cached, refreshed every `jwks_refresh`, and fetched again at most every
//! 30 s when a token names a key not yet seen (the issuer rotated keys).
//! While the issuer is unreachable the last keys keep working.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use ring::signature;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// `[oidc]` in the query and alerting services' configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must carry, exactly.
    pub issuer: String,
    /// A value every token's `aud` must contain (the client id the
    /// provider issues quantrac's tokens for).
    pub audience: String,
    /// The issuer's key set (`jwks_uri` of its discovery document); https.
    pub jwks_url: String,
    /// The claim naming the person, recorded on every action they take.
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
    /// The claim listing the person's roles; a dotted path reaches into
    /// objects (Keycloak: `realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// The provider's role names and the quantrac role each grants
    /// (`analyst`, `officer`, `admin`); by default the names themselves.
    /// A person with several gets the highest.
    #[serde(default = "default_roles")]
    pub roles: BTreeMap<String, String>,
    /// CA certificates for the JWKS endpoint; the public roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Clock difference tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// How long fetched keys are used before they are fetched again.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
}

fn default_identity_claim() -> String {
    "preferred_username".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_roles() -> BTreeMap<String, String> {
    ["analyst", "officer", "admin"]
        .into_iter()
        .map(|r| (r.to_string(), r.to_string()))
        .collect()
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}

impl OidcConfig {
    /// What is wrong with the settings, if anything, naming the field.
    pub fn problems(&self) -> Option<String> {
        if self.issuer.trim().is_empty() {
            return Some("oidc.issuer: required".into());
        }
        if self.audience.trim().is_empty() {
            return Some("oidc.audience: required".into());
        }
        if !self.jwks_url.starts_with("https://") {
            return Some(format!(
                "oidc.jwks_url: {:?} must be https (the keys decide who may act)",
                self.jwks_url
            ));
        }
        if self.roles.is_empty() {
            return Some("oidc.roles: at least one provider role must grant a role".into());
        }
        if let Some((name, role)) = self
            .roles
            .iter()
            .find(|(_, r)| !matches!(r.as_str(), "analyst" | "officer" | "admin"))
        {
            return Some(format!(
                "oidc.roles.{name}: {role:?} is not analyst, officer or admin"
            ));
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("not a JWT: {0}")]
    Malformed(&'static str),
    #[error(
        "token algorithm {0:?} is not accepted (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)"
    )]
    Algorithm(String),
    #[error("the issuer has no key {0:?}")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    Signature,
    #[error("issued by {0:?}, not the configured issuer")]
    Issuer(String),
    #[error("not issued for this service (aud)")]
    Audience,
    #[error("token expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("token not valid before {0}")]
    NotYet(DateTime<Utc>),
    #[error("token has no {0:?} claim")]
    Claim(String),
    #[error("cannot fetch the issuer's keys from {url}: {why}")]
    Jwks { url: String, why: String },
    #[error("TLS for the JWKS endpoint: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl OidcError {
    /// A short label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Expired(_) | OidcError::NotYet(_) => "expired",
            OidcError::Jwks { .. } | OidcError::Tls(_) => "issuer_unreachable",
            _ => "invalid_jwt",
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The identity claim's value.
    pub subject: String,
    /// The provider's role names the token carries.
    pub roles: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// One key of a JWKS, as RFC 7517/7518/8037 name its members.
#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Debug, Default)]
struct Keys {
    by_kid: HashMap<String, Jwk>,
    /// Keys without a `kid` (a provider with a single key).
    anonymous: Vec<Jwk>,
    fetched: Option<Instant>,
    /// The last fetch that failed while no keys were held: the next waits
    /// [`REFETCH_UNKNOWN`], so a down issuer is not asked at every call.
    failed: Option<Instant>,
}

/// Checks tokens against one issuer; shared by every call of a service.
pub struct Verifier {
    config: OidcConfig,
    tls: TlsConnector,
    keys: Mutex<Keys>,
}

/// At most one fetch for an unknown `kid` per this long, so that tokens
/// naming made-up keys cannot make the service hammer the issuer.
const REFETCH_UNKNOWN: Duration = Duration::from_secs(30);
/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(config: OidcConfig) -> Result<Arc<Self>, OidcError> {
        let tls = TlsConnector::from(crate::tls::client_config(config.ca_file.as_deref(), None)?);
        Ok(Arc::new(Verifier {
            config,
            tls,
            keys: Mutex::new(Keys::default()),
        }))
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Whether `token` has a JWT's shape (three base64url parts), so that
    /// it is checked here rather than as an opaque quantrac token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.starts_with("eyJ")
    }

    /// The token's claims, if it is signed by the issuer's key, issued by
    /// the issuer for this audience, and valid at `now`.
    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Verified, OidcError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::Malformed("three dot-separated parts"));
        };
        let header: Header = serde_json::from_slice(&b64(h)?)
            .map_err(|_| OidcError::Malformed("header is not JSON"))?;
        let alg = Alg::parse(&header.alg)?;
        let sig = b64(s)?;
        let key = self.key(header.kid.as_deref(), alg).await?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        alg.verify(&key, signed, &sig)?;
        // Claims are read only once the signature holds.
        let claims: serde_json::Value = serde_json::from_slice(&b64(p)?)
            .map_err(|_| OidcError::Malformed("payload is not JSON"))?;
        self.check_claims(&claims, now)
    }

    fn check_claims(
        &self,
        claims: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Verified, OidcError> {
        let c = &self.config;
        let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
        if iss != c.issuer {
            return Err(OidcError::Issuer(iss.to_string()));
        }
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == c.audience,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&c.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(OidcError::Audience);
        }
        let leeway = chrono::Duration::from_std(c.leeway).unwrap_or_default();
        let time = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_i64())
                .and_then(|t| DateTime::from_timestamp(t, 0))
        };
        // A token without an expiry would be good forever: refused.
        let exp = time("exp").ok_or_else(|| OidcError::Claim("exp".into()))?;
        if exp + leeway <= now {
            return Err(OidcError::Expired(exp));
        }
        if let Some(nbf) = time("nbf")
            && nbf - leeway > now
        {
            return Err(OidcError::NotYet(nbf));
        }
        let subject = claim(claims, &c.identity_claim)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OidcError::Claim(c.identity_claim.clone()))?
            .to_string();
        let roles = match claim(claims, &c.roles_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            _ => Vec::new(),
        };
        Ok(Verified {
            subject,
            roles,
            expires_at: exp,
        })
    }

    /// The key for `kid`, fetching the key set when it is stale or the key
    /// is new to us.
    async fn key(&self, kid: Option<&str>, alg: Alg) -> Result<Jwk, OidcError> {
        let mut keys = self.keys.lock().await;
        let stale = keys
            .fetched
            .is_none_or(|t| t.elapsed() >= self.config.jwks_refresh);
        if stale {
            if keys.fetched.is_none() && keys.failed.is_some_and(|t| t.elapsed() < REFETCH_UNKNOWN)
            {
                return Err(OidcError::Jwks {
                    url: self.config.jwks_url.clone(),
                    why: "unreachable at the last attempt, tried again within 30 s".into(),
                });
            }
            match self.fetch().await {
                Ok(fresh) => *keys = fresh,
                // Keys we already hold keep working while the issuer is down.
                Err(e) if keys.fetched.is_some() => {
                    tracing::warn!(target: "quantrac::security", error = %e, "JWKS refresh failed; keeping the previous keys");
                    keys.fetched = Some(Instant::now());
                }
                Err(e) => {
                    keys.failed = Some(Instant::now());
                    return Err(e);
                }
            }
        }
        if let Some(k) = keys.find(kid, alg) {
            return Ok(k);
        }
        if !stale && keys.fetched.is_none_or(|t| t.elapsed() >= REFETCH_UNKNOWN) {
            *keys = self.fetch().await?;
            if let Some(k) = keys.find(kid, alg) {
                return Ok(k);
            }
        }
        Err(OidcError::UnknownKey(kid.unwrap_or("").to_string()))
    }

    async fn fetch(&self) -> Result<Keys, OidcError> {
        let url = &self.config.jwks_url;
        let fail = |why: String| OidcError::Jwks {
            url: url.clone(),
            why,
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, get(url, &self.tls))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(fail)?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| fail(format!("not a JWKS: {e}")))?;
        let mut keys = Keys {
            fetched: Some(Instant::now()),
            ..Keys::default()
        };
        for k in set.keys {
            // Encryption keys are not signing keys.
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            match k.kid.clone() {
                Some(kid) => {
                    keys.by_kid.insert(kid, k);
                }
                None => keys.anonymous.push(k),
            }
        }
        tracing::info!(
            url,
            keys = keys.by_kid.len() + keys.anonymous.len(),
            "fetched the issuer's keys"
        );
        Ok(keys)
    }
}

impl Keys {
    fn find(&self, kid: Option<&str>, alg: Alg) -> Option<Jwk> {
        let fits = |k: &&Jwk| alg.fits(k);
        match kid {
            Some(kid) => self.by_kid.get(kid).filter(fits).cloned(),
            None => self.anonymous.iter().find(fits).cloned(),
        }
    }
}

/// A claim by dotted path (`realm_access.roles`), or a top-level claim
/// whose name has dots (some providers use URLs as claim names).
fn claim<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

fn b64(s: &str) -> Result<Vec<u8>, OidcError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| OidcError::Malformed("a part is not base64url"))
}

#[derive(Debug, Clone, Copy)]
enum Alg {
    Rs(&'static signature::RsaParameters, &'static str),
    Es(
        &'static signature::EcdsaVerificationAlgorithm,
        &'static str,
        usize,
    ),
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Result<Alg, OidcError> {
        use signature::*;
        Ok(match name {
            "RS256" => Alg::Rs(&RSA_PKCS1_2048_8192_SHA256, "RS256"),
            "RS384" => Alg::Rs(&RSA_PKCS1_2048_8192_SHA384, "RS384"),
            "RS512" => Alg::Rs(&RSA_PKCS1_2048_8192_SHA512, "RS512"),
            "PS256" => Alg::Rs(&RSA_PSS_2048_8192_SHA256, "PS256"),
            "PS384" => Alg::Rs(&RSA_PSS_2048_8192_SHA384, "PS384"),
            "PS512" => Alg::Rs(&RSA_PSS_2048_8192_SHA512, "PS512"),
            "ES256" => Alg::Es(&ECDSA_P256_SHA256_FIXED, "P-256", 32),
            "ES384" => Alg::Es(&ECDSA_P384_SHA384_FIXED, "P-384", 48),
            "EdDSA" => Alg::EdDsa,
            other => return Err(OidcError::Algorithm(other.to_string())),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Rs(_, n) => n,
            Alg::Es(_, "P-256", _) => "ES256",
            Alg::Es(..) => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// Whether key `k` may verify this algorithm: its type and curve, and
    /// its own `alg` when it names one (RFC 7517 4.4).
    fn fits(self, k: &Jwk) -> bool {
        if k.alg.as_deref().is_some_and(|a| a != self.name()) {
            return false;
        }
        match self {
            Alg::Rs(..) => k.kty == "RSA",
            Alg::Es(_, crv, _) => k.kty == "EC" && k.crv.as_deref() == Some(crv),
            Alg::EdDsa => k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"),
        }
    }

    fn verify(self, k: &Jwk, message: &[u8], sig: &[u8]) -> Result<(), OidcError> {
        let part = |v: &Option<String>| {
            v.as_deref()
                .ok_or(OidcError::Malformed("key lacks a member"))
                .and_then(b64)
        };
        let ok = match self {
            Alg::Rs(params, _) => signature::RsaPublicKeyComponents {
                n: part(&k.n)?,
                e: part(&k.e)?,
            }
            .verify(params, message, sig)
            .is_ok(),
            Alg::Es(algorithm, _, len) => {
                let (x, y) = (part(&k.x)?, part(&k.y)?);
                if x.len() != len || y.len() != len {
                    return Err(OidcError::Malformed("EC key of the wrong size"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                signature::UnparsedPublicKey::new(algorithm, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Alg::EdDsa => signature::UnparsedPublicKey::new(&signature::ED25519, part(&k.x)?)
                .verify(message, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(OidcError::Signature)
        }
    }
}

/// GETs `url` (https) and returns its body, at most [`MAX_JWKS_BYTES`].
async fn get(url: &str, tls: &TlsConnector) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("only https is accepted".into());
    }
    let host = uri.host().ok_or("url without host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let stream = tls
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::get(&uri)
        .header(hyper::header::HOST, host.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://sso.example.vn/realms/stnmt".into(),
            audience: "quantrac".into(),
            jwks_url: "https://sso.example.vn/certs".into(),
            identity_claim: default_identity_claim(),
            roles_claim: "realm_access.roles".into(),
            roles: default_roles(),
            ca_file: None,
            leeway: default_leeway(),
            jwks_refresh: default_refresh(),
        }
    }

    fn verifier() -> Arc<Verifier> {
        Verifier::new(config()).expect("verifier")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn claims(f: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
        let mut c = serde_json::json!({
            "iss": "https://sso.example.vn/realms/stnmt",
            "aud": ["account", "quantrac"],
            "exp": 1_800_000_300,
            "preferred_username": "nguyen.van.a",
            "realm_access": {"roles": ["officer", "offline_access"]}
        });
        f(&mut c);
        c
    }

    #[test]
    fn claims_are_checked() {
        let v = verifier();
        let ok = v.check_claims(&claims(|_| {}), now()).expect("valid");
        assert_eq!(ok.subject, "nguyen.van.a");
        assert_eq!(ok.roles, ["officer", "offline_access"]);

        let refused = |f: fn(&mut serde_json::Value)| v.check_claims(&claims(f), now()).err();
        assert!(matches!(
            refused(|c| c["iss"] = "https://evil".into()),
            Some(OidcError::Issuer(_))
        ));
        assert!(matches!(
            refused(|c| c["aud"] = "another-app".into()),
            Some(OidcError::Audience)
        ));
        // Within the leeway an expired token still passes; beyond it, not.
        assert!(refused(|c| c["exp"] = 1_799_999_950.into()).is_none());
        assert!(matches!(
            refused(|c| c["exp"] = 1_799_999_900.into()),
            Some(OidcError::Expired(_))
        ));
        assert!(matches!(
            refused(|c| {
                c.as_object_mut().map(|o| o.remove("exp"));
            }),
            Some(OidcError::Claim(_))
        ));
        assert!(matches!(
            refused(|c| c["nbf"] = 1_800_000_100.into()),
            Some(OidcError::NotYet(_))
        ));
        assert!(matches!(
            refused(|c| c["preferred_username"] = " ".into()),
            Some(OidcError::Claim(_))
        ));
    }

    #[test]
    fn algorithms_outside_the_list_are_refused() {
        for alg in ["none", "HS256", "RS1", ""] {
            assert!(
                matches!(Alg::parse(alg), Err(OidcError::Algorithm(_))),
                "{alg}"
            );
        }
        let rsa = Jwk {
            kty: "RSA".into(),
            kid: None,
            alg: Some("RS256".into()),
            use_: None,
            crv: None,
            n: None,
            e: None,
            x: None,
            y: None,
        };
        assert!(Alg::parse("RS256").map(|a| a.fits(&rsa)).unwrap_or(false));
        // A key published for RS256 does not verify PS256, nor an EC alg.
        assert!(!Alg::parse("PS256").map(|a| a.fits(&rsa)).unwrap_or(true));
        assert!(!Alg::parse("ES256").map(|a| a.fits(&rsa)).unwrap_or(true));
    }

    #[test]
    fn only_https_key_sets_are_configured() {
        let mut c = config();
        assert_eq!(c.problems(), None);
        c.jwks_url = "http://sso.example.vn/certs".into();
        assert!(c.problems().is_some_and(|p| p.contains("jwks_url")));
        let mut c = config();
        c.roles.insert("superuser".into(), "root".into());
        assert!(
            c.problems()
                .is_some_and(|p| p.contains("oidc.roles.superuser"))
        );
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_not_asked_at_every_call() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let v = Verifier::new(OidcConfig {
            jwks_url: format!("https://127.0.0.1:{port}/certs"),
            ..config()
        })
        .expect("verifier");
        let part = |j: serde_json::Value| URL_SAFE_NO_PAD.encode(j.to_string());
        let token = format!(
            "{}.{}.AAAA",
            part(serde_json::json!({"alg": "ES256", "kid": "k"})),
            part(serde_json::json!({}))
        );
        let first = v.verify(&token, now()).await;
        assert!(
            matches!(&first, Err(OidcError::Jwks { why, .. }) if !why.contains("last attempt")),
            "{first:?}"
        );
        let second = v.verify(&token, now()).await;
        assert!(
            matches!(&second, Err(OidcError::Jwks { why, .. }) if why.contains("last attempt")),
            "{second:?}"
        );
    }

    #[test]
    fn claims_by_path() {
        let c = serde_json::json!({"a": {"b": ["x"]}, "https://x.vn/roles": ["y"]});
        assert_eq!(claim(&c, "a.b"), Some(&serde_json::json!(["x"])));
        assert_eq!(
            claim(&c, "https://x.vn/roles"),
            Some(&serde_json::json!(["y"]))
        );
        assert_eq!(claim(&c, "a.c"), None);
    }
}
