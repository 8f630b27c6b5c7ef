//! Replay: each record from the log goes to the `replay_*` function next to
//! the live path that wrote it, which re-validates it against the state the
//! records before it built and applies the same effect.

use crate::campaign::Campaign;
use crate::record::{CampaignNo, IdemTag, Journal, Lsn, Record, Slot};

use super::refusal::replay_err;
use super::{Engine, Held, ReplayError};

impl<J: Journal> Engine<J> {
    /// Decodes a record's bytes (kind and payload, as the log stores them)
    /// and re-applies it; bytes that do not decode are corruption too.
    pub fn apply_encoded(&self, lsn: Lsn, kind: u8, payload: &[u8]) -> Result<(), ReplayError> {
        let record = Record::decode(kind, payload).map_err(|e| replay_err(lsn, e.to_string()))?;
        self.apply_replayed(lsn, &record)
    }

    /// Re-applies a record from the log, re-validating it against the state
    /// the records before it built. Never consults the clock.
    pub fn apply_replayed(&self, lsn: Lsn, record: &Record<'_>) -> Result<(), ReplayError> {
        self.touch_history(record);
        if let Some((campaign, slot)) = record.code() {
            // As live: the code is held while its record takes effect.
            let held = self.replay_lock(lsn, campaign, slot)?;
            return self.replay_code_record(lsn, record, held);
        }
        match *record {
            Record::CampaignCreated {
                campaign,
                ref key,
                ref spec,
                ..
            } => self.replay_created(lsn, record, campaign, key, spec),
            Record::CampaignUpdated {
                campaign,
                ref patch,
                ..
            } => self.replay_updated(lsn, record, self.campaign_of(lsn, campaign)?, patch),
            Record::CodesGenerated {
                campaign, count, ..
            } => self.replay_generated(lsn, record, self.campaign_of(lsn, campaign)?, count),
            Record::CodesImported {
                campaign,
                first,
                ref codes,
                ..
            } => self.replay_imported(lsn, self.campaign_of(lsn, campaign)?, first, codes),
            Record::IdempotentResponse {
                at,
                key,
                fingerprint,
                status,
                body,
            } => self.replay_response(lsn, IdemTag { key, fingerprint }, status, body, at),
            Record::Counters {
                next_reservation, ..
            } => self.replay_counters(next_reservation),
            Record::LowStock { campaign, .. } => {
                self.replay_low_stock(self.campaign_of(lsn, campaign)?)
            }
            Record::GuessingSuspected { at, campaign, .. } => {
                self.replay_guessing(self.campaign_of(lsn, campaign)?, at);
                Ok(())
            }
            Record::WebhookCreated { .. }
            | Record::WebhookUpdated { .. }
            | Record::WebhookCursor { .. }
            | Record::WebhookDeleted { .. }
            | Record::WebhookDisabled { .. } => self.replay_webhook(lsn, record),
            Record::Assigned { .. }
            | Record::Reserved { .. }
            | Record::Released { .. }
            | Record::Redeemed { .. }
            | Record::RolledBack { .. }
            | Record::Voided { .. }
            | Record::Unassigned { .. } => unreachable!("a record about one code has its code"),
        }
    }

    /// Re-applies a record about the one code `held`.
    fn replay_code_record(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        held: Held<'_>,
    ) -> Result<(), ReplayError> {
        match *record {
            Record::Assigned {
                recipient, test, ..
            } => self.replay_assigned(lsn, record, held, recipient, test),
            Record::Reserved {
                reservation,
                user,
                expires_at,
                ..
            } => self.replay_reserved(lsn, record, held, reservation, user, expires_at),
            Record::Released {
                reservation,
                expired,
                ..
            } => self.replay_released(lsn, record, held, reservation, expired),
            Record::Redeemed {
                user, reservation, ..
            } => self.replay_redeemed(lsn, record, held, user, reservation),
            Record::RolledBack { .. } => self.replay_rolled_back(lsn, record, held),
            Record::Voided { .. } => self.replay_voided(lsn, record, held),
            Record::Unassigned {
                recipient, void, ..
            } => self.replay_unassigned(lsn, held, recipient, void),
            _ => unreachable!("only records about one code have a code"),
        }
    }

    /// The campaign a record names, which an earlier record must have created.
    fn campaign_of(&self, lsn: Lsn, number: CampaignNo) -> Result<&Campaign, ReplayError> {
        self.campaign_by_number(number)
            .ok_or_else(|| replay_err(lsn, format!("unknown campaign number {number}")))
    }

    /// Holds the code a record is about, as its live path did.
    fn replay_lock(
        &self,
        lsn: Lsn,
        number: CampaignNo,
        slot: Slot,
    ) -> Result<Held<'_>, ReplayError> {
        let campaign = self.campaign_of(lsn, number)?;
        Held::take(campaign, slot)
            .ok_or_else(|| replay_err(lsn, format!("slot {:#x} does not exist", slot.0)))
    }
}
