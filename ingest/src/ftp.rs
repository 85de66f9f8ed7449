//! The FTP(S) receiver: stations upload Circular 10 files, the transport
//! the Circular prescribes.
//!
//! `libunftp` speaks the protocol; its storage back-end here is the intake
//! itself, not a directory: an upload (`STOR`) is read whole (at most
//! `ftp.max_file_bytes`), decoded, published, and answered `226` only once
//! Kafka (in single-node mode, the processor's commit) has acknowledged its
//! records. The file itself rides unchanged on the first record, and the
//! processor keeps it (`raw_files`) as evidence with its reception time. A
//! file refused is answered `550` with the reason, and its bytes are kept
//! on `ingest.rejected` like every refusal. Nothing is written to
//! disk, so there is no watched directory and no race with a half-written
//! file.
//!
//! Accounts come from the registry: the user is a station's id or one of
//! its names (aliases), the password its secret (`secret_hash`, checked by
//! [`Credentials`]); a station without one cannot log in. A file may carry
//! only the logged-in station's readings. Uploading the same file again
//! stores nothing new: readings are keyed by station, parameter and time.
//! Three wrong passwords block the user and address for a while.

use std::fmt::{self, Debug, Display};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::FixedOffset;
use quantrac_proto::v1::SourceProtocol;
use quantrac_proto::wire::{WireError, circular10};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials as FtpCredentials, Principal, UserDetail,
    UserDetailError, UserDetailProvider,
};
use unftp_core::storage::{Error, ErrorKind, Fileinfo, Metadata, StorageBackend};

use crate::IngestError;
use crate::config::FtpConfig;
use crate::credentials::{Check, Credentials};
use crate::intake::{Intake, Verdict};

const SOURCE: SourceProtocol = SourceProtocol::FtpCircular10;

/// A logged-in station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Station {
    pub id: String,
}

impl Display for Station {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl UserDetail for Station {}

/// Station accounts: user = a registry name, password = its secret.
#[derive(Debug)]
struct Accounts {
    credentials: Arc<Credentials>,
}

#[async_trait]
impl Authenticator for Accounts {
    async fn authenticate(
        &self,
        username: &str,
        creds: &FtpCredentials,
    ) -> Result<Principal, AuthenticationError> {
        let station = self.credentials.canonical(username.trim());
        let password = creds.password.as_deref().unwrap_or_default();
        let refused = |reason: &'static str| {
            metrics::counter!("ingest_auth_refused_total", "reason" => reason).increment(1);
            tracing::warn!(target: "quantrac::security", %station, source_ip = %creds.source_ip, reason, "FTP login refused");
        };
        match self.credentials.check(&station, password).await {
            Check::Valid => Ok(Principal { username: station }),
            Check::Wrong => {
                refused("ftp.bad_password");
                Err(AuthenticationError::BadPassword)
            }
            Check::NoSecret => {
                refused("ftp.no_account");
                Err(AuthenticationError::BadUser)
            }
        }
    }
}

#[derive(Debug)]
struct StationDetails;

#[async_trait]
impl UserDetailProvider for StationDetails {
    type User = Station;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<Station, UserDetailError> {
        Ok(Station {
            id: principal.username.clone(),
        })
    }
}

/// The storage back-end: uploads go to the intake.
#[derive(Clone)]
struct Upload {
    intake: Intake,
    credentials: Arc<Credentials>,
    offset: FixedOffset,
    max_bytes: usize,
}

impl Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// Every path is an empty directory: loggers may change into or create
/// the folders they are configured with.
#[derive(Debug)]
struct Folder;

impl Metadata for Folder {
    fn len(&self) -> u64 {
        0
    }
    fn is_dir(&self) -> bool {
        true
    }
    fn is_file(&self) -> bool {
        false
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> unftp_core::storage::Result<SystemTime> {
        Ok(SystemTime::now())
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
}

/// The FTP reply for a refused file: 552 too large, 553 not a Circular
/// 10 name, 550 another station's file, 551 content that is not a valid
/// record (RFC 959: "page type unknown").
fn reply_kind(reason: &str) -> ErrorKind {
    match reason {
        "ftp.too_large" => ErrorKind::ExceededStorageAllocationError,
        "circular10.bad_file_name" => ErrorKind::FileNameNotAllowedError,
        "ftp.wrong_station" | "circular10.unknown_identity" => ErrorKind::PermissionDenied,
        _ => ErrorKind::PageTypeUnknown,
    }
}

/// A refusal with its reason and detail (for the log; see [`reply_kind`]).
fn refusal(kind: ErrorKind, e: &WireError) -> Error {
    Error::new(
        kind,
        std::io::Error::other(format!("{}: {}", e.reason, e.detail)),
    )
}

impl Upload {
    /// Decodes one uploaded file of `station`: its name must be a
    /// Circular 10 name naming that station.
    fn decode(
        &self,
        station: &str,
        name: &str,
        body: &[u8],
    ) -> Result<Vec<quantrac_proto::Sample>, WireError> {
        let file = circular10::parse_file_name(name)?;
        let named = self.credentials.circular10_station(&file)?;
        if named != station {
            return Err(WireError::new(
                "ftp.wrong_station",
                format!("{name} names station {named}; logged in as {station}"),
            ));
        }
        let samples = circular10::decode_record(body, station, self.offset)?;
        circular10::check_file_time(&file, &samples, self.offset)?;
        Ok(samples)
    }

    async fn receive<R>(&self, station: &str, mut input: R, path: &Path) -> Result<u64, Error>
    where
        R: tokio::io::AsyncRead + Send + Sync + Unpin,
    {
        self.intake.received(SOURCE);
        let origin = format!("ftp:{station}");
        let mut body = Vec::new();
        let limit = u64::try_from(self.max_bytes).unwrap_or(u64::MAX);
        (&mut input)
            .take(limit.saturating_add(1))
            .read_to_end(&mut body)
            .await
            .map_err(|e| Error::new(ErrorKind::ConnectionClosed, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let decoded = if body.len() > self.max_bytes {
            Err(WireError::new(
                "ftp.too_large",
                format!(
                    "{name} is longer than {} bytes (ftp.max_file_bytes)",
                    self.max_bytes
                ),
            ))
        } else {
            // decode_record refuses a file that is not UTF-8.
            self.decode(station, &name, &body)
        };
        let prepared = match decoded {
            Ok(samples) => {
                self.intake
                    .accept_file(SOURCE, samples, Some((name.as_str(), body.as_slice())))
            }
            Err(e) => {
                // What is kept of a refused file: its name, then its bytes.
                let mut kept = format!("{name}\n").into_bytes();
                kept.extend_from_slice(&body[..body.len().min(self.max_bytes)]);
                self.intake.reject(SOURCE, &origin, station, &kept, e)
            }
        };
        let acks =
            self.intake.publish(&prepared).await.map_err(|e| {
                Error::new(ErrorKind::LocalError, std::io::Error::other(e.to_string()))
            })?;
        // The answer waits for the records to be durable; a failure here is
        // transient (451): the logger uploads the file again.
        acks.wait()
            .await
            .map_err(|e| Error::new(ErrorKind::LocalError, std::io::Error::other(e.to_string())))?;
        self.intake.acknowledged(SOURCE, &prepared.verdict);
        match prepared.verdict {
            Verdict::Accepted { readings } => {
                tracing::info!(%station, file = %name, readings, "FTP upload stored");
                Ok(body.len() as u64)
            }
            // libunftp answers each kind with its own fixed text; the
            // reason itself is on ingest.rejected and in the log.
            Verdict::Rejected(e) => Err(refusal(reply_kind(e.reason), &e)),
        }
    }
}

#[async_trait]
impl<U: UserDetail> StorageBackend<U> for Upload {
    type Metadata = Folder;

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<Folder> {
        Ok(Folder)
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<Vec<Fileinfo<PathBuf, Folder>>> {
        Ok(Vec::new())
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _path: P,
        _start_pos: u64,
    ) -> unftp_core::storage::Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        Err(ErrorKind::PermanentFileNotAvailable.into())
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &U,
        input: R,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<u64> {
        if start_pos != 0 {
            // A file is decoded whole; a resumed upload is sent again.
            return Err(ErrorKind::CommandNotImplemented.into());
        }
        // The user is the station (`Station`'s Display is its id).
        self.receive(&user.to_string(), input, path.as_ref()).await
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<()> {
        Err(ErrorKind::PermissionDenied.into())
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<()> {
        Ok(())
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _from: P,
        _to: P,
    ) -> unftp_core::storage::Result<()> {
        Err(ErrorKind::PermissionDenied.into())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<()> {
        Err(ErrorKind::PermissionDenied.into())
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<()> {
        Ok(())
    }
}

/// Serves FTP(S) on `config.listen` until `shutdown`; uploads in flight
/// get `grace` to finish.
pub async fn run(
    config: FtpConfig,
    offset: FixedOffset,
    intake: Intake,
    credentials: Arc<Credentials>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let Some(listen) = config.listen else {
        return Ok(());
    };
    let upload = Upload {
        intake,
        credentials: Arc::clone(&credentials),
        offset,
        max_bytes: config.max_file_bytes,
    };
    let grace = config.shutdown_grace;
    let mut builder = libunftp::ServerBuilder::with_authenticator(
        Box::new(move || upload.clone()),
        Arc::new(Accounts { credentials }),
    )
    .user_detail_provider(Arc::new(StationDetails))
    .greeting("quantrac: Circular 10 uploads")
    .passive_ports(config.passive_ports[0]..=config.passive_ports[1])
    .idle_session_timeout(config.idle_timeout.as_secs())
    .failed_logins_policy(libunftp::options::FailedLoginsPolicy::new(
        3,
        Duration::from_secs(300),
        libunftp::options::FailedLoginsBlock::UserAndIP,
    ))
    .shutdown_indicator(async move {
        shutdown.cancelled().await;
        libunftp::options::Shutdown::new().grace_period(grace)
    });
    if let Some(tls) = &config.tls {
        // Read once here so a bad file stops the start with its name;
        // libunftp reads the same files when it builds.
        quantrac_plumbing::tls::server_config(tls, &[])?;
        builder = builder.ftps(tls.cert.clone(), tls.key.clone());
        if config.require_tls {
            builder = builder.ftps_required(
                libunftp::options::FtpsRequired::All,
                libunftp::options::FtpsRequired::All,
            );
        }
    }
    let server = builder
        .build()
        .map_err(|e| IngestError::Ftp(e.to_string()))?;
    tracing::info!(%listen, tls = config.tls.is_some(), "FTP receiver listening");
    server
        .listen(listen.to_string())
        .await
        .map_err(|e| IngestError::Ftp(e.to_string()))
}
