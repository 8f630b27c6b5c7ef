//! JSON bodies of every response, and the engine's renderer for responses
//! stored under idempotency keys. Live answers and replayed ones are built
//! by the same functions, so a retry gets the same bytes.

use redeem_engine::{
    Assigned, CampaignView, CodeStatus, Effect, Record, Redeemed, Renderer, ReservationId,
    Reserved, Timestamp,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::timefmt;

fn opt_time(t: Option<Timestamp>) -> Option<String> {
    t.map(timefmt::format)
}

/// Hex digits of a printed reservation id: 128 bits.
const RESERVATION_HEX_DIGITS: usize = 32;

/// `rsv_` and the id's 128 bits in hex.
pub fn reservation_id(id: ReservationId) -> String {
    format!("rsv_{id:032x}")
}

/// The id `reservation_id` printed; anything else is no reservation.
pub fn parse_reservation_id(s: &str) -> Option<ReservationId> {
    let hex = s.strip_prefix("rsv_")?;
    if hex.len() != RESERVATION_HEX_DIGITS || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

#[derive(Serialize)]
struct RedemptionBody<'a> {
    code: &'a str,
    campaign: &'a str,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a str>,
    redeemed_at: String,
    lsn: u64,
}

#[allow(clippy::too_many_arguments)]
fn redemption_body(
    code: &str,
    campaign: &str,
    user: &str,
    order: Option<&str>,
    at: Timestamp,
    lsn: u64,
) -> Vec<u8> {
    serde_json::to_vec(&RedemptionBody {
        code,
        campaign,
        user,
        order,
        redeemed_at: timefmt::format(at),
        lsn,
    })
    .expect("serializes")
}

pub fn redemption(r: &Redeemed) -> Vec<u8> {
    redemption_body(&r.code, r.campaign, &r.user, r.order, r.redeemed_at, r.lsn)
}

fn reservation_body(id: ReservationId, code: &str, user: &str, expires_at: Timestamp) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "reservation": reservation_id(id),
        "code": code,
        "user": user,
        "expires_at": timefmt::format(expires_at),
    }))
    .expect("serializes")
}

pub fn reservation(r: &Reserved) -> Vec<u8> {
    reservation_body(r.reservation, &r.code, &r.user, r.expires_at)
}

pub fn assignment(a: &Assigned) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "code": a.code,
        "campaign": a.campaign,
        "recipient": a.recipient,
        "state": a.state.as_str(),
    }))
    .expect("serializes")
}

/// `{"recipient", "released": [code...], "kept": [{"code", "state"}]}`.
pub fn reclaimed(r: &redeem_engine::Reclaimed) -> Vec<u8> {
    let kept: Vec<Value> = r
        .kept
        .iter()
        .map(|(code, state)| json!({"code": code, "state": state.as_str()}))
        .collect();
    serde_json::to_vec(&json!({
        "recipient": r.recipient,
        "released": r.released,
        "kept": kept,
    }))
    .expect("serializes")
}

/// A code's status; fields in byte order of their names, as clients have
/// always seen them (a `serde_json` map's order), absent ones left out.
#[derive(Serialize)]
struct CodeStatusBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    assigned_at: Option<String>,
    campaign: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redeemed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redeemed_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved_until: Option<String>,
    state: &'a str,
}

pub fn code_status(s: &CodeStatus) -> Vec<u8> {
    serde_json::to_vec(&CodeStatusBody {
        assigned_at: opt_time(s.assigned_at),
        campaign: &s.campaign,
        code: &s.code,
        expires_at: opt_time(s.expires_at),
        order: s.order.as_deref(),
        recipient: s.recipient.as_deref(),
        redeemed_at: opt_time(s.redeemed_at),
        redeemed_by: s.redeemed_by.as_deref(),
        reserved_until: opt_time(s.reserved_until),
        state: s.state,
    })
    .expect("serializes")
}

pub fn campaign_value(v: &CampaignView) -> Value {
    let s = &v.stats;
    json!({
        "id": v.spec.id,
        "code": {"prefix": v.spec.prefix, "length": v.spec.length},
        "starts_at": opt_time(v.spec.starts_at),
        "expires_at": opt_time(v.spec.expires_at),
        "paused": v.paused,
        "per_user_limit": v.spec.per_user_limit,
        "per_recipient_limit": v.spec.per_recipient_limit,
        "code_valid_seconds_after_assignment": v.spec.code_valid_seconds_after_assignment,
        "reservation_ttl_seconds": v.spec.reservation_ttl_seconds,
        "low_stock_threshold": v.spec.low_stock_threshold,
        "test_recipients": v.spec.test_recipients,
        "guessing_alert_per_minute": v.spec.guessing_alert_per_minute,
        "created_at": timefmt::format(v.created_at),
        "stats": {
            "total": s.total,
            "available": s.available,
            "assigned": s.assigned,
            "reserved": s.reserved,
            "redeemed": s.redeemed,
            "voided": s.voided,
            "test_assignments": s.test_assignments,
            "redemptions_per_second": s.redemptions_per_second,
            "assignments_per_second": s.assignments_per_second,
            "depletion_eta_seconds": s.depletion_eta_seconds,
            "low_stock": s.low_stock,
        },
    })
}

pub fn campaign(v: &CampaignView) -> Vec<u8> {
    serde_json::to_vec(&campaign_value(v)).expect("serializes")
}

/// The answer to an import or `generate`.
pub fn import_report(report: &redeem_engine::ImportReport) -> Vec<u8> {
    let rejected: Vec<Value> = report
        .rejected
        .iter()
        .map(|(line, reason)| json!({"line": line, "reason": reason}))
        .collect();
    serde_json::to_vec(&json!({
        "added": report.added,
        "duplicates": report.duplicates,
        "rejected": rejected,
        "rejected_total": report.rejected_total,
        "total": report.total,
    }))
    .expect("serializes")
}

/// The renderer the engine calls for keyed transitions, live and in replay.
pub fn renderer() -> Renderer {
    Box::new(|effect: &Effect<'_>| {
        let campaign = effect.campaign;
        match effect.record {
            Record::CampaignCreated { at, .. } => (201, self::campaign(&campaign.view(*at))),
            Record::CampaignUpdated { at, .. } => (200, self::campaign(&campaign.view(*at))),
            Record::Assigned { recipient, .. } => {
                let status = effect.status.expect("a code record has a status");
                let body = serde_json::to_vec(&json!({
                    "code": status.code,
                    "campaign": campaign.id(),
                    "recipient": recipient,
                    "state": "assigned",
                }))
                .expect("serializes");
                (201, body)
            }
            Record::Reserved {
                reservation,
                user,
                expires_at,
                ..
            } => {
                let status = effect.status.expect("a code record has a status");
                (
                    201,
                    reservation_body(*reservation, &status.code, user, *expires_at),
                )
            }
            Record::Redeemed {
                at, user, order, ..
            } => {
                let status = effect.status.expect("a code record has a status");
                (
                    201,
                    redemption_body(&status.code, campaign.id(), user, *order, *at, effect.lsn),
                )
            }
            Record::CodesGenerated { count, .. } => {
                let stats = campaign.stats(effect.record.at());
                let report = redeem_engine::ImportReport {
                    added: *count,
                    total: stats.total,
                    ..Default::default()
                };
                (200, import_report(&report))
            }
            Record::Released { .. } | Record::RolledBack { .. } | Record::Voided { .. } => {
                let status = effect.status.expect("a code record has a status");
                (200, code_status(status))
            }
            other => panic!("no idempotent response for a {:?} record", other.kind()),
        }
    })
}

/// How much of a code a log line shows: the part before its first hyphen
/// when that looks like a campaign prefix, and its last four symbols.
/// Logs never hold a whole live code (API.md, Conventions); anything that
/// is not a code symbol is dropped, so the result cannot forge a line.
pub fn masked_code(input: &str) -> String {
    const SHOWN: usize = 4;
    const PREFIX_CHARS_MAX: usize = 8;
    let symbols: Vec<char> = input
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let prefix = match input.split_once('-') {
        Some((head, rest))
            if !head.is_empty()
                && head.len() <= PREFIX_CHARS_MAX
                && rest.contains('-')
                && head.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            head.to_ascii_uppercase()
        }
        _ => String::new(),
    };
    let body = symbols.len().saturating_sub(prefix.len());
    let tail: String = symbols[symbols.len() - body.min(SHOWN).min(body / 2)..]
        .iter()
        .collect();
    if prefix.is_empty() {
        format!("…{tail}")
    } else {
        format!("{prefix}-…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(masked_code(input), expected, "{input:?}");
    }

    #[test]
    fn logs_show_a_prefix_and_four_symbols_at_most() {
        check("SPR-7KQ2M-XP9TD-H", "SPR-…9TDH");
        check("7KQ2MXP9TDH", "…9TDH");
        check("spr-7kq2m-xp9td-h", "SPR-…9TDH");
        // Short inputs show at most half of themselves.
        check("ABCD", "…CD");
        check("", "…");
        // Line breaks and quotes are dropped, not escaped into the line.
        check("AB\nfake line\"X", "…INEX");
    }

    /// A status, with every field or none, renders byte for byte as a
    /// `serde_json` map of its fields would (sorted keys, no spaces).
    #[test]
    fn code_status_is_what_a_json_map_writes() {
        let full = CodeStatus {
            code: "SPR-7KQ2M".into(),
            campaign: "spring".into(),
            state: "redeemed",
            recipient: Some("a\"b@example.com".into()),
            assigned_at: Some(Timestamp(1_767_225_600_000)),
            reserved_until: Some(Timestamp(1_767_225_600_500)),
            redeemed_by: Some("u\u{1}".into()),
            redeemed_at: Some(Timestamp(1_767_225_601_000)),
            order: Some("o-1".into()),
            expires_at: Some(Timestamp(1_767_312_000_000)),
        };
        let bare = CodeStatus {
            state: "available",
            recipient: None,
            assigned_at: None,
            reserved_until: None,
            redeemed_by: None,
            redeemed_at: None,
            order: None,
            expires_at: None,
            ..full.clone()
        };
        // Pinned: what the serde_json map rendering before wrote.
        let expected = [
            r#"{"assigned_at":"2026-01-01T00:00:00Z","campaign":"spring","code":"SPR-7KQ2M","expires_at":"2026-01-02T00:00:00Z","order":"o-1","recipient":"a\"b@example.com","redeemed_at":"2026-01-01T00:00:01Z","redeemed_by":"u\u0001","reserved_until":"2026-01-01T00:00:00.500Z","state":"redeemed"}"#,
            r#"{"campaign":"spring","code":"SPR-7KQ2M","state":"available"}"#,
        ];
        for (status, expected) in [full, bare].into_iter().zip(expected) {
            let body = code_status(&status);
            assert_eq!(String::from_utf8_lossy(&body), expected);
            let parsed: Value = serde_json::from_slice(&body).unwrap();
            let fields = parsed.as_object().unwrap().len();
            assert_eq!(
                String::from_utf8(serde_json::to_vec(&parsed).unwrap()).unwrap(),
                String::from_utf8(body).unwrap()
            );
            assert_eq!(fields, if status.order.is_some() { 10 } else { 3 });
        }
    }
}
