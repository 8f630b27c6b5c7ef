//! The delivery workers' clock. Every time a worker decides with (backoff,
//! the three days of failure, the signature's `t`, the delivery timeout)
//! comes from here, so a test can run days of failures in seconds: the
//! hidden `--webhook-test-time-scale N` makes this clock run N times as
//! fast as the wall clock, and every wait on it N times as short. Records
//! never take their time from it (they use the real clock), so a test run
//! writes no record from the future.

use std::time::{Duration, Instant};

use redeem_engine::Timestamp;

/// Shortest real delivery timeout: a scaled-down timeout still lets a
/// loopback receiver answer.
const REAL_TIMEOUT_MIN: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct Clock {
    /// How many times faster than the wall clock it runs; 1 in production.
    scale: u32,
    /// Its start, in real time.
    origin: Instant,
    /// Its start, as a wall-clock time.
    origin_ms: u64,
}

impl Clock {
    pub fn new(scale: u32) -> Clock {
        Clock {
            scale: scale.max(1),
            origin: Instant::now(),
            origin_ms: crate::timefmt::now().0,
        }
    }

    pub fn now(&self) -> Timestamp {
        let elapsed = self.origin.elapsed().as_millis() as u64;
        Timestamp(self.origin_ms + elapsed.saturating_mul(u64::from(self.scale)))
    }

    /// The real time to wait for `d` of this clock's time.
    pub fn real(&self, d: Duration) -> Duration {
        d / self.scale
    }

    /// The real time a receiver gets for `d` of this clock's time.
    pub fn timeout(&self, d: Duration) -> Duration {
        if self.scale == 1 {
            d
        } else {
            self.real(d).max(REAL_TIMEOUT_MIN)
        }
    }

    /// This clock's time since `real`, a wall-clock time (a record's, say,
    /// possibly written before this process started): the real time since
    /// then, sped up as this clock is.
    pub fn since(&self, real: Timestamp) -> Duration {
        let elapsed = crate::timefmt::now().0.saturating_sub(real.0);
        Duration::from_millis(elapsed.saturating_mul(u64::from(self.scale)))
    }

    /// The real time to wait until `at` of this clock's time.
    pub fn until(&self, at: Timestamp) -> Duration {
        self.real(Duration::from_millis(at.0.saturating_sub(self.now().0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_runs_fast_and_waits_short() {
        let real = Clock::new(1);
        assert_eq!(real.real(Duration::from_secs(10)), Duration::from_secs(10));
        let fast = Clock::new(1000);
        assert_eq!(
            fast.real(Duration::from_secs(600)),
            Duration::from_millis(600)
        );
        assert_eq!(fast.real(Duration::from_secs(1)), Duration::from_millis(1));
        assert_eq!(fast.timeout(Duration::from_secs(10)), REAL_TIMEOUT_MIN);
        let before = fast.now();
        std::thread::sleep(Duration::from_millis(20));
        assert!(fast.now().0 - before.0 >= 20_000);
        let then = crate::timefmt::now();
        std::thread::sleep(Duration::from_millis(20));
        assert!(fast.since(then) >= Duration::from_secs(20));
        assert!(real.since(then) >= Duration::from_millis(20));
        assert!(real.since(then) < Duration::from_secs(20));
    }
}
