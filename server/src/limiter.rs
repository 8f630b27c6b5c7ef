//! The failed-attempt limiter: guessing codes must not pay.
//!
//! Every `unknown_code` or `malformed_code` answer of a route that takes a
//! code counts against each identity the request carries: its token, its
//! `user` (when given) and its end client's address (when given). Each
//! kind has a budget per minute; a request any of whose identities is over
//! budget is answered `429` before the code is looked up, so a throttled
//! client learns nothing. Rotating `user` or `client_ip` does not escape
//! the token's budget, which bounds what one token can try: a day holds at
//! most 1,440 windows of it.
//!
//! Counts live in a count-min sketch per minute: a fixed table of counters
//! indexed by keyed hashes of (kind, identity), so memory is bounded
//! whatever names clients invent, nothing is ever scanned, and an attacker
//! who cannot see the hash key cannot aim collisions at someone else. The
//! sketch only over-counts; with 2^14 counters a row, four rows, and the
//! token budget capping what one token adds, an honest identity is falsely
//! limited only when millions of failures a minute come from many tokens.

use std::hash::Hasher;

use parking_lot::Mutex;
use redeem_engine::Timestamp;
use siphasher::sip::SipHasher13;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Default budgets per minute (API.md, "Failed-attempt limiter").
pub const USER_PER_MINUTE_DEFAULT: u32 = 20;
pub const CLIENT_IP_PER_MINUTE_DEFAULT: u32 = 60;
pub const TOKEN_PER_MINUTE_DEFAULT: u32 = 6_000;

/// Rows of the sketch: independent hashes, the minimum of which is read.
const ROWS: usize = 4;
/// Counters a row; a power of two so an index is a mask.
const ROW_COUNTERS: usize = 1 << 14;
const _: () = assert!(ROW_COUNTERS.is_power_of_two());
/// The window.
const WINDOW_MS: u64 = 60_000;

/// Which budget an identity spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Token,
    User,
    ClientIp,
}

impl Kind {
    /// The `limit` field of a `429`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Token => "token",
            Kind::User => "user",
            Kind::ClientIp => "client_ip",
        }
    }
}

/// The identities one request carries, each with its budget per minute.
#[derive(Debug, Clone, Copy)]
pub struct Identities<'a> {
    /// (identity, kind, budget); a missing `user` or `client_ip` is absent.
    ids: [Option<(&'a str, Kind, u32)>; 3],
}

impl<'a> Identities<'a> {
    /// `token` is the token's scope, `token_budget` its own or the default.
    pub fn new(
        budgets: &Budgets,
        token: &'a str,
        token_budget: Option<u32>,
        user: Option<&'a str>,
        client_ip: Option<&'a str>,
    ) -> Identities<'a> {
        Identities {
            ids: [
                Some((token, Kind::Token, token_budget.unwrap_or(budgets.token))),
                user.map(|u| (u, Kind::User, budgets.user)),
                client_ip.map(|ip| (ip, Kind::ClientIp, budgets.client_ip)),
            ],
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&'a str, Kind, u32)> + '_ {
        self.ids.iter().flatten().copied()
    }
}

/// Budgets per minute for each kind of identity.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub token: u32,
    pub user: u32,
    pub client_ip: u32,
}

/// An identity over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub limit: Kind,
    /// Seconds until the window ends.
    pub retry_after_seconds: u64,
}

/// The limiter; see the module docs.
#[derive(Debug)]
pub struct Limiter {
    budgets: Budgets,
    /// Keys of the row hashes, drawn at start-up.
    keys: [(u64, u64); ROWS],
    /// The window the counters belong to (minutes since the epoch).
    window: AtomicU64,
    /// `ROWS * ROW_COUNTERS` counters, row after row.
    counters: Box<[AtomicU32]>,
    /// Held only to clear the counters when a new window starts.
    reset: Mutex<()>,
}

impl Limiter {
    pub fn new(budgets: Budgets) -> std::io::Result<Limiter> {
        let mut seed = [0u8; ROWS * 16];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        let word = |i: usize| u64::from_le_bytes(seed[i * 8..i * 8 + 8].try_into().expect("8"));
        Ok(Limiter {
            budgets,
            keys: std::array::from_fn(|row| (word(2 * row), word(2 * row + 1))),
            window: AtomicU64::new(0),
            counters: (0..ROWS * ROW_COUNTERS)
                .map(|_| AtomicU32::new(0))
                .collect(),
            reset: Mutex::new(()),
        })
    }

    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// `Err` when any identity has used up its budget this minute.
    pub fn check(&self, ids: &Identities<'_>, now: Timestamp) -> Result<(), Throttled> {
        self.roll(now);
        for (id, kind, budget) in ids.iter() {
            if self.estimate(kind, id) >= u64::from(budget) {
                return Err(Throttled {
                    limit: kind,
                    retry_after_seconds: (WINDOW_MS - now.0 % WINDOW_MS).div_ceil(1000),
                });
            }
        }
        Ok(())
    }

    /// Counts one failed attempt against every identity of the request.
    pub fn note_failure(&self, ids: &Identities<'_>, now: Timestamp) {
        self.roll(now);
        for (id, kind, _) in ids.iter() {
            for index in self.indexes(kind, id) {
                // Relaxed: a counter; `estimate` tolerates any interleaving.
                self.counters[index].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The sketch's count for one identity: never below the true count.
    fn estimate(&self, kind: Kind, id: &str) -> u64 {
        self.indexes(kind, id)
            .into_iter()
            // Relaxed: see `note_failure`.
            .map(|index| u64::from(self.counters[index].load(Ordering::Relaxed)))
            .min()
            .unwrap_or(0)
    }

    /// One counter in each row for (kind, identity).
    fn indexes(&self, kind: Kind, id: &str) -> [usize; ROWS] {
        std::array::from_fn(|row| {
            let (k0, k1) = self.keys[row];
            let mut hasher = SipHasher13::new_with_keys(k0, k1);
            hasher.write_u8(kind as u8);
            hasher.write(id.as_bytes());
            row * ROW_COUNTERS + (hasher.finish() as usize & (ROW_COUNTERS - 1))
        })
    }

    /// Starts a new window when the minute changed. Counts noted while the
    /// clearing runs may be lost or kept: at worst a few attempts move
    /// between two windows.
    fn roll(&self, now: Timestamp) {
        let window = now.0 / WINDOW_MS;
        // Relaxed: the mutex orders the clearing; this is a fast-path test.
        if self.window.load(Ordering::Relaxed) == window {
            return;
        }
        let _reset = self.reset.lock();
        if self.window.load(Ordering::Relaxed) == window {
            return;
        }
        for counter in self.counters.iter() {
            counter.store(0, Ordering::Relaxed);
        }
        self.window.store(window, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGETS: Budgets = Budgets {
        token: 10,
        user: 3,
        client_ip: 5,
    };

    fn at(seconds: u64) -> Timestamp {
        Timestamp(1_800_000_000_000 + seconds * 1000)
    }

    #[test]
    fn each_identity_spends_its_own_budget() {
        let limiter = Limiter::new(BUDGETS).unwrap();
        let mallory = Identities::new(&BUDGETS, "tok", None, Some("mallory"), None);
        for _ in 0..3 {
            assert_eq!(limiter.check(&mallory, at(1)), Ok(()));
            limiter.note_failure(&mallory, at(1));
        }
        let throttled = limiter.check(&mallory, at(1)).unwrap_err();
        assert_eq!(throttled.limit, Kind::User);
        assert_eq!(throttled.retry_after_seconds, 59);
        // Fresh users of the same token go on until the token's budget.
        let mut allowed = 0;
        for n in 0..100 {
            let user = format!("u{n}");
            let ids = Identities::new(&BUDGETS, "tok", None, Some(&user), None);
            if limiter.check(&ids, at(2)).is_err() {
                break;
            }
            limiter.note_failure(&ids, at(2));
            allowed += 1;
        }
        assert_eq!(
            allowed, 7,
            "the token's 10 bound rotating users after mallory's 3"
        );
        // Another token is not affected; a new minute starts afresh.
        let other = Identities::new(&BUDGETS, "tok2", None, Some("mallory2"), None);
        assert_eq!(limiter.check(&other, at(2)), Ok(()));
        assert_eq!(limiter.check(&mallory, at(60)), Ok(()));
    }

    #[test]
    fn a_token_may_carry_its_own_budget_and_addresses_count_too() {
        let limiter = Limiter::new(BUDGETS).unwrap();
        let big = Identities::new(&BUDGETS, "big", Some(1000), None, Some("10.0.0.1"));
        for _ in 0..5 {
            limiter.note_failure(&big, at(0));
        }
        let throttled = limiter.check(&big, at(0)).unwrap_err();
        assert_eq!(throttled.limit, Kind::ClientIp);
        let no_ip = Identities::new(&BUDGETS, "big", Some(1000), None, None);
        assert_eq!(limiter.check(&no_ip, at(0)), Ok(()));
    }
}
