//! The durable LSN and everyone waiting for it.
//!
//! The flusher calls [`Commit::advance`] after a sync; appenders' callers
//! block in [`Commit::wait`] or poll [`Commit::poll`] from a future. A sync
//! failure calls [`Commit::poison`]: every waiter gets an error and nothing is
//! acknowledged again. The durable LSN is stored while holding the waiter
//! lock, and waiters check it under the same lock before sleeping, so no
//! wakeup is lost.

use std::task::{Poll, Waker};

use crate::error::DurabilityError;
use crate::format::Lsn;
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, Ordering};

/// Durable-LSN state shared by the flusher, appenders and waiters.
#[derive(Debug)]
pub(crate) struct Commit {
    /// Every LSN up to this one is durable. Only the flusher advances it.
    durable: AtomicU64,
    /// The highest LSN handed out by append, so waits on LSNs that do not
    /// exist fail instead of hanging.
    last: AtomicU64,
    /// Set once by `poison`; read on the append fast path.
    poisoned: AtomicBool,
    waiters: Mutex<Waiters>,
    /// Blocking waiters sleep here; async waiters are in `Waiters::wakers`.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Waiters {
    poisoned: bool,
    closed: bool,
    next_id: u64,
    /// Registered async waiters: (id, LSN awaited, waker).
    wakers: Vec<(u64, Lsn, Waker)>,
}

impl Commit {
    pub(crate) fn new(durable: Lsn) -> Commit {
        Commit {
            durable: AtomicU64::new(durable),
            last: AtomicU64::new(durable),
            poisoned: AtomicBool::new(false),
            waiters: Mutex::new(Waiters::default()),
            wake: Condvar::new(),
        }
    }

    pub(crate) fn durable(&self) -> Lsn {
        // Acquire: pairs with `advance`'s release store, so a reader that sees
        // LSN n durable also sees the bytes of every record up to n.
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn last(&self) -> Lsn {
        // Acquire: pairs with `set_last`; only used for bounds checks.
        self.last.load(Ordering::Acquire)
    }

    /// Called under the tail lock right after an LSN is reserved.
    pub(crate) fn set_last(&self, lsn: Lsn) {
        // Release: a waiter that sees `lsn` as appended may wait on it; the
        // flusher learns of the record through the tail lock, not this.
        self.last.store(lsn, Ordering::Release);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        // Relaxed: an append racing with poisoning may still be reserved; it
        // is simply never acknowledged, which `wait` guarantees under a lock.
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Publishes `lsn` as durable and wakes everyone it satisfies.
    pub(crate) fn advance(&self, lsn: Lsn) {
        #[cfg(loom)]
        if self.advance_mutated(lsn) {
            return;
        }
        let woken = {
            let mut waiters = self.waiters.lock();
            if waiters.poisoned {
                return;
            }
            // Relaxed: only the flusher stores, so it reads its own value.
            let before = self.durable.load(Ordering::Relaxed);
            assert!(
                lsn >= before,
                "durable LSN went back from {before} to {lsn}"
            );
            // Release: pairs with `durable()`; the synced bytes happen-before.
            self.durable.store(lsn, Ordering::Release);
            take_wakers(&mut waiters.wakers, |awaited| awaited <= lsn)
        };
        self.wake.notify_all();
        woken.into_iter().for_each(Waker::wake);
    }

    /// [`Mutation::DurableStoreOutsideLock`] and
    /// [`Mutation::WakeBeforeDurableStore`], if one is on; returns whether
    /// it ran instead of [`Commit::advance`].
    #[cfg(loom)]
    fn advance_mutated(&self, lsn: Lsn) -> bool {
        use crate::mutations::{Mutation, on};
        let wake_first = on(Mutation::WakeBeforeDurableStore);
        if !wake_first && !on(Mutation::DurableStoreOutsideLock) {
            return false;
        }
        let woken = {
            let mut waiters = self.waiters.lock();
            if waiters.poisoned {
                return true;
            }
            take_wakers(&mut waiters.wakers, |awaited| awaited <= lsn)
        };
        let wake = || {
            self.wake.notify_all();
            woken.iter().for_each(Waker::wake_by_ref);
        };
        if wake_first {
            wake();
            let _waiters = self.waiters.lock();
            // Release: as in `advance`; the order is the bug.
            self.durable.store(lsn, Ordering::Release);
        } else {
            // Release: as in `advance`; the missing lock is the bug.
            self.durable.store(lsn, Ordering::Release);
            wake();
        }
        true
    }

    /// Fails every present and future waiter on a non-durable LSN.
    pub(crate) fn poison(&self) {
        let woken = {
            let mut waiters = self.waiters.lock();
            waiters.poisoned = true;
            // Relaxed: waiters decide under the lock; appenders only need to
            // notice eventually.
            self.poisoned.store(true, Ordering::Relaxed);
            take_wakers(&mut waiters.wakers, |_| true)
        };
        self.wake.notify_all();
        woken.into_iter().for_each(Waker::wake);
    }

    /// The flusher has stopped: fails waiters on anything not yet durable.
    pub(crate) fn close(&self) {
        let woken = {
            let mut waiters = self.waiters.lock();
            waiters.closed = true;
            take_wakers(&mut waiters.wakers, |_| true)
        };
        self.wake.notify_all();
        woken.into_iter().for_each(Waker::wake);
    }

    fn settled(&self, waiters: &Waiters, lsn: Lsn) -> Option<Result<(), DurabilityError>> {
        // Relaxed is enough under the lock, which orders it after `advance`'s
        // store; the fast paths outside the lock use `durable()`.
        if self.durable.load(Ordering::Relaxed) >= lsn {
            Some(Ok(()))
        } else if waiters.poisoned {
            Some(Err(DurabilityError::Poisoned))
        } else if waiters.closed {
            Some(Err(DurabilityError::Closed))
        } else {
            None
        }
    }

    fn check_appended(&self, lsn: Lsn) -> Result<(), DurabilityError> {
        let last = self.last();
        if lsn > last {
            Err(DurabilityError::NotAppended { given: lsn, last })
        } else {
            Ok(())
        }
    }

    /// Blocks until `lsn` is durable, or fails if it never will be.
    pub(crate) fn wait(&self, lsn: Lsn) -> Result<(), DurabilityError> {
        if self.durable() >= lsn {
            return Ok(());
        }
        self.check_appended(lsn)?;
        let mut waiters = self.waiters.lock();
        loop {
            if let Some(outcome) = self.settled(&waiters, lsn) {
                return outcome;
            }
            waiters = self.wake.wait(waiters);
        }
    }

    /// One poll of an async wait; `id` remembers this future's registration.
    pub(crate) fn poll(
        &self,
        lsn: Lsn,
        id: &mut Option<u64>,
        waker: &Waker,
    ) -> Poll<Result<(), DurabilityError>> {
        if self.durable() >= lsn {
            return Poll::Ready(Ok(()));
        }
        if let Err(e) = self.check_appended(lsn) {
            return Poll::Ready(Err(e));
        }
        let mut waiters = self.waiters.lock();
        if let Some(outcome) = self.settled(&waiters, lsn) {
            if let Some(registered) = id.take() {
                waiters.wakers.retain(|(i, _, _)| *i != registered);
            }
            return Poll::Ready(outcome);
        }
        match *id {
            Some(registered) => {
                match waiters.wakers.iter_mut().find(|(i, _, _)| *i == registered) {
                    Some(slot) => slot.2.clone_from(waker),
                    None => waiters.wakers.push((registered, lsn, waker.clone())),
                }
            }
            None => {
                let fresh = waiters.next_id;
                waiters.next_id += 1;
                waiters.wakers.push((fresh, lsn, waker.clone()));
                *id = Some(fresh);
            }
        }
        Poll::Pending
    }

    /// Forgets a future's registration when it is dropped unfinished.
    pub(crate) fn cancel(&self, id: u64) {
        self.waiters.lock().wakers.retain(|(i, _, _)| *i != id);
    }
}

fn take_wakers(wakers: &mut Vec<(u64, Lsn, Waker)>, due: impl Fn(Lsn) -> bool) -> Vec<Waker> {
    let mut woken = Vec::new();
    wakers.retain(|(_, awaited, waker)| {
        if due(*awaited) {
            woken.push(waker.clone());
            false
        } else {
            true
        }
    });
    woken
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn flag_waker() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        (flag.clone(), Waker::from(flag))
    }

    #[test]
    fn waits_on_durable_or_unknown_lsns_return_at_once() {
        let commit = Commit::new(5);
        assert_eq!(commit.wait(3), Ok(()));
        assert_eq!(commit.wait(5), Ok(()));
        assert_eq!(
            commit.wait(6),
            Err(DurabilityError::NotAppended { given: 6, last: 5 })
        );
    }

    #[test]
    fn async_waiters_are_woken_by_advance_and_poison() {
        let commit = Commit::new(0);
        commit.set_last(3);
        let (early_flag, early) = flag_waker();
        let (late_flag, late) = flag_waker();
        let (mut early_id, mut late_id) = (None, None);
        assert!(commit.poll(1, &mut early_id, &early).is_pending());
        assert!(commit.poll(3, &mut late_id, &late).is_pending());
        commit.advance(2);
        assert!(early_flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!late_flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(commit.poll(1, &mut early_id, &early), Poll::Ready(Ok(())));
        commit.poison();
        assert!(late_flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            commit.poll(3, &mut late_id, &late),
            Poll::Ready(Err(DurabilityError::Poisoned))
        );
        // Already durable stays durable; nothing after is acknowledged.
        commit.advance(3);
        assert_eq!(commit.durable(), 2);
        assert_eq!(commit.wait(2), Ok(()));
    }
}

/// [`Durable`](crate::Durable) on a bare [`Commit`], for the loom models:
/// the same poll, and the same cancel when dropped unfinished.
#[cfg(all(test, loom))]
pub(crate) struct WaitDurable<'a> {
    pub(crate) commit: &'a Commit,
    pub(crate) lsn: Lsn,
    pub(crate) id: Option<u64>,
}

#[cfg(all(test, loom))]
impl std::future::Future for WaitDurable<'_> {
    type Output = Result<(), DurabilityError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.commit.poll(this.lsn, &mut this.id, cx.waker())
    }
}

#[cfg(all(test, loom))]
impl Drop for WaitDurable<'_> {
    fn drop(&mut self) {
        // Unwinding from a failure loom found: taking a loom lock now would
        // panic again and abort the test binary.
        if std::thread::panicking() {
            return;
        }
        if let Some(id) = self.id.take() {
            self.commit.cancel(id);
        }
    }
}

/// Model checks of the durable-LSN advance and waiter wakeup. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p redeem-wal --lib loom` (or
/// `loom-tests/run.sh`). The models of the whole append path, with the
/// flusher, are in `publish`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::mutations::Mutation;
    use crate::mutations::harness::{block_on, check, check_caught};
    use crate::sync::spawn;
    // std's, not loom's: a loom `Arc` dropped while a model unwinds from
    // the failure loom found panics again and aborts the test binary.
    use std::sync::Arc;

    fn blocked_waiter() {
        let commit = Arc::new(Commit::new(0));
        commit.set_last(2);
        let waiter = {
            let commit = commit.clone();
            spawn(move || commit.wait(2))
        };
        commit.advance(1);
        commit.advance(2);
        assert_eq!(waiter.join().unwrap(), Ok(()));
    }

    /// A blocking and an async waiter on the last LSN, and the flusher's
    /// two advances: both wake, whatever the order. A waiter left asleep is
    /// a deadlock, which loom reports.
    fn blocking_and_async_waiters() {
        let commit = Arc::new(Commit::new(0));
        commit.set_last(2);
        let blocking = {
            let commit = commit.clone();
            spawn(move || commit.wait(2))
        };
        let asynchronous = {
            let commit = commit.clone();
            spawn(move || {
                block_on(WaitDurable {
                    commit: &commit,
                    lsn: 2,
                    id: None,
                })
            })
        };
        commit.advance(1);
        commit.advance(2);
        assert_eq!(blocking.join().unwrap(), Ok(()));
        assert_eq!(asynchronous.join().unwrap(), Ok(()));
    }

    #[test]
    fn a_blocked_waiter_is_woken_by_the_advance_that_covers_it() {
        check("commit_blocked_waiter", blocked_waiter);
    }

    #[test]
    fn loom_catches_a_durable_store_outside_the_waiter_lock() {
        check_caught(
            "commit_blocked_waiter",
            Mutation::DurableStoreOutsideLock,
            blocked_waiter,
        );
        check_caught(
            "commit_waiters",
            Mutation::DurableStoreOutsideLock,
            blocking_and_async_waiters,
        );
    }

    #[test]
    fn blocking_and_async_waiters_are_all_woken() {
        check("commit_waiters", blocking_and_async_waiters);
    }

    #[test]
    fn loom_catches_a_wakeup_before_the_durable_store() {
        check_caught(
            "commit_waiters",
            Mutation::WakeBeforeDurableStore,
            blocking_and_async_waiters,
        );
    }

    #[test]
    fn poison_fails_a_blocked_waiter_and_stops_acknowledging() {
        check("commit_poison", || {
            let commit = Arc::new(Commit::new(0));
            commit.set_last(2);
            let waiter = {
                let commit = commit.clone();
                spawn(move || commit.wait(2))
            };
            commit.advance(1);
            commit.poison();
            commit.advance(2);
            assert_eq!(waiter.join().unwrap(), Err(DurabilityError::Poisoned));
            assert_eq!(commit.durable(), 1);
        });
    }
}
