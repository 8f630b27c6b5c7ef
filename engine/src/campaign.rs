//! A campaign: its settings, its codes' state maps and the metadata of the
//! codes that have been touched.

use std::collections::{HashMap, HashSet};

use crate::Timestamp;
use crate::codec::Codec;
use crate::record::{CampaignNo, CampaignPatch, CampaignSpec, Lsn, ReservationId, Slot};
use crate::state::{CodeState, PublicState, StateMap};
use crate::sync::{Arc, AtomicBool, AtomicU64, IntHasher, Mutex, Ordering, RwLock, ShardedMap};

/// Metadata of a touched code. Never-touched codes have none, so a campaign
/// costs its bitmap (half a byte a code) until codes are used.
#[derive(Debug, Default, Clone)]
pub(crate) struct CodeMeta {
    pub recipient: Option<Arc<str>>,
    pub assigned_at: Option<Timestamp>,
    /// Per-code deadline from `code_valid_seconds_after_assignment`.
    pub deadline: Option<Timestamp>,
    pub hold: Option<Hold>,
    pub redemption: Option<Redemption>,
    /// The LSN of the last record about this code: an answer that reports
    /// the code's state waits for this LSN to be durable, and no later one.
    pub lsn: Lsn,
}

#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub id: ReservationId,
    pub user: Arc<str>,
    pub until: Timestamp,
}

#[derive(Debug, Clone)]
pub(crate) struct Redemption {
    pub user: Arc<str>,
    pub at: Timestamp,
    pub order: Option<Box<str>>,
}

/// Settings an update may change.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub starts_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub paused: bool,
    pub test_recipients: HashSet<String>,
    pub test_recipients_order: Vec<String>,
    pub low_stock_threshold: u64,
}

/// Per-user state within a campaign: the user's interned name and how many
/// of the per-user slots (redemptions and live holds) it has claimed.
#[derive(Debug)]
pub(crate) struct UserEntry {
    pub name: Arc<str>,
    pub claimed: u32,
}

/// A recipient's codes in a campaign.
#[derive(Debug)]
pub(crate) struct RecipientEntry {
    pub slots: Vec<Slot>,
}

/// A state map and how its indexes become slots.
pub(crate) type MapOf<'a> = (&'a StateMap, fn(u64) -> Slot);

/// Seconds of history kept for the rate statistics; two under loom, where
/// each bucket is two modelled atomics.
pub(crate) const RATE_WINDOW_SECONDS: u64 = if cfg!(loom) { 2 } else { 60 };

/// Events per second over the last minute, in per-second buckets.
#[derive(Debug)]
pub(crate) struct RateWindow {
    /// (second, count) per bucket; a bucket is reused when its second is old.
    buckets: Box<[(AtomicU64, AtomicU64)]>,
}

impl RateWindow {
    fn new() -> RateWindow {
        RateWindow {
            buckets: (0..RATE_WINDOW_SECONDS)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        }
    }

    pub fn note(&self, at: Timestamp) {
        let second = at.0 / 1000;
        let (bucket_second, count) = &self.buckets[(second % RATE_WINDOW_SECONDS) as usize];
        // Relaxed throughout: a statistic; a lost count on a bucket's turn
        // of the minute is acceptable.
        if bucket_second.load(Ordering::Relaxed) != second {
            bucket_second.store(second, Ordering::Relaxed);
            count.store(0, Ordering::Relaxed);
        }
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Mean per second over the last full minute before `now`.
    pub fn per_second(&self, now: Timestamp) -> f64 {
        let now_second = now.0 / 1000;
        let total: u64 = self
            .buckets
            .iter()
            .filter(|(second, _)| {
                // Relaxed: a statistic.
                let s = second.load(Ordering::Relaxed);
                s <= now_second && now_second - s < RATE_WINDOW_SECONDS
            })
            .map(|(_, count)| count.load(Ordering::Relaxed))
            .sum();
        total as f64 / RATE_WINDOW_SECONDS as f64
    }
}

/// One campaign of codes.
pub struct Campaign {
    pub(crate) number: CampaignNo,
    pub(crate) spec: CampaignSpec,
    pub(crate) created_at: Timestamp,
    pub(crate) codec: Codec,
    /// The codec's key, kept for snapshots; never shown by any route.
    pub(crate) codec_key: [u8; 16],
    pub(crate) settings: RwLock<Settings>,
    /// Read on every redemption without taking `settings`.
    pub(crate) paused: AtomicBool,
    pub(crate) generated: StateMap,
    pub(crate) imported: StateMap,
    /// Imported codes, normalized, by import index.
    pub(crate) imported_codes: RwLock<Vec<Arc<str>>>,
    pub(crate) meta: ShardedMap<Slot, CodeMeta, IntHasher>,
    pub(crate) users: ShardedMap<Box<str>, UserEntry>,
    pub(crate) recipients: ShardedMap<Box<str>, RecipientEntry>,
    /// Where the next assignment starts looking for an available code.
    pub(crate) assign_cursor: AtomicU64,
    pub(crate) test_assignments: AtomicU64,
    pub(crate) redemptions: RateWindow,
    pub(crate) assignments: RateWindow,
    /// Codes taken from the available pool (assigned or redeemed directly).
    pub(crate) depletions: RateWindow,
    /// Set once the low-stock event was emitted; cleared when stock returns.
    pub(crate) low_stock_reported: AtomicBool,
    /// Orders code additions with their records.
    pub(crate) add_lock: Mutex<()>,
}

impl std::fmt::Debug for Campaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaign")
            .field("id", &self.spec.id)
            .field("number", &self.number)
            .finish()
    }
}

/// A campaign's live statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub total: u64,
    pub available: u64,
    pub assigned: u64,
    pub reserved: u64,
    pub redeemed: u64,
    pub voided: u64,
    pub test_assignments: u64,
    pub redemptions_per_second: f64,
    pub assignments_per_second: f64,
    pub depletion_eta_seconds: Option<u64>,
    pub low_stock: bool,
}

/// A campaign as the API reads it back (everything but the key).
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignView {
    pub spec: CampaignSpec,
    pub paused: bool,
    pub created_at: Timestamp,
    pub stats: Stats,
}

impl Campaign {
    pub(crate) fn new(
        number: CampaignNo,
        spec: CampaignSpec,
        codec: Codec,
        codec_key: [u8; 16],
        created_at: Timestamp,
    ) -> Campaign {
        let settings = Settings {
            starts_at: spec.starts_at,
            expires_at: spec.expires_at,
            paused: false,
            test_recipients: spec.test_recipients.iter().cloned().collect(),
            test_recipients_order: spec.test_recipients.clone(),
            low_stock_threshold: spec.low_stock_threshold,
        };
        Campaign {
            number,
            spec,
            created_at,
            codec,
            codec_key,
            settings: RwLock::new(settings),
            paused: AtomicBool::new(false),
            generated: StateMap::new(),
            imported: StateMap::new(),
            imported_codes: RwLock::new(Vec::new()),
            meta: ShardedMap::default(),
            users: ShardedMap::default(),
            recipients: ShardedMap::default(),
            assign_cursor: AtomicU64::new(0),
            test_assignments: AtomicU64::new(0),
            redemptions: RateWindow::new(),
            assignments: RateWindow::new(),
            depletions: RateWindow::new(),
            low_stock_reported: AtomicBool::new(false),
            add_lock: Mutex::new(()),
        }
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub(crate) fn map(&self, slot: Slot) -> &StateMap {
        if slot.is_imported() {
            &self.imported
        } else {
            &self.generated
        }
    }

    /// Both state maps with the slot constructor of each.
    pub(crate) fn maps(&self) -> [MapOf<'_>; 2] {
        [
            (&self.generated, Slot::generated),
            (&self.imported, Slot::imported),
        ]
    }

    pub(crate) fn apply_patch(&self, patch: &CampaignPatch) {
        let mut settings = self.settings.write();
        if let Some(starts_at) = patch.starts_at {
            settings.starts_at = starts_at;
        }
        if let Some(expires_at) = patch.expires_at {
            settings.expires_at = expires_at;
        }
        if let Some(paused) = patch.paused {
            settings.paused = paused;
            // Release: pairs with the Acquire in `window_check`; only a hint
            // there, the settings lock is the truth.
            self.paused.store(paused, Ordering::Release);
        }
        if let Some(list) = &patch.test_recipients {
            settings.test_recipients = list.iter().cloned().collect();
            settings.test_recipients_order = list.clone();
        }
        if let Some(threshold) = patch.low_stock_threshold {
            settings.low_stock_threshold = threshold;
        }
    }

    /// Codes in each public state, over both maps.
    pub(crate) fn counts(&self) -> [u64; 5] {
        let mut counts = self.generated.counts();
        for (sum, n) in counts.iter_mut().zip(self.imported.counts()) {
            *sum = sum.wrapping_add(n);
        }
        counts
    }

    pub(crate) fn available(&self) -> u64 {
        self.counts()[PublicState::Available as usize]
    }

    pub fn stats(&self, now: Timestamp) -> Stats {
        let counts = self.counts();
        let available = counts[PublicState::Available as usize];
        let depletion_rate = self.depletions.per_second(now);
        let threshold = self.settings.read().low_stock_threshold;
        Stats {
            total: self.generated.len() + self.imported.len(),
            available,
            assigned: counts[PublicState::Assigned as usize],
            reserved: counts[PublicState::Reserved as usize],
            redeemed: counts[PublicState::Redeemed as usize],
            voided: counts[PublicState::Voided as usize],
            // Relaxed: a statistic.
            test_assignments: self.test_assignments.load(Ordering::Relaxed),
            redemptions_per_second: self.redemptions.per_second(now),
            assignments_per_second: self.assignments.per_second(now),
            depletion_eta_seconds: (depletion_rate > 0.0)
                .then(|| (available as f64 / depletion_rate).ceil() as u64),
            low_stock: available < threshold,
        }
    }

    pub fn view(&self, now: Timestamp) -> CampaignView {
        let settings = self.settings.read().clone();
        let mut spec = self.spec.clone();
        spec.starts_at = settings.starts_at;
        spec.expires_at = settings.expires_at;
        spec.test_recipients = settings.test_recipients_order;
        spec.low_stock_threshold = settings.low_stock_threshold;
        spec.generate = self.generated.len();
        CampaignView {
            spec,
            paused: settings.paused,
            created_at: self.created_at,
            stats: self.stats(now),
        }
    }

    /// The metadata of a code known to be in `state`. An available code was
    /// never assigned, held or redeemed (release and rollback of an assigned
    /// code return it to assigned), so it has none to look up.
    /// Every code's slot and public state, generated codes first: for
    /// exports. Waits out transitions in progress, one code at a time.
    pub fn states(&self) -> impl Iterator<Item = (Slot, PublicState)> + '_ {
        self.maps().into_iter().flat_map(|(map, make)| {
            (0..map.len()).filter_map(move |i| map.get(i).map(|s| (make(i), s.public())))
        })
    }

    pub(crate) fn meta_in(&self, slot: Slot, state: CodeState) -> CodeMeta {
        if state == CodeState::Available {
            return CodeMeta::default();
        }
        self.meta_of(slot)
    }

    pub(crate) fn meta_of(&self, slot: Slot) -> CodeMeta {
        self.meta
            .shard(&slot)
            .get(&slot)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn update_meta(&self, slot: Slot, f: impl FnOnce(&mut CodeMeta)) {
        let mut shard = self.meta.shard(&slot);
        f(shard.entry(slot).or_default());
    }

    /// Interns a user name and claims one of its per-user slots; `limit` 0
    /// is unlimited. Returns the interned name, or `Err(())` at the limit.
    pub(crate) fn claim_user(&self, user: &str, limit: u32) -> Result<Arc<str>, ()> {
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::ClaimCheckThenIncrement) {
            return crate::mutations::claim_check_then_increment(self, user, limit);
        }
        let mut shard = self.users.shard(user);
        let entry = match shard.get_mut(user) {
            Some(entry) => entry,
            None => shard.entry(user.into()).or_insert_with(|| UserEntry {
                name: Arc::from(user),
                claimed: 0,
            }),
        };
        if limit != 0 && entry.claimed >= limit {
            return Err(());
        }
        entry.claimed += 1;
        Ok(entry.name.clone())
    }

    /// Gives back a slot claimed by `claim_user`.
    pub(crate) fn unclaim_user(&self, user: &str) {
        let mut shard = self.users.shard(user);
        let entry = shard
            .get_mut(user)
            .expect("unclaim of a user that never claimed");
        assert!(entry.claimed > 0, "user {user} claimed count underflow");
        entry.claimed -= 1;
    }

    /// Per-user slots the user holds: redemptions plus live holds.
    pub fn user_claimed(&self, user: &str) -> u32 {
        self.users.shard(user).get(user).map_or(0, |e| e.claimed)
    }

    /// The display form of a code.
    pub fn code_of(&self, slot: Slot) -> String {
        if slot.is_imported() {
            self.imported_codes.read()[slot.index() as usize].to_string()
        } else {
            self.codec.encode(slot.index()).to_string()
        }
    }

    /// Every recipient and its codes, for audits and tests.
    pub fn recipients_snapshot(&self) -> HashMap<String, Vec<Slot>> {
        let mut out = HashMap::new();
        self.recipients.for_each_shard(|map| {
            for (name, entry) in map.iter() {
                out.insert(name.to_string(), entry.slots.clone());
            }
        });
        out
    }
}
