//! The expiry sweep races a confirm of the same reservation. The hold ends
//! at `T0 + 1 s`; the confirm comes at the last millisecond before it and
//! the sweep at the deadline (two threads' clocks need not agree). Never
//! both: either the confirm redeems the code and the sweep releases nothing,
//! or the sweep releases it back to its prior state (assigned), gives the
//! holder's count back, and the confirm is told `reservation_expired`.
//! Both re-check the hold under the code's busy bit; with
//! `LockHoldChecksBeforeLock` they act on a hold the other already ended.
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{
    Mutation, T0, campaign, check, check_caught, check_counters, check_replay, engine, outcome,
    state,
};
use redeem_engine::Timestamp;

/// (confirm, holds the sweep released, final state, bob's count).
const LEGAL: [(&str, usize, &str, u32); 2] = [
    ("ok", 0, "redeemed", 1),
    ("reservation_expired", 1, "assigned", 0),
];

fn model() {
    let engine = Arc::new(engine());
    campaign(&engine, "sweep", 1, 1);
    let code = engine.assign("sweep", "rita", T0, None).unwrap().code;
    let hold = engine.reserve(&code, "bob", Some(1), T0, None).unwrap();
    let until = hold.expires_at;
    let confirm = {
        let engine = engine.clone();
        loom::thread::spawn(move || {
            let at = Timestamp(until.0 - 1);
            outcome(&engine.confirm(hold.reservation, None, at, None))
        })
    };
    let released = engine.sweep(until).expect("sweep");
    let confirm = confirm.join().unwrap();
    let seen = (
        confirm,
        released,
        state(&engine, &code),
        engine.campaign("sweep").unwrap().user_claimed("bob"),
    );
    assert!(LEGAL.contains(&seen), "illegal outcome {seen:?}");
    check_counters(&engine, "sweep");
    check_replay(&engine);
}

#[test]
fn sweep_and_confirm_never_both_win() {
    check("expiry_sweep", model);
}

#[test]
fn loom_catches_a_hold_checked_before_the_lock() {
    check_caught("expiry_sweep", Mutation::LockHoldChecksBeforeLock, model);
}
