//! Redeem, void and reserve race on one code. Whatever the interleaving, the
//! ending (what each request was told, the code's final state, the users'
//! counts and the code's records in log order) is one that some serial
//! order of the same requests gives on a fresh engine, the counters agree
//! with the bitmap, and the journal replays to the same state.
//!
//! All three at once is checked with one preemption (at two, the
//! interleavings of three threads run to millions); each pair is checked at
//! the full bound. The busy bit serialises them: taking it without a
//! compare-and-swap (`BusyBitCheckThenSet`) or deciding on the state read
//! before taking it (`VoidChecksStaleState`) lets two transitions act on one
//! state.
#![cfg(loom)]

use loom_tests::{
    Mutation, Op, PREEMPTIONS_THREE_THREADS, check, check_bounded, check_caught, race_one_code,
};

const REDEEM: Op = Op::Redeem("ann");
const RESERVE: Op = Op::Reserve("bob");

#[test]
fn redeem_void_reserve_is_some_serial_order() {
    check_bounded(
        "serial_orders_all_three",
        PREEMPTIONS_THREE_THREADS,
        race_one_code(&[], &[Op::Void, REDEEM, RESERVE]),
    );
}

#[test]
fn redeem_vs_void() {
    check(
        "serial_orders_redeem_void",
        race_one_code(&[], &[REDEEM, Op::Void]),
    );
}

#[test]
fn redeem_vs_reserve() {
    check(
        "serial_orders_redeem_reserve",
        race_one_code(&[], &[REDEEM, RESERVE]),
    );
}

#[test]
fn reserve_vs_void() {
    check(
        "serial_orders_reserve_void",
        race_one_code(&[], &[RESERVE, Op::Void]),
    );
}

#[test]
fn loom_catches_a_check_then_set_busy_bit() {
    check_caught(
        "serial_orders_redeem_void",
        Mutation::BusyBitCheckThenSet,
        race_one_code(&[], &[REDEEM, Op::Void]),
    );
}

#[test]
fn loom_catches_void_deciding_on_a_stale_state() {
    check_caught(
        "serial_orders_redeem_void",
        Mutation::VoidChecksStaleState,
        race_one_code(&[], &[REDEEM, Op::Void]),
    );
}
