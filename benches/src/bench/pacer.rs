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
//! until the next slot, then wakes the connection that owns it. Below
//! 4,000 operations a second what is left of the send lag is that thread's
//! wake-up plus a task wake-up, tens of microseconds. Above it, one
//! wake-up releases every slot due in the last 250 µs (`QUANTUM_NANOS`),
//! so a slot goes out up to 250 µs late (about half that on average): a
//! wake-up per slot cost the client half again as much CPU at 10,000/s,
//! CPU the target on the same machine then lacks. Either way the harness
//! reports the lag (`send lag`), so a late client is visible rather than
//! silently charged to the server.
//!
//! A slot is never released early: a connection goes only once the
//! pacer's clock has passed its slot's due time. Due times are whole
//! nanoseconds from one integer schedule (`Pacer::due`), which the
//! connections and the thread share, so the two never drift apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The longest the thread sleeps before it looks at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// The shortest sleep between two releases.
const QUANTUM_NANOS: u64 = 250_000;

/// Slot `i` of the global schedule is due `i * slot` nanoseconds after
/// `t0` and belongs to connection `i % connections`. Both the connections
/// and the pacing thread take due times from [`Pacer::due`], so they agree
/// to the nanosecond however the rate divides.
pub struct Pacer {
    t0: Instant,
    /// Nanoseconds between two slots of the global schedule.
    slot: u64,
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

/// What one wake-up of the pacing thread releases.
#[derive(Debug, PartialEq, Eq)]
enum Release {
    /// These global slots, each to its own connection.
    Slots(std::ops::Range<u64>),
    /// A whole round or more is due (the thread was descheduled): every
    /// connection has a slot due.
    Everyone,
}

/// The slots due at `now` (nanoseconds since `t0`) that are not yet
/// released, given that slots before `next` were; and the next slot not
/// released afterwards. A slot is due once `now` reaches its due time.
fn release(next: u64, now: u64, slot: u64, connections: u64) -> (Release, u64) {
    let due_now = now / slot + 1;
    debug_assert!(next <= due_now, "`now` never goes backwards");
    if due_now - next >= connections {
        (Release::Everyone, due_now)
    } else {
        (Release::Slots(next..due_now), due_now)
    }
}

impl Pacer {
    /// Starts the pacing thread for `connections` connections sharing a
    /// schedule of one slot every `slot`, starting at `t0`.
    pub fn start(t0: Instant, slot: Duration, connections: usize) -> std::io::Result<Running> {
        let pacer = Arc::new(Pacer {
            t0,
            slot: nanos(slot).max(1),
            released: AtomicU64::new(0),
            gates: (0..connections).map(|_| Notify::new()).collect(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let pacer = pacer.clone();
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || pacer.run())?
        };
        Ok(Running {
            pacer,
            thread: Some(thread),
        })
    }

    /// Connections sharing the schedule: a connection's slots are this far
    /// apart.
    pub fn connections(&self) -> u64 {
        self.gates.len() as u64
    }

    /// When global slot `index` is due.
    pub fn due(&self, index: u64) -> Instant {
        self.t0 + Duration::from_nanos(index.saturating_mul(self.slot))
    }

    /// Waits until global slot `index` has been released.
    pub async fn wait(&self, index: u64) {
        let due = index.saturating_mul(self.slot);
        let gate = &self.gates[(index % self.connections()) as usize];
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

    fn run(&self) {
        set_fine_timer_slack();
        let n = self.connections();
        let mut next: u64 = 0;
        // Relaxed: a stop flag; seeing it one wake-up late is harmless.
        while !self.stop.load(Ordering::Relaxed) {
            let now = nanos(self.t0.elapsed());
            self.released.store(now, Ordering::Release);
            let (released, after) = release(next, now, self.slot, n);
            match released {
                Release::Everyone => self.gates.iter().for_each(Notify::notify_one),
                Release::Slots(slots) => {
                    for i in slots {
                        self.gates[(i % n) as usize].notify_one();
                    }
                }
            }
            next = after;
            // At high rates one wake-up releases the slots of a quantum
            // together, so a slot goes out up to `QUANTUM_NANOS` late: a
            // wake-up per slot cost the client more CPU than that lag. At a
            // low rate, wake at least every `STOP_CHECK` so the end of the
            // run is not held up by a distant slot.
            let wake_at = (next * self.slot).max(now + QUANTUM_NANOS);
            let nap = Duration::from_nanos(wake_at - now).min(STOP_CHECK);
            std::thread::sleep(nap);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.pacer.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread wakes within `STOP_CHECK`; a panic in it has
            // already been printed.
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
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot is released, never before it is due, at a rate whose
    /// slot is not a whole number of microseconds (the connections' due
    /// times and the thread's once drifted apart at such rates).
    #[test]
    fn slots_are_released_and_never_early() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let n = 3u64;
        let slot = Duration::from_secs_f64(1.0 / 7_000.0);
        let running = Pacer::start(Instant::now(), slot, n as usize).unwrap();
        let pacer = running.pacer.clone();
        let all = async move {
            let mut tasks = Vec::new();
            for k in 0..n {
                let pacer = pacer.clone();
                tasks.push(tokio::spawn(async move {
                    let mut early = 0;
                    for j in 0..50 {
                        let index = j * pacer.connections() + k;
                        pacer.wait(index).await;
                        if Instant::now() < pacer.due(index) {
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

    /// Each wake-up releases exactly the slots that became due since the
    /// last, none before its time, or everyone once a round is overdue.
    #[test]
    fn a_wake_up_releases_exactly_the_slots_now_due() {
        let (slot, n) = (142_857, 4);
        assert_eq!(release(0, 0, slot, n), (Release::Slots(0..1), 1));
        assert_eq!(release(1, slot - 1, slot, n), (Release::Slots(1..1), 1));
        assert_eq!(release(1, slot, slot, n), (Release::Slots(1..2), 2));
        assert_eq!(release(2, 3 * slot + 5, slot, n), (Release::Slots(2..4), 4));
        assert_eq!(release(4, 8 * slot, slot, n), (Release::Everyone, 9));

        // Any run of clock readings: every slot is released once, in order,
        // and only when the clock has reached it.
        let mut next = 0;
        let mut now = 0;
        let mut step = 1u64;
        for _ in 0..10_000 {
            step = step.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            now += (step >> 33) % (3 * slot);
            match release(next, now, slot, n) {
                (Release::Slots(slots), after) => {
                    assert_eq!(slots.start, next);
                    assert_eq!(slots.end, after);
                    if let Some(last) = slots.clone().last() {
                        assert!(last * slot <= now, "slot {last} released early");
                    }
                    assert!(after * slot > now, "slot {after} due but not released");
                    next = after;
                }
                (Release::Everyone, after) => {
                    assert!(after - next >= n);
                    assert!((after - 1) * slot <= now && after * slot > now);
                    next = after;
                }
            }
        }
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
