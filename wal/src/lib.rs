//! redeem-wal: a segmented, preallocated, memory-mapped write-ahead log.
//!
//! It stores opaque records (a type byte and a payload) under dense LSNs
//! starting at 1, and knows nothing of what they mean. Many threads append
//! at once through `&Wal`; a flusher thread group-commits with `msync` and
//! wakes blocking and async waiters. Open recovers the newest valid snapshot
//! and validates every record after it, cutting off an unacknowledged torn
//! tail and refusing anything else that is damaged. The byte format is in
//! `docs/wal-format.md`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use redeem_wal::{Options, Wal};
//! let (wal, recovered) = Wal::open("data/wal".as_ref(), Options::default())?;
//! let lsn = wal.append(1, b"payload")?;
//! wal.wait_durable(lsn)?; // now it may be acknowledged
//! # drop(recovered); Ok(()) }
//! ```
//!
//! # Layout
//! - `wal`: [`Wal`] itself: open and recovery, append, the flusher (group
//!   commit), snapshots, segment removal, shutdown.
//! - `publish`: the append protocol without its I/O: LSN and byte
//!   reservation, frames written commit word last, how far frames are
//!   complete, and the flusher's wakeup; loom-checked with `commit`.
//! - `commit`: the durable LSN and its waiters (blocking and [`Durable`]).
//! - `read`: [`Records`], replay over mapped segments.
//! - `scan`: the recovery scan shared by open, [`verify`] and [`dump`].
//! - `verify`: read-only [`verify`] and [`dump`] for operators.
//! - `segment`: one mapped segment and the raw writes into it.
//! - `format`: byte layout of headers, frames and snapshots.
//! - [`storage`]: the [`Storage`] trait over mmap and syscalls, and
//!   [`OsStorage`]; tests substitute a fault-injecting one.
//! - `error`: one error enum per operation.
//! - `sync`: the only module naming atomics, locks and threads (loom under
//!   `cfg(loom)`).
//! - `mutations` (`cfg(loom)` only): deliberate bugs the loom models must
//!   find, and the harness that runs the models.

mod commit;
mod error;
mod format;
#[cfg(loom)]
mod mutations;
mod publish;
mod read;
mod scan;
mod segment;
pub mod storage;
mod sync;
mod verify;
mod wal;

pub use error::{
    AppendError, CloseError, Corruption, CorruptionReason, DurabilityError, IoFailure, OpenError,
    OptionsError, ReadError, RemoveError, SnapshotError, TornTail, VerifyError,
};
pub use format::{Lsn, SnapshotProblem};
pub use read::{ReadPosition, Record, RecordRef, Records};
pub use scan::Snapshot;
pub use storage::{OsStorage, SegmentMap, Storage};
pub use verify::{Report, dump, verify};
pub use wal::{Durable, Options, Recovered, SegmentInfo, Stats, SyncMode, Wal};

/// Default size of a segment file.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment size accepted.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest segment size accepted (offsets stay far from `u32` limits).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;
/// Default largest payload `append` accepts.
pub const RECORD_BYTES_MAX_DEFAULT: u32 = 1 << 20;
/// Largest snapshot blob accepted.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 32;

const _: () = assert!(SEGMENT_BYTES_MIN.is_multiple_of(storage::PAGE_BYTES as u64));
const _: () = assert!(SEGMENT_BYTES_DEFAULT.is_multiple_of(storage::PAGE_BYTES as u64));
const _: () = assert!(
    SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT && SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX
);
