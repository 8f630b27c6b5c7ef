//! Assignment: a recipient gets an available code of a campaign, or the
//! code it already holds when it is at its per-recipient limit.

use crate::Timestamp;
use crate::campaign::{Campaign, RecipientEntry};
use crate::record::{IdemTag, Journal, Lsn, Record, Slot};
use crate::state::{CodeState, Transition};
use crate::sync::{Arc, Ordering};

use super::refusal::replay_err;
use super::{Assigned, Engine, Held, IdemKey, Logged, Refusal, ReplayError, check_name};

impl<J: Journal> Engine<J> {
    pub fn assign(
        &self,
        id: &str,
        recipient: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Assigned, Refusal> {
        check_name("recipient", recipient)?;
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        self.window_check(campaign, now)?;
        let test = campaign.settings.read().test_recipients.contains(recipient);
        let tag = idem;
        if test {
            let (slot, lsn) = self.assign_fresh(campaign, recipient, true, now, tag)?;
            return Ok(self.assigned(campaign, slot, recipient, true, Some(lsn)));
        }
        // The recipient's shard stays locked through the assignment, so one
        // recipient racing with itself gets one code. Lock order: recipient
        // shard, then a code; no path takes them the other way round.
        let mut shard = campaign.recipients.shard(recipient);
        if let Some(entry) = shard.get(recipient)
            && entry.slots.len() >= campaign.terms.per_recipient_limit as usize
        {
            let slot = entry.slots[0];
            drop(shard);
            return Ok(self.assigned(campaign, slot, recipient, false, None));
        }
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::AssignUnlocksRecipient) {
            drop(shard);
            shard = campaign.recipients.shard(recipient);
        }
        let (slot, lsn) = self.assign_fresh(campaign, recipient, false, now, tag)?;
        let entry = shard
            .entry(recipient.into())
            .or_insert_with(|| RecipientEntry { slots: Vec::new() });
        entry.slots.push(slot);
        drop(shard);
        Ok(self.assigned(campaign, slot, recipient, true, Some(lsn)))
    }

    /// The answer to an assignment of `slot`.
    fn assigned(
        &self,
        campaign: &Campaign,
        slot: Slot,
        recipient: &str,
        new: bool,
        lsn: Option<Lsn>,
    ) -> Assigned {
        let state = campaign
            .map(slot)
            .get(slot.index())
            .expect("assigned slot exists")
            .public();
        Assigned {
            code: campaign.code_of(slot),
            campaign: campaign.id().into(),
            recipient: recipient.into(),
            state,
            new,
            lsn,
        }
    }

    /// Takes an available code, logs its assignment, publishes it.
    fn assign_fresh(
        &self,
        campaign: &Campaign,
        recipient: &str,
        test: bool,
        now: Timestamp,
        idem: Option<IdemTag<'_>>,
    ) -> Result<(Slot, Lsn), Refusal> {
        // Relaxed: the cursor only spreads assigners over the pool.
        let start = campaign.assign_cursor.fetch_add(1, Ordering::Relaxed);
        // Generated codes first, then imported ones.
        let Some((map, make_slot, locked)) = campaign
            .maps()
            .into_iter()
            .find_map(|(map, make_slot)| map.lock_available(start).map(|l| (map, make_slot, l)))
        else {
            return Err(Refusal::PoolExhausted);
        };
        let slot = make_slot(locked.slot);
        let held = Held::from_locked(campaign, slot, map, locked);
        let record = Record::Assigned {
            at: now,
            campaign: campaign.number,
            slot,
            recipient,
            test,
            idem,
        };
        let lsn = self.append(&record)?;
        self.effect_assigned(
            held,
            Logged {
                lsn,
                record: &record,
            },
            recipient,
            test,
            now,
        );
        self.after_depletion(campaign, now);
        Ok((slot, lsn))
    }

    /// Replays an assignment: the code must be available, and a recipient
    /// that is not a test recipient must be under its limit.
    pub(super) fn replay_assigned(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        held: Held<'_>,
        recipient: &str,
        test: bool,
    ) -> Result<(), ReplayError> {
        let campaign = held.campaign;
        if held.state() != CodeState::Available {
            return Err(replay_err(
                lsn,
                format!("assign of a code in state {:?}", held.state()),
            ));
        }
        if !test {
            let mut shard = campaign.recipients.shard(recipient);
            let entry = shard
                .entry(recipient.into())
                .or_insert_with(|| RecipientEntry { slots: Vec::new() });
            if entry.slots.len() >= campaign.terms.per_recipient_limit as usize {
                return Err(replay_err(
                    lsn,
                    format!("recipient {recipient} over its limit"),
                ));
            }
            entry.slots.push(held.slot);
        }
        self.effect_assigned(held, Logged { lsn, record }, recipient, test, record.at());
        Ok(())
    }

    /// Applies a logged assignment to the held code and publishes it.
    fn effect_assigned(
        &self,
        held: Held<'_>,
        logged: Logged<'_>,
        recipient: &str,
        test: bool,
        at: Timestamp,
    ) {
        let campaign = held.campaign;
        let deadline = campaign
            .terms
            .code_valid_seconds_after_assignment
            .map(|s| Timestamp(at.0.saturating_add(s.saturating_mul(1000))));
        held.update_meta(logged.lsn, |meta| {
            meta.recipient = Some(Arc::from(recipient));
            meta.assigned_at = Some(at);
            meta.deadline = deadline;
        });
        self.publish_logged(held, logged, Transition::Assign, CodeState::Assigned);
        if test {
            // Relaxed: a statistic.
            campaign.test_assignments.fetch_add(1, Ordering::Relaxed);
        }
        campaign.assignments.note(at);
        campaign.depletions.note(at);
    }
}
