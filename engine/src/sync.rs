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
/// sees and model-checks every lock the engine takes.
pub(crate) struct ShardedMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: MapHasher,
}

/// Picks a key's shard. Under loom the hash must not change between runs of
/// a model, or a replayed interleaving would lock a different shard.
#[cfg(not(loom))]
type MapHasher = std::collections::hash_map::RandomState;
#[cfg(loom)]
type MapHasher = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

type Shard<K, V> = crossbeam_utils::CachePadded<Mutex<std::collections::HashMap<K, V>>>;

/// Shards of a [`ShardedMap`]; two under loom, where every lock is a
/// modelled object.
const MAP_SHARDS: usize = if cfg!(loom) { 2 } else { 32 };
const _: () = assert!(MAP_SHARDS.is_power_of_two());

impl<K: std::hash::Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..MAP_SHARDS)
                .map(|_| crossbeam_utils::CachePadded::new(Mutex::new(Default::default())))
                .collect(),
            hasher: Default::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> ShardedMap<K, V> {
    /// Locks the shard that holds `key`.
    pub(crate) fn shard<Q>(&self, key: &Q) -> MutexGuard<'_, std::collections::HashMap<K, V>>
    where
        Q: std::hash::Hash + ?Sized,
    {
        use std::hash::BuildHasher;
        let index = (self.hasher.hash_one(key) as usize) & (MAP_SHARDS - 1);
        self.shards[index].lock()
    }

    /// Visits every shard in turn, each under its lock.
    pub(crate) fn for_each_shard(&self, mut f: impl FnMut(&mut std::collections::HashMap<K, V>)) {
        for shard in self.shards.iter() {
            f(&mut shard.lock());
        }
    }
}

impl<K, V> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap").finish_non_exhaustive()
    }
}
