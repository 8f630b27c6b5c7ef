//! The journal's order of a code's records is the order its transitions
//! took effect: each transition appends its record while it holds the
//! code's busy bit. Checked by replay: after every interleaving the
//! `MemoryJournal` re-applies cleanly to a fresh engine, which re-validates
//! each record against the state the records before it built, and the two
//! engines dump the same state.
//!
//! Two races. Redeem, rollback and void on one code: the code's records in
//! log order must be those of some serial order of the three (and replay
//! re-validates every one); all three at once with one preemption, each
//! pair at the full bound (`BusyBitCheckThenSet` breaks it). And a rollback racing the same user's
//! redemption of another code with `per_user_limit = 1`: the rollback may
//! free the user's slot only after its record is in the log, or replay finds
//! the new redemption over the limit (`RollbackUnclaimsBeforeRecord`).
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{
    Mutation, Op, PREEMPTIONS_THREE_THREADS, T0, campaign, check, check_bounded, check_caught,
    check_replay, engine, outcome, race_one_code,
};

const REDEEM: Op = Op::Redeem("ann");

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
fn redeem_rollback_void_records_are_in_effect_order() {
    check_bounded(
        "record_order_all_three",
        PREEMPTIONS_THREE_THREADS,
        race_one_code(&[], &[REDEEM, Op::Rollback, Op::Void]),
    );
}

#[test]
fn redeem_vs_rollback() {
    check(
        "record_order_redeem_rollback",
        race_one_code(&[], &[REDEEM, Op::Rollback]),
    );
}

#[test]
fn rollback_vs_void_of_a_redeemed_code() {
    check(
        "record_order_rollback_void",
        race_one_code(&[REDEEM], &[Op::Rollback, Op::Void]),
    );
}

#[test]
fn loom_catches_a_check_then_set_busy_bit() {
    check_caught(
        "record_order_rollback_void",
        Mutation::BusyBitCheckThenSet,
        race_one_code(&[REDEEM], &[Op::Rollback, Op::Void]),
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
