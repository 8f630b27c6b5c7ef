//! The history ring is fed by record times, so replaying a journal into a
//! fresh engine rebuilds the same points the live engine kept (failed
//! attempts aside: guesses are not logged), the points' counts agree with
//! `stats` at every interval end, and a restored snapshot brings back the
//! history it was taken with (its own entries, not the out-of-order times
//! of its synthetic records).

// Only `key` of the shared helpers is needed here.
#[allow(dead_code)]
mod common;

use common::key;
use redeem_engine::{
    CampaignSpec, Config, Effect, Engine, HistoryEvent, MemoryJournal, Point, Record, Renderer,
    Slot, Timestamp,
};

fn renderer() -> Renderer {
    Box::new(|_: &Effect<'_>| (200, Vec::new()))
}

fn engine() -> Engine<MemoryJournal> {
    Engine::new(MemoryJournal::default(), Config::default(), renderer())
}

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn at(seconds: u64) -> Timestamp {
    Timestamp(T0.0 + seconds * 1000)
}

fn replayed(live: &Engine<MemoryJournal>) -> Engine<MemoryJournal> {
    let fresh = engine();
    for (lsn, kind, payload) in &live.journal().records() {
        let record = Record::decode(*kind, payload).expect("record decodes");
        fresh
            .apply_replayed(*lsn, &record)
            .expect("record re-applies");
    }
    fresh
}

/// The points with failed attempts left out, which replay cannot know.
fn logged_part(points: Vec<Point>) -> Vec<Point> {
    points
        .into_iter()
        .map(|mut p| {
            p.events[HistoryEvent::FailedAttempt as usize] = 0;
            p
        })
        .collect()
}

#[test]
fn replay_rebuilds_the_live_points() {
    let live = engine();
    let spec = CampaignSpec {
        id: "spring".into(),
        prefix: "SPR".into(),
        generate: 100,
        ..CampaignSpec::default()
    };
    live.create_campaign(spec, key(1), at(0), None).unwrap();
    let campaign = live.campaign("spring").unwrap();
    let code = |i: u64| campaign.code_of(Slot::generated(i));
    // Redemptions in the first interval and the third, an assignment in
    // the fourth, nothing in the second, a guess in the fourth.
    for i in 0..3 {
        live.redeem(&code(i), &format!("u{i}"), None, at(2 + i), None)
            .unwrap();
    }
    live.redeem(&code(3), "u3", None, at(25), None).unwrap();
    live.assign("spring", "a@example.com", at(31), None)
        .unwrap();
    let guess = code(1_000_000);
    assert!(live.status(&guess, None, at(33)).is_err());

    let now = at(36);
    let points = campaign.history(T0, now);
    let summary: Vec<([u64; 5], [u64; 3])> = points.iter().map(|p| (p.counts, p.events)).collect();
    assert_eq!(
        summary,
        [
            ([97, 0, 0, 3, 0], [3, 0, 0]),
            ([97, 0, 0, 3, 0], [0, 0, 0]),
            ([96, 0, 0, 4, 0], [1, 0, 0]),
            ([95, 1, 0, 4, 0], [0, 1, 1]),
        ]
    );
    let stats = campaign.stats(now);
    let last = points.last().unwrap();
    assert_eq!(
        last.counts,
        [
            stats.available,
            stats.assigned,
            stats.reserved,
            stats.redeemed,
            stats.voided
        ]
    );

    let fresh = replayed(&live);
    let rebuilt = fresh.campaign("spring").unwrap().history(T0, now);
    assert_eq!(logged_part(rebuilt), logged_part(points));
}

#[test]
fn a_restored_snapshot_keeps_the_history() {
    let live = engine();
    let spec = CampaignSpec {
        id: "fall".into(),
        generate: 10,
        ..CampaignSpec::default()
    };
    live.create_campaign(spec, key(2), at(0), None).unwrap();
    let campaign = live.campaign("fall").unwrap();
    for (slot, second) in [(0, 5), (1, 25), (2, 27), (3, 61)] {
        let code = campaign.code_of(Slot::generated(slot));
        let user = format!("u{slot}");
        live.redeem(&code, &user, None, at(second), None).unwrap();
    }
    let before = campaign.history(T0, at(100));
    assert!(before.len() > 5, "{before:?}");
    let restored = engine();
    restored.restore(&live.snapshot(4, at(62))).unwrap();
    let after = restored.campaign("fall").unwrap().history(T0, at(100));
    assert_eq!(after, before);
    assert_eq!(after.last().unwrap().counts, [6, 0, 0, 4, 0]);
}
