//! Real threads racing on the engine's exactness promises: one code redeemed
//! once however many threads race for it, a user's limit exact however its
//! requests race, a small pool assigned without a code going twice and with
//! exact exhaustion, one recipient racing with itself getting one code.
//! Every race ends with a replay of the journal into a fresh engine, which
//! must re-apply cleanly: the per-code record order matched the real order.

use std::collections::HashSet;
use std::sync::Barrier;

mod common;

use common::{key, refusal_code};

use redeem_engine::{
    CampaignSpec, Config, Effect, Engine, MemoryJournal, Record, Refusal, Renderer, Slot, Timestamp,
};

const NOW: Timestamp = Timestamp(1_800_000_000_000);

fn renderer() -> Renderer {
    Box::new(|effect: &Effect<'_>| (200, effect.lsn.to_string().into_bytes()))
}

fn engine_with(spec: CampaignSpec) -> Engine<MemoryJournal> {
    let engine = Engine::new(MemoryJournal::default(), Config::default(), renderer());
    engine.create_campaign(spec, key(1), NOW, None).unwrap();
    engine
}

fn code(engine: &Engine<MemoryJournal>, index: u64) -> String {
    engine
        .campaign("race")
        .unwrap()
        .code_of(Slot::generated(index))
}

#[track_caller]
fn check_replay(engine: &Engine<MemoryJournal>) {
    let fresh = Engine::new(MemoryJournal::default(), Config::default(), renderer());
    for (lsn, kind, payload) in engine.journal().records() {
        let record = Record::decode(kind, &payload).unwrap();
        fresh.apply_replayed(lsn, &record).unwrap();
    }
    assert_eq!(fresh.dump_state(), engine.dump_state());
}

/// Runs `per_thread` on `threads` threads released together by a barrier.
fn race<T: Send>(threads: usize, per_thread: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                let per_thread = &per_thread;
                scope.spawn(move || {
                    barrier.wait();
                    per_thread(t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn threads_racing_on_one_code_redeem_it_once() {
    for threads in [2, 4, 8, 16] {
        for round in 0..20 {
            let engine = engine_with(CampaignSpec {
                id: "race".into(),
                generate: 4,
                per_user_limit: 0,
                ..CampaignSpec::default()
            });
            let target = code(&engine, (round % 4) as u64);
            let results = race(threads, |t| {
                engine
                    .redeem(&target, &format!("user{t}"), None, NOW, None)
                    .map(|r| r.lsn)
            });
            let wins = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "{threads} threads, round {round}");
            for result in &results {
                if let Err(refusal) = result {
                    assert!(
                        matches!(refusal, Refusal::AlreadyRedeemed { .. }),
                        "{refusal:?}"
                    );
                }
            }
            let stats = engine.campaign("race").unwrap().view(NOW).stats;
            assert_eq!((stats.redeemed, stats.available), (1, 3));
            check_replay(&engine);
        }
    }
}

#[test]
fn one_user_racing_over_many_codes_gets_exactly_its_limit() {
    for limit in [1, 3, 7] {
        let engine = engine_with(CampaignSpec {
            id: "race".into(),
            generate: 200,
            per_user_limit: limit,
            ..CampaignSpec::default()
        });
        let codes: Vec<String> = (0..200).map(|i| code(&engine, i)).collect();
        let threads = 8;
        let results = race(threads, |t| {
            codes
                .iter()
                .skip(t)
                .step_by(threads)
                .map(|c| engine.redeem(c, "greedy", None, NOW, None))
                .collect::<Vec<_>>()
        });
        let all: Vec<_> = results.into_iter().flatten().collect();
        let wins = all.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, limit as usize);
        assert!(
            all.iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| refusal_code(e) == "user_limit_reached")
        );
        let campaign = engine.campaign("race").unwrap();
        assert_eq!(campaign.user_claimed("greedy"), limit);
        assert_eq!(campaign.view(NOW).stats.redeemed, u64::from(limit));
        check_replay(&engine);
    }
}

#[test]
fn reservations_and_redemptions_by_one_user_respect_the_limit() {
    let engine = engine_with(CampaignSpec {
        id: "race".into(),
        generate: 64,
        per_user_limit: 2,
        ..CampaignSpec::default()
    });
    let codes: Vec<String> = (0..64).map(|i| code(&engine, i)).collect();
    let results = race(4, |t| {
        let mut ok = 0;
        for c in codes.iter().skip(t).step_by(4) {
            let result = if t % 2 == 0 {
                engine.reserve(c, "u", None, NOW, None).map(|_| ())
            } else {
                engine.redeem(c, "u", None, NOW, None).map(|_| ())
            };
            ok += usize::from(result.is_ok());
        }
        ok
    });
    assert_eq!(results.iter().sum::<usize>(), 2);
    assert_eq!(engine.campaign("race").unwrap().user_claimed("u"), 2);
    check_replay(&engine);
}

#[test]
fn recipients_racing_for_a_small_pool_never_share_a_code() {
    let pool = 50;
    let engine = engine_with(CampaignSpec {
        id: "race".into(),
        generate: pool,
        ..CampaignSpec::default()
    });
    let threads = 8;
    let per_thread = 20;
    let results = race(threads, |t| {
        (0..per_thread)
            .map(|i| engine.assign("race", &format!("r{t}-{i}"), NOW, None))
            .collect::<Vec<_>>()
    });
    let all: Vec<_> = results.into_iter().flatten().collect();
    let codes: Vec<_> = all
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|a| a.code.clone())
        .collect();
    assert_eq!(codes.len(), pool as usize, "exhaustion is exact");
    assert_eq!(
        codes.iter().collect::<HashSet<_>>().len(),
        codes.len(),
        "no code assigned twice"
    );
    assert!(
        all.iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| refusal_code(e) == "pool_exhausted")
    );
    let stats = engine.campaign("race").unwrap().view(NOW).stats;
    assert_eq!((stats.assigned, stats.available), (pool, 0));
    check_replay(&engine);
}

#[test]
fn one_recipient_racing_with_itself_gets_one_code() {
    for limit in [1u32, 2] {
        let engine = engine_with(CampaignSpec {
            id: "race".into(),
            generate: 10,
            per_recipient_limit: limit,
            ..CampaignSpec::default()
        });
        let results = race(8, |_| engine.assign("race", "same", NOW, None).unwrap());
        let new: Vec<_> = results.iter().filter(|a| a.new).collect();
        assert_eq!(new.len(), limit as usize);
        let distinct: HashSet<_> = results.iter().map(|a| a.code.clone()).collect();
        assert_eq!(distinct.len(), limit as usize);
        assert_eq!(
            engine.campaign("race").unwrap().view(NOW).stats.assigned,
            u64::from(limit)
        );
        check_replay(&engine);
    }
}

#[test]
fn redeem_rollback_void_storm_keeps_log_order() {
    let engine = engine_with(CampaignSpec {
        id: "race".into(),
        generate: 4,
        per_user_limit: 0,
        ..CampaignSpec::default()
    });
    let codes: Vec<String> = (0..4).map(|i| code(&engine, i)).collect();
    race(6, |t| {
        for i in 0..300 {
            let c = &codes[(i + t) % 4];
            let _ = match (i + t) % 5 {
                0 | 1 => engine
                    .redeem(c, &format!("u{t}"), None, NOW, None)
                    .map(|_| ()),
                2 | 3 => engine.rollback(c, NOW, None).map(|_| ()),
                _ if i % 97 == 0 => engine.void(c, NOW, None).map(|_| ()),
                _ => engine
                    .reserve(c, &format!("u{t}"), None, NOW, None)
                    .map(|_| ()),
            };
        }
    });
    check_replay(&engine);
}
