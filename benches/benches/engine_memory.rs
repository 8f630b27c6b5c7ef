//! Memory per redeemed code: redeems N fresh codes of one campaign with
//! typical user and order strings and reports the heap bytes the engine
//! kept for them, from a counting global allocator (bytes requested, not
//! the allocator's own rounding and headers). Not a criterion bench: it
//! prints one table.
//!
//! `cargo bench -p redeem-benches --bench engine_memory [-- CODES]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use redeem_benches::{BENCH_NOW, bench_engine};
use redeem_engine::{Slot, Timestamp};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is a
// side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NOW: Timestamp = BENCH_NOW;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Redeems `codes` fresh codes, `codes_per_user` by each user; returns
/// (bytes kept per code, string bytes per code).
fn measure(codes: u64, codes_per_user: u64) -> (f64, f64) {
    let engine = bench_engine(codes);
    let campaign = engine.campaign("bench").unwrap();
    let printed: Vec<String> = (0..codes)
        .map(|i| campaign.code_of(Slot::generated(i)))
        .collect();
    // Typical shapes: an account id and a shop's order number.
    let users: Vec<String> = (0..codes.div_ceil(codes_per_user))
        .map(|u| format!("customer-{u:08}"))
        .collect();
    let orders: Vec<String> = (0..codes).map(|i| format!("ORD-2026-{i:010}")).collect();
    let strings: usize = users.iter().map(String::len).sum::<usize>()
        + orders.iter().map(String::len).sum::<usize>();
    let before = live();
    for (i, code) in printed.iter().enumerate() {
        let user = &users[i / codes_per_user as usize];
        engine
            .redeem(code, user, Some(&orders[i]), NOW, None)
            .expect("fresh code redeems");
    }
    let kept = live() - before;
    assert_eq!(campaign.stats(NOW).redeemed, codes);
    (kept as f64 / codes as f64, strings as f64 / codes as f64)
}

fn main() {
    // criterion-style arguments (`--bench`, filters) are ignored; a number
    // is the count of codes.
    let codes = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(1_000_000);
    println!("engine memory per redeemed code, {codes} codes, heap bytes requested");
    println!(
        "{:>14} {:>12} {:>14} {:>18}",
        "codes/user", "bytes/code", "strings/code", "beyond strings"
    );
    for codes_per_user in [1, 10, codes] {
        let (per_code, strings) = measure(codes, codes_per_user);
        println!(
            "{codes_per_user:>14} {per_code:>12.1} {strings:>14.1} {:>18.1}",
            per_code - strings
        );
    }
}
