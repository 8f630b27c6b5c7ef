//! Redeem, void and reserve race on one code, from three threads. Whatever
//! the interleaving, the outcome (what each request was told, the code's
//! final state and the users' counts) is one that some serial order of the
//! three gives, and the journal replays to the same state. The busy bit
//! serialises them: taking it without a compare-and-swap
//! (`BusyBitCheckThenSet`) or deciding on the state read before taking it
//! (`VoidChecksStaleState`) lets two transitions act on one state.
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{
    Mutation, T0, campaign, check, check_caught, check_counters, check_replay, engine, outcome,
    state,
};

/// (redeem by ann, void, reserve by bob, final state, ann's count, bob's
/// count) for every serial order of the three.
const SERIAL_OUTCOMES: [(&str, &str, &str, &str, u32, u32); 4] = [
    // Redeem first: the code is spent, void and reserve are refused.
    (
        "ok",
        "already_redeemed",
        "already_redeemed",
        "redeemed",
        1,
        0,
    ),
    // Void first: both others are refused.
    ("code_voided", "ok", "code_voided", "voided", 0, 0),
    // Reserve, redeem, void: bob's hold stops ann; the void ends the hold
    // and gives bob's count back.
    ("code_reserved", "ok", "ok", "voided", 0, 0),
    // Reserve, void, redeem.
    ("code_voided", "ok", "ok", "voided", 0, 0),
];

fn model() {
    let engine = Arc::new(engine());
    let code = campaign(&engine, "orders", 1, 1).remove(0);
    let redeem = {
        let (engine, code) = (engine.clone(), code.clone());
        loom::thread::spawn(move || outcome(&engine.redeem(&code, "ann", None, T0, None)))
    };
    let reserve = {
        let (engine, code) = (engine.clone(), code.clone());
        loom::thread::spawn(move || outcome(&engine.reserve(&code, "bob", None, T0, None)))
    };
    let void = outcome(&engine.void(&code, T0, None));
    let (redeem, reserve) = (redeem.join().unwrap(), reserve.join().unwrap());
    let campaign = engine.campaign("orders").unwrap();
    let seen = (
        redeem,
        void,
        reserve,
        state(&engine, &code),
        campaign.user_claimed("ann"),
        campaign.user_claimed("bob"),
    );
    assert!(
        SERIAL_OUTCOMES.contains(&seen),
        "no serial order gives {seen:?}"
    );
    check_counters(&engine, "orders");
    check_replay(&engine);
}

#[test]
fn redeem_void_reserve_is_some_serial_order() {
    check("serial_orders", model);
}

#[test]
fn loom_catches_a_check_then_set_busy_bit() {
    check_caught("serial_orders", Mutation::BusyBitCheckThenSet, model);
}

#[test]
fn loom_catches_void_deciding_on_a_stale_state() {
    check_caught("serial_orders", Mutation::VoidChecksStaleState, model);
}
