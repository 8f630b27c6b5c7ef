//! Finding a code from client input, reporting its status, and the
//! campaign window every new hold, redemption and assignment must be in.

use crate::Timestamp;
use crate::campaign::{Campaign, CodeMeta};
use crate::codec;
use crate::history::HistoryEvent;
use crate::record::{Journal, Slot};
use crate::state::PublicState;
use crate::sync::Ordering;

use super::import::is_imported_syntax;
use super::{CodeRef, CodeStatus, Engine, Refusal, check_name};
use crate::record::Record;

impl<J: Journal> Engine<J> {
    /// Finds a code from client input; a miss changes nothing.
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
        self.find(input).map_err(Miss::refusal)
    }

    /// [`Engine::resolve`] for an operation at `now`: a guess (a
    /// well-formed code of a campaign that was never issued) is counted
    /// against the campaign, which may raise `guessing_suspected`.
    pub(super) fn locate(&self, input: &str, now: Timestamp) -> Result<CodeRef<'_>, Refusal> {
        self.find(input).map_err(|miss| {
            if let Miss::Guess(campaign) = miss {
                self.note_guess(campaign, now);
            }
            miss.refusal()
        })
    }

    fn find(&self, input: &str) -> Result<CodeRef<'_>, Miss<'_>> {
        let mut buf = codec::NormalizedBuf::new();
        codec::normalize(input, &mut buf).map_err(|_| Miss::Malformed)?;
        if let Some(found) = self.resolve_imported(&buf) {
            return found;
        }
        let normalized = buf.as_bytes();
        let candidate = {
            let prefixes = self.prefixes.read();
            prefixes
                .iter()
                .find(|p| {
                    p.code_len == normalized.len() && normalized.starts_with(p.prefix.as_bytes())
                })
                .map(|p| p.number)
        };
        let Some(campaign) = candidate.and_then(|n| self.campaign_by_number(n)) else {
            return Err(if is_imported_syntax(input) {
                Miss::Unknown
            } else {
                Miss::Malformed
            });
        };
        let body = &normalized[campaign.terms.prefix.len()..];
        let index = campaign
            .codec
            .decode_body(body)
            .map_err(|_| Miss::Malformed)?;
        if index >= u128::from(campaign.generated.len()) {
            return Err(Miss::Guess(campaign));
        }
        Ok(CodeRef {
            campaign,
            slot: Slot::generated(index as u64),
            printed: Some(campaign.codec.display(body)),
        })
    }

    /// The imported code `normalized` names, if any.
    fn resolve_imported(
        &self,
        normalized: &codec::NormalizedBuf,
    ) -> Option<Result<CodeRef<'_>, Miss<'_>>> {
        // Relaxed: a hint that skips the map when nothing was imported; an
        // import racing with this lookup may be missed either way.
        if self.imported_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let normalized = normalized.as_str();
        let (number, slot) = self.imported.shard(normalized).get(normalized).copied()?;
        Some(
            self.campaign_by_number(number)
                .filter(|campaign| slot.index() < campaign.imported.len())
                .map(|campaign| CodeRef {
                    campaign,
                    slot,
                    printed: None,
                })
                .ok_or(Miss::Unknown),
        )
    }

    /// Counts a guess; past the campaign's `guessing_alert_per_minute` it
    /// logs one `guessing_suspected` for the minute. The record is an
    /// event: if the log refuses it, the next guess tries again.
    fn note_guess(&self, campaign: &Campaign, now: Timestamp) {
        let (minute, attempts) = campaign.guesses.note(now);
        campaign.history.touch(now, || campaign.counts());
        campaign.history.count(HistoryEvent::FailedAttempt);
        let alert = campaign.settings.read().guessing_alert_per_minute;
        if alert == 0 || attempts <= alert {
            return;
        }
        let mark = minute + 1;
        // Relaxed: the CAS elects one reporter a minute; the record, not
        // this flag, is what replay and readers rely on.
        let last = campaign.guess_alert_minute.load(Ordering::Relaxed);
        if last >= mark
            || campaign
                .guess_alert_minute
                .compare_exchange(last, mark, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let record = Record::GuessingSuspected {
            at: now,
            campaign: campaign.number,
            attempts,
        };
        match self.append(&record) {
            // Relaxed: a statistic.
            Ok(_) => drop(campaign.guess_alerts.fetch_add(1, Ordering::Relaxed)),
            Err(_) => campaign.guess_alert_minute.store(last, Ordering::Relaxed),
        }
    }

    /// Replays a `guessing_suspected`: no second alert in its minute.
    pub(super) fn replay_guessing(&self, campaign: &Campaign, at: Timestamp) {
        // Relaxed: replay is single-threaded.
        campaign
            .guess_alert_minute
            .fetch_max(at.0 / 60_000 + 1, Ordering::Relaxed);
        campaign.guess_alerts.fetch_add(1, Ordering::Relaxed);
    }

    /// A code's status.
    pub fn status(
        &self,
        input: &str,
        user: Option<&str>,
        now: Timestamp,
    ) -> Result<CodeStatus, Refusal> {
        if let Some(user) = user {
            check_name("user", user)?;
        }
        let code = self.locate(input, now)?;
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
        self.status_in(campaign, slot, state.public(), &meta, now)
    }

    /// A code's status from its state and metadata, read by the caller
    /// (who may hold the code busy).
    pub(super) fn status_in(
        &self,
        campaign: &Campaign,
        slot: Slot,
        public: PublicState,
        meta: &CodeMeta,
        now: Timestamp,
    ) -> CodeStatus {
        let settings = campaign.settings.read();
        let deadline = meta
            .deadline(&campaign.terms)
            .into_iter()
            .chain(settings.expires_at)
            .min();
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
            assigned_at: meta.assigned_at(),
            reserved_until: meta.hold.as_ref().map(|h| h.until),
            redeemed_by: meta.redemption.as_ref().map(|r| r.user().into()),
            redeemed_at: meta.redemption.as_ref().map(|r| r.at()),
            order: meta
                .redemption
                .as_ref()
                .and_then(|r| r.order().map(Into::into)),
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

/// Why an input named no code.
enum Miss<'e> {
    /// It can be no code, or a generated code's check fails.
    Malformed,
    /// It could be an imported code, but is in no campaign.
    Unknown,
    /// A well-formed code of this campaign that was never issued.
    Guess(&'e Campaign),
}

impl Miss<'_> {
    fn refusal(self) -> Refusal {
        match self {
            Miss::Malformed => Refusal::MalformedCode,
            Miss::Unknown | Miss::Guess(_) => Refusal::UnknownCode,
        }
    }
}
