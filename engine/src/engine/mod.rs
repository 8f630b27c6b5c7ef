//! The engine: campaigns, code lookup and every transition, live and in
//! replay.
//!
//! A live operation decides under the code's busy bit, appends its record to
//! the journal while still holding it, then applies the record's effects and
//! publishes the new state. Replay re-validates each record against the same
//! rules and applies the same effects, so both paths share `effect_*`. Each
//! concern's file keeps its rule checks, live path, replay path and effects
//! side by side; [`Engine::apply_replayed`] only dispatches to them.

use std::collections::BTreeSet;

use crate::Timestamp;
use crate::campaign::Campaign;
use crate::idempotency::IdempotencyTable;
use crate::record::{CampaignNo, Journal, Lsn, Record, ReservationId, Slot};
use crate::state::{CodeState, Locked, StateMap, Transition};
use crate::sync::{AtomicPtr, AtomicU64, IntHasher, Mutex, Ordering, RwLock, ShardedMap};

mod assign;
mod campaigns;
mod idempotent;
mod import;
mod lookup;
mod outcome;
mod reclaim;
mod redeem;
mod refusal;
mod replay;
mod reserve;
mod snapshot;
mod webhooks;

pub use assign::Pledge;
pub use import::Importer;
pub use outcome::{
    Assigned, CodeRef, CodeStatus, Config, Effect, IdemKey, ImportReport, PrintedCode, RandomIds,
    Redeemed, Renderer, Reserved,
};
pub use reclaim::Reclaimed;
pub use refusal::{Refusal, ReplayError};
pub use webhooks::{
    WEBHOOK_DESCRIPTION_BYTES_MAX, WEBHOOK_FILTER_ENTRIES_MAX, WEBHOOK_URL_BYTES_MAX, WEBHOOKS_MAX,
    Webhook, WebhookPatch, WebhookSpec,
};

use reserve::HoldRef;

/// Most campaigns an engine holds; two under loom, where each slot is a
/// modelled atomic.
pub const CAMPAIGNS_MAX: usize = if cfg!(loom) { 2 } else { 1 << 14 };
/// Most codes `generate` may add at once, as API.md says.
pub const GENERATE_MAX: u64 = 1_000_000_000;
/// Longest `user`, `order` and `recipient`, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest imported code, in characters.
pub const IMPORTED_CODE_CHARS_MAX: usize = 64;
/// The highest acceptable chance that one guess hits an issued code.
pub const GUESS_PROBABILITY_MAX: f64 = 1e-6;
/// Imported codes per `CodesImported` record.
pub const IMPORT_BATCH_CODES: usize = 1024;
/// The snapshot format's version byte.
pub const SNAPSHOT_VERSION: u8 = 1;
/// Rejected import lines reported in detail.
pub const IMPORT_REJECTS_REPORTED_MAX: usize = 100;

/// The whole in-memory state.
pub struct Engine<J> {
    /// Where every change is recorded before it takes effect.
    journal: J,
    /// Campaigns by number - 1; set once, freed in `Drop`, never moved.
    campaigns: Box<[AtomicPtr<Campaign>]>,
    /// Campaigns installed so far: the highest valid number.
    campaign_count: AtomicU64,
    /// Campaign numbers by API id.
    by_id: ShardedMap<Box<str>, CampaignNo>,
    /// Every campaign's prefix and code length, for parsing generated codes.
    prefixes: RwLock<Vec<PrefixEntry>>,
    /// Serialises creations so numbers follow log order.
    create_lock: Mutex<()>,
    /// Normalized imported code -> where it lives.
    imported: ShardedMap<Box<str>, (CampaignNo, Slot)>,
    /// Imported codes over all campaigns, so lookups skip `imported` while
    /// it is empty.
    imported_count: AtomicU64,
    /// Live holds by reservation id, for confirm and release.
    reservations: ShardedMap<ReservationId, HoldRef, IntHasher>,
    /// Live holds by deadline, for the sweeper.
    expiries: Mutex<BTreeSet<(Timestamp, ReservationId)>>,
    /// Expired holds, remembered so a late confirm gets `reservation_expired`.
    expired: ShardedMap<ReservationId, Timestamp, IntHasher>,
    /// The next reservation number when ids are numbered in order; ids
    /// are never reused.
    next_reservation: AtomicU64,
    /// The random part of reservation ids, when the caller supplies one.
    reservation_ids: Option<RandomIds>,
    /// Stored responses by idempotency key.
    idempotency: IdempotencyTable,
    /// Renders the response stored under a transition's idempotency key,
    /// the same way live and in replay.
    render: Renderer,
    /// Webhook subscriptions by id; small, and changed only under its lock.
    webhooks: Mutex<webhooks::Webhooks>,
}

impl<J> std::fmt::Debug for Engine<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Relaxed: a debugging aid.
        let campaigns = self.campaign_count.load(Ordering::Relaxed);
        f.debug_struct("Engine")
            .field("campaigns", &campaigns)
            .finish_non_exhaustive()
    }
}

/// What parsing needs of a campaign to tell its generated codes apart.
#[derive(Debug)]
struct PrefixEntry {
    /// The campaign's prefix; empty for at most one campaign.
    prefix: Box<str>,
    /// Bytes of a normalized code: prefix, body, check symbol. Campaigns
    /// whose prefixes overlap (only the empty one overlaps others) differ
    /// here, so every normalized input has at most one candidate.
    code_len: usize,
    number: CampaignNo,
}

/// A locked code that unlocks on drop unless published.
struct Guard<'m> {
    /// The map the code's state lives in.
    map: &'m StateMap,
    /// The busy bit taken; `None` once published or unlocked.
    locked: Option<Locked>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(locked) = self.locked.take() {
            self.map.unlock(locked);
        }
    }
}

/// A code held busy: what every transition decides and acts on between
/// taking the busy bit and publishing the new state. Dropping it unpublished
/// releases the code unchanged.
struct Held<'c> {
    /// The code's campaign.
    campaign: &'c Campaign,
    /// The code.
    slot: Slot,
    /// Its busy bit.
    guard: Guard<'c>,
}

impl<'c> Held<'c> {
    /// Takes the code's busy bit, waiting out a transition in progress;
    /// `None` when the slot does not exist.
    fn take(campaign: &'c Campaign, slot: Slot) -> Option<Held<'c>> {
        let map = campaign.map(slot);
        map.lock(slot.index())
            .map(|locked| Held::from_locked(campaign, slot, map, locked))
    }

    /// Wraps a busy bit already taken in `map`.
    fn from_locked(campaign: &'c Campaign, slot: Slot, map: &'c StateMap, locked: Locked) -> Self {
        Held {
            campaign,
            slot,
            guard: Guard {
                map,
                locked: Some(locked),
            },
        }
    }

    /// The code's state when it was taken.
    fn state(&self) -> CodeState {
        self.guard.locked.as_ref().expect("held code").state
    }

    /// Records `lsn` as the code's last record and updates its metadata.
    fn update_meta(&self, lsn: Lsn, f: impl FnOnce(&mut crate::campaign::CodeMeta)) {
        self.campaign.update_meta(self.slot, |meta| {
            meta.lsn = lsn;
            f(meta);
        });
    }

    /// Publishes the new state and releases the code.
    fn publish(mut self, transition: Transition, to: CodeState) {
        let locked = self.guard.locked.take().expect("held code");
        self.guard.map.publish(locked, transition, to);
    }
}

/// A record in the log and its LSN: what an effect applies.
#[derive(Clone, Copy)]
struct Logged<'r> {
    lsn: Lsn,
    record: &'r Record<'r>,
}

impl<J: Journal> Engine<J> {
    /// Publishes the new state of a held code after its record's effects.
    /// A keyed record's response is rendered first, while the code is
    /// still held: it shows the state just after this record, never a
    /// later transition, and replay renders the same bytes.
    fn publish_logged(
        &self,
        held: Held<'_>,
        logged: Logged<'_>,
        transition: Transition,
        to: CodeState,
    ) {
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::RenderAfterPublish) {
            let (campaign, slot) = (held.campaign, held.slot);
            held.publish(transition, to);
            let code = CodeRef {
                campaign,
                slot,
                printed: None,
            };
            let status = self.status_of(code, logged.record.at());
            self.store_rendered(logged.lsn, logged.record, campaign, Some(&status));
            return;
        }
        if logged.record.idem().is_some() {
            let (campaign, slot) = (held.campaign, held.slot);
            let meta = campaign.meta_of(slot);
            let status = self.status_in(campaign, slot, to.public(), &meta, logged.record.at());
            self.store_rendered(logged.lsn, logged.record, campaign, Some(&status));
        }
        held.publish(transition, to);
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.len() > NAME_BYTES_MAX {
        return Err(Refusal::InvalidRequest {
            field,
            message: format!("must be 1 to {NAME_BYTES_MAX} bytes, got {}", value.len()),
        });
    }
    Ok(())
}

impl<J: Journal> Engine<J> {
    pub fn new(journal: J, config: Config, render: Renderer) -> Engine<J> {
        Engine {
            journal,
            campaigns: (0..CAMPAIGNS_MAX)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            campaign_count: AtomicU64::new(0),
            by_id: ShardedMap::default(),
            prefixes: RwLock::new(Vec::new()),
            create_lock: Mutex::new(()),
            imported: ShardedMap::default(),
            imported_count: AtomicU64::new(0),
            reservations: ShardedMap::default(),
            expiries: Mutex::new(BTreeSet::new()),
            expired: ShardedMap::default(),
            next_reservation: AtomicU64::new(1),
            reservation_ids: config.reservation_ids,
            idempotency: IdempotencyTable::new(config.idempotency_entries_max),
            render,
            webhooks: Mutex::new(webhooks::Webhooks::default()),
        }
    }

    pub fn journal(&self) -> &J {
        &self.journal
    }

    pub fn idempotency(&self) -> &IdempotencyTable {
        &self.idempotency
    }

    fn campaign_total(&self) -> u64 {
        // Acquire pairs with the Release in `install`.
        self.campaign_count.load(Ordering::Acquire)
    }

    /// The campaign with this number, if it exists.
    pub fn campaign_by_number(&self, number: CampaignNo) -> Option<&Campaign> {
        if number == 0 || u64::from(number) > self.campaign_total() {
            return None;
        }
        // Acquire pairs with the Release store in `install`.
        let ptr = self.campaigns[number as usize - 1].load(Ordering::Acquire);
        // SAFETY: non-null pointers come from `Box::into_raw` in `install`,
        // are never replaced, and are freed only in `Drop`, which cannot run
        // while `&self` is borrowed.
        (!ptr.is_null()).then(|| unsafe { &*ptr })
    }

    pub fn campaign(&self, id: &str) -> Option<&Campaign> {
        let number = *self.by_id.shard(id).get(id)?;
        self.campaign_by_number(number)
    }

    /// Every campaign, in creation order.
    pub fn campaigns(&self) -> impl Iterator<Item = &Campaign> {
        (1..=self.campaign_total() as CampaignNo).filter_map(|n| self.campaign_by_number(n))
    }

    fn append(&self, record: &Record<'_>) -> Result<Lsn, Refusal> {
        self.touch_history(record);
        self.journal.append(record).map_err(Refusal::Unavailable)
    }

    /// Feeds a record's time to its campaign's history before the record
    /// takes effect, live and in replay alike: one atomic load unless the
    /// record opens a new interval.
    fn touch_history(&self, record: &Record<'_>) {
        if let Some(campaign) = record.campaign().and_then(|n| self.campaign_by_number(n)) {
            campaign.history.touch(record.at(), || campaign.counts());
        }
    }
}

impl<J> Drop for Engine<J> {
    fn drop(&mut self) {
        for ptr in self.campaigns.iter() {
            // Relaxed: `&mut self` excludes every other thread.
            let ptr = ptr.load(Ordering::Relaxed);
            if !ptr.is_null() {
                // SAFETY: from `Box::into_raw` in `install`, freed once here.
                drop(unsafe { Box::from_raw(ptr) });
            }
        }
    }
}
