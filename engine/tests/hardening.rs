//! Regression tests for the holes an adversarial review found in the
//! engine (issue "Hardening"); each test is named after the item's number
//! and fails on the code before its fix.
//! - #2: a hold cannot outlive its campaign's `reservation_ttl_seconds`,
//!   itself at most a week.
//! - #10: replaying a log appends nothing (no phantom `low_stock`).
//! - #12: the per-user table forgets users with nothing claimed.
//! - #15: an over-long test-recipient list is a 4xx refusal, not a record
//!   the log would refuse.

mod common;

use common::{key, refusal_code};
use redeem_engine::{
    CampaignPatch, CampaignSpec, Config, Effect, Engine, MemoryJournal, Refusal, Renderer,
    Timestamp,
};

fn renderer() -> Renderer {
    Box::new(|_: &Effect<'_>| (200, Vec::new()))
}

fn engine() -> Engine<MemoryJournal> {
    Engine::new(MemoryJournal::default(), Config::default(), renderer())
}

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn spec(id: &str, prefix: &str, generate: u64) -> CampaignSpec {
    CampaignSpec {
        id: id.into(),
        prefix: prefix.into(),
        generate,
        per_user_limit: 0,
        ..CampaignSpec::default()
    }
}

#[track_caller]
fn check_invalid<T: std::fmt::Debug>(result: Result<T, Refusal>, field: &str) {
    match result {
        Err(Refusal::InvalidRequest { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected invalid_request on {field}, got {other:?}"),
    }
}

fn first_code(e: &Engine<MemoryJournal>, id: &str) -> String {
    let campaign = e.campaign(id).unwrap();
    let (slot, _) = campaign.states().next().unwrap();
    campaign.code_of(slot)
}

#[test]
fn hardening_2_holds_are_bounded_by_the_campaign() {
    let e = engine();
    let mut week_and_a_second = spec("long", "LNG", 10);
    week_and_a_second.reservation_ttl_seconds = 7 * 24 * 3600 + 1;
    check_invalid(
        e.create_campaign(week_and_a_second, key(1), T0, None),
        "reservation_ttl_seconds",
    );
    let mut short = spec("short", "SHT", 10);
    short.reservation_ttl_seconds = 60;
    e.create_campaign(short, key(2), T0, None).unwrap();
    let code = first_code(&e, "short");
    check_invalid(e.reserve(&code, "u", Some(61), T0, None), "ttl_seconds");
    check_invalid(
        e.reserve(&code, "u", Some(u64::MAX), T0, None),
        "ttl_seconds",
    );
    let held = e.reserve(&code, "u", Some(60), T0, None).unwrap();
    assert_eq!(held.expires_at, Timestamp(T0.0 + 60_000));
}

#[test]
fn hardening_10_replay_appends_nothing() {
    let e = engine();
    let mut low = spec("low", "LOW", 5);
    low.low_stock_threshold = 4;
    e.create_campaign(low, key(3), T0, None).unwrap();
    let campaign = e.campaign("low").unwrap();
    let codes: Vec<String> = campaign
        .states()
        .map(|(s, _)| campaign.code_of(s))
        .collect();
    for (i, code) in codes.iter().take(3).enumerate() {
        e.redeem(code, &format!("u{i}"), None, T0, None).unwrap();
    }
    let records = e.journal().records();
    let low_stock = |records: &[(u64, u8, Vec<u8>)]| {
        records
            .iter()
            .filter(|(_, kind, _)| *kind == redeem_engine::RecordKind::LowStock as u8)
            .count()
    };
    assert_eq!(
        low_stock(&records),
        1,
        "the live run reports low stock once"
    );
    // A restart replays into an engine whose journal is the real log.
    let replayed = engine();
    for (lsn, kind, payload) in &records {
        replayed.apply_encoded(*lsn, *kind, payload).unwrap();
    }
    assert_eq!(replayed.journal().records().len(), 0, "replay appended");
    assert_eq!(replayed.dump_state(), e.dump_state());
}

#[test]
fn hardening_12_users_with_nothing_claimed_are_forgotten() {
    let e = engine();
    let limited = CampaignSpec {
        per_user_limit: 2,
        ..spec("users", "USR", 10)
    };
    e.create_campaign(limited, key(4), T0, None).unwrap();
    e.create_campaign(spec("free", "FRE", 10), key(7), T0, None)
        .unwrap();
    for (id, tracked) in [("users", 1), ("free", 0)] {
        let code = first_code(&e, id);
        for i in 0..1000 {
            let held = e
                .reserve(&code, &format!("fresh-{i}"), None, T0, None)
                .unwrap();
            e.release(held.reservation, T0, None).unwrap();
        }
        let campaign = e.campaign(id).unwrap();
        assert_eq!(campaign.users_tracked(), 0);
        e.redeem(&code, "keeper", None, T0, None).unwrap();
        // Without a per-user limit there is nothing to count.
        assert_eq!(campaign.users_tracked(), tracked, "{id}");
    }
}

#[test]
fn hardening_15_long_test_recipient_lists_are_refused() {
    let e = engine();
    let mut many = spec("many", "MNY", 10);
    many.test_recipients = (0..1001).map(|i| format!("t{i}")).collect();
    check_invalid(e.create_campaign(many, key(5), T0, None), "test_recipients");
    e.create_campaign(spec("few", "FEW", 10), key(6), T0, None)
        .unwrap();
    let patch = CampaignPatch {
        test_recipients: Some((0..262_144).map(|i| format!("{i}")).collect()),
        ..CampaignPatch::default()
    };
    let refused = e.update_campaign("few", patch, T0, None);
    assert_eq!(refusal_code(&refused.unwrap_err()), "invalid_request");
    // Nothing reached the log: a refusal, not a failed append.
    assert!(
        e.journal()
            .records()
            .iter()
            .all(|(_, kind, _)| *kind != redeem_engine::RecordKind::CampaignUpdated as u8)
    );
}

#[test]
fn hardening_4_every_issued_code_keeps_resolving_to_its_campaign() {
    let e = engine();
    let plain = CampaignSpec {
        generate: 2000,
        ..spec("plain", "", 0)
    };
    e.create_campaign(plain, key(7), T0, None).unwrap();
    // Same normalized length as the empty prefix's codes: refused, since
    // some of `plain`'s codes start with Q.
    let mut clash = spec("clash", "Q", 10);
    clash.length = 9;
    assert_eq!(
        refusal_code(&e.create_campaign(clash, key(8), T0, None).unwrap_err()),
        "prefix_conflict"
    );
    e.create_campaign(spec("q", "Q", 10), key(9), T0, None)
        .unwrap();
    let plain = e.campaign("plain").unwrap();
    let mut starting_with_q = 0;
    for (slot, _) in plain.states() {
        let code = plain.code_of(slot);
        starting_with_q += usize::from(code.starts_with('Q'));
        let found = e.resolve(&code).unwrap_or_else(|r| panic!("{code}: {r}"));
        assert_eq!(found.campaign.id(), "plain", "{code}");
    }
    assert!(
        starting_with_q > 0,
        "the test needs codes that start with Q"
    );
    let q = e.campaign("q").unwrap();
    for (slot, _) in q.states() {
        assert_eq!(e.resolve(&q.code_of(slot)).unwrap().campaign.id(), "q");
    }
}

#[test]
fn hardening_20_unknown_is_for_what_could_be_a_code() {
    let e = engine();
    e.create_campaign(spec("g", "GEN", 3), key(10), T0, None)
        .unwrap();
    let code = first_code(&e, "g");
    #[track_caller]
    fn check(e: &Engine<MemoryJournal>, input: &str, expected: &str) {
        let got = e.resolve(input).map(|_| ()).map_err(|r| refusal_code(&r));
        assert_eq!(got, Err(expected), "{input:?}");
    }
    check(&e, "NOPE_x_never", "unknown_code");
    check(&e, "GEN-22222-22222", "unknown_code");
    check(&e, "no spaces allowed?", "malformed_code");
    check(&e, "", "malformed_code");
    // A generated code with one symbol changed fails its check symbol.
    let last = code.chars().last().unwrap();
    let other = if last == '2' { '3' } else { '2' };
    let typo = format!("{}{other}", &code[..code.len() - 1]);
    check(&e, &typo, "malformed_code");
}
