//! Two requests with one idempotency key arrive at once. The key's table
//! entry is taken under its shard lock, so exactly one request is `Fresh`
//! and executes (one redemption record in the journal); the other is told
//! `Replay` with the stored response, or `InFlight`, and then, asking again
//! once the first has completed, `Replay`. Both answer with the same
//! response. With `IdempotencyInsertsWithoutRecheck` both can be `Fresh`.
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{Mutation, T0, campaign, check, check_caught, engine, render};
use redeem_engine::{Begin, IdemKey, RecordKind};

const KEY: IdemKey<'static> = IdemKey {
    key: "token-1:key-1",
    fingerprint: 0x5eed,
};

/// The response to a request, if it executed or replayed; `None` while
/// another request with its key is in flight.
type Answer = Option<(u16, Vec<u8>)>;

fn request(
    engine: &redeem_engine::Engine<redeem_engine::MemoryJournal>,
    code: &str,
) -> (bool, Answer) {
    match engine.begin_idempotent(KEY, T0).expect("table has room") {
        Begin::Fresh => {
            let redeemed = engine
                .redeem(code, "ann", None, T0, Some(KEY))
                .expect("the only execution redeems the code");
            let body = render("redeemed", redeemed.lsn, Some(&redeemed.code));
            (true, Some((201, body.into_bytes())))
        }
        Begin::Replay(stored) => (false, Some((stored.status, stored.body.to_vec()))),
        Begin::InFlight => (false, None),
        Begin::Mismatch => panic!("same key, same request: no mismatch"),
    }
}

fn model() {
    let engine = Arc::new(engine());
    let code = campaign(&engine, "idem", 1, 1).remove(0);
    let other = {
        let (engine, code) = (engine.clone(), code.clone());
        loom::thread::spawn(move || request(&engine, &code))
    };
    let mine = request(&engine, &code);
    let other = other.join().unwrap();
    let fresh = [&mine, &other].iter().filter(|(fresh, _)| *fresh).count();
    assert_eq!(fresh, 1, "requests that executed");
    // The request that was in flight asks again, after the first completed.
    let answers: Vec<_> = [mine, other]
        .into_iter()
        .map(|(_, answer)| answer.or_else(|| request(&engine, &code).1))
        .collect();
    assert!(
        answers[0].is_some(),
        "an in-flight request asked again is replayed"
    );
    assert_eq!(answers[0], answers[1], "both answer the same");
    let redemptions = engine
        .journal()
        .records()
        .iter()
        .filter(|(_, kind, _)| *kind == RecordKind::Redeemed as u8)
        .count();
    assert_eq!(redemptions, 1, "executions");
}

#[test]
fn one_key_executes_once() {
    check("idempotency", model);
}

#[test]
fn loom_catches_an_insert_without_a_recheck() {
    check_caught(
        "idempotency",
        Mutation::IdempotencyInsertsWithoutRecheck,
        model,
    );
}
