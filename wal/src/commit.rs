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

/// Model checks of the durable-LSN advance and waiter wakeup. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p redeem-wal --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, spawn};

    #[test]
    fn a_blocked_waiter_is_woken_by_the_advance_that_covers_it() {
        loom::model(|| {
            let commit = Arc::new(Commit::new(0));
            commit.set_last(2);
            let waiter = {
                let commit = commit.clone();
                spawn(move || commit.wait(2))
            };
            commit.advance(1);
            commit.advance(2);
            assert_eq!(waiter.join().unwrap(), Ok(()));
        });
    }

    #[test]
    fn poison_fails_a_blocked_waiter_and_stops_acknowledging() {
        loom::model(|| {
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
