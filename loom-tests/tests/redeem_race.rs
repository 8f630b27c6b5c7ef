//! Two users redeem the one code of a campaign at once: in every
//! interleaving exactly one wins and the other is told `already_redeemed`,
//! and afterwards the campaign's per-state counters agree with a count of
//! the state bitmap. The busy bit's compare-and-swap is what makes the
//! winner unique; with `BusyBitCheckThenSet` both can take it.
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{Mutation, T0, campaign, check, check_caught, check_counters, engine, outcome};

fn model() {
    let engine = Arc::new(engine());
    let code = campaign(&engine, "race", 1, 1).remove(0);
    let racers: Vec<_> = ["ann", "bob"]
        .into_iter()
        .map(|user| {
            let (engine, code) = (engine.clone(), code.clone());
            loom::thread::spawn(move || outcome(&engine.redeem(&code, user, None, T0, None)))
        })
        .collect();
    let mut outcomes: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["already_redeemed", "ok"]);
    check_counters(&engine, "race");
    let stats = engine.campaign("race").unwrap().view(T0).stats;
    assert_eq!((stats.redeemed, stats.available), (1, 0));
}

#[test]
fn one_of_two_redeemers_wins() {
    check("redeem_race", model);
}

#[test]
fn loom_catches_a_check_then_set_busy_bit() {
    check_caught("redeem_race", Mutation::BusyBitCheckThenSet, model);
}
