//! TLS for every listener and client, from PEM files: one place that reads
//! certificates and keys, so each service's config names files and every
//! error names the file.
//!
//! rustls with the `ring` provider, chosen explicitly: the dependency graph
//! may enable another provider, and then rustls cannot pick a default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};

pub use rustls::{ClientConfig, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} `{path}`: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls: `{path}` holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls: client CA `{path}`: {reason}")]
    Verifier { path: PathBuf, reason: String },
}

/// A server's certificate chain and key, and optionally the CA whose client
/// certificates it accepts (a station's certificate names the station).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain, the server's own first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA certificates for client certificates. Unset: none asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse a handshake without a client certificate
    /// (otherwise a client may authenticate another way).
    #[serde(default)]
    pub require_client_cert: bool,
}

// rustls marks ring deprecated for lacking post-quantum key exchange;
// aws-lc-rs would bring a second C build into every service for it.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_owned(),
        source: rustls::pki_types::pem::Error::Io(e),
    })
}

/// The certificates in `pem` (read from `path`), at least one.
fn certs_in(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            what: "certificates",
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "certificate",
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key in `pem` (read from `path`).
fn key_in(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "private key",
            path: path.to_owned(),
        },
        source => TlsError::Read {
            what: "private key",
            path: path.to_owned(),
            source,
        },
    })
}

/// The trust anchors among `certs` (from `path`).
fn roots_of(path: &Path, certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(TlsError::Empty {
            what: "usable CA certificate",
            path: path.to_owned(),
        });
    }
    if ignored > 0 {
        tracing::warn!(path = %path.display(), ignored, "tls: some CA certificates could not be used");
    }
    Ok(roots)
}

/// The certificates in a PEM file, at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_in(path, &read("certificates", path)?)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_in(path, &read("private key", path)?)
}

/// The trust anchors of a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    roots_of(path, load_certs(path)?)
}

/// A server configuration; `alpn` lists the protocols offered (e.g. `h2`).
pub fn server_config(tls: &ServerTls, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&tls.cert)?;
    let key = load_key(&tls.key)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsError::Verifier {
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration trusting the CA certificates in `ca` (a private
/// CA), or the public web roots when unset. With `identity` (certificate
/// chain, key) the client presents a certificate.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(path) => load_roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// TLS for a gRPC server (tonic), from the same files: HTTP/2 only.
pub fn grpc_server(tls: &ServerTls) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    // Each file read once, and parsed here so that a bad one is named at
    // start rather than at the first handshake.
    let cert = read("certificates", &tls.cert)?;
    certs_in(&tls.cert, &cert)?;
    let key = read("private key", &tls.key)?;
    key_in(&tls.key, &key)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca {
        let pem = read("client CA", ca)?;
        roots_of(ca, certs_in(ca, &pem)?)?;
        config = config
            .client_ca_root(Certificate::from_pem(pem))
            .client_auth_optional(!tls.require_client_cert);
    }
    Ok(config)
}

/// TLS for a gRPC client of an `https://` URL: the CA in `ca` (a private
/// CA), or the public web roots.
pub fn grpc_client(ca: Option<&Path>) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    use tonic::transport::{Certificate, ClientTlsConfig};
    Ok(match ca {
        Some(path) => {
            let pem = read("CA certificates", path)?;
            roots_of(path, certs_in(path, &pem)?)?;
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
        }
        None => ClientTlsConfig::new().with_webpki_roots(),
    })
}

/// A gRPC endpoint for `url`: TLS for `https://`, trusting `ca` (or the
/// public web roots); plain for `http://`.
pub fn grpc_endpoint(url: &str, ca: Option<&Path>) -> Result<tonic::transport::Endpoint, String> {
    // HTTP/2's default receive window is 64 KiB: an answer larger than
    // that (the latest values of every station, a page of 10,000 points)
    // would wait a round trip for each window update.
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    if url.starts_with("https://") {
        let tls = grpc_client(ca).map_err(|e| e.to_string())?;
        endpoint.tls_config(tls).map_err(|e| e.to_string())
    } else {
        Ok(endpoint)
    }
}

/// The subject common name of a DER certificate, if it has one: the
/// station id on a station's client certificate.
pub fn subject_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let err = load_certs(Path::new("/nonexistent/quantrac-ca.pem")).expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/quantrac-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_a_key_says_so() {
        let dir = std::env::temp_dir().join(format!("quantrac-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not pem\n").expect("write");
        let err = load_key(&path).expect_err("no key");
        assert!(matches!(err, TlsError::Empty { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
