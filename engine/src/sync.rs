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
        let index = ((self.hasher.hash_one(key) >> SHARD_SHIFT) as usize) & (MAP_SHARDS - 1);
        self.shards[index].lock()
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

impl<K, V, S> std::fmt::Debug for ShardedMap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap").finish_non_exhaustive()
    }
}
