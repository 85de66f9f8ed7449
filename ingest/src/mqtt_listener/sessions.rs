//! The listener's persistent sessions: which (station, client id) pairs
//! connected with `clean_session = 0`, kept in an append-only file so that
//! the answer survives a restart.
//!
//! The listener keeps no outbound state for a publisher, so a session is
//! only the fact that it exists; but that fact matters (MQTT 3.1.1
//! §3.2.2.2): a client holding unacknowledged messages that is told
//! "Session Present 0" must discard them. The first persistent connect of
//! a pair answers 0 and records it (written and fsynced before the
//! CONNACK); later ones answer 1. `clean_session = 1` forgets it.
//!
//! Keyed by station as well as client id: one station cannot end another's
//! session by reusing its client id.
//!
//! File: one line per change, `+<station>\t<client id>` or `-...`. Ids with
//! control characters are refused before they get here. Rewritten (to a
//! new file, fsynced, renamed) at start when removals make up most of it.
//!
//! Bounded: past `max` sessions a new persistent session is refused
//! (CONNACK 0x03, server unavailable: the client keeps its messages and
//! retries); known sessions and clean sessions are still served.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why the session file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("MQTT session file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} persistent MQTT sessions already: no room for another")]
    Full(usize),
}

#[derive(Debug)]
struct Inner {
    file: File,
    known: HashSet<(String, String)>,
}

/// The set of persistent sessions and its file.
#[derive(Debug)]
pub struct Sessions {
    path: PathBuf,
    max: usize,
    inner: Mutex<Inner>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SessionError + '_ {
    move |source| SessionError::Io {
        path: path.to_owned(),
        source,
    }
}

fn line(add: bool, station: &str, client: &str) -> String {
    format!("{}{station}\t{client}\n", if add { '+' } else { '-' })
}

impl Sessions {
    /// Reads `path` (created, with its directory, when missing).
    pub fn open(path: &Path, max: usize) -> Result<Self, SessionError> {
        let err = io(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(&err)?;
        }
        let mut known = HashSet::new();
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        // A last line without its newline was torn by a crash mid-write: it
        // was never answered, so it is cut off (else the next line would be
        // appended to it).
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(whole as u64))
                .map_err(&err)?;
        }
        let mut lines = 0usize;
        for l in String::from_utf8_lossy(&text[..whole]).lines() {
            lines += 1;
            let (add, rest) = match l.as_bytes().first() {
                Some(b'+') => (true, &l[1..]),
                Some(b'-') => (false, &l[1..]),
                _ => continue,
            };
            let Some((station, client)) = rest.split_once('\t') else {
                continue;
            };
            let key = (station.to_owned(), client.to_owned());
            if add {
                known.insert(key);
            } else {
                known.remove(&key);
            }
        }
        // Mostly removals: write the live set afresh, atomically.
        if lines > 2 * known.len() + 1_000 {
            let tmp = path.with_extension("compacting");
            let mut f = File::create(&tmp).map_err(&err)?;
            for (s, c) in &known {
                f.write_all(line(true, s, c).as_bytes()).map_err(&err)?;
            }
            f.sync_all().map_err(&err)?;
            std::fs::rename(&tmp, path).map_err(&err)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(&err)?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(&err)?;
        Ok(Sessions {
            path: path.to_owned(),
            max,
            inner: Mutex::new(Inner { file, known }),
        })
    }

    pub fn len(&self) -> usize {
        self.lock().known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A CONNECT of `client` for `station`: records or forgets the session
    /// (durably, before returning); returns the CONNACK's Session Present.
    /// Blocking (fsync): call it off the async threads.
    pub fn connect(
        &self,
        station: &str,
        client: &str,
        clean_session: bool,
    ) -> Result<bool, SessionError> {
        let mut inner = self.lock();
        let key = (station.to_owned(), client.to_owned());
        let present = inner.known.contains(&key);
        match (clean_session, present) {
            (false, true) => return Ok(true),
            (true, false) => return Ok(false),
            (false, false) if inner.known.len() >= self.max => {
                return Err(SessionError::Full(self.max));
            }
            _ => {}
        }
        let err = io(&self.path);
        inner
            .file
            .write_all(line(!clean_session, station, client).as_bytes())
            .map_err(&err)?;
        inner.file.sync_data().map_err(&err)?;
        if clean_session {
            inner.known.remove(&key);
        } else {
            inner.known.insert(key);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("quantrac-sessions-{}-{name}", std::process::id()))
            .join("state/mqtt-sessions")
    }

    #[test]
    fn present_once_recorded_forgotten_by_a_clean_session_and_kept_across_reopen() {
        let p = path("cycle");
        let _ = std::fs::remove_file(&p);
        let s = Sessions::open(&p, 10).expect("open");
        // Another station's client of the same id is another session.
        let answers = [("S1", false), ("S1", false), ("S2", false)]
            .map(|(st, clean)| s.connect(st, "c", clean).expect("ok"));
        assert_eq!(answers, [false, true, false]);
        drop(s);
        let s = Sessions::open(&p, 10).expect("reopen");
        assert_eq!(s.len(), 2);
        let answers =
            [false, true, false, true].map(|clean| s.connect("S1", "c", clean).expect("ok"));
        assert_eq!(answers, [true, false, false, false]);
        drop(s);
        let s = Sessions::open(&p, 10).expect("reopen");
        assert_eq!(s.len(), 1, "S1's session was forgotten, S2's kept");
        assert!(s.connect("S2", "c", false).expect("ok"));
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let p = path("torn");
        std::fs::create_dir_all(p.parent().expect("dir")).expect("dir");
        std::fs::write(&p, "+S1\tc\n+S2\tcli").expect("write");
        let s = Sessions::open(&p, 10).expect("open");
        assert_eq!(s.len(), 1);
        assert!(s.connect("S1", "c", false).expect("ok"));
        assert!(!s.connect("S3", "x", false).expect("ok"));
        drop(s);
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text, "+S1\tc\n+S3\tx\n", "the torn line is cut off");
    }

    #[test]
    fn past_the_bound_new_sessions_are_refused_and_known_ones_served() {
        let p = path("full");
        let _ = std::fs::remove_file(&p);
        let s = Sessions::open(&p, 2).expect("open");
        s.connect("S", "a", false).expect("ok");
        s.connect("S", "b", false).expect("ok");
        assert!(matches!(
            s.connect("S", "c", false),
            Err(SessionError::Full(2))
        ));
        assert!(s.connect("S", "a", false).expect("ok"));
        assert!(!s.connect("S", "c", true).expect("ok"));
    }

    #[test]
    fn a_file_of_mostly_removals_is_compacted() {
        let p = path("compact");
        let _ = std::fs::remove_file(&p);
        std::fs::create_dir_all(p.parent().expect("dir")).expect("dir");
        let churn: String = (0..1_500).map(|i| format!("+S\t{i}\n-S\t{i}\n")).collect();
        std::fs::write(&p, churn + "+S\tkept\n").expect("write");
        let s = Sessions::open(&p, 10_000).expect("reopen");
        assert_eq!(s.len(), 1);
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text, "+S\tkept\n");
    }
}
