//! The append protocol without its I/O: reserving an LSN and bytes under the
//! tail lock, writing a frame with its commit word last, finding how far
//! frames are completely written, and waking the flusher.
//!
//! `wal` runs these on mapped segments, whose bytes loom cannot see. They
//! reach the bytes only through [`FrameBytes`] and take every lock and
//! atomic from `sync`, so the loom models at the bottom of this file run the
//! same code on an in-memory [`FrameBytes`] of loom cells and atomics, and
//! check the protocol together with `commit`'s durable advance and wakeup.

use crate::format::{
    COMMIT_WORD_BYTES, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, FrameKind, Lsn, SEAL_BYTES,
    commit_word_fields, frame_bytes,
};
use crate::sync::{Condvar, Mutex, MutexGuard, backoff};

/// Where frames are written: a mapped segment, or a model's words.
pub(crate) trait FrameBytes {
    /// Copies `bytes` to `offset` with plain stores.
    ///
    /// # Safety
    /// The range must be in bounds, reserved for the caller alone, and read
    /// by no other thread until a commit word store publishes it.
    unsafe fn write_bytes(&self, offset: usize, bytes: &[u8]);

    /// Stores the commit word of the frame at `offset`, with release
    /// ordering: whoever loads it also sees every byte written before.
    ///
    /// # Safety
    /// `offset` must start a frame reserved for the caller alone, 8-byte
    /// aligned and in bounds.
    unsafe fn store_commit_word(&self, offset: usize, word: u64);

    /// Loads the commit word at `offset` with acquire ordering; zero while
    /// the frame there is not written.
    fn commit_word(&self, offset: usize) -> u64;
}

/// The append position. It lives in the tail and is read and written only
/// under the tail lock (see [`reserve`]).
#[derive(Debug)]
pub(crate) struct Position {
    /// The LSN the next reservation gets.
    pub(crate) next_lsn: Lsn,
    /// The next free byte of the current segment.
    pub(crate) offset: usize,
    /// An append has signalled the flusher since the flusher last took a
    /// target, so later appends need not signal again.
    flush_requested: bool,
}

/// What one append reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reserved {
    pub(crate) lsn: Lsn,
    /// Where the frame starts in the current segment.
    pub(crate) offset: usize,
    /// This append must signal the flusher once its frame is written.
    pub(crate) signal: bool,
}

impl Position {
    pub(crate) fn new(next_lsn: Lsn, offset: usize) -> Position {
        Position {
            next_lsn,
            offset,
            flush_requested: false,
        }
    }

    fn take(&mut self, bytes: usize) -> Reserved {
        let reserved = Reserved {
            lsn: self.next_lsn,
            offset: self.offset,
            signal: !std::mem::replace(&mut self.flush_requested, true),
        };
        self.next_lsn += 1;
        self.offset += bytes;
        reserved
    }

    /// The flusher's next target: the last reserved LSN and the end of its
    /// frame. Appends after this signal the flusher again.
    pub(crate) fn flush_target(&mut self) -> (Lsn, usize) {
        self.flush_requested = false;
        (self.next_lsn - 1, self.offset)
    }
}

impl AsMut<Position> for Position {
    fn as_mut(&mut self) -> &mut Position {
        self
    }
}

/// Reserves the next LSN and `bytes` at the tail, holding `guard` (a lock
/// of `lock`) throughout, so LSNs are unique and dense and frames never
/// overlap. Returns the guard still held.
///
/// The real protocol never lets go of `lock`; it is a parameter only so
/// that a loom mutation can.
pub(crate) fn reserve<'a, T: AsMut<Position>>(
    lock: &'a Mutex<T>,
    mut guard: MutexGuard<'a, T>,
    bytes: usize,
) -> (MutexGuard<'a, T>, Reserved) {
    let _ = lock;
    let reserved = guard.as_mut().take(bytes);
    (guard, reserved)
}

/// Writes a frame: header tail and payload first, then the commit word, so
/// whoever sees the commit word sees the whole frame.
///
/// # Safety
/// The range `offset..offset + FRAME_HEADER_BYTES + payload.len()` must be
/// in bounds, reserved for this caller alone, and still zero.
pub(crate) unsafe fn write_frame<B: FrameBytes + ?Sized>(
    bytes: &B,
    offset: usize,
    header: &[u8; FRAME_HEADER_BYTES],
    payload: &[u8],
) {
    assert!(offset.is_multiple_of(FRAME_ALIGN_BYTES));
    let word: [u8; COMMIT_WORD_BYTES] = header[..COMMIT_WORD_BYTES].try_into().expect("8 bytes");
    let word = u64::from_ne_bytes(word);
    // SAFETY: the caller reserved the whole frame range for us.
    unsafe {
        bytes.write_bytes(offset + COMMIT_WORD_BYTES, &header[COMMIT_WORD_BYTES..]);
        bytes.write_bytes(offset + FRAME_HEADER_BYTES, payload);
    }
    assert_ne!(word, 0, "a written frame's commit word is never zero");
    // SAFETY: the frame at `offset` is ours (caller), aligned (asserted).
    unsafe { bytes.store_commit_word(offset, word) };
}

/// How far [`walk_written`] found frames completely written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Just past the last frame walked (a seal's, if `sealed`).
    pub(crate) offset: usize,
    /// The walk ended on a seal: the segment has no more frames.
    pub(crate) sealed: bool,
}

/// Follows frames from `from` up to `limit` or a seal, waiting for each
/// frame's commit word: every byte before the returned offset is written
/// and visible to the caller, so it may be synced and declared durable.
pub(crate) fn walk_written<B: FrameBytes + ?Sized>(bytes: &B, from: usize, limit: usize) -> Walked {
    let mut offset = from;
    while offset < limit {
        let word = wait_for_commit_word(bytes, offset);
        let (kind, length) = commit_word_fields(word);
        if kind == FrameKind::Seal as u8 {
            return Walked {
                offset: offset + SEAL_BYTES,
                sealed: true,
            };
        }
        assert_eq!(kind, FrameKind::Record as u8, "frame kind at {offset}");
        offset += frame_bytes(length as usize);
    }
    Walked {
        offset,
        sealed: false,
    }
}

/// Waits for an appender that reserved the frame at `offset` to finish
/// copying it. Appenders never block while copying, so this ends soon.
fn wait_for_commit_word<B: FrameBytes + ?Sized>(bytes: &B, offset: usize) -> u64 {
    let mut round = 0u32;
    loop {
        let word = bytes.commit_word(offset);
        if word != 0 {
            return word;
        }
        backoff(round);
        round = round.saturating_add(1);
    }
}

/// Wakes the flusher: appends request a flush, closing requests shutdown.
#[derive(Debug)]
pub(crate) struct FlushSignal {
    state: Mutex<Signal>,
    /// The flusher sleeps here until `state` has something for it.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Signal {
    requested: bool,
    shutdown: bool,
}

impl FlushSignal {
    pub(crate) fn new() -> FlushSignal {
        FlushSignal {
            state: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        }
    }

    /// Asks for a flush of everything reserved so far.
    pub(crate) fn request(&self) {
        self.state.lock().requested = true;
        self.wake.notify_one();
    }

    /// Asks the flusher to flush once more and stop.
    pub(crate) fn shut_down(&self) {
        self.state.lock().shutdown = true;
        self.wake.notify_one();
    }

    /// Sleeps until a flush or shutdown is requested and takes the request.
    /// Returns whether to stop after this round.
    pub(crate) fn wait(&self) -> bool {
        let mut signal = self.state.lock();
        while !signal.requested && !signal.shutdown {
            signal = self.wake.wait(signal);
        }
        signal.requested = false;
        signal.shutdown
    }
}
