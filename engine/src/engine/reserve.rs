//! Reservations: a user holds a code for a while, then confirms (redeems)
//! or releases it; the sweeper releases holds whose deadline passed.

use std::borrow::Cow;

use crate::Timestamp;
use crate::campaign::{Campaign, CodeMeta, Hold};
use crate::record::{CampaignNo, IdemTag, Journal, Lsn, Record, ReservationId, Slot};
use crate::state::{CodeState, PublicState, Transition};
use crate::sync::Ordering;

use super::refusal::replay_err;
use super::{
    CodeRef, CodeStatus, Engine, Held, IdemKey, Logged, Redeemed, Refusal, ReplayError, Reserved,
    check_name,
};

/// How long expired holds are remembered, so a late confirm is answered
/// `reservation_expired` rather than `unknown_reservation`.
const EXPIRED_REMEMBERED_MILLIS: u64 = 3_600_000;

/// A live hold, by reservation id.
#[derive(Debug, Clone)]
pub(super) struct HoldRef {
    /// The held code's campaign.
    pub(super) campaign: CampaignNo,
    /// The held code.
    pub(super) slot: Slot,
    /// The hold's deadline, its key in `expiries`.
    pub(super) until: Timestamp,
}

/// Bits of a reservation id below its owner tag.
const RESERVATION_RANDOM_BITS: u32 = 96;

impl<J: Journal> Engine<J> {
    /// [`Engine::reserve_as`] with no owner tag.
    pub fn reserve(
        &self,
        input: &str,
        user: &str,
        ttl_seconds: Option<u64>,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Reserved, Refusal> {
        self.reserve_as(input, user, ttl_seconds, 0, now, idem)
    }

    /// Holds a code for `user`. The new reservation's id carries `owner`
    /// in its high 32 bits, so the caller can tell who may confirm or
    /// release it without keeping anything else.
    pub fn reserve_as(
        &self,
        input: &str,
        user: &str,
        ttl_seconds: Option<u64>,
        owner: u32,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Reserved, Refusal> {
        check_name("user", user)?;
        if ttl_seconds == Some(0) {
            return Err(Refusal::InvalidRequest {
                field: "ttl_seconds",
                message: "must be at least 1".into(),
            });
        }
        let code = self.locate(input, now)?;
        let (campaign, slot) = (code.campaign, code.slot);
        let ttl_max = campaign.terms.reservation_ttl_seconds;
        // A hold may not outlive what the campaign allows: an unbounded one
        // would take its code out of the pool for good.
        let ttl = match ttl_seconds {
            Some(ttl) if ttl > ttl_max => {
                return Err(Refusal::InvalidRequest {
                    field: "ttl_seconds",
                    message: format!(
                        "must be 1 to {ttl_max}, the campaign's reservation_ttl_seconds"
                    ),
                });
            }
            Some(ttl) => ttl,
            None => ttl_max,
        };
        let expires_at = Timestamp(now.0.saturating_add(ttl.saturating_mul(1000)));
        let (held, meta) = self.lock_live(campaign, slot, now)?;
        Self::code_usable(campaign, held.state(), &meta, now)?;
        self.window_check(campaign, now)?;
        if held.state().public() == PublicState::Reserved {
            let hold = meta.hold.expect("a reserved code has its hold");
            if &*hold.user == user {
                // The holder asking again gets its hold back.
                return Ok(Reserved {
                    reservation: hold.id,
                    code: campaign.code_of(slot),
                    user: user.into(),
                    expires_at: hold.until,
                    lsn: 0,
                });
            }
            return Err(Refusal::CodeReserved { lsn: meta.lsn });
        }
        let limit = campaign.terms.per_user_limit;
        campaign
            .claim_user(user)
            .map_err(|()| Refusal::UserLimitReached { limit })?;
        let id = self.new_reservation_id(owner);
        let record = Record::Reserved {
            at: now,
            campaign: campaign.number,
            slot,
            reservation: id,
            user,
            expires_at,
            idem,
        };
        let lsn = match self.append(&record) {
            Ok(lsn) => lsn,
            Err(refusal) => {
                campaign.unclaim_user(user);
                return Err(refusal);
            }
        };
        let code_string = code.code_string();
        self.effect_reserved(
            held,
            Logged {
                lsn,
                record: &record,
            },
            id,
            user,
            expires_at,
        );
        Ok(Reserved {
            reservation: id,
            code: code_string,
            user: user.into(),
            expires_at,
            lsn,
        })
    }

    /// Replays a reservation: the code must be available or assigned, and
    /// the user under its limit.
    pub(super) fn replay_reserved(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        held: Held<'_>,
        reservation: ReservationId,
        user: &str,
        expires_at: Timestamp,
    ) -> Result<(), ReplayError> {
        let campaign = held.campaign;
        if !matches!(held.state(), CodeState::Available | CodeState::Assigned) {
            return Err(replay_err(
                lsn,
                format!("reserve of a code in state {:?}", held.state()),
            ));
        }
        campaign
            .claim_user(user)
            .map_err(|()| replay_err(lsn, format!("user {user} over its limit")))?;
        // Relaxed: replay is single-threaded. Numbered ids stay unique
        // afterwards (random ones need no counter).
        if self.reservation_ids.is_none() {
            let number = (reservation as u64).saturating_add(1);
            self.next_reservation.fetch_max(number, Ordering::Relaxed);
        }
        self.effect_reserved(held, Logged { lsn, record }, reservation, user, expires_at);
        Ok(())
    }

    /// Applies a logged hold to the held code (whose user has claimed) and
    /// publishes it.
    fn effect_reserved(
        &self,
        held: Held<'_>,
        logged: Logged<'_>,
        id: ReservationId,
        user: &str,
        until: Timestamp,
    ) {
        let campaign = held.campaign;
        let name = campaign.user_name(user);
        held.update_meta(logged.lsn, |meta| {
            meta.hold = Some(Box::new(Hold {
                id,
                user: name,
                until,
            }))
        });
        // Indexed before the code is published as reserved: a void or a
        // release that takes the code next must find the hold to forget it.
        self.reservations.shard(&id).insert(
            id,
            HoldRef {
                campaign: campaign.number,
                slot: held.slot,
                until,
            },
        );
        self.expiries.lock().insert((until, id));
        let from = held.state();
        self.publish_logged(held, logged, Transition::Reserve, from.reserved());
    }

    /// Locks a code for a new hold or redemption. A hold already past its
    /// deadline that the sweeper has not reached yet is released first (its
    /// own record), so an expired hold never blocks or is handed out again.
    pub(super) fn lock_live<'c>(
        &self,
        campaign: &'c Campaign,
        slot: Slot,
        now: Timestamp,
    ) -> Result<(Held<'c>, CodeMeta), Refusal> {
        let held = Held::take(campaign, slot).expect("resolved slot exists");
        let meta = campaign.meta_in(slot, held.state());
        match &meta.hold {
            Some(hold) if held.state().public() == PublicState::Reserved && now >= hold.until => {
                self.release_locked(held, hold, true, now, None)?;
                let held = Held::take(campaign, slot).expect("resolved slot exists");
                let meta = campaign.meta_in(slot, held.state());
                Ok((held, meta))
            }
            _ => Ok((held, meta)),
        }
    }

    /// Drops a hold from the indexes of live holds.
    pub(super) fn forget_hold(&self, id: ReservationId) {
        if let Some(hold) = self.reservations.shard(&id).remove(&id) {
            self.expiries.lock().remove(&(hold.until, id));
        }
    }

    /// Locks the code a live reservation holds, checking the hold is still
    /// that reservation's.
    fn lock_hold(&self, id: ReservationId) -> Result<(Held<'_>, Hold), Refusal> {
        let Some(hold_ref) = self.reservations.shard(&id).get(&id).cloned() else {
            if self.expired.shard(&id).contains_key(&id) {
                return Err(Refusal::ReservationExpired);
            }
            return Err(Refusal::UnknownReservation);
        };
        let campaign = self
            .campaign_by_number(hold_ref.campaign)
            .expect("hold's campaign exists");
        #[cfg(loom)]
        let stale = crate::mutations::on(crate::mutations::Mutation::LockHoldChecksBeforeLock)
            .then(|| campaign.meta_of(hold_ref.slot).hold)
            .flatten()
            .filter(|hold| hold.id == id);
        let held = Held::take(campaign, hold_ref.slot).expect("hold's slot exists");
        #[cfg(loom)]
        if let Some(hold) = stale {
            return Ok((held, *hold));
        }
        match campaign.meta_of(hold_ref.slot).hold {
            Some(hold) if hold.id == id && held.state().public() == PublicState::Reserved => {
                Ok((held, *hold))
            }
            // Released or expired between the lookup and the lock.
            _ if self.expired.shard(&id).contains_key(&id) => Err(Refusal::ReservationExpired),
            _ => Err(Refusal::UnknownReservation),
        }
    }

    pub fn confirm<'a>(
        &'a self,
        id: ReservationId,
        order: Option<&'a str>,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Redeemed<'a>, Refusal> {
        if let Some(order) = order {
            check_name("order", order)?;
        }
        let (held, hold) = self.lock_hold(id)?;
        if now >= hold.until {
            self.release_locked(held, &hold, true, now, None)?;
            return Err(Refusal::ReservationExpired);
        }
        let (campaign, slot) = (held.campaign, held.slot);
        self.window_check(campaign, now)?;
        let meta = campaign.meta_in(slot, held.state());
        Self::code_usable(campaign, held.state(), &meta, now)?;
        let record = Record::Redeemed {
            at: now,
            campaign: campaign.number,
            slot,
            user: &hold.user,
            order,
            reservation: Some(id),
            idem,
        };
        let lsn = self.append(&record)?;
        let printed = campaign.printed_code(slot);
        if self.effect_redeemed(
            held,
            Logged {
                lsn,
                record: &record,
            },
            None,
        ) {
            self.after_depletion(campaign, now);
        }
        Ok(Redeemed {
            code: printed,
            campaign: campaign.id(),
            user: Cow::Owned(hold.user.to_string()),
            order,
            redeemed_at: now,
            lsn,
        })
    }

    /// Releases a hold; the code returns to its state before it.
    pub fn release(
        &self,
        id: ReservationId,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<CodeStatus, Refusal> {
        let (held, hold) = self.lock_hold(id)?;
        if now >= hold.until {
            self.release_locked(held, &hold, true, now, None)?;
            return Err(Refusal::ReservationExpired);
        }
        let (campaign, slot) = (held.campaign, held.slot);
        let tag = idem;
        self.release_locked(held, &hold, false, now, tag)?;
        Ok(self.status_of(
            CodeRef {
                campaign,
                slot,
                printed: None,
            },
            now,
        ))
    }

    /// Logs and applies the release of `hold`, whose code is held; `expired`
    /// when its deadline passed rather than the holder letting go.
    fn release_locked(
        &self,
        held: Held<'_>,
        hold: &Hold,
        expired: bool,
        now: Timestamp,
        idem: Option<IdemTag<'_>>,
    ) -> Result<Lsn, Refusal> {
        let campaign = held.campaign;
        let record = Record::Released {
            at: now,
            campaign: campaign.number,
            slot: held.slot,
            reservation: hold.id,
            expired,
            idem,
        };
        let lsn = self.append(&record)?;
        self.effect_released(
            held,
            Logged {
                lsn,
                record: &record,
            },
            hold,
            expired,
            now,
        );
        Ok(lsn)
    }

    /// Replays a release: the reservation must hold the code.
    pub(super) fn replay_released(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        held: Held<'_>,
        reservation: ReservationId,
        expired: bool,
    ) -> Result<(), ReplayError> {
        let campaign = held.campaign;
        let hold = match campaign.meta_of(held.slot).hold {
            Some(hold)
                if hold.id == reservation && held.state().public() == PublicState::Reserved =>
            {
                hold
            }
            _ => {
                return Err(replay_err(
                    lsn,
                    format!("release of reservation {reservation} that does not hold the code"),
                ));
            }
        };
        self.effect_released(held, Logged { lsn, record }, &hold, expired, record.at());
        Ok(())
    }

    /// Applies a logged release to the held code, publishes it, and gives
    /// the holder's claim back.
    fn effect_released(
        &self,
        held: Held<'_>,
        logged: Logged<'_>,
        hold: &Hold,
        expired: bool,
        at: Timestamp,
    ) {
        let campaign = held.campaign;
        held.update_meta(logged.lsn, |meta| {
            meta.hold = None;
        });
        // Remembered before the code is released and the hold forgotten: a
        // confirm that misses the hold in either place must find it here
        // and answer `reservation_expired`, not `unknown_reservation`.
        if expired {
            self.expired.shard(&hold.id).insert(hold.id, at);
        }
        let from = held.state();
        self.publish_logged(held, logged, Transition::Release, from.base());
        self.forget_hold(hold.id);
        campaign.unclaim_user(&hold.user);
    }

    /// Releases every hold whose deadline has passed and prunes
    /// expired-hold memory. The server calls it a few times a second.
    /// Returns the number of holds released.
    pub fn sweep(&self, now: Timestamp) -> Result<usize, Refusal> {
        let due: Vec<ReservationId> = {
            let expiries = self.expiries.lock();
            expiries
                .range(..(Timestamp(now.0 + 1), 0))
                .map(|&(_, id)| id)
                .collect()
        };
        let mut released = 0;
        for id in due {
            match self.lock_hold(id) {
                Ok((held, hold)) => {
                    if now < hold.until {
                        continue;
                    }
                    self.release_locked(held, &hold, true, now, None)?;
                    released += 1;
                }
                // Confirmed or released since the scan.
                Err(_) => continue,
            }
        }
        self.expired.for_each_shard(|map| {
            map.retain(|_, at| now.0.saturating_sub(at.0) < EXPIRED_REMEMBERED_MILLIS)
        });
        Ok(released)
    }

    /// A fresh id: `owner` above 96 random bits, or above the next number
    /// when no random source was configured.
    fn new_reservation_id(&self, owner: u32) -> ReservationId {
        let low_mask = (1u128 << RESERVATION_RANDOM_BITS) - 1;
        let low = match &self.reservation_ids {
            Some(random) => (random.0)() & low_mask,
            // Relaxed: uniqueness comes from the atomic increment alone.
            None => u128::from(self.next_reservation.fetch_add(1, Ordering::Relaxed)),
        };
        u128::from(owner) << RESERVATION_RANDOM_BITS | low
    }

    /// Replays the counters a snapshot closes with.
    pub(super) fn replay_counters(&self, next_reservation: u64) -> Result<(), ReplayError> {
        // Relaxed: replay is single-threaded.
        self.next_reservation
            .fetch_max(next_reservation, Ordering::Relaxed);
        Ok(())
    }
}
