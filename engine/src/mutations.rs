//! Deliberate bugs for the loom models to find; compiled only under
//! `cfg(loom)`, so a production build holds none of this.
//!
//! Each [`Mutation`] breaks one concurrency protocol of the engine in the
//! smallest way that still compiles. `loom-tests` switches one on, runs the
//! model of that protocol and asserts that loom finds a failing
//! interleaving: a model that cannot fail proves nothing.
//!
//! The switch is a std atomic, not loom's, so it is no part of any modelled
//! state: a test sets it before `loom::model` and clears it after, and the
//! engine only reads it. This is the one place outside `sync` that names an
//! atomic, because it must not be a loom one.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::campaign::{Campaign, UserEntry};
use crate::record::Slot;
use crate::sync::Arc;

/// One deliberate bug. At most one is active at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Mutation {
    /// `StateMap::lock` and `try_lock` read the busy bit and set it later
    /// with `fetch_or`, instead of one compare-and-swap.
    BusyBitCheckThenSet = 1,
    /// `Campaign::claim_user` checks the per-user limit and increments the
    /// count in two critical sections.
    ClaimCheckThenIncrement,
    /// `redeem` keeps the user's claimed slot when the journal refuses its
    /// record.
    RedeemKeepsClaimOnFailure,
    /// `rollback` gives the user's slot back before its record is appended
    /// (and takes it again after, so the final count adds up): a redemption
    /// that claims the freed slot can reach the log before the rollback.
    RollbackUnclaimsBeforeRecord,
    /// `assign` lets go of the recipient's shard between checking what the
    /// recipient holds and assigning it a code.
    AssignUnlocksRecipient,
    /// `void` decides on the code's state read before taking its busy bit.
    VoidChecksStaleState,
    /// `lock_hold` trusts the hold it read before taking the busy bit.
    LockHoldChecksBeforeLock,
    /// `IdempotencyTable::begin` inserts a key without re-checking, under the
    /// shard lock, that nobody took it since the lookup.
    IdempotencyInsertsWithoutRecheck,
    /// A keyed transition of a code renders its stored response after the
    /// code is published, when a later transition may already show.
    RenderAfterPublish,
    /// `reclaim` decides on a code's state read before taking its busy bit.
    ReclaimChecksStaleState,
}

/// The active mutation as its discriminant; 0 for none.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Switches `mutation` on (`None`: all off). Call it outside `loom::model`.
pub fn set(mutation: Option<Mutation>) {
    // SeqCst: a test switch, set between model runs; cost is irrelevant.
    ACTIVE.store(mutation.map_or(0, |m| m as u8), Ordering::SeqCst);
}

/// Whether `mutation` is the active one.
pub(crate) fn on(mutation: Mutation) -> bool {
    // SeqCst: pairs with `set`; never on a production path.
    ACTIVE.load(Ordering::SeqCst) == mutation as u8
}

/// [`Mutation::ClaimCheckThenIncrement`]: the limit check and the increment
/// each take the user's shard lock on their own.
pub(crate) fn claim_check_then_increment(
    campaign: &Campaign,
    user: &str,
    limit: u32,
) -> Result<crate::campaign::Claim, ()> {
    let under_limit = campaign
        .users
        .shard(user)
        .get(user)
        .is_none_or(|entry| limit == 0 || entry.claimed < limit);
    if !under_limit {
        return Err(());
    }
    let mut shard = campaign.users.shard(user);
    let name: Arc<str> = Arc::from(user);
    let entry = shard
        .entry(name.clone())
        .or_insert(UserEntry { name, claimed: 0 });
    entry.claimed += 1;
    Ok(crate::campaign::Claim)
}

/// [`Mutation::RollbackUnclaimsBeforeRecord`], first half: frees the
/// redeemer's slot while the rollback's record is not yet in the log.
pub(crate) fn unclaim_before_record(campaign: &Campaign, slot: Slot) -> Option<Arc<str>> {
    if !on(Mutation::RollbackUnclaimsBeforeRecord) {
        return None;
    }
    let user: Arc<str> = campaign.meta_of(slot).redemption?.user().into();
    campaign.unclaim_user(&user);
    Some(user)
}

/// Second half: takes the slot again after the append, so that
/// `effect_rolled_back` (shared with replay) gives it back as usual.
pub(crate) fn reclaim_after_record(campaign: &Campaign, user: Option<Arc<str>>) {
    if let Some(user) = user {
        // Limit 0: unlimited, the slot was this user's a moment ago.
        let _ = campaign.claim_user_up_to(&user, 0);
    }
}
