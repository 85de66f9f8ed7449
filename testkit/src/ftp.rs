//! FTP(S) for tests of the FTP receiver: free ports to listen on, and a
//! station's upload through a real FTP client (suppaftp), plain or with
//! explicit TLS.

use std::net::{SocketAddr, TcpListener};

use suppaftp::tokio::{
    AsyncFtpStream, AsyncRustlsConnector, AsyncRustlsFtpStream, ImplAsyncFtpStream, TokioTlsStream,
};

/// A port nobody listens on now (bound and released: another process could
/// take it meanwhile, which a test then reports as a bind failure).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `n` consecutive free ports (passive data ports), first and last.
pub fn free_ports(n: u16) -> [u16; 2] {
    for _ in 0..100 {
        let first = free_port();
        let Some(last) = first.checked_add(n - 1) else {
            continue;
        };
        let all: Vec<_> = (first..=last)
            .map(|p| TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if all.iter().all(Result::is_ok) {
            return [first, last];
        }
    }
    panic!("no {n} consecutive free ports");
}

/// Waits (at most 30 s) until `addr` accepts connections: libunftp binds
/// inside its task, after ingest's start returned.
pub async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "FTP receiver listening on {addr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Logs in as `user` and uploads `body` as `name`; the server's refusal
/// (login or upload) as text.
pub async fn upload(
    addr: SocketAddr,
    user: &str,
    password: &str,
    name: &str,
    body: &[u8],
) -> Result<u64, String> {
    let ftp = AsyncFtpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    login_and_put(ftp, user, password, name, body).await
}

/// The session after connecting: login, one upload, quit.
async fn login_and_put<T: TokioTlsStream + Send>(
    mut ftp: ImplAsyncFtpStream<T>,
    user: &str,
    password: &str,
    name: &str,
    body: &[u8],
) -> Result<u64, String> {
    ftp.login(user, password)
        .await
        .map_err(|e| format!("login: {e}"))?;
    let sent = ftp
        .put_file(name, &mut &body[..])
        .await
        .map_err(|e| format!("upload: {e}"));
    let _ = ftp.quit().await;
    sent
}

/// [`upload`] after `AUTH TLS`, trusting `ca` (PEM).
pub async fn upload_tls(
    addr: SocketAddr,
    ca: &std::path::Path,
    user: &str,
    password: &str,
    name: &str,
    body: &[u8],
) -> Result<u64, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).map_err(|e| format!("CA: {e}"))?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(
        std::sync::Arc::new(config),
    ));
    let ftp = AsyncRustlsFtpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let ftp = ftp
        .into_secure(connector, "localhost")
        .await
        .map_err(|e| format!("AUTH TLS: {e}"))?;
    login_and_put(ftp, user, password, name, body).await
}

/// The certificates of a PEM bundle.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}
