//! Helpers the integration tests share.

use redeem_engine::Refusal;
use redeem_engine::codec::CodeKey;

/// A campaign key derived from a small number: tests stay deterministic,
/// and campaigns created side by side get different keys.
pub fn key(n: u8) -> CodeKey {
    CodeKey::from_bytes([n; 16])
}

/// The API's error code for a refusal, as the tests name refusals. The
/// engine has no API strings; this mirrors the server's table.
pub fn refusal_code(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::InvalidRequest { .. } => "invalid_request",
        Refusal::UnknownCampaign => "unknown_campaign",
        Refusal::CampaignExists => "campaign_exists",
        Refusal::PrefixConflict { .. } => "prefix_conflict",
        Refusal::CodeSpaceTooSmall { .. } => "code_space_too_small",
        Refusal::TooManyCampaigns { .. } => "too_many_campaigns",
        Refusal::MalformedCode => "malformed_code",
        Refusal::UnknownCode => "unknown_code",
        Refusal::AlreadyRedeemed { .. } => "already_redeemed",
        Refusal::CodeReserved { .. } => "code_reserved",
        Refusal::CodeVoided { .. } => "code_voided",
        Refusal::CodeExpired => "code_expired",
        Refusal::CampaignNotStarted => "campaign_not_started",
        Refusal::CampaignPaused => "campaign_paused",
        Refusal::UserLimitReached { .. } => "user_limit_reached",
        Refusal::PoolExhausted => "pool_exhausted",
        Refusal::UnknownRecipient => "unknown_recipient",
        Refusal::PoolShort { .. } => "pool_exhausted",
        Refusal::NotRedeemed => "not_redeemed",
        Refusal::UnknownReservation => "unknown_reservation",
        Refusal::UnknownWebhook => "unknown_webhook",
        Refusal::WebhookExists => "webhook_exists",
        Refusal::TooManyWebhooks { .. } => "too_many_webhooks",
        Refusal::ReservationExpired => "reservation_expired",
        Refusal::IdempotencyTableFull(_) => "idempotency_table_full",
        Refusal::Unavailable(_) => "unavailable",
    }
}
