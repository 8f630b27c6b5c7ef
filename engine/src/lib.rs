//! redeem-engine: the in-memory state of redeemd. No I/O.
//!
//! Campaigns of single-use codes. Each code's state lives in a sharded,
//! lock-free bitmap (four bits a code) and changes only by compare-and-swap
//! against one table of allowed transitions. Every change is described by a
//! [`Record`] handed to a [`Journal`] while the code is held busy, so the
//! log's order of a code's records is the order its changes took effect, and
//! [`Engine::apply_replayed`] rebuilds the same state from the log.
//!
//! # Layout
//! - `sync`: the only module that names atomics and locks (loom under `cfg(loom)`).
//! - [`codec`]: the generated code format: keyed permutation of an index, check symbol.
//! - [`state`]: the code state encoding, the transition table, the state bitmap.
//! - [`record`]: the journal boundary: records, their bytes, the `Journal` trait.
//! - [`campaign`]: a campaign's settings, maps and statistics.
//! - [`engine`]: lookups and every transition, live and in replay.
//! - [`idempotency`]: the idempotency-key table.
//! - [`limiter`]: the failed-lookup limiter.
//! - `mutations` (`cfg(loom)` only): deliberate bugs for `loom-tests` to find.

mod sync;

#[cfg(loom)]
#[doc(hidden)]
pub mod mutations;

pub mod campaign;
pub mod codec;
pub mod engine;
pub mod idempotency;
pub mod limiter;
pub mod record;
pub mod state;

pub use campaign::{Campaign, CampaignView, Stats};
pub use engine::{
    Assigned, CodeRef, CodeStatus, Config, Effect, Engine, IdemKey, ImportReport, Importer,
    Redeemed, Refusal, Renderer, ReplayError, Reserved,
};
pub use idempotency::{Begin, StoredResponse};
pub use record::{
    CampaignNo, CampaignPatch, CampaignSpec, IdemTag, Journal, JournalError, Lsn, MemoryJournal,
    NullJournal, Record, RecordKind, ReservationId, Slot,
};
pub use state::PublicState;

/// A moment, in milliseconds since the Unix epoch (UTC). The engine never
/// reads the clock: callers pass `now`, and records carry their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);
