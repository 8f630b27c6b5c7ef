//! Redemption, its rollback, and voiding a code.

use std::borrow::Cow;

use crate::Timestamp;
use crate::campaign::{Campaign, Claim, CodeMeta, Redemption};
use crate::history::HistoryEvent;
use crate::record::{Journal, Lsn, Record, ReservationId};
use crate::state::{CodeState, PublicState, Transition};

use super::refusal::replay_err;
use super::{
    CodeStatus, Engine, Held, IdemKey, Logged, Redeemed, Refusal, ReplayError, check_name,
};

impl<J: Journal> Engine<J> {
    /// Checks that bar any new hold or redemption of a locked code.
    pub(super) fn code_usable(
        campaign: &Campaign,
        state: CodeState,
        meta: &CodeMeta,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        match state.public() {
            PublicState::Redeemed => Err(Refusal::AlreadyRedeemed {
                redeemed_at: meta.redemption.as_ref().map_or(Timestamp(0), |r| r.at()),
                lsn: meta.lsn,
            }),
            PublicState::Voided => Err(Refusal::CodeVoided { lsn: meta.lsn }),
            _ if meta.deadline(&campaign.terms).is_some_and(|d| now >= d) => {
                Err(Refusal::CodeExpired)
            }
            _ => Ok(()),
        }
    }

    pub fn redeem<'a>(
        &'a self,
        input: &str,
        user: &'a str,
        order: Option<&'a str>,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Redeemed<'a>, Refusal> {
        check_name("user", user)?;
        if let Some(order) = order {
            check_name("order", order)?;
        }
        let code = self.locate(input, now)?;
        let campaign = code.campaign;
        let slot = code.slot;
        let (held, meta) = self.lock_live(campaign, slot, now)?;
        // A code's own state first: a redeemed code reports `redeemed` even
        // in a paused or ended campaign.
        Self::code_usable(campaign, held.state(), &meta, now)?;
        self.window_check(campaign, now)?;
        let limit = campaign.terms.per_user_limit;
        let mut reservation = None;
        let claimed = match &meta.hold {
            Some(hold) if held.state().public() == PublicState::Reserved => {
                if &*hold.user != user {
                    return Err(Refusal::CodeReserved { lsn: meta.lsn });
                }
                // The holder redeems directly: the hold's claim carries over.
                reservation = Some(hold.id);
                None
            }
            _ => Some(
                campaign
                    .claim_user(user)
                    .map_err(|()| Refusal::UserLimitReached { limit })?,
            ),
        };
        let record = Record::Redeemed {
            at: now,
            campaign: campaign.number,
            slot,
            user,
            order,
            reservation,
            idem,
        };
        let lsn = match self.append(&record) {
            Ok(lsn) => lsn,
            Err(refusal) => {
                #[cfg(loom)]
                let claimed = claimed.filter(|_| {
                    !crate::mutations::on(crate::mutations::Mutation::RedeemKeepsClaimOnFailure)
                });
                if claimed.is_some() {
                    campaign.unclaim_user(user);
                }
                return Err(refusal);
            }
        };
        let printed = code.printed_code();
        if self.effect_redeemed(
            held,
            Logged {
                lsn,
                record: &record,
            },
            claimed,
        ) {
            self.after_depletion(campaign, now);
        }
        Ok(Redeemed {
            code: printed,
            campaign: campaign.id(),
            user: Cow::Borrowed(user),
            order,
            redeemed_at: now,
            lsn,
        })
    }

    /// Replays a redemption, direct or through a hold. A direct one needs an
    /// available or assigned code and takes a per-user claim; one through a
    /// hold needs that hold, by that user, and inherits its claim.
    pub(super) fn replay_redeemed(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        held: Held<'_>,
        user: &str,
        reservation: Option<ReservationId>,
    ) -> Result<(), ReplayError> {
        let campaign = held.campaign;
        let mut claimed = None;
        match reservation {
            Some(id) => match campaign.meta_of(held.slot).hold {
                Some(hold)
                    if hold.id == id
                        && &*hold.user == user
                        && held.state().public() == PublicState::Reserved => {}
                _ => {
                    return Err(replay_err(
                        lsn,
                        format!("redeem through reservation {id} that does not hold the code"),
                    ));
                }
            },
            None => {
                if !matches!(held.state(), CodeState::Available | CodeState::Assigned) {
                    return Err(replay_err(
                        lsn,
                        format!("redeem of a code in state {:?}", held.state()),
                    ));
                }
                claimed = Some(
                    campaign
                        .claim_user(user)
                        .map_err(|()| replay_err(lsn, format!("user {user} over its limit")))?,
                );
            }
        }
        // No low-stock check: replay never appends; the live run's own
        // `LowStock` record, if it wrote one, follows in the log.
        let _ = self.effect_redeemed(held, Logged { lsn, record }, claimed);
        Ok(())
    }

    /// Applies a logged redemption to the held code and publishes it;
    /// `claimed` is the user's new claim, `None` when a hold's carries over.
    /// True when the code came straight from the available pool: the live
    /// path then checks the low-stock threshold (replay never appends).
    #[must_use]
    pub(super) fn effect_redeemed(
        &self,
        held: Held<'_>,
        logged: Logged<'_>,
        claimed: Option<Claim>,
    ) -> bool {
        let campaign = held.campaign;
        let from = held.state();
        let Record::Redeemed {
            at,
            user,
            order,
            reservation,
            ..
        } = *logged.record
        else {
            unreachable!("a redemption's effect applies its own record");
        };
        // Built before the page lock is taken.
        let redemption = Redemption::new(user, order, at);
        held.update_meta(logged.lsn, |meta| {
            // The user's claim: taken for this redemption, or the hold's.
            let hold = meta.hold.take();
            assert!(
                claimed.is_some() || hold.is_some(),
                "a redemption has its user's claim"
            );
            meta.redemption = Some(redemption);
        });
        let transition = if reservation.is_some() {
            Transition::Confirm
        } else {
            Transition::Redeem
        };
        self.publish_logged(held, logged, transition, from.redeemed());
        if let Some(id) = reservation {
            self.forget_hold(id);
        }
        campaign.redemptions.note(at);
        campaign.history.count(HistoryEvent::Redemption);
        let depleted = from == CodeState::Available;
        if depleted {
            campaign.depletions.note(at);
        }
        depleted
    }

    pub fn rollback(
        &self,
        input: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<CodeStatus, Refusal> {
        let code = self.locate(input, now)?;
        let (campaign, slot) = (code.campaign, code.slot);
        let held = Held::take(campaign, slot).expect("resolved slot exists");
        if held.state().public() != PublicState::Redeemed {
            return Err(Refusal::NotRedeemed);
        }
        let record = Record::RolledBack {
            at: now,
            campaign: campaign.number,
            slot,
            idem,
        };
        #[cfg(loom)]
        let early = crate::mutations::unclaim_before_record(campaign, slot);
        let lsn = self.append(&record)?;
        #[cfg(loom)]
        crate::mutations::reclaim_after_record(campaign, early);
        self.effect_rolled_back(
            held,
            Logged {
                lsn,
                record: &record,
            },
        );
        Ok(self.status_of(code, now))
    }

    /// Replays a rollback: the code must be redeemed.
    pub(super) fn replay_rolled_back(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        held: Held<'_>,
    ) -> Result<(), ReplayError> {
        if held.state().public() != PublicState::Redeemed {
            return Err(replay_err(
                lsn,
                format!("rollback of a code in state {:?}", held.state()),
            ));
        }
        self.effect_rolled_back(held, Logged { lsn, record });
        Ok(())
    }

    /// Returns the held redeemed code to its state before the redemption
    /// and gives the redeemer's claim back.
    fn effect_rolled_back(&self, held: Held<'_>, logged: Logged<'_>) {
        let campaign = held.campaign;
        let from = held.state();
        let mut user = None;
        held.update_meta(logged.lsn, |meta| {
            user = meta.redemption.take();
        });
        self.publish_logged(held, logged, Transition::Rollback, from.base());
        // After the record: the freed slot may only be claimed by a record
        // that follows this one in the log.
        campaign.unclaim_user(user.expect("a redeemed code has its redemption").user());
        if from.base() == CodeState::Available {
            self.after_stock_added(campaign);
        }
    }

    pub fn void(
        &self,
        input: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<CodeStatus, Refusal> {
        let code = self.locate(input, now)?;
        let (campaign, slot) = (code.campaign, code.slot);
        #[cfg(loom)]
        let stale = crate::mutations::on(crate::mutations::Mutation::VoidChecksStaleState)
            .then(|| campaign.map(slot).peek(slot.index()))
            .flatten();
        let held = Held::take(campaign, slot).expect("resolved slot exists");
        let state = held.state();
        #[cfg(loom)]
        let state = stale.unwrap_or(state);
        match state.public() {
            PublicState::Redeemed => {
                let meta = campaign.meta_of(slot);
                let at = meta.redemption.map_or(Timestamp(0), |r| r.at());
                return Err(Refusal::AlreadyRedeemed {
                    redeemed_at: at,
                    lsn: meta.lsn,
                });
            }
            PublicState::Voided => {
                drop(held);
                return Ok(self.status_of(code, now));
            }
            _ => {}
        }
        let record = Record::Voided {
            at: now,
            campaign: campaign.number,
            slot,
            idem,
        };
        let lsn = self.append(&record)?;
        self.effect_voided(
            held,
            Logged {
                lsn,
                record: &record,
            },
        );
        Ok(self.status_of(code, now))
    }

    /// Replays a void: the code must be neither redeemed nor voided.
    pub(super) fn replay_voided(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        held: Held<'_>,
    ) -> Result<(), ReplayError> {
        if matches!(
            held.state().public(),
            PublicState::Redeemed | PublicState::Voided
        ) {
            return Err(replay_err(
                lsn,
                format!("void of a code in state {:?}", held.state()),
            ));
        }
        self.effect_voided(held, Logged { lsn, record });
        Ok(())
    }

    /// Voids the held code, dropping its hold and the holder's claim.
    fn effect_voided(&self, held: Held<'_>, logged: Logged<'_>) {
        let campaign = held.campaign;
        let mut hold = None;
        held.update_meta(logged.lsn, |meta| {
            hold = meta.hold.take();
        });
        self.publish_logged(held, logged, Transition::Void, CodeState::Voided);
        if let Some(hold) = hold {
            self.forget_hold(hold.id);
            campaign.unclaim_user(&hold.user);
        }
    }
}
