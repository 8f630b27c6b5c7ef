//! What a worker keeps of the log and how it writes it: the subscription's
//! filter, decided on a record's type and campaign before anything is
//! rendered, and the event lines written straight into the delivery's body.
//!
//! A line is byte for byte what `/v1/events` renders (`event_line`, a
//! `serde_json` map, so keys in byte order), without the map: the keys of
//! each kind are written in that order here, and strings are escaped by
//! the same `serde_json` writer. The tests below check the order for every
//! kind; `server/tests/webhooks.rs` compares whole deliveries of every
//! kind with `/v1/events`.

use std::io::Write;

use redeem_engine::{Campaign, CampaignNo, Lsn, Record, RecordKind, Webhook};

use crate::app::App;
use crate::{render, timefmt};

/// Whether records of this type are events (`/v1/events` lines): all but
/// bookkeeping, and the webhook records that could carry a secret.
pub fn is_event(kind: RecordKind) -> bool {
    !matches!(
        kind,
        RecordKind::IdempotentResponse
            | RecordKind::Counters
            | RecordKind::WebhookCreated
            | RecordKind::WebhookUpdated
            | RecordKind::WebhookCursor
            | RecordKind::WebhookDeleted
    )
}

/// What a record is to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not an event: bookkeeping, not counted anywhere.
    NotEvent,
    /// An event the subscription did not ask for.
    Skip,
    /// An event to deliver.
    Deliver,
}

/// A subscription's filter, resolved once a pass: the record types it
/// wants as a bit set, and the numbers of the campaigns it names.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Bit `t` set: records of type `t` are events it asked for.
    kinds: u128,
    /// Bit `t` set: records of type `t` are events.
    events: u128,
    /// `None`: every campaign (and events of none). Otherwise the ids of
    /// the named campaigns...
    campaigns: Option<Vec<String>>,
    /// ...and, by campaign number, whether it is one of them, once asked.
    known: Vec<Option<bool>>,
}

/// Campaign numbers up to this have their verdict remembered.
const KNOWN_MAX: usize = 4096;

const ALL_KINDS: [RecordKind; 20] = [
    RecordKind::CampaignCreated,
    RecordKind::CampaignUpdated,
    RecordKind::CodesGenerated,
    RecordKind::CodesImported,
    RecordKind::Assigned,
    RecordKind::Reserved,
    RecordKind::Released,
    RecordKind::Redeemed,
    RecordKind::RolledBack,
    RecordKind::Voided,
    RecordKind::IdempotentResponse,
    RecordKind::LowStock,
    RecordKind::Counters,
    RecordKind::GuessingSuspected,
    RecordKind::Unassigned,
    RecordKind::WebhookCreated,
    RecordKind::WebhookUpdated,
    RecordKind::WebhookCursor,
    RecordKind::WebhookDeleted,
    RecordKind::WebhookDisabled,
];

fn bit(kind: RecordKind) -> u128 {
    1u128 << (kind as u8)
}

impl Filter {
    pub fn new(hook: &Webhook) -> Filter {
        let every = hook.spec.events.iter().any(|k| k == "*");
        let mut kinds = 0;
        let mut events = 0;
        for kind in ALL_KINDS.into_iter().filter(|k| is_event(*k)) {
            events |= bit(kind);
            if every || hook.spec.events.iter().any(|k| k == kind.event_name()) {
                kinds |= bit(kind);
            }
        }
        let campaigns = (!hook.spec.campaigns.is_empty()).then(|| hook.spec.campaigns.clone());
        Filter {
            kinds,
            events,
            campaigns,
            known: Vec::new(),
        }
    }

    /// The verdict on a record's type alone; `Deliver` may still be
    /// overruled by `campaign_wanted` once the record is decoded.
    pub fn by_type(&self, record_type: u8) -> Verdict {
        let Some(b) = 1u128.checked_shl(u32::from(record_type)) else {
            return Verdict::NotEvent;
        };
        if self.events & b == 0 {
            Verdict::NotEvent
        } else if self.kinds & b == 0 {
            Verdict::Skip
        } else {
            Verdict::Deliver
        }
    }

    /// Whether a wanted kind's campaign is wanted too: any, unless the
    /// subscription names campaigns (then an event of none is not).
    /// `id_of` gives a campaign number's id.
    pub fn campaign_wanted<'a>(
        &mut self,
        campaign: Option<CampaignNo>,
        id_of: impl FnOnce(CampaignNo) -> Option<&'a str>,
    ) -> bool {
        let Some(ids) = &self.campaigns else {
            return true;
        };
        let Some(number) = campaign else {
            return false;
        };
        let slot = number as usize;
        if let Some(Some(known)) = self.known.get(slot) {
            return *known;
        }
        let wanted = id_of(number).is_some_and(|id| ids.iter().any(|w| w == id));
        if slot <= KNOWN_MAX {
            if self.known.len() <= slot {
                self.known.resize(slot + 1, None);
            }
            self.known[slot] = Some(wanted);
        }
        wanted
    }
}

/// Appends `record`'s event line (as `/v1/events` renders it, without the
/// newline) to `out`.
pub fn write_event(app: &App, lsn: Lsn, record: &Record<'_>, out: &mut Vec<u8>) {
    let campaign = record
        .campaign()
        .and_then(|n| app.engine.campaign_by_number(n));
    let code = record
        .code()
        .and_then(|(_, slot)| campaign.map(|c| c.printed_code(slot)));
    write_line(
        lsn,
        record,
        campaign.map(Campaign::id),
        code.as_deref(),
        out,
    );
}

/// A JSON value of a line.
enum V<'a> {
    Str(&'a str),
    OptStr(Option<&'a str>),
    Owned(String),
    OptOwned(Option<String>),
    U64(u64),
    Bool(bool),
}

/// The line of `record`, given its campaign's id and its code's printed
/// form: keys in byte order, as a `serde_json` map writes them.
fn write_line(
    lsn: Lsn,
    record: &Record<'_>,
    campaign: Option<&str>,
    code: Option<&str>,
    out: &mut Vec<u8>,
) {
    // At most 8 fields per kind; a fixed array keeps it off the heap.
    let mut fields: [(&str, V<'_>); 8] = std::array::from_fn(|_| ("", V::Bool(false)));
    let mut n = 0;
    let mut put = |k: &'static str, v| {
        fields[n] = (k, v);
        n += 1;
    };
    put("lsn", V::U64(lsn));
    put("at", V::Owned(timefmt::format(record.at())));
    put("kind", V::Str(record.kind().event_name()));
    put("campaign", V::OptStr(campaign));
    put("code", V::OptStr(code));
    match *record {
        Record::Assigned {
            recipient, test, ..
        } => {
            put("recipient", V::Str(recipient));
            put("test", V::Bool(test));
        }
        Record::Reserved {
            reservation,
            user,
            expires_at,
            ..
        } => {
            put("reservation", V::Owned(render::reservation_id(reservation)));
            put("user", V::Str(user));
            put("expires_at", V::Owned(timefmt::format(expires_at)));
        }
        Record::Released {
            reservation,
            expired,
            ..
        } => {
            put("reservation", V::Owned(render::reservation_id(reservation)));
            put("expired", V::Bool(expired));
        }
        Record::Redeemed {
            user,
            order,
            reservation,
            ..
        } => {
            put("user", V::Str(user));
            put("order", V::OptStr(order));
            put(
                "reservation",
                V::OptOwned(reservation.map(render::reservation_id)),
            );
        }
        Record::Unassigned {
            recipient, void, ..
        } => {
            put("recipient", V::Str(recipient));
            put("void", V::Bool(void));
        }
        Record::CodesGenerated { count, .. } => put("count", V::U64(count)),
        Record::CodesImported { ref codes, .. } => put("count", V::U64(codes.len() as u64)),
        Record::LowStock { available, .. } => put("available", V::U64(available)),
        Record::GuessingSuspected { attempts, .. } => put("attempts", V::U64(attempts)),
        Record::WebhookDisabled { id, reason, .. } => {
            put("webhook", V::Str(id));
            put("reason", V::Str(reason));
        }
        _ => {}
    }
    let fields = &mut fields[..n];
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Keys are fixed ASCII names with nothing to escape.
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        match value {
            V::Str(s) | V::OptStr(Some(s)) => string(out, s),
            V::Owned(s) | V::OptOwned(Some(s)) => string(out, s),
            V::OptStr(None) | V::OptOwned(None) => out.extend_from_slice(b"null"),
            V::U64(n) => {
                let _ = write!(out, "{n}");
            }
            V::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
    out.push(b'}');
}

/// A JSON string, escaped as `serde_json` escapes it.
pub fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec never fails");
}

#[cfg(test)]
mod tests {
    use super::*;
    use redeem_engine::{Slot, Timestamp};
    use serde_json::Value;

    /// One record of every event kind, with strings that need escaping.
    fn every_event() -> Vec<Record<'static>> {
        let at = Timestamp(1_767_225_600_123);
        let (campaign, slot) = (1, Slot(7));
        vec![
            Record::CodesGenerated {
                at,
                campaign,
                count: 5,
                idem: None,
            },
            Record::Assigned {
                at,
                campaign,
                slot,
                recipient: "a\"b@example.com",
                test: true,
                idem: None,
            },
            Record::Reserved {
                at,
                campaign,
                slot,
                reservation: 42,
                user: "u\u{1}\u{e9}",
                expires_at: Timestamp(1_767_225_700_000),
                idem: None,
            },
            Record::Released {
                at,
                campaign,
                slot,
                reservation: 42,
                expired: false,
                idem: None,
            },
            Record::Redeemed {
                at,
                campaign,
                slot,
                user: "u",
                order: Some("o\\1"),
                reservation: Some(42),
                idem: None,
            },
            Record::Redeemed {
                at,
                campaign,
                slot,
                user: "u",
                order: None,
                reservation: None,
                idem: None,
            },
            Record::RolledBack {
                at,
                campaign,
                slot,
                idem: None,
            },
            Record::Voided {
                at,
                campaign,
                slot,
                idem: None,
            },
            Record::Unassigned {
                at,
                campaign,
                slot,
                recipient: "r",
                void: true,
            },
            Record::LowStock {
                at,
                campaign,
                available: 3,
            },
            Record::GuessingSuspected {
                at,
                campaign,
                attempts: 99,
            },
            Record::WebhookDisabled {
                at,
                id: "wh_1",
                reason: "the receiver answered 410 Gone",
            },
        ]
    }

    #[test]
    fn lines_are_json_with_keys_in_byte_order_as_a_serde_json_map_writes_them() {
        for record in every_event() {
            let code = record.code().map(|_| "SPR-7KQ2M");
            let campaign = record.campaign().map(|_| "spring");
            let mut out = b"x".to_vec();
            write_line(9, &record, campaign, code, &mut out);
            assert_eq!(out[0], b'x', "appended");
            let line = &out[1..];
            let value: Value = serde_json::from_slice(line).unwrap();
            // Re-serialising the parsed map (sorted keys, same escaping)
            // gives the same bytes: the order and escaping are serde_json's.
            assert_eq!(
                String::from_utf8_lossy(line),
                serde_json::to_string(&value).unwrap(),
                "{record:?}"
            );
            assert_eq!(value["lsn"], 9);
            assert_eq!(value["kind"], record.kind().event_name());
            assert_eq!(value["campaign"].as_str(), campaign);
            assert_eq!(value["code"].as_str(), code);
            assert_eq!(value["at"], "2026-01-01T00:00:00.123Z");
        }
    }

    #[test]
    fn a_filter_decides_on_the_type_and_then_the_campaign() {
        let mut filter = Filter {
            kinds: bit(RecordKind::Redeemed),
            events: ALL_KINDS
                .into_iter()
                .filter(|k| is_event(*k))
                .fold(0, |b, k| b | bit(k)),
            campaigns: None,
            known: Vec::new(),
        };
        assert_eq!(filter.by_type(RecordKind::Redeemed as u8), Verdict::Deliver);
        assert_eq!(filter.by_type(RecordKind::Voided as u8), Verdict::Skip);
        assert_eq!(
            filter.by_type(RecordKind::WebhookDisabled as u8),
            Verdict::Skip
        );
        for bookkeeping in [
            RecordKind::IdempotentResponse,
            RecordKind::Counters,
            RecordKind::WebhookCreated,
            RecordKind::WebhookCursor,
        ] {
            assert_eq!(filter.by_type(bookkeeping as u8), Verdict::NotEvent);
        }
        assert_eq!(filter.by_type(200), Verdict::NotEvent);
        let ids = |n: CampaignNo| ["", "a", "b", "c"].get(n as usize).copied();
        assert!(filter.campaign_wanted(None, ids) && filter.campaign_wanted(Some(3), ids));
        filter.campaigns = Some(vec!["b".to_owned()]);
        assert!(filter.campaign_wanted(Some(2), ids));
        assert!(!filter.campaign_wanted(Some(3), ids) && !filter.campaign_wanted(None, ids));
        // Remembered: asked again, the id is not looked up.
        assert!(filter.campaign_wanted(Some(2), |_| None));
        assert!(!filter.campaign_wanted(Some(9), |_| None));
    }
}
