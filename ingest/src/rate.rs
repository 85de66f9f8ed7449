//! Rate caps, as back-pressure: readings per second per sending address and
//! per station. A sender over its cap is not refused (its readings would
//! then have to be sent again, or be lost); the connection simply waits
//! before reading its next frame, and TCP flow control slows the sender.
//!
//! A token bucket per key: `rate` tokens a second, holding at most one
//! second's worth (a logger's backlog after an outage goes out at the cap,
//! not in one burst). Keys idle for a minute are forgotten, so the map
//! stays as small as the set of active senders.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateCap {
    /// Tokens a second; 0 switches the cap off.
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens available at `at` (negative: owed).
    tokens: f64,
    at: Instant,
}

impl RateCap {
    pub fn new(per_second: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens for `key` and returns how long the caller must wait
    /// before it goes on (zero within the cap).
    pub fn take(&self, key: &str, n: usize, now: Instant) -> Duration {
        if self.rate <= 0.0 || n == 0 {
            return Duration::ZERO;
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 4096 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.rate);
        bucket.at = now;
        bucket.tokens -= n as f64;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn within_the_cap_no_wait_beyond_it_the_debt_in_time() {
        let cap = RateCap::new(100);
        let t0 = Instant::now();
        assert_eq!(
            cap.take("a", 100, t0),
            Duration::ZERO,
            "one second's worth at once"
        );
        assert_eq!(cap.take("a", 50, t0), Duration::from_millis(500));
        assert_eq!(cap.take("b", 10, t0), Duration::ZERO, "keys are separate");
        // Half a second later the debt is paid.
        assert_eq!(
            cap.take("a", 0, t0 + Duration::from_millis(500)),
            Duration::ZERO
        );
        assert_eq!(
            cap.take("a", 10, t0 + Duration::from_millis(600)),
            Duration::ZERO
        );
        assert_eq!(
            RateCap::new(0).take("a", 1_000_000, t0),
            Duration::ZERO,
            "off"
        );
    }

    proptest! {
        /// A sender that always waits what it is told never exceeds the
        /// cap (plus the one-second burst) over any run.
        #[test]
        fn waiting_as_told_keeps_to_the_cap(rate in 1u32..2_000, frames in prop::collection::vec(1usize..500, 1..200)) {
            let cap = RateCap::new(rate);
            let t0 = Instant::now();
            let mut now = t0;
            let mut sent = 0usize;
            for n in frames {
                now += cap.take("k", n, now);
                sent += n;
            }
            let allowed = f64::from(rate) * (1.0 + now.duration_since(t0).as_secs_f64());
            prop_assert!(sent as f64 <= allowed + 1e-6, "sent {} allowed {}", sent, allowed);
        }
    }
}
