//! A campaign: its settings, its codes' state maps and the metadata of the
//! codes that have been touched.

use std::collections::HashMap;
use std::ptr::NonNull;

use crate::Timestamp;
use crate::codec::Codec;
use crate::engine::PrintedCode;
use crate::history::{History, Point};
use crate::meta::MetaMap;
use crate::record::{CampaignNo, CampaignPatch, CampaignSpec, Lsn, ReservationId, Slot};
use crate::state::{CodeState, PublicState, StateMap};
use crate::sync::{Arc, AtomicBool, AtomicU64, HashedMap, Mutex, Ordering, RwLock, ShardedMap};

/// Metadata of a touched code. Never-touched codes have none, so a campaign
/// costs its bitmap (half a byte a code) until codes are used. 32 bytes:
/// what only some codes have (an assignment, a hold) is one pointer each.
#[derive(Debug, Default, Clone)]
pub(crate) struct CodeMeta {
    /// Who the code was assigned to and when, so a status and an export can
    /// name the holder and a snapshot can re-create the assignment (whose
    /// time also fixes the code's deadline, [`CodeMeta::deadline`]).
    pub recipient: Option<Recipient>,
    /// The live hold, so a confirm, release or void can check and drop it;
    /// boxed, as few codes are held at any time.
    pub hold: Option<Box<Hold>>,
    /// The redemption, so a repeat attempt can report when it happened and a
    /// rollback can give the user's claim back.
    pub redemption: Option<Redemption>,
    /// The LSN of the last record about this code: an answer that reports
    /// the code's state waits for this LSN to be durable, and no later one.
    pub lsn: Lsn,
}

#[cfg(all(not(loom), target_pointer_width = "64"))]
const _: () = assert!(std::mem::size_of::<CodeMeta>() == 32);

impl CodeMeta {
    /// When the code was assigned, if it is.
    pub(crate) fn assigned_at(&self) -> Option<Timestamp> {
        self.recipient.as_ref().map(Recipient::assigned_at)
    }

    /// The code's own deadline: its assignment time plus the campaign's
    /// `code_valid_seconds_after_assignment`, if it has one.
    pub(crate) fn deadline(&self, terms: &Terms) -> Option<Timestamp> {
        let at = self.assigned_at()?;
        let seconds = terms.code_valid_seconds_after_assignment?;
        Some(Timestamp(at.0.saturating_add(seconds.saturating_mul(1000))))
    }
}

/// A live reservation of one code.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    /// The reservation id the holder confirms or releases with.
    pub id: ReservationId,
    /// The holder, interned: the hold carries one of its per-user claims.
    pub user: Arc<str>,
    /// The deadline after which the hold is released, by the sweeper or by
    /// the next transition that finds it.
    pub until: Timestamp,
}

/// Who a code was assigned to, and when: one allocation, so that the
/// metadata of a code never assigned holds only a null pointer for it.
/// Dereferences to the recipient's name.
#[derive(Debug, Clone)]
pub(crate) struct Recipient(Box<(Arc<str>, Timestamp)>);

impl Recipient {
    pub fn new(name: Arc<str>, assigned_at: Timestamp) -> Recipient {
        Recipient(Box::new((name, assigned_at)))
    }

    /// The recipient's name, shared with its other codes' metadata.
    pub fn name(&self) -> &Arc<str> {
        &self.0.0
    }

    /// When the code was assigned.
    pub fn assigned_at(&self) -> Timestamp {
        self.0.1
    }
}

impl std::ops::Deref for Recipient {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0.0
    }
}

/// How a code was redeemed: when, by whom, under which order reference.
/// One allocation behind a thin pointer, so that it costs `CodeMeta` 8
/// bytes: `[at][user length][order tag][user][order]`, where `at` is the
/// time's 8 bytes little-endian, and the user's length and the order tag
/// (the order's length plus one, or 0 when none was given) are unsigned
/// LEB128 (one byte each up to 127).
pub(crate) struct Redemption {
    /// The start of a boxed byte slice made by [`Redemption::new`], never
    /// written again and freed in `Drop`; its length is read back from its
    /// own header ([`Redemption::bytes`]).
    start: NonNull<u8>,
}

// SAFETY: a `Redemption` owns its bytes and never writes them after
// `new`, as a `Box<[u8]>` would: sending or sharing it is as safe.
unsafe impl Send for Redemption {}
// SAFETY: as above.
unsafe impl Sync for Redemption {}

/// Bytes of the time at the start of a [`Redemption`].
const AT_BYTES: usize = 8;

/// The decoded fields, not the bytes they are stored as.
impl std::fmt::Debug for Redemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redemption")
            .field("at", &self.at())
            .field("user", &self.user())
            .field("order", &self.order())
            .finish()
    }
}

impl Clone for Redemption {
    fn clone(&self) -> Redemption {
        Redemption::own(self.bytes().into())
    }
}

impl Drop for Redemption {
    fn drop(&mut self) {
        let length = self.bytes().len();
        let slice = std::ptr::slice_from_raw_parts_mut(self.start.as_ptr(), length);
        // SAFETY: `start` and `length` are those of the boxed slice that
        // `own` leaked (the header gives back its length), and this is
        // the one drop of its one owner.
        drop(unsafe { Box::from_raw(slice) });
    }
}

impl Redemption {
    pub fn new(user: &str, order: Option<&str>, at: Timestamp) -> Redemption {
        let order_bytes = order.map_or(&[][..], str::as_bytes);
        let user_tag = user.len() as u64;
        let order_tag = order.map_or(0, |order| order.len() as u64 + 1);
        // Exactly the bytes written, so `into_boxed_slice` below keeps the
        // allocation instead of copying it into a smaller one.
        let length = AT_BYTES
            + Redemption::tag_bytes(user_tag)
            + Redemption::tag_bytes(order_tag)
            + user.len()
            + order_bytes.len();
        let mut bytes = Vec::with_capacity(length);
        bytes.extend_from_slice(&at.0.to_le_bytes());
        push_leb128(&mut bytes, user_tag);
        push_leb128(&mut bytes, order_tag);
        bytes.extend_from_slice(user.as_bytes());
        bytes.extend_from_slice(order_bytes);
        debug_assert_eq!(bytes.len(), bytes.capacity());
        Redemption::own(bytes.into_boxed_slice())
    }

    /// Takes ownership of bytes laid out as `new` writes them.
    fn own(bytes: Box<[u8]>) -> Redemption {
        Redemption {
            start: NonNull::from(Box::leak(bytes)).cast::<u8>(),
        }
    }

    /// Bytes of `tag` in LEB128: seven bits a byte, at least one.
    fn tag_bytes(tag: u64) -> usize {
        ((u64::BITS - tag.leading_zeros()).div_ceil(7) as usize).max(1)
    }

    /// All the stored bytes, their length read back from the header.
    fn bytes(&self) -> &[u8] {
        self.parts().0
    }

    /// (all the stored bytes, where the user starts, the user's length,
    /// whether an order was given: it runs from the user's end to the end).
    fn parts(&self) -> (&[u8], usize, usize, bool) {
        let mut position = AT_BYTES;
        let mut next = || {
            // SAFETY: `new` wrote the whole header, so every byte up to
            // the end of the second tag is inside the allocation, and the
            // tags' last bytes (high bit clear) end the reads there.
            let byte = unsafe { *self.start.as_ptr().add(position) };
            position += 1;
            byte
        };
        let user = leb128(&mut next);
        let order_tag = leb128(&mut next);
        let length = position + user + order_tag.saturating_sub(1);
        // SAFETY: the allocation holds the header, the user and the order,
        // `length` bytes in all, initialised by `new` and never written
        // again; the slice lives no longer than `self`, which owns them.
        let bytes = unsafe { std::slice::from_raw_parts(self.start.as_ptr(), length) };
        (bytes, position, user, order_tag > 0)
    }

    /// When, reported to a later attempt as `redeemed_at`.
    pub fn at(&self) -> Timestamp {
        // SAFETY: `new` wrote the time's 8 bytes first; reading them needs
        // no walk of the tags after them (a refusal reads only this).
        let at = unsafe { self.start.as_ptr().cast::<[u8; AT_BYTES]>().read() };
        Timestamp(u64::from_le_bytes(at))
    }

    /// The redeemer.
    pub fn user(&self) -> &str {
        let (bytes, start, length, _) = self.parts();
        std::str::from_utf8(&bytes[start..start + length]).expect("stored from a str")
    }

    /// The caller's order reference, shown by the code's status.
    pub fn order(&self) -> Option<&str> {
        let (bytes, start, length, given) = self.parts();
        given.then(|| std::str::from_utf8(&bytes[start + length..]).expect("stored from a str"))
    }
}

/// Appends `value` as an unsigned LEB128 number, the inverse of [`leb128`].
fn push_leb128(bytes: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return;
        }
        bytes.push(byte | 0x80);
    }
}

/// An unsigned LEB128 number read from `next`'s bytes: seven bits a byte,
/// low bits first, the last byte's high bit clear.
fn leb128(mut next: impl FnMut() -> u8) -> usize {
    let (mut value, mut shift) = (0usize, 0u32);
    loop {
        let byte = next();
        value |= usize::from(byte & 0x7F).checked_shl(shift).unwrap_or(0);
        shift += 7;
        if byte & 0x80 == 0 {
            return value;
        }
    }
}

/// A per-user slot taken by [`Campaign::claim_user`], or nothing to take
/// when the campaign has no per-user limit.
#[derive(Debug)]
pub(crate) struct Claim;

/// What a campaign is created with and never changes afterwards; the
/// settings an update may change live in [`Settings`], and the generated
/// count in the generated map, so each field has one owner.
#[derive(Debug, Clone)]
pub(crate) struct Terms {
    /// The campaign's API id, `[a-z0-9-]{1,64}`.
    pub id: String,
    /// The generated codes' prefix, which routes a code to its campaign.
    pub prefix: String,
    /// Body symbols of a generated code.
    pub length: u8,
    /// Redemptions and live holds one user may have; 0 is unlimited.
    pub per_user_limit: u32,
    /// Codes one recipient may be assigned; test recipients are exempt.
    pub per_recipient_limit: u32,
    /// Seconds an assigned code stays valid, if it has a per-code deadline.
    pub code_valid_seconds_after_assignment: Option<u64>,
    /// A hold's length when the reserver does not choose one.
    pub reservation_ttl_seconds: u64,
}

/// Settings an update may change.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Before this moment the campaign refuses work with `campaign_not_started`.
    pub starts_at: Option<Timestamp>,
    /// From this moment every code of the campaign is expired.
    pub expires_at: Option<Timestamp>,
    /// Set by an operator to stop new holds, redemptions and assignments.
    pub paused: bool,
    /// Recipients that get a fresh code on every assignment, for testing.
    pub test_recipients: TestRecipients,
    /// Available codes below which the campaign reports low stock; 0 is off.
    pub low_stock_threshold: u64,
    /// Guesses a minute past which the campaign reports `guessing_suspected`;
    /// 0 is off.
    pub guessing_alert_per_minute: u64,
}

/// The test recipients, as the operator listed them: sorted by name for
/// membership tests, each with its place in the list so the list reads
/// back in its original order, duplicates included.
#[derive(Debug, Clone, Default)]
pub(crate) struct TestRecipients {
    /// (name, position in the original list), sorted.
    by_name: Vec<(Box<str>, u32)>,
}

impl TestRecipients {
    pub fn new(list: &[String]) -> TestRecipients {
        let mut by_name: Vec<(Box<str>, u32)> = list
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let position = u32::try_from(i).expect("test recipients under 4G");
                (name.as_str().into(), position)
            })
            .collect();
        by_name.sort_unstable();
        TestRecipients { by_name }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .is_ok()
    }

    /// The list as it was given.
    pub fn in_order(&self) -> Vec<String> {
        let mut list: Vec<&(Box<str>, u32)> = self.by_name.iter().collect();
        list.sort_unstable_by_key(|(_, position)| *position);
        list.into_iter().map(|(name, _)| name.to_string()).collect()
    }
}

/// Per-user state within a campaign: the user's interned name and how many
/// of the per-user slots (redemptions and live holds) it has claimed.
#[derive(Debug)]
pub(crate) struct UserEntry {
    /// The name every hold and redemption of the user shares.
    pub name: Arc<str>,
    /// Redemptions plus live holds, checked against `per_user_limit`.
    pub claimed: u32,
}

/// A recipient's codes in a campaign.
#[derive(Debug)]
pub(crate) struct RecipientEntry {
    /// In the order assigned: the first is the one a recipient at its limit
    /// is given again.
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
    /// The campaign's number: its creation order, what records name it by.
    pub(crate) number: CampaignNo,
    /// What the campaign was created with and never changes.
    pub(crate) terms: Terms,
    /// When it was created; snapshot records that have no time of their own
    /// carry this one.
    pub(crate) created_at: Timestamp,
    /// Prints and parses the generated codes.
    pub(crate) codec: Codec,
    /// The codec's key, kept for snapshots; never shown by any route.
    pub(crate) codec_key: [u8; 16],
    /// What an update may change; read by every admission check.
    pub(crate) settings: RwLock<Settings>,
    /// States of the generated codes, by index.
    pub(crate) generated: StateMap,
    /// States of the imported codes, by import order.
    pub(crate) imported: StateMap,
    /// Imported codes, normalized, by import index.
    pub(crate) imported_codes: RwLock<Vec<Arc<str>>>,
    /// Metadata of the touched generated codes only, so untouched codes
    /// cost no memory.
    generated_meta: MetaMap<CodeMeta>,
    /// Metadata of the touched imported codes.
    imported_meta: MetaMap<CodeMeta>,
    /// Per-user claims, for `per_user_limit`.
    pub(crate) users: ShardedMap<Arc<str>, UserEntry>,
    /// Per-recipient codes, for `per_recipient_limit` and repeat assignments.
    pub(crate) recipients: HashedMap<Box<str>, RecipientEntry>,
    /// Where the next assignment starts looking for an available code.
    pub(crate) assign_cursor: AtomicU64,
    /// Assignments to test recipients, a statistic.
    pub(crate) test_assignments: AtomicU64,
    /// Redemptions per second, a statistic.
    pub(crate) redemptions: RateWindow,
    /// Assignments per second, a statistic.
    pub(crate) assignments: RateWindow,
    /// Codes taken from the available pool (assigned or redeemed directly).
    pub(crate) depletions: RateWindow,
    /// Set once the low-stock event was emitted; cleared when stock returns.
    pub(crate) low_stock_reported: AtomicBool,
    /// Orders code additions with their records.
    pub(crate) add_lock: Mutex<()>,
    /// Codes promised to running all-or-nothing files, and assignments in
    /// flight outside them: admission policy only, never logged.
    pub(crate) pool_gate: Mutex<PoolGate>,
    /// Well-formed codes under the prefix that were never issued, this
    /// minute: guesses, since the check symbol catches typos.
    pub(crate) guesses: MinuteCounter,
    /// The minute (since the epoch) of the last `guessing_suspected`, plus
    /// one; 0 before any. At most one alert a minute.
    pub(crate) guess_alert_minute: AtomicU64,
    /// `guessing_suspected` records written or replayed, for `/metrics`.
    pub(crate) guess_alerts: AtomicU64,
    /// The last day in ten-second points, for the dashboard's chart.
    pub(crate) history: History,
}

/// What an all-or-nothing file has been promised of the available pool.
/// An assignment outside a pledge counts itself in flight while it takes a
/// code, so a pledge never counts a code another assignment is taking.
#[derive(Debug, Default)]
pub(crate) struct PoolGate {
    /// Codes promised to files and not yet taken by them.
    pub pledged: u64,
    /// Assignments outside any pledge that are taking a code right now.
    pub in_flight: u64,
}

/// Events in the current minute: a fixed window that restarts when the
/// minute changes. Two atomics, so counting never takes a lock.
#[derive(Debug)]
pub(crate) struct MinuteCounter {
    /// The minute (since the epoch) the count belongs to.
    minute: AtomicU64,
    /// Events in it.
    count: AtomicU64,
}

impl MinuteCounter {
    fn new() -> MinuteCounter {
        MinuteCounter {
            minute: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one event at `at`; returns the minute and the count in it.
    pub fn note(&self, at: Timestamp) -> (u64, u64) {
        let minute = at.0 / 60_000;
        // Relaxed throughout: a statistic and an alert trigger; a count lost
        // on the turn of a minute only delays an alert.
        if self.minute.load(Ordering::Relaxed) != minute {
            self.minute.store(minute, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        (minute, self.count.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The count in the minute of `now` (0 if nothing was noted in it).
    pub fn in_minute_of(&self, now: Timestamp) -> u64 {
        // Relaxed: a statistic.
        if self.minute.load(Ordering::Relaxed) == now.0 / 60_000 {
            self.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

impl std::fmt::Debug for Campaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaign")
            .field("id", &self.terms.id)
            .field("number", &self.number)
            .finish()
    }
}

/// A campaign's live statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Codes in the campaign, generated and imported.
    pub total: u64,
    /// Codes in each public state; they add up to `total`.
    pub available: u64,
    pub assigned: u64,
    pub reserved: u64,
    pub redeemed: u64,
    pub voided: u64,
    /// Assignments to test recipients so far.
    pub test_assignments: u64,
    /// Means over the last minute.
    pub redemptions_per_second: f64,
    pub assignments_per_second: f64,
    /// When the available pool runs out at the last minute's pace, if it
    /// is being used at all.
    pub depletion_eta_seconds: Option<u64>,
    /// Fewer codes available than the campaign's threshold.
    pub low_stock: bool,
}

/// A campaign as the API reads it back (everything but the key).
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignView {
    /// The campaign's terms and current settings, in the shape it was
    /// created with; `generate` is the generated codes so far.
    pub spec: CampaignSpec,
    /// Whether an operator paused it.
    pub paused: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its live statistics.
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
            test_recipients: TestRecipients::new(&spec.test_recipients),
            low_stock_threshold: spec.low_stock_threshold,
            guessing_alert_per_minute: spec.guessing_alert_per_minute,
        };
        let terms = Terms {
            id: spec.id,
            prefix: spec.prefix,
            length: spec.length,
            per_user_limit: spec.per_user_limit,
            per_recipient_limit: spec.per_recipient_limit,
            code_valid_seconds_after_assignment: spec.code_valid_seconds_after_assignment,
            reservation_ttl_seconds: spec.reservation_ttl_seconds,
        };
        Campaign {
            number,
            terms,
            created_at,
            codec,
            codec_key,
            settings: RwLock::new(settings),
            generated: StateMap::new(),
            imported: StateMap::new(),
            imported_codes: RwLock::new(Vec::new()),
            generated_meta: MetaMap::default(),
            imported_meta: MetaMap::default(),
            users: ShardedMap::default(),
            recipients: HashedMap::default(),
            assign_cursor: AtomicU64::new(0),
            test_assignments: AtomicU64::new(0),
            redemptions: RateWindow::new(),
            assignments: RateWindow::new(),
            depletions: RateWindow::new(),
            low_stock_reported: AtomicBool::new(false),
            add_lock: Mutex::new(()),
            pool_gate: Mutex::new(PoolGate::default()),
            guesses: MinuteCounter::new(),
            guess_alert_minute: AtomicU64::new(0),
            guess_alerts: AtomicU64::new(0),
            history: History::new(created_at),
        }
    }

    pub fn id(&self) -> &str {
        &self.terms.id
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
        }
        if let Some(list) = &patch.test_recipients {
            settings.test_recipients = TestRecipients::new(list);
        }
        if let Some(threshold) = patch.low_stock_threshold {
            settings.low_stock_threshold = threshold;
        }
        if let Some(alert) = patch.guessing_alert_per_minute {
            settings.guessing_alert_per_minute = alert;
        }
    }

    /// Guesses under the prefix in the minute of `now`, for `/metrics`.
    pub fn guesses_this_minute(&self, now: Timestamp) -> u64 {
        self.guesses.in_minute_of(now)
    }

    /// `guessing_suspected` alerts raised so far, for `/metrics`.
    pub fn guessing_alerts(&self) -> u64 {
        // Relaxed: a statistic.
        self.guess_alerts.load(Ordering::Relaxed)
    }

    /// The campaign's history from `from` through `now`, one point per
    /// interval, oldest first (`history` module).
    pub fn history(&self, from: Timestamp, now: Timestamp) -> Vec<Point> {
        self.history.points(from, now, self.counts())
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
        let (spec, paused) = {
            let settings = self.settings.read();
            let terms = &self.terms;
            let spec = CampaignSpec {
                id: terms.id.clone(),
                generate: self.generated.len(),
                prefix: terms.prefix.clone(),
                length: terms.length,
                starts_at: settings.starts_at,
                expires_at: settings.expires_at,
                per_user_limit: terms.per_user_limit,
                per_recipient_limit: terms.per_recipient_limit,
                code_valid_seconds_after_assignment: terms.code_valid_seconds_after_assignment,
                reservation_ttl_seconds: terms.reservation_ttl_seconds,
                low_stock_threshold: settings.low_stock_threshold,
                test_recipients: settings.test_recipients.in_order(),
                guessing_alert_per_minute: settings.guessing_alert_per_minute,
            };
            (spec, settings.paused)
        };
        CampaignView {
            spec,
            paused,
            created_at: self.created_at,
            stats: self.stats(now),
        }
    }

    /// Every code's slot and public state, generated codes first: for
    /// exports. Waits out transitions in progress, one code at a time.
    pub fn states(&self) -> impl Iterator<Item = (Slot, PublicState)> + '_ {
        self.maps().into_iter().flat_map(|(map, make)| {
            (0..map.len()).filter_map(move |i| map.get(i).map(|s| (make(i), s.public())))
        })
    }

    /// The metadata of a code known to be in `state`. An available code was
    /// never assigned, held or redeemed (release and rollback of an assigned
    /// code return it to assigned), so it has none to look up.
    pub(crate) fn meta_in(&self, slot: Slot, state: CodeState) -> CodeMeta {
        if state == CodeState::Available {
            return CodeMeta::default();
        }
        self.meta_of(slot)
    }

    fn meta_map(&self, slot: Slot) -> &MetaMap<CodeMeta> {
        if slot.is_imported() {
            &self.imported_meta
        } else {
            &self.generated_meta
        }
    }

    pub(crate) fn meta_of(&self, slot: Slot) -> CodeMeta {
        self.touched_meta(slot).unwrap_or_default()
    }

    /// The code's metadata if it was touched.
    fn touched_meta(&self, slot: Slot) -> Option<CodeMeta> {
        self.meta_map(slot).get(slot.index())
    }

    pub(crate) fn update_meta(&self, slot: Slot, f: impl FnOnce(&mut CodeMeta)) {
        self.meta_map(slot).update(slot.index(), f);
    }

    /// Forgets a code's metadata: it is as if never touched.
    pub(crate) fn remove_meta(&self, slot: Slot) {
        self.meta_map(slot).remove(slot.index());
    }

    /// Every touched code and its metadata, generated codes first, in slot
    /// order.
    pub(crate) fn touched(&self) -> Vec<(Slot, CodeMeta)> {
        let mut touched = Vec::new();
        for (map, make) in [
            (&self.generated_meta, Slot::generated as fn(u64) -> Slot),
            (&self.imported_meta, Slot::imported),
        ] {
            map.for_each(|index, meta| touched.push((make(index), meta.clone())));
        }
        touched
    }

    /// Claims one of a user's per-user slots, interning its name; `Err(())`
    /// at the campaign's per-user limit. A campaign without one counts
    /// nothing: the claim is free and keeps no entry.
    pub(crate) fn claim_user(&self, user: &str) -> Result<Claim, ()> {
        self.claim_user_up_to(user, self.terms.per_user_limit)
    }

    /// [`Campaign::claim_user`] against `limit` instead of the terms'; 0
    /// takes the slot without a check (a loom mutation gives a slot back
    /// that way).
    pub(crate) fn claim_user_up_to(&self, user: &str, limit: u32) -> Result<Claim, ()> {
        if self.terms.per_user_limit == 0 {
            return Ok(Claim);
        }
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::ClaimCheckThenIncrement) {
            return crate::mutations::claim_check_then_increment(self, user, limit);
        }
        let mut shard = self.users.shard(user);
        let entry = match shard.get_mut(user) {
            Some(entry) => entry,
            None => {
                // The key and the name share one allocation.
                let name: Arc<str> = Arc::from(user);
                shard
                    .entry(name.clone())
                    .or_insert(UserEntry { name, claimed: 0 })
            }
        };
        if limit != 0 && entry.claimed >= limit {
            return Err(());
        }
        entry.claimed += 1;
        Ok(Claim)
    }

    /// The user's name as its claims share it; a fresh one when the
    /// campaign counts no claims.
    pub(crate) fn user_name(&self, user: &str) -> Arc<str> {
        if self.terms.per_user_limit != 0
            && let Some(entry) = self.users.shard(user).get(user)
        {
            return entry.name.clone();
        }
        Arc::from(user)
    }

    /// Gives back a slot claimed by `claim_user`.
    pub(crate) fn unclaim_user(&self, user: &str) {
        if self.terms.per_user_limit == 0 {
            return;
        }
        let mut shard = self.users.shard(user);
        let entry = shard
            .get_mut(user)
            .expect("unclaim of a user that never claimed");
        assert!(entry.claimed > 0, "user {user} claimed count underflow");
        entry.claimed -= 1;
        // A user with nothing claimed costs nothing: names a client picks
        // (reserve and release with a fresh one each time) must not pile up.
        if entry.claimed == 0 {
            shard.remove(user);
        }
    }

    /// Users with something claimed: the per-user table holds these and no
    /// others, so it is bounded by live holds and redemptions, not by the
    /// names clients ever sent.
    pub fn users_tracked(&self) -> usize {
        let mut total = 0;
        self.users.for_each_shard(|map| total += map.len());
        total
    }

    /// Per-user slots the user holds: redemptions plus live holds; 0 in a
    /// campaign without a per-user limit, which counts nothing.
    pub fn user_claimed(&self, user: &str) -> u32 {
        self.users.shard(user).get(user).map_or(0, |e| e.claimed)
    }

    /// The display form of a code.
    pub fn code_of(&self, slot: Slot) -> String {
        self.printed_code(slot).to_string()
    }

    /// The display form of a code, without a copy.
    pub fn printed_code(&self, slot: Slot) -> PrintedCode {
        if slot.is_imported() {
            PrintedCode::Imported(self.imported_codes.read()[slot.index() as usize].clone())
        } else {
            PrintedCode::Generated(self.codec.encode(slot.index()))
        }
    }

    /// Every assigned code (test recipients' too) with its recipient,
    /// public state and assignment time, generated codes first, in slot
    /// order: the merge file. Waits out transitions in progress.
    pub fn assignments(
        &self,
    ) -> impl Iterator<Item = (Slot, Arc<str>, PublicState, Timestamp)> + '_ {
        self.states()
            .filter(|(_, state)| *state != PublicState::Available)
            .filter_map(|(slot, state)| {
                let recipient = self.touched_meta(slot)?.recipient?;
                Some((
                    slot,
                    recipient.name().clone(),
                    state,
                    recipient.assigned_at(),
                ))
            })
    }

    /// Every recipient and its codes, for audits and tests.
    pub fn recipients_snapshot(&self) -> HashMap<String, Vec<Slot>> {
        let mut out = HashMap::new();
        self.recipients.for_each(|name, entry| {
            out.insert(name.to_string(), entry.slots.clone());
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redemption_reads_back_its_user_and_order() {
        let long = "u".repeat(300);
        let longer = "v".repeat(9_000);
        let edges: Vec<String> = [0, 62, 63, 64, 8_191, 8_192]
            .into_iter()
            .map(|n| "w".repeat(n))
            .collect();
        let mut users = vec!["u", "customer-00000001", "é\u{0}x", &long, &longer];
        users.extend(edges.iter().map(String::as_str));
        for user in users {
            for order in [None, Some(""), Some("ORD-2026-0000000001"), Some("ü")] {
                let at = Timestamp(0x0102_0304_0506_0708);
                let r = Redemption::new(user, order, at);
                assert_eq!((r.user(), r.order(), r.at()), (user, order, at));
                let order_tag = order.map_or(0, |order| order.len() as u64 + 1);
                let expected = 8
                    + Redemption::tag_bytes(user.len() as u64)
                    + Redemption::tag_bytes(order_tag)
                    + user.len()
                    + order.map_or(0, str::len);
                let context = format!("{} bytes of user, order {order:?}", user.len());
                assert_eq!(r.bytes().len(), expected, "{context}");
                let copy = r.clone();
                drop(r);
                assert_eq!(
                    (copy.user(), copy.order(), copy.at()),
                    (user, order, at),
                    "{context}"
                );
            }
        }
    }

    #[test]
    fn a_tag_takes_seven_bits_a_byte() {
        for (tag, bytes) in [
            (0, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            ((1 << 14) - 1, 2),
            (1 << 14, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(Redemption::tag_bytes(tag), bytes, "{tag}");
        }
    }

    #[test]
    fn test_recipients_answer_membership_and_keep_their_order() {
        let list: Vec<String> = ["qa-b", "qa-a", "qa-c", "qa-a"]
            .into_iter()
            .map(Into::into)
            .collect();
        let recipients = TestRecipients::new(&list);
        for name in ["qa-a", "qa-b", "qa-c"] {
            assert!(recipients.contains(name), "{name}");
        }
        assert!(!recipients.contains("qa"));
        assert!(!recipients.contains("qa-d"));
        assert_eq!(recipients.in_order(), list);
        assert_eq!(TestRecipients::new(&[]).in_order(), Vec::<String>::new());
    }
}
