//! Engine transitions without I/O (a `NullJournal`): uncontended
//! redemptions on one and two threads, and a 64-thread storm on one code.
//! Every measured redemption goes through the full path: normalize, decode
//! the code, campaign checks, per-user claim, state CAS, record build.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redeem_benches::{BENCH_NOW, bench_engine};
use redeem_engine::{Engine, NullJournal, Slot, Timestamp};

const NOW: Timestamp = BENCH_NOW;

fn engine(codes: u64) -> Engine<NullJournal> {
    bench_engine(codes)
}

fn codes(engine: &Engine<NullJournal>, range: std::ops::Range<u64>) -> Vec<String> {
    let campaign = engine.campaign("bench").unwrap();
    range
        .map(|i| campaign.code_of(Slot::generated(i)))
        .collect()
}

/// Redeems `iters` fresh codes split over `threads` threads; returns the
/// wall time of the redemptions alone.
fn redeem_fresh(threads: u64, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let engine = engine(per_thread * threads);
    let batches: Vec<Vec<String>> = (0..threads)
        .map(|t| codes(&engine, t * per_thread..(t + 1) * per_thread))
        .collect();
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|scope| {
        for (t, batch) in batches.iter().enumerate() {
            let (engine, barrier) = (&engine, &barrier);
            scope.spawn(move || {
                let user = format!("user{t}");
                barrier.wait();
                for code in batch {
                    engine
                        .redeem(code, &user, None, NOW, None)
                        .expect("fresh code redeems");
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("redeem_uncontended");
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| redeem_fresh(threads, iters))
        });
    }
    group.finish();
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("redeem_contended");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    let threads = 64u64;
    group.bench_function("64_threads_one_code", |b| {
        b.iter_custom(|iters| {
            let engine = engine(1);
            let code = codes(&engine, 0..1).pop().unwrap();
            let per_thread = iters.div_ceil(threads);
            let barrier = Barrier::new(threads as usize + 1);
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let (engine, barrier, code) = (&engine, &barrier, &code);
                    scope.spawn(move || {
                        let user = format!("user{t}");
                        barrier.wait();
                        for _ in 0..per_thread {
                            // One wins once; every other attempt is refused.
                            let _ = engine.redeem(code, &user, None, NOW, None);
                        }
                        barrier.wait();
                    });
                }
                barrier.wait();
                let start = Instant::now();
                barrier.wait();
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, uncontended, contended);
criterion_main!(benches);
