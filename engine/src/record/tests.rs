//! Round trips of every record kind, and the fixed payload header.

use super::*;

#[track_caller]
fn check(record: Record<'_>) {
    let mut bytes = Vec::new();
    record.encode(&mut bytes);
    let back = Record::decode(record.kind() as u8, &bytes).expect("decodes");
    assert_eq!(back, record);
    // Every strict prefix fails cleanly, except the one that ends where a
    // record written before the trailing fields existed ends: that one
    // reads as such a record, with the trailing fields at their defaults.
    let legacy = without_trailing_fields(&record);
    for cut in 0..bytes.len() {
        match Record::decode(record.kind() as u8, &bytes[..cut]) {
            Err(_) => {}
            Ok(old) => assert_eq!(old, legacy, "cut at {cut}"),
        }
    }
}

/// `record` as a log written before its kind's trailing fields reads.
fn without_trailing_fields<'a>(record: &Record<'a>) -> Record<'a> {
    let mut old = record.clone();
    match &mut old {
        Record::CampaignCreated { spec, .. } => {
            spec.guessing_alert_per_minute = GUESSING_ALERT_PER_MINUTE_DEFAULT;
        }
        Record::CampaignUpdated { patch, .. } => patch.guessing_alert_per_minute = None,
        // The first format's ids had 64 bits.
        Record::Reserved { reservation, .. } | Record::Released { reservation, .. } => {
            *reservation &= u128::from(u64::MAX);
        }
        Record::Redeemed {
            reservation: Some(reservation),
            ..
        } => *reservation &= u128::from(u64::MAX),
        _ => {}
    }
    old
}

#[test]
fn every_kind_round_trips() {
    let at = Timestamp(1_700_000_000_123);
    let idem = Some(IdemTag {
        key: "tok:abc",
        fingerprint: 0xdead_beef << 70,
    });
    check(Record::CampaignCreated {
        at,
        campaign: 3,
        key: [7; 16],
        spec: CampaignSpec {
            id: "spring".into(),
            generate: 1000,
            prefix: "SPR".into(),
            starts_at: Some(Timestamp(5)),
            code_valid_seconds_after_assignment: Some(60),
            test_recipients: vec!["qa@example.com".into()],
            guessing_alert_per_minute: 42,
            ..CampaignSpec::default()
        },
        idem,
    });
    check(Record::CampaignUpdated {
        at,
        campaign: 3,
        patch: CampaignPatch {
            starts_at: Some(None),
            expires_at: Some(Some(Timestamp(9))),
            paused: Some(true),
            test_recipients: Some(vec![]),
            low_stock_threshold: Some(4),
            guessing_alert_per_minute: Some(7),
        },
        idem: None,
    });
    check(Record::CampaignUpdated {
        at,
        campaign: 1,
        patch: CampaignPatch::default(),
        idem,
    });
    check(Record::CodesGenerated {
        at,
        campaign: 1,
        count: 5,
        idem,
    });
    check(Record::CodesImported {
        at,
        campaign: 1,
        first: 9,
        codes: vec!["A", "BC"],
    });
    check(Record::Assigned {
        at,
        campaign: 1,
        slot: Slot::imported(4),
        recipient: "r",
        test: true,
        idem,
    });
    check(Record::Reserved {
        at,
        campaign: 1,
        slot: Slot::generated(4),
        reservation: 77,
        user: "u",
        expires_at: Timestamp(99),
        idem,
    });
    check(Record::Released {
        at,
        campaign: 1,
        slot: Slot(4),
        reservation: 77,
        expired: true,
        idem: None,
    });
    check(Record::Redeemed {
        at,
        campaign: 1,
        slot: Slot(4),
        user: "u",
        order: Some("o-1"),
        reservation: Some(77),
        idem,
    });
    // A server's ids: an owner tag over 96 random bits.
    let random_id = 0xdead_beef_u128 << 96 | 0x0123_4567_89ab_cdef_0011_2233;
    check(Record::Reserved {
        at,
        campaign: 1,
        slot: Slot::generated(4),
        reservation: random_id,
        user: "u",
        expires_at: Timestamp(99),
        idem: None,
    });
    check(Record::Released {
        at,
        campaign: 1,
        slot: Slot(4),
        reservation: random_id,
        expired: false,
        idem,
    });
    check(Record::Redeemed {
        at,
        campaign: 1,
        slot: Slot(4),
        user: "u",
        order: None,
        reservation: Some(random_id),
        idem,
    });
    check(Record::RolledBack {
        at,
        campaign: 1,
        slot: Slot(4),
        idem,
    });
    check(Record::Voided {
        at,
        campaign: 1,
        slot: Slot(4),
        idem: None,
    });
    check(Record::IdempotentResponse {
        at,
        key: "k",
        fingerprint: 1,
        status: 409,
        body: b"{}",
    });
    check(Record::Counters {
        at,
        next_reservation: 42,
    });
    check(Record::LowStock {
        at,
        campaign: 1,
        available: 3,
    });
    check(Record::GuessingSuspected {
        at,
        campaign: 2,
        attempts: 601,
    });
    for void in [false, true] {
        check(Record::Unassigned {
            at,
            campaign: 3,
            slot: Slot::imported(9),
            recipient: "bounce@example.com",
            void,
        });
    }
}

#[test]
fn unknown_kind_and_trailing_bytes_are_refused() {
    assert!(Record::decode(0, &[]).is_err());
    assert!(Record::decode(200, &[0; 64]).is_err());
    let mut bytes = Vec::new();
    Record::CodesGenerated {
        at: Timestamp(1),
        campaign: 1,
        count: 1,
        idem: None,
    }
    .encode(&mut bytes);
    bytes.push(0);
    assert_eq!(
        Record::decode(RecordKind::CodesGenerated as u8, &bytes)
            .unwrap_err()
            .reason,
        "trailing bytes"
    );
}

#[test]
fn payloads_open_with_the_fixed_header() {
    let at = Timestamp(0x0102_0304_0506_0708);
    let mut bytes = Vec::new();
    Record::Voided {
        at,
        campaign: 0x0a0b_0c0d,
        slot: Slot::imported(5),
        idem: None,
    }
    .encode(&mut bytes);
    let field = |offset: usize, width: usize| &bytes[offset..offset + width];
    assert_eq!(field(PAYLOAD_AT_OFFSET, 8), at.0.to_le_bytes());
    assert_eq!(
        field(PAYLOAD_CAMPAIGN_OFFSET, 4),
        0x0a0b_0c0d_u32.to_le_bytes()
    );
    assert_eq!(
        field(PAYLOAD_SLOT_OFFSET, 8),
        Slot::imported(5).0.to_le_bytes()
    );
    // The idem flag, absent, is the first field of the kind's own.
    assert_eq!(bytes.len(), PAYLOAD_CODE_FIELDS_OFFSET + 1);
    assert_eq!(bytes[PAYLOAD_CODE_FIELDS_OFFSET], 0);
}

#[test]
fn webhook_kinds_round_trip() {
    let at = Timestamp(1_700_000_000_123);
    check(Record::WebhookCreated {
        at,
        id: "wh_abc",
        secret: "whsec_xyz",
        url: "http://127.0.0.1:9/hook",
        events: vec!["redeemed", "voided"],
        campaigns: vec![],
        description: Some("crm"),
    });
    check(Record::WebhookCreated {
        at,
        id: "wh_abc",
        secret: "whsec_xyz",
        url: "https://example.invalid/",
        events: vec!["*"],
        campaigns: vec!["spring", "fall"],
        description: None,
    });
    check(Record::WebhookUpdated {
        at,
        id: "wh_abc",
        url: None,
        events: None,
        campaigns: None,
        status: None,
    });
    for status in [
        WebhookStatus::Active,
        WebhookStatus::Paused,
        WebhookStatus::Disabled,
    ] {
        check(Record::WebhookUpdated {
            at,
            id: "wh_abc",
            url: Some("http://localhost/x"),
            events: Some(vec!["*"]),
            campaigns: Some(vec!["spring"]),
            status: Some(status),
        });
    }
    check(Record::WebhookCursor {
        at,
        id: "wh_abc",
        cursor: 77,
        rewind: true,
    });
    check(Record::WebhookDeleted { at, id: "wh_abc" });
    check(Record::WebhookDisabled {
        at,
        id: "wh_abc",
        reason: "the receiver answered 410",
    });
    // Kinds 30 and up, and a status byte out of range is refused.
    assert_eq!(RecordKind::WebhookCreated as u8, 30);
    assert_eq!(RecordKind::from_u8(34), Some(RecordKind::WebhookDisabled));
    let mut bytes = Vec::new();
    Record::WebhookUpdated {
        at,
        id: "w",
        url: None,
        events: None,
        campaigns: None,
        status: None,
    }
    .encode(&mut bytes);
    *bytes.last_mut().unwrap() = 9;
    assert!(Record::decode(RecordKind::WebhookUpdated as u8, &bytes).is_err());
}
