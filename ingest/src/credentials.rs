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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, oneshot};
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

#[derive(Default)]
struct Table {
    hashes: HashMap<String, String>,
    /// Every id and alias → the station's id.
    names: HashMap<String, String>,
    /// Stations that list a full Circular 10 identity among their aliases.
    with_identity: std::collections::HashSet<String>,
    /// SHA-256 of each station's verified secret.
    verified: HashMap<String, [u8; 32]>,
}

/// Never the hashes or digests: a Debug print can reach a log (libunftp
/// logs its server builder, which holds these, on every connection).
impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("stations_with_secret", &self.hashes.len())
            .field("names", &self.names.len())
            .finish_non_exhaustive()
    }
}

/// The stations' secret hashes, reloaded when the registry file changes.
#[derive(Debug)]
pub struct Credentials {
    path: Option<PathBuf>,
    table: RwLock<Table>,
    modified: RwLock<Option<SystemTime>>,
    verifying: Semaphore,
    /// Argon2 verifications run (the costly part of a check).
    verifications: AtomicU64,
    /// Refuse stations that have no secret at all.
    pub require_all: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("station credentials: {0}")]
pub struct CredentialsError(String);

/// A Circular 10 identity: `Province_Facility_Station`.
fn is_identity(name: &str) -> bool {
    name.splitn(3, '_').count() == 3
}

fn load(path: &Path) -> Result<Table, CredentialsError> {
    let registry = quantrac_proto::registry::Registry::load(path)
        .map_err(|e| CredentialsError(e.to_string()))?;
    let mut t = Table::default();
    for s in registry.stations() {
        for name in std::iter::once(&s.id).chain(&s.aliases) {
            t.names.insert(name.clone(), s.id.clone());
        }
        if s.aliases.iter().any(|a| is_identity(a)) {
            t.with_identity.insert(s.id.clone());
        }
    }
    t.hashes = hashes(&registry)?;
    Ok(t)
}

fn hashes(
    registry: &quantrac_proto::registry::Registry,
) -> Result<HashMap<String, String>, CredentialsError> {
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
            verifications: AtomicU64::new(0),
            require_all,
        }
    }

    /// Reads the registry at `path`; an error stops ingest from starting.
    pub fn load(path: &Path, require_all: bool) -> Result<Self, CredentialsError> {
        let table = load(path)?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        tracing::info!(path = %path.display(), stations_with_secret = table.hashes.len(), "station credentials loaded");
        Ok(Credentials {
            path: Some(path.to_owned()),
            table: RwLock::new(table),
            modified: RwLock::new(modified),
            verifying: Semaphore::new(MAX_VERIFYING),
            verifications: AtomicU64::new(0),
            require_all,
        })
    }

    /// The registry station a Circular 10 file names, by all of
    /// `Province_Facility_Station`: the identity when the registry lists it
    /// (as an id or alias); else the `<Station>` part, unless that station
    /// lists an identity of its own, in which case the file is another
    /// facility's station of the same code and is refused. Unknown names
    /// are passed on as the `<Station>` part (the processor refuses them).
    pub fn circular10_station(
        &self,
        f: &quantrac_proto::wire::circular10::FileName,
    ) -> Result<String, quantrac_proto::wire::WireError> {
        let identity = format!("{}_{}_{}", f.province, f.facility, f.station);
        let t = self
            .table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = t.names.get(&identity) {
            return Ok(id.clone());
        }
        match t.names.get(&f.station) {
            Some(id) if t.with_identity.contains(id) => Err(quantrac_proto::wire::WireError::new(
                "circular10.unknown_identity",
                format!(
                    "{identity} is not a registered name; station {} is registered under another facility's identity",
                    f.station
                ),
            )),
            Some(id) => Ok(id.clone()),
            None => Ok(f.station.clone()),
        }
    }

    /// The registry id a name (id or alias) stands for; itself when unknown.
    pub fn canonical(&self, name: &str) -> String {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .names
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
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

    fn is_verified(&self, station: &str, d: &[u8; 32]) -> bool {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verified
            .get(station)
            .is_some_and(|v| same(v, d))
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
        // Another connection of the station may have verified the same
        // secret while this one waited: a fleet reconnecting at once (after
        // an ingest restart) must not run one Argon2 check per connection.
        if self.is_verified(station, &d) {
            return Check::Valid;
        }
        self.verifications.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ingest_credential_verifications_total").increment(1);
        let secret = secret.to_owned();
        let ok = verify_on_own_threads(hash, secret).await.unwrap_or(false);
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
        let table = load(path)?;
        let n = table.hashes.len();
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        tracing::info!(path = %path.display(), stations_with_secret = n, "station credentials reloaded");
        Ok(true)
    }
}

/// Argon2 on `MAX_VERIFYING` threads of its own, each keeping one memory
/// area for every verification (`Verifier`), rather than on tokio's
/// blocking pool with 19 MiB allocated per verification: a fleet proving
/// its secrets at once left ingest holding hundreds of MiB. Callers hold a
/// `verifying` permit, which bounds the queue.
fn verify_on_own_threads(hash: String, secret: String) -> oneshot::Receiver<bool> {
    type Job = (String, String, oneshot::Sender<bool>);
    static POOL: OnceLock<std::sync::mpsc::Sender<Job>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..MAX_VERIFYING {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    // One memory area per thread, kept (see Verifier).
                    let mut verifier = quantrac_plumbing::secret::Verifier::default();
                    loop {
                        let job = rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok((hash, secret, reply)) = job else {
                            return;
                        };
                        // Its connection is gone: no one to answer.
                        if !reply.is_closed() {
                            let _ = reply.send(verifier.verify(&hash, &secret));
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a secret verification thread");
            }
        }
        tx
    });
    let (reply, answer) = oneshot::channel();
    // No thread (none could start): the answer is dropped, the check fails.
    let _ = pool.send((hash, secret, reply));
    answer
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

#[cfg(test)]
mod tests {
    use super::*;
    use quantrac_proto::wire::circular10::parse_file_name;

    fn station(id: &str, aliases: &str) -> String {
        format!(
            r#"
[[stations]]
id = "{id}"
name = "x"
facility = "x"
industrial_zone = "KCN"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
aliases = [{aliases}]
parameters = [{{ code = "COD", unit = "mg/L", range_min = 0, range_max = 500 }}]
"#
        )
    }

    /// Two facilities each run a station coded KT01: the full identity in
    /// the file name tells them apart; a third facility's KT01 is refused
    /// rather than stored under the first one.
    /// A fleet reconnecting at once (after an ingest restart) sends one
    /// station's secret on many connections: Argon2 runs once, the others
    /// find it verified once they get their turn.
    #[tokio::test]
    async fn concurrent_checks_of_one_secret_verify_it_once() {
        let hash = quantrac_plumbing::secret::hash("s3cret").expect("hash");
        let c = std::sync::Arc::new(Credentials::none(false));
        c.table
            .write()
            .expect("lock")
            .hashes
            .insert("ST-1".into(), hash);
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                tokio::spawn(async move { c.check("ST-1", "s3cret").await })
            })
            .collect();
        for check in checks {
            assert_eq!(check.await.expect("task"), Check::Valid);
        }
        assert!(
            c.verifications.load(Ordering::Relaxed) <= MAX_VERIFYING as u64,
            "{} Argon2 runs for one secret",
            c.verifications.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn debug_prints_no_secret_hash() {
        let hash = quantrac_plumbing::secret::hash("s3cret").expect("hash");
        let mut t = Table::default();
        t.hashes.insert("ST-1".into(), hash.clone());
        t.verified.insert("ST-1".into(), digest("s3cret"));
        let c = Credentials::none(false);
        *c.table.write().expect("lock") = t;
        let printed = format!("{c:?}");
        assert!(!printed.contains(&hash), "{printed}");
        assert!(printed.contains("stations_with_secret: 1"), "{printed}");
    }

    #[test]
    fn circular10_files_name_stations_by_province_facility_and_station() {
        let text = [
            station("KT01", r#""PhuYen_NhaMayA_KT01""#),
            station("NMB-KT01", r#""PhuYen_NhaMayB_KT01""#),
            station("X1", ""),
        ]
        .concat();
        let path =
            std::env::temp_dir().join(format!("quantrac-credentials-{}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write");
        let c = Credentials::load(&path, false).expect("load");
        let _ = std::fs::remove_file(&path);
        let of = |name: &str| {
            c.circular10_station(&parse_file_name(name).expect("file name"))
                .map_err(|e| e.reason)
        };
        assert_eq!(
            of("PhuYen_NhaMayA_KT01_20261201100000.txt"),
            Ok("KT01".into())
        );
        assert_eq!(
            of("PhuYen_NhaMayB_KT01_20261201100000.txt"),
            Ok("NMB-KT01".into())
        );
        assert_eq!(
            of("PhuYen_NhaMayC_KT01_20261201100000.txt"),
            Err("circular10.unknown_identity")
        );
        // No identity registered: the station part, as before.
        assert_eq!(of("PhuYen_Any_X1_20261201100000.txt"), Ok("X1".into()));
        assert_eq!(of("PhuYen_Any_Z9_20261201100000.txt"), Ok("Z9".into()));
        assert_eq!(c.canonical("PhuYen_NhaMayB_KT01"), "NMB-KT01");
    }
}
