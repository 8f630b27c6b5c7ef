//! The load loop: N connections, each with one request in flight, either
//! as fast as answers come back (closed loop) or on a fixed schedule
//! (open loop, `--rate`).
//!
//! In the open loop each connection owns every N-th slot of a global
//! schedule of `rate` operations a second, and an operation's latency is
//! measured from its slot, not from when it was actually sent: a server
//! that stalls is charged for the requests that queued up behind the
//! stall (the coordinated-omission correction wrk2 makes). The slots are
//! released by a pacing thread (`pacer.rs`), not tokio's millisecond
//! timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pacer::{Pacer, Running};
use crate::plan::{Plan, Rng};
use crate::stats::{Live, Recorder, Summary, Tracking, micros};
use crate::targets::Connection;

/// When a run stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Send no operation due after the warm-up plus this long.
    After(Duration),
    /// Stop after this many measured operations.
    Count(u64),
}

pub struct RunConfig {
    pub connections: usize,
    /// Operations a second over all connections; `None` for closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub stop: Stop,
}

/// What every connection reads.
pub struct Ctx {
    pub plan: Plan,
    pub tracking: Tracking,
    pub live: Live,
    pub timeout: Duration,
    /// Set on Ctrl-C: connections stop starting operations.
    pub interrupted: AtomicBool,
    /// Set when the plan ran out of codes.
    pub exhausted: AtomicBool,
    /// Measured operations started, for `--count`.
    tickets: AtomicU64,
}

impl Ctx {
    pub fn new(plan: Plan, timeout: Duration) -> Ctx {
        let tracking = Tracking::new(plan.codes.len());
        Ctx {
            plan,
            tracking,
            live: Live {
                done: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            },
            timeout,
            interrupted: AtomicBool::new(false),
            exhausted: AtomicBool::new(false),
            tickets: AtomicU64::new(0),
        }
    }
}

pub struct RunResult {
    pub summary: Summary,
    pub exhausted: bool,
    pub interrupted: bool,
    pub reconnects: u64,
    /// Harness CPU time over wall time while the load ran (1.0 = one core).
    pub client_cpu_cores: f64,
}

/// Runs the load over `conns`, one task per connection.
pub async fn run<C: Connection>(conns: Vec<C>, ctx: Arc<Ctx>, cfg: &RunConfig) -> RunResult {
    let n = conns.len();
    let t0 = Instant::now();
    let measure_from = t0 + cfg.warmup;
    let end = match cfg.stop {
        Stop::After(d) => Some(measure_from + d),
        Stop::Count(_) => None,
    };
    let cpu0 = cpu_time();
    let slot = cfg.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let pacer: Option<Running> =
        slot.map(|slot| Pacer::start(t0, slot, n).expect("starting the pacing thread"));
    let mut tasks = Vec::with_capacity(n);
    for (k, conn) in conns.into_iter().enumerate() {
        let ctx = ctx.clone();
        let stop = cfg.stop;
        tasks.push(tokio::spawn(worker(
            k,
            conn,
            ctx,
            Schedule {
                t0,
                measure_from,
                end,
                stop,
                paced: pacer.as_ref().map(|p| p.pacer.clone()),
            },
        )));
    }
    let progress = tokio::spawn(progress(ctx.clone(), t0, measure_from));
    let mut recorders = Vec::with_capacity(n);
    let mut reconnects = 0;
    for task in tasks {
        let (rec, r) = task.await.expect("worker task panicked");
        recorders.push(rec);
        reconnects += r;
    }
    drop(pacer);
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    progress.abort();
    RunResult {
        summary: Summary::merge(recorders, measure_from),
        exhausted: ctx.exhausted.load(Ordering::Relaxed),
        interrupted: ctx.interrupted.load(Ordering::Relaxed),
        reconnects,
        client_cpu_cores: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
    }
}

struct Schedule {
    t0: Instant,
    measure_from: Instant,
    end: Option<Instant>,
    stop: Stop,
    /// Open loop: the thread that releases the slots and knows when each
    /// is due. This connection owns slots `k`, `k + n`, `k + 2n`, ...
    paced: Option<Arc<Pacer>>,
}

async fn worker<C: Connection>(
    k: usize,
    mut conn: C,
    ctx: Arc<Ctx>,
    s: Schedule,
) -> (Recorder, u64) {
    let mut rng = Rng::seeded(k as u64);
    let mut rec = Recorder::new(s.t0, s.measure_from);
    let mut next_slot = k as u64;
    loop {
        let scheduled = match &s.paced {
            None => Instant::now(),
            Some(pacer) => {
                let slot = next_slot;
                next_slot += pacer.connections();
                let due = pacer.due(slot);
                if s.end.is_some_and(|end| due >= end) {
                    break;
                }
                pacer.wait(slot).await;
                due
            }
        };
        // Relaxed: a flag polled once per operation; being late by one
        // operation is harmless.
        if ctx.interrupted.load(Ordering::Relaxed) {
            break;
        }
        if s.end.is_some_and(|end| scheduled >= end) {
            break;
        }
        if let Stop::Count(count) = s.stop
            && scheduled >= s.measure_from
            && ctx.tickets.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        let Some(work) = ctx.plan.next(&mut rng) else {
            ctx.exhausted.store(true, Ordering::Relaxed);
            break;
        };
        if s.paced.is_some() && rec.measured(scheduled) {
            rec.send_lag
                .saturating_record(micros(Instant::now().saturating_duration_since(scheduled)));
        }
        conn.execute(&ctx, work, scheduled, &mut rec).await;
    }
    let reconnects = conn.reconnects();
    (rec, reconnects)
}

/// Prints one line a second to stderr; Ctrl-C ends the run early (the
/// audit still runs).
async fn progress(ctx: Arc<Ctx>, t0: Instant, measure_from: Instant) {
    let mut tick =
        tokio::time::interval_at((t0 + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let mut last = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => {
                eprintln!("interrupted: finishing in-flight requests, then auditing");
                ctx.interrupted.store(true, Ordering::Relaxed);
                continue;
            }
        }
        let now = Instant::now();
        let done = ctx.live.done.load(Ordering::Relaxed);
        let errors = ctx.live.errors.load(Ordering::Relaxed);
        let phase = if now < measure_from { " (warm-up)" } else { "" };
        eprintln!(
            "[{:>4}s] done {:>9}  rate {:>8}/s  errors {}{}",
            now.duration_since(t0).as_secs(),
            done,
            done - last,
            errors,
            phase
        );
        last = done;
    }
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes only into the struct it is given, which is
    // a plain C struct for which all-zero bytes are a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
