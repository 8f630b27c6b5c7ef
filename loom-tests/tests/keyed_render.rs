//! A keyed release races the holder's own redemption of the code. The
//! release's stored response is rendered while the code is still held, so
//! it shows the code as the release left it (available), never the
//! redemption that may follow at once; and a replay of the log renders the
//! same bytes (`check_replay` compares the stored responses too). With
//! `RenderAfterPublish` the response can show `redeemed`, and the replayed
//! one differs.
#![cfg(loom)]

use std::sync::Arc;

use loom_tests::{Mutation, T0, campaign, check, check_caught};
use redeem_engine::{Begin, Config, Effect, Engine, IdemKey, MemoryJournal, Record, Renderer};

const KEY: IdemKey<'static> = IdemKey {
    key: "token-1:release-1",
    fingerprint: 0xfeed,
};

/// Stores what the state of the code was just after the record.
fn renderer() -> Renderer {
    Box::new(|effect: &Effect<'_>| {
        let state = effect.status.map_or("none", |s| s.state);
        (
            200,
            format!("{}:{state}", effect.record.kind().event_name()).into_bytes(),
        )
    })
}

fn engine() -> Engine<MemoryJournal> {
    Engine::new(MemoryJournal::default(), Config::default(), renderer())
}

fn model() {
    let engine = Arc::new(engine());
    let code = campaign(&engine, "keyed", 1, 0).remove(0);
    let held = engine.reserve(&code, "ann", None, T0, None).unwrap();
    let redeemer = {
        let (engine, code) = (engine.clone(), code.clone());
        loom::thread::spawn(move || engine.redeem(&code, "ann", None, T0, None).is_ok())
    };
    assert_eq!(engine.begin_idempotent(KEY, T0).unwrap(), Begin::Fresh);
    let released = engine.release(held.reservation, T0, Some(KEY)).is_ok();
    let redeemed = redeemer.join().unwrap();
    assert!(released || redeemed, "one of them takes the hold");
    if released {
        let Ok(Begin::Replay(stored)) = engine.begin_idempotent(KEY, T0) else {
            panic!("the release stored its response");
        };
        assert_eq!(
            &*stored.body, b"released:available",
            "the stored release response"
        );
    }
    // The replayed engine renders the same stored bytes.
    let fresh = self::engine();
    for (lsn, kind, payload) in engine.journal().records() {
        let record = Record::decode(kind, &payload).expect("record decodes");
        fresh
            .apply_replayed(lsn, &record)
            .expect("record re-applies");
    }
    assert_eq!(
        fresh.dump_state(),
        engine.dump_state(),
        "replayed state differs"
    );
}

#[test]
fn a_keyed_response_shows_its_own_transition() {
    check("keyed release vs redeem", model);
}

#[test]
fn loom_catches_rendering_after_publish() {
    check_caught(
        "keyed release vs redeem",
        Mutation::RenderAfterPublish,
        model,
    );
}
