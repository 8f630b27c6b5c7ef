//! Every engine operation's happy path and every refusal it can give, driven
//! through the public API with an in-memory journal; each test ends by
//! replaying the journal into a fresh engine and comparing the state dumps,
//! so every record a scenario emits is also proven to re-apply exactly.

mod common;

use common::{key, refusal_code};
use redeem_engine::codec::ALPHABET;
use redeem_engine::{
    Begin, CampaignPatch, CampaignSpec, Config, Effect, Engine, IdemKey, MemoryJournal,
    PublicState, Record, Refusal, Renderer, Timestamp, WebhookPatch, WebhookSpec, WebhookStatus,
};

fn renderer() -> Renderer {
    Box::new(|effect: &Effect<'_>| {
        (
            201,
            format!(
                "{}:{}:{:?}",
                effect.lsn,
                effect.record.kind().event_name(),
                effect.status.map(|s| &s.code)
            )
            .into_bytes(),
        )
    })
}

fn engine() -> Engine<MemoryJournal> {
    Engine::new(MemoryJournal::default(), Config::default(), renderer())
}

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn at(seconds: u64) -> Timestamp {
    Timestamp(T0.0 + seconds * 1000)
}

fn spec(id: &str, prefix: &str, generate: u64) -> CampaignSpec {
    CampaignSpec {
        id: id.into(),
        prefix: prefix.into(),
        generate,
        ..CampaignSpec::default()
    }
}

/// Replays `engine`'s journal into a fresh engine and checks equal state.
#[track_caller]
fn check_replay(engine: &Engine<MemoryJournal>) {
    let records = engine.journal().records();
    // Every split point: replay a prefix, snapshot it, restore the snapshot
    // into a fresh engine, replay the rest there. All must end equal.
    for split in [0, records.len() / 3, records.len() / 2, records.len()] {
        let prefix = self::engine();
        for (lsn, kind, payload) in &records[..split] {
            let record = Record::decode(*kind, payload).expect("record decodes");
            prefix
                .apply_replayed(*lsn, &record)
                .expect("record re-applies");
        }
        let snapshot = prefix.snapshot(split as u64, T0);
        let restored = self::engine();
        restored.restore(&snapshot).expect("snapshot restores");
        assert_eq!(
            restored.dump_state(),
            prefix.dump_state(),
            "snapshot at {split}"
        );
        for (lsn, kind, payload) in &records[split..] {
            let record = Record::decode(*kind, payload).expect("record decodes");
            restored
                .apply_replayed(*lsn, &record)
                .expect("record re-applies after a snapshot");
        }
        assert_eq!(
            restored.dump_state(),
            engine.dump_state(),
            "split at {split}"
        );
    }
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let e = engine();
    e.create_campaign(spec("s", "S", 10), key(1), T0, None)
        .unwrap();
    let c = codes(&e, "s", 1);
    e.redeem(&c[0], "u", None, T0, None).unwrap();
    let snapshot = e.snapshot(2, T0);
    for cut in [1, snapshot.len() / 2, snapshot.len() - 1] {
        assert!(engine().restore(&snapshot[..cut]).is_err(), "cut at {cut}");
    }
    assert!(engine().restore(&[9]).is_err(), "unknown version");
    // Restoring twice would duplicate the campaign: refused.
    let target = engine();
    target.restore(&snapshot).unwrap();
    assert!(target.restore(&snapshot).is_err());
}

/// The codes of a campaign's first `n` generated indexes.
fn codes(engine: &Engine<MemoryJournal>, id: &str, n: u64) -> Vec<String> {
    let campaign = engine.campaign(id).unwrap();
    (0..n)
        .map(|i| campaign.code_of(redeem_engine::Slot::generated(i)))
        .collect()
}

#[track_caller]
fn check_refusal<T: std::fmt::Debug>(result: Result<T, Refusal>, code: &str) {
    match result {
        Err(refusal) => assert_eq!(refusal_code(&refusal), code, "{refusal}"),
        Ok(value) => panic!("expected {code}, got {value:?}"),
    }
}

#[test]
fn create_validates_and_refuses_conflicts() {
    let e = engine();
    let view = e
        .create_campaign(spec("spring", "SPR", 100), key(2), T0, None)
        .unwrap();
    assert_eq!(view.stats.total, 100);
    assert_eq!(view.stats.available, 100);
    check_refusal(
        e.create_campaign(spec("spring", "OTHER", 1), key(3), T0, None),
        "campaign_exists",
    );
    check_refusal(
        e.create_campaign(spec("b", "SP", 1), key(4), T0, None),
        "prefix_conflict",
    );
    check_refusal(
        e.create_campaign(spec("c", "SPRX", 1), key(5), T0, None),
        "prefix_conflict",
    );
    e.create_campaign(spec("d", "", 1), key(6), T0, None)
        .unwrap();
    check_refusal(
        e.create_campaign(spec("e", "", 1), key(7), T0, None),
        "prefix_conflict",
    );
    check_refusal(
        e.create_campaign(spec("Bad_Id", "X", 1), key(8), T0, None),
        "invalid_request",
    );
    check_refusal(
        e.create_campaign(spec("x", "lower", 1), key(9), T0, None),
        "invalid_request",
    );
    check_refusal(
        e.create_campaign(
            CampaignSpec {
                length: 5,
                ..spec("x", "X", 1)
            },
            key(10),
            T0,
            None,
        ),
        "invalid_request",
    );
    // 32^6 = 1_073_741_824: at most 1073 codes keep guesses under 1e-6.
    check_refusal(
        e.create_campaign(
            CampaignSpec {
                length: 6,
                ..spec("x", "X", 1100)
            },
            key(11),
            T0,
            None,
        ),
        "code_space_too_small",
    );
    // Checked by the engine itself, so replay and library callers get it too.
    let no_recipients = e.create_campaign(
        CampaignSpec {
            per_recipient_limit: 0,
            ..spec("x", "X", 1)
        },
        key(13),
        T0,
        None,
    );
    match no_recipients {
        Err(Refusal::InvalidRequest { field, .. }) => assert_eq!(field, "per_recipient_limit"),
        other => panic!("expected invalid_request, got {other:?}"),
    }
    e.create_campaign(
        CampaignSpec {
            length: 6,
            ..spec("x", "X", 1000)
        },
        key(12),
        T0,
        None,
    )
    .unwrap();
    check_refusal(e.generate("x", 100, T0, None), "code_space_too_small");
    assert_eq!(e.campaigns().count(), 3);
    check_replay(&e);
}

#[test]
fn redeem_once_then_refuse_with_state() {
    let e = engine();
    e.create_campaign(
        CampaignSpec {
            per_user_limit: 0,
            ..spec("s", "S", 10)
        },
        key(13),
        T0,
        None,
    )
    .unwrap();
    let code = &codes(&e, "s", 1)[0];
    assert!(code.starts_with("S-"), "{code}");
    let redeemed = e
        .redeem(&code.to_lowercase(), "alice", Some("o-1"), at(1), None)
        .unwrap();
    assert_eq!(redeemed.code, *code);
    assert_eq!(redeemed.lsn, 2);
    match e.redeem(code, "bob", None, at(2), None) {
        Err(Refusal::AlreadyRedeemed { redeemed_at, .. }) => assert_eq!(redeemed_at, at(1)),
        other => panic!("{other:?}"),
    }
    let status = e.status(code, None, at(3)).unwrap();
    assert_eq!(status.state, "redeemed");
    assert_eq!(status.redeemed_by.as_deref(), Some("alice"));
    assert_eq!(status.order.as_deref(), Some("o-1"));
    // Rollback returns it; a second rollback has nothing to undo.
    assert_eq!(e.rollback(code, at(4), None).unwrap().state, "available");
    check_refusal(e.rollback(code, at(5), None), "not_redeemed");
    e.redeem(code, "bob", None, at(6), None).unwrap();
    check_replay(&e);
}

#[test]
fn malformed_unknown_and_guessing() {
    let e = engine();
    e.create_campaign(spec("s", "S", 10), key(14), T0, None)
        .unwrap();
    let code = codes(&e, "s", 1)[0].clone();
    // A typo in the body: malformed before any lookup.
    let mut typo: Vec<u8> = code.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == ALPHABET[0] {
        ALPHABET[1]
    } else {
        ALPHABET[0]
    };
    let typo = String::from_utf8(typo).unwrap();
    check_refusal(e.redeem(&typo, "mallory", None, T0, None), "malformed_code");
    check_refusal(e.redeem("", "mallory", None, T0, None), "malformed_code");
    check_refusal(
        e.redeem("NOPE-NOPE", "mallory", None, T0, None),
        "unknown_code",
    );
    // Failures change nothing (the server's limiter throttles callers).
    assert_eq!(e.status(&code, None, at(1)).unwrap().state, "available");
    e.redeem(&code, "alice", None, at(1), None).unwrap();
    check_refusal(
        e.redeem(&code, "mallory", None, at(61), None),
        "already_redeemed",
    );
    // An unknown generated index: a valid-looking code past the issued
    // count. It is a guess, counted against the campaign; past the
    // campaign's alert level one `guessing_suspected` a minute is logged.
    let campaign = e.campaign("s").unwrap();
    let beyond = campaign.code_of(redeem_engine::Slot::generated(10));
    check_refusal(e.status(&beyond, None, T0), "unknown_code");
    let alerts = |e: &Engine<MemoryJournal>| {
        e.journal()
            .records()
            .iter()
            .filter(|(_, kind, _)| *kind == redeem_engine::RecordKind::GuessingSuspected as u8)
            .count()
    };
    let patch = CampaignPatch {
        guessing_alert_per_minute: Some(3),
        ..CampaignPatch::default()
    };
    e.update_campaign("s", patch, at(120), None).unwrap();
    for i in 0..10 {
        check_refusal(e.status(&beyond, None, at(120 + i)), "unknown_code");
    }
    assert_eq!(alerts(&e), 1, "one alert in the minute");
    assert_eq!(campaign.guessing_alerts(), 1);
    for i in 0..4 {
        check_refusal(e.status(&beyond, None, at(180 + i)), "unknown_code");
    }
    assert_eq!(alerts(&e), 2, "one more in the next minute");
    // Typos are not guesses: the check symbol caught them.
    for i in 0..10 {
        check_refusal(e.status(&typo, None, at(240 + i)), "malformed_code");
    }
    assert_eq!(alerts(&e), 2);
    check_replay(&e);
}

#[test]
fn per_user_limit_and_window_and_pause() {
    let e = engine();
    e.create_campaign(
        CampaignSpec {
            per_user_limit: 2,
            starts_at: Some(at(10)),
            expires_at: Some(at(100)),
            ..spec("s", "S", 10)
        },
        key(15),
        T0,
        None,
    )
    .unwrap();
    let c = codes(&e, "s", 4);
    check_refusal(
        e.redeem(&c[0], "u", None, at(5), None),
        "campaign_not_started",
    );
    assert_eq!(e.status(&c[0], None, at(5)).unwrap().state, "not_started");
    e.redeem(&c[0], "u", None, at(10), None).unwrap();
    e.redeem(&c[1], "u", None, at(11), None).unwrap();
    match e.redeem(&c[2], "u", None, at(12), None) {
        Err(Refusal::UserLimitReached { limit }) => assert_eq!(limit, 2),
        other => panic!("{other:?}"),
    }
    // The refused attempt gave its slot back: a rollback makes room for one.
    e.rollback(&c[0], at(13), None).unwrap();
    e.redeem(&c[2], "u", None, at(14), None).unwrap();
    e.update_campaign(
        "s",
        CampaignPatch {
            paused: Some(true),
            ..Default::default()
        },
        at(15),
        None,
    )
    .unwrap();
    check_refusal(e.redeem(&c[3], "v", None, at(16), None), "campaign_paused");
    check_refusal(e.assign("s", "r", at(16), None), "campaign_paused");
    e.update_campaign(
        "s",
        CampaignPatch {
            paused: Some(false),
            ..Default::default()
        },
        at(17),
        None,
    )
    .unwrap();
    check_refusal(e.redeem(&c[3], "v", None, at(100), None), "code_expired");
    assert_eq!(e.status(&c[3], None, at(100)).unwrap().state, "expired");
    // A redeemed code keeps reporting redeemed after the campaign ends.
    assert_eq!(e.status(&c[1], None, at(200)).unwrap().state, "redeemed");
    check_refusal(
        e.update_campaign(
            "s",
            CampaignPatch {
                expires_at: Some(Some(at(1))),
                ..Default::default()
            },
            at(18),
            None,
        ),
        "invalid_request",
    );
    check_refusal(
        e.update_campaign("nope", CampaignPatch::default(), at(18), None),
        "unknown_campaign",
    );
    check_refusal(e.redeem(&c[3], "", None, at(20), None), "invalid_request");
    check_refusal(
        e.redeem(&c[3], &"x".repeat(257), None, at(20), None),
        "invalid_request",
    );
    check_replay(&e);
}

#[test]
fn assignment_recipients_tests_and_exhaustion() {
    let e = engine();
    e.create_campaign(
        CampaignSpec {
            test_recipients: vec!["qa".into()],
            code_valid_seconds_after_assignment: Some(30),
            low_stock_threshold: 2,
            ..spec("s", "S", 4)
        },
        key(16),
        T0,
        None,
    )
    .unwrap();
    let a = e.assign("s", "ann", T0, None).unwrap();
    assert!(a.new);
    assert_eq!(a.state, PublicState::Assigned);
    let again = e.assign("s", "ann", at(1), None).unwrap();
    assert!(!again.new);
    assert_eq!(again.code, a.code);
    let t1 = e.assign("s", "qa", at(1), None).unwrap();
    let t2 = e.assign("s", "qa", at(1), None).unwrap();
    assert_ne!(
        t1.code, t2.code,
        "test recipients get a fresh code each time"
    );
    let view = e.campaign("s").unwrap().view(at(1));
    assert_eq!(view.stats.test_assignments, 2);
    assert_eq!(view.stats.assigned, 3);
    assert!(view.stats.low_stock);
    e.assign("s", "bob", at(2), None).unwrap();
    check_refusal(e.assign("s", "cy", at(2), None), "pool_exhausted");
    // The per-code deadline: 30 s after assignment.
    let status = e.status(&a.code, None, at(29)).unwrap();
    assert_eq!(
        (status.state, status.expires_at),
        ("assigned", Some(at(30)))
    );
    assert_eq!(status.recipient.as_deref(), Some("ann"));
    check_refusal(e.redeem(&a.code, "ann", None, at(30), None), "code_expired");
    e.redeem(&t1.code, "qa", None, at(3), None).unwrap();
    assert_eq!(e.rollback(&t1.code, at(4), None).unwrap().state, "assigned");
    check_refusal(e.assign("nope", "x", T0, None), "unknown_campaign");
    let low_stock = e
        .journal()
        .records()
        .iter()
        .filter(|(_, k, _)| *k == redeem_engine::RecordKind::LowStock as u8)
        .count();
    assert_eq!(low_stock, 1, "one low-stock event while stock stays low");
    check_replay(&e);
}

#[test]
fn reservations_confirm_release_expire() {
    let e = engine();
    e.create_campaign(
        CampaignSpec {
            per_user_limit: 1,
            reservation_ttl_seconds: 60,
            ..spec("s", "S", 10)
        },
        key(17),
        T0,
        None,
    )
    .unwrap();
    let c = codes(&e, "s", 4);
    let r = e.reserve(&c[0], "u", None, T0, None).unwrap();
    assert_eq!(r.expires_at, at(60));
    check_refusal(e.reserve(&c[0], "v", None, at(1), None), "code_reserved");
    check_refusal(e.redeem(&c[0], "v", None, at(1), None), "code_reserved");
    // The hold counts against the user's limit.
    check_refusal(
        e.redeem(&c[1], "u", None, at(1), None),
        "user_limit_reached",
    );
    assert_eq!(
        e.reserve(&c[0], "u", None, at(2), None)
            .unwrap()
            .reservation,
        r.reservation
    );
    let redeemed = e.confirm(r.reservation, Some("o"), at(3), None).unwrap();
    assert_eq!(redeemed.user, "u");
    check_refusal(
        e.confirm(r.reservation, None, at(4), None),
        "unknown_reservation",
    );
    e.rollback(&c[0], at(5), None).unwrap();

    // Release returns the code; the user may then hold another.
    let r2 = e.reserve(&c[1], "u", Some(10), at(6), None).unwrap();
    assert_eq!(
        e.release(r2.reservation, at(7), None).unwrap().state,
        "available"
    );
    check_refusal(
        e.release(r2.reservation, at(8), None),
        "unknown_reservation",
    );

    // The holder may redeem directly, consuming the hold.
    let _r3 = e.reserve(&c[2], "u", Some(10), at(9), None).unwrap();
    e.redeem(&c[2], "u", None, at(10), None).unwrap();
    e.rollback(&c[2], at(11), None).unwrap();

    // Expiry: the sweeper releases a hold once its deadline passes.
    let r4 = e.reserve(&c[3], "u", Some(10), at(20), None).unwrap();
    assert_eq!(e.sweep(at(29)).unwrap(), 0);
    assert_eq!(e.sweep(at(30)).unwrap(), 1);
    assert_eq!(e.status(&c[3], None, at(30)).unwrap().state, "available");
    check_refusal(
        e.confirm(r4.reservation, None, at(31), None),
        "reservation_expired",
    );
    // An expired hold not yet swept is refused on confirm and released.
    let r5 = e.reserve(&c[3], "u", Some(10), at(40), None).unwrap();
    check_refusal(
        e.confirm(r5.reservation, None, at(50), None),
        "reservation_expired",
    );
    assert_eq!(e.status(&c[3], None, at(50)).unwrap().state, "available");
    check_refusal(
        e.reserve(&c[3], "u", Some(0), at(50), None),
        "invalid_request",
    );
    check_replay(&e);
}

#[test]
fn void_is_final_and_frees_a_hold() {
    let e = engine();
    e.create_campaign(spec("s", "S", 10), key(18), T0, None)
        .unwrap();
    let c = codes(&e, "s", 3);
    let r = e.reserve(&c[0], "u", None, T0, None).unwrap();
    assert_eq!(e.void(&c[0], at(1), None).unwrap().state, "voided");
    check_refusal(
        e.confirm(r.reservation, None, at(2), None),
        "unknown_reservation",
    );
    check_refusal(e.redeem(&c[0], "v", None, at(2), None), "code_voided");
    // Voiding again reports the state; the user got the hold's slot back.
    assert_eq!(e.void(&c[0], at(3), None).unwrap().state, "voided");
    e.redeem(&c[1], "u", None, at(4), None).unwrap();
    check_refusal(e.void(&c[1], at(5), None), "already_redeemed");
    check_replay(&e);
}

#[test]
fn imports_count_duplicates_and_rejects() {
    let e = engine();
    e.create_campaign(spec("a", "A", 0), key(19), T0, None)
        .unwrap();
    e.create_campaign(spec("b", "B", 0), key(20), T0, None)
        .unwrap();
    let mut importer = e.importer("a").unwrap();
    let lines = [
        "zz-top",
        "ZZTOP",
        "",
        "bad code!",
        "x".repeat(65).as_str(),
        "ok_1",
        "ok_1",
    ]
    .map(String::from);
    for (i, line) in lines.iter().enumerate() {
        importer.push(i as u64 + 1, line, T0).unwrap();
    }
    let report = importer.finish(T0).unwrap();
    assert_eq!((report.added, report.duplicates, report.total), (2, 2, 2));
    assert_eq!(
        report.rejected,
        vec![(4, "invalid_code"), (5, "invalid_code")]
    );
    let mut importer = e.importer("b").unwrap();
    importer.push(1, "ZZTOP", T0).unwrap();
    importer.push(2, "fresh", T0).unwrap();
    let report = importer.finish(T0).unwrap();
    assert_eq!(report.rejected, vec![(1, "exists_in_other_campaign")]);
    assert_eq!(report.added, 1);
    // Imported codes resolve case-insensitively, hyphens ignored.
    let r = e.redeem("z-z-t-o-p", "u", None, T0, None).unwrap();
    assert_eq!((r.code.as_str(), r.campaign), ("ZZTOP", "a"));
    let a = e.assign("b", "rec", T0, None).unwrap();
    assert_eq!(a.code, "FRESH");
    // A batch bigger than one record.
    let mut importer = e.importer("b").unwrap();
    for i in 0..3000 {
        importer.push(i + 1, &format!("code{i}"), T0).unwrap();
    }
    assert_eq!(importer.finish(T0).unwrap().total, 3001);
    check_replay(&e);
}

#[test]
fn idempotent_transitions_store_their_response_with_the_record() {
    let e = engine();
    e.create_campaign(spec("s", "S", 10), key(21), T0, None)
        .unwrap();
    let c = codes(&e, "s", 2);
    let key = IdemKey {
        key: "tok:k1",
        fingerprint: 42,
    };
    assert_eq!(e.begin_idempotent(key, T0).unwrap(), Begin::Fresh);
    assert_eq!(e.begin_idempotent(key, T0).unwrap(), Begin::InFlight);
    let r = e.redeem(&c[0], "u", None, T0, Some(key)).unwrap();
    let Begin::Replay(stored) = e.begin_idempotent(key, at(1)).unwrap() else {
        panic!()
    };
    assert_eq!(stored.lsn, r.lsn);
    assert_eq!(
        &*stored.body,
        format!("{}:redeemed:Some({:?})", r.lsn, c[0]).as_bytes()
    );
    assert_eq!(
        e.begin_idempotent(
            IdemKey {
                fingerprint: 43,
                ..key
            },
            at(1)
        )
        .unwrap(),
        Begin::Mismatch
    );
    // A refusal is stored by its own record.
    let key2 = IdemKey {
        key: "tok:k2",
        fingerprint: 7,
    };
    assert_eq!(e.begin_idempotent(key2, T0).unwrap(), Begin::Fresh);
    check_refusal(
        e.redeem(&c[0], "v", None, T0, Some(key2)),
        "already_redeemed",
    );
    e.store_response(key2, 409, b"{\"error\":1}", T0).unwrap();
    // Replay rebuilds both responses byte for byte.
    check_replay(&e);
}

#[test]
fn a_failing_journal_changes_nothing() {
    let e = engine();
    e.create_campaign(
        CampaignSpec {
            per_user_limit: 1,
            ..spec("s", "S", 10)
        },
        key(22),
        T0,
        None,
    )
    .unwrap();
    let c = codes(&e, "s", 2);
    let before = e.dump_state();
    e.journal().set_failing(true);
    check_refusal(e.redeem(&c[0], "u", None, T0, None), "unavailable");
    check_refusal(e.reserve(&c[0], "u", None, T0, None), "unavailable");
    check_refusal(e.assign("s", "r", T0, None), "unavailable");
    check_refusal(e.void(&c[0], T0, None), "unavailable");
    check_refusal(e.generate("s", 5, T0, None), "unavailable");
    let mut importer = e.importer("s").unwrap();
    importer.push(1, "imp", T0).unwrap();
    check_refusal(importer.finish(T0), "unavailable");
    assert_eq!(e.dump_state(), before, "nothing half-applied");
    e.journal().set_failing(false);
    // The user's slot was given back: the limit of one still allows one.
    e.redeem(&c[0], "u", None, T0, None).unwrap();
    check_replay(&e);
}

#[test]
fn replay_refuses_records_that_do_not_apply() {
    let e = engine();
    e.create_campaign(spec("s", "S", 10), key(23), T0, None)
        .unwrap();
    let c = codes(&e, "s", 1);
    e.redeem(&c[0], "u", None, T0, None).unwrap();
    let records = e.journal().records();
    let fresh = engine();
    let (lsn, kind, payload) = &records[0];
    fresh
        .apply_replayed(*lsn, &Record::decode(*kind, payload).unwrap())
        .unwrap();
    let (lsn, kind, payload) = &records[1];
    let redeem = Record::decode(*kind, payload).unwrap();
    fresh.apply_replayed(*lsn, &redeem).unwrap();
    // The same redemption twice is corruption, never skipped.
    let err = fresh.apply_replayed(3, &redeem).unwrap_err();
    assert_eq!(err.lsn, 3);
    assert!(err.reason.contains("redeem of a code in state"), "{err}");
    // A record for a campaign that does not exist.
    let Record::Redeemed { at, slot, user, .. } = redeem else {
        panic!()
    };
    let orphan = Record::Redeemed {
        at,
        campaign: 9,
        slot,
        user,
        order: None,
        reservation: None,
        idem: None,
    };
    assert!(fresh.apply_replayed(4, &orphan).is_err());
}

#[test]
fn reclaim_gives_unused_codes_back_and_keeps_used_ones() {
    let e = engine();
    e.create_campaign(
        CampaignSpec {
            per_recipient_limit: 3,
            code_valid_seconds_after_assignment: Some(600),
            ..spec("m", "M", 8)
        },
        key(21),
        T0,
        None,
    )
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(e.assign("m", "ann", T0, None).unwrap().code);
    }
    e.assign("m", "bob", T0, None).unwrap();
    e.redeem(&held[1], "ann", None, at(1), None).unwrap();
    e.reserve(&held[2], "dan", None, at(1), None).unwrap();
    check_refusal(e.reclaim("m", "nobody", false, at(2)), "unknown_recipient");
    check_refusal(e.reclaim("nope", "ann", false, at(2)), "unknown_campaign");
    check_refusal(e.reclaim("m", "", false, at(2)), "invalid_request");

    let r = e.reclaim("m", "ann", false, at(2)).unwrap();
    assert_eq!(r.released, vec![held[0].clone()]);
    assert_eq!(
        r.kept,
        vec![
            (held[1].clone(), PublicState::Redeemed),
            (held[2].clone(), PublicState::Reserved)
        ]
    );
    assert!(r.lsn > 0);
    // Back in the pool with no trace of its recipient or deadline.
    let status = e.status(&held[0], None, at(2)).unwrap();
    assert_eq!(
        (status.state, status.recipient, status.expires_at),
        ("available", None, None)
    );
    // The count dropped: ann gets a fresh assignment, bob is untouched.
    let fresh = e.assign("m", "ann", at(3), None).unwrap();
    assert!(fresh.new);
    let stats = e.campaign("m").unwrap().view(at(3)).stats;
    assert_eq!((stats.assigned, stats.available), (2, 4));
    // Reclaiming again keeps the used codes and takes the fresh one.
    let again = e.reclaim("m", "ann", true, at(4)).unwrap();
    assert_eq!(again.released, vec![fresh.code.clone()]);
    assert_eq!(again.kept.len(), 2);
    assert_eq!(e.status(&fresh.code, None, at(4)).unwrap().state, "voided");
    check_refusal(
        e.redeem(&fresh.code, "cy", None, at(5), None),
        "code_voided",
    );
    let bob = e.reclaim("m", "bob", true, at(5)).unwrap();
    assert_eq!((bob.released.len(), bob.kept.len()), (1, 0));
    check_refusal(e.reclaim("m", "bob", false, at(6)), "unknown_recipient");
    let unassigned = e
        .journal()
        .records()
        .iter()
        .filter(|(_, k, _)| *k == redeem_engine::RecordKind::Unassigned as u8)
        .count();
    assert_eq!(unassigned, 3);
    check_replay(&e);
}

#[test]
fn replay_refuses_a_reclaim_that_does_not_apply() {
    let e = engine();
    e.create_campaign(spec("m", "M", 4), key(22), T0, None)
        .unwrap();
    let ann = e.assign("m", "ann", T0, None).unwrap();
    let slot = e.resolve(&ann.code).unwrap().slot;
    let records = e.journal().records();
    #[track_caller]
    fn check(
        records: &[(u64, u8, Vec<u8>)],
        slot: redeem_engine::Slot,
        recipient: &str,
        want: &str,
    ) {
        let fresh = engine();
        for (lsn, kind, payload) in records {
            fresh.apply_encoded(*lsn, *kind, payload).unwrap();
        }
        let bad = Record::Unassigned {
            at: T0,
            campaign: 1,
            slot,
            recipient,
            void: false,
        };
        let err = fresh.apply_replayed(99, &bad).unwrap_err();
        assert!(err.reason.contains(want), "{err}");
    }
    check(&records, slot, "bob", "assigned to someone else");
    let other = redeem_engine::Slot(slot.0 ^ 1);
    check(
        &records,
        other,
        "ann",
        "reclaim of a code in state Available",
    );
}

#[test]
fn pledges_keep_a_started_file_whole() {
    let e = engine();
    e.create_campaign(
        CampaignSpec {
            test_recipients: vec!["qa".into()],
            ..spec("p", "P", 6)
        },
        key(23),
        T0,
        None,
    )
    .unwrap();
    e.assign("p", "old", T0, None).unwrap();
    // "old" holds its code, "a" repeats, "qa" takes one each line, "" none.
    let file = ["old", "a", "a", "qa", "qa", "", "b"];
    let mut pledge = e.pledge("p", file, T0).unwrap();
    assert_eq!(pledge.left(), 4);
    // A second file that does not fit next to the first is refused whole.
    match e.pledge("p", ["x", "y"], T0) {
        Err(Refusal::PoolShort { needed, available }) => assert_eq!((needed, available), (2, 1)),
        other => panic!("expected PoolShort, got {other:?}"),
    }
    // Single assignments take only what no pledge holds.
    e.assign("p", "single", T0, None).unwrap();
    check_refusal(e.assign("p", "late", T0, None), "pool_exhausted");
    let mut statuses = Vec::new();
    for r in file {
        let got = e.assign_pledged("p", r, T0, None, Some(&mut pledge));
        statuses.push(match got {
            Ok(a) if a.test => "test",
            Ok(a) if a.new => "created",
            Ok(_) => "existing",
            Err(refusal) => refusal_code(&refusal),
        });
    }
    assert_eq!(
        statuses,
        [
            "existing",
            "created",
            "existing",
            "test",
            "test",
            "invalid_request",
            "created"
        ]
    );
    assert_eq!(pledge.left(), 0);
    drop(pledge);
    check_refusal(e.assign("p", "late", T0, None), "pool_exhausted");
    // An unused pledge goes back to the pool when dropped.
    e.create_campaign(spec("q", "Q", 2), key(24), T0, None)
        .unwrap();
    drop(e.pledge("q", ["x", "y"], T0).unwrap());
    e.assign("q", "z", T0, None).unwrap();
    check_replay(&e);
}

fn hook_spec(id: &str) -> WebhookSpec {
    WebhookSpec {
        id: id.into(),
        secret: format!("whsec_{id}"),
        url: "http://127.0.0.1:1/hook".into(),
        events: vec!["*".into()],
        campaigns: vec![],
        description: Some("test".into()),
    }
}

#[test]
fn webhooks_replay_and_snapshot_with_their_cursor_and_status() {
    let e = engine();
    e.create_campaign(spec("s", "S", 10), key(31), T0, None)
        .unwrap();
    let a = e.create_webhook(hook_spec("wh_a"), at(1)).unwrap();
    // Delivery starts after the creation record itself.
    assert_eq!(a.cursor, 2);
    assert_eq!(a.status, WebhookStatus::Active);
    let b = e.create_webhook(hook_spec("wh_b"), at(1)).unwrap();
    let c = e.create_webhook(hook_spec("wh_c"), at(1)).unwrap();
    check_refusal(e.create_webhook(hook_spec("wh_a"), at(1)), "webhook_exists");
    let codes = codes(&e, "s", 3);
    e.redeem(&codes[0], "u", None, at(2), None).unwrap();
    // A delivery moves the cursor only from where it started.
    assert!(
        e.advance_webhook("wh_a", a.cursor, 6, at(3))
            .unwrap()
            .is_some()
    );
    assert_eq!(e.advance_webhook("wh_a", a.cursor, 6, at(3)).unwrap(), None);
    e.update_webhook(
        "wh_b",
        WebhookPatch {
            status: Some(WebhookStatus::Paused),
            campaigns: Some(vec!["s".into()]),
            ..WebhookPatch::default()
        },
        at(4),
    )
    .unwrap();
    assert!(
        e.disable_webhook("wh_c", c.cursor, "the receiver answered 410", at(5))
            .unwrap()
            .is_some()
    );
    // Paused, not active: a stale failure does not disable it.
    assert_eq!(
        e.disable_webhook("wh_b", b.cursor, "x", at(5)).unwrap(),
        None
    );
    let rewound = e.rewind_webhook("wh_a", 1, at(6)).unwrap();
    assert_eq!(rewound.cursor, 1);
    let d = e.create_webhook(hook_spec("wh_d"), at(7)).unwrap();
    e.delete_webhook("wh_d", at(8)).unwrap();
    check_refusal(e.delete_webhook("wh_d", at(8)), "unknown_webhook");
    check_refusal(
        e.update_webhook("nope", WebhookPatch::default(), at(8)),
        "unknown_webhook",
    );
    assert!(d.cursor > 0);
    e.redeem(&codes[1], "v", None, at(9), None).unwrap();
    assert_eq!(e.webhooks().len(), 3);
    assert_eq!(e.webhook("wh_b").unwrap().status, WebhookStatus::Paused);
    assert_eq!(e.webhook("wh_c").unwrap().status, WebhookStatus::Disabled);
    check_replay(&e);
}

#[test]
fn webhook_limits_and_bad_records_are_refused() {
    let e = engine();
    let mut long = hook_spec("wh_x");
    long.url = "h".repeat(redeem_engine::engine::WEBHOOK_URL_BYTES_MAX + 1);
    check_refusal(e.create_webhook(long, T0), "invalid_request");
    let mut none = hook_spec("wh_x");
    none.events.clear();
    check_refusal(e.create_webhook(none, T0), "invalid_request");
    for i in 0..redeem_engine::engine::WEBHOOKS_MAX {
        e.create_webhook(hook_spec(&format!("wh_{i}")), T0).unwrap();
    }
    check_refusal(
        e.create_webhook(hook_spec("wh_more"), T0),
        "too_many_webhooks",
    );
    // Replay refuses a cursor that goes back without `rewind`, one past
    // its own record, and records about unknown subscriptions.
    let fresh = engine();
    for (lsn, kind, payload) in e.journal().records().iter().take(1) {
        fresh
            .apply_replayed(*lsn, &Record::decode(*kind, payload).unwrap())
            .unwrap();
    }
    let id = "wh_0";
    let back = Record::WebhookCursor {
        at: T0,
        id,
        cursor: 1,
        rewind: false,
    };
    assert!(fresh.apply_replayed(5, &back).is_err());
    let ahead = Record::WebhookCursor {
        at: T0,
        id,
        cursor: 9,
        rewind: true,
    };
    assert!(fresh.apply_replayed(5, &ahead).is_err());
    let forward = Record::WebhookCursor {
        at: T0,
        id,
        cursor: 4,
        rewind: false,
    };
    fresh.apply_replayed(5, &forward).unwrap();
    let unknown = Record::WebhookDeleted {
        at: T0,
        id: "wh_nope",
    };
    assert!(fresh.apply_replayed(6, &unknown).is_err());
    let disabled = Record::WebhookDisabled {
        at: T0,
        id,
        reason: "410",
    };
    fresh.apply_replayed(7, &disabled).unwrap();
    assert!(fresh.apply_replayed(8, &disabled).is_err(), "twice");
}
