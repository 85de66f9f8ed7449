//! When samples go out: on the simulated clock, at a fixed total rate, or as
//! fast as acknowledgements allow.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::SimError;

/// How a run spaces its samples in wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Each station sends one slot every `interval / speedup`, like loggers
    /// on a clock (speedup 1 is real time).
    Realtime { speedup: f64 },
    /// `per_second` samples per second over the whole fleet, stations
    /// interleaved.
    Rate { per_second: f64 },
    /// As fast as the senders' windows and the acknowledgements allow.
    Unlimited,
}

impl Pacing {
    pub fn validate(&self) -> Result<(), SimError> {
        let ok = match *self {
            Pacing::Realtime { speedup } => speedup.is_finite() && speedup > 0.0,
            Pacing::Rate { per_second } => per_second.is_finite() && per_second > 0.0,
            Pacing::Unlimited => true,
        };
        if ok {
            Ok(())
        } else {
            Err(SimError::Config(format!(
                "{self:?}: speedup and rate must be positive"
            )))
        }
    }
}

/// Share of a real-time tick over which stations spread their sends, so a
/// large fleet does not hit ingest in one burst at each slot.
const SPREAD: f64 = 0.2;

/// The pacing of one run, shared by every station's driver.
#[derive(Debug)]
pub(crate) struct Pacer {
    pacing: Pacing,
    t0: Instant,
    /// Wall-clock length of one slot (real time only).
    tick: Duration,
    /// Next free send time of the rate limiter.
    next: Mutex<Instant>,
    period: Duration,
}

impl Pacer {
    pub(crate) fn new(pacing: Pacing, interval_secs: u32) -> Self {
        let t0 = Instant::now();
        let (tick, period) = match pacing {
            Pacing::Realtime { speedup } => (
                Duration::from_secs_f64(f64::from(interval_secs) / speedup),
                Duration::ZERO,
            ),
            Pacing::Rate { per_second } => {
                (Duration::ZERO, Duration::from_secs_f64(1.0 / per_second))
            }
            Pacing::Unlimited => (Duration::ZERO, Duration::ZERO),
        };
        Pacer {
            pacing,
            t0,
            tick,
            next: Mutex::new(t0),
            period,
        }
    }

    /// Real time: waits for slot `tick` of a station whose place in the
    /// spread is `phase` (in `[0, 1)`).
    pub(crate) async fn slot(&self, tick: u64, phase: f64) {
        if let Pacing::Realtime { .. } = self.pacing {
            let offset = self.tick.as_secs_f64() * (tick as f64 + SPREAD * phase);
            sleep_until(self.t0 + Duration::from_secs_f64(offset)).await;
        }
    }

    /// Fixed rate: waits for the next free send time. Idle time is not
    /// saved up, so a pause is not followed by a burst.
    pub(crate) async fn sample(&self) {
        if let Pacing::Rate { .. } = self.pacing {
            let at = {
                let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                let at = (*next).max(Instant::now());
                *next = at + self.period;
                at
            };
            sleep_until(at).await;
        }
    }
}

/// Exponential backoff between reconnects, with jitter so that a fleet cut
/// off together does not come back in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    jitter_key: u64,
    attempt: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, jitter_key: u64) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
            jitter_key,
            attempt: 0,
        }
    }

    /// The next delay: 50-100 % of the current step, which then doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempt += 1;
        let u = crate::model::unit_hash(self.jitter_key, self.attempt);
        let delay = self.current.mul_f64(0.5 + 0.5 * u);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_spaces_samples_and_realtime_follows_slots() {
        let pacer = Pacer::new(Pacing::Rate { per_second: 10.0 }, 300);
        let start = Instant::now();
        for _ in 0..21 {
            pacer.sample().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        let pacer = Pacer::new(Pacing::Realtime { speedup: 60.0 }, 300);
        let start = Instant::now();
        pacer.slot(3, 0.0).await;
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        pacer.slot(3, 0.5).await;
        assert_eq!(start.elapsed(), Duration::from_millis(15_500));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[5] >= Duration::from_millis(500) && delays[5] <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
