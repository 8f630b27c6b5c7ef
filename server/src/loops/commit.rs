//! Waiting for durability on a connection thread, one wake-up per group
//! commit instead of one per request.
//!
//! The flusher runs on a thread of its own. Had every request registered
//! its task with the log, a commit of n records would wake n tasks from
//! outside their runtime: n pushes onto the runtime's shared queue and n
//! writes to its event loop's wake-up descriptor. Instead each connection
//! thread keeps its waiters in a thread-local list, and one dispatcher task
//! per thread waits on the log for the lowest LSN among them; the flusher
//! wakes that task alone, and it wakes the others on its own thread, which
//! costs no system call.
//!
//! A waiter is resolved only by the log's own state: it is ready when the
//! durable LSN has reached it. One the dispatcher let go without that (the
//! log failed or closed) waits on the log directly, which reports why.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};

use redeem_wal::{DurabilityError, Lsn, Wal};

thread_local! {
    /// The waiters of this thread, if it is a connection thread.
    static LOCAL: RefCell<Option<Rc<Waiters>>> = const { RefCell::new(None) };
}

/// A connection thread's waiters and its dispatcher.
#[derive(Default)]
struct Waiters {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// (id, LSN awaited, task): each registered, pending wait.
    waiting: Vec<(u64, Lsn, Waker)>,
    /// The dispatcher, when it is idle for want of waiters.
    idle_dispatcher: Option<Waker>,
}

/// Makes this thread a connection thread and returns its dispatcher: the
/// task that waits on the log for this thread's waiters. It never ends;
/// run it on this thread only.
pub fn dispatcher(wal: Arc<Wal>) -> impl Future<Output = ()> {
    let waiters = Rc::new(Waiters::default());
    LOCAL.with(|local| *local.borrow_mut() = Some(waiters.clone()));
    async move {
        loop {
            // The lowest LSN awaited: every commit serves it first.
            let lowest = poll_fn(|cx| {
                let mut state = waiters.state.borrow_mut();
                match state.waiting.iter().map(|(_, lsn, _)| *lsn).min() {
                    Some(lsn) => Poll::Ready(lsn),
                    None => {
                        state.idle_dispatcher = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await;
            let failed = wal.durable(lowest).await.is_err();
            let durable = wal.durable_lsn();
            let due: Vec<Waker> = {
                let mut state = waiters.state.borrow_mut();
                let mut due = Vec::new();
                state.waiting.retain(|(_, lsn, waker)| {
                    let settled = failed || *lsn <= durable;
                    if settled {
                        due.push(waker.clone());
                    }
                    !settled
                });
                due
            };
            due.into_iter().for_each(Waker::wake);
        }
    }
}

/// Waits until `lsn` is durable: through this thread's dispatcher on a
/// connection thread, on the log directly anywhere else.
///
/// The future holds no reference to the thread's list (so it stays
/// `Send`): each poll finds the list of the thread it runs on, and an
/// entry it cannot find there counts as let go, which waits on the log.
pub async fn durable(wal: &Wal, lsn: Lsn) -> Result<(), DurabilityError> {
    if wal.durable_lsn() >= lsn {
        return Ok(());
    }
    if !LOCAL.with(|local| local.borrow().is_some()) {
        return wal.durable(lsn).await;
    }
    let mut registration = Registration { id: None };
    let settled = poll_fn(|cx| {
        if wal.durable_lsn() >= lsn {
            registration.cancel();
            return Poll::Ready(true);
        }
        with_state(|state| match (registration.id, state) {
            (None, Some(state)) => {
                // Relaxed: ids only need to be distinct.
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                state.waiting.push((id, lsn, cx.waker().clone()));
                registration.id = Some(id);
                if let Some(dispatcher) = state.idle_dispatcher.take() {
                    dispatcher.wake();
                }
                Poll::Pending
            }
            (Some(id), Some(state)) => match state.waiting.iter_mut().find(|(i, ..)| *i == id) {
                Some(entry) => {
                    entry.2.clone_from(cx.waker());
                    Poll::Pending
                }
                // Let go by the dispatcher short of durable (the log
                // failed or closed), or polled on another thread.
                None => {
                    registration.id = None;
                    Poll::Ready(false)
                }
            },
            (_, None) => {
                registration.id = None;
                Poll::Ready(false)
            }
        })
    })
    .await;
    if settled {
        Ok(())
    } else {
        wal.durable(lsn).await
    }
}

/// Distinct ids for waits, process-wide.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn with_state<T>(f: impl FnOnce(Option<&mut State>) -> T) -> T {
    LOCAL.with(|local| match &*local.borrow() {
        Some(waiters) => f(Some(&mut waiters.state.borrow_mut())),
        None => f(None),
    })
}

/// A wait's entry, removed if the wait is dropped before it settles.
struct Registration {
    id: Option<u64>,
}

impl Registration {
    fn cancel(&mut self) {
        if let Some(id) = self.id.take() {
            with_state(|state| {
                if let Some(state) = state {
                    state.waiting.retain(|(i, ..)| *i != id);
                }
            });
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;
    use std::sync::atomic::AtomicU8;

    use redeem_wal::{Options, OsStorage, SegmentMap, Storage};

    use super::*;

    /// What a segment's sync does: succeed, wait, or fail.
    const SYNC_OK: u8 = 0;
    const SYNC_HOLD: u8 = 1;
    const SYNC_FAIL: u8 = 2;

    /// The real file system, with syncs a test can hold back or fail.
    #[derive(Debug, Clone)]
    struct Gated(Arc<AtomicU8>);

    #[derive(Debug)]
    struct GatedMap(Box<dyn SegmentMap>, Arc<AtomicU8>);

    // SAFETY: every call goes to the wrapped mapping, which keeps the
    // promise.
    unsafe impl SegmentMap for GatedMap {
        fn as_ptr(&self) -> *mut u8 {
            self.0.as_ptr()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn sync(&self, offset: usize, len: usize) -> io::Result<()> {
            while self.1.load(Ordering::SeqCst) == SYNC_HOLD {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if self.1.load(Ordering::SeqCst) == SYNC_FAIL {
                return Err(io::Error::other("injected sync failure"));
            }
            self.0.sync(offset, len)
        }
    }

    impl Storage for Gated {
        fn create_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
            let map = OsStorage.create_segment(path, bytes)?;
            Ok(Box::new(GatedMap(map, self.0.clone())))
        }
        fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
            let map = OsStorage.open_segment(path, bytes)?;
            Ok(Box::new(GatedMap(map, self.0.clone())))
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            OsStorage.sync_dir(dir)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            OsStorage.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            OsStorage.remove_file(path)
        }
        fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            OsStorage.write_file_synced(path, bytes)
        }
    }

    fn open(dir: &Path) -> (Arc<Wal>, Arc<AtomicU8>) {
        let gate = Arc::new(AtomicU8::new(SYNC_OK));
        let options = Options {
            segment_bytes: 1 << 20,
            storage: Box::new(Gated(gate.clone())),
            ..Options::default()
        };
        let (wal, _) = Wal::open(dir, options).unwrap();
        (Arc::new(wal), gate)
    }

    fn waiting() -> usize {
        with_state(|state| state.map_or(0, |s| s.waiting.len()))
    }

    /// Runs `test` on a current-thread runtime beside this thread's
    /// dispatcher, as a connection thread does.
    fn on_connection_thread<F: Future>(wal: &Arc<Wal>, test: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dispatcher = dispatcher(wal.clone());
        runtime.block_on(async {
            tokio::select! {
                () = dispatcher => unreachable!("the dispatcher never ends"),
                output = test => output,
            }
        })
    }

    #[test]
    fn every_waiter_settles_once_its_record_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open(dir.path());
        on_connection_thread(&wal, async {
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let wal = wal.clone();
                    tokio::spawn(async move {
                        let lsn = wal.append(1, format!("record {i}").as_bytes()).unwrap();
                        durable(&wal, lsn).await.map(|()| lsn)
                    })
                })
                .collect();
            for task in tasks {
                let lsn = task.await.unwrap().unwrap();
                assert!(wal.durable_lsn() >= lsn);
            }
            assert_eq!(waiting(), 0);
        });
    }

    #[test]
    fn a_failed_sync_fails_every_waiter_and_an_unknown_lsn_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, gate) = open(dir.path());
        on_connection_thread(&wal, async {
            let first = wal.append(1, b"durable").unwrap();
            durable(&wal, first).await.unwrap();
            assert!(matches!(
                durable(&wal, first + 10).await,
                Err(DurabilityError::NotAppended { .. })
            ));
            gate.store(SYNC_HOLD, Ordering::SeqCst);
            let tasks: Vec<_> = (0..20)
                .map(|_| {
                    let wal = wal.clone();
                    tokio::spawn(async move {
                        let lsn = wal.append(1, b"lost").unwrap();
                        durable(&wal, lsn).await
                    })
                })
                .collect();
            while waiting() < tasks.len() {
                tokio::task::yield_now().await;
            }
            gate.store(SYNC_FAIL, Ordering::SeqCst);
            for task in tasks {
                assert_eq!(task.await.unwrap(), Err(DurabilityError::Poisoned));
            }
            assert_eq!(waiting(), 0);
        });
    }

    #[test]
    fn a_dropped_wait_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, gate) = open(dir.path());
        gate.store(SYNC_HOLD, Ordering::SeqCst);
        on_connection_thread(&wal, async {
            let lsn = wal.append(1, b"held").unwrap();
            let wait =
                tokio::time::timeout(std::time::Duration::from_millis(50), durable(&wal, lsn));
            assert!(wait.await.is_err(), "the sync is held back");
            assert_eq!(waiting(), 0);
            gate.store(SYNC_OK, Ordering::SeqCst);
            durable(&wal, lsn).await.unwrap();
        });
    }
}
