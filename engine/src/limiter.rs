//! The failed-lookup limiter: a user whose redemptions, reservations or
//! lookups name too many unknown or malformed codes is throttled.
//!
//! A fixed window per user starts at the first failure; its state is
//! ephemeral (not journaled) and pruned by the sweeper.

use crate::Timestamp;
use crate::sync::{AtomicU64, Ordering, ShardedMap};

/// Default failures allowed per user per window.
pub const FAILURES_PER_WINDOW_DEFAULT: u32 = 20;
/// The window: one minute.
pub const WINDOW_MS: u64 = 60_000;

#[derive(Debug)]
pub struct FailureLimiter {
    /// User -> (window start, failures in it).
    users: ShardedMap<Box<str>, (Timestamp, u32)>,
    /// Users in `users`: lets `check` skip hashing while nobody failed.
    tracked: AtomicU64,
    failures_per_window: u32,
}

impl FailureLimiter {
    pub fn new(failures_per_window: u32) -> FailureLimiter {
        FailureLimiter {
            users: ShardedMap::default(),
            tracked: AtomicU64::new(0),
            failures_per_window,
        }
    }

    /// `Err(seconds)` to wait when the user has used up the window.
    pub fn check(&self, user: &str, now: Timestamp) -> Result<(), u64> {
        // Relaxed: a hint. A failure noted concurrently may be missed by a
        // check racing with it either way.
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        match self.users.shard(user).get(user) {
            Some(&(start, count))
                if count >= self.failures_per_window && now.0 < start.0 + WINDOW_MS =>
            {
                Err((start.0 + WINDOW_MS - now.0).div_ceil(1000))
            }
            _ => Ok(()),
        }
    }

    pub fn note_failure(&self, user: &str, now: Timestamp) {
        let mut shard = self.users.shard(user);
        match shard.get_mut(user) {
            Some((start, count)) if now.0 < start.0 + WINDOW_MS => *count += 1,
            Some(entry) => *entry = (now, 1),
            None => {
                shard.insert(user.into(), (now, 1));
                // Relaxed: see `check`.
                self.tracked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops windows that have ended, bounding memory by recent offenders.
    pub fn prune(&self, now: Timestamp) {
        self.users.for_each_shard(|map| {
            let before = map.len();
            map.retain(|_, (start, _)| now.0 < start.0 + WINDOW_MS);
            // Relaxed: see `check`.
            self.tracked
                .fetch_sub((before - map.len()) as u64, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new(3);
        let t0 = Timestamp(1_000_000);
        for i in 0..3 {
            assert_eq!(limiter.check("u", Timestamp(t0.0 + i)), Ok(()));
            limiter.note_failure("u", Timestamp(t0.0 + i));
        }
        assert_eq!(limiter.check("u", Timestamp(t0.0 + 10)), Err(60));
        assert_eq!(limiter.check("u", Timestamp(t0.0 + 59_500)), Err(1));
        assert_eq!(limiter.check("other", t0), Ok(()));
        assert_eq!(limiter.check("u", Timestamp(t0.0 + WINDOW_MS)), Ok(()));
        limiter.prune(Timestamp(t0.0 + WINDOW_MS));
        limiter.note_failure("u", Timestamp(t0.0 + WINDOW_MS));
        assert_eq!(limiter.check("u", Timestamp(t0.0 + WINDOW_MS)), Ok(()));
    }
}
