//! Per-code state: the encoding, the table of allowed transitions, and the
//! sharded, lock-free state bitmap that holds a campaign's codes.
//!
//! Each code takes [`BITS_PER_CODE`] bits of an `AtomicU64` word: three bits
//! of [`CodeState`] and one busy bit. The busy bit is the per-code lock that
//! orders a code's journal records: a transition sets it by compare-and-swap,
//! appends its record while holding it, and clears it in the same
//! compare-and-swap that publishes the new state (see `ARCHITECTURE.md`).
//!
//! Words live in fixed-size chunks that are allocated when codes are added
//! and never moved or freed before the map is dropped, so a reader needs no
//! lock to find a word.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicPtr, AtomicU64, Mutex, Ordering, spin_loop};

/// The state of one code as stored in its bitmap slot.
///
/// Release and rollback return a code to the state it had before, so the
/// reserved and redeemed states remember whether the code was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CodeState {
    Available = 0,
    Assigned = 1,
    ReservedFromAvailable = 2,
    ReservedFromAssigned = 3,
    RedeemedFromAvailable = 4,
    RedeemedFromAssigned = 5,
    Voided = 6,
}

/// What a client sees of a [`CodeState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicState {
    Available,
    Assigned,
    Reserved,
    Redeemed,
    Voided,
}

impl PublicState {
    pub const ALL: [PublicState; 5] = [
        PublicState::Available,
        PublicState::Assigned,
        PublicState::Reserved,
        PublicState::Redeemed,
        PublicState::Voided,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PublicState::Available => "available",
            PublicState::Assigned => "assigned",
            PublicState::Reserved => "reserved",
            PublicState::Redeemed => "redeemed",
            PublicState::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<PublicState> {
        PublicState::ALL.into_iter().find(|p| p.as_str() == s)
    }

    fn counter(self) -> usize {
        self as usize
    }
}

impl CodeState {
    const ALL: [CodeState; 7] = [
        CodeState::Available,
        CodeState::Assigned,
        CodeState::ReservedFromAvailable,
        CodeState::ReservedFromAssigned,
        CodeState::RedeemedFromAvailable,
        CodeState::RedeemedFromAssigned,
        CodeState::Voided,
    ];

    fn from_bits(bits: u64) -> CodeState {
        match CodeState::ALL.get(bits as usize) {
            Some(state) => *state,
            // Only `encode` writes slots, and it writes only valid states.
            None => panic!("corrupt state bits {bits:#x} in a code slot"),
        }
    }

    pub fn public(self) -> PublicState {
        match self {
            CodeState::Available => PublicState::Available,
            CodeState::Assigned => PublicState::Assigned,
            CodeState::ReservedFromAvailable | CodeState::ReservedFromAssigned => {
                PublicState::Reserved
            }
            CodeState::RedeemedFromAvailable | CodeState::RedeemedFromAssigned => {
                PublicState::Redeemed
            }
            CodeState::Voided => PublicState::Voided,
        }
    }

    /// The state a hold or a redemption of this code returns to when undone.
    pub fn base(self) -> CodeState {
        match self {
            CodeState::Available
            | CodeState::ReservedFromAvailable
            | CodeState::RedeemedFromAvailable => CodeState::Available,
            CodeState::Assigned
            | CodeState::ReservedFromAssigned
            | CodeState::RedeemedFromAssigned => CodeState::Assigned,
            CodeState::Voided => CodeState::Voided,
        }
    }

    pub fn reserved(self) -> CodeState {
        match self.base() {
            CodeState::Assigned => CodeState::ReservedFromAssigned,
            _ => CodeState::ReservedFromAvailable,
        }
    }

    pub fn redeemed(self) -> CodeState {
        match self.base() {
            CodeState::Assigned => CodeState::RedeemedFromAssigned,
            _ => CodeState::RedeemedFromAvailable,
        }
    }
}

/// Why a state may change, one variant per row group of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Assign,
    Reserve,
    Release,
    Confirm,
    Redeem,
    Rollback,
    Void,
    /// Reclaim: an assigned code whose message bounced leaves its recipient,
    /// back to the pool or voided.
    Unassign,
}

/// The one table of allowed transitions. Every change of a code's state is
/// checked against it before it is published; a disallowed change is a bug.
pub fn allowed(transition: Transition, from: CodeState, to: CodeState) -> bool {
    use CodeState::*;
    match transition {
        Transition::Assign => from == Available && to == Assigned,
        Transition::Reserve => {
            matches!(
                (from, to),
                (Available, ReservedFromAvailable) | (Assigned, ReservedFromAssigned)
            )
        }
        Transition::Release => matches!(
            (from, to),
            (ReservedFromAvailable, Available) | (ReservedFromAssigned, Assigned)
        ),
        Transition::Confirm => matches!(
            (from, to),
            (ReservedFromAvailable, RedeemedFromAvailable)
                | (ReservedFromAssigned, RedeemedFromAssigned)
        ),
        Transition::Redeem => matches!(
            (from, to),
            (Available, RedeemedFromAvailable) | (Assigned, RedeemedFromAssigned)
        ),
        Transition::Rollback => matches!(
            (from, to),
            (RedeemedFromAvailable, Available) | (RedeemedFromAssigned, Assigned)
        ),
        Transition::Void => {
            to == Voided && !matches!(from, RedeemedFromAvailable | RedeemedFromAssigned | Voided)
        }
        // Only a code nobody has started to use: a held or redeemed code
        // stays with its recipient.
        Transition::Unassign => from == Assigned && matches!(to, Available | Voided),
    }
}

/// Bits a code takes in its word: three of state, one busy.
pub const BITS_PER_CODE: u32 = 4;
const CODES_PER_WORD: u64 = (u64::BITS / BITS_PER_CODE) as u64;
const SLOT_MASK: u64 = (1 << BITS_PER_CODE) - 1;
const BUSY: u64 = 1 << (BITS_PER_CODE - 1);
const STATE_MASK: u64 = BUSY - 1;
const _: () = assert!(CodeState::Voided as u64 <= STATE_MASK);
const _: () = assert!(u64::BITS % BITS_PER_CODE == 0);

/// Chunk `k` holds `2^(FIRST_CHUNK_BITS + k)` codes, so a small campaign
/// allocates little and a huge one needs few chunks (a segmented vector).
/// Under loom one word, as each word is a modelled atomic.
const FIRST_CHUNK_BITS: u32 = if cfg!(loom) { 4 } else { 12 };
/// The most codes one map holds: 2^32, above the API's 10^9 generated.
pub const CODES_MAX: u64 = 1 << 32;
/// Chunks needed to reach `CODES_MAX`.
pub(crate) const CHUNKS_MAX: usize =
    (63 - (CODES_MAX - 1 + (1 << FIRST_CHUNK_BITS)).leading_zeros() - FIRST_CHUNK_BITS) as usize
        + 1;
const _: () = assert!(CHUNKS_MAX == if cfg!(loom) { 29 } else { 21 });

/// The chunk holding `slot` and the slot's offset in it.
pub(crate) fn chunk_of(slot: u64) -> (usize, u64) {
    let v = slot + (1 << FIRST_CHUNK_BITS);
    let top = 63 - v.leading_zeros();
    ((top - FIRST_CHUNK_BITS) as usize, v - (1 << top))
}

pub(crate) fn chunk_codes(chunk: usize) -> u64 {
    1 << (FIRST_CHUNK_BITS + chunk as u32)
}

/// Counter shards; a code's word picks its shard, so neighbouring codes
/// count in different cache lines. Two under loom (modelled atomics).
pub const SHARDS: usize = if cfg!(loom) { 2 } else { 64 };
const _: () = assert!(SHARDS.is_power_of_two());

/// Per-shard counts of codes in each public state.
#[derive(Debug, Default)]
struct ShardCounts {
    by_state: [AtomicU64; 5],
}

/// A campaign's codes of one kind (generated or imported), a few bits each.
pub struct StateMap {
    /// Chunk pointers; null until `grow` allocates the chunk. Set once, freed
    /// only in `Drop`.
    chunks: Box<[AtomicPtr<Chunk>]>,
    /// How many codes exist; slots at or past it are unknown codes.
    len: AtomicU64,
    /// Serialises `grow` so two growers never allocate one chunk twice.
    grow_lock: Mutex<()>,
    counts: Box<[CachePadded<ShardCounts>]>,
}

struct Chunk {
    words: Box<[AtomicU64]>,
}

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMap")
            .field("len", &self.len())
            .finish()
    }
}

/// A code held busy by the caller: its state is `state` and no other
/// transition can start on it until [`StateMap::publish`] or
/// [`StateMap::unlock`] is called.
#[derive(Debug)]
#[must_use = "a locked code must be published or unlocked"]
pub struct Locked {
    pub slot: u64,
    pub state: CodeState,
}

impl Default for StateMap {
    fn default() -> Self {
        StateMap::new()
    }
}

impl StateMap {
    pub fn new() -> StateMap {
        StateMap {
            chunks: (0..CHUNKS_MAX)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            len: AtomicU64::new(0),
            grow_lock: Mutex::new(()),
            counts: (0..SHARDS)
                .map(|_| CachePadded::new(ShardCounts::default()))
                .collect(),
        }
    }

    pub fn len(&self) -> u64 {
        // Acquire pairs with the Release in `grow`: a slot below `len` has
        // its chunk allocated and visible.
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `count` codes in state available; returns the first new slot.
    pub fn grow(&self, count: u64) -> Result<u64, CapacityError> {
        let _guard = self.grow_lock.lock();
        // Relaxed: `grow_lock` orders growers; readers use `len()`.
        let first = self.len.load(Ordering::Relaxed);
        let new_len =
            first
                .checked_add(count)
                .filter(|&n| n <= CODES_MAX)
                .ok_or(CapacityError {
                    given: first.saturating_add(count),
                    limit: CODES_MAX,
                })?;
        let chunks_needed = if new_len == 0 {
            0
        } else {
            chunk_of(new_len - 1).0 + 1
        };
        for (k, chunk) in self.chunks[..chunks_needed].iter().enumerate() {
            // Relaxed: only growers store chunks, and they hold `grow_lock`.
            if chunk.load(Ordering::Relaxed).is_null() {
                let words = (0..chunk_codes(k) / CODES_PER_WORD)
                    .map(|_| AtomicU64::new(0))
                    .collect();
                let ptr = Box::into_raw(Box::new(Chunk { words }));
                // Release: the zeroed words are visible to whoever sees the pointer.
                chunk.store(ptr, Ordering::Release);
            }
        }
        self.add_count(first, PublicState::Available, count);
        // Release: publishes the chunks stored above to `len()` readers.
        self.len.store(new_len, Ordering::Release);
        Ok(first)
    }

    fn word(&self, slot: u64) -> &AtomicU64 {
        debug_assert!(slot < self.len());
        let (k, offset) = chunk_of(slot);
        let chunk = &self.chunks[k];
        // Acquire pairs with the Release store in `grow`.
        let ptr = chunk.load(Ordering::Acquire);
        assert!(!ptr.is_null(), "slot {slot} has no chunk");
        // SAFETY: a non-null chunk pointer came from `Box::into_raw` in
        // `grow`, is never changed afterwards, and is freed only in `Drop`,
        // which cannot run while `&self` is borrowed.
        let chunk = unsafe { &*ptr };
        &chunk.words[(offset / CODES_PER_WORD) as usize]
    }

    fn shift(slot: u64) -> u32 {
        ((slot % CODES_PER_WORD) as u32) * BITS_PER_CODE
    }

    fn shard(slot: u64) -> usize {
        ((slot / CODES_PER_WORD) as usize) & (SHARDS - 1)
    }

    /// The state of a code, waiting out a transition in progress. Returns
    /// `None` for a slot that does not exist.
    pub fn get(&self, slot: u64) -> Option<CodeState> {
        if slot >= self.len() {
            return None;
        }
        let word = self.word(slot);
        loop {
            // Acquire pairs with the Release of `publish`, so metadata
            // written under the lock is visible after this load.
            let bits = (word.load(Ordering::Acquire) >> Self::shift(slot)) & SLOT_MASK;
            if bits & BUSY == 0 {
                return Some(CodeState::from_bits(bits));
            }
            spin_loop();
        }
    }

    /// The state of a code without waiting for a transition in progress:
    /// the state before it, for reads that need no order.
    pub fn peek(&self, slot: u64) -> Option<CodeState> {
        if slot >= self.len() {
            return None;
        }
        // Relaxed: a statistic-grade read; callers that act on it lock.
        let bits = (self.word(slot).load(Ordering::Relaxed) >> Self::shift(slot)) & SLOT_MASK;
        Some(CodeState::from_bits(bits & STATE_MASK))
    }

    /// Takes the code's busy bit by compare-and-swap, spinning while another
    /// transition holds it. The holder is bounded: it appends one record.
    pub fn lock(&self, slot: u64) -> Option<Locked> {
        self.take_busy(slot, true)
    }

    /// Tries to take the busy bit, without spinning on a busy code.
    pub fn try_lock(&self, slot: u64) -> Option<Locked> {
        self.take_busy(slot, false)
    }

    /// The one busy-bit acquisition: `None` for a slot that does not exist,
    /// or for a busy code when not `wait`ing.
    fn take_busy(&self, slot: u64, wait: bool) -> Option<Locked> {
        if slot >= self.len() {
            return None;
        }
        let word = self.word(slot);
        let shift = Self::shift(slot);
        // Relaxed: the CAS below validates the value.
        let mut current = word.load(Ordering::Relaxed);
        loop {
            let bits = (current >> shift) & SLOT_MASK;
            if bits & BUSY != 0 {
                if !wait {
                    return None;
                }
                spin_loop();
                // Relaxed: re-read for the next CAS attempt.
                current = word.load(Ordering::Relaxed);
                continue;
            }
            #[cfg(loom)]
            if crate::mutations::on(crate::mutations::Mutation::BusyBitCheckThenSet) {
                word.fetch_or(BUSY << shift, Ordering::Acquire);
                let state = CodeState::from_bits(bits);
                return Some(Locked { slot, state });
            }
            // Acquire on success: see the metadata the previous holder wrote.
            match word.compare_exchange_weak(
                current,
                current | (BUSY << shift),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Locked {
                        slot,
                        state: CodeState::from_bits(bits),
                    });
                }
                Err(actual) => {
                    current = actual;
                    if wait {
                        spin_loop();
                    }
                }
            }
        }
    }

    /// Publishes `to` as the code's state and releases the busy bit, in one
    /// compare-and-swap. Panics if the table does not allow the change.
    pub fn publish(&self, locked: Locked, transition: Transition, to: CodeState) {
        assert!(
            allowed(transition, locked.state, to),
            "transition {transition:?} from {:?} to {to:?} is not in the table",
            locked.state
        );
        self.store_unlocked(&locked, to);
        if locked.state.public() != to.public() {
            self.move_count(locked.slot, locked.state.public(), to.public());
        }
    }

    /// Releases the busy bit leaving the state as it was.
    pub fn unlock(&self, locked: Locked) {
        let state = locked.state;
        self.store_unlocked(&locked, state);
    }

    fn store_unlocked(&self, locked: &Locked, to: CodeState) {
        let word = self.word(locked.slot);
        let shift = Self::shift(locked.slot);
        let held = (locked.state as u64 | BUSY) << shift;
        let next = (to as u64) << shift;
        // Relaxed: the CAS validates; neighbours in the word may change.
        let mut current = word.load(Ordering::Relaxed);
        loop {
            assert_eq!(
                current & (SLOT_MASK << shift),
                held,
                "busy bit lost on slot {}",
                locked.slot
            );
            // Release: the metadata and journal writes made under the lock
            // happen-before any later lock or `get` of this code.
            match word.compare_exchange_weak(
                current,
                (current & !(SLOT_MASK << shift)) | next,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => {
                    current = actual;
                    spin_loop();
                }
            }
        }
    }

    fn add_count(&self, slot: u64, state: PublicState, count: u64) {
        // Relaxed: counters are statistics, summed without a snapshot.
        self.counts[Self::shard(slot)].by_state[state.counter()]
            .fetch_add(count, Ordering::Relaxed);
    }

    fn move_count(&self, slot: u64, from: PublicState, to: PublicState) {
        let shard = &self.counts[Self::shard(slot)];
        // Relaxed: statistics; at quiescence every pair has been applied.
        shard.by_state[to.counter()].fetch_add(1, Ordering::Relaxed);
        shard.by_state[from.counter()].fetch_sub(1, Ordering::Relaxed);
    }

    /// Codes in each public state, summed over the shards: O(shards).
    pub fn counts(&self) -> [u64; 5] {
        let mut total = [0u64; 5];
        for shard in self.counts.iter() {
            for (sum, counter) in total.iter_mut().zip(shard.by_state.iter()) {
                // Relaxed: a statistic. `fetch_sub` may run before its
                // `fetch_add` lands in another shard, so wrap to stay sane.
                *sum = sum.wrapping_add(counter.load(Ordering::Relaxed));
            }
        }
        total
    }

    /// Finds an available code at or after `start` (wrapping) and locks it.
    /// An exhausted map answers from its counters in O(shards) instead of
    /// scanning every word: assignments against an empty pool stay cheap.
    pub fn lock_available(&self, start: u64) -> Option<Locked> {
        let len = self.len();
        if len == 0 || self.counts()[PublicState::Available as usize] == 0 {
            return None;
        }
        let start = start % len;
        let mut slot = start;
        for _ in 0..len.div_ceil(CODES_PER_WORD) + 1 {
            // Scan the word for an available (zero, not busy) slot.
            let word_first = slot - slot % CODES_PER_WORD;
            // Relaxed: a hint; `try_lock` validates.
            let bits = self.word(word_first).load(Ordering::Relaxed);
            for i in (slot % CODES_PER_WORD)..CODES_PER_WORD {
                let candidate = word_first + i;
                if candidate >= len {
                    break;
                }
                if (bits >> (i as u32 * BITS_PER_CODE)) & SLOT_MASK == 0
                    && let Some(locked) = self.try_lock(candidate)
                {
                    if locked.state == CodeState::Available {
                        return Some(locked);
                    }
                    self.unlock(locked);
                }
            }
            slot = word_first + CODES_PER_WORD;
            if slot >= len {
                slot = 0;
            }
        }
        None
    }
}

impl Drop for StateMap {
    fn drop(&mut self) {
        for chunk in self.chunks.iter() {
            // Relaxed: `&mut self` means no other thread can touch the map.
            let ptr = chunk.load(Ordering::Relaxed);
            if !ptr.is_null() {
                // SAFETY: the pointer came from `Box::into_raw` in `grow` and
                // is freed only here, once.
                drop(unsafe { Box::from_raw(ptr) });
            }
        }
    }
}

/// More codes than a map can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError {
    pub given: u64,
    pub limit: u64,
}

impl std::fmt::Display for CapacityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a campaign holds at most {} codes of one kind, {} requested",
            self.limit, self.given
        )
    }
}

impl std::error::Error for CapacityError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use CodeState::*;
        #[track_caller]
        fn check(t: Transition, from: CodeState, to: CodeState, expected: bool) {
            assert_eq!(allowed(t, from, to), expected, "{t:?} {from:?} -> {to:?}");
        }
        check(Transition::Assign, Available, Assigned, true);
        check(Transition::Assign, Assigned, Assigned, false);
        check(Transition::Reserve, Available, ReservedFromAvailable, true);
        check(Transition::Reserve, Assigned, ReservedFromAssigned, true);
        check(Transition::Reserve, Assigned, ReservedFromAvailable, false);
        check(Transition::Reserve, Voided, ReservedFromAvailable, false);
        check(Transition::Release, ReservedFromAssigned, Assigned, true);
        check(Transition::Release, ReservedFromAssigned, Available, false);
        check(
            Transition::Confirm,
            ReservedFromAvailable,
            RedeemedFromAvailable,
            true,
        );
        check(Transition::Confirm, Available, RedeemedFromAvailable, false);
        check(Transition::Redeem, Available, RedeemedFromAvailable, true);
        check(Transition::Redeem, Assigned, RedeemedFromAssigned, true);
        check(
            Transition::Redeem,
            RedeemedFromAssigned,
            RedeemedFromAssigned,
            false,
        );
        check(Transition::Rollback, RedeemedFromAssigned, Assigned, true);
        check(Transition::Rollback, RedeemedFromAvailable, Assigned, false);
        check(Transition::Void, ReservedFromAssigned, Voided, true);
        check(Transition::Void, RedeemedFromAvailable, Voided, false);
        check(Transition::Void, Voided, Voided, false);
        check(Transition::Unassign, Assigned, Available, true);
        check(Transition::Unassign, Assigned, Voided, true);
        check(Transition::Unassign, Available, Available, false);
        check(Transition::Unassign, ReservedFromAssigned, Available, false);
        check(Transition::Unassign, RedeemedFromAssigned, Available, false);
        check(Transition::Unassign, Voided, Available, false);
    }

    #[test]
    fn every_state_round_trips_and_maps_to_one_public_state() {
        for state in CodeState::ALL {
            assert_eq!(CodeState::from_bits(state as u64), state);
            assert_eq!(
                PublicState::parse(state.public().as_str()),
                Some(state.public())
            );
            if state != CodeState::Voided {
                assert_eq!(state.reserved().base(), state.base());
                assert_eq!(state.redeemed().base(), state.base());
            }
        }
    }

    #[test]
    fn grow_lock_publish_and_count() {
        let map = StateMap::new();
        assert_eq!(map.grow(100).unwrap(), 0);
        assert_eq!(map.grow(1 << 16).unwrap(), 100);
        assert_eq!(map.len(), 100 + (1 << 16));
        assert_eq!(map.get(map.len()), None);

        let slot = (1 << 16) + 3;
        let locked = map.lock(slot).unwrap();
        assert_eq!(locked.state, CodeState::Available);
        assert!(
            map.try_lock(slot).is_none(),
            "busy code must not lock twice"
        );
        map.publish(locked, Transition::Redeem, CodeState::RedeemedFromAvailable);
        assert_eq!(map.get(slot), Some(CodeState::RedeemedFromAvailable));
        // Neighbours in the same word are untouched.
        assert_eq!(map.get(slot - 1), Some(CodeState::Available));
        assert_eq!(map.get(slot + 1), Some(CodeState::Available));
        let counts = map.counts();
        assert_eq!(counts[PublicState::Redeemed.counter()], 1);
        assert_eq!(
            counts[PublicState::Available.counter()],
            100 + (1 << 16) - 1
        );
    }

    #[test]
    #[should_panic(expected = "not in the table")]
    fn publishing_a_disallowed_transition_panics() {
        let map = StateMap::new();
        map.grow(1).unwrap();
        let locked = map.lock(0).unwrap();
        map.publish(locked, Transition::Rollback, CodeState::Assigned);
    }

    #[test]
    fn lock_available_skips_taken_codes_and_wraps() {
        let map = StateMap::new();
        map.grow(40).unwrap();
        for slot in 0..40 {
            if slot != 7 {
                let locked = map.lock(slot).unwrap();
                map.publish(locked, Transition::Assign, CodeState::Assigned);
            }
        }
        let found = map.lock_available(20).unwrap();
        assert_eq!(found.slot, 7);
        map.publish(found, Transition::Assign, CodeState::Assigned);
        assert!(map.lock_available(0).is_none());
    }

    #[test]
    fn chunks_tile_the_slot_space() {
        let mut expected = (0, 0);
        for slot in 0..(1 << 15) {
            let (k, offset) = chunk_of(slot);
            assert_eq!((k, offset), expected, "slot {slot}");
            expected = if offset + 1 == chunk_codes(k) {
                (k + 1, 0)
            } else {
                (k, offset + 1)
            };
        }
        assert!(chunk_of(CODES_MAX - 1).0 < CHUNKS_MAX);
    }

    #[test]
    fn capacity_is_bounded() {
        let map = StateMap::new();
        let err = map.grow(CODES_MAX + 1).unwrap_err();
        assert_eq!(
            err,
            CapacityError {
                given: CODES_MAX + 1,
                limit: CODES_MAX
            }
        );
    }
}
