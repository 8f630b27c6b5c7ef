//! One user redeems two codes at once in a campaign with
//! `per_user_limit = 1`. Exactly one redemption succeeds and the user's
//! count is 1 (`ClaimCheckThenIncrement`, a limit check and increment in two
//! critical sections, lets both through). Then the same race with a journal
//! that refuses the first redemption record, as a full disk would: the
//! refused request gives its claimed slot back, so the user's count always
//! equals its redemptions, whether the other request got in or was turned
//! away while the slot was held (`RedeemKeepsClaimOnFailure` keeps it).
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom_tests::{
    Mutation, T0, campaign, check, check_caught, check_counters, engine, engine_with, outcome,
};
use redeem_engine::{Journal, JournalError, Lsn, MemoryJournal, Record, RecordKind};

fn race<J: Journal + 'static>(engine: Arc<redeem_engine::Engine<J>>) -> Vec<&'static str> {
    let codes = campaign(&engine, "limit", 2, 1);
    let racers: Vec<_> = codes
        .into_iter()
        .map(|code| {
            let engine = engine.clone();
            loom::thread::spawn(move || outcome(&engine.redeem(&code, "ann", None, T0, None)))
        })
        .collect();
    let mut outcomes: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    outcomes.sort();
    outcomes
}

fn model() {
    let engine = Arc::new(engine());
    assert_eq!(race(engine.clone()), ["ok", "user_limit_reached"]);
    assert_eq!(engine.campaign("limit").unwrap().user_claimed("ann"), 1);
    check_counters(&engine, "limit");
}

/// A journal whose first redemption record is refused.
#[derive(Debug, Default)]
struct RefuseFirstRedemption {
    inner: MemoryJournal,
    refused: AtomicBool,
}

impl Journal for RefuseFirstRedemption {
    fn append(&self, record: &Record<'_>) -> Result<Lsn, JournalError> {
        // SeqCst: a test switch; the order it imposes is part of the model.
        if record.kind() == RecordKind::Redeemed && !self.refused.swap(true, Ordering::SeqCst) {
            return Err(JournalError {
                message: "disk full".into(),
            });
        }
        self.inner.append(record)
    }
}

fn model_refused() {
    let engine = Arc::new(engine_with(RefuseFirstRedemption::default()));
    let outcomes = race(engine.clone());
    assert!(
        outcomes == ["ok", "unavailable"] || outcomes == ["unavailable", "user_limit_reached"],
        "{outcomes:?}"
    );
    let redeemed = outcomes.iter().filter(|o| **o == "ok").count() as u32;
    let claimed = engine.campaign("limit").unwrap().user_claimed("ann");
    assert_eq!(claimed, redeemed, "ann's count after {outcomes:?}");
    check_counters(&engine, "limit");
}

#[test]
fn one_user_gets_one_of_two_codes() {
    check("user_limit", model);
}

#[test]
fn loom_catches_a_claim_in_two_critical_sections() {
    check_caught("user_limit", Mutation::ClaimCheckThenIncrement, model);
}

#[test]
fn a_refused_redemption_gives_its_slot_back() {
    check("user_limit_refused", model_refused);
}

#[test]
fn loom_catches_a_refused_redemption_keeping_its_slot() {
    check_caught(
        "user_limit_refused",
        Mutation::RedeemKeepsClaimOnFailure,
        model_refused,
    );
}
