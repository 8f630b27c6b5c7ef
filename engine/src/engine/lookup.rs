//! Finding a code from client input, reporting its status, and the
//! campaign window every new hold, redemption and assignment must be in.

use crate::Timestamp;
use crate::campaign::Campaign;
use crate::codec;
use crate::record::{Journal, Slot};
use crate::state::PublicState;
use crate::sync::Ordering;

use super::import::is_imported_syntax;
use super::{CodeRef, CodeStatus, Engine, Refusal, check_name};

impl<J: Journal> Engine<J> {
    /// Finds a code from client input, without touching the limiter.
    ///
    /// A normalized input equal to an imported code is that code.
    /// Otherwise it is read as a generated code of the one campaign whose
    /// prefix it starts with and whose codes have its length (creation
    /// keeps that campaign unique): a body or check symbol that does not
    /// decode is `MalformedCode`, an index never issued `UnknownCode`. An
    /// input no campaign could have generated is `UnknownCode` when it is
    /// well formed as an imported code, and `MalformedCode` when it can be
    /// no code at all.
    pub fn resolve(&self, input: &str) -> Result<CodeRef<'_>, Refusal> {
        let mut buf = codec::NormalizedBuf::new();
        codec::normalize(input, &mut buf).map_err(|_| Refusal::MalformedCode)?;
        let normalized = buf.as_str();
        if let Some(found) = self.resolve_imported(normalized) {
            return found;
        }
        let candidate = {
            let prefixes = self.prefixes.read();
            prefixes
                .iter()
                .find(|p| p.code_len == normalized.len() && normalized.starts_with(&*p.prefix))
                .map(|p| p.number)
        };
        let Some(campaign) = candidate.and_then(|n| self.campaign_by_number(n)) else {
            return Err(if is_imported_syntax(input) {
                Refusal::UnknownCode
            } else {
                Refusal::MalformedCode
            });
        };
        let body = &normalized.as_bytes()[campaign.terms.prefix.len()..];
        let index = campaign
            .codec
            .decode_body(body)
            .map_err(|_| Refusal::MalformedCode)?;
        if index >= u128::from(campaign.generated.len()) {
            return Err(Refusal::UnknownCode);
        }
        Ok(CodeRef {
            campaign,
            slot: Slot::generated(index as u64),
            printed: Some(campaign.codec.display(body)),
        })
    }

    /// The imported code `normalized` names, if any.
    fn resolve_imported(&self, normalized: &str) -> Option<Result<CodeRef<'_>, Refusal>> {
        // Relaxed: a hint that skips the map when nothing was imported; an
        // import racing with this lookup may be missed either way.
        if self.imported_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let (number, slot) = self.imported.shard(normalized).get(normalized).copied()?;
        Some(
            self.campaign_by_number(number)
                .filter(|campaign| slot.index() < campaign.imported.len())
                .map(|campaign| CodeRef {
                    campaign,
                    slot,
                    printed: None,
                })
                .ok_or(Refusal::UnknownCode),
        )
    }

    /// `resolve` behind the failed-attempt limiter for `user`.
    pub(super) fn resolve_limited(
        &self,
        input: &str,
        user: &str,
        now: Timestamp,
    ) -> Result<CodeRef<'_>, Refusal> {
        self.limiter
            .check(user, now)
            .map_err(|retry_after_seconds| Refusal::TooManyFailedAttempts {
                retry_after_seconds,
            })?;
        self.resolve(input).inspect_err(|refusal| {
            if matches!(refusal, Refusal::UnknownCode | Refusal::MalformedCode) {
                self.limiter.note_failure(user, now);
            }
        })
    }

    /// A code's status; `user`, when given, is subject to the limiter.
    pub fn status(
        &self,
        input: &str,
        user: Option<&str>,
        now: Timestamp,
    ) -> Result<CodeStatus, Refusal> {
        if let Some(user) = user {
            check_name("user", user)?;
        }
        let code = match user {
            Some(user) => self.resolve_limited(input, user, now)?,
            None => self.resolve(input)?,
        };
        Ok(self.status_of(code, now))
    }

    /// The status of a located code, waiting out a transition in progress.
    pub fn status_of(&self, code: CodeRef<'_>, now: Timestamp) -> CodeStatus {
        let CodeRef { campaign, slot, .. } = code;
        let state = campaign
            .map(slot)
            .get(slot.index())
            .expect("resolved slot exists");
        let meta = campaign.meta_of(slot);
        let settings = campaign.settings.read();
        let public = state.public();
        let deadline = meta.deadline.into_iter().chain(settings.expires_at).min();
        let state_name = match public {
            PublicState::Redeemed | PublicState::Voided => public.as_str(),
            _ if deadline.is_some_and(|d| now >= d) => "expired",
            _ if settings.starts_at.is_some_and(|s| now < s) => "not_started",
            _ => public.as_str(),
        };
        CodeStatus {
            code: campaign.code_of(slot),
            campaign: campaign.id().into(),
            state: state_name,
            recipient: meta.recipient.as_deref().map(Into::into),
            assigned_at: meta.assigned_at,
            reserved_until: meta.hold.as_ref().map(|h| h.until),
            redeemed_by: meta.redemption.as_ref().map(|r| r.user.to_string()),
            redeemed_at: meta.redemption.as_ref().map(|r| r.at),
            order: meta
                .redemption
                .as_ref()
                .and_then(|r| r.order.as_deref().map(Into::into)),
            expires_at: deadline,
        }
    }

    /// Refuses work in a paused, not yet started or ended campaign.
    pub(super) fn window_check(&self, campaign: &Campaign, now: Timestamp) -> Result<(), Refusal> {
        let settings = campaign.settings.read();
        if settings.expires_at.is_some_and(|end| now >= end) {
            return Err(Refusal::CodeExpired);
        }
        if settings.starts_at.is_some_and(|start| now < start) {
            return Err(Refusal::CampaignNotStarted);
        }
        if settings.paused {
            return Err(Refusal::CampaignPaused);
        }
        Ok(())
    }
}
