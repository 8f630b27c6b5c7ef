//! Reclaim racing a redemption of the same assigned code. The reclaim
//! takes the code's busy bit before it decides, so exactly one of them
//! wins: either the redemption finds the code assigned and the reclaim then
//! keeps it (`kept`), or the reclaim takes it back first and the redemption
//! meets a voided code (`void=true`: `code_voided`) or a code back in the
//! pool (`void=false`: redeemed as an unassigned code). Every ending must be
//! one a serial order gives, and the journal must replay to the same state,
//! recipients included. `ReclaimChecksStaleState` decides on the state read
//! before the busy bit, and unassigns a code that was redeemed meanwhile.
#![cfg(loom)]

use loom_tests::{Mutation, Op, check, check_caught, race_one_code};

const ASSIGN: Op = Op::Assign("rita");
const REDEEM: Op = Op::Redeem("ann");

#[test]
fn reclaim_and_void_vs_redeem_one_wins() {
    check(
        "reclaim_void_vs_redeem",
        race_one_code(&[ASSIGN], &[REDEEM, Op::Reclaim("rita", true)]),
    );
}

#[test]
fn reclaim_to_pool_vs_redeem() {
    check(
        "reclaim_release_vs_redeem",
        race_one_code(&[ASSIGN], &[REDEEM, Op::Reclaim("rita", false)]),
    );
}

#[test]
fn reclaim_vs_a_new_assignment_of_the_same_recipient() {
    check(
        "reclaim_vs_assign",
        race_one_code(&[ASSIGN], &[Op::Assign("rita"), Op::Reclaim("rita", false)]),
    );
}

#[test]
fn loom_catches_a_reclaim_deciding_on_a_stale_state() {
    check_caught(
        "reclaim_void_vs_redeem",
        Mutation::ReclaimChecksStaleState,
        race_one_code(&[ASSIGN], &[REDEEM, Op::Reclaim("rita", true)]),
    );
}
