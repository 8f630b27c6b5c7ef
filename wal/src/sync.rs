//! The only module of the WAL that names atomics, locks and threads.
//!
//! Under `--cfg loom` every primitive is loom's, so the append reservation,
//! the durable-LSN advance and the waiter wakeup can be model-checked;
//! otherwise they are std's and parking_lot's. Code elsewhere in the crate
//! imports from here, never from `std::sync` or `std::thread` directly.
//!
//! The one exception loom cannot model is the commit word stored in a mapped
//! segment: [`store_commit_word`] and [`load_commit_word`] always use std's
//! atomics on the mapping's memory. `publish` reaches them only through its
//! `FrameBytes` trait, and its loom models substitute loom atomics (and loom
//! cells for the other bytes) with the same orderings.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::thread::{JoinHandle, spawn};
#[cfg(not(loom))]
pub(crate) use std::thread::JoinHandle;

/// Spawns the log's flusher thread, named so it shows in profiles and `top`.
#[cfg(not(loom))]
pub(crate) fn spawn_named<F, T>(name: &str, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("the OS refused a thread for the WAL flusher")
}

/// Loom threads have no names.
#[cfg(loom)]
pub(crate) fn spawn_named<F, T>(_name: &str, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn(f)
}

/// Backs off while waiting for another thread to finish a short step.
///
/// Spins briefly, then yields: on a two-core machine the thread being waited
/// for may be descheduled, and spinning would only delay it.
#[inline]
pub(crate) fn backoff(round: u32) {
    #[cfg(loom)]
    {
        let _ = round;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
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

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    #[cfg(loom)]
    inner: loom::sync::Condvar,
    #[cfg(not(loom))]
    inner: parking_lot::Condvar,
}

impl Condvar {
    pub(crate) fn new() -> Condvar {
        Condvar {
            #[cfg(loom)]
            inner: loom::sync::Condvar::new(),
            #[cfg(not(loom))]
            inner: parking_lot::Condvar::new(),
        }
    }

    /// Releases the guard's lock, sleeps until notified (or spuriously), and
    /// reacquires it. Callers re-check their condition in a loop.
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        #[cfg(loom)]
        {
            self.inner.wait(guard).expect("lock poisoned")
        }
        #[cfg(not(loom))]
        {
            let mut guard = guard;
            self.inner.wait(&mut guard);
            guard
        }
    }

    pub(crate) fn notify_one(&self) {
        self.inner.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.inner.notify_all();
    }
}

/// Publishes a frame's commit word after the rest of the frame is written.
///
/// # Safety
/// `ptr` must be 8-byte aligned, valid for writes of 8 bytes for the whole
/// time any thread may access it, and only ever accessed through these two
/// functions while other threads may read it.
pub(crate) unsafe fn store_commit_word(ptr: *mut u8, word: u64) {
    // SAFETY: the caller guarantees alignment, validity and atomic-only
    // access, which is what `AtomicU64::from_ptr` requires.
    let atomic = unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr.cast::<u64>()) };
    // Release: the flusher that sees this word must also see every byte of
    // the frame written before it.
    atomic.store(word, std::sync::atomic::Ordering::Release);
}

/// Reads a frame's commit word; zero means the frame is not written yet.
///
/// # Safety
/// As for [`store_commit_word`].
pub(crate) unsafe fn load_commit_word(ptr: *mut u8) -> u64 {
    // SAFETY: as above, guaranteed by the caller.
    let atomic = unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr.cast::<u64>()) };
    // Acquire: pairs with the writer's release store, so the frame's other
    // bytes are visible once the word is.
    atomic.load(std::sync::atomic::Ordering::Acquire)
}

/// `f(0) .. f(count - 1)`, in that order, computed on as many threads as
/// the machine has cores, at most four (the caller's among them, and the
/// others named `wal-scan`): each takes the next index not yet taken, so
/// one slow item does not hold up the rest. Used by the recovery
/// scan, whose items (segments) are independent and whose combining step
/// runs afterwards on the caller's thread.
///
/// A thread the OS refuses leaves its share to the others. Under loom it
/// runs on the caller's thread alone: the scan does I/O and is not modelled.
pub(crate) fn map_indices<R, F>(count: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    #[cfg(loom)]
    {
        (0..count).map(f).collect()
    }
    #[cfg(not(loom))]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.min(4).min(count);
        if threads <= 1 {
            return (0..count).map(f).collect();
        }
        // Relaxed: the counter only hands out distinct indices; the results
        // reach the caller through the scope's joins.
        let next = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return done;
                }
                done.push((index, f(index)));
            }
        };
        let mut slots: Vec<Option<R>> = (0..count).map(|_| None).collect();
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads)
                .filter_map(|_| {
                    let builder = std::thread::Builder::new().name("wal-scan".to_owned());
                    builder.spawn_scoped(scope, work).ok()
                })
                .collect();
            let mut all = work();
            for helper in helpers {
                match helper.join() {
                    Ok(done) => all.extend(done),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            for (index, result) in all {
                slots[index] = Some(result);
            }
        });
        slots
            .into_iter()
            .map(|slot| slot.expect("every index was taken by one thread"))
            .collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::map_indices;

    #[test]
    fn map_indices_returns_every_result_in_index_order() {
        assert!(map_indices(0, |i| i).is_empty());
        assert_eq!(map_indices(1, |i| i * 3), vec![0]);
        // Uneven work, so the threads finish out of order.
        let squares = map_indices(200, |i| {
            if i % 7 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            i * i
        });
        assert_eq!(squares, (0..200).map(|i| i * i).collect::<Vec<_>>());
    }
}
