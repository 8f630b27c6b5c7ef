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
//! - [`codec`]: the generated code format: keyed permutation of an index, check symbol
//!   (its tests in `codec/tests.rs`).
//! - [`state`]: the code state encoding, the transition table, the state bitmap.
//! - [`record`]: the journal boundary: records, their bytes (`record/wire.rs` holds the
//!   primitive encodings; `docs/record-format.md` the layout), the `Journal` trait.
//! - [`campaign`]: a campaign's terms, settings, maps and statistics.
//! - [`engine`]: lookups and every transition, live and in replay, one concern a file:
//!   - `engine/mod.rs`: the `Engine` struct, its accessors, the held-code type, limits;
//!   - `engine/refusal.rs`: `Refusal` and `ReplayError`;
//!   - `engine/outcome.rs`: what operations return (`Redeemed`, `CodeStatus`, ...);
//!   - `engine/campaigns.rs`: create, update, generate, and the low-stock event;
//!   - `engine/lookup.rs`: resolving a code, its status, the campaign window;
//!   - `engine/assign.rs`: assignment;
//!   - `engine/reclaim.rs`: reclaim, taking unused codes back from a recipient;
//!   - `engine/redeem.rs`: redemption, rollback, void;
//!   - `engine/reserve.rs`: reserve, confirm, release, the sweeper;
//!   - `engine/import.rs`: the `Importer` of client code lists;
//!   - `engine/idempotent.rs`: stored responses of keyed requests;
//!   - `engine/replay.rs`: the dispatch of a logged record to its `replay_*` function;
//!   - `engine/snapshot.rs`: snapshots, restore, the state dump;
//!   - `engine/webhooks.rs`: webhook subscriptions (settings, secret, delivery cursor).
//! - [`history`]: each campaign's last day in ten-second points, fed by record times.
//! - [`idempotency`]: the idempotency-key table.
//! - `mutations` (`cfg(loom)` only): deliberate bugs for `loom-tests` to find.

mod sync;

#[cfg(loom)]
#[doc(hidden)]
pub mod mutations;

pub mod campaign;
pub mod codec;
pub mod engine;
pub mod history;
pub mod idempotency;
mod meta;
pub mod record;
pub mod state;

pub use campaign::{Campaign, CampaignView, Stats};
pub use engine::{
    Assigned, CodeRef, CodeStatus, Config, Effect, Engine, IdemKey, ImportReport, Importer, Pledge,
    RandomIds, Reclaimed, Redeemed, Refusal, Renderer, ReplayError, Reserved, Webhook,
    WebhookPatch, WebhookSpec,
};
pub use history::{HISTORY_INTERVAL_SECONDS, HISTORY_POINTS_MAX, HistoryEvent, Point};
pub use idempotency::{Begin, StoredResponse};
pub use record::{
    CampaignNo, CampaignPatch, CampaignSpec, IdemTag, Journal, JournalError, Lsn, MemoryJournal,
    NullJournal, PER_RECIPIENT_LIMIT_DEFAULT, PER_USER_LIMIT_DEFAULT,
    RESERVATION_TTL_SECONDS_DEFAULT, RESERVATION_TTL_SECONDS_MAX, Record, RecordKind,
    ReservationId, Slot, WebhookStatus,
};
pub use state::PublicState;

/// A moment, in milliseconds since the Unix epoch (UTC). The engine never
/// reads the clock: callers pass `now`, and records carry their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);
