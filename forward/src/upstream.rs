//! One FTP(S) session with the national system's server (suppaftp, a
//! maintained async FTP client): connect, `AUTH TLS` when configured,
//! log in, binary mode, the target directory made if missing. Each
//! command runs under the configured timeout, so a server that stops
//! answering fails the round instead of hanging it.
//!
//! A file is written as `<name>.part` and then renamed, so the receiving
//! side never reads half a file; [`Session::holds`] reads a file back, so
//! a file uploaded just before a crash is recognised rather than sent twice.

use std::sync::Arc;
use std::time::Duration;

use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use tokio::io::AsyncReadExt;

use crate::config::UpstreamConfig;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{step} timed out after {after:?}")]
    Timeout { step: &'static str, after: Duration },
    #[error("{step}: {source}")]
    Ftp {
        step: &'static str,
        source: suppaftp::FtpError,
    },
    #[error("TLS: {0}")]
    Tls(#[from] quantrac_plumbing::tls::TlsError),
}

impl UpstreamError {
    /// A short label for counters.
    pub fn step(&self) -> &'static str {
        match self {
            UpstreamError::Timeout { step, .. } | UpstreamError::Ftp { step, .. } => step,
            UpstreamError::Tls(_) => "tls",
        }
    }
}

pub struct Session {
    ftp: AsyncRustlsFtpStream,
    timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

async fn within<T>(
    step: &'static str,
    after: Duration,
    f: impl Future<Output = Result<T, suppaftp::FtpError>>,
) -> Result<T, UpstreamError> {
    tokio::time::timeout(after, f)
        .await
        .map_err(|_| UpstreamError::Timeout { step, after })?
        .map_err(|source| UpstreamError::Ftp { step, source })
}

impl Session {
    pub async fn open(c: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let t = c.timeout;
        let mut ftp = within(
            "connect",
            t,
            AsyncRustlsFtpStream::connect((c.host.as_str(), c.port)),
        )
        .await?;
        if c.tls {
            let tls = quantrac_plumbing::tls::client_config(c.ca_file.as_deref(), None)?;
            let connector =
                AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(Arc::clone(&tls)));
            ftp = within("auth_tls", t, ftp.into_secure(connector, &c.host)).await?;
        }
        within(
            "login",
            t,
            ftp.login(c.user.as_str(), c.password.0.as_str()),
        )
        .await?;
        within("type", t, ftp.transfer_type(FileType::Binary)).await?;
        let mut session = Session { ftp, timeout: t };
        session.enter(&c.dir).await?;
        Ok(session)
    }

    /// Changes to `dir`, making each missing level.
    async fn enter(&mut self, dir: &str) -> Result<(), UpstreamError> {
        let t = self.timeout;
        if dir.starts_with('/') {
            within("cwd", t, self.ftp.cwd("/")).await?;
        }
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            if within("cwd", t, self.ftp.cwd(part)).await.is_err() {
                within("mkdir", t, self.ftp.mkdir(part)).await?;
                within("cwd", t, self.ftp.cwd(part)).await?;
            }
        }
        Ok(())
    }

    /// Whether the server already has `name` with exactly `body`.
    pub async fn holds(&mut self, name: &str, body: &[u8]) -> Result<bool, UpstreamError> {
        let t = self.timeout;
        // No such file: a refusal, not a failure of the session.
        let Ok(size) = within("size", t, self.ftp.size(name)).await else {
            return Ok(false);
        };
        if size != body.len() {
            return Ok(false);
        }
        let mut stream = within("retr", t, self.ftp.retr_as_stream(name)).await?;
        let mut have = Vec::with_capacity(size);
        tokio::time::timeout(t, stream.read_to_end(&mut have))
            .await
            .map_err(|_| UpstreamError::Timeout {
                step: "retr",
                after: t,
            })?
            .map_err(|e| UpstreamError::Ftp {
                step: "retr",
                source: suppaftp::FtpError::ConnectionError(e),
            })?;
        within("retr", t, stream.finish()).await?;
        Ok(have == body)
    }

    /// Writes `body` as `name`: to `<name>.part` first, then renamed.
    pub async fn put(&mut self, name: &str, body: &[u8]) -> Result<(), UpstreamError> {
        let t = self.timeout;
        let part = format!("{name}.part");
        within("stor", t, self.ftp.put_file(part.as_str(), &mut &body[..])).await?;
        within("rename", t, self.ftp.rename(part.as_str(), name)).await?;
        Ok(())
    }

    pub async fn quit(mut self) {
        let _ = within("quit", self.timeout, self.ftp.quit()).await;
    }
}
