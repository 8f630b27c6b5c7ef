//! Deliberate bugs for the loom models to find; compiled only under
//! `cfg(loom)`, so a production build holds none of this.
//!
//! Each [`Mutation`] breaks one concurrency protocol of the log in the
//! smallest way that still compiles; the broken code sits next to the code
//! it breaks (`publish`, `commit`). A model test switches one on and asserts
//! that loom finds a failing interleaving: a model that cannot fail proves
//! nothing.
//!
//! The switch is a std atomic, not loom's, so it is no part of any modelled
//! state: a test sets it before `loom::model` and clears it after, and the
//! log only reads it. This is the one place outside `sync` that names an
//! atomic, because it must not be a loom one.

use std::sync::atomic::{AtomicU8, Ordering};

/// One deliberate bug. At most one is active at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mutation {
    /// `publish::reserve` reads the position in one critical section of the
    /// tail lock and advances it in another.
    ReserveCheckThenIncrement = 1,
    /// `publish::write_frame` stores the commit word before the rest of the
    /// frame.
    CommitWordFirst,
    /// `publish::walk_written` stops at the first unwritten frame instead of
    /// waiting for it; the flusher still advances to its whole target.
    FlusherSkipsWait,
    /// `Commit::advance` takes the wakers under the waiter lock but stores
    /// the durable LSN after letting go of it.
    DurableStoreOutsideLock,
    /// `Commit::advance` wakes everyone before it stores the durable LSN.
    WakeBeforeDurableStore,
}

/// The active mutation as its discriminant; 0 for none.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Switches `mutation` on (`None`: all off). Call it outside `loom::model`;
/// only the models' harness does.
#[cfg(test)]
pub(crate) fn set(mutation: Option<Mutation>) {
    // SeqCst: a test switch, set between model runs; cost is irrelevant.
    ACTIVE.store(mutation.map_or(0, |m| m as u8), Ordering::SeqCst);
}

/// Whether `mutation` is the active one.
pub(crate) fn on(mutation: Mutation) -> bool {
    // SeqCst: pairs with `set`; never on a production path.
    ACTIVE.load(Ordering::SeqCst) == mutation as u8
}

/// Runs models one at a time, counts their interleavings, and checks that
/// each mutation is caught; the same conventions as `loom-tests`' harness.
#[cfg(test)]
pub(crate) mod harness {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Mutation;

    /// Preemptions per interleaving when `LOOM_MAX_PREEMPTIONS` is not set:
    /// every model here fails within two under each of its mutations.
    pub(crate) const PREEMPTIONS_DEFAULT: usize = 2;
    /// Scheduling points one interleaving may take; the flusher's spinning
    /// on a commit word passes loom's default of 1000.
    pub(crate) const BRANCHES_MAX: usize = 100_000;

    /// One model runs at a time: the mutation switch is process-wide, and a
    /// test binary runs its tests on several threads.
    static MODEL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Clears the mutation switch however the model ended.
    struct MutationGuard;

    impl Drop for MutationGuard {
        fn drop(&mut self) {
            super::set(None);
        }
    }

    fn builder(preemptions_max: usize) -> loom::model::Builder {
        let mut builder = loom::model::Builder::new();
        let bound = builder.preemption_bound.unwrap_or(PREEMPTIONS_DEFAULT);
        builder.preemption_bound = Some(bound.min(preemptions_max));
        builder.max_branches = builder.max_branches.max(BRANCHES_MAX);
        builder
    }

    /// Runs `model` with `mutation` active; returns how many interleavings
    /// loom explored, or the panic that ended the run.
    fn run<F>(mutation: Option<Mutation>, preemptions_max: usize, model: F) -> Result<usize, String>
    where
        F: Fn() + Sync + Send + 'static,
    {
        let _serial = MODEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _reset = MutationGuard;
        // A mutation's expected panic would print a backtrace; the caller
        // prints its message instead (`LOOM_LOUD=1` keeps the backtrace, to
        // debug a model). Set under the model lock, so models running after
        // this one get the hook back.
        let hook = mutation
            .filter(|_| std::env::var_os("LOOM_LOUD").is_none())
            .map(|_| {
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                hook
            });
        super::set(mutation);
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let builder = builder(preemptions_max);
        let outcome = catch_unwind(AssertUnwindSafe(move || {
            builder.check(move || {
                // Relaxed: a plain tally, read after the model returns.
                counter.fetch_add(1, Ordering::Relaxed);
                model();
            })
        }));
        if let Some(hook) = hook {
            std::panic::set_hook(hook);
        }
        match outcome {
            // Relaxed: every increment happened on this thread.
            Ok(()) => Ok(count.load(Ordering::Relaxed)),
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).into()))
                .unwrap_or_else(|| "a panic without a message".into())),
        }
    }

    /// Polls `future` on the current loom thread, parking between polls
    /// until its waker unparks it; a future nobody wakes leaves the thread
    /// parked, which loom reports as a deadlock. (loom's own `block_on`
    /// needs its `futures` feature and one more dependency.)
    pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
        struct Unpark(loom::thread::Thread);

        impl std::task::Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }

        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(loom::thread::current())));
        let mut context = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
            loom::thread::park();
        }
    }

    /// Checks `model` in every interleaving within the bounds; panics on the
    /// first failing one. Prints the number of interleavings explored.
    pub(crate) fn check<F>(name: &str, model: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        check_bounded(name, usize::MAX, model);
    }

    /// [`check`] with at most `preemptions_max` preemptions per interleaving.
    pub(crate) fn check_bounded<F>(name: &str, preemptions_max: usize, model: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        match run(None, preemptions_max, model) {
            Ok(count) => println!("loom: {name}: {count} interleavings, all correct"),
            Err(message) => panic!("loom: {name} failed: {message}"),
        }
    }

    /// Asserts that loom finds a failing interleaving of `model` with
    /// `mutation` switched on: the model can tell the bug from the protocol.
    pub(crate) fn check_caught<F>(name: &str, mutation: Mutation, model: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        match run(Some(mutation), usize::MAX, model) {
            Ok(count) => panic!(
                "loom: {name} with {mutation:?} passed all {count} interleavings: the model cannot see the bug"
            ),
            Err(message) => println!("loom: {name} with {mutation:?} caught: {message}"),
        }
    }
}
