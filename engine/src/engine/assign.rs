//! Assignment: a recipient gets an available code of a campaign, or the
//! code it already holds when it is at its per-recipient limit; and the
//! pledges that let an all-or-nothing bulk file take its codes atomically.

use crate::Timestamp;
use crate::history::HistoryEvent;
use std::collections::HashMap;

use crate::campaign::{Campaign, Recipient, RecipientEntry};
use crate::record::{IdemTag, Journal, Lsn, Record, Slot};
use crate::state::{CodeState, Transition};
use crate::sync::{Arc, Ordering};

use super::refusal::replay_err;
use super::{Assigned, Engine, Held, IdemKey, Logged, Refusal, ReplayError, check_name};

/// Codes of a campaign's available pool promised to one all-or-nothing
/// bulk file: no other assignment can take them, so a started file never
/// runs short because of concurrent assignments. What the file did not
/// use goes back to the pool when the pledge is dropped.
#[derive(Debug)]
pub struct Pledge<'e> {
    /// The campaign whose pool the codes are promised from.
    campaign: &'e Campaign,
    /// Promised codes not yet taken.
    left: u64,
}

impl Pledge<'_> {
    /// The promised codes not yet taken.
    pub fn left(&self) -> u64 {
        self.left
    }
}

impl Drop for Pledge<'_> {
    fn drop(&mut self) {
        let mut gate = self.campaign.pool_gate.lock();
        gate.pledged -= self.left;
    }
}

impl<J: Journal> Engine<J> {
    pub fn assign(
        &self,
        id: &str,
        recipient: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Assigned, Refusal> {
        self.assign_pledged(id, recipient, now, idem, None)
    }

    /// Counts the new codes assigning `recipients` in order would take (as
    /// if each were assigned alone: a recipient under its limit takes one a
    /// line until it reaches it, a test recipient one every line, an
    /// invalid name none) and promises that many of the pool to the
    /// caller, or refuses with `PoolShort` having promised nothing. Two
    /// files that do not both fit never both get their pledge.
    pub fn pledge<'r>(
        &self,
        id: &str,
        recipients: impl IntoIterator<Item = &'r str>,
        now: Timestamp,
    ) -> Result<Pledge<'_>, Refusal> {
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        self.window_check(campaign, now)?;
        let limit = campaign.terms.per_recipient_limit as usize;
        let tests = campaign.settings.read().test_recipients.clone();
        // Each recipient's codes so far: held before the file, plus the
        // lines of the file before this one that would assign it one.
        let mut holding: HashMap<&str, usize> = HashMap::new();
        let mut needed = 0u64;
        for recipient in recipients {
            if check_name("recipient", recipient).is_err() {
                continue;
            }
            if tests.contains(recipient) {
                needed += 1;
                continue;
            }
            let held = holding.entry(recipient).or_insert_with(|| {
                campaign
                    .recipients
                    .shard(recipient)
                    .get()
                    .map_or(0, |e| e.slots.len())
            });
            if *held < limit {
                *held += 1;
                needed += 1;
            }
        }
        // The gate is taken after the recipient shards, never with one
        // held in the other order (`assign_fresh` takes it under a shard).
        let mut gate = campaign.pool_gate.lock();
        let free = campaign
            .available()
            .saturating_sub(gate.pledged + gate.in_flight);
        if needed > free {
            return Err(Refusal::PoolShort {
                needed,
                available: free,
            });
        }
        gate.pledged += needed;
        Ok(Pledge {
            campaign,
            left: needed,
        })
    }

    /// [`Engine::assign`], taking a new code from `pledge` while it lasts.
    pub fn assign_pledged(
        &self,
        id: &str,
        recipient: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
        mut pledge: Option<&mut Pledge<'_>>,
    ) -> Result<Assigned, Refusal> {
        check_name("recipient", recipient)?;
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        self.window_check(campaign, now)?;
        if let Some(p) = &pledge {
            assert!(
                std::ptr::eq(p.campaign, campaign),
                "a pledge is spent in its own campaign"
            );
        }
        let test = campaign.settings.read().test_recipients.contains(recipient);
        let tag = idem;
        if test {
            let (slot, lsn) =
                self.assign_fresh(campaign, recipient, true, now, tag, pledge.as_deref_mut())?;
            let mut assigned = self.assigned(campaign, slot, recipient, true, Some(lsn));
            assigned.test = true;
            return Ok(assigned);
        }
        // The recipient's shard stays locked through the assignment, so one
        // recipient racing with itself gets one code. Lock order: recipient
        // shard, then a code; no path takes them the other way round.
        let mut shard = campaign.recipients.shard(recipient);
        if let Some(entry) = shard.get()
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
        let (slot, lsn) = self.assign_fresh(campaign, recipient, false, now, tag, pledge)?;
        let entry =
            shard.get_or_insert_with(|name| name.into(), || RecipientEntry { slots: Vec::new() });
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
            test: false,
            lsn,
        }
    }

    /// Takes an available code, from `pledge` while it lasts or else from
    /// what no pledge holds, logs its assignment, publishes it.
    fn assign_fresh(
        &self,
        campaign: &Campaign,
        recipient: &str,
        test: bool,
        now: Timestamp,
        idem: Option<IdemTag<'_>>,
        pledge: Option<&mut Pledge<'_>>,
    ) -> Result<(Slot, Lsn), Refusal> {
        let pledged = match pledge {
            Some(p) if p.left > 0 => {
                p.left -= 1;
                true
            }
            _ => false,
        };
        if !pledged {
            let mut gate = campaign.pool_gate.lock();
            // Counted from the counters only while a file holds a pledge:
            // otherwise the pool scan below decides alone, as it always did.
            if gate.pledged > 0 && campaign.available() <= gate.pledged + gate.in_flight {
                return Err(Refusal::PoolExhausted);
            }
            gate.in_flight += 1;
        }
        let taken = self.take_available(campaign, recipient, test, now, idem);
        // After the publish: until then the code counted as available, and
        // the pledge or the in-flight count kept it from being promised.
        let mut gate = campaign.pool_gate.lock();
        if pledged {
            gate.pledged -= 1;
        } else {
            gate.in_flight -= 1;
        }
        taken
    }

    fn take_available(
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
                .get_or_insert_with(|name| name.into(), || RecipientEntry { slots: Vec::new() });
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
        held.update_meta(logged.lsn, |meta| {
            meta.recipient = Some(Recipient::new(Arc::from(recipient), at));
        });
        self.publish_logged(held, logged, Transition::Assign, CodeState::Assigned);
        if test {
            // Relaxed: a statistic.
            campaign.test_assignments.fetch_add(1, Ordering::Relaxed);
        }
        campaign.assignments.note(at);
        campaign.history.count(HistoryEvent::Assignment);
        campaign.depletions.note(at);
    }
}
