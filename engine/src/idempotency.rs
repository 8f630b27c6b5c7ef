//! The idempotency table: key -> (request fingerprint, stored response).
//!
//! Entries are kept at least [`RETENTION_MS`] and at most
//! [`IdempotencyTable::entries_max`] are held; a new key is refused, not
//! silently dropped, when the table is full of young entries.

use std::collections::VecDeque;

use crate::Timestamp;
use crate::record::Lsn;
use crate::sync::{Arc, Mutex, ShardedMap};

/// How long a stored response is kept, at least: 24 hours.
pub const RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// Default bound on entries held in memory.
pub const ENTRIES_MAX_DEFAULT: usize = 1_000_000;

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

/// The table is full of entries younger than the retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull {
    pub given: usize,
    pub limit: usize,
}

#[derive(Debug)]
enum Slot {
    InFlight {
        fingerprint: u128,
    },
    Done {
        fingerprint: u128,
        response: StoredResponse,
    },
}

#[derive(Debug)]
pub struct IdempotencyTable {
    entries: ShardedMap<Box<str>, Slot>,
    /// Stored keys oldest first, for eviction past the retention period.
    order: Mutex<VecDeque<(Timestamp, Box<str>)>>,
    entries_max: usize,
}

impl IdempotencyTable {
    pub fn new(entries_max: usize) -> IdempotencyTable {
        IdempotencyTable {
            entries: ShardedMap::default(),
            order: Mutex::new(VecDeque::new()),
            entries_max,
        }
    }

    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    pub fn begin(&self, key: &str, fingerprint: u128, now: Timestamp) -> Result<Begin, TableFull> {
        if let Some(found) = self.lookup(key, fingerprint) {
            return Ok(found);
        }
        // Not under the shard lock: eviction locks other shards.
        self.make_room(now)?;
        let mut shard = self.entries.shard(key);
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::IdempotencyInsertsWithoutRecheck) {
            shard.insert(key.into(), Slot::InFlight { fingerprint });
            return Ok(Begin::Fresh);
        }
        if shard.contains_key(key) {
            drop(shard);
            // Another request took the key in between; answer as it says.
            return Ok(self.lookup(key, fingerprint).unwrap_or(Begin::InFlight));
        }
        shard.insert(key.into(), Slot::InFlight { fingerprint });
        Ok(Begin::Fresh)
    }

    fn lookup(&self, key: &str, fingerprint: u128) -> Option<Begin> {
        match self.entries.shard(key).get(key)? {
            Slot::Done {
                fingerprint: f,
                response,
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
        let mut shard = self.entries.shard(key);
        if matches!(shard.get(key), Some(Slot::InFlight { .. })) {
            shard.remove(key);
        }
    }

    /// Stores the response for `key`, live or in replay.
    pub(crate) fn complete(
        &self,
        key: &str,
        fingerprint: u128,
        response: StoredResponse,
        at: Timestamp,
    ) {
        // Two statements: a shard lock is never held while taking `order`.
        self.entries.shard(key).insert(
            key.into(),
            Slot::Done {
                fingerprint,
                response,
            },
        );
        self.order.lock().push_back((at, key.into()));
    }

    /// Evicts entries past retention; refuses when the table is still full.
    fn make_room(&self, now: Timestamp) -> Result<(), TableFull> {
        let mut order = self.order.lock();
        while order.len() >= self.entries_max {
            match order.front() {
                Some((at, _)) if now.0.saturating_sub(at.0) >= RETENTION_MS => {
                    let (_, key) = order.pop_front().expect("front exists");
                    // Lock order is `order` then a shard; no path holds a
                    // shard while taking `order`.
                    self.entries.shard(&*key).remove(&key);
                }
                _ => {
                    return Err(TableFull {
                        given: order.len() + 1,
                        limit: self.entries_max,
                    });
                }
            }
        }
        Ok(())
    }

    /// Stored keys and responses in key order, for state comparisons.
    pub(crate) fn dump(&self) -> String {
        let mut done = Vec::new();
        self.entries.for_each_shard(|map| {
            for (key, slot) in map.iter() {
                if let Slot::Done {
                    fingerprint,
                    response,
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

    /// Stored responses oldest first, for snapshots:
    /// (lsn, key, fingerprint, response, stored at).
    pub(crate) fn entries(&self) -> Vec<(Lsn, String, u128, StoredResponse, Timestamp)> {
        let order: Vec<(Timestamp, Box<str>)> = self.order.lock().iter().cloned().collect();
        order
            .into_iter()
            .filter_map(|(at, key)| match self.entries.shard(&*key).get(&*key) {
                Some(Slot::Done {
                    fingerprint,
                    response,
                }) => Some((
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

    pub fn len(&self) -> usize {
        self.order.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        table.complete("a", 1, response(200), Timestamp(0));
        table.complete("b", 1, response(200), Timestamp(10));
        assert_eq!(
            table.begin("c", 1, Timestamp(RETENTION_MS - 1)),
            Err(TableFull { given: 3, limit: 2 })
        );
        assert_eq!(
            table.begin("c", 1, Timestamp(RETENTION_MS)),
            Ok(Begin::Fresh)
        );
        // "a" was evicted (so it is new again), "b" kept.
        let later = Timestamp(RETENTION_MS);
        assert_eq!(table.begin("b", 1, later), Ok(Begin::Replay(response(200))));
        assert_eq!(table.begin("a", 1, later), Ok(Begin::Fresh));
    }
}
