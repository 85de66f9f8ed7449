//! Station credentials from the registry (its `secret_hash` per station),
//! the one source of truth: HJ 212's `PW` and the TCP auth frames of JSON
//! lines and Circular 10 are checked against it. The file is read again
//! when it changes, without a restart; a file that no longer loads is
//! refused and the credentials in force stay.
//!
//! An Argon2 verification costs tens of milliseconds on purpose, so a
//! secret once verified is remembered (as its SHA-256, compared in
//! constant time) until the registry changes, and at most
//! `MAX_VERIFYING` run at once, off the async threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Verifications at once (each takes a core for tens of milliseconds).
const MAX_VERIFYING: usize = 2;

/// What a presented secret is, for a station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Valid,
    Wrong,
    /// The registry holds no secret for this station.
    NoSecret,
}

#[derive(Debug, Default)]
struct Table {
    hashes: HashMap<String, String>,
    /// SHA-256 of each station's verified secret.
    verified: HashMap<String, [u8; 32]>,
}

/// The stations' secret hashes, reloaded when the registry file changes.
#[derive(Debug)]
pub struct Credentials {
    path: Option<PathBuf>,
    table: RwLock<Table>,
    modified: RwLock<Option<SystemTime>>,
    verifying: Semaphore,
    /// Refuse stations that have no secret at all.
    pub require_all: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("station credentials: {0}")]
pub struct CredentialsError(String);

fn load(path: &Path) -> Result<HashMap<String, String>, CredentialsError> {
    let registry = quantrac_proto::registry::Registry::load(path)
        .map_err(|e| CredentialsError(e.to_string()))?;
    let mut out = HashMap::new();
    for s in registry.stations() {
        if let Some(h) = &s.secret_hash {
            quantrac_plumbing::secret::check_hash(h)
                .map_err(|e| CredentialsError(format!("station {}: {e}", s.id)))?;
            // A station sending under an alias proves itself with the same
            // secret (the processor stores its readings under its id).
            for name in std::iter::once(&s.id).chain(&s.aliases) {
                out.insert(name.clone(), h.clone());
            }
        }
    }
    Ok(out)
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credentials {
    /// No registry: no station has a secret.
    pub fn none(require_all: bool) -> Self {
        Credentials {
            path: None,
            table: RwLock::new(Table::default()),
            modified: RwLock::new(None),
            verifying: Semaphore::new(MAX_VERIFYING),
            require_all,
        }
    }

    /// Reads the registry at `path`; an error stops ingest from starting.
    pub fn load(path: &Path, require_all: bool) -> Result<Self, CredentialsError> {
        let hashes = load(path)?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        tracing::info!(path = %path.display(), stations_with_secret = hashes.len(), "station credentials loaded");
        Ok(Credentials {
            path: Some(path.to_owned()),
            table: RwLock::new(Table {
                hashes,
                verified: HashMap::new(),
            }),
            modified: RwLock::new(modified),
            verifying: Semaphore::new(MAX_VERIFYING),
            require_all,
        })
    }

    /// Whether a reading for `station` needs its credential.
    pub fn required(&self, station: &str) -> bool {
        self.require_all || self.has_secret(station)
    }

    pub fn has_secret(&self, station: &str) -> bool {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hashes
            .contains_key(station)
    }

    /// Checks `secret` for `station`.
    pub async fn check(&self, station: &str, secret: &str) -> Check {
        let d = digest(secret);
        let hash = {
            let t = self
                .table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(h) = t.hashes.get(station) else {
                return Check::NoSecret;
            };
            if t.verified.get(station).is_some_and(|v| same(v, &d)) {
                return Check::Valid;
            }
            h.clone()
        };
        let Ok(_permit) = self.verifying.acquire().await else {
            return Check::Wrong;
        };
        let secret = secret.to_owned();
        let ok =
            tokio::task::spawn_blocking(move || quantrac_plumbing::secret::verify(&hash, &secret))
                .await
                .unwrap_or(false);
        if !ok {
            return Check::Wrong;
        }
        let mut t = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.verified.insert(station.to_owned(), d);
        Check::Valid
    }

    /// Reads the file again if it changed since; returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, CredentialsError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let now = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if now
            == *self
                .modified
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Ok(false);
        }
        *self
            .modified
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
        let hashes = load(path)?;
        let n = hashes.len();
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Table {
            hashes,
            verified: HashMap::new(),
        };
        tracing::info!(path = %path.display(), stations_with_secret = n, "station credentials reloaded");
        Ok(true)
    }
}

/// Checks the registry file every `every` until `stop`.
pub async fn watch(credentials: Arc<Credentials>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = credentials.reload_if_changed() {
            metrics::counter!("ingest_credentials_reload_failures_total").increment(1);
            tracing::error!(error = %e, "registry changed but does not load; the credentials in force stay");
        }
    }
}
