//! The threads that serve connections (`--connection-threads`, one per
//! core by default): each runs a single-threaded tokio runtime, and the
//! accept loop hands new connections to them in turn. A connection's
//! requests, its timers and the wake-up after its group commit stay on one
//! thread: no work stealing, no shared run queue, and the flusher's wakes
//! land on a few event loops instead of a pool of workers.
//!
//! With no threads, connections run on the runtime that calls
//! [`Loops::spawn`] (in-process tests, `--connection-threads 0`).

pub mod commit;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redeem_wal::Wal;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The connection threads, and how to stop them.
pub struct Loops {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The thread the next connection goes to.
    next: usize,
}

impl Loops {
    /// Starts `count` threads, each with its own runtime and its commit
    /// dispatcher on `wal` (`commit`).
    pub fn start(count: usize, wal: &Arc<Wal>, stop_timeout: Duration) -> std::io::Result<Loops> {
        let mut loops = Loops {
            handles: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
            next: 0,
        };
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            loops.handles.push(runtime.handle().clone());
            loops.stops.push(stop);
            let wal = wal.clone();
            let thread = std::thread::Builder::new()
                .name(format!("redeemd-conn-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        tokio::select! {
                            _ = stopped => {}
                            () = commit::dispatcher(wal) => {}
                        }
                    });
                    // Connections still open after the drain are dropped
                    // here; a blocking job gets the timeout to notice.
                    runtime.shutdown_timeout(stop_timeout);
                })?;
            loops.threads.push(thread);
        }
        Ok(loops)
    }

    /// Runs a connection's future on the next thread, or on the calling
    /// runtime when there are none.
    pub fn spawn(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        if self.handles.is_empty() {
            tokio::spawn(future);
            return;
        }
        let handle = &self.handles[self.next % self.handles.len()];
        self.next = self.next.wrapping_add(1);
        handle.spawn(future);
    }

    /// Stops every thread (dropping what still runs there) and waits for
    /// them.
    pub async fn stop(self) {
        drop(self.stops);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
