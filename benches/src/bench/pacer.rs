//! The open loop's clock: one OS thread releases the schedule's slots on
//! time.
//!
//! tokio's timer wheel ticks in whole milliseconds and rounds a deadline
//! up to the next tick, so a connection that slept until its slot was sent
//! on average half a millisecond late and at p99 about a millisecond or
//! two (more on a loaded machine). Latency is charged from the slot, so
//! that lag was counted against the target, and it set a floor under every
//! p99 the open loop reported. Here a dedicated thread sleeps with the
//! kernel's high-resolution timers (the thread's timer slack set to 1 µs)
//! until the next slot, then wakes the connection that owns it. What is
//! left of the send lag is that thread's wake-up plus a task wake-up, tens
//! of microseconds, and the harness still reports it (`send lag`), so a
//! late client is visible rather than silently charged to the server.
//!
//! Above 4,000 operations a second one wake-up releases every slot due in
//! the last 250 µs (`QUANTUM_NANOS`): a wake-up per slot cost the client
//! half again as much CPU at 10,000/s, CPU the target on the same machine
//! then lacks. A slot is never released early: a connection goes only
//! once the pacer's clock has passed its slot's due time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The shortest sleep between two releases.
const QUANTUM_NANOS: u64 = 250_000;

/// The longest the thread sleeps before it looks at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Slot `i` of the global schedule is due at `t0 + i * slot` and belongs
/// to connection `i % connections`.
pub struct Pacer {
    t0: Instant,
    /// Nanoseconds since `t0` up to which slots have been released.
    released: AtomicU64,
    /// One per connection: woken when one of its slots is released.
    gates: Vec<Notify>,
    stop: AtomicBool,
}

/// The running pacer; dropping it stops and joins the thread.
pub struct Running {
    pub pacer: Arc<Pacer>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Starts the pacing thread for `connections` connections sharing a
    /// schedule of one slot every `slot`, starting at `t0`.
    pub fn start(t0: Instant, slot: Duration, connections: usize) -> std::io::Result<Running> {
        let pacer = Arc::new(Pacer {
            t0,
            released: AtomicU64::new(0),
            gates: (0..connections).map(|_| Notify::new()).collect(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let pacer = pacer.clone();
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || pacer.run(slot))?
        };
        Ok(Running {
            pacer,
            thread: Some(thread),
        })
    }

    /// Waits until connection `k`'s slot due at `due` has been released.
    pub async fn wait(&self, k: usize, due: Instant) {
        let due = nanos(due.saturating_duration_since(self.t0));
        let gate = &self.gates[k];
        loop {
            // Acquire: pairs with the pacer's release store, so a slot seen
            // released was released by a clock reading at or after it.
            if self.released.load(Ordering::Acquire) >= due {
                return;
            }
            let notified = gate.notified();
            tokio::pin!(notified);
            // Registered before the second look, so a release between the
            // look and the await still wakes this task.
            notified.as_mut().enable();
            if self.released.load(Ordering::Acquire) >= due {
                return;
            }
            notified.await;
        }
    }

    fn run(&self, slot: Duration) {
        set_fine_timer_slack();
        let slot = nanos(slot).max(1);
        let n = self.gates.len() as u64;
        let mut next: u64 = 0;
        // Relaxed: a stop flag; seeing it one slot late is harmless.
        while !self.stop.load(Ordering::Relaxed) {
            let now = nanos(self.t0.elapsed());
            self.released.store(now, Ordering::Release);
            let due_now = now / slot + 1;
            if due_now - next >= n {
                // Behind by a whole round (the thread was descheduled):
                // every connection has a slot due.
                self.gates.iter().for_each(Notify::notify_one);
                next = due_now;
            } else {
                while next < due_now {
                    self.gates[(next % n) as usize].notify_one();
                    next += 1;
                }
            }
            // At high rates, one wake-up releases the slots of a quantum
            // together: a wake-up per slot costs the client more CPU than
            // the lag it saves.
            // At a low rate, wake at least every `STOP_CHECK` so the end of
            // the run is not held up by a distant slot.
            let wake_at = (next * slot).max(now + QUANTUM_NANOS);
            let nap = Duration::from_nanos(wake_at.saturating_sub(now)).min(STOP_CHECK);
            std::thread::sleep(nap);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.pacer.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread wakes within one slot; a panic in it has already
            // been printed.
            let _ = thread.join();
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Asks the kernel to wake this thread within 1 µs of its deadline rather
/// than the default 50 µs. Best effort: without it the pacer is only a
/// little coarser.
fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes
    // only this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot is released, to its own connection, never before it is
    /// due.
    #[test]
    fn slots_are_released_to_their_connection_and_never_early() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let n = 3;
        let slot = Duration::from_micros(300);
        let t0 = Instant::now();
        let running = Pacer::start(t0, slot, n).unwrap();
        let pacer = running.pacer.clone();
        let all = async move {
            let mut tasks = Vec::new();
            for k in 0..n {
                let pacer = pacer.clone();
                tasks.push(tokio::spawn(async move {
                    let mut early = 0;
                    for j in 0..50u32 {
                        let due = t0 + slot * (j * n as u32 + k as u32);
                        pacer.wait(k, due).await;
                        if Instant::now() < due {
                            early += 1;
                        }
                    }
                    early
                }));
            }
            let mut early = 0;
            for t in tasks {
                early += t.await.unwrap();
            }
            early
        };
        let early = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), all).await })
            .expect("every slot was released within 10 s");
        assert_eq!(early, 0, "slots released before they were due");
        drop(running);
    }

    /// A slot far in the future does not keep the thread from stopping.
    #[test]
    fn a_slow_schedule_stops_when_dropped() {
        let running = Pacer::start(Instant::now(), Duration::from_secs(3600), 2).unwrap();
        let (done, stopped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(running);
            done.send(()).unwrap();
        });
        stopped
            .recv_timeout(Duration::from_secs(10))
            .expect("the pacing thread stopped within 10 s of the drop");
    }
}
