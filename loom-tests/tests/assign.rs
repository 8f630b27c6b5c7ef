//! Assignment races. Two recipients ask for a code from a pool of one: one
//! gets it and the other is told `pool_exhausted` (the pool scan takes the
//! code's busy bit by compare-and-swap; `BusyBitCheckThenSet` hands the code
//! out twice). One recipient asks twice at once, with two codes in the
//! pool: both requests answer with the same single code, one as new (its
//! recipient shard stays locked from the check to the assignment;
//! `AssignUnlocksRecipient` lets go in between and hands out two).
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{
    Mutation, T0, campaign, check, check_caught, check_counters, check_replay, engine, refusal_code,
};
use redeem_engine::Assigned;

/// Assigns a code of campaign "assign" to each recipient, concurrently.
fn race(
    engine: &Arc<redeem_engine::Engine<redeem_engine::MemoryJournal>>,
    recipients: [&'static str; 2],
) -> Vec<Result<Assigned, &'static str>> {
    let racers: Vec<_> = recipients
        .into_iter()
        .map(|recipient| {
            let engine = engine.clone();
            loom::thread::spawn(move || {
                engine
                    .assign("assign", recipient, T0, None)
                    .map_err(|r| refusal_code(&r))
            })
        })
        .collect();
    racers.into_iter().map(|t| t.join().unwrap()).collect()
}

fn model_pool_of_one() {
    let engine = Arc::new(engine());
    let pool = campaign(&engine, "assign", 1, 1);
    let outcomes = race(&engine, ["rita", "sam"]);
    let won: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    assert!(won[0].new && won[0].code == pool[0]);
    assert!(outcomes.contains(&Err("pool_exhausted")));
    let holders = engine.campaign("assign").unwrap().recipients_snapshot();
    assert_eq!(holders.len(), 1, "{holders:?}");
    check_counters(&engine, "assign");
    check_replay(&engine);
}

fn model_one_recipient_twice() {
    let engine = Arc::new(engine());
    campaign(&engine, "assign", 2, 1);
    let outcomes = race(&engine, ["rita", "rita"]);
    let [Ok(a), Ok(b)] = &outcomes[..] else {
        panic!("both requests answer with a code: {outcomes:?}");
    };
    assert_eq!(a.code, b.code, "rita got two codes");
    assert!(
        a.new != b.new,
        "exactly one assignment is new: {outcomes:?}"
    );
    let stats = engine.campaign("assign").unwrap().view(T0).stats;
    assert_eq!((stats.assigned, stats.available), (1, 1));
    check_counters(&engine, "assign");
    check_replay(&engine);
}

#[test]
fn a_pool_of_one_goes_to_one_recipient() {
    check("assign_pool_of_one", model_pool_of_one);
}

#[test]
fn loom_catches_a_check_then_set_busy_bit() {
    check_caught(
        "assign_pool_of_one",
        Mutation::BusyBitCheckThenSet,
        model_pool_of_one,
    );
}

#[test]
fn one_recipient_twice_gets_one_code() {
    check("assign_one_recipient_twice", model_one_recipient_twice);
}

#[test]
fn loom_catches_an_unlocked_recipient_check() {
    check_caught(
        "assign_one_recipient_twice",
        Mutation::AssignUnlocksRecipient,
        model_one_recipient_twice,
    );
}
