//! The only module of the engine that names atomics, locks and threads.
//!
//! Under `--cfg loom` every primitive is loom's, so the protocols built on
//! them can be model-checked by `loom-tests`; otherwise they are std's and
//! parking_lot's. Code elsewhere in the crate imports from here, never from
//! `std::sync` directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

// std's `Arc` in both builds: the engine uses it only to share immutable
// data (names, response bodies), never to synchronise, and loom's `Arc` has
// no `From<&str>` or `From<Vec<u8>>` for the unsized `Arc<str>`/`Arc<[u8]>`.
pub(crate) use std::sync::Arc;

/// Backs off inside a compare-and-swap retry loop.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// A mutual-exclusion lock with parking_lot's infallible `lock()` in both
/// builds, so callers need not know which implementation is underneath.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T> {
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(not(loom))]
    inner: parking_lot::Mutex<T>,
}

#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Mutex<T> {
        Mutex {
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(not(loom))]
            inner: parking_lot::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(loom)]
        {
            // A poisoned lock means a thread panicked while holding it, which
            // in a model run is already a reported failure.
            self.inner.lock().expect("lock poisoned")
        }
        #[cfg(not(loom))]
        {
            self.inner.lock()
        }
    }
}

/// A reader-writer lock with parking_lot's infallible API in both builds.
#[derive(Debug, Default)]
pub(crate) struct RwLock<T> {
    #[cfg(loom)]
    inner: loom::sync::RwLock<T>,
    #[cfg(not(loom))]
    inner: parking_lot::RwLock<T>,
}

#[cfg(loom)]
pub(crate) type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
#[cfg(not(loom))]
pub(crate) type RwLockReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
#[cfg(loom)]
pub(crate) type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;
#[cfg(not(loom))]
pub(crate) type RwLockWriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    pub(crate) fn new(value: T) -> RwLock<T> {
        RwLock {
            #[cfg(loom)]
            inner: loom::sync::RwLock::new(value),
            #[cfg(not(loom))]
            inner: parking_lot::RwLock::new(value),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        #[cfg(loom)]
        {
            self.inner.read().expect("lock poisoned")
        }
        #[cfg(not(loom))]
        {
            self.inner.read()
        }
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        #[cfg(loom)]
        {
            self.inner.write().expect("lock poisoned")
        }
        #[cfg(not(loom))]
        {
            self.inner.write()
        }
    }
}

/// A hash map split into independently locked shards, so unrelated keys
/// rarely contend. Built on this module's `Mutex` (not dashmap) so that loom
/// sees and model-checks every lock the engine takes. The key is hashed once:
/// the same hash picks the shard and the bucket.
pub(crate) struct ShardedMap<K, V, S = MapHasher> {
    shards: Box<[Shard<K, V, S>]>,
    hasher: S,
}

/// Hashes keys a client chooses (user names, codes): keyed SipHash. Under
/// loom the hash must not change between runs of a model, or a replayed
/// interleaving would lock a different shard.
#[cfg(not(loom))]
pub(crate) type MapHasher = std::collections::hash_map::RandomState;
#[cfg(loom)]
pub(crate) type MapHasher =
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Hashes integers the engine assigns (slots, reservation ids): one
/// multiplication. Clients cannot pick these keys freely (a slot exists only
/// for an issued code), so they need no keyed hash.
pub(crate) type IntHasher = std::hash::BuildHasherDefault<FibonacciHasher>;

/// Fibonacci hashing: the key times 2^64 / golden ratio. Spreads sequential
/// integers over every bit of the hash.
#[derive(Default)]
pub(crate) struct FibonacciHasher(u64);

impl std::hash::Hasher for FibonacciHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

type Shard<K, V, S> = crossbeam_utils::CachePadded<Mutex<std::collections::HashMap<K, V, S>>>;

/// Shards of a [`ShardedMap`]; two under loom, where every lock is a
/// modelled object.
const MAP_SHARDS: usize = if cfg!(loom) { 2 } else { 32 };
const _: () = assert!(MAP_SHARDS.is_power_of_two());
/// Where in the hash the shard index is taken: middle bits, since the maps
/// inside use the low bits for buckets and the top seven for tags. Under
/// loom the low bits: the models' keys (recipient and user names) were
/// chosen so that racing requests lock different shards, as most do in
/// production; in one shard the shard lock would serialise them and hide
/// the protocol under test.
const SHARD_SHIFT: u32 = if cfg!(loom) { 0 } else { 32 };

/// The shard a key's hash falls in.
fn shard_index(hash: u64) -> usize {
    ((hash >> SHARD_SHIFT) as usize) & (MAP_SHARDS - 1)
}

impl<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher + Default + Clone> Default
    for ShardedMap<K, V, S>
{
    fn default() -> Self {
        let hasher = S::default();
        ShardedMap {
            shards: (0..MAP_SHARDS)
                .map(|_| {
                    crossbeam_utils::CachePadded::new(Mutex::new(
                        std::collections::HashMap::with_hasher(hasher.clone()),
                    ))
                })
                .collect(),
            hasher,
        }
    }
}

impl<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher> ShardedMap<K, V, S> {
    /// Locks the shard that holds `key`.
    pub(crate) fn shard<Q>(&self, key: &Q) -> MutexGuard<'_, std::collections::HashMap<K, V, S>>
    where
        Q: std::hash::Hash + ?Sized,
    {
        self.shards[shard_index(self.hasher.hash_one(key))].lock()
    }

    /// Visits every shard in turn, each under its lock.
    pub(crate) fn for_each_shard(
        &self,
        mut f: impl FnMut(&mut std::collections::HashMap<K, V, S>),
    ) {
        for shard in self.shards.iter() {
            f(&mut shard.lock());
        }
    }
}

/// A [`ShardedMap`] that keeps each key's hash beside it, for maps that
/// grow to millions of string keys (recipients): growing a shard moves
/// entries by their stored hash, so it neither hashes a key again nor
/// reads it from memory. The keyed hash is computed once per operation and
/// picks both the shard and the bucket.
pub(crate) struct HashedMap<K, V> {
    shards: Box<[HashedShard<K, V>]>,
    hasher: MapHasher,
}

type HashedShard<K, V> = crossbeam_utils::CachePadded<Mutex<hashbrown::HashTable<(u64, K, V)>>>;

impl<K, V> Default for HashedMap<K, V> {
    fn default() -> Self {
        HashedMap {
            shards: (0..MAP_SHARDS)
                .map(|_| crossbeam_utils::CachePadded::new(Mutex::new(hashbrown::HashTable::new())))
                .collect(),
            hasher: MapHasher::default(),
        }
    }
}

/// One key's shard of a [`HashedMap`], locked; its methods act on that key.
pub(crate) struct KeyShard<'a, 'k, K, V, Q: ?Sized> {
    table: MutexGuard<'a, hashbrown::HashTable<(u64, K, V)>>,
    hash: u64,
    key: &'k Q,
}

impl<K, V> HashedMap<K, V> {
    /// Locks the shard that holds `key`.
    pub(crate) fn shard<'k, Q>(&self, key: &'k Q) -> KeyShard<'_, 'k, K, V, Q>
    where
        Q: std::hash::Hash + ?Sized,
    {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        KeyShard {
            table: self.shards[shard_index(hash)].lock(),
            hash,
            key,
        }
    }

    /// Visits every entry, one shard at a time under its lock.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for shard in self.shards.iter() {
            for (_, key, value) in shard.lock().iter() {
                f(key, value);
            }
        }
    }
}

/// Whether a [`HashedMap`] entry is `key`'s: the stored hash first, so
/// the key itself is compared only on a full hash match.
fn is_key<K, V, Q>(hash: u64, key: &Q) -> impl Fn(&(u64, K, V)) -> bool + '_
where
    K: std::borrow::Borrow<Q>,
    Q: Eq + ?Sized,
{
    move |(h, k, _)| *h == hash && k.borrow() == key
}

impl<K, V, Q> KeyShard<'_, '_, K, V, Q>
where
    K: std::borrow::Borrow<Q>,
    Q: Eq + ?Sized,
{
    pub(crate) fn get(&self) -> Option<&V> {
        let (hash, key) = (self.hash, self.key);
        self.table.find(hash, is_key(hash, key)).map(|(_, _, v)| v)
    }

    pub(crate) fn get_mut(&mut self) -> Option<&mut V> {
        let (hash, key) = (self.hash, self.key);
        self.table
            .find_mut(hash, is_key(hash, key))
            .map(|(_, _, v)| v)
    }

    /// The key's value, inserting `(make_key(), make_value())` first if it
    /// has none.
    pub(crate) fn get_or_insert_with(
        &mut self,
        make_key: impl FnOnce(&Q) -> K,
        make_value: impl FnOnce() -> V,
    ) -> &mut V {
        let (hash, key) = (self.hash, self.key);
        let entry = self.table.entry(hash, is_key(hash, key), |(h, _, _)| *h);
        &mut entry
            .or_insert_with(|| (hash, make_key(key), make_value()))
            .into_mut()
            .2
    }

    /// Removes the key's entry, if it has one.
    pub(crate) fn remove(&mut self) {
        let (hash, key) = (self.hash, self.key);
        if let Ok(entry) = self.table.find_entry(hash, is_key(hash, key)) {
            entry.remove();
        }
    }
}

impl<K, V> std::fmt::Debug for HashedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedMap").finish_non_exhaustive()
    }
}

impl<K, V, S> std::fmt::Debug for ShardedMap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_map_finds_inserts_and_removes_each_key_through_growth() {
        let map = HashedMap::<Box<str>, u64>::default();
        // Enough keys that every shard grows several times.
        let names: Vec<String> = (0..20_000).map(|i| format!("recipient-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(map.shard(name.as_str()).get(), None);
            *map.shard(name.as_str())
                .get_or_insert_with(|n| n.into(), || 0) += i as u64 + 1;
        }
        // A second insert of a present key keeps its value.
        *map.shard("recipient-7")
            .get_or_insert_with(|n| n.into(), || 100) += 1;
        assert_eq!(map.shard("recipient-7").get(), Some(&9));
        for (i, name) in names.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            let mut shard = map.shard(name.as_str());
            *shard.get_mut().expect("inserted") += 1_000_000;
            if i % 2 == 0 {
                shard.remove();
                assert_eq!(shard.get(), None);
            }
        }
        map.shard("never inserted").remove();
        let mut seen = std::collections::HashMap::new();
        map.for_each(|name, value| {
            assert!(seen.insert(name.to_string(), *value).is_none());
        });
        for (i, name) in names.iter().enumerate() {
            let expected = match (i % 3 == 0, i % 2 == 0, i == 7) {
                (true, true, _) => None,
                (true, false, _) => Some(i as u64 + 1 + 1_000_000),
                (false, _, true) => Some(9),
                (false, _, false) => Some(i as u64 + 1),
            };
            assert_eq!(seen.get(name).copied(), expected, "{name}");
        }
    }
}
