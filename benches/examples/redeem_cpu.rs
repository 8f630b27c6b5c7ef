//! Uncontended redemptions on one thread, timed in the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) rather than wall time, so the figure holds
//! on a machine shared with other work, where criterion's wall-clock
//! figure includes the time the thread waited for a core. Same path as
//! `benches/engine.rs`'s `redeem_uncontended/1_threads`.
//!
//! `cargo run --profile bench -p redeem-benches --example redeem_cpu [-- CODES [ROUNDS]]`

use redeem_benches::{BENCH_NOW, bench_engine};
use redeem_engine::Slot;

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let codes = args.next().unwrap_or(2_000_000);
    let rounds = args.next().unwrap_or(5);
    let now = BENCH_NOW;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let engine = bench_engine(codes);
        let campaign = engine.campaign("bench").expect("created");
        let printed: Vec<String> = (0..codes)
            .map(|i| campaign.code_of(Slot::generated(i)))
            .collect();
        let start = thread_cpu_seconds();
        for code in &printed {
            engine
                .redeem(code, "user0", None, now, None)
                .expect("fresh code redeems");
        }
        let seconds = thread_cpu_seconds() - start;
        rates.push(codes as f64 / seconds);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{codes} redemptions x {rounds}: median {:.2} M/s of thread CPU time (min {:.2}, max {:.2})",
        rates[rates.len() / 2] / 1e6,
        rates[0] / 1e6,
        rates[rates.len() - 1] / 1e6
    );
}
