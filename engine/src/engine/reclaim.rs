//! Reclaim: a recipient whose message bounced gives back the codes it was
//! assigned and has not started to use. Each such code is taken back by
//! one `Unassigned` record (available again, or voided), so the recipient's
//! count drops and a later assignment gives it a fresh code; held and
//! redeemed codes stay with it and are reported.

use crate::Timestamp;
use crate::campaign::Campaign;
use crate::record::{Journal, Lsn, Record, Slot};
use crate::state::{CodeState, PublicState, Transition};

use super::refusal::replay_err;
use super::{Engine, Held, Refusal, ReplayError, check_name};

/// What a reclaim did for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// The recipient, as asked for.
    pub recipient: String,
    /// Codes taken back: available again, or voided when the reclaim voids.
    pub released: Vec<String>,
    /// Codes the recipient keeps, with their state: reserved or redeemed
    /// (in use), or voided before the reclaim.
    pub kept: Vec<(String, PublicState)>,
    /// Every record this answer reports (its own, and the last record of
    /// each kept code) is at or below this LSN.
    pub lsn: Lsn,
}

impl<J: Journal> Engine<J> {
    /// Takes back the recipient's assigned, unused codes. Campaign settings
    /// (window, pause) do not stop it: it is clean-up after a send, not a
    /// new use of the pool. Test recipients hold no counted codes, so they
    /// are unknown here.
    pub fn reclaim(
        &self,
        id: &str,
        recipient: &str,
        void: bool,
        now: Timestamp,
    ) -> Result<Reclaimed, Refusal> {
        check_name("recipient", recipient)?;
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        // The recipient's shard stays locked throughout, so an assignment
        // to the same recipient waits and then sees the lower count. Lock
        // order as in `assign`: recipient shard, then each code.
        let mut shard = campaign.recipients.shard(recipient);
        let Some(entry) = shard.get_mut() else {
            return Err(Refusal::UnknownRecipient);
        };
        let mut out = Reclaimed {
            recipient: recipient.into(),
            released: Vec::new(),
            kept: Vec::new(),
            lsn: 0,
        };
        for slot in entry.slots.clone() {
            #[cfg(loom)]
            let stale = crate::mutations::on(crate::mutations::Mutation::ReclaimChecksStaleState)
                .then(|| campaign.map(slot).peek(slot.index()))
                .flatten();
            let held = Held::take(campaign, slot).expect("a recipient's slot exists");
            let state = held.state();
            #[cfg(loom)]
            let state = stale.unwrap_or(state);
            if state != CodeState::Assigned {
                let lsn = campaign.meta_of(slot).lsn;
                drop(held);
                out.lsn = out.lsn.max(lsn);
                out.kept.push((campaign.code_of(slot), state.public()));
                continue;
            }
            let record = Record::Unassigned {
                at: now,
                campaign: campaign.number,
                slot,
                recipient,
                void,
            };
            // A failed append leaves this code and the ones after it with
            // the recipient; those before it were logged and are gone.
            let lsn = self.append(&record)?;
            self.effect_unassigned(held, lsn, void);
            // After the record: a later assignment to this recipient, which
            // the freed place admits, appends after it.
            entry.slots.retain(|s| *s != slot);
            out.lsn = out.lsn.max(lsn);
            out.released.push(campaign.code_of(slot));
        }
        if entry.slots.is_empty() {
            shard.remove();
        }
        Ok(out)
    }

    /// Replays a reclaim of one code: it must be assigned, to that
    /// recipient, and counted among the recipient's codes.
    pub(super) fn replay_unassigned(
        &self,
        lsn: Lsn,
        held: Held<'_>,
        recipient: &str,
        void: bool,
    ) -> Result<(), ReplayError> {
        let campaign = held.campaign;
        if held.state() != CodeState::Assigned {
            return Err(replay_err(
                lsn,
                format!("reclaim of a code in state {:?}", held.state()),
            ));
        }
        if campaign.meta_of(held.slot).recipient.as_deref() != Some(recipient) {
            return Err(replay_err(
                lsn,
                format!("reclaim from {recipient} of a code assigned to someone else"),
            ));
        }
        if !forget_slot(campaign, recipient, held.slot) {
            return Err(replay_err(
                lsn,
                format!("reclaim from {recipient} of a code it is not counted for"),
            ));
        }
        self.effect_unassigned(held, lsn, void);
        Ok(())
    }

    /// Takes the held assigned code from its recipient and publishes it.
    /// A code back in the pool keeps no metadata, as a never-assigned one:
    /// an available code has none (`Campaign::meta_in`), and a snapshot
    /// then restores it exactly. A voided one keeps only its LSN.
    fn effect_unassigned(&self, held: Held<'_>, lsn: Lsn, void: bool) {
        let campaign = held.campaign;
        let to = if void {
            held.update_meta(lsn, |meta| {
                meta.recipient = None;
            });
            CodeState::Voided
        } else {
            campaign.remove_meta(held.slot);
            CodeState::Available
        };
        held.publish(Transition::Unassign, to);
        if !void {
            self.after_stock_added(campaign);
        }
    }
}

/// Removes `slot` from the recipient's codes; false if it was not there.
fn forget_slot(campaign: &Campaign, recipient: &str, slot: Slot) -> bool {
    let mut shard = campaign.recipients.shard(recipient);
    let Some(entry) = shard.get_mut() else {
        return false;
    };
    let before = entry.slots.len();
    entry.slots.retain(|s| *s != slot);
    let found = entry.slots.len() != before;
    if entry.slots.is_empty() {
        shard.remove();
    }
    found
}
