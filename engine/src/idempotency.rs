//! The idempotency table: key -> (request fingerprint, stored response).
//!
//! Entries are kept at least [`RETENTION_MS`] and at most
//! [`IdempotencyTable::entries_max`] are held, in flight or stored; a new
//! key is refused, not silently dropped, when the table is full of young
//! entries. Keys arrive scoped as `<scope>:<key>` (the server's scope is
//! its token), and one scope holds at most
//! [`IdempotencyTable::scope_entries_max`] of them, so one client cannot
//! fill the table for the others.
//!
//! An entry leaves the table once a newer one is stored at least
//! [`RETENTION_MS`] after it, measured by the records' own times, so the
//! live engine, a replay of its log and a restored snapshot forget the
//! same keys; `begin` also forgets entries past retention at the caller's
//! `now`.

use std::collections::{HashMap, VecDeque};

use crate::Timestamp;
use crate::record::Lsn;
use crate::sync::{Arc, Mutex, ShardedMap};

/// How long a stored response is kept, at least: 24 hours.
pub const RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// Default bound on entries held in memory.
pub const ENTRIES_MAX_DEFAULT: usize = 1_000_000;
/// One scope (token) may hold at most `entries_max / SCOPE_SHARE_DIVISOR`
/// entries: a quarter of the table, so at least four clients always fit.
pub const SCOPE_SHARE_DIVISOR: usize = 4;
const _: () = assert!(SCOPE_SHARE_DIVISOR >= 1);

/// A response kept for replay under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Arc<[u8]>,
    /// The record that stored it.
    pub lsn: Lsn,
}

/// What a request with a key should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is new; it is now marked in flight. Finish it with
    /// `Engine::store_response`, a transition carrying the key, or `abandon`.
    Fresh,
    /// The same request ran before: answer with its stored response.
    Replay(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
    /// The first request with this key is still running; ask again shortly.
    InFlight,
}

/// Which bound a refused key ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// The whole table is full of entries younger than the retention
    /// period: the server is out of room, whoever asks.
    Table,
    /// The key's own scope holds its whole share: the client's doing.
    Scope,
}

/// A new key was refused: `given` entries would exceed `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull {
    pub given: usize,
    pub limit: usize,
    /// The table's bound or the scope's share.
    pub capacity: Capacity,
}

#[derive(Debug)]
enum Slot {
    InFlight {
        fingerprint: u128,
    },
    Done {
        fingerprint: u128,
        response: StoredResponse,
        /// When its record took effect; tells this entry from an older one
        /// of the same key still queued in `Order::stored`.
        at: Timestamp,
    },
}

/// The table's bookkeeping, under one lock: what eviction and the bounds
/// need.
#[derive(Debug, Default)]
struct Order {
    /// Stored keys in the order they were stored (oldest first), with
    /// their record's time, for eviction past the retention period.
    stored: VecDeque<(Timestamp, Box<str>)>,
    /// Keys marked in flight and not yet stored or abandoned.
    in_flight: usize,
    /// Entries (stored and in flight) per scope, for the per-scope share.
    /// A scope leaves the map when its count drops to zero.
    per_scope: HashMap<Box<str>, usize>,
}

impl Order {
    fn held(&self) -> usize {
        self.stored.len() + self.in_flight
    }

    fn scope_count(&self, scope: &str) -> usize {
        self.per_scope.get(scope).copied().unwrap_or(0)
    }

    fn add_scope(&mut self, scope: &str) {
        match self.per_scope.get_mut(scope) {
            Some(count) => *count += 1,
            None => {
                self.per_scope.insert(scope.into(), 1);
            }
        }
    }

    fn remove_scope(&mut self, scope: &str) {
        if let Some(count) = self.per_scope.get_mut(scope) {
            *count -= 1;
            if *count == 0 {
                self.per_scope.remove(scope);
            }
        }
    }
}

/// The scope of a scoped key: what precedes its first `:`; keys without
/// one share the empty scope.
fn scope_of(key: &str) -> &str {
    key.split_once(':').map_or("", |(scope, _)| scope)
}

/// True when an entry stored at `at` is past retention at `now`.
fn expired(at: Timestamp, now: Timestamp) -> bool {
    now.0.saturating_sub(at.0) >= RETENTION_MS
}

#[derive(Debug)]
pub struct IdempotencyTable {
    entries: ShardedMap<Box<str>, Slot>,
    /// Eviction order and the counts the bounds check. Lock order: `order`
    /// before a shard; no path holds a shard while taking `order`.
    order: Mutex<Order>,
    entries_max: usize,
    /// Each scope's share of `entries_max`.
    scope_entries_max: usize,
}

impl IdempotencyTable {
    pub fn new(entries_max: usize) -> IdempotencyTable {
        IdempotencyTable {
            entries: ShardedMap::default(),
            order: Mutex::new(Order::default()),
            entries_max,
            scope_entries_max: (entries_max / SCOPE_SHARE_DIVISOR).max(1),
        }
    }

    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    /// Most entries one scope may hold at once.
    pub fn scope_entries_max(&self) -> usize {
        self.scope_entries_max
    }

    pub fn begin(&self, key: &str, fingerprint: u128, now: Timestamp) -> Result<Begin, TableFull> {
        // First forget what is past retention, so an expired entry is
        // neither replayed nor counted.
        self.evict(|order| match order.stored.front() {
            Some((at, _)) => expired(*at, now),
            None => false,
        });
        if let Some(found) = self.lookup(key, fingerprint) {
            return Ok(found);
        }
        // Not under the shard lock: the bounds live under `order`.
        self.reserve(key)?;
        let mut shard = self.entries.shard(key);
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::IdempotencyInsertsWithoutRecheck) {
            shard.insert(key.into(), Slot::InFlight { fingerprint });
            return Ok(Begin::Fresh);
        }
        if shard.contains_key(key) {
            drop(shard);
            self.unreserve(key);
            // Another request took the key in between; answer as it says.
            return Ok(self.lookup(key, fingerprint).unwrap_or(Begin::InFlight));
        }
        shard.insert(key.into(), Slot::InFlight { fingerprint });
        Ok(Begin::Fresh)
    }

    /// Counts a key about to be marked in flight, if the table and the
    /// key's scope have room.
    fn reserve(&self, key: &str) -> Result<(), TableFull> {
        let scope = scope_of(key);
        let mut order = self.order.lock();
        if order.held() >= self.entries_max {
            return Err(TableFull {
                given: order.held() + 1,
                limit: self.entries_max,
                capacity: Capacity::Table,
            });
        }
        let count = order.scope_count(scope);
        if count >= self.scope_entries_max {
            return Err(TableFull {
                given: count + 1,
                limit: self.scope_entries_max,
                capacity: Capacity::Scope,
            });
        }
        order.in_flight += 1;
        order.add_scope(scope);
        Ok(())
    }

    /// Gives back what `reserve` counted for a key that is not in flight
    /// after all.
    fn unreserve(&self, key: &str) {
        let mut order = self.order.lock();
        order.in_flight -= 1;
        order.remove_scope(scope_of(key));
    }

    fn lookup(&self, key: &str, fingerprint: u128) -> Option<Begin> {
        match self.entries.shard(key).get(key)? {
            Slot::Done {
                fingerprint: f,
                response,
                ..
            } => Some(if *f == fingerprint {
                Begin::Replay(response.clone())
            } else {
                Begin::Mismatch
            }),
            Slot::InFlight { fingerprint: f } => Some(if *f == fingerprint {
                Begin::InFlight
            } else {
                Begin::Mismatch
            }),
        }
    }

    /// Forgets an in-flight key whose request produced nothing to store.
    pub fn abandon(&self, key: &str) {
        let removed = {
            let mut shard = self.entries.shard(key);
            let in_flight = matches!(shard.get(key), Some(Slot::InFlight { .. }));
            if in_flight {
                shard.remove(key);
            }
            in_flight
        };
        if removed {
            self.unreserve(key);
        }
    }

    /// Stores the response for `key`, live or in replay, stored at `at`
    /// (its record's time). Entries a retention period older than `at` are
    /// evicted, and so is the oldest when the table would exceed its bound
    /// (only in replay or restore, which refuse nothing: say, after a
    /// restart with a smaller bound).
    pub(crate) fn complete(
        &self,
        key: &str,
        fingerprint: u128,
        response: StoredResponse,
        at: Timestamp,
    ) {
        // Two statements: a shard lock is never held while taking `order`.
        let previous = self.entries.shard(key).insert(
            key.into(),
            Slot::Done {
                fingerprint,
                response,
                at,
            },
        );
        let mut order = self.order.lock();
        match previous {
            // Counted in flight by `begin`: now counted as stored.
            Some(Slot::InFlight { .. }) => order.in_flight -= 1,
            // Replay: counted here. A key stored again (reused after live
            // eviction) is queued twice; the older entry's eviction leaves
            // the newer one alone (see `evict`).
            Some(Slot::Done { .. }) | None => order.add_scope(scope_of(key)),
        }
        order.stored.push_back((at, key.into()));
        drop(order);
        self.evict(|order| match order.stored.front() {
            Some((front, _)) => expired(*front, at) || order.held() > self.entries_max,
            None => false,
        });
    }

    /// Evicts the oldest stored entries while `due` says so.
    fn evict(&self, mut due: impl FnMut(&Order) -> bool) {
        let mut order = self.order.lock();
        while due(&order) {
            let (at, key) = order.stored.pop_front().expect("due only with an entry");
            order.remove_scope(scope_of(&key));
            // Lock order is `order` then a shard.
            let mut shard = self.entries.shard(&*key);
            if matches!(shard.get(&*key), Some(Slot::Done { at: stored, .. }) if *stored == at) {
                shard.remove(&*key);
            }
        }
    }

    /// Stored keys and responses in key order, for state comparisons.
    pub(crate) fn dump(&self) -> String {
        let mut done = Vec::new();
        self.entries.for_each_shard(|map| {
            for (key, slot) in map.iter() {
                if let Slot::Done {
                    fingerprint,
                    response,
                    ..
                } = slot
                {
                    done.push(format!(
                        "{key}:{fingerprint:x}:{}:{}:{}",
                        response.status,
                        response.lsn,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
            }
        });
        done.sort();
        done.join(",")
    }

    /// Stored responses not past retention at `now`, oldest first, for
    /// snapshots: (lsn, key, fingerprint, response, stored at).
    pub(crate) fn entries(
        &self,
        now: Timestamp,
    ) -> Vec<(Lsn, String, u128, StoredResponse, Timestamp)> {
        let stored: Vec<(Timestamp, Box<str>)> = self
            .order
            .lock()
            .stored
            .iter()
            .filter(|(at, _)| !expired(*at, now))
            .cloned()
            .collect();
        stored
            .into_iter()
            .filter_map(|(at, key)| match self.entries.shard(&*key).get(&*key) {
                Some(Slot::Done {
                    fingerprint,
                    response,
                    at: stored,
                }) if *stored == at => Some((
                    response.lsn,
                    key.to_string(),
                    *fingerprint,
                    response.clone(),
                    at,
                )),
                _ => None,
            })
            .collect()
    }

    /// Stored entries (not those in flight).
    pub fn len(&self) -> usize {
        self.order.lock().stored.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the scope `scope` holds, stored and in flight.
    pub fn scope_len(&self, scope: &str) -> usize {
        self.order.lock().scope_count(scope)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> StoredResponse {
        StoredResponse {
            status,
            body: Arc::from(&b"{}"[..]),
            lsn: 1,
        }
    }

    #[test]
    fn fresh_inflight_replay_mismatch() {
        let table = IdempotencyTable::new(10);
        let now = Timestamp(1);
        assert_eq!(table.begin("k", 1, now), Ok(Begin::Fresh));
        assert_eq!(table.begin("k", 1, now), Ok(Begin::InFlight));
        assert_eq!(table.begin("k", 2, now), Ok(Begin::Mismatch));
        table.complete("k", 1, response(201), now);
        assert_eq!(table.begin("k", 1, now), Ok(Begin::Replay(response(201))));
        assert_eq!(table.begin("k", 2, now), Ok(Begin::Mismatch));
        assert_eq!(table.begin("other", 1, now), Ok(Begin::Fresh));
        table.abandon("other");
        assert_eq!(table.begin("other", 1, now), Ok(Begin::Fresh));
    }

    #[test]
    fn full_table_evicts_only_past_retention() {
        let table = IdempotencyTable::new(2);
        table.complete("a:k", 1, response(200), Timestamp(0));
        table.complete("b:k", 1, response(200), Timestamp(10));
        assert_eq!(
            table.begin("c:k", 1, Timestamp(RETENTION_MS - 1)),
            Err(TableFull {
                given: 3,
                limit: 2,
                capacity: Capacity::Table
            })
        );
        assert_eq!(
            table.begin("c:k", 1, Timestamp(RETENTION_MS)),
            Ok(Begin::Fresh)
        );
        // "a:k" was evicted (so it is new again), "b:k" kept.
        let later = Timestamp(RETENTION_MS);
        assert_eq!(
            table.begin("b:k", 1, later),
            Ok(Begin::Replay(response(200)))
        );
        // "c:k" in flight holds the room "a:k" left until it gives it back.
        assert!(table.begin("a:k", 1, later).is_err());
        table.abandon("c:k");
        assert_eq!(table.begin("a:k", 1, later), Ok(Begin::Fresh));
    }

    #[test]
    fn in_flight_keys_count_against_the_bound() {
        let table = IdempotencyTable::new(2);
        let now = Timestamp(0);
        assert_eq!(table.begin("a:k", 1, now), Ok(Begin::Fresh));
        assert_eq!(table.begin("b:k", 1, now), Ok(Begin::Fresh));
        assert_eq!(
            table.begin("c:k", 1, now),
            Err(TableFull {
                given: 3,
                limit: 2,
                capacity: Capacity::Table
            })
        );
        table.abandon("b:k");
        assert_eq!(table.begin("c:k", 1, now), Ok(Begin::Fresh));
    }

    #[test]
    fn one_scope_holds_at_most_its_share() {
        let table = IdempotencyTable::new(4 * SCOPE_SHARE_DIVISOR);
        let share = table.scope_entries_max();
        assert_eq!(share, 4);
        let now = Timestamp(0);
        for i in 0..share {
            let key = format!("greedy:{i}");
            assert_eq!(table.begin(&key, 1, now), Ok(Begin::Fresh));
            table.complete(&key, 1, response(409), now);
        }
        assert_eq!(
            table.begin("greedy:more", 1, now),
            Err(TableFull {
                given: share + 1,
                limit: share,
                capacity: Capacity::Scope
            })
        );
        // Its stored keys still replay, and other scopes still get keys.
        assert_eq!(
            table.begin("greedy:0", 1, now),
            Ok(Begin::Replay(response(409)))
        );
        assert_eq!(table.begin("polite:1", 1, now), Ok(Begin::Fresh));
        assert_eq!(table.scope_len("greedy"), share);
        assert_eq!(table.scope_len("polite"), 1);
        // Once its keys are past retention the scope gets keys again.
        let later = Timestamp(RETENTION_MS);
        assert_eq!(table.begin("greedy:more", 1, later), Ok(Begin::Fresh));
        assert_eq!(table.scope_len("greedy"), 1);
    }

    #[test]
    fn storing_evicts_by_record_time_and_keeps_the_bound() {
        // Replay stores without `begin`: no clock, only the records' times.
        let table = IdempotencyTable::new(3);
        table.complete("s:a", 1, response(200), Timestamp(0));
        table.complete("s:b", 1, response(200), Timestamp(10));
        table.complete("s:c", 1, response(200), Timestamp(RETENTION_MS));
        // "a" is a retention period older than "c": gone.
        assert_eq!(table.len(), 2);
        table.complete("s:d", 1, response(200), Timestamp(RETENTION_MS + 1));
        table.complete("s:e", 1, response(200), Timestamp(RETENTION_MS + 2));
        // Young, but over the bound: the oldest goes.
        assert_eq!(table.len(), 3);
        assert_eq!(table.scope_len("s"), 3);
        let keys: Vec<String> = table
            .entries(Timestamp(RETENTION_MS + 2))
            .into_iter()
            .map(|e| e.1)
            .collect();
        assert_eq!(keys, ["s:c", "s:d", "s:e"]);
        // A snapshot taken a retention period later holds none of them.
        assert!(table.entries(Timestamp(2 * RETENTION_MS + 2)).is_empty());
    }

    #[test]
    fn a_key_stored_again_keeps_its_newer_entry() {
        let table = IdempotencyTable::new(10);
        table.complete("s:k", 1, response(200), Timestamp(0));
        table.complete("s:k", 2, response(201), Timestamp(5));
        table.complete("s:x", 1, response(200), Timestamp(RETENTION_MS));
        // The first "k" expired; the second stays and replays.
        assert_eq!(
            table.begin("s:k", 2, Timestamp(RETENTION_MS)),
            Ok(Begin::Replay(response(201)))
        );
        assert_eq!(table.len(), 2);
    }
}
