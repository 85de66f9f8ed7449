//! Which stations this instance watches for silence, when several alerting
//! instances share `readings.valid` in one consumer group.
//!
//! A station's readings all land in one partition (the record key is the
//! station id), so the instance that owns that partition is the one that
//! hears the station, and the only one that may call it silent. Without
//! this, every instance watched every station: a station whose readings
//! went to another instance looked silent here (issue 12: 2 instances, 10
//! sending stations, 10 false data-gap alerts).
//!
//! The partition of a station is computed the way the producer (librdkafka's
//! default `consistent_random` partitioner) chose it: CRC-32 of the key
//! modulo the partition count. A partition's silence clock starts when it
//! was assigned here, so stations taken over in a rebalance get their full
//! threshold before a gap is called.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// librdkafka's `consistent_random` partition of a non-empty key.
pub fn partition_of(key: &[u8], partitions: u32) -> i32 {
    let p = crc32fast::hash(key) % partitions.max(1);
    i32::try_from(p).unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct Ownership {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The topic's partition count; unknown until the first assignment.
    partitions: Option<u32>,
    /// Assigned partitions and when each was assigned.
    owned: HashMap<i32, DateTime<Utc>>,
}

impl Ownership {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Partitions assigned to this instance now (a rebalance's outcome).
    pub fn assign(&self, partitions: &[i32], topic_partitions: Option<u32>, now: DateTime<Utc>) {
        let mut s = self.state();
        if let Some(n) = topic_partitions.filter(|n| *n > 0) {
            s.partitions = Some(n);
        }
        for p in partitions {
            s.owned.entry(*p).or_insert(now);
        }
    }

    /// Whether the topic's partition count is still unknown (its metadata
    /// could not be read at the last assignment).
    pub fn count_unknown(&self) -> bool {
        self.state().partitions.is_none()
    }

    /// Partitions taken away.
    pub fn revoke(&self, partitions: &[i32]) {
        let mut s = self.state();
        for p in partitions {
            s.owned.remove(p);
        }
    }

    /// Since when this instance watches `station`; `None` when another
    /// instance does (or nothing is assigned yet).
    pub fn watching_since(&self, station: &str) -> Option<DateTime<Utc>> {
        let s = self.state();
        let n = s.partitions?;
        s.owned.get(&partition_of(station.as_bytes(), n)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owned_stations_are_watched_from_their_assignment() {
        let o = Ownership::default();
        assert_eq!(o.watching_since("X"), None, "nothing assigned yet");
        let p = partition_of(b"X", 6);
        let t = Utc::now();
        o.assign(&[p], Some(6), t);
        assert_eq!(o.watching_since("X"), Some(t));
        let other = (0..100)
            .map(|i| format!("S{i}"))
            .find(|s| partition_of(s.as_bytes(), 6) != p)
            .expect("a station elsewhere");
        assert_eq!(o.watching_since(&other), None);
        o.revoke(&[p]);
        assert_eq!(o.watching_since("X"), None);
    }
}
