//! The journal's order of a code's records is the order its transitions
//! took effect: each transition appends its record while it holds the
//! code's busy bit. Checked by replay: after every interleaving the
//! `MemoryJournal` re-applies cleanly to a fresh engine, which re-validates
//! each record against the state the records before it built, and the two
//! engines dump the same state.
//!
//! Two races. Redeem, rollback and void on one code (records out of order
//! would redeem a voided code or roll back an unredeemed one in replay;
//! `BusyBitCheckThenSet` breaks it). And a rollback racing the same user's
//! redemption of another code with `per_user_limit = 1`: the rollback may
//! free the user's slot only after its record is in the log, or replay finds
//! the new redemption over the limit (`RollbackUnclaimsBeforeRecord`).
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{
    Mutation, T0, campaign, check, check_caught, check_counters, check_replay, code_records,
    engine, outcome, state,
};

fn model_one_code() {
    let engine = Arc::new(engine());
    let code = campaign(&engine, "order", 1, 1).remove(0);
    let redeem = {
        let (engine, code) = (engine.clone(), code.clone());
        loom::thread::spawn(move || outcome(&engine.redeem(&code, "ann", None, T0, None)))
    };
    let rollback = {
        let (engine, code) = (engine.clone(), code.clone());
        loom::thread::spawn(move || outcome(&engine.rollback(&code, T0, None)))
    };
    let void = outcome(&engine.void(&code, T0, None));
    let (redeem, rollback) = (redeem.join().unwrap(), rollback.join().unwrap());
    let records = code_records(&engine, &code);
    // The code's history, in log order, is consistent with what each request
    // was told and with where the code ended.
    let expected: &[&str] = match (redeem, rollback, void) {
        ("ok", "ok", "ok") => &["redeemed", "rolled_back", "voided"],
        ("ok", "ok", "already_redeemed") => &["redeemed", "rolled_back"],
        ("ok", "not_redeemed", "already_redeemed") => &["redeemed"],
        ("code_voided", "not_redeemed", "ok") => &["voided"],
        other => panic!("no serial order gives {other:?}"),
    };
    assert_eq!(records, expected);
    let last = expected[expected.len() - 1];
    let end = match last {
        "rolled_back" => "available",
        other => other,
    };
    assert_eq!(state(&engine, &code), end);
    check_counters(&engine, "order");
    check_replay(&engine);
}

fn model_rollback_frees_a_slot() {
    let engine = Arc::new(engine());
    let codes = campaign(&engine, "order", 2, 1);
    engine.redeem(&codes[0], "ann", None, T0, None).unwrap();
    let rollback = {
        let (engine, code) = (engine.clone(), codes[0].clone());
        loom::thread::spawn(move || outcome(&engine.rollback(&code, T0, None)))
    };
    let redeem = outcome(&engine.redeem(&codes[1], "ann", None, T0, None));
    assert_eq!(rollback.join().unwrap(), "ok");
    assert!(["ok", "user_limit_reached"].contains(&redeem), "{redeem}");
    let claimed = engine.campaign("order").unwrap().user_claimed("ann");
    assert_eq!(claimed, u32::from(redeem == "ok"));
    check_replay(&engine);
}

#[test]
fn one_codes_records_are_in_effect_order() {
    check("record_order_one_code", model_one_code);
}

#[test]
fn loom_catches_a_check_then_set_busy_bit() {
    check_caught(
        "record_order_one_code",
        Mutation::BusyBitCheckThenSet,
        model_one_code,
    );
}

#[test]
fn a_freed_slot_is_claimed_after_the_rollback_record() {
    check("record_order_rollback", model_rollback_frees_a_slot);
}

#[test]
fn loom_catches_a_slot_freed_before_the_rollback_record() {
    check_caught(
        "record_order_rollback",
        Mutation::RollbackUnclaimsBeforeRecord,
        model_rollback_frees_a_slot,
    );
}
